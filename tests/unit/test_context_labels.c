/* Unit tests for profile/context_labels.c (a sample's request context into labels),
 * collect/process_context.c's payload parser (the OTel key table) and attach/context_tls.c's
 * static TLS offset: the parts of issue 15 that need no process or BPF. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "attach/context_tls.h"
#include "collect/process_context.h"
#include "profile/context_labels.h"

static const char *label(const struct context_labels *l, const char *key)
{
	for (size_t i = 0; i < l->count; i++)
		if (strcmp(l->labels[i].key, key) == 0)
			return l->labels[i].str;
	return NULL;
}

/* Appends an OTel attribute {index, length, value}. */
static void otel_attr(struct alloc_context *c, uint8_t index, const char *value)
{
	size_t n = strlen(value);

	c->data[c->bytes] = index;
	c->data[c->bytes + 1] = (uint8_t)n;
	memcpy(c->data + c->bytes + 2, value, n);
	c->bytes += (uint16_t)(2 + n);
}

static void otel_attributes_get_their_key_names(void)
{
	static const char *const names[] = { "endpoint", "tenant" };
	struct alloc_context c = { .kind = ALLOC_CONTEXT_OTEL };
	struct context_label_opts opts = { .max_value_bytes = 64 };
	struct context_labels out;

	otel_attr(&c, 1, "acme");
	otel_attr(&c, 0, "GET /reports/export");
	otel_attr(&c, 7, "x"); /* no name published for index 7 */
	otel_attr(&c, 1, "globex"); /* a repeated key: the first counts */
	context_labels__decode(&c, names, 2, &opts, &out);
	CHECK_EQ_U64(out.count, 3);
	CHECK_STR(label(&out, "endpoint"), "GET /reports/export");
	CHECK_STR(label(&out, "tenant"), "acme");
	CHECK_STR(label(&out, "attribute_7"), "x");
}

static void torn_or_absent_records_give_nothing(void)
{
	static const char *const names[] = { "endpoint" };
	struct alloc_context c = { .kind = ALLOC_CONTEXT_OTEL, .status = ALLOC_CONTEXT_TORN };
	struct context_label_opts opts = { .max_value_bytes = 64, .trace_ids = true };
	struct context_labels out;

	otel_attr(&c, 0, "GET /");
	memset(c.span_id, 1, sizeof(c.span_id));
	context_labels__decode(&c, names, 1, &opts, &out);
	CHECK_EQ_U64(out.count, 0);
	c.status = ALLOC_CONTEXT_OK;
	c.kind = ALLOC_CONTEXT_NONE;
	context_labels__decode(&c, names, 1, &opts, &out);
	CHECK_EQ_U64(out.count, 0);
}

static void values_are_cut_at_a_character_boundary(void)
{
	static const char *const names[] = { "endpoint" };
	struct alloc_context c = { .kind = ALLOC_CONTEXT_OTEL };
	struct context_label_opts opts = { .max_value_bytes = 8 };
	struct context_labels out;

	/* "/caf" then U+00E9 (2 bytes) at bytes 7-8: an 8-byte cut would split it. */
	otel_attr(&c, 0, "/api/caf\xc3\xa9s");
	context_labels__decode(&c, names, 1, &opts, &out);
	CHECK_STR(label(&out, "endpoint"), "/api/caf");
	/* Invalid bytes become U+FFFD: servers refuse a label that is not UTF-8. */
	c.bytes = 0;
	otel_attr(&c, 0, "a\xff");
	opts.max_value_bytes = 64;
	context_labels__decode(&c, names, 1, &opts, &out);
	CHECK_STR(label(&out, "endpoint"), "a\xef\xbf\xbd");
}

static void an_attribute_cut_by_the_copy_keeps_what_arrived(void)
{
	static const char *const names[] = { "endpoint" };
	struct alloc_context c = { .kind = ALLOC_CONTEXT_OTEL };
	struct context_label_opts opts = { .max_value_bytes = 64 };
	struct context_labels out;

	otel_attr(&c, 0, "/orders/123");
	c.data[1] = 200; /* says 200 bytes; only 11 were copied */
	context_labels__decode(&c, names, 1, &opts, &out);
	CHECK_STR(label(&out, "endpoint"), "/orders/123");
}

static void trace_ids_only_when_asked_and_set(void)
{
	struct alloc_context c = { .kind = ALLOC_CONTEXT_OTEL };
	struct context_label_opts opts = { .max_value_bytes = 64 };
	struct context_labels out;

	for (int i = 0; i < 16; i++)
		c.trace_id[i] = (uint8_t)(0xa0 + i);
	for (int i = 0; i < 8; i++)
		c.span_id[i] = (uint8_t)i;
	context_labels__decode(&c, NULL, 0, &opts, &out);
	CHECK_EQ_U64(out.count, 0);
	opts.trace_ids = true;
	context_labels__decode(&c, NULL, 0, &opts, &out);
	CHECK_STR(label(&out, "trace_id"), "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
	CHECK_STR(label(&out, "span_id"), "0001020304050607");
	memset(c.trace_id, 0, sizeof(c.trace_id));
	memset(c.span_id, 0, sizeof(c.span_id));
	context_labels__decode(&c, NULL, 0, &opts, &out);
	CHECK_EQ_U64(out.count, 0); /* all zero: no trace */
}

/* Appends a Custom Labels entry as the BPF program lays it out. */
static void cl_label(struct alloc_context *c, const char *key, const char *value)
{
	size_t k = strlen(key), v = strlen(value);

	c->data[c->bytes] = (uint8_t)k;
	c->data[c->bytes + 1] = (uint8_t)v;
	memcpy(c->data + c->bytes + 2, key, k);
	memcpy(c->data + c->bytes + 2 + k, value, v);
	c->bytes += (uint16_t)(2 + k + v);
}

static void custom_labels_carry_their_keys(void)
{
	struct alloc_context c = { .kind = ALLOC_CONTEXT_CUSTOM_LABELS };
	struct context_label_opts opts = { .max_value_bytes = 64 };
	struct context_labels out;

	cl_label(&c, "endpoint", "POST /orders");
	cl_label(&c, "tenant", "globex");
	cl_label(&c, "endpoint", "ignored");
	cl_label(&c, "", "no key");
	cl_label(&c, "__name__", "reserved");
	cl_label(&c, "http.route", "/a");
	cl_label(&c, "9lives", "x");
	context_labels__decode(&c, NULL, 0, &opts, &out);
	CHECK_EQ_U64(out.count, 4);
	CHECK_STR(label(&out, "http_route"), "/a"); /* a label name Pyroscope takes */
	CHECK_STR(label(&out, "_9lives"), "x");
	CHECK_STR(label(&out, "endpoint"), "POST /orders");
	CHECK_STR(label(&out, "tenant"), "globex");
	/* A length that runs past the copy ends the walk. */
	c.data[1] = 250;
	context_labels__decode(&c, NULL, 0, &opts, &out);
	CHECK_EQ_U64(out.count, 0);
}

/* ---- the process context's payload ---- */

static size_t put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

static size_t put_bytes(uint8_t *p, unsigned field, const void *data, size_t len)
{
	size_t n = put_varint(p, field << 3 | 2);

	n += put_varint(p + n, len);
	memcpy(p + n, data, len);
	return n + len;
}

/* KeyValue{key, AnyValue{string}} */
static size_t put_string_kv(uint8_t *p, const char *key, const char *value)
{
	uint8_t any[256], kv[512];
	size_t a = put_bytes(any, 1, value, strlen(value));
	size_t k = put_bytes(kv, 1, key, strlen(key));

	k += put_bytes(kv + k, 2, any, a);
	return put_bytes(p, 2, kv, k);
}

/* ProcessContext{extra_attributes: [schema?, key map]} with the given names. */
static size_t payload_with_keys(uint8_t *p, const char *schema, const char *const *names,
				size_t n)
{
	uint8_t array[1024], any[1100], kv[1200], item[300];
	size_t a = 0, len = 0, x, k;

	if (schema)
		len += put_string_kv(p, "threadlocal.schema_version", schema);
	for (size_t i = 0; i < n; i++) {
		x = put_bytes(item, 1, names[i], strlen(names[i]));
		a += put_bytes(array + a, 1, item, x);
	}
	x = put_bytes(any, 5, array, a);
	k = put_bytes(kv, 1, "threadlocal.attribute_key_map", 29);
	k += put_bytes(kv + k, 2, any, x);
	return len + put_bytes(p + len, 2, kv, k);
}

static void the_key_table_is_read_from_the_payload(void)
{
	static const char *const names[] = { "http_route", "http_method", "user_id" };
	struct process_context_keys keys = { 0 };
	uint8_t p[4096];
	size_t n = payload_with_keys(p, "tlsdesc_v1_dev", names, 3);

	CHECK_EQ_U64(process_context__parse_keys(p, n, &keys), 0);
	CHECK_EQ_U64(keys.count, 3);
	CHECK_STR(keys.names[0], "http_route");
	CHECK_STR(keys.names[2], "user_id");
	process_context_keys__clear(&keys);
	/* No schema given: taken as this one. Another schema: not ours to read. */
	n = payload_with_keys(p, NULL, names, 3);
	CHECK_EQ_U64(process_context__parse_keys(p, n, &keys), 0);
	process_context_keys__clear(&keys);
	n = payload_with_keys(p, "go_pprof_labels", names, 3);
	CHECK(process_context__parse_keys(p, n, &keys) == -ENOENT);
}

static void malformed_payloads_are_refused(void)
{
	static const char *const names[] = { "endpoint", "tenant" };
	struct process_context_keys keys = { 0 };
	uint8_t p[4096];
	size_t n = payload_with_keys(p, "tlsdesc_v1", names, 2);

	/* Every truncation either parses (a prefix is a valid message) or is refused; none
	 * reads past the end (run under ASan to see it). */
	for (size_t cut = 0; cut < n; cut++) {
		int ret = process_context__parse_keys(p, cut, &keys);

		CHECK(ret == 0 || ret == -EBADMSG || ret == -ENOENT);
		process_context_keys__clear(&keys);
	}
	p[1] = 0xff; /* a length far past the end */
	CHECK(process_context__parse_keys(p, n, &keys) == -EBADMSG);
	CHECK(process_context__parse_keys(p, 0, &keys) == -ENOENT);
}

static void static_tls_offsets_follow_variant_two(void)
{
	/* A 0x68-byte TLS segment aligned to 8: the block is 0x68 below the thread pointer. */
	CHECK(context_tls_static_offset(0x20, 0x68, 8) == 0x20 - 0x68);
	/* Rounded up to the alignment. */
	CHECK(context_tls_static_offset(0, 0x61, 64) == -0x80);
}

int main(void)
{
	RUN(otel_attributes_get_their_key_names);
	RUN(torn_or_absent_records_give_nothing);
	RUN(values_are_cut_at_a_character_boundary);
	RUN(an_attribute_cut_by_the_copy_keeps_what_arrived);
	RUN(trace_ids_only_when_asked_and_set);
	RUN(custom_labels_carry_their_keys);
	RUN(the_key_table_is_read_from_the_payload);
	RUN(malformed_payloads_are_refused);
	RUN(static_tls_offsets_follow_variant_two);
	return unit_summary("context_labels");
}
