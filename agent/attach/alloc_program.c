/* Loading the BPF object: the kernel checks come first so a missing feature is reported as
 * that, not as an opaque verifier or perf_event_open failure later. Also the choice between
 * one uprobe_multi link per process and one perf-event uprobe per entry point: each perf-event
 * uprobe costs two descriptors and, on detach, an RCU grace period (~80 ms here), so 7 entry
 * points took ~0.56 s to detach; a multi link costs one descriptor and one grace period. The
 * choice is made from what the kernel does, never from its version.
 *
 * In-use on the transparent path needs the pointer a sampled call returns: alloc_session, a
 * session uprobe (Linux 6.13+), asks for the return of sampled calls only. libbpf 1.4 knows
 * neither the attach type nor the link, so the program's expected attach type is set by number
 * and its links are made with the bpf(2) syscall directly. Where the kernel refuses it, the
 * program loads without it and transparent targets get allocation profiles only. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/bpf.h>
#include <linux/capability.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "alloc_program.h"
#include "alloc.skel.h"
#include "util/log.h"
#include "sampling.h"

/* More offsets than the allocators of one file have entry points (glibc plus a prefixed
 * jemalloc and operator new in one static executable stay under 40); the kernel takes up to
 * 1 << 20. */
#define MULTI_MAX_OFFSETS 64


struct alloc_program {
	struct alloc_bpf *skel;
	struct bpf_link *exec_link, *fork_link;
	int n_cpus;
	bool multi_links;           /* uprobe_multi links, else one perf-event uprobe per probe */
	bool session_links;         /* --inuse and the kernel has session uprobes: entry points
				       and frees in one alloc_session link per file */
	pid_t first_session_pid;    /* the first process given a session link; another one gets
				       the warning below, once */
	bool warned_sessions;
	/* The USDT argument specs written to the usdt_specs map so far, by index: processes
	 * running the same sampler share one. */
	struct usdt_probe_spec usdt_specs[ALLOC_MAX_USDT_SPECS];
	uint32_t n_usdt_specs;
	/* Overhead budget: probe_hits slots handed to processes (slot 0 is everyone else's),
	 * and the hits of slots given back, which the total keeps. */
	bool hit_slot_used[ALLOC_HIT_SLOTS];
	uint64_t retired_hits;
};

static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char text[4096];
	const char *line;
	int n;

	/* libbpf's own chatter is for developers: show it only at debug level. */
	if (log_max_level < LOG_DEBUG)
		return 0;
	/* Its messages name target files, and a verifier log spans lines: one log line each, so
	 * every line is prefixed and escaped like any other (longer messages are cut). */
	n = vsnprintf(text, sizeof(text), fmt, ap);
	for (line = text; *line;) {
		size_t len = strcspn(line, "\n");

		log_debug("%.*s", (int)len, line);
		line += len;
		if (*line)
			line++;
	}
	return n;
}

static int check_kernel(char *err, size_t err_len)
{
	if (access("/sys/kernel/btf/vmlinux", R_OK) != 0) {
		snprintf(err, err_len,
			 "this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing): "
			 "allocscope needs a kernel built with CONFIG_DEBUG_INFO_BTF=y");
		return -EOPNOTSUPP;
	}
	if (access("/sys/bus/event_source/devices/uprobe/type", R_OK) != 0) {
		snprintf(err, err_len,
			 "this kernel has no uprobe support (/sys/bus/event_source/devices/uprobe "
			 "is missing): allocscope needs CONFIG_UPROBE_EVENTS=y");
		return -EOPNOTSUPP;
	}
	return 0;
}

/* Debian 12's UAPI headers predate these two. */
#ifndef CAP_PERFMON
#define CAP_PERFMON 38
#endif
#ifndef CAP_BPF
#define CAP_BPF 39
#endif

static bool has_capability(int cap)
{
	struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};

	if (syscall(SYS_capget, &header, data) != 0)
		return false;
	return data[cap / 32].effective & (1u << (cap % 32));
}

static int check_privileges(char *err, size_t err_len)
{
	bool sys_admin = has_capability(CAP_SYS_ADMIN);

	if (sys_admin || (has_capability(CAP_BPF) && has_capability(CAP_PERFMON)))
		return 0;
	snprintf(err, err_len,
		 "allocscope needs root or the capabilities CAP_BPF and CAP_PERFMON (run it with "
		 "sudo; or, for users to profile their own processes: setcap "
		 "cap_bpf,cap_perfmon+ep allocscope; kernels before 6.6, without uprobe_multi "
		 "links, want cap_sys_admin too)");
	return -EPERM;
}

/* Opens the embedded object into prog->skel, configures it and loads it; with_multi says
 * whether alloc_multi is loaded too. On failure prog->skel may be left open: the caller
 * destroys it. */
static int open_and_load(struct alloc_program *prog, const struct alloc_program_opts *opts,
			 bool with_multi, bool with_session, char *err, size_t err_len)
{
	__u32 table[SAMPLING_TABLE_SIZE];
	int ret;

	prog->skel = alloc_bpf__open();
	if (!prog->skel) {
		ret = -errno;
		snprintf(err, err_len, "cannot open the embedded BPF object: %s", strerror(-ret));
		return ret;
	}
	prog->skel->rodata->sample_rate = opts->sample_rate;
	prog->skel->rodata->walk_frame_pointers = opts->walk_frame_pointers;
	prog->skel->rodata->stack_copy_size = opts->stack_copy_bytes;
	prog->skel->rodata->kernel_unwind = opts->kernel_unwind;
	/* Without the kernel walk the rows array is never read: one row, not megabytes. */
	ret = bpf_map__set_max_entries(prog->skel->maps.unwind_rows,
				       !opts->kernel_unwind	  ? 1
				       : opts->unwind_table_rows ? opts->unwind_table_rows
								  : UNWIND_DEFAULT_TABLE_ROWS);
	if (ret) {
		snprintf(err, err_len, "cannot size the unwind table: %s", strerror(-ret));
		return ret;
	}
	prog->skel->rodata->wakeup_bytes = opts->ringbuf_bytes / 4;
	prog->skel->rodata->only_caller = opts->only_caller;
	prog->skel->rodata->caller_uid = opts->caller_uid;
	prog->skel->rodata->caller_gid = opts->caller_gid;
	prog->skel->rodata->read_context = opts->read_context;
	prog->skel->rodata->context_max_bytes = opts->context_max_bytes < ALLOC_CONTEXT_MAX_BYTES
							? opts->context_max_bytes
							: ALLOC_CONTEXT_MAX_BYTES;
	prog->skel->rodata->track_live = opts->live_entries > 0;
	prog->skel->rodata->track_returns = with_session;
	/* alloc_session calls the session kfuncs, which the verifier allows only to a program
	 * loaded as a session uprobe. */
	ret = with_session ? bpf_program__set_expected_attach_type(
				     prog->skel->progs.alloc_session,
				     (enum bpf_attach_type)ALLOC_ATTACH_UPROBE_SESSION)
			   : bpf_program__set_autoload(prog->skel->progs.alloc_session, false);
	if (ret) {
		snprintf(err, err_len, "cannot set up the session uprobe program: %s",
			 strerror(-ret));
		return ret;
	}
	ret = bpf_map__set_max_entries(prog->skel->maps.live_allocs,
				       opts->live_entries ? opts->live_entries : 1);
	if (ret) {
		snprintf(err, err_len, "cannot size the in-use tracking map to %u entries: %s",
			 opts->live_entries, strerror(-ret));
		return ret;
	}
	sampling_fill_log2_table(table);
	memcpy((void *)prog->skel->rodata->log2_frac_q16, table, sizeof(table));
	ret = bpf_map__set_max_entries(prog->skel->maps.samples, opts->ringbuf_bytes);
	if (ret) {
		snprintf(err, err_len, "cannot size the ring buffer to %u bytes: %s",
			 opts->ringbuf_bytes, strerror(-ret));
		return ret;
	}
	/* alloc_multi's SEC("uprobe.multi") gives it the uprobe_multi attach type; the
	 * per-layout programs keep the plain uprobe type perf events need. */
	if (!with_multi) {
		ret = bpf_program__set_autoload(prog->skel->progs.alloc_multi, false);
		if (ret) {
			snprintf(err, err_len, "cannot leave out the uprobe_multi program: %s",
				 strerror(-ret));
			return ret;
		}
	}
	ret = alloc_bpf__load(prog->skel);
	if (ret) {
		snprintf(err, err_len,
			 "the kernel refused allocscope's BPF program: %s (run with --log-level "
			 "debug to see the verifier's log; the kernel needs BPF task storage, ring "
			 "buffers and bpf_get_attach_cookie, Linux 5.15 or newer)",
			 strerror(-ret));
		return ret;
	}
	return 0;
}

/* Whether the kernel makes uprobe_multi links, asked once at load rather than inferred from a
 * target's refusal (an offset past the end of a file is EINVAL too). libbpf probes the same
 * way for its USDT support but does not export the answer. A link on "/" cannot be made
 * either way; a kernel that knows the link kind gets as far as opening the path and answers
 * EBADF (not a regular file), one that does not answers EINVAL. */
static bool kernel_has_multi_links(const struct alloc_program *prog)
{
	const unsigned long offset = 0;
	LIBBPF_OPTS(bpf_uprobe_multi_opts, opts, .offsets = &offset, .cnt = 1);
	libbpf_print_fn_t print;
	struct bpf_link *link;
	int ret;

	/* The refusal is the answer, not a failure: libbpf's warning about it is left out. */
	print = libbpf_set_print(NULL);
	link = bpf_program__attach_uprobe_multi(prog->skel->progs.alloc_multi, -1, "/", NULL,
						&opts);
	ret = link ? 0 : -errno;
	libbpf_set_print(print);
	if (link) {
		bpf_link__destroy(link);
		return true;
	}
	return ret == -EBADF;
}

/* BPF_LINK_CREATE's attributes for a uprobe_multi or session link, as the kernel lays them out
 * (union bpf_attr's link_create with its uprobe_multi member), which the installed UAPI
 * headers and libbpf 1.4 cannot express for a session. The kernel zero-fills what it knows
 * beyond the size given. */
struct session_link_attr {
	uint32_t prog_fd, target_fd, attach_type, flags;
	uint64_t path, offsets, ref_ctr_offsets, cookies;
	uint32_t cnt, multi_flags, pid, reserved;
};

static int create_session_link(const struct alloc_program *prog, pid_t pid, const char *path,
			       const uint64_t *offsets, const uint64_t *cookies, size_t count)
{
	struct session_link_attr attr;
	int fd;

	memset(&attr, 0, sizeof(attr));
	attr.prog_fd = (uint32_t)bpf_program__fd(prog->skel->progs.alloc_session);
	attr.attach_type = ALLOC_ATTACH_UPROBE_SESSION;
	attr.path = (uint64_t)(uintptr_t)path;
	attr.offsets = (uint64_t)(uintptr_t)offsets;
	attr.cookies = (uint64_t)(uintptr_t)cookies;
	attr.cnt = (uint32_t)count;
	attr.pid = (uint32_t)pid;
	fd = (int)syscall(SYS_bpf, BPF_LINK_CREATE, &attr, sizeof(attr));
	return fd < 0 ? -errno : fd;
}

/* As kernel_has_multi_links, for session links: "/" gets EBADF from a kernel that knows them. */
static bool kernel_has_session_links(const struct alloc_program *prog)
{
	const uint64_t offset = 0, cookie = 0;
	int fd = create_session_link(prog, 0, "/", &offset, &cookie, 1);

	if (fd >= 0) {
		close(fd);
		return true;
	}
	return fd == -EBADF;
}

int alloc_program__load(const struct alloc_program_opts *opts, struct alloc_program **out,
			char *err, size_t err_len)
{
	struct alloc_program *prog;
	int ret;

	*out = NULL;
	if (opts->walk_frame_pointers && opts->stack_copy_bytes) {
		snprintf(err, err_len, "cannot load the probes: a sample carries either the "
				       "frame-pointer walk or a stack copy, not both");
		return -EINVAL;
	}
	libbpf_set_print(libbpf_log);
	ret = check_kernel(err, err_len);
	if (ret)
		return ret;
	ret = check_privileges(err, err_len);
	if (ret)
		return ret;

	prog = calloc(1, sizeof(*prog));
	if (!prog)
		return -ENOMEM;
	prog->n_cpus = libbpf_num_possible_cpus();
	if (prog->n_cpus <= 0) {
		ret = prog->n_cpus ? prog->n_cpus : -EINVAL;
		snprintf(err, err_len, "cannot count this machine's CPUs: %s", strerror(-ret));
		goto fail;
	}
	if (opts->live_entries) {
		ret = open_and_load(prog, opts, true, true, err, err_len);
		if (ret == 0 && kernel_has_multi_links(prog) && kernel_has_session_links(prog)) {
			prog->multi_links = prog->session_links = true;
			log_debug("in-use: one session uprobe link per probed file");
			goto loaded;
		}
		/* Older kernels: in-use from cooperative targets only. */
		log_warn("this kernel has no session uprobes (Linux 6.13 or newer): --inuse "
			 "works only for targets that preload liballocscope-sampler.so; the "
			 "others get allocation profiles");
		alloc_bpf__destroy(prog->skel);
		prog->skel = NULL;
	}
	ret = open_and_load(prog, opts, true, false, err, err_len);
	if (ret) {
		/* A kernel or verifier that refuses the multi program can still run the
		 * per-layout ones: an object is loaded once, so start over without it. */
		alloc_bpf__destroy(prog->skel);
		prog->skel = NULL;
		ret = open_and_load(prog, opts, false, false, err, err_len);
		if (ret)
			goto fail;
		log_debug("the uprobe_multi program did not load: attaching one perf-event "
			  "uprobe per allocator entry point");
	} else {
		prog->multi_links = kernel_has_multi_links(prog);
		log_debug("%s", prog->multi_links
					? "attaching one uprobe_multi link per probed file"
					: "this kernel has no uprobe_multi links: attaching one "
					  "perf-event uprobe per probe");
	}
loaded:
	*out = prog;
	return 0;
fail:
	alloc_program__free(prog);
	return ret;
}

void alloc_program__free(struct alloc_program *prog)
{
	if (!prog)
		return;
	bpf_link__destroy(prog->exec_link);
	bpf_link__destroy(prog->fork_link);
	alloc_bpf__destroy(prog->skel);
	free(prog);
}

struct bpf_program *alloc_program__for_entry(struct alloc_program *prog, enum alloc_entry entry)
{
	switch (entry) {
	case ALLOC_ENTRY_MALLOC:
	case ALLOC_ENTRY_VALLOC:
	case ALLOC_ENTRY_PVALLOC:
	case ALLOC_ENTRY_NEW:
		return prog->skel->progs.alloc_size_arg1;
	case ALLOC_ENTRY_MEMALIGN:
		return prog->skel->progs.alloc_size_arg2;
	case ALLOC_ENTRY_POSIX_MEMALIGN:
		return prog->skel->progs.alloc_size_arg3;
	case ALLOC_ENTRY_CALLOC:
		return prog->skel->progs.alloc_calloc;
	case ALLOC_ENTRY_REALLOC:
		return prog->skel->progs.alloc_realloc;
	case ALLOC_ENTRY_REALLOC_ANY:
		return prog->skel->progs.alloc_realloc_any;
	case ALLOC_ENTRY_USDT_ALLOC:
		return prog->skel->progs.alloc_usdt;
	case ALLOC_ENTRY__COUNT:
		break;
	}
	return NULL;
}

bool alloc_program__has_multi(const struct alloc_program *prog)
{
	return prog->multi_links;
}

int alloc_program__attach_multi(struct alloc_program *prog, pid_t pid, const char *path,
				const uint64_t *offsets, const uint64_t *semaphores,
				const uint64_t *cookies, size_t count, struct bpf_link **link)
{
	/* libbpf's types for the same 64-bit values. */
	unsigned long link_offsets[MULTI_MAX_OFFSETS], link_semaphores[MULTI_MAX_OFFSETS];
	__u64 link_cookies[MULTI_MAX_OFFSETS];
	bool any_semaphore = false;
	LIBBPF_OPTS(bpf_uprobe_multi_opts, opts, .offsets = link_offsets,
		    .cookies = link_cookies, .cnt = count);

	*link = NULL;
	if (!prog->multi_links)
		return -EOPNOTSUPP;
	/* pid 0 would be libbpf's "this process", -1 every process: neither is meant here. */
	if (count == 0 || count > MULTI_MAX_OFFSETS || pid <= 0)
		return -EINVAL;
	for (size_t i = 0; i < count; i++) {
		link_offsets[i] = offsets[i];
		link_cookies[i] = cookies[i];
		link_semaphores[i] = semaphores ? semaphores[i] : 0;
		any_semaphore |= link_semaphores[i] != 0;
	}
	/* Only USDT sites have semaphores; entry points go without ref_ctr_offsets. */
	if (any_semaphore)
		opts.ref_ctr_offsets = link_semaphores;
	*link = bpf_program__attach_uprobe_multi(prog->skel->progs.alloc_multi, pid, path, NULL,
						 &opts);
	if (!*link)
		return errno ? -errno : -EINVAL;
	return 0;
}

bool alloc_program__has_session(const struct alloc_program *prog)
{
	return prog->session_links;
}

int alloc_program__attach_session(struct alloc_program *prog, pid_t pid, const char *path,
				  const uint64_t *offsets, const uint64_t *cookies, size_t count,
				  int *link_fd)
{
	int fd;

	*link_fd = -1;
	if (!prog->session_links)
		return -EOPNOTSUPP;
	if (count == 0 || count > MULTI_MAX_OFFSETS || pid <= 0)
		return -EINVAL;
	fd = create_session_link(prog, pid, path, offsets, cookies, count);
	if (fd < 0)
		return fd;
	*link_fd = fd;
	/* A session link filtered to one pid still asks for the return in every other process
	 * where the same file offset is probed: the kernel does not run the program there
	 * (kernel/trace/bpf_trace.c, uprobe_prog_run) and takes the handler's "0" as "trap the
	 * return". So with two in-use processes sharing an allocator, each pays a return trap on
	 * every allocation call for the other's link (measured: docs/performance.md). */
	if (!prog->first_session_pid) {
		prog->first_session_pid = pid;
	} else if (prog->first_session_pid != pid && !prog->warned_sessions) {
		prog->warned_sessions = true;
		log_warn("in-use profiles on the transparent path for more than one process: every "
			 "process whose allocator another in-use process also uses pays a return "
			 "trap on each allocation call (a kernel behaviour of pid-filtered session "
			 "uprobes; about one more probe hit per call). For several in-use processes, "
			 "preload liballocscope-sampler.so (docs/operations.md)");
	}
	return 0;
}

int alloc_program__usdt_spec(struct alloc_program *prog, const struct usdt_probe_spec *spec,
			     uint64_t *cookie)
{
	uint32_t index;
	int ret;

	for (index = 0; index < prog->n_usdt_specs; index++)
		if (memcmp(&prog->usdt_specs[index], spec, sizeof(*spec)) == 0)
			goto found;
	if (prog->n_usdt_specs == ALLOC_MAX_USDT_SPECS)
		return -ENOSPC;
	index = prog->n_usdt_specs;
	ret = bpf_map__update_elem(prog->skel->maps.usdt_specs, &index, sizeof(index), spec,
				   sizeof(*spec), BPF_ANY);
	if (ret)
		return ret;
	prog->usdt_specs[index] = *spec;
	prog->n_usdt_specs++;
found:
	*cookie = ALLOC_COOKIE_USDT + index;
	return 0;
}

int alloc_program__ringbuf_fd(const struct alloc_program *prog)
{
	return bpf_map__fd(prog->skel->maps.samples);
}

int alloc_program__drop_ringbuf_fd(const struct alloc_program *prog)
{
	return bpf_map__fd(prog->skel->maps.dropped_samples);
}

int alloc_program__unwind_rows_fd(const struct alloc_program *prog)
{
	return bpf_map__fd(prog->skel->maps.unwind_rows);
}

uint32_t alloc_program__unwind_table_rows(const struct alloc_program *prog)
{
	return bpf_map__max_entries(prog->skel->maps.unwind_rows);
}

int alloc_program__unwind_files_fd(const struct alloc_program *prog)
{
	return bpf_map__fd(prog->skel->maps.unwind_files);
}

int alloc_program__unwind_procs_fd(const struct alloc_program *prog)
{
	return bpf_map__fd(prog->skel->maps.unwind_procs);
}

void alloc_program__read_counters(const struct alloc_program *prog, struct alloc_counters *out)
{
	/* The program updates these with atomic adds; a plain copy is a consistent-enough read
	 * of monotonically growing counters. */
	memcpy(out, &prog->skel->bss->counters, sizeof(*out));
}

uint64_t alloc_program__hit_slot_read(const struct alloc_program *prog, uint32_t slot)
{
	uint64_t per_cpu[prog->n_cpus];
	uint64_t total = 0;

	if (bpf_map__lookup_elem(prog->skel->maps.probe_hits, &slot, sizeof(slot), per_cpu,
				 sizeof(per_cpu), 0) != 0)
		return 0;
	for (int i = 0; i < prog->n_cpus; i++)
		total += per_cpu[i];
	return total;
}

uint64_t alloc_program__probe_hits(const struct alloc_program *prog)
{
	uint64_t total = prog->retired_hits + alloc_program__hit_slot_read(prog, 0);

	for (uint32_t slot = 1; slot < ALLOC_HIT_SLOTS; slot++)
		if (prog->hit_slot_used[slot])
			total += alloc_program__hit_slot_read(prog, slot);
	return total;
}

int alloc_program__hit_slot_new(struct alloc_program *prog, uint32_t *slot)
{
	uint64_t zeros[prog->n_cpus];

	memset(zeros, 0, sizeof(zeros));
	for (uint32_t i = 1; i < ALLOC_HIT_SLOTS; i++) {
		if (prog->hit_slot_used[i])
			continue;
		if (bpf_map__update_elem(prog->skel->maps.probe_hits, &i, sizeof(i), zeros,
					 sizeof(zeros), 0) != 0)
			return -errno;
		prog->hit_slot_used[i] = true;
		*slot = i;
		return 0;
	}
	return -ENOSPC;
}

void alloc_program__hit_slot_free(struct alloc_program *prog, uint32_t slot)
{
	if (slot == 0 || slot >= ALLOC_HIT_SLOTS || !prog->hit_slot_used[slot])
		return;
	prog->retired_hits += alloc_program__hit_slot_read(prog, slot);
	prog->hit_slot_used[slot] = false;
}

int alloc_program__watch_processes(struct alloc_program *prog, char *err, size_t err_len)
{
	int ret;

	prog->exec_link = bpf_program__attach(prog->skel->progs.process_exec);
	if (!prog->exec_link) {
		ret = -errno;
		snprintf(err, err_len, "cannot attach to the sched_process_exec tracepoint: %s "
			 "(the agent needs it to notice new processes)", strerror(-ret));
		return ret;
	}
	prog->fork_link = bpf_program__attach(prog->skel->progs.process_fork);
	if (!prog->fork_link) {
		ret = -errno;
		snprintf(err, err_len, "cannot attach to the sched_process_fork tracepoint: %s "
			 "(the agent needs it to follow forked workers)", strerror(-ret));
		bpf_link__destroy(prog->exec_link);
		prog->exec_link = NULL;
		return ret;
	}
	return 0;
}

int alloc_program__process_events_fd(const struct alloc_program *prog)
{
	return bpf_map__fd(prog->skel->maps.process_events);
}

int alloc_program__set_profiled(struct alloc_program *prog, pid_t pid, bool profiled)
{
	uint32_t key = (uint32_t)pid;
	uint8_t one = 1;
	int ret;

	if (profiled)
		ret = bpf_map__update_elem(prog->skel->maps.profiled_processes, &key, sizeof(key),
					   &one, sizeof(one), BPF_ANY);
	else
		ret = bpf_map__delete_elem(prog->skel->maps.profiled_processes, &key,
					   sizeof(key), 0);
	return ret == -ENOENT && !profiled ? 0 : ret;
}

int alloc_program__set_context(struct alloc_program *prog, pid_t pid,
			       const struct context_proc *where)
{
	uint32_t key = (uint32_t)pid;
	int ret;

	if (where)
		return bpf_map__update_elem(prog->skel->maps.context_procs, &key, sizeof(key),
					    where, sizeof(*where), BPF_ANY);
	ret = bpf_map__delete_elem(prog->skel->maps.context_procs, &key, sizeof(key), 0);
	return ret == -ENOENT ? 0 : ret;
}

bool alloc_program__tracks_live(const struct alloc_program *prog)
{
	return prog->skel->rodata->track_live;
}

int alloc_program__for_each_live(struct alloc_program *prog, alloc_live_fn fn, void *ctx)
{
	struct alloc_live_key key, next;
	struct alloc_live value;
	int fd = bpf_map__fd(prog->skel->maps.live_allocs), visited = 0, ret;
	const void *prev = NULL;

	/* get_next_key from a key that was deleted meanwhile restarts at the first key: a
	 * bound on the visits keeps a busy map from looping forever. */
	for (uint64_t bound = 2ull * bpf_map__max_entries(prog->skel->maps.live_allocs) + 16;
	     bound; bound--) {
		ret = bpf_map_get_next_key(fd, prev, &next);
		if (ret)
			return ret == -ENOENT || errno == ENOENT ? visited : -errno;
		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(fd, &key, &value))
			continue; /* freed meanwhile */
		visited++;
		if (fn(&key, &value, ctx))
			break;
	}
	return visited;
}

size_t alloc_program__forget_live(struct alloc_program *prog, pid_t pid)
{
	struct alloc_live_key key, next, *doomed = NULL, *grown;
	int fd = bpf_map__fd(prog->skel->maps.live_allocs);
	size_t n = 0, cap = 0, dropped = 0;
	const void *prev = NULL;

	if (!prog->skel->rodata->track_live)
		return 0;
	/* Keys first, deletes after: a deleted key cannot lead get_next_key on. */
	for (uint64_t bound = 2ull * bpf_map__max_entries(prog->skel->maps.live_allocs) + 16;
	     bound && bpf_map_get_next_key(fd, prev, &next) == 0; bound--) {
		key = next;
		prev = &key;
		if (key.pid != (uint32_t)pid)
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 256;
			grown = realloc(doomed, cap * sizeof(*doomed));
			if (!grown)
				break;
			doomed = grown;
		}
		doomed[n++] = key;
	}
	dropped = alloc_program__delete_live(prog, doomed, n);
	free(doomed);
	return dropped;
}

size_t alloc_program__delete_live(struct alloc_program *prog, const struct alloc_live_key *keys,
				  size_t n)
{
	int fd = bpf_map__fd(prog->skel->maps.live_allocs);
	size_t dropped = 0;

	for (size_t i = 0; i < n; i++)
		dropped += bpf_map_delete_elem(fd, &keys[i]) == 0;
	return dropped;
}
