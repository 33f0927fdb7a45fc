// allocs_per_run in a GoogleTest test (docs/ci-gate.md), the example the docs show: the code
// under test splits a line into words; the test asserts with EXPECT_LE that one call makes at
// most 3 allocations (the vector, reserved once, and the two words too long for std::string's
// inline buffer). Built with -DSPLIT_WITHOUT_RESERVE the vector grows instead (1, 2, 4
// elements: 3 allocations for it, 5 in all) and the test must fail, naming the line.
// tests/e2e/gate_tests.py builds it at test time (g++, libgtest-dev) and runs it under
// `allocscope count`, and without liballocscope-count.so (then allocs_per_run is INFINITY and
// the test fails instead of passing unchecked).
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "allocscope_count.h"

namespace {

std::vector<std::string> split_words(const std::string &line)
{
	std::vector<std::string> words;
	size_t start = 0;

#ifndef SPLIT_WITHOUT_RESERVE
	words.reserve(static_cast<size_t>(std::count(line.begin(), line.end(), ' ')) + 1);
#endif
	while (start <= line.size()) {
		size_t end = line.find(' ', start);

		if (end == std::string::npos)
			end = line.size();
		words.emplace_back(line, start, end - start);
		start = end + 1;
	}
	return words;
}

// allocs_per_run takes a C function and a void * argument.
void split_line(void *arg)
{
	const auto &line = *static_cast<const std::string *>(arg);

	EXPECT_EQ(split_words(line).size(), 3u);
}

} // namespace

TEST(SplitWords, AllocatesAtMostThreeTimes)
{
	std::string line = "a-word-longer-than-sso-buffer ok another-word-longer-than-sso";

	EXPECT_LE(allocs_per_run(100, split_line, &line), 3);
}

TEST(SplitWords, LambdaForm)
{
	std::string line = "short words only";

	// Three words within the inline buffer: only the vector allocates. A lambda without
	// captures converts to the C function allocs_per_run takes.
	EXPECT_LE(allocs_per_run(
			  100, [](void *arg) { split_words(*static_cast<std::string *>(arg)); },
			  &line),
		  1);
}
