/* A snapshot of /proc/PID/maps. Samples arrive after the fact, sometimes after the process
 * has exited or unmapped a library, so the symbolizer keeps the layout it saw rather than
 * re-reading /proc on every lookup. Entries are sorted by address; lookup is a binary search. */
#ifndef ALLOCSCOPE_SYMBOLIZE_PROC_MAPS_H
#define ALLOCSCOPE_SYMBOLIZE_PROC_MAPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct proc_map_entry {
	uint64_t start;	 /* first address */
	uint64_t end;	 /* one past the last address */
	uint64_t offset; /* file offset of start (0 for anonymous memory) */
	uint32_t dev_major, dev_minor;
	uint64_t inode; /* 0 for anonymous memory */
	bool readable, writable, executable;
	bool private_; /* 'p' (copy on write) rather than 's' (shared) */
	/* True when the kernel appended " (deleted)": the file was removed or replaced (an
	 * upgrade) after it was mapped; path has the suffix removed. */
	bool deleted;
	/* As the kernel prints it ("/usr/lib/...", "[heap]", "[stack]", "[vdso]",
	 * "[anon:name]"), or "[anon]" when the kernel prints nothing. Never NULL. */
	const char *path;
};

struct proc_maps;

/* Reads /proc/PID/maps. -ESRCH when the process is gone, or has no address space left (a
 * zombie, or a kernel thread); other -errno from open/read; -ENOMEM. */
int proc_maps__read(pid_t pid, struct proc_maps **out);
/* Parses maps-formatted text of len bytes (tests, saved snapshots). -EINVAL on a malformed
 * line. The result does not refer to text. */
int proc_maps__parse(const char *text, size_t len, struct proc_maps **out);
void proc_maps__free(struct proc_maps *maps);

size_t proc_maps__count(const struct proc_maps *maps);
/* The i-th entry in address order, NULL when i is out of range. Owned by maps. */
const struct proc_map_entry *proc_maps__entry(const struct proc_maps *maps, size_t i);
/* The entry with start <= addr < end, or NULL. */
const struct proc_map_entry *proc_maps__find(const struct proc_maps *maps, uint64_t addr);
/* True for a mapping of a regular file (inode != 0 and an absolute path), which is what
 * can be opened as ELF. */
bool proc_map_entry__is_file(const struct proc_map_entry *entry);

#endif
