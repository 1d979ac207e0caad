/* Unit tests for core/options.c: observers=, sync= and seconds values. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>

#include "unit.h"

#include "options.h"

static void test_observers_user_name(void **state)
{
	struct observers o;
	char bad[64] = "";

	assert_int_equal(observers_parse("root", &o, bad, sizeof(bad)), 0);
	assert_int_equal(o.nuids, 1);
	assert_int_equal(o.ngids, 0);
	assert_int_equal(o.uids[0], 0);
}

static void test_observers_uids(void **state)
{
	struct observers o;
	char bad[64] = "";

	assert_int_equal(observers_parse("0:65534", &o, bad, sizeof(bad)), 0);
	assert_int_equal(o.nuids, 2);
	assert_int_equal(o.ngids, 0);
	assert_int_equal(o.uids[0], 0);
	assert_int_equal(o.uids[1], 65534);
}

static void test_observers_groups(void **state)
{
	struct observers o;
	char bad[64] = "", spec[300];
	struct group *gr = getgrgid(0);

	assert_int_equal(observers_parse("@0", &o, bad, sizeof(bad)), 0);
	assert_int_equal(o.nuids, 0);
	assert_int_equal(o.ngids, 1);
	assert_int_equal(o.gids[0], 0);

	if (gr == NULL)
		skip();
	snprintf(spec, sizeof(spec), "@%s", gr->gr_name);
	assert_int_equal(observers_parse(spec, &o, bad, sizeof(bad)), 0);
	assert_int_equal(o.nuids, 0);
	assert_int_equal(o.ngids, 1);
	assert_int_equal(o.gids[0], 0);
}

static void test_observers_mixed(void **state)
{
	struct observers o;
	char bad[64] = "", spec[600];
	struct passwd *pw = getpwuid(0);
	struct group *gr;
	char user[256];

	if (pw == NULL)
		skip();
	snprintf(user, sizeof(user), "%s", pw->pw_name);
	gr = getgrgid(0);
	if (gr == NULL)
		skip();
	snprintf(spec, sizeof(spec), "1001:@%s:%s:@4242", gr->gr_name, user);
	assert_int_equal(observers_parse(spec, &o, bad, sizeof(bad)), 0);
	assert_int_equal(o.nuids, 2);
	assert_int_equal(o.ngids, 2);
	assert_int_equal(o.uids[0], 1001);
	assert_int_equal(o.uids[1], 0);
	assert_int_equal(o.gids[0], 0);
	assert_int_equal(o.gids[1], 4242);
}

static void test_observers_unknown_user(void **state)
{
	struct observers o;
	char bad[64] = "";

	assert_true(observers_parse("root:no_such_user_inboxfs:0", &o, bad, sizeof(bad)) < 0);
	assert_string_equal(bad, "no_such_user_inboxfs");

	memset(bad, 0, sizeof(bad));
	assert_true(observers_parse("0:@no_such_group_inboxfs", &o, bad, sizeof(bad)) < 0);
	assert_string_equal(bad, "@no_such_group_inboxfs");

	/* A bad entry is reported even when BAD is too small for all of it. */
	memset(bad, 'x', sizeof(bad));
	assert_true(observers_parse("no_such_user_inboxfs", &o, bad, 5) < 0);
	assert_string_equal(bad, "no_s");
}

static void test_observers_bad_numbers(void **state)
{
	struct observers o;
	char bad[64] = "";

	/* Out of range for a uid_t, and not a user name either. */
	assert_true(observers_parse("4294967296", &o, bad, sizeof(bad)) < 0);
	assert_string_equal(bad, "4294967296");
	assert_true(observers_parse("0:-1", &o, bad, sizeof(bad)) < 0);
	assert_string_equal(bad, "-1");
	assert_true(observers_parse("@12x", &o, bad, sizeof(bad)) < 0);
	assert_string_equal(bad, "@12x");
}

static void test_observers_empty(void **state)
{
	struct observers o;
	char bad[64] = "";

	assert_int_equal(observers_parse("", &o, bad, sizeof(bad)), -EINVAL);
	assert_int_equal(observers_parse(":", &o, bad, sizeof(bad)), -EINVAL);
	assert_int_equal(observers_parse(":::", &o, bad, sizeof(bad)), -EINVAL);
	assert_string_equal(bad, ":::");
}

static void test_observers_too_many(void **state)
{
	struct observers o;
	char bad[64] = "", spec[OBSERVERS_MAX * 8 + 16] = "";
	size_t n = 0;

	for (unsigned i = 0; i < OBSERVERS_MAX; i++)
		n += (size_t)snprintf(spec + n, sizeof(spec) - n, "%u:", 2000 + i);
	spec[n - 1] = '\0';
	assert_int_equal(observers_parse(spec, &o, bad, sizeof(bad)), 0);
	assert_int_equal(o.nuids, OBSERVERS_MAX);
	assert_int_equal(o.uids[OBSERVERS_MAX - 1], 2000 + OBSERVERS_MAX - 1);

	snprintf(spec + n - 1, sizeof(spec) - n + 1, ":%u", 9999);
	assert_true(observers_parse(spec, &o, bad, sizeof(bad)) < 0);
	assert_string_equal(bad, "9999");
}

static void test_observers_match(void **state)
{
	struct observers o;
	char bad[64] = "";
	const gid_t groups[] = { 10, 20, 300 };
	const gid_t other_groups[] = { 10, 20 };

	assert_int_equal(observers_parse("1000:@300:@50", &o, bad, sizeof(bad)), 0);
	/* By uid, whatever the groups. */
	assert_true(observers_match(&o, 1000, 1, NULL, 0));
	/* By primary gid. */
	assert_true(observers_match(&o, 2000, 50, NULL, 0));
	assert_true(observers_match(&o, 2000, 300, NULL, 0));
	/* By a supplementary group only. */
	assert_true(observers_match(&o, 2000, 1, groups, 3));
	assert_false(observers_match(&o, 2000, 1, other_groups, 2));
	/* The group count is honoured. */
	assert_false(observers_match(&o, 2000, 1, groups, 2));
	/* No match; a uid equal to an observer gid is not a match. */
	assert_false(observers_match(&o, 2000, 1, NULL, 0));
	assert_false(observers_match(&o, 300, 1, NULL, 0));
	assert_false(observers_match(&o, 0, 0, NULL, 0));
	assert_true(observers_need_groups(&o));

	assert_int_equal(observers_parse("0", &o, bad, sizeof(bad)), 0);
	assert_true(observers_match(&o, 0, 1234, NULL, 0));
	assert_false(observers_match(&o, 1, 0, groups, 3));
	assert_false(observers_need_groups(&o));
}

static void test_sync_mode(void **state)
{
	enum sync_mode m = SYNC_NONE;

	assert_int_equal(sync_mode_parse("close", &m), 0);
	assert_int_equal(m, SYNC_CLOSE);
	assert_int_equal(sync_mode_parse("none", &m), 0);
	assert_int_equal(m, SYNC_NONE);
	assert_int_equal(sync_mode_parse("", &m), -EINVAL);
	assert_int_equal(sync_mode_parse("Close", &m), -EINVAL);
	assert_int_equal(sync_mode_parse("fsync", &m), -EINVAL);
	assert_int_equal(sync_mode_parse("close ", &m), -EINVAL);
	assert_int_equal(m, SYNC_NONE);	/* untouched on error */
}

static void test_seconds(void **state)
{
	static const char *const bad[] = {
		"", "-1", "86401", "1x", " 1", "+1", "1.5", "x",
		"99999999999999999999999",
	};
	unsigned v = 12345;

	assert_int_equal(seconds_parse("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(seconds_parse("86400", &v), 0);
	assert_int_equal(v, 86400);
	assert_int_equal(seconds_parse("30", &v), 0);
	assert_int_equal(v, 30);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 777;
		if (seconds_parse(bad[i], &v) != -EINVAL)
			fail_msg("seconds \"%s\" accepted", bad[i]);
		assert_int_equal(v, 777);
	}
}

static void test_drain(void **state)
{
	(void)state;
	const char *bad[] = { "", "-1", "3601", "86400", "10s", " 10", "1.5", "0x10" };
	unsigned v = 12345;

	assert_int_equal(drain_parse("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(drain_parse("10", &v), 0);
	assert_int_equal(v, 10);
	assert_int_equal(drain_parse("3600", &v), 0);
	assert_int_equal(v, DRAIN_MAX);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 777;
		if (drain_parse(bad[i], &v) != -EINVAL)
			fail_msg("drain \"%s\" accepted", bad[i]);
		assert_int_equal(v, 777);
	}
}

static void test_datasync(void **state)
{
	bool fsync_only = true;

	(void)state;
	assert_int_equal(datasync_parse("auto", &fsync_only), 0);
	assert_false(fsync_only);
	assert_int_equal(datasync_parse("fsync", &fsync_only), 0);
	assert_true(fsync_only);
	assert_int_equal(datasync_parse("", &fsync_only), -EINVAL);
	assert_int_equal(datasync_parse("one", &fsync_only), -EINVAL);
	assert_int_equal(datasync_parse("Fsync", &fsync_only), -EINVAL);
	assert_true(fsync_only);
}

static void test_yes_no(void **state)
{
	(void)state;
	const char *bad[] = { "", "Yes", "1", "true", "no ", "y" };
	bool v = false;

	assert_int_equal(yes_no_parse("yes", &v), 0);
	assert_true(v);
	assert_int_equal(yes_no_parse("no", &v), 0);
	assert_false(v);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = true;
		if (yes_no_parse(bad[i], &v) != -EINVAL)
			fail_msg("yes/no \"%s\" accepted", bad[i]);
		assert_true(v);
	}
}

/* A -o list: what the unit passes when INBOXFS_OPTIONS is empty, spaced or
 * has a stray comma is refused with a reason, before libfuse sees it. */
static void test_option_list(void **state)
{
	(void)state;
	const char *good[] = { "observers=root", "observers=root:consumer,sync=close",
			       "ro", "names=%s~%t%e,linger=0" };
	const struct { const char *list, *why; } bad[] = {
		{ "", "empty" },
		{ " ", "empty" },
		{ "\t", "empty" },
		{ "observers=root, sync=close", "without spaces" },
		{ "observers=root ", "without spaces" },
		{ "observers=root,", "empty option" },
		{ ",sync=close", "empty option" },
		{ "observers=root,,sync=close", "empty option" },
	};
	char why[160];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (option_list_check(good[i], why, sizeof(why)) != 0)
			fail_msg("\"%s\" refused: %s", good[i], why);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = '\0';
		if (option_list_check(bad[i].list, why, sizeof(why)) != -EINVAL)
			fail_msg("\"%s\" accepted", bad[i].list);
		if (!strstr(why, bad[i].why))
			fail_msg("\"%s\": \"%s\" does not say \"%s\"", bad[i].list, why, bad[i].why);
	}
	/* The reason fits any buffer, cut. */
	assert_int_equal(option_list_check("", why, 8), -EINVAL);
	assert_true(strlen(why) < 8);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_observers_user_name),
		cmocka_unit_test(test_observers_uids),
		cmocka_unit_test(test_observers_groups),
		cmocka_unit_test(test_observers_mixed),
		cmocka_unit_test(test_observers_unknown_user),
		cmocka_unit_test(test_observers_bad_numbers),
		cmocka_unit_test(test_observers_empty),
		cmocka_unit_test(test_observers_too_many),
		cmocka_unit_test(test_observers_match),
		cmocka_unit_test(test_sync_mode),
		cmocka_unit_test(test_seconds),
		cmocka_unit_test(test_drain),
		cmocka_unit_test(test_datasync),
		cmocka_unit_test(test_yes_no),
		cmocka_unit_test(test_option_list),
	};

	unit_xml_reset();
	return cmocka_run_group_tests_name("unit-options", tests, NULL, NULL);
}
