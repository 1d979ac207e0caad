/* Everything inboxfs reads from /proc, in one place: a thread's process
 * and fsuid, a process's start time, whether a thread is exiting or about
 * to be killed, a process's executable, and a walk of its descriptors
 * (readlink only: nothing of a client's is ever opened or duplicated).
 * The parsers are pure (a buffer in, fields out) so that a unit test
 * checks them on text of its own.
 *
 * Every reader returns 0 (or a count, or 1/0 where it says so), -ESRCH
 * when the process or thread is gone, or another -errno when /proc cannot
 * be read (out of descriptors): that is never taken for "gone". */
#ifndef INBOXFS_PROC_H
#define INBOXFS_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- pure parsers ---- */

/* What a /proc stat file says that inboxfs uses. */
struct proc_stat {
	unsigned long flags;		/* field 9: PF_* */
	unsigned long long start;	/* field 22: start time, clock ticks since boot */
	int exit_code;			/* field 52 (kernels since 3.5) */
};
/* Parse the stat file's text BUF (past the command name, which may hold
 * spaces and ')'): 0 or -EIO. */
int proc_stat_parse(const char *buf, struct proc_stat *out);

/* What a /proc status file says that inboxfs uses. */
struct proc_status {
	pid_t tgid;
	uid_t fsuid;			/* the 4th Uid: */
	uint64_t sigpnd, shdpnd, sigblk, sigign, sigcgt;	/* bit N-1: signal N */
};
/* 0, or -EIO when a field is missing. */
int proc_status_parse(const char *buf, struct proc_status *out);
/* Will the thread whose status this is die before it returns from the
 * system call it is in? True when SIGKILL is pending (which the kernel
 * also makes of every other fatal signal it delivers, and of another
 * thread's exit), or a signal whose default action kills that it neither
 * blocks, ignores nor catches. */
bool proc_status_doomed(const struct proc_status *st);

/* Is the fdinfo text BUF an open file (not O_PATH) of inode INO on mount
 * MNT_ID (on any mount if 0)? 1, 0, or -ENOTSUP when it names no inode (a
 * kernel before 5.14: it cannot tell). */
int proc_fdinfo_is(const char *buf, int mnt_id, uint64_t ino);

/* The inode number of a descriptor's link text "socket:[N]": 1, or 0 when
 * it is no socket. */
int proc_socket_ino(const char *link, uint64_t *ino);

/* Undo, in place, the octal escapes /proc/PID/mountinfo writes for a
 * space, tab, newline and backslash in a path (\040 ...). */
void proc_unescape_octal(char *s);

/* ---- readers ---- */

/* The /proc file at PATH into BUF (SIZE bytes, NUL-terminated): 0, -ESRCH
 * if what it shows is gone (its thread exited, its descriptor closed,
 * before the open or between the open and the read), another -errno if
 * /proc cannot be read (never taken for "gone"). */
int proc_read(const char *path, char *buf, size_t size);

/* Thread TID's thread group, and the uid it acts as on files (its fsuid,
 * what FUSE reports as a request's uid; FSUID may be NULL). */
int proc_tid_status(pid_t tid, pid_t *tgid, uid_t *fsuid);
int tid_to_tgid(pid_t tid, pid_t *tgid);

/* The start time of process PID, and of thread TID if it is a thread of
 * TGID now (clock ticks since boot). */
int proc_start(pid_t pid, unsigned long long *start);
int proc_thread_start(pid_t tgid, pid_t tid, unsigned long long *start);

/* Is thread TID's process ending? A killed writer's files are closed by
 * the kernel, not by the program (a dead writer, R6); an exiting one's
 * close is no close(2) either: nobody sees its answer. */
enum task_state { TASK_RUNNING, TASK_EXITING, TASK_KILLED };
int task_state(pid_t tid);

/* proc_status_doomed() of thread TID: 1, 0 or -errno. */
int task_doomed(pid_t tid);

/* Is process PID's executable (/proc/PID/exe, which a process cannot
 * change as it can its comm) called NAME, an upgrade's " (deleted)" left
 * out? False if it cannot be read. */
bool proc_exe_is(pid_t pid, const char *name);

/* Call FN for each of process PID's descriptors with its number (as
 * text) and its link (LEN bytes, NUL-terminated; a long one is cut to
 * PATH_MAX - 1), until FN returns non-zero, which is returned; 0 once
 * every one was seen, or -errno (-ENOENT: PID is gone). */
int proc_fds(pid_t pid, int (*fn)(pid_t pid, const char *fd, const char *link, size_t len,
				  void *arg), void *arg);

/* Does process PID hold, on a descriptor, an open file (not O_PATH) of
 * inode INO on mount MNT_ID (any if 0) whose path begins with PREFIX (the
 * mount's)? 1, 0 (also when PID is gone), or -errno. */
int proc_holds_file(pid_t pid, const char *prefix, int mnt_id, uint64_t ino);

#endif
