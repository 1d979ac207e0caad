/* The FUSE wire protocol facts that libfuse 3.14 (protocol 7.38) does not
 * know, as the kernel's include/uapi/linux/fuse.h defines them, with the
 * protocol minor version that brought each. Only what transport.c and
 * uring.c use; the layouts are the kernel ABI and never change. Delete
 * this file with transport.c once the platform's libfuse knows them
 * (libfuse 3.16 knows passthrough, 3.18 io_uring). */
#ifndef INBOXFS_FUSE_WIRE_H
#define INBOXFS_FUSE_WIRE_H

#include <stdint.h>

/* Opcodes (7.1 on) */
enum {
	WIRE_SETATTR = 4,
	WIRE_OPEN = 14,
	WIRE_WRITE = 16,
	WIRE_INIT = 26,
	WIRE_CREATE = 35,
};

struct wire_in_header {		/* fuse_in_header */
	uint32_t len;
	uint32_t opcode;
	uint64_t unique;
	uint64_t nodeid;
	uint32_t uid;
	uint32_t gid;
	uint32_t pid;
	uint16_t total_extlen;	/* 7.38 */
	uint16_t padding;
};

struct wire_out_header {	/* fuse_out_header */
	uint32_t len;
	int32_t error;
	uint64_t unique;
};

struct wire_init_in {		/* fuse_init_in; 16 bytes before 7.36 */
	uint32_t major;
	uint32_t minor;
	uint32_t max_readahead;
	uint32_t flags;
	uint32_t flags2;	/* 7.36, with FUSE_INIT_EXT */
	uint32_t unused[11];
};

struct wire_init_out {		/* fuse_init_out, 64 bytes since 7.23 */
	uint32_t major;
	uint32_t minor;
	uint32_t max_readahead;
	uint32_t flags;
	uint16_t max_background;
	uint16_t congestion_threshold;
	uint32_t max_write;
	uint32_t time_gran;
	uint16_t max_pages;
	uint16_t map_alignment;
	uint32_t flags2;
	uint32_t max_stack_depth;	/* 7.40; libfuse 3.14: unused[0] */
	uint16_t request_timeout;	/* 7.43 */
	uint16_t unused[11];
};

struct wire_write_in {		/* fuse_write_in (7.9 on) */
	uint64_t fh;
	uint64_t offset;
	uint32_t size;
	uint32_t write_flags;
	uint64_t lock_owner;
	uint32_t flags;
	uint32_t padding;
};

struct wire_open_in {		/* fuse_open_in */
	uint32_t flags;
	uint32_t open_flags;	/* 7.33 */
};

struct wire_create_in {		/* fuse_create_in */
	uint32_t flags;
	uint32_t mode;
	uint32_t umask;
	uint32_t open_flags;	/* 7.33 */
};

/* INIT flags (flags, and flags2 shifted up by 32) */
#define WIRE_WRITEBACK_CACHE	(1ULL << 16)
#define WIRE_HANDLE_KILLPRIV	(1ULL << 19)
#define WIRE_HANDLE_KILLPRIV_V2	(1ULL << 28)	/* 7.33 */
#define WIRE_INIT_EXT		(1ULL << 30)	/* 7.36 */
#define WIRE_PASSTHROUGH	(1ULL << 37)	/* 7.40 */
#define WIRE_OVER_IO_URING	(1ULL << 41)	/* 7.42 */

struct wire_open_out {		/* fuse_open_out */
	uint64_t fh;
	uint32_t open_flags;
	int32_t backing_id;	/* 7.40; libfuse 3.14: padding */
};
#define WIRE_FOPEN_DIRECT_IO	(1U << 0)
#define WIRE_FOPEN_NOFLUSH	(1U << 5)	/* 7.35 */
#define WIRE_FOPEN_PASSTHROUGH	(1U << 7)	/* 7.40 */

#define WIRE_WRITE_KILL_SUIDGID	(1U << 2)	/* write_flags, 7.33 */
#define WIRE_OPEN_KILL_SUIDGID	(1U << 0)	/* open_flags, 7.33 */
#define WIRE_FATTR_KILL_SUIDGID	(1U << 11)	/* setattr valid, 7.33; libfuse
						 * passes it as FUSE_SET_ATTR_KILL_SUID */

/* FUSE over io_uring (7.42, kernel 6.14) */
#define WIRE_URING_IN_OUT_HEADER_SZ 128
#define WIRE_URING_OP_IN_OUT_SZ 128

struct wire_uring_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;	/* the request's unique */
	uint32_t payload_sz;
	uint32_t padding;
	uint64_t reserved;
};

struct wire_uring_req_header {
	char in_out[WIRE_URING_IN_OUT_HEADER_SZ];	/* in / out header */
	char op_in[WIRE_URING_OP_IN_OUT_SZ];		/* the opcode's own header */
	struct wire_uring_ent_in_out ring_ent_in_out;
};

enum {
	WIRE_IO_URING_CMD_REGISTER = 1,
	WIRE_IO_URING_CMD_COMMIT_AND_FETCH = 2,
};

struct wire_uring_cmd_req {	/* in the SQE's 80-byte command area */
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};

_Static_assert(sizeof(struct wire_in_header) == 40, "fuse_in_header");
_Static_assert(sizeof(struct wire_out_header) == 16, "fuse_out_header");
_Static_assert(sizeof(struct wire_init_in) == 64, "fuse_init_in");
_Static_assert(sizeof(struct wire_init_out) == 64, "fuse_init_out");
_Static_assert(sizeof(struct wire_write_in) == 40, "fuse_write_in");
_Static_assert(sizeof(struct wire_uring_req_header) == 288, "fuse_uring_req_header");
_Static_assert(sizeof(struct wire_uring_cmd_req) == 24, "fuse_uring_cmd_req");

#endif
