/* The loaded BPF side of allocscope: opens the embedded object, sets the sampling rate, the
 * log2 table and the ring buffer size, checks what the kernel must offer, and loads it. Other
 * stages get the programs to attach, the ring buffer to drain and the counters to report. */
#ifndef ALLOCSCOPE_ALLOC_PROGRAM_H
#define ALLOCSCOPE_ALLOC_PROGRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "alloc.h"
#include "usdt_args.h"

struct alloc_program;
struct bpf_program;

struct alloc_program_opts {
	uint64_t sample_rate;        /* mean bytes between samples */
	uint32_t ringbuf_bytes;      /* power of two, at least one page */
	bool walk_frame_pointers;    /* the kernel's frame-pointer walk in every sample */
	uint32_t stack_copy_bytes;   /* registers + this much user stack per sample (0: none);
					a power of two up to ALLOC_MAX_STACK_COPY */
};

/* Checks kernel support (BTF, uprobes), privileges, then opens and loads the program. On
 * failure returns -errno and writes a sentence for the user into err: what failed and what to
 * do about it. */
int alloc_program__load(const struct alloc_program_opts *opts, struct alloc_program **out,
			char *err, size_t err_len);
void alloc_program__free(struct alloc_program *prog);

/* The program that handles an entry point's argument layout, for one perf-event uprobe per
 * entry point: the fallback where uprobe_multi links are missing. */
struct bpf_program *alloc_program__for_entry(struct alloc_program *prog, enum alloc_entry entry);

/* Whether processes are attached with one uprobe_multi link each. True until the kernel is
 * known to lack them: the multi program did not load, or the first link was refused as an
 * unknown kind. From then on every process gets one perf-event uprobe per entry point. */
bool alloc_program__has_multi(const struct alloc_program *prog);
/* One link serving every entry point of pid in one file: offsets[i] (file offsets into path,
 * the file as the process sees it) report entries[i]; at most 64. Breakpoints go into pid's address space only.
 * Returns the link's descriptor (the caller closes it to detach) or -errno. When the kernel
 * refuses the first link ever made as a kind it does not know, returns -EOPNOTSUPP and
 * alloc_program__has_multi turns false: attach per entry point instead. */
int alloc_program__attach_multi(struct alloc_program *prog, pid_t pid, const char *path,
				const uint64_t *offsets, const enum alloc_entry *entries,
				size_t count);
/* The cooperative path (otel_memory:alloc USDT). A probe site's argument spec goes into the
 * program's table once (identical specs share an entry; at most ALLOC_MAX_USDT_SPECS
 * distinct ones, then -ENOSPC); *cookie is what its probe must report. */
int alloc_program__usdt_spec(struct alloc_program *prog, const struct usdt_probe_spec *spec,
			     uint64_t *cookie);
/* One uprobe_multi link for the USDT sites offsets[i] in path, reporting cookies[i] (from
 * alloc_program__usdt_spec); semaphore_offsets[i] (0: none) are raised by the kernel while the
 * link exists, which turns the sampler on. Returns and falls back like
 * alloc_program__attach_multi; per site, the fallback is alloc_program__for_entry(
 * ALLOC_ENTRY_USDT_ALLOC) with the cookie and the semaphore as ref_ctr_offset. */
int alloc_program__attach_usdt_multi(struct alloc_program *prog, pid_t pid, const char *path,
				     const uint64_t *offsets, const uint64_t *semaphore_offsets,
				     const uint64_t *cookies, size_t count);
int alloc_program__ringbuf_fd(const struct alloc_program *prog);
void alloc_program__read_counters(const struct alloc_program *prog, struct alloc_counters *out);
/* Allocator calls that hit a probe, summed over CPUs. */
uint64_t alloc_program__probe_hits(const struct alloc_program *prog);

/* Continuous mode: attach the exec and fork tracepoints whose notices (struct process_event)
 * arrive through the ring buffer process_events_fd names. 0 or -errno with a sentence. */
int alloc_program__watch_processes(struct alloc_program *prog, char *err, size_t err_len);
int alloc_program__process_events_fd(const struct alloc_program *prog);
/* Forks of a profiled process are reported; of others not. 0 or -errno. */
int alloc_program__set_profiled(struct alloc_program *prog, pid_t pid, bool profiled);

#endif
