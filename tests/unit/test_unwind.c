/* unwind against a live fixture: tests/unit/fixtures/unwind_target.c runs a known call chain
 * main -> outer -> middle -> inner -> capture, where capture() records registers and the stack
 * copy exactly as the entry probe does. Each walk is checked frame by frame, down to _start,
 * against the fixture's functions as nm sizes them (plus the load bias /proc/PID/maps shows),
 * in every mode: on an -O2 build without frame pointers (CFI only), on a frame-pointer build
 * without CFI, with CFI only in a separate debug file's .debug_frame, from a leaf without CFI,
 * through libc's qsort (CFI, no frame pointers), through a library dlopen()ed after the maps
 * snapshot, after the process exited, after its executable was replaced, with the copy cut
 * short, and with garbage and loops. Removing processes must forget them, keep the files
 * others share, start a pid met again afresh, and keep files, descriptors and memory bounded
 * over hundreds of processes. Prints what adding a process and a cold and a warm unwind cost
 * (UNWIND_TEST_VERBOSE=1 prints every walk). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "symbolize/unwind.h"
#include "unit.h"
#include "fixtures.h"

#define MAX_PCS	    128
#define STACK_BYTES (16 * 1024)

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* A function of a fixture file, as nm sizes it. */
struct func_range {
	const char *name; /* one of interesting[] */
	uint64_t value, size;
};

struct file_funcs {
	char path[PATH_MAX]; /* absolute, as /proc/PID/maps prints it */
	struct func_range funcs[24];
	size_t count;
};

static const char *const interesting[] = {
	"capture", "capture_bare", "inner",		 "inner_bare", "inner_qsort",
	"compare", "inner_dlopen", "unwind_cb_call", "middle",     "outer",
	"main",    "_start",       "cfi_loop_body",
};

static bool file_funcs_load(struct file_funcs *ff, const char *path)
{
	char cmd[PATH_MAX + 64], line[512], name[256], type;
	unsigned long long value, size;
	size_t i;
	FILE *pipe;

	memset(ff, 0, sizeof(*ff));
	if (!realpath(path, ff->path))
		return false;
	snprintf(cmd, sizeof(cmd), "nm -S --defined-only '%s'", ff->path);
	pipe = popen(cmd, "r");
	if (!pipe)
		return false;
	while (fgets(line, sizeof(line), pipe)) {
		/* "value size type name", or "value type name" for a label without a size. */
		if (sscanf(line, "%llx %llx %c %255s", &value, &size, &type, name) != 4) {
			size = 0;
			if (sscanf(line, "%llx %c %255s", &value, &type, name) != 3)
				continue;
		}
		if (type != 'T' && type != 't')
			continue;
		for (i = 0; i < sizeof(interesting) / sizeof(interesting[0]); i++) {
			if (strcmp(name, interesting[i]) == 0 && ff->count < 24) {
				struct func_range *f = &ff->funcs[ff->count++];

				f->name = interesting[i];
				f->value = value;
				f->size = size;
			}
		}
	}
	return pclose(pipe) == 0 && ff->count > 0;
}

/* A mapping range of the child, read independently of proc_maps. */
struct map_range {
	uint64_t start, end, offset;
	char path[256]; /* enough for the fixtures and libc */
};

struct child_maps {
	struct map_range ranges[128];
	size_t count;
};

static bool child_maps_read(pid_t pid, struct child_maps *maps)
{
	char path[64], line[PATH_MAX + 128];
	unsigned long long start, end, offset;
	int consumed;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return false;
	maps->count = 0;
	while (fgets(line, sizeof(line), f) && maps->count < 128) {
		struct map_range *r = &maps->ranges[maps->count];
		char *p;

		consumed = 0;
		if (sscanf(line, "%llx-%llx %*s %llx %*s %*s %n", &start, &end, &offset,
			   &consumed) < 3 ||
		    !consumed)
			continue;
		p = line + consumed;
		p[strcspn(p, "\n")] = '\0';
		if (strlen(p) > 10 && strcmp(p + strlen(p) - 10, " (deleted)") == 0)
			p[strlen(p) - 10] = '\0';
		r->start = start;
		r->end = end;
		r->offset = offset;
		snprintf(r->path, sizeof(r->path), "%s", p);
		maps->count++;
	}
	fclose(f);
	return maps->count > 0;
}

/* Load bias of a PIE or shared object: where its offset-0 mapping starts (first PT_LOAD at
 * vaddr 0, as GNU ld lays them out). */
static bool child_maps_bias(const struct child_maps *maps, const char *path, uint64_t *bias)
{
	size_t i;

	for (i = 0; i < maps->count; i++) {
		if (maps->ranges[i].offset == 0 && strcmp(maps->ranges[i].path, path) == 0) {
			*bias = maps->ranges[i].start;
			return true;
		}
	}
	return false;
}

/* The running fixture and what capture() recorded. */
struct target {
	pid_t pid;
	int to_child, from_child;
	struct file_funcs exe, lib;
	uint64_t exe_bias, lib_bias;
	bool have_lib;
	struct child_maps maps; /* read after the capture */
	uint64_t regs[ALLOC_REG__COUNT];
	uint8_t stack[STACK_BYTES];
	size_t stack_len;
};

struct unwind_record {
	char magic[8];
	uint64_t regs[8];
	uint64_t stack_len;
};

static bool read_full(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t n = read(fd, p, len);

		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

/* Starts t->exe with chain and waits until it is loaded ("RDY"): its maps can be snapshot. */
static bool target_fork(struct target *t, const char *chain)
{
	int in[2], out[2];
	char ready[4];

	if (pipe2(in, O_CLOEXEC) != 0)
		return false;
	if (pipe2(out, O_CLOEXEC) != 0) {
		close(in[0]);
		close(in[1]);
		return false;
	}
	t->pid = fork();
	if (t->pid == 0) {
		dup2(in[0], STDIN_FILENO);
		dup2(out[1], STDOUT_FILENO);
		execl(t->exe.path, t->exe.path, chain, fixture("libunwind_cb.so"), (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	t->to_child = in[1];
	t->from_child = out[0];
	if (t->pid < 0)
		return false;
	return read_full(t->from_child, ready, sizeof(ready)) && memcmp(ready, "RDY\n", 4) == 0;
}

static bool target_spawn(struct target *t, const char *binary, const char *chain)
{
	memset(t, 0, sizeof(*t));
	t->pid = -1;
	if (!file_funcs_load(&t->exe, binary))
		return false;
	return target_fork(t, chain);
}

/* Lets the chain run and reads the record. */
static bool target_go(struct target *t)
{
	struct unwind_record record;

	if (write(t->to_child, "g", 1) != 1 || !read_full(t->from_child, &record, sizeof(record)) ||
	    memcmp(record.magic, "UNWREC01", 8) != 0 || record.stack_len > STACK_BYTES)
		return false;
	memcpy(t->regs, record.regs, sizeof(t->regs));
	t->stack_len = record.stack_len;
	if (!read_full(t->from_child, t->stack, t->stack_len))
		return false;
	if (!child_maps_read(t->pid, &t->maps) ||
	    !child_maps_bias(&t->maps, t->exe.path, &t->exe_bias))
		return false;
	if (t->lib.count || file_funcs_load(&t->lib, fixture("libunwind_cb.so")))
		t->have_lib = child_maps_bias(&t->maps, t->lib.path, &t->lib_bias);
	return true;
}

static bool target_start(struct target *t, const char *binary, const char *chain)
{
	return target_spawn(t, binary, chain) && target_go(t);
}

/* Another run of like's binary: its functions are known already (nm is slow next to a run). */
static bool target_start_like(struct target *t, const struct target *like, const char *chain)
{
	memset(t, 0, sizeof(*t));
	t->pid = -1;
	t->exe = like->exe;
	t->lib = like->lib;
	return target_fork(t, chain) && target_go(t);
}

/* Ends the child: closing stdin lets it exit, kill makes sure. */
static void target_stop(struct target *t)
{
	if (t->pid > 0) {
		close(t->to_child);
		close(t->from_child);
		kill(t->pid, SIGKILL);
		waitpid(t->pid, NULL, 0);
		t->pid = -1;
	}
}

static struct unwind_input target_input(const struct target *t)
{
	return (struct unwind_input){
		.pid = t->pid,
		.tid = t->pid,
		.regs = t->regs,
		.stack = t->stack,
		.stack_len = t->stack_len,
	};
}

/* The name of the fixture function holding pc, "[libc]" for libc, "?" otherwise. */
static const char *frame_name(const struct target *t, uint64_t pc)
{
	size_t i;

	for (i = 0; i < t->exe.count; i++) {
		const struct func_range *f = &t->exe.funcs[i];

		if (pc >= t->exe_bias + f->value && pc < t->exe_bias + f->value + f->size)
			return f->name;
	}
	if (t->have_lib) {
		for (i = 0; i < t->lib.count; i++) {
			const struct func_range *f = &t->lib.funcs[i];

			if (pc >= t->lib_bias + f->value && pc < t->lib_bias + f->value + f->size)
				return f->name;
		}
	}
	for (i = 0; i < t->maps.count; i++) {
		const struct map_range *r = &t->maps.ranges[i];

		if (pc >= r->start && pc < r->end && strstr(r->path, "/libc.so"))
			return "[libc]";
	}
	return "?";
}

/* The runtime address of a fixture symbol. */
static bool find_func(const struct target *t, const char *name, uint64_t *addr)
{
	size_t i;

	for (i = 0; i < t->exe.count; i++) {
		if (strcmp(t->exe.funcs[i].name, name) == 0) {
			*addr = t->exe_bias + t->exe.funcs[i].value;
			return true;
		}
	}
	return false;
}

/* How many of the expected names the walk matches in order, from the leaf; "[libc]" matches
 * one or more consecutive libc frames. Return addresses are looked up inside their call. */
static size_t chain_prefix(const struct target *t, const uint64_t *pcs, size_t n,
			   const char *const *expected, size_t n_expected)
{
	size_t i = 0, e = 0;

	while (e < n_expected && i < n) {
		const char *name = frame_name(t, i ? pcs[i] - 1 : pcs[i]);

		if (strcmp(name, expected[e]) != 0)
			break;
		i++;
		if (strcmp(expected[e], "[libc]") == 0) {
			while (i < n && strcmp(frame_name(t, pcs[i] - 1), "[libc]") == 0)
				i++;
		}
		e++;
	}
	return e;
}

static void print_walk(const char *what, const struct target *t, const uint64_t *pcs,
		       const struct unwind_result *r)
{
	size_t i;

	fprintf(stderr, "  %s: %zu frames (cfi %u, fp %u)%s:", what, r->n_pcs, r->cfi_frames,
		r->fp_frames, r->truncated ? " truncated" : "");
	for (i = 0; i < r->n_pcs; i++)
		fprintf(stderr, " %s", frame_name(t, i ? pcs[i] - 1 : pcs[i]));
	fprintf(stderr, "\n");
}

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static const char *const plain_chain[] = {"capture", "inner", "middle", "outer", "main"};

/* Checks one walk against expected; prints it when it does not match. */
static bool check_chain(const char *what, const struct target *t, const uint64_t *pcs,
			const struct unwind_result *r, const char *const *expected,
			size_t n_expected)
{
	size_t matched = chain_prefix(t, pcs, r->n_pcs, expected, n_expected);

	CHECK_EQ_U64(matched, n_expected);
	if (getenv("UNWIND_TEST_VERBOSE"))
		print_walk(what, t, pcs, r);
	if (matched != n_expected) {
		fprintf(stderr, "  %s: mismatch at expected[%zu]\n", what, matched);
		print_walk(what, t, pcs, r);
		return false;
	}
	return true;
}

/* A walk that reached the outermost frame: _start, whose CFI leaves the return address
 * undefined. */
static void check_complete(const struct target *t, const uint64_t *pcs,
			   const struct unwind_result *r)
{
	CHECK(!r->truncated);
	CHECK(r->n_pcs > 1);
	if (r->n_pcs > 1)
		CHECK_STR(frame_name(t, pcs[r->n_pcs - 1] - 1), "_start");
}

static void test_mode_parse(void)
{
	enum unwind_mode mode = UNWIND_FP;

	CHECK(unwind_mode_parse("auto", &mode) == 0 && mode == UNWIND_AUTO);
	CHECK(unwind_mode_parse("fp", &mode) == 0 && mode == UNWIND_FP);
	CHECK(unwind_mode_parse("dwarf", &mode) == 0 && mode == UNWIND_DWARF);
	CHECK(unwind_mode_parse("DWARF", &mode) == -EINVAL && mode == UNWIND_DWARF);
	CHECK(unwind_mode_parse("", &mode) == -EINVAL);
	CHECK(unwind_mode_parse("fpx", &mode) == -EINVAL);
	CHECK(unwind_mode_parse(NULL, &mode) == -EINVAL);
	CHECK_STR(unwind_mode_name(UNWIND_DWARF), "dwarf");
	CHECK_STR(unwind_mode_name(UNWIND_AUTO), "auto");
	CHECK_STR(unwind_mode_name(UNWIND_FP), "fp");
}

static void test_bad_arguments(void)
{
	struct unwinder *u = NULL;
	struct unwind_result r;
	uint64_t regs[ALLOC_REG__COUNT] = {0x1000, 0x2000}, pcs[4];
	struct unwind_input in = {.pid = getpid(), .tid = getpid(), .regs = regs};
	pid_t dead;

	unwinder__free(NULL);
	CHECK(unwinder__new(NULL) == -EINVAL);
	CHECK(unwinder__new(&u) == 0 && u);
	if (!u)
		return;
	CHECK(unwinder__add_process(u, 0) == -EINVAL);
	CHECK(unwinder__add_process(NULL, 1) == -EINVAL);
	dead = fork();
	if (dead == 0)
		_exit(0);
	waitpid(dead, NULL, 0);
	CHECK(unwinder__add_process(u, dead) == -ESRCH);
	CHECK(unwinder__unwind(u, NULL, UNWIND_AUTO, pcs, 4, &r) == -EINVAL);
	CHECK(unwinder__unwind(u, &in, (enum unwind_mode)7, pcs, 4, &r) == -EINVAL);
	CHECK(unwinder__unwind(u, &in, UNWIND_AUTO, NULL, 4, &r) == -EINVAL);
	in.stack_len = 8; /* but no stack */
	CHECK(unwinder__unwind(u, &in, UNWIND_AUTO, pcs, 4, &r) == -EINVAL);
	in.stack_len = 0;
	in.regs = NULL;
	CHECK(unwinder__unwind(u, &in, UNWIND_AUTO, pcs, 4, &r) == -EINVAL);
	in.regs = regs;
	/* Not an error: no room gives no frames, and says so. */
	CHECK(unwinder__unwind(u, &in, UNWIND_AUTO, pcs, 0, &r) == 0);
	CHECK(r.n_pcs == 0 && r.truncated);
	unwinder__free(u);
}

/* -O2 without frame pointers: CFI finds every frame, the frame pointer cannot. */
static void test_cfi_build_plain_chain(void)
{
	struct target t;
	struct unwinder *u = NULL;
	struct unwind_input in;
	struct unwind_result r;
	uint64_t pcs[MAX_PCS];

	CHECK(target_start(&t, fixture("unwind_target_cfi"), "plain"));
	if (t.pid <= 0 || !t.stack_len)
		goto out;
	CHECK(unwinder__new(&u) == 0);
	CHECK(unwinder__add_process(u, t.pid) == 0);
	in = target_input(&t);

	CHECK(unwinder__unwind(u, &in, UNWIND_DWARF, pcs, MAX_PCS, &r) == 0);
	CHECK(pcs[0] == t.regs[ALLOC_REG_IP]);
	check_chain("dwarf", &t, pcs, &r, plain_chain, N_OF(plain_chain));
	/* Through main into libc's start code, to _start, whose CFI ends the stack. */
	check_complete(&t, pcs, &r);
	CHECK(r.n_pcs > N_OF(plain_chain));
	CHECK_EQ_U64(r.cfi_frames, r.n_pcs - 1);
	CHECK_EQ_U64(r.fp_frames, 0);
	CHECK(!r.maps_reread);

	CHECK(unwinder__unwind(u, &in, UNWIND_AUTO, pcs, MAX_PCS, &r) == 0);
	check_chain("auto", &t, pcs, &r, plain_chain, N_OF(plain_chain));
	check_complete(&t, pcs, &r);
	CHECK_EQ_U64(r.fp_frames, 0);

	/* inner keeps a small integer in rbp: the chain ends right after the direct caller. */
	CHECK(unwinder__unwind(u, &in, UNWIND_FP, pcs, MAX_PCS, &r) == 0);
	CHECK(check_chain("fp", &t, pcs, &r, plain_chain, 2));
	CHECK_EQ_U64(r.n_pcs, 2);
	CHECK(r.truncated);
	CHECK_EQ_U64(r.fp_frames, 1);
out:
	unwinder__free(u);
	target_stop(&t);
}

/* Frame pointers, no CFI but for capture (hand-written, with CFI like glibc's malloc): FP and
 * AUTO walk the rbp chain, DWARF stops at the first frame without CFI. */
static void test_fp_build_plain_chain(void)
{
	struct target t;
	struct unwinder *u = NULL;
	struct unwind_input in;
	struct unwind_result r;
	uint64_t pcs[MAX_PCS];

	CHECK(target_start(&t, fixture("unwind_target_fp"), "plain"));
	if (t.pid <= 0 || !t.stack_len)
		goto out;
	CHECK(unwinder__new(&u) == 0);
	CHECK(unwinder__add_process(u, t.pid) == 0);
	in = target_input(&t);

	CHECK(unwinder__unwind(u, &in, UNWIND_FP, pcs, MAX_PCS, &r) == 0);
	check_chain("fp", &t, pcs, &r, plain_chain, N_OF(plain_chain));
	CHECK_EQ_U64(r.cfi_frames, 0);
	CHECK_EQ_U64(r.fp_frames, r.n_pcs - 1);
	CHECK(unwinder__unwind(u, &in, UNWIND_FP, pcs, 3, &r) == 0);
	CHECK(r.n_pcs == 3 && r.truncated);
	CHECK(check_chain("fp, 3 frames", &t, pcs, &r, plain_chain, 3));

	CHECK(unwinder__unwind(u, &in, UNWIND_AUTO, pcs, MAX_PCS, &r) == 0);
	check_chain("auto", &t, pcs, &r, plain_chain, N_OF(plain_chain));
	check_complete(&t, pcs, &r);
	/* inner's, middle's, outer's and main's callers without CFI; capture's and libc's start
	 * code's with it. */
	CHECK_EQ_U64(r.fp_frames, 4);
	CHECK_EQ_U64(r.cfi_frames, r.n_pcs - 1 - 4);

	/* capture's CFI finds inner; inner has none. */
	CHECK(unwinder__unwind(u, &in, UNWIND_DWARF, pcs, MAX_PCS, &r) == 0);
	check_chain("dwarf", &t, pcs, &r, plain_chain, 2);
	CHECK_EQ_U64(r.n_pcs, 2);
	CHECK_EQ_U64(r.cfi_frames, 1);
	CHECK(r.truncated);
out:
	unwinder__free(u);
	target_stop(&t);
}

/* An allocator without CFI, probed at its entry: AUTO takes its caller from sp, then goes on
 * with whatever the caller has; DWARF has nothing for the leaf. */
static void test_bare_leaf(void)
{
	static const char *const chain[] = {"capture_bare", "inner_bare", "middle", "outer",
					    "main"};
	static const char *const builds[] = {"unwind_target_cfi", "unwind_target_fp"};
	struct target t;
	struct unwinder *u = NULL;
	struct unwind_input in;
	struct unwind_result r;
	uint64_t pcs[MAX_PCS];
	size_t b;

	for (b = 0; b < N_OF(builds); b++) {
		CHECK(target_start(&t, fixture(builds[b]), "bare"));
		if (t.pid <= 0 || !t.stack_len) {
			target_stop(&t);
			continue;
		}
		CHECK(unwinder__new(&u) == 0);
		CHECK(unwinder__add_process(u, t.pid) == 0);
		in = target_input(&t);

		CHECK(unwinder__unwind(u, &in, UNWIND_AUTO, pcs, MAX_PCS, &r) == 0);
		check_chain(builds[b], &t, pcs, &r, chain, N_OF(chain));
		check_complete(&t, pcs, &r);
		/* With CFI everywhere else only the leaf's step went without it. */
		if (b == 0)
			CHECK_EQ_U64(r.fp_frames, 1);
		else
			CHECK_EQ_U64(r.fp_frames, 5);

		CHECK(unwinder__unwind(u, &in, UNWIND_DWARF, pcs, MAX_PCS, &r) == 0);
		CHECK(r.n_pcs == 1 && r.truncated && pcs[0] == t.regs[ALLOC_REG_IP]);
		unwinder__free(u);
		u = NULL;
		target_stop(&t);
	}
}

/* Copies src to a fresh directory of its own; false on failure. */
static bool copy_alone(const char *src, char *dir, size_t dir_size, char *dst, size_t dst_size)
{
	char cmd[3 * PATH_MAX];
	const char *base = strrchr(src, '/');

	snprintf(dir, dir_size, "/tmp/test_unwind.XXXXXX");
	if (!mkdtemp(dir))
		return false;
	snprintf(dst, dst_size, "%s/%s", dir, base ? base + 1 : src);
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", src, dst);
	return system(cmd) == 0;
}

/* CFI only in .debug_frame, only in a separate debug file (.gnu_debuglink): found by libdwfl's
 * standard debuginfo search. The same binary without its debug file has no CFI at all. */
static void test_debug_frame(void)
{
	struct target t;
	struct unwinder *u = NULL;
	struct unwind_input in;
	struct unwind_result r;
	uint64_t pcs[MAX_PCS];
	char dir[64], alone[PATH_MAX], cmd[2 * PATH_MAX];

	CHECK(target_start(&t, fixture("unwind_target_dbgframe"), "plain"));
	if (t.pid <= 0 || !t.stack_len)
		goto out;
	CHECK(unwinder__new(&u) == 0);
	CHECK(unwinder__add_process(u, t.pid) == 0);
	in = target_input(&t);
	CHECK(unwinder__unwind(u, &in, UNWIND_DWARF, pcs, MAX_PCS, &r) == 0);
	check_chain("dwarf", &t, pcs, &r, plain_chain, N_OF(plain_chain));
	check_complete(&t, pcs, &r);
	CHECK_EQ_U64(r.cfi_frames, r.n_pcs - 1);
	unwinder__free(u);
	u = NULL;
	target_stop(&t);

	CHECK(
	    copy_alone(fixture("unwind_target_dbgframe"), dir, sizeof(dir), alone, sizeof(alone)));
	CHECK(target_start(&t, alone, "plain"));
	if (t.pid > 0 && t.stack_len) {
		CHECK(unwinder__new(&u) == 0);
		CHECK(unwinder__add_process(u, t.pid) == 0);
		in = target_input(&t);
		CHECK(unwinder__unwind(u, &in, UNWIND_DWARF, pcs, MAX_PCS, &r) == 0);
		CHECK(r.n_pcs == 1 && r.truncated);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK(system(cmd) == 0);
out:
	unwinder__free(u);
	target_stop(&t);
}

/* The executable was replaced after it started (an upgrade: unlinked, a different file under
 * its name). Its CFI must come from the file the process maps, reached through
 * /proc/PID/map_files, not from the new file at the old path. */
static void test_replaced_file(void)
{
	struct target t;
	struct unwinder *u = NULL;
	struct unwind_input in;
	struct unwind_result r;
	uint64_t pcs[MAX_PCS];
	char dir[64], path[PATH_MAX], cmd[3 * PATH_MAX], map_files[96];
	bool privileged;
	int fd;

	CHECK(copy_alone(fixture("unwind_target_cfi"), dir, sizeof(dir), path, sizeof(path)));
	CHECK(target_spawn(&t, path, "plain"));
	if (t.pid <= 0)
		goto out;
	snprintf(cmd, sizeof(cmd), "rm -f '%s' && cp '%s' '%s'", path, fixture("unwind_target_fp"),
		 path);
	CHECK(system(cmd) == 0);
	CHECK(target_go(&t));
	if (!t.stack_len)
		goto out;
	/* map_files needs CAP_SYS_ADMIN; without it the module is left out, never mistaken. */
	snprintf(map_files, sizeof(map_files), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64,
		 (int)t.pid, t.maps.ranges[0].start, t.maps.ranges[0].end);
	fd = open(map_files, O_RDONLY);
	privileged = fd >= 0;
	if (fd >= 0)
		close(fd);
	CHECK(unwinder__new(&u) == 0);
	CHECK(unwinder__add_process(u, t.pid) == 0);
	in = target_input(&t);
	CHECK(unwinder__unwind(u, &in, UNWIND_DWARF, pcs, MAX_PCS, &r) == 0);
	if (privileged) {
		check_chain("dwarf, replaced executable", &t, pcs, &r, plain_chain,
			    N_OF(plain_chain));
		check_complete(&t, pcs, &r);
	} else {
		printf("  replaced executable: no access to /proc/PID/map_files, checked that its "
		       "frames have no CFI instead\n");
		CHECK(r.n_pcs == 1 && r.truncated);
	}
out:
	unwinder__free(u);
	target_stop(&t);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK(system(cmd) == 0);
}

/* qsort calls compare from inside libc, which has CFI but no frame pointers. */
static void test_through_libc(void)
{
	static const char *const chain[] = {"capture", "compare", "[libc]", "inner_qsort",
					    "middle",  "outer",	  "main"};
	struct target t;
	struct unwinder *u = NULL;
	struct unwind_input in;
	struct unwind_result r;
	uint64_t pcs[MAX_PCS];

	CHECK(target_start(&t, fixture("unwind_target_cfi"), "qsort"));
	if (t.pid <= 0 || !t.stack_len)
		goto out;
	CHECK(unwinder__new(&u) == 0);
	CHECK(unwinder__add_process(u, t.pid) == 0);
	in = target_input(&t);

	CHECK(unwinder__unwind(u, &in, UNWIND_DWARF, pcs, MAX_PCS, &r) == 0);
	check_chain("dwarf", &t, pcs, &r, chain, N_OF(chain));
	check_complete(&t, pcs, &r);
	CHECK(unwinder__unwind(u, &in, UNWIND_AUTO, pcs, MAX_PCS, &r) == 0);
	check_chain("auto", &t, pcs, &r, chain, N_OF(chain));
	check_complete(&t, pcs, &r);
	CHECK_EQ_U64(r.fp_frames, 0);
	/* The frame pointer gets no further than libc. */
	CHECK(unwinder__unwind(u, &in, UNWIND_FP, pcs, MAX_PCS, &r) == 0);
	CHECK(check_chain("fp", &t, pcs, &r, chain, 2));
	CHECK(chain_prefix(&t, pcs, r.n_pcs, chain, N_OF(chain)) < N_OF(chain));
out:
	unwinder__free(u);
	target_stop(&t);
}

/* AUTO mixes both: the fixture's frames by frame pointer, libc's by CFI, and back. */
static void test_mixed_frames(void)
{
	static const char *const chain[] = {"capture", "compare", "[libc]", "inner_qsort",
					    "middle",  "outer",	  "main"};
	struct target t;
	struct unwinder *u = NULL;
	struct unwind_input in;
	struct unwind_result r;
	uint64_t pcs[MAX_PCS];

	CHECK(target_start(&t, fixture("unwind_target_fp"), "qsort"));
	if (t.pid <= 0 || !t.stack_len)
		goto out;
	CHECK(unwinder__new(&u) == 0);
	CHECK(unwinder__add_process(u, t.pid) == 0);
	in = target_input(&t);

	CHECK(unwinder__unwind(u, &in, UNWIND_AUTO, pcs, MAX_PCS, &r) == 0);
	check_chain("auto", &t, pcs, &r, chain, N_OF(chain));
	/* compare's, inner_qsort's, middle's, outer's and main's callers by frame pointer. */
	CHECK_EQ_U64(r.fp_frames, 5);
	CHECK(r.cfi_frames >= 4);
	check_complete(&t, pcs, &r);
	CHECK_EQ_U64(r.cfi_frames + r.fp_frames, r.n_pcs - 1);
out:
	unwinder__free(u);
	target_stop(&t);
}

/* The snapshot taken while the process lived is enough once it is gone. */
static void test_after_exit(void)
{
	struct target t;
	struct unwinder *u = NULL;
	struct unwind_input in;
	struct unwind_result r;
	uint64_t pcs[MAX_PCS];
	pid_t pid;

	CHECK(target_start(&t, fixture("unwind_target_cfi"), "qsort"));
	if (t.pid <= 0 || !t.stack_len)
		goto out;
	CHECK(unwinder__new(&u) == 0);
	CHECK(unwinder__add_process(u, t.pid) == 0);
	in = target_input(&t);
	pid = t.pid;
	kill(t.pid, SIGKILL);
	waitpid(t.pid, NULL, 0);
	CHECK(kill(pid, 0) != 0 && errno == ESRCH);

	CHECK(unwinder__unwind(u, &in, UNWIND_DWARF, pcs, MAX_PCS, &r) == 0);
	{
		static const char *const chain[] = {"capture", "compare", "[libc]", "inner_qsort",
						    "middle",  "outer",	  "main"};

		check_chain("dwarf after exit", &t, pcs, &r, chain, N_OF(chain));
	}
	check_complete(&t, pcs, &r);
	/* Adding it again fails, and keeps what was known. */
	CHECK(unwinder__add_process(u, pid) == -ESRCH);
	CHECK(unwinder__unwind(u, &in, UNWIND_AUTO, pcs, MAX_PCS, &r) == 0);
	CHECK(check_chain("auto after exit", &t, pcs, &r, plain_chain, 1));
	CHECK(r.n_pcs >= 7 && !r.truncated);
	t.pid = -1;
	close(t.to_child);
	close(t.from_child);
out:
	unwinder__free(u);
	target_stop(&t);
}

/* A pid never added is added by its first sample; one added after it exited has no CFI. */
static void test_unknown_pid(void)
{
	struct target t;
	struct unwinder *u = NULL;
	struct unwind_input in;
	struct unwind_result r;
	uint64_t pcs[MAX_PCS];

	CHECK(target_start(&t, fixture("unwind_target_cfi"), "plain"));
	if (t.pid <= 0 || !t.stack_len)
		goto out;
	CHECK(unwinder__new(&u) == 0);
	in = target_input(&t);
	CHECK(unwinder__unwind(u, &in, UNWIND_DWARF, pcs, MAX_PCS, &r) == 0);
	check_chain("dwarf, first sample", &t, pcs, &r, plain_chain, N_OF(plain_chain));
	CHECK(r.maps_reread);
	CHECK(unwinder__unwind(u, &in, UNWIND_DWARF, pcs, MAX_PCS, &r) == 0);
	check_chain("dwarf, second sample", &t, pcs, &r, plain_chain, N_OF(plain_chain));
	CHECK(!r.maps_reread);
	unwinder__free(u);
	u = NULL;

	/* Gone before its first sample: DWARF has the leaf only, AUTO falls back to the frame
	 * pointer (one frame here: the -O2 build keeps no frame pointer). */
	target_stop(&t);
	CHECK(unwinder__new(&u) == 0);
	CHECK(unwinder__unwind(u, &in, UNWIND_DWARF, pcs, MAX_PCS, &r) == 0);
	CHECK(r.n_pcs == 1 && r.truncated && pcs[0] == in.regs[ALLOC_REG_IP]);
	CHECK(unwinder__unwind(u, &in, UNWIND_AUTO, pcs, MAX_PCS, &r) == 0);
	CHECK(r.n_pcs == 2 && r.truncated && r.fp_frames == 1);
out:
	unwinder__free(u);
	target_stop(&t);
}

/* A library loaded after the snapshot: its frame sends the unwinder back to /proc once. */
static void test_dlopen_after_snapshot(void)
{
	static const char *const chain[] = {
	    "capture", "inner", "unwind_cb_call", "inner_dlopen", "middle", "outer", "main"};
	struct target t;
	struct unwinder *u = NULL;
	struct unwind_input in;
	struct unwind_result r;
	uint64_t pcs[MAX_PCS];

	CHECK(target_spawn(&t, fixture("unwind_target_cfi"), "dlopen"));
	if (t.pid <= 0)
		goto out;
	CHECK(unwinder__new(&u) == 0);
	CHECK(unwinder__add_process(u, t.pid) == 0);
	CHECK(target_go(&t));
	CHECK(t.have_lib);
	if (!t.stack_len)
		goto out;
	in = target_input(&t);
	CHECK(unwinder__unwind(u, &in, UNWIND_DWARF, pcs, MAX_PCS, &r) == 0);
	CHECK(r.maps_reread);
	check_chain("dwarf", &t, pcs, &r, chain, N_OF(chain));
	check_complete(&t, pcs, &r);
	CHECK(unwinder__unwind(u, &in, UNWIND_DWARF, pcs, MAX_PCS, &r) == 0);
	CHECK(!r.maps_reread);
	check_chain("dwarf again", &t, pcs, &r, chain, N_OF(chain));
out:
	unwinder__free(u);
	target_stop(&t);
}

/* Offset in the copy of the first 8-aligned slot at or after from holding value. */
static bool find_slot(const struct target *t, uint64_t value, size_t from, size_t *offset)
{
	size_t off;

	for (off = from; off + 8 <= t->stack_len; off += 8) {
		uint64_t v;

		memcpy(&v, t->stack + off, 8);
		if (v == value) {
			*offset = off;
			return true;
		}
	}
	return false;
}

/* Cutting the copy just below the slot of the k-th return address leaves exactly the first k
 * frames, reported as truncated; the same frames as the full walk. */
static void check_cuts(struct unwinder *u, const struct target *t, enum unwind_mode mode)
{
	struct unwind_input in = target_input(t);
	struct unwind_result full, r;
	uint64_t full_pcs[MAX_PCS], pcs[MAX_PCS];
	size_t k, slot = 0, checked = 0;

	CHECK(unwinder__unwind(u, &in, mode, full_pcs, MAX_PCS, &full) == 0);
	CHECK(full.n_pcs >= 5 && !full.truncated);
	for (k = 1; k < full.n_pcs; k++) {
		if (!find_slot(t, full_pcs[k], slot, &slot))
			break;
		in.stack_len = slot;
		CHECK(unwinder__unwind(u, &in, mode, pcs, MAX_PCS, &r) == 0);
		CHECK_EQ_U64(r.n_pcs, k);
		CHECK(r.truncated && !r.depth_cut);
		CHECK(memcmp(pcs, full_pcs, r.n_pcs * sizeof(pcs[0])) == 0);
		checked++;
		slot += 8;
	}
	/* Every frame up to main has its slot in the copy. */
	CHECK(checked >= 4);
	in.stack_len = 7;
	CHECK(unwinder__unwind(u, &in, mode, pcs, MAX_PCS, &r) == 0);
	CHECK(r.n_pcs == 1 && r.truncated && !r.depth_cut);
	/* max_pcs caps the walk, which is then incomplete: cut at the depth limit. */
	in.stack_len = t->stack_len;
	CHECK(unwinder__unwind(u, &in, mode, pcs, 3, &r) == 0);
	CHECK(r.n_pcs == 3 && r.truncated && memcmp(pcs, full_pcs, 3 * sizeof(pcs[0])) == 0);
	CHECK(r.depth_cut);
	CHECK(unwinder__unwind(u, &in, mode, pcs, full.n_pcs, &r) == 0);
	CHECK(r.n_pcs == full.n_pcs && !r.truncated && !r.depth_cut);
}

/* The frames the kernel walked come back as they are; its flags say whether the walk stopped
 * early and whether that was the depth limit (a stack deeper than UNWIND_MAX_FRAMES). */
static void test_kernel_frames_depth_cut(void)
{
	const uint64_t frames[] = { 0x401000, 0x401234, 0x405678 };
	const uint64_t regs[ALLOC_REG__COUNT] = { 0x401000, 0x7ffc0000 };
	struct unwind_input in = {
		.regs = regs,
		.stack = (const uint8_t *)frames,
		.stack_len = sizeof(frames),
		.flags = ALLOC_SAMPLE_KERNEL_FRAMES,
	};
	struct unwinder *u = NULL;
	struct unwind_result r;
	uint64_t pcs[8];

	CHECK(unwinder__new(&u) == 0);
	CHECK(unwinder__unwind(u, &in, UNWIND_KERNEL, pcs, 8, &r) == 0);
	CHECK(r.n_pcs == 3 && !r.truncated && !r.depth_cut && pcs[2] == frames[2]);
	in.flags = ALLOC_SAMPLE_KERNEL_FRAMES | ALLOC_SAMPLE_TRUNCATED;
	CHECK(unwinder__unwind(u, &in, UNWIND_KERNEL, pcs, 8, &r) == 0);
	CHECK(r.n_pcs == 3 && r.truncated && !r.depth_cut);
	in.flags = ALLOC_SAMPLE_KERNEL_FRAMES | ALLOC_SAMPLE_TRUNCATED | ALLOC_SAMPLE_DEPTH_CUT;
	CHECK(unwinder__unwind(u, &in, UNWIND_KERNEL, pcs, 8, &r) == 0);
	CHECK(r.n_pcs == 3 && r.truncated && r.depth_cut);
	/* More frames than the caller has room for: cut at its limit. */
	in.flags = ALLOC_SAMPLE_KERNEL_FRAMES;
	CHECK(unwinder__unwind(u, &in, UNWIND_KERNEL, pcs, 2, &r) == 0);
	CHECK(r.n_pcs == 2 && r.truncated && r.depth_cut);
	unwinder__free(u);
}

static void test_truncated_copy(void)
{
	struct target t;
	struct unwinder *u = NULL;

	CHECK(target_start(&t, fixture("unwind_target_cfi"), "plain"));
	if (t.pid <= 0 || !t.stack_len)
		goto out;
	CHECK(unwinder__new(&u) == 0);
	CHECK(unwinder__add_process(u, t.pid) == 0);
	check_cuts(u, &t, UNWIND_DWARF);
	check_cuts(u, &t, UNWIND_AUTO);
	unwinder__free(u);
	u = NULL;
	target_stop(&t);

	CHECK(target_start(&t, fixture("unwind_target_fp"), "plain"));
	if (t.pid <= 0 || !t.stack_len)
		goto out;
	CHECK(unwinder__new(&u) == 0);
	CHECK(unwinder__add_process(u, t.pid) == 0);
	check_cuts(u, &t, UNWIND_AUTO);
out:
	unwinder__free(u);
	target_stop(&t);
}

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Garbage never crashes and gives few frames; loops in the frame chain end. */
static void test_garbage(void)
{
	static const enum unwind_mode modes[] = {UNWIND_DWARF, UNWIND_AUTO, UNWIND_FP};
	struct target t;
	struct unwinder *u = NULL;
	struct unwind_input in;
	struct unwind_result r;
	uint64_t pcs[MAX_PCS], regs[ALLOC_REG__COUNT], seed = 0x9e3779b97f4a7c15ULL;
	uint64_t capture_ip, loop_pc = 0, sp, most = 0;
	uint8_t stack[512];
	size_t i, j, m;
	bool capped = true;

	CHECK(target_start(&t, fixture("unwind_target_cfi"), "plain"));
	if (t.pid <= 0 || !t.stack_len)
		goto out;
	CHECK(unwinder__new(&u) == 0);
	CHECK(unwinder__add_process(u, t.pid) == 0);
	capture_ip = t.regs[ALLOC_REG_IP];

	for (i = 0; i < 3000; i++) {
		for (j = 0; j < ALLOC_REG__COUNT; j++)
			regs[j] = xorshift(&seed);
		/* Sometimes a real pc, so CFI runs on the garbage stack. */
		if (i % 2)
			regs[ALLOC_REG_IP] = capture_ip;
		for (j = 0; j < sizeof(stack); j += 8) {
			uint64_t v = xorshift(&seed);

			memcpy(stack + j, &v, 8);
		}
		in = (struct unwind_input){.pid = t.pid,
					   .tid = t.pid,
					   .regs = regs,
					   .stack = stack,
					   .stack_len = sizeof(stack)};
		for (m = 0; m < N_OF(modes); m++) {
			CHECK(unwinder__unwind(u, &in, modes[m], pcs, MAX_PCS, &r) == 0);
			capped = capped && r.n_pcs <= MAX_PCS && pcs[0] == regs[ALLOC_REG_IP];
			if (r.n_pcs > most)
				most = r.n_pcs;
		}
	}
	CHECK(capped);
	/* The leaf, the return address at sp, and at most one step more. */
	CHECK(most <= 3);

	/* A frame record pointing at itself, in code without CFI: followed blindly, the chain
	 * would give the same frame until max_pcs. */
	sp = 0x7ffd00001000ULL;
	memset(stack, 0, sizeof(stack));
	{
		uint64_t direct_caller = 0x5678, self = sp + 64, ret = 0x9abc;

		memcpy(stack, &direct_caller, 8);
		memcpy(stack + 64, &self, 8);
		memcpy(stack + 72, &ret, 8);
	}
	memset(regs, 0, sizeof(regs));
	regs[ALLOC_REG_IP] = 0x1234;
	regs[ALLOC_REG_SP] = sp;
	regs[ALLOC_REG_BP] = sp + 64;
	in = (struct unwind_input){
		.pid = t.pid, .tid = t.pid, .regs = regs, .stack = stack, .stack_len = sizeof(stack)};
	for (m = 0; m < N_OF(modes); m++) {
		CHECK(unwinder__unwind(u, &in, modes[m], pcs, MAX_PCS, &r) == 0);
		CHECK(r.n_pcs <= (modes[m] == UNWIND_DWARF ? 1 : 3));
		CHECK(r.truncated);
	}
	/* A stack on which CFI marches upwards, one capture frame per slot: ends with the copy. */
	for (j = 0; j + 8 <= sizeof(stack); j += 8) {
		uint64_t ret = capture_ip + 1; /* inside capture: looked up at capture_ip */

		memcpy(stack + j, &ret, 8);
	}
	regs[ALLOC_REG_IP] = capture_ip;
	for (m = 0; m < N_OF(modes); m++) {
		CHECK(unwinder__unwind(u, &in, modes[m], pcs, MAX_PCS, &r) == 0);
		CHECK(r.n_pcs <= sizeof(stack) / 8 + 1);
		CHECK(r.truncated);
	}

	/* CFI leading back to the same frame: cfi_loop's body takes the frame address from rbp,
	 * and the copy says the saved rbp is rbp itself and the caller is cfi_loop again. */
	CHECK(find_func(&t, "cfi_loop_body", &loop_pc));
	memset(stack, 0, sizeof(stack));
	{
		uint64_t self = sp + 64, ret = loop_pc + 1;

		memcpy(stack + 64, &self, 8);
		memcpy(stack + 72, &ret, 8);
	}
	memset(regs, 0, sizeof(regs));
	regs[ALLOC_REG_IP] = loop_pc;
	regs[ALLOC_REG_SP] = sp;
	regs[ALLOC_REG_BP] = sp + 64;
	for (m = 0; m < N_OF(modes); m++) {
		if (modes[m] == UNWIND_FP)
			continue;
		CHECK(unwinder__unwind(u, &in, modes[m], pcs, MAX_PCS, &r) == 0);
		CHECK(r.n_pcs == 2 && pcs[1] == loop_pc + 1);
		CHECK(r.truncated);
	}
out:
	unwinder__free(u);
	target_stop(&t);
}

/* Entries in /proc/self/fd (the directory's own descriptor included, every time alike). */
static int open_fd_count(void)
{
	DIR *dir = opendir("/proc/self/fd");
	int n = 0;

	if (!dir)
		return -1;
	for (;;) {
		struct dirent *entry = readdir(dir);

		if (!entry)
			break;
		if (entry->d_name[0] != '.')
			n++;
	}
	closedir(dir);
	return n;
}

/* Removing one of two processes of the same executable: the other still unwinds through the
 * shared files, the last removal closes them, the removed pid is added again by its next
 * sample while it lives (not served by a stale entry), and once it is gone its samples add
 * nothing. Unknown pids change nothing. */
static void test_remove_process(void)
{
	static const char *const qsort_chain[] = {"capture", "compare", "[libc]", "inner_qsort",
						  "middle",  "outer",	"main"};
	struct target a, b;
	struct unwinder *u = NULL;
	struct unwind_input in;
	struct unwind_result r;
	uint64_t pcs[MAX_PCS];
	size_t files;

	CHECK(target_start(&a, fixture("unwind_target_cfi"), "plain"));
	CHECK(target_start(&b, fixture("unwind_target_cfi"), "qsort"));
	if (a.pid <= 0 || b.pid <= 0 || !a.stack_len || !b.stack_len)
		goto out;
	CHECK(unwinder__new(&u) == 0);
	if (!u)
		goto out;
	CHECK_EQ_U64(unwinder__process_count(u), 0);
	CHECK_EQ_U64(unwinder__file_count(u), 0);
	CHECK(unwinder__add_process(u, a.pid) == 0);
	CHECK(unwinder__add_process(u, b.pid) == 0);
	CHECK_EQ_U64(unwinder__process_count(u), 2);
	files = unwinder__file_count(u);
	/* The executable, libc and the dynamic loader, shared by both. */
	CHECK(files >= 3);
	in = target_input(&a);
	CHECK(unwinder__unwind(u, &in, UNWIND_DWARF, pcs, MAX_PCS, &r) == 0);
	check_chain("a", &a, pcs, &r, plain_chain, N_OF(plain_chain));

	/* a was the last process unwound: its removal must not leave it cached. */
	unwinder__remove_process(u, a.pid);
	CHECK_EQ_U64(unwinder__process_count(u), 1);
	CHECK_EQ_U64(unwinder__file_count(u), files);
	in = target_input(&b);
	CHECK(unwinder__unwind(u, &in, UNWIND_DWARF, pcs, MAX_PCS, &r) == 0);
	check_chain("b after a's removal", &b, pcs, &r, qsort_chain, N_OF(qsort_chain));
	check_complete(&b, pcs, &r);
	CHECK(!r.maps_reread);

	unwinder__remove_process(u, a.pid);
	unwinder__remove_process(u, 0);
	unwinder__remove_process(u, -1);
	unwinder__remove_process(u, 0x7ffffff0);
	unwinder__remove_process(NULL, b.pid);
	CHECK_EQ_U64(unwinder__process_count(u), 1);
	CHECK_EQ_U64(unwinder__file_count(u), files);

	/* No process left: no file either. */
	unwinder__remove_process(u, b.pid);
	CHECK_EQ_U64(unwinder__process_count(u), 0);
	CHECK_EQ_U64(unwinder__file_count(u), 0);

	/* b lives: its next sample reads its maps again. */
	CHECK(unwinder__unwind(u, &in, UNWIND_DWARF, pcs, MAX_PCS, &r) == 0);
	CHECK(r.maps_reread);
	check_chain("b added again", &b, pcs, &r, qsort_chain, N_OF(qsort_chain));
	check_complete(&b, pcs, &r);
	CHECK_EQ_U64(unwinder__process_count(u), 1);
	CHECK_EQ_U64(unwinder__file_count(u), files);
	unwinder__remove_process(u, b.pid);

	/* Gone and removed: a late sample gets the leaf and leaves nothing behind. */
	target_stop(&b);
	CHECK(unwinder__unwind(u, &in, UNWIND_DWARF, pcs, MAX_PCS, &r) == 0);
	CHECK(r.n_pcs == 1 && r.truncated && pcs[0] == in.regs[ALLOC_REG_IP]);
	CHECK(unwinder__add_process(u, in.pid) == -ESRCH);
	CHECK_EQ_U64(unwinder__process_count(u), 0);
	CHECK_EQ_U64(unwinder__file_count(u), 0);
out:
	unwinder__free(u);
	target_stop(&a);
	target_stop(&b);
}

#define MANY_PROCESSES 200

/* A daemon's life in small: short-lived processes added, unwound and removed one after the
 * other. Nothing accumulates: no process or file stays, and neither descriptors nor the heap
 * grow. */
static void test_many_processes(void)
{
	struct target first, t;
	struct unwinder *u = NULL;
	struct unwind_input in;
	struct unwind_result r;
	uint64_t pcs[MAX_PCS];
	size_t heap_warm = 0, heap_end, i, wrong = 0, left = 0;
	int fds_before = open_fd_count();

	CHECK(fds_before > 0);
	CHECK(target_start(&first, fixture("unwind_target_cfi"), "plain"));
	target_stop(&first);
	CHECK(unwinder__new(&u) == 0);
	for (i = 0; u && first.exe.count && i < MANY_PROCESSES; i++) {
		if (!target_start_like(&t, &first, "plain") || !t.stack_len) {
			CHECK(!"target started");
			target_stop(&t);
			break;
		}
		CHECK(unwinder__add_process(u, t.pid) == 0);
		in = target_input(&t);
		if (unwinder__unwind(u, &in, UNWIND_DWARF, pcs, MAX_PCS, &r) != 0 || r.truncated ||
		    chain_prefix(&t, pcs, r.n_pcs, plain_chain, N_OF(plain_chain)) !=
			N_OF(plain_chain))
			wrong++;
		unwinder__remove_process(u, t.pid);
		target_stop(&t);
		if (unwinder__process_count(u) != 0 || unwinder__file_count(u) != 0)
			left++;
		/* Once every cache of libc, libelf and libdwfl is warm. */
		if (i == 9)
			heap_warm = mallinfo2().uordblks;
	}
	heap_end = mallinfo2().uordblks;
	CHECK_EQ_U64(i, MANY_PROCESSES);
	CHECK_EQ_U64(wrong, 0);
	CHECK_EQ_U64(left, 0);
	CHECK_EQ_U64(open_fd_count(), fds_before);
	/* A session left behind (libdwfl's modules and CFI) is tens of KiB; 190 of them would be
	 * far above this. Constant under valgrind, whose own leak check then takes over. */
	if (heap_end > heap_warm + 64 * 1024)
		fprintf(stderr, "  heap grew by %zu bytes over %d processes\n",
			heap_end - heap_warm, MANY_PROCESSES - 10);
	CHECK(heap_end <= heap_warm + 64 * 1024);
	unwinder__free(u);
	CHECK_EQ_U64(open_fd_count(), fds_before);
}

/* Cost per unwind, printed: cold is a new unwinder's first sample after add_process (files
 * opened, CFI tables not read yet), warm the average over repeated samples. */
static void test_cost(void)
{
	static const struct {
		const char *binary, *chain;
		enum unwind_mode mode;
	} runs[] = {
	    {"unwind_target_cfi", "plain", UNWIND_DWARF},
	    {"unwind_target_cfi", "plain", UNWIND_AUTO},
	    {"unwind_target_cfi", "qsort", UNWIND_DWARF},
	    {"unwind_target_cfi", "qsort", UNWIND_AUTO},
	    {"unwind_target_fp", "plain", UNWIND_AUTO},
	    {"unwind_target_fp", "plain", UNWIND_FP},
	    {"unwind_target_fp", "qsort", UNWIND_AUTO},
	};
	struct target t;
	struct unwinder *u = NULL;
	struct unwind_input in;
	struct unwind_result r;
	uint64_t pcs[MAX_PCS], t0, add_ns, cold_ns, warm_ns, readd_ns;
	size_t i, k, reps = 20000;

	for (i = 0; i < N_OF(runs); i++) {
		CHECK(target_start(&t, fixture(runs[i].binary), runs[i].chain));
		if (t.pid <= 0 || !t.stack_len) {
			target_stop(&t);
			continue;
		}
		in = target_input(&t);
		CHECK(unwinder__new(&u) == 0);
		t0 = now_ns();
		CHECK(unwinder__add_process(u, t.pid) == 0);
		add_ns = now_ns() - t0;
		t0 = now_ns();
		CHECK(unwinder__unwind(u, &in, runs[i].mode, pcs, MAX_PCS, &r) == 0);
		cold_ns = now_ns() - t0;
		t0 = now_ns();
		for (k = 0; k < reps; k++)
			unwinder__unwind(u, &in, runs[i].mode, pcs, MAX_PCS, &r);
		warm_ns = (now_ns() - t0) / reps;
		/* The frame-pointer chain ends in libc's start code, which keeps none. */
		CHECK(r.n_pcs >= 5 && (runs[i].mode == UNWIND_FP || !r.truncated));
		/* Re-adding an unchanged process: a maps read, the session kept. */
		t0 = now_ns();
		CHECK(unwinder__add_process(u, t.pid) == 0);
		readd_ns = now_ns() - t0;
		printf(
		    "  cost %-17s %-5s %-5s: %2zu frames; add_process %6.1f us (again %5.1f us), "
		    "cold unwind %6.1f us, warm unwind %6.3f us\n",
		    runs[i].binary, runs[i].chain, unwind_mode_name(runs[i].mode), r.n_pcs,
		    add_ns / 1e3, readd_ns / 1e3, cold_ns / 1e3, warm_ns / 1e3);
		unwinder__free(u);
		u = NULL;
		target_stop(&t);
	}
}

/* A second process mapping the same files: add_process reuses the open files. */
static void test_cost_shared_files(void)
{
	struct target a, b;
	struct unwinder *u = NULL;
	struct unwind_input in;
	struct unwind_result r;
	uint64_t pcs[MAX_PCS], t0, first_ns, second_ns, cold_ns;

	CHECK(target_start(&a, fixture("unwind_target_cfi"), "plain"));
	CHECK(target_start(&b, fixture("unwind_target_cfi"), "qsort"));
	if (a.pid <= 0 || b.pid <= 0 || !b.stack_len)
		goto out;
	CHECK(unwinder__new(&u) == 0);
	t0 = now_ns();
	CHECK(unwinder__add_process(u, a.pid) == 0);
	first_ns = now_ns() - t0;
	t0 = now_ns();
	CHECK(unwinder__add_process(u, b.pid) == 0);
	second_ns = now_ns() - t0;
	in = target_input(&b);
	t0 = now_ns();
	CHECK(unwinder__unwind(u, &in, UNWIND_DWARF, pcs, MAX_PCS, &r) == 0);
	cold_ns = now_ns() - t0;
	CHECK(r.n_pcs >= 7 && !r.truncated);
	printf("  cost add_process: first process %.1f us, second mapping the same files %.1f us; "
	       "its cold unwind %.1f us\n",
	       first_ns / 1e3, second_ns / 1e3, cold_ns / 1e3);
out:
	unwinder__free(u);
	target_stop(&a);
	target_stop(&b);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	RUN(test_mode_parse);
	RUN(test_bad_arguments);
	RUN(test_cfi_build_plain_chain);
	RUN(test_fp_build_plain_chain);
	RUN(test_bare_leaf);
	RUN(test_debug_frame);
	RUN(test_replaced_file);
	RUN(test_through_libc);
	RUN(test_mixed_frames);
	RUN(test_after_exit);
	RUN(test_unknown_pid);
	RUN(test_dlopen_after_snapshot);
	RUN(test_remove_process);
	RUN(test_many_processes);
	RUN(test_truncated_copy);
	RUN(test_kernel_frames_depth_cut);
	RUN(test_garbage);
	RUN(test_cost);
	RUN(test_cost_shared_files);
	return unit_summary("unwind");
}
