/* Unit tests for core/dirsync.c: concurrent callers share syncs, a sync
 * only covers callers queued before it started, each directory is synced
 * once per batch and every caller gets its own directory's result. The
 * sync is a fake that counts, can fail one directory, and can be held. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "unit.h"

#include "dirsync.h"

#define THREADS 16
#define WAIT_MS 10000		/* for anything that must happen: valgrind is slow */

static atomic_uint calls;
static ino_t failing = 0;	/* the directory whose sync fails (EIO) */
static unsigned hold_ms;	/* each sync takes this long */
/* When set, a sync waits until released: tests order events with it. */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gated, in_sync;

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

static int fake_sync(int fd)
{
	struct stat sb;

	atomic_fetch_add(&calls, 1);
	pthread_mutex_lock(&gate_lock);
	in_sync = true;
	pthread_cond_broadcast(&gate_cond);
	while (gated)
		pthread_cond_wait(&gate_cond, &gate_lock);
	pthread_mutex_unlock(&gate_lock);
	sleep_ms(hold_ms);
	if (fstat(fd, &sb) < 0)
		return -1;
	if (sb.st_ino == failing) {
		errno = EIO;
		return -1;
	}
	return 0;
}

struct fixture {
	struct dirsync s;
	char dirs[2][64];
	int fds[2];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	for (int i = 0; i < 2; i++) {
		snprintf(f->dirs[i], sizeof(f->dirs[i]), "/tmp/inboxfs-dirsync.XXXXXX");
		if (mkdtemp(f->dirs[i]) == NULL)
			return -1;
		f->fds[i] = open(f->dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (f->fds[i] < 0)
			return -1;
	}
	dirsync_init(&f->s);
	f->s.sync = fake_sync;
	atomic_store(&calls, 0);
	failing = 0;
	hold_ms = 0;
	gated = in_sync = false;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	for (int i = 0; i < 2; i++) {
		close(f->fds[i]);
		rmdir(f->dirs[i]);
	}
	dirsync_destroy(&f->s);
	free(f);
	return 0;
}

static ino_t ino_of(int fd)
{
	struct stat sb;

	return fstat(fd, &sb) == 0 ? sb.st_ino : 0;
}

struct caller {
	struct fixture *f;
	int fd;
	int result;
	pthread_t tid;
};

static void *call(void *arg)
{
	struct caller *c = arg;

	c->result = dirsync(&c->f->s, c->fd);
	return NULL;
}

/* Start C's call with its sync held: once this returns, C is the leader,
 * inside its (fake) sync, until release_syncs(). */
static void start_held(struct caller *c)
{
	gated = true;
	assert_int_equal(pthread_create(&c->tid, NULL, call, c), 0);
	pthread_mutex_lock(&gate_lock);
	while (!in_sync)
		pthread_cond_wait(&gate_cond, &gate_lock);
	pthread_mutex_unlock(&gate_lock);
}

static void release_syncs(void)
{
	pthread_mutex_lock(&gate_lock);
	gated = false;
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_lock);
}

/* How many callers are queued once N are, or WAIT_MS is up. */
static unsigned wait_queued(struct fixture *f, unsigned n)
{
	unsigned queued = 0;

	for (int ms = 0; ms < WAIT_MS; ms++) {
		pthread_mutex_lock(&f->s.lock);
		queued = f->s.queued;
		pthread_mutex_unlock(&f->s.lock);
		if (queued >= n)
			break;
		sleep_ms(1);
	}
	return queued;
}

static void test_alone(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(dirsync(&f->s, f->fds[0]), 0);
	assert_int_equal(atomic_load(&calls), 1);
	assert_int_equal(dirsync(&f->s, f->fds[0]), 0);
	assert_int_equal(atomic_load(&calls), 2);	/* nothing remembered */
	assert_int_equal(dirsync(&f->s, -1), -EBADF);
}

/* Held by a slow sync, the others queue and share the next one. */
static void test_concurrent_callers_share(void **state)
{
	struct fixture *f = *state;
	struct caller c[THREADS];

	hold_ms = 100;
	for (int i = 0; i < THREADS; i++) {
		c[i] = (struct caller){ .f = f, .fd = f->fds[0], .result = 1 };
		assert_int_equal(pthread_create(&c[i].tid, NULL, call, &c[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(c[i].tid, NULL);
		assert_int_equal(c[i].result, 0);
	}
	assert_true(atomic_load(&calls) >= 1);
	assert_true(atomic_load(&calls) < THREADS);
}

/* A sync that started before a caller queued does not cover it. */
static void test_running_sync_does_not_cover_later_caller(void **state)
{
	struct fixture *f = *state;
	struct caller first = { .f = f, .fd = f->fds[0] }, later = { .f = f, .fd = f->fds[0] };

	start_held(&first);
	assert_int_equal(pthread_create(&later.tid, NULL, call, &later), 0);
	assert_int_equal(wait_queued(f, 1), 1);
	release_syncs();
	pthread_join(first.tid, NULL);
	pthread_join(later.tid, NULL);
	assert_int_equal(first.result, 0);
	assert_int_equal(later.result, 0);
	assert_int_equal(atomic_load(&calls), 2);
}

/* One batch, two directories, one failing: one sync each, and each
 * caller gets its own directory's result. */
static void test_batch_syncs_each_directory_once(void **state)
{
	struct fixture *f = *state;
	struct caller holder = { .f = f, .fd = f->fds[1] }, c[THREADS];

	failing = ino_of(f->fds[0]);
	start_held(&holder);
	for (int i = 0; i < THREADS; i++) {
		/* Another descriptor of the same directory is the same one. */
		int fd = open(f->dirs[i % 2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		assert_true(fd >= 0);
		c[i] = (struct caller){ .f = f, .fd = fd, .result = 1 };
		assert_int_equal(pthread_create(&c[i].tid, NULL, call, &c[i]), 0);
	}
	assert_int_equal(wait_queued(f, THREADS), THREADS);
	release_syncs();
	pthread_join(holder.tid, NULL);
	assert_int_equal(holder.result, 0);
	for (int i = 0; i < THREADS; i++) {
		pthread_join(c[i].tid, NULL);
		close(c[i].fd);
		assert_int_equal(c[i].result, i % 2 == 0 ? -EIO : 0);
	}
	assert_int_equal(atomic_load(&calls), 1 + 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_alone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_callers_share, setup, teardown),
		cmocka_unit_test_setup_teardown(test_running_sync_does_not_cover_later_caller,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_syncs_each_directory_once, setup, teardown),
	};

	unit_xml_reset();
	return cmocka_run_group_tests_name("dirsync", tests, NULL, NULL);
}
