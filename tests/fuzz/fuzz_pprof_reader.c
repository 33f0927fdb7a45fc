/* libFuzzer harness: pprof profiles as `allocscope report` and `diff` read them
 * (read/pprof_reader.c), then everything that renders a read profile: sites and functions,
 * folded stacks, JSON, the diff of the profile with itself and the flame graph page. A
 * profile comes from anywhere (another host, another tool), so every byte is hostile. A
 * refusal must come with a message; what is accepted must render without a crash. Seeds are
 * uncompressed (the fuzzer cannot mutate through gzip) plus gzipped ones for the inflate path. */
#include "fuzz.h"
#include "read/aggregate.h"
#include "read/diff.h"
#include "read/flamegraph_html.h"
#include "read/pprof_reader.h"
#include "read/report.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pprof_file *file = NULL;
	char err[512] = "";
	int ret = pprof_file__parse(data, size, "input", &file, err, sizeof(err));
	FILE *out;

	if (ret) {
		if (!err[0] || file)
			abort();
		return 0;
	}
	out = fopen("/dev/null", "w");
	if (!out)
		abort();
	for (size_t t = 0; t < file->n_types; t++) {
		struct report_opts opts = {.format = REPORT_JSON, .top = 5, .group_by = "pid"};
		struct diff_opts diff = {
		    .top = 5, .fail_above = 1, .sample_type = file->types[t].type};
		bool regressed;

		opts.sample_type = file->types[t].type;
		if (report_write(file, "input", &opts, out, err, sizeof(err)) != 0 && !err[0])
			abort();
		opts.format = REPORT_TEXT;
		opts.by = AGGREGATE_BY_FUNCTION;
		report_write(file, "input", &opts, out, err, sizeof(err));
		report_collapsed(file, t, NULL, "pid", out);
		diff_write(file, "a", file, "b", &diff, out, &regressed, err, sizeof(err));
		flamegraph_html_print(out, t ? file : NULL, "a", file, "b", t, NULL);
	}
	fclose(out);
	pprof_file__free(file);
	return 0;
}
