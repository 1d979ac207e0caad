/* inboxfs: mount a collision-free view over an inbox directory.
 * main() checks everything it can before mounting (R11), recovers the
 * staging directory (R6), then serves until unmounted. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "config.h"
#include "fs.h"
#include "log.h"
#include "proc.h"
#include "stats.h"
#include "strays.h"
#include "transport/transport.h"

struct cmdline {
	char *inbox;
	char *observers;
	char *staging;
	char *sync;
	char *datasync;
	char *names;
	char *linger;
	char *max_drops;
	char *client_mkdir;
	char *drain;
	char *xattr;
	int show_help;
	int show_version;
	int nonopts;
};

#define OPT(t, p) { t, offsetof(struct cmdline, p), 1 }
static const struct fuse_opt inboxfs_opts[] = {
	OPT("observers=%s", observers),
	OPT("staging=%s", staging),
	OPT("sync=%s", sync),
	OPT("datasync=%s", datasync),
	OPT("names=%s", names),
	OPT("linger=%s", linger),
	OPT("max_drops=%s", max_drops),
	OPT("client_mkdir=%s", client_mkdir),
	OPT("drain=%s", drain),
	OPT("xattr=%s", xattr),
	FUSE_OPT_END
};

enum { KEY_HELP, KEY_VERSION };

static const struct fuse_opt help_opts[] = {
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_END
};

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct cmdline *c = data;

	switch (key) {
	case KEY_HELP:
		c->show_help = 1;
		return 0;
	case KEY_VERSION:
		c->show_version = 1;
		return 0;
	case FUSE_OPT_KEY_NONOPT:
		c->nonopts++;
		if (c->inbox == NULL) {
			c->inbox = strdup(arg);
			return 0;
		}
		return 1;	/* the mountpoint, for fuse_parse_cmdline() */
	default:
		return 1;
	}
}

static void usage(FILE *f, const char *prog)
{
	fprintf(f,
"usage: %s [-f] [-d] [-s] [-o OPTIONS] INBOX MOUNTPOINT\n"
"\n"
"Serve INBOX at MOUNTPOINT (which may be INBOX itself) so that no client's\n"
"create of a file ever collides: colliding names are given unique ones.\n"
"\n"
"inboxfs options:\n"
"    -o observers=LIST      users (name or uid) and @groups (name or gid),\n"
"                           ':'-separated, who see the whole inbox (default root)\n"
"    -o staging=DIR         where client drops are written before publication\n"
"                           (default INBOX/.inboxfs; same filesystem as INBOX)\n"
"    -o sync=close|none     fsync a drop before its close returns (default close)\n"
"    -o datasync=auto|fsync with sync=close: auto makes a drop durable in one\n"
"                           journal commit where the filesystem allows it\n"
"                           (journaled ext4, XFS), fsync its own data always\n"
"                           (default auto)\n"
"    -o names=TEMPLATE      unique-name form: default (%%s~%%t%%e), 8.3 (%%8t%%3e),\n"
"                           or a template of %%s stem, %%t tag, %%e extension\n"
"    -o linger=SECONDS      keep a closed drop visible to its session (default 0)\n"
"    -o max_drops=N         open drops a session may hold, 0: no cap (default 1024)\n"
"    -o client_mkdir=yes|no\n"
"                           let clients create directories (default no)\n"
"    -o drain=SECONDS       at SIGTERM or SIGINT, serve on until no drop is open,\n"
"                           for up to this long; 0: stop at once (default 10)\n"
"    -o xattr=yes|no        serve extended attributes (ACLs, user.*); no: none,\n"
"                           for anyone, and no round trip for them (default yes)\n"
"%s"
"\n"
"general options:\n"
"    -f                     stay in the foreground, log to stderr\n"
"    -d                     debug output (implies -f)\n"
"    -s                     single-threaded\n"
"    -h, --help             this text\n"
"    -V, --version          print version\n", prog, transport_usage);
}

/* A stale mount left by a crashed daemon answers ENOTCONN (ECONNABORTED
 * while the kernel still tears down a dead daemon's io_uring queues):
 * unmount it. statfs(), because stat() may still be answered from the
 * kernel's cache. */
static void clean_stale_mount(const char *path)
{
	struct statfs sf;

	if (statfs(path, &sf) == 0 || (errno != ENOTCONN && errno != ECONNABORTED))
		return;
	if (umount2(path, MNT_DETACH) == 0)
		log_warnx("removed a stale mount at %s", path);
	else
		log_warn("stale mount at %s could not be removed", path);
}

/* mountinfo writes a space as \040 (and tab, newline, backslash alike). */
static void unescape_octal(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '7' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

/* True if the topmost mount at REAL (a resolved path) is an inboxfs; its
 * device in *DEV and its id in *ID. Reads mountinfo only: no request
 * reaches a mount. */
static bool topmost_inboxfs(const char *real, dev_t *dev, int *id)
{
	char line[4096];
	bool found = false;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	if (f == NULL)
		return false;
	while (fgets(line, sizeof(line), f)) {
		char mnt[PATH_MAX], *dash = strstr(line, " - ");
		char fstype[64];
		unsigned major, minor;
		int mnt_id;

		if (dash == NULL ||
		    sscanf(line, "%d %*s %u:%u %*s %4095s", &mnt_id, &major, &minor, mnt) != 4 ||
		    sscanf(dash + 3, "%63s", fstype) != 1)
			continue;
		unescape_octal(mnt);
		if (strcmp(mnt, real) == 0) {
			found = strcmp(fstype, "fuse.inboxfs") == 0;
			*dev = makedev(major, minor);
			*id = mnt_id;
		}
	}
	fclose(f);
	return found;
}

/* True if PATH is already the mountpoint of a live inboxfs. */
static bool mounted_inboxfs(const char *path)
{
	char real[PATH_MAX];
	dev_t dev;
	int id;

	return realpath(path, real) != NULL && topmost_inboxfs(real, &dev, &id);
}

/* A FUSE mount starts with the kernel's default readahead (128 KiB), and
 * INIT can only lower it: raise it to what op_init() asks, so that a
 * sequential read is one request per MiB, not eight. REAL was resolved
 * before the mount (resolving it now would ask the daemon, not serving
 * yet). */
static void raise_readahead(const char *real)
{
	char path[64], kb[16];
	dev_t dev;
	int fd, n;

	if (!topmost_inboxfs(real, &dev, &fs.mnt_id))
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", major(dev), minor(dev));
	n = snprintf(kb, sizeof(kb), "%d", READAHEAD_BYTES / 1024);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, kb, (size_t)n) != n)
		log_debug("readahead: %s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
}

static bool same_inode(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* Is the directory FD (taken over: closed) TOP or below it? Walks up by
 * "..". *DEPTH: 0 for TOP itself; *CHILD: the entry just below TOP on the
 * way, when *DEPTH > 0. */
static bool is_below(int fd, const struct stat *top, struct stat *child, int *depth)
{
	struct stat cur, up;
	bool found = false;

	for (*depth = 0; fd >= 0 && fstat(fd, &cur) == 0 && *depth < 4096; ++*depth) {
		int ufd;

		if (same_inode(&cur, top)) {
			found = true;
			break;
		}
		ufd = openat(fd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (ufd < 0 || fstat(ufd, &up) < 0 || same_inode(&up, &cur)) {
			if (ufd >= 0)
				close(ufd);
			break;	/* the root: not below TOP */
		}
		*child = cur;
		close(fd);
		fd = ufd;
	}
	if (fd >= 0)
		close(fd);
	return found;
}

/* R11: a staging directory must be hidden from every view, and inside
 * INBOX only the default is: it must be INBOX/.inboxfs itself, or a
 * directory outside INBOX's tree that does not contain INBOX either. A staging that
 * does not exist yet is judged by where it would be made. Returns why not,
 * or NULL (also when PATH cannot be opened: staging_open() reports it). */
static const char *staging_misplaced(int inbox_fd, const char *path)
{
	struct stat in, hidden, child, sg;
	const char *why = NULL, *leaf = NULL;
	char *parent = NULL;
	int fd, depth;

	if (fstat(inbox_fd, &in) < 0)
		return NULL;
	if (fstatat(inbox_fd, STAGING_DIR, &hidden, AT_SYMLINK_NOFOLLOW) < 0)
		memset(&hidden, 0, sizeof(hidden));
	fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		char *slash;

		parent = strdup(path);
		if (parent == NULL)
			return NULL;
		for (size_t n = strlen(parent); n > 1 && parent[n - 1] == '/'; n--)
			parent[n - 1] = '\0';
		slash = strrchr(parent, '/');
		leaf = slash ? slash + 1 : parent;
		if (slash && slash != parent)
			*slash = '\0';
		fd = open(slash == parent ? "/" : slash ? parent : ".",
			  O_PATH | O_DIRECTORY | O_CLOEXEC);
	}
	if (fd < 0)
		goto out;
	if (leaf == NULL && fstat(fd, &sg) < 0) {
		close(fd);
		goto out;
	}
	if (is_below(fd, &in, &child, &depth)) {
		if (depth == 0 && leaf == NULL)
			why = "is INBOX itself; use INBOX/" STAGING_DIR " or a directory outside INBOX";
		else if (depth == 0 ? strcmp(leaf, STAGING_DIR) != 0
				    : depth > 1 || leaf || !same_inode(&child, &hidden))
			why = "is inside INBOX, where views would show it; use INBOX/" STAGING_DIR
			      " or a directory outside INBOX";
	} else if (leaf == NULL) {
		fd = dup(inbox_fd);
		if (is_below(fd, &sg, &child, &depth))
			why = "contains INBOX; use INBOX/" STAGING_DIR " or a directory outside INBOX";
	}
out:
	free(parent);
	return why;
}

/* Issue 18: while inboxfs is down MOUNTPOINT is a plain directory, and a
 * file someone manages to write there (its writer was told it was stored)
 * would be hidden by the mount. Without ST: can everything there be
 * delivered into the inbox? If not, R11: one line, no start. With ST:
 * deliver it (core/strays.h), and warn if anyone but root may write the
 * directory; *HELD then keeps the directory open (for covered.c, which
 * watches it under the mount). An over-mount is left be: there the
 * directory is the inbox. Returns 0 to go on, -1 refused. */
static int sweep_mountpoint(int inbox_fd, const char *path, struct staging *st, int *held)
{
	struct stat in, mp;
	struct strays s;
	int ret = -1, fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &mp) < 0 || fstat(inbox_fd, &in) < 0) {
		fprintf(stderr, "inboxfs: MOUNTPOINT %s: %s\n", path, strerror(errno));
		goto out;
	}
	if (same_inode(&mp, &in)) {
		ret = 0;
		goto out;
	}
	if (strays_sweep(st, inbox_fd, fd, &s) > 0) {
		fprintf(stderr, "inboxfs: MOUNTPOINT %s holds what the mount would hide and what "
			"cannot be moved into INBOX: %s; move it away and start again\n",
			path, s.refusals);
		goto out;
	}
	if (st == NULL) {
		ret = 0;
		goto out;
	}
	stat_add(STAT_RECOVERED, s.delivered + s.repaired);
	stat_add(STAT_PUBLISHED, s.delivered);
	if (s.delivered + s.repaired)
		log_info("mountpoint: %u files written into %s while inboxfs was down are in "
			 "the inbox now (%u under a unique name)", s.delivered + s.repaired, path,
			 s.renamed);
	if (s.failed) {
		fprintf(stderr, "inboxfs: MOUNTPOINT %s: %u files written there while inboxfs was "
			"down could not be delivered into INBOX (see above), and the mount "
			"would hide them\n", path, s.failed);
		goto out;
	}
	/* Checked at every start: the unit makes it right only once. */
	if (mp.st_uid != 0 || (mp.st_mode & (S_IWGRP | S_IWOTH)))
		log_warnx("MOUNTPOINT %s can be written by others than root (owner uid %u, "
			  "mode %04o): while inboxfs is down, SMB creates there succeed instead "
			  "of failing, and what they write reaches the inbox only when inboxfs "
			  "starts again; make it root's with mode 0555 (chown root:root, "
			  "chmod 0555)", path,
			  (unsigned)mp.st_uid, (unsigned)(mp.st_mode & 07777));
	*held = fd;
	fd = -1;
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	return ret;
}

static int open_dir_arg(const char *what, const char *path)
{
	struct stat st;
	int fd;

	if (stat(path, &st) < 0) {
		fprintf(stderr, "inboxfs: %s %s: %s\n", what, path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "inboxfs: %s %s: not a directory\n", what, path);
		return -1;
	}
	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		fprintf(stderr, "inboxfs: %s %s: %s\n", what, path, strerror(errno));
	return fd;
}

/* Every -o list on the command line, before libfuse parses any: an empty
 * or spaced one gets a line that names it (R11). */
static int check_option_lists(int argc, char *argv[])
{
	char why[160];

	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
		const char *list;

		if (strcmp(argv[i], "-o") == 0 && i + 1 < argc)
			list = argv[++i];
		else if (strncmp(argv[i], "-o", 2) == 0)
			list = argv[i] + 2;
		else
			continue;
		if (option_list_check(list, why, sizeof(why)) < 0) {
			fprintf(stderr, "inboxfs: -o \"%s\": %s\n", list, why);
			return -1;
		}
	}
	return 0;
}

static int parse_config(const struct cmdline *c, struct inboxfs_config *cfg)
{
	char bad[256];

	if (observers_parse(c->observers ? c->observers : "root", &cfg->observers, bad, sizeof(bad)) < 0) {
		fprintf(stderr, "inboxfs: observers=: unknown or bad entry '%s'\n", bad);
		return -1;
	}
	if (sync_mode_parse(c->sync ? c->sync : "close", &cfg->sync) < 0) {
		fprintf(stderr, "inboxfs: sync=%s: expected close or none\n", c->sync);
		return -1;
	}
	if (datasync_parse(c->datasync ? c->datasync : "auto", &cfg->datasync_fsync) < 0) {
		fprintf(stderr, "inboxfs: datasync=%s: expected auto or fsync\n", c->datasync);
		return -1;
	}
	char why[160];

	if (name_template_check(c->names ? c->names : "default", &cfg->names, why,
				sizeof(why)) < 0) {
		fprintf(stderr, "inboxfs: names=%s: %s\n", c->names, why);
		return -1;
	}
	if (seconds_parse(c->linger ? c->linger : "0", &cfg->linger) < 0) {
		fprintf(stderr, "inboxfs: linger=%s: expected whole seconds, 0 to 86400\n", c->linger);
		return -1;
	}
	if (count_parse(c->max_drops ? c->max_drops : "1024", &cfg->max_drops) < 0) {
		fprintf(stderr, "inboxfs: max_drops=%s: expected a whole number, 0 to 1000000\n",
			c->max_drops);
		return -1;
	}
	if (yes_no_parse(c->client_mkdir ? c->client_mkdir : "no", &cfg->client_mkdir) < 0) {
		fprintf(stderr, "inboxfs: client_mkdir=%s: expected yes or no\n", c->client_mkdir);
		return -1;
	}
	if (yes_no_parse(c->xattr ? c->xattr : "yes", &cfg->xattr) < 0) {
		fprintf(stderr, "inboxfs: xattr=%s: expected yes or no\n", c->xattr);
		return -1;
	}
	if (c->drain == NULL)
		cfg->drain = DRAIN_DEFAULT;
	else if (drain_parse(c->drain, &cfg->drain) < 0) {
		fprintf(stderr, "inboxfs: drain=%s: expected whole seconds, 0 to %d\n", c->drain,
			DRAIN_MAX);
		return -1;
	}
	return 0;
}


/* Descriptors the daemon keeps for its own work (a close reads /proc, a
 * publication opens directories, libfuse's and the staging area's own):
 * no client holding files open can make another client's close fail (R12). */
#define FD_RESERVE_MIN 64

/* Raise the descriptor limit as far as allowed and leave a reserve out of
 * what is held on clients' and observers' behalf: open files and the
 * pidfds of sessions holding drops (core/sessions.h). Of that budget, a
 * sixteenth (at least 16) is a pool for sessions' first drops, so that
 * sessions holding many never make one that holds none fail. */
static void descriptor_budget(void)
{
	struct rlimit rl;
	rlim_t reserve;
	unsigned budget;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		rl.rlim_cur = 1024;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur > 1 << 20)
		rl.rlim_cur = 1 << 20;
	/* An eighth, and never less than 2 * FD_RESERVE_MIN. */
	reserve = rl.rlim_cur / 8 > 2 * FD_RESERVE_MIN ? rl.rlim_cur / 8 : 2 * FD_RESERVE_MIN;
	budget = rl.rlim_cur > reserve ? (unsigned)(rl.rlim_cur - reserve) : FD_RESERVE_MIN;
	sessions_fd_budget(budget, budget / 16 > 16 ? budget / 16 : 16);
}

/* SIGHUP does not stop the daemon: there is no configuration to reload,
 * and a stop would take the inbox away from every client. It is blocked
 * in every thread (the mask is inherited) and only this one takes it. */
static void *sighup_logger(void *arg)
{
	sigset_t *set = arg;
	int sig;

	for (;;)
		if (sigwait(set, &sig) == 0)
			log_notice("SIGHUP ignored: inboxfs has nothing to reload "
				   "(SIGTERM stops it)");
	return NULL;
}

static void ignore_sighup(void)
{
	static sigset_t set;
	pthread_t thread;

	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0 ||
	    pthread_create(&thread, NULL, sighup_logger, &set) != 0) {
		log_warnx("cannot watch for SIGHUP: it will stop the daemon");
		pthread_sigmask(SIG_UNBLOCK, &set, NULL);
		return;
	}
	pthread_detach(thread);
}

/* Why the loop ended, in the words of the log line. */
static void log_stop(int loop_ret, const char *mountpoint)
{
	if (loop_ret == SIGTERM || loop_ret == SIGINT || loop_ret == SIGHUP)
		log_notice("stopping on SIG%s", sigabbrev_np(loop_ret));
	else if (loop_ret == 0)
		log_notice("stopping: %s was unmounted", mountpoint);
	else
		log_warnx("stopping: the FUSE session failed: %s",
			  strerror(loop_ret < 0 ? -loop_ret : loop_ret));
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts opts = { 0 };
	struct fuse_loop_config *loop = NULL;
	struct cmdline c = { 0 };
	char real_mnt[PATH_MAX];
	struct stat st;
	int ret = 1, fd = -1, covered = -1, sret;
	bool served = false;

	umask(0);	/* the kernel applied the caller's umask already */
	/* Bad options or arguments exit 2 (the unit does not restart on it:
	 * no restart cures them); everything after them 1. */
	ret = 2;
	if (check_option_lists(argc, argv) < 0 ||
	    transport_opt_parse(&args) < 0 ||
	    fuse_opt_parse(&args, &c, inboxfs_opts, NULL) < 0 ||
	    fuse_opt_parse(&args, &c, help_opts, opt_proc) < 0)
		goto out;
	if (c.show_help) {
		usage(stdout, argv[0]);
		ret = 0;
		goto out;
	}
	if (c.show_version) {
		printf("inboxfs %s (FUSE library %s)\n", INBOXFS_VERSION, fuse_pkgversion());
		ret = 0;
		goto out;
	}
	if (c.nonopts != 2) {
		fprintf(stderr, "inboxfs: expected INBOX and MOUNTPOINT (see --help)\n");
		goto out;
	}
	if (fuse_parse_cmdline(&args, &opts) != 0)
		goto out;
	if (parse_config(&c, &fs.cfg) < 0)
		goto out;
	ret = 1;
	log_init(true, opts.debug);

	clean_stale_mount(opts.mountpoint);
	clean_stale_mount(c.inbox);
	fd = open_dir_arg("INBOX", c.inbox);
	if (fd < 0)
		goto out;
	sret = open_dir_arg("MOUNTPOINT", opts.mountpoint);
	if (sret < 0)
		goto out;
	close(sret);
	if (mounted_inboxfs(opts.mountpoint)) {
		fprintf(stderr, "inboxfs: MOUNTPOINT %s: busy, an inboxfs is mounted there\n",
			opts.mountpoint);
		goto out;
	}
	if (mounted_inboxfs(c.inbox)) {
		fprintf(stderr, "inboxfs: INBOX %s is itself an inboxfs mount\n", c.inbox);
		goto out;
	}
	/* libfuse checks its own options here: before anything is created. */
	char fsname[PATH_MAX + 16];
	snprintf(fsname, sizeof(fsname), "-ofsname=%s", c.inbox);
	if (fuse_opt_add_arg(&args, "-oallow_other,default_permissions,subtype=inboxfs") < 0 ||
	    fuse_opt_insert_arg(&args, 1, fsname) < 0)
		goto out;
	fs.se = fuse_session_new(&args, &inboxfs_ops, sizeof(inboxfs_ops), NULL);
	if (fs.se == NULL) {
		ret = 2;	/* libfuse's "unknown option(s)" (or out of memory) */
		goto out;
	}
	sret = inode_init(fd);
	if (sret < 0) {
		fprintf(stderr, "inboxfs: INBOX %s: %s\n", c.inbox, sret == -EOPNOTSUPP ?
			"its filesystem does not support file handles" : strerror(-sret));
		goto out_session;
	}
	fs.staging.sync = fs.cfg.sync == SYNC_CLOSE;
	fs.staging.force_fsync = fs.cfg.datasync_fsync;
	fs.staging.names = &fs.cfg.names;
	fs.staging.reserved = STATS_FILE;
	if (fstat(fd, &st) == 0)
		fs.staging.top_ino = st.st_ino;
	const char *why = c.staging ? staging_misplaced(fd, c.staging) : NULL;
	if (why) {
		fprintf(stderr, "inboxfs: staging=%s: %s\n", c.staging, why);
		goto out_inodes;
	}
	if (sweep_mountpoint(fd, opts.mountpoint, NULL, NULL) < 0)
		goto out_inodes;
	sret = c.staging ? staging_open(&fs.staging, fd, AT_FDCWD, c.staging)
			 : staging_open(&fs.staging, fd, fd, STAGING_DIR);
	if (sret < 0) {
		fprintf(stderr, "inboxfs: staging=%s: %s\n", c.staging ? c.staging : STAGING_DIR,
			sret == -EXDEV ? "not on the filesystem of INBOX" : strerror(-sret));
		goto out_inodes;
	}
	fstat(fs.staging.rootfd, &st);
	fs.staging_ino = st.st_ino;
	if (fstatat(fs.staging.rootfd, "..", &st, 0) == 0)
		fs.staging_parent_ino = st.st_ino;
	/* With staging= elsewhere, INBOX/.inboxfs is another instance's
	 * staging (drafts, acknowledged drops not yet published): hidden as
	 * our own is. One made after our start is not known here. */
	if (c.staging && fstatat(fd, STAGING_DIR, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISDIR(st.st_mode))
		fs.other_staging_ino = st.st_ino;
	statsfile_init();
	/* R6, R13 */
	recovery_at_start(fd);
	if (sweep_mountpoint(fd, opts.mountpoint, &fs.staging, &covered) < 0)
		goto out_staging;
	descriptor_budget();

	if (fuse_set_signal_handlers(fs.se) != 0)
		goto out_staging;
	if (realpath(opts.mountpoint, real_mnt) == NULL)
		real_mnt[0] = '\0';
	if (fuse_session_mount(fs.se, opts.mountpoint) != 0)
		goto out_signals;
	raise_readahead(real_mnt);
	if (transport_start(fs.se, !opts.singlethread) < 0)
		goto out_unmount;
	fs.mountpoint = real_mnt;
	if (fuse_daemonize(opts.foreground) != 0)
		goto out_unmount;
	log_init(opts.foreground, opts.debug);
	ignore_sighup();
	drop_init(&(struct drop_config){
		.linger_ms = 1000ULL * fs.cfg.linger,
		.max_drops = fs.cfg.max_drops,
		.now_ms = now_ms,
		.on_free = drop_node_free,
		.task_state = task_state,
		.task_doomed = task_doomed,
		.peer_lost = peer_lost,
		.held_elsewhere = writer_holds,
	});
	if (sessions_init(drop_session_ended) < 0 || linger_start() < 0 || takeover_start(fd) < 0) {
		log_warnx("cannot start worker threads");
		goto out_unmount;
	}
	syncpool_start();
	if (covered_start(covered) < 0) {
		log_warnx("cannot start watching the directory under the mount");
		goto out_unmount;
	}
	sret = stop_start(fs.cfg.drain);
	if (sret < 0) {
		errno = -sret;
		log_warn("cannot drain open drops at a stop: SIGTERM stops at once");
	}
	served = true;
	log_notice("inboxfs %s serving %s at %s", INBOXFS_VERSION, c.inbox, opts.mountpoint);
	/* Defaults included: a defaults file the unit never read shows here. */
	log_notice("options in force: observers=%s,staging=%s%s,sync=%s,datasync=%s,names=%s,"
		   "linger=%u,max_drops=%u,client_mkdir=%s,xattr=%s",
		   c.observers ? c.observers : "root", c.staging ? c.staging : c.inbox,
		   c.staging ? "" : "/" STAGING_DIR, c.sync ? c.sync : "close",
		   fs.cfg.datasync_fsync ? "fsync" : "auto",
		   c.names ? c.names : "default", fs.cfg.linger, fs.cfg.max_drops,
		   fs.cfg.client_mkdir ? "yes" : "no", fs.cfg.xattr ? "yes" : "no");
	if (opts.singlethread) {
		ret = fuse_session_loop(fs.se);
	} else {
		loop = fuse_loop_cfg_create();
		fuse_loop_cfg_set_clone_fd(loop, opts.clone_fd);
		if (opts.max_threads > 0 && opts.max_threads <= 100000)
			fuse_loop_cfg_set_max_threads(loop, opts.max_threads);
		if (opts.max_idle_threads <= 100000)	/* UINT_MAX: "not given" */
			fuse_loop_cfg_set_idle_threads(loop, opts.max_idle_threads);
		ret = fuse_session_loop_mt(fs.se, loop);
		fuse_loop_cfg_destroy(loop);
	}
	/* The signal that ended the loop: a requested stop (libfuse returns
	 * it when its own handler ended the loop, before stop_start()). */
	sret = stop_end();
	if (sret && ret == 0)
		ret = sret;
	log_stop(ret, opts.mountpoint);
	ret = !(ret == 0 || ret == SIGTERM || ret == SIGINT || ret == SIGHUP);
	syncpool_stop();	/* its answers may go through the rings */
	transport_stop();
	takeover_stop();
	if (takeover_lost_area())
		ret = 1;
	linger_stop();
	handles_shutdown();
	dirs_shutdown();
	sessions_shutdown();
out_unmount:
	covered_stop();
	fuse_session_unmount(fs.se);
out_signals:
	fuse_remove_signal_handlers(fs.se);
out_staging:
	staging_close(&fs.staging);
out_inodes:
	inode_shutdown();
out_session:
	fuse_session_destroy(fs.se);
out:
	if (served)
		log_notice("exiting with status %d", ret);
	if (covered >= 0)
		close(covered);
	if (fd >= 0)
		close(fd);
	free(opts.mountpoint);
	free(c.inbox);
	free(c.observers);
	free(c.staging);
	free(c.sync);
	free(c.datasync);
	free(c.names);
	free(c.linger);
	free(c.max_drops);
	free(c.client_mkdir);
	free(c.drain);
	free(c.xattr);
	fuse_opt_free_args(&args);
	return ret;
}
