/* Group commit of directory syncs (dirsync.h). */
#include "dirsync.h"

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

struct dirsync_wait {
	struct dirsync_wait *next;
	int fd;
	dev_t dev;		/* which directory: one sync per directory */
	ino_t ino;
	int err;		/* the covering sync's, once done */
	bool done;
};

void dirsync_init(struct dirsync *s)
{
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->done, NULL);
	s->busy = false;
	s->queue = NULL;
	s->queued = 0;
	s->sync = fsync;
}

void dirsync_destroy(struct dirsync *s)
{
	pthread_cond_destroy(&s->done);
	pthread_mutex_destroy(&s->lock);
}

/* Sync each directory of BATCH once; every waiter gets its directory's
 * result. Runs without the lock: the waiters are parked on their own
 * stacks until done is set. */
static void sync_batch(struct dirsync *s, struct dirsync_wait *batch)
{
	for (struct dirsync_wait *w = batch; w != NULL; w = w->next) {
		struct dirsync_wait *same = batch;

		while (same != w && (same->dev != w->dev || same->ino != w->ino))
			same = same->next;
		if (same != w)
			w->err = same->err;
		else
			w->err = s->sync(w->fd) < 0 ? -errno : 0;
	}
}

int dirsync(struct dirsync *s, int fd)
{
	struct dirsync_wait me = { .fd = fd };
	struct stat sb;

	if (fstat(fd, &sb) < 0)
		return -errno;
	me.dev = sb.st_dev;
	me.ino = sb.st_ino;

	pthread_mutex_lock(&s->lock);
	me.next = s->queue;
	s->queue = &me;
	s->queued++;
	while (!me.done) {
		if (s->busy) {
			pthread_cond_wait(&s->done, &s->lock);
			continue;
		}
		/* Lead: whatever is queued now was changed before this sync
		 * starts, so the sync covers it. */
		struct dirsync_wait *batch = s->queue;

		s->queue = NULL;
		s->queued = 0;
		s->busy = true;
		pthread_mutex_unlock(&s->lock);
		sync_batch(s, batch);
		pthread_mutex_lock(&s->lock);
		for (struct dirsync_wait *w = batch, *next; w != NULL; w = next) {
			next = w->next;		/* W's owner may return once done */
			w->done = true;
		}
		s->busy = false;
		pthread_cond_broadcast(&s->done);
	}
	pthread_mutex_unlock(&s->lock);
	return me.err;
}
