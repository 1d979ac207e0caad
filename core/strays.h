/* Strays: what was written into the bare mountpoint while inboxfs was
 * down. Each file there was acknowledged to its writer by whatever served
 * the directory, and the mount would hide it: at start, before
 * mounting, it is delivered into the inbox, or the daemon refuses to serve. */
#ifndef INBOXFS_STRAYS_H
#define INBOXFS_STRAYS_H

#include "staging.h"

struct strays {
	unsigned delivered;	/* published into the inbox */
	unsigned renamed;	/* of those, under a unique name */
	unsigned repaired;	/* delivered by link() before a crash: name removed */
	unsigned failed;	/* deliveries that failed (logged) */
	unsigned refused;	/* what cannot be delivered without loss */
	/* The refused, for one line: `sub/x (a symlink), y (open for
	 * writing)`, cut short with "and N more". */
	char refusals[768];
};

/* Walk directory MNT_FD, never following a symlink, and with ST deliver
 * (without: only check) every regular file in it into INBOX_FD: a file in
 * MNT_FD/A/B goes to INBOX/A/B when that is a directory (reached without
 * symlinks, on INBOX's filesystem, not the staging directory), else to
 * the top of the inbox, as recovery does for a drop whose directory is
 * gone. Directories stay. Whatever cannot be delivered is counted and
 * named in S->refusals, and nothing is done to it: a symlink, FIFO,
 * socket or device, a file on another filesystem, with other links, or
 * open for writing, and INBOX or the staging directory met on the way;
 * a mountpoint in the staging directory is refused whole.
 * Each delivery is logged (info), each failure too (warning). Returns the
 * number refused. Call it before any thread starts: it ignores SIGIO
 * while it runs (stray_check()). */
unsigned strays_sweep(struct staging *st, int inbox_fd, int mnt_fd, struct strays *s);

#endif
