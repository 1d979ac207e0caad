/* What the FUSE operations share: the mounted filesystem's state, open
 * handles, and who is asking. */
#ifndef INBOXFS_FS_H
#define INBOXFS_FS_H

#include <errno.h>
#include <stdbool.h>
#include <sys/types.h>

#include <fuse_lowlevel.h>

#include "drop.h"
#include "inode.h"
#include "options.h"
#include "sessions.h"
#include "staging.h"

struct inboxfs {
	struct inboxfs_config cfg;
	struct staging staging;
	uint64_t staging_ino;		/* hidden from every view */
	uint64_t staging_parent_ino;	/* the directory it is in (0: not known) */
	struct fuse_session *se;
	const char *mountpoint;		/* resolved, as processes name their files */
	int mnt_id;			/* the mount's id (0: not known) */
	unsigned max_handles;		/* open files, leaving a reserve (R12) */
};

extern struct inboxfs fs;

/* An open file: fi->fh points to one. */
struct handle {
	int fd;
	struct node *node;
	struct drop_handle drop;	/* .d set on a client's drop */
};

/* drops.c: handles within the descriptor budget; NULL past it (EMFILE). */
struct handle *handle_new(void);
void handle_free(struct handle *h);	/* closes its fd */

/* Who sent a request: an observer, or a client with its session. */
struct who {
	bool observer;
	uid_t uid;
	gid_t gid;
	pid_t pid;
	struct session *s;
};

int who_get(fuse_req_t req, struct who *w);
void who_put(struct who *w);
#define WHO_OR_REPLY(req, w) do { int r_ = who_get(req, &(w)); \
	if (r_ < 0) { fuse_reply_err(req, -r_); return; } } while (0)

/* May W change a directory's attributes (R7)? */
bool may_change_dir(const struct who *w);

/* Check that W may act on N; replies ENOENT and returns false if not. */
bool may_use(fuse_req_t req, struct who *w, struct node *n);
/* Reply with the error and return it if NAME cannot be created. */
int check_name(fuse_req_t req, const char *name);

/* True if NAME in directory PARENT is inboxfs's own and no view shows it. */
bool is_hidden_ino(uint64_t ino);

/* Give the new object at FD (or DIRFD/NAME) to the requester. */
int own_new(int fd, const struct who *w, const struct node *parent);

static inline struct handle *handle_of(struct fuse_file_info *fi)
{
	return (struct handle *)(uintptr_t)fi->fh;
}

/* Fill an entry reply for N with attributes ST and what the kernel may
 * cache of them. */
double attr_timeout(struct node *n);
void fill_entry(struct fuse_entry_param *e, struct node *n, const struct stat *st);

/* client.c: the private view of a client session (R1, R2, R4, R7, R8). */
void client_lookup(fuse_req_t req, struct who *w, struct node *parent, const char *name);
/* The entry a client sees for NAME in DIR, with a lookup reference taken. */
int client_entry(struct who *w, struct node *dir, const char *name, struct fuse_entry_param *e);
void client_create(fuse_req_t req, struct who *w, struct node *parent, const char *name,
		   mode_t mode, struct fuse_file_info *fi);
void client_mknod(fuse_req_t req, struct who *w, struct node *parent, const char *name,
		  mode_t mode);
void client_open(fuse_req_t req, struct who *w, struct node *n, struct fuse_file_info *fi);
void client_unlink(fuse_req_t req, struct who *w, struct node *parent, const char *name);
void client_rename(fuse_req_t req, struct who *w, struct node *parent, const char *name,
		   struct node *newparent, const char *newname, unsigned flags);
/* May client W touch node N at all (a directory, or its own open drop)? */
bool client_may_use(const struct who *w, const struct node *n);
/* A client's directory listing, taken at opendir: the subdirectories
 * everyone sees and the session's own open drops there. */
struct snapent {
	char *name;
	ino_t ino;
	unsigned char type;	/* DT_* */
};
struct dirsnap {
	size_t n, cap;
	struct snapent *e;
};
void dirsnap_free(struct dirsnap *snap);
int client_snapshot(struct who *w, struct node *dir, struct dirsnap **out);

/* Does a failed write or size change with this errno leave the file other
 * than its writer meant it (a drop that is then never delivered)? */
static inline bool loses_data(int err)
{
	return err == ENOSPC || err == EDQUOT || err == EIO || err == EFBIG;
}

/* May client W use the open file FI (a handle of its own drop)? */
bool client_holds(const struct who *w, struct fuse_file_info *fi);

/* drops.c: what a drop's lifecycle decides, carried out. */
int drop_carry_out(struct drop *d, enum drop_action act, int fd);	/* the close's answer */
/* A close (FLUSH) of H by thread TID; by the daemon for session S. */
int drop_handle_flush(struct handle *h, pid_t tid);
int drop_handle_close(struct handle *h, struct session *s);
void drop_handle_release(struct handle *h);	/* frees H */
void drop_handle_abandon(struct handle *h);	/* a handle the kernel did not take */
void drop_node_free(struct drop *d);		/* drop_config.on_free */

extern const struct fuse_lowlevel_ops inboxfs_ops;

/* files.c */
void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
	       struct fuse_file_info *fi);
void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off,
		  struct fuse_file_info *fi);
void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
		  struct fuse_file_info *fi);
void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi);

/* dirs.c */
void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi);
void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void op_statfs(fuse_req_t req, fuse_ino_t ino);
void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		 size_t size, int flags);
void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);

/* statsfile.c: the counters as a read-only file at the root, observers only. */
#define STATS_FILE ".inboxfs-stats"

/* How far the kernel reads ahead (op_init(), and the mount's bdi). */
#define READAHEAD_BYTES (1024 * 1024)
#define STATS_INO ((uint64_t)-2)	/* beyond any backing inode number */
void statsfile_init(void);
struct node *statsfile_node(void);
bool statsfile_is(const struct node *n);
void statsfile_attr(struct stat *st);
int statsfile_open(struct fuse_file_info *fi);
void statsfile_read(fuse_req_t req, size_t size, off_t off);

/* drops.c: closed drops kept visible to their session (linger=). */
int linger_start(void);
void linger_stop(void);
uint64_t now_ms(void);

#endif
