/* JSON strings for the report's machine output and the HTML page's embedded data: quotes,
 * backslashes and control characters escaped, bytes that are not UTF-8 replaced by U+FFFD, and
 * "<" written as \u003c so that a name can never close the page's <script> element. */
#ifndef ALLOCSCOPE_READ_JSON_OUT_H
#define ALLOCSCOPE_READ_JSON_OUT_H

#include <stdint.h>
#include <stdio.h>

/* Writes s as a quoted JSON string. */
void json_out_string(FILE *out, const char *s);
/* Writes an unsigned integer, fast. */
void json_out_uint(FILE *out, uint64_t v);
/* Writes a number as JSON: integers without a fraction, non-finite values as 0. */
void json_out_number(FILE *out, double v);

#endif
