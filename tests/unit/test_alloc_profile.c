/* Unit tests of the per-stack aggregation's arithmetic: the kernel path's samples are
 * weighted by 1/p from the sample rate, the cooperative path's carry their weight, and both
 * land in the same totals (the two paths must give interchangeable profiles). */
#include <math.h>

#include "profile/alloc_profile.h"
#include "sampling.h"
#include "unit.h"

#define RATE (512 * 1024)

static bool near(double a, double b)
{
	return fabs(a - b) <= 1e-9 * fmax(1.0, fabs(b));
}

static void test_kernel_samples_are_unbiased_by_rate(void)
{
	const uint64_t frames[] = { 0x1000, 0x2000, 0x3000 };
	struct alloc_profile_totals totals;
	struct alloc_profile *profile;
	double p = -expm1(-100.0 / RATE);

	CHECK(alloc_profile__new(RATE, NULL, &profile) == 0);
	CHECK(alloc_profile__add_stack(profile, 42, frames, 3, 100) == 0);
	CHECK(alloc_profile__add_stack(profile, 42, frames, 3, 100) == 0);
	alloc_profile__totals(profile, &totals);
	CHECK_EQ_U64(totals.samples, 2);
	CHECK_EQ_U64(totals.stacks, 1);
	CHECK(near(totals.bytes, 2 * 100 / p));
	CHECK(near(totals.objects, 2 / p));
	alloc_profile__free(profile);
}

static void test_weighted_samples_keep_their_weight(void)
{
	const uint64_t frames[] = { 0x1000, 0x2000 };
	struct alloc_profile_totals totals;
	struct alloc_profile *profile;

	/* A sampler with another rate: the weight it reports wins over the profile's rate. */
	CHECK(alloc_profile__new(RATE, NULL, &profile) == 0);
	CHECK(alloc_profile__add_weighted_stack(profile, 7, frames, 2, 64, 65536.0) == 0);
	CHECK(alloc_profile__add_weighted_stack(profile, 7, frames, 2, 0, 1000.0) == 0);
	alloc_profile__totals(profile, &totals);
	CHECK_EQ_U64(totals.samples, 2);
	CHECK_EQ_U64(totals.stacks, 1);
	CHECK(near(totals.bytes, 66536.0));
	/* 0-byte requests count as one byte, as in the kernel path. */
	CHECK(near(totals.objects, 65536.0 / 64 + 1000.0));
	alloc_profile__free(profile);
}

static void test_both_paths_agree_for_the_same_weight(void)
{
	const uint64_t frames[] = { 0x1000, 0x2000 };
	struct alloc_profile_totals kernel, cooperative;
	struct alloc_profile *a, *b;
	uint64_t size = 3000;

	CHECK(alloc_profile__new(RATE, NULL, &a) == 0);
	CHECK(alloc_profile__new(RATE, NULL, &b) == 0);
	CHECK(alloc_profile__add_stack(a, 1, frames, 2, size) == 0);
	CHECK(alloc_profile__add_weighted_stack(b, 1, frames, 2, size,
						(double)size / sampling_probability(size, RATE)) == 0);
	alloc_profile__totals(a, &kernel);
	alloc_profile__totals(b, &cooperative);
	CHECK(near(kernel.bytes, cooperative.bytes));
	CHECK(near(kernel.objects, cooperative.objects));
	alloc_profile__free(a);
	alloc_profile__free(b);
}

int main(void)
{
	RUN(test_kernel_samples_are_unbiased_by_rate);
	RUN(test_weighted_samples_keep_their_weight);
	RUN(test_both_paths_agree_for_the_same_weight);
	return unit_summary("alloc_profile");
}
