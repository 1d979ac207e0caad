/* Unit tests for core/proc.c: the parsers on text of our own (a command
 * name made to mislead, missing fields, an O_PATH descriptor, a kernel
 * that names no inode), then the readers on this very process. */
#include <limits.h>
#include <signal.h>
#include <sys/syscall.h>

#include "unit.h"

#include "proc.h"

/* A stat line whose command name holds spaces and ") (", fields from 3. */
static void stat_line(char *buf, size_t size, unsigned long flags, unsigned long long start,
		      int exit_code, int nfields)
{
	int n = snprintf(buf, size, "42 (a) (b c) R");

	for (int field = 4; field <= nfields; field++) {
		unsigned long long v = field == 9 ? flags : field == 22 ? start :
				       field == 52 ? (unsigned long long)exit_code : (unsigned)field;

		n += snprintf(buf + n, size - n, " %llu", v);
	}
	snprintf(buf + n, size - n, "\n");
}

static void test_stat_parse(void **state)
{
	struct proc_stat st;
	char buf[1024];

	stat_line(buf, sizeof(buf), 0x4, 123456789ULL, 9, 52);
	assert_int_equal(proc_stat_parse(buf, &st), 0);
	assert_int_equal(st.flags, 0x4);
	assert_int_equal(st.start, 123456789ULL);
	assert_int_equal(st.exit_code, 9);
	/* An old kernel's line ends before exit_code: not known. */
	stat_line(buf, sizeof(buf), 0, 77, 0, 44);
	assert_int_equal(proc_stat_parse(buf, &st), 0);
	assert_int_equal(st.start, 77);
	assert_int_equal(st.exit_code, -1);
	/* Cut before the start time, or no command name at all: -EIO. */
	stat_line(buf, sizeof(buf), 0, 77, 0, 21);
	assert_int_equal(proc_stat_parse(buf, &st), -EIO);
	assert_int_equal(proc_stat_parse("42 a R 1 2 3", &st), -EIO);
	assert_int_equal(proc_stat_parse("42 (a)", &st), -EIO);
}

static const char status_text[] =
	"Name:\tsmbd\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\nPid:\t4243\n"
	"PPid:\t1\nUid:\t0\t1000\t0\t1000\nGid:\t0\t0\t0\t0\nThreads:\t2\n"
	"SigQ:\t0/31205\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n"
	"SigBlk:\t0000000000000000\nSigIgn:\t0000000000001000\nSigCgt:\t0000000180014a02\n"
	"CapInh:\t0000000000000000\n";

static void test_status_parse(void **state)
{
	struct proc_status st;
	char buf[sizeof(status_text)];

	assert_int_equal(proc_status_parse(status_text, &st), 0);
	assert_int_equal(st.tgid, 4242);
	assert_int_equal(st.fsuid, 1000);	/* the fourth Uid */
	assert_int_equal(st.sigign, 0x1000);
	assert_int_equal(st.sigcgt, 0x180014a02ULL);
	assert_false(proc_status_doomed(&st));
	/* A field missing: -EIO, never a guess. */
	memcpy(buf, status_text, sizeof(buf));
	memcpy(strstr(buf, "SigBlk"), "SigBlX", 6);
	assert_int_equal(proc_status_parse(buf, &st), -EIO);
	memcpy(buf, status_text, sizeof(buf));
	memcpy(strstr(buf, "\nUid:") + 1, "Uix", 3);
	assert_int_equal(proc_status_parse(buf, &st), -EIO);
}

static void test_status_doomed(void **state)
{
	struct proc_status st = { 0 };
	uint64_t term = 1ULL << (SIGTERM - 1), kill9 = 1ULL << (SIGKILL - 1);

	assert_false(proc_status_doomed(&st));
	st.shdpnd = term;			/* the process's, by default fatal */
	assert_true(proc_status_doomed(&st));
	st.sigcgt = term;			/* caught */
	assert_false(proc_status_doomed(&st));
	st.sigcgt = 0;
	st.sigblk = term;			/* blocked */
	assert_false(proc_status_doomed(&st));
	st.sigpnd = kill9;			/* SIGKILL whatever the masks say */
	st.sigblk = st.sigign = st.sigcgt = ~0ULL;
	assert_true(proc_status_doomed(&st));
	memset(&st, 0, sizeof(st));
	st.sigpnd = 1ULL << (SIGCHLD - 1);	/* not fatal by default */
	assert_false(proc_status_doomed(&st));
	st.sigpnd = 1ULL << (SIGRTMIN + 1 - 1);	/* a real-time one is */
	assert_true(proc_status_doomed(&st));
}

static void test_fdinfo(void **state)
{
	assert_int_equal(proc_fdinfo_is("pos:\t0\nflags:\t0100001\nmnt_id:\t24\nino:\t77\n", 24, 77), 1);
	assert_int_equal(proc_fdinfo_is("pos:\t0\nflags:\t0100001\nmnt_id:\t24\nino:\t77\n", 0, 77), 1);
	assert_int_equal(proc_fdinfo_is("pos:\t0\nflags:\t0100001\nmnt_id:\t25\nino:\t77\n", 24, 77), 0);
	assert_int_equal(proc_fdinfo_is("pos:\t0\nflags:\t0100001\nmnt_id:\t24\nino:\t78\n", 24, 77), 0);
	/* O_PATH (010000000) holds no open file. */
	assert_int_equal(proc_fdinfo_is("pos:\t0\nflags:\t012100000\nmnt_id:\t24\nino:\t77\n", 24, 77), 0);
	/* A kernel before 5.14 names no inode: cannot tell. */
	assert_int_equal(proc_fdinfo_is("pos:\t0\nflags:\t0100001\nmnt_id:\t24\n", 24, 77), -ENOTSUP);
}

static void test_socket_ino(void **state)
{
	uint64_t ino = 0;

	assert_int_equal(proc_socket_ino("socket:[123456]", &ino), 1);
	assert_int_equal(ino, 123456);
	assert_int_equal(proc_socket_ino("pipe:[5]", &ino), 0);
	assert_int_equal(proc_socket_ino("/tmp/socket:[5]", &ino), 0);
}

/* mountinfo's escapes: a space, a tab, a backslash; anything else as it is. */
static void test_unescape_octal(void **state)
{
	char path[] = "/srv/my\\040inbox\\011x\\134y\\400z\\04";

	proc_unescape_octal(path);
	assert_string_equal(path, "/srv/my inbox\tx\\y\\400z\\04");
}

/* The readers, on this process. */
static void test_readers(void **state)
{
	char dir[] = "/tmp/test_proc.XXXXXX", path[64];
	unsigned long long start, tstart;
	struct stat sb;
	pid_t tgid;
	uid_t fsuid;
	int fd, dup_fd;

	assert_int_equal(proc_tid_status(gettid(), &tgid, &fsuid), 0);
	assert_int_equal(tgid, getpid());
	assert_int_equal(fsuid, geteuid());
	assert_int_equal(tid_to_tgid(INT_MAX, &tgid), -ESRCH);
	assert_int_equal(proc_start(getpid(), &start), 0);
	assert_int_equal(proc_thread_start(getpid(), gettid(), &tstart), 0);
	assert_true(tstart == start);
	assert_int_equal(task_state(gettid()), TASK_RUNNING);
	assert_int_equal(task_doomed(gettid()), 0);
	assert_int_equal(task_state(INT_MAX), -ESRCH);

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/f", dir);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &sb), 0);
	assert_int_equal(proc_holds_file(getpid(), dir, 0, sb.st_ino), 1);
	assert_int_equal(proc_holds_file(getpid(), "/nonexistent-prefix", 0, sb.st_ino), 0);
	dup_fd = dup(fd);
	close(fd);
	assert_int_equal(proc_holds_file(getpid(), dir, 0, sb.st_ino), 1);	/* the dup */
	close(dup_fd);
	assert_int_equal(proc_holds_file(getpid(), dir, 0, sb.st_ino), 0);
	/* O_PATH holds nothing. */
	fd = open(path, O_PATH | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(proc_holds_file(getpid(), dir, 0, sb.st_ino), 0);
	close(fd);
	assert_int_equal(proc_holds_file(INT_MAX, dir, 0, sb.st_ino), 0);	/* gone */
	unlink(path);
	rmdir(dir);
	assert_false(proc_exe_is(getpid(), "smbd"));
	assert_true(proc_exe_is(getpid(), "test_proc"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stat_parse),
		cmocka_unit_test(test_status_parse),
		cmocka_unit_test(test_status_doomed),
		cmocka_unit_test(test_fdinfo),
		cmocka_unit_test(test_socket_ino),
		cmocka_unit_test(test_unescape_octal),
		cmocka_unit_test(test_readers),
	};

	unit_xml_reset();
	return cmocka_run_group_tests_name("unit-proc", tests, NULL, NULL);
}
