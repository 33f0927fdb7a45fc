/* Request-context benchmarks (tests/bench/context.py):
 *
 *   context_writer set [N]   ns per allocscope_context_set (a value of the same length
 *                            replaced, the common case: the next request's endpoint), and
 *                            per push + pop pair
 *   context_writer [loop] [--wait] [--iterations N]
 *                            publishes two attributes (endpoint, tenant), then a malloc/free
 *                            loop printing "ns_per_call X": under allocscope sampling every
 *                            call, the sampled path's cost with a context record to read */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "allocscope_context.h"

static volatile sig_atomic_t started;

static void on_start(int sig)
{
	(void)sig;
	started = 1;
}

static double now_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static const char *const keys[] = { "endpoint", "tenant" };

static int bench_set(long n)
{
	static const char *const values[] = { "GET /reports/export", "GET /reports/import" };
	struct allocscope_context_scope scope;
	double t0, t1, t2;

	allocscope_context_set(1, "acme", 4);
	/* Thread CPU time: on a shared machine, time preempted is not the writer's. */
	t0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
	for (long i = 0; i < n; i++)
		allocscope_context_set(0, values[i & 1], 19);
	t1 = now_ns(CLOCK_THREAD_CPUTIME_ID);
	for (long i = 0; i < n; i++) {
		allocscope_context_push(&scope, 0, values[i & 1], 19);
		allocscope_context_pop(&scope);
	}
	t2 = now_ns(CLOCK_THREAD_CPUTIME_ID);
	printf("ns_per_set %.2f\nns_per_push_pop %.2f\n", (t1 - t0) / n, (t2 - t1) / n);
	return 0;
}

static int bench_loop(int wait, long iterations)
{
	void *volatile sink;
	double t0, t1;

	allocscope_context_set(0, "GET /reports/export", 19);
	allocscope_context_set(1, "acme", 4);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (wait) {
		sigset_t block, old;

		signal(SIGUSR1, on_start);
		sigemptyset(&block);
		sigaddset(&block, SIGUSR1);
		sigprocmask(SIG_BLOCK, &block, &old);
		printf("ready %d\n", (int)getpid());
		while (!started)
			sigsuspend(&old);
		sigprocmask(SIG_SETMASK, &old, NULL);
	}
	t0 = now_ns(CLOCK_MONOTONIC);
	for (long i = 0; i < iterations; i++) {
		void *p = malloc(64);

		sink = p;
		free(p);
	}
	t1 = now_ns(CLOCK_MONOTONIC);
	(void)sink;
	printf("ns_per_call %.2f\n", (t1 - t0) / iterations);
	return 0;
}

int main(int argc, char **argv)
{
	long iterations = 200000;
	int wait = 0;

	if (allocscope_context_init(keys, 2) != 0) {
		fprintf(stderr, "cannot publish the process context\n");
		return 1;
	}
	if (argc >= 2 && strcmp(argv[1], "set") == 0)
		return bench_set(argc >= 3 ? atol(argv[2]) : 20000000);
	if (argc >= 2 && (strcmp(argv[1], "loop") == 0 || strcmp(argv[1], "--wait") == 0)) {
		for (int i = 1; i < argc; i++) {
			if (strcmp(argv[i], "--wait") == 0)
				wait = 1;
			else if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc)
				iterations = atol(argv[++i]);
		}
		return bench_loop(wait, iterations);
	}
	fprintf(stderr, "usage: %s set [N] | loop [--wait] [--iterations N]\n", argv[0]);
	return 2;
}
