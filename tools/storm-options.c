/* inbox-storm's command line: options, the SMB target and credentials. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "storm.h"

#define SIZE_MAX_BYTES (256u << 20)

/* ------------------------------------------------------------ options */

static void usage(FILE *out)
{
	fprintf(out,
"usage: " PROG " [options] TARGET\n"
"Play N legacy clients dropping messages with create-new into TARGET at once\n"
"and report what was delivered.\n"
"\n"
"TARGET is a local directory or smb://HOST[:PORT]/SHARE[/DIR].\n"
"\n"
"  -c, --clients N        client processes (default 16)\n"
"  -n, --messages M       messages per client (default 100)\n"
"      --duration SECS    run for SECS seconds instead of -n\n"
"  -s, --size BYTES       message size (default 2048, at least %d)\n"
"      --names MODE       clock: 8 hex digits from a PRNG seeded with the\n"
"                         current second (default); fixed: one name for all;\n"
"                         unique: RUNID-CLIENT-SEQ, never colliding (not what\n"
"                         legacy clients do: for measuring throughput)\n"
"      --ext EXT          extension of the names (default .SVF)\n"
"      --retry            on a collision retry under a new name (default: give\n"
"                         the message up, as legacy clients do)\n"
"  -U, --user USER%%PASS   SMB credentials ([DOMAIN\\]USER[%%PASSWORD]; the\n"
"                         password may come from $PASSWD)\n"
"      --verify DIR       afterwards, check the messages in DIR (the backing\n"
"                         inbox, read locally) by content\n"
"      --settle SECS      with --verify, wait SECS seconds first (a mount with\n"
"                         linger= publishes acknowledged messages that late)\n"
"      --run-id HEX       the run's id (16 hex digits; default random)\n"
"      --json             print the summary as JSON\n"
"  -q, --quiet            no progress, no diagnostics\n"
"  -h, --help             this text\n"
"\n"
"Exit status: 0 if nothing was lost, corrupt or duplicated (without --verify:\n"
"nothing lost as far as the clients know), 1 otherwise, 2 if the storm could\n"
"not run.\n", SIZE_MIN);
}

static void __attribute__((noreturn, format(printf, 1, 2))) usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (try --help)\n", stderr);
	exit(2);
}

static uint64_t parse_count(const char *opt, const char *arg, uint64_t min, uint64_t max)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(arg, &end, 10);
	if (errno || end == arg || *end || arg[0] == '-' || v < min || v > max)
		usage_error("%s wants a whole number from %" PRIu64 " to %" PRIu64 ", not '%s'",
			    opt, min, max, arg);
	return v;
}

/* smb://HOST[:PORT]/SHARE[/DIR] -> url without the port, and the port. */
static void parse_smb_target(const char *target, struct smb_target *t)
{
	const char *host = target + strlen("smb://"), *host_end, *rest;
	const char *port = NULL;

	if (*host == '[') {	/* [IPv6]:PORT */
		host_end = strchr(host, ']');
		if (!host_end)
			usage_error("bad SMB target '%s'", target);
		host_end++;
	} else {
		host_end = host + strcspn(host, ":/");
	}
	rest = host_end;
	if (*rest == ':') {
		port = rest + 1;
		rest = port + strcspn(port, "/");
	}
	if (host_end == host || *rest != '/' || rest[1] == '\0' || rest[1] == '/')
		usage_error("SMB target '%s' is not smb://HOST[:PORT]/SHARE[/DIR]", target);
	if (port) {
		char digits[8];
		size_t n = (size_t)(rest - port);
		if (n == 0 || n >= sizeof(digits))
			usage_error("bad port in '%s'", target);
		memcpy(digits, port, n);
		digits[n] = '\0';
		t->port = (uint16_t)parse_count("the port", digits, 1, 65535);
	}
	size_t rest_len = strlen(rest);
	while (rest_len > 1 && rest[rest_len - 1] == '/')
		rest_len--;
	if ((size_t)snprintf(t->url, sizeof(t->url), "smb://%.*s%.*s", (int)(host_end - host),
			     host, (int)rest_len, rest) >= sizeof(t->url))
		usage_error("SMB target too long");
}

/* [DOMAIN\ or DOMAIN/]USER[%PASSWORD], as smbclient -U takes it. */
static void parse_credentials(const char *arg, struct smb_target *t)
{
	const char *user = arg, *sep = strpbrk(arg, "\\/"), *pct;
	const char *password = NULL;

	if (sep) {
		if ((size_t)(sep - arg) >= sizeof(t->domain))
			usage_error("domain in -U too long");
		memcpy(t->domain, arg, (size_t)(sep - arg));
		t->domain[sep - arg] = '\0';
		user = sep + 1;
	}
	pct = strchr(user, '%');
	size_t ulen = pct ? (size_t)(pct - user) : strlen(user);
	if (ulen == 0 || ulen >= sizeof(t->user))
		usage_error("-U wants USER[%%PASSWORD]");
	memcpy(t->user, user, ulen);
	t->user[ulen] = '\0';
	password = pct ? pct + 1 : getenv("PASSWD");
	if (password && (size_t)snprintf(t->password, sizeof(t->password), "%s", password)
	    >= sizeof(t->password))
		usage_error("password in -U too long");
}

void parse_options(int argc, char **argv, struct storm *st)
{
	enum { OPT_DURATION = 256, OPT_NAMES, OPT_EXT, OPT_RETRY, OPT_VERIFY, OPT_JSON,
	       OPT_RUN_ID, OPT_VERSION, OPT_SETTLE };
	static const struct option longopts[] = {
		{ "clients",  required_argument, NULL, 'c' },
		{ "messages", required_argument, NULL, 'n' },
		{ "size",     required_argument, NULL, 's' },
		{ "duration", required_argument, NULL, OPT_DURATION },
		{ "names",    required_argument, NULL, OPT_NAMES },
		{ "ext",      required_argument, NULL, OPT_EXT },
		{ "retry",    no_argument,       NULL, OPT_RETRY },
		{ "user",     required_argument, NULL, 'U' },
		{ "verify",   required_argument, NULL, OPT_VERIFY },
		{ "settle",   required_argument, NULL, OPT_SETTLE },
		{ "run-id",   required_argument, NULL, OPT_RUN_ID },
		{ "json",     no_argument,       NULL, OPT_JSON },
		{ "quiet",    no_argument,       NULL, 'q' },
		{ "help",     no_argument,       NULL, 'h' },
		{ "version",  no_argument,       NULL, OPT_VERSION },
		{ NULL, 0, NULL, 0 }
	};
	struct options *o = &st->opt;
	bool have_messages = false;
	char *end;
	int ch;

	o->clients = 16;
	o->messages = 100;
	o->size = 2048;
	o->names = NAMES_CLOCK;
	o->ext = ".SVF";

	opterr = 0;
	while ((ch = getopt_long(argc, argv, "c:n:s:U:qh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			o->clients = (unsigned)parse_count("--clients", optarg, 1, CLIENTS_MAX);
			break;
		case 'n':
			o->messages = parse_count("--messages", optarg, 1, UINT32_MAX);
			have_messages = true;
			break;
		case 's':
			o->size = (size_t)parse_count("--size", optarg, SIZE_MIN, SIZE_MAX_BYTES);
			break;
		case OPT_DURATION:
			errno = 0;
			o->duration = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(o->duration > 0) ||
			    o->duration > 7 * 86400)
				usage_error("--duration wants a number of seconds, not '%s'", optarg);
			break;
		case OPT_NAMES:
			if (strcmp(optarg, "clock") == 0)
				o->names = NAMES_CLOCK;
			else if (strcmp(optarg, "fixed") == 0)
				o->names = NAMES_FIXED;
			else if (strcmp(optarg, "unique") == 0)
				o->names = NAMES_UNIQUE;
			else
				usage_error("--names is clock, fixed or unique, not '%s'", optarg);
			break;
		case OPT_EXT:
			if (strlen(optarg) > 32 || strchr(optarg, '/') ||
			    (optarg[0] && optarg[0] != '.'))
				usage_error("--ext wants a short extension such as .SVF, not '%s'",
					    optarg);
			o->ext = optarg;
			break;
		case OPT_RETRY:
			o->retry = true;
			break;
		case 'U':
			o->credentials = optarg;
			break;
		case OPT_VERIFY:
			o->verify_dir = optarg;
			break;
		case OPT_SETTLE:
			errno = 0;
			o->settle = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(o->settle >= 0) || o->settle > 3600)
				usage_error("--settle wants a number of seconds, not '%s'", optarg);
			break;
		case OPT_RUN_ID:
			if (strlen(optarg) != RUN_ID_LEN ||
			    strspn(optarg, "0123456789abcdef") != RUN_ID_LEN)
				usage_error("--run-id wants %d lowercase hex digits", RUN_ID_LEN);
			memcpy(o->run_id, optarg, RUN_ID_LEN + 1);
			break;
		case OPT_JSON:
			o->json = true;
			break;
		case 'q':
			o->quiet = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case OPT_VERSION:
			printf(PROG " (inboxfs) %s\n", INBOXFS_VERSION);
			exit(0);
		default:
			if (optopt && optopt < 256)
				usage_error("unknown option or missing argument: -%c", optopt);
			usage_error("unknown option or missing argument: %s", argv[optind - 1]);
		}
	}
	if (optind == argc)
		usage_error("no TARGET (a directory or smb://HOST[:PORT]/SHARE[/DIR])");
	if (optind + 1 < argc)
		usage_error("one TARGET only, not '%s' too", argv[optind + 1]);
	o->target = argv[optind];
	if (have_messages && o->duration > 0)
		usage_error("-n and --duration exclude each other");
	if (o->duration > 0)
		o->messages = 0;

	st->smb = strncmp(o->target, "smb://", 6) == 0;
	if (st->smb) {
		parse_smb_target(o->target, &st->smbt);
		if (o->credentials)
			parse_credentials(o->credentials, &st->smbt);
	} else if (o->credentials) {
		usage_error("-U is for smb:// targets");
	} else if (strstr(o->target, "://")) {
		usage_error("'%s': only smb:// URLs are understood", o->target);
	}
}
