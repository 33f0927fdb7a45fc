/* The push sinks' pieces without the network: the PushRequest and WriteRawRequest bytes read
 * back by a decoder written here from the .proto field numbers (nothing shared with the
 * encoder), gRPC framing, the verdict on responses, Retry-After and error bodies, the retry
 * schedule's bounds, and the spool: round trips, order across a restart, the size limit,
 * damaged files, leftovers and the directory lock. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <zlib.h>

#include "unit.h"
#include "util/log.h"
#include "export/push_wire.h"
#include "export/sink.h"
#include "export/spool.h"
#include "profile/protobuf.h"

/* ---- a tiny protobuf reader ------------------------------------------------------- */

struct field {
	uint32_t number;
	int wire;
	uint64_t varint;
	const uint8_t *data; /* wire type 2 */
	size_t len;
};

static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	*v = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (*p >= end)
			return false;
		*v |= (uint64_t)(**p & 0x7f) << shift;
		if (!(*(*p)++ & 0x80))
			return true;
	}
	return false;
}

/* Reads every field of a message into out (at most max); returns the count, or -1 when the
 * bytes are not a well-formed message. */
static int read_fields(const uint8_t *data, size_t len, struct field *out, int max)
{
	const uint8_t *p = data, *end = data + len;
	int n = 0;

	while (p < end) {
		uint64_t key, v;

		if (!read_varint(&p, end, &key) || n == max)
			return -1;
		out[n].number = (uint32_t)(key >> 3);
		out[n].wire = (int)(key & 7);
		if (out[n].wire == 0) {
			if (!read_varint(&p, end, &out[n].varint))
				return -1;
		} else if (out[n].wire == 2) {
			if (!read_varint(&p, end, &v) || v > (uint64_t)(end - p))
				return -1;
			out[n].data = p;
			out[n].len = (size_t)v;
			p += v;
		} else {
			return -1;
		}
		n++;
	}
	return n;
}

static bool field_is(const struct field *f, const char *text)
{
	return f->wire == 2 && f->len == strlen(text) && memcmp(f->data, text, f->len) == 0;
}

/* A label message {1: name, 2: value}. */
static bool label_is(const struct field *f, const char *name, const char *value)
{
	struct field parts[4];
	int n;

	if (f->wire != 2)
		return false;
	n = read_fields(f->data, f->len, parts, 4);
	return n == 2 && parts[0].number == 1 && field_is(&parts[0], name) &&
	       parts[1].number == 2 && field_is(&parts[1], value);
}

/* ---- fixtures --------------------------------------------------------------------- */

static const uint8_t fake_gz[] = {0x1f, 0x8b, 8, 0,    0,    0,	   0,	 0,    0,    3, 0x63,
				  0x60, 0,    0, 0xde, 0xad, 0xbe, 0xef, 0x39, 0x05, 0, 0};

static const struct profile_label record_labels[] = {
    {"service_name", "checkout"},
    {"hostname", "web-1"},
    {"env", "prod"},
};

static struct queued_profile *sample_profile(uint64_t key)
{
	struct profile_record record = {
	    .service = "checkout",
	    .labels = record_labels,
	    .n_labels = 3,
	    .start_ns = 1709618828000000000LL,
	    .duration_ns = 15000000000LL,
	    .pprof_gz = fake_gz,
	    .pprof_gz_len = sizeof(fake_gz),
	};
	uint8_t id[16];

	push_wire__uuid_v4(id);
	return queued_profile__new(&record, key, id);
}

/* ---- wire ------------------------------------------------------------------------- */

static void test_push_request(void)
{
	struct queued_profile *p = sample_profile(7);
	struct field top[4], series[40], sample[4];
	struct pb_buffer buf;
	char id[37];
	int n, n_series, n_sample, labels = 0;

	pb_buffer__init(&buf, 0);
	CHECK(push_wire__encode(PUSH_PYROSCOPE, p, &buf) == 0);
	/* PushRequest: exactly one series. */
	n = read_fields(pb_buffer__data(&buf), pb_buffer__len(&buf), top, 4);
	CHECK(n == 1 && top[0].number == 1 && top[0].wire == 2);
	if (n != 1)
		goto out;
	n_series = read_fields(top[0].data, top[0].len, series, 40);
	CHECK(n_series == 6);
	if (n_series != 6)
		goto out;
	/* Labels first, in order: __name__, __delta__, then the record's. */
	CHECK(label_is(&series[0], "__name__", "memory"));
	CHECK(label_is(&series[1], "__delta__", "false"));
	CHECK(label_is(&series[2], "service_name", "checkout"));
	CHECK(label_is(&series[3], "hostname", "web-1"));
	CHECK(label_is(&series[4], "env", "prod"));
	for (int i = 0; i < 5; i++)
		labels += series[i].number == 1;
	CHECK_EQ_U64(labels, 5);
	/* One RawSample {1: raw_profile, 2: ID}. */
	CHECK(series[5].number == 2 && series[5].wire == 2);
	n_sample = read_fields(series[5].data, series[5].len, sample, 4);
	CHECK(n_sample == 2);
	if (n_sample == 2) {
		CHECK(sample[0].number == 1 && sample[0].len == sizeof(fake_gz) &&
		      memcmp(sample[0].data, fake_gz, sizeof(fake_gz)) == 0);
		push_wire__uuid_format(p->id, id);
		CHECK(sample[1].number == 2 && field_is(&sample[1], id));
	}
out:
	pb_buffer__release(&buf);
	free(p);
}

static void test_write_raw_request(void)
{
	struct queued_profile *p = sample_profile(7);
	struct field top[4], series[4], set[40], sample[4];
	struct pb_buffer buf;
	const uint8_t *data;
	size_t len;
	int n;

	pb_buffer__init(&buf, 0);
	CHECK(push_wire__encode(PUSH_PARCA, p, &buf) == 0);
	data = pb_buffer__data(&buf);
	len = pb_buffer__len(&buf);
	/* gRPC frame: not compressed, big-endian length of the rest. */
	CHECK(len > 5 && data[0] == 0);
	CHECK_EQ_U64((uint64_t)data[1] << 24 | data[2] << 16 | data[3] << 8 | data[4], len - 5);
	/* WriteRawRequest: series (2) only; no tenant, normalized=false left out. */
	n = read_fields(data + 5, len - 5, top, 4);
	CHECK(n == 1 && top[0].number == 2);
	if (n != 1)
		goto out;
	n = read_fields(top[0].data, top[0].len, series, 4);
	CHECK(n == 2 && series[0].number == 1 && series[1].number == 2);
	if (n != 2)
		goto out;
	/* LabelSet {1: Label*}: no __delta__ for Parca. */
	n = read_fields(series[0].data, series[0].len, set, 40);
	CHECK(n == 4);
	if (n == 4) {
		CHECK(label_is(&set[0], "__name__", "memory"));
		CHECK(label_is(&set[1], "service_name", "checkout"));
		CHECK(label_is(&set[2], "hostname", "web-1"));
		CHECK(label_is(&set[3], "env", "prod"));
	}
	n = read_fields(series[1].data, series[1].len, sample, 4);
	CHECK(n == 1 && sample[0].number == 1 && sample[0].len == sizeof(fake_gz));
out:
	pb_buffer__release(&buf);
	free(p);
}

/* A body of 200 bytes or more moves the nested lengths over the one-byte boundary: the
 * frame length must still match. */
static void test_grpc_frame_large(void)
{
	struct profile_record record = {.service = "s", .labels = record_labels, .n_labels = 3};
	static uint8_t big[70000];
	struct queued_profile *p;
	struct pb_buffer buf;
	const uint8_t *d;
	uint8_t id[16] = {0}, prefix[5];

	record.pprof_gz = big;
	record.pprof_gz_len = sizeof(big);
	p = queued_profile__new(&record, 1, id);
	pb_buffer__init(&buf, 0);
	CHECK(push_wire__encode(PUSH_PARCA, p, &buf) == 0);
	d = pb_buffer__data(&buf);
	CHECK_EQ_U64((uint64_t)d[1] << 24 | d[2] << 16 | d[3] << 8 | d[4],
		     pb_buffer__len(&buf) - 5);
	push_wire__grpc_prefix(prefix, 0x01020304);
	CHECK(prefix[0] == 0 && prefix[1] == 1 && prefix[2] == 2 && prefix[3] == 3 &&
	      prefix[4] == 4);
	pb_buffer__release(&buf);
	free(p);
}

static void test_series_labels(void)
{
	struct profile_label many[40], out[PUSH_MAX_LABELS + 5];
	char names[40][8];
	struct profile_record record = {.service = "s",
					.labels = many,
					.n_labels = 40,
					.pprof_gz = fake_gz,
					.pprof_gz_len = sizeof(fake_gz)};
	struct queued_profile *p;
	uint8_t id[16] = {0};
	size_t n;

	for (int i = 0; i < 40; i++) {
		snprintf(names[i], sizeof(names[i]), "l%d", i);
		many[i] = (struct profile_label){names[i], "v"};
	}
	/* A record label repeating one the sink sets is not sent twice. */
	many[3] = (struct profile_label){"__name__", "other"};
	p = queued_profile__new(&record, 1, id);
	n = push_wire__series_labels(PUSH_PYROSCOPE, p, out, PUSH_MAX_LABELS);
	CHECK_EQ_U64(n, PUSH_MAX_LABELS);
	CHECK_STR(out[0].value, "memory");
	for (size_t i = 1; i < n; i++)
		CHECK(strcmp(out[i].key, "__name__") != 0);
	n = push_wire__series_labels(PUSH_PARCA, p, out, 5);
	CHECK_EQ_U64(n, 5);
	CHECK_STR(out[1].key, "l0");
	free(p);
}

static void test_uuid(void)
{
	uint8_t a[16], b[16];
	char text[37];

	push_wire__uuid_v4(a);
	push_wire__uuid_v4(b);
	CHECK(memcmp(a, b, 16) != 0);
	push_wire__uuid_format(a, text);
	CHECK_EQ_U64(strlen(text), 36);
	CHECK(text[8] == '-' && text[13] == '-' && text[18] == '-' && text[23] == '-');
	CHECK(text[14] == '4');
	CHECK(strchr("89ab", text[19]) != NULL);
	memset(a, 0xff, 16);
	push_wire__uuid_format(a, text);
	CHECK_STR(text, "ffffffff-ffff-ffff-ffff-ffffffffffff");
}

static void test_gzip_size(void)
{
	uint8_t raw[5000], gz[6000];
	uLongf gz_len = sizeof(gz);
	z_stream zs = {0};
	uint64_t size = 0;

	memset(raw, 'a', sizeof(raw));
	CHECK(deflateInit2(&zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);
	zs.next_in = raw;
	zs.avail_in = sizeof(raw);
	zs.next_out = gz;
	zs.avail_out = sizeof(gz);
	CHECK(deflate(&zs, Z_FINISH) == Z_STREAM_END);
	gz_len = zs.total_out;
	deflateEnd(&zs);
	CHECK(push_wire__gzip_size(gz, gz_len, &size));
	CHECK_EQ_U64(size, sizeof(raw));
	CHECK(!push_wire__gzip_size(raw, sizeof(raw), &size));
	CHECK(!push_wire__gzip_size(gz, 10, &size));
}

static void test_verdicts(void)
{
	CHECK(push_wire__http_verdict(200) == PUSH_DELIVERED);
	CHECK(push_wire__http_verdict(0) == PUSH_RETRY);
	CHECK(push_wire__http_verdict(429) == PUSH_RETRY);
	CHECK(push_wire__http_verdict(408) == PUSH_RETRY);
	CHECK(push_wire__http_verdict(500) == PUSH_RETRY);
	CHECK(push_wire__http_verdict(502) == PUSH_RETRY);
	CHECK(push_wire__http_verdict(503) == PUSH_RETRY);
	CHECK(push_wire__http_verdict(501) == PUSH_REJECTED);
	CHECK(push_wire__http_verdict(400) == PUSH_REJECTED);
	CHECK(push_wire__http_verdict(401) == PUSH_REJECTED);
	CHECK(push_wire__http_verdict(404) == PUSH_REJECTED);
	CHECK(push_wire__http_verdict(413) == PUSH_REJECTED);
	CHECK(push_wire__http_verdict(422) == PUSH_REJECTED);
	CHECK(push_wire__grpc_verdict(GRPC_OK) == PUSH_DELIVERED);
	CHECK(push_wire__grpc_verdict(GRPC_UNAVAILABLE) == PUSH_RETRY);
	CHECK(push_wire__grpc_verdict(GRPC_RESOURCE_EXHAUSTED) == PUSH_RETRY);
	CHECK(push_wire__grpc_verdict(GRPC_DEADLINE_EXCEEDED) == PUSH_RETRY);
	CHECK(push_wire__grpc_verdict(GRPC_INVALID_ARGUMENT) == PUSH_REJECTED);
	CHECK(push_wire__grpc_verdict(GRPC_UNAUTHENTICATED) == PUSH_REJECTED);
	CHECK(push_wire__grpc_verdict(GRPC_UNKNOWN) == PUSH_REJECTED);
	CHECK_STR(push_wire__grpc_code_name(14), "UNAVAILABLE");
	CHECK_STR(push_wire__grpc_code_name(99), "UNKNOWN_CODE");
}

static void test_grpc_headers(void)
{
	char msg[64] = "untouched";
	int status = -1;

	CHECK(push_wire__grpc_header("grpc-status: 3\r\n", 16, &status, msg, sizeof(msg)));
	CHECK(status == 3);
	CHECK(push_wire__grpc_header("Grpc-Status:0\r\n", 15, &status, msg, sizeof(msg)));
	CHECK(status == 0);
	CHECK(push_wire__grpc_header("grpc-status: x1\r\n", 17, &status, msg, sizeof(msg)));
	CHECK(status == GRPC_UNKNOWN);
	CHECK(push_wire__grpc_header("grpc-message: bad%20label%3A %zz\r\n", 34, &status, msg,
				     sizeof(msg)));
	CHECK_STR(msg, "bad label: %zz");
	/* A server cannot put control characters in the agent's log. */
	CHECK(push_wire__grpc_header("grpc-message: a%0Ab%1B\r\n", 24, &status, msg, sizeof(msg)));
	CHECK_STR(msg, "a?b?");
	CHECK(!push_wire__grpc_header("grpc-statusx: 3\r\n", 17, &status, msg, sizeof(msg)));
	CHECK(!push_wire__grpc_header("content-type: application/grpc\r\n", 32, &status, msg,
				      sizeof(msg)));
}

static void test_retry_after(void)
{
	int64_t wait = -1;
	const char *date = "Retry-After: Sun, 06 Nov 1994 08:49:37 GMT\r\n";

	CHECK(push_wire__retry_after("Retry-After: 7\r\n", 16, 0, 600000, &wait));
	CHECK_EQ_U64(wait, 7000);
	CHECK(push_wire__retry_after("retry-after:120", 15, 0, 60000, &wait));
	CHECK_EQ_U64(wait, 60000); /* capped */
	CHECK(push_wire__retry_after("Retry-After: 99999999999999999999", 33, 0, 60000, &wait));
	CHECK_EQ_U64(wait, 60000);
	/* 784111777 is that date; 10 s before it the wait is 10 s, after it 0. */
	CHECK(push_wire__retry_after(date, strlen(date), 784111767, 600000, &wait));
	CHECK_EQ_U64(wait, 10000);
	CHECK(push_wire__retry_after(date, strlen(date), 784111787, 600000, &wait));
	CHECK_EQ_U64(wait, 0);
	CHECK(!push_wire__retry_after("Retry-After: soon\r\n", 19, 0, 60000, &wait));
	CHECK(!push_wire__retry_after("Retry-After: \r\n", 15, 0, 60000, &wait));
	CHECK(!push_wire__retry_after("Content-Length: 7\r\n", 19, 0, 60000, &wait));
}

static void test_connect_error(void)
{
	char code[32], message[128];
	const char *body =
	    "{\"code\":\"invalid_argument\",\"message\":\"profile \\\"x\\\" too old\\n"
	    "\",\"details\":[{\"type\":\"t\",\"value\":\"{\\\"code\\\":1}\"}]}";

	CHECK(push_wire__connect_error(body, strlen(body), code, sizeof(code), message,
				       sizeof(message)));
	CHECK_STR(code, "invalid_argument");
	CHECK_STR(message, "profile \"x\" too old ");
	/* Members nested deeper are not the error's. */
	body = "{\"details\":{\"message\":\"inner\"},\"message\":\"outer\"}";
	CHECK(push_wire__connect_error(body, strlen(body), code, sizeof(code), message,
				       sizeof(message)));
	CHECK_STR(message, "outer");
	CHECK_STR(code, "");
	CHECK(!push_wire__connect_error("<html>502</html>", 16, code, sizeof(code), message,
					sizeof(message)));
	/* Cut short: what was complete is kept, nothing is read past the end. */
	body = "{\"code\":\"unavailable\",\"message\":\"no";
	CHECK(push_wire__connect_error(body, strlen(body), code, sizeof(code), message,
				       sizeof(message)));
	CHECK_STR(code, "unavailable");
	CHECK_STR(message, "");
	/* Small output buffers cut the text. */
	body = "{\"message\":\"0123456789\"}";
	CHECK(push_wire__connect_error(body, strlen(body), code, sizeof(code), message, 5));
	CHECK_STR(message, "0123");
}

static void test_backoff_bounds(void)
{
	/* Full jitter: the wait is within [0, min(max, initial * 2^(attempt-1))]; the lowest
	 * and highest random values reach both ends. */
	static const int64_t windows[] = {1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000};

	for (unsigned a = 1; a <= 8; a++) {
		int64_t window = windows[a - 1];

		CHECK_EQ_U64(push_wire__backoff_ms(a, 1000, 60000, 0), 0);
		CHECK_EQ_U64(push_wire__backoff_ms(a, 1000, 60000, (uint64_t)window), window);
		for (uint64_t r = 1; r < 2000000; r = r * 3 + 17) {
			int64_t w =
			    push_wire__backoff_ms(a, 1000, 60000, r * 0x9e3779b97f4a7c15ull);

			if (w < 0 || w > window) {
				CHECK(w >= 0 && w <= window);
				break;
			}
		}
	}
	/* Attempt counts far past the cap neither overflow nor exceed it. */
	CHECK(push_wire__backoff_ms(1000000, 1000, 60000, UINT64_MAX) <= 60000);
	CHECK(push_wire__backoff_ms(0, 1000, 60000, 1000) <= 1000);
	/* The mean over many draws sits near half the window. */
	uint64_t sum = 0, state = 88172645463325252ull;

	for (int i = 0; i < 10000; i++) {
		state ^= state << 13;
		state ^= state >> 7;
		state ^= state << 17;
		sum += (uint64_t)push_wire__backoff_ms(3, 1000, 60000, state);
	}
	CHECK(sum / 10000 > 1800 && sum / 10000 < 2200);
}

/* ---- spool ------------------------------------------------------------------------ */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	remove(path);
	return 0;
}

static char *make_tmp(char *buf, size_t len)
{
	snprintf(buf, len, "/tmp/allocscope-spool-XXXXXX");
	if (!mkdtemp(buf)) {
		perror("mkdtemp");
		exit(2);
	}
	return buf;
}

static void remove_tree(const char *path)
{
	nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static size_t count_files(const char *dir, const char *prefix)
{
	struct dirent *ent;
	size_t n = 0;
	DIR *d = opendir(dir);

	if (!d)
		return 0;
	while ((ent = readdir(d)))
		n += strncmp(ent->d_name, prefix, strlen(prefix)) == 0;
	closedir(d);
	return n;
}

static struct spool *open_locked(const char *dir, uint64_t max)
{
	char err[256] = "";
	struct spool *s = NULL;
	uint64_t max_key;

	CHECK(spool__open(dir, max, &s, err, sizeof(err)) == 0);
	if (!s) {
		fprintf(stderr, "  %s\n", err);
		return NULL;
	}
	CHECK(spool__lock(s) == 0);
	CHECK(spool__scan(s, &max_key) == 0);
	return s;
}

static void test_spool_round_trip(void)
{
	char tmp[64];
	struct queued_profile *p = sample_profile(1234), *back = NULL;
	uint8_t *data;
	size_t len;
	struct spool *s;
	uint64_t dropped, key;
	bool self;

	make_tmp(tmp, sizeof(tmp));
	s = open_locked(tmp, 0);
	CHECK(spool__write(s, p, &dropped, &self) == 0);
	CHECK(!self && dropped == 0);
	CHECK_EQ_U64(spool__count(s), 1);
	CHECK(spool__oldest(s, &key) && key == 1234);
	CHECK(spool__read(s, 1234, &back) == 0);
	if (back) {
		CHECK_EQ_U64(back->key, 1234);
		CHECK(memcmp(back->id, p->id, 16) == 0);
		CHECK(back->start_ns == p->start_ns && back->duration_ns == p->duration_ns);
		CHECK_STR(back->service, "checkout");
		CHECK_EQ_U64(back->n_labels, 3);
		CHECK_STR(back->labels[2].key, "env");
		CHECK_STR(back->labels[2].value, "prod");
		CHECK(back->pprof_gz_len == sizeof(fake_gz) &&
		      memcmp(back->pprof_gz, fake_gz, sizeof(fake_gz)) == 0);
	}
	free(back);
	/* The encoded size is what the index counts. */
	CHECK(spool__encode(p, &data, &len) == 0);
	CHECK_EQ_U64(spool__bytes(s), len);
	free(data);
	CHECK(spool__remove(s, 1234) == 0);
	CHECK_EQ_U64(spool__count(s), 0);
	CHECK_EQ_U64(count_files(tmp, "profile-"), 0);
	spool__free(s);
	free(p);
	remove_tree(tmp);
}

/* Files outlive the spool object (a restart): a new one finds them in key order. */
static void test_spool_order_across_restart(void)
{
	static const uint64_t keys[] = {30, 10, 18000000000000000000ull, 5, 20};
	char tmp[64];
	struct spool *s;
	uint64_t dropped, key, max_key = 0;
	bool self;

	make_tmp(tmp, sizeof(tmp));
	s = open_locked(tmp, 0);
	for (size_t i = 0; i < 5; i++) {
		struct queued_profile *p = sample_profile(keys[i]);

		CHECK(spool__write(s, p, &dropped, &self) == 0);
		free(p);
	}
	spool__free(s);

	s = NULL;
	{
		char err[256];

		CHECK(spool__open(tmp, 0, &s, err, sizeof(err)) == 0);
	}
	CHECK(spool__lock(s) == 0);
	CHECK(spool__scan(s, &max_key) == 0);
	CHECK_EQ_U64(max_key, 18000000000000000000ull);
	CHECK_EQ_U64(spool__count(s), 5);
	static const uint64_t sorted[] = {5, 10, 20, 30, 18000000000000000000ull};
	for (size_t i = 0; i < 5; i++) {
		struct queued_profile *back = NULL;

		CHECK(spool__oldest(s, &key) && key == sorted[i]);
		CHECK(spool__read(s, key, &back) == 0);
		CHECK(back && back->key == sorted[i]);
		free(back);
		spool__remove(s, key);
	}
	CHECK(!spool__oldest(s, &key));
	spool__free(s);
	remove_tree(tmp);
}

static void test_spool_limit_drops_oldest(void)
{
	struct queued_profile *p = sample_profile(1);
	uint8_t *data;
	size_t one;
	char tmp[64];
	struct spool *s;
	uint64_t dropped, key;
	bool self;

	CHECK(spool__encode(p, &data, &one) == 0);
	free(data);
	free(p);
	make_tmp(tmp, sizeof(tmp));
	/* Room for three profiles. */
	s = open_locked(tmp, 3 * one + one / 2);
	for (uint64_t k = 10; k < 13; k++) {
		p = sample_profile(k);
		CHECK(spool__write(s, p, &dropped, &self) == 0 && dropped == 0 && !self);
		free(p);
	}
	/* The fourth pushes out the oldest (10). */
	p = sample_profile(13);
	CHECK(spool__write(s, p, &dropped, &self) == 0);
	CHECK(dropped == 1 && !self);
	free(p);
	CHECK(spool__oldest(s, &key) && key == 11);
	CHECK_EQ_U64(count_files(tmp, "profile-"), 3);
	/* The oldest waiting is being delivered (pinned): the next one goes instead. */
	spool__pin(s, 11);
	p = sample_profile(14);
	CHECK(spool__write(s, p, &dropped, &self) == 0 && dropped == 1 && !self);
	free(p);
	CHECK(spool__oldest(s, &key) && key == 11);
	{
		struct queued_profile *back = NULL;

		CHECK(spool__read(s, 12, &back) == -ENOENT);
		free(back);
	}
	spool__pin(s, 0);
	/* A profile older than everything it would displace is the one dropped. */
	p = sample_profile(2);
	CHECK(spool__write(s, p, &dropped, &self) == 0 && dropped == 0 && self);
	free(p);
	CHECK_EQ_U64(spool__count(s), 3);
	CHECK_EQ_U64(count_files(tmp, "profile-"), 3);
	CHECK(spool__bytes(s) <= 3 * one + one / 2);
	spool__free(s);

	/* A profile larger than the whole limit is never written. */
	make_tmp(tmp, sizeof(tmp));
	s = open_locked(tmp, one - 1);
	p = sample_profile(50);
	CHECK(spool__write(s, p, &dropped, &self) == 0 && self);
	free(p);
	CHECK_EQ_U64(count_files(tmp, "profile-"), 0);
	spool__free(s);
	remove_tree(tmp);
}

static void write_file(const char *path, const uint8_t *data, size_t len)
{
	FILE *f = fopen(path, "w");

	if (!f || (len && fwrite(data, 1, len, f) != len)) {
		perror(path);
		exit(2);
	}
	fclose(f);
}

/* Damaged files are skipped and removed: cut short, flipped bits, a name that does not match
 * the key inside, empty. None crashes, none is delivered. */
static void test_spool_damaged_files(void)
{
	struct queued_profile *p = sample_profile(100), *back = NULL;
	char tmp[64], path[128];
	uint8_t *data;
	size_t len;
	struct spool *s;
	uint64_t key;

	CHECK(spool__encode(p, &data, &len) == 0);
	make_tmp(tmp, sizeof(tmp));
	/* Every possible truncation of a good file. */
	for (size_t cut = 0; cut < len; cut++) {
		snprintf(path, sizeof(path), "%s/profile-%020llu.spool", tmp,
			 (unsigned long long)(1000 + cut));
		write_file(path, data, cut);
	}
	/* One flipped byte in the labels. */
	data[70] ^= 0x40;
	snprintf(path, sizeof(path), "%s/profile-%020llu.spool", tmp, 5000ull);
	write_file(path, data, len);
	data[70] ^= 0x40;
	/* A good file under another key's name. */
	snprintf(path, sizeof(path), "%s/profile-%020llu.spool", tmp, 5001ull);
	write_file(path, data, len);
	/* And one good file, key 100: first in order. */
	snprintf(path, sizeof(path), "%s/profile-%020llu.spool", tmp, 100ull);
	write_file(path, data, len);

	s = open_locked(tmp, 0);
	CHECK_EQ_U64(spool__count(s), len + 3);
	size_t good = 0, damaged = 0;

	while (spool__oldest(s, &key)) {
		int ret = spool__read(s, key, &back);

		if (ret == 0) {
			good++;
			CHECK(back->key == 100);
			free(back);
			back = NULL;
			spool__remove(s, key);
		} else {
			CHECK(ret == -EBADMSG);
			damaged++;
		}
	}
	CHECK_EQ_U64(good, 1);
	CHECK_EQ_U64(damaged, len + 2);
	CHECK_EQ_U64(count_files(tmp, "profile-"), 0);
	spool__free(s);
	/* The decoder alone, on random bytes of every length. */
	for (size_t n = 0; n < 300; n++) {
		uint8_t junk[300];

		for (size_t i = 0; i < n; i++)
			junk[i] = (uint8_t)(rand() & 0xff);
		if (n >= 8)
			memcpy(junk, "ALSCSPL1", 8);
		CHECK(spool__decode(junk, n, &back) != 0);
	}
	free(data);
	free(p);
	remove_tree(tmp);
}

static void test_spool_leftovers_and_strangers(void)
{
	char tmp[64], path[128];
	struct spool *s;

	make_tmp(tmp, sizeof(tmp));
	snprintf(path, sizeof(path), "%s/.tmp-00000000000000000001-1-0", tmp);
	write_file(path, (const uint8_t *)"half", 4);
	snprintf(path, sizeof(path), "%s/notes.txt", tmp);
	write_file(path, (const uint8_t *)"mine", 4);
	snprintf(path, sizeof(path), "%s/profile-1.spool", tmp);
	write_file(path, (const uint8_t *)"odd", 3);
	s = open_locked(tmp, 0);
	/* The interrupted write is gone; what the spool never writes is left alone. */
	CHECK_EQ_U64(count_files(tmp, ".tmp-"), 0);
	CHECK_EQ_U64(count_files(tmp, "notes.txt"), 1);
	CHECK_EQ_U64(count_files(tmp, "profile-1.spool"), 1);
	CHECK_EQ_U64(spool__count(s), 0);
	spool__free(s);
	remove_tree(tmp);
}

/* kill -9 between a spool write's sync and its rename leaves a whole profile under the
 * temporary name: it goes back into the spool (and is counted); a torn one is removed (and
 * counted). Before, both were deleted without a word. */
static void test_spool_recovers_interrupted_writes(void)
{
	struct queued_profile *p = sample_profile(42), *back = NULL;
	char tmp[64], path[128];
	size_t recovered = 9, torn = 9;
	uint64_t max_key = 0;
	struct spool *s;
	uint8_t *data;
	size_t len;

	make_tmp(tmp, sizeof(tmp));
	CHECK(p && spool__encode(p, &data, &len) == 0);
	snprintf(path, sizeof(path), "%s/.tmp-00000000000000000042-77-0", tmp);
	write_file(path, data, len);
	/* Cut short: the same bytes, the last one missing. */
	snprintf(path, sizeof(path), "%s/.tmp-00000000000000000043-77-1", tmp);
	write_file(path, data, len - 1);
	/* Whole, but under another key's name: not trusted. */
	snprintf(path, sizeof(path), "%s/.tmp-00000000000000000044-77-2", tmp);
	write_file(path, data, len);
	s = open_locked(tmp, 0);
	if (!s)
		goto out;
	spool__last_scan(s, &recovered, &torn);
	CHECK_EQ_U64(recovered, 1);
	CHECK_EQ_U64(torn, 2);
	CHECK_EQ_U64(count_files(tmp, ".tmp-"), 0);
	CHECK_EQ_U64(count_files(tmp, "profile-00000000000000000042.spool"), 1);
	CHECK_EQ_U64(spool__count(s), 1);
	CHECK_EQ_U64(spool__bytes(s), len);
	CHECK(spool__read(s, 42, &back) == 0);
	if (back) {
		CHECK_STR(back->service, "checkout");
		CHECK(memcmp(back->id, p->id, 16) == 0);
	}
	free(back);
	/* A later scan finds nothing more to recover. */
	CHECK(spool__scan(s, &max_key) == 0);
	CHECK_EQ_U64(max_key, 42);
	spool__last_scan(s, &recovered, &torn);
	CHECK_EQ_U64(recovered + torn, 0);
	spool__free(s);
out:
	free(data);
	free(p);
	remove_tree(tmp);
}

static void test_spool_lock_is_exclusive(void)
{
	char tmp[64], err[256];
	struct spool *a = NULL, *b = NULL;
	uint64_t max_key;

	make_tmp(tmp, sizeof(tmp));
	CHECK(spool__open(tmp, 0, &a, err, sizeof(err)) == 0);
	CHECK(spool__open(tmp, 0, &b, err, sizeof(err)) == 0);
	CHECK(spool__lock(a) == 0);
	CHECK(spool__lock(b) == -EWOULDBLOCK);
	CHECK(!spool__locked(b));
	CHECK(spool__scan(b, &max_key) == -ENOLCK);
	spool__free(a);
	CHECK(spool__lock(b) == 0);
	spool__free(b);
	/* Relative paths and unwritable places are refused with a sentence. */
	CHECK(spool__open("spool", 0, &a, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "not absolute") != NULL);
	CHECK(spool__open("/proc/allocscope-spool", 0, &a, err, sizeof(err)) < 0);
	CHECK(strstr(err, "spool directory") != NULL);
	remove_tree(tmp);
}

/* Which retried failures count against a profile's max_attempts: the server's own "not now"
 * for this profile, never an outage. */
static void test_attempt_counts(void)
{
	CHECK(push_wire__attempt_counts(429, -1));
	CHECK(push_wire__attempt_counts(500, -1));
	CHECK(!push_wire__attempt_counts(0, -1));
	CHECK(!push_wire__attempt_counts(502, -1));
	CHECK(!push_wire__attempt_counts(503, -1));
	CHECK(!push_wire__attempt_counts(504, -1));
	CHECK(push_wire__attempt_counts(200, GRPC_RESOURCE_EXHAUSTED));
	CHECK(!push_wire__attempt_counts(200, GRPC_UNAVAILABLE));
	CHECK(!push_wire__attempt_counts(503, GRPC_UNAVAILABLE));
}

int main(void)
{
	RUN(test_attempt_counts);
	log_set_level(LOG_ERROR);
	srand(1);
	RUN(test_push_request);
	RUN(test_write_raw_request);
	RUN(test_grpc_frame_large);
	RUN(test_series_labels);
	RUN(test_uuid);
	RUN(test_gzip_size);
	RUN(test_verdicts);
	RUN(test_grpc_headers);
	RUN(test_retry_after);
	RUN(test_connect_error);
	RUN(test_backoff_bounds);
	RUN(test_spool_round_trip);
	RUN(test_spool_order_across_restart);
	RUN(test_spool_limit_drops_oldest);
	RUN(test_spool_damaged_files);
	RUN(test_spool_leftovers_and_strangers);
	RUN(test_spool_recovers_interrupted_writes);
	RUN(test_spool_lock_is_exclusive);
	return unit_summary("push");
}
