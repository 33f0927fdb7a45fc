/* A small C library and its test program, for the allocation gate (tests/e2e/gate_tests.py,
 * docs/ci-gate.md). The library parses "key=value,key=value,..." into a list:
 *
 *   kv_parse(text)   kv_list_new: 1 calloc (the list)
 *                    per pair: kv_node_new: 1 malloc (the node),
 *                              kv_copy: 2 mallocs (the key and the value, NUL-terminated)
 *
 * so a call on PAIRS ("a=1,bb=22,ccc=333", 3 pairs) makes exactly 10 allocations: 1 at
 * kv_list_new, 3 at kv_node_new, 6 at kv_copy. Built with -DGATE_EXTRA_ALLOC (the Makefile's
 * gate_workload_extra), kv_list_new also allocates an index: one more allocation per call at
 * the same site, the change a gate must catch.
 *
 *   gate_workload [-n CALLS] [-t THREADS] [-x STATUS] [-a] [-c]
 *     -n CALLS    kv_parse calls per thread (default 1000)
 *     -t THREADS  run the calls in THREADS threads at once (default 0: in main)
 *     -x STATUS   exit with STATUS after the work (a failing test)
 *     -a          also assert with allocs_per_run (allocscope_count.h) that one call makes
 *                 at most 10 allocations; exit 3 when it makes more, 4 without the library
 *     -c          instead: CALLS rounds of two callbacks called from one call site through a
 *                 pointer, cb_one strdup'ing once and cb_two twice (libc allocates for them:
 *                 the sites are cb_one, CALLS allocations, and cb_two, 2 * CALLS)
 *     -l FILE     instead: CALLS rounds of outer_x and outer_y, which call lib_a and lib_b
 *                 through one pointer call site (outer_x: each once; outer_y: lib_a twice,
 *                 lib_b three times); lib_a and lib_b each read FILE with fopen and getline,
 *                 strdup and asprintf: nested frames inside libc allocate for them (K
 *                 allocations per call, K fixed by libc): sites lib_a 3 * K * CALLS, lib_b
 *                 4 * K * CALLS; functions outer_x 2 * K * CALLS, outer_y 5 * K * CALLS
 * Prints nothing on success (stdio would allocate its buffer: one more allocation). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../sampler/allocscope_count.h"

#define PAIRS "a=1,bb=22,ccc=333"

struct kv_node {
	struct kv_node *next;
	char *key, *value;
};

struct kv_list {
	struct kv_node *head;
	size_t count;
	void *index;
};

__attribute__((noinline)) struct kv_list *kv_list_new(void)
{
	struct kv_list *list = calloc(1, sizeof(*list));

	if (!list)
		abort();
#ifdef GATE_EXTRA_ALLOC
	list->index = malloc(64);
	if (!list->index)
		abort();
#endif
	return list;
}

__attribute__((noinline)) char *kv_copy(const char *text, size_t len)
{
	char *copy = malloc(len + 1);

	if (!copy)
		abort();
	memcpy(copy, text, len);
	copy[len] = '\0';
	return copy;
}

__attribute__((noinline)) struct kv_node *kv_node_new(void)
{
	struct kv_node *node = malloc(sizeof(*node));

	if (!node)
		abort();
	return node;
}

__attribute__((noinline)) struct kv_list *kv_parse(const char *text)
{
	struct kv_list *list = kv_list_new();

	while (*text) {
		const char *eq = strchr(text, '='), *end = strchr(text, ',');
		struct kv_node *node;

		if (!end)
			end = text + strlen(text);
		if (!eq || eq > end)
			abort();
		node = kv_node_new();
		node->key = kv_copy(text, (size_t)(eq - text));
		node->value = kv_copy(eq + 1, (size_t)(end - eq - 1));
		node->next = list->head;
		list->head = node;
		list->count++;
		text = *end ? end + 1 : end;
	}
	return list;
}

void kv_free(struct kv_list *list)
{
	while (list->head) {
		struct kv_node *node = list->head;

		list->head = node->next;
		free(node->key);
		free(node->value);
		free(node);
	}
	free(list->index);
	free(list);
}

/* ---- the test program ---- */

__attribute__((noinline)) void cb_one(void)
{
	free(strdup("one"));
}

__attribute__((noinline)) void cb_two(void)
{
	free(strdup("two"));
	free(strdup("two"));
}

static void (*volatile callbacks[2])(void) = { cb_one, cb_two };

__attribute__((noinline)) void run_callbacks(long rounds)
{
	for (long i = 0; i < rounds; i++)
		for (int k = 0; k < 2; k++)
			callbacks[k]();
}

/* fopen, getline (its line and the stream's buffer), strdup, asprintf: one copy per user. */
#define LIBC_WORK(path)                                                                            \
	do {                                                                                       \
		FILE *f = fopen(path, "r");                                                        \
		char *line = NULL, *text;                                                          \
		size_t cap = 0;                                                                    \
                                                                                                   \
		if (!f)                                                                            \
			abort();                                                                   \
		while (getline(&line, &cap, f) > 0)                                                \
			;                                                                          \
		fclose(f);                                                                         \
		free(line);                                                                        \
		free(strdup(path));                                                                \
		if (asprintf(&text, "%s:%d", path, 42) < 0)                                        \
			abort();                                                                   \
		free(text);                                                                        \
	} while (0)

__attribute__((noinline)) void lib_a(const char *path)
{
	LIBC_WORK(path);
}

__attribute__((noinline)) void lib_b(const char *path)
{
	LIBC_WORK(path);
}

static void (*volatile lib_users[2])(const char *) = { lib_a, lib_b };

/* One call site for both users (not a tail call): only the return address into lib_a or
 * lib_b tells them apart; each outer function calls it from one call site too. */
__attribute__((noinline)) void via_pointer(int k, const char *path)
{
	lib_users[k](path);
	__asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void outer_x(const char *path)
{
	for (int k = 0; k < 2; k++)
		via_pointer(k, path);
	__asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void outer_y(const char *path)
{
	for (int k = 0; k < 5; k++)
		via_pointer(k >= 2, path);
	__asm__ volatile("" ::: "memory");
}

static long calls = 1000;

static void parse_once(void *arg)
{
	kv_free(kv_parse(arg));
}

static void *run_calls(void *arg)
{
	for (long i = 0; i < calls; i++)
		parse_once(PAIRS);
	return arg;
}

int main(int argc, char **argv)
{
	pthread_t threads[64];
	long n_threads = 0;
	const char *lib_file = NULL;
	int status = 0, check = 0, opt;

	while ((opt = getopt(argc, argv, "n:t:x:acl:")) != -1) {
		if (opt == 'n')
			calls = atol(optarg);
		else if (opt == 't')
			n_threads = atol(optarg);
		else if (opt == 'x')
			status = atoi(optarg);
		else if (opt == 'a')
			check = 1;
		else if (opt == 'c')
			check = 2;
		else if (opt == 'l')
			lib_file = optarg;
		else
			return 2;
	}
	if (n_threads < 0 || n_threads > 64)
		return 2;
	if (lib_file) {
		for (long i = 0; i < calls; i++) {
			outer_x(lib_file);
			outer_y(lib_file);
		}
		return status;
	}
	if (check == 2) {
		run_callbacks(calls);
		return status;
	}
	if (check) {
		double per_run = allocs_per_run(100, parse_once, PAIRS);

		if (per_run == INFINITY)
			return 4;
		if (per_run > 10)
			return 3;
	}
	if (!n_threads)
		run_calls(NULL);
	for (long i = 0; i < n_threads; i++)
		if (pthread_create(&threads[i], NULL, run_calls, NULL) != 0)
			return 2;
	for (long i = 0; i < n_threads; i++)
		pthread_join(threads[i], NULL);
	return status;
}
