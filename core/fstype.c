/* Filesystem types from mountinfo (fstype.h). */
#include "fstype.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int mountinfo_fstype(const char *line, int mnt_id, char *fstype, size_t size)
{
	const char *dash = strstr(line, " - "), *end;
	char *after;
	long id;

	errno = 0;
	id = strtol(line, &after, 10);
	if (dash == NULL || after == line || *after != ' ' || errno != 0 || size == 0)
		return -EINVAL;
	if (id != mnt_id)
		return 0;
	dash += 3;
	end = dash + strcspn(dash, " \n");
	if (end == dash || (size_t)(end - dash) >= size)
		return -EINVAL;
	memcpy(fstype, dash, (size_t)(end - dash));
	fstype[end - dash] = '\0';
	return 1;
}

/* The mount id of FD from its fdinfo ("mnt_id:", since Linux 3.15). */
static int fd_mnt_id(int fd)
{
	char path[64], buf[512];
	const char *m;
	ssize_t n;
	int info;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	info = open(path, O_RDONLY | O_CLOEXEC);
	if (info < 0)
		return -errno;
	n = read(info, buf, sizeof(buf) - 1);
	close(info);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	m = strstr(buf, "mnt_id:");
	return m == NULL ? -ENOTSUP : atoi(m + 7);
}

int fd_fstype(int fd, char *fstype, size_t size)
{
	char line[4096];
	int id = fd_mnt_id(fd), ret = -ENOENT;
	FILE *f;

	if (id < 0)
		return id;
	f = fopen("/proc/self/mountinfo", "re");
	if (f == NULL)
		return -errno;
	while (ret == -ENOENT && fgets(line, sizeof(line), f)) {
		int got = mountinfo_fstype(line, id, fstype, size);

		if (got == 1)
			ret = 0;
	}
	fclose(f);
	return ret;
}

bool fstype_dirsync_noop(const char *fstype)
{
	return strcmp(fstype, "fuse.glusterfs") == 0;
}
