/* Unit tests for allocator recognition and entry points: Debian 12's real libraries (glibc,
 * jemalloc, tcmalloc, mimalloc, libstdc++), a shared object compiled here with prefixed
 * jemalloc-style names whose functions call each other in known ways (through the PLT, and
 * through the GOT with -fno-plt), and the double-count rule on hand-made call graphs. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attach/allocators.h"
#include "symbolize/elf_file.h"
#include "unit.h"

#define LIBDIR "/usr/lib/x86_64-linux-gnu/"

struct found {
	struct file_allocators set;
	struct entry_point points[ALLOCATORS_MAX_ENTRY_POINTS];
	size_t n;
	int ret;
};

/* Identifies path and finds the entry points of everything in it. false (and a failed
 * check) when the file cannot be opened. */
static bool examine_file(const char *path, struct found *out)
{
	struct elf_file *f;
	int ret = elf_file__open(path, &f);

	memset(out, 0, sizeof(*out));
	if (ret) {
		fprintf(stderr, "  cannot open %s: %s (run sudo scripts/install-deps)\n", path,
			strerror(-ret));
		CHECK(ret == 0);
		return false;
	}
	allocators__identify_file(f, &out->set);
	out->ret = allocators__find_entry_points(f, out->set.ids, out->set.count, out->points,
						 ALLOCATORS_MAX_ENTRY_POINTS, &out->n);
	elf_file__free(f);
	CHECK_EQ_U64(out->ret, 0);
	return out->ret == 0;
}

/* The entry point whose names are exactly names, or NULL (a failed check). */
static const struct entry_point *point_named(const struct found *found, const char *names)
{
	for (size_t i = 0; i < found->n; i++)
		if (strcmp(found->points[i].names, names) == 0)
			return &found->points[i];
	fprintf(stderr, "  no entry point \"%s\"; found:", names);
	for (size_t i = 0; i < found->n; i++)
		fprintf(stderr, " %s", found->points[i].names);
	fprintf(stderr, "\n");
	CHECK(!"entry point present");
	return NULL;
}

static size_t probed_count(const struct found *found)
{
	size_t n = 0;

	for (size_t i = 0; i < found->n; i++)
		n += found->points[i].probed;
	return n;
}

static void check_probed(const struct found *found, const char *names, enum alloc_entry entry)
{
	const struct entry_point *p = point_named(found, names);

	if (!p)
		return;
	if (!p->probed)
		fprintf(stderr, "  %s: not probed, counted by %s\n", names, p->counted_by);
	CHECK(p->probed);
	CHECK_STR(alloc_entry_name(p->entry), alloc_entry_name(entry));
	CHECK_EQ_U64(p->entry, entry);
}

/* The probe of entry point names sits at offset on an emulated instruction described so. */
static void check_placement_at(const struct found *found, const char *names, uint32_t offset,
			       const char *insn_desc)
{
	const struct entry_point *p = point_named(found, names);

	if (!p)
		return;
	if (p->placement.offset != offset || !p->placement.emulated)
		fprintf(stderr, "  %s: +%u %s %s, expected +%u\n", names, p->placement.offset,
			p->placement.insn_desc, p->placement.reason, offset);
	CHECK_EQ_U64(p->placement.offset, offset);
	CHECK(p->placement.emulated);
	CHECK_STR(p->placement.insn_desc, insn_desc);
}

static void check_unprobed(const struct found *found, const char *names, const char *counted_by)
{
	const struct entry_point *p = point_named(found, names);

	if (!p)
		return;
	CHECK(!p->probed);
	CHECK_STR(p->counted_by, counted_by);
}

/* Every probed entry point is one address: no two share one. */
static void check_one_probe_per_address(const struct found *found)
{
	for (size_t i = 0; i < found->n; i++)
		for (size_t j = i + 1; j < found->n; j++)
			CHECK(found->points[i].vaddr != found->points[j].vaddr);
}

static void check_id(const struct found *found, size_t i, enum allocator_family family,
		     const char *prefix, bool owns_malloc)
{
	if (found->set.count <= i) {
		CHECK(found->set.count > i);
		return;
	}
	CHECK_EQ_U64(found->set.ids[i].family, family);
	CHECK_STR(found->set.ids[i].prefix, prefix);
	CHECK(found->set.ids[i].owns_malloc == owns_malloc);
}

static void glibc(void)
{
	struct found found;
	const struct entry_point *p;

	if (!examine_file(LIBDIR "libc.so.6", &found))
		return;
	CHECK_EQ_U64(found.set.count, 1);
	check_id(&found, 0, ALLOCATOR_GLIBC, "", true);
	CHECK_EQ_U64(found.n, 7);
	CHECK_EQ_U64(probed_count(&found), 7);
	check_one_probe_per_address(&found);
	check_probed(&found, "malloc", ALLOC_ENTRY_MALLOC);
	check_probed(&found, "calloc", ALLOC_ENTRY_CALLOC);
	/* glibc's realloc jumps to malloc for realloc(NULL, n): NULL is malloc's to count. */
	check_probed(&found, "realloc", ALLOC_ENTRY_REALLOC);
	check_probed(&found, "posix_memalign", ALLOC_ENTRY_POSIX_MEMALIGN);
	check_probed(&found, "valloc", ALLOC_ENTRY_VALLOC);
	check_probed(&found, "pvalloc", ALLOC_ENTRY_PVALLOC);
	/* Aliases: one probe. memalign starts with a cmpb: the probe moves to the jcc at +7. */
	check_probed(&found, "memalign/aligned_alloc", ALLOC_ENTRY_MEMALIGN);
	p = point_named(&found, "memalign/aligned_alloc");
	if (p) {
		CHECK_EQ_U64(p->placement.offset, 7);
		CHECK(p->placement.emulated);
		CHECK_STR(p->allocator, "glibc");
	}
	/* _mid_memalign hands alignments <= 16 to __libc_malloc: malloc counts those. valloc
	 * and pvalloc pass the page size, never relayed. */
	for (size_t i = 0; i < found.n; i++) {
		p = &found.points[i];
		if (p->entry == ALLOC_ENTRY_MEMALIGN || p->entry == ALLOC_ENTRY_POSIX_MEMALIGN) {
			CHECK_EQ_U64(p->relayed_alignment, 16);
			CHECK_STR(p->relayed_to, "malloc");
			CHECK_EQ_U64(entry_point__cookie(p), p->entry | 16u << 8);
		} else {
			CHECK_EQ_U64(p->relayed_alignment, 0);
			CHECK_EQ_U64(entry_point__cookie(p), p->entry);
		}
	}
}

static void jemalloc(void)
{
	struct found found;
	const struct entry_point *p;

	if (!examine_file(LIBDIR "libjemalloc.so.2", &found))
		return;
	CHECK_EQ_U64(found.set.count, 1);
	check_id(&found, 0, ALLOCATOR_JEMALLOC, "", true);
	check_one_probe_per_address(&found);
	/* malloc starts with cmp $0x1000,%rdi; ja: the probe sits on the ja. */
	check_probed(&found, "malloc", ALLOC_ENTRY_MALLOC);
	p = point_named(&found, "malloc");
	if (p) {
		CHECK_EQ_U64(p->placement.offset, 7);
		CHECK(p->placement.emulated);
		CHECK_STR(p->placement.insn_desc, "jcc rel32");
	}
	check_probed(&found, "calloc", ALLOC_ENTRY_CALLOC);
	/* jemalloc serves realloc(NULL, n) inside realloc: counted there. */
	check_probed(&found, "realloc", ALLOC_ENTRY_REALLOC_ANY);
	check_probed(&found, "aligned_alloc", ALLOC_ENTRY_MEMALIGN);
	check_probed(&found, "memalign", ALLOC_ENTRY_MEMALIGN);
	check_probed(&found, "posix_memalign", ALLOC_ENTRY_POSIX_MEMALIGN);
	/* jemalloc's aligned entries allocate in their own bodies: nothing relayed. */
	for (size_t i = 0; i < found.n; i++)
		CHECK_EQ_U64(found.points[i].relayed_alignment, 0);
	check_probed(&found, "valloc", ALLOC_ENTRY_VALLOC);
	check_probed(&found, "mallocx", ALLOC_ENTRY_MALLOC);
	check_probed(&found, "rallocx", ALLOC_ENTRY_REALLOC_ANY);
	/* rallocx is xor %ecx,%ecx; jmp: the flags it clears are not what the probe reads. */
	check_placement_at(&found, "rallocx", 2, "jmp rel32");
	check_probed(&found, "xallocx", ALLOC_ENTRY_REALLOC_ANY);
	/* Its own operator new has an inlined fast path: probed. new[] jumps to new; the
	 * aligned ones call aligned_alloc through the PLT. */
	check_probed(&found, "_Znwm", ALLOC_ENTRY_NEW);
	check_probed(&found, "_ZnwmRKSt9nothrow_t", ALLOC_ENTRY_NEW);
	check_unprobed(&found, "_Znam", "_Znwm");
	check_unprobed(&found, "_ZnamRKSt9nothrow_t", "_ZnwmRKSt9nothrow_t");
	check_unprobed(&found, "_ZnwmSt11align_val_t", "aligned_alloc");
	check_unprobed(&found, "_ZnamSt11align_val_tRKSt9nothrow_t", "aligned_alloc");
	CHECK_EQ_U64(probed_count(&found), 12);
	/* Never probed: frees and queries. */
	for (size_t i = 0; i < found.n; i++) {
		CHECK(strstr(found.points[i].names, "free") == NULL);
		CHECK(strstr(found.points[i].names, "dallocx") == NULL);
		CHECK(strstr(found.points[i].names, "nallocx") == NULL);
	}
}

static void tcmalloc(void)
{
	struct found found;
	const struct entry_point *p;

	if (!examine_file(LIBDIR "libtcmalloc_minimal.so.4", &found))
		return;
	CHECK_EQ_U64(found.set.count, 1);
	check_id(&found, 0, ALLOCATOR_TCMALLOC, "", true);
	check_one_probe_per_address(&found);
	/* The standard names, operator new and tc_* are aliases: one entry point each. */
	check_probed(&found, "malloc/tc_malloc", ALLOC_ENTRY_MALLOC);
	check_probed(&found, "calloc/tc_calloc", ALLOC_ENTRY_CALLOC);
	check_probed(&found, "realloc/tc_realloc", ALLOC_ENTRY_REALLOC_ANY);
	check_probed(&found, "memalign/aligned_alloc/tc_memalign", ALLOC_ENTRY_MEMALIGN);
	check_probed(&found, "_Znwm/_Znam/tc_new/tc_newarray", ALLOC_ENTRY_NEW);
	check_probed(&found, "_ZnwmRKSt9nothrow_t/_ZnamRKSt9nothrow_t/tc_new_nothrow/"
			     "tc_newarray_nothrow",
		     ALLOC_ENTRY_NEW);
	check_probed(&found, "_ZnwmSt11align_val_t/_ZnamSt11align_val_t/tc_new_aligned/"
			     "tc_newarray_aligned",
		     ALLOC_ENTRY_NEW);
	check_probed(&found, "tc_malloc_skip_new_handler", ALLOC_ENTRY_MALLOC);
	/* posix_memalign calls tc_memalign through the PLT; valloc and pvalloc jump to it. */
	check_unprobed(&found, "posix_memalign/tc_posix_memalign", "memalign");
	check_unprobed(&found, "valloc/tc_valloc", "memalign");
	check_unprobed(&found, "pvalloc/tc_pvalloc", "memalign");
	p = point_named(&found, "malloc/tc_malloc");
	if (p)
		CHECK(p->placement.emulated);
	/* memalign copies the alignment into %r8 first; its size is in %rsi: the ja at +10. */
	check_placement_at(&found, "memalign/aligned_alloc/tc_memalign", 10, "jcc rel32");
	CHECK_EQ_U64(probed_count(&found), 9);
}

/* The full gperftools tcmalloc (with the heap profiler): its malloc copies the size into %r8
 * before its first branch, which probes that read every argument register refused. */
static void tcmalloc_full(void)
{
	struct found found;

	if (access(LIBDIR "libtcmalloc.so.4", R_OK) != 0) {
		fprintf(stderr,
			"  skipped: no " LIBDIR "libtcmalloc.so.4 (libgoogle-perftools4)\n");
		return;
	}
	if (!examine_file(LIBDIR "libtcmalloc.so.4", &found))
		return;
	check_id(&found, 0, ALLOCATOR_TCMALLOC, "", true);
	check_placement_at(&found, "malloc/tc_malloc", 13, "jcc rel32");
	check_placement_at(&found, "_Znwm/_Znam/tc_new/tc_newarray", 13, "jcc rel32");
	check_placement_at(&found, "memalign/aligned_alloc/tc_memalign", 10, "jcc rel32");
	check_placement_at(&found, "calloc/tc_calloc", 12, "jcc rel32");
}

static void mimalloc(void)
{
	struct found found;
	const struct entry_point *p;

	if (!examine_file(LIBDIR "libmimalloc.so.2", &found))
		return;
	CHECK_EQ_U64(found.set.count, 1);
	check_id(&found, 0, ALLOCATOR_MIMALLOC, "", true);
	check_one_probe_per_address(&found);
	check_probed(&found, "malloc/mi_malloc", ALLOC_ENTRY_MALLOC);
	check_probed(&found, "calloc/mi_calloc", ALLOC_ENTRY_CALLOC);
	check_probed(&found, "realloc/mi_realloc", ALLOC_ENTRY_REALLOC_ANY);
	check_probed(&found, "mi_zalloc", ALLOC_ENTRY_MALLOC);
	check_probed(&found, "mi_malloc_aligned", ALLOC_ENTRY_MALLOC);
	check_probed(&found, "_Znwm/_Znam/mi_new", ALLOC_ENTRY_NEW);
	check_probed(&found, "mi_new_nothrow", ALLOC_ENTRY_NEW);
	/* The overrides and the memalign family are wrappers: mi_malloc_aligned counts them,
	 * also through a chain (valloc -> mi_valloc -> mi_memalign -> mi_malloc_aligned). */
	check_unprobed(&found, "valloc", "mi_malloc_aligned");
	check_unprobed(&found, "posix_memalign", "mi_malloc_aligned");
	check_unprobed(&found, "mi_posix_memalign", "mi_malloc_aligned");
	check_unprobed(&found, "mi_aligned_alloc", "mi_malloc_aligned");
	check_unprobed(&found, "_ZnwmSt11align_val_t/_ZnamSt11align_val_t/mi_new_aligned",
		       "mi_malloc_aligned");
	check_unprobed(&found, "_ZnwmRKSt9nothrow_t", "mi_new_nothrow");
	check_unprobed(&found, "mi_new_realloc", "realloc");
	/* mi_malloc moves the size to %rsi and loads the heap into %rdi before its first branch:
	 * a probe past that would read the heap as the size. */
	p = point_named(&found, "malloc/mi_malloc");
	if (p) {
		CHECK_EQ_U64(p->placement.offset, 0);
		CHECK(!p->placement.emulated);
		CHECK(strstr(p->placement.reason, "writes %rdi") != NULL);
	}
}

static void libstdcxx_new_is_left_to_malloc(void)
{
	struct found found;

	if (!examine_file(LIBDIR "libstdc++.so.6", &found))
		return;
	CHECK_EQ_U64(found.set.count, 1);
	check_id(&found, 0, ALLOCATOR_CXX_NEW, "", false);
	CHECK_EQ_U64(found.n, 8);
	CHECK_EQ_U64(probed_count(&found), 0);
	check_unprobed(&found, "_Znwm", "malloc in another file");
	check_unprobed(&found, "_Znam", "malloc in another file");
	check_unprobed(&found, "_ZnwmSt11align_val_t", "aligned_alloc in another file");
}

static void files_without_or_with_unknown_allocators(void)
{
	struct file_allocators set;
	struct elf_file *f;

	if (elf_file__open(LIBDIR "libm.so.6", &f) == 0) {
		allocators__identify_file(f, &set);
		CHECK_EQ_U64(set.count, 0);
		CHECK(file_allocators__malloc_owner(&set) == NULL);
		elf_file__free(f);
	} else {
		CHECK(!"libm.so.6 opens");
	}
	/* glibc's malloc-debugging library defines malloc but is none of the four. */
	if (elf_file__open(LIBDIR "libc_malloc_debug.so.0", &f) == 0) {
		const struct allocator_id *owner;

		allocators__identify_file(f, &set);
		owner = file_allocators__malloc_owner(&set);
		CHECK(owner != NULL);
		if (owner)
			CHECK_STR(allocator_family_name(owner->family),
				  "an unrecognized allocator");
		elf_file__free(f);
	} else {
		CHECK(!"libc_malloc_debug.so.0 opens");
	}
}

/* A shared object with jemalloc-style prefixed names, built here so that the calls between
 * its functions are known: je_realloc calls je_malloc for NULL, je_rallocx wraps je_realloc,
 * je_posix_memalign and je_aligned_alloc call each other, _rjem_mallocx wraps _rjem_malloc,
 * and its operator new calls malloc of another file. */
static const char synthetic_source[] =
	"#include <stdlib.h>\n"
	"static char arena[1 << 16];\n"
	"static unsigned long used;\n"
	"__attribute__((noinline)) static void *bump(unsigned long n)\n"
	"{ void *p = arena + (used & 0xfff); used += n; return p; }\n"
	"void *je_malloc(unsigned long n) { return bump(n); }\n"
	"void *je_mallocx(unsigned long n, int flags) { return bump(n + flags); }\n"
	"void *je_calloc(unsigned long a, unsigned long b) { return bump(a * b); }\n"
	"void *je_realloc(void *p, unsigned long n)\n"
	"{ if (!p) return je_malloc(n); return bump(n + 1); }\n"
	"void *je_rallocx(void *p, unsigned long n, int f) { return je_realloc(p, n + f); }\n"
	"void *je_aligned_alloc(unsigned long a, unsigned long n);\n"
	"int je_posix_memalign(void **pp, unsigned long a, unsigned long n)\n"
	"{ if (a > 4096) { *pp = je_aligned_alloc(a / 2, n); return 0; }\n"
	"  *pp = bump(n); return 0; }\n"
	"void *je_aligned_alloc(unsigned long a, unsigned long n)\n"
	"{ void *p; if (a > 8192) { je_posix_memalign(&p, a, n); return p; }\n"
	"  return bump(n + 2); }\n"
	"void *_rjem_malloc(unsigned long n) { return bump(n + 3); }\n"
	"void *_rjem_mallocx(unsigned long n, int f) { return _rjem_malloc(n + f); }\n"
	"void *_Znwm(unsigned long n) { return malloc(n); }\n"
	"void *_Znam(unsigned long n) { return _Znwm(n + 1); }\n";

static bool build_synthetic(const char *dir, const char *name, const char *flags, char *path,
			    size_t len)
{
	char source[512], cmd[2048];
	FILE *f;

	snprintf(source, sizeof(source), "%s/synthetic.c", dir);
	f = fopen(source, "w");
	if (!f)
		return false;
	fputs(synthetic_source, f);
	fclose(f);
	snprintf(path, len, "%s/%s", dir, name);
	snprintf(cmd, sizeof(cmd), "${CC:-cc} -O1 -fPIC -shared %s -o %s %s", flags, path, source);
	return system(cmd) == 0;
}

static void check_synthetic(const char *path)
{
	struct found found;

	if (!examine_file(path, &found))
		return;
	/* Prefix detection: both jemalloc prefixes, and an operator new; no malloc here. */
	CHECK_EQ_U64(found.set.count, 3);
	check_id(&found, 0, ALLOCATOR_JEMALLOC, "je_", false);
	check_id(&found, 1, ALLOCATOR_JEMALLOC, "_rjem_", false);
	check_id(&found, 2, ALLOCATOR_CXX_NEW, "", false);
	check_one_probe_per_address(&found);
	check_probed(&found, "je_malloc", ALLOC_ENTRY_MALLOC);
	check_probed(&found, "je_mallocx", ALLOC_ENTRY_MALLOC);
	check_probed(&found, "je_calloc", ALLOC_ENTRY_CALLOC);
	/* Calls je_malloc only for NULL: kept, NULL left to je_malloc. */
	check_probed(&found, "je_realloc", ALLOC_ENTRY_REALLOC);
	check_unprobed(&found, "je_rallocx", "je_realloc");
	/* Calling each other, with no way out to another entry point: both kept. */
	check_probed(&found, "je_posix_memalign", ALLOC_ENTRY_POSIX_MEMALIGN);
	check_probed(&found, "je_aligned_alloc", ALLOC_ENTRY_MEMALIGN);
	check_probed(&found, "_rjem_malloc", ALLOC_ENTRY_MALLOC);
	check_unprobed(&found, "_rjem_mallocx", "_rjem_malloc");
	check_unprobed(&found, "_Znwm", "malloc in another file");
	check_unprobed(&found, "_Znam", "malloc in another file");
	CHECK_EQ_U64(probed_count(&found), 7);
}

static void synthetic_calls_through_plt_and_got(void)
{
	char dir[] = "/tmp/allocscope-test-allocators-XXXXXX", path[600], cmd[700];

	if (!mkdtemp(dir)) {
		CHECK(!"mkdtemp");
		return;
	}
	/* Calls between exported functions of a -fPIC object go through the PLT... */
	if (build_synthetic(dir, "libplt.so", "", path, sizeof(path)))
		check_synthetic(path);
	else
		CHECK(!"cc builds the synthetic library");
	/* ... or, with -fno-plt, through `call/jmp *slot(%rip)`. */
	if (build_synthetic(dir, "libgot.so", "-fno-plt", path, sizeof(path)))
		check_synthetic(path);
	else
		CHECK(!"cc builds the synthetic library with -fno-plt");
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK(system(cmd) == 0);
}

/* ---- the rule alone ---- */

static void decide(struct entry_calls *calls, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		calls[i].probed = false;
		calls[i].counted_by = -2;
	}
	allocators__decide(calls, n);
}

#define BIT(j) (1ull << (j))

static void rule_wrappers_and_chains(void)
{
	/* 0 -> 1 -> 2: only 2 allocates; 3 calls nothing. */
	struct entry_calls calls[] = {
		{ .entry = ALLOC_ENTRY_VALLOC, .callees = BIT(1) },
		{ .entry = ALLOC_ENTRY_MEMALIGN, .callees = BIT(2) },
		{ .entry = ALLOC_ENTRY_MALLOC },
		{ .entry = ALLOC_ENTRY_CALLOC },
	};

	decide(calls, 4);
	CHECK(!calls[0].probed);
	CHECK_EQ_U64(calls[0].counted_by, 2); /* the probed one down the chain */
	CHECK(!calls[1].probed);
	CHECK_EQ_U64(calls[1].counted_by, 2);
	CHECK(calls[2].probed);
	CHECK(calls[3].probed);
}

static void rule_cycles(void)
{
	/* 0 <-> 1, nothing else: both kept. 2 <-> 3 with 3 -> 4: 2 and 3 reach 4, which does
	 * not reach back: left to 4. A function calling itself is not a wrapper. */
	struct entry_calls calls[] = {
		{ .entry = ALLOC_ENTRY_MEMALIGN, .callees = BIT(1) },
		{ .entry = ALLOC_ENTRY_POSIX_MEMALIGN, .callees = BIT(0) },
		{ .entry = ALLOC_ENTRY_VALLOC, .callees = BIT(3) },
		{ .entry = ALLOC_ENTRY_PVALLOC, .callees = BIT(2) | BIT(4) },
		{ .entry = ALLOC_ENTRY_MALLOC, .callees = BIT(4) },
	};

	decide(calls, 5);
	CHECK(calls[0].probed);
	CHECK(calls[1].probed);
	CHECK(!calls[2].probed);
	CHECK_EQ_U64(calls[2].counted_by, 4);
	CHECK(!calls[3].probed);
	CHECK_EQ_U64(calls[3].counted_by, 4);
	CHECK(calls[4].probed);
}

static void rule_realloc(void)
{
	/* 0 calls malloc (1) for NULL: kept, NULL skipped. 2 calls nothing: NULL counted at
	 * realloc. 3 calls malloc of another file: like 0. 4 wraps realloc 2: left to it. 5
	 * calls malloc and calloc: left to calloc. */
	struct entry_calls calls[] = {
		{ .entry = ALLOC_ENTRY_REALLOC_ANY, .callees = BIT(1) },
		{ .entry = ALLOC_ENTRY_MALLOC },
		{ .entry = ALLOC_ENTRY_REALLOC_ANY },
		{ .entry = ALLOC_ENTRY_REALLOC_ANY, .external = 1u << ALLOC_ENTRY_MALLOC },
		{ .entry = ALLOC_ENTRY_REALLOC_ANY, .callees = BIT(2) },
		{ .entry = ALLOC_ENTRY_REALLOC_ANY, .callees = BIT(1) | BIT(6) },
		{ .entry = ALLOC_ENTRY_CALLOC },
	};

	decide(calls, 7);
	CHECK(calls[0].probed);
	CHECK_EQ_U64(calls[0].entry, ALLOC_ENTRY_REALLOC);
	CHECK(calls[2].probed);
	CHECK_EQ_U64(calls[2].entry, ALLOC_ENTRY_REALLOC_ANY);
	CHECK(calls[3].probed);
	CHECK_EQ_U64(calls[3].entry, ALLOC_ENTRY_REALLOC);
	CHECK(!calls[4].probed);
	CHECK_EQ_U64(calls[4].counted_by, 2);
	CHECK(!calls[5].probed);
	CHECK_EQ_U64(calls[5].counted_by, 6);
	CHECK(calls[6].probed);
}

/* An aligned entry that relays small alignments to malloc stays probed even when its body
 * jumps to malloc (a glibc whose _mid_memalign is inlined): the program skips what it relays. */
static void rule_relayed_alignment(void)
{
	struct entry_calls calls[] = {
		{ .entry = ALLOC_ENTRY_MEMALIGN, .callees = BIT(1), .relayed_alignment = 16 },
		{ .entry = ALLOC_ENTRY_MALLOC },
		{ .entry = ALLOC_ENTRY_POSIX_MEMALIGN, .external = 1u << ALLOC_ENTRY_MALLOC,
		  .relayed_alignment = 16 },
		{ .entry = ALLOC_ENTRY_VALLOC, .callees = BIT(1) },
	};

	decide(calls, 4);
	CHECK(calls[0].probed);
	CHECK(calls[1].probed);
	CHECK(calls[2].probed);
	CHECK(!calls[3].probed); /* no relay declared: a plain wrapper */
	CHECK_EQ_U64(calls[3].counted_by, 1);
}

static void rule_other_files(void)
{
	/* 0 calls aligned_alloc of another file: left to it (-1). 1 wraps 0. A malloc calling
	 * malloc elsewhere (an interposing shim) is left to it too. */
	struct entry_calls calls[] = {
		{ .entry = ALLOC_ENTRY_NEW, .external = 1u << ALLOC_ENTRY_MEMALIGN },
		{ .entry = ALLOC_ENTRY_NEW, .callees = BIT(0) },
		{ .entry = ALLOC_ENTRY_MALLOC, .external = 1u << ALLOC_ENTRY_MALLOC },
	};

	decide(calls, 3);
	CHECK(!calls[0].probed);
	CHECK_EQ_U64(calls[0].counted_by, (uint64_t)-1);
	CHECK(!calls[1].probed);
	CHECK_EQ_U64(calls[1].counted_by, 0);
	CHECK(!calls[2].probed);
}

static void names(void)
{
	struct allocator_id id = { .family = ALLOCATOR_JEMALLOC, .prefix = "_rjem_" };
	char buf[64];

	allocator_id__describe(&id, buf, sizeof(buf));
	CHECK_STR(buf, "jemalloc (_rjem_ prefix)");
	id.prefix[0] = '\0';
	allocator_id__describe(&id, buf, sizeof(buf));
	CHECK_STR(buf, "jemalloc");
	CHECK_STR(alloc_entry_name(ALLOC_ENTRY_NEW), "operator new");
	CHECK_STR(alloc_entry_name(ALLOC_ENTRY_REALLOC_ANY), "realloc");
	CHECK_STR(alloc_entry_name(ALLOC_ENTRY__COUNT), "unknown");
	for (int e = 0; e < ALLOC_ENTRY__COUNT; e++)
		CHECK(strcmp(alloc_entry_name((enum alloc_entry)e), "unknown") != 0);
}

/* Placement protects what alloc_multi reads per kind, and only that. */
static void read_registers(void)
{
	const uint16_t rdi = X86_REG_BIT(X86_RDI), rsi = X86_REG_BIT(X86_RSI);

	CHECK_EQ_U64(alloc_entry_read_regs(ALLOC_ENTRY_MALLOC), rdi);
	CHECK_EQ_U64(alloc_entry_read_regs(ALLOC_ENTRY_NEW), rdi);
	CHECK_EQ_U64(alloc_entry_read_regs(ALLOC_ENTRY_VALLOC), rdi);
	CHECK_EQ_U64(alloc_entry_read_regs(ALLOC_ENTRY_PVALLOC), rdi);
	/* Aligned entries: the alignment too, which decides whether malloc counts the call. */
	CHECK_EQ_U64(alloc_entry_read_regs(ALLOC_ENTRY_MEMALIGN), rdi | rsi);
	/* posix_memalign: memptr too, where in-use reads the pointer at the return. */
	CHECK_EQ_U64(alloc_entry_read_regs(ALLOC_ENTRY_POSIX_MEMALIGN),
		     rdi | rsi | X86_REG_BIT(X86_RDX));
	CHECK_EQ_U64(alloc_entry_read_regs(ALLOC_ENTRY_CALLOC), rdi | rsi);
	CHECK_EQ_U64(alloc_entry_read_regs(ALLOC_ENTRY_REALLOC), rdi | rsi);
	CHECK_EQ_U64(alloc_entry_read_regs(ALLOC_ENTRY_REALLOC_ANY), rdi | rsi);
	CHECK_EQ_U64(alloc_entry_read_regs((enum alloc_entry)99), PROBE_PLACEMENT_ARG_REGS);
}

int main(void)
{
	RUN(glibc);
	RUN(jemalloc);
	RUN(tcmalloc);
	RUN(tcmalloc_full);
	RUN(mimalloc);
	RUN(libstdcxx_new_is_left_to_malloc);
	RUN(files_without_or_with_unknown_allocators);
	RUN(synthetic_calls_through_plt_and_got);
	RUN(rule_wrappers_and_chains);
	RUN(rule_cycles);
	RUN(rule_realloc);
	RUN(rule_relayed_alignment);
	RUN(rule_other_files);
	RUN(names);
	RUN(read_registers);
	return unit_summary("allocators");
}
