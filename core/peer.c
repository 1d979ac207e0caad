/* Watching an SMB server process's TCP connection by socket inode through
 * NETLINK_SOCK_DIAG, without a descriptor of it (see peer.h). */
#include "peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "proc.h"

#define SMB_SERVER_EXE "smbd"

bool peer_is_smb_server(pid_t pid)
{
	return proc_exe_is(pid, SMB_SERVER_EXE);
}

struct inodes {
	uint64_t *inos;
	size_t n, cap;
};

static int socket_one(pid_t pid, const char *fd, const char *link, size_t len, void *arg)
{
	struct inodes *in = arg;
	uint64_t ino;

	if (!proc_socket_ino(link, &ino))
		return 0;
	if (in->n == in->cap) {
		size_t cap = in->cap ? in->cap * 2 : 16;
		uint64_t *grown = realloc(in->inos, cap * sizeof(*grown));

		if (grown == NULL)
			return -ENOMEM;
		in->inos = grown;
		in->cap = cap;
	}
	in->inos[in->n++] = ino;
	return 0;
}

/* The socket inode numbers of PID's descriptors (readlink only). */
static int socket_inodes(pid_t pid, uint64_t **out, size_t *count)
{
	struct inodes in = { 0 };
	int ret = proc_fds(pid, socket_one, &in);

	if (ret < 0) {
		free(in.inos);
		return ret;
	}
	*out = in.inos;
	*count = in.n;
	return 0;
}

static int diag_socket(void)
{
	int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);

	return fd < 0 ? -errno : fd;
}

static int diag_send(int fd, uint8_t family, uint32_t states, const struct inet_diag_sockid *id,
		     bool dump)
{
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 r;
	} req;
	struct sockaddr_nl nl = { .nl_family = AF_NETLINK };

	memset(&req, 0, sizeof(req));
	req.nlh.nlmsg_len = sizeof(req);
	req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	req.nlh.nlmsg_flags = NLM_F_REQUEST | (dump ? NLM_F_DUMP : 0);
	req.r.sdiag_family = family;
	req.r.sdiag_protocol = IPPROTO_TCP;
	req.r.idiag_states = states;
	if (id) {
		req.r.id = *id;
	} else {
		req.r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
		req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	}
	if (sendto(fd, &req, sizeof(req), 0, (struct sockaddr *)&nl, sizeof(nl)) < 0)
		return -errno;
	return 0;
}

/* Read the answers to one request, calling FN on each socket; stops at the
 * end of a dump or after one answer. 0, or -errno (the kernel's too). */
static int diag_receive(int fd, bool dump,
			void (*fn)(const struct inet_diag_msg *m, void *arg), void *arg)
{
	/* The kernel fills a dump's messages up to the largest buffer a
	 * reader offered (32 KiB at most): this one never truncates one. */
	long buf[32768 / sizeof(long)];

	for (;;) {
		ssize_t len = recv(fd, buf, sizeof(buf), MSG_TRUNC);
		struct nlmsghdr *h = (struct nlmsghdr *)buf;

		if (len < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (len == 0)
			return -EIO;
		if ((size_t)len > sizeof(buf))
			return -EMSGSIZE;
		for (; NLMSG_OK(h, (unsigned)len); h = NLMSG_NEXT(h, len)) {
			if (h->nlmsg_type == NLMSG_DONE)
				return 0;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);

				return e->error < 0 ? e->error : -EIO;
			}
			if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY)
				fn(NLMSG_DATA(h), arg);
			if (!dump)
				return 0;
		}
	}
}

/* What a dump found: the process's sockets (in any state but LISTEN) and
 * the ports the host listens on. Both grow as needed: a fixed cap would
 * let the client's socket or smbd's port drop out, and the fallback then
 * pick another connection. */
struct found {
	struct peer p;
	uint8_t state;		/* TCP_ESTABLISHED, TCP_CLOSE_WAIT, ... */
};

struct scan {
	const uint64_t *inos;
	size_t ninos;
	struct found *found;
	size_t nfound, capfound;
	uint16_t *listening;
	size_t nlistening, caplistening;
	int error;		/* -ENOMEM once an array could not grow */
};

static bool grow(void **array, size_t *cap, size_t n, size_t size)
{
	size_t want = *cap ? *cap * 2 : 16;
	void *grown;

	if (n < *cap)
		return true;
	grown = realloc(*array, want * size);
	if (grown == NULL)
		return false;
	*array = grown;
	*cap = want;
	return true;
}

static void record(struct peer *p, const struct inet_diag_msg *m)
{
	memset(p, 0, sizeof(*p));
	p->ino = m->idiag_inode;
	p->family = m->idiag_family;
	p->sport = m->id.idiag_sport;
	p->dport = m->id.idiag_dport;
	memcpy(p->src, m->id.idiag_src, sizeof(p->src));
	memcpy(p->dst, m->id.idiag_dst, sizeof(p->dst));
	p->cookie[0] = m->id.idiag_cookie[0];
	p->cookie[1] = m->id.idiag_cookie[1];
}

static void scan_one(const struct inet_diag_msg *m, void *arg)
{
	struct scan *s = arg;

	if (s->error)
		return;
	if (m->idiag_state == TCP_LISTEN) {
		if (!grow((void **)&s->listening, &s->caplistening, s->nlistening,
			  sizeof(*s->listening))) {
			s->error = -ENOMEM;
			return;
		}
		s->listening[s->nlistening++] = m->id.idiag_sport;
		return;
	}
	if (m->idiag_inode == 0)
		return;		/* no descriptor holds it (TIME_WAIT, a queued accept) */
	for (size_t i = 0; i < s->ninos; i++) {
		if (s->inos[i] != m->idiag_inode)
			continue;
		if (!grow((void **)&s->found, &s->capfound, s->nfound, sizeof(*s->found))) {
			s->error = -ENOMEM;
			return;
		}
		record(&s->found[s->nfound].p, m);
		s->found[s->nfound++].state = m->idiag_state;
		return;
	}
}

static bool accepted(const struct scan *s, size_t i)
{
	for (size_t j = 0; j < s->nlistening; j++)
		if (s->found[i].p.sport == s->listening[j])
			return true;
	return false;
}

int peer_find(pid_t pid, struct peer *out)
{
	static const uint8_t families[] = { AF_INET, AF_INET6 };
	struct scan s = { 0 };
	uint64_t *inos = NULL;
	size_t best = 0;
	int best_rank = -1;
	int fd, ret;

	memset(out, 0, sizeof(*out));
	ret = socket_inodes(pid, &inos, &s.ninos);
	if (ret < 0 || s.ninos == 0)
		goto out;
	s.inos = inos;
	fd = diag_socket();
	if (fd < 0) {
		ret = fd;
		goto out;
	}
	/* Every state, not only ESTABLISHED: a client whose FIN came in
	 * before smbd served its create (CLOSE_WAIT) is still its client,
	 * and peer_lost() then says it is gone. */
	for (size_t f = 0; f < sizeof(families) && ret == 0; f++) {
		ret = diag_send(fd, families[f], ~0U, NULL, true);
		if (ret == 0)
			ret = diag_receive(fd, true, scan_one, &s);
		if (ret == 0)
			ret = s.error;
	}
	close(fd);
	if (ret < 0 || s.nfound == 0)
		goto out;
	/* An smbd may have connections of its own (to a domain controller):
	 * the client's is the one accepted on a port the host listens on,
	 * established if one is; else the first of its own, established if
	 * one is. */
	for (size_t i = 0; i < s.nfound; i++) {
		int rank = (accepted(&s, i) ? 2 : 0) + (s.found[i].state == TCP_ESTABLISHED);

		if (rank > best_rank) {
			best = i;
			best_rank = rank;
		}
	}
	*out = s.found[best].p;
	ret = 1;
out:
	free(s.found);
	free(s.listening);
	free(inos);
	return ret;
}

int peer_watch(pid_t pid, struct peer *out)
{
	int ret;

	memset(out, 0, sizeof(*out));
	if (!peer_is_smb_server(pid))
		return 0;
	ret = peer_find(pid, out);
	out->smb = true;
	return ret;
}

struct state {
	bool found;
	uint8_t state;
	uint64_t ino;
};

static void state_one(const struct inet_diag_msg *m, void *arg)
{
	struct state *st = arg;

	st->found = true;
	st->state = m->idiag_state;
	st->ino = m->idiag_inode;
}

bool peer_lost(const struct peer *p)
{
	struct inet_diag_sockid id;
	struct state st = { 0 };
	int fd, ret;

	if (p->ino == 0)
		return p->smb;
	memset(&id, 0, sizeof(id));
	id.idiag_sport = p->sport;
	id.idiag_dport = p->dport;
	memcpy(id.idiag_src, p->src, sizeof(id.idiag_src));
	memcpy(id.idiag_dst, p->dst, sizeof(id.idiag_dst));
	/* The cookie makes it this very socket, not a later one that reuses
	 * its addresses and ports (-ESTALE then). */
	id.idiag_cookie[0] = p->cookie[0];
	id.idiag_cookie[1] = p->cookie[1];
	fd = diag_socket();
	if (fd < 0) {
		ret = fd;
	} else {
		ret = diag_send(fd, p->family, ~0U, &id, false);
		if (ret == 0)
			ret = diag_receive(fd, false, state_one, &st);
		close(fd);
	}
	if (ret == -ENOENT || ret == -ESTALE)
		return true;	/* gone */
	if (ret < 0) {
		errno = -ret;
		log_warn("asking the kernel for the state of a connection");
		return true;
	}
	return !st.found || st.state != TCP_ESTABLISHED || st.ino != p->ino;
}

const char *peer_format(const struct peer *p, char *buf, size_t size)
{
	char addr[INET6_ADDRSTRLEN];
	const uint8_t *b = (const uint8_t *)p->dst;
	static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	if (p->ino == 0) {
		snprintf(buf, size, p->smb ? "unknown" : "local");
	} else if (p->family == AF_INET || memcmp(b, v4mapped, 12) == 0) {
		inet_ntop(AF_INET, p->family == AF_INET ? b : b + 12, addr, sizeof(addr));
		snprintf(buf, size, "%s:%u", addr, (unsigned)ntohs(p->dport));
	} else {
		inet_ntop(AF_INET6, b, addr, sizeof(addr));
		snprintf(buf, size, "[%s]:%u", addr, (unsigned)ntohs(p->dport));
	}
	return buf;
}
