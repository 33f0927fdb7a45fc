/* Target rules applied to one process's facts: include rules (none means every process), then
 * exclude rules, then the service name. Pure string matching, no system calls, so the daemon
 * can re-decide every tracked process on each configuration reload.
 *
 * The agent's own process is not excluded here: the facts carry nothing that identifies it
 * reliably (another copy of the binary could run as a target), so callers compare pids before
 * asking.
 *
 * Globs are fnmatch(3) with flags 0, the shell syntax the configuration reference describes,
 * except that '*' and '?' also match '/': "/opt/app*" matches "/opt/app/bin/server" as well
 * as "/opt/app-2". FNM_PATHNAME would make users spell out every directory level of trees
 * such as /usr/lib/jvm, and a pattern that matches more is easier to notice and narrow than
 * one that silently profiles nothing. A leading '.' is not special and '\' escapes the next
 * character.
 *
 * Pod matchers (namespace, pod_label, container) read the pod metadata the agent attached to
 * the facts; without it (a host process, a pod not listed yet) they do not match. */
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "kube_pods.h"
#include "process_info.h"
#include "target_rules.h"

static void copy_truncated(char *dst, size_t len, const char *src, size_t n)
{
	if (len == 0)
		return;
	if (n > len - 1)
		n = len - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

static bool glob_matches(const char *pattern, const char *text)
{
	/* An unknown fact ("" when /proc would not tell) matches no pattern, not even "*":
	 * a rule about executables must not catch processes whose executable is hidden. */
	return text[0] != '\0' && fnmatch(pattern, text, 0) == 0;
}

/* Prefix on whole components: "/system.slice" and "/system.slice/" match "/system.slice" and
 * everything under it, never "/system.slice2"; "/" matches every cgroup. */
static bool cgroup_under(const char *rule_path, const char *cgroup)
{
	size_t n = strlen(rule_path);

	if (cgroup[0] != '/')
		return false;
	while (n > 0 && rule_path[n - 1] == '/')
		n--;
	if (strncmp(cgroup, rule_path, n) != 0)
		return false;
	return cgroup[n] == '\0' || cgroup[n] == '/';
}

/* "KEY=VALUE": the label KEY exists and its value matches the glob VALUE ("" included: a
 * label may be set to ""). The loader guarantees the '='. */
static bool pod_label_matches(const char *selector, const struct kube_container *pod)
{
	const char *equals = strchr(selector, '=');
	size_t key_len = equals ? (size_t)(equals - selector) : strlen(selector);
	const char *value_glob = equals ? equals + 1 : "*";

	for (size_t i = 0; i < pod->n_labels; i++) {
		const char *key = pod->labels[i].key;

		if (strlen(key) == key_len && memcmp(key, selector, key_len) == 0)
			return fnmatch(value_glob, pod->labels[i].value, 0) == 0;
	}
	return false;
}

/* The pod matchers, when the rule has any: all of them, on a known pod. */
static bool pod_rule_matches(const struct target_rule *rule, const struct kube_container *pod)
{
	if (!rule->namespace_name && !rule->pod_label && !rule->container)
		return true;
	/* Outside Kubernetes, or a pod the API never listed: a rule about pods says nothing
	 * about this process, so it does not match (as an unreadable executable does not). */
	if (!pod)
		return false;
	if (rule->namespace_name && !glob_matches(rule->namespace_name, pod->namespace_name))
		return false;
	if (rule->container && !glob_matches(rule->container, pod->container))
		return false;
	if (rule->pod_label && !pod_label_matches(rule->pod_label, pod))
		return false;
	return true;
}

static bool rule_matches(const struct target_rule *rule, const struct process_info *process)
{
	if (rule->executable && !glob_matches(rule->executable, process->exe))
		return false;
	/* comm is matched even when empty, unlike the other facts: the kernel always has one,
	 * and "" is what a process that set an empty name really is called. */
	if (rule->process_name && fnmatch(rule->process_name, process->comm, 0) != 0)
		return false;
	if (rule->cgroup && !cgroup_under(rule->cgroup, process->cgroup))
		return false;
	if (rule->systemd_unit && !glob_matches(rule->systemd_unit, process->unit))
		return false;
	return pod_rule_matches(rule, process->pod);
}

bool target_rules__match(const struct target_rules *rules, const struct process_info *process,
			 char *service, size_t len)
{
	const struct target_rule *included_by = NULL;

	copy_truncated(service, len, "", 0);
	/* Kernel threads run no user-space allocator to attach to. */
	if (process->kernel_thread)
		return false;
	if (rules->n_include > 0) {
		for (size_t i = 0; i < rules->n_include && !included_by; i++) {
			if (rule_matches(&rules->include[i], process))
				included_by = &rules->include[i];
		}
		if (!included_by)
			return false;
	}
	for (size_t i = 0; i < rules->n_exclude; i++) {
		if (rule_matches(&rules->exclude[i], process))
			return false;
	}
	/* The first matching rule decides alone: a later rule naming a service does not apply
	 * to a process an earlier, unnamed rule already took, so rule order is all a reader of
	 * the configuration needs to follow. */
	if (included_by && included_by->service)
		copy_truncated(service, len, included_by->service, strlen(included_by->service));
	else
		target_rules__default_service(process, service, len);
	return true;
}

const struct target_rule *target_rules__matching_rule(const struct target_rules *rules,
						      const struct process_info *process)
{
	char service[8];

	if (!target_rules__match(rules, process, service, sizeof(service)))
		return NULL;
	for (size_t i = 0; i < rules->n_include; i++) {
		if (rule_matches(&rules->include[i], process))
			return &rules->include[i];
	}
	return NULL;
}

double target_rules__max_cpu_percent(const struct target_rules *rules,
				     const struct process_info *process)
{
	for (size_t i = 0; i < rules->n_include; i++)
		if (rule_matches(&rules->include[i], process))
			return rules->include[i].max_cpu_percent;
	return 0;
}

void target_rules__default_service(const struct process_info *process, char *service,
				   size_t len)
{
	size_t unit_len = strlen(process->unit);
	size_t suffix_len = strlen(".service");
	const char *base;

	/* A pod's own name for itself (its annotation), or what kubectl shows: the same name
	 * for every replica, on every node. */
	if (process->pod) {
		copy_truncated(service, len, process->pod->service_name,
			       strlen(process->pod->service_name));
		return;
	}
	/* A .service unit is what operators already call the service; a .scope is a transient
	 * group (a login session, a container) whose name says nothing stable. */
	if (unit_len > suffix_len &&
	    strcmp(process->unit + unit_len - suffix_len, ".service") == 0) {
		copy_truncated(service, len, process->unit, unit_len - suffix_len);
		return;
	}
	base = strrchr(process->exe, '/');
	base = base ? base + 1 : process->exe;
	if (base[0] != '\0') {
		copy_truncated(service, len, base, strlen(base));
		return;
	}
	if (process->comm[0] != '\0') {
		copy_truncated(service, len, process->comm,
			       strnlen(process->comm, sizeof(process->comm)));
		return;
	}
	copy_truncated(service, len, "unknown", strlen("unknown"));
}

void target_rules__free_list(struct target_rule *rules, size_t n)
{
	if (!rules)
		return;
	for (size_t i = 0; i < n; i++) {
		free(rules[i].service);
		free(rules[i].executable);
		free(rules[i].process_name);
		free(rules[i].cgroup);
		free(rules[i].systemd_unit);
		free(rules[i].namespace_name);
		free(rules[i].pod_label);
		free(rules[i].container);
		free(rules[i].version);
		free(rules[i].repository);
		free(rules[i].git_ref);
		free(rules[i].root_path);
	}
	free(rules);
}

void target_rules__clear(struct target_rules *rules)
{
	if (!rules)
		return;
	target_rules__free_list(rules->include, rules->n_include);
	target_rules__free_list(rules->exclude, rules->n_exclude);
	rules->include = NULL;
	rules->n_include = 0;
	rules->exclude = NULL;
	rules->n_exclude = 0;
}

bool target_rules__inuse(const struct target_rules *rules, const struct process_info *process)
{
	for (size_t i = 0; i < rules->n_include; i++)
		if (rule_matches(&rules->include[i], process))
			return rules->include[i].inuse;
	return false;
}

bool target_rules__any_inuse(const struct target_rules *rules)
{
	for (size_t i = 0; i < rules->n_include; i++)
		if (rules->include[i].inuse)
			return true;
	return false;
}
