/* A client drop's whole life (R2, R4–R6) as one state machine: what each
 * event does in each state, and what the filesystem must carry out. fs/
 * reports events and does the I/O; it keeps no state of a drop itself.
 *
 * States
 *   OPEN       staged as d.*, being written; visible to its session under
 *              the name it asked for.
 *   CLOSING    its writer's last close (or linger expiry) is making it
 *              durable and delivering it; nothing else may touch it.
 *   LINGERING  (linger > 0) closed and acknowledged, staged as a.*, still
 *              visible to its session until its time is up; read-only.
 *   PUBLISHED  in the inbox: the consumer's. Handles may stay open; nothing
 *              done through them changes the message.
 *   FAILED     never delivered: its writer died, a write or its close
 *              failed, or no writer ever closed it. Quarantined at its last
 *              release.
 *   UNLINKED   deleted by its owner: discarded at its last release.
 *
 * Events (state -> next state: action for fs/)
 *   create                        -> OPEN
 *   open by its session     OPEN  -> OPEN (one more writer's handle)
 *                      LINGERING  -> LINGERING read-only; for writing EACCES
 *   change begins: write, truncate, fallocate, setattr, rename
 *                           OPEN  -> OPEN, in flight until it ends
 *                      LINGERING  -> rename, mode, owner, times; else EBADF
 *                         others  -> EBADF
 *   change failed (a write)  OPEN -> FAILED
 *   close by its writer, not the last of its handles: no change
 *   close of a drop its writer still holds on another descriptor (a
 *     shell's redirections duplicate and close descriptors): no change
 *   close by another process while its writer lives: no change
 *   its writer's exit before anything was written (no close(2): nobody
 *     sees its answer): no change; whoever holds it on (a child it was
 *     handed to) writes it, or it is published at the last release
 *   last close by its writer OPEN -> CLOSING: PUBLISH (linger 0) or ACK,
 *                                    once changes in flight have ended
 *     ... by a killed writer, on a lost connection, or when finding that
 *     out failed               OPEN -> FAILED; the close fails
 *   acknowledged          CLOSING -> LINGERING until now + linger
 *   ack failed            CLOSING -> FAILED; the close fails
 *   published             CLOSING -> PUBLISHED; the close succeeds
 *   publication failed    CLOSING -> FAILED, the close fails; or, when
 *                                    already acknowledged, LINGERING
 *                                    (hidden) to be tried again
 *     (for a close, fs/ also fails a publication or an ack whose answer
 *     can no longer reach the writer, drop_reachable() after the fsync:
 *     no new event)
 *   linger time up, no handle  LINGERING -> CLOSING: PUBLISH
 *   unlink by its session OPEN, LINGERING -> UNLINKED
 *   last release             OPEN -> CLOSING: PUBLISH if its writer exited
 *                                    before writing, else
 *                            OPEN -> FAILED: QUARANTINE (never closed)
 *                          FAILED -> QUARANTINE
 *                        UNLINKED -> DISCARD
 *                       PUBLISHED -> FREE
 *                 LINGERING, due  -> CLOSING: PUBLISH
 *   its session ends      hidden from the namespace; a close by whoever
 *                         holds it on counts as its writer's
 *   daemon restart        recovery (staging.h): a.* delivered, d.* aside
 *
 * A close is one call, drop_close(): the facts it turns on come from the
 * probes of drop_config, each asked at most once, without drop_lock, and
 * only when the outcome depends on it (never for a drop no longer OPEN,
 * nor for a closer that is not its writer); the decision is made on the
 * drop as it is once they are in (a probe that cannot tell fails the
 * close):
 *   task_state      every close of its writer's (tid known): killed ->
 *                   FAILED, exiting, running
 *   held_elsewhere  what would be its writer's last close: held -> no
 *                   change. Not asked for an SMB drop (its client's CLOSE
 *                   is the last: smbd never duplicates the descriptor of
 *                   a client's open); an SMB server closing as another
 *                   uid than its writer's (smbd's own teardown, not its
 *                   client's CLOSE) -> FAILED
 *   peer_lost       an SMB drop's close that does not deliver it: lost
 *                   -> FAILED. One that delivers it asks it later, with
 *                   task_doomed, through drop_reachable(): after the
 *                   fsync, just before the rename or the ack, the last
 *                   moment the answer can be withheld
 *
 * Once a close is acknowledged, nothing but publication (or recovery) can
 * happen to the drop: no write, truncate or failure reaches it.
 *
 * Locking: one mutex, drop_lock (drop.c), protects every field marked [L]
 * and each session's drop list; it is the first of the lock order (drop.c,
 * beside it). Fields marked [L*] change, from CLOSING on, only by the
 * closer (changes in flight have ended, none begins), which reads them
 * without the lock then (fs/drops.c). No function here blocks on I/O
 * with drop_lock held (drop_close() lets it go while a probe reads
 * /proc); drop_close() and drop_next_due() wait (on a condition, lock
 * released) for changes in flight to end. References: every pointer
 * returned here comes with one (drop_put() returns it); a handle holds
 * one, and so does the lifecycle itself until its finishing action is
 * done. */
#ifndef INBOXFS_DROP_H
#define INBOXFS_DROP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "peer.h"
#include "staging.h"

struct session;

enum drop_state {
	DROP_OPEN,
	DROP_CLOSING,
	DROP_LINGERING,
	DROP_PUBLISHED,
	DROP_FAILED,
	DROP_UNLINKED,
};

/* What fs/ must do next for a drop. */
enum drop_action {
	DROP_NOTHING,
	DROP_ACK,	/* make it durable, stage as a.*, then drop_acked() */
	DROP_PUBLISH,	/* make it durable, move it in, then drop_published() */
	DROP_QUARANTINE,	/* move it to incomplete/, then drop_finished() */
	DROP_DISCARD,	/* remove the staged file, then drop_finished() */
	DROP_FREE,	/* nothing on disk left to do: drop_finished() */
};

enum drop_change {
	DROP_CHANGE_DATA,	/* write, truncate, fallocate */
	DROP_CHANGE_META,	/* mode, owner, times, rename */
};

struct drop {
	/* Fixed once the drop is started. */
	struct session *owner;		/* holds a reference */
	uint64_t ino;			/* backing inode number */
	void *node;			/* fs/'s node for it */
	uid_t uid;			/* who made it, for the log */
	pid_t pid;
	struct peer peer;		/* the SMB connection it came over, if any */

	/* Its staged name: changed only by its closer (CLOSING). */
	char stage_name[STAGE_NAME_MAX];

	enum drop_state state;		/* [L] */
	uint64_t parent;		/* [L*] directory it goes to (FUSE node id) */
	char *name;			/* [L*] the name it was asked for, or renamed to */
	unsigned refs;			/* [L] */
	unsigned nopen;			/* [L] open handles */
	unsigned nlive;			/* [L] writer's handles not yet closed */
	unsigned inflight;		/* [L] changes under way */
	bool visible;			/* [L] in its session's namespace */
	bool written;			/* [L] data or size changed since create */
	bool acked;			/* [L] a close was acknowledged (staged a.*) */
	bool orphaned;			/* [L] its writer exited before writing */
	int error;			/* [L*] why it failed (an errno) */
	uint64_t due;			/* [L] LINGERING: publish at (ms) */
	struct drop *next;		/* [L] its session's list */
	struct drop *due_next;		/* [L] the lingering list */
};

/* One open file of a drop; fs/ embeds it in its handle. */
struct drop_handle {
	struct drop *d;			/* a reference */
	bool live;			/* [L] a writer's handle, not yet closed */
};

struct drop_config {
	uint64_t linger_ms;		/* 0: publish at the writer's close */
	unsigned max_drops;		/* per session; 0: no cap */
	uint64_t (*now_ms)(void);	/* a monotonic clock */
	void (*on_free)(struct drop *d);	/* fs/ lets go of d->node */
	/* The probes: what a close must know that only the system can tell
	 * (R6). The daemon answers from /proc and the kernel (proc.h,
	 * peer.h); a unit test answers as it likes. All are required, and
	 * called without drop_lock. */
	int (*task_state)(pid_t tid);	/* enum task_state, or -errno */
	int (*task_doomed)(pid_t tid);	/* a fatal signal pending: 1, 0, -errno */
	bool (*peer_lost)(const struct peer *p);	/* an SMB connection's end */
	/* Does process PID hold D open on another descriptor (not the one
	 * being closed)? 1, 0 or -errno. */
	int (*held_elsewhere)(pid_t pid, const struct drop *d);
};

void drop_init(const struct drop_config *cfg);

/* A new drop of session S for NAME in directory PARENT, not yet visible,
 * with a reference: -EMFILE when S holds max_drops already or the
 * descriptor budget has no room for its pidfd (session_hold()). The caller
 * stages it, sets ino, node, uid, pid and stage_name and calls
 * drop_start(); then, or to give up, drop_put(). */
int drop_new(struct session *s, const char *name, uint64_t parent, struct drop **out);
/* Make D visible and OPEN with its first handle H. -EEXIST if its session
 * took the name meanwhile (D is then to be discarded by the caller). */
int drop_start(struct drop *d, struct drop_handle *h);

/* The visible drop of S called NAME in PARENT, or the one whose node is
 * NODE; NULL if none. With a reference. */
struct drop *drop_find(struct session *s, uint64_t parent, const char *name);
struct drop *drop_find_node(struct session *s, const void *node);
/* Call FN for each visible drop of S in PARENT, with drop_lock held. */
int drop_list(struct session *s, uint64_t parent,
	      int (*fn)(const struct drop *d, void *arg), void *arg);

void drop_ref(struct drop *d);
void drop_put(struct drop *d);

/* Another handle H on D, opened with FLAGS (open(2)'s). */
int drop_open(struct drop *d, struct drop_handle *h, int flags);
/* Take back a handle the kernel never got. */
enum drop_action drop_abandon(struct drop_handle *h);

/* A change through H (or by name, H's drop D) begins: 0, or -EBADF when
 * the drop may not change any more. Every begin that returned 0 is ended
 * by drop_change_end(); ERROR (an errno, or 0) fails the drop. True when
 * this end failed it (once per drop: the caller counts it as an error). */
int drop_change_begin(struct drop *d, enum drop_change what);
bool drop_change_end(struct drop *d, enum drop_change what, int error);

/* Rename D (a change in flight) to NAME in PARENT: -EEXIST when its
 * session holds another drop there. *OLD gets the directory it was in. */
int drop_rename(struct drop *d, uint64_t parent, const char *name, uint64_t *old);
/* Delete D from its session's namespace; never published. -ENOENT if it
 * left the namespace meanwhile. */
int drop_unlink(struct drop *d, enum drop_action *act);

/* A close of a drop's handle (a FLUSH), and who makes it. */
struct drop_closer {
	struct session *session;	/* NULL: a closer that cannot be placed */
	int unplaced;		/* why not (an errno), when SESSION is NULL */
	pid_t tid;		/* its thread; 0: the daemon's own close, nothing to ask */
	uid_t uid;		/* its fsuid */
	bool exiting;		/* set by drop_close(): its process is exiting
				 * (no close(2)), nobody waits for the answer */
};
/* The close of H by C, one call: the lifecycle asks its probes what it
 * needs to know (drop_config), then decides. Returns the close's answer
 * (0 or -errno) when *ACT is DROP_NOTHING; else the closer carries out
 * *ACT and the answer comes from there. */
int drop_close(struct drop_handle *h, struct drop_closer *c, enum drop_action *act);

/* After D's fsync, just before the step that delivers it (the rename, or
 * the a.* ack), for a close whose answer waits for it (TID: the thread
 * that closed, 0 if none waits): can the answer still reach the writer?
 * 0; -EIO when its thread was killed meanwhile or its SMB connection lost
 * (logged: the drop is not to be delivered); another -errno when that
 * cannot be told. */
int drop_reachable(const struct drop *d, pid_t tid);

/* The outcome of DROP_ACK and DROP_PUBLISH (0 or -errno): the next action,
 * and in *ANSWER the close's answer. */
enum drop_action drop_acked(struct drop *d, int result, int *answer);
enum drop_action drop_published(struct drop *d, int result, int *answer);

/* H's file was released: the next action. */
enum drop_action drop_release(struct drop_handle *h);

/* A lingering drop that is due (every one when ALL), moved to CLOSING for
 * DROP_PUBLISH, with a reference; NULL when none. */
struct drop *drop_next_due(bool all);

/* Started drops being written (OPEN) or made durable and delivered
 * (CLOSING): what a stop's drain waits for. */
unsigned drop_unanswered(void);

/* The finishing action is done: the lifecycle lets go of D. */
void drop_finished(struct drop *d);

/* Its session ended: its drops leave the namespace. */
void drop_session_ended(struct session *s);

const char *drop_state_name(enum drop_state s);

#endif
