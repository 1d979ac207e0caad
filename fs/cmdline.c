/* The command line (cmdline.h). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmdline.h"
#include "config.h"
#include "log.h"
#include "options.h"
#include "staging.h"
#include "transport/transport.h"

#define OPT(t, p) { t, offsetof(struct cmdline, p), 1 }
static const struct fuse_opt inboxfs_opts[] = {
	OPT("observers=%s", observers),
	OPT("staging=%s", staging),
	OPT("sync=%s", sync),
	OPT("datasync=%s", datasync),
	OPT("names=%s", names),
	OPT("linger=%s", linger),
	OPT("max_drops=%s", max_drops),
	OPT("client_mkdir=%s", client_mkdir),
	OPT("drain=%s", drain),
	OPT("xattr=%s", xattr),
	FUSE_OPT_END
};

enum { KEY_HELP, KEY_VERSION };

static const struct fuse_opt help_opts[] = {
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_END
};

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct cmdline *c = data;

	switch (key) {
	case KEY_HELP:
		c->show_help = 1;
		return 0;
	case KEY_VERSION:
		c->show_version = 1;
		return 0;
	case FUSE_OPT_KEY_NONOPT:
		c->nonopts++;
		if (c->inbox == NULL) {
			c->inbox = strdup(arg);
			return 0;
		}
		return 1;	/* the mountpoint, for fuse_parse_cmdline() */
	default:
		return 1;
	}
}

static void usage(FILE *f, const char *prog)
{
	fprintf(f,
"usage: %s [-f] [-d] [-s] [-o OPTIONS] INBOX MOUNTPOINT\n"
"\n"
"Serve INBOX at MOUNTPOINT (which may be INBOX itself) so that no client's\n"
"create of a file ever collides: colliding names are given unique ones.\n"
"\n"
"inboxfs options:\n"
"    -o observers=LIST      users (name or uid) and @groups (name or gid),\n"
"                           ':'-separated, who see the whole inbox (default root)\n"
"    -o staging=DIR         where client drops are written before publication\n"
"                           (default INBOX/.inboxfs; same filesystem as INBOX)\n"
"    -o sync=close|none     fsync a drop before its close returns (default close)\n"
"    -o datasync=auto|fsync with sync=close: auto makes a drop durable in one\n"
"                           journal commit where the filesystem allows it\n"
"                           (journaled ext4, XFS), fsync its own data always\n"
"                           (default auto)\n"
"    -o names=TEMPLATE      unique-name form: default (%%s~%%t%%e), 8.3 (%%8t%%3e),\n"
"                           or a template of %%s stem, %%t tag, %%e extension\n"
"    -o linger=SECONDS      keep a closed drop visible to its session (default 0)\n"
"    -o max_drops=N         open drops a session may hold, 0: no cap (default 1024)\n"
"    -o client_mkdir=yes|no\n"
"                           let clients create directories (default no)\n"
"    -o drain=SECONDS       at SIGTERM or SIGINT, serve on until no drop is open,\n"
"                           for up to this long; 0: stop at once (default 10)\n"
"    -o xattr=yes|no        serve extended attributes (ACLs, user.*); no: none,\n"
"                           for anyone, and no round trip for them (default yes)\n"
"%s"
"\n"
"general options:\n"
"    -f                     stay in the foreground, log to stderr\n"
"    -d                     debug output (implies -f)\n"
"    -s                     single-threaded\n"
"    -h, --help             this text\n"
"    -V, --version          print version\n", prog, transport_usage);
}

/* Every -o list on the command line, before libfuse parses any: an empty
 * or spaced one gets a line that names it (R11). */
static int check_option_lists(int argc, char *argv[])
{
	char why[160];

	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
		const char *list;

		if (strcmp(argv[i], "-o") == 0 && i + 1 < argc)
			list = argv[++i];
		else if (strncmp(argv[i], "-o", 2) == 0)
			list = argv[i] + 2;
		else
			continue;
		if (option_list_check(list, why, sizeof(why)) < 0) {
			fprintf(stderr, "inboxfs: -o \"%s\": %s\n", list, why);
			return -1;
		}
	}
	return 0;
}

static int parse_config(const struct cmdline *c, struct inboxfs_config *cfg)
{
	char bad[256];

	if (observers_parse(c->observers ? c->observers : "root", &cfg->observers, bad, sizeof(bad)) < 0) {
		fprintf(stderr, "inboxfs: observers=: unknown or bad entry '%s'\n", bad);
		return -1;
	}
	if (sync_mode_parse(c->sync ? c->sync : "close", &cfg->sync) < 0) {
		fprintf(stderr, "inboxfs: sync=%s: expected close or none\n", c->sync);
		return -1;
	}
	if (datasync_parse(c->datasync ? c->datasync : "auto", &cfg->datasync_fsync) < 0) {
		fprintf(stderr, "inboxfs: datasync=%s: expected auto or fsync\n", c->datasync);
		return -1;
	}
	char why[160];

	if (name_template_check(c->names ? c->names : "default", &cfg->names, why,
				sizeof(why)) < 0) {
		fprintf(stderr, "inboxfs: names=%s: %s\n", c->names, why);
		return -1;
	}
	if (seconds_parse(c->linger ? c->linger : "0", &cfg->linger) < 0) {
		fprintf(stderr, "inboxfs: linger=%s: expected whole seconds, 0 to 86400\n", c->linger);
		return -1;
	}
	if (count_parse(c->max_drops ? c->max_drops : "1024", &cfg->max_drops) < 0) {
		fprintf(stderr, "inboxfs: max_drops=%s: expected a whole number, 0 to 1000000\n",
			c->max_drops);
		return -1;
	}
	if (yes_no_parse(c->client_mkdir ? c->client_mkdir : "no", &cfg->client_mkdir) < 0) {
		fprintf(stderr, "inboxfs: client_mkdir=%s: expected yes or no\n", c->client_mkdir);
		return -1;
	}
	if (yes_no_parse(c->xattr ? c->xattr : "yes", &cfg->xattr) < 0) {
		fprintf(stderr, "inboxfs: xattr=%s: expected yes or no\n", c->xattr);
		return -1;
	}
	if (c->drain == NULL)
		cfg->drain = DRAIN_DEFAULT;
	else if (drain_parse(c->drain, &cfg->drain) < 0) {
		fprintf(stderr, "inboxfs: drain=%s: expected whole seconds, 0 to %d\n", c->drain,
			DRAIN_MAX);
		return -1;
	}
	return 0;
}


int cmdline_parse(int argc, char *argv[], struct cmdline *c, struct inboxfs_config *cfg)
{
	c->args = (struct fuse_args)FUSE_ARGS_INIT(argc, argv);
	if (check_option_lists(argc, argv) < 0 ||
	    transport_opt_parse(&c->args) < 0 ||
	    fuse_opt_parse(&c->args, c, inboxfs_opts, NULL) < 0 ||
	    fuse_opt_parse(&c->args, c, help_opts, opt_proc) < 0)
		return -1;
	if (c->show_help) {
		usage(stdout, argv[0]);
		return 1;
	}
	if (c->show_version) {
		printf("inboxfs %s (FUSE library %s)\n", INBOXFS_VERSION, fuse_pkgversion());
		return 1;
	}
	if (c->nonopts != 2) {
		fprintf(stderr, "inboxfs: expected INBOX and MOUNTPOINT (see --help)\n");
		return -1;
	}
	if (fuse_parse_cmdline(&c->args, &c->opts) != 0)
		return -1;
	return parse_config(c, cfg);
}

void cmdline_log(const struct cmdline *c, const struct inboxfs_config *cfg)
{
	log_notice("options in force: observers=%s,staging=%s%s,sync=%s,datasync=%s,names=%s,"
		   "linger=%u,max_drops=%u,client_mkdir=%s,xattr=%s",
		   c->observers ? c->observers : "root", c->staging ? c->staging : c->inbox,
		   c->staging ? "" : "/" STAGING_DIR, c->sync ? c->sync : "close",
		   cfg->datasync_fsync ? "fsync" : "auto",
		   c->names ? c->names : "default", cfg->linger, cfg->max_drops,
		   cfg->client_mkdir ? "yes" : "no", cfg->xattr ? "yes" : "no");
}

void cmdline_free(struct cmdline *c)
{
	free(c->opts.mountpoint);
	free(c->inbox);
	free(c->observers);
	free(c->staging);
	free(c->sync);
	free(c->datasync);
	free(c->names);
	free(c->linger);
	free(c->max_drops);
	free(c->client_mkdir);
	free(c->drain);
	free(c->xattr);
	fuse_opt_free_args(&c->args);
}
