/* `allocscope count` and `allocscope gate`: parse the command line, run count_run, print the
 * summary (sites and inclusive functions, exact), write the pprof, and for the gate compare
 * with the budget file, print the table, write the JUnit or Markdown report and ratchet the
 * file down on --update. */
#include "count/count_cli.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/units.h"
#include "count/budget.h"
#include "count/count_run.h"
#include "profile/alloc_profile.h"
#include "read/output_file.h"
#include "util/log.h"

#define EXIT_GATE_FAIL 1
#define EXIT_USAGE     2

static const char count_usage[] =
	"Usage: allocscope count [OPTIONS] -- COMMAND [ARGS...]\n"
	"       allocscope gate --budget FILE [--update] [--report junit|markdown FILE]\n"
	"                       [OPTIONS] -- COMMAND [ARGS...]\n"
	"\n"
	"count runs COMMAND with liballocscope-count.so preloaded and counts every allocation\n"
	"exactly (objects and bytes; no sampling, no privileges), per allocation site and per\n"
	"function (inclusive), in every process the command starts. It prints the top sites\n"
	"and functions and writes a pprof profile (alloc_objects, alloc_space). Its exit\n"
	"status is the command's.\n"
	"\n"
	"gate counts the same way, then compares with a budget file and exits 1 when any\n"
	"guarded site, function or total is over budget or the command failed, 0 otherwise.\n"
	"--update lowers the budgets to what was measured (never raises one) and creates FILE\n"
	"when it does not exist. See docs/ci-gate.md.\n"
	"\n"
	"Options:\n"
	"  -o, --output FILE        write the pprof profile here (count's default:\n"
	"                           alloc-count-<UTC time>.pb.gz; gate writes none without it)\n"
	"      --top N              rows in the site and function tables (default 10, 0-1000)\n"
	"      --skip-frames REGEX  wrapper functions to look through when naming sites\n"
	"      --no-aslr            run the command without address randomisation (a program\n"
	"                           whose allocations depend on addresses counts the same\n"
	"                           every run)\n"
	"  -b, --budget FILE        (gate) the budget file\n"
	"      --update             (gate) lower the budgets to this run's counts; create FILE\n"
	"      --report FMT FILE    (gate) also write a junit (XML) or markdown report\n"
	"  -h, --help               show this help\n";

struct count_cli {
	bool gate;
	const char *output;
	const char *budget_path;
	bool update;
	const char *report_format, *report_path;
	unsigned top;
	struct count_opts run;
};

bool count_cli_handles(const char *name)
{
	return name && (strcmp(name, "count") == 0 || strcmp(name, "gate") == 0);
}

static int usage_error(const char *sub, const char *fmt, const char *arg)
{
	fprintf(stderr, "allocscope %s: ", sub);
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry 'allocscope %s --help' for more information.\n", sub);
	return EXIT_USAGE;
}

static int parse_args(int argc, char **argv, struct count_cli *cli)
{
	enum { OPT_TOP = 256, OPT_SKIP, OPT_NO_ASLR, OPT_UPDATE, OPT_REPORT };
	static const struct option options[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "top", required_argument, NULL, OPT_TOP },
		{ "skip-frames", required_argument, NULL, OPT_SKIP },
		{ "no-aslr", no_argument, NULL, OPT_NO_ASLR },
		{ "budget", required_argument, NULL, 'b' },
		{ "update", no_argument, NULL, OPT_UPDATE },
		{ "report", required_argument, NULL, OPT_REPORT },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sub = argv[0];
	uint64_t value;
	char why[512];
	int c;

	cli->gate = strcmp(sub, "gate") == 0;
	cli->top = 10;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+o:b:h", options, NULL)) != -1) {
		switch (c) {
		case 'o':
			if (!*optarg)
				return usage_error(sub, "empty --output%s", "");
			cli->output = optarg;
			break;
		case OPT_TOP:
			if (units_parse_size(optarg, &value) != 0 || value > 1000)
				return usage_error(sub, "invalid --top '%s': expected 0 to 1000",
						   optarg);
			cli->top = (unsigned)value;
			break;
		case OPT_SKIP:
			if (alloc_profile_check_skip_frames(optarg, why, sizeof(why)) != 0)
				return usage_error(sub, "%s", why);
			cli->run.skip_frames = optarg;
			break;
		case OPT_NO_ASLR:
			cli->run.no_aslr = true;
			break;
		case 'b':
			if (!*optarg)
				return usage_error(sub, "empty --budget%s", "");
			cli->budget_path = optarg;
			break;
		case OPT_UPDATE:
			cli->update = true;
			break;
		case OPT_REPORT:
			if (strcmp(optarg, "junit") != 0 && strcmp(optarg, "markdown") != 0)
				return usage_error(sub,
						   "invalid --report '%s': expected junit or "
						   "markdown, then the report's FILE",
						   optarg);
			if (optind >= argc || !argv[optind][0] || strcmp(argv[optind], "--") == 0)
				return usage_error(sub, "--report %s needs a FILE after it",
						   optarg);
			cli->report_format = optarg;
			cli->report_path = argv[optind++];
			break;
		case 'h':
			fputs(count_usage, stdout);
			return -1;
		default:
			return usage_error(sub, "%s", "invalid option");
		}
	}
	if (!cli->gate && (cli->budget_path || cli->update || cli->report_format))
		return usage_error(sub, "%s",
				   "--budget, --update and --report belong to allocscope gate");
	if (cli->gate && !cli->budget_path)
		return usage_error(sub, "%s", "give the budget file: --budget FILE");
	if (optind < argc && strcmp(argv[optind - 1], "--") != 0 &&
	    strcmp(argv[optind], "--") == 0)
		optind++;
	if (optind >= argc)
		return usage_error(sub, "%s", "nothing to run: give -- COMMAND [ARGS...]");
	if (!argv[optind][0])
		return usage_error(sub, "%s", "empty COMMAND after '--'");
	cli->run.command = &argv[optind];
	return 0;
}

static void print_tables(const struct count_result *r, unsigned top)
{
	char bytes[32], name[1024];
	size_t rows;

	printf("\nallocscope: %" PRIu64 " allocations, %s, counted exactly in %zu process%s\n",
	       r->objects, units_format_size((double)r->bytes, bytes, sizeof(bytes)),
	       r->processes, r->processes == 1 ? "" : "es");
	if (r->unattributed_objects)
		printf("allocscope: %" PRIu64 " of them not attributed to a site (the count "
		       "table was full: more than 16384 distinct call chains)\n",
		       r->unattributed_objects);
	if (!top)
		return;
	rows = r->n_sites < top ? r->n_sites : top;
	printf("\n%15s %14s  %s\n", "alloc_objects", "alloc_space", "allocation site");
	for (size_t i = 0; i < rows; i++)
		printf("%15" PRIu64 " %14s  %s\n", r->sites[i].objects,
		       units_format_size((double)r->sites[i].bytes, bytes, sizeof(bytes)),
		       log_escaped(name, r->sites[i].name));
	printf("%15" PRIu64 " %14s  total\n", r->objects,
	       units_format_size((double)r->bytes, bytes, sizeof(bytes)));
	rows = r->n_functions < top ? r->n_functions : top;
	printf("\n%15s %14s  %s\n", "alloc_objects", "alloc_space", "function (inclusive)");
	for (size_t i = 0; i < rows; i++)
		printf("%15" PRIu64 " %14s  %s\n", r->functions[i].objects,
		       units_format_size((double)r->functions[i].bytes, bytes, sizeof(bytes)),
		       log_escaped(name, r->functions[i].name));
}

static int write_profile(const struct count_result *r, const char *path)
{
	static const char *const comments[] = {
		"allocscope count: exact allocation counts (every allocation, weight 1)", NULL
	};
	struct alloc_profile_output output = { .comments = comments };
	struct timespec now;
	int ret;

	clock_gettime(CLOCK_REALTIME, &now);
	output.start_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
	ret = alloc_profile__write_pprof(r->profile, path, &output);
	if (ret)
		fprintf(stderr, "allocscope: cannot write the profile %s: %s\n", path,
			strerror(-ret));
	else
		printf("allocscope: profile written to %s\n", path);
	return ret;
}

static void default_output(char *buf, size_t len)
{
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(buf, len, "alloc-count-%Y%m%dT%H%M%SZ.pb.gz", &tm);
}

static const char *kind_name(enum budget_kind kind)
{
	switch (kind) {
	case BUDGET_TOTAL:
		return "total";
	case BUDGET_UNLISTED:
		return "unlisted";
	case BUDGET_SITE:
		return "site";
	default:
		return "function";
	}
}

static const char *row_status(const struct budget_row *row)
{
	return row->over ? "OVER" : row->unseen ? "unseen" : "ok";
}

static void print_gate_table(const struct budget *b, const struct budget_row *rows, size_t n)
{
	char name[1024];

	printf("\n%-7s %-9s %-8s %12s %12s %12s  %s\n", "status", "kind", "metric", "budget",
	       "measured", "delta", "name");
	/* Over budget first: what a reviewer must look at. */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < n; i++) {
			const struct budget_row *row = &rows[i];

			if (row->over != (pass == 0))
				continue;
			printf("%-7s %-9s %-8s %12" PRIu64 " %12" PRIu64 " %+12" PRId64 "  %s\n",
			       row_status(row), kind_name(row->item->kind), row->metric,
			       row->limit, row->measured,
			       (int64_t)(row->measured - row->limit),
			       row->item->name ? log_escaped(name, row->item->name) : "");
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (!rows[i].unseen || (i && rows[i - 1].item == rows[i].item))
			continue;
		printf("allocscope gate: %s:%u: %s '%s' made no allocation in this run: renamed "
		       "or removed? Rename or delete the line.\n",
		       b->path, rows[i].item->line, kind_name(rows[i].item->kind),
		       log_escaped(name, rows[i].item->name));
	}
}

static void xml_escaped(FILE *f, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '<')
			fputs("&lt;", f);
		else if (c == '>')
			fputs("&gt;", f);
		else if (c == '&')
			fputs("&amp;", f);
		else if (c == '"')
			fputs("&quot;", f);
		else if (c < 0x20 && c != '\t')
			fputc('?', f);
		else
			fputc(c, f);
	}
}

static void markdown_escaped(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '|' || *s == '`' || *s == '*' || *s == '_' || *s == '<' || *s == '>' ||
		    *s == '[' || *s == ']' || *s == '\\')
			fputc('\\', f);
		fputc((unsigned char)*s < 0x20 ? '?' : *s, f);
	}
}

static int write_report(const struct count_cli *cli, const struct count_result *r,
			const struct budget_row *rows, size_t n, size_t n_over)
{
	/* Written whole or not at all, through a temporary file of a name nobody can plant a
	 * link at (the report may go to a shared directory). */
	struct output_file report;
	char err[PATH_MAX + 256];
	FILE *f;
	int ret;

	ret = output_file__open(&report, cli->report_path, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "allocscope gate: --report: %s\n", err);
		return ret;
	}
	f = report.stream;
	if (strcmp(cli->report_format, "junit") == 0) {
		fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
			   "<testsuite name=\"allocscope gate\" tests=\"%zu\" failures=\"%zu\">\n",
			n + 1, n_over + (r->command_failed ? 1 : 0));
		fprintf(f, "  <testcase classname=\"allocscope.gate\" name=\"command\">");
		if (r->command_failed)
			fprintf(f, "<failure message=\"the command exited with status %d\"/>",
				r->exit_status);
		fprintf(f, "</testcase>\n");
		for (size_t i = 0; i < n; i++) {
			fprintf(f, "  <testcase classname=\"allocscope.gate.%s\" name=\"",
				kind_name(rows[i].item->kind));
			xml_escaped(f, rows[i].item->name ? rows[i].item->name : "");
			fprintf(f, " %s\">", rows[i].metric);
			if (rows[i].over)
				fprintf(f,
					"<failure message=\"%s over budget: measured %" PRIu64
					", budget %" PRIu64 ", delta +%" PRIu64 "\"/>",
					rows[i].metric, rows[i].measured, rows[i].limit,
					rows[i].measured - rows[i].limit);
			fprintf(f, "</testcase>\n");
		}
		fprintf(f, "</testsuite>\n");
	} else {
		fprintf(f, "### allocscope gate: %s\n\n",
			n_over || r->command_failed ? "FAILED" : "passed");
		if (r->command_failed)
			fprintf(f, "The command exited with status %d.\n\n", r->exit_status);
		fprintf(f, "| status | kind | name | metric | budget | measured | delta |\n"
			   "|---|---|---|---|---:|---:|---:|\n");
		for (size_t i = 0; i < n; i++) {
			fprintf(f, "| %s | %s | ", row_status(&rows[i]),
				kind_name(rows[i].item->kind));
			markdown_escaped(f, rows[i].item->name ? rows[i].item->name : "");
			fprintf(f, " | %s | %" PRIu64 " | %" PRIu64 " | %+" PRId64 " |\n",
				rows[i].metric, rows[i].limit, rows[i].measured,
				(int64_t)(rows[i].measured - rows[i].limit));
		}
	}
	ret = output_file__commit(&report, err, sizeof(err));
	if (ret)
		fprintf(stderr, "allocscope gate: --report: %s\n", err);
	return ret;
}

/* Compares, prints, reports, ratchets. Returns the gate's exit status. */
static int run_gate(const struct count_cli *cli, struct budget *b, const struct count_result *r)
{
	struct budget_measurements m;
	struct budget_row *rows = NULL;
	size_t n = 0, n_over = 0, lowered = 0;
	char err[1024], *text = NULL;
	int status;

	count_result__measurements(r, &m);
	if (!b) { /* --update without a file: create it */
		if (r->command_failed) {
			printf("allocscope gate: the command exited with status %d: %s not "
			       "created\n",
			       r->exit_status, cli->budget_path);
			return EXIT_GATE_FAIL;
		}
		if (budget__render_new(&m, &text) != 0) {
			fprintf(stderr, "allocscope gate: out of memory\n");
			return EXIT_GATE_FAIL;
		}
		status = budget__write_file(cli->budget_path, text, err, sizeof(err));
		free(text);
		if (status) {
			fprintf(stderr, "allocscope gate: %s\n", err);
			return EXIT_GATE_FAIL;
		}
		printf("allocscope gate: created %s: total and %zu sites at this run's counts\n",
		       cli->budget_path, m.n_sites);
		return 0;
	}
	if (budget__check(b, &m, &rows, &n, &n_over) != 0) {
		fprintf(stderr, "allocscope gate: out of memory\n");
		return EXIT_GATE_FAIL;
	}
	print_gate_table(b, rows, n);
	if (cli->report_format)
		write_report(cli, r, rows, n, n_over);
	status = n_over || r->command_failed ? EXIT_GATE_FAIL : 0;
	if (r->command_failed)
		printf("allocscope gate: FAIL: the command exited with status %d\n",
		       r->exit_status);
	if (n_over)
		printf("allocscope gate: FAIL: %zu of %zu limits over budget (%s)\n", n_over, n,
		       b->path);
	else if (!r->command_failed)
		printf("allocscope gate: ok: %zu limits within budget (%s)\n", n, b->path);
	if (cli->update && r->command_failed) {
		printf("allocscope gate: --update: %s left as it was (the command failed)\n",
		       b->path);
	} else if (cli->update) {
		if (budget__render_update(b, &m, &text, &lowered) != 0) {
			fprintf(stderr, "allocscope gate: out of memory\n");
			status = EXIT_GATE_FAIL;
		} else if (lowered &&
			   budget__write_file(cli->budget_path, text, err, sizeof(err)) != 0) {
			fprintf(stderr, "allocscope gate: %s\n", err);
			status = EXIT_GATE_FAIL;
		} else {
			printf("allocscope gate: --update: %zu limit%s lowered in %s%s\n", lowered,
			       lowered == 1 ? "" : "s", b->path,
			       n_over ? "; limits over budget are never raised: raise them by "
					"editing the file, in review"
				      : "");
		}
		free(text);
	}
	free(rows);
	return status;
}

int count_cli_main(int argc, char **argv)
{
	struct count_cli cli = { 0 };
	struct count_result *r = NULL;
	struct budget *b = NULL;
	char err[1024], output[64];
	bool write_failed;
	int ret, status;

	ret = parse_args(argc, argv, &cli);
	if (ret)
		return ret < 0 ? 0 : ret;
	if (cli.gate) {
		/* The budget is read before the command runs: a typo fails in a second. */
		ret = budget__load(cli.budget_path, &b, err, sizeof(err));
		if (ret && !(ret == -ENOENT && cli.update)) {
			fprintf(stderr, "allocscope gate: %s\n", err);
			return EXIT_USAGE;
		}
	}
	ret = count_run(&cli.run, &r, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "allocscope %s: %s\n", argv[0], err);
		budget__free(b);
		return cli.gate ? EXIT_GATE_FAIL : 1;
	}
	if (r->command_failed)
		fprintf(stderr, "allocscope %s: the command exited with status %d\n", argv[0],
			r->exit_status);
	if (!r->processes)
		fprintf(stderr,
			"allocscope %s: no process of the command wrote counts: a static executable "
			"or a setuid program (LD_PRELOAD does not apply to them), or one killed by a "
			"signal\n",
			argv[0]);
	print_tables(r, cli.top);
	if (!cli.output && !cli.gate) {
		default_output(output, sizeof(output));
		cli.output = output;
	}
	/* A profile that could not be written fails count (it was asked for by default); the
	 * gate's verdict does not depend on it. */
	write_failed = cli.output && write_profile(r, cli.output) != 0;
	if (cli.gate)
		status = run_gate(&cli, b, r);
	else
		status = r->exit_status ? r->exit_status : write_failed;
	budget__free(b);
	count_result__free(r);
	return status;
}
