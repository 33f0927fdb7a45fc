/* Source lines and inline frames from DWARF (libdw): for an address in a file with debug
 * information, the chain of functions inlined at that place, innermost first, each with the
 * file and line it is at, ending with the physical function that holds the code.
 *
 * Nothing is parsed up front. The first lookup reads the compilation-unit headers into an
 * address table; the first lookup inside a unit walks that unit's DIE tree once into a sorted
 * table of code ranges (functions and inlined calls), so every later lookup there is two
 * binary searches and a line-table search. Units no address falls in are never walked.
 *
 * Ownership: the Elf handed to dwarf_lines__new (and set as alt) must outlive the object;
 * every string returned lives until dwarf_lines__free. Not thread-safe. */
#ifndef ALLOCSCOPE_SYMBOLIZE_DWARF_LINES_H
#define ALLOCSCOPE_SYMBOLIZE_DWARF_LINES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct Elf; /* libelf's Elf */
struct dwarf_lines;

/* One frame of source: a function and where in it the code is. */
struct source_line {
	/* Readable: the demangled linkage name (C++, Rust), else DW_AT_name. NULL when DWARF does
	 * not name the function (then the symbol table has to). */
	const char *function;
	/* The linkage (mangled) name, else DW_AT_name; NULL when function is. */
	const char *system_name;
	const char *file; /* NULL when unknown */
	int64_t line;	  /* 0 when unknown */
};

/* Opens the DWARF in elf. -ENOENT when elf has no .debug_info (or libdw cannot read it),
 * -ENOMEM. */
int dwarf_lines__new(struct Elf *elf, struct dwarf_lines **out);
void dwarf_lines__free(struct dwarf_lines *d);

/* True when the file has a line table (.debug_line): file names and line numbers. */
bool dwarf_lines__has_line_table(const struct dwarf_lines *d);

/* The supplementary file dwz moved shared DWARF into (.gnu_debugaltlink): its path as
 * recorded (often absolute, under /usr/lib/debug/.dwz/) and its build id as lowercase hex.
 * -ENOENT when the file has none, -ENOMEM. Strings owned by d. */
int dwarf_lines__alt_link(struct dwarf_lines *d, const char **path, const char **build_id);
/* Uses alt (not owned; check its build id first) as that supplementary file. Call before
 * the first lookup. 0, -ENOEXEC when alt has no DWARF, -EEXIST when one is set already. */
int dwarf_lines__set_alt(struct dwarf_lines *d, struct Elf *alt);

/* The source lines at vaddr (a link-time address, as in the symbol table), innermost first:
 * the inlined callees, then the physical function containing vaddr, whose entry goes to
 * *entry. Each caller's line is the call site of the callee before it. When DWARF cannot
 * name an inlined callee, only the physical function's line is given.
 *
 * 0 with *count lines written, -ENOENT when no function in the DWARF holds vaddr (code
 * without debug information, such as assembly), -E2BIG when more than max lines are needed
 * (*count says how many), -ENOMEM. */
int dwarf_lines__lookup(struct dwarf_lines *d, uint64_t vaddr, struct source_line *lines,
			size_t max, size_t *count, uint64_t *entry);

#endif
