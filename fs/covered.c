/* The directory under the mount. The start delivered what it
 * held, yet a file can still reach it: created in the moment between that
 * look and the mount, or through a directory descriptor or working
 * directory a process kept from before the mount (a path now leads to the
 * mount). While serving, a thread looks again every COVERED_PERIOD_MS
 * through a descriptor opened before the mount, and delivers what it finds
 * as the start does (core/strays.h); what it cannot deliver yet (a file
 * still being written) it names in a warning, once until that changes. */
#include <stdio.h>
#include <string.h>

#include "covered.h"
#include "fs.h"
#include "inode.h"
#include "log.h"
#include "stats.h"
#include "strays.h"
#include "ticker.h"

#define COVERED_PERIOD_MS 2000

static int covered_fd = -1;

/* Deliver what the directory holds; name what it cannot deliver yet,
 * once until that changes. */
static bool look(void)
{
	static char last[sizeof(((struct strays *)0)->refusals)];
	struct strays s;

	strays_sweep(&fs.staging, inbox_fd(), covered_fd, &s);
	stat_add(STAT_RECOVERED, s.delivered + s.repaired);
	stat_add(STAT_PUBLISHED, s.delivered);
	stat_add(STAT_ERRORS, s.failed);
	if (s.refused && strcmp(s.refusals, last) != 0)
		log_warnx("mountpoint: under the mount, what cannot be delivered into the inbox "
			  "yet: %s", s.refusals);
	snprintf(last, sizeof(last), "%s", s.refused ? s.refusals : "");
	return true;
}

static struct ticker watch = { .period_ms = COVERED_PERIOD_MS, .wait_first = true, .job = look };

int covered_start(int covered)
{
	if (covered < 0)
		return 0;
	covered_fd = covered;
	return ticker_start(&watch);
}

void covered_stop(void)
{
	ticker_stop(&watch);
}
