/* The ELF files a command will map once it runs: its executable and the shared libraries the
 * dynamic loader will load for it (LD_PRELOAD included). A command's probes go in before it
 * execs, when /proc/PID/maps still shows allocscope's own image, so its allocator (a -ljemalloc
 * program, a preloaded tcmalloc) must be known from its files. */
#ifndef ALLOCSCOPE_ATTACH_LINKED_FILES_H
#define ALLOCSCOPE_ATTACH_LINKED_FILES_H

#include <stdbool.h>
#include <stddef.h>

struct linked_files {
	char **paths; /* the executable first, then libraries in the loader's order */
	size_t count;
	bool dynamic; /* the executable names a dynamic loader (PT_INTERP) */
};

/* Fills out for the executable exe (a path). A dynamically linked program's libraries are
 * listed by its own dynamic loader in list mode (`ld.so --list`, which loads but runs nothing
 * of the program), with this process's environment. A statically linked one is just itself.
 * Returns 0, -ENOEXEC when exe is not an ELF file (a script: the caller decides), -ENOMEM, or
 * another -errno; on error out is empty. */
int linked_files__list(const char *exe, struct linked_files *out);
void linked_files__free(struct linked_files *files);

#endif
