/* The one integer hash the agent's tables share: splitmix64's finalizer, in which every input
 * bit affects every output bit (linear probing on the low bits needs that; addresses differ
 * mostly in their low and middle bits). */
#ifndef ALLOCSCOPE_HASH_H
#define ALLOCSCOPE_HASH_H

#include <stdint.h>

static inline uint64_t hash_mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

/* Folds v into the running hash h (order matters). */
static inline uint64_t hash_combine(uint64_t h, uint64_t v)
{
	return hash_mix64(h ^ (v + 0x9e3779b97f4a7c15ULL + (h << 6)));
}

#endif
