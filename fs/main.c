/* inboxfs: mount a collision-free view over an inbox directory.
 * main() reads the command line (cmdline.c), checks everything it can
 * before mounting (startup.c, R11), recovers the staging directory (R6),
 * then serves until unmounted or stopped, and stops what it started. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "clock.h"
#include "cmdline.h"
#include "config.h"
#include "covered.h"
#include "dirs.h"
#include "drop.h"
#include "drops.h"
#include "fs.h"
#include "handles.h"
#include "inode.h"
#include "log.h"
#include "ops.h"
#include "options.h"
#include "proc.h"
#include "recovery.h"
#include "sessions.h"
#include "staging.h"
#include "startup.h"
#include "stats.h"
#include "statsfile.h"
#include "stop.h"
#include "syncpool.h"
#include "transport/transport.h"

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
static void report_stop(int loop_ret, const char *mountpoint)
{
	if (loop_ret == SIGTERM || loop_ret == SIGINT || loop_ret == SIGHUP)
		log_notice("stopping on SIG%s", sigabbrev_np(loop_ret));
	else if (loop_ret == 0)
		log_notice("stopping: %s was unmounted", mountpoint);
	else
		log_warnx("stopping: the FUSE session failed: %s",
			  strerror(loop_ret < 0 ? -loop_ret : loop_ret));
}

/* Serve until the session loop ends, and stop every thread started here,
 * whichever of them could not start. The exit status (0 or 1); *SERVED:
 * the loop ran. */
static int serve(const struct cmdline *c, int inbox_fd, int covered, bool *served)
{
	struct fuse_loop_config *loop;
	bool sessions_up;
	int ret = 1, sret;

	drop_init(&(struct drop_config){
		.linger_ms = 1000ULL * fs.cfg.linger,
		.max_drops = fs.cfg.max_drops,
		.now_ms = monotonic_ms,
		.on_free = forget_drop_node,
		.task_state = task_state,
		.task_doomed = task_doomed,
		.peer_lost = peer_lost,
		.held_elsewhere = writer_holds,
	});
	sessions_up = sessions_init(drop_session_ended) == 0;
	if (!sessions_up || linger_start() < 0 || takeover_start(inbox_fd) < 0) {
		log_warnx("cannot start worker threads");
		goto stop;
	}
	syncpool_start();
	if (covered_start(covered) < 0) {
		log_warnx("cannot start watching the directory under the mount");
		goto stop;
	}
	sret = stop_start(fs.cfg.drain);
	if (sret < 0) {
		errno = -sret;
		log_warn("cannot drain open drops at a stop: SIGTERM stops at once");
	}
	*served = true;
	log_notice("inboxfs %s serving %s at %s", INBOXFS_VERSION, c->inbox, c->opts.mountpoint);
	cmdline_log(c, &fs.cfg);
	if (c->opts.singlethread) {
		ret = fuse_session_loop(fs.se);
	} else {
		loop = fuse_loop_cfg_create();
		fuse_loop_cfg_set_clone_fd(loop, c->opts.clone_fd);
		if (c->opts.max_threads > 0 && c->opts.max_threads <= 100000)
			fuse_loop_cfg_set_max_threads(loop, c->opts.max_threads);
		if (c->opts.max_idle_threads <= 100000)	/* UINT_MAX: "not given" */
			fuse_loop_cfg_set_idle_threads(loop, c->opts.max_idle_threads);
		ret = fuse_session_loop_mt(fs.se, loop);
		fuse_loop_cfg_destroy(loop);
	}
	/* The signal that ended the loop: a requested stop (libfuse returns
	 * it when its own handler ended the loop, before stop_start()). */
	sret = stop_end();
	if (sret && ret == 0)
		ret = sret;
	report_stop(ret, c->opts.mountpoint);
	ret = !(ret == 0 || ret == SIGTERM || ret == SIGINT || ret == SIGHUP);
stop:
	syncpool_stop();	/* its answers may go through the rings */
	transport_stop();
	takeover_stop();
	if (takeover_lost_area())
		ret = 1;
	linger_stop();
	handles_shutdown(release_handle);
	dirs_shutdown();
	if (sessions_up)
		sessions_shutdown();
	covered_stop();
	return ret;
}

int main(int argc, char *argv[])
{
	struct cmdline c = { 0 };
	char real_mnt[PATH_MAX], fsname[PATH_MAX + 16];
	const char *why;
	struct stat st;
	int ret, fd = -1, mnt_fd = -1, sret;
	bool served = false;

	umask(0);	/* the kernel applied the caller's umask already */
	/* Bad options or arguments exit 2 (the unit does not restart on it:
	 * no restart cures them); everything after them 1. */
	sret = cmdline_parse(argc, argv, &c, &fs.cfg);
	if (sret != 0) {
		ret = sret > 0 ? 0 : 2;
		goto out;
	}
	ret = 1;
	log_init(true, c.opts.debug);

	clean_stale_mount(c.opts.mountpoint);
	clean_stale_mount(c.inbox);
	fd = open_dir_arg("INBOX", c.inbox);
	if (fd < 0)
		goto out;
	/* Opened once: swept before and after recovery, then watched under
	 * the mount (covered.c). */
	mnt_fd = open_dir_arg("MOUNTPOINT", c.opts.mountpoint);
	if (mnt_fd < 0)
		goto out;
	if (mounted_inboxfs(c.opts.mountpoint)) {
		fprintf(stderr, "inboxfs: MOUNTPOINT %s: busy, an inboxfs is mounted there\n",
			c.opts.mountpoint);
		goto out;
	}
	if (mounted_inboxfs(c.inbox)) {
		fprintf(stderr, "inboxfs: INBOX %s is itself an inboxfs mount\n", c.inbox);
		goto out;
	}
	/* libfuse checks its own options here: before anything is created. */
	snprintf(fsname, sizeof(fsname), "-ofsname=%s", c.inbox);
	if (fuse_opt_add_arg(&c.args, "-oallow_other,default_permissions,subtype=inboxfs") < 0 ||
	    fuse_opt_insert_arg(&c.args, 1, fsname) < 0)
		goto out;
	fs.se = fuse_session_new(&c.args, statsfile_wrap(&inboxfs_ops), sizeof(inboxfs_ops),
				 NULL);
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
	if (fstat(fd, &st) < 0) {
		fprintf(stderr, "inboxfs: INBOX %s: %s\n", c.inbox, strerror(errno));
		goto out_inodes;
	}
	fs.staging.top_ino = st.st_ino;
	why = c.staging ? misplaced_staging(fd, c.staging) : NULL;
	if (why) {
		fprintf(stderr, "inboxfs: staging=%s: %s\n", c.staging, why);
		goto out_inodes;
	}
	if (sweep_mountpoint(fd, mnt_fd, c.opts.mountpoint, NULL) < 0)
		goto out_inodes;
	sret = c.staging ? staging_open(&fs.staging, fd, AT_FDCWD, c.staging)
			 : staging_open(&fs.staging, fd, fd, STAGING_DIR);
	if (sret < 0) {
		fprintf(stderr, "inboxfs: staging=%s: %s\n", c.staging ? c.staging : STAGING_DIR,
			sret == -EXDEV ? "not on the filesystem of INBOX" : strerror(-sret));
		goto out_inodes;
	}
	/* Without it the staging directory would not be hidden. */
	if (fstat(fs.staging.rootfd, &st) < 0) {
		fprintf(stderr, "inboxfs: staging=%s: %s\n", c.staging ? c.staging : STAGING_DIR,
			strerror(errno));
		goto out_staging;
	}
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
	sret = sweep_mountpoint(fd, mnt_fd, c.opts.mountpoint, &fs.staging);
	if (sret < 0)
		goto out_staging;
	if (sret == 1) {	/* an over-mount: nothing under it to watch */
		close(mnt_fd);
		mnt_fd = -1;
	}
	descriptor_budget();

	if (fuse_set_signal_handlers(fs.se) != 0)
		goto out_staging;
	if (realpath(c.opts.mountpoint, real_mnt) == NULL)
		real_mnt[0] = '\0';
	if (fuse_session_mount(fs.se, c.opts.mountpoint) != 0)
		goto out_signals;
	raise_readahead(real_mnt);
	if (transport_start(fs.se, !c.opts.singlethread) < 0)
		goto out_unmount;
	fs.mountpoint = real_mnt;
	if (fuse_daemonize(c.opts.foreground) != 0)
		goto out_unmount;
	log_init(c.opts.foreground, c.opts.debug);
	ignore_sighup();
	ret = serve(&c, fd, mnt_fd, &served);
out_unmount:
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
	if (mnt_fd >= 0)
		close(mnt_fd);
	if (fd >= 0)
		close(fd);
	cmdline_free(&c);
	return ret;
}
