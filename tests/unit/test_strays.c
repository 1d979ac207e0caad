/* Unit tests for core/strays.c: the walk over a bare mountpoint at
 * start-up (where each file goes, what is refused and named, that a check
 * changes nothing), in TOP/inbox and TOP/mnt made with mkdtemp. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "unit.h"

#include "strays.h"

struct fixture {
	char top[64];
	int top_fd, inbox_fd, mnt_fd;
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
	strcpy(f->top, "/tmp/inboxfs-unit-XXXXXX");
	if (mkdtemp(f->top) == NULL) {
		free(f);
		return -1;
	}
	f->top_fd = open(f->top, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (f->top_fd < 0 || mkdirat(f->top_fd, "inbox", 0755) < 0 ||
	    mkdirat(f->top_fd, "mnt", 0755) < 0)
		return -1;
	f->inbox_fd = openat(f->top_fd, "inbox", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	f->mnt_fd = openat(f->top_fd, "mnt", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (f->inbox_fd < 0 || f->mnt_fd < 0 || name_template_parse("default", &f->names) != 0)
		return -1;
	f->st.names = &f->names;
	if (staging_open(&f->st, f->inbox_fd, f->inbox_fd, STAGING_DIR) != 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	staging_close(&f->st);
	close(f->mnt_fd);
	close(f->inbox_fd);
	close(f->top_fd);
	nftw(f->top, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* Each file to its directory in the inbox, or the top where the inbox has
 * none (or a symlink, or the staging directory, in its place); a check
 * first, which changes nothing. */
static void test_sweep_maps_directories(void **state)
{
	struct fixture *f = *state;
	struct strays s;

	assert_int_equal(mkdirat(f->inbox_fd, "sub", 0755), 0);
	assert_int_equal(mkdirat(f->inbox_fd, "sub/deeper", 0755), 0);
	assert_int_equal(symlinkat("sub", f->inbox_fd, "alias"), 0);
	write_file(f->mnt_fd, "a.txt", "a");
	write_file(f->mnt_fd, "sub/b.txt", "b");
	write_file(f->mnt_fd, "sub/deeper/c.txt", "c");
	write_file(f->mnt_fd, "gone/d.txt", "d");
	write_file(f->mnt_fd, "sub/gone/e.txt", "e");
	write_file(f->mnt_fd, "alias/f.txt", "f");
	write_file(f->mnt_fd, STAGING_DIR "/g.txt", "g");
	write_file(f->inbox_fd, "a.txt", "taken");

	assert_int_equal(strays_sweep(NULL, f->inbox_fd, f->mnt_fd, &s), 0);
	assert_int_equal(s.delivered + s.failed + s.refused, 0);
	assert_string_equal(s.refusals, "");
	assert_true(exists(f->mnt_fd, "sub/deeper/c.txt"));
	assert_false(exists(f->inbox_fd, "sub/b.txt"));

	assert_int_equal(strays_sweep(&f->st, f->inbox_fd, f->mnt_fd, &s), 0);
	assert_int_equal(s.delivered, 7);
	assert_int_equal(s.renamed, 1);
	assert_int_equal(s.failed + s.repaired, 0);
	assert_content(f->inbox_fd, "a.txt", "taken");
	assert_content(f->inbox_fd, "sub/b.txt", "b");
	assert_content(f->inbox_fd, "sub/deeper/c.txt", "c");
	assert_content(f->inbox_fd, "d.txt", "d");
	assert_content(f->inbox_fd, "e.txt", "e");
	assert_content(f->inbox_fd, "f.txt", "f");
	assert_content(f->inbox_fd, "g.txt", "g");
	assert_false(exists(f->inbox_fd, STAGING_DIR "/g.txt"));
	/* The files are gone from the mountpoint, the directories stay. */
	assert_false(exists(f->mnt_fd, "a.txt"));
	assert_false(exists(f->mnt_fd, "sub/deeper/c.txt"));
	assert_true(exists(f->mnt_fd, "sub/deeper"));

	/* Nothing left: nothing to do. */
	assert_int_equal(strays_sweep(&f->st, f->inbox_fd, f->mnt_fd, &s), 0);
	assert_int_equal(s.delivered, 0);
}

/* Anything that cannot be delivered is named, and nothing is done to it,
 * by a check; a delivery leaves it too and names it again. */
static void test_sweep_refuses_and_names(void **state)
{
	struct fixture *f = *state;
	struct strays s;

	write_file(f->mnt_fd, "fine.txt", "fine");
	assert_int_equal(mkdirat(f->mnt_fd, "sub", 0755), 0);
	assert_int_equal(symlinkat("/etc/passwd", f->mnt_fd, "sub/link"), 0);
	assert_int_equal(mkfifoat(f->mnt_fd, "fifo", 0644), 0);
	assert_int_equal(strays_sweep(NULL, f->inbox_fd, f->mnt_fd, &s), 2);
	assert_non_null(strstr(s.refusals, "sub/link (a symlink)"));
	assert_non_null(strstr(s.refusals, "fifo (a FIFO)"));
	assert_null(strstr(s.refusals, "fine"));
	assert_true(exists(f->mnt_fd, "fine.txt"));

	assert_int_equal(strays_sweep(&f->st, f->inbox_fd, f->mnt_fd, &s), 2);
	assert_true(exists(f->mnt_fd, "sub/link") && exists(f->mnt_fd, "fifo"));
}

/* A mountpoint that holds the inbox is not walked into it. */
static void test_sweep_never_enters_the_inbox(void **state)
{
	struct fixture *f = *state;
	struct strays s;

	write_file(f->inbox_fd, "message.txt", "the consumer's");
	assert_int_equal(strays_sweep(NULL, f->inbox_fd, f->top_fd, &s), 1);
	assert_string_equal(s.refusals, "inbox (it is INBOX)");
	assert_int_equal(strays_sweep(&f->st, f->inbox_fd, f->top_fd, &s), 1);
	assert_int_equal(s.delivered, 0);
	assert_content(f->inbox_fd, "message.txt", "the consumer's");
}

/* A mountpoint in the staging directory (absurd, but given): what is
 * staged there is never walked, let alone delivered. */
static void test_sweep_never_takes_from_staging(void **state)
{
	struct fixture *f = *state;
	char staged[STAGE_NAME_MAX];
	struct strays s;
	int fd;

	assert_int_equal(stage_create(&f->st, 0644, 0, 0, staged, &fd), 0);
	close(fd);
	assert_int_equal(strays_sweep(NULL, f->inbox_fd, f->st.dirfd, &s), 1);
	assert_non_null(strstr(s.refusals, "staging directory"));
	assert_int_equal(strays_sweep(&f->st, f->inbox_fd, f->st.rootfd, &s), 1);
	assert_int_equal(s.delivered, 0);
	assert_true(exists(f->st.dirfd, staged));
	assert_int_equal(discard_drop(&f->st, staged), 0);
}

/* Many refusals still make one bounded line, which says how many more. */
static void test_sweep_refusals_are_cut_short(void **state)
{
	struct fixture *f = *state;
	struct strays s;
	char name[32];

	for (int i = 0; i < 200; i++) {
		snprintf(name, sizeof(name), "link-%03d", i);
		assert_int_equal(symlinkat("x", f->mnt_fd, name), 0);
	}
	assert_int_equal(strays_sweep(NULL, f->inbox_fd, f->mnt_fd, &s), 200);
	assert_true(strlen(s.refusals) < sizeof(s.refusals));
	assert_non_null(strstr(s.refusals, " more"));
	assert_non_null(strstr(s.refusals, "(a symlink)"));
}

/* A tree deeper than anyone's drop is refused, not walked to the end. */
static void test_sweep_depth_is_bounded(void **state)
{
	struct fixture *f = *state;
	struct strays s;
	char path[256] = "";

	for (int i = 0; i < 40; i++) {
		strcat(path, i ? "/d" : "d");
		assert_int_equal(mkdirat(f->mnt_fd, path, 0755), 0);
	}
	assert_int_equal(strays_sweep(NULL, f->inbox_fd, f->mnt_fd, &s), 1);
	assert_non_null(strstr(s.refusals, "(too deep)"));
}

#define FIXTURE_TEST(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FIXTURE_TEST(test_sweep_maps_directories),
		FIXTURE_TEST(test_sweep_refuses_and_names),
		FIXTURE_TEST(test_sweep_never_enters_the_inbox),
		FIXTURE_TEST(test_sweep_never_takes_from_staging),
		FIXTURE_TEST(test_sweep_refusals_are_cut_short),
		FIXTURE_TEST(test_sweep_depth_is_bounded),
	};

	unit_xml_reset();
	return cmocka_run_group_tests_name("unit-strays", tests, NULL, NULL);
}
