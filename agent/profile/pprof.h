/* pprof profile builder: collects sample types, mappings, functions, locations and samples,
 * and encodes them as a perftools.profiles.Profile (gzipped, as every pprof reader expects).
 *
 * What the servers check is handled here once: string_table[0] is "", ids of mappings,
 * functions and locations run 1..N in insertion order, every string is valid UTF-8 (invalid
 * bytes become U+FFFD), period_type is always present. Strings, functions and locations are
 * interned through hash tables, so profiles with 100k+ distinct entries stay fast.
 *
 * Ownership: the builder copies every string and array it is given; callers keep theirs.
 * A builder is not thread safe. A failing call adds nothing the profile refers to (at most an
 * unused string-table entry) and the builder stays usable. */
#ifndef ALLOCSCOPE_PROFILE_PPROF_H
#define ALLOCSCOPE_PROFILE_PPROF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pb_buffer;
struct pprof_builder;

struct pprof_value_type {
	const char *type;
	const char *unit;
};

struct pprof_mapping {
	uint64_t memory_start, memory_limit, file_offset;
	const char *filename; /* may be NULL */
	const char *build_id; /* hex string or NULL */
	bool has_functions, has_filenames, has_line_numbers, has_inline_frames;
};

/* One frame of a location: function_id from pprof_builder__function(), source line or 0. */
struct pprof_line {
	uint64_t function_id;
	int64_t line;
};

/* A string label when str is non-NULL (num and num_unit ignored), else a numeric one
 * (num_unit may be NULL). */
struct pprof_label {
	const char *key;
	const char *str;
	int64_t num;
	const char *num_unit;
};

/* sample_types: n_sample_types >= 1 value types, one value per sample each. period_type and
 * period describe the sampling (space/bytes, 524288). default_sample_type names one of the
 * sample types (NULL: readers pick the last; a name that is not a sample type is EINVAL).
 * time_nanos starts as the creation time.
 * Pyroscope and Parca reject sample type names containing '-'. Returns NULL with errno set
 * (ENOMEM, EINVAL) on failure. */
struct pprof_builder *pprof_builder__new(const struct pprof_value_type *sample_types,
					 size_t n_sample_types, struct pprof_value_type period_type,
					 int64_t period, const char *default_sample_type);
/* Accepts NULL. */
void pprof_builder__free(struct pprof_builder *b);

/* Wall-clock start of the profile and the span it covers, in nanoseconds. */
void pprof_builder__set_time(struct pprof_builder *b, int64_t time_nanos, int64_t duration_nanos);
/* Free-form text shown by `pprof -comments`. Returns 0 or -ENOMEM. */
int pprof_builder__add_comment(struct pprof_builder *b, const char *comment);

/* Each of the next three returns the new 1-based id (ids run 1..N in insertion order), or 0
 * on error with errno set: ENOMEM, E2BIG (over 2^32-1 entries), or EINVAL for a reference to
 * an id that does not exist. */
uint64_t pprof_builder__add_mapping(struct pprof_builder *b, const struct pprof_mapping *m);
/* Interned: the same (name, system_name, filename, start_line) returns the same id. NULL
 * strings count as "". */
uint64_t pprof_builder__function(struct pprof_builder *b, const char *name, const char *system_name,
				 const char *filename, int64_t start_line);
/* Interned by (mapping_id, address): the same pair returns the same id, and the lines of the
 * first call win. mapping_id may be 0 (no mapping). lines: innermost inline frame first;
 * every function_id must exist. Callers with address-less frames must give each a distinct
 * address or they collapse into one location. */
uint64_t pprof_builder__location(struct pprof_builder *b, uint64_t mapping_id, uint64_t address,
				 const struct pprof_line *lines, size_t n_lines);

/* location_ids leaf first, each an existing location id; values: one per sample type. Samples
 * are not merged: adding the same stack twice makes two samples. Returns 0, -ENOMEM, or
 * -EINVAL (unknown location id, NULL values, label without key). */
int pprof_builder__add_sample(struct pprof_builder *b, const uint64_t *location_ids,
			      size_t n_locations, const int64_t *values,
			      const struct pprof_label *labels, size_t n_labels);
size_t pprof_builder__sample_count(const struct pprof_builder *b);

/* Append the uncompressed Profile message to out (initialised by the caller, who releases it).
 * Returns 0 or out's error (-ENOMEM, -E2BIG past its max_len). May be called repeatedly. */
int pprof_builder__encode(struct pprof_builder *b, struct pb_buffer *out);
/* Encode, gzip (BestSpeed, gzip header), write to a temporary file in the same directory,
 * fsync, rename over path. Never leaves a partial or corrupt file at path, nor a temporary
 * one on failure. The file gets mode 0666 minus umask. Only a regular file at path is
 * replaced: -EEXIST when path is a symbolic link, device, FIFO or socket (checked before
 * writing and again just before the rename), -EISDIR for a directory. Returns 0 or -errno. */
int pprof_builder__write_file(struct pprof_builder *b, const char *path);
/* The gzipped encoding in memory; the caller frees *data. Returns 0 or -errno, with *data
 * NULL and *len 0 on failure. */
int pprof_builder__encode_gzip(struct pprof_builder *b, uint8_t **data, size_t *len);

#endif
