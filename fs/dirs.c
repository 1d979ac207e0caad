/* Directories (an observer's passthrough listing or a client's snapshot),
 * statfs and extended attributes (Samba keeps DOS attributes in them). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "client.h"
#include "dirs.h"
#include "fs.h"
#include "inode.h"
#include "log.h"
#include "names.h"
#include "options.h"
#include "request.h"
#include "sessions.h"
#include "stats.h"
#include "syncpool.h"
#include "view.h"

struct dirh {
	DIR *dp;
	struct dirent *entry;
	off_t offset;
	struct dirsnap *snap;	/* a client's listing instead of dp */
	struct node *node;	/* the kernel's while the directory is open */
	struct dirh *prev, *next;	/* [open_lock] every open one */
};

/* Every open directory, so that those whose RELEASEDIR never came (the
 * kernel may unmount with releases still queued) are let go at shutdown. */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;	/* a leaf */
static struct dirh *open_list;

static void dirh_link(struct dirh *d)
{
	pthread_mutex_lock(&open_lock);
	d->next = open_list;
	if (open_list)
		open_list->prev = d;
	open_list = d;
	pthread_mutex_unlock(&open_lock);
}

static void dirh_free(struct dirh *d)
{
	pthread_mutex_lock(&open_lock);
	if (d->prev)
		d->prev->next = d->next;
	else if (open_list == d)
		open_list = d->next;
	if (d->next)
		d->next->prev = d->prev;
	pthread_mutex_unlock(&open_lock);
	if (d->dp) {
		closedir(d->dp);
		session_fd_give(NULL);
	}
	dirsnap_free(d->snap);
	free(d);
}

void dirs_shutdown(void)
{
	while (open_list)
		dirh_free(open_list);
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n = node_of(ino);
	struct dirh *d = calloc(1, sizeof(*d));
	struct who w;
	int fd, ret = 0;

	if (d == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	d->node = n;
	ret = who_get(req, &w);
	if (ret < 0)
		goto fail;
	if (!w.observer) {
		ret = client_may_use(&w, n) ? client_snapshot(&w, n, &d->snap) : -ENOENT;
	} else if ((ret = session_fd_take(NULL)) == 0) {
		/* An observer's listing holds a descriptor until RELEASEDIR:
		 * in the budget (R12), like an open file, so that no number of
		 * them eats the reserve others' closes need. */
		fd = node_open(n, O_RDONLY | O_DIRECTORY);
		ret = fd;
		if (fd >= 0) {
			d->dp = fdopendir(fd);
			ret = d->dp ? 0 : -errno;
			if (d->dp == NULL)
				close(fd);
		}
		if (d->dp == NULL)
			session_fd_give(NULL);
	}
	who_put(&w);
	if (ret < 0)
		goto fail;
	fi->fh = (uint64_t)(uintptr_t)d;
	dirh_link(d);
	if (fuse_reply_open(req, fi) != 0)
		dirh_free(d);
	return;
fail:
	free(d);
	fuse_reply_err(req, -ret);
}

/* Add one entry to a readdir reply; returns its size, or 0 when it did not
 * fit (or vanished, for readdirplus: then *skip is set). */
static size_t add_entry(fuse_req_t req, struct who *w, struct node *dir, int dirfd, bool plus,
			char *p, size_t rem, const char *name, ino_t ino, unsigned char type,
			off_t next, bool *skip)
{
	struct fuse_entry_param e;
	struct node *n = NULL;
	size_t size;
	int ret;

	*skip = false;
	memset(&e, 0, sizeof(e));
	e.attr.st_ino = ino;
	e.attr.st_mode = (mode_t)type << 12;
	if (!plus) {
		size = fuse_add_direntry(req, p, rem, name, &e.attr, next);
		return size > rem ? 0 : size;
	}
	if (strcmp(name, ".") != 0 && strcmp(name, "..") != 0) {
		if (w->observer) {
			struct stat st;

			ret = node_lookup_at(dirfd, name, &st, &n);
			if (ret == 0) {
				if (S_ISREG(st.st_mode))
					node_set_name(n, dir, name);
				fill_entry(&e, n, &st);
			}
		} else {
			ret = client_entry(w, dir, name, &e);
			if (ret == 0)
				n = node_of(e.ino);
		}
		if (ret < 0) {
			*skip = true;
			return 0;
		}
	}
	size = fuse_add_direntry_plus(req, p, rem, name, &e, next);
	if (size > rem && n) {
		node_forget(n, 1);
		return 0;
	}
	return size > rem ? 0 : size;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
		       struct fuse_file_info *fi, bool plus)
{
	struct dirh *d = (struct dirh *)(uintptr_t)fi->fh;
	struct node *dir = node_of(ino);
	char *buf = calloc(1, size), *p = buf;
	size_t rem = size, used;
	struct who w;
	bool skip;
	int err = 0;

	if (buf == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	err = -who_get(req, &w);
	if (err)
		goto out;
	if (d->snap) {
		for (size_t i = (size_t)offset; i < d->snap->n; i++) {
			struct snapent *s = &d->snap->e[i];

			used = add_entry(req, &w, dir, -1, plus, p, rem, s->name, s->ino, s->type,
					 (off_t)i + 1, &skip);
			if (used == 0 && !skip)
				break;
			p += used;
			rem -= used;
		}
		goto done;
	}
	if (offset != d->offset) {
		seekdir(d->dp, offset);
		d->entry = NULL;
		d->offset = offset;
	}
	for (;;) {
		if (d->entry == NULL) {
			errno = 0;
			d->entry = readdir(d->dp);
			if (d->entry == NULL) {
				err = errno;
				break;
			}
		}
		struct dirent *de = d->entry;
		if (is_hidden_ino(de->d_ino)) {
			used = 0;
		} else {
			used = add_entry(req, &w, dir, dirfd(d->dp), plus, p, rem, de->d_name,
					 de->d_ino, de->d_type, de->d_off, &skip);
			if (used == 0 && !skip)
				break;
		}
		p += used;
		rem -= used;
		d->entry = NULL;
		d->offset = de->d_off;
	}
done:
	who_put(&w);
out:
	/* An error after some entries still returns those entries. */
	if (err && rem == size)
		fuse_reply_err(req, err);
	else
		fuse_reply_buf(req, buf, size - rem);
	free(buf);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, false);
}

void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, true);
}

void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	dirh_free((struct dirh *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void fsyncdir_job(fuse_req_t req, void *p, int datasync)
{
	struct dirh *d = p;
	int fd = d->dp ? dirfd(d->dp) : node_open(d->node, O_RDONLY | O_DIRECTORY);
	int ret;

	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	ret = (datasync ? fdatasync(fd) : fsync(fd)) < 0 ? errno : 0;
	if (!d->dp)
		close(fd);
	fuse_reply_err(req, ret);
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct dirh *d = (struct dirh *)(uintptr_t)fi->fh;

	/* A directory's fsync may wait for a journal commit that writes out
	 * other files' data: off the request threads (syncpool.c). */
	if (!syncpool_defer(req, fsyncdir_job, d, datasync))
		fsyncdir_job(req, d, datasync);
}

void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct statvfs sv;
	struct who w;
	int ret = fstatvfs(inbox_fd(), &sv) < 0 ? -errno : 0;

	/* No session needed: only whether the asker is an observer. */
	if (ret == 0 && !observers_match(&fs.cfg.observers, ctx->uid, ctx->gid, NULL, 0)) {
		ret = who_get(req, &w);
		if (ret == 0 && !w.observer)
			view_client_statfs(&sv);
		who_put(&w);
	}
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_statfs(req, &sv);
}

/* ---- extended attributes (Samba keeps DOS attributes in them) ---- */

/* The names a client may see (view.h), of the file at PROC, into BUF (SIZE
 * 0: only the length): as listxattr(2), -1 with errno on failure. */
static ssize_t client_listxattr(const char *proc, char *buf, size_t size)
{
	ssize_t len = listxattr(proc, NULL, 0), kept;
	char *all;

	if (len <= 0)
		return len;
	all = malloc((size_t)len);
	if (all == NULL) {
		errno = ENOMEM;
		return -1;
	}
	len = listxattr(proc, all, (size_t)len);	/* ERANGE if it grew: the caller retries */
	kept = len < 0 ? -1 : view_client_xattrs(all, (size_t)len, buf, size);
	free(all);
	if (kept < -1) {
		errno = (int)-kept;
		kept = -1;
	}
	return kept;
}

static void do_xattr(fuse_req_t req, fuse_ino_t ino, enum xattr_op op, const char *name,
		     const char *value, size_t size, int flags)
{
	struct node *n = node_of(ino);
	char proc[64], *buf = NULL;
	enum xattr_plan plan = XATTR_AS_ASKED;
	struct who w;
	ssize_t ret;
	int fd = -1;

	/* xattr=no: ENOSYS, which the kernel remembers for the connection
	 * (fs/fuse/xattr.c: no_getxattr, no_listxattr, no_setxattr,
	 * no_removexattr), answering EOPNOTSUPP itself from then on, POSIX ACL
	 * reads included (acl.c): each kind costs one round trip, once. */
	if (!fs.cfg.xattr) {
		ret = -ENOSYS;
		goto reply;
	}
	ret = who_get(req, &w);
	if (ret < 0)
		goto reply;
	ret = may_use(&w, n);
	/* R7: who changes a directory's (view.h); statsfile.c answers for
	 * the stats file. */
	if (ret == 0)
		ret = view_xattr(op, w.observer && w.uid == 0, n->type, false,
				 n->type == S_IFDIR && (op == XA_SET || op == XA_REMOVE) &&
					 may_change_dir(&w),
				 &plan);
	who_put(&w);
	if (ret < 0 || plan == XATTR_EMPTY)
		goto reply;
	fd = node_open(n, O_PATH);
	if (fd < 0) {
		ret = fd;
		goto reply;
	}
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if ((op == XA_GET || op == XA_LIST) && size > 0) {
		buf = malloc(size);
		if (buf == NULL) {
			ret = -ENOMEM;
			goto reply;
		}
	}
	switch (op) {
	case XA_GET:
		ret = getxattr(proc, name, buf, size);
		break;
	case XA_LIST:
		ret = plan == XATTR_CLIENT_LIST ? client_listxattr(proc, buf, size) :
						  listxattr(proc, buf, size);
		break;
	case XA_SET:
		ret = setxattr(proc, name, value, size, flags);
		break;
	default:
		ret = removexattr(proc, name);
		break;
	}
	if (ret < 0)
		ret = -errno;
	/* What ls -l asks of every file (view.h). */
	if (op == XA_GET)
		ret = view_getxattr_result(name, ret);
reply:
	if (fd >= 0)
		close(fd);
	if (ret < 0)
		fuse_reply_err(req, (int)-ret);
	else if (op == XA_SET || op == XA_REMOVE || plan == XATTR_EMPTY)
		fuse_reply_err(req, 0);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)ret);
	else
		fuse_reply_buf(req, buf, (size_t)ret);
	free(buf);
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	do_xattr(req, ino, XA_GET, name, NULL, size, 0);
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	do_xattr(req, ino, XA_LIST, NULL, NULL, size, 0);
}

void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	do_xattr(req, ino, XA_SET, name, value, size, flags);
}

void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	do_xattr(req, ino, XA_REMOVE, name, NULL, 0, 0);
}
