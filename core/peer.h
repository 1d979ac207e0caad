/* The network connection an SMB server process serves (DESIGN §3 "Remote
 * clients"), watched without touching it: its socket is found by inode
 * number in /proc/PID/fd (a readlink, no duplicate) and its state is asked
 * of the kernel by NETLINK_SOCK_DIAG (inet_diag), for TCP over IPv4 and
 * IPv6. inboxfs never holds, duplicates or reads a client's socket, and an
 * ordinary local process is never tied to a connection it happens to have.
 *
 * Use: peer_watch() at a drop's create, peer_lost() at its close. */
#ifndef INBOXFS_PEER_H
#define INBOXFS_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct peer {
	uint64_t ino;		/* the socket's inode number; 0: nothing watched */
	uint32_t cookie[2];	/* the kernel's id of that socket, never reused */
	uint8_t family;		/* AF_INET or AF_INET6 */
	uint16_t sport, dport;	/* local and remote port, network order */
	uint32_t src[4], dst[4];	/* local and remote address, network order */
	bool smb;		/* an SMB server process's: with ino 0, its
				 * connection could not be found, and it
				 * counts as lost, never as local */
};

/* True if process PID is an SMB server process: its executable is named
 * smbd (/proc/PID/exe, which a process cannot change as it can its comm;
 * an impostor running a program of that name only ties its own drops). */
bool peer_is_smb_server(pid_t pid);

/* If PID is an SMB server process (see above), find the TCP connection it
 * serves, in whatever state (one its client has half-closed already is
 * found, as lost), and record it in *OUT: 1. 0 with OUT->ino = 0 when PID
 * is no SMB server, or serves no connection that can be found; -errno if
 * it cannot tell. For an SMB server OUT->smb is set in every case, so a
 * connection that cannot be found is lost, not local. */
int peer_watch(pid_t pid, struct peer *out);

/* The same for any process: its TCP socket that was accepted on a port
 * the host listens on (the server side), else its first other one; an
 * established one before one in another state. No cap on how many
 * sockets the process or the host has. */
int peer_find(pid_t pid, struct peer *out);

/* True once the connection P recorded is no longer established (the client
 * closed or reset it, or the socket is gone), or when the kernel cannot be
 * asked (a close that cannot be told from a dead connection's is not
 * acknowledged); true for an SMB server process's peer whose connection
 * was not found. False for a local process's (nothing watched). */
bool peer_lost(const struct peer *p);

/* "ADDR:PORT" of the remote end ("[ADDR]:PORT" for IPv6), "local" when
 * nothing is watched, "unknown" for an SMB server process's connection that
 * was not found. Returns BUF. */
const char *peer_format(const struct peer *p, char *buf, size_t size);

#endif
