/* The sampler's set of sampled pointers that are still live (sampler/live_set.c), so that
 * free fires otel_memory:free(ptr) for exactly those and pays about a nanosecond for all the
 * others. Internal to liballocscope-sampler.so; allocscope_sampler.c calls four hooks:
 *
 *   live_set_init()            from the constructor (maps the table, reads the size)
 *   live_set_add(ptr)          a sampled allocation succeeded (only while a profiler listens
 *                              to otel_memory:free, so allocation profiles cost nothing more)
 *   live_set_may_hold(ptr)     the inline test on every free and realloc: false for almost
 *                              every pointer the sampler never tracked
 *   live_set_forget(ptr)       cold: removes ptr if tracked and fires otel_memory:free
 *   live_set_after_fork()      the child of fork tracks nothing
 *
 * The test is two loads: the number of tracked pointers (0 in a process nobody profiles for
 * in-use) and one byte of a counting filter indexed by a hash of the pointer. */
#ifndef ALLOCSCOPE_LIVE_SET_H
#define ALLOCSCOPE_LIVE_SET_H

#include <stdbool.h>
#include <stdint.h>

/* Read by the inline test; written only on the cold paths (relaxed atomics). */
#define LIVE_SET_FILTER_BITS 16 /* 64 KiB of 8-bit counters */
extern uint64_t live_set_count;
extern unsigned char live_set_filter[1u << LIVE_SET_FILTER_BITS];

static inline uint64_t live_set_hash(const void *ptr)
{
	/* Blocks are at least 16-byte aligned: the low bits carry nothing. */
	return ((uint64_t)(uintptr_t)ptr >> 4) * 0x9e3779b97f4a7c15ull;
}

static inline bool live_set_may_hold(const void *ptr)
{
	if (__builtin_expect(__atomic_load_n(&live_set_count, __ATOMIC_RELAXED) == 0, 1))
		return false;
	return __atomic_load_n(&live_set_filter[live_set_hash(ptr) >> (64 - LIVE_SET_FILTER_BITS)],
			       __ATOMIC_RELAXED) != 0;
}

void live_set_init(void);
void live_set_add(void *ptr);
void live_set_forget(void *ptr);
void live_set_after_fork(void);
/* Whether a profiler listens to otel_memory:free (its semaphore is raised). */
bool live_set_wanted(void);

struct live_set_stats {
	uint64_t tracked;  /* pointers tracked now */
	uint64_t overflow; /* sampled allocations not tracked: the set was full */
	uint64_t freed;    /* otel_memory:free fired */
};
void live_set_stats(struct live_set_stats *out);

#endif
