/* Unit tests for core/sessions.c: one session per process found from any
 * of its threads, ended (with the callback) when the process exits, and
 * each session's private namespace of drops. Child processes stand in for
 * clients; they sleep until killed. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

#include "unit.h"

#include "sessions.h"

#define END_TIMEOUT_MS 5000	/* generous: valgrind is slow */
#define MAX_CHILDREN 64

static pthread_mutex_t ended_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t ended[256];
static unsigned nended;

static pid_t children[MAX_CHILDREN];	/* spawned, not yet reaped */
static bool locked;			/* a test holds session_lock() */

static void on_end(struct session *s)
{
	pthread_mutex_lock(&ended_lock);
	if (nended < sizeof(ended) / sizeof(ended[0]))
		ended[nended++] = session_pid(s);
	pthread_mutex_unlock(&ended_lock);
}

static unsigned times_ended(pid_t pid)
{
	unsigned n = 0;

	pthread_mutex_lock(&ended_lock);
	for (unsigned i = 0; i < nended; i++)
		n += ended[i] == pid;
	pthread_mutex_unlock(&ended_lock);
	return n;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* Wait until the end callback has seen PID, or DEADLINE (now_ms()) passes. */
static bool wait_ended_until(pid_t pid, long long deadline)
{
	while (times_ended(pid) == 0) {
		if (now_ms() > deadline)
			return false;
		usleep(2000);
	}
	return true;
}

static bool wait_ended(pid_t pid)
{
	return wait_ended_until(pid, now_ms() + END_TIMEOUT_MS);
}

static pid_t spawn_sleeper(void)
{
	pid_t parent = getpid(), pid = fork();

	if (pid == 0) {
		/* Never outlive the test, nor hold its output pipes open. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(0);
		close(STDOUT_FILENO);
		close(STDERR_FILENO);
		for (;;)
			pause();
	}
	assert_true(pid > 0);
	for (unsigned i = 0; i < MAX_CHILDREN; i++) {
		if (children[i] == 0) {
			children[i] = pid;
			return pid;
		}
	}
	fail_msg("too many children");
	return -1;
}

static void kill_and_reap(pid_t pid)
{
	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, NULL, 0), pid);
	for (unsigned i = 0; i < MAX_CHILDREN; i++)
		if (children[i] == pid)
			children[i] = 0;
}

/* A failed assertion leaves the test at once: these let the teardown
 * release the session lock, so the next tests and the reaper do not hang. */
static void lock(void)
{
	session_lock();
	locked = true;
}

static void unlock(void)
{
	locked = false;
	session_unlock();
}

static int teardown(void **state)
{
	if (locked)
		unlock();
	for (unsigned i = 0; i < MAX_CHILDREN; i++) {
		if (children[i] > 0) {
			kill(children[i], SIGKILL);
			waitpid(children[i], NULL, 0);
			children[i] = 0;
		}
	}
	return 0;
}

static int group_setup(void **state)
{
	return sessions_init(on_end) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
	teardown(state);
	sessions_shutdown();
	return 0;
}

static void test_own_session(void **state)
{
	struct session *s, *again;

	assert_int_equal(session_get(gettid(), &s), 0);
	assert_non_null(s);
	assert_int_equal(session_pid(s), getpid());
	assert_true(session_serial(s) > 0);
	assert_int_equal(session_get(gettid(), &again), 0);
	assert_ptr_equal(s, again);
	assert_int_equal(session_get(getpid(), &again), 0);	/* the main thread's id */
	assert_ptr_equal(s, again);
	session_put(again);
	session_put(again);
	session_put(s);
	assert_int_equal(times_ended(getpid()), 0);
}

static void test_tid_to_tgid(void **state)
{
	pid_t tgid = 0;

	assert_int_equal(tid_to_tgid(gettid(), &tgid), 0);
	assert_int_equal(tgid, getpid());
	assert_int_equal(tid_to_tgid(INT_MAX, &tgid), -ESRCH);
}

struct thread_arg {
	pthread_barrier_t ready, done;
	pid_t tid, tgid;
	int tgid_ret, get_ret;
	struct session *s;
};

static void *thread_main(void *p)
{
	struct thread_arg *a = p;

	a->tid = gettid();
	a->tgid_ret = tid_to_tgid(a->tid, &a->tgid);
	a->get_ret = session_get(a->tid, &a->s);
	pthread_barrier_wait(&a->ready);
	pthread_barrier_wait(&a->done);		/* stay alive while looked up */
	return NULL;
}

static void test_thread_shares_session(void **state)
{
	struct thread_arg a;
	struct session *mine, *by_tid;
	pthread_t th;
	pid_t tgid = 0;

	memset(&a, 0, sizeof(a));
	pthread_barrier_init(&a.ready, NULL, 2);
	pthread_barrier_init(&a.done, NULL, 2);
	assert_int_equal(session_get(gettid(), &mine), 0);
	assert_int_equal(pthread_create(&th, NULL, thread_main, &a), 0);
	pthread_barrier_wait(&a.ready);

	assert_true(a.tid != gettid());
	assert_int_equal(a.tgid_ret, 0);
	assert_int_equal(a.tgid, getpid());
	assert_int_equal(a.get_ret, 0);
	assert_ptr_equal(a.s, mine);
	/* Looked up from here by the other thread's id. */
	assert_int_equal(tid_to_tgid(a.tid, &tgid), 0);
	assert_int_equal(tgid, getpid());
	assert_int_equal(session_get(a.tid, &by_tid), 0);
	assert_ptr_equal(by_tid, mine);

	pthread_barrier_wait(&a.done);
	pthread_join(th, NULL);
	pthread_barrier_destroy(&a.ready);
	pthread_barrier_destroy(&a.done);
	session_put(by_tid);
	session_put(a.s);
	session_put(mine);
}

static void test_missing_process(void **state)
{
	struct session *s = NULL;
	pid_t child = spawn_sleeper();

	assert_int_equal(session_get(INT_MAX, &s), -ESRCH);
	kill_and_reap(child);
	assert_int_equal(session_get(child, &s), -ESRCH);
	assert_null(s);
}

static void test_child_session_ends(void **state)
{
	struct session_stats before, during, after;
	struct session *mine, *theirs, *again;
	pid_t child, tgid = 0;

	assert_int_equal(session_get(gettid(), &mine), 0);
	child = spawn_sleeper();
	session_stats(&before);

	assert_int_equal(tid_to_tgid(child, &tgid), 0);
	assert_int_equal(tgid, child);
	assert_int_equal(session_get(child, &theirs), 0);
	assert_int_equal(session_pid(theirs), child);
	assert_ptr_not_equal(theirs, mine);
	assert_true(session_serial(theirs) != session_serial(mine));
	assert_int_equal(session_get(child, &again), 0);
	assert_ptr_equal(again, theirs);
	session_put(again);

	session_stats(&during);
	assert_int_equal(during.alive, before.alive + 1);
	assert_int_equal(during.started, before.started + 1);
	assert_int_equal(during.ended, before.ended);
	assert_int_equal(times_ended(child), 0);

	kill_and_reap(child);
	if (!wait_ended(child))
		fail_msg("no end callback for pid %d within %d ms", (int)child, END_TIMEOUT_MS);
	session_stats(&after);
	assert_int_equal(after.alive, during.alive - 1);
	assert_int_equal(after.ended, during.ended + 1);
	assert_int_equal(times_ended(child), 1);
	assert_int_equal(times_ended(getpid()), 0);

	/* Our reference outlives the table's. */
	assert_int_equal(session_pid(theirs), child);
	session_put(theirs);
	session_put(mine);
}

static void test_many_children_end(void **state)
{
	enum { N = 20 };
	struct session_stats before, during, after;
	struct session *s[N];
	pid_t pid[N];
	long long deadline;

	session_stats(&before);
	for (int i = 0; i < N; i++) {
		pid[i] = spawn_sleeper();
		assert_int_equal(session_get(pid[i], &s[i]), 0);
		assert_int_equal(session_pid(s[i]), pid[i]);
		for (int j = 0; j < i; j++)
			assert_ptr_not_equal(s[i], s[j]);
	}
	session_stats(&during);
	assert_int_equal(during.alive, before.alive + N);

	/* Kill them all at once: the reaper gets a batch of events. */
	for (int i = 0; i < N; i++)
		assert_int_equal(kill(pid[i], SIGKILL), 0);
	for (int i = 0; i < N; i++)
		kill_and_reap(pid[i]);
	deadline = now_ms() + END_TIMEOUT_MS;
	for (int i = 0; i < N; i++) {
		if (!wait_ended_until(pid[i], deadline))
			fail_msg("no end callback for pid %d", (int)pid[i]);
	}
	session_stats(&after);
	assert_int_equal(after.alive, before.alive);
	assert_int_equal(after.ended, before.ended + N);
	for (int i = 0; i < N; i++) {
		assert_int_equal(times_ended(pid[i]), 1);
		session_put(s[i]);
	}
}

static unsigned count_drops(struct session *s, uint64_t parent, struct drop *want1,
			    struct drop *want2)
{
	unsigned n = 0;

	for (struct drop *d = session_next_drop(s, parent, NULL); d;
	     d = session_next_drop(s, parent, d)) {
		assert_int_equal(d->parent, parent);
		assert_true(d->visible);
		assert_true(d == want1 || d == want2);
		n++;
	}
	return n;
}

static void test_drop_namespace(void **state)
{
	struct session *s;
	struct drop *a, *b, *c;

	assert_int_equal(session_get(gettid(), &s), 0);
	a = drop_new("a.txt", 1);
	b = drop_new("b.txt", 1);
	c = drop_new("a.txt", 2);
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(c);
	assert_string_equal(a->name, "a.txt");
	assert_int_equal(a->parent, 1);
	assert_null(a->owner);
	assert_false(a->visible);

	lock();
	assert_null(session_find_drop(s, 1, "a.txt"));
	assert_null(session_next_drop(s, 1, NULL));
	session_add_drop(s, a);
	session_add_drop(s, b);
	session_add_drop(s, c);
	assert_ptr_equal(a->owner, s);
	assert_true(a->visible && b->visible && c->visible);

	assert_ptr_equal(session_find_drop(s, 1, "a.txt"), a);
	assert_ptr_equal(session_find_drop(s, 1, "b.txt"), b);
	assert_ptr_equal(session_find_drop(s, 2, "a.txt"), c);
	assert_null(session_find_drop(s, 2, "b.txt"));
	assert_null(session_find_drop(s, 3, "a.txt"));
	assert_null(session_find_drop(s, 1, "A.TXT"));
	assert_null(session_find_drop(s, 1, "a.tx"));
	assert_int_equal(count_drops(s, 1, a, b), 2);
	assert_int_equal(count_drops(s, 2, c, NULL), 1);
	assert_int_equal(count_drops(s, 3, NULL, NULL), 0);

	/* A rename within the namespace is seen by lookups. */
	free(b->name);
	b->name = strdup("renamed.bin");
	assert_non_null(b->name);
	assert_null(session_find_drop(s, 1, "b.txt"));
	assert_ptr_equal(session_find_drop(s, 1, "renamed.bin"), b);

	session_hide_drop(a);
	assert_false(a->visible);
	assert_null(session_find_drop(s, 1, "a.txt"));
	assert_ptr_equal(session_find_drop(s, 2, "a.txt"), c);
	assert_int_equal(count_drops(s, 1, b, NULL), 1);
	session_hide_drop(a);		/* hiding twice is harmless */
	assert_int_equal(count_drops(s, 1, b, NULL), 1);
	session_hide_drop(b);
	session_hide_drop(c);
	assert_null(session_next_drop(s, 1, NULL));
	assert_null(session_next_drop(s, 2, NULL));
	unlock();

	drop_free(a);
	drop_free(b);
	drop_free(c);
	session_put(s);
}

static void test_drops_are_private_and_end_with_session(void **state)
{
	struct session *mine, *theirs;
	struct drop *d, *late, *own;
	pid_t child = spawn_sleeper();

	assert_int_equal(session_get(gettid(), &mine), 0);
	assert_int_equal(session_get(child, &theirs), 0);
	d = drop_new("secret.doc", 1);
	own = drop_new("mine.doc", 1);
	assert_non_null(d);
	assert_non_null(own);

	lock();
	session_add_drop(theirs, d);
	session_add_drop(mine, own);
	/* Each session sees its own drops only (R2). */
	assert_ptr_equal(session_find_drop(theirs, 1, "secret.doc"), d);
	assert_null(session_find_drop(mine, 1, "secret.doc"));
	assert_null(session_find_drop(theirs, 1, "mine.doc"));
	assert_ptr_equal(session_next_drop(mine, 1, NULL), own);
	assert_null(session_next_drop(mine, 1, own));
	unlock();

	/* The drop holds a reference: the session survives ours. */
	session_put(theirs);
	kill_and_reap(child);
	if (!wait_ended(child))
		fail_msg("no end callback for pid %d", (int)child);

	lock();
	assert_false(d->visible);
	assert_ptr_equal(d->owner, theirs);
	assert_int_equal(session_pid(d->owner), child);
	assert_null(session_find_drop(theirs, 1, "secret.doc"));
	assert_null(session_next_drop(theirs, 1, NULL));
	session_hide_drop(d);		/* already out: harmless */
	/* A drop added to an ended session never becomes visible. */
	late = drop_new("late.doc", 1);
	assert_non_null(late);
	session_add_drop(theirs, late);
	assert_ptr_equal(late->owner, theirs);
	assert_false(late->visible);
	assert_null(session_find_drop(theirs, 1, "late.doc"));
	/* Ours is untouched. */
	assert_ptr_equal(session_find_drop(mine, 1, "mine.doc"), own);
	assert_true(own->visible);
	session_hide_drop(own);
	unlock();

	drop_free(late);
	drop_free(d);		/* the last reference to the ended session */
	drop_free(own);
	session_put(mine);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_own_session, teardown),
		cmocka_unit_test_teardown(test_tid_to_tgid, teardown),
		cmocka_unit_test_teardown(test_thread_shares_session, teardown),
		cmocka_unit_test_teardown(test_missing_process, teardown),
		cmocka_unit_test_teardown(test_child_session_ends, teardown),
		cmocka_unit_test_teardown(test_many_children_end, teardown),
		cmocka_unit_test_teardown(test_drop_namespace, teardown),
		cmocka_unit_test_teardown(test_drops_are_private_and_end_with_session, teardown),
	};

	unit_xml_reset();
	return cmocka_run_group_tests_name("unit-sessions", tests, group_setup, group_teardown);
}
