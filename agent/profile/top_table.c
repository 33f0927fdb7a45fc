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

void top_table_print(FILE *out, const struct top_table_columns *columns,
		     const struct top_table_row *rows, size_t n, double total, double other_total)
{
	char value[32], other[32], name[4 * 1024 + 1];

	fprintf(out, "\n%14s %7s %15s  %s\n", columns->value_type, "share",
		columns->other_type ? columns->other_type : "-", columns->what);
	for (size_t i = 0; i < n; i++) {
		size_t len = strnlen(rows[i].name, 1024);

		log_escape(name, sizeof(name), rows[i].name, len);
		fprintf(out, "%14s %6.1f%% %15s  %s\n",
			top_table_value(rows[i].value, columns->value_unit, value, sizeof(value)),
			total > 0 ? 100.0 * rows[i].value / total : 0.0,
			columns->other_type ? top_table_value(rows[i].other, columns->other_unit,
							      other, sizeof(other))
					    : "-",
			name);
	}
	fprintf(out, "%14s %6s  %15s  total\n",
		top_table_value(total, columns->value_unit, value, sizeof(value)), "",
		columns->other_type
		    ? top_table_value(other_total, columns->other_unit, other, sizeof(other))
		    : "-");
}
