/* Probes for one target process: find the allocator among the files the process maps, and
 * attach a uprobe on each entry point with the process's pid, so breakpoints exist only in its
 * address space and every other process using the same library runs untouched. All of them
 * share one uprobe_multi link where the kernel has those (Linux 6.6+), else each entry point
 * gets a perf-event uprobe of its own. */
#ifndef ALLOCSCOPE_PROCESS_PROBES_H
#define ALLOCSCOPE_PROCESS_PROBES_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

struct alloc_program;
struct process_probes;

/* Attaches to pid. When allocator_file is not NULL, that ELF file is probed instead of the
 * allocator found in /proc/PID/maps (a command not yet exec'ed: its future executable).
 * Returns 0, or -errno with a sentence for the user in err:
 *   -ESRCH no such process; -ENOTSUP its allocator is not glibc's (the sentence names it);
 *   -ENOENT no allocator found; others: the attach itself failed. */
int process_probes__attach(struct alloc_program *prog, pid_t pid, const char *allocator_file,
			   struct process_probes **out, char *err, size_t err_len);
/* Detaches every probe; accepts NULL. */
void process_probes__free(struct process_probes *probes);

/* Entry points probed. */
size_t process_probes__count(const struct process_probes *probes);
/* Kernel links the process holds: 1 with a uprobe_multi link, else one per entry point (each
 * of those also holds a perf event: two descriptors). Each costs an RCU grace period (~80 ms)
 * to detach. */
size_t process_probes__links(const struct process_probes *probes);
/* The probed file as the process sees it, e.g. /lib/x86_64-linux-gnu/libc.so.6. */
const char *process_probes__file(const struct process_probes *probes);
/* How many probes sit on an instruction the kernel must single-step (each ~20x dearer). */
size_t process_probes__single_stepped(const struct process_probes *probes);
/* One line per probe: entry names, offset, instruction, and why when not emulated. */
void process_probes__describe(const struct process_probes *probes, FILE *out);

#endif
