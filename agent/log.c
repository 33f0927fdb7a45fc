/* Leveled logging: one line per message, prefixed with the program name and the level
 * (errors and warnings only, so ordinary progress reads like plain output). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

enum log_level log_max_level = LOG_INFO;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void log_set_level(enum log_level level)
{
	log_max_level = level;
}

int log_parse_level(const char *name, enum log_level *level)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*level = (enum log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

void log_write(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	/* One line at a time even with the metrics and detach threads logging too. */
	flockfile(stderr);
	if (level == LOG_ERROR)
		fputs("allocscope: error: ", stderr);
	else if (level == LOG_WARN)
		fputs("allocscope: warning: ", stderr);
	else if (level == LOG_DEBUG)
		fputs("allocscope: debug: ", stderr);
	else
		fputs("allocscope: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	funlockfile(stderr);
}
