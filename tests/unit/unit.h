/* Shared by the unit test programs: the cmocka include dance and a reset of
 * the XML report, which cmocka will not overwrite (it prints to stderr
 * instead when the file exists, leaving a stale report behind). */
#ifndef INBOXFS_UNIT_H
#define INBOXFS_UNIT_H

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static inline void unit_xml_reset(void)
{
	const char *xml = getenv("CMOCKA_XML_FILE");

	if (xml != NULL && *xml != '\0')
		unlink(xml);
}

/* Write DIRFD/PATH (its directories made as needed) holding CONTENT. */
static inline void write_file(int dirfd, const char *path, const char *content)
{
	char dir[256];
	int fd;

	for (const char *slash = strchr(path, '/'); slash; slash = strchr(slash + 1, '/')) {
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
		assert_true(mkdirat(dirfd, dir, 0755) == 0 || errno == EEXIST);
	}
	fd = openat(dirfd, path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
}

/* Assert DIRFD/PATH holds exactly WANT. */
static inline void assert_content(int dirfd, const char *path, const char *want)
{
	char buf[256];
	ssize_t n;
	int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		fail_msg("cannot open %s: %s", path, strerror(errno));
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	assert_true(n >= 0);
	buf[n] = '\0';
	assert_string_equal(buf, want);
}

/* Is there anything at DIRFD/PATH (a symlink not followed)? */
static inline bool exists(int dirfd, const char *path)
{
	struct stat sb;

	return fstatat(dirfd, path, &sb, AT_SYMLINK_NOFOLLOW) == 0;
}

#endif
