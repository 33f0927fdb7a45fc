/* The OpenTelemetry process context (OTEP 4719) a process publishes in a mapping named
 * OTEL_CTX: a 32-byte header {"OTEL_CTX", version 2, payload_size, published_at_ns, payload
 * pointer} and a protobuf ProcessContext {resource = 1, extra_attributes = 2}. What the agent
 * takes from it is the thread context's key table (OTEP 4947): the string array
 * threadlocal.attribute_key_map, whose index i names attribute key i of every thread's
 * record, under schema threadlocal.schema_version "tlsdesc_v1..." (or none given). */
#ifndef ALLOCSCOPE_PROCESS_CONTEXT_H
#define ALLOCSCOPE_PROCESS_CONTEXT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* At most this many keys (the record's key index is a byte) of at most this many bytes. */
#define PROCESS_CONTEXT_MAX_KEYS 256
#define PROCESS_CONTEXT_MAX_KEY_BYTES 128
/* A payload larger than this is refused. */
#define PROCESS_CONTEXT_MAX_PAYLOAD (1u << 20)

struct process_context_keys {
	size_t count;
	char *names[PROCESS_CONTEXT_MAX_KEYS]; /* NULL where the table gave no usable name */
};

/* Reads pid's key table. 0 with keys filled; -ENOENT when the process publishes no process
 * context, or one without a key table; -EAGAIN when it was being updated; -EBADMSG for a
 * malformed one; other -errno. */
int process_context__read_keys(pid_t pid, struct process_context_keys *keys);
/* The same from a payload already read (for the unit test and the fuzzer). */
int process_context__parse_keys(const uint8_t *payload, size_t len,
				struct process_context_keys *keys);
void process_context_keys__clear(struct process_context_keys *keys);

#endif
