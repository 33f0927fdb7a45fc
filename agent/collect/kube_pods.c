/* A cache of this node's pods from the Kubernetes API, keyed by container id.
 *
 * One thread owns the HTTP getter (export/http_client.h) and does every request; lookups only take the lock, find
 * the id in the current snapshot (a sorted array) and copy the answer out, so a slow or absent
 * API server never stalls the agent. A refresh builds a whole new snapshot and swaps it in
 * only when the answer was complete and well formed: a failed refresh changes nothing but the
 * counters and the last error.
 *
 * The answer is read by a small strict JSON reader (RFC 8259: no comments, no trailing commas,
 * valid escapes and UTF-8, numbers as the grammar has them, nothing after the value) that keeps
 * only the fields a profile label needs and skips the rest without copying. Everything it
 * holds is bounded: the answer's size, nesting, the length of a kept string, pods, containers
 * and labels per pod. Anything else is refused with the byte offset where reading stopped.
 *
 * The service account token is checked before every request and read again when its file
 * changed (the kubelet rotates projected tokens: util/secret.h), sent only in the
 * Authorization header, never logged, and wiped from every copy when it is let go. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "collect/kube_pods.h"
#include "export/http_client.h"
#include "util/log.h"
#include "util/hex.h"
#include "util/clock.h"
#include "util/secret.h"
#include "util/grow.h"

#define DEFAULT_REFRESH_INTERVAL_MS (30 * 1000)
#define DEFAULT_MISS_REFRESH_GAP_MS (2 * 1000)
#define DEFAULT_MISS_SETTLE_MS	    (10 * 1000)
#define DEFAULT_REQUEST_TIMEOUT_MS  (10 * 1000)
#define DEFAULT_MAX_RESPONSE_BYTES  ((size_t)64 << 20)

#define CONTAINER_ID_HEX 64
#define MAX_TOKEN_BYTES	 (64 * 1024)
#define JSON_MAX_DEPTH	 64
/* Names, uids, label keys and values, the service annotation: Kubernetes bounds all of these
 * far below this (a label value at 63 bytes, a key at 317). */
#define MAX_KEPT_STRING	       4096
#define MAX_PODS	       10000
#define MAX_CONTAINERS_PER_POD 1024
#define MAX_LABELS_PER_POD     1024
/* Ids looked up but not listed; the oldest is forgotten first. */
#define MISS_TABLE_SIZE 1024

/* ---- an arena for a snapshot's strings and label arrays: freed at once ---- */

struct arena_chunk {
	struct arena_chunk *next;
	size_t used, size;
	char data[];
};

struct arena {
	struct arena_chunk *head;
};

static void *arena_alloc(struct arena *arena, size_t n)
{
	struct arena_chunk *chunk = arena->head;
	size_t offset;

	n = (n + 7) & ~(size_t)7;
	if (!chunk || chunk->size - chunk->used < n) {
		size_t size = n > 64 * 1024 ? n : 64 * 1024;

		chunk = malloc(sizeof(*chunk) + size);
		if (!chunk)
			return NULL;
		chunk->next = arena->head;
		chunk->used = 0;
		chunk->size = size;
		arena->head = chunk;
	}
	offset = chunk->used;
	chunk->used += n;
	return chunk->data + offset;
}

static char *arena_strndup(struct arena *arena, const char *s, size_t n)
{
	char *copy = arena_alloc(arena, n + 1);

	if (!copy)
		return NULL;
	memcpy(copy, s, n);
	copy[n] = '\0';
	return copy;
}

static void arena_free(struct arena *arena)
{
	while (arena->head) {
		struct arena_chunk *next = arena->head->next;

		free(arena->head);
		arena->head = next;
	}
}

/* ---- the snapshot: what one successful refresh listed ---- */

struct pod_entry {
	const char *namespace_name, *name, *uid, *node;
	const char *service_annotation; /* NULL when absent or empty */
	struct kube_label *labels;
	size_t n_labels;
};

struct container_entry {
	char id[CONTAINER_ID_HEX];
	const char *name;
	size_t pod; /* index into pods */
	const char *image; /* status image; NULL when absent */
};

struct pod_snapshot {
	struct arena arena;
	struct pod_entry *pods;
	size_t n_pods, pods_cap;
	struct container_entry *containers;
	size_t n_containers, containers_cap;
};

static void snapshot_free(struct pod_snapshot *snapshot)
{
	if (!snapshot)
		return;
	arena_free(&snapshot->arena);
	free(snapshot->pods);
	free(snapshot->containers);
	free(snapshot);
}

static int compare_containers(const void *a, const void *b)
{
	return memcmp(((const struct container_entry *)a)->id,
		      ((const struct container_entry *)b)->id, CONTAINER_ID_HEX);
}

static const struct container_entry *snapshot_find(const struct pod_snapshot *snapshot,
						   const char *id)
{
	struct container_entry key;

	if (!snapshot || snapshot->n_containers == 0)
		return NULL;
	memcpy(key.id, id, CONTAINER_ID_HEX);
	return bsearch(&key, snapshot->containers, snapshot->n_containers,
		       sizeof(snapshot->containers[0]), compare_containers);
}

/* ---- a strict JSON reader over a buffer in memory ---- */

struct json_reader {
	const char *start, *p, *end;
	int depth;
	bool failed;
	bool out_of_memory;
	char message[192];
};

static int json_fail(struct json_reader *r, const char *what)
{
	if (!r->failed) {
		r->failed = true;
		snprintf(r->message, sizeof(r->message), "byte %zu: %s", (size_t)(r->p - r->start),
			 what);
	}
	return -1;
}

static int json_out_of_memory(struct json_reader *r)
{
	r->out_of_memory = true;
	return json_fail(r, "out of memory");
}

static void json_skip_whitespace(struct json_reader *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
		r->p++;
}

/* The next character after whitespace, or -1 at the end. */
static int json_peek(struct json_reader *r)
{
	json_skip_whitespace(r);
	return r->p < r->end ? (unsigned char)*r->p : -1;
}

static bool is_continuation(unsigned char c)
{
	return (c & 0xc0) == 0x80;
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF), or 0. */
static size_t utf8_sequence_length(const unsigned char *p, const unsigned char *end)
{
	size_t avail = (size_t)(end - p);
	unsigned char c = p[0];

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return avail >= 2 && is_continuation(p[1]) ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		unsigned char low = c == 0xe0 ? 0xa0 : 0x80, high = c == 0xed ? 0x9f : 0xbf;

		return avail >= 3 && p[1] >= low && p[1] <= high && is_continuation(p[2]) ? 3 : 0;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		unsigned char low = c == 0xf0 ? 0x90 : 0x80, high = c == 0xf4 ? 0x8f : 0xbf;

		return avail >= 4 && p[1] >= low && p[1] <= high && is_continuation(p[2]) &&
			       is_continuation(p[3])
			   ? 4
			   : 0;
	}
	return 0;
}

/* Four hex digits after "\u" at r->p. */
static int json_read_hex4(struct json_reader *r, unsigned *value)
{
	*value = 0;
	if (r->end - r->p < 4)
		return json_fail(r, "a \\u escape needs four hex digits");
	for (int i = 0; i < 4; i++) {
		int digit = hex_digit_value(r->p[i]);

		if (digit < 0)
			return json_fail(r, "a \\u escape needs four hex digits");
		*value = *value << 4 | (unsigned)digit;
	}
	r->p += 4;
	return 0;
}

/* Where a string's decoded bytes go: nowhere (skipped), or into buf while they fit. A
 * sequence is copied whole or not at all, so a cut string is still valid UTF-8. */
struct json_string_sink {
	char *buf;
	size_t cap, len; /* len: bytes stored */
	bool fits;
	bool has_nul;
};

static void sink_put(struct json_string_sink *sink, const char *bytes, size_t n)
{
	if (!sink->buf)
		return;
	if (sink->fits && sink->len + n < sink->cap) {
		memcpy(sink->buf + sink->len, bytes, n);
		sink->len += n;
	} else {
		sink->fits = false;
	}
}

static void sink_put_code_point(struct json_string_sink *sink, unsigned cp)
{
	char bytes[4];
	size_t n;

	if (cp == 0)
		sink->has_nul = true;
	if (cp < 0x80) {
		bytes[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		bytes[0] = (char)(0xc0 | cp >> 6);
		bytes[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		bytes[0] = (char)(0xe0 | cp >> 12);
		bytes[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		bytes[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		bytes[0] = (char)(0xf0 | cp >> 18);
		bytes[1] = (char)(0x80 | (cp >> 12 & 0x3f));
		bytes[2] = (char)(0x80 | (cp >> 6 & 0x3f));
		bytes[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	sink_put(sink, bytes, n);
}

/* An escape after the backslash at r->p. */
static int json_read_escape(struct json_reader *r, struct json_string_sink *sink)
{
	static const char simple_from[] = "\"\\/bfnrt";
	static const char simple_to[] = "\"\\/\b\f\n\r\t";
	const char *simple;
	unsigned cp, low;

	if (r->p >= r->end)
		return json_fail(r, "unterminated string");
	simple = memchr(simple_from, *r->p, sizeof(simple_from) - 1);
	if (simple) {
		sink_put(sink, &simple_to[simple - simple_from], 1);
		r->p++;
		return 0;
	}
	if (*r->p != 'u')
		return json_fail(r, "invalid escape in a string");
	r->p++;
	if (json_read_hex4(r, &cp))
		return -1;
	if (cp >= 0xdc00 && cp <= 0xdfff)
		return json_fail(r, "a low surrogate without a high one");
	if (cp >= 0xd800 && cp <= 0xdbff) {
		if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u')
			return json_fail(r, "a high surrogate without a low one");
		r->p += 2;
		if (json_read_hex4(r, &low))
			return -1;
		if (low < 0xdc00 || low > 0xdfff)
			return json_fail(r, "a high surrogate without a low one");
		cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
	}
	sink_put_code_point(sink, cp);
	return 0;
}

/* Reads the string at r->p into sink (which may have no buffer: the string is checked and
 * skipped). */
static int json_read_string(struct json_reader *r, struct json_string_sink *sink)
{
	if (json_peek(r) != '"')
		return json_fail(r, "expected a string");
	r->p++;
	for (;;) {
		unsigned char c;

		if (r->p >= r->end)
			return json_fail(r, "unterminated string");
		c = (unsigned char)*r->p;
		if (c == '"') {
			r->p++;
			break;
		}
		if (c < 0x20)
			return json_fail(r, "a control character in a string");
		if (c == '\\') {
			r->p++;
			if (json_read_escape(r, sink))
				return -1;
		} else {
			size_t n = utf8_sequence_length((const unsigned char *)r->p,
							(const unsigned char *)r->end);

			if (n == 0)
				return json_fail(r, "invalid UTF-8 in a string");
			sink_put(sink, r->p, n);
			r->p += n;
		}
	}
	if (sink->buf)
		sink->buf[sink->len] = '\0';
	return 0;
}

/* Reads a string into buf (cap bytes with the NUL); a longer one or one holding U+0000 is an
 * error. */
static int json_read_bounded_string(struct json_reader *r, char *buf, size_t cap, size_t *len)
{
	struct json_string_sink sink = {.buf = buf, .cap = cap, .fits = true};

	if (json_read_string(r, &sink))
		return -1;
	if (!sink.fits) {
		char what[64];

		snprintf(what, sizeof(what), "a string longer than %zu bytes where a name is",
			 cap - 1);
		return json_fail(r, what);
	}
	if (sink.has_nul)
		return json_fail(r, "a NUL character in a name, label or annotation");
	*len = sink.len;
	return 0;
}

static int json_read_literal(struct json_reader *r, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
		return json_fail(r, "expected a value");
	r->p += n;
	return 0;
}

static bool is_digit(int c)
{
	return c >= '0' && c <= '9';
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int json_skip_number(struct json_reader *r)
{
	if (r->p < r->end && *r->p == '-')
		r->p++;
	if (r->p >= r->end || !is_digit(*r->p))
		return json_fail(r, "expected a value");
	if (*r->p == '0') {
		r->p++;
		if (r->p < r->end && is_digit(*r->p))
			return json_fail(r, "a number with a leading zero");
	} else {
		while (r->p < r->end && is_digit(*r->p))
			r->p++;
	}
	if (r->p < r->end && *r->p == '.') {
		r->p++;
		if (r->p >= r->end || !is_digit(*r->p))
			return json_fail(r, "a digit must follow the decimal point");
		while (r->p < r->end && is_digit(*r->p))
			r->p++;
	}
	if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
		r->p++;
		if (r->p < r->end && (*r->p == '+' || *r->p == '-'))
			r->p++;
		if (r->p >= r->end || !is_digit(*r->p))
			return json_fail(r, "a digit must follow the exponent");
		while (r->p < r->end && is_digit(*r->p))
			r->p++;
	}
	return 0;
}

static int json_enter(struct json_reader *r, char open, const char *expected)
{
	if (json_peek(r) != open)
		return json_fail(r, expected);
	if (++r->depth > JSON_MAX_DEPTH)
		return json_fail(r, "nested deeper than 64 levels");
	r->p++;
	return 0;
}

static int json_begin_object(struct json_reader *r)
{
	return json_enter(r, '{', "expected an object");
}

static int json_begin_array(struct json_reader *r)
{
	return json_enter(r, '[', "expected an array");
}

/* One step through an object's members or an array's elements: false at the closing
 * character close (consumed) or on an error, else true past the separating comma. */
static bool json_next_item(struct json_reader *r, bool *first, int close, const char *expected)
{
	int c;

	if (r->failed)
		return false;
	c = json_peek(r);
	if (c == close) {
		r->p++;
		r->depth--;
		return false;
	}
	if (!*first) {
		if (c != ',') {
			json_fail(r, expected);
			return false;
		}
		r->p++;
	}
	*first = false;
	return true;
}

/* Steps to the next member of the object begun with json_begin_object: true with its key in
 * key (cut to key_cap; keys longer than that match nothing this module looks for) and r->p at
 * its value; false after the closing brace or on an error (r->failed tells). Errors are
 * sticky: once the reader failed, every step answers false. *first starts true. */
static bool json_next_member(struct json_reader *r, bool *first, char *key, size_t key_cap)
{
	struct json_string_sink sink = {.buf = key, .cap = key_cap, .fits = true};

	if (!json_next_item(r, first, '}', "expected ',' or '}' after a member"))
		return false;
	if (json_read_string(r, &sink))
		return false;
	if (!sink.fits || sink.has_nul)
		key[0] = '\0';
	if (json_peek(r) != ':') {
		json_fail(r, "expected ':' after a key");
		return false;
	}
	r->p++;
	return true;
}

/* The same for arrays: true with r->p at the next element. */
static bool json_next_element(struct json_reader *r, bool *first)
{
	return json_next_item(r, first, ']', "expected ',' or ']' after an element");
}

static int json_skip_value(struct json_reader *r)
{
	struct json_string_sink nowhere = {0};
	char key[8];
	bool first = true;

	switch (json_peek(r)) {
	case '{':
		if (json_begin_object(r))
			return -1;
		while (json_next_member(r, &first, key, sizeof(key)))
			json_skip_value(r);
		return r->failed ? -1 : 0;
	case '[':
		if (json_begin_array(r))
			return -1;
		while (json_next_element(r, &first))
			json_skip_value(r);
		return r->failed ? -1 : 0;
	case '"':
		return json_read_string(r, &nowhere);
	case 't':
		return json_read_literal(r, "true");
	case 'f':
		return json_read_literal(r, "false");
	case 'n':
		return json_read_literal(r, "null");
	case -1:
		return json_fail(r, "expected a value, found the end");
	default:
		return json_skip_number(r);
	}
}

/* Consumes a null and returns true, or leaves anything else. */
static bool json_take_null(struct json_reader *r)
{
	if (json_peek(r) != 'n')
		return false;
	return json_read_literal(r, "null") == 0;
}

/* After the top-level value: only whitespace may follow. */
static int json_finish(struct json_reader *r)
{
	if (json_peek(r) != -1)
		return json_fail(r, "data after the end of the JSON value");
	return 0;
}

/* ---- the PodList ---- */

/* The readers below stop at the first error, which the JSON reader keeps (r->failed, with
 * its message): each returns 0 or -1 so that callers can stop early, and loops over members
 * end by themselves once the reader failed. */
struct pod_list_reader {
	struct json_reader json;
	struct pod_snapshot *snapshot;
	const char *node_name;
	/* the pod being read; its labels are gathered here before they go to the arena */
	struct kube_label *labels;
	size_t n_labels, labels_cap;
};

static int read_kept_string(struct pod_list_reader *list, const char **out)
{
	char buf[MAX_KEPT_STRING + 1];
	size_t len;

	if (json_read_bounded_string(&list->json, buf, sizeof(buf), &len))
		return -1;
	*out = arena_strndup(&list->snapshot->arena, buf, len);
	return *out ? 0 : json_out_of_memory(&list->json);
}

/* True the first time a member is met in its object; a second one is refused rather than
 * guessed at. */
static bool first_time(struct json_reader *r, unsigned *seen, unsigned bit)
{
	if (*seen & bit) {
		json_fail(r, "a key appears twice in one object");
		return false;
	}
	*seen |= bit;
	return true;
}

static int compare_labels(const void *a, const void *b)
{
	return strcmp(((const struct kube_label *)a)->key, ((const struct kube_label *)b)->key);
}

static int read_labels(struct pod_list_reader *list)
{
	struct json_reader *r = &list->json;
	bool first = true;
	char key[MAX_KEPT_STRING + 1];

	if (json_take_null(r))
		return 0;
	if (json_begin_object(r))
		return -1;
	while (json_next_member(r, &first, key, sizeof(key))) {
		struct kube_label *label;

		if (key[0] == '\0')
			return json_fail(r, "an empty or overlong label key");
		if (list->n_labels == MAX_LABELS_PER_POD)
			return json_fail(r, "more than 1024 labels on one pod");
		if (array_grow((void **)&list->labels, &list->labels_cap, list->n_labels,
			       sizeof(*list->labels), 16))
			return json_out_of_memory(r);
		label = &list->labels[list->n_labels];
		label->key = arena_strndup(&list->snapshot->arena, key, strlen(key));
		if (!label->key)
			return json_out_of_memory(r);
		if (json_peek(r) != '"')
			return json_fail(r, "a label value must be a string");
		if (read_kept_string(list, &label->value))
			return -1;
		list->n_labels++;
	}
	return r->failed ? -1 : 0;
}

/* Annotations: only the service name is kept; the others (some are large, such as
 * kubectl's last-applied-configuration) are checked and skipped. */
static int read_annotations(struct pod_list_reader *list, struct pod_entry *pod)
{
	struct json_reader *r = &list->json;
	bool first = true;
	char key[64];

	if (json_take_null(r))
		return 0;
	if (json_begin_object(r))
		return -1;
	while (json_next_member(r, &first, key, sizeof(key))) {
		struct json_string_sink nowhere = {0};

		if (json_peek(r) != '"')
			return json_fail(r, "an annotation value must be a string");
		if (strcmp(key, KUBE_PODS_SERVICE_ANNOTATION) != 0)
			json_read_string(r, &nowhere);
		else if (pod->service_annotation)
			json_fail(r, "a key appears twice in one object");
		else
			read_kept_string(list, &pod->service_annotation);
	}
	return r->failed ? -1 : 0;
}

static int read_metadata(struct pod_list_reader *list, struct pod_entry *pod)
{
	enum { NAME = 1, NAMESPACE = 2, UID = 4, LABELS = 8, ANNOTATIONS = 16 };
	struct json_reader *r = &list->json;
	bool first = true;
	unsigned seen = 0;
	char key[32];

	if (json_begin_object(r))
		return -1;
	while (json_next_member(r, &first, key, sizeof(key))) {
		if (strcmp(key, "name") == 0) {
			if (first_time(r, &seen, NAME))
				read_kept_string(list, &pod->name);
		} else if (strcmp(key, "namespace") == 0) {
			if (first_time(r, &seen, NAMESPACE))
				read_kept_string(list, &pod->namespace_name);
		} else if (strcmp(key, "uid") == 0) {
			if (first_time(r, &seen, UID))
				read_kept_string(list, &pod->uid);
		} else if (strcmp(key, "labels") == 0) {
			if (first_time(r, &seen, LABELS))
				read_labels(list);
		} else if (strcmp(key, "annotations") == 0) {
			if (first_time(r, &seen, ANNOTATIONS))
				read_annotations(list, pod);
		} else {
			json_skip_value(r);
		}
	}
	return r->failed ? -1 : 0;
}

static int read_spec(struct pod_list_reader *list, struct pod_entry *pod)
{
	struct json_reader *r = &list->json;
	bool first = true;
	unsigned seen = 0;
	char key[32];

	if (json_begin_object(r))
		return -1;
	while (json_next_member(r, &first, key, sizeof(key))) {
		if (strcmp(key, "nodeName") == 0) {
			if (first_time(r, &seen, 1))
				read_kept_string(list, &pod->node);
		} else {
			json_skip_value(r);
		}
	}
	return r->failed ? -1 : 0;
}

/* "containerd://<id>", "cri-o://<id>", "docker://<id>" (any scheme): the id, or NULL for
 * anything else (empty while the container is being created). */
static const char *id_of_container_ref(const char *ref)
{
	const char *separator = strstr(ref, "://");
	const char *id;

	if (!separator || separator == ref)
		return NULL;
	id = separator + 3;
	if (strlen(id) != CONTAINER_ID_HEX)
		return NULL;
	for (size_t i = 0; i < CONTAINER_ID_HEX; i++) {
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
			return NULL;
	}
	return id;
}

static int add_container(struct pod_list_reader *list, const char *id, const char *name,
			 const char *image)
{
	struct pod_snapshot *snapshot = list->snapshot;
	struct container_entry *entry;

	if (array_grow((void **)&snapshot->containers, &snapshot->containers_cap,
		       snapshot->n_containers, sizeof(*snapshot->containers), 64))
		return json_out_of_memory(&list->json);
	entry = &snapshot->containers[snapshot->n_containers++];
	memcpy(entry->id, id, CONTAINER_ID_HEX);
	entry->name = name;
	entry->pod = snapshot->n_pods;
	entry->image = image;
	return 0;
}

/* One element of status.containerStatuses (or init-, ephemeral-): {name, containerID, image}. */
static int read_container_status(struct pod_list_reader *list, size_t *n_in_pod)
{
	struct json_reader *r = &list->json;
	const char *name = NULL, *ref = NULL, *image = NULL, *id;
	bool first = true;
	unsigned seen = 0;
	char key[32];

	if (json_begin_object(r))
		return -1;
	while (json_next_member(r, &first, key, sizeof(key))) {
		if (strcmp(key, "name") == 0) {
			if (first_time(r, &seen, 1))
				read_kept_string(list, &name);
		} else if (strcmp(key, "containerID") == 0) {
			if (first_time(r, &seen, 2))
				read_kept_string(list, &ref);
		} else if (strcmp(key, "image") == 0) {
			if (first_time(r, &seen, 4))
				read_kept_string(list, &image);
		} else {
			json_skip_value(r);
		}
	}
	if (r->failed)
		return -1;
	if (!name)
		return json_fail(r, "a container status without a name");
	id = ref ? id_of_container_ref(ref) : NULL;
	if (!id)
		return 0;
	if (++*n_in_pod > MAX_CONTAINERS_PER_POD)
		return json_fail(r, "more than 1024 containers in one pod");
	return add_container(list, id, name, image);
}

static int read_container_statuses(struct pod_list_reader *list, size_t *n_in_pod)
{
	struct json_reader *r = &list->json;
	bool first = true;

	if (json_take_null(r))
		return 0;
	if (json_begin_array(r))
		return -1;
	while (json_next_element(r, &first))
		read_container_status(list, n_in_pod);
	return r->failed ? -1 : 0;
}

static int read_status(struct pod_list_reader *list)
{
	static const char *const status_lists[] = {
	    "containerStatuses",
	    "initContainerStatuses",
	    "ephemeralContainerStatuses",
	};
	struct json_reader *r = &list->json;
	bool first = true;
	unsigned seen = 0;
	size_t n_in_pod = 0;
	char key[32];

	if (json_take_null(r))
		return 0;
	if (json_begin_object(r))
		return -1;
	while (json_next_member(r, &first, key, sizeof(key))) {
		bool skip = true;

		for (unsigned i = 0; i < 3; i++) {
			if (strcmp(key, status_lists[i]) == 0) {
				if (first_time(r, &seen, 1u << i))
					read_container_statuses(list, &n_in_pod);
				skip = false;
			}
		}
		if (skip)
			json_skip_value(r);
	}
	return r->failed ? -1 : 0;
}

/* Keeps the pod just read when it runs on this node; its labels go to the arena, sorted. */
static int keep_pod(struct pod_list_reader *list, struct pod_entry *pod, size_t containers_before)
{
	struct json_reader *r = &list->json;
	struct pod_snapshot *snapshot = list->snapshot;

	if (!pod->name || !pod->namespace_name || !pod->uid || !pod->name[0] ||
	    !pod->namespace_name[0])
		return json_fail(r, "a pod without metadata.name, namespace or uid");
	/* A pod of another node (a server that ignored the field selector) or not scheduled
	 * yet: nothing of it runs here. */
	if (!pod->node || strcmp(pod->node, list->node_name) != 0) {
		snapshot->n_containers = containers_before;
		return 0;
	}
	if (pod->service_annotation && !pod->service_annotation[0])
		pod->service_annotation = NULL;
	if (list->n_labels) {
		size_t bytes = list->n_labels * sizeof(*pod->labels);

		qsort(list->labels, list->n_labels, sizeof(*list->labels), compare_labels);
		for (size_t i = 1; i < list->n_labels; i++) {
			if (strcmp(list->labels[i - 1].key, list->labels[i].key) == 0)
				return json_fail(r, "a label key appears twice");
		}
		pod->labels = arena_alloc(&snapshot->arena, bytes);
		if (!pod->labels)
			return json_out_of_memory(r);
		memcpy(pod->labels, list->labels, bytes);
		pod->n_labels = list->n_labels;
	}
	snapshot->n_pods++;
	return 0;
}

static int read_pod(struct pod_list_reader *list)
{
	enum { METADATA = 1, SPEC = 2, STATUS = 4 };
	struct json_reader *r = &list->json;
	struct pod_snapshot *snapshot = list->snapshot;
	size_t containers_before = snapshot->n_containers;
	struct pod_entry *pod;
	bool first = true;
	unsigned seen = 0;
	char key[32];

	if (snapshot->n_pods == MAX_PODS)
		return json_fail(r, "more than 10000 pods");
	if (array_grow((void **)&snapshot->pods, &snapshot->pods_cap, snapshot->n_pods,
		       sizeof(*snapshot->pods), 32))
		return json_out_of_memory(r);
	/* Its containers point at it by index, so the pod is filled in place. */
	pod = &snapshot->pods[snapshot->n_pods];
	memset(pod, 0, sizeof(*pod));
	list->n_labels = 0;

	if (json_begin_object(r))
		return -1;
	while (json_next_member(r, &first, key, sizeof(key))) {
		if (strcmp(key, "metadata") == 0) {
			if (first_time(r, &seen, METADATA))
				read_metadata(list, pod);
		} else if (strcmp(key, "spec") == 0) {
			if (first_time(r, &seen, SPEC))
				read_spec(list, pod);
		} else if (strcmp(key, "status") == 0) {
			if (first_time(r, &seen, STATUS))
				read_status(list);
		} else {
			json_skip_value(r);
		}
	}
	if (r->failed)
		return -1;
	return keep_pod(list, pod, containers_before);
}

static int read_pod_list(struct pod_list_reader *list)
{
	enum { KIND = 1, ITEMS = 2 };
	struct json_reader *r = &list->json;
	bool first = true;
	unsigned seen = 0;
	char key[32];

	if (json_begin_object(r))
		return -1;
	while (json_next_member(r, &first, key, sizeof(key))) {
		if (strcmp(key, "kind") == 0) {
			char kind[64];
			size_t kind_len;

			if (first_time(r, &seen, KIND) &&
			    json_read_bounded_string(r, kind, sizeof(kind), &kind_len) == 0 &&
			    strcmp(kind, "PodList") != 0)
				json_fail(r, "not a PodList");
		} else if (strcmp(key, "items") == 0) {
			bool first_item = true;

			if (first_time(r, &seen, ITEMS) && json_begin_array(r) == 0) {
				while (json_next_element(r, &first_item))
					read_pod(list);
			}
		} else {
			json_skip_value(r);
		}
	}
	if (r->failed || json_finish(r))
		return -1;
	if (!(seen & ITEMS))
		return json_fail(r, "no items: not a PodList");
	return 0;
}

/* Reads a PodList. Returns 0 with a new snapshot, or -EBADMSG / -ENOMEM with the reason in
 * err. */
static int parse_pod_list(const char *text, size_t len, const char *node_name,
			  struct pod_snapshot **out, char *err, size_t err_len)
{
	struct pod_list_reader list = {
	    .json = {.start = text, .p = text, .end = text + len},
	    .node_name = node_name,
	};
	struct pod_snapshot *snapshot;
	int ret = 0;

	*out = NULL;
	snapshot = calloc(1, sizeof(*snapshot));
	if (!snapshot) {
		snprintf(err, err_len, "out of memory");
		return -ENOMEM;
	}
	list.snapshot = snapshot;
	if (read_pod_list(&list)) {
		snprintf(err, err_len, "%s", list.json.message);
		ret = list.json.out_of_memory ? -ENOMEM : -EBADMSG;
		goto out;
	}
	/* No container at all (a node without pods) leaves the array NULL, which qsort may
	 * not be given even for no elements. */
	if (snapshot->n_containers > 1)
		qsort(snapshot->containers, snapshot->n_containers,
		      sizeof(snapshot->containers[0]), compare_containers);
	for (size_t i = 1; i < snapshot->n_containers; i++) {
		if (compare_containers(&snapshot->containers[i - 1], &snapshot->containers[i]) ==
		    0) {
			snprintf(err, err_len, "container id %.64s is listed twice",
				 snapshot->containers[i].id);
			ret = -EBADMSG;
			goto out;
		}
	}
out:
	free(list.labels);
	if (ret)
		snapshot_free(snapshot);
	else
		*out = snapshot;
	return ret;
}

int kube_pods__parse_pod_list(const char *text, size_t len, const char *node_name,
			      size_t *n_pods, size_t *n_containers, char *err, size_t err_len)
{
	struct pod_snapshot *snapshot;
	int ret = parse_pod_list(text, len, node_name, &snapshot, err, err_len);

	*n_pods = ret ? 0 : snapshot->n_pods;
	*n_containers = ret ? 0 : snapshot->n_containers;
	snapshot_free(snapshot);
	return ret;
}

/* The "message" of a Kubernetes Status object (the body of an error answer), with control
 * characters made spaces; "" when the body is not one. */
static void status_message(const char *body, size_t len, char *message, size_t cap)
{
	struct json_reader r = {.start = body, .p = body, .end = body + len};
	bool first = true;
	char key[16];

	message[0] = '\0';
	if (!body || json_begin_object(&r))
		return;
	while (json_next_member(&r, &first, key, sizeof(key))) {
		struct json_string_sink sink = {.buf = message, .cap = cap, .fits = true};

		if (strcmp(key, "message") != 0 || json_peek(&r) != '"') {
			json_skip_value(&r);
			continue;
		}
		if (json_read_string(&r, &sink)) {
			message[0] = '\0';
			return;
		}
		for (char *c = message; *c; c++) {
			if ((unsigned char)*c < 0x20 || *c == 0x7f)
				*c = ' ';
		}
		return;
	}
}

/* ---- the cache ---- */

struct miss_entry {
	char id[CONTAINER_ID_HEX];
	uint64_t first_lookup_ms;
};

struct kube_pods {
	/* fixed at creation */
	char *url;
	char *node_name;
	char *token_path; /* NULL: send no token */
	struct secret token; /* the refresh thread's: read again when the file changes */
	char *ca_path;	  /* NULL: plain http */
	uint64_t refresh_interval_ms, miss_refresh_gap_ms, miss_settle_ms, request_timeout_ms;
	size_t max_response_bytes;

	pthread_t thread;
	/* The refresh thread's: kube_pods__free cancels it (safe from any thread) to abandon a
	 * request in flight at once. */
	struct http_getter *http;
	atomic_bool stopping;

	pthread_mutex_t lock;
	pthread_cond_t wake;
	/* under the lock */
	struct pod_snapshot *snapshot;
	bool refresh_wanted; /* a lookup missed since the last refresh started */
	bool attempted;
	uint64_t last_attempt_ms; /* when the last refresh started */
	bool succeeded;
	uint64_t last_success_ms; /* when the last successful refresh started */
	struct miss_entry misses[MISS_TABLE_SIZE];
	size_t n_misses, next_miss;
	struct kube_pods_stats stats;
};

/* ---- one request ---- */

static const char *http_status_hint(long status)
{
	switch (status) {
	case 401:
		return " (the API server rejected the service account token: expired, or from "
		       "another cluster)";
	case 403:
		return " (the service account needs get and list on pods: "
		       "deploy/kubernetes/rbac.yaml)";
	case 404:
		return " (is api_server the Kubernetes API?)";
	default:
		return "";
	}
}

static const char *failure_hint(enum http_get_failure failure)
{
	switch (failure) {
	case HTTP_GET_UNREACHABLE:
		return " (is the API server reachable from the pod? check kubernetes.api_server "
		       "and network policies)";
	case HTTP_GET_TLS_VERIFY:
		return " (check the service account's ca.crt)";
	default:
		return "";
	}
}

/* Lists the pods once. Returns 0 with a new snapshot, or a negative errno with a message in
 * err; *http_status is the answer's status (0 without one). */
static int fetch_pods(struct kube_pods *pods, struct pod_snapshot **out, long *http_status,
		      char *err, size_t err_len)
{
	static const char *const headers[] = {"Accept: application/json", NULL};
	struct http_get_result answer;
	int ret;

	*out = NULL;
	*http_status = 0;
	if (pods->token_path) {
		static const struct secret_rules token_rules = {
			.what = "the service account token",
			.max_bytes = MAX_TOKEN_BYTES,
			.bearer_token = true,
			.unreadable_hint = " (is automountServiceAccountToken off for the pod?)",
		};

		ret = pods->token.path ? secret_refresh(&pods->token, err, err_len)
				       : secret_from_file(&pods->token, &token_rules,
							  pods->token_path, err, err_len);
		if (ret)
			return ret;
	}
	ret = http_getter__get(pods->http, pods->url, headers,
			       pods->token_path ? pods->token.value : NULL, &answer);
	*http_status = answer.status;
	if (ret == -EFBIG) {
		snprintf(err, err_len, "GET %s: the answer is larger than %zu bytes", pods->url,
			 pods->max_response_bytes);
	} else if (ret == -ECANCELED || atomic_load(&pods->stopping)) {
		snprintf(err, err_len, "GET %s: abandoned: the agent is stopping", pods->url);
		ret = -ECANCELED;
	} else if (ret == -ENOMEM) {
		snprintf(err, err_len, "GET %s: out of memory", pods->url);
	} else if (ret) {
		snprintf(err, err_len, "GET %s: %s%s", pods->url, answer.error,
			 failure_hint(answer.failure));
	} else if (answer.status != 200) {
		char message[256];

		status_message(answer.body.data, answer.body.len, message, sizeof(message));
		snprintf(err, err_len, "GET %s: HTTP %ld%s%s%s", pods->url, answer.status,
			 message[0] ? ": " : "", message, http_status_hint(answer.status));
		ret = answer.status == 401 || answer.status == 403 ? -EACCES : -EIO;
	} else {
		char reason[224];

		ret = parse_pod_list(answer.body.data ? answer.body.data : "", answer.body.len,
				     pods->node_name, out, reason, sizeof(reason));
		if (ret == -EBADMSG)
			snprintf(err, err_len, "GET %s: malformed pod list, refused: %s", pods->url,
				 reason);
		else if (ret)
			snprintf(err, err_len, "GET %s: %s", pods->url, reason);
	}
	dynbuf_free(&answer.body);
	return ret;
}

/* ---- the refresh thread ---- */

static void timespec_at_ms(uint64_t ms, struct timespec *ts)
{
	ts->tv_sec = (time_t)(ms / 1000);
	ts->tv_nsec = (long)(ms % 1000) * 1000000L;
}

static void *refresh_thread(void *arg)
{
	struct kube_pods *pods = arg;

	pthread_mutex_lock(&pods->lock);
	while (!atomic_load(&pods->stopping)) {
		struct pod_snapshot *fresh = NULL, *old = NULL;
		char message[sizeof(pods->stats.last_error)];
		uint64_t now = (uint64_t)monotonic_ms(), due, started;
		long http_status = 0;
		int ret;

		due = now;
		if (pods->attempted) {
			due = pods->last_attempt_ms + pods->refresh_interval_ms;
			if (pods->refresh_wanted &&
			    pods->last_attempt_ms + pods->miss_refresh_gap_ms < due)
				due = pods->last_attempt_ms + pods->miss_refresh_gap_ms;
		}
		if (now < due) {
			struct timespec until;

			timespec_at_ms(due, &until);
			pthread_cond_timedwait(&pods->wake, &pods->lock, &until);
			continue;
		}
		/* Lookups that missed before this point are answered by this refresh. */
		pods->refresh_wanted = false;
		pods->attempted = true;
		pods->last_attempt_ms = started = now;
		pthread_mutex_unlock(&pods->lock);

		ret = fetch_pods(pods, &fresh, &http_status, message, sizeof(message));

		pthread_mutex_lock(&pods->lock);
		pods->stats.last_http_status = http_status;
		if (ret == 0) {
			bool was_failing = pods->stats.last_error[0] != '\0';

			old = pods->snapshot;
			pods->snapshot = fresh;
			pods->succeeded = true;
			pods->last_success_ms = started;
			pods->stats.refreshes++;
			pods->stats.pods = fresh->n_pods;
			pods->stats.containers = fresh->n_containers;
			pods->stats.last_error[0] = '\0';
			if (was_failing)
				log_info("kubernetes: pod list refreshed again: %zu pod%s",
					 fresh->n_pods, fresh->n_pods == 1 ? "" : "s");
		} else if (ret != -ECANCELED) {
			/* Said once per distinct problem: a server that stays down would
			 * otherwise fill the log every interval. */
			if (strcmp(message, pods->stats.last_error) != 0)
				log_warn("kubernetes: %s; keeping the previous pod list", message);
			pods->stats.refresh_errors++;
			snprintf(pods->stats.last_error, sizeof(pods->stats.last_error), "%s",
				 message);
		}
		if (old) {
			pthread_mutex_unlock(&pods->lock);
			snapshot_free(old);
			pthread_mutex_lock(&pods->lock);
		}
	}
	pthread_mutex_unlock(&pods->lock);
	return NULL;
}

/* ---- options ---- */

/* A DNS subdomain (RFC 1123), what Kubernetes allows as a node name. */
static bool is_node_name(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
		bool edge = i == 0 || i == n - 1 || name[i - 1] == '.' || name[i + 1] == '.';

		if (!alnum && !((c == '-' || c == '.') && !edge))
			return false;
	}
	return true;
}

/* "http(s)://host[:port][/path]" with nothing a URL must not hold; trailing slashes gone. */
static int check_api_server(const char *url, char **out, char *err, size_t err_len)
{
	const char *host;
	size_t n = strlen(url);

	if (strncmp(url, "https://", 8) == 0)
		host = url + 8;
	else if (strncmp(url, "http://", 7) == 0)
		host = url + 7;
	else
		host = NULL;
	if (!host || *host == '\0' || *host == '/') {
		snprintf(err, err_len,
			 "kubernetes api_server \"%s\" is not an https:// (or http://) URL with a "
			 "host",
			 url);
		return -EINVAL;
	}
	for (const char *c = url; *c; c++) {
		if ((unsigned char)*c <= 0x20 || *c == 0x7f || *c == '?' || *c == '#') {
			snprintf(err, err_len,
				 "kubernetes api_server \"%s\" holds a space, control character, "
				 "'?' or '#'",
				 url);
			return -EINVAL;
		}
	}
	while (n > (size_t)(host - url) && url[n - 1] == '/')
		n--;
	*out = strndup(url, n);
	return *out ? 0 : -ENOMEM;
}

/* https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, as every pod has them. */
static int api_server_from_environment(char **out, char *err, size_t err_len)
{
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");
	bool ipv6 = host && strchr(host, ':');
	char url[512];
	int written;

	if (!host || !*host) {
		snprintf(err, err_len,
			 "kubernetes: no api_server set and KUBERNETES_SERVICE_HOST is not in the "
			 "environment (not running in a pod? set kubernetes.api_server)");
		return -EINVAL;
	}
	if (!port || !*port)
		port = "443";
	if (strspn(port, "0123456789") != strlen(port)) {
		snprintf(err, err_len, "kubernetes: KUBERNETES_SERVICE_PORT \"%s\" is not a port",
			 port);
		return -EINVAL;
	}
	written =
	    snprintf(url, sizeof(url), ipv6 ? "https://[%s]:%s" : "https://%s:%s", host, port);
	if (written < 0 || (size_t)written >= sizeof(url)) {
		snprintf(err, err_len, "kubernetes: KUBERNETES_SERVICE_HOST is too long");
		return -EINVAL;
	}
	return check_api_server(url, out, err, err_len);
}

static bool is_container_id(const char *id)
{
	if (!id || strlen(id) != CONTAINER_ID_HEX)
		return false;
	for (size_t i = 0; i < CONTAINER_ID_HEX; i++) {
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
			return false;
	}
	return true;
}

static void free_fields(struct kube_pods *pods)
{
	free(pods->url);
	free(pods->node_name);
	free(pods->token_path);
	secret_free(&pods->token);
	free(pods->ca_path);
	snapshot_free(pods->snapshot);
	free(pods);
}

int kube_pods__new(const struct kube_pods_options *options, struct kube_pods **out, char *err,
		   size_t err_len)
{
	struct kube_pods *pods;
	pthread_condattr_t cond_attr;
	struct http_getter_opts http_opts;
	char *api_server = NULL;
	const char *token_path, *ca_path;
	size_t url_len;
	int ret;

	*out = NULL;
	if (err_len)
		err[0] = '\0';
	if (!options->node_name || !options->node_name[0]) {
		snprintf(err, err_len,
			 "kubernetes: no node name (set kubernetes.node_name, or NODE_NAME from "
			 "spec.nodeName in the DaemonSet)");
		return -EINVAL;
	}
	if (!is_node_name(options->node_name)) {
		snprintf(err, err_len,
			 "kubernetes: node name \"%s\" is not a Kubernetes node name (lowercase "
			 "letters, digits, '-' and '.')",
			 options->node_name);
		return -EINVAL;
	}
	if (options->api_server && options->api_server[0])
		ret = check_api_server(options->api_server, &api_server, err, err_len);
	else
		ret = api_server_from_environment(&api_server, err, err_len);
	if (ret)
		return ret;

	pods = calloc(1, sizeof(*pods));
	if (!pods) {
		free(api_server);
		return -ENOMEM;
	}
	/* The node name is a DNS subdomain: nothing in it needs escaping but the '='. */
	url_len = strlen(api_server) + strlen(options->node_name) + 96;
	pods->url = malloc(url_len);
	/* resourceVersion=0: served from the API server's cache, not from etcd. */
	if (pods->url)
		snprintf(pods->url, url_len,
			 "%s/api/v1/pods?fieldSelector=spec.nodeName%%3D%s&resourceVersion=0",
			 api_server, options->node_name);
	token_path = options->token_path ? options->token_path : KUBE_PODS_DEFAULT_TOKEN_PATH;
	ca_path =
	    options->ca_path && options->ca_path[0] ? options->ca_path : KUBE_PODS_DEFAULT_CA_PATH;
	pods->node_name = strdup(options->node_name);
	pods->token_path = token_path[0] ? strdup(token_path) : NULL;
	pods->ca_path = strncmp(api_server, "https://", 8) == 0 ? strdup(ca_path) : NULL;
	pods->refresh_interval_ms = options->refresh_interval_ms ? options->refresh_interval_ms
								 : DEFAULT_REFRESH_INTERVAL_MS;
	pods->miss_refresh_gap_ms = options->miss_refresh_gap_ms ? options->miss_refresh_gap_ms
								 : DEFAULT_MISS_REFRESH_GAP_MS;
	pods->miss_settle_ms =
	    options->miss_settle_ms ? options->miss_settle_ms : DEFAULT_MISS_SETTLE_MS;
	pods->request_timeout_ms =
	    options->request_timeout_ms ? options->request_timeout_ms : DEFAULT_REQUEST_TIMEOUT_MS;
	pods->max_response_bytes =
	    options->max_response_bytes ? options->max_response_bytes : DEFAULT_MAX_RESPONSE_BYTES;
	free(api_server);
	if (!pods->url || !pods->node_name || (token_path[0] && !pods->token_path) ||
	    (!pods->ca_path && strncmp(pods->url, "https://", 8) == 0)) {
		free_fields(pods);
		snprintf(err, err_len, "kubernetes: out of memory");
		return -ENOMEM;
	}

	http_opts.ca_file = pods->ca_path;
	http_opts.timeout_ms = (int64_t)pods->request_timeout_ms;
	http_opts.max_body_bytes = pods->max_response_bytes;
	if (http_getter__new(&http_opts, &pods->http) != 0) {
		free_fields(pods);
		snprintf(err, err_len, "kubernetes: cannot initialise libcurl");
		return -ENOMEM;
	}
	atomic_init(&pods->stopping, false);
	pthread_mutex_init(&pods->lock, NULL);
	pthread_condattr_init(&cond_attr);
	pthread_condattr_setclock(&cond_attr, CLOCK_MONOTONIC);
	pthread_cond_init(&pods->wake, &cond_attr);
	pthread_condattr_destroy(&cond_attr);
	ret = -pthread_create(&pods->thread, NULL, refresh_thread, pods);
	if (ret) {
		snprintf(err, err_len, "kubernetes: cannot start the refresh thread: %s",
			 strerror(-ret));
		pthread_cond_destroy(&pods->wake);
		pthread_mutex_destroy(&pods->lock);
		http_getter__free(pods->http);
		free_fields(pods);
		return ret;
	}
	*out = pods;
	return 0;
}

void kube_pods__free(struct kube_pods *pods)
{
	if (!pods)
		return;
	pthread_mutex_lock(&pods->lock);
	atomic_store(&pods->stopping, true);
	pthread_cond_broadcast(&pods->wake);
	pthread_mutex_unlock(&pods->lock);
	http_getter__cancel(pods->http);
	pthread_join(pods->thread, NULL);
	pthread_cond_destroy(&pods->wake);
	pthread_mutex_destroy(&pods->lock);
	http_getter__free(pods->http);
	free_fields(pods);
}

/* A copy of what a lookup found, in one allocation. */
static struct kube_container *copy_container(const struct pod_entry *pod,
					     const struct container_entry *container)
{
	size_t service_len = pod->service_annotation
				 ? strlen(pod->service_annotation)
				 : strlen(pod->namespace_name) + 1 + strlen(container->name);
	size_t size = sizeof(struct kube_container) + pod->n_labels * sizeof(struct kube_label);
	struct kube_container *copy;
	struct kube_label *labels;
	char *text;

	const char *image = container->image ? container->image : "";

	size += strlen(pod->namespace_name) + strlen(pod->name) + strlen(pod->uid) +
		strlen(container->name) + strlen(pod->node) + service_len + 6;
	size += strlen(image) + 1;
	for (size_t i = 0; i < pod->n_labels; i++)
		size += strlen(pod->labels[i].key) + strlen(pod->labels[i].value) + 2;
	copy = malloc(size);
	if (!copy)
		return NULL;
	labels = (struct kube_label *)(copy + 1);
	text = (char *)(labels + pod->n_labels);
#define PUT(field, value)                                                                          \
	do {                                                                                       \
		size_t put_len = strlen(value) + 1;                                                \
		memcpy(text, value, put_len);                                                      \
		field = text;                                                                      \
		text += put_len;                                                                   \
	} while (0)
	PUT(copy->namespace_name, pod->namespace_name);
	PUT(copy->pod, pod->name);
	PUT(copy->pod_uid, pod->uid);
	PUT(copy->container, container->name);
	PUT(copy->node, pod->node);
	if (pod->service_annotation) {
		PUT(copy->service_name, pod->service_annotation);
	} else {
		copy->service_name = text;
		text += sprintf(text, "%s/%s", pod->namespace_name, container->name) + 1;
	}
	for (size_t i = 0; i < pod->n_labels; i++) {
		PUT(labels[i].key, pod->labels[i].key);
		PUT(labels[i].value, pod->labels[i].value);
	}
	PUT(copy->image, image);
#undef PUT
	copy->labels = labels;
	copy->n_labels = pod->n_labels;
	return copy;
}

static struct miss_entry *find_miss(struct kube_pods *pods, const char *id)
{
	for (size_t i = 0; i < pods->n_misses; i++) {
		if (memcmp(pods->misses[i].id, id, CONTAINER_ID_HEX) == 0)
			return &pods->misses[i];
	}
	return NULL;
}

int kube_pods__lookup(struct kube_pods *pods, const char *container_id, struct kube_container **out)
{
	const struct container_entry *found;
	struct miss_entry *miss;
	uint64_t now;
	int ret;

	*out = NULL;
	if (!is_container_id(container_id))
		return -EINVAL;
	pthread_mutex_lock(&pods->lock);
	found = snapshot_find(pods->snapshot, container_id);
	if (found) {
		*out = copy_container(&pods->snapshot->pods[found->pod], found);
		pthread_mutex_unlock(&pods->lock);
		return *out ? 0 : -ENOMEM;
	}
	now = (uint64_t)monotonic_ms();
	miss = find_miss(pods, container_id);
	if (!miss) {
		miss = &pods->misses[pods->next_miss];
		pods->next_miss = (pods->next_miss + 1) % MISS_TABLE_SIZE;
		if (pods->n_misses < MISS_TABLE_SIZE)
			pods->n_misses++;
		memcpy(miss->id, container_id, CONTAINER_ID_HEX);
		miss->first_lookup_ms = now;
	}
	/* The kubelet reports a new container's id a moment after it starts, and the API
	 * server's cache follows: only a list taken well after the first lookup says "not
	 * here". */
	if (pods->succeeded &&
	    pods->last_success_ms >= miss->first_lookup_ms + pods->miss_settle_ms) {
		ret = -ENOENT;
	} else {
		pods->refresh_wanted = true;
		pthread_cond_signal(&pods->wake);
		ret = -EAGAIN;
	}
	pthread_mutex_unlock(&pods->lock);
	return ret;
}

void kube_container__free(struct kube_container *container)
{
	free(container);
}

void kube_pods__stats(struct kube_pods *pods, struct kube_pods_stats *stats)
{
	pthread_mutex_lock(&pods->lock);
	*stats = pods->stats;
	pthread_mutex_unlock(&pods->lock);
}
