/* Staging: create, publish (renameat2 RENAME_NOREPLACE, or link+unlink
 * where the filesystem lacks it), quarantine. */
#include "staging.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

int staging_open(struct staging *st, int inbox_fd, int dirfd, const char *path)
{
	struct stat in, sg;

	if (mkdirat(dirfd, path, 0700) < 0 && errno != EEXIST)
		return -errno;
	st->dirfd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (st->dirfd < 0)
		return -errno;
	if (fstat(inbox_fd, &in) < 0 || fstat(st->dirfd, &sg) < 0)
		goto fail_errno;
	if (in.st_dev != sg.st_dev) {
		close(st->dirfd);
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
	int ret = place_name(st->names, requested, true, publish_attempt, &a, final);

	if (ret >= 0 && st->sync) {
		/* The new entry and the removal from staging, both durable. */
		if (fsync(dirfd) < 0 || fsync(st->dirfd) < 0)
			log_warn("fsync of directories after publishing %s", final);
	}
	return ret;
}

int quarantine_drop(struct staging *st, const char *name, const char *requested,
		    const char *why)
{
	char q[NAME_MAX_BYTES * 4 + 1];
	struct stat sb;
	long long size = fstatat(st->dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 ? sb.st_size : -1;

	if (renameat(st->dirfd, name, st->incomplete_fd, name) < 0) {
		log_warn("quarantine of %s (\"%s\") failed", name,
			 log_name(requested, q, sizeof(q)));
		return -errno;
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
