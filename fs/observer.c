/* The observers' view (R3): a faithful passthrough of INBOX in which
 * nothing is ever clobbered. A truncating open of a non-empty file, or a
 * create that finds one, writes beside it; a rename onto a taken name takes
 * a unique one; directories follow POSIX. core/noclobber.h decides, this
 * file carries it out. Each function replies exactly once. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs.h"
#include "handles.h"
#include "inode.h"
#include "log.h"
#include "names.h"
#include "noclobber.h"
#include "observer.h"
#include "request.h"
#include "setid.h"
#include "stats.h"
#include "view.h"
#include "transport/transport.h"

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

/* R3: may W create the file written beside another in DIRFD (view.h)?
 * Judged from the directory's mode bits against the request's uid, gid and
 * supplementary groups, rather than by switching this worker thread's
 * credentials. */
static int may_create_in(fuse_req_t req, const struct who *w, int dirfd)
{
	gid_t few[64], *groups = few;
	struct stat st;
	int n = 0, ret;

	if (fstat(dirfd, &st) < 0)
		return -errno;
	if (w->uid != 0) {	/* root's groups never count */
		n = fuse_req_getgroups(req, 64, few);
		if (n > 64) {
			int room = n;

			groups = calloc((size_t)room, sizeof(*groups));
			n = groups ? fuse_req_getgroups(req, room, groups) : 0;
			if (n > room)	/* it grew meanwhile: those that were read */
				n = room;
		}
	}
	ret = view_may_create_in(&st, w->uid, w->gid, groups, n > 0 ? (size_t)n : 0);
	if (groups != few)
		free(groups);
	return ret;
}

/* R3 for observers: the data of a truncating open of an existing file goes
 * to a new file with a unique name beside it; the old one stays whole.
 * Returns the new descriptor or -errno. */
static int open_beside(fuse_req_t req, struct who *w, struct node *dir, int dirfd,
		       const char *name, int flags, mode_t mode)
{
	/* New data by a non-root writer: no set-ID bits (setid.h). */
	mode_t keep = setid_must_clear(w->uid) ? 01777 : 07777;
	struct create_arg a = { dirfd, flags, -1, mode & keep };
	char placed[NAME_MAX_BYTES + 1], q1[1024], q2[1024];
	int ret = may_create_in(req, w, dirfd);

	if (ret == 0)
		ret = place_name(&fs.cfg.names, name, false, create_attempt, &a, placed);
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

/* A write-only descriptor cannot be mapped, nor read through: its writes
 * may bypass the page cache, one copy and one page allocation fewer per
 * page (a sequential write runs twice as fast). */
static bool write_only(int flags)
{
	return (flags & O_ACCMODE) == O_WRONLY;
}

#define OPEN_FLAGS_DROPPED (O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC)

/* Open N for an observer; a truncating open of a non-empty file is
 * redirected (R3). Sets *redirected when it was. */
static int open_existing(fuse_req_t req, struct who *w, struct node *n, int flags,
			 bool *redirected)
{
	char name[NAME_MAX_BYTES + 1];
	struct stat st;
	int fd, dfd;

	*redirected = false;
	fd = node_open(n, flags & ~OPEN_FLAGS_DROPPED);
	if (fd < 0 || !(flags & O_TRUNC))
		return fd;
	if (fstat(fd, &st) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	if (noclobber_open(flags, &st) == OPEN_AS_ASKED) {
		/* Nothing to lose: truncating it is a no-op. */
		int ret = S_ISREG(st.st_mode) ? setid_write(w->uid, fd) : 0;

		if (ret < 0) {
			close(fd);
			return ret;
		}
		return fd;
	}
	close(fd);
	fd = passthrough_hold(n);
	if (fd < 0)
		return fd;
	dfd = node_open_parent(n, name, sizeof(name));
	if (dfd < 0) {
		passthrough_unhold(n);
		return -EPERM;	/* nowhere known to put the new data */
	}
	fd = open_beside(req, w, NULL, dfd, name, flags, st.st_mode);
	close(dfd);
	*redirected = fd >= 0;
	if (fd < 0)
		passthrough_unhold(n);
	return fd;
}

void observer_lookup(fuse_req_t req, struct node *dir, const char *name)
{
	struct fuse_entry_param e;
	struct node *n;
	struct stat st;
	int ret, dfd;

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

void observer_open(fuse_req_t req, struct who *w, struct node *n, struct fuse_file_info *fi)
{
	bool redirected;
	int fd;

	fd = open_existing(req, w, n, fi->flags, &redirected);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	/* The kernel's inode is the old file's: keep its page cache out. Else
	 * keep what it cached: attributes time out within a second, so a file
	 * changed behind the mount is noticed (mtime, size) and its cache
	 * dropped. */
	fi->direct_io = redirected || write_only(fi->flags);
	fi->keep_cache = !redirected;
	fi->noflush = 1;	/* an observer's close has nothing to do */
	if (handle_attach(fi, n, fd) < 0) {
		close(fd);
		if (redirected)
			passthrough_unhold(n);
		fuse_reply_err(req, EMFILE);
		return;
	}
	fd = passthrough_choose(fi, n, handle_of(fi), redirected);
	if (fd < 0) {
		handle_free(handle_of(fi));
		fuse_reply_err(req, -fd);
		return;
	}
	if (fuse_reply_open(req, fi) != 0)
		handle_free(handle_of(fi));
}

void observer_create(fuse_req_t req, struct who *w, struct node *dir, const char *name,
		     mode_t mode, struct fuse_file_info *fi)
{
	struct fuse_entry_param e;
	bool redirected = false;
	struct node *n;
	struct stat st;
	int dfd, fd, ret;

	dfd = dir_get(dir);
	if (dfd < 0) {
		fuse_reply_err(req, -dfd);
		return;
	}
	struct create_arg a = { dfd, fi->flags & ~OPEN_FLAGS_DROPPED, -1, mode };
	ret = create_attempt(name, &a);
	fd = a.fd;
	if (ret == 0) {
		ret = own_new(fd, w, dir);
	} else if (ret == -EEXIST && !(fi->flags & O_EXCL)) {
		/* Someone made it since the kernel's lookup: open it as open(2)
		 * would, and keep a truncating open off its data. */
		fd = openat(dfd, name, (fi->flags & ~OPEN_FLAGS_DROPPED) | O_NOFOLLOW | O_CLOEXEC);
		ret = fd < 0 ? -errno : 0;
		if (ret == 0 && fstat(fd, &st) < 0)
			ret = -errno;
		if (ret == 0 && noclobber_open(fi->flags, &st) == OPEN_BESIDE) {
			close(fd);
			fd = open_beside(req, w, dir, dfd, name, fi->flags, st.st_mode);
			ret = fd < 0 ? fd : 0;
			redirected = true;
		} else if (ret == 0 && (fi->flags & O_TRUNC)) {
			ret = setid_write(w->uid, fd);
		}
	}
	dir_put(dir, dfd);
	if (ret == 0)
		ret = node_lookup_fd(fd, &st, &n);
	if (ret < 0) {
		if (fd >= 0)
			close(fd);
		fuse_reply_err(req, -ret);
		return;
	}
	if (!redirected)
		node_set_name(n, dir, name);
	fill_entry(&e, n, &st);
	fi->noflush = 1;
	fi->direct_io = write_only(fi->flags);
	if (handle_attach(fi, n, fd) < 0) {
		close(fd);
		node_forget(n, 1);
		fuse_reply_err(req, EMFILE);
		return;
	}
	/* A create's inode is the file it opens, beside or not. */
	ret = passthrough_choose(fi, n, handle_of(fi), false);
	if (ret < 0) {
		handle_free(handle_of(fi));
		node_forget(n, 1);
		fuse_reply_err(req, -ret);
		return;
	}
	if (fuse_reply_create(req, &e, fi) != 0) {
		handle_free(handle_of(fi));
		node_forget(n, 1);
	}
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

void observer_make(fuse_req_t req, struct who *w, struct node *dir, const char *name,
		   mode_t mode, dev_t rdev, const char *link)
{
	int dfd, ret;

	dfd = dir_get(dir);
	if (dfd < 0) {
		fuse_reply_err(req, -dfd);
		return;
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
		reply_new_entry(req, w, dir, dfd, name);
	dir_put(dir, dfd);
}

void observer_link(fuse_req_t req, struct node *n, struct node *dir, const char *newname)
{
	struct fuse_entry_param e;
	struct node *same;
	struct stat st;
	int fd, dfd, ret;

	fd = node_open(n, O_PATH);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	dfd = dir_get(dir);
	ret = dfd < 0 ? dfd : linkat(fd, "", dfd, newname, AT_EMPTY_PATH) < 0 ? -errno : 0;
	dir_put(dir, dfd);
	if (ret == 0)
		ret = node_lookup_fd(fd, &st, &same);
	close(fd);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	fill_entry(&e, same, &st);
	if (fuse_reply_entry(req, &e) != 0)
		node_forget(same, 1);
}

void observer_remove(fuse_req_t req, struct node *dir, const char *name, int flags)
{
	struct stat st;
	int dfd, ret;

	dfd = dir_get(dir);
	if (dfd < 0) {
		fuse_reply_err(req, -dfd);
		return;
	}
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && is_hidden_ino(st.st_ino))
		ret = ENOENT;
	else
		ret = unlinkat(dfd, name, flags) < 0 ? errno : 0;
	dir_put(dir, dfd);
	fuse_reply_err(req, ret);
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

/* Carry out PLAN for renaming A's name to NEWNAME; 0, 1 when it took a
 * unique name (in PLACED), or -errno. A directory is renamed plainly only
 * onto a directory: if the source were swapped for a file meanwhile, the
 * kernel answers EISDIR rather than replace anything. */
static int rename_as(struct rename_arg *a, const char *newname, enum rename_plan plan,
		     char *placed)
{
	switch (plan) {
	case RENAME_AS_NOREPLACE:
		return rename_attempt(newname, a);
	case RENAME_AS_EXCHANGE:
		return renameat2(a->olddir, a->oldname, a->newdir, newname, RENAME_EXCHANGE) < 0 ?
			       -errno : 0;
	case RENAME_ONTO_DIR:
		return renameat2(a->olddir, a->oldname, a->newdir, newname, 0) < 0 ? -errno : 0;
	case RENAME_TO_UNIQUE:
		return place_name(&fs.cfg.names, newname, true, rename_attempt, a, placed);
	}
	return -EINVAL;
}

void observer_rename(fuse_req_t req, struct who *w, struct node *dir, const char *name,
		     struct node *newdir, const char *newname, unsigned flags)
{
	char placed[NAME_MAX_BYTES + 1], q1[1024], q2[1024];
	struct stat src, dst;
	enum rename_plan plan;
	bool hidden, taken;
	int ret;

	struct rename_arg a = { dir_get(dir), dir_get(newdir), name };
	if (a.olddir < 0 || a.newdir < 0) {
		ret = a.olddir < 0 ? a.olddir : a.newdir;
		goto reply;
	}
	if (fstatat(a.olddir, name, &src, AT_SYMLINK_NOFOLLOW) < 0) {
		ret = -errno;
		goto reply;
	}
	taken = fstatat(a.newdir, newname, &dst, AT_SYMLINK_NOFOLLOW) == 0;
	hidden = is_hidden_ino(src.st_ino) || (taken && is_hidden_ino(dst.st_ino));
	ret = hidden ? -EPERM : noclobber_rename(flags, &src, taken ? &dst : NULL, &plan);
	if (ret == 0)
		ret = rename_as(&a, newname, plan, placed);
	if (ret == 1) {
		stat_add(STAT_REWRITES, 1);
		log_info("rewrite: rename onto \"%s\" stored as \"%s\" (pid %d, uid %u)",
			 log_name(newname, q1, sizeof(q1)), log_name(placed, q2, sizeof(q2)),
			 (int)w->pid, (unsigned)w->uid);
		ret = 0;
	}
reply:
	dir_put(dir, a.olddir);
	dir_put(newdir, a.newdir);
	fuse_reply_err(req, -ret);
}
