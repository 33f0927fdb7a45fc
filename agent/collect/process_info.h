/* The facts about a process that target rules and service names are decided from, read from
 * /proc: executable path, process name, cgroup, the systemd unit that owns it and the container
 * it runs in. The agent adds the container's pod (collect/kube_pods.h) when it knows it. */
#ifndef ALLOCSCOPE_PROCESS_INFO_H
#define ALLOCSCOPE_PROCESS_INFO_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "container_id.h"

struct kube_container;

struct process_info {
	pid_t pid;
	char exe[PATH_MAX];  /* readlink(/proc/PID/exe), " (deleted)" stripped; "" if unreadable */
	char comm[16];       /* /proc/PID/comm without the newline */
	char cgroup[1024];   /* cgroup v2 path ("0::" line), else the v1 name=systemd path; "" */
	char unit[256];      /* deepest path component ending in .service or .scope; "" */
	bool kernel_thread;  /* no executable, PF_KTHREAD: never a target */
	/* From the same cgroup file (collect/container_id.h); container.id is "" when the
	 * process is not in a container. */
	struct container_identity container;
	/* The pod container's Kubernetes metadata, borrowed: set by the caller after looking
	 * container.id up. NULL when not in a pod, not known (yet), or Kubernetes is off; rules
	 * about pods then do not match. process_info__read leaves it NULL. */
	const struct kube_container *pod;
};

/* Reads /proc/PID (proc_root is "/proc" except in tests). Returns 0; -ESRCH when the process
 * is gone; -errno for other failures. A process whose exe cannot be read (permission) still
 * returns 0 with exe "". The container is parsed from the cgroup file read once, so cgroup,
 * unit and container always describe the same moment. */
int process_info__read(const char *proc_root, pid_t pid, struct process_info *out);

/* The process name alone (/proc/PID/comm without the newline), "?" when it cannot be read,
 * for messages about processes whose other facts are not needed. */
void process_info__read_comm(pid_t pid, char *comm, size_t len);

/* The process (thread group) a thread id belongs to: *tgid == pid for a process itself.
 * Returns 0, -ESRCH when there is no such thread, or -errno. */
int process_info__read_tgid(pid_t pid, pid_t *tgid);

/* The systemd unit that owns a cgroup path: its deepest component ending in ".service" or
 * ".scope" ("/system.slice/redis-server.service" -> "redis-server.service",
 * "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service" -> "foo.service").
 * Writes "" when there is none. */
void process_info__unit_of_cgroup(const char *cgroup, char *unit, size_t len);

/* Parses /proc/PID/cgroup content: the "0::" (v2) path when present, else the path of the
 * "name=systemd" (v1) hierarchy, else "". */
void process_info__parse_cgroup(const char *content, char *path, size_t len);

#endif
