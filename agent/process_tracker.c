/* The agent's processes (process_tracker.h): a hash of tracked processes by pid, each with
 * its pidfd, probes, service and pod; deciding from /proc, the rules and the pod cache; and
 * the pod wait table for decisions that wait for a pod (collect/pod_waits.h). */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/syscall.h>

#include "util/log.h"
#include "pipeline.h"
#include "process_tracker.h"
#include "attach/alloc_program.h"
#include "attach/detach_queue.h"
#include "attach/duty_cycle.h"
#include "attach/process_probes.h"
#include "collect/container_id.h"
#include "collect/kube_pods.h"
#include "collect/pod_waits.h"
#include "collect/process_events.h"
#include "collect/process_info.h"
#include "collect/service_version.h"
#include "collect/target_rules.h"
#include "util/clock.h"

#define PROCESS_BUCKETS 4096

/* After exec, how long to wait before each new look for the allocator: the loader maps libc
 * within a millisecond or two; a program that never maps a known allocator is given up on
 * after ~10 s in total. */
static const int attach_retry_ms[] = { 2, 5, 10, 20, 50, 100, 250, 500, 1000, 2000, 6000 };
#define ATTACH_RETRIES (sizeof(attach_retry_ms) / sizeof(attach_retry_ms[0]))

/* How long the decision on a process in an unknown container may wait for its pod. The pod
 * cache answers "not a pod's" about 10 s after the first lookup when the API server answers;
 * this bound is for an API server that does not. */
#define POD_WAIT_MAX_MS 20000
/* How often waiting processes are checked against POD_WAIT_MAX_MS between refreshes. */
#define POD_WAIT_CHECK_MS 1000

const char *const process_not_profiled_names[PROCESS_NOT_PROFILED__COUNT] = {
	"unsupported_allocator", "no_allocator", "over_limit", "error",
};

const char *const pod_unknown_names[POD_UNKNOWN__COUNT] = {
	"not_listed", "timeout", "too_many_waiting",
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
	bool inuse;                    /* in-use profiles on (its include rule's inuse) */
	double budget;                 /* overhead budget in percent; <= 0: none */
	struct duty_cycle *duty;       /* with a budget, unless it samples in-process */
	bool throttled;                /* probed part of the time now */
};

struct process_tracker {
	struct process_tracker_deps deps;
	struct process_tracker_settings settings;
	struct tracked_process *buckets[PROCESS_BUCKETS];
	size_t n_processes, n_waiting, n_probes, n_probe_links;
	pid_t *forget; /* released pids whose symbols go at the next forget_released */
	size_t n_forget, cap_forget;
	struct pod_waits *pod_waits;
	bool over_limit_warned;
	struct process_tracker_stats stats; /* its counters; the gauges are filled on demand */
};

/* ---- services ----------------------------------------------------------------------- */

/* A pod container's label values in the SERVICE_LABEL_* order; all NULL without a pod. */
static void pod_label_values(const struct kube_container *pod,
			     const char *values[SERVICE_POD_LABELS])
{
	values[SERVICE_LABEL_NAMESPACE] = pod ? pod->namespace_name : NULL;
	values[SERVICE_LABEL_POD] = pod ? pod->pod : NULL;
	values[SERVICE_LABEL_CONTAINER] = pod ? pod->container : NULL;
	values[SERVICE_LABEL_NODE] = pod ? pod->node : NULL;
}

/* The service a new process goes to: by name and, for a pod's process, pod container, and by
 * what it runs: the version (collect/service_version.h) and the rule's code labels. */
static struct service *service_for(struct process_tracker *t, const char *wanted,
				   const struct kube_container *pod, const struct target_rule *rule,
				   pid_t pid)
{
	const char *values[SERVICE_POD_LABELS], *code[SERVICE_CODE_LABELS];
	char version[SERVICE_VERSION_MAX + 1], build_id[256] = "";
	enum service_version_source source;

	pod_label_values(pod, values);
	/* The build id is read only when nothing before it in the order gives a version. */
	source = service_version__pick(rule ? rule->version : NULL, pod, NULL, version,
				       sizeof(version));
	if (source == SERVICE_VERSION_NONE) {
		service_version__read_build_id(pid, build_id, sizeof(build_id));
		source = service_version__pick(NULL, pod, build_id, version, sizeof(version));
	}
	log_debug("pid %d: version %s from its %s", (int)pid, source ? version : "unknown",
		  service_version__source_name(source));
	code[SERVICE_CODE_VERSION] = version;
	code[SERVICE_CODE_REPOSITORY] = rule ? rule->repository : NULL;
	code[SERVICE_CODE_GIT_REF] = rule ? rule->git_ref : NULL;
	code[SERVICE_CODE_ROOT_PATH] = rule ? rule->root_path : NULL;
	return services__get_versioned(t->deps.services, wanted, values, code,
				       &t->settings.services);
}

/* ---- tracked processes ------------------------------------------------------------- */

static struct tracked_process **bucket_of(struct process_tracker *t, pid_t pid)
{
	return &t->buckets[(uint32_t)pid % PROCESS_BUCKETS];
}

static struct tracked_process *find_process(struct process_tracker *t, pid_t pid)
{
	for (struct tracked_process *p = *bucket_of(t, pid); p; p = p->next)
		if (p->pid == pid)
			return p;
	return NULL;
}

static void remember_to_forget(struct process_tracker *t, pid_t pid)
{
	if (t->n_forget == t->cap_forget) {
		size_t cap = t->cap_forget ? t->cap_forget * 2 : 64;
		pid_t *forget = realloc(t->forget, cap * sizeof(*forget));

		if (!forget)
			return; /* its symbols stay until the agent stops: memory, not correctness */
		t->forget = forget;
		t->cap_forget = cap;
	}
	t->forget[t->n_forget++] = pid;
}

/* Detaches and forgets a tracked process. The caller has drained the sample ring. */
static void release_process(struct process_tracker *t, struct tracked_process *p)
{
	struct tracked_process **link = bucket_of(t, p->pid);

	/* Its held samples first, while it can still be found (process_tracker__service_of). */
	duty_cycle__free(p->duty, monotonic_ms());
	p->duty = NULL;
	while (*link != p)
		link = &(*link)->next;
	*link = p->next;
	epoll_ctl(t->deps.epoll_fd, EPOLL_CTL_DEL, p->pidfd, NULL);
	close(p->pidfd);
	if (p->probes) {
		t->n_probes -= process_probes__count(p->probes);
		t->n_probe_links -= process_probes__links(p->probes);
		alloc_program__set_profiled(pipeline__program(t->deps.pipeline), p->pid, false);
		detach_queue__push(t->deps.detacher, p->probes);
		/* An exited (or no longer targeted) process's live set goes with it. */
		if (p->inuse)
			alloc_program__forget_live(pipeline__program(t->deps.pipeline), p->pid);
	}
	if (p->waiting)
		t->n_waiting--;
	if (p->snapshotted)
		remember_to_forget(t, p->pid);
	p->service->n_processes--;
	t->n_processes--;
	kube_container__free(p->pod);
	free(p);
}

static void snapshot_process(struct process_tracker *t, struct tracked_process *p)
{
	int ret = pipeline__add_process(t->deps.pipeline, p->pid);

	if (ret && ret != -ESRCH)
		log_warn("cannot read the memory map of pid %d: %s", (int)p->pid, strerror(-ret));
	p->snapshotted = true;
}

static void not_profiled(struct process_tracker *t, enum process_not_profiled reason)
{
	t->stats.not_profiled[reason]++;
}

/* Attaches now, or schedules another look when the allocator is not mapped yet. Returns
 * false when the process was released. */
static bool try_attach(struct process_tracker *t, struct tracked_process *p)
{
	struct alloc_program *prog = pipeline__program(t->deps.pipeline);
	char err[512] = "";
	uint32_t slot = 0;
	int ret;

	if (p->budget > 0 && t->deps.add_scaled && alloc_program__hit_slot_new(prog, &slot) != 0) {
		log_warn("pid %d (%s): every probe-hit slot is taken: its overhead budget is not "
			 "applied",
			 (int)p->pid, p->comm);
		slot = 0;
	}
	ret = process_probes__attach_with(prog, p->pid, NULL,
					  &(struct process_probes_opts){ .inuse = p->inuse,
									 .hit_slot = slot },
					  &p->probes, err, sizeof(err));
	if (ret == 0 && slot && !process_probes__cooperative(p->probes)) {
		struct duty_cycle_opts opts = {
			.budget = p->budget / 100.0,
			.ns_per_hit = t->deps.ns_per_hit,
			.period_ms = DUTY_CYCLE_PERIOD_MS,
			.add = t->deps.add_scaled,
			.add_ctx = t->deps.add_ctx,
			.inuse = p->inuse,
		};

		if (duty_cycle__new(prog, p->probes, p->pid, slot, &opts, monotonic_ms(),
				    &p->duty) == 0)
			slot = 0; /* the duty cycle's now */
	}
	alloc_program__hit_slot_free(prog, slot);
	if (ret == 0) {
		size_t stepped = process_probes__single_stepped(p->probes);

		if (p->waiting)
			t->n_waiting--;
		p->waiting = false;
		t->n_probes += process_probes__count(p->probes);
		t->n_probe_links += process_probes__links(p->probes);
		t->stats.attaches++;
		alloc_program__set_profiled(pipeline__program(t->deps.pipeline), p->pid, true);
		snapshot_process(t, p);
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
			t->n_waiting++;
		p->waiting = true;
		p->next_attempt_ms = monotonic_ms() + attach_retry_ms[p->attach_attempts++];
		log_debug("pid %d (%s): %s; looking again in %d ms", (int)p->pid, p->comm, err,
			  attach_retry_ms[p->attach_attempts - 1]);
		return true;
	}
	if (ret == -ENOTSUP) {
		log_info("pid %d (%s) is not profiled: %s", (int)p->pid, p->comm, err);
		not_profiled(t, PROCESS_NOT_PROFILED_UNSUPPORTED);
	} else if (ret == -ENOENT) {
		log_debug("pid %d (%s) is not profiled: no allocator allocscope knows is mapped",
			  (int)p->pid, p->comm);
		not_profiled(t, PROCESS_NOT_PROFILED_NO_ALLOCATOR);
	} else if (ret != -ESRCH) {
		log_warn("pid %d (%s) is not profiled: %s", (int)p->pid, p->comm, err);
		not_profiled(t, PROCESS_NOT_PROFILED_ERROR);
	}
	release_process(t, p);
	return false;
}

/* Tracks pid in the service named service_name (for pod's processes, that pod container's),
 * or in inherited when given: a forked worker stays in its parent's service. Takes pod. */
static void track_process(struct process_tracker *t, pid_t pid, const char *service_name,
			  const struct target_rule *rule, struct service *inherited,
			  struct kube_container *pod, const char *container_id, const char *comm,
			  bool inuse, double budget)
{
	struct tracked_process *p;
	struct epoll_event ev = { .events = EPOLLIN,
				  .data.u64 = PROCESS_TRACKER_PID_TAG | (uint32_t)pid };
	int pidfd;

	if (t->n_processes >= t->settings.max_processes) {
		not_profiled(t, PROCESS_NOT_PROFILED_OVER_LIMIT);
		if (!t->over_limit_warned)
			log_warn("already profiling %zu processes: pid %d (%s) and others past "
				 "the limit are not profiled (raise limits.max_processes)",
				 t->n_processes, (int)pid, comm);
		t->over_limit_warned = true;
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
		p->service = inherited ? inherited : service_for(t, service_name, pod, rule, pid);
	if (!p || !p->service || epoll_ctl(t->deps.epoll_fd, EPOLL_CTL_ADD, pidfd, &ev) != 0) {
		log_warn("cannot track pid %d: %s", (int)pid, p ? strerror(errno) : "out of memory");
		not_profiled(t, PROCESS_NOT_PROFILED_ERROR);
		free(p);
		close(pidfd);
		kube_container__free(pod);
		return;
	}
	p->pid = pid;
	p->pidfd = pidfd;
	p->pod = pod;
	p->budget = budget;
	snprintf(p->container_id, sizeof(p->container_id), "%s", container_id);
	snprintf(p->comm, sizeof(p->comm), "%s", comm);
	p->next = *bucket_of(t, pid);
	*bucket_of(t, pid) = p;
	p->service->n_processes++;
	t->n_processes++;
	p->inuse = inuse && alloc_program__tracks_live(pipeline__program(t->deps.pipeline));
	if (p->inuse)
		p->service->inuse = true;
	try_attach(t, p);
}

/* ---- pods ----------------------------------------------------------------------------- */





/* Watches a process in a container that was decided without its pod (unless it already is),
 * so that a refresh that lists the pod later decides it again. */
static void watch_for_pod(struct process_tracker *t, pid_t pid, const char *container_id)
{
	if (!t->settings.kube || !container_id[0] || pod_waits__find(t->pod_waits, pid))
		return;
	pod_waits__add(t->pod_waits, pid, container_id, true, monotonic_ms());
}

static void pod_unknown(struct process_tracker *t, const struct process_info *info,
			enum pod_unknown_reason reason)
{
	t->stats.pod_unknown[reason]++;
	log_debug("pid %d (%s): container %.12s is in no known pod (%s): deciding without pod "
		  "metadata",
		  (int)info->pid, info->comm, info->container.id, pod_unknown_names[reason]);
}

/* The pod of a process in a container. Returns 0 with *pod set (NULL: not in a container, or
 * Kubernetes is off), -EAGAIN while the cache does not know the container yet, -ENOENT when
 * it says the container is in no pod on this node, or another -errno. */
static int find_pod(struct process_tracker *t, const struct process_info *info,
		    struct kube_container **pod)
{
	int ret;

	*pod = NULL;
	if (!t->settings.kube || !info->container.id[0])
		return 0;
	ret = kube_pods__lookup(t->settings.kube, info->container.id, pod);
	if (ret && ret != -EAGAIN && ret != -ENOENT)
		log_warn("pid %d: cannot look up container %.12s: %s", (int)info->pid,
			 info->container.id, strerror(-ret));
	return ret;
}

/* ---- deciding ---------------------------------------------------------------------- */

/* Applies the rules to the facts (pod included, or NULL) and tracks a target. Takes pod. */
static void decide_process(struct process_tracker *t, struct process_info *info,
			   struct kube_container *pod)
{
	char service[1024];
	double budget;

	info->pod = pod;
	if (!target_rules__match(t->settings.targets, info, service, sizeof(service))) {
		kube_container__free(pod);
		return;
	}
	budget = target_rules__max_cpu_percent(t->settings.targets, info);
	if (budget == 0)
		budget = t->settings.max_cpu_percent;
	track_process(t, info->pid, service,
		      target_rules__matching_rule(t->settings.targets, info), NULL, pod,
		      info->container.id, info->comm, target_rules__inuse(t->settings.targets, info),
		      budget);
}

/* Decides from /proc (and the pod cache) whether pid is a target, and tracks it if so; or
 * lets the decision wait for the pod. */
static void consider_process(struct process_tracker *t, pid_t pid)
{
	struct kube_container *pod = NULL;
	struct process_info info;
	struct pod_wait *w;
	int ret;

	if (pid == t->deps.self || find_process(t, pid))
		return;
	w = pod_waits__find(t->pod_waits, pid);
	if (w && !w->decided)
		return; /* the pod cache will answer */
	if (process_info__read("/proc", pid, &info) != 0)
		return;
	if (w)
		/* Decided without its pod before: decided afresh now. */
		pod_waits__remove(t->pod_waits, w);
	ret = find_pod(t, &info, &pod);
	if (ret == -EAGAIN) {
		ret = pod_waits__add(t->pod_waits, pid, info.container.id, false, monotonic_ms());
		if (ret == 0)
			log_debug("pid %d (%s): container %.12s is not in the pod list yet: "
				  "deciding once it is",
				  (int)pid, info.comm, info.container.id);
		if (ret == 0 || ret == -ESRCH)
			return;
		pod_unknown(t, &info, POD_UNKNOWN_TOO_MANY);
		decide_process(t, &info, NULL);
		return;
	}
	if (ret) {
		pod_unknown(t, &info, POD_UNKNOWN_NOT_LISTED);
		watch_for_pod(t, pid, info.container.id);
	}
	decide_process(t, &info, pod);
}

/* Decides a tracked process again from fresh facts (rules or pod changed): released when no
 * longer a target, moved when its service changed. The caller has drained the sample ring. */
static void redecide_tracked(struct process_tracker *t, struct tracked_process *p)
{
	struct kube_container *pod = NULL;
	struct process_info info;
	char service[1024];
	struct service *s;

	if (process_info__read("/proc", p->pid, &info) != 0) {
		release_process(t, p);
		return;
	}
	if (!t->settings.kube) {
		kube_container__free(p->pod);
		p->pod = NULL;
	} else if (find_pod(t, &info, &pod) == 0 && pod) {
		kube_container__free(p->pod);
		p->pod = pod;
	}
	/* Not answered now (a pod cache just started): the metadata it had still holds. */
	if (!p->pod)
		watch_for_pod(t, p->pid, info.container.id);
	info.pod = p->pod;
	if (!target_rules__match(t->settings.targets, &info, service, sizeof(service))) {
		release_process(t, p);
		return;
	}
	s = service_for(t, service, p->pod, target_rules__matching_rule(t->settings.targets, &info),
			p->pid);
	if (s && s != p->service) {
		p->service->n_processes--;
		p->service = s;
		s->n_processes++;
	}
}

/* A waiting process after the pod cache changed, or at its deadline. */
static void retry_pod_wait(struct pod_wait *w, int64_t now, void *ctx)
{
	struct process_tracker *t = ctx;
	struct kube_container *pod = NULL;
	struct process_info info;
	int ret;

	if (process_info__read("/proc", w->pid, &info) != 0 || !pod_waits__alive(w)) {
		pod_waits__remove(t->pod_waits, w);
		return;
	}
	ret = find_pod(t, &info, &pod);
	if (ret == -EAGAIN && !pod_waits__expired(t->pod_waits, w, now))
		return;
	if (ret == 0) {
		/* Found, or no longer in a container at all. */
		pod_waits__remove(t->pod_waits, w);
		decide_process(t, &info, pod);
		return;
	}
	pod_unknown(t, &info, ret == -EAGAIN ? POD_UNKNOWN_TIMEOUT : POD_UNKNOWN_NOT_LISTED);
	pod_waits__set_decided(t->pod_waits, w);
	decide_process(t, &info, NULL);
}

/* A process decided without its pod, after a successful refresh: decided again once listed. */
static void recheck_pod_wait(struct pod_wait *w, void *ctx)
{
	struct process_tracker *t = ctx;
	struct kube_container *pod = NULL;
	struct tracked_process *p;
	pid_t pid = w->pid;

	if (kube_pods__lookup(t->settings.kube, w->container_id, &pod) != 0)
		return;
	log_info("pid %d: pod %s/%s is listed now: deciding again with its metadata", (int)pid,
		 pod->namespace_name, pod->pod);
	kube_container__free(pod);
	t->stats.pods_found_late++;
	pod_waits__remove(t->pod_waits, w);
	p = find_process(t, pid);
	if (p) {
		t->deps.drain(t->deps.drain_ctx);
		redecide_tracked(t, p);
	} else {
		consider_process(t, pid);
	}
}

void process_tracker__scan(struct process_tracker *t)
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
		consider_process(t, (pid_t)pid);
	}
	closedir(dir);
}

void process_tracker__retry_attaches(struct process_tracker *t, int64_t now)
{
	if (!t->n_waiting)
		return;
	for (size_t b = 0; b < PROCESS_BUCKETS; b++) {
		struct tracked_process *p = t->buckets[b], *next;

		for (; p; p = next) {
			next = p->next;
			if (!p->probes && p->next_attempt_ms <= now)
				try_attach(t, p);
		}
	}
}

int64_t process_tracker__next_retry_ms(const struct process_tracker *t)
{
	int64_t next = INT64_MAX;

	if (!t->n_waiting)
		return next;
	for (size_t b = 0; b < PROCESS_BUCKETS; b++)
		for (struct tracked_process *p = t->buckets[b]; p; p = p->next)
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

void process_tracker__on_events(struct process_tracker *t, const struct process_event *batch,
				size_t n)
{
	if (!n)
		return;
	/* Samples first: a process released below keeps what it allocated before. */
	t->deps.drain(t->deps.drain_ctx);
	for (size_t i = 0; i < n; i++) {
		const struct process_event *event = &batch[i];
		pid_t pid = (pid_t)event->pid;
		struct tracked_process *p = find_process(t, pid);

		if (event->type == PROCESS_EVENT_EXEC) {
			struct pod_wait *w = pod_waits__find(t->pod_waits, pid);

			/* A new image: decided afresh. */
			if (p)
				release_process(t, p);
			if (w)
				pod_waits__remove(t->pod_waits, w);
			consider_process(t, pid);
		} else if (event->type == PROCESS_EVENT_FORK && !p &&
			   !execs_later(batch, n, i, event->pid)) {
			struct tracked_process *parent = find_process(t, (pid_t)event->parent_pid);
			struct kube_container *pod = NULL;
			char comm[16];

			if (pid == t->deps.self)
				continue;
			/* The parent's decision waits for its pod, or may change when the pod is
			 * found: the child, in the same container, is decided the same way. */
			if (pod_waits__find(t->pod_waits, (pid_t)event->parent_pid)) {
				consider_process(t, pid);
				continue;
			}
			if (!parent)
				continue;
			/* A forked worker is its parent's image: same rules, same service. */
			process_info__read_comm(pid, comm, sizeof(comm));
			if (parent->pod && t->settings.kube &&
			    kube_pods__lookup(t->settings.kube, parent->container_id, &pod) != 0)
				pod = NULL;
			/* Its own live set: it inherits nothing tracked (keys are per pid). */
			track_process(t, pid, NULL, NULL, parent->service, pod,
				      parent->container_id, comm, parent->inuse, parent->budget);
		}
	}
}

static void handle_exit(struct process_tracker *t, pid_t pid)
{
	struct tracked_process *p = find_process(t, pid);

	if (!p)
		return;
	t->deps.drain(t->deps.drain_ctx);
	log_debug("pid %d (%s) exited", (int)pid, p->comm);
	release_process(t, p);
}

static void handle_pod_wait_exit(struct process_tracker *t, pid_t pid)
{
	struct pod_wait *w = pod_waits__find(t->pod_waits, pid);

	if (w)
		pod_waits__remove(t->pod_waits, w);
}

/* ---- the tracker's life -------------------------------------------------------------- */

int process_tracker__new(const struct process_tracker_deps *deps,
			 const struct process_tracker_settings *settings,
			 struct process_tracker **out)
{
	struct pod_waits_opts waits = {
		.epoll_fd = deps->epoll_fd,
		.epoll_tag = PROCESS_TRACKER_POD_WAIT_TAG,
		.max_entries = PROCESS_TRACKER_POD_WAITS_MAX,
		.max_wait_ms = POD_WAIT_MAX_MS,
		.check_ms = POD_WAIT_CHECK_MS,
	};
	struct process_tracker *t = calloc(1, sizeof(*t));
	int ret;

	*out = NULL;
	if (!t)
		return -ENOMEM;
	t->deps = *deps;
	t->settings = *settings;
	ret = pod_waits__new(&waits, &t->pod_waits);
	if (ret) {
		free(t);
		return ret;
	}
	*out = t;
	return 0;
}

void process_tracker__free(struct process_tracker *t)
{
	if (!t)
		return;
	for (size_t b = 0; b < PROCESS_BUCKETS; b++) {
		while (t->buckets[b])
			release_process(t, t->buckets[b]);
	}
	pod_waits__free(t->pod_waits);
	free(t->forget);
	free(t);
}

void process_tracker__configure(struct process_tracker *t,
				const struct process_tracker_settings *settings)
{
	if (settings->kube != t->settings.kube) {
		pod_waits__new_cache(t->pod_waits);
		/* Without a pod cache nothing would ever answer the waiting decisions. */
		if (!settings->kube)
			pod_waits__clear(t->pod_waits);
	}
	t->settings = *settings;
}

/* Rules changed: drop what is no longer a target, move what changed service, add what newly
 * matches. */
void process_tracker__reapply(struct process_tracker *t)
{
	t->deps.drain(t->deps.drain_ctx);
	for (size_t b = 0; b < PROCESS_BUCKETS; b++) {
		struct tracked_process *p = t->buckets[b], *next;

		for (; p; p = next) {
			next = p->next;
			redecide_tracked(t, p);
		}
	}
	/* Processes waiting for their pod are decided with the new rules when it comes; those
	 * decided without it are decided again now, like every other untracked process. */
	process_tracker__scan(t);
}

bool process_tracker__on_epoll(struct process_tracker *t, uint64_t tag)
{
	if (tag & PROCESS_TRACKER_POD_WAIT_TAG)
		handle_pod_wait_exit(t, (pid_t)(uint32_t)tag);
	else if (tag & PROCESS_TRACKER_PID_TAG)
		handle_exit(t, (pid_t)(uint32_t)tag);
	else
		return false;
	return true;
}

/* Called every turn of the loop: waiting decisions are retried when the pod cache answered a
 * request (or at their deadline), and processes decided without their pod are looked up again
 * after each successful refresh. */
void process_tracker__poll_pods(struct process_tracker *t, int64_t now)
{
	struct pod_waits_visit visit = {
		.retry = retry_pod_wait,
		.recheck = recheck_pod_wait,
		.ctx = t,
	};
	struct kube_pods_stats stats;

	if (!t->settings.kube)
		return;
	kube_pods__stats(t->settings.kube, &stats);
	pod_waits__poll(t->pod_waits, stats.refreshes, stats.refresh_errors, now, &visit);
}

struct service *process_tracker__service_of(struct process_tracker *t, pid_t pid)
{
	struct tracked_process *p = find_process(t, pid);

	return p ? p->service : NULL;
}

bool process_tracker__throttled(struct process_tracker *t, pid_t pid)
{
	struct tracked_process *p = find_process(t, pid);
	struct duty_cycle_stats st;

	if (!p || !p->duty)
		return false;
	duty_cycle__stats(p->duty, &st);
	return st.fraction < 1.0;
}

void process_tracker__forget_released(struct process_tracker *t)
{
	for (size_t i = 0; i < t->n_forget; i++) {
		if (find_process(t, t->forget[i]))
			continue; /* the pid came back as a new target: its snapshot is fresh */
		pipeline__remove_process(t->deps.pipeline, t->forget[i]);
	}
	t->n_forget = 0;
}

void process_tracker__stats(const struct process_tracker *t, struct process_tracker_stats *out)
{
	*out = t->stats;
	out->processes = t->n_processes;
	out->waiting = t->n_waiting;
	out->probes = t->n_probes;
	out->probe_links = t->n_probe_links;
	out->pod_waiting = pod_waits__waiting(t->pod_waits);
}

/* ---- overhead budget ---------------------------------------------------------------- */

bool process_tracker__hold_sample(struct process_tracker *t, const struct alloc_sample *sample)
{
	struct tracked_process *p = find_process(t, (pid_t)sample->pid);

	return p && p->duty &&
	       duty_cycle__hold(p->duty, sample, sizeof(*sample) + sample->stack_copy_bytes);
}

/* A process's duty cycle changed its fraction: said once when it starts or stops being
 * throttled, with the service and the way out. */
static void log_duty_change(struct process_tracker *t, struct tracked_process *p)
{
	struct duty_cycle_stats st;
	bool throttled;

	duty_cycle__stats(p->duty, &st);
	throttled = st.fraction < 1.0;
	if (throttled == p->throttled)
		return;
	p->throttled = throttled;
	if (throttled)
		log_info("service %s: pid %d (%s) is over its overhead budget (%.3g%% of its CPU): "
			 "probed %.1f%% of the time, its estimates scaled up to match (an "
			 "in-process sampler, liballocscope-sampler.so, costs almost nothing: "
			 "docs/operations.md)",
			 p->service->name, (int)p->pid, p->comm, p->budget, 100 * st.fraction);
	else
		log_info("service %s: pid %d (%s) is within its overhead budget again: probed all "
			 "the time",
			 p->service->name, (int)p->pid, p->comm);
}

int64_t process_tracker__tick_budgets(struct process_tracker *t, int64_t now)
{
	int64_t next = INT64_MAX;

	for (size_t b = 0; b < PROCESS_BUCKETS; b++) {
		for (struct tracked_process *p = t->buckets[b]; p; p = p->next) {
			struct process_probes *detached;
			char err[512];
			bool changed;
			int attach_error;
			int64_t when;

			if (!p->duty)
				continue;
			when = duty_cycle__tick(p->duty, now, &detached, &changed, &attach_error,
						err, sizeof(err));
			detach_queue__push(t->deps.detacher, detached);
			if (attach_error && attach_error != -ESRCH)
				log_warn("%s", err);
			if (changed)
				log_duty_change(t, p);
			if (p->throttled) {
				struct duty_cycle_stats st;

				duty_cycle__stats(p->duty, &st);
				if (!p->service->duty_fraction ||
				    st.fraction < p->service->duty_fraction)
					p->service->duty_fraction = st.fraction;
			}
			if (when < next)
				next = when;
		}
	}
	return next;
}

void process_tracker__budget(const struct process_tracker *t, struct process_tracker_budget *out)
{
	memset(out, 0, sizeof(*out));
	out->min_fraction = 1.0;
	for (size_t b = 0; b < PROCESS_BUCKETS; b++) {
		for (const struct tracked_process *p = t->buckets[b]; p; p = p->next) {
			struct duty_cycle_stats st;

			if (!p->duty)
				continue;
			out->budgeted++;
			duty_cycle__stats(p->duty, &st);
			if (st.fraction < out->min_fraction)
				out->min_fraction = st.fraction;
			out->throttled += st.fraction < 1.0;
		}
	}
}
