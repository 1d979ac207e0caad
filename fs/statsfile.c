/* The read-only virtual file STATS_FILE at the mount root: the counters
 * (R10) as "name value" lines, for observers only. It lives in no
 * directory listing, so a consumer that processes every file it lists
 * never meets it; it is opened by name. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs.h"
#include "stats.h"

static struct node stats_node = { .ino = STATS_INO, .type = S_IFREG, .nlookup = 1 };
static time_t mounted_at;

void statsfile_init(void)
{
	mounted_at = time(NULL);
}

struct node *statsfile_node(void)
{
	return &stats_node;
}

bool statsfile_is(const struct node *n)
{
	return n == &stats_node;
}

/* Render the counters; returns a malloc'd text and its length. */
static char *render(size_t *len)
{
	struct session_stats ss;
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);

	if (f == NULL)
		return NULL;
	session_stats(&ss);
	for (int i = 0; i < STAT_COUNT; i++)
		fprintf(f, "%s %llu\n", stat_name(i), (unsigned long long)stat_get(i));
	fprintf(f, "sessions.alive %u\n", ss.alive);
	fprintf(f, "sessions.started %llu\n", (unsigned long long)ss.started);
	fprintf(f, "sessions.ended %llu\n", (unsigned long long)ss.ended);
	fprintf(f, "publish.latency.p50_us %llu\n", (unsigned long long)stat_latency_percentile(50));
	fprintf(f, "publish.latency.p90_us %llu\n", (unsigned long long)stat_latency_percentile(90));
	fprintf(f, "publish.latency.p99_us %llu\n", (unsigned long long)stat_latency_percentile(99));
	fprintf(f, "uptime_s %lld\n", (long long)(time(NULL) - mounted_at));
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	*len = size;
	return buf;
}

void statsfile_attr(struct stat *st)
{
	size_t len = 0;
	char *text = render(&len);

	free(text);
	memset(st, 0, sizeof(*st));
	st->st_ino = STATS_INO;
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_size = (off_t)len;
	st->st_mtime = st->st_ctime = st->st_atime = time(NULL);
}

int statsfile_open(struct fuse_file_info *fi)
{
	struct handle *h;

	if ((fi->flags & O_ACCMODE) != O_RDONLY)
		return -EACCES;
	h = handle_new(NULL);
	if (h == NULL)
		return -EMFILE;
	h->node = &stats_node;
	fi->fh = (uint64_t)(uintptr_t)h;
	fi->direct_io = 1;
	return 0;
}

/* Rendered afresh for each read and owned by it: a read can still be
 * answered while its reader, killed, has had its file released. The text
 * is short enough to be read whole in one go. */
void statsfile_read(fuse_req_t req, size_t size, off_t off)
{
	size_t len = 0;
	char *text = render(&len);

	if (text == NULL)
		fuse_reply_err(req, ENOMEM);
	else if ((size_t)off >= len)
		fuse_reply_buf(req, NULL, 0);
	else
		fuse_reply_buf(req, text + off, size < len - (size_t)off ? size : len - (size_t)off);
	free(text);
}
