/* fs/observer.c: the observers' view. */
#ifndef INBOXFS_OBSERVER_H
#define INBOXFS_OBSERVER_H

#include <sys/types.h>

#include <fuse_lowlevel.h>

#include "inode.h"
#include "request.h"

void observer_lookup(fuse_req_t req, struct node *dir, const char *name);
void observer_open(fuse_req_t req, struct who *w, struct node *n, struct fuse_file_info *fi);
void observer_create(fuse_req_t req, struct who *w, struct node *dir, const char *name,
		     mode_t mode, struct fuse_file_info *fi);
/* mknod, mkdir, symlink (LINK set) of NAME in DIR, owned by W. */
void observer_make(fuse_req_t req, struct who *w, struct node *dir, const char *name,
		   mode_t mode, dev_t rdev, const char *link);
void observer_link(fuse_req_t req, struct node *n, struct node *dir, const char *newname);
void observer_remove(fuse_req_t req, struct node *dir, const char *name, int flags);
void observer_rename(fuse_req_t req, struct who *w, struct node *dir, const char *name,
		     struct node *newdir, const char *newname, unsigned flags);

#endif
