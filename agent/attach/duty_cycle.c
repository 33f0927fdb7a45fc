/* The overhead budget's controller and each throttled process's duty cycle. The controller is a
 * pure function of one period's numbers (unit-tested); the rest keeps the period's clock,
 * attaches and detaches, reads the process's hits and CPU time, and holds the period's samples
 * until the weight they deserve is known. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "alloc_program.h"
#include "duty_cycle.h"
#include "process_probes.h"
#include "util/log.h"

double duty_cycle__next_fraction(const struct duty_cycle_input *in)
{
	double probe_ns = (double)in->hits * in->ns_per_hit;
	double floor = (double)DUTY_CYCLE_CPU_FLOOR_NS / 1e9;
	double window = (double)in->window_ns, p, r_w, r_o, denominator, next;

	if (in->budget <= 0 || probe_ns <= 0 || window <= 0)
		return 1.0;
	p = probe_ns / window;
	if (p * 1e9 < DUTY_CYCLE_NEGLIGIBLE_NS_PER_S)
		return 1.0;
	r_w = ((double)in->window_cpu_ns - probe_ns) / window;
	if (r_w < floor)
		r_w = floor;
	r_o = in->rest_ns ? (double)in->rest_cpu_ns / (double)in->rest_ns : r_w;
	if (r_o < floor)
		r_o = floor;
	/* f p <= b (f r_w + (1 - f) r_o)  <=>  f (p - b r_w + b r_o) <= b r_o */
	denominator = p - in->budget * r_w + in->budget * r_o;
	if (denominator <= 0)
		return 1.0;
	next = in->budget * r_o / denominator;
	if (next >= 1.0)
		return 1.0;
	if (next < DUTY_CYCLE_MIN_FRACTION)
		return DUTY_CYCLE_MIN_FRACTION;
	return next;
}

double duty_cycle__measure_cost(struct duty_cycle_cost *cost, const struct duty_cycle_period *p,
				double calibrated)
{
	double w = (double)p->window_ns, r = (double)p->rest_ns, measured;

	if (p->window_ns >= DUTY_CYCLE_COST_MIN_WINDOW_MS * 1000000ull &&
	    p->rest_ns >= DUTY_CYCLE_COST_MIN_REST_MS * 1000000ull) {
		double extra = (double)p->window_hits - (double)p->rest_hits * w / r;

		/* A window with no more hits than the rest (a process that went quiet) says
		 * nothing about their cost. */
		if (extra > 0) {
			cost->excess_cpu_ns = cost->excess_cpu_ns * DUTY_CYCLE_COST_DECAY +
					      (double)p->window_cpu_ns -
					      (double)p->rest_cpu_ns * w / r;
			cost->extra_hits = cost->extra_hits * DUTY_CYCLE_COST_DECAY + extra;
			cost->periods++;
		}
	}
	if (cost->extra_hits < DUTY_CYCLE_COST_MIN_HITS)
		return calibrated;
	measured = cost->excess_cpu_ns / cost->extra_hits;
	return measured > calibrated ? measured : calibrated;
}

int duty_cycle__cpu_ns(pid_t pid, uint64_t *ns)
{
	struct timespec ts;
	clockid_t clock;
	int ret = clock_getcpuclockid(pid, &clock);

	if (ret)
		return -ret;
	if (clock_gettime(clock, &ts) != 0)
		return -errno;
	*ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	return 0;
}

struct duty_cycle {
	struct alloc_program *prog;
	struct process_probes *probes;
	pid_t pid;
	uint32_t slot;
	struct duty_cycle_opts opts;

	double fraction;            /* planned for this period */
	int64_t period_ms;          /* this period's length: stretched for a short window */
	int64_t period_start, window_end, window_closed_at;
	double window_start;        /* ms: the attach's middle (breakpoints go in one by one) */
	bool window_closed;
	uint64_t hits_start, cpu_start, cpu_window_end;
	/* For measuring the cost of a hit: the window from the end of the attach (every probe
	 * in) to the detach, and the hits at each end. */
	double attached_at;         /* ms */
	uint64_t hits_attached, cpu_attached, hits_window_end;
	struct duty_cycle_cost cost;
	double ns_per_hit;          /* in use: calibrated or measured */
	uint64_t cpu_last;          /* the latest reading: what is known once the process is gone */

	struct alloc_sample **held; /* copies, this period's */
	size_t n_held, cap_held;

	struct duty_cycle_stats stats;
	double time_ms, fraction_ms; /* for the time-weighted mean */
	double probe_ns, probe_full_ns, own_ns;
};

/* The process's CPU time now, or once it is gone the latest reading. */
static uint64_t read_cpu(struct duty_cycle *dc)
{
	uint64_t ns = 0;

	if (duty_cycle__cpu_ns(dc->pid, &ns) == 0 && ns >= dc->cpu_last)
		dc->cpu_last = ns;
	return dc->cpu_last;
}

static void begin_period(struct duty_cycle *dc, int64_t now, int *attach_error, char *err,
			 size_t err_len)
{
	dc->period_start = now;
	dc->window_closed = false;
	dc->period_ms = dc->stats.periods ? dc->opts.period_ms : DUTY_CYCLE_FIRST_PERIOD_MS;
	if (dc->fraction * (double)dc->period_ms < DUTY_CYCLE_MIN_WINDOW_MS)
		dc->period_ms = (int64_t)(DUTY_CYCLE_MIN_WINDOW_MS / dc->fraction + 0.5);
	if (dc->period_ms > DUTY_CYCLE_MAX_PERIOD_MS)
		dc->period_ms = DUTY_CYCLE_MAX_PERIOD_MS;
	dc->window_start = (double)now;
	dc->hits_start = alloc_program__hit_slot_read(dc->prog, dc->slot);
	dc->cpu_start = read_cpu(dc);
	dc->cpu_window_end = dc->cpu_start;
	if (process_probes__paused(dc->probes)) {
		struct timespec a, b;
		int ret;

		/* What entered the live set between the last forget and the detach taking
		 * effect lost its frees too. */
		if (dc->opts.inuse)
			alloc_program__forget_live(dc->prog, dc->pid);
		clock_gettime(CLOCK_MONOTONIC, &a);
		ret = process_probes__resume(dc->prog, dc->probes, err, err_len);
		clock_gettime(CLOCK_MONOTONIC, &b);
		log_debug("pid %d: probes attached again in %.2f ms", (int)dc->pid,
			  (double)(b.tv_sec - a.tv_sec) * 1e3 +
				  (double)(b.tv_nsec - a.tv_nsec) / 1e6);
		if (ret && attach_error)
			*attach_error = ret;
		dc->window_start += ((double)(b.tv_sec - a.tv_sec) * 1e3 +
				     (double)(b.tv_nsec - a.tv_nsec) / 1e6) / 2;
		dc->attached_at = (double)now + ((double)(b.tv_sec - a.tv_sec) * 1e3 +
						 (double)(b.tv_nsec - a.tv_nsec) / 1e6);
		dc->hits_attached = alloc_program__hit_slot_read(dc->prog, dc->slot);
		dc->cpu_attached = read_cpu(dc);
	} else {
		dc->attached_at = (double)now;
		dc->hits_attached = dc->hits_start;
		dc->cpu_attached = dc->cpu_start;
	}
	dc->window_end = (int64_t)(dc->window_start + dc->fraction * (double)dc->period_ms + 0.5);
}

static void release_held(struct duty_cycle *dc, double scale)
{
	for (size_t i = 0; i < dc->n_held; i++) {
		dc->opts.add(dc->held[i], scale, dc->opts.add_ctx);
		free(dc->held[i]);
	}
	dc->n_held = 0;
}

static void end_period(struct duty_cycle *dc, int64_t now)
{
	uint64_t hits = alloc_program__hit_slot_read(dc->prog, dc->slot) - dc->hits_start;
	uint64_t cpu_end = read_cpu(dc);
	double length = (double)(now - dc->period_start), time_fraction = 1.0, f_eff;
	double probe_ns, own;
	struct duty_cycle_input in;
	double window_ms;
	size_t held;

	if (cpu_end < dc->cpu_start)
		cpu_end = dc->cpu_start;
	if (!dc->window_closed)
		dc->cpu_window_end = cpu_end;
	if (dc->window_closed && length > 0)
		time_fraction = ((double)dc->window_closed_at - dc->window_start) / length;
	if (time_fraction <= 0)
		time_fraction = DUTY_CYCLE_MIN_FRACTION;
	if (dc->window_closed && dc->window_closed_at > dc->attached_at &&
	    dc->cpu_window_end >= dc->cpu_attached && cpu_end >= dc->cpu_window_end) {
		struct duty_cycle_period p = {
			.window_ns = (uint64_t)(((double)dc->window_closed_at - dc->attached_at) *
						1e6),
			.window_cpu_ns = dc->cpu_window_end - dc->cpu_attached,
			.window_hits = dc->hits_window_end - dc->hits_attached,
			.rest_ns = (uint64_t)(now - dc->window_closed_at) * 1000000ull,
			.rest_cpu_ns = cpu_end - dc->cpu_window_end,
			.rest_hits = hits - (dc->hits_window_end - dc->hits_start),
		};

		dc->ns_per_hit = duty_cycle__measure_cost(&dc->cost, &p, dc->opts.ns_per_hit);
		log_debug("pid %d: window %.1f ms, CPU %.2f ms, %llu hits; rest %.1f ms, CPU "
			  "%.2f ms, %llu hits; a hit costs %.0f ns (calibrated %.0f)",
			  (int)dc->pid, (double)p.window_ns / 1e6, (double)p.window_cpu_ns / 1e6,
			  (unsigned long long)p.window_hits, (double)p.rest_ns / 1e6,
			  (double)p.rest_cpu_ns / 1e6, (unsigned long long)p.rest_hits,
			  dc->ns_per_hit, dc->opts.ns_per_hit);
	}
	probe_ns = (double)hits * dc->ns_per_hit;
	f_eff = time_fraction;
	held = dc->n_held;
	release_held(dc, 1.0 / f_eff);

	own = (double)(cpu_end - dc->cpu_start) - probe_ns;
	dc->stats.periods++;
	dc->stats.throttled_periods += dc->fraction < 1.0;
	dc->stats.hits += hits;
	dc->time_ms += length;
	dc->fraction_ms += length * time_fraction;
	dc->probe_ns += probe_ns;
	dc->probe_full_ns += probe_ns / time_fraction;
	dc->own_ns += own > 0 ? own : 0;

	window_ms = dc->window_closed ? (double)dc->window_closed_at - dc->window_start
				      : (double)now - dc->window_start;
	if (window_ms <= 0)
		window_ms = 1;
	in = (struct duty_cycle_input){
		.hits = hits,
		.ns_per_hit = dc->ns_per_hit,
		.window_ns = (uint64_t)(window_ms * 1e6),
		.window_cpu_ns = dc->cpu_window_end - dc->cpu_start,
		.rest_ns = dc->window_closed && length > window_ms
				   ? (uint64_t)((length - window_ms) * 1e6)
				   : 0,
		.rest_cpu_ns = cpu_end - dc->cpu_window_end,
		.budget = dc->opts.budget,
	};
	dc->fraction = duty_cycle__next_fraction(&in);
	log_debug("pid %d: period of %.0f ms: %llu probe hits, CPU %.1f ms, attached %.3f of the "
		  "time (%zu samples held, weighted x%.3g); next fraction %.4f",
		  (int)dc->pid, length, (unsigned long long)hits,
		  (double)(cpu_end - dc->cpu_start) / 1e6, time_fraction, held, 1.0 / f_eff,
		  dc->fraction);
	if (dc->fraction < dc->stats.min_fraction)
		dc->stats.min_fraction = dc->fraction;
}

int duty_cycle__new(struct alloc_program *prog, struct process_probes *probes, pid_t pid,
		    uint32_t slot, const struct duty_cycle_opts *opts, int64_t now_ms,
		    struct duty_cycle **out)
{
	struct duty_cycle *dc = calloc(1, sizeof(*dc));

	*out = NULL;
	if (!dc)
		return -ENOMEM;
	dc->prog = prog;
	dc->probes = probes;
	dc->pid = pid;
	dc->slot = slot;
	dc->opts = *opts;
	if (dc->opts.period_ms <= 0)
		dc->opts.period_ms = DUTY_CYCLE_PERIOD_MS;
	dc->fraction = 1.0;
	dc->ns_per_hit = dc->opts.ns_per_hit;
	dc->stats.min_fraction = 1.0;
	begin_period(dc, now_ms, NULL, NULL, 0);
	*out = dc;
	return 0;
}

void duty_cycle__free(struct duty_cycle *dc, int64_t now_ms)
{
	double fraction = 1.0;

	if (!dc)
		return;
	/* The period is cut short (the process exited, or the capture ends): the window's share
	 * of what there was of it. */
	if (dc->window_closed && now_ms > dc->period_start)
		fraction = ((double)dc->window_closed_at - dc->window_start) /
			   (double)(now_ms - dc->period_start);
	if (fraction < DUTY_CYCLE_MIN_FRACTION)
		fraction = DUTY_CYCLE_MIN_FRACTION;
	if (dc->n_held)
		release_held(dc, 1.0 / fraction);
	free(dc->held);
	alloc_program__hit_slot_free(dc->prog, dc->slot);
	free(dc);
}

int64_t duty_cycle__tick(struct duty_cycle *dc, int64_t now_ms,
			 struct process_probes **detached, bool *changed, int *attach_error,
			 char *err, size_t err_len)
{
	double before = dc->fraction;

	*detached = NULL;
	*changed = false;
	*attach_error = 0;
	read_cpu(dc); /* kept up to date for the period a process's exit cuts short */
	if (dc->fraction < 1.0 && !dc->window_closed && now_ms >= dc->window_end) {
		dc->cpu_window_end = read_cpu(dc);
		dc->hits_window_end = alloc_program__hit_slot_read(dc->prog, dc->slot);
		if (process_probes__pause(dc->probes, detached) == 0) {
			dc->window_closed = true;
			dc->window_closed_at = now_ms;
			if (dc->opts.inuse)
				alloc_program__forget_live(dc->prog, dc->pid);
		}
	}
	if (now_ms >= dc->period_start + dc->period_ms) {
		end_period(dc, now_ms);
		begin_period(dc, now_ms, attach_error, err, err_len);
		*changed = dc->fraction != before;
	}
	if (dc->fraction < 1.0 && !dc->window_closed)
		return dc->window_end;
	return dc->period_start + dc->period_ms;
}

bool duty_cycle__hold(struct duty_cycle *dc, const struct alloc_sample *sample, size_t size)
{
	struct alloc_sample *copy;

	if (dc->fraction >= 1.0)
		return false;
	if (dc->n_held == dc->cap_held) {
		size_t cap = dc->cap_held ? dc->cap_held * 2 : 64;
		struct alloc_sample **grown;

		if (cap > DUTY_CYCLE_MAX_HELD)
			goto add_now;
		grown = realloc(dc->held, cap * sizeof(*grown));
		if (!grown)
			goto add_now;
		dc->held = grown;
		dc->cap_held = cap;
	}
	copy = malloc(size);
	if (!copy)
		goto add_now;
	memcpy(copy, sample, size);
	dc->held[dc->n_held++] = copy;
	return true;
add_now:
	dc->opts.add(sample, 1.0 / dc->fraction, dc->opts.add_ctx);
	return true;
}

void duty_cycle__stats(const struct duty_cycle *dc, struct duty_cycle_stats *out)
{
	*out = dc->stats;
	out->fraction = dc->fraction;
	out->mean_fraction = dc->time_ms > 0 ? dc->fraction_ms / dc->time_ms : 1.0;
	out->probe_share = dc->own_ns > 0 ? dc->probe_ns / dc->own_ns : 0;
	out->probe_share_full = dc->own_ns > 0 ? dc->probe_full_ns / dc->own_ns : 0;
	out->ns_per_hit = dc->ns_per_hit;
	out->cost_measured = dc->ns_per_hit > dc->opts.ns_per_hit;
}
