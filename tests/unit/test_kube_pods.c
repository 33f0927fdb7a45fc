/* The pod cache against a stand-in Kubernetes API: a small HTTP server on 127.0.0.1 in this
 * test that checks the bearer token and the field selector the way the API server's
 * authentication and the pods endpoint do (401, 400), and answers with recorded pod lists
 * (tests/unit/fixtures/kube/pods-*.json) or whatever a case sets. Covered: what a lookup of a
 * containerd, CRI-O or Docker container id returns, the service-name annotation, refreshes on
 * a miss and on the interval picking up a new pod, token rotation, errors (401, 403, refused
 * connections, oversized and malformed answers) kept with the previous cache intact, and that
 * lookups never wait for the network. The tests run from the repository root. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "unit.h"
#include "util/log.h"
#include "collect/kube_pods.h"

#define FIXTURE_DIR "tests/unit/fixtures/kube/"

#define ID_APP	  "25c99c29f65de016a745b6a003ef22cf15bc305440fdc37df0b691e63276d8bf"
#define ID_ENVOY  "f2e9bbfe5f67ee3e3e994353d3f7df799842f40b91c3ff0ab3809e1be3c6aa60"
#define ID_INIT	  "8e86878056b564a649aaf0d9f052606462372de5a99e448bb86b387dac386b79"
#define ID_PAY	  "7e8eae3fafd763cb8527493e051a7cf5c630ed3282ef920919b9ad446038d73f"
#define ID_CRIO	  "171d188f09962afe679383260e3d0ba226f89058468a4604e862cec3ae7584f7"
#define ID_DOCKER "262ba9b8c5c37fe31e1ec9169d7fc1651fb6b6381d0e3ad2542ebc05dff6a64b"
#define ID_NEW	  "52dea57d96d5e85548079469c38fc6d614efd5f517ed4b1a7bfbeb4c2e8f4fc9"
/* Listed, but on node-b: the client must not take it. */
#define ID_OTHER_NODE "ca8723c610c3609741646f8a15ce72412e04eda12720817f1321c7e71e1b8e45"

/* How long a case waits for the refresh thread before it fails. */
#define WAIT_MS 5000

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

static char *read_file(const char *name, size_t *len)
{
	char path[512];
	char *text = NULL;
	long size;
	FILE *f;

	snprintf(path, sizeof(path), FIXTURE_DIR "%s", name);
	f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "  cannot open %s (run the tests from the repository root)\n",
			path);
		exit(2);
	}
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, 0, SEEK_SET);
	text = malloc((size_t)size + 1);
	if (!text || fread(text, 1, (size_t)size, f) != (size_t)size) {
		fprintf(stderr, "  cannot read %s\n", path);
		exit(2);
	}
	text[size] = '\0';
	fclose(f);
	if (len)
		*len = (size_t)size;
	return text;
}

/* ---- the stand-in API server ---- */

struct api_server {
	int listen_fd;
	uint16_t port;
	pthread_t thread;
	atomic_bool stop;

	pthread_mutex_t lock;
	/* what it answers (set by the case) */
	char token[64]; /* the bearer token it accepts */
	char node[64];	/* the node name the field selector must name */
	int status;	/* for an authorised, well-formed request */
	char *body;	/* owned */
	size_t body_len;
	long delay_ms; /* before answering */
	/* what it saw */
	int requests;
	int unauthorized; /* requests answered 401 */
	char last_target[512];
	char last_authorization[256];
};

static const char status_401[] =
    "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","
    "\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}";

/* Changes the answer. Returns how many requests the server had received before: every
 * later one gets the new answer. */
static int server_set_body(struct api_server *server, int status, const char *body, size_t len)
{
	char *copy = malloc(len + 1);
	int requests;

	memcpy(copy, body, len);
	copy[len] = '\0';
	pthread_mutex_lock(&server->lock);
	free(server->body);
	server->body = copy;
	server->body_len = len;
	server->status = status;
	requests = server->requests;
	pthread_mutex_unlock(&server->lock);
	return requests;
}

static int server_serve_file(struct api_server *server, int status, const char *name)
{
	size_t len;
	char *text = read_file(name, &len);
	int requests = server_set_body(server, status, text, len);

	free(text);
	return requests;
}

static int server_set_token(struct api_server *server, const char *token)
{
	int requests;

	pthread_mutex_lock(&server->lock);
	snprintf(server->token, sizeof(server->token), "%s", token);
	requests = server->requests;
	pthread_mutex_unlock(&server->lock);
	return requests;
}

static void server_set_delay(struct api_server *server, long delay_ms)
{
	pthread_mutex_lock(&server->lock);
	server->delay_ms = delay_ms;
	pthread_mutex_unlock(&server->lock);
}

static int server_requests(struct api_server *server)
{
	int n;

	pthread_mutex_lock(&server->lock);
	n = server->requests;
	pthread_mutex_unlock(&server->lock);
	return n;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The decoded value of name in a query string, as a server reads it; "" when absent. */
static void query_value(const char *query, const char *name, char *out, size_t cap)
{
	size_t name_len = strlen(name), n = 0;
	const char *p = query;

	out[0] = '\0';
	while (p && *p) {
		const char *end = strchrnul(p, '&');

		if ((size_t)(end - p) > name_len && strncmp(p, name, name_len) == 0 &&
		    p[name_len] == '=') {
			for (const char *c = p + name_len + 1; c < end && n + 1 < cap; c++) {
				if (*c == '%' && end - c >= 3 && hex_digit(c[1]) >= 0 &&
				    hex_digit(c[2]) >= 0) {
					out[n++] = (char)(hex_digit(c[1]) * 16 + hex_digit(c[2]));
					c += 2;
				} else {
					out[n++] = *c == '+' ? ' ' : *c;
				}
			}
			out[n] = '\0';
			return;
		}
		p = *end ? end + 1 : end;
	}
}

static void send_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t sent = send(fd, data, len, MSG_NOSIGNAL);

		if (sent <= 0)
			return;
		data += sent;
		len -= (size_t)sent;
	}
}

static void answer(int fd, int status, const char *body, size_t len)
{
	char head[256];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
			 status, len);

	send_all(fd, head, (size_t)n);
	send_all(fd, body, len);
}

static void serve_connection(struct api_server *server, int fd)
{
	char request[16384], target[512] = "", authorization[256] = "", selector[256];
	char expected[128], expected_selector[128];
	size_t n = 0;
	char *line, *query, *header_end = NULL;
	int status;
	long delay;
	char *body;
	size_t body_len;

	while (n < sizeof(request) - 1) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t got;

		if (poll(&pfd, 1, 2000) <= 0)
			return;
		got = recv(fd, request + n, sizeof(request) - 1 - n, 0);
		if (got <= 0)
			return;
		n += (size_t)got;
		request[n] = '\0';
		header_end = strstr(request, "\r\n\r\n");
		if (header_end)
			break;
	}
	if (!header_end)
		return;
	sscanf(request, "GET %511s HTTP/1.1", target);
	for (line = strstr(request, "\r\n"); line && line < header_end;
	     line = strstr(line + 2, "\r\n")) {
		if (strncasecmp(line + 2, "Authorization:", 14) == 0) {
			const char *value = line + 2 + 14;
			size_t len;

			while (*value == ' ')
				value++;
			len = strcspn(value, "\r");
			if (len >= sizeof(authorization))
				len = sizeof(authorization) - 1;
			memcpy(authorization, value, len);
			authorization[len] = '\0';
		}
	}

	pthread_mutex_lock(&server->lock);
	server->requests++;
	snprintf(server->last_target, sizeof(server->last_target), "%s", target);
	snprintf(server->last_authorization, sizeof(server->last_authorization), "%s",
		 authorization);
	snprintf(expected, sizeof(expected), "Bearer %s", server->token);
	snprintf(expected_selector, sizeof(expected_selector), "spec.nodeName=%s", server->node);
	status = server->status;
	delay = server->delay_ms;
	body_len = server->body_len;
	body = malloc(body_len + 1);
	memcpy(body, server->body ? server->body : "", body_len);
	if (strcmp(authorization, expected) != 0)
		server->unauthorized++;
	pthread_mutex_unlock(&server->lock);

	query = strchr(target, '?');
	if (query)
		*query++ = '\0';
	query_value(query, "fieldSelector", selector, sizeof(selector));
	if (delay)
		sleep_ms(delay);
	if (strcmp(authorization, expected) != 0)
		answer(fd, 401, status_401, strlen(status_401));
	else if (strcmp(target, "/api/v1/pods") != 0)
		answer(fd, 404, "{}", 2);
	else if (strcmp(selector, expected_selector) != 0)
		answer(fd, 400, "{\"kind\":\"Status\",\"message\":\"bad field selector\"}", 48);
	else
		answer(fd, status, body, body_len);
	free(body);
}

static void *server_main(void *arg)
{
	struct api_server *server = arg;

	while (!atomic_load(&server->stop)) {
		struct pollfd pfd = {.fd = server->listen_fd, .events = POLLIN};
		int fd;

		if (poll(&pfd, 1, 50) <= 0)
			continue;
		fd = accept(server->listen_fd, NULL, NULL);
		if (fd < 0)
			continue;
		serve_connection(server, fd);
		close(fd);
	}
	return NULL;
}

static struct api_server *server_start(const char *token, const char *node)
{
	struct api_server *server = calloc(1, sizeof(*server));
	struct sockaddr_in addr = {.sin_family = AF_INET};
	socklen_t addr_len = sizeof(addr);
	int one = 1;

	pthread_mutex_init(&server->lock, NULL);
	snprintf(server->token, sizeof(server->token), "%s", token);
	snprintf(server->node, sizeof(server->node), "%s", node);
	server->status = 200;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	server->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(server->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (server->listen_fd < 0 ||
	    bind(server->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) ||
	    listen(server->listen_fd, 16) ||
	    getsockname(server->listen_fd, (struct sockaddr *)&addr, &addr_len)) {
		perror("test API server");
		exit(2);
	}
	server->port = ntohs(addr.sin_port);
	pthread_create(&server->thread, NULL, server_main, server);
	return server;
}

static void server_stop(struct api_server *server)
{
	atomic_store(&server->stop, true);
	pthread_join(server->thread, NULL);
	close(server->listen_fd);
	pthread_mutex_destroy(&server->lock);
	free(server->body);
	free(server);
}

/* ---- the client side ---- */

static char token_path[] = "/tmp/allocscope-kube-token-XXXXXX";

static void write_token(const char *token)
{
	FILE *f = fopen(token_path, "w");

	if (!f) {
		perror(token_path);
		exit(2);
	}
	/* As the kubelet writes it: no newline; a newline is tolerated too. */
	fputs(token, f);
	fclose(f);
}

static struct kube_pods *start_cache(struct api_server *server, const char *node,
				     struct kube_pods_options *options)
{
	struct kube_pods_options defaults = {0};
	struct kube_pods *pods = NULL;
	char url[64], err[512];
	int ret;

	if (!options)
		options = &defaults;
	snprintf(url, sizeof(url), "http://127.0.0.1:%u", server ? server->port : 1);
	if (!options->api_server)
		options->api_server = url;
	options->node_name = node;
	if (!options->token_path)
		options->token_path = token_path;
	/* Short enough that the cases run in well under a second each. */
	if (!options->miss_refresh_gap_ms)
		options->miss_refresh_gap_ms = 20;
	if (!options->request_timeout_ms)
		options->request_timeout_ms = 3000;
	ret = kube_pods__new(options, &pods, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "  kube_pods__new: %d: %s\n", ret, err);
		exit(2);
	}
	return pods;
}

static struct kube_pods_stats stats_of(struct kube_pods *pods)
{
	struct kube_pods_stats stats;

	kube_pods__stats(pods, &stats);
	return stats;
}

/* Waits until refreshes + refresh_errors passes done. Every refresh in these cases sends one
 * request, in order, so once the count passes the server's request count at a change, a
 * refresh that saw the change has ended. */
static bool wait_refresh_after(struct kube_pods *pods, uint64_t done)
{
	uint64_t deadline = now_ms() + WAIT_MS;

	while (now_ms() < deadline) {
		struct kube_pods_stats stats = stats_of(pods);

		if (stats.refreshes + stats.refresh_errors > done)
			return true;
		sleep_ms(2);
	}
	fprintf(stderr, "  no refresh ended within %d ms\n", WAIT_MS);
	unit_case_failures++;
	return false;
}

/* Looks up id, asking again as a miss triggers refreshes, until found or WAIT_MS. */
static struct kube_container *lookup_eventually(struct kube_pods *pods, const char *id)
{
	uint64_t deadline = now_ms() + WAIT_MS;
	struct kube_container *found = NULL;
	int ret;

	do {
		ret = kube_pods__lookup(pods, id, &found);
		if (ret == 0)
			return found;
		if (ret != -EAGAIN)
			break;
		sleep_ms(2);
	} while (now_ms() < deadline);
	fprintf(stderr, "  lookup of %.12s: %d (%s)\n", id, ret, strerror(-ret));
	unit_case_failures++;
	return NULL;
}

static const char *label_value(const struct kube_container *c, const char *key)
{
	for (size_t i = 0; i < c->n_labels; i++) {
		if (strcmp(c->labels[i].key, key) == 0)
			return c->labels[i].value;
	}
	return NULL;
}

/* ---- the cases ---- */

static void test_containerd_pods(void)
{
	struct api_server *server = server_start("secret-one", "node-a");
	struct kube_pods *pods;
	struct kube_container *c;
	struct kube_pods_stats stats;

	write_token("secret-one\n");
	server_serve_file(server, 200, "pods-node-a.json");
	pods = start_cache(server, "node-a", NULL);

	c = lookup_eventually(pods, ID_APP);
	if (c) {
		CHECK_STR(c->namespace_name, "shop");
		CHECK_STR(c->pod, "checkout-7d9c5b7f8-x2x9q");
		CHECK_STR(c->pod_uid, "99b620f2-cbeb-410e-8c0e-9866b21d63f5");
		CHECK_STR(c->container, "app");
		CHECK_STR(c->node, "node-a");
		CHECK_STR(c->service_name, "shop/app");
		/* The status's image, for the service_version label's image tag. */
		CHECK_STR(c->image, "registry.example.com/shop/checkout:1.8.3");
		CHECK_EQ_U64(c->n_labels, 3);
		if (c->n_labels == 3) {
			/* Sorted by key. */
			CHECK_STR(c->labels[0].key, "app");
			CHECK_STR(c->labels[0].value, "checkout");
			CHECK_STR(c->labels[1].key, "pod-template-hash");
			CHECK_STR(c->labels[2].key, "team");
			CHECK_STR(c->labels[2].value, "payments");
		}
	}
	kube_container__free(c);

	/* What the server saw: the service account token and this node's field selector. */
	pthread_mutex_lock(&server->lock);
	CHECK_STR(server->last_authorization, "Bearer secret-one");
	CHECK_STR(server->last_target,
		  "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a&resourceVersion=0");
	CHECK_EQ_U64(server->unauthorized, 0);
	pthread_mutex_unlock(&server->lock);

	/* A sidecar and an init container of the same pod. */
	c = lookup_eventually(pods, ID_ENVOY);
	if (c) {
		CHECK_STR(c->container, "envoy");
		CHECK_STR(c->image, "docker.io/envoyproxy/envoy:v1.31.2");
		CHECK_STR(c->service_name, "shop/envoy");
		CHECK_STR(c->pod, "checkout-7d9c5b7f8-x2x9q");
	}
	kube_container__free(c);
	c = lookup_eventually(pods, ID_INIT);
	if (c)
		CHECK_STR(c->container, "migrate");
	kube_container__free(c);

	/* The annotation names the service. */
	c = lookup_eventually(pods, ID_PAY);
	if (c) {
		CHECK_STR(c->service_name, "payments-api");
		CHECK_STR(c->container, "server");
		CHECK_STR(label_value(c, "statefulset.kubernetes.io/pod-name"), "payments-0");
	}
	kube_container__free(c);

	/* Three pods of node-a (one waiting for its container, labels null), four ids; the pod
	 * of node-b is not taken. */
	stats = stats_of(pods);
	CHECK_EQ_U64(stats.pods, 3);
	CHECK_EQ_U64(stats.containers, 4);
	CHECK_EQ_U64(stats.refresh_errors, 0);
	CHECK_STR(stats.last_error, "");
	CHECK_EQ_U64(stats.last_http_status, 200);
	CHECK_EQ_U64(kube_pods__lookup(pods, ID_OTHER_NODE, &c), (uint64_t)-EAGAIN);
	CHECK(c == NULL);

	CHECK_EQ_U64(kube_pods__lookup(pods, "not-an-id", &c), (uint64_t)-EINVAL);
	CHECK_EQ_U64(
	    kube_pods__lookup(
		pods, "25C99C29F65DE016A745B6A003EF22CF15BC305440FDC37DF0B691E63276D8BF", &c),
	    (uint64_t)-EINVAL);
	kube_pods__free(pods);
	server_stop(server);
}

static void test_crio_and_docker_pods(void)
{
	struct api_server *server = server_start("secret-one", "worker-1.ocp.example.com");
	struct kube_pods *pods;
	struct kube_container *c;

	write_token("secret-one");
	server_serve_file(server, 200, "pods-crio.json");
	pods = start_cache(server, "worker-1.ocp.example.com", NULL);
	c = lookup_eventually(pods, ID_CRIO);
	if (c) {
		CHECK_STR(c->namespace_name, "openshift-ingress");
		CHECK_STR(c->pod, "router-default-5f8c6b7d4-ab12c");
		CHECK_STR(c->container, "router");
		CHECK_STR(c->node, "worker-1.ocp.example.com");
		CHECK_STR(c->service_name, "openshift-ingress/router");
	}
	kube_container__free(c);
	kube_pods__free(pods);
	server_stop(server);

	server = server_start("secret-one", "ip-10-0-3-17.ec2.internal");
	server_serve_file(server, 200, "pods-docker.json");
	pods = start_cache(server, "ip-10-0-3-17.ec2.internal", NULL);
	c = lookup_eventually(pods, ID_DOCKER);
	if (c) {
		CHECK_STR(c->namespace_name, "batch");
		CHECK_STR(c->container, "worker");
		/* \u00e9 escapes decoded to UTF-8. */
		CHECK_STR(c->service_name, "legacy/worker \xc3\xa9t\xc3\xa9");
	}
	kube_container__free(c);
	kube_pods__free(pods);
	server_stop(server);
}

/* A container the cache does not know asks for a refresh; the next list has it. */
static void test_miss_refreshes(void)
{
	struct api_server *server = server_start("secret-one", "node-a");
	struct kube_pods_options options = {.refresh_interval_ms = 3600 * 1000};
	struct kube_pods *pods;
	struct kube_container *c = NULL;
	uint64_t start, elapsed;
	int requests;

	write_token("secret-one");
	server_serve_file(server, 200, "pods-node-a.json");
	pods = start_cache(server, "node-a", &options);
	kube_container__free(lookup_eventually(pods, ID_APP));

	/* The interval is an hour: only the miss can bring the new pod in. */
	server_serve_file(server, 200, "pods-node-a-new-pod.json");
	CHECK_EQ_U64(kube_pods__lookup(pods, ID_NEW, &c), (uint64_t)-EAGAIN);
	c = lookup_eventually(pods, ID_NEW);
	if (c) {
		CHECK_STR(c->pod, "checkout-7d9c5b7f8-k4m2n");
		CHECK_STR(c->service_name, "shop/app");
	}
	kube_container__free(c);
	CHECK_EQ_U64(stats_of(pods).pods, 4);
	kube_pods__free(pods);
	server_stop(server);

	/* Misses are rate-limited: a burst of unknown ids within one gap is one refresh. */
	server = server_start("secret-one", "node-a");
	server_serve_file(server, 200, "pods-node-a.json");
	options = (struct kube_pods_options){.refresh_interval_ms = 3600 * 1000,
					     .miss_refresh_gap_ms = 400};
	pods = start_cache(server, "node-a", &options);
	wait_refresh_after(pods, 0);
	requests = server_requests(server);
	start = now_ms();
	for (int i = 0; i < 50; i++) {
		char id[65];

		snprintf(id, sizeof(id), "%064x", 0xabc000 + i);
		CHECK_EQ_U64(kube_pods__lookup(pods, id, &c), (uint64_t)-EAGAIN);
		sleep_ms(10);
	}
	/* About 500 ms of misses, at most one refresh per 400 ms: one or two requests (more
	 * only if this machine stretched the loop). */
	elapsed = now_ms() - start;
	CHECK(server_requests(server) - requests >= 1);
	CHECK((uint64_t)(server_requests(server) - requests) <= elapsed / 400 + 1);
	kube_pods__free(pods);
	server_stop(server);
}

/* Without any lookup, the interval alone picks up a new pod. */
static void test_interval_refreshes(void)
{
	struct api_server *server = server_start("secret-one", "node-a");
	struct kube_pods_options options = {.refresh_interval_ms = 100};
	struct kube_pods *pods;
	struct kube_container *c = NULL;
	uint64_t deadline;

	write_token("secret-one");
	server_serve_file(server, 200, "pods-node-a.json");
	pods = start_cache(server, "node-a", &options);
	wait_refresh_after(pods, 0);
	server_serve_file(server, 200, "pods-node-a-new-pod.json");
	deadline = now_ms() + WAIT_MS;
	while (stats_of(pods).pods != 4 && now_ms() < deadline)
		sleep_ms(5);
	CHECK_EQ_U64(stats_of(pods).pods, 4);
	/* Found at its first lookup. */
	CHECK_EQ_U64(kube_pods__lookup(pods, ID_NEW, &c), 0);
	kube_container__free(c);
	kube_pods__free(pods);
	server_stop(server);
}

/* Asks for a refresh through a miss on a fresh id and waits for one that saw the server's
 * answer as it was after its first requests_before requests. */
static void refresh_now(struct kube_pods *pods, int requests_before)
{
	static int nth;
	struct kube_container *c = NULL;
	char id[65];

	snprintf(id, sizeof(id), "%064x", 0x5eed00 + ++nth);
	CHECK_EQ_U64(kube_pods__lookup(pods, id, &c), (uint64_t)-EAGAIN);
	wait_refresh_after(pods, (uint64_t)requests_before);
}

/* A refused token is an error with the previous cache intact; the token is re-read before
 * every request, so a rotated one is used at the next refresh. */
static void test_token_rotation(void)
{
	struct api_server *server = server_start("secret-one", "node-a");
	struct kube_pods *pods;
	struct kube_container *c = NULL;
	struct kube_pods_stats stats;
	uint64_t errors, deadline;
	int requests;

	write_token("secret-one");
	server_serve_file(server, 200, "pods-node-a.json");
	pods = start_cache(server, "node-a", NULL);
	kube_container__free(lookup_eventually(pods, ID_APP));

	/* The server moved on to a new token; the file still holds the old one. */
	errors = stats_of(pods).refresh_errors;
	requests = server_set_token(server, "secret-two");
	CHECK_EQ_U64(
	    kube_pods__lookup(
		pods, "1111111111111111111111111111111111111111111111111111111111111111", &c),
	    (uint64_t)-EAGAIN);
	wait_refresh_after(pods, (uint64_t)requests);
	stats = stats_of(pods);
	CHECK(stats.refresh_errors > errors);
	CHECK_EQ_U64(stats.last_http_status, 401);
	CHECK(strstr(stats.last_error, "HTTP 401") != NULL);
	CHECK(strstr(stats.last_error, "token") != NULL);
	/* Never the token itself. */
	CHECK(strstr(stats.last_error, "secret") == NULL);
	CHECK_EQ_U64(stats.pods, 3);
	CHECK_EQ_U64(kube_pods__lookup(pods, ID_APP, &c), 0);
	kube_container__free(c);

	/* The kubelet writes the new token: the next refresh that reads it succeeds. */
	write_token("secret-two\n");
	deadline = now_ms() + WAIT_MS;
	do {
		refresh_now(pods, server_requests(server));
		stats = stats_of(pods);
	} while (stats.last_error[0] && now_ms() < deadline);
	CHECK_EQ_U64(stats.last_http_status, 200);
	CHECK_STR(stats.last_error, "");
	pthread_mutex_lock(&server->lock);
	CHECK_STR(server->last_authorization, "Bearer secret-two");
	pthread_mutex_unlock(&server->lock);
	kube_pods__free(pods);
	server_stop(server);
}

static void check_cache_intact(struct kube_pods *pods)
{
	struct kube_container *c = NULL;

	CHECK_EQ_U64(stats_of(pods).pods, 3);
	CHECK_EQ_U64(kube_pods__lookup(pods, ID_APP, &c), 0);
	if (c)
		CHECK_STR(c->pod, "checkout-7d9c5b7f8-x2x9q");
	kube_container__free(c);
}

static void test_forbidden_keeps_cache(void)
{
	struct api_server *server = server_start("secret-one", "node-a");
	struct kube_pods *pods;
	struct kube_pods_stats stats, before;

	write_token("secret-one");
	server_serve_file(server, 200, "pods-node-a.json");
	pods = start_cache(server, "node-a", NULL);
	kube_container__free(lookup_eventually(pods, ID_APP));

	before = stats_of(pods);
	refresh_now(pods, server_serve_file(server, 403, "status-403.json"));
	stats = stats_of(pods);
	CHECK_EQ_U64(stats.last_http_status, 403);
	CHECK(stats.refresh_errors > before.refresh_errors);
	CHECK(stats.refreshes <= before.refreshes + 1); /* one may have been on its way */
	/* The server's own words and what to do. */
	CHECK(strstr(stats.last_error, "HTTP 403") != NULL);
	CHECK(strstr(stats.last_error, "cannot list resource \"pods\"") != NULL);
	CHECK(strstr(stats.last_error, "rbac.yaml") != NULL);
	check_cache_intact(pods);

	/* Back to normal: the error clears. */
	refresh_now(pods, server_serve_file(server, 200, "pods-node-a.json"));
	CHECK_STR(stats_of(pods).last_error, "");
	kube_pods__free(pods);
	server_stop(server);
}

static void test_malformed_answers_refused(void)
{
	static const struct {
		const char *what, *body;
	} bad[] = {
	    {"empty", ""},
	    {"not JSON", "<html>Service Unavailable</html>"},
	    {"unterminated", "{\"kind\":\"PodList\",\"items\":["},
	    {"trailing comma", "{\"kind\":\"PodList\",\"items\":[],}"},
	    {"trailing comma in array", "{\"kind\":\"PodList\",\"items\":[{\"metadata\":{\"name\":"
					"\"a\",\"namespace\":\"b\",\"uid\":\"c\"}},]}"},
	    {"comment", "{\"kind\":\"PodList\",/* x */\"items\":[]}"},
	    {"single quotes", "{'kind':'PodList','items':[]}"},
	    {"leading zero", "{\"kind\":\"PodList\",\"n\":012,\"items\":[]}"},
	    {"bare decimal point", "{\"kind\":\"PodList\",\"n\":1.,\"items\":[]}"},
	    {"bad literal", "{\"kind\":\"PodList\",\"ok\":tru,\"items\":[]}"},
	    {"bad escape", "{\"kind\":\"PodList\",\"x\":\"\\q\",\"items\":[]}"},
	    {"lone surrogate", "{\"kind\":\"PodList\",\"x\":\"\\ud800\",\"items\":[]}"},
	    {"invalid UTF-8", "{\"kind\":\"PodList\",\"x\":\"\xc3\x28\",\"items\":[]}"},
	    {"overlong UTF-8", "{\"kind\":\"PodList\",\"x\":\"\xc0\xaf\",\"items\":[]}"},
	    {"control character", "{\"kind\":\"PodList\",\"x\":\"a\tb\",\"items\":[]}"},
	    {"data after the end", "{\"kind\":\"PodList\",\"items\":[]} {}"},
	    {"two values", "{\"kind\":\"PodList\",\"items\":[]}]"},
	    {"a Status with 200", "{\"kind\":\"Status\",\"message\":\"x\"}"},
	    {"no items", "{\"kind\":\"PodList\",\"metadata\":{}}"},
	    {"items not an array", "{\"kind\":\"PodList\",\"items\":{}}"},
	    {"top level array", "[]"},
	    {"duplicate key", "{\"kind\":\"PodList\",\"items\":[],\"items\":[]}"},
	    {"pod without a name", "{\"kind\":\"PodList\",\"items\":[{\"metadata\":{\"namespace\":"
				   "\"b\",\"uid\":\"c\"},\"spec\":{\"nodeName\":\"node-a\"}}]}"},
	    {"label value not a string",
	     "{\"kind\":\"PodList\",\"items\":[{\"metadata\":{\"name\":\"a\",\"namespace\":\"b\","
	     "\"uid\":\"c\",\"labels\":{\"k\":1}},\"spec\":{\"nodeName\":\"node-a\"}}]}"},
	    {"name with NUL", "{\"kind\":\"PodList\",\"items\":[{\"metadata\":{\"name\":"
			      "\"a\\u0000b\",\"namespace\":\"b\",\"uid\":\"c\"}}]}"},
	    {"container status without a name",
	     "{\"kind\":\"PodList\",\"items\":[{\"metadata\":{\"name\":\"a\",\"namespace\":\"b\","
	     "\"uid\":\"c\"},\"status\":{\"containerStatuses\":[{\"containerID\":\"containerd:/"
	     "/" ID_NEW "\"}]}}]}"},
	    {"container listed twice",
	     "{\"kind\":\"PodList\",\"items\":[{\"metadata\":{\"name\":\"a\",\"namespace\":\"b\","
	     "\"uid\":\"c\"},\"spec\":{\"nodeName\":\"node-a\"},\"status\":{\"containerStatuses\":["
	     "{\"name\":\"x\",\"containerID\":\"containerd://" ID_NEW
	     "\"},{\"name\":\"y\",\"containerID\":\"containerd://" ID_NEW "\"}]}}]}"},
	};
	struct api_server *server = server_start("secret-one", "node-a");
	struct kube_pods *pods;
	char deep[512], *truncated, *long_name;
	size_t len;

	write_token("secret-one");
	server_serve_file(server, 200, "pods-node-a.json");
	pods = start_cache(server, "node-a", NULL);
	kube_container__free(lookup_eventually(pods, ID_APP));

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct kube_pods_stats stats;
		uint64_t errors = stats_of(pods).refresh_errors;

		refresh_now(pods, server_set_body(server, 200, bad[i].body, strlen(bad[i].body)));
		stats = stats_of(pods);
		if (stats.refresh_errors <= errors || !strstr(stats.last_error, "malformed")) {
			fprintf(stderr, "  %s: accepted, or not said: errors %" PRIu64 ", \"%s\"\n",
				bad[i].what, stats.refresh_errors - errors, stats.last_error);
			unit_case_failures++;
		}
		check_cache_intact(pods);
	}

	/* Nested past the bound (in a field that is skipped: the bound holds everywhere). */
	len = (size_t)snprintf(deep, sizeof(deep), "{\"kind\":\"PodList\",\"x\":");
	memset(deep + len, '[', 100);
	memset(deep + len + 100, ']', 100);
	len += 200;
	len += (size_t)snprintf(deep + len, sizeof(deep) - len, ",\"items\":[]}");
	refresh_now(pods, server_set_body(server, 200, deep, len));
	CHECK(strstr(stats_of(pods).last_error, "nested deeper") != NULL);
	check_cache_intact(pods);

	/* A recorded list cut in the middle, as a dropped connection leaves it. */
	truncated = read_file("pods-node-a.json", &len);
	refresh_now(pods, server_set_body(server, 200, truncated, len / 2));
	CHECK(strstr(stats_of(pods).last_error, "malformed") != NULL);
	check_cache_intact(pods);
	free(truncated);

	/* A kept string past its bound. */
	long_name = malloc(10000);
	len = (size_t)snprintf(long_name, 10000,
			       "{\"kind\":\"PodList\",\"items\":[{\"metadata\":{\"name\":\"");
	memset(long_name + len, 'x', 5000);
	len += 5000;
	len += (size_t)snprintf(long_name + len, 10000 - len,
				"\",\"namespace\":\"b\",\"uid\":\"c\"}}]}");
	refresh_now(pods, server_set_body(server, 200, long_name, len));
	CHECK(strstr(stats_of(pods).last_error, "longer than 4096 bytes") != NULL);
	check_cache_intact(pods);
	free(long_name);

	/* And what strictness must still accept: escapes, surrogate pairs, numbers, nulls,
	 * whitespace, unknown fields, an empty list. */
	{
		static const char good[] =
		    " {\"apiVersion\":\"v1\",\"kind\":\"PodList\",\"metadata\":{\"x\":[1,-0,"
		    "2.5e+10,3E-2,true,false,null,{}]},\"items\":[{\"metadata\":{\"name\":\"p\","
		    "\"namespace\":\"n\",\"uid\":\"u\",\"labels\":{\"emoji\":\"\\ud83d\\ude00\","
		    "\"slash\":\"a\\/b\"},\"annotations\":null},\"spec\":{\"nodeName\":\"node-a\"},"
		    "\"status\":{\"containerStatuses\":null,\"initContainerStatuses\":[{\"name\":"
		    "\"c\",\"containerID\":\"cri-o://" ID_NEW "\"}]}}]}\r\n\t ";
		struct kube_container *c = NULL;

		refresh_now(pods, server_set_body(server, 200, good, strlen(good)));
		CHECK_STR(stats_of(pods).last_error, "");
		CHECK_EQ_U64(stats_of(pods).pods, 1);
		CHECK_EQ_U64(kube_pods__lookup(pods, ID_NEW, &c), 0);
		if (c) {
			CHECK_STR(label_value(c, "emoji"), "\xf0\x9f\x98\x80");
			CHECK_STR(label_value(c, "slash"), "a/b");
			CHECK_STR(c->service_name, "n/c");
		}
		kube_container__free(c);
		refresh_now(
		    pods, server_set_body(server, 200, "{\"kind\":\"PodList\",\"items\":[]}", 29));
		CHECK_STR(stats_of(pods).last_error, "");
		CHECK_EQ_U64(stats_of(pods).pods, 0);
	}
	kube_pods__free(pods);
	server_stop(server);
}

static void test_connection_errors(void)
{
	struct kube_pods_options options = {.refresh_interval_ms = 3600 * 1000};
	struct api_server *server;
	struct kube_pods *pods;
	struct kube_pods_stats stats;
	char url[64];
	uint16_t port;

	/* A port nothing listens on: take one, then close it. */
	server = server_start("secret-one", "node-a");
	port = server->port;
	server_stop(server);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u", port);
	options.api_server = url;
	write_token("secret-one");
	pods = start_cache(NULL, "node-a", &options);
	wait_refresh_after(pods, 0);
	stats = stats_of(pods);
	CHECK_EQ_U64(stats.refreshes, 0);
	CHECK_EQ_U64(stats.refresh_errors, 1);
	CHECK_EQ_U64(stats.last_http_status, 0);
	CHECK(strstr(stats.last_error, url) != NULL);
	CHECK(strstr(stats.last_error, "reachable") != NULL);
	kube_pods__free(pods);

	/* No token file. */
	server = server_start("secret-one", "node-a");
	server_serve_file(server, 200, "pods-node-a.json");
	options = (struct kube_pods_options){.token_path = "/nonexistent/allocscope/token"};
	pods = start_cache(server, "node-a", &options);
	wait_refresh_after(pods, 0);
	stats = stats_of(pods);
	CHECK(strstr(stats.last_error, "cannot read the service account token "
				       "/nonexistent/allocscope/token") != NULL);
	CHECK_EQ_U64(server_requests(server), 0);
	kube_pods__free(pods);

	/* An answer past max_response_bytes. */
	options = (struct kube_pods_options){.max_response_bytes = 4096};
	pods = start_cache(server, "node-a", &options);
	wait_refresh_after(pods, 0);
	stats = stats_of(pods);
	CHECK(strstr(stats.last_error, "larger than 4096 bytes") != NULL);
	CHECK_EQ_U64(stats.pods, 0);
	kube_pods__free(pods);

	/* The server does not answer within the request timeout. */
	server_set_delay(server, 800);
	options = (struct kube_pods_options){.request_timeout_ms = 200};
	pods = start_cache(server, "node-a", &options);
	wait_refresh_after(pods, 0);
	CHECK(strstr(stats_of(pods).last_error, "timed out") != NULL);
	kube_pods__free(pods);
	server_stop(server);
}

/* A lookup takes no longer with a server that takes a second to answer, and freeing the
 * cache abandons the request in flight. */
static void test_lookups_never_wait(void)
{
	struct api_server *server = server_start("secret-one", "node-a");
	struct kube_pods *pods;
	struct kube_container *c = NULL;
	uint64_t start, took;

	write_token("secret-one");
	server_serve_file(server, 200, "pods-node-a.json");
	server_set_delay(server, 1500);
	pods = start_cache(server, "node-a", NULL);
	sleep_ms(100); /* the first request is in flight */
	start = now_ms();
	for (int i = 0; i < 100; i++)
		CHECK_EQ_U64(kube_pods__lookup(pods, ID_APP, &c), (uint64_t)-EAGAIN);
	took = now_ms() - start;
	CHECK(took < 100);
	start = now_ms();
	kube_pods__free(pods);
	took = now_ms() - start;
	CHECK(took < 300);
	server_stop(server);
}

/* A lookup of an id no pod on the node has: -EAGAIN until a list taken miss_settle_ms after
 * the first lookup still lacks it, then -ENOENT. */
static void test_unlisted_settles(void)
{
	struct api_server *server = server_start("secret-one", "node-a");
	struct kube_pods_options options = {.miss_settle_ms = 150};
	struct kube_pods *pods;
	struct kube_container *c = NULL;
	uint64_t deadline;
	int ret;

	write_token("secret-one");
	server_serve_file(server, 200, "pods-node-a.json");
	pods = start_cache(server, "node-a", &options);
	kube_container__free(lookup_eventually(pods, ID_APP));
	CHECK_EQ_U64(kube_pods__lookup(pods, ID_OTHER_NODE, &c), (uint64_t)-EAGAIN);
	deadline = now_ms() + WAIT_MS;
	do {
		sleep_ms(10);
		ret = kube_pods__lookup(pods, ID_OTHER_NODE, &c);
	} while (ret == -EAGAIN && now_ms() < deadline);
	CHECK_EQ_U64(ret, (uint64_t)-ENOENT);
	/* A pod scheduled later is found by a periodic refresh all the same. */
	kube_pods__free(pods);
	server_stop(server);
}

/* The reader alone: a node with no pods (or none with a running container yet) lists
 * nothing, which is an answer like any other; the fixture's pods of node-a are kept. */
static void test_parse_pod_list(void)
{
	static const char empty[] = "{\"kind\":\"PodList\",\"apiVersion\":\"v1\","
				    "\"metadata\":{\"resourceVersion\":\"912001\"},\"items\":[]}";
	size_t n_pods = 1, n_containers = 1, len;
	char err[512];
	char *text;

	CHECK_EQ_U64(kube_pods__parse_pod_list(empty, strlen(empty), "node-a", &n_pods,
					       &n_containers, err, sizeof(err)),
		     0);
	CHECK_EQ_U64(n_pods, 0);
	CHECK_EQ_U64(n_containers, 0);

	text = read_file("pods-node-a.json", &len);
	CHECK_EQ_U64(kube_pods__parse_pod_list(text, len, "node-a", &n_pods, &n_containers, err,
					       sizeof(err)),
		     0);
	CHECK_EQ_U64(n_pods, 3);
	CHECK(n_containers >= 3);
	/* Cut short: refused with where reading stopped. */
	CHECK_EQ_U64(kube_pods__parse_pod_list(text, len / 2, "node-a", &n_pods, &n_containers,
					       err, sizeof(err)),
		     (uint64_t)-EBADMSG);
	CHECK(strncmp(err, "byte ", 5) == 0);
	free(text);
}

static void test_options_refused(void)
{
	struct kube_pods_options options = {0};
	struct kube_pods *pods = NULL;
	char err[512];

	CHECK_EQ_U64(kube_pods__new(&options, &pods, err, sizeof(err)), (uint64_t)-EINVAL);
	CHECK(strstr(err, "NODE_NAME") != NULL);
	options.node_name = "Node_A";
	CHECK_EQ_U64(kube_pods__new(&options, &pods, err, sizeof(err)), (uint64_t)-EINVAL);
	CHECK(strstr(err, "not a Kubernetes node name") != NULL);
	options.node_name = "node-a";
	options.api_server = "ftp://10.96.0.1";
	CHECK_EQ_U64(kube_pods__new(&options, &pods, err, sizeof(err)), (uint64_t)-EINVAL);
	options.api_server = "https://";
	CHECK_EQ_U64(kube_pods__new(&options, &pods, err, sizeof(err)), (uint64_t)-EINVAL);
	options.api_server = "https://10.96.0.1/?x=1";
	CHECK_EQ_U64(kube_pods__new(&options, &pods, err, sizeof(err)), (uint64_t)-EINVAL);
	options.api_server = NULL;
	unsetenv("KUBERNETES_SERVICE_HOST");
	CHECK_EQ_U64(kube_pods__new(&options, &pods, err, sizeof(err)), (uint64_t)-EINVAL);
	CHECK(strstr(err, "KUBERNETES_SERVICE_HOST") != NULL);
	CHECK(pods == NULL);

	/* From the environment every pod has: starts (the request fails later, in the stats). */
	setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1", 1);
	setenv("KUBERNETES_SERVICE_PORT", "1", 1);
	options.token_path = "";
	CHECK_EQ_U64(kube_pods__new(&options, &pods, err, sizeof(err)), 0);
	if (pods) {
		wait_refresh_after(pods, 0);
		CHECK(strstr(stats_of(pods).last_error, "https://127.0.0.1:1/api/v1/pods") != NULL);
	}
	kube_pods__free(pods);
	kube_pods__free(NULL);
	kube_container__free(NULL);
}

int main(void)
{
	int fd = mkstemp(token_path);

	/* The refresh thread warns about every failure these cases provoke on purpose. */
	log_set_level(LOG_ERROR);
	if (fd < 0) {
		perror("mkstemp");
		return 2;
	}
	close(fd);
	RUN(test_containerd_pods);
	RUN(test_crio_and_docker_pods);
	RUN(test_miss_refreshes);
	RUN(test_interval_refreshes);
	RUN(test_token_rotation);
	RUN(test_forbidden_keeps_cache);
	RUN(test_malformed_answers_refused);
	RUN(test_connection_errors);
	RUN(test_lookups_never_wait);
	RUN(test_unlisted_settles);
	RUN(test_options_refused);
	RUN(test_parse_pod_list);
	unlink(token_path);
	return unit_summary("kube_pods");
}
