/* Leveled logging to stderr (journald reads it as is). The level is checked before any
 * formatting work, so a disabled debug line costs one comparison. */
#ifndef ALLOCSCOPE_LOG_H
#define ALLOCSCOPE_LOG_H

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

extern enum log_level log_max_level;

void log_set_level(enum log_level level);
/* Parses "error", "warn", "info", "debug"; returns -EINVAL for anything else. */
int log_parse_level(const char *name, enum log_level *level);
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
