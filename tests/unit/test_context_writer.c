/* Unit tests for liballocscope-context (sampler/context/): the record it publishes is laid out
 * byte for byte as OTEP 4947 says, sets replace and remove attributes, scopes restore what they
 * saved, a set that does not fit changes nothing, and the process context it maps is found and
 * read by the agent's own reader (collect/process_context.c) with the key table given. */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "unit.h"
#include "allocscope_context.h"
#include "collect/process_context.h"

_Static_assert(sizeof(struct otel_thread_ctx_record) == 640, "OTEP 4947: 640 bytes");
_Static_assert(offsetof(struct otel_thread_ctx_record, valid) == 24, "valid at 24");
_Static_assert(offsetof(struct otel_thread_ctx_record, attrs_data_size) == 26, "size at 26");
_Static_assert(offsetof(struct otel_thread_ctx_record, attrs_data) == 28, "attrs at 28");

static void sets_lay_attributes_out_as_the_spec_says(void)
{
	struct otel_thread_ctx_record *r;

	allocscope_context_clear();
	CHECK(otel_thread_ctx_v1 == NULL);
	CHECK_EQ_U64(allocscope_context_set(1, "GET", 3), 0);
	CHECK_EQ_U64(allocscope_context_set(2, "/api/v1", 7), 0);
	r = otel_thread_ctx_v1;
	CHECK(r != NULL);
	if (!r)
		return;
	CHECK_EQ_U64(r->valid, 1);
	CHECK_EQ_U64(r->attrs_data_size, 2 + 3 + 2 + 7);
	CHECK(memcmp(r->attrs_data, "\x01\x03GET\x02\x07/api/v1", 14) == 0);
	/* The same length: replaced in place. Another length: moved to the end. */
	CHECK_EQ_U64(allocscope_context_set(1, "PUT", 3), 0);
	CHECK(memcmp(r->attrs_data, "\x01\x03PUT\x02\x07/api/v1", 14) == 0);
	CHECK_EQ_U64(allocscope_context_set(1, "DELETE", 6), 0);
	CHECK(memcmp(r->attrs_data, "\x02\x07/api/v1\x01\x06" "DELETE", 17) == 0);
	allocscope_context_unset(2);
	CHECK_EQ_U64(r->attrs_data_size, 8);
	CHECK(memcmp(r->attrs_data, "\x01\x06" "DELETE", 8) == 0);
	CHECK_EQ_U64(r->valid, 1);
	allocscope_context_clear();
	CHECK(otel_thread_ctx_v1 == NULL);
}

static void scopes_restore_what_they_saved(void)
{
	struct allocscope_context_scope outer, inner;

	allocscope_context_clear();
	CHECK_EQ_U64(allocscope_context_push(&outer, 0, "/a", 2), 0);
	CHECK_EQ_U64(allocscope_context_push(&inner, 0, "/b", 2), 0);
	CHECK(memcmp(otel_thread_ctx_v1->attrs_data, "\x00\x02/b", 4) == 0);
	allocscope_context_pop(&inner);
	CHECK(otel_thread_ctx_v1 && memcmp(otel_thread_ctx_v1->attrs_data, "\x00\x02/a", 4) == 0);
	allocscope_context_pop(&outer);
	/* Nothing was attached before the outer push: nothing is after its pop. */
	CHECK(otel_thread_ctx_v1 == NULL);
}

static void a_set_that_does_not_fit_changes_nothing(void)
{
	char big[255];
	int ret = 0;

	memset(big, 'x', sizeof(big));
	allocscope_context_clear();
	CHECK_EQ_U64(allocscope_context_set(0, big, 255), 0);
	CHECK_EQ_U64(allocscope_context_set(1, big, 255), 0);
	ret = allocscope_context_set(2, big, 255);
	CHECK(ret == -ENOSPC);
	CHECK_EQ_U64(otel_thread_ctx_v1->attrs_data_size, 2 * 257);
	CHECK_EQ_U64(otel_thread_ctx_v1->valid, 1);
	/* Longer than 255: cut to 255 (the length is a byte). */
	allocscope_context_clear();
	{
		char longer[300];

		memset(longer, 'y', sizeof(longer));
		CHECK_EQ_U64(allocscope_context_set(0, longer, sizeof(longer)), 0);
		CHECK_EQ_U64(otel_thread_ctx_v1->attrs_data[1], 255);
	}
	allocscope_context_clear();
}

static void the_process_context_names_the_keys(void)
{
	static const char *const keys[] = { "endpoint", "tenant" };
	struct process_context_keys read = { 0 };

	CHECK(allocscope_context_init(NULL, 0) == -EINVAL);
	CHECK(allocscope_context_init((const char *const[]){ "" }, 1) == -EINVAL);
	CHECK_EQ_U64(allocscope_context_init(keys, 2), 0);
	CHECK_EQ_U64(process_context__read_keys(getpid(), &read), 0);
	CHECK_EQ_U64(read.count, 2);
	CHECK_STR(read.names[0], "endpoint");
	CHECK_STR(read.names[1], "tenant");
	process_context_keys__clear(&read);
	/* Only the published keys may be set now. */
	CHECK(allocscope_context_set(2, "x", 1) == -EINVAL);
}

int main(void)
{
	RUN(sets_lay_attributes_out_as_the_spec_says);
	RUN(scopes_restore_what_they_saved);
	RUN(a_set_that_does_not_fit_changes_nothing);
	RUN(the_process_context_names_the_keys);
	return unit_summary("context_writer");
}
