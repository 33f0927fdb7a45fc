/*
 * Workload for the stack walk's depth limit (tests/e2e/depth_tests.py): site_deep allocates at
 * the bottom of a recursion DEPTH frames of about 100 bytes below main (deeper than the walk's
 * 512 frames), site_shallow right under main. Built with frame pointers like the other
 * workloads, so every unwinding mode walks it. Prints the manifest ("site NAME SIZE COUNT").
 *
 *   deep_recursion [--wait] [--depth DEPTH]   (DEPTH 1 .. 100000, default 700)
 *     --wait     print "ready PID" and wait for SIGUSR1 before allocating (attach first)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SIZE  4096
#define COUNT 2000

static volatile sig_atomic_t started;

static void on_start(int sig)
{
	started = 1;
}

__attribute__((noinline)) static void site_deep(void)
{
	for (int i = 0; i < COUNT; i++) {
		void *p = malloc(SIZE);

		__asm__ volatile("" : : "r"(p) : "memory");
		free(p);
	}
}

__attribute__((noinline)) static void site_shallow(void)
{
	for (int i = 0; i < COUNT; i++) {
		void *p = malloc(SIZE);

		__asm__ volatile("" : : "r"(p) : "memory");
		free(p);
	}
}

/* depth frames, this one included, above site_deep. */
__attribute__((noinline)) static void descend(long depth)
{
	char frame[64];

	__asm__ volatile("" : : "r"(frame) : "memory");
	if (depth <= 1)
		site_deep();
	else
		descend(depth - 1);
	__asm__ volatile("" : : "r"(frame) : "memory");
}

int main(int argc, char **argv)
{
	long depth = 700;
	int wait = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--wait") == 0)
			wait = 1;
		else if (strcmp(argv[i], "--depth") == 0 && i + 1 < argc)
			depth = atol(argv[++i]);
		else
			depth = -1;
	}
	if (depth < 1 || depth > 100000) {
		fprintf(stderr, "usage: %s [--wait] [--depth DEPTH]\n", argv[0]);
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
	descend(depth);
	site_shallow();
	printf("site site_deep %d %d\n", SIZE, COUNT);
	printf("site site_shallow %d %d\n", SIZE, COUNT);
	return 0;
}
