/* Unit tests for core/stats.c: counters and the latency histogram. The
 * counters are process-global, so tests compare against a snapshot, and
 * the empty-histogram test runs before anything records a latency. */
#include <pthread.h>
#include <string.h>

#include "unit.h"

#include "stats.h"

static void test_latency_empty(void **state)
{
	assert_int_equal(stat_latency_percentile(50), 0);
	assert_int_equal(stat_latency_percentile(100), 0);
}

static void test_counters(void **state)
{
	uint64_t before[STAT_COUNT];

	for (int id = 0; id < STAT_COUNT; id++)
		before[id] = stat_get(id);
	stat_add(STAT_BYTES, 4096);
	stat_add(STAT_BYTES, 1);
	stat_add(STAT_DROPS, 1);
	stat_add(STAT_ERRORS, 0);
	stat_add(STAT_REWRITES, 1ULL << 40);
	for (int id = 0; id < STAT_COUNT; id++) {
		uint64_t want = before[id];

		if (id == STAT_BYTES)
			want += 4097;
		else if (id == STAT_DROPS)
			want += 1;
		else if (id == STAT_REWRITES)
			want += 1ULL << 40;
		if (stat_get(id) != want)
			fail_msg("%s: %llu, want %llu", stat_name(id),
				 (unsigned long long)stat_get(id), (unsigned long long)want);
	}
}

static void test_counter_names(void **state)
{
	for (int id = 0; id < STAT_COUNT; id++) {
		const char *name = stat_name(id);

		assert_non_null(name);
		assert_true(strlen(name) > 0);
		assert_null(strpbrk(name, " \t\n:="));
		for (int other = 0; other < id; other++)
			assert_string_not_equal(name, stat_name(other));
	}
	assert_string_equal(stat_name(STAT_DROPS), "drops");
	assert_string_equal(stat_name(STAT_BYTES), "bytes");
}

enum { ADDERS = 4, ADDS = 1000000 };

static pthread_barrier_t start;

static void *adder(void *arg)
{
	pthread_barrier_wait(&start);	/* all at once, to contend */
	for (int i = 0; i < ADDS; i++)
		stat_add(STAT_PUBLISHED, 1);
	return NULL;
}

static void test_counters_concurrent(void **state)
{
	pthread_t th[ADDERS];
	uint64_t before = stat_get(STAT_PUBLISHED);

	pthread_barrier_init(&start, NULL, ADDERS);
	for (int i = 0; i < ADDERS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, adder, NULL), 0);
	for (int i = 0; i < ADDERS; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&start);
	assert_int_equal(stat_get(STAT_PUBLISHED) - before, (uint64_t)ADDERS * ADDS);
}

static void test_latency_percentiles(void **state)
{
	/* 90 fast, 9 slower, 1 very slow; none on a power of two, so each
	 * value's bucket bound is the next power of two above it. */
	for (int i = 0; i < 90; i++)
		stat_latency(100);
	for (int i = 0; i < 9; i++)
		stat_latency(1000);
	stat_latency(1000000);

	assert_int_equal(stat_latency_percentile(1), 128);
	assert_int_equal(stat_latency_percentile(50), 128);
	assert_int_equal(stat_latency_percentile(90), 128);
	assert_int_equal(stat_latency_percentile(91), 1024);
	assert_int_equal(stat_latency_percentile(99), 1024);
	assert_int_equal(stat_latency_percentile(100), 1048576);

	/* An upper bound never under-reports, and grows with P. */
	for (unsigned p = 1; p <= 100; p++) {
		assert_true(stat_latency_percentile(p) >= 100);
		assert_true(stat_latency_percentile(p) >= stat_latency_percentile(p - 1));
	}

	/* Ten more very slow ones move p99 to their bucket. */
	for (int i = 0; i < 10; i++)
		stat_latency(1000000);
	assert_int_equal(stat_latency_percentile(50), 128);
	assert_int_equal(stat_latency_percentile(99), 1048576);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_latency_empty),	/* first: nothing recorded yet */
		cmocka_unit_test(test_counters),
		cmocka_unit_test(test_counter_names),
		cmocka_unit_test(test_counters_concurrent),
		cmocka_unit_test(test_latency_percentiles),
	};

	unit_xml_reset();
	return cmocka_run_group_tests_name("unit-stats", tests, NULL, NULL);
}
