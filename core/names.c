/* Unique names (R9): STEM~TAG.EXT by default, shaped by a names= template.
 * The tag is a 64-bit value from a bijective mix of a per-process counter,
 * so one process never repeats a tag; the seed comes from a time-based UUID
 * hashed with xxhash, so two processes or hosts start far apart. A taken
 * name is retried by the caller with the next tag: no directory scan. */
#include "names.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <uuid/uuid.h>
#include <xxhash.h>

static const char tag_alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

int name_check(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return -EINVAL;
	if (len > NAME_MAX_BYTES)
		return -ENAMETOOLONG;
	if (memchr(name, '/', len))
		return -EINVAL;
	return 0;
}

size_t name_stem_len(const char *name)
{
	const char *dot = strrchr(name, '.');

	if (dot == NULL || dot == name)
		return strlen(name);
	return (size_t)(dot - name);
}

/* Width of a token, or 0 for "no cap". Advances *p past the digits. */
static unsigned token_width(const char **p)
{
	unsigned w = 0;

	while (**p >= '0' && **p <= '9') {
		w = w * 10 + (unsigned)(**p - '0');
		if (w > 255)
			w = 255;
		(*p)++;
	}
	return w;
}

static bool windows_forbidden(unsigned char c)
{
	return c < 0x20 || c == 0x7f || strchr("<>:\"/\\|?*", c) != NULL;
}

/* Sets WHY (when not NULL) to what is wrong and returns -EINVAL. */
static int template_error(char *why, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int template_error(char *why, size_t size, const char *fmt, ...)
{
	va_list ap;

	if (why != NULL && size > 0) {
		va_start(ap, fmt);
		vsnprintf(why, size, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

int name_template_check(const char *spec, struct name_template *out, char *why, size_t size)
{
	unsigned seen_s = 0, seen_e = 0, seen_t = 0;

	if (strcmp(spec, "default") == 0)
		spec = "%s~%t%e";
	else if (strcmp(spec, "8.3") == 0)
		spec = "%8t%3e";
	if (strlen(spec) == 0)
		return template_error(why, size, "the template is empty");
	if (strlen(spec) > TEMPLATE_MAX)
		return template_error(why, size, "longer than %d characters", TEMPLATE_MAX);
	for (const char *p = spec; *p; p++) {
		if (*p != '%') {
			if ((unsigned char)*p >= 0x80)
				return template_error(why, size, "only ASCII characters are allowed");
			if (windows_forbidden((unsigned char)*p)) {
				if ((unsigned char)*p < 0x20 || *p == 0x7f)
					return template_error(why, size, "control characters are not allowed");
				return template_error(why, size, "'%c' is not allowed "
						      "(Windows clients cannot use it in a name)", *p);
			}
			continue;
		}
		p++;
		unsigned w = token_width(&p);
		switch (*p) {
		case 't':
			if (w != 0 && (w < 4 || w > TAG_MAX_CHARS))
				return template_error(why, size, "the width of %%t must be 4 to %d "
						      "(a shorter tag is not unique enough)",
						      TAG_MAX_CHARS);
			seen_t++;
			break;
		case 's':
			seen_s++;
			break;
		case 'e':
			seen_e++;
			break;
		case '%':
			if (w != 0)
				return template_error(why, size, "%%%% takes no width");
			break;
		case '\0':
			return template_error(why, size, "a lone '%%' at the end (write %%%% for '%%')");
		default:
			return template_error(why, size, "%%%c is not a field: use %%s (stem), %%t "
					      "(tag), %%e (extension) or %%%%", *p);
		}
	}
	/* The tag makes the name unique and R9 keeps the extension: one each;
	 * the stem at most once. */
	if (seen_t == 0)
		return template_error(why, size, "%%t is required (the tag makes the name unique)");
	if (seen_t > 1)
		return template_error(why, size, "%%t may appear only once");
	if (seen_e == 0)
		return template_error(why, size, "%%e is required (a unique name keeps the "
				      "extension)");
	if (seen_e > 1)
		return template_error(why, size, "%%e may appear only once");
	if (seen_s > 1)
		return template_error(why, size, "%%s may appear at most once");
	strcpy(out->spec, spec);
	return 0;
}

int name_template_parse(const char *spec, struct name_template *out)
{
	return name_template_check(spec, out, NULL, 0);
}

static uint64_t tag_seed;
static atomic_uint_fast64_t tag_counter;
static pthread_once_t tag_once = PTHREAD_ONCE_INIT;

static void tag_init(void)
{
	uuid_t u;

	uuid_generate_time(u);
	tag_seed = XXH3_64bits(u, sizeof(u));
}

/* murmur3's fmix64: a bijection on 64-bit values. */
static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

uint64_t name_tag_next(void)
{
	pthread_once(&tag_once, tag_init);
	return mix64(tag_seed + atomic_fetch_add(&tag_counter, 1));
}

size_t utf8_char_len(const unsigned char *s, size_t n)
{
	size_t len;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* Copy SRC (N bytes) into DST as Windows-safe UTF-8, at most CAP bytes and
 * at most MAXCHARS characters (0: no limit), never splitting a character.
 * Forbidden and invalid bytes become '_'. Returns the bytes written. */
static size_t copy_safe(char *dst, const char *src, size_t n, size_t cap, unsigned maxchars)
{
	const unsigned char *s = (const unsigned char *)src;
	size_t o = 0, i = 0;
	unsigned chars = 0;

	while (i < n && (maxchars == 0 || chars < maxchars)) {
		size_t len = utf8_char_len(s + i, n - i);

		if (len == 0 || (len == 1 && windows_forbidden(s[i]))) {
			if (o + 1 > cap)
				break;
			dst[o++] = '_';
			i += len ? len : 1;
		} else {
			if (o + len > cap)
				break;
			memcpy(dst + o, s + i, len);
			o += len;
			i += len;
		}
		chars++;
	}
	return o;
}

static void tag_format(uint64_t tag, unsigned width, char *out)
{
	for (unsigned i = 0; i < width; i++) {
		out[i] = tag_alphabet[tag & 31];
		tag >>= 5;
	}
}

int unique_name(const struct name_template *t, const char *requested,
		uint64_t tag, char *out)
{
	size_t stem_n = name_stem_len(requested);
	const char *ext = requested[stem_n] ? requested + stem_n + 1 : "";
	char ext_safe[NAME_MAX_BYTES + 1], stem_safe[NAME_MAX_BYTES + 1];
	size_t base = 0, ext_len = 0, stem_len = 0, o = 0;
	unsigned ext_w = 0, stem_w = 0;

	/* Literals and the tag are fixed; the extension comes next; the stem
	 * gets what room is left. The parser allows each token once. */
	for (const char *p = t->spec; *p; p++) {
		if (*p != '%') {
			base++;
			continue;
		}
		p++;
		unsigned w = token_width(&p);
		if (*p == 't')
			base += w ? w : 12;
		else if (*p == '%')
			base++;
		else if (*p == 'e')
			ext_w = w;
		else
			stem_w = w;
	}
	if (base >= NAME_MAX_BYTES)
		return -EINVAL;
	if (*ext && base + 1 < NAME_MAX_BYTES)
		ext_len = copy_safe(ext_safe, ext, strlen(ext), NAME_MAX_BYTES - base - 1, ext_w);
	if (ext_len)
		base += ext_len + 1;
	stem_len = copy_safe(stem_safe, requested, stem_n, NAME_MAX_BYTES - base, stem_w);

	for (const char *p = t->spec; *p; p++) {
		if (*p != '%') {
			out[o++] = *p;
			continue;
		}
		p++;
		unsigned w = token_width(&p);
		switch (*p) {
		case 's':
			memcpy(out + o, stem_safe, stem_len);
			o += stem_len;
			break;
		case 'e':
			if (ext_len) {
				out[o++] = '.';
				memcpy(out + o, ext_safe, ext_len);
				o += ext_len;
			}
			break;
		case 't':
			w = w ? w : 12;
			tag_format(tag, w, out + o);
			o += w;
			break;
		case '%':
			out[o++] = '%';
			break;
		}
	}
	out[o] = '\0';
	if (out[0] == '.')
		out[0] = '_';
	/* Windows drops trailing dots and spaces: never end with one. */
	if (out[o - 1] == '.' || out[o - 1] == ' ')
		out[o - 1] = '_';
	return (int)o;
}

int place_name(const struct name_template *t, const char *requested, bool try_requested,
	       int (*attempt)(const char *name, void *arg), void *arg, char *out)
{
	int ret;

	if (try_requested) {
		ret = attempt(requested, arg);
		if (ret != -EEXIST) {
			if (ret == 0)
				strcpy(out, requested);
			return ret;
		}
	}
	for (int i = 0; i < 16; i++) {
		ret = unique_name(t, requested, name_tag_next(), out);
		if (ret < 0)
			return ret;
		ret = attempt(out, arg);
		if (ret != -EEXIST)
			return ret == 0 ? 1 : ret;
	}
	return -EEXIST;
}

/* Is the valid UTF-8 character S (LEN bytes) one a terminal would obey
 * rather than show? */
static bool unprintable(const unsigned char *s, size_t len)
{
	if (len == 1)
		return s[0] < 0x20 || s[0] == 0x7f || s[0] == '\\';
	if (len == 2)
		return s[0] == 0xc2 && s[1] <= 0x9f;	/* C1 */
	if (len == 3 && s[0] == 0xe2 && s[1] == 0x80)
		return s[2] == 0x8e || s[2] == 0x8f || (s[2] >= 0xa8 && s[2] <= 0xae);
	if (len == 3 && s[0] == 0xe2 && s[1] == 0x81)
		return s[2] >= 0xa6 && s[2] <= 0xa9;
	return false;
}

const char *name_printable(const char *name, char *out, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)name;
	size_t n = strlen(name), i = 0, o = 0;

	if (size == 0)
		return out;
	while (i < n) {
		size_t len = utf8_char_len(s + i, n - i);
		bool escape = len == 0 || unprintable(s + i, len);
		size_t bytes = len ? len : 1;

		if (o + (escape ? 4 * bytes : bytes) >= size)
			break;
		for (size_t k = 0; k < bytes; k++) {
			if (escape) {
				out[o++] = '\\';
				out[o++] = 'x';
				out[o++] = hex[s[i + k] >> 4];
				out[o++] = hex[s[i + k] & 15];
			} else {
				out[o++] = (char)s[i + k];
			}
		}
		i += bytes;
	}
	out[o] = '\0';
	return out;
}
