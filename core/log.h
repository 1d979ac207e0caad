/* Logging in the OpenSMTPD manner: log_warn() appends strerror(errno),
 * log_warnx() does not; fatal()/fatalx() exit. Lines go to stderr in the
 * foreground and to syslog (journald) once daemonised. */
#ifndef INBOXFS_LOG_H
#define INBOXFS_LOG_H

#include <stdbool.h>

void log_init(bool to_stderr, bool debug);
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Quote a client-supplied name for a log line: control bytes, quotes and
 * backslashes become \xNN so one name is always one token. */
const char *log_name(const char *name, char *buf, unsigned size);

#endif
