/* fs/setid.c: set-ID bits cleared as the kernel clears them for local
 * files. A write, a truncating open, a truncate or a chown by a writer
 * without CAP_FSETID clears set-user-ID, and set-group-ID where group
 * execution is on: the daemon writes as root, so the backing filesystem
 * would keep them. With FUSE_HANDLE_KILLPRIV_V2 (transport/) the kernel
 * says per request when (and leaves truncate and chown to op_setattr());
 * without it, anyone but root stands in for "without CAP_FSETID". */
#ifndef INBOXFS_SETID_H
#define INBOXFS_SETID_H

#include <stdbool.h>
#include <sys/types.h>

/* Must the request being handled on this thread, by WRITER, clear the
 * set-ID bits of the file it writes, truncates or opens with O_TRUNC? */
bool setid_must_clear(uid_t writer);
/* Clear set-user-ID, and set-group-ID if group execution is on, of the
 * regular file at FD (any descriptor, O_PATH too). 0 or -errno. */
int setid_clear(int fd);
/* A write by WRITER to FD's file: setid_clear() if setid_must_clear(). */
int setid_write(uid_t writer, int fd);

#endif
