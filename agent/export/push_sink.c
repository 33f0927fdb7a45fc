/* The Pyroscope and Parca sinks (see push_sink.h for the promises). One mutex guards a sink's
 * queue and counters; the worker holds it only between requests and spool operations, never
 * across a request or any disk I/O, so submit never waits on the network or the disk. The
 * spool itself belongs to the worker alone (to close once the worker is gone): the worker
 * takes what it needs under the lock, releases it for the I/O, and publishes the spool's
 * size (spool_count, spool_bytes) under the lock afterwards. Submit only queues in memory;
 * with a spool the ring holds up to twice queue_size so that the worker can move the excess
 * (and, while the endpoint fails, everything) to disk between requests. Every profile gets
 * an order key when submitted (the wall clock in ns, made strictly increasing across the
 * process and above everything already spooled); the worker always delivers the smallest
 * key waiting, in memory or on disk, which keeps delivery in submission order however
 * profiles moved between the two.
 *
 * A spool directory is owned through its lock (spool.h). During a reload the old sink still
 * holds it while it closes; the new sink's worker waits for it before delivering anything, so
 * the two never send the same file or send out of order. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <curl/curl.h>

#include "util/log.h"
#include "export/http_client.h"
#include "export/push_sink.h"
#include "export/push_wire.h"
#include "export/sink.h"
#include "export/spool.h"
#include "profile/protobuf.h"
#include "util/error_text.h"
#include "util/clock.h"
#include "util/secret.h"

#define DEFAULT_TIMEOUT_MS	10000
#define DEFAULT_QUEUE_SIZE	64
#define DEFAULT_INITIAL_BACKOFF 1000
#define DEFAULT_MAX_BACKOFF	60000
/* How often a worker looks again at a spool directory someone else has locked. */
#define SPOOL_LOCK_POLL_MS 200
/* A spool lock still held after this long is worth a warning. */
#define SPOOL_LOCK_WARN_MS 10000
/* Repeated failures and drops are logged once per this interval, with a count. */
#define FAILURE_LOG_INTERVAL_MS 30000
#define DROP_LOG_INTERVAL_MS	10000
#define SECRET_MAX		4096
#define MAX_HEADERS		40

/* One kind of repeated message, logged at most once per interval. */
struct log_limit {
	int64_t next_ms;
	uint64_t suppressed;
};

struct push_sink {
	struct sink base;
	enum push_protocol protocol;
	char what[SINK_NAME_MAX + 32]; /* "pyroscope sink" or "pyroscope sink \"cloud\"" */
	uint64_t timeout_ms, shutdown_timeout_ms, max_profile_bytes, max_samples;
	uint64_t max_profile_age_ms;
	uint32_t max_attempts;
	uint64_t initial_backoff_ms, max_backoff_ms;
	char *username;
	struct secret password, token;
	char **headers; /* "Name: value" lines, NULL-terminated */
	struct http_client *http;
	struct pb_buffer body; /* the worker's, reused */

	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_t worker;
	bool worker_started;

	/* Under lock. */
	struct queued_profile **queue; /* a ring of queue_cap */
	size_t queue_size, queue_cap, q_head, q_len;
	struct queued_profile *current; /* from memory, being delivered or waiting to retry */
	struct spool *spool;		/* NULL without spool_dir; the worker's (see above) */
	bool spool_ready;		/* locked and scanned */
	size_t spool_count;		/* the spool's, as of the worker's last operation */
	uint64_t spool_bytes;
	bool retiring;			/* replaced by a reload: see push_sink__retire */
	bool failing;			/* the last attempt failed and will be retried */
	unsigned attempt;		/* failed attempts in a row */
	/* Counted attempts (push_wire__attempt_counts) of the profile with this key. */
	uint64_t counted_key;
	uint32_t counted_attempts;
	int64_t retry_at_ms;
	bool closing;
	int64_t deadline_ms; /* when closing: give up delivering at this time */
	struct sink_stats stats;
	struct log_limit failure_log, drop_log, reject_log, expire_log, give_up_log;
	struct log_limit secret_log; /* the worker's alone: used without the lock */
	uint64_t failures_since_ok;

	_Atomic int64_t abort_at_ms; /* the running request is abandoned after this */
};

/* ---- small helpers ------------------------------------------------------------------ */

static uint64_t random_u64(void)
{
	uint64_t v = 0;

	if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v))
		v = wall_ns() * 0x9e3779b97f4a7c15ull;
	return v;
}

/* Order keys, shared by every push sink of the process so that a sink replacing another (a
 * reload) continues the same sequence. */
static pthread_mutex_t key_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t last_key;

static uint64_t next_key(void)
{
	uint64_t now = wall_ns(), key;

	pthread_mutex_lock(&key_lock);
	key = now > last_key ? now : last_key + 1;
	last_key = key;
	pthread_mutex_unlock(&key_lock);
	return key;
}

static void raise_key_floor(uint64_t key)
{
	pthread_mutex_lock(&key_lock);
	if (key > last_key)
		last_key = key;
	pthread_mutex_unlock(&key_lock);
}

/* True when a message of this kind may be logged now; *suppressed is how many were not
 * since the last one. */
static bool log_limit_allow(struct log_limit *limit, int64_t now, int64_t interval_ms,
			    uint64_t *suppressed)
{
	if (now < limit->next_ms) {
		limit->suppressed++;
		return false;
	}
	*suppressed = limit->suppressed;
	limit->suppressed = 0;
	limit->next_ms = now + interval_ms;
	return true;
}

/* ---- credentials -------------------------------------------------------------------- */

/* From the file when one is configured, else from the variable; neither leaves no secret. */
static int secret_init(struct secret *s, const char *file, const char *env, const char *what_file,
		       const char *what_env, char *err, size_t err_len)
{
	struct secret_rules rules = {.what = what_file, .max_bytes = SECRET_MAX};

	if (file && file[0])
		return secret_from_file(s, &rules, file, err, err_len);
	if (env && env[0]) {
		rules.what = what_env;
		return secret_from_env(s, &rules, env, err, err_len);
	}
	return 0;
}

/* ---- the queue (under lock) --------------------------------------------------------- */

static struct queued_profile *queue_pop(struct push_sink *ps)
{
	struct queued_profile *p;

	if (!ps->q_len)
		return NULL;
	p = ps->queue[ps->q_head];
	ps->queue[ps->q_head] = NULL;
	ps->q_head = (ps->q_head + 1) % ps->queue_cap;
	ps->q_len--;
	return p;
}

static void queue_push(struct push_sink *ps, struct queued_profile *p)
{
	ps->queue[(ps->q_head + ps->q_len) % ps->queue_cap] = p;
	ps->q_len++;
}

/* Puts back at the head a profile taken with queue_pop; false when the ring is full. */
static bool queue_unpop(struct push_sink *ps, struct queued_profile *p)
{
	if (ps->q_len == ps->queue_cap)
		return false;
	ps->q_head = (ps->q_head + ps->queue_cap - 1) % ps->queue_cap;
	ps->queue[ps->q_head] = p;
	ps->q_len++;
	return true;
}

/* Publishes the spool's size for stats (under lock, by the spool's owner). */
static void sync_spool(struct push_sink *ps)
{
	ps->spool_count = ps->spool && ps->spool_ready ? spool__count(ps->spool) : 0;
	ps->spool_bytes = ps->spool && ps->spool_ready ? spool__bytes(ps->spool) : 0;
}

static void note_dropped(struct push_sink *ps, uint64_t n, const char *why)
{
	uint64_t suppressed = 0;

	if (!n)
		return;
	ps->stats.profiles_dropped += n;
	if (log_limit_allow(&ps->drop_log, monotonic_ms(), DROP_LOG_INTERVAL_MS, &suppressed))
		log_warn("%s: dropped %llu profile%s: %s%s", ps->what, (unsigned long long)n,
			 n == 1 ? "" : "s", why,
			 suppressed ? " (more drops since the last message: see "
				      "allocscope_sink_profiles_dropped_total)"
				    : "");
}

/* Accounts for spool__write's result (under lock). true: the spool took p (or dropped it,
 * counted) and p is freed; false: it could not be written and p is still the caller's. */
static bool spool_written(struct push_sink *ps, struct queued_profile *p, int ret,
			  uint64_t dropped, bool self_dropped)
{
	note_dropped(ps, dropped, "the spool is full (spool_max_bytes); the oldest go first");
	if (ret) {
		uint64_t suppressed;

		if (log_limit_allow(&ps->drop_log, monotonic_ms(), DROP_LOG_INTERVAL_MS, &suppressed))
			log_error("%s: cannot write to the spool in %s: %s", ps->what,
				  spool__dir(ps->spool), strerror(-ret));
		return false;
	}
	if (self_dropped) {
		note_dropped(ps, 1,
			     "the spool is full (spool_max_bytes) of newer profiles, or "
			     "the profile alone is larger than spool_max_bytes");
		free(p);
		return true;
	}
	ps->stats.profiles_spooled++;
	free(p);
	return true;
}

/* Writes one profile to the spool with the lock held: only for close, once the worker is
 * gone. Same result as spool_written. */
static bool spool_profile(struct push_sink *ps, struct queued_profile *p)
{
	uint64_t dropped = 0;
	bool self_dropped = false;
	int ret;

	ret = spool__write(ps->spool, p, &dropped, &self_dropped);
	return spool_written(ps, p, ret, dropped, self_dropped);
}

/* The worker (under lock, released around each write): moves what waits in memory to the
 * spool, oldest first. all: everything, the profile being retried included, so that an
 * outage never has profiles only in memory; otherwise only what is above queue_size. */
static void spill_to_spool(struct push_sink *ps, bool all)
{
	if (!ps->spool || !ps->spool_ready)
		return;
	for (;;) {
		struct queued_profile *p;
		bool was_current = false, self_dropped = false;
		uint64_t dropped = 0;
		int ret;

		if (all && ps->current) {
			p = ps->current;
			ps->current = NULL;
			was_current = true;
		} else if (ps->q_len && (all || ps->q_len > ps->queue_size)) {
			p = queue_pop(ps);
		} else {
			break;
		}
		pthread_mutex_unlock(&ps->lock);
		ret = spool__write(ps->spool, p, &dropped, &self_dropped);
		pthread_mutex_lock(&ps->lock);
		if (spool_written(ps, p, ret, dropped, self_dropped)) {
			sync_spool(ps);
			continue;
		}
		sync_spool(ps);
		/* Not written: back where it was, oldest first. */
		if (was_current) {
			ps->current = p;
		} else if (!queue_unpop(ps, p)) {
			/* Submit filled the ring meanwhile: p is the oldest, it goes. */
			note_dropped(ps, 1, "the queue is full and the spool cannot take more");
			free(p);
		}
		break;
	}
}

/* ---- submit ------------------------------------------------------------------------- */

/* Refuses profiles the server would refuse for their size. */
static bool too_large(const struct push_sink *ps, const uint8_t *gz, size_t len, uint64_t *size)
{
	if (!ps->max_profile_bytes || !push_wire__gzip_size(gz, len, size))
		return false;
	return *size > ps->max_profile_bytes;
}

static int push_sink_submit(struct sink *sink, const struct profile_record *record)
{
	struct push_sink *ps = (struct push_sink *)sink;
	struct queued_profile *p;
	uint8_t id[16];
	uint64_t size;

	if (!record || !record->pprof_gz || !record->pprof_gz_len) {
		log_error("%s was given no profile", ps->what);
		pthread_mutex_lock(&ps->lock);
		ps->stats.errors++;
		pthread_mutex_unlock(&ps->lock);
		return -EINVAL;
	}
	if (too_large(ps, record->pprof_gz, record->pprof_gz_len, &size)) {
		uint64_t suppressed = 0;
		bool say;

		pthread_mutex_lock(&ps->lock);
		ps->stats.profiles_rejected++;
		say = log_limit_allow(&ps->reject_log, monotonic_ms(), DROP_LOG_INTERVAL_MS, &suppressed);
		pthread_mutex_unlock(&ps->lock);
		if (say)
			log_error("%s: not pushing the profile of %s: %llu bytes uncompressed is "
				  "above max_profile_size (%llu); raise sampling.rate, or the "
				  "server's limit and max_profile_size",
				  ps->what, record->service ? record->service : "?",
				  (unsigned long long)size, (unsigned long long)ps->max_profile_bytes);
		return -E2BIG;
	}
	push_wire__uuid_v4(id);
	p = queued_profile__new(record, next_key(), id);
	if (!p) {
		pthread_mutex_lock(&ps->lock);
		ps->stats.errors++;
		note_dropped(ps, 1, "out of memory");
		pthread_mutex_unlock(&ps->lock);
		return -ENOMEM;
	}

	/* Memory only: the worker moves profiles to the spool (never submit, which runs on the
	 * agent's main loop and must not wait on the disk). */
	pthread_mutex_lock(&ps->lock);
	if (ps->q_len == ps->queue_cap) {
		/* No spool, or it cannot keep up: the oldest in memory makes room, as the spool
		 * would do. */
		free(queue_pop(ps));
		note_dropped(ps, 1,
			     ps->spool ? "the queue is full and the spool cannot take more"
				       : "the queue is full (queue_size; set spool_dir "
					 "to keep profiles on disk while the endpoint is "
					 "down)");
	}
	queue_push(ps, p);
	pthread_cond_signal(&ps->wake);
	pthread_mutex_unlock(&ps->lock);
	return 0;
}

/* ---- delivery (worker, without the lock) --------------------------------------------- */

struct outcome {
	enum push_verdict verdict;
	bool counted; /* a retry that counts against max_attempts */
	char reason[640];
	int64_t retry_after_ms; /* -1: none */
	int64_t elapsed_ms;
};

static void describe_http_error(struct push_sink *ps, const struct http_response *r,
				struct outcome *out)
{
	char code[64], message[512];

	if (push_wire__connect_error(r->body, r->body_len, code, sizeof(code), message,
				     sizeof(message))) {
		snprintf(out->reason, sizeof(out->reason), "HTTP %ld: %s%s%s", r->status,
			 code[0] ? code : "", code[0] && message[0] ? ": " : "", message);
		return;
	}
	/* Not JSON: a proxy's page, say. Its first line is enough. */
	size_t n = strcspn(r->body, "\r\n");

	if (n > 200)
		n = 200;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)r->body[i];

		message[i] = c >= 0x20 && c != 0x7f ? (char)c : '?';
	}
	message[n] = '\0';
	snprintf(out->reason, sizeof(out->reason), "HTTP %ld%s%s", r->status, n ? ": " : "",
		 message);
}

static void judge_parca(struct push_sink *ps, const struct http_response *r, struct outcome *out)
{
	if (r->status != 200) {
		out->verdict = push_wire__http_verdict(r->status);
		if (out->verdict == PUSH_DELIVERED)
			out->verdict = PUSH_REJECTED;
		if (r->grpc_status > 0) {
			out->verdict = push_wire__grpc_verdict(r->grpc_status);
			snprintf(out->reason, sizeof(out->reason), "HTTP %ld, gRPC %s: %s",
				 r->status, push_wire__grpc_code_name(r->grpc_status),
				 r->grpc_message);
		} else {
			describe_http_error(ps, r, out);
		}
		return;
	}
	if (r->http_version != CURL_HTTP_VERSION_2_0) {
		out->verdict = PUSH_REJECTED;
		snprintf(out->reason, sizeof(out->reason),
			 "the server answered over HTTP/1 (is the url the server's gRPC port, "
			 "7070 by default?)");
		return;
	}
	if (r->grpc_status < 0) {
		/* The stream ended without a status: cut off by a proxy or a crash. */
		out->verdict = PUSH_RETRY;
		snprintf(out->reason, sizeof(out->reason), "the response carried no grpc-status");
		return;
	}
	out->verdict = push_wire__grpc_verdict(r->grpc_status);
	if (out->verdict != PUSH_DELIVERED)
		snprintf(out->reason, sizeof(out->reason), "gRPC %s: %s",
			 push_wire__grpc_code_name(r->grpc_status),
			 r->grpc_message[0] ? r->grpc_message : "(no message)");
}

static void deliver(struct push_sink *ps, const struct queued_profile *p, int64_t timeout_ms,
		    struct outcome *out)
{
	struct http_request req = {
	    .headers = (const char *const *)ps->headers,
	    .timeout_ms = timeout_ms,
	    .abort_at_ms = &ps->abort_at_ms,
	};
	struct http_response resp;
	char err[512];
	uint64_t size;
	int ret;

	memset(out, 0, sizeof(*out));
	out->retry_after_ms = -1;
	if (too_large(ps, p->pprof_gz, p->pprof_gz_len, &size)) {
		out->verdict = PUSH_REJECTED;
		snprintf(out->reason, sizeof(out->reason),
			 "%llu bytes uncompressed is above max_profile_size (%llu)",
			 (unsigned long long)size, (unsigned long long)ps->max_profile_bytes);
		return;
	}
	if (secret_refresh(&ps->password, err, sizeof(err)) ||
	    secret_refresh(&ps->token, err, sizeof(err))) {
		/* A secret being rotated can be briefly missing: try again later. */
		if (!ps->password.value && !ps->token.value) {
			out->verdict = PUSH_RETRY;
			snprintf(out->reason, sizeof(out->reason), "%s", err);
			return;
		}
		uint64_t suppressed;

		if (log_limit_allow(&ps->secret_log, monotonic_ms(), FAILURE_LOG_INTERVAL_MS,
				    &suppressed))
			log_warn("%s: %s (using the value read before)", ps->what, err);
	}
	if (ps->username) {
		req.username = ps->username;
		req.password = ps->password.value;
	} else if (ps->token.value) {
		req.bearer_token = ps->token.value;
	}
	pb_buffer__reset(&ps->body);
	ret = push_wire__encode(ps->protocol, p, &ps->body);
	if (ret) {
		out->verdict = ret == -ENOMEM ? PUSH_RETRY : PUSH_REJECTED;
		snprintf(out->reason, sizeof(out->reason), "cannot encode the request: %s",
			 strerror(-ret));
		return;
	}
	req.body = pb_buffer__data(&ps->body);
	req.body_len = pb_buffer__len(&ps->body);

	ret = http_client__post(ps->http, &req, &resp);
	out->elapsed_ms = resp.elapsed_ms;
	if (ret) {
		out->verdict = PUSH_RETRY;
		snprintf(out->reason, sizeof(out->reason), "%s", resp.error);
		return;
	}
	out->retry_after_ms = resp.retry_after_ms;
	if (ps->protocol == PUSH_PARCA) {
		judge_parca(ps, &resp, out);
	} else {
		out->verdict = push_wire__http_verdict(resp.status);
		if (out->verdict != PUSH_DELIVERED)
			describe_http_error(ps, &resp, out);
	}
	out->counted = out->verdict == PUSH_RETRY &&
		       push_wire__attempt_counts(resp.status, resp.grpc_status);
}

/* ---- the worker --------------------------------------------------------------------- */

/* Counts and says what a scan found of writes a crash interrupted (under lock). */
static void note_leftovers(struct push_sink *ps)
{
	size_t recovered, torn;

	spool__last_scan(ps->spool, &recovered, &torn);
	ps->stats.spool_recovered += recovered;
	ps->stats.spool_corrupt += torn;
	ps->stats.profiles_dropped += torn;
	if (recovered)
		log_info("%s: recovered %zu whole profiles from writes to spool %s that a crash "
			 "interrupted", ps->what, recovered, spool__dir(ps->spool));
	if (torn)
		log_warn("%s: removed %zu profiles cut short in spool %s by a crash (they are "
			 "lost)", ps->what, torn, spool__dir(ps->spool));
}

/* Takes the spool directory once nobody else holds it, and learns what waits there. Under
 * lock, released around the I/O. */
static void take_spool(struct push_sink *ps, int64_t *waiting_since, bool *warned)
{
	uint64_t max_key = 0;
	int ret, scanned = 0;

	pthread_mutex_unlock(&ps->lock);
	ret = spool__lock(ps->spool);
	if (!ret)
		scanned = spool__scan(ps->spool, &max_key);
	pthread_mutex_lock(&ps->lock);
	if (ret) {
		const char *holder = ret == -EWOULDBLOCK ? spool__holder(ps->spool) : NULL;
		int64_t now = monotonic_ms();

		if (!*waiting_since)
			*waiting_since = now;
		/* Another sink of this agent in the same directory never lets go: say so at
		 * once. The same sink's predecessor (a reload) does, once it has closed. */
		if (!*warned && holder && strcmp(holder, ps->what) != 0) {
			*warned = true;
			log_error("%s: spool directory %s is already used by the %s of this agent "
				  "(the same directory, spelled differently): give each sink a "
				  "spool_dir of its own. Waiting for it before delivering",
				  ps->what, spool__dir(ps->spool), holder);
		} else if (!*warned && now - *waiting_since > SPOOL_LOCK_WARN_MS) {
			*warned = true;
			if (holder)
				log_warn("%s: spool directory %s is still locked by the sink a "
					 "reload replaced, which is closing. Waiting for it before "
					 "delivering",
					 ps->what, spool__dir(ps->spool));
			else
				log_warn("%s: spool directory %s is locked (%s): is another "
					 "allocscope using it? Waiting for it before delivering",
					 ps->what, spool__dir(ps->spool),
					 ret == -EWOULDBLOCK ? "by another process"
							     : strerror(-ret));
		}
		return;
	}
	if (scanned)
		log_warn("%s: cannot read spool directory %s completely: %s", ps->what,
			 spool__dir(ps->spool), strerror(-scanned));
	raise_key_floor(max_key);
	ps->spool_ready = true;
	note_leftovers(ps);
	sync_spool(ps);
	if (ps->spool_count)
		log_info("%s: %zu profiles (%llu bytes) wait in spool %s; delivering them first",
			 ps->what, ps->spool_count, (unsigned long long)ps->spool_bytes,
			 spool__dir(ps->spool));
}

/* Scans again when the index is known to miss files (spool__needs_scan), at most once per
 * initial_backoff. Under lock, released around the I/O. */
static void rescan_spool(struct push_sink *ps, int64_t *rescan_at)
{
	uint64_t max_key = 0;
	int64_t now = monotonic_ms();
	int ret;

	if (!ps->spool_ready || !spool__needs_scan(ps->spool) || now < *rescan_at)
		return;
	pthread_mutex_unlock(&ps->lock);
	ret = spool__scan(ps->spool, &max_key);
	pthread_mutex_lock(&ps->lock);
	raise_key_floor(max_key);
	note_leftovers(ps);
	sync_spool(ps);
	if (ret)
		*rescan_at = now + (int64_t)ps->initial_backoff_ms;
}

static void wait_until(struct push_sink *ps, int64_t at_ms)
{
	struct timespec ts;
	int64_t delay = at_ms - monotonic_ms();

	if (delay <= 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += delay / 1000;
	ts.tv_nsec += (delay % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_cond_timedwait(&ps->wake, &ps->lock, &ts);
}

static void log_outcome(struct push_sink *ps, const struct queued_profile *p,
			const struct outcome *out, int64_t wait_ms)
{
	int64_t now = monotonic_ms();
	uint64_t suppressed = 0;

	switch (out->verdict) {
	case PUSH_DELIVERED:
		if (ps->failures_since_ok)
			log_info("%s: delivering again after %llu failed attempts", ps->what,
				 (unsigned long long)ps->failures_since_ok);
		ps->failures_since_ok = 0;
		ps->failure_log.next_ms = 0;
		log_debug("%s: pushed the profile of %s (%zu bytes) in %lld ms", ps->what,
			  p->service, p->pprof_gz_len, (long long)out->elapsed_ms);
		break;
	case PUSH_RETRY:
		ps->failures_since_ok++;
		if (log_limit_allow(&ps->failure_log, now, FAILURE_LOG_INTERVAL_MS, &suppressed))
			log_warn("%s: push to %s failed: %s; retrying in %.1f s (%zu in memory, "
				 "%zu in the spool)%s",
				 ps->what, http_client__target(ps->http), out->reason,
				 wait_ms / 1000.0, ps->q_len + (ps->current != NULL),
				 ps->spool_count,
				 suppressed ? "; failing since the last message" : "");
		break;
	case PUSH_REJECTED:
		if (log_limit_allow(&ps->reject_log, now, DROP_LOG_INTERVAL_MS, &suppressed))
			log_error("%s: the server refused the profile of %s (not retried): %s%s",
				  ps->what, p->service, out->reason,
				  suppressed ? " (more refusals since the last message: see "
					       "allocscope_sink_profiles_rejected_total)"
					     : "");
		break;
	}
}

/* Done with p, for good (delivered, refused, dropped): off the spool or out of memory.
 * Under lock, released around the spool's I/O. */
static void finish_profile(struct push_sink *ps, struct queued_profile *p, bool from_spool,
			   uint64_t spool_key, struct queued_profile *read_back)
{
	if (ps->counted_key == p->key) {
		ps->counted_key = 0;
		ps->counted_attempts = 0;
	}
	if (from_spool) {
		pthread_mutex_unlock(&ps->lock);
		spool__remove(ps->spool, spool_key);
		pthread_mutex_lock(&ps->lock);
		sync_spool(ps);
		spool__pin(ps->spool, 0);
		free(read_back);
	} else {
		free(ps->current);
		ps->current = NULL;
	}
}

/* "2h", "1h30m", "45m10s", "12.5s": whole units, what a reader compares with a setting. */
static void format_duration(char *buf, size_t len, uint64_t ms)
{
	unsigned long long h = ms / 3600000, m = ms / 60000 % 60, s = ms / 1000 % 60;

	if (h && m)
		snprintf(buf, len, "%lluh%llum", h, m);
	else if (h)
		snprintf(buf, len, "%lluh", h);
	else if (m && s)
		snprintf(buf, len, "%llum%llus", m, s);
	else if (m)
		snprintf(buf, len, "%llum", m);
	else
		snprintf(buf, len, "%.1fs", (double)ms / 1000.0);
}

/* True when p is past max_profile_age: then it is counted and logged, and the caller drops
 * it (under lock). */
static bool expired(struct push_sink *ps, const struct queued_profile *p)
{
	int64_t age_ms = ((int64_t)wall_ns() - p->start_ns) / 1000000;
	uint64_t suppressed = 0;
	char age[32], limit[32];

	if (!ps->max_profile_age_ms || age_ms <= (int64_t)ps->max_profile_age_ms)
		return false;
	ps->stats.profiles_expired++;
	ps->stats.profiles_dropped++;
	if (log_limit_allow(&ps->expire_log, monotonic_ms(), DROP_LOG_INTERVAL_MS, &suppressed)) {
		format_duration(age, sizeof(age), (uint64_t)age_ms);
		format_duration(limit, sizeof(limit), ps->max_profile_age_ms);
		log_warn("%s: dropped the profile of %s without sending it: it is %s old, past "
			 "max_profile_age (%s)%s; the endpoint was down or too slow for that "
			 "long%s",
			 ps->what, p->service, age, limit,
			 ps->protocol == PUSH_PYROSCOPE
				 ? ", and Pyroscope refuses profiles older than 1 h"
				 : "",
			 suppressed ? " (more since the last message: see "
				      "allocscope_sink_profiles_expired_total)"
				    : "");
	}
	return true;
}

/* After a counted refusal of p: true when that was its max_attempts-th, and then it is
 * counted and logged, and the caller drops it (under lock). */
static bool given_up(struct push_sink *ps, const struct queued_profile *p,
		     const struct outcome *out)
{
	uint64_t suppressed = 0;

	if (ps->counted_key != p->key) {
		ps->counted_key = p->key;
		ps->counted_attempts = 0;
	}
	ps->counted_attempts++;
	if (!ps->max_attempts || ps->counted_attempts < ps->max_attempts)
		return false;
	ps->stats.profiles_given_up++;
	ps->stats.profiles_dropped++;
	if (log_limit_allow(&ps->give_up_log, monotonic_ms(), DROP_LOG_INTERVAL_MS, &suppressed))
		log_error("%s: dropped the profile of %s after the server refused it %u times "
			  "(max_attempts): %s. A profile above Pyroscope's ingestion burst (2 MiB "
			  "by default) is refused for ever: lower max_profile_size, or raise the "
			  "server's limit%s",
			  ps->what, p->service, ps->counted_attempts, out->reason,
			  suppressed ? " (more since the last message: see "
				       "allocscope_sink_profiles_given_up_total)"
				     : "");
	return true;
}

static void *worker_main(void *arg)
{
	struct push_sink *ps = arg;
	int64_t lock_waiting_since = 0, rescan_at = 0;
	bool lock_warned = false;

	pthread_mutex_lock(&ps->lock);
	for (;;) {
		struct queued_profile *p = NULL, *read_back = NULL;
		uint64_t spool_key = 0;
		bool from_spool = false, have_spool, have_memory;
		struct outcome out;
		int64_t now = monotonic_ms(), timeout, wait_ms = 0;
		int ret;

		if (ps->spool && !ps->spool_ready) {
			take_spool(ps, &lock_waiting_since, &lock_warned);
			if (!ps->spool_ready) {
				/* Nothing is sent before the spool's older profiles are known. */
				if (ps->closing)
					break;
				wait_until(ps, monotonic_ms() + SPOOL_LOCK_POLL_MS);
				continue;
			}
		}
		if (ps->spool_ready && !ps->closing) {
			rescan_spool(ps, &rescan_at);
			/* While failing nothing waits only in memory; otherwise what submit queued
			 * above queue_size goes to disk. */
			if (ps->failing ? ps->current || ps->q_len : ps->q_len > ps->queue_size)
				spill_to_spool(ps, ps->failing);
			now = monotonic_ms();
		}
		have_memory = ps->current || ps->q_len;
		have_spool = ps->spool_ready && spool__oldest(ps->spool, &spool_key);
		if (!have_memory && !have_spool) {
			if (ps->closing)
				break;
			pthread_cond_wait(&ps->wake, &ps->lock);
			continue;
		}
		if (ps->closing && now >= ps->deadline_ms)
			break;
		if (ps->retry_at_ms > now) {
			wait_until(ps, ps->closing && ps->deadline_ms < ps->retry_at_ms
					   ? ps->deadline_ms
					   : ps->retry_at_ms);
			continue;
		}

		if (!ps->current && ps->q_len)
			ps->current = queue_pop(ps);
		if (have_spool && (!ps->current || spool_key < ps->current->key)) {
			spool__pin(ps->spool, spool_key);
			pthread_mutex_unlock(&ps->lock);
			ret = spool__read(ps->spool, spool_key, &read_back);
			pthread_mutex_lock(&ps->lock);
			sync_spool(ps);
			if (ret == -EBADMSG) {
				ps->stats.spool_corrupt++;
				ps->stats.profiles_dropped++;
			}
			if (ret) {
				spool__pin(ps->spool, 0);
				if (ret != -EBADMSG && ret != -ENOENT) {
					log_warn("%s: cannot read spooled profile %llu: %s",
						 ps->what, (unsigned long long)spool_key,
						 strerror(-ret));
					ps->retry_at_ms = monotonic_ms() + (int64_t)ps->initial_backoff_ms;
				}
				continue;
			}
			p = read_back;
			from_spool = true;
		} else {
			p = ps->current;
		}

		if (expired(ps, p)) {
			finish_profile(ps, p, from_spool, spool_key, read_back);
			continue;
		}
		now = monotonic_ms();
		timeout = (int64_t)ps->timeout_ms;
		if (ps->closing && ps->deadline_ms - now < timeout)
			timeout = ps->deadline_ms - now > 0 ? ps->deadline_ms - now : 1;
		pthread_mutex_unlock(&ps->lock);
		deliver(ps, p, timeout, &out);
		pthread_mutex_lock(&ps->lock);

		now = monotonic_ms();
		switch (out.verdict) {
		case PUSH_DELIVERED:
			ps->stats.profiles_written++;
			ps->stats.bytes_written += p->pprof_gz_len;
			ps->stats.push_ns += (uint64_t)out.elapsed_ms * 1000000;
			ps->failing = false;
			ps->attempt = 0;
			break;
		case PUSH_RETRY:
			ps->stats.errors++;
			ps->stats.retries++;
			ps->failing = true;
			ps->attempt++;
			wait_ms = out.retry_after_ms >= 0
				      ? out.retry_after_ms
				      : push_wire__backoff_ms(
					    ps->attempt, (int64_t)ps->initial_backoff_ms,
					    (int64_t)ps->max_backoff_ms, random_u64());
			ps->retry_at_ms = now + wait_ms;
			break;
		case PUSH_REJECTED:
			ps->stats.errors++;
			ps->stats.profiles_rejected++;
			ps->failing = false;
			ps->attempt = 0;
			break;
		}
		log_outcome(ps, p, &out, wait_ms);
		if (out.verdict == PUSH_RETRY && out.counted && given_up(ps, p, &out)) {
			/* The next profile goes now: this one's refusal says nothing of it. */
			ps->retry_at_ms = 0;
			ps->attempt = 0;
			ps->failing = false;
			out.verdict = PUSH_REJECTED;
		}
		if (out.verdict != PUSH_RETRY) {
			finish_profile(ps, p, from_spool, spool_key, read_back);
			continue;
		}
		if (from_spool) {
			spool__pin(ps->spool, 0);
			free(read_back);
		}
		/* A failure moves what is in memory to the spool at the top of the loop. */
	}
	pthread_mutex_unlock(&ps->lock);
	return NULL;
}

/* ---- the sink operations ------------------------------------------------------------ */

static void push_sink_stats(const struct sink *sink, struct sink_stats *out)
{
	struct push_sink *ps = (struct push_sink *)sink;

	pthread_mutex_lock(&ps->lock);
	*out = ps->stats;
	out->queue_length = ps->q_len + (ps->current != NULL);
	out->spool_profiles = ps->spool_count;
	out->spool_bytes = ps->spool_bytes;
	pthread_mutex_unlock(&ps->lock);
}

static void push_sink_close(struct sink *sink)
{
	struct push_sink *ps = (struct push_sink *)sink;
	uint64_t left = 0, spooled = 0;
	int64_t started = monotonic_ms();

	if (!ps->worker_started)
		return;
	pthread_mutex_lock(&ps->lock);
	ps->closing = true;
	ps->deadline_ms = started + (int64_t)ps->shutdown_timeout_ms;
	/* Waiting on an endpoint already known to be down only delays the exit: the spool
	 * keeps the profiles for the next start. A sink replaced by a reload does not wait
	 * either when it has a spool: its successor delivers from there, and the agent's main
	 * loop, which closes it, is not held up. */
	if ((ps->failing || ps->retiring) && ps->spool)
		ps->deadline_ms = started;
	atomic_store(&ps->abort_at_ms, ps->deadline_ms);
	pthread_cond_signal(&ps->wake);
	pthread_mutex_unlock(&ps->lock);
	pthread_join(ps->worker, NULL);
	ps->worker_started = false;

	/* The worker is gone: what is left in memory is spooled, or lost. */
	pthread_mutex_lock(&ps->lock);
	if (ps->spool && !ps->spool_ready) {
		uint64_t max_key = 0;

		if (spool__lock(ps->spool) == 0 && spool__scan(ps->spool, &max_key) == 0)
			ps->spool_ready = true;
		sync_spool(ps);
	}
	left = ps->q_len + (ps->current != NULL);
	if (ps->spool) {
		/* Without the lock (another process holds the directory) the files are still
		 * written whole and found by whoever scans next; only the size limit cannot be
		 * applied. */
		uint64_t before = ps->stats.profiles_spooled;

		if (ps->current && spool_profile(ps, ps->current))
			ps->current = NULL;
		while (ps->q_len && spool_profile(ps, ps->queue[ps->q_head]))
			queue_pop(ps);
		spooled = ps->stats.profiles_spooled - before;
		sync_spool(ps);
	}
	if (ps->current) {
		note_dropped(ps, 1, "not delivered before shutdown_timeout");
		free(ps->current);
		ps->current = NULL;
	}
	if (ps->q_len) {
		note_dropped(ps, ps->q_len,
			     ps->spool ? "not delivered before shutdown_timeout, "
					 "and the spool cannot take them"
				       : "not delivered before shutdown_timeout (set spool_dir "
					 "to keep them for the next start)");
		while (ps->q_len)
			free(queue_pop(ps));
	}
	if (spooled || (ps->spool && ps->spool_ready && spool__count(ps->spool)))
		log_info("%s: %zu profiles left in spool %s, to be delivered first after a "
			 "reload or restart",
			 ps->what, ps->spool_ready ? spool__count(ps->spool) : (size_t)spooled,
			 spool__dir(ps->spool));
	else if (left)
		log_debug("%s: %llu profiles were waiting at close", ps->what,
			  (unsigned long long)left);
	pthread_mutex_unlock(&ps->lock);
}

static const struct sink_ops pyroscope_ops, parca_ops;

void push_sink__retire(struct sink *sink)
{
	struct push_sink *ps = (struct push_sink *)sink;

	if (!sink || (sink->ops != &pyroscope_ops && sink->ops != &parca_ops))
		return;
	pthread_mutex_lock(&ps->lock);
	ps->retiring = true;
	pthread_mutex_unlock(&ps->lock);
}

static void push_sink_free(struct sink *sink)
{
	struct push_sink *ps = (struct push_sink *)sink;

	if (!ps)
		return;
	if (ps->worker_started)
		push_sink_close(sink);
	while (ps->q_len)
		free(queue_pop(ps));
	free(ps->current);
	free(ps->queue);
	spool__free(ps->spool);
	http_client__free(ps->http);
	pb_buffer__release(&ps->body);
	if (ps->headers) {
		for (char **h = ps->headers; *h; h++) {
			explicit_bzero(*h, strlen(*h));
			free(*h);
		}
		free(ps->headers);
	}
	free(ps->username);
	secret_free(&ps->password);
	secret_free(&ps->token);
	pthread_cond_destroy(&ps->wake);
	pthread_mutex_destroy(&ps->lock);
	free(ps);
}

static void push_sink_shape(const struct sink *sink, struct sink_shape *out)
{
	const struct push_sink *ps = (const struct push_sink *)sink;

	out->merge_processes = true;
	out->inuse_apart = sink->ops == &parca_ops;
	/* Parca v0.28 stores the values of series labels only (pkg/normalizer); Pyroscope's
	 * distributor splits a profile into series by its sample labels itself (pprofsplit,
	 * span_id kept a sample label), so it takes them in one profile. */
	out->series_per_label_set = sink->ops == &parca_ops;
	out->max_samples = ps->max_samples;
	out->max_bytes = ps->max_profile_bytes;
}

static const struct sink_ops pyroscope_ops = {
    .type = "pyroscope",
    .shape = push_sink_shape,
    .submit = push_sink_submit,
    .stats = push_sink_stats,
    .close = push_sink_close,
    .free = push_sink_free,
};

static const struct sink_ops parca_ops = {
    .type = "parca",
    .shape = push_sink_shape,
    .submit = push_sink_submit,
    .stats = push_sink_stats,
    .close = push_sink_close,
    .free = push_sink_free,
};

static int add_header(struct push_sink *ps, size_t *n, const char *name, const char *value)
{
	size_t len;

	if (*n + 1 >= MAX_HEADERS)
		return -E2BIG;
	len = strlen(name) + strlen(value) + 3;
	ps->headers[*n] = malloc(len);
	if (!ps->headers[*n])
		return -ENOMEM;
	snprintf(ps->headers[*n], len, "%s: %s", name, value);
	(*n)++;
	return 0;
}

static int build_headers(struct push_sink *ps, const struct push_sink_opts *opts)
{
	char timeout[32];
	size_t n = 0;
	int ret = 0;

	ps->headers = calloc(MAX_HEADERS, sizeof(*ps->headers));
	if (!ps->headers)
		return -ENOMEM;
	if (opts->protocol == PUSH_PARCA) {
		snprintf(timeout, sizeof(timeout), "%llum", (unsigned long long)ps->timeout_ms);
		ret = add_header(ps, &n, "Content-Type", "application/grpc");
		if (!ret)
			ret = add_header(ps, &n, "TE", "trailers");
		if (!ret)
			ret = add_header(ps, &n, "grpc-timeout", timeout);
	} else {
		ret = add_header(ps, &n, "Content-Type", "application/proto");
		if (!ret)
			ret = add_header(ps, &n, "Connect-Protocol-Version", "1");
		if (!ret && opts->tenant && opts->tenant[0])
			ret = add_header(ps, &n, "X-Scope-OrgID", opts->tenant);
	}
	for (size_t i = 0; i < opts->n_headers && !ret; i++)
		ret = add_header(ps, &n, opts->headers[i].name, opts->headers[i].value);
	return ret;
}

int push_sink__new(const struct push_sink_opts *opts, struct sink **out, char *err, size_t err_len)
{
	bool parca = opts->protocol == PUSH_PARCA;
	struct http_client_opts http = {
	    .url = opts->url,
	    .path = parca ? PARCA_WRITE_RAW_PATH : PYROSCOPE_PUSH_PATH,
	    .http2 = parca,
	    .ca_file = opts->ca_file,
	    .cert_file = opts->cert_file,
	    .key_file = opts->key_file,
	    .server_name = opts->server_name,
	    .insecure_skip_verify = opts->insecure_skip_verify,
	};
	char inner[512] = "";
	pthread_condattr_t attr;
	struct push_sink *ps;
	sigset_t all, old;
	int ret;

	*out = NULL;
	if (!opts->url || !opts->url[0]) {
		set_err(err, err_len, "%s sink: url is required", parca ? "parca" : "pyroscope");
		return -EINVAL;
	}
	ps = calloc(1, sizeof(*ps));
	if (!ps) {
		set_err(err, err_len, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&ps->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&ps->wake, &attr);
	pthread_condattr_destroy(&attr);
	ps->base.ops = parca ? &parca_ops : &pyroscope_ops;
	sink__set_name(&ps->base, opts->name);
	if (opts->name && opts->name[0] && strcmp(opts->name, ps->base.ops->type) != 0)
		snprintf(ps->what, sizeof(ps->what), "%s sink \"%s\"", ps->base.ops->type,
			 ps->base.name);
	else
		snprintf(ps->what, sizeof(ps->what), "%s sink", ps->base.ops->type);
	ps->protocol = opts->protocol;
	ps->timeout_ms = opts->timeout_ms ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
	ps->shutdown_timeout_ms = opts->shutdown_timeout_ms;
	ps->max_profile_bytes = opts->max_profile_bytes;
	ps->max_samples = opts->max_samples;
	ps->max_profile_age_ms = opts->max_profile_age_ms;
	ps->max_attempts = opts->max_attempts;
	ps->initial_backoff_ms =
	    opts->initial_backoff_ms ? opts->initial_backoff_ms : DEFAULT_INITIAL_BACKOFF;
	ps->max_backoff_ms = opts->max_backoff_ms ? opts->max_backoff_ms : DEFAULT_MAX_BACKOFF;
	if (ps->max_backoff_ms < ps->initial_backoff_ms)
		ps->initial_backoff_ms = ps->max_backoff_ms;
	ps->queue_size = opts->queue_size ? opts->queue_size : DEFAULT_QUEUE_SIZE;
	pb_buffer__init(&ps->body, 0);
	atomic_init(&ps->abort_at_ms, 0);

	/* With a spool, submit may go past queue_size until the worker moves the excess to
	 * disk; twice as much bounds memory all the same. */
	ps->queue_cap = opts->spool_dir && opts->spool_dir[0] ? 2 * ps->queue_size : ps->queue_size;
	ps->queue = calloc(ps->queue_cap, sizeof(*ps->queue));
	if (!ps->queue) {
		ret = -ENOMEM;
		set_err(err, err_len, "out of memory");
		goto fail;
	}
	ret = http_client__new(&http, &ps->http, inner, sizeof(inner));
	if (ret) {
		set_err(err, err_len, "%s: %s", ps->what, inner);
		goto fail;
	}
	if (opts->username && opts->username[0]) {
		ps->username = strdup(opts->username);
		if (!ps->username) {
			ret = -ENOMEM;
			goto fail;
		}
	}
	ret = secret_init(&ps->password, opts->password_file, opts->password_env, "password_file",
			  "password_env", inner, sizeof(inner));
	if (!ret)
		ret = secret_init(&ps->token, opts->token_file, opts->token_env, "token_file",
				  "token_env", inner, sizeof(inner));
	if (ret) {
		set_err(err, err_len, "%s: %s", ps->what, inner[0] ? inner : strerror(-ret));
		goto fail;
	}
	ret = build_headers(ps, opts);
	if (ret) {
		set_err(err, err_len, "%s: cannot build the request headers: %s", ps->what,
			strerror(-ret));
		goto fail;
	}
	if (opts->spool_dir && opts->spool_dir[0]) {
		ret = spool__open(opts->spool_dir, opts->spool_max_bytes, &ps->spool, inner,
				  sizeof(inner));
		if (ret) {
			set_err(err, err_len, "%s: %s", ps->what, inner);
			goto fail;
		}
		spool__set_owner(ps->spool, ps->what);
	}
	if (opts->insecure_skip_verify)
		log_warn("%s: insecure_skip_verify is on: the server's certificate is not checked, "
			 "so anyone on the path can read the profiles and credentials",
			 ps->what);

	/* The worker takes no signal: the agent's signals go to its signalfd, and a SIGPIPE
	 * from a closed connection must not end the process. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = -pthread_create(&ps->worker, NULL, worker_main, ps);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret) {
		set_err(err, err_len, "%s: cannot start its thread: %s", ps->what, strerror(-ret));
		goto fail;
	}
	ps->worker_started = true;
	log_info("%s: pushing to %s%s%s", ps->what, http_client__target(ps->http),
		 ps->spool ? ", spool in " : " (no spool)", ps->spool ? spool__dir(ps->spool) : "");
	*out = &ps->base;
	return 0;

fail:
	push_sink_free(&ps->base);
	return ret;
}
