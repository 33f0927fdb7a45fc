/* Turns runtime addresses of traced processes into (mapping, build id, function, source lines
 * with inline frames). This is the face the profile stage calls. A symbolizer lives for one
 * capture, or for the daemon's whole run: it snapshots each process's maps when told about
 * the process, parses each ELF file once (shared by every process mapping it, keyed by device
 * and inode), reads DWARF lazily (a file's on its first address, a compilation unit's on its
 * first address) and caches every resolved address, so samples of processes that exited
 * before their stacks were symbolized still resolve and a repeated address costs one hash
 * lookup.
 *
 * Debug information comes from the file itself, its separate debug file (build-id tree or
 * .gnu_debuglink, with dwz supplementary files; see elf_file.h) or a debuginfod server (see
 * symbolizer__set_debuginfod), asked once per build id per capture with a bounded wait.
 *
 * Memory: a process's snapshot, mappings and resolved addresses are kept until
 * symbolizer__remove_process (or symbolizer__free), so memory grows with the number of
 * (process, address) pairs of the processes known. Files are reference-counted by the
 * mappings of known processes. A parsed file no known process maps any more stays parsed
 * (a restarted service maps the same libc again, and re-parsing symbols costs milliseconds,
 * DWARF up to ~100 ms) on a least-recently-released list of at most SYMBOLIZER_UNUSED_FILES
 * files; beyond that the file released longest ago is closed. A file that could not be
 * parsed is forgotten once unused. So the files held are those of the known processes plus
 * at most SYMBOLIZER_UNUSED_FILES; no file descriptor is kept open for any of them.
 *
 * Ownership: every pointer handed out for a pid (mapping_key, strings, lines) lives until
 * that pid is removed or the symbolizer is freed; a removed pid's mapping keys may be reused
 * by later mappings. Not thread-safe. */
#ifndef ALLOCSCOPE_SYMBOLIZE_SYMBOLIZER_H
#define ALLOCSCOPE_SYMBOLIZE_SYMBOLIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct symbolizer;

struct symbolized_line {
	const char *function;	 /* demangled for C++ and Rust (readable), else the plain name */
	const char *system_name; /* the mangled/linkage name as in the symbol table */
	const char *file;	 /* source file, NULL when unknown */
	int64_t line;		 /* 0 when unknown */
};

struct symbolized_frame {
	/* Stable identity of the (pid, mapping) the address falls in, equal for every address
	 * of that mapping and across re-reads of the maps; NULL when no mapping holds it. */
	const void *mapping_key;
	uint64_t map_start, map_limit, map_file_offset;
	/* As in /proc/PID/maps ("/usr/lib/...", "[heap]", "[vdso]", "[anon:name]", ...);
	 * "[anon:jit]" for unnamed anonymous executable memory, "/path (deleted)" or
	 * "/path (replaced)" for a file that changed on disk and could not be read as mapped
	 * (see unnamed_memory); NULL for unnamed anonymous memory that is not executable. */
	const char *map_path;
	const char *build_id; /* lowercase hex, NULL when unknown */
	/* The physical (outermost) function's readable name, NULL when unknown; equal to
	 * lines[n_lines - 1].function. */
	const char *function;
	/* That function's linkage name (lines[n_lines - 1].system_name), NULL when unknown. */
	const char *system_name;
	uint64_t function_start; /* runtime address of the function's entry, 0 when unknown */
	/* Innermost first: inlined callees, then the physical function containing the address
	 * (pprof Location.line order). n_lines == 0 when no name is known. function above stays
	 * the physical (outermost) function's readable name. */
	const struct symbolized_line *lines;
	size_t n_lines;
	/* What this mapping's file could give (pprof Mapping flags, true only when true for
	 * the file): */
	bool has_filenames, has_line_numbers, has_inline_frames;
	/* Set when the address is in memory that cannot be named truthfully: anonymous memory
	 * (JIT code, say) or a deleted/replaced file whose contents could not be opened; then
	 * function is NULL and map_path carries a marker such as "[anon:jit]" or
	 * "/path (deleted)". */
	bool unnamed_memory;
};

/* Parsed files kept for reuse after no known process maps them (see above). */
#define SYMBOLIZER_UNUSED_FILES 64

/* NULL on out of memory. Debuginfod is used when DEBUGINFOD_URLS is set (read on first
 * need) with a 10-second bound per query, unless symbolizer__set_debuginfod says otherwise. */
struct symbolizer *symbolizer__new(void);
void symbolizer__free(struct symbolizer *s);

/* Servers to fetch missing debug information from, by build id: urls as in DEBUGINFOD_URLS
 * (space-separated); NULL to follow DEBUGINFOD_URLS, "" to never ask. timeout_seconds bounds
 * each query (0: the default, 10 s); after a server times out or refuses, it is not asked
 * again by this symbolizer. Downloads are cached in $DEBUGINFOD_CACHE_PATH (else
 * ~/.cache/debuginfod_client). Call before resolving. 0, -ENOMEM. */
int symbolizer__set_debuginfod(struct symbolizer *s, const char *urls, unsigned timeout_seconds);

/* Snapshots /proc/PID/maps now and opens the ELF files of its executable mappings (through
 * /proc/PID/root, so container paths work), so the process's samples resolve even after it
 * exits. Calling it again for a known pid (after an exec) takes a new snapshot and forgets
 * the addresses resolved so far for that pid. -ESRCH when the process is gone, -ENOMEM.
 * A file that cannot be opened or parsed is not an error: its frames have no function. */
int symbolizer__add_process(struct symbolizer *s, pid_t pid);

/* Adds a process that is gone from a copy of its /proc/PID/maps it saved (`allocscope count`:
 * liballocscope-count.so writes it at exit). pid is only the key the caller resolves with
 * (never read from /proc): the files are opened by the paths in the text, in this process's
 * mount namespace, and a file whose inode is not the one the text names is treated as
 * replaced (no names). -EINVAL for a malformed text or a pid already known, -ENOMEM. */
int symbolizer__add_saved_process(struct symbolizer *s, pid_t pid, const char *maps_text,
				  size_t len);

/* Forgets pid: its maps snapshot, mappings and resolved addresses. Files still mapped by
 * other known processes stay cached; files no known process maps any more are kept or closed
 * as described above, so memory and descriptors stay bounded. Call once the pid's samples are
 * symbolized for good (after the last profile holding them was built): its pointers die
 * here. A later add or resolve for the pid (pid reuse) starts from a new snapshot with no
 * cached addresses. Unknown pid: no-op. */
void symbolizer__remove_process(struct symbolizer *s, pid_t pid);

/* Processes known (added and not removed), for the agent's self-metrics. */
size_t symbolizer__process_count(const struct symbolizer *s);
/* ELF files held parsed (or remembered as unparseable) in the cache: those of the known
 * processes, plus at most SYMBOLIZER_UNUSED_FILES no known process maps. */
size_t symbolizer__file_count(const struct symbolizer *s);

/* Resolves addr, a runtime address in pid. For a non-leaf frame pass is_return_address: the
 * caller's call instruction is at addr - 1, and addr itself may already belong to the next
 * function (or the next line). An address outside the snapshot makes the symbolizer re-read
 * /proc/PID/maps once (the process may have loaded a library since) when the process is
 * alive. A pid never added (or removed since) is added first. The first address in a file
 * lacking debug information may wait on debuginfod (bounded, once per build id). Returns 0
 * with out filled (out->mapping_key NULL when no mapping holds the address), -ESRCH for an
 * unknown (or removed) pid that is gone, -EINVAL, -ENOMEM. */
int symbolizer__resolve(struct symbolizer *s, pid_t pid, uint64_t addr, bool is_return_address,
			struct symbolized_frame *out);

/* Whether addr, a return address read from pid's stack, can be one: 1 when the byte before it
 * (its call instruction) lies in an executable mapping of pid other than the kernel's
 * [uprobes] page, whose trampoline takes the place of return addresses under a return probe;
 * 0 when not (the stack, the heap, no mapping, the trampoline), and then the frame is no
 * caller. An address outside the snapshot re-reads /proc/PID/maps as symbolizer__resolve
 * does, at most every 10 ms. 1 too when that cannot tell (pid is gone and was never seen, or
 * the address is outside the last snapshot of a process gone since: a library it loaded
 * later): the frame is kept as it was. -EINVAL, -ENOMEM. */
int symbolizer__is_code(struct symbolizer *s, pid_t pid, uint64_t addr);

#endif
