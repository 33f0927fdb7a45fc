/*
 * Benchmark workload (tests/bench/unwind.py): a malloc/free loop run DEPTH frames of about
 * 100 bytes below main, timed; prints "ns_per_call X". Built with frame pointers like the
 * other workloads, so --unwind fp walks it as well as CFI does.
 *
 *   depth_loop [--wait] --depth DEPTH --iterations N
 *     --wait     print "ready PID" and wait for SIGUSR1 before the loop (attach first)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t started;

static void on_start(int sig)
{
	started = 1;
}

static double loop_ns(long iterations)
{
	struct timespec a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < iterations; i++) {
		void *p = malloc(64);

		__asm__ volatile("" : : "r"(p) : "memory");
		free(p);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / iterations;
}

__attribute__((noinline)) static double descend(int depth, long iterations)
{
	char frame[64];
	double ns;

	__asm__ volatile("" : : "r"(frame) : "memory");
	if (depth <= 1)
		return loop_ns(iterations);
	ns = descend(depth - 1, iterations);
	__asm__ volatile("" : : "r"(frame) : "memory");
	return ns + frame[0] * 0;
}

int main(int argc, char **argv)
{
	long depth = 0, iterations = 0;
	int wait = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--wait") == 0)
			wait = 1;
		else if (strcmp(argv[i], "--depth") == 0 && i + 1 < argc)
			depth = atol(argv[++i]);
		else if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc)
			iterations = atol(argv[++i]);
		else
			depth = -1;
	}
	if (depth < 1 || depth > 100000 || iterations < 1) {
		fprintf(stderr, "usage: %s [--wait] --depth DEPTH --iterations N\n", argv[0]);
		return 2;
	}
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
	/* main and the descent are frames too: DEPTH counts the whole stack below main. */
	printf("ns_per_call %.1f\n", descend((int)depth - 1, iterations));
	return 0;
}
