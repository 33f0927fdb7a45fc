/* The log layer's escaping: a name from a target, the network or a file can never add a line
 * to the log or drive the terminal it is read on, and what prints stays readable (UTF-8 names
 * as they are). log_escape string for string, then log_write's real output on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"
#include "unit.h"

static void check_escape(const char *in, size_t in_len, const char *expected)
{
	char out[256];
	size_t n = log_escape(out, sizeof(out), in, in_len);

	CHECK_STR(out, expected);
	CHECK_EQ_U64(n, strlen(expected));
}

static void test_escape_controls(void)
{
	check_escape("plain name", 10, "plain name");
	check_escape("x\n\033[31mallocscope: error: forged", 32,
		     "x\\n\\x1b[31mallocscope: error: forged");
	check_escape("a\rb\tc", 5, "a\\rb\\tc");
	check_escape("\x01\x7f\x1f", 3, "\\x01\\x7f\\x1f");
	/* A NUL inside the bytes given is shown, not a place to stop. */
	check_escape("a\0b", 3, "a\\x00b");
	/* A backslash cannot start a line or a sequence: it stays. */
	check_escape("C:\\path", 7, "C:\\path");
}

static void test_escape_utf8(void)
{
	/* Printable UTF-8 of every length stays as it is. */
	check_escape("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\x98", 14,
		     "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\x98");
	/* C1 controls: U+009B is CSI to some terminals. */
	check_escape("\xc2\x9b" "31m", 5, "\\xc2\\x9b31m");
	check_escape("\xc2\x85", 2, "\\xc2\\x85");
	/* Not UTF-8: a stray continuation, Latin-1, overlong forms, a surrogate, too large, cut
	 * short. Each bad byte shows as itself; what follows is read afresh. */
	check_escape("\x80", 1, "\\x80");
	check_escape("caf\xe9", 4, "caf\\xe9");
	check_escape("\xc0\x8a", 2, "\\xc0\\x8a");
	check_escape("\xe0\x80\x8a", 3, "\\xe0\\x80\\x8a");
	check_escape("\xed\xa0\x80", 3, "\\xed\\xa0\\x80");
	check_escape("\xf4\x90\x80\x80", 4, "\\xf4\\x90\\x80\\x80");
	check_escape("\xe2\x82", 2, "\\xe2\\x82");
	check_escape("\xe2\x82" "A", 3, "\\xe2\\x82A");
	/* U+2028 (a line break to some log viewers) and U+202E (right-to-left override: what
	 * follows reads backwards on screen). */
	check_escape("a\xe2\x80\xa8" "b", 5, "a\\xe2\\x80\\xa8b");
	check_escape("\xe2\x80\xae" "gpj.exe", 10, "\\xe2\\x80\\xaegpj.exe");
}

static void test_escape_cuts_whole(void)
{
	char out[6];

	/* "ab\n" needs 4 bytes + NUL; "\x1b" would not fit whole after it, so it is left out. */
	CHECK_EQ_U64(log_escape(out, sizeof(out), "ab\n\033", 4), 4);
	CHECK_STR(out, "ab\\n");
	/* A 3-byte character that does not fit is left out, not cut. */
	CHECK_EQ_U64(log_escape(out, sizeof(out), "abcd\xe2\x82\xac", 7), 4);
	CHECK_STR(out, "abcd");
	CHECK_EQ_U64(log_escape(out, 1, "abc", 3), 0);
	CHECK_STR(out, "");
}

/* Everything log_write puts on stderr while fn runs. */
static char *capture_stderr(void (*fn)(void))
{
	FILE *tmp = tmpfile();
	char *text = calloc(1, 65536);
	int saved = dup(STDERR_FILENO);
	size_t n;

	if (!tmp || !text || saved < 0) {
		CHECK(!"cannot capture stderr");
		free(text);
		return NULL;
	}
	fflush(stderr);
	dup2(fileno(tmp), STDERR_FILENO);
	fn();
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	rewind(tmp);
	n = fread(text, 1, 65535, tmp);
	text[n] = '\0';
	fclose(tmp);
	return text;
}

static void log_forged_name(void)
{
	log_error("cannot attach to pid %d (%s): %s", 42, "x\n\033[31mallocscope: error: forged",
		  "no such process");
	log_info("service %s", "caf\xe9\r");
}

static void test_log_write_escapes(void)
{
	char *text = capture_stderr(log_forged_name);

	if (!text)
		return;
	CHECK_STR(text, "allocscope: error: cannot attach to pid 42 "
			"(x\\n\\x1b[31mallocscope: error: forged): no such process\n"
			"allocscope: service caf\\xe9\\r\n");
	free(text);
}

static char long_name[5000];

static void log_long_name(void)
{
	log_warn("%s.", long_name);
}

/* Longer than the stack buffer: whole, escaped, one line. */
static void test_log_write_long(void)
{
	char *text;

	for (size_t i = 0; i < sizeof(long_name) - 1; i++)
		long_name[i] = i % 100 == 99 ? '\n' : 'a';
	text = capture_stderr(log_long_name);
	if (!text)
		return;
	CHECK_EQ_U64(strlen(text), strlen("allocscope: warning: ") + 4999 + 49 + 2);
	CHECK(strchr(text, '\n') == text + strlen(text) - 1);
	CHECK(strstr(text, "a\\na") != NULL);
	CHECK(strcmp(text + strlen(text) - 3, "a.\n") == 0);
	free(text);
}

int main(void)
{
	RUN(test_escape_controls);
	RUN(test_escape_utf8);
	RUN(test_escape_cuts_whole);
	RUN(test_log_write_escapes);
	RUN(test_log_write_long);
	return unit_summary("log");
}
