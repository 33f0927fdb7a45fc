/* Public face of liballocscope-sampler.so, the LD_PRELOAD library that samples allocations
 * in-process and fires the USDT otel_memory:alloc(ptr, size, weighted_bytes) for sampled ones
 * (docs/cooperative.md). The only function besides the interposed allocator entry points is
 * the statistics read-out below, meant for tests and diagnostics; look it up with
 * dlsym(RTLD_DEFAULT, "allocscope_sampler_stats") so that a program runs without the library. */
#ifndef ALLOCSCOPE_SAMPLER_H
#define ALLOCSCOPE_SAMPLER_H

#include <stdint.h>

/* Counts for this process since it started (a forked child starts again from zero). */
struct allocscope_sampler_stats {
	uint64_t sampled;	 /* allocations that fired otel_memory:alloc */
	uint64_t weighted_bytes; /* sum of their weighted_bytes: estimated bytes allocated */
	uint64_t sample_rate;	 /* R, the mean number of bytes between samples */
	/* In-use tracking (sampler/live_set.c), while a profiler listens to otel_memory:free: */
	uint64_t live_tracked;	 /* sampled blocks tracked now (not yet freed) */
	uint64_t live_overflow;	 /* sampled blocks not tracked: the set was full */
	uint64_t frees_fired;	 /* otel_memory:free fired */
};

typedef void (*allocscope_sampler_stats_fn)(struct allocscope_sampler_stats *out);

/* Fills *out; never allocates, safe from any thread. */
void allocscope_sampler_stats(struct allocscope_sampler_stats *out);

#endif
