/* A client session's private view (R1, R2, R4, R7, R8): the inbox's
 * directories, and of the files only the session's own open drops, under
 * the names it asked for. Drops are created in staging and published when
 * their writer closes them. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"
#include "names.h"
#include "stats.h"

bool client_may_use(const struct who *w, const struct node *n)
{
	struct drop *d;

	if (n->type == S_IFDIR)
		return !is_hidden_ino(n->ino);
	d = drop_find_node(w->s, n);
	if (d)
		drop_put(d);
	return d != NULL;
}

/* Check that W may act on N; replies and returns false if not. */
bool may_use(fuse_req_t req, struct who *w, struct node *n)
{
	if (w->observer || client_may_use(w, n))
		return true;
	fuse_reply_err(req, ENOENT);
	return false;
}

bool client_holds(const struct who *w, struct fuse_file_info *fi)
{
	struct handle *h = fi ? handle_of(fi) : NULL;

	/* Its process's, under whichever uid: a handle is the process's. */
	return h && h->drop.d && session_same_process(h->drop.d->owner, w->s);
}

int client_entry(struct who *w, struct node *dir, const char *name, struct fuse_entry_param *e)
{
	struct node *n = NULL;
	struct drop *d;
	struct stat st;
	int dfd, ret;

	if (!client_may_use(w, dir))
		return -ENOENT;
	d = drop_find(w->s, node_id(dir), name);
	if (d) {
		n = d->node;
		ret = node_stat(n, &st);
		if (ret == 0) {
			node_ref(n);
			fill_entry(e, n, &st);
		}
		drop_put(d);
		return ret;
	}
	/* Not a drop of ours: only a directory is visible. */
	dfd = dir_get(dir);
	if (dfd < 0)
		return dfd;
	ret = fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
	if (ret == 0 && (!S_ISDIR(st.st_mode) || is_hidden_ino(st.st_ino)))
		ret = -ENOENT;
	if (ret == 0)
		ret = node_lookup_at(dfd, name, &st, &n);
	dir_put(dir, dfd);
	if (ret == 0 && !S_ISDIR(st.st_mode)) {	/* swapped under us */
		node_forget(n, 1);
		ret = -ENOENT;
	}
	if (ret == 0)
		fill_entry(e, n, &st);
	return ret;
}

void client_lookup(fuse_req_t req, struct who *w, struct node *parent, const char *name)
{
	struct fuse_entry_param e;
	int ret = client_entry(w, parent, name, &e);

	if (ret < 0)
		fuse_reply_err(req, -ret);
	else if (fuse_reply_entry(req, &e) != 0)
		node_forget(node_of(e.ino), 1);
}

/* A client's handle on drop D's node N: the lifecycle has counted it in
 * (drop_start() or drop_open()); FD is its descriptor. */
static void set_handle(struct fuse_file_info *fi, struct handle *h, struct node *n, int fd)
{
	h->fd = fd;
	h->node = n;
	fi->fh = (uint64_t)(uintptr_t)h;
	/* No page cache for drops: a shared mapping kept after the close
	 * could otherwise change what readers of the mount see, though the
	 * message on disk is the consumer's (R6). The kernel refuses
	 * MAP_SHARED on such a file. */
	fi->direct_io = 1;
}

/* Another handle on drop D for its session. */
static int open_drop(struct drop *d, int flags, struct fuse_file_info *fi)
{
	struct handle *h = handle_new(d->owner);
	int fd, ret;

	if (h == NULL)
		return -EMFILE;
	ret = drop_open(d, &h->drop, flags);
	if (ret < 0) {
		handle_free(h);
		return ret;
	}
	/* O_TRUNC reaches the staged file only now, while this handle keeps
	 * the drop from closing. */
	fd = node_open(d->node, flags & ~(O_CREAT | O_EXCL | O_NOCTTY));
	if (fd < 0) {
		drop_carry_out(h->drop.d, drop_abandon(&h->drop), -1);
		handle_free(h);
		return fd;
	}
	set_handle(fi, h, d->node, fd);
	return 0;
}

void client_open(fuse_req_t req, struct who *w, struct node *n, struct fuse_file_info *fi)
{
	struct drop *d;
	int ret;

	if (n->type == S_IFDIR) {
		fuse_reply_err(req, client_may_use(w, n) ? EISDIR : ENOENT);
		return;
	}
	d = drop_find_node(w->s, n);
	if (d == NULL) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	ret = open_drop(d, fi->flags, fi);
	drop_put(d);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else if (fuse_reply_open(req, fi) != 0)
		drop_handle_abandon(handle_of(fi));
}

/* Record in the staged file where D goes, for recovery after a crash. */
static int record_origin(struct node *dir, const char *name, int fd)
{
	struct origin o;
	int ret;

	snprintf(o.name, sizeof(o.name), "%s", name);
	ret = node_handle(dir, &o.handle_type, &o.handle_bytes, o.handle, sizeof(o.handle));
	if (ret == 0)
		ret = stage_set_origin(fd, &o);
	return ret;
}

/* Make a new drop for W named NAME in DIR, open in a new handle H; returns
 * its node with one lookup reference in *OUT. */
static int new_drop(struct who *w, struct node *dir, const char *name, mode_t mode,
		    struct handle *h, struct node **out, struct stat *st)
{
	struct drop *d;
	struct node *n;
	int fd, ret;

	ret = drop_new(w->s, name, node_id(dir), &d);
	if (ret < 0)
		return ret;
	/* Note the TCP connection this session serves, if any, while it is
	 * up: a drop closed after it died is a dead writer's (R6). */
	session_peer(w->s, &d->peer);
	ret = stage_create(&fs.staging, mode, w->uid, w->gid, d->stage_name, &fd);
	if (ret < 0)
		goto fail;
	/* Without its origin recovery could not deliver it: no drop. */
	ret = record_origin(dir, name, fd);
	if (ret == 0)
		ret = node_lookup_fd(fd, st, &n);
	if (ret < 0) {
		close(fd);
		discard_drop(&fs.staging, d->stage_name);
		goto fail;
	}
	node_ref(dir);		/* the drop holds its directory */
	node_ref(n);		/* and its node, until it is finished */
	d->ino = st->st_ino;
	d->node = n;
	d->uid = w->uid;
	d->pid = w->pid;
	ret = drop_start(d, &h->drop);
	if (ret < 0) {		/* another thread of the session took the name */
		close(fd);
		discard_drop(&fs.staging, d->stage_name);
		node_forget(n, 1);
		goto fail;
	}
	drop_put(d);		/* the handle holds it now */
	stat_add(STAT_DROPS, 1);
	h->fd = fd;
	*out = n;
	return 0;
fail:
	drop_put(d);
	return ret;
}

void client_create(fuse_req_t req, struct who *w, struct node *dir, const char *name,
		   mode_t mode, struct fuse_file_info *fi)
{
	struct fuse_entry_param e;
	struct handle *h;
	struct node *n;
	struct drop *d;
	struct stat st;
	int ret;

	if (!client_may_use(w, dir)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	d = drop_find(w->s, node_id(dir), name);
	if (d) {
		/* The session holds this name open already (the kernel's lookup
		 * raced with it): create-new fails, a plain create opens it. */
		n = d->node;
		ret = (fi->flags & O_EXCL) ? -EEXIST : node_stat(n, &st);
		if (ret == 0)
			ret = open_drop(d, fi->flags, fi);
		drop_put(d);
		if (ret < 0) {
			fuse_reply_err(req, -ret);
			return;
		}
		node_ref(n);
		fill_entry(&e, n, &st);
		if (fuse_reply_create(req, &e, fi) != 0) {
			drop_handle_abandon(handle_of(fi));
			node_forget(n, 1);
		}
		return;
	}
	h = handle_new(w->s);
	if (h == NULL) {
		fuse_reply_err(req, EMFILE);
		return;
	}
	ret = new_drop(w, dir, name, mode, h, &n, &st);
	if (ret < 0) {
		handle_free(h);
		fuse_reply_err(req, -ret);
		return;
	}
	set_handle(fi, h, n, h->fd);
	fill_entry(&e, n, &st);
	if (fuse_reply_create(req, &e, fi) != 0) {
		drop_handle_abandon(h);
		node_forget(n, 1);
	}
}

/* A regular file made without an open handle is closed at once by its
 * writer, so it is delivered (empty) at once. */
void client_mknod(fuse_req_t req, struct who *w, struct node *dir, const char *name, mode_t mode)
{
	struct fuse_entry_param e;
	struct handle *h;
	struct node *n;
	struct stat st;
	int ret;

	if (!client_may_use(w, dir)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	h = handle_new(w->s);
	if (h == NULL) {
		fuse_reply_err(req, EMFILE);
		return;
	}
	ret = new_drop(w, dir, name, mode, h, &n, &st);
	if (ret < 0) {
		handle_free(h);
		fuse_reply_err(req, -ret);
		return;
	}
	h->node = n;
	ret = drop_handle_close(h, w->s);
	drop_handle_release(h);
	if (ret < 0) {
		node_forget(n, 1);
		fuse_reply_err(req, -ret);
		return;
	}
	fill_entry(&e, n, &st);
	if (fuse_reply_entry(req, &e) != 0)
		node_forget(n, 1);
}

/* Is there a directory called NAME in DIR? */
static bool is_dir_at(struct node *dir, const char *name)
{
	struct stat st;
	int dfd = dir_get(dir);
	bool ret = dfd >= 0 && fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		   S_ISDIR(st.st_mode);

	dir_put(dir, dfd);
	return ret;
}

void client_unlink(fuse_req_t req, struct who *w, struct node *parent, const char *name)
{
	enum drop_action act;
	struct drop *d;
	int ret = -ENOENT;

	d = client_may_use(w, parent) ? drop_find(w->s, node_id(parent), name) : NULL;
	if (d) {
		/* Delete-on-close and friends: never published, removed at
		 * the last release. */
		ret = drop_unlink(d, &act);
		if (ret == 0)
			drop_carry_out(d, act, -1);
		drop_put(d);
	}
	fuse_reply_err(req, -ret);
}

void client_rename(fuse_req_t req, struct who *w, struct node *dir, const char *name,
		   struct node *newdir, const char *newname, unsigned flags)
{
	struct drop *d = NULL;
	int ret = 0, fd;

	if (!client_may_use(w, dir) || !client_may_use(w, newdir)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (flags & RENAME_EXCHANGE) {
		fuse_reply_err(req, EPERM);
		return;
	}
	d = drop_find(w->s, node_id(dir), name);
	if (d == NULL) {
		/* R7: renaming a directory is refused, not "not found". */
		fuse_reply_err(req, is_dir_at(dir, name) ? EPERM : ENOENT);
		return;
	}
	/* A directory of the shared view is never a target. */
	if (is_dir_at(newdir, newname))
		ret = -EEXIST;
	/* In flight, the drop cannot be published under the old name, nor
	 * have its origin written after its delivery. */
	if (ret == 0)
		ret = drop_change_begin(d, DROP_CHANGE_META);
	if (ret < 0) {
		drop_put(d);
		fuse_reply_err(req, ret == -EBADF ? ENOENT : -ret);
		return;
	}
	fd = node_open(d->node, O_RDONLY);
	ret = fd < 0 ? fd : record_origin(newdir, newname, fd);
	if (ret == 0) {
		uint64_t old;

		ret = drop_rename(d, node_id(newdir), newname, &old);
		if (ret == 0 && old != node_id(newdir)) {
			node_ref(newdir);
			node_forget(node_of(old), 1);
		}
		/* Refused: the recorded origin goes back to what it was. */
		if (ret < 0 && record_origin(dir, name, fd) < 0)
			log_warn("restoring the origin of %s", d->stage_name);
	}
	if (fd >= 0)
		close(fd);
	drop_change_end(d, DROP_CHANGE_META, 0);
	drop_put(d);
	fuse_reply_err(req, -ret);
}

static int snap_add(struct dirsnap *snap, const char *name, ino_t ino, unsigned char type)
{
	if (snap->n == snap->cap) {
		size_t cap = snap->cap ? snap->cap * 2 : 16;
		struct snapent *e = realloc(snap->e, cap * sizeof(*e));

		if (e == NULL)
			return -ENOMEM;
		snap->e = e;
		snap->cap = cap;
	}
	snap->e[snap->n].name = strdup(name);
	if (snap->e[snap->n].name == NULL)
		return -ENOMEM;
	snap->e[snap->n].ino = ino;
	snap->e[snap->n].type = type;
	snap->n++;
	return 0;
}

/* A directory's link count is 2 plus its subdirectories on ext4, XFS and
 * tmpfs (1 where not counted: btrfs, or ext4 past 65,000). When it shows
 * none but the hidden staging directory, a client's listing need not read
 * a directory of a million files to find no subdirectory in it. */
static bool no_visible_subdirs(int dirfd)
{
	struct stat st;
	nlink_t hidden;

	if (fstat(dirfd, &st) < 0 || st.st_nlink < 2)
		return false;
	hidden = st.st_ino == fs.staging_parent_ino ? 1 : 0;
	return st.st_nlink == 2 + hidden;
}

static int snap_drop(const struct drop *d, void *snap)
{
	return snap_add(snap, d->name, d->ino, DT_REG);
}

int client_snapshot(struct who *w, struct node *dir, struct dirsnap **out)
{
	struct dirsnap *snap = calloc(1, sizeof(*snap));
	struct dirent *de;
	struct stat st;
	DIR *dp = NULL;
	int fd, ret = 0;

	if (snap == NULL)
		return -ENOMEM;
	fd = node_open(dir, O_RDONLY | O_DIRECTORY);
	if (fd < 0) {
		ret = fd;
		goto fail;
	}
	if (no_visible_subdirs(fd)) {
		close(fd);
		goto drops;
	}
	dp = fdopendir(fd);
	if (dp == NULL) {
		ret = -errno;
		close(fd);
		goto fail;
	}
	/* Directories are shared; files are nobody else's business (R2). */
	while (ret == 0 && (de = readdir(dp)) != NULL) {
		unsigned char type = de->d_type;

		if (is_hidden_ino(de->d_ino))
			continue;
		if (type == DT_UNKNOWN && fstatat(dirfd(dp), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISDIR(st.st_mode))
			type = DT_DIR;
		if (type == DT_DIR)
			ret = snap_add(snap, de->d_name, de->d_ino, DT_DIR);
	}
	closedir(dp);
drops:
	if (ret == 0)
		ret = drop_list(w->s, node_id(dir), snap_drop, snap);
	if (ret < 0)
		goto fail;
	*out = snap;
	return 0;
fail:
	dirsnap_free(snap);
	return ret;
}

