/* fs/drops.c: what a drop's lifecycle (core/drop.h) decides, carried out:
 * closes, releases, publication, the linger thread. */
#ifndef INBOXFS_DROPS_H
#define INBOXFS_DROPS_H

#include <sys/types.h>

#include "drop.h"
#include "handles.h"

/* Carry out ACT, a decision of D's lifecycle (FD: a descriptor of its
 * staged file, or -1). The close's answer. */
int carry_out(struct drop *d, enum drop_action act, int fd);
/* A close (a FLUSH, answered by the caller with what this returns) of H
 * by thread TID, with the caller's fsuid UID (the kernel's FLUSH carries
 * it). */
int flush_drop(struct handle *h, pid_t tid, uid_t uid);
int close_drop(struct handle *h, struct session *s);	/* a mknod's close */
/* The RELEASE of any handle: a drop's carried out first. Frees H. */
void release_handle(struct handle *h);
void abandon_drop(struct handle *h);	/* a handle the kernel did not take */
void forget_drop_node(struct drop *d);	/* drop_config.on_free */
int writer_holds(pid_t pid, const struct drop *d);	/* drop_config.held_elsewhere */
/* Closed drops kept visible to their session (linger=). */
int linger_start(void);
void linger_stop(void);

#endif
