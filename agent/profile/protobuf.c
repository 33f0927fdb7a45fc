/* Protocol buffers wire encoding into a growable buffer with a sticky error (see protobuf.h).
 * Nested messages get a one-byte length placeholder that is widened at the end only when the
 * body turns out to be 128 bytes or longer: most pprof samples, locations and labels are
 * short, so the usual cost is no copy at all. */
#include "profile/protobuf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PB_MIN_ALLOC 256

void pb_buffer__init(struct pb_buffer *buf, size_t max_len)
{
	buf->data = NULL;
	buf->len = 0;
	buf->cap = 0;
	buf->max_len = max_len;
	buf->err = 0;
}

void pb_buffer__release(struct pb_buffer *buf)
{
	if (!buf)
		return;
	free(buf->data);
	pb_buffer__init(buf, buf->max_len);
}

void pb_buffer__reset(struct pb_buffer *buf)
{
	buf->len = 0;
	buf->err = 0;
}

int pb_buffer__error(const struct pb_buffer *buf)
{
	return buf->err;
}

const uint8_t *pb_buffer__data(const struct pb_buffer *buf)
{
	return buf->len ? buf->data : NULL;
}

size_t pb_buffer__len(const struct pb_buffer *buf)
{
	return buf->len;
}

int pb_buffer__steal(struct pb_buffer *buf, uint8_t **data, size_t *len)
{
	*data = NULL;
	*len = 0;
	if (buf->err)
		return buf->err;
	*data = buf->data;
	*len = buf->len;
	pb_buffer__init(buf, buf->max_len);
	return 0;
}

static int pb_fail(struct pb_buffer *buf, int err)
{
	if (!buf->err)
		buf->err = err;
	return buf->err;
}

/* Make room for extra more bytes. Growth doubles so appending n bytes costs O(n) overall. */
static int pb_reserve(struct pb_buffer *buf, size_t extra)
{
	size_t need, new_cap;
	uint8_t *p;

	if (buf->err)
		return buf->err;
	if (extra > SIZE_MAX - buf->len)
		return pb_fail(buf, -ENOMEM);
	need = buf->len + extra;
	if (buf->max_len && need > buf->max_len)
		return pb_fail(buf, -E2BIG);
	if (need <= buf->cap)
		return 0;
	new_cap = buf->cap ? buf->cap : PB_MIN_ALLOC;
	while (new_cap < need) {
		if (new_cap > SIZE_MAX / 2) {
			new_cap = need;
			break;
		}
		new_cap *= 2;
	}
	if (buf->max_len && new_cap > buf->max_len)
		new_cap = buf->max_len;
	p = realloc(buf->data, new_cap);
	if (!p)
		return pb_fail(buf, -ENOMEM);
	buf->data = p;
	buf->cap = new_cap;
	return 0;
}

size_t pb_varint_size(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* Caller has reserved pb_varint_size(v) bytes at dst; returns the number written. */
static size_t pb_encode_varint(uint8_t *dst, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		dst[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	dst[n++] = (uint8_t)v;
	return n;
}

int pb_put_raw(struct pb_buffer *buf, const void *bytes, size_t len)
{
	int err = pb_reserve(buf, len);

	if (err)
		return err;
	if (len)
		memcpy(buf->data + buf->len, bytes, len);
	buf->len += len;
	return 0;
}

int pb_put_varint(struct pb_buffer *buf, uint64_t v)
{
	int err;

	/* Reserve only what this varint takes, so max_len is exact. */
	err = pb_reserve(buf, pb_varint_size(v));
	if (err)
		return err;
	buf->len += pb_encode_varint(buf->data + buf->len, v);
	return 0;
}

int pb_put_tag(struct pb_buffer *buf, uint32_t field, enum pb_wire_type wire)
{
	if (buf->err)
		return buf->err;
	if (field == 0 || field > PB_MAX_FIELD)
		return pb_fail(buf, -EINVAL);
	return pb_put_varint(buf, ((uint64_t)field << 3) | (uint64_t)wire);
}

int pb_put_uint64(struct pb_buffer *buf, uint32_t field, uint64_t v)
{
	int err = pb_put_tag(buf, field, PB_WIRE_VARINT);

	if (err)
		return err;
	return pb_put_varint(buf, v);
}

int pb_put_uint64_opt(struct pb_buffer *buf, uint32_t field, uint64_t v)
{
	if (v == 0)
		return buf->err;
	return pb_put_uint64(buf, field, v);
}

int pb_put_int64(struct pb_buffer *buf, uint32_t field, int64_t v)
{
	return pb_put_uint64(buf, field, (uint64_t)v);
}

int pb_put_int64_opt(struct pb_buffer *buf, uint32_t field, int64_t v)
{
	return pb_put_uint64_opt(buf, field, (uint64_t)v);
}

int pb_put_bool(struct pb_buffer *buf, uint32_t field, bool v)
{
	return pb_put_uint64(buf, field, v ? 1 : 0);
}

int pb_put_bool_opt(struct pb_buffer *buf, uint32_t field, bool v)
{
	return pb_put_uint64_opt(buf, field, v ? 1 : 0);
}

int pb_put_bytes(struct pb_buffer *buf, uint32_t field, const void *bytes, size_t len)
{
	int err = pb_put_tag(buf, field, PB_WIRE_LEN);

	if (!err)
		err = pb_put_varint(buf, len);
	if (!err)
		err = pb_put_raw(buf, bytes, len);
	return err;
}

int pb_put_string(struct pb_buffer *buf, uint32_t field, const char *s)
{
	if (!s)
		s = "";
	return pb_put_bytes(buf, field, s, strlen(s));
}

int pb_put_packed_uint64(struct pb_buffer *buf, uint32_t field, const uint64_t *v, size_t n)
{
	size_t body = 0, i;
	int err;

	if (buf->err || n == 0)
		return buf->err;
	/* Measure first: the length prefix precedes the values and a varint cannot be patched
	 * in place, while a second pass over n values is cheap. */
	for (i = 0; i < n; i++)
		body += pb_varint_size(v[i]);
	err = pb_put_tag(buf, field, PB_WIRE_LEN);
	if (!err)
		err = pb_put_varint(buf, body);
	if (!err)
		err = pb_reserve(buf, body);
	if (err)
		return err;
	for (i = 0; i < n; i++)
		buf->len += pb_encode_varint(buf->data + buf->len, v[i]);
	return 0;
}

int pb_put_packed_int64(struct pb_buffer *buf, uint32_t field, const int64_t *v, size_t n)
{
	/* int64 and uint64 share the varint encoding of the same 64 bits. */
	size_t body = 0, i;
	int err;

	if (buf->err || n == 0)
		return buf->err;
	for (i = 0; i < n; i++)
		body += pb_varint_size((uint64_t)v[i]);
	err = pb_put_tag(buf, field, PB_WIRE_LEN);
	if (!err)
		err = pb_put_varint(buf, body);
	if (!err)
		err = pb_reserve(buf, body);
	if (err)
		return err;
	for (i = 0; i < n; i++)
		buf->len += pb_encode_varint(buf->data + buf->len, (uint64_t)v[i]);
	return 0;
}

size_t pb_msg_begin(struct pb_buffer *buf, uint32_t field)
{
	size_t mark;

	if (pb_put_tag(buf, field, PB_WIRE_LEN))
		return 0;
	mark = buf->len;
	if (pb_put_varint(buf, 0))
		return 0;
	return mark;
}

int pb_msg_end(struct pb_buffer *buf, size_t mark)
{
	size_t body, width;
	int err;

	if (buf->err)
		return buf->err;
	/* A mark always points at a placeholder inside the buffer; anything else is misuse
	 * (mismatched begin/end) and would corrupt the output, so refuse it. */
	if (mark >= buf->len || buf->data[mark] != 0)
		return pb_fail(buf, -EINVAL);
	body = buf->len - mark - 1;
	width = pb_varint_size(body);
	if (width > 1) {
		err = pb_reserve(buf, width - 1);
		if (err)
			return err;
		memmove(buf->data + mark + width, buf->data + mark + 1, body);
		buf->len += width - 1;
	}
	pb_encode_varint(buf->data + mark, body);
	return 0;
}
