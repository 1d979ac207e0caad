/* Unit tests for core/peer.c: a process's accepted TCP connection is found
 * by socket inode (IPv4 and IPv6), its end is seen through inet_diag while
 * the process keeps its descriptor, nothing of it is held, and only smbd
 * processes are watched. The test process plays both ends on loopback. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>

#include "unit.h"

#include "peer.h"

struct conn {
	int listener, client, server;	/* server: the accepted end */
	uint16_t port;			/* the listening port */
	uint16_t client_port;
};

/* A loopback connection of FAMILY; false if the host lacks it. */
static bool connect_loopback(int family, struct conn *c)
{
	struct sockaddr_storage ss;
	socklen_t len;

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		len = sizeof(*a);
	}
	c->listener = socket(family, SOCK_STREAM, 0);
	if (c->listener < 0 || bind(c->listener, (struct sockaddr *)&ss, len) < 0 ||
	    listen(c->listener, 1) < 0) {
		if (c->listener >= 0)
			close(c->listener);
		return false;
	}
	assert_int_equal(getsockname(c->listener, (struct sockaddr *)&ss, &len), 0);
	c->port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					  : ((struct sockaddr_in6 *)&ss)->sin6_port);
	c->client = socket(family, SOCK_STREAM, 0);
	assert_true(c->client >= 0);
	assert_int_equal(connect(c->client, (struct sockaddr *)&ss, len), 0);
	c->server = accept(c->listener, NULL, NULL);
	assert_true(c->server >= 0);
	len = sizeof(ss);
	assert_int_equal(getsockname(c->client, (struct sockaddr *)&ss, &len), 0);
	c->client_port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
						 : ((struct sockaddr_in6 *)&ss)->sin6_port);
	return true;
}

static uint64_t inode_of(int fd)
{
	struct stat st;

	assert_int_equal(fstat(fd, &st), 0);
	return st.st_ino;
}

static void check_family(int family, const char *expect_addr)
{
	struct conn c;
	struct peer p;
	char buf[80], want[80];

	if (!connect_loopback(family, &c)) {
		print_message("no loopback for family %d: skipped\n", family);
		return;
	}
	/* Both ends are this process's: the accepted one is the server's. */
	assert_int_equal(peer_find(getpid(), &p), 1);
	assert_true(p.ino == inode_of(c.server));
	assert_int_equal(ntohs(p.sport), c.port);
	assert_int_equal(ntohs(p.dport), c.client_port);
	snprintf(want, sizeof(want), expect_addr, (unsigned)c.client_port);
	assert_string_equal(peer_format(&p, buf, sizeof(buf)), want);
	assert_false(peer_lost(&p));
	assert_false(peer_lost(&p));	/* asking changes nothing */

	/* The client goes: the server's end is no longer established,
	 * though this process still holds its descriptor. */
	close(c.client);
	assert_true(peer_lost(&p));
	close(c.server);
	assert_true(peer_lost(&p));
	close(c.listener);
}

static void test_ipv4(void **state)
{
	(void)state;
	check_family(AF_INET, "127.0.0.1:%u");
}

static void test_ipv6(void **state)
{
	(void)state;
	check_family(AF_INET6, "[::1]:%u");
}

/* Watching holds nothing: the client's close reaches its peer (EOF). */
static void test_nothing_held(void **state)
{
	struct conn c;
	struct peer p;
	char byte;

	(void)state;
	assert_true(connect_loopback(AF_INET, &c));
	assert_int_equal(peer_find(getpid(), &p), 1);
	close(c.server);
	assert_int_equal(read(c.client, &byte, 1), 0);	/* EOF, at once */
	assert_true(peer_lost(&p));
	close(c.client);
	close(c.listener);
}

/* A connection whose client has half-closed it (its FIN is in: the
 * server's end is in CLOSE_WAIT) is still found, as lost: smbd may be
 * serving a create it read before that FIN (a client that sends CREATE and
 * WRITE and shuts its side down without a CLOSE). */
static void test_close_wait_found_as_lost(void **state)
{
	struct conn c;
	struct peer p;

	(void)state;
	assert_true(connect_loopback(AF_INET, &c));
	assert_int_equal(shutdown(c.client, SHUT_WR), 0);
	assert_int_equal(peer_find(getpid(), &p), 1);
	assert_true(p.ino == inode_of(c.server));
	assert_int_equal(ntohs(p.sport), c.port);
	assert_true(peer_lost(&p));
	close(c.client);
	close(c.server);
	close(c.listener);
}

/* A listening IPv4 loopback socket on a free port; its port in *PORT. */
static int listen_loopback(uint16_t *port, int backlog)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, len), 0);
	assert_int_equal(listen(fd, backlog), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

#define MANY_LISTENERS 600
#define MANY_OUTGOING 400
#define TARGETS 4

/* No fixed cap changes the answer: with hundreds of listening ports on the
 * host and a hundred connections of the process's own that were not
 * accepted on any of them (outgoing ones, to a domain controller say),
 * the accepted one is still the one found. */
static int many_fds[MANY_LISTENERS + MANY_OUTGOING + 4 * TARGETS];
static size_t nmany;

/* A failed assertion leaves the test at once: close what it opened. */
static int close_many(void **state)
{
	(void)state;
	while (nmany > 0)
		close(many_fds[--nmany]);
	return 0;
}

static int keep(int fd)
{
	assert_true(fd >= 0 && nmany < sizeof(many_fds) / sizeof(many_fds[0]));
	many_fds[nmany++] = fd;
	return fd;
}

static void test_no_cap_on_sockets(void **state)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	struct rlimit rl;
	uint16_t port, target_port = 0;
	struct peer p;
	int target_listener, client, server;

	(void)state;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < MANY_LISTENERS + MANY_OUTGOING + 4 * TARGETS + 64) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < MANY_LISTENERS + MANY_OUTGOING + 4 * TARGETS + 64) {
		print_message("descriptor limit %lu too low: skipped\n", (unsigned long)rl.rlim_cur);
		skip();
	}
	for (int i = 0; i < MANY_LISTENERS; i++)
		keep(listen_loopback(&port, 1));
	/* Outgoing connections, never accepted: their server ends sit in the
	 * accept queue, held by no descriptor. */
	keep(listen_loopback(&port, MANY_OUTGOING + 8));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons(port);
	for (int i = 0; i < MANY_OUTGOING; i++) {
		int fd = keep(socket(AF_INET, SOCK_STREAM, 0));

		assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	}
	/* The one connection the process accepted, on the last port opened;
	 * again, on another port, after closing the one before (the kernel
	 * lists sockets in hash order: each round is another draw). */
	for (int round = 0; round < TARGETS; round++) {
		target_listener = keep(listen_loopback(&target_port, 1));
		a.sin_port = htons(target_port);
		client = keep(socket(AF_INET, SOCK_STREAM, 0));
		assert_int_equal(connect(client, (struct sockaddr *)&a, sizeof(a)), 0);
		server = keep(accept(target_listener, NULL, NULL));

		assert_int_equal(peer_find(getpid(), &p), 1);
		assert_int_equal(ntohs(p.sport), target_port);
		assert_true(p.ino == inode_of(server));
		/* Only one accepted connection at a time: its client's end
		 * stays, an outgoing one like the others. */
		close(many_fds[--nmany]);	/* server, the last kept */
	}
}

static void test_none_and_not_smbd(void **state)
{
	struct peer p;
	char buf[16];
	pid_t child;
	int status;

	(void)state;
	/* This process is no SMB server: nothing is watched, whatever it has. */
	assert_false(peer_is_smb_server(getpid()));
	assert_int_equal(peer_watch(getpid(), &p), 0);
	assert_true(p.ino == 0);
	assert_false(peer_lost(&p));
	assert_string_equal(peer_format(&p, buf, sizeof(buf)), "local");
	/* An SMB server process whose connection was not found is never
	 * taken for a local one: its connection counts as lost. */
	p.smb = true;
	assert_true(peer_lost(&p));
	assert_string_equal(peer_format(&p, buf, sizeof(buf)), "unknown");
	/* A process without a connection. */
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		close_range(3, ~0U, 0);	/* none of the parent's sockets */
		pause();
		_exit(0);
	}
	assert_int_equal(peer_find(child, &p), 0);
	assert_true(p.ino == 0);
	kill(child, SIGKILL);
	waitpid(child, &status, 0);
	/* A process that is gone. */
	assert_int_equal(peer_find(child, &p), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ipv4),
		cmocka_unit_test(test_ipv6),
		cmocka_unit_test(test_nothing_held),
		cmocka_unit_test(test_close_wait_found_as_lost),
		cmocka_unit_test_teardown(test_no_cap_on_sockets, close_many),
		cmocka_unit_test(test_none_and_not_smbd),
	};

	unit_xml_reset();
	return cmocka_run_group_tests_name("unit-peer", tests, NULL, NULL);
}
