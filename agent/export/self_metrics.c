/* The agent's self-metrics as Prometheus text, from a snapshot (self_metrics.h). The families,
 * their order and their help texts are what dashboards and the e2e tests read: add, do not
 * rename. */
#include <dirent.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>

#include "build_info.h"
#include "export/self_metrics.h"
#include "export/sink.h"

/* The counters of the sinks of sink i's type and name (unnamed sinks of one type share
 * theirs), those of the sinks they replaced at reloads included; their gauges. False when an
 * earlier sink has the same type and name: its sample already holds sink i's. */
static bool sink_totals(const struct self_metrics *m, size_t i, struct sink_stats *out)
{
	const char *type = sink__type(m->sinks[i]), *name = sink__name(m->sinks[i]);

	for (size_t j = 0; j < i; j++) {
		if (strcmp(sink__type(m->sinks[j]), type) == 0 &&
		    strcmp(sink__name(m->sinks[j]), name) == 0)
			return false;
	}
	sink__totals(m->sinks[i], out);
	for (size_t j = i + 1; j < m->n_sinks; j++) {
		struct sink_stats more;

		if (strcmp(sink__type(m->sinks[j]), type) != 0 ||
		    strcmp(sink__name(m->sinks[j]), name) != 0)
			continue;
		sink__stats(m->sinks[j], &more);
		sink_stats__add_counters(out, &more);
		out->queue_length += more.queue_length;
		out->spool_profiles += more.spool_profiles;
		out->spool_bytes += more.spool_bytes;
	}
	return true;
}

static size_t count_open_fds(void)
{
	DIR *dir = opendir("/proc/self/fd");
	size_t n = 0;

	if (!dir)
		return 0;
	while (readdir(dir))
		n++;
	closedir(dir);
	return n > 3 ? n - 3 : 0; /* ".", ".." and the directory's own descriptor */
}

static double resident_bytes(void)
{
	unsigned long size, resident;
	FILE *f = fopen("/proc/self/statm", "re");
	int n;

	if (!f)
		return 0;
	n = fscanf(f, "%lu %lu", &size, &resident);
	fclose(f);
	return n == 2 ? (double)resident * (double)sysconf(_SC_PAGESIZE) : 0;
}

static void reasons(struct metrics_text *t, const char *name,
		    const struct self_metrics_reasons *r)
{
	for (size_t i = 0; i < r->n && i < SELF_METRICS_MAX_REASONS; i++)
		metrics_text__sample(t, name,
				     (const char *const[]){ "reason", r->reason[i].name, NULL },
				     (double)r->reason[i].value);
}

static void counter(struct metrics_text *t, const char *name, const char *help, double value)
{
	metrics_text__family(t, name, "counter", help);
	metrics_text__sample(t, name, NULL, value);
}

static void gauge(struct metrics_text *t, const char *name, const char *help, double value)
{
	metrics_text__family(t, name, "gauge", help);
	metrics_text__sample(t, name, NULL, value);
}

/* Present with Kubernetes off too (all zero), so dashboards need no special case. */
static void render_kubernetes_metrics(const struct self_metrics *m, struct metrics_text *t)
{
	counter(t, "allocscope_kubernetes_refreshes_total",
		"Successful pod list refreshes from the Kubernetes API.",
		(double)m->kube_refreshes);
	counter(t, "allocscope_kubernetes_refresh_errors_total",
		"Failed pod list refreshes (the previous list is kept; the log says why).",
		(double)m->kube_refresh_errors);
	gauge(t, "allocscope_kubernetes_pods", "Pods on this node in the last pod list.",
	      (double)m->kube_pods);
	gauge(t, "allocscope_kubernetes_processes_waiting",
	      "Processes in containers whose decision waits for their pod to be listed.",
	      (double)m->kube_processes_waiting);
	metrics_text__family(t, "allocscope_kubernetes_pod_unknown_total", "counter",
			     "Processes in containers decided without pod metadata, by reason: "
			     "not_listed (no pod on this node has the container: a sandbox, a "
			     "container started outside Kubernetes), timeout (the API did not "
			     "answer in time), too_many_waiting.");
	reasons(t, "allocscope_kubernetes_pod_unknown_total", &m->pod_unknown);
	counter(t, "allocscope_kubernetes_pods_found_late_total",
		"Processes decided again because a later refresh listed their pod.",
		(double)m->pods_found_late);
}

void self_metrics__render(const struct self_metrics *m, struct metrics_text *t)
{
	struct rusage usage;
	double cpu = 0;

	if (getrusage(RUSAGE_SELF, &usage) == 0)
		cpu = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
		      (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;

	metrics_text__family(t, "allocscope_build_info", "gauge",
			     "The agent's version and source revision.");
	metrics_text__sample(t, "allocscope_build_info",
			     (const char *const[]){ "version", ALLOCSCOPE_VERSION, "revision",
						    ALLOCSCOPE_GIT_REV, NULL },
			     1);
	counter(t, "allocscope_samples_total", "Sampled allocations received from the kernel.",
		(double)m->samples);
	metrics_text__family(t, "allocscope_samples_dropped_total", "counter",
			     "Sampled allocations lost, by reason.");
	const struct {
		const char *reason;
		uint64_t value;
	} drops[] = {
		{ "ringbuf_full", m->dropped_ringbuf_full },
		{ "out_of_memory", m->dropped_out_of_memory },
		{ "malformed", m->dropped_malformed },
		{ "unattributed", m->dropped_unattributed },
	};
	for (size_t i = 0; i < sizeof(drops) / sizeof(drops[0]); i++)
		metrics_text__sample(t, "allocscope_samples_dropped_total",
				     (const char *const[]){ "reason", drops[i].reason, NULL },
				     (double)drops[i].value);
	counter(t, "allocscope_samples_dropped_weight_kept_total",
		"Of the samples dropped for a full ring buffer, those whose weight the profiles "
		"keep under [dropped samples]; the rest were lost with their weight.",
		(double)m->dropped_weight_kept);
	metrics_text__family(t, "allocscope_stacks_degraded_total", "counter",
			     "Samples whose stack is incomplete, by reason.");
	const struct {
		const char *reason;
		uint64_t value;
	} degraded[] = {
		{ "frame_pointer_walk_failed", m->degraded_frame_pointer_walk },
		{ "caller_unreadable", m->degraded_caller_unreadable },
		{ "no_stack_copy", m->degraded_no_stack_copy },
		{ "truncated", m->degraded_truncated },
		{ "depth_limit", m->degraded_depth_limit },
	};
	for (size_t i = 0; i < sizeof(degraded) / sizeof(degraded[0]); i++)
		metrics_text__sample(t, "allocscope_stacks_degraded_total",
				     (const char *const[]){ "reason", degraded[i].reason, NULL },
				     (double)degraded[i].value);
	metrics_text__family(t, "allocscope_context_records_skipped_total", "counter",
			     "Samples taken without their thread's request context, by reason: "
			     "torn (the record was mid-update, valid != 1), unreadable.");
	metrics_text__sample(t, "allocscope_context_records_skipped_total",
			     (const char *const[]){ "reason", "torn", NULL },
			     (double)m->context_torn);
	metrics_text__sample(t, "allocscope_context_records_skipped_total",
			     (const char *const[]){ "reason", "unreadable", NULL },
			     (double)m->context_unreadable);
	counter(t, "allocscope_allocations_uncounted_total",
		"Allocations not counted: no per-thread countdown could be created.",
		(double)m->allocations_uncounted);
	counter(t, "allocscope_probe_hits_total", "Allocator calls that hit a probe.",
		(double)m->probe_hits);
	gauge(t, "allocscope_probe_hit_cost_seconds",
	      "Measured cost of one probe hit on this machine (calibrated at start).",
	      m->probe_cost_ns / 1e9);
	counter(t, "allocscope_estimated_overhead_seconds_total",
		"CPU time the probes cost the profiled processes: hits times the measured cost.",
		(double)m->probe_hits * m->probe_cost_ns / 1e9);
	metrics_text__family(t, "allocscope_processes", "gauge",
			     "Processes tracked: attached, or waiting for their allocator.");
	metrics_text__sample(t, "allocscope_processes",
			     (const char *const[]){ "state", "attached", NULL },
			     (double)m->processes_attached);
	metrics_text__sample(t, "allocscope_processes",
			     (const char *const[]){ "state", "waiting", NULL },
			     (double)m->processes_waiting);
	gauge(t, "allocscope_probes", "Uprobes attached (one per entry point per process).",
	      (double)m->probes);
	gauge(t, "allocscope_probe_links",
	      "Kernel links holding those uprobes: one uprobe_multi link per process, or one "
	      "perf-event link per uprobe on kernels without uprobe_multi.",
	      (double)m->probe_links);
	gauge(t, "allocscope_processes_detaching",
	      "Released processes whose probes are still being removed (the kernel waits for "
	      "a grace period per removal).",
	      (double)m->processes_detaching);
	gauge(t, "allocscope_services", "Services with tracked processes.",
	      (double)m->services);
	if (m->inuse_enabled) {
		metrics_text__family(t, "allocscope_inuse_bytes", "gauge",
				     "Estimated heap bytes live in a service at the last interval's "
				     "in-use snapshot (rules with inuse: true).");
		for (size_t i = 0; i < m->n_inuse; i++)
			metrics_text__sample(t, "allocscope_inuse_bytes",
					     (const char *const[]){ "service", m->inuse[i].service,
								    NULL },
					     m->inuse[i].bytes);
		counter(t, "allocscope_inuse_untracked_total",
			"Sampled allocations not tracked as live because the live map was full: "
			"in-use estimates are low while it grows.",
			(double)m->inuse_untracked);
	}
	counter(t, "allocscope_process_attaches_total", "Processes attached since start.",
		(double)m->attaches);
	gauge(t, "allocscope_overhead_budgeted_processes",
	      "Processes under an overhead budget (overhead.max_cpu_percent) without an "
	      "in-process sampler.",
	      (double)m->processes_budgeted);
	gauge(t, "allocscope_overhead_throttled_processes",
	      "Processes over their overhead budget, probed part of the time (their estimates "
	      "scaled by the inverse of the fraction).",
	      (double)m->processes_throttled);
	gauge(t, "allocscope_overhead_duty_fraction_min",
	      "The lowest fraction of the time any process is probed now (1: none throttled).",
	      m->duty_fraction_min);
	metrics_text__family(t, "allocscope_processes_not_profiled_total", "counter",
			     "Target processes that were not profiled, by reason.");
	reasons(t, "allocscope_processes_not_profiled_total", &m->not_profiled);
	counter(t, "allocscope_process_events_lost_total",
		"Exec and fork notices lost (a process may have been missed).",
		(double)m->process_events_lost);
	counter(t, "allocscope_services_overflowed_total",
		"Processes profiled as service \"other\" because of limits.max_services.",
		(double)m->services_overflowed);
	counter(t, "allocscope_label_values_truncated_total",
		"Label values cut to limits.max_label_value_bytes, or with bytes that were not UTF-8 "
		"replaced.",
		(double)m->label_values_truncated);
	counter(t, "allocscope_profiles_built_total", "Interval profiles encoded.",
		(double)m->profiles_built);
	counter(t, "allocscope_profile_encode_errors_total", "Interval profiles that failed to encode.",
		(double)m->encode_errors);
	counter(t, "allocscope_profile_stacks_trimmed_total",
		"Distinct stacks folded into a \"(trimmed)\" frame to keep pushed profiles within "
		"their sink's max_samples and max_profile_size.",
		(double)m->stacks_trimmed);
	counter(t, "allocscope_intervals_total", "Profiling intervals completed.",
		(double)m->intervals);
	counter(t, "allocscope_sample_labels_kept_total",
		"Per-sample labels put on samples (values counted as \"other\" included).",
		(double)m->sample_labels_kept);
	counter(t, "allocscope_sample_labels_dropped_total",
		"Per-sample labels left out: a key not in sample_labels.keys, or past "
		"sample_labels.max_keys keys in a service's interval.",
		(double)m->sample_labels_dropped);
	counter(t, "allocscope_sample_label_values_other_total",
		"Per-sample label values counted as \"other\": past sample_labels.max_values "
		"distinct values of their key in a service's interval.",
		(double)m->sample_label_values_other);
	counter(t, "allocscope_sample_label_values_truncated_total",
		"Per-sample label values cut to sample_labels.max_value_bytes, or with bytes that "
		"were not UTF-8 replaced.",
		(double)m->sample_label_values_truncated);
	counter(t, "allocscope_label_series_folded_total",
		"Request-context label sets past the 64 series a service's interval profile is "
		"split into for Parca, sent in its series without those labels.",
		(double)m->label_series_folded);

	/* One sample per sink, labelled sink="TYPE", plus name="NAME" when the sink was given
	 * a name other than its type. */
	const struct {
		const char *name, *type, *help;
		size_t offset;
	} sink_metrics[] = {
		{ "allocscope_sink_profiles_written_total", "counter",
		  "Profiles delivered by sinks.", offsetof(struct sink_stats, profiles_written) },
		{ "allocscope_sink_bytes_written_total", "counter",
		  "Profile bytes delivered by sinks.", offsetof(struct sink_stats, bytes_written) },
		{ "allocscope_sink_errors_total", "counter",
		  "Sink writes or delivery attempts that failed.",
		  offsetof(struct sink_stats, errors) },
		{ "allocscope_sink_profiles_dropped_total", "counter",
		  "Profiles sinks gave up on (queue or spool full, undeliverable at exit, damaged "
		  "in the spool).", offsetof(struct sink_stats, profiles_dropped) },
		{ "allocscope_sink_profiles_expired_total", "counter",
		  "Profiles dropped unsent because they were older than the sink's max_profile_age "
		  "(counted as dropped too).", offsetof(struct sink_stats, profiles_expired) },
		{ "allocscope_sink_profiles_given_up_total", "counter",
		  "Profiles dropped after the server refused them max_attempts times (HTTP 429 "
		  "or 500, gRPC RESOURCE_EXHAUSTED; counted as dropped too).",
		  offsetof(struct sink_stats, profiles_given_up) },
		{ "allocscope_sink_files_removed_total", "counter",
		  "Files removed by a retention limit.", offsetof(struct sink_stats, files_removed) },
		{ "allocscope_sink_retries_total", "counter",
		  "Failed push attempts that are tried again later.",
		  offsetof(struct sink_stats, retries) },
		{ "allocscope_sink_profiles_rejected_total", "counter",
		  "Profiles the server refused, or over max_profile_size: not retried.",
		  offsetof(struct sink_stats, profiles_rejected) },
		{ "allocscope_sink_profiles_spooled_total", "counter",
		  "Profiles written to the on-disk spool to be delivered later.",
		  offsetof(struct sink_stats, profiles_spooled) },
		{ "allocscope_sink_spool_corrupt_total", "counter",
		  "Spool files that could not be read back (removed; counted as dropped too).",
		  offsetof(struct sink_stats, spool_corrupt) },
		{ "allocscope_sink_spool_recovered_total", "counter",
		  "Whole profiles found under a temporary name in the spool after a crash and put "
		  "back for delivery.",
		  offsetof(struct sink_stats, spool_recovered) },
		{ "allocscope_sink_queue_length", "gauge",
		  "Profiles waiting in memory to be pushed, the one in flight included.",
		  offsetof(struct sink_stats, queue_length) },
		{ "allocscope_sink_spool_profiles", "gauge", "Profiles waiting in the spool.",
		  offsetof(struct sink_stats, spool_profiles) },
		{ "allocscope_sink_spool_bytes", "gauge", "Bytes of the spool's files.",
		  offsetof(struct sink_stats, spool_bytes) },
	};
	for (size_t f = 0; f < sizeof(sink_metrics) / sizeof(sink_metrics[0]); f++) {
		metrics_text__family(t, sink_metrics[f].name, sink_metrics[f].type,
				     sink_metrics[f].help);
		for (size_t i = 0; i < m->n_sinks; i++) {
			const char *type = sink__type(m->sinks[i]), *name = sink__name(m->sinks[i]);
			const char *const labels[] = { "sink", type,
						       strcmp(name, type) ? "name" : NULL, name,
						       NULL };
			struct sink_stats stats;
			uint64_t value;

			if (!sink_totals(m, i, &stats))
				continue;
			memcpy(&value, (const char *)&stats + sink_metrics[f].offset, sizeof(value));
			metrics_text__sample(t, sink_metrics[f].name, labels, (double)value);
		}
	}
	metrics_text__family(t, "allocscope_sink_push_duration_seconds_total", "counter",
			     "Time spent in successful pushes; divided by the profiles written, the "
			     "mean push latency.");
	for (size_t i = 0; i < m->n_sinks; i++) {
		const char *type = sink__type(m->sinks[i]), *name = sink__name(m->sinks[i]);
		const char *const labels[] = { "sink", type, strcmp(name, type) ? "name" : NULL,
					       name, NULL };
		struct sink_stats stats;

		if (!sink_totals(m, i, &stats))
			continue;
		metrics_text__sample(t, "allocscope_sink_push_duration_seconds_total", labels,
				     (double)stats.push_ns / 1e9);
	}
	metrics_text__family(t, "allocscope_config_reloads_total", "counter",
			     "Configuration reloads (SIGHUP), by result.");
	metrics_text__sample(t, "allocscope_config_reloads_total",
			     (const char *const[]){ "result", "success", NULL },
			     (double)m->reloads_ok);
	metrics_text__sample(t, "allocscope_config_reloads_total",
			     (const char *const[]){ "result", "failure", NULL },
			     (double)m->reloads_failed);
	render_kubernetes_metrics(m, t);
	if (m->server) {
		const struct metrics_server_stats *server = m->server;

		metrics_text__family(t, "allocscope_metrics_connections_dropped_total", "counter",
				     "Connections to this endpoint closed before their answer, "
				     "by reason.");
		metrics_text__sample(t, "allocscope_metrics_connections_dropped_total",
				     (const char *const[]){ "reason", "limit", NULL },
				     (double)server->closed_over_limit);
		metrics_text__sample(t, "allocscope_metrics_connections_dropped_total",
				     (const char *const[]){ "reason", "deadline", NULL },
				     (double)server->closed_at_deadline);
	}
	gauge(t, "allocscope_symbolizer_processes", "Processes the symbolizer holds maps of.",
	      (double)m->symbolizer_processes);
	gauge(t, "allocscope_symbolizer_files", "ELF files the symbolizer holds parsed.",
	      (double)m->symbolizer_files);
	gauge(t, "allocscope_sample_rate_bytes", "Mean bytes between samples.",
	      (double)m->sample_rate);
	gauge(t, "allocscope_interval_seconds", "Profile interval.",
	      m->interval_seconds);
	counter(t, "process_cpu_seconds_total", "User and system CPU time of the agent.", cpu);
	gauge(t, "process_resident_memory_bytes", "Resident memory of the agent.",
	      resident_bytes());
	gauge(t, "process_open_fds", "Open file descriptors of the agent.",
	      (double)count_open_fds());
}

