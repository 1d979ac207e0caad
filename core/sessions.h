/* Sessions (DESIGN §3): one per requesting process (thread group), found
 * from the request's thread id, ended when the process exits. A session
 * owns its drops: the files it created and has not yet closed, which form
 * its private namespace (R2).
 *
 * Locking: one mutex (session_lock) protects the session table, the thread
 * cache, every session's drop list and the fields of struct drop marked
 * [L]. It is never held across a system call that touches a disk. */
#ifndef INBOXFS_SESSIONS_H
#define INBOXFS_SESSIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct session;

/* A client's file between its create and its publication. */
struct drop {
	struct session *owner;		/* holds a reference */
	uint64_t parent;		/* [L] directory it will be published in (FUSE node id) */
	char *name;			/* [L] the name it was asked for, then renamed to */
	char stage_name[40];		/* its name in the staging directory */
	uint64_t ino;			/* backing inode number, fixed for life */
	void *node;			/* the filesystem's node for it */
	uid_t uid;			/* who made it, for the log */
	pid_t pid;
	unsigned nopen;			/* [L] open handles */
	unsigned nlive;			/* [L] open handles not yet closed by their writer */
	bool publishing;		/* [L] a close is moving it into the inbox */
	bool acked;			/* [L] close acknowledged, not yet published: staged as a.* */
	uint64_t linger_until;		/* [L] closed, visible to its session until then (ms) */
	bool lingering;			/* [L] on the linger list */
	struct drop *linger_next;	/* [L] */
	bool visible;			/* [L] in the owner's namespace */
	bool written;			/* [L] data or size changed since create */
	bool unlinked;			/* [L] deleted by its owner: never published */
	bool published;			/* [L] in the inbox now */
	bool failed;			/* [L] close failed: quarantine, never publish */
	int error;			/* [L] why, for the writer's close (an errno) */
	struct drop *next;		/* [L] owner's list */
};

struct session_stats {
	unsigned alive;
	uint64_t started, ended;
};

/* Start the table and its reaper thread. ON_END, if set, is called (without
 * the lock) with each session whose process exited. */
int sessions_init(void (*on_end)(struct session *));
void sessions_shutdown(void);

/* The session of thread TID, created on first use; a reference the caller
 * must drop with session_put(). -ESRCH if the thread is gone. */
int session_get(pid_t tid, struct session **out);
void session_put(struct session *s);
pid_t session_pid(const struct session *s);
/* False once S's process has exited (even before the reaper noticed). */
bool session_alive(struct session *s);
uint64_t session_serial(const struct session *s);
void session_stats(struct session_stats *out);

void session_lock(void);
void session_unlock(void);

/* Namespace operations; call with session_lock held. */
struct drop *session_find_drop(struct session *s, uint64_t parent, const char *name);
void session_add_drop(struct session *s, struct drop *d);	/* d->owner = s (a reference), visible */
void session_hide_drop(struct drop *d);				/* leaves the namespace */
/* Iterate the visible drops of S in PARENT: pass NULL first. */
struct drop *session_next_drop(struct session *s, uint64_t parent, struct drop *prev);

/* Allocate a drop (owner unset) and free one that has left its namespace;
 * drop_free() takes the session lock, so call it without. */
struct drop *drop_new(const char *name, uint64_t parent);
void drop_free(struct drop *d);

/* Read the thread group of TID from /proc. */
int tid_to_tgid(pid_t tid, pid_t *tgid);

/* True if thread TID is exiting because of a signal: its files are being
 * closed by the kernel, not by the program (a dead writer, R6). */
bool task_killed(pid_t tid);

/* A session that is an SMB server process (smbd serves one SMB connection
 * per process) is tied to that connection: when it drops mid-copy, smbd
 * closes the open files itself, exactly as for a client's CLOSE, and only
 * the connection tells the two apart. The first call looks for the
 * process's connection (peer_watch(): smbd processes only, by socket inode,
 * holding nothing of it); later calls return true once that connection is
 * no longer established. False for any other session. (Per session until
 * the drop's lifecycle module calls peer_watch() per drop.) */
bool session_connection_lost(struct session *s);

#endif
