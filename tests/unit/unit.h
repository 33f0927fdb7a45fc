/* A tiny unit-test harness: each tests/unit/test_*.c is one executable whose main() runs
 * its cases with RUN(case) and ends with return unit_summary("name"). CHECK records a
 * failure with file:line and goes on, so one run shows every broken expectation; the
 * closing line "name: N passed, M failed" is what `make test` and CI read. */
#ifndef ALLOCSCOPE_UNIT_H
#define ALLOCSCOPE_UNIT_H

#include <stdio.h>
#include <string.h>
#include <inttypes.h>

static int unit_cases_passed, unit_cases_failed, unit_case_failures;

#define CHECK(cond)                                                                        \
	do {                                                                               \
		if (!(cond)) {                                                             \
			fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, \
				#cond);                                                    \
			unit_case_failures++;                                              \
		}                                                                          \
	} while (0)

#define CHECK_EQ_U64(actual, expected)                                                       \
	do {                                                                                 \
		uint64_t unit_a_ = (uint64_t)(actual), unit_e_ = (uint64_t)(expected);       \
		if (unit_a_ != unit_e_) {                                                    \
			fprintf(stderr, "  %s:%d: %s == %" PRIu64 ", expected %" PRIu64 "\n", \
				__FILE__, __LINE__, #actual, unit_a_, unit_e_);              \
			unit_case_failures++;                                                \
		}                                                                            \
	} while (0)

#define CHECK_STR(actual, expected)                                                        \
	do {                                                                               \
		const char *unit_a_ = (actual), *unit_e_ = (expected);                     \
		if (!unit_a_ || strcmp(unit_a_, unit_e_) != 0) {                           \
			fprintf(stderr, "  %s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, \
				__LINE__, #actual, unit_a_ ? unit_a_ : "(null)", unit_e_); \
			unit_case_failures++;                                              \
		}                                                                          \
	} while (0)

#define RUN(test_case)                                                                   \
	do {                                                                             \
		unit_case_failures = 0;                                                  \
		test_case();                                                             \
		if (unit_case_failures) {                                                \
			fprintf(stderr, "FAIL %s\n", #test_case);                        \
			unit_cases_failed++;                                             \
		} else {                                                                 \
			unit_cases_passed++;                                             \
		}                                                                        \
	} while (0)

static inline int unit_summary(const char *suite)
{
	printf("%s: %d passed, %d failed\n", suite, unit_cases_passed, unit_cases_failed);
	return unit_cases_failed ? 1 : 0;
}

#endif
