/* A client session's private view (R1, R2, R4, R7, R8): the inbox's
 * directories, and of the files only the session's own open drops, under
 * the names it asked for. Drops are created in staging and published when
 * their writer closes them. core/view.h decides who sees and may do what;
 * this file gathers the facts and carries the answers out. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "drop.h"
#include "drops.h"
#include "fs.h"
#include "handles.h"
#include "inode.h"
#include "log.h"
#include "names.h"
#include "request.h"
#include "sessions.h"
#include "stats.h"
#include "view.h"

/* Is N one of W's session's open drops? */
static bool own_drop(const struct who *w, const struct node *n)
{
	struct drop *d = drop_find_node(w->s, n);

	if (d)
		drop_put(d);
	return d != NULL;
}

bool client_may_use(const struct who *w, const struct node *n)
{
	/* A directory is never a drop: no need to look for one. */
	return view_client_may_use(n->type, is_hidden_ino(n->ino),
				   n->type != S_IFDIR && own_drop(w, n));
}

int may_use(const struct who *w, const struct node *n)
{
	return w->observer || client_may_use(w, n) ? 0 : -ENOENT;
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
	/* Not a drop of ours: only what every client sees. */
	dfd = dir_get(dir);
	if (dfd < 0)
		return dfd;
	ret = fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
	if (ret == 0 && !view_shared(st.st_mode, is_hidden_ino(st.st_ino)))
		ret = -ENOENT;
	if (ret == 0)
		ret = node_lookup_at(dfd, name, &st, &n);
	dir_put(dir, dfd);
	if (ret == 0 && !view_shared(st.st_mode, is_hidden_ino(st.st_ino))) {	/* swapped under us */
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
		carry_out(h->drop.d, drop_abandon(&h->drop), -1);
		handle_free(h);
		return fd;
	}
	set_handle(fi, h, d->node, fd);
	return 0;
}

void client_open(fuse_req_t req, struct who *w, struct node *n, struct fuse_file_info *fi)
{
	struct drop *d = n->type == S_IFDIR ? NULL : drop_find_node(w->s, n);
	int ret = view_client_open(n->type, is_hidden_ino(n->ino), d != NULL);

	if (ret == 0)
		ret = open_drop(d, fi->flags, fi);
	if (d)
		drop_put(d);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else if (fuse_reply_open(req, fi) != 0)
		abandon_drop(handle_of(fi));
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
	bool visible = client_may_use(w, dir);
	struct drop *d = visible ? drop_find(w->s, node_id(dir), name) : NULL;
	struct fuse_entry_param e;
	enum create_plan plan;
	struct handle *h;
	struct node *n;
	struct stat st;
	int ret = view_client_create(fi->flags, visible, d != NULL, &plan);

	if (ret < 0) {
		if (d)
			drop_put(d);
		fuse_reply_err(req, -ret);
		return;
	}
	if (plan == CREATE_OPEN_HELD) {
		/* The kernel's lookup raced with the session's own create. */
		n = d->node;
		ret = node_stat(n, &st);
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
			abandon_drop(handle_of(fi));
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
		abandon_drop(h);
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
	ret = close_drop(h, w->s);
	release_handle(h);
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

void client_remove(fuse_req_t req, struct who *w, struct node *parent, const char *name,
		   int flags)
{
	enum drop_action act;
	struct drop *d = NULL;
	int ret = view_client_remove(flags & AT_REMOVEDIR, client_may_use(w, parent));

	if (ret == 0)
		d = drop_find(w->s, node_id(parent), name);
	if (ret == 0 && d == NULL)
		ret = -ENOENT;
	if (d) {
		/* Delete-on-close and friends: never published, removed at
		 * the last release. */
		ret = drop_unlink(d, &act);
		if (ret == 0)
			carry_out(d, act, -1);
		drop_put(d);
	}
	fuse_reply_err(req, -ret);
}

void client_rename(fuse_req_t req, struct who *w, struct node *dir, const char *name,
		   struct node *newdir, const char *newname, unsigned flags)
{
	bool visible = client_may_use(w, dir) && client_may_use(w, newdir);
	struct drop *d = visible ? drop_find(w->s, node_id(dir), name) : NULL;
	int ret, fd;

	/* Each directory looked at only when its answer counts. */
	ret = view_client_rename(flags, visible, d != NULL, visible && !d && is_dir_at(dir, name),
				 d && is_dir_at(newdir, newname));
	/* In flight, the drop cannot be published under the old name, nor
	 * have its origin written after its delivery. */
	if (ret == 0)
		ret = drop_change_begin(d, DROP_CHANGE_META);
	if (ret < 0) {
		if (d)
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

void dirsnap_free(struct dirsnap *snap)
{
	if (snap == NULL)
		return;
	for (size_t i = 0; i < snap->n; i++)
		free(snap->e[i].name);
	free(snap->e);
	free(snap);
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

/* Does DIRFD's link count show no subdirectory a client sees (view.h)? */
static bool no_visible_subdirs(int dirfd)
{
	struct stat st;

	return fstat(dirfd, &st) == 0 &&
	       view_no_visible_subdirs(st.st_nlink, st.st_ino == fs.staging_parent_ino ? 1 : 0);
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
	/* What every client sees (R2, view.h), then the session's drops. */
	while (ret == 0 && (de = readdir(dp)) != NULL) {
		mode_t mode = DTTOIF(de->d_type);

		if (de->d_type == DT_UNKNOWN && !is_hidden_ino(de->d_ino) &&
		    fstatat(dirfd(dp), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
			mode = st.st_mode;
		if (view_shared(mode, is_hidden_ino(de->d_ino)))
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

