/* Counters and a power-of-two latency histogram, all atomic. */
#include "stats.h"

#include <stdatomic.h>

static _Atomic uint64_t counters[STAT_COUNT];
static _Atomic uint64_t latency[40];	/* bucket i: < 2^i microseconds */

static const char *const names[STAT_COUNT] = {
	[STAT_DROPS] = "drops",
	[STAT_BYTES] = "bytes",
	[STAT_PUBLISHED] = "publications",
	[STAT_REWRITES] = "rewrites",
	[STAT_DISCARDED] = "discarded",
	[STAT_QUARANTINED] = "quarantines",
	[STAT_RECOVERED] = "recoveries",
	[STAT_AREAS_RECOVERED] = "recoveries.areas",
	[STAT_ERRORS] = "errors",
};

void stat_add(enum stat_id id, uint64_t n) { atomic_fetch_add_explicit(&counters[id], n, memory_order_relaxed); }
uint64_t stat_get(enum stat_id id) { return atomic_load_explicit(&counters[id], memory_order_relaxed); }
const char *stat_name(enum stat_id id) { return names[id]; }

void stat_latency(uint64_t usec)
{
	unsigned b = 0;

	while (b < 39 && (1ULL << b) <= usec)
		b++;
	atomic_fetch_add_explicit(&latency[b], 1, memory_order_relaxed);
}

uint64_t stat_latency_percentile(unsigned p)
{
	uint64_t counts[40], total = 0, seen = 0;

	for (unsigned i = 0; i < 40; i++) {
		counts[i] = atomic_load_explicit(&latency[i], memory_order_relaxed);
		total += counts[i];
	}
	if (total == 0)
		return 0;
	for (unsigned i = 0; i < 40; i++) {
		seen += counts[i];
		if (counts[i] && seen * 100 >= total * p)
			return 1ULL << i;
	}
	return 1ULL << 39;
}
