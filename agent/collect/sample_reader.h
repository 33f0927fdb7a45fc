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

/* Records rejected because their sections did not fit them or broke their bounds (a
 * mismatched build, or a corrupted record). */
uint64_t sample_reader__malformed(const struct sample_reader *reader);

/* Records handed to the handler (drop notices aside), and their bytes as the ring carried them
 * (without the ring's own 8-byte header): what a sample costs in the ring. */
void sample_reader__record_stats(const struct sample_reader *reader, uint64_t *records,
				 uint64_t *bytes);

/* The room a decoded sample needs: the largest stack copy or kernel walk after it. */
#define SAMPLE_DECODED_BYTES (sizeof(struct alloc_sample) + ALLOC_MAX_STACK_COPY)
_Static_assert(UNWIND_MAX_FRAMES * sizeof(__u64) <= ALLOC_MAX_STACK_COPY,
	       "kernel-walked pcs fit a decoded sample");

/* Checks the ring record data[size] (struct alloc_record and its sections) and decodes it into
 * out, which has SAMPLE_DECODED_BYTES of room. 0, or -EBADMSG when a section's length breaks
 * its bound or the sections do not fit in size (out is then untouched). Reads nothing of data
 * past what the checked lengths cover. */
int sample_record__decode(const void *data, size_t size, struct alloc_sample *out);

#endif
