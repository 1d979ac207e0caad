/* Open files' handles (fi->fh), within the descriptor budget (R12,
 * core/sessions.h): each is counted against the session it is held for,
 * and the daemon keeps a reserve of descriptors for its own work, so no
 * client holding many files makes another client's close fail. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "handles.h"
#include "inode.h"
#include "sessions.h"
#include "transport/transport.h"

/* Every handle, so that those whose RELEASE never came (the kernel may
 * unmount with releases still queued) are let go at shutdown. */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;	/* a leaf */
static struct handle *open_list;	/* [open_lock] */

struct handle *handle_new(struct session *s)
{
	struct handle *h;

	if (session_fd_take(s) < 0)
		return NULL;
	h = calloc(1, sizeof(*h));
	if (h == NULL) {
		session_fd_give(s);
		return NULL;
	}
	h->fd = -1;
	if (s)
		session_ref(s);
	h->budget = s;
	pthread_mutex_lock(&open_lock);
	h->next = open_list;
	if (open_list)
		open_list->prev = h;
	open_list = h;
	pthread_mutex_unlock(&open_lock);
	return h;
}

void handle_free(struct handle *h)
{
	passthrough_forget(h);
	pthread_mutex_lock(&open_lock);
	if (h->prev)
		h->prev->next = h->next;
	else
		open_list = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&open_lock);
	if (h->fd >= 0)
		close(h->fd);
	session_fd_give(h->budget);
	if (h->budget)
		session_put(h->budget);
	free(h);
}

int handle_attach(struct fuse_file_info *fi, struct node *n, int fd)
{
	struct handle *h = handle_new(NULL);

	if (h == NULL)
		return -EMFILE;
	h->fd = fd;
	h->node = n;
	fi->fh = (uint64_t)(uintptr_t)h;
	return 0;
}

void handles_shutdown(void (*release)(struct handle *h))
{
	struct handle *h;

	for (;;) {
		pthread_mutex_lock(&open_lock);
		h = open_list;
		pthread_mutex_unlock(&open_lock);
		if (h == NULL)
			break;
		release(h);
	}
}
