/* The metrics endpoint's HTTP request parser, as pure functions over bytes (no sockets, no
 * allocation, no state), so a fuzzer can drive it (tests/fuzz/fuzz_http_request.c). Only what
 * the endpoint needs: the request line of a head; header fields are skipped, bodies ignored. */
#ifndef ALLOCSCOPE_HTTP_REQUEST_H
#define ALLOCSCOPE_HTTP_REQUEST_H

#include <stddef.h>

/* The longest request head accepted; a longer one is answered 431. */
#define HTTP_REQUEST_MAX_HEAD 8192

struct http_request {
	const char *method; /* inside the head given to parse, not NUL-terminated */
	size_t method_len;
	const char *path; /* the target without query or fragment; starts with '/' */
	size_t path_len;
};

/* The length of the complete head at the start of buf (through the empty line that ends it;
 * bare LF accepted for CRLF), or 0 when it has not all arrived. Bytes before from were already
 * searched by an earlier call on the same buffer, so reading a head a byte at a time costs
 * linear time, not quadratic; pass 0 to search it all. */
size_t http_request__head_end(const char *buf, size_t len, size_t from);

/* Parses buf, the bytes read so far. Returns 0 with req filled (pointing into buf) once the
 * head is complete and its request line is "METHOD SP /TARGET SP HTTP/x.y" (METHOD a token,
 * TARGET printable ASCII); -EAGAIN when the head is not complete yet and may still be (read
 * more); -EMSGSIZE when it is not complete within HTTP_REQUEST_MAX_HEAD bytes (answer 431);
 * -EINVAL when the request line is malformed (answer 400). */
int http_request__parse(const char *buf, size_t len, struct http_request *req);

#endif
