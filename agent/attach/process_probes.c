/* Per-process attach. Files are opened through /proc/PID/root so that a process in another
 * mount namespace (a container) is probed on its own copy of the library; uprobes are keyed by
 * inode, so the kernel also catches the library if it is mapped again later. Every entry point
 * goes into one uprobe_multi link when the kernel has them: detaching then waits for one RCU
 * grace period instead of one per entry point. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/libbpf.h>

#include "process_probes.h"
#include "allocators.h"
#include "alloc_program.h"
#include "log.h"
#include "symbolize/elf_file.h"
#include "symbolize/proc_maps.h"

#define MAX_ENTRY_POINTS 16

struct attached_probe {
	struct entry_point point;
	struct bpf_link *link;      /* its perf-event uprobe; NULL under a multi link */
};

struct process_probes {
	pid_t pid;
	char file[PATH_MAX];
	struct attached_probe probes[MAX_ENTRY_POINTS];
	size_t count;
	int multi_link_fd;          /* the uprobe_multi link serving every probe, or -1 */
};

/* The file the kernel should resolve: the process's own view of path. */
static void root_path(pid_t pid, const char *path, char *out, size_t len)
{
	snprintf(out, len, "/proc/%d/root%s", (int)pid, path);
}

/* What the process allocates with: the glibc file to probe, or an error naming what it uses.
 * Another allocator that defines malloc wins over glibc (it was linked or preloaded in front
 * of it), so it is reported rather than silently profiling nothing. */
static int find_allocator_file(pid_t pid, char *glibc_file, size_t glibc_len, char *err,
			       size_t err_len)
{
	struct proc_maps *maps;
	char other[PATH_MAX] = "", other_kind[64] = "";
	uint64_t last_inode = 0;
	int ret;

	glibc_file[0] = '\0';
	ret = proc_maps__read(pid, &maps);
	if (ret == -ESRCH) {
		snprintf(err, err_len, "no process with pid %d", (int)pid);
		return ret;
	}
	if (ret) {
		snprintf(err, err_len, "cannot read /proc/%d/maps: %s", (int)pid, strerror(-ret));
		return ret;
	}
	for (size_t i = 0; i < proc_maps__count(maps); i++) {
		const struct proc_map_entry *entry = proc_maps__entry(maps, i);
		char path[PATH_MAX + 32];
		struct elf_file *elf;
		const char *kind;

		/* Each file once: its executable mapping holds the code. */
		if (!proc_map_entry__is_file(entry) || !entry->executable || entry->deleted ||
		    entry->inode == last_inode)
			continue;
		last_inode = entry->inode;
		root_path(pid, entry->path, path, sizeof(path));
		if (elf_file__open(path, &elf) != 0)
			continue;
		kind = allocators__identify(elf);
		if (kind && strcmp(kind, "glibc") == 0 && !glibc_file[0])
			snprintf(glibc_file, glibc_len, "%s", entry->path);
		else if (kind && strcmp(kind, "glibc") != 0 && !other[0]) {
			snprintf(other, sizeof(other), "%s", entry->path);
			snprintf(other_kind, sizeof(other_kind), "%s", kind);
		}
		elf_file__free(elf);
	}
	proc_maps__free(maps);

	if (other[0]) {
		snprintf(err, err_len,
			 "pid %d allocates with %s (%s), which this version of allocscope does not "
			 "probe: it supports glibc malloc only",
			 (int)pid, other_kind, other);
		return -ENOTSUP;
	}
	if (!glibc_file[0]) {
		snprintf(err, err_len,
			 "pid %d maps no allocator allocscope recognizes (no glibc malloc in its "
			 "executable or libraries; a stripped static binary has no symbols to find)",
			 (int)pid);
		return -ENOENT;
	}
	return 0;
}

static uint64_t probe_offset(const struct entry_point *point)
{
	return point->file_offset + point->placement.offset;
}

static int attach_entry(struct alloc_program *prog, pid_t pid, const char *path,
			struct attached_probe *probe)
{
	LIBBPF_OPTS(bpf_uprobe_opts, opts, .bpf_cookie = probe->point.entry);
	struct bpf_program *bpf_prog = alloc_program__for_entry(prog, probe->point.entry);

	probe->link = bpf_program__attach_uprobe_opts(bpf_prog, pid, path,
						      probe_offset(&probe->point), &opts);
	if (!probe->link)
		return -errno ? -errno : -EINVAL;
	return 0;
}

/* Every point in one link. Returns 0, -EOPNOTSUPP when this kernel turned out to have no
 * uprobe_multi links (attach per entry point instead), or another -errno. */
static int attach_multi(struct alloc_program *prog, pid_t pid, const char *path,
			struct process_probes *probes, const struct entry_point *points,
			size_t n_points)
{
	uint64_t offsets[MAX_ENTRY_POINTS];
	enum alloc_entry entries[MAX_ENTRY_POINTS];
	int fd;

	for (size_t i = 0; i < n_points; i++) {
		offsets[i] = probe_offset(&points[i]);
		entries[i] = points[i].entry;
	}
	fd = alloc_program__attach_multi(prog, pid, path, offsets, entries, n_points);
	if (fd < 0)
		return fd;
	probes->multi_link_fd = fd;
	for (size_t i = 0; i < n_points; i++)
		probes->probes[i].point = points[i];
	probes->count = n_points;
	return 0;
}

/* The sentence for a failed attach of point, or of every point in one link when point is
 * NULL. Returns the error to report: -ESRCH whenever the process is gone by now, since
 * that, not the attach, is what the caller must act on. */
static int attach_error(int ret, const struct process_probes *probes,
			const struct entry_point *points, size_t n_points,
			const struct entry_point *point, char *err, size_t err_len)
{
	char names[256] = "";
	size_t used = 0;

	if (ret == -ESRCH || (kill(probes->pid, 0) != 0 && errno == ESRCH)) {
		snprintf(err, err_len, "process %d exited while attaching", (int)probes->pid);
		return -ESRCH;
	}
	if (point) {
		snprintf(names, sizeof(names), "%s", point->names);
	} else {
		for (size_t i = 0; i < n_points && used < sizeof(names); i++)
			used += snprintf(names + used, sizeof(names) - used, "%s%s",
					 i ? ", " : "", points[i].names);
	}
	if ((ret == -EACCES || ret == -EPERM) && point) {
		/* Measured on Linux 6.18: the uprobe PMU refuses CAP_PERFMON alone, although
		 * loading the program accepts it (a uprobe_multi link does not). */
		snprintf(err, err_len,
			 "cannot attach a uprobe to %s in %s for pid %d: %s (this kernel wants "
			 "CAP_SYS_ADMIN for uprobe perf events: run as root or grant cap_sys_admin "
			 "too)",
			 names, probes->file, (int)probes->pid, strerror(-ret));
	} else if (point) {
		snprintf(err, err_len,
			 "cannot attach a uprobe to %s in %s (offset 0x%llx) for pid %d: %s",
			 names, probes->file, (unsigned long long)probe_offset(point),
			 (int)probes->pid, strerror(-ret));
	} else {
		snprintf(err, err_len, "cannot attach a uprobe to %s in %s for pid %d: %s",
			 names, probes->file, (int)probes->pid, strerror(-ret));
	}
	return ret;
}

int process_probes__attach(struct alloc_program *prog, pid_t pid, const char *allocator_file,
			   struct process_probes **out, char *err, size_t err_len)
{
	struct entry_point points[MAX_ENTRY_POINTS];
	struct process_probes *probes;
	char path[PATH_MAX + 32];
	struct elf_file *elf = NULL;
	size_t n_points;
	int ret;

	*out = NULL;
	probes = calloc(1, sizeof(*probes));
	if (!probes)
		return -ENOMEM;
	probes->multi_link_fd = -1;
	probes->pid = pid;
	if (allocator_file) {
		snprintf(probes->file, sizeof(probes->file), "%s", allocator_file);
		snprintf(path, sizeof(path), "%s", allocator_file);
	} else {
		ret = find_allocator_file(pid, probes->file, sizeof(probes->file), err, err_len);
		if (ret)
			goto fail;
		root_path(pid, probes->file, path, sizeof(path));
	}

	ret = elf_file__open(path, &elf);
	if (ret) {
		snprintf(err, err_len, "cannot read %s: %s", path, strerror(-ret));
		goto fail;
	}
	ret = allocators__find_glibc(elf, points, MAX_ENTRY_POINTS, &n_points);
	if (ret) {
		snprintf(err, err_len, "no glibc allocation functions found in %s", probes->file);
		goto fail;
	}
	if (alloc_program__has_multi(prog)) {
		ret = attach_multi(prog, pid, path, probes, points, n_points);
		if (ret == 0)
			goto attached;
		/* Still true: the kernel has multi links and refused this one for a reason of
		 * its own. False: it has none, and this process is attached per entry point. */
		if (alloc_program__has_multi(prog)) {
			ret = attach_error(ret, probes, points, n_points, NULL, err, err_len);
			goto fail;
		}
	}
	for (size_t i = 0; i < n_points; i++) {
		struct attached_probe *probe = &probes->probes[probes->count];

		probe->point = points[i];
		ret = attach_entry(prog, pid, path, probe);
		if (ret) {
			ret = attach_error(ret, probes, points, n_points, &probe->point, err,
					   err_len);
			goto fail;
		}
		probes->count++;
	}
attached:
	elf_file__free(elf);
	*out = probes;
	return 0;
fail:
	elf_file__free(elf);
	process_probes__free(probes);
	return ret;
}

void process_probes__free(struct process_probes *probes)
{
	if (!probes)
		return;
	if (probes->multi_link_fd >= 0)
		close(probes->multi_link_fd);
	for (size_t i = 0; i < probes->count; i++)
		bpf_link__destroy(probes->probes[i].link);
	free(probes);
}

size_t process_probes__count(const struct process_probes *probes)
{
	return probes->count;
}

size_t process_probes__links(const struct process_probes *probes)
{
	return probes->multi_link_fd >= 0 ? 1 : probes->count;
}

const char *process_probes__file(const struct process_probes *probes)
{
	return probes->file;
}

size_t process_probes__single_stepped(const struct process_probes *probes)
{
	size_t n = 0;

	for (size_t i = 0; i < probes->count; i++)
		n += !probes->probes[i].point.placement.emulated;
	return n;
}

void process_probes__describe(const struct process_probes *probes, FILE *out)
{
	for (size_t i = 0; i < probes->count; i++) {
		const struct entry_point *point = &probes->probes[i].point;

		fprintf(out, "  %-24s +%-3u %-20s %s%s\n", point->names, point->placement.offset,
			point->placement.insn_desc,
			point->placement.emulated ? "emulated" : "single-stepped: ",
			point->placement.emulated ? "" : point->placement.reason);
	}
}
