/* UTF-8 validation and the one helper that makes a label value safe to send (see
 * utf8_text.h): replacement first, so the cut never lands inside the U+FFFD it added. */
#include <string.h>

#include "util/utf8_text.h"

size_t utf8__sequence_len(const uint8_t *s, size_t avail)
{
	uint8_t c = s[0], lo = 0x80, hi = 0xbf;
	size_t n, i;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if (avail < n || s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < n; i++) {
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	}
	return n;
}

bool utf8__valid(const char *s, size_t len)
{
	const uint8_t *p = (const uint8_t *)s;
	size_t i = 0, n;

	while (i < len) {
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		n = utf8__sequence_len(p + i, len - i);
		if (!n)
			return false;
		i += n;
	}
	return true;
}

bool utf8__label_value(char *out, size_t out_size, const char *s, size_t max_bytes)
{
	static const char replacement[] = "\xef\xbf\xbd";
	const uint8_t *p = (const uint8_t *)s;
	size_t len = strlen(s), i = 0, o = 0, n;
	bool in_bad_run = false, changed = false;

	if (max_bytes > out_size - 1)
		max_bytes = out_size - 1;
	while (i < len) {
		const char *piece;
		size_t piece_len;

		n = utf8__sequence_len(p + i, len - i);
		if (n) {
			piece = s + i;
			piece_len = n;
			in_bad_run = false;
		} else {
			changed = true;
			i++;
			if (in_bad_run)
				continue;
			in_bad_run = true;
			piece = replacement;
			piece_len = 3;
			n = 0;
		}
		if (o + piece_len > max_bytes) {
			changed = true;
			break;
		}
		memcpy(out + o, piece, piece_len);
		o += piece_len;
		i += n;
	}
	out[o] = '\0';
	return changed;
}
