/* A client drop's life: the state machine of drop.h. Every transition is
 * made here, under drop_lock; fs/ carries out the actions it returns. */
#include "drop.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proc.h"
#include "sessions.h"

/* An acknowledged drop whose publication failed is tried again this much
 * later (its directory full, an I/O error): it may never be lost. */
#define RETRY_MS 5000

/* The lock order, written here only: drop_lock, then the session table's
 * (core/sessions.c), then the inode table's (fs/inode.c: table_lock), each
 * taken only after those before it. Every other lock of the daemon is a
 * leaf, marked so where it is defined: taken with none of these held,
 * taking none while held. No lock is held across I/O but where its
 * definition says so. */
static pthread_mutex_t drop_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t drop_idle = PTHREAD_COND_INITIALIZER;	/* inflight reached 0 */
static struct drop_config cfg;
static struct drop *lingering;		/* [L] via due_next */
static bool shutting_down;		/* [L] drop_next_due(true) was called */
static unsigned unanswered;		/* [L] started drops OPEN or CLOSING */

static const char *const state_names[] = {
	[DROP_OPEN] = "open",
	[DROP_CLOSING] = "closing",
	[DROP_LINGERING] = "lingering",
	[DROP_PUBLISHED] = "published",
	[DROP_FAILED] = "failed",
	[DROP_UNLINKED] = "unlinked",
};

const char *drop_state_name(enum drop_state s)
{
	return s < sizeof(state_names) / sizeof(state_names[0]) ? state_names[s] : "?";
}

void drop_init(const struct drop_config *c)
{
	pthread_mutex_lock(&drop_lock);
	cfg = *c;
	lingering = NULL;
	shutting_down = false;
	pthread_mutex_unlock(&drop_lock);
}

/* ---- with drop_lock held ---- */

/* A started drop is unanswered while it is being written (OPEN) or made
 * durable and delivered (CLOSING): a stop's drain waits for these. */
static bool is_unanswered(enum drop_state st)
{
	return st == DROP_OPEN || st == DROP_CLOSING;
}

/* Every change of a started drop's state goes through here. */
static void set_state(struct drop *d, enum drop_state st)
{
	if (is_unanswered(d->state) && !is_unanswered(st))
		unanswered--;
	else if (!is_unanswered(d->state) && is_unanswered(st))
		unanswered++;
	d->state = st;
}

static void unlist(struct drop **head, struct drop *d, size_t link)
{
	for (struct drop **pp = head; *pp; pp = (struct drop **)((char *)*pp + link)) {
		if (*pp == d) {
			*pp = *(struct drop **)((char *)d + link);
			return;
		}
	}
}

static void linger_until(struct drop *d, uint64_t due)
{
	if (d->state != DROP_LINGERING) {
		d->due_next = lingering;
		lingering = d;
	}
	set_state(d, DROP_LINGERING);
	d->due = due;
}

static void leave_lingering(struct drop *d)
{
	if (d->state == DROP_LINGERING)
		unlist(&lingering, d, offsetof(struct drop, due_next));
}

static void fail(struct drop *d, int error)
{
	set_state(d, DROP_FAILED);
	if (d->error == 0)
		d->error = error ? error : EIO;
}

/* The next action once no handle is open. */
static enum drop_action when_unopened(struct drop *d)
{
	if (d->nopen > 0)
		return DROP_NOTHING;
	switch (d->state) {
	case DROP_FAILED:
		d->visible = false;
		return DROP_QUARANTINE;
	case DROP_UNLINKED:
		return DROP_DISCARD;
	case DROP_PUBLISHED:
		return DROP_FREE;
	case DROP_LINGERING:
		if (d->inflight == 0 && cfg.now_ms() >= d->due) {
			leave_lingering(d);
			set_state(d, DROP_CLOSING);
			d->visible = false;
			return DROP_PUBLISH;
		}
		return DROP_NOTHING;	/* the linger thread will */
	default:
		return DROP_NOTHING;	/* CLOSING: its closer finishes it */
	}
}

static void free_drop(struct drop *d)
{
	if (cfg.on_free)
		cfg.on_free(d);
	if (d->owner) {
		session_release(d->owner);
		session_put(d->owner);
	}
	free(d->name);
	free(d);
}

/* ---- creation and lookup ---- */

int drop_new(struct session *s, const char *name, uint64_t parent, struct drop **out)
{
	struct drop_list *list = session_drops(s);
	struct drop *d = calloc(1, sizeof(*d));
	int ret;

	if (d == NULL || (d->name = strdup(name)) == NULL) {
		free(d);
		return -ENOMEM;
	}
	/* A session holding drops is watched by a pidfd (its descriptor is
	 * its own, in the budget): its end then hides them at once. */
	ret = session_hold(s);
	if (ret < 0) {
		free(d->name);
		free(d);
		return ret;
	}
	d->parent = parent;
	d->state = DROP_OPEN;	/* counted from drop_start() */
	d->refs = 1;		/* the caller's */
	pthread_mutex_lock(&drop_lock);
	if (cfg.max_drops && list->count >= cfg.max_drops) {
		pthread_mutex_unlock(&drop_lock);
		session_release(s);
		free(d->name);
		free(d);
		return -EMFILE;
	}
	session_ref(s);
	d->owner = s;
	d->next = list->head;
	list->head = d;
	list->count++;
	pthread_mutex_unlock(&drop_lock);
	*out = d;
	return 0;
}

static struct drop *find_locked(struct session *s, uint64_t parent, const char *name)
{
	for (struct drop *d = session_drops(s)->head; d; d = d->next)
		if (d->visible && d->parent == parent && strcmp(d->name, name) == 0)
			return d;
	return NULL;
}

int drop_start(struct drop *d, struct drop_handle *h)
{
	int ret = 0;

	pthread_mutex_lock(&drop_lock);
	if (find_locked(d->owner, d->parent, d->name)) {
		ret = -EEXIST;
	} else {
		d->visible = session_alive(d->owner);
		d->nopen = d->nlive = 1;
		unanswered++;	/* OPEN since drop_new() */
		d->refs += 2;	/* the handle's, and the lifecycle's until drop_finished() */
		h->d = d;
		h->live = true;
	}
	pthread_mutex_unlock(&drop_lock);
	return ret;
}

struct drop *drop_find(struct session *s, uint64_t parent, const char *name)
{
	struct drop *d;

	pthread_mutex_lock(&drop_lock);
	d = find_locked(s, parent, name);
	if (d)
		d->refs++;
	pthread_mutex_unlock(&drop_lock);
	return d;
}

struct drop *drop_find_node(struct session *s, const void *node)
{
	struct drop *d;

	pthread_mutex_lock(&drop_lock);
	for (d = session_drops(s)->head; d; d = d->next)
		if (d->visible && d->node == node)
			break;
	if (d)
		d->refs++;
	pthread_mutex_unlock(&drop_lock);
	return d;
}

int drop_list(struct session *s, uint64_t parent, int (*fn)(const struct drop *d, void *arg),
	      void *arg)
{
	int ret = 0;

	pthread_mutex_lock(&drop_lock);
	for (struct drop *d = session_drops(s)->head; d && ret == 0; d = d->next)
		if (d->visible && d->parent == parent)
			ret = fn(d, arg);
	pthread_mutex_unlock(&drop_lock);
	return ret;
}

void drop_ref(struct drop *d)
{
	pthread_mutex_lock(&drop_lock);
	d->refs++;
	pthread_mutex_unlock(&drop_lock);
}

void drop_put(struct drop *d)
{
	bool last;

	pthread_mutex_lock(&drop_lock);
	last = --d->refs == 0;
	if (last) {
		struct drop_list *list = session_drops(d->owner);

		unlist(&list->head, d, offsetof(struct drop, next));
		list->count--;
	}
	pthread_mutex_unlock(&drop_lock);
	if (last)
		free_drop(d);
}

/* ---- handles ---- */

int drop_open(struct drop *d, struct drop_handle *h, int flags)
{
	bool writing = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
	int ret = 0;

	pthread_mutex_lock(&drop_lock);
	if (!d->visible) {
		ret = -ENOENT;
	} else if (d->state == DROP_OPEN) {
		d->nopen++;
		d->nlive++;
		if (flags & O_TRUNC)
			d->written = true;
		h->live = true;
	} else if (d->state == DROP_LINGERING && !writing) {
		d->nopen++;
		h->live = false;
	} else {
		ret = d->state == DROP_LINGERING ? -EACCES : -ENOENT;
	}
	if (ret == 0) {
		d->refs++;
		h->d = d;
	}
	pthread_mutex_unlock(&drop_lock);
	return ret;
}

/* Let go of H, the common part of release and abandon. */
static void handle_gone(struct drop_handle *h)
{
	struct drop *d = h->d;

	d->nopen--;
	if (h->live) {
		h->live = false;
		d->nlive--;
	}
	d->refs--;	/* the lifecycle's reference is still held */
}

enum drop_action drop_abandon(struct drop_handle *h)
{
	struct drop *d = h->d;
	enum drop_action act;

	pthread_mutex_lock(&drop_lock);
	bool was_live = h->live;
	handle_gone(h);
	/* Its only writer's handle never reached the client: nobody had it. */
	if (was_live && d->state == DROP_OPEN && d->nlive == 0) {
		set_state(d, DROP_UNLINKED);
		d->visible = false;
	}
	act = when_unopened(d);
	pthread_mutex_unlock(&drop_lock);
	return act;
}

enum drop_action drop_release(struct drop_handle *h)
{
	struct drop *d = h->d;
	enum drop_action act;

	pthread_mutex_lock(&drop_lock);
	handle_gone(h);
	if (d->state == DROP_OPEN && d->nlive == 0) {
		d->visible = false;
		if (d->orphaned) {
			/* Its writer exited before writing and nobody wrote
			 * since: an empty message, whole. */
			set_state(d, DROP_CLOSING);
			while (d->inflight > 0)
				pthread_cond_wait(&drop_idle, &drop_lock);
			pthread_mutex_unlock(&drop_lock);
			return DROP_PUBLISH;
		}
		/* Every writer's handle is gone and none was closed last: its
		 * writer never closed it (a descriptor lost in transit). */
		fail(d, EIO);
	}
	act = when_unopened(d);
	pthread_mutex_unlock(&drop_lock);
	return act;
}

/* ---- changes ---- */

int drop_change_begin(struct drop *d, enum drop_change what)
{
	int ret = 0;

	pthread_mutex_lock(&drop_lock);
	switch (d->state) {
	case DROP_OPEN:
	case DROP_UNLINKED:
		break;
	case DROP_LINGERING:
		if (what != DROP_CHANGE_META)
			ret = -EBADF;
		break;
	default:
		ret = -EBADF;	/* delivered, being delivered, or lost */
	}
	if (ret == 0)
		d->inflight++;
	pthread_mutex_unlock(&drop_lock);
	return ret;
}

bool drop_change_end(struct drop *d, enum drop_change what, int error)
{
	bool failed = false;

	pthread_mutex_lock(&drop_lock);
	if (error == 0 && what == DROP_CHANGE_DATA)
		d->written = true;
	/* A drop its writer could not write whole is never delivered. */
	if (error && d->state == DROP_OPEN) {
		fail(d, error);
		failed = true;
	}
	if (--d->inflight == 0)
		pthread_cond_broadcast(&drop_idle);
	pthread_mutex_unlock(&drop_lock);
	return failed;
}

int drop_rename(struct drop *d, uint64_t parent, const char *name, uint64_t *old)
{
	struct drop *other;
	char *copy = strdup(name);
	int ret = 0;

	if (copy == NULL)
		return -ENOMEM;
	pthread_mutex_lock(&drop_lock);
	other = find_locked(d->owner, parent, name);
	if (!d->visible)
		ret = -ENOENT;
	else if (other && other != d)
		ret = -EEXIST;	/* never over another drop either (R3) */
	if (ret == 0) {
		free(d->name);
		d->name = copy;
		*old = d->parent;
		d->parent = parent;
		copy = NULL;
	}
	pthread_mutex_unlock(&drop_lock);
	free(copy);
	return ret;
}

int drop_unlink(struct drop *d, enum drop_action *act)
{
	int ret = 0;

	*act = DROP_NOTHING;
	pthread_mutex_lock(&drop_lock);
	if (!d->visible || (d->state != DROP_OPEN && d->state != DROP_LINGERING)) {
		ret = -ENOENT;
	} else {
		leave_lingering(d);
		set_state(d, DROP_UNLINKED);
		d->visible = false;
		*act = when_unopened(d);
	}
	pthread_mutex_unlock(&drop_lock);
	return ret;
}

/* ---- closes ---- */

static bool counts_locked(struct drop *d, struct session *closer)
{
	/* Only its writer's close counts: a child that inherited the
	 * descriptor (`{ echo; /bin/echo; } > f`) closes its copy when it
	 * exits, while the writer goes on. Once the writer has gone, whoever
	 * holds it on is the writer. A closer that cannot be placed (NULL)
	 * may be the writer. */
	return closer == NULL || closer == d->owner || !session_alive(d->owner);
}

/* What a close found out about itself (drop_close()). */
struct facts {
	int error;		/* finding it out failed (an errno), or 0 */
	bool aborted;		/* its process was killed, its connection lost */
	bool exiting;		/* its process is exiting: no close(2) */
	bool held_elsewhere;	/* its writer holds the drop on another descriptor */
	bool asked_state, asked_held, asked_peer;
};

/* Is this last close of D, by an SMB server process with fsuid UID,
 * smbd's own teardown rather than its client's CLOSE? smbd serves a CLOSE
 * as the connection's user (the uid that created the drop), but a LOGOFF
 * or TREE_DISCONNECT, and the end of a connection, as root: it closes the
 * files its client left open itself, and the kernel's FLUSH carries the
 * closing thread's fsuid. */
static bool smb_teardown(const struct drop *d, uid_t uid)
{
	char client[64];

	if (!d->peer.smb || uid == d->uid)
		return false;
	log_warnx("close by the SMB server itself, not by its client's CLOSE (uid %u; the "
		  "drop's writer is uid %u: a LOGOFF, TREE_DISCONNECT or lost connection with "
		  "the file open): not delivered (client %s, pid %d)",
		  (unsigned)uid, (unsigned)d->uid, peer_format(&d->peer, client, sizeof(client)),
		  (int)d->pid);
	return true;
}

/* With drop_lock held: what the close of H does now, given F; the
 * answer, and in *ACT the action. */
static int decide_close(struct drop_handle *h, const struct facts *f, enum drop_action *act)
{
	struct drop *d = h->d;
	int ret = 0;

	if (d->state == DROP_OPEN) {
		if (f->error)
			fail(d, f->error);
		else if (f->aborted)
			fail(d, EIO);	/* a dead writer's drop is incomplete (R6) */
		else if (d->nlive == 1 && f->held_elsewhere)
			return 0;	/* not its writer's last close */
		else if (d->nlive == 1 && f->exiting && !d->written) {
			d->orphaned = true;
			return 0;	/* whoever holds it on writes it */
		}
	}
	h->live = false;
	d->nlive--;
	switch (d->state) {
	case DROP_OPEN:
		if (d->nlive > 0)
			break;
		set_state(d, DROP_CLOSING);
		if (cfg.linger_ms == 0)
			d->visible = false;	/* the name is free again from this close */
		while (d->inflight > 0)
			pthread_cond_wait(&drop_idle, &drop_lock);
		*act = cfg.linger_ms ? DROP_ACK : DROP_PUBLISH;
		break;
	case DROP_FAILED:
		if (d->nlive == 0)
			d->visible = false;
		ret = -d->error;	/* the writer learns its drop is lost */
		break;
	default:
		break;		/* UNLINKED: a deleted file's close */
	}
	return ret;
}

/* With drop_lock held: the probe the close of H by C still needs before
 * it can be decided, or PROBE_NONE. Each is asked once, lock released;
 * what they found is judged against the drop as it is when all are in.
 * Only an OPEN drop's close turns on them. */
enum probe { PROBE_NONE, PROBE_STATE, PROBE_HELD, PROBE_PEER };

static enum probe next_probe(const struct drop_handle *h, const struct drop_closer *c,
			     const struct facts *f)
{
	const struct drop *d = h->d;
	bool last = d->state == DROP_OPEN && d->nlive == 1;

	if (c->tid <= 0 || c->session == NULL || f->error || f->aborted || d->state != DROP_OPEN)
		return PROBE_NONE;
	if (!f->asked_state)
		return PROBE_STATE;
	/* Would this close be the writer's last? Then whether it holds the
	 * drop on another descriptor decides (a scan of its descriptors). */
	if (last && !f->asked_held)
		return PROBE_HELD;
	/* A connection lost fails the drop. A close that delivers it has
	 * that asked just before the delivery (drop_reachable(), after the
	 * fsync, whether or not anyone waits for the answer): asking here too
	 * would be a second sock_diag query to the same end. */
	if (!f->asked_peer && d->peer.smb &&
	    !(last && !f->held_elsewhere && !(f->exiting && !d->written)))
		return PROBE_PEER;
	return PROBE_NONE;
}

/* Ask probe P for the close of D by C (drop_lock not held). */
static void ask(enum probe p, const struct drop *d, const struct drop_closer *c,
		struct facts *f)
{
	char client[64];
	int ret;

	switch (p) {
	case PROBE_STATE:
		f->asked_state = true;
		ret = cfg.task_state(c->tid);
		if (ret < 0) {
			f->error = -ret;
			break;
		}
		/* A writer killed mid-copy has its files closed by the kernel,
		 * and smbd closes a dropped connection's files itself: neither
		 * close is an acknowledgement, the drop is incomplete (R6). */
		f->aborted = ret == TASK_KILLED;
		f->exiting = ret == TASK_EXITING;
		break;
	case PROBE_HELD:
		f->asked_held = true;
		if (smb_teardown(d, c->uid)) {
			f->aborted = true;
			break;
		}
		/* An SMB drop's writer is the client, and its CLOSE is its
		 * last close: smbd holds each open of its client's on one
		 * descriptor of its own and never duplicates it (nor would a
		 * duplicate of smbd's be the client's), so its descriptor
		 * table, the dearest probe, is not scanned. An impostor
		 * named smbd only ends its own drop at its first close. */
		if (d->peer.smb)
			break;
		ret = cfg.held_elsewhere(session_pid(c->session), d);
		if (ret < 0)
			f->error = -ret;
		else
			f->held_elsewhere = ret == 1;
		break;
	case PROBE_PEER:
		f->asked_peer = true;
		if (cfg.peer_lost(&d->peer)) {
			f->aborted = true;
			log_warnx("close after the connection of client %s was lost (pid %d): "
				  "not delivered", peer_format(&d->peer, client, sizeof(client)),
				  (int)d->pid);
		}
		break;
	case PROBE_NONE:
		break;
	}
}

int drop_close(struct drop_handle *h, struct drop_closer *c, enum drop_action *act)
{
	struct facts f = { .error = c->session ? 0 : c->unplaced };
	struct drop *d = h->d;
	enum probe p;
	int ret = 0;

	*act = DROP_NOTHING;
	c->exiting = false;
	pthread_mutex_lock(&drop_lock);
	for (;;) {
		if (!h->live || !counts_locked(d, c->session))
			goto out;
		p = next_probe(h, c, &f);
		if (p == PROBE_NONE)
			break;
		pthread_mutex_unlock(&drop_lock);
		ask(p, d, c, &f);
		pthread_mutex_lock(&drop_lock);
	}
	c->exiting = f.exiting;
	ret = decide_close(h, &f, act);
out:
	pthread_mutex_unlock(&drop_lock);
	return ret;
}

/* A durable close waits for the disk, for seconds on a busy one, and
 * what drop_close() found may no longer hold (R6):
 * - the closing thread was killed meanwhile: the kernel's FLUSH is forced,
 *   so it waits for this answer and dies without seeing it;
 * - an SMB server process's connection left ESTABLISHED (a client that
 *   gave up waiting for its CLOSE, a cable pulled): it sends the message
 *   again.
 * Those fail with -EIO, never -EINTR: on Linux the descriptor is gone
 * whatever close(2) returns, and code written for that takes EINTR from
 * close for done (Android's C library returns 0 for it), which would
 * swallow the failure. The drop is quarantined. A signal the writer
 * catches is no reason: the kernel sends an INTERRUPT, but a FLUSH is
 * forced, so its close still waits for this answer and returns it (and a
 * smbd told to reload its configuration would fail every close under
 * way). What happens after this look (during the rename and the
 * directory's sync, or before the answer reaches the writer) is the
 * window no design closes. */
int drop_reachable(const struct drop *d, pid_t tid)
{
	char q[1024], client[64];
	const char *why = NULL;
	int ret;

	if (tid > 0) {
		ret = cfg.task_doomed(tid);
		if (ret == -ESRCH)
			ret = 1;	/* gone: nobody to answer */
		if (ret < 0)
			return ret;	/* cannot tell: not acknowledged */
		if (ret == 1)
			why = "its writer was killed";
	}
	if (why == NULL && d->peer.smb && cfg.peer_lost(&d->peer))
		why = "the connection of its SMB client was lost";
	if (why == NULL)
		return 0;
	log_warnx("%s while its close waited for the disk: \"%s\" not delivered (client %s, "
		  "pid %d, uid %u)", why, log_name(d->name, q, sizeof(q)),
		  peer_format(&d->peer, client, sizeof(client)), (int)d->pid, (unsigned)d->uid);
	return -EIO;
}

enum drop_action drop_acked(struct drop *d, int result, int *answer)
{
	enum drop_action act = DROP_NOTHING;

	pthread_mutex_lock(&drop_lock);
	*answer = result;
	if (result < 0) {
		fail(d, -result);
		d->visible = false;
		act = when_unopened(d);
	} else {
		d->acked = true;
		linger_until(d, cfg.now_ms() + cfg.linger_ms);
	}
	pthread_mutex_unlock(&drop_lock);
	return act;
}

enum drop_action drop_published(struct drop *d, int result, int *answer)
{
	enum drop_action act;

	pthread_mutex_lock(&drop_lock);
	*answer = result;
	d->visible = false;
	if (result == 0) {
		set_state(d, DROP_PUBLISHED);
	} else if (d->acked) {
		/* Its close was acknowledged: it must still be delivered. Left
		 * staged as a.* at shutdown, recovery delivers it. */
		if (shutting_down) {
			set_state(d, DROP_PUBLISHED);	/* by the next start's recovery */
			act = d->nopen ? DROP_NOTHING : DROP_FREE;
			pthread_mutex_unlock(&drop_lock);
			return act;
		}
		linger_until(d, cfg.now_ms() + RETRY_MS);
	} else {
		fail(d, -result);
	}
	act = when_unopened(d);
	pthread_mutex_unlock(&drop_lock);
	return act;
}

struct drop *drop_next_due(bool all)
{
	uint64_t now = cfg.now_ms();
	struct drop *d;

	pthread_mutex_lock(&drop_lock);
	if (all)
		shutting_down = true;
	for (d = lingering; d; d = d->due_next)
		if (d->nopen == 0 && d->inflight == 0 && (all || now >= d->due))
			break;
	if (d) {
		leave_lingering(d);
		set_state(d, DROP_CLOSING);
		d->visible = false;
		d->refs++;
	}
	pthread_mutex_unlock(&drop_lock);
	return d;
}

unsigned drop_unanswered(void)
{
	unsigned n;

	pthread_mutex_lock(&drop_lock);
	n = unanswered;
	pthread_mutex_unlock(&drop_lock);
	return n;
}

void drop_finished(struct drop *d)
{
	drop_put(d);	/* the lifecycle's reference */
}

void drop_session_ended(struct session *s)
{
	pthread_mutex_lock(&drop_lock);
	for (struct drop *d = session_drops(s)->head; d; d = d->next)
		d->visible = false;
	pthread_mutex_unlock(&drop_lock);
}
