/* Start-up calibration of the probe-hit cost. The probed function is written in assembly so
 * its first instruction is exactly `push %rbp` whatever the compiler flags: the same
 * instruction, the same emulation, as the allocator entries the agent probes. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <bpf/libbpf.h>

#include "alloc_program.h"
#include "probe_cost.h"

#define CALLS_PER_ROUND 1000
/* The fastest of several rounds: on a busy machine a round is often preempted, which only ever
 * adds time (the median of 5 moved between 1.2 and 3.2 us from one start to the next here; the
 * overhead budget's controller works from it). */
#define ROUNDS 9

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

/* The file offset of the calibration function in /proc/self/exe, from the mapping that holds
 * it (the agent may be position-independent or not; the mapping says either way). */
static int calibration_file_offset(uint64_t *offset)
{
	uintptr_t address = (uintptr_t)allocscope_probe_calibration;
	char line[512];
	FILE *maps = fopen("/proc/self/maps", "re");
	int ret = -ENOENT;

	if (!maps)
		return -errno;
	while (fgets(line, sizeof(line), maps)) {
		uintptr_t start, end;
		uint64_t file_offset;

		if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %*s %" SCNx64, &start, &end,
			   &file_offset) != 3)
			continue;
		if (address >= start && address < end) {
			*offset = address - start + file_offset;
			ret = 0;
			break;
		}
	}
	fclose(maps);
	return ret;
}

/* The probe the way targets get theirs: a uprobe_multi link where the kernel has them, else a
 * perf-event uprobe. Returns 0 with *link set, or -errno. */
static int attach_calibration_probe(struct alloc_program *prog, uint64_t offset,
				    struct bpf_link **link)
{
	const enum alloc_entry entry = ALLOC_ENTRY_MALLOC;
	LIBBPF_OPTS(bpf_uprobe_opts, opts, .bpf_cookie = entry);

	*link = NULL;
	if (alloc_program__has_multi(prog)) {
		uint64_t cookie = entry;

		return alloc_program__attach_multi(prog, getpid(), "/proc/self/exe", &offset, NULL,
						   &cookie, 1, link);
	}
	*link = bpf_program__attach_uprobe_opts(alloc_program__for_entry(prog, entry), getpid(),
						"/proc/self/exe", offset, &opts);
	if (!*link)
		return errno ? -errno : -EINVAL;
	return 0;
}

int probe_cost__measure(struct alloc_program *prog, double *ns_per_hit)
{
	double plain[ROUNDS], probed[ROUNDS];
	struct bpf_link *link;
	uint64_t offset = 0;
	int ret;

	ret = calibration_file_offset(&offset);
	if (ret)
		return ret;
	for (int i = 0; i < ROUNDS; i++)
		plain[i] = round_ns();
	ret = attach_calibration_probe(prog, offset, &link);
	if (ret)
		return ret;
	for (int i = 0; i < ROUNDS; i++)
		probed[i] = round_ns();
	bpf_link__destroy(link);
	qsort(plain, ROUNDS, sizeof(plain[0]), compare_double);
	qsort(probed, ROUNDS, sizeof(probed[0]), compare_double);
	*ns_per_hit = probed[0] - plain[0];
	if (*ns_per_hit < 0)
		*ns_per_hit = 0;
	return 0;
}
