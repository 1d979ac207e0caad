/* Staging and publication of client drops (R4, R5): a drop is written in
 * the staging directory and renamed into the inbox, never overwriting, once
 * its writer has closed it. */
#ifndef INBOXFS_STAGING_H
#define INBOXFS_STAGING_H

#include <stdbool.h>
#include <sys/types.h>

#include "names.h"

#define STAGING_DIR ".inboxfs"
#define INCOMPLETE_DIR "incomplete"
#define STAGE_NAME_MAX 40

struct staging {
	int dirfd;		/* the staging directory */
	int incomplete_fd;	/* STAGING/incomplete, where unfinished drops go */
	bool sync;		/* fsync data and directories (sync=close) */
	const struct name_template *names;
	const char *reserved;	/* a name never published at the inbox's top */
	ino_t top_ino;		/* the inbox's top directory */
};

/* Open (creating) the staging directory at DIRFD/PATH, check it is on the
 * filesystem of INBOX_FD. -EXDEV if it is not. */
int staging_open(struct staging *st, int inbox_fd, int dirfd, const char *path);
void staging_close(struct staging *st);

/* Create a new staged file owned by UID:GID, open read-write. */
int stage_create(struct staging *st, mode_t mode, uid_t uid, gid_t gid,
		 char name[STAGE_NAME_MAX], int *fd);

/* Move staged NAME into DIRFD under REQUESTED, or a unique name if that is
 * taken at this moment; FINAL gets the name used. Returns 0, 1 when
 * renamed to a unique name, or -errno (the staged file stays). */
int publish_drop(struct staging *st, const char *name, int dirfd,
		 const char *requested, char *final);

/* Move staged NAME aside into incomplete/; logs WHY. */
int quarantine_drop(struct staging *st, const char *name, const char *requested,
		    const char *why);

/* Remove staged NAME (its owner deleted it). */
int discard_drop(struct staging *st, const char *name);

/* Where a drop is to be published, kept with the staged file (an xattr) so
 * that recovery can name it and deliver it. */
struct origin {
	int handle_type;		/* the directory's file handle */
	unsigned handle_bytes;
	unsigned char handle[128];
	char name[NAME_MAX_BYTES + 1];	/* the name its writer asked for */
};

int stage_set_origin(int fd, const struct origin *o);
/* Forget it again: a delivered message carries nothing of inboxfs. */
void stage_clear_origin(int fd);
int stage_get_origin(int dirfd, const char *name, struct origin *o);

/* A staged file is "d.*" while being written and "a.*" once its writer's
 * close was acknowledged without it being published yet (an empty drop
 * waits for its release). Recovery delivers a.* and quarantines d.*.
 * These rename it between the two states, updating NAME. */
int stage_ack(struct staging *st, char name[STAGE_NAME_MAX]);
int stage_unack(struct staging *st, char name[STAGE_NAME_MAX]);

struct recovery {
	unsigned published, quarantined, failed;
};

/* R6, before serving: deliver every acknowledged drop exactly once and
 * move every other staged file to incomplete/, logging each. INBOX_FD
 * opens the directories recorded in origins (by handle). */
void recover_staging(struct staging *st, int inbox_fd, struct recovery *r);

#endif
