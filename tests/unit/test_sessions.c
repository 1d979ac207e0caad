/* Unit tests for core/sessions.c: one session per process found from any
 * of its threads, ended (with the callback) when the process exits; a
 * reused pid is a new session; idle sessions hold no descriptor; the
 * descriptor budget and its pool for sessions' first drops; which pending
 * signals doom a process (task_doomed()).
 * (Each session's namespace of drops is tested in test_drop.c.) Child processes stand in for
 * clients; they sleep until killed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

#include "unit.h"

#include "proc.h"
#include "sessions.h"

#define END_TIMEOUT_MS 5000	/* generous: valgrind is slow */
#define MAX_CHILDREN 64

static pthread_mutex_t ended_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t ended[256];
static unsigned nended;

static pid_t children[MAX_CHILDREN];	/* spawned, not yet reaped */

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

static int teardown(void **state)
{
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

static unsigned open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	unsigned n = 0;

	assert_non_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* The process's descriptors once they are WANT, or after TIMEOUT_MS the
 * last count: the reaper's sweep opens /proc files of the sessions for a
 * moment every second, which one count may catch. */
static unsigned fds_settled(unsigned want, long long timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;
	unsigned n;

	while ((n = open_fds()) != want && now_ms() < deadline)
		usleep(10000);
	return n;
}

/* R12: thousands of idle SMB connections must not eat the
 * descriptors others' closes need. An idle session holds none; one that
 * holds drops holds one pidfd, given back (by the reaper's sweep) a
 * couple of seconds after its last drop. (Red before: a pidfd per session
 * for its whole life.) */
static void test_idle_sessions_hold_no_descriptor(void **state)
{
	enum { N = 20 };
	struct session *s[N];
	unsigned before, used;

	before = open_fds();
	used = sessions_fds_used();
	for (int i = 0; i < N; i++)
		assert_int_equal(session_get(spawn_sleeper(), &s[i]), 0);
	assert_int_equal(fds_settled(before, 500), before);

	assert_int_equal(session_hold(s[0]), 0);
	assert_int_equal(session_hold(s[0]), 0);	/* one pidfd for all its drops */
	assert_int_equal(fds_settled(before + 1, 500), before + 1);
	assert_int_equal(sessions_fds_used(), used + 1);
	session_release(s[0]);
	assert_int_equal(fds_settled(before + 1, 500), before + 1);
	session_release(s[0]);
	assert_int_equal(fds_settled(before, END_TIMEOUT_MS), before);
	assert_int_equal(sessions_fds_used(), used);
	for (int i = 0; i < N; i++)
		session_put(s[i]);
}

/* A session holding drops is ended as soon as its process exits (its
 * pidfd), and its pidfd is closed once its drops are let go of. */
static void test_held_session_ends_with_its_process(void **state)
{
	struct session *s;
	pid_t child = spawn_sleeper();
	unsigned before = open_fds();

	assert_int_equal(session_get(child, &s), 0);
	assert_int_equal(session_hold(s), 0);
	assert_true(session_alive(s));
	kill_and_reap(child);
	assert_false(session_alive(s));
	if (!wait_ended(child))
		fail_msg("no end callback for pid %d", (int)child);
	assert_int_equal(times_ended(child), 1);
	session_release(s);
	assert_int_equal(open_fds(), before);
	session_put(s);
}

/* The pid of a dead client given to a new process (ns_last_pid, as root):
 * a new session, whether or not the reaper has swept the old one yet. */
static void test_reused_pid_is_a_new_session(void **state)
{
	struct session *old, *s = NULL;
	uint64_t serial;
	pid_t pid = spawn_sleeper(), again = -1;

	assert_int_equal(session_get(pid, &old), 0);
	serial = session_serial(old);
	/* A process is known by its pid and start time, in clock ticks: one
	 * whose pid came back within the tick it started in would pass for
	 * it (README, Limits). */
	usleep(30000);
	kill_and_reap(pid);
	for (int attempt = 0; attempt < 100 && again != pid; attempt++) {
		FILE *f = fopen("/proc/sys/kernel/ns_last_pid", "w");

		if (f == NULL || fprintf(f, "%d", (int)pid - 1) < 0 || fclose(f) != 0) {
			session_put(old);
			skip();		/* not root */
		}
		again = spawn_sleeper();
		if (again != pid)
			kill_and_reap(again);
	}
	if (again != pid) {
		session_put(old);
		skip();
	}
	assert_int_equal(session_get(pid, &s), 0);
	assert_ptr_not_equal(s, old);
	assert_true(session_serial(s) != serial);
	assert_false(session_alive(old));
	assert_true(session_alive(s));
	assert_int_equal(times_ended(pid), 1);	/* the old one, once */
	session_put(s);
	session_put(old);
}

/* The budget: sessions holding descriptors stop at LIMIT - POOL, a session
 * holding none still gets its first drop's two from the pool, observers
 * (NULL) never do. */
static void test_budget_keeps_a_pool_for_first_drops(void **state)
{
	struct session *full, *fresh;
	unsigned used = sessions_fds_used(), taken = 0;

	assert_int_equal(session_get(spawn_sleeper(), &full), 0);
	assert_int_equal(session_get(spawn_sleeper(), &fresh), 0);
	sessions_fd_budget(used + 10, 4);
	while (session_fd_take(full) == 0)
		taken++;
	assert_int_equal(taken, 6);
	assert_int_equal(session_fd_take(NULL), -EMFILE);
	assert_int_equal(session_hold(fresh), 0);		/* its pidfd */
	assert_int_equal(session_fd_take(fresh), 0);	/* its first file */
	assert_int_equal(session_fd_take(fresh), -EMFILE);	/* no more */
	/* The pool taken, the shared part has room only below LIMIT - POOL. */
	session_fd_give(full);
	session_fd_give(full);
	assert_int_equal(session_fd_take(NULL), -EMFILE);
	session_fd_give(full);
	assert_int_equal(session_fd_take(NULL), 0);
	session_fd_give(NULL);
	session_fd_give(fresh);
	session_release(fresh);
	for (unsigned i = 3; i < taken; i++)
		session_fd_give(full);
	/* Its pidfd is given back by the sweep, a little after its release. */
	long long deadline = now_ms() + END_TIMEOUT_MS;
	while (sessions_fds_used() > used && now_ms() < deadline)
		usleep(10000);
	assert_int_equal(sessions_fds_used(), used);
	sessions_fd_budget(0, 0);
	session_put(fresh);
	session_put(full);
}

/* R2: one smbd process serves one connection, which may
 * carry several SMB sessions of several users; where the share does not
 * force one user each acts as its own uid, and each (process, uid) is a
 * session of its own. A session of a process under any uid is its
 * process's (closes by smbd as root are the writer's). */
static void test_uids_of_one_process_are_sessions_of_their_own(void **state)
{
	struct session *a, *b, *again, *mine;
	pid_t child = spawn_sleeper();

	assert_int_equal(session_get_as(child, 60001, &a), 0);
	assert_int_equal(session_get_as(child, 60002, &b), 0);
	assert_ptr_not_equal(a, b);
	assert_true(session_serial(a) != session_serial(b));
	assert_int_equal(session_uid(a), 60001);
	assert_int_equal(session_uid(b), 60002);
	assert_int_equal(session_pid(a), child);
	assert_int_equal(session_pid(b), child);
	assert_true(session_same_process(a, b));
	assert_int_equal(session_get_as(child, 60001, &again), 0);
	assert_ptr_equal(again, a);
	session_put(again);
	/* session_get(): as the uid the thread acts as now. */
	assert_int_equal(session_get(gettid(), &mine), 0);
	assert_int_equal(session_uid(mine), geteuid());
	assert_false(session_same_process(mine, a));
	assert_int_equal(session_get_as(gettid(), geteuid(), &again), 0);
	assert_ptr_equal(again, mine);
	session_put(again);
	session_put(mine);

	/* The process's end ends both: one held (its pidfd), one idle. */
	assert_int_equal(session_hold(a), 0);
	kill_and_reap(child);
	long long deadline = now_ms() + END_TIMEOUT_MS;
	while (times_ended(child) < 2 && now_ms() < deadline)
		usleep(2000);
	assert_int_equal(times_ended(child), 2);
	session_release(a);
	session_put(a);
	session_put(b);
}

static void on_usr2(int sig)
{
	(void)sig;
}

/* task_doomed(): a pending signal dooms a process only if it kills it:
 * not a caught one (its handler runs, then the call returns), not a
 * blocked one, not one whose default is to be ignored. A stopped child
 * takes no signal but SIGKILL and SIGCONT: what is sent stays pending
 * there, as for a writer held in a FUSE close. */
static void test_task_doomed(void **state)
{
	pid_t parent = getpid(), pid;
	int ready[2], status;
	char c;

	assert_int_equal(pipe(ready), 0);
	pid = fork();
	if (pid == 0) {
		sigset_t set;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(0);
		signal(SIGUSR2, on_usr2);
		sigemptyset(&set);
		sigaddset(&set, SIGUSR1);
		sigprocmask(SIG_BLOCK, &set, NULL);
		close(STDOUT_FILENO);
		close(STDERR_FILENO);
		if (write(ready[1], "", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	assert_true(pid > 0);
	for (unsigned i = 0; i < MAX_CHILDREN; i++) {
		if (children[i] == 0) {
			children[i] = pid;
			break;
		}
	}
	close(ready[1]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
	assert_int_equal(task_doomed(pid), 0);
	assert_int_equal(kill(pid, SIGSTOP), 0);
	assert_int_equal(waitpid(pid, &status, WUNTRACED), pid);
	assert_true(WIFSTOPPED(status));
	assert_int_equal(kill(pid, SIGUSR2), 0);	/* caught */
	assert_int_equal(kill(pid, SIGUSR1), 0);	/* blocked */
	assert_int_equal(kill(pid, SIGWINCH), 0);	/* ignored by default */
	assert_int_equal(task_doomed(pid), 0);
	assert_int_equal(kill(pid, SIGQUIT), 0);	/* kills by default */
	assert_int_equal(task_doomed(pid), 1);
	kill_and_reap(pid);
	assert_int_equal(task_doomed(pid), -ESRCH);
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
		cmocka_unit_test_teardown(test_idle_sessions_hold_no_descriptor, teardown),
		cmocka_unit_test_teardown(test_held_session_ends_with_its_process, teardown),
		cmocka_unit_test_teardown(test_reused_pid_is_a_new_session, teardown),
		cmocka_unit_test_teardown(test_budget_keeps_a_pool_for_first_drops, teardown),
		cmocka_unit_test_teardown(test_uids_of_one_process_are_sessions_of_their_own,
					  teardown),
		cmocka_unit_test_teardown(test_task_doomed, teardown),
	};

	unit_xml_reset();
	return cmocka_run_group_tests_name("unit-sessions", tests, group_setup, group_teardown);
}
