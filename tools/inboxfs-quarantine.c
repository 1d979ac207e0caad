/* inboxfs-quarantine: list, inspect, release and purge the drops inboxfs
 * quarantined (R6).
 *
 * A drop whose writer never saw its close succeed is never delivered: the
 * daemon moves it to STAGING/incomplete/ (STAGING is INBOX/.inboxfs unless
 * it runs with staging=). This tool finds every incomplete/ directory of
 * the staging directory (incomplete/ and AREA/incomplete/). It links the
 * core library: a release names, publishes and reads the origin exactly as
 * the daemon and its recovery do (publish_inside(), unique_name() under
 * the names= template the instances record in STAGING/names,
 * stage_get_origin()), and nothing of the drop is removed before the
 * release has succeeded. Whatever a client chose (names) is printed
 * escaped: a name is no terminal's command. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <dirent.h>
#include <unistd.h>

#include "names.h"
#include "proc.h"
#include "staging.h"
#include "stats.h"

#define PROG "inboxfs-quarantine"
#define HEAD_BYTES 512
/* An escaped name: at most four bytes for each of its bytes. */
#define PRINTABLE_MAX (4 * (2 * NAME_MAX_BYTES + 1) + 1)

static const char usage_text[] =
"usage: " PROG " list    [--staging DIR] [--json] INBOX\n"
"       " PROG " show    [--staging DIR] INBOX ID\n"
"       " PROG " release [--staging DIR] [--names TEMPLATE] [--name NAME] INBOX ID\n"
"       " PROG " purge   [--staging DIR] --older-than DAYS [--dry-run] INBOX\n"
"\n"
"Quarantined inboxfs drops: list, show, release into the inbox, purge.\n"
"ID is what `list` prints. --names overrides the names= template the\n"
"inbox's instances recorded in the staging directory. See inboxfs-quarantine(8).\n";

/* One line on stderr and exit 1: every failure of the tool. */
static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* A release or purge: to syslog and stderr. */
static void notice(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void notice(const char *fmt, ...)
{
	char msg[4 * PATH_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	openlog(PROG, LOG_PID, LOG_DAEMON);
	syslog(LOG_NOTICE, "%s", msg);
	closelog();
	fprintf(stderr, PROG ": %s\n", msg);
}

/* ------------------------------------------------------------ the layout */

/* Is the topmost mount at REAL (a resolved path) an inboxfs? */
static bool inboxfs_mounted_at(const char *real)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	bool top = false;

	if (f == NULL)
		fail("/proc/self/mountinfo: %s", strerror(errno));
	while (getline(&line, &cap, f) > 0) {
		char *save = NULL, *field = strtok_r(line, " ", &save);
		char *point = NULL;

		for (int i = 1; field != NULL && i < 5; i++)
			field = strtok_r(NULL, " ", &save);
		point = field;
		while (field != NULL && strcmp(field, "-") != 0)
			field = strtok_r(NULL, " ", &save);
		if (point == NULL || field == NULL || (field = strtok_r(NULL, " ", &save)) == NULL)
			continue;
		proc_unescape_octal(point);
		if (strcmp(point, real) == 0)
			top = strcmp(field, "fuse.inboxfs") == 0;
	}
	free(line);
	fclose(f);
	return top;
}

/* An over-mount hides the staging directory from everyone: go on in a
 * mount namespace of our own in which the inboxfs mount at REAL is
 * detached, so that the path reaches the directory beneath it. */
static void beneath_the_mount(const char *real)
{
	if (unshare(CLONE_NEWNS) < 0)
		fail("%s is an inboxfs mount; a private mount namespace: %s", real,
		     strerror(errno));
	/* Nothing done here reaches the host's namespace. (The kernel reads
	 * no source or type for a propagation change; "none" for valgrind.) */
	if (mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0)
		fail("making the mounts private: %s", strerror(errno));
	if (umount2(real, MNT_DETACH) < 0)
		fail("%s: detaching the inboxfs mount: %s", real, strerror(errno));
	if (inboxfs_mounted_at(real))
		fail("%s: still an inboxfs mount after detaching it", real);
}

struct area {
	char name[NAME_MAX_BYTES + 1];	/* "" for STAGING/incomplete */
	int fd;				/* its incomplete/ */
};

struct drop {
	char id[2 * NAME_MAX_BYTES + 2];	/* NAME, or AREA/NAME */
	char name[NAME_MAX_BYTES + 1];		/* in the area's incomplete/ */
	char path[PATH_MAX];
	const struct area *area;
	bool known;				/* its origin was readable */
	struct origin o;
	struct stat sb;
};

struct quarantine {
	char staging[PATH_MAX];
	int rootfd;
	struct area *areas;
	size_t n_areas;
	struct drop *drops;
	size_t n_drops;
};

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in DIRFD for which KEEP holds, sorted (bytes, as the kernel
 * has them). */
static char **sorted_entries(int dirfd, bool (*keep)(int dirfd, const char *name), size_t *n)
{
	int own = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dp = own < 0 ? NULL : fdopendir(own);
	char **names = NULL;
	struct dirent *de;
	size_t cap = 0;

	if (dp == NULL)
		fail("reading a staging directory: %s", strerror(errno));
	*n = 0;
	while ((de = readdir(dp)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
		    !keep(dirfd, de->d_name))
			continue;
		if (*n == cap) {
			cap = cap ? 2 * cap : 16;
			names = realloc(names, cap * sizeof(*names));
			if (names == NULL)
				fail("%s", strerror(ENOMEM));
		}
		if ((names[(*n)++] = strdup(de->d_name)) == NULL)
			fail("%s", strerror(ENOMEM));
	}
	closedir(dp);
	if (*n > 0)
		qsort(names, *n, sizeof(*names), by_name);
	return names;
}

static void free_entries(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

static bool is_dir(int dirfd, const char *name)
{
	struct stat sb;

	return fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(sb.st_mode);
}

static bool is_file(int dirfd, const char *name)
{
	struct stat sb;

	return fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(sb.st_mode);
}

static void add_area(struct quarantine *q, const char *name, int fd)
{
	struct area *a = realloc(q->areas, (q->n_areas + 1) * sizeof(*a));

	if (a == NULL)
		fail("%s", strerror(ENOMEM));
	q->areas = a;
	a += q->n_areas++;
	snprintf(a->name, sizeof(a->name), "%s", name);
	a->fd = fd;
}

/* STAGING/incomplete (area "") and STAGING/AREA/incomplete that exist. */
static void find_areas(struct quarantine *q)
{
	char **names;
	size_t n;
	int fd = openat(q->rootfd, INCOMPLETE_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd >= 0)
		add_area(q, "", fd);
	names = sorted_entries(q->rootfd, is_dir, &n);
	for (size_t i = 0; i < n; i++) {
		int afd;

		if (strcmp(names[i], INCOMPLETE_DIR) == 0)
			continue;
		afd = openat(q->rootfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (afd < 0)
			continue;
		fd = openat(afd, INCOMPLETE_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(afd);
		if (fd >= 0)
			add_area(q, names[i], fd);
	}
	free_entries(names, n);
}

static void find_drops(struct quarantine *q)
{
	for (size_t i = 0; i < q->n_areas; i++) {
		const struct area *a = &q->areas[i];
		size_t n;
		char **names = sorted_entries(a->fd, is_file, &n);
		struct drop *d = realloc(q->drops, (q->n_drops + n + 1) * sizeof(*d));

		if (d == NULL)
			fail("%s", strerror(ENOMEM));
		q->drops = d;
		for (size_t k = 0; k < n; k++) {
			d = &q->drops[q->n_drops];
			memset(d, 0, sizeof(*d));
			if (fstatat(a->fd, names[k], &d->sb, AT_SYMLINK_NOFOLLOW) < 0)
				continue;	/* released or purged meanwhile */
			d->area = a;
			snprintf(d->name, sizeof(d->name), "%s", names[k]);
			snprintf(d->id, sizeof(d->id), "%s%s%s", a->name, a->name[0] ? "/" : "",
				 names[k]);
			if (snprintf(d->path, sizeof(d->path), "%s/%s%s" INCOMPLETE_DIR "/%s",
				     q->staging, a->name, a->name[0] ? "/" : "",
				     names[k]) >= (int)sizeof(d->path))
				fail("%s: a path too long", q->staging);
			d->known = stage_get_origin(a->fd, names[k], &d->o) == 0;
			q->n_drops++;
		}
		free_entries(names, n);
	}
}

static void open_staging(struct quarantine *q, const char *inbox, const char *staging)
{
	if (staging == NULL)
		snprintf(q->staging, sizeof(q->staging), "%s/%s", inbox, STAGING_DIR);
	else if (staging[0] == '/')
		snprintf(q->staging, sizeof(q->staging), "%s", staging);
	else
		snprintf(q->staging, sizeof(q->staging), "%s/%s", inbox, staging);
	q->rootfd = open(q->staging, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (q->rootfd < 0 && errno == ENOENT)
		fail("%s: no staging directory (is this the inbox, not the mount? give --staging "
		     "if inboxfs runs with staging=)", q->staging);
	if (q->rootfd < 0)
		fail("%s: %s", q->staging, strerror(errno));
	find_areas(q);
	find_drops(q);
}

/* What the staged name and the origin tell (the log line of the
 * quarantine says exactly why). */
static const char *why(const struct drop *d)
{
	if (!d->known)
		return "its origin is unreadable (no requested name was recorded)";
	if (strncmp(d->name, "a.", 2) == 0)
		return "acknowledged but its publication failed";
	if (strncmp(d->name, "d.", 2) == 0)
		return "its writer never saw its close succeed (killed, connection lost, "
		       "a failed write, or a crash)";
	return "unknown";
}

static struct drop *find(struct quarantine *q, const char *id)
{
	for (size_t i = 0; i < q->n_drops; i++) {
		if (strcmp(q->drops[i].id, id) == 0 || strcmp(q->drops[i].name, id) == 0)
			return &q->drops[i];
	}
	char p[PRINTABLE_MAX];
	fail("no quarantined drop \"%s\" (see `" PROG " list`)", name_printable(id, p, sizeof(p)));
}

static void iso_time(time_t t, char buf[32])
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ----------------------------------------------------------------- output */

/* S as a JSON string: ASCII only, every other character as \uXXXX (a
 * surrogate pair above U+FFFF), and a byte that is not UTF-8 as the lone
 * surrogate U+DC80..U+DCFF, as Python's surrogateescape reads it back. */
static void json_string(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n;

	if (s == NULL) {
		fputs("null", stdout);
		return;
	}
	n = strlen(s);
	putchar('"');
	for (size_t i = 0; i < n;) {
		size_t len = utf8_char_len(p + i, n - i);
		unsigned cp;

		if (len == 0) {
			printf("\\u%04x", 0xdc00u | p[i]);
			i++;
			continue;
		}
		if (len == 1) {
			if (p[i] == '"' || p[i] == '\\')
				printf("\\%c", p[i]);
			else if (p[i] < 0x20 || p[i] == 0x7f)
				printf("\\u%04x", p[i]);
			else
				putchar(p[i]);
			i++;
			continue;
		}
		cp = p[i] & (len == 2 ? 0x1f : len == 3 ? 0x0f : 0x07);
		for (size_t k = 1; k < len; k++)
			cp = (cp << 6) | (p[i + k] & 0x3f);
		if (cp >= 0x10000)
			printf("\\u%04x\\u%04x", 0xd800 + ((cp - 0x10000) >> 10),
			       0xdc00 + ((cp - 0x10000) & 0x3ff));
		else
			printf("\\u%04x", cp);
		i += len;
	}
	putchar('"');
}

static void list_json(const struct quarantine *q)
{
	if (q->n_drops == 0) {
		puts("[]");
		return;
	}
	puts("[");
	for (size_t i = 0; i < q->n_drops; i++) {
		const struct drop *d = &q->drops[i];
		char t[32];

		iso_time(d->sb.st_mtim.tv_sec, t);
		fputs(" {\n  \"id\": ", stdout);
		json_string(d->id);
		fputs(",\n  \"path\": ", stdout);
		json_string(d->path);
		fputs(",\n  \"requested\": ", stdout);
		json_string(d->known ? d->o.name : NULL);
		printf(",\n  \"size\": %lld,\n  \"mtime\": %lld.%06ld,\n  \"time\": \"%s\",\n"
		       "  \"uid\": %u,\n  \"why\": ", (long long)d->sb.st_size,
		       (long long)d->sb.st_mtim.tv_sec, d->sb.st_mtim.tv_nsec / 1000, t,
		       (unsigned)d->sb.st_uid);
		json_string(why(d));
		printf("\n }%s\n", i + 1 < q->n_drops ? "," : "");
	}
	puts("]");
}

static const char *requested_printable(const struct drop *d, char *buf, size_t size)
{
	return d->known ? name_printable(d->o.name, buf, size) : "(unknown)";
}

static void list_text(const struct quarantine *q)
{
	char p[PRINTABLE_MAX], id[PRINTABLE_MAX], t[32];
	int width = 2;

	if (q->n_drops == 0) {
		puts("no quarantined drops");
		return;
	}
	for (size_t i = 0; i < q->n_drops; i++) {
		int w = (int)strlen(name_printable(q->drops[i].id, id, sizeof(id)));

		if (w > width)
			width = w;
	}
	printf("%-*s  %10s  %-20s  REQUESTED NAME  (WHY)\n", width, "ID", "SIZE", "QUARANTINED");
	for (size_t i = 0; i < q->n_drops; i++) {
		const struct drop *d = &q->drops[i];

		iso_time(d->sb.st_mtim.tv_sec, t);
		printf("%-*s  %10lld  %-20s  %s  (%s)\n", width, name_printable(d->id, id, sizeof(id)),
		       (long long)d->sb.st_size, t, requested_printable(d, p, sizeof(p)), why(d));
	}
}

static void show(const struct drop *d)
{
	char p[PRINTABLE_MAX], t[32];
	unsigned char head[HEAD_BYTES];
	ssize_t n;
	int fd = openat(d->area->fd, d->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0)
		fail("%s: %s", name_printable(d->path, p, sizeof(p)), strerror(errno));
	iso_time(d->sb.st_mtim.tv_sec, t);
	printf("%-11s%s\n", "id:", name_printable(d->id, p, sizeof(p)));
	printf("%-11s%s\n", "path:", name_printable(d->path, p, sizeof(p)));
	printf("%-11s%s\n", "requested:", requested_printable(d, p, sizeof(p)));
	printf("%-11s%lld\n", "size:", (long long)d->sb.st_size);
	printf("%-11s%s\n", "time:", t);
	printf("%-11s%u\n", "uid:", (unsigned)d->sb.st_uid);
	printf("%-11s%s\n", "why:", why(d));
	n = read(fd, head, sizeof(head));
	close(fd);
	if (n < 0)
		fail("%s: %s", name_printable(d->path, p, sizeof(p)), strerror(errno));
	/* The bytes as printable ASCII: a message is no terminal's either. */
	fputs("content:   ", stdout);
	for (ssize_t i = 0; i < n; i++) {
		unsigned char c = head[i];

		if (c == '\\')
			fputs("\\\\", stdout);
		else if (c == '\n')
			fputs("\\n", stdout);
		else if (c == '\r')
			fputs("\\r", stdout);
		else if (c == '\t')
			fputs("\\t", stdout);
		else if (c >= 0x20 && c < 0x7f)
			putchar(c);
		else
			printf("\\x%02x", c);
	}
	puts(d->sb.st_size > HEAD_BYTES ? "..." : "");
}

/* ---------------------------------------------------------------- release */

/* Deliver D into the inbox as the daemon would have: the directory it was
 * dropped in while that is inside the inbox, else the top; the requested
 * name (or WANTED), else a unique one of template T; atomically, never
 * over a file, synced. */
static void release(struct quarantine *q, const char *inbox, struct drop *d, const char *wanted,
		    const struct name_template *t)
{
	char final[NAME_MAX_BYTES + 1], p1[PRINTABLE_MAX], p2[PRINTABLE_MAX], p3[PRINTABLE_MAX];
	char where_path[PATH_MAX] = "?", link[64];
	struct staging st;
	struct stat sb;
	enum delivery where;
	int inbox_fd, fd, dirfd, ret;
	ssize_t n;

	if (wanted == NULL)
		wanted = d->known ? d->o.name : d->name;
	if (name_check(wanted) < 0)
		fail("\"%s\" is not a file name", name_printable(wanted, p1, sizeof(p1)));
	inbox_fd = open(inbox, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (inbox_fd < 0 || fstat(inbox_fd, &sb) < 0)
		fail("%s: %s", inbox, strerror(errno));
	fd = openat(d->area->fd, d->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	/* Whoever reads the inbox sees it complete: on disk before it appears. */
	if (fd < 0 || fsync(fd) < 0)
		fail("%s: %s", name_printable(d->path, p1, sizeof(p1)), strerror(errno));

	memset(&st, 0, sizeof(st));
	st.rootfd = q->rootfd;
	st.dirfd = st.lockfd = -1;
	st.incomplete_fd = d->area->fd;
	st.noreplace = true;		/* else link() and unlink(), as it fails */
	st.sync = true;
	st.names = t;
	st.reserved = STATS_FILE;
	st.top_ino = sb.st_ino;
	dirsync_init(&st.dirsync);
	dirfd = d->known ? origin_open_dir(inbox_fd, &d->o) : -ESTALE;
	ret = publish_inside(&st, d->area->fd, d->name, -1, inbox_fd, dirfd, wanted, final, &where);
	dirsync_destroy(&st.dirsync);
	if (ret < 0)
		fail("releasing %s as \"%s\": %s (it stays quarantined)",
		     name_printable(d->id, p1, sizeof(p1)), name_printable(wanted, p2, sizeof(p2)),
		     strerror(-ret));
	/* Delivered: its removal from incomplete/ is made durable. */
	close(fd);
	if (fsync(d->area->fd) < 0)
		fprintf(stderr, PROG ": syncing %s after the release: %s\n",
			name_printable(d->path, p1, sizeof(p1)), strerror(errno));
	snprintf(link, sizeof(link), "/proc/self/fd/%d", where == DELIVERED_ASKED ? dirfd : inbox_fd);
	n = readlink(link, where_path, sizeof(where_path) - 1);
	if (n >= 0)
		where_path[n] = '\0';
	if (dirfd >= 0)
		close(dirfd);
	close(inbox_fd);
	/* Without an origin there is no directory to speak of. */
	if (!d->known)
		where = DELIVERED_ASKED;
	notice("released %s (requested %s%s%s, %lld bytes) as \"%s/%s\"%s%s%s",
	       name_printable(d->id, p1, sizeof(p1)), d->known ? "\"" : "",
	       requested_printable(d, p2, sizeof(p2)), d->known ? "\"" : "",
	       (long long)d->sb.st_size, where_path, name_printable(final, p3, sizeof(p3)),
	       where == DELIVERED_ASKED ? "" : " (its directory ", delivery_why(where),
	       where == DELIVERED_ASKED ? "" : ": at the inbox's top)");
	puts(name_printable(final, p1, sizeof(p1)));
}

/* The template a release names by: --names, else what the instances
 * recorded, else the default (instances of a version that records none). */
static void names_template(const struct quarantine *q, const char *spec,
			   struct name_template *t)
{
	char why_not[256];
	int ret;

	if (spec != NULL) {
		if (name_template_check(spec, t, why_not, sizeof(why_not)) < 0)
			fail("--names %s: %s", spec, why_not);
		return;
	}
	ret = staging_names(q->rootfd, t);
	if (ret == -ENOENT)
		ret = name_template_parse("default", t);
	if (ret < 0)
		fail("%s/" NAMES_FILE ": %s (give --names)", q->staging,
		     ret == -EINVAL ? "not a names= template" : strerror(-ret));
}

static void purge(const struct quarantine *q, double days, bool dry_run)
{
	const char *verb = dry_run ? "would remove" : "removed";
	double limit = (double)time(NULL) - days * 86400;
	char p1[PRINTABLE_MAX], p2[PRINTABLE_MAX], t[32];
	size_t removed = 0;

	for (size_t i = 0; i < q->n_drops; i++) {
		const struct drop *d = &q->drops[i];
		double mtime = (double)d->sb.st_mtim.tv_sec + d->sb.st_mtim.tv_nsec / 1e9;

		if (mtime >= limit)
			continue;
		iso_time(d->sb.st_mtim.tv_sec, t);
		if (!dry_run) {
			if (unlinkat(d->area->fd, d->name, 0) < 0)
				fail("%s: %s", name_printable(d->path, p1, sizeof(p1)), strerror(errno));
			notice("purged %s (requested %s%s%s, %lld bytes, quarantined %s)",
			       name_printable(d->id, p1, sizeof(p1)), d->known ? "\"" : "",
			       requested_printable(d, p2, sizeof(p2)), d->known ? "\"" : "",
			       (long long)d->sb.st_size, t);
		}
		printf("%s %s (%lld bytes, %s)\n", verb, name_printable(d->id, p1, sizeof(p1)),
		       (long long)d->sb.st_size, t);
		removed++;
	}
	printf("%s %zu drop(s) older than %g days\n", verb, removed, days);
}

/* ------------------------------------------------------------------- main */

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (see " PROG " --help)\n", stderr);
	exit(1);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "staging", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "name", required_argument, NULL, 'n' },
		{ "names", required_argument, NULL, 'N' },
		{ "older-than", required_argument, NULL, 'o' },
		{ "dry-run", no_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *staging = NULL, *name = NULL, *names = NULL, *cmd, *inbox;
	bool json = false, dry_run = false, older = false;
	double days = 0;
	struct quarantine q = { .rootfd = -1 };
	struct name_template t;
	char real[PATH_MAX], *end;
	struct stat sb;
	int c, want;

	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		fputs(usage_text, stdout);
		return 0;
	}
	if (argc < 2)
		usage_error("a command is required: list, show, release or purge");
	cmd = argv[1];
	if (strcmp(cmd, "list") != 0 && strcmp(cmd, "show") != 0 &&
	    strcmp(cmd, "release") != 0 && strcmp(cmd, "purge") != 0)
		usage_error("%s: not a command (list, show, release, purge)", cmd);
	argc--;
	argv++;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			staging = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'n':
			name = optarg;
			break;
		case 'N':
			names = optarg;
			break;
		case 'o':
			days = strtod(optarg, &end);
			if (*optarg == '\0' || *end != '\0' || days != days)
				usage_error("--older-than %s: not a number of days", optarg);
			older = true;
			break;
		case 'd':
			dry_run = true;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		default:
			usage_error("unknown option");
		}
	}
	if ((json && strcmp(cmd, "list") != 0) ||
	    ((name || names) && strcmp(cmd, "release") != 0) ||
	    ((older || dry_run) && strcmp(cmd, "purge") != 0))
		usage_error("an option that %s does not take", cmd);
	if (strcmp(cmd, "purge") == 0 && !older)
		usage_error("purge needs --older-than DAYS");
	want = strcmp(cmd, "show") == 0 || strcmp(cmd, "release") == 0 ? 2 : 1;
	if (argc - optind != want)
		usage_error("%s takes %s", cmd, want == 2 ? "INBOX and ID" : "INBOX");
	inbox = argv[optind];

	if (stat(inbox, &sb) < 0 || !S_ISDIR(sb.st_mode))
		fail("%s: not a directory", inbox);
	if (realpath(inbox, real) == NULL)
		fail("%s: %s", inbox, strerror(errno));
	if (inboxfs_mounted_at(real))
		beneath_the_mount(real);
	open_staging(&q, inbox, staging);

	if (strcmp(cmd, "list") == 0) {
		if (json)
			list_json(&q);
		else
			list_text(&q);
	} else if (strcmp(cmd, "show") == 0) {
		show(find(&q, argv[optind + 1]));
	} else if (strcmp(cmd, "release") == 0) {
		names_template(&q, names, &t);
		release(&q, inbox, find(&q, argv[optind + 1]), name, &t);
	} else {
		purge(&q, days, dry_run);
	}
	if (fflush(stdout) != 0 || ferror(stdout))
		fail("standard output: %s", strerror(errno));
	for (size_t i = 0; i < q.n_areas; i++)
		close(q.areas[i].fd);
	free(q.areas);
	free(q.drops);
	close(q.rootfd);
	return 0;
}
