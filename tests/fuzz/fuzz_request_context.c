/* libFuzzer harness: request context from a target (issue 15). The first byte chooses what the
 * rest is: even, an OpenTelemetry process-context payload (process_context__parse_keys: the
 * key table a process publishes); odd, a sample's context area as the BPF program copied it
 * from a thread's record (context_labels__decode). Both come from a profiled process, so every
 * byte is hostile. Keys must come back as short valid UTF-8 without NUL; labels as label
 * names and valid UTF-8 values within the configured length (ids: their hex length). */
#include <stdbool.h>

#include "fuzz.h"
#include "collect/process_context.h"
#include "profile/context_labels.h"
#include "util/utf8_text.h"

static bool label_name_ok(const char *s)
{
	if (!*s || (*s >= '0' && *s <= '9') || strncmp(s, "__", 2) == 0)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_'))
			return false;
	return true;
}

static void check_keys(const uint8_t *data, size_t size)
{
	struct process_context_keys keys = { 0 };
	int ret = process_context__parse_keys(data, size, &keys);

	if (ret != 0 && ret != -ENOENT && ret != -EBADMSG) {
		fprintf(stderr, "process_context__parse_keys returned %d\n", ret);
		abort();
	}
	if (ret != 0 && keys.count)
		abort(); /* a refusal leaves nothing behind */
	for (size_t i = 0; i < keys.count; i++) {
		const char *name = keys.names[i];

		if (name && (strlen(name) > PROCESS_CONTEXT_MAX_KEY_BYTES ||
			     !utf8__valid(name, strlen(name)))) {
			fprintf(stderr, "key %zu is not a short UTF-8 name\n", i);
			abort();
		}
	}
	process_context_keys__clear(&keys);
}

static void check_labels(const uint8_t *data, size_t size)
{
	static const char *const names[] = { "endpoint", "tenant", NULL, "http.route" };
	struct context_label_opts opts = { .trace_ids = size & 1,
					   .max_value_bytes = 8 + (size % 121) };
	struct alloc_context ctx;
	struct context_labels out;

	memset(&ctx, 0, sizeof(ctx));
	memcpy(&ctx, data, size < sizeof(ctx) ? size : sizeof(ctx));
	context_labels__decode(&ctx, names, 4, &opts, &out);
	if (out.count > CONTEXT_LABELS_MAX)
		abort();
	for (size_t i = 0; i < out.count; i++) {
		const struct pprof_label *l = &out.labels[i];
		/* Trace and span ids are never cut: 32 and 16 hex digits. */
		size_t max = strcmp(l->key, "trace_id") == 0  ? 32
			     : strcmp(l->key, "span_id") == 0 ? 16
							       : opts.max_value_bytes;

		if (!label_name_ok(l->key) || !l->str || strlen(l->str) > max ||
		    !utf8__valid(l->str, strlen(l->str))) {
			fprintf(stderr, "label %zu is malformed\n", i);
			abort();
		}
		for (size_t j = 0; j < i; j++)
			if (strcmp(out.labels[j].key, l->key) == 0)
				abort(); /* a key twice */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!size)
		return 0;
	if (data[0] % 2 == 0)
		check_keys(data + 1, size - 1);
	else
		check_labels(data + 1, size - 1);
	return 0;
}
