/* Inside fs/transport/: what transport.c, which owns the session's I/O,
 * drives in uring.c and passthrough.c, and the hooks it hands them. They
 * reach transport.c only through those hooks. */
#ifndef INBOXFS_TRANSPORT_INTERNAL_H
#define INBOXFS_TRANSPORT_INTERNAL_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <fuse_lowlevel.h>

/* uring.c: the io_uring transport. */
struct uring_geometry {
	size_t payload;		/* the kernel's max_payload_sz at least */
	unsigned queues;	/* possible CPUs: one queue each */
};
/* Look at a request (BUF, LEN: in-header and arguments) before it is
 * dispatched, on the thread that will handle it. */
typedef void uring_note_fn(const void *buf, size_t len);
/* Before the INIT reply: make the rings, whose requests go through NOTE.
 * 0, or -errno (then nothing is left behind). */
int uring_prepare(struct fuse_session *se, int devfd, const struct uring_geometry *g,
		  uring_note_fn *note);
/* After the INIT reply with FUSE_OVER_IO_URING was accepted: register the
 * ring entries and serve. */
void uring_run(void);
/* Before the INIT reply without FUSE_OVER_IO_URING: undo uring_prepare(). */
void uring_discard(void);
void uring_stop(void);
/* If the reply OUT (IOV, COUNT, total LEN) answers the ring request this
 * thread is handling, commit it there and return LEN or -1 (errno);
 * else return -2. */
ssize_t uring_reply(const struct iovec *iov, int count, size_t len);

/* passthrough.c: the INIT reply turned passthrough on for device DEVFD.
 * NAME_BACKING(ID) makes the open reply to the request this thread
 * handles name backing ID. */
typedef void passthrough_reply_fn(int id);
void passthrough_enable(int devfd, passthrough_reply_fn *name_backing);

#endif
