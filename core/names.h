/* Names: validating requested names and making unique ones (DESIGN R9). */
#ifndef INBOXFS_NAMES_H
#define INBOXFS_NAMES_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#define NAME_MAX_BYTES 255
#define TAG_MAX_CHARS 13	/* 13 base-32 digits hold 64 bits */
#define TEMPLATE_MAX 64

/* A parsed names= template. Tokens: %s stem, %e extension with its dot,
 * %t tag; an optional width caps each (%8s, %3e without the dot, %8t).
 * "%%" is a literal percent. Presets: "default" = "%s~%t%e",
 * "8.3" = "%8t%3e". */
struct name_template {
	char spec[TEMPLATE_MAX + 1];
};

int name_template_parse(const char *spec, struct name_template *out);
/* The same, saying in WHY (SIZE bytes) what is wrong when it returns
 * -EINVAL: "':' is not allowed ...", "the width of %t must be 4 to 13 ...",
 * "%e is required ...". */
int name_template_check(const char *spec, struct name_template *out, char *why, size_t size);

/* 0 if NAME may be created in a directory: not empty, not "." or "..",
 * no '/', at most 255 bytes. -EINVAL or -ENAMETOOLONG otherwise. */
int name_check(const char *name);

/* A fresh tag, unique within this process for 2^64 calls and seeded from
 * a time-and-node UUID so that processes and hosts do not repeat each other. */
uint64_t name_tag_next(void);

/* Write the unique name for REQUESTED and TAG into OUT (NAME_MAX_BYTES + 1
 * bytes). Returns the length, or -EINVAL for a template that cannot make a
 * valid name. The result keeps the extension and case, never starts with a
 * dot, holds no character Windows forbids and never splits a UTF-8
 * character. */
int unique_name(const struct name_template *t, const char *requested,
		uint64_t tag, char *out);

/* NAME for a terminal, on one line, unambiguous: each byte of a C0
 * control, DEL, a C1 control (U+0080..U+009F, which terminals obey as
 * ESC sequences), a bidirectional override or a line/paragraph separator
 * (U+200E, U+200F, U+2028..U+202E, U+2066..U+2069), of invalid UTF-8, and
 * the backslash becomes \xNN; other valid UTF-8 stays. At most SIZE - 1
 * bytes go to OUT, cut between whole characters or escapes. Returns OUT. */
const char *name_printable(const char *name, char *out, size_t size);

/* Length of the valid UTF-8 character at S (at most N bytes), 0 if the
 * bytes are not one (overlong, a surrogate, beyond U+10FFFF, cut short). */
size_t utf8_char_len(const unsigned char *s, size_t n);

/* Split NAME at its extension: the part from the last dot, when what comes
 * before it is not empty. Returns the stem length. */
size_t name_stem_len(const char *name);

#endif

/* Place something under REQUESTED, or under unique names when it is taken:
 * ATTEMPT(name, arg) returns 0 when placed, -EEXIST to try the next name, or
 * another -errno to stop. With TRY_REQUESTED false the requested name is
 * skipped. The name used goes to OUT (NAME_MAX_BYTES + 1 bytes). Returns 0,
 * 1 when a unique name was used, or -errno (-EEXIST after 16 taken). */
int place_name(const struct name_template *t, const char *requested, bool try_requested,
	       int (*attempt)(const char *name, void *arg), void *arg, char *out);
