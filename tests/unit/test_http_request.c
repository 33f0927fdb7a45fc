/* The metrics endpoint's request parser: what is a complete head, what parses, what is a 400
 * and what a 431, and that searching for the head's end a piece at a time agrees with one
 * search (the server searches only the bytes each read adds). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "export/http_request.h"
#include "unit.h"

static int parse(const char *text, struct http_request *req)
{
	return http_request__parse(text, strlen(text), req);
}

static void test_parses_request_line(void)
{
	struct http_request req;

	CHECK_EQ_U64(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &req), 0);
	CHECK(req.method_len == 3 && memcmp(req.method, "GET", 3) == 0);
	CHECK(req.path_len == 8 && memcmp(req.path, "/metrics", 8) == 0);
	CHECK_EQ_U64(parse("HEAD /healthz?verbose=1#x HTTP/1.0\n\n", &req), 0);
	CHECK(req.path_len == 8 && memcmp(req.path, "/healthz", 8) == 0);
	/* A body after the head is not the parser's business. */
	CHECK_EQ_U64(parse("POST /metrics HTTP/1.1\r\n\r\nbody", &req), 0);
}

static void test_incomplete(void)
{
	struct http_request req;

	CHECK_EQ_U64(parse("", &req), -EAGAIN);
	CHECK_EQ_U64(parse("GET /metrics HTTP/1.1\r\n", &req), -EAGAIN);
	CHECK_EQ_U64(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n\r", &req), -EAGAIN);
}

static void test_malformed(void)
{
	static const char *const bad[] = {
		"\r\n\r\n",
		"hello\r\n\r\n",
		"GET metrics HTTP/1.1\r\n\r\n",
		"GET /metrics\r\n\r\n",
		"GET /metrics FTP/1.0\r\n\r\n",
		"GET /metrics HTTP/1.1 extra\r\n\r\n",
		"GET /metrics HTTP/11\r\n\r\n",
		" /metrics HTTP/1.1\r\n\r\n",
		"GET  /metrics HTTP/1.1\r\n\r\n",
		"G(T /metrics HTTP/1.1\r\n\r\n",
		"GET /met\033rics HTTP/1.1\r\n\r\n",
		"GET /met\x80rics HTTP/1.1\r\n\r\n",
	};
	struct http_request req;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int ret = parse(bad[i], &req);

		if (ret != -EINVAL)
			fprintf(stderr, "  case %zu: %d\n", i, ret);
		CHECK_EQ_U64(ret, -EINVAL);
	}
	/* A NUL in the request line is malformed, not the end of the text. */
	CHECK_EQ_U64(http_request__parse("GET /\0 HTTP/1.1\r\n\r\n", 19, &req), -EINVAL);
}

static void test_too_large(void)
{
	char *head = malloc(HTTP_REQUEST_MAX_HEAD + 16);
	struct http_request req;

	CHECK(head != NULL);
	if (!head)
		return;
	memset(head, 'a', HTTP_REQUEST_MAX_HEAD + 16);
	memcpy(head, "GET / HTTP/1.1\r\nX: ", 19);
	CHECK_EQ_U64(http_request__parse(head, HTTP_REQUEST_MAX_HEAD - 1, &req), -EAGAIN);
	CHECK_EQ_U64(http_request__parse(head, HTTP_REQUEST_MAX_HEAD, &req), -EMSGSIZE);
	/* Complete, but only past the limit: still too large. */
	memcpy(head + HTTP_REQUEST_MAX_HEAD + 10, "\r\n\r\n", 4);
	CHECK_EQ_U64(http_request__parse(head, HTTP_REQUEST_MAX_HEAD + 14, &req), -EMSGSIZE);
	/* Complete exactly at the limit: parsed. */
	memcpy(head + HTTP_REQUEST_MAX_HEAD - 4, "\r\n\r\n", 4);
	CHECK_EQ_U64(http_request__parse(head, HTTP_REQUEST_MAX_HEAD, &req), 0);
	free(head);
}

static void test_head_end_in_pieces(void)
{
	static const char *const heads[] = {
		"GET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\n\n",
		"GET / HTTP/1.1\r\nA: b\n\r\n",
		"\n\n",
	};

	for (size_t h = 0; h < sizeof(heads) / sizeof(heads[0]); h++) {
		const char *text = heads[h];
		size_t len = strlen(text), whole = http_request__head_end(text, len, 0);

		CHECK_EQ_U64(whole, len);
		/* A byte at a time, each call searching only the new byte. */
		for (size_t n = 1, found = 0; n <= len && !found; n++) {
			found = http_request__head_end(text, n, n - 1);
			if (found)
				CHECK_EQ_U64(found, whole);
			else
				CHECK(n < len);
		}
	}
	CHECK_EQ_U64(http_request__head_end("\n", 1, 0), 0);
	CHECK_EQ_U64(http_request__head_end("a\r\n\r", 4, 0), 0);
}

int main(void)
{
	RUN(test_parses_request_line);
	RUN(test_incomplete);
	RUN(test_malformed);
	RUN(test_too_large);
	RUN(test_head_end_in_pieces);
	return unit_summary("http_request");
}
