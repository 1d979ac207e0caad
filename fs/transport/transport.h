/* How requests reach inboxfs and replies leave it: /dev/fuse through
 * libfuse 3.14's custom I/O, with the protocol features 3.14 does not know
 * (FUSE_HANDLE_KILLPRIV_V2, FUSE_OVER_IO_URING) added to its INIT reply.
 * The face of fs/transport/, the rest of fs/ sees nothing else of it (its
 * three files share internal.h): delete the folder once the platform's
 * libfuse knows these (3.18). */
#ifndef INBOXFS_TRANSPORT_H
#define INBOXFS_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <fuse_lowlevel.h>

/* Takes -o uring=yes|no out of ARGS (libfuse would refuse it). -1 and a
 * line on stderr if the value is bad. */
int transport_opt_parse(struct fuse_args *args);
extern const char transport_usage[];

/* After fuse_session_mount(): every request and reply of SE passes through
 * here from now on. MULTITHREADED: the session is served by
 * fuse_session_loop_mt() (io_uring is used only then). */
int transport_start(struct fuse_session *se, bool multithreaded);
/* After the session loop returns, before anything it serves is torn down:
 * stops and joins the io_uring threads. */
void transport_stop(void);

/* Is the FUSE connection still there to carry an answer? False once the
 * kernel has ended it (an unmount, umount -f, fusectl's abort): /dev/fuse
 * then polls as an error, from the moment of the abort on. */
bool transport_connected(void);

/* passthrough.c: observers' opens of inbox files served by the kernel
 * straight from the backing file (-o passthrough=yes). */
struct handle;
struct node;
/* Before the open reply of handle H for node N (REDIRECTED: its data is
 * another file's, R3, and a hold was taken; or a create's new file):
 * passthrough where the kernel allows it (then FI
 * says so); 0 or -errno to answer instead. */
int passthrough_choose(struct fuse_file_info *fi, const struct node *n, struct handle *h,
		       bool redirected);
/* A redirected open (R3) of N is coming: fails with ETXTBSY while N is
 * open passthrough (the kernel would refuse it), before its file is made;
 * unhold if it does not come after all. */
int passthrough_hold(const struct node *n);
void passthrough_unhold(const struct node *n);
/* H is freed: its open is over. */
void passthrough_forget(const struct handle *h);

/* What the kernel said of the request this thread handles (a WRITE, an
 * OPEN or CREATE with O_TRUNC): 1, clear the file's set-ID bits (its
 * writer lacks CAP_FSETID); 0, keep them; -1, the kernel does not say
 * (no FUSE_HANDLE_KILLPRIV_V2: it clears them itself, or nobody does).
 * fs/setid.c decides with it. */
int transport_request_kill_suidgid(void);

/* uring.c: the io_uring transport. The request this thread handles will
 * be answered by another thread (syncpool.c): its ring entry, if it is an
 * io_uring request, is parked until then. Returns what that thread passes
 * to uring_adopt() before it answers (NULL for a /dev/fuse request), and
 * uring_adopt(NULL) after. */
void *uring_defer(void);
void uring_adopt(void *token);

/* Where the reply to the request this thread handles will be copied, if
 * it is an io_uring request and SIZE fits: a READ's data read there is
 * not copied again. The request's own payload is gone by then. */
void *uring_reply_buffer(size_t size);

#endif
