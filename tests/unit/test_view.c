/* Unit tests for core/view.c: who may see and do what (R2, R3's
 * permission, R7, R8) and what the kernel may cache. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "unit.h"

#include "staging.h"
#include "stats.h"
#include "view.h"

#define DIR_ S_IFDIR
#define REG S_IFREG

static void test_a_client_sees_directories_and_its_own_drops(void **state)
{
	assert_true(view_shared(DIR_ | 0755, false));
	assert_false(view_shared(DIR_ | 0755, true));	/* staging */
	assert_false(view_shared(REG | 0644, false));
	assert_false(view_shared(S_IFLNK | 0777, false));
	assert_false(view_shared(S_IFIFO | 0644, false));

	assert_true(view_client_may_use(DIR_, false, false));
	assert_false(view_client_may_use(DIR_, true, false));
	assert_false(view_client_may_use(DIR_, true, true));	/* a drop is no directory */
	assert_true(view_client_may_use(REG, false, true));
	assert_false(view_client_may_use(REG, false, false));	/* someone else's message */
	assert_false(view_client_may_use(S_IFLNK, false, false));
}

static void test_listing_shortcut_from_the_link_count(void **state)
{
	assert_true(view_no_visible_subdirs(2, 0));
	assert_false(view_no_visible_subdirs(3, 0));
	assert_true(view_no_visible_subdirs(3, 1));	/* only the staging directory */
	assert_false(view_no_visible_subdirs(4, 1));
	/* Not counted (btrfs, ext4 past 65,000): read it. */
	assert_false(view_no_visible_subdirs(1, 0));
	assert_false(view_no_visible_subdirs(1, 1));
	assert_false(view_no_visible_subdirs(0, 0));
}

static void test_client_open(void **state)
{
	assert_int_equal(view_client_open(DIR_, false, false), -EISDIR);
	assert_int_equal(view_client_open(DIR_, true, false), -ENOENT);
	assert_int_equal(view_client_open(REG, false, true), 0);
	assert_int_equal(view_client_open(REG, false, false), -ENOENT);
}

static void test_client_create_always_succeeds_unless_held(void **state)
{
	enum create_plan plan;

	assert_int_equal(view_client_create(O_WRONLY | O_CREAT | O_EXCL, true, false, &plan), 0);
	assert_int_equal(plan, CREATE_NEW_DROP);
	assert_int_equal(view_client_create(O_WRONLY | O_CREAT | O_TRUNC, true, false, &plan), 0);
	assert_int_equal(plan, CREATE_NEW_DROP);
	assert_int_equal(view_client_create(O_WRONLY | O_CREAT | O_EXCL, true, true, &plan), -EEXIST);
	assert_int_equal(view_client_create(O_WRONLY | O_CREAT, true, true, &plan), 0);
	assert_int_equal(plan, CREATE_OPEN_HELD);
	assert_int_equal(view_client_create(O_WRONLY | O_CREAT, false, false, &plan), -ENOENT);
}

static void test_client_remove(void **state)
{
	assert_int_equal(view_client_remove(false, true), 0);
	assert_int_equal(view_client_remove(true, true), -EPERM);	/* R7 */
	assert_int_equal(view_client_remove(true, false), -ENOENT);
	assert_int_equal(view_client_remove(false, false), -ENOENT);
}

static void test_client_rename(void **state)
{
	assert_int_equal(view_client_rename(0, true, true, false, false), 0);
	assert_int_equal(view_client_rename(RENAME_NOREPLACE, true, true, false, false), 0);
	assert_int_equal(view_client_rename(0, false, true, false, false), -ENOENT);
	assert_int_equal(view_client_rename(RENAME_EXCHANGE, true, true, false, false), -EPERM);
	/* R7: a directory is refused, not "not found"; others' files are not
	 * there. */
	assert_int_equal(view_client_rename(0, true, false, true, false), -EPERM);
	assert_int_equal(view_client_rename(0, true, false, false, false), -ENOENT);
	/* A directory of the shared view is never a target. */
	assert_int_equal(view_client_rename(0, true, true, false, true), -EEXIST);
}

static void test_client_make(void **state)
{
	enum make_plan plan;

	assert_int_equal(view_client_make(REG | 0644, false, true, false, false, &plan), 0);
	assert_int_equal(plan, MAKE_DROP);
	assert_int_equal(view_client_make(REG | 0644, false, false, false, false, &plan), -ENOENT);
	/* R7 */
	assert_int_equal(view_client_make(DIR_ | 0755, false, true, false, false, &plan), -EPERM);
	assert_int_equal(view_client_make(DIR_ | 0755, false, true, true, false, &plan), 0);
	assert_int_equal(plan, MAKE_DIR);
	assert_int_equal(view_client_make(DIR_ | 0755, false, true, true, true, &plan), -EPERM);
	assert_int_equal(view_client_make(DIR_ | 0755, false, false, true, false, &plan), -EPERM);
	/* R8 */
	assert_int_equal(view_client_make(S_IFLNK, true, true, true, false, &plan), -EPERM);
	assert_int_equal(view_client_make(REG, true, true, true, false, &plan), -EPERM);
	assert_int_equal(view_client_make(S_IFIFO | 0644, false, true, true, false, &plan), -EPERM);
	assert_int_equal(view_client_make(S_IFSOCK | 0644, false, true, true, false, &plan), -EPERM);
	assert_int_equal(view_client_make(S_IFCHR | 0644, false, true, true, false, &plan), -EPERM);
	assert_int_equal(view_client_make(S_IFBLK | 0644, false, true, true, false, &plan), -EPERM);
	assert_int_equal(view_client_make(S_IFIFO | 0644, false, false, true, false, &plan), -EPERM);
}

static void test_reserved_names(void **state)
{
	assert_true(view_reserved_name(true, STAGING_DIR));
	assert_true(view_reserved_name(true, STATS_FILE));
	assert_false(view_reserved_name(false, STAGING_DIR));
	assert_false(view_reserved_name(true, "inbox"));
	assert_false(view_reserved_name(true, STAGING_DIR "x"));
}

static void test_directory_changes(void **state)
{
	enum setattr_plan plan;

	assert_true(view_may_change_dir(true, false));
	assert_false(view_may_change_dir(true, true));	/* smbd as root */
	assert_false(view_may_change_dir(false, false));

	assert_int_equal(view_setattr(true, DIR_, false, true, &plan), 0);
	assert_int_equal(plan, SETATTR_AS_ASKED);
	assert_int_equal(view_setattr(true, DIR_, false, false, &plan), -EPERM);
	assert_int_equal(view_setattr(false, DIR_, false, false, &plan), -EPERM);
	/* An observer's truncate(2) of a message is carried out in place. */
	assert_int_equal(view_setattr(true, REG, false, true, &plan), 0);
	assert_int_equal(plan, SETATTR_AS_ASKED);
	assert_int_equal(view_setattr(true, REG, false, false, &plan), 0);
	assert_int_equal(plan, SETATTR_AS_ASKED);
	assert_int_equal(view_setattr(false, REG, false, false, &plan), 0);
	assert_int_equal(plan, SETATTR_DROP);
	assert_int_equal(view_setattr(true, REG, true, true, &plan), -EPERM);	/* stats */
}

static void test_xattr_table(void **state)
{
	enum xattr_plan plan;

	assert_int_equal(view_xattr(XA_GET, false, REG, false, false, &plan), 0);
	assert_int_equal(plan, XATTR_AS_ASKED);
	assert_int_equal(view_xattr(XA_SET, false, REG, false, false, &plan), 0);
	assert_int_equal(plan, XATTR_AS_ASKED);	/* a drop's DOS attributes */
	assert_int_equal(view_xattr(XA_LIST, false, REG, false, false, &plan), 0);
	assert_int_equal(plan, XATTR_CLIENT_LIST);
	assert_int_equal(view_xattr(XA_LIST, true, REG, false, true, &plan), 0);
	assert_int_equal(plan, XATTR_AS_ASKED);
	/* R7 */
	assert_int_equal(view_xattr(XA_SET, false, DIR_, false, false, &plan), -EPERM);
	assert_int_equal(view_xattr(XA_REMOVE, false, DIR_, false, false, &plan), -EPERM);
	assert_int_equal(view_xattr(XA_SET, true, DIR_, false, false, &plan), -EPERM);
	assert_int_equal(view_xattr(XA_SET, true, DIR_, false, true, &plan), 0);
	assert_int_equal(view_xattr(XA_GET, false, DIR_, false, false, &plan), 0);
	assert_int_equal(view_xattr(XA_LIST, false, DIR_, false, false, &plan), 0);
	assert_int_equal(plan, XATTR_CLIENT_LIST);
	/* The stats file. */
	assert_int_equal(view_xattr(XA_GET, true, REG, true, true, &plan), -ENODATA);
	assert_int_equal(view_xattr(XA_SET, true, REG, true, true, &plan), -EPERM);
	assert_int_equal(view_xattr(XA_REMOVE, true, REG, true, true, &plan), -EPERM);
	assert_int_equal(view_xattr(XA_LIST, true, REG, true, true, &plan), 0);
	assert_int_equal(plan, XATTR_EMPTY);
}

static void test_client_lists_no_trusted_xattrs(void **state)
{
	static const char all[] = "user.DOSATTRIB\0trusted.inboxfs.origin\0security.x\0trusted.y";
	static const char kept[] = "user.DOSATTRIB\0security.x";
	char out[64];

	/* sizeof(all) counts the last name's NUL. */
	assert_int_equal(view_client_xattrs(all, sizeof(all), NULL, 0), sizeof(kept));
	memset(out, 'z', sizeof(out));
	assert_int_equal(view_client_xattrs(all, sizeof(all), out, sizeof(out)), sizeof(kept));
	assert_memory_equal(out, kept, sizeof(kept));
	assert_int_equal(out[sizeof(kept)], 'z');
	/* Exactly enough, one byte short. */
	assert_int_equal(view_client_xattrs(all, sizeof(all), out, sizeof(kept)), sizeof(kept));
	assert_int_equal(view_client_xattrs(all, sizeof(all), out, sizeof(kept) - 1), -ERANGE);
	/* Only trusted names, or none. */
	assert_int_equal(view_client_xattrs("trusted.a", 10, out, sizeof(out)), 0);
	assert_int_equal(view_client_xattrs("", 0, out, sizeof(out)), 0);
	/* A last name cut short is no name. */
	assert_int_equal(view_client_xattrs("user.a\0user.b", 10, out, sizeof(out)), 7);
}

static void test_getxattr_of_what_tools_ask_of_every_file(void **state)
{
	assert_int_equal(view_getxattr_result("security.selinux", -ENODATA), -EOPNOTSUPP);
	assert_int_equal(view_getxattr_result("system.posix_acl_access", -ENODATA), -EOPNOTSUPP);
	assert_int_equal(view_getxattr_result("system.posix_acl_default", -ENODATA), -EOPNOTSUPP);
	assert_int_equal(view_getxattr_result("user.DOSATTRIB", -ENODATA), -ENODATA);
	assert_int_equal(view_getxattr_result("security.selinux", 12), 12);
	assert_int_equal(view_getxattr_result("security.selinux", -ERANGE), -ERANGE);
}

static void test_client_statfs_is_coarse(void **state)
{
	struct statvfs sv;

	memset(&sv, 0, sizeof(sv));
	sv.f_frsize = 4096;
	sv.f_bfree = 1000;	/* 4,096,000 bytes: 3 MiB and a bit */
	sv.f_bavail = 256 * 3 + 255;
	sv.f_blocks = 5000;
	sv.f_files = 100;
	sv.f_ffree = sv.f_favail = 90;
	view_client_statfs(&sv);
	assert_int_equal(sv.f_bfree, 768);
	assert_int_equal(sv.f_bavail, 768);
	assert_int_equal(sv.f_blocks, 5000);
	assert_int_equal(sv.f_files, 0);
	assert_int_equal(sv.f_ffree, 0);
	assert_int_equal(sv.f_favail, 0);

	/* Blocks of a MiB or more: as they are. */
	sv.f_frsize = 2 * VIEW_SPACE_GRAIN;
	sv.f_bfree = 7;
	view_client_statfs(&sv);
	assert_int_equal(sv.f_bfree, 7);
	sv.f_frsize = 0;
	sv.f_bavail = 5;
	view_client_statfs(&sv);
	assert_int_equal(sv.f_bavail, 5);
}

static struct stat dir_of(uid_t uid, gid_t gid, mode_t mode)
{
	struct stat st;

	memset(&st, 0, sizeof(st));
	st.st_mode = S_IFDIR | mode;
	st.st_uid = uid;
	st.st_gid = gid;
	return st;
}

static void test_where_an_observer_may_write_beside(void **state)
{
	struct stat owned = dir_of(100, 200, 0700), group = dir_of(1, 200, 0070),
		    other = dir_of(1, 2, 0007), noexec = dir_of(100, 200, 0600),
		    grp_no = dir_of(1, 200, 0707);
	gid_t groups[] = { 300, 200 };

	assert_true(view_in_group(200, 200, NULL, 0));
	assert_true(view_in_group(200, 5, groups, 2));
	assert_false(view_in_group(200, 5, groups, 1));
	assert_false(view_in_group(7, 5, groups, 2));

	assert_int_equal(view_may_create_in(&owned, 100, 5, NULL, 0), 0);
	assert_int_equal(view_may_create_in(&owned, 101, 5, NULL, 0), -EACCES);
	assert_int_equal(view_may_create_in(&noexec, 100, 5, NULL, 0), -EACCES);
	assert_int_equal(view_may_create_in(&group, 100, 200, NULL, 0), 0);
	assert_int_equal(view_may_create_in(&group, 100, 5, groups, 2), 0);
	assert_int_equal(view_may_create_in(&group, 100, 5, groups, 1), -EACCES);
	assert_int_equal(view_may_create_in(&other, 100, 5, NULL, 0), 0);
	/* The class that matches decides, as in the kernel: a group without
	 * the bits is refused though others have them. */
	assert_int_equal(view_may_create_in(&grp_no, 100, 200, NULL, 0), -EACCES);
	/* Root always may. */
	assert_int_equal(view_may_create_in(&noexec, 0, 0, NULL, 0), 0);
	assert_int_equal(view_may_create_in(&grp_no, 0, 200, NULL, 0), 0);
}

static void test_cache_timeouts(void **state)
{
	assert_true(view_attr_timeout(false) == VIEW_SHARED_TIMEOUT);
	assert_true(view_attr_timeout(true) == 0);
	assert_true(view_entry_timeout(DIR_) == VIEW_SHARED_TIMEOUT);
	assert_true(view_entry_timeout(REG) == 0);	/* a file's name differs per view */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_client_sees_directories_and_its_own_drops),
		cmocka_unit_test(test_listing_shortcut_from_the_link_count),
		cmocka_unit_test(test_client_open),
		cmocka_unit_test(test_client_create_always_succeeds_unless_held),
		cmocka_unit_test(test_client_remove),
		cmocka_unit_test(test_client_rename),
		cmocka_unit_test(test_client_make),
		cmocka_unit_test(test_reserved_names),
		cmocka_unit_test(test_directory_changes),
		cmocka_unit_test(test_xattr_table),
		cmocka_unit_test(test_client_lists_no_trusted_xattrs),
		cmocka_unit_test(test_getxattr_of_what_tools_ask_of_every_file),
		cmocka_unit_test(test_client_statfs_is_coarse),
		cmocka_unit_test(test_where_an_observer_may_write_beside),
		cmocka_unit_test(test_cache_timeouts),
	};

	unit_xml_reset();
	return cmocka_run_group_tests_name("unit-view", tests, NULL, NULL);
}
