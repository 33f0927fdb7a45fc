/* Bounds on the per-sample labels a profile takes (issue 15): request context such as endpoint
 * or tenant comes from the profiled program, so its cardinality is the program's, not the
 * operator's. A limiter stands for one service over one interval (the agent makes one per
 * service profile; the one-off capture one for the whole capture) and decides for each
 * (key, value) a sample carries:
 *   - keys: the configured ones only; when none are configured, every key the program
 *     publishes up to max_keys of them, first come first kept. A key is made a valid label
 *     name (bytes other than [a-zA-Z0-9_] become '_', "http.route" -> "http_route");
 *   - values: made valid UTF-8 and cut at max_value_bytes on a character boundary; the first
 *     max_values distinct values of a key are kept, every later one becomes LABEL_LIMITS_OTHER.
 * Every label left out, every value folded into "other" and every value cut is counted into a
 * label_limits_stats the caller owns (the agent's /metrics).
 *
 * Not thread-safe: one limiter, and its stats, per thread. */
#ifndef ALLOCSCOPE_LABEL_LIMITS_H
#define ALLOCSCOPE_LABEL_LIMITS_H

#include <stddef.h>
#include <stdint.h>

/* The most keys a limiter keeps (and sample_labels.keys may list). */
#define LABEL_LIMITS_MAX_KEYS 32
/* The longest value and key kept, in bytes. */
#define LABEL_LIMITS_MAX_VALUE_BYTES 1024
#define LABEL_LIMITS_MAX_KEY_BYTES 128
/* The one value past max_values. */
#define LABEL_LIMITS_OTHER "other"

/* The configuration's sample_labels.* (config/config.c has the defaults and ranges). */
struct label_limits_config {
	char **keys;              /* the keys kept; none: every key, up to max_keys */
	size_t n_keys;            /* at most LABEL_LIMITS_MAX_KEYS */
	uint32_t max_keys;        /* 1 .. LABEL_LIMITS_MAX_KEYS */
	uint32_t max_values;      /* distinct values per key, >= 1 */
	uint32_t max_value_bytes; /* 1 .. LABEL_LIMITS_MAX_VALUE_BYTES */
};

/* Counters a limiter adds to; the caller's, shared by its limiters. */
struct label_limits_stats {
	uint64_t labels_kept;       /* labels admitted ("other" included) */
	uint64_t labels_dropped;    /* labels left out: key not kept, or past max_keys */
	uint64_t values_other;      /* values replaced by LABEL_LIMITS_OTHER */
	uint64_t values_truncated;  /* values cut to max_value_bytes or made valid UTF-8 */
};

struct label_limits;

/* A limiter with a copy of config, counting into stats (may be NULL: not counted).
 * 0, -EINVAL when config is out of range, or -ENOMEM. */
int label_limits__new(const struct label_limits_config *config, struct label_limits_stats *stats,
		      struct label_limits **out);
/* A limiter for the next interval: limits' configuration and stats, no values seen yet.
 * 0 or -ENOMEM. */
int label_limits__new_like(const struct label_limits *limits, struct label_limits **out);
/* Accepts NULL. */
void label_limits__free(struct label_limits *limits);

/* Decides one label. Returns 1 with *key_out and *value_out set to the label to record
 * (strings owned by the limiter, alive until label_limits__free: callers may keep the
 * pointers, and equal labels get equal pointers), 0 when the label is left out, or -ENOMEM
 * (the label is left out, not counted). key and value are NUL-terminated bytes from the
 * program; anything is accepted. */
int label_limits__admit(struct label_limits *limits, const char *key, const char *value,
			const char **key_out, const char **value_out);

/* Distinct values kept for key so far ("other" included); 0 for a key not kept. */
size_t label_limits__distinct(const struct label_limits *limits, const char *key);

#endif
