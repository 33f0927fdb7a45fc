/* Byte-interval Poisson sampling: the draw of the next interval, shared by the BPF program and
 * the agent's unit tests so that the code under test is the code that runs in the kernel.
 *
 * Every allocated byte is sampled with probability 1/R, so the gap to the next sampled byte is
 * exponential with mean R: interval = R * -ln(U), U uniform in (0, 1). BPF has neither floating
 * point nor a count-leading-zeros instruction, so -ln(U) is built from integers: for a 32-bit
 * random x, -ln(x / 2^32) = ln2 * (32 - log2 x), and log2 x = msb(x) + log2(1.f) where the
 * fraction's top bits index a table of log2(1 + (i + 0.5) / 2^FRAC_BITS) in 16.16 fixed point.
 * The agent fills that table (sampling_fill_log2_table) into the program's read-only data
 * before load. */
#ifndef ALLOCSCOPE_SAMPLING_H
#define ALLOCSCOPE_SAMPLING_H

#include <linux/types.h>

#define SAMPLING_FRAC_BITS 8
#define SAMPLING_TABLE_SIZE (1u << SAMPLING_FRAC_BITS)
#define SAMPLING_ONE_Q16 65536u
#define SAMPLING_LN2_Q16 45426u /* ln(2) * 2^16, rounded */

/* Largest mean interval accepted: keeps mean * (32 << 16) within 64 bits. */
#define SAMPLING_MAX_RATE (1ull << 40)

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

/* Next sampling interval in bytes, at least 1. random: a uniform 32-bit value (0 is read as
 * 1, a 2^-32 bias); mean: R, at most SAMPLING_MAX_RATE; log2_frac_q16: the filled table. */
static inline __u64 sampling_next_interval(__u32 random, __u64 mean,
					   const volatile __u32 *log2_frac_q16)
{
	__u32 x = random ? random : 1;
	__u32 msb = sampling_msb32(x);
	/* The bits right below the msb pick the table entry for log2 of the mantissa. */
	__u32 frac_index = (__u32)(((__u64)x << (31 - msb)) >> (31 - SAMPLING_FRAC_BITS)) &
			   (SAMPLING_TABLE_SIZE - 1);
	__u64 neg_log2_q16 = ((__u64)32 << 16) - ((__u64)msb << 16) - log2_frac_q16[frac_index];
	/* mean * -ln(U) = mean * ln2 * -log2(U), in two steps so nothing overflows 64 bits. */
	__u64 interval = ((mean * neg_log2_q16) >> 16) * SAMPLING_LN2_Q16 >> 16;

	return interval ? interval : 1;
}

#ifndef __bpf__
#include <math.h>

/* Fill table[SAMPLING_TABLE_SIZE] with log2 of each mantissa bucket's midpoint, 16.16 fixed. */
static inline void sampling_fill_log2_table(__u32 *table)
{
	for (__u32 i = 0; i < SAMPLING_TABLE_SIZE; i++)
		table[i] = (__u32)lround(log2(1.0 + (i + 0.5) / SAMPLING_TABLE_SIZE) *
					 SAMPLING_ONE_Q16);
}

/* Probability that an allocation of size bytes is sampled at mean interval rate. */
static inline double sampling_probability(__u64 size, __u64 rate)
{
	return -expm1(-(double)(size ? size : 1) / (double)rate);
}
#endif

#endif
