/* Sessions: one per requesting process (thread group, and its start time:
 * a reused pid is a new session) and uid it acts as, found from the
 * request's thread id and uid, ended when the process exits. One smbd
 * process serves one SMB connection, which may carry several SMB sessions
 * (users of one machine): where the share does not force one user, each
 * runs as its own uid and is a session of its own (R1 holds between them);
 * under a forced user they are one. A process is its sessions' writer
 * whatever uid it closes as (smbd closes files as root at a disconnect). A session
 * owns its drops (drop.h): the files it created and has not yet closed,
 * which form its private namespace (R2).
 *
 * Locking: one mutex protects the session table and the thread cache; it
 * is taken after drop.c's lock, never before, and never held across a
 * system call that touches a disk. */
#ifndef INBOXFS_SESSIONS_H
#define INBOXFS_SESSIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct session;

/* The drops a session made and that are not finished yet: drop.c's, under
 * its lock (drop.h). */
struct drop_list {
	struct drop *head;
	unsigned count;
};

struct session_stats {
	unsigned alive;
	uint64_t started, ended;
};

/* Start the table and its reaper thread. ON_END, if set, is called (without
 * the lock) with each session whose process exited. */
int sessions_init(void (*on_end)(struct session *));
void sessions_shutdown(void);

/* The session of thread TID acting as UID, created on first use; a
 * reference the caller must drop with session_put(). -ESRCH if the thread
 * is gone. session_get(): as the uid the thread acts as now (/proc). */
int session_get_as(pid_t tid, uid_t uid, struct session **out);
int session_get(pid_t tid, struct session **out);
void session_put(struct session *s);
pid_t session_pid(const struct session *s);
uid_t session_uid(const struct session *s);
/* Are A and B sessions of one process (under different uids, perhaps)? */
bool session_same_process(const struct session *a, const struct session *b);
/* False once S's process has exited (even before the reaper noticed). */
bool session_alive(struct session *s);
uint64_t session_serial(const struct session *s);
void session_stats(struct session_stats *out);

void session_ref(struct session *s);
struct drop_list *session_drops(struct session *s);

/* S is about to hold a drop, until session_release(): while it holds any
 * (and for two seconds after its last, so that a client dropping one
 * message after another opens it once), it keeps a pidfd, out of the
 * descriptor budget, so that its end is seen at once. An idle session
 * holds no descriptor and its end is found by a sweep of /proc. -EMFILE
 * past the budget, -ESRCH if its process is gone. */
int session_hold(struct session *s);
void session_release(struct session *s);

/* The descriptor budget (R12): LIMIT descriptors may be held on clients'
 * and observers' behalf (open files, sessions' pidfds; 0: no limit, the
 * default), the rest of the daemon's limit being its reserve for its own
 * work. The last POOL of them go only to a session's first two (its first
 * drop: its pidfd and its file), so that sessions holding many files never
 * make a session that holds none fail. */
void sessions_fd_budget(unsigned limit, unsigned pool);
/* One descriptor for S (NULL: an observer's), or -EMFILE. */
int session_fd_take(struct session *s);
void session_fd_give(struct session *s);
unsigned sessions_fds_used(void);

/* A session that is an SMB server process (smbd serves one SMB connection
 * per process) is tied to that connection: when it drops mid-copy, smbd
 * closes the open files itself, exactly as for a client's CLOSE, and only
 * the connection tells the two apart. This copies that connection into
 * *OUT (ino 0: none, any other session), looked for once per session
 * (peer_watch(): smbd processes only, by socket inode, holding nothing of
 * it). Each drop keeps it: peer_lost() at its close, and its client in
 * log lines. An SMB server process whose connection cannot be found (or
 * not looked for: /proc or the kernel would not tell) gets OUT->smb set
 * with ino 0, which counts as lost, and is looked for again at its next
 * drop: it is never taken for a local process. */
struct peer;
void session_peer(struct session *s, struct peer *out);

#endif
