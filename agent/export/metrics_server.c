/* Self-metrics over HTTP (see metrics_server.h). One thread accepts and answers one connection
 * at a time: scrapes come every few seconds, and a single thread is simple to stop. Each
 * connection gets a fixed budget (CONNECTION_BUDGET_MS) for reading the request and writing
 * the answer, so a client that connects and goes quiet, or never reads, delays the next scrape
 * by at most that much and never touches sampling. The thread takes a reference on the
 * published snapshot under the mutex and sends it without the lock held, so publishing never
 * waits on a slow client. The thread also watches an eventfd, which is how free() stops it
 * even in the middle of a connection. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "export/metrics_server.h"
#include "log.h"

/* Reading the request and writing the answer, together. A scrape of a few kilobytes over
 * loopback takes well under a millisecond; this only bounds misbehaving clients. */
#define CONNECTION_BUDGET_MS 2000
#define MAX_REQUEST_HEAD     8192
/* A reason is a sentence for an operator; longer ones are cut (at a UTF-8 boundary). */
#define MAX_REASON	     1024
#define ACCEPT_RETRY_MS	     100
#define LISTEN_BACKLOG	     16

#define LISTEN_EXAMPLE	     "127.0.0.1:9464"
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define TEXT_CONTENT_TYPE    "text/plain; charset=utf-8"

struct snapshot {
	size_t refs; /* under metrics_server.lock */
	size_t len;
	char text[];
};

struct metrics_server {
	int listen_fd;
	int stop_fd; /* eventfd, readable once free() wants the thread gone */
	uint16_t port;
	pthread_t thread;
	pthread_mutex_t lock;
	/* under lock */
	struct snapshot *snapshot; /* NULL until the first publish: an empty body */
	bool healthy;
	char reason[MAX_REASON];
};

union sockaddr_any {
	struct sockaddr sa;
	struct sockaddr_in v4;
	struct sockaddr_in6 v6;
};

enum route { ROUTE_METRICS, ROUTE_HEALTHZ, ROUTE_NONE };

/* Strict digits only, so "80x", " 80", "+80" and "-1" are all refused rather than guessed. */
static int parse_port(const char *text, uint16_t *port)
{
	unsigned long value = 0;
	size_t n = strlen(text);

	if (n == 0 || n > 5)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (text[i] < '0' || text[i] > '9')
			return -EINVAL;
		value = value * 10 + (unsigned long)(text[i] - '0');
	}
	if (value > 65535)
		return -EINVAL;
	*port = (uint16_t)value;
	return 0;
}

static int parse_listen(const char *listen, union sockaddr_any *addr, socklen_t *addr_len,
			char *err, size_t err_len)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *host_start, *port_text;
	size_t host_len;
	uint16_t port;
	int family;

	memset(addr, 0, sizeof(*addr));
	if (!listen) {
		snprintf(err, err_len, "metrics.listen is missing: expected HOST:PORT such as %s",
			 LISTEN_EXAMPLE);
		return -EINVAL;
	}
	if (listen[0] == '[') {
		const char *close = strchr(listen, ']');

		if (!close || close[1] != ':')
			goto syntax;
		family = AF_INET6;
		host_start = listen + 1;
		host_len = (size_t)(close - host_start);
		port_text = close + 2;
	} else {
		const char *colon = strrchr(listen, ':');

		if (!colon)
			goto syntax;
		family = AF_INET;
		host_start = listen;
		host_len = (size_t)(colon - listen);
		port_text = colon + 1;
		/* A bare IPv6 address: which colon starts the port is anyone's guess. */
		if (memchr(host_start, ':', host_len))
			goto syntax;
	}
	if (host_len == 0 || host_len >= sizeof(host))
		goto syntax;
	memcpy(host, host_start, host_len);
	host[host_len] = '\0';

	if (family == AF_INET6) {
		if (inet_pton(AF_INET6, host, &addr->v6.sin6_addr) != 1)
			goto bad_host;
	} else if (strcmp(host, "localhost") == 0) {
		/* Not resolved: /etc/hosts may also map it to ::1, and we want one fixed answer. */
		addr->v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else if (inet_pton(AF_INET, host, &addr->v4.sin_addr) != 1) {
		goto bad_host;
	}

	if (parse_port(port_text, &port)) {
		snprintf(err, err_len,
			 "metrics.listen \"%s\": PORT must be a number from 0 to 65535, as in %s",
			 listen, LISTEN_EXAMPLE);
		return -EINVAL;
	}
	if (family == AF_INET6) {
		addr->v6.sin6_family = AF_INET6;
		addr->v6.sin6_port = htons(port);
		*addr_len = sizeof(addr->v6);
	} else {
		addr->v4.sin_family = AF_INET;
		addr->v4.sin_port = htons(port);
		*addr_len = sizeof(addr->v4);
	}
	return 0;

syntax:
	snprintf(err, err_len,
		 "metrics.listen \"%s\": expected HOST:PORT such as %s, or [::1]:9464 for IPv6",
		 listen, LISTEN_EXAMPLE);
	return -EINVAL;
bad_host:
	snprintf(err, err_len,
		 "metrics.listen \"%s\": HOST must be an IPv4 address, an IPv6 address in brackets "
		 "or localhost, as in %s",
		 listen, LISTEN_EXAMPLE);
	return -EINVAL;
}

static bool is_loopback(const union sockaddr_any *addr)
{
	const struct in6_addr *a6 = &addr->v6.sin6_addr;

	if (addr->sa.sa_family == AF_INET)
		return (ntohl(addr->v4.sin_addr.s_addr) >> 24) == 127;
	if (IN6_IS_ADDR_LOOPBACK(a6))
		return true;
	/* ::ffff:127.x.y.z is the same IPv4 loopback reached through an IPv6 socket. */
	return IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127;
}

/* Milliseconds left until deadline, rounded up so we never spin on a 0 ms poll early. */
static int ms_until(const struct timespec *deadline)
{
	struct timespec now;
	long long ns;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ns = (long long)(deadline->tv_sec - now.tv_sec) * 1000000000LL +
	     (deadline->tv_nsec - now.tv_nsec);
	if (ns <= 0)
		return 0;
	if (ns / 1000000 >= INT_MAX)
		return INT_MAX;
	return (int)((ns + 999999) / 1000000);
}

/* 0 when fd is ready for events (or has an error for recv/send to report), -ETIMEDOUT once
 * the connection's budget is spent, -ECANCELED when the server is being stopped. */
static int wait_ready(const struct metrics_server *server, int fd, short events,
		      const struct timespec *deadline)
{
	for (;;) {
		struct pollfd fds[2] = {
			{ .fd = server->stop_fd, .events = POLLIN },
			{ .fd = fd, .events = events },
		};
		int n = poll(fds, 2, ms_until(deadline));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (fds[0].revents)
			return -ECANCELED;
		if (fds[1].revents)
			return 0;
		if (n == 0)
			return -ETIMEDOUT;
	}
}

static int send_all(const struct metrics_server *server, int conn, const char *data, size_t len,
		    int flags, const struct timespec *deadline)
{
	while (len > 0) {
		ssize_t n;
		int err = wait_ready(server, conn, POLLOUT, deadline);

		if (err)
			return err;
		/* MSG_NOSIGNAL: a client that hung up must not kill the agent with SIGPIPE. */
		n = send(conn, data, len, flags | MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			return -errno;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* After answering, read until the client hangs up: closing a socket with unread input makes
 * the kernel send a reset, and a reset can destroy the answer before the client reads it
 * (a POST body we never looked at, or the rest of an oversized head). */
static void linger_until_client_closes(const struct metrics_server *server, int conn,
				       const struct timespec *deadline)
{
	char discard[1024];

	if (shutdown(conn, SHUT_WR))
		return;
	for (;;) {
		ssize_t n;

		if (wait_ready(server, conn, POLLIN, deadline))
			return;
		n = recv(conn, discard, sizeof(discard), 0);
		if (n == 0)
			return;
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return;
	}
}

static const char *status_text(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 431:
		return "Request Header Fields Too Large";
	case 503:
		return "Service Unavailable";
	default:
		return "Error";
	}
}

static void respond(const struct metrics_server *server, int conn, const struct timespec *deadline,
		    int status, const char *content_type, const char *body, size_t body_len,
		    bool head_only)
{
	bool send_body = !head_only && body_len > 0;
	char header[256];
	int n;

	n = snprintf(header, sizeof(header),
		     "HTTP/1.1 %d %s\r\n"
		     "Content-Type: %s\r\n"
		     "Content-Length: %zu\r\n"
		     "%s"
		     "Connection: close\r\n"
		     "\r\n",
		     status, status_text(status), content_type, body_len,
		     status == 405 ? "Allow: GET, HEAD\r\n" : "");
	if (n < 0 || (size_t)n >= sizeof(header))
		return;
	/* MSG_MORE keeps header and body in one segment instead of waiting on a delayed ACK. */
	if (send_all(server, conn, header, (size_t)n, send_body ? MSG_MORE : 0, deadline))
		return;
	if (send_body && send_all(server, conn, body, body_len, 0, deadline))
		return;
	linger_until_client_closes(server, conn, deadline);
}

static void respond_text(const struct metrics_server *server, int conn,
			 const struct timespec *deadline, int status, const char *body)
{
	respond(server, conn, deadline, status, TEXT_CONTENT_TYPE, body, strlen(body), false);
}

static bool token_is(const char *token, size_t len, const char *word)
{
	return len == strlen(word) && memcmp(token, word, len) == 0;
}

/* The head is complete once an empty line follows a line; bare LF is accepted too. */
static bool head_complete(const char *head, size_t len)
{
	return memmem(head, len, "\n\r\n", 3) || memmem(head, len, "\n\n", 2);
}

/* "METHOD SP TARGET SP HTTP/x.y" from a complete head; the target's path without query or
 * fragment. 0 or -EINVAL. */
static int parse_request_line(const char *head, size_t len, const char **method, size_t *method_len,
			      const char **path, size_t *path_len)
{
	const char *line_end = memchr(head, '\n', len);
	const char *space, *target, *version;
	size_t line_len, target_len;

	if (!line_end)
		return -EINVAL;
	line_len = (size_t)(line_end - head);
	if (line_len > 0 && head[line_len - 1] == '\r')
		line_len--;

	space = memchr(head, ' ', line_len);
	if (!space || space == head)
		return -EINVAL;
	*method = head;
	*method_len = (size_t)(space - head);

	target = space + 1;
	space = memchr(target, ' ', (size_t)(head + line_len - target));
	if (!space || space == target || target[0] != '/')
		return -EINVAL;
	target_len = (size_t)(space - target);

	version = space + 1;
	if ((size_t)(head + line_len - version) < 5 || memcmp(version, "HTTP/", 5) != 0)
		return -EINVAL;

	*path = target;
	*path_len = 0;
	while (*path_len < target_len && target[*path_len] != '?' && target[*path_len] != '#')
		(*path_len)++;
	return 0;
}

static void serve_metrics(struct metrics_server *server, int conn, const struct timespec *deadline,
			  bool head_only)
{
	struct snapshot *snapshot;
	bool last = false;

	pthread_mutex_lock(&server->lock);
	snapshot = server->snapshot;
	if (snapshot)
		snapshot->refs++;
	pthread_mutex_unlock(&server->lock);

	respond(server, conn, deadline, 200, METRICS_CONTENT_TYPE, snapshot ? snapshot->text : "",
		snapshot ? snapshot->len : 0, head_only);

	if (!snapshot)
		return;
	pthread_mutex_lock(&server->lock);
	snapshot->refs--;
	last = snapshot->refs == 0;
	pthread_mutex_unlock(&server->lock);
	if (last)
		free(snapshot);
}

static void serve_healthz(struct metrics_server *server, int conn, const struct timespec *deadline,
			  bool head_only)
{
	char body[MAX_REASON + 1];
	bool healthy;

	pthread_mutex_lock(&server->lock);
	healthy = server->healthy;
	if (healthy)
		snprintf(body, sizeof(body), "ok\n");
	else if (server->reason[0])
		snprintf(body, sizeof(body), "%s\n", server->reason);
	else
		snprintf(body, sizeof(body), "unhealthy\n");
	pthread_mutex_unlock(&server->lock);

	respond(server, conn, deadline, healthy ? 200 : 503, TEXT_CONTENT_TYPE, body, strlen(body),
		head_only);
}

static void serve_connection(struct metrics_server *server, int conn)
{
	char head[MAX_REQUEST_HEAD];
	const char *method, *path;
	size_t len = 0, method_len, path_len;
	struct timespec deadline;
	enum route route;
	bool head_only;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += CONNECTION_BUDGET_MS / 1000;
	deadline.tv_nsec += (CONNECTION_BUDGET_MS % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}

	while (!head_complete(head, len)) {
		ssize_t n;

		if (len == sizeof(head)) {
			respond_text(server, conn, &deadline, 431, "request head too large\n");
			return;
		}
		/* A client that goes quiet, or a stop, just ends the connection. */
		if (wait_ready(server, conn, POLLIN, &deadline))
			return;
		n = recv(conn, head + len, sizeof(head) - len, 0);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			return;
		}
		if (n == 0)
			return;
		len += (size_t)n;
	}

	if (parse_request_line(head, len, &method, &method_len, &path, &path_len)) {
		respond_text(server, conn, &deadline, 400, "bad request\n");
		return;
	}
	if (token_is(path, path_len, "/metrics"))
		route = ROUTE_METRICS;
	else if (token_is(path, path_len, "/healthz"))
		route = ROUTE_HEALTHZ;
	else
		route = ROUTE_NONE;

	if (route == ROUTE_NONE) {
		respond_text(server, conn, &deadline, 404, "not found\n");
		return;
	}
	head_only = token_is(method, method_len, "HEAD");
	if (!head_only && !token_is(method, method_len, "GET")) {
		respond_text(server, conn, &deadline, 405, "method not allowed\n");
		return;
	}
	if (route == ROUTE_METRICS)
		serve_metrics(server, conn, &deadline, head_only);
	else
		serve_healthz(server, conn, &deadline, head_only);
}

/* true when stop_fd became readable within timeout_ms. */
static bool wait_for_stop(const struct metrics_server *server, int timeout_ms)
{
	struct pollfd fd = { .fd = server->stop_fd, .events = POLLIN };

	return poll(&fd, 1, timeout_ms) > 0;
}

static void *serve_loop(void *arg)
{
	struct metrics_server *server = arg;
	bool warned = false;

	for (;;) {
		struct pollfd fds[2] = {
			{ .fd = server->stop_fd, .events = POLLIN },
			{ .fd = server->listen_fd, .events = POLLIN },
		};
		int conn, n;

		n = poll(fds, 2, -1);
		if (n < 0) {
			/* Only EINTR or a transient ENOMEM get here; do not spin on the latter. */
			if (errno != EINTR && wait_for_stop(server, ACCEPT_RETRY_MS))
				break;
			continue;
		}
		if (fds[0].revents)
			break;
		if (!fds[1].revents)
			continue;

		conn = accept4(server->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (conn < 0) {
			int err = errno;

			/* Out of descriptors or memory: the connection stays queued and poll would
			 * report it again at once, so back off instead of spinning. A client that
			 * vanished between poll and accept (ECONNABORTED, EAGAIN) needs nothing. */
			if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
				if (!warned)
					log_warn("metrics server: cannot accept a connection: %s; "
						 "retrying",
						 strerror(err));
				warned = true;
				if (wait_for_stop(server, ACCEPT_RETRY_MS))
					break;
			}
			continue;
		}
		warned = false;
		serve_connection(server, conn);
		close(conn);
	}
	return NULL;
}

/* The parameter is not called "listen" here: that would hide listen(2). */
int metrics_server__new(const char *listen_text, bool allow_remote, struct metrics_server **out,
			char *err, size_t err_len)
{
	struct metrics_server *server = NULL;
	union sockaddr_any addr, bound;
	socklen_t addr_len = 0, bound_len = sizeof(bound);
	bool mutex_ready = false;
	sigset_t all, old;
	int one = 1;
	int ret;

	*out = NULL;
	ret = parse_listen(listen_text, &addr, &addr_len, err, err_len);
	if (ret)
		return ret;
	if (!allow_remote && !is_loopback(&addr)) {
		snprintf(err, err_len,
			 "metrics.listen \"%s\" is not a loopback address, so other machines could "
			 "read the metrics: listen on 127.0.0.1 or [::1], or allow remote access "
			 "explicitly",
			 listen_text);
		return -EPERM;
	}

	server = calloc(1, sizeof(*server));
	if (!server) {
		snprintf(err, err_len, "metrics server: out of memory");
		return -ENOMEM;
	}
	server->listen_fd = -1;
	server->stop_fd = -1;
	server->healthy = true;

	server->listen_fd =
		socket(addr.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (server->listen_fd < 0) {
		ret = -errno;
		snprintf(err, err_len, "metrics.listen \"%s\": cannot create a socket: %s%s",
			 listen_text, strerror(-ret),
			 ret == -EAFNOSUPPORT ? " (is IPv6 disabled? listen on 127.0.0.1)" : "");
		goto fail;
	}
	/* A restarted agent must not wait out TIME_WAIT connections of its predecessor. */
	if (setsockopt(server->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one))) {
		ret = -errno;
		snprintf(err, err_len, "metrics.listen \"%s\": cannot set SO_REUSEADDR: %s",
			 listen_text, strerror(-ret));
		goto fail;
	}
	if (bind(server->listen_fd, &addr.sa, addr_len)) {
		ret = -errno;
		if (ret == -EADDRINUSE)
			snprintf(err, err_len,
				 "metrics.listen \"%s\" is in use: another allocscope, or another "
				 "program, holds the port; stop it or pick another metrics.listen",
				 listen_text);
		else
			snprintf(err, err_len, "metrics.listen \"%s\": cannot bind: %s%s",
				 listen_text, strerror(-ret),
				 ret == -EADDRNOTAVAIL ? " (the address is not on this machine)" :
				 ret == -EACCES ? " (ports below 1024 need CAP_NET_BIND_SERVICE)" :
						  "");
		goto fail;
	}
	if (listen(server->listen_fd, LISTEN_BACKLOG)) {
		ret = -errno;
		snprintf(err, err_len, "metrics.listen \"%s\": cannot listen: %s", listen_text,
			 strerror(-ret));
		goto fail;
	}
	if (getsockname(server->listen_fd, &bound.sa, &bound_len)) {
		ret = -errno;
		snprintf(err, err_len, "metrics.listen \"%s\": cannot read the bound port: %s",
			 listen_text, strerror(-ret));
		goto fail;
	}
	server->port =
		ntohs(bound.sa.sa_family == AF_INET6 ? bound.v6.sin6_port : bound.v4.sin_port);

	server->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (server->stop_fd < 0) {
		ret = -errno;
		snprintf(err, err_len, "metrics server: cannot create an eventfd: %s",
			 strerror(-ret));
		goto fail;
	}
	ret = -pthread_mutex_init(&server->lock, NULL);
	if (ret) {
		snprintf(err, err_len, "metrics server: cannot create a mutex: %s", strerror(-ret));
		goto fail;
	}
	mutex_ready = true;

	/* The thread inherits a mask with every signal blocked, so SIGINT, SIGTERM and SIGHUP
	 * keep going to the main thread's handlers; blocking here rather than in the thread
	 * leaves no window in which it could take one. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = -pthread_create(&server->thread, NULL, serve_loop, server);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret) {
		snprintf(err, err_len, "metrics server: cannot start its thread: %s",
			 strerror(-ret));
		goto fail;
	}

	*out = server;
	return 0;

fail:
	if (mutex_ready)
		pthread_mutex_destroy(&server->lock);
	if (server->stop_fd >= 0)
		close(server->stop_fd);
	if (server->listen_fd >= 0)
		close(server->listen_fd);
	free(server);
	return ret;
}

void metrics_server__free(struct metrics_server *server)
{
	uint64_t one = 1;

	if (!server)
		return;
	/* Writing to an eventfd only fails when its counter would overflow, and then it is
	 * readable already: either way the thread sees the stop. */
	if (write(server->stop_fd, &one, sizeof(one)) != (ssize_t)sizeof(one))
		log_debug("metrics server: stop signal not written: %s", strerror(errno));
	pthread_join(server->thread, NULL);
	close(server->listen_fd);
	close(server->stop_fd);
	pthread_mutex_destroy(&server->lock);
	/* The thread is gone, so this is the only reference left. */
	free(server->snapshot);
	free(server);
}

uint16_t metrics_server__port(const struct metrics_server *server)
{
	return server->port;
}

int metrics_server__publish(struct metrics_server *server, const char *text, size_t len)
{
	struct snapshot *snapshot, *old;
	bool last = false;

	if (len > SIZE_MAX - sizeof(*snapshot))
		return -ENOMEM;
	snapshot = malloc(sizeof(*snapshot) + len);
	if (!snapshot)
		return -ENOMEM;
	snapshot->refs = 1;
	snapshot->len = len;
	if (len)
		memcpy(snapshot->text, text, len);

	pthread_mutex_lock(&server->lock);
	old = server->snapshot;
	server->snapshot = snapshot;
	if (old) {
		old->refs--;
		last = old->refs == 0;
	}
	pthread_mutex_unlock(&server->lock);
	/* Otherwise the thread is sending it right now and frees it when done. */
	if (last)
		free(old);
	return 0;
}

void metrics_server__set_health(struct metrics_server *server, bool healthy, const char *reason)
{
	size_t len = reason ? strlen(reason) : 0;

	if (len >= MAX_REASON) {
		len = MAX_REASON - 1;
		/* Back off to the start of a character rather than serve half of one. */
		while (len > 0 && ((unsigned char)reason[len] & 0xc0) == 0x80)
			len--;
	}
	pthread_mutex_lock(&server->lock);
	server->healthy = healthy;
	if (len)
		memcpy(server->reason, reason, len);
	server->reason[len] = '\0';
	pthread_mutex_unlock(&server->lock);
}

/* metrics_text keeps a NUL after the text (not counted in len), so callers may print it. */
static bool text_reserve(struct metrics_text *t, size_t more)
{
	size_t need, cap;
	char *data;

	if (t->error)
		return false;
	if (more > SIZE_MAX - t->len - 1) {
		t->error = -ENOMEM;
		return false;
	}
	need = t->len + more + 1;
	if (need <= t->cap)
		return true;
	cap = t->cap ? t->cap : 4096;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	data = realloc(t->data, cap);
	if (!data) {
		t->error = -ENOMEM;
		return false;
	}
	t->data = data;
	t->cap = cap;
	return true;
}

static void text_append(struct metrics_text *t, const char *s, size_t n)
{
	if (!text_reserve(t, n))
		return;
	memcpy(t->data + t->len, s, n);
	t->len += n;
	t->data[t->len] = '\0';
}

static void text_puts(struct metrics_text *t, const char *s)
{
	text_append(t, s, strlen(s));
}

/* The exposition format escapes backslash and newline in HELP text, and also the double
 * quote in label values. */
static void text_escaped(struct metrics_text *t, const char *s, bool label_value)
{
	const char *run = s;

	for (; *s; s++) {
		const char *escape = NULL;

		if (*s == '\\')
			escape = "\\\\";
		else if (*s == '\n')
			escape = "\\n";
		else if (*s == '"' && label_value)
			escape = "\\\"";
		if (!escape)
			continue;
		text_append(t, run, (size_t)(s - run));
		text_puts(t, escape);
		run = s + 1;
	}
	text_append(t, run, (size_t)(s - run));
}

/* Integers below 2^53 are exact in a double and read best without a decimal point; anything
 * else gets the shortest of 15, 16 or 17 significant digits that reads back as the same
 * double, so 0.1 stays "0.1" and nothing is lost. */
static void format_value(double value, char *buf, size_t len)
{
	if (isnan(value)) {
		snprintf(buf, len, "NaN");
	} else if (isinf(value)) {
		snprintf(buf, len, "%s", value > 0 ? "+Inf" : "-Inf");
	} else if (value == 0) {
		snprintf(buf, len, "0"); /* not "-0" */
	} else if (value > -0x1p53 && value < 0x1p53 && value == (double)(int64_t)value) {
		snprintf(buf, len, "%.0f", value);
	} else {
		for (int precision = 15; precision <= 17; precision++) {
			snprintf(buf, len, "%.*g", precision, value);
			if (strtod(buf, NULL) == value)
				break;
		}
	}
}

void metrics_text__family(struct metrics_text *t, const char *name, const char *type,
			  const char *help)
{
	if (help) {
		text_puts(t, "# HELP ");
		text_puts(t, name);
		text_puts(t, " ");
		text_escaped(t, help, false);
		text_puts(t, "\n");
	}
	text_puts(t, "# TYPE ");
	text_puts(t, name);
	text_puts(t, " ");
	text_puts(t, type);
	text_puts(t, "\n");
}

void metrics_text__sample(struct metrics_text *t, const char *name, const char *const *labels,
			  double value)
{
	char number[32];

	text_puts(t, name);
	if (labels && labels[0] && labels[1]) {
		text_puts(t, "{");
		for (size_t i = 0; labels[i] && labels[i + 1]; i += 2) {
			if (i)
				text_puts(t, ",");
			text_puts(t, labels[i]);
			text_puts(t, "=\"");
			text_escaped(t, labels[i + 1], true);
			text_puts(t, "\"");
		}
		text_puts(t, "}");
	}
	format_value(value, number, sizeof(number));
	text_puts(t, " ");
	text_puts(t, number);
	text_puts(t, "\n");
}

int metrics_text__error(const struct metrics_text *t)
{
	return t->error;
}

void metrics_text__free(struct metrics_text *t)
{
	free(t->data);
	memset(t, 0, sizeof(*t));
}
