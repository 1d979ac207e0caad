/* The stop on SIGTERM or SIGINT, and its drain (README "Upgrading").
 *
 * systemctl stop and restart, and so every upgrade, send SIGTERM. An
 * immediate stop would fail every drop being written (its writer's next
 * write or close gets ENOTCONN, the drop goes to incomplete/ and waits for
 * an administrator), so the daemon first keeps serving, for up to drain=
 * seconds, until no drop is being written or delivered (drop_unanswered());
 * then it ends the session loop, and main() unmounts and exits 0 as for an
 * immediate stop: what is still open then is quarantined as before.
 * Creates during the drain are served as always: a legacy client whose
 * create fails discards its message, while one that closes in time is
 * delivered (and one that closes too late learns it from its close).
 * A second stop signal during the drain stops at once; drain=0 is the
 * immediate stop.
 *
 * libfuse's own handlers (fuse_set_signal_handlers()) end the loop at the
 * first signal; these replace them for SIGTERM and SIGINT once serving
 * (SIGHUP stays main.c's). The handler only counts and posts a semaphore;
 * the stop thread does the rest. The session loop ends when it sees
 * fuse_session_exit(), which it checks only between requests and after an
 * interruption: libfuse's main thread sleeps in sem_wait() (or read() of
 * /dev/fuse, single-threaded), and its workers and the io_uring threads
 * block the stop signals. So the stop thread signals the main thread
 * itself, again until the loop has ended: never relies on a request
 * arriving. */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "drop.h"
#include "fs.h"
#include "log.h"
#include "stop.h"

/* How often the drain looks whether drops are still open: drops finish
 * on their writers' requests, and a tenth of a second is nothing to a
 * stop that waits for seconds. */
#define DRAIN_POLL_MS 100
/* How often the main thread is signalled until its loop has ended. */
#define WAKE_MS 100

static struct {
	sem_t wake;		/* the handler posts it, and stop_end() */
	int first, last;	/* the first and the latest stop signal (atomic) */
	unsigned count;		/* stop signals received (atomic) */
	bool ending;		/* (atomic) the loop is being ended: signals are ours */
	unsigned drain;		/* seconds */
	pthread_t main, thread;
	bool started;		/* (atomic) stop_now() reads it on other threads */
	pthread_mutex_t lock;	/* a leaf: loop_over */
	pthread_cond_t over;
	bool loop_over;		/* [lock] the session loop has returned */
} st = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.over = PTHREAD_COND_INITIALIZER,
};

/* Async-signal-safe: lock-free atomics and sem_post() only. */
static void on_stop_signal(int sig)
{
	int saved = errno, none = 0;

	if (!__atomic_load_n(&st.ending, __ATOMIC_SEQ_CST)) {
		__atomic_compare_exchange_n(&st.first, &none, sig, false, __ATOMIC_SEQ_CST,
					    __ATOMIC_SEQ_CST);
		__atomic_store_n(&st.last, sig, __ATOMIC_SEQ_CST);
		__atomic_fetch_add(&st.count, 1, __ATOMIC_SEQ_CST);
		sem_post(&st.wake);
	}
	errno = saved;
}

static unsigned signals(void)
{
	return __atomic_load_n(&st.count, __ATOMIC_SEQ_CST);
}

static bool loop_over(void)
{
	bool over;

	pthread_mutex_lock(&st.lock);
	over = st.loop_over;
	pthread_mutex_unlock(&st.lock);
	return over;
}

static struct timespec after_ms(clockid_t clock, uint64_t ms)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return ts;
}

/* Wait until no drop is open, the deadline, a second signal or the loop's
 * end; log how it ended. */
static void drain(int sig, unsigned open)
{
	uint64_t start = monotonic_ms(), deadline = start + 1000ULL * st.drain;

	log_notice("draining on SIG%s: %u drops open, up to %u s (a second SIGTERM or "
		   "SIGINT stops at once)", sigabbrev_np(sig), open, st.drain);
	while ((open = drop_unanswered()) > 0 && signals() == 1 && !loop_over() &&
	       monotonic_ms() < deadline) {
		struct timespec until = after_ms(CLOCK_MONOTONIC, DRAIN_POLL_MS);

		(void)sem_clockwait(&st.wake, CLOCK_MONOTONIC, &until);
	}
	if (loop_over())
		return;		/* unmounted meanwhile: main() logs it */
	if (open == 0)
		log_notice("drained: no drop open after %.1f s", (monotonic_ms() - start) / 1000.0);
	else if (signals() > 1)
		log_notice("SIG%s during the drain: stopping now, %u drops open go to incomplete/",
			   sigabbrev_np(__atomic_load_n(&st.last, __ATOMIC_SEQ_CST)), open);
	else
		log_notice("drain over: %u drops still open go to incomplete/", open);
}

/* End the session loop and wait until it has ended. */
static void end_loop(void)
{
	__atomic_store_n(&st.ending, true, __ATOMIC_SEQ_CST);
	fuse_session_exit(fs.se);
	pthread_mutex_lock(&st.lock);
	while (!st.loop_over) {
		struct timespec until = after_ms(CLOCK_REALTIME, WAKE_MS);

		/* A signal that came between the loop's check and its wait
		 * woke nothing: again until it has ended. */
		pthread_kill(st.main, SIGTERM);
		pthread_cond_timedwait(&st.over, &st.lock, &until);
	}
	pthread_mutex_unlock(&st.lock);
}

static void *stop_main(void *arg)
{
	unsigned open;
	int sig;

	while (signals() == 0 && !loop_over())
		while (sem_wait(&st.wake) < 0 && errno == EINTR)
			;
	if (loop_over())
		return NULL;
	sig = __atomic_load_n(&st.first, __ATOMIC_SEQ_CST);
	open = drop_unanswered();
	if (st.drain > 0 && open > 0 && signals() == 1)
		drain(sig, open);
	end_loop();
	return NULL;
}

int worker_create(pthread_t *thread, void *(*fn)(void *), void *arg)
{
	sigset_t block, old;
	int ret;

	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	ret = pthread_create(thread, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return -ret;
}

int stop_start(unsigned drain_s)
{
	struct sigaction sa;
	int ret;

	st.drain = drain_s;
	st.main = pthread_self();
	if (sem_init(&st.wake, 0, 0) < 0)
		return -errno;
	ret = worker_create(&st.thread, stop_main, NULL);
	if (ret < 0)
		return ret;
	__atomic_store_n(&st.started, true, __ATOMIC_SEQ_CST);
	/* No SA_RESTART: the main thread's wait is to be interrupted. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGTERM);
	sigaddset(&sa.sa_mask, SIGINT);
	if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
		return -errno;
	return 0;
}

void stop_now(void)
{
	/* As a first and a second signal at once: no drain. Two signals sent
	 * back to back could arrive as one. */
	if (!__atomic_load_n(&st.started, __ATOMIC_SEQ_CST)) {
		kill(getpid(), SIGTERM);
		return;
	}
	on_stop_signal(SIGTERM);
	on_stop_signal(SIGTERM);
}

int stop_end(void)
{
	/* From now on a stop signal changes nothing: the stop is under way. */
	__atomic_store_n(&st.ending, true, __ATOMIC_SEQ_CST);
	if (!__atomic_load_n(&st.started, __ATOMIC_SEQ_CST))
		return 0;
	pthread_mutex_lock(&st.lock);
	st.loop_over = true;
	pthread_cond_broadcast(&st.over);
	pthread_mutex_unlock(&st.lock);
	sem_post(&st.wake);
	pthread_join(st.thread, NULL);
	__atomic_store_n(&st.started, false, __ATOMIC_SEQ_CST);
	return __atomic_load_n(&st.first, __ATOMIC_SEQ_CST);
}
