/* Ring buffer draining through libbpf's consumer; the record layout is checked here once so
 * later stages can trust it. Drop notices, from a ring of their own, become records with
 * ALLOC_SAMPLE_DROPPED and no stack, handed to the same handler. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/libbpf.h>

#include "sample_reader.h"

struct sample_reader {
	struct ring_buffer *ring;
	sample_handler_fn handler;
	void *ctx;
	uint64_t malformed;
	struct alloc_sample drop; /* the record a drop notice becomes (no stack copy) */
};

static int on_record(void *ctx, void *data, size_t size)
{
	struct sample_reader *reader = ctx;
	const struct alloc_sample *sample = data;

	/* The fixed part, and the stack copy (or kernel-walked frames) it says follows: later
	 * stages read stack_copy_bytes of it. */
	if (size < sizeof(*sample) || sample->stack_copy_bytes > size - sizeof(*sample) ||
	    sample->stack_bytes > (__s32)sizeof(sample->stack)) {
		reader->malformed++;
		return 0;
	}
	return reader->handler(data, reader->ctx);
}

static int on_drop(void *ctx, void *data, size_t size)
{
	struct sample_reader *reader = ctx;
	const struct alloc_drop *drop = data;
	struct alloc_sample *rec = &reader->drop;

	if (size < sizeof(*drop)) {
		reader->malformed++;
		return 0;
	}
	memset(rec, 0, sizeof(*rec));
	rec->pid = drop->pid;
	rec->tid = drop->pid;
	rec->size = drop->size;
	rec->weighted_bytes = drop->weighted_bytes;
	rec->entry = drop->entry;
	rec->flags = ALLOC_SAMPLE_DROPPED;
	return reader->handler(rec, reader->ctx);
}

int sample_reader__new(int ringbuf_fd, int drop_ringbuf_fd, sample_handler_fn handler, void *ctx,
		       struct sample_reader **out)
{
	struct sample_reader *reader = calloc(1, sizeof(*reader));

	*out = NULL;
	if (!reader)
		return -ENOMEM;
	reader->handler = handler;
	reader->ctx = ctx;
	reader->ring = ring_buffer__new(ringbuf_fd, on_record, reader, NULL);
	if (!reader->ring) {
		int ret = -errno;

		free(reader);
		return ret ? ret : -EINVAL;
	}
	if (drop_ringbuf_fd >= 0) {
		int ret = ring_buffer__add(reader->ring, drop_ringbuf_fd, on_drop, reader);

		if (ret) {
			sample_reader__free(reader);
			return ret;
		}
	}
	*out = reader;
	return 0;
}

void sample_reader__free(struct sample_reader *reader)
{
	if (!reader)
		return;
	ring_buffer__free(reader->ring);
	free(reader);
}

int sample_reader__drain(struct sample_reader *reader)
{
	return ring_buffer__consume(reader->ring);
}

int sample_reader__fd(const struct sample_reader *reader)
{
	return ring_buffer__epoll_fd(reader->ring);
}

uint64_t sample_reader__malformed(const struct sample_reader *reader)
{
	return reader->malformed;
}
