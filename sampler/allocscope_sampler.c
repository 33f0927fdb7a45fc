/* liballocscope-sampler.so: allocation sampling inside the process, for LD_PRELOAD.
 *
 * The kernel path puts a uprobe on malloc and pays a trap (~0.5 us) on every call to count
 * bytes. Here the counting happens in the process at a few nanoseconds per call, and only
 * sampled allocations fire the USDT otel_memory:alloc(ptr, size, weighted_bytes) (the
 * OpenTelemetry memory-profiling probe), which the profiler attaches to. The semantics are the
 * kernel path's (bpf/alloc.bpf.c): every byte is sampled with probability 1/R; a per-thread
 * countdown of bytes to the next sampled byte carries across allocations; an allocation that
 * reaches it is sampled, and a fresh interval is drawn; a sampled allocation of s bytes stands
 * for s / (1 - exp(-s/R)) bytes, which makes sums of weights unbiased.
 *
 * Cost model. The probe's semaphore is 0 unless a profiler is attached (the kernel increments
 * it when a uprobe is attached with its reference-counter offset), so the common path is: one
 * load and a predictable branch, then a tail call to the next allocator. With a profiler
 * attached: a thread-local decrement in initial-exec TLS (never __tls_get_addr, which may
 * allocate) and a second predictable branch. Everything else (the interval draw, the weight,
 * the probe) is in cold, out-of-line functions.
 *
 * Safety. The next allocator (glibc, or whatever RTLD_NEXT finds: jemalloc, tcmalloc, ...) is
 * looked up once with dlsym. Until that is done, each entry point's pointer leads to a lazy
 * function that performs the lookup; allocations made while the lookup itself runs (dlsym may
 * call calloc) come from a static bootstrap arena, which free ignores and realloc copies out
 * of. Optional entry points the next allocator lacks are built on its own aligned allocation
 * rather than taken from another library (jemalloc has no pvalloc; glibc's would hand it
 * blocks its free cannot take). No locks anywhere: the library cannot deadlock its host. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "allocscope_sampler.h"
#include "exact_count.h"
#include "live_set.h"
#include "sampling.h"
#include "usdt.h"

#define EXPORT	    __attribute__((visibility("default")))
#define COLD	    __attribute__((noinline, cold))
#define LIKELY(x)   __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define THREAD_IE   __thread __attribute__((tls_model("initial-exec")))

/* The default and the limit are the kernel path's (bpf/sampling.h). */
#define DEFAULT_SAMPLE_RATE SAMPLING_DEFAULT_RATE
#define MAX_SAMPLE_RATE	    SAMPLING_MAX_RATE
#define ARENA_SIZE	    (64 * 1024)
#define ARENA_ALIGN	    16

ALLOCSCOPE_USDT_SEMAPHORE(otel_memory, alloc);

/* ---- Per-thread state (initial-exec TLS: a %fs-relative access, no allocation) ---- */

/* Bytes until this thread's next sampled byte; 0 means no interval has been drawn yet (a new
 * thread, or the child after fork). Once drawn it is always at least 1: the fast path only
 * subtracts sizes smaller than it. */
static THREAD_IE uint64_t bytes_left;
static THREAD_IE uint64_t rng_state;
static THREAD_IE bool rng_seeded;
/* Set while this thread looks up the next allocator: its allocations come from the arena. */
static THREAD_IE bool resolving;

/* ---- Process-wide state ---- */

static uint64_t sample_rate = DEFAULT_SAMPLE_RATE; /* R; set by the constructor */
static double sample_rate_f = DEFAULT_SAMPLE_RATE;
static uint64_t stat_sampled, stat_weighted_bytes; /* relaxed atomics, sampled path only */
static bool allocator_resolved;

/* ---- The next allocator ---- */

typedef void *malloc_fn(size_t);
typedef void *calloc_fn(size_t, size_t);
typedef void *realloc_fn(void *, size_t);
typedef void *memalign_fn(size_t, size_t);
typedef int posix_memalign_fn(void **, size_t, size_t);
typedef void free_fn(void *);
typedef size_t usable_size_fn(void *);

static malloc_fn lazy_malloc, lazy_valloc, lazy_pvalloc;
static calloc_fn lazy_calloc;
static realloc_fn lazy_realloc;
static memalign_fn lazy_memalign, lazy_aligned_alloc;
static posix_memalign_fn lazy_posix_memalign;
static free_fn lazy_free;
static usable_size_fn lazy_usable_size;

/* Where each entry point forwards: a lazy_* function until the lookup has succeeded, then the
 * next definition (or, for the optional ones the next allocator lacks, a fallback_*). Never
 * NULL, so the hot path calls through them without a test. */
static malloc_fn *next_malloc = lazy_malloc;
static calloc_fn *next_calloc = lazy_calloc;
static realloc_fn *next_realloc = lazy_realloc;
static memalign_fn *next_memalign = lazy_memalign;
static memalign_fn *next_aligned_alloc = lazy_aligned_alloc;
static posix_memalign_fn *next_posix_memalign = lazy_posix_memalign;
static malloc_fn *next_valloc = lazy_valloc;
static malloc_fn *next_pvalloc = lazy_pvalloc;
static free_fn *next_free = lazy_free;
static usable_size_fn *next_usable_size = lazy_usable_size;

/* The raw dlsym results for the aligned entry points, which the fallbacks build on. */
static memalign_fn *found_memalign;
static posix_memalign_fn *found_posix_memalign;

/* Release stores keep found_* (read by the fallbacks) ahead of the pointers that lead there;
 * loads stay relaxed: on x86-64 (the only target, see usdt.h) they are ordered anyway, and the
 * hot path pays nothing for it. */
#define NEXT(fn)	    __atomic_load_n(&next_##fn, __ATOMIC_RELAXED)
#define SET_NEXT(fn, value) __atomic_store_n(&next_##fn, (value), __ATOMIC_RELEASE)

/* ---- Bootstrap arena: bump allocation, never reused, so it is always zeroed ---- */

static _Alignas(4096) unsigned char arena[ARENA_SIZE];
static size_t arena_used;

static inline bool in_arena(const void *ptr)
{
	return (uintptr_t)ptr - (uintptr_t)arena < ARENA_SIZE;
}

/* Each block is preceded by its size (8 bytes), for realloc and malloc_usable_size. */
static void *arena_alloc(size_t size, size_t align)
{
	size_t used = __atomic_load_n(&arena_used, __ATOMIC_RELAXED), start, end;

	if (align < ARENA_ALIGN)
		align = ARENA_ALIGN;
	if (align > 4096 || (align & (align - 1)) || size > ARENA_SIZE) {
		errno = ENOMEM;
		return NULL;
	}
	do {
		start = (used + sizeof(size_t) + align - 1) & ~(align - 1);
		end = start + size;
		if (end > ARENA_SIZE) {
			errno = ENOMEM;
			return NULL;
		}
	} while (!__atomic_compare_exchange_n(&arena_used, &used, end, false, __ATOMIC_RELAXED,
					      __ATOMIC_RELAXED));
	memcpy(arena + start - sizeof(size_t), &size, sizeof(size));
	return arena + start;
}

static size_t arena_block_size(const void *ptr)
{
	size_t size;

	memcpy(&size, (const unsigned char *)ptr - sizeof(size_t), sizeof(size));
	return size;
}

/* ---- Looking up the next allocator ---- */

static int page_size(void)
{
	long size = sysconf(_SC_PAGESIZE);

	return size > 0 ? (int)size : 4096;
}

/* Aligned allocation through whichever aligned entry point the next allocator has. */
static void *aligned_from_next(size_t align, size_t size)
{
	if (found_posix_memalign) {
		void *ptr = NULL;
		int err = found_posix_memalign(
		    &ptr, align < sizeof(void *) ? sizeof(void *) : align, size);

		if (err) {
			errno = err;
			return NULL;
		}
		return ptr;
	}
	if (found_memalign)
		return found_memalign(align, size);
	errno = ENOMEM;
	return NULL;
}

static void *fallback_memalign(size_t align, size_t size)
{
	return aligned_from_next(align, size);
}

static int fallback_posix_memalign(void **out, size_t align, size_t size)
{
	void *ptr;

	if (align < sizeof(void *) || (align & (align - 1)))
		return EINVAL;
	ptr = aligned_from_next(align, size);
	if (!ptr)
		return ENOMEM;
	*out = ptr;
	return 0;
}

static void *fallback_valloc(size_t size)
{
	return aligned_from_next((size_t)page_size(), size);
}

static void *fallback_pvalloc(size_t size)
{
	size_t page = (size_t)page_size();
	size_t rounded = (size + page - 1) & ~(page - 1);

	if (rounded < size) {
		errno = ENOMEM;
		return NULL;
	}
	return aligned_from_next(page, rounded ? rounded : page);
}

static size_t fallback_usable_size(void *ptr)
{
	(void)ptr;
	return 0; /* allowed: the caller may use no more than it asked for */
}

/* fn if it belongs to the object at base (the one that defines malloc), else NULL. An
 * allocator that lacks an optional entry point (jemalloc has no pvalloc) would otherwise
 * be paired with glibc's, whose blocks its free cannot take. */
static void *from_object(void *fn, const void *base)
{
	Dl_info info;

	if (!fn || !base)
		return fn;
	if (!dladdr(fn, &info) || info.dli_fbase != base)
		return NULL;
	return fn;
}

/* Looks up every entry point of the next allocator. Returns 0 when the required four were
 * found, -1 when they were not or when this thread is already inside the lookup (dlsym
 * allocating): the caller then serves the request from the arena. */
static int resolve_next_allocator(void)
{
	void *found_malloc, *found_calloc, *found_realloc, *found_free;
	void *found_aligned_alloc, *found_valloc, *found_pvalloc, *found_usable_size;
	const void *base = NULL;
	Dl_info info;

	if (__atomic_load_n(&allocator_resolved, __ATOMIC_ACQUIRE))
		return 0;
	if (resolving)
		return -1;
	resolving = true;
	found_malloc = dlsym(RTLD_NEXT, "malloc");
	found_calloc = dlsym(RTLD_NEXT, "calloc");
	found_realloc = dlsym(RTLD_NEXT, "realloc");
	found_free = dlsym(RTLD_NEXT, "free");
	if (found_malloc && dladdr(found_malloc, &info))
		base = info.dli_fbase;
	found_aligned_alloc = from_object(dlsym(RTLD_NEXT, "aligned_alloc"), base);
	found_valloc = from_object(dlsym(RTLD_NEXT, "valloc"), base);
	found_pvalloc = from_object(dlsym(RTLD_NEXT, "pvalloc"), base);
	found_usable_size = from_object(dlsym(RTLD_NEXT, "malloc_usable_size"), base);
	found_memalign = (memalign_fn *)from_object(dlsym(RTLD_NEXT, "memalign"), base);
	found_posix_memalign =
	    (posix_memalign_fn *)from_object(dlsym(RTLD_NEXT, "posix_memalign"), base);
	resolving = false;
	if (!found_malloc || !found_calloc || !found_realloc || !found_free)
		return -1;

	/* The optional ones first: once malloc's pointer is set, another thread may be on its
	 * way to any of them. */
	SET_NEXT(memalign, found_memalign ? found_memalign : fallback_memalign);
	SET_NEXT(posix_memalign,
		 found_posix_memalign ? found_posix_memalign : fallback_posix_memalign);
	SET_NEXT(aligned_alloc,
		 found_aligned_alloc ? (memalign_fn *)found_aligned_alloc : fallback_memalign);
	SET_NEXT(valloc, found_valloc ? (malloc_fn *)found_valloc : fallback_valloc);
	SET_NEXT(pvalloc, found_pvalloc ? (malloc_fn *)found_pvalloc : fallback_pvalloc);
	SET_NEXT(usable_size,
		 found_usable_size ? (usable_size_fn *)found_usable_size : fallback_usable_size);
	SET_NEXT(realloc, (realloc_fn *)found_realloc);
	SET_NEXT(free, (free_fn *)found_free);
	SET_NEXT(calloc, (calloc_fn *)found_calloc);
	SET_NEXT(malloc, (malloc_fn *)found_malloc);
	__atomic_store_n(&allocator_resolved, true, __ATOMIC_RELEASE);
	return 0;
}

/* The lazy entry points: a successful lookup replaced the pointer they were called through,
 * so calling through it again reaches the next allocator. */
static void *lazy_malloc(size_t size)
{
	if (resolve_next_allocator() == 0)
		return NEXT(malloc)(size);
	return arena_alloc(size, ARENA_ALIGN);
}

static void *lazy_calloc(size_t nmemb, size_t size)
{
	size_t total;

	if (resolve_next_allocator() == 0)
		return NEXT(calloc)(nmemb, size);
	if (__builtin_mul_overflow(nmemb, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	return arena_alloc(total, ARENA_ALIGN); /* the arena is never reused: already zero */
}

static void *lazy_realloc(void *ptr, size_t size)
{
	if (resolve_next_allocator() == 0)
		return NEXT(realloc)(ptr, size);
	if (ptr) {
		/* A block of the next allocator, which cannot be reached from inside the lookup:
		 * fail the way realloc fails, leaving the block as it is. */
		errno = ENOMEM;
		return NULL;
	}
	return arena_alloc(size, ARENA_ALIGN);
}

static void *lazy_memalign(size_t align, size_t size)
{
	if (resolve_next_allocator() == 0)
		return NEXT(memalign)(align, size);
	return arena_alloc(size, align);
}

static void *lazy_aligned_alloc(size_t align, size_t size)
{
	if (resolve_next_allocator() == 0)
		return NEXT(aligned_alloc)(align, size);
	return arena_alloc(size, align);
}

static int lazy_posix_memalign(void **out, size_t align, size_t size)
{
	void *ptr;

	if (resolve_next_allocator() == 0)
		return NEXT(posix_memalign)(out, align, size);
	if (align < sizeof(void *) || (align & (align - 1)))
		return EINVAL;
	ptr = arena_alloc(size, align);
	if (!ptr)
		return ENOMEM;
	*out = ptr;
	return 0;
}

static void *lazy_valloc(size_t size)
{
	if (resolve_next_allocator() == 0)
		return NEXT(valloc)(size);
	return arena_alloc(size, 4096);
}

static void *lazy_pvalloc(size_t size)
{
	size_t rounded = (size + 4095) & ~(size_t)4095;

	if (resolve_next_allocator() == 0)
		return NEXT(pvalloc)(size);
	if (rounded < size) { /* wrapped around: no such block */
		errno = ENOMEM;
		return NULL;
	}
	return arena_alloc(rounded, 4096);
}

static void lazy_free(void *ptr)
{
	/* Only a pointer from the next allocator gets here, so the lookup cannot fail for lack
	 * of one; if it does anyway (inside the lookup), the block is leaked, not crashed on. */
	if (resolve_next_allocator() == 0)
		NEXT(free)(ptr);
}

static size_t lazy_usable_size(void *ptr)
{
	if (resolve_next_allocator() == 0)
		return NEXT(usable_size)(ptr);
	return 0;
}

/* ---- Sampling: the cold part ---- */

/* splitmix64: one add and a few multiplies per draw, any state is valid. */
static uint64_t next_random(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* A seed that differs between threads (the TLS address and the thread id), between
 * processes (the thread id: a forked child has its own) and between runs (the clock). */
static void seed_thread(void)
{
	struct timespec now = {0};

	clock_gettime(CLOCK_MONOTONIC, &now);
	rng_state = (uint64_t)(uintptr_t)&bytes_left ^ ((uint64_t)now.tv_sec * 1000000000u) ^
		    (uint64_t)now.tv_nsec ^ ((uint64_t)(uint32_t)gettid() << 40);
	(void)next_random(); /* one round of mixing before the first real draw */
	rng_seeded = true;
}

/* Bytes to the next sampled byte: ceil(X) for X exponential with mean R. The ceiling of an
 * exponential is geometric, memoryless over whole bytes, and P(ceil(X) <= s) = 1 - exp(-s/R)
 * exactly, the probability the weights assume. */
static uint64_t next_interval(void)
{
	double uniform = (double)((next_random() >> 11) + 1) * 0x1p-53; /* (0, 1] */
	double interval = ceil(-log(uniform) * sample_rate_f);

	return interval >= 1 ? (uint64_t)interval : 1;
}

/* The countdown's slow half, taken when an allocation of bytes (> 0) does not fit in what
 * is left, or when this thread has no interval yet: returns whether it is sampled, and leaves
 * the countdown ready for the next allocation. Exactly the kernel's on_allocation. */
static COLD bool countdown_reached(uint64_t bytes)
{
	if (!rng_seeded)
		seed_thread();
	if (bytes_left == 0) {
		/* This thread's first interval starts at this allocation. */
		bytes_left = next_interval();
		if (bytes_left > bytes) {
			bytes_left -= bytes;
			return false;
		}
	}
	bytes_left = next_interval();
	return true;
}

/* Fires otel_memory:alloc for a sampled allocation that succeeded. */
static COLD void record_sample(void *ptr, size_t size)
{
	uint64_t bytes = size ? size : 1;
	double probability = -expm1(-(double)bytes / sample_rate_f);
	double weighted = (double)bytes / probability;
	uint64_t weighted_bytes = weighted < 1.8e19 ? (uint64_t)(weighted + 0.5) : UINT64_MAX;

	if (live_set_wanted())
		live_set_add(ptr); /* before the probe: its free may come at once */
	ALLOCSCOPE_USDT3(otel_memory, alloc, ptr, size, weighted_bytes);
	__atomic_fetch_add(&stat_sampled, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&stat_weighted_bytes, weighted_bytes, __ATOMIC_RELAXED);
}

/* ---- Sampling: the hot part ---- */

static inline bool profiling(void)
{
	return ALLOCSCOPE_USDT_ENABLED(otel_memory, alloc);
}

/* Counts an allocation of size bytes (0 counts as 1) against this thread's countdown; true
 * when it stays short of the next sampled byte, the common case. Otherwise nothing is
 * counted yet: the caller's cold path does it through countdown_reached. */
static inline bool countdown_passes(size_t size)
{
	uint64_t bytes = size + (size == 0);
	uint64_t left = bytes_left;

	if (LIKELY(bytes < left)) {
		bytes_left = left - bytes;
		return true;
	}
	return false;
}

static inline uint64_t counted_bytes(size_t size)
{
	return size ? size : 1;
}

static COLD void *malloc_slow(size_t size)
{
	bool sampled = countdown_reached(counted_bytes(size));
	void *ptr = NEXT(malloc)(size);

	if (sampled && ptr)
		record_sample(ptr, size);
	return ptr;
}

static COLD void *calloc_slow(size_t nmemb, size_t size, size_t total)
{
	bool sampled = countdown_reached(counted_bytes(total));
	void *ptr = NEXT(calloc)(nmemb, size);

	if (sampled && ptr)
		record_sample(ptr, total);
	return ptr;
}

static COLD void *realloc_slow(void *old, size_t size)
{
	bool sampled = countdown_reached(counted_bytes(size));
	void *ptr = NEXT(realloc)(old, size);

	if (sampled && ptr)
		record_sample(ptr, size);
	return ptr;
}

enum aligned_kind { KIND_MEMALIGN, KIND_ALIGNED_ALLOC, KIND_VALLOC, KIND_PVALLOC };

static COLD void *aligned_slow(enum aligned_kind kind, size_t align, size_t size)
{
	bool sampled = countdown_reached(counted_bytes(size));
	void *ptr;

	switch (kind) {
	case KIND_MEMALIGN:
		ptr = NEXT(memalign)(align, size);
		break;
	case KIND_ALIGNED_ALLOC:
		ptr = NEXT(aligned_alloc)(align, size);
		break;
	case KIND_VALLOC:
		ptr = NEXT(valloc)(size);
		break;
	default:
		ptr = NEXT(pvalloc)(size);
		break;
	}
	if (sampled && ptr)
		record_sample(ptr, size);
	return ptr;
}

static COLD int posix_memalign_slow(void **out, size_t align, size_t size)
{
	bool sampled = countdown_reached(counted_bytes(size));
	int err = NEXT(posix_memalign)(out, align, size);

	if (sampled && err == 0)
		record_sample(*out, size);
	return err;
}

/* realloc of a bootstrap block: a new block (counted like malloc) and a copy. */
static COLD void *arena_realloc(void *old, size_t size)
{
	size_t old_size = arena_block_size(old);
	void *ptr;

	if (size == 0)
		return NULL; /* glibc's realloc(p, 0): p is freed (for the arena: ignored) */
	if (profiling() && !countdown_passes(size))
		ptr = malloc_slow(size);
	else
		ptr = NEXT(malloc)(size);
	if (ptr)
		memcpy(ptr, old, old_size < size ? old_size : size);
	return ptr;
}

/* ---- The interposed entry points ---- */

EXPORT void *malloc(size_t size)
{
	EXACT_COUNT_HOOK(counted_bytes(size));
	if (LIKELY(!profiling()) || countdown_passes(size))
		return NEXT(malloc)(size);
	return malloc_slow(size);
}

EXPORT void free(void *ptr)
{
	if (UNLIKELY(in_arena(ptr)))
		return;
	if (UNLIKELY(live_set_may_hold(ptr)))
		live_set_forget(ptr);
	NEXT(free)(ptr);
}

EXPORT void *calloc(size_t nmemb, size_t size)
{
	size_t total;

	EXACT_COUNT_HOOK(__builtin_mul_overflow(nmemb, size, &total) ? 0 : counted_bytes(total));
	if (LIKELY(!profiling()) || __builtin_mul_overflow(nmemb, size, &total) ||
	    countdown_passes(total))
		return NEXT(calloc)(nmemb, size);
	return calloc_slow(nmemb, size, total);
}

/* realloc(NULL, n) is malloc(n); realloc(p, 0) frees and counts nothing. */
static inline void *realloc_counted(void *ptr, size_t size)
{
	if (UNLIKELY(in_arena(ptr)))
		return arena_realloc(ptr, size);
	/* A tracked block reallocated is freed (and, if sampled, allocated again). */
	if (UNLIKELY(live_set_may_hold(ptr)))
		live_set_forget(ptr);
	if (LIKELY(!profiling()) || (ptr && !size) || countdown_passes(size))
		return NEXT(realloc)(ptr, size);
	return realloc_slow(ptr, size);
}

EXPORT void *realloc(void *ptr, size_t size)
{
	EXACT_COUNT_HOOK(ptr && !size ? 0 : counted_bytes(size));
	return realloc_counted(ptr, size);
}

/* realloc with an overflow check, done here on top of the next realloc rather than forwarded:
 * glibc's reallocarray calls realloc through the PLT, which would count it twice, and jemalloc
 * and tcmalloc have none (glibc's would be found instead). */
EXPORT void *reallocarray(void *ptr, size_t nmemb, size_t size)
{
	size_t total;

	if (__builtin_mul_overflow(nmemb, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	EXACT_COUNT_HOOK(ptr && !total ? 0 : counted_bytes(total));
	return realloc_counted(ptr, total);
}

EXPORT void *memalign(size_t align, size_t size)
{
	EXACT_COUNT_HOOK(counted_bytes(size));
	if (LIKELY(!profiling()) || countdown_passes(size))
		return NEXT(memalign)(align, size);
	return aligned_slow(KIND_MEMALIGN, align, size);
}

EXPORT void *aligned_alloc(size_t align, size_t size)
{
	EXACT_COUNT_HOOK(counted_bytes(size));
	if (LIKELY(!profiling()) || countdown_passes(size))
		return NEXT(aligned_alloc)(align, size);
	return aligned_slow(KIND_ALIGNED_ALLOC, align, size);
}

EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
	EXACT_COUNT_HOOK(counted_bytes(size));
	if (LIKELY(!profiling()) || countdown_passes(size))
		return NEXT(posix_memalign)(out, align, size);
	return posix_memalign_slow(out, align, size);
}

EXPORT void *valloc(size_t size)
{
	EXACT_COUNT_HOOK(counted_bytes(size));
	if (LIKELY(!profiling()) || countdown_passes(size))
		return NEXT(valloc)(size);
	return aligned_slow(KIND_VALLOC, 0, size);
}

EXPORT void *pvalloc(size_t size)
{
	EXACT_COUNT_HOOK(counted_bytes(size));
	if (LIKELY(!profiling()) || countdown_passes(size))
		return NEXT(pvalloc)(size);
	return aligned_slow(KIND_PVALLOC, 0, size);
}

EXPORT size_t malloc_usable_size(void *ptr)
{
	if (UNLIKELY(in_arena(ptr)))
		return arena_block_size(ptr);
	return NEXT(usable_size)(ptr);
}

EXPORT void allocscope_sampler_stats(struct allocscope_sampler_stats *out)
{
	struct live_set_stats live;

	if (!out)
		return;
	out->sampled = __atomic_load_n(&stat_sampled, __ATOMIC_RELAXED);
	out->weighted_bytes = __atomic_load_n(&stat_weighted_bytes, __ATOMIC_RELAXED);
	out->sample_rate = sample_rate;
	live_set_stats(&live);
	out->live_tracked = live.tracked;
	out->live_overflow = live.overflow;
	out->frees_fired = live.freed;
}

/* ---- Start-up ---- */

/* A message assembled on the stack and written with one write(2): no stdio, no allocation. */
struct message {
	char text[256];
	size_t len;
};

static void message_add(struct message *msg, const char *text, size_t max)
{
	for (size_t i = 0; text[i] && i < max && msg->len < sizeof(msg->text) - 1; i++)
		msg->text[msg->len++] = text[i];
}

static bool ascii_equal_nocase(const char *a, const char *b)
{
	for (; *a && *b; a++, b++) {
		char x = (*a >= 'A' && *a <= 'Z') ? (char)(*a + 32) : *a;
		char y = (*b >= 'A' && *b <= 'Z') ? (char)(*b + 32) : *b;

		if (x != y)
			return false;
	}
	return *a == *b;
}

/* Parses a size the way the agent does (units_parse_size): decimal digits, optional spaces,
 * then nothing, B, K/KB/KiB, M/MB/MiB or G/GB/GiB (any case). Returns NULL and sets *rate, or
 * the reason the text is refused. */
static const char *parse_sample_rate(const char *text, uint64_t *rate)
{
	static const struct {
		const char *name;
		uint64_t scale;
	} units[] = {
	    {"", 1},
	    {"B", 1},
	    {"K", 1ull << 10},
	    {"KB", 1ull << 10},
	    {"KiB", 1ull << 10},
	    {"M", 1ull << 20},
	    {"MB", 1ull << 20},
	    {"MiB", 1ull << 20},
	    {"G", 1ull << 30},
	    {"GB", 1ull << 30},
	    {"GiB", 1ull << 30},
	};
	uint64_t number = 0;
	const char *p = text;

	if (*p < '0' || *p > '9')
		return "not a size (examples: 524288, 64KiB, 1MiB)";
	for (; *p >= '0' && *p <= '9'; p++) {
		number = number * 10 + (uint64_t)(*p - '0');
		if (number > MAX_SAMPLE_RATE)
			return "out of range (1 byte to 4GiB)";
	}
	while (*p == ' ')
		p++;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (!ascii_equal_nocase(p, units[i].name))
			continue;
		if (number == 0 || number > MAX_SAMPLE_RATE / units[i].scale)
			return "out of range (1 byte to 4GiB)";
		*rate = number * units[i].scale;
		return NULL;
	}
	return "unknown unit (use KiB, MiB or GiB)";
}

static void read_sample_rate(void)
{
	const char *text = getenv("ALLOCSCOPE_SAMPLE_RATE");
	const char *why;
	uint64_t rate = DEFAULT_SAMPLE_RATE;
	struct message msg = {.len = 0};

	if (!text || !*text)
		return; /* unset or empty: the default */
	why = parse_sample_rate(text, &rate);
	if (!why) {
		sample_rate = rate;
		sample_rate_f = (double)rate;
		return;
	}
	message_add(&msg, "liballocscope-sampler: ALLOCSCOPE_SAMPLE_RATE=", SIZE_MAX);
	message_add(&msg, text, 64);
	message_add(&msg, ": ", SIZE_MAX);
	message_add(&msg, why, SIZE_MAX);
	message_add(&msg, "; using " SAMPLING_DEFAULT_RATE_TEXT "\n", SIZE_MAX);
	if (msg.text[msg.len - 1] != '\n')
		msg.text[msg.len - 1] = '\n';
	(void)!write(STDERR_FILENO, msg.text, msg.len);
}

/* The child of fork starts with a fresh generator and countdown (otherwise parent and child
 * would sample the same allocations) and with its own statistics. */
static void sampler_after_fork_in_child(void)
{
	rng_seeded = false;
	bytes_left = 0;
	live_set_after_fork();
	__atomic_store_n(&stat_sampled, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&stat_weighted_bytes, 0, __ATOMIC_RELAXED);
}

__attribute__((constructor)) static void sampler_init(void)
{
	const char *force = getenv("ALLOCSCOPE_SAMPLER_FORCE");

	resolve_next_allocator();
	read_sample_rate();
	live_set_init();
	pthread_atfork(NULL, NULL, sampler_after_fork_in_child);
	/* Sampling without a profiler, for tests and for measuring the sampled path: hold one
	 * reference on the semaphore ourselves. The kernel adds and removes its own on top. */
	if (force && *force && !(force[0] == '0' && force[1] == '\0'))
		__atomic_fetch_add(&otel_memory_alloc_semaphore, 1, __ATOMIC_RELAXED);
}
