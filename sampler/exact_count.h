/* The one hook the interposed allocator entry points (allocscope_sampler.c) call for exact
 * counting. The same interposition code is built twice (Makefile): as
 * liballocscope-sampler.so, where the hook is empty and costs nothing, and with
 * -DALLOCSCOPE_EXACT_COUNT as liballocscope-count.so, where every allocation is counted by
 * exact_count.c. bytes is the allocation's size (a zero-byte request counts as 1); 0 means
 * "no allocation happens" (calloc's size overflowed, realloc(p, 0)): nothing is counted.
 * The site is the entry point's return address, the frame its frame address (the caller's
 * frame pointer is saved there: the key of the caller chain). */
#ifndef ALLOCSCOPE_EXACT_COUNT_H
#define ALLOCSCOPE_EXACT_COUNT_H

#include <stdint.h>

#ifdef ALLOCSCOPE_EXACT_COUNT
void exact_count_alloc(uint64_t bytes, void *site, void *frame);
#define EXACT_COUNT_HOOK(bytes)                                                                 \
	exact_count_alloc((bytes), __builtin_return_address(0), __builtin_frame_address(0))
#else
#define EXACT_COUNT_HOOK(bytes) ((void)0)
#endif

#endif
