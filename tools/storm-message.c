/* What an inbox-storm message is: a header line naming its run, client and
 * sequence number and a hash of the rest, then padding that depends on the
 * message; and the scan that finds a run's messages in the backing inbox
 * by content, whatever names they were stored under. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "storm.h"

#define MAGIC "inbox-storm "
#define MAGIC_LEN (sizeof(MAGIC) - 1)
#define HEADER_MAX 128		/* longest possible header line, with room */

/* ------------------------------------------------------------ messages */

static uint64_t message_seed(const struct storm *st, unsigned client, uint64_t seq)
{
	return st->run_seed ^ XXH64(&(uint64_t[2]){ client, seq }, 16, 0);
}

static int header_format(char *out, size_t outlen, const struct storm *st,
			 unsigned client, uint64_t seq, size_t size, uint64_t hash)
{
	return snprintf(out, outlen, MAGIC "%s %u %" PRIu64 " %zu %016" PRIx64 "\n",
			st->opt.run_id, client, seq, size, hash);
}

/* Message SEQ of CLIENT into BUF (opt.size bytes): the header line, then
 * printable padding that depends on the message, hashed with a seed that
 * does too, so a body under someone else's header does not verify. */
void message_build(const struct storm *st, unsigned client, uint64_t seq, char *buf)
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
	size_t size = st->opt.size;
	uint64_t seed = message_seed(st, client, seq);
	char header[HEADER_MAX];
	int hlen = header_format(header, sizeof(header), st, client, seq, size, 0);
	uint64_t x = seed | 1;

	for (size_t i = (size_t)hlen; i < size; i++) {
		/* xorshift64: cheap, and enough to tell bodies apart */
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (i + 1) % 64 == 0 || i + 1 == size ? '\n' : alphabet[x & 31];
	}
	uint64_t hash = XXH64(buf + hlen, size - (size_t)hlen, seed);
	header_format(header, sizeof(header), st, client, seq, size, hash);
	memcpy(buf, header, (size_t)hlen);
}

struct header {
	char run_id[RUN_ID_LEN + 1];
	unsigned long client;
	uint64_t seq;
	uint64_t size;
	uint64_t hash;
	size_t len;		/* of the line, newline included */
};

static const char *parse_u64(const char *p, const char *end, int base, int digits,
			     uint64_t *out)
{
	uint64_t v = 0;
	int n = 0;

	for (; p < end && isxdigit((unsigned char)*p); p++, n++) {
		int d = isdigit((unsigned char)*p) ? *p - '0'
			: base == 16 ? tolower((unsigned char)*p) - 'a' + 10 : -1;
		if (d < 0 || d >= base || v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
			return NULL;
		v = v * (uint64_t)base + (uint64_t)d;
	}
	if (n == 0 || (digits && n != digits))
		return NULL;
	*out = v;
	return p;
}

/* Parse the header line at the start of BUF. After the magic, the run id
 * is checked first so that a caller can tell "another run" from "broken":
 * returns 0, 1 for a header of another run, -1 for a broken one. */
static int header_parse(const char *buf, size_t len, const char *run_id, struct header *h)
{
	const char *p = buf + MAGIC_LEN, *end = buf + len;
	uint64_t client;

	if (len < MAGIC_LEN + RUN_ID_LEN + 1)
		return -1;
	memcpy(h->run_id, p, RUN_ID_LEN);
	h->run_id[RUN_ID_LEN] = '\0';
	if (strcmp(h->run_id, run_id) != 0)
		return 1;
	p += RUN_ID_LEN;
	if (p >= end || *p++ != ' ')
		return -1;
	if (!(p = parse_u64(p, end, 10, 0, &client)) || p >= end || *p++ != ' ' ||
	    !(p = parse_u64(p, end, 10, 0, &h->seq)) || p >= end || *p++ != ' ' ||
	    !(p = parse_u64(p, end, 10, 0, &h->size)) || p >= end || *p++ != ' ' ||
	    !(p = parse_u64(p, end, 16, 16, &h->hash)) || p >= end || *p++ != '\n')
		return -1;
	if (client >= CLIENTS_MAX)
		return -1;
	h->client = (unsigned long)client;
	h->len = (size_t)(p - buf);
	return 0;
}

/* ------------------------------------------------------------- verify */

static bool bit_test(const uint64_t *words, uint64_t i)
{
	return words[i / 64] >> (i % 64) & 1;
}

static ssize_t read_full(int fd, char *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

static void report_corrupt(const struct storm *st, struct verify_result *r,
			   const char *name, const char *why)
{
	if (!st->opt.quiet && r->corrupt < ERRORS_SHOWN)
		fprintf(stderr, PROG ": corrupt: %s (%s)\n", name, why);
	r->corrupt++;
}

/* Classify one directory entry. BUF holds opt.size + 1 bytes. */
static void verify_file(const struct storm *st, int dirfd, const char *name,
			const uint64_t *sent, uint64_t *seen, char *buf,
			struct verify_result *r)
{
	char signature[MAGIC_LEN + RUN_ID_LEN + 2];
	struct header h;
	struct stat sb;
	ssize_t len;
	int fd, res;

	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ELOOP) {	/* a symlink: not a message */
			r->foreign++;
		} else if (errno != ENOENT) {
			if (!st->opt.quiet)
				fprintf(stderr, PROG ": cannot read %s: %s\n", name, strerror(errno));
			r->unreadable++;
		}
		return;
	}
	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
		r->foreign++;
		goto out;
	}
	len = read_full(fd, buf, st->opt.size + 1);
	if (len < 0) {
		if (!st->opt.quiet)
			fprintf(stderr, PROG ": cannot read %s: %s\n", name, strerror(errno));
		r->unreadable++;
		goto out;
	}

	snprintf(signature, sizeof(signature), MAGIC "%s ", st->opt.run_id);
	if ((size_t)len < sizeof(signature) - 1 || memcmp(buf, MAGIC, MAGIC_LEN) != 0) {
		/* A drop cut short before the end of its run id (even to
		 * nothing), made during this run, is a truncated message. */
		if ((size_t)len < sizeof(signature) - 1 &&
		    memcmp(buf, signature, (size_t)len) == 0 && sb.st_mtime >= st->started)
			report_corrupt(st, r, name, "truncated header");
		else
			r->foreign++;
		goto out;
	}
	res = header_parse(buf, (size_t)len, st->opt.run_id, &h);
	if (res > 0) {
		r->foreign++;
		goto out;
	}
	if (res < 0) {
		report_corrupt(st, r, name, "broken header");
		goto out;
	}
	if (h.size != st->opt.size || (size_t)len != st->opt.size) {
		report_corrupt(st, r, name, (size_t)len < h.size ? "truncated" : "wrong size");
		goto out;
	}
	if (XXH64(buf + h.len, st->opt.size - h.len, message_seed(st, (unsigned)h.client, h.seq))
	    != h.hash) {
		report_corrupt(st, r, name, "hash mismatch");
		goto out;
	}
	if (h.client >= st->opt.clients || h.seq >= sent[h.client]) {
		r->unexpected++;
		goto out;
	}
	uint64_t bit = h.client * st->ack_words * 64 + h.seq;
	if (bit_test(seen, bit)) {
		if (!st->opt.quiet && r->duplicated < ERRORS_SHOWN)
			fprintf(stderr, PROG ": duplicate: %s (client %lu, message %" PRIu64 ")\n",
				name, h.client, h.seq);
		r->duplicated++;
		goto out;
	}
	seen[bit / 64] |= UINT64_C(1) << (bit % 64);
	r->delivered++;
	if (!bit_test(st->acks, bit))
		r->delivered_unacked++;
out:
	close(fd);
}

/* Scan DIRFD (not recursively, dot-names skipped) for this run's
 * messages. Returns 0 or -errno. */
int verify_scan(const struct storm *st, int dirfd, const uint64_t *sent,
		struct verify_result *r)
{
	uint64_t *seen = NULL;
	char *buf = NULL;
	DIR *dir = NULL;
	struct dirent *de;
	int fd, ret = 0;

	memset(r, 0, sizeof(*r));
	seen = calloc(st->ack_words * st->opt.clients, sizeof(*seen));
	buf = malloc(st->opt.size + 1);
	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (!seen || !buf || fd < 0 || !(dir = fdopendir(fd))) {
		ret = -errno;
		if (fd >= 0)
			close(fd);
		goto out;
	}
	errno = 0;
	while ((de = readdir(dir))) {
		if (de->d_name[0] == '.')
			continue;
		if (de->d_type != DT_REG && de->d_type != DT_UNKNOWN) {
			r->foreign++;
			continue;
		}
		verify_file(st, dirfd, de->d_name, sent, seen, buf, r);
		errno = 0;
	}
	if (errno)
		ret = -errno;
	for (unsigned c = 0; c < st->opt.clients; c++)
		for (uint64_t s = 0; s < sent[c]; s++) {
			uint64_t bit = c * st->ack_words * 64 + s;
			if (bit_test(st->acks, bit) && !bit_test(seen, bit))
				r->lost_acked++;
		}
out:
	if (dir)
		closedir(dir);
	free(buf);
	free(seen);
	return ret;
}
