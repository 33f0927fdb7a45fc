/* Unit tests for reading profiles back (agent/read/): the pprof reader, `allocscope report`
 * (top table by site and by function, tags, group-by, collapsed, JSON) and `allocscope diff`,
 * on profiles of known content written by the pprof builder, and on a Go runtime heap profile
 * written by a Go program at test time (build/fixtures/go_heap.pb.gz, tests/unit/fixtures.mk).
 * Bad input (missing, empty, truncated, not pprof, no samples) is refused with a sentence. */
#include "unit.h"
#include "fixtures.h"
#include "profile/pprof.h"
#include "read/aggregate.h"
#include "read/diff.h"
#include "read/flamegraph_html.h"
#include "read/pprof_reader.h"
#include "read/report.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/test_report-XXXXXX";

static const char *tmp_path(const char *name)
{
	static char paths[4][PATH_MAX];
	static int next;
	char *path = paths[next++ % 4];

	snprintf(path, PATH_MAX, "%s/%s", tmpdir, name);
	return path;
}

/* The known profile: an executable (mapping 1) with the sites and libc (mapping 2) with
 * malloc. Stacks leaf first:
 *   malloc <- site_a <- main          2 objects, 100 bytes   endpoint=/a
 *   malloc <- zmalloc <- site_b <- main  1 object, 300 bytes endpoint=/b
 *   malloc <- site_a <- main          1 object,  50 bytes    endpoint=/b
 *   malloc <- [exe+0x1234] <- main    1 object,  10 bytes    (no label)
 * scale multiplies the bytes; extra adds "malloc <- site_new <- main" (1, 40). */
static int write_known(const char *path, int64_t scale, bool extra, int64_t duration_ns)
{
	const struct pprof_value_type types[] = {{"alloc_objects", "count"},
						 {"alloc_space", "bytes"}};
	struct pprof_builder *b = pprof_builder__new(
	    types, 2, (struct pprof_value_type){"space", "bytes"}, 524288, "alloc_space");
	struct pprof_mapping exe = {.memory_start = 0x400000,
				    .memory_limit = 0x500000,
				    .filename = "/usr/bin/app",
				    .has_functions = true};
	struct pprof_mapping libc = {.memory_start = 0x7f0000000000,
				     .memory_limit = 0x7f0000100000,
				     .filename = "/lib/libc.so.6",
				     .has_functions = true};
	uint64_t m1 = pprof_builder__add_mapping(b, &exe),
		 m2 = pprof_builder__add_mapping(b, &libc);
	const char *names[] = {"malloc", "site_a", "zmalloc", "site_b", "main", "site_new"};
	uint64_t loc[7];
	int ret;

	for (int i = 0; i < 6; i++) {
		struct pprof_line line = {pprof_builder__function(b, names[i], names[i], "", 0), 0};

		loc[i] = pprof_builder__location(
		    b, i == 0 ? m2 : m1, (i == 0 ? 0x7f0000001000 : 0x401000) + 16 * i, &line, 1);
	}
	loc[6] = pprof_builder__location(b, m1, 0x401234, NULL, 0);
	struct pprof_label a = {"endpoint", "/a", 0, NULL}, bb = {"endpoint", "/b", 0, NULL};
	const uint64_t s1[] = {loc[0], loc[1], loc[4]}, s2[] = {loc[0], loc[2], loc[3], loc[4]},
		       s4[] = {loc[0], loc[6], loc[4]}, s5[] = {loc[0], loc[5], loc[4]};
	const int64_t v1[] = {2, 100 * scale}, v2[] = {1, 300 * scale}, v3[] = {1, 50 * scale},
		      v4[] = {1, 10 * scale}, v5[] = {1, 40};

	pprof_builder__add_sample(b, s1, 3, v1, &a, 1);
	pprof_builder__add_sample(b, s2, 4, v2, &bb, 1);
	pprof_builder__add_sample(b, s1, 3, v3, &bb, 1);
	pprof_builder__add_sample(b, s4, 3, v4, NULL, 0);
	if (extra)
		pprof_builder__add_sample(b, s5, 3, v5, NULL, 0);
	pprof_builder__set_time(b, 1, duration_ns);
	ret = pprof_builder__write_file(b, path);
	pprof_builder__free(b);
	return ret;
}

/* Runs report_write into a string the caller frees. */
static char *report_text(const struct pprof_file *file, const struct report_opts *opts)
{
	char *text = NULL, err[256] = "";
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	int ret = report_write(file, "known.pb.gz", opts, out, err, sizeof(err));

	fclose(out);
	if (ret) {
		fprintf(stderr, "  report_write: %s\n", err);
		free(text);
		return strdup("");
	}
	return text;
}

static struct pprof_file *read_ok(const char *path)
{
	struct pprof_file *file = NULL;
	char err[512] = "";

	if (pprof_file__read(path, &file, err, sizeof(err)) != 0)
		fprintf(stderr, "  cannot read %s: %s\n", path, err);
	return file;
}

static void reads_known_profile(void)
{
	struct pprof_file *file;

	CHECK(write_known(tmp_path("known.pb.gz"), 1, false, 2000000000) == 0);
	file = read_ok(tmp_path("known.pb.gz"));
	CHECK(file != NULL);
	if (!file)
		return;
	CHECK_EQ_U64(file->n_types, 2);
	CHECK_STR(file->types[file->default_type].type, "alloc_space");
	CHECK_EQ_U64(file->n_samples, 4);
	CHECK_EQ_U64(file->duration_nanos, 2000000000);
	CHECK_EQ_U64(file->samples[1].n_frames, 4);
	CHECK_STR(file->samples[1].frames[0]->name, "malloc");
	CHECK_STR(file->samples[1].frames[3]->name, "main");
	CHECK_EQ_U64(file->samples[1].values[1], 300);
	CHECK_STR(file->samples[3].frames[1]->name, "app+0x1234");
	char buf[32];

	CHECK_STR(pprof_sample__label(&file->samples[0], "endpoint", buf, sizeof(buf)), "/a");
	CHECK(pprof_sample__label(&file->samples[3], "endpoint", buf, sizeof(buf)) == NULL);
	pprof_file__free(file);
}

static void report_by_site(void)
{
	struct pprof_file *file = read_ok(tmp_path("known.pb.gz"));
	struct report_opts opts = {.top = 10};
	char *text;

	if (!file)
		return;
	text = report_text(file, &opts);
	/* zmalloc is looked through; libc's malloc is never a site; sorted by bytes. */
	CHECK(strstr(text, "   alloc_space   share   alloc_objects  allocation site\n"
			   "         300 B   65.2%               1  site_b\n"
			   "         150 B   32.6%               3  site_a\n"
			   "          10 B    2.2%               1  app+0x1234\n"
			   "         460 B                       5  total\n") != NULL);
	free(text);
	/* By objects: the companion column is bytes. */
	opts.sample_type = "alloc_objects";
	opts.top = 1;
	text = report_text(file, &opts);
	CHECK(strstr(text, " alloc_objects   share     alloc_space  allocation site\n"
			   "             3   60.0%           150 B  site_a\n"
			   "             5                   460 B  total\n") != NULL);
	free(text);
	pprof_file__free(file);
}

static void report_by_function_tag_and_group(void)
{
	struct pprof_file *file = read_ok(tmp_path("known.pb.gz"));
	struct report_opts opts = {.top = 3, .by = AGGREGATE_BY_FUNCTION, .by_cum = true};
	char *text;

	if (!file)
		return;
	text = report_text(file, &opts);
	CHECK(strstr(text, "         460 B 100.0%          460 B 100.0%  malloc\n") != NULL);
	CHECK(strstr(text, "           0 B   0.0%          460 B 100.0%  main\n") != NULL);
	CHECK(strstr(text, "           0 B   0.0%          300 B  65.2%  site_b\n") != NULL);
	free(text);
	/* --tag endpoint=/b keeps two samples. */
	opts = (struct report_opts){.top = 10};
	CHECK(report_parse_tag(&opts.filter, "endpoint=/b") == 0);
	text = report_text(file, &opts);
	CHECK(strstr(text, "only samples with endpoint=/b") != NULL);
	CHECK(strstr(text, "50 B   14.3%               1  site_a\n") != NULL);
	CHECK(strstr(text, "350 B                       2  total\n") != NULL);
	CHECK(strstr(text, "app+0x1234") == NULL);
	free(text);
	report_free_tags(&opts.filter);
	/* --group-by endpoint: one table per value, then the samples without it. */
	opts = (struct report_opts){.top = 10, .group_by = "endpoint"};
	text = report_text(file, &opts);
	const char *a = strstr(text, "\nendpoint=/a:"), *b = strstr(text, "\nendpoint=/b:"),
		   *unset = strstr(text, "\nendpoint=(unset):");

	CHECK(a && b && unset && a < b && b < unset);
	CHECK(unset && strstr(unset, "10 B  100.0%               1  app+0x1234") != NULL);
	free(text);
	CHECK(report_parse_tag(&opts.filter, "noequals") == -EINVAL);
	pprof_file__free(file);
}

/* A recursive function counts once per sample in cum, however deep it recurses. */
static void recursion_counts_once(void)
{
	const struct pprof_value_type types[] = {{"alloc_space", "bytes"}};
	struct pprof_builder *b = pprof_builder__new(types, 1, types[0], 1, NULL);
	struct pprof_line walk = {pprof_builder__function(b, "walk", NULL, NULL, 0), 0},
			  m = {pprof_builder__function(b, "malloc", NULL, NULL, 0), 0};
	uint64_t lm = pprof_builder__location(b, 0, 0x10, &m, 1),
		 lw = pprof_builder__location(b, 0, 0x20, &walk, 1);
	const uint64_t stack[] = {lm, lw, lw, lw};
	const int64_t value = 64;
	struct aggregate *agg = NULL;
	struct pprof_file *file;

	CHECK(pprof_builder__add_sample(b, stack, 4, &value, NULL, 0) == 0);
	CHECK(pprof_builder__write_file(b, tmp_path("recursive.pb.gz")) == 0);
	pprof_builder__free(b);
	file = read_ok(tmp_path("recursive.pb.gz"));
	if (!file)
		return;
	CHECK(aggregate__build(file, AGGREGATE_BY_FUNCTION, NULL, &agg) == 0);
	const struct aggregate_row *row = agg ? aggregate__find(agg, "walk") : NULL;

	CHECK(row && row->cum[0] == 64 && row->flat[0] == 0);
	aggregate__free(agg);
	pprof_file__free(file);
}

static void collapsed_and_json(void)
{
	struct pprof_file *file = read_ok(tmp_path("known.pb.gz"));
	struct report_opts opts = {.format = REPORT_COLLAPSED};
	char *text;

	if (!file)
		return;
	text = report_text(file, &opts);
	/* Root first, identical stacks merged, sorted. */
	CHECK_STR(text, "main;app+0x1234;malloc 10\n"
			"main;site_a;malloc 150\n"
			"main;site_b;zmalloc;malloc 300\n");
	free(text);
	opts.group_by = "endpoint";
	opts.sample_type = "alloc_objects";
	text = report_text(file, &opts);
	CHECK(strstr(text, "endpoint=/b;main;site_a;malloc 1\n") != NULL);
	CHECK(strstr(text, "endpoint=(unset);main;app+0x1234;malloc 1\n") != NULL);
	free(text);
	opts = (struct report_opts){.format = REPORT_JSON, .top = 1};
	text = report_text(file, &opts);
	CHECK(strstr(text, "\"sample_type\":\"alloc_space\"") != NULL);
	CHECK(strstr(text,
		     "\"rows\":[{\"name\":\"site_b\",\"alloc_objects\":1,\"alloc_space\":300}]") !=
	      NULL);
	CHECK(strstr(text, "\"totals\":{\"alloc_objects\":5,\"alloc_space\":460}") != NULL);
	free(text);
	pprof_file__free(file);
}

static char *diff_text(const struct pprof_file *a, const struct pprof_file *b,
		       const struct diff_opts *opts, bool *regressed)
{
	char *text = NULL, err[256] = "";
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	int ret = diff_write(a, "base", b, "new", opts, out, regressed, err, sizeof(err));

	fclose(out);
	if (ret) {
		free(text);
		return strdup(err);
	}
	return text;
}

static void diff_sites(void)
{
	struct pprof_file *a, *b;
	struct diff_opts opts = {.top = 10, .fail_above = -1};
	bool regressed;
	char *text;

	/* new: every site doubled, plus site_new; over 4 s instead of 2 s. */
	CHECK(write_known(tmp_path("new.pb.gz"), 2, true, 4000000000) == 0);
	a = read_ok(tmp_path("known.pb.gz"));
	b = read_ok(tmp_path("new.pb.gz"));
	if (!a || !b)
		goto out;
	text = diff_text(a, b, &opts, &regressed);
	CHECK(strstr(text, "alloc_space: 460 B -> 960 B (+500 B, +108.7%)") != NULL);
	CHECK(
	    strstr(text,
		   "grew or started allocating:\n"
		   "            base              new            delta   change  allocation site\n"
		   "           300 B            600 B           +300 B  +100.0%  site_b\n"
		   "           150 B            300 B           +150 B  +100.0%  site_a\n"
		   "             0 B             40 B            +40 B      new  site_new\n"
		   "            10 B             20 B            +10 B  +100.0%  app+0x1234\n") !=
	    NULL);
	CHECK(!regressed);
	free(text);
	/* Per second the sites did not change; only site_new is new. */
	opts.normalize = DIFF_NORMALIZE_SECONDS;
	opts.fail_above = 4;
	text = diff_text(a, b, &opts, &regressed);
	CHECK(strstr(text, "+10 B/s      new  site_new\n") != NULL);
	CHECK(strstr(text, "site_b") == NULL);
	CHECK(regressed); /* 230 B/s -> 240 B/s: site_new's 10 B/s is 4.3% of the base */
	free(text);
	opts.fail_above = 10;
	text = diff_text(a, b, &opts, &regressed);
	CHECK(!regressed);
	free(text);
	/* Reversed: the site stops allocating. */
	opts = (struct diff_opts){.top = 10, .fail_above = -1, .normalize = DIFF_NORMALIZE_TOTAL};
	text = diff_text(b, a, &opts, &regressed);
	CHECK(strstr(text, "shrank or stopped allocating:") != NULL);
	CHECK(strstr(text, "    gone  site_new\n") != NULL);
	free(text);
	/* By function: cumulative. */
	opts = (struct diff_opts){.top = 2, .fail_above = -1, .by = AGGREGATE_BY_FUNCTION};
	text = diff_text(a, b, &opts, &regressed);
	CHECK(strstr(text, "+500 B  +108.7%  main\n") != NULL);
	free(text);
	/* A type one profile lacks. */
	opts.sample_type = "inuse_space";
	text = diff_text(a, b, &opts, &regressed);
	CHECK(strstr(text, "no sample type 'inuse_space'") != NULL);
	free(text);
out:
	pprof_file__free(a);
	pprof_file__free(b);
}

static void go_heap_profile(void)
{
	struct pprof_file *file = read_ok(fixture("go_heap.pb.gz"));
	struct aggregate *agg = NULL;
	size_t type;
	char err[256];

	CHECK(file != NULL);
	if (!file)
		return;
	/* Go writes four types, inuse_space the default. */
	CHECK_EQ_U64(file->n_types, 4);
	CHECK_STR(file->types[file->default_type].type, "inuse_space");
	CHECK(report_sample_type(file, "alloc_space", &type, err, sizeof(err)) == 0);
	CHECK(aggregate__build(file, AGGREGATE_BY_SITE, NULL, &agg) == 0);
	if (!agg)
		goto out;
	aggregate__sort(agg, type, false);
	const struct aggregate_row *large = aggregate__find(agg, "main.allocLarge"),
				   *small = aggregate__find(agg, "main.allocSmall");

	CHECK(large && small);
	CHECK(agg->rows[0].name && strcmp(agg->rows[0].name, "main.allocLarge") == 0);
	/* Every allocation sampled: 64 MiB, plus the slice of slices growing. */
	CHECK(large && large->flat[type] >= 64 << 20 && large->flat[type] < (64 << 20) + 65536);
	CHECK(small && small->flat[type] == 1000 * 4096);
	/* Dropped before the profile: nearly nothing in use. */
	int inuse = pprof_file__type_index(file, "inuse_space");

	CHECK(small && inuse >= 0 && small->flat[inuse] <= 4096);
	aggregate__free(agg);
	/* Folded stacks name Go's frames, root first. */
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);

	report_collapsed(file, type, NULL, NULL, out);
	fclose(out);
	CHECK(strstr(text, "main.main;main.allocSmall 4096000\n") != NULL);
	free(text);
out:
	pprof_file__free(file);
}

static void expect_refused(const char *path, int expected, const char *words)
{
	struct pprof_file *file = NULL;
	char err[512] = "";
	int ret = pprof_file__read(path, &file, err, sizeof(err));

	CHECK(ret == expected);
	CHECK(file == NULL);
	if (!strstr(err, words))
		fprintf(stderr, "  %s: \"%s\" lacks \"%s\"\n", path, err, words);
	CHECK(strstr(err, words) != NULL);
}

static void write_bytes(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	CHECK(fd >= 0 && write(fd, data, len) == (ssize_t)len);
	close(fd);
}

static void bad_input(void)
{
	char data[65536];
	int fd = open(tmp_path("known.pb.gz"), O_RDONLY);
	ssize_t len = read(fd, data, sizeof(data));

	close(fd);
	CHECK(len > 40);
	expect_refused(tmp_path("missing.pb.gz"), -ENOENT, "No such file");
	write_bytes(tmp_path("empty.pb.gz"), "", 0);
	expect_refused(tmp_path("empty.pb.gz"), -EINVAL, "the file is empty");
	write_bytes(tmp_path("truncated.pb.gz"), data, (size_t)len / 2);
	expect_refused(tmp_path("truncated.pb.gz"), -EINVAL, "truncated");
	write_bytes(tmp_path("text.txt"), "hello, this is not a profile\n", 29);
	expect_refused(tmp_path("text.txt"), -EINVAL, "not a pprof profile");
	write_bytes(tmp_path("legacy.txt"), "heap profile: 1: 2 [3: 4] @ heapprofile\n", 40);
	expect_refused(tmp_path("legacy.txt"), -EINVAL, "legacy text heap profile");
	write_bytes(tmp_path("jeprof.heap"), "heap_v2/524288\n  t*: 6: 87284 [0: 0]\n", 36);
	expect_refused(tmp_path("jeprof.heap"), -EINVAL, "jemalloc heap dump");
	/* A corrupt byte in the middle of the gzip data. */
	data[len / 2] ^= 0x55;
	write_bytes(tmp_path("corrupt.pb.gz"), data, (size_t)len);
	expect_refused(tmp_path("corrupt.pb.gz"), -EINVAL, "cannot read");
	expect_refused(tmpdir, -EINVAL, "not a regular file");

	/* A valid profile without samples. */
	const struct pprof_value_type types[] = {{"alloc_space", "bytes"}};
	struct pprof_builder *b = pprof_builder__new(types, 1, types[0], 1, NULL);

	CHECK(pprof_builder__write_file(b, tmp_path("nosamples.pb.gz")) == 0);
	pprof_builder__free(b);
	expect_refused(tmp_path("nosamples.pb.gz"), -ENODATA, "holds no samples");
}

static void html_page(void)
{
	struct pprof_file *a = read_ok(tmp_path("known.pb.gz")),
			  *b = read_ok(tmp_path("new.pb.gz"));
	char *text = NULL;
	size_t len = 0;
	FILE *out;

	if (!a || !b)
		goto out;
	out = open_memstream(&text, &len);
	CHECK(flamegraph_html_print(out, NULL, NULL, a, "known.pb.gz", 1, NULL) == 0);
	fclose(out);
	CHECK(strncmp(text, "<!DOCTYPE html>", 15) == 0);
	CHECK(strstr(text, "site_b") != NULL);
	CHECK(strstr(text, "http://") == NULL && strstr(text, "https://") == NULL);
	CHECK(strstr(text, "<script src") == NULL);
	free(text);
	text = NULL;
	out = open_memstream(&text, &len);
	CHECK(flamegraph_html_print(out, a, "known.pb.gz", b, "new.pb.gz", 1, NULL) == 0);
	fclose(out);
	CHECK(strstr(text, "site_new") != NULL);
	CHECK(strstr(text, "\"diff\":true") != NULL);
	free(text);
	/* A path that is a directory: refused, nothing written. */
	char err[256] = "";

	CHECK(flamegraph_html_write(tmpdir, NULL, NULL, a, "a", 1, NULL, err, sizeof(err)) ==
	      -EISDIR);
	CHECK(flamegraph_html_write(tmp_path("page.html"), NULL, NULL, a, "a", 1, NULL, err,
				    sizeof(err)) == 0);
	struct stat st;

	CHECK(stat(tmp_path("page.html"), &st) == 0 && st.st_size > 1000);
out:
	pprof_file__free(a);
	pprof_file__free(b);
}

int main(void)
{
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	RUN(reads_known_profile);
	RUN(report_by_site);
	RUN(report_by_function_tag_and_group);
	RUN(recursion_counts_once);
	RUN(collapsed_and_json);
	RUN(diff_sites);
	RUN(go_heap_profile);
	RUN(bad_input);
	RUN(html_page);
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return unit_summary("report");
}
