/* Exact allocation counting of a command (`allocscope count`, `allocscope gate`): runs it with
 * liballocscope-count.so preloaded and a private directory (count_run.c) the library writes each
 * process's counts into at exit, then reads those files, symbolizes their stacks from the maps
 * each process saved, and builds a profile with exact counts (weight 1), the sites as the top
 * table names them, and per-function inclusive totals. Needs no privileges. */
#ifndef ALLOCSCOPE_COUNT_COUNT_RUN_H
#define ALLOCSCOPE_COUNT_COUNT_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "count/budget.h"

struct alloc_profile;
struct symbolizer;

struct count_opts {
	char **command;		 /* argv, NULL-terminated */
	const char *library;	 /* liballocscope-count.so; NULL: count_find_library */
	const char *skip_frames; /* --skip-frames for the site names, or NULL */
	bool no_aslr;		 /* run the command with address randomisation off */
};

struct count_result {
	int exit_status;	/* the command's: its exit code, or 128 + signal */
	bool command_failed;	/* exit status not 0 */
	size_t processes;	/* count files read (one per process that exited normally) */
	uint64_t objects, bytes; /* everything counted, unattributed included */
	uint64_t unattributed_objects, unattributed_bytes; /* the table was full */
	struct budget_measure *sites; /* by objects, most first */
	size_t n_sites;
	struct budget_measure *functions; /* inclusive, by objects, most first */
	size_t n_functions;
	struct alloc_profile *profile; /* holds the stacks; resolves through symbolizer */
	struct symbolizer *symbolizer;
};

/* The counting library: $ALLOCSCOPE_COUNT_LIB, else liballocscope-count.so next to this
 * executable, else in ../lib from it. 0 with the path in out, or -ENOENT with a sentence. */
int count_find_library(char *out, size_t len, char *err, size_t err_len);

/* Runs the command and counts. A command that fails still gives its counts (exit_status says
 * how it ended). -errno with a sentence in err when the command could not be started or the
 * counts not read. */
int count_run(const struct count_opts *opts, struct count_result **out, char *err,
	      size_t err_len);
void count_result__free(struct count_result *r);

/* The measurements a budget is compared with (pointers into r). */
void count_result__measurements(const struct count_result *r, struct budget_measurements *m);

#endif
