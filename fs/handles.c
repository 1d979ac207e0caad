/* Open files' handles (fi->fh), within a descriptor budget (R12): the
 * daemon keeps a reserve of descriptors for its own work, so one client
 * holding many files never makes another client's close fail. */
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "fs.h"

static atomic_uint open_handles;

struct handle *handle_new(void)
{
	struct handle *h;

	if (atomic_fetch_add(&open_handles, 1) >= fs.max_handles) {
		atomic_fetch_sub(&open_handles, 1);
		return NULL;
	}
	h = calloc(1, sizeof(*h));
	if (h == NULL) {
		atomic_fetch_sub(&open_handles, 1);
		return NULL;
	}
	h->fd = -1;
	return h;
}

void handle_free(struct handle *h)
{
	if (h->fd >= 0)
		close(h->fd);
	free(h);
	atomic_fetch_sub(&open_handles, 1);
}

int handle_attach(struct fuse_file_info *fi, struct node *n, int fd)
{
	struct handle *h = handle_new();

	if (h == NULL)
		return -EMFILE;
	h->fd = fd;
	h->node = n;
	fi->fh = (uint64_t)(uintptr_t)h;
	return 0;
}
