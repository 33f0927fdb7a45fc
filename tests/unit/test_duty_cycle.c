/* The overhead budget's controller (attach/duty_cycle.h): one period's probe hits, the cost of
 * a hit, the window the probes were attached and the rest of the period with the process's CPU
 * time in each -> the next period's fraction. A pure function: the cases are the situations
 * the agent meets. */
#include <math.h>

#include "unit.h"
#include "attach/duty_cycle.h"

#define MS 1000000ull

/* A period of 1 s probed for window_ms of it. */
static double next(uint64_t hits, double ns_per_hit, uint64_t window_ms, uint64_t window_cpu_ms,
		   uint64_t rest_cpu_ms, double budget)
{
	struct duty_cycle_input in = {
		.hits = hits,
		.ns_per_hit = ns_per_hit,
		.window_ns = window_ms * MS,
		.window_cpu_ns = window_cpu_ms * MS,
		.rest_ns = (1000 - window_ms) * MS,
		.rest_cpu_ns = rest_cpu_ms * MS,
		.budget = budget,
	};

	return duty_cycle__next_fraction(&in);
}

/* The estimated probe share of own CPU time when probed a fraction f, with the rates a period
 * showed (p: probe time, r_w and r_o: own CPU per second in and out of the window). */
static double share(double f, double p, double r_w, double r_o)
{
	return f * p / (f * r_w + (1 - f) * r_o);
}

/* A process that allocates little keeps 100%. */
static void test_quiet_process_keeps_full_time(void)
{
	/* 100 hits at 1 us in a second of 500 ms CPU: 0.02% of its CPU, budget 1%. */
	CHECK(next(100, 1000, 1000, 500, 0, 0.01) == 1.0);
	CHECK(next(0, 1000, 1000, 900, 0, 0.01) == 1.0);
	/* It wakes every 10 ms for one allocation: probes cost 2% of its 5 ms of CPU, above a 1%
	 * budget, but 0.1 ms a second is not worth throttling. */
	CHECK(next(100, 1000, 1000, 5, 0, 0.01) == 1.0);
	/* The same share at twenty times the rate is. */
	CHECK(next(2000, 1000, 1000, 100, 0, 0.01) < 1.0);
}

/* Busy, attached the whole period: probes cost 50% of its own CPU; a 5% budget allows a
 * tenth of the time. */
static void test_busy_process_is_throttled_to_the_budget(void)
{
	/* 400k hits x 1 us = 400 ms of probes; CPU 1200 ms, so its own is 800 ms. */
	double f = next(400000, 1000, 1000, 1200, 0, 0.05);

	CHECK(fabs(f - 0.1) < 1e-9);
	CHECK(fabs(share(f, 0.4, 0.8, 0.8) - 0.05) < 1e-9);
}

/* A throttled steady process keeps its fraction. */
static void test_throttled_steady_process_keeps_its_fraction(void)
{
	/* 100 ms window: 40k hits (40 ms) + 80 ms own; the rest 720 ms own in 900 ms. */
	CHECK(fabs(next(40000, 1000, 100, 120, 720, 0.05) - 0.1) < 1e-9);
}

/* A process whose CPU is saturated does much less of its own work while probed (a malloc loop
 * against a microsecond trap: 90% of the window in probes). Attached all period, the guess
 * that it works as little outside is cautious; once a period shows the rest, the fraction is
 * the one that meets the budget exactly. */
static void test_saturated_process(void)
{
	double first = next(900000, 1000, 1000, 1000, 0, 0.05);
	double f = next(90000, 1000, 100, 100, 900, 0.05);

	CHECK(fabs(first - 0.05 * 0.1 / 0.9) < 1e-9);
	CHECK(f > first); /* the first guess erred on the budget's side */
	CHECK(fabs(share(f, 0.9, 0.1, 1.0) - 0.05) < 1e-9);
}

/* Quiet again while throttled: released in one period. */
static void test_quiet_again_is_released(void)
{
	/* 100 ms window, 50 hits: even ten times as many would cost 0.06% of 800 ms. */
	CHECK(next(50, 1000, 100, 80, 720, 0.05) == 1.0);
}

/* Busier: the fraction falls, never below the floor. */
static void test_fraction_falls_with_load_and_has_a_floor(void)
{
	double a = next(40000, 1000, 100, 120, 720, 0.05);
	double b = next(80000, 1000, 100, 160, 720, 0.05);

	CHECK(b < a);
	CHECK(next(5000000, 1000, 1000, 1000, 0, 0.01) == DUTY_CYCLE_MIN_FRACTION);
	CHECK(DUTY_CYCLE_MIN_FRACTION > 0);
}

/* A probe estimate above the CPU measured (a calibration that erred high) is no reason to
 * stop probing altogether: own CPU has a floor. */
static void test_probe_estimate_above_cpu(void)
{
	double f = next(2000, 1000, 1000, 0, 0, 0.05);

	CHECK(f >= DUTY_CYCLE_MIN_FRACTION && f <= 1.0);
	CHECK(fabs(share(f, 0.002, 0.001, 0.001) - 0.05) < 1e-9);
}

/* No budget. */
static void test_no_budget(void)
{
	CHECK(next(400000, 1000, 1000, 1200, 0, 0) == 1.0);
}

int main(void)
{
	RUN(test_quiet_process_keeps_full_time);
	RUN(test_busy_process_is_throttled_to_the_budget);
	RUN(test_throttled_steady_process_keeps_its_fraction);
	RUN(test_saturated_process);
	RUN(test_quiet_again_is_released);
	RUN(test_fraction_falls_with_load_and_has_a_floor);
	RUN(test_probe_estimate_above_cpu);
	RUN(test_no_budget);
	return unit_summary("duty_cycle");
}
