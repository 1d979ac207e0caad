/* Unit tests for core/staging.c, each in a fresh inbox made with mkdtemp:
 * staging directory set-up, staged files, publication without
 * overwriting, quarantine, discard, and start-up recovery (R6). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "unit.h"

#include "staging.h"

struct fixture {
	char path[64];		/* the inbox */
	int inbox_fd;
	struct name_template names;
	struct staging st;
};

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	f->inbox_fd = -1;
	strcpy(f->path, "/tmp/inboxfs-unit-XXXXXX");
	if (mkdtemp(f->path) == NULL) {
		free(f);
		return -1;
	}
	f->inbox_fd = open(f->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (f->inbox_fd < 0 || name_template_parse("default", &f->names) != 0)
		goto fail;
	f->st.names = &f->names;
	if (staging_open(&f->st, f->inbox_fd, f->inbox_fd, STAGING_DIR) != 0)
		goto fail;
	*state = f;
	return 0;
fail:
	if (f->inbox_fd >= 0)
		close(f->inbox_fd);
	nftw(f->path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return -1;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	staging_close(&f->st);
	close(f->inbox_fd);
	nftw(f->path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* Stage a file holding CONTENT; its staging name goes to NAME. */
static void stage(struct fixture *f, const char *content, char name[STAGE_NAME_MAX])
{
	int fd;

	assert_int_equal(stage_create(&f->st, 0644, 0, 0, name, &fd), 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
}

static void test_open_creates_directories(void **state)
{
	struct fixture *f = *state;
	struct staging again = { .names = &f->names };
	struct stat sb;

	assert_int_equal(fstatat(f->inbox_fd, STAGING_DIR, &sb, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(sb.st_mode & 07777, 0700);
	assert_int_equal(fstatat(f->inbox_fd, STAGING_DIR "/" INCOMPLETE_DIR, &sb,
				 AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(sb.st_mode & 07777, 0700);
	/* The descriptors name those directories. */
	assert_int_equal(fstat(f->st.incomplete_fd, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));

	/* Opening an existing staging directory is fine (a restart). */
	assert_int_equal(staging_open(&again, f->inbox_fd, f->inbox_fd, STAGING_DIR), 0);
	staging_close(&again);
}

static void test_open_not_a_directory(void **state)
{
	struct fixture *f = *state;
	struct staging st = { .names = &f->names };

	write_file(f->inbox_fd, "plain", "x");
	assert_int_equal(staging_open(&st, f->inbox_fd, f->inbox_fd, "plain"), -ENOTDIR);
}

static void test_open_other_filesystem(void **state)
{
	struct fixture *f = *state;
	struct staging st = { .names = &f->names };
	struct stat shm, tmp;
	char path[64];
	int shm_fd;

	if (stat("/dev/shm", &shm) < 0 || fstat(f->inbox_fd, &tmp) < 0 || shm.st_dev == tmp.st_dev)
		skip();
	shm_fd = open("/dev/shm", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(shm_fd >= 0);
	snprintf(path, sizeof(path), "inboxfs-unit-%d", (int)getpid());
	assert_int_equal(staging_open(&st, f->inbox_fd, shm_fd, path), -EXDEV);
	unlinkat(shm_fd, path, AT_REMOVEDIR);
	close(shm_fd);
}

static void test_stage_create(void **state)
{
	struct fixture *f = *state;
	char name[STAGE_NAME_MAX], other[STAGE_NAME_MAX], back[8];
	struct stat sb;
	mode_t old = umask(0);
	int fd, fd2;

	assert_int_equal(stage_create(&f->st, 0640, 0, 0, name, &fd), 0);
	assert_int_equal(stage_create(&f->st, 0666, 0, 0, other, &fd2), 0);
	umask(old);
	assert_true(strlen(name) > 0 && strlen(name) < STAGE_NAME_MAX);
	assert_int_equal(name_check(name), 0);
	assert_string_not_equal(name, other);

	assert_int_equal(fstatat(f->st.dirfd, name, &sb, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISREG(sb.st_mode));
	assert_int_equal(sb.st_mode & 07777, 0640);
	assert_int_equal(sb.st_size, 0);
	assert_int_equal(fstatat(f->st.dirfd, other, &sb, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(sb.st_mode & 07777, 0666);

	/* Open read-write, and it is the file in the staging directory. */
	assert_int_equal(write(fd, "abc", 3), 3);
	assert_int_equal(pread(fd, back, sizeof(back), 0), 3);
	assert_memory_equal(back, "abc", 3);
	close(fd);
	close(fd2);
	assert_content(f->st.dirfd, name, "abc");
	/* Nothing shows in the inbox itself. */
	assert_false(exists(f->inbox_fd, name));
}

static void test_stage_create_owner(void **state)
{
	struct fixture *f = *state;
	char name[STAGE_NAME_MAX];
	struct stat sb;
	int fd;

	if (geteuid() != 0)
		skip();
	assert_int_equal(stage_create(&f->st, 0600, 1234, 5678, name, &fd), 0);
	close(fd);
	assert_int_equal(fstatat(f->st.dirfd, name, &sb, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(sb.st_uid, 1234);
	assert_int_equal(sb.st_gid, 5678);
}

static void test_publish_free_name(void **state)
{
	struct fixture *f = *state;
	char name[STAGE_NAME_MAX], final[NAME_MAX_BYTES + 1];

	stage(f, "hello", name);
	assert_int_equal(publish_drop(&f->st, name, f->inbox_fd, "Report.SVF", final), 0);
	assert_string_equal(final, "Report.SVF");
	assert_content(f->inbox_fd, "Report.SVF", "hello");
	assert_false(exists(f->st.dirfd, name));
}

static void publish_taken(struct fixture *f)
{
	char name[STAGE_NAME_MAX], final[NAME_MAX_BYTES + 1];

	write_file(f->inbox_fd, "Report.SVF", "original");
	stage(f, "new drop", name);
	assert_int_equal(publish_drop(&f->st, name, f->inbox_fd, "Report.SVF", final), 1);
	assert_string_not_equal(final, "Report.SVF");
	assert_memory_equal(final, "Report~", 7);
	assert_int_equal(strlen(final), strlen("Report~.SVF") + 12);
	assert_string_equal(final + strlen(final) - 4, ".SVF");
	assert_content(f->inbox_fd, "Report.SVF", "original");
	assert_content(f->inbox_fd, final, "new drop");
	assert_false(exists(f->st.dirfd, name));
}

static void test_publish_taken_name(void **state)
{
	publish_taken(*state);
}

static void test_publish_taken_name_sync(void **state)
{
	struct fixture *f = *state;

	f->st.sync = true;
	publish_taken(f);
}

static void test_publish_twice_same_name(void **state)
{
	struct fixture *f = *state;
	char a[STAGE_NAME_MAX], b[STAGE_NAME_MAX];
	char fa[NAME_MAX_BYTES + 1], fb[NAME_MAX_BYTES + 1];

	stage(f, "first", a);
	stage(f, "second", b);
	assert_int_equal(publish_drop(&f->st, a, f->inbox_fd, "x.bin", fa), 0);
	assert_int_equal(publish_drop(&f->st, b, f->inbox_fd, "x.bin", fb), 1);
	assert_string_not_equal(fa, fb);
	assert_content(f->inbox_fd, "x.bin", "first");
	assert_content(f->inbox_fd, fb, "second");
}

static void test_publish_into_subdirectory(void **state)
{
	struct fixture *f = *state;
	char name[STAGE_NAME_MAX], final[NAME_MAX_BYTES + 1];
	int sub;

	assert_int_equal(mkdirat(f->inbox_fd, "sub", 0755), 0);
	sub = openat(f->inbox_fd, "sub", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(sub >= 0);
	stage(f, "deep", name);
	assert_int_equal(publish_drop(&f->st, name, sub, "a.txt", final), 0);
	assert_content(sub, "a.txt", "deep");
	assert_false(exists(f->inbox_fd, "a.txt"));
	close(sub);
}

static void test_publish_missing_stage(void **state)
{
	struct fixture *f = *state;
	char final[NAME_MAX_BYTES + 1];

	assert_int_equal(publish_drop(&f->st, "d.nonexistent", f->inbox_fd, "ghost.txt", final),
			 -ENOENT);
	assert_false(exists(f->inbox_fd, "ghost.txt"));
}

static void test_quarantine(void **state)
{
	struct fixture *f = *state;
	char name[STAGE_NAME_MAX];

	stage(f, "partial", name);
	assert_int_equal(quarantine_drop(&f->st, name, "half\"done\n.txt", "unit test"), 0);
	assert_false(exists(f->st.dirfd, name));
	assert_content(f->st.incomplete_fd, name, "partial");
	assert_false(exists(f->inbox_fd, "half\"done\n.txt"));

	assert_int_equal(quarantine_drop(&f->st, "d.nonexistent", "x", "unit test"), -ENOENT);
}

static void test_discard(void **state)
{
	struct fixture *f = *state;
	char name[STAGE_NAME_MAX];

	stage(f, "unwanted", name);
	assert_int_equal(discard_drop(&f->st, name), 0);
	assert_false(exists(f->st.dirfd, name));
	assert_false(exists(f->st.incomplete_fd, name));
	assert_int_equal(discard_drop(&f->st, name), -ENOENT);
}

/* An origin naming directory SUB of the inbox (or the inbox itself when
 * SUB is NULL) and the name REQUESTED. */
static void make_origin(struct fixture *f, const char *sub, const char *requested,
			struct origin *o)
{
	union {
		struct file_handle fh;
		unsigned char buf[sizeof(struct file_handle) + sizeof(o->handle)];
	} h;
	int mount_id;

	memset(o, 0, sizeof(*o));
	h.fh.handle_bytes = sizeof(o->handle);
	assert_int_equal(name_to_handle_at(f->inbox_fd, sub ? sub : "", &h.fh, &mount_id,
					   sub ? 0 : AT_EMPTY_PATH), 0);
	o->handle_type = h.fh.handle_type;
	o->handle_bytes = h.fh.handle_bytes;
	memcpy(o->handle, h.fh.f_handle, h.fh.handle_bytes);
	snprintf(o->name, sizeof(o->name), "%s", requested);
}

/* Stage CONTENT in ST with origin O (if set) and, if ACK, acknowledge it
 * as a successful close does. */
static void stage_in(struct staging *st, const char *content, const struct origin *o,
		     bool ack, char name[STAGE_NAME_MAX])
{
	int fd;

	assert_int_equal(stage_create(st, 0644, 0, 0, name, &fd), 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	if (o != NULL)
		assert_int_equal(stage_set_origin(fd, o), 0);
	close(fd);
	if (ack)
		assert_int_equal(stage_ack(st, name, -1), 0);
}

/* Another instance's staging over the fixture's inbox. */
static void open_instance(struct fixture *f, struct staging *st)
{
	memset(st, 0, sizeof(*st));
	st->names = &f->names;
	assert_int_equal(staging_open(st, f->inbox_fd, f->inbox_fd, STAGING_DIR), 0);
}

/* Can the lock of area NAME be taken (its instance is gone)? */
static bool area_lockable(struct fixture *f, const char *area)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	char path[AREA_NAME_MAX + 16];
	int fd, ret;

	snprintf(path, sizeof(path), "%s/%s/%s", STAGING_DIR, area, LOCK_FILE);
	fd = openat(f->inbox_fd, path, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	ret = fcntl(fd, F_OFD_SETLK, &fl);
	close(fd);
	return ret == 0;
}

static int incomplete_count(struct fixture *f)
{
	DIR *dp = fdopendir(dup(f->st.incomplete_fd));
	struct dirent *de;
	int n = 0;

	assert_non_null(dp);
	while ((de = readdir(dp)) != NULL)
		n += de->d_name[0] != '.';
	closedir(dp);
	return n;
}

static bool area_exists(struct fixture *f, const char *area)
{
	return exists(f->st.rootfd, area);
}

static void test_origin_roundtrip(void **state)
{
	struct fixture *f = *state;
	struct origin o, got;
	char name[STAGE_NAME_MAX];
	int fd;

	if (geteuid() != 0)
		skip();		/* trusted.* xattrs and file handles */
	make_origin(f, NULL, "Caf\xc3\xa9 report.SVF", &o);
	assert_int_equal(stage_create(&f->st, 0644, 0, 0, name, &fd), 0);
	assert_int_equal(stage_get_origin(f->st.dirfd, name, &got), -ENODATA);
	assert_int_equal(stage_set_origin(fd, &o), 0);
	memset(&got, 0xa5, sizeof(got));
	assert_int_equal(stage_get_origin(f->st.dirfd, name, &got), 0);
	assert_int_equal(got.handle_type, o.handle_type);
	assert_int_equal(got.handle_bytes, o.handle_bytes);
	assert_memory_equal(got.handle, o.handle, o.handle_bytes);
	assert_string_equal(got.name, "Caf\xc3\xa9 report.SVF");

	/* A name that could not be published is refused on the way back. */
	snprintf(o.name, sizeof(o.name), "a/b");
	assert_int_equal(stage_set_origin(fd, &o), 0);
	assert_int_equal(stage_get_origin(f->st.dirfd, name, &got), -EINVAL);

	stage_clear_origin(fd);
	assert_int_equal(stage_get_origin(f->st.dirfd, name, &got), -ENODATA);
	o.handle_bytes = sizeof(o.handle) + 1;
	assert_int_equal(stage_set_origin(fd, &o), -EINVAL);
	close(fd);
}

static void test_ack(void **state)
{
	struct fixture *f = *state;
	char name[STAGE_NAME_MAX], before[STAGE_NAME_MAX];

	stage(f, "acked", name);
	strcpy(before, name);
	assert_int_equal(stage_ack(&f->st, name, -1), 0);
	assert_string_not_equal(name, before);
	assert_int_equal(name[0], 'a');
	assert_string_equal(name + 1, before + 1);
	assert_false(exists(f->st.dirfd, before));
	assert_content(f->st.dirfd, name, "acked");
}

static void test_recover(void **state)
{
	struct fixture *f = *state;
	char unacked[STAGE_NAME_MAX], unacked_known[STAGE_NAME_MAX];
	char to_sub[STAGE_NAME_MAX], to_taken[STAGE_NAME_MAX];
	char no_origin[STAGE_NAME_MAX], final[NAME_MAX_BYTES + 1], area[AREA_NAME_MAX];
	struct origin in_sub, at_top, got;
	struct staging dead;
	struct recovery r;
	int sub, area_fd;

	if (geteuid() != 0)
		skip();
	assert_int_equal(mkdirat(f->inbox_fd, "sub", 0755), 0);
	sub = openat(f->inbox_fd, "sub", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(sub >= 0);
	write_file(f->inbox_fd, "taken.txt", "original");
	make_origin(f, "sub", "deep.txt", &in_sub);
	make_origin(f, NULL, "taken.txt", &at_top);

	/* An instance that stopped (or died) with drops in its area. */
	open_instance(f, &dead);
	snprintf(area, sizeof(area), "%s", dead.area);
	write_file(dead.dirfd, "x.other", "not a drop");
	stage_in(&dead, "never closed", NULL, false, unacked);
	stage_in(&dead, "never closed either", &in_sub, false, unacked_known);
	stage_in(&dead, "closed, in sub", &in_sub, true, to_sub);
	stage_in(&dead, "closed, name taken", &at_top, true, to_taken);
	stage_in(&dead, "closed, origin lost", NULL, true, no_origin);
	area_fd = dup(dead.dirfd);
	assert_false(area_lockable(f, area));
	staging_close(&dead);
	assert_true(area_lockable(f, area));

	recover_staging(&f->st, f->inbox_fd, &r);
	assert_int_equal(r.published, 2);
	assert_int_equal(r.quarantined, 3);
	assert_int_equal(r.failed, 0);
	assert_int_equal(r.repaired, 0);
	assert_int_equal(r.areas, 1);
	assert_int_equal(r.live, 0);

	/* Acknowledged drops are delivered where they were asked for. */
	assert_content(sub, "deep.txt", "closed, in sub");
	/* Delivered, it keeps its origin, as a close's delivery does. */
	assert_int_equal(stage_get_origin(sub, "deep.txt", &got), 0);
	assert_string_equal(got.name, "deep.txt");
	assert_content(f->inbox_fd, "taken.txt", "original");
	/* The taken name got a unique one beside it. */
	{
		int n = 0;
		DIR *dp = fdopendir(dup(f->inbox_fd));
		struct dirent *de;

		assert_non_null(dp);
		while ((de = readdir(dp)) != NULL) {
			if (strncmp(de->d_name, "taken~", 6) == 0) {
				snprintf(final, sizeof(final), "%s", de->d_name);
				n++;
			}
		}
		closedir(dp);
		assert_int_equal(n, 1);
		assert_content(f->inbox_fd, final, "closed, name taken");
	}
	/* The rest went aside; the staging directory holds no drop now. */
	assert_content(f->st.incomplete_fd, unacked, "never closed");
	assert_content(f->st.incomplete_fd, unacked_known, "never closed either");
	assert_content(f->st.incomplete_fd, no_origin, "closed, origin lost");
	assert_false(exists(area_fd, unacked));
	assert_false(exists(area_fd, unacked_known));
	assert_false(exists(area_fd, to_sub));
	assert_false(exists(area_fd, to_taken));
	assert_false(exists(area_fd, no_origin));
	/* What is no drop stays, and so does the area that holds it. */
	assert_content(area_fd, "x.other", "not a drop");
	assert_true(area_exists(f, area));

	/* Exactly once: a second recovery finds nothing to do. */
	recover_staging(&f->st, f->inbox_fd, &r);
	assert_int_equal(r.published + r.quarantined + r.failed + r.repaired, 0);
	/* Once empty, a recovered area is removed. */
	assert_int_equal(unlinkat(area_fd, "x.other", 0), 0);
	recover_staging(&f->st, f->inbox_fd, &r);
	assert_false(area_exists(f, area));
	close(area_fd);
	close(sub);
}

static void test_area_is_locked_while_open(void **state)
{
	struct fixture *f = *state;
	char host[256] = "", want[300], area[AREA_NAME_MAX];
	struct staging other;
	struct stat sb;

	/* HOST.PID.RANDOM, a directory of the staging directory, where drops
	 * are staged, with its lock held. */
	gethostname(host, sizeof(host) - 1);
	host[strcspn(host, ".")] = '\0';
	snprintf(want, sizeof(want), "%s.%d.", host, (int)getpid());
	assert_memory_equal(f->st.area, want, strlen(want));
	assert_int_equal(fstatat(f->st.rootfd, f->st.area, &sb, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(sb.st_mode & 07777, 0700);
	assert_int_equal(fstat(f->st.dirfd, &sb), 0);
	assert_true(exists(f->st.dirfd, LOCK_FILE));
	assert_false(area_lockable(f, f->st.area));

	/* A second instance gets an area of its own; closed empty, it is gone. */
	open_instance(f, &other);
	assert_string_not_equal(other.area, f->st.area);
	snprintf(area, sizeof(area), "%s", other.area);
	assert_false(area_lockable(f, area));
	staging_close(&other);
	assert_false(area_exists(f, area));
	assert_true(area_exists(f, f->st.area));
}

static void test_recover_leaves_a_live_area_alone(void **state)
{
	struct fixture *f = *state;
	char open_drop[STAGE_NAME_MAX], acked[STAGE_NAME_MAX];
	struct origin top;
	struct staging live;
	struct recovery r;

	if (geteuid() != 0)
		skip();
	make_origin(f, NULL, "live.txt", &top);
	open_instance(f, &live);
	stage_in(&live, "being written", &top, false, open_drop);
	stage_in(&live, "closed, lingering", &top, true, acked);

	recover_staging(&f->st, f->inbox_fd, &r);
	assert_int_equal(r.live, 1);
	assert_int_equal(r.areas + r.published + r.quarantined + r.failed + r.repaired, 0);
	assert_content(live.dirfd, open_drop, "being written");
	assert_content(live.dirfd, acked, "closed, lingering");
	assert_false(exists(f->inbox_fd, "live.txt"));
	assert_false(exists(f->st.incomplete_fd, open_drop));

	/* Its owner still publishes from it. */
	{
		char final[NAME_MAX_BYTES + 1];

		assert_int_equal(publish_drop(&live, acked, f->inbox_fd, "live.txt", final), 0);
		assert_content(f->inbox_fd, "live.txt", "closed, lingering");
	}
	/* And when it is gone, the next start takes the rest. */
	staging_close(&live);
	recover_staging(&f->st, f->inbox_fd, &r);
	assert_int_equal(r.areas, 1);
	assert_int_equal(r.quarantined, 1);
	assert_int_equal(r.live, 0);
	assert_content(f->st.incomplete_fd, open_drop, "being written");
}

/* While serving (recover_gone()): a live area is left alone, the old
 * layout is the start's, and an area is taken over once its instance is
 * gone: its acknowledged drop delivered, its open one set aside, the area
 * removed; the next pass finds nothing. */
static void test_recover_gone_while_serving(void **state)
{
	struct fixture *f = *state;
	char open_drop[STAGE_NAME_MAX], acked[STAGE_NAME_MAX], area[AREA_NAME_MAX];
	struct origin top;
	struct staging other;
	struct recovery r;

	if (geteuid() != 0)
		skip();
	make_origin(f, NULL, "gone.txt", &top);
	open_instance(f, &other);
	snprintf(area, sizeof(area), "%s", other.area);
	stage_in(&other, "being written", &top, false, open_drop);
	stage_in(&other, "acknowledged", &top, true, acked);
	write_file(f->st.rootfd, "d.00000000000000dd", "old layout");

	recover_gone(&f->st, f->inbox_fd, &r);
	assert_int_equal(r.live, 1);
	assert_int_equal(r.areas + r.published + r.quarantined + r.failed + r.repaired, 0);
	assert_content(other.dirfd, open_drop, "being written");
	assert_content(other.dirfd, acked, "acknowledged");
	assert_true(exists(f->st.rootfd, "d.00000000000000dd"));

	/* Its instance dies (its lock goes with its descriptors). */
	close(other.lockfd);
	other.lockfd = -1;
	recover_gone(&f->st, f->inbox_fd, &r);
	assert_int_equal(r.areas, 1);
	assert_int_equal(r.published, 1);
	assert_int_equal(r.quarantined, 1);
	assert_int_equal(r.failed + r.live, 0);
	assert_content(f->inbox_fd, "gone.txt", "acknowledged");
	assert_content(f->st.incomplete_fd, open_drop, "being written");
	assert_false(area_exists(f, area));
	assert_true(exists(f->st.rootfd, "d.00000000000000dd"));

	recover_gone(&f->st, f->inbox_fd, &r);
	assert_int_equal(r.areas + r.published + r.quarantined + r.failed + r.repaired + r.live, 0);
	close(other.incomplete_fd);
	close(other.dirfd);
	close(other.rootfd);
	dirsync_destroy(&other.dirsync);
}

/* staging_still_ours(): 0 while the area is there and locked by us;
 * -ESTALE once its lock is lost (another open file can take it), and once
 * it is gone (taken over and removed). */
static void test_still_ours(void **state)
{
	struct fixture *f = *state;
	struct staging other;
	char moved[AREA_NAME_MAX + 8];
	int fd;

	assert_int_equal(staging_still_ours(&f->st), 0);
	open_instance(f, &other);
	assert_int_equal(staging_still_ours(&other), 0);

	/* The lock lost, as a cluster filesystem's client loses it when it
	 * reconnects: the same lock file, open but unlocked. */
	fd = openat(other.dirfd, LOCK_FILE, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	close(other.lockfd);
	other.lockfd = fd;
	assert_int_equal(staging_still_ours(&other), -ESTALE);
	/* The probe let go of it again: a recovery can take it. */
	assert_true(area_lockable(f, other.area));

	/* Gone: taken over and removed (here renamed away). */
	snprintf(moved, sizeof(moved), "gone.%s", other.area);
	assert_int_equal(renameat(other.rootfd, other.area, other.rootfd, moved), 0);
	assert_int_equal(staging_still_ours(&other), -ESTALE);
	assert_int_equal(renameat(other.rootfd, moved, other.rootfd, other.area), 0);
	staging_close(&other);
	assert_int_equal(staging_still_ours(&f->st), 0);
}

static void test_recover_old_layout(void **state)
{
	struct fixture *f = *state;
	struct origin top;
	struct recovery r;
	int fd;

	if (geteuid() != 0)
		skip();
	/* A version before areas staged straight in the staging directory. */
	make_origin(f, NULL, "old.txt", &top);
	fd = openat(f->st.rootfd, "a.00000000000000aa", O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "acknowledged", 12), 12);
	assert_int_equal(stage_set_origin(fd, &top), 0);
	close(fd);
	write_file(f->st.rootfd, "d.00000000000000dd", "unfinished");

	recover_staging(&f->st, f->inbox_fd, &r);
	assert_int_equal(r.published, 1);
	assert_int_equal(r.quarantined, 1);
	assert_int_equal(r.failed, 0);
	assert_content(f->inbox_fd, "old.txt", "acknowledged");
	assert_content(f->st.incomplete_fd, "d.00000000000000dd", "unfinished");
	assert_false(exists(f->st.rootfd, "a.00000000000000aa"));
	assert_false(exists(f->st.rootfd, "d.00000000000000dd"));
	/* The lock it was recovered under is free again. */
	recover_staging(&f->st, f->inbox_fd, &r);
	assert_int_equal(r.published + r.quarantined + r.failed, 0);
}

/* Acceptance 2: an instance died between the link() that published a
 * drop and the unlink() of its staged name. */
static void test_recover_crashed_link_publication(void **state)
{
	struct fixture *f = *state;
	char acked[STAGE_NAME_MAX], closing[STAGE_NAME_MAX], area[AREA_NAME_MAX];
	struct origin top, got;
	struct staging dead;
	struct recovery r;
	int n = 0;

	if (geteuid() != 0)
		skip();
	make_origin(f, NULL, "once.txt", &top);
	open_instance(f, &dead);
	snprintf(area, sizeof(area), "%s", dead.area);
	/* An acknowledged one (published at its release) and one published
	 * at its close (still d.*), each linked into the inbox, not unlinked. */
	stage_in(&dead, "acked", &top, true, acked);
	stage_in(&dead, "closing", &top, false, closing);
	assert_int_equal(linkat(dead.dirfd, acked, f->inbox_fd, "once.txt", 0), 0);
	assert_int_equal(linkat(dead.dirfd, closing, f->inbox_fd, "twice.txt", 0), 0);
	staging_close(&dead);

	recover_staging(&f->st, f->inbox_fd, &r);
	assert_int_equal(r.repaired, 2);
	assert_int_equal(r.published + r.quarantined + r.failed, 0);
	assert_int_equal(r.areas, 1);
	/* Each once, under the name it was published as, its origin kept (as
	 * every delivery keeps it). */
	{
		DIR *dp = fdopendir(dup(f->inbox_fd));
		struct dirent *de;

		assert_non_null(dp);
		while ((de = readdir(dp)) != NULL)
			n += de->d_name[0] != '.';
		closedir(dp);
	}
	assert_int_equal(n, 2);
	assert_content(f->inbox_fd, "once.txt", "acked");
	assert_content(f->inbox_fd, "twice.txt", "closing");
	assert_int_equal(stage_get_origin(f->inbox_fd, "once.txt", &got), 0);
	assert_int_equal(incomplete_count(f), 0);
	assert_false(area_exists(f, area));
}

static void test_publish_by_link(void **state)
{
	struct fixture *f = *state;
	char a[STAGE_NAME_MAX], b[STAGE_NAME_MAX];
	char fa[NAME_MAX_BYTES + 1], fb[NAME_MAX_BYTES + 1];
	struct stat sb;

	/* Where the filesystem lacks RENAME_NOREPLACE (probed at start). */
	assert_true(f->st.noreplace);	/* ext4, tmpfs have it */
	f->st.noreplace = false;
	stage(f, "first", a);
	stage(f, "second", b);
	assert_int_equal(publish_drop(&f->st, a, f->inbox_fd, "x.bin", fa), 0);
	assert_int_equal(publish_drop(&f->st, b, f->inbox_fd, "x.bin", fb), 1);
	assert_string_equal(fa, "x.bin");
	assert_content(f->inbox_fd, "x.bin", "first");
	assert_content(f->inbox_fd, fb, "second");
	assert_false(exists(f->st.dirfd, a));
	assert_false(exists(f->st.dirfd, b));
	assert_int_equal(fstatat(f->inbox_fd, fb, &sb, 0), 0);
	assert_int_equal(sb.st_nlink, 1);
}

static void test_recover_removes_a_dead_half_made_area(void **state)
{
	struct fixture *f = *state;
	struct recovery r;
	int afd;

	/* An instance died between making its area and renaming it locked. */
	assert_int_equal(mkdirat(f->st.rootfd, ".new.deadhost.1.00000000", 0700), 0);
	afd = openat(f->st.rootfd, ".new.deadhost.1.00000000", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(afd >= 0);
	write_file(afd, LOCK_FILE, "");
	close(afd);
	/* And a directory that is no area at all (no lock file) stays. */
	assert_int_equal(mkdirat(f->st.rootfd, "not-an-area", 0700), 0);

	recover_staging(&f->st, f->inbox_fd, &r);
	assert_int_equal(r.areas + r.live + r.failed, 0);
	assert_false(area_exists(f, ".new.deadhost.1.00000000"));
	assert_true(area_exists(f, "not-an-area"));
	assert_true(area_exists(f, f->st.area));
}

/* staging_open() records names= for inboxfs-quarantine; staging_names()
 * reads it back, and tells a missing or broken record apart. */
static void test_names_recorded(void **state)
{
	struct fixture *f = *state;
	struct name_template t, eight3;
	struct staging other;

	assert_int_equal(staging_names(f->st.rootfd, &t), 0);
	assert_string_equal(t.spec, "%s~%t%e");
	assert_content(f->st.rootfd, NAMES_FILE, "%s~%t%e\n");

	/* The instance started last says. */
	assert_int_equal(name_template_parse("8.3", &eight3), 0);
	memset(&other, 0, sizeof(other));
	other.names = &eight3;
	assert_int_equal(staging_open(&other, f->inbox_fd, f->inbox_fd, STAGING_DIR), 0);
	assert_int_equal(staging_names(f->st.rootfd, &t), 0);
	assert_string_equal(t.spec, "%8t%3e");
	staging_close(&other);

	assert_int_equal(unlinkat(f->st.rootfd, NAMES_FILE, 0), 0);
	assert_int_equal(staging_names(f->st.rootfd, &t), -ENOENT);
	write_file(f->st.rootfd, NAMES_FILE, "%s~%e\n");	/* no tag */
	assert_int_equal(staging_names(f->st.rootfd, &t), -EINVAL);
}

/* publish_inside(): the directory asked for while it is in the inbox, the
 * top once it is removed or moved out of it; a failure to open it that
 * says nothing of where it is publishes nothing. INBOX is a directory of
 * the fixture's, so that "out of it" is on the same filesystem. */
static void test_publish_inside(void **state)
{
	struct fixture *f = *state;
	char name[STAGE_NAME_MAX], final[NAME_MAX_BYTES + 1];
	enum delivery where;
	int inbox, sub, deep, gone, moved;

	assert_int_equal(mkdirat(f->inbox_fd, "inbox", 0755), 0);
	inbox = openat(f->inbox_fd, "inbox", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(inbox >= 0);
	assert_int_equal(mkdirat(inbox, "sub", 0755), 0);
	assert_int_equal(mkdirat(inbox, "sub/deep", 0755), 0);
	assert_int_equal(mkdirat(inbox, "gone", 0755), 0);
	assert_int_equal(mkdirat(inbox, "moved", 0755), 0);
	sub = openat(inbox, "sub", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	deep = openat(inbox, "sub/deep", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	gone = openat(inbox, "gone", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	moved = openat(inbox, "moved", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(sub >= 0 && deep >= 0 && gone >= 0 && moved >= 0);

	stage(f, "deep", name);
	assert_int_equal(publish_inside(&f->st, f->st.dirfd, name, -1, inbox, deep, "a.txt", final,
					&where), 0);
	assert_int_equal(where, DELIVERED_ASKED);
	assert_content(deep, "a.txt", "deep");
	stage(f, "top", name);
	assert_int_equal(publish_inside(&f->st, f->st.dirfd, name, -1, inbox, inbox, "a.txt", final,
					&where), 0);
	assert_int_equal(where, DELIVERED_ASKED);
	assert_content(inbox, "a.txt", "top");

	/* Removed: at the top, beside what is there. */
	assert_int_equal(unlinkat(inbox, "gone", AT_REMOVEDIR), 0);
	stage(f, "gone", name);
	assert_int_equal(publish_inside(&f->st, f->st.dirfd, name, -1, inbox, gone, "b.txt", final,
					&where), 0);
	assert_int_equal(where, DELIVERED_TOP_GONE);
	assert_string_equal(delivery_why(where), "is gone");
	assert_content(inbox, "b.txt", "gone");
	stage(f, "unopened", name);
	assert_int_equal(publish_inside(&f->st, f->st.dirfd, name, -1, inbox, -ESTALE, "b.txt", final,
					&where), 1);
	assert_int_equal(where, DELIVERED_TOP_GONE);
	assert_content(inbox, final, "unopened");

	/* Moved out of the inbox (its descriptor still opens it): the top. */
	assert_int_equal(renameat(inbox, "moved", f->inbox_fd, "outside"), 0);
	stage(f, "moved", name);
	assert_int_equal(publish_inside(&f->st, f->st.dirfd, name, -1, inbox, moved, "c.txt", final,
					&where), 0);
	assert_int_equal(where, DELIVERED_TOP_OUTSIDE);
	assert_string_equal(delivery_why(where), "is not in the inbox");
	assert_content(inbox, "c.txt", "moved");
	assert_false(exists(moved, "c.txt"));
	/* So is a directory the inbox is in. */
	stage(f, "above", name);
	assert_int_equal(publish_inside(&f->st, f->st.dirfd, name, -1, inbox, f->inbox_fd, "d.txt",
					final, &where), 0);
	assert_int_equal(where, DELIVERED_TOP_OUTSIDE);
	assert_content(inbox, "d.txt", "above");

	/* Out of descriptors: nothing is published, the drop stays. */
	stage(f, "waits", name);
	assert_int_equal(publish_inside(&f->st, f->st.dirfd, name, -1, inbox, -EMFILE, "e.txt", final,
					&where), -EMFILE);
	assert_false(exists(inbox, "e.txt"));
	assert_content(f->st.dirfd, name, "waits");

	/* Delivered, a message keeps its origin (nothing reads it outside
	 * staging: no write to remove it); one that waits keeps it too, for
	 * recovery. */
	if (geteuid() == 0) {
		struct origin o, got;
		int fd;

		make_origin(f, NULL, "f.txt", &o);
		fd = openat(f->st.dirfd, name, O_RDONLY | O_CLOEXEC);
		assert_true(fd >= 0);
		assert_int_equal(stage_set_origin(fd, &o), 0);
		close(fd);
		assert_int_equal(publish_inside(&f->st, f->st.dirfd, name, -1, inbox, -EMFILE,
						"f.txt", final, &where), -EMFILE);
		assert_int_equal(stage_get_origin(f->st.dirfd, name, &got), 0);
		assert_int_equal(publish_inside(&f->st, f->st.dirfd, name, -1, inbox, sub,
						"f.txt", final, &where), 0);
		assert_int_equal(stage_get_origin(sub, "f.txt", &got), 0);
		assert_string_equal(got.name, "f.txt");
	}

	close(moved);
	close(gone);
	close(deep);
	close(sub);
	close(inbox);
}

/* A removed directory's handle opens nothing: -ESTALE, as gone. */
static void test_origin_open_dir(void **state)
{
	struct fixture *f = *state;
	struct origin o;
	struct stat a, b;
	int fd;

	if (geteuid() != 0)
		skip();		/* open_by_handle_at() */
	assert_int_equal(mkdirat(f->inbox_fd, "sub", 0755), 0);
	make_origin(f, "sub", "x.txt", &o);
	fd = origin_open_dir(f->inbox_fd, &o);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &a), 0);
	assert_int_equal(fstatat(f->inbox_fd, "sub", &b, 0), 0);
	assert_int_equal(a.st_ino, b.st_ino);
	close(fd);
	assert_int_equal(unlinkat(f->inbox_fd, "sub", AT_REMOVEDIR), 0);
	assert_int_equal(origin_open_dir(f->inbox_fd, &o), -ESTALE);
	o.handle_bytes = sizeof(o.handle) + 1;
	assert_int_equal(origin_open_dir(f->inbox_fd, &o), -ESTALE);
}

/* A directory beside the inbox's files standing for the bare mountpoint
 * (stray_*() care only that it is on the inbox's filesystem). */
static int make_mnt(struct fixture *f)
{
	int fd;

	assert_int_equal(mkdirat(f->inbox_fd, "mnt", 0755), 0);
	fd = openat(f->inbox_fd, "mnt", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

static void test_stray_deliver(void **state)
{
	struct fixture *f = *state;
	char final[NAME_MAX_BYTES + 1];
	int mnt = make_mnt(f);

	write_file(mnt, "x.txt", "one");
	assert_int_equal(stray_check(mnt, "x.txt", f->inbox_fd), 0);
	assert_true(exists(mnt, "x.txt"));
	assert_int_equal(stray_deliver(&f->st, mnt, "x.txt", f->inbox_fd, final), 0);
	assert_string_equal(final, "x.txt");
	assert_content(f->inbox_fd, "x.txt", "one");
	assert_false(exists(mnt, "x.txt"));

	/* A taken name: a unique one, as for a drop; synced (sync=close). */
	f->st.sync = true;
	write_file(mnt, "x.txt", "two");
	assert_int_equal(stray_deliver(&f->st, mnt, "x.txt", f->inbox_fd, final), 1);
	assert_true(strncmp(final, "x~", 2) == 0 && strlen(final) == strlen("x~") + 12 + 4);
	assert_content(f->inbox_fd, final, "two");
	assert_content(f->inbox_fd, "x.txt", "one");
	assert_false(exists(mnt, "x.txt"));

	/* Where RENAME_NOREPLACE is missing: link() and unlink(). */
	f->st.noreplace = false;
	write_file(mnt, "y.txt", "three");
	assert_int_equal(stray_deliver(&f->st, mnt, "y.txt", f->inbox_fd, final), 0);
	assert_content(f->inbox_fd, "y.txt", "three");
	assert_false(exists(mnt, "y.txt"));
	close(mnt);
}

static void test_stray_refused(void **state)
{
	struct fixture *f = *state;
	char final[NAME_MAX_BYTES + 1];
	int mnt = make_mnt(f), w;

	/* Never opened, never moved: a symlink, a FIFO (an open would block). */
	assert_int_equal(symlinkat("/etc/passwd", mnt, "link"), 0);
	assert_int_equal(mkfifoat(mnt, "fifo", 0644), 0);
	assert_int_equal(stray_check(mnt, "link", f->inbox_fd), -EINVAL);
	assert_int_equal(stray_deliver(&f->st, mnt, "link", f->inbox_fd, final), -EINVAL);
	assert_int_equal(stray_deliver(&f->st, mnt, "fifo", f->inbox_fd, final), -EINVAL);
	assert_true(exists(mnt, "link") && exists(mnt, "fifo"));

	/* Open for writing: its writer may not be done. Once it is, it goes. */
	w = openat(mnt, "busy.txt", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	assert_true(w >= 0);
	assert_int_equal(write(w, "half", 4), 4);
	assert_int_equal(stray_check(mnt, "busy.txt", f->inbox_fd), -EBUSY);
	assert_int_equal(stray_deliver(&f->st, mnt, "busy.txt", f->inbox_fd, final), -EBUSY);
	assert_true(exists(mnt, "busy.txt"));
	assert_false(exists(f->inbox_fd, "busy.txt"));
	assert_int_equal(write(w, " and all", 8), 8);
	close(w);
	assert_int_equal(stray_deliver(&f->st, mnt, "busy.txt", f->inbox_fd, final), 0);
	assert_content(f->inbox_fd, "busy.txt", "half and all");

	/* Another link, not in the inbox: whoever holds it could change the
	 * message after its delivery. */
	write_file(mnt, "shared", "s");
	assert_int_equal(linkat(mnt, "shared", f->st.dirfd, "elsewhere", 0), 0);
	assert_int_equal(stray_check(mnt, "shared", f->inbox_fd), -EMLINK);
	assert_int_equal(stray_deliver(&f->st, mnt, "shared", f->inbox_fd, final), -EMLINK);
	assert_true(exists(mnt, "shared"));
	assert_false(exists(f->inbox_fd, "shared"));
	unlinkat(f->st.dirfd, "elsewhere", 0);
	close(mnt);
}

/* A start killed between the link() and the unlink() of a delivery: the
 * next one finds the second link in the inbox and only removes the
 * mountpoint's name. */
static void test_stray_delivered_by_link_before_a_crash(void **state)
{
	struct fixture *f = *state;
	char final[NAME_MAX_BYTES + 1];
	int mnt = make_mnt(f);
	struct stat sb;

	write_file(mnt, "m.txt", "once");
	assert_int_equal(linkat(mnt, "m.txt", f->inbox_fd, "m~ABCDEFGHJKMN.txt", 0), 0);
	assert_int_equal(stray_check(mnt, "m.txt", f->inbox_fd), 0);
	assert_int_equal(stray_deliver(&f->st, mnt, "m.txt", f->inbox_fd, final), 2);
	assert_string_equal(final, "m~ABCDEFGHJKMN.txt");
	assert_false(exists(mnt, "m.txt"));
	assert_false(exists(f->inbox_fd, "m.txt"));
	assert_int_equal(fstatat(f->inbox_fd, final, &sb, 0), 0);
	assert_int_equal(sb.st_nlink, 1);
	close(mnt);
}

static void test_stray_on_another_filesystem(void **state)
{
	struct fixture *f = *state;
	char final[NAME_MAX_BYTES + 1], name[64];
	struct stat shm, tmp;
	int shm_fd;

	if (stat("/dev/shm", &shm) < 0 || fstat(f->inbox_fd, &tmp) < 0 || shm.st_dev == tmp.st_dev)
		skip();
	shm_fd = open("/dev/shm", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(shm_fd >= 0);
	snprintf(name, sizeof(name), "inboxfs-unit-%d", (int)getpid());
	write_file(shm_fd, name, "far");
	assert_int_equal(stray_check(shm_fd, name, f->inbox_fd), -EXDEV);
	assert_int_equal(stray_deliver(&f->st, shm_fd, name, f->inbox_fd, final), -EXDEV);
	assert_content(shm_fd, name, "far");
	unlinkat(shm_fd, name, 0);
	close(shm_fd);
}

#define FIXTURE_TEST(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FIXTURE_TEST(test_open_creates_directories),
		FIXTURE_TEST(test_open_not_a_directory),
		FIXTURE_TEST(test_open_other_filesystem),
		FIXTURE_TEST(test_stage_create),
		FIXTURE_TEST(test_stage_create_owner),
		FIXTURE_TEST(test_publish_free_name),
		FIXTURE_TEST(test_publish_taken_name),
		FIXTURE_TEST(test_publish_taken_name_sync),
		FIXTURE_TEST(test_publish_twice_same_name),
		FIXTURE_TEST(test_publish_into_subdirectory),
		FIXTURE_TEST(test_publish_missing_stage),
		FIXTURE_TEST(test_quarantine),
		FIXTURE_TEST(test_discard),
		FIXTURE_TEST(test_origin_roundtrip),
		FIXTURE_TEST(test_ack),
		FIXTURE_TEST(test_recover),
		FIXTURE_TEST(test_area_is_locked_while_open),
		FIXTURE_TEST(test_recover_leaves_a_live_area_alone),
		FIXTURE_TEST(test_recover_gone_while_serving),
		FIXTURE_TEST(test_still_ours),
		FIXTURE_TEST(test_recover_old_layout),
		FIXTURE_TEST(test_recover_crashed_link_publication),
		FIXTURE_TEST(test_publish_by_link),
		FIXTURE_TEST(test_recover_removes_a_dead_half_made_area),
		FIXTURE_TEST(test_names_recorded),
		FIXTURE_TEST(test_publish_inside),
		FIXTURE_TEST(test_origin_open_dir),
		FIXTURE_TEST(test_stray_deliver),
		FIXTURE_TEST(test_stray_refused),
		FIXTURE_TEST(test_stray_delivered_by_link_before_a_crash),
		FIXTURE_TEST(test_stray_on_another_filesystem),
	};

	unit_xml_reset();
	return cmocka_run_group_tests_name("unit-staging", tests, NULL, NULL);
}
