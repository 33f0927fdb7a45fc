/* The top table (see top_table.h): the capture summary's format, kept in one place. */
#include "profile/top_table.h"
#include "config/units.h"
#include "util/log.h"

#include <string.h>

const char *top_table_value(double value, const char *unit, char *buf, size_t len)
{
	if (unit && strcmp(unit, "bytes") == 0)
		return units_format_size(value, buf, len);
	snprintf(buf, len, "%.0f", value);
	return buf;
}

void top_table_print_head(FILE *out, const struct top_table_columns *columns)
{
	fprintf(out, "\n%14s %7s %15s  %s\n", columns->value_type, "share",
		columns->other_type ? columns->other_type : "-", columns->what);
}

void top_table_print_row(FILE *out, const struct top_table_columns *columns, const char *indent,
			 const char *name, double value, double other, double total)
{
	char value_text[32], other_text[32], escaped[4 * 1024 + 1];

	log_escape(escaped, sizeof(escaped), name, strnlen(name, 1024));
	fprintf(out, "%14s %6.1f%% %15s  %s%s\n",
		top_table_value(value, columns->value_unit, value_text, sizeof(value_text)),
		total > 0 ? 100.0 * value / total : 0.0,
		columns->other_type
		    ? top_table_value(other, columns->other_unit, other_text, sizeof(other_text))
		    : "-",
		indent, escaped);
}

void top_table_print_total(FILE *out, const struct top_table_columns *columns, double total,
			   double other_total)
{
	char value[32], other[32];

	fprintf(out, "%14s %6s  %15s  total\n",
		top_table_value(total, columns->value_unit, value, sizeof(value)), "",
		columns->other_type
		    ? top_table_value(other_total, columns->other_unit, other, sizeof(other))
		    : "-");
}

void top_table_print(FILE *out, const struct top_table_columns *columns,
		     const struct top_table_row *rows, size_t n, double total, double other_total)
{
	top_table_print_head(out, columns);
	for (size_t i = 0; i < n; i++)
		top_table_print_row(out, columns, "", rows[i].name, rows[i].value, rows[i].other,
				    total);
	top_table_print_total(out, columns, total, other_total);
}
