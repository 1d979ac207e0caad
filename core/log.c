/* Logging: stderr in the foreground, syslog when daemonised. Every line
 * carries its syslog priority: on stderr that journald reads (systemd sets
 * JOURNAL_STREAM for a unit's stderr) as the "<N>" prefix of sd-daemon(3),
 * which journald turns into the entry's priority; on any other stderr as a
 * UTC timestamp and a level word. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static bool log_stderr = true;
static bool log_journal;
static bool log_verbose;

void log_init(bool to_stderr, bool debug)
{
	const char *stream = getenv("JOURNAL_STREAM");

	log_stderr = to_stderr;
	log_verbose = debug;
	/* JOURNAL_STREAM is inherited by children whose stderr is elsewhere;
	 * only a stderr that still is the journal's stream gets prefixes. */
	log_journal = false;
	if (stream != NULL) {
		unsigned long long dev, ino;
		struct stat st;

		if (sscanf(stream, "%llu:%llu", &dev, &ino) == 2 &&
		    fstat(STDERR_FILENO, &st) == 0 &&
		    (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino)
			log_journal = true;
	}
	/* LOG_CONS: with no syslog daemon to take a line, it goes to the
	 * console rather than nowhere. */
	if (!to_stderr)
		openlog("inboxfs", LOG_PID | LOG_NDELAY | LOG_CONS, LOG_DAEMON);
}

const char *log_level_name(int pri)
{
	static const char *const names[] = {
		"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
	};

	return names[pri & 7];
}

int log_prefix(int pri, char *buf, size_t size)
{
	struct timespec now;
	struct tm tm;
	char stamp[32];

	if (log_journal)
		return snprintf(buf, size, "<%d>", pri & 7);
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	return snprintf(buf, size, "%s.%03ldZ inboxfs[%ld] %s: ", stamp,
			now.tv_nsec / 1000000, (long)getpid(), log_level_name(pri));
}

static void vlog(int pri, const char *fmt, va_list ap, const char *err)
{
	char line[1024], prefix[96];

	vsnprintf(line, sizeof(line), fmt, ap);
	if (log_stderr) {
		log_prefix(pri, prefix, sizeof(prefix));
		/* One write per line, so threads' lines never interleave. */
		if (err)
			fprintf(stderr, "%s%s: %s\n", prefix, line, err);
		else
			fprintf(stderr, "%s%s\n", prefix, line);
	} else if (err) {
		syslog(pri, "%s: %s", line, err);
	} else {
		syslog(pri, "%s", line);
	}
}

#define LOG_BODY(pri, err) do { va_list ap; va_start(ap, fmt); \
	vlog(pri, fmt, ap, err); va_end(ap); } while (0)

void log_info(const char *fmt, ...) { LOG_BODY(LOG_INFO, NULL); }
void log_notice(const char *fmt, ...) { LOG_BODY(LOG_NOTICE, NULL); }
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
