/* The protocol glue between the kernel and libfuse 3.14: every request and
 * reply passes through fuse_session_custom_io() (libfuse 3.13 and later),
 * so that inboxfs can use what the kernel offers and 3.14 cannot ask for.
 *
 * Protocol facts relied on (include/uapi/linux/fuse.h; fuse_wire.h):
 * - INIT (7.36 on): the kernel offers flags | flags2 << 32 (flags2 only
 *   with FUSE_INIT_EXT); what the reply's flags and flags2 name is what
 *   the connection uses. libfuse 3.14 builds the 64-byte fuse_init_out
 *   with flags2 and never sets FUSE_HANDLE_KILLPRIV(_V2) or anything past
 *   bit 40, so adding them to its reply, when offered, is all it takes.
 * - FUSE_HANDLE_KILLPRIV_V2 (7.33): the kernel no longer reads
 *   security.capability before writes (one round trip per written file)
 *   and no longer clears set-ID bits itself; it tells the daemon to, by
 *   FUSE_WRITE_KILL_SUIDGID in a WRITE's write_flags, FATTR_KILL_SUIDGID in
 *   SETATTR (truncate, chown) and FUSE_OPEN_KILL_SUIDGID in an O_TRUNC
 *   OPEN or CREATE, each set when the caller lacks CAP_FSETID. The
 *   capability itself the backing filesystem removes when the daemon
 *   writes, truncates or chowns (for any caller, as for local files).
 * - A reply's fuse_out_header.unique is its request's; unique 0 is a
 *   notification. libfuse replies on the thread that read the request
 *   (inboxfs never replies later), which is what lets a thread-local note
 *   the request's flags for its handler.
 * - FUSE_OVER_IO_URING (7.42, kernel 6.14): see uring.c.
 *
 * Delete this file, fuse_wire.h and uring.c once the platform's libfuse
 * knows these (3.18: FUSE_CAP_HANDLE_KILLPRIV_V2 with fi->kill_priv,
 * FUSE_CAP_OVER_IO_URING). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fuse_wire.h"
#include "internal.h"
#include "log.h"
#include "transport.h"

struct transport {
	struct fuse_session *se;
	int devfd;
	bool multithreaded;
	bool uring_allowed;	/* -o uring=no says no */
	bool passthrough_allowed;	/* -o passthrough=yes */
	bool passthrough_on;
	bool uring_on;		/* rings prepared, offered in the INIT reply */
	bool killpriv_v2;	/* negotiated */
	uint64_t init_unique;	/* the INIT request being answered, 0: none */
	uint64_t offered;	/* what its flags offered */
};

static struct transport tr = { .devfd = -1, .uring_allowed = true };

/* What the request this thread handles asked for (set by the read that
 * fetched it; the handler runs on the same thread before the next). */
static __thread bool req_kill_suidgid;
static __thread uint64_t req_unique;
/* The open reply to request .unique is to name backing .id. */
static __thread struct {
	uint64_t unique;
	int id;
} pt_reply;

/* passthrough.c's hook (passthrough_enable()). */
static void reply_passthrough(int id)
{
	pt_reply.unique = req_unique;
	pt_reply.id = id;
}

const char transport_usage[] =
"    -o uring=yes|no        serve requests over io_uring where the kernel offers\n"
"                           it (fuse enable_uring=1), else /dev/fuse (default yes)\n"
"    -o passthrough=yes|no  observers' reads and writes of inbox files go straight\n"
"                           to the backing file where the kernel can (default no)\n";

static int yes_no(const char *s, bool dflt, bool *out)
{
	if (s == NULL)
		*out = dflt;
	else if (strcmp(s, "yes") == 0 || strcmp(s, "no") == 0)
		*out = s[0] == 'y';
	else
		return -1;
	return 0;
}

int transport_opt_parse(struct fuse_args *args)
{
	struct { char *uring, *passthrough; } v = { NULL, NULL };
	const struct fuse_opt opts[] = {
		{ "uring=%s", offsetof(typeof(v), uring), 1 },
		{ "passthrough=%s", offsetof(typeof(v), passthrough), 1 },
		FUSE_OPT_END
	};
	int ret = 0;

	if (fuse_opt_parse(args, &v, opts, NULL) < 0)
		return -1;
	if (yes_no(v.uring, true, &tr.uring_allowed) < 0) {
		fprintf(stderr, "inboxfs: uring=%s: expected yes or no\n", v.uring);
		ret = -1;
	} else if (yes_no(v.passthrough, false, &tr.passthrough_allowed) < 0) {
		fprintf(stderr, "inboxfs: passthrough=%s: expected yes or no\n", v.passthrough);
		ret = -1;
	}
	free(v.uring);
	free(v.passthrough);
	return ret;
}

int transport_request_kill_suidgid(void)
{
	/* Set once, by the INIT reply, before any request that asks. */
	if (!__atomic_load_n(&tr.killpriv_v2, __ATOMIC_RELAXED))
		return -1;
	return req_kill_suidgid;
}

/* What a handler wrote before its reply is seen by the handler of a later
 * request, maybe on another thread: the kernel orders them (the reply's
 * system call completes before the next request is read), but only a
 * shared synchronisation tells ThreadSanitizer so. libfuse's own loop
 * takes a mutex per request; its io_uring threads share none. */
static unsigned long reply_seq;

static void transport_replied(void)
{
	__atomic_fetch_add(&reply_seq, 1, __ATOMIC_RELEASE);
}

/* Read what a request carries that libfuse 3.14 drops (uring.c's hook,
 * uring_prepare()). A short or odd request is left to libfuse, which
 * answers it. */
static void note_request(const void *buf, size_t len)
{
	const struct wire_in_header *h = buf;
	const char *arg = (const char *)buf + sizeof(*h);
	size_t alen = len - sizeof(*h);

	(void)__atomic_load_n(&reply_seq, __ATOMIC_ACQUIRE);
	req_kill_suidgid = false;
	if (len < sizeof(*h))
		return;
	req_unique = h->unique;
	switch (h->opcode) {
	case WIRE_WRITE:
		if (alen >= sizeof(struct wire_write_in))
			req_kill_suidgid = ((const struct wire_write_in *)arg)->write_flags &
					   WIRE_WRITE_KILL_SUIDGID;
		break;
	case WIRE_OPEN:
		if (alen >= sizeof(struct wire_open_in))
			req_kill_suidgid = ((const struct wire_open_in *)arg)->open_flags &
					   WIRE_OPEN_KILL_SUIDGID;
		break;
	case WIRE_CREATE:
		if (alen >= sizeof(struct wire_create_in))
			req_kill_suidgid = ((const struct wire_create_in *)arg)->open_flags &
					   WIRE_OPEN_KILL_SUIDGID;
		break;
	case WIRE_INIT: {
		struct wire_init_in in = { 0 };

		memcpy(&in, arg, alen < sizeof(in) ? alen : sizeof(in));
		tr.offered = in.flags;
		if ((in.flags & WIRE_INIT_EXT) && alen >= offsetof(struct wire_init_in, unused))
			tr.offered |= (uint64_t)in.flags2 << 32;
		tr.init_unique = h->unique;
		break;
	}
	default:
		break;
	}
}

static ssize_t dev_read(int fd, void *buf, size_t len, void *userdata)
{
	ssize_t n = read(fd, buf, len);

	if (n > 0)
		note_request(buf, (size_t)n);
	return n;
}

/* Possible CPUs: the kernel makes one queue for each. */
static unsigned possible_cpus(void)
{
	char line[256];
	unsigned max = 0;
	bool any = false;
	FILE *f = fopen("/sys/devices/system/cpu/possible", "re");

	if (f && fgets(line, sizeof(line), f)) {
		for (char *p = line; *p && *p != '\n';) {
			char *end;
			unsigned long a = strtoul(p, &end, 10), b = a;

			if (end == p)
				break;
			if (*end == '-')
				b = strtoul(end + 1, &end, 10);
			if (b > max || !any)
				max = (unsigned)b;
			any = true;
			p = *end == ',' ? end + 1 : end;
		}
	}
	if (f)
		fclose(f);
	return any ? max + 1 : (unsigned)get_nprocs_conf();
}

/* The INIT reply libfuse built: add what the kernel offered and inboxfs
 * handles. Called before it is written. */
static void amend_init_reply(struct wire_init_out *out)
{
	uint64_t flags = out->flags | (uint64_t)out->flags2 << 32;

	if (tr.passthrough_allowed && !(tr.offered & WIRE_PASSTHROUGH))
		log_info("passthrough: the kernel does not offer it (needs 6.9 and "
			 "CONFIG_FUSE_PASSTHROUGH)");
	if (tr.passthrough_allowed && (tr.offered & WIRE_PASSTHROUGH) &&
	    !(flags & WIRE_WRITEBACK_CACHE)) {
		flags |= WIRE_PASSTHROUGH;
		out->max_stack_depth = 1;	/* over a plain filesystem */
		tr.passthrough_on = true;
	}
	if (tr.offered & WIRE_HANDLE_KILLPRIV_V2) {
		flags |= WIRE_HANDLE_KILLPRIV_V2;
		flags &= ~WIRE_HANDLE_KILLPRIV;
	}
	if (!(tr.offered & WIRE_OVER_IO_URING)) {
		if (tr.uring_allowed && tr.multithreaded)
			log_info("transport: /dev/fuse (the kernel does not offer io_uring: "
				 "/sys/module/fuse/parameters/enable_uring is 0 or absent)");
	} else if (!tr.uring_allowed || !tr.multithreaded) {
		log_info("transport: /dev/fuse (%s)", tr.uring_allowed ? "single-threaded" : "uring=no");
	} else if (!(flags & WIRE_INIT_EXT)) {
		log_info("transport: /dev/fuse (no extended INIT)");
	} else {
		size_t pages = (size_t)out->max_pages * (size_t)sysconf(_SC_PAGESIZE);
		struct uring_geometry g = {
			.payload = out->max_write > pages ? out->max_write : pages,
			.queues = possible_cpus(),
		};
		int ret;

		if (g.payload < 8192)	/* FUSE_MIN_READ_BUFFER */
			g.payload = 8192;
		ret = uring_prepare(tr.se, tr.devfd, &g, note_request);
		if (ret == 0) {
			flags |= WIRE_OVER_IO_URING;
			tr.uring_on = true;
		} else {
			log_warnx("transport: /dev/fuse (io_uring set-up failed: %s)", strerror(-ret));
		}
	}
	out->flags = (uint32_t)flags;
	out->flags2 = (uint32_t)(flags >> 32);
	log_debug("transport: INIT offered 0x%llx, answered 0x%llx",
		  (unsigned long long)tr.offered, (unsigned long long)flags);
	__atomic_store_n(&tr.killpriv_v2, (flags & WIRE_HANDLE_KILLPRIV_V2) != 0, __ATOMIC_RELAXED);
}

static ssize_t dev_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	const struct wire_out_header *oh = iov[0].iov_base;
	bool init = false;
	size_t len = 0;
	ssize_t n;

	for (int i = 0; i < count; i++)
		len += iov[i].iov_len;
	transport_replied();
	if (count >= 1 && iov[0].iov_len >= sizeof(*oh) && oh->unique != 0) {
		if (pt_reply.id && oh->unique == pt_reply.unique) {
			struct wire_open_out *o;

			/* fuse_reply_open() or fuse_reply_create(): the open
			 * arguments end the reply. */
			if (oh->error == 0 && count >= 2 &&
			    iov[count - 1].iov_len >= sizeof(*o)) {
				o = (void *)((char *)iov[count - 1].iov_base +
					     iov[count - 1].iov_len - sizeof(*o));
				/* The kernel refuses a passthrough open with
				 * any flag but these (FOPEN_KEEP_CACHE: EIO). */
				o->open_flags &= WIRE_FOPEN_NOFLUSH;
				o->open_flags |= WIRE_FOPEN_PASSTHROUGH;
				o->backing_id = pt_reply.id;
			}
			pt_reply.id = 0;
		}
		n = uring_reply(iov, count, len);
		if (n != -2)
			return n;
		if (oh->unique == tr.init_unique && oh->error == 0 && count == 2 &&
		    iov[1].iov_len == sizeof(struct wire_init_out)) {
			tr.init_unique = 0;
			amend_init_reply(iov[1].iov_base);
			init = true;
		}
	}
	n = writev(fd, iov, count);
	if (init && n >= 0 && tr.passthrough_on) {
		passthrough_enable(fd, reply_passthrough);
		log_info("passthrough: on, for observers' opens of inbox files");
	}
	if (init && tr.uring_on) {
		if (n < 0) {
			uring_discard();
			tr.uring_on = false;
		} else {
			uring_run();
		}
	}
	return n;
}

bool transport_connected(void)
{
	struct pollfd p = { .fd = tr.devfd, .events = POLLIN };

	/* fuse_dev_poll() answers EPOLLERR alone once the connection is
	 * aborted; a poll that fails says nothing either way. */
	if (tr.devfd < 0 || poll(&p, 1, 0) <= 0)
		return true;
	return !(p.revents & (POLLERR | POLLNVAL));
}

int transport_start(struct fuse_session *se, bool multithreaded)
{
	static const struct fuse_custom_io io = {
		.read = dev_read,
		.writev = dev_writev,
	};
	int ret;

	tr.se = se;
	tr.devfd = fuse_session_fd(se);
	tr.multithreaded = multithreaded;
	ret = fuse_session_custom_io(se, &io, tr.devfd);
	if (ret < 0)
		log_warnx("transport: custom I/O refused: %s", strerror(-ret));
	return ret;
}

void transport_stop(void)
{
	if (tr.uring_on)
		uring_stop();
}
