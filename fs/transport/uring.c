/* FUSE over io_uring for libfuse 3.14: requests are fetched and answered
 * through per-CPU ring queues instead of read() and writev() on /dev/fuse,
 * so a request is served on the CPU that made it, by a thread that the
 * kernel wakes with task work rather than through the device's wait queue.
 *
 * Protocol facts relied on (include/uapi/linux/fuse.h 7.42, kernel 6.14
 * and later, fs/fuse/dev_uring.c; fuse_wire.h):
 * - The daemon sets FUSE_OVER_IO_URING in its INIT reply only if the
 *   kernel offered it (module parameter enable_uring=1). From then on the
 *   kernel holds every request until each possible CPU's queue has an
 *   entry registered; a failed FUSE_IO_URING_CMD_REGISTER turns io_uring
 *   off for the connection and releases them to /dev/fuse.
 * - An entry is IORING_OP_URING_CMD on the /dev/fuse descriptor, in a ring
 *   made with IORING_SETUP_SQE128; the command area holds
 *   fuse_uring_cmd_req (qid, commit_id); sqe->addr points to two iovecs:
 *   fuse_uring_req_header (288 bytes) and a payload buffer of at least
 *   max(8 KiB, max_write, max_pages pages).
 * - Its completion (res 0) means a request is in the entry: in_out holds
 *   fuse_in_header, op_in the opcode's header (in_header.len minus the
 *   header minus payload_sz bytes), the payload the rest;
 *   ring_ent_in_out.commit_id is what the answer must name.
 * - FUSE_IO_URING_CMD_COMMIT_AND_FETCH answers (fuse_out_header in
 *   in_out, every reply argument in the payload, payload_sz its length)
 *   and makes the entry wait for the next request. A request is queued on
 *   the queue of the CPU its caller runs on; the completion runs as task
 *   work of the thread that submitted the entry.
 * - FORGET, INTERRUPT and notifications still use /dev/fuse, whose
 *   libfuse loop keeps running; a torn-down connection completes entries
 *   with -ENOTCONN.
 *
 * Each queue is served by a few threads pinned to its CPU, each with a
 * ring of its own and a few entries. The threads call
 * fuse_session_process_buf() as libfuse's own loop does; the reply comes
 * back through transport.c's writev, on the same thread, or, for a
 * request handed to syncpool.c (a durable close's fsync), on one of its
 * workers: uring_defer() parks the entry, and the worker's reply fills it
 * and queues it for its thread, woken through an eventfd read in its
 * ring, which commits it. A thread never waits on the disk for a parked
 * entry, and serves its other entries meanwhile: four closes whose
 * fsyncs took 1.5 s each held every ring thread of their CPU (one entry
 * each), and every request on both CPUs waited that long.
 * Only a ring's own thread submits to it: the kernel runs an entry's
 * completion as task work of the thread that submitted it.
 *
 * Delete with transport.c once the platform's libfuse has io_uring
 * (3.18). */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <liburing.h>

#include "fuse_wire.h"
#include "internal.h"
#include "log.h"
#include "transport.h"

/* Threads per queue: 4 on small machines, fewer where there are many
 * CPUs (each costs a ring descriptor, out of the daemon's reserve, and a
 * payload buffer of max_write). */
static unsigned threads_per_queue(unsigned queues)
{
	return queues <= 8 ? 4 : queues <= 32 ? 2 : 1;
}
/* Entries per thread: what may be parked with syncpool.c while the thread
 * still fetches requests. */
#define ENTRIES 4
/* Room before the payload for the in-header and op header, so a request
 * is one contiguous buffer for libfuse without moving its payload. */
#define HEAD_ROOM 4096
#define STOP_TAG 1		/* user_data of the stop poll (entries are pointers) */
#define WAKE_TAG 2		/* user_data of the read of the thread's wake eventfd */

struct ring_thread;

struct ring_ent {
	struct wire_uring_req_header hdr;
	struct iovec iov[2];
	char *buf;		/* HEAD_ROOM + payload */
	uint64_t commit_id;
	bool committed;		/* answered (by whichever thread answers) */
	bool deferred;		/* parked: a worker answers (the ring's thread's) */
	struct ring_thread *t;
	struct ring_ent *next_done;
};

struct ring_thread {
	struct io_uring ring;
	pthread_t tid;
	unsigned qid;
	bool ring_made, started;
	struct ring_ent ents[ENTRIES];
	int wakefd;			/* a worker answered a parked entry */
	uint64_t wake_count;		/* the wake read's buffer */
	pthread_mutex_t done_lock;	/* a leaf: guards done */
	struct ring_ent *done;		/* answered parked entries to commit */
};

static struct {
	struct fuse_session *se;
	int devfd;
	int stopfd;
	size_t payload;
	unsigned per_queue;
	size_t nthreads;
	struct ring_thread *threads;
	uring_note_fn *note;		/* transport.c's look at each request */
} ur = { .devfd = -1, .stopfd = -1 };

/* The entry whose request this thread is handling. */
static __thread struct ring_ent *cur_ent;

static struct io_uring_sqe *cmd_sqe(struct ring_thread *t, struct ring_ent *e, uint32_t op)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&t->ring);
	struct wire_uring_cmd_req *cmd;

	if (sqe == NULL)
		return NULL;
	memset(sqe, 0, 2 * sizeof(*sqe));	/* SQE128 */
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = ur.devfd;
	sqe->cmd_op = op;
	sqe->addr = (uint64_t)(uintptr_t)e->iov;
	sqe->len = 2;
	io_uring_sqe_set_data(sqe, e);
	cmd = (struct wire_uring_cmd_req *)sqe->cmd;
	cmd->qid = (uint16_t)t->qid;
	cmd->commit_id = e->commit_id;
	return sqe;
}

static int submit(struct ring_thread *t)
{
	int ret;

	do
		ret = io_uring_submit(&t->ring);
	while (ret == -EINTR);
	return ret < 0 ? ret : 0;
}

static int submit_cmd(struct ring_thread *t, struct ring_ent *e, uint32_t op)
{
	if (cmd_sqe(t, e, op) == NULL)
		return -EBUSY;
	return submit(t);
}

/* Queue an answer in T's ring, submitted by the thread's next wait for
 * completions (ring_main()): one system call per request, not two. */
static int answer_cmd(struct ring_thread *t, struct ring_ent *e)
{
	if (cmd_sqe(t, e, WIRE_IO_URING_CMD_COMMIT_AND_FETCH) != NULL)
		return 0;
	return submit_cmd(t, e, WIRE_IO_URING_CMD_COMMIT_AND_FETCH);	/* ring full: now */
}

/* Submit what is queued in T's ring and wait for a completion (-EINTR:
 * none yet, call again). A submission that fails leaves its answers
 * queued: they are tried again within 100 ms, while the thread goes on
 * serving its other entries. */
static int submit_and_wait(struct ring_thread *t, struct io_uring_cqe **cqe)
{
	if (io_uring_sq_ready(&t->ring) > 0) {
		struct __kernel_timespec retry = { .tv_nsec = 100 * 1000 * 1000 };
		int ret = io_uring_submit_and_wait(&t->ring, 1);

		if (ret < 0 && ret != -EINTR) {
			log_warnx("io_uring: queue %u: cannot answer a request: %s", t->qid,
				  strerror(-ret));
			ret = io_uring_wait_cqe_timeout(&t->ring, cqe, &retry);
			return ret == -ETIME ? -EINTR : ret;
		}
	}
	return io_uring_wait_cqe(&t->ring, cqe);
}

/* Wait (in T's ring) for a worker to answer a parked entry. */
static int arm_wake(struct ring_thread *t)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&t->ring);

	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_read(sqe, t->wakefd, &t->wake_count, sizeof(t->wake_count), 0);
	io_uring_sqe_set_data64(sqe, WAKE_TAG);
	return submit(t);
}

void *uring_defer(void)
{
	struct ring_ent *e = cur_ent;

	if (e == NULL || e->committed)
		return NULL;
	e->deferred = true;
	return e;
}

void uring_adopt(void *token)
{
	cur_ent = token;
}

/* Commit the parked entries that workers answered. */
static void commit_done(struct ring_thread *t)
{
	struct ring_ent *e, *next;

	pthread_mutex_lock(&t->done_lock);
	e = t->done;
	t->done = NULL;
	pthread_mutex_unlock(&t->done_lock);
	for (; e; e = next) {
		next = e->next_done;
		e->deferred = false;
		if (answer_cmd(t, e) < 0)
			log_warnx("io_uring: queue %u: cannot answer a request", t->qid);
	}
}

void *uring_reply_buffer(size_t size)
{
	struct ring_ent *e = cur_ent;

	return e && !e->committed && size <= ur.payload ? e->buf + HEAD_ROOM : NULL;
}

ssize_t uring_reply(const struct iovec *iov, int count, size_t len)
{
	const struct wire_out_header *oh = iov[0].iov_base;
	struct ring_ent *e = cur_ent;
	size_t off = 0;
	int ret;

	if (e == NULL || e->committed || oh->unique != e->commit_id)
		return -2;
	if (len - iov[0].iov_len > ur.payload) {
		/* Cannot happen for replies sized by the kernel's request. */
		struct wire_out_header err = { sizeof(err), -EIO, oh->unique };

		memcpy(e->hdr.in_out, &err, sizeof(err));
		e->hdr.ring_ent_in_out.payload_sz = 0;
	} else {
		memcpy(e->hdr.in_out, oh, sizeof(*oh));
		for (int i = 1; i < count; i++) {
			char *to = e->buf + HEAD_ROOM + off;

			/* A READ's data may be there already (uring_reply_buffer). */
			if (iov[i].iov_base != to)
				memmove(to, iov[i].iov_base, iov[i].iov_len);
			off += iov[i].iov_len;
		}
		e->hdr.ring_ent_in_out.payload_sz = (uint32_t)off;
	}
	e->committed = true;
	if (e->deferred) {
		/* A worker's answer: the entry's thread submits it. */
		struct ring_thread *t = e->t;
		uint64_t one = 1;

		pthread_mutex_lock(&t->done_lock);
		e->next_done = t->done;
		t->done = e;
		pthread_mutex_unlock(&t->done_lock);
		if (write(t->wakefd, &one, sizeof(one)) != sizeof(one)) {
			log_warn("io_uring: queue %u: cannot wake its thread", t->qid);
			return -1;
		}
		return (ssize_t)len;
	}
	ret = answer_cmd(e->t, e);
	if (ret < 0) {
		errno = -ret;
		return -1;
	}
	return (ssize_t)len;
}

/* Hand the request in T's entry E to libfuse. */
static void serve(struct ring_thread *t, struct ring_ent *e)
{
	const struct wire_in_header *h = (const void *)e->hdr.in_out;
	uint32_t payload_sz = e->hdr.ring_ent_in_out.payload_sz;
	char *payload = e->buf + HEAD_ROOM;
	size_t oplen;

	e->commit_id = e->hdr.ring_ent_in_out.commit_id;
	e->committed = false;
	if (h->len < sizeof(*h) || payload_sz > ur.payload || h->len - sizeof(*h) < payload_sz ||
	    (oplen = h->len - sizeof(*h) - payload_sz) > WIRE_URING_OP_IN_OUT_SZ) {
		log_warnx("io_uring: malformed request (len %u, payload %u): answered EIO",
			  h->len, payload_sz);
	} else {
		char *start = payload - oplen - sizeof(*h);
		struct fuse_buf fbuf = { .mem = start, .size = h->len };

		memcpy(start, h, sizeof(*h));
		memcpy(start + sizeof(*h), e->hdr.op_in, oplen);
		ur.note(start, h->len);
		cur_ent = e;
		fuse_session_process_buf(ur.se, &fbuf);
		cur_ent = NULL;
	}
	/* A parked entry's answer is a worker's, maybe already given:
	 * only e->deferred, which this thread alone sets, may be read. */
	if (e->deferred)
		return;
	if (!e->committed) {
		/* No reply (a malformed request): never leave the caller
		 * waiting. */
		struct wire_out_header err = { sizeof(err), -EIO, e->commit_id };

		memcpy(e->hdr.in_out, &err, sizeof(err));
		e->hdr.ring_ent_in_out.payload_sz = 0;
		e->committed = true;
		if (answer_cmd(t, e) < 0)
			log_warnx("io_uring: queue %u: cannot answer a request", t->qid);
	}
}

static void *ring_main(void *arg)
{
	struct ring_thread *t = arg;
	struct io_uring_sqe *sqe;
	cpu_set_t cpus;
	int ret;

	CPU_ZERO(&cpus);
	CPU_SET(t->qid, &cpus);
	(void)sched_setaffinity(0, sizeof(cpus), &cpus);	/* an offline CPU: unpinned */
	sqe = io_uring_get_sqe(&t->ring);
	if (sqe) {
		io_uring_prep_poll_add(sqe, ur.stopfd, POLLIN);
		io_uring_sqe_set_data64(sqe, STOP_TAG);
	}
	ret = arm_wake(t);
	for (unsigned i = 0; i < ENTRIES && ret == 0; i++)
		ret = submit_cmd(t, &t->ents[i], WIRE_IO_URING_CMD_REGISTER);
	if (ret < 0) {
		log_warnx("io_uring: queue %u: register: %s", t->qid, strerror(-ret));
		return NULL;
	}
	for (;;) {
		struct io_uring_cqe *cqe;
		uint64_t tag;
		int res;

		ret = submit_and_wait(t, &cqe);
		if (ret == -EINTR)
			continue;
		if (ret < 0) {
			log_warnx("io_uring: queue %u: wait: %s", t->qid, strerror(-ret));
			break;
		}
		tag = io_uring_cqe_get_data64(cqe);
		res = cqe->res;
		io_uring_cqe_seen(&t->ring, cqe);
		if (tag == STOP_TAG)
			break;
		if (tag == WAKE_TAG) {
			commit_done(t);
			if (res == -ECANCELED)
				break;
			if (res < 0 && res != -EINTR && res != -EAGAIN)
				log_warnx("io_uring: queue %u: wake: %s", t->qid, strerror(-res));
			if (arm_wake(t) < 0)
				log_warnx("io_uring: queue %u: cannot wait for workers", t->qid);
			continue;
		}
		if (res < 0) {
			/* -ENOTCONN: unmounted, or aborted. Anything else: the
			 * kernel refused the entry (it then serves through
			 * /dev/fuse). */
			if (res != -ENOTCONN && res != -ECANCELED)
				log_warnx("io_uring: queue %u: entry refused: %s", t->qid,
					  strerror(-res));
			break;
		}
		serve(t, (struct ring_ent *)(uintptr_t)tag);
	}
	if (io_uring_sq_ready(&t->ring) > 0 && submit(t) < 0)	/* answers queued last */
		log_warnx("io_uring: queue %u: cannot answer a request", t->qid);
	return NULL;
}

static void free_threads(void)
{
	for (size_t i = 0; i < ur.nthreads; i++) {
		struct ring_thread *t = &ur.threads[i];

		if (t->ring_made)
			io_uring_queue_exit(&t->ring);
		for (unsigned j = 0; j < ENTRIES; j++)
			if (t->ents[j].buf)
				munmap(t->ents[j].buf, HEAD_ROOM + ur.payload);
		if (t->wakefd >= 0)
			close(t->wakefd);
		pthread_mutex_destroy(&t->done_lock);
	}
	free(ur.threads);
	ur.threads = NULL;
	ur.nthreads = 0;
	if (ur.stopfd >= 0)
		close(ur.stopfd);
	ur.stopfd = -1;
}

int uring_prepare(struct fuse_session *se, int devfd, const struct uring_geometry *g,
		  uring_note_fn *note)
{
	int ret = 0;

	ur.se = se;
	ur.devfd = devfd;
	ur.note = note;
	ur.payload = g->payload;
	ur.stopfd = eventfd(0, EFD_CLOEXEC);
	if (ur.stopfd < 0)
		return -errno;
	ur.per_queue = threads_per_queue(g->queues);
	ur.nthreads = (size_t)g->queues * ur.per_queue;
	ur.threads = calloc(ur.nthreads, sizeof(*ur.threads));
	if (ur.threads == NULL) {
		ur.nthreads = 0;
		free_threads();
		return -ENOMEM;
	}
	for (size_t i = 0; i < ur.nthreads; i++) {
		ur.threads[i].wakefd = -1;
		pthread_mutex_init(&ur.threads[i].done_lock, NULL);
	}
	for (size_t i = 0; i < ur.nthreads && ret == 0; i++) {
		struct ring_thread *t = &ur.threads[i];

		t->qid = (unsigned)(i / ur.per_queue);
		t->wakefd = eventfd(0, EFD_CLOEXEC);
		if (t->wakefd < 0) {
			ret = -errno;
			break;
		}
		/* Each entry's command, the stop poll and the wake read. */
		ret = io_uring_queue_init(2 * ENTRIES + 4, &t->ring, IORING_SETUP_SQE128);
		if (ret < 0)
			break;
		t->ring_made = true;
		for (unsigned j = 0; j < ENTRIES && ret == 0; j++) {
			struct ring_ent *e = &t->ents[j];

			e->t = t;
			e->buf = mmap(NULL, HEAD_ROOM + ur.payload, PROT_READ | PROT_WRITE,
				      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (e->buf == MAP_FAILED) {
				e->buf = NULL;
				ret = -ENOMEM;
				break;
			}
			e->iov[0] = (struct iovec){ &e->hdr, sizeof(e->hdr) };
			e->iov[1] = (struct iovec){ e->buf + HEAD_ROOM, ur.payload };
		}
	}
	if (ret < 0)
		free_threads();
	return ret;
}

void uring_discard(void)
{
	free_threads();
}

void uring_run(void)
{
	size_t started = 0;

	for (size_t i = 0; i < ur.nthreads; i++) {
		struct ring_thread *t = &ur.threads[i];

		t->started = pthread_create(&t->tid, NULL, ring_main, t) == 0;
		started += t->started;
	}
	if (started == ur.nthreads) {
		log_info("transport: io_uring, %zu queues, %u threads each",
			 ur.nthreads / ur.per_queue, ur.per_queue);
		return;
	}
	/* A queue without an entry would hold every request: make the kernel
	 * give up io_uring (a register for a queue that does not exist fails
	 * and turns it off) and serve through /dev/fuse. */
	log_warnx("transport: /dev/fuse (cannot start io_uring threads)");
	for (size_t i = 0; i < ur.nthreads; i++) {
		struct ring_thread *t = &ur.threads[i];

		if (!t->started) {
			struct io_uring_cqe *cqe;

			t->qid = 0xffff;
			if (submit_cmd(t, &t->ents[0], WIRE_IO_URING_CMD_REGISTER) == 0 &&
			    io_uring_wait_cqe(&t->ring, &cqe) == 0)
				io_uring_cqe_seen(&t->ring, cqe);
			break;
		}
	}
}

void uring_stop(void)
{
	uint64_t one = 1;

	if (ur.threads == NULL)
		return;
	if (write(ur.stopfd, &one, sizeof(one)) != sizeof(one))
		log_warn("io_uring: cannot stop the threads");
	for (size_t i = 0; i < ur.nthreads; i++)
		if (ur.threads[i].started)
			pthread_join(ur.threads[i].tid, NULL);
	free_threads();
}
