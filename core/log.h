/* Logging in the OpenSMTPD manner: log_warn() appends strerror(errno),
 * log_warnx() does not; fatal()/fatalx() exit. Lines go to stderr in the
 * foreground and to syslog (journald) once daemonised. */
#ifndef INBOXFS_LOG_H
#define INBOXFS_LOG_H

#include <stdbool.h>
#include <stddef.h>

void log_init(bool to_stderr, bool debug);
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_notice(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* The prefix of a stderr line of priority PRI (LOG_INFO, ...): "<6>" when
 * stderr is the journal, else "2026-01-31T12:00:00.000Z inboxfs[PID] info: ".
 * Returns what snprintf() returns. */
int log_prefix(int pri, char *buf, size_t size);
const char *log_level_name(int pri);

/* Quote a client-supplied name for a log line: control bytes, quotes and
 * backslashes become \xNN so one name is always one token. */
const char *log_name(const char *name, char *buf, unsigned size);

#endif
