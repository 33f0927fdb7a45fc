/* Hexadecimal digits, both ways: parsing one digit (JSON's \uXXXX escapes, percent-encoded
 * bytes) and writing bytes as lowercase hex (build ids). */
#ifndef ALLOCSCOPE_UTIL_HEX_H
#define ALLOCSCOPE_UTIL_HEX_H

#include <stddef.h>

/* The value of one hex digit (either case), or -1 when c is not one. */
int hex_digit_value(char c);
/* len bytes as 2 * len lowercase hex digits in a new NUL-terminated string the caller frees;
 * NULL when out of memory. */
char *hex_encode(const unsigned char *bytes, size_t len);

#endif
