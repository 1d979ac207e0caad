/* Open files for observers: open, create, read, write, close. A truncating
 * open of a non-empty file, or a create that finds one, writes beside it
 * (R3). Drops (client files) share the handle code; their close is in
 * drops.c. */
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

#include "fs.h"
#include "log.h"
#include "names.h"
#include "stats.h"
#include "transport.h"


static int new_handle(struct fuse_file_info *fi, struct node *n, int fd)
{
	struct handle *h = handle_new();

	if (h == NULL)
		return -EMFILE;
	h->fd = fd;
	h->node = n;
	fi->fh = (uint64_t)(uintptr_t)h;
	return 0;
}

/* A write or truncating open by a writer without CAP_FSETID clears
 * set-user-ID, and set-group-ID where group execution is on, as the kernel
 * does for local files: the daemon writes as root, so the backing
 * filesystem would keep them. With FUSE_HANDLE_KILLPRIV_V2 the kernel says
 * per request when (and leaves truncate and chown to op_setattr()); without
 * it, anyone but root stands in for "without CAP_FSETID" (transport.h). */
static int kill_setid(uid_t writer, int fd)
{
	return transport_kill_suidgid(writer) ? kill_suidgid_fd(fd) : 0;
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

/* Is GID the requester's group, or one of its supplementary groups? */
static bool in_group(fuse_req_t req, const struct who *w, gid_t gid)
{
	gid_t few[64], *groups = few;
	bool found = w->gid == gid;
	int n;

	if (found)
		return true;
	n = fuse_req_getgroups(req, 64, few);
	if (n > 64) {
		groups = calloc((size_t)n, sizeof(*groups));
		if (groups == NULL)
			return false;
		n = fuse_req_getgroups(req, n, groups);
	}
	for (int i = 0; i < n && !found; i++)
		found = groups[i] == gid;
	if (groups != few)
		free(groups);
	return found;
}

/* R3: the file written beside another is created only where the observer
 * could create one itself: write and search permission on the directory.
 * Checked on the directory's mode bits for the request's uid, gid and
 * supplementary groups, as the kernel checks them through this mount
 * (default_permissions, and no ACLs: inboxfs does not ask for
 * FUSE_POSIX_ACL), rather than by switching this worker thread's
 * credentials. Root may, as with CAP_DAC_OVERRIDE. */
static int may_create_in(fuse_req_t req, const struct who *w, int dirfd)
{
	struct stat st;
	mode_t bits;

	if (w->uid == 0)
		return 0;
	if (fstat(dirfd, &st) < 0)
		return -errno;
	if (st.st_uid == w->uid)
		bits = st.st_mode >> 6;
	else if (in_group(req, w, st.st_gid))
		bits = st.st_mode >> 3;
	else
		bits = st.st_mode;
	return (bits & 3) == 3 ? 0 : -EACCES;
}

/* R3 for observers: the data of a truncating open of an existing file goes
 * to a new file with a unique name beside it; the old one stays whole.
 * Returns the new descriptor or -errno. */
static int open_beside(fuse_req_t req, struct who *w, struct node *dir, int dirfd,
		       const char *name, int flags, mode_t mode)
{
	/* New data by a non-root writer: no set-ID bits (see kill_setid()). */
	mode_t keep = transport_kill_suidgid(w->uid) ? 01777 : 07777;
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
static int observer_open(fuse_req_t req, struct who *w, struct node *n, int flags,
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
	if (st.st_size == 0 || !S_ISREG(st.st_mode)) {
		/* Nothing to lose: truncating it is a no-op. */
		int ret = S_ISREG(st.st_mode) ? kill_setid(w->uid, fd) : 0;

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

void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
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
			handle_free(handle_of(fi));
		goto out;
	}
	fd = observer_open(req, &w, n, fi->flags, &redirected);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		goto out;
	}
	/* The kernel's inode is the old file's: keep its page cache out. Else
	 * keep what it cached: attributes time out within a second, so a file
	 * changed behind the mount is noticed (mtime, size) and its cache
	 * dropped. */
	fi->direct_io = redirected || write_only(fi->flags);
	fi->keep_cache = !redirected;
	fi->noflush = 1;	/* an observer's close has nothing to do */
	if (new_handle(fi, n, fd) < 0) {
		close(fd);
		if (redirected)
			passthrough_unhold(n);
		fuse_reply_err(req, ENOMEM);
		goto out;
	}
	fd = passthrough_choose(fi, n, handle_of(fi), w.uid, redirected);
	if (fd < 0) {
		handle_free(handle_of(fi));
		fuse_reply_err(req, -fd);
		goto out;
	}
	if (fuse_reply_open(req, fi) != 0)
		handle_free(handle_of(fi));
out:
	who_put(&w);
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
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
			fd = open_beside(req, &w, dir, dfd, name, fi->flags, st.st_mode);
			ret = fd < 0 ? fd : 0;
			redirected = true;
		} else if (ret == 0 && (fi->flags & O_TRUNC)) {
			ret = kill_setid(w.uid, fd);
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
	fi->noflush = 1;
	fi->direct_io = write_only(fi->flags);
	if (new_handle(fi, n, fd) < 0) {
		close(fd);
		node_forget(n, 1);
		fuse_reply_err(req, ENOMEM);
		goto out;
	}
	/* A create's inode is the file it opens, beside or not. */
	ret = passthrough_choose(fi, n, handle_of(fi), w.uid, false);
	if (ret < 0) {
		handle_free(handle_of(fi));
		node_forget(n, 1);
		fuse_reply_err(req, -ret);
		goto out;
	}
	if (fuse_reply_create(req, &e, fi) != 0) {
		handle_free(handle_of(fi));
		node_forget(n, 1);
	}
out:
	who_put(&w);
}

/* Each worker thread reads into a buffer of its own, kept for its life.
 * fuse_reply_data() would allocate one per reply, and at 1 MiB glibc maps
 * fresh memory each time: its page faults and munmap() took half of a
 * sequential read. The buffer is page-aligned: both copies (from the backing
 * file's page cache, into the mount's) then move whole pages. (Why not
 * splice the file into the device: see op_init().) */
struct read_buf {
	size_t size;
	void *data;
};

static pthread_key_t read_buf_key;
static pthread_once_t read_buf_once = PTHREAD_ONCE_INIT;
static bool read_buf_keyed;

static void read_buf_free(void *p)
{
	struct read_buf *b = p;

	free(b->data);
	free(b);
}

static void read_buf_key_create(void)
{
	read_buf_keyed = pthread_key_create(&read_buf_key, read_buf_free) == 0;
}

/* This thread's buffer of at least SIZE bytes, or NULL (ENOMEM). */
static void *read_buf(size_t size)
{
	struct read_buf *b;
	void *data;

	pthread_once(&read_buf_once, read_buf_key_create);
	if (!read_buf_keyed)
		return NULL;
	b = pthread_getspecific(read_buf_key);
	if (b == NULL) {
		b = calloc(1, sizeof(*b));
		if (b == NULL || pthread_setspecific(read_buf_key, b) != 0) {
			free(b);
			return NULL;
		}
	}
	if (b->size < size) {
		if (posix_memalign(&data, (size_t)sysconf(_SC_PAGESIZE), size) != 0)
			return NULL;
		free(b->data);
		b->data = data;
		b->size = size;
	}
	return b->data;
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	void *buf;
	ssize_t n;

	if (statsfile_is(handle_of(fi)->node)) {
		statsfile_read(req, size, off);
		return;
	}
	buf = uring_reply_buffer(size);	/* over io_uring: no copy of the reply */
	if (buf == NULL)
		buf = read_buf(size);
	if (buf == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = pread(handle_of(fi)->fd, buf, size, off);
	if (n < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_buf(req, buf, (size_t)n);
}

void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in,
			 off_t off, struct fuse_file_info *fi)
{
	struct fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
	struct handle *h = handle_of(fi);
	struct drop *d = h->drop.d;
	ssize_t res;
	int ret;

	/* A delivered message is the consumer's: no descriptor changes it. */
	ret = d ? drop_change_begin(d, DROP_CHANGE_DATA) : kill_setid(fuse_req_ctx(req)->uid, h->fd);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	out.buf[0].fd = h->fd;
	out.buf[0].pos = off;
	res = fuse_buf_copy(&out, in, 0);
	if (d) {
		/* A drop its writer could not write whole is not delivered,
		 * whatever comes next (R11: full disk). */
		drop_change_end(d, DROP_CHANGE_DATA, res < 0 ? (int)-res : 0);
		if (res > 0)
			stat_add(STAT_BYTES, (uint64_t)res);
	}
	if (res < 0)
		fuse_reply_err(req, (int)-res);
	else
		fuse_reply_write(req, (size_t)res);
}

void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);

	fuse_reply_err(req, h->drop.d ? -drop_handle_flush(h, fuse_req_ctx(req)->pid) : 0);
}

void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);

	if (h->drop.d)
		drop_handle_release(h);
	else
		handle_free(h);
	fuse_reply_err(req, 0);
}

void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	int fd = handle_of(fi)->fd;
	int ret = datasync ? fdatasync(fd) : fsync(fd);

	fuse_reply_err(req, ret < 0 ? errno : 0);
}

void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);
	struct drop *d = h->drop.d;
	int ret = d ? drop_change_begin(d, DROP_CHANGE_DATA) : 0, failed = 0;

	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	if (fallocate(h->fd, mode, off, len) < 0)
		ret = -errno;
	/* With FUSE_HANDLE_KILLPRIV_V2 the kernel neither clears set-ID bits
	 * on fallocate nor flags the request: do as a write would. */
	else if (fuse_req_ctx(req)->uid != 0)
		ret = kill_suidgid_fd(h->fd);
	/* Out of space mid-file, as a failed write: the writer cannot trust
	 * it. (An unsupported mode is only a question answered.) */
	if (loses_data(-ret))
		failed = -ret;
	if (d)
		drop_change_end(d, DROP_CHANGE_DATA, failed);
	fuse_reply_err(req, -ret);
}

void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	off_t res = lseek(handle_of(fi)->fd, off, whence);

	if (res < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_lseek(req, res);
}
