/* Allocator recognition and entry points, per ELF file.
 *
 * Recognition is by symbols each allocator defines and no other does: jemalloc's mallocx,
 * tcmalloc's tc_malloc and mimalloc's mi_malloc at malloc's address, glibc's __libc_malloc
 * (which tcmalloc and mimalloc export too, hence the order). Prefixed jemalloc builds are
 * found by je_mallocx and _rjem_mallocx (Rust's tikv-jemallocator).
 *
 * Entry points: each allocator's table of names below, looked up in .dynsym/.symtab, merged by
 * address. Never probed: functions that only ask (nallocx, malloc_usable_size), and
 * strdup-like helpers. Free and its relatives only for in-use profiles on the transparent path
 * (allocators__find_free_points), which must see the frees of the pointers they sampled.
 *
 * Double counting is ruled out by reading code: every entry point's body is decoded, and its
 * direct calls and jumps are resolved to addresses of other entry points, through PLT stubs
 * and GOT slots to names. A wrapper (mimalloc's memalign jumps to mi_malloc_aligned;
 * libstdc++'s operator new calls malloc@plt) is left unprobed; a realloc that calls malloc is
 * kept, its realloc(NULL, n) counted by malloc.
 *
 * Some paths to another entry point depend on an argument, and decoding does not see them
 * (they go through local helpers). Known from reading each allocator's code, per family:
 * glibc's memalign, aligned_alloc and posix_memalign call _mid_memalign, which for an
 * alignment <= MALLOC_ALIGNMENT (16 on x86-64) returns __libc_malloc(size), malloc's probed
 * address; valloc and pvalloc pass the page size and never relay; calloc allocates with
 * _int_malloc. Such an aligned entry stays probed with that alignment in its attach cookie,
 * and the BPF program skips the calls malloc counts. jemalloc's and tcmalloc's aligned entries
 * allocate in their own bodies (tcmalloc's posix_memalign, valloc and pvalloc call
 * tc_memalign, which decoding sees), mimalloc's jump to mi_malloc_aligned: none relay. */
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "allocators.h"
#include "attach/x86_decode.h"
#include "util/log.h"
#include "symbolize/elf_file.h"
#include "elf/mapped_elf.h"

/* Placement and the call scan decode the whole function; a symbol larger than this is probed
 * at its entry and not scanned. */
#define MAX_ENTRY_CODE_BYTES (1u << 20)

static const char *const entry_names[ALLOC_ENTRY__COUNT] = {
	[ALLOC_ENTRY_MALLOC] = "malloc",
	[ALLOC_ENTRY_CALLOC] = "calloc",
	[ALLOC_ENTRY_REALLOC] = "realloc",
	[ALLOC_ENTRY_MEMALIGN] = "memalign",
	[ALLOC_ENTRY_POSIX_MEMALIGN] = "posix_memalign",
	[ALLOC_ENTRY_VALLOC] = "valloc",
	[ALLOC_ENTRY_PVALLOC] = "pvalloc",
	[ALLOC_ENTRY_NEW] = "operator new",
	[ALLOC_ENTRY_REALLOC_ANY] = "realloc",
	[ALLOC_ENTRY_USDT_ALLOC] = "otel_memory:alloc",
};

struct entry_symbol {
	const char *name;
	enum alloc_entry entry; /* realloc layouts are given as ALLOC_ENTRY_REALLOC_ANY */
};

/* glibc's MALLOC_ALIGNMENT on x86-64 (2 * sizeof(size_t), and alignof(long double)). */
#define GLIBC_MALLOC_ALIGNMENT 16

/* The largest alignment an entry point of this family and kind hands to its own malloc (see
 * the top of this file), or 0. */
static uint32_t relayed_alignment_of(enum allocator_family family, enum alloc_entry entry)
{
	if (family == ALLOCATOR_GLIBC &&
	    (entry == ALLOC_ENTRY_MEMALIGN || entry == ALLOC_ENTRY_POSIX_MEMALIGN))
		return GLIBC_MALLOC_ALIGNMENT;
	return 0;
}

/* The C standard's functions and their GNU relatives: glibc, and what an allocator that owns
 * malloc overrides. Also the names whose PLT call from another file reaches the process's
 * probed malloc. */
static const struct entry_symbol standard_symbols[] = {
	{ "malloc", ALLOC_ENTRY_MALLOC },
	{ "calloc", ALLOC_ENTRY_CALLOC },
	{ "realloc", ALLOC_ENTRY_REALLOC_ANY },
	{ "memalign", ALLOC_ENTRY_MEMALIGN },
	{ "aligned_alloc", ALLOC_ENTRY_MEMALIGN },
	{ "posix_memalign", ALLOC_ENTRY_POSIX_MEMALIGN },
	{ "valloc", ALLOC_ENTRY_VALLOC },
	{ "pvalloc", ALLOC_ENTRY_PVALLOC },
};

/* Every replaceable global operator new (size first in all of them). */
static const struct entry_symbol new_symbols[] = {
	{ "_Znwm", ALLOC_ENTRY_NEW },
	{ "_Znam", ALLOC_ENTRY_NEW },
	{ "_ZnwmRKSt9nothrow_t", ALLOC_ENTRY_NEW },
	{ "_ZnamRKSt9nothrow_t", ALLOC_ENTRY_NEW },
	{ "_ZnwmSt11align_val_t", ALLOC_ENTRY_NEW },
	{ "_ZnamSt11align_val_t", ALLOC_ENTRY_NEW },
	{ "_ZnwmSt11align_val_tRKSt9nothrow_t", ALLOC_ENTRY_NEW },
	{ "_ZnamSt11align_val_tRKSt9nothrow_t", ALLOC_ENTRY_NEW },
};

/* jemalloc's public API, after its prefix. rallocx (ptr, size, flags) and xallocx (ptr,
 * size, extra, flags) resize: the size they ask for counts, as for realloc. */
static const struct entry_symbol jemalloc_symbols[] = {
	{ "malloc", ALLOC_ENTRY_MALLOC },
	{ "calloc", ALLOC_ENTRY_CALLOC },
	{ "realloc", ALLOC_ENTRY_REALLOC_ANY },
	{ "memalign", ALLOC_ENTRY_MEMALIGN },
	{ "aligned_alloc", ALLOC_ENTRY_MEMALIGN },
	{ "posix_memalign", ALLOC_ENTRY_POSIX_MEMALIGN },
	{ "valloc", ALLOC_ENTRY_VALLOC },
	{ "pvalloc", ALLOC_ENTRY_PVALLOC },
	{ "mallocx", ALLOC_ENTRY_MALLOC },
	{ "rallocx", ALLOC_ENTRY_REALLOC_ANY },
	{ "xallocx", ALLOC_ENTRY_REALLOC_ANY },
};

/* gperftools' own names; the standard ones and operator new are aliases of these. */
static const struct entry_symbol tcmalloc_symbols[] = {
	{ "tc_malloc", ALLOC_ENTRY_MALLOC },
	{ "tc_calloc", ALLOC_ENTRY_CALLOC },
	{ "tc_realloc", ALLOC_ENTRY_REALLOC_ANY },
	{ "tc_memalign", ALLOC_ENTRY_MEMALIGN },
	{ "tc_posix_memalign", ALLOC_ENTRY_POSIX_MEMALIGN },
	{ "tc_valloc", ALLOC_ENTRY_VALLOC },
	{ "tc_pvalloc", ALLOC_ENTRY_PVALLOC },
	{ "tc_malloc_skip_new_handler", ALLOC_ENTRY_MALLOC },
	{ "tc_new", ALLOC_ENTRY_NEW },
	{ "tc_newarray", ALLOC_ENTRY_NEW },
	{ "tc_new_nothrow", ALLOC_ENTRY_NEW },
	{ "tc_newarray_nothrow", ALLOC_ENTRY_NEW },
	{ "tc_new_aligned", ALLOC_ENTRY_NEW },
	{ "tc_newarray_aligned", ALLOC_ENTRY_NEW },
	{ "tc_new_aligned_nothrow", ALLOC_ENTRY_NEW },
	{ "tc_newarray_aligned_nothrow", ALLOC_ENTRY_NEW },
};

/* mimalloc's own API (not the mi_heap_* one, whose functions the ones here call through
 * functions this scan does not follow). mi_malloc_aligned (size, alignment) has the size
 * first; mi_mallocn and mi_new_n (count, size) are laid out as calloc. */
static const struct entry_symbol mimalloc_symbols[] = {
	{ "mi_malloc", ALLOC_ENTRY_MALLOC },
	{ "mi_calloc", ALLOC_ENTRY_CALLOC },
	{ "mi_realloc", ALLOC_ENTRY_REALLOC_ANY },
	{ "mi_zalloc", ALLOC_ENTRY_MALLOC },
	{ "mi_malloc_small", ALLOC_ENTRY_MALLOC },
	{ "mi_zalloc_small", ALLOC_ENTRY_MALLOC },
	{ "mi_mallocn", ALLOC_ENTRY_CALLOC },
	{ "mi_rezalloc", ALLOC_ENTRY_REALLOC_ANY },
	{ "mi_malloc_aligned", ALLOC_ENTRY_MALLOC },
	{ "mi_zalloc_aligned", ALLOC_ENTRY_MALLOC },
	{ "mi_calloc_aligned", ALLOC_ENTRY_CALLOC },
	{ "mi_realloc_aligned", ALLOC_ENTRY_REALLOC_ANY },
	{ "mi_memalign", ALLOC_ENTRY_MEMALIGN },
	{ "mi_aligned_alloc", ALLOC_ENTRY_MEMALIGN },
	{ "mi_posix_memalign", ALLOC_ENTRY_POSIX_MEMALIGN },
	{ "mi_valloc", ALLOC_ENTRY_VALLOC },
	{ "mi_pvalloc", ALLOC_ENTRY_PVALLOC },
	{ "mi_new", ALLOC_ENTRY_NEW },
	{ "mi_new_nothrow", ALLOC_ENTRY_NEW },
	{ "mi_new_aligned", ALLOC_ENTRY_NEW },
	{ "mi_new_aligned_nothrow", ALLOC_ENTRY_NEW },
	{ "mi_new_n", ALLOC_ENTRY_CALLOC },
	{ "mi_new_realloc", ALLOC_ENTRY_REALLOC_ANY },
};

/* ---- frees (in-use on the transparent path): the pointer is the first argument of each ---- */

static const struct entry_symbol standard_free_symbols[] = {
	{ "free", ALLOC_ENTRY_MALLOC },
	{ "cfree", ALLOC_ENTRY_MALLOC },
	{ "free_sized", ALLOC_ENTRY_MALLOC },
	{ "free_aligned_sized", ALLOC_ENTRY_MALLOC },
};

/* Every replaceable global operator delete: plain, sized, aligned, nothrow. Probed only where
 * an allocator defines its own (libstdc++'s call free, probed in the malloc's file). */
static const struct entry_symbol delete_symbols[] = {
	{ "_ZdlPv", ALLOC_ENTRY_MALLOC },
	{ "_ZdaPv", ALLOC_ENTRY_MALLOC },
	{ "_ZdlPvm", ALLOC_ENTRY_MALLOC },
	{ "_ZdaPvm", ALLOC_ENTRY_MALLOC },
	{ "_ZdlPvRKSt9nothrow_t", ALLOC_ENTRY_MALLOC },
	{ "_ZdaPvRKSt9nothrow_t", ALLOC_ENTRY_MALLOC },
	{ "_ZdlPvSt11align_val_t", ALLOC_ENTRY_MALLOC },
	{ "_ZdaPvSt11align_val_t", ALLOC_ENTRY_MALLOC },
	{ "_ZdlPvmSt11align_val_t", ALLOC_ENTRY_MALLOC },
	{ "_ZdaPvmSt11align_val_t", ALLOC_ENTRY_MALLOC },
	{ "_ZdlPvSt11align_val_tRKSt9nothrow_t", ALLOC_ENTRY_MALLOC },
	{ "_ZdaPvSt11align_val_tRKSt9nothrow_t", ALLOC_ENTRY_MALLOC },
};

static const struct entry_symbol jemalloc_free_symbols[] = {
	{ "free", ALLOC_ENTRY_MALLOC },
	{ "dallocx", ALLOC_ENTRY_MALLOC },
	{ "sdallocx", ALLOC_ENTRY_MALLOC },
	{ "free_sized", ALLOC_ENTRY_MALLOC },
	{ "free_aligned_sized", ALLOC_ENTRY_MALLOC },
};

static const struct entry_symbol tcmalloc_free_symbols[] = {
	{ "tc_free", ALLOC_ENTRY_MALLOC },
	{ "tc_cfree", ALLOC_ENTRY_MALLOC },
	{ "tc_free_sized", ALLOC_ENTRY_MALLOC },
	{ "tc_delete", ALLOC_ENTRY_MALLOC },
	{ "tc_deletearray", ALLOC_ENTRY_MALLOC },
	{ "tc_delete_nothrow", ALLOC_ENTRY_MALLOC },
	{ "tc_deletearray_nothrow", ALLOC_ENTRY_MALLOC },
	{ "tc_delete_sized", ALLOC_ENTRY_MALLOC },
	{ "tc_deletearray_sized", ALLOC_ENTRY_MALLOC },
	{ "tc_delete_aligned", ALLOC_ENTRY_MALLOC },
	{ "tc_deletearray_aligned", ALLOC_ENTRY_MALLOC },
	{ "tc_delete_sized_aligned", ALLOC_ENTRY_MALLOC },
	{ "tc_deletearray_sized_aligned", ALLOC_ENTRY_MALLOC },
	{ "tc_delete_aligned_nothrow", ALLOC_ENTRY_MALLOC },
	{ "tc_deletearray_aligned_nothrow", ALLOC_ENTRY_MALLOC },
};

static const struct entry_symbol mimalloc_free_symbols[] = {
	{ "mi_free", ALLOC_ENTRY_MALLOC },
	{ "mi_cfree", ALLOC_ENTRY_MALLOC },
	{ "mi_free_size", ALLOC_ENTRY_MALLOC },
	{ "mi_free_aligned", ALLOC_ENTRY_MALLOC },
	{ "mi_free_size_aligned", ALLOC_ENTRY_MALLOC },
};

/* Which names an allocator answers to: its own (after its prefix), and, when it owns malloc,
 * the standard ones and operator new it overrides. Overrides come first so that aliases read
 * "malloc/tc_malloc". */
struct name_table {
	const struct entry_symbol *symbols;
	size_t count;
	bool prefixed;
};

#define MAX_TABLES 3

/* An allocator family's entry points and its frees, side by side: one list of which families
 * a file's allocator is made of serves both. */
struct table_pair {
	struct name_table alloc, free;
};

#define TABLE(t, with_prefix) { t, sizeof(t) / sizeof(t[0]), with_prefix }
static const struct table_pair standard_tables = { TABLE(standard_symbols, false),
						   TABLE(standard_free_symbols, false) };
static const struct table_pair cxx_tables = { TABLE(new_symbols, false),
					      TABLE(delete_symbols, false) };
static const struct table_pair jemalloc_tables = { TABLE(jemalloc_symbols, true),
						   TABLE(jemalloc_free_symbols, true) };
static const struct table_pair tcmalloc_tables = { TABLE(tcmalloc_symbols, false),
						   TABLE(tcmalloc_free_symbols, false) };
static const struct table_pair mimalloc_tables = { TABLE(mimalloc_symbols, false),
						   TABLE(mimalloc_free_symbols, false) };
#undef TABLE

/* The name tables of id's entry points (frees false) or of its frees (frees true). */
static size_t tables_of(const struct allocator_id *id, bool frees, struct name_table *out)
{
	const struct table_pair *pairs[MAX_TABLES];
	size_t n = 0;

	switch (id->family) {
	case ALLOCATOR_GLIBC:
		pairs[n++] = &standard_tables;
		break;
	case ALLOCATOR_JEMALLOC:
		/* Its own operator new (jemalloc_cpp) exists only in unprefixed C++ builds. */
		if (id->owns_malloc)
			pairs[n++] = &cxx_tables;
		pairs[n++] = &jemalloc_tables;
		break;
	case ALLOCATOR_TCMALLOC:
	case ALLOCATOR_MIMALLOC:
		if (id->owns_malloc) {
			pairs[n++] = &standard_tables;
			pairs[n++] = &cxx_tables;
		}
		pairs[n++] = id->family == ALLOCATOR_TCMALLOC ? &tcmalloc_tables : &mimalloc_tables;
		break;
	case ALLOCATOR_CXX_NEW:
		/* libstdc++'s operator new calls malloc; its delete calls free, probed there. */
		if (!frees)
			pairs[n++] = &cxx_tables;
		break;
	case ALLOCATOR_UNRECOGNIZED:
		break;
	}
	for (size_t i = 0; i < n; i++)
		out[i] = frees ? pairs[i]->free : pairs[i]->alloc;
	return n;
}

const char *alloc_entry_name(enum alloc_entry entry)
{
	if ((unsigned)entry >= ALLOC_ENTRY__COUNT)
		return "unknown";
	return entry_names[entry];
}

uint64_t entry_point__cookie(const struct entry_point *point)
{
	uint64_t relay = point->relayed_alignment;

	if (relay > ALLOC_COOKIE_RELAY_MAX)
		relay = ALLOC_COOKIE_RELAY_MAX;
	return (uint64_t)point->entry | relay << ALLOC_COOKIE_RELAY_SHIFT;
}

uint16_t alloc_entry_read_regs(enum alloc_entry entry)
{
	const uint16_t rdi = X86_REG_BIT(X86_RDI), rsi = X86_REG_BIT(X86_RSI);

	switch (entry) {
	case ALLOC_ENTRY_MALLOC:
	case ALLOC_ENTRY_VALLOC:
	case ALLOC_ENTRY_PVALLOC:
	case ALLOC_ENTRY_NEW:
		return rdi;
	case ALLOC_ENTRY_MEMALIGN:
		/* The alignment too: it decides whether the call is malloc's to count. */
		return rdi | rsi;
	case ALLOC_ENTRY_POSIX_MEMALIGN:
		/* memptr too: in-use reads the pointer from it at the return. */
		return rdi | rsi | X86_REG_BIT(X86_RDX);
	case ALLOC_ENTRY_CALLOC:
		return rdi | rsi;
	case ALLOC_ENTRY_REALLOC:
	case ALLOC_ENTRY_REALLOC_ANY:
		/* The pointer decides whether the call allocates, in either layout. */
		return rdi | rsi;
	default:
		/* Not a function entry whose layout is known here: assume any argument. */
		return PROBE_PLACEMENT_ARG_REGS;
	}
}

const char *allocator_family_name(enum allocator_family family)
{
	switch (family) {
	case ALLOCATOR_GLIBC:
		return "glibc";
	case ALLOCATOR_JEMALLOC:
		return "jemalloc";
	case ALLOCATOR_TCMALLOC:
		return "tcmalloc";
	case ALLOCATOR_MIMALLOC:
		return "mimalloc";
	case ALLOCATOR_CXX_NEW:
		return "operator new";
	case ALLOCATOR_UNRECOGNIZED:
		break;
	}
	return "an unrecognized allocator";
}

void allocator_id__describe(const struct allocator_id *id, char *buf, size_t len)
{
	if (id->prefix[0])
		snprintf(buf, len, "%s (%s prefix)", allocator_family_name(id->family), id->prefix);
	else
		snprintf(buf, len, "%s", allocator_family_name(id->family));
}

/* ---- recognition ------------------------------------------------------------------------ */

static bool defines(struct elf_file *f, const char *name, struct elf_symbol *sym)
{
	struct elf_symbol unused;

	return elf_file__find_function(f, name, sym ? sym : &unused) == 0;
}

static bool defined_at(struct elf_file *f, const char *name, uint64_t vaddr)
{
	struct elf_symbol sym;

	return defines(f, name, &sym) && sym.vaddr == vaddr;
}

static void add_id(struct file_allocators *out, enum allocator_family family, const char *prefix,
		   bool owns_malloc)
{
	struct allocator_id *id;

	if (out->count == ALLOCATORS_MAX_PER_FILE)
		return;
	id = &out->ids[out->count++];
	id->family = family;
	snprintf(id->prefix, sizeof(id->prefix), "%s", prefix);
	id->owns_malloc = owns_malloc;
}

void allocators__identify_file(struct elf_file *f, struct file_allocators *out)
{
	static const char *const jemalloc_prefixes[] = { "je_", "_rjem_" };
	enum allocator_family owner = ALLOCATOR_UNRECOGNIZED;
	struct elf_symbol malloc_sym;
	bool has_malloc;

	memset(out, 0, sizeof(*out));
	has_malloc = defines(f, "malloc", &malloc_sym);
	if (has_malloc) {
		if (defines(f, "mallocx", NULL))
			owner = ALLOCATOR_JEMALLOC;
		else if (defined_at(f, "tc_malloc", malloc_sym.vaddr))
			owner = ALLOCATOR_TCMALLOC;
		else if (defined_at(f, "mi_malloc", malloc_sym.vaddr))
			owner = ALLOCATOR_MIMALLOC;
		else if (defined_at(f, "__libc_malloc", malloc_sym.vaddr))
			owner = ALLOCATOR_GLIBC;
		add_id(out, owner, "", true);
	}
	for (size_t i = 0; i < sizeof(jemalloc_prefixes) / sizeof(jemalloc_prefixes[0]); i++) {
		char name[64];

		snprintf(name, sizeof(name), "%smallocx", jemalloc_prefixes[i]);
		if (defines(f, name, NULL))
			add_id(out, ALLOCATOR_JEMALLOC, jemalloc_prefixes[i], false);
	}
	/* Built without overriding malloc: only their own API allocates through them. */
	if ((!has_malloc || owner != ALLOCATOR_TCMALLOC) && defines(f, "tc_malloc", NULL))
		add_id(out, ALLOCATOR_TCMALLOC, "", false);
	if ((!has_malloc || owner != ALLOCATOR_MIMALLOC) && defines(f, "mi_malloc", NULL))
		add_id(out, ALLOCATOR_MIMALLOC, "", false);
	/* An operator new that is not an allocator's own: libstdc++'s, or one linked into an
	 * executable. Most call malloc and end up unprobed; see allocators__decide. */
	if (!(has_malloc && (owner == ALLOCATOR_JEMALLOC || owner == ALLOCATOR_TCMALLOC ||
			     owner == ALLOCATOR_MIMALLOC)) &&
	    defines(f, "_Znwm", NULL))
		add_id(out, ALLOCATOR_CXX_NEW, "", false);
}

const struct allocator_id *file_allocators__malloc_owner(const struct file_allocators *set)
{
	for (size_t i = 0; i < set->count; i++)
		if (set->ids[i].owns_malloc)
			return &set->ids[i];
	return NULL;
}

/* ---- PLT and GOT names ------------------------------------------------------------------ */

/* GOT slots that the dynamic linker fills with a named symbol's address (JUMP_SLOT, GLOB_DAT):
 * what a PLT stub or a -fno-plt `call *slot(%rip)` reaches. */
struct got_slot {
	uint64_t vaddr;
	char *name;
};

struct got_names {
	struct got_slot *slots;
	size_t count;
	bool loaded;
};

static int compare_slots(const void *a, const void *b)
{
	const struct got_slot *x = a, *y = b;

	return x->vaddr < y->vaddr ? -1 : x->vaddr > y->vaddr;
}

static void got_names_free(struct got_names *g)
{
	for (size_t i = 0; i < g->count; i++)
		free(g->slots[i].name);
	free(g->slots);
	memset(g, 0, sizeof(*g));
}

static int add_rela_section(Elf *elf, Elf_Scn *scn, const GElf_Shdr *shdr, struct got_names *g)
{
	Elf_Scn *sym_scn = elf_getscn(elf, shdr->sh_link);
	Elf_Data *data = elf_getdata(scn, NULL), *sym_data;
	GElf_Shdr sym_shdr;
	size_t n;

	if (!data || !sym_scn || !gelf_getshdr(sym_scn, &sym_shdr))
		return 0;
	sym_data = elf_getdata(sym_scn, NULL);
	if (!sym_data || shdr->sh_entsize == 0)
		return 0;
	n = shdr->sh_size / shdr->sh_entsize;
	for (size_t i = 0; i < n; i++) {
		struct got_slot *grown;
		const char *name;
		GElf_Rela rela;
		GElf_Sym sym;
		unsigned long type;

		if (!gelf_getrela(data, (int)i, &rela))
			break;
		type = GELF_R_TYPE(rela.r_info);
		if (type != R_X86_64_JUMP_SLOT && type != R_X86_64_GLOB_DAT)
			continue;
		if (!gelf_getsym(sym_data, (int)GELF_R_SYM(rela.r_info), &sym))
			continue;
		name = elf_strptr(elf, sym_shdr.sh_link, sym.st_name);
		if (!name || !*name)
			continue;
		grown = realloc(g->slots, (g->count + 1) * sizeof(*g->slots));
		if (!grown)
			return -ENOMEM;
		g->slots = grown;
		g->slots[g->count].vaddr = rela.r_offset;
		g->slots[g->count].name = strdup(name);
		if (!g->slots[g->count].name)
			return -ENOMEM;
		g->count++;
	}
	return 0;
}

/* Read once per file, on the first call through a PLT stub or GOT slot, from the mapping the
 * file was parsed from (its path may be gone: a shared file was opened through another
 * process's /proc/PID/root). */
static int got_names_load(const struct elf_file *f, struct got_names *g)
{
	Elf *elf = mapped_elf__elf(elf_file__mapped(f));
	Elf_Scn *scn = NULL;
	int ret = 0;

	g->loaded = true;
	while (ret == 0 && (scn = elf_nextscn(elf, scn)) != NULL) {
		GElf_Shdr shdr;

		if (gelf_getshdr(scn, &shdr) && shdr.sh_type == SHT_RELA)
			ret = add_rela_section(elf, scn, &shdr, g);
	}
	if (g->count)
		qsort(g->slots, g->count, sizeof(*g->slots), compare_slots);
	return ret;
}

static const char *got_name(struct elf_file *f, struct got_names *g, uint64_t slot)
{
	size_t lo = 0, hi;

	if (!g->loaded) {
		int ret = got_names_load(f, g);

		if (ret)
			log_debug("cannot read the relocations of %s: %s", elf_file__path(f),
				  strerror(-ret));
	}
	hi = g->count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (g->slots[mid].vaddr == slot)
			return g->slots[mid].name;
		if (g->slots[mid].vaddr < slot)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int32_t read_s32(const uint8_t *p)
{
	uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
		     (uint32_t)p[3] << 24;

	return (int32_t)v;
}

/* The GOT slot a PLT stub at vaddr jumps through: `jmp *slot(%rip)`, after an endbr64 and/or
 * a bnd prefix (.plt.sec, .plt.got, and a classic .plt entry all start so). */
static bool plt_stub_slot(struct elf_file *f, uint64_t vaddr, uint64_t *slot)
{
	static const uint8_t endbr64[4] = { 0xf3, 0x0f, 0x1e, 0xfa };
	uint8_t code[16];
	size_t pos = 0;

	if (elf_file__read_vaddr(f, vaddr, code, sizeof(code)) != 0)
		return false;
	if (memcmp(code, endbr64, sizeof(endbr64)) == 0)
		pos += 4;
	if (code[pos] == 0xf2) /* bnd */
		pos++;
	if (code[pos] != 0xff || code[pos + 1] != 0x25)
		return false;
	*slot = vaddr + pos + 6 + (int64_t)read_s32(code + pos + 2);
	return true;
}

/* ---- finding entry points --------------------------------------------------------------- */

/* One name an entry point answers to, for resolving PLT calls by name. */
struct known_name {
	char name[64];
	size_t point;
};

struct search {
	struct elf_file *f;
	char external_names[ALLOCATORS_MAX_ENTRY_POINTS][40]; /* first one reached, per point */
	struct entry_point *points;
	size_t max, n;
	struct entry_calls calls[ALLOCATORS_MAX_ENTRY_POINTS];
	struct known_name names[4 * ALLOCATORS_MAX_ENTRY_POINTS];
	size_t n_names;
	struct got_names got;
};

static int find_by_vaddr(const struct search *s, uint64_t vaddr)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->points[i].vaddr == vaddr)
			return (int)i;
	return -1;
}

static int find_by_name(const struct search *s, const char *name)
{
	size_t len = strcspn(name, "@");

	for (size_t i = 0; i < s->n_names; i++)
		if (strlen(s->names[i].name) == len && strncmp(s->names[i].name, name, len) == 0)
			return (int)s->names[i].point;
	return -1;
}

static int add_symbol(struct search *s, const char *name, enum alloc_entry entry,
		      const struct allocator_id *id, const char *allocator)
{
	struct entry_point *point;
	struct elf_symbol sym;
	int found;

	if (find_by_name(s, name) >= 0 || elf_file__find_function(s->f, name, &sym) != 0)
		return 0;
	found = find_by_vaddr(s, sym.vaddr);
	if (found >= 0) {
		/* An alias: one probe serves both names. */
		size_t used = strlen(s->points[found].names);

		snprintf(s->points[found].names + used, sizeof(s->points[found].names) - used,
			 "/%s", name);
	} else {
		if (s->n == s->max || s->n == ALLOCATORS_MAX_ENTRY_POINTS)
			return -E2BIG;
		found = (int)s->n++;
		point = &s->points[found];
		memset(point, 0, sizeof(*point));
		point->entry = entry;
		snprintf(point->names, sizeof(point->names), "%s", name);
		snprintf(point->allocator, sizeof(point->allocator), "%s", allocator);
		point->vaddr = sym.vaddr;
		point->size = sym.size;
		point->file_offset = sym.file_offset;
		point->probed = true;
		point->relayed_alignment = relayed_alignment_of(id->family, entry);
	}
	if (s->n_names < sizeof(s->names) / sizeof(s->names[0])) {
		snprintf(s->names[s->n_names].name, sizeof(s->names[0].name), "%s", name);
		s->names[s->n_names].point = (size_t)found;
		s->n_names++;
	}
	return 0;
}

static int add_table(struct search *s, const struct entry_symbol *table, size_t n,
		     const struct allocator_id *id, const char *prefix, const char *allocator)
{
	for (size_t i = 0; i < n; i++) {
		char name[64];
		int ret;

		snprintf(name, sizeof(name), "%s%s", prefix, table[i].name);
		ret = add_symbol(s, name, table[i].entry, id, allocator);
		if (ret)
			return ret;
	}
	return 0;
}

/* The kind a standard allocation function name has, or -1: what a call through the PLT to a
 * function of another file reaches. */
static int standard_kind(const char *name)
{
	size_t len = strcspn(name, "@");

	for (size_t i = 0; i < sizeof(standard_symbols) / sizeof(standard_symbols[0]); i++)
		if (strlen(standard_symbols[i].name) == len &&
		    strncmp(standard_symbols[i].name, name, len) == 0)
			return (int)standard_symbols[i].entry;
	for (size_t i = 0; i < sizeof(new_symbols) / sizeof(new_symbols[0]); i++)
		if (strlen(new_symbols[i].name) == len &&
		    strncmp(new_symbols[i].name, name, len) == 0)
			return (int)new_symbols[i].entry;
	return -1;
}

/* Records what reaching name (through a PLT stub or GOT slot) means for entry point i. */
static void note_named_callee(struct search *s, size_t i, const char *name)
{
	int j = find_by_name(s, name), kind;

	if (j >= 0) {
		if ((size_t)j != i)
			s->calls[i].callees |= 1ull << j;
		return;
	}
	kind = standard_kind(name);
	if (kind < 0)
		return;
	s->calls[i].external |= 1u << kind;
	/* The report names what the code calls, malloc last: for a realloc, calling malloc is
	 * its realloc(NULL, n) path, not why it is left unprobed. */
	if (!s->external_names[i][0] ||
	    (kind != ALLOC_ENTRY_MALLOC && strcmp(s->external_names[i], "malloc") == 0))
		snprintf(s->external_names[i], sizeof(s->external_names[i]), "%.*s",
			 (int)strcspn(name, "@"), name);
}

static void note_target(struct search *s, size_t i, uint64_t target)
{
	const struct entry_point *point = &s->points[i];
	uint64_t slot;
	int j;

	if (target >= point->vaddr && target < point->vaddr + point->size)
		return; /* a branch inside the function */
	j = find_by_vaddr(s, target);
	if (j >= 0) {
		if ((size_t)j != i)
			s->calls[i].callees |= 1ull << j;
		return;
	}
	if (plt_stub_slot(s->f, target, &slot)) {
		const char *name = got_name(s->f, &s->got, slot);

		if (name)
			note_named_callee(s, i, name);
	}
}

/* Decodes entry point i's body: every relative call or jump that leaves the function, and
 * every `call/jmp *slot(%rip)`, is resolved. A body that cannot be decoded to the end is
 * judged on what was decoded. */
static void scan_calls(struct search *s, size_t i, const uint8_t *code, size_t len)
{
	const struct entry_point *point = &s->points[i];
	struct x86_insn insn;
	size_t pos = 0;

	while (pos < len) {
		int err = x86_decode(code + pos, len - pos, &insn);

		if (err) {
			log_debug("%s in %s: cannot decode past +%zu; calls after it are not seen",
				  point->names, elf_file__path(s->f), pos);
			return;
		}
		if (insn.has_target && (insn.kind == X86_INSN_CALL_REL ||
					insn.kind == X86_INSN_JMP_REL ||
					insn.kind == X86_INSN_JCC_REL))
			note_target(s, i, point->vaddr + pos + (uint64_t)insn.target);
		else if (insn.map == X86_MAP_ONE_BYTE && insn.opcode == 0xff && insn.has_modrm &&
			 (insn.modrm == 0x15 || insn.modrm == 0x25) && insn.length >= 6) {
			/* call/jmp *disp32(%rip): the displacement ends the instruction. */
			uint64_t slot = point->vaddr + pos + insn.length +
					(int64_t)read_s32(code + pos + insn.length - 4);
			const char *name = got_name(s->f, &s->got, slot);

			if (name)
				note_named_callee(s, i, name);
		}
		pos += insn.length;
	}
}

static void examine(struct search *s, size_t i)
{
	struct entry_point *point = &s->points[i];
	bool whole = point->size && point->size <= MAX_ENTRY_CODE_BYTES;
	size_t len = whole ? point->size : 64;
	uint8_t *code = malloc(len);
	int ret = code ? elf_file__read_vaddr(s->f, point->vaddr, code, len) : -ENOMEM;

	if (ret == 0)
		ret = probe_placement_choose(code, len, point->size,
					     alloc_entry_read_regs(point->entry), &point->placement);
	if (ret) {
		log_warn("cannot read the code of %s in %s (%s): probing its entry", point->names,
			 elf_file__path(s->f), strerror(-ret));
		point->placement.offset = 0;
		point->placement.emulated = false;
		snprintf(point->placement.reason, sizeof(point->placement.reason),
			 "code unreadable");
	} else if (whole) {
		scan_calls(s, i, code, len);
	}
	free(code);
}

static bool reaches(const uint64_t *reach, size_t from, size_t to)
{
	return reach[from] >> to & 1;
}

void allocators__decide(struct entry_calls *calls, size_t n)
{
	const uint32_t malloc_bit = 1u << ALLOC_ENTRY_MALLOC;
	uint64_t reach[ALLOCATORS_MAX_ENTRY_POINTS];

	if (n > ALLOCATORS_MAX_ENTRY_POINTS)
		n = ALLOCATORS_MAX_ENTRY_POINTS;
	/* A realloc reaching a malloc does so for realloc(NULL, n): malloc counts that. */
	for (size_t i = 0; i < n; i++) {
		uint64_t to_malloc = 0;

		if (calls[i].entry != ALLOC_ENTRY_REALLOC_ANY &&
		    calls[i].entry != ALLOC_ENTRY_REALLOC)
			continue;
		for (size_t j = 0; j < n; j++)
			if ((calls[i].callees >> j & 1) && calls[j].entry == ALLOC_ENTRY_MALLOC)
				to_malloc |= 1ull << j;
		if (to_malloc || (calls[i].external & malloc_bit))
			calls[i].entry = ALLOC_ENTRY_REALLOC;
		else
			calls[i].entry = ALLOC_ENTRY_REALLOC_ANY;
		calls[i].callees &= ~to_malloc;
		calls[i].external &= ~malloc_bit;
	}
	/* An aligned entry that relays small alignments reaches malloc for those only. */
	for (size_t i = 0; i < n; i++) {
		if (!calls[i].relayed_alignment)
			continue;
		for (size_t j = 0; j < n; j++)
			if (calls[j].entry == ALLOC_ENTRY_MALLOC)
				calls[i].callees &= ~(1ull << j);
		calls[i].external &= ~malloc_bit;
	}
	/* Transitive closure (Warshall) of "calls or jumps to". */
	for (size_t i = 0; i < n; i++)
		reach[i] = calls[i].callees & ~(1ull << i);
	for (size_t k = 0; k < n; k++)
		for (size_t i = 0; i < n; i++)
			if (reach[i] >> k & 1)
				reach[i] |= reach[k];
	for (size_t i = 0; i < n; i++) {
		calls[i].probed = true;
		calls[i].counted_by = -1;
		if (calls[i].external) {
			calls[i].probed = false;
			continue;
		}
		for (size_t j = 0; j < n && calls[i].probed; j++)
			if (j != i && reaches(reach, i, j) && !reaches(reach, j, i))
				calls[i].probed = false;
	}
	/* Name the probed entry point that counts an unprobed one: a direct callee when it is
	 * probed (that is what the code shows), else one further down the chain. */
	for (size_t i = 0; i < n; i++) {
		if (calls[i].probed || calls[i].external)
			continue;
		for (size_t j = 0; j < n; j++) {
			if (j == i || !calls[j].probed || !reaches(reach, i, j))
				continue;
			if (calls[i].counted_by < 0 || (calls[i].callees >> j & 1))
				calls[i].counted_by = (int)j;
		}
		/* Everything it reaches is unprobed too (counted in another file): name the
		 * first callee, whose own counted_by goes on from there. */
		for (size_t j = 0; j < n && calls[i].counted_by < 0; j++)
			if (j != i && calls[i].callees >> j & 1)
				calls[i].counted_by = (int)j;
	}
}

static void first_name(const char *names, char *buf, size_t len)
{
	snprintf(buf, len, "%.*s", (int)strcspn(names, "/"), names);
}

/* The probed malloc of the same allocator that counts point's relayed calls. Without one
 * nothing would count them, so point counts every call. */
static void relay_target(const struct entry_point *points, size_t n, struct entry_point *point)
{
	for (size_t j = 0; j < n; j++) {
		if (points[j].probed && points[j].entry == ALLOC_ENTRY_MALLOC &&
		    strcmp(points[j].allocator, point->allocator) == 0) {
			first_name(points[j].names, point->relayed_to, sizeof(point->relayed_to));
			return;
		}
	}
	point->relayed_alignment = 0;
}

/* Looks up every name of ids' entry points (frees false) or frees (frees true) into s. */
static int add_tables(struct search *s, const struct allocator_id *ids, size_t n_ids, bool frees)
{
	int ret = 0;

	for (size_t k = 0; k < n_ids && ret == 0; k++) {
		struct name_table tables[MAX_TABLES];
		size_t n_tables = tables_of(&ids[k], frees, tables);
		char allocator[40];

		allocator_id__describe(&ids[k], allocator, sizeof(allocator));
		for (size_t t = 0; t < n_tables && ret == 0; t++)
			ret = add_table(s, tables[t].symbols, tables[t].count, &ids[k],
					tables[t].prefixed ? ids[k].prefix : "", allocator);
	}
	return ret;
}

int allocators__find_entry_points(struct elf_file *f, const struct allocator_id *ids,
				  size_t n_ids, struct entry_point *out, size_t max, size_t *count)
{
	struct search *s = calloc(1, sizeof(*s));
	int ret = 0;

	*count = 0;
	if (!s)
		return -ENOMEM;
	s->f = f;
	s->points = out;
	s->max = max;
	ret = add_tables(s, ids, n_ids, false);
	if (ret)
		goto out;
	for (size_t i = 0; i < s->n; i++) {
		s->calls[i].entry = out[i].entry;
		s->calls[i].relayed_alignment = out[i].relayed_alignment;
		examine(s, i);
	}
	allocators__decide(s->calls, s->n);
	for (size_t i = 0; i < s->n; i++) {
		out[i].entry = s->calls[i].entry;
		out[i].probed = s->calls[i].probed;
	}
	for (size_t i = 0; i < s->n; i++) {
		if (out[i].probed && out[i].relayed_alignment)
			relay_target(out, s->n, &out[i]);
		if (out[i].probed)
			continue;
		size_t j = i;

		/* Follow unprobed callees to the one that is probed or calls into another file. */
		for (size_t steps = 0; steps < s->n && !s->calls[j].probed &&
				       !s->calls[j].external && s->calls[j].counted_by >= 0;
		     steps++)
			j = (size_t)s->calls[j].counted_by;
		if (s->calls[j].probed)
			first_name(out[j].names, out[i].counted_by, sizeof(out[i].counted_by));
		else
			snprintf(out[i].counted_by, sizeof(out[i].counted_by),
				 "%s in another file",
				 s->external_names[j][0] ? s->external_names[j] : "a function");
	}
	*count = s->n;
out:
	got_names_free(&s->got);
	free(s);
	return ret;
}

int allocators__find_free_points(struct elf_file *f, const struct allocator_id *ids, size_t n_ids,
				 struct entry_point *out, size_t max, size_t *count)
{
	struct search *s = calloc(1, sizeof(*s));
	int ret = 0;

	*count = 0;
	if (!s)
		return -ENOMEM;
	s->f = f;
	s->points = out;
	s->max = max;
	ret = add_tables(s, ids, n_ids, true);
	if (ret == 0) {
		/* Placement only: frees never count allocations, so no double-count rule. */
		for (size_t i = 0; i < s->n; i++) {
			examine(s, i);
			out[i].frees = true;
			out[i].probed = true;
			out[i].relayed_alignment = 0;
		}
		*count = s->n;
	}
	got_names_free(&s->got);
	free(s);
	return ret;
}
