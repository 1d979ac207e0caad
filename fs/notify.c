/* Kernel notifications off the request path: when a drop's name leaves its
 * session's view, the kernel is told to drop the dentry, so the inode is
 * forgotten and the daemon's node freed (else memory grows per drop). A
 * worker thread sends them, since a handler must not block on the kernel's
 * directory lock. */
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"

struct note {
	fuse_ino_t parent;
	struct note *next;
	char name[];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static struct note *head, **tail = &head;
static bool stopping, started;
static pthread_t worker;
static struct fuse_session *session;

static void *notify_main(void *arg)
{
	pthread_mutex_lock(&lock);
	for (;;) {
		while (head == NULL && !stopping)
			pthread_cond_wait(&cond, &lock);
		if (head == NULL)
			break;
		struct note *n = head;
		head = n->next;
		if (head == NULL)
			tail = &head;
		pthread_mutex_unlock(&lock);
		/* -ENOENT (nothing cached) is the common, harmless answer. */
		fuse_lowlevel_notify_inval_entry(session, n->parent, n->name, strlen(n->name));
		free(n);
		pthread_mutex_lock(&lock);
	}
	pthread_mutex_unlock(&lock);
	return NULL;
}

int notify_start(struct fuse_session *se)
{
	session = se;
	if (pthread_create(&worker, NULL, notify_main, NULL) != 0)
		return -1;
	started = true;
	return 0;
}

/* The worker may be blocked in the kernel on a directory lock held by a
 * process that waits for a request this daemon will no longer answer (the
 * loop ended on a signal while the mount is busy). Aborting the connection
 * fails those requests and lets everyone go. */
static void abort_connection(void)
{
	char path[64];
	int fd;

	if (fs.connection == 0)
		return;
	snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%u/abort", fs.connection - 1);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "1", 1) != 1)
		log_warn("cannot abort FUSE connection %u", fs.connection - 1);
	else
		log_warnx("aborted FUSE connection %u: requests were left unanswered", fs.connection - 1);
	if (fd >= 0)
		close(fd);
}

void notify_stop(void)
{
	struct timespec until;

	if (!started)
		return;
	pthread_mutex_lock(&lock);
	stopping = true;
	while (head) {
		struct note *n = head;

		head = n->next;
		free(n);
	}
	tail = &head;
	pthread_cond_signal(&cond);
	pthread_mutex_unlock(&lock);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 2;
	if (pthread_timedjoin_np(worker, NULL, &until) != 0) {
		abort_connection();
		pthread_join(worker, NULL);
	}
	started = false;
}

void notify_entry_gone(fuse_ino_t parent, const char *name)
{
	size_t len = strlen(name);
	struct note *n = malloc(sizeof(*n) + len + 1);

	if (n == NULL)
		return;		/* only a cache stays warm longer */
	n->parent = parent;
	n->next = NULL;
	memcpy(n->name, name, len + 1);
	pthread_mutex_lock(&lock);
	if (stopping) {
		pthread_mutex_unlock(&lock);
		free(n);
		return;
	}
	*tail = n;
	tail = &n->next;
	pthread_cond_signal(&cond);
	pthread_mutex_unlock(&lock);
}
