/* A small protocol buffers writer: a growable byte buffer and the handful of encoders that
 * pprof Profile, Pyroscope PushRequest and Parca WriteRawRequest need. Messages are written
 * straight to the wire, without a schema or reflection; callers name the field numbers.
 *
 * Errors are sticky, curl style: the first failure (out of memory, size limit, bad argument)
 * is recorded in the buffer, every later call does nothing and returns that same error, and
 * the final pb_buffer__steal() or pb_buffer__error() reports it. So a long run of encoder
 * calls needs one check at the end; nothing ever crashes on out-of-memory.
 *
 * Ownership: the buffer owns its bytes until pb_buffer__steal() hands them to the caller or
 * pb_buffer__release() frees them. A struct pb_buffer is a plain value: initialise it with
 * pb_buffer__init() before use; its fields are private to protobuf.c. */
#ifndef ALLOCSCOPE_PROFILE_PROTOBUF_H
#define ALLOCSCOPE_PROFILE_PROTOBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Field numbers above this are invalid in protobuf (29 bits). */
#define PB_MAX_FIELD 536870911u

enum pb_wire_type {
	PB_WIRE_VARINT = 0,
	PB_WIRE_I64 = 1,
	PB_WIRE_LEN = 2,
	PB_WIRE_I32 = 5,
};

struct pb_buffer {
	uint8_t *data;
	size_t len;
	size_t cap;
	size_t max_len; /* 0: no limit other than memory */
	int err;	/* 0 or the first negative errno */
};

/* Start empty, allocating nothing yet. max_len caps the encoded size (0 = no cap); going past
 * it puts the buffer in the -E2BIG error state (Pyroscope refuses profiles above 4 MiB, say). */
void pb_buffer__init(struct pb_buffer *buf, size_t max_len);
/* Free the bytes and return to the freshly initialised state (max_len kept, error cleared).
 * Accepts NULL. */
void pb_buffer__release(struct pb_buffer *buf);
/* Forget the contents and any error but keep the allocation, for reuse. */
void pb_buffer__reset(struct pb_buffer *buf);
/* 0, or the negative errno of the first failure: -ENOMEM, -E2BIG (max_len), -EINVAL. */
int pb_buffer__error(const struct pb_buffer *buf);
/* The encoded bytes so far; valid until the next call that writes. NULL when empty. */
const uint8_t *pb_buffer__data(const struct pb_buffer *buf);
size_t pb_buffer__len(const struct pb_buffer *buf);
/* Hand the encoded bytes to the caller, who frees *data with free() (*data may be NULL when
 * *len is 0); the buffer is left empty. On a recorded error returns it, transfers nothing and
 * leaves *data NULL and *len 0: the buffer still owns its memory and must be released. */
int pb_buffer__steal(struct pb_buffer *buf, uint8_t **data, size_t *len);

/* Bytes a varint encoding of v takes: 1..10. */
size_t pb_varint_size(uint64_t v);

/* Every encoder below returns 0 or the buffer's (sticky) error. */

/* Low level: raw bytes, a bare varint, a field key. */
int pb_put_raw(struct pb_buffer *buf, const void *bytes, size_t len);
int pb_put_varint(struct pb_buffer *buf, uint64_t v);
int pb_put_tag(struct pb_buffer *buf, uint32_t field, enum pb_wire_type wire);

/* Tagged scalars. The plain forms always write (needed inside repeated, unpacked fields); the
 * _opt forms skip the proto3 default (0, false), which readers treat as the same thing. int64
 * is the protobuf int64 type: negative values take 10 bytes (two's complement), not zigzag. */
int pb_put_uint64(struct pb_buffer *buf, uint32_t field, uint64_t v);
int pb_put_uint64_opt(struct pb_buffer *buf, uint32_t field, uint64_t v);
int pb_put_int64(struct pb_buffer *buf, uint32_t field, int64_t v);
int pb_put_int64_opt(struct pb_buffer *buf, uint32_t field, int64_t v);
int pb_put_bool(struct pb_buffer *buf, uint32_t field, bool v);
int pb_put_bool_opt(struct pb_buffer *buf, uint32_t field, bool v);

/* Length-delimited. Always written, even when empty (pprof's string_table[0] is ""). A NULL
 * string is written as "". Strings are written as given: UTF-8 validity is the caller's job. */
int pb_put_bytes(struct pb_buffer *buf, uint32_t field, const void *bytes, size_t len);
int pb_put_string(struct pb_buffer *buf, uint32_t field, const char *s);

/* Packed repeated scalars: one key, one length, the varints. n == 0 writes nothing (an empty
 * repeated field is absent on the wire). */
int pb_put_packed_uint64(struct pb_buffer *buf, uint32_t field, const uint64_t *v, size_t n);
int pb_put_packed_int64(struct pb_buffer *buf, uint32_t field, const int64_t *v, size_t n);

/* Nested messages, body first: pb_msg_begin() writes the key and a one-byte length
 * placeholder and returns a mark; write the body with any encoders (nesting allowed); then
 * pb_msg_end(mark) patches the length, moving the body forward only when it is 128 bytes or
 * more. Begin/end pairs must nest properly. An empty message is still written (key + 0), as
 * presence can matter (pprof period_type). */
size_t pb_msg_begin(struct pb_buffer *buf, uint32_t field);
int pb_msg_end(struct pb_buffer *buf, size_t mark);

#endif
