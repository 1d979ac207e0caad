/* The directory under the mount (issue 18). The start delivered what it
 * held, yet a file can still reach it: created in the moment between that
 * look and the mount, or through a directory descriptor or working
 * directory a process kept from before the mount (a path now leads to the
 * mount). While serving, a thread looks again every COVERED_PERIOD_MS
 * through a descriptor opened before the mount, and delivers what it finds
 * as the start does (core/strays.h); what it cannot deliver yet (a file
 * still being written) it names in a warning, once until that changes. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"
#include "stats.h"
#include "strays.h"

#define COVERED_PERIOD_MS 2000

static pthread_mutex_t wait_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static bool stopping, started;
static pthread_t watcher;
static int covered_fd = -1;

static void look(char *last, size_t size)
{
	struct strays s;

	strays_sweep(&fs.staging, inbox_fd(), covered_fd, &s);
	stat_add(STAT_RECOVERED, s.delivered + s.repaired);
	stat_add(STAT_PUBLISHED, s.delivered);
	stat_add(STAT_ERRORS, s.failed);
	if (s.refused && strcmp(s.refusals, last) != 0)
		log_warnx("mountpoint: under the mount, what cannot be delivered into the inbox "
			  "yet: %s", s.refusals);
	snprintf(last, size, "%s", s.refused ? s.refusals : "");
}

static void *covered_main(void *arg)
{
	char last[sizeof(((struct strays *)0)->refusals)] = "";

	pthread_mutex_lock(&wait_lock);
	while (!stopping) {
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += COVERED_PERIOD_MS / 1000;
		pthread_cond_timedwait(&wake, &wait_lock, &until);
		if (stopping)
			break;
		pthread_mutex_unlock(&wait_lock);
		look(last, sizeof(last));
		pthread_mutex_lock(&wait_lock);
	}
	pthread_mutex_unlock(&wait_lock);
	return NULL;
}

int covered_start(int covered)
{
	if (covered < 0)
		return 0;
	covered_fd = covered;
	if (pthread_create(&watcher, NULL, covered_main, NULL) != 0)
		return -1;
	started = true;
	return 0;
}

void covered_stop(void)
{
	if (!started)
		return;
	pthread_mutex_lock(&wait_lock);
	stopping = true;
	pthread_cond_signal(&wake);
	pthread_mutex_unlock(&wait_lock);
	pthread_join(watcher, NULL);
	started = false;
}
