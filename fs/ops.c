/* The FUSE low-level operations. Observers get a faithful passthrough of
 * INBOX in which nothing is ever clobbered (R3); client requests are handed
 * to client.c. Every handler replies exactly once. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"
#include "names.h"
#include "stats.h"

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

void fill_entry(struct fuse_entry_param *e, struct node *n, const struct stat *st)
{
	memset(e, 0, sizeof(*e));
	e->ino = node_id(n);
	e->attr = *st;
	e->attr_timeout = 0;
	e->entry_timeout = 0;
}

#define WHO_OR_REPLY(req, w) do { int r_ = who_get(req, &(w)); \
	if (r_ < 0) { fuse_reply_err(req, -r_); return; } } while (0)

/* ---- lookup and attributes ---- */

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
static bool may_use(fuse_req_t req, struct who *w, struct node *n)
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
	if (!may_use(req, &w, n))
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
		fuse_reply_attr(req, &st, 0);
out:
	who_put(&w);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
		       struct fuse_file_info *fi)
{
	struct node *n = node_of(ino);
	char proc[64];
	struct stat st;
	struct who w;
	int fd, ret = 0;

	WHO_OR_REPLY(req, w);
	if (!may_use(req, &w, n))
		goto out;
	if (statsfile_is(n)) {
		fuse_reply_err(req, EPERM);
		goto out;
	}
	fd = fi ? handle_of(fi)->fd : node_open(n, O_PATH);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		goto out;
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
		if (fi)
			drop_written(handle_of(fi));
	}
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
	if (!fi)
		close(fd);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, 0);
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

static int check_name(fuse_req_t req, const char *name)
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
		if (S_ISDIR(mode) && client_may_use(&w, dir))
			goto make;	/* R7: clients may create directories */
		if (S_ISREG(mode) && !link)
			client_mknod(req, &w, dir, name, mode);
		else
			fuse_reply_err(req, EPERM);	/* R8 */
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

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	struct node *dir = node_of(parent), *newdir = node_of(newparent);
	char placed[NAME_MAX_BYTES + 1], q1[1024], q2[1024];
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
	struct rename_arg a = { dir_get(dir), dir_get(newdir), name };
	if (a.olddir < 0 || a.newdir < 0) {
		ret = a.olddir < 0 ? a.olddir : a.newdir;
		goto reply;
	}
	if ((fstatat(a.olddir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && is_hidden_ino(st.st_ino)) ||
	    (fstatat(a.newdir, newname, &st, AT_SYMLINK_NOFOLLOW) == 0 && is_hidden_ino(st.st_ino))) {
		ret = -EPERM;
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

/* ---- opening files ---- */

static int new_handle(struct fuse_file_info *fi, struct node *n, int fd)
{
	struct handle *h = calloc(1, sizeof(*h));

	if (h == NULL)
		return -ENOMEM;
	h->fd = fd;
	h->node = n;
	fi->fh = (uint64_t)(uintptr_t)h;
	return 0;
}

struct create_arg {
	int dirfd, flags, fd;
	mode_t mode;
};

static int create_attempt(const char *name, void *arg)
{
	struct create_arg *a = arg;

	a->fd = openat(a->dirfd, name, (a->flags & ~O_TRUNC) | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		       a->mode);
	return a->fd < 0 ? -errno : 0;
}

/* R3 for observers: the data of a truncating open of an existing file goes
 * to a new file with a unique name beside it; the old one stays whole.
 * Returns the new descriptor or -errno. */
static int open_beside(struct who *w, struct node *dir, int dirfd, const char *name,
		       int flags, mode_t mode)
{
	struct create_arg a = { dirfd, flags, -1, mode & 07777 };
	char placed[NAME_MAX_BYTES + 1], q1[1024], q2[1024];
	int ret = place_name(&fs.cfg.names, name, false, create_attempt, &a, placed);

	if (ret < 0)
		return ret;
	ret = own_new(a.fd, w, dir);
	if (ret < 0) {
		close(a.fd);
		unlinkat(dirfd, placed, 0);
		return ret;
	}
	stat_add(STAT_REWRITES, 1);
	log_info("rewrite: truncating open of \"%s\" stored as \"%s\" (pid %d, uid %u)",
		 log_name(name, q1, sizeof(q1)), log_name(placed, q2, sizeof(q2)),
		 (int)w->pid, (unsigned)w->uid);
	return a.fd;
}

#define OPEN_FLAGS_DROPPED (O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC)

/* Open N for an observer; a truncating open of a non-empty file is
 * redirected (R3). Sets *redirected when it was. */
static int observer_open(struct who *w, struct node *n, int flags, bool *redirected)
{
	char name[NAME_MAX_BYTES + 1];
	struct stat st;
	int fd, dfd;

	*redirected = false;
	fd = node_open(n, flags & ~OPEN_FLAGS_DROPPED);
	if (fd < 0 || !(flags & O_TRUNC))
		return fd;
	if (fstat(fd, &st) < 0 || st.st_size == 0 || !S_ISREG(st.st_mode))
		return fd;	/* nothing to lose: truncating it is a no-op */
	close(fd);
	dfd = node_open_parent(n, name, sizeof(name));
	if (dfd < 0)
		return -EPERM;	/* nowhere known to put the new data */
	fd = open_beside(w, NULL, dfd, name, flags, st.st_mode);
	close(dfd);
	*redirected = fd >= 0;
	return fd;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n = node_of(ino);
	bool redirected;
	struct who w;
	int fd;

	WHO_OR_REPLY(req, w);
	if (!w.observer) {
		client_open(req, &w, n, fi);
		goto out;
	}
	if (statsfile_is(n)) {
		fd = statsfile_open(fi);
		if (fd < 0)
			fuse_reply_err(req, -fd);
		else if (fuse_reply_open(req, fi) != 0)
			free(handle_of(fi)->text), free(handle_of(fi));
		goto out;
	}
	fd = observer_open(&w, n, fi->flags, &redirected);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		goto out;
	}
	/* The kernel's inode is the old file's: keep its page cache out. */
	fi->direct_io = redirected;
	if (new_handle(fi, n, fd) < 0) {
		close(fd);
		fuse_reply_err(req, ENOMEM);
		goto out;
	}
	if (fuse_reply_open(req, fi) != 0) {
		close(fd);
		free(handle_of(fi));
	}
out:
	who_put(&w);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct node *dir = node_of(parent), *n;
	struct fuse_entry_param e;
	bool redirected = false;
	struct stat st;
	struct who w;
	int dfd, fd, ret;

	if (check_name(req, name) < 0)
		return;
	WHO_OR_REPLY(req, w);
	if (!w.observer) {
		client_create(req, &w, dir, name, mode, fi);
		goto out;
	}
	dfd = dir_get(dir);
	if (dfd < 0) {
		fuse_reply_err(req, -dfd);
		goto out;
	}
	struct create_arg a = { dfd, fi->flags & ~OPEN_FLAGS_DROPPED, -1, mode };
	ret = create_attempt(name, &a);
	fd = a.fd;
	if (ret == 0) {
		ret = own_new(fd, &w, dir);
	} else if (ret == -EEXIST && !(fi->flags & O_EXCL)) {
		/* Someone made it since the kernel's lookup: open it as open(2)
		 * would, and keep a truncating open off its data. */
		fd = openat(dfd, name, (fi->flags & ~OPEN_FLAGS_DROPPED) | O_NOFOLLOW | O_CLOEXEC);
		ret = fd < 0 ? -errno : 0;
		if (ret == 0 && (fi->flags & O_TRUNC) && fstat(fd, &st) == 0 && st.st_size > 0 &&
		    S_ISREG(st.st_mode)) {
			close(fd);
			fd = open_beside(&w, dir, dfd, name, fi->flags, st.st_mode);
			ret = fd < 0 ? fd : 0;
			redirected = true;
		}
	}
	dir_put(dir, dfd);
	if (ret == 0)
		ret = node_lookup_fd(fd, &st, &n);
	if (ret < 0) {
		if (fd >= 0)
			close(fd);
		fuse_reply_err(req, -ret);
		goto out;
	}
	if (!redirected)
		node_set_name(n, dir, name);
	fill_entry(&e, n, &st);
	if (new_handle(fi, n, fd) < 0) {
		close(fd);
		node_forget(n, 1);
		fuse_reply_err(req, ENOMEM);
		goto out;
	}
	if (fuse_reply_create(req, &e, fi) != 0) {
		close(fd);
		free(handle_of(fi));
		node_forget(n, 1);
	}
out:
	who_put(&w);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);

	if (handle_of(fi)->text) {
		statsfile_read(req, handle_of(fi), size, off);
		return;
	}
	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = handle_of(fi)->fd;
	buf.buf[0].pos = off;
	fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

static void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in,
			 off_t off, struct fuse_file_info *fi)
{
	struct fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
	struct handle *h = handle_of(fi);
	ssize_t res;
	int ret;

	ret = drop_written(h);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	out.buf[0].fd = h->fd;
	out.buf[0].pos = off;
	res = fuse_buf_copy(&out, in, 0);
	if (res < 0) {
		fuse_reply_err(req, (int)-res);
		return;
	}
	if (h->node->drop)
		stat_add(STAT_BYTES, (uint64_t)res);
	fuse_reply_write(req, (size_t)res);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, -drop_flush(handle_of(fi), fuse_req_ctx(req)->pid));
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);

	drop_release(h);
	if (h->fd >= 0)
		close(h->fd);
	free(h->text);
	free(h);
	fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	int fd = handle_of(fi)->fd;
	int ret = datasync ? fdatasync(fd) : fsync(fd);

	fuse_reply_err(req, ret < 0 ? errno : 0);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);
	int ret = drop_written(h);

	if (ret == 0)
		ret = fallocate(h->fd, mode, off, len) < 0 ? -errno : 0;
	fuse_reply_err(req, -ret);
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	off_t res = lseek(handle_of(fi)->fd, off, whence);

	if (res < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_lseek(req, res);
}

/* ---- directories ---- */

struct dirh {
	DIR *dp;
	struct dirent *entry;
	off_t offset;
	struct dirsnap *snap;	/* a client's listing instead of dp */
};

void dirsnap_free(struct dirsnap *snap)
{
	if (snap == NULL)
		return;
	for (size_t i = 0; i < snap->n; i++)
		free(snap->e[i].name);
	free(snap->e);
	free(snap);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n = node_of(ino);
	struct dirh *d = calloc(1, sizeof(*d));
	struct who w;
	int fd, ret = 0;

	if (d == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ret = who_get(req, &w);
	if (ret < 0)
		goto fail;
	if (!w.observer) {
		ret = client_may_use(&w, n) ? client_snapshot(&w, n, &d->snap) : -ENOENT;
	} else {
		fd = node_open(n, O_RDONLY | O_DIRECTORY);
		ret = fd;
		if (fd >= 0) {
			d->dp = fdopendir(fd);
			ret = d->dp ? 0 : -errno;
			if (d->dp == NULL)
				close(fd);
		}
	}
	who_put(&w);
	if (ret < 0)
		goto fail;
	fi->fh = (uint64_t)(uintptr_t)d;
	if (fuse_reply_open(req, fi) != 0) {
		if (d->dp)
			closedir(d->dp);
		dirsnap_free(d->snap);
		free(d);
	}
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

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dirh *d = (struct dirh *)(uintptr_t)fi->fh;

	if (d->dp)
		closedir(d->dp);
	dirsnap_free(d->snap);
	free(d);
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct dirh *d = (struct dirh *)(uintptr_t)fi->fh;
	int fd = d->dp ? dirfd(d->dp) : node_open(node_of(ino), O_RDONLY | O_DIRECTORY);
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

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	if (fstatvfs(inbox_fd(), &sv) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &sv);
}

/* ---- extended attributes (Samba keeps DOS attributes in them) ---- */

enum xattr_op { XA_GET, XA_LIST, XA_SET, XA_REMOVE };

static void do_xattr(fuse_req_t req, fuse_ino_t ino, enum xattr_op op, const char *name,
		     const char *value, size_t size, int flags)
{
	struct node *n = node_of(ino);
	char proc[64], *buf = NULL;
	struct who w;
	ssize_t ret;
	int fd;

	WHO_OR_REPLY(req, w);
	if (!may_use(req, &w, n))
		goto out;
	if (statsfile_is(n)) {
		fuse_reply_err(req, op == XA_LIST ? 0 : op == XA_GET ? ENODATA : EPERM);
		goto out;
	}
	fd = node_open(n, O_PATH);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		goto out;
	}
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if ((op == XA_GET || op == XA_LIST) && size > 0) {
		buf = malloc(size);
		if (buf == NULL) {
			close(fd);
			fuse_reply_err(req, ENOMEM);
			goto out;
		}
	}
	switch (op) {
	case XA_GET:
		ret = getxattr(proc, name, buf, size);
		break;
	case XA_LIST:
		ret = listxattr(proc, buf, size);
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
	close(fd);
	if (ret < 0)
		fuse_reply_err(req, (int)-ret);
	else if (op == XA_SET || op == XA_REMOVE)
		fuse_reply_err(req, 0);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)ret);
	else
		fuse_reply_buf(req, buf, (size_t)ret);
	free(buf);
out:
	who_put(&w);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	do_xattr(req, ino, XA_GET, name, NULL, size, 0);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	do_xattr(req, ino, XA_LIST, NULL, NULL, size, 0);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	do_xattr(req, ino, XA_SET, name, value, size, flags);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	do_xattr(req, ino, XA_REMOVE, name, NULL, 0, 0);
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
	if (conn->capable & FUSE_CAP_SPLICE_READ)
		conn->want |= FUSE_CAP_SPLICE_READ;
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
