/* Ring buffer draining through libbpf's consumer; the record layout is checked here once so
 * later stages can trust it. */
#include <errno.h>
#include <stdlib.h>

#include <bpf/libbpf.h>

#include "sample_reader.h"

struct sample_reader {
	struct ring_buffer *ring;
	sample_handler_fn handler;
	void *ctx;
	uint64_t malformed;
};

static int on_record(void *ctx, void *data, size_t size)
{
	struct sample_reader *reader = ctx;

	if (size < sizeof(struct alloc_sample)) {
		reader->malformed++;
		return 0;
	}
	return reader->handler(data, reader->ctx);
}

int sample_reader__new(int ringbuf_fd, sample_handler_fn handler, void *ctx,
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
