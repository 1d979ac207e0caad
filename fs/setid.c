/* Set-ID bits (setid.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "setid.h"
#include "transport/transport.h"

bool setid_must_clear(uid_t writer)
{
	int kernel = transport_request_kill_suidgid();

	return kernel >= 0 ? kernel == 1 : writer != 0;
}

int setid_clear(int fd)
{
	char proc[64];
	struct stat st;
	mode_t mode;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return 0;
	mode = st.st_mode & 07777;
	mode &= ~(mode_t)S_ISUID;
	if ((mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP))
		mode &= ~(mode_t)S_ISGID;
	if (mode == (st.st_mode & 07777))
		return 0;
	/* Through /proc: FD may be an O_PATH descriptor (setattr by name). */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	return fchmodat(AT_FDCWD, proc, mode, 0) < 0 ? -errno : 0;
}

int setid_write(uid_t writer, int fd)
{
	return setid_must_clear(writer) ? setid_clear(fd) : 0;
}
