/* Two versions of one program, for the service_version tests: site_steady allocates the same
 * in every build, site_grows allocates GROWS times as much in a build made with -DGROWS=N
 * (the Makefile's build has GROWS 1). Different code, so each build has its own GNU build id.
 * The manifest ("site NAME SIZE COUNT") is the truth.
 *
 *   version_sites [--wait]
 *     --wait  print "ready PID" and wait for SIGUSR1 before allocating (attach first)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef GROWS
#define GROWS 1
#endif
#define SIZE  65536
#define CALLS 2000

static volatile sig_atomic_t started;

static void on_start(int sig)
{
	started = 1;
}

__attribute__((noinline)) static void allocate(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = malloc(SIZE);

		if (!p)
			abort();
		__asm__ volatile("" : : "r"(p) : "memory");
		free(p);
	}
}

__attribute__((noinline)) void site_steady(void)
{
	allocate(CALLS);
	printf("site %s %d %d\n", __func__, SIZE, CALLS);
}

__attribute__((noinline)) void site_grows(void)
{
	allocate((long)CALLS * GROWS);
	printf("site %s %d %d\n", __func__, SIZE, CALLS * GROWS);
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "--wait") == 0) {
		sigset_t usr1, old;

		/* Blocked until sigsuspend, so a signal sent right after "ready" is not lost. */
		sigemptyset(&usr1);
		sigaddset(&usr1, SIGUSR1);
		sigprocmask(SIG_BLOCK, &usr1, &old);
		signal(SIGUSR1, on_start);
		printf("ready %d\n", (int)getpid());
		fflush(stdout);
		while (!started)
			sigsuspend(&old);
		sigprocmask(SIG_SETMASK, &old, NULL);
	}
	site_steady();
	site_grows();
	return 0;
}
