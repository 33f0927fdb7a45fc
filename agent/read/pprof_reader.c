/* pprof reader (see pprof_reader.h). Two passes over the decoded Profile message: the first
 * collects the string table, sample types, mappings, functions and locations (and remembers
 * where each sample is), the second decodes samples once every id they name can be checked.
 * Ids of mappings, functions and locations are usually 1..N in order (Go and allocscope write
 * them so); a lookup tries that position first and falls back to a binary search over the ids
 * sorted once. Repeated scalars are read packed or not, as the protobuf spec requires. */
#include "read/pprof_reader.h"
#include "profile/pprof_fields.h"
#include "symbolize/demangle.h"
#include "util/grow.h"
#include "util/small_file.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <sys/stat.h>

struct span {
	const uint8_t *p, *end;
};

struct raw_function {
	uint64_t id, name, system_name;
};

struct raw_location {
	uint64_t id, mapping_id, address;
	size_t first_line, n_lines; /* into line_functions */
	size_t first_frame, n_frames;
};

struct raw_mapping {
	uint64_t id, start, limit, offset, filename;
};

struct pprof_read_internal {
	uint8_t *inflated;
	char *string_arena;
	const char **strings;
	size_t n_strings;
	struct raw_function *functions;
	size_t n_functions, cap_functions;
	const char **function_names; /* readable, per function */
	char **demangled;	     /* owned names, per function (NULL when not demangled) */
	struct raw_location *locations;
	size_t n_locations, cap_locations;
	uint64_t *line_functions;
	size_t n_lines, cap_lines;
	struct raw_mapping *raw_mappings;
	size_t n_raw_mappings, cap_raw_mappings;
	struct pprof_frame *frames;
	size_t n_frames;
	char *unnamed_arena; /* names of frames without a function, per location */
	struct span *sample_spans;
	size_t n_sample_spans, cap_sample_spans;
	int64_t *values;
	const struct pprof_frame **sample_frames;
	size_t n_sample_frames, cap_sample_frames;
	struct pprof_read_label *labels;
	size_t n_labels, cap_labels;
	uint64_t *type_strings; /* 2 per type */
	size_t n_type_strings, cap_type_strings;
	uint64_t *comment_strings;
	size_t n_comment_strings, cap_comment_strings;
	uint64_t default_type_string, period_type_strings[2];
	/* ids sorted with their indices, for the slow lookup path */
	uint64_t (*function_ids)[2], (*location_ids)[2], (*mapping_ids)[2];
};

static int fail(char *err, size_t len, int ret, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	return ret;
}

/* ---- protobuf wire decoding ---- */

static bool get_varint(struct span *s, uint64_t *v)
{
	uint64_t out = 0;

	for (unsigned shift = 0; shift < 64; shift += 7) {
		if (s->p >= s->end)
			return false;
		uint8_t b = *s->p++;

		out |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = out;
			return true;
		}
	}
	return false;
}

/* The next field: its number and wire type; for LEN fields, the payload in *payload; for
 * VARINT, the value in *v. I32/I64 are skipped (and *v set from them). */
static bool next_field(struct span *s, uint32_t *field, unsigned *wire, uint64_t *v,
		       struct span *payload)
{
	uint64_t key, len;

	if (!get_varint(s, &key) || (key >> 3) == 0 || (key >> 3) > 536870911u)
		return false;
	*field = (uint32_t)(key >> 3);
	*wire = (unsigned)(key & 7);
	switch (*wire) {
	case 0:
		return get_varint(s, v);
	case 1:
		if (s->end - s->p < 8)
			return false;
		memcpy(v, s->p, 8);
		s->p += 8;
		return true;
	case 5: {
		uint32_t w;

		if (s->end - s->p < 4)
			return false;
		memcpy(&w, s->p, 4);
		*v = w;
		s->p += 4;
		return true;
	}
	case 2:
		if (!get_varint(s, &len) || len > (uint64_t)(s->end - s->p))
			return false;
		payload->p = s->p;
		payload->end = s->p + len;
		s->p += len;
		return true;
	default:
		return false; /* groups (3, 4) are not in profile.proto */
	}
}

/* A repeated scalar field, packed (LEN) or one varint: calls add for each value. */
static int each_scalar(unsigned wire, uint64_t v, struct span payload,
		       int (*add)(void *ctx, uint64_t v), void *ctx)
{
	if (wire == 0)
		return add(ctx, v);
	if (wire != 2)
		return -EINVAL;
	while (payload.p < payload.end) {
		if (!get_varint(&payload, &v))
			return -EINVAL;
		int ret = add(ctx, v);

		if (ret)
			return ret;
	}
	return 0;
}

struct u64_array {
	uint64_t **items;
	size_t *n, *cap;
};

static int add_u64(void *ctx, uint64_t v)
{
	struct u64_array *a = ctx;

	if (array_grow((void **)a->items, a->cap, *a->n, sizeof(uint64_t), 16))
		return -ENOMEM;
	(*a->items)[(*a->n)++] = v;
	return 0;
}

/* ---- input ---- */

static int inflate_all(const uint8_t *data, size_t len, const char *name, uint8_t **out,
		       size_t *out_len, char *err, size_t err_len)
{
	z_stream z = {0};
	size_t cap = len * 4 + 4096, used = 0;
	uint8_t *buf;
	int zret;

	if (cap > PPROF_READ_MAX_BYTES)
		cap = PPROF_READ_MAX_BYTES;
	buf = malloc(cap);
	if (!buf || inflateInit2(&z, 15 + 16) != Z_OK) {
		free(buf);
		return fail(err, err_len, -ENOMEM, "cannot read %s: out of memory", name);
	}
	z.next_in = (uint8_t *)data;
	z.avail_in = (uInt)(len > UINT32_MAX ? UINT32_MAX : len);
	for (;;) {
		if (used == cap) {
			uint8_t *bigger;

			if (cap >= PPROF_READ_MAX_BYTES) {
				inflateEnd(&z);
				free(buf);
				return fail(
				    err, err_len, -EFBIG,
				    "cannot read %s: it inflates to more than %llu MiB, more "
				    "than any profile allocscope reads",
				    name, PPROF_READ_MAX_BYTES >> 20);
			}
			cap = cap * 2 > PPROF_READ_MAX_BYTES ? PPROF_READ_MAX_BYTES : cap * 2;
			bigger = realloc(buf, cap);
			if (!bigger) {
				inflateEnd(&z);
				free(buf);
				return fail(err, err_len, -ENOMEM, "cannot read %s: out of memory",
					    name);
			}
			buf = bigger;
		}
		z.next_out = buf + used;
		z.avail_out = (uInt)(cap - used > UINT32_MAX ? UINT32_MAX : cap - used);
		zret = inflate(&z, Z_NO_FLUSH);
		used = (size_t)(z.next_out - buf);
		if (zret == Z_STREAM_END)
			break;
		if (zret == Z_OK)
			continue;
		if (zret == Z_BUF_ERROR && z.avail_out != 0) {
			inflateEnd(&z);
			free(buf);
			return fail(err, err_len, -EINVAL,
				    "cannot read %s: the gzip stream is truncated (an interrupted "
				    "copy or download? fetch the profile again)",
				    name);
		}
		if (zret != Z_BUF_ERROR) {
			inflateEnd(&z);
			free(buf);
			return fail(err, err_len, -EINVAL,
				    "cannot read %s: the gzip data is corrupt (%s)", name,
				    z.msg ? z.msg : "inflate failed");
		}
	}
	inflateEnd(&z);
	*out = buf;
	*out_len = used;
	return 0;
}

/* ---- the first pass ---- */

static int parse_value_type(struct span s, uint64_t *type, uint64_t *unit)
{
	uint32_t field;
	unsigned wire;
	uint64_t v = 0;
	struct span payload;

	*type = *unit = 0;
	while (s.p < s.end) {
		if (!next_field(&s, &field, &wire, &v, &payload))
			return -EINVAL;
		if (field == 1 && wire == 0)
			*type = v;
		else if (field == 2 && wire == 0)
			*unit = v;
	}
	return 0;
}

static int parse_mapping(struct pprof_read_internal *in, struct span s)
{
	struct raw_mapping m = {0};
	uint32_t field;
	unsigned wire;
	uint64_t v = 0;
	struct span payload;

	while (s.p < s.end) {
		if (!next_field(&s, &field, &wire, &v, &payload))
			return -EINVAL;
		if (wire != 0)
			continue;
		switch (field) {
		case 1:
			m.id = v;
			break;
		case 2:
			m.start = v;
			break;
		case 3:
			m.limit = v;
			break;
		case 4:
			m.offset = v;
			break;
		case 5:
			m.filename = v;
			break;
		}
	}
	if (array_grow((void **)&in->raw_mappings, &in->cap_raw_mappings, in->n_raw_mappings,
		       sizeof(m), 16))
		return -ENOMEM;
	in->raw_mappings[in->n_raw_mappings++] = m;
	return 0;
}

static int parse_function(struct pprof_read_internal *in, struct span s)
{
	struct raw_function f = {0};
	uint32_t field;
	unsigned wire;
	uint64_t v = 0;
	struct span payload;

	while (s.p < s.end) {
		if (!next_field(&s, &field, &wire, &v, &payload))
			return -EINVAL;
		if (wire != 0)
			continue;
		if (field == 1)
			f.id = v;
		else if (field == 2)
			f.name = v;
		else if (field == 3)
			f.system_name = v;
	}
	if (array_grow((void **)&in->functions, &in->cap_functions, in->n_functions, sizeof(f), 64))
		return -ENOMEM;
	in->functions[in->n_functions++] = f;
	return 0;
}

static int parse_location(struct pprof_read_internal *in, struct span s)
{
	struct raw_location loc = {.first_line = in->n_lines};
	uint32_t field, lf;
	unsigned wire, lw;
	uint64_t v = 0, lv = 0;
	struct span payload, lp;

	while (s.p < s.end) {
		if (!next_field(&s, &field, &wire, &v, &payload))
			return -EINVAL;
		if (field == 1 && wire == 0) {
			loc.id = v;
		} else if (field == 2 && wire == 0) {
			loc.mapping_id = v;
		} else if (field == 3 && wire == 0) {
			loc.address = v;
		} else if (field == 4 && wire == 2) {
			uint64_t function_id = 0;

			while (payload.p < payload.end) {
				if (!next_field(&payload, &lf, &lw, &lv, &lp))
					return -EINVAL;
				if (lf == 1 && lw == 0)
					function_id = lv;
			}
			if (array_grow((void **)&in->line_functions, &in->cap_lines, in->n_lines,
				       sizeof(uint64_t), 64))
				return -ENOMEM;
			in->line_functions[in->n_lines++] = function_id;
			loc.n_lines++;
		}
	}
	if (array_grow((void **)&in->locations, &in->cap_locations, in->n_locations, sizeof(loc),
		       64))
		return -ENOMEM;
	in->locations[in->n_locations++] = loc;
	return 0;
}

static int first_pass(struct pprof_file *file, struct span s, struct span **strings,
		      size_t *n_strings, size_t *cap_strings)
{
	struct pprof_read_internal *in = file->internal;
	struct u64_array comments = {&in->comment_strings, &in->n_comment_strings,
				     &in->cap_comment_strings};
	uint32_t field;
	unsigned wire;
	uint64_t v = 0, type, unit;
	struct span payload = {0};
	int ret = 0;

	while (s.p < s.end && !ret) {
		if (!next_field(&s, &field, &wire, &v, &payload))
			return -EINVAL;
		switch (field) {
		case PROFILE_SAMPLE_TYPE:
			if (wire != 2 || parse_value_type(payload, &type, &unit))
				return -EINVAL;
			if (array_grow((void **)&in->type_strings, &in->cap_type_strings,
				       in->n_type_strings + 1, sizeof(uint64_t), 8))
				return -ENOMEM;
			in->type_strings[in->n_type_strings++] = type;
			in->type_strings[in->n_type_strings++] = unit;
			break;
		case PROFILE_SAMPLE:
			if (wire != 2)
				return -EINVAL;
			if (array_grow((void **)&in->sample_spans, &in->cap_sample_spans,
				       in->n_sample_spans, sizeof(payload), 256))
				return -ENOMEM;
			in->sample_spans[in->n_sample_spans++] = payload;
			break;
		case PROFILE_MAPPING:
			ret = wire == 2 ? parse_mapping(in, payload) : -EINVAL;
			break;
		case PROFILE_LOCATION:
			ret = wire == 2 ? parse_location(in, payload) : -EINVAL;
			break;
		case PROFILE_FUNCTION:
			ret = wire == 2 ? parse_function(in, payload) : -EINVAL;
			break;
		case PROFILE_STRING_TABLE:
			if (wire != 2)
				return -EINVAL;
			if (array_grow((void **)strings, cap_strings, *n_strings, sizeof(payload),
				       256))
				return -ENOMEM;
			(*strings)[(*n_strings)++] = payload;
			break;
		case PROFILE_TIME_NANOS:
			file->time_nanos = (int64_t)v;
			break;
		case PROFILE_DURATION_NANOS:
			file->duration_nanos = (int64_t)v;
			break;
		case PROFILE_PERIOD_TYPE:
			if (wire != 2 || parse_value_type(payload, &in->period_type_strings[0],
							  &in->period_type_strings[1]))
				return -EINVAL;
			break;
		case PROFILE_PERIOD:
			file->period = (int64_t)v;
			break;
		case PROFILE_COMMENT:
			ret = each_scalar(wire, v, payload, add_u64, &comments);
			break;
		case PROFILE_DEFAULT_SAMPLE_TYPE:
			in->default_type_string = v;
			break;
		default:
			break;
		}
	}
	return ret;
}

/* ---- ids ---- */

static int compare_id(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b;

	return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Sorted (id, index) pairs; -EINVAL when an id repeats or is 0. */
static int sort_ids(uint64_t (**out)[2], size_t n, const void *items, size_t item_size)
{
	uint64_t(*ids)[2] = calloc(n ? n : 1, sizeof(*ids));

	if (!ids)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		memcpy(&ids[i][0], (const char *)items + i * item_size, sizeof(uint64_t));
		ids[i][1] = i;
	}
	qsort(ids, n, sizeof(*ids), compare_id);
	*out = ids;
	for (size_t i = 0; i < n; i++)
		if (ids[i][0] == 0 || (i && ids[i][0] == ids[i - 1][0]))
			return -EINVAL;
	return 0;
}

/* Index of id among items (each starting with its uint64_t id), or -1. */
static long find_id(uint64_t (*ids)[2], size_t n, const void *items, size_t item_size, uint64_t id)
{
	size_t lo = 0, hi = n;
	uint64_t at;

	if (id && id <= n) {
		memcpy(&at, (const char *)items + (id - 1) * item_size, sizeof(at));
		if (at == id)
			return (long)(id - 1);
	}
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (ids[mid][0] == id)
			return (long)ids[mid][1];
		if (ids[mid][0] < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/* ---- strings, names and frames ---- */

static int build_strings(struct pprof_read_internal *in, const struct span *spans, size_t n)
{
	size_t total = 0, at = 0;

	for (size_t i = 0; i < n; i++)
		total += (size_t)(spans[i].end - spans[i].p) + 1;
	in->string_arena = malloc(total ? total : 1);
	in->strings = calloc(n ? n : 1, sizeof(*in->strings));
	if (!in->string_arena || !in->strings)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		size_t len = (size_t)(spans[i].end - spans[i].p);

		memcpy(in->string_arena + at, spans[i].p, len);
		in->string_arena[at + len] = '\0';
		in->strings[i] = in->string_arena + at;
		at += len + 1;
	}
	in->n_strings = n;
	return 0;
}

static bool string_at(const struct pprof_read_internal *in, uint64_t index, const char **out)
{
	if (index >= in->n_strings)
		return false;
	*out = in->strings[index];
	return true;
}

static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash && slash[1] ? slash + 1 : path;
}

static int build_frames(struct pprof_file *file, char *err, size_t err_len)
{
	struct pprof_read_internal *in = file->internal;
	size_t n_frames = 0, unnamed = 0, at = 0;

	in->function_names = calloc(in->n_functions + 1, sizeof(*in->function_names));
	in->demangled = calloc(in->n_functions + 1, sizeof(*in->demangled));
	if (!in->function_names || !in->demangled)
		return -ENOMEM;
	for (size_t i = 0; i < in->n_functions; i++) {
		const char *name, *system_name;

		if (!string_at(in, in->functions[i].name, &name) ||
		    !string_at(in, in->functions[i].system_name, &system_name))
			return fail(err, err_len, -EINVAL,
				    "function %" PRIu64 " names a string past the string table",
				    in->functions[i].id);
		if (!*name)
			name = *system_name ? system_name : "??";
		if (demangle__is_mangled(name)) {
			in->demangled[i] = demangle__readable(name);
			if (in->demangled[i])
				name = in->demangled[i];
		}
		in->function_names[i] = name;
	}
	for (size_t i = 0; i < in->n_locations; i++) {
		n_frames += in->locations[i].n_lines ? in->locations[i].n_lines : 1;
		unnamed += in->locations[i].n_lines ? 0 : 1;
	}
	in->frames = calloc(n_frames ? n_frames : 1, sizeof(*in->frames));
	in->unnamed_arena = malloc(unnamed * 96 + 1);
	if (!in->frames || !in->unnamed_arena)
		return -ENOMEM;
	for (size_t i = 0; i < in->n_locations; i++) {
		struct raw_location *loc = &in->locations[i];
		long mapping = -1;

		if (loc->mapping_id) {
			mapping = find_id(in->mapping_ids, in->n_raw_mappings, in->raw_mappings,
					  sizeof(*in->raw_mappings), loc->mapping_id);
			if (mapping < 0)
				return fail(err, err_len, -EINVAL,
					    "location %" PRIu64 " names mapping %" PRIu64
					    ", which the profile does not have",
					    loc->id, loc->mapping_id);
		}
		loc->first_frame = in->n_frames;
		loc->n_frames = loc->n_lines ? loc->n_lines : 1;
		for (size_t k = 0; k < loc->n_lines; k++) {
			uint64_t function_id = in->line_functions[loc->first_line + k];
			long f = find_id(in->function_ids, in->n_functions, in->functions,
					 sizeof(*in->functions), function_id);
			struct pprof_frame *frame = &in->frames[in->n_frames++];

			if (f < 0)
				return fail(err, err_len, -EINVAL,
					    "location %" PRIu64 " names function %" PRIu64
					    ", which the profile does not have",
					    loc->id, function_id);
			frame->name = in->function_names[f];
			frame->system_name = in->strings[in->functions[f].system_name];
			frame->mapping = (uint32_t)(mapping + 1);
		}
		if (!loc->n_lines) {
			struct pprof_frame *frame = &in->frames[in->n_frames++];
			char *name = in->unnamed_arena + at;
			const struct raw_mapping *m =
			    mapping >= 0 ? &in->raw_mappings[mapping] : NULL;

			/* Like the agent's own unnamed frames: file+offset stays the same across
			 * runs, an address does not. */
			if (m && *in->strings[m->filename] && loc->address >= m->start)
				snprintf(name, 96, "%.60s+0x%" PRIx64,
					 base_name(in->strings[m->filename]),
					 loc->address - m->start + m->offset);
			else
				snprintf(name, 96, "0x%" PRIx64, loc->address);
			at += strlen(name) + 1;
			frame->name = name;
			frame->system_name = "";
			frame->mapping = (uint32_t)(mapping + 1);
		}
	}
	return 0;
}

/* ---- the second pass: samples ---- */

struct sample_parse {
	struct pprof_file *file;
	size_t index, n_values, n_frames;
	int error;
};

static int add_value(void *ctx, uint64_t v)
{
	struct sample_parse *sp = ctx;
	struct pprof_read_internal *in = sp->file->internal;

	if (sp->n_values >= sp->file->n_types)
		return -EINVAL;
	in->values[sp->index * sp->file->n_types + sp->n_values++] = (int64_t)v;
	return 0;
}

static int add_location(void *ctx, uint64_t id)
{
	struct sample_parse *sp = ctx;
	struct pprof_read_internal *in = sp->file->internal;
	long index =
	    find_id(in->location_ids, in->n_locations, in->locations, sizeof(*in->locations), id);

	if (index < 0) {
		sp->error = 1;
		return -EINVAL;
	}
	const struct raw_location *loc = &in->locations[index];

	for (size_t k = 0; k < loc->n_frames; k++) {
		if (array_grow((void **)&in->sample_frames, &in->cap_sample_frames,
			       in->n_sample_frames, sizeof(*in->sample_frames), 1024))
			return -ENOMEM;
		in->sample_frames[in->n_sample_frames++] = &in->frames[loc->first_frame + k];
	}
	sp->n_frames += loc->n_frames;
	return 0;
}

static int parse_label(struct pprof_read_internal *in, struct span s)
{
	struct pprof_read_label label = {.key = "", .num_unit = ""};
	uint32_t field;
	unsigned wire;
	uint64_t v = 0;
	struct span payload;
	bool ok = true;

	while (s.p < s.end) {
		if (!next_field(&s, &field, &wire, &v, &payload))
			return -EINVAL;
		if (wire != 0)
			continue;
		if (field == 1)
			ok = ok && string_at(in, v, &label.key);
		else if (field == 2)
			ok = ok && (v == 0 || string_at(in, v, &label.str));
		else if (field == 3)
			label.num = (int64_t)v;
		else if (field == 4)
			ok = ok && string_at(in, v, &label.num_unit);
	}
	if (!ok)
		return -EINVAL;
	if (array_grow((void **)&in->labels, &in->cap_labels, in->n_labels, sizeof(label), 64))
		return -ENOMEM;
	in->labels[in->n_labels++] = label;
	return 0;
}

struct sample_offsets {
	size_t first_frame, first_label;
};

static int parse_samples(struct pprof_file *file, char *err, size_t err_len, const char *name)
{
	struct pprof_read_internal *in = file->internal;
	struct sample_offsets *offsets;
	int ret = 0;

	file->samples = calloc(in->n_sample_spans + 1, sizeof(*file->samples));
	in->values = calloc(in->n_sample_spans * file->n_types + 1, sizeof(*in->values));
	offsets = calloc(in->n_sample_spans + 1, sizeof(*offsets));
	if (!file->samples || !in->values || !offsets) {
		free(offsets);
		return -ENOMEM;
	}
	for (size_t i = 0; i < in->n_sample_spans && !ret; i++) {
		struct span s = in->sample_spans[i];
		struct sample_parse sp = {.file = file, .index = i};
		uint32_t field;
		unsigned wire;
		uint64_t v = 0;
		struct span payload = {0};

		offsets[i].first_frame = in->n_sample_frames;
		offsets[i].first_label = in->n_labels;
		while (s.p < s.end && !ret) {
			if (!next_field(&s, &field, &wire, &v, &payload)) {
				ret = -EINVAL;
				break;
			}
			if (field == 1)
				ret = each_scalar(wire, v, payload, add_location, &sp);
			else if (field == 2)
				ret = each_scalar(wire, v, payload, add_value, &sp);
			else if (field == 3)
				ret = wire == 2 ? parse_label(in, payload) : -EINVAL;
		}
		if (ret == -ENOMEM)
			break;
		if (ret || sp.n_values != file->n_types) {
			ret =
			    fail(err, err_len, -EINVAL,
				 "cannot read %s: sample %zu is malformed (%s); the file is not a "
				 "valid pprof profile",
				 name, i + 1,
				 sp.error ? "it names a location the profile does not have"
				 : ret	  ? "bad encoding"
					  : "its value count differs from the sample types'");
			break;
		}
		file->samples[i].n_frames = (uint32_t)sp.n_frames;
		file->samples[i].n_labels = (uint32_t)(in->n_labels - offsets[i].first_label);
	}
	if (!ret) {
		file->n_samples = in->n_sample_spans;
		/* The arrays have stopped growing: pointers into them are final now. */
		for (size_t i = 0; i < file->n_samples; i++) {
			file->samples[i].values = in->values + i * file->n_types;
			file->samples[i].frames = in->sample_frames + offsets[i].first_frame;
			file->samples[i].labels = in->labels + offsets[i].first_label;
		}
	} else {
		file->n_samples = 0;
	}
	free(offsets);
	return ret;
}

static int resolve_header(struct pprof_file *file, const char *name, char *err, size_t err_len)
{
	struct pprof_read_internal *in = file->internal;
	const char *dflt = "";

	file->n_types = in->n_type_strings / 2;
	file->types = calloc(file->n_types + 1, sizeof(*file->types));
	file->mappings = calloc(in->n_raw_mappings + 1, sizeof(*file->mappings));
	file->comments = calloc(in->n_comment_strings + 1, sizeof(*file->comments));
	if (!file->types || !file->mappings || !file->comments)
		return -ENOMEM;
	for (size_t i = 0; i < file->n_types; i++)
		if (!string_at(in, in->type_strings[2 * i], &file->types[i].type) ||
		    !string_at(in, in->type_strings[2 * i + 1], &file->types[i].unit))
			goto bad_string;
	for (size_t i = 0; i < in->n_raw_mappings; i++) {
		file->mappings[i].start = in->raw_mappings[i].start;
		file->mappings[i].limit = in->raw_mappings[i].limit;
		file->mappings[i].offset = in->raw_mappings[i].offset;
		if (!string_at(in, in->raw_mappings[i].filename, &file->mappings[i].filename))
			goto bad_string;
	}
	file->n_mappings = in->n_raw_mappings;
	for (size_t i = 0; i < in->n_comment_strings; i++)
		if (!string_at(in, in->comment_strings[i], &file->comments[i]))
			goto bad_string;
	file->n_comments = in->n_comment_strings;
	if (!string_at(in, in->default_type_string, &dflt) ||
	    !string_at(in, in->period_type_strings[0], &file->period_type.type) ||
	    !string_at(in, in->period_type_strings[1], &file->period_type.unit))
		goto bad_string;
	file->default_type = file->n_types ? file->n_types - 1 : 0;
	for (size_t i = 0; *dflt && i < file->n_types; i++)
		if (strcmp(file->types[i].type, dflt) == 0)
			file->default_type = i;
	return 0;
bad_string:
	return fail(err, err_len, -EINVAL,
		    "cannot read %s: it refers to strings past its string table (corrupt, or not "
		    "a pprof profile)",
		    name);
}

static bool looks_like_text(const uint8_t *data, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);

	return len >= n && memcmp(data, prefix, n) == 0;
}

int pprof_file__parse(const uint8_t *data, size_t len, const char *name, struct pprof_file **out,
		      char *err, size_t err_len)
{
	struct pprof_file *file = NULL;
	struct pprof_read_internal *in;
	struct span *string_spans = NULL, body;
	size_t n_strings = 0, cap_strings = 0, inflated_len = 0;
	uint8_t *inflated = NULL;
	int ret;

	*out = NULL;
	if (len == 0)
		return fail(err, err_len, -EINVAL,
			    "cannot read %s: the file is empty (an interrupted capture? write the "
			    "profile again)",
			    name);
	if (len >= 2 && data[0] == 0x1f && data[1] == 0x8b) {
		ret = inflate_all(data, len, name, &inflated, &inflated_len, err, err_len);
		if (ret)
			return ret;
		data = inflated;
		len = inflated_len;
	}
	if (looks_like_text(data, len, "heap_v2/")) {
		free(inflated);
		return fail(
		    err, err_len, -EINVAL,
		    "cannot read %s: it is a jemalloc heap dump (heap_v2 text), not a pprof "
		    "profile (read it with jeprof, e.g. `jeprof --collapsed PROGRAM FILE`, "
		    "or profile the program with allocscope)",
		    name);
	}
	if (looks_like_text(data, len, "heap profile:") || looks_like_text(data, len, "--- heap") ||
	    looks_like_text(data, len, "--- symbol")) {
		free(inflated);
		return fail(
		    err, err_len, -EINVAL,
		    "cannot read %s: it is a legacy text heap profile (gperftools, old Go), "
		    "not a pprof protobuf (convert it with `go tool pprof -proto PROGRAM FILE "
		    "> FILE.pb.gz`)",
		    name);
	}
	file = calloc(1, sizeof(*file));
	in = calloc(1, sizeof(*in));
	if (!file || !in) {
		free(file);
		free(in);
		free(inflated);
		return fail(err, err_len, -ENOMEM, "cannot read %s: out of memory", name);
	}
	file->internal = in;
	in->inflated = inflated;
	body.p = data;
	body.end = data + len;
	ret = first_pass(file, body, &string_spans, &n_strings, &cap_strings);
	if (ret == -ENOMEM)
		goto oom;
	if (ret || n_strings == 0 || string_spans[0].end != string_spans[0].p) {
		ret = fail(err, err_len, -EINVAL, "cannot read %s: it is not a pprof profile (%s)",
			   name,
			   ret	       ? "not a protobuf Profile message"
			   : n_strings ? "its string table does not start with \"\""
				       : "it has no string table");
		goto out;
	}
	ret = build_strings(in, string_spans, n_strings);
	if (ret)
		goto oom;
	ret = resolve_header(file, name, err, err_len);
	if (ret == -ENOMEM)
		goto oom;
	if (ret)
		goto out;
	if (!file->n_types) {
		ret = fail(err, err_len, -EINVAL,
			   "cannot read %s: it has no sample types (not a pprof profile?)", name);
		goto out;
	}
	ret = sort_ids(&in->function_ids, in->n_functions, in->functions, sizeof(*in->functions));
	if (!ret)
		ret = sort_ids(&in->location_ids, in->n_locations, in->locations,
			       sizeof(*in->locations));
	if (!ret)
		ret = sort_ids(&in->mapping_ids, in->n_raw_mappings, in->raw_mappings,
			       sizeof(*in->raw_mappings));
	if (ret == -ENOMEM)
		goto oom;
	if (ret) {
		ret = fail(err, err_len, -EINVAL,
			   "cannot read %s: a function, location or mapping id is 0 or repeats "
			   "(corrupt profile)",
			   name);
		goto out;
	}
	{
		char why[256];

		ret = build_frames(file, why, sizeof(why));
		if (ret == -ENOMEM)
			goto oom;
		if (ret) {
			ret = fail(err, err_len, ret, "cannot read %s: %s (corrupt profile)", name,
				   why);
			goto out;
		}
	}
	ret = parse_samples(file, err, err_len, name);
	if (ret == -ENOMEM)
		goto oom;
	if (ret)
		goto out;
	if (!file->n_samples) {
		ret = fail(err, err_len, -ENODATA,
			   "cannot read %s: the profile holds no samples (nothing was allocated "
			   "while it was taken?)",
			   name);
		goto out;
	}
	free(string_spans);
	*out = file;
	return 0;
oom:
	ret = fail(err, err_len, -ENOMEM, "cannot read %s: out of memory", name);
out:
	free(string_spans);
	pprof_file__free(file);
	return ret;
}

int pprof_file__read(const char *path, struct pprof_file **out, char *err, size_t err_len)
{
	struct dynbuf buf;
	size_t len = 0;
	char *data;
	int fd, ret;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		ret = -errno;
		return fail(err, err_len, ret, "cannot open %s: %s", path, strerror(-ret));
	}
	struct stat st;

	if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
		close(fd);
		return fail(err, err_len, -EINVAL,
			    "cannot read %s: not a regular file (give a "
			    "profile file)",
			    path);
	}
	dynbuf_init(&buf, PPROF_READ_MAX_BYTES);
	ret = small_file_read_all(fd, &buf);
	close(fd);
	if (ret) {
		dynbuf_free(&buf);
		if (ret == -EFBIG)
			return fail(err, err_len, ret, "cannot read %s: larger than %llu MiB", path,
				    PPROF_READ_MAX_BYTES >> 20);
		return fail(err, err_len, ret, "cannot read %s: %s", path, strerror(-ret));
	}
	data = dynbuf_take(&buf, &len);
	ret = pprof_file__parse((const uint8_t *)data, len, path, out, err, err_len);
	free(data);
	return ret;
}

void pprof_file__free(struct pprof_file *file)
{
	struct pprof_read_internal *in;

	if (!file)
		return;
	in = file->internal;
	if (in) {
		for (size_t i = 0; in->demangled && i < in->n_functions; i++)
			free(in->demangled[i]);
		free(in->demangled);
		free(in->function_names);
		free(in->inflated);
		free(in->string_arena);
		free(in->strings);
		free(in->functions);
		free(in->locations);
		free(in->line_functions);
		free(in->raw_mappings);
		free(in->frames);
		free(in->unnamed_arena);
		free(in->sample_spans);
		free(in->values);
		free(in->sample_frames);
		free(in->labels);
		free(in->type_strings);
		free(in->comment_strings);
		free(in->function_ids);
		free(in->location_ids);
		free(in->mapping_ids);
		free(in);
	}
	free(file->types);
	free(file->samples);
	free(file->mappings);
	free(file->comments);
	free(file);
}

int pprof_file__type_index(const struct pprof_file *file, const char *name)
{
	for (size_t i = 0; i < file->n_types; i++)
		if (strcmp(file->types[i].type, name) == 0)
			return (int)i;
	return -1;
}

const char *pprof_sample__label(const struct pprof_read_sample *sample, const char *key, char *buf,
				size_t len)
{
	for (uint32_t i = 0; i < sample->n_labels; i++) {
		const struct pprof_read_label *l = &sample->labels[i];

		if (strcmp(l->key, key) != 0)
			continue;
		if (l->str)
			return l->str;
		snprintf(buf, len, "%" PRId64 "%s%s", l->num, *l->num_unit ? " " : "", l->num_unit);
		return buf;
	}
	return NULL;
}
