/* fs/: the FUSE low-level operations over core/. Start reading here.
 *
 * Each module is a .c file with a header of the same name, its face to
 * the others (clock.h is a header alone, transport/ a folder with one);
 * this header holds only what they all share (struct inboxfs). Modules,
 * each calling only those above it in this list:
 *   inode.c      the inode table: FUSE node ids, backing inodes, file handles
 *   transport/   how requests arrive and replies leave (transport.h):
 *                /dev/fuse or io_uring through libfuse 3.14's custom I/O,
 *                KILLPRIV_V2, passthrough for observers; a backport, one
 *                folder to delete once libfuse 3.18 is the platform's
 *   setid.c      set-ID bits cleared where the kernel would clear them
 *   clock.h      the monotonic clock
 *   handles.c    open files (fi->fh) within the descriptor budget (R12)
 *   request.c    who is asking, entry replies and what the kernel may cache
 *   stop.c       the stop on SIGTERM or SIGINT: open drops drained, then
 *                the session loop ended; the daemon's own threads
 *   ticker.c     a thread that does one job every period (three use it)
 *   syncpool.c   the workers that handle and answer requests which wait
 *                on the disk (durable closes, fsync), off the request threads
 *   recovery.c   dead instances' staging areas: at start, then taken
 *                over by a thread of its own every second while serving
 *   covered.c    the directory under the mount, watched while serving
 *   drops.c      what a drop's lifecycle (core/drop.h) decides, carried out:
 *                closes, releases, publication, the linger thread
 *   client.c     a client session's private view (R1, R2, R7, R8), as
 *                core/view.h decides it
 *   observer.c   the observers' view, in which nothing is clobbered (R3:
 *                core/noclobber.h and core/view.h decide)
 *   nodes.c, files.c, dirs.c   the handlers: each finds out who is asking,
 *                hands the request to a view, and replies exactly once
 *   ops.c        the operations table and INIT
 *   statsfile.c  the counters as a read-only file at the root: a wrapper
 *                around the operations table, which main.c serves
 *   cmdline.c    the command line: options, --help, --version
 *   startup.c    the checks before the mount (R11) and the mount table
 *   main.c       start-up, recovery, the mount, serving, the stop
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

#include <stdint.h>

#include <fuse_lowlevel.h>

#include "options.h"
#include "staging.h"

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

#endif
