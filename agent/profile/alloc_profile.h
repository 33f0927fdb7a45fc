/* Sampled allocations aggregated per (process, stack), unbiased as they arrive, and turned
 * into a pprof allocation profile (alloc_objects/count, alloc_space/bytes; with in-use enabled
 * also inuse_objects/count, inuse_space/bytes) and a top table of allocation sites. */
#ifndef ALLOCSCOPE_ALLOC_PROFILE_H
#define ALLOCSCOPE_ALLOC_PROFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alloc.h"

struct alloc_profile;
struct label_limits;
struct pprof_label;
struct symbolizer;

struct alloc_site {
	const char *function;  /* owned by the profile; a hex address when unnamed */
	double bytes;          /* alloc_space estimate */
	double objects;        /* alloc_objects estimate */
	/* alloc_profile__top_sites_by_label only: the label's value ("" for samples without
	 * it) and the totals of every site of that value. */
	const char *group;
	double group_bytes, group_objects;
	/* With in-use (alloc_profile__enable_inuse), at the last snapshot: */
	double inuse_bytes, inuse_objects;
	double inuse_growth;   /* inuse_bytes minus the site's at the snapshot before */
	uint64_t oldest_live_ns; /* CLOCK_MONOTONIC allocation time of its oldest live sample,
				    0 when none is live */
};

/* In-use totals at the last snapshot. */
struct alloc_profile_inuse {
	double bytes, objects;     /* inuse_space, inuse_objects estimates */
	uint64_t live_samples;     /* live entries taken in */
	uint64_t untracked;        /* of those, without a kept sample (its record was dropped):
				      under ALLOC_PROFILE_DROPPED_FRAME */
	uint64_t overflow;         /* sampled allocations never tracked (the live map was full):
				      the estimates are low, and the profile says so */
	uint64_t snapshot_ns, prev_snapshot_ns; /* CLOCK_MONOTONIC; 0 before any */
	uint64_t snapshots;
};

struct alloc_profile_totals {
	uint64_t samples;          /* records aggregated (drop notices included) */
	uint64_t stacks;           /* distinct (pid, stack) pairs */
	double bytes, objects;     /* estimates over everything (dropped samples included) */
	uint64_t dropped_samples;  /* drop notices: samples the ring had no room for */
	double dropped_bytes, dropped_objects; /* their estimates, under the dropped frame */
	/* Samples that carried their own weight (an in-process sampler, the cooperative path),
	 * and the sampler's mean interval R those weights imply, weight = size / (1 -
	 * exp(-size/R)): the smallest and largest over the samples that can tell (0 when none
	 * could: every one much larger than R). */
	uint64_t weighted_samples;
	double sampler_rate_min, sampler_rate_max;
};

/* sample_rate: the mean sampling interval R. The symbolizer resolves each new stack while its
 * process is alive (so libraries loaded later are found); it must outlive the profile. */
int alloc_profile__new(uint64_t sample_rate, struct symbolizer *symbolizer,
		       struct alloc_profile **out);
void alloc_profile__free(struct alloc_profile *profile);

/* Weights the sample by 1/p, p = 1 - exp(-size/R) (or by the weight it carries, for the
 * cooperative path's samples), and adds it to its stack, built from the kernel's
 * frame-pointer walk and the caller read at *sp. 0 or -ENOMEM. */
int alloc_profile__add(struct alloc_profile *profile, const struct alloc_sample *sample);

/* Reads pid's executable now, while it lives: a short command may exit before its samples are
 * aggregated, and a stack whose allocator sits in the executable (a static glibc, Rust's
 * _rjem_*) is told apart by it. Best effort. */
void alloc_profile__note_process(struct alloc_profile *profile, uint32_t pid);

/* The same for a stack unwound elsewhere: frames leaf first (frames[0] in the allocator,
 * frames[1] the return address into its caller, ...). At most UNWIND_MAX_FRAMES
 * frames are kept. */
int alloc_profile__add_stack(struct alloc_profile *profile, uint32_t pid, const uint64_t *frames,
			     size_t n_frames, uint64_t size);
/* A sample whose stack was unwound elsewhere (frames as for alloc_profile__add_stack),
 * weighted like alloc_profile__add. */
int alloc_profile__add_unwound(struct alloc_profile *profile, const struct alloc_sample *sample,
			       const uint64_t *frames, size_t n_frames);
/* The same with the weight given: a cooperative in-process sampler (the otel_memory:alloc
 * USDT) samples at its own rate and reports the bytes each sample stands for, size / p. The
 * sample counts weighted_bytes towards alloc_space and weighted_bytes / size objects. */
int alloc_profile__add_weighted_stack(struct alloc_profile *profile, uint32_t pid,
				      const uint64_t *frames, size_t n_frames, uint64_t size,
				      double weighted_bytes);

/* Exact counts, not samples (`allocscope count`): objects allocations of bytes in total made
 * at the stack (frames as for alloc_profile__add_stack), weight 1. 0 or -ENOMEM. */
int alloc_profile__add_counted(struct alloc_profile *profile, uint32_t pid, const uint64_t *frames,
			       size_t n_frames, uint64_t objects, uint64_t bytes);

/* The function name under which the weight of samples the ring buffer had no room for is
 * kept: the program sent a drop notice (pid, size, weight) instead of the sample. In the pprof
 * it sits under the process's root frames down to main when every stack of the process kept
 * goes through the same main frame, else at the root. */
#define ALLOC_PROFILE_DROPPED_FRAME "[dropped samples]"

/* A drop notice (sample->flags has ALLOC_SAMPLE_DROPPED): weighted exactly as a kept sample
 * of its size (and weighted_bytes) would be, and kept under ALLOC_PROFILE_DROPPED_FRAME.
 * 0 or -ENOMEM. */
int alloc_profile__add_dropped(struct alloc_profile *profile, const struct alloc_sample *sample);

/* The root frame of a stack cut at the walk's depth limit (UNWIND_MAX_FRAMES frames; 127
 * with the kernel's frame-pointer walk): its innermost frames are kept, and the frames
 * between the outermost kept one and main are missing, so flame graphs show the cut stacks
 * together under this name rather than as if they started there. */
#define ALLOC_PROFILE_TRUNCATED_FRAME "[truncated]"

/* A sample whose stack (frames as for alloc_profile__add_stack, at most UNWIND_MAX_FRAMES)
 * was cut at the depth limit: weighted like alloc_profile__add_unwound, its stack ends in
 * ALLOC_PROFILE_TRUNCATED_FRAME. 0 or -ENOMEM. */
int alloc_profile__add_depth_cut(struct alloc_profile *profile, const struct alloc_sample *sample,
				 const uint64_t *frames, size_t n_frames);

/* Whether the kernel's frame-pointer walk (sample->stack, --unwind fp) filled its
 * ALLOC_MAX_STACK_DEPTH frames: the stack went deeper (or was exactly that deep). */
bool alloc_profile_fp_walk_full(const struct alloc_sample *sample);

/* The stack alloc_profile__add builds from sample (the kernel's frame-pointer walk and the
 * caller read at *sp), leaf first, into frames (room for ALLOC_MAX_STACK_DEPTH + 1): for a
 * caller that checks the frames before adding them with alloc_profile__add_unwound. */
size_t alloc_profile_fp_frames(const struct alloc_sample *sample, uint64_t *frames);

void alloc_profile__totals(const struct alloc_profile *profile, struct alloc_profile_totals *out);

/* Sample labels (strings) from a request context for the stacks added next, until the next
 * call (n_labels 0: none): stacks with different labels stay different samples in the pprof,
 * each carrying its labels, so `go tool pprof -tagfocus endpoint=...` slices by them. Labels
 * are copied; at most 16 are kept. 0, -EINVAL (a label without key or string) or -ENOMEM
 * (then the stacks added next carry none). */
int alloc_profile__use_labels(struct alloc_profile *profile, const struct pprof_label *labels,
			      size_t n_labels);
/* Calls fn for each distinct request-context label set the profile's stacks carry (not the
 * empty one), with the alloc_space plus inuse_space of those stacks; stops at the first
 * non-zero fn returns, and returns it (else 0). */
typedef int (*alloc_profile_label_set_fn)(const struct pprof_label *labels, size_t n,
					  double bytes, void *ctx);
int alloc_profile__for_each_label_set(struct alloc_profile *profile,
				      alloc_profile_label_set_fn fn, void *ctx);

/* Overhead budget: the samples added from now on stand for scale times their weight (1/f for a
 * process probed a fraction f of the time); 1 again for everything else. */
void alloc_profile__set_scale(struct alloc_profile *profile, double scale);

/* Functions whose whole name (readable or linkage) matches regex, a POSIX extended regular
 * expression, are wrappers: top_sites looks through them as through the built-in ones
 * (zmalloc, g_malloc, xmalloc, ...). -EINVAL with a message in err when it does not compile. */
int alloc_profile__set_skip_frames(struct alloc_profile *profile, const char *regex, char *err,
				   size_t err_len);
/* Whether regex would be accepted by alloc_profile__set_skip_frames (for the command line). */
int alloc_profile_check_skip_frames(const char *regex, char *err, size_t err_len);

/* The allocation sites (the first function outside the allocator and the known and
 * configured wrappers) by alloc_space, largest first.
 * Fills up to max; *count gets how many were filled. Pointers live until the next call. */
int alloc_profile__top_sites(struct alloc_profile *profile, struct alloc_site *out, size_t max,
			     size_t *count);

/* The function name of the one sample that stands for the stacks a size limit left out. */
#define ALLOC_PROFILE_TRIMMED_FRAME "(trimmed)"

/* What an encoding wrote (alloc_profile_output.result). */
struct alloc_profile_result {
	size_t samples;        /* in the profile, the trimmed one included */
	size_t stacks_merged;  /* (pid, stack) pairs that joined another process's same stack */
	size_t stacks_trimmed; /* distinct stacks folded into ALLOC_PROFILE_TRIMMED_FRAME */
};

/* How a profile is rendered. labels go on every sample (the continuous agent's service_name,
 * hostname and static labels); pid_label adds a numeric pid label per sample.
 *
 * A push sink's shape: merge_processes makes one sample per distinct stack over all the
 * processes (frames compared by file and offset, so ASLR does not split them; pid_label is
 * then ignored). max_samples and max_bytes (the uncompressed encoding) bound the profile:
 * past them the coldest stacks (least alloc_space) are folded into one sample whose only
 * frame is ALLOC_PROFILE_TRIMMED_FRAME, so the totals stay whole; 0 means no limit. A
 * profile whose mappings alone exceed max_bytes is still returned (the trimmed sample only):
 * the sink's own size check has the last word. */
/* Which values a profile with in-use carries (alloc_profile_output.values). */
enum alloc_profile_values {
	ALLOC_PROFILE_VALUES_ALL,   /* every type the profile has (Go's heap layout with in-use) */
	ALLOC_PROFILE_VALUES_ALLOC, /* alloc_objects, alloc_space only: the interval's delta */
	ALLOC_PROFILE_VALUES_INUSE, /* inuse_objects, inuse_space only, as a snapshot: duration 0
				       and the time of the interval's end (a server such as Parca
				       takes a profile with a duration for a delta) */
};

struct alloc_profile_output {
	int64_t start_ns;                 /* wall-clock start */
	int64_t duration_ns;
	const char *const *comments;      /* NULL-terminated lines for `pprof -comments`, or NULL */
	const struct pprof_label *labels; /* may be NULL */
	size_t n_labels;
	bool pid_label;
	bool merge_processes;
	size_t max_samples;               /* >= 2 when set */
	uint64_t max_bytes;
	struct alloc_profile_result *result; /* may be NULL */
	enum alloc_profile_values values;    /* ALL unless a sink wants in-use apart */
	/* Only the stacks whose request-context labels (alloc_profile__use_labels; n 0: none,
	 * as for dropped samples' weight) select accepts; NULL: every stack. A push sink sends
	 * each label set as a series of its own (alloc_profile__for_each_label_set). */
	bool (*select)(const struct pprof_label *labels, size_t n, void *ctx);
	void *select_ctx;
};

/* Writes the gzipped pprof atomically. Returns 0 or -errno. */
int alloc_profile__write_pprof(struct alloc_profile *profile, const char *path,
			       const struct alloc_profile_output *output);
/* The gzipped pprof in memory; the caller frees *data. Returns 0 or -errno. */
int alloc_profile__encode_pprof(struct alloc_profile *profile,
				const struct alloc_profile_output *output, uint8_t **data,
				size_t *len);

/* What a site looks through, for readers of a written profile (allocscope report): a function
 * of the allocator (by linkage name when there is one), or one of the built-in wrappers
 * (zmalloc, g_malloc, Rust's liballoc, ...). */
bool alloc_profile_is_allocator_function(const char *function, const char *system_name);
bool alloc_profile_is_wrapper_function(const char *function, const char *system_name);
/* In-use (live heap) profiles, Go's heap-profile semantics: inuse_objects/count and
 * inuse_space/bytes next to alloc_*, the estimated live memory at the last snapshot,
 * attributed to the allocating stack with the allocation's own weight. Enable before adding
 * samples: each sample added is remembered by (pid, time_ns) until a snapshot no longer finds
 * it live. 0 or -ENOMEM. */
int alloc_profile__enable_inuse(struct alloc_profile *profile);
bool alloc_profile__has_inuse(const struct alloc_profile *profile);
/* A snapshot: begin (now_ns, CLOCK_MONOTONIC) clears the in-use values, add takes each live
 * entry (struct alloc_live of bpf/alloc.h: the sample's time_ns, size and weight; weight 0 =
 * the kernel path's own rate), end forgets the samples not found live and records overflow
 * (the live map's cumulative overflow count). add returns 0 or -ENOMEM. */
void alloc_profile__inuse_begin(struct alloc_profile *profile, uint64_t now_ns);
int alloc_profile__inuse_add(struct alloc_profile *profile, uint32_t pid, uint64_t time_ns,
			     uint64_t size, uint64_t weighted_bytes);
void alloc_profile__inuse_end(struct alloc_profile *profile, uint64_t overflow);
void alloc_profile__inuse_totals(const struct alloc_profile *profile,
				 struct alloc_profile_inuse *out);
/* The allocation sites as alloc_profile__top_sites gives them, by inuse_space, largest first
 * (sites with nothing live left out). */
int alloc_profile__top_live_sites(struct alloc_profile *profile, struct alloc_site *out,
				  size_t max, size_t *count);

/* The continuous agent's intervals: in-use is a snapshot, not a delta, so the next
 * interval's profile starts with the stacks of the samples the last snapshot found live
 * (their alloc_* values 0, their live references kept). next_out: a new profile with from's
 * rate, symbolizer and in-use on, or NULL when nothing was live. 0 or -ENOMEM. */
int alloc_profile__carry_live(const struct alloc_profile *from,
			      struct alloc_profile **next_out);

/* Distinct processes whose samples this profile holds. */
size_t alloc_profile__process_count(const struct alloc_profile *profile);

/* ---- labels (issue 15) ---------------------------------------------------------------- */

/* At most this many labels per process (alloc_profile__label_process). */
#define ALLOC_PROFILE_MAX_PROCESS_LABELS 4

/* A label every sample of pid carries when processes are kept apart (not with
 * merge_processes, where the caller's series labels say it): the one-off capture's
 * service_version. Setting a key again replaces its value. 0, -ENOSPC past
 * ALLOC_PROFILE_MAX_PROCESS_LABELS, or -ENOMEM. */
int alloc_profile__label_process(struct alloc_profile *profile, uint32_t pid, const char *key,
				 const char *value);

/* Gives the profile the limiter its per-sample labels go through (profile/label_limits.h),
 * freed with the profile; NULL: none. One limiter per profile is one per service per
 * interval. */
void alloc_profile__set_label_limits(struct alloc_profile *profile, struct label_limits *limits);

/* Every per-sample label (request context read with the sample) goes through here before it
 * is stored: 1 with the label to store (*key_out, *value_out live as long as the profile), 0
 * when it is left out, -ENOMEM. Without a limiter every label is left out (counted nowhere):
 * the profile cannot bound what it would keep. */
int alloc_profile__admit_label(struct alloc_profile *profile, const char *key, const char *value,
			       const char **key_out, const char **value_out);

/* The top table grouped by a label's value: groups by alloc_space, largest first, each with
 * its largest per_group sites (group, group_bytes and group_objects set). Fills up to max
 * rows; *count gets how many. Pointers live until the next top_sites call. A sample's value
 * is its own label (its request context, alloc_profile__use_labels), else its process's
 * (alloc_profile__label_process); samples without the label (dropped samples' weight among
 * them) form the group "". 0 or -ENOMEM. */
int alloc_profile__top_sites_by_label(struct alloc_profile *profile, const char *key,
				      size_t per_group, struct alloc_site *out, size_t max,
				      size_t *count);

#endif
