/* The inode table: what a FUSE node id stands for.
 *
 * ID spaces and conversions:
 *   FUSE node id  the address of a struct node (FUSE_ROOT_ID for INBOX
 *                 itself); node_of() and node_id() convert.
 *   backing ino   st_ino of the file in INBOX or in staging: the table's key,
 *                 and the inode number the mount reports, so it is stable,
 *                 unique, and kept by a drop from create to publication.
 *   file handle   name_to_handle_at() bytes, kept in the node: the way back
 *                 to the file without holding a descriptor per inode (R12),
 *                 and unchanged when a drop moves from staging to the inbox.
 *   session alias a client drop's node is the one its struct drop points
 *                 to (drop->node); its owner knows it by the name it
 *                 asked for, and finds it with drop_find_node().
 *
 * Locking: table_lock (inode.c) protects the hash chains, nlookup and
 * name/parent_ino. It is the last of the lock order (core/drop.c):
 * inode.c never calls out while holding it. A drop keeps its node by a
 * lookup reference (node_ref()), taken while the caller holds the drop. */
#ifndef INBOXFS_INODE_H
#define INBOXFS_INODE_H

#include <stdint.h>
#include <sys/stat.h>

#include <fuse_lowlevel.h>

struct node {
	uint64_t ino;
	uint64_t nlookup;
	mode_t type;			/* S_IFMT bits */
	uint64_t parent_ino;		/* where an observer last looked it up */
	char *name;			/* ... and under which name */
	struct node *next;		/* hash chain */
	int handle_type;
	unsigned handle_bytes;
	unsigned char handle[];
};

int inode_init(int inbox_fd);
void inode_shutdown(void);

struct node *node_of(fuse_ino_t id);
fuse_ino_t node_id(const struct node *n);
int inbox_fd(void);

/* Find or add the node of DIRFD/NAME (never following a symlink) and take
 * one lookup reference for the reply. */
int node_lookup_at(int dirfd, const char *name, struct stat *st, struct node **out);
/* The same for an open descriptor. */
int node_lookup_fd(int fd, struct stat *st, struct node **out);
/* Drop references the kernel no longer holds. */
void node_forget(struct node *n, uint64_t count);

/* Open the node's file with FLAGS (O_PATH for a reference). Returns a
 * descriptor or -errno. */
int node_open(const struct node *n, int flags);
/* Copy N's file handle out (for a drop's recorded origin). */
int node_handle(const struct node *n, int *type, unsigned *bytes, unsigned char *buf, size_t cap);
/* A directory descriptor for *at() calls; dir_put() releases it. */
int dir_get(const struct node *n);
void dir_put(const struct node *n, int fd);
int node_stat(const struct node *n, struct stat *st);

/* Take one more reference on N (a drop holds its directory). */
void node_ref(struct node *n);

/* Remember where an observer found N, for a truncating open that must
 * write beside it (R3). The directory is kept by inode number, not by
 * reference, so it may be gone later. */
void node_set_name(struct node *n, const struct node *parent, const char *name);
/* Open that directory (O_PATH) and copy the name out; -ENOENT if either is
 * not known any more. */
int node_open_parent(struct node *n, char *name, size_t size);

#endif
