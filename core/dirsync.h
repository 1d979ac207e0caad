/* Group commit of directory syncs. A durable publication renames a drop
 * into its directory and must not be acknowledged before the directory is
 * synced. Concurrent publications share syncs: a caller whose rename is
 * done queues itself; whichever caller finds no sync running takes the
 * whole queue and syncs each distinct directory in it once, for all of
 * them. A sync started after a caller queued covers its rename, and every
 * caller gets the result of a sync that covers it, error included.
 *
 *   caller: rename done -> queued -> (leader: take queue, sync each
 *           directory once, hand out results) -> result
 *
 * One mutex per dirsync; no sync runs with it held. */
#ifndef INBOXFS_DIRSYNC_H
#define INBOXFS_DIRSYNC_H

#include <pthread.h>
#include <stdbool.h>

struct dirsync_wait;

struct dirsync {
	pthread_mutex_t lock;		/* a leaf: the sync itself runs unlocked */
	pthread_cond_t done;
	bool busy;			/* a leader is syncing */
	struct dirsync_wait *queue;	/* callers no running sync covers */
	unsigned queued;		/* how many */
	int (*sync)(int fd);		/* fsync(); tests put their own */
};

void dirsync_init(struct dirsync *s);
void dirsync_destroy(struct dirsync *s);

/* Sync directory FD (open, readable) after a change in it; returns 0 or
 * -errno of the sync that covered the change. */
int dirsync(struct dirsync *s, int fd);

#endif
