/* proc_maps parsing and the symbolizer on live processes: each fixture target (PIE, non-PIE,
 * stripped with debug files) is started, prints the runtime addresses of its functions and of
 * functions in its shared libraries, and the symbolizer must name them, before and after the
 * process is killed and reaped. The -O2 -g fixtures also print the source lines of their
 * calls, which must come back as frames with inline callees, lines and readable C++ names.
 * Memory that cannot be named (anonymous code, a deleted file out of reach) must say so
 * rather than borrow a name. Removing processes (as the daemon does when they exit) must
 * forget them, keep what other processes share, start a reused pid afresh and keep memory,
 * files and descriptors bounded over hundreds of processes. Prints what a cold and a cached
 * resolution cost. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "symbolize/elf_file.h"
#include "symbolize/proc_maps.h"
#include "symbolize/symbolizer.h"
#include "unit.h"
#include "fixtures.h"

static void test_proc_maps_parse(void)
{
	static const char text[] =
	    "55d0c0a00000-55d0c0a01000 r--p 00000000 fd:01 1234567                    "
	    "/usr/bin/demo\n"
	    "55d0c0a01000-55d0c0a02000 r-xp 00001000 fd:01 1234567                    "
	    "/usr/bin/demo\n"
	    "55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0                          [heap]\n"
	    "7f0000000000-7f0000001000 rw-s 00000000 00:05 42                         "
	    "/dev/shm/a file (deleted)\n"
	    "7f0000002000-7f0000003000 rwxp 00000000 00:00 0 \n"
	    "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]";
	const struct proc_map_entry *e;
	struct proc_maps *maps = NULL;

	CHECK_EQ_U64(proc_maps__parse(text, strlen(text), &maps), 0);
	CHECK_EQ_U64(proc_maps__count(maps), 6);
	if (proc_maps__count(maps) != 6)
		goto out;

	e = proc_maps__entry(maps, 1);
	CHECK_EQ_U64(e->start, 0x55d0c0a01000ULL);
	CHECK_EQ_U64(e->end, 0x55d0c0a02000ULL);
	CHECK_EQ_U64(e->offset, 0x1000);
	CHECK_EQ_U64(e->dev_major, 0xfd);
	CHECK_EQ_U64(e->dev_minor, 1);
	CHECK_EQ_U64(e->inode, 1234567);
	CHECK(e->readable && !e->writable && e->executable && e->private_ && !e->deleted);
	CHECK_STR(e->path, "/usr/bin/demo");
	CHECK(proc_map_entry__is_file(e));

	e = proc_maps__entry(maps, 2);
	CHECK_STR(e->path, "[heap]");
	CHECK(!proc_map_entry__is_file(e));

	e = proc_maps__entry(maps, 3);
	CHECK_STR(e->path, "/dev/shm/a file");
	CHECK(e->deleted && !e->private_ && e->writable);

	e = proc_maps__entry(maps, 4);
	CHECK_STR(e->path, "[anon]");
	CHECK(e->executable && !proc_map_entry__is_file(e));
	CHECK_STR(proc_maps__entry(maps, 5)->path, "[stack]");
	CHECK(proc_maps__entry(maps, 6) == NULL);

	/* Start inclusive, end exclusive, gaps empty. */
	CHECK(proc_maps__find(maps, 0x55d0c0a00000ULL) == proc_maps__entry(maps, 0));
	CHECK(proc_maps__find(maps, 0x55d0c0a00fffULL) == proc_maps__entry(maps, 0));
	CHECK(proc_maps__find(maps, 0x55d0c0a01000ULL) == proc_maps__entry(maps, 1));
	CHECK(proc_maps__find(maps, 0x55d0c0a02000ULL) == NULL);
	CHECK(proc_maps__find(maps, 0x1000) == NULL);
	CHECK(proc_maps__find(maps, 0x7ffd00020fffULL) == proc_maps__entry(maps, 5));
	CHECK(proc_maps__find(maps, 0x7ffd00021000ULL) == NULL);
out:
	proc_maps__free(maps);

	CHECK_EQ_U64(proc_maps__parse("garbage\n", 8, &maps), -EINVAL);
	CHECK(maps == NULL);
	proc_maps__free(NULL);
}

static void test_proc_maps_self(void)
{
	struct proc_maps *maps = NULL;
	const struct proc_map_entry *e;
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	int on_stack = 0;

	CHECK(n > 0);
	exe[n > 0 ? n : 0] = '\0';
	CHECK_EQ_U64(proc_maps__read(getpid(), &maps), 0);
	e = proc_maps__find(maps, (uintptr_t)&test_proc_maps_self);
	CHECK(e != NULL);
	if (e) {
		CHECK(e->executable);
		CHECK_STR(e->path, exe);
	}
	/* Writable, not code (under valgrind the stack is not "[stack]", so no name check). */
	e = proc_maps__find(maps, (uintptr_t)&on_stack);
	CHECK(e && e->writable && !e->executable);
	proc_maps__free(maps);
}

/* A started fixture target and the addresses it printed. */
struct target {
	pid_t pid;
	int gate_fd; /* write end the child waits on before exec; -1 once released */
	FILE *out;
	char names[16][64];
	uint64_t addrs[16];
	int count;
	/* "line name N": the source line of a call, as the fixture's __LINE__ said. */
	char line_names[8][64];
	int64_t lines[8];
	int line_count;
};

/* Starts path with stdout on a pipe. With gated, the forked child waits for release_target()
 * before exec, so its pre-exec layout can be snapshotted. */
static bool start_target(const char *path, bool gated, struct target *t)
{
	int out_pipe[2], gate_pipe[2];

	memset(t, 0, sizeof(*t));
	t->gate_fd = -1;
	if (pipe(out_pipe) != 0)
		return false;
	if (pipe(gate_pipe) != 0) {
		close(out_pipe[0]);
		close(out_pipe[1]);
		return false;
	}
	t->pid = fork();
	if (t->pid < 0)
		return false;
	if (t->pid == 0) {
		char byte;

		dup2(out_pipe[1], STDOUT_FILENO);
		close(out_pipe[0]);
		close(out_pipe[1]);
		close(gate_pipe[1]);
		if (gated && read(gate_pipe[0], &byte, 1) != 1)
			_exit(126);
		close(gate_pipe[0]);
		execl(path, path, (char *)NULL);
		_exit(127);
	}
	close(out_pipe[1]);
	close(gate_pipe[0]);
	t->gate_fd = gate_pipe[1];
	t->out = fdopen(out_pipe[0], "r");
	if (!gated) {
		close(t->gate_fd);
		t->gate_fd = -1;
	}
	return t->out != NULL;
}

/* Reads "name 0xADDR" lines up to "ready". */
static bool read_target_addresses(struct target *t)
{
	char line[256];

	if (t->gate_fd >= 0) {
		CHECK(write(t->gate_fd, "g", 1) == 1);
		close(t->gate_fd);
		t->gate_fd = -1;
	}
	while (t->out && fgets(line, sizeof(line), t->out)) {
		unsigned long long addr;
		long long number;

		if (strncmp(line, "ready", 5) == 0)
			return true;
		if (strncmp(line, "line ", 5) == 0) {
			if (t->line_count < 8 && sscanf(line + 5, "%63s %lld",
							t->line_names[t->line_count], &number) == 2)
				t->lines[t->line_count++] = number;
			continue;
		}
		if (t->count < 16 && sscanf(line, "%63s %llx", t->names[t->count], &addr) == 2)
			t->addrs[t->count++] = addr;
	}
	return false;
}

static int64_t target_line(const struct target *t, const char *name)
{
	int i;

	for (i = 0; i < t->line_count; i++) {
		if (strcmp(t->line_names[i], name) == 0)
			return t->lines[i];
	}
	fprintf(stderr, "  the target printed no line for %s\n", name);
	unit_case_failures++;
	return -1;
}

static uint64_t target_addr(const struct target *t, const char *name)
{
	int i;

	for (i = 0; i < t->count; i++) {
		if (strcmp(t->names[i], name) == 0)
			return t->addrs[i];
	}
	fprintf(stderr, "  the target printed no address for %s\n", name);
	unit_case_failures++;
	return 0;
}

static void stop_target(struct target *t)
{
	int status;

	if (t->gate_fd >= 0)
		close(t->gate_fd);
	t->gate_fd = -1;
	if (t->pid > 0) {
		kill(t->pid, SIGKILL);
		waitpid(t->pid, &status, 0);
	}
	if (t->out)
		fclose(t->out);
	t->out = NULL;
}

static struct symbolized_frame resolve(struct symbolizer *s, pid_t pid, uint64_t addr,
				       bool is_return_address)
{
	struct symbolized_frame frame;

	memset(&frame, 0xa5, sizeof(frame));
	CHECK_EQ_U64(symbolizer__resolve(s, pid, addr, is_return_address, &frame), 0);
	return frame;
}

/* Every printed function resolves to its name and entry, in the right file. */
static void check_target_functions(struct symbolizer *s, const struct target *t,
				   const char *exe_suffix)
{
	static const char *const exe_functions[] = {"fixture_alpha", "fixture_beta",
						    "fixture_nosize", "fixture_after_nosize",
						    "fixture_tail_caller"};
	struct symbolized_frame frame;
	uint64_t addr;
	size_t i;

	for (i = 0; i < sizeof(exe_functions) / sizeof(exe_functions[0]); i++) {
		addr = target_addr(t, exe_functions[i]);
		frame = resolve(s, t->pid, addr, false);
		CHECK_STR(frame.function, exe_functions[i]);
		CHECK_STR(frame.system_name, exe_functions[i]);
		CHECK_EQ_U64(frame.function_start, addr);
		/* The fixtures are built -O1 -g -fno-inline: one line, the function's own. */
		CHECK_EQ_U64(frame.n_lines, 1);
		if (frame.n_lines == 1)
			CHECK(frame.lines[0].function == frame.function);
		CHECK(!frame.unnamed_memory);
		CHECK(ends_with(frame.map_path, exe_suffix));
		CHECK(frame.mapping_key != NULL);
		CHECK(frame.map_start <= addr && addr < frame.map_limit);

		/* A return address 3 bytes in: the call is still inside the function. */
		frame = resolve(s, t->pid, addr + 3, true);
		CHECK_STR(frame.function, exe_functions[i]);
		CHECK_EQ_U64(frame.function_start, addr);
	}

	addr = target_addr(t, "fixture_lib_function");
	frame = resolve(s, t->pid, addr + 1, false);
	CHECK_STR(frame.function, "fixture_lib_function");
	CHECK_EQ_U64(frame.function_start, addr);
	CHECK(ends_with(frame.map_path, "/libfixture.so"));

	addr = target_addr(t, "malloc");
	frame = resolve(s, t->pid, addr, false);
	CHECK_STR(frame.function, "malloc");
	CHECK(frame.map_path && strstr(frame.map_path, "libc.so.6"));

	frame = resolve(s, t->pid, target_addr(t, "return_in_main"), true);
	CHECK_STR(frame.function, "main");

	/* The call to a noreturn function is fixture_tail_caller's last instruction: the
	 * return address may be past its end, but the call instruction is not. */
	addr = target_addr(t, "return_in_tail_caller");
	frame = resolve(s, t->pid, addr, true);
	CHECK_STR(frame.function, "fixture_tail_caller");
	frame = resolve(s, t->pid, addr, false);
	CHECK(!frame.function || strcmp(frame.function, "fixture_tail_caller") != 0);
}

static void check_symbolizer_on(const char *exe)
{
	struct symbolizer *s = symbolizer__new();
	struct symbolized_frame alpha, beta, lib, again;
	struct target t;
	char build_id[128] = "";
	struct elf_file *f = NULL;
	pid_t pid;

	CHECK(s != NULL);
	CHECK(start_target(fixture(exe), false, &t));
	CHECK(read_target_addresses(&t));
	if (!s || t.count == 0) {
		stop_target(&t);
		symbolizer__free(s);
		return;
	}
	pid = t.pid;
	CHECK_EQ_U64(symbolizer__add_process(s, pid), 0);
	check_target_functions(s, &t, exe);

	/* Build id of the executable, as elf_file reads it from the fixture directly. */
	CHECK_EQ_U64(elf_file__open(fixture(exe), &f), 0);
	if (f)
		snprintf(build_id, sizeof(build_id), "%s", elf_file__build_id(f));
	elf_file__free(f);
	alpha = resolve(s, pid, target_addr(&t, "fixture_alpha"), false);
	beta = resolve(s, pid, target_addr(&t, "fixture_beta"), false);
	lib = resolve(s, pid, target_addr(&t, "fixture_lib_function"), false);
	CHECK_STR(alpha.build_id, build_id);
	CHECK(alpha.mapping_key == beta.mapping_key);
	CHECK(alpha.mapping_key != lib.mapping_key);
	CHECK(lib.build_id && strcmp(lib.build_id, build_id) != 0);

	/* Still resolves once the process is gone: cached addresses and new ones alike. */
	stop_target(&t);
	CHECK_EQ_U64(symbolizer__add_process(s, pid), -ESRCH);
	again = resolve(s, pid, target_addr(&t, "fixture_alpha"), false);
	CHECK(again.mapping_key == alpha.mapping_key);
	CHECK(again.function == alpha.function);
	again = resolve(s, pid, target_addr(&t, "fixture_alpha") + 5, true);
	CHECK_STR(again.function, "fixture_alpha");
	again = resolve(s, pid, target_addr(&t, "fixture_lib_function") + 2, false);
	CHECK_STR(again.function, "fixture_lib_function");
	check_target_functions(s, &t, exe);
	symbolizer__free(s);
}

static void test_symbolizer_pie(void)
{
	check_symbolizer_on("target_pie");
}

static void test_symbolizer_non_pie(void)
{
	struct elf_file *f = NULL;

	/* Make sure the fixture really is ET_EXEC: function vaddr == runtime address. */
	CHECK_EQ_U64(elf_file__open(fixture("target_nopie"), &f), 0);
	CHECK(f && !elf_file__is_shared_object(f));
	elf_file__free(f);
	check_symbolizer_on("target_nopie");
}

static void test_symbolizer_stripped(void)
{
	const char *roots[] = {NULL, NULL};
	char debug_root[PATH_MAX];

	snprintf(debug_root, sizeof(debug_root), "%s", fixture("debug"));
	roots[0] = debug_root;
	CHECK_EQ_U64(elf_file__set_debug_roots(roots), 0);
	check_symbolizer_on("target_debuglink");
	check_symbolizer_on("target_buildid");
	CHECK_EQ_U64(elf_file__set_debug_roots(NULL), 0);
}

/* Two processes of one executable share its parsed file but not their mapping keys. */
static void test_symbolizer_shares_files(void)
{
	struct symbolizer *s = symbolizer__new();
	struct symbolized_frame a, b;
	struct target t1, t2;

	CHECK(s != NULL);
	CHECK(start_target(fixture("target_pie"), false, &t1));
	CHECK(start_target(fixture("target_pie"), false, &t2));
	CHECK(read_target_addresses(&t1));
	CHECK(read_target_addresses(&t2));
	if (s && t1.count && t2.count) {
		CHECK_EQ_U64(symbolizer__add_process(s, t1.pid), 0);
		CHECK_EQ_U64(symbolizer__add_process(s, t2.pid), 0);
		a = resolve(s, t1.pid, target_addr(&t1, "fixture_lib_function"), false);
		b = resolve(s, t2.pid, target_addr(&t2, "fixture_lib_function"), false);
		CHECK(a.build_id != NULL && a.build_id == b.build_id);
		CHECK(a.function != NULL && a.function == b.function);
		CHECK(a.mapping_key != b.mapping_key);
		a = resolve(s, t1.pid, target_addr(&t1, "fixture_alpha"), false);
		b = resolve(s, t2.pid, target_addr(&t2, "fixture_alpha"), false);
		CHECK(a.build_id != NULL && a.build_id == b.build_id);
		CHECK(a.mapping_key != b.mapping_key);
	}
	stop_target(&t1);
	stop_target(&t2);
	symbolizer__free(s);
}

/* A snapshot taken before the process loaded its code (here: before exec) is re-read when
 * an address falls outside it, as after a dlopen(). */
static void test_symbolizer_rereads_maps_on_miss(void)
{
	struct symbolizer *s = symbolizer__new();
	struct symbolized_frame frame;
	struct target t;

	CHECK(s != NULL);
	CHECK(start_target(fixture("target_pie"), true, &t));
	if (s && t.pid > 0) {
		CHECK_EQ_U64(symbolizer__add_process(s, t.pid), 0);
		CHECK(read_target_addresses(&t));
		frame = resolve(s, t.pid, target_addr(&t, "fixture_lib_function"), false);
		CHECK_STR(frame.function, "fixture_lib_function");
		frame = resolve(s, t.pid, target_addr(&t, "fixture_alpha"), false);
		CHECK_STR(frame.function, "fixture_alpha");
	}
	stop_target(&t);
	symbolizer__free(s);
}

/* The executable was deleted (upgraded) after it started: maps says "(deleted)" and only
 * /proc/PID/map_files/ still leads to it, which takes CAP_SYS_ADMIN. */
static void test_symbolizer_deleted_executable(void)
{
	char dir[] = "/tmp/allocscope-sym-XXXXXX";
	char exe[PATH_MAX], lib[PATH_MAX], cmd[3 * PATH_MAX];
	struct symbolizer *s = symbolizer__new();
	struct symbolized_frame frame;
	struct target t = {.pid = -1, .gate_fd = -1};

	if (geteuid() != 0) {
		fprintf(stderr, "  skipped: needs root for /proc/PID/map_files\n");
		symbolizer__free(s);
		return;
	}
	CHECK(s != NULL);
	CHECK(mkdtemp(dir) != NULL);
	snprintf(exe, sizeof(exe), "%s/target_pie", dir);
	snprintf(lib, sizeof(lib), "%s/libfixture.so", dir);
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s' '%s'", fixture("target_pie"),
		 fixture("libfixture.so"), dir);
	CHECK(system(cmd) == 0);
	CHECK(start_target(exe, false, &t));
	CHECK(read_target_addresses(&t));
	CHECK(unlink(exe) == 0);
	CHECK(unlink(lib) == 0);
	CHECK(rmdir(dir) == 0);
	if (s && t.count) {
		CHECK_EQ_U64(symbolizer__add_process(s, t.pid), 0);
		frame = resolve(s, t.pid, target_addr(&t, "fixture_alpha"), false);
		CHECK_STR(frame.function, "fixture_alpha");
		CHECK(ends_with(frame.map_path, "/target_pie"));
		frame = resolve(s, t.pid, target_addr(&t, "fixture_lib_function"), false);
		CHECK_STR(frame.function, "fixture_lib_function");
	}
	stop_target(&t);
	symbolizer__free(s);
}

static void test_symbolizer_bad_input(void)
{
	struct symbolizer *s = symbolizer__new();
	struct symbolized_frame frame;
	struct proc_maps *maps = NULL;
	struct target t;
	pid_t gone;

	CHECK(s != NULL);
	if (!s)
		return;
	/* A pid that existed and was reaped. */
	CHECK(start_target(fixture("target_pie"), false, &t));
	CHECK(read_target_addresses(&t));
	gone = t.pid;
	stop_target(&t);
	CHECK_EQ_U64(symbolizer__add_process(s, gone), -ESRCH);
	CHECK_EQ_U64(symbolizer__resolve(s, gone, 0x1000, false, &frame), -ESRCH);
	CHECK_EQ_U64(proc_maps__read(gone, &maps), -ESRCH);
	CHECK(maps == NULL);
	/* Beyond any pid_max. */
	CHECK_EQ_U64(symbolizer__add_process(s, 0x7ffffff0), -ESRCH);
	CHECK_EQ_U64(symbolizer__add_process(s, 0), -EINVAL);

	/* An address no mapping holds, in a live process (this one). */
	CHECK_EQ_U64(symbolizer__resolve(s, getpid(), 0x10, false, &frame), 0);
	CHECK(frame.mapping_key == NULL && frame.function == NULL && frame.map_path == NULL);
	symbolizer__free(s);
	symbolizer__free(NULL);
}

/* A function of this test binary for the saved-maps test to name. */
__attribute__((noinline)) int saved_maps_marker(int x)
{
	return x * 3 + 1;
}

/* maps with the inode of every line of path replaced by inode + 1 (a file replaced since). */
static char *maps_with_other_inode(const char *maps, const char *path)
{
	size_t len = strlen(maps), at = 0;
	char *out = malloc(len + 4096);
	const char *line = maps;

	if (!out)
		return NULL;
	while (*line) {
		const char *nl = strchr(line, '\n');
		size_t n = nl ? (size_t)(nl - line) : strlen(line);
		unsigned long long inode;
		char range[64], perms[8], offset[32], dev[16], tail[PATH_MAX];
		int w;

		if (n < sizeof(tail) &&
		    sscanf(line, "%63s %7s %31s %15s %llu %4095[^\n]", range, perms, offset, dev,
			   &inode, tail) == 6 &&
		    strcmp(tail, path) == 0 && at + n + 64 < len + 4096) {
			w = snprintf(out + at, len + 4096 - at, "%s %s %s %s %llu %s\n", range,
				     perms, offset, dev, inode + 1, tail);
		} else {
			w = snprintf(out + at, len + 4096 - at, "%.*s\n", (int)n, line);
		}
		if (w < 0 || at + (size_t)w >= len + 4096)
			break;
		at += (size_t)w;
		line += n + (nl ? 1 : 0);
	}
	out[at] = '\0';
	return out;
}

/* `allocscope count`: a process's maps saved as text (liballocscope-count.so writes them at
 * exit) resolve under a key that is no pid; a file whose inode is not the one the text names
 * (replaced since) gives no names; bad text and a key already used are refused. */
static void test_symbolizer_saved_process(void)
{
	const pid_t key = 0x7f000001, replaced = 0x7f000002;
	uint64_t addr = (uint64_t)(uintptr_t)saved_maps_marker;
	struct symbolizer *s = symbolizer__new();
	struct symbolized_frame frame;
	char exe[PATH_MAX], *maps = NULL, *other = NULL;
	size_t len = 0;
	FILE *f = fopen("/proc/self/maps", "r");
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	CHECK(s && f && n > 0);
	if (!s || !f || n <= 0)
		goto out;
	exe[n] = '\0';
	maps = malloc(1 << 20);
	CHECK(maps != NULL);
	if (!maps)
		goto out;
	len = fread(maps, 1, (1 << 20) - 1, f);
	maps[len] = '\0';
	other = maps_with_other_inode(maps, exe);
	CHECK(other != NULL && strcmp(other, maps) != 0);
	if (!other)
		goto out;

	CHECK_EQ_U64(symbolizer__add_saved_process(s, key, maps, len), 0);
	CHECK_EQ_U64(symbolizer__resolve(s, key, addr, false, &frame), 0);
	CHECK(frame.function && strcmp(frame.function, "saved_maps_marker") == 0);
	CHECK(frame.map_path && strcmp(frame.map_path, exe) == 0);
	CHECK(frame.n_lines >= 1);
	/* A return address into it names it too (the call's byte, not the next function's). */
	CHECK_EQ_U64(symbolizer__resolve(s, key, addr + 1, true, &frame), 0);
	CHECK(frame.function && strcmp(frame.function, "saved_maps_marker") == 0);

	CHECK_EQ_U64(symbolizer__add_saved_process(s, replaced, other, strlen(other)), 0);
	CHECK_EQ_U64(symbolizer__resolve(s, replaced, addr, false, &frame), 0);
	CHECK(frame.function == NULL);
	CHECK(frame.mapping_key != NULL && frame.map_path && strstr(frame.map_path, exe) &&
	      strstr(frame.map_path, "(replaced)"));

	CHECK_EQ_U64(symbolizer__add_saved_process(s, key, maps, len), -EINVAL);
	CHECK_EQ_U64(symbolizer__add_saved_process(s, 0x7f000003, "not a maps line\n", 16),
		     -EINVAL);
	CHECK_EQ_U64(symbolizer__add_saved_process(s, 0, maps, len), -EINVAL);
	CHECK_EQ_U64(symbolizer__add_saved_process(NULL, 0x7f000004, maps, len), -EINVAL);
out:
	if (f)
		fclose(f);
	free(maps);
	free(other);
	symbolizer__free(s);
}

/* A saved maps text is data that a command dropped to another user wrote: a line naming a
 * device (its inode given right) must not make root open it (opening a watchdog arms it, a
 * tape rewinds). Opens of /dev/null are watched through inotify: none may happen. */
/* A return address is a caller only in code: not on the stack or the heap, not outside every
 * mapping, and not the trampoline a return probe leaves in its place (the [uprobes] page's
 * first byte, even with code just below it). */
static void test_symbolizer_is_code(void)
{
	static const char maps[] =
	    "7f0000000000-7f0000001000 r-xp 00000000 00:00 0 \n"
	    "7f0000001000-7f0000002000 --xp 00000000 00:00 0                          [uprobes]\n"
	    "7f0000010000-7f0000012000 r-xp 00000000 00:00 0                          [vdso]\n"
	    "7f0000020000-7f0000030000 rw-p 00000000 00:00 0 \n"
	    "7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0                          [stack]\n";
	const pid_t pid = 0x7f000010;
	struct symbolizer *s = symbolizer__new();

	CHECK(s != NULL);
	if (!s)
		return;
	CHECK_EQ_U64(symbolizer__add_saved_process(s, pid, maps, strlen(maps)), 0);
	CHECK_EQ_U64(symbolizer__is_code(s, pid, 0x7f0000000123), 1); /* JIT code */
	CHECK_EQ_U64(symbolizer__is_code(s, pid, 0x7f0000010456), 1); /* [vdso] */
	CHECK_EQ_U64(symbolizer__is_code(s, pid, 0x7f0000001000), 0); /* the trampoline */
	CHECK_EQ_U64(symbolizer__is_code(s, pid, 0x7f0000001010), 0); /* in [uprobes] */
	CHECK_EQ_U64(symbolizer__is_code(s, pid, 0x7f0000020100), 0); /* data */
	CHECK_EQ_U64(symbolizer__is_code(s, pid, 0x7fffffffe000), 0); /* the stack */
	CHECK_EQ_U64(symbolizer__is_code(s, pid, 0x7f0000005000), 0); /* no mapping */
	CHECK_EQ_U64(symbolizer__is_code(s, pid, 0), 0);
	CHECK_EQ_U64(symbolizer__is_code(NULL, pid, 0x7f0000000123), -EINVAL);
	symbolizer__free(s);
}

static void test_symbolizer_saved_process_device(void)
{
	const pid_t key = 0x7f000011;
	struct symbolizer *s = symbolizer__new();
	struct symbolized_frame frame;
	char maps[256], events[4096];
	struct stat st;
	int in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	int n;

	CHECK(s && in >= 0 && stat("/dev/null", &st) == 0);
	if (!s || in < 0)
		goto out;
	CHECK(inotify_add_watch(in, "/dev/null", IN_OPEN) >= 0);
	n = snprintf(maps, sizeof(maps),
		     "7f0000000000-7f0000010000 r-xp 00000000 00:05 %llu /dev/null\n",
		     (unsigned long long)st.st_ino);
	CHECK_EQ_U64(symbolizer__add_saved_process(s, key, maps, (size_t)n), 0);
	symbolizer__resolve(s, key, 0x7f0000000100, false, &frame);
	CHECK(frame.function == NULL);
	CHECK(read(in, events, sizeof(events)) < 0 && errno == EAGAIN);
out:
	if (in >= 0)
		close(in);
	symbolizer__free(s);
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

/* Bytes malloc has handed out and not had back (constant under valgrind, which replaces
 * malloc: the growth checks then pass and valgrind's own leak check takes over). */
static size_t heap_in_use(void)
{
	return mallinfo2().uordblks;
}

/* Removing one of two processes of the same executable forgets it and nothing else: the other
 * still resolves through the shared files, the removed pid is added again from scratch while
 * it lives and refused once it is gone, and unknown pids change nothing. */
static void test_symbolizer_remove_process(void)
{
	struct symbolizer *s = symbolizer__new();
	struct symbolized_frame a, b, again;
	struct target t1, t2, t3;
	size_t files = 0;

	CHECK(s != NULL);
	CHECK(start_target(fixture("target_pie"), false, &t1));
	CHECK(start_target(fixture("target_pie"), false, &t2));
	CHECK(read_target_addresses(&t1));
	CHECK(read_target_addresses(&t2));
	if (!s || !t1.count || !t2.count)
		goto out;
	CHECK_EQ_U64(symbolizer__process_count(s), 0);
	CHECK_EQ_U64(symbolizer__file_count(s), 0);
	CHECK_EQ_U64(symbolizer__add_process(s, t1.pid), 0);
	CHECK_EQ_U64(symbolizer__add_process(s, t2.pid), 0);
	CHECK_EQ_U64(symbolizer__process_count(s), 2);
	files = symbolizer__file_count(s);
	/* target_pie, libfixture.so, libc and the dynamic loader, shared by both. */
	CHECK(files >= 4);
	a = resolve(s, t1.pid, target_addr(&t1, "fixture_alpha"), false);
	CHECK_STR(a.function, "fixture_alpha");
	b = resolve(s, t2.pid, target_addr(&t2, "fixture_lib_function"), false);
	CHECK_STR(b.function, "fixture_lib_function");

	symbolizer__remove_process(s, t1.pid);
	CHECK_EQ_U64(symbolizer__process_count(s), 1);
	CHECK_EQ_U64(symbolizer__file_count(s), files);
	/* t2's answers, given before and new, still stand (valgrind watches b's strings). */
	CHECK_STR(b.function, "fixture_lib_function");
	CHECK(b.build_id != NULL && strlen(b.build_id) > 10);
	again = resolve(s, t2.pid, target_addr(&t2, "fixture_lib_function"), false);
	CHECK(again.function == b.function && again.mapping_key == b.mapping_key);
	again = resolve(s, t2.pid, target_addr(&t2, "fixture_alpha"), false);
	CHECK_STR(again.function, "fixture_alpha");
	again = resolve(s, t2.pid, target_addr(&t2, "malloc"), false);
	CHECK_STR(again.function, "malloc");

	/* Unknown pids, a second removal included: nothing changes. */
	symbolizer__remove_process(s, t1.pid);
	symbolizer__remove_process(s, 0);
	symbolizer__remove_process(s, -1);
	symbolizer__remove_process(s, 0x7ffffff0);
	symbolizer__remove_process(NULL, t2.pid);
	CHECK_EQ_U64(symbolizer__process_count(s), 1);
	CHECK_EQ_U64(symbolizer__file_count(s), files);
	again = resolve(s, t2.pid, target_addr(&t2, "fixture_alpha"), false);
	CHECK_STR(again.function, "fixture_alpha");

	/* t1 still lives: resolving adds it again. */
	a = resolve(s, t1.pid, target_addr(&t1, "fixture_alpha") + 3, true);
	CHECK_STR(a.function, "fixture_alpha");
	CHECK_EQ_U64(symbolizer__process_count(s), 2);
	symbolizer__remove_process(s, t1.pid);
	CHECK_EQ_U64(symbolizer__process_count(s), 1);

	/* Gone and removed: unknown for good, and not kept. */
	stop_target(&t1);
	CHECK_EQ_U64(symbolizer__resolve(s, t1.pid, target_addr(&t1, "fixture_alpha"), false, &a),
		     -ESRCH);
	CHECK(a.mapping_key == NULL && a.function == NULL);
	CHECK_EQ_U64(symbolizer__add_process(s, t1.pid), -ESRCH);
	CHECK_EQ_U64(symbolizer__process_count(s), 1);

	/* The last process gone: none known, and the files wait for the next process. */
	symbolizer__remove_process(s, t2.pid);
	CHECK_EQ_U64(symbolizer__process_count(s), 0);
	CHECK_EQ_U64(symbolizer__file_count(s), files);
	CHECK(start_target(fixture("target_pie"), false, &t3));
	CHECK(read_target_addresses(&t3));
	if (t3.count) {
		CHECK_EQ_U64(symbolizer__add_process(s, t3.pid), 0);
		CHECK_EQ_U64(symbolizer__file_count(s), files);
		again = resolve(s, t3.pid, target_addr(&t3, "fixture_lib_function"), false);
		CHECK_STR(again.function, "fixture_lib_function");
		again = resolve(s, t3.pid, target_addr(&t3, "fixture_beta"), false);
		CHECK_STR(again.function, "fixture_beta");
		symbolizer__remove_process(s, t3.pid);
	}
	stop_target(&t3);
	CHECK_EQ_U64(symbolizer__process_count(s), 0);
out:
	stop_target(&t1);
	stop_target(&t2);
	symbolizer__free(s);
}

/* A removed pid met again (pid reuse; here the same pid after its exec) starts from nothing:
 * an address resolved for the old image does not answer for the new one. The forked child is
 * a copy of this test until it is released to exec target_pie. */
static void test_symbolizer_removed_pid_starts_fresh(void)
{
	uint64_t old_code = (uintptr_t)&test_symbolizer_removed_pid_starts_fresh;
	struct symbolizer *s = symbolizer__new();
	struct symbolized_frame frame;
	struct target t;

	CHECK(s != NULL);
	CHECK(start_target(fixture("target_pie"), true, &t));
	if (!s || t.pid <= 0)
		goto out;
	frame = resolve(s, t.pid, old_code, false);
	CHECK_STR(frame.function, "test_symbolizer_removed_pid_starts_fresh");
	symbolizer__remove_process(s, t.pid);
	CHECK_EQ_U64(symbolizer__process_count(s), 0);
	CHECK(read_target_addresses(&t));
	frame = resolve(s, t.pid, old_code, false);
	CHECK(!frame.function ||
	      strcmp(frame.function, "test_symbolizer_removed_pid_starts_fresh") != 0);
	frame = resolve(s, t.pid, target_addr(&t, "fixture_alpha"), false);
	CHECK_STR(frame.function, "fixture_alpha");
	CHECK(ends_with(frame.map_path, "/target_pie"));
	CHECK_EQ_U64(symbolizer__process_count(s), 1);
out:
	stop_target(&t);
	symbolizer__free(s);
}

#define MANY_PROCESSES 200

/* A daemon's life in small: short-lived processes added, resolved and removed one after the
 * other. Nothing accumulates: no process stays known, the file cache holds just what the next
 * process maps, and neither descriptors nor the heap grow. */
static void test_symbolizer_many_processes(void)
{
	static const char *const names[] = {"fixture_alpha", "fixture_lib_function", "malloc"};
	struct symbolizer *s = symbolizer__new();
	size_t files = 0, heap_warm = 0, heap_end, i, k;
	int fds_before = open_fd_count(), misnamed = 0, left_known = 0, file_changes = 0;
	struct symbolized_frame frame;
	struct target t;

	CHECK(s != NULL);
	CHECK(fds_before > 0);
	for (i = 0; s && i < MANY_PROCESSES; i++) {
		if (!start_target(fixture("target_pie"), false, &t) || !read_target_addresses(&t)) {
			CHECK(!"target started");
			stop_target(&t);
			break;
		}
		CHECK_EQ_U64(symbolizer__add_process(s, t.pid), 0);
		for (k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
			if (symbolizer__resolve(s, t.pid, target_addr(&t, names[k]), false,
						&frame) != 0 ||
			    !frame.function || strcmp(frame.function, names[k]) != 0)
				misnamed++;
		}
		symbolizer__remove_process(s, t.pid);
		stop_target(&t);
		if (symbolizer__process_count(s) != 0)
			left_known++;
		if (i == 0)
			files = symbolizer__file_count(s);
		else if (symbolizer__file_count(s) != files)
			file_changes++;
		/* Once every cache of libc and libelf is warm. */
		if (i == 9)
			heap_warm = heap_in_use();
	}
	heap_end = heap_in_use();
	CHECK_EQ_U64(i, MANY_PROCESSES);
	CHECK_EQ_U64(misnamed, 0);
	CHECK_EQ_U64(left_known, 0);
	CHECK_EQ_U64(file_changes, 0);
	CHECK(files >= 4 && files <= SYMBOLIZER_UNUSED_FILES);
	CHECK_EQ_U64(open_fd_count(), fds_before);
	/* What one process leaves behind when it is not freed (mappings, addresses, lines) is
	 * several KiB; 190 of them would be far above this. */
	if (heap_end > heap_warm + 64 * 1024)
		fprintf(stderr, "  heap grew by %zu bytes over %d processes\n",
			heap_end - heap_warm, MANY_PROCESSES - 10);
	CHECK(heap_end <= heap_warm + 64 * 1024);
	symbolizer__free(s);
	CHECK_EQ_U64(open_fd_count(), fds_before);
}

/* Unused files are kept up to SYMBOLIZER_UNUSED_FILES, the ones released longest ago closed
 * first: processes of SYMBOLIZER_UNUSED_FILES + 8 copies of one executable (a file each)
 * come and go. */
static void test_symbolizer_unused_files_bounded(void)
{
	enum { COPIES = SYMBOLIZER_UNUSED_FILES + 8 };
	char dir[] = "/tmp/allocscope-lru-XXXXXX";
	char path[PATH_MAX], cmd[2 * PATH_MAX + 64];
	struct symbolizer *s = symbolizer__new();
	int fds_before = open_fd_count(), misnamed = 0, i;
	struct symbolized_frame frame;
	size_t most = 0;
	struct target t;

	CHECK(s != NULL);
	CHECK(mkdtemp(dir) != NULL);
	for (i = 0; i < COPIES; i++) {
		snprintf(cmd, sizeof(cmd), "cp '%s' '%s/lines%d'", fixture("lines"), dir, i);
		CHECK(system(cmd) == 0);
	}
	for (i = 0; s && i < COPIES; i++) {
		snprintf(path, sizeof(path), "%s/lines%d", dir, i);
		if (!start_target(path, false, &t) || !read_target_addresses(&t)) {
			CHECK(!"target started");
			stop_target(&t);
			goto out;
		}
		CHECK_EQ_U64(symbolizer__add_process(s, t.pid), 0);
		if (symbolizer__resolve(s, t.pid, target_addr(&t, "return_in_known"), true,
					&frame) != 0 ||
		    !frame.function || strcmp(frame.function, "lines_known") != 0)
			misnamed++;
		if (symbolizer__file_count(s) > most)
			most = symbolizer__file_count(s);
		symbolizer__remove_process(s, t.pid);
		stop_target(&t);
	}
	CHECK_EQ_U64(misnamed, 0);
	/* The copy, libc and the loader while a process lived; a full list once they are gone. */
	CHECK(most <= SYMBOLIZER_UNUSED_FILES + 3);
	CHECK_EQ_U64(symbolizer__file_count(s), SYMBOLIZER_UNUSED_FILES);
	CHECK_EQ_U64(symbolizer__process_count(s), 0);

	/* The last copy was released last: still parsed, so its new process opens nothing. */
	snprintf(path, sizeof(path), "%s/lines%d", dir, COPIES - 1);
	CHECK(start_target(path, false, &t));
	CHECK(read_target_addresses(&t));
	CHECK_EQ_U64(symbolizer__add_process(s, t.pid), 0);
	CHECK_EQ_U64(symbolizer__file_count(s), SYMBOLIZER_UNUSED_FILES);
	frame = resolve(s, t.pid, target_addr(&t, "return_in_known"), true);
	CHECK_STR(frame.function, "lines_known");
	symbolizer__remove_process(s, t.pid);
	stop_target(&t);

	/* The first was released longest ago: closed, so it is opened again. */
	snprintf(path, sizeof(path), "%s/lines0", dir);
	CHECK(start_target(path, false, &t));
	CHECK(read_target_addresses(&t));
	CHECK_EQ_U64(symbolizer__add_process(s, t.pid), 0);
	CHECK_EQ_U64(symbolizer__file_count(s), SYMBOLIZER_UNUSED_FILES + 1);
	frame = resolve(s, t.pid, target_addr(&t, "return_in_known"), true);
	CHECK_STR(frame.function, "lines_known");
	symbolizer__remove_process(s, t.pid);
	stop_target(&t);
	CHECK_EQ_U64(symbolizer__file_count(s), SYMBOLIZER_UNUSED_FILES);
	CHECK_EQ_U64(open_fd_count(), fds_before);
out:
	symbolizer__free(s);
	CHECK_EQ_U64(open_fd_count(), fds_before);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK(system(cmd) == 0);
}

#define CHURN_CHILDREN 192
#define CHURN_STEPS    3000

/* Many processes known at once, removed and added back in random order, as the process table
 * sees them in a busy daemon: every known pid must stay findable after each removal (a lost
 * one would be added again by resolve, raising the count), and the count must follow. The
 * children are forks of this test, paused. */
static void test_symbolizer_process_churn(void)
{
	uint64_t code = (uintptr_t)&test_symbolizer_process_churn, seed = 0x2545f4914f6cdd1dULL;
	struct symbolizer *s = symbolizer__new();
	pid_t children[CHURN_CHILDREN];
	bool known[CHURN_CHILDREN] = {false};
	size_t expected = 0, lost = 0, wrong_count = 0, misnamed = 0, step, i;
	struct symbolized_frame frame;
	int started = 0;

	CHECK(s != NULL);
	fflush(NULL);
	for (i = 0; i < CHURN_CHILDREN; i++) {
		children[i] = fork();
		if (children[i] == 0) {
			alarm(60);
			for (;;)
				pause();
		}
		if (children[i] < 0)
			break;
		started++;
	}
	CHECK_EQ_U64(started, CHURN_CHILDREN);
	for (step = 0; s && started == CHURN_CHILDREN && step < CHURN_STEPS; step++) {
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		i = seed % CHURN_CHILDREN;
		if (known[i]) {
			symbolizer__remove_process(s, children[i]);
			expected--;
		} else {
			CHECK_EQ_U64(symbolizer__add_process(s, children[i]), 0);
			expected++;
		}
		known[i] = !known[i];
		if (symbolizer__process_count(s) != expected)
			wrong_count++;
		if (step % 64)
			continue;
		for (i = 0; i < CHURN_CHILDREN; i++) {
			if (!known[i])
				continue;
			if (symbolizer__resolve(s, children[i], code, false, &frame) != 0 ||
			    !frame.function ||
			    strcmp(frame.function, "test_symbolizer_process_churn") != 0)
				misnamed++;
		}
		if (symbolizer__process_count(s) != expected)
			lost++;
	}
	CHECK_EQ_U64(wrong_count, 0);
	CHECK_EQ_U64(lost, 0);
	CHECK_EQ_U64(misnamed, 0);
	for (i = 0; i < (size_t)started; i++) {
		if (known[i]) {
			symbolizer__remove_process(s, children[i]);
			expected--;
		}
	}
	CHECK_EQ_U64(symbolizer__process_count(s), 0);
	CHECK_EQ_U64(expected, 0);
	for (i = 0; i < (size_t)started; i++) {
		kill(children[i], SIGKILL);
		waitpid(children[i], NULL, 0);
	}
	symbolizer__free(s);
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* lines.c through the symbolizer: a return address in an inlined call is two frames, the
 * callee's line then the caller's at the call; the frame's function is the caller. */
static void check_lines_target(const char *exe)
{
	struct symbolizer *s = symbolizer__new();
	struct symbolized_frame frame;
	uint64_t outer, addr;
	struct target t;

	CHECK(s != NULL);
	CHECK(start_target(fixture(exe), false, &t));
	CHECK(read_target_addresses(&t));
	if (!s || !t.count)
		goto out;
	outer = target_addr(&t, "lines_outer");
	addr = target_addr(&t, "return_in_inlined");
	frame = resolve(s, t.pid, addr, true);
	CHECK_EQ_U64(frame.n_lines, 2);
	CHECK_STR(frame.function, "lines_outer");
	CHECK_STR(frame.system_name, "lines_outer");
	CHECK_EQ_U64(frame.function_start, outer);
	CHECK(frame.has_filenames && frame.has_line_numbers && frame.has_inline_frames);
	CHECK(!frame.unnamed_memory);
	CHECK(ends_with(frame.map_path, exe));
	if (frame.n_lines == 2) {
		CHECK_STR(frame.lines[0].function, "lines_inlined_leaf");
		CHECK(ends_with(frame.lines[0].file, "/tests/unit/fixtures/lines.c"));
		CHECK_EQ_U64(frame.lines[0].line, target_line(&t, "inlined_call"));
		CHECK_STR(frame.lines[1].function, "lines_outer");
		CHECK(ends_with(frame.lines[1].file, "/tests/unit/fixtures/lines.c"));
		CHECK_EQ_U64(frame.lines[1].line, target_line(&t, "outer_call"));
		CHECK(frame.lines[1].function == frame.function);
	}
	/* The same address as a leaf (no -1) may be the next line, never another function. */
	frame = resolve(s, t.pid, addr, false);
	CHECK_STR(frame.function, "lines_outer");

	addr = target_addr(&t, "return_in_known");
	frame = resolve(s, t.pid, addr, true);
	CHECK_EQ_U64(frame.n_lines, 1);
	CHECK_STR(frame.function, "lines_known");
	if (frame.n_lines == 1)
		CHECK_EQ_U64(frame.lines[0].line, target_line(&t, "known_call"));

	/* After the process is gone, the cached answer is whole. */
	stop_target(&t);
	frame = resolve(s, t.pid, target_addr(&t, "return_in_inlined"), true);
	CHECK_EQ_U64(frame.n_lines, 2);
	if (frame.n_lines == 2)
		CHECK_EQ_U64(frame.lines[1].line, target_line(&t, "outer_call"));
out:
	stop_target(&t);
	symbolizer__free(s);
}

static void test_symbolizer_lines(void)
{
	check_lines_target("lines");
}

static void test_symbolizer_lines_from_debug_files(void)
{
	const char *roots[] = {NULL, NULL};
	char debug_root[PATH_MAX];

	check_lines_target("lines_debuglink");
	snprintf(debug_root, sizeof(debug_root), "%s", fixture("debug"));
	roots[0] = debug_root;
	CHECK_EQ_U64(elf_file__set_debug_roots(roots), 0);
	check_lines_target("lines_buildid");
	CHECK_EQ_U64(elf_file__set_debug_roots(NULL), 0);
}

/* Readable C++ names with the mangled one beside, from DWARF and from a bare symbol table. */
static void check_cxx_target(const char *exe, bool dwarf)
{
	struct symbolizer *s = symbolizer__new();
	struct symbolized_frame frame;
	struct target t;

	CHECK(s != NULL);
	CHECK(start_target(fixture(exe), false, &t));
	CHECK(read_target_addresses(&t));
	if (!s || !t.count)
		goto out;
	frame = resolve(s, t.pid, target_addr(&t, "f_int"), false);
	CHECK_STR(frame.function, "ns::f(int)");
	CHECK_STR(frame.system_name, "_ZN2ns1fEi");
	CHECK_EQ_U64(frame.function_start, target_addr(&t, "f_int"));
	CHECK(frame.has_inline_frames == dwarf && frame.has_line_numbers == dwarf &&
	      frame.has_filenames == dwarf);
	frame = resolve(s, t.pid, target_addr(&t, "return_in_f_double"), true);
	CHECK_STR(frame.function, "ns::f(double)");
	CHECK_STR(frame.system_name, "_ZN2ns1fEd");
	CHECK_EQ_U64(frame.n_lines, 1);
	if (frame.n_lines == 1) {
		CHECK_STR(frame.lines[0].system_name, "_ZN2ns1fEd");
		CHECK(dwarf ? ends_with(frame.lines[0].file, "/fixtures/lines_cxx.cc")
			    : frame.lines[0].file == NULL);
		CHECK(dwarf ? frame.lines[0].line > 0 : frame.lines[0].line == 0);
	}
	frame = resolve(s, t.pid, target_addr(&t, "return_in_grow"), true);
	CHECK_STR(frame.function, "ns::Widget::grow(long)");
	if (dwarf && frame.n_lines == 1)
		CHECK_EQ_U64(frame.lines[0].line, target_line(&t, "grow_call"));
	frame = resolve(s, t.pid, target_addr(&t, "return_in_twice"), true);
	CHECK_STR(frame.function, "ns::uses_twice(long)");
	CHECK_EQ_U64(frame.n_lines, dwarf ? 2 : 1);
	if (dwarf && frame.n_lines == 2) {
		CHECK_STR(frame.lines[0].function, "long ns::twice<long>(long)");
		CHECK_STR(frame.lines[0].system_name, "_ZN2ns5twiceIlEET_S1_");
	}
out:
	stop_target(&t);
	symbolizer__free(s);
}

static void test_symbolizer_cxx(void)
{
	check_cxx_target("lines_cxx", true);
	check_cxx_target("lines_cxx_nodwarf", false);
}

/* Code in anonymous memory (what a JIT makes) has no name to give: it says so. */
static void test_symbolizer_anonymous_code(void)
{
	struct symbolizer *s = symbolizer__new();
	long page = sysconf(_SC_PAGESIZE);
	struct symbolized_frame frame;
	unsigned char *code, *data;

	CHECK(s != NULL);
	code = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	data = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(code != MAP_FAILED && data != MAP_FAILED);
	if (!s || code == MAP_FAILED || data == MAP_FAILED)
		goto out;
	code[0] = 0xc3; /* ret */
	CHECK(mprotect(code, (size_t)page, PROT_READ | PROT_EXEC) == 0);
	frame = resolve(s, getpid(), (uintptr_t)code + 1, true);
	CHECK(frame.mapping_key != NULL);
	CHECK(frame.unnamed_memory);
	CHECK_STR(frame.map_path, "[anon:jit]");
	CHECK(frame.function == NULL && frame.system_name == NULL && frame.n_lines == 0);
	CHECK(frame.build_id == NULL);
	CHECK(!frame.has_filenames && !frame.has_line_numbers && !frame.has_inline_frames);

	frame = resolve(s, getpid(), (uintptr_t)data + 8, false);
	CHECK(frame.mapping_key != NULL && frame.unnamed_memory);
	CHECK(frame.map_path == NULL && frame.function == NULL && frame.n_lines == 0);

	/* Control: this test's own code is named. */
	frame = resolve(s, getpid(), (uintptr_t)&test_symbolizer_anonymous_code, false);
	CHECK_STR(frame.function, "test_symbolizer_anonymous_code");
	CHECK(!frame.unnamed_memory);
out:
	if (code != MAP_FAILED)
		munmap(code, (size_t)page);
	if (data != MAP_FAILED)
		munmap(data, (size_t)page);
	symbolizer__free(s);
}

/* The executable was deleted and the agent cannot reach the mapping (no CAP_SYS_ADMIN for
 * /proc/PID/map_files): no name, and the mapping says "(deleted)". Returns the failures. */
static int check_deleted_out_of_reach(const char *dir)
{
	char exe[PATH_MAX];
	struct symbolizer *s = symbolizer__new();
	struct symbolized_frame frame;
	struct target t = {.pid = -1, .gate_fd = -1};

	snprintf(exe, sizeof(exe), "%s/lines", dir);
	CHECK(s != NULL);
	CHECK(start_target(exe, false, &t));
	CHECK(read_target_addresses(&t));
	CHECK(unlink(exe) == 0);
	if (s && t.count) {
		CHECK_EQ_U64(symbolizer__add_process(s, t.pid), 0);
		frame = resolve(s, t.pid, target_addr(&t, "return_in_known"), true);
		CHECK(frame.mapping_key != NULL);
		CHECK(frame.unnamed_memory);
		CHECK(frame.function == NULL && frame.n_lines == 0);
		CHECK(ends_with(frame.map_path, "/lines (deleted)"));
	}
	stop_target(&t);
	symbolizer__free(s);
	return unit_case_failures;
}

static void test_symbolizer_deleted_out_of_reach(void)
{
	char dir[] = "/tmp/allocscope-del-XXXXXX";
	char cmd[2 * PATH_MAX + 32];
	int status = -1;
	pid_t child;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s/lines' && chmod 0777 '%s'", fixture("lines"), dir,
		 dir);
	CHECK(system(cmd) == 0);
	if (geteuid() != 0) {
		check_deleted_out_of_reach(dir);
	} else {
		/* Root reaches every mapping: drop to nobody, as an unprivileged agent runs. */
		fflush(NULL);
		child = fork();
		CHECK(child >= 0);
		if (child == 0) {
			unit_case_failures = 0;
			if (setgid(65534) != 0 || setuid(65534) != 0)
				_exit(100);
			_exit(check_deleted_out_of_reach(dir) ? 1 : 0);
		}
		CHECK(child > 0 && waitpid(child, &status, 0) == child);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK(system(cmd) == 0);
}

/* What resolving costs: the first address of a process (maps snapshot and file opening are
 * in add_process; here the DWARF is opened and a unit walked), another new address, and one
 * already seen (a hash lookup). Printed, not asserted. */
static void test_symbolizer_cost(void)
{
	struct symbolizer *s = symbolizer__new();
	struct symbolized_frame frame;
	double t0, add, cold, second, warm;
	uint64_t inlined, known;
	struct target t;
	int i, rounds = 100000;

	CHECK(s != NULL);
	CHECK(start_target(fixture("lines_cxx"), false, &t));
	CHECK(read_target_addresses(&t));
	if (!s || !t.count)
		goto out;
	inlined = target_addr(&t, "return_in_twice");
	known = target_addr(&t, "return_in_grow");
	t0 = now_us();
	CHECK_EQ_U64(symbolizer__add_process(s, t.pid), 0);
	add = now_us() - t0;
	t0 = now_us();
	frame = resolve(s, t.pid, inlined, true);
	cold = now_us() - t0;
	CHECK_EQ_U64(frame.n_lines, 2);
	t0 = now_us();
	frame = resolve(s, t.pid, known, true);
	second = now_us() - t0;
	CHECK(frame.function != NULL);
	t0 = now_us();
	for (i = 0; i < rounds; i++)
		symbolizer__resolve(s, t.pid, (i & 1) ? inlined : known, true, &frame);
	warm = (now_us() - t0) / rounds;
	printf("symbolizer cost: add_process %.0f us, first address %.0f us (DWARF opened), "
	       "another new address %.1f us, cached address %.3f us\n",
	       add, cold, second, warm);
out:
	stop_target(&t);
	symbolizer__free(s);
}

int main(void)
{
	/* Hermetic: debuginfod is test_debuginfo's business. */
	unsetenv("DEBUGINFOD_URLS");
	RUN(test_proc_maps_parse);
	RUN(test_proc_maps_self);
	RUN(test_symbolizer_pie);
	RUN(test_symbolizer_non_pie);
	RUN(test_symbolizer_stripped);
	RUN(test_symbolizer_shares_files);
	RUN(test_symbolizer_rereads_maps_on_miss);
	RUN(test_symbolizer_deleted_executable);
	RUN(test_symbolizer_bad_input);
	RUN(test_symbolizer_saved_process);
	RUN(test_symbolizer_is_code);
	RUN(test_symbolizer_saved_process_device);
	RUN(test_symbolizer_remove_process);
	RUN(test_symbolizer_removed_pid_starts_fresh);
	RUN(test_symbolizer_many_processes);
	RUN(test_symbolizer_unused_files_bounded);
	RUN(test_symbolizer_process_churn);
	RUN(test_symbolizer_lines);
	RUN(test_symbolizer_lines_from_debug_files);
	RUN(test_symbolizer_cxx);
	RUN(test_symbolizer_anonymous_code);
	RUN(test_symbolizer_deleted_out_of_reach);
	RUN(test_symbolizer_cost);
	return unit_summary("symbolizer");
}
