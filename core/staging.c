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

#include "log.h"

int staging_open(struct staging *st, int inbox_fd, int dirfd, const char *path)
{
	struct stat in, sg;
	bool created = mkdirat(dirfd, path, 0700) == 0;

	if (!created && errno != EEXIST)
		return -errno;
	st->dirfd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (st->dirfd < 0)
		return -errno;
	if (fstat(inbox_fd, &in) < 0 || fstat(st->dirfd, &sg) < 0)
		goto fail_errno;
	if (in.st_dev != sg.st_dev) {
		close(st->dirfd);
		if (created)	/* leave nothing behind on a refused start */
			unlinkat(dirfd, path, AT_REMOVEDIR);
		return -EXDEV;
	}
	if (mkdirat(st->dirfd, INCOMPLETE_DIR, 0700) < 0 && errno != EEXIST)
		goto fail_errno;
	st->incomplete_fd = openat(st->dirfd, INCOMPLETE_DIR,
				   O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (st->incomplete_fd < 0)
		goto fail_errno;
	return 0;
fail_errno:
	{
		int err = -errno;

		close(st->dirfd);
		return err;
	}
}

void staging_close(struct staging *st)
{
	close(st->incomplete_fd);
	close(st->dirfd);
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
	const char *name;
	int dirfd;
};

static int publish_attempt(const char *final, void *arg)
{
	struct publish_arg *a = arg;

	if (renameat2(a->st->dirfd, a->name, a->dirfd, final, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -errno;
	/* No RENAME_NOREPLACE here: link() never replaces either. */
	if (linkat(a->st->dirfd, a->name, a->dirfd, final, 0) < 0)
		return -errno;
	unlinkat(a->st->dirfd, a->name, 0);
	return 0;
}

int publish_drop(struct staging *st, const char *name, int dirfd,
		 const char *requested, char *final)
{
	struct publish_arg a = { st, name, dirfd };
	struct stat sb;
	/* The reserved name (the stats file's) would hide the message. */
	bool free_name = !st->reserved || strcmp(requested, st->reserved) != 0 ||
			 fstat(dirfd, &sb) < 0 || sb.st_ino != st->top_ino;
	int ret = place_name(st->names, requested, free_name, publish_attempt, &a, final);

	if (ret >= 0 && st->sync) {
		/* The new entry and the removal from staging, both durable. */
		if (fsync(dirfd) < 0 || fsync(st->dirfd) < 0)
			log_warn("fsync of directories after publishing %s", final);
	}
	return ret;
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

static int stage_rename_state(struct staging *st, char name[STAGE_NAME_MAX], char state)
{
	char to[STAGE_NAME_MAX];

	snprintf(to, sizeof(to), "%c%s", state, name + 1);
	if (renameat(st->dirfd, name, st->dirfd, to) < 0)
		return -errno;
	if (st->sync && fsync(st->dirfd) < 0)
		return -errno;
	strcpy(name, to);
	return 0;
}

int stage_ack(struct staging *st, char name[STAGE_NAME_MAX])
{
	return stage_rename_state(st, name, 'a');
}

int stage_unack(struct staging *st, char name[STAGE_NAME_MAX])
{
	return stage_rename_state(st, name, 'd');
}

static int open_origin_dir(int inbox_fd, const struct origin *o)
{
	union {
		struct file_handle fh;
		unsigned char buf[sizeof(struct file_handle) + 128];
	} h;

	h.fh.handle_type = o->handle_type;
	h.fh.handle_bytes = o->handle_bytes;
	memcpy(h.fh.f_handle, o->handle, o->handle_bytes);
	return open_by_handle_at(inbox_fd, &h.fh, O_PATH | O_DIRECTORY | O_CLOEXEC);
}

void recover_staging(struct staging *st, int inbox_fd, struct recovery *r)
{
	char q1[1024], q2[1024], final[NAME_MAX_BYTES + 1];
	int fd = dup(st->dirfd);
	struct dirent *de;
	DIR *dp;

	memset(r, 0, sizeof(*r));
	if (fd < 0 || (dp = fdopendir(fd)) == NULL) {
		log_warn("recovery: cannot read the staging directory");
		if (fd >= 0)
			close(fd);
		r->failed++;
		return;
	}
	while ((de = readdir(dp)) != NULL) {
		struct origin o;
		bool known;

		if ((de->d_name[0] != 'a' && de->d_name[0] != 'd') || de->d_name[1] != '.' ||
		    strlen(de->d_name) >= STAGE_NAME_MAX)
			continue;
		known = stage_get_origin(st->dirfd, de->d_name, &o) == 0;
		if (de->d_name[0] == 'd' || !known) {
			if (quarantine_drop(st, de->d_name, known ? o.name : "(unknown)",
					    de->d_name[0] == 'd' ? "recovery: its writer never saw a successful close"
								 : "recovery: its origin is unreadable") == 0)
				r->quarantined++;
			else
				r->failed++;
			continue;
		}
		/* Acknowledged: deliver it where it was asked for, or at the
		 * inbox's top if that directory is gone. */
		int dirfd = open_origin_dir(inbox_fd, &o);
		int sfd = openat(st->dirfd, de->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
		int ret = publish_drop(st, de->d_name, dirfd >= 0 ? dirfd : inbox_fd, o.name, final);

		if (dirfd >= 0)
			close(dirfd);
		if (sfd >= 0) {
			if (ret >= 0)
				stage_clear_origin(sfd);
			close(sfd);
		}
		if (ret < 0) {
			errno = -ret;
			log_warn("recovery: publishing \"%s\" (%s)", log_name(o.name, q1, sizeof(q1)), de->d_name);
			r->failed++;
			continue;
		}
		log_info("recovery: published \"%s\" as \"%s\"", log_name(o.name, q1, sizeof(q1)),
			 log_name(final, q2, sizeof(q2)));
		r->published++;
	}
	closedir(dp);
}

int quarantine_drop(struct staging *st, const char *name, const char *requested,
		    const char *why)
{
	char q[NAME_MAX_BYTES * 4 + 1];
	struct stat sb;
	long long size = fstatat(st->dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 ? sb.st_size : -1;

	if (renameat(st->dirfd, name, st->incomplete_fd, name) < 0) {
		int err = -errno;

		log_warn("quarantine of %s (\"%s\") failed", name,
			 log_name(requested, q, sizeof(q)));
		return err;
	}
	if (st->sync)
		fsync(st->incomplete_fd);
	log_warnx("quarantined \"%s\" as %s/%s (%lld bytes): %s",
		  log_name(requested, q, sizeof(q)), INCOMPLETE_DIR, name, size, why);
	return 0;
}

int discard_drop(struct staging *st, const char *name)
{
	return unlinkat(st->dirfd, name, 0) < 0 ? -errno : 0;
}
