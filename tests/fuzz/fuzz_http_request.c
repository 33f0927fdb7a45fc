/* libFuzzer harness for the metrics endpoint's request parser (agent/export/http_request.c):
 * any bytes, whole or as they would arrive in pieces. Besides sanitizer findings it checks
 * what the server relies on: searching for the head's end piece by piece finds the same end as
 * one search over everything, and a parsed request points inside the head it was given, with a
 * token method and a path that starts with '/'. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "export/http_request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	size_t whole = http_request__head_end(buf, size, 0);
	size_t len = 0, searched = 0, end = 0;
	struct http_request req;
	int ret;

	/* Pieces of 1 to 8 bytes, their sizes taken from the data itself. */
	while (len < size && !end) {
		len += 1 + (size_t)(data[len] & 7);
		if (len > size)
			len = size;
		end = http_request__head_end(buf, len, searched);
		searched = len;
	}
	if (end != whole)
		abort();

	ret = http_request__parse(buf, size, &req);
	if (ret == 0) {
		if (!whole || whole > HTTP_REQUEST_MAX_HEAD)
			abort();
		if (req.method != buf || req.method_len == 0 || req.method_len >= whole)
			abort();
		if (req.path < buf || req.path + req.path_len > buf + whole || req.path[0] != '/')
			abort();
		if (memchr(req.path, ' ', req.path_len) || memchr(req.path, '?', req.path_len))
			abort();
	} else if (ret == -EMSGSIZE) {
		if (size < HTTP_REQUEST_MAX_HEAD)
			abort();
	}
	return 0;
}
