/* Where the unit tests find the files tests/unit/fixtures.mk builds: $ALLOCSCOPE_FIXTURES, or
 * build/fixtures relative to the repository root the tests run from. */
#ifndef ALLOCSCOPE_TEST_FIXTURES_H
#define ALLOCSCOPE_TEST_FIXTURES_H

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The fixture's path; the last eight results stay valid. */
static inline const char *fixture(const char *name)
{
	static char paths[8][PATH_MAX];
	static int next;
	const char *dir = getenv("ALLOCSCOPE_FIXTURES");
	char *path = paths[next++ % 8];

	snprintf(path, PATH_MAX, "%s/%s", dir && *dir ? dir : "build/fixtures", name);
	return path;
}

static inline bool ends_with(const char *s, const char *suffix)
{
	size_t n = s ? strlen(s) : 0, m = strlen(suffix);

	return s && n >= m && strcmp(s + n - m, suffix) == 0;
}

#endif
