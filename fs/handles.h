/* fs/handles.c: open files' handles (fi->fh), within the descriptor budget (R12). */
#ifndef INBOXFS_HANDLES_H
#define INBOXFS_HANDLES_H

#include <stdint.h>

#include <fuse_lowlevel.h>

#include "drop.h"
#include "inode.h"

/* An open file: fi->fh points to one. */
struct handle {
	int fd;
	struct node *node;
	struct drop_handle drop;	/* .d set on a client's drop */
	struct session *budget;		/* counted against (NULL: an observer) */
	struct handle *prev, *next;	/* handles.c's list of them all */
};

static inline struct handle *handle_of(struct fuse_file_info *fi)
{
	return (struct handle *)(uintptr_t)fi->fh;
}

/* A new handle within the descriptor budget, counted against session S
 * (NULL: an observer's); NULL past it (EMFILE). */
struct handle *handle_new(struct session *s);
void handle_free(struct handle *h);	/* closes its fd */
/* A new observer's handle of N with descriptor FD, as FI's: 0 or -EMFILE. */
int handle_attach(struct fuse_file_info *fi, struct node *n, int fd);
/* Unmounted: let go of the handles whose RELEASE never came, each by
 * RELEASE (drops.c's release_handle(), which frees it). */
void handles_shutdown(void (*release)(struct handle *h));

#endif
