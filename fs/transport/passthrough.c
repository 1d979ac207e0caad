/* FUSE passthrough for observers' opens of inbox files (-o passthrough=yes):
 * the kernel reads and writes the backing file itself, without a request,
 * at the backing filesystem's speed. Never for client drops (a drop's
 * writes must reach the daemon, or a failed one could not fail the drop,
 * R4-R6), nor for the redirected opens of R3 (their data goes to another
 * file than the inode's).
 *
 * Protocol facts relied on (include/uapi/linux/fuse.h 7.40, kernel 6.9 and
 * later: fs/fuse/passthrough.c, backing.c, iomode.c; fuse_wire.h):
 * - FUSE_PASSTHROUGH in the INIT reply with max_stack_depth (what libfuse
 *   3.14 calls unused[0]) of 1 or 2, no writeback cache: passthrough on.
 * - FUSE_DEV_IOC_BACKING_OPEN on /dev/fuse (CAP_SYS_ADMIN) registers an
 *   open file and returns a backing id > 0; FUSE_DEV_IOC_BACKING_CLOSE
 *   unregisters it (files opened with it keep their reference).
 * - An OPEN reply with FOPEN_PASSTHROUGH in open_flags and the id in
 *   fuse_open_out's last field (3.14: padding) opens passthrough; any
 *   other open flag but FOPEN_DIRECT_IO, FOPEN_PARALLEL_DIRECT_WRITES and
 *   FOPEN_NOFLUSH makes the open fail (EIO).
 * - Per kernel inode, either every open is passthrough, all with the same
 *   backing (the same id while it is open), or none is: an open of the
 *   other kind, or with another backing, fails with EIO. The daemon
 *   therefore counts, per node, the observers' open handles of each kind
 *   and decides each open under one lock: passthrough where none of the
 *   other kind is open. It hears of a close at RELEASE, after the kernel
 *   forgot the open: its counts can only be too high, which is safe, but
 *   for a redirected open, which waits a while for a passthrough open to
 *   be released (its caller may have closed it just before).
 * - Passthrough I/O runs with the credentials of the thread that
 *   registered the backing file (fuse_backing_open(): prepare_creds()),
 *   for every open of the inode that uses it, whoever opened it. The
 *   daemon's (root, CAP_FSETID) would keep set-ID bits through any
 *   write, also those set after the open (an observer's write left a
 *   file 06777, which then ran as root). So the registering thread drops
 *   CAP_FSETID for the ioctl: the backing filesystem clears set-ID bits
 *   on every write through passthrough, root's too, as it does for a
 *   local writer without CAP_FSETID. Any observer's open may then be
 *   passthrough, whatever its mode and uid.
 *
 * Delete with transport.c once the platform's libfuse has passthrough
 * (3.16). */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "inode.h"
#include "internal.h"
#include "log.h"
#include "transport.h"

struct wire_backing_map {	/* fuse_backing_map */
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};
#define WIRE_DEV_IOC_BACKING_OPEN _IOW(229, 1, struct wire_backing_map)
#define WIRE_DEV_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)

/* A node with observers' handles open; and a handle with its node. */
struct pt_node {
	const struct node *n;
	unsigned passthrough, other;	/* open handles of each kind */
	int backing_id;			/* while passthrough > 0 */
	struct pt_node *next;
};
struct pt_handle {
	const struct handle *h;
	struct pt_node *pn;
	bool passthrough;
	struct pt_handle *next;
};

#define BUCKETS 1024
static struct {
	/* A leaf, held across a backing file's open and registration, which
	 * must be one step with the decision. */
	pthread_mutex_t lock;
	pthread_cond_t released;	/* a node's last passthrough handle */
	struct pt_node *nodes[BUCKETS];
	struct pt_handle *handles[BUCKETS];
	int devfd;
	passthrough_reply_fn *name_backing;	/* transport.c's */
	bool on;
} pt = { .lock = PTHREAD_MUTEX_INITIALIZER, .released = PTHREAD_COND_INITIALIZER, .devfd = -1 };

/* How long a redirected open waits for the RELEASE of a passthrough open
 * that its caller may already have closed. */
#define RELEASE_WAIT_MS 1000

static size_t bucket(const void *p)
{
	uintptr_t x = (uintptr_t)p;

	return (size_t)((x >> 4) ^ (x >> 14)) % BUCKETS;
}

void passthrough_enable(int devfd, passthrough_reply_fn *name_backing)
{
	pt.devfd = devfd;
	pt.name_backing = name_backing;
	__atomic_store_n(&pt.on, true, __ATOMIC_RELAXED);
}

static struct pt_node *node_entry(const struct node *n, bool make)
{
	struct pt_node **pp = &pt.nodes[bucket(n)], *pn;

	for (pn = *pp; pn; pn = pn->next)
		if (pn->n == n)
			return pn;
	if (!make || (pn = calloc(1, sizeof(*pn))) == NULL)
		return NULL;
	pn->n = n;
	pn->next = *pp;
	*pp = pn;
	return pn;
}

static void node_entry_drop(struct pt_node *pn)
{
	struct pt_node **pp = &pt.nodes[bucket(pn->n)];

	if (pn->passthrough || pn->other)
		return;
	while (*pp != pn)
		pp = &(*pp)->next;
	*pp = pn->next;
	free(pn);
}

/* This thread's capabilities (the raw system calls act on the calling
 * thread only, which is what is wanted: the other threads keep theirs). */
static int caps_get(struct __user_cap_data_struct data[2])
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };

	return syscall(SYS_capget, &hdr, data) < 0 ? -errno : 0;
}

static int caps_set(const struct __user_cap_data_struct data[2])
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };

	return syscall(SYS_capset, &hdr, data) < 0 ? -errno : 0;
}

/* Register N's backing file: opened read-write (one backing serves every
 * passthrough open of the inode, whatever its mode), by this thread without
 * CAP_FSETID in its effective set, so that the kernel's writes through it
 * clear set-ID bits (see the top of this file). */
static int backing_open(const struct node *n)
{
	struct wire_backing_map map = { 0 };
	struct __user_cap_data_struct caps[2], less[2];
	int fd, id, ret;

	ret = caps_get(caps);
	if (ret < 0)
		return ret;
	fd = node_open(n, O_RDWR);
	if (fd < 0)
		return fd;
	memcpy(less, caps, sizeof(less));
	less[CAP_TO_INDEX(CAP_FSETID)].effective &= ~CAP_TO_MASK(CAP_FSETID);
	ret = caps_set(less);
	if (ret == 0) {
		map.fd = fd;
		id = ioctl(pt.devfd, WIRE_DEV_IOC_BACKING_OPEN, &map);
		ret = id < 0 ? -errno : id == 0 ? -EIO : id;
		/* Raising an effective capability back within the permitted
		 * set does not fail; if it did, this thread would only clear
		 * set-group-ID bits a chmod of its own could have kept. */
		if (caps_set(caps) < 0)
			log_warn("passthrough: restoring CAP_FSETID");
	}
	close(fd);
	return ret;
}

static void backing_close(int id)
{
	uint32_t u = (uint32_t)id;

	if (ioctl(pt.devfd, WIRE_DEV_IOC_BACKING_CLOSE, &u) < 0)
		log_warn("passthrough: closing backing %d", id);
}

int passthrough_hold(const struct node *n)
{
	struct pt_node *pn;
	struct timespec until;
	int ret = 0;

	if (!__atomic_load_n(&pt.on, __ATOMIC_RELAXED))
		return 0;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += RELEASE_WAIT_MS / 1000;
	pthread_mutex_lock(&pt.lock);
	/* The kernel forgets an open at close(), and tells the daemon later
	 * (RELEASE): a file written and closed, then opened with O_TRUNC,
	 * must not find its own passthrough open in the way. */
	while ((pn = node_entry(n, false)) && pn->passthrough &&
	       pthread_cond_timedwait(&pt.released, &pt.lock, &until) == 0)
		;
	pn = node_entry(n, true);
	if (pn == NULL)
		ret = -ENOMEM;
	else if (pn->passthrough)
		ret = -ETXTBSY;
	else
		pn->other++;
	if (pn && ret < 0)
		node_entry_drop(pn);
	pthread_mutex_unlock(&pt.lock);
	return ret;
}

void passthrough_unhold(const struct node *n)
{
	struct pt_node *pn;

	if (!__atomic_load_n(&pt.on, __ATOMIC_RELAXED))
		return;
	pthread_mutex_lock(&pt.lock);
	pn = node_entry(n, false);
	if (pn && pn->other) {
		pn->other--;
		node_entry_drop(pn);
	}
	pthread_mutex_unlock(&pt.lock);
}

int passthrough_choose(struct fuse_file_info *fi, const struct node *n, struct handle *h,
		       bool redirected)
{
	struct pt_handle *ph;
	struct pt_node *pn;
	bool want;
	int ret = 0;

	if (!__atomic_load_n(&pt.on, __ATOMIC_RELAXED))
		return 0;
	ph = calloc(1, sizeof(*ph));
	if (ph == NULL)
		return -ENOMEM;
	pthread_mutex_lock(&pt.lock);
	pn = node_entry(n, true);
	if (pn == NULL) {
		ret = -ENOMEM;
		goto out;
	}
	if (redirected) {
		/* Its data is another file's: never passthrough (its hold,
		 * taken before the file was made, is what it counts). */
		want = false;
		pn->other--;
	} else {
		want = pn->other == 0;
	}
	if (want && pn->passthrough == 0) {
		int id = backing_open(n);

		if (id < 0) {
			log_debug("passthrough: no backing file: %s", strerror(-id));
			want = false;	/* nothing is open passthrough: safe */
		} else {
			pn->backing_id = id;
		}
	}
	ph->h = h;
	ph->pn = pn;
	ph->passthrough = want;
	ph->next = pt.handles[bucket(h)];
	pt.handles[bucket(h)] = ph;
	ph = NULL;
	if (want) {
		pn->passthrough++;
		fi->direct_io = 0;
		pt.name_backing(pn->backing_id);
	} else {
		pn->other++;
	}
out:
	pthread_mutex_unlock(&pt.lock);
	free(ph);
	return ret;
}

void passthrough_forget(const struct handle *h)
{
	struct pt_handle **pp, *ph;
	struct pt_node *pn;

	if (!__atomic_load_n(&pt.on, __ATOMIC_RELAXED))
		return;
	pthread_mutex_lock(&pt.lock);
	for (pp = &pt.handles[bucket(h)]; *pp && (*pp)->h != h; pp = &(*pp)->next)
		;
	ph = *pp;
	if (ph) {
		*pp = ph->next;
		pn = ph->pn;
		if (!ph->passthrough) {
			pn->other--;
		} else if (--pn->passthrough == 0) {
			backing_close(pn->backing_id);
			pn->backing_id = 0;
			pthread_cond_broadcast(&pt.released);
		}
		node_entry_drop(pn);
	}
	pthread_mutex_unlock(&pt.lock);
	free(ph);
}
