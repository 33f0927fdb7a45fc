/* A busy service in miniature for the real-server tests: many worker processes, each
 * allocating from many distinct call stacks, so that one interval's profile has more
 * (pid, stack) pairs and more bytes than a server's default limits take (Pyroscope: 16,000
 * samples, 2 MiB). The stacks come from a chain of DEPTH levels, each with two functions
 * (fan_N_0 and fan_N_1); the bits of a counter choose which one each level calls, so one
 * round makes 2^DEPTH distinct stacks that all end in fan_leaf.
 *
 *   stack_fanout [--wait] [--workers N] [--stacks N] [--rounds N] [--round-ms MS]
 *     --wait      print "ready PID", wait for SIGUSR1, fork the workers, and start them at a
 *                 second SIGUSR1 (a profiler that follows forks can attach to each first)
 *     --workers   worker processes (default 8)
 *     --stacks    distinct stacks per worker, 1 .. 4096 (default 4096)
 *     --rounds    passes over every stack per worker (default 1)
 *     --round-ms  each pass is spread over this long (default 0: as fast as it goes), which
 *                 keeps the samples from arriving all at once
 *
 * Prints the manifest ("site fan_leaf SIZE COUNT") of what the workers allocated together.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#define DEPTH 12
#define LEAF_SIZE 65536

static volatile sig_atomic_t started;

static void on_start(int sig)
{
	(void)sig;
	started = 1;
}

__attribute__((noinline)) void fan_leaf(void)
{
	void *p = malloc(LEAF_SIZE);

	if (!p)
		abort();
	__asm__ volatile("" : : "r"(p) : "memory");
	free(p);
}

/* Level N calls level N+1's function chosen by bit N of path; the leaf follows level DEPTH-1.
 * The empty asm after each call keeps it from being a tail call, so every level is a frame. */
#define LEVEL(n, next0, next1)                                                                \
	__attribute__((noinline)) void fan_##n##_0(unsigned path);                           \
	__attribute__((noinline)) void fan_##n##_1(unsigned path);                           \
	__attribute__((noinline)) void fan_##n##_0(unsigned path)                            \
	{                                                                                     \
		if (path & (1u << ((n) + 1)))                                                 \
			next1;                                                                \
		else                                                                          \
			next0;                                                                \
		__asm__ volatile("");                                                         \
	}                                                                                     \
	__attribute__((noinline)) void fan_##n##_1(unsigned path)                            \
	{                                                                                     \
		if (path & (1u << ((n) + 1)))                                                 \
			next1;                                                                \
		else                                                                          \
			next0;                                                                \
		__asm__ volatile("");                                                         \
	}

LEVEL(11, fan_leaf(), fan_leaf())
LEVEL(10, fan_11_0(path), fan_11_1(path))
LEVEL(9, fan_10_0(path), fan_10_1(path))
LEVEL(8, fan_9_0(path), fan_9_1(path))
LEVEL(7, fan_8_0(path), fan_8_1(path))
LEVEL(6, fan_7_0(path), fan_7_1(path))
LEVEL(5, fan_6_0(path), fan_6_1(path))
LEVEL(4, fan_5_0(path), fan_5_1(path))
LEVEL(3, fan_4_0(path), fan_4_1(path))
LEVEL(2, fan_3_0(path), fan_3_1(path))
LEVEL(1, fan_2_0(path), fan_2_1(path))
LEVEL(0, fan_1_0(path), fan_1_1(path))

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Level 11's two functions both call the leaf, but from different functions: 2^12 stacks. */
static void worker(long stacks, long rounds, long round_ms)
{
	for (long r = 0; r < rounds; r++) {
		double started = now_ms();

		for (unsigned path = 0; path < (unsigned)stacks; path++) {
			/* Every 64 stacks, wait until this pass's share of round_ms has passed. */
			double ahead = started + (double)round_ms * path / stacks - now_ms();

			if (path % 64 == 0 && ahead > 0)
				usleep((useconds_t)(ahead * 1000));
			if (path & 1u)
				fan_0_1(path);
			else
				fan_0_0(path);
		}
		double left = round_ms - (now_ms() - started);
		if (left > 0)
			usleep((useconds_t)(left * 1000));
	}
}

int main(int argc, char **argv)
{
	long workers = 8, rounds = 1, stacks = 1L << DEPTH, round_ms = 0;
	int wait_signal = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--wait") == 0)
			wait_signal = 1;
		else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc)
			workers = atol(argv[++i]);
		else if (strcmp(argv[i], "--stacks") == 0 && i + 1 < argc)
			stacks = atol(argv[++i]);
		else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
			rounds = atol(argv[++i]);
		else if (strcmp(argv[i], "--round-ms") == 0 && i + 1 < argc)
			round_ms = atol(argv[++i]);
		else {
			fprintf(stderr, "usage: %s [--wait] [--workers N] [--stacks N] [--rounds N] "
					"[--round-ms MS]\n", argv[0]);
			return 2;
		}
	}
	if (workers < 1 || workers > 256 || stacks < 1 || stacks > (1L << DEPTH) || rounds < 1 ||
	    round_ms < 0 || round_ms > 60000) {
		fprintf(stderr, "stack_fanout: --workers 1..256, --stacks 1..%ld, --rounds >= 1, "
				"--round-ms 0..60000\n", 1L << DEPTH);
		return 2;
	}
	/* The workers wait for the write end of this pipe to close: they start together. */
	int gate[2];

	if (pipe(gate) < 0) {
		perror("pipe");
		return 1;
	}
	signal(SIGUSR1, on_start);
	if (wait_signal) {
		printf("ready %d\n", getpid());
		fflush(stdout);
		while (!started)
			pause();
		started = 0;
	}
	for (long i = 0; i < workers; i++) {
		pid_t pid = fork();

		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0) {
			char byte;

			close(gate[1]);
			while (read(gate[0], &byte, 1) < 0)
				;
			worker(stacks, rounds, round_ms);
			_exit(0);
		}
	}
	close(gate[0]);
	if (wait_signal) {
		while (!started)
			pause();
	}
	close(gate[1]);
	int failed = 0;
	for (long i = 0; i < workers; i++) {
		int status;

		if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failed = 1;
	}
	if (failed) {
		fprintf(stderr, "stack_fanout: a worker failed\n");
		return 1;
	}
	printf("site fan_leaf %d %ld\n", LEAF_SIZE, workers * rounds * stacks);
	return 0;
}
