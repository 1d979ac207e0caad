/* The FUSE low-level operations: who is asking, lookups, attributes, making
 * and removing names, and the operations table. Observers get a faithful
 * passthrough of INBOX in which nothing is ever clobbered (R3); client
 * requests are handed to client.c. Open files are in files.c, directories
 * and xattrs in dirs.c. Every handler replies exactly once. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"
#include "names.h"
#include "peer.h"
#include "stats.h"
#include "transport.h"

struct inboxfs fs;
/* ---- who is asking ---- */

int who_get(fuse_req_t req, struct who *w)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	gid_t groups[64];
	int ngroups = 0;

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
	return session_get(w->pid, &w->s);
}

void who_put(struct who *w)
{
	if (w->s)
		session_put(w->s);
	w->s = NULL;
}

bool is_hidden_ino(uint64_t ino)
{
	return ino == fs.staging_ino;
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

/* What the kernel may cache (issue: every round trip counts). A file's
 * name differs per view (a client sees only its own drops, under the names
 * it asked for), so no file's entry is cached: the dentry cache is one for
 * all processes. An inode looks the same to everyone who can reach it, so
 * attributes are cached for a second, like directories' entries; changes
 * made through the mount update them at once, changes made behind it are
 * seen within the second. The stats file changes with every read. */
#define SHARED_TIMEOUT 1.0

double attr_timeout(struct node *n)
{
	return statsfile_is(n) ? 0 : SHARED_TIMEOUT;
}

void fill_entry(struct fuse_entry_param *e, struct node *n, const struct stat *st)
{
	memset(e, 0, sizeof(*e));
	e->ino = node_id(n);
	e->attr = *st;
	e->attr_timeout = attr_timeout(n);
	e->entry_timeout = S_ISDIR(st->st_mode) ? SHARED_TIMEOUT : 0;
}

/* ---- lookup and attributes ---- */

/* R7: directories belong to the inbox's owner; a client that could chmod
 * one could make every other client's create there fail. smbd switches to
 * root for some changes it makes on its user's behalf ("dos filetimes":
 * the times of anything the user may write), so here a request from an
 * SMB server process is a client's whatever uid it runs as. */
bool may_change_dir(const struct who *w)
{
	return w->observer && !peer_is_smb_server(w->pid);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct node *dir = node_of(parent), *n;
	struct fuse_entry_param e;
	struct stat st;
	struct who w;
	int ret, dfd;

	if (strlen(name) > NAME_MAX_BYTES) {
		fuse_reply_err(req, ENAMETOOLONG);
		return;
	}
	WHO_OR_REPLY(req, w);
	if (!w.observer) {
		client_lookup(req, &w, dir, name);
		who_put(&w);
		return;
	}
	if (parent == FUSE_ROOT_ID && strcmp(name, STATS_FILE) == 0) {
		statsfile_attr(&st);
		fill_entry(&e, statsfile_node(), &st);
		fuse_reply_entry(req, &e);
		return;
	}
	dfd = dir_get(dir);
	if (dfd < 0) {
		fuse_reply_err(req, -dfd);
		return;
	}
	ret = node_lookup_at(dfd, name, &st, &n);
	dir_put(dir, dfd);
	if (ret == 0 && is_hidden_ino(st.st_ino)) {
		node_forget(n, 1);
		ret = -ENOENT;
	}
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	if (S_ISREG(st.st_mode))
		node_set_name(n, dir, name);
	fill_entry(&e, n, &st);
	if (fuse_reply_entry(req, &e) != 0)
		node_forget(n, 1);
}

static void forget_one(fuse_ino_t ino, uint64_t nlookup)
{
	struct node *n = node_of(ino);

	if (!statsfile_is(n))
		node_forget(n, nlookup);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	forget_one(ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		forget_one(forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

/* Check that W may act on N; replies and returns false if not. */
bool may_use(fuse_req_t req, struct who *w, struct node *n)
{
	if (w->observer || client_may_use(w, n))
		return true;
	fuse_reply_err(req, ENOENT);
	return false;
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n = node_of(ino);
	struct stat st;
	struct who w;
	int ret;

	WHO_OR_REPLY(req, w);
	if (!client_holds(&w, fi) && !may_use(req, &w, n))
		goto out;
	if (statsfile_is(n)) {
		statsfile_attr(&st);
		ret = 0;
	} else if (fi)
		ret = fstat(handle_of(fi)->fd, &st) < 0 ? -errno : 0;
	else
		ret = node_stat(n, &st);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, attr_timeout(n));
out:
	who_put(&w);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
		       struct fuse_file_info *fi)
{
	enum drop_change what = (valid & FUSE_SET_ATTR_SIZE) ? DROP_CHANGE_DATA : DROP_CHANGE_META;
	struct node *n = node_of(ino);
	struct drop *d = NULL;
	char proc[64];
	struct stat st;
	struct who w;
	int fd = -1, ret = 0;

	WHO_OR_REPLY(req, w);
	if (!client_holds(&w, fi) && !may_use(req, &w, n))
		goto out;
	if (statsfile_is(n) || (n->type == S_IFDIR && !may_change_dir(&w))) {
		fuse_reply_err(req, EPERM);
		goto out;
	}
	/* A drop changes only while the lifecycle lets it (drop.h): never
	 * once delivered, whatever descriptor or path the writer kept. */
	if (!w.observer && n->type != S_IFDIR) {
		d = fi ? handle_of(fi)->drop.d : drop_find_node(w.s, n);
		if (d == NULL) {
			fuse_reply_err(req, ENOENT);
			goto out;
		}
		if (fi)
			drop_ref(d);
		ret = drop_change_begin(d, what);
		if (ret < 0) {
			drop_put(d);
			fuse_reply_err(req, -ret);
			goto out;
		}
	}
	fd = fi ? handle_of(fi)->fd : node_open(n, O_PATH);
	if (fd < 0) {
		ret = fd;
		goto done;
	}
	/* Through /proc so that an O_PATH descriptor serves every call. */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if (valid & FUSE_SET_ATTR_MODE) {
		if ((fi ? fchmod(fd, attr->st_mode) : chmod(proc, attr->st_mode)) < 0)
			goto fail;
	}
	if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t u = (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1;
		gid_t g = (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1;

		if (fchownat(fd, "", u, g, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
			goto fail;
	}
	if (valid & FUSE_SET_ATTR_SIZE) {
		if ((fi ? ftruncate(fd, attr->st_size) : truncate(proc, attr->st_size)) < 0)
			goto fail;
	}
	/* FUSE_HANDLE_KILLPRIV_V2: a truncate or chown by a caller without
	 * CAP_FSETID (transport.c). */
	if ((valid & FUSE_SET_ATTR_KILL_SUID) && (errno = -kill_suidgid_fd(fd)) != 0)
		goto fail;
	if (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
		struct timespec tv[2] = { { 0, UTIME_OMIT }, { 0, UTIME_OMIT } };

		if (valid & FUSE_SET_ATTR_ATIME_NOW)
			tv[0].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_ATIME)
			tv[0] = attr->st_atim;
		if (valid & FUSE_SET_ATTR_MTIME_NOW)
			tv[1].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_MTIME)
			tv[1] = attr->st_mtim;
		if ((fi ? futimens(fd, tv) : utimensat(AT_FDCWD, proc, tv, 0)) < 0)
			goto fail;
	}
	ret = fstat(fd, &st) < 0 ? -errno : 0;
	goto done;
fail:
	ret = -errno;
done:
	if (!fi && fd >= 0)
		close(fd);
	if (d) {
		drop_change_end(d, what, what == DROP_CHANGE_DATA && loses_data(-ret) ? -ret : 0);
		drop_put(d);
	}
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, attr_timeout(n));
out:
	who_put(&w);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct node *n = node_of(ino);
	char buf[PATH_MAX + 1];
	struct who w;
	ssize_t len;
	int fd;

	WHO_OR_REPLY(req, w);
	if (!w.observer) {
		fuse_reply_err(req, ENOENT);	/* clients never see symlinks */
		goto out;
	}
	fd = node_open(n, O_PATH);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		goto out;
	}
	len = readlinkat(fd, "", buf, sizeof(buf) - 1);
	close(fd);
	if (len < 0) {
		fuse_reply_err(req, errno);
		goto out;
	}
	buf[len] = '\0';
	fuse_reply_readlink(req, buf);
out:
	who_put(&w);
}

/* ---- making names ---- */

/* Names at the top of the inbox that are inboxfs's own: the default
 * staging directory and the stats file. */
static bool reserved_name(fuse_ino_t parent, const char *name)
{
	return parent == FUSE_ROOT_ID &&
	       (strcmp(name, STAGING_DIR) == 0 || strcmp(name, STATS_FILE) == 0);
}

/* Reply with the entry of DIRFD/NAME after an observer made it. */
static void reply_new_entry(fuse_req_t req, struct who *w, struct node *dir, int dirfd,
			    const char *name)
{
	struct fuse_entry_param e;
	struct node *n;
	struct stat st;
	int fd, ret;

	fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	ret = own_new(fd, w, dir);
	if (ret == 0)
		ret = node_lookup_fd(fd, &st, &n);
	close(fd);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	fill_entry(&e, n, &st);
	if (fuse_reply_entry(req, &e) != 0)
		node_forget(n, 1);
}

int check_name(fuse_req_t req, const char *name)
{
	int ret = name_check(name);

	if (ret < 0)
		fuse_reply_err(req, -ret);
	return ret;
}

static void make_node(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      dev_t rdev, const char *link)
{
	struct node *dir = node_of(parent);
	struct who w;
	int dfd, ret;

	if (check_name(req, name) < 0)
		return;
	WHO_OR_REPLY(req, w);
	if (!w.observer) {
		if (S_ISDIR(mode) && client_may_use(&w, dir)) {
			/* R7: a client's directory would make every other
			 * client's create of that name fail, so only where the
			 * administrator allows it; never over the daemon's own
			 * names, which no view lists. */
			if (fs.cfg.client_mkdir && !reserved_name(parent, name))
				goto make;
			fuse_reply_err(req, EPERM);
		} else if (S_ISREG(mode) && !link) {
			client_mknod(req, &w, dir, name, mode);
		} else {
			fuse_reply_err(req, EPERM);	/* R8 */
		}
		goto out;
	}
make:
	dfd = dir_get(dir);
	if (dfd < 0) {
		fuse_reply_err(req, -dfd);
		goto out;
	}
	if (link)
		ret = symlinkat(link, dfd, name);
	else if (S_ISDIR(mode))
		ret = mkdirat(dfd, name, mode & 07777);
	else
		ret = mknodat(dfd, name, mode, rdev);
	if (ret < 0)
		fuse_reply_err(req, errno);
	else
		reply_new_entry(req, &w, dir, dfd, name);
	dir_put(dir, dfd);
out:
	who_put(&w);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	make_node(req, parent, name, mode, rdev, NULL);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	make_node(req, parent, name, S_IFDIR | mode, 0, NULL);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	make_node(req, parent, name, S_IFLNK, 0, link);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct node *n = node_of(ino), *dir = node_of(newparent);
	struct fuse_entry_param e;
	struct node *same;
	struct stat st;
	struct who w;
	int fd, dfd, ret;

	if (check_name(req, newname) < 0)
		return;
	WHO_OR_REPLY(req, w);
	if (!w.observer) {
		fuse_reply_err(req, EPERM);	/* R8 */
		goto out;
	}
	fd = node_open(n, O_PATH);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		goto out;
	}
	dfd = dir_get(dir);
	ret = dfd < 0 ? dfd : linkat(fd, "", dfd, newname, AT_EMPTY_PATH) < 0 ? -errno : 0;
	dir_put(dir, dfd);
	if (ret == 0)
		ret = node_lookup_fd(fd, &st, &same);
	close(fd);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		goto out;
	}
	fill_entry(&e, same, &st);
	if (fuse_reply_entry(req, &e) != 0)
		node_forget(same, 1);
out:
	who_put(&w);
}

/* ---- removing and renaming ---- */

static void remove_name(fuse_req_t req, fuse_ino_t parent, const char *name, int flags)
{
	struct node *dir = node_of(parent);
	struct stat st;
	struct who w;
	int dfd, ret;

	WHO_OR_REPLY(req, w);
	if (w.observer && parent == FUSE_ROOT_ID && strcmp(name, STATS_FILE) == 0) {
		fuse_reply_err(req, EPERM);	/* the virtual file, not what it shadows */
		goto out;
	}
	if (!w.observer) {
		if (flags & AT_REMOVEDIR)
			fuse_reply_err(req, client_may_use(&w, dir) ? EPERM : ENOENT);	/* R7 */
		else
			client_unlink(req, &w, dir, name);
		goto out;
	}
	dfd = dir_get(dir);
	if (dfd < 0) {
		fuse_reply_err(req, -dfd);
		goto out;
	}
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && is_hidden_ino(st.st_ino))
		ret = ENOENT;
	else
		ret = unlinkat(dfd, name, flags) < 0 ? errno : 0;
	dir_put(dir, dfd);
	fuse_reply_err(req, ret);
out:
	who_put(&w);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_name(req, parent, name, 0);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_name(req, parent, name, AT_REMOVEDIR);
}

struct rename_arg {
	int olddir, newdir;
	const char *oldname;
};

static int rename_attempt(const char *newname, void *arg)
{
	struct rename_arg *a = arg;

	return renameat2(a->olddir, a->oldname, a->newdir, newname, RENAME_NOREPLACE) < 0 ? -errno : 0;
}

/* R3: a directory is not a message. Onto a directory it follows POSIX
 * (an empty one is replaced, ENOTEMPTY otherwise), onto anything else it
 * fails (ENOTDIR), so no path silently starts to mean another directory
 * and the kernel's cached entries stay true. A plain rename only where the
 * target is a directory: if the source were swapped for a file meanwhile,
 * the kernel answers EISDIR rather than replace anything. */
static int rename_dir(struct rename_arg *a, const char *newname, unsigned flags)
{
	struct stat st;

	if (flags & RENAME_NOREPLACE)
		return rename_attempt(newname, a);
	if (fstatat(a->newdir, newname, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? rename_attempt(newname, a) : -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	return renameat2(a->olddir, a->oldname, a->newdir, newname, 0) < 0 ? -errno : 0;
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	struct node *dir = node_of(parent), *newdir = node_of(newparent);
	char placed[NAME_MAX_BYTES + 1], q1[1024], q2[1024];
	bool src_dir = false, hidden = false;
	struct stat st;
	struct who w;
	int ret;

	if (check_name(req, newname) < 0)
		return;
	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	WHO_OR_REPLY(req, w);
	if (!w.observer) {
		client_rename(req, &w, dir, name, newdir, newname, flags);
		goto out;
	}
	if ((parent == FUSE_ROOT_ID && strcmp(name, STATS_FILE) == 0) ||
	    (newparent == FUSE_ROOT_ID && strcmp(newname, STATS_FILE) == 0)) {
		fuse_reply_err(req, EPERM);	/* the virtual file, not what it shadows */
		goto out;
	}
	struct rename_arg a = { dir_get(dir), dir_get(newdir), name };
	if (a.olddir < 0 || a.newdir < 0) {
		ret = a.olddir < 0 ? a.olddir : a.newdir;
		goto reply;
	}
	if (fstatat(a.olddir, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		src_dir = S_ISDIR(st.st_mode);
		hidden = is_hidden_ino(st.st_ino);
	}
	if (!hidden && fstatat(a.newdir, newname, &st, AT_SYMLINK_NOFOLLOW) == 0)
		hidden = is_hidden_ino(st.st_ino);
	if (hidden) {
		ret = -EPERM;
		goto reply;
	}
	if (src_dir && !(flags & RENAME_EXCHANGE)) {
		ret = rename_dir(&a, newname, flags);
		goto reply;
	}
	if (flags & RENAME_EXCHANGE) {
		ret = renameat2(a.olddir, name, a.newdir, newname, RENAME_EXCHANGE) < 0 ? -errno : 0;
		goto reply;
	}
	if (flags & RENAME_NOREPLACE) {
		ret = rename_attempt(newname, &a);
		goto reply;
	}
	/* R3: a rename never replaces; onto a taken name it takes a unique one. */
	ret = place_name(&fs.cfg.names, newname, true, rename_attempt, &a, placed);
	if (ret == 1) {
		stat_add(STAT_REWRITES, 1);
		log_info("rewrite: rename onto \"%s\" stored as \"%s\" (pid %d, uid %u)",
			 log_name(newname, q1, sizeof(q1)), log_name(placed, q2, sizeof(q2)),
			 (int)w.pid, (unsigned)w.uid);
		ret = 0;
	}
reply:
	dir_put(dir, a.olddir);
	dir_put(newdir, a.newdir);
	fuse_reply_err(req, -ret);
out:
	who_put(&w);
}
/* ---- session ---- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	/* Truncating opens must reach open() with O_TRUNC, or R3 could not
	 * keep their data off an existing file. */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	else
		log_warnx("kernel lacks atomic O_TRUNC: truncating opens arrive as truncate");
	/* Every write must reach the daemon before close() returns (R4, R5). */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	/* No splicing, of requests or of READ replies: a 1 MiB message needs
	 * a pipe larger than pipe-max-size (growing one past it takes
	 * CAP_SYS_RESOURCE), small requests would cost a splice and a read
	 * instead of one read, and where the pipes could grow it was measured
	 * to gain nothing. Without it no worker thread holds a pipe. */
	conn->want &= ~FUSE_CAP_SPLICE_READ;
	/* Large sequential reads: the kernel reads ahead as far as we let it. */
	conn->max_readahead = READAHEAD_BYTES;
}

const struct fuse_lowlevel_ops inboxfs_ops = {
	.init		= op_init,
	.lookup		= op_lookup,
	.forget		= op_forget,
	.forget_multi	= op_forget_multi,
	.getattr	= op_getattr,
	.setattr	= op_setattr,
	.readlink	= op_readlink,
	.mknod		= op_mknod,
	.mkdir		= op_mkdir,
	.symlink	= op_symlink,
	.link		= op_link,
	.unlink		= op_unlink,
	.rmdir		= op_rmdir,
	.rename		= op_rename,
	.open		= op_open,
	.create		= op_create,
	.read		= op_read,
	.write_buf	= op_write_buf,
	.flush		= op_flush,
	.release	= op_release,
	.fsync		= op_fsync,
	.fallocate	= op_fallocate,
	.lseek		= op_lseek,
	.opendir	= op_opendir,
	.readdir	= op_readdir,
	.readdirplus	= op_readdirplus,
	.releasedir	= op_releasedir,
	.fsyncdir	= op_fsyncdir,
	.statfs		= op_statfs,
	.getxattr	= op_getxattr,
	.listxattr	= op_listxattr,
	.setxattr	= op_setxattr,
	.removexattr	= op_removexattr,
};
