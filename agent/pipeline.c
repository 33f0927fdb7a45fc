/* The sampling pipeline shared by the capture and the agent (see pipeline.h): what both used
 * to assemble for themselves, in one place, so a sample is unwound, given its fallback frame
 * and weighted the same way whichever mode took it, and the sample rate the BPF program
 * samples at is the rate every profile weights by. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "pipeline.h"
#include "attach/alloc_program.h"
#include "attach/linked_files.h"
#include "collect/request_context.h"
#include "collect/sample_reader.h"
#include "profile/alloc_profile.h"
#include "profile/label_limits.h"
#include "symbolize/symbolizer.h"

struct pipeline {
	struct sampling_opts opts; /* debuginfod_urls not kept: used at open only */
	struct alloc_program *program;
	struct symbolizer *symbolizer;
	struct unwinder *unwinder; /* NULL with unwind fp */
	struct sample_reader *reader;
	uint64_t truncated_unwinds; /* stopped early, the depth cuts left out */
	uint64_t depth_cut_unwinds; /* cut at the walk's depth limit */
	struct request_contexts *contexts;
	bool kernel_tables; /* the kernel walks stacks where it has a table */
	/* issue 15: the per-sample label bounds new profiles get; unset: no limiter */
	bool has_label_limits;
	struct label_limits_config label_limits; /* keys owned */
	struct label_limits_stats *label_stats;
};

static void free_label_keys(struct label_limits_config *config)
{
	for (size_t i = 0; i < config->n_keys; i++)
		free(config->keys[i]);
	free(config->keys);
	config->keys = NULL;
	config->n_keys = 0;
}

/* Whether the kernel walks stacks: always with --unwind kernel; with auto wherever the tables
 * could be set up (the program loaded with the walk and the rows array could be mapped). */
static bool wants_kernel_walk(enum unwind_mode mode)
{
	return mode == UNWIND_KERNEL || mode == UNWIND_AUTO;
}

int pipeline__open(const struct sampling_opts *opts, const struct pipeline_caller *caller,
		   pipeline_sample_fn on_sample, void *ctx, struct pipeline **out, char *err,
		   size_t err_len)
{
	/* With frame pointers only, the kernel walks the stack and no stack is copied. */
	struct alloc_program_opts program_opts = {
		.sample_rate = opts->sample_rate,
		.ringbuf_bytes = opts->ringbuf_bytes,
		.walk_frame_pointers = opts->unwind == UNWIND_FP,
		.stack_copy_bytes = opts->unwind == UNWIND_FP ? 0 : opts->stack_copy_bytes,
		.kernel_unwind = wants_kernel_walk(opts->unwind),
		.read_context = opts->context_enabled,
		.context_max_bytes = opts->context_max_record_bytes,
		.unwind_table_rows = opts->unwind_table_bytes / sizeof(struct unwind_row),
		.live_entries = opts->live_entries,
	};
	struct pipeline *p;
	int ret;

	*out = NULL;
	if (caller) {
		program_opts.only_caller = caller->only_caller;
		program_opts.caller_uid = caller->uid;
		program_opts.caller_gid = caller->gid;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		snprintf(err, err_len, "cannot set up sampling: out of memory");
		return -ENOMEM;
	}
	p->opts = *opts;
	p->opts.debuginfod_urls = NULL;
	ret = alloc_program__load(&program_opts, &p->program, err, err_len);
	if (ret && program_opts.kernel_unwind && opts->unwind == UNWIND_AUTO) {
		/* auto: a kernel that cannot run the walk (no bpf_find_vma, Linux < 5.17) still
		 * samples, with stack copies unwound here. */
		log_info("the kernel cannot walk stacks (%s): copying stacks for unwinding instead",
			 err);
		program_opts.kernel_unwind = false;
		ret = alloc_program__load(&program_opts, &p->program, err, err_len);
	}
	if (ret)
		goto fail;
	p->kernel_tables = program_opts.kernel_unwind;
	ret = -ENOMEM;
	p->symbolizer = symbolizer__new();
	if (!p->symbolizer) {
		snprintf(err, err_len, "cannot set up the symbolizer: out of memory");
		goto fail;
	}
	if (opts->debuginfod_urls &&
	    symbolizer__set_debuginfod(p->symbolizer, opts->debuginfod_urls, 0) != 0) {
		snprintf(err, err_len, "cannot use the debuginfod servers '%s': out of memory",
			 opts->debuginfod_urls);
		goto fail;
	}
	if (opts->unwind != UNWIND_FP) {
		ret = unwinder__new(&p->unwinder);
		if (ret) {
			snprintf(err, err_len, "cannot set up the unwinder: out of memory");
			goto fail;
		}
	}
	/* The unwinder fills the program's tables for each process and file it meets. */
	if (p->kernel_tables) {
		ret = unwinder__use_kernel_tables(p->unwinder,
						  alloc_program__unwind_rows_fd(p->program),
						  alloc_program__unwind_procs_fd(p->program),
						  alloc_program__unwind_files_fd(p->program),
						  alloc_program__unwind_table_rows(p->program), err,
						  err_len);
		if (ret)
			goto fail;
	}
	ret = sample_reader__new(alloc_program__ringbuf_fd(p->program),
				 alloc_program__drop_ringbuf_fd(p->program), on_sample, ctx,
				 &p->reader);
	if (ret) {
		snprintf(err, err_len, "cannot set up the sample reader: %s", strerror(-ret));
		goto fail;
	}
	{
		struct request_context_opts context_opts = {
			.enabled = opts->context_enabled,
			.labels = { .trace_ids = opts->context_trace_ids,
				    .max_value_bytes = CONTEXT_LABELS_MAX_VALUE_BYTES },
		};

		ret = request_contexts__new(p->program, &context_opts, &p->contexts);
		if (ret) {
			snprintf(err, err_len, "cannot set up request contexts: out of memory");
			goto fail;
		}
	}
	*out = p;
	return 0;
fail:
	pipeline__close(p);
	return ret;
}

void pipeline__close(struct pipeline *p)
{
	if (!p)
		return;
	sample_reader__free(p->reader);
	request_contexts__free(p->contexts);
	unwinder__free(p->unwinder);
	symbolizer__free(p->symbolizer);
	alloc_program__free(p->program);
	free_label_keys(&p->label_limits);
	free(p);
}

int pipeline__new_profile(struct pipeline *p, struct alloc_profile **out)
{
	struct label_limits *limits;
	int ret = alloc_profile__new(p->opts.sample_rate, p->symbolizer, out);

	if (ret || !p->has_label_limits)
		return ret;
	ret = label_limits__new(&p->label_limits, p->label_stats, &limits);
	if (ret) {
		alloc_profile__free(*out);
		*out = NULL;
		return ret;
	}
	alloc_profile__set_label_limits(*out, limits);
	return 0;
}

int pipeline__set_label_limits(struct pipeline *p, const struct label_limits_config *config,
			       struct label_limits_stats *stats)
{
	struct label_limits_config copy = *config;
	struct label_limits *check;
	int ret;

	/* Refused here, not at the first profile. */
	ret = label_limits__new(config, NULL, &check);
	if (ret)
		return ret;
	label_limits__free(check);
	copy.keys = config->n_keys ? calloc(config->n_keys, sizeof(*copy.keys)) : NULL;
	if (config->n_keys && !copy.keys)
		return -ENOMEM;
	for (size_t i = 0; i < config->n_keys; i++) {
		copy.keys[i] = strdup(config->keys[i]);
		if (!copy.keys[i]) {
			free_label_keys(&copy);
			return -ENOMEM;
		}
	}
	free_label_keys(&p->label_limits);
	p->label_limits = copy;
	p->label_stats = stats;
	p->has_label_limits = true;
	return 0;
}

static int add_sample(struct pipeline *p, struct alloc_profile *profile,
		      const struct alloc_sample *sample);

/* The sample's request context becomes the labels of the stack it adds. Its attributes pass
 * the profile's label limiter (sample_labels.*: the keys kept, values past max_values as
 * "other", values cut, each counted for /metrics); trace_id and span_id, asked for with
 * context.trace_ids to link a span to its profile, are kept whole. */
int pipeline__add_sample(struct pipeline *p, struct alloc_profile *profile,
			 const struct alloc_sample *sample)
{
	struct pprof_label admitted[CONTEXT_LABELS_MAX];
	struct context_labels labels;
	size_t n = 0;
	int ret;

	if (sample->flags & ALLOC_SAMPLE_DROPPED || !p->contexts)
		return add_sample(p, profile, sample);
	request_contexts__labels(p->contexts, sample, &labels);
	for (size_t i = 0; i < labels.count; i++) {
		const char *key, *value;

		if (i < labels.n_ids) {
			admitted[n++] = labels.labels[i];
			continue;
		}
		/* Left out (0), or out of memory: the sample still counts, without it. */
		if (alloc_profile__admit_label(profile, labels.labels[i].key, labels.labels[i].str,
					       &key, &value) == 1)
			admitted[n++] = (struct pprof_label){ .key = key, .str = value };
	}
	if (!n)
		return add_sample(p, profile, sample);
	ret = alloc_profile__use_labels(profile, admitted, n);
	if (ret == 0)
		ret = add_sample(p, profile, sample);
	alloc_profile__use_labels(profile, NULL, 0);
	return ret;
}

/* Ends the stack before its first return address that is not in code (symbolizer__is_code:
 * the stack, the heap, no mapping, the trampoline a return probe left where the address was):
 * from there on the frames are garbage. *cut says whether it cut; *n is then the frames kept.
 * 0 or -ENOMEM. */
static int cut_at_non_code(struct pipeline *p, pid_t pid, const uint64_t *pcs, size_t *n, bool *cut)
{
	int ret;

	*cut = false;
	for (size_t i = 1; i < *n; i++) {
		ret = symbolizer__is_code(p->symbolizer, pid, pcs[i]);
		if (ret < 0)
			return ret;
		if (ret == 0) {
			*n = i;
			*cut = true;
			break;
		}
	}
	return 0;
}

/* --unwind fp: the kernel's frame-pointer walk and the caller at *sp, as they came, up to a
 * return address that is not in code. */
static int add_fp_sample(struct pipeline *p, struct alloc_profile *profile,
			 const struct alloc_sample *sample)
{
	uint64_t frames[ALLOC_MAX_STACK_DEPTH + 1];
	size_t n = alloc_profile_fp_frames(sample, frames);
	bool cut;
	int ret;

	ret = cut_at_non_code(p, (pid_t)sample->pid, frames, &n, &cut);
	if (ret)
		return ret;
	if (cut) {
		p->truncated_unwinds++;
		return alloc_profile__add_unwound(profile, sample, frames, n);
	}
	if (alloc_profile_fp_walk_full(sample)) {
		p->depth_cut_unwinds++;
		return alloc_profile__add_depth_cut(profile, sample, frames, n);
	}
	return alloc_profile__add_unwound(profile, sample, frames, n);
}

static int add_sample(struct pipeline *p, struct alloc_profile *profile,
		      const struct alloc_sample *sample)
{
	uint64_t pcs[UNWIND_MAX_PCS];
	size_t n_pcs;
	bool cut;
	struct unwind_input input = {
		.pid = (pid_t)sample->pid,
		.tid = (pid_t)sample->tid,
		.regs = (const uint64_t *)sample->regs,
		.stack = sample->stack_copy,
		.stack_len = sample->stack_copy_bytes,
		.flags = sample->flags,
	};
	struct unwind_result result = { 0 };
	int ret;

	/* A drop notice: its weight, under [dropped samples], weighted as a kept sample. */
	if (sample->flags & ALLOC_SAMPLE_DROPPED)
		return alloc_profile__add_dropped(profile, sample);
	if (!p->unwinder)
		return add_fp_sample(p, profile, sample);
	ret = unwinder__unwind(p->unwinder, &input, p->opts.unwind, pcs,
			       sizeof(pcs) / sizeof(pcs[0]), &result);
	if (ret)
		return ret;
	n_pcs = result.n_pcs;
	ret = cut_at_non_code(p, input.pid, pcs, &n_pcs, &cut);
	if (ret)
		return ret;
	if (cut) {
		result.n_pcs = n_pcs;
		result.truncated = true;
		result.depth_cut = false;
	}
	/* A walk that cannot get past the allocator still has the direct caller the program
	 * read at *sp, when that is in code. */
	if (result.n_pcs < 2 && sample->caller_address) {
		pcs[0] = sample->regs[ALLOC_REG_IP];
		pcs[1] = sample->caller_address;
		n_pcs = 2;
		ret = cut_at_non_code(p, input.pid, pcs, &n_pcs, &cut);
		if (ret)
			return ret;
		result.n_pcs = n_pcs;
	}
	if (result.depth_cut) {
		p->depth_cut_unwinds++;
		return alloc_profile__add_depth_cut(profile, sample, pcs, result.n_pcs);
	}
	p->truncated_unwinds += result.truncated;
	return alloc_profile__add_unwound(profile, sample, pcs, result.n_pcs);
}

int pipeline__drain(struct pipeline *p)
{
	int n;

	request_contexts__refresh(p->contexts);
	n = sample_reader__drain(p->reader);

	if (n < 0 && n != -EINTR)
		log_warn("reading samples failed: %s", strerror(-n));
	return n;
}

int pipeline__add_process(struct pipeline *p, pid_t pid)
{
	int ret = symbolizer__add_process(p->symbolizer, pid);

	if (ret == 0 && p->unwinder)
		ret = unwinder__add_process(p->unwinder, pid);
	if (ret == 0)
		request_contexts__add(p->contexts, pid);
	return ret;
}

void pipeline__prepare_command(struct pipeline *p, const char *exe)
{
	struct linked_files files;
	size_t i, built = 0;

	if (!p->kernel_tables || linked_files__list(exe, &files) != 0)
		return;
	for (i = 0; i < files.count; i++) {
		int ret = unwinder__prepare_file(p->unwinder, files.paths[i]);

		if (ret == 0)
			built++;
		else
			log_debug("no kernel unwind table for %s before it runs: %s (its samples "
				  "carry a stack copy)",
				  files.paths[i], strerror(-ret));
	}
	log_debug("kernel unwind tables for %zu of the %zu files %s will map", built, files.count,
		  exe);
	linked_files__free(&files);
}

void pipeline__remove_process(struct pipeline *p, pid_t pid)
{
	symbolizer__remove_process(p->symbolizer, pid);
	request_contexts__remove(p->contexts, pid);
	if (p->unwinder)
		unwinder__remove_process(p->unwinder, pid);
}

const struct sampling_opts *pipeline__opts(const struct pipeline *p)
{
	return &p->opts;
}

struct alloc_program *pipeline__program(const struct pipeline *p)
{
	return p->program;
}

struct symbolizer *pipeline__symbolizer(const struct pipeline *p)
{
	return p->symbolizer;
}

int pipeline__fd(const struct pipeline *p)
{
	return sample_reader__fd(p->reader);
}

uint64_t pipeline__malformed(const struct pipeline *p)
{
	return sample_reader__malformed(p->reader);
}

void pipeline__record_stats(const struct pipeline *p, uint64_t *records, uint64_t *bytes)
{
	sample_reader__record_stats(p->reader, records, bytes);
}

uint64_t pipeline__truncated_unwinds(const struct pipeline *p)
{
	return p->truncated_unwinds;
}

uint64_t pipeline__depth_cut_unwinds(const struct pipeline *p)
{
	return p->depth_cut_unwinds;
}
