/* The continuous agent's life: configuration, sinks and the metrics endpoint first (so a bad
 * file or a busy port stops it before it touches any process), then the BPF program, the
 * probe-cost calibration, the exec/fork tracepoints, a scan of the processes already running,
 * and one epoll loop until SIGTERM.
 *
 * Processes. Each target is tracked with a pidfd (exits are never confused with a reused
 * pid) and its probes; exec and fork notices come from the kernel, so a new process is
 * attached within milliseconds. Right after exec the dynamic loader has not mapped libc yet,
 * so attaching retries on a short backoff until the allocator appears. Before any process is
 * released (exit, exec, rules changed) the sample ring is drained, so its last samples still
 * land in its service; its symbolization state is forgotten only after the interval's
 * profiles are written, because the profiles resolve their stacks then.
 *
 * Services. Processes are grouped by service name (from the rules, the pod, the systemd unit or
 * the executable); each service gets one delta profile per interval. The number of services is
 * capped: past the cap new services fold into "other", counted.
 *
 * Pods. With kubernetes.enabled, a process in a container is decided with its pod's metadata
 * (collect/kube_pods.h): namespace, pod, container, node and pod labels for the rules, the
 * pod's service name, and namespace/pod/container/node labels on its profiles. Processes of
 * one service in different pods (the replicas of a Deployment on a node) are kept apart: a
 * service is a service name plus, for pods' processes, the pod and container, so every profile
 * carries exact labels and Pyroscope shows a series per pod. The pod cache never blocks: a
 * container it does not know yet is asked for and the decision on its process waits (its pidfd
 * watched) until a refresh lists it, the cache says it is not a pod's (a sandbox, a container
 * started by hand), or POD_WAIT_MAX_MS pass with the API unreachable; the process is then
 * decided without pod metadata, and decided again if a later refresh lists its pod. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
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
#include <sys/syscall.h>

#include "build_info.h"
#include "daemon.h"
#include "log.h"
#include "pipeline.h"
#include "attach/alloc_program.h"
#include "attach/detach_queue.h"
#include "attach/probe_cost.h"
#include "attach/process_probes.h"
#include "collect/container_id.h"
#include "collect/kube_pods.h"
#include "collect/process_events.h"
#include "collect/process_info.h"
#include "collect/target_rules.h"
#include "config/config.h"
#include "config/units.h"
#include "export/directory_sink.h"
#include "export/metrics_server.h"
#include "export/push_sink.h"
#include "export/sink.h"
#include "profile/alloc_profile.h"
#include "utf8_text.h"
#include "profile/pprof.h"
#include "symbolize/symbolizer.h"
#include "privileges.h"

#define PROCESS_BUCKETS 4096
#define DRAIN_INTERVAL_MS 100
#define PUBLISH_INTERVAL_MS 1000
#define OVERFLOW_SERVICE "other"
/* Threads detaching probes of released processes (see attach/detach_queue.h). */
#define DETACH_WORKERS 8
/* Descriptors one profiled process holds: a pidfd, and a perf event plus a BPF link per probe
 * (7 probes on glibc). */
#define FDS_PER_PROCESS 16

/* After exec, how long to wait before each new look for the allocator: the loader maps libc
 * within a millisecond or two; a program that never maps a known allocator is given up on
 * after ~10 s in total. */
static const int attach_retry_ms[] = { 2, 5, 10, 20, 50, 100, 250, 500, 1000, 2000, 6000 };
#define ATTACH_RETRIES (sizeof(attach_retry_ms) / sizeof(attach_retry_ms[0]))

/* How long the decision on a process in an unknown container may wait for its pod. The pod
 * cache answers "not a pod's" about 10 s after the first lookup when the API server answers;
 * this bound is for an API server that does not. */
#define POD_WAIT_MAX_MS 20000
/* Processes waiting for their pod, or decided without it and watched for it; each holds a
 * pidfd. Past this, processes are decided without their pod at once (counted). */
#define POD_WAITS_MAX 1024
/* How often waiting processes are checked against POD_WAIT_MAX_MS between refreshes. */
#define POD_WAIT_CHECK_MS 1000

/* epoll tags: the fixed descriptors, or a pid (tag = PID_TAG | pid) for a tracked process's
 * pidfd, or (tag = POD_WAIT_TAG | pid) for a pidfd in the pod wait table. */
enum { TAG_SAMPLES = 1, TAG_EVENTS, TAG_SIGNALS, TAG_RELOAD };
#define PID_TAG	     (1ull << 32)
#define POD_WAIT_TAG (1ull << 33)

/* Labels of pods' services besides service_name and hostname, in this order. */
enum { POD_LABEL_NAMESPACE, POD_LABEL_POD, POD_LABEL_CONTAINER, POD_LABEL_NODE, POD_LABELS };
static const char *const pod_label_keys[POD_LABELS] = { "namespace", "pod", "container", "node" };

struct service {
	struct service *next;
	char *name;                    /* already cut to the label length limit */
	/* For a pod container's processes: its namespace, pod, container and node (the
	 * POD_LABEL_* order); all NULL for every other service. Part of what the service is. */
	char *pod_labels[POD_LABELS];
	struct alloc_profile *profile; /* this interval's; NULL until its first sample */
	size_t n_processes;            /* processes tracked under this name */
};

struct tracked_process {
	struct tracked_process *next; /* hash chain */
	pid_t pid;
	int pidfd;
	char comm[16];
	struct service *service;
	char container_id[CONTAINER_ID_LEN + 1]; /* "" when not in a container */
	struct kube_container *pod;    /* its pod's metadata (owned); NULL when none is known */
	struct process_probes *probes; /* NULL while waiting for its allocator */
	unsigned attach_attempts;
	int64_t next_attempt_ms;
	bool waiting;                  /* counted in n_waiting */
	bool snapshotted;              /* the symbolizer knows it: forget it later */
};

enum not_profiled_reason {
	NOT_PROFILED_UNSUPPORTED, /* another allocator (jemalloc, tcmalloc, ...) */
	NOT_PROFILED_NO_ALLOCATOR,
	NOT_PROFILED_OVER_LIMIT,
	NOT_PROFILED_ERROR,
	NOT_PROFILED__COUNT,
};

static const char *const not_profiled_names[NOT_PROFILED__COUNT] = {
	"unsupported_allocator", "no_allocator", "over_limit", "error",
};

/* A process in a container whose pod is not known: its decision waits, or it was decided
 * without pod metadata and is looked up again after each refresh. */
struct pod_wait {
	struct pod_wait *next; /* hash chain */
	pid_t pid;
	int pidfd;
	char container_id[CONTAINER_ID_LEN + 1];
	int64_t since_ms; /* when its decision first waited */
	bool decided;	  /* decided without its pod (counted in n_pod_waits only) */
};

/* Why a process in a container was decided without its pod. */
enum pod_unknown_reason {
	POD_UNKNOWN_NOT_LISTED, /* the API lists no pod with this container on this node */
	POD_UNKNOWN_TIMEOUT,	/* no refresh succeeded within POD_WAIT_MAX_MS */
	POD_UNKNOWN_TOO_MANY,	/* the wait table was full */
	POD_UNKNOWN__COUNT,
};

static const char *const pod_unknown_names[POD_UNKNOWN__COUNT] = {
	"not_listed", "timeout", "too_many_waiting",
};

struct agent_stats {
	uint64_t samples;
	uint64_t samples_unattributed; /* from a process no longer tracked */
	uint64_t samples_out_of_memory;
	uint64_t attaches;
	uint64_t not_profiled[NOT_PROFILED__COUNT];
	uint64_t services_overflowed;  /* processes put under "other" */
	uint64_t label_values_truncated;
	uint64_t profiles_built;
	uint64_t encode_errors;
	uint64_t stacks_trimmed;
	uint64_t intervals;
	uint64_t reloads_ok, reloads_failed;
	struct sink_stats retired_sinks; /* directory sinks replaced by a reload */
	uint64_t pod_unknown[POD_UNKNOWN__COUNT];
	uint64_t pods_found_late;        /* decided again when a later refresh listed the pod */
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
	bool path_is_default;
	/* Written by the thread, read by the loop after the join. */
	struct agent_config *next;
	int ret;
	char err[1024];
};

struct daemon {
	const char *config_path;
	bool path_is_default;
	struct agent_config *config;
	struct pipeline *pipeline;
	struct alloc_program *program;  /* the pipeline's, borrowed */
	struct symbolizer *symbolizer;  /* the pipeline's, borrowed */
	struct process_events *events;
	struct detach_queue *detacher;
	struct sink **sinks;
	size_t n_sinks;
	struct metrics_server *metrics;
	struct kube_pods *kube;    /* NULL unless kubernetes.enabled */
	int epoll_fd, signal_fd;

	struct tracked_process *buckets[PROCESS_BUCKETS];
	size_t n_processes, n_waiting, n_probes, n_probe_links;
	struct service *services;
	size_t n_services;
	pid_t *forget;             /* released pids whose symbols go after the next flush */
	size_t n_forget, cap_forget;

	struct pod_wait *pod_waits[PROCESS_BUCKETS];
	size_t n_pod_waits, n_pod_waiting; /* all entries; those whose decision waits */
	uint64_t kube_seen_refreshes, kube_seen_answers; /* the pod cache's counters last seen */
	int64_t next_pod_check_ms;

	pid_t self;
	double probe_cost_ns;
	uint64_t calibration_hits;
	int64_t interval_start_ms, interval_start_wall_ns;
	int64_t next_drain_ms, next_publish_ms;
	bool last_flush_failed;
	bool trim_logged; /* the first trimmed profile was logged */
	bool over_limit_warned;
	struct agent_stats stats;
	int log_level_override;    /* --log-level, which wins over log.level; or -1 */
	struct config_loader loader;
	bool stop;
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- services ---------------------------------------------------------------------- */

/* A pod container's label values in the POD_LABEL_* order; all NULL without a pod. */
static void pod_label_values(const struct kube_container *pod, const char *values[POD_LABELS])
{
	values[POD_LABEL_NAMESPACE] = pod ? pod->namespace_name : NULL;
	values[POD_LABEL_POD] = pod ? pod->pod : NULL;
	values[POD_LABEL_CONTAINER] = pod ? pod->container : NULL;
	values[POD_LABEL_NODE] = pod ? pod->node : NULL;
}

static struct service *find_service(struct daemon *d, const char *name,
				    const struct kube_container *pod)
{
	const char *values[POD_LABELS];

	pod_label_values(pod, values);
	for (struct service *s = d->services; s; s = s->next) {
		bool same = strcmp(s->name, name) == 0;

		for (int i = 0; i < POD_LABELS && same; i++) {
			if (values[i])
				same = s->pod_labels[i] && strcmp(s->pod_labels[i], values[i]) == 0;
			else
				same = !s->pod_labels[i];
		}
		if (same)
			return s;
	}
	return NULL;
}

static void free_service(struct service *s)
{
	alloc_profile__free(s->profile);
	free(s->name);
	for (int i = 0; i < POD_LABELS; i++)
		free(s->pod_labels[i]);
	free(s);
}

/* The service a new process goes to: by name and, for a pod's process, pod container; created
 * if the cap allows, else "other" (which has no pod labels). */
static struct service *service_for(struct daemon *d, const char *wanted,
				   const struct kube_container *pod)
{
	const char *values[POD_LABELS];
	char name[1025];
	struct service *s;
	size_t max = d->config->max_label_value_bytes;
	bool complete;

	if (utf8__label_value(name, sizeof(name), wanted, max))
		d->stats.label_values_truncated++;
	s = find_service(d, name, pod);
	if (s)
		return s;
	if (d->n_services >= d->config->max_services) {
		d->stats.services_overflowed++;
		pod = NULL;
		s = find_service(d, OVERFLOW_SERVICE, NULL);
		if (s)
			return s;
		snprintf(name, sizeof(name), "%s", OVERFLOW_SERVICE);
		log_warn("more than %u services: new ones are profiled as service \"%s\" "
			 "(raise limits.max_services)",
			 d->config->max_services, OVERFLOW_SERVICE);
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->name = strdup(name);
	complete = s->name != NULL;
	pod_label_values(pod, values);
	for (int i = 0; i < POD_LABELS && values[i]; i++) {
		s->pod_labels[i] = strdup(values[i]);
		complete = complete && s->pod_labels[i];
	}
	if (!complete) {
		free_service(s);
		return NULL;
	}
	s->next = d->services;
	d->services = s;
	d->n_services++;
	return s;
}

/* ---- tracked processes ------------------------------------------------------------- */

static struct tracked_process **bucket_of(struct daemon *d, pid_t pid)
{
	return &d->buckets[(uint32_t)pid % PROCESS_BUCKETS];
}

static struct tracked_process *find_process(struct daemon *d, pid_t pid)
{
	for (struct tracked_process *p = *bucket_of(d, pid); p; p = p->next)
		if (p->pid == pid)
			return p;
	return NULL;
}

static void remember_to_forget(struct daemon *d, pid_t pid)
{
	if (d->n_forget == d->cap_forget) {
		size_t cap = d->cap_forget ? d->cap_forget * 2 : 64;
		pid_t *forget = realloc(d->forget, cap * sizeof(*forget));

		if (!forget)
			return; /* its symbols stay until the agent stops: memory, not correctness */
		d->forget = forget;
		d->cap_forget = cap;
	}
	d->forget[d->n_forget++] = pid;
}

static void drain_samples(struct daemon *d)
{
	pipeline__drain(d->pipeline);
}

/* Detaches and forgets a tracked process. The caller has drained the sample ring. */
static void release_process(struct daemon *d, struct tracked_process *p)
{
	struct tracked_process **link = bucket_of(d, p->pid);

	while (*link != p)
		link = &(*link)->next;
	*link = p->next;
	epoll_ctl(d->epoll_fd, EPOLL_CTL_DEL, p->pidfd, NULL);
	close(p->pidfd);
	if (p->probes) {
		d->n_probes -= process_probes__count(p->probes);
		d->n_probe_links -= process_probes__links(p->probes);
		alloc_program__set_profiled(d->program, p->pid, false);
		detach_queue__push(d->detacher, p->probes);
	}
	if (p->waiting)
		d->n_waiting--;
	if (p->snapshotted)
		remember_to_forget(d, p->pid);
	p->service->n_processes--;
	d->n_processes--;
	kube_container__free(p->pod);
	free(p);
}

static void snapshot_process(struct daemon *d, struct tracked_process *p)
{
	int ret = pipeline__add_process(d->pipeline, p->pid);

	if (ret && ret != -ESRCH)
		log_warn("cannot read the memory map of pid %d: %s", (int)p->pid, strerror(-ret));
	p->snapshotted = true;
}

static void not_profiled(struct daemon *d, enum not_profiled_reason reason)
{
	d->stats.not_profiled[reason]++;
}

/* Attaches now, or schedules another look when the allocator is not mapped yet. Returns
 * false when the process was released. */
static bool try_attach(struct daemon *d, struct tracked_process *p)
{
	char err[512] = "";
	int ret;

	ret = process_probes__attach(d->program, p->pid, NULL, &p->probes, err, sizeof(err));
	if (ret == 0) {
		size_t stepped = process_probes__single_stepped(p->probes);

		if (p->waiting)
			d->n_waiting--;
		p->waiting = false;
		d->n_probes += process_probes__count(p->probes);
		d->n_probe_links += process_probes__links(p->probes);
		d->stats.attaches++;
		alloc_program__set_profiled(d->program, p->pid, true);
		snapshot_process(d, p);
		if (p->service->n_processes == 1)
			log_info("service %s: profiling pid %d (%s)", p->service->name, (int)p->pid,
				 p->comm);
		log_debug("pid %d (%s): %zu probes on %s%s%s", (int)p->pid, p->comm,
			  process_probes__count(p->probes), process_probes__file(p->probes),
			  process_probes__cooperative(p->probes)
				  ? " (otel_memory:alloc USDT: it samples in-process)"
				  : "",
			  stepped ? ", some single-stepped" : "");
		return true;
	}
	if (ret == -ENOENT && p->attach_attempts < ATTACH_RETRIES) {
		if (!p->waiting)
			d->n_waiting++;
		p->waiting = true;
		p->next_attempt_ms = now_ms() + attach_retry_ms[p->attach_attempts++];
		log_debug("pid %d (%s): %s; looking again in %d ms", (int)p->pid, p->comm, err,
			  attach_retry_ms[p->attach_attempts - 1]);
		return true;
	}
	if (ret == -ENOTSUP) {
		log_info("pid %d (%s) is not profiled: %s", (int)p->pid, p->comm, err);
		not_profiled(d, NOT_PROFILED_UNSUPPORTED);
	} else if (ret == -ENOENT) {
		log_debug("pid %d (%s) is not profiled: no allocator allocscope knows is mapped",
			  (int)p->pid, p->comm);
		not_profiled(d, NOT_PROFILED_NO_ALLOCATOR);
	} else if (ret != -ESRCH) {
		log_warn("pid %d (%s) is not profiled: %s", (int)p->pid, p->comm, err);
		not_profiled(d, NOT_PROFILED_ERROR);
	}
	release_process(d, p);
	return false;
}

/* Tracks pid in the service named service_name (for pod's processes, that pod container's),
 * or in inherited when given: a forked worker stays in its parent's service. Takes pod. */
static void track_process(struct daemon *d, pid_t pid, const char *service_name,
			  struct service *inherited, struct kube_container *pod,
			  const char *container_id, const char *comm)
{
	struct tracked_process *p;
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = PID_TAG | (uint32_t)pid };
	int pidfd;

	if (d->n_processes >= d->config->max_processes) {
		not_profiled(d, NOT_PROFILED_OVER_LIMIT);
		if (!d->over_limit_warned)
			log_warn("already profiling %zu processes: pid %d (%s) and others past "
				 "the limit are not profiled (raise limits.max_processes)",
				 d->n_processes, (int)pid, comm);
		d->over_limit_warned = true;
		kube_container__free(pod);
		return;
	}
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0) {
		kube_container__free(pod);
		return; /* gone already */
	}
	p = calloc(1, sizeof(*p));
	if (p)
		p->service = inherited ? inherited : service_for(d, service_name, pod);
	if (!p || !p->service || epoll_ctl(d->epoll_fd, EPOLL_CTL_ADD, pidfd, &ev) != 0) {
		log_warn("cannot track pid %d: %s", (int)pid, p ? strerror(errno) : "out of memory");
		not_profiled(d, NOT_PROFILED_ERROR);
		free(p);
		close(pidfd);
		kube_container__free(pod);
		return;
	}
	p->pid = pid;
	p->pidfd = pidfd;
	p->pod = pod;
	snprintf(p->container_id, sizeof(p->container_id), "%s", container_id);
	snprintf(p->comm, sizeof(p->comm), "%s", comm);
	p->next = *bucket_of(d, pid);
	*bucket_of(d, pid) = p;
	p->service->n_processes++;
	d->n_processes++;
	try_attach(d, p);
}

/* ---- pods: the wait table ---------------------------------------------------------- */

static struct pod_wait **pod_wait_bucket(struct daemon *d, pid_t pid)
{
	return &d->pod_waits[(uint32_t)pid % PROCESS_BUCKETS];
}

static struct pod_wait *find_pod_wait(struct daemon *d, pid_t pid)
{
	for (struct pod_wait *w = *pod_wait_bucket(d, pid); w; w = w->next)
		if (w->pid == pid)
			return w;
	return NULL;
}

static void remove_pod_wait(struct daemon *d, struct pod_wait *w)
{
	struct pod_wait **link = pod_wait_bucket(d, w->pid);

	while (*link != w)
		link = &(*link)->next;
	*link = w->next;
	epoll_ctl(d->epoll_fd, EPOLL_CTL_DEL, w->pidfd, NULL);
	close(w->pidfd);
	if (!w->decided)
		d->n_pod_waiting--;
	d->n_pod_waits--;
	free(w);
}

static void clear_pod_waits(struct daemon *d)
{
	for (size_t b = 0; b < PROCESS_BUCKETS; b++) {
		while (d->pod_waits[b])
			remove_pod_wait(d, d->pod_waits[b]);
	}
}

/* Puts pid in the wait table: its decision waits (decided false), or it was decided without
 * its pod and is looked up again after each refresh. Returns 0, -ENOSPC when the table is
 * full, -ESRCH when the process is gone, or another -errno. */
static int add_pod_wait(struct daemon *d, pid_t pid, const char *container_id, bool decided,
			int64_t now)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = POD_WAIT_TAG | (uint32_t)pid };
	struct pod_wait *w;
	int ret;

	if (d->n_pod_waits >= POD_WAITS_MAX)
		return -ENOSPC;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	/* A pidfd, so that an exit removes the entry and a reused pid is never mistaken for
	 * the process that waited. */
	w->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (w->pidfd < 0) {
		ret = errno == ESRCH ? -ESRCH : -errno;
		free(w);
		return ret;
	}
	if (epoll_ctl(d->epoll_fd, EPOLL_CTL_ADD, w->pidfd, &ev) != 0) {
		ret = -errno;
		close(w->pidfd);
		free(w);
		return ret;
	}
	w->pid = pid;
	snprintf(w->container_id, sizeof(w->container_id), "%s", container_id);
	w->since_ms = now;
	w->decided = decided;
	w->next = *pod_wait_bucket(d, pid);
	*pod_wait_bucket(d, pid) = w;
	d->n_pod_waits++;
	if (!decided)
		d->n_pod_waiting++;
	return 0;
}

/* True while the process behind pidfd runs: then its pid is still its own. */
static bool pidfd_alive(int pidfd)
{
	return syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) == 0;
}

/* Watches a process in a container that was decided without its pod (unless it already is),
 * so that a refresh that lists the pod later decides it again. */
static void watch_for_pod(struct daemon *d, pid_t pid, const char *container_id)
{
	if (!d->kube || !container_id[0] || find_pod_wait(d, pid))
		return;
	add_pod_wait(d, pid, container_id, true, now_ms());
}

static void pod_unknown(struct daemon *d, const struct process_info *info,
			enum pod_unknown_reason reason)
{
	d->stats.pod_unknown[reason]++;
	log_debug("pid %d (%s): container %.12s is in no known pod (%s): deciding without pod "
		  "metadata",
		  (int)info->pid, info->comm, info->container.id, pod_unknown_names[reason]);
}

/* The pod of a process in a container. Returns 0 with *pod set (NULL: not in a container, or
 * Kubernetes is off), -EAGAIN while the cache does not know the container yet, -ENOENT when
 * it says the container is in no pod on this node, or another -errno. */
static int find_pod(struct daemon *d, const struct process_info *info, struct kube_container **pod)
{
	int ret;

	*pod = NULL;
	if (!d->kube || !info->container.id[0])
		return 0;
	ret = kube_pods__lookup(d->kube, info->container.id, pod);
	if (ret && ret != -EAGAIN && ret != -ENOENT)
		log_warn("pid %d: cannot look up container %.12s: %s", (int)info->pid,
			 info->container.id, strerror(-ret));
	return ret;
}

/* ---- deciding ---------------------------------------------------------------------- */

/* Applies the rules to the facts (pod included, or NULL) and tracks a target. Takes pod. */
static void decide_process(struct daemon *d, struct process_info *info, struct kube_container *pod)
{
	char service[1024];

	info->pod = pod;
	if (!target_rules__match(&d->config->targets, info, service, sizeof(service))) {
		kube_container__free(pod);
		return;
	}
	track_process(d, info->pid, service, NULL, pod, info->container.id, info->comm);
}

/* Decides from /proc (and the pod cache) whether pid is a target, and tracks it if so; or
 * lets the decision wait for the pod. */
static void consider_process(struct daemon *d, pid_t pid)
{
	struct kube_container *pod = NULL;
	struct process_info info;
	struct pod_wait *w;
	int ret;

	if (pid == d->self || find_process(d, pid))
		return;
	w = find_pod_wait(d, pid);
	if (w && !w->decided)
		return; /* the pod cache will answer */
	if (process_info__read("/proc", pid, &info) != 0)
		return;
	if (w)
		remove_pod_wait(d, w); /* decided without its pod before: decided afresh now */
	ret = find_pod(d, &info, &pod);
	if (ret == -EAGAIN) {
		ret = add_pod_wait(d, pid, info.container.id, false, now_ms());
		if (ret == 0)
			log_debug("pid %d (%s): container %.12s is not in the pod list yet: "
				  "deciding once it is",
				  (int)pid, info.comm, info.container.id);
		if (ret == 0 || ret == -ESRCH)
			return;
		pod_unknown(d, &info, POD_UNKNOWN_TOO_MANY);
		decide_process(d, &info, NULL);
		return;
	}
	if (ret) {
		pod_unknown(d, &info, POD_UNKNOWN_NOT_LISTED);
		watch_for_pod(d, pid, info.container.id);
	}
	decide_process(d, &info, pod);
}

/* Decides a tracked process again from fresh facts (rules or pod changed): released when no
 * longer a target, moved when its service changed. The caller has drained the sample ring. */
static void redecide_tracked(struct daemon *d, struct tracked_process *p)
{
	struct kube_container *pod = NULL;
	struct process_info info;
	char service[1024];
	struct service *s;

	if (process_info__read("/proc", p->pid, &info) != 0) {
		release_process(d, p);
		return;
	}
	if (!d->kube) {
		kube_container__free(p->pod);
		p->pod = NULL;
	} else if (find_pod(d, &info, &pod) == 0 && pod) {
		kube_container__free(p->pod);
		p->pod = pod;
	}
	/* Not answered now (a pod cache just started): the metadata it had still holds. */
	if (!p->pod)
		watch_for_pod(d, p->pid, info.container.id);
	info.pod = p->pod;
	if (!target_rules__match(&d->config->targets, &info, service, sizeof(service))) {
		release_process(d, p);
		return;
	}
	s = service_for(d, service, p->pod);
	if (s && s != p->service) {
		p->service->n_processes--;
		p->service = s;
		s->n_processes++;
	}
}

/* A waiting process after the pod cache changed, or at its deadline. */
static void retry_pod_wait(struct daemon *d, struct pod_wait *w, int64_t now)
{
	struct kube_container *pod = NULL;
	struct process_info info;
	int ret;

	if (process_info__read("/proc", w->pid, &info) != 0 || !pidfd_alive(w->pidfd)) {
		remove_pod_wait(d, w);
		return;
	}
	ret = find_pod(d, &info, &pod);
	if (ret == -EAGAIN && now < w->since_ms + POD_WAIT_MAX_MS)
		return;
	if (ret == 0) {
		/* Found, or no longer in a container at all. */
		remove_pod_wait(d, w);
		decide_process(d, &info, pod);
		return;
	}
	pod_unknown(d, &info, ret == -EAGAIN ? POD_UNKNOWN_TIMEOUT : POD_UNKNOWN_NOT_LISTED);
	w->decided = true;
	d->n_pod_waiting--;
	decide_process(d, &info, NULL);
}

/* A process decided without its pod, after a successful refresh: decided again once listed. */
static void recheck_pod_wait(struct daemon *d, struct pod_wait *w)
{
	struct kube_container *pod = NULL;
	struct tracked_process *p;
	pid_t pid = w->pid;

	if (kube_pods__lookup(d->kube, w->container_id, &pod) != 0)
		return;
	log_info("pid %d: pod %s/%s is listed now: deciding again with its metadata", (int)pid,
		 pod->namespace_name, pod->pod);
	kube_container__free(pod);
	d->stats.pods_found_late++;
	remove_pod_wait(d, w);
	p = find_process(d, pid);
	if (p) {
		drain_samples(d);
		redecide_tracked(d, p);
	} else {
		consider_process(d, pid);
	}
}

/* Called every turn of the loop: waiting decisions are retried when the pod cache answered a
 * request (or at their deadline), and processes decided without their pod are looked up again
 * after each successful refresh. */
static void poll_pods(struct daemon *d, int64_t now)
{
	struct kube_pods_stats stats;
	bool answered, refreshed, deadline;

	if (!d->kube)
		return;
	kube_pods__stats(d->kube, &stats);
	answered = stats.refreshes + stats.refresh_errors != d->kube_seen_answers;
	refreshed = stats.refreshes != d->kube_seen_refreshes;
	d->kube_seen_answers = stats.refreshes + stats.refresh_errors;
	d->kube_seen_refreshes = stats.refreshes;
	deadline = d->n_pod_waiting && now >= d->next_pod_check_ms;
	if (!d->n_pod_waits || (!answered && !refreshed && !deadline))
		return;
	if (deadline)
		d->next_pod_check_ms = now + POD_WAIT_CHECK_MS;
	for (size_t b = 0; b < PROCESS_BUCKETS; b++) {
		struct pod_wait *w = d->pod_waits[b], *next;

		for (; w; w = next) {
			next = w->next;
			if (!w->decided && (answered || now >= w->since_ms + POD_WAIT_MAX_MS))
				retry_pod_wait(d, w, now);
			else if (w->decided && refreshed)
				recheck_pod_wait(d, w);
		}
	}
}

static void scan_processes(struct daemon *d)
{
	DIR *dir = opendir("/proc");
	struct dirent *entry;

	if (!dir) {
		log_error("cannot list /proc: %s", strerror(errno));
		return;
	}
	while ((entry = readdir(dir))) {
		char *end;
		long pid = strtol(entry->d_name, &end, 10);

		if (*end || pid <= 0 || pid > INT_MAX)
			continue;
		consider_process(d, (pid_t)pid);
	}
	closedir(dir);
}

static void retry_waiting(struct daemon *d, int64_t now)
{
	if (!d->n_waiting)
		return;
	for (size_t b = 0; b < PROCESS_BUCKETS; b++) {
		struct tracked_process *p = d->buckets[b], *next;

		for (; p; p = next) {
			next = p->next;
			if (!p->probes && p->next_attempt_ms <= now)
				try_attach(d, p);
		}
	}
}

static int64_t next_retry_ms(struct daemon *d)
{
	int64_t next = INT64_MAX;

	if (!d->n_waiting)
		return next;
	for (size_t b = 0; b < PROCESS_BUCKETS; b++)
		for (struct tracked_process *p = d->buckets[b]; p; p = p->next)
			if (!p->probes && p->next_attempt_ms < next)
				next = p->next_attempt_ms;
	return next;
}

/* A fork followed by an exec in the same batch is decided by the exec. */
static bool execs_later(const struct process_event *batch, size_t n, size_t from, uint32_t pid)
{
	for (size_t i = from + 1; i < n; i++)
		if (batch[i].type == PROCESS_EVENT_EXEC && batch[i].pid == pid)
			return true;
	return false;
}

static void handle_process_events(struct daemon *d)
{
	const struct process_event *batch;
	size_t n;
	int ret = process_events__drain(d->events, &batch, &n);

	if (ret < 0 && ret != -EINTR)
		log_warn("reading process notices failed: %s", strerror(-ret));
	if (!n)
		return;
	/* Samples first: a process released below keeps what it allocated before. */
	drain_samples(d);
	for (size_t i = 0; i < n; i++) {
		const struct process_event *event = &batch[i];
		pid_t pid = (pid_t)event->pid;
		struct tracked_process *p = find_process(d, pid);

		if (event->type == PROCESS_EVENT_EXEC) {
			struct pod_wait *w = find_pod_wait(d, pid);

			/* A new image: decided afresh. */
			if (p)
				release_process(d, p);
			if (w)
				remove_pod_wait(d, w);
			consider_process(d, pid);
		} else if (event->type == PROCESS_EVENT_FORK && !p &&
			   !execs_later(batch, n, i, event->pid)) {
			struct tracked_process *parent = find_process(d, (pid_t)event->parent_pid);
			struct kube_container *pod = NULL;
			char comm[16];

			if (pid == d->self)
				continue;
			/* The parent's decision waits for its pod, or may change when the pod is
			 * found: the child, in the same container, is decided the same way. */
			if (find_pod_wait(d, (pid_t)event->parent_pid)) {
				consider_process(d, pid);
				continue;
			}
			if (!parent)
				continue;
			/* A forked worker is its parent's image: same rules, same service. */
			process_info__read_comm(pid, comm, sizeof(comm));
			if (parent->pod && d->kube &&
			    kube_pods__lookup(d->kube, parent->container_id, &pod) != 0)
				pod = NULL;
			track_process(d, pid, NULL, parent->service, pod, parent->container_id,
				      comm);
		}
	}
}

static void handle_exit(struct daemon *d, pid_t pid)
{
	struct tracked_process *p = find_process(d, pid);

	if (!p)
		return;
	drain_samples(d);
	log_debug("pid %d (%s) exited", (int)pid, p->comm);
	release_process(d, p);
}

static void handle_pod_wait_exit(struct daemon *d, pid_t pid)
{
	struct pod_wait *w = find_pod_wait(d, pid);

	if (w)
		remove_pod_wait(d, w);
}

/* ---- samples ----------------------------------------------------------------------- */

static int on_sample(const struct alloc_sample *sample, void *ctx)
{
	struct daemon *d = ctx;
	struct tracked_process *p;
	struct service *s;

	if ((pid_t)sample->pid == d->self)
		return 0; /* the start-up calibration's rare sample */
	d->stats.samples++;
	p = find_process(d, (pid_t)sample->pid);
	if (!p) {
		d->stats.samples_unattributed++;
		return 0;
	}
	s = p->service;
	if (!s->profile && pipeline__new_profile(d->pipeline, &s->profile) != 0) {
		d->stats.samples_out_of_memory++;
		return 0;
	}
	if (pipeline__add_sample(d->pipeline, s->profile, sample) != 0)
		d->stats.samples_out_of_memory++;
	return 0;
}

/* ---- intervals --------------------------------------------------------------------- */

static bool same_shape(const struct sink *sink, const struct sink_shape *shape)
{
	struct sink_shape other;

	sink__shape(sink, &other);
	return other.merge_processes == shape->merge_processes &&
	       other.max_samples == shape->max_samples && other.max_bytes == shape->max_bytes;
}

/* A label value as sent: valid UTF-8, at most limits.max_label_value_bytes (value is a
 * buffer of 1025 bytes). */
static void label_value(struct daemon *d, char *value, const char *raw)
{
	if (utf8__label_value(value, 1025, raw ? raw : "", d->config->max_label_value_bytes))
		d->stats.label_values_truncated++;
}

static int submit_profile(struct daemon *d, struct service *s, int64_t duration_ns)
{
	const struct agent_config *c = d->config;
	struct pprof_label sample_labels[2 + POD_LABELS + CONFIG_MAX_STATIC_LABELS];
	struct profile_label labels[2 + POD_LABELS + CONFIG_MAX_STATIC_LABELS];
	/* Copies of hostname, the pod labels and the static labels, cut to the limit below. */
	char values[1 + POD_LABELS + CONFIG_MAX_STATIC_LABELS][1025];
	char line1[128], line2[1200];
	const char *comments[] = { line1, line2, NULL };
	size_t n = 0, n_values = 0;
	uint8_t *data = NULL;
	size_t len = 0;
	int ret, failures = 0;
	bool built = false;

	/* Every value goes through the one helper that makes it valid UTF-8 and cuts it at a
	 * character boundary (the service name already did, in service_for). */
	labels[n++] = (struct profile_label){ "service_name", s->name };
	labels[n++] = (struct profile_label){ "hostname", values[n_values] };
	label_value(d, values[n_values++], c->hostname);
	for (int i = 0; i < POD_LABELS && s->pod_labels[i]; i++) {
		labels[n++] = (struct profile_label){ pod_label_keys[i], values[n_values] };
		label_value(d, values[n_values++], s->pod_labels[i]);
	}
	for (size_t i = 0; i < c->n_labels; i++) {
		labels[n++] = (struct profile_label){ c->labels[i].key, values[n_values] };
		label_value(d, values[n_values++], c->labels[i].value);
	}
	for (size_t i = 0; i < n; i++)
		sample_labels[i] = (struct pprof_label){ .key = labels[i].key,
							 .str = labels[i].value };
	snprintf(line1, sizeof(line1), "allocscope %s, sample rate %llu bytes", ALLOCSCOPE_VERSION,
		 (unsigned long long)c->sampling.sample_rate);
	if (s->pod_labels[0])
		snprintf(line2, sizeof(line2), "service %s, container %s of pod %s/%s, on %s",
			 s->name, s->pod_labels[POD_LABEL_CONTAINER], s->pod_labels[POD_LABEL_NAMESPACE],
			 s->pod_labels[POD_LABEL_POD], values[0]);
	else
		snprintf(line2, sizeof(line2), "service %s on %s", s->name, values[0]);

	struct profile_record record = {
		.service = s->name,
		.labels = labels,
		.n_labels = n,
		.start_ns = d->interval_start_wall_ns,
		.duration_ns = duration_ns,
	};
	/* One encoding per shape the sinks ask for (sink.h): the directory sink keeps each
	 * process apart, push sinks take the processes merged and bounded to their server's
	 * limits; sinks of the same shape share one encoding. */
	for (size_t i = 0; i < d->n_sinks; i++) {
		struct alloc_profile_result result = { 0 };
		struct sink_shape shape;
		bool encoded_before = false;

		sink__shape(d->sinks[i], &shape);
		for (size_t j = 0; j < i && !encoded_before; j++)
			encoded_before = same_shape(d->sinks[j], &shape);
		if (encoded_before)
			continue;

		struct alloc_profile_output output = {
			.start_ns = d->interval_start_wall_ns,
			.duration_ns = duration_ns,
			.comments = comments,
			/* Per-sample labels only repeat the series labels of a push. */
			.labels = shape.merge_processes ? NULL : sample_labels,
			.n_labels = shape.merge_processes ? 0 : n,
			.pid_label = c->pid_label && !shape.merge_processes,
			.merge_processes = shape.merge_processes,
			.max_samples = (size_t)shape.max_samples,
			.max_bytes = shape.max_bytes,
			.result = &result,
		};

		ret = alloc_profile__encode_pprof(s->profile, &output, &data, &len);
		if (ret) {
			d->stats.encode_errors++;
			log_error("cannot encode the profile of service %s: %s", s->name,
				  strerror(-ret));
			failures++;
			continue;
		}
		built = true;
		if (result.stacks_trimmed) {
			d->stats.stacks_trimmed += result.stacks_trimmed;
			if (!d->trim_logged)
				log_warn("the profile of service %s for %s sink %s has %zu stacks "
					 "more than its max_samples or max_profile_size allow: the "
					 "coldest were folded into one \"%s\" frame (totals kept); "
					 "see allocscope_profile_stacks_trimmed_total. Logged once",
					 s->name, sink__type(d->sinks[i]), sink__name(d->sinks[i]),
					 result.stacks_trimmed, ALLOC_PROFILE_TRIMMED_FRAME);
			d->trim_logged = true;
		}
		record.pprof_gz = data;
		record.pprof_gz_len = len;
		for (size_t j = i; j < d->n_sinks; j++)
			if (same_shape(d->sinks[j], &shape))
				failures += sink__submit(d->sinks[j], &record) != 0;
		free(data);
		data = NULL;
	}
	if (built)
		d->stats.profiles_built++;
	return failures >= (int)d->n_sinks ? -EIO : 0;
}

static void flush_interval(struct daemon *d, int64_t now)
{
	int64_t duration_ns = (now - d->interval_start_ms) * 1000000;
	size_t written = 0, failed = 0;
	struct service **link;

	drain_samples(d);
	for (struct service *s = d->services; s; s = s->next) {
		struct alloc_profile_totals totals;

		if (!s->profile)
			continue;
		alloc_profile__totals(s->profile, &totals);
		if (totals.samples) {
			if (submit_profile(d, s, duration_ns) == 0)
				written++;
			else
				failed++;
		}
		alloc_profile__free(s->profile);
		s->profile = NULL;
	}
	d->last_flush_failed = failed && !written;
	/* The profiles are written: released processes' symbols can go. */
	for (size_t i = 0; i < d->n_forget; i++) {
		if (find_process(d, d->forget[i]))
			continue; /* the pid came back as a new target: its snapshot is fresh */
		pipeline__remove_process(d->pipeline, d->forget[i]);
	}
	d->n_forget = 0;
	link = &d->services;
	while (*link) {
		struct service *s = *link;

		if (s->n_processes == 0) {
			*link = s->next;
			free_service(s);
			d->n_services--;
		} else {
			link = &s->next;
		}
	}
	d->stats.intervals++;
	log_debug("interval: %zu profiles written, %zu failed; %zu processes in %zu services",
		  written, failed, d->n_processes, d->n_services);
	d->interval_start_ms = now;
	d->interval_start_wall_ns = wall_ns();
}

/* ---- self-metrics ------------------------------------------------------------------ */

/* The counters of the sinks of sink i's type and name (unnamed sinks of one type share
 * theirs), those of the sinks they replaced at reloads included; their gauges. False when an
 * earlier sink has the same type and name: its sample already holds sink i's. */
static bool sink_totals(const struct daemon *d, size_t i, struct sink_stats *out)
{
	const char *type = sink__type(d->sinks[i]), *name = sink__name(d->sinks[i]);

	for (size_t j = 0; j < i; j++) {
		if (strcmp(sink__type(d->sinks[j]), type) == 0 &&
		    strcmp(sink__name(d->sinks[j]), name) == 0)
			return false;
	}
	sink__totals(d->sinks[i], out);
	for (size_t j = i + 1; j < d->n_sinks; j++) {
		struct sink_stats more;

		if (strcmp(sink__type(d->sinks[j]), type) != 0 ||
		    strcmp(sink__name(d->sinks[j]), name) != 0)
			continue;
		sink__stats(d->sinks[j], &more);
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
static void render_kubernetes_metrics(struct daemon *d, struct metrics_text *t)
{
	struct kube_pods_stats kube = { 0 };

	if (d->kube)
		kube_pods__stats(d->kube, &kube);
	counter(t, "allocscope_kubernetes_refreshes_total",
		"Successful pod list refreshes from the Kubernetes API.",
		(double)(d->stats.retired_kube_refreshes + kube.refreshes));
	counter(t, "allocscope_kubernetes_refresh_errors_total",
		"Failed pod list refreshes (the previous list is kept; the log says why).",
		(double)(d->stats.retired_kube_refresh_errors + kube.refresh_errors));
	gauge(t, "allocscope_kubernetes_pods", "Pods on this node in the last pod list.",
	      (double)kube.pods);
	gauge(t, "allocscope_kubernetes_processes_waiting",
	      "Processes in containers whose decision waits for their pod to be listed.",
	      (double)d->n_pod_waiting);
	metrics_text__family(t, "allocscope_kubernetes_pod_unknown_total", "counter",
			     "Processes in containers decided without pod metadata, by reason: "
			     "not_listed (no pod on this node has the container: a sandbox, a "
			     "container started outside Kubernetes), timeout (the API did not "
			     "answer in time), too_many_waiting.");
	for (int i = 0; i < POD_UNKNOWN__COUNT; i++)
		metrics_text__sample(t, "allocscope_kubernetes_pod_unknown_total",
				     (const char *const[]){ "reason", pod_unknown_names[i], NULL },
				     (double)d->stats.pod_unknown[i]);
	counter(t, "allocscope_kubernetes_pods_found_late_total",
		"Processes decided again because a later refresh listed their pod.",
		(double)d->stats.pods_found_late);
}

static void render_metrics(struct daemon *d, struct metrics_text *t)
{
	struct alloc_counters bpf;
	struct rusage usage;
	uint64_t hits = alloc_program__probe_hits(d->program);
	double cpu = 0;

	alloc_program__read_counters(d->program, &bpf);
	hits = hits > d->calibration_hits ? hits - d->calibration_hits : 0;
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
		(double)d->stats.samples);
	metrics_text__family(t, "allocscope_samples_dropped_total", "counter",
			     "Sampled allocations lost, by reason.");
	const struct {
		const char *reason;
		uint64_t value;
	} drops[] = {
		{ "ringbuf_full", bpf.ringbuf_full },
		{ "out_of_memory", d->stats.samples_out_of_memory },
		{ "malformed", pipeline__malformed(d->pipeline) },
		{ "unattributed", d->stats.samples_unattributed },
	};
	for (size_t i = 0; i < sizeof(drops) / sizeof(drops[0]); i++)
		metrics_text__sample(t, "allocscope_samples_dropped_total",
				     (const char *const[]){ "reason", drops[i].reason, NULL },
				     (double)drops[i].value);
	metrics_text__family(t, "allocscope_stacks_degraded_total", "counter",
			     "Samples whose stack is incomplete, by reason.");
	const struct {
		const char *reason;
		uint64_t value;
	} degraded[] = {
		{ "frame_pointer_walk_failed", bpf.stack_errors },
		{ "caller_unreadable", bpf.caller_errors },
		{ "no_stack_copy", bpf.stack_copy_errors },
		{ "truncated", pipeline__truncated_unwinds(d->pipeline) },
	};
	for (size_t i = 0; i < sizeof(degraded) / sizeof(degraded[0]); i++)
		metrics_text__sample(t, "allocscope_stacks_degraded_total",
				     (const char *const[]){ "reason", degraded[i].reason, NULL },
				     (double)degraded[i].value);
	counter(t, "allocscope_allocations_uncounted_total",
		"Allocations not counted: no per-thread countdown could be created.",
		(double)bpf.storage_errors);
	counter(t, "allocscope_probe_hits_total", "Allocator calls that hit a probe.",
		(double)hits);
	gauge(t, "allocscope_probe_hit_cost_seconds",
	      "Measured cost of one probe hit on this machine (calibrated at start).",
	      d->probe_cost_ns / 1e9);
	counter(t, "allocscope_estimated_overhead_seconds_total",
		"CPU time the probes cost the profiled processes: hits times the measured cost.",
		(double)hits * d->probe_cost_ns / 1e9);
	metrics_text__family(t, "allocscope_processes", "gauge",
			     "Processes tracked: attached, or waiting for their allocator.");
	metrics_text__sample(t, "allocscope_processes",
			     (const char *const[]){ "state", "attached", NULL },
			     (double)(d->n_processes - d->n_waiting));
	metrics_text__sample(t, "allocscope_processes",
			     (const char *const[]){ "state", "waiting", NULL },
			     (double)d->n_waiting);
	gauge(t, "allocscope_probes", "Uprobes attached (one per entry point per process).",
	      (double)d->n_probes);
	gauge(t, "allocscope_probe_links",
	      "Kernel links holding those uprobes: one uprobe_multi link per process, or one "
	      "perf-event link per uprobe on kernels without uprobe_multi.",
	      (double)d->n_probe_links);
	gauge(t, "allocscope_processes_detaching",
	      "Released processes whose probes are still being removed (the kernel waits for "
	      "a grace period per removal).",
	      (double)detach_queue__pending(d->detacher));
	gauge(t, "allocscope_services", "Services with tracked processes.",
	      (double)d->n_services);
	counter(t, "allocscope_process_attaches_total", "Processes attached since start.",
		(double)d->stats.attaches);
	metrics_text__family(t, "allocscope_processes_not_profiled_total", "counter",
			     "Target processes that were not profiled, by reason.");
	for (int i = 0; i < NOT_PROFILED__COUNT; i++)
		metrics_text__sample(t, "allocscope_processes_not_profiled_total",
				     (const char *const[]){ "reason", not_profiled_names[i], NULL },
				     (double)d->stats.not_profiled[i]);
	counter(t, "allocscope_process_events_lost_total",
		"Exec and fork notices lost (a process may have been missed).",
		(double)(bpf.process_events_lost + process_events__lost(d->events) +
			 process_events__malformed(d->events)));
	counter(t, "allocscope_services_overflowed_total",
		"Processes profiled as service \"other\" because of limits.max_services.",
		(double)d->stats.services_overflowed);
	counter(t, "allocscope_label_values_truncated_total",
		"Label values cut to limits.max_label_value_bytes, or with bytes that were not UTF-8 "
		"replaced.",
		(double)d->stats.label_values_truncated);
	counter(t, "allocscope_profiles_built_total", "Interval profiles encoded.",
		(double)d->stats.profiles_built);
	counter(t, "allocscope_profile_encode_errors_total", "Interval profiles that failed to encode.",
		(double)d->stats.encode_errors);
	counter(t, "allocscope_profile_stacks_trimmed_total",
		"Distinct stacks folded into a \"(trimmed)\" frame to keep pushed profiles within "
		"their sink's max_samples and max_profile_size.",
		(double)d->stats.stacks_trimmed);
	counter(t, "allocscope_intervals_total", "Profiling intervals completed.",
		(double)d->stats.intervals);

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
	for (size_t m = 0; m < sizeof(sink_metrics) / sizeof(sink_metrics[0]); m++) {
		metrics_text__family(t, sink_metrics[m].name, sink_metrics[m].type,
				     sink_metrics[m].help);
		for (size_t i = 0; i < d->n_sinks; i++) {
			const char *type = sink__type(d->sinks[i]), *name = sink__name(d->sinks[i]);
			const char *const labels[] = { "sink", type,
						       strcmp(name, type) ? "name" : NULL, name,
						       NULL };
			struct sink_stats stats;
			uint64_t value;

			if (!sink_totals(d, i, &stats))
				continue;
			memcpy(&value, (const char *)&stats + sink_metrics[m].offset, sizeof(value));
			metrics_text__sample(t, sink_metrics[m].name, labels, (double)value);
		}
	}
	metrics_text__family(t, "allocscope_sink_push_duration_seconds_total", "counter",
			     "Time spent in successful pushes; divided by the profiles written, the "
			     "mean push latency.");
	for (size_t i = 0; i < d->n_sinks; i++) {
		const char *type = sink__type(d->sinks[i]), *name = sink__name(d->sinks[i]);
		const char *const labels[] = { "sink", type, strcmp(name, type) ? "name" : NULL,
					       name, NULL };
		struct sink_stats stats;

		if (!sink_totals(d, i, &stats))
			continue;
		metrics_text__sample(t, "allocscope_sink_push_duration_seconds_total", labels,
				     (double)stats.push_ns / 1e9);
	}
	metrics_text__family(t, "allocscope_config_reloads_total", "counter",
			     "Configuration reloads (SIGHUP), by result.");
	metrics_text__sample(t, "allocscope_config_reloads_total",
			     (const char *const[]){ "result", "success", NULL },
			     (double)d->stats.reloads_ok);
	metrics_text__sample(t, "allocscope_config_reloads_total",
			     (const char *const[]){ "result", "failure", NULL },
			     (double)d->stats.reloads_failed);
	render_kubernetes_metrics(d, t);
	if (d->metrics) {
		struct metrics_server_stats server;

		metrics_server__stats(d->metrics, &server);
		metrics_text__family(t, "allocscope_metrics_connections_dropped_total", "counter",
				     "Connections to this endpoint closed before their answer, "
				     "by reason.");
		metrics_text__sample(t, "allocscope_metrics_connections_dropped_total",
				     (const char *const[]){ "reason", "limit", NULL },
				     (double)server.closed_over_limit);
		metrics_text__sample(t, "allocscope_metrics_connections_dropped_total",
				     (const char *const[]){ "reason", "deadline", NULL },
				     (double)server.closed_at_deadline);
	}
	gauge(t, "allocscope_symbolizer_processes", "Processes the symbolizer holds maps of.",
	      (double)symbolizer__process_count(d->symbolizer));
	gauge(t, "allocscope_symbolizer_files", "ELF files the symbolizer holds parsed.",
	      (double)symbolizer__file_count(d->symbolizer));
	gauge(t, "allocscope_sample_rate_bytes", "Mean bytes between samples.",
	      (double)d->config->sampling.sample_rate);
	gauge(t, "allocscope_interval_seconds", "Profile interval.",
	      d->config->interval_ms / 1000.0);
	counter(t, "process_cpu_seconds_total", "User and system CPU time of the agent.", cpu);
	gauge(t, "process_resident_memory_bytes", "Resident memory of the agent.",
	      resident_bytes());
	gauge(t, "process_open_fds", "Open file descriptors of the agent.",
	      (double)count_open_fds());
}

static void publish_metrics(struct daemon *d)
{
	struct metrics_text text = { 0 };

	if (!d->metrics)
		return;
	render_metrics(d, &text);
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
		if (keep_stats) {
			struct sink_stats s;

			sink__stats(d->sinks[i], &s);
			d->stats.retired_sinks.profiles_written += s.profiles_written;
			d->stats.retired_sinks.bytes_written += s.bytes_written;
			d->stats.retired_sinks.errors += s.errors;
			d->stats.retired_sinks.profiles_dropped += s.profiles_dropped;
			d->stats.retired_sinks.files_removed += s.files_removed;
			/* keep_stats: a reload replaces it; a push sink with a spool closes at once */
			push_sink__retire(d->sinks[i]);
		}
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
	d->kube_seen_refreshes = d->kube_seen_answers = 0;
}

/* Sampling settings are baked into the loaded BPF program: a reload keeps the running ones. */
static void keep_sampling_settings(const struct agent_config *running, struct agent_config *next)
{
	const struct sampling_opts *now = &running->sampling;
	struct sampling_opts *then = &next->sampling;

	if (now->sample_rate != then->sample_rate || now->unwind != then->unwind ||
	    now->stack_copy_bytes != then->stack_copy_bytes ||
	    now->ringbuf_bytes != then->ringbuf_bytes)
		log_warn("reload: sampling.* settings change only on restart; keeping the running "
			 "ones");
	then->sample_rate = now->sample_rate;
	then->unwind = now->unwind;
	then->stack_copy_bytes = now->stack_copy_bytes;
	then->ringbuf_bytes = now->ringbuf_bytes;
}

/* Rules changed: drop what is no longer a target, move what changed service, add what newly
 * matches. */
static void reapply_rules(struct daemon *d)
{
	drain_samples(d);
	for (size_t b = 0; b < PROCESS_BUCKETS; b++) {
		struct tracked_process *p = d->buckets[b], *next;

		for (; p; p = next) {
			next = p->next;
			redecide_tracked(d, p);
		}
	}
	/* Processes waiting for their pod are decided with the new rules when it comes; those
	 * decided without it are decided again now, like every other untracked process. */
	scan_processes(d);
}

static void *load_config_thread(void *arg)
{
	struct config_loader *l = arg;
	uint64_t one = 1;

	l->err[0] = '\0';
	l->next = NULL;
	l->ret = config_load_file(l->path, &l->next, l->err, sizeof(l->err));
	if (l->ret == -ENOENT && l->path_is_default)
		l->ret = config_defaults(&l->next);
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
	l->path_is_default = d->path_is_default;
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
	if (kube_changed) {
		free_kube_pods(d);
		d->kube = kube;
		/* Without a pod cache nothing would ever answer the waiting decisions. */
		if (!d->kube)
			clear_pod_waits(d);
	}
	apply_log_level(d);
	reapply_rules(d);
	d->stats.reloads_ok++;
	log_info("reloaded: profiling %zu processes in %zu services", d->n_processes,
		 d->n_services);
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
		wanted += POD_WAITS_MAX; /* a pidfd per entry of the pod wait table */

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

/* The sampling pipeline (BPF program, reader, unwinder, symbolizer), then down to the
 * capabilities the agent keeps for life: before any thread starts, since each thread has its
 * own. */
static int load_bpf(struct daemon *d)
{
	char err[512] = "";
	int ret;

	ret = pipeline__open(&d->config->sampling, NULL, on_sample, d, &d->pipeline, err,
			     sizeof(err));
	if (!ret) {
		d->program = pipeline__program(d->pipeline);
		d->symbolizer = pipeline__symbolizer(d->pipeline);
	}
	if (!ret)
		ret = privileges__keep_needed(PRIVILEGES_AGENT,
					      !alloc_program__has_multi(d->program), err,
					      sizeof(err));
	if (ret)
		log_error("%s", err);
	return ret;
}

static int load_program(struct daemon *d)
{
	char err[512] = "";
	int ret;

	ret = probe_cost__measure(d->program, &d->probe_cost_ns);
	if (ret)
		log_warn("cannot measure the probe cost (%s): overhead estimates read 0",
			 strerror(-ret));
	else
		log_info("one probe hit costs %.0f ns on this machine", d->probe_cost_ns);
	d->calibration_hits = alloc_program__probe_hits(d->program);
	ret = process_events__new(alloc_program__process_events_fd(d->program), &d->events);
	if (ret)
		return ret;
	ret = detach_queue__new(DETACH_WORKERS, &d->detacher);
	if (ret)
		return ret;
	ret = alloc_program__watch_processes(d->program, err, sizeof(err));
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
		int64_t now = now_ms();
		int64_t deadline = d->interval_start_ms + (int64_t)d->config->interval_ms;
		int64_t retry = next_retry_ms(d);
		int timeout;
		int n;

		if (d->next_drain_ms < deadline)
			deadline = d->next_drain_ms;
		if (d->metrics && d->next_publish_ms < deadline)
			deadline = d->next_publish_ms;
		if (retry < deadline)
			deadline = retry;
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
			else if (tag & POD_WAIT_TAG)
				handle_pod_wait_exit(d, (pid_t)(uint32_t)tag);
			else if (tag & PID_TAG)
				handle_exit(d, (pid_t)(uint32_t)tag);
		}
		now = now_ms();
		if (now >= d->next_drain_ms) {
			drain_samples(d);
			d->next_drain_ms = now + DRAIN_INTERVAL_MS;
		}
		retry_waiting(d, now);
		poll_pods(d, now);
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
	if (d->pipeline && d->events && d->sinks)
		flush_interval(d, now_ms());
	cancel_loader(d); /* a reload still loading is dropped */
	if (d->loader.done_fd >= 0)
		close(d->loader.done_fd);
	for (size_t b = 0; b < PROCESS_BUCKETS; b++) {
		while (d->buckets[b])
			release_process(d, d->buckets[b]);
	}
	clear_pod_waits(d);
	free_kube_pods(d);
	detach_queue__free(d->detacher); /* waits until every probe is gone */
	d->detacher = NULL;
	while (d->services) {
		struct service *s = d->services;

		d->services = s->next;
		free_service(s);
	}
	free_sinks(d, false);
	metrics_server__free(d->metrics);
	process_events__free(d->events);
	pipeline__close(d->pipeline);
	if (d->epoll_fd >= 0)
		close(d->epoll_fd);
	if (d->signal_fd >= 0)
		close(d->signal_fd);
	free(d->forget);
	config_free(d->config);
}

static int load_config(const char *path, bool path_is_default, struct agent_config **out)
{
	char err[1024] = "";
	int ret = config_load_file(path, out, err, sizeof(err));

	if (ret == -ENOENT && path_is_default) {
		log_info("no %s: running with the built-in defaults", path);
		return config_defaults(out);
	}
	if (ret)
		log_error("%s", err);
	return ret;
}

int daemon_check_config(const char *config_path, bool path_is_default)
{
	struct agent_config *config;
	char err[1024] = "";
	int ret = config_load_file(config_path, &config, err, sizeof(err));

	if (ret == -ENOENT && path_is_default) {
		printf("%s does not exist: the agent would run with the built-in defaults\n",
		       config_path);
		return 0;
	}
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

int daemon_run(const char *config_path, bool path_is_default, int log_level_override)
{
	struct daemon d = {
		.config_path = config_path,
		.path_is_default = path_is_default,
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
	if (load_config(config_path, path_is_default, &d.config) != 0)
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
	if (load_program(&d) != 0)
		goto out;
	if (watch(&d, pipeline__fd(d.pipeline), TAG_SAMPLES) ||
	    watch(&d, process_events__fd(d.events), TAG_EVENTS) ||
	    watch(&d, d.signal_fd, TAG_SIGNALS) || watch(&d, d.loader.done_fd, TAG_RELOAD)) {
		log_error("cannot set up the event loop: %s", strerror(errno));
		goto out;
	}
	d.interval_start_ms = now_ms();
	d.interval_start_wall_ns = wall_ns();
	d.next_drain_ms = d.interval_start_ms + DRAIN_INTERVAL_MS;
	scan_processes(&d);
	/* Exec notices queued during the scan are handled in the loop; a process seen twice is
	 * tracked once. */
	units_format_size((double)d.config->sampling.sample_rate, rate, sizeof(rate));
	log_info("agent ready: profiling %zu processes in %zu services, sampling every %s, "
		 "a profile per service every %.0fs (configuration: %s)",
		 d.n_processes, d.n_services, rate, d.config->interval_ms / 1000.0,
		 d.config->source);
	publish_metrics(&d);
	d.next_publish_ms = now_ms() + PUBLISH_INTERVAL_MS;
	run_loop(&d);
	status = 0;
out:
	shut_down(&d);
	return status;
}
