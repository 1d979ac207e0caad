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
	/* A process without a connection. */
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
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
		cmocka_unit_test(test_none_and_not_smbd),
	};

	unit_xml_reset();
	return cmocka_run_group_tests_name("unit-peer", tests, NULL, NULL);
}
