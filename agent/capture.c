/* The one-off capture, in the order a user sees it: check the output can be written, load the
 * BPF program, attach to each target (for a command: before it runs its first instruction),
 * drain samples on a timer until the capture ends, detach, write the profile, summarize.
 *
 * Targets are watched through pidfds, so a target's exit ends its part of the capture at once
 * and is never confused with a reused pid. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "build_info.h"
#include "capture.h"
#include "util/log.h"
#include "pipeline.h"
#include "profile/top_table.h"
#include "read/flamegraph_html.h"
#include "read/pprof_reader.h"
#include "attach/alloc_program.h"
#include "attach/detach_queue.h"
#include "attach/duty_cycle.h"
#include "attach/probe_cost.h"
#include "attach/process_probes.h"
#include "config/units.h"
#include "profile/alloc_profile.h"
#include "profile/label_limits.h"
#include "collect/exit_hold.h"
#include "collect/process_info.h"
#include "collect/service_version.h"
#include "privileges.h"

#define DRAIN_INTERVAL_MS 100

struct target {
	pid_t pid;
	int pidfd;
	bool exited;
	char comm[64];
	struct process_probes *probes;
	char allocators[512]; /* "jemalloc in /usr/lib/.../libjemalloc.so.2": for the summary */
	/* The cooperative path: the file name of the in-process sampler whose otel_memory:alloc
	 * sites are probed ("liballocscope-sampler.so"; "" when in several files). */
	bool cooperative;
	char sampler[NAME_MAX + 1];
	/* --max-overhead: its duty cycle (NULL without a budget, or cooperative), and what it
	 * showed, kept for the summary after the duty cycle is freed. */
	struct duty_cycle *duty;
	struct duty_cycle_stats duty_stats;
	bool throttled;     /* at some point */
	bool throttled_now;
	/* --inuse and throttled at some point: its live set was dropped at each detach (its
	 * frees go unseen then), so its in-use is left out while throttled and counts only what
	 * it allocated since its last release (ms into the capture) once released. */
	int64_t inuse_since_ms;
};

struct capture {
	const struct capture_opts *opts;
	struct pipeline *pipeline;
	struct alloc_profile *profile;
	struct target targets[CAPTURE_MAX_PIDS];
	size_t n_targets;
	pid_t child;             /* the command's pid, or 0 */
	struct exit_hold *hold;  /* the command, held at its exit for a last map read; or NULL */
	char output[PATH_MAX];
	char html[PATH_MAX];     /* --output X.html: the flame graph page; the profile is X.pb.gz */
	uint64_t handler_errors; /* samples the profile could not take (out of memory) */
	struct label_limits_stats label_stats; /* per-sample labels through their bounds */
	struct timespec start_mono;
	int64_t start_wall_ns;
	double ns_per_hit;                /* --max-overhead: the calibrated cost of a probe hit */
	int64_t next_duty_ms;             /* when a duty cycle next needs a tick; 0: none */
	struct detach_queue *detacher;    /* --max-overhead: the duty cycles' detaches */
};

static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
	stop_signal = sig;
}

static int64_t elapsed_ms(const struct capture *cap)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - cap->start_mono.tv_sec) * 1000 +
	       (now.tv_nsec - cap->start_mono.tv_nsec) / 1000000;
}

static const char *file_type_name(mode_t mode)
{
	if (S_ISLNK(mode))
		return "a symbolic link";
	if (S_ISCHR(mode))
		return "a character device";
	if (S_ISBLK(mode))
		return "a block device";
	if (S_ISFIFO(mode))
		return "a FIFO";
	if (S_ISSOCK(mode))
		return "a socket";
	return "not a regular file";
}

/* --output X.html: the page goes to X.html and the profile it is drawn from next to it, as
 * X.pb.gz (the page alone could not be read again by report, diff or pprof). */
static void html_output(struct capture *cap)
{
	size_t len = strlen(cap->output);

	cap->html[0] = '\0';
	if (len <= 5 || strcmp(cap->output + len - 5, ".html") != 0)
		return;
	snprintf(cap->html, sizeof(cap->html), "%s", cap->output);
	snprintf(cap->output + len - 5, sizeof(cap->output) - (len - 5), ".pb.gz");
}

/* The flame graph page from the profile just written, read back as `allocscope report
 * --html` reads it. */
static int write_html(struct capture *cap)
{
	struct pprof_file *file = NULL;
	char err[1024];
	int ret = pprof_file__read(cap->output, &file, err, sizeof(err));

	if (!ret)
		ret = flamegraph_html_write(cap->html, NULL, NULL, file, cap->output,
					    file->default_type, NULL, err, sizeof(err));
	pprof_file__free(file);
	if (ret)
		log_error("cannot write the flame graph: %s", err);
	return ret;
}

/* Refuse early, before touching any process, when the profile could not be written. */
static int prepare_output(struct capture *cap, pid_t first_pid)
{
	char dir[PATH_MAX];
	struct stat st;

	if (cap->opts->output) {
		snprintf(cap->output, sizeof(cap->output), "%s", cap->opts->output);
	} else {
		time_t now = time(NULL);
		struct tm tm;

		gmtime_r(&now, &tm);
		snprintf(cap->output, sizeof(cap->output), "alloc-%d-%04d%02d%02dT%02d%02d%02d.pb.gz",
			 (int)first_pid, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
			 tm.tm_min, tm.tm_sec);
	}
	html_output(cap);
	/* The profile is renamed over the path, which would replace whatever entry is there
	 * for everyone who uses it: only a regular file may be replaced. */
	if (lstat(cap->output, &st) == 0 && !S_ISREG(st.st_mode)) {
		if (S_ISDIR(st.st_mode))
			log_error("cannot write the profile to %s: it is a directory (give a file "
				  "name with --output)",
				  cap->output);
		else
			log_error("cannot write the profile to %s: it is %s, and allocscope only "
				  "replaces regular files (give a new file name with --output%s)",
				  cap->output, file_type_name(st.st_mode),
				  S_ISLNK(st.st_mode) ? ", or the path the link points to" : "");
		return S_ISDIR(st.st_mode) ? -EISDIR : -EEXIST;
	}
	snprintf(dir, sizeof(dir), "%s", cap->output);
	char *slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		log_error("cannot write the profile to %s: directory %s does not exist", cap->output,
			  dir);
		return -ENOENT;
	}
	/* access() says yes to root everywhere; creating a file is the real test. */
	char probe[PATH_MAX + 32];
	int fd;

	snprintf(probe, sizeof(probe), "%s/.allocscope-XXXXXX", dir);
	fd = mkstemp(probe);
	if (fd < 0) {
		int err = errno;

		log_error("cannot write the profile to %s: cannot create files in %s (%s)",
			  cap->output, dir, strerror(err));
		return -err;
	}
	close(fd);
	unlink(probe);
	return 0;
}

/* A held sample of a duty-cycled target, weighted for the share of its period it stands for. */
static int add_scaled(const struct alloc_sample *sample, double scale, void *ctx)
{
	struct capture *cap = ctx;
	int ret;

	alloc_profile__set_scale(cap->profile, scale);
	ret = pipeline__add_sample(cap->pipeline, cap->profile, sample);
	alloc_profile__set_scale(cap->profile, 1.0);
	if (ret)
		cap->handler_errors++;
	return ret;
}

static int on_sample(const struct alloc_sample *sample, void *ctx)
{
	struct capture *cap = ctx;

	for (size_t i = 0; i < cap->n_targets; i++) {
		struct target *t = &cap->targets[i];

		if (t->pid == (pid_t)sample->pid && t->duty &&
		    duty_cycle__hold(t->duty, sample,
				     sizeof(*sample) + sample->stack_copy_bytes))
			return 0;
	}
	if (pipeline__add_sample(cap->pipeline, cap->profile, sample) != 0)
		cap->handler_errors++;
	return 0;
}

/* The version of the code pid runs, as every one of its samples' service_version label: the
 * capture has no rules or pods, so it is the short build id of its executable (none without
 * one). Read when its image is final (a command's after its exec). */
static void label_version(struct capture *cap, pid_t pid)
{
	char build_id[256], version[SERVICE_VERSION_MAX + 1];

	service_version__read_build_id(pid, build_id, sizeof(build_id));
	if (service_version__pick(NULL, NULL, build_id, version, sizeof(version)) !=
		    SERVICE_VERSION_NONE &&
	    alloc_profile__label_process(cap->profile, (uint32_t)pid, SERVICE_VERSION_LABEL,
					 version) != 0)
		log_warn("pid %d: its samples carry no %s label: out of memory", (int)pid,
			 SERVICE_VERSION_LABEL);
}

/* The process's memory map, taken now so that samples still resolve after it exits. */
static void snapshot_process(struct capture *cap, pid_t pid)
{
	int ret = pipeline__add_process(cap->pipeline, pid);

	alloc_profile__note_process(cap->profile, pid);
	label_version(cap, pid);
	if (ret)
		log_warn("cannot read the memory map of pid %d: %s", (int)pid, strerror(-ret));
}

/* "jemalloc in /usr/lib/x86_64-linux-gnu/libjemalloc.so.2; glibc in /lib/.../libc.so.6". */
static void describe_allocators(const struct process_probes *probes, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < process_probes__file_count(probes) && used < len; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s%s in %s", i ? "; " : "",
					 process_probes__file_allocators(probes, i),
					 process_probes__file_at(probes, i));
}

static bool is_kernel_thread(pid_t pid)
{
	struct process_info *info = malloc(sizeof(*info));
	bool kernel_thread;

	if (!info)
		return false;
	kernel_thread = process_info__read("/proc", pid, info) == 0 && info->kernel_thread;
	free(info);
	return kernel_thread;
}

/* The processes to attach to, each once: a thread id names its process (probes are per
 * process and see every thread), and a pid given twice would count every sample twice. */
static size_t unique_processes(const struct capture_opts *opts, pid_t *pids)
{
	size_t n = 0;

	for (size_t i = 0; i < opts->n_pids; i++) {
		pid_t pid = opts->pids[i], tgid;
		bool dup = false;

		if (process_info__read_tgid(pid, &tgid) == 0 && tgid != pid) {
			log_info("pid %d is a thread of process %d: profiling the process", (int)pid,
				 (int)tgid);
			pid = tgid;
		}
		for (size_t k = 0; k < n && !dup; k++)
			dup = pids[k] == pid;
		if (dup) {
			log_info("pid %d given more than once: profiled once", (int)pid);
			continue;
		}
		pids[n++] = pid;
	}
	return n;
}

/* Attaches t->pid; with --max-overhead, its probes count their hits in a slot of their own and
 * a duty cycle keeps their cost within the budget (a cooperative target needs none). */
static int attach_budgeted(struct capture *cap, struct target *t, const char *command, char *err,
			   size_t err_len)
{
	struct alloc_program *prog = pipeline__program(cap->pipeline);
	struct duty_cycle_opts duty = {
		.budget = cap->opts->max_overhead_percent / 100.0,
		.ns_per_hit = cap->ns_per_hit,
		.period_ms = DUTY_CYCLE_PERIOD_MS,
		.add = add_scaled,
		.add_ctx = cap,
		.inuse = alloc_program__tracks_live(prog),
	};
	uint32_t slot = 0;
	int ret;

	if (cap->opts->max_overhead_percent > 0 && alloc_program__hit_slot_new(prog, &slot) != 0)
		slot = 0;
	ret = process_probes__attach_with(prog, t->pid, command,
					  &(struct process_probes_opts){
						  .inuse = alloc_program__tracks_live(prog),
						  .hit_slot = slot,
					  },
					  &t->probes, err, err_len);
	if (ret || !slot || process_probes__cooperative(t->probes)) {
		alloc_program__hit_slot_free(prog, slot);
		return ret;
	}
	ret = duty_cycle__new(prog, t->probes, t->pid, slot, &duty, elapsed_ms(cap), &t->duty);
	if (ret) {
		alloc_program__hit_slot_free(prog, slot);
		snprintf(err, err_len,
			 "cannot set up the overhead budget for pid %d: out of memory", (int)t->pid);
		process_probes__free(t->probes);
		t->probes = NULL;
	}
	return ret;
}

/* command: the program pid is about to exec (its files are examined), or NULL. */
static int add_target(struct capture *cap, pid_t pid, const char *command, bool snapshot_now)
{
	struct target *t = &cap->targets[cap->n_targets];
	char err[512] = "";
	int ret;

	t->pid = pid;
	t->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (t->pidfd < 0) {
		if (errno == ESRCH)
			log_error("no process with pid %d", (int)pid);
		else
			log_error("cannot watch pid %d: %s", (int)pid, strerror(errno));
		return -ESRCH;
	}
	/* A command is the capture's own child, made safe before it execs. */
	if (!command && privileges__may_profile(pid, t->pidfd, err, sizeof(err)) != 0) {
		log_error("%s", err);
		close(t->pidfd);
		return -EPERM;
	}
	process_info__read_comm(pid, t->comm, sizeof(t->comm));
	if (!command && is_kernel_thread(pid)) {
		log_error("pid %d (%s) is a kernel thread: it runs no user-space code and has no "
			  "allocator to profile",
			  (int)pid, t->comm);
		close(t->pidfd);
		return -EINVAL;
	}
	/* Its map and unwind tables first: the probes' first samples are walked in the kernel. */
	if (snapshot_now)
		snapshot_process(cap, pid);
	ret = attach_budgeted(cap, t, command, err, sizeof(err));
	if (ret) {
		log_error("%s", err);
		close(t->pidfd);
		return ret;
	}
	describe_allocators(t->probes, t->allocators, sizeof(t->allocators));
	t->cooperative = process_probes__cooperative(t->probes);
	t->sampler[0] = '\0';
	if (t->cooperative && process_probes__file_count(t->probes) == 1) {
		const char *path = process_probes__file_at(t->probes, 0);
		const char *base = strrchr(path, '/');

		snprintf(t->sampler, sizeof(t->sampler), "%s", base ? base + 1 : path);
	}
	cap->n_targets++;
	return 0;
}

/* A cooperative target's probes as they are: "1 USDT site (otel_memory:alloc) in
 * /usr/local/lib/liballocscope-sampler.so, on a nop5". */
static const char *usdt_sites(const struct capture *cap, const struct process_probes *probes,
			      char *buf, size_t len)
{
	size_t n = process_probes__count(probes), nop5 = process_probes__on_nop5(probes);
	size_t stepped = process_probes__single_stepped(probes), nop = n - nop5 - stepped;
	size_t used = (size_t)snprintf(buf, len, "%zu USDT site%s (otel_memory:alloc%s) in ", n,
				       n == 1 ? "" : "s",
				       alloc_program__tracks_live(pipeline__program(cap->pipeline))
					       ? ", otel_memory:free"
					       : "");

	for (size_t k = 0; k < process_probes__file_count(probes) && used < len; k++)
		used += (size_t)snprintf(buf + used, len - used, "%s%s", k ? ", " : "",
					 process_probes__file_at(probes, k));
	if (used >= len)
		return buf;
	if (n == 1)
		snprintf(buf + used, len - used, ", %s",
			 nop5 ? "on a nop5" : nop ? "on a nop" : "single-stepped (not a nop)");
	else if (nop5 == n)
		snprintf(buf + used, len - used, ", all on nop5s");
	else
		snprintf(buf + used, len - used, ": %zu on nop5s, %zu on nops, %zu single-stepped "
			 "(not a nop)", nop5, nop, stepped);
	return buf;
}

static void describe_targets(const struct capture *cap)
{
	char rate[32], how[160];
	size_t cooperative = 0;

	units_format_size((double)cap->opts->sampling.sample_rate, rate, sizeof(rate));
	for (size_t i = 0; i < cap->n_targets; i++) {
		const struct target *t = &cap->targets[i];
		size_t stepped = process_probes__single_stepped(t->probes);

		char files[1024] = "";
		size_t used = 0;

		for (size_t k = 0; k < process_probes__file_count(t->probes) && used < sizeof(files);
		     k++)
			used += (size_t)snprintf(files + used, sizeof(files) - used, "%s%s (%s)",
						 k ? ", " : "", process_probes__file_at(t->probes, k),
						 process_probes__file_allocators(t->probes, k));
		if (process_probes__cooperative(t->probes))
			log_info("profiling pid %d (%s): %s", (int)t->pid, t->comm,
				 usdt_sites(cap, t->probes, files, sizeof(files)));
		else if (process_probes__frees(t->probes))
			log_info("profiling pid %d (%s): %zu probes (%zu of them on frees, for "
				 "in-use; session uprobes: returns of sampled calls only) on %s, %s",
				 (int)t->pid, t->comm, process_probes__count(t->probes),
				 process_probes__frees(t->probes), files,
				 stepped ? "some single-stepped (slower)"
					 : "all on emulated instructions");
		else
			log_info("profiling pid %d (%s): %zu probes on %s, %s", (int)t->pid,
				 t->comm, process_probes__count(t->probes), files,
				 stepped ? "some single-stepped (slower)"
					 : "all on emulated instructions");
		if (log_max_level >= LOG_DEBUG || stepped)
			process_probes__describe(t->probes, stderr);
	}
	for (size_t i = 0; i < cap->n_targets; i++)
		if (process_probes__cooperative(cap->targets[i].probes))
			cooperative++;
	if (cooperative == cap->n_targets)
		snprintf(how, sizeof(how), "sampling in-process: the targets' own sampler fires "
			 "otel_memory:alloc, each sample weighted at its rate");
	else if (cooperative)
		snprintf(how, sizeof(how), "sampling every %s on average (the targets that fire "
			 "otel_memory:alloc sample in-process, at their sampler's own rate)", rate);
	else
		snprintf(how, sizeof(how), "sampling every %s on average", rate);
	log_info("%s; %s", how,
		 cap->opts->duration_ms ? "stops after the duration, Ctrl-C, or when the targets exit"
					: "Ctrl-C stops, or when the targets exit");
}

/* The command is forked, waits for the probes, then execs; the probes follow the process
 * through exec because they are filtered by task, and libc is mapped after exec by inode. */
struct command_start {
	int go_pipe[2];     /* parent writes one byte when the probes are in place */
	int status_pipe[2]; /* CLOEXEC: EOF means exec succeeded, else the child's errno */
};

static int resolve_command(const char *name, char *path, size_t len)
{
	const char *search = getenv("PATH");

	if (strchr(name, '/')) {
		snprintf(path, len, "%s", name);
		return access(path, X_OK) == 0 ? 0 : -errno;
	}
	if (!search || !*search)
		search = "/usr/local/bin:/usr/bin:/bin";
	while (*search) {
		size_t dir_len = strcspn(search, ":");
		struct stat st;

		snprintf(path, len, "%.*s/%s", (int)dir_len, dir_len ? search : ".", name);
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0)
			return 0;
		search += dir_len + (search[dir_len] == ':');
	}
	return -ENOENT;
}

static int start_command(struct capture *cap)
{
	char **argv = cap->opts->command;
	char exe[PATH_MAX];
	struct command_start cs;
	int ret, child_errno = 0;
	pid_t pid;

	ret = resolve_command(argv[0], exe, sizeof(exe));
	if (ret) {
		log_error("cannot run %s: %s", argv[0],
			  ret == -ENOENT ? "command not found" : strerror(-ret));
		return ret;
	}
	if (pipe2(cs.go_pipe, O_CLOEXEC) || pipe2(cs.status_pipe, O_CLOEXEC)) {
		log_error("cannot start %s: %s", argv[0], strerror(errno));
		return -errno;
	}
	pid = fork();
	if (pid < 0) {
		log_error("cannot start %s: %s", argv[0], strerror(errno));
		return -errno;
	}
	if (pid == 0) {
		char go;

		close(cs.go_pipe[1]);
		close(cs.status_pipe[0]);
		/* Before the probes go in: they are attached to what the caller may run. */
		if (privileges__drop_for_command() != 0)
			_exit(127);
		if (read(cs.go_pipe[0], &go, 1) != 1)
			_exit(127); /* the profiler gave up: do not run unprofiled */
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		execv(exe, argv);
		child_errno = errno;
		if (write(cs.status_pipe[1], &child_errno, sizeof(child_errno)) < 0)
			_exit(127);
		_exit(127);
	}
	close(cs.go_pipe[0]);
	close(cs.status_pipe[1]);
	cap->child = pid;

	/* Its allocator is found from its executable and the libraries it will load. */
	ret = add_target(cap, pid, exe, false);
	if (ret) {
		close(cs.go_pipe[1]); /* the child exits without running the command */
		close(cs.status_pipe[0]);
		waitpid(pid, NULL, 0);
		cap->child = 0;
		return ret;
	}
	/* Its files' unwind tables, before it runs: the kernel walks its first samples too. */
	pipeline__prepare_command(cap->pipeline, exe);
	/* Its map is complete only once the loader has run, and a short command is gone before
	 * the first drain: it is read again at its exit. */
	{
		char err[512];

		if (exit_hold__new(pid, &cap->hold, err, sizeof(err)) != 0)
			log_warn("%s", err);
	}
	if (write(cs.go_pipe[1], "g", 1) != 1)
		log_warn("cannot release the command: %s", strerror(errno));
	close(cs.go_pipe[1]);
	ret = (int)read(cs.status_pipe[0], &child_errno, sizeof(child_errno));
	close(cs.status_pipe[0]);
	if (ret == (int)sizeof(child_errno)) {
		log_error("cannot run %s: %s", exe, strerror(child_errno));
		return -child_errno;
	}
	/* Exec'ed: snapshot the new image now (libraries the loader maps next are found by the
	 * symbolizer's re-read on the first unknown address). */
	process_info__read_comm(pid, cap->targets[cap->n_targets - 1].comm,
		  sizeof(cap->targets[cap->n_targets - 1].comm));
	snapshot_process(cap, pid);
	return 0;
}

/* A target's duty cycle changed its fraction: say so, and point to the cooperative path. */
static void log_duty_change(const struct capture *cap, const struct target *t)
{
	struct duty_cycle_stats st;

	duty_cycle__stats(t->duty, &st);
	if (st.fraction < 1.0 && t->throttled_now) {
		log_debug("pid %d (%s): now probed %.2f%% of the time", (int)t->pid, t->comm,
			  100 * st.fraction);
		return;
	}
	if (st.fraction < 1.0)
		log_info("pid %d (%s): over the overhead budget (%.3g%% of its CPU): probed %.1f%% "
			 "of the time, its estimates scaled by %.3g (an in-process sampler, "
			 "liballocscope-sampler.so, costs almost nothing: docs/operations.md)",
			 (int)t->pid, t->comm, cap->opts->max_overhead_percent, 100 * st.fraction,
			 1 / st.fraction);
	else
		log_info("pid %d (%s): within the overhead budget again: probed all the time",
			 (int)t->pid, t->comm);
}

static void tick_duty_cycles(struct capture *cap)
{
	int64_t now = elapsed_ms(cap), next = 0;

	for (size_t i = 0; i < cap->n_targets; i++) {
		struct target *t = &cap->targets[i];
		struct process_probes *detached;
		int64_t when;
		char err[512];
		bool changed;
		int attach_error;

		if (!t->duty || t->exited)
			continue;
		when = duty_cycle__tick(t->duty, now, &detached, &changed, &attach_error, err,
					sizeof(err));
		detach_queue__push(cap->detacher, detached);
		if (attach_error && attach_error != -ESRCH)
			log_warn("%s", err);
		if (changed) {
			log_duty_change(cap, t);
			duty_cycle__stats(t->duty, &t->duty_stats);
			if (t->throttled_now && t->duty_stats.fraction >= 1.0)
				t->inuse_since_ms = now;
			t->throttled_now = t->duty_stats.fraction < 1.0;
			t->throttled |= t->throttled_now;
		}
		if (!next || when < next)
			next = when;
	}
	cap->next_duty_ms = next;
}

/* A target's duty cycle ends (it exited, or the capture ends): its held samples are added,
 * its statistics kept for the summary. */
static void end_duty_cycle(struct capture *cap, struct target *t, int64_t now)
{
	if (!t->duty)
		return;
	duty_cycle__stats(t->duty, &t->duty_stats);
	duty_cycle__free(t->duty, now);
	t->duty = NULL;
}

static void end_duty_cycles(struct capture *cap)
{
	int64_t now = elapsed_ms(cap);

	for (size_t i = 0; i < cap->n_targets; i++)
		end_duty_cycle(cap, &cap->targets[i], now);
}

static bool all_exited(const struct capture *cap)
{
	for (size_t i = 0; i < cap->n_targets; i++)
		if (!cap->targets[i].exited)
			return false;
	return true;
}

/* In-use: one live-set callback per entry of the kernel's map. */
static int add_live(const struct alloc_live_key *key, const struct alloc_live *value, void *ctx)
{
	struct capture *cap = ctx;

	/* A throttled target's live set holds at most its current window: not its in-use. */
	for (size_t i = 0; i < cap->n_targets; i++)
		if (cap->targets[i].pid == (pid_t)key->pid && cap->targets[i].throttled_now)
			return 0;
	if (alloc_profile__inuse_add(cap->profile, key->pid, value->time_ns, value->size,
				     value->weighted_bytes) != 0)
		cap->handler_errors++;
	return 0;
}

/* A snapshot of what is live now (--inuse): queued samples first, so that each live entry
 * finds the stack it was sampled with. Exited targets keep their entries until the end:
 * what a process never freed before it exited is what a leak hunt wants to see. */
static void inuse_snapshot(struct capture *cap)
{
	struct alloc_program *prog = pipeline__program(cap->pipeline);
	struct alloc_counters counters;
	struct timespec now;

	if (!cap->opts->inuse)
		return;
	pipeline__drain(cap->pipeline);
	clock_gettime(CLOCK_MONOTONIC, &now);
	alloc_profile__inuse_begin(cap->profile,
				   (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec);
	if (alloc_program__for_each_live(prog, add_live, cap) < 0)
		log_warn("cannot read the in-use map: %s", strerror(errno));
	alloc_program__read_counters(prog, &counters);
	alloc_profile__inuse_end(cap->profile, counters.live_overflow);
}

static void run_loop(struct capture *cap)
{
	const struct capture_opts *opts = cap->opts;
	struct pollfd fds[CAPTURE_MAX_PIDS + 2];
	bool progress = isatty(STDERR_FILENO);
	int64_t last_progress = 0, last_snapshot = 0;
	/* In-use snapshots: at half the duration (growth = end - middle), or every 10 s. */
	int64_t snapshot_every = opts->duration_ms ? (int64_t)opts->duration_ms / 2 : 10000;

	while (!stop_signal && !all_exited(cap)) {
		int64_t now = elapsed_ms(cap);
		int timeout = DRAIN_INTERVAL_MS;
		size_t n = 0;

		if (opts->duration_ms && now >= (int64_t)opts->duration_ms)
			break;
		if (opts->duration_ms && (int64_t)opts->duration_ms - now < timeout)
			timeout = (int)((int64_t)opts->duration_ms - now);
		if (cap->next_duty_ms && cap->next_duty_ms - now < timeout)
			timeout = cap->next_duty_ms > now ? (int)(cap->next_duty_ms - now) : 0;
		for (size_t i = 0; i < cap->n_targets; i++) {
			if (cap->targets[i].exited)
				continue;
			fds[n].fd = cap->targets[i].pidfd;
			fds[n].events = POLLIN;
			fds[n].revents = 0;
			n++;
		}
		/* Then the command held at its exit, if it is; last the ring buffer, readable
		 * when the program wants an early drain. */
		fds[n].fd = exit_hold__fd(cap->hold);
		fds[n].events = POLLIN;
		fds[n].revents = 0;
		fds[n + 1].fd = pipeline__fd(cap->pipeline);
		fds[n + 1].events = POLLIN;
		fds[n + 1].revents = 0;
		if (poll(fds, n + 2, timeout) > 0) {
			for (size_t i = 0, k = 0; i < cap->n_targets; i++) {
				if (cap->targets[i].exited)
					continue;
				if (fds[k++].revents) {
					cap->targets[i].exited = true;
					/* Its last samples first: they belong to its period. */
					pipeline__drain(cap->pipeline);
					end_duty_cycle(cap, &cap->targets[i], elapsed_ms(cap));
					log_info("pid %d (%s) exited", (int)cap->targets[i].pid,
						 cap->targets[i].comm);
				}
			}
			if (fds[n].revents) {
				/* Every library it loaded is still mapped: the last word on its
				 * map, kept after it is gone. */
				snapshot_process(cap, cap->child);
				exit_hold__release(cap->hold);
			}
		}
		pipeline__drain(cap->pipeline);
		if (opts->inuse && now - last_snapshot >= snapshot_every) {
			inuse_snapshot(cap);
			last_snapshot = now;
		}
		tick_duty_cycles(cap);
		if (progress && now - last_progress >= 1000) {
			struct alloc_profile_totals totals;

			alloc_profile__totals(cap->profile, &totals);
			fprintf(stderr, "\rallocscope: %5.1fs  %llu samples ", now / 1000.0,
				(unsigned long long)totals.samples);
			last_progress = now;
		}
	}
	if (progress && last_progress)
		fputc('\n', stderr);
}

/* "liballocscope-sampler.so": the file the cooperative targets' otel_memory:alloc sites are
 * in, when it is the same for all of them, else NULL; *n gets how many targets are
 * cooperative. */
static const char *in_process_sampler(const struct capture *cap, size_t *n)
{
	const char *name = NULL;
	bool same = true;

	*n = 0;
	for (size_t i = 0; i < cap->n_targets; i++) {
		const struct target *t = &cap->targets[i];

		if (!t->cooperative)
			continue;
		(*n)++;
		if (!t->sampler[0] || (name && strcmp(name, t->sampler) != 0))
			same = false;
		name = t->sampler;
	}
	return same ? name : NULL;
}

/* How the samples were taken, for the summary's first line: the agent's rate, or for targets
 * with an in-process sampler (the cooperative path) that sampler and the rate its samples'
 * weights show (the agent's --sample-rate plays no part there). */
static const char *how_sampled(const struct capture *cap, const struct alloc_profile_totals *t,
			       const char *rate, char *buf, size_t len)
{
	char sampler[4 * PATH_MAX + 1] = "the targets' in-process samplers", low[32], high[32];
	char at[96] = ", weights from the sampler";
	size_t n_coop = 0, used = 0;
	const char *name = in_process_sampler(cap, &n_coop);

	if (!n_coop) {
		snprintf(buf, len, "sample rate %s", rate);
		return buf;
	}
	if (name)
		log_escaped(sampler, name);
	units_format_size(t->sampler_rate_min, low, sizeof(low));
	units_format_size(t->sampler_rate_max, high, sizeof(high));
	if (t->sampler_rate_min > 0 && t->sampler_rate_max <= t->sampler_rate_min * 1.01)
		snprintf(at, sizeof(at), " at %s, as its weights show", high);
	else if (t->sampler_rate_min > 0)
		snprintf(at, sizeof(at), " at %s to %s, as their weights show", low, high);
	if (n_coop < cap->n_targets)
		used = (size_t)snprintf(buf, len, "sample rate %s; %zu of %zu processes ", rate,
					n_coop, cap->n_targets);
	if (used < len)
		snprintf(buf + used, len - used, "sampled in-process by %s%s", sampler, at);
	return buf;
}

/* The top table grouped by --group-by's label: per value (largest first) a line with its
 * share, then its largest `rows` sites. */
static void print_grouped_top(struct capture *cap, const struct alloc_profile_totals *totals,
			      size_t rows)
{
	const char *key = cap->opts->group_by;
	struct alloc_site sites[256];
	char what[256], group[4 * 1024 + 1];
	struct top_table_columns columns = { "alloc_space", "bytes", "alloc_objects", "count",
					     what };
	size_t n = 0, groups = 0;

	if (alloc_profile__top_sites_by_label(cap->profile, key, rows, sites,
					      sizeof(sites) / sizeof(sites[0]), &n) != 0)
		return;
	snprintf(what, sizeof(what), "allocation site, by %s", key);
	top_table_print_head(stdout, &columns);
	for (size_t i = 0; i < n; i++) {
		const struct alloc_site *s = &sites[i];

		if (i == 0 || strcmp(s->group, sites[i - 1].group) != 0) {
			groups++;
			snprintf(group, sizeof(group), "%s=%s", key,
				 s->group[0] ? s->group : "(none)");
			top_table_print_row(stdout, &columns, "", group, s->group_bytes,
					    s->group_objects, totals->bytes);
		}
		top_table_print_row(stdout, &columns, "  ", s->function, s->bytes, s->objects,
				    totals->bytes);
	}
	top_table_print_total(stdout, &columns, totals->bytes, totals->objects);
	if (groups == 1 && n && !sites[0].group[0])
		printf("(no sample carries the label %s)\n", key);
}

/* --inuse: live sites by size, the age of their oldest live sample, and how their live total
 * grew between the last two snapshots (a leak grows; a cache that is merely big does not). */
static void print_leak_table(struct capture *cap, struct alloc_site *sites, size_t rows)
{
	struct alloc_profile_inuse inuse;
	char bytes[32], growth[32], function[1024];
	size_t n = 0;
	double minutes;

	alloc_profile__inuse_totals(cap->profile, &inuse);
	minutes = inuse.prev_snapshot_ns ? (double)(inuse.snapshot_ns - inuse.prev_snapshot_ns) /
						   60e9
					 : 0;
	printf("\nin use at the end: %s in %.0f objects (%llu live samples)\n",
	       units_format_size(inuse.bytes, bytes, sizeof(bytes)), inuse.objects,
	       (unsigned long long)inuse.live_samples);
	if (inuse.overflow)
		printf("in-use estimates are LOW: %llu sampled allocations were not tracked (the "
		       "live map was full: raise --inuse-entries)\n",
		       (unsigned long long)inuse.overflow);
	for (size_t i = 0; i < cap->n_targets; i++) {
		const struct target *t = &cap->targets[i];
		char comm[64];

		if (!t->throttled)
			continue;
		if (t->throttled_now)
			printf("in-use of pid %d (%s): unknown, left out: the overhead budget "
			       "throttles it (its frees go unseen while its probes are detached)\n",
			       (int)t->pid, log_escaped(comm, t->comm));
		else
			printf("in-use of pid %d (%s): only what it allocated since %.1f s into the "
			       "capture, when the overhead budget stopped throttling it (its frees "
			       "went unseen while its probes were detached)\n",
			       (int)t->pid, log_escaped(comm, t->comm),
			       (double)t->inuse_since_ms / 1e3);
	}
	if (alloc_profile__top_live_sites(cap->profile, sites, rows, &n) != 0 || n == 0)
		return;
	printf("\n%14s %7s %13s %11s %16s  %s\n", "inuse_space", "share", "inuse_objects",
	       "oldest", minutes > 0 ? "growth/min" : "growth", "live site");
	for (size_t i = 0; i < n; i++) {
		double age = sites[i].oldest_live_ns && inuse.snapshot_ns > sites[i].oldest_live_ns
				     ? (double)(inuse.snapshot_ns - sites[i].oldest_live_ns) / 1e9
				     : 0;
		double g = minutes > 0 ? sites[i].inuse_growth / minutes : 0;

		units_format_size(g < 0 ? -g : g, growth, sizeof(growth));
		printf("%14s %6.1f%% %13.0f %10.1fs %s%15s  %s\n",
		       units_format_size(sites[i].inuse_bytes, bytes, sizeof(bytes)),
		       inuse.bytes > 0 ? 100.0 * sites[i].inuse_bytes / inuse.bytes : 0.0,
		       sites[i].inuse_objects, age, minutes > 0 ? (g < 0 ? "-" : "+") : " ",
		       minutes > 0 ? growth : "n/a", log_escaped(function, sites[i].function));
	}
}

/* --max-overhead: each target's duty cycle; the throttled ones named, with the way out. */
static void print_budget(const struct capture *cap)
{
	char comm[4 * 64 + 1];
	bool throttled = false;

	if (cap->opts->max_overhead_percent <= 0)
		return;
	for (size_t i = 0; i < cap->n_targets; i++) {
		const struct target *t = &cap->targets[i];
		const struct duty_cycle_stats *st = &t->duty_stats;

		if (t->cooperative) {
			printf("overhead budget %.3g%%: pid %d (%s) samples in-process: never "
			       "throttled\n",
			       cap->opts->max_overhead_percent, (int)t->pid,
			       log_escaped(comm, t->comm));
			continue;
		}
		printf("overhead budget %.3g%%: pid %d (%s) probed %.1f%% of the time (duty "
		       "fraction %.3f, lowest %.3f); estimated probe cost %.2f%% of its CPU "
		       "(%.1f%% if probed all the time; a hit %.0f ns, %s)%s\n",
		       cap->opts->max_overhead_percent, (int)t->pid, log_escaped(comm, t->comm),
		       100 * st->mean_fraction, st->mean_fraction, st->min_fraction,
		       100 * st->probe_share, 100 * st->probe_share_full,
		       st->ns_per_hit > 0 ? st->ns_per_hit : cap->ns_per_hit,
		       st->cost_measured ? "measured in it" : "as calibrated",
		       t->throttled ? "; throttled: its estimates are scaled by the inverse of the "
				      "fraction"
				    : "");
		throttled |= t->throttled;
	}
	if (throttled)
		printf("throttled processes can be profiled all the time at a few ns per "
		       "allocation with the in-process sampler (LD_PRELOAD=liballocscope-sampler.so; see "
		       "docs/operations.md)\n");
}

/* What a sample cost in the kernel-to-agent ring: records carry only the sections their
 * mode uses (bpf/alloc.h), so this is the number to size --ringbuf-size by. */
static void print_record_size(const struct capture *cap)
{
	uint64_t records, bytes;

	pipeline__record_stats(cap->pipeline, &records, &bytes);
	if (records)
		printf("sample records: %llu, %.0f bytes each on average in the ring buffer\n",
		       (unsigned long long)records, (double)bytes / (double)records);
}

static void print_summary(struct capture *cap, const struct alloc_counters *counters,
			  int64_t duration_ms)
{
	struct alloc_site sites[64];
	struct alloc_profile_totals totals;
	size_t n = 0, rows = cap->opts->top;
	char bytes[32], rate[32], comm[4 * 64 + 1], allocators[4 * 512 + 1];
	char sampling[4 * PATH_MAX + 256];

	alloc_profile__totals(cap->profile, &totals);
	units_format_size((double)cap->opts->sampling.sample_rate, rate, sizeof(rate));
	struct rusage usage;
	double agent_ms = 0;

	if (getrusage(RUSAGE_SELF, &usage) == 0)
		agent_ms = (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e3 +
			   (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e3;
	printf("\nallocscope: %llu samples from %zu process%s in %.1fs (%s; agent CPU %.0f ms)\n",
	       (unsigned long long)totals.samples, cap->n_targets, cap->n_targets == 1 ? "" : "es",
	       duration_ms / 1000.0, how_sampled(cap, &totals, rate, sampling, sizeof(sampling)),
	       agent_ms);
	/* Names and paths come from the targets: escaped like every logged name (log.h). */
	for (size_t i = 0; i < cap->n_targets; i++)
		printf("allocator of pid %d (%s): %s\n", (int)cap->targets[i].pid,
		       log_escaped(comm, cap->targets[i].comm),
		       log_escaped(allocators, cap->targets[i].allocators));
	print_budget(cap);
	print_record_size(cap);
	if (rows > sizeof(sites) / sizeof(sites[0]))
		rows = sizeof(sites) / sizeof(sites[0]);
	if (totals.samples && cap->opts->group_by) {
		print_grouped_top(cap, &totals, rows);
	} else if (totals.samples && alloc_profile__top_sites(cap->profile, sites, rows, &n) == 0) {
		static const struct top_table_columns columns = {
			"alloc_space", "bytes", "alloc_objects", "count", "allocation site"
		};
		struct top_table_row table[64];

		for (size_t i = 0; i < n; i++)
			table[i] = (struct top_table_row){ sites[i].function, sites[i].bytes,
							   sites[i].objects };
		top_table_print(stdout, &columns, table, n, totals.bytes, totals.objects);
	}
	if (cap->opts->inuse)
		print_leak_table(cap, sites, rows);
	/* The depth limit: the kernel's frame-pointer walk's with unwind fp, else the CFI walk's. */
	char depth_cut_what[160];

	snprintf(depth_cut_what, sizeof(depth_cut_what),
		 "stacks cut at the depth limit (%u frames): the innermost frames kept, under a "
		 "root frame " ALLOC_PROFILE_TRUNCATED_FRAME,
		 cap->opts->sampling.unwind == UNWIND_FP ? ALLOC_MAX_STACK_DEPTH : UNWIND_MAX_FRAMES);
	const struct {
		uint64_t count;
		const char *what;
	} losses[] = {
		{ counters->drops_unweighted,
		  "samples lost with their weight: the ring buffer and the drop notices' ring "
		  "were full (raise the sample rate or --ringbuf-size)" },
		{ counters->stack_errors, "stacks failed: kept with the direct caller only" },
		{ counters->caller_errors, "direct callers unreadable" },
		{ counters->storage_errors, "allocations not counted: no per-thread countdown" },
		{ cap->handler_errors, "samples dropped: out of memory" },
		{ counters->stack_copy_errors, "samples without a stack copy: stack unreadable" },
		{ counters->not_permitted, "samples refused: the process ran with credentials "
					   "other than the caller's (a set-user-ID program?)" },
		{ pipeline__truncated_unwinds(cap->pipeline),
		  "stacks cut short: kept the frames found (debug info may help; with "
		  "--unwind dwarf, a larger --stack-copy-size)" },
		{ pipeline__depth_cut_unwinds(cap->pipeline), depth_cut_what },
		{ pipeline__malformed(cap->pipeline), "malformed records" },
		{ counters->unwind_fallbacks, "samples sent with a stack copy: no unwind table for "
					      "the process or its leaf yet (unwound in user space)" },
		{ counters->unwind_preempted, "stacks lost to another walk on the same CPU (their "
					      "weight kept under [dropped samples])" },
		{ counters->context_torn, "samples without request context: the thread's record "
					  "was mid-update (valid != 1)" },
		{ counters->context_unreadable, "samples without request context: the thread's "
						"record was unreadable" },
		{ cap->label_stats.labels_dropped, "sample labels left out: key not in "
						   "sample_labels.keys or past max_keys" },
		{ cap->label_stats.values_other, "sample label values counted as \"other\": past "
						 "sample_labels.max_values" },
		{ counters->not_dumpable, "samples without a stack copy: the process is not "
					  "dumpable (PR_SET_DUMPABLE 0), its stack memory is not yours "
					  "to read (stacks from the direct caller and the frame walk)" },
		{ counters->live_returns_lost, "sampled allocations not tracked as live: the call "
					       "failed, or a sampled call nested in it took its "
					       "place (in-use)" },
	};
	uint64_t weighed_drops = counters->ringbuf_full - counters->drops_unweighted;
	bool header = false;

	if (weighed_drops) {
		printf("\nlost or degraded:\n");
		header = true;
		printf("  %llu samples dropped: ring buffer full; their %s are kept under "
		       ALLOC_PROFILE_DROPPED_FRAME " (raise the sample rate or --ringbuf-size)\n",
		       (unsigned long long)weighed_drops,
		       units_format_size(totals.dropped_bytes, bytes, sizeof(bytes)));
	}
	for (size_t i = 0; i < sizeof(losses) / sizeof(losses[0]); i++) {
		if (!losses[i].count)
			continue;
		if (!header)
			printf("\nlost or degraded:\n");
		header = true;
		printf("  %llu %s\n", (unsigned long long)losses[i].count, losses[i].what);
	}
}

/* "overhead budget 5%: pid 42 probed a fraction 0.120 of the time, its estimates scaled by
 * the inverse", for each throttled target; "" when none was throttled. */
static void budget_comment(const struct capture *cap, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < cap->n_targets && used < len; i++) {
		const struct target *t = &cap->targets[i];

		if (!t->throttled)
			continue;
		if (!used)
			used += (size_t)snprintf(buf, len, "overhead budget %.3g%%:",
						 cap->opts->max_overhead_percent);
		if (used < len)
			used += (size_t)snprintf(buf + used, len - used,
						 " pid %d probed a fraction %.3f of the time "
						 "(lowest %.3f), its estimates scaled by the "
						 "inverse;",
						 (int)t->pid, t->duty_stats.mean_fraction,
						 t->duty_stats.min_fraction);
		if (used < len && cap->opts->inuse && t->throttled_now)
			used += (size_t)snprintf(buf + used, len - used,
						 " its in-use unknown (throttled: frees unseen), "
						 "left out;");
		else if (used < len && cap->opts->inuse)
			used += (size_t)snprintf(buf + used, len - used,
						 " its in-use only since %.1f s (frees unseen "
						 "while throttled);",
						 (double)t->inuse_since_ms / 1e3);
	}
}

static int write_profile(struct capture *cap, int64_t duration_ms)
{
	char line1[4 * PATH_MAX + 320], line2[256], how[4 * PATH_MAX + 256], rate[32];
	char line3[1024] = "";
	const char *comments[] = { line1, line2, line3, NULL };
	struct alloc_profile_totals totals;
	size_t used = 0, n_coop;
	int ret;

	/* With an in-process sampler, its rate, not the period's (the agent's --sample-rate). */
	in_process_sampler(cap, &n_coop);
	if (n_coop) {
		alloc_profile__totals(cap->profile, &totals);
		units_format_size((double)cap->opts->sampling.sample_rate, rate, sizeof(rate));
		snprintf(line1, sizeof(line1), "allocscope %s, %s", ALLOCSCOPE_VERSION,
			 how_sampled(cap, &totals, rate, how, sizeof(how)));
	} else {
		snprintf(line1, sizeof(line1), "allocscope %s, sample rate %llu bytes",
			 ALLOCSCOPE_VERSION, (unsigned long long)cap->opts->sampling.sample_rate);
	}
	used = (size_t)snprintf(line2, sizeof(line2), "targets:");
	for (size_t i = 0; i < cap->n_targets && used < sizeof(line2); i++)
		used += (size_t)snprintf(line2 + used, sizeof(line2) - used, " %d (%s)",
					 (int)cap->targets[i].pid, cap->targets[i].comm);
	budget_comment(cap, line3, sizeof(line3));
	if (!line3[0])
		comments[2] = NULL;
	struct alloc_profile_output output = {
		.start_ns = cap->start_wall_ns,
		.duration_ns = duration_ms * 1000000,
		.comments = comments,
		.pid_label = true,
	};

	ret = alloc_profile__write_pprof(cap->profile, cap->output, &output);
	if (ret == -EEXIST)
		log_error("cannot write the profile to %s: it is no longer a regular file (it was "
			  "replaced during the capture; nothing was written)",
			  cap->output);
	else if (ret)
		log_error("cannot write the profile to %s: %s%s", cap->output, strerror(-ret),
			  ret == -ENOSPC || ret == -EDQUOT
				  ? " (free some space or give another --output; the summary "
				    "below is all that is left of this capture)"
				  : "");
	return ret;
}

static int child_exit_status(pid_t child)
{
	int status;

	while (waitpid(child, &status, 0) < 0) {
		if (errno != EINTR)
			return 1;
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 1;
}

static void release_targets(struct capture *cap)
{
	for (size_t i = 0; i < cap->n_targets; i++) {
		process_probes__free(cap->targets[i].probes);
		cap->targets[i].probes = NULL;
	}
}

int capture_run(const struct capture_opts *opts)
{
	struct pipeline_caller caller;
	struct capture cap = { .opts = opts };
	struct alloc_counters counters;
	struct sigaction sa = { .sa_handler = on_stop_signal };
	char err[512] = "";
	pid_t pids[CAPTURE_MAX_PIDS];
	size_t n_pids;
	int64_t duration_ms;
	int ret, status = 1;

	if (privileges__check_start(PRIVILEGES_CAPTURE, err, sizeof(err)) != 0) {
		log_error("%s", err);
		return 1;
	}
	caller.only_caller = privileges__borrowed();
	privileges__caller(&caller.uid, &caller.gid);
	if (prepare_output(&cap, opts->n_pids ? opts->pids[0] : getpid()) != 0)
		return 1;
	ret = pipeline__open(&opts->sampling, &caller, on_sample, &cap, &cap.pipeline, err,
			     sizeof(err));
	if (ret) {
		log_error("%s", err);
		return 1;
	}
	if (opts->sample_labels &&
	    pipeline__set_label_limits(cap.pipeline, opts->sample_labels, &cap.label_stats) != 0) {
		log_error("cannot set up the capture: out of memory");
		goto out;
	}
	if (pipeline__new_profile(cap.pipeline, &cap.profile) != 0 ||
	    (opts->inuse && alloc_profile__enable_inuse(cap.profile) != 0) ||
	    (opts->skip_frames &&
	     alloc_profile__set_skip_frames(cap.profile, opts->skip_frames, err, sizeof(err)))) {
		log_error("cannot set up the capture: out of memory");
		goto out;
	}
	if (opts->max_overhead_percent > 0) {
		ret = probe_cost__measure(pipeline__program(cap.pipeline), &cap.ns_per_hit);
		if (ret == 0)
			ret = detach_queue__new(2, &cap.detacher);
		if (ret) {
			log_error("cannot set up the overhead budget: measuring the cost of a "
				  "probe hit failed: %s (run without --max-overhead)",
				  strerror(-ret));
			goto out;
		}
		log_info("overhead budget %.3g%% of each target's CPU time; a probe hit costs "
			 "%.0f ns here",
			 opts->max_overhead_percent, cap.ns_per_hit);
	}
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	clock_gettime(CLOCK_MONOTONIC, &cap.start_mono);
	{
		struct timespec wall;

		clock_gettime(CLOCK_REALTIME, &wall);
		cap.start_wall_ns = (int64_t)wall.tv_sec * 1000000000 + wall.tv_nsec;
	}
	n_pids = unique_processes(opts, pids);
	for (size_t i = 0; i < n_pids; i++) {
		if (add_target(&cap, pids[i], NULL, true) != 0)
			goto out;
	}
	if (opts->command) {
		if (start_command(&cap) != 0)
			goto out;
		if (!opts->output) {
			/* The default name carries the command's pid, known only now. */
			prepare_output(&cap, cap.child);
		}
	}
	/* Attached: what follows reads /proc, files and samples, and writes the profile. */
	if (privileges__keep_needed(PRIVILEGES_CAPTURE, false, err, sizeof(err)) != 0) {
		log_error("%s", err);
		goto out;
	}
	describe_targets(&cap);
	run_loop(&cap);
	if (stop_signal)
		log_info("stopping on %s", stop_signal == SIGINT ? "Ctrl-C" : "SIGTERM");
	duration_ms = elapsed_ms(&cap);

	/* In-use: what is live at the end, while the free probes still see every free. */
	inuse_snapshot(&cap);
	/* Detach first so targets run at full speed again, then take what is still queued. */
	pipeline__drain(cap.pipeline);
	release_targets(&cap);
	pipeline__drain(cap.pipeline);
	end_duty_cycles(&cap);
	alloc_program__read_counters(pipeline__program(cap.pipeline), &counters);
	/* The summary is printed even when the profile cannot be written (a full disk): it is
	 * then the only result of the capture. */
	if (write_profile(&cap, duration_ms) == 0) {
		print_summary(&cap, &counters, duration_ms);
		printf("\nprofile: %s\n", cap.output);
		status = 0;
		if (cap.html[0] && cap.profile && write_html(&cap) == 0)
			printf("flame graph: %s\n", cap.html);
		else if (cap.html[0])
			status = 1;
	} else {
		print_summary(&cap, &counters, duration_ms);
		printf("\nprofile: not written (see the error above)\n");
	}
out:
	release_targets(&cap);
	end_duty_cycles(&cap);
	detach_queue__free(cap.detacher);
	if (cap.child) {
		if (stop_signal == SIGTERM)
			kill(cap.child, SIGTERM);
		/* Returns once the command exits (the hold passes its signals on meanwhile). */
		exit_hold__free(cap.hold);
		cap.hold = NULL;
		int child_status = child_exit_status(cap.child);

		if (status == 0)
			status = child_status;
	}
	for (size_t i = 0; i < cap.n_targets; i++)
		close(cap.targets[i].pidfd);
	/* The profile resolves through the pipeline's symbolizer: it goes first. */
	alloc_profile__free(cap.profile);
	pipeline__close(cap.pipeline);
	fflush(stdout);
	return status;
}
