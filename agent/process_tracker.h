/* The continuous agent's processes: which are targets (the rules, the pod), attaching to each
 * and following them through fork, exec and exit, and the decisions that wait for a pod.
 *
 * Each target is tracked with a pidfd in the agent's epoll set (exits are never confused with
 * a reused pid) and its probes; exec and fork notices come from the kernel, so a new process is
 * attached within milliseconds. Right after exec the dynamic loader has not mapped libc yet, so
 * attaching retries on a short backoff until the allocator appears. Before any process is
 * released (exit, exec, rules changed) the sample ring is drained through deps.drain, so its
 * last samples still land in its service; its symbolization state is forgotten only when
 * process_tracker__forget_released is called, after the interval's profiles are written.
 *
 * With a pod cache, a process in a container is decided with its pod's metadata; one in a
 * container the cache does not know yet waits in the pod wait table (collect/pod_waits.h). */
#ifndef ALLOCSCOPE_PROCESS_TRACKER_H
#define ALLOCSCOPE_PROCESS_TRACKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "services.h"

struct detach_queue;
struct kube_pods;
struct pipeline;
struct process_event;
struct alloc_sample;
struct target_rules;

/* epoll data of the tracker's descriptors: tag | pid. The caller's own tags stay below 2^32. */
#define PROCESS_TRACKER_PID_TAG	     (1ull << 32)
#define PROCESS_TRACKER_POD_WAIT_TAG (1ull << 33)
/* At most this many processes wait for their pod (each holds a pidfd); past it they are decided
 * without their pod at once, counted. */
#define PROCESS_TRACKER_POD_WAITS_MAX 1024

/* What the tracker works with; borrowed for its life. */
struct process_tracker_deps {
	struct pipeline *pipeline; /* attaches through its program; snapshots and forgets
				      processes in its symbolizer and unwinder */
	struct detach_queue *detacher;
	struct services *services;
	int epoll_fd;
	pid_t self; /* never a target */
	/* Reads the sample ring empty; called before processes are released. */
	void (*drain)(void *ctx);
	void *drain_ctx;
	/* Overhead budget: adds a held sample of a duty-cycled process to its service's
	 * profile, weighted scale times (attach/duty_cycle.h); the calibrated cost of a hit. */
	int (*add_scaled)(const struct alloc_sample *sample, double scale, void *ctx);
	void *add_ctx;
	double ns_per_hit;
};

/* The settings it decides with; replaced on reload (process_tracker__configure). */
struct process_tracker_settings {
	const struct target_rules *targets;
	unsigned max_processes;
	struct service_limits services;
	struct kube_pods *kube; /* NULL unless kubernetes.enabled */
	double max_cpu_percent; /* overhead.max_cpu_percent: -1 none; a rule's may override it */
};

enum process_not_profiled {
	PROCESS_NOT_PROFILED_UNSUPPORTED, /* another allocator (jemalloc, tcmalloc, ...) */
	PROCESS_NOT_PROFILED_NO_ALLOCATOR,
	PROCESS_NOT_PROFILED_OVER_LIMIT,
	PROCESS_NOT_PROFILED_ERROR,
	PROCESS_NOT_PROFILED__COUNT,
};
extern const char *const process_not_profiled_names[PROCESS_NOT_PROFILED__COUNT];

/* Why a process in a container was decided without its pod. */
enum pod_unknown_reason {
	POD_UNKNOWN_NOT_LISTED, /* the API lists no pod with this container on this node */
	POD_UNKNOWN_TIMEOUT,    /* no refresh succeeded in time */
	POD_UNKNOWN_TOO_MANY,   /* the wait table was full */
	POD_UNKNOWN__COUNT,
};
extern const char *const pod_unknown_names[POD_UNKNOWN__COUNT];

/* Overhead budget: duty-cycled processes now, of them those throttled, and the lowest
 * fraction among them (1 when none). */
struct process_tracker_budget {
	size_t budgeted, throttled;
	double min_fraction;
};

struct process_tracker_stats {
	size_t processes, waiting; /* tracked; of them, waiting for their allocator */
	size_t probes, probe_links;
	size_t pod_waiting;        /* decisions waiting for a pod */
	uint64_t attaches;
	uint64_t not_profiled[PROCESS_NOT_PROFILED__COUNT];
	uint64_t pod_unknown[POD_UNKNOWN__COUNT];
	uint64_t pods_found_late;  /* decided again when a later refresh listed the pod */
};

struct process_tracker;

int process_tracker__new(const struct process_tracker_deps *deps,
			 const struct process_tracker_settings *settings,
			 struct process_tracker **out);
/* Releases every process (detaches through the detach queue; no drain) and every pod wait.
 * Accepts NULL. */
void process_tracker__free(struct process_tracker *t);

/* New settings (a reload): a new pod cache forgets what the old one was asked; without one,
 * the decisions waiting for a pod are dropped. Call process_tracker__reapply next. */
void process_tracker__configure(struct process_tracker *t,
				const struct process_tracker_settings *settings);
/* Decides every tracked process again (released, moved to another service), then scans /proc
 * for processes that became targets. */
void process_tracker__reapply(struct process_tracker *t);

/* Looks at every process in /proc. */
void process_tracker__scan(struct process_tracker *t);
/* A batch of exec and fork notices, in order. */
void process_tracker__on_events(struct process_tracker *t, const struct process_event *batch,
				size_t n);
/* An epoll event with a tracker tag (a pidfd became readable: the process exited). False
 * when tag is not the tracker's. */
bool process_tracker__on_epoll(struct process_tracker *t, uint64_t tag);
/* Attaches processes whose next look for their allocator is due; returns when the next one
 * is (INT64_MAX when none waits). */
void process_tracker__retry_attaches(struct process_tracker *t, int64_t now_ms);
int64_t process_tracker__next_retry_ms(const struct process_tracker *t);
/* Decisions waiting for a pod, after the pod cache answered or at their deadline. */
void process_tracker__poll_pods(struct process_tracker *t, int64_t now_ms);

/* The service of a tracked process; NULL when pid is not tracked. */
struct service *process_tracker__service_of(struct process_tracker *t, pid_t pid);
/* Whether pid's probes are under a duty cycle now (the overhead budget): its in-use is
 * unknown then (its frees go unseen while detached) and left out of snapshots. */
bool process_tracker__throttled(struct process_tracker *t, pid_t pid);
/* Forgets the symbolization state of the processes released since the last call (unless
 * their pid is tracked again). */
void process_tracker__forget_released(struct process_tracker *t);

void process_tracker__stats(const struct process_tracker *t, struct process_tracker_stats *out);

/* Overhead budget. hold_sample: a sample of a throttled process is held until its period
 * ends (true), else the caller adds it as usual (false). tick_budgets moves the duty cycles on
 * (call after draining) and returns when it next needs a call (INT64_MAX: none). */
bool process_tracker__hold_sample(struct process_tracker *t, const struct alloc_sample *sample);
int64_t process_tracker__tick_budgets(struct process_tracker *t, int64_t now);
void process_tracker__budget(const struct process_tracker *t, struct process_tracker_budget *out);

#endif
