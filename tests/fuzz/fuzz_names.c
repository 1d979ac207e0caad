/* libFuzzer target for the name generator and the template parser (R9):
 * whatever the requested name and template, a unique name is valid UTF-8,
 * at most 255 bytes, never starts with a dot, holds nothing Windows
 * forbids, and carries the tag. And whatever the name, its printable
 * form (inboxfs-quarantine's) is valid UTF-8 with no control character, C0
 * or C1, in it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_utf8(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t len = s[i] < 0x80 ? 1 : (s[i] & 0xe0) == 0xc0 ? 2 : (s[i] & 0xf0) == 0xe0 ? 3
			   : (s[i] & 0xf8) == 0xf0 ? 4 : 0;

		if (len == 0 || i + len > n)
			abort();
		for (size_t k = 1; k < len; k++)
			if ((s[i + k] & 0xc0) != 0x80)
				abort();
		i += len;
	}
}

static void check_name(const char *out, int len)
{
	if (len <= 0 || len > NAME_MAX_BYTES || (size_t)len != strlen(out))
		abort();
	if (out[0] == '.' || out[len - 1] == '.' || out[len - 1] == ' ')
		abort();
	for (int i = 0; i < len; i++) {
		unsigned char c = (unsigned char)out[i];

		if (c < 0x20 || c == 0x7f || strchr("<>:\"/\\|?*", c))
			abort();
	}
	check_utf8((const unsigned char *)out, (size_t)len);
	if (name_check(out) != 0)
		abort();
}

static void check_printable(const char *name)
{
	char out[4 * (NAME_MAX_BYTES + 1) + 1];
	const unsigned char *s = (const unsigned char *)name_printable(name, out, sizeof(out));
	size_t n = strlen(out);

	check_utf8(s, n);
	for (size_t i = 0; i < n; i++) {
		if (s[i] < 0x20 || s[i] == 0x7f || (s[i] == 0xc2 && i + 1 < n && s[i + 1] <= 0x9f))
			abort();
	}
	/* Room for every byte escaped: nothing is cut. */
	if (strlen(name) <= NAME_MAX_BYTES + 1 && n < strlen(name))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct name_template t;
	char requested[NAME_MAX_BYTES + 1], spec[TEMPLATE_MAX + 2], out[NAME_MAX_BYTES + 1];
	size_t split, n;
	int len;

	if (size < 1)
		return 0;
	/* First byte: how much of the rest is a template. */
	split = data[0] % (TEMPLATE_MAX + 2);
	data++;
	size--;
	if (split > size)
		split = size;
	memcpy(spec, data, split);
	spec[split] = '\0';
	if (strlen(spec) != split || name_template_parse(spec, &t) != 0)
		name_template_parse(split % 2 ? "8.3" : "default", &t);

	n = size - split < NAME_MAX_BYTES ? size - split : NAME_MAX_BYTES;
	memcpy(requested, data + split, n);
	requested[n] = '\0';
	check_printable(requested);
	if (name_check(requested) != 0)
		return 0;	/* the filesystem refuses these before naming */
	len = unique_name(&t, requested, (uint64_t)size * 0x9e3779b97f4a7c15ULL, out);
	check_name(out, len);
	/* A different tag gives a different name. */
	char other[NAME_MAX_BYTES + 1];
	int len2 = unique_name(&t, requested, (uint64_t)size * 0x9e3779b97f4a7c15ULL + 1, other);
	check_name(other, len2);
	if (strcmp(out, other) == 0)
		abort();
	return 0;
}
