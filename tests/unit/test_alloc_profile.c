/* Unit tests of the per-stack aggregation's arithmetic: the kernel path's samples are
 * weighted by 1/p from the sample rate, the cooperative path's carry their weight, and both
 * land in the same totals (the two paths must give interchangeable profiles). And of the top
 * table's allocation site, on stacks through a program and a library built here and run:
 * the first frame outside the allocator, whether the allocator is a library or lives in the
 * executable (a static glibc or jemalloc, Rust's _rjem_*). And of the pprof as sinks get it,
 * read back by a decoder written here: frames without symbols named by file and offset, a
 * service's processes merged for push, the coldest stacks folded into "(trimmed)" past the
 * limits with the totals kept. And of in-use snapshots: live entries joined to their samples
 * by (pid, time), freed samples forgotten, growth between snapshots, entries without a kept
 * sample and the live map's overflow counted. */
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <zlib.h>

#include "profile/alloc_profile.h"
#include "profile/label_limits.h"
#include "profile/pprof.h"
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

/* ---- the pprof read back ---------------------------------------------------------- */

#define MAX_DECODED 20000

/* The leaf function's name and the two values of each sample. */
struct decoded {
	size_t n_samples, n_strings, n_functions, n_locations;
	uint64_t raw_len; /* uncompressed */
	int64_t objects[MAX_DECODED], bytes[MAX_DECODED];
	uint64_t leaf_location[MAX_DECODED];
	uint64_t root_location[MAX_DECODED]; /* the sample's last location */
	const char *strings[MAX_DECODED * 2];
	uint64_t function_name[MAX_DECODED];	/* by function id */
	uint64_t location_function[MAX_DECODED]; /* by location id; 0: no line */
	uint8_t raw[8 << 20];
};

static bool pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	*v = 0;
	for (int shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t b = *(*p)++;

		*v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return true;
	}
	return false;
}

/* Calls back for each field of a message: number, wire type, varint or bytes. */
static bool pb_fields(const uint8_t *p, const uint8_t *end,
		      bool (*fn)(void *ctx, uint32_t field, int wire, uint64_t v, const uint8_t *data,
				 size_t len),
		      void *ctx)
{
	while (p < end) {
		uint64_t tag, v = 0;
		const uint8_t *data = NULL;

		if (!pb_varint(&p, end, &tag))
			return false;
		if ((tag & 7) == 0) {
			if (!pb_varint(&p, end, &v))
				return false;
		} else if ((tag & 7) == 2) {
			if (!pb_varint(&p, end, &v) || v > (uint64_t)(end - p))
				return false;
			data = p;
			p += v;
		} else {
			return false;
		}
		if (!fn(ctx, (uint32_t)(tag >> 3), (int)(tag & 7), v, data, (size_t)v))
			return false;
	}
	return true;
}

struct sub {
	struct decoded *d;
	uint64_t id, a, n_values;
	bool first_location;
};

static bool on_line(void *ctx, uint32_t field, int wire, uint64_t v, const uint8_t *data,
		    size_t len)
{
	struct sub *s = ctx;

	if (field == 1 && wire == 0 && !s->a)
		s->a = v; /* the innermost line's function */
	return true;
}

static bool on_location(void *ctx, uint32_t field, int wire, uint64_t v, const uint8_t *data,
			size_t len)
{
	struct sub *s = ctx;

	if (field == 1 && wire == 0)
		s->id = v;
	if (field == 4 && wire == 2 && !s->a) {
		struct sub line = { .d = s->d };

		pb_fields(data, data + len, on_line, &line);
		s->a = line.a;
	}
	return true;
}

static bool on_function(void *ctx, uint32_t field, int wire, uint64_t v, const uint8_t *data,
			size_t len)
{
	struct sub *s = ctx;

	if (field == 1 && wire == 0)
		s->id = v;
	if (field == 2 && wire == 0)
		s->a = v;
	return true;
}

static bool on_sample(void *ctx, uint32_t field, int wire, uint64_t v, const uint8_t *data,
		      size_t len)
{
	struct sub *s = ctx;
	size_t i = s->d->n_samples;

	if (field == 1) {
		const uint8_t *end = data + len;

		if (wire == 2) /* packed: the first is the leaf */
			pb_varint(&data, end, &v);
		if (!s->first_location)
			s->d->leaf_location[i] = v;
		s->first_location = true;
		s->d->root_location[i] = v;
		while (wire == 2 && data < end && pb_varint(&data, end, &v))
			s->d->root_location[i] = v;
	}
	if (field == 2) {
		uint64_t values[2] = { 0, 0 };
		size_t n = 0;

		if (wire == 2) {
			const uint8_t *end = data + len;

			while (data < end && n < 2)
				pb_varint(&data, end, &values[n++]);
		} else {
			values[s->n_values < 2 ? s->n_values : 1] = v;
			n = 1;
		}
		if (wire == 2) {
			s->d->objects[i] = (int64_t)values[0];
			s->d->bytes[i] = (int64_t)values[1];
		} else if (s->n_values++ == 0) {
			s->d->objects[i] = (int64_t)v;
		} else {
			s->d->bytes[i] = (int64_t)v;
		}
	}
	return true;
}

static bool on_profile(void *ctx, uint32_t field, int wire, uint64_t v, const uint8_t *data,
		       size_t len)
{
	struct decoded *d = ctx;
	struct sub s = { .d = d };

	if (field == 2 && wire == 2 && d->n_samples < MAX_DECODED) {
		pb_fields(data, data + len, on_sample, &s);
		d->n_samples++;
	} else if (field == 4 && wire == 2) {
		pb_fields(data, data + len, on_location, &s);
		if (s.id < MAX_DECODED)
			d->location_function[s.id] = s.a;
		d->n_locations++;
	} else if (field == 5 && wire == 2) {
		pb_fields(data, data + len, on_function, &s);
		if (s.id < MAX_DECODED)
			d->function_name[s.id] = s.a;
		d->n_functions++;
	} else if (field == 6 && wire == 2 && d->n_strings < MAX_DECODED * 2) {
		char *copy = strndup((const char *)data, len);

		d->strings[d->n_strings++] = copy ? copy : "";
	}
	return true;
}

static void decoded_free(struct decoded *d)
{
	for (size_t i = 0; i < d->n_strings; i++)
		free((char *)d->strings[i]);
	free(d);
}

static struct decoded *decode(const uint8_t *gz, size_t len)
{
	struct decoded *d = calloc(1, sizeof(*d));
	z_stream z = { 0 };

	if (!d)
		return NULL;
	z.next_in = (Bytef *)gz;
	z.avail_in = (uInt)len;
	z.next_out = d->raw;
	z.avail_out = sizeof(d->raw);
	if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK || inflate(&z, Z_FINISH) != Z_STREAM_END) {
		inflateEnd(&z);
		CHECK(!"the profile is a whole gzip stream");
		free(d);
		return NULL;
	}
	d->raw_len = z.total_out;
	inflateEnd(&z);
	CHECK(pb_fields(d->raw, d->raw + d->raw_len, on_profile, d));
	return d;
}

/* The name of sample i's leaf function; "" when its location has no function. */
static const char *leaf_name(const struct decoded *d, size_t i)
{
	uint64_t function = d->location_function[d->leaf_location[i]];
	uint64_t name = function < MAX_DECODED ? d->function_name[function] : 0;

	return function && name < d->n_strings ? d->strings[name] : "";
}

static const char *root_name(const struct decoded *d, size_t i)
{
	uint64_t function = d->location_function[d->root_location[i]];
	uint64_t name = function < MAX_DECODED ? d->function_name[function] : 0;

	return function && name < d->n_strings ? d->strings[name] : "";
}

static struct decoded *encode_and_decode(struct alloc_profile *profile,
					 const struct alloc_profile_output *output)
{
	uint8_t *data = NULL;
	size_t len = 0;
	struct decoded *d;

	CHECK(alloc_profile__encode_pprof(profile, output, &data, &len) == 0);
	if (!data)
		return NULL;
	d = decode(data, len);
	free(data);
	return d;
}

/* Frames nothing could name keep their bytes under a name that says where they are: the
 * file's name and the offset in it, the same in every run (servers show no name at all for a
 * location without a function). */
static void test_unnamed_frames_named_by_file_and_offset(void)
{
	char dir[] = "/tmp/allocscope-test-unnamed-XXXXXX", path[128];
	const struct alloc_profile_output output = { .start_ns = 1, .duration_ns = 1 };
	struct alloc_profile *profile = NULL;
	struct symbolizer *symbolizer = NULL;
	struct decoded *d = NULL;
	uint8_t page[8192] = { 0 };
	uint64_t frames[2];
	void *map = MAP_FAILED;
	int fd = -1;

	if (!mkdtemp(dir)) {
		CHECK(!"mkdtemp");
		return;
	}
	/* Executable memory from a file that is no ELF: nothing to name its code with. */
	snprintf(path, sizeof(path), "%s/libfoo.so", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0700);
	CHECK(fd >= 0 && write(fd, page, sizeof(page)) == (ssize_t)sizeof(page));
	map = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 4096);
	CHECK(map != MAP_FAILED);
	symbolizer = symbolizer__new();
	if (map == MAP_FAILED || !symbolizer)
		goto out;
	frames[0] = (uint64_t)(uintptr_t)map + 0xa2b;
	frames[1] = 0x10; /* in no mapping at all */
	CHECK(alloc_profile__new(RATE, symbolizer, &profile) == 0);
	CHECK(alloc_profile__add_stack(profile, (uint32_t)getpid(), frames, 2, 4096) == 0);
	d = profile ? encode_and_decode(profile, &output) : NULL;
	if (!d)
		goto out;
	CHECK_EQ_U64(d->n_samples, 1);
	CHECK_STR(leaf_name(d, 0), "libfoo.so+0x1a2b");
	/* Every location has a function. */
	for (uint64_t id = 1; id <= d->n_locations; id++)
		CHECK(d->location_function[id] != 0);
out:
	if (d)
		decoded_free(d);
	alloc_profile__free(profile);
	symbolizer__free(symbolizer);
	if (map != MAP_FAILED)
		munmap(map, 4096);
	if (fd >= 0)
		close(fd);
	unlink(path);
	rmdir(dir);
}

/* Past max_samples the coldest stacks fold into one "(trimmed)" sample: the hottest stay as
 * they were and the totals are whole. */
/* A drop notice weighs what a kept sample of its size would (both paths), counts in the
 * totals, and is one sample under [dropped samples] in the pprof (no symbolizer: at the root). */
static void test_dropped_samples_keep_their_weight(void)
{
	const uint64_t frames[] = { 0x1000, 0x2000 };
	struct alloc_sample drop = { .pid = 1, .size = 3000, .flags = ALLOC_SAMPLE_DROPPED };
	struct alloc_profile_output output = { .start_ns = 1, .duration_ns = 1 };
	struct alloc_profile_totals kept, dropped;
	struct alloc_profile *a, *b;
	struct alloc_site sites[4];
	struct decoded *d = NULL;
	size_t n = 0;
	bool seen = false;

	CHECK(alloc_profile__new(RATE, NULL, &a) == 0);
	CHECK(alloc_profile__new(RATE, NULL, &b) == 0);
	CHECK(alloc_profile__add_stack(a, 1, frames, 2, 3000) == 0);
	CHECK(alloc_profile__add_weighted_stack(a, 1, frames, 2, 3000, 50000.0) == 0);
	CHECK(alloc_profile__add_dropped(b, &drop) == 0);
	drop.weighted_bytes = 50000;
	CHECK(alloc_profile__add_dropped(b, &drop) == 0);
	alloc_profile__totals(a, &kept);
	alloc_profile__totals(b, &dropped);
	CHECK(near(kept.bytes, dropped.bytes));
	CHECK(near(kept.objects, dropped.objects));
	CHECK_EQ_U64(dropped.samples, 2);
	CHECK_EQ_U64(dropped.dropped_samples, 2);
	CHECK(near(dropped.dropped_bytes, kept.bytes));
	CHECK(alloc_profile__top_sites(b, sites, 4, &n) == 0);
	CHECK_EQ_U64(n, 1);
	if (n == 1) {
		CHECK(strcmp(sites[0].function, ALLOC_PROFILE_DROPPED_FRAME) == 0);
		CHECK(near(sites[0].bytes, kept.bytes));
	}
	d = encode_and_decode(b, &output);
	if (!d)
		goto out;
	CHECK_EQ_U64(d->n_samples, 1);
	for (size_t i = 0; i < d->n_samples; i++)
		seen |= strcmp(leaf_name(d, i), ALLOC_PROFILE_DROPPED_FRAME) == 0 &&
			d->bytes[i] == (int64_t)(kept.bytes + 0.5);
	CHECK(seen);
out:
	decoded_free(d);
	alloc_profile__free(a);
	alloc_profile__free(b);
}

/* A stack cut at the depth limit keeps its frames under a root [truncated] frame (its weight
 * is a kept sample's), and is its own stack: the same frames not cut are another sample. */
static void test_depth_cut_stack_under_truncated_root(void)
{
	const uint64_t frames[] = { 0x1000, 0x2000, 0x3000 };
	struct alloc_sample sample = { .pid = 1, .size = 3000 };
	struct alloc_profile_output output = { .start_ns = 1, .duration_ns = 1 };
	struct alloc_profile_totals totals;
	struct alloc_profile *profile;
	struct decoded *d = NULL;
	size_t cut = 0, whole = 0;

	CHECK(alloc_profile__new(RATE, NULL, &profile) == 0);
	CHECK(alloc_profile__add_depth_cut(profile, &sample, frames, 3) == 0);
	CHECK(alloc_profile__add_depth_cut(profile, &sample, frames, 3) == 0);
	CHECK(alloc_profile__add_unwound(profile, &sample, frames, 3) == 0);
	alloc_profile__totals(profile, &totals);
	CHECK_EQ_U64(totals.stacks, 2);
	CHECK_EQ_U64(totals.samples, 3);
	d = encode_and_decode(profile, &output);
	if (!d)
		goto out;
	CHECK_EQ_U64(d->n_samples, 2);
	for (size_t i = 0; i < d->n_samples; i++) {
		if (strcmp(root_name(d, i), ALLOC_PROFILE_TRUNCATED_FRAME) == 0) {
			cut++;
			CHECK(d->objects[i] > 0 && d->bytes[i] > 0);
		} else {
			whole++;
		}
		CHECK(strcmp(leaf_name(d, i), ALLOC_PROFILE_TRUNCATED_FRAME) != 0);
	}
	CHECK(cut == 1 && whole == 1);
out:
	decoded_free(d);
	alloc_profile__free(profile);
}

static void test_coldest_stacks_trimmed_totals_kept(void)
{
	struct alloc_profile_result result = { 0 };
	struct alloc_profile_output output = {
		.start_ns = 1, .duration_ns = 1, .max_samples = 10, .result = &result,
	};
	struct alloc_profile *profile;
	struct decoded *d = NULL;
	int64_t bytes = 0, objects = 0, want_bytes = 0;
	bool trimmed_seen = false;

	CHECK(alloc_profile__new(RATE, NULL, &profile) == 0);
	for (int i = 0; i < 100; i++) {
		uint64_t frames[2] = { 0x1000 + 16 * (uint64_t)i, 0x9000 };

		/* Stack i weighs (i + 1) KiB in objects of 64 bytes. */
		CHECK(alloc_profile__add_weighted_stack(profile, 1, frames, 2, 64,
							1024.0 * (i + 1)) == 0);
		want_bytes += 1024 * (i + 1);
	}
	d = encode_and_decode(profile, &output);
	if (!d)
		goto out;
	CHECK_EQ_U64(d->n_samples, 10);
	CHECK_EQ_U64(result.samples, 10);
	CHECK_EQ_U64(result.stacks_trimmed, 91);
	for (size_t i = 0; i < d->n_samples; i++) {
		bytes += d->bytes[i];
		objects += d->objects[i];
		if (strcmp(leaf_name(d, i), ALLOC_PROFILE_TRIMMED_FRAME) == 0) {
			trimmed_seen = true;
			/* Stacks 0..90: (1 + ... + 91) KiB. */
			CHECK_EQ_U64(d->bytes[i], 1024 * 91 * 92 / 2);
		} else {
			/* The 9 hottest: 92..100 KiB. */
			CHECK(d->bytes[i] >= 92 * 1024);
		}
	}
	CHECK(trimmed_seen);
	CHECK_EQ_U64(bytes, want_bytes);
	CHECK_EQ_U64(objects, want_bytes / 64);
	decoded_free(d);

	/* By size: 5000 stacks into 16 KiB uncompressed. */
	alloc_profile__free(profile);
	CHECK(alloc_profile__new(RATE, NULL, &profile) == 0);
	want_bytes = 0;
	for (int i = 0; i < 5000; i++) {
		uint64_t frames[3] = { 0x100000 + 16 * (uint64_t)i, 0x200000 + 16 * (uint64_t)i,
				       0x9000 };

		CHECK(alloc_profile__add_weighted_stack(profile, 1, frames, 3, 64,
							64.0 * (i % 7 + 1)) == 0);
		want_bytes += 64 * (i % 7 + 1);
	}
	output.max_samples = 0;
	output.max_bytes = 16 * 1024;
	d = encode_and_decode(profile, &output);
	if (!d)
		goto out;
	CHECK(d->raw_len <= 16 * 1024);
	CHECK(d->n_samples > 100 && d->n_samples < 5000);
	bytes = 0;
	for (size_t i = 0; i < d->n_samples; i++)
		bytes += d->bytes[i];
	CHECK_EQ_U64(bytes, want_bytes);
	CHECK_EQ_U64(result.stacks_trimmed, 5000 - (d->n_samples - 1));
out:
	if (d)
		decoded_free(d);
	alloc_profile__free(profile);
}

/* For push, a service's processes are one: the same code path in two processes (the same
 * program, loaded at different addresses) is one sample, with per-sample labels and pid
 * left to the directory sink. */
static void test_processes_merged_for_push(void)
{
	char dir[] = "/tmp/allocscope-test-merge-XXXXXX", exe[600], cmd[700];
	const char *const names[] = { "lib_alloc", "lib_helper", "site_via_lib", "main" };
	const struct pprof_label label = { .key = "service_name", .str = "sites" };
	struct alloc_profile_output output = {
		.start_ns = 1, .duration_ns = 1, .labels = &label, .n_labels = 1,
		.pid_label = true,
	};
	struct symbolizer *symbolizer = NULL;
	struct alloc_profile *profile = NULL;
	struct run a = { .pid = -1 }, b = { .pid = -1 };
	struct decoded *d = NULL;

	if (!mkdtemp(dir)) {
		CHECK(!"mkdtemp");
		return;
	}
	if (!build_sites_program(dir, exe, sizeof(exe))) {
		CHECK(!"cc builds the sites program");
		goto out;
	}
	symbolizer = symbolizer__new();
	if (!symbolizer || !start_run(exe, &a) || !start_run(exe, &b)) {
		CHECK(!"the sites program runs twice");
		goto out;
	}
	CHECK(alloc_profile__new(RATE, symbolizer, &profile) == 0);
	for (int r = 0; r < 2 && profile; r++) {
		const struct run *run = r ? &b : &a;
		uint64_t frames[4];

		for (size_t i = 0; i < 4; i++)
			frames[i] = run_value(run, names[i], false) + (i > 0);
		CHECK(alloc_profile__add_weighted_stack(profile, (uint32_t)run->pid, frames, 4, 64,
							6400.0 * (r + 1)) == 0);
	}
	if (!profile)
		goto out;
	d = encode_and_decode(profile, &output);
	if (d) {
		CHECK_EQ_U64(d->n_samples, 2); /* the directory sink's: one per process */
		decoded_free(d);
	}
	output.merge_processes = true;
	output.labels = NULL;
	output.n_labels = 0;
	d = encode_and_decode(profile, &output);
	if (d) {
		CHECK_EQ_U64(d->n_samples, 1);
		CHECK_EQ_U64(d->bytes[0], 6400 * 3);
		CHECK_EQ_U64(d->objects[0], 300);
		CHECK_STR(leaf_name(d, 0), "lib_alloc");
		/* No pid label: "pid" is not even a string of the profile. */
		for (size_t i = 0; i < d->n_strings; i++)
			CHECK(strcmp(d->strings[i], "pid") != 0);
		decoded_free(d);
	}
out:
	alloc_profile__free(profile);
	stop_run(&a);
	stop_run(&b);
	symbolizer__free(symbolizer);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK(system(cmd) == 0);
}

/* Issue 15: the capture's top table grouped by a process label (service_version), largest
 * group first; samples without the label form the group "". Per-sample labels go through
 * the profile's limiter, and none are kept without one. */
static void test_top_sites_grouped_by_label(void)
{
	const uint64_t site_a[] = { 0x1000, 0x2000 }, site_b[] = { 0x1000, 0x3000 };
	struct label_limits_config config = { .max_keys = 2, .max_values = 1,
					      .max_value_bytes = 16 };
	struct label_limits *limits;
	struct alloc_profile *profile;
	struct alloc_site rows[8];
	const char *k, *v;
	size_t n = 0;

	CHECK(alloc_profile__new(RATE, NULL, &profile) == 0);
	if (!profile)
		return;
	CHECK(alloc_profile__label_process(profile, 1, "service_version", "old") == 0);
	CHECK(alloc_profile__label_process(profile, 2, "service_version", "2.14") == 0);
	CHECK(alloc_profile__label_process(profile, 2, "service_version", "new") == 0);
	CHECK(alloc_profile__label_process(profile, 4, "service_version", "new") == 0);
	for (int i = 0; i < 2; i++)
		CHECK(alloc_profile__add_weighted_stack(profile, 1, site_a, 2, 100, 1000) == 0);
	CHECK(alloc_profile__add_weighted_stack(profile, 2, site_a, 2, 100, 1000) == 0);
	CHECK(alloc_profile__add_weighted_stack(profile, 2, site_b, 2, 100, 5000) == 0);
	CHECK(alloc_profile__add_weighted_stack(profile, 4, site_b, 2, 100, 500) == 0);
	CHECK(alloc_profile__add_weighted_stack(profile, 3, site_b, 2, 100, 700) == 0);
	CHECK(alloc_profile__top_sites_by_label(profile, "service_version", 8, rows, 8, &n) ==
	      0);
	CHECK_EQ_U64(n, 4);
	if (n == 4) {
		/* "new": pids 2 and 4, 6500 bytes; site_b (5500) before site_a (1000). */
		CHECK_STR(rows[0].group, "new");
		CHECK(rows[0].group_bytes == 6500 && rows[0].bytes == 5500);
		CHECK_STR(rows[1].group, "new");
		CHECK(rows[1].bytes == 1000);
		CHECK(strcmp(rows[0].function, rows[1].function) != 0);
		CHECK_STR(rows[2].group, "old");
		CHECK(rows[2].group_bytes == 2000 && rows[2].bytes == 2000);
		CHECK_STR(rows[3].group, "");
		CHECK(rows[3].bytes == 700);
	}
	/* At most per_group rows of each group. */
	CHECK(alloc_profile__top_sites_by_label(profile, "service_version", 1, rows, 8, &n) ==
	      0);
	CHECK_EQ_U64(n, 3);
	/* Per-sample labels: left out without a limiter, bounded with one. */
	CHECK(alloc_profile__admit_label(profile, "endpoint", "/a", &k, &v) == 0);
	CHECK(label_limits__new(&config, NULL, &limits) == 0);
	alloc_profile__set_label_limits(profile, limits);
	CHECK(alloc_profile__admit_label(profile, "endpoint", "/a", &k, &v) == 1);
	CHECK_STR(v, "/a");
	CHECK(alloc_profile__admit_label(profile, "endpoint", "/b", &k, &v) == 1);
	CHECK_STR(v, LABEL_LIMITS_OTHER);
	alloc_profile__free(profile);
}

/* --group-by endpoint: a sample's request-context labels (alloc_profile__use_labels, as the
 * pipeline sets them from what the limiter admitted) group it, ahead of its process's label;
 * one process's samples split by endpoint. */
static void test_top_sites_grouped_by_request_context(void)
{
	const uint64_t site_a[] = { 0x1000, 0x2000 }, site_b[] = { 0x1000, 0x3000 };
	const struct pprof_label reports[] = { { .key = "endpoint", .str = "GET /reports" },
					       { .key = "tenant", .str = "acme" } };
	const struct pprof_label orders[] = { { .key = "endpoint", .str = "POST /orders" } };
	struct alloc_profile *profile;
	struct alloc_site rows[8];
	size_t n = 0;

	CHECK(alloc_profile__new(RATE, NULL, &profile) == 0);
	if (!profile)
		return;
	CHECK(alloc_profile__label_process(profile, 1, "endpoint", "process-wide") == 0);
	CHECK(alloc_profile__use_labels(profile, reports, 2) == 0);
	CHECK(alloc_profile__add_weighted_stack(profile, 1, site_a, 2, 100, 4000) == 0);
	CHECK(alloc_profile__add_weighted_stack(profile, 1, site_b, 2, 100, 1000) == 0);
	CHECK(alloc_profile__use_labels(profile, orders, 1) == 0);
	CHECK(alloc_profile__add_weighted_stack(profile, 1, site_a, 2, 100, 3000) == 0);
	CHECK(alloc_profile__use_labels(profile, NULL, 0) == 0);
	CHECK(alloc_profile__add_weighted_stack(profile, 1, site_b, 2, 100, 500) == 0);
	CHECK(alloc_profile__top_sites_by_label(profile, "endpoint", 8, rows, 8, &n) == 0);
	CHECK_EQ_U64(n, 4);
	if (n == 4) {
		CHECK_STR(rows[0].group, "GET /reports");
		CHECK(rows[0].group_bytes == 5000 && rows[0].bytes == 4000);
		CHECK_STR(rows[1].group, "GET /reports");
		CHECK(rows[1].bytes == 1000);
		CHECK_STR(rows[2].group, "POST /orders");
		CHECK(rows[2].group_bytes == 3000);
		/* No context: the process's value. */
		CHECK_STR(rows[3].group, "process-wide");
		CHECK(rows[3].group_bytes == 500);
	}
	CHECK(alloc_profile__top_sites_by_label(profile, "tenant", 8, rows, 8, &n) == 0);
	CHECK(n == 4 && strcmp(rows[0].group, "acme") == 0 && rows[0].group_bytes == 5000 &&
	      strcmp(rows[2].group, "") == 0 && rows[2].group_bytes == 3500);
	alloc_profile__free(profile);
}

static struct alloc_sample live_sample(uint32_t pid, uint64_t time_ns, uint64_t size,
				       uint64_t weighted_bytes)
{
	struct alloc_sample s;

	memset(&s, 0, sizeof(s));
	s.pid = pid;
	s.time_ns = time_ns;
	s.size = size;
	s.weighted_bytes = weighted_bytes;
	return s;
}

static void test_inuse_snapshots(void)
{
	const uint64_t site_a[] = { 0x1000, 0x2000 }, site_b[] = { 0x3000, 0x4000 };
	struct alloc_sample a = live_sample(1, 10, 100, 0), b = live_sample(1, 20, 64, 6400),
			    c = live_sample(2, 30, 64, 6400);
	double wa = 100 / sampling_probability(100, RATE);
	struct alloc_profile_totals totals;
	struct alloc_profile_inuse inuse;
	struct alloc_site sites[4];
	struct alloc_profile *profile;
	size_t n = 0;

	CHECK(alloc_profile__new(RATE, NULL, &profile) == 0);
	CHECK(!alloc_profile__has_inuse(profile));
	CHECK(alloc_profile__enable_inuse(profile) == 0);
	CHECK(alloc_profile__has_inuse(profile));
	CHECK(alloc_profile__add_unwound(profile, &a, site_a, 2) == 0);
	CHECK(alloc_profile__add_unwound(profile, &b, site_b, 2) == 0);
	CHECK(alloc_profile__add_unwound(profile, &c, site_b, 2) == 0);

	/* Snapshot 1: a and b live (the kernel path's weight for a, b's own), c freed, and one
	 * live entry whose sample never arrived (its record was dropped). */
	alloc_profile__inuse_begin(profile, 1000);
	CHECK(alloc_profile__inuse_add(profile, 1, 10, 100, 0) == 0);
	CHECK(alloc_profile__inuse_add(profile, 1, 20, 64, 6400) == 0);
	CHECK(alloc_profile__inuse_add(profile, 1, 999, 64, 640) == 0);
	alloc_profile__inuse_end(profile, 5);
	alloc_profile__inuse_totals(profile, &inuse);
	CHECK(near(inuse.bytes, wa + 6400 + 640));
	CHECK(near(inuse.objects, wa / 100 + 100 + 10));
	CHECK_EQ_U64(inuse.live_samples, 3);
	CHECK_EQ_U64(inuse.untracked, 1);
	CHECK_EQ_U64(inuse.overflow, 5);
	CHECK_EQ_U64(inuse.snapshot_ns, 1000);
	CHECK_EQ_U64(inuse.prev_snapshot_ns, 0);
	CHECK(alloc_profile__top_live_sites(profile, sites, 4, &n) == 0);
	/* By inuse_space: a's site (~512 KiB at this rate), b's (6400; c was freed), the
	 * dropped sample's. */
	CHECK(n == 3);
	if (n == 3) {
		CHECK(near(sites[0].inuse_bytes, wa));
		CHECK_EQ_U64(sites[0].oldest_live_ns, 10);
		CHECK(near(sites[0].inuse_growth, wa));
		CHECK(near(sites[1].inuse_bytes, 6400));
		CHECK_EQ_U64(sites[1].oldest_live_ns, 20);
	}
	/* Allocation totals are not touched by snapshots. */
	alloc_profile__totals(profile, &totals);
	CHECK(near(totals.bytes, wa + 6400 + 6400));

	/* Snapshot 2: a freed; b still live. a's site shrank by all it held. */
	alloc_profile__inuse_begin(profile, 2000);
	CHECK(alloc_profile__inuse_add(profile, 1, 20, 64, 6400) == 0);
	alloc_profile__inuse_end(profile, 5);
	alloc_profile__inuse_totals(profile, &inuse);
	CHECK(near(inuse.bytes, 6400));
	CHECK_EQ_U64(inuse.prev_snapshot_ns, 1000);
	CHECK_EQ_U64(inuse.snapshots, 2);
	CHECK(alloc_profile__top_live_sites(profile, sites, 4, &n) == 0);
	CHECK(n == 1);
	if (n == 1)
		CHECK(near(sites[0].inuse_bytes, 6400));

	/* Snapshot 3: a sample forgotten as freed stays forgotten (its pointer reused by an
	 * unsampled allocation is not it): an entry with its identity is untracked. */
	alloc_profile__inuse_begin(profile, 3000);
	CHECK(alloc_profile__inuse_add(profile, 1, 10, 100, 0) == 0);
	alloc_profile__inuse_end(profile, 5);
	alloc_profile__inuse_totals(profile, &inuse);
	CHECK_EQ_U64(inuse.untracked, 1);
	alloc_profile__free(profile);
}

/* The daemon carries a service's live samples into its next interval's profile: that profile
 * takes per-sample labels through the same bounds as a fresh one (the configured keys kept,
 * values bounded per interval), not none at all. */
static void test_carried_profile_keeps_label_limits(void)
{
	const uint64_t site[] = { 0x1000, 0x2000 };
	char *keys[] = { (char *)"endpoint" };
	const struct label_limits_config config = {
		.keys = keys, .n_keys = 1, .max_keys = 1, .max_values = 1, .max_value_bytes = 64
	};
	struct alloc_sample a = live_sample(1, 10, 100, 0);
	struct alloc_profile *profile = NULL, *next = NULL;
	struct label_limits *limits = NULL;
	const char *key, *value;

	CHECK(alloc_profile__new(RATE, NULL, &profile) == 0);
	CHECK(label_limits__new(&config, NULL, &limits) == 0);
	if (!profile || !limits)
		goto out;
	alloc_profile__set_label_limits(profile, limits);
	CHECK(alloc_profile__enable_inuse(profile) == 0);
	CHECK(alloc_profile__admit_label(profile, "endpoint", "/a", &key, &value) == 1);
	CHECK(alloc_profile__add_unwound(profile, &a, site, 2) == 0);
	alloc_profile__inuse_begin(profile, 1000);
	CHECK(alloc_profile__inuse_add(profile, 1, 10, 100, 0) == 0);
	alloc_profile__inuse_end(profile, 0);

	CHECK(alloc_profile__carry_live(profile, &next) == 0);
	CHECK(next != NULL);
	if (!next)
		goto out;
	/* A new interval: its first value is kept, the second folds into "other"; a key not
	 * configured is left out. */
	CHECK(alloc_profile__admit_label(next, "endpoint", "/b", &key, &value) == 1);
	CHECK(value && strcmp(value, "/b") == 0);
	CHECK(alloc_profile__admit_label(next, "endpoint", "/c", &key, &value) == 1);
	CHECK(value && strcmp(value, LABEL_LIMITS_OTHER) == 0);
	CHECK(alloc_profile__admit_label(next, "tenant", "t1", &key, &value) == 0);
out:
	alloc_profile__free(next);
	alloc_profile__free(profile);
}

/* A live sample carried into the next interval keeps its request context's labels: its
 * inuse weight stays under its endpoint (it had none in the carried profile). */
static void test_carried_live_sample_keeps_its_labels(void)
{
	const uint64_t site[] = { 0x1000, 0x2000 };
	const struct pprof_label labels[] = { { .key = "endpoint", .str = "GET /reports" } };
	struct alloc_sample a = live_sample(1, 10, 100, 0), b = live_sample(1, 20, 100, 0);
	struct alloc_profile *profile = NULL, *next = NULL;
	struct alloc_site rows[4];
	size_t n = 0;

	CHECK(alloc_profile__new(RATE, NULL, &profile) == 0);
	if (!profile)
		return;
	CHECK(alloc_profile__enable_inuse(profile) == 0);
	CHECK(alloc_profile__use_labels(profile, labels, 1) == 0);
	CHECK(alloc_profile__add_unwound(profile, &a, site, 2) == 0);
	CHECK(alloc_profile__use_labels(profile, NULL, 0) == 0);
	CHECK(alloc_profile__add_unwound(profile, &b, site, 2) == 0);
	alloc_profile__inuse_begin(profile, 1000);
	CHECK(alloc_profile__inuse_add(profile, 1, 10, 100, 0) == 0);
	alloc_profile__inuse_end(profile, 0);
	CHECK(alloc_profile__carry_live(profile, &next) == 0);
	if (!next)
		goto out;
	/* The next interval's samples without context do not inherit the carried labels. */
	CHECK(alloc_profile__add_unwound(next, &b, site, 2) == 0);
	alloc_profile__inuse_begin(next, 2000);
	CHECK(alloc_profile__inuse_add(next, 1, 10, 100, 0) == 0);
	alloc_profile__inuse_end(next, 0);
	CHECK(alloc_profile__top_sites_by_label(next, "endpoint", 4, rows, 4, &n) == 0);
	CHECK_EQ_U64(n, 2);
	if (n == 2) {
		/* The carried stack (inuse only: no alloc weight this interval) and the new one. */
		CHECK(strcmp(rows[0].group, "") == 0 && rows[0].bytes > 0);
		CHECK_STR(rows[1].group, "GET /reports");
	}
out:
	alloc_profile__free(next);
	alloc_profile__free(profile);
}

int main(void)
{
	RUN(test_kernel_samples_are_unbiased_by_rate);
	RUN(test_top_sites_grouped_by_label);
	RUN(test_weighted_samples_keep_their_weight);
	RUN(test_both_paths_agree_for_the_same_weight);
	RUN(test_allocation_site);
	RUN(test_unnamed_frames_named_by_file_and_offset);
	RUN(test_dropped_samples_keep_their_weight);
	RUN(test_depth_cut_stack_under_truncated_root);
	RUN(test_coldest_stacks_trimmed_totals_kept);
	RUN(test_processes_merged_for_push);
	RUN(test_inuse_snapshots);
	RUN(test_carried_profile_keeps_label_limits);
	RUN(test_top_sites_grouped_by_request_context);
	RUN(test_carried_live_sample_keeps_its_labels);
	return unit_summary("alloc_profile");
}
