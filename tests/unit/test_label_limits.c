/* Unit tests for profile/label_limits.c: which keys are kept (configured, or the first max_keys
 * a program publishes), distinct values per key bounded with the rest as "other", values cut
 * at a UTF-8 boundary, keys made label names, and every decision counted. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "unit.h"
#include "profile/label_limits.h"

static struct label_limits_config defaults(void)
{
	return (struct label_limits_config){ .max_keys = 8, .max_values = 100,
					     .max_value_bytes = 64 };
}

/* The value the limiter keeps for (key, value); NULL when the label is left out. */
static const char *admit(struct label_limits *l, const char *key, const char *value)
{
	const char *k, *v;

	return label_limits__admit(l, key, value, &k, &v) == 1 ? v : NULL;
}

static void test_values_past_the_limit_become_other(void)
{
	struct label_limits_config config = defaults();
	struct label_limits_stats stats = { 0 };
	struct label_limits *l;
	const char *first, *again;
	char value[32];

	config.max_values = 3;
	CHECK(label_limits__new(&config, &stats, &l) == 0);
	first = admit(l, "endpoint", "GET /a");
	CHECK_STR(admit(l, "endpoint", "GET /b"), "GET /b");
	CHECK_STR(admit(l, "endpoint", "GET /c"), "GET /c");
	CHECK_STR(admit(l, "endpoint", "GET /d"), LABEL_LIMITS_OTHER);
	CHECK_STR(admit(l, "endpoint", "GET /e"), LABEL_LIMITS_OTHER);
	/* Values already kept stay themselves, with the same pointer. */
	again = admit(l, "endpoint", "GET /a");
	CHECK_STR(again, "GET /a");
	CHECK(again == first);
	/* Each key has its own budget. */
	for (int i = 0; i < 3; i++) {
		snprintf(value, sizeof(value), "tenant-%d", i);
		CHECK_STR(admit(l, "tenant", value), value);
	}
	CHECK_STR(admit(l, "tenant", "tenant-3"), LABEL_LIMITS_OTHER);
	CHECK_EQ_U64(label_limits__distinct(l, "endpoint"), 4); /* 3 + "other" */
	CHECK_EQ_U64(label_limits__distinct(l, "tenant"), 4);
	CHECK_EQ_U64(stats.values_other, 3);
	CHECK_EQ_U64(stats.labels_kept, 10);
	CHECK_EQ_U64(stats.labels_dropped, 0);
	/* A program's own "other" is the overflow value, not one more. */
	label_limits__free(l);
	stats = (struct label_limits_stats){ 0 };
	CHECK(label_limits__new(&config, &stats, &l) == 0);
	CHECK_STR(admit(l, "k", "other"), "other");
	CHECK_STR(admit(l, "k", "a"), "a");
	CHECK_STR(admit(l, "k", "b"), "b");
	CHECK_STR(admit(l, "k", "c"), "c");
	CHECK_STR(admit(l, "k", "d"), LABEL_LIMITS_OTHER);
	CHECK_EQ_U64(label_limits__distinct(l, "k"), 4);
	label_limits__free(l);
}

static void test_many_distinct_values_stay_bounded(void)
{
	struct label_limits_config config = defaults();
	struct label_limits_stats stats = { 0 };
	struct label_limits *l;
	char value[32];
	size_t other = 0;

	config.max_values = 1000;
	CHECK(label_limits__new(&config, &stats, &l) == 0);
	for (int i = 0; i < 50000; i++) {
		const char *v;

		snprintf(value, sizeof(value), "trace-%d", i);
		v = admit(l, "request_id", value);
		CHECK(v != NULL);
		other += v && strcmp(v, LABEL_LIMITS_OTHER) == 0;
	}
	CHECK_EQ_U64(other, 49000);
	CHECK_EQ_U64(label_limits__distinct(l, "request_id"), 1001);
	CHECK_EQ_U64(stats.values_other, 49000);
	label_limits__free(l);
}

static void test_configured_keys_only(void)
{
	char *keys[] = { "endpoint", "tenant" };
	struct label_limits_config config = defaults();
	struct label_limits_stats stats = { 0 };
	struct label_limits *l;

	config.keys = keys;
	config.n_keys = 2;
	CHECK(label_limits__new(&config, &stats, &l) == 0);
	CHECK_STR(admit(l, "tenant", "acme"), "acme");
	CHECK(admit(l, "user_id", "42") == NULL);
	CHECK(admit(l, "session", "x") == NULL);
	CHECK_STR(admit(l, "endpoint", "GET /"), "GET /");
	CHECK_EQ_U64(stats.labels_dropped, 2);
	CHECK_EQ_U64(stats.labels_kept, 2);
	label_limits__free(l);
}

static void test_default_keeps_the_first_max_keys(void)
{
	struct label_limits_config config = defaults();
	struct label_limits_stats stats = { 0 };
	struct label_limits *l;
	const char *k, *v;

	config.max_keys = 2;
	CHECK(label_limits__new(&config, &stats, &l) == 0);
	CHECK_STR(admit(l, "endpoint", "a"), "a");
	CHECK_STR(admit(l, "tenant", "b"), "b");
	CHECK(admit(l, "region", "c") == NULL);
	CHECK_STR(admit(l, "endpoint", "d"), "d");
	CHECK_EQ_U64(stats.labels_dropped, 1);
	/* Keys become label names: OTel's dotted keys, and bytes no label name has. */
	label_limits__free(l);
	config = defaults();
	CHECK(label_limits__new(&config, &stats, &l) == 0);
	CHECK(label_limits__admit(l, "http.route", "/x", &k, &v) == 1);
	CHECK_STR(k, "http_route");
	CHECK(label_limits__admit(l, "9lives\xff", "/x", &k, &v) == 1);
	CHECK_STR(k, "_lives_");
	CHECK(label_limits__admit(l, "", "/x", &k, &v) == 0);
	label_limits__free(l);
}

static void test_values_cut_at_a_utf8_boundary(void)
{
	struct label_limits_config config = defaults();
	struct label_limits_stats stats = { 0 };
	struct label_limits *l;
	/* "ab" then U+00E9 (2 bytes) then U+20AC (3 bytes): a cut at 4 bytes would split the
	 * euro sign, at 3 bytes it would not. */
	const char *text = "ab\xc3\xa9\xe2\x82\xac";

	config.max_value_bytes = 5;
	CHECK(label_limits__new(&config, &stats, &l) == 0);
	CHECK_STR(admit(l, "k", text), "ab\xc3\xa9");
	CHECK_STR(admit(l, "k", "abc"), "abc");
	/* Bytes that are not UTF-8 are replaced (U+FFFD), and counted. */
	CHECK_STR(admit(l, "other_key", "a\xff"), "a\xef\xbf\xbd");
	CHECK_EQ_U64(stats.values_truncated, 2);
	/* Values equal once cut are one value. */
	CHECK(admit(l, "k", "ab\xc3\xa9\xe2\x82\xacXYZ") == admit(l, "k", text));
	label_limits__free(l);
}

static void test_bad_configuration_is_refused(void)
{
	struct label_limits_config config = defaults();
	struct label_limits *l = (struct label_limits *)1;

	config.max_values = 0;
	CHECK(label_limits__new(&config, NULL, &l) == -EINVAL);
	CHECK(l == NULL);
	config = defaults();
	config.max_keys = LABEL_LIMITS_MAX_KEYS + 1;
	CHECK(label_limits__new(&config, NULL, &l) == -EINVAL);
	config = defaults();
	config.max_value_bytes = LABEL_LIMITS_MAX_VALUE_BYTES + 1;
	CHECK(label_limits__new(&config, NULL, &l) == -EINVAL);
	/* No stats: still works. */
	config = defaults();
	CHECK(label_limits__new(&config, NULL, &l) == 0);
	CHECK_STR(admit(l, "k", "v"), "v");
	label_limits__free(l);
	label_limits__free(NULL);
}

int main(void)
{
	RUN(test_values_past_the_limit_become_other);
	RUN(test_many_distinct_values_stay_bounded);
	RUN(test_configured_keys_only);
	RUN(test_default_keeps_the_first_max_keys);
	RUN(test_values_cut_at_a_utf8_boundary);
	RUN(test_bad_configuration_is_refused);
	return unit_summary("label_limits");
}
