/* The one header shared by the BPF program and the agent: the sampled-allocation record that
 * crosses the ring buffer, the counters the program keeps, and the entry points it knows.
 * Only fixed-width kernel UAPI types here, so both sides see identical layouts. */
#ifndef ALLOCSCOPE_ALLOC_H
#define ALLOCSCOPE_ALLOC_H

#include <linux/types.h>

/* Frames a frame-pointer walk may return; the kernel caps it at perf_event_max_stack (127). */
#define ALLOC_MAX_STACK_DEPTH 127

/* Which allocator entry point a probe sits on: the attach cookie of every uprobe, reported in
 * each sample. A kind is an argument layout (where the size is) plus a name for display; every
 * allocator's functions map onto these (jemalloc's mallocx is a MALLOC, rallocx a realloc).
 * Keep entry_names[] in agent/attach/allocators.c, the switch in alloc_multi and
 * alloc_program__for_entry in step with it. */
enum alloc_entry {
	ALLOC_ENTRY_MALLOC,         /* size is the 1st argument */
	ALLOC_ENTRY_CALLOC,         /* (nmemb, size) */
	ALLOC_ENTRY_REALLOC,        /* (ptr, size); realloc(NULL, n) reaches a probed malloc and
				       is skipped here (glibc); size 0 frees */
	ALLOC_ENTRY_MEMALIGN,       /* memalign, aligned_alloc (alignment, size); alignments
				       the allocator relays to malloc are skipped (see
				       ALLOC_COOKIE_RELAY_SHIFT) */
	ALLOC_ENTRY_POSIX_MEMALIGN, /* (memptr, alignment, size); an alignment that is not a
				       power of two >= 8 fails (EINVAL) and is skipped, and so
				       are relayed ones */
	ALLOC_ENTRY_VALLOC,
	ALLOC_ENTRY_PVALLOC,
	ALLOC_ENTRY_NEW,            /* operator new and new[], every variant: size is the 1st */
	ALLOC_ENTRY_REALLOC_ANY,    /* (ptr, size) where realloc(NULL, n) allocates in realloc's
				       own body (jemalloc, tcmalloc, mimalloc): counted here */
	ALLOC_ENTRY_USDT_ALLOC,     /* the cooperative path: otel_memory:alloc(ptr, size,
				       weighted_bytes), fired by an in-process sampler only for
				       sampled allocations */
	ALLOC_ENTRY__COUNT,
};

/* User registers captured on a sampled allocation for CFI unwinding in user space, in this
 * order. At an allocator's entry the callee-saved ones still hold the caller's values. */
enum alloc_reg {
	ALLOC_REG_IP,
	ALLOC_REG_SP,
	ALLOC_REG_BP,
	ALLOC_REG_BX,
	ALLOC_REG_R12,
	ALLOC_REG_R13,
	ALLOC_REG_R14,
	ALLOC_REG_R15,
	ALLOC_REG__COUNT,
};

/* Largest copy of the user stack a sample may carry (--stack-copy-size). */
#define ALLOC_MAX_STACK_COPY (64 * 1024)

/* Request context: what the sampled thread published about the request it serves, read on the
 * sampled path only (bpf/context.bpf.h) from the thread-local record of one of two ABIs:
 * - the OpenTelemetry thread context (OTEP 4947): TLS pointer otel_thread_ctx_v1 to a record
 *   {trace_id[16], span_id[8], valid, reserved, attrs_data_size u16, attrs_data[]}, each
 *   attribute {key index u8, length u8, value bytes}; key names are in the process context
 *   (OTEP 4719). data[] holds attrs_data as the writer laid it out (cut to what fits).
 * - Polar Signals' Custom Labels ABI v1: TLS pointer custom_labels_current_set to
 *   {storage, count, capacity}, storage[i] = {key {len, buf}, value {len, buf}}. data[] holds
 *   each label as {key length u8, value length u8, key bytes, value bytes}, keys and values cut
 *   to ALLOC_CONTEXT_KEY_MAX / ALLOC_CONTEXT_VALUE_MAX bytes.
 * The agent says where each process keeps its TLS pointer (struct context_proc). */
#define ALLOC_CONTEXT_MAX_BYTES 256
#define ALLOC_CONTEXT_KEY_MAX 63
#define ALLOC_CONTEXT_VALUE_MAX 127
#define ALLOC_CONTEXT_MAX_LABELS 8 /* Custom Labels read per sample */

enum alloc_context_kind {
	ALLOC_CONTEXT_NONE,          /* no ABI known for the process, or no record attached */
	ALLOC_CONTEXT_OTEL,          /* data[]: OTel attrs_data */
	ALLOC_CONTEXT_CUSTOM_LABELS, /* data[]: {klen, vlen, key, value}... */
};

enum alloc_context_status {
	ALLOC_CONTEXT_OK,
	ALLOC_CONTEXT_TORN,       /* valid != 1: the writer was mid-update; nothing kept */
	ALLOC_CONTEXT_UNREADABLE, /* a pointer led to memory that could not be read */
};

struct alloc_context {
	__u8 kind;               /* enum alloc_context_kind */
	__u8 status;             /* enum alloc_context_status */
	__u16 bytes;             /* of data[] filled */
	__u32 reserved;
	__u8 trace_id[16];       /* OTel only; all zero: none */
	__u8 span_id[8];
	__u8 data[ALLOC_CONTEXT_MAX_BYTES];
};

/* Where a process's threads keep their TLS pointer, relative to the thread pointer (fsbase on
 * x86-64, TLS variant II): static TLS (the executable, and libraries the loader mapped at
 * start) at fsbase + offset; dynamic TLS (a library loaded later, through TLSDESC) at
 * dtv[module] + offset, the dtv found at fsbase + 8 (glibc's tcbhead_t), 16-byte entries. */
enum context_tls_model {
	CONTEXT_TLS_NONE,
	CONTEXT_TLS_STATIC,
	CONTEXT_TLS_DTV,
};

struct context_tls {
	__u8 kind;               /* enum alloc_context_kind */
	__u8 model;              /* enum context_tls_model */
	__u16 reserved;
	__u32 module;            /* CONTEXT_TLS_DTV: the module's dtv index */
	__s64 offset;
};

/* The context_procs map's value, per tgid: the OTel pointer is tried first, then Custom
 * Labels. */
struct context_proc {
	struct context_tls tls[2];
};
#define CONTEXT_MAX_PROCS 16384

/* One sampled allocation as the agent's stages see it: agent/collect/sample_reader.c decodes
 * each ring record (struct alloc_record, below) into this form, checking every length first.
 * stack[] holds the frame-pointer walk (leaf first, stack[0] is the probed instruction); the
 * direct caller, which that walk misses at a function's entry, travels separately in
 * caller_address. When the agent unwinds with CFI, regs[] and stack_copy[] carry what it
 * needs. Never crosses the ring: the decoded record has room for the largest stack copy. */
struct alloc_sample {
	__u32 pid;               /* tgid */
	__u32 tid;
	__u64 size;              /* requested bytes (0 counted as 1) */
	__u64 caller_address;    /* *(u64 *)sp at entry: the return address into the caller */
	__u64 time_ns;           /* bpf_ktime_get_ns() */
	__u64 weighted_bytes;    /* ALLOC_ENTRY_USDT_ALLOC: the bytes the in-process sampler
				    says this sample stands for (size / p at its rate); 0 for
				    the kernel's own samples, weighted by the agent's rate */
	__u32 entry;             /* enum alloc_entry */
	__s32 stack_bytes;       /* bytes of stack[] filled, or a negative errno */
	__u64 stack[ALLOC_MAX_STACK_DEPTH];
	__u64 regs[ALLOC_REG__COUNT];
	__u32 stack_copy_bytes;  /* bytes of stack_copy[] filled, from regs[ALLOC_REG_SP] up */
	__u32 flags;             /* ALLOC_SAMPLE_* */
	struct alloc_context context; /* the thread's request context (issue 15) */
	__u8 stack_copy[];       /* the top of the user stack (the record is sized for it), or
				    with ALLOC_SAMPLE_KERNEL_FRAMES the frames the kernel
				    walked: stack_copy_bytes / 8 pcs, leaf first */
};

/* One sampled allocation as it crosses the samples ring: this 64-byte header, then the
 * sections it says it carries, in this order, each starting 8-byte aligned (a length that is
 * not a multiple of 8 is followed by padding to the next section):
 *   regs      regs_bytes: 0, or ALLOC_RECORD_REGS_BYTES: ALLOC_REG__COUNT __u64s (only with
 *             a stack copy, where the agent's unwinder starts from them)
 *   fp        fp_bytes: the frame-pointer walk's __u64 pcs, leaf first (--unwind fp only)
 *   context   context_bytes: 0 when the thread published no request context, else the head
 *             of struct alloc_context (ALLOC_CONTEXT_HEAD_BYTES) and its first context.bytes
 *             of data[]; a record with a stack copy, whose reservation holds the whole area
 *             anyway, carries all of it whenever context is read (its head's kind says
 *             whether the thread published any)
 *   stack     stack_bytes: the copy of the top of the user stack from regs[ALLOC_REG_SP] up
 *             or, with ALLOC_SAMPLE_KERNEL_FRAMES, the __u64 pcs the kernel walked, leaf first
 * A record carries only what its mode uses: with the kernel walk, the header, the context if
 * any and the pcs (64 + 8 bytes a frame without context); with frame pointers, the header
 * and the walk's pcs. A record with a stack copy is reserved at a size fixed at load (the
 * ring's reservation must be a constant: header, regs, the context area when context is read,
 * the configured copy): its stack section holds the bytes copied, and the record may end with
 * room left unfilled (a shorter copy). The reader rejects (and counts) a record whose sections
 * do not fit in it or break these bounds; it reads nothing past them. */
struct alloc_record {
	__u32 pid;               /* as in struct alloc_sample */
	__u32 tid;
	__u64 size;
	__u64 caller_address;
	__u64 time_ns;
	__u64 weighted_bytes;
	__u32 entry;
	__u32 flags;             /* ALLOC_SAMPLE_* */
	__s32 fp_status;         /* the frame-pointer walk: bytes walked, or a negative errno;
				    0 when there was no walk */
	__u16 regs_bytes;
	__u16 fp_bytes;          /* <= ALLOC_MAX_STACK_DEPTH * 8, a multiple of 8 */
	__u32 stack_bytes;       /* <= ALLOC_MAX_STACK_COPY, or UNWIND_MAX_FRAMES * 8 pcs */
	__u16 context_bytes;     /* 0, or ALLOC_CONTEXT_HEAD_BYTES + context.bytes */
	__u16 reserved;
};
#define ALLOC_RECORD_REGS_BYTES (ALLOC_REG__COUNT * 8)
#define ALLOC_CONTEXT_HEAD_BYTES 32 /* struct alloc_context up to data[] */
_Static_assert(sizeof(struct alloc_record) == 64, "the record header is 64 bytes");
_Static_assert(sizeof(struct alloc_context) == ALLOC_CONTEXT_HEAD_BYTES + ALLOC_CONTEXT_MAX_BYTES,
	       "the context section is the area's head and its data");

/* The kernel walked the stack with the unwind tables: stack_copy[] holds __u64 pcs (pcs[0] =
 * regs[ALLOC_REG_IP], then return addresses), and the record is only as long as they are. */
#define ALLOC_SAMPLE_KERNEL_FRAMES 1u
/* ... and the walk stopped before the outermost frame (no table for a frame, an unsupported
 * rule, unreadable memory, or UNWIND_MAX_FRAMES reached). */
#define ALLOC_SAMPLE_TRUNCATED 2u

/* A record the agent made from a drop notice (struct alloc_drop), not from the ring: no stack,
 * only the pid, size, entry and weight, which go under ALLOC_PROFILE_DROPPED_FRAME. */
#define ALLOC_SAMPLE_DROPPED 4u

/* With ALLOC_SAMPLE_TRUNCATED: the walk stopped because it had UNWIND_MAX_FRAMES frames and
 * the stack went on (deep recursion), not for want of a table or readable memory. The agent
 * puts such stacks under a root "[truncated]" frame and counts them apart. */
#define ALLOC_SAMPLE_DEPTH_CUT 8u

/* A sampled allocation the samples ring had no room for: what the program sends instead,
 * through a small ring of its own, so that the agent still counts its weight (under a
 * "[dropped samples]" frame) and totals stay unbiased. 24 bytes: 32 with the ring's header. */
struct alloc_drop {
	__u32 pid;               /* tgid */
	__u32 entry;             /* enum alloc_entry */
	__u64 size;              /* requested bytes (0 counted as 1) */
	__u64 weighted_bytes;    /* as in struct alloc_sample: 0 but on the cooperative path */
};

/* The drop notices' ring: 16384 notices, a burst of 16384 samples the samples ring missed
 * between two drains. */
#define ALLOC_DROP_RING_BYTES (512 * 1024)

/* In-kernel unwinding (bpf/unwind.bpf.h; tables built by agent/symbolize/unwind_tables.c).
 * Each ELF file's CFI becomes sorted rows, one per pc range, in one global array shared by
 * every process mapping the file; each process has a sorted list of its executable file
 * mappings pointing into it. x86-64 only: the return address is always at CFA - 8. */
enum unwind_cfa_rule {
	UNWIND_CFA_NONE,        /* no CFI covers this pc: the walk stops (truncated) */
	UNWIND_CFA_RSP,         /* CFA = rsp + cfa_offset */
	UNWIND_CFA_RBP,         /* CFA = rbp + cfa_offset */
	UNWIND_CFA_PLT,         /* a PLT entry: CFA = rsp + cfa_offset, + 8 when
				   (rip & 15) >= rbp_offset (the linkers' PLT expression) */
	UNWIND_CFA_SIGNAL,      /* __restore_rt: rsp points at a ucontext; rip, rsp and rbp
				   come from its mcontext */
	UNWIND_CFA_END,         /* the return address is undefined: the outermost frame */
	UNWIND_CFA_UNSUPPORTED, /* an expression or register the walk cannot evaluate */
};

enum unwind_rbp_rule {
	UNWIND_RBP_SAME,        /* rbp is the callee's */
	UNWIND_RBP_SAVED,       /* saved at CFA + rbp_offset */
	UNWIND_RBP_UNKNOWN,     /* anything else: an rbp-based CFA above this frame fails */
};

struct unwind_row {
	__u32 pc;               /* first address (ELF virtual address) the row covers; the row
				   ends where the next one starts */
	__s32 cfa_offset;
	__s16 rbp_offset;
	__u8 cfa_rule;          /* enum unwind_cfa_rule */
	__u8 rbp_rule;          /* enum unwind_rbp_rule */
	__u32 reserved;         /* an array map stores values 8-byte aligned: the mmapped
				   array has a 16-byte stride either way */
};

/* One executable file mapping of a process: pcs in [start, end) are looked up at pc - bias
 * among rows [row_first, row_first + row_count) (sorted by pc); row_count 0 means no table. */
struct unwind_mapping {
	__u64 start, end, bias;
	__u32 row_first, row_count;
};

_Static_assert(sizeof(struct unwind_row) == 16, "rows are mmapped with the map's 16-byte stride");

#define UNWIND_MAX_MAPPINGS 256
/* A process's executable file mappings, sorted by start: the value of the unwind_procs map. */
struct unwind_proc {
	__u32 n_mappings;
	__u32 reserved;
	struct unwind_mapping mappings[UNWIND_MAX_MAPPINGS];
};

/* A file's table as the walk finds it from a mapping the process's list does not hold (a
 * library the loader mapped after the list was installed, a process with no list yet): the
 * kernel names the mapping's file (bpf_find_vma), and the unwind_files map, keyed by its
 * identity, says where its rows are and how its code segment is laid out, which gives the load
 * bias: mapping start - file offset * page - code_delta. */
struct unwind_file_key {
	__u64 dev;   /* the kernel's encoding: major << 20 | minor */
	__u64 inode;
};

struct unwind_file_entry {
	__u32 row_first, row_count;
	__u64 code_delta;           /* p_vaddr - p_offset of the file's code segment */
	__u64 code_start, code_end; /* its ELF virtual addresses */
};

#define UNWIND_MAX_FILES 16384

/* Frames a kernel walk may return (a power of two), and the rows of the global table (the
 * default: 16 bytes each, 16 MiB; the agent sizes the map before load). */
#define UNWIND_MAX_FRAMES 512
#define UNWIND_DEFAULT_TABLE_ROWS (1u << 20)

/* The ring buffer's size bounds, one rule for the command line and the configuration file. The
 * kernel puts an 8-byte header before each record and rounds the whole to 8 bytes; a record
 * larger than the ring can never be reserved, so every sample would be dropped. The smallest
 * ring accepted is the smallest power of two that holds the largest record (the sample with
 * the largest stack copy), whatever --stack-copy-size or --unwind say. */
#define ALLOC_RINGBUF_RECORD_HEADER 8
#define ALLOC_SAMPLE_MAX_RECORD                                                                    \
	((sizeof(struct alloc_record) + ALLOC_RECORD_REGS_BYTES + ALLOC_MAX_STACK_COPY +           \
	  sizeof(struct alloc_context) + ALLOC_RINGBUF_RECORD_HEADER + 7) &                        \
	 ~7ul)
#define ALLOC_POW2_SMEAR1(x) ((x) | ((x) >> 1))
#define ALLOC_POW2_SMEAR2(x) (ALLOC_POW2_SMEAR1(x) | (ALLOC_POW2_SMEAR1(x) >> 2))
#define ALLOC_POW2_SMEAR4(x) (ALLOC_POW2_SMEAR2(x) | (ALLOC_POW2_SMEAR2(x) >> 4))
#define ALLOC_POW2_SMEAR8(x) (ALLOC_POW2_SMEAR4(x) | (ALLOC_POW2_SMEAR4(x) >> 8))
#define ALLOC_POW2_SMEAR16(x) (ALLOC_POW2_SMEAR8(x) | (ALLOC_POW2_SMEAR8(x) >> 16))
/* The smallest power of two >= x, for 1 <= x <= 2^31, as a constant expression. */
#define ALLOC_POW2_CEIL(x) (ALLOC_POW2_SMEAR16((__u32)(x) - 1) + 1)
#define ALLOC_RINGBUF_MIN_BYTES ALLOC_POW2_CEIL(ALLOC_SAMPLE_MAX_RECORD)
#define ALLOC_RINGBUF_MAX_BYTES (1u << 30)
_Static_assert(ALLOC_RINGBUF_MIN_BYTES >= ALLOC_SAMPLE_MAX_RECORD,
	       "the smallest ring buffer must hold the largest sample");
_Static_assert((ALLOC_RINGBUF_MIN_BYTES & (ALLOC_RINGBUF_MIN_BYTES - 1)) == 0,
	       "ring buffer sizes are powers of two");

/* Kept by the program on the sampled path only; read by the agent from the skeleton's .bss. */
struct alloc_counters {
	__u64 samples;           /* records submitted */
	__u64 ringbuf_full;      /* sampled allocations the samples ring had no room for: each
				    sent a drop notice instead (their weight is kept) unless
				    counted in drops_unweighted too */
	__u64 stack_errors;      /* samples whose frame-pointer walk failed */
	__u64 caller_errors;     /* samples whose caller could not be read at *sp */
	__u64 storage_errors;    /* allocations not counted: no per-thread countdown could be made */
	__u64 stack_copy_errors; /* samples that carry no stack copy: the stack was unreadable */
	__u64 process_events_lost; /* exec/fork notices lost: their ring buffer was full */
	__u64 usdt_errors;       /* cooperative samples lost: no spec for the probe, or an
				    argument could not be read */
	__u64 not_permitted;     /* samples refused: the process ran with credentials other
				    than the caller's (only_caller) */
	__u64 kernel_unwinds;    /* samples whose stack the kernel walked with the tables */
	__u64 unwind_fallbacks;  /* samples sent with a stack copy instead: no table for the
				    process or its leaf (the agent unwinds them with libdw) */
	__u64 unwind_truncated;  /* kernel walks that stopped before the outermost frame */
	__u64 drops_unweighted;  /* of ringbuf_full, those whose drop notice was lost too (its
				    ring was full as well): their weight is lost */
	__u64 unwind_preempted;  /* kernel walks whose per-CPU record another program on the
				    same CPU overwrote meanwhile: sent as drop notices (weight
				    kept, stack not) */
	__u64 not_dumpable;      /* samples sent without their stack copy: only_caller, and the
				    process is not dumpable (PR_SET_DUMPABLE 0, a set-user-ID
				    exec): its stack memory is not the caller's to read */
	/* In-use tracking (--inuse, bpf/live.bpf.h): */
	__u64 live_overflow;     /* sampled allocations not tracked: live_allocs was full (the
				    in-use estimates are low; the profile says so) */
	__u64 live_frees;        /* frees that removed a tracked allocation */
	/* The transparent path (session uprobes): */
	__u64 live_returns_lost; /* sampled calls whose return gave no pointer to track (the
				    call failed, or a nested sampled call on the thread took
				    its place) */
	__u64 context_torn;      /* samples whose thread's context record was mid-update
				    (valid != 1): sent without context */
	__u64 context_unreadable; /* samples whose context pointer led to unreadable memory */
};

/* An entry point's attach cookie is its enum alloc_entry in the low byte and, for an aligned
 * entry (memalign, posix_memalign layouts) of an allocator that hands small alignments to its
 * own malloc, the largest such alignment above it: glibc's memalign(16, n) is malloc(n), which
 * malloc's probe counts, so the aligned probe skips alignments up to that. 0 when the
 * allocator never relays; malloc's cookie is always its bare kind. */
#define ALLOC_COOKIE_KIND_MASK 0xffull
#define ALLOC_COOKIE_RELAY_SHIFT 8
#define ALLOC_COOKIE_RELAY_MAX 0xffffffull /* bits 8..31 */

/* The cooperative path's probes are told apart from entry points by their attach cookie:
 * ALLOC_COOKIE_USDT + the index of their argument spec in the usdt_specs map. */
#define ALLOC_COOKIE_USDT (1ull << 32)
#define ALLOC_MAX_USDT_SPECS 256
/* ... and an otel_memory:free site's cookie has this bit on top (in-use tracking). */
#define ALLOC_COOKIE_USDT_FREE (1ull << 40)
/* The transparent path's frees (in-use with session uprobes): free, cfree, operator delete
 * and its sized and aligned variants, sdallocx...; the pointer is the first argument. Only
 * in a session link (alloc_session), never in alloc_multi's. */
#define ALLOC_COOKIE_FREE (1ull << 41) /* below ALLOC_COOKIE_SLOT_SHIFT */
/* BPF_TRACE_UPROBE_SESSION of the kernel's enum bpf_attach_type (Linux 6.13+; include/uapi/
 * linux/bpf.h, checked against this kernel's BTF): libbpf 1.4 and Debian's UAPI headers
 * predate it. */
#define ALLOC_ATTACH_UPROBE_SESSION 57

/* In-use tracking: the sampled allocations still live, keyed by process and pointer; the
 * value's time_ns is the sample's (struct alloc_sample.time_ns), which the agent joins on. */
struct alloc_live_key {
	__u32 pid;               /* tgid */
	__u32 reserved;
	__u64 ptr;
};

struct alloc_live {
	__u64 time_ns;
	__u64 size;              /* as in the sample */
	__u64 weighted_bytes;    /* as in the sample */
};

#define ALLOC_LIVE_DEFAULT_ENTRIES 65536
#define ALLOC_LIVE_MAX_ENTRIES (1u << 24)

/* Overhead budget (agent/attach/duty_cycle.h): a probe's cookie carries, in its top bits, the
 * slot of the probe_hits array its hits are counted in, so the agent knows each budgeted
 * process's hits. Slot 0 is shared by every process without a slot of its own. Masked off
 * before the cookie is read as an entry kind or a USDT spec. */
#define ALLOC_COOKIE_SLOT_SHIFT 48
#define ALLOC_COOKIE_ENTRY_MASK ((1ull << ALLOC_COOKIE_SLOT_SHIFT) - 1)
#define ALLOC_HIT_SLOTS 4096

/* What the continuous agent learns about processes from the kernel, through a ring buffer of
 * its own: every exec on the host (the agent decides from /proc whether the new image is a
 * target), and forks of processes it profiles (a forked worker inherits its parent's target
 * status but not its probes). Exits are watched with pidfds. */
enum process_event_type {
	PROCESS_EVENT_EXEC = 1,
	PROCESS_EVENT_FORK = 2,
};

struct process_event {
	__u32 type;              /* enum process_event_type */
	__u32 pid;               /* the process that exec'ed, or the new child */
	__u32 parent_pid;        /* FORK: the profiled parent; EXEC: 0 */
	__u32 reserved;
};

#endif
