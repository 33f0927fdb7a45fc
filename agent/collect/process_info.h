/* The facts about a process that target rules and service names are decided from, read from
 * /proc: executable path, process name, cgroup and the systemd unit that owns it. */
#ifndef ALLOCSCOPE_PROCESS_INFO_H
#define ALLOCSCOPE_PROCESS_INFO_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct process_info {
	pid_t pid;
	char exe[PATH_MAX];  /* readlink(/proc/PID/exe), " (deleted)" stripped; "" if unreadable */
	char comm[16];       /* /proc/PID/comm without the newline */
	char cgroup[1024];   /* cgroup v2 path ("0::" line), else the v1 name=systemd path; "" */
	char unit[256];      /* deepest path component ending in .service or .scope; "" */
	bool kernel_thread;  /* no executable, PF_KTHREAD: never a target */
};

/* Reads /proc/PID (proc_root is "/proc" except in tests). Returns 0; -ESRCH when the process
 * is gone; -errno for other failures. A process whose exe cannot be read (permission) still
 * returns 0 with exe "". */
int process_info__read(const char *proc_root, pid_t pid, struct process_info *out);

/* The systemd unit that owns a cgroup path: its deepest component ending in ".service" or
 * ".scope" ("/system.slice/redis-server.service" -> "redis-server.service",
 * "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service" -> "foo.service").
 * Writes "" when there is none. */
void process_info__unit_of_cgroup(const char *cgroup, char *unit, size_t len);

/* Parses /proc/PID/cgroup content: the "0::" (v2) path when present, else the path of the
 * "name=systemd" (v1) hierarchy, else "". */
void process_info__parse_cgroup(const char *content, char *path, size_t len);

#endif
