/* fs/: the FUSE low-level operations over core/. Start reading here.
 *
 * Layers (each file calls only those above it in this list):
 *   transport/   how requests arrive and replies leave (transport.h):
 *                /dev/fuse or io_uring through libfuse 3.14's custom I/O,
 *                KILLPRIV_V2, passthrough for observers; a backport, one
 *                folder to delete once libfuse 3.18 is the platform's
 *   setid.c      set-ID bits cleared where the kernel would clear them
 *   inode.c      the inode table: FUSE node ids, backing inodes, file handles
 *   handles.c    open files (fi->fh) within the descriptor budget (R12)
 *   statsfile.c  the counters as a read-only file at the root: a wrapper
 *                around the operations table (ops.c's), built on request.c
 *   request.c    who is asking, entry replies and what the kernel may cache
 *   ticker.c     a thread that does one job every period (three use it)
 *   drops.c      what a drop's lifecycle (core/drop.h) decides, carried out:
 *                closes, releases, publication, the linger thread
 *   syncpool.c   the workers that handle and answer requests which wait
 *                on the disk (durable closes, fsync), off the request threads
 *   recovery.c   dead instances' staging areas: at start, then taken
 *                over by a thread of its own every second while serving
 *   client.c     a client session's private view (R1, R2, R7, R8), as
 *                core/view.h decides it
 *   observer.c   the observers' view, in which nothing is clobbered (R3:
 *                core/noclobber.h and core/view.h decide)
 *   nodes.c, files.c, dirs.c   the handlers: each finds out who is asking,
 *                hands the request to a view, and replies exactly once
 *   ops.c        the operations table and INIT
 *   covered.c    the directory under the mount, watched while serving
 *   stop.c       the stop on SIGTERM or SIGINT: open drops drained, then
 *                the session loop ended
 *   main.c       options, start-up checks, recovery, the session loop
 *
 * Locks: three nest, in the order written beside the first of them
 * (core/drop.c: drop_lock, the session table's, the inode table's); every
 * other is a leaf, marked so where it is defined.
 * Threads: libfuse's (or transport/uring.c's ring threads) fetch and
 * handle requests; syncpool.c's workers handle and answer the ones that
 * wait on the disk; the linger thread publishes; core/sessions.c's watches
 * sessions; covered.c's watches the directory under the mount;
 * recovery.c's takes over dead instances' staging areas; stop.c's drains
 * at a stop and then ends the session loop.
 * A drop used after drop_lock is released is held by a reference
 * (drop_ref()/drop_put(), or its handle's). A handle is the kernel's from
 * its open's reply to its RELEASE, which frees it; the kernel sends no
 * request on a handle after its RELEASE. */
#ifndef INBOXFS_FS_H
#define INBOXFS_FS_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

#include <fuse_lowlevel.h>

#include "drop.h"
#include "inode.h"
#include "options.h"
#include "sessions.h"
#include "staging.h"
#include "stats.h"

struct inboxfs {
	struct inboxfs_config cfg;
	struct staging staging;
	uint64_t staging_ino;		/* hidden from every view */
	uint64_t staging_parent_ino;	/* the directory it is in (0: not known) */
	uint64_t other_staging_ino;	/* (atomic) INBOX/.inboxfs under staging=, hidden too */
	struct fuse_session *se;
	const char *mountpoint;		/* resolved, as processes name their files */
	int mnt_id;			/* the mount's id (0: not known) */
};

extern struct inboxfs fs;

/* How far the kernel reads ahead (op_init(), and the mount's bdi). */
#define READAHEAD_BYTES (1024 * 1024)

/* ---- handles.c ---- */

/* An open file: fi->fh points to one. */
struct handle {
	int fd;
	struct node *node;
	struct drop_handle drop;	/* .d set on a client's drop */
	struct session *budget;		/* counted against (NULL: an observer) */
	struct handle *prev, *next;	/* handles.c's list of them all */
};

static inline struct handle *handle_of(struct fuse_file_info *fi)
{
	return (struct handle *)(uintptr_t)fi->fh;
}

/* A new handle within the descriptor budget, counted against session S
 * (NULL: an observer's); NULL past it (EMFILE). */
struct handle *handle_new(struct session *s);
void handle_free(struct handle *h);	/* closes its fd */
/* A new observer's handle of N with descriptor FD, as FI's: 0 or -EMFILE. */
int handle_attach(struct fuse_file_info *fi, struct node *n, int fd);
/* Unmounted: let go of the handles whose RELEASE never came, each by
 * RELEASE (drops.c's release_handle(), which frees it). */
void handles_shutdown(void (*release)(struct handle *h));

/* ---- statsfile.c: the counters, a read-only file at the root (observers) ---- */

/* Its name, STATS_FILE, is core/stats.h's: inboxfs-quarantine keeps it free too. */
#define STATS_INO ((uint64_t)-2)	/* beyond any backing inode number */
void statsfile_init(void);
/* OPS wrapped: the table to serve, which answers observers' requests
 * about the stats file and hands every other to OPS. */
const struct fuse_lowlevel_ops *statsfile_wrap(const struct fuse_lowlevel_ops *ops);

/* ---- request.c ---- */

/* Who sent a request: an observer, or a client with its session. */
struct who {
	bool observer;
	uid_t uid;
	gid_t gid;
	pid_t pid;
	struct session *s;
};

/* 0 or -errno, which the handler replies. who_put() puts what who_get()
 * took: nothing after it failed, nor on a W of WHO_NONE. */
#define WHO_NONE { .s = NULL }
int who_get(fuse_req_t req, struct who *w);
void who_put(struct who *w);

/* May W change a directory's attributes (R7, core/view.h)? */
bool may_change_dir(const struct who *w);
/* True if INO is inboxfs's own (its staging) and no view shows it. */
bool is_hidden_ino(uint64_t ino);
/* Give the new object at FD to the requester. */
int own_new(int fd, const struct who *w, const struct node *parent);
/* Fill an entry reply for N with attributes ST and what the kernel may
 * cache of them (core/view.h). */
double attr_timeout(struct node *n);
void fill_entry(struct fuse_entry_param *e, struct node *n, const struct stat *st);

/* Does a failed write or size change with this errno leave the file other
 * than its writer meant it (a drop that is then never delivered)? */
static inline bool loses_data(int err)
{
	return err == ENOSPC || err == EDQUOT || err == EIO || err == EFBIG;
}

/* ---- drops.c ---- */

/* Carry out ACT, a decision of D's lifecycle (FD: a descriptor of its
 * staged file, or -1). The close's answer. */
int carry_out(struct drop *d, enum drop_action act, int fd);
/* A close (a FLUSH, answered by the caller with what this returns) of H
 * by thread TID, with the caller's fsuid UID (the kernel's FLUSH carries
 * it). */
int flush_drop(struct handle *h, pid_t tid, uid_t uid);
int close_drop(struct handle *h, struct session *s);	/* a mknod's close */
/* The RELEASE of any handle: a drop's carried out first. Frees H. */
void release_handle(struct handle *h);
void abandon_drop(struct handle *h);	/* a handle the kernel did not take */
void forget_drop_node(struct drop *d);	/* drop_config.on_free */
int writer_holds(pid_t pid, const struct drop *d);	/* drop_config.held_elsewhere */
/* Closed drops kept visible to their session (linger=). */
int linger_start(void);
void linger_stop(void);

/* ---- ticker.c: a thread that runs JOB every PERIOD_MS ---- */

struct ticker {
	unsigned period_ms;
	bool wait_first;		/* a period before the first run */
	bool (*job)(void);		/* false: the thread ends */
	/* ticker.c's */
	/* A leaf: stopping. Released while the job runs (the take-over's
	 * holds no lock while it recovers: each area's own lock, a file's,
	 * keeps instances apart). */
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stopping, started;
	pthread_t thread;
};

/* 0 or -errno. The thread blocks the stop signals. */
int ticker_start(struct ticker *t);
/* Stop the thread, after a job under way. */
void ticker_stop(struct ticker *t);

/* ---- covered.c ---- */

/* Watch COVERED (a descriptor of the mountpoint opened before the mount;
 * -1: nothing to watch) and deliver into the inbox what reaches it while
 * serving. covered_stop() ends the watch; the caller closes COVERED. */
int covered_start(int covered);
void covered_stop(void);

/* ---- syncpool.c ---- */

/* A job: handle REQ (on open file H: a struct handle, or dirs.c's own,
 * with ARG) and answer it. */
typedef void syncpool_fn(fuse_req_t req, void *h, int arg);
void syncpool_start(void);	/* logs if it cannot start every worker */
/* Have a worker run FN(REQ, H, ARG), which answers REQ: true; false if
 * no worker can (the caller runs it). */
bool syncpool_defer(fuse_req_t req, syncpool_fn *fn, void *h, int arg);
/* Run what is queued, then stop the workers (before transport_stop()). */
void syncpool_stop(void);

/* ---- recovery.c ---- */

/* Before serving: every area whose instance is gone, and the old layout. */
void recovery_at_start(int inbox_fd);
/* While serving: a thread that takes over a dead instance's area as soon
 * as its lock is free (core's recover_gone(), every second). */
int takeover_start(int inbox_fd);
void takeover_stop(void);
/* Did the thread find this instance's own area no longer its own (and
 * stop the daemon)? */
bool takeover_lost_area(void);

/* ---- client.c: a client session's private view ---- */

void client_lookup(fuse_req_t req, struct who *w, struct node *parent, const char *name);
/* The entry a client sees for NAME in DIR, with a lookup reference taken. */
int client_entry(struct who *w, struct node *dir, const char *name, struct fuse_entry_param *e);
void client_create(fuse_req_t req, struct who *w, struct node *parent, const char *name,
		   mode_t mode, struct fuse_file_info *fi);
void client_mknod(fuse_req_t req, struct who *w, struct node *parent, const char *name,
		  mode_t mode);
void client_open(fuse_req_t req, struct who *w, struct node *n, struct fuse_file_info *fi);
/* An unlink or (FLAGS AT_REMOVEDIR) an rmdir. */
void client_remove(fuse_req_t req, struct who *w, struct node *parent, const char *name,
		   int flags);
void client_rename(fuse_req_t req, struct who *w, struct node *parent, const char *name,
		   struct node *newparent, const char *newname, unsigned flags);
/* May client W touch node N at all (a directory, or its own open drop)? */
bool client_may_use(const struct who *w, const struct node *n);
/* May client W use the open file FI (a handle of its own drop)? */
bool client_holds(const struct who *w, struct fuse_file_info *fi);
/* May W (an observer, or a client) act on N: 0 or -ENOENT. */
int may_use(const struct who *w, const struct node *n);
/* A client's directory listing, taken at opendir: the subdirectories
 * everyone sees and the session's own open drops there. */
struct snapent {
	char *name;
	ino_t ino;
	unsigned char type;	/* DT_* */
};
struct dirsnap {
	size_t n, cap;
	struct snapent *e;
};
void dirsnap_free(struct dirsnap *snap);
int client_snapshot(struct who *w, struct node *dir, struct dirsnap **out);

/* ---- observer.c: the observers' view ---- */

void observer_lookup(fuse_req_t req, struct node *dir, const char *name);
void observer_open(fuse_req_t req, struct who *w, struct node *n, struct fuse_file_info *fi);
void observer_create(fuse_req_t req, struct who *w, struct node *dir, const char *name,
		     mode_t mode, struct fuse_file_info *fi);
/* mknod, mkdir, symlink (LINK set) of NAME in DIR, owned by W. */
void observer_make(fuse_req_t req, struct who *w, struct node *dir, const char *name,
		   mode_t mode, dev_t rdev, const char *link);
void observer_link(fuse_req_t req, struct node *n, struct node *dir, const char *newname);
void observer_remove(fuse_req_t req, struct node *dir, const char *name, int flags);
void observer_rename(fuse_req_t req, struct who *w, struct node *dir, const char *name,
		     struct node *newdir, const char *newname, unsigned flags);

/* ---- stop.c: the stop on SIGTERM or SIGINT ---- */

/* Serving (after fuse_daemonize(), on the thread that runs the session
 * loop): from now on a stop signal drains open drops for up to DRAIN_S
 * seconds (0: none), then ends the loop; a second one ends it at once.
 * 0 or -errno (then libfuse's handlers stay: an immediate stop). */
int stop_start(unsigned drain_s);
/* A thread of the daemon's own (FN(ARG)) with the stop signals blocked, as
 * in libfuse's workers: they are for the session loop's thread. 0 or
 * -errno. */
int worker_create(pthread_t *thread, void *(*fn)(void *), void *arg);
/* Stop at once, without a drain (this instance may no longer publish). */
void stop_now(void);
/* The session loop returned: stop the stop's thread. Returns the signal
 * that asked for the stop, or 0. */
int stop_end(void);

/* ---- the handlers ---- */

extern const struct fuse_lowlevel_ops inboxfs_ops;

/* nodes.c */
void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets);
void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
		struct fuse_file_info *fi);
void op_readlink(fuse_req_t req, fuse_ino_t ino);
void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev);
void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name);
void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname);
void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
	       const char *newname, unsigned int flags);

/* files.c */
void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
	       struct fuse_file_info *fi);
void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off,
		  struct fuse_file_info *fi);
void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
		  struct fuse_file_info *fi);
void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi);

/* dirs.c */
void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi);
void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void op_statfs(fuse_req_t req, fuse_ino_t ino);
void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		 size_t size, int flags);
void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);
/* Unmounted: let go of the directories whose RELEASEDIR never came. */
void dirs_shutdown(void);

#endif
