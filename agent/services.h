/* The continuous agent's services: processes are grouped by service name and, for a pod's
 * processes, by pod container (namespace, pod, container, node), so every profile carries exact
 * labels; each service holds one delta profile per interval. The number of services is capped:
 * past the cap new services fold into "other" (which has no pod labels), counted. At the end of
 * an interval every service's profile is encoded once per shape the sinks ask for and handed to
 * them; services left without processes are then removed.
 *
 * The table knows nothing of BPF or of processes: callers count their processes in
 * service.n_processes and fill service.profile as samples arrive. */
#ifndef ALLOCSCOPE_SERVICES_H
#define ALLOCSCOPE_SERVICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "collect/service_version.h"
#include "config/config.h"

struct alloc_profile;
struct sink;

/* The labels of a pod's service besides service_name and hostname, in this order. */
enum { SERVICE_LABEL_NAMESPACE, SERVICE_LABEL_POD, SERVICE_LABEL_CONTAINER, SERVICE_LABEL_NODE,
       SERVICE_POD_LABELS };
/* What a service's processes run (issue 15), in this order: the version (its label name is
 * configured, services_interval.version_label) and the labels Pyroscope's source code
 * integration reads. A service is one version: two versions of a program are two series. */
enum { SERVICE_CODE_VERSION, SERVICE_CODE_REPOSITORY, SERVICE_CODE_GIT_REF,
       SERVICE_CODE_ROOT_PATH, SERVICE_CODE_LABELS };
#define SERVICES_DEFAULT_VERSION_LABEL SERVICE_VERSION_LABEL
/* Where processes past limits.max_services go. */
#define SERVICES_OVERFLOW "other"
/* The longest label value services__get and the interval's labels keep, in bytes. */
#define SERVICES_MAX_LABEL_VALUE 1024
/* Series a service's profile is split into per interval for a sink that keeps no sample
 * labels (Parca), one per request-context label set (trace_id and span_id left out), the
 * largest first; the sets past it go in the series without labels. */
#define SERVICES_MAX_LABEL_SERIES 64

struct service {
	char *name; /* already cut to the label length limit */
	/* For a pod container's processes: its namespace, pod, container and node (the
	 * SERVICE_LABEL_* order); all NULL for every other service. Part of what the service
	 * is. */
	char *pod_labels[SERVICE_POD_LABELS];
	/* Values in the SERVICE_CODE_* order, each NULL when not known; part of what the
	 * service is. */
	char *code_labels[SERVICE_CODE_LABELS];
	struct alloc_profile *profile; /* this interval's; NULL until its first sample */
	size_t n_processes;            /* the caller's processes in it */
	bool inuse;                    /* some have in-use profiles on: its profiles carry
					  inuse_* (snapshots, not deltas) */
	double inuse_bytes;            /* live at the last interval's snapshot (/metrics) */
	/* Overhead budget: the lowest fraction of the time any of its processes was probed
	 * this interval, its estimates scaled by the inverse; 0 when none was throttled. The
	 * profile's comment says so. */
	double duty_fraction;
	struct service *next;          /* the table's */
};

struct service_limits {
	unsigned max_services;
	size_t max_label_value_bytes; /* at most SERVICES_MAX_LABEL_VALUE */
};

struct services_stats {
	size_t services;
	uint64_t overflowed;             /* lookups that ended in "other" for the cap */
	uint64_t label_values_truncated; /* cut to the limit, or with bytes not UTF-8 replaced */
	uint64_t profiles_built;         /* services whose interval profile encoded */
	uint64_t encode_errors;
	uint64_t stacks_trimmed;         /* folded to keep push sinks' profiles within bounds */
	uint64_t label_series_folded;    /* request-context label sets past
					    SERVICES_MAX_LABEL_SERIES, sent in the service's
					    series without them */
};

struct services;

int services__new(struct services **out);
/* Frees every service and its profile. Accepts NULL. */
void services__free(struct services *t);

/* The service named wanted (cut to the limit as a label value) with these pod labels (NULL, or
 * values in the SERVICE_LABEL_* order: all or none); created when the cap allows, else
 * SERVICES_OVERFLOW without pod labels. NULL when out of memory. */
struct service *services__get(struct services *t, const char *wanted,
			      const char *const *pod_labels, const struct service_limits *limits);

/* services__get for processes whose code is known: code_labels is NULL or values in the
 * SERVICE_CODE_* order, each NULL or "" when unknown. The overflow service has none. */
struct service *services__get_versioned(struct services *t, const char *wanted,
					const char *const *pod_labels,
					const char *const *code_labels,
					const struct service_limits *limits);

/* What an interval's profiles are labelled with and where they go. */
struct services_interval {
	struct sink *const *sinks; /* at least one */
	size_t n_sinks;
	const char *hostname;
	const struct config_label *labels; /* static labels, at most CONFIG_MAX_STATIC_LABELS */
	size_t n_labels;
	uint64_t sample_rate; /* for the profile's comment */
	bool pid_label;
	size_t max_label_value_bytes;
	int64_t start_wall_ns, duration_ns;
	/* The name of the version label; NULL: SERVICES_DEFAULT_VERSION_LABEL, "": none. A
	 * static label of the same name as a code label a service has is left out for it. */
	const char *version_label;
};

struct services_written {
	size_t written; /* services at least one sink took */
	size_t failed;  /* services every sink refused, or whose profile did not encode */
};

/* Hands every service's profile that holds samples (or, with in-use, live allocations) to the
 * sinks and frees every profile; an in-use profile's live stacks start the next one
 * (alloc_profile__carry_live). */
void services__write_interval(struct services *t, const struct services_interval *interval,
			      struct services_written *out);

/* In-use snapshots of every service's profile (alloc_profile__inuse_begin/_end): between the
 * two the caller adds each live entry to its service's profile. */
void services__inuse_begin(struct services *t, uint64_t now_ns);
void services__inuse_end(struct services *t, uint64_t overflow);
/* Of the last snapshot: bytes live per service, for /metrics (name, bytes) one call each. */
void services__each_inuse(const struct services *t,
			  void (*fn)(const struct service *s, double bytes, void *ctx), void *ctx);

/* Removes the services without processes (their last profile is written). */
void services__prune(struct services *t);

void services__stats(const struct services *t, struct services_stats *out);

#endif
