/* fs/request.c: request helpers: who is asking, entry replies and what the
 * kernel may cache, new objects given to their requester. */
#ifndef INBOXFS_REQUEST_H
#define INBOXFS_REQUEST_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <fuse_lowlevel.h>

#include "inode.h"

struct session;

/* Who sent a request: an observer, or a client with its session. */
struct who {
	bool observer;
	uid_t uid;
	gid_t gid;
	pid_t pid;
	struct session *s;
};

/* 0 or -errno, which the handler replies. who_put() puts what who_get()
 * took: nothing after it failed, nor on a W of WHO_NONE. */
#define WHO_NONE { .s = NULL }
int who_get(fuse_req_t req, struct who *w);
void who_put(struct who *w);

/* May W change a directory's attributes (R7, core/view.h)? */
bool may_change_dir(const struct who *w);
/* True if INO is inboxfs's own (its staging) and no view shows it. */
bool is_hidden_ino(uint64_t ino);
/* Give the new object at FD to the requester. */
int own_new(int fd, const struct who *w, const struct node *parent);
/* Fill an entry reply for N with attributes ST and what the kernel may
 * cache of them (core/view.h). */
double attr_timeout(struct node *n);
void fill_entry(struct fuse_entry_param *e, struct node *n, const struct stat *st);

/* Does a failed write or size change with this errno leave the file other
 * than its writer meant it (a drop that is then never delivered)? */
static inline bool loses_data(int err)
{
	return err == ENOSPC || err == EDQUOT || err == EIO || err == EFBIG;
}

#endif
