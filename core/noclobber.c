/* R3's decisions for observers (noclobber.h). */
#include "noclobber.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>

enum open_plan noclobber_open(int flags, const struct stat *st)
{
	if ((flags & O_TRUNC) && S_ISREG(st->st_mode) && st->st_size > 0)
		return OPEN_BESIDE;
	return OPEN_AS_ASKED;
}

int noclobber_rename(unsigned flags, const struct stat *src, const struct stat *dst,
		     enum rename_plan *out)
{
	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) ||
	    (flags & RENAME_NOREPLACE && flags & RENAME_EXCHANGE))
		return -EINVAL;
	if (flags & RENAME_EXCHANGE) {
		*out = RENAME_AS_EXCHANGE;
	} else if (flags & RENAME_NOREPLACE) {
		*out = RENAME_AS_NOREPLACE;
	} else if (S_ISDIR(src->st_mode)) {
		/* No path silently starts to mean another directory, and the
		 * kernel's cached entries stay true. */
		if (dst == NULL)
			*out = RENAME_AS_NOREPLACE;
		else if (!S_ISDIR(dst->st_mode))
			return -ENOTDIR;
		else
			*out = RENAME_ONTO_DIR;
	} else {
		*out = RENAME_TO_UNIQUE;
	}
	return 0;
}
