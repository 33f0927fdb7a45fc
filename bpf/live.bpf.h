/* In-use (live heap) tracking in the kernel, for alloc.bpf.c: a bounded hash map of the
 * sampled allocations still live, keyed by (process, pointer), which the agent reads at the
 * end of a capture or interval and joins with the samples it aggregated (by pid and the
 * sample's time_ns, the sample's identity). A free deletes its entry here; nothing crosses
 * the ring for frees, so a free costs one hash delete, and a free of a pointer never sampled a
 * failed lookup.
 *
 * Only the cooperative path is tracked so far: otel_memory:alloc gives the pointer with the
 * sample, and otel_memory:free fires only for pointers the in-process sampler sampled. The
 * map is full at max_entries (set by the agent before load): the insert fails, and the
 * sample is counted in live_overflow, which the agent reports and flags the profile with. */
#ifndef ALLOCSCOPE_LIVE_BPF_H
#define ALLOCSCOPE_LIVE_BPF_H

static __always_inline void count_probe_hit(void);

/* Set by the agent before load: track live allocations (--inuse). */
const volatile bool track_live = false;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, ALLOC_LIVE_DEFAULT_ENTRIES); /* resized by the agent before load */
	__type(key, struct alloc_live_key);
	__type(value, struct alloc_live);
} live_allocs SEC(".maps");

/* The pointer a cooperative sample was taken for: the first argument of otel_memory:alloc at
 * the site the attach cookie names. */
static __always_inline bool usdt_pointer(struct pt_regs *ctx, __u64 cookie, __u64 *ptr)
{
	__u32 index = (__u32)((cookie & ~ALLOC_COOKIE_USDT_FREE) - ALLOC_COOKIE_USDT);
	struct usdt_probe_spec *spec = bpf_map_lookup_elem(&usdt_specs, &index);

	return spec && spec->n_args >= 1 && !usdt_arg_fetch(ctx, &spec->args[0], ptr);
}

/* A sampled allocation just recorded as rec: remember it as live until its free. */
static __always_inline void track_live_sample(struct pt_regs *ctx, const struct alloc_sample *rec)
{
	struct alloc_live_key key = {};
	struct alloc_live value;
	__u64 ptr;

	if (!track_live || rec->entry != ALLOC_ENTRY_USDT_ALLOC)
		return;
	if (!usdt_pointer(ctx, bpf_get_attach_cookie(ctx), &ptr) || !ptr)
		return;
	key.pid = rec->pid;
	key.ptr = ptr;
	value.time_ns = rec->time_ns;
	value.size = rec->size;
	value.weighted_bytes = rec->weighted_bytes;
	if (bpf_map_update_elem(&live_allocs, &key, &value, BPF_ANY))
		__sync_fetch_and_add(&counters.live_overflow, 1);
}

/* otel_memory:free(ptr): the in-process sampler fires it only for pointers it sampled. */
static __noinline int on_usdt_free(struct pt_regs *ctx, __u64 cookie)
{
	struct alloc_live_key key = {};
	__u64 ptr;

	count_probe_hit();
	if (!usdt_pointer(ctx, cookie, &ptr)) {
		__sync_fetch_and_add(&counters.usdt_errors, 1);
		return 0;
	}
	key.pid = bpf_get_current_pid_tgid() >> 32;
	key.ptr = ptr;
	if (bpf_map_delete_elem(&live_allocs, &key) == 0)
		__sync_fetch_and_add(&counters.live_frees, 1);
	return 0;
}

#endif
