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
struct bpf_link;
struct bpf_program;

struct alloc_program_opts {
	uint64_t sample_rate;        /* mean bytes between samples */
	uint32_t ringbuf_bytes;      /* power of two, at least one page */
	bool walk_frame_pointers;    /* the kernel's frame-pointer walk in every sample; only
					without a stack copy (a record carries one or the other) */
	uint32_t stack_copy_bytes;   /* registers + this much user stack per sample (0: none);
					a power of two up to ALLOC_MAX_STACK_COPY */
	bool kernel_unwind;          /* walk stacks in the kernel with unwind tables where the
					agent installed them (a stack copy elsewhere) */
	uint32_t unwind_table_rows;  /* the tables' array, in rows (0: the default) */
	bool only_caller;            /* sample only processes running as exactly this uid/gid
					with no capabilities (counted as not_permitted) */
	uint32_t caller_uid, caller_gid;
	bool read_context;           /* read the sampled thread's request context (issue 15) */
	uint32_t context_max_bytes;  /* OTel attribute bytes copied, <= ALLOC_CONTEXT_MAX_BYTES */
	uint32_t live_entries;       /* in-use tracking (--inuse): the live_allocs map's size;
					0: no tracking (the program keeps no live set) */
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

/* Whether the kernel makes uprobe_multi links (Linux 6.6+), asked once at load. Without
 * them every probe is a perf-event uprobe of its own (alloc_program__for_entry). */
bool alloc_program__has_multi(const struct alloc_program *prog);
/* One uprobe_multi link (libbpf's bpf_program__attach_uprobe_multi) for pid over offsets[i]
 * (file offsets into path, the file as the process sees it; at most 64), each reporting
 * cookies[i] to the program: an enum alloc_entry for an entry point, or a USDT site's cookie
 * from alloc_program__usdt_spec. semaphores[i] (NULL, or 0 for none) are USDT semaphores the
 * kernel raises while the link exists, which is what turns an in-process sampler on.
 * Breakpoints go into pid's address space only. Returns 0 with *link set (bpf_link__destroy
 * detaches) or -errno; -EOPNOTSUPP without multi links. */
int alloc_program__attach_multi(struct alloc_program *prog, pid_t pid, const char *path,
				const uint64_t *offsets, const uint64_t *semaphores,
				const uint64_t *cookies, size_t count, struct bpf_link **link);
/* In-use on the transparent path (live_entries > 0 and a kernel with session uprobes, Linux
 * 6.13+): whether entry points go into one session link per file, which also takes the free
 * probes (ALLOC_COOKIE_FREE cookies) and tracks the pointers sampled calls return. */
bool alloc_program__has_session(const struct alloc_program *prog);
/* As alloc_program__attach_multi, without semaphores, for a session link: 0 with *link_fd set
 * (close() detaches) or -errno; -EOPNOTSUPP when the program has no session links. */
int alloc_program__attach_session(struct alloc_program *prog, pid_t pid, const char *path,
				  const uint64_t *offsets, const uint64_t *cookies, size_t count,
				  int *link_fd);
/* The cooperative path (otel_memory:alloc USDT). A probe site's argument spec goes into the
 * program's table once (identical specs share an entry; at most ALLOC_MAX_USDT_SPECS
 * distinct ones, then -ENOSPC); *cookie is what its probe must report. Without multi links a
 * site is attached with alloc_program__for_entry(ALLOC_ENTRY_USDT_ALLOC), the cookie and the
 * semaphore as ref_ctr_offset. */
int alloc_program__usdt_spec(struct alloc_program *prog, const struct usdt_probe_spec *spec,
			     uint64_t *cookie);
int alloc_program__ringbuf_fd(const struct alloc_program *prog);
/* The drop notices' ring (struct alloc_drop): samples the samples ring had no room for. */
int alloc_program__drop_ringbuf_fd(const struct alloc_program *prog);
/* The in-kernel unwinder's maps (unwind_tables.h): the rows array and its size, the
 * per-process mapping lists. */
int alloc_program__unwind_rows_fd(const struct alloc_program *prog);
uint32_t alloc_program__unwind_table_rows(const struct alloc_program *prog);
int alloc_program__unwind_procs_fd(const struct alloc_program *prog);
int alloc_program__unwind_files_fd(const struct alloc_program *prog);
void alloc_program__read_counters(const struct alloc_program *prog, struct alloc_counters *out);
/* Allocator calls that hit a probe, summed over CPUs (and hit slots). */
uint64_t alloc_program__probe_hits(const struct alloc_program *prog);
/* Overhead budget: a probe_hits slot of its own for one process (its probes' cookies carry
 * it, process_probes__attach_with), zeroed; -ENOSPC when all ALLOC_HIT_SLOTS - 1 are
 * taken. Its hits so far; giving it back (its hits stay in the total; 0 is ignored). */
int alloc_program__hit_slot_new(struct alloc_program *prog, uint32_t *slot);
uint64_t alloc_program__hit_slot_read(const struct alloc_program *prog, uint32_t slot);
void alloc_program__hit_slot_free(struct alloc_program *prog, uint32_t slot);

/* Continuous mode: attach the exec and fork tracepoints whose notices (struct process_event)
 * arrive through the ring buffer process_events_fd names. 0 or -errno with a sentence. */
int alloc_program__watch_processes(struct alloc_program *prog, char *err, size_t err_len);
int alloc_program__process_events_fd(const struct alloc_program *prog);
/* Forks of a profiled process are reported; of others not. 0 or -errno. */
int alloc_program__set_profiled(struct alloc_program *prog, pid_t pid, bool profiled);

/* Where pid's threads keep their request-context TLS pointers (bpf/context.bpf.h), or with
 * NULL, forget it. 0 or -errno. */
int alloc_program__set_context(struct alloc_program *prog, pid_t pid,
			       const struct context_proc *where);
/* In-use tracking (bpf/live.bpf.h). Whether the program keeps a live set (live_entries > 0). */
bool alloc_program__tracks_live(const struct alloc_program *prog);
/* Calls fn once for each tracked live allocation (a snapshot: entries added or freed while it
 * runs may or may not be seen); fn returns 0 to go on. Returns the number visited or -errno. */
typedef int (*alloc_live_fn)(const struct alloc_live_key *key, const struct alloc_live *value,
			     void *ctx);
int alloc_program__for_each_live(struct alloc_program *prog, alloc_live_fn fn, void *ctx);
/* Drops pid's live entries (it exited, or left the targets). Returns how many. */
size_t alloc_program__forget_live(struct alloc_program *prog, pid_t pid);
/* Drops the n entries keys names (gone already: not an error). Returns how many went. */
size_t alloc_program__delete_live(struct alloc_program *prog, const struct alloc_live_key *keys,
				  size_t n);

#endif
