/* Which filesystem a descriptor is on (its type as /proc/self/mountinfo
 * names it: "ext4", "xfs", "fuse.glusterfs"), and what that tells about
 * the syncs worth making there. */
#ifndef INBOXFS_FSTYPE_H
#define INBOXFS_FSTYPE_H

#include <stdbool.h>
#include <stddef.h>

#define FSTYPE_MAX 64

/* One line of mountinfo: 1 and its filesystem type in FSTYPE (SIZE bytes)
 * if it is the line of mount MNT_ID, 0 if it is another mount's, -EINVAL
 * if it is no mountinfo line. */
int mountinfo_fstype(const char *line, int mnt_id, char *fstype, size_t size);

/* The filesystem type of the mount FD is on: 0, or -errno (-ENOENT: its
 * mount is not in this process's mountinfo). */
int fd_fstype(int fd, char *fstype, size_t size);

/* Is an fsync of a directory on filesystem type FSTYPE answered without
 * syncing anything? GlusterFS's brick (storage/posix, GlusterFS 10)
 * answers FSYNCDIR with success and makes no sync: the round trip buys
 * nothing there. */
bool fstype_dirsync_noop(const char *fstype);

#endif
