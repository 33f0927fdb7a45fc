/* The self-metrics endpoint, spoken to over real sockets on 127.0.0.1 (and ::1 where the
 * machine has it) with raw HTTP, so every byte of each answer is checked: status lines,
 * headers, bodies. Also what keeps the agent safe from its clients: a client that connects
 * and says nothing, or never reads, holds the server for at most its 2 s budget, and free()
 * does not wait for one. Last, the exposition text builder, string for string. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "export/metrics_server.h"
#include "unit.h"

/* Long enough for valgrind, short enough that a hung server fails the test instead of CI. */
#define CLIENT_TIMEOUT_S 10

#define METRICS_HEADER(len)                                                                \
	"HTTP/1.1 200 OK\r\n"                                                              \
	"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"                       \
	"Content-Length: " len "\r\n"                                                      \
	"Connection: close\r\n"                                                            \
	"\r\n"

#define TEXT_RESPONSE(status, len, body)                                                   \
	"HTTP/1.1 " status "\r\n"                                                          \
	"Content-Type: text/plain; charset=utf-8\r\n"                                      \
	"Content-Length: " len "\r\n"                                                      \
	"Connection: close\r\n"                                                            \
	"\r\n" body

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static int connect_to(int family, const char *address, uint16_t port)
{
	struct timeval timeout = { .tv_sec = CLIENT_TIMEOUT_S };
	struct sockaddr_in6 v6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
	struct sockaddr_in v4 = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int ret;

	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
	if (family == AF_INET6) {
		inet_pton(AF_INET6, address, &v6.sin6_addr);
		ret = connect(fd, (struct sockaddr *)&v6, sizeof(v6));
	} else {
		inet_pton(AF_INET, address, &v4.sin_addr);
		ret = connect(fd, (struct sockaddr *)&v4, sizeof(v4));
	}
	if (ret) {
		ret = -errno;
		close(fd);
		return ret;
	}
	return fd;
}

static int send_text(int fd, const char *text, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, text, len, MSG_NOSIGNAL);

		if (n < 0)
			return -errno;
		text += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Everything the server sends until it closes, NUL-terminated; the length or -errno. */
static long read_all(int fd, char *response, size_t cap)
{
	size_t len = 0;

	for (;;) {
		ssize_t n;

		if (len + 1 == cap)
			return -ENOBUFS;
		n = recv(fd, response + len, cap - 1 - len, 0);
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		len += (size_t)n;
	}
	response[len] = '\0';
	return (long)len;
}

static long exchange_at(int family, const char *address, uint16_t port, const char *request,
			size_t request_len, char *response, size_t cap)
{
	int fd = connect_to(family, address, port);
	long ret;

	response[0] = '\0';
	if (fd < 0)
		return fd;
	ret = send_text(fd, request, request_len);
	if (!ret)
		ret = read_all(fd, response, cap);
	close(fd);
	return ret;
}

static long exchange(uint16_t port, const char *request, char *response, size_t cap)
{
	return exchange_at(AF_INET, "127.0.0.1", port, request, strlen(request), response, cap);
}

static struct metrics_server *start(const char *listen, bool allow_remote)
{
	struct metrics_server *server = NULL;
	char err[256] = "";
	int ret = metrics_server__new(listen, allow_remote, &server, err, sizeof(err));

	if (ret)
		fprintf(stderr, "  metrics_server__new(\"%s\"): %d: %s\n", listen, ret, err);
	CHECK_EQ_U64(ret, 0);
	CHECK(server != NULL);
	if (server)
		CHECK(metrics_server__port(server) != 0);
	return server;
}

static void test_metrics_before_publish(void)
{
	struct metrics_server *server = start("127.0.0.1:0", false);
	char response[4096];

	if (!server)
		return;
	CHECK(exchange(metrics_server__port(server), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
		       response, sizeof(response)) > 0);
	CHECK_STR(response, METRICS_HEADER("0"));
	metrics_server__free(server);
}

static void test_metrics_after_publish(void)
{
	struct metrics_server *server = start("127.0.0.1:0", false);
	const char *first = "# TYPE up gauge\nup 1\n";
	char response[4096];
	uint16_t port;

	if (!server)
		return;
	port = metrics_server__port(server);
	CHECK_EQ_U64(metrics_server__publish(server, first, strlen(first)), 0);
	CHECK(exchange(port, "GET /metrics HTTP/1.1\r\n\r\n", response, sizeof(response)) > 0);
	CHECK_STR(response, METRICS_HEADER("21") "# TYPE up gauge\nup 1\n");

	/* Exactly len bytes are served, and a new publish replaces the old text. */
	CHECK_EQ_U64(metrics_server__publish(server, "up 0\nignored", 5), 0);
	CHECK(exchange(port, "GET /metrics HTTP/1.0\r\n\r\n", response, sizeof(response)) > 0);
	CHECK_STR(response, METRICS_HEADER("5") "up 0\n");

	/* A publish that cannot be stored leaves the previous snapshot in place. */
	CHECK_EQ_U64(metrics_server__publish(server, "x", SIZE_MAX), -ENOMEM);
	CHECK(exchange(port, "GET /metrics HTTP/1.1\r\n\r\n", response, sizeof(response)) > 0);
	CHECK_STR(response, METRICS_HEADER("5") "up 0\n");

	/* An empty publish empties the body. */
	CHECK_EQ_U64(metrics_server__publish(server, NULL, 0), 0);
	CHECK(exchange(port, "GET /metrics HTTP/1.1\r\n\r\n", response, sizeof(response)) > 0);
	CHECK_STR(response, METRICS_HEADER("0"));
	metrics_server__free(server);
}

static void test_head(void)
{
	struct metrics_server *server = start("127.0.0.1:0", false);
	char response[4096];

	if (!server)
		return;
	CHECK_EQ_U64(metrics_server__publish(server, "up 1\n", 5), 0);
	CHECK(exchange(metrics_server__port(server), "HEAD /metrics HTTP/1.1\r\n\r\n", response,
		       sizeof(response)) > 0);
	CHECK_STR(response, METRICS_HEADER("5"));
	metrics_server__free(server);
}

static void test_healthz(void)
{
	struct metrics_server *server = start("127.0.0.1:0", false);
	const char *request = "GET /healthz HTTP/1.1\r\nUser-Agent: test\r\n\r\n";
	char response[4096];
	uint16_t port;

	if (!server)
		return;
	port = metrics_server__port(server);
	CHECK(exchange(port, request, response, sizeof(response)) > 0);
	CHECK_STR(response, TEXT_RESPONSE("200 OK", "3", "ok\n"));

	metrics_server__set_health(server, false, "ring buffer lost 12 samples");
	CHECK(exchange(port, request, response, sizeof(response)) > 0);
	CHECK_STR(response,
		  TEXT_RESPONSE("503 Service Unavailable", "28", "ring buffer lost 12 samples\n"));

	metrics_server__set_health(server, true, NULL);
	CHECK(exchange(port, request, response, sizeof(response)) > 0);
	CHECK_STR(response, TEXT_RESPONSE("200 OK", "3", "ok\n"));

	/* Unhealthy without a reason still says something. */
	metrics_server__set_health(server, false, NULL);
	CHECK(exchange(port, request, response, sizeof(response)) > 0);
	CHECK_STR(response, TEXT_RESPONSE("503 Service Unavailable", "10", "unhealthy\n"));

	/* The reason is copied: changing the caller's buffer changes nothing served. */
	{
		char reason[] = "disk full";

		metrics_server__set_health(server, false, reason);
		strcpy(reason, "XXXXXXXX");
		CHECK(exchange(port, request, response, sizeof(response)) > 0);
		CHECK_STR(response, TEXT_RESPONSE("503 Service Unavailable", "10", "disk full\n"));
	}

	/* A huge reason is cut, not overflowed, and the answer is still well formed. */
	{
		static char long_reason[5000];
		const char *body;

		memset(long_reason, 'r', sizeof(long_reason) - 1);
		metrics_server__set_health(server, false, long_reason);
		CHECK(exchange(port, request, response, sizeof(response)) > 0);
		CHECK(strncmp(response, "HTTP/1.1 503 ", 13) == 0);
		body = strstr(response, "\r\n\r\n");
		CHECK(body && strlen(body + 4) > 100 && strlen(body + 4) < 2000);
		CHECK(strstr(response, "Content-Length: 1024\r\n") != NULL);
	}
	metrics_server__free(server);
}

static void test_not_found(void)
{
	struct metrics_server *server = start("127.0.0.1:0", false);
	char response[4096];
	uint16_t port;

	if (!server)
		return;
	port = metrics_server__port(server);
	CHECK(exchange(port, "GET / HTTP/1.1\r\n\r\n", response, sizeof(response)) > 0);
	CHECK_STR(response, TEXT_RESPONSE("404 Not Found", "10", "not found\n"));
	CHECK(exchange(port, "GET /metricsx HTTP/1.1\r\n\r\n", response, sizeof(response)) > 0);
	CHECK_STR(response, TEXT_RESPONSE("404 Not Found", "10", "not found\n"));
	CHECK(exchange(port, "GET /metrics/ HTTP/1.1\r\n\r\n", response, sizeof(response)) > 0);
	CHECK_STR(response, TEXT_RESPONSE("404 Not Found", "10", "not found\n"));
	metrics_server__free(server);
}

static void test_method_not_allowed(void)
{
	struct metrics_server *server = start("127.0.0.1:0", false);
	const char *expected = "HTTP/1.1 405 Method Not Allowed\r\n"
			       "Content-Type: text/plain; charset=utf-8\r\n"
			       "Content-Length: 19\r\n"
			       "Allow: GET, HEAD\r\n"
			       "Connection: close\r\n"
			       "\r\n"
			       "method not allowed\n";
	char response[4096];
	uint16_t port;

	if (!server)
		return;
	port = metrics_server__port(server);
	/* With a body the server never reads: the answer must still arrive whole. */
	CHECK(exchange(port, "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", response,
		       sizeof(response)) > 0);
	CHECK_STR(response, expected);
	CHECK(exchange(port, "DELETE /healthz HTTP/1.1\r\n\r\n", response, sizeof(response)) > 0);
	CHECK_STR(response, expected);
	/* Methods are case-sensitive. */
	CHECK(exchange(port, "get /metrics HTTP/1.1\r\n\r\n", response, sizeof(response)) > 0);
	CHECK_STR(response, expected);
	metrics_server__free(server);
}

static void test_query_string_ignored(void)
{
	struct metrics_server *server = start("127.0.0.1:0", false);
	char response[4096];
	uint16_t port;

	if (!server)
		return;
	port = metrics_server__port(server);
	CHECK_EQ_U64(metrics_server__publish(server, "up 1\n", 5), 0);
	CHECK(exchange(port, "GET /metrics?x=1 HTTP/1.1\r\n\r\n", response, sizeof(response)) > 0);
	CHECK_STR(response, METRICS_HEADER("5") "up 1\n");
	CHECK(exchange(port, "GET /healthz?verbose&a=b HTTP/1.1\r\n\r\n", response,
		       sizeof(response)) > 0);
	CHECK_STR(response, TEXT_RESPONSE("200 OK", "3", "ok\n"));
	metrics_server__free(server);
}

/* Requests a shell or a hand-written client might send: split across packets, bare LF. */
static void test_request_framing(void)
{
	struct metrics_server *server = start("127.0.0.1:0", false);
	char response[4096];
	uint16_t port;
	int fd;

	if (!server)
		return;
	port = metrics_server__port(server);
	CHECK_EQ_U64(metrics_server__publish(server, "up 1\n", 5), 0);

	fd = connect_to(AF_INET, "127.0.0.1", port);
	CHECK(fd >= 0);
	if (fd >= 0) {
		CHECK_EQ_U64(send_text(fd, "GET /met", 8), 0);
		sleep_ms(100);
		CHECK_EQ_U64(send_text(fd, "rics HTTP/1.1\r\nHost: x\r\n", 24), 0);
		sleep_ms(100);
		CHECK_EQ_U64(send_text(fd, "\r\n", 2), 0);
		CHECK(read_all(fd, response, sizeof(response)) > 0);
		CHECK_STR(response, METRICS_HEADER("5") "up 1\n");
		close(fd);
	}

	CHECK(exchange(port, "GET /healthz HTTP/1.0\n\n", response, sizeof(response)) > 0);
	CHECK_STR(response, TEXT_RESPONSE("200 OK", "3", "ok\n"));
	metrics_server__free(server);
}

static void test_bad_request(void)
{
	static const char *const requests[] = {
		"hello\r\n\r\n",
		"GET metrics HTTP/1.1\r\n\r\n",
		"GET /metrics\r\n\r\n",
		"GET /metrics FTP/1.0\r\n\r\n",
		" /metrics HTTP/1.1\r\n\r\n",
	};
	struct metrics_server *server = start("127.0.0.1:0", false);
	char response[4096];

	if (!server)
		return;
	for (size_t i = 0; i < sizeof(requests) / sizeof(requests[0]); i++) {
		CHECK(exchange(metrics_server__port(server), requests[i], response,
			       sizeof(response)) > 0);
		CHECK_STR(response, TEXT_RESPONSE("400 Bad Request", "12", "bad request\n"));
	}
	metrics_server__free(server);
}

static void test_oversize_head(void)
{
	struct metrics_server *server = start("127.0.0.1:0", false);
	size_t pad = 9000, len = 0;
	char response[4096];
	char *request;

	if (!server)
		return;
	request = malloc(pad + 64);
	CHECK(request != NULL);
	if (request) {
		len += (size_t)sprintf(request, "GET /metrics HTTP/1.1\r\nX-Pad: ");
		memset(request + len, 'p', pad);
		len += pad;
		len += (size_t)sprintf(request + len, "\r\n\r\n");
		CHECK(exchange_at(AF_INET, "127.0.0.1", metrics_server__port(server), request, len,
				  response, sizeof(response)) > 0);
		CHECK_STR(response, TEXT_RESPONSE("431 Request Header Fields Too Large", "23",
						  "request head too large\n"));
		free(request);
	}
	/* And the server goes on serving. */
	CHECK(exchange(metrics_server__port(server), "GET /healthz HTTP/1.1\r\n\r\n", response,
		       sizeof(response)) > 0);
	CHECK_STR(response, TEXT_RESPONSE("200 OK", "3", "ok\n"));
	metrics_server__free(server);
}

static void test_idle_client_does_not_block(void)
{
	struct metrics_server *server = start("127.0.0.1:0", false);
	char response[4096], byte;
	double started, took;
	int idle;

	if (!server)
		return;
	idle = connect_to(AF_INET, "127.0.0.1", metrics_server__port(server));
	CHECK(idle >= 0);
	/* Let the server take the idle connection first. */
	sleep_ms(100);
	started = now_s();
	CHECK(exchange(metrics_server__port(server), "GET /healthz HTTP/1.1\r\n\r\n", response,
		       sizeof(response)) > 0);
	took = now_s() - started;
	CHECK_STR(response, TEXT_RESPONSE("200 OK", "3", "ok\n"));
	if (took >= 3.0)
		fprintf(stderr, "  second client took %.2f s\n", took);
	CHECK(took < 3.0);
	/* The server hung up on the idle client without a word. */
	if (idle >= 0) {
		CHECK(recv(idle, &byte, 1, 0) == 0);
		close(idle);
	}
	metrics_server__free(server);
}

/* More idle connections than the server keeps (64 > 32), one trickling its request a byte
 * at a time: /healthz still answers, within a client timeout shorter than the 2 s a single
 * idle connection may last (a server that served them one by one would need minutes). */
#define MANY_IDLE 64

static int probe_healthz(uint16_t port, int timeout_s, char *response, size_t cap)
{
	struct timeval timeout = { .tv_sec = timeout_s };
	int fd = connect_to(AF_INET, "127.0.0.1", port);
	long ret;

	response[0] = '\0';
	if (fd < 0)
		return fd;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
	ret = send_text(fd, "GET /healthz HTTP/1.1\r\n\r\n", 25);
	if (!ret)
		ret = read_all(fd, response, cap);
	close(fd);
	return ret < 0 ? (int)ret : 0;
}

/* Closed by the server: a read sees the end (or a reset) without waiting. */
static bool closed_by_server(int fd)
{
	char byte;
	ssize_t n = recv(fd, &byte, 1, MSG_DONTWAIT);

	return n == 0 || (n < 0 && errno == ECONNRESET);
}

static void test_many_idle_connections_do_not_block_healthz(void)
{
	struct metrics_server *server = start("127.0.0.1:0", false);
	int idle[MANY_IDLE], trickler;
	char response[4096];
	uint16_t port;

	if (!server)
		return;
	port = metrics_server__port(server);
	trickler = connect_to(AF_INET, "127.0.0.1", port);
	CHECK(trickler >= 0);
	if (trickler >= 0)
		CHECK_EQ_U64(send_text(trickler, "GET /met", 8), 0);
	for (int i = 0; i < MANY_IDLE; i++) {
		idle[i] = connect_to(AF_INET, "127.0.0.1", port);
		CHECK(idle[i] >= 0);
	}
	if (trickler >= 0)
		send_text(trickler, "r", 1); /* may fail: it may be closed to make room */

	CHECK_EQ_U64(probe_healthz(port, 2, response, sizeof(response)), 0);
	CHECK_STR(response, TEXT_RESPONSE("200 OK", "3", "ok\n"));

	for (int i = 0; i < MANY_IDLE; i++)
		if (idle[i] >= 0)
			close(idle[i]);
	if (trickler >= 0)
		close(trickler);
	metrics_server__free(server);
}

/* Past the limit the oldest connection is closed at once, not left queued: the first idle
 * client sees the end, the newest is still open, and the count says how many went. */
static void test_over_limit_closes_oldest(void)
{
	struct metrics_server *server = start("127.0.0.1:0", false);
	struct metrics_server_stats stats;
	int idle[MANY_IDLE];
	char response[4096];
	uint16_t port;

	if (!server)
		return;
	port = metrics_server__port(server);
	for (int i = 0; i < MANY_IDLE; i++) {
		idle[i] = connect_to(AF_INET, "127.0.0.1", port);
		CHECK(idle[i] >= 0);
	}
	/* Answered only after the server has accepted all 64 (they were queued first). */
	CHECK_EQ_U64(probe_healthz(port, CLIENT_TIMEOUT_S, response, sizeof(response)), 0);
	CHECK_STR(response, TEXT_RESPONSE("200 OK", "3", "ok\n"));
	metrics_server__stats(server, &stats);
	/* 65 connections through 32 slots: at least 33 closed early (the probe, answered, may
	 * still be lingering in one). */
	if (stats.closed_over_limit < MANY_IDLE + 1 - 32)
		fprintf(stderr, "  closed_over_limit %llu\n",
			(unsigned long long)stats.closed_over_limit);
	CHECK(stats.closed_over_limit >= MANY_IDLE + 1 - 32);
	CHECK(stats.closed_over_limit <= MANY_IDLE);
	if (idle[0] >= 0)
		CHECK(closed_by_server(idle[0]));
	if (idle[MANY_IDLE - 1] >= 0)
		CHECK(!closed_by_server(idle[MANY_IDLE - 1]));
	for (int i = 0; i < MANY_IDLE; i++)
		if (idle[i] >= 0)
			close(idle[i]);
	metrics_server__free(server);
}

/* A client that keeps sending a byte of its head every 100 ms is closed at its deadline all
 * the same: activity does not extend it. Gives up after 100 bytes (10 s). */
static void test_trickler_closed_at_deadline(void)
{
	struct metrics_server *server = start("127.0.0.1:0", false);
	struct metrics_server_stats stats;
	bool closed = false;
	int fd;

	if (!server)
		return;
	fd = connect_to(AF_INET, "127.0.0.1", metrics_server__port(server));
	CHECK(fd >= 0);
	for (int i = 0; fd >= 0 && i < 100 && !closed; i++) {
		closed = send_text(fd, i == 0 ? "G" : "x", 1) != 0 || closed_by_server(fd);
		sleep_ms(100);
	}
	CHECK(closed);
	metrics_server__stats(server, &stats);
	CHECK_EQ_U64(stats.closed_at_deadline, 1);
	CHECK_EQ_U64(stats.closed_over_limit, 0);
	if (fd >= 0)
		close(fd);
	metrics_server__free(server);
}

/* A client that asks for a big snapshot and never reads it. */
static void test_non_reading_client_does_not_block(void)
{
	struct metrics_server *server = start("127.0.0.1:0", false);
	size_t big = 32u << 20;
	char response[4096];
	double started, took;
	int small = 4096;
	char *text;
	int stuck;

	if (!server)
		return;
	text = malloc(big);
	CHECK(text != NULL);
	if (!text) {
		metrics_server__free(server);
		return;
	}
	memset(text, 'm', big);
	CHECK_EQ_U64(metrics_server__publish(server, text, big), 0);
	free(text);

	stuck = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(stuck >= 0);
	if (stuck >= 0) {
		struct sockaddr_in addr = { .sin_family = AF_INET,
					    .sin_port = htons(metrics_server__port(server)),
					    .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

		setsockopt(stuck, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
		CHECK(connect(stuck, (struct sockaddr *)&addr, sizeof(addr)) == 0);
		CHECK_EQ_U64(send_text(stuck, "GET /metrics HTTP/1.1\r\n\r\n", 25), 0);
	}
	sleep_ms(100);
	started = now_s();
	CHECK(exchange(metrics_server__port(server), "GET /healthz HTTP/1.1\r\n\r\n", response,
		       sizeof(response)) > 0);
	took = now_s() - started;
	CHECK_STR(response, TEXT_RESPONSE("200 OK", "3", "ok\n"));
	if (took >= 3.0)
		fprintf(stderr, "  second client took %.2f s\n", took);
	CHECK(took < 3.0);
	if (stuck >= 0)
		close(stuck);
	metrics_server__free(server);
}

static void test_free_with_idle_client(void)
{
	struct metrics_server *server = start("127.0.0.1:0", false);
	double started, took;
	int idle;

	if (!server)
		return;
	idle = connect_to(AF_INET, "127.0.0.1", metrics_server__port(server));
	CHECK(idle >= 0);
	sleep_ms(200);
	started = now_s();
	metrics_server__free(server);
	took = now_s() - started;
	/* Well under the 2 s a connection may otherwise hold the thread. */
	if (took >= 1.0)
		fprintf(stderr, "  free took %.2f s\n", took);
	CHECK(took < 1.0);
	if (idle >= 0)
		close(idle);
	metrics_server__free(NULL);
}

static void check_refused(const char *listen, bool allow_remote, int expected_ret)
{
	struct metrics_server *server = (struct metrics_server *)&server;
	char err[512] = "", quoted[300];
	int ret = metrics_server__new(listen, allow_remote, &server, err, sizeof(err));

	snprintf(quoted, sizeof(quoted), "\"%s\"", listen);
	if (ret != expected_ret || !strstr(err, quoted))
		fprintf(stderr, "  \"%s\": %d: %s\n", listen, ret, err);
	CHECK_EQ_U64(ret, expected_ret);
	CHECK(server == NULL);
	CHECK(strstr(err, quoted) != NULL);
	if (expected_ret == -EINVAL)
		CHECK(strstr(err, "127.0.0.1:9464") != NULL);
	if (ret == 0)
		metrics_server__free(server);
}

static void test_bad_listen(void)
{
	static const char *const bad[] = {
		"",
		"127.0.0.1",
		"127.0.0.1:",
		":9464",
		"127.0.0.1:65536",
		"127.0.0.1:99999",
		"127.0.0.1:123456",
		"127.0.0.1:-1",
		"127.0.0.1:+80",
		"127.0.0.1: 80",
		"127.0.0.1:80x",
		"127.0.0.1:0x50",
		"example.com:9464",
		"256.0.0.1:9464",
		"127.1:9464",
		"::1:9464",
		"[::1]",
		"[::1]:",
		"[::1:9464",
		"[::1]9464",
		"[]:9464",
		"[127.0.0.1]:9464",
		"[::1]:70000",
		"localhost",
		"localhost:port",
	};
	struct metrics_server *server = (struct metrics_server *)&server;
	char err[256] = "";

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		check_refused(bad[i], true, -EINVAL);
	CHECK_EQ_U64(metrics_server__new(NULL, true, &server, err, sizeof(err)), -EINVAL);
	CHECK(server == NULL);
	CHECK(strstr(err, "metrics.listen") != NULL);
}

static void test_remote_needs_permission(void)
{
	struct metrics_server *server;
	char response[4096];

	check_refused("0.0.0.0:0", false, -EPERM);
	check_refused("10.1.2.3:9464", false, -EPERM);
	check_refused("[::]:0", false, -EPERM);
	check_refused("[::ffff:10.0.0.1]:9464", false, -EPERM);

	/* Any loopback address is fine without permission. */
	server = start("127.0.0.2:0", false);
	if (server) {
		CHECK(exchange_at(AF_INET, "127.0.0.2", metrics_server__port(server),
				  "GET /healthz HTTP/1.1\r\n\r\n", 25, response,
				  sizeof(response)) > 0);
		CHECK_STR(response, TEXT_RESPONSE("200 OK", "3", "ok\n"));
		metrics_server__free(server);
	}
	server = start("localhost:0", false);
	if (server) {
		CHECK(exchange(metrics_server__port(server), "GET /healthz HTTP/1.1\r\n\r\n",
			       response, sizeof(response)) > 0);
		CHECK_STR(response, TEXT_RESPONSE("200 OK", "3", "ok\n"));
		metrics_server__free(server);
	}

	/* With permission, the wildcard address serves loopback clients too. */
	server = start("0.0.0.0:0", true);
	if (server) {
		CHECK(exchange(metrics_server__port(server), "GET /healthz HTTP/1.1\r\n\r\n",
			       response, sizeof(response)) > 0);
		CHECK_STR(response, TEXT_RESPONSE("200 OK", "3", "ok\n"));
		metrics_server__free(server);
	}
}

static void test_address_in_use(void)
{
	struct metrics_server *first = start("127.0.0.1:0", false), *second = NULL;
	char listen[64], err[512] = "";
	int ret;

	if (!first)
		return;
	snprintf(listen, sizeof(listen), "127.0.0.1:%u", metrics_server__port(first));
	ret = metrics_server__new(listen, false, &second, err, sizeof(err));
	CHECK_EQ_U64(ret, -EADDRINUSE);
	CHECK(second == NULL);
	CHECK(strstr(err, listen) != NULL);
	CHECK(strstr(err, "in use") != NULL);
	CHECK(strstr(err, "metrics.listen") != NULL);
	metrics_server__free(second);
	metrics_server__free(first);
}

static void test_ipv6_loopback(void)
{
	struct metrics_server *server;
	char response[4096];
	int probe = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (probe < 0 && errno == EAFNOSUPPORT) {
		printf("test_ipv6_loopback: skipped, this machine has no IPv6\n");
		return;
	}
	CHECK(probe >= 0);
	if (probe >= 0)
		close(probe);

	server = start("[::1]:0", false);
	if (!server)
		return;
	CHECK_EQ_U64(metrics_server__publish(server, "up 1\n", 5), 0);
	CHECK(exchange_at(AF_INET6, "::1", metrics_server__port(server),
			  "GET /metrics HTTP/1.1\r\n\r\n", 25, response, sizeof(response)) > 0);
	CHECK_STR(response, METRICS_HEADER("5") "up 1\n");
	metrics_server__free(server);
}

static volatile sig_atomic_t usr1_handled;

static void on_usr1(int sig)
{
	usr1_handled = 1;
}

/* With SIGUSR1 blocked on the only other thread, the server's must not take it either: the
 * agent's SIGINT/SIGTERM/SIGHUP handling belongs to its main thread. */
static void test_signals_stay_on_main_thread(void)
{
	struct sigaction action = { .sa_handler = on_usr1 }, old_action;
	struct timespec wait = { .tv_sec = 2 };
	struct metrics_server *server;
	sigset_t usr1, old_mask;

	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigaction(SIGUSR1, &action, &old_action);
	/* Started while this thread still accepts the signal. */
	server = start("127.0.0.1:0", false);
	pthread_sigmask(SIG_BLOCK, &usr1, &old_mask);
	usr1_handled = 0;
	kill(getpid(), SIGUSR1);
	sleep_ms(100);
	CHECK(!usr1_handled);
	CHECK(sigtimedwait(&usr1, NULL, &wait) == SIGUSR1);
	pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
	sigaction(SIGUSR1, &old_action, NULL);
	metrics_server__free(server);
}

struct publisher {
	struct metrics_server *server;
	const char *texts[2];
	volatile int stop;
};

static void *publish_loop(void *arg)
{
	struct publisher *p = arg;

	for (unsigned i = 0; !__atomic_load_n(&p->stop, __ATOMIC_RELAXED); i++) {
		metrics_server__publish(p->server, p->texts[i & 1], strlen(p->texts[i & 1]));
		metrics_server__set_health(p->server, i & 1, i & 1 ? NULL : "flapping");
	}
	return NULL;
}

/* Publishing while clients read: each answer is one whole snapshot, never a mix. */
static void test_publish_while_serving(void)
{
	struct metrics_server *server = start("127.0.0.1:0", false);
	static char a[3001], b[5001];
	char expect_a[8192], expect_b[8192];
	static char response[16384];
	struct publisher p = { 0 };
	pthread_t thread;
	int bad = 0;

	if (!server)
		return;
	memset(a, 'a', sizeof(a) - 1);
	a[sizeof(a) - 2] = '\n';
	memset(b, 'b', sizeof(b) - 1);
	b[sizeof(b) - 2] = '\n';
	snprintf(expect_a, sizeof(expect_a), METRICS_HEADER("3000") "%s", a);
	snprintf(expect_b, sizeof(expect_b), METRICS_HEADER("5000") "%s", b);
	p.server = server;
	p.texts[0] = a;
	p.texts[1] = b;
	CHECK_EQ_U64(metrics_server__publish(server, a, strlen(a)), 0);
	CHECK(pthread_create(&thread, NULL, publish_loop, &p) == 0);
	for (int i = 0; i < 40; i++) {
		CHECK(exchange(metrics_server__port(server), "GET /metrics HTTP/1.1\r\n\r\n",
			       response, sizeof(response)) > 0);
		if (strcmp(response, expect_a) != 0 && strcmp(response, expect_b) != 0) {
			fprintf(stderr, "  torn /metrics answer: \"%.120s\"...\n", response);
			bad++;
		}
		CHECK(exchange(metrics_server__port(server), "GET /healthz HTTP/1.1\r\n\r\n",
			       response, sizeof(response)) > 0);
		if (strcmp(response, TEXT_RESPONSE("200 OK", "3", "ok\n")) != 0 &&
		    strcmp(response, TEXT_RESPONSE("503 Service Unavailable", "9", "flapping\n"))) {
			fprintf(stderr, "  torn /healthz answer: \"%s\"\n", response);
			bad++;
		}
	}
	__atomic_store_n(&p.stop, 1, __ATOMIC_RELAXED);
	pthread_join(thread, NULL);
	CHECK_EQ_U64(bad, 0);
	metrics_server__free(server);
}

/* Builder output compared as bytes; len must agree with the text. */
static void check_text(const struct metrics_text *t, const char *expected)
{
	CHECK_EQ_U64(metrics_text__error(t), 0);
	CHECK_EQ_U64(t->len, strlen(expected));
	CHECK(t->data != NULL);
	if (t->data && t->len == strlen(expected) && memcmp(t->data, expected, t->len) == 0)
		return;
	fprintf(stderr, "  got \"%.*s\"\n  expected \"%s\"\n", t->data ? (int)t->len : 0,
		t->data ? t->data : "", expected);
	unit_case_failures++;
}

static void test_text_family(void)
{
	struct metrics_text t = { 0 };

	metrics_text__family(&t, "allocscope_samples_total", "counter",
			     "Samples read from the ring buffer \\ per interval.\nSecond line.");
	check_text(&t, "# HELP allocscope_samples_total Samples read from the ring buffer \\\\ "
		       "per interval.\\nSecond line.\n"
		       "# TYPE allocscope_samples_total counter\n");
	metrics_text__free(&t);

	/* Quotes are not escaped in HELP text. */
	metrics_text__family(&t, "allocscope_up", "gauge", "1 when \"up\".");
	check_text(&t, "# HELP allocscope_up 1 when \"up\".\n# TYPE allocscope_up gauge\n");
	metrics_text__free(&t);

	metrics_text__family(&t, "allocscope_up", "gauge", NULL);
	check_text(&t, "# TYPE allocscope_up gauge\n");
	metrics_text__free(&t);
}

static void test_text_sample_labels(void)
{
	static const char *const labels[] = {
		"path", "C:\\tmp\n\"x\"", "service", "web", NULL,
	};
	static const char *const one[] = { "le", "+Inf", NULL };
	static const char *const none[] = { NULL };
	struct metrics_text t = { 0 };

	metrics_text__sample(&t, "allocscope_bytes_total", labels, 3);
	metrics_text__sample(&t, "allocscope_bucket", one, 7);
	metrics_text__sample(&t, "allocscope_up", none, 1);
	metrics_text__sample(&t, "allocscope_up", NULL, 1);
	check_text(&t, "allocscope_bytes_total{path=\"C:\\\\tmp\\n\\\"x\\\"\",service=\"web\"} 3\n"
		       "allocscope_bucket{le=\"+Inf\"} 7\n"
		       "allocscope_up 1\n"
		       "allocscope_up 1\n");
	metrics_text__free(&t);
	CHECK(t.data == NULL);
	CHECK_EQ_U64(t.len, 0);
	CHECK_EQ_U64(t.cap, 0);
}

static void test_text_values(void)
{
	static const struct {
		double value;
		const char *text;
	} cases[] = {
		{ 0.0, "0" },
		{ -0.0, "0" },
		{ 1.0, "1" },
		{ 42.0, "42" },
		{ -7.0, "-7" },
		{ 1e15, "1000000000000000" },
		{ 9007199254740991.0, "9007199254740991" },
		{ -9007199254740991.0, "-9007199254740991" },
		{ 9007199254740992.0, "9007199254740992" },
		{ 1e20, "1e+20" },
		{ 0.5, "0.5" },
		{ 0.1, "0.1" },
		{ -2.25, "-2.25" },
		{ 1.0 / 3.0, "0.3333333333333333" },
		{ 123456.789, "123456.789" },
		{ 1e-7, "1e-07" },
		{ 2.5e-300, "2.5e-300" },
		{ NAN, "NaN" },
		{ INFINITY, "+Inf" },
		{ -INFINITY, "-Inf" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct metrics_text t = { 0 };
		char expected[64];

		snprintf(expected, sizeof(expected), "v %s\n", cases[i].text);
		metrics_text__sample(&t, "v", NULL, cases[i].value);
		check_text(&t, expected);
		metrics_text__free(&t);
	}
}

/* Enough text to outgrow the first allocation several times; every line must survive. */
static void test_text_grows(void)
{
	struct metrics_text t = { 0 };
	size_t at = 0;
	bool same = true;

	for (int i = 0; i < 10000; i++)
		metrics_text__sample(&t, "allocscope_counter", NULL, i);
	CHECK_EQ_U64(metrics_text__error(&t), 0);
	CHECK(t.len > 100000);
	for (int i = 0; i < 10000 && same; i++) {
		char line[64];
		int n = snprintf(line, sizeof(line), "allocscope_counter %d\n", i);

		same = at + (size_t)n <= t.len && memcmp(t.data + at, line, (size_t)n) == 0;
		at += (size_t)n;
	}
	CHECK(same);
	CHECK_EQ_U64(at, t.len);
	metrics_text__free(&t);
}

static void test_text_error_sticks(void)
{
	struct metrics_text t = { 0 };

	metrics_text__sample(&t, "a", NULL, 1);
	/* As if an allocation had failed: from now on nothing is written. */
	t.error = -ENOMEM;
	metrics_text__family(&t, "b", "gauge", "help");
	metrics_text__sample(&t, "b", NULL, 2);
	CHECK_EQ_U64(metrics_text__error(&t), -ENOMEM);
	CHECK_EQ_U64(t.len, 4);
	CHECK(t.data && memcmp(t.data, "a 1\n", 4) == 0);
	metrics_text__free(&t);
	CHECK_EQ_U64(metrics_text__error(&t), 0);
	CHECK(t.data == NULL);

	/* Freeing a never-used builder is fine. */
	metrics_text__free(&t);
}

/* What the agent will do: build with metrics_text, publish, scrape. */
static void test_text_published(void)
{
	struct metrics_server *server = start("127.0.0.1:0", false);
	static const char *const labels[] = { "reason", "ring \"full\"", NULL };
	struct metrics_text t = { 0 };
	char response[4096];

	if (!server)
		return;
	metrics_text__family(&t, "allocscope_dropped_total", "counter", "Samples lost.");
	metrics_text__sample(&t, "allocscope_dropped_total", labels, 12);
	CHECK_EQ_U64(metrics_text__error(&t), 0);
	CHECK_EQ_U64(metrics_server__publish(server, t.data, t.len), 0);
	metrics_text__free(&t);
	CHECK(exchange(metrics_server__port(server), "GET /metrics HTTP/1.1\r\n\r\n", response,
		       sizeof(response)) > 0);
	CHECK_STR(response, METRICS_HEADER("138") "# HELP allocscope_dropped_total Samples lost.\n"
						  "# TYPE allocscope_dropped_total counter\n"
						  "allocscope_dropped_total{reason=\"ring "
						  "\\\"full\\\"\"} 12\n");
	metrics_server__free(server);
}

int main(void)
{
	RUN(test_metrics_before_publish);
	RUN(test_metrics_after_publish);
	RUN(test_head);
	RUN(test_healthz);
	RUN(test_not_found);
	RUN(test_method_not_allowed);
	RUN(test_query_string_ignored);
	RUN(test_request_framing);
	RUN(test_bad_request);
	RUN(test_oversize_head);
	RUN(test_idle_client_does_not_block);
	RUN(test_non_reading_client_does_not_block);
	RUN(test_many_idle_connections_do_not_block_healthz);
	RUN(test_over_limit_closes_oldest);
	RUN(test_trickler_closed_at_deadline);
	RUN(test_free_with_idle_client);
	RUN(test_bad_listen);
	RUN(test_remote_needs_permission);
	RUN(test_address_in_use);
	RUN(test_ipv6_loopback);
	RUN(test_publish_while_serving);
	RUN(test_signals_stay_on_main_thread);
	RUN(test_text_family);
	RUN(test_text_sample_labels);
	RUN(test_text_values);
	RUN(test_text_grows);
	RUN(test_text_error_sticks);
	RUN(test_text_published);
	return unit_summary("metrics_server");
}
