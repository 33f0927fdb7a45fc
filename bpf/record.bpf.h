/* Building a sample record (struct alloc_record in alloc.h: a 64-byte header, then only the
 * sections the record uses) in a per-CPU scratch area, so that it goes to the ring at its own
 * length (bpf_ringbuf_output): the kernel walk's records (unwind.bpf.h) and the frame-pointer
 * walk's (alloc.bpf.c). A record with a stack copy is too large for a per-CPU area (32 KiB at
 * most) and is reserved in the ring directly.
 *
 * A uprobe program can be preempted and another run on the same CPU: seq counts the records
 * begun on this CPU, so one whose scratch was overwritten meanwhile knows it (and is sent as a
 * drop notice: its weight is kept, its stack is not). */
#ifndef ALLOCSCOPE_RECORD_BPF_H
#define ALLOCSCOPE_RECORD_BPF_H

#include "alloc.h"

#define RECORD_HEADER_WORDS (sizeof(struct alloc_record) / 8)
/* Word indexes are masked for the verifier: a context section (<= 36 words) fits under 64,
 * frames under UNWIND_MAX_FRAMES. */
#define RECORD_CONTEXT_WORDS 64
#define RECORD_SCRATCH_WORDS (RECORD_HEADER_WORDS + RECORD_CONTEXT_WORDS + UNWIND_MAX_FRAMES)

struct record_scratch {
	__u64 seq;
	/* The frame-pointer path's context, read here before it goes after the walk's pcs. */
	struct alloc_context context;
	__u64 words[RECORD_SCRATCH_WORDS]; /* the record */
};
_Static_assert(sizeof(struct alloc_context) <= RECORD_CONTEXT_WORDS * 8,
	       "a context section fits its masked room");
_Static_assert(ALLOC_MAX_STACK_DEPTH <= UNWIND_MAX_FRAMES, "fp pcs fit the frames' room");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct record_scratch);
} record_scratch_buf SEC(".maps");

/* The context section's length for a context read into c: 0 when the thread published none,
 * else the area's head and the data it filled (read_thread_context keeps that within the
 * area; a record that claimed more would be refused by the reader, and every offset built
 * from it is masked). Without a branch: the kernel walk follows, and two states entering it
 * (with and without context) made the verifier check it twice. */
static __always_inline __u32 record_context_bytes(const struct alloc_context *c)
{
	__u32 present = ((__u32)c->kind + 255) >> 8; /* 0 for ALLOC_CONTEXT_NONE, else 1 */

	return (ALLOC_CONTEXT_HEAD_BYTES + ((__u32)c->bytes & 511)) & -present;
}

/* Fills the header's fields every record has; the caller sets flags and section lengths. */
static __always_inline void record_header(struct alloc_record *rec, __u64 size,
					  __u64 weighted_bytes, __u32 entry)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	rec->pid = pid_tgid >> 32;
	rec->tid = (__u32)pid_tgid;
	rec->size = size;
	rec->time_ns = bpf_ktime_get_ns();
	rec->weighted_bytes = weighted_bytes;
	rec->entry = entry;
	rec->flags = 0;
	rec->fp_status = 0;
	rec->regs_bytes = 0;
	rec->fp_bytes = 0;
	rec->stack_bytes = 0;
	rec->context_bytes = 0;
	rec->reserved = 0;
	rec->caller_address = 0;
}

/* At a function's entry the return address sits at *sp (the frame walks miss it there); a
 * USDT site is inside a function, where *sp is anything. A return probe on a function that
 * tail-jumped here put its trampoline at *sp: the original is given back (uretprobe.bpf.h;
 * trampoline: uretprobe_trampoline(), 0 when the process has none). */
static __always_inline void record_caller(struct pt_regs *ctx, struct alloc_record *rec,
					  bool at_entry, __u64 trampoline)
{
	if (!at_entry)
		return;
	if (bpf_probe_read_user(&rec->caller_address, sizeof(rec->caller_address),
				(void *)PT_REGS_SP(ctx))) {
		rec->caller_address = 0;
		__sync_fetch_and_add(&counters.caller_errors, 1);
		return;
	}
	rec->caller_address = uretprobe_original(trampoline, PT_REGS_SP(ctx), rec->caller_address);
}

/* Sends a scratch record of len bytes, or its drop notice when the ring is full or another
 * record on this CPU overwrote the scratch since seq. */
static __always_inline void record_send(struct record_scratch *scratch, __u64 seq, __u64 len,
					__u64 size, __u64 weighted_bytes, __u32 entry)
{
	if (scratch->seq != seq) {
		__sync_fetch_and_add(&counters.unwind_preempted, 1);
		send_drop_notice(size, weighted_bytes, entry);
		return;
	}
	if (len > sizeof(scratch->words))
		len = sizeof(scratch->words);
	barrier_var(len);
	if (bpf_ringbuf_output(&samples, scratch->words, len,
			       bpf_ringbuf_query(&samples, BPF_RB_AVAIL_DATA) > wakeup_bytes
				   ? BPF_RB_FORCE_WAKEUP
				   : BPF_RB_NO_WAKEUP)) {
		submit_drop(size, weighted_bytes, entry);
		return;
	}
	__sync_fetch_and_add(&counters.samples, 1);
}

#endif
