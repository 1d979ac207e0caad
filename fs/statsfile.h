/* fs/statsfile.c: the counters, a read-only file at the root (observers). */
#ifndef INBOXFS_STATSFILE_H
#define INBOXFS_STATSFILE_H

#include <stdint.h>

#include <fuse_lowlevel.h>

/* Its name, STATS_FILE, is core/stats.h's: inboxfs-quarantine keeps it free too. */
#define STATS_INO ((uint64_t)-2)	/* beyond any backing inode number */
void statsfile_init(void);
/* OPS wrapped: the table to serve, which answers observers' requests
 * about the stats file and hands every other to OPS. */
const struct fuse_lowlevel_ops *statsfile_wrap(const struct fuse_lowlevel_ops *ops);

#endif
