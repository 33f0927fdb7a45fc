/* Unit tests for export/self_metrics.c: a snapshot of numbers becomes the families a scraper
 * reads, with reasons as labels, per-sink samples (sinks of one type and name summed, a name
 * label only when it differs from the type) and gauges derived from the snapshot. */
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "export/self_metrics.h"
#include "export/sink.h"

struct fake_sink {
	struct sink base;
	struct sink_stats stats;
};

static int fake_submit(struct sink *sink, const struct profile_record *record)
{
	return 0;
}

static void fake_stats(const struct sink *sink, struct sink_stats *out)
{
	*out = ((const struct fake_sink *)sink)->stats;
}

static void fake_free(struct sink *sink)
{
}

static const struct sink_ops fake_ops = {
	.type = "pyroscope",
	.submit = fake_submit,
	.stats = fake_stats,
	.free = fake_free,
};

/* The value of the sample line that starts with series ("name{labels}" or "name"), or -1. */
static double sample(const struct metrics_text *t, const char *series)
{
	size_t n = strlen(series);

	for (const char *line = t->data; line && *line;) {
		const char *end = strchr(line, '\n');

		if (strncmp(line, series, n) == 0 && line[n] == ' ')
			return strtod(line + n + 1, NULL);
		line = end ? end + 1 : NULL;
	}
	return -1;
}

static void test_snapshot_becomes_families(void)
{
	struct metrics_server_stats server = { .closed_over_limit = 3, .closed_at_deadline = 4 };
	struct self_metrics m = {
		.samples = 1000,
		.dropped_ringbuf_full = 7,
		.dropped_weight_kept = 5,
		.dropped_unattributed = 2,
		.degraded_truncated = 5,
		.degraded_depth_limit = 15,
		.probe_hits = 200,
		.probe_cost_ns = 500,
		.processes_attached = 9,
		.processes_waiting = 1,
		.services = 4,
		.not_profiled = { .reason = { { "no_allocator", 6 }, { "over_limit", 0 } }, .n = 2 },
		.pod_unknown = { .reason = { { "timeout", 8 } }, .n = 1 },
		.kube_processes_waiting = 2,
		.server = &server,
		.sample_rate = 524288,
		.interval_seconds = 60,
		.sample_labels_kept = 11,
		.sample_labels_dropped = 12,
		.sample_label_values_other = 13,
		.sample_label_values_truncated = 14,
	};
	struct metrics_text t = { 0 };

	self_metrics__render(&m, &t);
	CHECK(metrics_text__error(&t) == 0);
	CHECK(sample(&t, "allocscope_samples_total") == 1000);
	CHECK(sample(&t, "allocscope_sample_labels_kept_total") == 11);
	CHECK(sample(&t, "allocscope_sample_labels_dropped_total") == 12);
	CHECK(sample(&t, "allocscope_sample_label_values_other_total") == 13);
	CHECK(sample(&t, "allocscope_sample_label_values_truncated_total") == 14);
	CHECK(sample(&t, "allocscope_samples_dropped_total{reason=\"ringbuf_full\"}") == 7);
	CHECK(sample(&t, "allocscope_samples_dropped_weight_kept_total") == 5);
	CHECK(sample(&t, "allocscope_samples_dropped_total{reason=\"unattributed\"}") == 2);
	CHECK(sample(&t, "allocscope_stacks_degraded_total{reason=\"truncated\"}") == 5);
	CHECK(sample(&t, "allocscope_stacks_degraded_total{reason=\"depth_limit\"}") == 15);
	CHECK(sample(&t, "allocscope_probe_hits_total") == 200);
	/* hits times the cost: 200 * 500 ns */
	CHECK(sample(&t, "allocscope_estimated_overhead_seconds_total") > 0.9999e-4);
	CHECK(sample(&t, "allocscope_estimated_overhead_seconds_total") < 1.0001e-4);
	CHECK(sample(&t, "allocscope_processes{state=\"attached\"}") == 9);
	CHECK(sample(&t, "allocscope_processes{state=\"waiting\"}") == 1);
	CHECK(sample(&t, "allocscope_services") == 4);
	CHECK(sample(&t, "allocscope_processes_not_profiled_total{reason=\"no_allocator\"}") == 6);
	CHECK(sample(&t, "allocscope_processes_not_profiled_total{reason=\"over_limit\"}") == 0);
	CHECK(sample(&t, "allocscope_kubernetes_pod_unknown_total{reason=\"timeout\"}") == 8);
	CHECK(sample(&t, "allocscope_kubernetes_processes_waiting") == 2);
	CHECK(sample(&t, "allocscope_metrics_connections_dropped_total{reason=\"limit\"}") == 3);
	CHECK(sample(&t, "allocscope_sample_rate_bytes") == 524288);
	CHECK(sample(&t, "allocscope_interval_seconds") == 60);
	CHECK(sample(&t, "process_open_fds") > 0);
	CHECK(strstr(t.data, "# TYPE allocscope_samples_total counter\n") != NULL);
	metrics_text__free(&t);

	/* Without a metrics server its family is left out; the others stay. */
	m.server = NULL;
	t = (struct metrics_text){ 0 };
	self_metrics__render(&m, &t);
	CHECK(strstr(t.data, "allocscope_metrics_connections_dropped_total") == NULL);
	CHECK(sample(&t, "allocscope_samples_total") == 1000);
	metrics_text__free(&t);
}

static void test_sinks_of_one_name_are_one_series(void)
{
	struct fake_sink a = { .base.ops = &fake_ops, .stats = { .profiles_written = 3,
								   .queue_length = 1 } };
	struct fake_sink b = { .base.ops = &fake_ops, .stats = { .profiles_written = 4,
								   .queue_length = 2 } };
	struct fake_sink named = { .base.ops = &fake_ops, .stats = { .profiles_written = 10 } };
	struct sink *sinks[] = { &a.base, &b.base, &named.base };
	struct self_metrics m = { .sinks = sinks, .n_sinks = 3 };
	struct metrics_text t = { 0 };

	sink__set_name(&named.base, "eu");
	self_metrics__render(&m, &t);
	CHECK(sample(&t, "allocscope_sink_profiles_written_total{sink=\"pyroscope\"}") == 7);
	CHECK(sample(&t, "allocscope_sink_queue_length{sink=\"pyroscope\"}") == 3);
	CHECK(sample(&t, "allocscope_sink_profiles_written_total{sink=\"pyroscope\",name=\"eu\"}") ==
	      10);
	/* One sample per series, not one per sink. */
	{
		const char *series = "allocscope_sink_profiles_written_total{sink=\"pyroscope\"}";
		const char *first = strstr(t.data, series);

		CHECK(first && !strstr(first + 1, series));
	}
	metrics_text__free(&t);
}

int main(void)
{
	RUN(test_snapshot_becomes_families);
	RUN(test_sinks_of_one_name_are_one_series);
	return unit_summary("self_metrics");
}
