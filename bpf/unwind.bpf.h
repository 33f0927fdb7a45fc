/* In-kernel stack unwinding for a sampled allocation, without copying the stack: the agent
 * turns each mapped file's CFI into rows (struct unwind_row) in one global array, and each
 * profiled process's executable mappings into a sorted list (struct unwind_proc). A walk
 * finds a pc's mapping and its row by binary search, computes the CFA from rsp or rbp, and
 * reads two words per frame: the return address at CFA - 8 and, where the row says so, the
 * saved rbp. It runs in bpf_loop, one frame per iteration, up to UNWIND_MAX_FRAMES.
 *
 * A pc outside the process's list (the loader mapped a library after the list was installed,
 * or the process has no list yet: a command just exec'ed) is looked up in the kernel instead:
 * bpf_find_vma names the mapping's file, and the file's table is found by its identity in
 * unwind_files, which the agent fills as it builds tables (before a command execs, for the
 * files it will map). So a process's first samples are walked too.
 *
 * Only the sampled path gets here. A leaf in a mapping without a table (none built, or the
 * file is unknown) is not walked: the caller sends the stack copy instead (counted as a
 * fallback). The frames are built in a per-CPU scratch record (record.bpf.h) after the header
 * and the thread's context, and sent with bpf_ringbuf_output at their own length; uprobe
 * programs can be preempted (not migrated), so a rare interleaving of two samples on one CPU
 * can overwrite a record: it is then sent as a drop notice. */
#ifndef ALLOCSCOPE_UNWIND_BPF_H
#define ALLOCSCOPE_UNWIND_BPF_H

#include "alloc.h"
#include "record.bpf.h"

/* Set by the agent before load: walk in the kernel where a table exists. */
const volatile bool kernel_unwind = false;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, UNWIND_DEFAULT_TABLE_ROWS); /* resized by the agent before load */
	__type(key, __u32);
	__type(value, struct unwind_row);
} unwind_rows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u32); /* tgid */
	__type(value, struct unwind_proc);
} unwind_procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, UNWIND_MAX_FILES);
	__type(key, struct unwind_file_key);
	__type(value, struct unwind_file_entry);
} unwind_files SEC(".maps");

struct unwind_walk {
	struct unwind_proc *proc; /* NULL: the agent has not installed the process's list */
	__u64 *words;   /* the scratch record */
	__u32 frames;   /* the word where the frames start: after the header and the context */
	__u64 ip, sp, bp;
	__u64 trampoline; /* the process's return-probe trampoline, 0 for none (uretprobe.bpf.h) */
	__u32 n;        /* frames written */
	bool activation; /* ip is where the frame is (leaf, or interrupted by a signal), not a
			    return address: look it up as is rather than at ip - 1 */
	bool bp_known;
	bool truncated;
	bool depth_cut; /* truncated with UNWIND_MAX_FRAMES frames and more to walk */
};

/* Binary searches run as bpf_loop callbacks: the verifier checks a callback once, where a
 * plain loop would be explored path by path (its bounds are precise: they index memory). */
struct unwind_search {
	struct unwind_proc *proc; /* mappings: NULL for rows */
	__u64 key;
	__u32 lo, hi;            /* the answer is the last entry below lo */
};

static long mapping_search_step(__u32 index, void *ctx)
{
	struct unwind_search *s = ctx;
	__u32 mid;

	if (s->lo >= s->hi)
		return 1;
	mid = ((s->lo + s->hi) / 2) & (UNWIND_MAX_MAPPINGS - 1);
	if (s->proc->mappings[mid].start <= s->key)
		s->lo = mid + 1;
	else
		s->hi = mid;
	return 0;
}

static long row_search_step(__u32 index, void *ctx)
{
	struct unwind_search *s = ctx;
	struct unwind_row *row;
	__u32 mid;

	if (s->lo >= s->hi)
		return 1;
	mid = s->lo + (s->hi - s->lo) / 2;
	row = bpf_map_lookup_elem(&unwind_rows, &mid);
	if (!row)
		return 1;
	if (row->pc <= s->key)
		s->lo = mid + 1;
	else
		s->hi = mid;
	return 0;
}

/* The mapping holding pc, or NULL. */
static __always_inline struct unwind_mapping *unwind_find_mapping(struct unwind_proc *proc,
								  __u64 pc)
{
	struct unwind_search s = { .proc = proc, .key = pc, .lo = 0, .hi = proc->n_mappings };
	struct unwind_mapping *m;

	if (s.hi > UNWIND_MAX_MAPPINGS)
		return NULL;
	bpf_loop(10, mapping_search_step, &s, 0);
	if (s.lo == 0 || s.lo > UNWIND_MAX_MAPPINGS)
		return NULL;
	m = &proc->mappings[(s.lo - 1) & (UNWIND_MAX_MAPPINGS - 1)];
	return pc >= m->start && pc < m->end ? m : NULL;
}

/* The row covering the file address addr among [first, first + count), or NULL. */
static __always_inline struct unwind_row *unwind_find_row(__u32 first, __u32 count, __u32 addr)
{
	struct unwind_search s = { .key = addr, .lo = first, .hi = first + count };
	__u32 key;

	bpf_loop(33, row_search_step, &s, 0);
	if (s.lo == first)
		return NULL;
	key = s.lo - 1;
	return bpf_map_lookup_elem(&unwind_rows, &key);
}

/* What bpf_find_vma's callback reports of the mapping holding a pc. */
struct unwind_vma {
	struct unwind_file_key key;
	__u64 start, end, pgoff;
	bool file;
};

static long unwind_vma_cb(struct task_struct *task, struct vm_area_struct *vma, void *ctx)
{
	struct unwind_vma *v = ctx;
	struct inode *inode = BPF_CORE_READ(vma, vm_file, f_inode);

	if (!inode)
		return 0;
	v->key.inode = BPF_CORE_READ(inode, i_ino);
	v->key.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	v->start = BPF_CORE_READ(vma, vm_start);
	v->end = BPF_CORE_READ(vma, vm_end);
	v->pgoff = BPF_CORE_READ(vma, vm_pgoff);
	v->file = true;
	return 0;
}

/* The kernel's mapping holding pc, with its file's table from unwind_files, into *out: 0, or
 * -1 when pc is not in a file the agent has a table for. The mm's lock is only tried: when
 * another thread holds it for writing, the frame ends the walk. Nothing is cached in the walk
 * (the process's list serves nearly every frame): a cached mapping or a lookup counter in the
 * walk's state multiplied the verifier's states, and loading took seconds. Not a global
 * function either: kernels before 6.8 verify those even when unreachable, so one without
 * bpf_find_vma (before 5.17) would refuse the program in every unwind mode. */
static __noinline int unwind_vma_mapping(__u64 pc, struct unwind_mapping *out)
{
	struct unwind_file_entry *file;
	struct unwind_vma v = {};
	__u64 bias;

	if (!out)
		return -1;
	if (bpf_find_vma(bpf_get_current_task_btf(), pc, unwind_vma_cb, &v, 0) || !v.file)
		return -1;
	file = bpf_map_lookup_elem(&unwind_files, &v.key);
	if (!file)
		return -1;
	bias = v.start - v.pgoff * 4096 - file->code_delta;
	/* Only the code segment's pages: other mappings of the file have other biases. */
	if (pc - bias < file->code_start || pc - bias >= file->code_end)
		return -1;
	out->start = v.start;
	out->end = v.end;
	out->bias = bias;
	out->row_first = file->row_first;
	out->row_count = file->row_count;
	return 0;
}

/* The mapping holding pc, copied into *out: from the process's list, else from the kernel's
 * (unwind_vma_mapping). false when none is known (out->row_count 0 also means no table). */
static __always_inline bool unwind_mapping_for(struct unwind_walk *w, __u64 pc,
					       struct unwind_mapping *out)
{
	struct unwind_mapping *m = w->proc ? unwind_find_mapping(w->proc, pc) : NULL;

	if (m) {
		*out = *m;
		return true;
	}
	return unwind_vma_mapping(pc, out) == 0;
}

static __always_inline bool unwind_read(__u64 addr, __u64 *value)
{
	return bpf_probe_read_user(value, sizeof(*value), (void *)addr) == 0;
}

/* Offsets in the ucontext_t that rsp points at in __restore_rt (uc_mcontext.gregs[]). */
#define UCONTEXT_RBP 120
#define UCONTEXT_RSP 160
#define UCONTEXT_RIP 168

/* One frame: records ip, then finds the caller's ip, sp, bp. 1 stops the loop. */
static long unwind_step(__u32 index, void *ctx)
{
	struct unwind_walk *w = ctx;
	struct unwind_mapping m;
	struct unwind_row *row;
	__u64 lookup, cfa, ra, value;
	__u32 n = w->n;

	/* The loop's extra iteration: the last frame kept had a caller. */
	if (n >= UNWIND_MAX_FRAMES) {
		w->truncated = true;
		w->depth_cut = true;
		return 1;
	}
	w->words[(w->frames & (RECORD_CONTEXT_WORDS - 1)) + RECORD_HEADER_WORDS +
		 (n & (UNWIND_MAX_FRAMES - 1))] = w->ip;
	w->n = n + 1;

	lookup = w->activation ? w->ip : w->ip - 1;
	if (!unwind_mapping_for(w, lookup, &m) || !m.row_count ||
	    lookup - m.bias > 0xffffffffull) {
		w->truncated = true;
		return 1;
	}
	row = unwind_find_row(m.row_first, m.row_count, (__u32)(lookup - m.bias));
	if (!row) {
		w->truncated = true;
		return 1;
	}
	switch (row->cfa_rule) {
	case UNWIND_CFA_RSP:
		cfa = w->sp + (__s64)row->cfa_offset;
		break;
	case UNWIND_CFA_RBP:
		if (!w->bp_known) {
			w->truncated = true;
			return 1;
		}
		cfa = w->bp + (__s64)row->cfa_offset;
		break;
	case UNWIND_CFA_PLT:
		cfa = w->sp + (__s64)row->cfa_offset +
		      ((w->ip & 15) >= (__u64)row->rbp_offset ? 8 : 0);
		break;
	case UNWIND_CFA_SIGNAL:
		if (!unwind_read(w->sp + UCONTEXT_RIP, &ra) ||
		    !unwind_read(w->sp + UCONTEXT_RBP, &value) ||
		    !unwind_read(w->sp + UCONTEXT_RSP, &cfa)) {
			w->truncated = true;
			return 1;
		}
		w->ip = ra;
		w->sp = cfa;
		w->bp = value;
		w->bp_known = true;
		w->activation = true;
		return ra ? 0 : 1;
	case UNWIND_CFA_END:
		return 1;
	default:
		w->truncated = true;
		return 1;
	}
	if (cfa <= w->sp || !unwind_read(cfa - 8, &ra)) {
		w->truncated = true;
		return 1;
	}
	ra = uretprobe_original(w->trampoline, cfa - 8, ra);
	if (row->rbp_rule == UNWIND_RBP_SAVED) {
		if (!unwind_read(cfa + (__s64)row->rbp_offset, &value)) {
			w->truncated = true;
			return 1;
		}
		w->bp = value;
		w->bp_known = true;
	} else if (row->rbp_rule == UNWIND_RBP_UNKNOWN) {
		w->bp_known = false;
	}
	w->ip = ra;
	w->sp = cfa;
	w->activation = false;
	/* A zero return address ends the chain (thread entry without CFI saying so). */
	return ra ? 0 : 1;
}

/* Walks the sampled thread's stack and sends the record: the header, the thread's context
 * when it published one, and the pcs. Returns true when sent (or lost to a full ring or a
 * preemption: sent as a drop notice), false when the caller should send a stack copy instead. */
static __noinline bool unwind_and_submit(struct pt_regs *ctx, __u64 size, __u64 weighted_bytes,
					 __u32 entry, bool at_entry)
{
	struct unwind_walk w = {};
	struct alloc_record *rec;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32, zero = 0, n, context_bytes;
	struct record_scratch *scratch;
	struct unwind_mapping m;
	__u64 seq;

	w.proc = bpf_map_lookup_elem(&unwind_procs, &tgid);
	scratch = bpf_map_lookup_elem(&record_scratch_buf, &zero);
	if (!scratch)
		goto fallback;
	w.ip = PT_REGS_IP(ctx);
	w.sp = PT_REGS_SP(ctx);
	w.bp = ctx->bp;
	w.bp_known = true;
	w.activation = true;
	if (!unwind_mapping_for(&w, w.ip, &m) || !m.row_count)
		goto fallback;

	seq = __sync_fetch_and_add(&scratch->seq, 1) + 1;
	rec = (struct alloc_record *)scratch->words;
	w.words = scratch->words;
	record_header(rec, size, weighted_bytes, entry);
	track_live_sample(ctx, rec);
	w.trampoline = uretprobe_trampoline();
	record_caller(ctx, rec, at_entry, w.trampoline);

	/* Before the walk, where the verifier has one state to check it in (after it, every
	 * outcome of the walk is one more); and before the sequence check, which covers it. The
	 * context goes right after the header, the frames after it. */
	read_thread_context((struct alloc_context *)&scratch->words[RECORD_HEADER_WORDS]);
	context_bytes = record_context_bytes(
		(struct alloc_context *)&scratch->words[RECORD_HEADER_WORDS]);
	rec->context_bytes = context_bytes;
	w.frames = (context_bytes + 7) / 8;

	/* One iteration more than frames kept: it tells a stack of exactly UNWIND_MAX_FRAMES
	 * frames from a deeper one cut at the limit. */
	bpf_loop(UNWIND_MAX_FRAMES + 1, unwind_step, &w, 0);

	n = w.n;
	if (n > UNWIND_MAX_FRAMES)
		n = UNWIND_MAX_FRAMES;
	/* Not even the allocator's caller: the copy and the agent's unwinder may do better. */
	if (n <= 1 && w.truncated)
		goto fallback;
	rec->stack_bytes = n * sizeof(__u64);
	rec->flags = ALLOC_SAMPLE_KERNEL_FRAMES | (w.truncated ? ALLOC_SAMPLE_TRUNCATED : 0) |
		     (w.depth_cut ? ALLOC_SAMPLE_DEPTH_CUT : 0);
	__sync_fetch_and_add(&counters.kernel_unwinds, 1);
	if (w.truncated)
		__sync_fetch_and_add(&counters.unwind_truncated, 1);
	record_send(scratch, seq,
		    sizeof(*rec) + (__u64)(w.frames & (RECORD_CONTEXT_WORDS - 1)) * 8 +
			    (__u64)n * sizeof(__u64),
		    size, weighted_bytes, entry);
	return true;
fallback:
	__sync_fetch_and_add(&counters.unwind_fallbacks, 1);
	return false;
}

#endif
