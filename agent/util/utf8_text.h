/* UTF-8 checks shared by the pprof encoder and the label values the agent sends: Pyroscope
 * refuses a whole request (400) when one label value is not valid UTF-8, and executable
 * names, cgroup paths and pod metadata are raw bytes from the system. */
#ifndef ALLOCSCOPE_UTF8_TEXT_H
#define ALLOCSCOPE_UTF8_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Length of the well-formed UTF-8 sequence at s (Unicode 15, table 3-7), or 0 when the bytes
 * there are not one: stray continuation bytes, overlong forms, surrogates, > U+10FFFF,
 * truncated sequences. avail >= 1. */
size_t utf8__sequence_len(const uint8_t *s, size_t avail);

/* True when the len bytes at s are well-formed UTF-8. */
bool utf8__valid(const char *s, size_t len);

/* A label value as servers accept it: s (NUL-terminated) copied to out with each run of
 * invalid bytes replaced by one U+FFFD, then cut to at most max_bytes bytes (and out_size - 1)
 * at a character boundary, never inside a multi-byte character. out is always
 * NUL-terminated (out_size >= 1). Returns true when the copy differs from s: something was
 * replaced or cut. */
bool utf8__label_value(char *out, size_t out_size, const char *s, size_t max_bytes);

#endif
