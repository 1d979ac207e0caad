/* The read-only virtual file STATS_FILE at the mount root: the counters
 * (R10) as "name value" lines, for observers only. It lives in no
 * directory listing, so a consumer that processes every file it lists
 * never meets it; it is opened by name.
 *
 * It is a wrapper around the operations table, as sshfs's cache is: each
 * operation that can concern it (its extended attributes only while the
 * mount serves them, xattr=yes) answers an observer's request about it
 * (its name at the root, its inode, its open file) and hands every other
 * request to the wrapped operation, unchanged. A client's requests go to
 * the wrapped table too: its view has no such file (a drop of its own by
 * that name is its own), and the wrapped handlers answer as for any file
 * not its own. The handlers never meet the stats file's node. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs.h"
#include "handles.h"
#include "inode.h"
#include "names.h"
#include "request.h"
#include "sessions.h"
#include "stats.h"
#include "statsfile.h"
#include "view.h"

static struct node stats_node = { .ino = STATS_INO, .type = S_IFREG, .nlookup = 1 };
static time_t mounted_at;

/* The wrapped operations (statsfile_wrap()). */
static struct fuse_lowlevel_ops inner;

void statsfile_init(void)
{
	mounted_at = time(NULL);
}

static bool is_stats(fuse_ino_t ino)
{
	return ino == node_id(&stats_node);
}

static bool is_stats_name(fuse_ino_t parent, const char *name)
{
	return parent == FUSE_ROOT_ID && strcmp(name, STATS_FILE) == 0;
}

/* Is REQ an observer's? False, with REQ answered, if who it is cannot be
 * told. */
static bool by_observer(fuse_req_t req, bool *observer)
{
	struct who w;
	int ret = who_get(req, &w);

	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return false;
	}
	*observer = w.observer;
	who_put(&w);
	return true;
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

static void statsfile_attr(struct stat *st)
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

static int statsfile_open(struct fuse_file_info *fi)
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
static void statsfile_read(fuse_req_t req, size_t size, off_t off)
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

/* ---- the wrapping operations: an observer's requests about the stats
 * file answered here, every other request the wrapped operation's ---- */

static void statsfile_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	struct stat st;
	bool observer;

	if (!is_stats_name(parent, name)) {
		inner.lookup(req, parent, name);
	} else if (by_observer(req, &observer)) {
		if (!observer) {
			inner.lookup(req, parent, name);
			return;
		}
		statsfile_attr(&st);
		fill_entry(&e, &stats_node, &st);
		e.attr_timeout = view_attr_timeout(true);
		fuse_reply_entry(req, &e);
	}
}

/* The stats file's node is never forgotten: it is no node of the table. */
static void statsfile_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	if (is_stats(ino))
		fuse_reply_none(req);
	else
		inner.forget(req, ino, nlookup);
}

static void statsfile_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	size_t kept = 0;

	for (size_t i = 0; i < count; i++)
		if (!is_stats(forgets[i].ino))
			forgets[kept++] = forgets[i];
	inner.forget_multi(req, kept, forgets);
}

/* True if REQ is an observer's about the stats file INO (then the caller
 * answers it); false if it was answered, or is the wrapped operation's
 * (*PASS). */
static bool statsfile_request(fuse_req_t req, fuse_ino_t ino, bool *pass)
{
	bool observer = false;

	*pass = !is_stats(ino);
	if (*pass || !by_observer(req, &observer))
		return false;
	*pass = !observer;
	return observer;
}

static void statsfile_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	bool pass;

	if (statsfile_request(req, ino, &pass)) {
		statsfile_attr(&st);
		fuse_reply_attr(req, &st, view_attr_timeout(true));
	} else if (pass) {
		inner.getattr(req, ino, fi);
	}
}

static void statsfile_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
			  struct fuse_file_info *fi)
{
	bool pass;

	enum setattr_plan plan;

	if (statsfile_request(req, ino, &pass))
		fuse_reply_err(req, -view_setattr(true, S_IFREG, true, false, &plan));
	else if (pass)
		inner.setattr(req, ino, attr, valid, fi);
}

static void statsfile_open_op(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	bool pass;
	int ret;

	if (statsfile_request(req, ino, &pass)) {
		ret = statsfile_open(fi);
		if (ret < 0)
			fuse_reply_err(req, -ret);
		else if (fuse_reply_open(req, fi) != 0)
			handle_free(handle_of(fi));
	} else if (pass) {
		inner.open(req, ino, fi);
	}
}

/* Only an observer's open of it has a handle of it. */
static void statsfile_read_op(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			  struct fuse_file_info *fi)
{
	if (is_stats(ino))
		statsfile_read(req, size, off);
	else
		inner.read(req, ino, size, off, fi);
}

/* An xattr operation OP on the stats file: core/view.h's answer (it has
 * none and takes none). */
static void statsfile_xattr(fuse_req_t req, enum xattr_op op)
{
	enum xattr_plan plan;
	int ret = view_xattr(op, true, S_IFREG, true, false, &plan);

	fuse_reply_err(req, ret < 0 ? -ret : 0);	/* XATTR_EMPTY: an empty list */
}

static void statsfile_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	bool pass;

	if (statsfile_request(req, ino, &pass))
		statsfile_xattr(req, XA_GET);
	else if (pass)
		inner.getxattr(req, ino, name, size);
}

static void statsfile_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	bool pass;

	if (statsfile_request(req, ino, &pass))
		statsfile_xattr(req, XA_LIST);
	else if (pass)
		inner.listxattr(req, ino, size);
}

static void statsfile_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			   size_t size, int flags)
{
	bool pass;

	if (statsfile_request(req, ino, &pass))
		statsfile_xattr(req, XA_SET);
	else if (pass)
		inner.setxattr(req, ino, name, value, size, flags);
}

static void statsfile_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	bool pass;

	if (statsfile_request(req, ino, &pass))
		statsfile_xattr(req, XA_REMOVE);
	else if (pass)
		inner.removexattr(req, ino, name);
}

/* An observer's removal or rename of the name: refused, for the virtual
 * file, not what it shadows. True if answered. */
static bool statsfile_name_refused(fuse_req_t req, bool named)
{
	bool observer;

	if (!named)
		return false;
	if (!by_observer(req, &observer))
		return true;
	if (observer)
		fuse_reply_err(req, EPERM);
	return observer;
}

static void statsfile_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (!statsfile_name_refused(req, is_stats_name(parent, name)))
		inner.unlink(req, parent, name);
}

static void statsfile_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (!statsfile_name_refused(req, is_stats_name(parent, name)))
		inner.rmdir(req, parent, name);
}

static void statsfile_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
			 fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	if (!statsfile_name_refused(req, is_stats_name(parent, name) ||
				     is_stats_name(newparent, newname)))
		inner.rename(req, parent, name, newparent, newname, flags);
}

const struct fuse_lowlevel_ops *statsfile_wrap(const struct fuse_lowlevel_ops *ops)
{
	static struct fuse_lowlevel_ops outer;

	inner = *ops;
	outer = *ops;
	outer.lookup = statsfile_lookup;
	outer.forget = statsfile_forget;
	outer.forget_multi = statsfile_forget_multi;
	outer.getattr = statsfile_getattr;
	outer.setattr = statsfile_setattr;
	outer.open = statsfile_open_op;
	outer.read = statsfile_read_op;
	/* xattr=no: the wrapped operations answer "not supported" for every
	 * file, which the kernel then keeps for the mount. */
	if (fs.cfg.xattr) {
		outer.getxattr = statsfile_getxattr;
		outer.listxattr = statsfile_listxattr;
		outer.setxattr = statsfile_setxattr;
		outer.removexattr = statsfile_removexattr;
	}
	outer.unlink = statsfile_unlink;
	outer.rmdir = statsfile_rmdir;
	outer.rename = statsfile_rename;
	return &outer;
}
