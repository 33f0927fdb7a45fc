/* Sampled allocations aggregated per (process, stack), unbiased as they arrive, and turned
 * into a pprof allocation profile (alloc_objects/count, alloc_space/bytes) and a top table of
 * allocation sites. */
#ifndef ALLOCSCOPE_ALLOC_PROFILE_H
#define ALLOCSCOPE_ALLOC_PROFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alloc.h"

struct alloc_profile;
struct pprof_label;
struct symbolizer;

struct alloc_site {
	const char *function;  /* owned by the profile; a hex address when unnamed */
	double bytes;          /* alloc_space estimate */
	double objects;        /* alloc_objects estimate */
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

/* The function name under which the weight of samples the ring buffer had no room for is
 * kept: the program sent a drop notice (pid, size, weight) instead of the sample. In the pprof
 * it sits under the process's root frames down to main when every stack of the process kept
 * goes through the same main frame, else at the root. */
#define ALLOC_PROFILE_DROPPED_FRAME "[dropped samples]"

/* A drop notice (sample->flags has ALLOC_SAMPLE_DROPPED): weighted exactly as a kept sample
 * of its size (and weighted_bytes) would be, and kept under ALLOC_PROFILE_DROPPED_FRAME.
 * 0 or -ENOMEM. */
int alloc_profile__add_dropped(struct alloc_profile *profile, const struct alloc_sample *sample);

void alloc_profile__totals(const struct alloc_profile *profile, struct alloc_profile_totals *out);

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
};

/* Writes the gzipped pprof atomically. Returns 0 or -errno. */
int alloc_profile__write_pprof(struct alloc_profile *profile, const char *path,
			       const struct alloc_profile_output *output);
/* The gzipped pprof in memory; the caller frees *data. Returns 0 or -errno. */
int alloc_profile__encode_pprof(struct alloc_profile *profile,
				const struct alloc_profile_output *output, uint8_t **data,
				size_t *len);

/* Distinct processes whose samples this profile holds. */
size_t alloc_profile__process_count(const struct alloc_profile *profile);

#endif
