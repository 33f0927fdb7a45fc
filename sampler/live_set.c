/* Which sampled allocations are still live, for in-use (live heap) profiles on the cooperative
 * path: a profiler that listens to otel_memory:free(ptr) learns of the frees of the pointers it
 * saw in otel_memory:alloc, and of nothing else, so free stays a tail call for every other
 * pointer.
 *
 * Two structures, both lock-free:
 *  - a counting filter, 64 KiB of 8-bit counters indexed by the top bits of a multiplicative
 *    hash of the pointer: free reads one byte and goes on when it is 0, which it is for all
 *    but (tracked pointers / 65536) of the untracked ones. A counter that reaches 255 stays
 *    there (never decremented), so the filter never says no for a tracked pointer.
 *  - an open-addressing table of pointers (0 empty, 1 a removed entry, reused by inserts),
 *    probed linearly for at most PROBE_LIMIT slots, mapped with mmap (no malloc in here) at
 *    ALLOCSCOPE_LIVE_SET_SIZE slots (default 65536). An insert that finds the table three
 *    quarters full or no slot within the probe limit is counted as overflow: that allocation
 *    still fires otel_memory:alloc, but its free is never reported.
 * Before any of that, free tests live_set_count, the number of tracked pointers: 0 in every
 * process nobody profiles for in-use, so those pay one load and a predictable branch.
 *
 * Ordering: free fires otel_memory:free before the memory goes back to the allocator, so the
 * profiler never sees a reused address allocated again before the old block's free. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdlib.h>
#include <sys/mman.h>

#include "live_set.h"
#include "usdt.h"

#define DEFAULT_SLOTS (1u << 16)
#define MIN_SLOTS     16u
#define MAX_SLOTS     (1u << 24)
#define PROBE_LIMIT   64
#define SLOT_EMPTY    0
#define SLOT_REMOVED  1

ALLOCSCOPE_USDT_SEMAPHORE(otel_memory, free);

uint64_t live_set_count;
_Alignas(4096) unsigned char live_set_filter[1u << LIVE_SET_FILTER_BITS];

static uintptr_t *slots; /* NULL: no table (mmap failed): every insert overflows */
static uint64_t slot_mask;
static uint64_t max_tracked;
static uint64_t stat_overflow, stat_freed;

bool live_set_wanted(void)
{
	return ALLOCSCOPE_USDT_ENABLED(otel_memory, free);
}

/* ALLOCSCOPE_LIVE_SET_SIZE: slots in the table, a power of two from 16 to 2^24. Anything
 * else keeps the default (the variable is for tests and for very large heaps). */
static uint64_t configured_slots(void)
{
	const char *text = getenv("ALLOCSCOPE_LIVE_SET_SIZE");
	uint64_t n = 0;

	if (!text || !*text)
		return DEFAULT_SLOTS;
	for (; *text >= '0' && *text <= '9' && n <= MAX_SLOTS; text++)
		n = n * 10 + (uint64_t)(*text - '0');
	if (*text || n < MIN_SLOTS || n > MAX_SLOTS || (n & (n - 1)))
		return DEFAULT_SLOTS;
	return n;
}

static uintptr_t *map_slots(uint64_t n, void *at)
{
	void *mem = mmap(at, n * sizeof(uintptr_t), PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | (at ? MAP_FIXED : 0), -1, 0);

	return mem == MAP_FAILED ? NULL : mem;
}

void live_set_init(void)
{
	const char *force = getenv("ALLOCSCOPE_SAMPLER_FORCE");
	uint64_t n = configured_slots();

	slots = map_slots(n, NULL);
	slot_mask = n - 1;
	max_tracked = n - n / 4;
	/* ALLOCSCOPE_SAMPLER_FORCE=2: track and report frees with no profiler either (tests,
	 * measuring the in-use path); the constructor raises the alloc semaphore for it. */
	if (force && force[0] == '2' && force[1] == '\0')
		__atomic_fetch_add(&otel_memory_free_semaphore, 1, __ATOMIC_RELAXED);
}

static inline uint64_t slot_start(const void *ptr)
{
	/* Other bits of the hash than the filter's, so a filter hit does not imply a crowded
	 * run of slots. */
	return (live_set_hash(ptr) >> 17) & slot_mask;
}

static void filter_increment(unsigned char *counter)
{
	unsigned char old = __atomic_load_n(counter, __ATOMIC_RELAXED);

	while (old != 255 && !__atomic_compare_exchange_n(counter, &old, (unsigned char)(old + 1),
							  true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

static void filter_decrement(unsigned char *counter)
{
	unsigned char old = __atomic_load_n(counter, __ATOMIC_RELAXED);

	/* 255 is sticky: increments past it were not counted, so it cannot be undone. */
	while (old != 255 && old != 0 &&
	       !__atomic_compare_exchange_n(counter, &old, (unsigned char)(old - 1), true,
					    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

static unsigned char *filter_counter(const void *ptr)
{
	return &live_set_filter[live_set_hash(ptr) >> (64 - LIVE_SET_FILTER_BITS)];
}

void live_set_add(void *ptr)
{
	uintptr_t key = (uintptr_t)ptr;
	uint64_t start = slot_start(ptr);

	if (!slots || key <= SLOT_REMOVED ||
	    __atomic_load_n(&live_set_count, __ATOMIC_RELAXED) >= max_tracked)
		goto overflow;
	for (uint64_t i = 0; i < PROBE_LIMIT; i++) {
		uintptr_t *slot = &slots[(start + i) & slot_mask];
		uintptr_t seen = __atomic_load_n(slot, __ATOMIC_RELAXED);

		if (seen == key)
			return; /* already tracked: a block freed behind our back, reused */
		if (seen != SLOT_EMPTY && seen != SLOT_REMOVED)
			continue;
		if (!__atomic_compare_exchange_n(slot, &seen, key, false, __ATOMIC_RELAXED,
						 __ATOMIC_RELAXED))
			continue;
		filter_increment(filter_counter(ptr));
		__atomic_fetch_add(&live_set_count, 1, __ATOMIC_RELEASE);
		return;
	}
overflow:
	__atomic_fetch_add(&stat_overflow, 1, __ATOMIC_RELAXED);
}

void live_set_forget(void *ptr)
{
	uintptr_t key = (uintptr_t)ptr;
	uint64_t start = slot_start(ptr);

	if (!slots || key <= SLOT_REMOVED)
		return;
	for (uint64_t i = 0; i < PROBE_LIMIT; i++) {
		uintptr_t *slot = &slots[(start + i) & slot_mask];
		uintptr_t seen = __atomic_load_n(slot, __ATOMIC_RELAXED);

		if (seen == SLOT_EMPTY)
			return;
		if (seen != key)
			continue;
		/* Only the thread freeing ptr gets here for it: the exchange cannot fail but for
		 * a double free, which then reports once. */
		if (!__atomic_compare_exchange_n(slot, &seen, SLOT_REMOVED, false, __ATOMIC_RELAXED,
						 __ATOMIC_RELAXED))
			return;
		ALLOCSCOPE_USDT1(otel_memory, free, ptr);
		filter_decrement(filter_counter(ptr));
		__atomic_fetch_sub(&live_set_count, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&stat_freed, 1, __ATOMIC_RELAXED);
		return;
	}
}

/* The child has its own pid: the profiler tracks nothing for it, and the parent's pointers are
 * the child's copies. Fresh zero pages over the table and the filter, without touching them. */
void live_set_after_fork(void)
{
	if (__atomic_load_n(&live_set_count, __ATOMIC_RELAXED) == 0 &&
	    __atomic_load_n(&stat_overflow, __ATOMIC_RELAXED) == 0)
		return;
	if (slots && !map_slots(slot_mask + 1, slots))
		slots = NULL; /* cannot happen short of ENOMEM; then nothing is tracked */
	if (mmap(live_set_filter, sizeof(live_set_filter), PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
		__builtin_memset(live_set_filter, 0, sizeof(live_set_filter));
	live_set_count = 0;
	stat_overflow = 0;
	stat_freed = 0;
}

void live_set_stats(struct live_set_stats *out)
{
	out->tracked = __atomic_load_n(&live_set_count, __ATOMIC_RELAXED);
	out->overflow = __atomic_load_n(&stat_overflow, __ATOMIC_RELAXED);
	out->freed = __atomic_load_n(&stat_freed, __ATOMIC_RELAXED);
}
