/* The USDT probes an ELF file declares in its SystemTap SDT notes (.note.stapsdt, version 3):
 * where each probe site lies in the file (what a uprobe attach wants), its semaphore (a
 * uprobe's reference counter, which a library checks before building a probe's arguments),
 * and its arguments parsed into the specs the BPF program evaluates (bpf/usdt_args.h).
 * OpenTelemetry's cooperative preload library fires otel_memory:alloc(ptr, size,
 * weighted_bytes) for its sampled allocations; the attach stage finds it here.
 *
 * Argument strings are x86-64 (AT&T syntax, as GCC and Clang write them through sys/sdt.h).
 * A probe whose location or arguments cannot be used is listed anyway, with error set, so
 * that one odd probe never hides the others. */
#ifndef ALLOCSCOPE_ATTACH_USDT_NOTES_H
#define ALLOCSCOPE_ATTACH_USDT_NOTES_H

#include <stddef.h>
#include <stdint.h>

#include "usdt_args.h"

/* sys/sdt.h's limit. */
#define USDT_MAX_ARGS 12
/* Longest symbol of a "sym(%rip)" operand kept; longer ones fail with -ENAMETOOLONG. */
#define USDT_SYMBOL_MAX 128

/* One parsed argument: the spec for BPF and, for rip-relative memory, where it points. */
struct usdt_arg {
	struct usdt_arg_spec spec;
	/* "sym" of a "sym(%rip)", "sym+8(%rip)" or "8+sym(%rip)" operand; "" otherwise. */
	char symbol[USDT_SYMBOL_MAX];
	/* Rip-relative memory (spec is REG_DEREF on USDT_REG_IP): the vaddr read, which
	 * usdt_notes__read fills in (symbol + offset, or the probe's vaddr + offset when there
	 * is no symbol); 0 otherwise and in what usdt_arg_parse returns. */
	uint64_t vaddr;
};

struct usdt_probe {
	const char *provider;
	const char *name;
	const char *arg_text;	   /* the argument string as written in the note; "" for none */
	uint64_t vaddr;		   /* the probe site, after the .stapsdt.base adjustment */
	uint64_t file_offset;	   /* of vaddr through the PT_LOAD headers: where the uprobe goes */
	uint64_t semaphore_vaddr;  /* 0 when the probe has no semaphore */
	uint64_t semaphore_offset; /* file offset of the semaphore (a uprobe's ref_ctr_offset) */
	struct usdt_arg args[USDT_MAX_ARGS];
	size_t arg_count;
	/* 0, or why the probe cannot be attached (-EINVAL, -ENOENT, -ENOEXEC...); error_text
	 * then says it in words, e.g. "unsupported USDT argument '8@(%rax,%rbx,8)' in
	 * otel_memory:alloc: index registers are not supported". */
	int error;
	char error_text[256];
};

struct usdt_notes;

/* Lists the probes of the ELF file at path into *out (possibly none). 0 or -errno: -ENOENT,
 * -EACCES... from open(), -EISDIR, -ENOEXEC when path is not an ELF file, -ENOMEM. The list
 * is independent of the file once read. */
int usdt_notes__read(const char *path, struct usdt_notes **out);
/* Accepts NULL. */
void usdt_notes__free(struct usdt_notes *notes);

size_t usdt_notes__count(const struct usdt_notes *notes);
/* The i-th probe in note order; NULL when i is out of range. Valid until usdt_notes__free. */
const struct usdt_probe *usdt_notes__at(const struct usdt_notes *notes, size_t i);

/* The next probe after prev (NULL: the first) named provider:name; NULL when there is no
 * more. A probe written in several places (an inlined function) has one site per place:
 *
 *	for (p = usdt_notes__find(n, "otel_memory", "alloc", NULL); p;
 *	     p = usdt_notes__find(n, "otel_memory", "alloc", p))
 */
const struct usdt_probe *usdt_notes__find(const struct usdt_notes *notes, const char *provider,
					  const char *name, const struct usdt_probe *prev);

/* The BPF spec of p's first n_args arguments (at most USDT_PROBE_MAX_ARGS). 0; p->error when
 * p is unusable; -ERANGE when p has fewer arguments or n_args is above the limit. On error,
 * message (when not NULL) gets a sentence naming the probe. */
int usdt_probe__spec(const struct usdt_probe *p, size_t n_args, struct usdt_probe_spec *out,
		     char *message, size_t message_size);

/* Parses an x86-64 SDT argument string ("8@%rdi -4@-20(%rbp) 8@$16 8@sym(%rip)") into out[]
 * (up to max) and sets *count. Rip-relative memory gets a spec relative to the probe's
 * address with the symbol left in symbol, for usdt_notes__read to resolve. A register
 * narrower than its argument ("8@%eax") is read at its own width and widened. 0, -EINVAL for
 * a malformed or unsupported argument (unknown register, missing '@', a size other than 1,
 * 2, 4 or 8, index registers), -ENAMETOOLONG for a symbol above USDT_SYMBOL_MAX, -E2BIG
 * when there are more than max arguments. */
int usdt_arg_parse(const char *text, struct usdt_arg *out, size_t max, size_t *count);

#endif
