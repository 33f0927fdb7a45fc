/* Sizes and durations as users type them, and the refusals they should get. */
#include <errno.h>

#include "unit.h"
#include "config/units.h"

static void test_sizes(void)
{
	uint64_t v = 0;

	CHECK(units_parse_size("4096", &v) == 0);
	CHECK_EQ_U64(v, 4096);
	CHECK(units_parse_size("512KiB", &v) == 0);
	CHECK_EQ_U64(v, 512 * 1024);
	CHECK(units_parse_size("64k", &v) == 0);
	CHECK_EQ_U64(v, 64 * 1024);
	CHECK(units_parse_size("2MiB", &v) == 0);
	CHECK_EQ_U64(v, 2 * 1024 * 1024);
	CHECK(units_parse_size("1G", &v) == 0);
	CHECK_EQ_U64(v, 1ull << 30);
	CHECK(units_parse_size("100B", &v) == 0);
	CHECK_EQ_U64(v, 100);
}

static void test_bad_sizes(void)
{
	uint64_t v = 7;

	CHECK(units_parse_size("", &v) == -EINVAL);
	CHECK(units_parse_size("KiB", &v) == -EINVAL);
	CHECK(units_parse_size("-5", &v) == -EINVAL);
	CHECK(units_parse_size("12XB", &v) == -EINVAL);
	CHECK(units_parse_size("1.5MiB", &v) == -EINVAL);
	CHECK(units_parse_size("99999999999999999999999", &v) == -ERANGE);
	CHECK(units_parse_size(NULL, &v) == -EINVAL);
	CHECK_EQ_U64(v, 7); /* untouched on error */
}

static void test_durations(void)
{
	uint64_t ms = 0;

	CHECK(units_parse_duration("30s", &ms) == 0);
	CHECK_EQ_U64(ms, 30000);
	CHECK(units_parse_duration("2m", &ms) == 0);
	CHECK_EQ_U64(ms, 120000);
	CHECK(units_parse_duration("1h", &ms) == 0);
	CHECK_EQ_U64(ms, 3600000);
	CHECK(units_parse_duration("250ms", &ms) == 0);
	CHECK_EQ_U64(ms, 250);
	CHECK(units_parse_duration("1.5s", &ms) == 0);
	CHECK_EQ_U64(ms, 1500);
	CHECK(units_parse_duration("10", &ms) == 0);
	CHECK_EQ_U64(ms, 10000);
}

static void test_bad_durations(void)
{
	uint64_t ms = 3;

	CHECK(units_parse_duration("", &ms) == -EINVAL);
	CHECK(units_parse_duration("s", &ms) == -EINVAL);
	CHECK(units_parse_duration("-1s", &ms) == -EINVAL);
	CHECK(units_parse_duration("5 days", &ms) == -EINVAL);
	CHECK(units_parse_duration("1e9999s", &ms) == -EINVAL);
	CHECK_EQ_U64(ms, 3);
}

static void test_format(void)
{
	char buf[32];

	CHECK_STR(units_format_size(100, buf, sizeof(buf)), "100 B");
	CHECK_STR(units_format_size(1536, buf, sizeof(buf)), "1.50 KiB");
	CHECK_STR(units_format_size(3.0 * 1024 * 1024 * 1024, buf, sizeof(buf)), "3.00 GiB");
}

int main(void)
{
	RUN(test_sizes);
	RUN(test_bad_sizes);
	RUN(test_durations);
	RUN(test_bad_durations);
	RUN(test_format);
	return unit_summary("units");
}
