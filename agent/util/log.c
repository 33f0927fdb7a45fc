/* Leveled logging: one line per message, prefixed with the program name and the level
 * (errors and warnings only, so ordinary progress reads like plain output).
 *
 * Messages carry names from targets (comm, executable paths, symbols), from the network (an
 * HTTP error body, Kubernetes names) and from files, and the agent writes them as root into
 * a journal and onto terminals. So every message is escaped on its way out (log_escape): a
 * name cannot end the line and forge the next one, move the cursor or recolour the terminal,
 * and invalid UTF-8 cannot turn the journal entry into a binary blob. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

/* Most messages fit; longer ones are formatted again into a buffer of their own size. */
#define MESSAGE_STACK_SIZE 1024

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

/* The length of the printable UTF-8 character at s (1 to 4), or 0 when its first byte must be
 * escaped: C0 controls and DEL, C1 controls (U+0080 to U+009F, which some terminals read as
 * escape sequences), and anything that is not well-formed UTF-8 (stray continuation bytes,
 * overlong forms, surrogates, beyond U+10FFFF, cut short), line/paragraph separators and
 * bidirectional controls. */
static size_t printable_char_len(const unsigned char *s, size_t len)
{
	unsigned char c = s[0];
	size_t need;
	unsigned int cp, min;

	if (c < 0x20 || c == 0x7f)
		return 0;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		need = 2;
		cp = c & 0x1f;
		min = 0xa0; /* U+0080..U+009F are the C1 controls */
	} else if (c >= 0xe0 && c <= 0xef) {
		need = 3;
		cp = c & 0x0f;
		min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 4;
		cp = c & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (len < need)
		return 0;
	for (size_t i = 1; i < need; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	/* Line and paragraph separators (a line break to some log viewers) and the bidirectional
	 * controls (they reorder what follows on screen). */
	if (cp == 0x200e || cp == 0x200f || (cp >= 0x2028 && cp <= 0x202e) ||
	    (cp >= 0x2066 && cp <= 0x2069))
		return 0;
	return need;
}

/* The escape for a byte that printable_char_len refused; always 2 to 4 characters. */
static size_t escape_byte(unsigned char c, char out[5])
{
	static const char hex[] = "0123456789abcdef";

	switch (c) {
	case '\n':
		memcpy(out, "\\n", 3);
		return 2;
	case '\r':
		memcpy(out, "\\r", 3);
		return 2;
	case '\t':
		memcpy(out, "\\t", 3);
		return 2;
	default:
		out[0] = '\\';
		out[1] = 'x';
		out[2] = hex[c >> 4];
		out[3] = hex[c & 0xf];
		out[4] = '\0';
		return 4;
	}
}

size_t log_escape(char *out, size_t out_len, const char *in, size_t in_len)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t used = 0;

	if (out_len == 0)
		return 0;
	for (size_t i = 0; i < in_len;) {
		size_t n = printable_char_len(s + i, in_len - i);
		char escape[5];
		const char *piece = (const char *)s + i;

		if (n == 0) {
			n = escape_byte(s[i], escape);
			piece = escape;
			i++;
		} else {
			i += n;
		}
		/* Whole characters and whole escapes only, so a cut never leaves half of one. */
		if (n >= out_len - used)
			break;
		memcpy(out + used, piece, n);
		used += n;
	}
	out[used] = '\0';
	return used;
}

static void write_escaped(FILE *f, const char *text, size_t len)
{
	const unsigned char *s = (const unsigned char *)text;
	size_t run = 0; /* start of the printable bytes not yet written */

	for (size_t i = 0; i < len;) {
		size_t n = printable_char_len(s + i, len - i);
		char escape[5];

		if (n) {
			i += n;
			continue;
		}
		fwrite(text + run, 1, i - run, f);
		fwrite(escape, 1, escape_byte(s[i], escape), f);
		i++;
		run = i;
	}
	fwrite(text + run, 1, len - run, f);
}

void log_write(enum log_level level, const char *fmt, ...)
{
	char stack[MESSAGE_STACK_SIZE], *message = stack;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(stack, sizeof(stack), fmt, ap);
	va_end(ap);
	if (n < 0) {
		n = 0;
		stack[0] = '\0';
	} else if ((size_t)n >= sizeof(stack)) {
		char *heap = malloc((size_t)n + 1);

		if (heap) {
			va_start(ap, fmt);
			vsnprintf(heap, (size_t)n + 1, fmt, ap);
			va_end(ap);
			message = heap;
		} else {
			n = sizeof(stack) - 1; /* out of memory: the message, cut short */
		}
	}

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
	write_escaped(stderr, message, (size_t)n);
	fputc('\n', stderr);
	funlockfile(stderr);
	if (message != stack)
		free(message);
}
