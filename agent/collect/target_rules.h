/* Which processes the continuous agent profiles and under which service name. A process is a
 * target when it matches at least one include rule (or there are none) and no exclude rule;
 * the agent itself and kernel threads never are. Pure matching over facts read from /proc
 * and, for processes in a Kubernetes pod, the pod's metadata (collect/process_info.h), so it
 * is unit-tested without privileges. */
#ifndef ALLOCSCOPE_TARGET_RULES_H
#define ALLOCSCOPE_TARGET_RULES_H

#include <stdbool.h>
#include <stddef.h>

struct process_info;

/* Every field given must match (AND); NULL fields match anything. A rule with no matcher is
 * rejected by the configuration loader. */
struct target_rule {
	char *service;      /* service name for what this rule matches; NULL: derived */
	char *executable;   /* fnmatch(3) glob on the executable path as the process sees it */
	char *process_name; /* fnmatch(3) glob on the process name (comm, at most 15 chars) */
	char *cgroup;       /* cgroup path prefix, whole components: "/system.slice" matches
			       "/system.slice/a.service" and itself, not "/system.slice2" */
	char *systemd_unit; /* fnmatch(3) glob on the systemd unit, e.g. "redis*.service" */
	/* Pod matchers: they never match a process whose pod is unknown (process->pod NULL). */
	char *namespace_name; /* fnmatch(3) glob on the pod's namespace */
	char *pod_label;      /* "KEY=VALUE": the pod has label KEY (exact) and its value matches
				 the fnmatch(3) glob VALUE; the loader checks the form */
	char *container;      /* fnmatch(3) glob on the container's name in the pod spec */
	/* Labels of what the rule's processes run (include rules only; NULL: none). version
	 * goes first in the service_version order (collect/service_version.h); repository,
	 * git_ref and root_path become service_repository, service_git_ref and
	 * service_root_path, the labels Pyroscope's source code integration reads. */
	char *version;
	char *repository;
	char *git_ref;
	char *root_path;
	bool inuse;           /* include rules: in-use profiles for the processes it matches */
	/* Not a matcher: the overhead budget (percent) of the processes this include rule
	 * matches; 0: the host-wide overhead.max_cpu_percent; -1: none. */
	double max_cpu_percent;
};

struct target_rules {
	struct target_rule *include; /* none: every process */
	size_t n_include;
	struct target_rule *exclude;
	size_t n_exclude;
};

/* Decides for one process. Returns true when it is a target, with its service name in
 * service (always NUL-terminated, truncated to len): the first matching include rule's
 * `service`, else target_rules__default_service. */
bool target_rules__match(const struct target_rules *rules, const struct process_info *process,
			 char *service, size_t len);

/* The include rule that takes the process (the first that matches), when it is a target and
 * there are include rules; NULL otherwise. Same decision as target_rules__match. */
const struct target_rule *target_rules__matching_rule(const struct target_rules *rules,
						      const struct process_info *process);
/* Whether a target's in-use profiles are on: its first matching include rule says inuse
 * (false without include rules). The rest of the decision is target_rules__match's. */
bool target_rules__inuse(const struct target_rules *rules, const struct process_info *process);
/* Whether any include rule asks for in-use profiles (the agent then tracks live allocations). */
bool target_rules__any_inuse(const struct target_rules *rules);
/* The overhead budget the first matching include rule sets for a target: its
 * max_cpu_percent (-1: none), or 0 when it sets none (or no include rule matches): the
 * host-wide overhead.max_cpu_percent applies. */
double target_rules__max_cpu_percent(const struct target_rules *rules,
				     const struct process_info *process);

/* The service name a process gets when no rule names one: for a process in a known pod, the
 * pod's service name (its pyroscope.io/service_name annotation, else NAMESPACE/CONTAINER);
 * else the systemd unit without its ".service" suffix (only for .service units), else the
 * executable's base name, else the process name. */
void target_rules__default_service(const struct process_info *process, char *service,
				   size_t len);

/* This module owns struct target_rule: the configuration loader fills rules (every string
 * malloc'd) and frees them only through these. */
/* Frees every string of n rules and the array. Accepts NULL. */
void target_rules__free_list(struct target_rule *rules, size_t n);
/* Frees every string of every rule and the arrays; the struct itself is the caller's.
 * Accepts NULL and zeroes what it frees. */
void target_rules__clear(struct target_rules *rules);

#endif
