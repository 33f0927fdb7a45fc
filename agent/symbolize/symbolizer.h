/* Turns runtime addresses of traced processes into (mapping, build id, function). This is the
 * face the profile stage calls. A symbolizer lives for one capture: it snapshots each
 * process's maps when told about the process, parses each ELF file once (shared by every
 * process mapping it, keyed by device and inode) and caches every resolved address, so
 * samples of processes that exited before their stacks were symbolized still resolve and a
 * repeated address costs one hash lookup.
 *
 * Ownership: every pointer handed out lives until symbolizer__free. Memory grows with the
 * number of distinct (process, address) pairs seen; free the symbolizer at the end of each
 * capture. Not thread-safe. */
#ifndef ALLOCSCOPE_SYMBOLIZE_SYMBOLIZER_H
#define ALLOCSCOPE_SYMBOLIZE_SYMBOLIZER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct symbolizer;

struct symbolized_frame {
	/* Stable identity of the (pid, mapping) the address falls in, equal for every address
	 * of that mapping and across re-reads of the maps; NULL when no mapping holds it. */
	const void *mapping_key;
	uint64_t map_start, map_limit, map_file_offset;
	/* As in /proc/PID/maps ("/usr/lib/...", "[heap]", "[vdso]", ...); NULL for unnamed
	 * anonymous memory (JIT code, for example). */
	const char *map_path;
	const char *build_id;	 /* lowercase hex, NULL when unknown */
	const char *function;	 /* NULL when unknown */
	uint64_t function_start; /* runtime address of the function's entry, 0 when unknown */
};

/* NULL on out of memory. */
struct symbolizer *symbolizer__new(void);
void symbolizer__free(struct symbolizer *s);

/* Snapshots /proc/PID/maps now and opens the ELF files of its executable mappings (through
 * /proc/PID/root, so container paths work), so the process's samples resolve even after it
 * exits. Calling it again for a known pid (after an exec) takes a new snapshot and forgets
 * the addresses resolved so far for that pid. -ESRCH when the process is gone, -ENOMEM.
 * A file that cannot be opened or parsed is not an error: its frames have no function. */
int symbolizer__add_process(struct symbolizer *s, pid_t pid);

/* Resolves addr, a runtime address in pid. For a non-leaf frame pass is_return_address: the
 * caller's call instruction is at addr - 1, and addr itself may already belong to the next
 * function. An address outside the snapshot makes the symbolizer re-read /proc/PID/maps once
 * (the process may have loaded a library since) when the process is alive. A pid never added
 * is added first. Returns 0 with out filled (out->mapping_key NULL when no mapping holds the
 * address), -ESRCH for an unknown pid that is gone, -EINVAL, -ENOMEM. */
int symbolizer__resolve(struct symbolizer *s, pid_t pid, uint64_t addr, bool is_return_address,
			struct symbolized_frame *out);

#endif
