/* The continuous agent's life: configuration, sinks and the metrics endpoint first (so a bad
 * file or a busy port stops it before it touches any process), then the BPF program, the
 * probe-cost calibration, the exec/fork tracepoints, a scan of the processes already running,
 * and one epoll loop until SIGTERM.
 *
 * The loop owns the descriptors and the clock; the parts of the agent's work live in modules
 * of their own: process_tracker.c decides which processes are targets (rules, pods, the pod
 * wait table) and attaches to them, services.c groups them into services and writes each
 * service's profile per interval, export/self_metrics.c renders the self-metrics this file
 * gathers. Here remain start-up and shutdown, the sample ring and each sample's way into its
 * service's profile, the interval clock, reload (on a thread of its own) and the sinks, the
 * metrics server and the pod cache that the configuration makes. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>

#include "build_info.h"
#include "daemon.h"
#include "util/clock.h"
#include "util/grow.h"
#include "util/log.h"
#include "pipeline.h"
#include "attach/alloc_program.h"
#include "attach/detach_queue.h"
#include "attach/probe_cost.h"
#include "collect/kube_pods.h"
#include "collect/process_events.h"
#include "config/config.h"
#include "config/units.h"
#include "export/directory_sink.h"
#include "export/metrics_server.h"
#include "export/push_sink.h"
#include "export/self_metrics.h"
#include "export/sink.h"
#include "profile/alloc_profile.h"
#include "symbolize/symbolizer.h"
#include "privileges.h"
#include "process_tracker.h"
#include "services.h"

#define DRAIN_INTERVAL_MS 100
#define PUBLISH_INTERVAL_MS 1000
/* Threads detaching probes of released processes (see attach/detach_queue.h). */
#define DETACH_WORKERS 8
/* Descriptors one profiled process holds: a pidfd, and a perf event plus a BPF link per probe
 * (7 probes on glibc). */
#define FDS_PER_PROCESS 16

/* epoll tags of the fixed descriptors; the process tracker's are above 2^32. */
enum { TAG_SAMPLES = 1, TAG_EVENTS, TAG_SIGNALS, TAG_RELOAD };

struct agent_stats {
	uint64_t samples;
	uint64_t samples_unattributed; /* from a process no longer tracked */
	uint64_t drop_notices;         /* samples the ring had no room for, weight kept */
	uint64_t samples_out_of_memory;
	uint64_t intervals;
	uint64_t reloads_ok, reloads_failed;
	uint64_t retired_kube_refreshes, retired_kube_refresh_errors; /* pod caches replaced */
};

/* A reload reads and parses the file on a thread of its own, so the loop keeps draining
 * samples however long that takes (a slow or hung filesystem; the parse itself is bounded,
 * config.h): the thread fills next/ret/err and signals done_fd; the loop joins it and swaps
 * the configuration in. A SIGHUP during a load asks for one more load after it. */
struct config_loader {
	pthread_t thread;
	bool running; /* started and not yet joined */
	bool again;
	int done_fd;  /* an eventfd, watched as TAG_RELOAD */
	const char *path;
	/* Written by the thread, read by the loop after the join. */
	struct agent_config *next;
	int ret;
	char err[1024];
};

struct daemon {
	const char *config_path;
	struct agent_config *config;
	struct pipeline *pipeline; /* program, sample ring, unwinder, symbolizer */
	struct process_events *events;
	struct detach_queue *detacher;
	struct sink **sinks;
	size_t n_sinks;
	struct metrics_server *metrics;
	struct kube_pods *kube;    /* NULL unless kubernetes.enabled */
	int epoll_fd, signal_fd;

	struct services *services;
	struct process_tracker *tracker;

	pid_t self;
	double probe_cost_ns;
	uint64_t calibration_hits;
	int64_t interval_start_ms, interval_start_wall_ns;
	int64_t next_drain_ms, next_publish_ms;
	int64_t next_budget_ms;   /* when the overhead budget's duty cycles next need a tick */
	bool last_flush_failed;
	struct agent_stats stats;
	struct label_limits_stats label_stats; /* every service profile's label limiter's */
	int log_level_override;    /* --log-level, which wins over log.level; or -1 */
	struct config_loader loader;
	bool stop;
};

static size_t service_count(const struct daemon *d)
{
	struct services_stats stats;

	services__stats(d->services, &stats);
	return stats.services;
}

static void drain_samples(struct daemon *d)
{
	pipeline__drain(d->pipeline);
}

static void drain_samples_cb(void *ctx)
{
	drain_samples(ctx);
}

static void tracker_settings(const struct daemon *d, struct process_tracker_settings *out)
{
	*out = (struct process_tracker_settings){
		.targets = &d->config->targets,
		.max_processes = d->config->max_processes,
		.services = {
			.max_services = d->config->max_services,
			.max_label_value_bytes = d->config->max_label_value_bytes,
		},
		.kube = d->kube,
		.max_cpu_percent = d->config->overhead_max_cpu_percent,
	};
}

static int add_sample(struct daemon *d, const struct alloc_sample *sample, double scale);

/* A held sample of a duty-cycled process (overhead budget), weighted for its period. */
static int add_scaled(const struct alloc_sample *sample, double scale, void *ctx)
{
	return add_sample(ctx, sample, scale);
}

static int make_tracker(struct daemon *d)
{
	struct process_tracker_deps deps = {
		.pipeline = d->pipeline,
		.detacher = d->detacher,
		.services = d->services,
		.epoll_fd = d->epoll_fd,
		.self = d->self,
		.drain = drain_samples_cb,
		.drain_ctx = d,
		.add_scaled = add_scaled,
		.add_ctx = d,
		.ns_per_hit = d->probe_cost_ns,
	};
	struct process_tracker_settings settings;

	tracker_settings(d, &settings);
	return process_tracker__new(&deps, &settings, &d->tracker);
}

static size_t process_count(const struct daemon *d)
{
	struct process_tracker_stats stats;

	process_tracker__stats(d->tracker, &stats);
	return stats.processes;
}

static void handle_process_events(struct daemon *d)
{
	const struct process_event *batch;
	size_t n;
	int ret = process_events__drain(d->events, &batch, &n);

	if (ret < 0 && ret != -EINTR)
		log_warn("reading process notices failed: %s", strerror(-ret));
	process_tracker__on_events(d->tracker, batch, n);
}

/* ---- samples ----------------------------------------------------------------------- */

/* A service's profile for this interval; with in-use profiles on for it, in-use enabled. */
static int new_service_profile(struct daemon *d, struct service *s)
{
	int ret = pipeline__new_profile(d->pipeline, &s->profile);

	if (!ret && s->inuse && alloc_program__tracks_live(pipeline__program(d->pipeline)))
		ret = alloc_profile__enable_inuse(s->profile);
	if (ret) {
		alloc_profile__free(s->profile);
		s->profile = NULL;
	}
	return ret;
}

static int on_sample(const struct alloc_sample *sample, void *ctx)
{
	struct daemon *d = ctx;

	if ((pid_t)sample->pid == d->self)
		return 0; /* the start-up calibration's rare sample */
	if (sample->flags & ALLOC_SAMPLE_DROPPED)
		d->stats.drop_notices++;
	else
		d->stats.samples++;
	if (process_tracker__hold_sample(d->tracker, sample))
		return 0; /* added when its duty-cycle period ends (add_scaled) */
	add_sample(d, sample, 1.0);
	return 0;
}

/* Into its service's profile, weighted scale times (1 but for a duty-cycled process). */
static int add_sample(struct daemon *d, const struct alloc_sample *sample, double scale)
{
	struct service *s = process_tracker__service_of(d->tracker, (pid_t)sample->pid);
	int ret;

	if (!s) {
		d->stats.samples_unattributed++;
		return 0;
	}
	if (!s->profile && new_service_profile(d, s) != 0) {
		d->stats.samples_out_of_memory++;
		return 0;
	}
	alloc_profile__set_scale(s->profile, scale);
	ret = pipeline__add_sample(d->pipeline, s->profile, sample);
	alloc_profile__set_scale(s->profile, 1.0);
	if (ret != 0)
		d->stats.samples_out_of_memory++;
	return 0;
}

/* ---- intervals --------------------------------------------------------------------- */

struct inuse_pass {
	struct daemon *d;
	uint64_t now_ns;
	/* Entries of processes no longer tracked: put there between a release's
	 * forget_live and its detach, or by a process released meanwhile. Deleted after the
	 * walk, so the map does not fill with what no snapshot will read. */
	struct alloc_live_key *orphans;
	size_t n_orphans, cap_orphans;
};

static int add_live(const struct alloc_live_key *key, const struct alloc_live *value, void *ctx)
{
	struct inuse_pass *pass = ctx;
	struct daemon *d = pass->d;
	struct service *s = process_tracker__service_of(d->tracker, (pid_t)key->pid);

	if (!s || !s->inuse) {
		if (array_grow((void **)&pass->orphans, &pass->cap_orphans, pass->n_orphans,
			       sizeof(*pass->orphans), 64) != 0)
			return 0; /* the next snapshot tries again */
		pass->orphans[pass->n_orphans++] = *key;
		return 0;
	}
	/* Its live set holds at most its current window: not its in-use. */
	if (process_tracker__throttled(d->tracker, (pid_t)key->pid))
		return 0;
	if (!s->profile) {
		/* Nothing allocated this interval and nothing carried: a profile of its own. */
		if (new_service_profile(d, s) != 0) {
			d->stats.samples_out_of_memory++;
			return 0;
		}
		alloc_profile__inuse_begin(s->profile, pass->now_ns);
	}
	if (alloc_profile__has_inuse(s->profile) &&
	    alloc_profile__inuse_add(s->profile, key->pid, value->time_ns, value->size,
				     value->weighted_bytes) != 0)
		d->stats.samples_out_of_memory++;
	return 0;
}

/* In-use is a snapshot at the interval's end, not a delta: every live entry into its
 * service's profile, whose samples (this interval's and the live ones carried from before)
 * it joins by (pid, time). */
static void inuse_snapshot(struct daemon *d)
{
	struct alloc_program *prog = pipeline__program(d->pipeline);
	struct inuse_pass pass = { .d = d, .now_ns = (uint64_t)monotonic_ms() * 1000000ull };
	struct alloc_counters counters;

	if (!alloc_program__tracks_live(prog))
		return;
	services__inuse_begin(d->services, pass.now_ns);
	if (alloc_program__for_each_live(prog, add_live, &pass) < 0)
		log_warn("cannot read the in-use map: %s", strerror(errno));
	alloc_program__read_counters(prog, &counters);
	services__inuse_end(d->services, counters.live_overflow);
	alloc_program__delete_live(prog, pass.orphans, pass.n_orphans);
	free(pass.orphans);
}

static void flush_interval(struct daemon *d, int64_t now)
{
	const struct agent_config *c = d->config;
	struct services_interval interval = {
		.sinks = d->sinks,
		.n_sinks = d->n_sinks,
		.hostname = c->hostname,
		.labels = c->labels,
		.n_labels = c->n_labels,
		.sample_rate = pipeline__opts(d->pipeline)->sample_rate,
		.pid_label = c->pid_label,
		.max_label_value_bytes = c->max_label_value_bytes,
		.start_wall_ns = d->interval_start_wall_ns,
		.duration_ns = (now - d->interval_start_ms) * 1000000,
		.version_label = c->version_label,
	};
	struct services_written result;
	struct services_stats stats;

	drain_samples(d);
	inuse_snapshot(d);
	services__write_interval(d->services, &interval, &result);
	d->last_flush_failed = result.failed && !result.written;
	/* The profiles are written: released processes' symbols can go. */
	process_tracker__forget_released(d->tracker);
	services__prune(d->services);
	services__stats(d->services, &stats);
	d->stats.intervals++;
	log_debug("interval: %zu profiles written, %zu failed; %zu processes in %zu services",
		  result.written, result.failed, process_count(d), stats.services);
	d->interval_start_ms = now;
	d->interval_start_wall_ns = (int64_t)wall_ns();
}

/* ---- self-metrics ------------------------------------------------------------------ */

_Static_assert(PROCESS_NOT_PROFILED__COUNT <= SELF_METRICS_MAX_REASONS, "reasons fit");
_Static_assert(POD_UNKNOWN__COUNT <= SELF_METRICS_MAX_REASONS, "reasons fit");

/* The numbers export/self_metrics.c renders, read from each stage now. */
static void gather_metrics(struct daemon *d, struct self_metrics *m,
			   struct metrics_server_stats *server)
{
	struct alloc_counters bpf;
	struct kube_pods_stats kube = { 0 };
	struct services_stats services;
	struct process_tracker_stats processes;
	struct process_tracker_budget budget;
	uint64_t hits = alloc_program__probe_hits(pipeline__program(d->pipeline));

	alloc_program__read_counters(pipeline__program(d->pipeline), &bpf);
	services__stats(d->services, &services);
	process_tracker__stats(d->tracker, &processes);
	process_tracker__budget(d->tracker, &budget);
	if (d->kube)
		kube_pods__stats(d->kube, &kube);
	if (d->metrics)
		metrics_server__stats(d->metrics, server);
	*m = (struct self_metrics){
		.samples = d->stats.samples,
		.dropped_ringbuf_full = bpf.ringbuf_full,
		.dropped_weight_kept = d->stats.drop_notices,
		.dropped_out_of_memory = d->stats.samples_out_of_memory,
		.dropped_malformed = pipeline__malformed(d->pipeline),
		.dropped_unattributed = d->stats.samples_unattributed,
		.degraded_frame_pointer_walk = bpf.stack_errors,
		.degraded_caller_unreadable = bpf.caller_errors,
		.degraded_no_stack_copy = bpf.stack_copy_errors,
		.degraded_truncated = pipeline__truncated_unwinds(d->pipeline),
		.degraded_depth_limit = pipeline__depth_cut_unwinds(d->pipeline),
		.allocations_uncounted = bpf.storage_errors,
		.probe_hits = hits > d->calibration_hits ? hits - d->calibration_hits : 0,
		.probe_cost_ns = d->probe_cost_ns,
		.processes_attached = processes.processes - processes.waiting,
		.processes_waiting = processes.waiting,
		.probes = processes.probes,
		.probe_links = processes.probe_links,
		.processes_detaching = detach_queue__pending(d->detacher),
		.services = services.services,
		.attaches = processes.attaches,
		.process_events_lost = bpf.process_events_lost + process_events__lost(d->events) +
				       process_events__malformed(d->events),
		.services_overflowed = services.overflowed,
		.label_values_truncated = services.label_values_truncated,
		.profiles_built = services.profiles_built,
		.encode_errors = services.encode_errors,
		.context_torn = bpf.context_torn,
		.context_unreadable = bpf.context_unreadable,
		.stacks_trimmed = services.stacks_trimmed,
		.label_series_folded = services.label_series_folded,
		.intervals = d->stats.intervals,
		.sample_labels_kept = d->label_stats.labels_kept,
		.sample_labels_dropped = d->label_stats.labels_dropped,
		.sample_label_values_other = d->label_stats.values_other,
		.sample_label_values_truncated = d->label_stats.values_truncated,
		.sinks = d->sinks,
		.n_sinks = d->n_sinks,
		.reloads_ok = d->stats.reloads_ok,
		.reloads_failed = d->stats.reloads_failed,
		.kube_refreshes = d->stats.retired_kube_refreshes + kube.refreshes,
		.kube_refresh_errors = d->stats.retired_kube_refresh_errors + kube.refresh_errors,
		.kube_pods = kube.pods,
		.kube_processes_waiting = processes.pod_waiting,
		.pods_found_late = processes.pods_found_late,
		.server = d->metrics ? server : NULL,
		.symbolizer_processes = symbolizer__process_count(pipeline__symbolizer(d->pipeline)),
		.symbolizer_files = symbolizer__file_count(pipeline__symbolizer(d->pipeline)),
		.sample_rate = pipeline__opts(d->pipeline)->sample_rate,
		.interval_seconds = d->config->interval_ms / 1000.0,
		.processes_budgeted = budget.budgeted,
		.processes_throttled = budget.throttled,
		.duty_fraction_min = budget.min_fraction,
	};
	for (int i = 0; i < PROCESS_NOT_PROFILED__COUNT; i++)
		m->not_profiled.reason[m->not_profiled.n++] = (struct self_metrics_reason){
			process_not_profiled_names[i], processes.not_profiled[i]
		};
	for (int i = 0; i < POD_UNKNOWN__COUNT; i++)
		m->pod_unknown.reason[m->pod_unknown.n++] = (struct self_metrics_reason){
			pod_unknown_names[i], processes.pod_unknown[i]
		};
}

struct inuse_list {
	struct self_metrics_service_bytes *items;
	size_t n, cap;
};

static void collect_inuse(const struct service *s, double bytes, void *ctx)
{
	struct inuse_list *list = ctx;

	if (list->n == list->cap) {
		size_t cap = list->cap ? 2 * list->cap : 16;
		struct self_metrics_service_bytes *grown =
			realloc(list->items, cap * sizeof(*grown));

		if (!grown)
			return; /* the family is shorter this time */
		list->items = grown;
		list->cap = cap;
	}
	list->items[list->n++] = (struct self_metrics_service_bytes){ s->name, bytes };
}

static void publish_metrics(struct daemon *d)
{
	struct metrics_text text = { 0 };
	struct metrics_server_stats server;
	struct self_metrics m;

	if (!d->metrics)
		return;
	gather_metrics(d, &m, &server);
	if (alloc_program__tracks_live(pipeline__program(d->pipeline))) {
		struct alloc_counters bpf;
		struct inuse_list list = { 0 };

		alloc_program__read_counters(pipeline__program(d->pipeline), &bpf);
		services__each_inuse(d->services, collect_inuse, &list);
		m.inuse_enabled = true;
		m.inuse = list.items;
		m.n_inuse = list.n;
		m.inuse_untracked = bpf.live_overflow;
		self_metrics__render(&m, &text);
		free(list.items);
	} else {
		self_metrics__render(&m, &text);
	}
	if (metrics_text__error(&text) == 0)
		metrics_server__publish(d->metrics, text.data, text.len);
	metrics_text__free(&text);
	if (d->last_flush_failed)
		metrics_server__set_health(d->metrics, false,
					   "every sink failed at the last interval (see the log)");
	else
		metrics_server__set_health(d->metrics, true, NULL);
}

/* ---- configuration ----------------------------------------------------------------- */

static void apply_log_level(struct daemon *d);

static int make_sinks(const struct agent_config *c, struct sink ***out)
{
	struct sink **sinks = calloc(c->n_sinks, sizeof(*sinks));
	char err[512] = "";
	int ret = 0;

	if (!sinks)
		return -ENOMEM;
	for (size_t i = 0; i < c->n_sinks && !ret; i++) {
		const struct sink_config *sc = &c->sinks[i];
		struct directory_sink_opts opts = {
			.path = sc->path,
			.max_total_bytes = sc->max_total_bytes,
			.max_age_ms = sc->max_age_ms,
		};
		struct push_header headers[CONFIG_MAX_HEADERS];
		struct push_sink_opts push = {
			.protocol = sc->type == SINK_TYPE_PARCA ? PUSH_PARCA : PUSH_PYROSCOPE,
			.name = sc->name,
			.url = sc->url,
			.timeout_ms = sc->timeout_ms,
			.queue_size = sc->queue_size,
			.spool_dir = sc->spool_dir,
			.spool_max_bytes = sc->spool_max_bytes,
			.shutdown_timeout_ms = sc->shutdown_timeout_ms,
			.max_profile_bytes = sc->max_profile_bytes,
			.max_samples = sc->max_samples,
			.max_profile_age_ms = sc->max_profile_age_ms,
			.max_attempts = sc->max_attempts,
			.max_backoff_ms = sc->max_backoff_ms,
			.username = sc->username,
			.password_file = sc->password_file,
			.password_env = sc->password_env,
			.token_file = sc->token_file,
			.token_env = sc->token_env,
			.tenant = sc->tenant,
			.headers = headers,
			.n_headers = sc->n_headers,
			.ca_file = sc->ca_file,
			.cert_file = sc->cert_file,
			.key_file = sc->key_file,
			.server_name = sc->server_name,
			.insecure_skip_verify = sc->insecure_skip_verify,
		};

		for (size_t h = 0; h < sc->n_headers && h < CONFIG_MAX_HEADERS; h++)
			headers[h] = (struct push_header){ sc->headers[h].name, sc->headers[h].value };
		switch (sc->type) {
		case SINK_TYPE_DIRECTORY:
			ret = directory_sink__new(&opts, &sinks[i], err, sizeof(err));
			break;
		case SINK_TYPE_PYROSCOPE:
		case SINK_TYPE_PARCA:
			ret = push_sink__new(&push, &sinks[i], err, sizeof(err));
			break;
		}
		if (ret)
			log_error("sink %zu: %s", i + 1, err);
		else
			sink__set_name(sinks[i], sc->name);
	}
	if (ret) {
		for (size_t i = 0; i < c->n_sinks; i++)
			sink__free(sinks[i]);
		free(sinks);
		return ret;
	}
	if (c->pid_label) {
		bool directory = false;

		for (size_t i = 0; i < c->n_sinks; i++)
			directory = directory || c->sinks[i].type == SINK_TYPE_DIRECTORY;
		/* Both servers drop numeric labels, and a pushed profile merges the service's
		 * processes: the pid lives in the directory sink's files only. */
		if (!directory)
			log_warn("profiles.pid_label applies to directory sinks only (push sinks "
				 "merge a service's processes, and Pyroscope and Parca drop numeric "
				 "labels): with no directory sink it does nothing");
	}
	*out = sinks;
	return 0;
}

static void free_sinks(struct daemon *d, bool keep_stats)
{
	for (size_t i = 0; i < d->n_sinks; i++) {
		/* keep_stats: a reload replaces it (sink__totals keeps its counters); a push sink
		 * with a spool closes at once. */
		if (keep_stats)
			push_sink__retire(d->sinks[i]);
		sink__free(d->sinks[i]);
	}
	free(d->sinks);
	d->sinks = NULL;
	d->n_sinks = 0;
}

static int make_metrics_server(const struct agent_config *c, struct metrics_server **out)
{
	char err[512] = "";
	int ret;

	*out = NULL;
	if (!c->metrics_listen || !*c->metrics_listen)
		return 0;
	ret = metrics_server__new(c->metrics_listen, c->metrics_allow_remote, out, err,
				  sizeof(err));
	if (ret == -EPERM) {
		/* The configuration loader refuses such an address already; said here too in
		 * case the two ever disagree about what is loopback. */
		log_error("%s (metrics.allow_remote: true)", err);
		return ret;
	}
	if (ret) {
		log_error("%s", err);
		return ret;
	}
	log_info("self-metrics on http://%s/metrics (port %u)", c->metrics_listen,
		 (unsigned)metrics_server__port(*out));
	return 0;
}

static bool same_string(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool same_kubernetes(const struct kubernetes_config *a, const struct kubernetes_config *b)
{
	return a->enabled == b->enabled && same_string(a->node_name, b->node_name) &&
	       same_string(a->api_server, b->api_server) &&
	       a->refresh_interval_ms == b->refresh_interval_ms &&
	       same_string(a->token_path, b->token_path) && same_string(a->ca_path, b->ca_path);
}

/* The pod cache when kubernetes.enabled, else NULL. Its first request goes out at once. */
static int make_kube_pods(const struct agent_config *c, struct kube_pods **out)
{
	const struct kubernetes_config *k = &c->kubernetes;
	struct kube_pods_options options = {
		.node_name = k->node_name,
		.api_server = k->api_server,
		.token_path = k->token_path,
		.ca_path = k->ca_path,
		.refresh_interval_ms = k->refresh_interval_ms,
	};
	char err[512] = "";
	int ret;

	*out = NULL;
	if (!k->enabled)
		return 0;
	ret = kube_pods__new(&options, out, err, sizeof(err));
	if (ret) {
		log_error("%s", err);
		return ret;
	}
	log_info("kubernetes: labelling the pods of node %s (refreshed every %.0fs)",
		 k->node_name, k->refresh_interval_ms / 1000.0);
	return 0;
}

/* Frees the pod cache, keeping its counters for the metrics. */
static void free_kube_pods(struct daemon *d)
{
	struct kube_pods_stats stats;

	if (!d->kube)
		return;
	kube_pods__stats(d->kube, &stats);
	d->stats.retired_kube_refreshes += stats.refreshes;
	d->stats.retired_kube_refresh_errors += stats.refresh_errors;
	kube_pods__free(d->kube);
	d->kube = NULL;
}

/* Sampling settings are baked into the loaded BPF program: a reload keeps the running ones. */
static void keep_sampling_settings(const struct agent_config *running, struct agent_config *next)
{
	const struct sampling_opts *now = &running->sampling;
	struct sampling_opts *then = &next->sampling;

	if (now->sample_rate != then->sample_rate || now->unwind != then->unwind ||
	    now->stack_copy_bytes != then->stack_copy_bytes ||
	    now->ringbuf_bytes != then->ringbuf_bytes ||
	    now->unwind_table_bytes != then->unwind_table_bytes)
		log_warn("reload: sampling.* settings change only on restart; keeping the running "
			 "ones");
	then->sample_rate = now->sample_rate;
	then->unwind = now->unwind;
	then->stack_copy_bytes = now->stack_copy_bytes;
	then->ringbuf_bytes = now->ringbuf_bytes;
	then->unwind_table_bytes = now->unwind_table_bytes;
	if (!now->live_entries && target_rules__any_inuse(&next->targets))
		log_warn("reload: in-use profiles (a rule's inuse: true) start only on restart: "
			 "the running agent has no live map");
	then->live_entries = now->live_entries;
}

static void *load_config_thread(void *arg)
{
	struct config_loader *l = arg;
	uint64_t one = 1;

	l->err[0] = '\0';
	l->next = NULL;
	l->ret = config_load_file(l->path, &l->next, l->err, sizeof(l->err));
	while (write(l->done_fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
	return NULL;
}

/* SIGHUP: starts loading the file on the loader thread (see struct config_loader). */
static void start_reload(struct daemon *d)
{
	struct config_loader *l = &d->loader;
	int ret;

	if (l->running) {
		l->again = true;
		return;
	}
	log_info("reloading %s", d->config_path);
	l->path = d->config_path;
	ret = pthread_create(&l->thread, NULL, load_config_thread, l);
	if (ret) {
		log_error("reload failed, keeping the running configuration: cannot start a "
			  "thread to read %s: %s",
			  d->config_path, strerror(ret));
		d->stats.reloads_failed++;
		return;
	}
	l->running = true;
}

/* Waits for the loader thread (at once when it has signalled). Returns its config or NULL. */
static struct agent_config *join_loader(struct daemon *d)
{
	struct config_loader *l = &d->loader;
	uint64_t count;

	if (!l->running)
		return NULL;
	pthread_join(l->thread, NULL);
	l->running = false;
	while (read(l->done_fd, &count, sizeof(count)) < 0 && errno == EINTR)
		;
	return l->next;
}

/* Stopping: a reload still reading its file (a FIFO nobody writes, a slow network file
 * system) must not hold the agent up. The loader blocks only in open() and read(), both
 * cancellation points; what it had half-built is left to the exiting process. */
static void cancel_loader(struct daemon *d)
{
	struct config_loader *l = &d->loader;
	struct pollfd done = { .fd = l->done_fd, .events = POLLIN };

	if (!l->running)
		return;
	if (poll(&done, 1, 0) == 1) {
		config_free(join_loader(d));
		return;
	}
	pthread_cancel(l->thread);
	pthread_join(l->thread, NULL);
	l->running = false;
}

static void apply_reload(struct daemon *d, struct agent_config *next);

/* The loader thread has signalled: swap in what it loaded, and load again if asked to. */
static void finish_reload(struct daemon *d)
{
	struct agent_config *next = join_loader(d);

	if (d->loader.ret) {
		config_free(next);
		log_error("reload failed, keeping the running configuration: %s", d->loader.err);
		d->stats.reloads_failed++;
	} else {
		apply_reload(d, next);
	}
	if (d->loader.again) {
		d->loader.again = false;
		start_reload(d);
	}
}

static void apply_reload(struct daemon *d, struct agent_config *next)
{
	struct process_tracker_settings settings;
	struct metrics_server *metrics = d->metrics;
	struct kube_pods *kube = NULL;
	struct sink **sinks = NULL;
	bool kube_changed;
	int ret;

	keep_sampling_settings(d->config, next);
	/* A new pod cache only when its settings changed: a fresh one knows no pod yet. */
	kube_changed = !same_kubernetes(&d->config->kubernetes, &next->kubernetes);
	ret = kube_changed ? make_kube_pods(next, &kube) : 0;
	if (ret == 0)
		ret = make_sinks(next, &sinks);
	if (ret == 0 && !same_string(next->metrics_listen, d->config->metrics_listen)) {
		metrics_server__free(d->metrics); /* frees the port for a server on it */
		d->metrics = NULL;
		ret = make_metrics_server(next, &metrics);
		if (ret) /* the old address again, so the endpoint does not vanish */
			make_metrics_server(d->config, &d->metrics);
	}
	if (ret) {
		log_error("reload failed, keeping the running configuration (see above)");
		if (sinks) {
			for (size_t i = 0; i < next->n_sinks; i++)
				sink__free(sinks[i]);
			free(sinks);
		}
		kube_pods__free(kube);
		config_free(next);
		d->stats.reloads_failed++;
		return;
	}
	free_sinks(d, true);
	d->sinks = sinks;
	d->n_sinks = next->n_sinks;
	d->metrics = metrics;
	config_free(d->config);
	d->config = next;
	/* Checked by the loader: only out of memory fails, and the old bounds stay. */
	if (pipeline__set_label_limits(d->pipeline, &next->sample_labels, &d->label_stats))
		log_warn("reload: the new sample_labels bounds are not applied: out of memory");
	if (kube_changed) {
		free_kube_pods(d);
		d->kube = kube;
	}
	tracker_settings(d, &settings);
	process_tracker__configure(d->tracker, &settings);
	apply_log_level(d);
	process_tracker__reapply(d->tracker);
	d->stats.reloads_ok++;
	log_info("reloaded: profiling %zu processes in %zu services", process_count(d),
		 service_count(d));
}

/* ---- start and loop ---------------------------------------------------------------- */

static void apply_log_level(struct daemon *d)
{
	if (d->log_level_override >= 0)
		log_set_level((enum log_level)d->log_level_override);
	else
		log_set_level(d->config->log_level);
}

static void raise_fd_limit(const struct agent_config *c)
{
	struct rlimit limit;
	rlim_t wanted = (rlim_t)c->max_processes * FDS_PER_PROCESS + 256;

	if (c->kubernetes.enabled)
		wanted += PROCESS_TRACKER_POD_WAITS_MAX; /* a pidfd per entry of the pod wait table */

	if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= wanted)
		return;
	limit.rlim_cur = limit.rlim_max < wanted ? limit.rlim_max : wanted;
	setrlimit(RLIMIT_NOFILE, &limit);
	if (limit.rlim_cur < wanted)
		log_warn("open-file limit %llu is below the %llu that limits.max_processes=%u "
			 "may need (LimitNOFILE= in the unit)",
			 (unsigned long long)limit.rlim_cur, (unsigned long long)wanted,
			 c->max_processes);
}

/* The sampling pipeline (BPF program, sample reader, unwinder, symbolizer), then down to the
 * capabilities the agent keeps for life: before any thread starts, since each thread has its
 * own. */
static int load_bpf(struct daemon *d)
{
	char err[512] = "";
	int ret;

	/* In-use: the live map exists when a rule asks for it at start (reloads keep it). */
	if (target_rules__any_inuse(&d->config->targets))
		d->config->sampling.live_entries = ALLOC_LIVE_DEFAULT_ENTRIES;
	ret = pipeline__open(&d->config->sampling, NULL, on_sample, d, &d->pipeline, err,
			     sizeof(err));
	if (!ret && pipeline__set_label_limits(d->pipeline, &d->config->sample_labels,
					       &d->label_stats) != 0) {
		snprintf(err, sizeof(err), "cannot apply the sample_labels bounds: out of memory");
		ret = -ENOMEM;
	}
	if (!ret)
		ret = privileges__keep_needed(PRIVILEGES_AGENT,
					      !alloc_program__has_multi(pipeline__program(d->pipeline)),
					      err, sizeof(err));
	if (ret)
		log_error("%s", err);
	return ret;
}

static int load_program(struct daemon *d)
{
	struct alloc_program *program = pipeline__program(d->pipeline);
	char err[512] = "";
	int ret;

	ret = probe_cost__measure(program, &d->probe_cost_ns);
	if (ret)
		log_warn("cannot measure the probe cost (%s): overhead estimates read 0",
			 strerror(-ret));
	else
		log_info("one probe hit costs %.0f ns on this machine", d->probe_cost_ns);
	d->calibration_hits = alloc_program__probe_hits(program);
	ret = process_events__new(alloc_program__process_events_fd(program), &d->events);
	if (ret)
		return ret;
	ret = detach_queue__new(DETACH_WORKERS, &d->detacher);
	if (ret)
		return ret;
	ret = alloc_program__watch_processes(program, err, sizeof(err));
	if (ret)
		log_error("%s", err);
	return ret;
}

static int watch(struct daemon *d, int fd, uint64_t tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag };

	return epoll_ctl(d->epoll_fd, EPOLL_CTL_ADD, fd, &ev) == 0 ? 0 : -errno;
}

static void handle_signals(struct daemon *d)
{
	struct signalfd_siginfo info;

	while (read(d->signal_fd, &info, sizeof(info)) == (ssize_t)sizeof(info)) {
		if (info.ssi_signo == SIGHUP) {
			start_reload(d);
		} else {
			log_info("stopping on %s", info.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
			d->stop = true;
		}
	}
}

static void run_loop(struct daemon *d)
{
	struct epoll_event events[64];

	while (!d->stop) {
		int64_t now = monotonic_ms();
		int64_t deadline = d->interval_start_ms + (int64_t)d->config->interval_ms;
		int64_t retry = process_tracker__next_retry_ms(d->tracker);
		int timeout;
		int n;

		if (d->next_drain_ms < deadline)
			deadline = d->next_drain_ms;
		if (d->metrics && d->next_publish_ms < deadline)
			deadline = d->next_publish_ms;
		if (retry < deadline)
			deadline = retry;
		if (d->next_budget_ms < deadline)
			deadline = d->next_budget_ms;
		timeout = deadline > now ? (int)(deadline - now) : 0;
		n = epoll_wait(d->epoll_fd, events, 64, timeout);
		if (n < 0 && errno != EINTR) {
			log_error("waiting for events failed: %s", strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			uint64_t tag = events[i].data.u64;

			if (tag == TAG_SAMPLES)
				drain_samples(d);
			else if (tag == TAG_EVENTS)
				handle_process_events(d);
			else if (tag == TAG_SIGNALS)
				handle_signals(d);
			else if (tag == TAG_RELOAD)
				finish_reload(d);
			else
				process_tracker__on_epoll(d->tracker, tag);
		}
		now = monotonic_ms();
		if (now >= d->next_drain_ms) {
			drain_samples(d);
			d->next_drain_ms = now + DRAIN_INTERVAL_MS;
		}
		if (now >= d->next_budget_ms) {
			drain_samples(d); /* a period's samples before it ends */
			d->next_budget_ms = process_tracker__tick_budgets(d->tracker, now);
			if (d->next_budget_ms > now + DRAIN_INTERVAL_MS)
				d->next_budget_ms = now + DRAIN_INTERVAL_MS;
		}
		process_tracker__retry_attaches(d->tracker, now);
		process_tracker__poll_pods(d->tracker, now);
		if (now >= d->interval_start_ms + (int64_t)d->config->interval_ms)
			flush_interval(d, now);
		if (d->metrics && now >= d->next_publish_ms) {
			publish_metrics(d);
			d->next_publish_ms = now + PUBLISH_INTERVAL_MS;
		}
	}
}

static void shut_down(struct daemon *d)
{
	/* The partial interval first, so a slow detach (a grace period per link) can never cost
	 * the profiles; then detach everything and wait until the kernel has let go. Samples that
	 * arrive in between belong to no written profile and are not counted anywhere. */
	if (d->tracker && d->pipeline && d->sinks)
		flush_interval(d, monotonic_ms());
	cancel_loader(d); /* a reload still loading is dropped */
	if (d->loader.done_fd >= 0)
		close(d->loader.done_fd);
	process_tracker__free(d->tracker);
	d->tracker = NULL;
	free_kube_pods(d);
	detach_queue__free(d->detacher); /* waits until every probe is gone */
	d->detacher = NULL;
	services__free(d->services);
	free_sinks(d, false);
	metrics_server__free(d->metrics);
	process_events__free(d->events);
	pipeline__close(d->pipeline);
	if (d->epoll_fd >= 0)
		close(d->epoll_fd);
	if (d->signal_fd >= 0)
		close(d->signal_fd);
	config_free(d->config);
}

static int load_config(const char *path, struct agent_config **out)
{
	char err[1024] = "";
	int ret = config_load_file(path, out, err, sizeof(err));

	if (ret)
		log_error("%s", err);
	return ret;
}

int daemon_check_config(const char *config_path)
{
	struct agent_config *config;
	char err[1024] = "";
	int ret = config_load_file(config_path, &config, err, sizeof(err));

	if (ret != 0) {
		char shown[4 * sizeof(err)];

		/* The message quotes the file: escaped as the log escapes it. */
		fprintf(stderr, "allocscope: %s\n", log_escaped(shown, err));
		return 1;
	}
	printf("%s: configuration is valid\n", config_path);
	config_free(config);
	return 0;
}

int daemon_run(const char *config_path, int log_level_override)
{
	struct daemon d = {
		.config_path = config_path,
		.epoll_fd = -1,
		.signal_fd = -1,
		.loader.done_fd = -1,
		.self = getpid(),
	};
	sigset_t signals;
	char rate[32];
	int status = 1;

	/* Blocked before any thread starts, so every thread inherits the mask and only the
	 * signalfd sees them. */
	sigemptyset(&signals);
	sigaddset(&signals, SIGHUP);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	sigprocmask(SIG_BLOCK, &signals, NULL);

	d.log_level_override = log_level_override;
	{
		char err[512] = "";

		if (privileges__check_start(PRIVILEGES_AGENT, err, sizeof(err)) != 0) {
			log_error("%s", err);
			goto out;
		}
	}
	if (load_config(config_path, &d.config) != 0)
		goto out;
	apply_log_level(&d);
	raise_fd_limit(d.config);
	if (load_bpf(&d) != 0)
		goto out;
	if (make_sinks(d.config, &d.sinks) != 0)
		goto out;
	d.n_sinks = d.config->n_sinks;
	if (make_metrics_server(d.config, &d.metrics) != 0)
		goto out;
	/* Before the BPF program loads, so the first pod list is usually in by the first scan. */
	if (make_kube_pods(d.config, &d.kube) != 0)
		goto out;
	d.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	d.signal_fd = signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
	d.loader.done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (d.epoll_fd < 0 || d.signal_fd < 0 || d.loader.done_fd < 0) {
		log_error("cannot set up the event loop: %s", strerror(errno));
		goto out;
	}
	if (services__new(&d.services) != 0) {
		log_error("cannot set up the service table: out of memory");
		goto out;
	}
	if (load_program(&d) != 0)
		goto out;
	if (make_tracker(&d) != 0) {
		log_error("cannot set up process tracking: out of memory");
		goto out;
	}
	if (watch(&d, pipeline__fd(d.pipeline), TAG_SAMPLES) ||
	    watch(&d, process_events__fd(d.events), TAG_EVENTS) ||
	    watch(&d, d.signal_fd, TAG_SIGNALS) || watch(&d, d.loader.done_fd, TAG_RELOAD)) {
		log_error("cannot set up the event loop: %s", strerror(errno));
		goto out;
	}
	d.interval_start_ms = monotonic_ms();
	d.interval_start_wall_ns = (int64_t)wall_ns();
	d.next_drain_ms = d.interval_start_ms + DRAIN_INTERVAL_MS;
	process_tracker__scan(d.tracker);
	/* Exec notices queued during the scan are handled in the loop; a process seen twice is
	 * tracked once. */
	/* Metrics first: whoever waits for "agent ready" may ask for them at once. */
	publish_metrics(&d);
	d.next_publish_ms = monotonic_ms() + PUBLISH_INTERVAL_MS;
	units_format_size((double)pipeline__opts(d.pipeline)->sample_rate, rate, sizeof(rate));
	log_info("agent ready: profiling %zu processes in %zu services, sampling every %s, "
		 "a profile per service every %.0fs (configuration: %s)",
		 process_count(&d), service_count(&d), rate, d.config->interval_ms / 1000.0,
		 d.config->source);
	run_loop(&d);
	status = 0;
out:
	shut_down(&d);
	return status;
}
