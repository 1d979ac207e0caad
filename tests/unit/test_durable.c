/* Unit tests for core/durable.c: which filesystems get the one-commit
 * durable close. */
#include "unit.h"

#include "durable.h"

#define EXT4 0xEF53UL
#define XFS 0x58465342UL
#define TMPFS 0x01021994UL

static void test_journaled_ext4_ordered_gets_one_commit(void **state)
{
	const char *why = NULL;

	(void)state;
	assert_int_equal(durable_choose(EXT4, "30563", true, "rw,noinit_itable", &why), DURABLE_ONE_COMMIT);
	assert_non_null(why);
	assert_int_equal(durable_choose(EXT4, "30563", true, "rw", &why), DURABLE_ONE_COMMIT);
	assert_int_equal(durable_choose(EXT4, "30563", true, "rw,data=ordered,commit=600", &why),
			 DURABLE_ONE_COMMIT);
	/* The journal thread outside our pid namespace reads 0. */
	assert_int_equal(durable_choose(EXT4, "0", true, "rw", &why), DURABLE_ONE_COMMIT);
}

static void test_ext4_without_a_journal_keeps_two_syncs(void **state)
{
	const char *why = NULL;

	(void)state;
	/* What this machine's root says: made without a journal. */
	assert_int_equal(durable_choose(EXT4, "<none>", true, "rw,discard", &why), DURABLE_FSYNC);
	assert_string_equal(why, "ext4 without a journal");
	assert_int_equal(durable_choose(EXT4, "", true, "rw", &why), DURABLE_FSYNC);
	assert_int_equal(durable_choose(EXT4, NULL, true, "rw", &why), DURABLE_FSYNC);
	assert_int_equal(durable_choose(EXT4, "30563", true, NULL, &why), DURABLE_FSYNC);
	/* A journal on another device. */
	assert_int_equal(durable_choose(EXT4, "30563", false, "rw", &why), DURABLE_FSYNC);
}

static void test_other_data_modes_keep_two_syncs(void **state)
{
	const char *why = NULL;

	(void)state;
	assert_int_equal(durable_choose(EXT4, "1", true, "rw,data=journal", &why), DURABLE_FSYNC);
	assert_int_equal(durable_choose(EXT4, "1", true, "data=writeback,rw", &why), DURABLE_FSYNC);
	assert_int_equal(durable_choose(EXT4, "1", true, "rw,data=journal,commit=5", &why), DURABLE_FSYNC);
	assert_int_equal(durable_choose(EXT4, "1", true, "rw,journal_async_commit", &why),
			 DURABLE_FSYNC);
	/* Only whole items count. */
	assert_int_equal(durable_choose(EXT4, "1", true, "rw,xdata=journal", &why), DURABLE_ONE_COMMIT);
	assert_int_equal(durable_choose(EXT4, "1", true, "rw,data=journaled", &why), DURABLE_ONE_COMMIT);
}

static void test_other_filesystems_keep_two_syncs(void **state)
{
	const char *why = NULL;

	(void)state;
	assert_int_equal(durable_choose(TMPFS, NULL, true, "rw", &why), DURABLE_FSYNC);
	assert_string_equal(why, "neither ext4 nor XFS");
	assert_int_equal(durable_choose(TMPFS, NULL, false, NULL, &why), DURABLE_FSYNC);
}

static void test_xfs(void **state)
{
	const char *why = NULL;

	(void)state;
	assert_int_equal(durable_choose(XFS, NULL, false, "rw,attr2,inode64,logbufs=8,logbsize=32k,noquota",
					&why), DURABLE_ONE_COMMIT);
	assert_string_equal(why, "XFS");
	/* An external log: kept on two syncs (not checked). */
	assert_int_equal(durable_choose(XFS, NULL, false, "rw,logdev=/dev/sdb1,noquota", &why),
			 DURABLE_FSYNC);
	assert_int_equal(durable_choose(XFS, NULL, false, NULL, &why), DURABLE_FSYNC);
}

static void test_probe_of_proc(void **state)
{
	const char *why = NULL;
	int fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(durable_probe(fd, &why), DURABLE_FSYNC);
	assert_string_equal(why, "neither ext4 nor XFS");
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_journaled_ext4_ordered_gets_one_commit),
		cmocka_unit_test(test_ext4_without_a_journal_keeps_two_syncs),
		cmocka_unit_test(test_other_data_modes_keep_two_syncs),
		cmocka_unit_test(test_other_filesystems_keep_two_syncs),
		cmocka_unit_test(test_xfs),
		cmocka_unit_test(test_probe_of_proc),
	};

	unit_xml_reset();
	return cmocka_run_group_tests_name("unit-durable", tests, NULL, NULL);
}
