/* The benchmark's yardstick for kernel entry cost on this machine: a getppid() loop. A uprobe
 * hit is a trap into the kernel, so its floor moves with this figure from machine to machine.
 *
 *   syscall_loop [--iterations N]      prints "ns_per_call X"
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

int main(int argc, char **argv)
{
	long iterations = 1000000;
	struct timespec start, end;

	if (argc == 3 && strcmp(argv[1], "--iterations") == 0)
		iterations = atol(argv[2]);
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (long i = 0; i < iterations; i++)
		syscall(SYS_getppid);
	clock_gettime(CLOCK_MONOTONIC, &end);
	printf("ns_per_call %.1f\n",
	       ((end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec)) / iterations);
	return 0;
}
