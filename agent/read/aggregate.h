/* Totals of a read profile per allocation site or per function, over the samples a filter
 * keeps: what `allocscope report` and `allocscope diff` print. Every sample type is summed at
 * once, so a report can sort by one and show another beside it.
 *
 * A sample's allocation site is found as the capture summary finds it (alloc_profile.h): from
 * the leaf out, the first function that is neither the allocator (its functions by name, and
 * the rest of the leaf's library when the leaf is not in the executable, pprof's first
 * mapping) nor a known wrapper. By function, flat is the leaf frame's and cum counts each
 * function once per sample however often it recurses. */
#ifndef ALLOCSCOPE_READ_AGGREGATE_H
#define ALLOCSCOPE_READ_AGGREGATE_H

#include <stdbool.h>
#include <stddef.h>

#include "read/pprof_reader.h"

#define AGGREGATE_MAX_TAGS 8

enum aggregate_by {
	AGGREGATE_BY_SITE,
	AGGREGATE_BY_FUNCTION,
};

/* Keeps samples that carry every tag (key=value, string or numeric rendered as pprof_sample__label
 * renders it), and when group_key is set, whose group_key label is group_value (NULL
 * group_value: samples without that label). */
struct sample_filter {
	const char *tag_keys[AGGREGATE_MAX_TAGS];
	const char *tag_values[AGGREGATE_MAX_TAGS];
	size_t n_tags;
	const char *group_key;
	const char *group_value;
};

struct aggregate_row {
	const char *name; /* owned by the aggregate */
	double *flat;	  /* n_types values */
	double *cum;	  /* n_types values (== flat by site) */
};

struct aggregate {
	size_t n_types;
	struct aggregate_row *rows;
	size_t n_rows;
	double *totals;	  /* n_types values over the kept samples */
	size_t n_samples; /* kept */
	struct aggregate_internal *internal;
};

bool sample_filter__keeps(const struct sample_filter *filter, const struct pprof_read_sample *s);

/* The allocation site of a sample, as above; a pointer into the file or buf. */
const char *aggregate_site(const struct pprof_read_sample *sample, char *buf, size_t len);

/* 0 or -ENOMEM. filter may be NULL. */
int aggregate__build(const struct pprof_file *file, enum aggregate_by by,
		     const struct sample_filter *filter, struct aggregate **out);
void aggregate__free(struct aggregate *agg);
/* Rows by type's flat (or cum) value, largest first, ties by name. */
void aggregate__sort(struct aggregate *agg, size_t type, bool by_cum);
/* The row called name, or NULL. */
const struct aggregate_row *aggregate__find(const struct aggregate *agg, const char *name);

/* Distinct values of a label over the samples (those without it are not listed; numeric ones
 * rendered), copied; *n gets how many. Free with aggregate_label_values_free. NULL on
 * -ENOMEM (or when there is none, *n 0). */
char **aggregate_label_values(const struct pprof_file *file, const char *key, size_t *n);
void aggregate_label_values_free(char **values, size_t n);

#endif
