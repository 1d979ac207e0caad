/* Recovery of the staging areas of instances that are gone (R6, R13):
 * once before serving, then by a thread of its own every second while
 * serving, so that what a dead instance acknowledged is delivered within
 * seconds by whichever instance still runs, whether or not the dead one
 * ever comes back. core/staging.c does the work, under each area's lock;
 * this thread takes none of fs.h's locks and is never on a request's path. */
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

#include "fs.h"
#include "log.h"
#include "recovery.h"
#include "staging.h"
#include "stats.h"
#include "stop.h"
#include "ticker.h"

/* How often the running instance looks for a dead one's area. */
#define TAKEOVER_INTERVAL_MS 1000

static void account(const struct recovery *r)
{
	stat_add(STAT_RECOVERED, r->published + r->quarantined + r->repaired);
	stat_add(STAT_QUARANTINED, r->quarantined);
	stat_add(STAT_PUBLISHED, r->published);
	stat_add(STAT_AREAS_RECOVERED, r->areas);
}

void recovery_at_start(int inbox_fd)
{
	struct recovery r;

	/* Before serving, deliver what instances that are gone acknowledged
	 * and put aside what they did not. */
	recover_staging(&fs.staging, inbox_fd, &r);
	account(&r);
	if (r.published + r.quarantined + r.failed + r.repaired + r.areas)
		log_info("recovery: %u delivered, %u quarantined, %u failed, %u published "
			 "before a crash (link repaired); %u areas recovered, %u live left alone",
			 r.published, r.quarantined, r.failed, r.repaired, r.areas, r.live);
}

static int inbox;

static bool lost;	/* (atomic) read by the closes and the linger thread */

bool takeover_lost_area(void)
{
	return __atomic_load_n(&lost, __ATOMIC_SEQ_CST);
}

/* Our own area taken over, or its lock lost (a partition from the
 * cluster filesystem longer than it keeps locks): what we staged is, or
 * may at any moment be, another instance's to deliver, and publishing it
 * too could deliver it twice. So stop serving: the unit restarts us with
 * an area of our own, and writers of open drops see their close fail
 * (never delivered: the taker quarantines them). */
static bool still_ours(void)
{
	char area[AREA_NAME_MAX];
	int err = staging_still_ours(&fs.staging);

	if (err != -ESTALE)
		return true;	/* ours, or cannot be told now: look again */
	snprintf(area, sizeof(area), "%s", fs.staging.area);
	log_warnx("staging area %s is no longer this instance's (its lock was lost, or "
		  "another instance took it over): stopping; what it held is recovered by "
		  "whichever instance takes it", area);
	__atomic_store_n(&lost, true, __ATOMIC_SEQ_CST);
	stop_now();	/* no drain: nothing staged here may be published now */
	return false;
}

/* With staging= elsewhere, an INBOX/.inboxfs made after our start is
 * another instance's staging: hidden from then on, as main.c hides one
 * found at start. */
static void hide_other_staging(void)
{
	struct stat st;

	if (fstatat(inbox, STAGING_DIR, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) &&
	    st.st_ino != fs.staging_ino)
		__atomic_store_n(&fs.other_staging_ino, st.st_ino, __ATOMIC_RELAXED);
}

/* One pass: deliver what dead instances left, unless our own area is
 * gone (then the thread ends). */
static bool take_over(void)
{
	struct recovery r;

	if (!still_ours())
		return false;
	hide_other_staging();
	recover_gone(&fs.staging, inbox, &r);
	account(&r);
	/* A failed area stays (its lock free): the next pass retries it. */
	if (r.published + r.quarantined + r.failed + r.repaired + r.areas)
		log_info("take-over: %u delivered, %u quarantined, %u failed, %u published "
			 "before a crash (link repaired); %u areas recovered",
			 r.published, r.quarantined, r.failed, r.repaired, r.areas);
	return true;
}

static struct ticker takeover = { .period_ms = TAKEOVER_INTERVAL_MS, .job = take_over };

int takeover_start(int inbox_fd)
{
	inbox = inbox_fd;
	return ticker_start(&takeover);
}

void takeover_stop(void)
{
	ticker_stop(&takeover);
}
