/* fs/syncpool.c: the workers that handle and answer requests which wait on the
 * disk (durable closes, fsync), off the request threads. */
#ifndef INBOXFS_SYNCPOOL_H
#define INBOXFS_SYNCPOOL_H

#include <stdbool.h>

#include <fuse_lowlevel.h>

/* A job: handle REQ (on open file H: a struct handle, or dirs.c's own,
 * with ARG) and answer it. */
typedef void syncpool_fn(fuse_req_t req, void *h, int arg);
void syncpool_start(void);	/* logs if it cannot start every worker */
/* Have a worker run FN(REQ, H, ARG), which answers REQ: true; false if
 * no worker can (the caller runs it). */
bool syncpool_defer(fuse_req_t req, syncpool_fn *fn, void *h, int arg);
/* Run what is queued, then stop the workers (before transport_stop()). */
void syncpool_stop(void);

#endif
