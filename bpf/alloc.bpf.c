// SPDX-License-Identifier: GPL-2.0
/* allocscope's probes: one uprobe program per argument layout of the allocator entry points,
 * attached as one perf-event uprobe per entry point, and alloc_multi, which serves every entry
 * point of a process from a single uprobe_multi link (one descriptor and one RCU grace period
 * per process instead of one per entry point) and reads the size where the entry's layout puts
 * it. The agent uses alloc_multi when the kernel offers uprobe_multi links.
 *
 * The hot path is a per-thread byte countdown and a per-CPU hit count: an allocation that does
 * not exhaust the countdown costs an array and a task-storage lookup and two arithmetic ops on
 * top of the uprobe trap. When it does, the allocation is sampled (probability
 * 1 - exp(-size/R), the Poisson byte sampling of Go and jemalloc), a fresh exponential interval
 * is drawn, and a record goes to a ring buffer without waking the agent, which drains it on a
 * timer: the size, the direct caller (read at *sp), and the stack, walked here with the
 * agent's CFI tables (unwind.bpf.h, the default) or as a frame-pointer walk plus a copy of the
 * top of the user stack for the agent to unwind, and the request context the thread publishes
 * (context.bpf.h). When the ring is full, a small drop notice keeps the sample's weight. */
#include <stdbool.h>
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "alloc.h"
#include "sampling.h"
#include "usdt_args.h"

/* Set by the agent before load: the mean bytes between samples (R), the log2 table
 * sampling_next_interval needs, and what a sample carries for unwinding: the kernel's
 * frame-pointer walk, and/or registers plus a copy of the top of the user stack (bytes, a
 * power of two up to ALLOC_MAX_STACK_COPY; 0 for none). The rate has no default of its own:
 * the loader always sets it from the sampling options (agent/pipeline.h), whose one default
 * is the sampling.rate key's. */
const volatile __u64 sample_rate = 0;
const volatile __u32 log2_frac_q16[SAMPLING_TABLE_SIZE];
const volatile bool walk_frame_pointers = true;
const volatile __u32 stack_copy_size = 0;
/* Wake the agent only when this much is queued: no wakeup per sample (a wakeup costs more than
 * the trap), yet a burst cannot fill the ring between two timed drains. */
const volatile __u64 wakeup_bytes = 1 << 20;
/* Set when allocscope acts for a caller who is not root (a binary with file capabilities):
 * samples are taken only from a process with that caller's uids and gids and no
 * capabilities, the processes the caller could debug. The agent checked each target before
 * attaching; this covers what a target becomes later (it execs a set-user-ID program: its
 * breakpoints stay). */
const volatile bool only_caller = false;
const volatile __u32 caller_uid = 0;
const volatile __u32 caller_gid = 0;

struct alloc_counters counters;

struct thread_countdown {
	__u64 bytes_left;   /* bytes until the next sampled byte */
	__u64 started;      /* 0 until the first interval has been drawn */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct thread_countdown);
} countdowns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* resized by the agent before load */
} samples SEC(".maps");

/* Drop notices: a sample the samples ring had no room for still sends its weight here, so the
 * agent's totals stay unbiased (struct alloc_drop). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, ALLOC_DROP_RING_BYTES);
} dropped_samples SEC(".maps");

/* Probe hits, per CPU so the hot path never shares a cache line: what the agent multiplies
 * by the measured cost of a hit to report its overhead. Indexed by the slot in the probe's
 * cookie (ALLOC_COOKIE_SLOT_SHIFT): a process under an overhead budget counts in a slot of its
 * own, every other in slot 0. The same one lookup as a single counter. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ALLOC_HIT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} probe_hits SEC(".maps");

/* Continuous mode: processes being profiled (tgid -> 1), kept by the agent, so forks are
 * reported only for them; and the ring their exec and fork notices travel through. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} profiled_processes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} process_events SEC(".maps");

/* The cooperative path: how to read otel_memory:alloc's arguments at each probe site, set by
 * the agent; a probe's attach cookie is ALLOC_COOKIE_USDT + its index here. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ALLOC_MAX_USDT_SPECS);
	__type(key, __u32);
	__type(value, struct usdt_probe_spec);
} usdt_specs SEC(".maps");

/* The samples ring had no room for a sampled allocation: send its weight as a drop notice.
 * Only when that ring is full too is the sample lost without its weight (drops_unweighted). */
static __always_inline void send_drop_notice(__u64 size, __u64 weighted_bytes, __u32 entry)
{
	struct alloc_drop *drop;

	drop = bpf_ringbuf_reserve(&dropped_samples, sizeof(*drop), 0);
	if (!drop) {
		__sync_fetch_and_add(&counters.drops_unweighted, 1);
		return;
	}
	drop->pid = bpf_get_current_pid_tgid() >> 32;
	drop->entry = entry;
	drop->size = size;
	drop->weighted_bytes = weighted_bytes;
	bpf_ringbuf_submit(drop, bpf_ringbuf_query(&dropped_samples, BPF_RB_AVAIL_DATA) >
					 ALLOC_DROP_RING_BYTES / 4
				 ? BPF_RB_FORCE_WAKEUP
				 : BPF_RB_NO_WAKEUP);
}

/* A sampled allocation the samples ring had no room for: its weight goes as a drop notice. */
static __always_inline void submit_drop(__u64 size, __u64 weighted_bytes, __u32 entry)
{
	__sync_fetch_and_add(&counters.ringbuf_full, 1);
	send_drop_notice(size, weighted_bytes, entry);
}

#include "context.bpf.h"
#include "uretprobe.bpf.h"
#include "record.bpf.h"
#include "live.bpf.h"
#include "unwind.bpf.h"

static __always_inline __u64 next_interval(void)
{
	return sampling_next_interval(bpf_get_prandom_u32(), sample_rate, log2_frac_q16);
}

/* Registers, for CFI unwinding in the agent: its walk starts from them. */
static __always_inline void record_regs(struct pt_regs *ctx, __u64 *regs)
{
	regs[ALLOC_REG_IP] = PT_REGS_IP(ctx);
	regs[ALLOC_REG_SP] = PT_REGS_SP(ctx);
	regs[ALLOC_REG_BP] = ctx->bp;
	regs[ALLOC_REG_BX] = ctx->bx;
	regs[ALLOC_REG_R12] = ctx->r12;
	regs[ALLOC_REG_R13] = ctx->r13;
	regs[ALLOC_REG_R14] = ctx->r14;
	regs[ALLOC_REG_R15] = ctx->r15;
}

/* The top of the user stack into stack, which has room for stack_copy_size bytes; returns the
 * bytes copied. The copy is as long as configured or, when the stack ends sooner (a read
 * crossing the end of the mapping fails), the longest halving of it that fits, topped up with
 * the smaller halvings that still fit after it (8 KiB, then 4 KiB at +8 KiB, 2 KiB at +12 KiB,
 * ... down to 256 bytes): the copy reaches within 256 bytes of the stack's end, where main's
 * caller and main often are. Each size and offset tried is a constant for the verifier (the
 * configured size is). */
static __always_inline __u32 copy_user_stack(struct pt_regs *ctx, __u8 *stack)
{
	__u64 sp = PT_REGS_SP(ctx);
	__u32 size = stack_copy_size;
	__u32 copied = 0;

#pragma unroll
	for (int i = 0; i < 9; i++) {
		__u32 try_size = size >> i;

		if (try_size < 256 || try_size > ALLOC_MAX_STACK_COPY)
			break;
		if (copied > ALLOC_MAX_STACK_COPY - try_size || copied + try_size > size)
			continue;
		if (bpf_probe_read_user(stack + copied, try_size, (void *)(sp + copied)) == 0)
			copied += try_size;
	}
	if (size && !copied)
		__sync_fetch_and_add(&counters.stack_copy_errors, 1);
	return copied;
}

/* With only_caller: whether the current process still runs with the caller's uids and gids
 * and no capabilities (it may have exec'ed a set-user-ID program since it was attached). */
static __always_inline bool runs_as_caller(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	const struct cred *cred = BPF_CORE_READ(task, real_cred);
	kernel_cap_t permitted = { 1 };

	if (!cred)
		return false;
	if (BPF_CORE_READ(cred, uid.val) != caller_uid ||
	    BPF_CORE_READ(cred, euid.val) != caller_uid ||
	    BPF_CORE_READ(cred, suid.val) != caller_uid ||
	    BPF_CORE_READ(cred, gid.val) != caller_gid ||
	    BPF_CORE_READ(cred, egid.val) != caller_gid ||
	    BPF_CORE_READ(cred, sgid.val) != caller_gid)
		return false;
	if (bpf_core_read(&permitted, sizeof(permitted), &cred->cap_permitted))
		return false;
	return permitted.val == 0;
}

/* With only_caller: whether the current process is dumpable (SUID_DUMP_USER), as the kernel
 * requires before a process without CAP_SYS_PTRACE may read its memory (ptrace_may_access).
 * A process can turn that off at any time (prctl(PR_SET_DUMPABLE, 0): ssh-agent, gpg-agent
 * and other keepers of secrets do); its stack copy then stays out of the record. The return
 * addresses a frame walk reads are kept: they say where code runs, which the caller's probes
 * already see. */
static __always_inline bool target_dumpable(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	unsigned long flags = 0;

	if (!mm)
		return false;
	if (bpf_core_field_exists(((struct mm_struct___flags_bitmap *)0)->flags.__mm_flags)) {
		struct mm_struct___flags_bitmap *bitmap = (void *)mm;

		if (bpf_core_read(&flags, sizeof(flags), &bitmap->flags.__mm_flags[0]))
			return false;
	} else {
		struct mm_struct___flags_word *word = (void *)mm;

		if (bpf_core_read(&flags, sizeof(flags), &word->flags))
			return false;
	}
	return (flags & 3) == 1; /* MMF_DUMPABLE_MASK; SUID_DUMP_USER */
}

/* The room a stack-copy record reserves for a context section: all of the area when context
 * is read at all (the reservation's size is a constant), none otherwise. */
#define COPY_RECORD_CONTEXT_ROOM (read_context ? sizeof(struct alloc_context) : 0)
#define COPY_RECORD_BYTES                                                                          \
	(sizeof(struct alloc_record) + ALLOC_RECORD_REGS_BYTES + COPY_RECORD_CONTEXT_ROOM +        \
	 stack_copy_size)

/* A record with a stack copy, reserved in the ring at its largest (COPY_RECORD_BYTES) and
 * filled in place: header, registers, the context area, the copy. The context section is the
 * whole area whenever context is read (its head says whether the thread published any): the
 * reservation holds it either way, and the copy then starts at a constant offset, which keeps
 * the verifier's work on the copy's reads what it was. */
__noinline int submit_copy_record(struct pt_regs *ctx, __u64 size,
					       __u64 weighted_bytes, __u32 entry, bool at_entry)
{
	struct alloc_record *rec;
	__u64 trampoline;
	__u8 *stack;

	rec = bpf_ringbuf_reserve(&samples, COPY_RECORD_BYTES, 0);
	if (!rec) {
		submit_drop(size, weighted_bytes, entry);
		return 0;
	}
	trampoline = uretprobe_trampoline();
	record_header(rec, size, weighted_bytes, entry);
	track_live_sample(ctx, rec);
	record_caller(ctx, rec, at_entry, trampoline);
	record_regs(ctx, (__u64 *)(rec + 1));
	rec->regs_bytes = ALLOC_RECORD_REGS_BYTES;
	if (read_context) {
		read_thread_context(
			(struct alloc_context *)((__u8 *)(rec + 1) + ALLOC_RECORD_REGS_BYTES));
		rec->context_bytes = sizeof(struct alloc_context);
	}
	stack = (__u8 *)(rec + 1) + ALLOC_RECORD_REGS_BYTES + COPY_RECORD_CONTEXT_ROOM;
	if (only_caller && !target_dumpable()) {
		/* The registers only (where the agent's walk starts), no stack memory. */
		__sync_fetch_and_add(&counters.not_dumpable, 1);
	} else {
		rec->stack_bytes = copy_user_stack(ctx, stack);
		/* Return addresses a return probe's trampoline replaced, given back. */
		uretprobe_fix_copy(trampoline, PT_REGS_SP(ctx), stack, rec->stack_bytes,
				   stack_copy_size);
	}
	__sync_fetch_and_add(&counters.samples, 1);
	bpf_ringbuf_submit(rec, bpf_ringbuf_query(&samples, BPF_RB_AVAIL_DATA) > wakeup_bytes
					? BPF_RB_FORCE_WAKEUP
					: BPF_RB_NO_WAKEUP);
	return 0;
}

/* A record without a stack copy (--unwind fp, or no copy configured), built in the scratch
 * area and sent at its length: header, the frame-pointer walk's pcs, the context if any. */
__noinline int submit_walk_record(struct pt_regs *ctx, __u64 size,
					       __u64 weighted_bytes, __u32 entry, bool at_entry)
{
	struct record_scratch *scratch;
	struct alloc_record *rec;
	__u32 zero = 0;
	__u64 seq, fp_bytes = 0, context_bytes;
	long got;

	scratch = bpf_map_lookup_elem(&record_scratch_buf, &zero);
	if (!scratch) {
		submit_drop(size, weighted_bytes, entry);
		return 0;
	}
	seq = __sync_fetch_and_add(&scratch->seq, 1) + 1;
	rec = (struct alloc_record *)scratch->words;
	record_header(rec, size, weighted_bytes, entry);
	track_live_sample(ctx, rec);
	record_caller(ctx, rec, at_entry, uretprobe_trampoline());
	if (walk_frame_pointers) {
		got = bpf_get_stack(ctx, &scratch->words[RECORD_HEADER_WORDS],
				    ALLOC_MAX_STACK_DEPTH * sizeof(__u64), BPF_F_USER_STACK);
		rec->fp_status = (__s32)got;
		if (got < 0)
			__sync_fetch_and_add(&counters.stack_errors, 1);
		else if (got <= ALLOC_MAX_STACK_DEPTH * sizeof(__u64))
			fp_bytes = got & ~7ul;
	}
	rec->fp_bytes = fp_bytes;
	read_thread_context(&scratch->context);
	context_bytes = record_context_bytes(&scratch->context);
	barrier_var(context_bytes);
	if (context_bytes > sizeof(struct alloc_context))
		context_bytes = 0;
	barrier_var(context_bytes);
	fp_bytes &= (UNWIND_MAX_FRAMES - 1) * 8; /* <= 127 words already; for the verifier */
	if (context_bytes &&
	    bpf_probe_read_kernel((__u8 *)&scratch->words[RECORD_HEADER_WORDS] + fp_bytes,
				  context_bytes, &scratch->context))
		context_bytes = 0;
	rec->context_bytes = context_bytes;
	record_send(scratch, seq, sizeof(*rec) + fp_bytes + ((context_bytes + 7) & ~7ul), size,
		    weighted_bytes, entry);
	return 0;
}

/* One sampled allocation to the ring buffer: walked in the kernel with the unwind tables when
 * it can be, else with a stack copy when one is configured, else with the frame-pointer walk
 * (or no stack at all). at_entry: the probe is at a function's entry (not a USDT site). */
static __noinline int submit_sample(struct pt_regs *ctx, __u64 size, __u64 weighted_bytes,
				    __u32 entry, bool at_entry)
{
	if (only_caller && !runs_as_caller()) {
		__sync_fetch_and_add(&counters.not_permitted, 1);
		return 0;
	}
	if (kernel_unwind && unwind_and_submit(ctx, size, weighted_bytes, entry, at_entry))
		return 0;
	if (stack_copy_size)
		submit_copy_record(ctx, size, weighted_bytes, entry, at_entry);
	else
		submit_walk_record(ctx, size, weighted_bytes, entry, at_entry);
	return 0;
}

/* The countdown ran out within this allocation (or was never started): decide, and when the
 * allocation is sampled, record it. Kept out of line so the common path stays small. Returns
 * 1 when the allocation was sampled (the session program then asks for its return). */
static __noinline int sample_allocation(struct pt_regs *ctx, struct thread_countdown *countdown,
					__u64 size)
{
	if (!countdown->started) {
		/* A new thread: its first interval starts at this allocation. */
		countdown->started = 1;
		countdown->bytes_left = next_interval();
		if (countdown->bytes_left > size) {
			countdown->bytes_left -= size;
			return 0;
		}
	}
	/* Sampled. Intervals are memoryless, so the next one starts at this allocation's end. */
	countdown->bytes_left = next_interval();
	submit_sample(ctx, size, 0, (__u32)(bpf_get_attach_cookie(ctx) & ALLOC_COOKIE_KIND_MASK),
		      true);
	return 1;
}

static __always_inline void count_probe_hit(struct pt_regs *ctx)
{
	__u32 slot = (__u32)(bpf_get_attach_cookie(ctx) >> ALLOC_COOKIE_SLOT_SHIFT);
	__u64 *hits = bpf_map_lookup_elem(&probe_hits, &slot);

	if (hits)
		*hits += 1;
}

/* Whether this allocation was sampled (and recorded, unless the ring was full). */
static __always_inline bool count_allocation(struct pt_regs *ctx, __u64 size)
{
	struct thread_countdown *countdown;

	count_probe_hit(ctx);
	countdown = bpf_task_storage_get(&countdowns, bpf_get_current_task_btf(), 0,
					 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!countdown) {
		__sync_fetch_and_add(&counters.storage_errors, 1);
		return 0;
	}
	if (size == 0)
		size = 1;
	if (countdown->bytes_left > size) {
		countdown->bytes_left -= size;
		return false;
	}
	return sample_allocation(ctx, countdown, size) != 0;
}

static __always_inline int on_allocation(struct pt_regs *ctx, __u64 size)
{
	count_allocation(ctx, size);
	return 0;
}

/* malloc, valloc, pvalloc, operator new, mallocx: size is the first argument. */
SEC("uprobe")
int BPF_KPROBE(alloc_size_arg1, __u64 size)
{
	return on_allocation(ctx, size);
}

/* The largest alignment an aligned entry point's allocator hands to its probed malloc (glibc:
 * 16), from the attach cookie; those calls are malloc's to count. 0 for no relay. */
static __always_inline __u64 relayed_alignment(__u64 cookie)
{
	return (cookie >> ALLOC_COOKIE_RELAY_SHIFT) & ALLOC_COOKIE_RELAY_MAX;
}

/* posix_memalign fails with EINVAL, allocating nothing, unless the alignment is a power of
 * two multiple of sizeof(void *) (POSIX; every allocator checks it). */
static __always_inline bool posix_alignment_valid(__u64 alignment)
{
	return alignment >= sizeof(void *) && (alignment & (alignment - 1)) == 0;
}

/* memalign, aligned_alloc (alignment, size). */
SEC("uprobe")
int BPF_KPROBE(alloc_size_arg2, __u64 alignment, __u64 size)
{
	if (alignment <= relayed_alignment(bpf_get_attach_cookie(ctx)))
		return 0;
	return on_allocation(ctx, size);
}

/* posix_memalign (memptr, alignment, size). */
SEC("uprobe")
int BPF_KPROBE(alloc_size_arg3, void *memptr, __u64 alignment, __u64 size)
{
	if (!posix_alignment_valid(alignment) ||
	    alignment <= relayed_alignment(bpf_get_attach_cookie(ctx)))
		return 0;
	return on_allocation(ctx, size);
}

/* calloc (nmemb, size): a product that overflows fails without allocating, so it is not an
 * allocation. */
static __always_inline bool calloc_overflows(__u64 nmemb, __u64 size)
{
	/* Both factors below 2^32 cannot overflow; otherwise check by division (BPF has no
	 * 128-bit multiply for the compiler's overflow builtin). */
	if ((nmemb | size) >> 32 && size) {
		__u64 max_nmemb = ~0ull / size;

		barrier_var(max_nmemb); /* keeps clang from turning this into __multi3 */
		return nmemb > max_nmemb;
	}
	return false;
}

SEC("uprobe")
int BPF_KPROBE(alloc_calloc, __u64 nmemb, __u64 size)
{
	if (calloc_overflows(nmemb, size))
		return 0;
	return on_allocation(ctx, nmemb * size);
}

/* realloc (ptr, size): realloc(NULL, n) is glibc's malloc and is counted by the malloc probe;
 * realloc(p, 0) frees. */
static __always_inline bool realloc_allocates(const void *ptr, __u64 size)
{
	return ptr && size;
}

SEC("uprobe")
int BPF_KPROBE(alloc_realloc, void *ptr, __u64 size)
{
	if (!realloc_allocates(ptr, size))
		return 0;
	return on_allocation(ctx, size);
}

/* A realloc that serves realloc(NULL, n) in its own body, not through a probed malloc
 * (jemalloc, tcmalloc, mimalloc; also rallocx and xallocx, whose pointer is never NULL):
 * everything but realloc(p, 0), which frees, is an allocation. */
static __always_inline bool realloc_any_allocates(const void *ptr, __u64 size)
{
	return !ptr || size;
}

SEC("uprobe")
int BPF_KPROBE(alloc_realloc_any, void *ptr, __u64 size)
{
	if (!realloc_any_allocates(ptr, size))
		return 0;
	return on_allocation(ctx, size);
}

/* The cooperative path: otel_memory:alloc(ptr, size, weighted_bytes), which an in-process
 * sampler fires only for the allocations it sampled. No countdown here: the sampler did that
 * at a few ns per allocation, and its weight says what the sample stands for. */
static __noinline int on_usdt_alloc(struct pt_regs *ctx, __u64 cookie)
{
	__u32 index = (__u32)(cookie - ALLOC_COOKIE_USDT);
	struct usdt_probe_spec *spec;
	__u64 size, weighted_bytes;

	count_probe_hit(ctx);
	spec = bpf_map_lookup_elem(&usdt_specs, &index);
	if (!spec || spec->n_args < 3 || usdt_arg_fetch(ctx, &spec->args[1], &size) ||
	    usdt_arg_fetch(ctx, &spec->args[2], &weighted_bytes)) {
		__sync_fetch_and_add(&counters.usdt_errors, 1);
		return 0;
	}
	if (size == 0)
		size = 1;
	if (weighted_bytes < size)
		weighted_bytes = size; /* a sample stands for at least itself */
	return submit_sample(ctx, size, weighted_bytes, ALLOC_ENTRY_USDT_ALLOC, false);
}

/* The USDT for one perf-event uprobe per site, where uprobe_multi links are missing. */
SEC("uprobe")
int alloc_usdt(struct pt_regs *ctx)
{
	__u64 cookie = bpf_get_attach_cookie(ctx) & ALLOC_COOKIE_ENTRY_MASK;

	if (cookie & ALLOC_COOKIE_USDT_FREE)
		return on_usdt_free(ctx, cookie);
	return on_usdt_alloc(ctx, cookie);
}

/* Every entry point at once, for a uprobe_multi link (libbpf loads it with that attach type;
 * the agent leaves it out on kernels that refuse it). A multi link runs one program for all
 * its offsets, so the attach cookie, the entry point, says which argument holds the size: a
 * compare or two before the same countdown as the per-layout programs. */
static __always_inline bool multi_allocation(struct pt_regs *ctx, __u64 entry)
{
	__u64 nmemb, size, alignment;

	switch (entry) {
	case ALLOC_ENTRY_MALLOC:
	case ALLOC_ENTRY_VALLOC:
	case ALLOC_ENTRY_PVALLOC:
	case ALLOC_ENTRY_NEW:
		size = PT_REGS_PARM1(ctx);
		break;
	case ALLOC_ENTRY_MEMALIGN:
		size = PT_REGS_PARM2(ctx);
		break;
	case ALLOC_ENTRY_POSIX_MEMALIGN:
		if (!posix_alignment_valid(PT_REGS_PARM2(ctx)))
			return false;
		size = PT_REGS_PARM3(ctx);
		break;
	case ALLOC_ENTRY_CALLOC:
		nmemb = PT_REGS_PARM1(ctx);
		size = PT_REGS_PARM2(ctx);
		/* Left alone, clang merges the two branches' register reads into ctx + a
		 * variable offset, which the verifier refuses to dereference. */
		barrier_var(nmemb);
		barrier_var(size);
		if (calloc_overflows(nmemb, size))
			return false;
		size *= nmemb;
		break;
	case ALLOC_ENTRY_REALLOC:
		if (!realloc_allocates((void *)PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx)))
			return false;
		size = PT_REGS_PARM2(ctx);
		break;
	case ALLOC_ENTRY_REALLOC_ANY:
		if (!realloc_any_allocates((void *)PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx)))
			return false;
		size = PT_REGS_PARM2(ctx);
		break;
	default:
		/* An aligned entry whose cookie carries a relayed alignment: the cases above
		 * never see it, so malloc's path is the same compare as before. */
		/* Each read pinned where it is (barrier_var), as for calloc: merged, the two
		 * branches' reads become ctx + a variable offset, which the verifier refuses. */
		if ((entry & ALLOC_COOKIE_KIND_MASK) == ALLOC_ENTRY_MEMALIGN) {
			alignment = PT_REGS_PARM1(ctx);
			barrier_var(alignment);
			size = PT_REGS_PARM2(ctx);
			barrier_var(size);
		} else if ((entry & ALLOC_COOKIE_KIND_MASK) == ALLOC_ENTRY_POSIX_MEMALIGN) {
			alignment = PT_REGS_PARM2(ctx);
			barrier_var(alignment);
			size = PT_REGS_PARM3(ctx);
			barrier_var(size);
			if (!posix_alignment_valid(alignment))
				return false;
		} else {
			return false;
		}
		if (alignment <= relayed_alignment(entry))
			return false;
		break;
	}
	return count_allocation(ctx, size);
}

SEC("uprobe.multi")
int alloc_multi(struct pt_regs *ctx)
{
	__u64 entry = bpf_get_attach_cookie(ctx) & ALLOC_COOKIE_ENTRY_MASK;

	if (entry >= ALLOC_COOKIE_USDT)
		return entry & ALLOC_COOKIE_USDT_FREE ? on_usdt_free(ctx, entry)
						      : on_usdt_alloc(ctx, entry);
	multi_allocation(ctx, entry);
	return 0;
}

/* In-use on the transparent path: alloc_multi's work at the entry, as a session uprobe (the
 * agent loads it as BPF_TRACE_UPROBE_SESSION), so that a sampled call, and only a sampled one,
 * also runs at its return, where the pointer is (live.bpf.h). The entry returns 1 for every
 * other call: the kernel then sets no return trap, and a non-sampled allocation costs what it
 * costs under alloc_multi. Frees (ALLOC_COOKIE_FREE) share the link and never ask for the
 * return either. */
SEC("uprobe.multi")
int alloc_session(struct pt_regs *ctx)
{
	__u64 entry = bpf_get_attach_cookie(ctx) & ALLOC_COOKIE_ENTRY_MASK;

	if (bpf_session_is_return())
		return on_session_return(ctx, entry);
	if (entry & ALLOC_COOKIE_FREE)
		return on_free(ctx); /* counts its hit: a trap the overhead budget counts too */
	if (entry >= ALLOC_COOKIE_USDT)
		return 1; /* never attached here */
	if (((entry & ALLOC_COOKIE_KIND_MASK) == ALLOC_ENTRY_REALLOC ||
	     (entry & ALLOC_COOKIE_KIND_MASK) == ALLOC_ENTRY_REALLOC_ANY) &&
	    PT_REGS_PARM1(ctx))
		forget_pointer(PT_REGS_PARM1(ctx)); /* realloc: a free, then maybe an allocation */
	if (!multi_allocation(ctx, entry))
		return 1;
	return session_wants_return();
}

static __always_inline void send_process_event(__u32 type, __u32 pid, __u32 parent_pid)
{
	struct process_event *event;

	event = bpf_ringbuf_reserve(&process_events, sizeof(*event), 0);
	if (!event) {
		__sync_fetch_and_add(&counters.process_events_lost, 1);
		return;
	}
	event->type = type;
	event->pid = pid;
	event->parent_pid = parent_pid;
	event->reserved = 0;
	bpf_ringbuf_submit(event, 0);
}

/* Attached only by the continuous agent. After exec the caller is the new image's task, and
 * its tgid is the process's pid even when a non-leader thread exec'ed. */
SEC("raw_tp/sched_process_exec")
int process_exec(void *ctx)
{
	send_process_event(PROCESS_EVENT_EXEC, bpf_get_current_pid_tgid() >> 32, 0);
	return 0;
}

/* Runs in the parent. New threads (pid != tgid) are not processes. */
SEC("raw_tp/sched_process_fork")
int BPF_PROG(process_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 parent_tgid = bpf_get_current_pid_tgid() >> 32;
	int child_pid = BPF_CORE_READ(child, pid);
	int child_tgid = BPF_CORE_READ(child, tgid);

	if (child_pid != child_tgid)
		return 0;
	if (!bpf_map_lookup_elem(&profiled_processes, &parent_tgid))
		return 0;
	send_process_event(PROCESS_EVENT_FORK, (__u32)child_tgid, parent_tgid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
