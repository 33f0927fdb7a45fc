/* Source lines, inline frames and readable names, file by file (elf_file__lines_at over
 * dwarf_lines): the fixtures of tests/unit/fixtures.mk built -O2 -g print the runtime
 * addresses of calls and the source lines those calls are on (__LINE__), and each address
 * must come back as that file and line, with an always_inline callee as its own frame before
 * its caller. The same holds when the DWARF is in a debug file found through .gnu_debuglink,
 * a build-id tree, handed in (as debuginfod would), or split by dwz into a supplementary file.
 * C++ names are demangled, with the mangled one kept as system name. Also prints what a cold
 * and a warm lookup cost. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "symbolize/demangle.h"
#include "symbolize/dwarf_lines.h"
#include "symbolize/elf_file.h"
#include "symbolize/proc_maps.h"
#include "unit.h"
#include "fixtures.h"
#include "fixture_process.h"

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}


/* The link-time address of a runtime address in the fixture, as the symbolizer computes it. */
static uint64_t to_vaddr(const struct run *r, struct elf_file *f, uint64_t addr)
{
	struct proc_maps *maps = NULL;
	const struct proc_map_entry *e;
	uint64_t vaddr = 0;

	CHECK_EQ_U64(proc_maps__read(r->pid, &maps), 0);
	e = maps ? proc_maps__find(maps, addr) : NULL;
	CHECK(e != NULL);
	if (e)
		CHECK_EQ_U64(elf_file__offset_to_vaddr(f, addr - e->start + e->offset, &vaddr), 0);
	proc_maps__free(maps);
	return vaddr;
}

static struct elf_file *open_fixture(const char *name)
{
	struct elf_file *f = NULL;
	int ret = elf_file__open(fixture(name), &f);

	if (ret)
		fprintf(stderr, "  cannot open %s: %s (run make unit to build fixtures)\n",
			fixture(name), strerror(-ret));
	return f;
}

static void print_lines(const struct source_line *lines, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		fprintf(stderr, "    #%zu %s [%s] %s:%" PRId64 "\n", i,
			lines[i].function ? lines[i].function : "(null)",
			lines[i].system_name ? lines[i].system_name : "(null)",
			lines[i].file ? lines[i].file : "(null)", lines[i].line);
}

/* One expected line; file_suffix NULL when no file is expected. */
static void check_line(const struct source_line *l, const char *function, const char *system,
		       const char *file_suffix, uint64_t line)
{
	CHECK_STR(l->function, function);
	CHECK_STR(l->system_name, system);
	if (file_suffix) {
		CHECK(ends_with(l->file, file_suffix));
	} else {
		CHECK(l->file == NULL);
	}
	CHECK_EQ_U64(l->line, line);
}

/* lines.c's calls: a plain call, and one from an always_inline function, which resolves to
 * the callee's line then the caller's line at the call site. The addresses are return
 * addresses: the call instruction is the byte before. */
static void check_lines_fixture(const char *name, bool expect_inline_names)
{
	struct elf_file *f = open_fixture(name);
	const struct source_line *lines = NULL;
	uint64_t start = 0, outer, known, vaddr;
	size_t n = 0;
	struct run r;

	CHECK(f != NULL);
	CHECK(start_run(fixture(name), &r));
	if (!f || !r.count)
		goto out;
	CHECK(elf_file__has_dwarf(f));
	CHECK(elf_file__has_line_table(f));
	outer = to_vaddr(&r, f, run_value(&r, "lines_outer", false));
	known = to_vaddr(&r, f, run_value(&r, "lines_known", false));

	vaddr = to_vaddr(&r, f, run_value(&r, "return_in_known", false)) - 1;
	CHECK_EQ_U64(elf_file__lines_at(f, vaddr, &lines, &n, &start), 0);
	CHECK_EQ_U64(n, 1);
	if (n == 1)
		check_line(&lines[0], "lines_known", "lines_known", "fixtures/lines.c",
			   run_value(&r, "known_call", true));
	CHECK_EQ_U64(start, known);

	vaddr = to_vaddr(&r, f, run_value(&r, "return_in_inlined", false)) - 1;
	CHECK_EQ_U64(elf_file__lines_at(f, vaddr, &lines, &n, &start), 0);
	CHECK_EQ_U64(n, expect_inline_names ? 2 : 1);
	if (n == 2) {
		check_line(&lines[0], "lines_inlined_leaf", "lines_inlined_leaf",
			   "fixtures/lines.c", run_value(&r, "inlined_call", true));
		check_line(&lines[1], "lines_outer", "lines_outer", "fixtures/lines.c",
			   run_value(&r, "outer_call", true));
	} else if (n == 1) {
		/* Without the callee's name the caller's own line is still true. */
		check_line(&lines[0], "lines_outer", "lines_outer", "fixtures/lines.c",
			   run_value(&r, "outer_call", true));
	}
	if (unit_case_failures)
		print_lines(lines, n);
	CHECK_EQ_U64(start, outer);
out:
	stop_run(&r);
	elf_file__free(f);
}

static void test_lines_dwarf5(void)
{
	check_lines_fixture("lines", true);
}

static void test_lines_dwarf4(void)
{
	check_lines_fixture("lines_dwarf4", true);
}

static void test_lines_from_debuglink(void)
{
	struct elf_file *f = open_fixture("lines_debuglink");

	CHECK(f && ends_with(elf_file__debug_file_path(f), "/lines_debuglink.debug"));
	elf_file__free(f);
	check_lines_fixture("lines_debuglink", true);
}

static void test_lines_from_build_id_tree(void)
{
	const char *roots[] = {fixture("debug"), NULL};
	const char *no_roots[] = {NULL};
	struct elf_file *f;

	CHECK_EQ_U64(elf_file__set_debug_roots(roots), 0);
	check_lines_fixture("lines_buildid", true);
	/* Control: with no tree to search, the stripped file has no DWARF. */
	CHECK_EQ_U64(elf_file__set_debug_roots(no_roots), 0);
	f = open_fixture("lines_buildid");
	CHECK(f && !elf_file__has_dwarf(f) && !elf_file__has_line_table(f));
	elf_file__free(f);
	CHECK_EQ_U64(elf_file__set_debug_roots(NULL), 0);
}

/* A file that kept .symtab but lost its DWARF (strip --strip-debug) still looks for a debug
 * file, for the lines. */
static void test_symtab_only_file_finds_dwarf(void)
{
	char dir[] = "/tmp/allocscope-symtab-XXXXXX";
	char exe[PATH_MAX], tree[PATH_MAX + 64], debug[PATH_MAX + 128], cmd[4 * PATH_MAX];
	const char *roots[] = {dir, NULL};
	struct elf_file *f = NULL;
	const char *id;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(exe, sizeof(exe), "%s/lines_symtab_only", dir);
	snprintf(cmd, sizeof(cmd), "objcopy --strip-debug '%s' '%s'", fixture("lines"), exe);
	CHECK(system(cmd) == 0);
	CHECK_EQ_U64(elf_file__open(exe, &f), 0);
	id = f ? elf_file__build_id(f) : NULL;
	CHECK(id != NULL);
	if (!id)
		goto out;
	CHECK(!elf_file__has_dwarf(f));
	CHECK(elf_file__debug_file_path(f) == NULL);
	/* The unstripped file carries the same build id: it is the debug file. */
	snprintf(tree, sizeof(tree), "%s/.build-id/%.2s", dir, id);
	snprintf(debug, sizeof(debug), "%s/%s.debug", tree, id + 2);
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s' && cp '%s' '%s'", tree, fixture("lines"), debug);
	CHECK(system(cmd) == 0);
	elf_file__free(f);
	f = NULL;
	CHECK_EQ_U64(elf_file__set_debug_roots(roots), 0);
	CHECK_EQ_U64(elf_file__open(exe, &f), 0);
	CHECK(f && elf_file__has_dwarf(f) && elf_file__has_line_table(f));
	CHECK_STR(f ? elf_file__debug_file_path(f) : NULL, debug);
	CHECK_EQ_U64(elf_file__set_debug_roots(NULL), 0);
out:
	elf_file__free(f);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK(system(cmd) == 0);
}

/* As debuginfod hands it over: a debug file at some path, checked by build id. */
static void test_use_debug_file(void)
{
	const char *no_roots[] = {NULL};
	const struct source_line *lines = NULL;
	struct elf_file *f;
	uint64_t vaddr;
	size_t n = 9;
	struct run r;

	CHECK_EQ_U64(elf_file__set_debug_roots(no_roots), 0);
	f = open_fixture("lines_debuginfod");
	CHECK(f != NULL);
	CHECK(start_run(fixture("lines_debuginfod"), &r));
	if (f && r.count) {
		vaddr = to_vaddr(&r, f, run_value(&r, "return_in_inlined", false)) - 1;
		/* Stripped of everything: nothing names the address yet. */
		CHECK(!elf_file__has_dwarf(f));
		CHECK_EQ_U64(elf_file__lines_at(f, vaddr, &lines, &n, NULL), 0);
		CHECK_EQ_U64(n, 0);
		/* Another build's debug file is refused. */
		CHECK_EQ_U64(elf_file__use_debug_file(f, fixture("lines_debuglink.debug")),
			     -EINVAL);
		CHECK_EQ_U64(elf_file__use_debug_file(f, fixture("no-such-file")), -ENOENT);
		CHECK_EQ_U64(
		    elf_file__use_debug_file(f, fixture("debuginfod/lines_debuginfod.debug")), 0);
		CHECK(ends_with(elf_file__debug_file_path(f), "/lines_debuginfod.debug"));
		CHECK(elf_file__has_dwarf(f) && elf_file__has_line_table(f));
		CHECK_EQ_U64(elf_file__lines_at(f, vaddr, &lines, &n, NULL), 0);
		CHECK_EQ_U64(n, 2);
		if (n == 2) {
			CHECK_STR(lines[0].function, "lines_inlined_leaf");
			CHECK_STR(lines[1].function, "lines_outer");
			CHECK_EQ_U64(lines[1].line, run_value(&r, "outer_call", true));
		}
		CHECK_EQ_U64(
		    elf_file__use_debug_file(f, fixture("debuginfod/lines_debuginfod.debug")),
		    -EEXIST);
	}
	stop_run(&r);
	elf_file__free(f);
	CHECK_EQ_U64(elf_file__set_debug_roots(NULL), 0);
}

static bool dwz_fixtures_present(void)
{
	FILE *marker = fopen(fixture("dwz-missing"), "r");

	if (marker) {
		fclose(marker);
		fprintf(stderr,
			"  dwz is not installed: run sudo scripts/install-deps, then make unit\n");
		unit_case_failures++;
		return false;
	}
	return true;
}

/* dwz moved the inlined function's DIE into a common file found in the build-id tree. */
static void test_dwz_alt_from_build_id_tree(void)
{
	const char *roots[] = {fixture("debug"), NULL};
	struct elf_file *f;

	if (!dwz_fixtures_present())
		return;
	CHECK_EQ_U64(elf_file__set_debug_roots(roots), 0);
	f = open_fixture("lines_dwz_local");
	CHECK(f && elf_file__has_dwarf(f));
	CHECK(f && elf_file__missing_alt_build_id(f) == NULL);
	elf_file__free(f);
	check_lines_fixture("lines_dwz_local", true);
	CHECK_EQ_U64(elf_file__set_debug_roots(NULL), 0);
}

static bool copy_file(const char *from, const char *to)
{
	char cmd[2 * PATH_MAX + 32];

	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
	return system(cmd) == 0;
}

/* The debug file without its common file: no name may be made up; handing the common file
 * in afterwards brings the inlined frame back. */
static void test_dwz_alt_missing_then_given(void)
{
	char dir[] = "/tmp/allocscope-dwz-XXXXXX";
	char tree[PATH_MAX], debug[PATH_MAX], alt[PATH_MAX], cmd[PATH_MAX + 16];
	const char *roots[] = {dir, NULL};
	const struct source_line *lines = NULL;
	const char *missing;
	struct elf_file *f = NULL, *full = NULL;
	char id[128] = "";
	uint64_t vaddr;
	size_t n = 0;
	struct run r = {.pid = -1};

	if (!dwz_fixtures_present())
		return;
	/* The fixture's own debug file, by build id, copied alone into a fresh tree. */
	CHECK(mkdtemp(dir) != NULL);
	CHECK_EQ_U64(elf_file__open(fixture("lines_dwz_local"), &full), 0);
	if (full)
		snprintf(id, sizeof(id), "%s", elf_file__build_id(full));
	elf_file__free(full);
	snprintf(tree, sizeof(tree), "%s/.build-id/%.2s", dir, id);
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", tree);
	CHECK(system(cmd) == 0);
	snprintf(debug, sizeof(debug), "debug/.build-id/%.2s/%s.debug", id, id + 2);
	snprintf(tree, sizeof(tree), "%s/.build-id/%.2s/%s.debug", dir, id, id + 2);
	CHECK(copy_file(fixture(debug), tree));

	CHECK_EQ_U64(elf_file__set_debug_roots(roots), 0);
	f = open_fixture("lines_dwz_local");
	CHECK(f != NULL);
	CHECK(start_run(fixture("lines_dwz_local"), &r));
	if (!f || !r.count)
		goto out;
	missing = elf_file__missing_alt_build_id(f);
	CHECK(missing != NULL);
	if (!missing)
		goto out;
	vaddr = to_vaddr(&r, f, run_value(&r, "return_in_inlined", false)) - 1;
	CHECK_EQ_U64(elf_file__lines_at(f, vaddr, &lines, &n, NULL), 0);
	CHECK_EQ_U64(n, 1);
	if (n == 1) {
		/* The symbol table names the physical function; the line is its own. */
		CHECK_STR(lines[0].function, "lines_outer");
		CHECK_EQ_U64(lines[0].line, run_value(&r, "outer_call", true));
	}
	/* The common file is in the fixture tree under its own build id. */
	snprintf(alt, sizeof(alt), "debug/.build-id/%.2s/%s.debug", missing, missing + 2);
	CHECK_EQ_U64(elf_file__use_alt_file(f, fixture(debug)), -EINVAL);
	CHECK_EQ_U64(elf_file__use_alt_file(f, fixture(alt)), 0);
	CHECK(elf_file__missing_alt_build_id(f) == NULL);
	CHECK_EQ_U64(elf_file__lines_at(f, vaddr, &lines, &n, NULL), 0);
	CHECK_EQ_U64(n, 2);
	if (n == 2) {
		CHECK_STR(lines[0].function, "lines_inlined_leaf");
		CHECK_EQ_U64(lines[0].line, run_value(&r, "inlined_call", true));
		CHECK_STR(lines[1].function, "lines_outer");
	}
	CHECK_EQ_U64(elf_file__use_alt_file(f, fixture(alt)), -EEXIST);
out:
	stop_run(&r);
	elf_file__free(f);
	CHECK_EQ_U64(elf_file__set_debug_roots(NULL), 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK(system(cmd) == 0);
}

/* Names from DWARF (or the symbol table for the qualified anonymous-namespace name). */
static void test_cxx_names(void)
{
	struct elf_file *f = open_fixture("lines_cxx");
	const struct source_line *lines = NULL;
	uint64_t vaddr;
	size_t n = 0;
	struct run r;

	CHECK(f != NULL);
	CHECK(start_run(fixture("lines_cxx"), &r));
	if (!f || !r.count)
		goto out;
	vaddr = to_vaddr(&r, f, run_value(&r, "f_int", false));
	CHECK_EQ_U64(elf_file__lines_at(f, vaddr, &lines, &n, NULL), 0);
	CHECK(n == 1 && lines[0].line > 0);
	if (n == 1)
		check_line(&lines[0], "ns::f(int)", "_ZN2ns1fEi", "fixtures/lines_cxx.cc",
			   (uint64_t)lines[0].line);

	vaddr = to_vaddr(&r, f, run_value(&r, "return_in_f_int", false)) - 1;
	CHECK_EQ_U64(elf_file__lines_at(f, vaddr, &lines, &n, NULL), 0);
	CHECK_EQ_U64(n, 1);
	if (n == 1)
		check_line(&lines[0], "ns::f(int)", "_ZN2ns1fEi", "fixtures/lines_cxx.cc",
			   run_value(&r, "f_int_call", true));

	vaddr = to_vaddr(&r, f, run_value(&r, "return_in_f_double", false)) - 1;
	CHECK_EQ_U64(elf_file__lines_at(f, vaddr, &lines, &n, NULL), 0);
	CHECK(n == 1);
	if (n == 1) {
		CHECK_STR(lines[0].function, "ns::f(double)");
		CHECK_STR(lines[0].system_name, "_ZN2ns1fEd");
	}

	vaddr = to_vaddr(&r, f, run_value(&r, "return_in_grow", false)) - 1;
	CHECK_EQ_U64(elf_file__lines_at(f, vaddr, &lines, &n, NULL), 0);
	CHECK(n == 1);
	if (n == 1)
		check_line(&lines[0], "ns::Widget::grow(long)", "_ZN2ns6Widget4growEl",
			   "fixtures/lines_cxx.cc", run_value(&r, "grow_call", true));

	vaddr = to_vaddr(&r, f, run_value(&r, "return_in_hidden", false)) - 1;
	CHECK_EQ_U64(elf_file__lines_at(f, vaddr, &lines, &n, NULL), 0);
	CHECK(n == 1);
	if (n == 1) {
		CHECK_STR(lines[0].function, "(anonymous namespace)::hidden(int)");
		CHECK_STR(lines[0].system_name, "_ZN12_GLOBAL__N_16hiddenEi");
	}

	/* A template inlined into a namespace function: both frames demangled. */
	vaddr = to_vaddr(&r, f, run_value(&r, "return_in_twice", false)) - 1;
	CHECK_EQ_U64(elf_file__lines_at(f, vaddr, &lines, &n, NULL), 0);
	CHECK_EQ_U64(n, 2);
	if (n == 2) {
		check_line(&lines[0], "long ns::twice<long>(long)", "_ZN2ns5twiceIlEET_S1_",
			   "fixtures/lines_cxx.cc", run_value(&r, "twice_call", true));
		CHECK_STR(lines[1].function, "ns::uses_twice(long)");
		CHECK_STR(lines[1].system_name, "_ZN2ns10uses_twiceEl");
		CHECK(lines[1].line > 0);
	}
	if (unit_case_failures)
		print_lines(lines, n);
out:
	stop_run(&r);
	elf_file__free(f);
}

/* Without DWARF the symbol table still gives the readable name, and nothing else. */
static void test_cxx_names_from_symbol_table(void)
{
	struct elf_file *f = open_fixture("lines_cxx_nodwarf");
	const struct source_line *lines = NULL;
	uint64_t vaddr, start = 0;
	size_t n = 0;
	struct run r;

	CHECK(f != NULL);
	CHECK(start_run(fixture("lines_cxx_nodwarf"), &r));
	if (f && r.count) {
		CHECK(!elf_file__has_dwarf(f) && !elf_file__has_line_table(f));
		vaddr = to_vaddr(&r, f, run_value(&r, "return_in_f_double", false)) - 1;
		CHECK_EQ_U64(elf_file__lines_at(f, vaddr, &lines, &n, &start), 0);
		CHECK_EQ_U64(n, 1);
		if (n == 1)
			check_line(&lines[0], "ns::f(double)", "_ZN2ns1fEd", NULL, 0);
		CHECK_EQ_U64(start, to_vaddr(&r, f, run_value(&r, "f_double", false)));
		/* elf_file__function_at keeps the symbol table's own spelling. */
		CHECK_STR(elf_file__function_at(f, vaddr, NULL), "_ZN2ns1fEd");
	}
	stop_run(&r);
	elf_file__free(f);
}

/* Assembly inside a unit with DWARF has no DWARF function: the symbol names it, no line. */
static void test_code_without_dwarf_function(void)
{
	struct elf_file *f = open_fixture("target_pie");
	const struct source_line *lines = NULL;
	struct elf_symbol sym = {0};
	size_t n = 0;

	CHECK(f && elf_file__has_dwarf(f));
	if (!f)
		return;
	CHECK_EQ_U64(elf_file__find_function(f, "fixture_nosize", &sym), 0);
	CHECK_EQ_U64(elf_file__lines_at(f, sym.vaddr + 1, &lines, &n, NULL), 0);
	CHECK_EQ_U64(n, 1);
	if (n == 1)
		check_line(&lines[0], "fixture_nosize", "fixture_nosize", NULL, 0);
	/* Nothing at all far away. */
	CHECK_EQ_U64(elf_file__lines_at(f, UINT64_MAX - 16, &lines, &n, NULL), 0);
	CHECK_EQ_U64(n, 0);
	elf_file__free(f);
}

static void test_bad_input(void)
{
	struct elf_file *f = open_fixture("lines_cxx_nodwarf");
	const struct source_line *lines;
	struct source_line buf[2];
	struct dwarf_lines *d = (struct dwarf_lines *)&d;
	size_t n;
	uint64_t entry;

	CHECK_EQ_U64(dwarf_lines__new(NULL, &d), -ENOENT);
	CHECK(d == NULL);
	CHECK_EQ_U64(dwarf_lines__lookup(NULL, 0, buf, 2, &n, &entry), -EINVAL);
	dwarf_lines__free(NULL);
	CHECK_EQ_U64(elf_file__lines_at(NULL, 0, &lines, &n, NULL), -EINVAL);
	CHECK_EQ_U64(elf_file__use_debug_file(NULL, "x"), -EINVAL);
	CHECK_EQ_U64(elf_file__use_alt_file(f, fixture("lines")), -EEXIST);
	CHECK(elf_file__missing_alt_build_id(f) == NULL);
	elf_file__free(f);
}

/* Cost of the first lookup in a file (DWARF opened, unit table read, one unit walked) and of
 * later ones, on this test executable (-O2 -g, a few dozen units). Printed, not asserted. */
static void test_lookup_cost(void)
{
	static const char *const names[] = {"dwarf_lines__lookup", "elf_file__open",
					    "demangle__readable", "proc_maps__parse", "main"};
	struct elf_file *f = NULL;
	const struct source_line *lines;
	uint64_t vaddrs[5];
	double t0, cold, warm_unit = 0, warm = 0;
	size_t i, n, rounds = 2000;
	int k;

	CHECK_EQ_U64(elf_file__open("/proc/self/exe", &f), 0);
	if (!f)
		return;
	for (i = 0; i < 5; i++) {
		struct elf_symbol sym = {0};

		CHECK_EQ_U64(elf_file__find_function(f, names[i], &sym), 0);
		vaddrs[i] = sym.vaddr + sym.size / 2;
	}
	t0 = now_us();
	CHECK_EQ_U64(elf_file__lines_at(f, vaddrs[0], &lines, &n, NULL), 0);
	cold = now_us() - t0;
	CHECK(n >= 1);
	/* Other units, first time each. */
	t0 = now_us();
	for (i = 1; i < 5; i++)
		CHECK_EQ_U64(elf_file__lines_at(f, vaddrs[i], &lines, &n, NULL), 0);
	warm_unit = (now_us() - t0) / 4;
	t0 = now_us();
	for (k = 0; k < (int)rounds; k++)
		elf_file__lines_at(f, vaddrs[k % 5] + (uint64_t)(k % 7), &lines, &n, NULL);
	warm = (now_us() - t0) / (double)rounds;
	printf("dwarf_lines cost: first lookup in a file %.0f us, first in another unit %.0f us, "
	       "indexed lookup %.2f us\n",
	       cold, warm_unit, warm);
	elf_file__free(f);
}

int main(void)
{
	/* Hermetic: no debuginfod, no system debug files beyond what each test sets. */
	unsetenv("DEBUGINFOD_URLS");
	RUN(test_lines_dwarf5);
	RUN(test_lines_dwarf4);
	RUN(test_lines_from_debuglink);
	RUN(test_lines_from_build_id_tree);
	RUN(test_symtab_only_file_finds_dwarf);
	RUN(test_use_debug_file);
	RUN(test_dwz_alt_from_build_id_tree);
	RUN(test_dwz_alt_missing_then_given);
	RUN(test_cxx_names);
	RUN(test_cxx_names_from_symbol_table);
	RUN(test_code_without_dwarf_function);
	RUN(test_bad_input);
	RUN(test_lookup_cost);
	return unit_summary("dwarf_lines");
}
