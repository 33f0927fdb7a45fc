/* glibc's allocation entry points and allocator recognition.
 *
 * Not probed on purpose: free (allocation profiles do not need it), reallocarray (jumps to
 * realloc), operator new from libstdc++ (calls malloc). realloc(NULL, n) reaches malloc and is
 * skipped in the BPF program; memalign-family calls use an internal path, not the malloc
 * entry, so nothing is counted twice. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allocators.h"
#include "log.h"
#include "symbolize/elf_file.h"

/* Placement decodes the whole function to find branches into its prologue; a symbol larger
 * than this is probed at its entry. */
#define MAX_ENTRY_CODE_BYTES (1u << 20)

static const char *const entry_names[ALLOC_ENTRY__COUNT] = {
	[ALLOC_ENTRY_MALLOC] = "malloc",
	[ALLOC_ENTRY_CALLOC] = "calloc",
	[ALLOC_ENTRY_REALLOC] = "realloc",
	[ALLOC_ENTRY_MEMALIGN] = "memalign",
	[ALLOC_ENTRY_POSIX_MEMALIGN] = "posix_memalign",
	[ALLOC_ENTRY_VALLOC] = "valloc",
	[ALLOC_ENTRY_PVALLOC] = "pvalloc",
};

static const struct {
	const char *symbol;
	enum alloc_entry entry;
} glibc_symbols[] = {
	{ "malloc", ALLOC_ENTRY_MALLOC },
	{ "calloc", ALLOC_ENTRY_CALLOC },
	{ "realloc", ALLOC_ENTRY_REALLOC },
	{ "memalign", ALLOC_ENTRY_MEMALIGN },
	{ "aligned_alloc", ALLOC_ENTRY_MEMALIGN },
	{ "posix_memalign", ALLOC_ENTRY_POSIX_MEMALIGN },
	{ "valloc", ALLOC_ENTRY_VALLOC },
	{ "pvalloc", ALLOC_ENTRY_PVALLOC },
};

const char *alloc_entry_name(enum alloc_entry entry)
{
	if ((unsigned)entry >= ALLOC_ENTRY__COUNT)
		return "unknown";
	return entry_names[entry];
}

static struct entry_point *find_by_vaddr(struct entry_point *points, size_t n, uint64_t vaddr)
{
	for (size_t i = 0; i < n; i++)
		if (points[i].vaddr == vaddr)
			return &points[i];
	return NULL;
}

static int place_probe(struct elf_file *f, const struct elf_symbol *sym,
		       struct probe_placement *placement)
{
	size_t len = sym->size && sym->size <= MAX_ENTRY_CODE_BYTES ? sym->size : 64;
	uint8_t *code = malloc(len);
	int ret;

	if (!code)
		return -ENOMEM;
	ret = elf_file__read_vaddr(f, sym->vaddr, code, len);
	if (ret == 0)
		ret = probe_placement_choose(code, len, sym->size, placement);
	free(code);
	return ret;
}

int allocators__find_glibc(struct elf_file *f, struct entry_point *out, size_t max,
			   size_t *count)
{
	struct elf_symbol sym;
	size_t n = 0;
	int ret;

	*count = 0;
	/* __libc_malloc exists only in glibc, which tells it apart from allocators that merely
	 * export malloc. */
	if (elf_file__find_function(f, "__libc_malloc", &sym) != 0)
		return -ENOENT;

	for (size_t i = 0; i < sizeof(glibc_symbols) / sizeof(glibc_symbols[0]); i++) {
		struct entry_point *point;

		if (elf_file__find_function(f, glibc_symbols[i].symbol, &sym) != 0)
			continue;
		point = find_by_vaddr(out, n, sym.vaddr);
		if (point) {
			/* An alias: one probe serves both names. */
			size_t used = strlen(point->names);

			snprintf(point->names + used, sizeof(point->names) - used, "/%s",
				 glibc_symbols[i].symbol);
			continue;
		}
		if (n == max)
			return -E2BIG;
		point = &out[n];
		memset(point, 0, sizeof(*point));
		point->entry = glibc_symbols[i].entry;
		snprintf(point->names, sizeof(point->names), "%s", glibc_symbols[i].symbol);
		point->vaddr = sym.vaddr;
		point->file_offset = sym.file_offset;
		ret = place_probe(f, &sym, &point->placement);
		if (ret) {
			log_warn("cannot read the code of %s in %s (%s): probing its entry",
				 glibc_symbols[i].symbol, elf_file__path(f), strerror(-ret));
			point->placement.offset = 0;
			point->placement.emulated = false;
			snprintf(point->placement.reason, sizeof(point->placement.reason),
				 "code unreadable");
		}
		n++;
	}
	*count = n;
	return n ? 0 : -ENOENT;
}

const char *allocators__identify(struct elf_file *f)
{
	struct elf_symbol sym;

	if (elf_file__find_function(f, "__libc_malloc", &sym) == 0)
		return "glibc";
	if (elf_file__find_function(f, "malloc", &sym) != 0 &&
	    elf_file__find_function(f, "je_malloc", &sym) != 0 &&
	    elf_file__find_function(f, "_rjem_malloc", &sym) != 0)
		return NULL;
	if (elf_file__find_function(f, "mallocx", &sym) == 0 ||
	    elf_file__find_function(f, "je_mallocx", &sym) == 0 ||
	    elf_file__find_function(f, "_rjem_mallocx", &sym) == 0)
		return "jemalloc";
	if (elf_file__find_function(f, "tc_malloc", &sym) == 0)
		return "tcmalloc";
	if (elf_file__find_function(f, "mi_malloc", &sym) == 0)
		return "mimalloc";
	return "an unrecognized allocator";
}
