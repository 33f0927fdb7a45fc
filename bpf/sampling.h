/* Byte-interval Poisson sampling: the draw of the next interval, shared by the BPF program and
 * the agent's unit tests so that the code under test is the code that runs in the kernel.
 *
 * Every allocated byte is sampled with probability 1/R, so the gap to the next sampled byte is
 * exponential with mean R: interval = R * -ln(U), U uniform in (0, 1). BPF has neither floating
 * point nor a count-leading-zeros instruction, so -ln(U) is built from integers, and it must be
 * right at both ends: the tail (long gaps) and near zero, because after a sampled allocation
 * a fresh interval decides alone whether the next, small allocation is sampled (p = 1 -
 * exp(-s/R) for s << R depends on the density of tiny intervals).
 *   - U >= 15/16 (intervals under 0.065 R): -ln(1 - v) = v + v^2/2 + v^3/3 (+ < v^4/4), with
 *     v = 1 - U in 32.32 fixed point: relative error below 1e-5.
 *   - otherwise: -ln(U) = ln2 * (32 - log2 x) for the 32-bit random x; log2 x is the index of
 *     the most significant bit plus log2 of the mantissa, interpolated linearly in a 257-entry
 *     table of log2(1 + i/256) in 16.16 fixed point that the agent fills
 *     (sampling_fill_log2_table) into the program's read-only data before load. */
#ifndef ALLOCSCOPE_SAMPLING_H
#define ALLOCSCOPE_SAMPLING_H

#include <linux/types.h>

#define SAMPLING_FRAC_BITS 8
#define SAMPLING_TABLE_SIZE ((1u << SAMPLING_FRAC_BITS) + 1)
#define SAMPLING_ONE_Q16 65536u
#define SAMPLING_LN2_Q16 45426u /* ln(2) * 2^16, rounded */

/* Largest mean interval accepted (4 GiB): keeps every product below within 64 bits. */
#define SAMPLING_MAX_RATE (1ull << 32)
/* The default mean interval: the agent's sampling.rate key and --sample-rate (config.c's key
 * table parses the text) and the in-process sampler (sampler/, the number). Both spellings
 * here, side by side, so they cannot part. */
#define SAMPLING_DEFAULT_RATE_TEXT "512KiB"
#define SAMPLING_DEFAULT_RATE (512u * 1024)

/* Index of the most significant set bit of a nonzero 32-bit value, without a clz instruction. */
static inline __u32 sampling_msb32(__u32 x)
{
	__u32 msb = 0;

	if (x >= 1u << 16) {
		msb += 16;
		x >>= 16;
	}
	if (x >= 1u << 8) {
		msb += 8;
		x >>= 8;
	}
	if (x >= 1u << 4) {
		msb += 4;
		x >>= 4;
	}
	if (x >= 1u << 2) {
		msb += 2;
		x >>= 2;
	}
	if (x >= 1u << 1)
		msb += 1;
	return msb;
}

/* Next sampling interval in bytes, at least 1. random: a uniform 32-bit value, read as
 * U = random / 2^32 (0 is read as 1); mean: R, at most SAMPLING_MAX_RATE; log2_q16: the
 * filled table of SAMPLING_TABLE_SIZE entries. */
static inline __u64 sampling_next_interval(__u32 random, __u64 mean,
					   const volatile __u32 *log2_q16)
{
	__u32 x = random ? random : 1;
	__u64 interval;

	if (x >= 0xf0000000u) {
		/* v = 1 - U < 1/16, as a 32.32 fraction; the series needs no table. */
		__u64 v = (1ull << 32) - x;
		__u64 v2 = (v * v) >> 32;
		__u64 v3 = (v2 * v) >> 32;
		__u64 neg_ln_q32 = v + v2 / 2 + v3 / 3;

		interval = (mean * neg_ln_q32) >> 32;
	} else {
		__u32 msb = sampling_msb32(x);
		/* The 31 bits below the msb, left-aligned: 8 pick the entry, the next 16
		 * interpolate towards the following one. */
		__u32 mantissa = (__u32)(((__u64)x << (31 - msb)) & 0x7fffffffu);
		__u32 index = (mantissa >> (31 - SAMPLING_FRAC_BITS)) & ((1u << SAMPLING_FRAC_BITS) - 1);
		__u32 weight = (mantissa >> (31 - SAMPLING_FRAC_BITS - 16)) & 0xffffu;
		__u32 low = log2_q16[index], high = log2_q16[index + 1];
		__u64 log2_mantissa = low + (((__u64)(high - low) * weight) >> 16);
		__u64 neg_log2_q16 = ((__u64)32 << 16) - ((__u64)msb << 16) - log2_mantissa;

		/* mean * -ln(U) = mean * ln2 * -log2(U), in two steps within 64 bits. */
		interval = ((mean * neg_log2_q16) >> 16) * SAMPLING_LN2_Q16 >> 16;
	}
	return interval ? interval : 1;
}

#ifndef __bpf__
#include <math.h>

/* Fill table[SAMPLING_TABLE_SIZE] with log2(1 + i/256) in 16.16 fixed point. */
static inline void sampling_fill_log2_table(__u32 *table)
{
	for (__u32 i = 0; i < SAMPLING_TABLE_SIZE; i++)
		table[i] = (__u32)lround(log2(1.0 + (double)i / (1u << SAMPLING_FRAC_BITS)) *
					 SAMPLING_ONE_Q16);
}

/* Probability that an allocation of size bytes is sampled at mean interval rate. */
static inline double sampling_probability(__u64 size, __u64 rate)
{
	return -expm1(-(double)(size ? size : 1) / (double)rate);
}
#endif

#endif
