/* The daemon's own options (-o observers=,staging=,sync=,datasync=,names=,linger=,
 * max_drops=,client_mkdir=,drain=,xattr=)
 * parsed into one config struct. */
#ifndef INBOXFS_OPTIONS_H
#define INBOXFS_OPTIONS_H

#include <stdbool.h>
#include <sys/types.h>

#include "names.h"

#define OBSERVERS_MAX 32

enum sync_mode { SYNC_CLOSE, SYNC_NONE };

struct observers {
	unsigned nuids, ngids;
	uid_t uids[OBSERVERS_MAX];
	gid_t gids[OBSERVERS_MAX];
};

struct inboxfs_config {
	struct observers observers;
	enum sync_mode sync;
	bool datasync_fsync;		/* datasync=fsync: never one commit (durable.h) */
	struct name_template names;
	unsigned linger;		/* seconds a closed drop stays visible */
	unsigned max_drops;		/* open drops per session, 0: no cap */
	bool client_mkdir;		/* clients may create directories (R7) */
	unsigned drain;			/* seconds open drops get at a stop, 0: none */
	bool xattr;			/* extended attributes served (no: ENOSYS) */
};

/* Parse "root:consumer:@staff:@1001": users or uids, '@' marks a group or
 * gid. 0, or -EINVAL with *bad pointing at the offending entry's text. */
int observers_parse(const char *spec, struct observers *out, char *bad, size_t badsize);

bool observers_match(const struct observers *o, uid_t uid, gid_t gid,
		     const gid_t *groups, int ngroups);

/* True when an observer could match through supplementary groups only. */
bool observers_need_groups(const struct observers *o);

int sync_mode_parse(const char *spec, enum sync_mode *out);

/* datasync=auto|fsync: *FSYNC_ONLY is true for fsync. */
int datasync_parse(const char *spec, bool *fsync_only);

/* Parse "yes" or "no". */
int yes_no_parse(const char *spec, bool *out);

/* Parse a whole number of seconds, 0..86400. */
int seconds_parse(const char *spec, unsigned *out);

/* drain=: whole seconds, 0..DRAIN_MAX. A stop is waited for (systemd's
 * TimeoutStopSec= must be longer): one that takes over an hour is none. */
#define DRAIN_DEFAULT 10
#define DRAIN_MAX 3600
int drain_parse(const char *spec, unsigned *out);

/* Parse a whole number, 0..1000000. */
int count_parse(const char *spec, unsigned *out);

/* Check the shape of one -o list: comma-separated items, none empty, no
 * white space. An empty or spaced INBOXFS_OPTIONS reaches the daemon as
 * such a list (the unit passes it as one argument), and libfuse would
 * answer it with "unknown option(s)" naming nothing the administrator
 * wrote. 0, or -EINVAL with the reason in why (cut to whysize). */
int option_list_check(const char *list, char *why, size_t whysize);

#endif
