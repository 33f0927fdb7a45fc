/* Who allocscope acts for and which capabilities it keeps (see privileges.h).
 *
 * Capabilities are set with the raw capget/capset and prctl calls: five system calls do not
 * justify a library, and what they change is exactly what /proc/PID/status shows. Whether the
 * caller may profile a process is never decided here: with its borrowed capabilities lowered,
 * the thread opens /proc/PID/mem as the caller, and the kernel applies the same ptrace attach
 * check it applies to the caller's own debugger (uids, gids, the target's capabilities, its
 * dumpable flag). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <linux/capability.h>
#include <sys/auxv.h>
#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "util/error_text.h"
#include "privileges.h"

/* Debian 12's UAPI headers predate these. */
#ifndef CAP_PERFMON
#define CAP_PERFMON 38
#endif
#ifndef CAP_BPF
#define CAP_BPF 39
#endif
#ifndef CAP_CHECKPOINT_RESTORE
#define CAP_CHECKPOINT_RESTORE 40
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

#define CAP_BIT(cap) (1ull << (cap))

/* What attaching and symbolizing need for the rest of a run (the unit's bounding set). */
static const uint64_t needed_always = CAP_BIT(CAP_BPF) | CAP_BIT(CAP_PERFMON) |
				      CAP_BIT(CAP_SYS_PTRACE) | CAP_BIT(CAP_DAC_READ_SEARCH) |
				      CAP_BIT(CAP_CHECKPOINT_RESTORE);
/* A capture run with sudo writes its profile where root could (a user's directory) and may
 * have to stop a command that changed its uid. */
static const uint64_t needed_by_capture = CAP_BIT(CAP_DAC_OVERRIDE) | CAP_BIT(CAP_KILL);

struct cap_sets {
	uint64_t effective, permitted, inheritable;
};

static int caps_get(struct cap_sets *sets)
{
	struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};

	if (syscall(SYS_capget, &header, data) != 0)
		return -errno;
	sets->effective = data[0].effective | (uint64_t)data[1].effective << 32;
	sets->permitted = data[0].permitted | (uint64_t)data[1].permitted << 32;
	sets->inheritable = data[0].inheritable | (uint64_t)data[1].inheritable << 32;
	return 0;
}

/* Sets the calling thread's three sets. */
static int caps_set(const struct cap_sets *sets)
{
	struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {
		{ (uint32_t)sets->effective, (uint32_t)sets->permitted,
		  (uint32_t)sets->inheritable },
		{ (uint32_t)(sets->effective >> 32), (uint32_t)(sets->permitted >> 32),
		  (uint32_t)(sets->inheritable >> 32) },
	};

	return syscall(SYS_capset, &header, data) == 0 ? 0 : -errno;
}

/* Ambient capabilities came with Linux 4.3; older kernels have none to clear. */
static int clear_ambient(void)
{
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
		return -errno;
	return 0;
}

bool privileges__borrowed(void)
{
	return getauxval(AT_SECURE) != 0 && getuid() != 0;
}

void privileges__caller(uid_t *uid, gid_t *gid)
{
	*uid = getuid();
	*gid = getgid();
}

int privileges__check_start(enum privileges_role role, char *err, size_t err_len)
{
	if (getuid() != geteuid() || getgid() != getegid()) {
		set_err(err, err_len,
			"allocscope is installed set-user-ID or set-group-ID (run by uid %u as uid "
			"%u): that would let every user profile every process. Remove the bit "
			"(chmod u-s,g-s) and run it with sudo",
			(unsigned)getuid(), (unsigned)geteuid());
		return -EPERM;
	}
	if (role == PRIVILEGES_AGENT && privileges__borrowed()) {
		set_err(err, err_len,
			"the agent profiles every process on the host and uid %u is not root: a "
			"binary with file capabilities (setcap) acts only for its caller. Run the "
			"agent as root (the systemd unit), or profile your own processes with "
			"--pid or -- COMMAND",
			(unsigned)getuid());
		return -EPERM;
	}
	return 0;
}

/* Opens /proc/PID/mem with the caller's credentials only: effective capabilities empty (the
 * permitted set stays, to restore them) and the file-system uid and gid the caller's. mem, not
 * maps: its open is the kernel's ptrace attach check (PTRACE_MODE_ATTACH_FSCREDS), which Yama's
 * ptrace_scope also applies, and samples carry the target's stack memory, which is what an
 * attached debugger may read; maps checks only read mode. */
static int open_mem_as_caller(pid_t pid, int *open_errno)
{
	struct cap_sets held, lowered;
	char path[64];
	uid_t old_fsuid;
	gid_t old_fsgid;
	int fd, ret;

	ret = caps_get(&held);
	if (ret)
		return ret;
	lowered = held;
	lowered.effective = 0;
	ret = caps_set(&lowered);
	if (ret)
		return ret;
	old_fsuid = (uid_t)setfsuid(getuid());
	old_fsgid = (gid_t)setfsgid(getgid());
	snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	*open_errno = fd < 0 ? errno : 0;
	if (fd >= 0)
		close(fd);
	setfsgid(old_fsgid);
	setfsuid(old_fsuid);
	return caps_set(&held);
}

int privileges__may_profile(pid_t pid, int pidfd, char *err, size_t err_len)
{
	int open_errno = 0, ret;

	if (!privileges__borrowed())
		return 0;
	ret = open_mem_as_caller(pid, &open_errno);
	if (ret) {
		set_err(err, err_len, "cannot check access to pid %d: %s", (int)pid,
			strerror(-ret));
		return ret;
	}
	if (open_errno == ENOENT || open_errno == ESRCH) {
		set_err(err, err_len, "no process with pid %d", (int)pid);
		return -ESRCH;
	}
	if (open_errno) {
		set_err(err, err_len,
			"uid %u may not profile pid %d: it belongs to another user or runs with "
			"privileges (%s). This allocscope has file capabilities and profiles only "
			"processes its caller could debug; run it with sudo to profile any process",
			(unsigned)getuid(), (int)pid, strerror(open_errno));
		return -EPERM;
	}
	/* The pidfd was opened first: if its process is still alive, the /proc entry just
	 * checked was that process and not a later one with the same pid. */
	if (syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) != 0) {
		set_err(err, err_len, "no process with pid %d", (int)pid);
		return -ESRCH;
	}
	return 0;
}

int privileges__drop_for_command(void)
{
	struct cap_sets none = { 0 };
	int ret;

	if (!privileges__borrowed())
		return 0;
	ret = clear_ambient();
	if (ret)
		return ret;
	ret = caps_set(&none);
	if (ret)
		return ret;
	return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 ? 0 : -errno;
}

int privileges__keep_needed(enum privileges_role role, bool keep_sys_admin, char *err,
			    size_t err_len)
{
	uint64_t keep = needed_always;
	struct cap_sets held, kept;
	int ret;

	if (role == PRIVILEGES_CAPTURE)
		keep |= needed_by_capture;
	if (keep_sys_admin)
		keep |= CAP_BIT(CAP_SYS_ADMIN);
	ret = caps_get(&held);
	if (ret)
		goto fail;
	keep &= held.permitted;
	/* The bounding set first: dropping from it takes CAP_SETPCAP, which goes next. Without
	 * it (the unit, a setcap binary) the bounding set stays; no_new_privs and the trimmed
	 * permitted set still keep an exec from gaining anything. */
	if (held.effective & CAP_BIT(CAP_SETPCAP)) {
		for (int cap = 0; cap < 64; cap++) {
			int in_set = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);

			if (in_set < 0)
				break; /* past the kernel's last capability */
			if (in_set && !(keep & CAP_BIT(cap)) &&
			    prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
				ret = -errno;
				goto fail;
			}
		}
	}
	ret = clear_ambient();
	if (ret)
		goto fail;
	kept.effective = keep;
	kept.permitted = keep;
	kept.inheritable = 0;
	ret = caps_set(&kept);
	if (ret)
		goto fail;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		ret = -errno;
		goto fail;
	}
	return 0;
fail:
	set_err(err, err_len, "cannot drop the capabilities allocscope no longer needs: %s",
		strerror(-ret));
	return ret;
}
