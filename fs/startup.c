/* Start-up checks (startup.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "log.h"
#include "proc.h"
#include "sessions.h"
#include "startup.h"
#include "stats.h"
#include "strays.h"

/* A stale mount left by a crashed daemon answers ENOTCONN (ECONNABORTED
 * while the kernel still tears down a dead daemon's io_uring queues):
 * unmount it. statfs(), because stat() may still be answered from the
 * kernel's cache. */
void clean_stale_mount(const char *path)
{
	struct statfs sf;

	if (statfs(path, &sf) == 0 || (errno != ENOTCONN && errno != ECONNABORTED))
		return;
	if (umount2(path, MNT_DETACH) == 0)
		log_warnx("removed a stale mount at %s", path);
	else
		log_warn("stale mount at %s could not be removed", path);
}

/* True if the topmost mount at REAL (a resolved path) is an inboxfs; its
 * device in *DEV and its id in *ID. Reads mountinfo only: no request
 * reaches a mount. */
bool topmost_inboxfs(const char *real, dev_t *dev, int *id)
{
	char line[4096];
	bool found = false;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	if (f == NULL)
		return false;
	while (fgets(line, sizeof(line), f)) {
		char mnt[PATH_MAX], *dash = strstr(line, " - ");
		char fstype[64];
		unsigned major, minor;
		int mnt_id;

		if (dash == NULL ||
		    sscanf(line, "%d %*s %u:%u %*s %4095s", &mnt_id, &major, &minor, mnt) != 4 ||
		    sscanf(dash + 3, "%63s", fstype) != 1)
			continue;
		proc_unescape_octal(mnt);
		if (strcmp(mnt, real) == 0) {
			found = strcmp(fstype, "fuse.inboxfs") == 0;
			*dev = makedev(major, minor);
			*id = mnt_id;
		}
	}
	fclose(f);
	return found;
}

/* True if PATH is already the mountpoint of a live inboxfs. */
bool mounted_inboxfs(const char *path)
{
	char real[PATH_MAX];
	dev_t dev;
	int id;

	return realpath(path, real) != NULL && topmost_inboxfs(real, &dev, &id);
}

static bool same_inode(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* Is the directory FD (taken over: closed) TOP or below it? Walks up by
 * "..". *DEPTH: 0 for TOP itself; *CHILD: the entry just below TOP on the
 * way, when *DEPTH > 0. */
static bool is_below(int fd, const struct stat *top, struct stat *child, int *depth)
{
	struct stat cur, up;
	bool found = false;

	for (*depth = 0; fd >= 0 && fstat(fd, &cur) == 0 && *depth < 4096; ++*depth) {
		int ufd;

		if (same_inode(&cur, top)) {
			found = true;
			break;
		}
		ufd = openat(fd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (ufd < 0 || fstat(ufd, &up) < 0 || same_inode(&up, &cur)) {
			if (ufd >= 0)
				close(ufd);
			break;	/* the root: not below TOP */
		}
		*child = cur;
		close(fd);
		fd = ufd;
	}
	if (fd >= 0)
		close(fd);
	return found;
}

/* R11: a staging directory must be hidden from every view, and inside
 * INBOX only the default is: it must be INBOX/.inboxfs itself, or a
 * directory outside INBOX's tree that does not contain INBOX either. A staging that
 * does not exist yet is judged by where it would be made. Returns why not,
 * or NULL (also when PATH cannot be opened: staging_open() reports it). */
const char *misplaced_staging(int inbox_fd, const char *path)
{
	struct stat in, hidden, child, sg;
	const char *why = NULL, *leaf = NULL;
	char *parent = NULL;
	int fd, depth;

	if (fstat(inbox_fd, &in) < 0)
		return NULL;
	if (fstatat(inbox_fd, STAGING_DIR, &hidden, AT_SYMLINK_NOFOLLOW) < 0)
		memset(&hidden, 0, sizeof(hidden));
	fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		char *slash;

		parent = strdup(path);
		if (parent == NULL)
			return NULL;
		for (size_t n = strlen(parent); n > 1 && parent[n - 1] == '/'; n--)
			parent[n - 1] = '\0';
		slash = strrchr(parent, '/');
		leaf = slash ? slash + 1 : parent;
		if (slash && slash != parent)
			*slash = '\0';
		fd = open(slash == parent ? "/" : slash ? parent : ".",
			  O_PATH | O_DIRECTORY | O_CLOEXEC);
	}
	if (fd < 0)
		goto out;
	if (leaf == NULL && fstat(fd, &sg) < 0) {
		close(fd);
		goto out;
	}
	if (is_below(fd, &in, &child, &depth)) {
		if (depth == 0 && leaf == NULL)
			why = "is INBOX itself; use INBOX/" STAGING_DIR " or a directory outside INBOX";
		else if (depth == 0 ? strcmp(leaf, STAGING_DIR) != 0
				    : depth > 1 || leaf || !same_inode(&child, &hidden))
			why = "is inside INBOX, where views would show it; use INBOX/" STAGING_DIR
			      " or a directory outside INBOX";
	} else if (leaf == NULL) {
		fd = dup(inbox_fd);
		if (is_below(fd, &sg, &child, &depth))
			why = "contains INBOX; use INBOX/" STAGING_DIR " or a directory outside INBOX";
	}
out:
	free(parent);
	return why;
}

/* While inboxfs is down MOUNTPOINT is a plain directory, and a file
 * someone manages to write there (its writer was told it was stored)
 * would be hidden by the mount. Without ST: can everything there be
 * delivered into the inbox? If not, R11: one line, no start. With ST:
 * deliver it (core/strays.h), and warn if anyone but root may write the
 * directory (covered.c then watches MNT_FD under the mount). An
 * over-mount is left be: there the directory is the inbox. */
int sweep_mountpoint(int inbox_fd, int mnt_fd, const char *path, struct staging *st)
{
	struct stat in, mp;
	struct strays s;

	if (fstat(mnt_fd, &mp) < 0 || fstat(inbox_fd, &in) < 0) {
		fprintf(stderr, "inboxfs: MOUNTPOINT %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (same_inode(&mp, &in))
		return 1;
	if (strays_sweep(st, inbox_fd, mnt_fd, &s) > 0) {
		fprintf(stderr, "inboxfs: MOUNTPOINT %s holds what the mount would hide and what "
			"cannot be moved into INBOX: %s; move it away and start again\n",
			path, s.refusals);
		return -1;
	}
	if (st == NULL)
		return 0;
	stat_add(STAT_RECOVERED, s.delivered + s.repaired);
	stat_add(STAT_PUBLISHED, s.delivered);
	if (s.delivered + s.repaired)
		log_info("mountpoint: %u files written into %s while inboxfs was down are in "
			 "the inbox now (%u under a unique name)", s.delivered + s.repaired, path,
			 s.renamed);
	if (s.failed) {
		fprintf(stderr, "inboxfs: MOUNTPOINT %s: %u files written there while inboxfs was "
			"down could not be delivered into INBOX (see above), and the mount "
			"would hide them\n", path, s.failed);
		return -1;
	}
	/* Checked at every start: the unit makes it right only once. */
	if (mp.st_uid != 0 || (mp.st_mode & (S_IWGRP | S_IWOTH)))
		log_warnx("MOUNTPOINT %s can be written by others than root (owner uid %u, "
			  "mode %04o): while inboxfs is down, SMB creates there succeed instead "
			  "of failing, and what they write reaches the inbox only when inboxfs "
			  "starts again; make it root's with mode 0555 (chown root:root, "
			  "chmod 0555)", path,
			  (unsigned)mp.st_uid, (unsigned)(mp.st_mode & 07777));
	return 0;
}

int open_dir_arg(const char *what, const char *path)
{
	struct stat st;
	int fd;

	if (stat(path, &st) < 0) {
		fprintf(stderr, "inboxfs: %s %s: %s\n", what, path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "inboxfs: %s %s: not a directory\n", what, path);
		return -1;
	}
	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		fprintf(stderr, "inboxfs: %s %s: %s\n", what, path, strerror(errno));
	return fd;
}

/* Descriptors the daemon keeps for its own work (a close reads /proc, a
 * publication opens directories, libfuse's and the staging area's own):
 * no client holding files open can make another client's close fail (R12). */
#define FD_RESERVE_MIN 64

/* Raise the descriptor limit as far as allowed and leave a reserve out of
 * what is held on clients' and observers' behalf: open files and the
 * pidfds of sessions holding drops (core/sessions.h). Of that budget, a
 * sixteenth (at least 16) is a pool for sessions' first drops, so that
 * sessions holding many never make one that holds none fail. */
void descriptor_budget(void)
{
	struct rlimit rl;
	rlim_t reserve;
	unsigned budget;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		rl.rlim_cur = 1024;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur > 1 << 20)
		rl.rlim_cur = 1 << 20;
	/* An eighth, and never less than 2 * FD_RESERVE_MIN. */
	reserve = rl.rlim_cur / 8 > 2 * FD_RESERVE_MIN ? rl.rlim_cur / 8 : 2 * FD_RESERVE_MIN;
	budget = rl.rlim_cur > reserve ? (unsigned)(rl.rlim_cur - reserve) : FD_RESERVE_MIN;
	sessions_fd_budget(budget, budget / 16 > 16 ? budget / 16 : 16);
}

