/* Loading the BPF object: the kernel checks come first so a missing feature is reported as
 * that, not as an opaque verifier or perf_event_open failure later. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/capability.h>

#include <bpf/libbpf.h>

#include "alloc_program.h"
#include "alloc.skel.h"
#include "log.h"
#include "sampling.h"

struct alloc_program {
	struct alloc_bpf *skel;
	struct bpf_link *exec_link, *fork_link;
	int n_cpus;
};

static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	/* libbpf's own chatter is for developers: show it only at debug level. */
	if (log_max_level < LOG_DEBUG)
		return 0;
	fputs("allocscope: ", stderr);
	return vfprintf(stderr, fmt, ap);
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
		 "allocscope needs root or the capabilities CAP_BPF and CAP_PERFMON, and on "
		 "kernels whose uprobe events want it (Linux 6.18 does) CAP_SYS_ADMIN (run it "
		 "with sudo, or: setcap cap_bpf,cap_perfmon,cap_sys_admin+ep allocscope)");
	return -EPERM;
}

int alloc_program__load(const struct alloc_program_opts *opts, struct alloc_program **out,
			char *err, size_t err_len)
{
	struct alloc_program *prog;
	__u32 table[SAMPLING_TABLE_SIZE];
	int ret;

	*out = NULL;
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
	prog->skel = alloc_bpf__open();
	if (!prog->skel) {
		ret = -errno;
		snprintf(err, err_len, "cannot open the embedded BPF object: %s", strerror(-ret));
		goto fail;
	}
	prog->skel->rodata->sample_rate = opts->sample_rate;
	prog->skel->rodata->walk_frame_pointers = opts->walk_frame_pointers;
	prog->skel->rodata->stack_copy_size = opts->stack_copy_bytes;
	prog->skel->rodata->wakeup_bytes = opts->ringbuf_bytes / 4;
	sampling_fill_log2_table(table);
	memcpy((void *)prog->skel->rodata->log2_frac_q16, table, sizeof(table));
	ret = bpf_map__set_max_entries(prog->skel->maps.samples, opts->ringbuf_bytes);
	if (ret) {
		snprintf(err, err_len, "cannot size the ring buffer to %u bytes: %s",
			 opts->ringbuf_bytes, strerror(-ret));
		goto fail;
	}
	ret = alloc_bpf__load(prog->skel);
	if (ret) {
		snprintf(err, err_len,
			 "the kernel refused allocscope's BPF program: %s (run with --log-level "
			 "debug to see the verifier's log; the kernel needs BPF task storage, ring "
			 "buffers and bpf_get_attach_cookie, Linux 5.15 or newer)",
			 strerror(-ret));
		goto fail;
	}
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
		return prog->skel->progs.alloc_size_arg1;
	case ALLOC_ENTRY_MEMALIGN:
		return prog->skel->progs.alloc_size_arg2;
	case ALLOC_ENTRY_POSIX_MEMALIGN:
		return prog->skel->progs.alloc_size_arg3;
	case ALLOC_ENTRY_CALLOC:
		return prog->skel->progs.alloc_calloc;
	case ALLOC_ENTRY_REALLOC:
		return prog->skel->progs.alloc_realloc;
	case ALLOC_ENTRY__COUNT:
		break;
	}
	return NULL;
}

int alloc_program__ringbuf_fd(const struct alloc_program *prog)
{
	return bpf_map__fd(prog->skel->maps.samples);
}

void alloc_program__read_counters(const struct alloc_program *prog, struct alloc_counters *out)
{
	/* The program updates these with atomic adds; a plain copy is a consistent-enough read
	 * of monotonically growing counters. */
	memcpy(out, &prog->skel->bss->counters, sizeof(*out));
}

uint64_t alloc_program__probe_hits(const struct alloc_program *prog)
{
	uint64_t per_cpu[prog->n_cpus];
	uint32_t zero = 0;
	uint64_t total = 0;

	if (bpf_map__lookup_elem(prog->skel->maps.probe_hits, &zero, sizeof(zero), per_cpu,
				 sizeof(per_cpu), 0) != 0)
		return 0;
	for (int i = 0; i < prog->n_cpus; i++)
		total += per_cpu[i];
	return total;
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
