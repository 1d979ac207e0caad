/* Unit tests for core/noclobber.c: R3's decisions for observers. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "unit.h"

#include "noclobber.h"

static struct stat file_of(off_t size)
{
	struct stat st;

	memset(&st, 0, sizeof(st));
	st.st_mode = S_IFREG | 0644;
	st.st_size = size;
	return st;
}

static struct stat dir(void)
{
	struct stat st;

	memset(&st, 0, sizeof(st));
	st.st_mode = S_IFDIR | 0755;
	return st;
}

static void test_truncating_open_of_data_goes_beside(void **state)
{
	struct stat full = file_of(10), empty = file_of(0), d = dir();

	assert_int_equal(noclobber_open(O_WRONLY | O_TRUNC, &full), OPEN_BESIDE);
	assert_int_equal(noclobber_open(O_RDWR | O_CREAT | O_TRUNC, &full), OPEN_BESIDE);
	/* Nothing to lose. */
	assert_int_equal(noclobber_open(O_WRONLY | O_TRUNC, &empty), OPEN_AS_ASKED);
	assert_int_equal(noclobber_open(O_WRONLY, &full), OPEN_AS_ASKED);
	assert_int_equal(noclobber_open(O_WRONLY | O_APPEND, &full), OPEN_AS_ASKED);
	assert_int_equal(noclobber_open(O_RDONLY | O_TRUNC, &d), OPEN_AS_ASKED);
}

static void test_file_rename(void **state)
{
	struct stat src = file_of(5), dst = file_of(7), d = dir();
	enum rename_plan plan;

	assert_int_equal(noclobber_rename(0, &src, &dst, &plan), 0);
	assert_int_equal(plan, RENAME_TO_UNIQUE);
	assert_int_equal(noclobber_rename(0, &src, NULL, &plan), 0);
	assert_int_equal(plan, RENAME_TO_UNIQUE);	/* free now, maybe not then */
	assert_int_equal(noclobber_rename(0, &src, &d, &plan), 0);
	assert_int_equal(plan, RENAME_TO_UNIQUE);
	assert_int_equal(noclobber_rename(RENAME_NOREPLACE, &src, &dst, &plan), 0);
	assert_int_equal(plan, RENAME_AS_NOREPLACE);
	assert_int_equal(noclobber_rename(RENAME_EXCHANGE, &src, &dst, &plan), 0);
	assert_int_equal(plan, RENAME_AS_EXCHANGE);
}

static void test_directory_rename_is_posix(void **state)
{
	struct stat src = dir(), dst = dir(), f = file_of(1);
	enum rename_plan plan;

	assert_int_equal(noclobber_rename(0, &src, &dst, &plan), 0);
	assert_int_equal(plan, RENAME_ONTO_DIR);
	assert_int_equal(noclobber_rename(0, &src, NULL, &plan), 0);
	assert_int_equal(plan, RENAME_AS_NOREPLACE);
	assert_int_equal(noclobber_rename(0, &src, &f, &plan), -ENOTDIR);
	assert_int_equal(noclobber_rename(RENAME_NOREPLACE, &src, &dst, &plan), 0);
	assert_int_equal(plan, RENAME_AS_NOREPLACE);
	assert_int_equal(noclobber_rename(RENAME_EXCHANGE, &src, &f, &plan), 0);
	assert_int_equal(plan, RENAME_AS_EXCHANGE);
}

static void test_unknown_flags(void **state)
{
	struct stat src = file_of(1);
	enum rename_plan plan;

	assert_int_equal(noclobber_rename(RENAME_WHITEOUT, &src, NULL, &plan), -EINVAL);
	assert_int_equal(noclobber_rename(RENAME_NOREPLACE | RENAME_EXCHANGE, &src, NULL, &plan),
			 -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_truncating_open_of_data_goes_beside),
		cmocka_unit_test(test_file_rename),
		cmocka_unit_test(test_directory_rename_is_posix),
		cmocka_unit_test(test_unknown_flags),
	};

	unit_xml_reset();
	return cmocka_run_group_tests_name("unit-noclobber", tests, NULL, NULL);
}
