/* The /proc readers of proc.h: the session table's (threads, start times),
 * a close's (task state, pending signals, descriptors held) and the SMB
 * connection watch's (executable, socket descriptors). */
#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- pure parsers ---- */

int proc_stat_parse(const char *buf, struct proc_stat *out)
{
	const char *p = strrchr(buf, ')');
	int field = 3;

	/* The command name (field 2) may hold anything but ends at the last
	 * ')'; the state (3) follows it. */
	if (p == NULL || p[1] != ' ')
		return -EIO;
	memset(out, 0, sizeof(*out));
	out->exit_code = -1;
	for (p += 2; *p && *p != '\n'; field++) {
		char *end;

		if (field == 9)
			out->flags = strtoul(p, &end, 10);
		else if (field == 22)
			out->start = strtoull(p, &end, 10);
		else if (field == 52)
			out->exit_code = (int)strtol(p, &end, 10);
		if (field >= 52)
			break;
		end = strchr(p, ' ');
		if (end == NULL)
			break;
		p = end + 1;
	}
	return field >= 22 ? 0 : -EIO;
}

int proc_status_parse(const char *buf, struct proc_status *out)
{
	static const struct {
		const char *key;
		size_t off;
	} masks[] = {
		{ "\nSigPnd:", offsetof(struct proc_status, sigpnd) },
		{ "\nShdPnd:", offsetof(struct proc_status, shdpnd) },
		{ "\nSigBlk:", offsetof(struct proc_status, sigblk) },
		{ "\nSigIgn:", offsetof(struct proc_status, sigign) },
		{ "\nSigCgt:", offsetof(struct proc_status, sigcgt) },
	};
	unsigned long id[4];
	const char *t = strstr(buf, "\nTgid:"), *u = strstr(buf, "\nUid:");

	memset(out, 0, sizeof(*out));
	if (t == NULL || u == NULL ||
	    sscanf(u + 5, "%lu %lu %lu %lu", &id[0], &id[1], &id[2], &id[3]) != 4)
		return -EIO;
	out->tgid = (pid_t)strtol(t + 6, NULL, 10);
	out->fsuid = (uid_t)id[3];
	for (size_t i = 0; i < sizeof(masks) / sizeof(masks[0]); i++) {
		const char *m = strstr(buf, masks[i].key);

		if (m == NULL)
			return -EIO;
		*(uint64_t *)((char *)out + masks[i].off) =
			strtoull(m + strlen(masks[i].key), NULL, 16);
	}
	return 0;
}

/* The signals whose default action ends the process (signal(7)): every
 * one but SIGCHLD, SIGCONT, SIGURG, SIGWINCH and the stop signals; the
 * real-time ones too. As /proc shows them: bit N-1 for signal N. */
static uint64_t fatal_by_default(void)
{
	static const int spared[] = { SIGCHLD, SIGCONT, SIGURG, SIGWINCH,
				      SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU };
	uint64_t mask = ~0ULL;

	for (size_t i = 0; i < sizeof(spared) / sizeof(spared[0]); i++)
		mask &= ~(1ULL << (spared[i] - 1));
	return mask;
}

bool proc_status_doomed(const struct proc_status *st)
{
	/* A thread's own pending set and its process's shared one. */
	uint64_t pending = st->sigpnd | st->shdpnd;

	if (pending & (1ULL << (SIGKILL - 1)))
		return true;
	return (pending & ~st->sigblk & ~st->sigign & ~st->sigcgt & fatal_by_default()) != 0;
}

int proc_fdinfo_is(const char *buf, int mnt_id, uint64_t ino)
{
	const char *p = strstr(buf, "\nino:"), *m = strstr(buf, "\nmnt_id:"),
		   *f = strstr(buf, "\nflags:");

	if (p == NULL)
		return -ENOTSUP;	/* a kernel before 5.14: cannot tell */
	/* An O_PATH descriptor (Samba keeps such "pathrefs") holds no open
	 * file: it cannot read or write the drop. */
	if (f && (strtoul(f + 7, NULL, 8) & O_PATH))
		return 0;
	return strtoull(p + 5, NULL, 10) == ino &&
	       (mnt_id == 0 || (m && atoi(m + 8) == mnt_id));
}

int proc_socket_ino(const char *link, uint64_t *ino)
{
	unsigned long long n;

	if (sscanf(link, "socket:[%llu]", &n) != 1)
		return 0;
	*ino = n;
	return 1;
}

void proc_unescape_octal(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

/* ---- readers ---- */

int proc_read(const char *path, char *buf, size_t size)
{
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESRCH : -errno;
	n = read(fd, buf, size - 1);
	close(fd);
	/* What it shows went away between the open and the read: an fdinfo
	 * file's descriptor closed (ENOENT), a thread gone (ESRCH). */
	if (n <= 0)
		return n < 0 && errno != ESRCH && errno != ENOENT ? -errno : -ESRCH;
	buf[n] = '\0';
	return 0;
}

/* Thread TID's status (the whole file: its masks come last but one). */
static int read_status(pid_t tid, struct proc_status *st)
{
	char path[64], buf[4096];
	int ret;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	ret = proc_read(path, buf, sizeof(buf));
	return ret < 0 ? ret : proc_status_parse(buf, st);
}

int proc_tid_status(pid_t tid, pid_t *tgid, uid_t *fsuid)
{
	struct proc_status st;
	int ret = read_status(tid, &st);

	if (ret < 0)
		return ret;
	*tgid = st.tgid;
	if (fsuid)
		*fsuid = st.fsuid;
	return st.tgid > 0 ? 0 : -ESRCH;
}

int tid_to_tgid(pid_t tid, pid_t *tgid)
{
	return proc_tid_status(tid, tgid, NULL);
}

static int read_stat(const char *path, struct proc_stat *st)
{
	char buf[1024];
	int ret = proc_read(path, buf, sizeof(buf));

	return ret < 0 ? ret : proc_stat_parse(buf, st);
}

int proc_start(pid_t pid, unsigned long long *start)
{
	struct proc_stat st;
	char path[64];
	int ret;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	ret = read_stat(path, &st);
	if (ret == 0)
		*start = st.start;
	return ret;
}

int proc_thread_start(pid_t tgid, pid_t tid, unsigned long long *start)
{
	struct proc_stat st;
	char path[80];
	int ret;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)tgid, (int)tid);
	ret = read_stat(path, &st);
	if (ret == 0)
		*start = st.start;
	return ret;
}

int task_state(pid_t tid)
{
	struct proc_stat st;
	char path[64];
	int ret;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)tid);
	ret = read_stat(path, &st);
	if (ret < 0)
		return ret;
	if (!(st.flags & 0x4))	/* PF_EXITING */
		return TASK_RUNNING;
	if (st.exit_code < 0)
		return -EIO;
	/* terminated by a signal? */
	return (st.exit_code & 0x7f) != 0 ? TASK_KILLED : TASK_EXITING;
}

int task_doomed(pid_t tid)
{
	struct proc_status st;
	int ret = read_status(tid, &st);

	return ret < 0 ? ret : proc_status_doomed(&st);
}

bool proc_exe_is(pid_t pid, const char *name)
{
	char path[64], exe[PATH_MAX];
	const char *base;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	n = readlink(path, exe, sizeof(exe) - 1);
	if (n <= 0)
		return false;
	exe[n] = '\0';
	/* A binary replaced by an upgrade while it runs reads "... (deleted)". */
	if (n > 10 && strcmp(exe + n - 10, " (deleted)") == 0)
		exe[n - 10] = '\0';
	base = strrchr(exe, '/');
	return strcmp(base ? base + 1 : exe, name) == 0;
}

int proc_fds(pid_t pid, int (*fn)(pid_t pid, const char *fd, const char *link, size_t len,
				  void *arg), void *arg)
{
	char path[64], link[PATH_MAX];
	struct dirent *de;
	int dfd, ret = 0;
	DIR *dp;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	dp = fdopendir(dfd);
	if (dp == NULL) {
		ret = -errno;
		close(dfd);
		return ret;
	}
	while (ret == 0 && (errno = 0, de = readdir(dp)) != NULL) {
		ssize_t n;

		if (de->d_name[0] == '.')
			continue;
		n = readlinkat(dfd, de->d_name, link, sizeof(link) - 1);
		if (n < 0)
			continue;	/* closed while we looked */
		link[n] = '\0';
		ret = fn(pid, de->d_name, link, (size_t)n, arg);
	}
	if (ret == 0 && de == NULL && errno != 0)
		ret = -errno;
	closedir(dp);
	return ret;
}

struct holds {
	const char *prefix;
	size_t plen;
	int mnt_id;
	uint64_t ino;
};

static int holds_one(pid_t pid, const char *fd, const char *link, size_t len, void *arg)
{
	const struct holds *h = arg;
	char path[96], buf[512];
	int ret;

	/* Only a file below the mount can be it: its fdinfo tells. */
	if (len < h->plen || memcmp(link, h->prefix, h->plen) != 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%s", (int)pid, fd);
	ret = proc_read(path, buf, sizeof(buf));
	if (ret == -ESRCH)
		return 0;	/* closed while we looked */
	return ret < 0 ? ret : proc_fdinfo_is(buf, h->mnt_id, h->ino);
}

int proc_holds_file(pid_t pid, const char *prefix, int mnt_id, uint64_t ino)
{
	struct holds h = { .prefix = prefix, .plen = strlen(prefix), .mnt_id = mnt_id, .ino = ino };
	int ret = proc_fds(pid, holds_one, &h);

	/* The process gone (its descriptor table unreadable) holds nothing;
	 * holds_one() never ends the scan with those: a descriptor closed
	 * while we looked is skipped, and the scan goes on to the others. */
	return ret == -ENOENT || ret == -ESRCH ? 0 : ret;
}
