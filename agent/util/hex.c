/* Hexadecimal digits (see hex.h). */
#include <stdint.h>
#include <stdlib.h>

#include "util/hex.h"

int hex_digit_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

char *hex_encode(const unsigned char *bytes, size_t len)
{
	static const char digits[] = "0123456789abcdef";
	char *text;

	if (len > (SIZE_MAX - 1) / 2)
		return NULL;
	text = malloc(len * 2 + 1);
	if (!text)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		text[2 * i] = digits[bytes[i] >> 4];
		text[2 * i + 1] = digits[bytes[i] & 0xf];
	}
	text[2 * len] = '\0';
	return text;
}
