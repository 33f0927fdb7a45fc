/* A sample's request context (struct alloc_context, read by the BPF program from the
 * thread's OTel thread-context record or Custom Labels set) as pprof string labels: the
 * attributes under the key names the process published (OTel: its process context's
 * key table; an index the table does not name becomes "attribute_<index>"; Custom Labels
 * carry their keys), keys made label names ([a-zA-Z_][a-zA-Z0-9_]*: other bytes become
 * '_'; names starting with "__" dropped), the first of a repeated key kept, values made valid
 * UTF-8 and cut to max_value_bytes at a character boundary; trace_id and span_id (lowercase
 * hex, as W3C Trace Context writes them) only when asked for and set, first (n_ids). */
#ifndef ALLOCSCOPE_CONTEXT_LABELS_H
#define ALLOCSCOPE_CONTEXT_LABELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alloc.h"
#include "profile/pprof.h"

/* Labels one sample may get from its context. */
#define CONTEXT_LABELS_MAX 16
/* The longest value either format can hold (a one-byte length): decoded whole, the profile's
 * label limiter cuts it (sample_labels.max_value_bytes) and counts the cut. */
#define CONTEXT_LABELS_MAX_VALUE_BYTES 255

struct context_label_opts {
	bool trace_ids;            /* trace_id and span_id labels */
	uint32_t max_value_bytes;  /* values cut to this many bytes (UTF-8 boundary), at most
				      CONTEXT_LABELS_MAX_VALUE_BYTES */
};

/* Where decoded labels live: their strings point into text. */
struct context_labels {
	size_t count;
	size_t n_ids;              /* labels[0 .. n_ids): trace_id, span_id (not attributes) */
	struct pprof_label labels[CONTEXT_LABELS_MAX];
	char text[CONTEXT_LABELS_MAX * 2 * 132 + 64];
};

/* Decodes ctx with the process's key names (names[i] names OTel key index i; may be NULL
 * where unnamed; n_names may be 0) into out. Nothing when the context is absent or torn. */
void context_labels__decode(const struct alloc_context *ctx, const char *const *names,
			    size_t n_names, const struct context_label_opts *opts,
			    struct context_labels *out);

#endif
