/* Probes for one target process: find the allocators among the files the process maps, and
 * attach a uprobe on each entry point with the process's pid, so breakpoints exist only in its
 * address space and every other process using the same library runs untouched.
 *
 * Which malloc a process calls: its executable's when the executable defines one (a static
 * glibc, jemalloc or tcmalloc), else a library's other than glibc's (linked or preloaded, it
 * interposes glibc), else glibc's. Allocators with prefixed names (jemalloc as je_* or Rust's
 * _rjem_*, mimalloc's mi_* and tcmalloc's tc_* built without overriding malloc) and operator
 * new where it does not reach malloc are probed beside it, in whichever file they are. So a
 * process may have probes in several files: each file's entry points share one uprobe_multi
 * link where the kernel has those (Linux 6.6+), else each gets a perf-event uprobe of its own. */
#ifndef ALLOCSCOPE_PROCESS_PROBES_H
#define ALLOCSCOPE_PROCESS_PROBES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

struct alloc_program;
struct process_probes;

/* Attaches to pid. When command is not NULL, pid has not exec'ed it yet: the files examined
 * are command's executable and the libraries its dynamic loader will load, instead of those in
 * /proc/PID/maps (for a script, /proc/PID/maps is used, as the interpreter is not known).
 * Returns 0, or -errno with a sentence for the user in err:
 *   -ESRCH no such process; -ENOTSUP its malloc comes from an allocator allocscope does not
 *   recognize (the sentence names the file); -ENOENT no malloc found (not mapped yet, or a
 *   stripped static binary); others: the attach itself failed. */
int process_probes__attach(struct alloc_program *prog, pid_t pid, const char *command,
			   struct process_probes **out, char *err, size_t err_len);
/* What process_probes__attach_with can change from process_probes__attach's defaults. */
struct process_probes_opts {
	/* In-use tracking (free probes, the session link) for this process: the continuous
	 * agent's per-rule `inuse`; only when the program tracks live allocations.
	 * process_probes__attach: alloc_program__tracks_live(prog). */
	bool inuse;
	/* The overhead budget: the probes' hits counted in this probe_hits slot
	 * (alloc_program__hit_slot_new; 0: the shared slot). A cooperative process's USDT
	 * probes always count in slot 0: they are never under a budget. */
	uint32_t hit_slot;
};
int process_probes__attach_with(struct alloc_program *prog, pid_t pid, const char *command,
				const struct process_probes_opts *opts, struct process_probes **out,
				char *err, size_t err_len);
/* The overhead budget's duty cycle. Pause moves every link (session links too: the frees of
 * an in-use process go unseen while paused) into *detached, a probes object
 * holding only links, for the caller to free off its loop (detach_queue__push: each link's
 * detach waits for an RCU grace period); the probes' files and offsets stay. Resume attaches
 * them again (-errno with a sentence in err; -ESRCH when the process is gone). Both do nothing
 * when already in that state. */
int process_probes__pause(struct process_probes *probes, struct process_probes **detached);
int process_probes__resume(struct alloc_program *prog, struct process_probes *probes, char *err,
			   size_t err_len);
bool process_probes__paused(const struct process_probes *probes);
/* Detaches every probe; accepts NULL. */
void process_probes__free(struct process_probes *probes);

/* Entry points probed, over all files. */
size_t process_probes__count(const struct process_probes *probes);
/* Kernel links the process holds: 1 per probed file with uprobe_multi links, else one per
 * entry point (each of those also holds a perf event: two descriptors). Each costs an RCU
 * grace period (~80 ms) to detach. */
size_t process_probes__links(const struct process_probes *probes);
/* The probed files as the process sees them, e.g. /lib/x86_64-linux-gnu/libc.so.6; several
 * are separated by ", ", the one whose malloc the process calls first. */
const char *process_probes__file(const struct process_probes *probes);
/* The probed files one by one (i < file_count), and the allocators probed in each:
 * "jemalloc", "glibc, jemalloc (_rjem_ prefix)". */
size_t process_probes__file_count(const struct process_probes *probes);
const char *process_probes__file_at(const struct process_probes *probes, size_t i);
const char *process_probes__file_allocators(const struct process_probes *probes, size_t i);
/* Whether the probes sit on otel_memory:alloc USDT sites (an in-process sampler such as
 * liballocscope-sampler.so) instead of the allocator's entry points: then only sampled
 * allocations trap, and each sample carries its own weight. */
bool process_probes__cooperative(const struct process_probes *probes);
/* How many probes sit on an instruction the kernel must single-step (each ~20x dearer). */
size_t process_probes__single_stepped(const struct process_probes *probes);
/* Cooperative probes: how many USDT sites are 5-byte nops (the rest are 1-byte nops, or
 * single-stepped). */
size_t process_probes__on_nop5(const struct process_probes *probes);
/* Per file, one line per probe (entry names, offset, instruction, and why when not emulated),
 * then the entry points left unprobed and the function that counts for each. */
void process_probes__describe(const struct process_probes *probes, FILE *out);
/* Of the probes, those on frees (in-use on the transparent path, session links). */
size_t process_probes__frees(const struct process_probes *probes);

#endif
