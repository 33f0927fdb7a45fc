/* Reading the sampled thread's request context (struct alloc_context in alloc.h), on the
 * sampled path only: a non-sampled allocation never gets here. The agent put where the
 * process's threads keep their TLS pointer in context_procs (struct context_proc); the
 * thread pointer is task->thread.fsbase (x86-64, TLS variant II: static TLS sits below it).
 *
 * Torn reads: the thread is stopped in its own allocator call while this runs, so a record
 * can be inconsistent only when the writer was interrupted in the middle of an update (a
 * signal handler that allocates) or broke the protocol. The OTel record says so itself
 * (valid != 1: skipped, counted context_torn). Custom Labels v1 has no such byte; its writer
 * updates by pointer swaps, and every length read here is bounded, so a bad record gives
 * cut or missing labels, never a fault. */
#ifndef ALLOCSCOPE_CONTEXT_BPF_H
#define ALLOCSCOPE_CONTEXT_BPF_H

/* Set by the agent before load: whether context is read at all, and how many attribute bytes
 * of an OTel record are copied (<= ALLOC_CONTEXT_MAX_BYTES). */
const volatile bool read_context = false;
const volatile __u32 context_max_bytes = ALLOC_CONTEXT_MAX_BYTES;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, CONTEXT_MAX_PROCS);
	__type(key, __u32);
	__type(value, struct context_proc);
} context_procs SEC(".maps");

/* The OTel record's fixed head (OTEP 4947): 28 bytes before attrs_data. */
struct otel_ctx_head {
	__u8 trace_id[16];
	__u8 span_id[8];
	__u8 valid;
	__u8 reserved;
	__u16 attrs_data_size;
};

/* Custom Labels v1: custom_labels_labelset_t and custom_labels_label_t. */
struct cl_labelset {
	__u64 storage;
	__u64 count;
	__u64 capacity;
};

struct cl_label {
	__u64 key_len, key_buf;
	__u64 value_len, value_buf;
};

/* The address of the thread's TLS pointer, or 0. */
static __always_inline __u64 context_tls_address(const struct context_tls *tls, __u64 fsbase)
{
	__u64 dtv = 0, block = 0;
	__u32 module = tls->module;

	if (tls->model == CONTEXT_TLS_STATIC)
		return fsbase + tls->offset;
	if (tls->model != CONTEXT_TLS_DTV || module == 0 || module > 4096)
		return 0;
	/* tcbhead_t {tcb, dtv, ...}; dtv entries {pointer, to_free}; an unallocated block is
	 * -1 (TLS_DTV_UNALLOCATED) until the thread first touches the module's TLS. */
	if (bpf_probe_read_user(&dtv, sizeof(dtv), (void *)(fsbase + 8)) || !dtv)
		return 0;
	if (bpf_probe_read_user(&block, sizeof(block), (void *)(dtv + (__u64)module * 16)))
		return 0;
	if (!block || block == ~0ull)
		return 0;
	return block + tls->offset;
}

static __always_inline void read_otel_context(struct alloc_context *out, __u64 record)
{
	struct otel_ctx_head head;
	__u64 size; /* 64-bit for the verifier, as off in read_custom_labels */

	if (bpf_probe_read_user(&head, sizeof(head), (void *)record)) {
		out->status = ALLOC_CONTEXT_UNREADABLE;
		__sync_fetch_and_add(&counters.context_unreadable, 1);
		return;
	}
	if (head.valid != 1) {
		out->status = ALLOC_CONTEXT_TORN;
		__sync_fetch_and_add(&counters.context_torn, 1);
		return;
	}
	__builtin_memcpy(out->trace_id, head.trace_id, sizeof(out->trace_id));
	__builtin_memcpy(out->span_id, head.span_id, sizeof(out->span_id));
	size = head.attrs_data_size;
	if (size > context_max_bytes)
		size = context_max_bytes;
	barrier_var(size); /* the bound below must hold for the register the read uses */
	if (size > ALLOC_CONTEXT_MAX_BYTES)
		size = ALLOC_CONTEXT_MAX_BYTES;
	barrier_var(size);
	if (size && bpf_probe_read_user(out->data, size, (void *)(record + sizeof(head)))) {
		out->status = ALLOC_CONTEXT_UNREADABLE;
		__sync_fetch_and_add(&counters.context_unreadable, 1);
		return;
	}
	out->bytes = size;
}

/* Labels are laid out in a per-CPU scratch twice the area's size, so that every offset and
 * length is bounded by a mask the verifier can follow; the area then gets what fits. */
struct context_scratch {
	__u8 bytes[ALLOC_CONTEXT_MAX_BYTES * 2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct context_scratch);
} context_scratches SEC(".maps");

static __always_inline void read_custom_labels(struct alloc_context *out, __u64 set_address)
{
	struct context_scratch *scratch;
	struct cl_labelset set;
	struct cl_label label;
	__u32 zero = 0;
	__u64 off = 0; /* 64-bit: a 32-bit one is compared on a zero-extended copy the verifier
			  does not tie back to it */

	scratch = bpf_map_lookup_elem(&context_scratches, &zero);
	if (!scratch)
		return;
	if (bpf_probe_read_user(&set, sizeof(set), (void *)set_address) || !set.storage) {
		out->status = ALLOC_CONTEXT_UNREADABLE;
		__sync_fetch_and_add(&counters.context_unreadable, 1);
		return;
	}
	for (int i = 0; i < ALLOC_CONTEXT_MAX_LABELS; i++) {
		__u64 klen, vlen;

		if ((__u64)i >= set.count)
			break;
		if (bpf_probe_read_user(&label, sizeof(label),
					(void *)(set.storage + (__u64)i * sizeof(label))))
			break;
		if (!label.key_buf || !label.value_buf)
			continue; /* an absent key: the slot is ignored (v1) */
		klen = label.key_len > ALLOC_CONTEXT_KEY_MAX ? ALLOC_CONTEXT_KEY_MAX
							      : label.key_len;
		vlen = label.value_len > ALLOC_CONTEXT_VALUE_MAX ? ALLOC_CONTEXT_VALUE_MAX
								  : label.value_len;
		if (off + 2 + klen + vlen > ALLOC_CONTEXT_MAX_BYTES)
			break;
		off &= ALLOC_CONTEXT_MAX_BYTES - 1;
		klen &= ALLOC_CONTEXT_KEY_MAX;
		vlen &= ALLOC_CONTEXT_VALUE_MAX;
		if (bpf_probe_read_user(&scratch->bytes[off + 2], klen, (void *)label.key_buf))
			break;
		if (bpf_probe_read_user(&scratch->bytes[off + 2 + klen], vlen,
					(void *)label.value_buf))
			break;
		scratch->bytes[off] = (__u8)klen;
		scratch->bytes[off + 1] = (__u8)vlen;
		off += 2 + klen + vlen;
	}
	/* off <= the area already (each label was checked to fit); said again where the
	 * verifier sees it, on the register the copy uses (clang folds a plain clamp away). */
	barrier_var(off);
	if (off > ALLOC_CONTEXT_MAX_BYTES)
		off = 0;
	barrier_var(off);
	if (off && bpf_probe_read_kernel(out->data, off, scratch->bytes))
		off = 0;
	out->bytes = off;
}

/* alloc.bpf.c: with only_caller, whether the process's memory is the caller's to read. */
static __always_inline bool target_dumpable(void);

/* Fills rec's context area from the current thread. Cheap when the process publishes
 * nothing: one hash lookup. With only_caller, a process that is not dumpable keeps its
 * context, like its stack memory, to itself.
 *
 * A global function: the verifier checks it once, on its own. Static, it was checked again
 * at every call site in every state that reaches it, which made loading the program with
 * the kernel walk take a second of CPU. */
__noinline int read_thread_context(struct alloc_context *out)
{
	struct task_struct *task;
	struct context_proc *proc;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 fsbase, slot, record;

	if (!out)
		return 0;
	out->kind = ALLOC_CONTEXT_NONE;
	out->status = ALLOC_CONTEXT_OK;
	out->bytes = 0;
	if (!read_context || (only_caller && !target_dumpable()))
		return 0;
	proc = bpf_map_lookup_elem(&context_procs, &tgid);
	if (!proc)
		return 0;
	task = (struct task_struct *)bpf_get_current_task();
	fsbase = BPF_CORE_READ(task, thread.fsbase);
	if (!fsbase)
		return 0;
	__builtin_memset(out->trace_id, 0, sizeof(out->trace_id));
	__builtin_memset(out->span_id, 0, sizeof(out->span_id));
#pragma unroll
	for (int i = 0; i < 2; i++) {
		struct context_tls *tls = &proc->tls[i];

		if (tls->kind == ALLOC_CONTEXT_NONE)
			continue;
		slot = context_tls_address(tls, fsbase);
		record = 0;
		if (!slot || bpf_probe_read_user(&record, sizeof(record), (void *)slot) || !record)
			continue;
		out->kind = tls->kind;
		if (tls->kind == ALLOC_CONTEXT_OTEL)
			read_otel_context(out, record);
		else
			read_custom_labels(out, record);
		return 0;
	}
	return 0;
}

#endif
