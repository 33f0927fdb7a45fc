/* Workload for in-use (live heap) profiles (tests/e2e/inuse_tests.py): sites whose live and
 * allocated totals are known exactly, then exit without freeing what is kept. It prints one
 * manifest line per site and size class:
 *
 *   alloc SITE SIZE COUNT      COUNT allocations of SIZE bytes made at SITE
 *   live SITE SIZE COUNT       of which COUNT of SIZE bytes are still live at exit
 *
 * Sites:
 *   keep_site     2000 x 16 KiB, all kept                  (a cache that is merely big)
 *   free_site     4000 x 16 KiB, all freed                 (churn: nothing live)
 *   grow_site     10 rounds x 200 x 8 KiB, kept            (grows by 1.6 MB a round)
 *   realloc_site  2000 chains of realloc 4 KiB -> 32 KiB,  (each realloc frees the block
 *                 the last block of each kept               before: only 32 KiB live)
 *   calloc_site   1000 x calloc(1, 4 KiB), kept
 *   memalign_site 1000 x posix_memalign(64, 4 KiB), kept     (the pointer comes through
 *                                                            memptr, not the return value)
 *   aligned_site  1000 x aligned_alloc(64, 4 KiB), kept
 *   aligned_free_site 1000 x aligned_alloc(64, 4 KiB), freed
 * (alignment 64: glibc does not hand these to malloc; its aligned entry points are probed
 * past their first instruction, so a return seen there is a return seen at an offset).
 * -s MS sleeps MS milliseconds between grow rounds (a capture sees the growth); -H MS holds
 * everything for MS milliseconds after the manifest, then exits (the continuous agent takes
 * in-use snapshots meanwhile); --wait prints "ready PID" and waits for SIGUSR1 first (attach
 * then). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t started;

static void on_start(int sig)
{
	(void)sig;
	started = 1;
}

static void wait_for_start(void)
{
	sigset_t block, old;

	signal(SIGUSR1, on_start);
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigprocmask(SIG_BLOCK, &block, &old);
	printf("ready %d\n", (int)getpid());
	fflush(stdout);
	while (!started)
		sigsuspend(&old);
	sigprocmask(SIG_SETMASK, &old, NULL);
}

static void *volatile sink;
static void **kept;
static size_t n_kept;

static void keep(void *ptr)
{
	if (!ptr) {
		fprintf(stderr, "allocation failed\n");
		exit(2);
	}
	memset(ptr, 1, 64);
	kept[n_kept++] = ptr;
}

__attribute__((noinline)) static void keep_site(void)
{
	for (int i = 0; i < 2000; i++)
		keep(malloc(16384));
}

__attribute__((noinline)) static void free_site(void)
{
	for (int i = 0; i < 4000; i++) {
		sink = malloc(16384);
		free(sink);
	}
}

__attribute__((noinline)) static void grow_site(void)
{
	for (int i = 0; i < 200; i++)
		keep(malloc(8192));
}

__attribute__((noinline)) static void calloc_site(void)
{
	for (int i = 0; i < 1000; i++)
		keep(calloc(1, 4096));
}

__attribute__((noinline)) static void memalign_site(void)
{
	for (int i = 0; i < 1000; i++) {
		void *ptr = NULL;

		if (posix_memalign(&ptr, 64, 4096) != 0)
			ptr = NULL;
		keep(ptr);
	}
}

__attribute__((noinline)) static void aligned_site(void)
{
	for (int i = 0; i < 1000; i++)
		keep(aligned_alloc(64, 4096));
}

__attribute__((noinline)) static void aligned_free_site(void)
{
	for (int i = 0; i < 1000; i++) {
		sink = aligned_alloc(64, 4096);
		free(sink);
	}
}

__attribute__((noinline)) static void *realloc_site(void *ptr, size_t size)
{
	return realloc(ptr, size);
}

int main(int argc, char **argv)
{
	long sleep_ms = 0, hold_ms = 0;
	struct timespec pause, hold;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
			sleep_ms = atol(argv[++i]);
		} else if (strcmp(argv[i], "-H") == 0 && i + 1 < argc) {
			hold_ms = atol(argv[++i]);
		} else if (strcmp(argv[i], "--wait") == 0) {
			wait_for_start();
		} else {
			fprintf(stderr, "usage: %s [--wait] [-s MS] [-H MS]\n", argv[0]);
			return 2;
		}
	}
	pause = (struct timespec){ sleep_ms / 1000, (sleep_ms % 1000) * 1000000 };
	hold = (struct timespec){ hold_ms / 1000, (hold_ms % 1000) * 1000000 };

	kept = calloc(2000 + 2000 + 2000 + 3000, sizeof(*kept));
	if (!kept)
		return 2;
	keep_site();
	free_site();
	for (int round = 0; round < 10; round++) {
		grow_site();
		if (sleep_ms)
			nanosleep(&pause, NULL);
	}
	for (int chain = 0; chain < 2000; chain++) {
		void *ptr = NULL;

		for (size_t size = 4096; size <= 32768; size *= 2) {
			ptr = realloc_site(ptr, size);
			if (!ptr)
				return 2;
		}
		keep(ptr);
	}
	calloc_site();
	memalign_site();
	aligned_site();
	aligned_free_site();
	printf("alloc keep_site 16384 2000\nlive keep_site 16384 2000\n");
	printf("alloc free_site 16384 4000\n");
	printf("alloc grow_site 8192 2000\nlive grow_site 8192 2000\n");
	for (size_t size = 4096; size <= 32768; size *= 2)
		printf("alloc realloc_site %zu 2000\n", size);
	printf("live realloc_site 32768 2000\n");
	printf("alloc calloc_site 4096 1000\nlive calloc_site 4096 1000\n");
	printf("alloc memalign_site 4096 1000\nlive memalign_site 4096 1000\n");
	printf("alloc aligned_site 4096 1000\nlive aligned_site 4096 1000\n");
	printf("alloc aligned_free_site 4096 1000\n");
	fflush(stdout);
	if (hold_ms)
		nanosleep(&hold, NULL);
	return 0;
}
