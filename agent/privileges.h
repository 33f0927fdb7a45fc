/* Who allocscope acts for, and with which capabilities.
 *
 * Run by root (sudo, the systemd unit, the DaemonSet) allocscope may profile any process. Run
 * by another user through a binary with file capabilities (setcap), it borrows privileges the
 * caller does not hold, and then acts only for that caller: it profiles only processes the
 * caller could debug (the kernel's own answer to opening /proc/PID/mem with the caller's
 * credentials), a command it starts runs with none of the borrowed capabilities, and the
 * host-wide agent is refused. Whoever started it, once attached it keeps only the
 * capabilities the rest of its life needs and sets no_new_privs. */
#ifndef ALLOCSCOPE_PRIVILEGES_H
#define ALLOCSCOPE_PRIVILEGES_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

enum privileges_role {
	PRIVILEGES_CAPTURE, /* one-off capture: --pid or -- COMMAND */
	PRIVILEGES_AGENT,   /* the continuous agent: every process its configuration selects */
};

/* Whether this process holds privileges its caller does not: the kernel marked the exec as
 * secure (AT_SECURE: file capabilities or set-id bits) for a caller other than root. */
bool privileges__borrowed(void);

/* The real uid and gid of the caller: what the BPF program compares a sampled process's
 * credentials with when privileges__borrowed(). */
void privileges__caller(uid_t *uid, gid_t *gid);

/* Refuses what must never run on borrowed privileges: a set-user-ID or set-group-ID
 * allocscope, and the agent started by a user other than root. 0 or -EPERM with a sentence
 * that says how to grant access safely. */
int privileges__check_start(enum privileges_role role, char *err, size_t err_len);

/* With borrowed privileges: 0 when the caller may read pid's memory (the kernel decides, as
 * it does for the caller's own debugger), -EPERM otherwise; -ESRCH when it is gone. pidfd
 * refers to pid and is how the answer is tied to that process and not a later one with the
 * same number. Always 0 for root. The calling thread's effective capabilities are lowered
 * for the check and restored after it. */
int privileges__may_profile(pid_t pid, int pidfd, char *err, size_t err_len);

/* In the child of -- COMMAND, before exec. With borrowed privileges: gives up every
 * capability (effective, permitted, inheritable, ambient) and sets no_new_privs, so the
 * command runs as its caller would run it, and set-id bits or file capabilities on it grant
 * nothing (as under a debugger). For root it does nothing. Only system calls: safe after
 * fork. 0 or -errno. */
int privileges__drop_for_command(void);

/* After start-up: keeps only the capabilities the role still needs, of those held (BPF,
 * PERFMON, SYS_PTRACE, DAC_READ_SEARCH, CHECKPOINT_RESTORE; SYS_ADMIN when keep_sys_admin,
 * for perf-event uprobes on kernels without uprobe_multi links; a capture also
 * DAC_OVERRIDE to write its profile where its caller asked and KILL to stop its command),
 * removes the rest from the effective, permitted, inheritable and ambient sets and, with
 * CAP_SETPCAP, from the bounding set, and sets no_new_privs. Capabilities belong to a thread:
 * call it before starting any. 0 or -errno with a sentence. */
int privileges__keep_needed(enum privileges_role role, bool keep_sys_admin, char *err,
			    size_t err_len);

#endif
