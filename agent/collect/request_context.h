/* Request context per target process (issue 15): where each process's threads publish it
 * (attach/context_tls), installed in the BPF program's context_procs map, and the OTel key
 * names from its process context (collect/process_context), so that a sample's context
 * becomes labels (profile/context_labels).
 *
 * Both are looked for when a process is added and again, at most every
 * REQUEST_CONTEXT_RETRY_MS for REQUEST_CONTEXT_TRIES tries, while missing: a program started
 * under `allocscope -- CMD` has not run its loader or published its process context yet when
 * it is added, and a library that publishes may be loaded later. */
#ifndef ALLOCSCOPE_REQUEST_CONTEXT_H
#define ALLOCSCOPE_REQUEST_CONTEXT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "profile/context_labels.h"

#define REQUEST_CONTEXT_RETRY_MS 100
#define REQUEST_CONTEXT_TRIES 600

struct alloc_program;
struct alloc_sample;
struct request_contexts;

struct request_context_opts {
	bool enabled;              /* context.enabled */
	struct context_label_opts labels; /* context.trace_ids; values whole */
};

int request_contexts__new(struct alloc_program *prog, const struct request_context_opts *opts,
			  struct request_contexts **out);
void request_contexts__free(struct request_contexts *rc);

/* Looks pid up now (and later while something is missing); a pid added again (it exec'ed) is
 * looked up afresh. Best effort. */
void request_contexts__add(struct request_contexts *rc, pid_t pid);
void request_contexts__remove(struct request_contexts *rc, pid_t pid);
/* Retries the processes whose context is not fully known yet, when their time has come. */
void request_contexts__refresh(struct request_contexts *rc);
/* The sample's context as labels (none when disabled or absent). */
void request_contexts__labels(struct request_contexts *rc, const struct alloc_sample *sample,
			      struct context_labels *out);

#endif
