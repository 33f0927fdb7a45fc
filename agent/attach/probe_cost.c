/* Start-up calibration of the probe-hit cost. The probed function is written in assembly so
 * its first instruction is exactly `push %rbp` whatever the compiler flags: the same
 * instruction, the same emulation, as the allocator entries the agent probes. */
#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <bpf/libbpf.h>

#include "alloc_program.h"
#include "probe_cost.h"

#define CALLS_PER_ROUND 2000
#define ROUNDS 5

__asm__(".text\n"
	".globl allocscope_probe_calibration\n"
	".type allocscope_probe_calibration, @function\n"
	"allocscope_probe_calibration:\n"
	"\tpush %rbp\n"
	"\tmov %rsp, %rbp\n"
	"\tpop %rbp\n"
	"\tret\n"
	".size allocscope_probe_calibration, .-allocscope_probe_calibration\n");

void allocscope_probe_calibration(unsigned long size);

/* Calls through a volatile pointer so the loop cannot be folded away. */
static void (*volatile calibration_call)(unsigned long) = allocscope_probe_calibration;

static double round_ns(void)
{
	struct timespec start, end;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (int i = 0; i < CALLS_PER_ROUND; i++)
		calibration_call(1); /* one byte: the countdown path, never a sample in practice */
	clock_gettime(CLOCK_MONOTONIC, &end);
	return ((end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec)) /
	       CALLS_PER_ROUND;
}

static int compare_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int probe_cost__measure(struct alloc_program *prog, double *ns_per_hit)
{
	LIBBPF_OPTS(bpf_uprobe_opts, opts, .func_name = "allocscope_probe_calibration");
	struct bpf_program *program = alloc_program__for_entry(prog, ALLOC_ENTRY_MALLOC);
	double plain[ROUNDS], probed[ROUNDS];
	struct bpf_link *link;

	for (int i = 0; i < ROUNDS; i++)
		plain[i] = round_ns();
	link = bpf_program__attach_uprobe_opts(program, getpid(), "/proc/self/exe", 0, &opts);
	if (!link)
		return errno ? -errno : -EINVAL;
	for (int i = 0; i < ROUNDS; i++)
		probed[i] = round_ns();
	bpf_link__destroy(link);
	qsort(plain, ROUNDS, sizeof(plain[0]), compare_double);
	qsort(probed, ROUNDS, sizeof(probed[0]), compare_double);
	*ns_per_hit = probed[ROUNDS / 2] - plain[ROUNDS / 2];
	if (*ns_per_hit < 0)
		*ns_per_hit = 0;
	return 0;
}
