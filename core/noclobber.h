/* R3 for observers, decided without touching a disk: what a truncating
 * open or a rename does when it would clobber an existing file. Nothing
 * is ever overwritten or truncated through the mount; only an explicit
 * unlink removes a message. Directories are not messages: a rename of one
 * follows POSIX. fs/observer.c carries out the plan. */
#ifndef INBOXFS_NOCLOBBER_H
#define INBOXFS_NOCLOBBER_H

#include <stdbool.h>
#include <sys/stat.h>

/* An observer's open with FLAGS (open(2)'s) of the existing file ST. */
enum open_plan {
	OPEN_AS_ASKED,		/* nothing to lose: truncating it is a no-op */
	OPEN_BESIDE,		/* the new data goes to a unique name beside it */
};
enum open_plan noclobber_open(int flags, const struct stat *st);

/* An observer's rename with FLAGS (renameat2(2)'s) of SRC onto a name that
 * holds DST (NULL: free when looked at). */
enum rename_plan {
	RENAME_AS_NOREPLACE,	/* renameat2(RENAME_NOREPLACE): EEXIST if taken */
	RENAME_AS_EXCHANGE,	/* both names stay, swapped */
	RENAME_ONTO_DIR,	/* a directory onto a directory: POSIX (ENOTEMPTY) */
	RENAME_TO_UNIQUE,	/* the name if free, else a unique one beside it */
};
/* 0 with the plan in *OUT, or -errno (a directory onto a non-directory:
 * -ENOTDIR; flags it does not know: -EINVAL). */
int noclobber_rename(unsigned flags, const struct stat *src, const struct stat *dst,
		     enum rename_plan *out);

#endif
