/* What the push sinks put on the wire and how they read the answer, without any I/O: the
 * Pyroscope PushRequest and the Parca WriteRawRequest (through profile/protobuf.h), gRPC's
 * message framing, the series labels, delivery IDs, the verdict on a response (delivered,
 * retry, refused for good), the retry schedule, and the size check on a gzipped profile.
 * Kept apart from the sink's threads and libcurl so every rule here has a unit test. */
#ifndef ALLOCSCOPE_PUSH_WIRE_H
#define ALLOCSCOPE_PUSH_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "export/sink.h"
#include "profile/protobuf.h"

struct queued_profile;

enum push_protocol {
	PUSH_PYROSCOPE,
	PUSH_PARCA,
};

/* Pyroscope's default limit on a series' labels (validation.max_label_names_per_series). */
#define PUSH_MAX_LABELS 30

/* The request paths, appended to the configured URL. */
#define PYROSCOPE_PUSH_PATH  "/push.v1.PusherService/Push"
#define PARCA_WRITE_RAW_PATH "/parca.profilestore.v1alpha1.ProfileStoreService/WriteRaw"

/* The labels of a profile's series: __name__=memory first, for Pyroscope __delta__=false
 * next (the values are per interval), then the record's labels in order. Labels whose name is
 * already present are skipped; at most max are written. Returns how many were. */
size_t push_wire__series_labels(enum push_protocol protocol, const struct queued_profile *p,
				struct profile_label *out, size_t max);

/* The request body: a bare PushRequest for Pyroscope; for Parca a WriteRawRequest in one gRPC
 * message frame (flag byte 0, 4-byte big-endian length). Writes into buf (initialised by the
 * caller); returns 0 or the buffer's error. */
int push_wire__encode(enum push_protocol protocol, const struct queued_profile *p,
		      struct pb_buffer *buf);

/* Puts the 5-byte gRPC message prefix in front of len message bytes at out. */
void push_wire__grpc_prefix(uint8_t out[5], size_t len);

/* Random UUID v4 (RFC 9562), and its 36-character text form. */
void push_wire__uuid_v4(uint8_t id[16]);
void push_wire__uuid_format(const uint8_t id[16], char out[37]);

/* The uncompressed size a gzip member declares in its trailer (ISIZE: modulo 2^32, exact for
 * the agent's profiles, which are far below 4 GiB). False when data is not gzip. */
bool push_wire__gzip_size(const uint8_t *data, size_t len, uint64_t *size);

enum push_verdict {
	PUSH_DELIVERED,
	PUSH_RETRY,    /* the endpoint is down, busy or limiting: try again later */
	PUSH_REJECTED, /* the server refused this profile: retrying cannot help */
};

/* HTTP status (0: no response at all) to verdict, for Pyroscope's Connect endpoint and for a
 * gRPC response without a grpc-status. */
enum push_verdict push_wire__http_verdict(long status);

/* Whether a failed attempt that will be retried counts against the profile's max_attempts:
 * the server itself answered that it takes this profile not now (HTTP 429 or 500; gRPC
 * RESOURCE_EXHAUSTED when grpc_status > 0), as Pyroscope's rate limiter does for ever with a
 * request above its burst. An outage (no answer: status 0, timeouts, 502-504, UNAVAILABLE)
 * does not count: the spool waits it out, bounded by max_profile_age. */
bool push_wire__attempt_counts(long http_status, int grpc_status);

/* gRPC status codes. */
enum {
	GRPC_OK = 0,
	GRPC_CANCELLED = 1,
	GRPC_UNKNOWN = 2,
	GRPC_INVALID_ARGUMENT = 3,
	GRPC_DEADLINE_EXCEEDED = 4,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_ABORTED = 10,
	GRPC_UNAVAILABLE = 14,
	GRPC_UNAUTHENTICATED = 16,
};
enum push_verdict push_wire__grpc_verdict(int code);
const char *push_wire__grpc_code_name(int code);

/* Reads "grpc-status: N" / "grpc-message: ..." header or trailer lines (name case ignored,
 * trailing CR LF allowed). The message is percent-decoded into msg (cut to fit). Returns true
 * when the line was one of the two. */
bool push_wire__grpc_header(const char *line, size_t len, int *status, char *msg, size_t msg_len);

/* "Retry-After: ..." (delta-seconds or an HTTP date; now is the current Unix time): the wait in
 * milliseconds, capped at max_ms. Returns false when the line is not a usable Retry-After. */
bool push_wire__retry_after(const char *line, size_t len, int64_t now_s, int64_t max_ms,
			    int64_t *wait_ms);

/* A Connect error body, {"code": "...", "message": "..."}: copies the two strings (cut to fit,
 * escapes decoded, control characters replaced). Missing members are left "". Returns true
 * when the body looked like JSON with at least one of them. */
bool push_wire__connect_error(const char *body, size_t len, char *code, size_t code_len,
			      char *message, size_t message_len);

/* The wait before retry number attempt (1 for the first retry): full jitter over an
 * exponentially growing window, uniform in [0, min(max_ms, initial_ms * 2^(attempt-1))].
 * random is any 64-bit random value. */
int64_t push_wire__backoff_ms(unsigned attempt, int64_t initial_ms, int64_t max_ms,
			      uint64_t random);

#endif
