/* Carrying out what a drop's lifecycle (core/drop.h) decides: the closes
 * and releases of drop handles, making a drop durable and publishing it,
 * putting it aside, and the thread that publishes lingering drops. Every
 * publication starts in carry_out(). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "drop.h"
#include "drops.h"
#include "fs.h"
#include "handles.h"
#include "inode.h"
#include "log.h"
#include "names.h"
#include "proc.h"
#include "recovery.h"
#include "sessions.h"
#include "stats.h"
#include "ticker.h"
#include "transport/transport.h"

/* ---- the actions ---- */

/* FD, or a descriptor of D's staged file opened into *OWN. */
static int staged_fd(struct drop *d, int fd, int *own)
{
	*own = -1;
	if (fd >= 0)
		return fd;
	*own = node_open(d->node, O_RDONLY);
	return *own;
}

/* Who waits for a close's answer: the thread that sent the FLUSH (0: a
 * mknod's close, or nothing to look at there). */
struct close_waiter {
	pid_t tid;
};

/* For a close being answered (CL; NULL: none is), after D's data sync and
 * just before the step that delivers it (the rename, or the a.* ack under
 * linger=): can the answer still reach the writer? Not once the
 * connection ended (umount -f, fusectl's abort; the daemon lives on): the
 * close has failed already, -ENOTCONN. The rest is the lifecycle's rule
 * (drop_reachable(): its writer killed meanwhile, its SMB connection
 * lost). */
static int answer_reachable(const struct drop *d, const struct close_waiter *cl)
{
	if (cl == NULL)
		return 0;
	if (!transport_connected())
		return -ENOTCONN;
	return drop_reachable(d, cl->tid);
}

/* Move D (CLOSING: its name and directory stay put) into its directory.
 * A directory removed or moved out of the inbox while D was open (an
 * observer may) cannot take it: it goes to the top of the inbox, by the
 * rule recovery and inboxfs-quarantine follow (publish_inside()).
 * CL: the close whose answer waits for it (NULL: none). */
static int publish(struct drop *d, int fd, const struct close_waiter *cl)
{
	char final[NAME_MAX_BYTES + 1], q1[1024], q2[1024], client[64];
	uint64_t start = monotonic_us();
	struct node *dir = node_of(d->parent);
	enum delivery where;
	bool top, told = false;
	int own = -1, dfd, ret;

	/* Our area is no longer ours (recovery.c): what it holds is the
	 * taker's to deliver or set aside, and a second publication of it
	 * could deliver it twice (two link()s do not exclude each other). An
	 * acknowledged drop stays staged for the taker; a close fails. */
	if (takeover_lost_area()) {
		ret = -ESTALE;
		goto out;
	}
	fd = staged_fd(d, fd, &own);
	if (fd < 0) {
		ret = fd;
		goto out;
	}
	ret = stage_sync_data(&fs.staging, fd);
	if (ret < 0)
		goto out;
	ret = answer_reachable(d, cl);
	told = ret == -EIO;	/* it said why */
	if (ret < 0)
		goto out;
	dfd = dir_get(dir);
	ret = publish_inside(&fs.staging, fs.staging.dirfd, d->stage_name, fd, inbox_fd(), dfd,
			     d->name, final, &where);
	if (dfd >= 0)
		dir_put(dir, dfd);
	if (ret < 0)
		goto out;
	top = where != DELIVERED_ASKED;
	if (top)
		log_warnx("publish: the directory of \"%s\" %s; stored at the top as \"%s\"",
			  log_name(d->name, q1, sizeof(q1)), delivery_why(where),
			  log_name(final, q2, sizeof(q2)));
	else if (ret == 1)
		log_info("rewrite: \"%s\" stored as \"%s\" (client %s, pid %d, uid %u)",
			 log_name(d->name, q1, sizeof(q1)), log_name(final, q2, sizeof(q2)),
			 peer_format(&d->peer, client, sizeof(client)), (int)d->pid,
			 (unsigned)d->uid);
	if (ret == 1 || (top && strcmp(final, d->name) != 0))
		stat_add(STAT_REWRITES, 1);
	stat_add(STAT_PUBLISHED, 1);
	stat_latency(monotonic_us() - start);
	ret = 0;
out:
	if (own >= 0)
		close(own);
	if (ret < 0) {
		stat_add(STAT_ERRORS, 1);
		errno = -ret;
		if (!told)
			log_warn("publishing \"%s\" (%s)", log_name(d->name, q1, sizeof(q1)),
				 d->stage_name);
	}
	return ret;
}

/* Make D durable and staged as acknowledged (a.*): recovery delivers it.
 * CL: the close whose answer waits for it (NULL: none). */
static int ack(struct drop *d, int fd, const struct close_waiter *cl)
{
	bool told = false;
	int own, ret = 0;

	fd = staged_fd(d, fd, &own);
	if (takeover_lost_area())
		ret = -ESTALE;		/* as in publish() */
	else if (fd < 0)
		ret = fd;
	else
		ret = stage_sync_data(&fs.staging, fd);
	if (ret == 0) {
		ret = answer_reachable(d, cl);
		told = ret == -EIO;	/* it said why */
	}
	if (ret == 0)
		ret = stage_ack(&fs.staging, d->stage_name, fd);
	if (own >= 0)
		close(own);
	if (ret < 0) {
		stat_add(STAT_ERRORS, 1);
		errno = -ret;
		if (!told)
			log_warn("acknowledging %s", d->stage_name);
	}
	return ret;
}

static void quarantine(struct drop *d)
{
	char why[256], client[64];

	snprintf(why, sizeof(why), "%s (client %s, pid %d, uid %u)",
		 d->error == EIO ? "its writer never saw a successful close" : strerror(d->error),
		 peer_format(&d->peer, client, sizeof(client)), (int)d->pid, (unsigned)d->uid);
	if (quarantine_drop(&fs.staging, d->stage_name, d->name, why) == 0)
		stat_add(STAT_QUARANTINED, 1);
}

/* CL: for a close, whose answer waits for this (NULL: none). */
static int carry_out_for(struct drop *d, enum drop_action act, int fd, const struct close_waiter *cl)
{
	int answer = 0;

	for (;;) {
		switch (act) {
		case DROP_NOTHING:
			return answer;
		case DROP_ACK:
			act = drop_acked(d, ack(d, fd, cl), &answer);
			break;
		case DROP_PUBLISH:
			act = drop_published(d, publish(d, fd, cl), &answer);
			break;
		case DROP_QUARANTINE:
			quarantine(d);
			drop_finished(d);
			return answer;
		case DROP_DISCARD:
			discard_drop(&fs.staging, d->stage_name);
			stat_add(STAT_DISCARDED, 1);
			drop_finished(d);
			return answer;
		case DROP_FREE:
			drop_finished(d);
			return answer;
		}
	}
}

int carry_out(struct drop *d, enum drop_action act, int fd)
{
	return carry_out_for(d, act, fd, NULL);
}

void forget_drop_node(struct drop *d)
{
	if (d->node == NULL)
		return;
	node_forget(node_of(d->parent), 1);
	node_forget(d->node, 1);
}

/* ---- closes ---- */

/* drop_config.held_elsewhere: does process PID still hold drop D open on
 * another descriptor (a shell's redirections duplicate descriptors and
 * close them, before and after writing)? The descriptor being closed is
 * out of the table already. */
int writer_holds(pid_t pid, const struct drop *d)
{
	return proc_holds_file(pid, fs.mountpoint, fs.mnt_id, d->ino);
}

/* H closed by session S (NULL: a closer that cannot be placed, for
 * reason UNPLACED, an errno) and its thread TID (0: the daemon's own
 * close, no facts to find) with fsuid UID. */
static int handle_close(struct handle *h, struct session *s, pid_t tid, uid_t uid,
			int unplaced)
{
	struct drop_closer c = { .session = s, .unplaced = unplaced, .tid = tid, .uid = uid };
	struct close_waiter cl = { .tid = tid };
	enum drop_action act;
	int ret = drop_close(&h->drop, &c, &act);

	/* A close made by the kernel for an exiting process: nobody waits
	 * for its answer, and an exit's close delivers; the exit itself
	 * leaves the other threads a SIGKILL, and their closes' FLUSHes
	 * interrupted. */
	if (c.exiting)
		cl.tid = 0;
	if (act != DROP_NOTHING)
		ret = carry_out_for(h->drop.d, act, h->fd, &cl);
	return ret;
}

int close_drop(struct handle *h, struct session *s)
{
	return handle_close(h, s, 0, 0, 0);
}

int flush_drop(struct handle *h, pid_t tid, uid_t uid)
{
	struct session *s = NULL;
	int ret;

	/* The closing process, whatever uid it has now: smbd closes a
	 * dropped connection's files as root. So it is asked for as the
	 * drop's owner's uid: the writer's own process finds the writer's
	 * session. A closer we cannot place (its thread gone, /proc out of
	 * reach) is no writer we can trust. */
	ret = tid > 0 ? session_get_as(tid, session_uid(h->drop.d->owner), &s) : -ESRCH;
	ret = handle_close(h, s, tid, uid, ret == -ESRCH ? EIO : -ret);
	if (s)
		session_put(s);
	return ret;
}

/* The RELEASE of any handle H, at the kernel's RELEASE or at the unmount
 * (handles_shutdown()): a drop's is carried out first. Frees H. */
void release_handle(struct handle *h)
{
	if (h->drop.d)
		carry_out(h->drop.d, drop_release(&h->drop), h->fd);
	handle_free(h);
}

void abandon_drop(struct handle *h)
{
	carry_out(h->drop.d, drop_abandon(&h->drop), h->fd);
	handle_free(h);
}

/* ---- linger=SECONDS (R2) ----
 * A closed drop stays visible to its session for that long, so local tools
 * that work on a name after closing it (rsync sets times on its temporary
 * file and renames it) find it; publication waits until then. Its close is
 * durable and acknowledged (staged a.*: recovery delivers it). */

static void publish_due(bool all)
{
	struct drop *d;

	while ((d = drop_next_due(all)) != NULL) {
		carry_out(d, DROP_PUBLISH, -1);
		drop_put(d);
	}
}

static bool publish_lingered(void)
{
	publish_due(false);
	return true;
}

/* A tenth of a second is the promised precision. */
static struct ticker linger = { .period_ms = 100, .job = publish_lingered };

int linger_start(void)
{
	return fs.cfg.linger == 0 ? 0 : ticker_start(&linger);
}

void linger_stop(void)
{
	if (!linger.started)
		return;
	ticker_stop(&linger);
	/* Unmounting: nobody can reopen them now. */
	publish_due(true);
}
