/* Staging: create, publish (renameat2 RENAME_NOREPLACE, or link+unlink
 * where the filesystem lacks it), quarantine. */
#include "staging.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fstype.h"
#include "log.h"

/* Are directories synced here? With sync=close, except where a
 * directory's fsync syncs nothing (GlusterFS: its brick answers FSYNCDIR
 * without a sync, measured on GlusterFS 10): there each would be a round
 * trip to the brick for nothing, two per drop. A published entry is then
 * as durable as the brick's filesystem makes it by itself (its next
 * journal commit, which any file's fsync there forces). */
static bool dir_syncs(const struct staging *st)
{
	return st->sync && !st->dirsync_noop;
}

/* Lock FD for as long as it stays open: an OFD lock, which is the open
 * file's (not the process's, so fuse_daemonize()'s fork keeps it), and
 * which cluster filesystems (GlusterFS, NFS, CephFS) enforce between
 * hosts. The kernel drops it when its holder dies. */
static int lock_file(int fd)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };

	return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

static bool lock_busy(int err)
{
	return err == -EAGAIN || err == -EACCES;
}

/* The host's name as an area name's first part: no dots (they separate
 * the parts), nothing but letters, digits, '-' and '_'. */
static void host_part(char *buf, size_t size)
{
	char host[256] = "";

	if (gethostname(host, sizeof(host) - 1) < 0 || host[0] == '\0')
		strcpy(host, "localhost");
	host[strcspn(host, ".")] = '\0';
	for (char *c = host; *c; c++) {
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9') || *c == '-' || *c == '_'))
			*c = '_';
	}
	snprintf(buf, size, "%.48s", host);
}

/* Make and lock this instance's area. It is made under a temporary name
 * and renamed only once locked, so that no recovery ever sees an area of
 * a live instance unlocked. */
static int area_create(struct staging *st)
{
	char host[64], tmp[AREA_NAME_MAX + 8];
	int err = -EEXIST;

	host_part(host, sizeof(host));
	for (int i = 0; i < 16; i++) {
		int afd, lfd;

		snprintf(st->area, sizeof(st->area), "%s.%d.%08x", host, (int)getpid(),
			 (unsigned)name_tag_next());
		snprintf(tmp, sizeof(tmp), ".new.%s", st->area);
		if (mkdirat(st->rootfd, tmp, 0700) < 0) {
			err = -errno;
			if (errno == EEXIST)
				continue;
			return err;
		}
		afd = openat(st->rootfd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (afd < 0) {
			err = -errno;
			if (errno == ENOENT)	/* see below */
				continue;
			return err;
		}
		lfd = openat(afd, LOCK_FILE, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		err = lfd < 0 ? -errno : lock_file(lfd);
		/* Lost to a recovery that took the unlocked lock file for a
		 * dead instance's: it removes the directory, try another. */
		if (err == 0 && renameat(st->rootfd, tmp, st->rootfd, st->area) < 0)
			err = -errno;
		if (err == 0) {
			st->dirfd = afd;
			st->lockfd = lfd;
			if (dir_syncs(st) && (fsync(afd) < 0 || fsync(st->rootfd) < 0))
				log_warn("fsync of the staging area %s", st->area);
			return 0;
		}
		if (!lock_busy(err) && err != -ENOENT) {
			/* No locks here (-ENOLCK, -EINVAL): leave nothing behind. */
			if (lfd >= 0)
				unlinkat(afd, LOCK_FILE, 0);
			unlinkat(st->rootfd, tmp, AT_REMOVEDIR);
		}
		if (lfd >= 0)
			close(lfd);
		close(afd);
		if (!lock_busy(err) && err != -ENOENT)
			return err;
	}
	return err;
}

/* Can a staged file be renamed with RENAME_NOREPLACE here? NFS, CephFS
 * and GlusterFS answer EINVAL: there publication is link() + unlink(). */
static void probe_noreplace(struct staging *st)
{
	int fd = openat(st->dirfd, "probe", O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC,
			0600);

	st->noreplace = true;
	if (fd < 0)
		return;
	close(fd);
	if (renameat2(st->dirfd, "probe", st->dirfd, "probe.2", RENAME_NOREPLACE) == 0) {
		unlinkat(st->dirfd, "probe.2", 0);
	} else {
		st->noreplace = errno != EINVAL && errno != ENOSYS;
		unlinkat(st->dirfd, "probe", 0);
	}
}

/* Record this instance's names= template for inboxfs-quarantine, which
 * runs without the daemon's options: written beside NAMES_FILE and renamed
 * over it, so that a reader never sees half of one. Instances of one inbox
 * are meant to share names=; should they differ, the last started wins. A
 * failure costs only the tool's default, so it does not stop the start. */
static void record_names(struct staging *st)
{
	char tmp[AREA_NAME_MAX + 16], line[TEMPLATE_MAX + 2];
	int n = snprintf(line, sizeof(line), "%s\n", st->names->spec);
	int fd;

	snprintf(tmp, sizeof(tmp), ".names.%s", st->area);
	fd = openat(st->rootfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		goto fail;
	if (write(fd, line, (size_t)n) != n || (st->sync && fsync(fd) < 0)) {
		close(fd);
		goto fail_unlink;
	}
	close(fd);
	if (renameat(st->rootfd, tmp, st->rootfd, NAMES_FILE) == 0)
		return;
fail_unlink:
	unlinkat(st->rootfd, tmp, 0);
fail:
	log_warn("recording names=%s in the staging directory", st->names->spec);
}

int staging_names(int rootfd, struct name_template *t)
{
	char buf[TEMPLATE_MAX + 2];
	ssize_t n;
	int fd = openat(rootfd, NAMES_FILE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	if (n > 0 && buf[n - 1] == '\n')
		buf[n - 1] = '\0';
	return name_template_parse(buf, t);
}

int staging_open(struct staging *st, int inbox_fd, int dirfd, const char *path)
{
	char type[FSTYPE_MAX] = "";
	struct stat in, sg;
	bool created = mkdirat(dirfd, path, 0700) == 0;
	int err;

	if (!created && errno != EEXIST)
		return -errno;
	st->dirfd = st->lockfd = st->incomplete_fd = -1;
	st->rootfd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (st->rootfd < 0)
		return -errno;
	if (fstat(inbox_fd, &in) < 0 || fstat(st->rootfd, &sg) < 0)
		goto fail_errno;
	if (in.st_dev != sg.st_dev) {
		close(st->rootfd);
		if (created)	/* leave nothing behind on a refused start */
			unlinkat(dirfd, path, AT_REMOVEDIR);
		return -EXDEV;
	}
	st->dirsync_noop = fd_fstype(st->rootfd, type, sizeof(type)) == 0 &&
			   fstype_dirsync_noop(type);
	if (mkdirat(st->rootfd, INCOMPLETE_DIR, 0700) < 0 && errno != EEXIST)
		goto fail_errno;
	st->incomplete_fd = openat(st->rootfd, INCOMPLETE_DIR,
				   O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (st->incomplete_fd < 0)
		goto fail_errno;
	err = area_create(st);
	if (err < 0)
		goto fail;
	probe_noreplace(st);
	if (st->names != NULL)
		record_names(st);
	dirsync_init(&st->dirsync);
	log_info("staging area %s; publication by %s%s", st->area,
		 st->noreplace ? "renameat2(RENAME_NOREPLACE)" : "link() and unlink()",
		 st->sync && st->dirsync_noop ? "; no directory syncs (a directory's fsync syncs "
		 "nothing on this filesystem)" : "");
	st->durable = DURABLE_FSYNC;
	if (st->sync) {
		const char *why = "datasync=fsync";

		if (!st->force_fsync)
			st->durable = durable_probe(st->dirfd, &why);
		log_info("durable close by %s (%s)", durable_path_name(st->durable), why);
	}
	return 0;
fail_errno:
	err = -errno;
fail:
	if (st->incomplete_fd >= 0)
		close(st->incomplete_fd);
	close(st->rootfd);
	return err;
}

/* A directory stream of its own over directory FD: a dup() would share
 * FD's offset with every other reader. */
static DIR *opendir_at(int fd)
{
	int own = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dp = own < 0 ? NULL : fdopendir(own);

	if (dp == NULL && own >= 0)
		close(own);
	return dp;
}

/* Does area AFD hold anything but its lock file? */
static bool area_empty(int afd)
{
	DIR *dp = opendir_at(afd);
	bool empty = true;
	struct dirent *de;

	if (dp == NULL)
		return false;
	while ((de = readdir(dp)) != NULL) {
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 &&
		    strcmp(de->d_name, LOCK_FILE) != 0)
			empty = false;
	}
	closedir(dp);
	return empty;
}

/* Remove area NAME (descriptor AFD), its lock held: the lock file first,
 * so that a recovery that opened it before and locks it after finds it
 * unlinked and leaves the area be. */
static int area_remove(struct staging *st, int afd, const char *name)
{
	if (unlinkat(afd, LOCK_FILE, 0) < 0 || unlinkat(st->rootfd, name, AT_REMOVEDIR) < 0)
		return -errno;
	if (dir_syncs(st))
		fsync(st->rootfd);
	return 0;
}

void staging_close(struct staging *st)
{
	/* Drops still open at unmount stay, locked until we exit, and the
	 * next start of any instance recovers them. */
	if (area_empty(st->dirfd) && area_remove(st, st->dirfd, st->area) < 0)
		log_warn("removing the staging area %s", st->area);
	close(st->incomplete_fd);
	close(st->dirfd);
	close(st->lockfd);
	close(st->rootfd);
	dirsync_destroy(&st->dirsync);
}

int stage_create(struct staging *st, mode_t mode, uid_t uid, gid_t gid,
		 char name[STAGE_NAME_MAX], int *fd)
{
	for (int i = 0; i < 16; i++) {
		snprintf(name, STAGE_NAME_MAX, "d.%016llx", (unsigned long long)name_tag_next());
		*fd = openat(st->dirfd, name, O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC,
			     mode & 07777);
		if (*fd < 0 && errno == EEXIST)
			continue;
		if (*fd < 0)
			return -errno;
		if ((uid != 0 || gid != 0) && fchown(*fd, uid, gid) < 0) {
			int err = -errno;

			close(*fd);
			unlinkat(st->dirfd, name, 0);
			return err;
		}
		return 0;
	}
	return -EEXIST;
}

struct publish_arg {
	struct staging *st;
	int srcfd;		/* the area NAME is staged in */
	const char *name;
	int dirfd;
	bool linked;		/* published by link(): unlink() followed */
};

static int publish_attempt(const char *final, void *arg)
{
	struct publish_arg *a = arg;

	if (a->st->noreplace) {
		if (renameat2(a->srcfd, a->name, a->dirfd, final, RENAME_NOREPLACE) == 0)
			return 0;
		if (errno != EINVAL && errno != ENOSYS)
			return -errno;
	}
	/* No RENAME_NOREPLACE here: link() never replaces either. Between
	 * the two calls the file has two links: a crash there is repaired by
	 * recovery, which then only removes the staged name. */
	if (linkat(a->srcfd, a->name, a->dirfd, final, 0) < 0)
		return -errno;
	a->linked = true;
	if (unlinkat(a->srcfd, a->name, 0) < 0)
		log_warn("unlinking %s after its publication as a link", a->name);
	return 0;
}

/* Make durable the entry just made in DIRFD, FINAL, for the file FD (-1:
 * open it by that name if need be). A directory's sync does, where it
 * syncs (concurrent publications share it: dirsync.h). On GlusterFS the
 * brick answers a directory's fsync without syncing (fstype.h), so the
 * file's own fsync does there: the brick's filesystem logs a link, an
 * unlink or a rename together with the change to the file's inode (its
 * link count or ctime), and an fsync of the file commits every
 * transaction up to its last change. */
static int sync_entry(struct staging *st, int dirfd, const char *final, int fd)
{
	int own = -1, ret;

	if (!st->sync)
		return 0;
	if (!st->dirsync_noop)
		return dirsync(&st->dirsync, dirfd);
	if (fd < 0) {
		own = openat(dirfd, final, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
		if (own < 0)
			return -errno;
		fd = own;
	}
	ret = fsync(fd) < 0 ? -errno : 0;
	if (own >= 0)
		close(own);
	return ret;
}

static int publish_from(struct staging *st, int srcfd, const char *name, int fd, int dirfd,
			const char *requested, char *final)
{
	struct publish_arg a = { st, srcfd, name, dirfd, false };
	struct stat sb;
	/* The reserved name (the stats file's) would hide the message. */
	bool free_name = !st->reserved || strcmp(requested, st->reserved) != 0 ||
			 fstat(dirfd, &sb) < 0 || sb.st_ino != st->top_ino;
	int ret = place_name(st->names, requested, free_name, publish_attempt, &a, final);

	if (ret < 0 || !st->sync)
		return ret;
	/* The new entry, durable before the writer is told: if the disk
	 * fails it, the publication is undone and fails (a close that fails
	 * is never delivered). Once undone is impossible (the consumer took
	 * it already), it is the consumer's. */
	int err = sync_entry(st, dirfd, final, fd);

	if (err == -EIO || err == -ENOSPC || err == -EDQUOT) {
		errno = -err;
		log_warn("syncing %s after its publication", final);
		if (renameat2(dirfd, final, srcfd, name, RENAME_NOREPLACE) == 0 ||
		    (errno == EINVAL && renameat(dirfd, final, srcfd, name) == 0))
			return err;
		log_warn("taking %s back into staging", final);
	}
	/* The removal from staging. A rename is one step on the filesystems
	 * this runs on, made durable by the directory's sync; should a crash
	 * still leave the staged name, recovery finds a file with two links
	 * and removes the name, or, if a d.* name is all that is left, sets
	 * it aside: never delivered twice. An acknowledged a.* name would be
	 * delivered again, and after a link() the window is as long as the
	 * next commit: those are synced at once. On the one-commit path
	 * (durable.h) the directory's sync was that commit: the rename is
	 * one transaction, and the unlink after a link() was done before
	 * the sync started. */
	if ((a.linked || name[0] == 'a') && dir_syncs(st) && st->durable != DURABLE_ONE_COMMIT &&
	    fsync(srcfd) < 0)
		log_warn("fsync of the staging area after publishing %s", final);
	return ret;
}

int stage_sync_data(struct staging *st, int fd)
{
	if (!st->sync)
		return 0;
	if (st->durable != DURABLE_ONE_COMMIT)
		return fsync(fd) < 0 ? -errno : 0;
	/* Written out and its writeback ended: on journaled ext4 that is
	 * after its blocks' allocation and conversion are in a transaction
	 * no later than the rename's (durable.h). */
	return sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
				SYNC_FILE_RANGE_WAIT_AFTER) < 0 ? -errno : 0;
}

int publish_drop(struct staging *st, const char *name, int dirfd,
		 const char *requested, char *final)
{
	return publish_from(st, st->dirfd, name, -1, dirfd, requested, final);
}

#define ORIGIN_XATTR "trusted.inboxfs.origin"

/* The xattr: handle type (4 bytes), handle length (4), handle, name. */
int stage_set_origin(int fd, const struct origin *o)
{
	unsigned char buf[8 + sizeof(o->handle) + sizeof(o->name)];
	size_t nlen = strlen(o->name);
	int32_t type = o->handle_type;
	uint32_t bytes = o->handle_bytes;

	if (bytes > sizeof(o->handle))
		return -EINVAL;
	memcpy(buf, &type, 4);
	memcpy(buf + 4, &bytes, 4);
	memcpy(buf + 8, o->handle, bytes);
	memcpy(buf + 8 + bytes, o->name, nlen);
	return fsetxattr(fd, ORIGIN_XATTR, buf, 8 + bytes + nlen, 0) < 0 ? -errno : 0;
}

void stage_clear_origin(int fd)
{
	fremovexattr(fd, ORIGIN_XATTR);
}

int stage_get_origin(int dirfd, const char *name, struct origin *o)
{
	unsigned char buf[8 + sizeof(o->handle) + sizeof(o->name)];
	int32_t type;
	uint32_t bytes;
	ssize_t n;
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return -errno;
	n = fgetxattr(fd, ORIGIN_XATTR, buf, sizeof(buf));
	close(fd);
	if (n < 0)
		return -errno;
	if (n < 8)
		return -EINVAL;
	memcpy(&type, buf, 4);
	memcpy(&bytes, buf + 4, 4);
	if (bytes > sizeof(o->handle) || (size_t)n < 8 + bytes || (size_t)n - 8 - bytes > NAME_MAX_BYTES)
		return -EINVAL;
	o->handle_type = type;
	o->handle_bytes = bytes;
	memcpy(o->handle, buf + 8, bytes);
	memcpy(o->name, buf + 8 + bytes, (size_t)n - 8 - bytes);
	o->name[n - 8 - bytes] = '\0';
	return name_check(o->name) < 0 ? -EINVAL : 0;
}

int stage_ack(struct staging *st, char name[STAGE_NAME_MAX], int fd)
{
	char to[STAGE_NAME_MAX];

	snprintf(to, sizeof(to), "a%s", name + 1);
	if (renameat(st->dirfd, name, st->dirfd, to) < 0)
		return -errno;
	/* Renamed: NAME follows, even if the rename cannot be made durable,
	 * so that a failed acknowledgement quarantines the file it is now. */
	strcpy(name, to);
	return sync_entry(st, st->dirfd, name, fd);
}

int origin_open_dir(int inbox_fd, const struct origin *o)
{
	union {
		struct file_handle fh;
		unsigned char buf[sizeof(struct file_handle) + 128];
	} h;
	int fd;

	if (o->handle_bytes > sizeof(o->handle))
		return -ESTALE;
	h.fh.handle_type = o->handle_type;
	h.fh.handle_bytes = o->handle_bytes;
	memcpy(h.fh.f_handle, o->handle, o->handle_bytes);
	fd = open_by_handle_at(inbox_fd, &h.fh, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0)
		return fd;
	/* Out of descriptors or memory, or the disk failing: it may well be
	 * there, so the drop waits rather than going to the wrong place. */
	if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == EIO ||
	    errno == EINTR)
		return -errno;
	return -ESTALE;
}

/* Is directory DIRFD inside the inbox INBOX_FD? 1 if it is (or is the
 * inbox), 0 if its parents lead elsewhere (moved out, another filesystem),
 * -ENOENT if it was removed, or -errno. Walks up by "..", which no client
 * name is part of, at most a depth no inbox has. */
static int inside_inbox(int inbox_fd, int dirfd)
{
	struct stat top, sb, up_sb;
	int fd = dirfd, ret = 0;

	/* The inbox's own descriptor (a drop at the top): nothing to ask. The
	 * two fstats would be two round trips to GlusterFS's client, as a
	 * publication changed the directory since. Removed, the publication
	 * into it fails as it would have. */
	if (dirfd == inbox_fd)
		return 1;
	if (fstat(inbox_fd, &top) < 0 || fstat(dirfd, &sb) < 0)
		return -errno;
	if (sb.st_nlink == 0)
		return -ENOENT;
	for (int depth = 0; depth < 4096; depth++) {
		int up;

		if (sb.st_dev != top.st_dev)
			break;		/* 0: not the inbox's filesystem */
		if (sb.st_ino == top.st_ino) {
			ret = 1;
			break;
		}
		up = openat(fd, "..", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (up < 0 || fstat(up, &up_sb) < 0) {
			ret = -errno;
			if (up >= 0)
				close(up);
			break;
		}
		if (fd != dirfd)
			close(fd);
		fd = up;
		if (up_sb.st_dev == sb.st_dev && up_sb.st_ino == sb.st_ino)
			break;		/* 0: the root, and no inbox on the way */
		sb = up_sb;
	}
	if (fd != dirfd)
		close(fd);
	return ret;
}

/* Publish staged NAME into DIRFD, or the inbox's top (publish_inside()). */
static int publish_where(struct staging *st, int srcfd, const char *name, int fd, int inbox_fd,
			 int dirfd, const char *requested, char *final, enum delivery *where)
{
	int in = dirfd;

	*where = DELIVERED_ASKED;
	if (dirfd >= 0)
		in = inside_inbox(inbox_fd, dirfd);
	if (in == 1) {
		int ret = publish_from(st, srcfd, name, fd, dirfd, requested, final);

		/* Removed since: as gone. */
		if (ret != -ENOENT && ret != -ESTALE)
			return ret;
		in = ret;
	}
	if (in < 0 && in != -ENOENT && in != -ESTALE)
		return in;
	*where = in == 0 ? DELIVERED_TOP_OUTSIDE : DELIVERED_TOP_GONE;
	return publish_from(st, srcfd, name, fd, inbox_fd, requested, final);
}

int publish_inside(struct staging *st, int srcfd, const char *name, int fd, int inbox_fd,
		   int dirfd, const char *requested, char *final, enum delivery *where)
{
	/* Delivered, the message keeps its origin attribute: recovery and
	 * inboxfs-quarantine read it only from staged and quarantined files
	 * (one already published by link() is told by its second link), and
	 * its removal cost a write per drop (a round trip to the brick on
	 * GlusterFS). */
	return publish_where(st, srcfd, name, fd, inbox_fd, dirfd, requested, final, where);
}

const char *delivery_why(enum delivery where)
{
	switch (where) {
	case DELIVERED_TOP_GONE:
		return "is gone";
	case DELIVERED_TOP_OUTSIDE:
		return "is not in the inbox";
	default:
		return "";
	}
}

static int quarantine_from(struct staging *st, int srcfd, const char *name,
			   const char *requested, const char *why)
{
	char q[NAME_MAX_BYTES * 4 + 1];
	struct stat sb;
	long long size = fstatat(srcfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 ? sb.st_size : -1;

	if (renameat(srcfd, name, st->incomplete_fd, name) < 0) {
		int err = -errno;

		log_warn("quarantine of %s (\"%s\") failed", name,
			 log_name(requested, q, sizeof(q)));
		return err;
	}
	if (dir_syncs(st))
		fsync(st->incomplete_fd);
	log_warnx("quarantined \"%s\" as %s/%s (%lld bytes): %s",
		  log_name(requested, q, sizeof(q)), INCOMPLETE_DIR, name, size, why);
	return 0;
}

int quarantine_drop(struct staging *st, const char *name, const char *requested,
		    const char *why)
{
	return quarantine_from(st, st->dirfd, name, requested, why);
}

int discard_drop(struct staging *st, const char *name)
{
	return unlinkat(st->dirfd, name, 0) < 0 ? -errno : 0;
}

/* A staged file with a second link was published by link() and its
 * instance died before the unlink(): the message is in the inbox, only
 * the staged name is left to remove (the message keeps its origin, as
 * every delivery's does). Nothing but a publication links a staged file. */
static int repair_link(int srcfd, const char *name)
{
	return unlinkat(srcfd, name, 0) < 0 ? -errno : 0;
}

/* Recover the drops staged in SRCFD (an area, or the staging directory's
 * old layout). */
static void recover_dir(struct staging *st, int srcfd, int inbox_fd, struct recovery *r)
{
	char q1[1024], q2[1024], final[NAME_MAX_BYTES + 1];
	DIR *dp = opendir_at(srcfd);
	struct dirent *de;

	if (dp == NULL) {
		log_warn("recovery: cannot read a staging directory");
		r->failed++;
		return;
	}
	while ((de = readdir(dp)) != NULL) {
		struct origin o;
		struct stat sb;
		bool known;

		if ((de->d_name[0] != 'a' && de->d_name[0] != 'd') || de->d_name[1] != '.' ||
		    strlen(de->d_name) >= STAGE_NAME_MAX ||
		    fstatat(srcfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(sb.st_mode))
			continue;
		known = stage_get_origin(srcfd, de->d_name, &o) == 0;
		if (sb.st_nlink > 1) {
			if (repair_link(srcfd, de->d_name) == 0) {
				log_info("recovery: \"%s\" (%s) was published by link() before a crash; "
					 "its staged name is removed", known ?
					 log_name(o.name, q1, sizeof(q1)) : "(unknown)", de->d_name);
				r->repaired++;
			} else {
				log_warn("recovery: removing %s, published by link()", de->d_name);
				r->failed++;
			}
			continue;
		}
		if (de->d_name[0] == 'd' || !known) {
			if (quarantine_from(st, srcfd, de->d_name, known ? o.name : "(unknown)",
					    de->d_name[0] == 'd' ? "recovery: its writer never saw a successful close"
								 : "recovery: its origin is unreadable") == 0)
				r->quarantined++;
			else
				r->failed++;
			continue;
		}
		/* Acknowledged: deliver it where it was asked for, or at the
		 * inbox's top if that directory is gone or out of the inbox. */
		enum delivery where;
		int dirfd = origin_open_dir(inbox_fd, &o);
		int ret = publish_inside(st, srcfd, de->d_name, -1, inbox_fd, dirfd, o.name, final,
					 &where);

		if (dirfd >= 0)
			close(dirfd);
		if (ret < 0) {
			errno = -ret;
			log_warn("recovery: publishing \"%s\" (%s)", log_name(o.name, q1, sizeof(q1)), de->d_name);
			r->failed++;
			continue;
		}
		if (where != DELIVERED_ASKED)
			log_warnx("recovery: the directory of \"%s\" %s; published at the top as \"%s\"",
				  log_name(o.name, q1, sizeof(q1)), delivery_why(where),
				  log_name(final, q2, sizeof(q2)));
		else
			log_info("recovery: published \"%s\" as \"%s\"", log_name(o.name, q1, sizeof(q1)),
				 log_name(final, q2, sizeof(q2)));
		r->published++;
	}
	closedir(dp);
}

/* Recover area NAME if its instance is gone: take its lock (or leave it to
 * its live owner, or to the recovery that holds it), recover its drops,
 * remove it. Two recoveries racing for one area take turns, and the
 * second finds it gone. */
static void recover_area(struct staging *st, const char *name, int inbox_fd, struct recovery *r,
			 bool running)
{
	bool temporary = strncmp(name, ".new.", 5) == 0;
	struct stat locked, linked;
	int afd, lfd, err;
	unsigned before;

	afd = openat(st->rootfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (afd < 0)
		return;		/* not a directory, or removed meanwhile */
	lfd = openat(afd, LOCK_FILE, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (lfd < 0) {
		if (!temporary)
			log_debug("staging: %s has no lock file: not an area, left alone", name);
		close(afd);
		return;
	}
	err = lock_file(lfd);
	if (lock_busy(err)) {
		if (!temporary) {
			/* Checked every second while serving: said once, at start. */
			if (running)
				log_debug("recovery: staging area %s belongs to a live instance: left alone",
					  name);
			else
				log_info("recovery: staging area %s belongs to a live instance: left alone",
					 name);
			r->live++;
		}
		goto out;
	}
	if (err < 0) {
		errno = -err;
		log_warn("recovery: locking the staging area %s", name);
		r->failed++;
		goto out;
	}
	/* Recovered and removed by another instance while we waited. */
	if (fstat(lfd, &locked) < 0 || fstatat(afd, LOCK_FILE, &linked, AT_SYMLINK_NOFOLLOW) < 0 ||
	    locked.st_ino != linked.st_ino)
		goto out;
	before = r->failed;
	if (!temporary) {
		log_info("recovery: staging area %s of an instance that is gone%s", name,
			 running ? ", taken over while serving" : "");
		recover_dir(st, afd, inbox_fd, r);
		r->areas++;
	}
	if (r->failed == before && area_empty(afd) && area_remove(st, afd, name) < 0)
		log_warn("recovery: removing the staging area %s", name);
out:
	close(lfd);
	close(afd);
}

/* The old layout: drops staged straight in the staging directory by a
 * version before areas. Recovered under the staging directory's own lock,
 * so that two instances starting at once do not both deliver them; an
 * instance of that version still running there is not protected. */
static void recover_old_layout(struct staging *st, int inbox_fd, struct recovery *r)
{
	int lfd = openat(st->rootfd, LOCK_FILE, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	int err = lfd < 0 ? -errno : -EAGAIN;

	/* Its holder recovers for a moment only, then unlocks: wait 30 s. */
	for (int i = 0; lfd >= 0 && i < 600 && lock_busy(err); i++) {
		err = lock_file(lfd);
		if (lock_busy(err))
			usleep(50000);
	}
	if (err < 0) {
		errno = -err;
		log_warn("recovery: locking the staging directory for its old layout");
		r->failed++;
	} else {
		recover_dir(st, st->rootfd, inbox_fd, r);
	}
	if (lfd >= 0)
		close(lfd);
}

int staging_still_ours(struct staging *st)
{
	struct stat mine, named, lock_mine, lock_named;
	int fd, err;

	if (fstat(st->dirfd, &mine) < 0 || fstat(st->lockfd, &lock_mine) < 0)
		return -errno;
	if (fstatat(st->rootfd, st->area, &named, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? -ESTALE : -errno;
	if (named.st_dev != mine.st_dev || named.st_ino != mine.st_ino)
		return -ESTALE;
	if (fstatat(st->dirfd, LOCK_FILE, &lock_named, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? -ESTALE : -errno;
	if (lock_named.st_ino != lock_mine.st_ino)
		return -ESTALE;
	/* Our lock is our open file's: another open file of the lock file
	 * must not get it. If it does, ours is gone (closing the probe lets
	 * go of it again). */
	fd = openat(st->dirfd, LOCK_FILE, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return errno == ENOENT ? -ESTALE : -errno;
	err = lock_file(fd);
	close(fd);
	if (err == 0)
		return -ESTALE;
	return lock_busy(err) ? 0 : err;
}

/* Every area but ours whose lock can be taken (recover_area() decides). */
static void recover_areas(struct staging *st, int inbox_fd, struct recovery *r, bool running)
{
	struct dirent *de;
	DIR *dp = opendir_at(st->rootfd);

	if (dp == NULL) {
		log_warn("recovery: cannot read the staging directory");
		r->failed++;
		return;
	}
	while ((de = readdir(dp)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
		    strcmp(de->d_name, INCOMPLETE_DIR) == 0 || strcmp(de->d_name, st->area) == 0 ||
		    (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN))
			continue;
		recover_area(st, de->d_name, inbox_fd, r, running);
	}
	closedir(dp);
}

/* The name in DIRFD of another link of SB's inode, if any: a stray with
 * two links whose other one is in its target directory was delivered by
 * link() before a crash kept the unlink() from following. Reads DIRFD
 * once, for files with several links only. */
static bool other_link(int dirfd, const struct stat *sb, char other[NAME_MAX_BYTES + 1])
{
	DIR *dp = opendir_at(dirfd);
	struct dirent *de;
	bool found = false;

	if (dp == NULL)
		return false;
	while (!found && (de = readdir(dp)) != NULL) {
		struct stat o;

		if (de->d_ino == sb->st_ino &&
		    fstatat(dirfd, de->d_name, &o, AT_SYMLINK_NOFOLLOW) == 0 &&
		    o.st_dev == sb->st_dev && o.st_ino == sb->st_ino) {
			snprintf(other, NAME_MAX_BYTES + 1, "%s", de->d_name);
			found = true;
		}
	}
	closedir(dp);
	return found;
}

/* Open stray SRCFD/NAME for delivery into DIRFD and hold a read lease on
 * it: the kernel grants one only while nobody has the file open for
 * writing (or mapped shared and writable), and an open for writing waits
 * until it is released. OTHER gets the name of a second link in DIRFD
 * ("" if none). */
static int stray_open(int srcfd, const char *name, int dirfd, char other[NAME_MAX_BYTES + 1],
		      int *fdp)
{
	struct stat sb, fsb, dir;
	int fd, err;

	other[0] = '\0';
	/* The type first: opening a FIFO could block, a device could act. */
	if (fstatat(srcfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (!S_ISREG(sb.st_mode))
		return -EINVAL;
	if (fstat(dirfd, &dir) < 0)
		return -errno;
	if (sb.st_dev != dir.st_dev)
		return -EXDEV;
	fd = openat(srcfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &fsb) < 0) {
		err = -errno;
		goto fail;
	}
	if (fsb.st_ino != sb.st_ino || fsb.st_dev != sb.st_dev || !S_ISREG(fsb.st_mode)) {
		err = -EBUSY;		/* replaced under our feet: someone is at work */
		goto fail;
	}
	if (fcntl(fd, F_SETLEASE, F_RDLCK) < 0) {
		err = errno == EAGAIN ? -EBUSY : -errno;
		goto fail;
	}
	if (fsb.st_nlink > 1 && !other_link(dirfd, &fsb, other)) {
		fcntl(fd, F_SETLEASE, F_UNLCK);
		err = -EMLINK;
		goto fail;
	}
	*fdp = fd;
	return 0;
fail:
	close(fd);
	return err;
}

int stray_check(int srcfd, const char *name, int dirfd)
{
	char other[NAME_MAX_BYTES + 1];
	int fd = -1, err = stray_open(srcfd, name, dirfd, other, &fd);

	if (err < 0)
		return err;
	fcntl(fd, F_SETLEASE, F_UNLCK);
	close(fd);
	return 0;
}

int stray_deliver(struct staging *st, int srcfd, const char *name, int dirfd, char *final)
{
	char other[NAME_MAX_BYTES + 1];
	int fd = -1, ret = stray_open(srcfd, name, dirfd, other, &fd);

	if (ret < 0)
		return ret;
	if (other[0] != '\0') {
		/* Delivered already: remove the name left behind, durably
		 * with sync=close, or the next start would find it again. */
		ret = unlinkat(srcfd, name, 0) < 0 ? -errno : 2;
		if (ret == 2 && dir_syncs(st) && fsync(srcfd) < 0)
			ret = -errno;
		if (ret == 2)
			strcpy(final, other);
	} else if (st->sync && fsync(fd) < 0) {
		/* Its data on disk before its name is in the inbox, as a
		 * drop's is before its publication. */
		ret = -errno;
	} else if (fcntl(fd, F_GETLEASE) != F_RDLCK) {
		/* The lease is being broken: an open for writing has found
		 * the file (during the fsync, maybe) and waits for us. Moved
		 * now, it would be written in the inbox; left, it is
		 * delivered once written. */
		ret = -EBUSY;
	} else {
		ret = publish_from(st, srcfd, name, fd, dirfd, name, final);
	}
	fcntl(fd, F_SETLEASE, F_UNLCK);
	close(fd);
	return ret;
}

void recover_staging(struct staging *st, int inbox_fd, struct recovery *r)
{
	memset(r, 0, sizeof(*r));
	recover_old_layout(st, inbox_fd, r);
	recover_areas(st, inbox_fd, r, false);
}

void recover_gone(struct staging *st, int inbox_fd, struct recovery *r)
{
	memset(r, 0, sizeof(*r));
	recover_areas(st, inbox_fd, r, true);
}
