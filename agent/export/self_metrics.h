/* The agent's self-metrics as Prometheus text: the agent gathers a snapshot of plain numbers
 * from its stages (the BPF program's counters, the tracked processes, the services, the pod
 * cache) and this module writes every family with its help text, the per-sink families
 * (sinks of one type and name summed, reloads included) and the agent process's own CPU,
 * memory and descriptors. Rendering reads nothing but the snapshot, the sinks and
 * /proc/self, so it calls no earlier stage. */
#ifndef ALLOCSCOPE_SELF_METRICS_H
#define ALLOCSCOPE_SELF_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "export/metrics_server.h"

struct sink;

/* A counter by reason: one sample labelled reason="name" each. */
struct self_metrics_reason {
	const char *name;
	uint64_t value;
};

#define SELF_METRICS_MAX_REASONS 8

struct self_metrics_reasons {
	struct self_metrics_reason reason[SELF_METRICS_MAX_REASONS];
	size_t n;
};

struct self_metrics_service_bytes {
	const char *service;
	double bytes;
};

/* Everything is a value at the time of the snapshot; counters are totals since start. */
struct self_metrics {
	uint64_t samples;
	uint64_t dropped_ringbuf_full, dropped_out_of_memory, dropped_malformed,
		dropped_unattributed;
	uint64_t dropped_weight_kept; /* drop notices: ringbuf_full drops whose weight is kept */
	uint64_t degraded_frame_pointer_walk, degraded_caller_unreadable, degraded_no_stack_copy,
		degraded_truncated;
	uint64_t degraded_depth_limit; /* cut at the walk's depth limit, under [truncated] */
	uint64_t allocations_uncounted;
	uint64_t probe_hits;  /* the start-up calibration's already subtracted */
	double probe_cost_ns; /* one hit, measured at start; 0 when it could not be */
	size_t processes_attached, processes_waiting;
	size_t probes, probe_links, processes_detaching;
	size_t services;
	uint64_t attaches;
	struct self_metrics_reasons not_profiled;
	uint64_t process_events_lost;
	uint64_t services_overflowed, label_values_truncated;
	uint64_t profiles_built, encode_errors, stacks_trimmed, intervals;
	/* The running sinks (borrowed); their totals include the sinks reloads replaced. */
	struct sink *const *sinks;
	size_t n_sinks;
	uint64_t reloads_ok, reloads_failed;
	/* Kubernetes: all zero when it is off (the families are there all the same). */
	uint64_t kube_refreshes, kube_refresh_errors;
	size_t kube_pods, kube_processes_waiting;
	struct self_metrics_reasons pod_unknown;
	uint64_t pods_found_late;
	/* The metrics endpoint's own counters; NULL leaves its family out. */
	const struct metrics_server_stats *server;
	size_t symbolizer_processes, symbolizer_files;
	uint64_t sample_rate;
	/* Overhead budget: processes with a duty cycle, those probed part of the time now, and
	 * the lowest fraction of the time any is probed (1 when none is throttled). */
	size_t processes_budgeted, processes_throttled;
	double duty_fraction_min;
	double interval_seconds;
	/* Per-sample labels through their limits (profile/label_limits.h). */
	uint64_t sample_labels_kept, sample_labels_dropped, sample_label_values_other,
		sample_label_values_truncated;
	/* In-use (a rule with inuse: true): bytes live per service at the last interval's
	 * snapshot (borrowed names), and the sampled allocations the live map had no room for.
	 * The families are left out when inuse_enabled is false. */
	bool inuse_enabled;
	const struct self_metrics_service_bytes *inuse;
	size_t n_inuse;
	uint64_t inuse_untracked;
	/* Request context (issue 15): samples whose thread's record was skipped. */
	uint64_t context_torn, context_unreadable;
	/* Request-context label sets past the series a Parca push splits a service into. */
	uint64_t label_series_folded;
};

/* Appends every family to t (an allocation failure shows in metrics_text__error). */
void self_metrics__render(const struct self_metrics *m, struct metrics_text *t);

#endif
