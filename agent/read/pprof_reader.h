/* Reading a pprof profile (perftools.profiles.Profile), ours or anyone's: a Go runtime heap
 * profile, jeprof's, Parca's. The file is gzipped protobuf (or plain protobuf); it is read
 * whole, inflated with zlib (at most PPROF_READ_MAX_BYTES), decoded and checked: every id a
 * sample or location refers to exists, every string index is in the table, every sample has
 * one value per sample type. A file that fails any of this is refused with a sentence saying
 * what is wrong; nothing half-read is returned.
 *
 * The result is flat and read-only: samples refer to frames through the profile's locations,
 * expanded here into a per-sample list of frames leaf first (inline functions innermost first),
 * each with a readable name (C++/Rust names demangled when the file carries them mangled; an
 * unnamed frame is "file+0xoffset" or its address). */
#ifndef ALLOCSCOPE_READ_PPROF_READER_H
#define ALLOCSCOPE_READ_PPROF_READER_H

#include <stddef.h>
#include <stdint.h>

/* Uncompressed size past which a file is refused (a gzip bomb, or not a profile). */
#define PPROF_READ_MAX_BYTES (1ull << 30)

struct pprof_type {
	const char *type; /* "alloc_space", "inuse_objects", ... */
	const char *unit; /* "bytes", "count", ... */
};

struct pprof_read_label {
	const char *key;
	const char *str; /* NULL for a numeric label */
	int64_t num;
	const char *num_unit; /* may be "" */
};

struct pprof_frame {
	const char *name;	 /* readable; never NULL */
	const char *system_name; /* linkage name or "" */
	uint32_t mapping;	 /* 1-based index into mappings, 0: none */
};

struct pprof_read_mapping {
	const char *filename;
	uint64_t start, limit, offset;
};

struct pprof_read_sample {
	const int64_t *values;			 /* n_types values */
	const struct pprof_frame *const *frames; /* leaf first */
	uint32_t n_frames;
	const struct pprof_read_label *labels;
	uint32_t n_labels;
};

struct pprof_file {
	struct pprof_type *types;
	size_t n_types;
	size_t default_type; /* index into types: default_sample_type, else the last */
	struct pprof_read_sample *samples;
	size_t n_samples;
	struct pprof_read_mapping *mappings;
	size_t n_mappings;
	int64_t time_nanos, duration_nanos, period;
	struct pprof_type period_type;
	const char **comments;
	size_t n_comments;
	struct pprof_read_internal *internal; /* storage; private */
};

/* Reads path. 0, or -errno with a sentence in err: -ENOENT/-EACCES/... for the file,
 * -EINVAL for a file that is not a readable pprof profile (not gzip or protobuf, truncated,
 * corrupt, the legacy text format), -ENODATA for a profile without samples, -EFBIG past
 * PPROF_READ_MAX_BYTES, -ENOMEM. */
int pprof_file__read(const char *path, struct pprof_file **out, char *err, size_t err_len);
/* The same from bytes in memory (gzipped or not); name is used in messages. */
int pprof_file__parse(const uint8_t *data, size_t len, const char *name, struct pprof_file **out,
		      char *err, size_t err_len);
/* Accepts NULL. */
void pprof_file__free(struct pprof_file *file);

/* Index of the sample type called name, or -1. */
int pprof_file__type_index(const struct pprof_file *file, const char *name);

/* The value of a string label key on a sample, or NULL (numeric labels are rendered into buf
 * as "NUM" or "NUM UNIT"). */
const char *pprof_sample__label(const struct pprof_read_sample *sample, const char *key, char *buf,
				size_t len);

#endif
