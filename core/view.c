/* The views' decisions: R2, R7, R8 and R3's permission (view.h). */
#include "view.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "staging.h"
#include "stats.h"

bool view_shared(mode_t mode, bool hidden)
{
	return S_ISDIR(mode) && !hidden;
}

bool view_client_may_use(mode_t mode, bool hidden, bool own_drop)
{
	if (S_ISDIR(mode))
		return view_shared(mode, hidden);
	return own_drop;
}

bool view_no_visible_subdirs(nlink_t nlink, unsigned hidden_subdirs)
{
	return nlink >= 2 && nlink == 2 + (nlink_t)hidden_subdirs;
}

int view_client_open(mode_t mode, bool hidden, bool own_drop)
{
	if (S_ISDIR(mode))
		return view_shared(mode, hidden) ? -EISDIR : -ENOENT;
	return own_drop ? 0 : -ENOENT;
}

int view_client_create(int flags, bool dir_visible, bool held, enum create_plan *out)
{
	if (!dir_visible)
		return -ENOENT;
	if (!held) {
		*out = CREATE_NEW_DROP;
		return 0;
	}
	/* The session holds this name open already (the kernel's lookup
	 * raced with it): create-new fails, a plain create opens it. */
	if (flags & O_EXCL)
		return -EEXIST;
	*out = CREATE_OPEN_HELD;
	return 0;
}

int view_client_remove(bool rmdir, bool dir_visible)
{
	if (!dir_visible)
		return -ENOENT;
	return rmdir ? -EPERM : 0;
}

int view_client_rename(unsigned flags, bool dirs_visible, bool own_drop, bool src_is_dir,
		       bool dst_is_dir)
{
	if (!dirs_visible)
		return -ENOENT;
	if (flags & RENAME_EXCHANGE)
		return -EPERM;
	/* Renaming a directory is refused, not "not found". */
	if (!own_drop)
		return src_is_dir ? -EPERM : -ENOENT;
	return dst_is_dir ? -EEXIST : 0;
}

int view_client_make(mode_t mode, bool link, bool dir_visible, bool client_mkdir, bool reserved,
		     enum make_plan *out)
{
	if (link)
		return -EPERM;
	if (S_ISDIR(mode)) {
		if (!dir_visible || !client_mkdir || reserved)
			return -EPERM;
		*out = MAKE_DIR;
		return 0;
	}
	if (!S_ISREG(mode))
		return -EPERM;
	if (!dir_visible)
		return -ENOENT;
	*out = MAKE_DROP;
	return 0;
}

bool view_reserved_name(bool at_top, const char *name)
{
	return at_top && (strcmp(name, STAGING_DIR) == 0 || strcmp(name, STATS_FILE) == 0);
}

bool view_may_change_dir(bool observer, bool smb_server)
{
	return observer && !smb_server;
}

int view_setattr(bool observer, mode_t mode, bool is_stats, bool may_change_dir,
		 enum setattr_plan *out)
{
	if (is_stats || (S_ISDIR(mode) && !may_change_dir))
		return -EPERM;
	*out = observer || S_ISDIR(mode) ? SETATTR_AS_ASKED : SETATTR_DROP;
	return 0;
}

int view_xattr(enum xattr_op op, bool root, mode_t mode, bool is_stats, bool may_change_dir,
	       enum xattr_plan *out)
{
	bool change = op == XA_SET || op == XA_REMOVE;

	if (is_stats) {
		if (change)
			return -EPERM;
		if (op == XA_GET)
			return -ENODATA;
		*out = XATTR_EMPTY;
		return 0;
	}
	if (S_ISDIR(mode) && change && !may_change_dir)
		return -EPERM;
	*out = op == XA_LIST && !root ? XATTR_CLIENT_LIST : XATTR_AS_ASKED;
	return 0;
}

ssize_t view_client_xattrs(const char *all, size_t len, char *out, size_t size)
{
	size_t kept = 0;

	for (size_t i = 0; i < len; ) {
		size_t n = strnlen(all + i, len - i) + 1;

		if (i + n > len)	/* a last name without its NUL: not a name */
			break;
		if (strncmp(all + i, "trusted.", 8) != 0) {
			if (size > 0 && kept + n > size)
				return -ERANGE;
			if (size > 0)
				memcpy(out + kept, all + i, n);
			kept += n;
		}
		i += n;
	}
	return (ssize_t)kept;
}

/* Attributes that tools ask of every file, and stop asking of a filesystem
 * once it says it does not support them. */
static bool asked_of_every_file(const char *name)
{
	return strcmp(name, "security.selinux") == 0 ||
	       strcmp(name, "system.posix_acl_access") == 0 ||
	       strcmp(name, "system.posix_acl_default") == 0;
}

long view_getxattr_result(const char *name, long ret)
{
	return ret == -ENODATA && asked_of_every_file(name) ? -EOPNOTSUPP : ret;
}

void view_client_statfs(struct statvfs *sv)
{
	fsblkcnt_t grain = sv->f_frsize && sv->f_frsize < VIEW_SPACE_GRAIN ?
			   VIEW_SPACE_GRAIN / sv->f_frsize : 1;

	sv->f_files = sv->f_ffree = sv->f_favail = 0;
	sv->f_bfree -= sv->f_bfree % grain;
	sv->f_bavail -= sv->f_bavail % grain;
}

bool view_in_group(gid_t gid, gid_t primary, const gid_t *groups, size_t n)
{
	if (gid == primary)
		return true;
	for (size_t i = 0; i < n; i++)
		if (groups[i] == gid)
			return true;
	return false;
}

int view_may_create_in(const struct stat *dir, uid_t uid, gid_t gid, const gid_t *groups,
		       size_t n)
{
	mode_t bits;

	if (uid == 0)
		return 0;
	if (dir->st_uid == uid)
		bits = dir->st_mode >> 6;
	else if (view_in_group(dir->st_gid, gid, groups, n))
		bits = dir->st_mode >> 3;
	else
		bits = dir->st_mode;
	return (bits & 3) == 3 ? 0 : -EACCES;
}

double view_attr_timeout(bool is_stats)
{
	return is_stats ? 0 : VIEW_SHARED_TIMEOUT;
}

double view_entry_timeout(mode_t mode)
{
	return S_ISDIR(mode) ? VIEW_SHARED_TIMEOUT : 0;
}
