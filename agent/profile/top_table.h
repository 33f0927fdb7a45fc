/* The top table of allocation sites as the capture summary prints it and `allocscope report`
 * prints it from a file: one line per site with its value, share of the total and a second
 * value beside it (alloc_space with alloc_objects), then a total line. Names come from
 * targets or files: they are escaped as every logged name is (log.h). */
#ifndef ALLOCSCOPE_PROFILE_TOP_TABLE_H
#define ALLOCSCOPE_PROFILE_TOP_TABLE_H

#include <stddef.h>
#include <stdio.h>

struct top_table_row {
	const char *name;
	double value;
	double other;
};

/* Column names and units; a unit of "bytes" prints as a size (1.5 MiB), any other as a
 * number. other_type NULL: no second column ("-"). */
struct top_table_columns {
	const char *value_type, *value_unit;
	const char *other_type, *other_unit;
	const char *what; /* the name column's heading: "allocation site" */
};

void top_table_print(FILE *out, const struct top_table_columns *columns,
		     const struct top_table_row *rows, size_t n, double total, double other_total);

/* The table's parts, for a table printed row by row (the capture's, grouped by a label: a
 * line per group, its sites indented under it). name is escaped here (cut at 1 KiB). */
void top_table_print_head(FILE *out, const struct top_table_columns *columns);
void top_table_print_row(FILE *out, const struct top_table_columns *columns, const char *indent,
			 const char *name, double value, double other, double total);
void top_table_print_total(FILE *out, const struct top_table_columns *columns, double total,
			   double other_total);

/* A value as the table prints it: a size for bytes, else a whole number. */
const char *top_table_value(double value, const char *unit, char *buf, size_t len);

#endif
