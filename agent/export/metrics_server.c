/* Self-metrics over HTTP (see metrics_server.h). One thread serves every connection at once
 * from one poll loop: scrapes and probes are tiny, so a thread per connection would buy nothing
 * but a way to exhaust threads, and one thread is simple to stop (it also watches an eventfd,
 * which is how free() stops it even with clients connected).
 *
 * What keeps hostile or broken clients from starving the health probe: at most
 * MAX_CONNECTIONS are open at once, and one more arriving closes the oldest (answered ones
 * first; one that has not finished its request by then has had its chance, while a probe sends
 * its request as it connects and is answered at accept or soon after, long before it is the
 * oldest); every connection has a fixed deadline (CONNECTION_BUDGET_MS from accept, never
 * extended by activity, so a client trickling a byte at a time is closed as surely as a silent
 * one); sockets are non-blocking, so one client never waits on another. The answer is taken at
 * once, from a reference on the published snapshot taken under the mutex, so publishing never
 * waits on a slow client. The request parser is pure (http_request.h). */
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
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "export/http_request.h"
#include "export/metrics_server.h"
#include "util/log.h"

/* From accept to the last byte of the answer and the client's hang-up. A scrape of a few
 * kilobytes over loopback takes well under a millisecond; this only bounds misbehaving
 * clients. */
#define CONNECTION_BUDGET_MS 2000
/* Connections open at once. A scraper and a kubelet need one each for a moment; the rest is
 * room for bursts. Each holds a request buffer of HTTP_REQUEST_MAX_HEAD bytes. */
#define MAX_CONNECTIONS	     32
/* A reason is a sentence for an operator; longer ones are cut (at a UTF-8 boundary). */
#define MAX_REASON	     1024
#define ACCEPT_RETRY_MS	     100
/* Enough that a burst of connections is accepted (and the oldest closed) rather than left to
 * SYN retries, which would delay a probe by a second or more. */
#define LISTEN_BACKLOG	     128

#define LISTEN_EXAMPLE	     "127.0.0.1:9464"
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define TEXT_CONTENT_TYPE    "text/plain; charset=utf-8"

struct snapshot {
	size_t refs; /* under metrics_server.lock */
	size_t len;
	char text[];
};

enum connection_state {
	CONNECTION_FREE,
	CONNECTION_READING,   /* the request head */
	CONNECTION_WRITING,   /* the answer */
	CONNECTION_LINGERING, /* answered; reading until the client hangs up */
};

struct connection {
	int fd;
	enum connection_state state;
	uint64_t serial; /* order of accept: the smallest open one is the oldest */
	struct timespec deadline;
	size_t head_len, searched; /* bytes read; bytes already searched for the head's end */
	char head[HTTP_REQUEST_MAX_HEAD];
	/* The answer: header, then body (a snapshot's text, or small_body). */
	char header[256];
	size_t header_len;
	struct snapshot *snapshot; /* a reference, while the body is its text */
	const char *body;
	size_t body_len, sent; /* sent counts header and body bytes */
	char small_body[MAX_REASON + 1];
};

struct metrics_server {
	int listen_fd;
	int stop_fd; /* eventfd, readable once free() wants the thread gone */
	uint16_t port;
	pthread_t thread;
	pthread_mutex_t lock;
	/* the thread's own */
	struct connection *connections; /* MAX_CONNECTIONS of them */
	uint64_t next_serial;
	/* under lock */
	struct snapshot *snapshot; /* NULL until the first publish: an empty body */
	bool healthy;
	char reason[MAX_REASON];
	struct metrics_server_stats stats;
};

union sockaddr_any {
	struct sockaddr sa;
	struct sockaddr_in v4;
	struct sockaddr_in6 v6;
};

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

static bool expired(const struct timespec *deadline, const struct timespec *now)
{
	return now->tv_sec > deadline->tv_sec ||
	       (now->tv_sec == deadline->tv_sec && now->tv_nsec >= deadline->tv_nsec);
}

static void snapshot_put(struct metrics_server *server, struct snapshot *snapshot)
{
	bool last;

	if (!snapshot)
		return;
	pthread_mutex_lock(&server->lock);
	snapshot->refs--;
	last = snapshot->refs == 0;
	pthread_mutex_unlock(&server->lock);
	if (last)
		free(snapshot);
}

static void count(struct metrics_server *server, uint64_t *counter)
{
	pthread_mutex_lock(&server->lock);
	(*counter)++;
	pthread_mutex_unlock(&server->lock);
}

static void connection_close(struct metrics_server *server, struct connection *c)
{
	close(c->fd);
	snapshot_put(server, c->snapshot);
	c->snapshot = NULL;
	c->fd = -1;
	c->state = CONNECTION_FREE;
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

/* Sets up the answer; body must outlive the connection's writing (a snapshot's text held by
 * c->snapshot, c->small_body, or a literal). */
static void answer(struct connection *c, int status, const char *content_type, const char *body,
		   size_t body_len, bool head_only)
{
	int n = snprintf(c->header, sizeof(c->header),
			 "HTTP/1.1 %d %s\r\n"
			 "Content-Type: %s\r\n"
			 "Content-Length: %zu\r\n"
			 "%s"
			 "Connection: close\r\n"
			 "\r\n",
			 status, status_text(status), content_type, body_len,
			 status == 405 ? "Allow: GET, HEAD\r\n" : "");

	/* The header's parts are all ours and short; this cannot be cut. */
	c->header_len = n > 0 && (size_t)n < sizeof(c->header) ? (size_t)n : 0;
	c->body = body;
	c->body_len = head_only ? 0 : body_len;
	c->sent = 0;
	c->state = CONNECTION_WRITING;
}

static void answer_text(struct connection *c, int status, const char *body)
{
	answer(c, status, TEXT_CONTENT_TYPE, body, strlen(body), false);
}

static bool token_is(const char *token, size_t len, const char *word)
{
	return len == strlen(word) && memcmp(token, word, len) == 0;
}

static void answer_metrics(struct metrics_server *server, struct connection *c, bool head_only)
{
	pthread_mutex_lock(&server->lock);
	c->snapshot = server->snapshot;
	if (c->snapshot)
		c->snapshot->refs++;
	pthread_mutex_unlock(&server->lock);
	answer(c, 200, METRICS_CONTENT_TYPE, c->snapshot ? c->snapshot->text : "",
	       c->snapshot ? c->snapshot->len : 0, head_only);
}

static void answer_healthz(struct metrics_server *server, struct connection *c, bool head_only)
{
	bool healthy;

	pthread_mutex_lock(&server->lock);
	healthy = server->healthy;
	if (healthy)
		snprintf(c->small_body, sizeof(c->small_body), "ok\n");
	else if (server->reason[0])
		snprintf(c->small_body, sizeof(c->small_body), "%s\n", server->reason);
	else
		snprintf(c->small_body, sizeof(c->small_body), "unhealthy\n");
	pthread_mutex_unlock(&server->lock);
	answer(c, healthy ? 200 : 503, TEXT_CONTENT_TYPE, c->small_body, strlen(c->small_body),
	       head_only);
}

/* The head so far is complete or full: decide the answer. */
static void route(struct metrics_server *server, struct connection *c)
{
	struct http_request req;
	bool head_only;
	int ret = http_request__parse(c->head, c->head_len, &req);

	if (ret == -EMSGSIZE) {
		answer_text(c, 431, "request head too large\n");
		return;
	}
	if (ret) {
		answer_text(c, 400, "bad request\n");
		return;
	}
	if (!token_is(req.path, req.path_len, "/metrics") &&
	    !token_is(req.path, req.path_len, "/healthz")) {
		answer_text(c, 404, "not found\n");
		return;
	}
	head_only = token_is(req.method, req.method_len, "HEAD");
	if (!head_only && !token_is(req.method, req.method_len, "GET")) {
		answer_text(c, 405, "method not allowed\n");
		return;
	}
	if (token_is(req.path, req.path_len, "/metrics"))
		answer_metrics(server, c, head_only);
	else
		answer_healthz(server, c, head_only);
}

/* Sends what the socket takes now. When all is sent: half-close and linger, since closing a
 * socket with unread input makes the kernel send a reset, and a reset can destroy the answer
 * before the client reads it (a POST body we never looked at, or the rest of an oversized
 * head). */
static void write_some(struct metrics_server *server, struct connection *c)
{
	size_t total = c->header_len + c->body_len;

	while (c->sent < total) {
		struct iovec iov[2];
		struct msghdr msg = { .msg_iov = iov };
		ssize_t n;

		if (c->sent < c->header_len) {
			iov[0] = (struct iovec){ c->header + c->sent, c->header_len - c->sent };
			iov[1] = (struct iovec){ (void *)c->body, c->body_len };
			msg.msg_iovlen = c->body_len ? 2 : 1;
		} else {
			size_t done = c->sent - c->header_len;

			iov[0] = (struct iovec){ (void *)(c->body + done), c->body_len - done };
			msg.msg_iovlen = 1;
		}
		/* MSG_NOSIGNAL: a client that hung up must not kill the agent with SIGPIPE. */
		n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				connection_close(server, c);
			return;
		}
		c->sent += (size_t)n;
	}
	snapshot_put(server, c->snapshot);
	c->snapshot = NULL;
	if (shutdown(c->fd, SHUT_WR)) {
		connection_close(server, c);
		return;
	}
	c->state = CONNECTION_LINGERING;
}

static void read_some(struct metrics_server *server, struct connection *c)
{
	for (;;) {
		char discard[1024];
		bool reading = c->state == CONNECTION_READING;
		ssize_t n;

		if (reading)
			n = recv(c->fd, c->head + c->head_len, sizeof(c->head) - c->head_len, 0);
		else
			n = recv(c->fd, discard, sizeof(discard), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		/* Hung up (or broke) before finishing its request, or after our answer: done. */
		if (n <= 0) {
			connection_close(server, c);
			return;
		}
		if (!reading)
			continue;
		c->head_len += (size_t)n;
		if (!http_request__head_end(c->head, c->head_len, c->searched) &&
		    c->head_len < sizeof(c->head)) {
			c->searched = c->head_len;
			continue;
		}
		route(server, c);
		write_some(server, c);
		return;
	}
}

/* Closes the oldest open connection to make room (one already answered first: it only waits
 * for the client to hang up); see the top of the file for why. */
static struct connection *make_room(struct metrics_server *server)
{
	struct connection *oldest = NULL;

	for (size_t i = 0; i < MAX_CONNECTIONS; i++) {
		struct connection *c = &server->connections[i];
		bool answered = c->state == CONNECTION_LINGERING;

		if (c->state == CONNECTION_FREE)
			return c;
		if (!oldest || answered > (oldest->state == CONNECTION_LINGERING) ||
		    (answered == (oldest->state == CONNECTION_LINGERING) &&
		     c->serial < oldest->serial))
			oldest = c;
	}
	if (oldest->state != CONNECTION_LINGERING)
		count(server, &server->stats.closed_over_limit);
	connection_close(server, oldest);
	return oldest;
}

/* true when stop_fd became readable within timeout_ms. */
static bool wait_for_stop(const struct metrics_server *server, int timeout_ms)
{
	struct pollfd fd = { .fd = server->stop_fd, .events = POLLIN };

	return poll(&fd, 1, timeout_ms) > 0;
}

/* Accepts queued connections, at most MAX_CONNECTIONS before the other connections get their
 * turn, and reads each at once: a client sends its request as it connects, so a probe is
 * usually answered here, before a flood of connections behind it could make it the oldest.
 * false when the thread should stop. */
static bool accept_some(struct metrics_server *server, bool *warned)
{
	for (int accepted = 0; accepted < MAX_CONNECTIONS; accepted++) {
		struct connection *c;
		int fd = accept4(server->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (fd < 0) {
			int err = errno;

			if (err == EINTR || err == ECONNABORTED)
				continue;
			/* Out of descriptors or memory: the connection stays queued and poll would
			 * report it again at once, so back off instead of spinning. */
			if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
				if (!*warned)
					log_warn("metrics server: cannot accept a connection: %s; "
						 "retrying",
						 strerror(err));
				*warned = true;
				return !wait_for_stop(server, ACCEPT_RETRY_MS);
			}
			return true; /* EAGAIN: none left */
		}
		*warned = false;
		c = make_room(server);
		c->fd = fd;
		c->state = CONNECTION_READING;
		c->serial = server->next_serial++;
		c->head_len = 0;
		c->searched = 0;
		clock_gettime(CLOCK_MONOTONIC, &c->deadline);
		c->deadline.tv_sec += CONNECTION_BUDGET_MS / 1000;
		c->deadline.tv_nsec += (CONNECTION_BUDGET_MS % 1000) * 1000000L;
		if (c->deadline.tv_nsec >= 1000000000L) {
			c->deadline.tv_sec++;
			c->deadline.tv_nsec -= 1000000000L;
		}
		read_some(server, c);
	}
	return true;
}

static void *serve_loop(void *arg)
{
	struct metrics_server *server = arg;
	struct pollfd fds[2 + MAX_CONNECTIONS];
	struct connection *polled[2 + MAX_CONNECTIONS];
	bool warned = false;

	for (;;) {
		struct timespec now;
		int timeout = -1, n;
		nfds_t nfds = 2;

		fds[0] = (struct pollfd){ .fd = server->stop_fd, .events = POLLIN };
		fds[1] = (struct pollfd){ .fd = server->listen_fd, .events = POLLIN };
		for (size_t i = 0; i < MAX_CONNECTIONS; i++) {
			struct connection *c = &server->connections[i];
			int left;

			if (c->state == CONNECTION_FREE)
				continue;
			fds[nfds] = (struct pollfd){
				.fd = c->fd,
				.events = c->state == CONNECTION_WRITING ? POLLOUT : POLLIN,
			};
			polled[nfds++] = c;
			left = ms_until(&c->deadline);
			if (timeout < 0 || left < timeout)
				timeout = left;
		}

		n = poll(fds, nfds, timeout);
		if (n < 0) {
			/* Only EINTR or a transient ENOMEM get here; do not spin on the latter. */
			if (errno != EINTR && wait_for_stop(server, ACCEPT_RETRY_MS))
				break;
			continue;
		}
		if (fds[0].revents)
			break;

		for (nfds_t k = 2; k < nfds; k++) {
			struct connection *c = polled[k];

			if (!fds[k].revents || c->state == CONNECTION_FREE)
				continue;
			if (c->state == CONNECTION_WRITING)
				write_some(server, c);
			else
				read_some(server, c);
		}

		clock_gettime(CLOCK_MONOTONIC, &now);
		for (size_t i = 0; i < MAX_CONNECTIONS; i++) {
			struct connection *c = &server->connections[i];

			if (c->state == CONNECTION_FREE || !expired(&c->deadline, &now))
				continue;
			/* A client that never hangs up after its answer is no failure. */
			if (c->state != CONNECTION_LINGERING)
				count(server, &server->stats.closed_at_deadline);
			connection_close(server, c);
		}

		if ((fds[1].revents & POLLIN) && !accept_some(server, &warned))
			break;
	}

	for (size_t i = 0; i < MAX_CONNECTIONS; i++)
		if (server->connections[i].state != CONNECTION_FREE)
			connection_close(server, &server->connections[i]);
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
	server->connections = calloc(MAX_CONNECTIONS, sizeof(*server->connections));
	if (!server->connections) {
		free(server);
		snprintf(err, err_len, "metrics server: out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < MAX_CONNECTIONS; i++)
		server->connections[i].fd = -1;

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
	free(server->connections);
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
	/* The thread is gone (it closed its connections), so this is the only reference left. */
	free(server->snapshot);
	free(server->connections);
	free(server);
}

void metrics_server__stats(struct metrics_server *server, struct metrics_server_stats *stats)
{
	pthread_mutex_lock(&server->lock);
	*stats = server->stats;
	pthread_mutex_unlock(&server->lock);
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
