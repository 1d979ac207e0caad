/* Strays: the walk over the bare mountpoint at start-up; each file is
 * checked and delivered by staging.c (stray_check(), stray_deliver()), so a
 * stray is published exactly as a drop is. */
#include "strays.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/* Deeper than this is nobody's drop: refused rather than walked (each
 * level holds two descriptors). */
#define STRAYS_DEPTH_MAX 32

struct walk {
	struct staging *st;	/* NULL: check only */
	int inbox_fd;
	struct stat inbox, staging;	/* never walked into */
	bool have_staging;
	struct strays *s;
	char src[PATH_MAX];	/* relative path of the directory walked */
	char dst[PATH_MAX];	/* and of where its files go ("" the top) */
	size_t more;		/* refused but left out of s->refusals */
};

static bool same_inode(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* "DIR/NAME", quoted for a log line as every client-made name is. */
static const char *rel(const char *dir, const char *name, char *buf, size_t size)
{
	char path[PATH_MAX + NAME_MAX + 2];

	snprintf(path, sizeof(path), "%s%s%s", dir, dir[0] ? "/" : "", name);
	return log_name(path, buf, (unsigned)size);
}

static void refuse(struct walk *w, const char *name, const char *why)
{
	char q[1024], item[1100];
	size_t len = strlen(w->s->refusals);

	w->s->refused++;
	snprintf(item, sizeof(item), "%s%s (%s)", len ? ", " : "",
		 rel(w->src, name, q, sizeof(q)), why);
	/* Room kept for ", and 4294967295 more". */
	if (w->more == 0 && len + strlen(item) + 24 < sizeof(w->s->refusals))
		memcpy(w->s->refusals + len, item, strlen(item) + 1);
	else
		w->more++;
}

static const char *type_name(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFLNK:
		return "a symlink";
	case S_IFIFO:
		return "a FIFO";
	case S_IFSOCK:
		return "a socket";
	case S_IFCHR:
	case S_IFBLK:
		return "a device";
	default:
		return "not a regular file";
	}
}

static const char *refusal(int err)
{
	switch (err) {
	case -EINVAL:
		return "not a regular file";
	case -EXDEV:
		return "on another filesystem than INBOX";
	case -EMLINK:
		return "it has other links";
	case -EBUSY:
		return "open for writing";
	case -EACCES:	/* a lease on another's file needs it */
		return "no lease to tell whether it is being written: CAP_LEASE";
	default:
		return strerror(-err);
	}
}

static void walk_file(struct walk *w, int srcfd, const char *name, int dstfd)
{
	char q1[1024], q2[1024], final[NAME_MAX_BYTES + 1];
	int ret = w->st ? stray_deliver(w->st, srcfd, name, dstfd, final)
			: stray_check(srcfd, name, dstfd);

	if (ret == -ENOENT)	/* gone meanwhile: nothing to hide */
		return;
	if (ret == -EINVAL || ret == -EXDEV || ret == -EMLINK || ret == -EBUSY ||
	    (ret < 0 && w->st == NULL)) {
		refuse(w, name, refusal(ret));
		return;
	}
	if (w->st == NULL)
		return;
	if (ret < 0) {
		errno = -ret;
		log_warn("mountpoint: delivering \"%s\"", rel(w->src, name, q1, sizeof(q1)));
		w->s->failed++;
		return;
	}
	if (ret == 2) {
		log_info("mountpoint: \"%s\" was delivered as \"%s\" by link() before a crash; "
			 "its name in the mountpoint is removed", rel(w->src, name, q1, sizeof(q1)),
			 rel(w->dst, final, q2, sizeof(q2)));
		w->s->repaired++;
		return;
	}
	log_info("mountpoint: delivered \"%s\", written while inboxfs was down, as \"%s\"",
		 rel(w->src, name, q1, sizeof(q1)), rel(w->dst, final, q2, sizeof(q2)));
	w->s->delivered++;
	w->s->renamed += ret == 1;
}

static void walk_dir(struct walk *w, int srcfd, int dstfd, int depth);

/* Subdirectory NAME of SRCFD: its files go to DSTFD/NAME if that is an
 * inbox directory, else (DSTFD -1 too) to the top. */
static void walk_subdir(struct walk *w, int srcfd, const char *name, const struct stat *sb,
			int dstfd, int depth)
{
	size_t slen = strlen(w->src), dlen = strlen(w->dst);
	char *saved = NULL;
	struct stat ds;
	int sub, dsub = -1;

	if (same_inode(sb, &w->inbox) || (w->have_staging && same_inode(sb, &w->staging))) {
		refuse(w, name, same_inode(sb, &w->inbox) ? "it is INBOX" : "the staging directory");
		return;
	}
	if (depth >= STRAYS_DEPTH_MAX) {
		refuse(w, name, "too deep");
		return;
	}
	sub = openat(srcfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sub < 0) {
		refuse(w, name, strerror(errno));
		return;
	}
	if (dstfd >= 0)
		dsub = openat(dstfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dsub >= 0 && (fstat(dsub, &ds) < 0 || ds.st_dev != w->inbox.st_dev ||
			  (w->have_staging && same_inode(&ds, &w->staging)))) {
		close(dsub);
		dsub = -1;
	}
	/* Below a directory the inbox lacks, the top: its path is "", and
	 * this level's is kept aside meanwhile. */
	if (dsub < 0 && (saved = strdup(w->dst)) == NULL) {
		refuse(w, name, strerror(ENOMEM));
		close(sub);
		return;
	}
	snprintf(w->src + slen, sizeof(w->src) - slen, "%s%s", slen ? "/" : "", name);
	if (dsub >= 0)
		snprintf(w->dst + dlen, sizeof(w->dst) - dlen, "%s%s", dlen ? "/" : "", name);
	else
		w->dst[0] = '\0';
	walk_dir(w, sub, dsub, depth + 1);
	w->src[slen] = '\0';
	if (dsub >= 0) {
		w->dst[dlen] = '\0';
		close(dsub);
	} else {
		memcpy(w->dst, saved, dlen + 1);
		free(saved);
	}
	close(sub);
}

/* DSTFD: where the files of SRCFD go, -1 for the top. */
static void walk_dir(struct walk *w, int srcfd, int dstfd, int depth)
{
	int own = openat(srcfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dp = own < 0 ? NULL : fdopendir(own);
	struct dirent *de;

	if (dp == NULL) {
		if (own >= 0)
			close(own);
		refuse(w, ".", strerror(errno));
		return;
	}
	while ((de = readdir(dp)) != NULL) {
		struct stat sb;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (fstatat(srcfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT)	/* gone meanwhile: nothing to hide */
				refuse(w, de->d_name, strerror(errno));
			continue;
		}
		if (S_ISDIR(sb.st_mode))
			walk_subdir(w, srcfd, de->d_name, &sb, dstfd, depth);
		else if (!S_ISREG(sb.st_mode))
			refuse(w, de->d_name, type_name(sb.st_mode));
		else
			walk_file(w, srcfd, de->d_name, dstfd >= 0 ? dstfd : w->inbox_fd);
	}
	closedir(dp);
}

/* Is directory FD TOP or below it? Walks up by "..". */
static bool inside(int fd, const struct stat *top)
{
	struct stat cur, up;
	int dir = openat(fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	bool found = false;

	for (int depth = 0; dir >= 0 && depth < 4096 && fstat(dir, &cur) == 0; depth++) {
		int parent;

		if (same_inode(&cur, top)) {
			found = true;
			break;
		}
		parent = openat(dir, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
		close(dir);
		dir = parent;
		if (dir < 0 || fstat(dir, &up) < 0 || same_inode(&up, &cur))
			break;	/* the root */
	}
	if (dir >= 0)
		close(dir);
	return found;
}

unsigned strays_sweep(struct staging *st, int inbox_fd, int mnt_fd, struct strays *s)
{
	struct sigaction ign = { .sa_handler = SIG_IGN }, old;
	struct walk w = { .st = st, .inbox_fd = inbox_fd, .s = s };
	size_t len;

	memset(s, 0, sizeof(*s));
	if (fstat(inbox_fd, &w.inbox) < 0) {
		snprintf(s->refusals, sizeof(s->refusals), "INBOX: %s", strerror(errno));
		return ++s->refused;
	}
	/* Without ST, the default staging directory, if there is one yet. */
	w.have_staging = st ? fstat(st->rootfd, &w.staging) == 0
			    : fstatat(inbox_fd, STAGING_DIR, &w.staging, AT_SYMLINK_NOFOLLOW) == 0;
	/* What is staged there is not a stray: an unfinished drop would be
	 * delivered. */
	if (w.have_staging && inside(mnt_fd, &w.staging)) {
		snprintf(s->refusals, sizeof(s->refusals),
			 "the mountpoint itself (the staging directory or in it)");
		return ++s->refused;
	}
	/* A lease's break (an open for writing while we hold one) signals
	 * SIGIO, whose default is to terminate. */
	sigaction(SIGIO, &ign, &old);
	walk_dir(&w, mnt_fd, inbox_fd, 0);
	sigaction(SIGIO, &old, NULL);
	len = strlen(s->refusals);
	if (w.more)
		snprintf(s->refusals + len, sizeof(s->refusals) - len, ", and %zu more", w.more);
	return s->refused;
}
