/* One parsed ELF file (libelf): build id, program headers, function symbols and the separate
 * debug file that stripped distribution binaries point to. Parsing is the expensive part of
 * symbolization, so a file is opened once and reused for every process that maps it; the
 * attach stage uses the same object to find allocator entry points.
 *
 * Ownership: every string returned is owned by the elf_file and lives until elf_file__free.
 * Not thread-safe: one elf_file is used by one thread at a time. */
#ifndef ALLOCSCOPE_SYMBOLIZE_ELF_FILE_H
#define ALLOCSCOPE_SYMBOLIZE_ELF_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct elf_file;

struct elf_symbol {
	const char *name;     /* as in the symbol table, possibly with a version suffix */
	uint64_t vaddr;	      /* st_value */
	uint64_t size;	      /* st_size */
	uint64_t file_offset; /* where vaddr lies in the file: what a uprobe attach wants */
};

/* Opens and parses path. 0 or -errno: -ENOENT/-EACCES/... from open(), -ENOEXEC when the
 * file is not an ELF file (or is truncated beyond use), -EISDIR, -ENOMEM. The file stays
 * mapped (no descriptor is kept) until elf_file__free, so symbols still resolve after the
 * file is deleted or replaced, or its process exits.
 *
 * When the file has no .symtab, a separate debug file is searched for, first by build id:
 *   <root>/.build-id/<first 2 hex>/<rest>.debug
 * then through .gnu_debuglink (the debug file's CRC32 must match):
 *   <dir of path>/<link>, <dir of path>/.debug/<link>, <root>/<dir of path>/<link>
 * for every debug root (default /usr/lib/debug; see elf_file__set_debug_roots). When path
 * lies under /proc/PID/root/ (a container), the roots are searched inside that root first. */
int elf_file__open(const char *path, struct elf_file **out);
void elf_file__free(struct elf_file *f);

/* Replaces the debug roots searched by later elf_file__open calls (tests point this at a
 * fixture tree). dirs is a NULL-terminated array, copied; NULL restores /usr/lib/debug. An
 * empty array disables the root-based searches (the debuglink next to the file still works).
 * 0 or -ENOMEM (the old roots stay in place). Process-wide: call before opening files. */
int elf_file__set_debug_roots(const char *const *dirs);

/* Lowercase hex of NT_GNU_BUILD_ID, or NULL when the file has none. */
const char *elf_file__build_id(const struct elf_file *f);
/* ET_DYN: a PIE executable or a shared library (load address chosen at run time). */
bool elf_file__is_shared_object(const struct elf_file *f);
/* The path the file was opened with. */
const char *elf_file__path(const struct elf_file *f);
/* The separate debug file whose .symtab is used, or NULL when none was needed or found. */
const char *elf_file__debug_file_path(const struct elf_file *f);

/* A defined function (STT_FUNC or STT_GNU_IFUNC) named exactly name, searched in .dynsym,
 * then .symtab, then the debug file's .symtab. "malloc@@GLIBC_2.2.5" matches "malloc"; when
 * several versions exist the default one wins. -ENOENT when absent, -ENOEXEC when vaddr lies
 * in no loadable part of the file. */
int elf_file__find_function(struct elf_file *f, const char *name, struct elf_symbol *out);

/* Copies len bytes found at vaddr (through the PT_LOAD segments, else the sections) into
 * buf. -ERANGE when the range is not entirely backed by file contents. */
int elf_file__read_vaddr(struct elf_file *f, uint64_t vaddr, void *buf, size_t len);

/* The function containing vaddr and, through func_start (may be NULL), its first vaddr.
 * Symbols from .symtab, .dynsym and the debug file's .symtab are merged; at one address the
 * preferred name is global before weak before local, then the one with fewer leading
 * underscores, then the shorter, then the alphabetically first. Symbols of size 0 extend to
 * the next symbol (within their section). Version suffixes are dropped. NULL when vaddr lies
 * in no known function. The table is built on the first call. */
const char *elf_file__function_at(struct elf_file *f, uint64_t vaddr, uint64_t *func_start);

/* Maps a file offset (addr - map_start + map_offset from /proc/PID/maps) to the vaddr at
 * that place, through the PT_LOAD segments. -ENOENT when no segment holds the offset. */
int elf_file__offset_to_vaddr(const struct elf_file *f, uint64_t file_offset, uint64_t *vaddr);

#endif
