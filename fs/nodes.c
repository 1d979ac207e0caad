/* Handlers for names and attributes: lookup, forget, getattr, setattr,
 * readlink, making, linking, removing and renaming names. Each finds out
 * who is asking and hands the request to the client view (client.c) or the
 * observer view (observer.c); each replies exactly once. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client.h"
#include "drop.h"
#include "fs.h"
#include "handles.h"
#include "inode.h"
#include "names.h"
#include "nodes.h"
#include "observer.h"
#include "request.h"
#include "setid.h"
#include "stats.h"
#include "view.h"

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct who w = WHO_NONE;
	int ret = strlen(name) > NAME_MAX_BYTES ? -ENAMETOOLONG : who_get(req, &w);

	if (ret < 0)
		fuse_reply_err(req, -ret);
	else if (w.observer)
		observer_lookup(req, node_of(parent), name);
	else
		client_lookup(req, &w, node_of(parent), name);
	who_put(&w);
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	node_forget(node_of(ino), nlookup);
	fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		node_forget(node_of(forgets[i].ino), forgets[i].nlookup);
	fuse_reply_none(req);
}

/* N's attributes ST, or the error RET < 0. */
static void reply_attr(fuse_req_t req, int ret, const struct stat *st, struct node *n)
{
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, st, attr_timeout(n));
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n = node_of(ino);
	struct stat st;
	struct who w;
	int ret = who_get(req, &w);

	if (ret == 0 && !client_holds(&w, fi))
		ret = may_use(&w, n);
	if (ret == 0 && fi)
		ret = fstat(handle_of(fi)->fd, &st) < 0 ? -errno : 0;
	else if (ret == 0)
		ret = node_stat(n, &st);
	who_put(&w);
	reply_attr(req, ret, &st, n);
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
		struct fuse_file_info *fi)
{
	enum drop_change what = (valid & FUSE_SET_ATTR_SIZE) ? DROP_CHANGE_DATA : DROP_CHANGE_META;
	struct node *n = node_of(ino);
	enum setattr_plan plan;
	struct drop *d = NULL;
	char proc[64];
	struct stat st;
	struct who w;
	int fd = -1, ret = who_get(req, &w);

	if (ret == 0 && !client_holds(&w, fi))
		ret = may_use(&w, n);
	if (ret == 0)
		ret = view_setattr(w.observer, n->type, false /* statsfile.c's */,
				   n->type == S_IFDIR && may_change_dir(&w), &plan);
	if (ret < 0)
		goto done;
	/* A drop changes only while the lifecycle lets it (drop.h): never
	 * once delivered, whatever descriptor or path the writer kept. */
	if (plan == SETATTR_DROP) {
		d = fi ? handle_of(fi)->drop.d : drop_find_node(w.s, n);
		if (d == NULL) {
			ret = -ENOENT;
			goto done;
		}
		if (fi)
			drop_ref(d);
		ret = drop_change_begin(d, what);
		if (ret < 0) {
			drop_put(d);
			d = NULL;
			goto done;
		}
	}
	fd = fi ? handle_of(fi)->fd : node_open(n, O_PATH);
	if (fd < 0) {
		ret = fd;
		goto done;
	}
	/* Through /proc so that an O_PATH descriptor serves every call. */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if (valid & FUSE_SET_ATTR_MODE) {
		if ((fi ? fchmod(fd, attr->st_mode) : chmod(proc, attr->st_mode)) < 0)
			goto fail;
	}
	if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t u = (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1;
		gid_t g = (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1;

		if (fchownat(fd, "", u, g, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
			goto fail;
	}
	if (valid & FUSE_SET_ATTR_SIZE) {
		if ((fi ? ftruncate(fd, attr->st_size) : truncate(proc, attr->st_size)) < 0)
			goto fail;
	}
	/* FUSE_HANDLE_KILLPRIV_V2: a truncate or chown by a caller without
	 * CAP_FSETID (setid.h). */
	if ((valid & FUSE_SET_ATTR_KILL_SUID) && (errno = -setid_clear(fd)) != 0)
		goto fail;
	if (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
		struct timespec tv[2] = { { 0, UTIME_OMIT }, { 0, UTIME_OMIT } };

		if (valid & FUSE_SET_ATTR_ATIME_NOW)
			tv[0].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_ATIME)
			tv[0] = attr->st_atim;
		if (valid & FUSE_SET_ATTR_MTIME_NOW)
			tv[1].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_MTIME)
			tv[1] = attr->st_mtim;
		if ((fi ? futimens(fd, tv) : utimensat(AT_FDCWD, proc, tv, 0)) < 0)
			goto fail;
	}
	ret = fstat(fd, &st) < 0 ? -errno : 0;
	goto done;
fail:
	ret = -errno;
done:
	if (!fi && fd >= 0)
		close(fd);
	if (d) {
		if (drop_change_end(d, what, what == DROP_CHANGE_DATA && loses_data(-ret) ? -ret : 0))
			stat_add(STAT_ERRORS, 1);
		drop_put(d);
	}
	who_put(&w);
	reply_attr(req, ret, &st, n);
}

void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct node *n = node_of(ino);
	char buf[PATH_MAX + 1];
	struct who w;
	ssize_t len = -1;
	int fd = -1, ret = who_get(req, &w);

	/* Clients never see symlinks: nothing but directories and their
	 * own drops (view.h). */
	if (ret == 0)
		ret = may_use(&w, n);
	who_put(&w);
	if (ret == 0)
		ret = fd = node_open(n, O_PATH);
	if (fd >= 0) {
		len = readlinkat(fd, "", buf, sizeof(buf) - 1);
		ret = len < 0 ? -errno : 0;
		close(fd);
	}
	if (ret < 0) {
		fuse_reply_err(req, -ret);
	} else {
		buf[len] = '\0';
		fuse_reply_readlink(req, buf);
	}
}

static void make_node(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      dev_t rdev, const char *link)
{
	struct node *dir = node_of(parent);
	enum make_plan plan = MAKE_DIR;
	struct who w = WHO_NONE;
	int ret = name_check(name);

	if (ret == 0)
		ret = who_get(req, &w);
	/* R7, R8: what a client may make, and where (view.h). */
	if (ret == 0 && !w.observer)
		ret = view_client_make(mode, link != NULL, client_may_use(&w, dir), fs.cfg.client_mkdir,
				       view_reserved_name(parent == FUSE_ROOT_ID, name), &plan);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else if (w.observer || plan == MAKE_DIR)
		observer_make(req, &w, dir, name, mode, rdev, link);
	else
		client_mknod(req, &w, dir, name, mode);
	who_put(&w);
}

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	make_node(req, parent, name, mode, rdev, NULL);
}

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	make_node(req, parent, name, S_IFDIR | mode, 0, NULL);
}

void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	make_node(req, parent, name, S_IFLNK, 0, link);
}

void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct who w = WHO_NONE;
	enum make_plan plan;
	int ret = name_check(newname);

	if (ret == 0)
		ret = who_get(req, &w);
	/* R8 (view.h) */
	if (ret == 0 && !w.observer)
		ret = view_client_make(S_IFREG, true /* a link */, true, false, false, &plan);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		observer_link(req, node_of(ino), node_of(newparent), newname);
	who_put(&w);
}

static void remove_name(fuse_req_t req, fuse_ino_t parent, const char *name, int flags)
{
	struct node *dir = node_of(parent);
	struct who w;
	int ret = who_get(req, &w);

	if (ret < 0)
		fuse_reply_err(req, -ret);
	else if (w.observer)
		observer_remove(req, dir, name, flags);
	else
		client_remove(req, &w, dir, name, flags);
	who_put(&w);
}

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_name(req, parent, name, 0);
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_name(req, parent, name, AT_REMOVEDIR);
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
	       const char *newname, unsigned int flags)
{
	struct who w = WHO_NONE;
	int ret = name_check(newname);

	if (ret == 0 && flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE))
		ret = -EINVAL;
	if (ret == 0)
		ret = who_get(req, &w);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else if (w.observer)
		observer_rename(req, &w, node_of(parent), name, node_of(newparent), newname, flags);
	else
		client_rename(req, &w, node_of(parent), name, node_of(newparent), newname, flags);
	who_put(&w);
}
