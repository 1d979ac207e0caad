/* The session table: thread id -> thread group -> session. A session is
 * its process: its pid and its start time (/proc/PID/stat), so a reused
 * pid never inherits a dead session. An idle session holds no descriptor:
 * thousands of idle SMB connections must not eat the descriptors the
 * daemon needs for others' closes (R12). A session holding drops (and
 * for PIDFD_KEEP_SEC after its last) holds a pidfd, counted in the
 * descriptor budget like its files, so the reaper
 * thread ends it as soon as its process exits (its drops' closes by
 * whoever holds them on then count as its writer's); the reaper finds idle
 * sessions that ended by a sweep of /proc once a second. The thread cache is
 * direct-mapped and trusted for at most the current second and until the
 * next session ends, and for an idle session only once /proc says the
 * thread is still the one that was cached, so a thread id recycled by the
 * kernel is re-read. */
#include "sessions.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "peer.h"
#include "proc.h"

#define SESSION_BUCKETS 1024
#define TID_SLOTS 4096
#define SWEEP_MS 1000		/* how often idle sessions are checked */
/* A session's pidfd is kept this long (seconds) after its last drop: a
 * client dropping one message after another then opens it once, and its
 * requests between two drops are placed from the cache. */
#define PIDFD_KEEP_SEC 2

struct session {
	pid_t tgid;
	unsigned long long start;	/* its process's start time, in clock ticks */
	uid_t uid;		/* the uid it acts as (smbd: its SMB session's user) */
	int pidfd;		/* [lock] while it holds drops, and a little after */
	unsigned holds;		/* [lock] session_hold()s not released */
	time_t idle_since;	/* [lock] when holds last fell to 0 */
	atomic_uint fds;	/* descriptors held on its behalf (the budget) */
	int peer_state;		/* [lock] PEER_* */
	struct peer peer;	/* [lock] the connection it serves, when watched */
	uint64_t serial;
	unsigned refs;
	bool alive;
	struct drop_list drops;	/* drop.c's */
	struct session *next;
};

struct tid_slot {
	pid_t tid;
	uid_t uid;
	unsigned long long tstart;	/* the thread's start time */
	uint32_t gen;
	time_t sec;
	struct session *s;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;	/* after drop_lock (drop.c) */
static struct session *buckets[SESSION_BUCKETS];
static struct tid_slot tid_cache[TID_SLOTS];
static uint32_t generation = 1;
static uint64_t next_serial = 1;
static struct session_stats stats;
static int epfd = -1, stopfd = -1;
static pthread_t reaper;
static void (*end_cb)(struct session *);
/* The descriptor budget (R12): descriptors held on clients' and observers'
 * behalf; 0: none set. The last POOL of LIMIT go only to sessions holding
 * fewer than POOL_FDS (a first drop: its pidfd and its file). */
#define POOL_FDS 2
static unsigned fd_limit, fd_pool;
static atomic_uint fds_used;

pid_t session_pid(const struct session *s) { return s->tgid; }
uid_t session_uid(const struct session *s) { return s->uid; }

bool session_same_process(const struct session *a, const struct session *b)
{
	return a->tgid == b->tgid && a->start == b->start;
}
uint64_t session_serial(const struct session *s) { return s->serial; }
struct drop_list *session_drops(struct session *s) { return &s->drops; }

static time_t now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return ts.tv_sec;
}

static struct session **bucket_of(pid_t tgid)
{
	return &buckets[(unsigned)tgid % SESSION_BUCKETS];
}

/* Unlink S from the table; with the lock held. */
static void unhash(struct session *s)
{
	for (struct session **pp = bucket_of(s->tgid); *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	s->alive = false;
	/* Its pidfd stays readable now: the reaper must not see it again. */
	if (s->pidfd >= 0)
		epoll_ctl(epfd, EPOLL_CTL_DEL, s->pidfd, NULL);
	generation++;		/* every cached tid of it is now stale */
	stats.alive--;
	stats.ended++;
}

void session_ref(struct session *s)
{
	pthread_mutex_lock(&lock);
	s->refs++;
	pthread_mutex_unlock(&lock);
}

void session_put(struct session *s)
{
	bool last;

	pthread_mutex_lock(&lock);
	last = --s->refs == 0;
	pthread_mutex_unlock(&lock);
	if (!last)
		return;
	if (s->pidfd >= 0) {	/* ended by shutdown while holding drops */
		close(s->pidfd);
		session_fd_give(s);
	}
	free(s);
}

/* Close S's pidfd if it holds no drop (and, unless ENDED, has held none
 * for PIDFD_KEEP_SEC). */
static void drop_pidfd(struct session *s, bool ended, time_t now)
{
	int pidfd = -1;

	pthread_mutex_lock(&lock);
	if (s->holds == 0 && s->pidfd >= 0 && (ended || now - s->idle_since >= PIDFD_KEEP_SEC)) {
		pidfd = s->pidfd;
		s->pidfd = -1;
		if (s->alive)
			epoll_ctl(epfd, EPOLL_CTL_DEL, pidfd, NULL);
	}
	pthread_mutex_unlock(&lock);
	if (pidfd >= 0) {
		close(pidfd);
		session_fd_give(s);
	}
}

/* End S because its process exited: called by the reaper, or by a lookup
 * that found the pidfd readable first. */
static void session_end(struct session *s)
{
	bool was_alive;

	pthread_mutex_lock(&lock);
	was_alive = s->alive;
	if (was_alive)
		unhash(s);
	pthread_mutex_unlock(&lock);
	if (!was_alive)
		return;
	drop_pidfd(s, true, 0);
	if (end_cb)
		end_cb(s);
	session_put(s);		/* the table's reference */
}

static bool process_exited(int pidfd)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };

	return poll(&p, 1, 0) > 0;
}

/* A session's epoll key: its tgid and serial, never 0 (serials start at 1). */
static uint64_t reaper_key(const struct session *s)
{
	return (uint64_t)(uint32_t)s->serial << 32 | (uint32_t)s->tgid;
}

bool session_alive(struct session *s)
{
	unsigned long long start;
	bool alive;
	int pidfd;

	pthread_mutex_lock(&lock);
	alive = s->alive;
	pidfd = s->pidfd;
	/* Asked with the lock held: a release may close the pidfd. */
	if (alive && pidfd >= 0)
		alive = !process_exited(pidfd);
	pthread_mutex_unlock(&lock);
	if (alive && pidfd < 0) {	/* idle: the reaper's sweep may lag */
		int ret = proc_start(s->tgid, &start);

		/* /proc out of reach: alive, as far as anyone can tell */
		alive = ret < 0 ? ret != -ESRCH : start == s->start;
	}
	return alive;
}

/* Has S's process exited? Its pidfd if it holds one, else its start time
 * (START: its pid's now, 0 if the pid is gone). */
static bool ended(struct session *s, unsigned long long start)
{
	bool gone;

	pthread_mutex_lock(&lock);
	gone = start != s->start || (s->pidfd >= 0 && process_exited(s->pidfd));
	pthread_mutex_unlock(&lock);
	return gone;
}

static struct session *find_alive(pid_t tgid, uid_t uid)
{
	for (struct session *s = *bucket_of(tgid); s; s = s->next)
		if (s->tgid == tgid && s->uid == uid && s->alive)
			return s;
	return NULL;
}

int session_get(pid_t tid, struct session **out)
{
	pid_t tgid;
	uid_t uid;
	int ret = proc_tid_status(tid, &tgid, &uid);

	return ret < 0 ? ret : session_get_as(tid, uid, out);
}

int session_get_as(pid_t tid, uid_t uid, struct session **out)
{
	struct tid_slot *slot = &tid_cache[((unsigned)tid ^ (unsigned)uid * 2654435761u) % TID_SLOTS];
	time_t sec = now_sec();
	unsigned long long start, tstart = 0;
	struct session *s;
	bool held;
	pid_t tgid;
	int ret;

	/* A session holding drops is taken from the cache as it is for its
	 * main thread: its pidfd shows at once when its process exits, and
	 * the reaper then ends it (and so empties the cache). Any other
	 * thread can end while its process lives on, and its id be a new
	 * process's; and an idle session's end is found only by the sweep:
	 * the cache is trusted for those only if that thread, with the start
	 * time it had, is still one of its process's (one read of /proc). */
	pthread_mutex_lock(&lock);
	if (slot->tid == tid && slot->uid == uid && slot->gen == generation && slot->sec == sec &&
	    slot->s->alive) {
		s = slot->s;
		s->refs++;
		held = s->pidfd >= 0 && tid == s->tgid && !process_exited(s->pidfd);
		tstart = slot->tstart;
		pthread_mutex_unlock(&lock);
		if (held || (proc_thread_start(s->tgid, tid, &start) == 0 && start == tstart)) {
			*out = s;
			return 0;
		}
		session_put(s);
	} else {
		pthread_mutex_unlock(&lock);
	}

	ret = tid_to_tgid(tid, &tgid);
	if (ret == 0)
		ret = proc_start(tgid, &start);
	if (ret < 0)
		return ret;
	/* A session of TGID with another start time, or whose pidfd says
	 * it exited, was a dead process's: the reaper has not got to it. */
	for (int attempt = 0; attempt < 2; attempt++) {
		pthread_mutex_lock(&lock);
		s = find_alive(tgid, uid);
		if (s)
			s->refs++;
		pthread_mutex_unlock(&lock);
		if (s == NULL)
			break;
		if (!ended(s, start))
			goto found;
		session_end(s);
		session_put(s);
	}

	/* The start time was read after the thread was seen in TGID; if the
	 * thread still belongs to it, that start time is its process's. */
	pid_t again;
	ret = tid_to_tgid(tid, &again);
	if (ret < 0 || again != tgid)
		return ret < 0 ? ret : -ESRCH;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->tgid = tgid;
	s->start = start;
	s->uid = uid;
	s->pidfd = -1;
	s->alive = true;
	s->refs = 2;		/* the table's and the caller's */

	pthread_mutex_lock(&lock);
	struct session *other = find_alive(tgid, uid);
	if (other && other->start == start) {	/* another thread of it won the race */
		other->refs++;
		pthread_mutex_unlock(&lock);
		free(s);
		s = other;
		goto found;
	}
	if (other)		/* a dead process's: the table's reference is ours now */
		unhash(other);
	s->serial = next_serial++;
	s->next = *bucket_of(tgid);
	*bucket_of(tgid) = s;
	stats.alive++;
	stats.started++;
	pthread_mutex_unlock(&lock);
	if (other) {
		drop_pidfd(other, true, 0);
		if (end_cb)
			end_cb(other);
		session_put(other);
	}
found:
	/* The thread's own start time, for the cache (the process's if it is
	 * its main thread); a thread gone since is not cached. */
	if (tid == tgid)
		tstart = start;
	else if (proc_thread_start(tgid, tid, &tstart) < 0)
		goto out;
	pthread_mutex_lock(&lock);
	if (s->alive) {		/* else it ended since: caching it would outlive it */
		slot->tid = tid;
		slot->uid = uid;
		slot->tstart = tstart;
		slot->gen = generation;
		slot->sec = sec;
		slot->s = s;
	}
	pthread_mutex_unlock(&lock);
out:
	*out = s;
	return 0;
}

/* End the idle sessions (no pidfd) whose process is gone: their pid is
 * gone or another process's. Nothing of theirs depends on when this
 * happens (they hold no drop); it frees their memory and keeps the
 * counters right. Read outside the lock, one /proc file each. And close
 * the pidfds of sessions that have held no drop for PIDFD_KEEP_SEC. */
static void sweep(void)
{
	struct session **idle = NULL;
	unsigned n = 0, cap;
	time_t now = now_sec();

	pthread_mutex_lock(&lock);
	cap = stats.alive;
	idle = cap ? malloc(cap * sizeof(*idle)) : NULL;
	for (unsigned i = 0; idle && i < SESSION_BUCKETS; i++) {
		for (struct session *s = buckets[i]; s && n < cap; s = s->next) {
			if (s->alive && s->pidfd < 0) {
				s->refs++;
				idle[n++] = s;
			} else if (s->alive && s->holds == 0 &&
				   now - s->idle_since >= PIDFD_KEEP_SEC) {
				s->refs++;
				idle[n++] = s;
			}
		}
	}
	pthread_mutex_unlock(&lock);
	for (unsigned i = 0; i < n; i++) {
		unsigned long long start = 0;
		int ret;

		drop_pidfd(idle[i], false, now);
		ret = proc_start(idle[i]->tgid, &start);

		if (ret == 0 || ret == -ESRCH) {	/* else /proc is out of reach: next time */
			if (ended(idle[i], start))
				session_end(idle[i]);
		}
		session_put(idle[i]);
	}
	free(idle);
}

static void *reaper_main(void *arg)
{
	struct epoll_event evs[64];
	struct timespec last, now;

	clock_gettime(CLOCK_MONOTONIC, &last);
	for (;;) {
		int n = epoll_wait(epfd, evs, 64, SWEEP_MS);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - last.tv_sec) * 1000 + (now.tv_nsec - last.tv_nsec) / 1000000 >=
		    SWEEP_MS) {
			sweep();
			last = now;
		}
		for (int i = 0; i < n; i++) {
			uint64_t key = evs[i].data.u64;

			if (key == 0)
				return NULL;	/* stopfd */
			/* The event may name a session that session_get() has
			 * ended and freed since: look it up, never dereference. */
			pthread_mutex_lock(&lock);
			struct session *s = *bucket_of((pid_t)(uint32_t)key);
			while (s && !(s->alive && reaper_key(s) == key))
				s = s->next;
			if (s)
				s->refs++;
			pthread_mutex_unlock(&lock);
			if (s) {
				session_end(s);
				session_put(s);
			}
		}
	}
	return NULL;
}

int sessions_init(void (*on_end)(struct session *))
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };

	end_cb = on_end;
	epfd = epoll_create1(EPOLL_CLOEXEC);
	stopfd = eventfd(0, EFD_CLOEXEC);
	if (epfd < 0 || stopfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, stopfd, &ev) < 0)
		return -errno;
	if (pthread_create(&reaper, NULL, reaper_main, NULL) != 0)
		return -EAGAIN;
	return 0;
}

void sessions_shutdown(void)
{
	uint64_t one = 1;

	if (stopfd < 0)
		return;
	if (write(stopfd, &one, sizeof(one)) == sizeof(one))
		pthread_join(reaper, NULL);
	for (unsigned i = 0; i < SESSION_BUCKETS; i++) {
		while (buckets[i]) {
			struct session *s = buckets[i];

			pthread_mutex_lock(&lock);
			unhash(s);
			pthread_mutex_unlock(&lock);
			session_put(s);
		}
	}
	close(epfd);
	close(stopfd);
	epfd = stopfd = -1;
}

void session_stats(struct session_stats *out)
{
	pthread_mutex_lock(&lock);
	*out = stats;
	pthread_mutex_unlock(&lock);
}

/* ---- holding drops: a pidfd, within the descriptor budget ---- */

int session_hold(struct session *s)
{
	unsigned long long start;
	int pidfd, ret;

	pthread_mutex_lock(&lock);
	if (s->pidfd >= 0) {
		s->holds++;
		pthread_mutex_unlock(&lock);
		return 0;
	}
	pthread_mutex_unlock(&lock);

	ret = session_fd_take(s);
	if (ret < 0)
		return ret;
	pidfd = (int)syscall(SYS_pidfd_open, s->tgid, 0);
	if (pidfd < 0) {
		ret = errno == ESRCH ? -ESRCH : -errno;
		session_fd_give(s);
		return ret;
	}
	/* The pidfd names whoever had the pid when it was opened; S's
	 * process, which was there before, if the pid still has its start
	 * time now. */
	ret = proc_start(s->tgid, &start);
	if (ret == 0 && start != s->start)
		ret = -ESRCH;
	if (ret < 0) {
		close(pidfd);
		session_fd_give(s);
		return ret;
	}
	pthread_mutex_lock(&lock);
	if (s->pidfd >= 0) {	/* another thread of it got there first */
		s->holds++;
		pthread_mutex_unlock(&lock);
		close(pidfd);
		session_fd_give(s);
		return 0;
	}
	s->pidfd = pidfd;
	s->holds++;
	if (s->alive) {
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = reaper_key(s) };

		if (epoll_ctl(epfd, EPOLL_CTL_ADD, pidfd, &ev) < 0)
			log_warn("epoll_ctl(pidfd %d)", (int)s->tgid);
	}
	pthread_mutex_unlock(&lock);
	return 0;
}

void session_release(struct session *s)
{
	int pidfd = -1;

	pthread_mutex_lock(&lock);
	if (--s->holds == 0) {
		s->idle_since = now_sec();
		if (!s->alive) {	/* ended: nothing to watch */
			pidfd = s->pidfd;
			s->pidfd = -1;
		}
	}
	pthread_mutex_unlock(&lock);
	if (pidfd >= 0) {
		close(pidfd);
		session_fd_give(s);
	}
}

/* ---- the descriptor budget ---- */

void sessions_fd_budget(unsigned limit, unsigned pool)
{
	fd_limit = limit;
	fd_pool = pool < limit ? pool : 0;
}

int session_fd_take(struct session *s)
{
	/* Observers (S NULL) and sessions holding descriptors take from the
	 * shared part; a session's first ones may take from the pool too. */
	bool first = s && atomic_load(&s->fds) < POOL_FDS;
	unsigned cap = first ? fd_limit : fd_limit - fd_pool;

	if (fd_limit && atomic_fetch_add(&fds_used, 1) >= cap) {
		atomic_fetch_sub(&fds_used, 1);
		return -EMFILE;
	}
	if (!fd_limit)
		atomic_fetch_add(&fds_used, 1);
	if (s)
		atomic_fetch_add(&s->fds, 1);
	return 0;
}

void session_fd_give(struct session *s)
{
	if (s)
		atomic_fetch_sub(&s->fds, 1);
	atomic_fetch_sub(&fds_used, 1);
}

unsigned sessions_fds_used(void)
{
	return atomic_load(&fds_used);
}

enum { PEER_UNKNOWN, PEER_NONE, PEER_WATCHED };

void session_peer(struct session *s, struct peer *out)
{
	char client[64];
	struct peer p;
	int state, ret;

	pthread_mutex_lock(&lock);
	state = s->peer_state;
	p = s->peer;
	pthread_mutex_unlock(&lock);
	if (state == PEER_UNKNOWN) {
		ret = peer_watch(s->tgid, &p);
		if (ret < 0 && ret != -ENOENT) {	/* -ENOENT: it has exited */
			errno = -ret;
			log_warn("finding the connection of process %d", (int)s->tgid);
		}
		if (ret <= 0 && p.smb) {
			/* An SMB server whose connection cannot be found is
			 * never taken for a local process: this drop counts
			 * as lost (its close fails), and the next one looks
			 * again. */
			log_warnx("process %d is an SMB server, but its client's connection "
				  "cannot be found: its drop will not be delivered (client %s)",
				  (int)s->tgid, peer_format(&p, client, sizeof(client)));
			*out = p;
			return;
		}
		pthread_mutex_lock(&lock);
		if (s->peer_state == PEER_UNKNOWN) {
			s->peer = p;
			s->peer_state = ret > 0 ? PEER_WATCHED : PEER_NONE;
		}
		state = s->peer_state;
		p = s->peer;
		pthread_mutex_unlock(&lock);
	}
	if (state == PEER_WATCHED)
		*out = p;
	else
		memset(out, 0, sizeof(*out));
}
