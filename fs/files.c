/* Handlers for open files: open and create (handed to the client or the
 * observer view), read, write, flush, release, fsync, fallocate, lseek.
 * Drops (client files) share the handle code; their lifecycle is carried
 * out in drops.c. Each handler replies exactly once. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "client.h"
#include "drop.h"
#include "drops.h"
#include "files.h"
#include "fs.h"
#include "handles.h"
#include "inode.h"
#include "names.h"
#include "observer.h"
#include "options.h"
#include "request.h"
#include "setid.h"
#include "stats.h"
#include "syncpool.h"
#include "transport/transport.h"

void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct who w;
	int ret = who_get(req, &w);

	if (ret < 0)
		fuse_reply_err(req, -ret);
	else if (w.observer)
		observer_open(req, &w, node_of(ino), fi);
	else
		client_open(req, &w, node_of(ino), fi);
	who_put(&w);
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
	       struct fuse_file_info *fi)
{
	struct who w = WHO_NONE;
	int ret = name_check(name);

	if (ret == 0)
		ret = who_get(req, &w);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else if (w.observer)
		observer_create(req, &w, node_of(parent), name, mode, fi);
	else
		client_create(req, &w, node_of(parent), name, mode, fi);
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
	ret = d ? drop_change_begin(d, DROP_CHANGE_DATA) : setid_write(fuse_req_ctx(req)->uid, h->fd);
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
		if (drop_change_end(d, DROP_CHANGE_DATA, res < 0 ? (int)-res : 0))
			stat_add(STAT_ERRORS, 1);
		if (res > 0)
			stat_add(STAT_BYTES, (uint64_t)res);
	}
	if (res < 0)
		fuse_reply_err(req, (int)-res);
	else
		fuse_reply_write(req, (size_t)res);
}

/* The request's context stays readable until it is answered, from any
 * thread: the closer's uid tells smbd's own teardown from a CLOSE. */
static void flush_job(fuse_req_t req, void *h, int pid)
{
	fuse_reply_err(req, -flush_drop(h, pid, fuse_req_ctx(req)->uid));
}

void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);
	pid_t pid = fuse_req_ctx(req)->pid;

	if (h->drop.d == NULL) {
		fuse_reply_err(req, 0);
		return;
	}
	/* A durable close fsyncs: off the request threads (syncpool.c). */
	if (fs.cfg.sync == SYNC_CLOSE && syncpool_defer(req, flush_job, h, pid))
		return;
	flush_job(req, h, pid);
}

void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	release_handle(handle_of(fi));
	fuse_reply_err(req, 0);
}

static void fsync_job(fuse_req_t req, void *p, int datasync)
{
	struct handle *h = p;
	int ret = datasync ? fdatasync(h->fd) : fsync(h->fd);

	fuse_reply_err(req, ret < 0 ? errno : 0);
}

void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	if (!syncpool_defer(req, fsync_job, handle_of(fi), datasync))
		fsync_job(req, handle_of(fi), datasync);
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
		ret = setid_clear(h->fd);
	/* Out of space mid-file, as a failed write: the writer cannot trust
	 * it. (An unsupported mode is only a question answered.) */
	if (loses_data(-ret))
		failed = -ret;
	if (d && drop_change_end(d, DROP_CHANGE_DATA, failed))
		stat_add(STAT_ERRORS, 1);
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
