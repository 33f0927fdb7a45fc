/* The metrics endpoint's request parser (see http_request.h). Strict where it is cheap: the
 * method must be a token and the target printable ASCII without spaces, so nothing odd reaches
 * routing or a log line; header fields are not read at all, as the answer depends only on the
 * method and the path. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "export/http_request.h"

size_t http_request__head_end(const char *buf, size_t len, size_t from)
{
	/* The terminator ends with an LF the earlier search has not seen; the bytes before it
	 * that it looks back at may be older. */
	for (size_t i = from; i < len; i++) {
		if (buf[i] != '\n' || i == 0)
			continue;
		/* LF LF, or LF CR LF: an empty line after a line. */
		if (buf[i - 1] == '\n')
			return i + 1;
		if (buf[i - 1] == '\r' && i >= 2 && buf[i - 2] == '\n')
			return i + 1;
	}
	return 0;
}

/* RFC 9110's tchar. */
static bool is_token_char(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

int http_request__parse(const char *buf, size_t len, struct http_request *req)
{
	size_t head_len = http_request__head_end(buf, len > HTTP_REQUEST_MAX_HEAD ?
						       HTTP_REQUEST_MAX_HEAD : len, 0);
	size_t line_len, i, method_len, target_start, target_len, path_len;
	const char *line_end;

	if (head_len == 0)
		return len >= HTTP_REQUEST_MAX_HEAD ? -EMSGSIZE : -EAGAIN;

	line_end = memchr(buf, '\n', head_len); /* there is one: the head ends with LF */
	line_len = (size_t)(line_end - buf);
	if (line_len > 0 && buf[line_len - 1] == '\r')
		line_len--;

	for (i = 0; i < line_len && is_token_char((unsigned char)buf[i]); i++)
		;
	method_len = i;
	if (method_len == 0 || i == line_len || buf[i] != ' ')
		return -EINVAL;

	target_start = i + 1;
	for (i = target_start; i < line_len && buf[i] > ' ' && buf[i] < 0x7f; i++)
		;
	target_len = i - target_start;
	if (target_len == 0 || buf[target_start] != '/' || i == line_len || buf[i] != ' ')
		return -EINVAL;

	/* "HTTP/" DIGIT "." DIGIT, and nothing after it. */
	i++;
	if (line_len - i != 8 || memcmp(buf + i, "HTTP/", 5) != 0 || buf[i + 5] < '0' ||
	    buf[i + 5] > '9' || buf[i + 6] != '.' || buf[i + 7] < '0' || buf[i + 7] > '9')
		return -EINVAL;

	path_len = 0;
	while (path_len < target_len && buf[target_start + path_len] != '?' &&
	       buf[target_start + path_len] != '#')
		path_len++;

	req->method = buf;
	req->method_len = method_len;
	req->path = buf + target_start;
	req->path_len = path_len;
	return 0;
}
