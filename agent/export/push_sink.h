/* The Pyroscope and Parca sinks: profiles pushed over HTTP by a worker thread per sink, so
 * submit only ever copies the profile into a bounded in-memory queue and returns: it never
 * touches the network or the disk. The worker moves profiles to the spool (queue_size
 * exceeded, or the endpoint failing); with a spool the queue may hold up to twice queue_size
 * meanwhile.
 *
 * Delivery is in order, oldest first, whether a profile waits in memory or in the spool.
 * Failures that can pass (no connection, timeouts, HTTP 5xx and 429, gRPC UNAVAILABLE,
 * RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, ABORTED) are retried after a backoff with full jitter
 * (1 s doubling up to max_backoff; a Retry-After is honoured instead); while they last, new
 * profiles, and those waiting in memory, go to the spool, so an agent killed during an outage
 * loses nothing the spool had room for. Refusals (other 4xx, other gRPC codes) are logged
 * with the server's message, counted as rejected and not retried. Delivery is at least once:
 * a push abandoned at the shutdown deadline may have reached the server and is sent again
 * after the restart; Pyroscope gives every profile it ingests an id of its own (the one in
 * RawSample is not used to deduplicate), so such a profile counts twice there.
 *
 * No profile holds up the ones behind it for ever: one older than max_profile_age (from its
 * start; Pyroscope refuses profiles older than 1 h) is dropped when its turn comes, from
 * memory or from the spool, without a request; one the server has refused for now
 * max_attempts times (HTTP 429 or 500, gRPC RESOURCE_EXHAUSTED: Pyroscope's rate limiter
 * answers 429 for ever to a request above its burst) is dropped after the last of them. Both
 * are counted (profiles_expired, profiles_given_up, and profiles_dropped) and logged. The
 * attempt count lives in memory: after a restart a spooled profile starts again from 0.
 *
 * The sink's shape (sink.h) asks for profiles within max_samples and max_profile_size, so a
 * service's profile is trimmed to fit before it is submitted; the size is checked again here. 
 *
 * Closing (sink__free) gives the worker shutdown_timeout to deliver what waits, then spools
 * what is left (or counts it as dropped without a spool). When the endpoint is already known
 * to be failing and there is a spool, it spools at once instead of waiting; so does a sink
 * replaced by a reload (push_sink__retire) that has a spool. Without a spool a replaced sink
 * still takes up to shutdown_timeout to close, and the reload waits for it. */
#ifndef ALLOCSCOPE_PUSH_SINK_H
#define ALLOCSCOPE_PUSH_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "export/push_wire.h"

struct sink;

struct push_header {
	const char *name;
	const char *value;
};

struct push_sink_opts {
	enum push_protocol protocol;
	const char *name; /* the configured name, for messages; may be NULL */
	const char *url;
	uint64_t timeout_ms;	  /* per request; 0: 10 s */
	uint32_t queue_size;	  /* profiles held in memory; 0: 64 */
	const char *spool_dir;	  /* NULL or "": no spool */
	uint64_t spool_max_bytes; /* 0: no limit */
	uint64_t shutdown_timeout_ms;
	uint64_t max_profile_bytes;  /* uncompressed; 0: no limit */
	uint64_t max_samples;	     /* samples per profile; 0: no limit */
	uint64_t max_profile_age_ms; /* older profiles are dropped, not sent; 0: no limit */
	uint32_t max_attempts;	     /* per profile, counted ones (push_wire__attempt_counts);
					0: no limit */
	uint64_t initial_backoff_ms; /* 0: 1 s */
	uint64_t max_backoff_ms;     /* 0: 60 s */

	/* Credentials come from a file (re-read when it changes) or an environment variable
	 * (read once), never from the configuration itself. */
	const char *username; /* basic authentication (Pyroscope) */
	const char *password_file;
	const char *password_env;
	const char *token_file; /* bearer token */
	const char *token_env;
	const char *tenant; /* Pyroscope: X-Scope-OrgID */
	const struct push_header *headers;
	size_t n_headers;

	const char *ca_file;
	const char *cert_file;
	const char *key_file;
	const char *server_name;
	bool insecure_skip_verify;
};

/* Checks the options, reads the credentials, opens the spool directory (its lock and its
 * contents are taken up by the worker) and starts the worker. Returns 0 or -errno with a
 * sentence in err. */
int push_sink__new(const struct push_sink_opts *opts, struct sink **out, char *err, size_t err_len);

/* Marks a sink about to be freed because a reload replaced it (not because the agent stops):
 * with a spool, its close spools what waits at once instead of trying to deliver until
 * shutdown_timeout. Accepts NULL and sinks of other types (ignored). Main thread only. */
void push_sink__retire(struct sink *sink);

#endif
