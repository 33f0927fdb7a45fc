/* Every ELF file the agent reads is opened here, for attach/ (allocator entry points, USDT
 * notes, relocations, the program interpreter) and symbolize/ (symbols, debug files, DWARF)
 * alike: one open, one libelf handle and one mapping per file (device, inode, size, mtime)
 * for the whole agent, however many processes map it and whichever stage asks.
 *
 * A file is opened read-only and non-blocking (a FIFO put where a library was must not hang
 * the agent), must be a regular file, and is mapped whole; the descriptor is closed at once,
 * so a file that is deleted or replaced stays readable through the mapping. A file nobody
 * holds stays mapped (the most recently released MAPPED_ELF_IDLE_MAX of them), so the next
 * process that maps the same libc finds it open; only a file that had not changed for a few
 * seconds when it was mapped is taken back from there (a file rewritten in place within one
 * timestamp tick keeps its size and times, and its old mapping must not be served).
 *
 * A parsed form of the file (symbolize/elf_file.c's) can be hung on the image with
 * mapped_elf__set_parsed: it lives while anyone holds the file and is freed when the last
 * holder lets go, so a file that is opened again after that is parsed again (a debug file
 * installed or changed meanwhile is then seen, as before there was a cache).
 *
 * Thread-safe to open and release; one libelf handle is used by one thread at a time. */
#ifndef ALLOCSCOPE_ELF_MAPPED_ELF_H
#define ALLOCSCOPE_ELF_MAPPED_ELF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <libelf.h>

/* Files kept open while no one holds them, least recently released evicted first. */
#define MAPPED_ELF_IDLE_MAX 64

struct mapped_elf;

/* Opens path, or takes another reference to the same file opened before (matched by device,
 * inode, size and modification time). 0 or -errno: the -errno of open/fstat (-ENOENT,
 * -EACCES, ...), -EISDIR, -ENOEXEC for anything that is not a regular ELF file, -ENOTSUP when
 * libelf is unusable, -ENOMEM. Release with mapped_elf__put. */
int mapped_elf__open(const char *path, struct mapped_elf **out);
/* Drops a reference; the last one leaves the file idle in the cache. Accepts NULL. */
void mapped_elf__put(struct mapped_elf *m);

/* The libelf handle (ELF_K_ELF, whole file read in). */
Elf *mapped_elf__elf(const struct mapped_elf *m);
/* The file's identity. */
uint64_t mapped_elf__dev(const struct mapped_elf *m);
uint64_t mapped_elf__inode(const struct mapped_elf *m);

/* The parsed object hung on the file, or NULL. */
void *mapped_elf__parsed(const struct mapped_elf *m);
/* Hangs parsed on the file (when none is yet); free_parsed is called with it when the last
 * reference is dropped. parsed must not hold a reference to m itself. */
void mapped_elf__set_parsed(struct mapped_elf *m, void *parsed, void (*free_parsed)(void *));


struct mapped_elf_stats {
	uint64_t opens;	  /* mapped_elf__open calls that succeeded */
	uint64_t hits;	  /* of which found the file already open */
	uint64_t live;	  /* files held now */
	uint64_t idle;	  /* files cached with no holder */
	uint64_t evicted; /* idle files closed to stay within MAPPED_ELF_IDLE_MAX */
};
void mapped_elf__stats(struct mapped_elf_stats *stats);

#endif
