/* Unit tests for core/names.c: name validation, names= templates, unique
 * names (R9) and place_name()'s retry loop. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "unit.h"

#include "names.h"

#define TAG_CHARS 12		/* the default template's tag */
static const char tag_alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/* Strict UTF-8: no overlongs, no surrogates, nothing above U+10FFFF. */
static bool utf8_valid(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;

	while (*s) {
		unsigned len, cp;

		if (s[0] < 0x80) {
			s++;
			continue;
		} else if ((s[0] & 0xe0) == 0xc0) {
			len = 2;
			cp = s[0] & 0x1f;
		} else if ((s[0] & 0xf0) == 0xe0) {
			len = 3;
			cp = s[0] & 0x0f;
		} else if ((s[0] & 0xf8) == 0xf0) {
			len = 4;
			cp = s[0] & 0x07;
		} else {
			return false;
		}
		for (unsigned i = 1; i < len; i++) {
			if ((s[i] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i] & 0x3f);
		}
		if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
		    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		s += len;
	}
	return true;
}

/* No byte a Windows client cannot use in a name, no trailing dot or space,
 * no leading dot. */
static bool windows_safe(const char *name)
{
	size_t len = strlen(name);

	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		if (*p < 0x20 || *p == 0x7f || strchr("<>:\"/\\|?*", *p))
			return false;
	return len > 0 && name[0] != '.' && name[len - 1] != '.' && name[len - 1] != ' ';
}

static bool is_tag_chars(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] == '\0' || strchr(tag_alphabet, s[i]) == NULL)
			return false;
	return true;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

static void parse_ok(const char *spec, struct name_template *t)
{
	int ret = name_template_parse(spec, t);

	if (ret != 0)
		fail_msg("template \"%s\" rejected: %d", spec, ret);
}

/* unique_name() plus the checks every result must pass. */
static int make_unique(const struct name_template *t, const char *requested,
		       uint64_t tag, char out[NAME_MAX_BYTES + 1])
{
	int len;

	memset(out, 0x5a, NAME_MAX_BYTES + 1);
	len = unique_name(t, requested, tag, out);
	assert_true(len > 0);
	assert_true(len <= NAME_MAX_BYTES);
	assert_int_equal(strlen(out), len);
	assert_int_equal(name_check(out), 0);
	assert_true(utf8_valid(out));
	if (!windows_safe(out))
		fail_msg("\"%s\" is not usable by a Windows client", out);
	return len;
}

/* The tag a template writes for TAG, taken from a short name's result. */
static void tag_string(const struct name_template *t, uint64_t tag, char out[TAG_CHARS + 1])
{
	char name[NAME_MAX_BYTES + 1];

	make_unique(t, "x", tag, name);
	assert_int_equal(strlen(name), 2 + TAG_CHARS);
	memcpy(out, name + 2, TAG_CHARS);
	out[TAG_CHARS] = '\0';
}

static void test_check_rejects_special_names(void **state)
{
	assert_int_equal(name_check(""), -EINVAL);
	assert_int_equal(name_check("."), -EINVAL);
	assert_int_equal(name_check(".."), -EINVAL);
	assert_int_equal(name_check("a/b"), -EINVAL);
	assert_int_equal(name_check("/"), -EINVAL);
	assert_int_equal(name_check("abc/"), -EINVAL);
	assert_int_equal(name_check("a"), 0);
	assert_int_equal(name_check("..."), 0);
	assert_int_equal(name_check(".hidden"), 0);
	assert_int_equal(name_check("a b:c"), 0);	/* only '/' is forbidden here */
}

static void test_check_length_limit(void **state)
{
	char name[NAME_MAX_BYTES + 2];

	memset(name, 'a', sizeof(name));
	name[NAME_MAX_BYTES] = '\0';
	assert_int_equal(name_check(name), 0);
	name[NAME_MAX_BYTES] = 'a';
	name[NAME_MAX_BYTES + 1] = '\0';
	assert_int_equal(name_check(name), -ENAMETOOLONG);
}

static void test_stem_len(void **state)
{
	assert_int_equal(name_stem_len("a.b.c"), 3);
	assert_int_equal(name_stem_len(".bashrc"), 7);
	assert_int_equal(name_stem_len("noext"), 5);
	assert_int_equal(name_stem_len("report.txt"), 6);
	assert_int_equal(name_stem_len("a.tar.gz"), 5);
	assert_int_equal(name_stem_len("..x"), 1);
}

static void test_template_presets(void **state)
{
	struct name_template t;

	assert_int_equal(name_template_parse("default", &t), 0);
	assert_string_equal(t.spec, "%s~%t%e");
	assert_int_equal(name_template_parse("8.3", &t), 0);
	assert_string_equal(t.spec, "%8t%3e");
}

static void test_template_custom(void **state)
{
	static const char *const good[] = {
		"%s-%8t%e", "%t%e", "%4t%e", "%13t%e", "%8s_%t%3e", "%%%t%e", "in %t box%e", "%s.%t%e",
	};
	struct name_template t;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		memset(&t, 0, sizeof(t));
		parse_ok(good[i], &t);
		assert_string_equal(t.spec, good[i]);
	}
}

static void test_template_rejects(void **state)
{
	static const char *const bad[] = {
		"",		/* empty */
		"%s%e",		/* no tag: nothing makes it unique */
		"%s",
		"%s~%t",	/* no extension: R9 keeps it */
		"%t%t%e",	/* two tags */
		"%s%s%t%e",	/* token twice */
		"%t%e%e",
		"%3t",		/* too short to be unique */
		"%14t",		/* more digits than 64 bits need */
		"%x%t",		/* unknown token */
		"%t%",		/* dangling percent */
		"%2%%t",	/* width on a literal percent */
		"a:%t",		/* literals Windows forbids */
		"a/%t",
		"a\\%t",
		"%t*",
		"%t?",
		"%t\"",
		"<%t>",
		"a|%t",
		"a\t%t",
		"\xc3\xa9%t",	/* non-ASCII literal */
	};
	struct name_template t;
	char longspec[TEMPLATE_MAX + 2];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int ret = name_template_parse(bad[i], &t);

		if (ret != -EINVAL)
			fail_msg("template \"%s\" gave %d, not -EINVAL", bad[i], ret);
	}
	/* One byte over TEMPLATE_MAX. */
	memset(longspec, 'a', sizeof(longspec));
	memcpy(longspec, "%t%e", 4);
	longspec[TEMPLATE_MAX + 1] = '\0';
	assert_int_equal(name_template_parse(longspec, &t), -EINVAL);
	longspec[TEMPLATE_MAX] = '\0';
	assert_int_equal(name_template_parse(longspec, &t), 0);
}

static void test_template_errors_say_what_is_wrong(void **state)
{
	static const struct {
		const char *spec, *why;
	} cases[] = {
		{ "%s:%t%e", "':' is not allowed" },
		{ "%s?%t%e", "'?' is not allowed" },
		{ "%s~%2t%e", "the width of %t must be 4 to 13" },
		{ "%s~%14t%e", "the width of %t must be 4 to 13" },
		{ "%s~%t", "%e is required" },
		{ "nostem", "%t is required" },
		{ "%t%t%e", "%t may appear only once" },
		{ "%t%e%e", "%e may appear only once" },
		{ "%s%s%t%e", "%s may appear at most once" },
		{ "%t%x%e", "%x is not a field" },
		{ "%t%e%", "a lone '%' at the end" },
		{ "%t%3%%e", "%% takes no width" },
		{ "", "the template is empty" },
		{ "%t%e\xc3\xa9", "only ASCII" },
		{ "%t%e\t", "control characters" },
	};
	struct name_template t;
	char why[160];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		why[0] = '\0';
		assert_int_equal(name_template_check(cases[i].spec, &t, why, sizeof(why)), -EINVAL);
		if (strstr(why, cases[i].why) == NULL)
			fail_msg("names=%s: expected \"%s\" in \"%s\"", cases[i].spec,
				 cases[i].why, why);
	}
	/* Valid templates say nothing and parse. */
	why[0] = '\0';
	assert_int_equal(name_template_check("%s-%6t%e", &t, why, sizeof(why)), 0);
	assert_string_equal(why, "");
	assert_string_equal(t.spec, "%s-%6t%e");
	/* A small buffer is never overrun. */
	char tiny[8];
	assert_int_equal(name_template_check("%s:%t%e", &t, tiny, sizeof(tiny)), -EINVAL);
	assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
}

static void test_unique_default_form(void **state)
{
	struct name_template t;
	char out[NAME_MAX_BYTES + 1];
	int len;

	parse_ok("default", &t);
	len = make_unique(&t, "Report.SVF", 0x0123456789abcdefULL, out);
	assert_int_equal(len, strlen("Report~") + TAG_CHARS + strlen(".SVF"));
	assert_memory_equal(out, "Report~", 7);
	assert_true(is_tag_chars(out + 7, TAG_CHARS));
	assert_string_equal(out + 7 + TAG_CHARS, ".SVF");

	len = make_unique(&t, "noext", 42, out);
	assert_int_equal(len, 6 + TAG_CHARS);
	assert_memory_equal(out, "noext~", 6);
	assert_true(is_tag_chars(out + 6, TAG_CHARS));
}

static void test_unique_tag_alphabet(void **state)
{
	struct name_template t;
	char out[NAME_MAX_BYTES + 1];
	unsigned seen[256] = { 0 };

	parse_ok("default", &t);
	for (unsigned i = 0; i < 4096; i++) {
		make_unique(&t, "a.b", name_tag_next(), out);
		assert_int_equal(strlen(out), 2 + TAG_CHARS + 2);
		assert_true(is_tag_chars(out + 2, TAG_CHARS));
		for (unsigned k = 0; k < TAG_CHARS; k++)
			seen[(unsigned char)out[2 + k]]++;
	}
	/* Easily confused letters never appear; the other 32 symbols do. */
	assert_int_equal(seen['I'] + seen['L'] + seen['O'] + seen['U'], 0);
	for (const char *c = tag_alphabet; *c; c++)
		assert_true(seen[(unsigned char)*c] > 0);
}

static void test_unique_keeps_last_extension(void **state)
{
	struct name_template t;
	char out[NAME_MAX_BYTES + 1];

	parse_ok("default", &t);
	make_unique(&t, "a.tar.gz", 7, out);
	assert_memory_equal(out, "a.tar~", 6);
	assert_true(is_tag_chars(out + 6, TAG_CHARS));
	assert_string_equal(out + 6 + TAG_CHARS, ".gz");

	make_unique(&t, "MixedCase.TxT", 7, out);
	assert_memory_equal(out, "MixedCase~", 10);
	assert_true(ends_with(out, ".TxT"));
}

static void test_unique_dotfile(void **state)
{
	struct name_template t;
	char out[NAME_MAX_BYTES + 1];

	parse_ok("default", &t);
	make_unique(&t, ".bashrc", 9, out);
	assert_true(out[0] != '.');
	assert_non_null(strstr(out, "bashrc"));
	/* ".bashrc" has no extension: nothing follows the tag. */
	assert_true(is_tag_chars(out + strlen(out) - TAG_CHARS, TAG_CHARS));

	make_unique(&t, "..x", 9, out);
	assert_true(out[0] != '.');
	assert_true(ends_with(out, ".x"));
}

static void test_unique_forbidden_chars(void **state)
{
	struct name_template t;
	char out[NAME_MAX_BYTES + 1];
	const char *want_stem = "a_b_c_d_e_f_g_h_i_j_k~";

	parse_ok("default", &t);
	make_unique(&t, "a<b>c:d\"e\\f|g?h*i\x01j\x7fk.t<x\x1f", 3, out);
	assert_memory_equal(out, want_stem, strlen(want_stem));
	assert_true(is_tag_chars(out + strlen(want_stem), TAG_CHARS));
	assert_string_equal(out + strlen(want_stem) + TAG_CHARS, ".t_x_");
}

static void test_unique_invalid_utf8(void **state)
{
	struct name_template t;
	char out[NAME_MAX_BYTES + 1];
	/* x, a stray 0xff, a valid e-acute, an overlong '/', a UTF-16
	 * surrogate, y, then a lead byte cut off by the extension's dot. */
	const char *requested = "x\xff\xc3\xa9\xc0\xaf\xed\xa0\x80y\xc3.t\xfex";
	const char *want_stem = "x_\xc3\xa9_____y_~";

	parse_ok("default", &t);
	make_unique(&t, requested, 3, out);
	assert_memory_equal(out, want_stem, strlen(want_stem));
	assert_true(is_tag_chars(out + strlen(want_stem), TAG_CHARS));
	assert_string_equal(out + strlen(want_stem) + TAG_CHARS, ".t_x");
}

/* A requested name of exactly 255 bytes made of CHARSEQ (a 2-, 3- or 4-byte
 * character) after PAD ASCII bytes, with extension ".txt". Shifting PAD
 * moves the cut across every byte of the character. */
static void check_long_multibyte(const struct name_template *t, const char *charseq, unsigned pad)
{
	char requested[NAME_MAX_BYTES + 1], out[NAME_MAX_BYTES + 1], tag[TAG_CHARS + 1];
	size_t clen = strlen(charseq), o = 0;
	const size_t body = NAME_MAX_BYTES - strlen(".txt");

	memset(requested, 'p', pad);
	o = pad;
	while (o + clen <= body) {
		memcpy(requested + o, charseq, clen);
		o += clen;
	}
	while (o < body)
		requested[o++] = 'q';
	strcpy(requested + o, ".txt");
	assert_int_equal(strlen(requested), NAME_MAX_BYTES);
	assert_true(utf8_valid(requested));

	make_unique(t, requested, 77, out);	/* checks <= 255 bytes and valid UTF-8 */
	assert_true(ends_with(out, ".txt"));
	tag_string(t, 77, tag);
	assert_non_null(strstr(out, tag));
	/* The stem was shortened, not dropped: it starts as requested did. */
	assert_memory_equal(out, requested, pad + clen);
	/* Shortened no more than needed to fit the character boundary. */
	assert_true(strlen(out) > NAME_MAX_BYTES - clen);
}

static void test_unique_long_utf8_never_split(void **state)
{
	static const char *const chars[] = {
		"\xc3\xa9",		/* é */
		"\xe2\x82\xac",		/* € */
		"\xf0\x9f\x98\x80",	/* 😀 */
	};
	struct name_template t;

	parse_ok("default", &t);
	for (size_t c = 0; c < sizeof(chars) / sizeof(chars[0]); c++)
		for (unsigned pad = 0; pad < 4; pad++)
			check_long_multibyte(&t, chars[c], pad);
}

static void test_unique_long_ascii(void **state)
{
	struct name_template t;
	char requested[NAME_MAX_BYTES + 1], out[NAME_MAX_BYTES + 1], tag[TAG_CHARS + 1];

	parse_ok("default", &t);
	memset(requested, 'a', NAME_MAX_BYTES);
	strcpy(requested + NAME_MAX_BYTES - 4, ".txt");
	assert_int_equal(make_unique(&t, requested, 5, out), NAME_MAX_BYTES);
	assert_true(ends_with(out, ".txt"));
	tag_string(&t, 5, tag);
	assert_non_null(strstr(out, tag));
}

static void test_unique_long_extension(void **state)
{
	struct name_template t;
	char requested[NAME_MAX_BYTES + 1], out[NAME_MAX_BYTES + 1], tag[TAG_CHARS + 1];

	parse_ok("default", &t);
	tag_string(&t, 0xfeedfaceULL, tag);
	/* "a." and a 250-byte extension: the tag must survive. */
	requested[0] = 'a';
	requested[1] = '.';
	memset(requested + 2, 'x', 250);
	requested[252] = '\0';
	make_unique(&t, requested, 0xfeedfaceULL, out);
	assert_non_null(strstr(out, tag));
	/* Same with a 253-byte extension of two-byte characters. */
	requested[0] = 'a';
	requested[1] = '.';
	for (unsigned i = 0; i < 126; i++)
		memcpy(requested + 2 + 2 * i, "\xc3\xa9", 2);
	requested[254] = 'z';
	requested[255] = '\0';
	make_unique(&t, requested, 0xfeedfaceULL, out);
	assert_non_null(strstr(out, tag));
}

static void test_unique_no_trailing_dot_or_space(void **state)
{
	struct name_template t;
	char out[NAME_MAX_BYTES + 1];

	parse_ok("default", &t);
	make_unique(&t, "a.txt ", 1, out);	/* windows_safe() checks the end */
	make_unique(&t, "name.", 1, out);
	make_unique(&t, "name. ", 1, out);
}

static void test_unique_8_3(void **state)
{
	struct name_template t;
	char out[NAME_MAX_BYTES + 1];

	parse_ok("8.3", &t);
	assert_int_equal(make_unique(&t, "Quarterly Report.docx", 11, out), 12);
	assert_true(is_tag_chars(out, 8));
	assert_string_equal(out + 8, ".doc");

	assert_int_equal(make_unique(&t, "a.c", 11, out), 10);
	assert_true(is_tag_chars(out, 8));
	assert_string_equal(out + 8, ".c");

	assert_int_equal(make_unique(&t, "README", 11, out), 8);
	assert_true(is_tag_chars(out, 8));

	assert_int_equal(make_unique(&t, ".profile", 11, out), 8);
}

static void test_unique_custom_template(void **state)
{
	struct name_template t;
	char out[NAME_MAX_BYTES + 1];

	parse_ok("%s-%8t%e", &t);
	assert_int_equal(make_unique(&t, "photo.jpg", 1234, out), 5 + 1 + 8 + 4);
	assert_memory_equal(out, "photo-", 6);
	assert_true(is_tag_chars(out + 6, 8));
	assert_string_equal(out + 14, ".jpg");

	parse_ok("%4s_%%_%t%3e", &t);
	make_unique(&t, "abcdefgh.jpeg", 1234, out);
	assert_memory_equal(out, "abcd_%_", 7);
	assert_true(is_tag_chars(out + 7, TAG_CHARS));
	assert_string_equal(out + 7 + TAG_CHARS, ".jpe");
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_unique_different_tags(void **state)
{
	enum { N = 61 };
	struct name_template t;
	char buf[N][NAME_MAX_BYTES + 1];
	char *names[N];

	/* Each of the 60 low bits, and zero, must give its own name. */
	parse_ok("default", &t);
	for (unsigned i = 0; i < N; i++) {
		make_unique(&t, "same.txt", i == 60 ? 0 : 1ULL << i, buf[i]);
		names[i] = buf[i];
	}
	qsort(names, N, sizeof(names[0]), cmp_str);
	for (unsigned i = 1; i < N; i++)
		if (strcmp(names[i - 1], names[i]) == 0)
			fail_msg("two tags give \"%s\"", names[i]);

	/* The same tag gives the same name. */
	make_unique(&t, "same.txt", 99, buf[0]);
	make_unique(&t, "same.txt", 99, buf[1]);
	assert_string_equal(buf[0], buf[1]);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void test_tag_next_distinct(void **state)
{
	enum { N = 100000 };
	uint64_t *tags = malloc(N * sizeof(*tags));
	struct name_template t;
	char a[NAME_MAX_BYTES + 1], b[NAME_MAX_BYTES + 1];

	assert_non_null(tags);
	for (unsigned i = 0; i < N; i++)
		tags[i] = name_tag_next();
	qsort(tags, N, sizeof(*tags), cmp_u64);
	for (unsigned i = 1; i < N; i++)
		if (tags[i - 1] == tags[i]) {
			unsigned long long repeated = tags[i];

			free(tags);
			fail_msg("tag %llx repeated", repeated);
		}
	free(tags);

	/* Consecutive tags make different names under the default template. */
	parse_ok("default", &t);
	make_unique(&t, "f", name_tag_next(), a);
	make_unique(&t, "f", name_tag_next(), b);
	assert_string_not_equal(a, b);
}

/* place_name()'s ATTEMPT: -EEXIST for the first FAIL_FIRST names offered,
 * ERROR on offer ERROR_AT (when ERROR is set), else success. */
struct attempts {
	int fail_first;
	int error_at;
	int error;
	int calls;
	char offered[20][NAME_MAX_BYTES + 1];
};

static int attempt_cb(const char *name, void *arg)
{
	struct attempts *a = arg;
	int call = a->calls++;

	assert_true(call < 20);
	snprintf(a->offered[call], sizeof(a->offered[call]), "%s", name);
	if (a->error && call == a->error_at)
		return a->error;
	return call < a->fail_first ? -EEXIST : 0;
}

static void test_place_requested_free(void **state)
{
	struct name_template t;
	struct attempts a = { 0 };
	char out[NAME_MAX_BYTES + 1];

	parse_ok("default", &t);
	assert_int_equal(place_name(&t, "doc.pdf", true, attempt_cb, &a, out), 0);
	assert_int_equal(a.calls, 1);
	assert_string_equal(a.offered[0], "doc.pdf");
	assert_string_equal(out, "doc.pdf");
}

static void test_place_requested_taken(void **state)
{
	struct name_template t;
	struct attempts a = { .fail_first = 3 };
	char out[NAME_MAX_BYTES + 1];

	parse_ok("default", &t);
	assert_int_equal(place_name(&t, "doc.pdf", true, attempt_cb, &a, out), 1);
	assert_int_equal(a.calls, 4);
	assert_string_equal(a.offered[0], "doc.pdf");
	assert_string_equal(out, a.offered[3]);
	for (int i = 1; i < 4; i++) {
		assert_memory_equal(a.offered[i], "doc~", 4);
		assert_true(is_tag_chars(a.offered[i] + 4, TAG_CHARS));
		assert_string_equal(a.offered[i] + 4 + TAG_CHARS, ".pdf");
		for (int j = 0; j < i; j++)
			assert_string_not_equal(a.offered[i], a.offered[j]);
	}
}

static void test_place_skip_requested(void **state)
{
	struct name_template t;
	struct attempts a = { 0 };
	char out[NAME_MAX_BYTES + 1];

	parse_ok("default", &t);
	assert_int_equal(place_name(&t, "doc.pdf", false, attempt_cb, &a, out), 1);
	assert_int_equal(a.calls, 1);
	assert_string_not_equal(a.offered[0], "doc.pdf");
	assert_string_equal(out, a.offered[0]);
	assert_true(ends_with(out, ".pdf"));
}

static void test_place_gives_up_after_16(void **state)
{
	struct name_template t;
	struct attempts a = { .fail_first = 1 + 16 };
	char out[NAME_MAX_BYTES + 1];

	parse_ok("default", &t);
	assert_int_equal(place_name(&t, "doc.pdf", true, attempt_cb, &a, out), -EEXIST);
	assert_int_equal(a.calls, 1 + 16);

	/* The 16th unique name is still tried. */
	memset(&a, 0, sizeof(a));
	a.fail_first = 1 + 15;
	assert_int_equal(place_name(&t, "doc.pdf", true, attempt_cb, &a, out), 1);
	assert_int_equal(a.calls, 1 + 16);
	assert_string_equal(out, a.offered[16]);

	memset(&a, 0, sizeof(a));
	a.fail_first = 16;
	assert_int_equal(place_name(&t, "doc.pdf", false, attempt_cb, &a, out), -EEXIST);
	assert_int_equal(a.calls, 16);
}

static void test_place_passes_errors_through(void **state)
{
	struct name_template t;
	struct attempts a = { .error = -EACCES, .error_at = 0 };
	char out[NAME_MAX_BYTES + 1];

	parse_ok("default", &t);
	assert_int_equal(place_name(&t, "doc.pdf", true, attempt_cb, &a, out), -EACCES);
	assert_int_equal(a.calls, 1);

	memset(&a, 0, sizeof(a));
	a.fail_first = 10;
	a.error = -ENOSPC;
	a.error_at = 2;
	assert_int_equal(place_name(&t, "doc.pdf", true, attempt_cb, &a, out), -ENOSPC);
	assert_int_equal(a.calls, 3);
}

/* What a terminal would obey is escaped, byte by byte; the rest stays. */
static void test_printable(void **state)
{
	char out[128];

	(void)state;
	assert_string_equal(name_printable("MSG1.SVF", out, sizeof(out)), "MSG1.SVF");
	assert_string_equal(name_printable("Caf\xc3\xa9 \xe2\x82\xac.txt", out, sizeof(out)),
			    "Caf\xc3\xa9 \xe2\x82\xac.txt");
	/* C0, DEL, the backslash. */
	assert_string_equal(name_printable("a\x1b[2Jb\x7f\\c\n", out, sizeof(out)),
			    "a\\x1b[2Jb\\x7f\\x5cc\\x0a");
	/* C1 (U+009B is a CSI), U+0080 and U+009F; U+00A0 is printable. */
	assert_string_equal(name_printable("X\xc2\x9b" "2J\xc2\x80\xc2\x9f\xc2\xa0", out, sizeof(out)),
			    "X\\xc2\\x9b2J\\xc2\\x80\\xc2\\x9f\xc2\xa0");
	/* Bidirectional overrides and line separators. */
	assert_string_equal(name_printable("a\xe2\x80\xae" "b\xe2\x80\xa8" "c\xe2\x81\xa6", out,
					   sizeof(out)),
			    "a\\xe2\\x80\\xaeb\\xe2\\x80\\xa8c\\xe2\\x81\\xa6");
	/* Invalid UTF-8: a lone continuation, an overlong, a cut sequence. */
	assert_string_equal(name_printable("\xff\x80\xc0\xaf\xe2\x82", out, sizeof(out)),
			    "\\xff\\x80\\xc0\\xaf\\xe2\\x82");
	assert_string_equal(name_printable("", out, sizeof(out)), "");
}

/* OUT is cut between whole escapes and characters, and always ended. */
static void test_printable_truncates_whole(void **state)
{
	char out[8];

	(void)state;
	memset(out, 'z', sizeof(out));
	assert_string_equal(name_printable("ab\x01" "cd", out, sizeof(out)), "ab\\x01c");
	assert_string_equal(name_printable("abcd\x01" "e", out, sizeof(out)), "abcd");
	assert_string_equal(name_printable("abcdef\xc3\xa9", out, sizeof(out)), "abcdef");
	assert_string_equal(name_printable("abcdefghij", out, 1), "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_check_rejects_special_names),
		cmocka_unit_test(test_check_length_limit),
		cmocka_unit_test(test_stem_len),
		cmocka_unit_test(test_template_presets),
		cmocka_unit_test(test_template_custom),
		cmocka_unit_test(test_template_rejects),
		cmocka_unit_test(test_template_errors_say_what_is_wrong),
		cmocka_unit_test(test_unique_default_form),
		cmocka_unit_test(test_unique_tag_alphabet),
		cmocka_unit_test(test_unique_keeps_last_extension),
		cmocka_unit_test(test_unique_dotfile),
		cmocka_unit_test(test_unique_forbidden_chars),
		cmocka_unit_test(test_unique_invalid_utf8),
		cmocka_unit_test(test_unique_long_utf8_never_split),
		cmocka_unit_test(test_unique_long_ascii),
		cmocka_unit_test(test_unique_long_extension),
		cmocka_unit_test(test_unique_no_trailing_dot_or_space),
		cmocka_unit_test(test_unique_8_3),
		cmocka_unit_test(test_unique_custom_template),
		cmocka_unit_test(test_unique_different_tags),
		cmocka_unit_test(test_tag_next_distinct),
		cmocka_unit_test(test_place_requested_free),
		cmocka_unit_test(test_place_requested_taken),
		cmocka_unit_test(test_place_skip_requested),
		cmocka_unit_test(test_place_gives_up_after_16),
		cmocka_unit_test(test_place_passes_errors_through),
		cmocka_unit_test(test_printable),
		cmocka_unit_test(test_printable_truncates_whole),
	};

	unit_xml_reset();
	return cmocka_run_group_tests_name("unit-names", tests, NULL, NULL);
}
