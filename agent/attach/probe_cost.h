/* What one probe hit costs on this machine, measured at start-up rather than assumed: the
 * agent probes a function of its own whose first instruction is `push %rbp` (the instruction
 * glibc's malloc starts with, which the kernel emulates) with the real allocation program, and
 * times calls with and without the probe. The continuous agent reports probe hits times this
 * cost as its estimated overhead on the profiled processes. */
#ifndef ALLOCSCOPE_PROBE_COST_H
#define ALLOCSCOPE_PROBE_COST_H

struct alloc_program;

/* Nanoseconds per probe hit (trap, program, countdown), the fastest of a few rounds. Takes
 * ~20 ms. Returns 0 or -errno; the program's probe-hit counter includes the calibration's
 * hits (read it before and after). */
int probe_cost__measure(struct alloc_program *prog, double *ns_per_hit);

#endif
