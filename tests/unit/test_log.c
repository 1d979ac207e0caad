/* Unit tests for core/log.c: the prefix of a stderr line, journald's <N>
 * when stderr is the stream JOURNAL_STREAM names, a timestamp and a level
 * word otherwise; and the quoting of client-supplied names. */
#include <regex.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>

#include "unit.h"

#include "log.h"

static void assert_matches(const char *text, const char *pattern)
{
	regex_t re;

	assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
	if (regexec(&re, text, 0, NULL, 0) != 0)
		fail_msg("\"%s\" does not match %s", text, pattern);
	regfree(&re);
}

static void test_prefix_without_journal(void **state)
{
	char buf[96];

	unsetenv("JOURNAL_STREAM");
	log_init(true, false);
	log_prefix(LOG_WARNING, buf, sizeof(buf));
	assert_matches(buf, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
		       "\\.[0-9]{3}Z inboxfs\\[[0-9]+\\] warning: $");
	log_prefix(LOG_INFO, buf, sizeof(buf));
	assert_matches(buf, " info: $");
	log_prefix(LOG_CRIT, buf, sizeof(buf));
	assert_matches(buf, " crit: $");
}

static void test_prefix_when_stderr_is_the_journal(void **state)
{
	struct stat st;
	char buf[96], stream[64];

	assert_int_equal(fstat(STDERR_FILENO, &st), 0);
	snprintf(stream, sizeof(stream), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	setenv("JOURNAL_STREAM", stream, 1);
	log_init(true, false);
	log_prefix(LOG_WARNING, buf, sizeof(buf));
	assert_string_equal(buf, "<4>");
	log_prefix(LOG_NOTICE, buf, sizeof(buf));
	assert_string_equal(buf, "<5>");
	log_prefix(LOG_DEBUG, buf, sizeof(buf));
	assert_string_equal(buf, "<7>");
}

static void test_prefix_when_journal_stream_names_another_file(void **state)
{
	char buf[96];

	/* Inherited by a process whose stderr went elsewhere. */
	setenv("JOURNAL_STREAM", "1:2", 1);
	log_init(true, false);
	log_prefix(LOG_WARNING, buf, sizeof(buf));
	assert_matches(buf, "Z inboxfs\\[[0-9]+\\] warning: $");
	setenv("JOURNAL_STREAM", "garbage", 1);
	log_init(true, false);
	log_prefix(LOG_WARNING, buf, sizeof(buf));
	assert_matches(buf, " warning: $");
	unsetenv("JOURNAL_STREAM");
}

static void test_prefix_never_overruns(void **state)
{
	char buf[8];

	log_init(true, false);
	log_prefix(LOG_INFO, buf, sizeof(buf));
	assert_int_equal(strlen(buf), sizeof(buf) - 1);
}

static void test_level_names(void **state)
{
	assert_string_equal(log_level_name(LOG_EMERG), "emerg");
	assert_string_equal(log_level_name(LOG_ERR), "err");
	assert_string_equal(log_level_name(LOG_NOTICE), "notice");
	assert_string_equal(log_level_name(LOG_DEBUG), "debug");
}

static void test_log_name_quotes_one_token(void **state)
{
	char buf[64];

	assert_string_equal(log_name("a\"b\\c\nd", buf, sizeof(buf)), "a\\x22b\\x5cc\\x0ad");
	assert_string_equal(log_name("MSG00001.SVF", buf, sizeof(buf)), "MSG00001.SVF");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prefix_without_journal),
		cmocka_unit_test(test_prefix_when_stderr_is_the_journal),
		cmocka_unit_test(test_prefix_when_journal_stream_names_another_file),
		cmocka_unit_test(test_prefix_never_overruns),
		cmocka_unit_test(test_level_names),
		cmocka_unit_test(test_log_name_quotes_one_token),
	};

	unit_xml_reset();
	return cmocka_run_group_tests_name("unit-log", tests, NULL, NULL);
}
