/* Allocation budget files for `allocscope gate` (docs/ci-gate.md): parsing, comparing with
 * what a run counted, and the ratchet (--update lowers limits to what was measured, never
 * raises one, and writes the file atomically).
 *
 * The format is one guarded thing per line, meant to be committed and read in review:
 *
 *   # comments and blank lines are kept by --update
 *   unlisted  ignore                        sites not listed: not checked (the default)
 *   unlisted  objects=40                    ... or checked together against this limit
 *   total     objects=1200 bytes=65536      every allocation of the run
 *   site      objects=3  make_node          an allocation site, as the top table names it
 *   function  objects=12 bytes=400 parse    a function, inclusive (what it and its callees
 *                                           allocate)
 *
 * A line is KIND, then limits (objects=N, bytes=N; at least one), then for site and function
 * the name: the rest of the line, spaces included (C++ and Rust names have them). Nothing here
 * prints or exits: errors come back as a sentence "FILE:LINE: what is wrong". */
#ifndef ALLOCSCOPE_COUNT_BUDGET_H
#define ALLOCSCOPE_COUNT_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BUDGET_NO_LIMIT UINT64_MAX /* the limit was not given */
#define BUDGET_MAX_FILE (4u << 20) /* larger files are refused */

enum budget_kind { BUDGET_TOTAL, BUDGET_UNLISTED, BUDGET_SITE, BUDGET_FUNCTION };

struct budget_item {
	enum budget_kind kind;
	char *name;	  /* site or function; NULL for total and unlisted */
	uint64_t objects; /* BUDGET_NO_LIMIT when not given */
	uint64_t bytes;
	bool ignore;	  /* "unlisted ignore" */
	unsigned line;	  /* 1-based */
};

struct budget {
	char *path;
	char **lines; /* the file's lines, without their newlines */
	size_t n_lines;
	struct budget_item *items;
	size_t n_items;
};

/* What a run counted, by name (names are the caller's). */
struct budget_measure {
	const char *name;
	uint64_t objects, bytes;
};

struct budget_measurements {
	const struct budget_measure *sites;
	size_t n_sites;
	const struct budget_measure *functions;
	size_t n_functions;
	uint64_t total_objects, total_bytes;
};

/* One limit compared: a row of the gate's table. */
struct budget_row {
	const struct budget_item *item;
	const char *metric; /* "objects" or "bytes" */
	uint64_t limit, measured;
	bool over;
	bool unseen; /* a site or function the run never allocated in: renamed or removed? */
};

/* Parses text (len bytes) read from path (used in messages). -EINVAL with "path:line: ..." in
 * err, -ENOMEM. */
int budget__parse(const char *path, const char *text, size_t len, struct budget **out, char *err,
		  size_t err_len);
/* Reads and parses path. A missing file is -ENOENT with *out NULL (--update then creates it). */
int budget__load(const char *path, struct budget **out, char *err, size_t err_len);
void budget__free(struct budget *b);

/* Compares every limit of b with m. *rows (caller frees) gets one row per limit, in file order;
 * *n_over how many are over. 0 or -ENOMEM. */
int budget__check(const struct budget *b, const struct budget_measurements *m,
		  struct budget_row **rows, size_t *n_rows, size_t *n_over);

/* The file's text with every limit above its measurement lowered to it; a limit at or below
 * its measurement (over budget: raising is a reviewed edit) and everything else kept as it is.
 * Unseen sites and functions keep their limits. *text is NUL-terminated, the caller frees it;
 * *n_lowered counts the limits lowered. 0 or -ENOMEM. */
int budget__render_update(const struct budget *b, const struct budget_measurements *m,
			  char **text, size_t *n_lowered);
/* A new budget file guarding what m measured: the total (objects and bytes) and one line per
 * site (objects), sorted by name, unlisted sites ignored. 0 or -ENOMEM. */
int budget__render_new(const struct budget_measurements *m, char **text);

/* Writes text to path atomically (a temporary file beside it, fsync, rename): on any error
 * the old file is left as it was. 0 or -errno with a sentence in err. */
int budget__write_file(const char *path, const char *text, char *err, size_t err_len);

#endif
