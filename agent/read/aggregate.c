/* Per-site and per-function totals of a read profile (see aggregate.h). Rows are found by
 * name through an open-addressing table of row indices; names are copied into the aggregate so
 * that sites made up in a buffer (an unnamed frame) outlive it. */
#include "read/aggregate.h"
#include "profile/alloc_profile.h"
#include "util/grow.h"
#include "util/hash.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct aggregate_internal {
	uint32_t *slots; /* row index + 1, 0: empty */
	size_t cap_slots;
	size_t cap_rows;
	double *values; /* per row: n_types flat, n_types cum */
	size_t cap_values;
	size_t *last_sample; /* per row: the sample that last added to cum, + 1 */
};

static uint64_t hash_name(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ULL;
	return hash_mix64(h);
}

bool sample_filter__keeps(const struct sample_filter *filter, const struct pprof_read_sample *s)
{
	char buf[64];
	const char *v;

	if (!filter)
		return true;
	for (size_t i = 0; i < filter->n_tags; i++) {
		v = pprof_sample__label(s, filter->tag_keys[i], buf, sizeof(buf));
		if (!v || strcmp(v, filter->tag_values[i]) != 0)
			return false;
	}
	if (filter->group_key) {
		v = pprof_sample__label(s, filter->group_key, buf, sizeof(buf));
		if (!filter->group_value)
			return v == NULL;
		if (!v || strcmp(v, filter->group_value) != 0)
			return false;
	}
	return true;
}

/* Go's allocator, as a Go heap profile's stacks show it: the runtime functions between the
 * program and mallocgc. */
static const char *const go_allocator_prefixes[] = {
    "runtime.mallocgc",
    "runtime.newobject",
    "runtime.newarray",
    "runtime.makeslice",
    "runtime.growslice",
    "runtime.makemap",
    "runtime.rawstring",
    "runtime.rawbyteslice",
    "runtime.rawruneslice",
    "runtime.concatstring",
    "runtime.slicebytetostring",
    "runtime.mapassign",
    "runtime.convT",
    "runtime.malg",
    "runtime.(*mcache)",
};

static bool go_allocator(const char *name)
{
	if (strncmp(name, "runtime.", 8) != 0)
		return false;
	for (size_t i = 0; i < sizeof(go_allocator_prefixes) / sizeof(go_allocator_prefixes[0]);
	     i++)
		if (strncmp(name, go_allocator_prefixes[i], strlen(go_allocator_prefixes[i])) == 0)
			return true;
	return false;
}

const char *aggregate_site(const struct pprof_read_sample *sample, char *buf, size_t len)
{
	const struct pprof_frame *leaf, *frame;
	const char *first_wrapper = NULL;

	if (!sample->n_frames)
		return "(no stack)";
	leaf = sample->frames[0];
	for (uint32_t i = 0; i < sample->n_frames; i++) {
		frame = sample->frames[i];
		/* The leaf's library is the allocator's (libc's strdup is not a site), unless
		 * the leaf is in the executable (mapping 1: a static glibc, Rust's _rjem_). */
		if (i > 0 && leaf->mapping > 1 && frame->mapping == leaf->mapping)
			continue;
		if (alloc_profile_is_allocator_function(frame->name, frame->system_name) ||
		    go_allocator(frame->name))
			continue;
		if (alloc_profile_is_wrapper_function(frame->name, frame->system_name)) {
			if (!first_wrapper)
				first_wrapper = frame->name;
			continue;
		}
		if (i == 0 && sample->n_frames > 1 && leaf->mapping > 1 &&
		    sample->frames[1]->mapping == leaf->mapping)
			continue; /* an unknown function of the allocator's library */
		return frame->name;
	}
	if (first_wrapper)
		return first_wrapper;
	snprintf(buf, len, "%s", leaf->name);
	return buf;
}

static struct aggregate_row *find_or_add(struct aggregate *agg, const char *name, size_t *index)
{
	struct aggregate_internal *in = agg->internal;
	size_t mask, i;

	if ((agg->n_rows + 1) * 2 > in->cap_slots) {
		size_t cap = in->cap_slots ? in->cap_slots * 2 : 1024;
		uint32_t *slots = calloc(cap, sizeof(*slots));

		if (!slots)
			return NULL;
		for (size_t r = 0; r < agg->n_rows; r++) {
			i = hash_name(agg->rows[r].name) & (cap - 1);
			while (slots[i])
				i = (i + 1) & (cap - 1);
			slots[i] = (uint32_t)(r + 1);
		}
		free(in->slots);
		in->slots = slots;
		in->cap_slots = cap;
	}
	mask = in->cap_slots - 1;
	for (i = hash_name(name) & mask; in->slots[i]; i = (i + 1) & mask) {
		if (strcmp(agg->rows[in->slots[i] - 1].name, name) == 0) {
			*index = in->slots[i] - 1;
			return &agg->rows[*index];
		}
	}
	if (array_grow((void **)&agg->rows, &in->cap_rows, agg->n_rows, sizeof(*agg->rows), 256))
		return NULL;
	size_t need = (agg->n_rows + 1) * agg->n_types * 2, cap_values = in->cap_values;

	if (need > cap_values) {
		double *values;
		size_t *last;

		cap_values = cap_values ? cap_values * 2 : 256 * agg->n_types * 2;
		while (cap_values < need)
			cap_values *= 2;
		values = realloc(in->values, cap_values * sizeof(*values));
		if (!values)
			return NULL;
		in->values = values;
		last = realloc(in->last_sample, cap_values * sizeof(*last));
		if (!last)
			return NULL;
		in->last_sample = last;
		in->cap_values = cap_values;
	}
	char *copy = strdup(name);

	if (!copy)
		return NULL;
	memset(in->values + agg->n_rows * agg->n_types * 2, 0,
	       agg->n_types * 2 * sizeof(*in->values));
	in->last_sample[agg->n_rows] = 0;
	agg->rows[agg->n_rows].name = copy;
	in->slots[i] = (uint32_t)(agg->n_rows + 1);
	*index = agg->n_rows++;
	return &agg->rows[*index];
}

static double *row_values(const struct aggregate *agg, size_t index)
{
	return agg->internal->values + index * agg->n_types * 2;
}

int aggregate__build(const struct pprof_file *file, enum aggregate_by by,
		     const struct sample_filter *filter, struct aggregate **out)
{
	struct aggregate *agg = calloc(1, sizeof(*agg));
	char buf[128];
	size_t index;

	*out = NULL;
	if (!agg)
		return -ENOMEM;
	agg->internal = calloc(1, sizeof(*agg->internal));
	agg->n_types = file->n_types;
	agg->totals = calloc(file->n_types, sizeof(*agg->totals));
	if (!agg->internal || !agg->totals)
		goto oom;
	for (size_t s = 0; s < file->n_samples; s++) {
		const struct pprof_read_sample *sample = &file->samples[s];

		if (!sample_filter__keeps(filter, sample))
			continue;
		agg->n_samples++;
		for (size_t t = 0; t < file->n_types; t++)
			agg->totals[t] += (double)sample->values[t];
		if (by == AGGREGATE_BY_SITE) {
			if (!find_or_add(agg, aggregate_site(sample, buf, sizeof(buf)), &index))
				goto oom;
			double *v = row_values(agg, index);

			for (size_t t = 0; t < file->n_types; t++) {
				v[t] += (double)sample->values[t];
				v[file->n_types + t] += (double)sample->values[t];
			}
			continue;
		}
		for (uint32_t f = 0; f < sample->n_frames; f++) {
			if (!find_or_add(agg, sample->frames[f]->name, &index))
				goto oom;
			double *v = row_values(agg, index);

			for (size_t t = 0; f == 0 && t < file->n_types; t++)
				v[t] += (double)sample->values[t];
			if (agg->internal->last_sample[index] == s + 1)
				continue; /* recursion: cum counts a sample once */
			agg->internal->last_sample[index] = s + 1;
			for (size_t t = 0; t < file->n_types; t++)
				v[file->n_types + t] += (double)sample->values[t];
		}
	}
	/* The values array has stopped moving. */
	for (size_t r = 0; r < agg->n_rows; r++) {
		agg->rows[r].flat = row_values(agg, r);
		agg->rows[r].cum = row_values(agg, r) + agg->n_types;
	}
	*out = agg;
	return 0;
oom:
	aggregate__free(agg);
	return -ENOMEM;
}

void aggregate__free(struct aggregate *agg)
{
	if (!agg)
		return;
	for (size_t r = 0; r < agg->n_rows; r++)
		free((char *)agg->rows[r].name);
	if (agg->internal) {
		free(agg->internal->slots);
		free(agg->internal->values);
		free(agg->internal->last_sample);
		free(agg->internal);
	}
	free(agg->rows);
	free(agg->totals);
	free(agg);
}

static size_t sort_type;
static bool sort_cum;

static int compare_rows(const void *a, const void *b)
{
	const struct aggregate_row *x = a, *y = b;
	double vx = sort_cum ? x->cum[sort_type] : x->flat[sort_type];
	double vy = sort_cum ? y->cum[sort_type] : y->flat[sort_type];

	if (vx != vy)
		return vx < vy ? 1 : -1;
	return strcmp(x->name, y->name);
}

void aggregate__sort(struct aggregate *agg, size_t type, bool by_cum)
{
	struct aggregate_internal *in = agg->internal;

	sort_type = type;
	sort_cum = by_cum;
	qsort(agg->rows, agg->n_rows, sizeof(*agg->rows), compare_rows);
	/* Rows moved: the name table is rebuilt at the next lookup. */
	free(in->slots);
	in->slots = NULL;
	in->cap_slots = 0;
}

const struct aggregate_row *aggregate__find(const struct aggregate *agg, const char *name)
{
	struct aggregate_internal *in = agg->internal;

	if (!in->slots) {
		size_t cap = 1024;

		while (cap < agg->n_rows * 2 + 2)
			cap *= 2;
		in->slots = calloc(cap, sizeof(*in->slots));
		if (!in->slots) {
			for (size_t r = 0; r < agg->n_rows; r++)
				if (strcmp(agg->rows[r].name, name) == 0)
					return &agg->rows[r];
			return NULL;
		}
		in->cap_slots = cap;
		for (size_t r = 0; r < agg->n_rows; r++) {
			size_t i = hash_name(agg->rows[r].name) & (cap - 1);

			while (in->slots[i])
				i = (i + 1) & (cap - 1);
			in->slots[i] = (uint32_t)(r + 1);
		}
	}
	for (size_t i = hash_name(name) & (in->cap_slots - 1); in->slots[i];
	     i = (i + 1) & (in->cap_slots - 1))
		if (strcmp(agg->rows[in->slots[i] - 1].name, name) == 0)
			return &agg->rows[in->slots[i] - 1];
	return NULL;
}

char **aggregate_label_values(const struct pprof_file *file, const char *key, size_t *n)
{
	char **values = NULL, buf[64];
	size_t count = 0, cap = 0;

	*n = 0;
	for (size_t s = 0; s < file->n_samples; s++) {
		const char *v = pprof_sample__label(&file->samples[s], key, buf, sizeof(buf));
		size_t i;

		if (!v)
			continue;
		/* Label values are few (the cardinality limiter keeps them so): a scan. */
		for (i = 0; i < count && strcmp(values[i], v) != 0; i++)
			;
		if (i < count)
			continue;
		if (array_grow((void **)&values, &cap, count, sizeof(*values), 16)) {
			aggregate_label_values_free(values, count);
			return NULL;
		}
		values[count] = strdup(v);
		if (!values[count]) {
			aggregate_label_values_free(values, count);
			return NULL;
		}
		count++;
	}
	*n = count;
	return values;
}

void aggregate_label_values_free(char **values, size_t n)
{
	for (size_t i = 0; values && i < n; i++)
		free(values[i]);
	free(values);
}
