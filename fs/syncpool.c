/* Requests that wait on the disk (a durable close's fsyncs, an fsync of a
 * file or a directory) are
 * handled by a few worker threads of their own and answered from there, so
 * that no thread that fetches requests waits for a disk flush: over
 * io_uring each CPU's queue has 4 threads (transport/uring.c), and four durable
 * closes on one CPU held all of them for as long as their fsyncs took,
 * with every other request on the machine waiting behind them. Over
 * /dev/fuse it spares libfuse's loop threads alike.
 *
 * A worker answers through libfuse as the handler would; transport/uring.c commits
 * the answer of an io_uring request on its ring's own thread. The kernel
 * sends no request on a handle after its RELEASE, and no RELEASE while a
 * FLUSH, FSYNC or FSYNCDIR of it is unanswered (the caller holds the
 * file), so the handle a job names outlives the job. Jobs queued when the daemon stops
 * are still run and answered (syncpool_stop()). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "log.h"
#include "stop.h"
#include "syncpool.h"
#include "transport/transport.h"

/* Workers: as many durable closes as this may wait on the disk at once
 * (the later ones queue here, holding no request thread, and share the
 * directory syncs of core/dirsync.c when they run). */
#define WORKERS 8

struct job {
	fuse_req_t req;
	syncpool_fn *fn;
	void *h;
	int arg;
	void *token;		/* uring_defer()'s */
	struct job *next;
};

static struct {
	pthread_mutex_t lock;	/* a leaf: guards the queue and stopping */
	pthread_cond_t wake;
	struct job *head, **tail;
	bool stopping;
	unsigned started;
	pthread_t tids[WORKERS];
} pool = { .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER };

static void *worker_main(void *arg)
{
	struct job *j;

	for (;;) {
		pthread_mutex_lock(&pool.lock);
		while (pool.head == NULL && !pool.stopping)
			pthread_cond_wait(&pool.wake, &pool.lock);
		j = pool.head;
		if (j) {
			pool.head = j->next;
			if (pool.head == NULL)
				pool.tail = &pool.head;
		}
		pthread_mutex_unlock(&pool.lock);
		if (j == NULL)
			return NULL;	/* stopping, and nothing left */
		uring_adopt(j->token);
		j->fn(j->req, j->h, j->arg);
		uring_adopt(NULL);
		free(j);
	}
}

void syncpool_start(void)
{
	unsigned n = 0;

	pthread_mutex_lock(&pool.lock);
	pool.tail = &pool.head;
	while (n < WORKERS && worker_create(&pool.tids[n], worker_main, NULL) == 0)
		n++;
	pool.started = n;
	pthread_mutex_unlock(&pool.lock);
	/* With none, every such request is handled on its own thread
	 * (syncpool_defer() says no), as before this pool. */
	if (n < WORKERS)
		log_warnx("syncpool: %u of %u workers started", n, WORKERS);
}

bool syncpool_defer(fuse_req_t req, syncpool_fn *fn, void *h, int arg)
{
	struct job *j = calloc(1, sizeof(*j));
	bool taken = false;

	if (j == NULL)
		return false;	/* then the caller does it itself */
	pthread_mutex_lock(&pool.lock);
	/* No worker (none started, or stopped): the caller does it. */
	if (pool.started > 0 && !pool.stopping) {
		*j = (struct job){ .req = req, .fn = fn, .h = h, .arg = arg,
				   .token = uring_defer() };
		*pool.tail = j;
		pool.tail = &j->next;
		pthread_cond_signal(&pool.wake);
		taken = true;
	}
	pthread_mutex_unlock(&pool.lock);
	if (!taken)
		free(j);
	return taken;
}

void syncpool_stop(void)
{
	pthread_mutex_lock(&pool.lock);
	pool.stopping = true;
	pthread_cond_broadcast(&pool.wake);
	pthread_mutex_unlock(&pool.lock);
	/* Only this thread changes started once the workers run. */
	for (unsigned i = 0; i < pool.started; i++)
		pthread_join(pool.tids[i], NULL);
	pthread_mutex_lock(&pool.lock);
	pool.started = 0;
	pthread_mutex_unlock(&pool.lock);
}
