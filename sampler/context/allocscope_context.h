/* liballocscope-context: publishes the current thread's request context (endpoint, tenant,
 * trace and span ids) as the OpenTelemetry thread context (OTEP 4947), which allocscope reads
 * when it samples an allocation, as does any profiler implementing the proposal:
 *
 *   - a thread-local pointer otel_thread_ctx_v1 (TLSDESC in the shared library) to the
 *     thread's record {trace_id[16], span_id[8], valid, reserved, attrs_data_size,
 *     attrs_data[612]}, each attribute {key index, length, value};
 *   - the key names, once per process, in the OpenTelemetry process context (OTEP 4719): a
 *     mapping named OTEL_CTX whose protobuf payload carries threadlocal.schema_version and
 *     threadlocal.attribute_key_map.
 *
 * Usable with or without liballocscope-sampler.so. Link -lallocscope-context (the shared
 * library), or the static archive: then export the variable from the executable
 * (-Wl,--export-dynamic-symbol=otel_thread_ctx_v1, or -rdynamic) if it is stripped.
 *
 * Every function works on the calling thread's record and is async-signal-safe for readers:
 * a reader that stops the thread at any instruction sees the previous attributes, the new
 * ones, or a record marked invalid (valid = 0) that it skips; nothing allocates after the
 * thread's first call (a thread's record lives in its TLS). Values longer than 255 bytes are
 * cut to 255 (the length is a byte); a set that would overflow the record fails with -ENOSPC
 * and leaves it as it was. Not for use from signal handlers of the same thread while it is
 * inside one of these functions. */
#ifndef ALLOCSCOPE_CONTEXT_H
#define ALLOCSCOPE_CONTEXT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ALLOCSCOPE_CONTEXT_MAX_ATTRS_BYTES 612
#define ALLOCSCOPE_CONTEXT_MAX_KEYS 255

/* The record, exactly as OTEP 4947 lays it out (640 bytes). */
struct otel_thread_ctx_record {
	uint8_t trace_id[16];
	uint8_t span_id[8];
	uint8_t valid;
	uint8_t reserved;
	uint16_t attrs_data_size;
	uint8_t attrs_data[ALLOCSCOPE_CONTEXT_MAX_ATTRS_BYTES];
};

/* The thread's current record, or NULL when no context is attached. */
extern __thread struct otel_thread_ctx_record *otel_thread_ctx_v1;

/* Publishes the key names (index i is keys[i]) in the process context, once at start (again
 * replaces them; a forked child calls it again). 0, -EINVAL (no keys, more than 255, an
 * empty or too long name: at most 255 bytes each, 4000 in all) or -errno of mmap. */
int allocscope_context_init(const char *const *keys, size_t n_keys);

/* Sets attribute key (an index into the keys given to init) to the len bytes at value,
 * replacing its previous value; attaches the thread's record if it was not. 0, -EINVAL (key
 * out of range) or -ENOSPC. */
int allocscope_context_set(uint8_t key, const char *value, size_t len);
/* Removes attribute key, if set. */
void allocscope_context_unset(uint8_t key);
/* Sets the trace and span ids (W3C binary form; all zero: none). */
void allocscope_context_set_trace(const uint8_t trace_id[16], const uint8_t span_id[8]);
/* Detaches the thread's context: readers see none until the next set. */
void allocscope_context_clear(void);

/* A scoped change: push saves the thread's attributes and sets key; pop restores exactly what
 * push saved. Scopes nest (pop in reverse order); the scope lives on the caller's stack. */
struct allocscope_context_scope {
	uint16_t saved_size;
	uint8_t was_attached;
	uint8_t saved[ALLOCSCOPE_CONTEXT_MAX_ATTRS_BYTES];
};
int allocscope_context_push(struct allocscope_context_scope *scope, uint8_t key,
			    const char *value, size_t len);
void allocscope_context_pop(struct allocscope_context_scope *scope);

#ifdef __cplusplus
}
#endif

#endif
