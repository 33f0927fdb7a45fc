/* One parsed ELF file (libelf): build id, program headers, function symbols, the separate
 * debug file that stripped distribution binaries point to, and source lines with inline frames
 * from its DWARF (libdw, through dwarf_lines). Parsing is the expensive part of symbolization,
 * so a file is opened once and reused for every process that maps it; the attach stage uses
 * the same object to find allocator entry points.
 *
 * Ownership: every string returned is owned by the elf_file and lives until elf_file__free.
 * Not thread-safe: one elf_file is used by one thread at a time. */
#ifndef ALLOCSCOPE_SYMBOLIZE_ELF_FILE_H
#define ALLOCSCOPE_SYMBOLIZE_ELF_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "symbolize/dwarf_lines.h"

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
 * When the file lacks .symtab or DWARF (.debug_info), a separate debug file with what it
 * lacks is searched for, first by build id:
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
/* The separate debug file in use: the one elf_file__use_debug_file accepted, else the one found
 * at open; NULL when none was needed or found. */
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
 * preferred name is a global or weak one before a local one, then the one with fewer leading
 * underscores (the public name: calloc, not __libc_calloc), then global before weak, then the
 * shorter, then the alphabetically first. Symbols of size 0 extend to
 * the next symbol (within their section). Version suffixes are dropped. NULL when vaddr lies
 * in no known function. The table is built on the first call. */
const char *elf_file__function_at(struct elf_file *f, uint64_t vaddr, uint64_t *func_start);

/* Maps a file offset (addr - map_start + map_offset from /proc/PID/maps) to the vaddr at
 * that place, through the PT_LOAD segments. -ENOENT when no segment holds the offset. */
int elf_file__offset_to_vaddr(const struct elf_file *f, uint64_t file_offset, uint64_t *vaddr);

/* Source lines at vaddr, innermost first (see dwarf_lines.h): from DWARF when it covers
 * vaddr, else one line from the symbol tables (no file, line 0). function is readable
 * (demangled for C++ and Rust), system_name the linkage name. The physical function is named by the
 * symbol starting at its DWARF entry when there is one (as elf_file__function_at would name
 * it), else by DWARF. *func_start (may be NULL) gets the physical function's entry vaddr.
 * *count is 0 when nothing names vaddr. The lines live in f until the next call, their
 * strings until elf_file__free. DWARF is opened on the first call. 0, -EINVAL, -ENOMEM. */
int elf_file__lines_at(struct elf_file *f, uint64_t vaddr, const struct source_line **lines,
		       size_t *count, uint64_t *func_start);

/* Whether the file's DWARF (in it or in a debug file) was opened: inline frames and function
 * names from .debug_info. Opens it on the first call. */
bool elf_file__has_dwarf(struct elf_file *f);
/* Whether that DWARF has a line table: file names and line numbers. */
bool elf_file__has_line_table(struct elf_file *f);

/* Uses path (fetched from debuginfod, say) as the separate debug file, when f has no DWARF
 * yet. path must carry f's build id and .symtab or DWARF. Answers given before stay valid;
 * later lookups use its names and lines. 0, -EEXIST when f has DWARF already, -ENOENT
 * when f has no build id to check against, -EINVAL when path is another file's or empty, or
 * the errors of elf_file__open. */
int elf_file__use_debug_file(struct elf_file *f, const char *path);

/* When the DWARF refers to a dwz supplementary file (.gnu_debugaltlink) that was not found
 * (at its recorded path or in the build-id trees), that file's build id; else NULL. Names
 * of inlined functions may live in it. */
const char *elf_file__missing_alt_build_id(struct elf_file *f);
/* Uses path as that supplementary file; it must carry the missing build id. Answers given
 * before stay valid; later lookups see the names it holds. 0, -EEXIST when none is missing,
 * -EINVAL when path is another file, or the errors of elf_file__open. */
int elf_file__use_alt_file(struct elf_file *f, const char *path);

#endif
