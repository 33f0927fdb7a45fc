/* `allocscope diff BASE NEW`: what started, stopped, grew or shrank allocating between two
 * pprof profiles, by allocation site or by function (cumulative), in absolute values and
 * relative to the base, optionally normalized per second of each profile's duration or as a
 * share of each profile's total; biggest regressions first. --fail-above PERCENT makes the
 * exit status say whether anything grew by more than PERCENT of the base total (for scripts).
 * --html draws the two-colour differential flame graph. */
#ifndef ALLOCSCOPE_READ_DIFF_H
#define ALLOCSCOPE_READ_DIFF_H

#include <stdbool.h>
#include <stdio.h>

#include "read/aggregate.h"
#include "read/pprof_reader.h"

/* Exit status when --fail-above is exceeded (1 is a failure to diff, 2 a usage error). */
#define DIFF_EXIT_REGRESSION 3

enum diff_normalize {
	DIFF_NORMALIZE_NONE,
	DIFF_NORMALIZE_SECONDS, /* value / duration_nanos (per second) */
	DIFF_NORMALIZE_TOTAL,	/* value / the profile's total, in percent */
};

struct diff_opts {
	const char *sample_type; /* NULL: NEW's default type (BASE must have it too) */
	enum aggregate_by by;
	struct sample_filter filter;
	unsigned top; /* rows per table; 0: all */
	enum diff_normalize normalize;
	bool json;
	double fail_above; /* percent of the base total; < 0: not set */
};

/* Writes the diff to out and sets *regressed when fail_above is set and exceeded. 0, or
 * -errno with a sentence in err (a sample type one file lacks, a profile without a duration
 * for per-second normalization). */
int diff_write(const struct pprof_file *base, const char *base_name, const struct pprof_file *new,
	       const char *new_name, const struct diff_opts *opts, FILE *out, bool *regressed,
	       char *err, size_t err_len);

/* The command: argv[0] is "diff". Returns the exit status. */
int diff_main(int argc, char **argv);

#endif
