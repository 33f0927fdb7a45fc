/* Label values as the servers take them: valid UTF-8 (Pyroscope refuses the whole request
 * otherwise), cut at a character boundary, invalid bytes replaced by U+FFFD. */
#include <stdbool.h>

#include "unit.h"
#include "util/utf8_text.h"

static void test_valid_text_is_kept(void)
{
	char out[64];

	CHECK(!utf8__label_value(out, sizeof(out), "checkout-api", 128));
	CHECK_STR(out, "checkout-api");
	CHECK(!utf8__label_value(out, sizeof(out), "caf\xc3\xa9", 128));
	CHECK_STR(out, "caf\xc3\xa9");
	CHECK(!utf8__label_value(out, sizeof(out), "", 128));
	CHECK_STR(out, "");
}

static void test_cut_at_character_boundary(void)
{
	char out[64];

	/* "ab" then a 3-byte character: a cut at 4 bytes would split it; it goes whole. */
	CHECK(utf8__label_value(out, sizeof(out), "ab\xe2\x82\xac", 4));
	CHECK_STR(out, "ab");
	CHECK(utf8__valid(out, strlen(out)));
	CHECK(!utf8__label_value(out, sizeof(out), "ab\xe2\x82\xac", 5));
	CHECK_STR(out, "ab\xe2\x82\xac");
	/* A 4-byte character at the boundary. */
	CHECK(utf8__label_value(out, sizeof(out), "x\xf0\x9f\x98\x80y", 4));
	CHECK_STR(out, "x");
	/* Plain ASCII is cut at the byte count. */
	CHECK(utf8__label_value(out, sizeof(out), "abcdefgh", 5));
	CHECK_STR(out, "abcde");
	/* The buffer bounds the value too. */
	CHECK(utf8__label_value(out, 4, "abcdefgh", 128));
	CHECK_STR(out, "abc");
}

static void test_invalid_bytes_replaced(void)
{
	char out[64];

	/* A Latin-1 executable name: one U+FFFD per run of invalid bytes. */
	CHECK(utf8__label_value(out, sizeof(out), "caf\xe9", 128));
	CHECK_STR(out, "caf\xef\xbf\xbd");
	CHECK(utf8__label_value(out, sizeof(out), "a\xff\xfe" "b", 128));
	CHECK_STR(out, "a\xef\xbf\xbd" "b");
	/* Overlong form, surrogate, truncated sequence. */
	CHECK(utf8__label_value(out, sizeof(out), "\xc0\xaf", 128));
	CHECK(utf8__valid(out, strlen(out)));
	CHECK(utf8__label_value(out, sizeof(out), "\xed\xa0\x80", 128));
	CHECK(utf8__valid(out, strlen(out)));
	CHECK(utf8__label_value(out, sizeof(out), "ok\xe2\x82", 128));
	CHECK_STR(out, "ok\xef\xbf\xbd");
	/* A replacement that does not fit is left out whole, never cut. */
	CHECK(utf8__label_value(out, sizeof(out), "abc\xff", 5));
	CHECK_STR(out, "abc");
	CHECK(utf8__valid(out, strlen(out)));
}

int main(void)
{
	RUN(test_valid_text_is_kept);
	RUN(test_cut_at_character_boundary);
	RUN(test_invalid_bytes_replaced);
	return unit_summary("utf8_text");
}
