/* `allocscope diff` (see diff.h): both profiles aggregated the same way, rows matched by
 * name, normalized, and sorted by change: growth first, largest first, then what shrank. */
#include "read/diff.h"
#include "read/flamegraph_html.h"
#include "read/json_out.h"
#include "read/report.h"
#include "profile/top_table.h"
#include "util/log.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_USAGE 2

struct diff_row {
	const char *name;
	double base, new;
};

static int compare_growth(const void *a, const void *b)
{
	const struct diff_row *x = a, *y = b;
	double dx = x->new - x->base, dy = y->new - y->base;

	if (dx != dy)
		return dx < dy ? 1 : -1;
	return strcmp(x->name, y->name);
}

/* The factor a profile's values are multiplied by. */
static int normalizer(const struct pprof_file *file, const char *name, double total,
		      enum diff_normalize normalize, double *factor, char *err, size_t err_len)
{
	*factor = 1;
	if (normalize == DIFF_NORMALIZE_SECONDS) {
		if (file->duration_nanos <= 0) {
			snprintf(err, err_len,
				 "cannot normalize %s per second: the profile has no "
				 "duration (use --normalize total)",
				 name);
			return -EINVAL;
		}
		*factor = 1e9 / (double)file->duration_nanos;
	} else if (normalize == DIFF_NORMALIZE_TOTAL) {
		*factor = total > 0 ? 100.0 / total : 0;
	}
	return 0;
}

/* A value in the table's unit: a size (per second), a share, or a number. */
static const char *format_value(double v, const char *unit, enum diff_normalize normalize,
				bool sign, char *buf, size_t len)
{
	char tmp[40];

	if (normalize == DIFF_NORMALIZE_TOTAL) {
		snprintf(buf, len, sign ? "%+.2f%%" : "%.2f%%", v);
		return buf;
	}
	top_table_value(fabs(v), unit, tmp, sizeof(tmp));
	snprintf(buf, len, "%s%s%s", sign ? (v < 0 ? "-" : "+") : (v < 0 ? "-" : ""), tmp,
		 normalize == DIFF_NORMALIZE_SECONDS ? "/s" : "");
	return buf;
}

static const char *format_change(const struct diff_row *row, char *buf, size_t len)
{
	if (row->base == 0 && row->new == 0)
		snprintf(buf, len, "0");
	else if (row->base == 0)
		snprintf(buf, len, "new");
	else if (row->new == 0)
		snprintf(buf, len, "gone");
	else
		snprintf(buf, len, "%+.1f%%", 100.0 * (row->new - row->base) / row->base);
	return buf;
}

static void print_rows(const struct diff_row *rows, size_t from, size_t to, int step,
		       const char *unit, const struct diff_opts *opts, const char *what, FILE *out)
{
	char b[64], n[64], d[64], c[32], name[4 * 1024 + 1];

	fprintf(out, "\n%16s %16s %16s %8s  %s\n", "base", "new", "delta", "change", what);
	for (size_t i = from; i != to; i += (size_t)step) {
		const struct diff_row *row = &rows[i];

		log_escape(name, sizeof(name), row->name, strnlen(row->name, 1024));
		fprintf(
		    out, "%16s %16s %16s %8s  %s\n",
		    format_value(row->base, unit, opts->normalize, false, b, sizeof(b)),
		    format_value(row->new, unit, opts->normalize, false, n, sizeof(n)),
		    format_value(row->new - row->base, unit, opts->normalize, true, d, sizeof(d)),
		    format_change(row, c, sizeof(c)), name);
	}
}

static void json_row(const struct diff_row *row, bool first, FILE *out)
{
	fputs(first ? "{\"name\":" : ",{\"name\":", out);
	json_out_string(out, row->name);
	fputs(",\"base\":", out);
	json_out_number(out, row->base);
	fputs(",\"new\":", out);
	json_out_number(out, row->new);
	fputs(",\"delta\":", out);
	json_out_number(out, row->new - row->base);
	fputs(",\"relative_percent\":", out);
	if (row->base > 0)
		json_out_number(out, 100.0 * (row->new - row->base) / row->base);
	else
		fputs("null", out);
	fputc('}', out);
}

static int build_rows(const struct aggregate *a, const struct aggregate *b, size_t type_a,
		      size_t type_b, double fa, double fb, bool cum, struct diff_row **out,
		      size_t *n_out)
{
	struct diff_row *rows = calloc(a->n_rows + b->n_rows + 1, sizeof(*rows));
	size_t n = 0;

	if (!rows)
		return -ENOMEM;
	for (size_t i = 0; i < b->n_rows; i++) {
		const struct aggregate_row *other = aggregate__find(a, b->rows[i].name);
		const double *vb = cum ? b->rows[i].cum : b->rows[i].flat;

		rows[n].name = b->rows[i].name;
		rows[n].new = vb[type_b] * fb;
		if (other)
			rows[n].base = (cum ? other->cum : other->flat)[type_a] * fa;
		n++;
	}
	for (size_t i = 0; i < a->n_rows; i++) {
		if (aggregate__find(b, a->rows[i].name))
			continue;
		rows[n].name = a->rows[i].name;
		rows[n].base = (cum ? a->rows[i].cum : a->rows[i].flat)[type_a] * fa;
		n++;
	}
	qsort(rows, n, sizeof(*rows), compare_growth);
	*out = rows;
	*n_out = n;
	return 0;
}

int diff_write(const struct pprof_file *base, const char *base_name, const struct pprof_file *new,
	       const char *new_name, const struct diff_opts *opts, FILE *out, bool *regressed,
	       char *err, size_t err_len)
{
	const char *type_name =
	    opts->sample_type ? opts->sample_type : new->types[new->default_type].type;
	struct aggregate *a = NULL, *b = NULL;
	struct diff_row *rows = NULL, total;
	size_t type_a, type_b, n = 0, grew = 0, shown;
	double fa, fb, limit;
	bool cum = opts->by == AGGREGATE_BY_FUNCTION;
	const char *what = cum ? "function (cum)" : "allocation site";
	char ea[512];
	int ret;

	*regressed = false;
	ret = report_sample_type(new, type_name, &type_b, ea, sizeof(ea));
	if (ret) {
		snprintf(err, err_len, "%s: %s", new_name, ea);
		return ret;
	}
	ret = report_sample_type(base, type_name, &type_a, ea, sizeof(ea));
	if (ret) {
		snprintf(err, err_len, "%s: %s", base_name, ea);
		return ret;
	}
	ret = aggregate__build(base, opts->by, &opts->filter, &a);
	if (!ret)
		ret = aggregate__build(new, opts->by, &opts->filter, &b);
	if (ret)
		goto oom;
	ret = normalizer(base, base_name, a->totals[type_a], opts->normalize, &fa, err, err_len);
	if (!ret)
		ret = normalizer(new, new_name, b->totals[type_b], opts->normalize, &fb, err,
				 err_len);
	if (ret)
		goto out;
	ret = build_rows(a, b, type_a, type_b, fa, fb, cum, &rows, &n);
	if (ret)
		goto oom;
	total = (struct diff_row){"total", a->totals[type_a] * fa, b->totals[type_b] * fb};
	/* --fail-above: growth of any row, or of the total, past PERCENT of the base total. */
	limit = opts->fail_above / 100.0 * total.base;
	if (opts->fail_above >= 0)
		*regressed =
		    total.new - total.base > limit || (n && rows[0].new - rows[0].base > limit);
	while (grew < n && rows[grew].new > rows[grew].base)
		grew++;
	const char *unit = new->types[type_b].unit;

	if (opts->json) {
		fputs("{\"base\":", out);
		json_out_string(out, base_name);
		fputs(",\"new\":", out);
		json_out_string(out, new_name);
		fputs(",\"sample_type\":", out);
		json_out_string(out, type_name);
		fputs(",\"unit\":", out);
		json_out_string(out, unit);
		fprintf(out,
			",\"by\":\"%s\",\"normalize\":\"%s\",\"total\":", cum ? "function" : "site",
			opts->normalize == DIFF_NORMALIZE_SECONDS ? "seconds"
			: opts->normalize == DIFF_NORMALIZE_TOTAL ? "total"
								  : "none");
		json_row(&total, true, out);
		fputs(",\"rows\":[", out);
		shown = opts->top && opts->top < n ? opts->top : n;
		for (size_t i = 0; i < shown; i++)
			json_row(&rows[i], i == 0, out);
		fputs("]", out);
		if (opts->fail_above >= 0) {
			fputs(",\"fail_above_percent\":", out);
			json_out_number(out, opts->fail_above);
			fprintf(out, ",\"regressed\":%s", *regressed ? "true" : "false");
		}
		fputs("}\n", out);
		goto out;
	}
	{
		char nb[4 * 1024 + 1], nn[4 * 1024 + 1], b1[64], b2[64], d[64], c[32];

		log_escape(nb, sizeof(nb), base_name, strnlen(base_name, 1024));
		log_escape(nn, sizeof(nn), new_name, strnlen(new_name, 1024));
		fprintf(out, "base: %s (%zu samples", nb, base->n_samples);
		if (base->duration_nanos > 0)
			fprintf(out, " over %.1fs", base->duration_nanos / 1e9);
		fprintf(out, ")\nnew:  %s (%zu samples", nn, new->n_samples);
		if (new->duration_nanos > 0)
			fprintf(out, " over %.1fs", new->duration_nanos / 1e9);
		fprintf(
		    out, ")\n%s%s: %s -> %s (%s, %s)\n", type_name,
		    opts->normalize == DIFF_NORMALIZE_SECONDS ? " per second"
		    : opts->normalize == DIFF_NORMALIZE_TOTAL ? " as a share of each total"
							      : "",
		    format_value(total.base, unit, opts->normalize, false, b1, sizeof(b1)),
		    format_value(total.new, unit, opts->normalize, false, b2, sizeof(b2)),
		    format_value(total.new - total.base, unit, opts->normalize, true, d, sizeof(d)),
		    format_change(&total, c, sizeof(c)));
	}
	shown = opts->top && opts->top < grew ? opts->top : grew;
	if (shown) {
		fprintf(out, "\ngrew or started allocating:");
		print_rows(rows, 0, shown, 1, unit, opts, what, out);
	}
	size_t shrank = 0;

	while (shrank < n - grew && rows[n - 1 - shrank].new < rows[n - 1 - shrank].base)
		shrank++;
	if (opts->top && shrank > opts->top)
		shrank = opts->top;
	if (shrank) {
		fprintf(out, "\nshrank or stopped allocating:");
		print_rows(rows, n - 1, n - 1 - shrank, -1, unit, opts, what, out);
	}
	if (!grew && !shrank)
		fprintf(out, "\nno change\n");
	if (opts->fail_above >= 0 && *regressed)
		fprintf(out, "\nregression: growth above %.1f%% of the base total\n",
			opts->fail_above);
	goto out;
oom:
	snprintf(err, err_len, "cannot diff: out of memory");
	ret = -ENOMEM;
out:
	free(rows);
	aggregate__free(a);
	aggregate__free(b);
	return ret;
}

static int usage_error(const char *fmt, const char *arg)
{
	fputs("allocscope diff: ", stderr);
	fprintf(stderr, fmt, arg);
	fputs("\nTry 'allocscope diff --help' for more information.\n", stderr);
	return EXIT_USAGE;
}

static const char diff_usage[] =
    "Usage: allocscope diff [OPTIONS] BASE NEW\n"
    "\n"
    "Compares two pprof profiles: what grew or started allocating first (largest first),\n"
    "then what shrank or stopped, in absolute values and relative to BASE.\n"
    "\n"
    "  -t, --sample-type TYPE   values compared (default: NEW's default; both must have it)\n"
    "  -b, --by site|function   per allocation site (default) or per function (cum)\n"
    "      --tag KEY=VALUE      only samples with this label (repeatable)\n"
    "  -n, --top N              rows per table (default 20; 0: all)\n"
    "      --normalize HOW      none (default), seconds (per second of each profile's\n"
    "                           duration: profiles of different lengths) or total (each\n"
    "                           value as a share of its profile's total)\n"
    "      --fail-above PERCENT exit 3 when a site (or the total) grew by more than\n"
    "                           PERCENT of BASE's total, after normalization\n"
    "  -f, --format FORMAT      text (default) or json\n"
    "      --html OUT.html      write the differential flame graph page (red: grew,\n"
    "                           blue: shrank)\n"
    "  -h, --help               show this help\n"
    "\n"
    "Exit status: 0, 3 when --fail-above is exceeded, 1 when a profile cannot be read, 2 on\n"
    "a usage error.\n";

int diff_main(int argc, char **argv)
{
	enum { OPT_TAG = 256, OPT_HTML, OPT_NORMALIZE, OPT_FAIL_ABOVE };
	static const struct option options[] = {
	    {"sample-type", required_argument, NULL, 't'},
	    {"by", required_argument, NULL, 'b'},
	    {"tag", required_argument, NULL, OPT_TAG},
	    {"top", required_argument, NULL, 'n'},
	    {"normalize", required_argument, NULL, OPT_NORMALIZE},
	    {"fail-above", required_argument, NULL, OPT_FAIL_ABOVE},
	    {"format", required_argument, NULL, 'f'},
	    {"html", required_argument, NULL, OPT_HTML},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct diff_opts opts = {.top = 20, .fail_above = -1};
	struct pprof_file *base = NULL, *new = NULL;
	const char *html = NULL;
	bool regressed = false;
	char err[1024], *end;
	int c, ret, status = 1;

	optind = 1;
	while ((c = getopt_long(argc, argv, "t:b:n:f:h", options, NULL)) != -1) {
		switch (c) {
		case 't':
			opts.sample_type = optarg;
			break;
		case 'b':
			if (strcmp(optarg, "site") == 0) {
				opts.by = AGGREGATE_BY_SITE;
			} else if (strcmp(optarg, "function") == 0) {
				opts.by = AGGREGATE_BY_FUNCTION;
			} else {
				status = usage_error("invalid --by '%s': site or function", optarg);
				goto out;
			}
			break;
		case OPT_TAG:
			if (report_parse_tag(&opts.filter, optarg)) {
				status =
				    usage_error("invalid --tag '%s': expected KEY=VALUE (at most "
						"8)",
						optarg);
				goto out;
			}
			break;
		case 'n': {
			unsigned long top;

			errno = 0;
			top = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || top > 1000000 || optarg[0] == '-') {
				status = usage_error("invalid --top '%s': expected 0 to 1000000",
						     optarg);
				goto out;
			}
			opts.top = (unsigned)top;
			break;
		}
		case OPT_NORMALIZE:
			if (strcmp(optarg, "none") == 0) {
				opts.normalize = DIFF_NORMALIZE_NONE;
			} else if (strcmp(optarg, "seconds") == 0) {
				opts.normalize = DIFF_NORMALIZE_SECONDS;
			} else if (strcmp(optarg, "total") == 0) {
				opts.normalize = DIFF_NORMALIZE_TOTAL;
			} else {
				status = usage_error(
				    "invalid --normalize '%s': none, seconds or total", optarg);
				goto out;
			}
			break;
		case OPT_FAIL_ABOVE:
			errno = 0;
			opts.fail_above = strtod(optarg, &end);
			if (errno || end == optarg || (*end && strcmp(end, "%") != 0) ||
			    !isfinite(opts.fail_above) || opts.fail_above < 0) {
				status =
				    usage_error("invalid --fail-above '%s': expected a percentage "
						"such as 10 or 2.5",
						optarg);
				goto out;
			}
			break;
		case 'f':
			if (strcmp(optarg, "text") == 0) {
				opts.json = false;
			} else if (strcmp(optarg, "json") == 0) {
				opts.json = true;
			} else {
				status = usage_error("invalid --format '%s': text or json", optarg);
				goto out;
			}
			break;
		case OPT_HTML:
			if (!*optarg) {
				status = usage_error("empty --html%s", "");
				goto out;
			}
			html = optarg;
			break;
		case 'h':
			fputs(diff_usage, stdout);
			status = 0;
			goto out;
		default:
			status = usage_error("%s", "invalid option");
			goto out;
		}
	}
	if (optind + 2 != argc) {
		status = usage_error("%s", "give two profiles: BASE NEW");
		goto out;
	}
	ret = pprof_file__read(argv[optind], &base, err, sizeof(err));
	if (!ret)
		ret = pprof_file__read(argv[optind + 1], &new, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "allocscope diff: %s\n", err);
		goto out;
	}
	ret = diff_write(base, argv[optind], new, argv[optind + 1], &opts, stdout, &regressed, err,
			 sizeof(err));
	if (!ret && html) {
		size_t type;

		ret = report_sample_type(new, opts.sample_type, &type, err, sizeof(err));
		if (!ret)
			ret = flamegraph_html_write(html, base, argv[optind], new, argv[optind + 1],
						    type, &opts.filter, err, sizeof(err));
		if (!ret)
			printf("differential flame graph: %s\n", html);
	}
	if (fflush(stdout) != 0 && !ret) {
		ret = -EIO;
		snprintf(err, sizeof(err), "cannot write the diff: %s", strerror(errno));
	}
	if (ret) {
		fprintf(stderr, "allocscope diff: %s\n", err);
		goto out;
	}
	status = regressed ? DIFF_EXIT_REGRESSION : 0;
out:
	pprof_file__free(base);
	pprof_file__free(new);
	report_free_tags(&opts.filter);
	return status;
}
