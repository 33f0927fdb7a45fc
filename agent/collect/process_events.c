/* Exec and fork notices: libbpf's ring consumer appends each record to a growable batch. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/libbpf.h>

#include "process_events.h"
#include "util/grow.h"

struct process_events {
	struct ring_buffer *ring;
	struct process_event *batch;
	size_t n, cap;
	uint64_t malformed, lost;
};

static int on_record(void *ctx, void *data, size_t size)
{
	struct process_events *events = ctx;

	if (size != sizeof(struct process_event)) {
		events->malformed++;
		return 0;
	}
	/* The batch grows to at most the ring's capacity in records (256 KiB / 24). */
	if (array_grow((void **)&events->batch, &events->cap, events->n, sizeof(*events->batch),
		       64)) {
		events->lost++; /* libbpf consumes the record whatever we return */
		return 0;
	}
	memcpy(&events->batch[events->n++], data, sizeof(struct process_event));
	return 0;
}

int process_events__new(int ringbuf_fd, struct process_events **out)
{
	struct process_events *events = calloc(1, sizeof(*events));

	*out = NULL;
	if (!events)
		return -ENOMEM;
	events->ring = ring_buffer__new(ringbuf_fd, on_record, events, NULL);
	if (!events->ring) {
		int ret = errno ? -errno : -EINVAL;

		free(events);
		return ret;
	}
	*out = events;
	return 0;
}

void process_events__free(struct process_events *events)
{
	if (!events)
		return;
	ring_buffer__free(events->ring);
	free(events->batch);
	free(events);
}

int process_events__fd(const struct process_events *events)
{
	return ring_buffer__epoll_fd(events->ring);
}

int process_events__drain(struct process_events *events, const struct process_event **batch,
			  size_t *n)
{
	int ret;

	events->n = 0;
	ret = ring_buffer__consume(events->ring);
	*batch = events->batch;
	*n = events->n;
	return ret < 0 ? ret : 0;
}

uint64_t process_events__malformed(const struct process_events *events)
{
	return events->malformed;
}

uint64_t process_events__lost(const struct process_events *events)
{
	return events->lost;
}
