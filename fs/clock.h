/* The monotonic clock, which periods, deadlines, a drop's lifecycle
 * (drop_config.now_ms) and publication latencies are measured on. */
#ifndef INBOXFS_CLOCK_H
#define INBOXFS_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static inline uint64_t monotonic_ms(void)
{
	return monotonic_us() / 1000;
}

#endif
