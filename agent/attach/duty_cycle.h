/* The overhead budget (overhead.max_cpu_percent, --max-overhead): a transparent target whose
 * probes would cost it more than the budget is probed only part of the time. Each period
 * (DUTY_CYCLE_PERIOD_MS) starts with its probes attached; after a fraction f of the period they
 * are detached until the next one. f is chosen period by period from what the last one showed:
 * the probe hits counted in the process's own probe_hits slot times the cost of a hit, against
 * the process's own CPU time (its CPU-time clock, probes excluded). The cost of a hit is the
 * larger of the one calibrated at start (attach/probe_cost.h: a cache-hot loop in the agent)
 * and the one measured in the process itself from its throttled periods (the CPU rate the
 * window shows beyond the rest's, per extra hit: duty_cycle__measure_cost), since a hit in a
 * real program (a cold path, caches and TLB polluted) costs more than in the calibration loop.
 *
 * The samples of a throttled period are held until the period ends and then weighted by
 * 1/f, f the share of the period's wall time the probes were attached (measured, not planned):
 * for a steady workload, one whose allocations follow the clock (a server under a steady load
 * with CPU to spare), the scaled estimates are unbiased. A process whose CPU is saturated runs
 * slower while probed, so it allocates less than its share of the period during the window
 * and its estimates come out low by up to that slowdown. A process using the
 * cooperative path (an in-process sampler) is never given a duty cycle. */
#ifndef ALLOCSCOPE_DUTY_CYCLE_H
#define ALLOCSCOPE_DUTY_CYCLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct alloc_program;
struct alloc_sample;
struct process_probes;

/* One period: attach, detach, and their RCU grace period (~80 ms, in a worker) at most once a
 * second per throttled process. Measured: see docs/operations.md. */
#define DUTY_CYCLE_PERIOD_MS 1000
/* The first period, probed whole before anything is known: short, so that a busy process is
 * throttled before it has paid much (a second at full cost is 1.5 points of a 20 s Redis run). */
#define DUTY_CYCLE_FIRST_PERIOD_MS 200
/* The shortest window, about what an attach takes on a busy machine (5 to 22 ms measured,
 * docs/operations.md): below it the period is stretched (window / fraction), up to
 * DUTY_CYCLE_MAX_PERIOD_MS. */
#define DUTY_CYCLE_MIN_WINDOW_MS 20
#define DUTY_CYCLE_MAX_PERIOD_MS 5000
/* The smallest fraction: the shortest window in the longest period. */
#define DUTY_CYCLE_MIN_FRACTION ((double)DUTY_CYCLE_MIN_WINDOW_MS / DUTY_CYCLE_MAX_PERIOD_MS)
/* CPU time below which a period says nothing about overhead (a nearly idle process). */
#define DUTY_CYCLE_CPU_FLOOR_NS 1000000ull
/* Probe time not worth throttling whatever its share: 1 ms per second probed (0.1% of a CPU),
 * a process that allocates little. */
#define DUTY_CYCLE_NEGLIGIBLE_NS_PER_S 1000000.0
/* Samples held per throttled process and period; past this they are weighted at the planned
 * fraction as they arrive. */
#define DUTY_CYCLE_MAX_HELD 65536

/* What one period showed, and the budget: the window the probes were attached, the rest of
 * the period (0 when attached throughout), and the process's CPU time in each. */
struct duty_cycle_input {
	uint64_t hits;          /* probe hits in the period (all in the window) */
	double ns_per_hit;      /* cost of one (duty_cycle__measure_cost) */
	uint64_t window_ns, window_cpu_ns; /* CPU time probes included */
	uint64_t rest_ns, rest_cpu_ns;
	double budget;          /* allowed probe time / the process's own CPU time, e.g. 0.05 */
};

/* The fraction for the next period. Per second of the window the process paid p in probes
 * and did r_w of its own work; per second of the rest it did r_o (r_w when there was no rest:
 * the cautious guess, as a process whose CPU is saturated does more unprobed). Attached a
 * fraction f, probes cost f p against f r_w + (1 - f) r_o of own CPU time; f is the largest
 * that keeps the ratio within budget, between DUTY_CYCLE_MIN_FRACTION and 1. 1 when the probes
 * would cost under DUTY_CYCLE_NEGLIGIBLE_NS_PER_S attached all the time (a quiet process), or
 * the budget is 0 (none). Own CPU rates have a floor of DUTY_CYCLE_CPU_FLOOR_NS a second. A
 * pure function. */
double duty_cycle__next_fraction(const struct duty_cycle_input *in);

/* The cost of a hit measured in one throttled process. Each period with a window and a rest
 * compares them: the window's CPU beyond what the rest's CPU rate predicts for its length,
 * against the window's hits beyond what the rest's hit rate predicts (stray hits in the rest,
 * before the detach takes effect, count against it). Sums decay by DUTY_CYCLE_COST_DECAY a
 * period, so the cost follows the last few periods, each weighted by its hits (a ratio of
 * sums, not a mean of noisy ratios). This holds for a process with CPU to spare, whose work
 * follows its load (a server): probed, it spends more CPU on the same work. A process whose
 * CPU is saturated spends the same CPU either way (its window shows no excess) and keeps the
 * calibrated cost; its overhead is the work it does not do, not CPU it spends. */
#define DUTY_CYCLE_COST_DECAY 0.75
/* What the decayed sums need before the measured cost is believed: this many extra hits, and
 * windows (from the end of the attach to the detach) and rests of at least these lengths
 * (shorter ones give CPU rates too noisy to compare). */
#define DUTY_CYCLE_COST_MIN_HITS 2000.0
#define DUTY_CYCLE_COST_MIN_WINDOW_MS 10
#define DUTY_CYCLE_COST_MIN_REST_MS 200

struct duty_cycle_cost {
	double excess_cpu_ns; /* decayed sums over the periods measured */
	double extra_hits;
	uint64_t periods;     /* periods that contributed */
};

struct duty_cycle_period {
	uint64_t window_ns, window_cpu_ns, window_hits; /* probes attached */
	uint64_t rest_ns, rest_cpu_ns, rest_hits;       /* detached */
};

/* Adds one period to cost (a period without a long enough window and rest adds nothing) and
 * returns the cost of a hit to use from now on: the measured one when the sums hold enough
 * hits and it is above calibrated, else calibrated. A pure function of its inputs. */
double duty_cycle__measure_cost(struct duty_cycle_cost *cost, const struct duty_cycle_period *p,
				double calibrated);

struct duty_cycle;

/* Adds a held sample to its profile weighted scale times (1/f_eff). 0 or -errno. */
typedef int (*duty_cycle_add_fn)(const struct alloc_sample *sample, double scale, void *ctx);

struct duty_cycle_opts {
	double budget;       /* fraction, > 0 */
	double ns_per_hit;   /* calibrated */
	int64_t period_ms;
	duty_cycle_add_fn add;
	void *add_ctx;
	/* In-use tracking (free probes) for the process. Its frees go unseen while its probes
	 * are detached, so the live set it has would keep what it frees meanwhile: it is dropped
	 * (alloc_program__forget_live) at each detach and again before each attach. While
	 * throttled, its in-use is not known (the caller leaves it out of snapshots); once
	 * released, it counts what was allocated since. */
	bool inuse;
};

/* For pid, whose probes count their hits in slot (owned from now on: given back by free).
 * probes are borrowed and must be attached. now_ms starts the first period, at f = 1. */
int duty_cycle__new(struct alloc_program *prog, struct process_probes *probes, pid_t pid,
		    uint32_t slot, const struct duty_cycle_opts *opts, int64_t now_ms,
		    struct duty_cycle **out);
/* Ends the duty cycle at now_ms (when the process was seen to exit, or the capture ends):
 * what is still held is added, weighted by the window's share of the period so far; the slot
 * is given back. The probes are not touched. Accepts NULL. */
void duty_cycle__free(struct duty_cycle *dc, int64_t now_ms);

/* Moves the duty cycle on: detaches at the end of the window (the links go to *detached for
 * the caller to free off its loop; NULL when none), ends the period (held samples added,
 * next fraction chosen) and attaches for the next. Call after draining the samples. Returns
 * the next time (ms) it needs a call; *changed is set when the fraction changed. A failed
 * attach is reported in err (returns the same next time; it is tried again next period). */
int64_t duty_cycle__tick(struct duty_cycle *dc, int64_t now_ms,
			 struct process_probes **detached, bool *changed, int *attach_error,
			 char *err, size_t err_len);

/* A sample of this process: held during a throttled period (true), else the caller adds it
 * at weight 1 (false). */
bool duty_cycle__hold(struct duty_cycle *dc, const struct alloc_sample *sample, size_t size);

struct duty_cycle_stats {
	double fraction;          /* this period's */
	double min_fraction;      /* the smallest any period had */
	double mean_fraction;     /* time-weighted over the periods ended */
	uint64_t periods, throttled_periods;
	uint64_t hits;            /* over all periods */
	double probe_share;       /* estimated probe time / own CPU time, over all periods */
	double probe_share_full;  /* the same had it been attached all the time */
	double ns_per_hit;        /* the cost of a hit used now: calibrated or measured */
	bool cost_measured;       /* ns_per_hit is the one measured in the process */
};
void duty_cycle__stats(const struct duty_cycle *dc, struct duty_cycle_stats *out);

/* The process's CPU time (all threads, dead ones included) in ns: 0 or -errno. */
int duty_cycle__cpu_ns(pid_t pid, uint64_t *ns);

#endif
