/* Counters (R10), lock-free: one word each (a dot only where one counts a
 * kind of another, recoveries.areas), as the stats file and inboxfs-stat
 * show them. */
#ifndef INBOXFS_STATS_H
#define INBOXFS_STATS_H

#include <stddef.h>
#include <stdint.h>

/* The counters' file at the inbox's top, for observers: no message is
 * published under this name there (struct staging's reserved). */
#define STATS_FILE ".inboxfs-stats"

enum stat_id {
	STAT_DROPS,		/* client creates */
	STAT_BYTES,		/* bytes written by clients */
	STAT_PUBLISHED,		/* drops moved into the inbox */
	STAT_REWRITES,		/* names changed to a unique one */
	STAT_DISCARDED,		/* drops deleted by their owner */
	STAT_QUARANTINED,	/* drops moved to incomplete/ */
	STAT_RECOVERED,		/* drops handled by recovery (start-up or take-over) */
	STAT_AREAS_RECOVERED,	/* staging areas of dead instances recovered */
	STAT_ERRORS,		/* failed publications and syncs, drops failed by a write */
	STAT_COUNT
};

void stat_add(enum stat_id id, uint64_t n);
uint64_t stat_get(enum stat_id id);
const char *stat_name(enum stat_id id);

/* Record one publication's latency (from the close to the name in place). */
void stat_latency(uint64_t usec);
/* The P-th percentile (0..100) of recorded latencies, in microseconds,
 * to the upper bound of its power-of-two bucket. */
uint64_t stat_latency_percentile(unsigned p);

#endif
