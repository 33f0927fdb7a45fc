/* Where finished interval profiles go. A sink takes one profile record at a time; the agent
 * builds each profile once and hands it to every configured sink. The directory sink ships
 * first; Pyroscope and Parca sinks implement the same operations. */
#ifndef ALLOCSCOPE_SINK_H
#define ALLOCSCOPE_SINK_H

#include <stddef.h>
#include <stdint.h>

struct profile_label {
	const char *key;
	const char *value;
};

/* One service's profile for one interval. Everything is borrowed for the duration of
 * sink__submit; a sink copies what it keeps. */
struct profile_record {
	const char *service;                 /* the service_name label's value */
	const struct profile_label *labels;  /* service_name, hostname, static labels */
	size_t n_labels;
	int64_t start_ns;                    /* wall clock, nanoseconds since the epoch */
	int64_t duration_ns;
	const uint8_t *pprof_gz;             /* gzipped perftools.profiles.Profile */
	size_t pprof_gz_len;
};

struct sink_stats {
	uint64_t profiles_written;  /* delivered (written, pushed) */
	uint64_t bytes_written;
	uint64_t errors;            /* submissions that failed */
	uint64_t profiles_dropped;  /* given up on */
	uint64_t files_removed;     /* removed by a retention limit */
};

struct sink;

struct sink_ops {
	const char *type; /* "directory", ... */
	/* 0 or -errno; on failure the sink logs what failed. */
	int (*submit)(struct sink *sink, const struct profile_record *record);
	void (*stats)(const struct sink *sink, struct sink_stats *out);
	void (*free)(struct sink *sink);
};

/* Every sink embeds this first. */
struct sink {
	const struct sink_ops *ops;
};

static inline int sink__submit(struct sink *sink, const struct profile_record *record)
{
	return sink->ops->submit(sink, record);
}

static inline void sink__stats(const struct sink *sink, struct sink_stats *out)
{
	sink->ops->stats(sink, out);
}

static inline const char *sink__type(const struct sink *sink)
{
	return sink->ops->type;
}

/* Accepts NULL. */
static inline void sink__free(struct sink *sink)
{
	if (sink)
		sink->ops->free(sink);
}

#endif
