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

/* One period for the cost of a hit: own CPU at own_rate of a CPU throughout, hits at
 * window_rate and rest_rate per ms, each costing ns_per_hit of CPU. */
static struct duty_cycle_period period(uint64_t window_ms, uint64_t rest_ms, double own_rate,
				       uint64_t window_rate, uint64_t rest_rate, double ns_per_hit)
{
	struct duty_cycle_period p = {
		.window_ns = window_ms * MS,
		.window_hits = window_ms * window_rate,
		.rest_ns = rest_ms * MS,
		.rest_hits = rest_ms * rest_rate,
	};

	p.window_cpu_ns = (uint64_t)(own_rate * (double)p.window_ns +
				     (double)p.window_hits * ns_per_hit);
	p.rest_cpu_ns = (uint64_t)(own_rate * (double)p.rest_ns + (double)p.rest_hits * ns_per_hit);
	return p;
}

/* A server with CPU to spare whose hits cost three times the calibration (Redis on a busy
 * machine): one period shows it, and the controller then allows a third of the fraction. */
static void test_cost_measured_in_the_process(void)
{
	struct duty_cycle_cost cost = { 0 };
	struct duty_cycle_period p = period(50, 950, 0.3, 100, 0, 3000);
	/* The controller: a window of 50 ms with 5000 hits and 15 ms of own CPU. */
	struct duty_cycle_input in = {
		.hits = 5000, .window_ns = 50 * MS, .window_cpu_ns = p.window_cpu_ns,
		.rest_ns = 950 * MS, .rest_cpu_ns = 285 * MS, .budget = 0.01,
	};
	double c = duty_cycle__measure_cost(&cost, &p, 1000), f_calibrated, f_measured;

	CHECK(fabs(c - 3000) < 1);
	CHECK(cost.periods == 1);
	/* With the calibrated cost the same window would have looked like this. */
	in.ns_per_hit = 1000;
	in.window_cpu_ns = 15 * MS + 5000 * 1000;
	f_calibrated = duty_cycle__next_fraction(&in);
	in.ns_per_hit = c;
	in.window_cpu_ns = p.window_cpu_ns;
	f_measured = duty_cycle__next_fraction(&in);

	CHECK(fabs(f_measured - f_calibrated / 3) < 1e-6);
	CHECK(fabs(share(f_measured, 0.3, 0.3, 0.3) - 0.01) < 1e-9);
}

/* Hits in the rest (the detach takes effect late) raise its CPU rate too; they are counted
 * against the window's, not taken for the process's own work. */
static void test_stray_hits_in_the_rest(void)
{
	struct duty_cycle_cost cost = { 0 };
	struct duty_cycle_period p = period(50, 950, 0.3, 100, 2, 3000);

	CHECK(fabs(duty_cycle__measure_cost(&cost, &p, 1000) - 3000) < 1);
}

/* Hits cheaper than the calibration says, or a window whose CPU rate is no higher than the
 * rest's (a process whose CPU is saturated): the calibration stands, it is the floor. */
static void test_calibration_is_the_floor(void)
{
	struct duty_cycle_cost cost = { 0 };
	struct duty_cycle_period cheap = period(50, 950, 0.3, 100, 0, 500);
	struct duty_cycle_period saturated = {
		.window_ns = 50 * MS, .window_cpu_ns = 50 * MS, .window_hits = 45000,
		.rest_ns = 950 * MS, .rest_cpu_ns = 950 * MS, .rest_hits = 0,
	};

	CHECK(duty_cycle__measure_cost(&cost, &cheap, 1000) == 1000);
	cost = (struct duty_cycle_cost){ 0 };
	CHECK(duty_cycle__measure_cost(&cost, &saturated, 1000) == 1000);
	CHECK(cost.periods == 1);
}

/* Too little to go on: few hits wait for more periods; windows or rests too short to give a
 * CPU rate, and windows with no more hits than the rest (gone quiet), add nothing. */
static void test_cost_needs_enough_to_go_on(void)
{
	struct duty_cycle_cost cost = { 0 };
	struct duty_cycle_period few = period(50, 950, 0.3, 20, 0, 3000); /* 1000 hits */
	struct duty_cycle_period short_window = period(DUTY_CYCLE_COST_MIN_WINDOW_MS - 1, 950,
						       0.3, 1000, 0, 3000);
	struct duty_cycle_period short_rest = period(50, DUTY_CYCLE_COST_MIN_REST_MS - 1, 0.3, 100,
						     0, 3000);
	struct duty_cycle_period quiet = period(50, 950, 0.3, 1, 1, 3000);

	CHECK(duty_cycle__measure_cost(&cost, &few, 1000) == 1000);
	CHECK(duty_cycle__measure_cost(&cost, &few, 1000) == 1000); /* 1750 */
	CHECK(fabs(duty_cycle__measure_cost(&cost, &few, 1000) - 3000) < 1); /* 2312 */
	cost = (struct duty_cycle_cost){ 0 };
	CHECK(duty_cycle__measure_cost(&cost, &short_window, 1000) == 1000);
	CHECK(duty_cycle__measure_cost(&cost, &short_rest, 1000) == 1000);
	CHECK(duty_cycle__measure_cost(&cost, &quiet, 1000) == 1000);
	CHECK(cost.periods == 0);
}

/* The cost follows the last few periods: once hits get cheaper (the machine quieter), the
 * measured cost comes down within a few periods, to the calibration at the least. */
static void test_cost_follows_recent_periods(void)
{
	struct duty_cycle_cost cost = { 0 };
	struct duty_cycle_period dear = period(50, 950, 0.3, 100, 0, 4000);
	struct duty_cycle_period cheaper = period(50, 950, 0.3, 100, 0, 2000);
	struct duty_cycle_period cheap = period(50, 950, 0.3, 100, 0, 800);
	double c = 0;

	for (int i = 0; i < 10; i++)
		c = duty_cycle__measure_cost(&cost, &dear, 1000);
	CHECK(fabs(c - 4000) < 1);
	for (int i = 0; i < 20; i++)
		c = duty_cycle__measure_cost(&cost, &cheaper, 1000);
	CHECK(fabs(c - 2000) < 20);
	for (int i = 0; i < 20; i++)
		c = duty_cycle__measure_cost(&cost, &cheap, 1000);
	CHECK(c == 1000);
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
	RUN(test_cost_measured_in_the_process);
	RUN(test_stray_hits_in_the_rest);
	RUN(test_calibration_is_the_floor);
	RUN(test_cost_needs_enough_to_go_on);
	RUN(test_cost_follows_recent_periods);
	return unit_summary("duty_cycle");
}
