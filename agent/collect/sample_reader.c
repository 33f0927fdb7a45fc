/* Ring buffer draining through libbpf's consumer. Each record (struct alloc_record: a header,
 * then only the sections it uses) is checked and decoded here once into the agent's form,
 * struct alloc_sample, so later stages can trust it: every section length is checked against
 * its bound and the record's size before a byte of it is read, and a record that breaks one
 * is counted as malformed and skipped. Drop notices, from a ring of their own, become records
 * with ALLOC_SAMPLE_DROPPED and no stack, handed to the same handler. */
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
	uint64_t records, record_bytes;
	struct alloc_sample *decoded; /* SAMPLE_DECODED_BYTES: the record being handled */
	struct alloc_sample drop;     /* the record a drop notice becomes (no stack copy) */
};

static size_t round8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

int sample_record__decode(const void *data, size_t size, struct alloc_sample *out)
{
	const unsigned char *bytes = data;
	struct alloc_record rec;
	size_t off = sizeof(rec), stack_max;

	if (size < sizeof(rec))
		return -EBADMSG;
	memcpy(&rec, data, sizeof(rec));
	stack_max = rec.flags & ALLOC_SAMPLE_KERNEL_FRAMES ? UNWIND_MAX_FRAMES * sizeof(__u64)
							   : ALLOC_MAX_STACK_COPY;
	/* Each section's bound first, then that they all fit: no sum below can overflow. */
	if ((rec.regs_bytes != 0 && rec.regs_bytes != ALLOC_RECORD_REGS_BYTES) ||
	    rec.fp_bytes > sizeof(out->stack) || rec.fp_bytes % sizeof(__u64) ||
	    (rec.fp_status >= 0 && (__u32)rec.fp_status != rec.fp_bytes) ||
	    (rec.fp_status < 0 && rec.fp_bytes) ||
	    (rec.context_bytes != 0 && (rec.context_bytes < ALLOC_CONTEXT_HEAD_BYTES ||
					rec.context_bytes > sizeof(out->context))) ||
	    rec.stack_bytes > stack_max ||
	    (rec.flags & ALLOC_SAMPLE_KERNEL_FRAMES && rec.stack_bytes % sizeof(__u64)) ||
	    rec.flags & ALLOC_SAMPLE_DROPPED)
		return -EBADMSG;
	if (size - off <
	    (size_t)rec.regs_bytes + rec.fp_bytes + round8(rec.context_bytes) + rec.stack_bytes)
		return -EBADMSG;

	memset(out, 0, sizeof(*out));
	out->pid = rec.pid;
	out->tid = rec.tid;
	out->size = rec.size;
	out->caller_address = rec.caller_address;
	out->time_ns = rec.time_ns;
	out->weighted_bytes = rec.weighted_bytes;
	out->entry = rec.entry;
	out->flags = rec.flags;
	out->stack_bytes = rec.fp_status;
	memcpy(out->regs, bytes + off, rec.regs_bytes);
	off += rec.regs_bytes;
	memcpy(out->stack, bytes + off, rec.fp_bytes);
	off += rec.fp_bytes;
	if (rec.context_bytes) {
		memcpy(&out->context, bytes + off, rec.context_bytes);
		/* The data the section carries, whatever its head says. */
		if (out->context.bytes > rec.context_bytes - ALLOC_CONTEXT_HEAD_BYTES)
			out->context.bytes = rec.context_bytes - ALLOC_CONTEXT_HEAD_BYTES;
	} else {
		out->context.kind = ALLOC_CONTEXT_NONE;
	}
	off += round8(rec.context_bytes);
	memcpy(out->stack_copy, bytes + off, rec.stack_bytes);
	out->stack_copy_bytes = rec.stack_bytes;
	/* The kernel's walk sends no registers: its first pc is where the sample was taken. */
	if (!rec.regs_bytes && rec.flags & ALLOC_SAMPLE_KERNEL_FRAMES && rec.stack_bytes)
		memcpy(&out->regs[ALLOC_REG_IP], out->stack_copy, sizeof(__u64));
	return 0;
}

static int on_record(void *ctx, void *data, size_t size)
{
	struct sample_reader *reader = ctx;

	if (sample_record__decode(data, size, reader->decoded)) {
		reader->malformed++;
		return 0;
	}
	reader->records++;
	reader->record_bytes += size;
	return reader->handler(reader->decoded, reader->ctx);
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
	reader->decoded = malloc(SAMPLE_DECODED_BYTES);
	if (!reader->decoded) {
		free(reader);
		return -ENOMEM;
	}
	reader->ring = ring_buffer__new(ringbuf_fd, on_record, reader, NULL);
	if (!reader->ring) {
		int ret = -errno;

		free(reader->decoded);
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
	free(reader->decoded);
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

void sample_reader__record_stats(const struct sample_reader *reader, uint64_t *records,
				 uint64_t *bytes)
{
	*records = reader->records;
	*bytes = reader->record_bytes;
}
