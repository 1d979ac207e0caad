/* Request helpers: who is asking (an observer, or a client and its
 * session), the entries and attributes replied and what the kernel may
 * cache of them, and new objects handed to their requester. The views
 * (client.c, observer.c) and the handlers build on these; this file calls
 * neither. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs.h"
#include "inode.h"
#include "options.h"
#include "peer.h"
#include "request.h"
#include "sessions.h"
#include "view.h"

struct inboxfs fs;

int who_get(fuse_req_t req, struct who *w)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	gid_t groups[64];
	int ngroups = 0, ret;

	w->uid = ctx->uid;
	w->gid = ctx->gid;
	w->pid = ctx->pid;
	w->s = NULL;
	if (observers_need_groups(&fs.cfg.observers)) {
		ngroups = fuse_req_getgroups(req, 64, groups);
		if (ngroups < 0 || ngroups > 64)
			ngroups = 0;
	}
	w->observer = observers_match(&fs.cfg.observers, w->uid, w->gid, groups, ngroups);
	if (w->observer)
		return 0;
	if (w->pid <= 0)
		return -EACCES;
	/* A session is a process and the uid it acts as: smbd runs each SMB
	 * session of its connection as its user (unless the share forces
	 * one), and two users of one machine may share one connection. */
	ret = session_get_as(w->pid, w->uid, &w->s);
	if (ret < 0)
		w->s = NULL;	/* who_put() has nothing to put */
	return ret;
}

void who_put(struct who *w)
{
	if (w->s)
		session_put(w->s);
	w->s = NULL;
}

bool is_hidden_ino(uint64_t ino)
{
	uint64_t other = __atomic_load_n(&fs.other_staging_ino, __ATOMIC_RELAXED);

	return ino == fs.staging_ino || (other != 0 && ino == other);
}

int own_new(int fd, const struct who *w, const struct node *parent)
{
	gid_t gid = w->gid;
	struct stat st;

	if (w->uid == 0 && w->gid == 0)
		return 0;
	/* A set-group-ID directory hands its group down, as the kernel would. */
	if (parent && node_stat(parent, &st) == 0 && (st.st_mode & S_ISGID))
		gid = st.st_gid;
	if (fchownat(fd, "", w->uid, gid, AT_EMPTY_PATH) < 0)
		return -errno;
	return 0;
}

/* What the kernel may cache: core/view.h decides (statsfile.c for the
 * stats file). */
double attr_timeout(struct node *n)
{
	return view_attr_timeout(false);
}

void fill_entry(struct fuse_entry_param *e, struct node *n, const struct stat *st)
{
	memset(e, 0, sizeof(*e));
	e->ino = node_id(n);
	e->attr = *st;
	e->attr_timeout = attr_timeout(n);
	e->entry_timeout = view_entry_timeout(st->st_mode);
}

/* R7 (core/view.h); whether an observer is an SMB server process is asked
 * only of observers. */
bool may_change_dir(const struct who *w)
{
	return view_may_change_dir(w->observer, w->observer && peer_is_smb_server(w->pid));
}
