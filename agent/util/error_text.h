/* Filling a caller's error buffer: the sentence for the user that a fallible function leaves
 * next to the -errno it returns ("cannot write PATH: No space left on device"). */
#ifndef ALLOCSCOPE_ERROR_TEXT_H
#define ALLOCSCOPE_ERROR_TEXT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

/* printf into err[err_len], truncated; accepts a NULL or empty buffer. */
static inline __attribute__((format(printf, 3, 4))) void
set_err(char *err, size_t err_len, const char *fmt, ...)
{
	va_list ap;

	if (!err || !err_len)
		return;
	va_start(ap, fmt);
	vsnprintf(err, err_len, fmt, ap);
	va_end(ap);
}

#endif
