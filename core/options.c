/* Parsing of the daemon's own option values. */
#include "options.h"

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_id(const char *s, unsigned long *out)
{
	char *end;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	*out = strtoul(s, &end, 10);
	if (errno || *end || *out >= UINT_MAX)
		return -EINVAL;
	return 0;
}

static int add_entry(const char *e, struct observers *o)
{
	char buf[4096];
	unsigned long id;

	if (e[0] == '@') {
		struct group gr, *res = NULL;

		if (o->ngids == OBSERVERS_MAX)
			return -E2BIG;
		if (parse_id(e + 1, &id) == 0) {
			o->gids[o->ngids++] = (gid_t)id;
			return 0;
		}
		if (getgrnam_r(e + 1, &gr, buf, sizeof(buf), &res) != 0 || res == NULL)
			return -ENOENT;
		o->gids[o->ngids++] = gr.gr_gid;
		return 0;
	}
	struct passwd pw, *res = NULL;

	if (o->nuids == OBSERVERS_MAX)
		return -E2BIG;
	if (parse_id(e, &id) == 0) {
		o->uids[o->nuids++] = (uid_t)id;
		return 0;
	}
	if (getpwnam_r(e, &pw, buf, sizeof(buf), &res) != 0 || res == NULL)
		return -ENOENT;
	o->uids[o->nuids++] = pw.pw_uid;
	return 0;
}

int observers_parse(const char *spec, struct observers *out, char *bad, size_t badsize)
{
	char *copy = strdup(spec), *save = NULL;
	int ret = 0;

	if (copy == NULL)
		return -ENOMEM;
	memset(out, 0, sizeof(*out));
	for (char *e = strtok_r(copy, ":", &save); e; e = strtok_r(NULL, ":", &save)) {
		ret = add_entry(e, out);
		if (ret < 0) {
			snprintf(bad, badsize, "%s", e);
			ret = -EINVAL;
			break;
		}
	}
	if (ret == 0 && out->nuids + out->ngids == 0) {
		snprintf(bad, badsize, "%s", spec);
		ret = -EINVAL;
	}
	free(copy);
	return ret;
}

bool observers_match(const struct observers *o, uid_t uid, gid_t gid,
		     const gid_t *groups, int ngroups)
{
	for (unsigned i = 0; i < o->nuids; i++)
		if (o->uids[i] == uid)
			return true;
	for (unsigned i = 0; i < o->ngids; i++) {
		if (o->gids[i] == gid)
			return true;
		for (int j = 0; j < ngroups; j++)
			if (o->gids[i] == groups[j])
				return true;
	}
	return false;
}

bool observers_need_groups(const struct observers *o)
{
	return o->ngids > 0;
}

int sync_mode_parse(const char *spec, enum sync_mode *out)
{
	if (strcmp(spec, "close") == 0)
		*out = SYNC_CLOSE;
	else if (strcmp(spec, "none") == 0)
		*out = SYNC_NONE;
	else
		return -EINVAL;
	return 0;
}

int datasync_parse(const char *spec, bool *fsync_only)
{
	if (strcmp(spec, "auto") == 0)
		*fsync_only = false;
	else if (strcmp(spec, "fsync") == 0)
		*fsync_only = true;
	else
		return -EINVAL;
	return 0;
}

int yes_no_parse(const char *spec, bool *out)
{
	if (strcmp(spec, "yes") == 0)
		*out = true;
	else if (strcmp(spec, "no") == 0)
		*out = false;
	else
		return -EINVAL;
	return 0;
}

int seconds_parse(const char *spec, unsigned *out)
{
	unsigned long v;

	if (parse_id(spec, &v) < 0 || v > 86400)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

int drain_parse(const char *spec, unsigned *out)
{
	unsigned long v;

	if (parse_id(spec, &v) < 0 || v > DRAIN_MAX)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

int count_parse(const char *spec, unsigned *out)
{
	unsigned long v;

	if (parse_id(spec, &v) < 0 || v > 1000000)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

int option_list_check(const char *list, char *why, size_t whysize)
{
	const char *reason = NULL;

	if (list[strspn(list, " \t\n\r\v\f")] == '\0')
		reason = "empty option list (leave -o out for the defaults)";
	else if (list[strcspn(list, " \t\n\r\v\f")] != '\0')
		reason = "options are separated by commas, without spaces";
	else if (list[0] == ',' || list[strlen(list) - 1] == ',' || strstr(list, ",,"))
		reason = "empty option between commas";
	if (!reason)
		return 0;
	if (whysize > 0)
		snprintf(why, whysize, "%s", reason);
	return -EINVAL;
}
