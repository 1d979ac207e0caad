/* Which durable close a filesystem gets (durable.h). */
#include "durable.h"
#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <unistd.h>

#define EXT4_MAGIC 0xEF53UL	/* ext2, ext3 and ext4 alike: the journal tells */
#define XFS_MAGIC 0x58465342UL	/* "XFSB": always a log */

/* Linux 6.10's FS_IOC_GETFSSYSFSPATH ("ext4/sda1"), absent from older
 * headers. */
struct sysfs_path {
	uint8_t len;
	uint8_t name[128];
};
#define GETFSSYSFSPATH _IOR(0x15, 1, struct sysfs_path)

/* Is OPT one of the comma-separated items of LIST? */
static int has_option(const char *list, const char *opt)
{
	size_t n = strlen(opt);

	for (const char *p = list; p != NULL; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
		if (strncmp(p, opt, n) == 0 && (p[n] == ',' || p[n] == '\0'))
			return 1;
	}
	return 0;
}

enum durable_path durable_choose(unsigned long magic, const char *journal_task,
				 bool journal_inside, const char *super_options, const char **why)
{
	if (magic == XFS_MAGIC) {
		if (super_options == NULL || strstr(super_options, "logdev=") != NULL) {
			*why = super_options == NULL ? "XFS whose mount options cannot be read"
						     : "XFS with an external log";
			return DURABLE_FSYNC;
		}
		*why = "XFS";
		return DURABLE_ONE_COMMIT;
	}
	if (magic != EXT4_MAGIC) {
		*why = "neither ext4 nor XFS";
		return DURABLE_FSYNC;
	}
	/* The journal thread's pid (0 when it is outside our pid namespace),
	 * or "<none>". */
	if (journal_task == NULL || journal_task[0] < '0' || journal_task[0] > '9') {
		*why = journal_task == NULL ? "ext4 whose journal cannot be told" : "ext4 without a journal";
		return DURABLE_FSYNC;
	}
	/* An external journal's commit flushes its own device; the data's
	 * is flushed only for data the commit wrote itself. */
	if (!journal_inside) {
		*why = "ext4 whose journal is on another device, or cannot be told";
		return DURABLE_FSYNC;
	}
	if (super_options == NULL) {
		*why = "ext4 whose mount options cannot be read";
		return DURABLE_FSYNC;
	}
	if (has_option(super_options, "data=journal") || has_option(super_options, "data=writeback") ||
	    has_option(super_options, "journal_async_commit")) {
		*why = "ext4 with data=journal, data=writeback or journal_async_commit";
		return DURABLE_FSYNC;
	}
	*why = "journaled ext4, data=ordered";
	return DURABLE_ONE_COMMIT;
}

const char *durable_path_name(enum durable_path p)
{
	return p == DURABLE_ONE_COMMIT ? "one journal commit (data written out, then the directory's fsync)"
				       : "fsync of the drop, then of its directory";
}

/* The filesystem's directory under /sys/fs ("ext4/loop0") into BUF. */
static int sysfs_dir(int fd, const struct stat *sb, char *buf, size_t size)
{
	struct sysfs_path sp = { 0 };
	char link[64], target[PATH_MAX];
	ssize_t n;

	if (ioctl(fd, GETFSSYSFSPATH, &sp) == 0 && sp.len > 0 && sp.len < sizeof(sp.name)) {
		snprintf(buf, size, "%.*s", (int)sp.len, (const char *)sp.name);
		return 0;
	}
	/* Before 6.10: ext4 names it after its block device. */
	snprintf(link, sizeof(link), "/sys/dev/block/%u:%u", major(sb->st_dev), minor(sb->st_dev));
	n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		return -errno;
	target[n] = '\0';
	const char *base = strrchr(target, '/') ? strrchr(target, '/') + 1 : target;

	if (strlen(base) + 6 > size)
		return -ENAMETOOLONG;
	memcpy(buf, "ext4/", 5);
	memcpy(buf + 5, base, strlen(base) + 1);
	return 0;
}

/* The first line of /sys/fs/DIR/journal_task into BUF. */
static int journal_task(const char *dir, char *buf, size_t size)
{
	char path[PATH_MAX];
	int ret;

	snprintf(path, sizeof(path), "/sys/fs/%s/journal_task", dir);
	ret = proc_read(path, buf, size);
	if (ret == 0)
		buf[strcspn(buf, "\n")] = '\0';
	return ret;
}

/* Is there an internal journal of the filesystem at /sys/fs/DIR? jbd2
 * names one in /proc/fs/jbd2 after the filesystem's device and the
 * journal's inode ("loop0-8"), an external one after its own device. */
static bool journal_inside(const char *dir)
{
	const char *dev = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
	size_t n = strlen(dev);
	bool found = false;
	struct dirent *de;
	DIR *dp = opendir("/proc/fs/jbd2");

	if (dp == NULL)
		return false;
	while (!found && (de = readdir(dp)) != NULL) {
		const char *ino = de->d_name + n + 1;

		found = strncmp(de->d_name, dev, n) == 0 && de->d_name[n] == '-' &&
			*ino >= '1' && *ino <= '9' && ino[strspn(ino, "0123456789")] == '\0';
	}
	closedir(dp);
	return found;
}

/* The super options of device DEV's filesystem from /proc/self/mountinfo
 * (the last field of its line) into BUF. */
static int super_options(dev_t dev, char *buf, size_t size)
{
	char line[4096], want[32];
	int ret = -ENOENT;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	if (f == NULL)
		return -errno;
	snprintf(want, sizeof(want), " %u:%u ", major(dev), minor(dev));
	while (ret != 0 && fgets(line, sizeof(line), f) != NULL) {
		char *dev_at = strstr(line, want), *sep = strstr(line, " - "), *last;

		/* Fields: id parent MAJ:MIN root mountpoint ... - type source options */
		if (dev_at == NULL || sep == NULL || dev_at > sep)
			continue;
		line[strcspn(line, "\n")] = '\0';
		last = strrchr(sep + 3, ' ');
		if (last == NULL)
			continue;
		snprintf(buf, size, "%s", last + 1);
		ret = 0;
	}
	fclose(f);
	return ret;
}

enum durable_path durable_probe(int fd, const char **why)
{
	char dir[160], task[32], opts[1024];
	struct statfs sf;
	struct stat sb;

	if (fstatfs(fd, &sf) < 0 || fstat(fd, &sb) < 0) {
		*why = "its filesystem cannot be told";
		return DURABLE_FSYNC;
	}
	if ((unsigned long)sf.f_type != EXT4_MAGIC)
		return durable_choose((unsigned long)sf.f_type, NULL, false,
				      super_options(sb.st_dev, opts, sizeof(opts)) == 0 ? opts : NULL, why);
	if (sysfs_dir(fd, &sb, dir, sizeof(dir)) < 0)
		return durable_choose((unsigned long)sf.f_type, NULL, false, NULL, why);
	return durable_choose((unsigned long)sf.f_type,
			      journal_task(dir, task, sizeof(task)) == 0 ? task : NULL,
			      journal_inside(dir),
			      super_options(sb.st_dev, opts, sizeof(opts)) == 0 ? opts : NULL, why);
}
