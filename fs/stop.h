/* fs/stop.c: the stop on SIGTERM or SIGINT. */
#ifndef INBOXFS_STOP_H
#define INBOXFS_STOP_H

#include <pthread.h>

/* Serving (after fuse_daemonize(), on the thread that runs the session
 * loop): from now on a stop signal drains open drops for up to DRAIN_S
 * seconds (0: none), then ends the loop; a second one ends it at once.
 * 0 or -errno (then libfuse's handlers stay: an immediate stop). */
int stop_start(unsigned drain_s);
/* A thread of the daemon's own (FN(ARG)) with the stop signals blocked, as
 * in libfuse's workers: they are for the session loop's thread. 0 or
 * -errno. */
int worker_create(pthread_t *thread, void *(*fn)(void *), void *arg);
/* Stop at once, without a drain (this instance may no longer publish). */
void stop_now(void);
/* The session loop returned: stop the stop's thread. Returns the signal
 * that asked for the stop, or 0. */
int stop_end(void);

#endif
