/* Unit tests for core/fstype.c: a mount's filesystem type from mountinfo,
 * and which types sync nothing on a directory's fsync. */
#include "unit.h"

#include "fstype.h"

#define GLUSTER_LINE "1120 29 0:62 / /srv/vol rw,relatime shared:612 - fuse.glusterfs " \
		     "vm:/inbox rw,user_id=0,group_id=0,default_permissions,allow_other\n"
#define EXT4_LINE "29 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro\n"

static void test_line_of_the_mount(void **state)
{
	char type[FSTYPE_MAX];

	(void)state;
	assert_int_equal(mountinfo_fstype(GLUSTER_LINE, 1120, type, sizeof(type)), 1);
	assert_string_equal(type, "fuse.glusterfs");
	assert_int_equal(mountinfo_fstype(EXT4_LINE, 29, type, sizeof(type)), 1);
	assert_string_equal(type, "ext4");
	/* Optional fields (shared:N, master:N) before the dash change nothing. */
	assert_int_equal(mountinfo_fstype("7 1 0:5 / /dev rw - devtmpfs udev rw\n", 7, type,
					  sizeof(type)), 1);
	assert_string_equal(type, "devtmpfs");
	/* The last line may lack its newline. */
	assert_int_equal(mountinfo_fstype("8 1 0:6 / /x rw - xfs /dev/sdb", 8, type,
					  sizeof(type)), 1);
	assert_string_equal(type, "xfs");
}

static void test_other_mounts_and_bad_lines(void **state)
{
	char type[FSTYPE_MAX] = "untouched", small[4];

	(void)state;
	/* 112 is a prefix of 1120: ids are compared whole. */
	assert_int_equal(mountinfo_fstype(GLUSTER_LINE, 112, type, sizeof(type)), 0);
	assert_int_equal(mountinfo_fstype(EXT4_LINE, 1120, type, sizeof(type)), 0);
	assert_string_equal(type, "untouched");
	assert_int_equal(mountinfo_fstype("", 1, type, sizeof(type)), -EINVAL);
	assert_int_equal(mountinfo_fstype("garbage without a dash\n", 1, type, sizeof(type)),
			 -EINVAL);
	assert_int_equal(mountinfo_fstype("x 1 0:5 / /dev rw - devtmpfs udev rw\n", 1, type,
					  sizeof(type)), -EINVAL);
	assert_int_equal(mountinfo_fstype("7 1 0:5 / /dev rw - \n", 7, type, sizeof(type)),
			 -EINVAL);
	/* Too long for the buffer: refused, not cut to another type's name. */
	assert_int_equal(mountinfo_fstype(GLUSTER_LINE, 1120, small, sizeof(small)), -EINVAL);
}

static void test_type_of_a_descriptor(void **state)
{
	char type[FSTYPE_MAX];
	int fd = open("/proc/self", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(fd_fstype(fd, type, sizeof(type)), 0);
	assert_string_equal(type, "proc");
	close(fd);
	assert_int_equal(fd_fstype(fd, type, sizeof(type)), -ENOENT);
}

static void test_gluster_syncs_no_directory(void **state)
{
	(void)state;
	assert_true(fstype_dirsync_noop("fuse.glusterfs"));
	/* Other FUSE filesystems may sync: only GlusterFS is known not to. */
	assert_false(fstype_dirsync_noop("fuse"));
	assert_false(fstype_dirsync_noop("fuse.sshfs"));
	assert_false(fstype_dirsync_noop("ext4"));
	assert_false(fstype_dirsync_noop("xfs"));
	assert_false(fstype_dirsync_noop("nfs4"));
	assert_false(fstype_dirsync_noop("glusterfs"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_line_of_the_mount),
		cmocka_unit_test(test_other_mounts_and_bad_lines),
		cmocka_unit_test(test_type_of_a_descriptor),
		cmocka_unit_test(test_gluster_syncs_no_directory),
	};

	unit_xml_reset();
	return cmocka_run_group_tests_name("unit-fstype", tests, NULL, NULL);
}
