/* One self-contained HTML page (inline CSS and JavaScript, no network) with an interactive
 * flame graph of a profile and its top table; with a base profile, the differential flame
 * graph of base -> new. See docs/report.md for what the page does and how it stays fast. */
#ifndef ALLOCSCOPE_READ_FLAMEGRAPH_HTML_H
#define ALLOCSCOPE_READ_FLAMEGRAPH_HTML_H

#include <stddef.h>
#include <stdio.h>

#include "read/aggregate.h"
#include "read/pprof_reader.h"

/* Writes the page to path whole or not at all (read/output_file.h). base NULL: a profile's
 * page; else the diff of base -> file. type: the sample type shown first. filter: samples
 * kept (may be NULL). 0, or -errno with a sentence in err. */
int flamegraph_html_write(const char *path, const struct pprof_file *base, const char *base_name,
			  const struct pprof_file *file, const char *file_name, size_t type,
			  const struct sample_filter *filter, char *err, size_t err_len);

/* The page to a stream (for the tests and the bench). 0 or -ENOMEM. */
int flamegraph_html_print(FILE *out, const struct pprof_file *base, const char *base_name,
			  const struct pprof_file *file, const char *file_name, size_t type,
			  const struct sample_filter *filter);

#endif
