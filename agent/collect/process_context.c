/* Reading a process's OpenTelemetry process context (see process_context.h): the mapping is
 * found by name in /proc/PID/maps, read through /proc/PID/mem with the specification's
 * seqlock (published_at_ns read before and after the payload; 0 means an update is under way),
 * and the payload decoded with a minimal protobuf reader: only length-delimited and varint
 * fields are walked, everything else is skipped, and every length is checked against what
 * is left, so a hostile payload costs at most its (bounded) size. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "collect/process_context.h"
#include "symbolize/proc_maps.h"
#include "util/utf8_text.h"

struct otel_ctx_header {
	char signature[8];
	uint32_t version;
	uint32_t payload_size;
	uint64_t published_at_ns;
	uint64_t payload;
};
_Static_assert(sizeof(struct otel_ctx_header) == 32, "OTEP 4719's header is 32 bytes");

struct pb_reader {
	const uint8_t *p, *end;
};

static bool pb_varint(struct pb_reader *r, uint64_t *out)
{
	uint64_t v = 0;

	for (int shift = 0; shift < 64 && r->p < r->end; shift += 7) {
		uint8_t b = *r->p++;

		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*out = v;
			return true;
		}
	}
	return false;
}

/* The next field: its number, wire type and, for length-delimited ones, its bytes. False at
 * the end or on malformed input (*bad set). */
static bool pb_next(struct pb_reader *r, uint32_t *field, struct pb_reader *bytes, bool *bad)
{
	uint64_t tag, v;

	*bad = false;
	if (r->p >= r->end)
		return false;
	if (!pb_varint(r, &tag))
		goto bad;
	*field = (uint32_t)(tag >> 3);
	bytes->p = bytes->end = NULL;
	switch (tag & 7) {
	case 0:
		if (!pb_varint(r, &v))
			goto bad;
		return true;
	case 1:
		if (r->end - r->p < 8)
			goto bad;
		r->p += 8;
		return true;
	case 2:
		if (!pb_varint(r, &v) || v > (uint64_t)(r->end - r->p))
			goto bad;
		bytes->p = r->p;
		bytes->end = r->p + v;
		r->p += v;
		return true;
	case 5:
		if (r->end - r->p < 4)
			goto bad;
		r->p += 4;
		return true;
	default:
		goto bad;
	}
bad:
	*bad = true;
	return false;
}

/* AnyValue's string_value (field 1), or false. */
static bool any_string(struct pb_reader any, struct pb_reader *out)
{
	struct pb_reader f;
	uint32_t field;
	bool bad, found = false;

	while (pb_next(&any, &field, &f, &bad))
		if (field == 1 && f.p) {
			*out = f;
			found = true;
		}
	return found && !bad;
}

/* AnyValue's array_value (field 5). */
static bool any_array(struct pb_reader any, struct pb_reader *out)
{
	struct pb_reader f;
	uint32_t field;
	bool bad, found = false;

	while (pb_next(&any, &field, &f, &bad))
		if (field == 5 && f.p) {
			*out = f;
			found = true;
		}
	return found && !bad;
}

static bool bytes_equal(struct pb_reader s, const char *text)
{
	size_t len = strlen(text);

	return (size_t)(s.end - s.p) == len && memcmp(s.p, text, len) == 0;
}

struct key_map_search {
	bool have_map, have_schema, schema_ok;
	struct pb_reader map; /* ArrayValue */
};

/* One KeyValue {key = 1, value = 2}. */
static int look_at_key_value(struct pb_reader kv, struct key_map_search *s)
{
	struct pb_reader f, key = { 0 }, value = { 0 }, text;
	uint32_t field;
	bool bad;

	while (pb_next(&kv, &field, &f, &bad)) {
		if (field == 1 && f.p)
			key = f;
		else if (field == 2 && f.p)
			value = f;
	}
	if (bad)
		return -EBADMSG;
	if (!key.p || !value.p)
		return 0;
	if (bytes_equal(key, "threadlocal.attribute_key_map")) {
		if (any_array(value, &s->map))
			s->have_map = true;
	} else if (bytes_equal(key, "threadlocal.schema_version")) {
		s->have_schema = true;
		s->schema_ok = any_string(value, &text) && text.end - text.p >= 10 &&
			       memcmp(text.p, "tlsdesc_v1", 10) == 0;
	}
	return 0;
}

void process_context_keys__clear(struct process_context_keys *keys)
{
	for (size_t i = 0; i < keys->count; i++)
		free(keys->names[i]);
	keys->count = 0;
}

int process_context__parse_keys(const uint8_t *payload, size_t len,
				struct process_context_keys *keys)
{
	struct pb_reader r = { payload, payload + len }, f, g, text;
	struct key_map_search s = { 0 };
	uint32_t field, inner;
	bool bad, bad2;
	int ret;

	keys->count = 0;
	/* ProcessContext: resource = 1 (Resource: attributes = 1), extra_attributes = 2. The
	 * key table belongs in extra_attributes; earlier drafts put it among the resource's. */
	while (pb_next(&r, &field, &f, &bad)) {
		if (!f.p)
			continue;
		if (field == 2) {
			ret = look_at_key_value(f, &s);
			if (ret)
				return ret;
		} else if (field == 1) {
			while (pb_next(&f, &inner, &g, &bad2))
				if (inner == 1 && g.p && (ret = look_at_key_value(g, &s)) != 0)
					return ret;
			if (bad2)
				return -EBADMSG;
		}
	}
	if (bad)
		return -EBADMSG;
	if (!s.have_map || (s.have_schema && !s.schema_ok))
		return -ENOENT;
	/* ArrayValue: values = 1, each an AnyValue with a string. */
	while (pb_next(&s.map, &field, &f, &bad)) {
		char *name = NULL;
		size_t n;

		if (field != 1 || !f.p)
			continue;
		if (keys->count == PROCESS_CONTEXT_MAX_KEYS)
			break;
		if (any_string(f, &text)) {
			n = (size_t)(text.end - text.p);
			if (n && n <= PROCESS_CONTEXT_MAX_KEY_BYTES &&
			    utf8__valid((const char *)text.p, n) &&
			    !memchr(text.p, '\0', n)) {
				name = strndup((const char *)text.p, n);
				if (!name) {
					process_context_keys__clear(keys);
					return -ENOMEM;
				}
			}
		}
		keys->names[keys->count++] = name;
	}
	if (bad) {
		process_context_keys__clear(keys);
		return -EBADMSG;
	}
	return 0;
}

static bool is_context_mapping(const char *path)
{
	return strncmp(path, "[anon_shmem:OTEL_CTX]", 21) == 0 ||
	       strncmp(path, "[anon:OTEL_CTX]", 15) == 0 ||
	       strncmp(path, "/memfd:OTEL_CTX", 15) == 0;
}

static int read_exact(int fd, uint64_t addr, void *buf, size_t len)
{
	ssize_t n = pread(fd, buf, len, (off_t)addr);

	if (n == (ssize_t)len)
		return 0;
	return n < 0 ? -errno : -EIO;
}

int process_context__read_keys(pid_t pid, struct process_context_keys *keys)
{
	struct otel_ctx_header head, again;
	struct proc_maps *maps;
	uint64_t where = 0;
	uint8_t *payload = NULL;
	char path[64];
	int fd, ret;

	keys->count = 0;
	ret = proc_maps__read(pid, &maps);
	if (ret)
		return ret;
	for (size_t i = 0; i < proc_maps__count(maps) && !where; i++) {
		const struct proc_map_entry *e = proc_maps__entry(maps, i);

		if (e->readable && is_context_mapping(e->path) && e->end - e->start >= 32)
			where = e->start;
	}
	proc_maps__free(maps);
	if (!where)
		return -ENOENT;
	snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ret = read_exact(fd, where, &head, sizeof(head));
	if (ret)
		goto out;
	ret = -ENOENT;
	if (memcmp(head.signature, "OTEL_CTX", 8) != 0 || head.version != 2)
		goto out;
	ret = -EAGAIN;
	if (!head.published_at_ns)
		goto out;
	ret = -EBADMSG;
	if (!head.payload_size || head.payload_size > PROCESS_CONTEXT_MAX_PAYLOAD)
		goto out;
	payload = malloc(head.payload_size);
	ret = -ENOMEM;
	if (!payload)
		goto out;
	ret = read_exact(fd, head.payload, payload, head.payload_size);
	if (ret)
		goto out;
	ret = read_exact(fd, where, &again, sizeof(again));
	if (ret)
		goto out;
	ret = -EAGAIN;
	if (memcmp(&head, &again, sizeof(head)) != 0)
		goto out;
	ret = process_context__parse_keys(payload, head.payload_size, keys);
out:
	free(payload);
	close(fd);
	return ret;
}
