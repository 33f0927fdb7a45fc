/* The overhead budget's controller (attach/duty_cycle.h): one period's probe hits, the cost of
 * a hit, the process's CPU time and the fraction it was probed -> the next period's fraction.
 * A pure function: the cases are the situations the agent meets. */
#include <math.h>

#include "unit.h"
#include "attach/duty_cycle.h"

#define MS 1000000ull

static double next(uint64_t hits, double ns_per_hit, uint64_t cpu_ns, double fraction,
		   double budget)
{
	struct duty_cycle_input in = {
		.hits = hits,
		.ns_per_hit = ns_per_hit,
		.cpu_ns = cpu_ns,
		.period_ns = 1000 * MS,
		.fraction = fraction,
		.budget = budget,
	};

	return duty_cycle__next_fraction(&in);
}

/* A process that allocates little keeps 100%. */
static void test_quiet_process_keeps_full_time(void)
{
	/* 100 hits at 1 us in a second of 500 ms CPU: 0.02% of its CPU, budget 1%. */
	CHECK(next(100, 1000, 500 * MS, 1.0, 0.01) == 1.0);
	/* No hits at all. */
	CHECK(next(0, 1000, 900 * MS, 1.0, 0.01) == 1.0);
	/* Nearly idle: 100 us of probes against 0.1 ms of CPU is within budget of the floor. */
	CHECK(next(10, 1000, 100000, 1.0, 0.1) == 1.0);
	/* A process that wakes every 10 ms for one allocation: its probes cost 2% of its 5 ms
	 * of CPU, above a 1% budget, but 0.1 ms a second is not worth throttling. */
	CHECK(next(100, 1000, 5 * MS, 1.0, 0.01) == 1.0);
	/* The same share at ten times the rate is. */
	CHECK(next(2000, 1000, 100 * MS, 1.0, 0.01) < 1.0);
}

/* Busy: attached the whole period, probes cost 50% of its own CPU; a 5% budget allows a
 * tenth of the time. */
static void test_busy_process_is_throttled_to_the_budget(void)
{
	/* 400k hits x 1 us = 400 ms of probes; CPU 1200 ms, so its own is 800 ms. */
	double f = next(400000, 1000, 1200 * MS, 1.0, 0.05);

	CHECK(fabs(f - 0.05 * 800 / 400) < 1e-9);
	/* Probed at that fraction, the estimated share is the budget. */
	CHECK(fabs(f * 400.0 / 800.0 - 0.05) < 1e-9);
}

/* A throttled period extrapolates: hits seen in a tenth of the time stand for ten times as
 * many; the same steady process keeps its fraction. */
static void test_throttled_steady_process_keeps_its_fraction(void)
{
	/* f = 0.1: 40k hits (40 ms of probes) in 840 ms of CPU: own 800 ms. */
	double f = next(40000, 1000, 840 * MS, 0.1, 0.05);

	CHECK(fabs(f - 0.1) < 1e-9);
}

/* Quiet again while throttled: released in one period. */
static void test_quiet_again_is_released(void)
{
	/* f = 0.1, 50 hits: even ten times as many would cost 0.06% of 800 ms. */
	CHECK(next(50, 1000, 800 * MS, 0.1, 0.05) == 1.0);
}

/* Busier still: the fraction falls in proportion, never below the floor. */
static void test_fraction_falls_with_load_and_has_a_floor(void)
{
	double a = next(40000, 1000, 840 * MS, 0.1, 0.05);
	double b = next(80000, 1000, 880 * MS, 0.1, 0.05);

	CHECK(b < a);
	CHECK(fabs(b - 0.05 * 800 / 800) < 1e-9);
	/* 50 times its own CPU in probes (a malloc loop against a microsecond trap). */
	CHECK(next(5000000, 1000, 5100 * MS, 1.0, 0.01) == DUTY_CYCLE_MIN_FRACTION);
	CHECK(DUTY_CYCLE_MIN_FRACTION > 0);
}

/* CPU time that a coarse clock puts below the probe estimate is no reason to stop probing
 * altogether: own time has a floor. */
static void test_probe_estimate_above_cpu(void)
{
	double f = next(2000, 1000, 0, 1.0, 0.05);

	CHECK(f >= DUTY_CYCLE_MIN_FRACTION && f <= 1.0);
	CHECK(fabs(f - 0.05 * (double)DUTY_CYCLE_CPU_FLOOR_NS / 2e6) < 1e-9);
}

/* No budget (0) or a budget of 100% a process can hardly exceed. */
static void test_no_budget(void)
{
	CHECK(next(400000, 1000, 1200 * MS, 1.0, 0) == 1.0);
	CHECK(next(400000, 1000, 1200 * MS, 1.0, 1.0) == 1.0);
}

int main(void)
{
	RUN(test_quiet_process_keeps_full_time);
	RUN(test_busy_process_is_throttled_to_the_budget);
	RUN(test_throttled_steady_process_keeps_its_fraction);
	RUN(test_quiet_again_is_released);
	RUN(test_fraction_falls_with_load_and_has_a_floor);
	RUN(test_probe_estimate_above_cpu);
	RUN(test_no_budget);
	return unit_summary("duty_cycle");
}
