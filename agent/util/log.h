/* Leveled logging to stderr (journald reads it as is). The level is checked before any
 * formatting work, so a disabled debug line costs one comparison. Every message is escaped as
 * log_escape does (its own trailing newline aside), so a message is always exactly one line of
 * text whatever names it carries. */
#ifndef ALLOCSCOPE_LOG_H
#define ALLOCSCOPE_LOG_H

#include <stddef.h>
#include <string.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

extern enum log_level log_max_level;

void log_set_level(enum log_level level);
/* Parses "error", "warn", "info", "debug"; returns -EINVAL for anything else. */
int log_parse_level(const char *name, enum log_level *level);
/* Copies in_len bytes of in to out as text safe for a terminal or a journal: newline, carriage
 * return and tab become \n, \r and \t; other control characters (C0, DEL, C1) and bytes that
 * are not well-formed UTF-8 become \xHH; printable UTF-8 stays as it is (a backslash too: it
 * cannot start a line or drive a terminal). Always NUL-terminates (out_len > 0) and cuts only
 * between characters or escapes. Returns the length written. For printing names that come from
 * a target, the network or a file anywhere other than through log_write. */
size_t log_escape(char *out, size_t out_len, const char *in, size_t in_len);
/* in (a string) escaped into out, which must be an array, for use as a printf argument. */
#define log_escaped(out, in) (log_escape((out), sizeof(out), (in), strlen(in)), (const char *)(out))

void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_at(level, ...)                                                                 \
	do {                                                                               \
		if ((level) <= log_max_level)                                              \
			log_write((level), __VA_ARGS__);                                   \
	} while (0)

#define log_error(...) log_at(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_at(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_at(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_at(LOG_DEBUG, __VA_ARGS__)

#endif
