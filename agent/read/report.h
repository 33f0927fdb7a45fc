/* `allocscope report FILE`: a pprof profile read back (ours or anyone's) and printed as the
 * capture summary's top table, by allocation site or by function (flat and cumulative), for
 * any of its sample types, filtered by labels, grouped by one; or as folded stacks
 * (flamegraph.pl, inferno, speedscope) or JSON; or drawn as a self-contained HTML flame graph. */
#ifndef ALLOCSCOPE_READ_REPORT_H
#define ALLOCSCOPE_READ_REPORT_H

#include <stdbool.h>
#include <stdio.h>

#include "read/aggregate.h"
#include "read/pprof_reader.h"

enum report_format {
	REPORT_TEXT,
	REPORT_COLLAPSED,
	REPORT_JSON,
};

struct report_opts {
	const char *sample_type; /* NULL: the file's default sample type */
	enum aggregate_by by;
	bool by_cum;		     /* by function: sort by cum instead of flat */
	struct sample_filter filter; /* tags; group_key/group_value unused here */
	const char *group_by;	     /* label key, or NULL */
	unsigned top;		     /* rows per table; 0: all */
	enum report_format format;
};

/* The type opts names in file (its index in *type), or -EINVAL with the types it has in err. */
int report_sample_type(const struct pprof_file *file, const char *name, size_t *type, char *err,
		       size_t err_len);

/* Writes the report of file (named name) to out. 0, or -errno with a sentence in err. */
int report_write(const struct pprof_file *file, const char *name, const struct report_opts *opts,
		 FILE *out, char *err, size_t err_len);

/* Folded stacks of the kept samples, root first, one "frame;frame;... value" line per
 * distinct stack (sorted), for type; group_by adds "key=value" as the root frame. */
int report_collapsed(const struct pprof_file *file, size_t type, const struct sample_filter *filter,
		     const char *group_by, FILE *out);

/* --tag KEY=VALUE into filter (the key copied): 0, -EINVAL or -ENOMEM. */
int report_parse_tag(struct sample_filter *filter, const char *arg);
void report_free_tags(struct sample_filter *filter);

/* The command: argv[0] is "report". Returns the exit status (0, 1 on a failure, 2 on a usage
 * error). */
int report_main(int argc, char **argv);

#endif
