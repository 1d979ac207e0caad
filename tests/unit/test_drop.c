/* Unit tests for core/drop.c: every transition of drop.h's table, with a
 * fake clock. The test process is the writer's session; a sleeping child
 * stands in for another process. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

#include "unit.h"

#include "drop.h"
#include "proc.h"
#include "sessions.h"

#define DIR1 1
#define DIR2 2
#define LINGER_MS 3000

static uint64_t clock_ms = 1000000;
static unsigned freed;
static struct session *me, *other;
static pid_t child;

static uint64_t fake_now(void) { return clock_ms; }
static void count_free(struct drop *d) { freed++; }

/* The probes' answers, and how often each was asked. */
static struct {
	int state;		/* task_state: enum task_state or -errno */
	int doomed;		/* task_doomed */
	bool lost;		/* peer_lost */
	int held;		/* held_elsewhere */
	unsigned asked_state, asked_doomed, asked_lost, asked_held;
} probe;

static int fake_state(pid_t tid) { probe.asked_state++; return probe.state; }
static int fake_doomed(pid_t tid) { probe.asked_doomed++; return probe.doomed; }
static bool fake_lost(const struct peer *p) { probe.asked_lost++; return probe.lost; }
static int fake_held(pid_t pid, const struct drop *d) { probe.asked_held++; return probe.held; }

static unsigned asked(void)
{
	return probe.asked_state + probe.asked_doomed + probe.asked_lost + probe.asked_held;
}

static void configure(uint64_t linger_ms, unsigned max_drops)
{
	drop_init(&(struct drop_config){
		.linger_ms = linger_ms,
		.max_drops = max_drops,
		.now_ms = fake_now,
		.on_free = count_free,
		.task_state = fake_state,
		.task_doomed = fake_doomed,
		.peer_lost = fake_lost,
		.held_elsewhere = fake_held,
	});
	memset(&probe, 0, sizeof(probe));	/* running, alive, not held */
}

/* A started drop of session S named NAME in DIR1, its first handle in H. */
static struct drop *started(struct session *s, const char *name, struct drop_handle *h)
{
	struct drop *d;

	assert_int_equal(drop_new(s, name, DIR1, &d), 0);
	d->node = d;		/* any unique pointer */
	assert_int_equal(drop_start(d, h), 0);
	drop_put(d);		/* the caller's: the handle holds it */
	return d;
}

/* A thread of S (uid: the drop's writer's) closes H, the probes answering
 * as set: the action asked for, with *ANSWER. */
static enum drop_action close_by(struct drop_handle *h, struct session *s, int *answer)
{
	struct drop_closer c = { .session = s, .tid = 1, .uid = h->d->uid };
	enum drop_action act;

	*answer = drop_close(h, &c, &act);
	return act;
}

static int setup(void **state)
{
	configure(0, 0);
	freed = 0;
	return 0;
}

static int group_setup(void **state)
{
	if (sessions_init(drop_session_ended) < 0 || session_get(gettid(), &me) < 0)
		return -1;
	child = fork();
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		pause();
		_exit(0);
	}
	return session_get(child, &other) < 0 ? -1 : 0;
}

static int group_teardown(void **state)
{
	if (child > 0) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	session_put(other);
	session_put(me);
	sessions_shutdown();
	return 0;
}

/* create -> OPEN, visible to its session only, under its name and node. */
static void test_create_is_private(void **state)
{
	struct drop_handle h;
	struct drop *d = started(me, "A.SVF", &h), *f;

	assert_int_equal(d->state, DROP_OPEN);
	f = drop_find(me, DIR1, "A.SVF");
	assert_ptr_equal(f, d);
	drop_put(f);
	f = drop_find_node(me, d);
	assert_ptr_equal(f, d);
	drop_put(f);
	assert_null(drop_find(me, DIR2, "A.SVF"));
	assert_null(drop_find(me, DIR1, "a.svf"));
	assert_null(drop_find(other, DIR1, "A.SVF"));
	assert_null(drop_find_node(other, d));
	/* The same name again while it is open: the race loser learns. */
	struct drop *twin;
	struct drop_handle h2;
	assert_int_equal(drop_new(me, "A.SVF", DIR1, &twin), 0);
	assert_int_equal(drop_start(twin, &h2), -EEXIST);
	drop_put(twin);
	assert_int_equal(freed, 1);
	assert_int_equal(drop_unlink(d, &(enum drop_action){0}), 0);
	assert_int_equal(drop_release(&h), DROP_DISCARD);
	drop_finished(d);
	assert_int_equal(freed, 2);
}

static void test_max_drops(void **state)
{
	struct drop_handle h1, h2;
	struct drop *d1, *d2, *d3;
	int answer;

	configure(0, 2);
	d1 = started(me, "1", &h1);
	d2 = started(me, "2", &h2);
	assert_int_equal(drop_new(me, "3", DIR1, &d3), -EMFILE);
	/* Another session is not hurt by this one's cap. */
	assert_int_equal(drop_new(other, "3", DIR1, &d3), 0);
	drop_put(d3);
	/* A finished drop frees its slot. */
	assert_int_equal(close_by(&h1, me, &answer), DROP_PUBLISH);
	assert_int_equal(drop_published(d1, 0, &answer), DROP_NOTHING);
	assert_int_equal(drop_release(&h1), DROP_FREE);
	drop_finished(d1);
	assert_int_equal(drop_new(me, "3", DIR1, &d3), 0);
	drop_put(d3);
	assert_int_equal(drop_unlink(d2, &(enum drop_action){0}), 0);
	assert_int_equal(drop_release(&h2), DROP_DISCARD);
	drop_finished(d2);
}

/* last close -> CLOSING: PUBLISH; published -> PUBLISHED; then nothing
 * changes it; last release -> FREE. */
static void test_close_publishes_and_freezes(void **state)
{
	struct drop_handle h;
	struct drop *d = started(me, "M.SVF", &h);
	int answer;

	assert_int_equal(drop_change_begin(d, DROP_CHANGE_DATA), 0);
	assert_false(drop_change_end(d, DROP_CHANGE_DATA, 0));
	assert_true(d->written);
	assert_int_equal(close_by(&h, me, &answer), DROP_PUBLISH);
	assert_int_equal(d->state, DROP_CLOSING);
	assert_false(d->visible);	/* the name is free again at once */
	assert_null(drop_find(me, DIR1, "M.SVF"));
	assert_int_equal(drop_change_begin(d, DROP_CHANGE_META), -EBADF);
	assert_int_equal(drop_published(d, 0, &answer), DROP_NOTHING);
	assert_int_equal(answer, 0);
	assert_int_equal(d->state, DROP_PUBLISHED);
	/* A dup'd descriptor, a path through /proc: nothing reaches it. */
	assert_int_equal(drop_change_begin(d, DROP_CHANGE_DATA), -EBADF);
	assert_int_equal(drop_change_begin(d, DROP_CHANGE_META), -EBADF);
	assert_int_equal(close_by(&h, me, &answer), DROP_NOTHING);
	assert_int_equal(answer, 0);
	assert_int_equal(drop_release(&h), DROP_FREE);
	drop_finished(d);
	assert_int_equal(freed, 1);
}

/* A close that is not the last of the writer's handles changes nothing. */
static void test_two_handles(void **state)
{
	struct drop_handle h1, h2;
	struct drop *d = started(me, "T", &h1);
	int answer;

	assert_int_equal(drop_open(d, &h2, O_WRONLY), 0);
	assert_int_equal(close_by(&h1, me, &answer), DROP_NOTHING);
	assert_int_equal(answer, 0);
	assert_int_equal(d->state, DROP_OPEN);
	assert_true(d->visible);
	assert_int_equal(drop_release(&h1), DROP_NOTHING);
	assert_int_equal(close_by(&h2, me, &answer), DROP_PUBLISH);
	assert_int_equal(drop_published(d, 0, &answer), DROP_NOTHING);
	assert_int_equal(drop_release(&h2), DROP_FREE);
	drop_finished(d);
}

/* A child's close while the writer lives is not the writer's. */
static void test_close_by_another_process(void **state)
{
	struct drop_handle h;
	struct drop *d = started(me, "C", &h);
	int answer;

	assert_int_equal(close_by(&h, other, &answer), DROP_NOTHING);
	assert_int_equal(asked(), 0);	/* nothing to find out */
	assert_int_equal(d->state, DROP_OPEN);
	assert_true(h.live);
	assert_int_equal(close_by(&h, me, &answer), DROP_PUBLISH);
	assert_int_equal(drop_published(d, 0, &answer), DROP_NOTHING);
	assert_int_equal(drop_release(&h), DROP_FREE);
	drop_finished(d);
}

/* A shell's redirection: a close while the writer holds the drop on
 * another descriptor is not its last, written or not. */
static void test_close_held_elsewhere(void **state)
{
	struct drop_handle h;
	struct drop *d = started(me, "S1.SVF", &h);
	int answer;

	probe.held = 1;
	assert_int_equal(close_by(&h, me, &answer), DROP_NOTHING);
	assert_int_equal(answer, 0);
	assert_true(h.live);
	assert_int_equal(d->state, DROP_OPEN);
	assert_int_equal(drop_change_begin(d, DROP_CHANGE_DATA), 0);
	drop_change_end(d, DROP_CHANGE_DATA, 0);
	assert_int_equal(close_by(&h, me, &answer), DROP_NOTHING);
	probe.held = 0;
	assert_int_equal(close_by(&h, me, &answer), DROP_PUBLISH);
	assert_int_equal(drop_published(d, 0, &answer), DROP_NOTHING);
	assert_int_equal(drop_release(&h), DROP_FREE);
	drop_finished(d);
}

/* ... and the writer killed after its write: FAILED, quarantined. */
static void test_killed_writer(void **state)
{
	struct drop_handle h;
	struct drop *d = started(me, "S1.SVF", &h);
	int answer;

	probe.held = 1;
	assert_int_equal(close_by(&h, me, &answer), DROP_NOTHING);
	assert_int_equal(drop_change_begin(d, DROP_CHANGE_DATA), 0);
	drop_change_end(d, DROP_CHANGE_DATA, 0);
	probe.state = TASK_KILLED;
	assert_int_equal(close_by(&h, me, &answer), DROP_NOTHING);
	assert_int_equal(answer, -EIO);
	assert_int_equal(d->state, DROP_FAILED);
	assert_false(d->visible);
	assert_int_equal(drop_change_begin(d, DROP_CHANGE_DATA), -EBADF);
	assert_int_equal(drop_release(&h), DROP_QUARANTINE);
	drop_finished(d);
}

/* Its writer exits before writing: the child it handed the descriptor to
 * writes the message; with nobody, it is published empty at the release. */
static void test_writer_exits_before_writing(void **state)
{
	struct drop_handle h;
	struct drop *d = started(me, "O", &h);
	int answer;

	probe.state = TASK_EXITING;
	assert_int_equal(close_by(&h, me, &answer), DROP_NOTHING);
	assert_int_equal(answer, 0);
	assert_int_equal(d->state, DROP_OPEN);
	assert_int_equal(drop_release(&h), DROP_PUBLISH);
	assert_int_equal(d->state, DROP_CLOSING);
	assert_int_equal(drop_published(d, 0, &answer), DROP_FREE);
	drop_finished(d);

	/* Written, an exit is its writer's last word. */
	d = started(me, "O", &h);
	assert_int_equal(drop_change_begin(d, DROP_CHANGE_DATA), 0);
	drop_change_end(d, DROP_CHANGE_DATA, 0);
	assert_int_equal(close_by(&h, me, &answer), DROP_PUBLISH);
	assert_int_equal(drop_published(d, 0, &answer), DROP_NOTHING);
	assert_int_equal(drop_release(&h), DROP_FREE);
	drop_finished(d);
}

/* Not knowing how the close came about fails it: never a success for a
 * drop that is not delivered. */
static void test_close_facts_unknown(void **state)
{
	struct drop_handle h;
	struct drop *d = started(me, "E", &h);
	int answer;

	probe.state = -EMFILE;
	assert_int_equal(close_by(&h, me, &answer), DROP_NOTHING);
	assert_int_equal(answer, -EMFILE);
	assert_int_equal(d->state, DROP_FAILED);
	assert_int_equal(drop_release(&h), DROP_QUARANTINE);
	drop_finished(d);
}

/* The probes, one answer at a time: each is asked only when the outcome
 * depends on it, and one that cannot tell fails the close. */

/* task_state: asked at every close of its writer's; a thread that cannot
 * be found, or a /proc that cannot be read, fails it. */
static void test_probe_task_state(void **state)
{
	static const int failing[] = { -ESRCH, -EMFILE, -EIO };
	struct drop_handle h;
	struct drop *d;
	int answer;

	for (size_t i = 0; i < sizeof(failing) / sizeof(failing[0]); i++) {
		d = started(me, "T", &h);
		probe.state = failing[i];
		probe.asked_state = probe.asked_held = 0;
		assert_int_equal(close_by(&h, me, &answer), DROP_NOTHING);
		assert_int_equal(answer, failing[i]);
		assert_int_equal(probe.asked_state, 1);
		assert_int_equal(probe.asked_held, 0);	/* failed already */
		assert_int_equal(d->state, DROP_FAILED);
		assert_int_equal(drop_release(&h), DROP_QUARANTINE);
		drop_finished(d);
	}
	/* Killed: failed, whatever it holds elsewhere. */
	d = started(me, "T", &h);
	probe.state = TASK_KILLED;
	probe.held = 1;
	probe.asked_held = 0;
	assert_int_equal(close_by(&h, me, &answer), DROP_NOTHING);
	assert_int_equal(answer, -EIO);
	assert_int_equal(probe.asked_held, 0);
	assert_int_equal(drop_release(&h), DROP_QUARANTINE);
	drop_finished(d);
}

/* held_elsewhere: asked only for what would be the writer's last close;
 * one that cannot tell fails it. */
static void test_probe_held(void **state)
{
	struct drop_handle h1, h2;
	struct drop *d = started(me, "H", &h1);
	int answer;

	assert_int_equal(drop_open(d, &h2, O_WRONLY), 0);
	assert_int_equal(close_by(&h1, me, &answer), DROP_NOTHING);
	assert_int_equal(probe.asked_state, 1);
	assert_int_equal(probe.asked_held, 0);	/* another handle is open */
	probe.held = -EACCES;
	assert_int_equal(close_by(&h2, me, &answer), DROP_NOTHING);
	assert_int_equal(probe.asked_held, 1);
	assert_int_equal(answer, -EACCES);
	assert_int_equal(d->state, DROP_FAILED);
	assert_int_equal(drop_release(&h1), DROP_NOTHING);
	assert_int_equal(drop_release(&h2), DROP_QUARANTINE);
	drop_finished(d);
}

/* Nothing is asked of a close that cannot be placed (it fails) or of the
 * daemon's own close (no thread). */
static void test_probe_none(void **state)
{
	struct drop_closer unplaced = { .session = NULL, .unplaced = EIO, .tid = 1 };
	struct drop_closer own = { .session = me, .tid = 0 };
	enum drop_action act;
	struct drop_handle h;
	struct drop *d = started(me, "N", &h);
	int answer;

	assert_int_equal(drop_close(&h, &unplaced, &act), -EIO);
	assert_int_equal(act, DROP_NOTHING);
	assert_int_equal(asked(), 0);
	assert_int_equal(drop_release(&h), DROP_QUARANTINE);
	drop_finished(d);

	d = started(me, "N", &h);
	assert_int_equal(drop_close(&h, &own, &act), 0);
	assert_int_equal(act, DROP_PUBLISH);
	assert_int_equal(asked(), 0);
	assert_int_equal(drop_published(d, 0, &answer), DROP_NOTHING);
	assert_int_equal(drop_release(&h), DROP_FREE);
	drop_finished(d);
}

/* A drop made over SMB (its peer an SMB connection). */
static struct drop *smb_started(const char *name, struct drop_handle *h)
{
	struct drop *d = started(me, name, h);

	d->peer.smb = true;
	d->uid = 1000;
	return d;
}

/* peer_lost: a close of an SMB drop that does not deliver it asks, and a
 * lost connection fails the drop; one that delivers it does not ask
 * (drop_reachable() does, after the fsync). */
static void test_probe_peer(void **state)
{
	struct drop_handle h1, h2;
	struct drop *d = smb_started("P", &h1);
	int answer;

	/* Not the last close: asked, and lost fails it. */
	assert_int_equal(drop_open(d, &h2, O_WRONLY), 0);
	probe.lost = true;
	assert_int_equal(close_by(&h1, me, &answer), DROP_NOTHING);
	assert_int_equal(probe.asked_lost, 1);
	assert_int_equal(answer, -EIO);
	assert_int_equal(d->state, DROP_FAILED);
	/* Failed already: its other close asks nothing, and fails. */
	unsigned before = asked();
	assert_int_equal(close_by(&h2, me, &answer), DROP_NOTHING);
	assert_int_equal(answer, -EIO);
	assert_int_equal(asked(), before);
	assert_int_equal(drop_release(&h1), DROP_NOTHING);
	assert_int_equal(drop_release(&h2), DROP_QUARANTINE);
	drop_finished(d);

	/* smbd's descriptors are not scanned: its client's CLOSE is the
	 * last close, whatever a scan would say; the connection is asked
	 * once, by drop_reachable(), and lost fails it. */
	d = smb_started("P", &h1);
	probe.held = 1;
	probe.asked_lost = 0;
	assert_int_equal(close_by(&h1, me, &answer), DROP_PUBLISH);
	assert_int_equal(probe.asked_held, 0);
	assert_int_equal(probe.asked_lost, 0);
	assert_int_equal(drop_reachable(d, 1), -EIO);
	assert_int_equal(probe.asked_lost, 1);
	assert_int_equal(drop_published(d, -EIO, &answer), DROP_NOTHING);
	assert_int_equal(answer, -EIO);
	assert_int_equal(d->state, DROP_FAILED);
	assert_int_equal(drop_release(&h1), DROP_QUARANTINE);
	drop_finished(d);

	/* Its exiting writer's unwritten drop: asked, lost fails it. */
	d = smb_started("P", &h1);
	probe.held = 0;
	probe.state = TASK_EXITING;
	probe.asked_lost = 0;
	assert_int_equal(close_by(&h1, me, &answer), DROP_NOTHING);
	assert_int_equal(probe.asked_lost, 1);
	assert_int_equal(d->state, DROP_FAILED);
	assert_int_equal(drop_release(&h1), DROP_QUARANTINE);
	drop_finished(d);

	/* The close that delivers it: not asked here; drop_reachable()
	 * finds the connection lost and the publication fails. */
	d = smb_started("P", &h1);
	probe.state = TASK_RUNNING;
	probe.asked_lost = 0;
	assert_int_equal(close_by(&h1, me, &answer), DROP_PUBLISH);
	assert_int_equal(probe.asked_lost, 0);
	assert_int_equal(probe.asked_held, 0);	/* never, for an SMB drop */
	assert_int_equal(drop_reachable(d, 1), -EIO);
	assert_int_equal(probe.asked_lost, 1);
	assert_int_equal(drop_published(d, -EIO, &answer), DROP_NOTHING);
	assert_int_equal(answer, -EIO);
	assert_int_equal(d->state, DROP_FAILED);
	assert_int_equal(drop_release(&h1), DROP_QUARANTINE);
	drop_finished(d);

	/* Alive: delivered. */
	d = smb_started("P", &h1);
	probe.lost = false;
	assert_int_equal(close_by(&h1, me, &answer), DROP_PUBLISH);
	assert_int_equal(drop_reachable(d, 1), 0);
	assert_int_equal(drop_published(d, 0, &answer), DROP_NOTHING);
	assert_int_equal(answer, 0);
	assert_int_equal(drop_release(&h1), DROP_FREE);
	drop_finished(d);
}

/* smbd closing as another uid than the writer's (its own teardown, not
 * its client's CLOSE): failed without a scan of its descriptors. */
static void test_probe_smb_teardown(void **state)
{
	struct drop_closer c = { .session = me, .tid = 1, .uid = 0 };
	enum drop_action act;
	struct drop_handle h;
	struct drop *d = smb_started("R", &h);

	assert_int_equal(drop_close(&h, &c, &act), -EIO);
	assert_int_equal(act, DROP_NOTHING);
	assert_int_equal(probe.asked_held, 0);
	assert_int_equal(d->state, DROP_FAILED);
	assert_int_equal(drop_release(&h), DROP_QUARANTINE);
	drop_finished(d);
}

/* drop_reachable(): a doomed or vanished thread, or a probe that cannot
 * tell, withholds the delivery; a local drop's connection is never
 * asked for. */
static void test_probe_reachable(void **state)
{
	struct drop_handle h;
	struct drop *d = started(me, "Q", &h);
	int answer;

	assert_int_equal(close_by(&h, me, &answer), DROP_PUBLISH);
	assert_int_equal(drop_reachable(d, 1), 0);
	probe.doomed = 1;
	assert_int_equal(drop_reachable(d, 1), -EIO);
	probe.doomed = -ESRCH;
	assert_int_equal(drop_reachable(d, 1), -EIO);
	probe.doomed = -EMFILE;
	assert_int_equal(drop_reachable(d, 1), -EMFILE);
	assert_int_equal(drop_reachable(d, 0), 0);	/* nobody waits */
	assert_int_equal(probe.asked_doomed, 4);
	probe.lost = true;
	assert_int_equal(drop_reachable(d, 0), 0);	/* local */
	assert_int_equal(probe.asked_lost, 0);
	assert_int_equal(drop_published(d, 0, &answer), DROP_NOTHING);
	assert_int_equal(drop_release(&h), DROP_FREE);
	drop_finished(d);
}

/* change failed -> FAILED: the close fails, never published. */
static void test_failed_write(void **state)
{
	struct drop_handle h;
	struct drop *d = started(me, "F", &h);
	int answer;

	/* Two writes in flight fail: the end that fails the drop says so
	 * (the daemon counts it in errors), the other does not; a failed
	 * drop takes no change any more. */
	assert_int_equal(drop_change_begin(d, DROP_CHANGE_DATA), 0);
	assert_int_equal(drop_change_begin(d, DROP_CHANGE_DATA), 0);
	assert_true(drop_change_end(d, DROP_CHANGE_DATA, ENOSPC));
	assert_false(drop_change_end(d, DROP_CHANGE_DATA, ENOSPC));
	assert_int_equal(d->state, DROP_FAILED);
	assert_int_equal(drop_change_begin(d, DROP_CHANGE_DATA), -EBADF);
	assert_true(d->visible);	/* until its writer closes it */
	assert_int_equal(close_by(&h, me, &answer), DROP_NOTHING);
	assert_int_equal(answer, -ENOSPC);
	assert_false(d->visible);
	assert_int_equal(drop_release(&h), DROP_QUARANTINE);
	drop_finished(d);
}

/* publication failed -> FAILED: the close answers the error. */
static void test_publication_fails(void **state)
{
	struct drop_handle h;
	struct drop *d = started(me, "P", &h);
	int answer;

	assert_int_equal(close_by(&h, me, &answer), DROP_PUBLISH);
	assert_int_equal(drop_published(d, -EIO, &answer), DROP_NOTHING);
	assert_int_equal(answer, -EIO);
	assert_int_equal(d->state, DROP_FAILED);
	assert_int_equal(drop_release(&h), DROP_QUARANTINE);
	drop_finished(d);
}

/* release with no writer's close (a descriptor lost in transit). */
static void test_release_unclosed(void **state)
{
	struct drop_handle h;
	struct drop *d = started(me, "U", &h);

	assert_int_equal(drop_release(&h), DROP_QUARANTINE);
	assert_int_equal(d->state, DROP_FAILED);
	drop_finished(d);
}

/* A handle the kernel never got: nobody had the drop. */
static void test_abandon(void **state)
{
	struct drop_handle h, h2;
	struct drop *d = started(me, "Q", &h);

	assert_int_equal(drop_abandon(&h), DROP_DISCARD);
	drop_finished(d);
	/* A second handle abandoned leaves the first alone. */
	d = started(me, "Q", &h);
	assert_int_equal(drop_open(d, &h2, O_RDWR), 0);
	assert_int_equal(drop_abandon(&h2), DROP_NOTHING);
	assert_int_equal(d->state, DROP_OPEN);
	assert_true(d->visible);
	assert_int_equal(drop_unlink(d, &(enum drop_action){0}), 0);
	assert_int_equal(drop_release(&h), DROP_DISCARD);
	drop_finished(d);
}

/* unlink -> UNLINKED: writes still work, nothing published, discarded. */
static void test_unlink(void **state)
{
	enum drop_action act;
	struct drop_handle h;
	struct drop *d = started(me, "D", &h);
	int answer;

	assert_int_equal(drop_unlink(d, &act), 0);
	assert_int_equal(act, DROP_NOTHING);
	assert_null(drop_find(me, DIR1, "D"));
	assert_int_equal(drop_unlink(d, &act), -ENOENT);
	assert_int_equal(drop_change_begin(d, DROP_CHANGE_DATA), 0);
	drop_change_end(d, DROP_CHANGE_DATA, 0);
	assert_int_equal(close_by(&h, me, &answer), DROP_NOTHING);
	assert_int_equal(answer, 0);
	assert_int_equal(drop_release(&h), DROP_DISCARD);
	drop_finished(d);
}

static void test_rename(void **state)
{
	struct drop_handle h1, h2;
	struct drop *a = started(me, "a", &h1), *b = started(me, "b", &h2), *f;
	uint64_t old = 0;

	assert_int_equal(drop_change_begin(a, DROP_CHANGE_META), 0);
	assert_int_equal(drop_rename(a, DIR1, "b", &old), -EEXIST);	/* never over a drop */
	assert_int_equal(drop_rename(a, DIR1, "a", &old), 0);		/* onto itself */
	assert_int_equal(drop_rename(a, DIR2, "c", &old), 0);
	assert_int_equal(old, DIR1);
	drop_change_end(a, DROP_CHANGE_META, 0);
	assert_null(drop_find(me, DIR1, "a"));
	f = drop_find(me, DIR2, "c");
	assert_ptr_equal(f, a);
	drop_put(f);
	assert_string_equal(a->name, "c");
	assert_int_equal(drop_unlink(a, &(enum drop_action){0}), 0);
	assert_int_equal(drop_unlink(b, &(enum drop_action){0}), 0);
	assert_int_equal(drop_release(&h1), DROP_DISCARD);
	drop_finished(a);
	assert_int_equal(drop_release(&h2), DROP_DISCARD);
	drop_finished(b);
}

/* linger: close -> ACK -> LINGERING (visible, read-only); due -> PUBLISH. */
static void test_linger(void **state)
{
	struct drop_handle h, r;
	struct drop *d, *f;
	uint64_t old;
	int answer;

	configure(LINGER_MS, 0);
	d = started(me, "L", &h);
	assert_int_equal(close_by(&h, me, &answer), DROP_ACK);
	assert_true(d->visible);
	assert_int_equal(drop_acked(d, 0, &answer), DROP_NOTHING);
	assert_int_equal(answer, 0);
	assert_int_equal(d->state, DROP_LINGERING);
	assert_int_equal(drop_release(&h), DROP_NOTHING);	/* not due */
	f = drop_find(me, DIR1, "L");
	assert_ptr_equal(f, d);
	drop_put(f);
	/* rsync sets times and renames after its close; nothing writes. */
	assert_int_equal(drop_open(d, &r, O_WRONLY), -EACCES);
	assert_int_equal(drop_open(d, &r, O_RDONLY | O_TRUNC), -EACCES);
	assert_int_equal(drop_change_begin(d, DROP_CHANGE_DATA), -EBADF);
	assert_int_equal(drop_change_begin(d, DROP_CHANGE_META), 0);
	assert_int_equal(drop_rename(d, DIR1, "L2", &old), 0);
	drop_change_end(d, DROP_CHANGE_META, 0);
	assert_int_equal(drop_open(d, &r, O_RDONLY), 0);
	assert_null(drop_next_due(false));
	clock_ms += LINGER_MS;
	assert_null(drop_next_due(false));	/* open: waits for its release */
	assert_int_equal(close_by(&r, me, &answer), DROP_NOTHING);
	/* Due at its last release: published by the releaser. */
	assert_int_equal(drop_release(&r), DROP_PUBLISH);
	assert_false(d->visible);
	assert_int_equal(drop_published(d, 0, &answer), DROP_FREE);
	drop_finished(d);

	/* Released before it is due: the linger thread publishes it. */
	d = started(me, "L", &h);
	assert_int_equal(close_by(&h, me, &answer), DROP_ACK);
	assert_int_equal(drop_acked(d, 0, &answer), DROP_NOTHING);
	assert_int_equal(drop_release(&h), DROP_NOTHING);
	assert_null(drop_next_due(false));
	clock_ms += LINGER_MS;
	f = drop_next_due(false);
	assert_ptr_equal(f, d);
	assert_int_equal(d->state, DROP_CLOSING);
	assert_int_equal(drop_published(d, 0, &answer), DROP_FREE);
	drop_finished(d);
	drop_put(f);
}

/* An acknowledged drop is never lost: a failed publication is tried
 * again, and at shutdown left to recovery. */
static void test_acked_never_lost(void **state)
{
	struct drop_handle h;
	struct drop *d, *f;
	int answer;

	configure(LINGER_MS, 0);
	d = started(me, "R", &h);
	assert_int_equal(close_by(&h, me, &answer), DROP_ACK);
	assert_int_equal(drop_acked(d, 0, &answer), DROP_NOTHING);
	assert_int_equal(drop_release(&h), DROP_NOTHING);
	clock_ms += LINGER_MS;
	f = drop_next_due(false);
	assert_ptr_equal(f, d);
	assert_int_equal(drop_published(d, -ENOSPC, &answer), DROP_NOTHING);
	assert_int_equal(d->state, DROP_LINGERING);
	assert_false(d->visible);
	drop_put(f);
	assert_null(drop_next_due(false));	/* not at once */
	clock_ms += 60000;
	f = drop_next_due(false);
	assert_ptr_equal(f, d);
	assert_int_equal(drop_published(d, -ENOSPC, &answer), DROP_NOTHING);
	drop_put(f);
	f = drop_next_due(true);		/* shutting down */
	assert_ptr_equal(f, d);
	assert_int_equal(drop_published(d, -ENOSPC, &answer), DROP_FREE);
	drop_finished(d);
	drop_put(f);
	assert_null(drop_next_due(true));
}

/* ack failed -> FAILED; the close fails. */
static void test_ack_fails(void **state)
{
	struct drop_handle h;
	struct drop *d;
	int answer;

	configure(LINGER_MS, 0);
	d = started(me, "K", &h);
	assert_int_equal(close_by(&h, me, &answer), DROP_ACK);
	assert_int_equal(drop_acked(d, -EIO, &answer), DROP_NOTHING);
	assert_int_equal(answer, -EIO);
	assert_int_equal(d->state, DROP_FAILED);
	assert_false(d->visible);
	assert_int_equal(drop_release(&h), DROP_QUARANTINE);
	drop_finished(d);
}

/* unlink of a lingering drop nobody has open: discarded at once. */
static void test_unlink_lingering(void **state)
{
	enum drop_action act;
	struct drop_handle h;
	struct drop *d;
	int answer;

	configure(LINGER_MS, 0);
	d = started(me, "X", &h);
	assert_int_equal(close_by(&h, me, &answer), DROP_ACK);
	assert_int_equal(drop_acked(d, 0, &answer), DROP_NOTHING);
	assert_int_equal(drop_release(&h), DROP_NOTHING);
	drop_ref(d);
	assert_int_equal(drop_unlink(d, &act), 0);
	assert_int_equal(act, DROP_DISCARD);
	drop_finished(d);
	clock_ms += LINGER_MS;
	assert_null(drop_next_due(false));	/* off the lingering list */
	drop_put(d);
}

/* its session ends -> hidden; whoever holds it on closes for it. */
static void test_session_ends(void **state)
{
	struct drop_handle h;
	struct drop *d;
	int answer;
	pid_t pid = fork();

	if (pid == 0) {
		pause();
		_exit(0);
	}
	struct session *gone;
	assert_int_equal(session_get(pid, &gone), 0);
	d = started(gone, "G", &h);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	/* The reaper ends the session: its drop leaves the namespace. */
	for (int i = 0; i < 500; i++) {
		struct drop *f = drop_find(gone, DIR1, "G");

		if (f == NULL)
			break;
		drop_put(f);
		usleep(10000);
	}
	assert_null(drop_find(gone, DIR1, "G"));
	/* The child it handed the descriptor to is its writer now. */
	assert_int_equal(close_by(&h, me, &answer), DROP_PUBLISH);
	assert_int_equal(drop_published(d, 0, &answer), DROP_NOTHING);
	assert_int_equal(drop_release(&h), DROP_FREE);
	drop_finished(d);
	session_put(gone);
}

struct closer {
	struct drop_handle *h;
	enum drop_action act;
	bool done;
};

static void *close_thread(void *arg)
{
	struct closer *c = arg;
	int answer;

	c->act = close_by(c->h, me, &answer);
	__atomic_store_n(&c->done, true, __ATOMIC_SEQ_CST);
	return NULL;
}

/* The last close waits for a change in flight: nothing lands in a
 * message after its publication began. */
static void test_close_waits_for_changes(void **state)
{
	struct drop_handle h;
	struct drop *d = started(me, "W", &h);
	struct closer c = { .h = &h };
	pthread_t t;
	int answer;

	assert_int_equal(drop_change_begin(d, DROP_CHANGE_DATA), 0);
	assert_int_equal(pthread_create(&t, NULL, close_thread, &c), 0);
	usleep(100000);
	assert_false(__atomic_load_n(&c.done, __ATOMIC_SEQ_CST));
	/* Once the close has begun, no new change starts. */
	assert_int_equal(drop_change_begin(d, DROP_CHANGE_DATA), -EBADF);
	drop_change_end(d, DROP_CHANGE_DATA, 0);
	pthread_join(t, NULL);
	assert_int_equal(c.act, DROP_PUBLISH);
	assert_int_equal(drop_published(d, 0, &answer), DROP_NOTHING);
	assert_int_equal(drop_release(&h), DROP_FREE);
	drop_finished(d);
}

/* What a stop's drain waits for: drops being written or being delivered;
 * not those failed, deleted, published or lingering (acknowledged). */
static void test_unanswered(void **state)
{
	unsigned base = drop_unanswered();
	struct drop_handle h1, h2, h3, h4;
	struct drop *twin, *a, *b, *c, *d;
	int answer;

	a = started(me, "A", &h1);
	b = started(me, "B", &h2);
	c = started(other, "C", &h3);
	assert_int_equal(drop_unanswered(), base + 3);
	/* A create that lost its name never counts. */
	assert_int_equal(drop_new(me, "A", DIR1, &twin), 0);
	assert_int_equal(drop_unanswered(), base + 3);
	assert_int_equal(drop_start(twin, &h4), -EEXIST);
	drop_put(twin);
	assert_int_equal(drop_unanswered(), base + 3);
	/* Closing: still being delivered, until published. */
	assert_int_equal(close_by(&h1, me, &answer), DROP_PUBLISH);
	assert_int_equal(drop_unanswered(), base + 3);
	assert_int_equal(drop_published(a, 0, &answer), DROP_NOTHING);
	assert_int_equal(drop_unanswered(), base + 2);
	assert_int_equal(drop_release(&h1), DROP_FREE);
	drop_finished(a);
	/* A failed write: its close fails anyway. */
	assert_int_equal(drop_change_begin(b, DROP_CHANGE_DATA), 0);
	drop_change_end(b, DROP_CHANGE_DATA, EIO);
	assert_int_equal(drop_unanswered(), base + 1);
	assert_int_equal(close_by(&h2, me, &answer), DROP_NOTHING);
	assert_int_equal(drop_release(&h2), DROP_QUARANTINE);
	drop_finished(b);
	assert_int_equal(drop_unanswered(), base + 1);
	/* Deleted by its session. */
	assert_int_equal(drop_unlink(c, &(enum drop_action){0}), 0);
	assert_int_equal(drop_unanswered(), base);
	assert_int_equal(drop_release(&h3), DROP_DISCARD);
	drop_finished(c);
	/* Acknowledged and lingering: its close was answered. */
	configure(LINGER_MS, 0);
	d = started(me, "D", &h4);
	assert_int_equal(drop_unanswered(), base + 1);
	assert_int_equal(close_by(&h4, me, &answer), DROP_ACK);
	assert_int_equal(drop_acked(d, 0, &answer), DROP_NOTHING);
	assert_int_equal(drop_unanswered(), base);
	assert_int_equal(drop_release(&h4), DROP_NOTHING);
	clock_ms += LINGER_MS;
	assert_ptr_equal(drop_next_due(false), d);
	assert_int_equal(drop_published(d, 0, &answer), DROP_FREE);
	drop_finished(d);
	drop_put(d);
	assert_int_equal(drop_unanswered(), base);
}

static void test_state_names(void **state)
{
	assert_string_equal(drop_state_name(DROP_OPEN), "open");
	assert_string_equal(drop_state_name(DROP_UNLINKED), "unlinked");
	assert_string_equal(drop_state_name((enum drop_state)99), "?");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_create_is_private, setup),
		cmocka_unit_test_setup(test_probe_task_state, setup),
		cmocka_unit_test_setup(test_probe_held, setup),
		cmocka_unit_test_setup(test_probe_none, setup),
		cmocka_unit_test_setup(test_probe_peer, setup),
		cmocka_unit_test_setup(test_probe_smb_teardown, setup),
		cmocka_unit_test_setup(test_probe_reachable, setup),
		cmocka_unit_test_setup(test_max_drops, setup),
		cmocka_unit_test_setup(test_close_publishes_and_freezes, setup),
		cmocka_unit_test_setup(test_two_handles, setup),
		cmocka_unit_test_setup(test_close_by_another_process, setup),
		cmocka_unit_test_setup(test_close_held_elsewhere, setup),
		cmocka_unit_test_setup(test_killed_writer, setup),
		cmocka_unit_test_setup(test_writer_exits_before_writing, setup),
		cmocka_unit_test_setup(test_close_facts_unknown, setup),
		cmocka_unit_test_setup(test_failed_write, setup),
		cmocka_unit_test_setup(test_publication_fails, setup),
		cmocka_unit_test_setup(test_release_unclosed, setup),
		cmocka_unit_test_setup(test_abandon, setup),
		cmocka_unit_test_setup(test_unlink, setup),
		cmocka_unit_test_setup(test_rename, setup),
		cmocka_unit_test_setup(test_linger, setup),
		cmocka_unit_test_setup(test_acked_never_lost, setup),
		cmocka_unit_test_setup(test_ack_fails, setup),
		cmocka_unit_test_setup(test_unlink_lingering, setup),
		cmocka_unit_test_setup(test_session_ends, setup),
		cmocka_unit_test_setup(test_close_waits_for_changes, setup),
		cmocka_unit_test_setup(test_unanswered, setup),
		cmocka_unit_test_setup(test_state_names, setup),
	};

	unit_xml_reset();
	return cmocka_run_group_tests_name("unit-drop", tests, group_setup, group_teardown);
}
