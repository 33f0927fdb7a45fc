/* In-use (live heap) tracking in the kernel, for alloc.bpf.c: a bounded hash map of the
 * sampled allocations still live, keyed by (process, pointer), which the agent reads at the
 * end of a capture or interval and joins with the samples it aggregated (by pid and the
 * sample's time_ns, the sample's identity). A free deletes its entry here; nothing crosses
 * the ring for frees, so a free costs one hash delete, and a free of a pointer never sampled a
 * failed lookup.
 *
 * The cooperative path: otel_memory:alloc gives the pointer with the sample, and
 * otel_memory:free fires only for pointers the in-process sampler sampled.
 * The transparent path (track_returns): alloc_session, a session uprobe, asks for the return of
 * sampled calls only; the sample's time and size wait in a per-thread slot (live_pending)
 * until the return gives the pointer. Frees are probes on free and its relatives (a trap on
 * every free, hence opt-in): a free of a pointer never sampled is one failed hash lookup.
 * The map is full at max_entries (set by the agent before load): the insert fails, and the
 * sample is counted in live_overflow, which the agent reports and flags the profile with. */
#ifndef ALLOCSCOPE_LIVE_BPF_H
#define ALLOCSCOPE_LIVE_BPF_H

static __always_inline void count_probe_hit(struct pt_regs *ctx);

/* Set by the agent before load: track live allocations (--inuse); and on the transparent
 * path, through alloc_session's returns (the kernel has session uprobes). */
const volatile bool track_live = false;
const volatile bool track_returns = false;

/* Session uprobe kfuncs (Linux 6.13+); only alloc_session, loaded as a session program, calls
 * them, and the agent loads it only where the kernel has them. */
extern bool bpf_session_is_return(void) __ksym __weak;
extern __u64 *bpf_session_cookie(void) __ksym __weak;

/* A sampled call between its entry and its return: the sample's identity and size, and for
 * posix_memalign where the pointer will be written. One per thread: a sampled call nested in
 * another (an allocator calling a probed function) takes the slot, and the outer call's
 * return, finding another time than its session cookie's, is counted in live_returns_lost. */
struct live_pending {
	__u64 time_ns;
	__u64 size;
	__u64 memptr;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct live_pending);
} live_pending SEC(".maps");

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
static __always_inline void track_live_sample(struct pt_regs *ctx, const struct alloc_record *rec)
{
	struct alloc_live_key key = {};
	struct alloc_live value;
	__u64 ptr;

	if (!track_live)
		return;
	if (rec->entry != ALLOC_ENTRY_USDT_ALLOC) {
		struct live_pending *pending;

		if (!track_returns)
			return;
		/* The pointer comes at the return: the sample waits for it here. */
		pending = bpf_task_storage_get(&live_pending, bpf_get_current_task_btf(), 0,
					       BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!pending)
			return;
		pending->time_ns = rec->time_ns;
		pending->size = rec->size;
		pending->memptr = rec->entry == ALLOC_ENTRY_POSIX_MEMALIGN ? PT_REGS_PARM1(ctx) : 0;
		return;
	}
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

	count_probe_hit(ctx);
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

/* A free (or realloc) of ptr: forget it if it was tracked; a miss is the common case. */
static __always_inline void forget_pointer(__u64 ptr)
{
	struct alloc_live_key key = {};

	key.pid = bpf_get_current_pid_tgid() >> 32;
	key.ptr = ptr;
	if (bpf_map_delete_elem(&live_allocs, &key) == 0)
		__sync_fetch_and_add(&counters.live_frees, 1);
}

/* A free probe (ALLOC_COOKIE_FREE): the pointer is the first argument. Never the return. */
static __always_inline int on_free(struct pt_regs *ctx)
{
	__u64 ptr = PT_REGS_PARM1(ctx);

	count_probe_hit(ctx);
	if (ptr)
		forget_pointer(ptr);
	return 1;
}

/* The entry of a sampled call: 0 (run the return) when the sample waits in live_pending,
 * with its time in the session cookie; 1 when it was not recorded (the ring was full). */
static __always_inline int session_wants_return(void)
{
	struct live_pending *pending;
	__u64 *cookie;

	pending = bpf_task_storage_get(&live_pending, bpf_get_current_task_btf(), 0, 0);
	if (!pending || !pending->time_ns)
		return 1;
	cookie = bpf_session_cookie();
	if (!cookie)
		return 1;
	*cookie = pending->time_ns;
	return 0;
}

/* The return of a sampled call: its pointer joins the live set. */
static __noinline int on_session_return(struct pt_regs *ctx, __u64 entry)
{
	struct alloc_live_key key = {};
	struct live_pending *pending;
	struct alloc_live value;
	__u64 *cookie = bpf_session_cookie();
	__u64 ptr = PT_REGS_RC(ctx);

	pending = bpf_task_storage_get(&live_pending, bpf_get_current_task_btf(), 0, 0);
	if (!cookie || !pending || !pending->time_ns || pending->time_ns != *cookie) {
		__sync_fetch_and_add(&counters.live_returns_lost, 1);
		return 0;
	}
	if ((entry & ALLOC_COOKIE_KIND_MASK) == ALLOC_ENTRY_POSIX_MEMALIGN) {
		/* It returns 0 and writes the pointer to *memptr. */
		if (ptr != 0 || !pending->memptr ||
		    bpf_probe_read_user(&ptr, sizeof(ptr), (void *)pending->memptr))
			ptr = 0;
	}
	value.time_ns = pending->time_ns;
	value.size = pending->size;
	value.weighted_bytes = 0; /* the agent weighs kernel samples at its rate */
	pending->time_ns = 0;
	if (!ptr) {
		__sync_fetch_and_add(&counters.live_returns_lost, 1);
		return 0;
	}
	key.pid = bpf_get_current_pid_tgid() >> 32;
	key.ptr = ptr;
	if (bpf_map_update_elem(&live_allocs, &key, &value, BPF_ANY))
		__sync_fetch_and_add(&counters.live_overflow, 1);
	return 0;
}

#endif
