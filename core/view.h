/* Who may see and do what through the mount, decided without touching a
 * disk: a client's private view (R2), what no client may change or make
 * (R7, R8), where an observer may write beside a file (R3; the rest of R3
 * is noclobber.h), and what the kernel may cache. Each function takes the
 * facts it needs and returns 0, a plan or -errno; fs/ gathers the facts
 * (a stat, the session's drops, the request's groups) and carries the
 * answer out. Nothing here knows FUSE. */
#ifndef INBOXFS_VIEW_H
#define INBOXFS_VIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

/* ---- R2: what a client sees ---- */

/* Is an object of MODE (its type bits count) part of what every client
 * sees of the inbox: a directory, unless it is inboxfs's own (HIDDEN: its
 * staging, which no view shows)? Files are nobody else's business. */
bool view_shared(mode_t mode, bool hidden);

/* May a client see or act on an object of MODE: a shared one, or one of
 * its session's own open drops (OWN_DROP: counts only for a file)? */
bool view_client_may_use(mode_t mode, bool hidden, bool own_drop);

/* A directory whose link count NLINK shows no subdirectory but the
 * HIDDEN_SUBDIRS ones no view lists: a client's listing of it need not
 * read it (a million files, no subdirectory). The count is 2 plus the
 * subdirectories on ext4, XFS and tmpfs; 1 where not counted (btrfs, ext4
 * past 65,000), which says nothing. */
bool view_no_visible_subdirs(nlink_t nlink, unsigned hidden_subdirs);

/* A client's open of an object of MODE: 0 (open its own drop), -EISDIR
 * (a directory it sees) or -ENOENT. */
int view_client_open(mode_t mode, bool hidden, bool own_drop);

/* R1 and R2: a client's create with FLAGS (open(2)'s) of a name in a
 * directory (DIR_VISIBLE: one it sees) that its session holds open already
 * (HELD) or not. Whatever others hold, the name is free for it. */
enum create_plan {
	CREATE_NEW_DROP,	/* a new drop under that name */
	CREATE_OPEN_HELD,	/* another handle on the drop it holds */
};
int view_client_create(int flags, bool dir_visible, bool held, enum create_plan *out);

/* R7: a client's unlink (RMDIR false) or rmdir of a name in a directory
 * (DIR_VISIBLE: one it sees). 0: unlink the name if it is one of its own
 * open drops (a delete-on-close: never published), else ENOENT. */
int view_client_remove(bool rmdir, bool dir_visible);

/* R2, R7: a client's rename with FLAGS (renameat2(2)'s) of a name in one
 * directory to a name in another (DIRS_VISIBLE: it sees both). OWN_DROP:
 * the name is one of its open drops; SRC_IS_DIR (counts only when it is
 * not): the name is a directory; DST_IS_DIR (counts only when it is): the
 * new name is a directory, which is never a target. 0: rename the drop. */
int view_client_rename(unsigned flags, bool dirs_visible, bool own_drop, bool src_is_dir,
		       bool dst_is_dir);

/* ---- R7, R8: what a client may make or change ---- */

/* A client's mknod or mkdir of MODE, a symbolic or a hard link (LINK), in
 * a directory (DIR_VISIBLE: one it sees). A regular file is a drop; a
 * directory is made as an observer's would be only where the administrator
 * allows it (CLIENT_MKDIR) and never over a name inboxfs keeps (RESERVED):
 * a client's directory makes every other client's create of that name
 * fail. Anything else: -EPERM. */
enum make_plan {
	MAKE_DROP,		/* a drop, closed (so delivered) at once */
	MAKE_DIR,		/* a directory of the shared view */
};
int view_client_make(mode_t mode, bool link, bool dir_visible, bool client_mkdir, bool reserved,
		     enum make_plan *out);

/* Is NAME, in the inbox's top directory (AT_TOP), one of inboxfs's own
 * (the default staging directory, the stats file)? */
bool view_reserved_name(bool at_top, const char *name);

/* R7: may a requester change a directory's attributes? Directories belong
 * to the inbox's owner; a client that could chmod one could make every
 * other client's create there fail. smbd switches to root for some changes
 * it makes on its user's behalf ("dos filetimes": the times of anything the
 * user may write), so a request from an SMB server process (SMB_SERVER) is
 * a client's whatever uid it runs as. */
bool view_may_change_dir(bool observer, bool smb_server);

/* A setattr (chmod, chown, truncate, utimens) of an object of MODE. The
 * stats file and, without MAY_CHANGE_DIR, a directory: -EPERM. An
 * observer's truncate(2) or ftruncate(2) of a message happens in place: it
 * is an explicit request, as an unlink is, not a create or an open that
 * would clobber by the way (R3). */
enum setattr_plan {
	SETATTR_AS_ASKED,	/* an observer's, or a directory's: in place */
	SETATTR_DROP,		/* a client's own drop: under its lifecycle's watch */
};
int view_setattr(bool observer, mode_t mode, bool is_stats, bool may_change_dir,
		 enum setattr_plan *out);

/* ---- extended attributes (Samba keeps DOS attributes in them) ---- */

enum xattr_op { XA_GET, XA_LIST, XA_SET, XA_REMOVE };
enum xattr_plan {
	XATTR_AS_ASKED,
	XATTR_CLIENT_LIST,	/* list, keeping what a client may see (below) */
	XATTR_EMPTY,		/* the stats file's list: nothing */
};
/* OP on an object of MODE by a caller who may list every name (ROOT: an
 * observer that is root): 0 with the plan, or -errno (the stats file has
 * none and takes none: -ENODATA, -EPERM; a directory's change without
 * MAY_CHANGE_DIR, ACLs among them: -EPERM, R7). */
int view_xattr(enum xattr_op op, bool root, mode_t mode, bool is_stats, bool may_change_dir,
	       enum xattr_plan *out);

/* A client, or an observer other than root: like ext4 for an unprivileged
 * caller, it lists no trusted.* names (inboxfs keeps a drop's origin in
 * one, which a published message keeps), whose values the kernel refuses
 * it anyway (so cp -a through the mount finds none it cannot read). Copies the names
 * of ALL (LEN bytes, as listxattr(2) fills them) a client may see into OUT
 * (SIZE bytes; SIZE 0: none copied, only the length). Returns their length,
 * or -ERANGE when they do not fit in SIZE. */
ssize_t view_client_xattrs(const char *all, size_t len, char *out, size_t size);

/* What a getxattr of NAME that got RET (0 or more, or -errno) answers. ls
 * -l asks every file for its SELinux label and its ACL, costing a LOOKUP
 * and a GETXATTR each, unless the filesystem says it supports neither:
 * then it stops asking. So where the backing file has none of those, say
 * so (-EOPNOTSUPP); one set through the mount still reads back, getfacl and
 * Samba make an ACL of the mode bits as they do without ACL support, and
 * the kernel enforces no ACL through a FUSE mount that did not ask for them
 * anyway. (SELinux labels a FUSE mount by its mount context.) */
long view_getxattr_result(const char *name, long ret);

/* ---- what a client learns of the filesystem ---- */

/* A client learns no file count (df -i shows none, as on btrfs), and free
 * space only in whole MiB: enough for a client that checks for room before
 * it copies, too coarse to count others' messages. Rounds SV down. */
#define VIEW_SPACE_GRAIN (1024 * 1024)
void view_client_statfs(struct statvfs *sv);

/* ---- R3: where an observer may write beside a file ---- */

/* Is GID the requester's group PRIMARY or one of its GROUPS (N of them)? */
bool view_in_group(gid_t gid, gid_t primary, const gid_t *groups, size_t n);

/* The file written beside another is created only where the observer
 * (UID, GID, GROUPS) could create one itself: write and search permission
 * on the directory DIR, judged from its mode bits as the kernel checks them
 * through this mount (default_permissions, and no ACLs: inboxfs does not
 * ask for FUSE_POSIX_ACL). Uid 0 may, as with CAP_DAC_OVERRIDE. 0 or
 * -EACCES. */
int view_may_create_in(const struct stat *dir, uid_t uid, gid_t gid, const gid_t *groups,
		       size_t n);

/* ---- what the kernel may cache (every round trip counts) ---- */

/* A file's name differs per view (a client sees only its own drops, under
 * the names it asked for), so no file's entry is cached: the dentry cache
 * is one for all processes. An inode looks the same to everyone who can
 * reach it, so attributes are cached for a second, like directories'
 * entries; changes made through the mount update them at once, changes made
 * behind it are seen within the second. The stats file changes with every
 * read. In seconds. */
#define VIEW_SHARED_TIMEOUT 1.0
double view_attr_timeout(bool is_stats);
double view_entry_timeout(mode_t mode);

#endif
