/* liballocscope-sampler.so (sampler/) seen from outside: the workload
 * (tests/workloads/sampler_workload.c) runs with the library preloaded and
 * ALLOCSCOPE_SAMPLER_FORCE=1 standing in for an attached profiler, and prints the library's
 * statistics next to the bytes it really allocated. Estimates must land within 5 standard
 * deviations of the truth, the deviation computed from the sizes: a weighted sample of size s
 * taken with p = 1 - exp(-s/R) has variance s^2 (1 - p) / p. The USDT note is read from the
 * file, and the probe's arguments are checked at run time with a ptrace breakpoint on its nop5
 * (no root needed). One line per check; needs build/liballocscope-sampler.so and
 * build/workloads/sampler_workload ($ALLOCSCOPE_BUILD instead of build/), run from the
 * repository root as `make unit` does. */
#include <elf.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/user.h>
#include <sys/wait.h>

#include "unit.h"

#define KIB	     1024ull
#define DEFAULT_RATE (512 * KIB)
#define MAX_NOTES    8

static char sampler_path[PATH_MAX], workload_path[PATH_MAX];
static const unsigned char nop5[5] = {0x0f, 0x1f, 0x44, 0x00, 0x00};

/* ---- Reporting: one line per check ---- */

static void report(bool ok, const char *fmt, ...)
{
	va_list ap;

	printf("%s ", ok ? "ok  " : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	if (!ok)
		unit_case_failures++;
}

/* ---- Running the workload ---- */

struct workload_run {
	int status; /* exit code, 128 + signal, or -1 when it did not start */
	char out[16384];
	char err[4096];
};

/* The environment without anything that would change the library's behaviour, plus extra. */
static char **workload_env(const char *const *extra)
{
	extern char **environ;
	static char *env[1024];
	int n = 0;

	for (char **e = environ; *e && n < 1000; e++) {
		if (strncmp(*e, "LD_PRELOAD=", 11) == 0 || strncmp(*e, "ALLOCSCOPE_", 11) == 0)
			continue;
		env[n++] = *e;
	}
	for (; extra && *extra && n < 1023; extra++)
		env[n++] = (char *)*extra;
	env[n] = NULL;
	return env;
}

/* args: space-separated. Returns the argv array (static storage). */
static char **workload_argv(const char *args)
{
	static char copy[1024];
	static char *argv[64];
	char *save = NULL;
	int n = 0;

	snprintf(copy, sizeof(copy), "%s", args);
	argv[n++] = workload_path;
	for (char *tok = strtok_r(copy, " ", &save); tok && n < 63;
	     tok = strtok_r(NULL, " ", &save))
		argv[n++] = tok;
	argv[n] = NULL;
	return argv;
}

static void drain(int fd, char *buf, size_t cap, size_t *len, bool *open)
{
	ssize_t got = read(fd, buf + *len, cap - 1 - *len);

	if (got <= 0 || *len + (size_t)got >= cap - 1) {
		*open = false;
		if (got > 0)
			*len += (size_t)got;
	} else {
		*len += (size_t)got;
	}
	buf[*len] = '\0';
}

static bool run_workload(const char *const *env, const char *args, struct workload_run *run)
{
	int out_pipe[2], err_pipe[2], status;
	size_t out_len = 0, err_len = 0;
	bool out_open = true, err_open = true;
	char **argv = workload_argv(args), **envp = workload_env(env);
	pid_t pid;

	memset(run, 0, sizeof(*run));
	run->status = -1;
	if (pipe(out_pipe) || pipe(err_pipe))
		return false;
	pid = fork();
	if (pid < 0)
		return false;
	if (pid == 0) {
		dup2(out_pipe[1], STDOUT_FILENO);
		dup2(err_pipe[1], STDERR_FILENO);
		close(out_pipe[0]);
		close(out_pipe[1]);
		close(err_pipe[0]);
		close(err_pipe[1]);
		execve(workload_path, argv, envp);
		_exit(127);
	}
	close(out_pipe[1]);
	close(err_pipe[1]);
	while (out_open || err_open) {
		struct pollfd fds[2] = {{out_open ? out_pipe[0] : -1, POLLIN, 0},
					{err_open ? err_pipe[0] : -1, POLLIN, 0}};

		if (poll(fds, 2, -1) < 0 && errno != EINTR)
			break;
		if (out_open && fds[0].revents)
			drain(out_pipe[0], run->out, sizeof(run->out), &out_len, &out_open);
		if (err_open && fds[1].revents)
			drain(err_pipe[0], run->err, sizeof(run->err), &err_len, &err_open);
	}
	close(out_pipe[0]);
	close(err_pipe[0]);
	if (waitpid(pid, &status, 0) != pid)
		return false;
	run->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	if (run->status != 0 && run->err[0])
		fprintf(stderr, "  workload %s: exit %d, stderr: %s", args, run->status, run->err);
	return true;
}

/* The value after "key " on the line that starts with key. */
static bool output_value(const char *out, const char *key, uint64_t *value)
{
	size_t key_len = strlen(key);

	for (const char *line = out; line && *line;
	     line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		unsigned long long v;

		if (strncmp(line, key, key_len) == 0 && line[key_len] == ' ' &&
		    sscanf(line + key_len + 1, "%llu", &v) == 1) {
			*value = v;
			return true;
		}
	}
	return false;
}

static bool output_has_line(const char *out, const char *text)
{
	size_t len = strlen(text);

	for (const char *line = out; line && *line;
	     line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		if (strncmp(line, text, len) == 0 && (line[len] == '\n' || line[len] == '\0'))
			return true;
	}
	return false;
}

struct sampler_stats {
	uint64_t sampled, weighted, allocated, rate;
};

/* "sampled N weighted_bytes W allocated_bytes B" and "sample_rate R", after prefix. */
static bool parse_stats(const char *out, const char *prefix, struct sampler_stats *st)
{
	char key[64];

	memset(st, 0, sizeof(*st));
	for (const char *line = out; line && *line;
	     line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		unsigned long long s, w, b;
		size_t plen = strlen(prefix);

		if (strncmp(line, prefix, plen) == 0 &&
		    sscanf(line + plen, "sampled %llu weighted_bytes %llu allocated_bytes %llu", &s,
			   &w, &b) == 3) {
			st->sampled = s;
			st->weighted = w;
			st->allocated = b;
			snprintf(key, sizeof(key), "%ssample_rate", prefix);
			return output_value(out, key, &st->rate);
		}
	}
	return false;
}

/* ---- What the statistics should be ---- */

struct expectation {
	double bytes, weighted_var, samples, samples_var;
};

/* Sizes used in turn by each of threads threads for per_thread allocations, at rate. */
static struct expectation expect(const size_t *sizes, int size_count, long per_thread, int threads,
				 uint64_t rate)
{
	struct expectation e = {0};

	for (int i = 0; i < size_count; i++) {
		double count = (double)threads *
			       (double)(per_thread / size_count + (i < per_thread % size_count));
		double s = sizes[i] ? (double)sizes[i] : 1.0;
		double p = -expm1(-s / (double)rate);

		e.bytes += count * (double)sizes[i];
		e.weighted_var += count * s * s * (1 - p) / p;
		e.samples += count * p;
		e.samples_var += count * p * (1 - p);
	}
	return e;
}

/* Weighted bytes and sample count against the expectation: 5 standard deviations, plus room
 * for the process's own few allocations outside the workload's loop (stdio, threads, dlopen;
 * well under 1 MiB in all). */
static void check_estimate(const char *what, const struct sampler_stats *st,
			   const struct expectation *e, uint64_t rate)
{
	double slack = 16.0 * (double)rate + 1024 * KIB;
	double allowed = 5 * sqrt(e->weighted_var) + slack;
	double diff = (double)st->weighted - e->bytes;
	double samples_allowed = 5 * sqrt(e->samples_var) + 16;
	double samples_diff = (double)st->sampled - e->samples;
	bool ok = st->allocated == (uint64_t)e->bytes && fabs(diff) <= allowed &&
		  fabs(samples_diff) <= samples_allowed && st->rate == rate;

	report(ok,
	       "%s: weighted %" PRIu64 " for %" PRIu64 " allocated (%+.2f%%, allowed +-%.2f%%), "
	       "%" PRIu64 " samples (expected %.0f +- %.0f), rate %" PRIu64,
	       what, st->weighted, st->allocated, 100 * diff / e->bytes, 100 * allowed / e->bytes,
	       st->sampled, e->samples, samples_allowed, st->rate);
}

/* Runs the workload with FORCE at rate and checks the estimate; args must match sizes. */
static void run_and_check(const char *what, const char *args, const size_t *sizes, int size_count,
			  long per_thread, int threads, uint64_t rate, const char *preload)
{
	char preload_env[2 * PATH_MAX], rate_env[64];
	const char *env[] = {preload_env, "ALLOCSCOPE_SAMPLER_FORCE=1", rate_env, NULL};
	struct workload_run run;
	struct sampler_stats st;
	struct expectation e = expect(sizes, size_count, per_thread, threads, rate);

	snprintf(preload_env, sizeof(preload_env), "LD_PRELOAD=%s%s%s", sampler_path,
		 preload ? ":" : "", preload ? preload : "");
	snprintf(rate_env, sizeof(rate_env), "ALLOCSCOPE_SAMPLE_RATE=%" PRIu64, rate);
	if (!run_workload(env, args, &run) || run.status != 0 || !parse_stats(run.out, "", &st)) {
		report(false, "%s: workload %s exited %d, output:\n%s", what, args, run.status,
		       run.out);
		return;
	}
	check_estimate(what, &st, &e, rate);
}

/* ---- The checks ---- */

/* (1) Sums of weights are unbiased, for one size and for a mix of sizes. */
static void test_unbiased(void)
{
	static const size_t one[] = {1000};
	static const size_t mix[] = {1, 24, 100, 1000, 4096, 20000, 300000};

	run_and_check("unbiased, 4 threads x 500000 x 1000 B at 64KiB", "-t 4 -n 500000 -s 1000",
		      one, 1, 500000, 4, 64 * KIB, NULL);
	run_and_check("unbiased, 4 threads x 210000, sizes 1 B to 300000 B at 64KiB",
		      "-t 4 -n 210000 -s 1,24,100,1000,4096,20000,300000", mix, 7, 210000, 4,
		      64 * KIB, NULL);
	run_and_check("unbiased, 1 thread x 8000000 x 64 B at the default 512KiB",
		      "-n 8000000 -s 64", (const size_t[]){64}, 1, 8000000, 1, DEFAULT_RATE, NULL);
}

/* (2) Threads, a fork mid-run (the child's statistics are its own, the parent's are
 * unaffected), a dlopen mid-run; and the library dlopen()ed instead of preloaded. */
static void test_threads_fork_dlopen(void)
{
	static const size_t one[] = {1000};
	char preload_env[PATH_MAX + 16], args[PATH_MAX + 32];
	const char *env[] = {preload_env, "ALLOCSCOPE_SAMPLER_FORCE=1",
			     "ALLOCSCOPE_SAMPLE_RATE=64KiB", NULL};
	const char *force_only[] = {"ALLOCSCOPE_SAMPLER_FORCE=1", NULL};
	struct workload_run run;
	struct sampler_stats parent, child;
	struct expectation e_parent = expect(one, 1, 200000, 4, 64 * KIB);
	struct expectation e_child = expect(one, 1, 200000, 1, 64 * KIB);

	snprintf(preload_env, sizeof(preload_env), "LD_PRELOAD=%s", sampler_path);
	if (!run_workload(env, "-t 4 -n 200000 -s 1000 -f -d libz.so.1", &run)) {
		report(false, "threads + fork + dlopen: the workload did not run");
		return;
	}
	report(run.status == 0 && output_has_line(run.out, "child_exit 0") &&
		   output_has_line(run.out, "dlopen libz.so.1 ok compress 0"),
	       "threads + fork + dlopen(libz.so.1): parent exit %d, child and compress() fine: %s",
	       run.status,
	       output_has_line(run.out, "child_exit 0") &&
		       output_has_line(run.out, "dlopen libz.so.1 ok compress 0")
		   ? "yes"
		   : "no");
	if (parse_stats(run.out, "child ", &child))
		check_estimate("fork: the child's own statistics (1 x 200000 x 1000 B)", &child,
			       &e_child, 64 * KIB);
	else
		report(false, "fork: the child printed no statistics:\n%s", run.out);
	if (parse_stats(run.out, "", &parent))
		check_estimate("fork: the parent's statistics (4 threads x 200000 x 1000 B)",
			       &parent, &e_parent, 64 * KIB);
	else
		report(false, "fork: the parent printed no statistics:\n%s", run.out);

	/* dlopen()ed, not preloaded: it loads, interposes nothing, the program runs on. */
	snprintf(args, sizeof(args), "-S %s -t 2 -n 20000", sampler_path);
	if (run_workload(force_only, args, &run))
		report(run.status == 0 && output_has_line(run.out, "sampler_dlopen ok"),
		       "dlopen()ed instead of preloaded: loads, process exits %d", run.status);
	else
		report(false, "dlopen()ed instead of preloaded: the workload did not run");
}

/* (2) Preloaded in front of another allocator: forwards to it, estimates still right. */
static void test_other_allocators(void)
{
	static const char *const allocators[] = {
	    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
	    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
	    "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2",
	};
	static const size_t sizes[] = {1024, 99968}; /* multiples of 64, for aligned_alloc */
	char what[PATH_MAX + 64];

	for (size_t i = 0; i < sizeof(allocators) / sizeof(allocators[0]); i++) {
		if (access(allocators[i], R_OK) != 0) {
			printf("skip %s not installed\n", allocators[i]);
			continue;
		}
		snprintf(what, sizeof(what), "in front of %s, every entry point",
			 strrchr(allocators[i], '/') + 1);
		run_and_check(what, "-t 2 -n 180000 -s 1024,99968 -a mix", sizes, 2, 180000, 2,
			      64 * KIB, allocators[i]);
	}
}

/* (3) Without FORCE and with no profiler attached, the semaphore is 0: nothing sampled. */
static void test_semaphore_gating(void)
{
	char preload_env[PATH_MAX + 16];
	const char *env[] = {preload_env, NULL};
	const char *env_zero[] = {preload_env, "ALLOCSCOPE_SAMPLER_FORCE=0", NULL};
	struct workload_run run;
	struct sampler_stats st;
	bool ran;

	snprintf(preload_env, sizeof(preload_env), "LD_PRELOAD=%s", sampler_path);
	ran = run_workload(env, "-t 2 -n 500000 -s 1000", &run) && run.status == 0 &&
	      parse_stats(run.out, "", &st);
	report(ran && st.sampled == 0 && st.weighted == 0 && st.allocated == 1000000000ull,
	       "semaphore 0 (no profiler, no FORCE): %" PRIu64 " sampled of 1 GB allocated",
	       ran ? st.sampled : 0);
	ran = run_workload(env_zero, "-n 500000 -s 1000", &run) && run.status == 0 &&
	      parse_stats(run.out, "", &st);
	report(ran && st.sampled == 0,
	       "ALLOCSCOPE_SAMPLER_FORCE=0 does not force: %" PRIu64 " sampled",
	       ran ? st.sampled : 0);
}

/* (4) ALLOCSCOPE_SAMPLE_RATE: valid spellings, and refusals with one line and the default. */
static void test_sample_rate_variable(void)
{
	static const struct {
		const char *text;
		uint64_t rate;
	} valid[] = {{"4096", 4096},
		     {"64KiB", 65536},
		     {"1MiB", 1 << 20},
		     {"2 GiB", 2ull << 30},
		     {"128k", 131072}};
	static const char *const invalid[] = {"12XB", "0", "abc", "5GiB", "1.5MiB", "-64KiB"};
	const char *suffix = "; using 512KiB\n";
	char preload_env[PATH_MAX + 16], rate_env[64], expected[256];
	const char *env[] = {preload_env, "ALLOCSCOPE_SAMPLER_FORCE=1", rate_env, NULL};
	struct workload_run run;
	struct sampler_stats st;

	snprintf(preload_env, sizeof(preload_env), "LD_PRELOAD=%s", sampler_path);
	for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
		bool ok;

		snprintf(rate_env, sizeof(rate_env), "ALLOCSCOPE_SAMPLE_RATE=%s", valid[i].text);
		ok = run_workload(env, "-n 1000", &run) && run.status == 0 &&
		     parse_stats(run.out, "", &st) && st.rate == valid[i].rate && !run.err[0];
		report(ok, "ALLOCSCOPE_SAMPLE_RATE=%s is %" PRIu64 " bytes, nothing on stderr",
		       valid[i].text, valid[i].rate);
	}
	for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
		size_t len;
		bool ok;

		snprintf(rate_env, sizeof(rate_env), "ALLOCSCOPE_SAMPLE_RATE=%s", invalid[i]);
		snprintf(expected, sizeof(expected),
			 "liballocscope-sampler: ALLOCSCOPE_SAMPLE_RATE=%s: ", invalid[i]);
		ok = run_workload(env, "-n 200000 -s 1000", &run) && run.status == 0 &&
		     parse_stats(run.out, "", &st);
		len = strlen(run.err);
		ok = ok && st.rate == DEFAULT_RATE && st.sampled > 0 &&
		     strncmp(run.err, expected, strlen(expected)) == 0 && len > strlen(suffix) &&
		     strcmp(run.err + len - strlen(suffix), suffix) == 0 &&
		     strchr(run.err, '\n') == run.err + len - 1;
		report(ok, "ALLOCSCOPE_SAMPLE_RATE=%s refused, default kept: %.*s", invalid[i],
		       len ? (int)len - 1 : 0, run.err);
	}
}

/* ---- The file: USDT note, nop5, exports ---- */

struct usdt_note {
	uint64_t pc, base, semaphore;
	char provider[64], name[64], args[128];
	bool nop5_in_file;
	uint16_t semaphore_in_file;
};

struct elf_facts {
	struct usdt_note notes[MAX_NOTES];
	int note_count;
	bool has_base_section, has_probes_section;
	uint64_t base_section_addr, probes_addr, probes_size;
	uint64_t first_load_vaddr, first_load_offset;
	char exports[32][40];
	int export_count;
	bool imports_tls_get_addr;
};

struct elf_image {
	unsigned char *data;
	size_t size;
	const Elf64_Shdr *sections;
	int section_count;
	const char *section_names;
};

static const unsigned char *elf_at(const struct elf_image *img, uint64_t offset, uint64_t len)
{
	if (offset > img->size || len > img->size - offset)
		return NULL;
	return img->data + offset;
}

/* The file bytes behind a link-time address, through the allocated sections. */
static const unsigned char *elf_address(const struct elf_image *img, uint64_t addr, uint64_t len)
{
	for (int i = 0; i < img->section_count; i++) {
		const Elf64_Shdr *sh = &img->sections[i];

		if ((sh->sh_flags & SHF_ALLOC) && sh->sh_type != SHT_NOBITS &&
		    addr >= sh->sh_addr && addr + len <= sh->sh_addr + sh->sh_size)
			return elf_at(img, sh->sh_offset + (addr - sh->sh_addr), len);
	}
	return NULL;
}

static const Elf64_Shdr *elf_section(const struct elf_image *img, const char *name)
{
	for (int i = 0; i < img->section_count; i++) {
		if (strcmp(img->section_names + img->sections[i].sh_name, name) == 0)
			return &img->sections[i];
	}
	return NULL;
}

static void parse_notes(const struct elf_image *img, const Elf64_Shdr *sh, struct elf_facts *f)
{
	uint64_t pos = 0;

	while (pos + 12 <= sh->sh_size && f->note_count < MAX_NOTES) {
		const unsigned char *hdr = elf_at(img, sh->sh_offset + pos, 12);
		uint32_t namesz, descsz, type;
		const unsigned char *name, *desc;

		if (!hdr)
			return;
		memcpy(&namesz, hdr, 4);
		memcpy(&descsz, hdr + 4, 4);
		memcpy(&type, hdr + 8, 4);
		name = elf_at(img, sh->sh_offset + pos + 12, namesz);
		desc = elf_at(img, sh->sh_offset + pos + 12 + ((namesz + 3) & ~3u), descsz);
		if (!name || !desc)
			return;
		if (type == 3 && namesz == 8 && memcmp(name, "stapsdt", 8) == 0 && descsz > 24) {
			struct usdt_note *n = &f->notes[f->note_count++];
			const char *text = (const char *)desc + 24,
				   *end = (const char *)desc + descsz;
			const char *parts[3];

			memcpy(&n->pc, desc, 8);
			memcpy(&n->base, desc + 8, 8);
			memcpy(&n->semaphore, desc + 16, 8);
			for (int k = 0; k < 3; k++) {
				parts[k] = text;
				text = memchr(text, '\0', (size_t)(end - text));
				if (!text)
					return;
				text++;
			}
			snprintf(n->provider, sizeof(n->provider), "%s", parts[0]);
			snprintf(n->name, sizeof(n->name), "%s", parts[1]);
			snprintf(n->args, sizeof(n->args), "%s", parts[2]);
		}
		pos += 12 + ((namesz + 3) & ~3u) + ((descsz + 3) & ~3u);
	}
}

static bool read_elf_facts(const char *path, struct elf_facts *f)
{
	struct elf_image img = {0};
	const Elf64_Ehdr *eh;
	FILE *file = fopen(path, "rb");
	long size;
	bool ok = false;

	memset(f, 0, sizeof(*f));
	if (!file)
		return false;
	if (fseek(file, 0, SEEK_END) == 0 && (size = ftell(file)) > (long)sizeof(Elf64_Ehdr) &&
	    fseek(file, 0, SEEK_SET) == 0) {
		img.size = (size_t)size;
		img.data = malloc(img.size);
		if (img.data && fread(img.data, 1, img.size, file) != img.size) {
			free(img.data);
			img.data = NULL;
		}
	}
	fclose(file);
	if (!img.data)
		return false;
	eh = (const Elf64_Ehdr *)img.data;
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64)
		goto out;
	img.sections = (const Elf64_Shdr *)elf_at(&img, eh->e_shoff,
						  (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr));
	img.section_count = eh->e_shnum;
	if (!img.sections || eh->e_shstrndx >= eh->e_shnum)
		goto out;
	img.section_names = (const char *)elf_at(&img, img.sections[eh->e_shstrndx].sh_offset,
						 img.sections[eh->e_shstrndx].sh_size);
	if (!img.section_names)
		goto out;

	for (int i = 0; i < eh->e_phnum; i++) {
		const Elf64_Phdr *ph = (const Elf64_Phdr *)elf_at(
		    &img, eh->e_phoff + (uint64_t)i * sizeof(Elf64_Phdr), sizeof(Elf64_Phdr));

		if (ph && ph->p_type == PT_LOAD) {
			f->first_load_vaddr = ph->p_vaddr;
			f->first_load_offset = ph->p_offset;
			break;
		}
	}
	const Elf64_Shdr *base = elf_section(&img, ".stapsdt.base");
	const Elf64_Shdr *probes = elf_section(&img, ".probes");
	const Elf64_Shdr *notes = elf_section(&img, ".note.stapsdt");
	const Elf64_Shdr *dynsym = elf_section(&img, ".dynsym");

	if (base) {
		f->has_base_section = true;
		f->base_section_addr = base->sh_addr;
	}
	if (probes) {
		f->has_probes_section = true;
		f->probes_addr = probes->sh_addr;
		f->probes_size = probes->sh_size;
	}
	if (notes && notes->sh_type == SHT_NOTE)
		parse_notes(&img, notes, f);
	for (int i = 0; i < f->note_count; i++) {
		struct usdt_note *n = &f->notes[i];
		const unsigned char *code = elf_address(&img, n->pc, 5);
		const unsigned char *sem = elf_address(&img, n->semaphore, 2);

		n->nop5_in_file = code && memcmp(code, nop5, 5) == 0;
		n->semaphore_in_file = sem ? (uint16_t)(sem[0] | sem[1] << 8) : 0xffff;
	}
	if (dynsym && dynsym->sh_link < (uint32_t)img.section_count) {
		const Elf64_Shdr *strtab = &img.sections[dynsym->sh_link];
		const char *names = (const char *)elf_at(&img, strtab->sh_offset, strtab->sh_size);
		const Elf64_Sym *syms =
		    (const Elf64_Sym *)elf_at(&img, dynsym->sh_offset, dynsym->sh_size);

		for (uint64_t i = 0; names && syms && i < dynsym->sh_size / sizeof(Elf64_Sym);
		     i++) {
			const Elf64_Sym *sym = &syms[i];
			const char *name =
			    sym->st_name < strtab->sh_size ? names + sym->st_name : "";
			int bind = ELF64_ST_BIND(sym->st_info);

			if (sym->st_shndx == SHN_UNDEF) {
				if (strcmp(name, "__tls_get_addr") == 0)
					f->imports_tls_get_addr = true;
			} else if ((bind == STB_GLOBAL || bind == STB_WEAK) &&
				   f->export_count < 32) {
				snprintf(f->exports[f->export_count++], sizeof(f->exports[0]), "%s",
					 name);
			}
		}
	}
	ok = true;
out:
	free(img.data);
	return ok;
}

static const struct usdt_note *find_alloc_note(const struct elf_facts *f)
{
	for (int i = 0; i < f->note_count; i++) {
		if (strcmp(f->notes[i].provider, "otel_memory") == 0 &&
		    strcmp(f->notes[i].name, "alloc") == 0)
			return &f->notes[i];
	}
	return NULL;
}

/* (5) The note as tools read it, the nop5 at its location, the semaphore, the exports. */
static void test_usdt_note(void)
{
	static const char *const expected_exports[] = {
	    "malloc",
	    "calloc",
	    "realloc",
	    "reallocarray",
	    "memalign",
	    "aligned_alloc",
	    "posix_memalign",
	    "valloc",
	    "pvalloc",
	    "free",
	    "malloc_usable_size",
	    "allocscope_sampler_stats",
	};
	const size_t n_expected = sizeof(expected_exports) / sizeof(expected_exports[0]);
	struct elf_facts f;
	const struct usdt_note *n;
	char command[PATH_MAX + 32], text[8192] = "", needle[96];
	size_t len = 0;
	FILE *pipe_in;
	bool all_sites_ok = true, exports_ok;

	if (!read_elf_facts(sampler_path, &f)) {
		report(false, "%s: not a readable ELF file", sampler_path);
		return;
	}
	n = find_alloc_note(&f);
	report(n && strcmp(n->args, "8@%rdi 8@%rsi 8@%rdx") == 0,
	       "note: otel_memory:alloc with arguments \"%s\" (%d stapsdt note(s))",
	       n ? n->args : "(no such note)", f.note_count);
	if (!n)
		return;
	for (int i = 0; i < f.note_count; i++)
		all_sites_ok = all_sites_ok && f.notes[i].nop5_in_file;
	report(all_sites_ok,
	       "note: the bytes at every probe location are 0f 1f 44 00 00 (pc 0x%" PRIx64 ")",
	       n->pc);
	report(f.has_base_section && n->base == f.base_section_addr,
	       "note: base 0x%" PRIx64 " is .stapsdt.base's address 0x%" PRIx64, n->base,
	       f.base_section_addr);
	report(n->semaphore != 0 && f.has_probes_section && n->semaphore >= f.probes_addr &&
		   n->semaphore + 2 <= f.probes_addr + f.probes_size && n->semaphore_in_file == 0,
	       "note: semaphore 0x%" PRIx64 " in .probes, 0 in the file", n->semaphore);

	exports_ok = (size_t)f.export_count == n_expected && !f.imports_tls_get_addr;
	for (size_t i = 0; exports_ok && i < n_expected; i++) {
		bool found = false;

		for (int k = 0; k < f.export_count; k++)
			found = found || strcmp(f.exports[k], expected_exports[i]) == 0;
		exports_ok = found;
	}
	report(exports_ok, "exports exactly the %zu entry points (%d found), no __tls_get_addr",
	       n_expected, f.export_count);

	/* The same through readelf, which is what users will run. */
	snprintf(command, sizeof(command), "readelf -n '%s' 2>&1", sampler_path);
	pipe_in = popen(command, "r");
	if (pipe_in) {
		len = fread(text, 1, sizeof(text) - 1, pipe_in);
		text[len] = '\0';
		pclose(pipe_in);
	}
	snprintf(needle, sizeof(needle), "Semaphore: 0x%016" PRIx64, n->semaphore);
	report(strstr(text, "Provider: otel_memory") && strstr(text, "Name: alloc") &&
		   strstr(text, "Arguments: 8@%rdi 8@%rsi 8@%rdx") && strstr(text, needle),
	       "readelf -n shows Provider: otel_memory, Name: alloc, %s, the arguments", needle);
}

/* weighted_bytes for a sampled allocation of size bytes: size / p, rounded. */
static uint64_t weight_for(uint64_t size, uint64_t rate)
{
	double bytes = size ? (double)size : 1.0;

	return (uint64_t)(bytes / -expm1(-bytes / (double)rate) + 0.5);
}

/* From the probe's frame (rbp in the library's cold path): the first return address must be
 * in the library (the function that called the one holding the probe), the second in the
 * workload (the caller of malloc, which tail-jumped into the cold path), as a frame-pointer
 * unwinder (bpf_get_stack, bpftrace's ustack) would see them. */
static bool frame_walk_reaches(pid_t tid, uint64_t rbp, uint64_t lib_lo, uint64_t lib_hi,
			       uint64_t exe_lo, uint64_t exe_hi)
{
	uint64_t ret1, caller_rbp, ret2;

	errno = 0;
	ret1 = (uint64_t)ptrace(PTRACE_PEEKDATA, tid, (void *)(rbp + 8), NULL);
	caller_rbp = (uint64_t)ptrace(PTRACE_PEEKDATA, tid, (void *)rbp, NULL);
	ret2 = (uint64_t)ptrace(PTRACE_PEEKDATA, tid, (void *)(caller_rbp + 8), NULL);
	return errno == 0 && ret1 >= lib_lo && ret1 < lib_hi && ret2 >= exe_lo && ret2 < exe_hi;
}

/* The probe at run time: a breakpoint on the nop5 (an int3 on its first byte, the nop skipped
 * on resume) in a traced workload; each hit's registers are the probe's arguments. The hits
 * must be exactly the sampled allocations, each carrying (ptr, size, round(size / p)); all
 * but a few (the process's own start-up allocations) are the workload's. */
static void test_probe_arguments(void)
{
	const uint64_t size = 100000, rate = 64 * KIB;
	const long allocations = 4000;
	struct elf_facts f;
	const struct usdt_note *n;
	char preload_env[PATH_MAX + 16], args[64], maps_path[64], line[PATH_MAX + 128], out[4096];
	const char *env[] = {preload_env, "ALLOCSCOPE_SAMPLER_FORCE=1",
			     "ALLOCSCOPE_SAMPLE_RATE=64KiB", NULL};
	uint64_t expected_weight = weight_for(size, rate), probe = 0, load_base = 0;
	uint64_t hits = 0, workload_hits = 0, bad_args = 0, sampled = 0, walked = 0;
	uint64_t lib_lo = UINT64_MAX, lib_hi = 0, exe_lo = UINT64_MAX, exe_hi = 0;
	int out_pipe[2], status;
	size_t out_len = 0;
	FILE *maps;
	pid_t pid;

	if (!read_elf_facts(sampler_path, &f) || !(n = find_alloc_note(&f)) ||
	    f.first_load_vaddr != 0 || f.first_load_offset != 0) {
		report(false,
		       "probe at run time: no otel_memory:alloc note to place a breakpoint on");
		return;
	}
	snprintf(preload_env, sizeof(preload_env), "LD_PRELOAD=%s", sampler_path);
	snprintf(args, sizeof(args), "-P -n %ld -s %" PRIu64, allocations, size);
	if (pipe(out_pipe))
		return;
	pid = fork();
	if (pid == 0) {
		dup2(out_pipe[1], STDOUT_FILENO);
		close(out_pipe[0]);
		close(out_pipe[1]);
		if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != 0)
			_exit(126);
		execve(workload_path, workload_argv(args), workload_env(env));
		_exit(127);
	}
	close(out_pipe[1]);
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFSTOPPED(status)) {
		/* ptrace refused (a seccomp policy, yama scope 3): not the library's fault. */
		printf("skip probe at run time: cannot trace the workload here\n");
		close(out_pipe[0]);
		if (pid > 0)
			waitpid(pid, &status, 0);
		return;
	}
	ptrace(PTRACE_SETOPTIONS, pid, NULL,
	       (void *)(long)(PTRACE_O_EXITKILL | PTRACE_O_TRACECLONE));
	/* Stopped at exec; run on to the workload's own SIGSTOP, when the library is mapped. */
	ptrace(PTRACE_CONT, pid, NULL, NULL);
	if (waitpid(pid, &status, 0) != pid || !WIFSTOPPED(status) || WSTOPSIG(status) != SIGSTOP)
		goto fail;
	snprintf(maps_path, sizeof(maps_path), "/proc/%d/maps", (int)pid);
	maps = fopen(maps_path, "r");
	while (maps && fgets(line, sizeof(line), maps)) {
		unsigned long long start, end, offset;
		char path[PATH_MAX];

		if (sscanf(line, "%llx-%llx %*s %llx %*s %*s %4095s", &start, &end, &offset,
			   path) != 4)
			continue;
		if (strcmp(path, sampler_path) == 0) {
			if (offset == 0)
				load_base = start;
			lib_lo = start < lib_lo ? start : lib_lo;
			lib_hi = end > lib_hi ? end : lib_hi;
		} else if (strcmp(path, workload_path) == 0) {
			exe_lo = start < exe_lo ? start : exe_lo;
			exe_hi = end > exe_hi ? end : exe_hi;
		}
	}
	if (maps)
		fclose(maps);
	if (!load_base)
		goto fail;
	probe = load_base + n->pc;
	errno = 0;
	long word = ptrace(PTRACE_PEEKTEXT, pid, (void *)probe, NULL);

	if (errno || memcmp(&word, nop5, 5) != 0)
		goto fail;
	long trapped = (word & ~0xffL) | 0xcc;

	if (ptrace(PTRACE_POKETEXT, pid, (void *)probe, (void *)trapped) != 0)
		goto fail;
	ptrace(PTRACE_CONT, pid, NULL, NULL);
	/* Every thread: the workload allocates in threads, traced from their creation on. */
	for (;;) {
		struct user_regs_struct regs;
		pid_t tid = waitpid(-1, &status, __WALL);
		int sig;

		if (tid < 0)
			break;
		if (!WIFSTOPPED(status)) {
			if (tid == pid)
				break; /* the process is gone: status is its exit */
			continue;
		}
		sig = WSTOPSIG(status);
		if (status >> 16 || sig == SIGSTOP) {
			sig = 0; /* a clone event, or a new thread's first stop */
		} else if (sig == SIGTRAP && ptrace(PTRACE_GETREGS, tid, NULL, &regs) == 0 &&
			   regs.rip == probe + 1) {
			uint64_t weight = weight_for(regs.rsi, rate);

			hits++;
			if (regs.rsi == size) {
				workload_hits++;
				walked += frame_walk_reaches(tid, regs.rbp, lib_lo, lib_hi, exe_lo,
							     exe_hi);
			}
			if (regs.rdi == 0 || regs.rdi % 16 || regs.rdx > weight + 1 ||
			    regs.rdx + 1 < weight)
				bad_args++;
			regs.rip = probe + 5; /* past the nop5 */
			ptrace(PTRACE_SETREGS, tid, NULL, &regs);
			sig = 0;
		}
		ptrace(PTRACE_CONT, tid, NULL, (void *)(long)sig);
	}
	while (out_len < sizeof(out) - 1) {
		ssize_t got = read(out_pipe[0], out + out_len, sizeof(out) - 1 - out_len);

		if (got <= 0)
			break;
		out_len += (size_t)got;
	}
	out[out_len] = '\0';
	close(out_pipe[0]);
	output_value(out, "sampled", &sampled);
	if (hits != sampled || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fprintf(stderr, "  the traced workload (status 0x%x) printed:\n%s", status, out);
	report(walked == workload_hits,
	       "probe at run time: a frame-pointer walk from the probe reaches the caller of malloc"
	       " in the workload: %" PRIu64 " of %" PRIu64,
	       walked, workload_hits);
	report(WIFEXITED(status) && WEXITSTATUS(status) == 0 && hits > 0 && hits == sampled &&
		   bad_args == 0 && workload_hits + 3 >= hits,
	       "probe at run time: %" PRIu64 " hits for %" PRIu64 " sampled, %" PRIu64
	       " of them (ptr, %" PRIu64 ", %" PRIu64 "), %" PRIu64 " with a wrong weight or ptr",
	       hits, sampled, workload_hits, size, expected_weight, bad_args);
	return;
fail:
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	close(out_pipe[0]);
	report(false, "probe at run time: could not place the breakpoint at 0x%" PRIx64, probe);
}

/* (6) Every allocation entry point is counted, once, with the right size. */
static void test_entry_points(void)
{
	static const char *const apis[] = {"calloc",	     "realloc",	      "reallocarray",
					   "posix_memalign", "aligned_alloc", "memalign",
					   "valloc",	     "pvalloc",	      "mix"};
	static const size_t sizes[] = {1024};
	char args[96], what[96];

	for (size_t i = 0; i < sizeof(apis) / sizeof(apis[0]); i++) {
		snprintf(args, sizeof(args), "-n 400000 -s 1024 -a %s", apis[i]);
		snprintf(what, sizeof(what), "%s, 400000 x 1024 B at 16KiB", apis[i]);
		run_and_check(what, args, sizes, 1, 400000, 1, 16 * KIB, NULL);
	}
}

static bool find_build_files(void)
{
	const char *build = getenv("ALLOCSCOPE_BUILD");
	char path[PATH_MAX];

	if (!build || !*build)
		build = "build";
	snprintf(path, sizeof(path), "%s/liballocscope-sampler.so", build);
	if (!realpath(path, sampler_path)) {
		fprintf(stderr, "  %s: %s (run make)\n", path, strerror(errno));
		return false;
	}
	snprintf(path, sizeof(path), "%s/workloads/sampler_workload", build);
	if (!realpath(path, workload_path)) {
		fprintf(stderr, "  %s: %s (run make)\n", path, strerror(errno));
		return false;
	}
	return true;
}

/* (5) In-use tracking (sampler/live_set.c): with the free probe's semaphore raised (FORCE=2)
 * and every allocation sampled (rate 1), the tracked set is exactly the blocks kept alive,
 * otel_memory:free fires for exactly the blocks freed, a full set is counted, a forked child
 * starts empty, and without the free semaphore (FORCE=1) nothing is tracked. */
struct live_stats {
	uint64_t tracked, overflow, freed, kept;
};

static bool parse_live(const char *out, const char *prefix, struct live_stats *st)
{
	char key[64];

	memset(st, 0, sizeof(*st));
	snprintf(key, sizeof(key), "%skept_blocks", prefix);
	output_value(out, key, &st->kept);
	for (const char *line = out; line && *line;
	     line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		unsigned long long t, o, f;
		size_t plen = strlen(prefix);

		if (strncmp(line, prefix, plen) == 0 &&
		    sscanf(line + plen, "live_tracked %llu live_overflow %llu frees_fired %llu", &t,
			   &o, &f) == 3) {
			st->tracked = t;
			st->overflow = o;
			st->freed = f;
			return true;
		}
	}
	return false;
}

static bool run_live(const char *force, const char *size_env, const char *args,
		     struct workload_run *run)
{
	char preload_env[PATH_MAX + 16], force_env[64];
	const char *env[] = {preload_env, force_env, "ALLOCSCOPE_SAMPLE_RATE=1", size_env, NULL};

	snprintf(preload_env, sizeof(preload_env), "LD_PRELOAD=%s", sampler_path);
	snprintf(force_env, sizeof(force_env), "ALLOCSCOPE_SAMPLER_FORCE=%s", force);
	return run_workload(env, args, run) && run->status == 0;
}

static void test_live_set(void)
{
	struct workload_run run;
	struct live_stats st = {0}, child = {0};
	bool ran;

	/* The process's own few allocations outside the loop (thread start-up) stay live. */
	ran = run_live("2", NULL, "-t 4 -n 100000 -s 64 -K 10", &run) &&
	      parse_live(run.out, "", &st);
	report(ran && st.kept == 40000 && st.tracked >= 40000 && st.tracked <= 40000 + 16 &&
		       st.freed == 360000 && st.overflow == 0,
	       "in-use, 4 threads keeping 1 block in 10: %" PRIu64 " tracked for %" PRIu64
	       " kept, %" PRIu64 " frees fired for 360000 freed, %" PRIu64 " overflow",
	       st.tracked, st.kept, st.freed, st.overflow);
	ran = run_live("2", NULL, "-n 100000 -s 64,128,256 -a realloc", &run) &&
	      parse_live(run.out, "", &st);
	report(ran && st.freed == 100000 && st.tracked <= 4,
	       "in-use, a realloc chain of 100000: %" PRIu64 " frees fired (each realloc frees the "
	       "block before; realloc(p, 0) the last), %" PRIu64 " tracked at the end",
	       st.freed, st.tracked);
	ran = run_live("2", "ALLOCSCOPE_LIVE_SET_SIZE=1024", "-n 10000 -s 64 -K 2", &run) &&
	      parse_live(run.out, "", &st);
	report(ran && st.tracked == 768 && st.overflow >= 5000 - 768,
	       "in-use, a 1024-slot set with 5000 blocks kept: %" PRIu64 " tracked (3/4 of the "
	       "slots), %" PRIu64 " overflow counted",
	       st.tracked, st.overflow);
	ran = run_live("2", NULL, "-t 2 -n 100000 -s 64 -K 10 -f", &run) &&
	      parse_live(run.out, "child ", &child) && parse_live(run.out, "", &st);
	report(ran && child.kept == 10000 && child.tracked == 10000 && child.freed == 90000 &&
		       st.tracked >= 20000 && st.tracked <= 20000 + 16,
	       "in-use across fork: the child tracks %" PRIu64 " for its %" PRIu64
	       " kept (nothing of the parent's), the parent %" PRIu64 " for 20000",
	       child.tracked, child.kept, st.tracked);
	ran = run_live("1", NULL, "-n 100000 -s 64 -K 10", &run) && parse_live(run.out, "", &st);
	report(ran && st.tracked == 0 && st.freed == 0,
	       "no free listener (FORCE=1): %" PRIu64 " tracked, %" PRIu64 " frees fired",
	       st.tracked, st.freed);
}

static void test_build_files(void)
{
	CHECK(find_build_files());
}

int main(void)
{
	RUN(test_build_files);
	if (unit_cases_failed)
		return unit_summary("test_sampler");
	RUN(test_usdt_note);
	RUN(test_probe_arguments);
	RUN(test_semaphore_gating);
	RUN(test_unbiased);
	RUN(test_entry_points);
	RUN(test_threads_fork_dlopen);
	RUN(test_other_allocators);
	RUN(test_sample_rate_variable);
	RUN(test_live_set);
	return unit_summary("test_sampler");
}
