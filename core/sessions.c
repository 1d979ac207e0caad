/* The session table: thread id -> thread group -> session, with a pidfd per
 * session so a reused pid never inherits a dead session, and a reaper
 * thread that ends sessions when their process exits. The thread cache is
 * direct-mapped and trusted for at most the current second and until the
 * next session ends, so a thread id recycled by the kernel is re-read. */
#include "sessions.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
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

#define SESSION_BUCKETS 1024
#define TID_SLOTS 4096

struct session {
	pid_t tgid;
	int pidfd;
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
	uint32_t gen;
	time_t sec;
	struct session *s;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct session *buckets[SESSION_BUCKETS];
static struct tid_slot tid_cache[TID_SLOTS];
static uint32_t generation = 1;
static uint64_t next_serial = 1;
static struct session_stats stats;
static int epfd = -1, stopfd = -1;
static pthread_t reaper;
static void (*end_cb)(struct session *);

pid_t session_pid(const struct session *s) { return s->tgid; }
uint64_t session_serial(const struct session *s) { return s->serial; }
struct drop_list *session_drops(struct session *s) { return &s->drops; }

static time_t now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return ts.tv_sec;
}

int tid_to_tgid(pid_t tid, pid_t *tgid)
{
	char path[64], buf[512];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESRCH : -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -ESRCH;
	buf[n] = '\0';
	const char *p = strstr(buf, "\nTgid:");
	if (p == NULL)
		return -ESRCH;
	*tgid = (pid_t)strtol(p + 6, NULL, 10);
	return *tgid > 0 ? 0 : -ESRCH;
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
	close(s->pidfd);
	free(s);
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
	epoll_ctl(epfd, EPOLL_CTL_DEL, s->pidfd, NULL);
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
	bool alive;

	pthread_mutex_lock(&lock);
	alive = s->alive;
	pthread_mutex_unlock(&lock);
	return alive && !process_exited(s->pidfd);
}

static struct session *find_alive(pid_t tgid)
{
	for (struct session *s = *bucket_of(tgid); s; s = s->next)
		if (s->tgid == tgid && s->alive)
			return s;
	return NULL;
}

int session_get(pid_t tid, struct session **out)
{
	struct tid_slot *slot = &tid_cache[(unsigned)tid % TID_SLOTS];
	time_t sec = now_sec();
	struct session *s;
	pid_t tgid;
	int pidfd, ret;

	pthread_mutex_lock(&lock);
	if (slot->tid == tid && slot->gen == generation && slot->sec == sec && slot->s->alive) {
		s = slot->s;
		s->refs++;
		pthread_mutex_unlock(&lock);
		*out = s;
		return 0;
	}
	pthread_mutex_unlock(&lock);

	ret = tid_to_tgid(tid, &tgid);
	if (ret < 0)
		return ret;
	for (int attempt = 0; attempt < 2; attempt++) {
		pthread_mutex_lock(&lock);
		s = find_alive(tgid);
		if (s)
			s->refs++;
		pthread_mutex_unlock(&lock);
		if (s == NULL)
			break;
		if (!process_exited(s->pidfd))
			goto found;
		session_end(s);		/* the reaper has not got to it yet */
		session_put(s);
	}

	pidfd = (int)syscall(SYS_pidfd_open, tgid, 0);
	if (pidfd < 0)
		return errno == ESRCH ? -ESRCH : -errno;
	/* The pidfd was opened after the thread was seen in TGID; if the
	 * thread still belongs to it, the pidfd names the right process. */
	pid_t again;
	ret = tid_to_tgid(tid, &again);
	if (ret < 0 || again != tgid) {
		close(pidfd);
		return ret < 0 ? ret : -ESRCH;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		close(pidfd);
		return -ENOMEM;
	}
	s->tgid = tgid;
	s->pidfd = pidfd;
	s->alive = true;
	s->refs = 2;		/* the table's and the caller's */

	pthread_mutex_lock(&lock);
	struct session *other = find_alive(tgid);
	if (other) {		/* another thread of it won the race */
		other->refs++;
		pthread_mutex_unlock(&lock);
		close(pidfd);
		free(s);
		s = other;
		goto found;
	}
	s->serial = next_serial++;
	s->next = *bucket_of(tgid);
	*bucket_of(tgid) = s;
	stats.alive++;
	stats.started++;
	pthread_mutex_unlock(&lock);

	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = reaper_key(s) };
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, pidfd, &ev) < 0)
		log_warn("epoll_ctl(pidfd %d)", (int)tgid);
found:
	pthread_mutex_lock(&lock);
	if (s->alive) {		/* else it ended since: caching it would outlive it */
		slot->tid = tid;
		slot->gen = generation;
		slot->sec = sec;
		slot->s = s;
	}
	pthread_mutex_unlock(&lock);
	*out = s;
	return 0;
}

static void *reaper_main(void *arg)
{
	struct epoll_event evs[64];

	for (;;) {
		int n = epoll_wait(epfd, evs, 64, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		for (int i = 0; i < n; i++) {
			uint64_t key = evs[i].data.u64;

			if (key == 0)
				return NULL;	/* stopfd */
			/* The event may name a session that session_get() has
			 * ended and freed since: look it up, never dereference. */
			pthread_mutex_lock(&lock);
			struct session *s = find_alive((pid_t)(uint32_t)key);
			if (s && reaper_key(s) == key)
				s->refs++;
			else
				s = NULL;
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

int task_state(pid_t tid)
{
	char path[64], buf[1024];
	unsigned long flags;
	int exit_code;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESRCH : -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return n < 0 && errno != ESRCH ? -errno : -ESRCH;
	buf[n] = '\0';
	/* Fields after the command name, which may hold spaces and ')'. */
	char *p = strrchr(buf, ')');
	if (p == NULL)
		return -EIO;
	p += 2;
	/* state(3) ... flags(9) ... exit_code(52): field k is token k-3. */
	char *save = NULL, *tok = strtok_r(p, " ", &save);
	for (int field = 3; tok; tok = strtok_r(NULL, " ", &save), field++) {
		if (field == 9) {
			flags = strtoul(tok, NULL, 10);
			if (!(flags & 0x4))	/* PF_EXITING */
				return TASK_RUNNING;
		} else if (field == 52) {
			exit_code = (int)strtol(tok, NULL, 10);
			/* terminated by a signal? */
			return (exit_code & 0x7f) != 0 ? TASK_KILLED : TASK_EXITING;
		}
	}
	return -EIO;
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
