/* fs/client.c: a client session's private view. */
#ifndef INBOXFS_CLIENT_H
#define INBOXFS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <fuse_lowlevel.h>

#include "inode.h"
#include "request.h"

void client_lookup(fuse_req_t req, struct who *w, struct node *parent, const char *name);
/* The entry a client sees for NAME in DIR, with a lookup reference taken. */
int client_entry(struct who *w, struct node *dir, const char *name, struct fuse_entry_param *e);
void client_create(fuse_req_t req, struct who *w, struct node *parent, const char *name,
		   mode_t mode, struct fuse_file_info *fi);
void client_mknod(fuse_req_t req, struct who *w, struct node *parent, const char *name,
		  mode_t mode);
void client_open(fuse_req_t req, struct who *w, struct node *n, struct fuse_file_info *fi);
/* An unlink or (FLAGS AT_REMOVEDIR) an rmdir. */
void client_remove(fuse_req_t req, struct who *w, struct node *parent, const char *name,
		   int flags);
void client_rename(fuse_req_t req, struct who *w, struct node *parent, const char *name,
		   struct node *newparent, const char *newname, unsigned flags);
/* May client W touch node N at all (a directory, or its own open drop)? */
bool client_may_use(const struct who *w, const struct node *n);
/* May client W use the open file FI (a handle of its own drop)? */
bool client_holds(const struct who *w, struct fuse_file_info *fi);
/* May W (an observer, or a client) act on N: 0 or -ENOENT. */
int may_use(const struct who *w, const struct node *n);
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

#endif
