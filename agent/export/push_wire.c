/* The push sinks' wire formats and response rules (see push_wire.h). Message layouts, from
 * grafana/pyroscope api/push/v1/push.proto and parca-dev/parca
 * proto/parca/profilestore/v1alpha1/profilestore.proto:
 *
 *   PushRequest        1 series: RawProfileSeries*
 *   RawProfileSeries   1 labels: LabelPair*       2 samples: RawSample*
 *   LabelPair          1 name                     2 value
 *   RawSample          1 raw_profile (bytes)      2 ID (string)
 *
 *   WriteRawRequest    1 tenant (deprecated)      2 series: RawProfileSeries*  3 normalized
 *   RawProfileSeries   1 labels: LabelSet         2 samples: RawSample*
 *   LabelSet           1 labels: Label*           Label: 1 name, 2 value
 *   RawSample          1 raw_profile (bytes)      2 executable_info* (not sent) */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/random.h>

#include "export/push_wire.h"
#include "export/spool.h"
#include "util/hex.h"

static bool has_label(const struct profile_label *labels, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(labels[i].key, key) == 0)
			return true;
	}
	return false;
}

size_t push_wire__series_labels(enum push_protocol protocol, const struct queued_profile *p,
				struct profile_label *out, size_t max)
{
	size_t n = 0;

	if (n < max)
		out[n++] = (struct profile_label){"__name__", "memory"};
	if (protocol == PUSH_PYROSCOPE && n < max)
		out[n++] = (struct profile_label){"__delta__", "false"};
	for (size_t i = 0; i < p->n_labels && n < max; i++) {
		if (!p->labels[i].key[0] || has_label(out, n, p->labels[i].key))
			continue;
		out[n++] = p->labels[i];
	}
	return n;
}

static void put_label(struct pb_buffer *buf, uint32_t field, const struct profile_label *label)
{
	size_t mark = pb_msg_begin(buf, field);

	pb_put_string(buf, 1, label->key);
	pb_put_string(buf, 2, label->value);
	pb_msg_end(buf, mark);
}

static int encode_pyroscope(const struct queued_profile *p, struct pb_buffer *buf)
{
	struct profile_label labels[PUSH_MAX_LABELS];
	size_t n = push_wire__series_labels(PUSH_PYROSCOPE, p, labels, PUSH_MAX_LABELS);
	size_t series, sample;
	char id[37];

	push_wire__uuid_format(p->id, id);
	series = pb_msg_begin(buf, 1);
	for (size_t i = 0; i < n; i++)
		put_label(buf, 1, &labels[i]);
	sample = pb_msg_begin(buf, 2);
	pb_put_bytes(buf, 1, p->pprof_gz, p->pprof_gz_len);
	pb_put_string(buf, 2, id);
	pb_msg_end(buf, sample);
	return pb_msg_end(buf, series);
}

static int encode_parca(const struct queued_profile *p, struct pb_buffer *buf)
{
	/* Parca has no limit of its own; the same bound keeps the two sinks alike. */
	struct profile_label labels[PUSH_MAX_LABELS];
	size_t n = push_wire__series_labels(PUSH_PARCA, p, labels, PUSH_MAX_LABELS);
	size_t series, label_set, sample;
	uint8_t prefix[5] = {0};
	int ret;

	/* The frame prefix first, patched once the message length is known. */
	pb_put_raw(buf, prefix, sizeof(prefix));
	series = pb_msg_begin(buf, 2);
	label_set = pb_msg_begin(buf, 1);
	for (size_t i = 0; i < n; i++)
		put_label(buf, 1, &labels[i]);
	pb_msg_end(buf, label_set);
	sample = pb_msg_begin(buf, 2);
	pb_put_bytes(buf, 1, p->pprof_gz, p->pprof_gz_len);
	pb_msg_end(buf, sample);
	pb_msg_end(buf, series);
	/* normalized = false is proto3's default: nothing on the wire says it. */
	ret = pb_put_bool_opt(buf, 3, false);
	if (ret)
		return ret;
	push_wire__grpc_prefix(prefix, pb_buffer__len(buf) - sizeof(prefix));
	memcpy((uint8_t *)pb_buffer__data(buf), prefix, sizeof(prefix));
	return 0;
}

int push_wire__encode(enum push_protocol protocol, const struct queued_profile *p,
		      struct pb_buffer *buf)
{
	if (protocol == PUSH_PARCA)
		return encode_parca(p, buf);
	return encode_pyroscope(p, buf);
}

void push_wire__grpc_prefix(uint8_t out[5], size_t len)
{
	out[0] = 0; /* not compressed */
	out[1] = (uint8_t)(len >> 24);
	out[2] = (uint8_t)(len >> 16);
	out[3] = (uint8_t)(len >> 8);
	out[4] = (uint8_t)len;
}

void push_wire__uuid_v4(uint8_t id[16])
{
	size_t got = 0;

	while (got < 16) {
		ssize_t n = getrandom(id + got, 16 - got, 0);

		if (n <= 0)
			break;
		got += (size_t)n;
	}
	/* getrandom cannot fail on a kernel with BPF; if it ever did, IDs stay unique enough
	 * for their one use (telling retries apart) mixed with the clock. */
	if (got < 16) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		for (size_t i = got; i < 16; i++)
			id[i] = (uint8_t)(rand() ^ (ts.tv_nsec >> (i % 4 * 8)));
	}
	id[6] = (uint8_t)((id[6] & 0x0f) | 0x40); /* version 4 */
	id[8] = (uint8_t)((id[8] & 0x3f) | 0x80); /* variant 10 */
}

void push_wire__uuid_format(const uint8_t id[16], char out[37])
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[id[i] >> 4];
		out[o++] = hex[id[i] & 15];
	}
	out[o] = '\0';
}

bool push_wire__gzip_size(const uint8_t *data, size_t len, uint64_t *size)
{
	/* 10-byte header, at least an empty deflate block, 8-byte trailer. */
	if (len < 20 || data[0] != 0x1f || data[1] != 0x8b || data[2] != 8)
		return false;
	*size = (uint64_t)data[len - 4] | (uint64_t)data[len - 3] << 8 |
		(uint64_t)data[len - 2] << 16 | (uint64_t)data[len - 1] << 24;
	return true;
}

enum push_verdict push_wire__http_verdict(long status)
{
	if (status >= 200 && status < 300)
		return PUSH_DELIVERED;
	/* No answer at all, a timeout, rate limiting, or the server (or a proxy before it) in
	 * trouble: all pass. 501 and 505 say the request can never work. */
	if (status == 0 || status == 408 || status == 429)
		return PUSH_RETRY;
	if (status >= 500 && status != 501 && status != 505)
		return PUSH_RETRY;
	return PUSH_REJECTED;
}

enum push_verdict push_wire__grpc_verdict(int code)
{
	switch (code) {
	case GRPC_OK:
		return PUSH_DELIVERED;
	case GRPC_UNAVAILABLE:
	case GRPC_RESOURCE_EXHAUSTED:
	case GRPC_DEADLINE_EXCEEDED:
	case GRPC_ABORTED:
		return PUSH_RETRY;
	default:
		return PUSH_REJECTED;
	}
}

bool push_wire__attempt_counts(long http_status, int grpc_status)
{
	if (grpc_status > 0)
		return grpc_status == GRPC_RESOURCE_EXHAUSTED;
	return http_status == 429 || http_status == 500;
}

const char *push_wire__grpc_code_name(int code)
{
	static const char *const names[] = {
	    "OK",
	    "CANCELLED",
	    "UNKNOWN",
	    "INVALID_ARGUMENT",
	    "DEADLINE_EXCEEDED",
	    "NOT_FOUND",
	    "ALREADY_EXISTS",
	    "PERMISSION_DENIED",
	    "RESOURCE_EXHAUSTED",
	    "FAILED_PRECONDITION",
	    "ABORTED",
	    "OUT_OF_RANGE",
	    "UNIMPLEMENTED",
	    "INTERNAL",
	    "UNAVAILABLE",
	    "DATA_LOSS",
	    "UNAUTHENTICATED",
	};

	if (code >= 0 && code < (int)(sizeof(names) / sizeof(names[0])))
		return names[code];
	return "UNKNOWN_CODE";
}

/* The value of "Name: value" when line's name is name (any case); NULL otherwise. *value_len
 * excludes surrounding blanks and the line end. */
static const char *header_value(const char *line, size_t len, const char *name, size_t *value_len)
{
	size_t name_len = strlen(name), start, end;

	if (len <= name_len || strncasecmp(line, name, name_len) != 0 || line[name_len] != ':')
		return NULL;
	start = name_len + 1;
	end = len;
	while (start < end && (line[start] == ' ' || line[start] == '\t'))
		start++;
	while (end > start && (line[end - 1] == '\r' || line[end - 1] == '\n' ||
			       line[end - 1] == ' ' || line[end - 1] == '\t'))
		end--;
	*value_len = end - start;
	return line + start;
}

/* Copies text for a log line: non-printable bytes become '?', so a server cannot write
 * escape sequences or new lines into the agent's log. */
static void copy_printable(char *out, size_t out_len, const char *in, size_t in_len)
{
	size_t o = 0;

	if (!out_len)
		return;
	for (size_t i = 0; i < in_len && o + 1 < out_len; i++) {
		unsigned char c = (unsigned char)in[i];

		out[o++] = (c >= 0x20 && c != 0x7f) ? (char)c : '?';
	}
	out[o] = '\0';
}

bool push_wire__grpc_header(const char *line, size_t len, int *status, char *msg, size_t msg_len)
{
	const char *value;
	size_t value_len;

	value = header_value(line, len, "grpc-status", &value_len);
	if (value) {
		int code = 0;

		if (!value_len || value_len > 3)
			code = GRPC_UNKNOWN;
		for (size_t i = 0; i < value_len && code != GRPC_UNKNOWN; i++) {
			if (!isdigit((unsigned char)value[i]))
				code = GRPC_UNKNOWN;
			else
				code = code * 10 + (value[i] - '0');
		}
		*status = code;
		return true;
	}
	value = header_value(line, len, "grpc-message", &value_len);
	if (value) {
		char decoded[1024];
		size_t o = 0;

		/* Percent-encoded UTF-8 (gRPC over HTTP/2 spec). */
		for (size_t i = 0; i < value_len && o < sizeof(decoded); i++) {
			if (value[i] == '%' && i + 2 < value_len && hex_digit_value(value[i + 1]) >= 0 &&
			    hex_digit_value(value[i + 2]) >= 0) {
				decoded[o++] =
				    (char)(hex_digit_value(value[i + 1]) * 16 + hex_digit_value(value[i + 2]));
				i += 2;
			} else {
				decoded[o++] = value[i];
			}
		}
		copy_printable(msg, msg_len, decoded, o);
		return true;
	}
	return false;
}

bool push_wire__retry_after(const char *line, size_t len, int64_t now_s, int64_t max_ms,
			    int64_t *wait_ms)
{
	const char *value;
	size_t value_len;
	int64_t seconds = 0;
	bool digits = true;

	value = header_value(line, len, "retry-after", &value_len);
	if (!value || !value_len)
		return false;
	for (size_t i = 0; i < value_len; i++)
		digits = digits && isdigit((unsigned char)value[i]);
	if (digits) {
		for (size_t i = 0; i < value_len && seconds <= max_ms / 1000; i++)
			seconds = seconds * 10 + (value[i] - '0');
	} else {
		char date[64];
		struct tm tm = {0};
		const char *end;

		/* IMF-fixdate, the only form RFC 9110 lets senders use:
		 * "Sun, 06 Nov 1994 08:49:37 GMT". */
		if (value_len >= sizeof(date))
			return false;
		memcpy(date, value, value_len);
		date[value_len] = '\0';
		end = strptime(date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
		if (!end || *end)
			return false;
		seconds = (int64_t)timegm(&tm) - now_s;
		if (seconds < 0)
			seconds = 0;
	}
	if (seconds > max_ms / 1000)
		*wait_ms = max_ms;
	else
		*wait_ms = seconds * 1000;
	return true;
}

/* A JSON string starting at body[*pos] == '"': decoded (\uXXXX outside ASCII shown as '?')
 * into out; *pos moves past the closing quote. */
static bool json_string(const char *body, size_t len, size_t *pos, char *out, size_t out_len)
{
	char raw[1024];
	size_t o = 0, i = *pos + 1;

	for (; i < len && body[i] != '"'; i++) {
		char c = body[i];

		if (c == '\\' && i + 1 < len) {
			char e = body[++i];

			switch (e) {
			case 'n':
			case 'r':
			case 't':
				c = ' ';
				break;
			case 'u':
				c = '?';
				if (i + 4 < len) {
					int v = 0, ok = 1;

					for (int k = 1; k <= 4; k++) {
						int d = hex_digit_value(body[i + k]);

						ok = ok && d >= 0;
						v = v * 16 + (d > 0 ? d : 0);
					}
					if (ok && v >= 0x20 && v < 0x7f)
						c = (char)v;
					i += 4;
				}
				break;
			default:
				c = e; /* \" \\ \/ */
				break;
			}
		}
		if (o < sizeof(raw))
			raw[o++] = c;
	}
	if (i >= len)
		return false;
	*pos = i + 1;
	copy_printable(out, out_len, raw, o);
	return true;
}

bool push_wire__connect_error(const char *body, size_t len, char *code, size_t code_len,
			      char *message, size_t message_len)
{
	bool found = false;
	size_t pos = 0;
	int depth = 0;

	if (code_len)
		code[0] = '\0';
	if (message_len)
		message[0] = '\0';
	while (pos < len && isspace((unsigned char)body[pos]))
		pos++;
	if (pos >= len || body[pos] != '{')
		return false;
	/* Only the top-level "code" and "message" members matter; "details" and the like are
	 * stepped over. Strings are read whole so braces inside them do not count. */
	while (pos < len) {
		char c = body[pos];

		if (c == '{' || c == '[') {
			depth++;
			pos++;
		} else if (c == '}' || c == ']') {
			depth--;
			pos++;
		} else if (c == '"') {
			char key[32];
			size_t after;

			if (!json_string(body, len, &pos, key, sizeof(key)))
				break;
			after = pos;
			while (after < len && isspace((unsigned char)body[after]))
				after++;
			if (depth != 1 || after >= len || body[after] != ':')
				continue;
			after++;
			while (after < len && isspace((unsigned char)body[after]))
				after++;
			pos = after;
			if (after >= len || body[after] != '"')
				continue;
			if (strcmp(key, "code") == 0) {
				found = json_string(body, len, &pos, code, code_len) || found;
			} else if (strcmp(key, "message") == 0) {
				found = json_string(body, len, &pos, message, message_len) || found;
			} else {
				char skip[8];

				json_string(body, len, &pos, skip, sizeof(skip));
			}
		} else {
			pos++;
		}
	}
	return found;
}

int64_t push_wire__backoff_ms(unsigned attempt, int64_t initial_ms, int64_t max_ms, uint64_t random)
{
	int64_t window = initial_ms;

	if (attempt == 0)
		attempt = 1;
	for (unsigned i = 1; i < attempt && window < max_ms; i++)
		window *= 2;
	if (window > max_ms)
		window = max_ms;
	if (window <= 0)
		return 0;
	return (int64_t)(random % ((uint64_t)window + 1));
}
