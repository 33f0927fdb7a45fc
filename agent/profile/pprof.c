/* pprof Profile builder (see pprof.h). Everything added is copied into flat arrays; strings
 * live in an arena and are found again through open-addressing hash tables that hold only
 * ids, so interning 100k strings or locations is a hash and a probe or two each. Encoding
 * walks the arrays once, writing each message body-first through protobuf.c, and gzips the
 * result with zlib at BestSpeed, as Go's runtime/pprof does. */
#include "profile/pprof.h"
#include "profile/pprof_fields.h"
#include "profile/protobuf.h"
#include "util/hash.h"
#include "util/fd_write.h"
#include "util/utf8_text.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <sys/stat.h>

/* Ids inside the builder are 32 bits: tables of more than 4 billion entries would not fit a
 * server's size limits anyway, and half-size slots keep the hash tables cache friendly. */
#define PPROF_MAX_ENTRIES UINT32_MAX

/* An open-addressing (linear probing) table from a 32-bit hash to a 1-based id into one of
 * the builder's arrays; the arrays hold the keys. Keeping the hash in the slot lets probing
 * skip most key comparisons and lets growth rehash without touching the keys. */
struct id_slot {
	uint32_t hash;
	uint32_t id; /* 0: empty */
};

struct id_table {
	struct id_slot *slots;
	size_t mask; /* capacity - 1; capacity is a power of two */
	size_t count;
};

struct str_ref {
	const char *s;
	uint32_t len;
};

/* Strings are copied into chunks that never move, so str_ref pointers stay valid. */
struct arena_chunk {
	struct arena_chunk *next;
	size_t used, cap;
	char data[];
};

#define ARENA_CHUNK_SIZE (64 * 1024)

struct value_type_ref {
	uint32_t type, unit;
};

struct mapping_rec {
	uint64_t memory_start, memory_limit, file_offset;
	uint32_t filename, build_id;
	bool has_functions, has_filenames, has_line_numbers, has_inline_frames;
};

struct function_rec {
	uint32_t name, system_name, filename;
	int64_t start_line;
};

struct location_rec {
	uint64_t mapping_id, address;
	size_t first_line;
	size_t n_lines;
};

struct label_rec {
	uint32_t key, str, num_unit;
	int64_t num;
};

struct sample_rec {
	size_t first_location, n_locations;
	size_t first_label, n_labels;
	/* values live at sample index * n_sample_types in values[] */
};

struct pprof_builder {
	struct str_ref *strings;
	size_t n_strings, strings_cap;
	struct id_table string_index;
	struct arena_chunk *arena;

	struct value_type_ref *sample_types;
	size_t n_sample_types;
	struct value_type_ref period_type;
	int64_t period;
	uint32_t default_sample_type;
	int64_t time_nanos, duration_nanos;

	uint32_t *comments;
	size_t n_comments, comments_cap;

	struct mapping_rec *mappings;
	size_t n_mappings, mappings_cap;

	struct function_rec *functions;
	size_t n_functions, functions_cap;
	struct id_table function_index;

	struct location_rec *locations;
	size_t n_locations, locations_cap;
	struct id_table location_index;
	struct pprof_line *lines;
	size_t n_lines, lines_cap;

	struct sample_rec *samples;
	size_t n_samples, samples_cap;
	uint64_t *sample_locations;
	size_t n_sample_locations, sample_locations_cap;
	int64_t *values;
	size_t n_values, values_cap;
	struct label_rec *labels;
	size_t n_labels, labels_cap;
};

/* Grow an array of *cap elements, `used` of them in use, to fit `extra` more, doubling.
 * Returns the moved array, or NULL when out of memory (the old array is then untouched). */
static void *array_grow(void *items, size_t *cap, size_t used, size_t extra, size_t elem_size)
{
	size_t need, new_cap;
	void *p;

	if (extra > SIZE_MAX - used)
		return NULL;
	need = used + extra;
	new_cap = *cap ? *cap : 16;
	while (new_cap < need) {
		if (new_cap > SIZE_MAX / 2)
			return NULL;
		new_cap *= 2;
	}
	if (new_cap > SIZE_MAX / elem_size)
		return NULL;
	p = realloc(items, new_cap * elem_size);
	if (!p)
		return NULL;
	*cap = new_cap;
	return p;
}

/* Make room for `extra` more elements in array field f of b, whose count is field n and
 * whose capacity is f_cap. Evaluates to 0 or -ENOMEM. */
#define RESERVE(b, f, n, extra)                                                                    \
	({                                                                                         \
		int reserve_err_ = 0;                                                              \
		if ((extra) > (b)->f##_cap - (b)->n) {                                             \
			void *reserve_p_ =                                                         \
			    array_grow((b)->f, &(b)->f##_cap, (b)->n, (extra), sizeof(*(b)->f));   \
			if (reserve_p_)                                                            \
				(b)->f = reserve_p_;                                               \
			else                                                                       \
				reserve_err_ = -ENOMEM;                                            \
		}                                                                                  \
		reserve_err_;                                                                      \
	})

/* --- hashing ------------------------------------------------------------------------- */


static uint64_t hash_bytes(const char *s, size_t len)
{
	uint64_t h = 0x243f6a8885a308d3ULL ^ len;
	uint64_t word;

	/* Eight bytes per step: a multiply and shift per word, one full mix at the end. */
	while (len >= 8) {
		memcpy(&word, s, 8);
		h = (h ^ word) * 0x9e3779b97f4a7c15ULL;
		h ^= h >> 32;
		s += 8;
		len -= 8;
	}
	word = 0;
	memcpy(&word, s, len);
	h = (h ^ word) * 0x9e3779b97f4a7c15ULL;
	return hash_mix64(h);
}

static uint32_t hash_fold(uint64_t h)
{
	return (uint32_t)(h ^ (h >> 32));
}

/* --- id tables ----------------------------------------------------------------------- */

typedef bool (*id_key_eq)(const struct pprof_builder *b, uint32_t id, const void *key);

static void id_table__release(struct id_table *t)
{
	free(t->slots);
	t->slots = NULL;
	t->mask = 0;
	t->count = 0;
}

static void id_table__place(struct id_slot *slots, size_t mask, uint32_t hash, uint32_t id)
{
	size_t i = hash & mask;

	while (slots[i].id)
		i = (i + 1) & mask;
	slots[i].hash = hash;
	slots[i].id = id;
}

/* Ensure one more id fits below a 3/4 load factor, growing (and rehashing) if needed. */
static int id_table__reserve_one(struct id_table *t)
{
	size_t cap = t->slots ? t->mask + 1 : 0;
	size_t new_cap, i;
	struct id_slot *slots;

	if (t->slots && (t->count + 1) * 4 <= cap * 3)
		return 0;
	new_cap = cap ? cap * 2 : 64;
	if (new_cap > SIZE_MAX / sizeof(*slots))
		return -ENOMEM;
	slots = calloc(new_cap, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	for (i = 0; i < cap; i++) {
		if (t->slots[i].id)
			id_table__place(slots, new_cap - 1, t->slots[i].hash, t->slots[i].id);
	}
	free(t->slots);
	t->slots = slots;
	t->mask = new_cap - 1;
	return 0;
}

static uint32_t id_table__find(const struct id_table *t, uint32_t hash, id_key_eq eq,
			       const struct pprof_builder *b, const void *key)
{
	size_t i;

	if (!t->slots)
		return 0;
	for (i = hash & t->mask; t->slots[i].id; i = (i + 1) & t->mask) {
		if (t->slots[i].hash == hash && eq(b, t->slots[i].id, key))
			return t->slots[i].id;
	}
	return 0;
}

/* Caller has called id_table__reserve_one() since the last insert. */
static void id_table__insert(struct id_table *t, uint32_t hash, uint32_t id)
{
	id_table__place(t->slots, t->mask, hash, id);
	t->count++;
}

/* --- strings ------------------------------------------------------------------------- */

/* Copy s with each run of invalid bytes replaced by one U+FFFD, as Go's strings.ToValidUTF8
 * does. Returns a malloc'ed string (length in *out_len) or NULL when out of memory. */
static char *utf8_sanitize(const char *s, size_t len, size_t *out_len)
{
	static const char replacement[] = "\xef\xbf\xbd";
	const uint8_t *p = (const uint8_t *)s;
	bool in_bad_run = false;
	size_t i = 0, o = 0, n;
	char *out;

	/* Worst case: every byte invalid and alone, each becoming 3 bytes. */
	if (len > (SIZE_MAX - 1) / 3)
		return NULL;
	out = malloc(len * 3 + 1);
	if (!out)
		return NULL;
	while (i < len) {
		n = utf8__sequence_len(p + i, len - i);
		if (n) {
			memcpy(out + o, s + i, n);
			o += n;
			i += n;
			in_bad_run = false;
			continue;
		}
		if (!in_bad_run) {
			memcpy(out + o, replacement, 3);
			o += 3;
		}
		in_bad_run = true;
		i++;
	}
	out[o] = '\0';
	*out_len = o;
	return out;
}

struct str_key {
	const char *s;
	size_t len;
};

static bool string_eq(const struct pprof_builder *b, uint32_t id, const void *key)
{
	const struct str_key *k = key;
	const struct str_ref *r = &b->strings[id - 1];

	return r->len == k->len && memcmp(r->s, k->s, k->len) == 0;
}

static char *arena_copy(struct pprof_builder *b, const char *s, size_t len)
{
	struct arena_chunk *c = b->arena;
	size_t cap;
	char *dst;

	if (!c || c->cap - c->used < len + 1) {
		cap = len + 1 > ARENA_CHUNK_SIZE ? len + 1 : ARENA_CHUNK_SIZE;
		c = malloc(sizeof(*c) + cap);
		if (!c)
			return NULL;
		c->used = 0;
		c->cap = cap;
		/* An oversized string gets its own chunk behind the current one, so the space
		 * left in the current chunk is not wasted. */
		if (b->arena && cap > ARENA_CHUNK_SIZE) {
			c->next = b->arena->next;
			b->arena->next = c;
		} else {
			c->next = b->arena;
			b->arena = c;
		}
	}
	dst = c->data + c->used;
	memcpy(dst, s, len);
	dst[len] = '\0';
	c->used += len + 1;
	return dst;
}

/* Intern the string (s, len) after making it valid UTF-8; *index gets its string_table
 * index. Returns 0, -ENOMEM or -E2BIG. */
static int intern_len(struct pprof_builder *b, const char *s, size_t len, uint32_t *index)
{
	char *clean = NULL, *copy;
	struct str_key key;
	uint32_t hash, id;
	int err = 0;

	if (!utf8__valid(s, len)) {
		clean = utf8_sanitize(s, len, &len);
		if (!clean)
			return -ENOMEM;
		s = clean;
	}
	if (len > UINT32_MAX) {
		err = -E2BIG;
		goto out;
	}
	key.s = s;
	key.len = len;
	hash = hash_fold(hash_bytes(s, len));
	id = id_table__find(&b->string_index, hash, string_eq, b, &key);
	if (id) {
		*index = id - 1;
		goto out;
	}
	if (b->n_strings >= PPROF_MAX_ENTRIES) {
		err = -E2BIG;
		goto out;
	}
	err = id_table__reserve_one(&b->string_index);
	if (!err)
		err = RESERVE(b, strings, n_strings, 1);
	if (err)
		goto out;
	copy = arena_copy(b, s, len);
	if (!copy) {
		err = -ENOMEM;
		goto out;
	}
	b->strings[b->n_strings].s = copy;
	b->strings[b->n_strings].len = (uint32_t)len;
	b->n_strings++;
	id_table__insert(&b->string_index, hash, (uint32_t)b->n_strings);
	*index = (uint32_t)(b->n_strings - 1);
out:
	free(clean);
	return err;
}

/* NULL interns as "" (index 0). */
static int intern(struct pprof_builder *b, const char *s, uint32_t *index)
{
	if (!s || !*s) {
		*index = 0;
		return 0;
	}
	return intern_len(b, s, strlen(s), index);
}

/* --- builder ------------------------------------------------------------------------- */

struct pprof_builder *pprof_builder__new(const struct pprof_value_type *sample_types,
					 size_t n_sample_types, struct pprof_value_type period_type,
					 int64_t period, const char *default_sample_type)
{
	struct pprof_builder *b;
	struct timespec now;
	uint32_t empty;
	size_t i;
	int err;

	if (!sample_types || n_sample_types == 0) {
		errno = EINVAL;
		return NULL;
	}
	b = calloc(1, sizeof(*b));
	if (!b) {
		errno = ENOMEM;
		return NULL;
	}
	/* string_table[0] must be "": intern it first so it gets index 0. */
	err = intern_len(b, "", 0, &empty);
	if (err)
		goto fail;
	b->sample_types = calloc(n_sample_types, sizeof(*b->sample_types));
	if (!b->sample_types) {
		err = -ENOMEM;
		goto fail;
	}
	b->n_sample_types = n_sample_types;
	for (i = 0; i < n_sample_types; i++) {
		err = intern(b, sample_types[i].type, &b->sample_types[i].type);
		if (!err)
			err = intern(b, sample_types[i].unit, &b->sample_types[i].unit);
		if (err)
			goto fail;
	}
	err = intern(b, period_type.type, &b->period_type.type);
	if (!err)
		err = intern(b, period_type.unit, &b->period_type.unit);
	if (!err)
		err = intern(b, default_sample_type, &b->default_sample_type);
	if (err)
		goto fail;
	/* Readers refuse a default that names no sample type; say so now, not at view time. */
	if (b->default_sample_type) {
		for (i = 0; i < n_sample_types; i++) {
			if (b->sample_types[i].type == b->default_sample_type)
				break;
		}
		if (i == n_sample_types) {
			err = -EINVAL;
			goto fail;
		}
	}
	b->period = period;
	if (clock_gettime(CLOCK_REALTIME, &now) == 0)
		b->time_nanos = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
	return b;
fail:
	pprof_builder__free(b);
	errno = -err;
	return NULL;
}

void pprof_builder__free(struct pprof_builder *b)
{
	struct arena_chunk *c, *next;

	if (!b)
		return;
	for (c = b->arena; c; c = next) {
		next = c->next;
		free(c);
	}
	free(b->strings);
	id_table__release(&b->string_index);
	free(b->sample_types);
	free(b->comments);
	free(b->mappings);
	free(b->functions);
	id_table__release(&b->function_index);
	free(b->locations);
	id_table__release(&b->location_index);
	free(b->lines);
	free(b->samples);
	free(b->sample_locations);
	free(b->values);
	free(b->labels);
	free(b);
}

void pprof_builder__set_time(struct pprof_builder *b, int64_t time_nanos, int64_t duration_nanos)
{
	b->time_nanos = time_nanos;
	b->duration_nanos = duration_nanos;
}

int pprof_builder__add_comment(struct pprof_builder *b, const char *comment)
{
	uint32_t index;
	int err;

	err = intern(b, comment, &index);
	if (!err)
		err = RESERVE(b, comments, n_comments, 1);
	if (err)
		return err;
	b->comments[b->n_comments++] = index;
	return 0;
}

uint64_t pprof_builder__add_mapping(struct pprof_builder *b, const struct pprof_mapping *m)
{
	struct mapping_rec rec = {
	    .memory_start = m->memory_start,
	    .memory_limit = m->memory_limit,
	    .file_offset = m->file_offset,
	    .has_functions = m->has_functions,
	    .has_filenames = m->has_filenames,
	    .has_line_numbers = m->has_line_numbers,
	    .has_inline_frames = m->has_inline_frames,
	};
	int err;

	if (b->n_mappings >= PPROF_MAX_ENTRIES) {
		errno = E2BIG;
		return 0;
	}
	err = intern(b, m->filename, &rec.filename);
	if (!err)
		err = intern(b, m->build_id, &rec.build_id);
	if (!err)
		err = RESERVE(b, mappings, n_mappings, 1);
	if (err) {
		errno = -err;
		return 0;
	}
	b->mappings[b->n_mappings++] = rec;
	return b->n_mappings;
}

static uint32_t function_hash(const struct function_rec *f)
{
	uint64_t h = hash_combine(f->name, f->system_name);

	h = hash_combine(h, f->filename);
	return hash_fold(hash_combine(h, (uint64_t)f->start_line));
}

static bool function_eq(const struct pprof_builder *b, uint32_t id, const void *key)
{
	const struct function_rec *f = &b->functions[id - 1], *k = key;

	return f->name == k->name && f->system_name == k->system_name &&
	       f->filename == k->filename && f->start_line == k->start_line;
}

uint64_t pprof_builder__function(struct pprof_builder *b, const char *name, const char *system_name,
				 const char *filename, int64_t start_line)
{
	struct function_rec rec = {.start_line = start_line};
	uint32_t hash, id;
	int err;

	err = intern(b, name, &rec.name);
	if (!err)
		err = intern(b, system_name, &rec.system_name);
	if (!err)
		err = intern(b, filename, &rec.filename);
	if (err)
		goto fail;
	hash = function_hash(&rec);
	id = id_table__find(&b->function_index, hash, function_eq, b, &rec);
	if (id)
		return id;
	if (b->n_functions >= PPROF_MAX_ENTRIES) {
		err = -E2BIG;
		goto fail;
	}
	err = id_table__reserve_one(&b->function_index);
	if (!err)
		err = RESERVE(b, functions, n_functions, 1);
	if (err)
		goto fail;
	b->functions[b->n_functions++] = rec;
	id_table__insert(&b->function_index, hash, (uint32_t)b->n_functions);
	return b->n_functions;
fail:
	errno = -err;
	return 0;
}

struct location_key {
	uint64_t mapping_id, address;
};

static bool location_eq(const struct pprof_builder *b, uint32_t id, const void *key)
{
	const struct location_rec *l = &b->locations[id - 1];
	const struct location_key *k = key;

	return l->mapping_id == k->mapping_id && l->address == k->address;
}

uint64_t pprof_builder__location(struct pprof_builder *b, uint64_t mapping_id, uint64_t address,
				 const struct pprof_line *lines, size_t n_lines)
{
	struct location_key key = {.mapping_id = mapping_id, .address = address};
	uint32_t hash, id;
	size_t i;
	int err;

	hash = hash_fold(hash_combine(hash_mix64(mapping_id), address));
	id = id_table__find(&b->location_index, hash, location_eq, b, &key);
	if (id)
		return id;
	/* Dangling references would make servers reject the whole profile (Parca indexes
	 * functions[id-1]), so refuse them here where the caller can tell which one. */
	if (mapping_id > b->n_mappings || (n_lines && !lines)) {
		err = -EINVAL;
		goto fail;
	}
	for (i = 0; i < n_lines; i++) {
		if (lines[i].function_id == 0 || lines[i].function_id > b->n_functions) {
			err = -EINVAL;
			goto fail;
		}
	}
	if (b->n_locations >= PPROF_MAX_ENTRIES) {
		err = -E2BIG;
		goto fail;
	}
	err = id_table__reserve_one(&b->location_index);
	if (!err)
		err = RESERVE(b, locations, n_locations, 1);
	if (!err)
		err = RESERVE(b, lines, n_lines, n_lines);
	if (err)
		goto fail;
	if (n_lines)
		memcpy(b->lines + b->n_lines, lines, n_lines * sizeof(*lines));
	b->locations[b->n_locations].mapping_id = mapping_id;
	b->locations[b->n_locations].address = address;
	b->locations[b->n_locations].first_line = b->n_lines;
	b->locations[b->n_locations].n_lines = n_lines;
	b->n_lines += n_lines;
	b->n_locations++;
	id_table__insert(&b->location_index, hash, (uint32_t)b->n_locations);
	return b->n_locations;
fail:
	errno = -err;
	return 0;
}

int pprof_builder__add_sample(struct pprof_builder *b, const uint64_t *location_ids,
			      size_t n_locations, const int64_t *values,
			      const struct pprof_label *labels, size_t n_labels)
{
	struct sample_rec *s;
	struct label_rec *l;
	size_t i;
	int err;

	if (!values || (n_locations && !location_ids) || (n_labels && !labels))
		return -EINVAL;
	for (i = 0; i < n_locations; i++) {
		if (location_ids[i] == 0 || location_ids[i] > b->n_locations)
			return -EINVAL;
	}
	for (i = 0; i < n_labels; i++) {
		if (!labels[i].key || !*labels[i].key)
			return -EINVAL;
	}
	/* Reserve everything before committing anything, so a failure leaves no half sample. */
	err = RESERVE(b, samples, n_samples, 1);
	if (!err)
		err = RESERVE(b, sample_locations, n_sample_locations, n_locations);
	if (!err)
		err = RESERVE(b, values, n_values, b->n_sample_types);
	if (!err)
		err = RESERVE(b, labels, n_labels, n_labels);
	if (err)
		return err;
	for (i = 0; i < n_labels; i++) {
		l = &b->labels[b->n_labels + i];
		memset(l, 0, sizeof(*l));
		err = intern(b, labels[i].key, &l->key);
		if (err)
			return err;
		if (labels[i].str) {
			err = intern(b, labels[i].str, &l->str);
		} else {
			l->num = labels[i].num;
			err = intern(b, labels[i].num_unit, &l->num_unit);
		}
		if (err)
			return err;
	}
	s = &b->samples[b->n_samples];
	s->first_location = b->n_sample_locations;
	s->n_locations = n_locations;
	s->first_label = b->n_labels;
	s->n_labels = n_labels;
	if (n_locations)
		memcpy(b->sample_locations + b->n_sample_locations, location_ids,
		       n_locations * sizeof(*location_ids));
	memcpy(b->values + b->n_values, values, b->n_sample_types * sizeof(*values));
	b->n_sample_locations += n_locations;
	b->n_values += b->n_sample_types;
	b->n_labels += n_labels;
	b->n_samples++;
	return 0;
}

size_t pprof_builder__sample_count(const struct pprof_builder *b)
{
	return b->n_samples;
}

/* --- encoding ------------------------------------------------------------------------ */

static void encode_value_type(struct pb_buffer *out, uint32_t field,
			      const struct value_type_ref *vt)
{
	size_t m = pb_msg_begin(out, field);

	pb_put_uint64_opt(out, VALUE_TYPE_TYPE, vt->type);
	pb_put_uint64_opt(out, VALUE_TYPE_UNIT, vt->unit);
	pb_msg_end(out, m);
}

static void encode_sample(struct pprof_builder *b, struct pb_buffer *out, size_t index)
{
	const struct sample_rec *s = &b->samples[index];
	const struct label_rec *l;
	size_t m, lm, i;

	m = pb_msg_begin(out, PROFILE_SAMPLE);
	pb_put_packed_uint64(out, SAMPLE_LOCATION_ID, b->sample_locations + s->first_location,
			     s->n_locations);
	pb_put_packed_int64(out, SAMPLE_VALUE, b->values + index * b->n_sample_types,
			    b->n_sample_types);
	for (i = 0; i < s->n_labels; i++) {
		l = &b->labels[s->first_label + i];
		lm = pb_msg_begin(out, SAMPLE_LABEL);
		pb_put_uint64_opt(out, LABEL_KEY, l->key);
		pb_put_uint64_opt(out, LABEL_STR, l->str);
		pb_put_int64_opt(out, LABEL_NUM, l->num);
		pb_put_uint64_opt(out, LABEL_NUM_UNIT, l->num_unit);
		pb_msg_end(out, lm);
	}
	pb_msg_end(out, m);
}

static void encode_mapping(struct pprof_builder *b, struct pb_buffer *out, size_t index)
{
	const struct mapping_rec *r = &b->mappings[index];
	size_t m = pb_msg_begin(out, PROFILE_MAPPING);

	pb_put_uint64_opt(out, MAPPING_ID, index + 1);
	pb_put_uint64_opt(out, MAPPING_MEMORY_START, r->memory_start);
	pb_put_uint64_opt(out, MAPPING_MEMORY_LIMIT, r->memory_limit);
	pb_put_uint64_opt(out, MAPPING_FILE_OFFSET, r->file_offset);
	pb_put_uint64_opt(out, MAPPING_FILENAME, r->filename);
	pb_put_uint64_opt(out, MAPPING_BUILD_ID, r->build_id);
	pb_put_bool_opt(out, MAPPING_HAS_FUNCTIONS, r->has_functions);
	pb_put_bool_opt(out, MAPPING_HAS_FILENAMES, r->has_filenames);
	pb_put_bool_opt(out, MAPPING_HAS_LINE_NUMBERS, r->has_line_numbers);
	pb_put_bool_opt(out, MAPPING_HAS_INLINE_FRAMES, r->has_inline_frames);
	pb_msg_end(out, m);
}

static void encode_location(struct pprof_builder *b, struct pb_buffer *out, size_t index)
{
	const struct location_rec *r = &b->locations[index];
	const struct pprof_line *line;
	size_t m, lm, i;

	m = pb_msg_begin(out, PROFILE_LOCATION);
	pb_put_uint64_opt(out, LOCATION_ID, index + 1);
	pb_put_uint64_opt(out, LOCATION_MAPPING_ID, r->mapping_id);
	pb_put_uint64_opt(out, LOCATION_ADDRESS, r->address);
	for (i = 0; i < r->n_lines; i++) {
		line = &b->lines[r->first_line + i];
		lm = pb_msg_begin(out, LOCATION_LINE);
		pb_put_uint64_opt(out, LINE_FUNCTION_ID, line->function_id);
		pb_put_int64_opt(out, LINE_LINE, line->line);
		pb_msg_end(out, lm);
	}
	pb_msg_end(out, m);
}

static void encode_function(struct pprof_builder *b, struct pb_buffer *out, size_t index)
{
	const struct function_rec *r = &b->functions[index];
	size_t m = pb_msg_begin(out, PROFILE_FUNCTION);

	pb_put_uint64_opt(out, FUNCTION_ID, index + 1);
	pb_put_uint64_opt(out, FUNCTION_NAME, r->name);
	pb_put_uint64_opt(out, FUNCTION_SYSTEM_NAME, r->system_name);
	pb_put_uint64_opt(out, FUNCTION_FILENAME, r->filename);
	pb_put_int64_opt(out, FUNCTION_START_LINE, r->start_line);
	pb_msg_end(out, m);
}

int pprof_builder__encode(struct pprof_builder *b, struct pb_buffer *out)
{
	size_t i;

	/* The encoders are no-ops once out is in an error state, so checking once at the end
	 * is enough; the early exits only save time on huge profiles. */
	for (i = 0; i < b->n_sample_types; i++)
		encode_value_type(out, PROFILE_SAMPLE_TYPE, &b->sample_types[i]);
	for (i = 0; i < b->n_samples && !pb_buffer__error(out); i++)
		encode_sample(b, out, i);
	for (i = 0; i < b->n_mappings; i++)
		encode_mapping(b, out, i);
	for (i = 0; i < b->n_locations && !pb_buffer__error(out); i++)
		encode_location(b, out, i);
	for (i = 0; i < b->n_functions && !pb_buffer__error(out); i++)
		encode_function(b, out, i);
	for (i = 0; i < b->n_strings && !pb_buffer__error(out); i++)
		pb_put_bytes(out, PROFILE_STRING_TABLE, b->strings[i].s, b->strings[i].len);
	pb_put_int64_opt(out, PROFILE_TIME_NANOS, b->time_nanos);
	pb_put_int64_opt(out, PROFILE_DURATION_NANOS, b->duration_nanos);
	/* Always present, even if empty: Parca v0.28 crashes on a profile without it. */
	encode_value_type(out, PROFILE_PERIOD_TYPE, &b->period_type);
	pb_put_int64_opt(out, PROFILE_PERIOD, b->period);
	for (i = 0; i < b->n_comments; i++)
		pb_put_uint64(out, PROFILE_COMMENT, b->comments[i]);
	pb_put_uint64_opt(out, PROFILE_DEFAULT_SAMPLE_TYPE, b->default_sample_type);
	return pb_buffer__error(out);
}

/* gzip in one pass into a buffer sized by deflateBound(); zlib counts in 32-bit units, so
 * both sides are fed in pieces of at most UINT_MAX bytes. */
static int gzip_bytes(const uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len)
{
	size_t cap, consumed = 0, produced = 0, in_piece, out_piece;
	uint8_t *buf, *grown;
	z_stream zs;
	int rc, err = 0;

	memset(&zs, 0, sizeof(zs));
	/* windowBits 15 + 16 asks for a gzip header and trailer instead of zlib's. */
	rc = deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
	if (rc != Z_OK)
		return rc == Z_MEM_ERROR ? -ENOMEM : -EINVAL;
	cap = deflateBound(&zs, in_len);
	buf = malloc(cap);
	if (!buf) {
		deflateEnd(&zs);
		return -ENOMEM;
	}
	for (;;) {
		if (produced == cap) {
			/* deflateBound() is an upper bound, so this is a safety net only. */
			if (cap > SIZE_MAX / 2) {
				err = -ENOMEM;
				break;
			}
			grown = realloc(buf, cap * 2);
			if (!grown) {
				err = -ENOMEM;
				break;
			}
			buf = grown;
			cap *= 2;
		}
		in_piece = in_len - consumed < UINT_MAX ? in_len - consumed : UINT_MAX;
		out_piece = cap - produced < UINT_MAX ? cap - produced : UINT_MAX;
		zs.next_in = (Bytef *)(in + consumed);
		zs.avail_in = (uInt)in_piece;
		zs.next_out = buf + produced;
		zs.avail_out = (uInt)out_piece;
		rc = deflate(&zs, consumed + in_piece == in_len ? Z_FINISH : Z_NO_FLUSH);
		consumed += in_piece - zs.avail_in;
		produced += out_piece - zs.avail_out;
		if (rc == Z_STREAM_END)
			break;
		if (rc != Z_OK && rc != Z_BUF_ERROR) {
			err = rc == Z_MEM_ERROR ? -ENOMEM : -EIO;
			break;
		}
	}
	deflateEnd(&zs);
	if (err) {
		free(buf);
		return err;
	}
	*out = buf;
	*out_len = produced;
	return 0;
}

int pprof_builder__encode_gzip(struct pprof_builder *b, uint8_t **data, size_t *len)
{
	struct pb_buffer raw;
	int err;

	*data = NULL;
	*len = 0;
	pb_buffer__init(&raw, 0);
	err = pprof_builder__encode(b, &raw);
	if (!err)
		err = gzip_bytes(raw.data, raw.len, data, len);
	pb_buffer__release(&raw);
	return err;
}

/* Splits path into its directory ("." when there is none) and its last component. */
static int split_path(const char *path, char *dir, size_t dir_len, const char **name)
{
	const char *slash = strrchr(path, '/');
	size_t len;

	if (!slash) {
		snprintf(dir, dir_len, ".");
		*name = path;
	} else {
		len = slash == path ? 1 : (size_t)(slash - path);
		if (len >= dir_len)
			return -ENAMETOOLONG;
		memcpy(dir, path, len);
		dir[len] = '\0';
		*name = slash + 1;
	}
	return **name ? 0 : -EISDIR;
}

/* What rename() would replace at name must be a regular file or nothing: renaming over a
 * device, FIFO, socket or symbolic link would replace that entry for everyone who uses it
 * (/dev/null turned into a gzip file). */
static int check_replaceable(int dir_fd, const char *name)
{
	struct stat st;

	if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
		return errno == ENOENT ? 0 : -errno;
	if (S_ISREG(st.st_mode))
		return 0;
	return S_ISDIR(st.st_mode) ? -EISDIR : -EEXIST;
}

int pprof_builder__write_file(struct pprof_builder *b, const char *path)
{
	static unsigned int tmp_counter;
	uint8_t *data = NULL;
	size_t len = 0, tmp_size;
	char *tmp_name = NULL, dir[PATH_MAX];
	const char *name;
	int fd = -1, dir_fd = -1, attempt, err;

	err = split_path(path, dir, sizeof(dir), &name);
	if (err)
		return err;
	/* Every step below is relative to this one descriptor, so the file lands in the
	 * directory checked here even if a component of its path is swapped meanwhile. */
	dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd < 0)
		return -errno;
	err = check_replaceable(dir_fd, name);
	if (err)
		goto out;
	err = pprof_builder__encode_gzip(b, &data, &len);
	if (err)
		goto out;
	tmp_size = strlen(name) + 64;
	tmp_name = malloc(tmp_size);
	if (!tmp_name) {
		err = -ENOMEM;
		goto out;
	}
	/* Same directory as path, so rename() is atomic; O_EXCL with a fresh name guards
	 * against clobbering another writer's temporary file. mode 0666 lets umask decide. */
	for (attempt = 0; attempt < 100; attempt++) {
		snprintf(tmp_name, tmp_size, "%s.tmp.%d.%u", name, (int)getpid(),
			 __atomic_fetch_add(&tmp_counter, 1, __ATOMIC_RELAXED));
		fd = openat(dir_fd, tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			    0666);
		if (fd >= 0 || errno != EEXIST)
			break;
	}
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	err = fd_write_all(fd, data, len);
	if (!err && fsync(fd) != 0)
		err = -errno;
	if (close(fd) != 0 && !err)
		err = -errno;
	/* Checked again just before the rename: what remains is the moment between the two,
	 * open only to someone who may write this directory anyway. */
	if (!err)
		err = check_replaceable(dir_fd, name);
	if (!err && renameat(dir_fd, tmp_name, dir_fd, name) != 0)
		err = -errno;
	if (err)
		unlinkat(dir_fd, tmp_name, 0);
	else
		fsync(dir_fd); /* best effort: some file systems refuse it; the data is safe */
out:
	if (dir_fd >= 0)
		close(dir_fd);
	free(tmp_name);
	free(data);
	return err;
}
