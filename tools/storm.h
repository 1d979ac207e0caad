/* inbox-storm's shared parts: the run's options and shared counters, and
 * the two halves that live in files of their own, the message format with
 * its verification (storm-message.c) and the command line
 * (storm-options.c). */
#ifndef INBOX_STORM_H
#define INBOX_STORM_H

#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define PROG "inbox-storm"
#define RUN_ID_LEN 16
#define SIZE_MIN 96		/* the header of any message fits in this */
#define CLIENTS_MAX 4096
#define ERRORS_SHOWN 3		/* per client, and corrupt files in the scan */

enum name_mode { NAMES_CLOCK, NAMES_FIXED, NAMES_UNIQUE };

/* What the clients share with the parent. Each client writes only its own
 * slot and its own acknowledgement bits; the parent reads the counters for
 * progress and everything once the clients have exited. */
struct client_slot {
	_Atomic uint64_t sent;		/* messages begun (seq 0 .. sent-1) */
	_Atomic uint64_t acked;		/* closes that succeeded */
	_Atomic uint64_t collisions;	/* EEXIST, message given up */
	_Atomic uint64_t retries;	/* EEXIST, retried under a new name */
	_Atomic uint64_t errors;	/* any other failure of create, write, close */
} __attribute__((aligned(64)));

struct shared {
	_Atomic int go;		/* set before the start barrier opens */
	_Atomic int stop;	/* --duration over, or interrupted */
	struct client_slot slot[];
};

struct options {
	unsigned clients;
	uint64_t messages;	/* per client; 0 with --duration */
	double duration;
	size_t size;
	enum name_mode names;
	const char *ext;
	bool retry;
	bool json;
	bool quiet;
	const char *verify_dir;
	double settle;		/* seconds to wait before verifying */
	const char *target;
	const char *credentials;
	char run_id[RUN_ID_LEN + 1];
};

/* An smb://HOST[:PORT]/SHARE[/DIR] target, split for libsmbclient. */
struct smb_target {
	char url[PATH_MAX];	/* smb://HOST/SHARE[/DIR], without the port */
	uint16_t port;
	char domain[128];
	char user[128];
	char password[256];
};

struct storm {
	struct options opt;
	bool smb;
	struct smb_target smbt;
	uint64_t run_seed;
	uint64_t capacity;	/* messages per client the ack bitmap holds */
	size_t ack_words;	/* per client */
	struct shared *sh;
	size_t sh_len;
	uint64_t *acks;
	size_t acks_len;
	time_t started;
};

/* What verify_scan() found in the backing inbox, by content. */
struct verify_result {
	uint64_t delivered;
	uint64_t delivered_unacked;	/* found intact, its client saw a failure */
	uint64_t lost_acked;		/* acknowledged, not found */
	uint64_t corrupt;
	uint64_t duplicated;
	uint64_t unexpected;		/* intact, of this run, never sent */
	uint64_t foreign;		/* not a message of this run */
	uint64_t unreadable;
};

/* storm-message.c: message SEQ of CLIENT into BUF (opt.size bytes), and
 * the scan of DIRFD for this run's messages (0 or -errno). */
void message_build(const struct storm *st, unsigned client, uint64_t seq, char *buf);
int verify_scan(const struct storm *st, int dirfd, const uint64_t *sent,
		struct verify_result *r);

/* storm-options.c: the command line into ST->opt (and ST->smb, ST->smbt);
 * exits 2 with one line on stderr if it is wrong. */
void parse_options(int argc, char **argv, struct storm *st);

#endif
