/* fs/ticker.c: a thread that runs JOB every PERIOD_MS. */
#ifndef INBOXFS_TICKER_H
#define INBOXFS_TICKER_H

#include <pthread.h>
#include <stdbool.h>

struct ticker {
	unsigned period_ms;
	bool wait_first;		/* a period before the first run */
	bool (*job)(void);		/* false: the thread ends */
	/* ticker.c's */
	/* A leaf: stopping. Released while the job runs (the take-over's
	 * holds no lock while it recovers: each area's own lock, a file's,
	 * keeps instances apart). */
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stopping, started;
	pthread_t thread;
};

/* 0 or -errno. The thread blocks the stop signals. */
int ticker_start(struct ticker *t);
/* Stop the thread, after a job under way. */
void ticker_stop(struct ticker *t);

#endif
