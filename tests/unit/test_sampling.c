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

	CHECK(fabs((double)half - M_LN2 * rate) < rate * 0.0005);
	CHECK(fabs((double)quarter - 2 * M_LN2 * rate) < rate * 0.0005);
	CHECK(near_one < rate / 100);
	CHECK(sampling_next_interval(0, rate, log2_table) >= 1);
	CHECK(sampling_next_interval(0x7fffffffu, 1, log2_table) >= 1);
}

/* Every part of the input range against the exact -ln(U) * R: the series near U = 1, the
 * interpolated table elsewhere, the far tail. Relative error under 0.05%, or one byte. */
static void test_accuracy_over_the_range(void)
{
	const __u64 rate = 1ull << 24;
	double worst = 0;
	__u32 worst_x = 0;

	for (uint64_t x = 1; x < (1ull << 32); x += 40009) {
		double exact = -log((double)x / 4294967296.0) * rate;
		double got = (double)sampling_next_interval((__u32)x, rate, log2_table);
		double err = fabs(got - exact) / (exact > 1 ? exact : 1);

		if (fabs(got - exact) > 1.0 && err > worst) {
			worst = err;
			worst_x = (__u32)x;
		}
	}
	/* The top of the range, where intervals are tiny, in small steps. */
	for (uint64_t x = 0xfff00000ull; x < (1ull << 32); x += 97) {
		double exact = -log((double)x / 4294967296.0) * rate;
		double got = (double)sampling_next_interval((__u32)x, rate, log2_table);
		double err = fabs(got - exact) / (exact > 1 ? exact : 1);

		if (fabs(got - exact) > 1.0 && err > worst) {
			worst = err;
			worst_x = (__u32)x;
		}
	}
	if (worst > 0.0005)
		fprintf(stderr, "  worst relative error %.6f at x = 0x%08x\n", worst, worst_x);
	CHECK(worst <= 0.0005);
}

/* Mean, and the tail P(X > kR) = e^-k, over many draws. */
static void test_distribution(void)
{
	const int draws = 4000000;
	const __u64 rate = 512 * 1024;
	const double tail_points[] = { 0.001, 0.01, 0.1, 1, 2, 5, 10 };
	long tail_counts[7] = { 0 };
	double sum = 0;

	for (int i = 0; i < draws; i++) {
		__u64 x = sampling_next_interval(next_random(), rate, log2_table);

		sum += (double)x;
		for (int k = 0; k < 7; k++)
			tail_counts[k] += x > tail_points[k] * rate;
	}
	double mean = sum / draws;
	/* The sample mean's standard error is rate / sqrt(draws) = 0.05%: allow 6 of them. */
	CHECK(fabs(mean / rate - 1) < 6.0 / sqrt(draws));
	for (int k = 0; k < 7; k++) {
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

/* A large allocation (always sampled, so the countdown restarts after it) followed by a small
 * one: the small one is sampled only when the fresh interval is shorter than it, so this
 * checks the density of tiny intervals, which a uniform stream never exercises. */
static void test_small_after_large(void)
{
	const __u64 rate = 16384, small = 16, large = 1 << 20;
	const long pairs = 2000000;
	double p = sampling_probability(small, rate);
	long sampled = 0;

	for (long i = 0; i < pairs; i++) {
		__u64 left = sampling_next_interval(next_random(), rate, log2_table);

		(void)large; /* the large allocation was sampled: left is a fresh interval */
		if (left <= small)
			sampled++;
	}
	double expected = pairs * p, sigma = sqrt(pairs * p * (1 - p));

	if (fabs(sampled - expected) > 6 * sigma)
		fprintf(stderr, "  small after large: %ld sampled, expected %.0f +- %.0f\n",
			sampled, expected, sigma);
	CHECK(fabs(sampled - expected) <= 6 * sigma);
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
	RUN(test_accuracy_over_the_range);
	RUN(test_distribution);
	RUN(test_small_after_large);
	RUN(test_unbiased_estimates);
	RUN(test_probability);
	return unit_summary("sampling");
}
