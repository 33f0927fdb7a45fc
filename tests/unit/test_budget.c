/* Budget files (agent/count/budget.c): the grammar, file:line errors, the comparison and the
 * ratchet (lower, never raise; comments and untouched lines kept byte for byte). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "count/budget.h"
#include "unit.h"

static struct budget *parse_ok(const char *text)
{
	struct budget *b = NULL;
	char err[512] = "";
	int ret = budget__parse("b.txt", text, strlen(text), &b, err, sizeof(err));

	if (ret)
		fprintf(stderr, "  unexpected error: %s\n", err);
	CHECK(ret == 0);
	return b;
}

/* The error message for text, which must be refused. */
static void parse_err(const char *text, const char *expected)
{
	struct budget *b = NULL;
	char err[512] = "";

	CHECK(budget__parse("b.txt", text, strlen(text), &b, err, sizeof(err)) == -EINVAL);
	CHECK(b == NULL);
	if (!strstr(err, expected))
		fprintf(stderr, "  error '%s' lacks '%s'\n", err, expected);
	CHECK(strstr(err, expected) != NULL);
}

static void test_parses_every_kind(void)
{
	struct budget *b = parse_ok("# header\n"
				    "\n"
				    "unlisted  objects=40\n"
				    "total objects=1200 bytes=65536\n"
				    "site   objects=3   make_node  \n"
				    "function bytes=400 objects=12 std::vector<int, std::allocator<int> >::push_back\n");

	if (!b)
		return;
	CHECK_EQ_U64(b->n_lines, 6);
	CHECK_EQ_U64(b->n_items, 4);
	CHECK(b->items[0].kind == BUDGET_UNLISTED && b->items[0].objects == 40 &&
	      b->items[0].bytes == BUDGET_NO_LIMIT && b->items[0].line == 3);
	CHECK(b->items[1].kind == BUDGET_TOTAL && b->items[1].objects == 1200 &&
	      b->items[1].bytes == 65536);
	CHECK_STR(b->items[2].name, "make_node");
	CHECK_EQ_U64(b->items[2].line, 5);
	CHECK_STR(b->items[3].name, "std::vector<int, std::allocator<int> >::push_back");
	CHECK(b->items[3].objects == 12 && b->items[3].bytes == 400);
	budget__free(b);
	b = parse_ok("unlisted ignore");
	if (b)
		CHECK(b->items[0].ignore);
	budget__free(b);
}

static void test_errors_name_file_and_line(void)
{
	parse_err("site objects=1 a\nsitee objects=1 b\n", "b.txt:2: unknown line kind 'sitee'");
	parse_err("\n\nsite objects=1x a\n", "b.txt:3: 'objects=1x' is not a count");
	parse_err("site objects=-1 a\n", "b.txt:1: 'objects=-1' is not a count");
	parse_err("site objects=99999999999999999999 a\n", "b.txt:1:");
	parse_err("site objects=1\n", "b.txt:1: site needs a name");
	parse_err("function make_node\n", "b.txt:1: no limit");
	parse_err("total objects=1 extra\n", "b.txt:1: unexpected 'extra'");
	parse_err("site objects=1 objects=2 a\n", "b.txt:1: objects given twice");
	parse_err("site objects=1 a\n# c\nsite objects=2 a\n", "b.txt:3: site a is already on line 1");
	parse_err("total objects=1\ntotal bytes=1\n", "b.txt:2: total is already on line 1");
	parse_err("unlisted ignore objects=3\n", "b.txt:1: unlisted is either ignore or limits");
	{
		static const char nul[] = "site objects=1 a\0b\n";
		struct budget *b = NULL;
		char err[256] = "";

		CHECK(budget__parse("b.txt", nul, sizeof(nul) - 1, &b, err, sizeof(err)) ==
		      -EINVAL);
		CHECK(strstr(err, "not a text file") != NULL);
	}
}

static const struct budget_measure sites[] = {
	{ "make_node", 5, 500 },
	{ "kv_copy", 60, 600 },
	{ "other", 7, 70 },
};
static const struct budget_measure functions[] = {
	{ "parse", 65, 1100 },
};
static const struct budget_measurements measured = {
	.sites = sites,
	.n_sites = 3,
	.functions = functions,
	.n_functions = 1,
	.total_objects = 72,
	.total_bytes = 1170,
};

static void test_check_finds_what_grew(void)
{
	struct budget *b = parse_ok("total objects=100\n"
				    "unlisted objects=6\n"
				    "site objects=5 bytes=499 make_node\n"
				    "site objects=61 kv_copy\n"
				    "function objects=64 parse\n"
				    "site objects=2 gone_function\n");
	struct budget_row *rows = NULL;
	size_t n = 0, over = 0;

	if (!b)
		return;
	CHECK(budget__check(b, &measured, &rows, &n, &over) == 0);
	CHECK_EQ_U64(n, 7);
	/* total 72 <= 100; unlisted: other = 7 > 6; make_node objects 5 <= 5, bytes 500 > 499;
	 * kv_copy 60 <= 61; parse 65 > 64; gone_function unseen (0 <= 2). */
	CHECK_EQ_U64(over, 3);
	CHECK(!rows[0].over && rows[0].measured == 72);
	CHECK(rows[1].over && rows[1].measured == 7 && rows[1].limit == 6);
	CHECK(!rows[2].over && strcmp(rows[2].metric, "objects") == 0);
	CHECK(rows[3].over && strcmp(rows[3].metric, "bytes") == 0 && rows[3].measured == 500);
	CHECK(!rows[4].over);
	CHECK(rows[5].over && rows[5].measured == 65);
	CHECK(rows[6].unseen && !rows[6].over && rows[6].measured == 0);
	free(rows);
	budget__free(b);
}

static void test_update_lowers_never_raises(void)
{
	struct budget *b = parse_ok("# keep me\n"
				    "total   objects=100   bytes=2000\n"
				    "site objects=9  make_node\n"
				    "site   objects=50   kv_copy\n"
				    "site objects=4 gone_function\n"
				    "unlisted ignore\n");
	char *text = NULL;
	size_t lowered = 0;

	if (!b)
		return;
	CHECK(budget__render_update(b, &measured, &text, &lowered) == 0);
	/* total and make_node come down to the run; kv_copy (60 > 50) stays at 50, over
	 * budget; the unseen function and everything else stay byte for byte. */
	CHECK_STR(text, "# keep me\n"
			"total     objects=72 bytes=1170\n"
			"site      objects=5  make_node\n"
			"site   objects=50   kv_copy\n"
			"site objects=4 gone_function\n"
			"unlisted ignore\n");
	CHECK_EQ_U64(lowered, 3);
	free(text);
	budget__free(b);
}

static void test_new_file_round_trips(void)
{
	struct budget *b = NULL;
	char *text = NULL, err[256];
	struct budget_row *rows = NULL;
	size_t n = 0, over = 1;

	CHECK(budget__render_new(&measured, &text) == 0);
	if (!text)
		return;
	CHECK(strstr(text, "site      objects=60  kv_copy\nsite      objects=5  make_node\n"));
	CHECK(budget__parse("new", text, strlen(text), &b, err, sizeof(err)) == 0);
	if (b) {
		CHECK(budget__check(b, &measured, &rows, &n, &over) == 0);
		CHECK_EQ_U64(n, 5); /* total objects and bytes, three sites */
		CHECK_EQ_U64(over, 0);
	}
	free(rows);
	free(text);
	budget__free(b);
}

static void test_write_is_atomic(void)
{
	char dir[] = "/tmp/test_budget.XXXXXX", path[256], err[256], buf[64] = "";
	FILE *f;

	if (!mkdtemp(dir)) {
		CHECK(0);
		return;
	}
	snprintf(path, sizeof(path), "%s/budget", dir);
	CHECK(budget__write_file(path, "total objects=1\n", err, sizeof(err)) == 0);
	f = fopen(path, "r");
	CHECK(f && fgets(buf, sizeof(buf), f));
	if (f)
		fclose(f);
	CHECK_STR(buf, "total objects=1\n");
	/* A directory that does not exist: an error, and nothing else written. */
	snprintf(path, sizeof(path), "%s/missing/budget", dir);
	CHECK(budget__write_file(path, "x\n", err, sizeof(err)) == -ENOENT);
	CHECK(strstr(err, "the old file is unchanged") != NULL);
	snprintf(path, sizeof(path), "%s/budget", dir);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	RUN(test_parses_every_kind);
	RUN(test_errors_name_file_and_line);
	RUN(test_check_finds_what_grew);
	RUN(test_update_lowers_never_raises);
	RUN(test_new_file_round_trips);
	RUN(test_write_is_atomic);
	return unit_summary("budget");
}
