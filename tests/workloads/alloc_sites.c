/* A workload with known allocation totals per call site, for the end-to-end tests and the
 * demo. Each site_* function allocates through a different glibc entry point; the manifest it
 * prints, one line per site and request size ("site NAME SIZE COUNT"), is the truth the
 * profile's estimates are checked against.
 *
 *   alloc_sites [--wait] [--deep] [--scale N]
 *     --wait     print "ready PID" and wait for SIGUSR1 before allocating (attach first)
 *     --deep     only site_deep_recursion: an allocation 200 frames of 1 KiB below main
 *     --scale N  multiply every site's call count by N (default 1)
 *     --rounds N --round-ms M  a steady workload: the sites' calls spread evenly over N
 *                rounds, round r starting at r x M ms on the clock whatever the previous one
 *                took (the overhead budget's duty cycle scales estimates by wall time); the
 *                manifest then has a line per site and round
 *     --spin-us U  and U microseconds of CPU work without allocating in each round (a process
 *                whose probes cost it a share of its CPU, not many times it)
 */
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long scale = 1;
static volatile sig_atomic_t started;

/* Keeps the compiler from proving an allocation dead. */
static void touch(void *p)
{
	if (!p)
		abort();
	__asm__ volatile("" : : "r"(p) : "memory");
}

static void manifest(const char *site, unsigned long long size, unsigned long long count)
{
	printf("site %s %llu %llu\n", site, size, count);
}

__attribute__((noinline)) void site_malloc_small(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = malloc(100);
		touch(p);
		free(p);
	}
	manifest(__func__, 100, n);
}

__attribute__((noinline)) void site_calloc(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = calloc(32, 128);
		touch(p);
		free(p);
	}
	manifest(__func__, 4096, n);
}

__attribute__((noinline)) void site_malloc_large(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = malloc(1 << 20);
		touch(p);
		free(p);
	}
	manifest(__func__, 1 << 20, n);
}

/* malloc(1024) then a realloc that grows it: both are this site's allocations. */
__attribute__((noinline)) void site_realloc(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = malloc(1024);
		touch(p);
		p = realloc(p, 65536);
		touch(p);
		free(p);
	}
	manifest(__func__, 1024, n);
	manifest(__func__, 65536, n);
}

/* realloc(NULL, n) is malloc: it must be counted once, not twice. */
__attribute__((noinline)) void site_realloc_null(long n)
{
	for (long i = 0; i < n; i++) {
		/* volatile: gcc would otherwise rewrite realloc(NULL, n) into malloc(n). */
		void *volatile no_block = NULL;
		void *p = realloc(no_block, 2048);
		touch(p);
		free(p);
	}
	manifest(__func__, 2048, n);
}

__attribute__((noinline)) void site_aligned_alloc(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = aligned_alloc(64, 8192);
		touch(p);
		free(p);
	}
	manifest(__func__, 8192, n);
}

__attribute__((noinline)) void site_posix_memalign(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = NULL;
		if (posix_memalign(&p, 4096, 16384) != 0)
			abort();
		touch(p);
		free(p);
	}
	manifest(__func__, 16384, n);
}

__attribute__((noinline)) void site_valloc(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = valloc(4096);
		touch(p);
		free(p);
	}
	manifest(__func__, 4096, n);
}

/* An allocation in a helper that is always inlined: with DWARF, the profile shows
 * make_buffer as an inline frame inside site_inlined. */
static inline __attribute__((always_inline)) void *make_buffer(size_t size)
{
	void *p = malloc(size);

	touch(p);
	return p;
}

__attribute__((noinline)) void site_inlined(long n)
{
	for (long i = 0; i < n; i++)
		free(make_buffer(3000));
	manifest(__func__, 3000, n);
}

/* An allocation under 200 frames of 1 KiB each (--deep only): 200 KiB of stack between the
 * allocation and main, past any stack copy; the kernel's table walk reaches main. */
#define DEEP_FRAMES 200

__attribute__((noinline)) long deep_frame(int depth, long n)
{
	volatile char frame[1024];

	frame[0] = (char)depth;
	frame[sizeof(frame) - 1] = 0;
	if (depth == 0) {
		for (long i = 0; i < n; i++) {
			void *p = malloc(4096);

			touch(p);
			free(p);
		}
		return frame[0];
	}
	/* Not a tail call: the frame stays. */
	return deep_frame(depth - 1, n) + frame[sizeof(frame) - 1];
}

__attribute__((noinline)) void site_deep_recursion(long n)
{
	deep_frame(DEEP_FRAMES - 1, n);
	manifest(__func__, 4096, n);
}

/* Two threads: each has its own countdown in the kernel. */
static long thread_calls;

__attribute__((noinline)) void site_thread_malloc(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = malloc(256);
		touch(p);
		free(p);
	}
}

static void *thread_main(void *arg)
{
	site_thread_malloc(thread_calls);
	return NULL;
}

static void run_threads(long n)
{
	pthread_t threads[2];

	thread_calls = n;
	for (int i = 0; i < 2; i++)
		if (pthread_create(&threads[i], NULL, thread_main, NULL) != 0)
			abort();
	for (int i = 0; i < 2; i++)
		pthread_join(threads[i], NULL);
	manifest("site_thread_malloc", 256, 2 * n);
}

/* CPU work without allocations: spins until the process has used us more microseconds. */
static void spin(long us)
{
	struct timespec ts;
	long long until;

	if (us <= 0)
		return;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	until = (long long)ts.tv_sec * 1000000000 + ts.tv_nsec + us * 1000ll;
	do
		clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	while ((long long)ts.tv_sec * 1000000000 + ts.tv_nsec < until);
}

/* Round r's part of total calls over rounds, spread so that every round gets its share. */
static long share(long total, long r, long rounds)
{
	return total * (r + 1) / rounds - total * r / rounds;
}

static void on_start(int sig)
{
	started = 1;
}

int main(int argc, char **argv)
{
	int wait = 0, deep = 0;
	long rounds = 1, round_ms = 0, spin_us = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--deep") == 0)
			deep = 1;
		else if (strcmp(argv[i], "--wait") == 0)
			wait = 1;
		else if (strcmp(argv[i], "--scale") == 0 && i + 1 < argc)
			scale = atol(argv[++i]);
		else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
			rounds = atol(argv[++i]);
		else if (strcmp(argv[i], "--round-ms") == 0 && i + 1 < argc)
			round_ms = atol(argv[++i]);
		else if (strcmp(argv[i], "--spin-us") == 0 && i + 1 < argc)
			spin_us = atol(argv[++i]);
		else {
			fprintf(stderr, "usage: %s [--wait] [--deep] [--scale N] [--rounds N "
				"--round-ms M]\n", argv[0]);
			return 2;
		}
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
	/* ~370k calls: a few seconds under probes on a VM where a trap costs microseconds. */
	if (deep) {
		site_deep_recursion(20000 * scale);
		printf("done\n");
		return 0;
	}
	if (rounds < 1)
		rounds = 1;
	struct timespec begin;

	clock_gettime(CLOCK_MONOTONIC, &begin);
	for (long r = 0; r < rounds; r++) {
		if (round_ms) {
			long long at = (long long)begin.tv_sec * 1000000000 + begin.tv_nsec +
				       (long long)r * round_ms * 1000000;
			struct timespec when = { at / 1000000000, at % 1000000000 };

			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &when, NULL))
				;
		}
		site_malloc_small(share(200000 * scale, r, rounds));
		site_calloc(share(20000 * scale, r, rounds));
		site_malloc_large(share(100 * scale, r, rounds));
		site_realloc(share(5000 * scale, r, rounds));
		site_realloc_null(share(20000 * scale, r, rounds));
		site_aligned_alloc(share(10000 * scale, r, rounds));
		site_posix_memalign(share(5000 * scale, r, rounds));
		site_valloc(share(5000 * scale, r, rounds));
		site_inlined(share(10000 * scale, r, rounds));
		run_threads(share(50000 * scale, r, rounds));
		spin(spin_us);
	}
	printf("done\n");
	return 0;
}
