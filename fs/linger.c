/* linger=SECONDS (R2): a closed drop stays visible to its session for that
 * long, so local tools that work on a name after closing it (rsync sets
 * times on its temporary file and renames it) find it; publication waits
 * until then. Its close is still durable and acknowledged (staged a.*, so
 * recovery delivers it). A thread publishes drops whose time is up and
 * that nobody has reopened. */
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "fs.h"

static struct drop *lingering;		/* [session_lock] */
static pthread_mutex_t wait_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static bool stopping, started;
static pthread_t worker;

uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void linger_add(struct drop *d)
{
	if (d->lingering)
		return;
	d->lingering = true;
	d->linger_next = lingering;
	lingering = d;
}

/* Take off the list every drop that is due (all of them when ALL) and not
 * open, hidden and detached from its node; returns them chained. */
static struct drop *take_due(bool all)
{
	uint64_t now = now_ms();
	struct drop *due = NULL;

	session_lock();
	for (struct drop **pp = &lingering; *pp;) {
		struct drop *d = *pp;

		if (d->nopen > 0 || (!all && now < d->linger_until)) {
			pp = &d->linger_next;
			continue;
		}
		*pp = d->linger_next;
		d->lingering = false;
		session_hide_drop(d);
		((struct node *)d->node)->drop = NULL;
		d->linger_next = due;
		due = d;
	}
	session_unlock();
	return due;
}

static void finish_all(struct drop *due)
{
	while (due) {
		struct drop *next = due->linger_next;

		drop_finish(due, -1);
		due = next;
	}
}

static void *linger_main(void *arg)
{
	pthread_mutex_lock(&wait_lock);
	while (!stopping) {
		struct timespec until;

		pthread_mutex_unlock(&wait_lock);
		finish_all(take_due(false));
		pthread_mutex_lock(&wait_lock);
		/* A tenth of a second is the promised precision. */
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 100 * 1000 * 1000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		if (!stopping)
			pthread_cond_timedwait(&wake, &wait_lock, &until);
	}
	pthread_mutex_unlock(&wait_lock);
	return NULL;
}

int linger_start(void)
{
	if (fs.cfg.linger == 0)
		return 0;
	if (pthread_create(&worker, NULL, linger_main, NULL) != 0)
		return -1;
	started = true;
	return 0;
}

void linger_stop(void)
{
	if (!started)
		return;
	pthread_mutex_lock(&wait_lock);
	stopping = true;
	pthread_cond_signal(&wake);
	pthread_mutex_unlock(&wait_lock);
	pthread_join(worker, NULL);
	started = false;
	/* Unmounting: nobody can reopen them now. */
	finish_all(take_due(true));
}
