/* A thread that does one job every period until it is stopped: the linger
 * thread (drops.c), the take-over of dead instances' areas (recovery.c)
 * and the watch of the directory under the mount (covered.c) are each one.
 * The job runs with no lock held; ticker_stop() waits for a job under way
 * to end. Periods are on the monotonic clock. */
#include <pthread.h>
#include <time.h>

#include "stop.h"
#include "ticker.h"

static struct timespec in_ms(unsigned ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

static void *ticker_main(void *arg)
{
	struct ticker *t = arg;
	bool wait = t->wait_first;

	pthread_mutex_lock(&t->lock);
	while (!t->stopping) {
		if (wait) {
			struct timespec until = in_ms(t->period_ms);

			pthread_cond_timedwait(&t->wake, &t->lock, &until);
			if (t->stopping)
				break;
		}
		wait = true;
		pthread_mutex_unlock(&t->lock);
		bool go_on = t->job();
		pthread_mutex_lock(&t->lock);
		if (!go_on)
			break;
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

int ticker_start(struct ticker *t)
{
	pthread_condattr_t attr;
	int ret;

	pthread_mutex_init(&t->lock, NULL);
	/* The monotonic clock: a wall clock stepped back would hold the
	 * next run for as long (publications, the take-over, the check of
	 * our own area). */
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&t->wake, &attr);
	pthread_condattr_destroy(&attr);
	t->stopping = false;
	ret = worker_create(&t->thread, ticker_main, t);
	if (ret < 0)
		return ret;
	t->started = true;
	return 0;
}

void ticker_stop(struct ticker *t)
{
	if (!t->started)
		return;
	pthread_mutex_lock(&t->lock);
	t->stopping = true;
	pthread_cond_signal(&t->wake);
	pthread_mutex_unlock(&t->lock);
	pthread_join(t->thread, NULL);
	t->started = false;
}
