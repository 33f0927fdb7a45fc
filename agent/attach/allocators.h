/* Which allocator an ELF file implements, and where its allocation entry points are: one per
 * distinct address (aliases share an address and must share a probe), each with the probe
 * offset chosen so the kernel can emulate the probed instruction. */
#ifndef ALLOCSCOPE_ALLOCATORS_H
#define ALLOCSCOPE_ALLOCATORS_H

#include <stddef.h>
#include <stdint.h>

#include "alloc.h"
#include "attach/probe_placement.h"

struct elf_file;

struct entry_point {
	enum alloc_entry entry;
	char names[64];            /* every name found at this address: "memalign/aligned_alloc" */
	uint64_t vaddr;            /* function entry */
	uint64_t file_offset;      /* function entry; the probe goes at + placement.offset */
	struct probe_placement placement;
};

/* Human name of an entry kind, e.g. "malloc". */
const char *alloc_entry_name(enum alloc_entry entry);

/* glibc's entry points in f (libc.so.6, or a statically linked executable). Fills out[] with up
 * to max entries and sets *count. -ENOENT when f does not contain glibc's allocator. */
int allocators__find_glibc(struct elf_file *f, struct entry_point *out, size_t max,
			   size_t *count);

/* The allocator f provides if it defines malloc: "glibc", "jemalloc", "tcmalloc", "mimalloc"
 * or "an unrecognized allocator"; NULL when it defines no malloc. */
const char *allocators__identify(struct elf_file *f);

#endif
