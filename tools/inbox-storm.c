/* inbox-storm: play N legacy clients dropping messages into one inbox at
 * once (a local directory or an SMB share) and verify by content what
 * reached the backing inbox (README "The problem", "Benchmarks").
 *
 * Each client is a process of its own: under Samba that is one SMB
 * connection, one smbd, one inboxfs session. Clients name messages as the
 * legacy generators do (8 hex digits from a PRNG seeded with the current
 * second, so clients that start in the same second pick the same names),
 * create them with create-new and, by default, give a message up when the
 * name is taken. Every message carries a header naming its run, client and
 * sequence number and a hash of the rest, so delivery is checked by content
 * in the backing directory afterwards, whatever names the messages got. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libsmbclient.h>
#include <xxhash.h>

#include "storm.h"

#define RETRY_LIMIT 1000000	/* --retry: attempts per message, a backstop */
#define DURATION_CAP (UINT64_C(1) << 22)	/* messages per client with --duration */
#define FIXED_STEM "INBOXMSG"

/* One client process's connection to the target. */
struct client {
	const struct storm *st;
	unsigned id;
	int dirfd;
	int fd;
	SMBCCTX *ctx;
	SMBCFILE *file;
	unsigned errors_shown;
};

/* The target's create-new, write and close, local or SMB. Each returns 0
 * or -errno. */
struct backend {
	int (*setup)(struct client *c);
	int (*create)(struct client *c, const char *name);
	int (*write)(struct client *c, const void *buf, size_t len);
	int (*close)(struct client *c);
	void (*teardown)(struct client *c);
};

static volatile sig_atomic_t interrupted;

/* ------------------------------------------------------------- names */

/* The C library's rand() of the legacy clients (the MSVC one: they are
 * Windows programs), seeded with time(NULL). */
static unsigned legacy_rand(uint32_t *state)
{
	*state = *state * 214013u + 2531011u;
	return (*state >> 16) & 0x7fff;
}

static void clock_name(uint32_t *state, const char *ext, char *out, size_t outlen)
{
	static const char hex[] = "0123456789ABCDEF";
	char stem[9];

	for (int i = 0; i < 8; i++)
		stem[i] = hex[legacy_rand(state) % 16];
	stem[8] = '\0';
	snprintf(out, outlen, "%s%s", stem, ext);
}

/* ------------------------------------------------------------- local */

static int local_setup(struct client *c)
{
	c->dirfd = open(c->st->opt.target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return c->dirfd < 0 ? -errno : 0;
}

static int local_create(struct client *c, const char *name)
{
	c->fd = openat(c->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	return c->fd < 0 ? -errno : 0;
}

static int local_write(struct client *c, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(c->fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int local_close(struct client *c)
{
	int fd = c->fd;

	c->fd = -1;
	/* Linux closes the descriptor even when close() fails: never retry. */
	return close(fd) < 0 ? -errno : 0;
}

static void local_teardown(struct client *c)
{
	if (c->dirfd >= 0)
		close(c->dirfd);
	c->dirfd = -1;
}

static const struct backend local_backend = {
	.setup    = local_setup,
	.create   = local_create,
	.write    = local_write,
	.close    = local_close,
	.teardown = local_teardown,
};

/* --------------------------------------------------------------- SMB */

static void smb_auth(SMBCCTX *ctx, const char *server, const char *share,
		     char *workgroup, int wglen, char *user, int userlen,
		     char *password, int pwlen)
{
	const struct smb_target *t = smbc_getOptionUserData(ctx);

	(void)server;
	(void)share;
	if (t->domain[0])
		snprintf(workgroup, (size_t)wglen, "%s", t->domain);
	snprintf(user, (size_t)userlen, "%s", t->user);
	snprintf(password, (size_t)pwlen, "%s", t->password);
}

static int smb_setup(struct client *c)
{
	const struct smb_target *t = &c->st->smbt;
	struct stat st;

	c->ctx = smbc_new_context();
	if (!c->ctx)
		return -errno ? -errno : -ENOMEM;
	smbc_setDebug(c->ctx, 0);
	smbc_setOptionDebugToStderr(c->ctx, 1);
	smbc_setOptionUserData(c->ctx, (void *)t);
	smbc_setFunctionAuthDataWithContext(c->ctx, smb_auth);
	if (t->user[0])
		smbc_setOptionNoAutoAnonymousLogin(c->ctx, 1);
	if (t->port)
		smbc_setPort(c->ctx, t->port);
	if (!smbc_init_context(c->ctx)) {
		int err = errno ? errno : EIO;
		smbc_free_context(c->ctx, 1);
		c->ctx = NULL;
		return -err;
	}
	/* Connect and log on now, before the start barrier: the storm
	 * measures drops, not session set-up. */
	if (smbc_getFunctionStat(c->ctx)(c->ctx, t->url, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	return 0;
}

static int smb_create(struct client *c, const char *name)
{
	char url[PATH_MAX + NAME_MAX + 2];

	snprintf(url, sizeof(url), "%s/%s", c->st->smbt.url, name);
	/* O_CREAT|O_EXCL is SMB2 FILE_CREATE: create-new, as legacy clients. */
	c->file = smbc_getFunctionOpen(c->ctx)(c->ctx, url,
					       O_WRONLY | O_CREAT | O_EXCL, 0644);
	return c->file ? 0 : errno ? -errno : -EIO;
}

static int smb_write(struct client *c, const void *buf, size_t len)
{
	smbc_write_fn write_fn = smbc_getFunctionWrite(c->ctx);
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write_fn(c->ctx, c->file, p, len);
		if (n < 0)
			return errno ? -errno : -EIO;
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int smb_close(struct client *c)
{
	SMBCFILE *file = c->file;

	c->file = NULL;
	if (smbc_getFunctionClose(c->ctx)(c->ctx, file) < 0)
		return errno ? -errno : -EIO;
	return 0;
}

static void smb_teardown(struct client *c)
{
	if (c->ctx)
		smbc_free_context(c->ctx, 1);
	c->ctx = NULL;
}

static const struct backend smb_backend = {
	.setup    = smb_setup,
	.create   = smb_create,
	.write    = smb_write,
	.close    = smb_close,
	.teardown = smb_teardown,
};

/* ------------------------------------------------------------ clients */

static void client_error(struct client *c, const char *what, const char *name, int err)
{
	char line[512];
	int n;

	if (c->st->opt.quiet || c->errors_shown++ >= ERRORS_SHOWN)
		return;
	n = snprintf(line, sizeof(line), PROG ": client %u: %s %s: %s%s\n", c->id, what,
		     name, strerror(err),
		     c->errors_shown == ERRORS_SHOWN ? " (further errors not shown)" : "");
	/* One write per line: clients share stderr. */
	if (n > 0 && write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}

/* Drop one message: pick a name, create-new, write, close. */
static void client_drop(struct client *c, const struct backend *be, uint32_t *rng,
			uint64_t seq, const char *body)
{
	const struct storm *st = c->st;
	struct client_slot *slot = &st->sh->slot[c->id];
	char name[NAME_MAX + 1];
	int attempt = 0, err;

	if (st->opt.names == NAMES_FIXED)
		snprintf(name, sizeof(name), FIXED_STEM "%s", st->opt.ext);
	else if (st->opt.names == NAMES_UNIQUE)
		snprintf(name, sizeof(name), "%s-%u-%" PRIu64 "%s", st->opt.run_id, c->id, seq,
			 st->opt.ext);
	else
		clock_name(rng, st->opt.ext, name, sizeof(name));

	while ((err = be->create(c, name)) == -EEXIST && st->opt.retry &&
	       ++attempt < RETRY_LIMIT) {
		if (atomic_load_explicit(&st->sh->stop, memory_order_relaxed)) {
			/* Stopped, not given up: this message was never sent. */
			atomic_store_explicit(&slot->sent, seq, memory_order_relaxed);
			return;
		}
		atomic_fetch_add_explicit(&slot->retries, 1, memory_order_relaxed);
		clock_name(rng, st->opt.ext, name, sizeof(name));
	}
	if (err == -EEXIST) {
		/* What the legacy client does: the message is thrown away. */
		atomic_fetch_add_explicit(&slot->collisions, 1, memory_order_relaxed);
		return;
	}
	if (err < 0) {
		client_error(c, "create", name, -err);
		goto failed;
	}
	err = be->write(c, body, st->opt.size);
	if (err < 0) {
		client_error(c, "write", name, -err);
		be->close(c);
		goto failed;
	}
	err = be->close(c);
	if (err < 0) {
		client_error(c, "close", name, -err);
		goto failed;
	}
	st->acks[c->id * st->ack_words + seq / 64] |= UINT64_C(1) << (seq % 64);
	atomic_fetch_add_explicit(&slot->acked, 1, memory_order_relaxed);
	return;
failed:
	atomic_fetch_add_explicit(&slot->errors, 1, memory_order_relaxed);
}

/* The life of one client process. Never returns. */
static void client_main(struct storm *st, unsigned id, int start_fd, int status_fd)
{
	const struct backend *be = st->smb ? &smb_backend : &local_backend;
	struct client c = { .st = st, .id = id, .dirfd = -1, .fd = -1 };
	struct client_slot *slot = &st->sh->slot[id];
	char *body = NULL;
	char ready = 'R', byte;
	int err, status = 0;

	signal(SIGINT, SIG_IGN);	/* the parent stops us through sh->stop */
	signal(SIGTERM, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGPIPE, SIG_IGN);
	err = be->setup(&c);
	if (err == 0 && !(body = malloc(st->opt.size)))
		err = -ENOMEM;
	if (err < 0) {
		if (!st->opt.quiet) {
			char line[PATH_MAX + 128];
			int n = snprintf(line, sizeof(line), PROG ": client %u: cannot open %s: %s\n",
					 id, st->opt.target,
					 strerror(-err));
			if (n > 0 && write(STDERR_FILENO, line, (size_t)n) < 0)
				n = 0;	/* nowhere left to say it */
		}
		ready = 'E';
		status = 1;
	}
	if (write(status_fd, &ready, 1) != 1)
		status = 1;

	/* The start barrier: everyone blocks here until the parent closes the
	 * pipe, so that all clients really start at once. */
	while (read(start_fd, &byte, 1) < 0 && errno == EINTR)
		;
	close(start_fd);
	if (status != 0 || !atomic_load(&st->sh->go))
		goto out;

	/* srand(time(NULL)): clients starting in the same second share a
	 * sequence of names. */
	uint32_t rng = (uint32_t)time(NULL);
	uint64_t limit = st->opt.messages ? st->opt.messages : st->capacity;
	for (uint64_t seq = 0; seq < limit; seq++) {
		if (atomic_load_explicit(&st->sh->stop, memory_order_relaxed))
			break;
		message_build(st, id, seq, body);
		atomic_store_explicit(&slot->sent, seq + 1, memory_order_relaxed);
		client_drop(&c, be, &rng, seq, body);
	}
out:
	be->teardown(&c);
	free(body);
	close(status_fd);
	_exit(status);
}

/* ------------------------------------------------------------- report */

static void json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(out, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(out, "\\u%04x", ch);
		else
			fputc(ch, out);
	}
	fputc('"', out);
}

struct totals {
	uint64_t sent, acked, collisions, retries, errors;
};

static void totals_sum(const struct storm *st, struct totals *t)
{
	memset(t, 0, sizeof(*t));
	for (unsigned i = 0; i < st->opt.clients; i++) {
		const struct client_slot *s = &st->sh->slot[i];
		t->sent += atomic_load_explicit(&s->sent, memory_order_relaxed);
		t->acked += atomic_load_explicit(&s->acked, memory_order_relaxed);
		t->collisions += atomic_load_explicit(&s->collisions, memory_order_relaxed);
		t->retries += atomic_load_explicit(&s->retries, memory_order_relaxed);
		t->errors += atomic_load_explicit(&s->errors, memory_order_relaxed);
	}
}

static void report(const struct storm *st, const struct totals *t,
		   const struct verify_result *v, uint64_t lost, double seconds,
		   unsigned crashed)
{
	const struct options *o = &st->opt;
	double rate = seconds > 0 ? (double)t->acked / seconds : 0;

	if (o->json) {
		printf("{\"run_id\": \"%s\", \"target\": ", o->run_id);
		json_string(stdout, o->target);
		printf(", \"clients\": %u, \"messages_per_client\": %" PRIu64
		       ", \"duration\": %g, \"size\": %zu, \"names\": \"%s\", \"ext\": ",
		       o->clients, o->messages, o->duration, o->size,
		       o->names == NAMES_FIXED ? "fixed" : o->names == NAMES_UNIQUE ? "unique"
		       : "clock");
		json_string(stdout, o->ext);
		printf(", \"retry\": %s, \"sent\": %" PRIu64 ", \"acked\": %" PRIu64
		       ", \"collisions\": %" PRIu64 ", \"retries\": %" PRIu64
		       ", \"errors\": %" PRIu64 ", \"crashed_clients\": %u, \"lost\": %" PRIu64,
		       o->retry ? "true" : "false", t->sent, t->acked, t->collisions,
		       t->retries, t->errors, crashed, lost);
		if (v)
			printf(", \"verified\": true, \"delivered\": %" PRIu64
			       ", \"delivered_unacked\": %" PRIu64 ", \"lost_acked\": %" PRIu64
			       ", \"corrupt\": %" PRIu64 ", \"duplicated\": %" PRIu64
			       ", \"unexpected\": %" PRIu64 ", \"foreign\": %" PRIu64
			       ", \"unreadable\": %" PRIu64,
			       v->delivered, v->delivered_unacked, v->lost_acked, v->corrupt,
			       v->duplicated, v->unexpected, v->foreign, v->unreadable);
		else
			printf(", \"verified\": false, \"delivered\": null, \"corrupt\": null"
			       ", \"duplicated\": null");
		printf(", \"seconds\": %.3f, \"rate\": %.1f}\n", seconds, rate);
		return;
	}
	printf("clients=%u sent=%" PRIu64 " acked=%" PRIu64, o->clients, t->sent, t->acked);
	if (v)
		printf(" delivered=%" PRIu64, v->delivered);
	else
		printf(" delivered=unverified");
	printf(" lost=%" PRIu64 " collisions=%" PRIu64, lost, t->collisions);
	if (v)
		printf(" corrupt=%" PRIu64 " duplicated=%" PRIu64, v->corrupt, v->duplicated);
	printf(" rate=%.1f/s", rate);
	if (o->retry)
		printf(" retries=%" PRIu64, t->retries);
	if (t->errors)
		printf(" errors=%" PRIu64, t->errors);
	if (v && v->lost_acked)
		printf(" lost_acked=%" PRIu64, v->lost_acked);
	if (v && v->delivered_unacked)
		printf(" delivered_unacked=%" PRIu64, v->delivered_unacked);
	if (v && v->unexpected)
		printf(" unexpected=%" PRIu64, v->unexpected);
	if (v && v->unreadable)
		printf(" unreadable=%" PRIu64, v->unreadable);
	if (crashed)
		printf(" crashed_clients=%u", crashed);
	putchar('\n');
}

/* --------------------------------------------------------------- main */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void progress(const struct storm *st, double elapsed)
{
	struct totals t;

	totals_sum(st, &t);
	fprintf(stderr, "\r\033[K" PROG ": %.0fs sent=%" PRIu64 " acked=%" PRIu64
		" collisions=%" PRIu64 " errors=%" PRIu64 " %.0f/s",
		elapsed, t.sent, t.acked, t.collisions, t.errors,
		elapsed > 0 ? (double)t.acked / elapsed : 0);
}

static void make_run_id(struct options *o)
{
	uint64_t r;

	if (o->run_id[0])
		return;
	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = (uint64_t)time(NULL) * 6364136223846793005u ^ (uint64_t)getpid();
	snprintf(o->run_id, sizeof(o->run_id), "%016" PRIx64, r);
}

static int map_shared(struct storm *st)
{
	st->capacity = st->opt.messages ? st->opt.messages : DURATION_CAP;
	st->ack_words = (size_t)((st->capacity + 63) / 64);
	st->sh_len = sizeof(struct shared) + st->opt.clients * sizeof(struct client_slot);
	st->acks_len = st->ack_words * st->opt.clients * sizeof(uint64_t);
	st->sh = mmap(NULL, st->sh_len, PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (st->sh == MAP_FAILED) {
		st->sh = NULL;
		return -errno;
	}
	/* Untouched pages cost nothing: --duration reserves for the most. */
	st->acks = mmap(NULL, st->acks_len, PROT_READ | PROT_WRITE,
			MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (st->acks == MAP_FAILED) {
		int err = errno;
		munmap(st->sh, st->sh_len);
		st->sh = NULL;
		st->acks = NULL;
		return -err;
	}
	return 0;
}

/* Wait for the clients to finish, stopping them after --duration or on a
 * signal; refresh the progress line once a second on a terminal. Returns
 * the wall time of the storm. */
static double storm_wait(struct storm *st, int status_fd, double t0)
{
	bool show = !st->opt.quiet && isatty(STDERR_FILENO), shown = false;
	double next_progress = t0 + 1, t;
	char buf[64];

	for (;;) {
		struct pollfd pfd = { .fd = status_fd, .events = POLLIN };
		t = now();
		if (interrupted || (st->opt.duration > 0 && t - t0 >= st->opt.duration))
			atomic_store(&st->sh->stop, 1);
		double wake = next_progress;
		if (st->opt.duration > 0 && t0 + st->opt.duration < wake)
			wake = t0 + st->opt.duration;
		int timeout = wake > t ? (int)((wake - t) * 1000) + 1 : 0;
		int n = poll(&pfd, 1, timeout);
		if (n < 0 && errno != EINTR)
			break;
		/* EOF: the last client has exited. */
		if (n > 0 && read(status_fd, buf, sizeof(buf)) <= 0)
			break;
		t = now();
		if (show && t >= next_progress) {
			progress(st, t - t0);
			shown = true;
		}
		while (next_progress <= t)
			next_progress += 1;
	}
	t = now();
	if (shown)
		fputs("\r\033[K", stderr);
	return t - t0;
}

int main(int argc, char **argv)
{
	struct storm st = { 0 };
	struct totals totals;
	struct verify_result vres, *v = NULL;
	pid_t *pids = NULL;
	int start[2] = { -1, -1 }, status[2] = { -1, -1 };
	int verify_fd = -1, err, exit_status = 2;
	unsigned forked = 0, answered = 0, ready = 0, crashed = 0;
	uint64_t lost, *sent = NULL;
	double seconds = 0;
	char byte;

	parse_options(argc, argv, &st);
	make_run_id(&st.opt);
	st.run_seed = XXH64(st.opt.run_id, RUN_ID_LEN, 0);

	/* Everything that can fail is checked before any client starts. */
	if (st.opt.verify_dir) {
		verify_fd = open(st.opt.verify_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (verify_fd < 0) {
			fprintf(stderr, PROG ": cannot open --verify %s: %s\n", st.opt.verify_dir,
				strerror(errno));
			goto out;
		}
	}
	if (!st.smb) {
		int fd = open(st.opt.target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, PROG ": cannot open %s: %s\n", st.opt.target,
				strerror(errno));
			goto out;
		}
		close(fd);
	}
	err = map_shared(&st);
	if (err < 0) {
		fprintf(stderr, PROG ": cannot map shared counters: %s\n", strerror(-err));
		goto out;
	}
	pids = calloc(st.opt.clients, sizeof(*pids));
	if (!pids || pipe2(start, O_CLOEXEC) < 0 || pipe2(status, O_CLOEXEC) < 0) {
		fprintf(stderr, PROG ": %s\n", strerror(errno));
		goto out;
	}
	fflush(NULL);

	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	st.started = time(NULL);
	pid_t parent = getpid();
	for (; forked < st.opt.clients; forked++) {
		pid_t pid = fork();
		if (pid < 0) {
			fprintf(stderr, PROG ": fork: %s\n", strerror(errno));
			break;
		}
		if (pid == 0) {
			/* Orphans must not storm on: die with the parent. */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(1);
			close(start[1]);
			close(status[0]);
			if (verify_fd >= 0)
				close(verify_fd);
			free(pids);
			client_main(&st, forked, start[0], status[1]);
		}
		pids[forked] = pid;
	}
	close(start[0]);
	close(status[1]);
	start[0] = status[1] = -1;

	/* Each client says R (ready) or E (cannot reach the target). */
	bool failed = forked < st.opt.clients;
	while (answered < forked) {
		ssize_t n = read(status[0], &byte, 1);
		if (n < 0 && errno == EINTR) {
			if (interrupted)
				break;
			continue;
		}
		if (n <= 0)
			break;
		answered++;
		ready += byte == 'R';
	}
	failed = failed || ready < st.opt.clients || interrupted;
	if (!failed)
		atomic_store(&st.sh->go, 1);
	double t0 = now();
	close(start[1]);	/* the barrier opens */
	start[1] = -1;
	if (!failed)
		seconds = storm_wait(&st, status[0], t0);

	for (unsigned i = 0; i < forked; i++) {
		int ws;
		while (waitpid(pids[i], &ws, 0) < 0 && errno == EINTR)
			;
		if (!failed && (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)) {
			if (WIFSIGNALED(ws))
				fprintf(stderr, PROG ": client %u died of signal %d\n", i,
					WTERMSIG(ws));
			else
				fprintf(stderr, PROG ": client %u exited with status %d\n", i,
					WEXITSTATUS(ws));
			crashed++;
		}
	}
	if (failed) {
		if (interrupted)
			fprintf(stderr, PROG ": interrupted before the start\n");
		else
			fprintf(stderr, PROG ": %u of %u clients could not start\n",
				st.opt.clients - ready, st.opt.clients);
		goto out;
	}

	totals_sum(&st, &totals);
	sent = calloc(st.opt.clients, sizeof(*sent));
	if (!sent) {
		fprintf(stderr, PROG ": %s\n", strerror(errno));
		goto out;
	}
	for (unsigned i = 0; i < st.opt.clients; i++)
		sent[i] = atomic_load(&st.sh->slot[i].sent);
	if (verify_fd >= 0 && st.opt.settle > 0) {
		struct timespec ts = { (time_t)st.opt.settle,
				       (long)((st.opt.settle - (time_t)st.opt.settle) * 1e9) };

		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	if (verify_fd >= 0) {
		err = verify_scan(&st, verify_fd, sent, &vres);
		if (err < 0) {
			fprintf(stderr, PROG ": cannot scan %s: %s\n", st.opt.verify_dir,
				strerror(-err));
			goto out;
		}
		v = &vres;
		lost = totals.sent - v->delivered;
	} else {
		lost = totals.sent - totals.acked;
	}
	report(&st, &totals, v, lost, seconds, crashed);
	exit_status = lost || crashed || (v && (v->corrupt || v->duplicated || v->unexpected))
		? 1 : 0;
out:
	for (int i = 0; i < 2; i++) {
		if (start[i] >= 0)
			close(start[i]);
		if (status[i] >= 0)
			close(status[i]);
	}
	if (verify_fd >= 0)
		close(verify_fd);
	if (st.acks)
		munmap(st.acks, st.acks_len);
	if (st.sh)
		munmap(st.sh, st.sh_len);
	free(sent);
	free(pids);
	return exit_status;
}
