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
	bool ok;

	if (n->type == S_IFDIR)
		return !is_hidden_ino(n->ino);
	session_lock();
	ok = n->drop && n->drop->owner == w->s;
	session_unlock();
	return ok;
}

/* The node of the drop W holds open as NAME in DIR, with a reference taken;
 * NULL if none. */
static struct node *held_drop(struct who *w, struct node *dir, const char *name, struct drop **out)
{
	struct node *n = NULL;
	struct drop *d;

	session_lock();
	d = session_find_drop(w->s, node_id(dir), name);
	if (d) {
		n = d->node;
		node_ref(n);
	}
	session_unlock();
	*out = d;
	return n;
}

int client_entry(struct who *w, struct node *dir, const char *name, struct fuse_entry_param *e)
{
	struct node *n = NULL;
	struct drop *d;
	struct stat st;
	int dfd, ret;

	if (!client_may_use(w, dir))
		return -ENOENT;
	n = held_drop(w, dir, name, &d);
	if (n) {
		ret = node_stat(n, &st);
		if (ret < 0) {
			node_forget(n, 1);
			return ret;
		}
		fill_entry(e, n, &st);
		return 0;
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

/* Open another handle on drop D (node N) for W. */
static int open_drop(struct node *n, struct drop *d, int flags, struct fuse_file_info *fi)
{
	struct handle *h = calloc(1, sizeof(*h));
	int fd;

	if (h == NULL)
		return -ENOMEM;
	fd = node_open(n, flags & ~(O_CREAT | O_EXCL | O_NOCTTY));
	if (fd < 0) {
		free(h);
		return fd;
	}
	h->fd = fd;
	h->node = n;
	h->drop = d;
	session_lock();
	d->nopen++;
	d->nlive++;
	d->linger_until = 0;
	if (flags & O_TRUNC)
		d->written = true;
	/* Reopened for writing after an acknowledged close: unfinished again
	 * until its next close, so recovery must not deliver it. */
	bool unack = d->acked && (flags & O_ACCMODE) != O_RDONLY;
	if (unack)
		d->acked = false;
	session_unlock();
	if (unack && stage_unack(&fs.staging, d->stage_name) < 0)
		log_warn("un-acknowledging %s", d->stage_name);
	fi->fh = (uint64_t)(uintptr_t)h;
	return 0;
}

/* Undo a handle whose reply the kernel did not take. */
static void abandon_handle(struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);

	drop_release(h);
	close(h->fd);
	free(h);
}

void client_open(fuse_req_t req, struct who *w, struct node *n, struct fuse_file_info *fi)
{
	struct drop *d;
	int ret;

	if (n->type == S_IFDIR) {
		fuse_reply_err(req, client_may_use(w, n) ? EISDIR : ENOENT);
		return;
	}
	session_lock();
	d = n->drop;
	if (d == NULL || d->owner != w->s || !d->visible)
		d = NULL;
	session_unlock();
	if (d == NULL) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	ret = open_drop(n, d, fi->flags, fi);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else if (fuse_reply_open(req, fi) != 0)
		abandon_handle(fi);
}

/* Record in the staged file where D goes, for recovery after a crash. */
static void record_origin(struct drop *d, struct node *dir, const char *name, int fd)
{
	struct origin o;

	snprintf(o.name, sizeof(o.name), "%s", name);
	if (node_handle(dir, &o.handle_type, &o.handle_bytes, o.handle, sizeof(o.handle)) < 0 ||
	    stage_set_origin(fd, &o) < 0)
		log_warn("recording the origin of %s", d->stage_name);
}

/* Make a new drop for W named NAME in DIR; returns its node (one lookup
 * reference) with the staged file open in *fd. */
static int new_drop(struct who *w, struct node *dir, const char *name, mode_t mode,
		    struct node **out, struct stat *st, int *fd)
{
	struct drop *d = drop_new(name, node_id(dir));
	struct node *n;
	int ret;

	if (d == NULL)
		return -ENOMEM;
	/* Note the TCP connection this session serves, if any, while it is
	 * up: a drop closed after it died is a dead writer's (R6). */
	session_connection_lost(w->s);
	ret = stage_create(&fs.staging, mode, w->uid, w->gid, d->stage_name, fd);
	if (ret < 0)
		goto fail;
	record_origin(d, dir, name, *fd);
	ret = node_lookup_fd(*fd, st, &n);
	if (ret < 0) {
		close(*fd);
		discard_drop(&fs.staging, d->stage_name);
		goto fail;
	}
	node_ref(dir);		/* the drop holds its directory */
	node_ref(n);		/* and its node, while it lingers closed */
	d->ino = st->st_ino;
	d->node = n;
	d->uid = w->uid;
	d->pid = w->pid;
	session_lock();
	n->drop = d;
	session_add_drop(w->s, d);
	session_unlock();
	stat_add(STAT_DROPS, 1);
	*out = n;
	return 0;
fail:
	drop_free(d);
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
	int fd, ret;

	if (!client_may_use(w, dir)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	n = held_drop(w, dir, name, &d);
	if (d) {
		/* The session holds this name open already (the kernel's lookup
		 * raced with it): create-new fails, a plain create opens it. */
		ret = (fi->flags & O_EXCL) ? -EEXIST : node_stat(n, &st);
		if (ret == 0)
			ret = open_drop(n, d, fi->flags, fi);
		if (ret < 0) {
			node_forget(n, 1);
			fuse_reply_err(req, -ret);
			return;
		}
		fill_entry(&e, n, &st);
		if (fuse_reply_create(req, &e, fi) != 0) {
			abandon_handle(fi);
			node_forget(n, 1);
		}
		return;
	}
	h = calloc(1, sizeof(*h));
	if (h == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ret = new_drop(w, dir, name, mode, &n, &st, &fd);
	if (ret < 0) {
		free(h);
		fuse_reply_err(req, -ret);
		return;
	}
	h->fd = fd;
	h->node = n;
	session_lock();
	h->drop = n->drop;
	h->drop->nopen = 1;
	h->drop->nlive = 1;
	session_unlock();
	fi->fh = (uint64_t)(uintptr_t)h;
	fill_entry(&e, n, &st);
	if (fuse_reply_create(req, &e, fi) != 0) {
		abandon_handle(fi);
		node_forget(n, 1);
	}
}

/* A regular file made without an open handle is closed at once, so it is
 * delivered (empty) at once. */
void client_mknod(fuse_req_t req, struct who *w, struct node *dir, const char *name, mode_t mode)
{
	struct fuse_entry_param e;
	struct node *n;
	struct stat st;
	int fd, ret;

	if (!client_may_use(w, dir)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	ret = new_drop(w, dir, name, mode, &n, &st, &fd);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	struct handle h = { .fd = fd, .node = n, .drop = n->drop };
	session_lock();
	h.drop->nopen = 1;
	h.drop->nlive = 1;
	session_unlock();
	ret = drop_flush(&h, w->pid, w->s);
	drop_release(&h);
	close(fd);
	if (ret < 0) {
		node_forget(n, 1);
		fuse_reply_err(req, -ret);
		return;
	}
	fill_entry(&e, n, &st);
	if (fuse_reply_entry(req, &e) != 0)
		node_forget(n, 1);
}

void client_unlink(fuse_req_t req, struct who *w, struct node *parent, const char *name)
{
	struct drop *d;

	session_lock();
	d = client_may_use(w, parent) ? session_find_drop(w->s, node_id(parent), name) : NULL;
	if (d) {
		/* Delete-on-close and friends: never published, removed at
		 * the last release. */
		d->unlinked = true;
		session_hide_drop(d);
	}
	session_unlock();
	fuse_reply_err(req, d ? 0 : ENOENT);
}

void client_rename(fuse_req_t req, struct who *w, struct node *dir, const char *name,
		   struct node *newdir, const char *newname, unsigned flags)
{
	struct node *old_parent = NULL;
	struct stat st;
	struct drop *d;
	char *copy;
	int ret = 0, dfd;

	if (!client_may_use(w, dir) || !client_may_use(w, newdir)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (flags & RENAME_EXCHANGE) {
		fuse_reply_err(req, EPERM);
		return;
	}
	/* A directory of the shared view is neither source nor target. */
	dfd = dir_get(newdir);
	if (dfd >= 0 && fstatat(dfd, newname, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
		ret = -EEXIST;
	dir_put(newdir, dfd);
	copy = strdup(newname);
	if (copy == NULL)
		ret = -ENOMEM;
	session_lock();
	d = session_find_drop(w->s, node_id(dir), name);
	if (ret == 0 && d == NULL)
		ret = -ENOENT;
	if (ret == 0 && d != session_find_drop(w->s, node_id(newdir), newname) &&
	    session_find_drop(w->s, node_id(newdir), newname))
		ret = -EEXIST;	/* R3: never over another drop either */
	if (ret == 0) {
		/* The drop will be published under its new name. */
		free(d->name);
		d->name = copy;
		copy = NULL;
		if (d->parent != node_id(newdir)) {
			old_parent = node_of(d->parent);
			d->parent = node_id(newdir);
			node_ref(newdir);
		}
	}
	session_unlock();
	free(copy);
	if (ret == 0) {
		int fd = node_open(d->node, O_RDONLY);

		if (fd >= 0) {
			record_origin(d, newdir, newname, fd);
			close(fd);
		}
	}
	if (old_parent)
		node_forget(old_parent, 1);
	if (ret == -ENOENT) {
		/* R7: renaming a directory is refused, not "not found". */
		dfd = dir_get(dir);
		if (dfd >= 0 && fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
			ret = -EPERM;
		dir_put(dir, dfd);
	}
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
	session_lock();
	for (struct drop *d = session_next_drop(w->s, node_id(dir), NULL); d && ret == 0;
	     d = session_next_drop(w->s, node_id(dir), d))
		ret = snap_add(snap, d->name, d->ino, DT_REG);
	session_unlock();
	if (ret < 0)
		goto fail;
	*out = snap;
	return 0;
fail:
	dirsnap_free(snap);
	return ret;
}

/* ---- a drop's handles: write, close, release ---- */

int drop_written(struct handle *h)
{
	struct drop *d = h->drop;
	bool unack = false;
	int ret = 0;

	if (d == NULL)
		return 0;
	session_lock();
	if (d->published) {
		ret = -EBADF;	/* delivered at its close: it is the consumer's now */
	} else {
		d->written = true;
		if (h->flushed) {	/* another descriptor of it is still writing */
			h->flushed = false;
			d->nlive++;
			unack = d->acked;
			d->acked = false;
		}
	}
	session_unlock();
	/* Its close was acknowledged empty, yet it is written again: until
	 * the next close it is unfinished, and recovery must not deliver it. */
	if (unack && stage_unack(&fs.staging, d->stage_name) < 0)
		log_warn("un-acknowledging %s", d->stage_name);
	return ret;
}

static uint64_t now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Move D into its directory; with D marked publishing by the caller. */
static int publish(struct drop *d, int fd)
{
	char name[NAME_MAX_BYTES + 1], final[NAME_MAX_BYTES + 1], q1[1024], q2[1024];
	uint64_t start = now_usec();
	struct node *dir;
	int dfd, ret;

	session_lock();
	strcpy(name, d->name);
	dir = node_of(d->parent);
	session_unlock();
	if (fs.staging.sync && fsync(fd) < 0) {
		ret = -errno;
		goto fail;
	}
	dfd = dir_get(dir);
	if (dfd < 0) {
		ret = dfd;
		goto fail;
	}
	ret = publish_drop(&fs.staging, d->stage_name, dfd, name, final);
	dir_put(dir, dfd);
	if (ret < 0)
		goto fail;
	stage_clear_origin(fd);		/* only now: a crash before keeps it recoverable */
	if (ret == 1) {
		stat_add(STAT_REWRITES, 1);
		log_info("rewrite: \"%s\" stored as \"%s\" (pid %d, uid %u)",
			 log_name(name, q1, sizeof(q1)), log_name(final, q2, sizeof(q2)),
			 (int)d->pid, (unsigned)d->uid);
	}
	stat_add(STAT_PUBLISHED, 1);
	stat_latency(now_usec() - start);
	session_lock();
	d->published = true;
	d->publishing = false;
	session_unlock();
	return 0;
fail:
	stat_add(STAT_ERRORS, 1);
	errno = -ret;
	log_warn("publishing \"%s\" (%s)", log_name(name, q1, sizeof(q1)), d->stage_name);
	session_lock();
	d->failed = true;
	d->error = -ret;
	d->publishing = false;
	session_unlock();
	return ret;
}

int drop_flush(struct handle *h, pid_t tid, struct session *s)
{
	struct drop *d = h->drop;
	bool last, publish_now, ack, linger, killed;

	/* Only its writer's close counts: a child that inherited the
	 * descriptor (`{ echo; /bin/echo; } > f`) closes its copy when it
	 * exits, while the writer goes on. Once the writer has gone, whoever
	 * holds it on is the writer. */
	if (d == NULL || (s != d->owner && session_alive(d->owner)))
		return 0;
	/* A writer killed mid-copy has its files closed by the kernel, and
	 * smbd closes a dropped connection's files itself: neither close is an
	 * acknowledgement, the drop is incomplete (R6). */
	killed = task_killed(tid) || session_connection_lost(d->owner);

	session_lock();
	if (!h->flushed) {
		h->flushed = true;
		d->nlive--;
	}
	last = d->nlive == 0;
	if (last && killed)
		d->failed = true;
	linger = last && fs.cfg.linger > 0 && !d->unlinked && !d->failed && !d->published;
	/* The name is free for the session again from this close on. The
	 * kernel needs no telling: an entry that timed out (all of a client's
	 * do, at once) is dropped with its last reference, and the node with
	 * it (FORGET). */
	if (last && d->visible && !linger)
		session_hide_drop(d);
	publish_now = last && !linger && d->written && !d->unlinked && !d->published &&
		      !d->failed && !d->publishing;
	if (publish_now)
		d->publishing = true;
	/* Not published yet but acknowledged now: an empty drop (published at
	 * its release, see drop_release()) or a lingering one. Staged as a.*,
	 * recovery delivers it. */
	ack = last && (linger || !d->written) && !d->unlinked && !d->failed && !d->acked &&
	      !d->published;
	if (ack)
		d->acked = true;
	if (linger)
		d->linger_until = now_ms() + 1000ULL * fs.cfg.linger;
	session_unlock();
	if (linger && fs.staging.sync && d->written && fsync(h->fd) < 0) {
		int err = -errno;

		session_lock();
		d->failed = true;	/* R5: a close that is not durable fails */
		session_unlock();
		return err;
	}
	if (ack && stage_ack(&fs.staging, d->stage_name) < 0) {
		/* Still delivered at its release; only a crash before would
		 * put it aside instead. */
		log_warn("acknowledging %s", d->stage_name);
		session_lock();
		d->acked = false;
		session_unlock();
	}
	if (!publish_now) {
		int err = 0;

		session_lock();
		if (last && d->failed)	/* the writer learns its drop is lost */
			err = d->error ? d->error : EIO;
		session_unlock();
		return -err;
	}
	return publish(d, h->fd);
}

void drop_fail(struct handle *h, int error)
{
	session_lock();
	h->drop->failed = true;
	if (h->drop->error == 0)
		h->drop->error = error;
	session_unlock();
}

void drop_release(struct handle *h)
{
	struct drop *d = h->drop;
	bool last, keep = false;

	if (d == NULL)
		return;
	session_lock();
	d->nopen--;
	if (!h->flushed) {
		h->flushed = true;
		d->nlive--;
	}
	last = d->nopen == 0;
	if (last && d->linger_until && !d->unlinked && !d->failed && !d->published &&
	    now_ms() < d->linger_until) {
		keep = true;		/* visible until its time is up */
		linger_add(d);
	} else if (last) {
		session_hide_drop(d);
		((struct node *)d->node)->drop = NULL;
	}
	session_unlock();
	if (last && !keep)
		drop_finish(d, h->fd);
}

void drop_finish(struct drop *d, int fd)
{
	bool own_fd = false;

	if (d->unlinked) {
		discard_drop(&fs.staging, d->stage_name);
		stat_add(STAT_DISCARDED, 1);
	} else if (d->failed || (!d->published && !d->acked && session_connection_lost(d->owner))) {
		/* The second case: published at release, but its writer's
		 * connection died before any acknowledged close. */
		if (quarantine_drop(&fs.staging, d->stage_name, d->name,
				    "its writer never saw a successful close") == 0)
			stat_add(STAT_QUARANTINED, 1);
	} else if (!d->published) {
		/* An empty drop, a lingering one, or one written again after
		 * its close through another descriptor. */
		if (fd < 0) {
			fd = node_open(d->node, O_RDONLY);
			own_fd = fd >= 0;
		}
		session_lock();
		d->publishing = true;
		session_unlock();
		if (fd < 0 || publish(d, fd) < 0) {
			if (quarantine_drop(&fs.staging, d->stage_name, d->name, "publication failed") == 0)
				stat_add(STAT_QUARANTINED, 1);
		}
		if (own_fd)
			close(fd);
	}
	node_forget(node_of(d->parent), 1);
	node_forget(d->node, 1);	/* the drop's own reference */
	drop_free(d);
}
