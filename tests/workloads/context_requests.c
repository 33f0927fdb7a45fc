/* A request server in miniature for the request-context tests (issue 15): worker threads
 * serve simulated requests for a few endpoints and tenants, each request publishing its
 * endpoint and tenant with liballocscope-context around a known allocation mix made in a
 * function of its own (export_report, create_order, health_check), and allocating between
 * requests with no context (idle_work). With --switch, a thread interleaves two requests
 * (as an async runtime does): its context changes mid-stream, and each allocation must get
 * the labels of the request it was made for. With --torn, some allocations (torn_work) are
 * made while the record is marked invalid (valid = 0, a writer caught mid-update).
 *
 * Prints a manifest, one line per (function, endpoint, tenant): "ctx FUNCTION|ENDPOINT|TENANT
 * SIZE COUNT" (- for no label), for the test to compare against the profile.
 *
 * With --trace, each request also publishes a trace and span id; --delay-ms waits before the
 * first request. With --undumpable, the process turns its dumpable flag off
 * (prctl(PR_SET_DUMPABLE, 0), as keepers of secrets do) after that wait, before the first
 * request: a profiler acting for an unprivileged caller must then read none of its memory.
 *
 *   context_requests [--threads N] [--requests N] [--switch] [--torn] [--trace]
 *                    [--delay-ms N] [--undumpable] */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "allocscope_context.h"

/* Built with CONTEXT_DLOPEN: the writer is dlopen()ed at start instead of linked, so its TLS
 * is a module loaded at run time (dynamic TLS, reached through the thread's dtv, when glibc
 * gives it no static TLS: GLIBC_TUNABLES=glibc.rtld.optional_static_tls=0). */
#ifdef CONTEXT_DLOPEN
#include <dlfcn.h>

static int (*dl_init)(const char *const *, size_t);
static int (*dl_set)(uint8_t, const char *, size_t);
static void (*dl_set_trace)(const uint8_t *, const uint8_t *);
static void (*dl_clear)(void);
static int (*dl_push)(struct allocscope_context_scope *, uint8_t, const char *, size_t);
static void (*dl_pop)(struct allocscope_context_scope *);

static void load_writer(void)
{
	void *lib = dlopen(CONTEXT_DLOPEN, RTLD_NOW);

	if (!lib) {
		fprintf(stderr, "cannot load %s: %s\n", CONTEXT_DLOPEN, dlerror());
		exit(1);
	}
	dl_init = (int (*)(const char *const *, size_t))dlsym(lib, "allocscope_context_init");
	dl_set = (int (*)(uint8_t, const char *, size_t))dlsym(lib, "allocscope_context_set");
	dl_set_trace = (void (*)(const uint8_t *, const uint8_t *))dlsym(
		lib, "allocscope_context_set_trace");
	dl_clear = (void (*)(void))dlsym(lib, "allocscope_context_clear");
	dl_push = (int (*)(struct allocscope_context_scope *, uint8_t, const char *,
			   size_t))dlsym(lib, "allocscope_context_push");
	dl_pop = (void (*)(struct allocscope_context_scope *))dlsym(lib, "allocscope_context_pop");
	if (!dl_init || !dl_set || !dl_set_trace || !dl_clear || !dl_push || !dl_pop) {
		fprintf(stderr, "%s lacks the writer's functions\n", CONTEXT_DLOPEN);
		exit(1);
	}
}
#define allocscope_context_init dl_init
#define allocscope_context_set dl_set
#define allocscope_context_set_trace dl_set_trace
#define allocscope_context_clear dl_clear
#define allocscope_context_push dl_push
#define allocscope_context_pop dl_pop
#else
static void load_writer(void)
{
}
#endif

enum { KEY_ENDPOINT, KEY_TENANT };
static const char *const keys[] = { "endpoint", "tenant" };

static const char *const tenants[] = { "acme", "globex" };

struct endpoint {
	const char *name;
	size_t size;  /* bytes per allocation */
	size_t count; /* allocations per request */
};

static const struct endpoint endpoints[] = {
	{ "GET /reports/export", 4096, 24 },
	{ "POST /orders", 512, 16 },
	{ "GET /health", 64, 8 },
};
#define N_ENDPOINTS (sizeof(endpoints) / sizeof(endpoints[0]))

static int n_threads = 4, n_requests = 3000;
static int switching, torn, tracing, delay_ms;
/* Allocations made, per (endpoint, tenant), and idle and torn ones. */
static atomic_ulong made[N_ENDPOINTS][2], idle_made, torn_made;

/* Each thread's block, kept from being optimised away (freed through the local copy: the
 * global is shared). */
static void *volatile sink;

/* Each in a function of its own, so the test tells them apart by stack. */
__attribute__((noinline)) static void export_report(size_t size)
{
	void *p = malloc(size);

	sink = p;
	free(p);
}

__attribute__((noinline)) static void create_order(size_t size)
{
	void *p = malloc(size);

	sink = p;
	free(p);
}

__attribute__((noinline)) static void health_check(size_t size)
{
	void *p = malloc(size);

	sink = p;
	free(p);
}

__attribute__((noinline)) static void idle_work(size_t size)
{
	void *p = malloc(size);

	sink = p;
	free(p);
}

__attribute__((noinline, unused)) static void torn_work(size_t size)
{
	void *p = malloc(size);

	sink = p;
	free(p);
}

static void (*const handlers[N_ENDPOINTS])(size_t) = { export_report, create_order,
						       health_check };

static void enter(int e, int t)
{
	allocscope_context_set(KEY_ENDPOINT, endpoints[e].name, strlen(endpoints[e].name));
	allocscope_context_set(KEY_TENANT, tenants[t], strlen(tenants[t]));
}

static void *worker(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;

	for (int r = 0; r < n_requests; r++) {
		int e = (int)(rand_r(&seed) % N_ENDPOINTS), t = r & 1;
		int e2 = (e + 1) % N_ENDPOINTS, t2 = !t;
		const struct endpoint *ep = &endpoints[e], *ep2 = &endpoints[e2];

		if (tracing) {
			uint8_t trace_id[16], span_id[8];

			for (size_t i = 0; i < sizeof(trace_id); i++)
				trace_id[i] = (uint8_t)rand_r(&seed);
			for (size_t i = 0; i < sizeof(span_id); i++)
				span_id[i] = (uint8_t)(rand_r(&seed) | 1);
			allocscope_context_set_trace(trace_id, span_id);
		}

		if (switching) {
			/* Two requests in flight on this thread, one allocation each in turn:
			 * the context switches before every allocation. */
			for (size_t i = 0; i < ep->count || i < ep2->count; i++) {
				if (i < ep->count) {
					enter(e, t);
					handlers[e](ep->size);
				}
				if (i < ep2->count) {
					enter(e2, t2);
					handlers[e2](ep2->size);
				}
			}
			made[e][t] += ep->count;
			made[e2][t2] += ep2->count;
		} else {
			struct allocscope_context_scope endpoint_scope, tenant_scope;

			allocscope_context_push(&endpoint_scope, KEY_ENDPOINT, ep->name,
						strlen(ep->name));
			allocscope_context_push(&tenant_scope, KEY_TENANT, tenants[t],
						strlen(tenants[t]));
			for (size_t i = 0; i < ep->count; i++)
				handlers[e](ep->size);
			allocscope_context_pop(&tenant_scope);
			allocscope_context_pop(&endpoint_scope);
			made[e][t] += ep->count;
		}
#ifndef CONTEXT_DLOPEN
		if (torn) {
			enter(e, t);
			/* A writer caught mid-update: readers must skip the record. */
			__atomic_store_n(&otel_thread_ctx_v1->valid, 0, __ATOMIC_RELAXED);
			__atomic_signal_fence(__ATOMIC_SEQ_CST);
			for (int i = 0; i < 4; i++)
				torn_work(4096);
			__atomic_signal_fence(__ATOMIC_SEQ_CST);
			__atomic_store_n(&otel_thread_ctx_v1->valid, 1, __ATOMIC_RELAXED);
			torn_made += 4;
		}
#endif
		/* Between requests: no context at all. */
		allocscope_context_clear();
		for (int i = 0; i < 8; i++)
			idle_work(1024);
		idle_made += 8;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t threads[64];
	int undumpable = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
			n_threads = atoi(argv[++i]);
		else if (strcmp(argv[i], "--requests") == 0 && i + 1 < argc)
			n_requests = atoi(argv[++i]);
		else if (strcmp(argv[i], "--switch") == 0)
			switching = 1;
		else if (strcmp(argv[i], "--torn") == 0)
			torn = 1;
		else if (strcmp(argv[i], "--trace") == 0)
			tracing = 1;
		else if (strcmp(argv[i], "--delay-ms") == 0 && i + 1 < argc)
			delay_ms = atoi(argv[++i]);
		else if (strcmp(argv[i], "--undumpable") == 0)
			undumpable = 1;
		else {
			fprintf(stderr,
				"usage: %s [--threads N] [--requests N] [--switch] [--torn] "
				"[--trace] [--delay-ms N] [--undumpable]\n",
				argv[0]);
			return 2;
		}
	}
	if (n_threads < 1 || n_threads > 64)
		n_threads = 4;
	load_writer();
#ifdef CONTEXT_DLOPEN
	torn = 0; /* the record is reached through the library, not otel_thread_ctx_v1 here */
#endif
	if (allocscope_context_init(keys, 2) != 0) {
		fprintf(stderr, "cannot publish the process context\n");
		return 1;
	}
	/* A profiler that started this program finds its context once the loader has mapped the
	 * library: give it that moment before the first request. */
	if (delay_ms > 0)
		usleep((useconds_t)delay_ms * 1000);
	if (undumpable && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
		perror("prctl(PR_SET_DUMPABLE, 0)");
		return 1;
	}
	for (int i = 0; i < n_threads; i++)
		pthread_create(&threads[i], NULL, worker, (void *)(uintptr_t)(i + 1));
	for (int i = 0; i < n_threads; i++)
		pthread_join(threads[i], NULL);
	for (size_t e = 0; e < N_ENDPOINTS; e++)
		for (int t = 0; t < 2; t++)
			printf("ctx %s|%s|%s %zu %lu\n",
			       handlers[e] == export_report  ? "export_report"
			       : handlers[e] == create_order ? "create_order"
							     : "health_check",
			       endpoints[e].name, tenants[t], endpoints[e].size,
			       (unsigned long)made[e][t]);
	printf("ctx idle_work|-|- 1024 %lu\n", (unsigned long)idle_made);
	if (torn)
		printf("ctx torn_work|-|- 4096 %lu\n", (unsigned long)torn_made);
	return 0;
}
