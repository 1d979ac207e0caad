/* Staging and publication of client drops (R4, R5, R13): a drop is written
 * in this instance's staging area and moved into the inbox, never
 * overwriting, once its writer has closed it.
 *
 * Layout of the staging directory (default INBOX/.inboxfs), shared by every
 * instance serving the inbox, on one host or on several over a cluster
 * filesystem:
 *
 *   HOST.PID.RANDOM/     one area per running instance (RANDOM: 8 hex)
 *       lock             locked (OFD fcntl lock) for as long as it runs
 *       d.TAG, a.TAG     its drops: being written / acknowledged (R6)
 *   incomplete/          drops that are never to be delivered, of all
 *   names                the names= template of the instance started last
 *                        (inboxfs-quarantine names drops as it would)
 *   lock                 taken while the old layout's files are recovered
 *   d.TAG, a.TAG         drops of a version before areas (recovered)
 *   .new.*               an area being made (renamed once locked)
 */
#ifndef INBOXFS_STAGING_H
#define INBOXFS_STAGING_H

#include <stdbool.h>
#include <sys/types.h>

#include "dirsync.h"
#include "durable.h"
#include "names.h"

#define STAGING_DIR ".inboxfs"
#define INCOMPLETE_DIR "incomplete"
#define LOCK_FILE "lock"
#define NAMES_FILE "names"
#define STAGE_NAME_MAX 40
#define AREA_NAME_MAX 96

struct staging {
	int rootfd;		/* the staging directory, shared by all instances */
	int dirfd;		/* this instance's area in it: drops are staged here */
	int lockfd;		/* AREA/lock, locked while this instance runs */
	int incomplete_fd;	/* STAGING/incomplete, where unfinished drops go */
	char area[AREA_NAME_MAX];	/* the area's name in the staging directory */
	/* renameat2(RENAME_NOREPLACE) works on this filesystem (probed at
	 * start); else publication is link() then unlink(). */
	bool noreplace;
	bool sync;		/* fsync data and directories (sync=close) */
	/* A directory's fsync syncs nothing here (GlusterFS, detected at
	 * start: fstype.h): with sync=close only files are synced. */
	bool dirsync_noop;
	/* datasync=fsync: never one commit. Else staging_open() probes
	 * the filesystem (durable.h) and sets durable. */
	bool force_fsync;
	enum durable_path durable;	/* how stage_sync_data() and publication sync */
	struct dirsync dirsync;	/* concurrent publications share syncs */
	const struct name_template *names;
	const char *reserved;	/* a name never published at the inbox's top */
	ino_t top_ino;		/* the inbox's top directory */
};

/* Open (creating) the staging directory at DIRFD/PATH, check it is on the
 * filesystem of INBOX_FD (-EXDEV if it is not), make this instance's area
 * in it and lock it, and probe how to publish. staging_close() removes the
 * area if it is empty, and unlocks it. */
int staging_open(struct staging *st, int inbox_fd, int dirfd, const char *path);
void staging_close(struct staging *st);

/* The names= template recorded in staging directory ROOTFD (NAMES_FILE):
 * 0, -ENOENT when none is (an instance of a version before it), -EINVAL
 * when what is recorded is no template. staging_open() records ST->names. */
int staging_names(int rootfd, struct name_template *t);

/* Create a new staged file owned by UID:GID, open read-write. */
int stage_create(struct staging *st, mode_t mode, uid_t uid, gid_t gid,
		 char name[STAGE_NAME_MAX], int *fd);

/* With sync=close, make staged file FD's data ready to be published or
 * acknowledged: fsync() it, or on the one-commit path (durable.h) write it
 * out and wait for its writeback, leaving the commit to the directory's
 * sync that follows the rename. 0 or -errno: a failure fails the close.
 * Called after the data is written and before the rename; anything that
 * decides whether to publish (is the answer still reachable?) goes
 * between the two. */
int stage_sync_data(struct staging *st, int fd);

/* Move staged NAME into DIRFD under REQUESTED, or a unique name if that is
 * taken at this moment; FINAL gets the name used. Returns 0, 1 when
 * renamed to a unique name, or -errno (the staged file stays). */
int publish_drop(struct staging *st, const char *name, int dirfd,
		 const char *requested, char *final);

/* Where a drop went: the directory it was dropped in, or the inbox's top
 * because that directory is gone or no longer inside the inbox (moved out
 * on the same filesystem: its descriptor and file handle still open it). */
enum delivery {
	DELIVERED_ASKED,
	DELIVERED_TOP_GONE,
	DELIVERED_TOP_OUTSIDE,
};
/* The daemon's, recovery's and inboxfs-quarantine's one delivery of a
 * staged drop, and the one rule for where it goes: publish staged NAME
 * (in directory SRCFD; FD: the file's descriptor, or -1) into DIRFD if
 * that is inside the inbox INBOX_FD,
 * else at the inbox's top (its directory removed, or moved out of the
 * inbox, while it waited). The message keeps its origin attribute (nothing
 * reads it outside staging). DIRFD < 0 is the -errno of opening it:
 * -ENOENT and -ESTALE mean gone, any other fails. Returns what
 * publish_drop() returns; *WHERE says where (the caller's log line says
 * why with delivery_why()). */
int publish_inside(struct staging *st, int srcfd, const char *name, int fd, int inbox_fd,
		   int dirfd, const char *requested, char *final, enum delivery *where);
/* "is gone", "is not in the inbox" or "" for a log line. */
const char *delivery_why(enum delivery where);

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
/* A descriptor of O's directory, opened by its handle (CAP_DAC_READ_SEARCH)
 * relative to INBOX_FD's filesystem, or -errno: -ESTALE when it cannot be
 * found (removed, or the handle is not one), else a passing failure
 * (-EMFILE, -ENOMEM, -EIO) after which to try again. Whether it is still
 * inside the inbox is publish_inside()'s to check. */
int origin_open_dir(int inbox_fd, const struct origin *o);

/* A staged file is "d.*" while being written and "a.*" once its writer's
 * close was acknowledged without it being published yet (a lingering
 * drop). Recovery delivers a.* and quarantines d.*. This renames d.* to
 * a.*, updating NAME once renamed; an acknowledgement is never taken back
 * (core/drop.h). FD: the file's descriptor, or -1 (where only the file's
 * own sync makes its new name durable, GlusterFS, it is opened by name). */
int stage_ack(struct staging *st, char name[STAGE_NAME_MAX], int fd);

struct recovery {
	unsigned published, quarantined, failed;
	/* Published by link() before a crash kept it from unlinking its
	 * staged name: only that name was removed. */
	unsigned repaired;
	unsigned areas;		/* areas of instances gone, recovered */
	unsigned live;		/* areas of live instances, left alone */
};

/* R6 and R13, before serving: in every staging area whose lock can be
 * taken (its instance is gone, on whatever host) and in the old layout,
 * deliver every acknowledged drop exactly once and move every other
 * staged file to incomplete/, logging each; then remove the area. A live
 * instance's area is never touched. INBOX_FD opens the directories
 * recorded in origins (by handle). */
void recover_staging(struct staging *st, int inbox_fd, struct recovery *r);
/* The same, while serving (called every second or so, off the request
 * path): only the areas, each taken over as soon as its instance is gone
 * (its lock free), so that what a dead instance acknowledged does not wait
 * for a start. Live areas are left alone without a word above debug. Safe
 * against other instances doing the same at the same time (the area's
 * lock, then the check that its lock file is still linked). */
void recover_gone(struct staging *st, int inbox_fd, struct recovery *r);

/* Is this instance's area still its own: there, the same directory and
 * lock file, and locked by us? 0 if so; -ESTALE if not: the lock was lost
 * (a cluster filesystem's client cut off from its server for longer than
 * the server keeps a dead client's locks loses them, silently, when it
 * reconnects) and another instance may have taken the area over, or has
 * (it is gone or replaced); any other -errno when it cannot be told now
 * (the filesystem unreachable). */
int staging_still_ours(struct staging *st);

/* Strays: regular files found outside staging, in a directory that is
 * not inboxfs's (the bare mountpoint, written while inboxfs was down),
 * each acknowledged to its writer by whatever served it, so delivered as
 * recovery delivers an acknowledged drop. SRCFD/NAME is one; DIRFD the
 * inbox directory it is to go to.
 *
 * stray_check(): could it be delivered now? 0, or why not: -EINVAL not a
 * regular file (a symlink, FIFO, socket or device: never opened), -EXDEV
 * not on DIRFD's filesystem (no atomic move), -EMLINK other links (that
 * could change the message after delivery), -EBUSY open for writing (its
 * writer may still be at it), or -errno of a call that failed. Changes
 * nothing. Takes a read lease for a moment (root needs CAP_LEASE for
 * files of other owners); its break would signal SIGIO, which the caller
 * ignores while it checks or delivers. */
int stray_check(int srcfd, const char *name, int dirfd);

/* Deliver it into DIRFD under NAME, or a unique name if that is taken,
 * exactly as a drop is published (synced with sync=close, never over an
 * existing name), while a read lease keeps anyone from opening it for
 * writing. A file whose second link is in DIRFD already was delivered by
 * link() before a crash: only NAME is removed (returns 2, FINAL that
 * link's name). Returns 0, 1 when renamed to a unique name, 2, or -errno
 * as stray_check() (nothing changed). FINAL gets the name in DIRFD. */
int stray_deliver(struct staging *st, int srcfd, const char *name, int dirfd, char *final);

#endif
