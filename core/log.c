/* Logging: stderr in the foreground, syslog when daemonised. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

static bool log_stderr = true;
static bool log_verbose;

void log_init(bool to_stderr, bool debug)
{
	log_stderr = to_stderr;
	log_verbose = debug;
	if (!to_stderr)
		openlog("inboxfs", LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

static void vlog(int pri, const char *fmt, va_list ap, const char *err)
{
	char line[1024];

	vsnprintf(line, sizeof(line), fmt, ap);
	if (log_stderr) {
		if (err)
			fprintf(stderr, "inboxfs: %s: %s\n", line, err);
		else
			fprintf(stderr, "inboxfs: %s\n", line);
	} else if (err) {
		syslog(pri, "%s: %s", line, err);
	} else {
		syslog(pri, "%s", line);
	}
}

#define LOG_BODY(pri, err) do { va_list ap; va_start(ap, fmt); \
	vlog(pri, fmt, ap, err); va_end(ap); } while (0)

void log_info(const char *fmt, ...) { LOG_BODY(LOG_INFO, NULL); }
void log_warnx(const char *fmt, ...) { LOG_BODY(LOG_WARNING, NULL); }

void log_debug(const char *fmt, ...)
{
	if (log_verbose)
		LOG_BODY(LOG_DEBUG, NULL);
}

void log_warn(const char *fmt, ...)
{
	const char *err = strerror(errno);

	LOG_BODY(LOG_WARNING, err);
}

void fatal(const char *fmt, ...)
{
	const char *err = strerror(errno);

	LOG_BODY(LOG_CRIT, err);
	exit(1);
}

void fatalx(const char *fmt, ...)
{
	LOG_BODY(LOG_CRIT, NULL);
	exit(1);
}

const char *log_name(const char *name, char *buf, unsigned size)
{
	static const char hex[] = "0123456789abcdef";
	unsigned o = 0;

	for (const unsigned char *p = (const unsigned char *)name; *p && o + 5 < size; p++) {
		if (*p < 0x20 || *p == 0x7f || *p == '"' || *p == '\\') {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[*p >> 4];
			buf[o++] = hex[*p & 15];
		} else {
			buf[o++] = (char)*p;
		}
	}
	buf[o] = '\0';
	return buf;
}
