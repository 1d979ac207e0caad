/* fs/cmdline.c: the command line. inboxfs's own options (-o NAME=VALUE),
 * the transport's, libfuse's, --help and --version, into a configuration
 * (core/options.h), each bad value refused with one line that names it
 * (R11). */
#ifndef INBOXFS_CMDLINE_H
#define INBOXFS_CMDLINE_H

#include <fuse_lowlevel.h>

#include "options.h"

struct cmdline {
	struct fuse_args args;		/* what is left for libfuse */
	struct fuse_cmdline_opts opts;	/* libfuse's: -f, -d, -s, MOUNTPOINT */
	char *inbox;
	/* The -o values as given (NULL: the default). */
	char *observers;
	char *staging;
	char *sync;
	char *datasync;
	char *names;
	char *linger;
	char *max_drops;
	char *client_mkdir;
	char *drain;
	char *xattr;
	int show_help;
	int show_version;
	int nonopts;
};

/* Parse ARGV into C and CFG. 0: go on; 1: --help or --version printed
 * (exit 0); -1: refused, with a line on stderr (exit 2). cmdline_free()
 * in every case. */
int cmdline_parse(int argc, char *argv[], struct cmdline *c, struct inboxfs_config *cfg);
/* Log the options in force, defaults included (a defaults file the unit
 * never read shows here). */
void cmdline_log(const struct cmdline *c, const struct inboxfs_config *cfg);
void cmdline_free(struct cmdline *c);

#endif
