/* fs/recovery.c: dead instances' staging areas: at start, then taken over while
 * serving. */
#ifndef INBOXFS_RECOVERY_H
#define INBOXFS_RECOVERY_H

#include <stdbool.h>

/* Before serving: every area whose instance is gone, and the old layout. */
void recovery_at_start(int inbox_fd);
/* While serving: a thread that takes over a dead instance's area as soon
 * as its lock is free (core's recover_gone(), every second). */
int takeover_start(int inbox_fd);
void takeover_stop(void);
/* Did the thread find this instance's own area no longer its own (and
 * stop the daemon)? */
bool takeover_lost_area(void);

#endif
