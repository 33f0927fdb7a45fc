/* A pre-fork server in miniature, for the continuous agent's tests: the parent forks workers
 * that never exec (as nginx, postgres or gunicorn do), and only the workers allocate. The
 * agent must follow the forks to profile them. Prints the manifest ("site NAME SIZE COUNT")
 * of everything the workers allocated together.
 *
 *   fork_workers [--wait] [--workers N] [--count N]
 *     --wait     print "ready PID" and wait for SIGUSR1 before forking
 *     --workers  how many workers (default 2)
 *     --count    allocations per worker (default 20000)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#define WORKER_SIZE 3000

static volatile sig_atomic_t started;

static void on_start(int sig)
{
	started = 1;
}

__attribute__((noinline)) void worker_alloc(long count)
{
	for (long i = 0; i < count; i++) {
		void *p = malloc(WORKER_SIZE);

		if (!p)
			abort();
		__asm__ volatile("" : : "r"(p) : "memory");
		free(p);
	}
}

int main(int argc, char **argv)
{
	long workers = 2, count = 20000;
	int wait_signal = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--wait") == 0)
			wait_signal = 1;
		else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc)
			workers = atol(argv[++i]);
		else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc)
			count = atol(argv[++i]);
	}
	if (wait_signal) {
		sigset_t mask, old;

		signal(SIGUSR1, on_start);
		sigemptyset(&mask);
		sigaddset(&mask, SIGUSR1);
		sigprocmask(SIG_BLOCK, &mask, &old);
		printf("ready %d\n", (int)getpid());
		fflush(stdout);
		while (!started)
			sigsuspend(&old);
	}
	for (long w = 0; w < workers; w++) {
		pid_t pid = fork();

		if (pid < 0)
			return 1;
		if (pid == 0) {
			/* Give the agent time to attach to the new worker, as a real server's
			 * worker would spend starting up before serving. */
			usleep(300 * 1000);
			worker_alloc(count);
			_exit(0);
		}
	}
	for (long w = 0; w < workers; w++)
		wait(NULL);
	printf("site worker_alloc %d %ld\n", WORKER_SIZE, workers * count);
	return 0;
}
