/* Aggregation of sampled allocations and their rendering as pprof.
 *
 * A stack is [allocator frame, direct caller, callers...]. The frame-pointer walk from an
 * allocator's entry misses the direct caller (the allocator has not pushed its frame yet), so
 * the BPF program reads it at *sp and it is put back here, once: kernels >= 6.12 already add
 * it when the probed instruction is `push %rbp` or `endbr64`, and then stack[1] equals it. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc_profile.h"
#include "label_limits.h"
#include "util/hash.h"
#include "pprof.h"
#include "protobuf.h"
#include "sampling.h"
#include "symbolize/symbolizer.h"
#include "util/grow.h"

#define MAX_FRAMES UNWIND_MAX_FRAMES /* the deepest walk, in the kernel */
/* The frame address that stands for ALLOC_PROFILE_DROPPED_FRAME: no user pc is this. */
#define DROPPED_PC UINT64_MAX
/* Labels a sample may carry from its request context. */
#define ALLOC_PROFILE_MAX_CONTEXT_LABELS 16

/* A set of sample labels from a request context (alloc_profile__use_labels), interned: stacks
 * with the same set share one, so a pointer compares them. */
struct label_set {
	struct label_set *next;
	uint64_t hash;
	double weight; /* scratch of alloc_profile__for_each_label_set */
	size_t count;
	struct pprof_label labels[]; /* strings follow the array */
};

/* The frame address of ALLOC_PROFILE_TRUNCATED_FRAME, a depth-cut stack's root. */
#define TRUNCATED_PC (UINT64_MAX - 1)

/* A frame the profile made up (dropped samples, a depth cut): never symbolized. */
static bool synthetic_pc(uint64_t pc)
{
	return pc == DROPPED_PC || pc == TRUNCATED_PC;
}
/* Labels a sample may carry: service_name, hostname, pod and code labels and the configured
 * static labels. */
#define ALLOC_PROFILE_MAX_LABELS 32

struct stack_record {
	struct stack_record *next; /* hash chain */
	uint64_t hash;
	const struct label_set *labels; /* NULL: none */
	uint32_t pid;
	uint32_t n_frames;
	/* The allocator frame is in the process's executable (a static glibc or jemalloc, Rust's
	 * _rjem_*): the rest of that file is the program, not the allocator (see stack_site). */
	bool leaf_in_executable;
	double bytes, objects;
	uint64_t samples;
	/* In-use (alloc_profile__inuse_*): the live estimate at the last snapshot and the one
	 * before it, and the allocation time of the oldest live sample (0: none live). */
	double inuse_bytes, inuse_objects, prev_inuse_bytes;
	uint64_t oldest_live_ns;
	uint64_t frames[];
};

/* The weight of a process's dropped samples (drop notices), placed at encoding time. */
struct dropped_weight {
	uint32_t pid;
	uint64_t samples;
	double bytes, objects;
	double inuse_bytes, inuse_objects; /* live entries with no kept sample */
};

/* In-use: which stack each sample still possibly live was added to, by (pid, time_ns), the
 * identity the kernel's live map gives (struct alloc_live). Open addressing; rebuilt without
 * the entries a snapshot did not find live. */
struct live_ref {
	uint32_t pid;
	uint32_t seen; /* the snapshot generation that last found it live */
	uint64_t time_ns;
	struct stack_record *rec; /* NULL: empty slot */
};

/* A process's executable as /proc/PID/exe named it when last read. */
struct process_executable {
	uint32_t pid;
	char *path;
};

struct alloc_profile {
	uint64_t sample_rate;
	struct symbolizer *symbolizer;
	struct stack_record **buckets;
	size_t n_buckets;
	struct stack_record **stacks; /* insertion order, for deterministic output */
	size_t n_stacks, cap_stacks;
	struct alloc_profile_totals totals;
	struct dropped_weight *drops; /* one per process with drop notices */
	size_t n_drops, cap_drops;
	/* Executables of the processes whose stacks were added, for leaf_in_executable. */
	struct process_executable *executables;
	size_t n_executables, cap_executables;
	/* top_sites scratch, rebuilt on every call */
	struct alloc_site *sites;
	char (*site_names)[160];
	size_t n_sites;
	/* --skip-frames: wrappers the user names, matched against whole function names */
	regex_t skip_frames;
	/* Overhead budget: samples added now stand for this many times their weight (1/f of a
	 * duty-cycled process's period; alloc_profile__set_scale). */
	double weight_scale;
	bool has_skip_frames;
	/* Request-context label sets, and the one the next added stacks get. */
	struct label_set *label_sets;
	const struct label_set *current_labels;
	/* In-use profiles (alloc_profile__enable_inuse) */
	bool inuse;
	struct live_ref *live_refs;
	size_t n_live_refs, cap_live_refs; /* cap: a power of two */
	uint32_t live_generation;
	struct alloc_profile_inuse inuse_totals;
	/* issue 15: labels per process, the per-sample labels' limiter, the grouped top table's
	 * scratch (group of each site) */
	struct process_label *process_labels;
	size_t n_process_labels, cap_process_labels;
	struct label_limits *label_limits;
};

/* A label all of a process's samples carry (alloc_profile__label_process). */
struct process_label {
	uint32_t pid;
	char *key, *value;
};

static uint64_t hash_stack(uint32_t pid, const uint64_t *frames, size_t n)
{
	uint64_t h = hash_mix64(pid);

	for (size_t i = 0; i < n; i++)
		h = hash_combine(h, frames[i]);
	return h;
}

static size_t build_frames(const struct alloc_sample *sample, uint64_t *frames)
{
	size_t depth = sample->stack_bytes > 0 ? (size_t)sample->stack_bytes / sizeof(__u64) : 0;
	size_t n = 0;

	if (depth > ALLOC_MAX_STACK_DEPTH)
		depth = ALLOC_MAX_STACK_DEPTH;
	if (depth)
		frames[n++] = sample->stack[0];
	if (sample->caller_address)
		frames[n++] = sample->caller_address;
	for (size_t i = 1; i < depth; i++) {
		if (i == 1 && sample->stack[1] == sample->caller_address)
			continue;
		frames[n++] = sample->stack[i];
	}
	return n;
}

int alloc_profile__new(uint64_t sample_rate, struct symbolizer *symbolizer,
		       struct alloc_profile **out)
{
	struct alloc_profile *profile = calloc(1, sizeof(*profile));

	*out = NULL;
	if (!profile)
		return -ENOMEM;
	profile->sample_rate = sample_rate;
	profile->symbolizer = symbolizer;
	profile->weight_scale = 1.0;
	profile->n_buckets = 1024;
	profile->buckets = calloc(profile->n_buckets, sizeof(*profile->buckets));
	if (!profile->buckets) {
		free(profile);
		return -ENOMEM;
	}
	*out = profile;
	return 0;
}

void alloc_profile__free(struct alloc_profile *profile)
{
	if (!profile)
		return;
	for (size_t i = 0; i < profile->n_stacks; i++)
		free(profile->stacks[i]);
	free(profile->stacks);
	free(profile->buckets);
	for (size_t i = 0; i < profile->n_executables; i++)
		free(profile->executables[i].path);
	free(profile->executables);
	free(profile->drops);
	free(profile->sites);
	free(profile->site_names);
	for (size_t i = 0; i < profile->n_process_labels; i++) {
		free(profile->process_labels[i].key);
		free(profile->process_labels[i].value);
	}
	free(profile->process_labels);
	label_limits__free(profile->label_limits);
	free(profile->live_refs);
	if (profile->has_skip_frames)
		regfree(&profile->skip_frames);
	while (profile->label_sets) {
		struct label_set *next = profile->label_sets->next;

		free(profile->label_sets);
		profile->label_sets = next;
	}
	free(profile);
}

static int compile_skip_frames(const char *regex, regex_t *compiled, char *err, size_t err_len)
{
	char *anchored;
	size_t len;
	int ret;

	if (!regex || !*regex) {
		snprintf(err, err_len, "empty --skip-frames: give a regular expression such as "
				       "'my_alloc|my_calloc'");
		return -EINVAL;
	}
	len = strlen(regex) + 5;
	anchored = malloc(len);
	if (!anchored) {
		snprintf(err, err_len, "cannot compile --skip-frames: out of memory");
		return -ENOMEM;
	}
	/* The whole name must match, as pprof's drop_frames: "xmalloc" skips no "xmalloc_r". */
	snprintf(anchored, len, "^(%s)$", regex);
	ret = regcomp(compiled, anchored, REG_EXTENDED | REG_NOSUB);
	free(anchored);
	if (ret) {
		char why[128];

		regerror(ret, compiled, why, sizeof(why));
		snprintf(err, err_len,
			 "invalid --skip-frames '%s': %s (a POSIX extended regular expression "
			 "matched against whole function names, e.g. 'my_alloc|my_calloc')",
			 regex, why);
		return -EINVAL;
	}
	return 0;
}

int alloc_profile_check_skip_frames(const char *regex, char *err, size_t err_len)
{
	regex_t compiled;
	int ret = compile_skip_frames(regex, &compiled, err, err_len);

	if (ret == 0)
		regfree(&compiled);
	return ret;
}

int alloc_profile__set_skip_frames(struct alloc_profile *profile, const char *regex, char *err,
				   size_t err_len)
{
	regex_t compiled;
	int ret = compile_skip_frames(regex, &compiled, err, err_len);

	if (ret)
		return ret;
	if (profile->has_skip_frames)
		regfree(&profile->skip_frames);
	profile->skip_frames = compiled;
	profile->has_skip_frames = true;
	return 0;
}

static int grow_buckets(struct alloc_profile *profile)
{
	size_t n = profile->n_buckets * 2;
	struct stack_record **buckets = calloc(n, sizeof(*buckets));

	if (!buckets)
		return -ENOMEM;
	for (size_t i = 0; i < profile->n_stacks; i++) {
		struct stack_record *rec = profile->stacks[i];

		rec->next = buckets[rec->hash & (n - 1)];
		buckets[rec->hash & (n - 1)] = rec;
	}
	free(profile->buckets);
	profile->buckets = buckets;
	profile->n_buckets = n;
	return 0;
}

/* Resolve a new stack's frames now, while the process most likely still runs: a library it
 * loaded after the capture began is found by re-reading its maps. Results are cached. */
static void warm_symbols(struct alloc_profile *profile, const struct stack_record *rec)
{
	struct symbolized_frame frame;

	for (uint32_t i = 0; i < rec->n_frames; i++)
		if (!synthetic_pc(rec->frames[i]))
			symbolizer__resolve(profile->symbolizer, rec->pid, rec->frames[i], i > 0,
					    &frame);
}

/* pid's executable: read now while the process lives (it may have exec'ed since), else the one
 * read last; NULL when never known. The path is as /proc/PID/maps shows files, without the
 * " (deleted)" the kernel appends to a replaced one. */
static const char *process_executable(struct alloc_profile *profile, uint32_t pid)
{
	static const char deleted[] = " (deleted)";
	struct process_executable *known = NULL;
	char link[32], path[PATH_MAX];
	ssize_t len;
	char *copy;

	for (size_t i = 0; i < profile->n_executables && !known; i++)
		if (profile->executables[i].pid == pid)
			known = &profile->executables[i];
	snprintf(link, sizeof(link), "/proc/%u/exe", pid);
	len = readlink(link, path, sizeof(path) - 1);
	if (len <= 0)
		return known ? known->path : NULL;
	path[len] = '\0';
	if ((size_t)len > sizeof(deleted) - 1 &&
	    strcmp(path + len - (sizeof(deleted) - 1), deleted) == 0)
		path[len - (sizeof(deleted) - 1)] = '\0';
	if (known && strcmp(known->path, path) == 0)
		return known->path;
	if (!known && array_grow((void **)&profile->executables, &profile->cap_executables,
				 profile->n_executables, sizeof(*profile->executables), 8))
		return NULL;
	copy = strdup(path);
	if (!copy)
		return known ? known->path : NULL;
	if (!known) {
		known = &profile->executables[profile->n_executables++];
		known->pid = pid;
	} else {
		free(known->path);
	}
	known->path = copy;
	return copy;
}

void alloc_profile__note_process(struct alloc_profile *profile, uint32_t pid)
{
	(void)process_executable(profile, pid);
}

static bool leaf_in_executable(struct alloc_profile *profile, const struct stack_record *rec)
{
	struct symbolized_frame leaf;
	const char *exe;

	if (rec->n_frames == 0 ||
	    symbolizer__resolve(profile->symbolizer, rec->pid, rec->frames[0], false, &leaf) != 0 ||
	    !leaf.map_path)
		return false;
	exe = process_executable(profile, rec->pid);
	return exe && strcmp(exe, leaf.map_path) == 0;
}

static struct stack_record *find_or_add_stack(struct alloc_profile *profile, uint32_t pid,
					      const uint64_t *frames, size_t n)
{
	uint64_t hash = hash_combine(hash_stack(pid, frames, n),
				     profile->current_labels ? profile->current_labels->hash : 0);
	struct stack_record *rec;

	for (rec = profile->buckets[hash & (profile->n_buckets - 1)]; rec; rec = rec->next) {
		if (rec->hash == hash && rec->pid == pid && rec->n_frames == n &&
		    rec->labels == profile->current_labels &&
		    memcmp(rec->frames, frames, n * sizeof(*frames)) == 0)
			return rec;
	}
	if (array_grow((void **)&profile->stacks, &profile->cap_stacks, profile->n_stacks,
		       sizeof(*profile->stacks), 256))
		return NULL;
	if (profile->n_stacks >= profile->n_buckets && grow_buckets(profile) != 0)
		return NULL;
	rec = calloc(1, sizeof(*rec) + n * sizeof(*frames));
	if (!rec)
		return NULL;
	rec->hash = hash;
	rec->labels = profile->current_labels;
	rec->pid = pid;
	rec->n_frames = (uint32_t)n;
	memcpy(rec->frames, frames, n * sizeof(*frames));
	rec->next = profile->buckets[hash & (profile->n_buckets - 1)];
	profile->buckets[hash & (profile->n_buckets - 1)] = rec;
	profile->stacks[profile->n_stacks++] = rec;
	profile->totals.stacks++;
	if (profile->symbolizer) {
		warm_symbols(profile, rec);
		rec->leaf_in_executable = leaf_in_executable(profile, rec);
	}
	return rec;
}

/* alloc_profile__add_weighted_stack for n_frames already bounded (a depth cut's root frame
 * may make them MAX_FRAMES + 1); out: the stack's record, when not NULL. */
static int add_weighted(struct alloc_profile *profile, uint32_t pid, const uint64_t *frames,
			size_t n_frames, uint64_t size, double weighted_bytes,
			struct stack_record **out)
{
	double bytes = (double)(size ? size : 1);
	struct stack_record *rec;

	rec = find_or_add_stack(profile, pid, frames, n_frames);
	if (!rec)
		return -ENOMEM;
	if (out)
		*out = rec;
	/* weighted_bytes / size is the same 1/p the kernel path's weight gives. */
	rec->bytes += weighted_bytes;
	rec->objects += weighted_bytes / bytes;
	rec->samples++;
	profile->totals.samples++;
	profile->totals.bytes += weighted_bytes;
	profile->totals.objects += weighted_bytes / bytes;
	return 0;
}

int alloc_profile__add_counted(struct alloc_profile *profile, uint32_t pid, const uint64_t *frames,
			       size_t n_frames, uint64_t objects, uint64_t bytes)
{
	struct stack_record *rec;

	if (n_frames > MAX_FRAMES)
		n_frames = MAX_FRAMES;
	rec = find_or_add_stack(profile, pid, frames, n_frames);
	if (!rec)
		return -ENOMEM;
	rec->bytes += (double)bytes;
	rec->objects += (double)objects;
	rec->samples++;
	profile->totals.samples++;
	profile->totals.bytes += (double)bytes;
	profile->totals.objects += (double)objects;
	return 0;
}

int alloc_profile__add_weighted_stack(struct alloc_profile *profile, uint32_t pid,
				      const uint64_t *frames, size_t n_frames, uint64_t size,
				      double weighted_bytes)
{
	if (n_frames > MAX_FRAMES)
		n_frames = MAX_FRAMES;
	return add_weighted(profile, pid, frames, n_frames, size, weighted_bytes, NULL);
}

static int live_refs_put(struct alloc_profile *profile, uint32_t pid, uint64_t time_ns,
			 struct stack_record *rec);

/* The bytes a sample of size stands for: bytes / p, p = 1 - exp(-size/R). */
static double kernel_sample_weight(const struct alloc_profile *profile, uint64_t size)
{
	double p = sampling_probability(size, profile->sample_rate);

	return (double)(size ? size : 1) / p * profile->weight_scale;
}

/* What a sample stands for: the weight the cooperative path's sampler gave it, or the
 * kernel's own sampling's. Kept samples and drop notices alike. */
static double sample_weight(const struct alloc_profile *profile, const struct alloc_sample *sample)
{
	if (sample->weighted_bytes)
		return (double)sample->weighted_bytes * profile->weight_scale;
	return kernel_sample_weight(profile, sample->size);
}

int alloc_profile__add_stack(struct alloc_profile *profile, uint32_t pid, const uint64_t *frames,
			     size_t n_frames, uint64_t size)
{
	return alloc_profile__add_weighted_stack(profile, pid, frames, n_frames, size,
						 kernel_sample_weight(profile, size));
}

/* The rate an in-process sampler used, from one of its samples: R = -size / ln(1 - size/weight).
 * Only samples weighted at least twice their size (size <= R ln 2) tell it well: for much
 * larger ones the weight is the size itself, rounded. */
static void note_sampler_rate(struct alloc_profile *profile, uint64_t size, uint64_t weighted)
{
	struct alloc_profile_totals *t = &profile->totals;
	double bytes = (double)(size ? size : 1), rate;

	t->weighted_samples++;
	if ((double)weighted < 2 * bytes)
		return;
	rate = -bytes / log1p(-bytes / (double)weighted);
	if (!isfinite(rate) || rate <= 0)
		return;
	if (t->sampler_rate_min == 0 || rate < t->sampler_rate_min)
		t->sampler_rate_min = rate;
	if (rate > t->sampler_rate_max)
		t->sampler_rate_max = rate;
}

int alloc_profile__add_unwound(struct alloc_profile *profile, const struct alloc_sample *sample,
			       const uint64_t *frames, size_t n_frames)
{
	struct stack_record *rec = NULL;
	int ret;

	if (n_frames > MAX_FRAMES)
		n_frames = MAX_FRAMES;
	if (sample->weighted_bytes)
		note_sampler_rate(profile, sample->size, sample->weighted_bytes);
	ret = add_weighted(profile, sample->pid, frames, n_frames, sample->size,
			   sample_weight(profile, sample), &rec);
	if (!ret && profile->inuse)
		ret = live_refs_put(profile, sample->pid, sample->time_ns, rec);
	return ret;
}

int alloc_profile__add_depth_cut(struct alloc_profile *profile, const struct alloc_sample *sample,
				 const uint64_t *frames, size_t n_frames)
{
	uint64_t cut[MAX_FRAMES + 1];
	struct stack_record *rec = NULL;
	int ret;

	if (!n_frames)
		return alloc_profile__add_unwound(profile, sample, frames, n_frames);
	if (n_frames > MAX_FRAMES)
		n_frames = MAX_FRAMES;
	memcpy(cut, frames, n_frames * sizeof(*frames));
	cut[n_frames] = TRUNCATED_PC;
	if (sample->weighted_bytes)
		note_sampler_rate(profile, sample->size, sample->weighted_bytes);
	ret = add_weighted(profile, sample->pid, cut, n_frames + 1, sample->size,
			   sample_weight(profile, sample), &rec);
	if (!ret && profile->inuse)
		ret = live_refs_put(profile, sample->pid, sample->time_ns, rec);
	return ret;
}

size_t alloc_profile_fp_frames(const struct alloc_sample *sample, uint64_t *frames)
{
	return build_frames(sample, frames);
}

bool alloc_profile_fp_walk_full(const struct alloc_sample *sample)
{
	return sample->stack_bytes >= (__s32)(ALLOC_MAX_STACK_DEPTH * sizeof(__u64));
}

int alloc_profile__add_dropped(struct alloc_profile *profile, const struct alloc_sample *sample)
{
	double weighted_bytes = sample_weight(profile, sample);
	double objects = weighted_bytes / (double)(sample->size ? sample->size : 1);
	struct dropped_weight *d = NULL;

	for (size_t i = profile->n_drops; i > 0 && !d; i--)
		if (profile->drops[i - 1].pid == sample->pid)
			d = &profile->drops[i - 1];
	if (!d) {
		if (profile->n_drops == profile->cap_drops) {
			size_t cap = profile->cap_drops ? profile->cap_drops * 2 : 8;
			struct dropped_weight *grown =
				realloc(profile->drops, cap * sizeof(*grown));

			if (!grown)
				return -ENOMEM;
			profile->drops = grown;
			profile->cap_drops = cap;
		}
		d = &profile->drops[profile->n_drops++];
		*d = (struct dropped_weight){ .pid = sample->pid };
	}
	d->samples++;
	d->bytes += weighted_bytes;
	d->objects += objects;
	profile->totals.samples++;
	profile->totals.bytes += weighted_bytes;
	profile->totals.objects += objects;
	profile->totals.dropped_samples++;
	profile->totals.dropped_bytes += weighted_bytes;
	profile->totals.dropped_objects += objects;
	return 0;
}

/* Whether the frame is a program's main (C's, or a Rust or C++ namespace's ::main). */
static bool is_main_frame(const struct symbolized_frame *frame)
{
	const char *name = frame->function;
	size_t len = name ? strlen(name) : 0;

	return name && (strcmp(name, "main") == 0 ||
			(len > 6 && strcmp(name + len - 6, "::main") == 0));
}

/* Whether two return addresses of pid are in the same function (not only the same call). */
static bool same_function(struct alloc_profile *profile, uint32_t pid, uint64_t a, uint64_t b)
{
	struct symbolized_frame fa, fb;

	if (a == b)
		return true;
	if (synthetic_pc(a) || synthetic_pc(b))
		return false;
	if (symbolizer__resolve(profile->symbolizer, pid, a, true, &fa) != 0 ||
	    symbolizer__resolve(profile->symbolizer, pid, b, true, &fb) != 0)
		return false;
	return fa.mapping_key && fa.mapping_key == fb.mapping_key && fa.function_start &&
	       fa.function_start == fb.function_start;
}

/* The stack a process's dropped samples go under: [DROPPED_PC, main, ..., outermost] when
 * every stack of the process kept runs through the same functions from its outermost frame
 * to main (the allocator's own frame left out), the frames (call sites) of the first such
 * stack; else [DROPPED_PC] alone, at the root: a thread's stack or one cut short says a
 * dropped sample may not have come from under main. A new record, the caller's. */
static struct stack_record *dropped_record(struct alloc_profile *profile,
					   const struct dropped_weight *d)
{
	const struct stack_record *first = NULL;
	struct symbolized_frame frame;
	struct stack_record *rec;
	size_t keep = 0;

	for (size_t i = 0; i < profile->n_stacks && !first && profile->symbolizer; i++)
		if (profile->stacks[i]->pid == d->pid)
			first = profile->stacks[i];
	/* From the outermost frame in: the first main, the allocator's frame left out. */
	for (size_t n = 0; first && n + 1 < first->n_frames && !keep; n++)
		if (!synthetic_pc(first->frames[first->n_frames - 1 - n]) &&
		    symbolizer__resolve(profile->symbolizer, d->pid,
					first->frames[first->n_frames - 1 - n], true, &frame) == 0 &&
		    is_main_frame(&frame))
			keep = n + 1;
	for (size_t i = 0; i < profile->n_stacks && keep; i++) {
		const struct stack_record *s = profile->stacks[i];

		if (s->pid != d->pid || s == first)
			continue;
		if (s->n_frames < keep + 1) {
			keep = 0;
			break;
		}
		for (size_t n = 0; n < keep; n++) {
			if (!same_function(profile, d->pid, s->frames[s->n_frames - 1 - n],
					   first->frames[first->n_frames - 1 - n])) {
				keep = 0;
				break;
			}
		}
	}
	rec = calloc(1, sizeof(*rec) + (keep + 1) * sizeof(rec->frames[0]));
	if (!rec)
		return NULL;
	rec->pid = d->pid;
	rec->n_frames = (uint32_t)(keep + 1);
	rec->frames[0] = DROPPED_PC;
	if (keep)
		memcpy(&rec->frames[1], &first->frames[first->n_frames - keep],
		       keep * sizeof(rec->frames[0]));
	rec->bytes = d->bytes;
	rec->objects = d->objects;
	rec->samples = d->samples;
	rec->inuse_bytes = d->inuse_bytes;
	rec->inuse_objects = d->inuse_objects;
	return rec;
}

int alloc_profile__add(struct alloc_profile *profile, const struct alloc_sample *sample)
{
	uint64_t frames[MAX_FRAMES];
	size_t n = build_frames(sample, frames);

	if (alloc_profile_fp_walk_full(sample))
		return alloc_profile__add_depth_cut(profile, sample, frames, n);
	return alloc_profile__add_unwound(profile, sample, frames, n);
}

void alloc_profile__totals(const struct alloc_profile *profile, struct alloc_profile_totals *out)
{
	*out = profile->totals;
}

/* Functions that belong to an allocator, never an allocation site, by linkage name: the entry
 * points allocscope probes under every alias the symbol tables give them, the wrappers that
 * reach them (operator new calling malloc, posix_memalign calling memalign, Rust's global
 * allocator shims), and glibc's internals. jemalloc's, mimalloc's and tcmalloc's internals
 * carry their prefix. */
/* clang-format off */
static const char *const allocator_function_names[] = {
	"malloc", "calloc", "realloc", "reallocarray", "memalign", "aligned_alloc",
	"posix_memalign", "valloc", "pvalloc", "mallocx", "rallocx", "xallocx",
	/* glibc's aliases and internals */
	"__libc_malloc", "__libc_calloc", "__libc_realloc", "__libc_reallocarray",
	"__libc_memalign", "__libc_valloc", "__libc_pvalloc", "__malloc", "__calloc", "__realloc",
	"__memalign", "__posix_memalign", "__valloc", "__pvalloc", "_int_malloc", "_int_realloc",
	"_int_memalign", "_mid_memalign", "sysmalloc", "malloc_hook_ini", "realloc_hook_ini",
	"memalign_hook_ini",
	/* Rust's global allocator entry points */
	"__rust_alloc", "__rust_alloc_zeroed", "__rust_realloc", "__rg_alloc",
	"__rg_alloc_zeroed", "__rg_realloc", "__rdl_alloc", "__rdl_alloc_zeroed", "__rdl_realloc",
};

static const char *const allocator_function_prefixes[] = {
	"_Zn",             /* operator new, new[] and their variants */
	"je_",             /* jemalloc built with a prefix, and its internals */
	"_rjem_",          /* jemalloc as Rust's tikv-jemallocator renames it */
	"mi_",             /* mimalloc */
	"tc_",             /* gperftools tcmalloc */
	"tcache_",         /* glibc's per-thread cache */
	"_ZN5alloc5alloc", /* Rust's alloc::alloc (alloc, realloc, exchange_malloc, Global) */
};
/* clang-format on */

/* Programs' own allocation wrappers, never where the program allocated: skipped when the
 * summary picks a stack's allocation site, like the allocator (and --skip-frames). By name as
 * the symbol table or debug info gives it, readable or linkage. */
/* clang-format off */
static const char *const wrapper_function_names[] = {
	/* redis, valkey, keydb */
	"zmalloc", "zcalloc", "zrealloc", "ztrymalloc", "ztrycalloc", "ztryrealloc",
	"zmalloc_usable", "zcalloc_usable", "zrealloc_usable", "ztrymalloc_usable",
	"ztrycalloc_usable", "ztryrealloc_usable", "ztrymalloc_usable_internal",
	"ztrycalloc_usable_internal", "ztryrealloc_usable_internal", "zmalloc_no_tcache",
	"zcalloc_num", "zstrdup",
	/* nginx */
	"ngx_alloc", "ngx_calloc", "ngx_memalign",
	/* SQLite */
	"sqlite3Malloc", "sqlite3MallocZero", "sqlite3Realloc", "sqlite3MemMalloc",
	"sqlite3MemRealloc", "sqlite3_malloc", "sqlite3_malloc64", "sqlite3_realloc",
	"sqlite3_realloc64", "mallocWithAlarm", "sqlite3DbMallocRaw", "sqlite3DbMallocRawNN",
	"sqlite3DbMallocZero", "sqlite3DbRealloc", "sqlite3DbReallocOrFree", "dbMallocRawFinish",
	"dbReallocFinish",
	/* CPython */
	"PyMem_Malloc", "PyMem_Calloc", "PyMem_Realloc", "PyMem_RawMalloc", "PyMem_RawCalloc",
	"PyMem_RawRealloc", "PyObject_Malloc", "PyObject_Calloc", "PyObject_Realloc",
	"_PyMem_RawMalloc", "_PyMem_RawCalloc", "_PyMem_RawRealloc", "_PyObject_Malloc",
	"_PyObject_Calloc", "_PyObject_Realloc", "_PyMem_DebugRawAlloc", "_PyMem_DebugRawRealloc",
	"_PyMem_DebugMalloc", "_PyMem_DebugCalloc", "_PyMem_DebugRealloc",
	/* GLib */
	"g_malloc", "g_malloc0", "g_realloc", "g_try_malloc", "g_try_malloc0", "g_try_realloc",
	"g_malloc_n", "g_malloc0_n", "g_realloc_n", "g_try_malloc_n", "g_try_malloc0_n",
	"g_try_realloc_n", "g_slice_alloc", "g_slice_alloc0", "g_memdup", "g_memdup2",
	/* GNU and BSD programs, gnulib */
	"xmalloc", "xcalloc", "xrealloc", "xzalloc", "xnmalloc", "xcharalloc", "xmemdup",
	"ximalloc", "xicalloc", "xirealloc", "xreallocarray", "reallocarr",
};

/* Readable names: Rust's liballoc (Box, Vec, String, RawVec, the collections: its functions
 * allocate for their caller, as libc's strdup does), std's System allocator and the
 * __rust_alloc shims between the program and malloc. Trait impls for liballoc's types show as
 * "<alloc::vec::Vec<T> as ...>" and "<T as alloc::vec::spec_from_elem::SpecFromElem>". */
static const char *const wrapper_function_prefixes[] = {
	"alloc::",
	"<alloc::",
	"std::alloc::",
	"<std::alloc::",
	"std::sys::alloc::",
	"std::sys::pal::unix::alloc::",
	"__rust_",
	"__rustc::",
	"__rdl_",
	"__rg_",
};
/* clang-format on */

static bool name_in(const char *name, const char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(name, names[i]) == 0)
			return true;
	return false;
}

static bool prefix_in(const char *name, const char *const *prefixes, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0)
			return true;
	return false;
}

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

static bool is_allocator_name(const char *name)
{
	return name && (name_in(name, allocator_function_names, COUNT_OF(allocator_function_names)) ||
			prefix_in(name, allocator_function_prefixes,
				  COUNT_OF(allocator_function_prefixes)));
}

static bool is_wrapper_name(const struct alloc_profile *profile, const char *name)
{
	if (!name)
		return false;
	if (name_in(name, wrapper_function_names, COUNT_OF(wrapper_function_names)) ||
	    prefix_in(name, wrapper_function_prefixes, COUNT_OF(wrapper_function_prefixes)))
		return true;
	if (name[0] == '<' && strstr(name, " as alloc::"))
		return true;
	/* A program's #[global_allocator] (tikv_jemallocator::Jemalloc, mimalloc::MiMalloc, its
	 * own): it allocates for whoever called liballoc. */
	if (name[0] == '<' && strstr(name, " as core::alloc::global::GlobalAlloc>::"))
		return true;
	return profile && profile->has_skip_frames &&
	       regexec(&profile->skip_frames, name, 0, NULL, 0) == 0;
}

static bool is_allocator_function(const struct symbolized_frame *frame)
{
	return is_allocator_name(frame->system_name ? frame->system_name : frame->function);
}

/* One function of a frame (an inline line or the physical function): part of the allocator,
 * or a wrapper the site looks through. */
static bool skipped_function(const struct alloc_profile *profile, const char *function,
			     const char *system_name)
{
	return is_allocator_name(system_name ? system_name : function) ||
	       is_wrapper_name(profile, function) || is_wrapper_name(profile, system_name);
}

/* The name of a frame nothing could name: the file it is in and the offset in that file,
 * which stay the same across runs and processes (an absolute address does not), so that a
 * flame graph shows its bytes under "libfoo.so+0x1a2b" rather than under no name at all. */
static void unnamed_frame_name(const struct symbolized_frame *frame, uint64_t address, char *name,
			       size_t len)
{
	const char *base;

	if (!frame->map_path || address < frame->map_start) {
		snprintf(name, len, "0x%" PRIx64, address);
		return;
	}
	base = strrchr(frame->map_path, '/');
	base = base && base[1] ? base + 1 : frame->map_path;
	snprintf(name, len, "%s+0x%" PRIx64, base,
		 address - frame->map_start + frame->map_file_offset);
}

/* The allocation site of a stack: the first function, from the leaf out and innermost inline
 * function first, that is neither the allocator nor a wrapper; the allocator frame itself when
 * there is nothing else. The allocator is its functions (is_allocator_name) and, when the leaf
 * is in a library, that whole library: libc's strdup or fopen are not the site, their caller
 * is. When the leaf is in the executable (glibc or jemalloc linked statically, Rust's
 * _rjem_*), the rest of that file is the program itself: only its allocator functions are
 * skipped. Wrappers are the built-in list above and --skip-frames; a stack that is all
 * wrappers (cut short) is attributed to its first wrapper, as if none were known. */
static void stack_site(struct alloc_profile *profile, const struct stack_record *rec, char *name,
		       size_t len)
{
	struct symbolized_frame leaf = { 0 }, frame;
	bool have_leaf = false;
	char first_wrapper[160] = "";

	for (uint32_t i = 0; i < rec->n_frames && !synthetic_pc(rec->frames[i]); i++) {
		bool ok = symbolizer__resolve(profile->symbolizer, rec->pid, rec->frames[i], i > 0,
					      &frame) == 0;

		if (i == 0) {
			leaf = frame;
			have_leaf = ok;
			continue;
		}
		if (ok && have_leaf && !rec->leaf_in_executable && frame.mapping_key &&
		    frame.mapping_key == leaf.mapping_key)
			continue;
		if (ok && is_allocator_function(&frame))
			continue;
		if (ok && frame.n_lines) {
			size_t k = 0;

			while (k < frame.n_lines &&
			       skipped_function(profile, frame.lines[k].function,
						frame.lines[k].system_name)) {
				if (!first_wrapper[0] &&
				    !is_allocator_name(frame.lines[k].system_name
							       ? frame.lines[k].system_name
							       : frame.lines[k].function))
					snprintf(first_wrapper, sizeof(first_wrapper), "%s",
						 frame.lines[k].function);
				k++;
			}
			if (k == frame.n_lines)
				continue;
			snprintf(name, len, "%s", frame.lines[k].function);
		} else if (ok && frame.function) {
			if (skipped_function(profile, frame.function, frame.system_name)) {
				if (!first_wrapper[0])
					snprintf(first_wrapper, sizeof(first_wrapper), "%s",
						 frame.function);
				continue;
			}
			snprintf(name, len, "%s", frame.function);
		} else if (ok) {
			unnamed_frame_name(&frame, rec->frames[i], name, len);
		} else {
			snprintf(name, len, "0x%" PRIx64, rec->frames[i]);
		}
		return;
	}
	if (first_wrapper[0])
		snprintf(name, len, "%s", first_wrapper);
	else if (have_leaf && leaf.function)
		snprintf(name, len, "%s", leaf.function);
	else if (have_leaf && leaf.map_path)
		unnamed_frame_name(&leaf, rec->frames[0], name, len);
	else
		snprintf(name, len, "(unknown)");
}

static int compare_sites(const void *a, const void *b)
{
	const struct alloc_site *x = a, *y = b;

	if (x->bytes != y->bytes)
		return x->bytes < y->bytes ? 1 : -1;
	return strcmp(x->function, y->function);
}

static int compare_live_sites(const void *a, const void *b)
{
	const struct alloc_site *x = a, *y = b;

	if (x->inuse_bytes != y->inuse_bytes)
		return x->inuse_bytes < y->inuse_bytes ? 1 : -1;
	return strcmp(x->function, y->function);
}

static int collect_sites(struct alloc_profile *profile, bool live, struct alloc_site *out,
			 size_t max, size_t *count)
{
	size_t n = 0, kept = 0;

	*count = 0;
	free(profile->sites);
	free(profile->site_names);
	profile->sites = calloc(profile->n_stacks + 2, sizeof(*profile->sites));
	profile->site_names = calloc(profile->n_stacks + 2, sizeof(*profile->site_names));
	if (!profile->sites || !profile->site_names)
		return -ENOMEM;
	for (size_t i = 0; i < profile->n_stacks; i++) {
		const struct stack_record *rec = profile->stacks[i];
		char name[160];
		size_t j;

		stack_site(profile, rec, name, sizeof(name));
		for (j = 0; j < n; j++)
			if (strcmp(profile->site_names[j], name) == 0)
				break;
		if (j == n) {
			snprintf(profile->site_names[n], sizeof(profile->site_names[n]), "%s", name);
			profile->sites[n].function = profile->site_names[n];
			n++;
		}
		profile->sites[j].bytes += rec->bytes;
		profile->sites[j].objects += rec->objects;
		profile->sites[j].inuse_bytes += rec->inuse_bytes;
		profile->sites[j].inuse_objects += rec->inuse_objects;
		profile->sites[j].inuse_growth += rec->inuse_bytes - rec->prev_inuse_bytes;
		if (rec->oldest_live_ns && (!profile->sites[j].oldest_live_ns ||
					    rec->oldest_live_ns < profile->sites[j].oldest_live_ns))
			profile->sites[j].oldest_live_ns = rec->oldest_live_ns;
	}
	if (profile->totals.dropped_samples || profile->inuse_totals.untracked) {
		snprintf(profile->site_names[n], sizeof(profile->site_names[n]), "%s",
			 ALLOC_PROFILE_DROPPED_FRAME);
		profile->sites[n].function = profile->site_names[n];
		profile->sites[n].bytes = profile->totals.dropped_bytes;
		profile->sites[n].objects = profile->totals.dropped_objects;
		for (size_t i = 0; i < profile->n_drops; i++) {
			profile->sites[n].inuse_bytes += profile->drops[i].inuse_bytes;
			profile->sites[n].inuse_objects += profile->drops[i].inuse_objects;
		}
		n++;
	}
	profile->n_sites = n;
	qsort(profile->sites, n, sizeof(*profile->sites), live ? compare_live_sites : compare_sites);
	for (size_t i = 0; i < n && kept < max; i++)
		if (!live || profile->sites[i].inuse_bytes > 0)
			out[kept++] = profile->sites[i];
	*count = kept;
	return 0;
}

int alloc_profile__top_sites(struct alloc_profile *profile, struct alloc_site *out, size_t max,
			     size_t *count)
{
	return collect_sites(profile, false, out, max, count);
}

int alloc_profile__top_live_sites(struct alloc_profile *profile, struct alloc_site *out,
				  size_t max, size_t *count)
{
	return collect_sites(profile, true, out, max, count);
}

/* Mapping identities seen while writing, in first-seen order, with whether any of their
 * frames got a name (pprof's has_functions: servers re-symbolize mappings without it). The
 * identity is the symbolizer's (pid, mapping) key, or, when a profile merges a service's
 * processes, the file itself (file_key): the same library mapped by two processes at
 * different addresses is one pprof mapping, laid out where the first process had it. */
struct mapping_slot {
	const void *key;
	struct symbolized_frame first;
	bool any_named;
	uint64_t pprof_id;
	uint32_t index; /* first-seen order */
};

struct mapping_table {
	struct mapping_slot *slots;
	size_t cap, count;
	const void **order;
};

static struct mapping_slot *mapping_lookup(struct mapping_table *t, const void *key, bool *added)
{
	size_t i = hash_mix64((uint64_t)(uintptr_t)key) & (t->cap - 1);

	*added = false;
	while (t->slots[i].key && t->slots[i].key != key)
		i = (i + 1) & (t->cap - 1);
	if (!t->slots[i].key) {
		if (t->count + 1 >= t->cap / 2)
			return NULL; /* sized up front: cannot happen */
		t->slots[i].key = key;
		t->slots[i].index = (uint32_t)t->count;
		t->order[t->count++] = key;
		*added = true;
	}
	return &t->slots[i];
}

static size_t index_of(const struct mapping_table *t, const void *key)
{
	for (size_t i = 0; i < t->count; i++)
		if (t->order[i] == key)
			return i;
	return 0;
}

static int mapping_table_init(struct mapping_table *t, size_t frames)
{
	t->cap = 64;
	while (t->cap < 2 * frames + 2)
		t->cap *= 2;
	t->slots = calloc(t->cap, sizeof(*t->slots));
	t->order = calloc(t->cap, sizeof(*t->order));
	t->count = 0;
	return t->slots && t->order ? 0 : -ENOMEM;
}

static void mapping_table_free(struct mapping_table *t)
{
	free(t->slots);
	free(t->order);
}

/* A file's identity across processes: its path, build id and the offset of the mapped part.
 * Anonymous memory (JIT code) differs per process and keeps the (pid, mapping) key. Never
 * NULL (NULL marks a free slot). */
static const void *file_key(const struct symbolized_frame *frame)
{
	uint64_t h = hash_mix64(frame->map_file_offset + 1);

	if (frame->unnamed_memory || !frame->map_path ||
	    (frame->map_path[0] != '/' && strcmp(frame->map_path, "[vdso]") != 0))
		return frame->mapping_key;
	for (const char *c = frame->map_path; *c; c++)
		h = hash_combine(h, (unsigned char)*c);
	h = hash_combine(h, 0x2f);
	for (const char *c = frame->build_id ? frame->build_id : ""; *c; c++)
		h = hash_combine(h, (unsigned char)*c);
	return (const void *)(uintptr_t)(h | 1);
}

/* One pprof Location per frame address, with a Line per inline level, innermost first; a
 * frame without a name gets one that says where it is (unnamed_frame_name). */
static uint64_t frame_location(struct pprof_builder *builder, uint64_t mapping_id,
			       uint64_t address, uint64_t location_address,
			       const struct symbolized_frame *frame)
{
	struct pprof_line lines[16];
	size_t n = 0;

	for (size_t i = 0; i < frame->n_lines && n < sizeof(lines) / sizeof(lines[0]); i++) {
		const struct symbolized_line *line = &frame->lines[i];

		lines[n].function_id = pprof_builder__function(builder, line->function,
							       line->system_name, line->file, 0);
		if (!lines[n].function_id)
			return 0;
		lines[n++].line = line->line;
	}
	if (n == 0) {
		char unnamed[PATH_MAX + 32];
		const char *name = frame->function;

		if (!name) {
			unnamed_frame_name(frame, address, unnamed, sizeof(unnamed));
			name = unnamed;
		}
		lines[0].function_id = pprof_builder__function(builder, name, frame->system_name,
							       NULL, 0);
		if (!lines[0].function_id)
			return 0;
		lines[n++].line = 0;
	}
	return pprof_builder__location(builder, mapping_id, location_address, lines, n);
}

/* One sample of the profile being written: a stack, or when processes are merged, every
 * (pid, stack) whose frames are the same code. */
struct profile_entry {
	struct profile_entry *next; /* hash chain */
	uint64_t hash;
	const struct stack_record *rec; /* the first; its pid resolves the frames */
	double bytes, objects;
	double inuse_bytes, inuse_objects;
	size_t order;			/* first-seen, for deterministic output */
	struct frame_ref {
		uint32_t slot;	  /* mapping_slot.index; UINT32_MAX without a mapping */
		uint64_t address; /* in the slot's first mapping's layout */
	} frames[];
};

struct entry_table {
	struct profile_entry **buckets, **entries;
	size_t n_buckets, count;
};

static void entry_table_free(struct entry_table *t)
{
	for (size_t i = 0; i < t->count; i++)
		free(t->entries[i]);
	free(t->entries);
	free(t->buckets);
}

/* Groups the stacks (the profile's, then the dropped samples' records in extra) into entries:
 * one per stack, or with merge one per distinct code path over all processes. Fills the
 * mapping table as it goes. */
/* Whether output takes rec (output->select on its request-context labels). */
static bool selected(const struct alloc_profile_output *output, const struct stack_record *rec)
{
	if (!output->select)
		return true;
	return rec->labels ? output->select(rec->labels->labels, rec->labels->count,
					    output->select_ctx)
			   : output->select(NULL, 0, output->select_ctx);
}

static int group_stacks(struct alloc_profile *profile, struct stack_record *const *extra,
			size_t n_extra, const struct alloc_profile_output *output,
			struct mapping_table *mappings, struct entry_table *t)
{
	bool merge = output->merge_processes;
	struct frame_ref refs[MAX_FRAMES + 1]; /* + a depth cut's root frame */
	struct symbolized_frame frame;
	size_t n_records = profile->n_stacks + n_extra;
	bool added;

	t->n_buckets = 64;
	while (t->n_buckets < 2 * n_records)
		t->n_buckets *= 2;
	t->buckets = calloc(t->n_buckets, sizeof(*t->buckets));
	t->entries = calloc(n_records + 1, sizeof(*t->entries));
	t->count = 0;
	if (!t->buckets || !t->entries)
		return -ENOMEM;
	for (size_t i = 0; i < n_records; i++) {
		const struct stack_record *rec =
			i < profile->n_stacks ? profile->stacks[i] : extra[i - profile->n_stacks];
		uint64_t hash = hash_combine(hash_mix64(merge ? 0 : rec->pid + 1),
					     rec->labels ? rec->labels->hash : 0);
		struct profile_entry *e;

		if (!selected(output, rec))
			continue;
		for (uint32_t f = 0; f < rec->n_frames; f++) {
			struct mapping_slot *slot = NULL;

			refs[f].slot = UINT32_MAX;
			refs[f].address = rec->frames[f];
			if (!synthetic_pc(rec->frames[f]) &&
			    symbolizer__resolve(profile->symbolizer, rec->pid, rec->frames[f],
						f > 0, &frame) == 0 &&
			    frame.mapping_key)
				slot = mapping_lookup(mappings,
						      merge ? file_key(&frame) : frame.mapping_key,
						      &added);
			if (slot) {
				if (added)
					slot->first = frame;
				slot->any_named |= frame.function != NULL;
				refs[f].slot = slot->index;
				refs[f].address =
					slot->first.map_start + (rec->frames[f] - frame.map_start);
			}
			hash = hash_combine(hash_combine(hash, refs[f].slot), refs[f].address);
		}
		for (e = t->buckets[hash & (t->n_buckets - 1)]; e; e = e->next)
			if (e->hash == hash && e->rec->n_frames == rec->n_frames &&
			    (merge || e->rec->pid == rec->pid) && e->rec->labels == rec->labels &&
			    memcmp(e->frames, refs, rec->n_frames * sizeof(refs[0])) == 0)
				break;
		if (!e) {
			e = calloc(1, sizeof(*e) + rec->n_frames * sizeof(refs[0]));
			if (!e)
				return -ENOMEM;
			e->hash = hash;
			e->rec = rec;
			e->order = t->count;
			memcpy(e->frames, refs, rec->n_frames * sizeof(refs[0]));
			e->next = t->buckets[hash & (t->n_buckets - 1)];
			t->buckets[hash & (t->n_buckets - 1)] = e;
			t->entries[t->count++] = e;
		}
		e->bytes += rec->bytes;
		e->objects += rec->objects;
		e->inuse_bytes += rec->inuse_bytes;
		e->inuse_objects += rec->inuse_objects;
	}
	return 0;
}

/* Hottest first (alloc_space, then alloc_objects), first-seen order among equals. */
static int compare_entries(const void *a, const void *b)
{
	const struct profile_entry *x = *(const struct profile_entry *const *)a;
	const struct profile_entry *y = *(const struct profile_entry *const *)b;

	if (x->bytes != y->bytes)
		return x->bytes < y->bytes ? 1 : -1;
	if (x->objects != y->objects)
		return x->objects < y->objects ? 1 : -1;
	return x->order < y->order ? -1 : x->order > y->order;
}

static int add_entry_sample(struct alloc_profile *profile, struct pprof_builder *builder,
			    struct mapping_table *mappings, const struct profile_entry *e,
			    const struct alloc_profile_output *output)
{
	const struct stack_record *rec = e->rec;
	uint64_t location_ids[MAX_FRAMES + 1]; /* + a depth cut's root frame */
	struct symbolized_frame frame;
	bool added;

	for (uint32_t i = 0; i < rec->n_frames; i++) {
		uint64_t mapping_id = 0;

		if (synthetic_pc(rec->frames[i])) {
			struct pprof_line line = { 0 };

			line.function_id = pprof_builder__function(
				builder,
				rec->frames[i] == DROPPED_PC ? ALLOC_PROFILE_DROPPED_FRAME
							     : ALLOC_PROFILE_TRUNCATED_FRAME,
				NULL, NULL, 0);
			location_ids[i] = line.function_id
						  ? pprof_builder__location(builder, 0,
									    rec->frames[i], &line, 1)
						  : 0;
			if (!location_ids[i])
				return -ENOMEM;
			continue;
		}
		if (symbolizer__resolve(profile->symbolizer, rec->pid, rec->frames[i], i > 0,
					&frame) != 0)
			memset(&frame, 0, sizeof(frame));
		if (e->frames[i].slot != UINT32_MAX) {
			struct mapping_slot *slot = mapping_lookup(
				mappings, mappings->order[e->frames[i].slot], &added);

			mapping_id = slot ? slot->pprof_id : 0;
		}
		location_ids[i] = frame_location(builder, mapping_id, rec->frames[i],
						 e->frames[i].address, &frame);
		if (!location_ids[i])
			return -ENOMEM;
	}

	int64_t values[4] = { (int64_t)(e->objects + 0.5), (int64_t)(e->bytes + 0.5),
			      (int64_t)(e->inuse_objects + 0.5), (int64_t)(e->inuse_bytes + 0.5) };
	size_t first = output->values == ALLOC_PROFILE_VALUES_INUSE ? 2 : 0;
	struct pprof_label labels[ALLOC_PROFILE_MAX_LABELS + 1 + ALLOC_PROFILE_MAX_PROCESS_LABELS +
				  ALLOC_PROFILE_MAX_CONTEXT_LABELS];
	size_t n_labels = 0;

	for (size_t i = 0; i < output->n_labels && n_labels < ALLOC_PROFILE_MAX_LABELS; i++)
		labels[n_labels++] = output->labels[i];
	/* The request context's labels: a key the output already has (service_name...) stays
	 * the output's. */
	for (size_t i = 0; rec->labels && i < rec->labels->count &&
			   i < ALLOC_PROFILE_MAX_CONTEXT_LABELS; i++) {
		bool taken = false;

		for (size_t j = 0; j < output->n_labels && !taken; j++)
			taken = output->labels[j].key &&
				strcmp(output->labels[j].key, rec->labels->labels[i].key) == 0;
		if (output->pid_label && !output->merge_processes &&
		    strcmp(rec->labels->labels[i].key, "pid") == 0)
			taken = true;
		if (!taken)
			labels[n_labels++] = rec->labels->labels[i];
	}
	if (output->pid_label && !output->merge_processes)
		labels[n_labels++] = (struct pprof_label){ .key = "pid", .num = rec->pid };
	for (size_t i = 0; i < profile->n_process_labels && !output->merge_processes; i++) {
		if (profile->process_labels[i].pid == rec->pid)
			labels[n_labels++] = (struct pprof_label){
				.key = profile->process_labels[i].key,
				.str = profile->process_labels[i].value,
			};
	}
	return pprof_builder__add_sample(builder, location_ids, rec->n_frames, values + first,
					 labels, n_labels);
}

/* The one sample that stands for the stacks left out, so that totals stay whole. */
static int add_trimmed_sample(struct pprof_builder *builder, const struct entry_table *t,
			      size_t kept, size_t first)
{
	struct pprof_line line = { 0 };
	int64_t values[4] = { 0, 0, 0, 0 };
	uint64_t location_id;

	for (size_t i = kept; i < t->count; i++) {
		values[0] += (int64_t)(t->entries[i]->objects + 0.5);
		values[1] += (int64_t)(t->entries[i]->bytes + 0.5);
		values[2] += (int64_t)(t->entries[i]->inuse_objects + 0.5);
		values[3] += (int64_t)(t->entries[i]->inuse_bytes + 0.5);
	}
	line.function_id = pprof_builder__function(builder, ALLOC_PROFILE_TRIMMED_FRAME, NULL,
						   NULL, 0);
	if (!line.function_id)
		return -ENOMEM;
	location_id = pprof_builder__location(builder, 0, 0, &line, 1);
	if (!location_id)
		return -ENOMEM;
	return pprof_builder__add_sample(builder, &location_id, 1, values + first, NULL, 0);
}

/* The first-seen mapping of the first process's executable (the first process whose stacks
 * were added), or NULL when no frame is in it. */
static const void *executable_mapping(const struct alloc_profile *profile,
				      struct mapping_table *mappings)
{
	const char *exe = profile->n_executables ? profile->executables[0].path : NULL;
	bool added;

	for (size_t i = 0; exe && i < mappings->count; i++) {
		struct mapping_slot *slot = mapping_lookup(mappings, mappings->order[i], &added);

		if (slot && !slot->first.unnamed_memory && slot->first.map_path &&
		    strcmp(slot->first.map_path, exe) == 0)
			return mappings->order[i];
	}
	return NULL;
}

/* A builder with the profile's header, the mappings and the first kept entries (the rest
 * folded into one trimmed sample). */
static int build_entries(struct alloc_profile *profile, const struct alloc_profile_output *output,
			 struct mapping_table *mappings, const struct entry_table *entries,
			 size_t kept, struct pprof_builder **out)
{
	static const struct pprof_value_type sample_types[] = {
		{ "alloc_objects", "count" },
		{ "alloc_space", "bytes" },
		{ "inuse_objects", "count" },
		{ "inuse_space", "bytes" },
	};
	struct pprof_value_type period_type = { "space", "bytes" };
	struct pprof_builder *builder;
	const void *main_key = NULL;
	size_t main_index;
	bool added;
	int ret = 0;

	*out = NULL;
	/* With in-use, Go's heap-profile layout: four types, inuse_space shown first; or one
	 * half of it (output->values). */
	bool inuse_only = profile->inuse && output->values == ALLOC_PROFILE_VALUES_INUSE;
	bool all = profile->inuse && output->values == ALLOC_PROFILE_VALUES_ALL;

	builder = pprof_builder__new(sample_types + (inuse_only ? 2 : 0), all ? 4 : 2, period_type,
				     (int64_t)profile->sample_rate,
				     all || inuse_only ? "inuse_space" : "alloc_space");
	if (!builder)
		return -errno;
	if (inuse_only)
		pprof_builder__set_time(builder, output->start_ns + output->duration_ns, 0);
	else
		pprof_builder__set_time(builder, output->start_ns, output->duration_ns);
	for (size_t i = 0; output->comments && output->comments[i] && !ret; i++)
		ret = pprof_builder__add_comment(builder, output->comments[i]);
	if (!ret && profile->inuse && profile->inuse_totals.overflow) {
		char line[200];

		snprintf(line, sizeof(line),
			 "in-use estimates are LOW: %llu sampled allocations were not tracked "
			 "(the live map was full: raise --inuse-entries)",
			 (unsigned long long)profile->inuse_totals.overflow);
		ret = pprof_builder__add_comment(builder, line);
	}
	if (!ret && kept < entries->count) {
		char line[160];

		snprintf(line, sizeof(line),
			 "%zu of %zu stacks folded into " ALLOC_PROFILE_TRIMMED_FRAME
			 " (the coldest) to stay within the sink's max_samples and "
			 "max_profile_size",
			 entries->count - kept, entries->count);
		ret = pprof_builder__add_comment(builder, line);
	}
	if (ret)
		goto out;

	/* pprof tools take the first mapping for "the" binary ("File:" in go tool pprof), so the
	 * program's executable goes first (of the first process, when processes are merged), then
	 * the others in the order they were seen. Without a frame in the executable, the mapping
	 * of a function named main, else the first seen. */
	main_key = executable_mapping(profile, mappings);
	for (size_t i = 0; i < entries->count && !main_key; i++) {
		const struct stack_record *rec = entries->entries[i]->rec;
		struct symbolized_frame frame;

		for (uint32_t f = 0; f < rec->n_frames && !main_key; f++)
			if (entries->entries[i]->frames[f].slot != UINT32_MAX &&
			    symbolizer__resolve(profile->symbolizer, rec->pid, rec->frames[f],
						f > 0, &frame) == 0 &&
			    frame.function && strcmp(frame.function, "main") == 0)
				main_key = mappings->order[entries->entries[i]->frames[f].slot];
	}
	main_index = main_key ? index_of(mappings, main_key) : 0;
	for (size_t n = 0; n < mappings->count; n++) {
		size_t i = n == 0 ? main_index : n <= main_index ? n - 1 : n;
		struct mapping_slot *slot = mapping_lookup(mappings, mappings->order[i], &added);
		struct pprof_mapping m = {
			.memory_start = slot->first.map_start,
			.memory_limit = slot->first.map_limit,
			.file_offset = slot->first.map_file_offset,
			.filename = slot->first.map_path,
			.build_id = slot->first.build_id,
			.has_functions = slot->any_named,
			.has_filenames = slot->any_named && slot->first.has_filenames,
			.has_line_numbers = slot->any_named && slot->first.has_line_numbers,
			.has_inline_frames = slot->any_named && slot->first.has_inline_frames,
		};

		slot->pprof_id = pprof_builder__add_mapping(builder, &m);
		if (!slot->pprof_id) {
			ret = -ENOMEM;
			goto out;
		}
	}
	for (size_t i = 0; i < kept && !ret; i++)
		ret = add_entry_sample(profile, builder, mappings, entries->entries[i], output);
	if (!ret && kept < entries->count)
		ret = add_trimmed_sample(builder, entries, kept,
					 output->values == ALLOC_PROFILE_VALUES_INUSE ? 2 : 0);
out:
	if (ret) {
		pprof_builder__free(builder);
		return ret;
	}
	*out = builder;
	return 0;
}

static int encoded_size(struct pprof_builder *builder, uint64_t *size)
{
	struct pb_buffer buf;
	int ret;

	pb_buffer__init(&buf, 0);
	ret = pprof_builder__encode(builder, &buf);
	*size = pb_buffer__len(&buf);
	pb_buffer__release(&buf);
	return ret;
}

/* Builds the pprof; *out is the caller's to free. With limits, the coldest entries are folded
 * into one trimmed sample until the profile has at most max_samples samples and encodes in
 * at most max_bytes. */
static int build_pprof(struct alloc_profile *profile, const struct alloc_profile_output *output,
		       struct pprof_builder **out)
{
	struct mapping_table mappings = { 0 };
	struct entry_table entries = { 0 };
	struct pprof_builder *builder = NULL;
	struct stack_record **dropped = NULL;
	size_t total_frames = 0, kept, n_dropped = 0;
	uint64_t size = 0;
	int ret;

	*out = NULL;
	for (size_t i = 0; i < profile->n_stacks; i++)
		total_frames += profile->stacks[i]->n_frames;
	ret = -ENOMEM;
	if (profile->n_drops && !(dropped = calloc(profile->n_drops, sizeof(*dropped))))
		goto out;
	for (; n_dropped < profile->n_drops; n_dropped++) {
		dropped[n_dropped] = dropped_record(profile, &profile->drops[n_dropped]);
		if (!dropped[n_dropped])
			goto out;
		total_frames += dropped[n_dropped]->n_frames;
	}
	ret = mapping_table_init(&mappings, total_frames);
	if (!ret)
		ret = group_stacks(profile, dropped, n_dropped, output, &mappings, &entries);
	if (ret)
		goto out;
	kept = entries.count;
	if (output->max_samples && kept > output->max_samples)
		kept = output->max_samples - 1; /* and the trimmed sample */
	/* Only a profile that must shrink changes its sample order (hottest first). */
	if (kept < entries.count)
		qsort(entries.entries, entries.count, sizeof(*entries.entries), compare_entries);
	for (;;) {
		ret = build_entries(profile, output, &mappings, &entries, kept, &builder);
		if (ret || !output->max_bytes || kept == 0)
			break;
		ret = encoded_size(builder, &size);
		if (ret || size <= output->max_bytes)
			break;
		/* Samples make most of the size: shrink in proportion, with a margin, and always
		 * by at least one. */
		size_t next = (size_t)((double)kept * (double)output->max_bytes / (double)size * 0.9);

		if (kept == entries.count)
			qsort(entries.entries, entries.count, sizeof(*entries.entries),
			      compare_entries);
		kept = next < kept ? next : kept - 1;
		pprof_builder__free(builder);
		builder = NULL;
	}
	if (!ret && output->result) {
		output->result->samples = pprof_builder__sample_count(builder);
		output->result->stacks_trimmed = entries.count - kept;
		output->result->stacks_merged = profile->n_stacks + n_dropped - entries.count;
	}
out:
	mapping_table_free(&mappings);
	entry_table_free(&entries);
	for (size_t i = 0; i < n_dropped; i++)
		free(dropped[i]);
	free(dropped);
	if (ret) {
		pprof_builder__free(builder);
		return ret;
	}
	*out = builder;
	return 0;
}

int alloc_profile__write_pprof(struct alloc_profile *profile, const char *path,
			       const struct alloc_profile_output *output)
{
	struct pprof_builder *builder;
	int ret = build_pprof(profile, output, &builder);

	if (ret)
		return ret;
	ret = pprof_builder__write_file(builder, path);
	pprof_builder__free(builder);
	return ret;
}

int alloc_profile__encode_pprof(struct alloc_profile *profile,
				const struct alloc_profile_output *output, uint8_t **data,
				size_t *len)
{
	struct pprof_builder *builder;
	int ret = build_pprof(profile, output, &builder);

	*data = NULL;
	*len = 0;
	if (ret)
		return ret;
	ret = pprof_builder__encode_gzip(builder, data, len);
	pprof_builder__free(builder);
	return ret;
}

static int compare_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

size_t alloc_profile__process_count(const struct alloc_profile *profile)
{
	uint32_t *pids;
	size_t count = 0;

	if (!profile->n_stacks)
		return 0;
	pids = malloc(profile->n_stacks * sizeof(*pids));
	if (!pids)
		return 0;
	for (size_t i = 0; i < profile->n_stacks; i++)
		pids[i] = profile->stacks[i]->pid;
	qsort(pids, profile->n_stacks, sizeof(*pids), compare_u32);
	for (size_t i = 0; i < profile->n_stacks; i++)
		count += i == 0 || pids[i] != pids[i - 1];
	free(pids);
	return count;
}

static uint64_t hash_text(uint64_t h, const char *s)
{
	for (; *s; s++)
		h = hash_combine(h, (uint8_t)*s);
	return hash_combine(h, 0);
}

int alloc_profile__use_labels(struct alloc_profile *profile, const struct pprof_label *labels,
			      size_t n_labels)
{
	struct label_set *set;
	uint64_t hash = hash_mix64(n_labels + 1);
	size_t text = 0;
	char *p;

	profile->current_labels = NULL;
	if (!n_labels)
		return 0;
	if (n_labels > ALLOC_PROFILE_MAX_CONTEXT_LABELS)
		n_labels = ALLOC_PROFILE_MAX_CONTEXT_LABELS;
	for (size_t i = 0; i < n_labels; i++) {
		if (!labels[i].key || !labels[i].str)
			return -EINVAL;
		hash = hash_text(hash_text(hash, labels[i].key), labels[i].str);
		text += strlen(labels[i].key) + strlen(labels[i].str) + 2;
	}
	for (set = profile->label_sets; set; set = set->next) {
		bool same = set->hash == hash && set->count == n_labels;

		for (size_t i = 0; same && i < n_labels; i++)
			same = strcmp(set->labels[i].key, labels[i].key) == 0 &&
			       strcmp(set->labels[i].str, labels[i].str) == 0;
		if (same) {
			profile->current_labels = set;
			return 0;
		}
	}
	set = calloc(1, sizeof(*set) + n_labels * sizeof(set->labels[0]) + text);
	if (!set)
		return -ENOMEM;
	set->hash = hash;
	set->count = n_labels;
	p = (char *)&set->labels[n_labels];
	for (size_t i = 0; i < n_labels; i++) {
		size_t k = strlen(labels[i].key) + 1, v = strlen(labels[i].str) + 1;

		memcpy(p, labels[i].key, k);
		set->labels[i].key = p;
		p += k;
		memcpy(p, labels[i].str, v);
		set->labels[i].str = p;
		p += v;
	}
	set->next = profile->label_sets;
	profile->label_sets = set;
	profile->current_labels = set;
	return 0;
}
/* ---- labels (issue 15) ---------------------------------------------------------------- */

int alloc_profile__label_process(struct alloc_profile *profile, uint32_t pid, const char *key,
				 const char *value)
{
	struct process_label *label = NULL;
	size_t of_pid = 0;
	char *copy;

	for (size_t i = 0; i < profile->n_process_labels; i++) {
		if (profile->process_labels[i].pid != pid)
			continue;
		of_pid++;
		if (strcmp(profile->process_labels[i].key, key) == 0)
			label = &profile->process_labels[i];
	}
	copy = strdup(value);
	if (!copy)
		return -ENOMEM;
	if (label) {
		free(label->value);
		label->value = copy;
		return 0;
	}
	if (of_pid >= ALLOC_PROFILE_MAX_PROCESS_LABELS) {
		free(copy);
		return -ENOSPC;
	}
	if (array_grow((void **)&profile->process_labels, &profile->cap_process_labels,
		       profile->n_process_labels, sizeof(*profile->process_labels), 8)) {
		free(copy);
		return -ENOMEM;
	}
	label = &profile->process_labels[profile->n_process_labels];
	label->key = strdup(key);
	if (!label->key) {
		free(copy);
		return -ENOMEM;
	}
	label->pid = pid;
	label->value = copy;
	profile->n_process_labels++;
	return 0;
}

void alloc_profile__set_label_limits(struct alloc_profile *profile, struct label_limits *limits)
{
	label_limits__free(profile->label_limits);
	profile->label_limits = limits;
}

int alloc_profile__admit_label(struct alloc_profile *profile, const char *key, const char *value,
			       const char **key_out, const char **value_out)
{
	*key_out = *value_out = NULL;
	if (!profile->label_limits)
		return 0;
	return label_limits__admit(profile->label_limits, key, value, key_out, value_out);
}

/* The value of key on a sample of pid with the per-sample labels set (NULL: none): the
 * sample's own (its request context) first, else its process's; "" when it carries neither. */
static const char *sample_label_value(const struct alloc_profile *profile, uint32_t pid,
				      const struct label_set *set, const char *key)
{
	for (size_t i = 0; set && i < set->count; i++) {
		if (strcmp(set->labels[i].key, key) == 0)
			return set->labels[i].str;
	}
	for (size_t i = 0; i < profile->n_process_labels; i++) {
		const struct process_label *label = &profile->process_labels[i];

		if (label->pid == pid && strcmp(label->key, key) == 0)
			return label->value;
	}
	return "";
}

static int compare_grouped_sites(const void *a, const void *b)
{
	const struct alloc_site *x = a, *y = b;
	int by_group;

	if (x->group_bytes != y->group_bytes)
		return x->group_bytes < y->group_bytes ? 1 : -1;
	by_group = strcmp(x->group, y->group);
	if (by_group)
		return by_group;
	return compare_sites(a, b);
}

/* Adds weight to the (group, site name) row, creating it; rows are profile->sites. */
static void add_grouped(struct alloc_profile *profile, size_t *n, const char *group,
			const char *name, double bytes, double objects)
{
	size_t j;

	for (j = 0; j < *n; j++) {
		if (strcmp(profile->sites[j].group, group) == 0 &&
		    strcmp(profile->site_names[j], name) == 0)
			break;
	}
	if (j == *n) {
		snprintf(profile->site_names[j], sizeof(profile->site_names[j]), "%s", name);
		profile->sites[j].function = profile->site_names[j];
		profile->sites[j].group = group;
		(*n)++;
	}
	profile->sites[j].bytes += bytes;
	profile->sites[j].objects += objects;
}

int alloc_profile__top_sites_by_label(struct alloc_profile *profile, const char *key,
				      size_t per_group, struct alloc_site *out, size_t max,
				      size_t *count)
{
	size_t n = 0, filled = 0, in_group = 0;

	*count = 0;
	free(profile->sites);
	free(profile->site_names);
	profile->sites = calloc(profile->n_stacks + profile->n_drops + 1, sizeof(*profile->sites));
	profile->site_names =
	    calloc(profile->n_stacks + profile->n_drops + 1, sizeof(*profile->site_names));
	if (!profile->sites || !profile->site_names)
		return -ENOMEM;
	for (size_t i = 0; i < profile->n_stacks; i++) {
		const struct stack_record *rec = profile->stacks[i];
		char name[160];

		stack_site(profile, rec, name, sizeof(name));
		add_grouped(profile, &n, sample_label_value(profile, rec->pid, rec->labels, key),
			    name, rec->bytes, rec->objects);
	}
	for (size_t i = 0; i < profile->n_drops; i++)
		add_grouped(profile, &n,
			    sample_label_value(profile, profile->drops[i].pid, NULL, key),
			    ALLOC_PROFILE_DROPPED_FRAME, profile->drops[i].bytes,
			    profile->drops[i].objects);
	/* Every row gets its group's totals, then rows sort by group, then by site. */
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < n; j++) {
			if (strcmp(profile->sites[j].group, profile->sites[i].group) != 0)
				continue;
			profile->sites[i].group_bytes += profile->sites[j].bytes;
			profile->sites[i].group_objects += profile->sites[j].objects;
		}
	}
	profile->n_sites = n;
	qsort(profile->sites, n, sizeof(*profile->sites), compare_grouped_sites);
	for (size_t i = 0; i < n && filled < max; i++) {
		if (i > 0 && strcmp(profile->sites[i].group, profile->sites[i - 1].group) != 0)
			in_group = 0;
		if (in_group++ < per_group)
			out[filled++] = profile->sites[i];
	}
	*count = filled;
	return 0;
}

bool alloc_profile_is_allocator_function(const char *function, const char *system_name)
{
	return is_allocator_name(system_name && *system_name ? system_name : function);
}

bool alloc_profile_is_wrapper_function(const char *function, const char *system_name)
{
	return is_wrapper_name(NULL, function) ||
	       (system_name && *system_name && is_wrapper_name(NULL, system_name));
}

/* ---- In-use: live samples by (pid, time_ns), snapshots ---- */

int alloc_profile__enable_inuse(struct alloc_profile *profile)
{
	if (profile->inuse)
		return 0;
	profile->live_refs = calloc(1024, sizeof(*profile->live_refs));
	if (!profile->live_refs)
		return -ENOMEM;
	profile->cap_live_refs = 1024;
	profile->inuse = true;
	return 0;
}

bool alloc_profile__has_inuse(const struct alloc_profile *profile)
{
	return profile->inuse;
}

static size_t live_slot(const struct alloc_profile *profile, uint32_t pid, uint64_t time_ns)
{
	size_t mask = profile->cap_live_refs - 1;
	size_t i = (size_t)hash_mix64(time_ns ^ ((uint64_t)pid << 40)) & mask;

	while (profile->live_refs[i].rec &&
	       (profile->live_refs[i].pid != pid || profile->live_refs[i].time_ns != time_ns))
		i = (i + 1) & mask;
	return i;
}

/* Rebuilds the table at cap slots with the entries keep accepts. */
static int live_refs_rebuild(struct alloc_profile *profile, size_t cap, uint32_t min_seen)
{
	struct live_ref *old = profile->live_refs;
	size_t old_cap = profile->cap_live_refs;

	profile->live_refs = calloc(cap, sizeof(*profile->live_refs));
	if (!profile->live_refs) {
		profile->live_refs = old;
		return -ENOMEM;
	}
	profile->cap_live_refs = cap;
	profile->n_live_refs = 0;
	for (size_t i = 0; i < old_cap; i++) {
		if (!old[i].rec || old[i].seen < min_seen)
			continue;
		profile->live_refs[live_slot(profile, old[i].pid, old[i].time_ns)] = old[i];
		profile->n_live_refs++;
	}
	free(old);
	return 0;
}

static int live_refs_put(struct alloc_profile *profile, uint32_t pid, uint64_t time_ns,
			 struct stack_record *rec)
{
	size_t i;

	if (2 * (profile->n_live_refs + 1) > profile->cap_live_refs &&
	    live_refs_rebuild(profile, 2 * profile->cap_live_refs, 0))
		return -ENOMEM;
	i = live_slot(profile, pid, time_ns);
	if (!profile->live_refs[i].rec)
		profile->n_live_refs++;
	/* Kept by the next snapshot only if that finds it live. */
	profile->live_refs[i] = (struct live_ref){ .pid = pid, .time_ns = time_ns, .rec = rec,
						   .seen = profile->live_generation };
	return 0;
}

void alloc_profile__inuse_begin(struct alloc_profile *profile, uint64_t now_ns)
{
	struct alloc_profile_inuse *t = &profile->inuse_totals;

	for (size_t i = 0; i < profile->n_stacks; i++) {
		struct stack_record *rec = profile->stacks[i];

		rec->prev_inuse_bytes = rec->inuse_bytes;
		rec->inuse_bytes = 0;
		rec->inuse_objects = 0;
		rec->oldest_live_ns = 0;
	}
	for (size_t i = 0; i < profile->n_drops; i++) {
		profile->drops[i].inuse_bytes = 0;
		profile->drops[i].inuse_objects = 0;
	}
	profile->live_generation++;
	t->prev_snapshot_ns = t->snapshot_ns;
	t->snapshot_ns = now_ns;
	t->bytes = 0;
	t->objects = 0;
	t->live_samples = 0;
	t->untracked = 0;
	t->snapshots++;
}

/* A live entry whose sample the profile never got (its record was dropped from the ring): its
 * weight goes under the process's dropped frame. */
static int add_untracked(struct alloc_profile *profile, uint32_t pid, double bytes,
			 double objects)
{
	struct dropped_weight *d = NULL;

	for (size_t i = profile->n_drops; i > 0 && !d; i--)
		if (profile->drops[i - 1].pid == pid)
			d = &profile->drops[i - 1];
	if (!d) {
		if (array_grow((void **)&profile->drops, &profile->cap_drops, profile->n_drops,
			       sizeof(*profile->drops), 8))
			return -ENOMEM;
		d = &profile->drops[profile->n_drops++];
		*d = (struct dropped_weight){ .pid = pid };
	}
	d->inuse_bytes += bytes;
	d->inuse_objects += objects;
	profile->inuse_totals.untracked++;
	return 0;
}

int alloc_profile__inuse_add(struct alloc_profile *profile, uint32_t pid, uint64_t time_ns,
			     uint64_t size, uint64_t weighted_bytes)
{
	struct alloc_profile_inuse *t = &profile->inuse_totals;
	double bytes = weighted_bytes ? (double)weighted_bytes
				      : kernel_sample_weight(profile, size);
	double objects = bytes / (double)(size ? size : 1);
	struct live_ref *ref;

	if (!profile->inuse)
		return 0;
	t->live_samples++;
	t->bytes += bytes;
	t->objects += objects;
	ref = &profile->live_refs[live_slot(profile, pid, time_ns)];
	if (!ref->rec)
		return add_untracked(profile, pid, bytes, objects);
	ref->seen = profile->live_generation;
	ref->rec->inuse_bytes += bytes;
	ref->rec->inuse_objects += objects;
	if (!ref->rec->oldest_live_ns || time_ns < ref->rec->oldest_live_ns)
		ref->rec->oldest_live_ns = time_ns;
	return 0;
}

void alloc_profile__inuse_end(struct alloc_profile *profile, uint64_t overflow)
{
	profile->inuse_totals.overflow = overflow;
	/* Samples added before this snapshot and not found live were freed. Out of memory
	 * here only keeps them a snapshot longer. */
	size_t cap = profile->cap_live_refs;

	while (cap > 1024 && 8 * profile->n_live_refs < cap)
		cap /= 2;
	(void)live_refs_rebuild(profile, cap, profile->live_generation);
}

void alloc_profile__inuse_totals(const struct alloc_profile *profile,
				 struct alloc_profile_inuse *out)
{
	*out = profile->inuse_totals;
}

int alloc_profile__carry_live(const struct alloc_profile *from, struct alloc_profile **next_out)
{
	struct alloc_profile *next;
	int ret;

	*next_out = NULL;
	if (!from->inuse || from->n_live_refs == 0)
		return 0;
	ret = alloc_profile__new(from->sample_rate, from->symbolizer, &next);
	if (!ret)
		ret = alloc_profile__enable_inuse(next);
	/* The next interval's samples pass the same label bounds as a fresh profile's. */
	if (!ret && from->label_limits)
		ret = label_limits__new_like(from->label_limits, &next->label_limits);
	for (size_t i = 0; ret == 0 && i < from->cap_live_refs; i++) {
		const struct live_ref *ref = &from->live_refs[i];
		struct stack_record *rec;

		if (!ref->rec)
			continue;
		/* A live sample keeps its request context's labels in the next interval. */
		ret = ref->rec->labels ? alloc_profile__use_labels(next, ref->rec->labels->labels,
								   ref->rec->labels->count)
				       : alloc_profile__use_labels(next, NULL, 0);
		if (ret)
			break;
		rec = find_or_add_stack(next, ref->pid, ref->rec->frames, ref->rec->n_frames);
		if (!rec) {
			ret = -ENOMEM;
			break;
		}
		rec->leaf_in_executable = ref->rec->leaf_in_executable;
		ret = live_refs_put(next, ref->pid, ref->time_ns, rec);
	}
	if (ret) {
		alloc_profile__free(next);
		return ret;
	}
	next->current_labels = NULL;
	*next_out = next;
	return 0;
}

int alloc_profile__for_each_label_set(struct alloc_profile *profile,
				      alloc_profile_label_set_fn fn, void *ctx)
{
	int ret = 0;

	for (struct label_set *set = profile->label_sets; set; set = set->next)
		set->weight = -1; /* no stack: not reported */
	for (size_t i = 0; i < profile->n_stacks; i++) {
		struct label_set *set = (struct label_set *)profile->stacks[i]->labels;

		if (set)
			set->weight = (set->weight < 0 ? 0 : set->weight) +
				      profile->stacks[i]->bytes + profile->stacks[i]->inuse_bytes;
	}
	for (struct label_set *set = profile->label_sets; set && !ret; set = set->next)
		if (set->weight >= 0)
			ret = fn(set->labels, set->count, set->weight, ctx);
	return ret;
}

void alloc_profile__set_scale(struct alloc_profile *profile, double scale)
{
	profile->weight_scale = scale > 0 ? scale : 1.0;
}
