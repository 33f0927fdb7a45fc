/* Unit tests of the per-stack aggregation's arithmetic: the kernel path's samples are
 * weighted by 1/p from the sample rate, the cooperative path's carry their weight, and both
 * land in the same totals (the two paths must give interchangeable profiles). And of the top
 * table's allocation site, on stacks through a program and a library built here and run:
 * the first frame outside the allocator, whether the allocator is a library or lives in the
 * executable (a static glibc or jemalloc, Rust's _rjem_*). */
#include <math.h>
#include <stdlib.h>

#include "profile/alloc_profile.h"
#include "sampling.h"
#include "symbolize/symbolizer.h"
#include "unit.h"
#include "fixture_process.h"

#define RATE (512 * 1024)

static bool near(double a, double b)
{
	return fabs(a - b) <= 1e-9 * fmax(1.0, fabs(b));
}

static void test_kernel_samples_are_unbiased_by_rate(void)
{
	const uint64_t frames[] = { 0x1000, 0x2000, 0x3000 };
	struct alloc_profile_totals totals;
	struct alloc_profile *profile;
	double p = -expm1(-100.0 / RATE);

	CHECK(alloc_profile__new(RATE, NULL, &profile) == 0);
	CHECK(alloc_profile__add_stack(profile, 42, frames, 3, 100) == 0);
	CHECK(alloc_profile__add_stack(profile, 42, frames, 3, 100) == 0);
	alloc_profile__totals(profile, &totals);
	CHECK_EQ_U64(totals.samples, 2);
	CHECK_EQ_U64(totals.stacks, 1);
	CHECK(near(totals.bytes, 2 * 100 / p));
	CHECK(near(totals.objects, 2 / p));
	alloc_profile__free(profile);
}

static void test_weighted_samples_keep_their_weight(void)
{
	const uint64_t frames[] = { 0x1000, 0x2000 };
	struct alloc_profile_totals totals;
	struct alloc_profile *profile;

	/* A sampler with another rate: the weight it reports wins over the profile's rate. */
	CHECK(alloc_profile__new(RATE, NULL, &profile) == 0);
	CHECK(alloc_profile__add_weighted_stack(profile, 7, frames, 2, 64, 65536.0) == 0);
	CHECK(alloc_profile__add_weighted_stack(profile, 7, frames, 2, 0, 1000.0) == 0);
	alloc_profile__totals(profile, &totals);
	CHECK_EQ_U64(totals.samples, 2);
	CHECK_EQ_U64(totals.stacks, 1);
	CHECK(near(totals.bytes, 66536.0));
	/* 0-byte requests count as one byte, as in the kernel path. */
	CHECK(near(totals.objects, 65536.0 / 64 + 1000.0));
	alloc_profile__free(profile);
}

static void test_both_paths_agree_for_the_same_weight(void)
{
	const uint64_t frames[] = { 0x1000, 0x2000 };
	struct alloc_profile_totals kernel, cooperative;
	struct alloc_profile *a, *b;
	uint64_t size = 3000;

	CHECK(alloc_profile__new(RATE, NULL, &a) == 0);
	CHECK(alloc_profile__new(RATE, NULL, &b) == 0);
	CHECK(alloc_profile__add_stack(a, 1, frames, 2, size) == 0);
	CHECK(alloc_profile__add_weighted_stack(b, 1, frames, 2, size,
						(double)size / sampling_probability(size, RATE)) == 0);
	alloc_profile__totals(a, &kernel);
	alloc_profile__totals(b, &cooperative);
	CHECK(near(kernel.bytes, cooperative.bytes));
	CHECK(near(kernel.objects, cooperative.objects));
	alloc_profile__free(a);
	alloc_profile__free(b);
}

/* A program with an allocator inside it (je_malloc, with a Rust-style shim and alloc::alloc
 * in front), its own functions, and a library with an allocator of its own whose helper is
 * not named like one. Each prints its address; the library's functions print theirs. */
static const char sites_program[] =
	"#include <stdio.h>\n"
	"#include <unistd.h>\n"
	"#define FN __attribute__((noinline, used))\n"
	"void lib_report(void);\n"
	"void *lib_alloc(unsigned long n);\n"
	"FN void *je_malloc(unsigned long n) { return (void *)n; }\n"
	"FN void *__rust_alloc(unsigned long n) { return je_malloc(n + 1); }\n"
	"FN void *_ZN5alloc5alloc5alloc17h0123456789abcdefE(unsigned long n)\n"
	"{ return __rust_alloc(n + 2); }\n"
	"FN void *helper_in_exe(unsigned long n) { return je_malloc(n + 3); }\n"
	"FN void *site_exe(unsigned long n)\n"
	"{ return _ZN5alloc5alloc5alloc17h0123456789abcdefE(n + 4); }\n"
	"FN void *site_via_lib(unsigned long n) { return lib_alloc(n + 5); }\n"
	"#define SHOW(f) printf(#f \" %p\\n\", (void *)f)\n"
	"int main(void)\n"
	"{\n"
	"	SHOW(je_malloc); SHOW(__rust_alloc);\n"
	"	printf(\"rust_alloc_alloc %p\\n\", (void *)_ZN5alloc5alloc5alloc17h0123456789abcdefE);\n"
	"	SHOW(helper_in_exe); SHOW(site_exe); SHOW(site_via_lib); SHOW(main);\n"
	"	lib_report();\n"
	"	printf(\"ready\\n\");\n"
	"	fflush(stdout);\n"
	"	pause();\n"
	"	return 0;\n"
	"}\n";

static const char sites_library[] =
	"#include <stdio.h>\n"
	"#define FN __attribute__((noinline, used))\n"
	"FN void *lib_alloc(unsigned long n) { return (void *)n; }\n"
	"FN void *lib_helper(unsigned long n) { return lib_alloc(n + 1); }\n"
	"void lib_report(void)\n"
	"{\n"
	"	printf(\"lib_alloc %p\\n\", (void *)lib_alloc);\n"
	"	printf(\"lib_helper %p\\n\", (void *)lib_helper);\n"
	"}\n";

static bool write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return false;
	fputs(text, f);
	return fclose(f) == 0;
}

/* Builds dir/sites (PIE) linked to dir/libsites.so; false when cc fails. */
static bool build_sites_program(const char *dir, char *exe, size_t len)
{
	char source[600], cmd[2400];

	snprintf(source, sizeof(source), "%s/libsites.c", dir);
	if (!write_file(source, sites_library))
		return false;
	snprintf(cmd, sizeof(cmd), "${CC:-cc} -O0 -fPIC -shared -o %s/libsites.so %s", dir, source);
	if (system(cmd) != 0)
		return false;
	snprintf(source, sizeof(source), "%s/sites.c", dir);
	if (!write_file(source, sites_program))
		return false;
	snprintf(exe, len, "%s/sites", dir);
	snprintf(cmd, sizeof(cmd),
		 "${CC:-cc} -O0 -fPIE -pie -o %s %s -L%s -lsites -Wl,-rpath,'$ORIGIN'", exe, source,
		 dir);
	return system(cmd) == 0;
}

/* The one allocation site of a profile holding only stacks that share it; "" (and a failed
 * check) when there are several. */
static const char *only_site(struct alloc_profile *profile, char *buf, size_t len)
{
	struct alloc_site sites[4];
	size_t n = 0;

	buf[0] = '\0';
	CHECK(alloc_profile__top_sites(profile, sites, 4, &n) == 0);
	if (n != 1) {
		fprintf(stderr, "  %zu sites:", n);
		for (size_t i = 0; i < n; i++)
			fprintf(stderr, " %s", sites[i].function);
		fprintf(stderr, "\n");
		CHECK_EQ_U64(n, 1);
		return buf;
	}
	snprintf(buf, len, "%s", sites[0].function);
	return buf;
}

/* frames[0] is where the probe fired (a function's entry); the others are return addresses,
 * given as function + 1 so that the call they return from is inside the function. */
static void check_site(struct symbolizer *symbolizer, const struct run *r, const char *what,
		       const char *const *names, size_t n, const char *expected)
{
	uint64_t frames[8];
	struct alloc_profile *profile;
	char site[160];

	for (size_t i = 0; i < n; i++)
		frames[i] = run_value(r, names[i], false) + (i > 0);
	CHECK(alloc_profile__new(RATE, symbolizer, &profile) == 0);
	CHECK(alloc_profile__add_stack(profile, (uint32_t)r->pid, frames, n, 4096) == 0);
	if (strcmp(only_site(profile, site, sizeof(site)), expected) != 0) {
		fprintf(stderr, "  %s: site %s, expected %s\n", what, site, expected);
		unit_case_failures++;
	}
	alloc_profile__free(profile);
}

static void test_allocation_site(void)
{
	char dir[] = "/tmp/allocscope-test-alloc-profile-XXXXXX", exe[600], cmd[700], site[160];
	struct symbolizer *symbolizer = NULL;
	struct alloc_profile *profile = NULL;
	struct run r = { .pid = -1 };
	uint64_t alive[2], gone[3];
	pid_t pid;

	if (!mkdtemp(dir)) {
		CHECK(!"mkdtemp");
		return;
	}
	if (!build_sites_program(dir, exe, sizeof(exe))) {
		CHECK(!"cc builds the sites program");
		goto out;
	}
	symbolizer = symbolizer__new();
	CHECK(symbolizer != NULL);
	if (!symbolizer || !start_run(exe, &r)) {
		CHECK(!"the sites program runs");
		goto out;
	}
	/* The allocator in the executable: its shim and alloc::alloc are skipped, the program's
	 * own function is the site, not main or whatever calls main. */
	check_site(symbolizer, &r, "allocator in the executable",
		   (const char *const[]){ "je_malloc", "__rust_alloc", "rust_alloc_alloc",
					  "site_exe", "main" },
		   5, "site_exe");
	/* A function of the program that is not the allocator's is the site, even in the
	 * allocator's file. */
	check_site(symbolizer, &r, "helper in the executable",
		   (const char *const[]){ "je_malloc", "helper_in_exe", "site_exe", "main" }, 4,
		   "helper_in_exe");
	/* An allocator in a library: the whole library is the allocator (as libc's strdup is
	 * glibc's), its caller in the program is the site. */
	check_site(symbolizer, &r, "allocator in a library",
		   (const char *const[]){ "lib_alloc", "lib_helper", "site_via_lib", "main" }, 4,
		   "site_via_lib");
	/* Nothing but the allocator: the allocator frame names the site. */
	check_site(symbolizer, &r, "only allocator frames",
		   (const char *const[]){ "je_malloc", "__rust_alloc" }, 2, "je_malloc");

	/* A stack first seen after the process exited: its executable is remembered. */
	CHECK(alloc_profile__new(RATE, symbolizer, &profile) == 0);
	if (!profile)
		goto out;
	alive[0] = run_value(&r, "je_malloc", false);
	alive[1] = run_value(&r, "site_exe", false) + 1;
	gone[0] = alive[0];
	gone[1] = run_value(&r, "__rust_alloc", false) + 1;
	gone[2] = run_value(&r, "site_exe", false) + 2;
	pid = r.pid;
	CHECK(alloc_profile__add_stack(profile, (uint32_t)pid, alive, 2, 4096) == 0);
	stop_run(&r);
	CHECK(alloc_profile__add_stack(profile, (uint32_t)pid, gone, 3, 4096) == 0);
	CHECK_STR(only_site(profile, site, sizeof(site)), "site_exe");
out:
	alloc_profile__free(profile);
	stop_run(&r);
	symbolizer__free(symbolizer);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK(system(cmd) == 0);
}

int main(void)
{
	RUN(test_kernel_samples_are_unbiased_by_rate);
	RUN(test_weighted_samples_keep_their_weight);
	RUN(test_both_paths_agree_for_the_same_weight);
	RUN(test_allocation_site);
	return unit_summary("alloc_profile");
}
