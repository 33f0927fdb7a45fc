/* Reads the facts target rules are decided from out of /proc/PID: executable, process name,
 * cgroup, systemd unit and container. The daemon calls this on every exec on the host, so it
 * opens the pid directory once, reads each file with openat/read into stack buffers and never
 * allocates. Holding the directory also means every file read belongs to the same process:
 * once it exits, lookups under the directory fail instead of reaching a new process given the
 * pid. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "process_info.h"
#include "util/small_file.h"

/* include/linux/sched.h; not exported to user space headers. */
#define PF_KTHREAD 0x00200000UL

static const char deleted_suffix[] = " (deleted)";

/* Copies n bytes of src as a string, or writes "" when they do not fit: a cut cgroup path or
 * unit name would still look valid and could match a rule meant for something else. */
static void copy_whole_or_empty(char *dst, size_t len, const char *src, size_t n)
{
	if (len == 0)
		return;
	if (n >= len)
		n = 0;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* Files under /proc/PID that every live process has: their absence means it exited (the
 * kernel answers ENOENT or, mid-read, ESRCH). */
static int missing_means_gone(int err)
{
	return err == -ENOENT || err == -ESRCH ? -ESRCH : err;
}

/* dir_fd/comm (or an absolute path in name) into comm[len], without its newline. */
static int read_comm_at(int dir_fd, const char *name, char *comm, size_t len)
{
	char buf[64];
	size_t n;
	int ret;

	ret = small_file_read(dir_fd, name, buf, sizeof(buf), &n);
	if (ret)
		return missing_means_gone(ret);
	if (n > 0 && buf[n - 1] == '\n')
		n--;
	/* The kernel keeps 15 characters; anything longer is cut the same way. */
	if (n > len - 1)
		n = len - 1;
	memcpy(comm, buf, n);
	comm[n] = '\0';
	return 0;
}

static int read_comm(int dir_fd, struct process_info *out)
{
	return read_comm_at(dir_fd, "comm", out->comm, sizeof(out->comm));
}

void process_info__read_comm(pid_t pid, char *comm, size_t len)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	if (len && read_comm_at(AT_FDCWD, path, comm, len) != 0)
		snprintf(comm, len, "?");
}

int process_info__read_tgid(pid_t pid, pid_t *tgid)
{
	char path[64], buf[1024];
	const char *line;
	size_t n;
	long value;
	int ret;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	ret = small_file_read(AT_FDCWD, path, buf, sizeof(buf), &n);
	if (ret)
		return missing_means_gone(ret);
	/* Tgid is the 4th line; the Name line before it is escaped by the kernel. */
	line = strstr(buf, "\nTgid:");
	if (!line)
		return -EINVAL;
	value = strtol(line + strlen("\nTgid:"), NULL, 10);
	if (value <= 0)
		return -EINVAL;
	*tgid = (pid_t)value;
	return 0;
}

/* The executable as the process sees it. Kernel threads and zombies have none (ENOENT), and
 * without ptrace rights over the process the kernel refuses the link (EACCES, or EPERM on
 * some hardened kernels): all of these leave exe "" rather than failing the process. */
static int read_exe(int dir_fd, struct process_info *out)
{
	size_t suffix_len = sizeof(deleted_suffix) - 1;
	ssize_t n;

	out->exe[0] = '\0';
	n = readlinkat(dir_fd, "exe", out->exe, sizeof(out->exe));
	if (n < 0) {
		int err = errno;

		if (err == ENOENT || err == EACCES || err == EPERM)
			return 0;
		return -err;
	}
	/* readlink cuts silently; a cut path could match a glob meant for another file. */
	if ((size_t)n >= sizeof(out->exe))
		return 0;
	/* The mapped file was replaced (a package upgrade) or unlinked: the process still runs
	 * the binary it was started from, and rules name that binary's path. */
	if ((size_t)n > suffix_len &&
	    memcmp(out->exe + n - suffix_len, deleted_suffix, suffix_len) == 0)
		n -= (ssize_t)suffix_len;
	out->exe[n] = '\0';
	return 0;
}

/* Only asked when there is no executable: kernel threads are told from user processes we may
 * not read (or zombies) by PF_KTHREAD in the flags, the 9th field of /proc/PID/stat. The 2nd
 * field is the name in parentheses and may itself hold spaces and ')', so fields are counted
 * from the last ')'. */
static int read_kernel_thread(int dir_fd, struct process_info *out)
{
	char buf[1024];
	unsigned long flags;
	char *field, *end;
	size_t n;
	int ret;

	ret = small_file_read(dir_fd, "stat", buf, sizeof(buf), &n);
	if (ret)
		return missing_means_gone(ret);
	field = strrchr(buf, ')');
	if (!field)
		return -EINVAL;
	field++;
	/* Fields 3 (state) to 8 (tpgid) come before the flags. */
	for (int skipped = 0; skipped < 6; skipped++) {
		while (*field == ' ')
			field++;
		while (*field && *field != ' ')
			field++;
	}
	while (*field == ' ')
		field++;
	errno = 0;
	flags = strtoul(field, &end, 10);
	if (end == field || errno)
		return -EINVAL;
	out->kernel_thread = (flags & PF_KTHREAD) != 0;
	return 0;
}

static int read_cgroup(int dir_fd, struct process_info *out)
{
	/* One line per v1 hierarchy (about a dozen) plus the v2 line; each path can be long. */
	char buf[16384];
	size_t n;
	int ret;

	ret = small_file_read(dir_fd, "cgroup", buf, sizeof(buf), &n);
	if (ret)
		return missing_means_gone(ret);
	if (n == sizeof(buf) - 1) {
		/* Full buffer: the last line may be cut, and a cut path must not be used. */
		char *last_newline = strrchr(buf, '\n');

		if (last_newline)
			last_newline[1] = '\0';
		else
			buf[0] = '\0';
	}
	process_info__parse_cgroup(buf, out->cgroup, sizeof(out->cgroup));
	process_info__unit_of_cgroup(out->cgroup, out->unit, sizeof(out->unit));
	/* -ENOENT (not in a container) leaves the identity zeroed: id "". */
	container_id__parse(buf, &out->container);
	return 0;
}

int process_info__read(const char *proc_root, pid_t pid, struct process_info *out)
{
	char dir_path[PATH_MAX];
	int dir_fd, ret, written;

	memset(out, 0, sizeof(*out));
	out->pid = pid;
	if (pid <= 0)
		return -EINVAL;
	written = snprintf(dir_path, sizeof(dir_path), "%s/%d", proc_root, (int)pid);
	if (written < 0 || (size_t)written >= sizeof(dir_path))
		return -ENAMETOOLONG;
	dir_fd = open(dir_path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd < 0)
		return missing_means_gone(-errno);

	ret = read_comm(dir_fd, out);
	if (ret)
		goto out;
	ret = read_exe(dir_fd, out);
	if (ret)
		goto out;
	if (out->exe[0] == '\0') {
		ret = read_kernel_thread(dir_fd, out);
		if (ret)
			goto out;
	}
	ret = read_cgroup(dir_fd, out);
out:
	close(dir_fd);
	return ret;
}

/* One line of /proc/PID/cgroup: "ID:CONTROLLERS:PATH". */
struct cgroup_line {
	const char *id, *controllers, *path;
	size_t id_len, controllers_len, path_len;
};

static bool split_cgroup_line(const char *line, const char *line_end, struct cgroup_line *fields)
{
	const char *id_end = memchr(line, ':', (size_t)(line_end - line));
	const char *controllers_end;

	if (!id_end)
		return false;
	controllers_end = memchr(id_end + 1, ':', (size_t)(line_end - id_end - 1));
	if (!controllers_end)
		return false;
	fields->id = line;
	fields->id_len = (size_t)(id_end - line);
	fields->controllers = id_end + 1;
	fields->controllers_len = (size_t)(controllers_end - fields->controllers);
	/* Everything after the second ':' is the path, which may hold ':' itself. */
	fields->path = controllers_end + 1;
	fields->path_len = (size_t)(line_end - fields->path);
	return true;
}

static bool field_is(const char *field, size_t len, const char *expected)
{
	return len == strlen(expected) && memcmp(field, expected, len) == 0;
}

void process_info__parse_cgroup(const char *content, char *path, size_t len)
{
	struct cgroup_line systemd_v1 = { 0 };
	const char *line = content;

	if (len == 0)
		return;
	path[0] = '\0';
	if (!content)
		return;
	while (*line) {
		const char *line_end = strchrnul(line, '\n');
		struct cgroup_line fields;

		if (split_cgroup_line(line, line_end, &fields)) {
			/* The unified hierarchy is the one systemd and container runtimes manage
			 * on v2 and hybrid hosts alike. */
			if (field_is(fields.id, fields.id_len, "0") &&
			    fields.controllers_len == 0) {
				copy_whole_or_empty(path, len, fields.path, fields.path_len);
				return;
			}
			if (!systemd_v1.path &&
			    field_is(fields.controllers, fields.controllers_len, "name=systemd"))
				systemd_v1 = fields;
		}
		line = *line_end ? line_end + 1 : line_end;
	}
	if (systemd_v1.path)
		copy_whole_or_empty(path, len, systemd_v1.path, systemd_v1.path_len);
}

static bool ends_with(const char *s, size_t n, const char *suffix)
{
	size_t suffix_len = strlen(suffix);

	/* A bare ".service" component names no unit. */
	return n > suffix_len && memcmp(s + n - suffix_len, suffix, suffix_len) == 0;
}

void process_info__unit_of_cgroup(const char *cgroup, char *unit, size_t len)
{
	const char *deepest = NULL;
	size_t deepest_len = 0;
	const char *component = cgroup;

	if (len == 0)
		return;
	unit[0] = '\0';
	if (!cgroup)
		return;
	/* The deepest unit wins: a service started by a user's systemd
	 * (user@1000.service/app.slice/foo.service) is foo, not the user manager. */
	while (*component) {
		const char *component_end = strchrnul(component, '/');
		size_t n = (size_t)(component_end - component);

		if (ends_with(component, n, ".service") || ends_with(component, n, ".scope")) {
			deepest = component;
			deepest_len = n;
		}
		component = *component_end ? component_end + 1 : component_end;
	}
	if (deepest)
		copy_whole_or_empty(unit, len, deepest, deepest_len);
}
