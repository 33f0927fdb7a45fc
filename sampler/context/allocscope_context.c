/* liballocscope-context (see allocscope_context.h): the OTel thread-context record of each
 * thread lives in that thread's TLS next to the pointer readers follow, so no set ever
 * allocates; the process context is one 2-page mapping holding header and payload.
 *
 * Ordering for readers that stop the thread anywhere (a profiler's BPF program, a signal
 * handler): an attached record is changed only between valid = 0 and valid = 1, each store
 * fenced against the compiler (the reader runs on this thread's CPU while it is stopped, so a
 * signal fence is the barrier that matters); a detached record is filled first and the
 * pointer stored last. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "allocscope_context.h"

#define EXPORT __attribute__((visibility("default")))

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#endif

EXPORT __thread struct otel_thread_ctx_record *otel_thread_ctx_v1;
static __thread struct otel_thread_ctx_record thread_record = { .valid = 1 };

static unsigned key_count = ALLOCSCOPE_CONTEXT_MAX_KEYS;

#define compiler_fence() __atomic_signal_fence(__ATOMIC_SEQ_CST)

static void store_valid(struct otel_thread_ctx_record *r, uint8_t v)
{
	__atomic_store_n(&r->valid, v, __ATOMIC_RELAXED);
}

/* Opens an update: returns the record and whether it is attached (then marked invalid). */
static struct otel_thread_ctx_record *begin(bool *attached)
{
	struct otel_thread_ctx_record *r = &thread_record;

	*attached = __atomic_load_n(&otel_thread_ctx_v1, __ATOMIC_RELAXED) == r;
	if (*attached) {
		store_valid(r, 0);
		compiler_fence();
	}
	return r;
}

static void end(struct otel_thread_ctx_record *r, bool attached)
{
	compiler_fence();
	store_valid(r, 1);
	if (!attached) {
		compiler_fence();
		__atomic_store_n(&otel_thread_ctx_v1, r, __ATOMIC_RELAXED);
	}
}

/* A short copy without a call into libc: values are a few dozen bytes, where the call costs
 * more than the copy (8 bytes at a time, then the tail). */
static inline void copy_value(uint8_t *dst, const char *src, size_t len)
{
	size_t i = 0;

	for (; i + 8 <= len; i += 8)
		__builtin_memcpy(dst + i, src + i, 8);
	for (; i < len; i++)
		dst[i] = (uint8_t)src[i];
}

/* Where attribute key starts in r, or -1. */
static int find_attr(const struct otel_thread_ctx_record *r, uint8_t key)
{
	size_t off = 0;

	while (off + 2 <= r->attrs_data_size) {
		if (r->attrs_data[off] == key)
			return (int)off;
		off += 2 + (size_t)r->attrs_data[off + 1];
	}
	return -1;
}

static void remove_attr(struct otel_thread_ctx_record *r, int at)
{
	size_t len, size = r->attrs_data_size;

	if (at < 0)
		return;
	len = 2 + (size_t)r->attrs_data[at + 1];
	memmove(r->attrs_data + at, r->attrs_data + at + len, size - (size_t)at - len);
	r->attrs_data_size = (uint16_t)(size - len);
}

EXPORT int allocscope_context_set(uint8_t key, const char *value, size_t len)
{
	struct otel_thread_ctx_record *r;
	size_t size, old_len = 0;
	bool attached;
	int at;

	if (key >= key_count || (len && !value))
		return -EINVAL;
	if (len > 255)
		len = 255;
	r = &thread_record;
	/* Room is checked before anything changes: a failed set leaves the record as it was. */
	at = find_attr(r, key);
	if (at >= 0)
		old_len = 2 + (size_t)r->attrs_data[at + 1];
	if (r->attrs_data_size - old_len + 2 + len > ALLOCSCOPE_CONTEXT_MAX_ATTRS_BYTES)
		return -ENOSPC;
	r = begin(&attached);
	/* The same length in place (the common case: the next request's value); else moved to
	 * the end. */
	if (at >= 0 && old_len == 2 + len) {
		copy_value(r->attrs_data + at + 2, value, len);
	} else {
		remove_attr(r, at);
		size = r->attrs_data_size;
		r->attrs_data[size] = key;
		r->attrs_data[size + 1] = (uint8_t)len;
		copy_value(r->attrs_data + size + 2, value, len);
		r->attrs_data_size = (uint16_t)(size + 2 + len);
	}
	end(r, attached);
	return 0;
}

EXPORT void allocscope_context_unset(uint8_t key)
{
	struct otel_thread_ctx_record *r;
	bool attached;
	int at = find_attr(&thread_record, key);

	if (at < 0)
		return;
	r = begin(&attached);
	remove_attr(r, at);
	end(r, attached);
}

EXPORT void allocscope_context_set_trace(const uint8_t trace_id[16], const uint8_t span_id[8])
{
	struct otel_thread_ctx_record *r;
	bool attached;

	r = begin(&attached);
	memcpy(r->trace_id, trace_id, sizeof(r->trace_id));
	memcpy(r->span_id, span_id, sizeof(r->span_id));
	end(r, attached);
}

EXPORT void allocscope_context_clear(void)
{
	struct otel_thread_ctx_record *r = &thread_record;

	__atomic_store_n(&otel_thread_ctx_v1, NULL, __ATOMIC_RELAXED);
	compiler_fence();
	r->attrs_data_size = 0;
	memset(r->trace_id, 0, sizeof(r->trace_id));
	memset(r->span_id, 0, sizeof(r->span_id));
}

EXPORT int allocscope_context_push(struct allocscope_context_scope *scope, uint8_t key,
				   const char *value, size_t len)
{
	const struct otel_thread_ctx_record *r = &thread_record;

	scope->was_attached = __atomic_load_n(&otel_thread_ctx_v1, __ATOMIC_RELAXED) == r;
	scope->saved_size = r->attrs_data_size;
	copy_value(scope->saved, (const char *)r->attrs_data, r->attrs_data_size);
	return allocscope_context_set(key, value, len);
}

EXPORT void allocscope_context_pop(struct allocscope_context_scope *scope)
{
	struct otel_thread_ctx_record *r;
	bool attached;

	if (!scope->was_attached) {
		allocscope_context_clear();
		copy_value(thread_record.attrs_data, (const char *)scope->saved, scope->saved_size);
		thread_record.attrs_data_size = scope->saved_size;
		return;
	}
	r = begin(&attached);
	copy_value(r->attrs_data, (const char *)scope->saved, scope->saved_size);
	r->attrs_data_size = scope->saved_size;
	end(r, attached);
}

/* ---- the process context (OTEP 4719) ---- */

#define MAPPING_BYTES 8192

struct otel_ctx_header {
	char signature[8];
	uint32_t version;
	uint32_t payload_size;
	uint64_t published_at_ns;
	uint64_t payload;
};

static void *published;

struct pb_out {
	uint8_t *p, *end;
};

static void pb_byte(struct pb_out *o, uint8_t b)
{
	if (o->p < o->end)
		*o->p = b;
	o->p++;
}

static void pb_varint(struct pb_out *o, uint64_t v)
{
	while (v >= 0x80) {
		pb_byte(o, (uint8_t)(v | 0x80));
		v >>= 7;
	}
	pb_byte(o, (uint8_t)v);
}

static size_t varint_len(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static void pb_bytes(struct pb_out *o, unsigned field, const void *data, size_t len)
{
	pb_varint(o, field << 3 | 2);
	pb_varint(o, len);
	for (size_t i = 0; i < len; i++)
		pb_byte(o, ((const uint8_t *)data)[i]);
}

/* AnyValue{string_value = 1}: its encoded size. */
static size_t any_string_len(size_t len)
{
	return 1 + varint_len(len) + len;
}

static void pb_any_string(struct pb_out *o, unsigned field, const char *s)
{
	size_t len = strlen(s);

	pb_varint(o, field << 3 | 2);
	pb_varint(o, any_string_len(len));
	pb_bytes(o, 1, s, len);
}

/* ProcessContext {extra_attributes = 2: KeyValue {key = 1, value = 2}}. */
static size_t encode_payload(uint8_t *buf, size_t cap, const char *const *keys, size_t n_keys)
{
	static const char schema_key[] = "threadlocal.schema_version";
	static const char schema[] = "tlsdesc_v1";
	static const char map_key[] = "threadlocal.attribute_key_map";
	struct pb_out o = { buf, buf + cap };
	size_t array_len = 0, any_len, kv_len;

	/* KeyValue: schema version */
	any_len = any_string_len(sizeof(schema) - 1);
	kv_len = 1 + varint_len(sizeof(schema_key) - 1) + sizeof(schema_key) - 1 + 1 +
		 varint_len(any_len) + any_len;
	pb_varint(&o, 2 << 3 | 2);
	pb_varint(&o, kv_len);
	pb_bytes(&o, 1, schema_key, sizeof(schema_key) - 1);
	pb_any_string(&o, 2, schema);
	/* KeyValue: the key table, AnyValue{array_value = 5: ArrayValue{values = 1}} */
	for (size_t i = 0; i < n_keys; i++) {
		size_t s = any_string_len(strlen(keys[i]));

		array_len += 1 + varint_len(s) + s;
	}
	any_len = 1 + varint_len(array_len) + array_len;
	kv_len = 1 + varint_len(sizeof(map_key) - 1) + sizeof(map_key) - 1 + 1 +
		 varint_len(any_len) + any_len;
	pb_varint(&o, 2 << 3 | 2);
	pb_varint(&o, kv_len);
	pb_bytes(&o, 1, map_key, sizeof(map_key) - 1);
	pb_varint(&o, 2 << 3 | 2);
	pb_varint(&o, any_len);
	pb_varint(&o, 5 << 3 | 2);
	pb_varint(&o, array_len);
	for (size_t i = 0; i < n_keys; i++)
		pb_any_string(&o, 1, keys[i]);
	return (size_t)(o.p - buf);
}

EXPORT int allocscope_context_init(const char *const *keys, size_t n_keys)
{
	struct otel_ctx_header *head;
	struct timespec now;
	size_t total = 0, len;
	void *map;
	int fd;

	if (!keys || !n_keys || n_keys > ALLOCSCOPE_CONTEXT_MAX_KEYS)
		return -EINVAL;
	for (size_t i = 0; i < n_keys; i++) {
		len = keys[i] ? strlen(keys[i]) : 0;
		if (!len || len > 255)
			return -EINVAL;
		total += len;
	}
	if (total > 4000)
		return -EINVAL;
	/* A memfd shows in /proc/PID/maps as /memfd:OTEL_CTX, named or not. */
	fd = memfd_create("OTEL_CTX", MFD_CLOEXEC);
	if (fd >= 0 && ftruncate(fd, MAPPING_BYTES) != 0) {
		close(fd);
		fd = -1;
	}
	if (fd >= 0) {
		map = mmap(NULL, MAPPING_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
		close(fd);
	} else {
		map = mmap(NULL, MAPPING_BYTES, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	}
	if (map == MAP_FAILED)
		return -errno;
	madvise(map, MAPPING_BYTES, MADV_DONTFORK);
	head = map;
	len = encode_payload((uint8_t *)map + sizeof(*head), MAPPING_BYTES - sizeof(*head), keys,
			     n_keys);
	if (len > MAPPING_BYTES - sizeof(*head)) {
		munmap(map, MAPPING_BYTES);
		return -EINVAL;
	}
	memcpy(head->signature, "OTEL_CTX", 8);
	head->version = 2;
	head->payload_size = (uint32_t)len;
	head->payload = (uint64_t)(uintptr_t)((uint8_t *)map + sizeof(*head));
	clock_gettime(CLOCK_BOOTTIME, &now);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	__atomic_store_n(&head->published_at_ns,
			 (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec + 1,
			 __ATOMIC_RELAXED);
	prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)map, MAPPING_BYTES,
	      (unsigned long)"OTEL_CTX");
	if (published)
		munmap(published, MAPPING_BYTES);
	published = map;
	key_count = (unsigned)n_keys;
	return 0;
}
