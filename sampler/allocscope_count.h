/* allocs_per_run for C and C++ tests, like Go's testing.AllocsPerRun: how many allocations one
 * call of a function makes, counted exactly by liballocscope-count.so (docs/ci-gate.md).
 *
 *   #include "allocscope_count.h"
 *   static void parse_one(void *arg) { parse(arg); }
 *   ...
 *   assert(allocs_per_run(100, parse_one, "k=v") <= 3);
 *
 * The counts come from the counting library, which must be in the process: run the test under
 * `allocscope count -- ./test` (or `allocscope gate`), or with
 * LD_PRELOAD=/usr/local/lib/liballocscope-count.so. The test needs no link flag: the library is
 * found at run time (dlsym), so the same test binary builds and runs anywhere. Without the
 * library allocs_per_run says so on stderr and returns INFINITY, so that an assertion of "at
 * most N" fails instead of passing unchecked.
 *
 * Only the calling thread's allocations are counted (threads fn starts are not), which is what
 * makes the figure exact on a busy test runner. fn runs once first, uncounted (one-time
 * initialisation, as Go does), then runs times; the result is the average, allocations
 * (objects) per run. allocs_per_run_bytes gives the bytes per run the same way. */
#ifndef ALLOCSCOPE_COUNT_H
#define ALLOCSCOPE_COUNT_H

#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>

/* What liballocscope-count.so counted on the calling thread since it started. */
struct allocscope_count_totals {
	uint64_t objects;
	uint64_t bytes;
};

typedef void (*allocscope_count_thread_fn)(struct allocscope_count_totals *out);

/* In liballocscope-count.so; look it up with dlsym(RTLD_DEFAULT, "allocscope_count_thread"). */
#ifdef __cplusplus
extern "C" {
#endif
void allocscope_count_thread(struct allocscope_count_totals *out);
#ifdef __cplusplus
}
#endif

static inline double allocscope_count__per_run(int runs, void (*fn)(void *), void *arg,
					       int want_bytes)
{
	allocscope_count_thread_fn read_counts;
	struct allocscope_count_totals before, after;

	*(void **)&read_counts = dlsym(RTLD_DEFAULT, "allocscope_count_thread");
	if (!read_counts) {
		fputs("allocs_per_run: liballocscope-count.so is not loaded: run the test under "
		      "`allocscope count -- TEST` or with LD_PRELOAD=liballocscope-count.so\n",
		      stderr);
		return INFINITY;
	}
	if (runs <= 0)
		return 0;
	fn(arg);
	read_counts(&before);
	for (int i = 0; i < runs; i++)
		fn(arg);
	read_counts(&after);
	return want_bytes ? (double)(after.bytes - before.bytes) / runs
			  : (double)(after.objects - before.objects) / runs;
}

static inline double allocs_per_run(int runs, void (*fn)(void *), void *arg)
{
	return allocscope_count__per_run(runs, fn, arg, 0);
}

static inline double allocs_per_run_bytes(int runs, void (*fn)(void *), void *arg)
{
	return allocscope_count__per_run(runs, fn, arg, 1);
}

#endif
