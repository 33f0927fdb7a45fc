/* Drains the BPF ring buffer of sampled allocations. The program submits without waking us
 * unless the ring is a quarter full, so the owner calls sample_reader__drain on a timer, when
 * sample_reader__fd polls readable, and once more at the end of a capture. */
#ifndef ALLOCSCOPE_SAMPLE_READER_H
#define ALLOCSCOPE_SAMPLE_READER_H

#include <stdint.h>

#include "alloc.h"

struct sample_reader;

/* Called once per record, in submission order (drop notices in theirs); a negative return
 * stops the drain. */
typedef int (*sample_handler_fn)(const struct alloc_sample *sample, void *ctx);

/* drop_ringbuf_fd (or -1): the drop notices' ring; each notice reaches the handler as a
 * record with ALLOC_SAMPLE_DROPPED, pid, size, entry and weighted_bytes only. */
int sample_reader__new(int ringbuf_fd, int drop_ringbuf_fd, sample_handler_fn handler, void *ctx,
		       struct sample_reader **out);
void sample_reader__free(struct sample_reader *reader);

/* Hands every record now in the buffer to the handler. Returns how many, or -errno. */
int sample_reader__drain(struct sample_reader *reader);

/* A descriptor that polls readable when the program asks for an early drain (the ring is
 * filling up); add it to the owner's poll set. */
int sample_reader__fd(const struct sample_reader *reader);

/* Records rejected because their size did not match struct alloc_sample (a mismatched build). */
uint64_t sample_reader__malformed(const struct sample_reader *reader);

#endif
