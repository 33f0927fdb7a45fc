/* Request context into sample labels (see context_labels.h). Every length comes from the
 * target's memory through the BPF program, so each is checked against what is left of the
 * record before it is used. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "profile/context_labels.h"
#include "util/utf8_text.h"

/* Keys longer than this are cut like values (at a character boundary). */
#define KEY_MAX_BYTES 63

/* Makes key a label name as Pyroscope and Prometheus take them, [a-zA-Z_][a-zA-Z0-9_]*: other
 * bytes become '_' (OTel's "http.route" is "http_route"), a leading digit gets a '_' before it
 * when there is room. False for an empty name, or one starting with "__" (reserved). */
static bool label_name(char *key)
{
	size_t n = strlen(key);

	if (!n)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = key[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_'))
			key[i] = '_';
	}
	if (key[0] >= '0' && key[0] <= '9') {
		if (n >= KEY_MAX_BYTES)
			return false;
		memmove(key + 1, key, n + 1);
		key[0] = '_';
	}
	return strncmp(key, "__", 2) != 0;
}

/* Appends a label; key and value are raw bytes (not NUL-terminated). */
static void add_label(struct context_labels *out, const char *key, size_t key_len,
		      const uint8_t *value, size_t value_len, uint32_t max_value_bytes)
{
	char raw[ALLOC_CONTEXT_MAX_BYTES + 1];
	size_t used = 0, key_size, value_size;
	char *k, *v;

	/* Labels are packed in text as key NUL value NUL, one after the other. */

	if (out->count == CONTEXT_LABELS_MAX || !key_len)
		return;
	for (size_t i = 0; i < out->count; i++)
		used += strlen(out->labels[i].key) + strlen(out->labels[i].str) + 2;
	key_size = KEY_MAX_BYTES + 1;
	value_size = max_value_bytes + 1;
	if (used + key_size + value_size > sizeof(out->text))
		return;
	k = out->text + used;
	v = k + key_size;
	memcpy(raw, key, key_len < sizeof(raw) - 1 ? key_len : sizeof(raw) - 1);
	raw[key_len < sizeof(raw) - 1 ? key_len : sizeof(raw) - 1] = '\0';
	utf8__label_value(k, key_size, raw, KEY_MAX_BYTES);
	if (!label_name(k))
		return;
	/* A repeated key: the first one counts (Custom Labels v1 says so; OTel is silent). */
	for (size_t i = 0; i < out->count; i++)
		if (strcmp(out->labels[i].key, k) == 0)
			return;
	v = k + strlen(k) + 1; /* packed: the next label starts after this value */
	if (value_len > ALLOC_CONTEXT_MAX_BYTES)
		value_len = ALLOC_CONTEXT_MAX_BYTES;
	memcpy(raw, value, value_len);
	raw[value_len] = '\0';
	utf8__label_value(v, value_size, raw, max_value_bytes);
	out->labels[out->count++] = (struct pprof_label){ .key = k, .str = v };
}

static void add_hex(struct context_labels *out, const char *key, const uint8_t *id, size_t len)
{
	char hex[33];
	bool any = false;

	for (size_t i = 0; i < len; i++) {
		snprintf(hex + 2 * i, 3, "%02x", id[i]);
		any |= id[i] != 0;
	}
	if (any)
		add_label(out, key, strlen(key), (const uint8_t *)hex, 2 * len, 2 * len);
}

void context_labels__decode(const struct alloc_context *ctx, const char *const *names,
			    size_t n_names, const struct context_label_opts *opts,
			    struct context_labels *out)
{
	size_t n = ctx->bytes > ALLOC_CONTEXT_MAX_BYTES ? ALLOC_CONTEXT_MAX_BYTES : ctx->bytes;
	uint32_t max_value = opts->max_value_bytes ? opts->max_value_bytes : 1;
	const uint8_t *d = ctx->data;
	size_t off = 0;

	out->count = 0;
	out->n_ids = 0;
	if (ctx->kind == ALLOC_CONTEXT_NONE || ctx->status != ALLOC_CONTEXT_OK)
		return;
	if (max_value > CONTEXT_LABELS_MAX_VALUE_BYTES)
		max_value = CONTEXT_LABELS_MAX_VALUE_BYTES;
	if (ctx->kind == ALLOC_CONTEXT_OTEL) {
		if (opts->trace_ids) {
			add_hex(out, "trace_id", ctx->trace_id, sizeof(ctx->trace_id));
			add_hex(out, "span_id", ctx->span_id, sizeof(ctx->span_id));
			out->n_ids = out->count;
		}
		/* {key index, length, value}...; an attribute the copy cut keeps what it has. */
		while (off + 2 <= n) {
			uint8_t index = d[off], len = d[off + 1];
			size_t have = n - off - 2 < len ? n - off - 2 : len;
			char unnamed[32];

			if (index < n_names && names[index])
				add_label(out, names[index], strlen(names[index]), d + off + 2,
					  have, max_value);
			else {
				snprintf(unnamed, sizeof(unnamed), "attribute_%u", index);
				add_label(out, unnamed, strlen(unnamed), d + off + 2, have,
					  max_value);
			}
			off += 2 + (size_t)len;
		}
		return;
	}
	if (ctx->kind == ALLOC_CONTEXT_CUSTOM_LABELS) {
		while (off + 2 <= n) {
			size_t klen = d[off], vlen = d[off + 1];

			if (off + 2 + klen + vlen > n)
				break;
			add_label(out, (const char *)d + off + 2, klen, d + off + 2 + klen, vlen,
				  max_value);
			off += 2 + klen + vlen;
		}
	}
}
