/* Per-process attach. Files are opened through /proc/PID/root so that a process in another
 * mount namespace (a container) is probed on its own copy of the library; uprobes are keyed by
 * inode, so the kernel also catches the library if it is mapped again later. Each file's entry
 * points go into one uprobe_multi link when the kernel has them (a link takes one path):
 * detaching then waits for one RCU grace period per file instead of one per entry point.
 *
 * A process whose files fire OpenTelemetry's otel_memory:alloc USDT (an in-process sampler such
 * as liballocscope-sampler.so, preloaded) gets probes on those sites instead of its entry
 * points: the sampler counts down in-process at a few ns per allocation and only its samples
 * trap. Attaching raises the probes' semaphores, which is what turns the sampler on. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <bpf/libbpf.h>

#include "process_probes.h"
#include "allocators.h"
#include "alloc_program.h"
#include "attach/linked_files.h"
#include "attach/usdt_notes.h"
#include "util/log.h"
#include "symbolize/elf_file.h"
#include "symbolize/proc_maps.h"

/* Files with allocators in one process: the malloc in use, a prefixed allocator or two, an
 * operator new; more means something unusual is mapped, and the first ones are probed. */
#define MAX_FILES 8

struct attached_probe {
	struct entry_point point;
	struct bpf_link *link;      /* its perf-event uprobe; NULL under a multi link */
	uint64_t cookie;            /* what the probe reports: the entry kind, or for a USDT
				       site ALLOC_COOKIE_USDT + its argument spec */
	uint64_t semaphore_offset;  /* USDT: the semaphore the kernel raises (0: none) */
	bool on_nop5;               /* USDT: the site is a 5-byte nop (the kernel may turn it
				       into a call instead of a trap) */
};

/* Sites of otel_memory:alloc in one file: offsets and semaphores in the file, argument specs. */
#define MAX_USDT_SITES 16

struct usdt_candidate {
	char path[PATH_MAX];        /* as the process sees it */
	char open_path[PATH_MAX + 32];
	uint64_t offsets[MAX_USDT_SITES], semaphores[MAX_USDT_SITES];
	struct usdt_probe_spec specs[MAX_USDT_SITES];
	bool is_free[MAX_USDT_SITES]; /* an otel_memory:free site (in-use tracking) */
	size_t n_sites;
};

struct probed_file {
	char path[PATH_MAX];        /* as the process sees it */
	char allocators[128];       /* "glibc, jemalloc (_rjem_ prefix)" */
	size_t first, count;        /* its probes: probes[first, first + count) */
	size_t first_skipped, n_skipped; /* its unprobed entry points in skipped[] */
	struct bpf_link *multi_link; /* the uprobe_multi link serving its probes, or NULL */
	int session_fd;             /* --inuse on a kernel with session uprobes: the session link
				       serving its probes and frees instead (-1: none) */
};

struct process_probes {
	pid_t pid;
	bool inuse;                 /* in-use tracking for this process (frees, returns) */
	bool cooperative;           /* probes on otel_memory:alloc sites, not entry points */
	uint32_t hit_slot;          /* entry points count their hits in this probe_hits slot */
	bool paused;                /* links detached by process_probes__pause */
	struct probed_file files[MAX_FILES];
	size_t n_files;
	struct attached_probe *probes;
	size_t count;
	struct entry_point *skipped; /* entry points left unprobed, for describe */
	size_t n_skipped;
	char file_list[MAX_FILES * 128];
};

/* A file the process maps (or will map) that holds allocators. */
struct candidate {
	char path[PATH_MAX];        /* as the process sees it */
	char open_path[PATH_MAX + 32]; /* what this process opens: through /proc/PID/root */
	bool is_exe;
	struct elf_file *elf;
	struct file_allocators set;
};

struct candidates {
	struct candidate files[MAX_FILES];
	size_t count;
	struct usdt_candidate usdt[MAX_FILES];
	size_t n_usdt;
	bool want_free; /* the program tracks live allocations: otel_memory:free sites too */
	/* The first file that could not be opened, and why: when no malloc is found, that is
	 * the likelier reason (no ptrace access to the process) than a stripped binary. */
	int open_error;
	char open_error_path[PATH_MAX];
};

/* The file the kernel should resolve: the process's own view of path. */
static void root_path(pid_t pid, const char *path, char *out, size_t len)
{
	snprintf(out, len, "/proc/%d/root%s", (int)pid, path);
}

static void candidates_free(struct candidates *c)
{
	for (size_t i = 0; i < c->count; i++)
		elf_file__free(c->files[i].elf);
	c->count = 0;
	c->n_usdt = 0;
	c->open_error = 0;
}

/* Keeps path's otel_memory:alloc sites whose arguments can be read; true when it has any. */
static bool find_usdt_sites(struct candidates *c, const char *path, const char *open_path)
{
	struct usdt_candidate *cand = &c->usdt[c->n_usdt];
	const struct usdt_probe *probe = NULL;
	struct usdt_notes *notes;

	if (c->n_usdt == MAX_FILES || usdt_notes__read(open_path, &notes) != 0)
		return false;
	cand->n_sites = 0;
	while ((probe = usdt_notes__find(notes, "otel_memory", "alloc", probe)) &&
	       cand->n_sites < MAX_USDT_SITES) {
		char why[256];

		if (usdt_probe__spec(probe, 3, &cand->specs[cand->n_sites], why, sizeof(why))) {
			log_debug("%s: otel_memory:alloc at 0x%llx is not used: %s", path,
				  (unsigned long long)probe->file_offset, why);
			continue;
		}
		cand->offsets[cand->n_sites] = probe->file_offset;
		cand->semaphores[cand->n_sites] = probe->semaphore_offset;
		cand->is_free[cand->n_sites] = false;
		cand->n_sites++;
	}
	/* In-use: the frees of the sampled pointers, otel_memory:free(ptr). */
	probe = NULL;
	while (c->want_free && cand->n_sites &&
	       (probe = usdt_notes__find(notes, "otel_memory", "free", probe)) &&
	       cand->n_sites < MAX_USDT_SITES) {
		char why[256];

		if (usdt_probe__spec(probe, 1, &cand->specs[cand->n_sites], why, sizeof(why))) {
			log_debug("%s: otel_memory:free at 0x%llx is not used: %s", path,
				  (unsigned long long)probe->file_offset, why);
			continue;
		}
		cand->offsets[cand->n_sites] = probe->file_offset;
		cand->semaphores[cand->n_sites] = probe->semaphore_offset;
		cand->is_free[cand->n_sites] = true;
		cand->n_sites++;
	}
	usdt_notes__free(notes);
	if (cand->n_sites == 0)
		return false;
	snprintf(cand->path, sizeof(cand->path), "%s", path);
	snprintf(cand->open_path, sizeof(cand->open_path), "%s", open_path);
	c->n_usdt++;
	return true;
}

/* Opens path and keeps it when it holds an allocator. The executable goes first. */
static void consider_file(struct candidates *c, const char *path, const char *open_path,
			  bool is_exe)
{
	struct candidate *cand;
	struct elf_file *elf;
	struct file_allocators set;
	int ret;

	/* A file that fires otel_memory:alloc samples in-process: an interposing sampler
	 * defines malloc only to forward it, so it is not the process's allocator. */
	if (find_usdt_sites(c, path, open_path))
		return;

	if (c->count == MAX_FILES) {
		log_debug("more than %d files with allocators: %s is not examined", MAX_FILES,
			  path);
		return;
	}
	ret = elf_file__open(open_path, &elf);
	if (ret) {
		if (!c->open_error) {
			c->open_error = ret;
			snprintf(c->open_error_path, sizeof(c->open_error_path), "%s", path);
		}
		return;
	}
	allocators__identify_file(elf, &set);
	if (set.count == 0) {
		elf_file__free(elf);
		return;
	}
	if (is_exe && c->count) {
		memmove(&c->files[1], &c->files[0], c->count * sizeof(c->files[0]));
		cand = &c->files[0];
	} else {
		cand = &c->files[c->count];
	}
	c->count++;
	memset(cand, 0, sizeof(*cand));
	snprintf(cand->path, sizeof(cand->path), "%s", path);
	snprintf(cand->open_path, sizeof(cand->open_path), "%s", open_path);
	cand->is_exe = is_exe;
	cand->elf = elf;
	cand->set = set;
}

static int files_from_maps(pid_t pid, struct candidates *c, char *err, size_t err_len)
{
	struct { uint32_t major, minor; uint64_t inode; } seen[256];
	size_t n_seen = 0;
	char link[64], exe_path[PATH_MAX] = "";
	struct proc_maps *maps;
	struct stat exe_st;
	bool have_exe;
	ssize_t len;
	int ret;

	ret = proc_maps__read(pid, &maps);
	if (ret == -ESRCH) {
		snprintf(err, err_len, "no process with pid %d", (int)pid);
		return ret;
	}
	if (ret) {
		snprintf(err, err_len, "cannot read /proc/%d/maps: %s", (int)pid, strerror(-ret));
		return ret;
	}
	snprintf(link, sizeof(link), "/proc/%d/exe", (int)pid);
	have_exe = stat(link, &exe_st) == 0;
	len = readlink(link, exe_path, sizeof(exe_path) - 1);
	exe_path[len > 0 ? len : 0] = '\0';

	for (size_t i = 0; i < proc_maps__count(maps); i++) {
		const struct proc_map_entry *entry = proc_maps__entry(maps, i);
		char path[PATH_MAX + 32];
		bool is_exe, dup = false;

		/* Each file once: its executable mapping holds the code. */
		if (!proc_map_entry__is_file(entry) || !entry->executable || entry->deleted)
			continue;
		for (size_t k = 0; k < n_seen && !dup; k++)
			dup = seen[k].inode == entry->inode && seen[k].major == entry->dev_major &&
			      seen[k].minor == entry->dev_minor;
		if (dup)
			continue;
		if (n_seen < sizeof(seen) / sizeof(seen[0])) {
			seen[n_seen].major = entry->dev_major;
			seen[n_seen].minor = entry->dev_minor;
			seen[n_seen].inode = entry->inode;
			n_seen++;
		}
		is_exe = have_exe && entry->inode == exe_st.st_ino &&
			 ((major(exe_st.st_dev) == entry->dev_major &&
			   minor(exe_st.st_dev) == entry->dev_minor) ||
			  strcmp(entry->path, exe_path) == 0);
		root_path(pid, entry->path, path, sizeof(path));
		consider_file(c, entry->path, path, is_exe);
	}
	proc_maps__free(maps);
	return 0;
}

/* *dynamic: the command is dynamically linked (or a script), so the C library this process
 * maps now is a fair guess when its own files name no malloc. */
static int files_of_command(pid_t pid, const char *command, struct candidates *c,
			    bool *dynamic, char *err, size_t err_len)
{
	struct linked_files files;
	int ret = linked_files__list(command, &files);

	*dynamic = true;
	if (ret == -ENOEXEC) /* a script: its interpreter is not known yet */
		return files_from_maps(pid, c, err, err_len);
	if (ret) {
		snprintf(err, err_len, "cannot list the libraries of %s: %s", command,
			 strerror(-ret));
		return ret;
	}
	*dynamic = files.dynamic;
	for (size_t i = 0; i < files.count; i++)
		consider_file(c, files.paths[i], files.paths[i], i == 0);
	linked_files__free(&files);
	return 0;
}

static enum allocator_family owner_family(const struct candidate *cand)
{
	const struct allocator_id *owner = file_allocators__malloc_owner(&cand->set);

	return owner ? owner->family : ALLOCATOR_GLIBC;
}

/* Marks in winner[] the files whose malloc the process calls (see process_probes.h). Several
 * libraries other than glibc's may define malloc (one preloaded, one linked); only one wins,
 * but the others' functions are never reached through malloc, so probing all of them counts
 * nothing twice. */
static int choose_malloc(pid_t pid, const struct candidates *c, bool *winner, char *err,
			 size_t err_len)
{
	const struct candidate *unrecognized = NULL;
	bool found = false;
	size_t glibc = c->count;

	for (size_t i = 0; i < c->count; i++)
		winner[i] = false;
	for (size_t i = 0; i < c->count; i++) {
		const struct candidate *cand = &c->files[i];

		if (!file_allocators__malloc_owner(&cand->set))
			continue;
		if (cand->is_exe) {
			winner[i] = true;
			found = true;
			if (owner_family(cand) == ALLOCATOR_UNRECOGNIZED)
				unrecognized = cand;
			break;
		}
		if (owner_family(cand) == ALLOCATOR_GLIBC) {
			if (glibc == c->count)
				glibc = i;
			continue;
		}
		winner[i] = true;
		found = true;
		if (owner_family(cand) == ALLOCATOR_UNRECOGNIZED && !unrecognized)
			unrecognized = cand;
	}
	if (unrecognized) {
		snprintf(err, err_len,
			 "pid %d allocates with a malloc allocscope does not recognize, in %s (it "
			 "knows glibc, jemalloc, tcmalloc and mimalloc; that malloc is none of "
			 "them, so no probe would see its allocations)",
			 (int)pid, unrecognized->path);
		return -ENOTSUP;
	}
	if (!found && glibc < c->count) {
		winner[glibc] = true;
		found = true;
	}
	if (!found && (c->open_error == -EACCES || c->open_error == -EPERM)) {
		snprintf(err, err_len,
			 "cannot open %s, which pid %d maps, through /proc/%d/root: %s (reading a "
			 "process's files needs ptrace access to it: CAP_SYS_PTRACE, or the same "
			 "user as the process and every capability it has)",
			 c->open_error_path, (int)pid, (int)pid, strerror(-c->open_error));
		return -EACCES;
	}
	if (!found) {
		snprintf(err, err_len,
			 "pid %d maps no malloc allocscope recognizes (none in its executable or "
			 "libraries; a stripped static binary has no symbols to find)",
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
	LIBBPF_OPTS(bpf_uprobe_opts, opts, .bpf_cookie = probe->cookie,
		    .ref_ctr_offset = probe->semaphore_offset);
	struct bpf_program *bpf_prog = alloc_program__for_entry(prog, probe->point.entry);

	probe->link = bpf_program__attach_uprobe_opts(bpf_prog, pid, path,
						      probe_offset(&probe->point), &opts);
	if (!probe->link)
		return -errno ? -errno : -EINVAL;
	return 0;
}

/* The sentence for a failed attach of point, or of every point of file in one link when
 * point is NULL. Returns the error to report: -ESRCH whenever the process is gone by now,
 * since that, not the attach, is what the caller must act on. */
static int attach_error(int ret, const struct process_probes *probes,
			const struct probed_file *file, const struct entry_point *point, char *err,
			size_t err_len)
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
		for (size_t i = file->first; i < file->first + file->count && used < sizeof(names);
		     i++) {
			const char *sep = i > file->first ? ", " : "";

			used += snprintf(names + used, sizeof(names) - used, "%s%s", sep,
					 probes->probes[i].point.names);
		}
	}
	if ((ret == -EACCES || ret == -EPERM) && point) {
		/* Measured on Linux 6.18: the uprobe PMU refuses CAP_PERFMON alone, although
		 * loading the program accepts it (a uprobe_multi link does not). */
		snprintf(err, err_len,
			 "cannot attach a uprobe to %s in %s for pid %d: %s (this kernel wants "
			 "CAP_SYS_ADMIN for uprobe perf events: run as root or grant cap_sys_admin "
			 "too)",
			 names, file->path, (int)probes->pid, strerror(-ret));
	} else if (point) {
		snprintf(err, err_len,
			 "cannot attach a uprobe to %s in %s (offset 0x%llx) for pid %d: %s",
			 names, file->path, (unsigned long long)probe_offset(point),
			 (int)probes->pid, strerror(-ret));
	} else {
		snprintf(err, err_len, "cannot attach a uprobe to %s in %s for pid %d: %s", names,
			 file->path, (int)probes->pid, strerror(-ret));
	}
	return ret;
}

/* Attaches the probes of file (already in probes->probes) through open_path. */
static int attach_file(struct alloc_program *prog, struct process_probes *probes,
		       struct probed_file *file, const char *open_path, char *err,
		       size_t err_len)
{
	uint64_t offsets[ALLOCATORS_MAX_ENTRY_POINTS], semaphores[ALLOCATORS_MAX_ENTRY_POINTS];
	uint64_t cookies[ALLOCATORS_MAX_ENTRY_POINTS];
	int ret;

	/* USDT sites (cooperative) stay on alloc_multi: their pointers come with the sample. */
	if (alloc_program__has_session(prog) && probes->inuse &&
	    probes->probes[file->first].point.entry != ALLOC_ENTRY_USDT_ALLOC) {
		for (size_t i = 0; i < file->count; i++) {
			offsets[i] = probe_offset(&probes->probes[file->first + i].point);
			cookies[i] = probes->probes[file->first + i].cookie;
		}
		ret = alloc_program__attach_session(prog, probes->pid, open_path, offsets, cookies,
						    file->count, &file->session_fd);
		if (ret)
			return attach_error(ret, probes, file, NULL, err, err_len);
		return 0;
	}
	if (alloc_program__has_multi(prog)) {
		for (size_t i = 0; i < file->count; i++) {
			offsets[i] = probe_offset(&probes->probes[file->first + i].point);
			semaphores[i] = probes->probes[file->first + i].semaphore_offset;
			cookies[i] = probes->probes[file->first + i].cookie;
		}
		/* The same link either way; only USDT sites have semaphores. */
		ret = alloc_program__attach_multi(prog, probes->pid, open_path, offsets,
						  semaphores, cookies, file->count,
						  &file->multi_link);
		if (ret)
			return attach_error(ret, probes, file, NULL, err, err_len);
		return 0;
	}
	for (size_t i = 0; i < file->count; i++) {
		struct attached_probe *probe = &probes->probes[file->first + i];

		ret = attach_entry(prog, probes->pid, open_path, probe);
		if (ret)
			return attach_error(ret, probes, file, &probe->point, err, err_len);
	}
	return 0;
}

static void describe_ids(const struct allocator_id *ids, size_t n, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n && used < len; i++) {
		char one[64];

		allocator_id__describe(&ids[i], one, sizeof(one));
		used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? ", " : "", one);
	}
}

/* Finds the entry points of the allocators chosen in cand and, when any is to be probed, adds
 * the file to probes and attaches them. */
static int add_file(struct alloc_program *prog, struct process_probes *probes,
		    struct candidate *cand, bool wins, char *err, size_t err_len)
{
	struct entry_point points[ALLOCATORS_MAX_ENTRY_POINTS], frees[ALLOCATORS_MAX_ENTRY_POINTS];
	struct allocator_id ids[ALLOCATORS_MAX_PER_FILE];
	struct attached_probe *grown_probes;
	struct entry_point *grown_skipped;
	struct probed_file *file;
	size_t n_ids = 0, n_points, n_probed = 0, n_frees = 0;
	int ret;

	for (size_t i = 0; i < cand->set.count; i++)
		if (wins || !cand->set.ids[i].owns_malloc)
			ids[n_ids++] = cand->set.ids[i];
	if (n_ids == 0)
		return 0;
	ret = allocators__find_entry_points(cand->elf, ids, n_ids, points,
					    ALLOCATORS_MAX_ENTRY_POINTS, &n_points);
	if (ret) {
		snprintf(err, err_len, "cannot find the allocation functions in %s: %s", cand->path,
			 strerror(-ret));
		return ret;
	}
	for (size_t i = 0; i < n_points; i++)
		n_probed += points[i].probed;
	if (n_probed == 0)
		return 0; /* e.g. libstdc++: its operator new calls malloc */
	if (probes->n_files == MAX_FILES)
		return 0;
	/* In-use on the transparent path: the frees go into the same session link. */
	if (alloc_program__has_session(prog) && probes->inuse) {
		ret = allocators__find_free_points(cand->elf, ids, n_ids, frees,
						   ALLOCATORS_MAX_ENTRY_POINTS - n_probed, &n_frees);
		if (ret) {
			snprintf(err, err_len, "cannot find the free functions in %s: %s",
				 cand->path, strerror(-ret));
			return ret;
		}
	}

	grown_probes = realloc(probes->probes,
			       (probes->count + n_probed + n_frees) * sizeof(*grown_probes));
	if (!grown_probes)
		return -ENOMEM;
	probes->probes = grown_probes;
	grown_skipped = realloc(probes->skipped, (probes->n_skipped + n_points - n_probed + 1) *
							 sizeof(*grown_skipped));
	if (!grown_skipped)
		return -ENOMEM;
	probes->skipped = grown_skipped;

	file = &probes->files[probes->n_files++];
	memset(file, 0, sizeof(*file));
	file->multi_link = NULL;
	file->session_fd = -1;
	snprintf(file->path, sizeof(file->path), "%s", cand->path);
	file->first = probes->count;
	file->first_skipped = probes->n_skipped;
	for (size_t i = 0; i < n_points; i++) {
		if (points[i].probed) {
			probes->probes[probes->count].point = points[i];
			probes->probes[probes->count].link = NULL;
			probes->probes[probes->count].cookie =
				entry_point__cookie(&points[i]) |
				(uint64_t)probes->hit_slot << ALLOC_COOKIE_SLOT_SHIFT;
			probes->probes[probes->count].semaphore_offset = 0;
			probes->count++;
			file->count++;
		} else {
			probes->skipped[probes->n_skipped++] = points[i];
			file->n_skipped++;
		}
	}
	for (size_t i = 0; i < n_frees; i++) {
		probes->probes[probes->count] = (struct attached_probe){
			.point = frees[i],
			.cookie = ALLOC_COOKIE_FREE |
				  (uint64_t)probes->hit_slot << ALLOC_COOKIE_SLOT_SHIFT,
		};
		probes->count++;
		file->count++;
	}
	/* Name only the allocators that have probes here. */
	{
		struct allocator_id used[ALLOCATORS_MAX_PER_FILE];
		size_t n_used = 0;

		for (size_t k = 0; k < n_ids; k++) {
			char name[40];

			allocator_id__describe(&ids[k], name, sizeof(name));
			for (size_t i = file->first; i < probes->count; i++) {
				if (strcmp(probes->probes[i].point.allocator, name) == 0) {
					used[n_used++] = ids[k];
					break;
				}
			}
		}
		describe_ids(used, n_used, file->allocators, sizeof(file->allocators));
	}
	return attach_file(prog, probes, file, cand->open_path, err, err_len);
}

/* Detaches and forgets every probe of probes, keeping the struct for another attempt. */
static void release_probes(struct process_probes *probes)
{
	for (size_t i = 0; i < probes->n_files; i++) {
		bpf_link__destroy(probes->files[i].multi_link);
		if (probes->files[i].session_fd >= 0)
			close(probes->files[i].session_fd);
	}
	for (size_t i = 0; i < probes->count; i++)
		bpf_link__destroy(probes->probes[i].link);
	free(probes->probes);
	probes->probes = NULL;
	probes->count = 0;
	probes->n_files = 0;
	probes->cooperative = false;
}

/* What sits at a USDT site: a nop the kernel emulates (or, a 5-byte one, replaces with a call
 * on Linux 6.18), or something else, single-stepped. True for a 5-byte nop. */
static bool usdt_site_placement(const char *open_path, uint64_t offset,
				struct probe_placement *out)
{
	static const uint8_t nop5[5] = { 0x0f, 0x1f, 0x44, 0x00, 0x00 };
	uint8_t code[5] = { 0 };
	ssize_t n = -1;
	int fd = open(open_path, O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		n = pread(fd, code, sizeof(code), (off_t)offset);
		close(fd);
	}
	memset(out, 0, sizeof(*out));
	out->emulated = true;
	if (n == (ssize_t)sizeof(code) && memcmp(code, nop5, sizeof(nop5)) == 0) {
		snprintf(out->insn_desc, sizeof(out->insn_desc), "nop5 (USDT)");
		return true;
	}
	if (n >= 1 && code[0] == 0x90) {
		snprintf(out->insn_desc, sizeof(out->insn_desc), "nop (USDT)");
	} else {
		out->emulated = false;
		snprintf(out->insn_desc, sizeof(out->insn_desc), "USDT site");
		snprintf(out->reason, sizeof(out->reason), "the USDT site is not a nop");
	}
	return false;
}

/* The cooperative path: every otel_memory:alloc site in every file that has them. */
static int attach_usdt_files(struct alloc_program *prog, struct process_probes *probes,
			     const struct candidates *c, char *err, size_t err_len)
{
	size_t total = 0;
	int ret;

	for (size_t f = 0; f < c->n_usdt; f++)
		total += c->usdt[f].n_sites;
	probes->probes = calloc(total, sizeof(*probes->probes));
	if (!probes->probes)
		return -ENOMEM;
	for (size_t f = 0; f < c->n_usdt && probes->n_files < MAX_FILES; f++) {
		const struct usdt_candidate *cand = &c->usdt[f];
		struct probed_file *file = &probes->files[probes->n_files++];

		memset(file, 0, sizeof(*file));
		file->multi_link = NULL;
		file->session_fd = -1;
		snprintf(file->path, sizeof(file->path), "%s", cand->path);
		snprintf(file->allocators, sizeof(file->allocators),
			 "otel_memory:alloc USDT, cooperative sampling");
		file->first = probes->count;
		for (size_t i = 0; i < cand->n_sites; i++) {
			struct attached_probe *probe = &probes->probes[probes->count];

			ret = alloc_program__usdt_spec(prog, &cand->specs[i], &probe->cookie);
			if (ret) {
				snprintf(err, err_len,
					 "cannot register the otel_memory:alloc arguments of %s: %s",
					 cand->path, strerror(-ret));
				return ret;
			}
			probe->point.entry = ALLOC_ENTRY_USDT_ALLOC;
			if (cand->is_free[i])
				probe->cookie |= ALLOC_COOKIE_USDT_FREE;
			snprintf(probe->point.names, sizeof(probe->point.names),
				 cand->is_free[i] ? "otel_memory:free" : "otel_memory:alloc");
			snprintf(probe->point.allocator, sizeof(probe->point.allocator),
				 "otel_memory");
			probe->point.file_offset = cand->offsets[i];
			probe->point.probed = true;
			probe->on_nop5 = usdt_site_placement(cand->open_path, cand->offsets[i],
							     &probe->point.placement);
			probe->semaphore_offset = cand->semaphores[i];
			probes->count++;
			file->count++;
		}
		ret = attach_file(prog, probes, file, cand->open_path, err, err_len);
		if (ret)
			return ret;
	}
	probes->cooperative = true;
	return 0;
}

int process_probes__attach(struct alloc_program *prog, pid_t pid, const char *command,
			   struct process_probes **out, char *err, size_t err_len)
{
	const struct process_probes_opts opts = { .inuse = alloc_program__tracks_live(prog) };

	return process_probes__attach_with(prog, pid, command, &opts, out, err, err_len);
}

int process_probes__attach_with(struct alloc_program *prog, pid_t pid, const char *command,
				const struct process_probes_opts *opts, struct process_probes **out,
				char *err, size_t err_len)
{
	struct candidates *cands;
	bool winner[MAX_FILES], dynamic = false;
	struct process_probes *probes;
	size_t used = 0;
	int ret;

	*out = NULL;
	probes = calloc(1, sizeof(*probes));
	cands = calloc(1, sizeof(*cands));
	if (!probes || !cands) {
		free(probes);
		free(cands);
		return -ENOMEM;
	}
	probes->pid = pid;
	probes->inuse = opts->inuse && alloc_program__tracks_live(prog);
	cands->want_free = probes->inuse;
	probes->hit_slot = opts->hit_slot;
	if (command)
		ret = files_of_command(pid, command, cands, &dynamic, err, err_len);
	else
		ret = files_from_maps(pid, cands, err, err_len);
	if (ret == 0 && cands->n_usdt) {
		if (cands->count && cands->files[0].is_exe &&
		    file_allocators__malloc_owner(&cands->files[0].set)) {
			/* Its own malloc comes first: the sampler never sees those calls. */
			log_debug("pid %d: its executable defines malloc, which an in-process sampler "
				  "cannot interpose: probing the allocator's entry points",
				  (int)pid);
		} else {
			ret = attach_usdt_files(prog, probes, cands, err, err_len);
			if (ret == 0 || ret == -ESRCH)
				goto listed;
			log_warn("pid %d: %s; probing the allocator's entry points instead",
				 (int)pid, err);
			release_probes(probes);
			ret = 0;
		}
	}
	if (ret == 0)
		ret = choose_malloc(pid, cands, winner, err, err_len);
	if (ret == -ENOENT && command && dynamic) {
		/* Its loader listed no malloc (it failed, or the program finds its libraries in
		 * some other way): the C library this process maps now is the best guess, as the
		 * command will most likely map the same one. */
		log_debug("no malloc among the files of %s: probing the C library pid %d maps now",
			  command, (int)pid);
		candidates_free(cands);
		ret = files_from_maps(pid, cands, err, err_len);
		if (ret == 0)
			ret = choose_malloc(pid, cands, winner, err, err_len);
	}
	/* The file whose malloc wins first: it names the process's allocator. */
	for (int pass = 0; pass < 2 && ret == 0; pass++)
		for (size_t i = 0; i < cands->count && ret == 0; i++)
			if (winner[i] == (pass == 0))
				ret = add_file(prog, probes, &cands->files[i], winner[i], err,
					       err_len);
listed:
	if (ret == -ENOMEM)
		snprintf(err, err_len, "out of memory");
	if (ret == 0 && probes->count == 0) {
		snprintf(err, err_len, "no allocation functions found in the files pid %d maps",
			 (int)pid);
		ret = -ENOENT;
	}
	for (size_t i = 0; i < probes->n_files && ret == 0 && used < sizeof(probes->file_list);
	     i++)
		used += (size_t)snprintf(probes->file_list + used, sizeof(probes->file_list) - used,
					 "%s%s", i ? ", " : "", probes->files[i].path);
	candidates_free(cands);
	free(cands);
	if (ret) {
		process_probes__free(probes);
		return ret;
	}
	*out = probes;
	return 0;
}

void process_probes__free(struct process_probes *probes)
{
	if (!probes)
		return;
	release_probes(probes);
	free(probes->skipped);
	free(probes);
}

/* ---- duty cycle (overhead budget) ---------------------------------------------------- */

int process_probes__pause(struct process_probes *probes, struct process_probes **detached)
{
	struct process_probes *husk;

	*detached = NULL;
	if (probes->paused)
		return 0;
	husk = calloc(1, sizeof(*husk));
	if (!husk)
		return -ENOMEM;
	/* The husk holds only the links: its files and probes are copies whose links move,
	 * the session links (in-use) with the rest. */
	husk->pid = probes->pid;
	husk->n_files = probes->n_files;
	for (size_t i = 0; i < probes->n_files; i++) {
		husk->files[i].multi_link = probes->files[i].multi_link;
		husk->files[i].session_fd = probes->files[i].session_fd;
		probes->files[i].multi_link = NULL;
		probes->files[i].session_fd = -1;
	}
	husk->probes = calloc(probes->count ? probes->count : 1, sizeof(*husk->probes));
	if (!husk->probes) {
		for (size_t i = 0; i < probes->n_files; i++) {
			probes->files[i].multi_link = husk->files[i].multi_link;
			probes->files[i].session_fd = husk->files[i].session_fd;
		}
		free(husk);
		return -ENOMEM;
	}
	husk->count = probes->count;
	for (size_t i = 0; i < probes->count; i++) {
		husk->probes[i].link = probes->probes[i].link;
		probes->probes[i].link = NULL;
	}
	probes->paused = true;
	*detached = husk;
	return 0;
}

int process_probes__resume(struct alloc_program *prog, struct process_probes *probes, char *err,
			   size_t err_len)
{
	char open_path[PATH_MAX + 32];
	int ret;

	if (!probes->paused)
		return 0;
	for (size_t i = 0; i < probes->n_files; i++) {
		root_path(probes->pid, probes->files[i].path, open_path, sizeof(open_path));
		ret = attach_file(prog, probes, &probes->files[i], open_path, err, err_len);
		if (ret) {
			/* Whatever did attach stays; a later pause detaches it. */
			return ret;
		}
	}
	probes->paused = false;
	return 0;
}

bool process_probes__paused(const struct process_probes *probes)
{
	return probes->paused;
}

size_t process_probes__count(const struct process_probes *probes)
{
	return probes->count;
}

size_t process_probes__links(const struct process_probes *probes)
{
	size_t n = 0;

	for (size_t i = 0; i < probes->n_files; i++)
		n += probes->files[i].multi_link || probes->files[i].session_fd >= 0
			     ? 1
			     : probes->files[i].count;
	return n;
}

const char *process_probes__file(const struct process_probes *probes)
{
	return probes->file_list;
}

size_t process_probes__file_count(const struct process_probes *probes)
{
	return probes->n_files;
}

const char *process_probes__file_at(const struct process_probes *probes, size_t i)
{
	return i < probes->n_files ? probes->files[i].path : NULL;
}

const char *process_probes__file_allocators(const struct process_probes *probes, size_t i)
{
	return i < probes->n_files ? probes->files[i].allocators : NULL;
}

bool process_probes__cooperative(const struct process_probes *probes)
{
	return probes->cooperative;
}

size_t process_probes__single_stepped(const struct process_probes *probes)
{
	size_t n = 0;

	for (size_t i = 0; i < probes->count; i++)
		n += !probes->probes[i].point.placement.emulated;
	return n;
}

size_t process_probes__on_nop5(const struct process_probes *probes)
{
	size_t n = 0;

	for (size_t i = 0; i < probes->count; i++)
		n += probes->probes[i].on_nop5;
	return n;
}

/* Paths and symbol names come from the target: escaped as the log escapes them. */
void process_probes__describe(const struct process_probes *probes, FILE *out)
{
	char path[4 * PATH_MAX], names[1024], counted_by[256];

	for (size_t f = 0; f < probes->n_files; f++) {
		const struct probed_file *file = &probes->files[f];

		fprintf(out, "  %s (%s): %zu probes, %s\n", log_escaped(path, file->path),
			file->allocators, file->count,
			file->session_fd >= 0 ? "one session uprobe link (in-use)"
			: file->multi_link    ? "one uprobe_multi link"
					      : "one link each");
		for (size_t i = file->first; i < file->first + file->count; i++) {
			const struct entry_point *point = &probes->probes[i].point;

			fprintf(out, "    %-24s %-14s +%-3u %-20s %s%s\n",
				log_escaped(names, point->names),
				point->frees ? "free" : alloc_entry_name(point->entry),
				point->placement.offset,
				point->placement.insn_desc,
				point->placement.emulated ? "emulated" : "single-stepped: ",
				point->placement.emulated ? "" : point->placement.reason);
			if (point->relayed_alignment)
				fprintf(out, "    %-24s alignment <= %u: reaches %s, which counts it\n",
					"", point->relayed_alignment,
					log_escaped(counted_by, point->relayed_to));
		}
		for (size_t i = file->first_skipped; i < file->first_skipped + file->n_skipped;
		     i++)
			fprintf(out, "    %-24s not probed: reaches %s, which counts it\n",
				log_escaped(names, probes->skipped[i].names),
				log_escaped(counted_by, probes->skipped[i].counted_by));
	}
}

size_t process_probes__frees(const struct process_probes *probes)
{
	size_t n = 0;

	for (size_t i = 0; i < probes->count; i++)
		n += probes->probes[i].point.frees;
	return n;
}
