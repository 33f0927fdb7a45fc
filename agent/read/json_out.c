/* JSON string and number output (see json_out.h). */
#include "read/json_out.h"
#include "util/utf8_text.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

void json_out_string(FILE *out, const char *s)
{
	const uint8_t *p = (const uint8_t *)s;
	size_t left = strlen(s);

	fputc('"', out);
	while (left) {
		size_t n = utf8__sequence_len(p, left);

		if (n == 0) {
			fputs("\\ufffd", out);
			p++;
			left--;
			continue;
		}
		if (n > 1) {
			fwrite(p, 1, n, out);
		} else if (*p == '"' || *p == '\\') {
			fputc('\\', out);
			fputc(*p, out);
		} else if (*p < 0x20 || *p == '<' || *p == '>' || *p == '&' || *p == 0x7f) {
			fprintf(out, "\\u%04x", *p);
		} else {
			fputc(*p, out);
		}
		p += n;
		left -= n;
	}
	fputc('"', out);
}

void json_out_uint(FILE *out, uint64_t v)
{
	char digits[24];
	size_t at = sizeof(digits);

	/* Hundreds of thousands of these in a page: no printf. */
	do {
		digits[--at] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	fwrite(digits + at, 1, sizeof(digits) - at, out);
}

void json_out_number(FILE *out, double v)
{
	if (!isfinite(v))
		v = 0;
	if (v == floor(v) && fabs(v) < 9e15) {
		if (v < 0)
			fputc('-', out);
		json_out_uint(out, (uint64_t)fabs(v));
	} else {
		fprintf(out, "%.6g", v);
	}
}
