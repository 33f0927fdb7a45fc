/* Sizes and durations as text. Strict: trailing garbage, signs, empty numbers and overflow are
 * errors, because a silently misread sample rate or duration is worse than a refusal. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "units.h"

struct unit_suffix {
	const char *name;
	double scale;
};

static const struct unit_suffix size_suffixes[] = {
	{ "", 1 },		{ "B", 1 },
	{ "K", 1024.0 },	{ "KB", 1024.0 },		  { "KiB", 1024.0 },
	{ "M", 1048576.0 },	{ "MB", 1048576.0 },		  { "MiB", 1048576.0 },
	{ "G", 1073741824.0 },	{ "GB", 1073741824.0 },		  { "GiB", 1073741824.0 },
};

static const struct unit_suffix duration_suffixes[] = {
	{ "", 1000.0 }, { "ms", 1.0 }, { "s", 1000.0 }, { "m", 60000.0 }, { "h", 3600000.0 },
};

/* Splits text into a non-negative decimal number and a suffix from the table. */
static int parse_quantity(const char *text, const struct unit_suffix *suffixes, size_t n,
			  bool allow_fraction, double *value)
{
	const char *p = text;
	char *end;
	double number;

	if (!text || !isdigit((unsigned char)*p))
		return -EINVAL;
	while (isdigit((unsigned char)*p) || (allow_fraction && *p == '.'))
		p++;
	errno = 0;
	number = strtod(text, &end);
	if (errno || end != p)
		return -EINVAL;
	while (*p == ' ')
		p++;
	for (size_t i = 0; i < n; i++) {
		if (strcasecmp(p, suffixes[i].name) == 0) {
			*value = number * suffixes[i].scale;
			return 0;
		}
	}
	return -EINVAL;
}

int units_parse_size(const char *text, uint64_t *bytes)
{
	double value;
	int ret = parse_quantity(text, size_suffixes,
				 sizeof(size_suffixes) / sizeof(size_suffixes[0]), false, &value);

	if (ret)
		return ret;
	if (value >= 18446744073709551616.0)
		return -ERANGE;
	*bytes = (uint64_t)value;
	return 0;
}

int units_parse_duration(const char *text, uint64_t *millis)
{
	double value;
	int ret = parse_quantity(text, duration_suffixes,
				 sizeof(duration_suffixes) / sizeof(duration_suffixes[0]), true,
				 &value);

	if (ret)
		return ret;
	if (value >= 1e15) /* ~31,000 years */
		return -ERANGE;
	*millis = (uint64_t)llround(value);
	return 0;
}

const char *units_format_size(double bytes, char *buf, size_t len)
{
	static const char *const names[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	size_t unit = 0;

	while (bytes >= 1024.0 && unit + 1 < sizeof(names) / sizeof(names[0])) {
		bytes /= 1024.0;
		unit++;
	}
	if (unit == 0)
		snprintf(buf, len, "%.0f B", bytes);
	else
		snprintf(buf, len, "%.2f %s", bytes, names[unit]);
	return buf;
}
