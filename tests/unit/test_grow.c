/* The bounded growable buffer and array growth (agent/util/grow.h): a buffer never passes its
 * maximum, says so instead, and keeps what it had. */
#include <errno.h>
#include <stdlib.h>

#include "unit.h"
#include "util/grow.h"

static void test_dynbuf_appends_and_terminates(void)
{
	struct dynbuf b;
	char big[1000];
	size_t len;
	char *data;

	dynbuf_init(&b, 4096);
	CHECK(b.data == NULL && b.len == 0);
	CHECK(dynbuf_add(&b, "pod", 3) == 0);
	CHECK(dynbuf_add(&b, "list", 4) == 0);
	CHECK_STR(b.data, "podlist");
	memset(big, 'x', sizeof(big));
	for (int i = 0; i < 4; i++)
		CHECK(dynbuf_add(&b, big, sizeof(big)) == 0);
	CHECK_EQ_U64(b.len, 4007);
	CHECK(b.data[b.len] == '\0');
	data = dynbuf_take(&b, &len);
	CHECK_EQ_U64(len, 4007);
	CHECK(data && memcmp(data, "podlistx", 8) == 0);
	CHECK(b.data == NULL && b.len == 0 && b.max == 4096);
	free(data);
}

static void test_dynbuf_refuses_past_its_max(void)
{
	struct dynbuf b;

	dynbuf_init(&b, 10);
	CHECK(dynbuf_add(&b, "0123456789", 10) == 0);
	CHECK(dynbuf_add(&b, "a", 1) == -EFBIG);
	CHECK_EQ_U64(b.len, 10);
	CHECK_STR(b.data, "0123456789");
	CHECK(b.cap <= 11);
	dynbuf_free(&b);
	CHECK(dynbuf_add(&b, "0123456789a", 11) == -EFBIG);
	CHECK(b.data == NULL);
	CHECK(dynbuf_reserve(&b, (size_t)-1) == -EFBIG);
	dynbuf_free(&b);
}

static void test_array_grows_by_doubling(void)
{
	int *items = NULL;
	size_t cap = 0, n = 0;

	for (int i = 0; i < 100; i++) {
		CHECK(array_grow((void **)&items, &cap, n, sizeof(*items), 8) == 0);
		CHECK(n < cap);
		items[n++] = i;
	}
	CHECK_EQ_U64(cap, 128);
	CHECK(items[99] == 99 && items[0] == 0);
	free(items);
}

int main(void)
{
	RUN(test_dynbuf_appends_and_terminates);
	RUN(test_dynbuf_refuses_past_its_max);
	RUN(test_array_grows_by_doubling);
	return unit_summary("grow");
}
