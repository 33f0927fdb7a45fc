/* Unwind tables for the in-kernel stack walk (bpf/unwind.bpf.h). Each ELF file's CFI
 * (.eh_frame, and .debug_frame when the file has one) becomes sorted rows (struct unwind_row:
 * for each pc range, the CFA as rsp/rbp + offset, a PLT entry, a signal frame, the outermost
 * frame, or unsupported; where rbp was saved). Rows are built once per file (device, inode)
 * with libdw's CFI interpreter and written into one global BPF array (mmapped) shared by every
 * process that maps the file; each process gets its sorted list of executable mappings in a
 * BPF hash keyed by pid. Each file with rows also has an entry keyed by its identity in a
 * third map (unwind_files), where the walk finds mappings the process's list does not hold.
 *
 * Memory is bounded by the array: a file no process uses any more keeps its rows until the
 * space is needed, then the least recently used such file goes. A file whose rows do not fit,
 * or that has no usable CFI, gets no table: the kernel then sends a stack copy for samples
 * whose leaf is in it (counted by the program as a fallback). An evicted file's rows are
 * reused only after every BPF program then running has returned (a walk in flight on another
 * CPU may still read them). Not thread-safe. */
#ifndef ALLOCSCOPE_SYMBOLIZE_UNWIND_TABLES_H
#define ALLOCSCOPE_SYMBOLIZE_UNWIND_TABLES_H

#include <gelf.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "alloc.h"

/* What building one file's rows found (for tests and benchmarks). */
struct unwind_table_info {
	size_t rows;         /* after merging equal neighbours */
	size_t fdes;         /* ranges CFI covered */
	size_t unsupported;  /* rows whose CFA or return address the walk cannot evaluate */
	size_t plt_rows, signal_rows;
};

/* Builds elf's rows into *rows (malloc'd, sorted by pc, *n_rows of them). Addresses are the
 * file's virtual addresses, which must fit in 32 bits. -ENOENT when the file has no CFI,
 * -ERANGE when its addresses do not fit, -ENOMEM. */
int unwind_table_build(Elf *elf, struct unwind_row **rows, size_t *n_rows,
		       struct unwind_table_info *info);

/* One executable file mapping of a process, as unwind_tables__set_process wants it. */
struct unwind_table_mapping {
	uint64_t start, end, bias;
	uint32_t dev_major, dev_minor;
	uint64_t inode;
	Elf *elf; /* the file, read only while set_process runs; NULL: no table */
};

struct unwind_tables_stats {
	size_t files;        /* files with rows in the array (used or cached) */
	size_t files_failed; /* files met that got no table */
	size_t processes;
	size_t rows_used, rows_capacity;
	size_t rows_quarantined; /* evicted rows waiting for a grace period before reuse */
	uint64_t grace_periods;  /* waits for running BPF programs before reusing rows */
	uint64_t build_ns;   /* time spent building rows, in total */
};

struct unwind_tables;

/* Uses the program's maps: rows_fd a BPF_F_MMAPABLE array of max_rows struct unwind_row,
 * procs_fd a hash of pid -> struct unwind_proc, files_fd a hash of struct unwind_file_key ->
 * struct unwind_file_entry. -errno with a sentence in err. */
int unwind_tables__new(int rows_fd, int procs_fd, int files_fd, uint32_t max_rows,
		       struct unwind_tables **out, char *err, size_t err_len);
/* Unmaps the array; the BPF maps stay with the program. Accepts NULL. */
void unwind_tables__free(struct unwind_tables *t);

/* Installs pid's mappings (any order; at most UNWIND_MAX_MAPPINGS are kept, the others get
 * no table), building the rows of files not seen before. Replaces what pid had. 0, -ENOMEM,
 * or the BPF update's -errno. */
int unwind_tables__set_process(struct unwind_tables *t, pid_t pid,
			       const struct unwind_table_mapping *mappings, size_t n);
/* Builds and places the rows of one file no process maps yet (a command's files, before it
 * execs), so that walks find it by its identity. It stays cached like a file whose processes
 * exited. 0, -ENOENT (no table could be built for it), -ENOMEM, -EINVAL. */
int unwind_tables__add_file(struct unwind_tables *t, Elf *elf, uint32_t dev_major,
			    uint32_t dev_minor, uint64_t inode);
/* Forgets pid (its files stay cached while space allows). Unknown pid: no-op. */
void unwind_tables__remove_process(struct unwind_tables *t, pid_t pid);

void unwind_tables__stats(const struct unwind_tables *t, struct unwind_tables_stats *out);

#endif
