/* Where finished interval profiles go. A sink takes one profile record at a time; the agent
 * builds each profile once and hands it to every configured sink. The directory sink writes
 * files; the push sinks (push_sink.h) deliver to Pyroscope and Parca from a worker thread of
 * their own, so submit never waits on the network.
 *
 * Counters survive a reload: when a sink is freed its final counters are kept under its type
 * and name, and sink__totals() adds them to those of the sink that replaces it, so the
 * agent's metrics never go backwards because the configuration was reloaded. */
#ifndef ALLOCSCOPE_SINK_H
#define ALLOCSCOPE_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct profile_label {
	const char *key;
	const char *value;
};

/* One service's profile for one interval. Everything is borrowed for the duration of
 * sink__submit; a sink copies what it keeps. */
struct profile_record {
	const char *service;		    /* the service_name label's value */
	const struct profile_label *labels; /* service_name, hostname, static labels */
	size_t n_labels;
	int64_t start_ns; /* wall clock, nanoseconds since the epoch */
	int64_t duration_ns;
	const uint8_t *pprof_gz; /* gzipped perftools.profiles.Profile */
	size_t pprof_gz_len;
};

struct sink_stats {
	/* counters */
	uint64_t profiles_written; /* delivered (written, pushed) */
	uint64_t bytes_written;
	uint64_t errors;	    /* failed writes or delivery attempts */
	uint64_t profiles_dropped;  /* given up on: queue or spool full, undeliverable at exit */
	uint64_t files_removed;	    /* removed by a retention limit */
	uint64_t retries;	    /* failed attempts that will be tried again */
	uint64_t profiles_rejected; /* refused by the server (not retried) or over size limits */
	uint64_t profiles_spooled;  /* written to the on-disk spool */
	uint64_t spool_corrupt;	    /* spool files that could not be read back (skipped) */
	uint64_t spool_recovered;   /* whole profiles a crash left under a temporary name */
	uint64_t push_ns;	    /* time spent in successful deliveries */
	/* Among profiles_dropped, by reason: */
	uint64_t profiles_expired;  /* older than max_profile_age: the server would refuse them */
	uint64_t profiles_given_up; /* refused for now max_attempts times (HTTP 429, say) */
	/* gauges: now, not summed over reloads */
	uint64_t queue_length;	 /* profiles waiting in memory, the one in flight included */
	uint64_t spool_profiles; /* profiles waiting in the spool */
	uint64_t spool_bytes;
};

/* The longest sink name, NUL excluded. */
#define SINK_NAME_MAX 63

/* How a sink wants a service's profile built (see alloc_profile_output). The directory
 * sink keeps every process apart, with the per-sample labels (and pid, when configured); the
 * push sinks merge a service's processes, send no per-sample labels (the series labels say
 * it all) and bound the profile to what their server accepts by default. */
struct sink_shape {
	bool merge_processes; /* and no per-sample labels */
	uint64_t max_samples; /* 0: no limit */
	uint64_t max_bytes;   /* uncompressed; 0: no limit */
	bool inuse_apart;     /* in-use as a profile of its own with duration 0 (Parca takes a
				 profile with a duration for a delta, every type in it) */
	bool series_per_label_set; /* one profile per request-context label set, its labels
				      series labels (Parca keeps no sample label values) */
};

struct sink;

struct sink_ops {
	const char *type; /* "directory", "pyroscope", "parca" */
	/* 0 or -errno; on failure the sink logs what failed. Never blocks on the network. */
	int (*submit)(struct sink *sink, const struct profile_record *record);
	void (*stats)(const struct sink *sink, struct sink_stats *out);
	/* Optional: stop accepting, deliver what can be delivered within the sink's deadline,
	 * keep (spool) or count as dropped the rest. Called once, before free. */
	void (*close)(struct sink *sink);
	void (*free)(struct sink *sink);
	/* Optional: the shape of the profiles it takes; without it, one sample per (pid,
	 * stack) and no limits. */
	void (*shape)(const struct sink *sink, struct sink_shape *out);
};

/* Every sink embeds this first. */
struct sink {
	const struct sink_ops *ops;
	char name[SINK_NAME_MAX + 1]; /* the configured name; "" reads as the type */
};

static inline int sink__submit(struct sink *sink, const struct profile_record *record)
{
	return sink->ops->submit(sink, record);
}

static inline void sink__stats(const struct sink *sink, struct sink_stats *out)
{
	sink->ops->stats(sink, out);
}

static inline void sink__shape(const struct sink *sink, struct sink_shape *out)
{
	*out = (struct sink_shape){ 0 };
	if (sink->ops->shape)
		sink->ops->shape(sink, out);
}

static inline const char *sink__type(const struct sink *sink)
{
	return sink->ops->type;
}

/* The configured name, or the type when none was set. */
const char *sink__name(const struct sink *sink);

/* Sets the name (cut at SINK_NAME_MAX bytes). */
void sink__set_name(struct sink *sink, const char *name);

/* The sink's counters plus those of earlier sinks of the same type and name that were freed
 * (by a reload); gauges are this sink's own. Main thread only. */
void sink__totals(const struct sink *sink, struct sink_stats *out);

/* Closes the sink (see sink_ops.close), keeps its final counters for sink__totals, frees it.
 * Accepts NULL. Main thread only. */
void sink__free(struct sink *sink);

/* Adds the counters of b to a (gauges untouched). */
void sink_stats__add_counters(struct sink_stats *a, const struct sink_stats *b);

#endif
