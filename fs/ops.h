/* fs/ops.c: the operations table and INIT; its handlers are nodes.c's,
 * files.c's and dirs.c's. */
#ifndef INBOXFS_OPS_H
#define INBOXFS_OPS_H

#include <fuse_lowlevel.h>

extern const struct fuse_lowlevel_ops inboxfs_ops;

#endif
