/* Which allocators an ELF file holds, and where their allocation entry points are.
 *
 * A file may hold several: a statically linked Rust program carries glibc and a jemalloc
 * renamed to _rjem_*. Each is an allocator_id: a family (glibc, jemalloc, tcmalloc, mimalloc,
 * or an operator new defined outside any of them) and the prefix its names carry. At most one
 * of them owns the file's unprefixed malloc; process_probes decides which file's malloc wins
 * in a process.
 *
 * Entry points are found per distinct address (aliases share an address and one probe), each
 * with the probe offset chosen so the kernel can emulate the probed instruction, and each
 * decided probed or not: a function whose body calls or jumps straight to another entry point
 * (a wrapper such as mimalloc's posix_memalign, or libstdc++'s operator new calling malloc
 * through the PLT) is left unprobed, since the callee counts its allocations. */
#ifndef ALLOCSCOPE_ALLOCATORS_H
#define ALLOCSCOPE_ALLOCATORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alloc.h"
#include "attach/probe_placement.h"

struct elf_file;

enum allocator_family {
	ALLOCATOR_GLIBC,
	ALLOCATOR_JEMALLOC,
	ALLOCATOR_TCMALLOC,
	ALLOCATOR_MIMALLOC,
	ALLOCATOR_CXX_NEW,	/* operator new outside an allocator: libstdc++, a static binary */
	ALLOCATOR_UNRECOGNIZED, /* defines malloc, but is none of the above */
};

struct allocator_id {
	enum allocator_family family;
	char prefix[16];  /* jemalloc built with a prefix: "je_", "_rjem_" (Rust); else "" */
	bool owns_malloc; /* it defines the file's unprefixed malloc */
};

#define ALLOCATORS_MAX_PER_FILE 8

struct file_allocators {
	struct allocator_id ids[ALLOCATORS_MAX_PER_FILE];
	size_t count;
};

/* Most entry points one file can have (a static binary with glibc, a prefixed jemalloc and
 * operator new has about 40). */
#define ALLOCATORS_MAX_ENTRY_POINTS 64

struct entry_point {
	enum alloc_entry entry;
	char names[160];	  /* every name found at this address: "memalign/aligned_alloc" */
	char allocator[40];	  /* the allocator it belongs to, as allocator_id__describe puts it */
	uint64_t vaddr;		  /* function entry */
	uint64_t size;		  /* symbol size, 0 when unknown */
	uint64_t file_offset;	  /* function entry; the probe goes at + placement.offset */
	struct probe_placement placement;
	bool probed;		  /* false: another entry point counts its allocations */
	char counted_by[64];	  /* when not probed: the function it reaches, e.g. "mi_malloc" */
	uint32_t relayed_alignment; /* probed aligned entries: alignments up to this are handed
				       to the probed malloc named in relayed_to, which counts
				       them (glibc: 16); 0 when none are */
	char relayed_to[64];
	bool frees;		  /* a free (allocators__find_free_points): entry is only its
				     argument layout, the pointer first */
};

/* The attach cookie of a probed entry point: its kind and relayed alignment, as
 * ALLOC_COOKIE_RELAY_SHIFT in bpf/alloc.h lays them out. */
uint64_t entry_point__cookie(const struct entry_point *point);

/* Human name of an entry kind, e.g. "malloc", "operator new". */
const char *alloc_entry_name(enum alloc_entry entry);
/* The argument registers (X86_REG_BIT) the BPF program reads at an entry of this kind (see
 * alloc_multi in bpf/alloc.bpf.c): what probe placement must not skip a write to. Every
 * argument register for a kind it does not know. */
uint16_t alloc_entry_read_regs(enum alloc_entry entry);
/* "glibc", "jemalloc", "tcmalloc", "mimalloc", "operator new", "an unrecognized allocator". */
const char *allocator_family_name(enum allocator_family family);
/* The family's name, with the prefix when there is one: "jemalloc (_rjem_ prefix)". */
void allocator_id__describe(const struct allocator_id *id, char *buf, size_t len);

/* The allocators f holds; an empty set when none. Looks up a handful of symbols, so it is
 * cheap enough to run on every file a process maps. */
void allocators__identify_file(struct elf_file *f, struct file_allocators *out);
/* The allocator in set that defines the unprefixed malloc, or NULL. */
const struct allocator_id *file_allocators__malloc_owner(const struct file_allocators *set);

/* Entry points of the n_ids allocators ids (from allocators__identify_file on f), probed and
 * unprobed, into out[max]. Returns 0 with *count set (possibly 0), -E2BIG when they do not
 * fit, -ENOMEM. An entry point whose code cannot be read is probed at its entry. */
int allocators__find_entry_points(struct elf_file *f, const struct allocator_id *ids,
				  size_t n_ids, struct entry_point *out, size_t max, size_t *count);

/* In-use on the transparent path: the frees of the n_ids allocators ids (free, cfree,
 * free_sized, operator delete where the allocator defines its own, jemalloc's sdallocx and
 * dallocx, tcmalloc's and mimalloc's own names), merged by address, each with its probe
 * placement and frees set, into out[max]. Returns 0 with *count set, -E2BIG, -ENOMEM. */
int allocators__find_free_points(struct elf_file *f, const struct allocator_id *ids, size_t n_ids,
				 struct entry_point *out, size_t max, size_t *count);

/* The double-count rule on its own, for tests. calls[i] describes entry point i: its kind and
 * what its body reaches by a direct call or jump. A realloc-layout entry (given as
 * ALLOC_ENTRY_REALLOC_ANY) that reaches a malloc does so for realloc(NULL, n): it becomes
 * ALLOC_ENTRY_REALLOC (NULL skipped) and that call does not count against it. Otherwise an
 * entry point is left unprobed when it reaches an allocation function of another file (the
 * process's malloc, probed there) or, through other entry points, one that does not reach it
 * back (entry points calling each other in a cycle are all kept). An aligned entry that hands
 * small alignments to malloc (relayed_alignment) keeps its probe whatever it reaches of a
 * malloc, as a realloc does: the program skips the relayed calls, malloc counts them. */
struct entry_calls {
	enum alloc_entry entry; /* in; out for realloc layouts */
	uint64_t callees;	/* in: bit j when its body calls or jumps to entry point j */
	uint32_t external;	/* in: bit k when it calls allocation kind k in another file */
	uint32_t relayed_alignment; /* in: as in struct entry_point */
	bool probed;		/* out */
	int counted_by;		/* out, when not probed: the entry point it reaches, or -1 for an
				   external function */
};

void allocators__decide(struct entry_calls *calls, size_t n);

#endif
