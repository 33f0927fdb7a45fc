/* The Pyroscope sink against a small HTTP/1.1 server in a thread of this test: what arrives
 * (order, headers, credentials), and what the sink does when the server is down, answers 503
 * or 429, refuses a profile, or never answers; the spool across a restart of the sink; the
 * queue and spool limits; the shutdown deadline. No root, no BPF: the agent's profiles are
 * stood in for by fixed bytes, each record told apart by its service name. */
#include <arpa/inet.h>
#include <errno.h>
#include <dirent.h>
#include <limits.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "unit.h"
#include "util/log.h"
#include "export/push_sink.h"
#include "export/sink.h"

#define MAX_REQUESTS 64
#define MAX_SCRIPT   16

struct scripted {
	int status;	     /* 0: close the connection without answering; -1: hang */
	const char *headers; /* extra header lines, each ending in \r\n */
	const char *body;
};

struct received {
	char service[32]; /* the service_name label found in the body */
	char headers[2048];
	double at; /* seconds, monotonic */
};

struct server {
	int port;
	int listen_fd;
	pthread_t thread;
	bool running;
	pthread_mutex_t lock;
	struct scripted script[MAX_SCRIPT];
	size_t n_script, next_script;
	struct received requests[MAX_REQUESTS];
	size_t n_requests;
	_Atomic bool stop;
};

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

/* The value after "service_name" in a PushRequest body: label names and values are plain
 * length-prefixed strings, so a byte search finds it. */
static void find_service(const uint8_t *body, size_t len, char *out, size_t out_len)
{
	static const char key[] = "\x0a\x0cservice_name\x12";
	size_t klen = sizeof(key) - 1;

	snprintf(out, out_len, "?");
	for (size_t i = 0; i + klen + 1 < len; i++) {
		if (memcmp(body + i, key, klen) == 0) {
			size_t n = body[i + klen];

			if (i + klen + 1 + n <= len && n < out_len) {
				memcpy(out, body + i + klen + 1, n);
				out[n] = '\0';
			}
			return;
		}
	}
}

static void serve_connection(struct server *srv, int fd)
{
	static char buf[1 << 20];
	size_t used = 0;

	for (;;) {
		char *end;
		size_t header_len, content_length = 0;
		ssize_t n;
		struct scripted answer = {.status = 200};
		struct received *r = NULL;
		char reply[1024];

		while (!(end = memmem(buf, used, "\r\n\r\n", 4))) {
			n = recv(fd, buf + used, sizeof(buf) - used, 0);
			if (n <= 0)
				return;
			used += (size_t)n;
		}
		header_len = (size_t)(end - buf) + 4;
		for (char *line = buf; line < end; line = strstr(line, "\r\n") + 2) {
			if (strncasecmp(line, "Content-Length:", 15) == 0)
				content_length = strtoul(line + 15, NULL, 10);
		}
		while (used < header_len + content_length) {
			n = recv(fd, buf + used, sizeof(buf) - used, 0);
			if (n <= 0)
				return;
			used += (size_t)n;
		}
		pthread_mutex_lock(&srv->lock);
		if (srv->next_script < srv->n_script)
			answer = srv->script[srv->next_script++];
		if (srv->n_requests < MAX_REQUESTS && answer.status > 0) {
			r = &srv->requests[srv->n_requests++];
			snprintf(r->headers, sizeof(r->headers), "%.*s", (int)header_len, buf);
			find_service((uint8_t *)buf + header_len, content_length, r->service,
				     sizeof(r->service));
			r->at = mono_s();
		}
		pthread_mutex_unlock(&srv->lock);
		if (answer.status == 0)
			return;
		if (answer.status < 0) {
			while (!srv->stop)
				sleep_ms(20);
			return;
		}
		snprintf(reply, sizeof(reply), "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n%s\r\n%s",
			 answer.status, answer.body ? strlen(answer.body) : 0,
			 answer.headers ? answer.headers : "", answer.body ? answer.body : "");
		if (send(fd, reply, strlen(reply), MSG_NOSIGNAL) < 0)
			return;
		memmove(buf, buf + header_len + content_length, used - header_len - content_length);
		used -= header_len + content_length;
	}
}

static void *server_main(void *arg)
{
	struct server *srv = arg;

	while (!srv->stop) {
		int fd = accept(srv->listen_fd, NULL, NULL);

		if (fd < 0)
			continue;
		serve_connection(srv, fd);
		close(fd);
	}
	return NULL;
}

/* A port nobody listens on yet (the server is "down" until server_start). */
static void server_init(struct server *srv)
{
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
	socklen_t len = sizeof(addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(srv, 0, sizeof(*srv));
	pthread_mutex_init(&srv->lock, NULL);
	bind(fd, (struct sockaddr *)&addr, sizeof(addr));
	getsockname(fd, (struct sockaddr *)&addr, &len);
	srv->port = ntohs(addr.sin_port);
	close(fd);
	srv->listen_fd = -1;
}

static void server_start(struct server *srv)
{
	struct sockaddr_in addr = {.sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(0x7f000001),
				   .sin_port = htons((uint16_t)srv->port)};
	struct timeval tv = {0, 100000};
	int one = 1;

	srv->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(srv->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(srv->listen_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (bind(srv->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) ||
	    listen(srv->listen_fd, 16)) {
		perror("test server");
		exit(2);
	}
	srv->stop = false;
	pthread_create(&srv->thread, NULL, server_main, srv);
	srv->running = true;
}

static void server_stop(struct server *srv)
{
	if (!srv->running)
		return;
	srv->stop = true;
	shutdown(srv->listen_fd, SHUT_RDWR);
	pthread_join(srv->thread, NULL);
	close(srv->listen_fd);
	srv->running = false;
}

static void server_script(struct server *srv, struct scripted answer)
{
	pthread_mutex_lock(&srv->lock);
	srv->script[srv->n_script++] = answer;
	pthread_mutex_unlock(&srv->lock);
}

static size_t server_count(struct server *srv)
{
	size_t n;

	pthread_mutex_lock(&srv->lock);
	n = srv->n_requests;
	pthread_mutex_unlock(&srv->lock);
	return n;
}

/* "s0,s1,s2": the services of the requests answered, in arrival order. */
static const char *server_order(struct server *srv, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	pthread_mutex_lock(&srv->lock);
	for (size_t i = 0; i < srv->n_requests && used < len; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? "," : "",
					 srv->requests[i].service);
	pthread_mutex_unlock(&srv->lock);
	return buf;
}

/* ---- fixtures --------------------------------------------------------------------- */

static const uint8_t fake_gz[] = {0x1f, 0x8b, 8, 0,    0,    0,	   0,	 0,    0,    3, 0x63,
				  0x60, 0,    0, 0xde, 0xad, 0xbe, 0xef, 0x39, 0x05, 0, 0};

static int submit(struct sink *sink, const char *service)
{
	struct profile_label labels[] = {{"service_name", service}, {"hostname", "h"}};
	struct profile_record record = {
	    .service = service,
	    .labels = labels,
	    .n_labels = 2,
	    .start_ns = 1700000000000000000LL,
	    .duration_ns = 1000000000LL,
	    .pprof_gz = fake_gz,
	    .pprof_gz_len = sizeof(fake_gz),
	};

	return sink__submit(sink, &record);
}

static void submit_n(struct sink *sink, int from, int to)
{
	char name[16];

	for (int i = from; i < to; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		CHECK(submit(sink, name) == 0);
	}
}

static struct sink_stats stats_of(struct sink *sink)
{
	struct sink_stats s;

	sink__stats(sink, &s);
	return s;
}

/* Waits up to timeout_ms for a counter to reach at least want. */
#define WAIT_FOR(sink, field, want, timeout_ms)                                                    \
	do {                                                                                       \
		for (int waited_ = 0;                                                              \
		     stats_of(sink).field < (uint64_t)(want) && waited_ < (timeout_ms);            \
		     waited_ += 10)                                                                \
			sleep_ms(10);                                                              \
		CHECK(stats_of(sink).field >= (uint64_t)(want));                                   \
	} while (0)

/* Waits up to timeout_ms for a stat to equal want (the worker moves profiles to the spool
 * after submit returns). */
#define WAIT_EQ(sink, field, want, timeout_ms)                                                     \
	do {                                                                                       \
		for (int waited_ = 0;                                                              \
		     stats_of(sink).field != (uint64_t)(want) && waited_ < (timeout_ms);           \
		     waited_ += 10)                                                                \
			sleep_ms(10);                                                              \
		CHECK_EQ_U64(stats_of(sink).field, want);                                          \
	} while (0)

static char url[64];

static struct push_sink_opts base_opts(struct server *srv)
{
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", srv->port);
	return (struct push_sink_opts){
	    .protocol = PUSH_PYROSCOPE,
	    .name = "test",
	    .url = url,
	    .timeout_ms = 2000,
	    .queue_size = 64,
	    .shutdown_timeout_ms = 2000,
	    .max_profile_bytes = 4 << 20,
	    .initial_backoff_ms = 50,
	    .max_backoff_ms = 200,
	};
}

static struct sink *make(const struct push_sink_opts *opts)
{
	char err[512] = "";
	struct sink *sink = NULL;
	int ret = push_sink__new(opts, &sink, err, sizeof(err));

	if (ret)
		fprintf(stderr, "  push_sink__new: %s\n", err);
	CHECK(ret == 0);
	return sink;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	remove(path);
	return 0;
}

static char *make_tmp(char *buf, size_t len)
{
	snprintf(buf, len, "/tmp/allocscope-pushsink-XXXXXX");
	if (!mkdtemp(buf)) {
		perror("mkdtemp");
		exit(2);
	}
	return buf;
}

/* Everything written to stderr between begin and end, so messages can be checked (and the
 * expected errors do not clutter the test's output). */
static int saved_stderr = -1;
static char captured[16384];

static void capture_begin(void)
{
	FILE *f = tmpfile();

	fflush(stderr);
	saved_stderr = dup(2);
	dup2(fileno(f), 2);
	fclose(f); /* fd 2 keeps the file open */
}

static const char *capture_end(void)
{
	ssize_t n;

	fflush(stderr);
	lseek(2, 0, SEEK_SET);
	n = read(2, captured, sizeof(captured) - 1);
	captured[n < 0 ? 0 : n] = '\0';
	dup2(saved_stderr, 2);
	close(saved_stderr);
	return captured;
}

/* ---- cases ------------------------------------------------------------------------ */

static void test_delivers_in_order_with_headers(void)
{
	struct server srv;
	struct push_header extra[] = {{"X-Team", "memory"}};
	char tmp[64], secret[128], order[256];
	struct push_sink_opts opts;
	struct sink *sink;
	FILE *f;

	server_init(&srv);
	server_start(&srv);
	make_tmp(tmp, sizeof(tmp));
	snprintf(secret, sizeof(secret), "%s/password", tmp);
	f = fopen(secret, "w");
	fputs("s3cret\n", f);
	fclose(f);
	opts = base_opts(&srv);
	opts.username = "1234";
	opts.password_file = secret;
	opts.tenant = "team-a";
	opts.headers = extra;
	opts.n_headers = 1;
	log_set_level(LOG_DEBUG);
	capture_begin();
	sink = make(&opts);
	if (!sink) {
		capture_end();
		log_set_level(LOG_ERROR);
		goto out;
	}
	submit_n(sink, 0, 5);
	WAIT_FOR(sink, profiles_written, 5, 5000);
	{
		const char *log = capture_end();

		log_set_level(LOG_ERROR);
		/* Debug level logs every push, and never a credential. */
		CHECK(strstr(log, "debug: pyroscope sink \"test\": pushed the profile of s4 (22 "
				  "bytes) in ") != NULL);
		CHECK(strstr(log, "s3cret") == NULL);
		CHECK(strstr(log, "MTIzNDpzM2NyZXQ") == NULL);
		CHECK(strstr(log, "Authorization") == NULL);
	}
	CHECK_STR(server_order(&srv, order, sizeof(order)), "s0,s1,s2,s3,s4");
	CHECK_EQ_U64(stats_of(sink).bytes_written, 5 * sizeof(fake_gz));
	CHECK_EQ_U64(stats_of(sink).errors, 0);
	CHECK_EQ_U64(stats_of(sink).queue_length, 0);
	{
		const char *h = srv.requests[0].headers;

		CHECK(strstr(h, "POST /push.v1.PusherService/Push HTTP/1.1\r\n") == h);
		CHECK(strstr(h, "\r\nContent-Type: application/proto\r\n") != NULL);
		CHECK(strstr(h, "\r\nConnect-Protocol-Version: 1\r\n") != NULL);
		CHECK(strstr(h, "\r\nX-Scope-OrgID: team-a\r\n") != NULL);
		CHECK(strstr(h, "\r\nX-Team: memory\r\n") != NULL);
		/* base64("1234:s3cret"): the newline of the file is not part of it. */
		CHECK(strstr(h, "\r\nAuthorization: Basic MTIzNDpzM2NyZXQ=\r\n") != NULL);
	}
	/* A rotated password file is read again. */
	f = fopen(secret, "w");
	fputs("n3w-s3cret-longer", f);
	fclose(f);
	submit_n(sink, 5, 6);
	WAIT_FOR(sink, profiles_written, 6, 5000);
	CHECK(strstr(srv.requests[5].headers,
		     "\r\nAuthorization: Basic MTIzNDpuM3ctczNjcmV0LWxvbmdlcg==\r\n") != NULL);
	sink__free(sink);
out:
	server_stop(&srv);
	nftw(tmp, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void test_bearer_token_from_env(void)
{
	struct server srv;
	struct push_sink_opts opts;
	struct sink *sink;

	server_init(&srv);
	server_start(&srv);
	setenv("ALLOCSCOPE_TEST_TOKEN", "tok-123\n", 1);
	opts = base_opts(&srv);
	opts.token_env = "ALLOCSCOPE_TEST_TOKEN";
	sink = make(&opts);
	if (sink) {
		submit_n(sink, 0, 1);
		WAIT_FOR(sink, profiles_written, 1, 5000);
		CHECK(strstr(srv.requests[0].headers, "\r\nAuthorization: Bearer tok-123\r\n"));
		sink__free(sink);
	}
	server_stop(&srv);
	/* Missing credentials stop the sink from being made, with the variable's name. */
	{
		char err[512] = "";
		struct sink *bad = NULL;

		opts.token_env = "ALLOCSCOPE_TEST_NO_SUCH_VARIABLE";
		CHECK(push_sink__new(&opts, &bad, err, sizeof(err)) == -ENOENT);
		CHECK(strstr(err, "ALLOCSCOPE_TEST_NO_SUCH_VARIABLE") != NULL);
		opts.token_env = NULL;
		opts.token_file = "/nonexistent/token";
		CHECK(push_sink__new(&opts, &bad, err, sizeof(err)) == -ENOENT);
		CHECK(strstr(err, "token_file /nonexistent/token") != NULL);
	}
}

/* Down, then up: nothing lost, in order; meanwhile the profiles went to the spool. */
static void test_down_then_up_with_spool(void)
{
	struct server srv;
	struct push_sink_opts opts;
	char tmp[64], order[256];
	struct sink *sink;

	server_init(&srv);
	make_tmp(tmp, sizeof(tmp));
	opts = base_opts(&srv);
	opts.spool_dir = tmp;
	opts.spool_max_bytes = 1 << 20;
	sink = make(&opts);
	if (!sink)
		goto out;
	submit_n(sink, 0, 3);
	WAIT_FOR(sink, retries, 2, 5000);
	submit_n(sink, 3, 8);
	/* While failing, everything waits on disk (moved there by the worker). */
	WAIT_EQ(sink, spool_profiles, 8, 3000);
	WAIT_EQ(sink, queue_length, 0, 3000);
	server_start(&srv);
	WAIT_FOR(sink, profiles_written, 8, 5000);
	CHECK_STR(server_order(&srv, order, sizeof(order)), "s0,s1,s2,s3,s4,s5,s6,s7");
	CHECK_EQ_U64(stats_of(sink).profiles_dropped, 0);
	/* The gauge is published after the delivery is counted. */
	WAIT_EQ(sink, spool_profiles, 0, 3000);
	CHECK(stats_of(sink).profiles_spooled >= 8);
	sink__free(sink);
out:
	server_stop(&srv);
	nftw(tmp, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* The spool outlives the sink: profiles left at close are delivered by the next one, first. */
static void test_spool_survives_restart(void)
{
	struct server srv;
	struct push_sink_opts opts;
	char tmp[64], order[256];
	struct sink *sink;
	double started;

	server_init(&srv);
	make_tmp(tmp, sizeof(tmp));
	opts = base_opts(&srv);
	opts.spool_dir = tmp;
	sink = make(&opts);
	if (!sink)
		goto out;
	submit_n(sink, 0, 4);
	WAIT_FOR(sink, retries, 1, 5000);
	/* Known to be failing and with a spool: closing does not wait for the deadline. */
	started = mono_s();
	sink__free(sink);
	CHECK(mono_s() - started < 1.5);

	server_start(&srv);
	sink = make(&opts);
	if (!sink)
		goto out;
	submit_n(sink, 4, 6);
	WAIT_FOR(sink, profiles_written, 6, 5000);
	CHECK_STR(server_order(&srv, order, sizeof(order)), "s0,s1,s2,s3,s4,s5");
	sink__free(sink);
out:
	server_stop(&srv);
	nftw(tmp, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Renames the spool's first profile file to a temporary name as a write killed between its
 * sync and its rename leaves it. Returns true when there was one. */
static bool unrename_first_spool_file(const char *dir)
{
	char from[PATH_MAX], to[PATH_MAX];
	struct dirent *ent;
	bool done = false;
	DIR *d = opendir(dir);

	while (d && !done && (ent = readdir(d))) {
		if (strncmp(ent->d_name, "profile-", 8) != 0)
			continue;
		snprintf(from, sizeof(from), "%s/%s", dir, ent->d_name);
		snprintf(to, sizeof(to), "%s/.tmp-%.20s-1-0", dir, ent->d_name + 8);
		done = rename(from, to) == 0;
	}
	if (d)
		closedir(d);
	return done;
}

/* kill -9 between a spool write's sync and its rename: the next agent delivers that profile
 * (it used to delete it without a word), and counts and logs what it recovered and what was
 * torn. */
static void test_spool_recovers_after_kill(void)
{
	struct server srv;
	struct push_sink_opts opts;
	char tmp[64], torn[128], order[256];
	const char *log;
	struct sink *sink;
	FILE *f;

	server_init(&srv);
	make_tmp(tmp, sizeof(tmp));
	opts = base_opts(&srv);
	opts.spool_dir = tmp;
	sink = make(&opts);
	if (!sink)
		goto out;
	submit_n(sink, 0, 1);
	WAIT_FOR(sink, profiles_spooled, 1, 5000);
	sink__free(sink);
	CHECK(unrename_first_spool_file(tmp));
	snprintf(torn, sizeof(torn), "%s/.tmp-00000000000000000001-1-1", tmp);
	f = fopen(torn, "w");
	if (f) {
		fputs("ALSCSPL1 cut short", f);
		fclose(f);
	}

	server_start(&srv);
	log_set_level(LOG_INFO);
	capture_begin();
	sink = make(&opts);
	if (sink) {
		WAIT_FOR(sink, profiles_written, 1, 5000);
		CHECK_EQ_U64(stats_of(sink).spool_recovered, 1);
		CHECK_EQ_U64(stats_of(sink).spool_corrupt, 1);
		sink__free(sink);
	}
	log = capture_end();
	log_set_level(LOG_ERROR);
	CHECK(strstr(log, "recovered 1 whole profiles from writes to spool") != NULL);
	CHECK(strstr(log, "removed 1 profiles cut short in spool") != NULL);
	CHECK_STR(server_order(&srv, order, sizeof(order)), "s0");
out:
	server_stop(&srv);
	nftw(tmp, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Waits up to timeout_ms for text to appear in what is being captured. */
static bool captured_has(const char *text, int timeout_ms)
{
	for (int waited = 0; waited <= timeout_ms; waited += 20) {
		ssize_t n;

		fflush(stderr);
		n = pread(2, captured, sizeof(captured) - 1, 0);
		captured[n < 0 ? 0 : n] = '\0';
		if (strstr(captured, text))
			return true;
		sleep_ms(20);
	}
	return false;
}

/* Two sinks of one agent on one spool directory spelled differently (which the configuration
 * refuses, but a symlink can appear later): the second one's message names the first one,
 * at once, instead of blaming another process after 10 s. */
static void test_spool_shared_by_two_sinks_named(void)
{
	struct server srv;
	struct push_sink_opts opts_a, opts_b;
	char tmp[64], other_spelling[80], expected[256];
	struct sink *a, *b = NULL;

	server_init(&srv);
	make_tmp(tmp, sizeof(tmp));
	snprintf(other_spelling, sizeof(other_spelling), "%s/./", tmp);
	opts_a = base_opts(&srv);
	opts_a.name = "a";
	opts_a.spool_dir = tmp;
	opts_b = opts_a;
	opts_b.name = "b";
	opts_b.spool_dir = other_spelling;
	a = make(&opts_a);
	if (!a)
		goto out;
	submit_n(a, 0, 1);
	WAIT_FOR(a, profiles_spooled, 1, 5000); /* a holds the spool */
	capture_begin();
	b = make(&opts_b);
	snprintf(expected, sizeof(expected),
		 "pyroscope sink \"b\": spool directory %s is already used by the pyroscope "
		 "sink \"a\" of this agent (the same directory, spelled differently): give each "
		 "sink a spool_dir of its own",
		 other_spelling);
	CHECK(captured_has(expected, 5000));
	capture_end();
	sink__free(b);
	sink__free(a);
out:
	server_stop(&srv);
	nftw(tmp, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* A reload makes the new sink before freeing the old one, both on one spool directory: the
 * new one waits for the old one's lock, then delivers everything once, in order. */
static void test_spool_handover_between_sinks(void)
{
	struct server srv;
	struct push_sink_opts opts;
	char tmp[64], order[256];
	struct sink *old_sink, *new_sink;
	uint64_t by_old;

	server_init(&srv);
	make_tmp(tmp, sizeof(tmp));
	opts = base_opts(&srv);
	opts.spool_dir = tmp;
	old_sink = make(&opts);
	if (!old_sink)
		goto out;
	submit_n(old_sink, 0, 3);
	WAIT_FOR(old_sink, retries, 1, 5000);
	new_sink = make(&opts);
	if (!new_sink) {
		sink__free(old_sink);
		goto out;
	}
	server_start(&srv);
	sleep_ms(300);
	/* The old sink may deliver while it still holds the spool; the new one may not. */
	CHECK_EQ_U64(stats_of(new_sink).profiles_written, 0);
	sink__free(old_sink); /* closing: its last counters are final */
	by_old = server_count(&srv);
	submit_n(new_sink, 3, 5);
	for (int waited = 0; server_count(&srv) < 5 && waited < 5000; waited += 10)
		sleep_ms(10);
	CHECK_STR(server_order(&srv, order, sizeof(order)), "s0,s1,s2,s3,s4");
	WAIT_FOR(new_sink, profiles_written, 5 - by_old, 2000);
	CHECK_EQ_U64(stats_of(new_sink).profiles_written, 5 - by_old);
	sink__free(new_sink);
out:
	server_stop(&srv);
	nftw(tmp, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void test_retry_after_and_rejection(void)
{
	struct server srv;
	struct push_sink_opts opts;
	char order[256];
	struct sink *sink;
	const char *log;
	double gap;

	server_init(&srv);
	server_script(&srv, (struct scripted){503, NULL, "{\"code\":\"unavailable\"}"});
	server_script(&srv, (struct scripted){429, "Retry-After: 1\r\n", ""});
	server_script(&srv, (struct scripted){200, NULL, NULL});
	server_script(&srv, (struct scripted){
				400, NULL,
				"{\"code\":\"invalid_argument\",\"message\":\"profile too old\"}"});
	server_start(&srv);
	opts = base_opts(&srv);
	log_set_level(LOG_INFO);
	capture_begin();
	sink = make(&opts);
	if (!sink) {
		capture_end();
		goto out;
	}
	submit_n(sink, 0, 3);
	WAIT_FOR(sink, profiles_written, 2, 8000);
	log = capture_end();
	log_set_level(LOG_ERROR);
	/* The first failure is logged with its reason; the second within 30 s is not. */
	CHECK(strstr(log, "warning: pyroscope sink \"test\": push to http://127.0.0.1:") != NULL);
	CHECK(strstr(log, "/push.v1.PusherService/Push failed: HTTP 503: unavailable; retrying "
			  "in ") != NULL);
	CHECK(strstr(log, "HTTP 429") == NULL);
	CHECK(strstr(log, "error: pyroscope sink \"test\": the server refused the profile of s1 "
			  "(not retried): HTTP 400: invalid_argument: profile too old\n") != NULL);
	CHECK(strstr(log, "pyroscope sink \"test\": delivering again after 2 failed attempts\n"));
	/* s0: 503, 429 (Retry-After: 1 s, far above max_backoff), then 200. s1: 400, refused
	 * for good. s2: 200. */
	CHECK_STR(server_order(&srv, order, sizeof(order)), "s0,s0,s0,s1,s2");
	gap = srv.requests[2].at - srv.requests[1].at;
	CHECK(gap >= 0.95);
	CHECK_EQ_U64(stats_of(sink).retries, 2);
	CHECK_EQ_U64(stats_of(sink).profiles_rejected, 1);
	CHECK_EQ_U64(stats_of(sink).errors, 3);
	CHECK_EQ_U64(stats_of(sink).profiles_dropped, 0);
	sink__free(sink);
out:
	server_stop(&srv);
}

/* Without a spool the queue bounds memory: the oldest go first, counted. */
static void test_queue_full_drops_oldest(void)
{
	struct server srv;
	struct push_sink_opts opts;
	char order[256];
	struct sink *sink;

	server_init(&srv);
	opts = base_opts(&srv);
	opts.queue_size = 3;
	sink = make(&opts);
	if (!sink)
		goto out;
	submit_n(sink, 0, 1);
	WAIT_FOR(sink, retries, 1, 5000);
	/* s0 is in flight (held for its retry) and counts against the queue too. */
	submit_n(sink, 1, 7);
	CHECK_EQ_U64(stats_of(sink).profiles_dropped, 3);
	CHECK_EQ_U64(stats_of(sink).queue_length, 4);
	server_start(&srv);
	WAIT_FOR(sink, profiles_written, 4, 5000);
	CHECK_STR(server_order(&srv, order, sizeof(order)), "s0,s4,s5,s6");
	sink__free(sink);
out:
	server_stop(&srv);
}

static void test_spool_full_drops_oldest(void)
{
	struct server srv;
	struct push_sink_opts opts;
	char tmp[64], order[256];
	struct sink *sink;

	server_init(&srv);
	make_tmp(tmp, sizeof(tmp));
	opts = base_opts(&srv);
	opts.spool_dir = tmp;
	opts.spool_max_bytes = 3 * 150; /* each file is about 120 bytes */
	sink = make(&opts);
	if (!sink)
		goto out;
	submit_n(sink, 0, 1);
	WAIT_FOR(sink, retries, 1, 5000);
	submit_n(sink, 1, 6);
	WAIT_EQ(sink, profiles_dropped, 3, 3000);
	WAIT_EQ(sink, spool_profiles, 3, 3000);
	WAIT_EQ(sink, queue_length, 0, 3000);
	server_start(&srv);
	WAIT_FOR(sink, profiles_written, 3, 5000);
	CHECK_STR(server_order(&srv, order, sizeof(order)), "s3,s4,s5");
	sink__free(sink);
out:
	server_stop(&srv);
	nftw(tmp, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* A server that never answers cannot hold the agent past shutdown_timeout. */
static void test_shutdown_deadline(void)
{
	struct server srv;
	struct push_sink_opts opts;
	struct sink *sink;
	double started, took;

	server_init(&srv);
	server_script(&srv, (struct scripted){-1, NULL, NULL});
	server_start(&srv);
	opts = base_opts(&srv);
	opts.timeout_ms = 30000;
	opts.shutdown_timeout_ms = 1000;
	sink = make(&opts);
	if (!sink)
		goto out;
	submit_n(sink, 0, 3);
	sleep_ms(200);
	started = mono_s();
	sink__free(sink);
	took = mono_s() - started;
	CHECK(took >= 0.9 && took < 2.6);
out:
	server_stop(&srv);
}

/* A sink replaced by a reload, with a spool, does not hold the reload up to shutdown_timeout:
 * what it holds goes to the spool at once, for its successor. */
static void test_retire_spools_at_once(void)
{
	struct server srv;
	struct push_sink_opts opts;
	char tmp[64], order[256];
	struct sink *sink;
	double started, took;

	server_init(&srv);
	server_script(&srv, (struct scripted){-1, NULL, NULL});
	server_start(&srv);
	make_tmp(tmp, sizeof(tmp));
	opts = base_opts(&srv);
	opts.timeout_ms = 30000;
	opts.shutdown_timeout_ms = 5000;
	opts.spool_dir = tmp;
	sink = make(&opts);
	if (!sink)
		goto out;
	submit_n(sink, 0, 3);
	sleep_ms(200);
	push_sink__retire(sink);
	started = mono_s();
	sink__free(sink);
	took = mono_s() - started;
	CHECK(took < 1.0);

	/* The first server hangs on its connection until stopped: a second one answers. */
	server_stop(&srv);
	server_init(&srv);
	server_start(&srv);
	opts = base_opts(&srv);
	opts.spool_dir = tmp;
	sink = make(&opts);
	if (!sink)
		goto out;
	WAIT_FOR(sink, profiles_written, 3, 5000);
	CHECK_STR(server_order(&srv, order, sizeof(order)), "s0,s1,s2");
	CHECK_EQ_U64(stats_of(sink).profiles_dropped, 0);
	sink__free(sink);
out:
	server_stop(&srv);
	nftw(tmp, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Profiles above max_profile_size are refused before they are queued. */
static void test_too_large(void)
{
	struct server srv;
	struct push_sink_opts opts;
	struct sink *sink;

	server_init(&srv);
	server_start(&srv);
	opts = base_opts(&srv);
	opts.max_profile_bytes = 1000; /* the fixture declares 1337 bytes uncompressed */
	sink = make(&opts);
	if (!sink)
		goto out;
	capture_begin();
	CHECK(submit(sink, "big") == -E2BIG);
	CHECK(strstr(capture_end(), "not pushing the profile of big: 1337 bytes uncompressed is "
				    "above max_profile_size (1000)") != NULL);
	CHECK_EQ_U64(stats_of(sink).profiles_rejected, 1);
	sleep_ms(100);
	CHECK_EQ_U64(server_count(&srv), 0);
	sink__free(sink);
out:
	server_stop(&srv);
}

/* A profile Pyroscope's rate limiter refuses for ever (429: above its burst) stalls nothing:
 * after max_attempts refusals it is dropped, counted and logged, and the next one goes. */
static void test_refused_for_ever_is_given_up(void)
{
	struct server srv;
	struct push_sink_opts opts;
	char order[256];
	struct sink *sink;
	const char *log;

	server_init(&srv);
	for (int i = 0; i < 3; i++)
		server_script(&srv, (struct scripted){429, NULL,
						      "{\"code\":\"resource_exhausted\","
						      "\"message\":\"ingestion rate limit\"}"});
	server_start(&srv);
	opts = base_opts(&srv);
	opts.max_attempts = 3;
	log_set_level(LOG_INFO);
	capture_begin();
	sink = make(&opts);
	if (!sink) {
		capture_end();
		goto out;
	}
	submit_n(sink, 0, 2);
	WAIT_FOR(sink, profiles_written, 1, 8000);
	log = capture_end();
	log_set_level(LOG_ERROR);
	CHECK_STR(server_order(&srv, order, sizeof(order)), "s0,s0,s0,s1");
	CHECK_EQ_U64(stats_of(sink).profiles_given_up, 1);
	CHECK_EQ_U64(stats_of(sink).profiles_dropped, 1);
	CHECK(strstr(log, "error: pyroscope sink \"test\": dropped the profile of s0 after the "
			  "server refused it 3 times (max_attempts): HTTP 429: resource_exhausted: "
			  "ingestion rate limit.") != NULL);
	sink__free(sink);
out:
	server_stop(&srv);
}

/* An outage is not the profile's fault: connection failures never count against
 * max_attempts. */
static void test_outage_does_not_count_attempts(void)
{
	struct server srv;
	struct push_sink_opts opts;
	struct sink *sink;

	server_init(&srv);
	opts = base_opts(&srv);
	opts.max_attempts = 1;
	sink = make(&opts);
	if (!sink)
		goto out;
	submit_n(sink, 0, 1);
	WAIT_FOR(sink, retries, 3, 5000);
	server_start(&srv);
	WAIT_FOR(sink, profiles_written, 1, 5000);
	CHECK_EQ_U64(stats_of(sink).profiles_given_up, 0);
	CHECK_EQ_U64(stats_of(sink).profiles_dropped, 0);
	sink__free(sink);
out:
	server_stop(&srv);
}

static int submit_at(struct sink *sink, const char *service, int64_t start_ns)
{
	struct profile_label labels[] = {{"service_name", service}};
	struct profile_record record = {
	    .service = service,
	    .labels = labels,
	    .n_labels = 1,
	    .start_ns = start_ns,
	    .duration_ns = 1000000000LL,
	    .pprof_gz = fake_gz,
	    .pprof_gz_len = sizeof(fake_gz),
	};

	return sink__submit(sink, &record);
}

/* Spooled profiles past the server's ingestion window are dropped when their turn comes,
 * without a request (Pyroscope would refuse them), counted and logged with the reason. */
static void test_too_old_is_dropped(void)
{
	struct server srv;
	struct push_sink_opts opts;
	char tmp[64], order[256];
	struct sink *sink;
	struct timespec ts;
	int64_t now_ns;
	const char *log;

	clock_gettime(CLOCK_REALTIME, &ts);
	now_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
	server_init(&srv);
	make_tmp(tmp, sizeof(tmp));
	opts = base_opts(&srv);
	opts.spool_dir = tmp;
	/* Spooled during an outage by a sink without the limit (an agent of the version
	 * before), then delivered by one with it. */
	sink = make(&opts);
	if (!sink)
		goto out;
	CHECK(submit_at(sink, "old", now_ns - 2 * 3600 * 1000000000LL) == 0);
	CHECK(submit_at(sink, "fresh", now_ns) == 0);
	WAIT_EQ(sink, spool_profiles, 2, 3000);
	sink__free(sink);

	server_start(&srv);
	opts.max_profile_age_ms = 3600 * 1000;
	log_set_level(LOG_INFO);
	capture_begin();
	sink = make(&opts);
	if (!sink) {
		capture_end();
		goto out;
	}
	WAIT_FOR(sink, profiles_written, 1, 5000);
	log = capture_end();
	log_set_level(LOG_ERROR);
	CHECK_STR(server_order(&srv, order, sizeof(order)), "fresh");
	CHECK_EQ_U64(stats_of(sink).profiles_expired, 1);
	CHECK_EQ_U64(stats_of(sink).profiles_dropped, 1);
	CHECK_EQ_U64(stats_of(sink).spool_profiles, 0);
	CHECK(strstr(log, "dropped the profile of old without sending it: it is 2h old, past "
			  "max_profile_age (1h), and Pyroscope refuses profiles older than 1 h") !=
	      NULL);
	sink__free(sink);
out:
	server_stop(&srv);
	nftw(tmp, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* A push sink asks for merged, bounded profiles; its limits are the configured ones. */
static void test_shape(void)
{
	struct server srv;
	struct push_sink_opts opts;
	struct sink_shape shape;
	struct sink *sink;

	server_init(&srv);
	opts = base_opts(&srv);
	opts.max_samples = 16000;
	opts.max_profile_bytes = 1 << 20;
	sink = make(&opts);
	if (!sink)
		goto out;
	sink__shape(sink, &shape);
	CHECK(shape.merge_processes);
	CHECK_EQ_U64(shape.max_samples, 16000);
	CHECK_EQ_U64(shape.max_bytes, 1 << 20);
	sink__free(sink);
out:
	server_stop(&srv);
}

static void test_bad_urls(void)
{
	struct push_sink_opts opts = {.protocol = PUSH_PARCA};
	char err[512];
	struct sink *sink = NULL;

	opts.url = "ftp://example.com";
	CHECK(push_sink__new(&opts, &sink, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "http or https") != NULL);
	opts.url = "https://user:pw@example.com";
	CHECK(push_sink__new(&opts, &sink, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "credentials") != NULL && !strstr(err, "pw"));
	opts.url = "http://example.com";
	opts.server_name = "other.example.com";
	CHECK(push_sink__new(&opts, &sink, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "server_name needs an https:// url") != NULL);
	CHECK(sink == NULL);
}

int main(void)
{
	log_set_level(LOG_ERROR);
	RUN(test_delivers_in_order_with_headers);
	RUN(test_bearer_token_from_env);
	RUN(test_down_then_up_with_spool);
	RUN(test_spool_survives_restart);
	RUN(test_spool_handover_between_sinks);
	RUN(test_spool_recovers_after_kill);
	RUN(test_spool_shared_by_two_sinks_named);
	RUN(test_retry_after_and_rejection);
	RUN(test_queue_full_drops_oldest);
	RUN(test_spool_full_drops_oldest);
	RUN(test_shutdown_deadline);
	RUN(test_retire_spools_at_once);
	RUN(test_too_large);
	RUN(test_refused_for_ever_is_given_up);
	RUN(test_outage_does_not_count_attempts);
	RUN(test_too_old_is_dropped);
	RUN(test_shape);
	RUN(test_bad_urls);
	return unit_summary("push_sink");
}
