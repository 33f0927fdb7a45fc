/* elf_file against binutils: build ids, symbol values and segment offsets are compared with
 * what readelf and nm print for the fixtures of tests/unit/fixtures.mk, and shared-library
 * vaddrs with where the dynamic loader put them (dlopen/dladdr). Also: stripped files find
 * their names in a debug file through .gnu_debuglink (with a CRC check) and through a
 * build-id tree, and bad input fails with the documented errors. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "symbolize/elf_file.h"
#include "unit.h"
#include "fixtures.h"

/* Runs cmd and hands each output line to fn until fn returns true. false when cmd failed. */
static bool each_output_line(const char *cmd, bool (*fn)(const char *line, void *arg), void *arg)
{
	char line[1024];
	FILE *pipe = popen(cmd, "r");
	bool done = false;

	if (!pipe)
		return false;
	while (fgets(line, sizeof(line), pipe)) {
		if (!done)
			done = fn(line, arg);
	}
	return pclose(pipe) == 0;
}

struct nm_query {
	const char *name;
	uint64_t value, size;
	char type;
	bool found;
};

static bool nm_line(const char *line, void *arg)
{
	struct nm_query *q = arg;
	char name[512], type;
	unsigned long long value, size;

	/* "value size type name" or, for symbols without a size, "value type name". */
	if (sscanf(line, "%llx %llx %c %511s", &value, &size, &type, name) != 4) {
		size = 0;
		if (sscanf(line, "%llx %c %511s", &value, &type, name) != 3)
			return false;
	}
	if (strcmp(name, q->name) != 0)
		return false;
	q->value = value;
	q->size = size;
	q->type = type;
	q->found = true;
	return true;
}

/* nm's view of name in path (dynamic: .dynsym only). */
static bool nm_symbol(const char *path, const char *name, bool dynamic, uint64_t *value,
		      uint64_t *size)
{
	struct nm_query q = {.name = name};
	char cmd[PATH_MAX + 64];

	snprintf(cmd, sizeof(cmd), "nm -S --defined-only %s '%s' 2>/dev/null", dynamic ? "-D" : "",
		 path);
	if (!each_output_line(cmd, nm_line, &q) || !q.found)
		return false;
	*value = q.value;
	if (size)
		*size = q.size;
	return true;
}

static bool build_id_line(const char *line, void *arg)
{
	const char *p = strstr(line, "Build ID: ");

	if (!p)
		return false;
	sscanf(p + strlen("Build ID: "), "%127s", (char *)arg);
	return true;
}

static bool readelf_build_id(const char *path, char id[128])
{
	char cmd[PATH_MAX + 64];

	id[0] = '\0';
	snprintf(cmd, sizeof(cmd), "readelf -n '%s'", path);
	return each_output_line(cmd, build_id_line, id) && id[0];
}

struct load_segments {
	uint64_t offset[16], vaddr[16], filesz[16];
	int count;
};

static bool load_line(const char *line, void *arg)
{
	struct load_segments *segs = arg;
	unsigned long long offset, vaddr, paddr, filesz;

	if (segs->count < 16 && sscanf(line, " LOAD 0x%llx 0x%llx 0x%llx 0x%llx", &offset, &vaddr,
				       &paddr, &filesz) == 4) {
		segs->offset[segs->count] = offset;
		segs->vaddr[segs->count] = vaddr;
		segs->filesz[segs->count] = filesz;
		segs->count++;
	}
	return false;
}

static bool readelf_loads(const char *path, struct load_segments *segs)
{
	char cmd[PATH_MAX + 64];

	segs->count = 0;
	snprintf(cmd, sizeof(cmd), "readelf -lW '%s'", path);
	return each_output_line(cmd, load_line, segs) && segs->count > 0;
}

/* The file offset of vaddr by readelf's program headers; UINT64_MAX when in none. */
static uint64_t expected_offset(const struct load_segments *segs, uint64_t vaddr)
{
	int i;

	for (i = 0; i < segs->count; i++) {
		if (vaddr >= segs->vaddr[i] && vaddr < segs->vaddr[i] + segs->filesz[i])
			return segs->offset[i] + (vaddr - segs->vaddr[i]);
	}
	return UINT64_MAX;
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

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *out = fopen(path, "w");

	CHECK(out != NULL);
	if (!out)
		return;
	CHECK(fwrite(data, 1, len, out) == len);
	CHECK(fclose(out) == 0);
}

static bool copy_file(const char *from, const char *to)
{
	char cmd[2 * PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
	return system(cmd) == 0;
}

static void test_bad_input(void)
{
	char dir[] = "/tmp/allocscope-elf-XXXXXX";
	char path[PATH_MAX];
	struct elf_file *f = (struct elf_file *)&f;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/not-elf", dir);
	write_file(path, "#!/bin/sh\necho not an ELF file\n", 30);
	CHECK_EQ_U64(elf_file__open(path, &f), -ENOEXEC);
	CHECK(f == NULL);

	snprintf(path, sizeof(path), "%s/empty", dir);
	write_file(path, "", 0);
	f = (struct elf_file *)&f;
	CHECK_EQ_U64(elf_file__open(path, &f), -ENOEXEC);
	CHECK(f == NULL);

	/* An ELF header cut short. */
	snprintf(path, sizeof(path), "%s/truncated", dir);
	write_file(path, "\177ELF\2\1\1\0\0\0", 10);
	CHECK_EQ_U64(elf_file__open(path, &f), -ENOEXEC);

	snprintf(path, sizeof(path), "%s/missing", dir);
	CHECK_EQ_U64(elf_file__open(path, &f), -ENOENT);
	CHECK(f == NULL);

	CHECK_EQ_U64(elf_file__open(dir, &f), -EISDIR);
	elf_file__free(NULL);

	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	CHECK(system(path) == 0);
}

static void test_build_id_matches_readelf(void)
{
	static const char *const names[] = {"target_pie", "target_nopie", "libfixture.so",
					    "target_debuglink", "target_buildid"};
	char ids[5][128];
	size_t i, j;

	for (i = 0; i < 5; i++) {
		struct elf_file *f = open_fixture(names[i]);

		CHECK(f != NULL);
		CHECK(readelf_build_id(fixture(names[i]), ids[i]));
		if (f)
			CHECK_STR(elf_file__build_id(f), ids[i]);
		elf_file__free(f);
	}
	/* The variants must differ, or the debug-file tests below prove nothing. */
	for (i = 0; i < 5; i++)
		for (j = i + 1; j < 5; j++)
			CHECK(strcmp(ids[i], ids[j]) != 0);
}

static void test_file_type(void)
{
	struct elf_file *pie = open_fixture("target_pie");
	struct elf_file *nopie = open_fixture("target_nopie");
	struct elf_file *lib = open_fixture("libfixture.so");

	CHECK(pie && nopie && lib);
	CHECK(elf_file__is_shared_object(pie));
	CHECK(!elf_file__is_shared_object(nopie));
	CHECK(elf_file__is_shared_object(lib));
	CHECK_STR(elf_file__path(pie), fixture("target_pie"));
	/* Unstripped: no debug file is looked for. */
	CHECK(elf_file__debug_file_path(pie) == NULL);
	elf_file__free(pie);
	elf_file__free(nopie);
	elf_file__free(lib);
}

/* find_function agrees with nm on value and size, and with readelf's segments on offset. */
static void check_find_function(const char *file, const char *name, bool dynamic)
{
	struct elf_file *f = open_fixture(file);
	struct load_segments segs;
	struct elf_symbol sym = {0};
	uint64_t value = 0, size = 0;

	CHECK(f != NULL);
	CHECK(nm_symbol(fixture(file), name, dynamic, &value, &size));
	CHECK(readelf_loads(fixture(file), &segs));
	if (!f)
		return;
	CHECK_EQ_U64(elf_file__find_function(f, name, &sym), 0);
	CHECK_STR(sym.name, name);
	CHECK_EQ_U64(sym.vaddr, value);
	CHECK_EQ_U64(sym.size, size);
	CHECK_EQ_U64(sym.file_offset, expected_offset(&segs, value));
	elf_file__free(f);
}

static void test_find_function_matches_nm(void)
{
	check_find_function("target_pie", "fixture_alpha", false);
	check_find_function("target_pie", "fixture_beta", false); /* local: .symtab only */
	check_find_function("target_pie", "fixture_nosize", false);
	check_find_function("target_pie", "main", false);
	check_find_function("target_nopie", "fixture_alpha", false);
	check_find_function("target_nopie", "fixture_tail_caller", false);
	check_find_function("libfixture.so", "fixture_lib_function", true);
	check_find_function("libfixture.so", "fixture_lib_malloc_address", true);
}

static void test_find_function_absent(void)
{
	struct elf_file *f = open_fixture("target_pie");
	struct elf_symbol sym;

	CHECK(f != NULL);
	if (!f)
		return;
	CHECK_EQ_U64(elf_file__find_function(f, "no_such_function", &sym), -ENOENT);
	/* A prefix is not a match. */
	CHECK_EQ_U64(elf_file__find_function(f, "fixture_alph", &sym), -ENOENT);
	/* Only referenced here, defined in libc. */
	CHECK_EQ_U64(elf_file__find_function(f, "printf", &sym), -ENOENT);
	/* Data, not a function. */
	CHECK_EQ_U64(elf_file__find_function(f, "fixture_variant", &sym), -ENOENT);
	elf_file__free(f);
}

/* The vaddr of name plus the load base of its library is where the loader put it. */
static void check_loaded_function(const char *path, void *handle, const char *name)
{
	struct elf_file *f = NULL;
	struct elf_symbol sym = {0};
	void *runtime = dlsym(handle, name);
	Dl_info info = {0};

	CHECK(runtime != NULL);
	CHECK(runtime && dladdr(runtime, &info) != 0);
	CHECK_EQ_U64(elf_file__open(path, &f), 0);
	if (!f || !runtime)
		return;
	CHECK_EQ_U64(elf_file__find_function(f, name, &sym), 0);
	CHECK_EQ_U64(sym.vaddr + (uintptr_t)info.dli_fbase, (uintptr_t)runtime);
	elf_file__free(f);
}

static void test_find_function_in_loaded_libraries(void)
{
	void *lib = dlopen(fixture("libfixture.so"), RTLD_NOW | RTLD_LOCAL);
	Dl_info libc = {0};
	char cmd[PATH_MAX + 64];
	struct elf_file *f = NULL;
	struct elf_symbol sym = {0};
	uint64_t value = 0;

	CHECK(lib != NULL);
	if (lib) {
		check_loaded_function(fixture("libfixture.so"), lib, "fixture_lib_function");
		dlclose(lib);
	}

	/* glibc: malloc is "malloc@@GLIBC_2.2.5" to nm; memcpy has two versions and the
	 * default one (what a new program binds to) must win. */
	CHECK(dladdr((void *)&dladdr, &libc) != 0 && libc.dli_fname);
	if (!libc.dli_fname)
		return;
	check_loaded_function(libc.dli_fname, RTLD_DEFAULT, "malloc");
	CHECK_EQ_U64(elf_file__open(libc.dli_fname, &f), 0);
	if (!f)
		return;
	snprintf(cmd, sizeof(cmd), "%s", libc.dli_fname);
	CHECK(nm_symbol(cmd, "memcpy@@GLIBC_2.14", true, &value, NULL));
	CHECK_EQ_U64(elf_file__find_function(f, "memcpy", &sym), 0);
	CHECK_EQ_U64(sym.vaddr, value);
	elf_file__free(f);
}

static void test_read_vaddr(void)
{
	struct elf_file *f = open_fixture("target_pie");
	struct load_segments segs;
	uint64_t value = 0, offset;
	unsigned char from_elf[32], from_file[32];
	char text[32] = {0};
	int fd;

	CHECK(f != NULL);
	CHECK(readelf_loads(fixture("target_pie"), &segs));
	if (!f)
		return;
	/* A string nm places in .rodata reads back as the source wrote it. */
	CHECK(nm_symbol(fixture("target_pie"), "fixture_variant", false, &value, NULL));
	CHECK_EQ_U64(elf_file__read_vaddr(f, value, text, strlen("fixture variant 1")), 0);
	CHECK_STR(text, "fixture variant 1");

	/* Code bytes equal the file's bytes at the offset readelf's segments give. */
	CHECK(nm_symbol(fixture("target_pie"), "fixture_alpha", false, &value, NULL));
	CHECK_EQ_U64(elf_file__read_vaddr(f, value, from_elf, sizeof(from_elf)), 0);
	offset = expected_offset(&segs, value);
	fd = open(fixture("target_pie"), O_RDONLY);
	CHECK(fd >= 0);
	CHECK(pread(fd, from_file, sizeof(from_file), (off_t)offset) == (ssize_t)sizeof(from_file));
	close(fd);
	CHECK(memcmp(from_elf, from_file, sizeof(from_elf)) == 0);

	CHECK_EQ_U64(elf_file__read_vaddr(f, 0x7fff00000000ULL, from_elf, 4), -ERANGE);
	elf_file__free(f);
}

static void test_offset_to_vaddr(void)
{
	static const char *const names[] = {"target_pie", "target_nopie", "libfixture.so"};
	size_t n;

	for (n = 0; n < 3; n++) {
		struct elf_file *f = open_fixture(names[n]);
		struct load_segments segs;
		uint64_t vaddr = 0;
		int i;

		CHECK(f != NULL);
		CHECK(readelf_loads(fixture(names[n]), &segs));
		if (!f)
			continue;
		for (i = 0; i < segs.count; i++) {
			CHECK_EQ_U64(elf_file__offset_to_vaddr(f, segs.offset[i], &vaddr), 0);
			CHECK_EQ_U64(vaddr, segs.vaddr[i]);
			CHECK_EQ_U64(elf_file__offset_to_vaddr(
					 f, segs.offset[i] + segs.filesz[i] - 1, &vaddr),
				     0);
			CHECK_EQ_U64(vaddr, segs.vaddr[i] + segs.filesz[i] - 1);
		}
		CHECK_EQ_U64(elf_file__offset_to_vaddr(f, 1ULL << 40, &vaddr), -ENOENT);
		elf_file__free(f);
	}
}

/* name at its first and last byte, not past its end; start reported. */
static void check_function_extent(struct elf_file *f, const char *path, const char *name)
{
	uint64_t value = 0, size = 0, start = 0;
	const char *found;

	CHECK(nm_symbol(path, name, false, &value, &size));
	CHECK(size > 0);
	if (!size)
		return;
	CHECK_STR(elf_file__function_at(f, value, &start), name);
	CHECK_EQ_U64(start, value);
	start = 0;
	CHECK_STR(elf_file__function_at(f, value + size - 1, &start), name);
	CHECK_EQ_U64(start, value);
	found = elf_file__function_at(f, value + size, NULL);
	CHECK(!found || strcmp(found, name) != 0);
}

static void check_function_at(const char *file)
{
	struct elf_file *f = open_fixture(file);
	const char *path = fixture(file);
	uint64_t nosize = 0, after = 0, start = 0, variant = 0;

	CHECK(f != NULL);
	if (!f)
		return;
	check_function_extent(f, path, "fixture_alpha");
	check_function_extent(f, path, "fixture_beta");
	check_function_extent(f, path, "fixture_after_nosize");
	check_function_extent(f, path, "fixture_tail_caller");
	check_function_extent(f, path, "main");

	/* A size-0 symbol covers everything up to the next symbol. */
	CHECK(nm_symbol(path, "fixture_nosize", false, &nosize, NULL));
	CHECK(nm_symbol(path, "fixture_after_nosize", false, &after, NULL));
	CHECK(after > nosize);
	CHECK_STR(elf_file__function_at(f, nosize + 1, &start), "fixture_nosize");
	CHECK_EQ_U64(start, nosize);
	CHECK_STR(elf_file__function_at(f, after - 1, NULL), "fixture_nosize");

	/* Data and nothing. */
	CHECK(nm_symbol(path, "fixture_variant", false, &variant, NULL));
	CHECK(elf_file__function_at(f, variant, NULL) == NULL);
	CHECK(elf_file__function_at(f, 0, NULL) == NULL);
	CHECK(elf_file__function_at(f, UINT64_MAX - 1, NULL) == NULL);
	elf_file__free(f);
}

static void test_function_at(void)
{
	check_function_at("target_pie");
	check_function_at("target_nopie");
}

static void test_function_at_prefers_global_name(void)
{
	struct elf_file *f = open_fixture("target_pie");
	uint64_t alpha = 0, weak = 0, local = 0;

	CHECK(f != NULL);
	/* The fixture really has three names at one address. */
	CHECK(nm_symbol(fixture("target_pie"), "fixture_alpha", false, &alpha, NULL));
	CHECK(nm_symbol(fixture("target_pie"), "alias_weak", false, &weak, NULL));
	CHECK(nm_symbol(fixture("target_pie"), "alias_local", false, &local, NULL));
	CHECK(alpha == weak && alpha == local);
	if (f)
		CHECK_STR(elf_file__function_at(f, alpha + 2, NULL), "fixture_alpha");
	elf_file__free(f);
}

/* glibc's entry points under their public names, whatever their binding: calloc is a weak
 * alias of the global __libc_calloc, malloc a global alias of __libc_malloc. */
static void test_function_at_names_libc_public(void)
{
	static const char *const names[][2] = {
		{ "__libc_calloc", "calloc" },   { "__libc_malloc", "malloc" },
		{ "__libc_realloc", "realloc" }, { "__libc_valloc", "valloc" },
		{ "__libc_pvalloc", "pvalloc" }, { "__libc_memalign", "memalign" },
	};
	struct elf_file *f = NULL;

	if (elf_file__open("/lib/x86_64-linux-gnu/libc.so.6", &f) != 0) {
		CHECK(!"libc.so.6 opens");
		return;
	}
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		struct elf_symbol sym;

		CHECK(elf_file__find_function(f, names[i][0], &sym) == 0);
		CHECK_STR(elf_file__function_at(f, sym.vaddr, NULL), names[i][1]);
	}
	elf_file__free(f);
}

static void test_function_at_shared_library(void)
{
	struct elf_file *f = open_fixture("libfixture.so");
	uint64_t value = 0, size = 0, start = 0;

	CHECK(f != NULL);
	CHECK(nm_symbol(fixture("libfixture.so"), "fixture_lib_function", true, &value, &size));
	if (f) {
		CHECK_STR(elf_file__function_at(f, value + size / 2, &start),
			  "fixture_lib_function");
		CHECK_EQ_U64(start, value);
	}
	elf_file__free(f);
}

/* A stripped file names its local functions only through its debug file. */
static void check_names_from_debug_file(struct elf_file *f, const char *debug_path)
{
	struct elf_symbol sym = {0};
	uint64_t beta = 0, size = 0, start = 0;

	CHECK(nm_symbol(debug_path, "fixture_beta", false, &beta, &size));
	CHECK_STR(elf_file__function_at(f, beta + size - 1, &start), "fixture_beta");
	CHECK_EQ_U64(start, beta);
	CHECK_EQ_U64(elf_file__find_function(f, "fixture_beta", &sym), 0);
	CHECK_EQ_U64(sym.vaddr, beta);
	CHECK(sym.file_offset != 0);
}

/* Parsed state outlives the file on disk (a package upgrade replacing a library). */
static void test_survives_deletion(void)
{
	char dir[] = "/tmp/allocscope-elf-XXXXXX";
	char path[PATH_MAX];
	struct elf_file *f = NULL;
	uint64_t alpha = 0, start = 0;
	char text[32] = {0};

	CHECK(nm_symbol(fixture("target_pie"), "fixture_alpha", false, &alpha, NULL));
	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/target_pie", dir);
	CHECK(copy_file(fixture("target_pie"), path));
	CHECK_EQ_U64(elf_file__open(path, &f), 0);
	CHECK(unlink(path) == 0);
	CHECK(rmdir(dir) == 0);
	if (!f)
		return;
	CHECK_STR(elf_file__function_at(f, alpha + 1, &start), "fixture_alpha");
	CHECK_EQ_U64(start, alpha);
	CHECK_EQ_U64(elf_file__read_vaddr(f, alpha, text, 4), 0);
	elf_file__free(f);
}

static void test_stripped_with_debuglink(void)
{
	char dir[] = "/tmp/allocscope-elf-XXXXXX";
	char path[PATH_MAX], debug[PATH_MAX], cmd[PATH_MAX + 16];
	struct elf_file *f = open_fixture("target_debuglink");
	uint64_t beta = 0;
	int fd;

	CHECK(f != NULL);
	if (f) {
		CHECK_STR(elf_file__debug_file_path(f), fixture("target_debuglink.debug"));
		check_names_from_debug_file(f, fixture("target_debuglink.debug"));
	}
	elf_file__free(f);

	/* Control: without its debug file the same binary does not know fixture_beta. */
	CHECK(nm_symbol(fixture("target_debuglink.debug"), "fixture_beta", false, &beta, NULL));
	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/target_debuglink", dir);
	CHECK(copy_file(fixture("target_debuglink"), path));
	CHECK_EQ_U64(elf_file__open(path, &f), 0);
	if (f) {
		CHECK(elf_file__debug_file_path(f) == NULL);
		CHECK(elf_file__function_at(f, beta, NULL) == NULL);
	}
	elf_file__free(f);

	/* A debug file whose CRC32 does not match the link is refused (in .debug/ too). */
	snprintf(debug, sizeof(debug), "%s/.debug", dir);
	CHECK(mkdir(debug, 0755) == 0);
	snprintf(debug, sizeof(debug), "%s/.debug/target_debuglink.debug", dir);
	CHECK(copy_file(fixture("target_debuglink.debug"), debug));
	CHECK_EQ_U64(elf_file__open(path, &f), 0);
	CHECK(f && elf_file__debug_file_path(f) &&
	      strcmp(elf_file__debug_file_path(f), debug) == 0);
	elf_file__free(f);
	fd = open(debug, O_WRONLY | O_APPEND);
	CHECK(fd >= 0);
	CHECK(write(fd, "x", 1) == 1);
	close(fd);
	CHECK_EQ_U64(elf_file__open(path, &f), 0);
	CHECK(f && elf_file__debug_file_path(f) == NULL);
	elf_file__free(f);

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK(system(cmd) == 0);
}

static void test_stripped_with_build_id_tree(void)
{
	char roots_dir[PATH_MAX], id[128], expected[PATH_MAX + 160];
	const char *roots[] = {"/nonexistent-debug-root", roots_dir, NULL};
	const char *no_roots[] = {NULL};
	struct elf_file *f = NULL;

	snprintf(roots_dir, sizeof(roots_dir), "%s", fixture("debug"));
	CHECK(readelf_build_id(fixture("target_buildid"), id));
	snprintf(expected, sizeof(expected), "%s/.build-id/%.2s/%s.debug", roots_dir, id, id + 2);

	CHECK_EQ_U64(elf_file__set_debug_roots(roots), 0);
	f = open_fixture("target_buildid");
	CHECK(f != NULL);
	if (f) {
		CHECK_STR(elf_file__debug_file_path(f), expected);
		check_names_from_debug_file(f, expected);
	}
	elf_file__free(f);

	/* Control: with no roots the tree is not searched and the name is unknown. */
	CHECK_EQ_U64(elf_file__set_debug_roots(no_roots), 0);
	f = open_fixture("target_buildid");
	CHECK(f != NULL);
	if (f) {
		struct elf_symbol sym;

		CHECK(elf_file__debug_file_path(f) == NULL);
		CHECK_EQ_U64(elf_file__find_function(f, "fixture_beta", &sym), -ENOENT);
	}
	elf_file__free(f);
	CHECK_EQ_U64(elf_file__set_debug_roots(NULL), 0);
}

/* DWARF that covers no code (a library of data only): no lines anywhere, and no trouble. */
static void test_dwarf_without_code(void)
{
	struct elf_file *f = open_fixture("data_only.so");
	const struct source_line *lines = NULL;
	size_t count = 1;

	CHECK(f != NULL);
	if (!f)
		return;
	CHECK(elf_file__has_dwarf(f));
	CHECK_EQ_U64(elf_file__lines_at(f, 0x1000, &lines, &count, NULL), 0);
	CHECK_EQ_U64(count, 0);
	elf_file__free(f);
}

static void hung(int sig)
{
	static const char message[] = "FAIL test_debug_candidates_that_are_not_files: "
				      "elf_file__open hung on a FIFO or a device\n";

	(void)sig;
	(void)!write(STDERR_FILENO, message, sizeof(message) - 1);
	_exit(1);
}

/* A target owns the directories its binaries lie in (and, in a container, the build-id tree
 * under its root): a debug link or a build-id path naming a FIFO must not block the agent in
 * open(), nor one naming /dev/zero keep it reading forever. They are not debug files, and
 * neither is a FIFO given as the file itself. alarm() turns a hang into a failure. */
static void test_debug_candidates_that_are_not_files(void)
{
	char dir[] = "/tmp/allocscope-elf-XXXXXX";
	char path[PATH_MAX], debug[PATH_MAX + 32], id[128], cmd[PATH_MAX + 64];
	const char *roots[] = {dir, NULL};
	struct elf_file *f = NULL;

	signal(SIGALRM, hung);
	alarm(30);
	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/target_debuglink", dir);
	CHECK(copy_file(fixture("target_debuglink"), path));

	snprintf(debug, sizeof(debug), "%s/target_debuglink.debug", dir);
	CHECK(mkfifo(debug, 0600) == 0);
	CHECK_EQ_U64(elf_file__open(path, &f), 0);
	CHECK(f && elf_file__debug_file_path(f) == NULL);
	elf_file__free(f);

	CHECK(unlink(debug) == 0 && symlink("/dev/zero", debug) == 0);
	CHECK_EQ_U64(elf_file__open(path, &f), 0);
	CHECK(f && elf_file__debug_file_path(f) == NULL);
	elf_file__free(f);

	/* The build-id tree. */
	CHECK(readelf_build_id(fixture("target_buildid"), id));
	snprintf(debug, sizeof(debug), "%s/.build-id/%.2s", dir, id);
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", debug);
	CHECK(system(cmd) == 0);
	snprintf(debug, sizeof(debug), "%s/.build-id/%.2s/%s.debug", dir, id, id + 2);
	CHECK(mkfifo(debug, 0600) == 0);
	CHECK_EQ_U64(elf_file__set_debug_roots(roots), 0);
	f = open_fixture("target_buildid");
	CHECK(f && elf_file__debug_file_path(f) == NULL);
	elf_file__free(f);
	CHECK_EQ_U64(elf_file__set_debug_roots(NULL), 0);

	/* The file itself. */
	CHECK_EQ_U64(elf_file__open(debug, &f), -ENOEXEC);

	alarm(0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK(system(cmd) == 0);
}

int main(void)
{
	RUN(test_bad_input);
	RUN(test_build_id_matches_readelf);
	RUN(test_file_type);
	RUN(test_find_function_matches_nm);
	RUN(test_find_function_absent);
	RUN(test_find_function_in_loaded_libraries);
	RUN(test_read_vaddr);
	RUN(test_offset_to_vaddr);
	RUN(test_function_at);
	RUN(test_function_at_prefers_global_name);
	RUN(test_function_at_names_libc_public);
	RUN(test_function_at_shared_library);
	RUN(test_survives_deletion);
	RUN(test_stripped_with_debuglink);
	RUN(test_stripped_with_build_id_tree);
	RUN(test_debug_candidates_that_are_not_files);
	RUN(test_dwarf_without_code);
	return unit_summary("elf_file");
}
