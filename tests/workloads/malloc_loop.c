/* The benchmark's workload: a tight malloc/free loop that reports nanoseconds per iteration.
 *
 *   malloc_loop [--wait] [--size BYTES] [--iterations N] [--aligned] [--undumpable]
 *               [--no-free] [--exec PROG ARGS...]
 *     --wait     print "ready PID" and wait for SIGUSR1 (attach first), then run
 *     --aligned  allocate with aligned_alloc(64, size) instead of malloc(size)
 *     --undumpable  prctl(PR_SET_DUMPABLE, 0) before the loop (as keepers of secrets do)
 *     --no-free  never free (the allocation side alone, e.g. without a free probe)
 *     --exec     after the loop, replace this process with PROG ARGS (a target that execs
 *                something else)
 *   prints "ns_per_call X" on completion: one allocation plus its free
 */
#include <signal.h>
#include <sys/prctl.h>
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

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	long iterations = 2000000, size = 64;
	int wait = 0, aligned = 0, undumpable = 0, no_free = 0;
	char **exec_argv = NULL;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--wait") == 0)
			wait = 1;
		else if (strcmp(argv[i], "--aligned") == 0)
			aligned = 1;
		else if (strcmp(argv[i], "--undumpable") == 0)
			undumpable = 1;
		else if (strcmp(argv[i], "--no-free") == 0)
			no_free = 1;
		else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc)
			size = atol(argv[++i]);
		else if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc)
			iterations = atol(argv[++i]);
		else if (strcmp(argv[i], "--exec") == 0 && i + 1 < argc) {
			exec_argv = &argv[i + 1];
			break;
		} else {
			fprintf(stderr, "usage: %s [--wait] [--size B] [--iterations N] [--aligned] "
				"[--no-free]\n",
				argv[0]);
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
	if (undumpable && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
		perror("prctl");
		return 1;
	}
	double start = now_ns();
	for (long i = 0; i < iterations; i++) {
		void *p = aligned ? aligned_alloc(64, size) : malloc(size);
		__asm__ volatile("" : : "r"(p) : "memory");
		if (!no_free)
			free(p);
	}
	double elapsed = now_ns() - start;
	printf("ns_per_call %.1f\n", elapsed / iterations);
	if (exec_argv) {
		execv(exec_argv[0], exec_argv);
		perror("exec");
		return 1;
	}
	return 0;
}
