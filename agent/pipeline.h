/* The sampling pipeline that both the one-off capture (capture.c) and the continuous agent
 * (daemon.c) run: the loaded BPF program, the reader that drains its sample ring, the
 * unwinder (none with unwind fp), the symbolizer, and the one way a sample becomes a stack in
 * a profile. One open, one add-sample, one close.
 *
 * struct sampling_opts is the one set of sampling settings; the capture's options and the
 * agent's configuration both embed it. Its defaults and ranges live in one place, the
 * configuration key table (config/config.c), which serves the command line and the YAML file
 * alike. The sample rate reaches the BPF program and every profile's weighting from the same
 * field: profiles are made with pipeline__new_profile, never with a rate of their own. */
#ifndef ALLOCSCOPE_PIPELINE_H
#define ALLOCSCOPE_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "symbolize/unwind.h"

struct alloc_program;
struct alloc_profile;
struct label_limits_config;
struct label_limits_stats;
struct alloc_sample;
struct symbolizer;

struct sampling_opts {
	uint64_t sample_rate;       /* sampling.rate, --sample-rate: mean bytes between samples */
	enum unwind_mode unwind;    /* sampling.unwind, --unwind: how stacks are walked */
	uint32_t stack_copy_bytes;  /* sampling.stack_copy_size, --stack-copy-size: user stack
				       copied per sample for CFI unwinding (a power of two) */
	uint32_t ringbuf_bytes;     /* sampling.ringbuf_size, --ringbuf-size (a power of two) */
	uint32_t unwind_table_bytes; /* sampling.unwind_table_size: the kernel walk's rows, all
					processes' files together (0: the default, 16 MiB) */
	uint32_t live_entries;      /* --inuse: track live sampled allocations in a map of this
				       many entries (in-use profiles); 0: off */
	char *debuginfod_urls;      /* symbolize.debuginfod_urls, --debuginfod; NULL: the
				       DEBUGINFOD_URLS environment variable; "": none. Owned by
				       the configuration the struct sits in. */
	/* Request context (issue 15): context.enabled, context.trace_ids,
	 * context.max_record_bytes (OTel attribute bytes copied per sample). Its labels pass the
	 * profile's label limiter (sample_labels.*: keys, values, value length). */
	bool context_enabled;
	bool context_trace_ids;
	uint32_t context_max_record_bytes;
};

/* Whose processes the program may sample: set when allocscope acts for a caller who is not
 * root (attach/alloc_program.h's only_caller). */
struct pipeline_caller {
	bool only_caller;
	uint32_t uid, gid;
};

/* Called for each sample drained: the caller picks the profile (or none) and hands the sample
 * to pipeline__add_sample. The return value is the reader's (0: go on). */
typedef int (*pipeline_sample_fn)(const struct alloc_sample *sample, void *ctx);

struct pipeline;

/* Loads the BPF program with opts (the caller's restrictions from caller, may be NULL), then
 * makes the symbolizer, the unwinder (unless opts->unwind is UNWIND_FP) and the sample reader,
 * which hands each drained sample to on_sample(sample, ctx). opts is copied (the debuginfod
 * string is used only here). Returns 0, or -errno with a sentence for the user in err. */
int pipeline__open(const struct sampling_opts *opts, const struct pipeline_caller *caller,
		   pipeline_sample_fn on_sample, void *ctx, struct pipeline **out, char *err,
		   size_t err_len);
/* Frees the reader, the unwinder, the symbolizer and the program, in that order. Profiles made
 * with pipeline__new_profile must be freed first. Accepts NULL. */
void pipeline__close(struct pipeline *p);

/* A new, empty profile weighted at the pipeline's sample rate, resolving through its
 * symbolizer. 0 or -ENOMEM. */
int pipeline__new_profile(struct pipeline *p, struct alloc_profile **out);

/* Unwinds the sample's copied stack (with an unwinder), falling back to the allocator's saved
 * return address when the walk cannot get past the allocator, and adds the stack to profile.
 * A drop notice (ALLOC_SAMPLE_DROPPED) adds its weight under ALLOC_PROFILE_DROPPED_FRAME.
 * 0, or -errno (out of memory) when the profile could not take it. */
int pipeline__add_sample(struct pipeline *p, struct alloc_profile *profile,
			 const struct alloc_sample *sample);

/* Drains every queued sample through on_sample. Returns the number handled or -errno; a
 * failed read other than -EINTR is logged as a warning. */
int pipeline__drain(struct pipeline *p);

/* Snapshots pid's memory map in the symbolizer and the unwinder, so its samples still resolve
 * after it exits. 0 or -errno (-ESRCH: it is gone). */
int pipeline__add_process(struct pipeline *p, pid_t pid);
/* Builds the kernel unwind tables of the files the command exe will map (its executable and
 * the libraries its loader will load), before it execs: its first samples are then walked in
 * the kernel, not sent with a stack copy. Without kernel tables, or when the files cannot be
 * listed, it does nothing (the tables come when the process is added). */
void pipeline__prepare_command(struct pipeline *p, const char *exe);
/* Forgets what pipeline__add_process kept for pid. */
void pipeline__remove_process(struct pipeline *p, pid_t pid);

/* Bounds for the per-sample labels of the profiles made from now on (issue 15): each gets a
 * limiter of its own (profile/label_limits.h) with config, counting into stats (the caller's,
 * alive as long as the pipeline). config is copied. 0, -EINVAL (config out of range; the
 * previous bounds stay), or -ENOMEM. */
int pipeline__set_label_limits(struct pipeline *p, const struct label_limits_config *config,
			       struct label_limits_stats *stats);

const struct sampling_opts *pipeline__opts(const struct pipeline *p);
struct alloc_program *pipeline__program(const struct pipeline *p);
struct symbolizer *pipeline__symbolizer(const struct pipeline *p);
/* The sample ring's descriptor, readable when the program wants an early drain. */
int pipeline__fd(const struct pipeline *p);
/* Records the reader found malformed; stack walks that stopped early (frames kept), those cut
 * at the depth limit left out. */
uint64_t pipeline__malformed(const struct pipeline *p);
uint64_t pipeline__truncated_unwinds(const struct pipeline *p);
/* Stacks cut at the walk's depth limit (UNWIND_MAX_FRAMES; ALLOC_MAX_STACK_DEPTH with unwind
 * fp): innermost frames kept under ALLOC_PROFILE_TRUNCATED_FRAME. */
uint64_t pipeline__depth_cut_unwinds(const struct pipeline *p);
/* Sample records read from the ring and their bytes (sample_reader__record_stats). */
void pipeline__record_stats(const struct pipeline *p, uint64_t *records, uint64_t *bytes);

#endif
