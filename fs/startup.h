/* fs/startup.c: what main() checks and prepares before it mounts (R11:
 * refused with one line on stderr, nothing mounted), and the mount table
 * as it reads it. */
#ifndef INBOXFS_STARTUP_H
#define INBOXFS_STARTUP_H

#include <stdbool.h>
#include <sys/types.h>

#include "staging.h"

/* A stale mount at PATH left by a crashed daemon: unmounted. */
void clean_stale_mount(const char *path);
/* True if PATH is already the mountpoint of a live inboxfs. */
bool mounted_inboxfs(const char *path);
/* True if the topmost mount at REAL (a resolved path) is an inboxfs; its
 * device in *DEV and its id in *ID. */
bool topmost_inboxfs(const char *real, dev_t *dev, int *id);
/* INBOX or MOUNTPOINT (WHAT) at PATH opened as a directory: a descriptor,
 * or -1 with a line on stderr. */
int open_dir_arg(const char *what, const char *path);
/* Why the staging directory PATH cannot be (a sentence), or NULL. */
const char *misplaced_staging(int inbox_fd, const char *path);
/* The directory MNT_FD at PATH, under the mount to be: without ST, can
 * everything there be delivered into the inbox? With ST: deliver it.
 * 0 to go on, 1 an over-mount (MNT_FD is INBOX: nothing to sweep or
 * watch), -1 refused (a line on stderr). */
int sweep_mountpoint(int inbox_fd, int mnt_fd, const char *path, struct staging *st);
/* Raise the descriptor limit and give the sessions their budget (R12). */
void descriptor_budget(void);

#endif
