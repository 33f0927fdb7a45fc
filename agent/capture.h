/* A one-off capture: attach to running processes (--pid) or to a command started for the
 * purpose (-- CMD), sample until a duration passes, Ctrl-C/SIGTERM, or every target exits,
 * then write one pprof profile and print a summary with a top table of allocation sites. */
#ifndef ALLOCSCOPE_CAPTURE_H
#define ALLOCSCOPE_CAPTURE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pipeline.h"

#define CAPTURE_MAX_PIDS 64

struct capture_opts {
	pid_t pids[CAPTURE_MAX_PIDS];
	size_t n_pids;
	char **command;          /* argv of the command to run, NULL-terminated; or NULL */
	uint64_t duration_ms;    /* 0: until interrupted or every target has exited */
	struct sampling_opts sampling; /* the configuration's sampling keys, set by flags */
	const char *output;      /* NULL: alloc-<pid>-<UTC time>.pb.gz in the current directory */
	unsigned top;            /* rows in the summary's top table */
	const char *skip_frames; /* --skip-frames: wrappers the top table looks through, or NULL */
	/* issue 15 */
	const char *group_by;    /* --group-by: the label the top table is grouped by, or NULL */
	const struct label_limits_config *sample_labels; /* the configuration's sample_labels.*
							    bounds; NULL: none kept */
	bool inuse;              /* --inuse: in-use profile types and the leak table */
	double max_overhead_percent; /* --max-overhead: the overhead budget (percent of each
					target's own CPU time); <= 0 for none */
};

/* Runs the capture and returns the process exit status: 0 on success, 1 when the capture
 * failed; with a command, the command's own exit status (128 + signal if killed). */
int capture_run(const struct capture_opts *opts);

#endif
