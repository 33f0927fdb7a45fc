/* Unit tests for the protobuf writer (agent/profile/protobuf.c): every encoder against byte
 * vectors worked out by hand from the protobuf encoding guide (its 150, "testing" and packed
 * [3, 270, 86942] examples among them), the length patch of nested messages across the
 * one-byte boundary, and the sticky error state. */
#include "unit.h"
#include "profile/protobuf.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

static void check_bytes(const struct pb_buffer *buf, const uint8_t *want, size_t want_len,
			const char *what, int line)
{
	size_t len = pb_buffer__len(buf), i;
	const uint8_t *got = pb_buffer__data(buf);

	if (len == want_len && (len == 0 || memcmp(got, want, len) == 0))
		return;
	fprintf(stderr, "  %s:%d: %s: got %zu bytes:", __FILE__, line, what, len);
	for (i = 0; i < len && i < 32; i++)
		fprintf(stderr, " %02x", got[i]);
	fprintf(stderr, "\n    want %zu bytes:", want_len);
	for (i = 0; i < want_len && i < 32; i++)
		fprintf(stderr, " %02x", want[i]);
	fprintf(stderr, "\n");
	unit_case_failures++;
}

#define CHECK_BYTES(buf, ...)                                                                      \
	do {                                                                                       \
		static const uint8_t want_[] = {__VA_ARGS__};                                      \
		check_bytes((buf), want_, sizeof(want_), #buf, __LINE__);                          \
	} while (0)

#define CHECK_EMPTY(buf) CHECK_EQ_U64(pb_buffer__len(buf), 0)

static void test_varints(void)
{
	static const struct {
		uint64_t v;
		uint8_t bytes[10];
		size_t len;
	} vectors[] = {
	    {0, {0x00}, 1},
	    {1, {0x01}, 1},
	    {127, {0x7f}, 1},
	    {128, {0x80, 0x01}, 2},
	    {150, {0x96, 0x01}, 2},
	    {300, {0xac, 0x02}, 2},
	    {16383, {0xff, 0x7f}, 2},
	    {16384, {0x80, 0x80, 0x01}, 3},
	    {0xffffffffULL, {0xff, 0xff, 0xff, 0xff, 0x0f}, 5},
	    {UINT64_MAX, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 10},
	};
	struct pb_buffer buf;
	size_t i;

	pb_buffer__init(&buf, 0);
	for (i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		pb_buffer__reset(&buf);
		CHECK_EQ_U64(pb_put_varint(&buf, vectors[i].v), 0);
		check_bytes(&buf, vectors[i].bytes, vectors[i].len, "varint", __LINE__);
		CHECK_EQ_U64(pb_varint_size(vectors[i].v), vectors[i].len);
	}
	pb_buffer__release(&buf);
}

static void test_tagged_scalars(void)
{
	struct pb_buffer buf;

	pb_buffer__init(&buf, 0);

	CHECK_EQ_U64(pb_put_uint64(&buf, 1, 150), 0);
	CHECK_BYTES(&buf, 0x08, 0x96, 0x01);

	/* Always-written forms keep zeros; _opt forms drop the proto3 default. */
	pb_buffer__reset(&buf);
	pb_put_uint64(&buf, 2, 0);
	CHECK_BYTES(&buf, 0x10, 0x00);
	pb_buffer__reset(&buf);
	CHECK_EQ_U64(pb_put_uint64_opt(&buf, 2, 0), 0);
	CHECK_EQ_U64(pb_put_int64_opt(&buf, 2, 0), 0);
	CHECK_EQ_U64(pb_put_bool_opt(&buf, 2, false), 0);
	CHECK_EMPTY(&buf);
	pb_put_uint64_opt(&buf, 2, 1);
	CHECK_BYTES(&buf, 0x10, 0x01);

	/* int64 is two's complement in 10 bytes, not zigzag. */
	pb_buffer__reset(&buf);
	pb_put_int64(&buf, 1, -1);
	CHECK_BYTES(&buf, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01);
	pb_buffer__reset(&buf);
	pb_put_int64_opt(&buf, 12, 524288);
	CHECK_BYTES(&buf, 0x60, 0x80, 0x80, 0x20);

	pb_buffer__reset(&buf);
	pb_put_bool(&buf, 7, true);
	pb_put_bool(&buf, 8, false);
	pb_put_bool_opt(&buf, 9, true);
	CHECK_BYTES(&buf, 0x38, 0x01, 0x40, 0x00, 0x48, 0x01);

	/* Field 16 is the first whose key takes two bytes; 2^29-1 is the largest field. */
	pb_buffer__reset(&buf);
	pb_put_uint64(&buf, 16, 1);
	CHECK_BYTES(&buf, 0x80, 0x01, 0x01);
	pb_buffer__reset(&buf);
	pb_put_tag(&buf, PB_MAX_FIELD, PB_WIRE_VARINT);
	CHECK_BYTES(&buf, 0xf8, 0xff, 0xff, 0xff, 0x0f);
	pb_buffer__reset(&buf);
	pb_put_tag(&buf, 3, PB_WIRE_I64);
	pb_put_tag(&buf, 3, PB_WIRE_I32);
	CHECK_BYTES(&buf, 0x19, 0x1d);

	pb_buffer__release(&buf);
}

static void test_length_delimited(void)
{
	struct pb_buffer buf;

	pb_buffer__init(&buf, 0);
	CHECK_EQ_U64(pb_put_string(&buf, 2, "testing"), 0);
	CHECK_BYTES(&buf, 0x12, 0x07, 't', 'e', 's', 't', 'i', 'n', 'g');

	/* Empty strings are written: pprof's string_table[0] is one. */
	pb_buffer__reset(&buf);
	pb_put_string(&buf, 6, "");
	pb_put_string(&buf, 6, NULL);
	CHECK_BYTES(&buf, 0x32, 0x00, 0x32, 0x00);

	pb_buffer__reset(&buf);
	pb_put_bytes(&buf, 1, "a\0b", 3);
	CHECK_BYTES(&buf, 0x0a, 0x03, 'a', 0x00, 'b');
	pb_buffer__release(&buf);
}

static void test_packed(void)
{
	static const uint64_t u[] = {3, 270, 86942};
	static const int64_t s[] = {-1, 1};
	struct pb_buffer buf;

	pb_buffer__init(&buf, 0);
	CHECK_EQ_U64(pb_put_packed_uint64(&buf, 4, u, 3), 0);
	CHECK_BYTES(&buf, 0x22, 0x06, 0x03, 0x8e, 0x02, 0x9e, 0xa7, 0x05);

	pb_buffer__reset(&buf);
	CHECK_EQ_U64(pb_put_packed_uint64(&buf, 4, u, 0), 0);
	CHECK_EQ_U64(pb_put_packed_int64(&buf, 4, s, 0), 0);
	CHECK_EMPTY(&buf);

	pb_put_packed_int64(&buf, 2, s, 2);
	CHECK_BYTES(&buf, 0x12, 0x0b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
		    0x01);
	pb_buffer__release(&buf);
}

static void test_nested_messages(void)
{
	uint8_t body[130], want[3 + 3 + 130 + 2];
	struct pb_buffer buf;
	size_t outer, inner;

	pb_buffer__init(&buf, 0);
	outer = pb_msg_begin(&buf, 3);
	pb_put_uint64(&buf, 1, 150);
	CHECK_EQ_U64(pb_msg_end(&buf, outer), 0);
	CHECK_BYTES(&buf, 0x1a, 0x03, 0x08, 0x96, 0x01);

	/* An empty message is still present on the wire. */
	pb_buffer__reset(&buf);
	pb_msg_end(&buf, pb_msg_begin(&buf, 11));
	CHECK_BYTES(&buf, 0x5a, 0x00);

	/* Bodies of 128+ bytes need a wider length: the body must move, intact, and the outer
	 * length must count the inner one's widening. */
	memset(body, 0, sizeof(body));
	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (uint8_t)(i * 7 + 1);
	pb_buffer__reset(&buf);
	outer = pb_msg_begin(&buf, 2);
	inner = pb_msg_begin(&buf, 1);
	pb_put_raw(&buf, body, sizeof(body));
	CHECK_EQ_U64(pb_msg_end(&buf, inner), 0);
	pb_put_uint64(&buf, 2, 5);
	CHECK_EQ_U64(pb_msg_end(&buf, outer), 0);
	want[0] = 0x12;
	want[1] = 0x87; /* 135 = 1 + 2 + 130 + 2 */
	want[2] = 0x01;
	want[3] = 0x0a;
	want[4] = 0x82; /* 130 */
	want[5] = 0x01;
	memcpy(want + 6, body, sizeof(body));
	want[136] = 0x10;
	want[137] = 0x05;
	check_bytes(&buf, want, sizeof(want), "nested 130-byte body", __LINE__);
	CHECK_EQ_U64(pb_buffer__error(&buf), 0);

	/* A three-byte length. */
	{
		static uint8_t big[16384];
		const uint8_t *d;

		pb_buffer__reset(&buf);
		big[0] = 0xaa;
		big[sizeof(big) - 1] = 0x55;
		outer = pb_msg_begin(&buf, 1);
		pb_put_raw(&buf, big, sizeof(big));
		pb_msg_end(&buf, outer);
		d = pb_buffer__data(&buf);
		CHECK_EQ_U64(pb_buffer__len(&buf), 4 + sizeof(big));
		CHECK(d && d[0] == 0x0a && d[1] == 0x80 && d[2] == 0x80 && d[3] == 0x01);
		CHECK(d && d[4] == 0xaa && d[4 + sizeof(big) - 1] == 0x55);
	}
	pb_buffer__release(&buf);
}

static void test_sticky_size_limit(void)
{
	struct pb_buffer buf;
	static uint8_t sentinel;
	uint8_t *data = &sentinel;
	uint64_t one = 1;
	size_t len = 99;

	pb_buffer__init(&buf, 4);
	CHECK_EQ_U64(pb_put_uint64(&buf, 1, 150), 0);
	CHECK_EQ_U64(pb_put_string(&buf, 2, "abc"), (uint64_t)-E2BIG);
	/* Every later call reports the first error, even ones that would fit. */
	CHECK_EQ_U64(pb_put_varint(&buf, 1), (uint64_t)-E2BIG);
	CHECK_EQ_U64(pb_msg_end(&buf, pb_msg_begin(&buf, 1)), (uint64_t)-E2BIG);
	CHECK_EQ_U64(pb_put_packed_uint64(&buf, 1, &one, 1), (uint64_t)-E2BIG);
	CHECK_EQ_U64(pb_buffer__error(&buf), (uint64_t)-E2BIG);
	CHECK_EQ_U64(pb_buffer__steal(&buf, &data, &len), (uint64_t)-E2BIG);
	CHECK(data == NULL);
	CHECK_EQ_U64(len, 0);
	CHECK(pb_buffer__len(&buf) <= 4);
	pb_buffer__release(&buf);
	CHECK_EQ_U64(pb_buffer__error(&buf), 0);
	CHECK_EQ_U64(pb_put_uint64(&buf, 1, 150), 0);
	CHECK_BYTES(&buf, 0x08, 0x96, 0x01);
	pb_buffer__release(&buf);
}

static void test_out_of_memory(void)
{
	struct pb_buffer buf;
	uint8_t *data;
	size_t len;

	pb_buffer__init(&buf, 0);
	pb_put_uint64(&buf, 1, 1);
	/* No allocator can satisfy 2^60 bytes: growth must fail cleanly, before reading a byte
	 * of the (short) source. */
	CHECK_EQ_U64(pb_put_bytes(&buf, 1, "", (size_t)1 << 60), (uint64_t)-ENOMEM);
	CHECK_EQ_U64(pb_buffer__error(&buf), (uint64_t)-ENOMEM);
	CHECK_EQ_U64(pb_msg_begin(&buf, 1), 0);
	CHECK_EQ_U64(pb_msg_end(&buf, 0), (uint64_t)-ENOMEM);
	CHECK_EQ_U64(pb_put_raw(&buf, "ab", SIZE_MAX), (uint64_t)-ENOMEM);
	CHECK_EQ_U64(pb_buffer__steal(&buf, &data, &len), (uint64_t)-ENOMEM);
	CHECK(data == NULL);
	pb_buffer__release(&buf);

	/* Overflow of len + extra is out of memory too, not a wrapped small allocation. */
	pb_buffer__init(&buf, 0);
	pb_put_raw(&buf, "abc", 3);
	CHECK_EQ_U64(pb_put_raw(&buf, "", SIZE_MAX - 1), (uint64_t)-ENOMEM);
	pb_buffer__release(&buf);
}

static void test_misuse_is_an_error(void)
{
	struct pb_buffer buf;
	size_t m;

	pb_buffer__init(&buf, 0);
	CHECK_EQ_U64(pb_put_uint64(&buf, 0, 1), (uint64_t)-EINVAL);
	pb_buffer__release(&buf);

	pb_buffer__init(&buf, 0);
	CHECK_EQ_U64(pb_put_tag(&buf, PB_MAX_FIELD + 1, PB_WIRE_LEN), (uint64_t)-EINVAL);
	pb_buffer__release(&buf);

	/* Ending the same message twice, or a mark that is not one, would corrupt the output. */
	pb_buffer__init(&buf, 0);
	m = pb_msg_begin(&buf, 1);
	pb_put_uint64(&buf, 1, 1);
	CHECK_EQ_U64(pb_msg_end(&buf, m), 0);
	CHECK_EQ_U64(pb_msg_end(&buf, m), (uint64_t)-EINVAL);
	pb_buffer__release(&buf);
	pb_buffer__init(&buf, 0);
	CHECK_EQ_U64(pb_msg_end(&buf, 1000), (uint64_t)-EINVAL);
	pb_buffer__release(&buf);
}

static void test_steal_transfers_ownership(void)
{
	struct pb_buffer buf;
	uint8_t *data = NULL;
	size_t len = 0;

	pb_buffer__init(&buf, 0);
	CHECK_EQ_U64(pb_buffer__steal(&buf, &data, &len), 0);
	CHECK_EQ_U64(len, 0);
	free(data);

	pb_put_string(&buf, 1, "hi");
	CHECK_EQ_U64(pb_buffer__steal(&buf, &data, &len), 0);
	CHECK_EQ_U64(len, 4);
	CHECK(data && memcmp(data, "\x0a\x02hi", 4) == 0);
	CHECK_EQ_U64(pb_buffer__len(&buf), 0);
	CHECK(pb_buffer__data(&buf) == NULL);
	free(data);
	/* The buffer is reusable after a steal. */
	pb_put_uint64(&buf, 1, 1);
	CHECK_BYTES(&buf, 0x08, 0x01);
	pb_buffer__release(&buf);
	pb_buffer__release(NULL);
}

int main(void)
{
	RUN(test_varints);
	RUN(test_tagged_scalars);
	RUN(test_length_delimited);
	RUN(test_packed);
	RUN(test_nested_messages);
	RUN(test_sticky_size_limit);
	RUN(test_out_of_memory);
	RUN(test_misuse_is_an_error);
	RUN(test_steal_transfers_ownership);
	return unit_summary("protobuf");
}
