/* The kernel's interval draw (bpf/sampling.h, compiled here unchanged) against the exponential
 * distribution it stands for, and the whole sampling scheme (countdown + unbiasing) against
 * known allocation totals. Randomness is a fixed-seed xorshift, so a failure reproduces. */
#include <math.h>
#include <stdlib.h>

#include "unit.h"
#include "sampling.h"

static __u32 log2_table[SAMPLING_TABLE_SIZE];
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static __u32 next_random(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (__u32)(rng_state >> 32);
}

static void test_msb(void)
{
	CHECK_EQ_U64(sampling_msb32(1), 0);
	CHECK_EQ_U64(sampling_msb32(2), 1);
	CHECK_EQ_U64(sampling_msb32(3), 1);
	CHECK_EQ_U64(sampling_msb32(0x80000000u), 31);
	CHECK_EQ_U64(sampling_msb32(0xffffffffu), 31);
	for (__u32 bit = 0; bit < 32; bit++)
		CHECK_EQ_U64(sampling_msb32((1u << bit) | 1u), bit);
}

/* Known points of -ln(u): u = 1/2 gives ln 2, u = 1/4 gives 2 ln 2, u near 1 gives ~0. */
static void test_known_points(void)
{
	const __u64 rate = 1 << 20;
	__u64 half = sampling_next_interval(0x80000000u, rate, log2_table);
	__u64 quarter = sampling_next_interval(0x40000000u, rate, log2_table);
	__u64 near_one = sampling_next_interval(0xffffffffu, rate, log2_table);

	/* Table entries are bucket midpoints: allow the bucket's half-width in log2 units. */
	CHECK(fabs((double)half - M_LN2 * rate) < rate * 0.004);
	CHECK(fabs((double)quarter - 2 * M_LN2 * rate) < rate * 0.004);
	CHECK(near_one < rate / 100);
	CHECK(sampling_next_interval(0, rate, log2_table) >= 1);
	CHECK(sampling_next_interval(0x7fffffffu, 1, log2_table) >= 1);
}

/* Mean, and the tail P(X > kR) = e^-k, over many draws. */
static void test_distribution(void)
{
	const int draws = 4000000;
	const __u64 rate = 512 * 1024;
	const double tail_points[] = {0.1, 1, 2, 5, 10};
	long tail_counts[5] = {0};
	double sum = 0;

	for (int i = 0; i < draws; i++) {
		__u64 x = sampling_next_interval(next_random(), rate, log2_table);

		sum += (double)x;
		for (int k = 0; k < 5; k++)
			tail_counts[k] += x > tail_points[k] * rate;
	}
	double mean = sum / draws;
	/* The sample mean's standard error is rate / sqrt(draws) = 0.05%: allow 6 of them. */
	CHECK(fabs(mean / rate - 1) < 6.0 / sqrt(draws));
	for (int k = 0; k < 5; k++) {
		double expected = exp(-tail_points[k]);
		double observed = (double)tail_counts[k] / draws;
		double sigma = sqrt(expected * (1 - expected) / draws);

		if (fabs(observed - expected) > 6 * sigma + 1e-6) {
			fprintf(stderr, "  tail P(X > %.1fR): observed %.6f expected %.6f\n",
				tail_points[k], observed, expected);
			CHECK(fabs(observed - expected) <= 6 * sigma + 1e-6);
		}
	}
}

/* The scheme end to end: a countdown over a stream of allocations, sampled when the
 * allocation reaches it, each sample weighted by 1/p. Estimates must land on the truth within
 * what the binomial spread of the sample count allows. */
static void estimate(__u64 size, long count, __u64 rate, double *bytes, double *objects)
{
	__u64 left = sampling_next_interval(next_random(), rate, log2_table);
	double p = sampling_probability(size, rate);

	*bytes = *objects = 0;
	for (long i = 0; i < count; i++) {
		if (left > size) {
			left -= size;
			continue;
		}
		left = sampling_next_interval(next_random(), rate, log2_table);
		*bytes += size / p;
		*objects += 1 / p;
	}
}

static void test_unbiased_estimates(void)
{
	const struct {
		__u64 size;
		long count;
	} cases[] = {{1, 20000000},   {64, 4000000},   {4096, 400000},
		     {100000, 20000}, {1 << 20, 1000}, {64 << 20, 10}};
	const __u64 rate = 512 * 1024;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		double p = sampling_probability(cases[i].size, rate);
		double bytes, objects;
		double truth = (double)cases[i].size * cases[i].count;
		/* Relative standard deviation of a binomial count scaled by 1/p. */
		double rel_sigma = sqrt((1 - p) / (cases[i].count * p));

		estimate(cases[i].size, cases[i].count, rate, &bytes, &objects);
		if (fabs(bytes / truth - 1) > 5 * rel_sigma + 0.002) {
			fprintf(stderr, "  size %llu x %ld: estimated %.0f bytes, truth %.0f\n",
				(unsigned long long)cases[i].size, cases[i].count, bytes, truth);
			CHECK(fabs(bytes / truth - 1) <= 5 * rel_sigma + 0.002);
		}
		CHECK(fabs(objects / cases[i].count - 1) <= 5 * rel_sigma + 0.002);
	}
}

static void test_probability(void)
{
	CHECK(fabs(sampling_probability(512 * 1024, 512 * 1024) - (1 - exp(-1))) < 1e-12);
	CHECK(sampling_probability(0, 100) > 0); /* 0-byte requests count as 1 byte */
	CHECK(sampling_probability(1ull << 40, 1024) == 1.0);
}

int main(void)
{
	sampling_fill_log2_table(log2_table);
	RUN(test_msb);
	RUN(test_known_points);
	RUN(test_distribution);
	RUN(test_unbiased_estimates);
	RUN(test_probability);
	return unit_summary("sampling");
}
