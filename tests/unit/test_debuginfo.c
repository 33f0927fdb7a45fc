/* Debug information from debuginfod: a real server (Debian's debuginfod, started here on
 * 127.0.0.1 over the fixture directory debuginfod/) hands out the DWARF of stripped fixtures,
 * and of a dwz supplementary file, by build id; the client remembers answers per build id;
 * the symbolizer then names inline frames and lines of binaries that carry none. A server that
 * accepts connections and never answers must not hold a query past its bound, and after it
 * nothing more is asked. Downloads go to a temporary DEBUGINFOD_CACHE_PATH. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "symbolize/debuginfo.h"
#include "symbolize/elf_file.h"
#include "symbolize/symbolizer.h"
#include "unit.h"
#include "fixtures.h"
#include "fixture_process.h"

/* Generous: the local server answers in milliseconds, but a slow machine (or valgrind) must not
 * turn a fetch into a timeout. */
#define REAL_SERVER_TIMEOUT 30

#define INSTALL_HINT "run sudo scripts/install-deps (packages debuginfod, libdebuginfod-dev, dwz)"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char work_dir[] = "/tmp/allocscope-dinfod-XXXXXX";

/* A fresh DEBUGINFOD_CACHE_PATH, so each test really downloads. */
static void fresh_cache(const char *name, char *path, size_t len)
{
	snprintf(path, len, "%s/cache-%s", work_dir, name);
	setenv("DEBUGINFOD_CACHE_PATH", path, 1);
}

static bool file_build_id(const char *path, char *id, size_t len)
{
	struct elf_file *f = NULL;
	bool ok = elf_file__open(path, &f) == 0 && elf_file__build_id(f);

	if (ok)
		snprintf(id, len, "%s", elf_file__build_id(f));
	elf_file__free(f);
	return ok;
}

/* A local port nobody listens on (for now). */
static int free_port(void)
{
	struct sockaddr_in addr = {.sin_family = AF_INET};
	socklen_t len = sizeof(addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&addr, &len) == 0)
		port = ntohs(addr.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

/* The HTTP status of GET path on 127.0.0.1:port, -1 when there is no answer. */
static int http_status(int port, const char *path)
{
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	struct timeval timeout = {.tv_sec = 2};
	char request[512], reply[64] = "";
	int fd = socket(AF_INET, SOCK_STREAM, 0), status = -1;
	ssize_t n;

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
	snprintf(request, sizeof(request), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
	    write(fd, request, strlen(request)) == (ssize_t)strlen(request)) {
		n = read(fd, reply, sizeof(reply) - 1);
		if (n > 0) {
			reply[n] = '\0';
			if (sscanf(reply, "HTTP/%*s %d", &status) != 1)
				status = -1;
		}
	}
	close(fd);
	return status;
}

struct server {
	pid_t pid;
	int port;
	char url[64];
};

static struct server server = {.pid = -1};

static bool have_debuginfod(void)
{
	if (system("command -v debuginfod >/dev/null 2>&1") == 0)
		return true;
	fprintf(stderr, "  debuginfod is not installed: " INSTALL_HINT "\n");
	unit_case_failures++;
	return false;
}

/* Starts debuginfod over the fixtures' debuginfod/ directory and waits until it serves every
 * build id in ids (it scans in the background after it starts listening). */
static bool start_server(const char *const *ids)
{
	char db[PATH_MAX], log[PATH_MAX], port[16], path[256];
	double deadline;
	size_t i;

	snprintf(db, sizeof(db), "%s/debuginfod.sqlite", work_dir);
	snprintf(log, sizeof(log), "%s/debuginfod.log", work_dir);
	server.port = free_port();
	CHECK(server.port > 0);
	snprintf(port, sizeof(port), "%d", server.port);
	snprintf(server.url, sizeof(server.url), "http://127.0.0.1:%d", server.port);
	server.pid = fork();
	CHECK(server.pid >= 0);
	if (server.pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
		}
		/* A server with DEBUGINFOD_URLS would forward misses there. */
		unsetenv("DEBUGINFOD_URLS");
		execlp("debuginfod", "debuginfod", "-F", "-p", port, "-d", db, "-t0", "-g0",
		       fixture("debuginfod"), (char *)NULL);
		_exit(127);
	}
	deadline = now_s() + 30;
	for (i = 0; ids[i] && server.pid > 0; i++) {
		snprintf(path, sizeof(path), "/buildid/%s/debuginfo", ids[i]);
		while (http_status(server.port, path) != 200 && now_s() < deadline)
			usleep(50 * 1000);
		if (now_s() >= deadline) {
			fprintf(stderr, "  debuginfod did not serve %s within 30 s (log: %s)\n",
				ids[i], log);
			return false;
		}
	}
	return server.pid > 0;
}

static void stop_server(void)
{
	int status;

	if (server.pid > 0) {
		kill(server.pid, SIGKILL);
		waitpid(server.pid, &status, 0);
	}
	server.pid = -1;
}


static char id_lines[128], id_dwz_remote[128], id_dwz_common[128];
static bool have_dwz;

static void test_client_fetches_and_remembers(void)
{
	struct debuginfo_client *c = NULL;
	char cache[PATH_MAX], cached[PATH_MAX + 160], id[128] = "";
	const char *path = NULL, *again = NULL;
	struct elf_file *f = NULL;
	struct stat st;

	if (server.pid <= 0) {
		unit_case_failures++;
		return;
	}
	fresh_cache("client", cache, sizeof(cache));
	CHECK_EQ_U64(debuginfo_client__new(server.url, REAL_SERVER_TIMEOUT, &c), 0);
	if (!c)
		return;
	CHECK_EQ_U64(debuginfo_client__queries(c), 0);
	CHECK_EQ_U64(debuginfo_client__find_debuginfo(c, id_lines, &path), 0);
	CHECK(path != NULL);
	/* The downloaded file is the right one, with DWARF, in the configured cache. */
	CHECK(path && strncmp(path, cache, strlen(cache)) == 0);
	CHECK(path && file_build_id(path, id, sizeof(id)));
	CHECK_STR(id, id_lines);
	CHECK(path && elf_file__open(path, &f) == 0 && elf_file__has_dwarf(f));
	elf_file__free(f);
	snprintf(cached, sizeof(cached), "%s/%s/debuginfo", cache, id_lines);
	CHECK(stat(cached, &st) == 0 && st.st_size > 0);
	CHECK_EQ_U64(debuginfo_client__queries(c), 1);

	/* Asked again: the same answer, no query. */
	CHECK_EQ_U64(debuginfo_client__find_debuginfo(c, id_lines, &again), 0);
	CHECK(again == path);
	CHECK_EQ_U64(debuginfo_client__queries(c), 1);

	/* Unknown to the server: a miss, remembered too. */
	CHECK_EQ_U64(
	    debuginfo_client__find_debuginfo(c, "00112233445566778899aabbccddeeff00112233", &path),
	    -ENOENT);
	CHECK(path == NULL);
	CHECK_EQ_U64(
	    debuginfo_client__find_debuginfo(c, "00112233445566778899aabbccddeeff00112233", &path),
	    -ENOENT);
	CHECK_EQ_U64(debuginfo_client__queries(c), 2);
	CHECK(!debuginfo_client__server_down(c));

	/* Not a build id: not sent. */
	CHECK_EQ_U64(debuginfo_client__find_debuginfo(c, "../../etc/passwd", &path), -EINVAL);
	CHECK_EQ_U64(debuginfo_client__find_debuginfo(c, "ABCD", &path), -EINVAL);
	CHECK_EQ_U64(debuginfo_client__queries(c), 2);
	debuginfo_client__free(c);

	CHECK_EQ_U64(debuginfo_client__new("", 5, &c), -EINVAL);
	CHECK_EQ_U64(debuginfo_client__new("  ", 5, &c), -EINVAL);
	debuginfo_client__free(NULL);
}

/* Resolves the inlined call of a lines.c fixture; expect names or not. */
static void check_fixture_via(struct symbolizer *s, const char *exe, bool expect_names)
{
	struct symbolized_frame frame;
	struct run r;

	CHECK(start_run(fixture(exe), &r));
	if (r.count) {
		memset(&frame, 0, sizeof(frame));
		CHECK_EQ_U64(symbolizer__resolve(
				 s, r.pid, run_value(&r, "return_in_inlined", false), true, &frame),
			     0);
		if (expect_names) {
			CHECK_EQ_U64(frame.n_lines, 2);
			CHECK_STR(frame.function, "lines_outer");
			CHECK(frame.has_inline_frames && frame.has_line_numbers &&
			      frame.has_filenames);
			if (frame.n_lines == 2) {
				CHECK_STR(frame.lines[0].function, "lines_inlined_leaf");
				CHECK_EQ_U64(frame.lines[0].line,
					     run_value(&r, "inlined_call", true));
				CHECK_EQ_U64(frame.lines[1].line,
					     run_value(&r, "outer_call", true));
			}
		} else {
			CHECK(frame.mapping_key != NULL);
			CHECK(frame.function == NULL && frame.n_lines == 0);
			CHECK(!frame.has_inline_frames && !frame.has_line_numbers);
		}
	}
	stop_run(&r);
}

static void test_symbolizer_fetches_debug_info(void)
{
	const char *no_roots[] = {NULL};
	struct symbolizer *s;
	char cache[PATH_MAX];

	if (server.pid <= 0) {
		unit_case_failures++;
		return;
	}
	fresh_cache("symbolizer", cache, sizeof(cache));
	CHECK_EQ_U64(elf_file__set_debug_roots(no_roots), 0);
	/* Control: never asking, the stripped file names nothing. */
	s = symbolizer__new();
	CHECK(s && symbolizer__set_debuginfod(s, "", 0) == 0);
	if (s)
		check_fixture_via(s, "lines_debuginfod", false);
	symbolizer__free(s);

	s = symbolizer__new();
	CHECK(s && symbolizer__set_debuginfod(s, server.url, REAL_SERVER_TIMEOUT) == 0);
	if (s)
		check_fixture_via(s, "lines_debuginfod", true);
	symbolizer__free(s);

	/* DEBUGINFOD_URLS alone is enough. */
	fresh_cache("symbolizer-env", cache, sizeof(cache));
	setenv("DEBUGINFOD_URLS", server.url, 1);
	s = symbolizer__new();
	CHECK(s != NULL);
	if (s)
		check_fixture_via(s, "lines_debuginfod", true);
	symbolizer__free(s);
	unsetenv("DEBUGINFOD_URLS");
	CHECK_EQ_U64(elf_file__set_debug_roots(NULL), 0);
}

/* The debug file is dwz-compressed and its common file exists only on the server too. */
static void test_symbolizer_fetches_dwz_common_file(void)
{
	const char *no_roots[] = {NULL};
	struct symbolizer *s;
	char cache[PATH_MAX];

	if (!have_dwz) {
		fprintf(stderr, "  dwz fixtures missing: " INSTALL_HINT ", then make unit\n");
		unit_case_failures++;
		return;
	}
	if (server.pid <= 0) {
		unit_case_failures++;
		return;
	}
	fresh_cache("dwz", cache, sizeof(cache));
	CHECK_EQ_U64(elf_file__set_debug_roots(no_roots), 0);
	s = symbolizer__new();
	CHECK(s && symbolizer__set_debuginfod(s, server.url, REAL_SERVER_TIMEOUT) == 0);
	if (s)
		check_fixture_via(s, "lines_dwz_remote", true);
	symbolizer__free(s);
	CHECK_EQ_U64(elf_file__set_debug_roots(NULL), 0);
}

/* A server that takes connections (the kernel completes them: the socket listens) and never
 * reads or answers. */
static int black_hole(int *port)
{
	struct sockaddr_in addr = {.sin_family = AF_INET};
	socklen_t len = sizeof(addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
	    listen(fd, 64) != 0 || getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*port = ntohs(addr.sin_port);
	return fd;
}

static void test_unanswering_server_is_bounded(void)
{
	const unsigned timeout = 2;
	const char *no_roots[] = {NULL};
	struct debuginfo_client *c = NULL;
	struct symbolizer *s;
	char url[64], cache[PATH_MAX], negative[PATH_MAX + 160];
	const char *path = NULL;
	double t0, elapsed;
	struct stat st;
	int fd, port = 0, ret;

	fd = black_hole(&port);
	CHECK(fd >= 0);
	if (fd < 0)
		return;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
	fresh_cache("black-hole", cache, sizeof(cache));
	CHECK_EQ_U64(debuginfo_client__new(url, timeout, &c), 0);
	t0 = now_s();
	ret = debuginfo_client__find_debuginfo(c, id_lines, &path);
	elapsed = now_s() - t0;
	printf("debuginfo: unanswering server, %u s bound: query returned %d after %.2f s\n",
	       timeout, ret, elapsed);
	CHECK_EQ_U64(ret, -ETIMEDOUT);
	CHECK(path == NULL);
	CHECK(elapsed < 4.0 * timeout);
	CHECK(debuginfo_client__server_down(c));
	/* No second wait: the next build id is not even sent. */
	CHECK_EQ_U64(
	    debuginfo_client__find_debuginfo(c, id_dwz_remote[0] ? id_dwz_remote : "00aa", &path),
	    -EHOSTDOWN);
	CHECK_EQ_U64(debuginfo_client__queries(c), 1);
	CHECK_EQ_U64(debuginfo_client__find_debuginfo(c, id_lines, &path), -ETIMEDOUT);
	debuginfo_client__free(c);
	/* An abandoned query is not a miss: the next capture may ask again. */
	snprintf(negative, sizeof(negative), "%s/%s/debuginfo", cache, id_lines);
	CHECK(stat(negative, &st) != 0);

	/* Through the symbolizer: the capture goes on, without names, within the bound. */
	fresh_cache("black-hole-symbolizer", cache, sizeof(cache));
	CHECK_EQ_U64(elf_file__set_debug_roots(no_roots), 0);
	s = symbolizer__new();
	CHECK(s && symbolizer__set_debuginfod(s, url, timeout) == 0);
	if (s) {
		t0 = now_s();
		check_fixture_via(s, "lines_debuginfod", false);
		elapsed = now_s() - t0;
		printf("debuginfo: symbolizer with an unanswering server resolved in %.2f s\n",
		       elapsed);
		CHECK(elapsed < 4.0 * timeout);
		/* Another stripped file: nothing asked, no wait worth measuring. */
		t0 = now_s();
		if (have_dwz)
			check_fixture_via(s, "lines_dwz_remote", false);
		printf("debuginfo: next file after the timeout resolved in %.3f s\n", now_s() - t0);
	}
	symbolizer__free(s);
	CHECK_EQ_U64(elf_file__set_debug_roots(NULL), 0);
	close(fd);
}

static void test_refused_connection(void)
{
	struct debuginfo_client *c = NULL;
	const char *path = NULL;
	char url[64], cache[PATH_MAX];
	int ret;

	fresh_cache("refused", cache, sizeof(cache));
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", free_port());
	CHECK_EQ_U64(debuginfo_client__new(url, 2, &c), 0);
	ret = debuginfo_client__find_debuginfo(c, id_lines, &path);
	CHECK(ret != 0 && ret != -ENOENT);
	CHECK(debuginfo_client__server_down(c));
	CHECK_EQ_U64(debuginfo_client__find_debuginfo(c, "00aa", &path), -EHOSTDOWN);
	debuginfo_client__free(c);
}

int main(void)
{
	const char *ids[4] = {id_lines, NULL, NULL, NULL};
	char cmd[PATH_MAX + 16];
	FILE *marker;

	unsetenv("DEBUGINFOD_URLS");
	if (!mkdtemp(work_dir)) {
		perror("mkdtemp");
		return 1;
	}
	if (!file_build_id(fixture("lines_debuginfod"), id_lines, sizeof(id_lines)))
		fprintf(stderr, "no build id in %s (run make unit to build fixtures)\n",
			fixture("lines_debuginfod"));
	marker = fopen(fixture("dwz-missing"), "r");
	have_dwz =
	    !marker &&
	    file_build_id(fixture("lines_dwz_remote"), id_dwz_remote, sizeof(id_dwz_remote)) &&
	    file_build_id(fixture("debuginfod/allocscope-common.debug"), id_dwz_common,
			  sizeof(id_dwz_common));
	if (marker)
		fclose(marker);
	if (have_dwz) {
		ids[1] = id_dwz_remote;
		ids[2] = id_dwz_common;
	}

	unit_case_failures = 0;
	if (id_lines[0] && have_debuginfod() && !start_server(ids))
		unit_case_failures++;
	if (unit_case_failures) {
		fprintf(stderr, "FAIL start_server\n");
		unit_cases_failed++;
		stop_server();
	}
	RUN(test_client_fetches_and_remembers);
	RUN(test_symbolizer_fetches_debug_info);
	RUN(test_symbolizer_fetches_dwz_common_file);
	RUN(test_unanswering_server_is_bounded);
	RUN(test_refused_connection);
	stop_server();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", work_dir);
	return unit_summary("debuginfo");
}
