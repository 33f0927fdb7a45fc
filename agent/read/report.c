/* `allocscope report` (see report.h): options, then one of three renderings of the same
 * aggregate: the top table, folded stacks, JSON; --html draws the flame graph page instead. */
#include "read/report.h"
#include "read/flamegraph_html.h"
#include "read/json_out.h"
#include "profile/top_table.h"
#include "util/grow.h"
#include "util/log.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_USAGE 2

int report_sample_type(const struct pprof_file *file, const char *name, size_t *type, char *err,
		       size_t err_len)
{
	size_t used;
	int index;

	if (!name) {
		*type = file->default_type;
		return 0;
	}
	index = pprof_file__type_index(file, name);
	if (index >= 0) {
		*type = (size_t)index;
		return 0;
	}
	used = (size_t)snprintf(err, err_len, "no sample type '%s' in the profile; it has:", name);
	for (size_t i = 0; i < file->n_types && used < err_len; i++)
		used += (size_t)snprintf(err + used, err_len - used, "%s %s", i ? "," : "",
					 file->types[i].type);
	return -EINVAL;
}

/* alloc_space goes with alloc_objects, inuse_objects with inuse_space: the value the table
 * shows beside the chosen one. -1 when there is none. */
static int companion_type(const struct pprof_file *file, size_t type)
{
	const char *name = file->types[type].type, *under = strrchr(name, '_');
	char other[256];

	if (!under)
		return -1;
	if (strcmp(under, "_space") == 0)
		snprintf(other, sizeof(other), "%.*s_objects", (int)(under - name), name);
	else if (strcmp(under, "_objects") == 0)
		snprintf(other, sizeof(other), "%.*s_space", (int)(under - name), name);
	else
		return -1;
	return pprof_file__type_index(file, other);
}

static size_t shown_rows(const struct aggregate *agg, unsigned top)
{
	return top && top < agg->n_rows ? top : agg->n_rows;
}

static int print_sites(const struct pprof_file *file, const struct aggregate *agg, size_t type,
		       unsigned top, FILE *out)
{
	int other = companion_type(file, type);
	struct top_table_columns columns = {file->types[type].type, file->types[type].unit,
					    other >= 0 ? file->types[other].type : NULL,
					    other >= 0 ? file->types[other].unit : NULL,
					    "allocation site"};
	size_t n = shown_rows(agg, top);
	struct top_table_row *rows = calloc(n + 1, sizeof(*rows));

	if (!rows)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		rows[i] = (struct top_table_row){agg->rows[i].name, agg->rows[i].flat[type],
						 other >= 0 ? agg->rows[i].flat[other] : 0};
	top_table_print(out, &columns, rows, n, agg->totals[type],
			other >= 0 ? agg->totals[other] : 0);
	free(rows);
	return 0;
}

static void print_functions(const struct pprof_file *file, const struct aggregate *agg, size_t type,
			    unsigned top, FILE *out)
{
	const char *unit = file->types[type].unit;
	double total = agg->totals[type];
	char flat[32], cum[32], name[4 * 1024 + 1];
	size_t n = shown_rows(agg, top);

	fprintf(out, "\n%14s %6s %14s %6s  %s (%s)\n", "flat", "flat%", "cum", "cum%", "function",
		file->types[type].type);
	for (size_t i = 0; i < n; i++) {
		const struct aggregate_row *row = &agg->rows[i];

		log_escape(name, sizeof(name), row->name, strnlen(row->name, 1024));
		fprintf(out, "%14s %5.1f%% %14s %5.1f%%  %s\n",
			top_table_value(row->flat[type], unit, flat, sizeof(flat)),
			total > 0 ? 100.0 * row->flat[type] / total : 0.0,
			top_table_value(row->cum[type], unit, cum, sizeof(cum)),
			total > 0 ? 100.0 * row->cum[type] / total : 0.0, name);
	}
	fprintf(out, "%14s %6s %14s %6s  total\n", top_table_value(total, unit, flat, sizeof(flat)),
		"", "", "");
}

static void json_rows(const struct pprof_file *file, const struct aggregate *agg, size_t type,
		      const struct report_opts *opts, FILE *out)
{
	size_t n = shown_rows(agg, opts->top);

	fputs("\"total\":", out);
	json_out_number(out, agg->totals[type]);
	fputs(",\"totals\":{", out);
	for (size_t t = 0; t < file->n_types; t++) {
		fputs(t ? "," : "", out);
		json_out_string(out, file->types[t].type);
		fputc(':', out);
		json_out_number(out, agg->totals[t]);
	}
	fputs("},\"rows\":[", out);
	for (size_t i = 0; i < n; i++) {
		const struct aggregate_row *row = &agg->rows[i];

		fputs(i ? ",{\"name\":" : "{\"name\":", out);
		json_out_string(out, row->name);
		for (size_t t = 0; t < file->n_types; t++) {
			fputc(',', out);
			if (opts->by == AGGREGATE_BY_SITE) {
				json_out_string(out, file->types[t].type);
				fputc(':', out);
				json_out_number(out, row->flat[t]);
				continue;
			}
			char key[300];

			snprintf(key, sizeof(key), "flat_%s", file->types[t].type);
			json_out_string(out, key);
			fputc(':', out);
			json_out_number(out, row->flat[t]);
			snprintf(key, sizeof(key), "cum_%s", file->types[t].type);
			fputc(',', out);
			json_out_string(out, key);
			fputc(':', out);
			json_out_number(out, row->cum[t]);
		}
		fputc('}', out);
	}
	fputc(']', out);
}

/* One table (or JSON object body) for the samples filter keeps. */
static int report_one(const struct pprof_file *file, size_t type, const struct report_opts *opts,
		      const struct sample_filter *filter, FILE *out)
{
	struct aggregate *agg;
	int ret = aggregate__build(file, opts->by, filter, &agg);

	if (ret)
		return ret;
	aggregate__sort(agg, type, opts->by == AGGREGATE_BY_FUNCTION && opts->by_cum);
	if (opts->format == REPORT_JSON)
		json_rows(file, agg, type, opts, out);
	else if (opts->by == AGGREGATE_BY_SITE)
		ret = print_sites(file, agg, type, opts->top, out);
	else
		print_functions(file, agg, type, opts->top, out);
	aggregate__free(agg);
	return ret;
}

static void print_header(const struct pprof_file *file, const char *name, size_t type,
			 const struct report_opts *opts, FILE *out)
{
	char escaped[4 * 1024 + 1];

	log_escape(escaped, sizeof(escaped), name, strnlen(name, 1024));
	fprintf(out, "profile: %s: %zu samples", escaped, file->n_samples);
	if (file->duration_nanos > 0)
		fprintf(out, " over %.1fs", file->duration_nanos / 1e9);
	fprintf(out, "; sample types:");
	for (size_t t = 0; t < file->n_types; t++)
		fprintf(out, "%s %s%s", t ? "," : "", file->types[t].type,
			t == type ? " (shown)" : "");
	fputc('\n', out);
	for (size_t i = 0; i < file->n_comments && i < 4; i++) {
		log_escape(escaped, sizeof(escaped), file->comments[i],
			   strnlen(file->comments[i], 1024));
		fprintf(out, "comment: %s\n", escaped);
	}
	for (size_t i = 0; i < opts->filter.n_tags; i++) {
		char k[4 * 256 + 1], v[4 * 256 + 1];

		log_escape(k, sizeof(k), opts->filter.tag_keys[i],
			   strnlen(opts->filter.tag_keys[i], 256));
		log_escape(v, sizeof(v), opts->filter.tag_values[i],
			   strnlen(opts->filter.tag_values[i], 256));
		fprintf(out, "only samples with %s=%s\n", k, v);
	}
}

int report_write(const struct pprof_file *file, const char *name, const struct report_opts *opts,
		 FILE *out, char *err, size_t err_len)
{
	struct sample_filter filter = opts->filter;
	char **groups = NULL;
	size_t type, n_groups = 0;
	int ret = report_sample_type(file, opts->sample_type, &type, err, err_len);

	if (ret)
		return ret;
	if (opts->format == REPORT_COLLAPSED) {
		ret = report_collapsed(file, type, &opts->filter, opts->group_by, out);
		goto done;
	}
	if (opts->group_by) {
		groups = aggregate_label_values(file, opts->group_by, &n_groups);
		/* NULL with none: every sample falls in the "(unset)" group below. */
	}
	if (opts->format == REPORT_JSON) {
		fputs("{\"file\":", out);
		json_out_string(out, name);
		fputs(",\"sample_type\":", out);
		json_out_string(out, file->types[type].type);
		fputs(",\"unit\":", out);
		json_out_string(out, file->types[type].unit);
		fprintf(out, ",\"by\":\"%s\",\"duration_seconds\":",
			opts->by == AGGREGATE_BY_SITE ? "site" : "function");
		json_out_number(out, file->duration_nanos / 1e9);
		fputc(',', out);
	} else {
		print_header(file, name, type, opts, out);
	}
	if (!opts->group_by) {
		ret = report_one(file, type, opts, &filter, out);
	} else {
		if (opts->format == REPORT_JSON) {
			fputs("\"group_by\":", out);
			json_out_string(out, opts->group_by);
			fputs(",\"groups\":[", out);
		}
		filter.group_key = opts->group_by;
		for (size_t g = 0; g <= n_groups && !ret; g++) {
			filter.group_value = g < n_groups ? groups[g] : NULL;
			if (!filter.group_value) {
				struct aggregate *probe;

				/* Samples without the label get their own group, if any. */
				ret = aggregate__build(file, opts->by, &filter, &probe);
				if (ret)
					break;
				size_t unset = probe->n_samples;

				aggregate__free(probe);
				if (!unset)
					break;
			}
			if (opts->format == REPORT_JSON) {
				fputs(g ? ",{\"label\":" : "{\"label\":", out);
				if (filter.group_value)
					json_out_string(out, filter.group_value);
				else
					fputs("null", out);
				fputc(',', out);
			} else {
				char k[4 * 256 + 1], v[4 * 256 + 1];
				const char *value = filter.group_value;

				log_escape(k, sizeof(k), opts->group_by,
					   strnlen(opts->group_by, 256));
				if (value)
					log_escape(v, sizeof(v), value, strnlen(value, 256));
				fprintf(out, "\n%s=%s:", k, value ? v : "(unset)");
			}
			ret = report_one(file, type, opts, &filter, out);
			if (opts->format == REPORT_JSON)
				fputc('}', out);
		}
		if (opts->format == REPORT_JSON)
			fputc(']', out);
	}
	if (opts->format == REPORT_JSON)
		fputs("}\n", out);
done:
	aggregate_label_values_free(groups, n_groups);
	if (ret == -ENOMEM)
		snprintf(err, err_len, "cannot report: out of memory");
	return ret;
}

struct folded_stack {
	char *text;
	double value;
};

static int compare_folded(const void *a, const void *b)
{
	return strcmp(((const struct folded_stack *)a)->text,
		      ((const struct folded_stack *)b)->text);
}

/* A frame name as one field of a folded line: ';' separates frames and a newline ends the
 * line, so both (and other control characters) become '?'. */
static void fold_name(struct dynbuf *line, const char *name)
{
	for (const char *p = name; *p; p++) {
		char c = (*p == ';' || (unsigned char)*p < 0x20 || *p == 0x7f) ? '?' : *p;

		dynbuf_add(line, &c, 1);
	}
}

int report_collapsed(const struct pprof_file *file, size_t type, const struct sample_filter *filter,
		     const char *group_by, FILE *out)
{
	struct folded_stack *stacks = NULL;
	size_t n = 0, cap = 0;
	struct dynbuf line;
	char buf[64];
	int ret = 0;

	dynbuf_init(&line, 1 << 24);
	for (size_t s = 0; s < file->n_samples && !ret; s++) {
		const struct pprof_read_sample *sample = &file->samples[s];

		if (!sample_filter__keeps(filter, sample) || sample->values[type] == 0)
			continue;
		dynbuf_free(&line);
		if (group_by) {
			const char *v = pprof_sample__label(sample, group_by, buf, sizeof(buf));

			fold_name(&line, group_by);
			dynbuf_add(&line, "=", 1);
			fold_name(&line, v ? v : "(unset)");
		}
		for (uint32_t f = sample->n_frames; f-- > 0;) {
			if (line.len)
				dynbuf_add(&line, ";", 1);
			fold_name(&line, sample->frames[f]->name);
		}
		if (!line.len)
			fold_name(&line, "(no stack)");
		if (array_grow((void **)&stacks, &cap, n, sizeof(*stacks), 1024)) {
			ret = -ENOMEM;
			break;
		}
		stacks[n].text = dynbuf_take(&line, NULL);
		if (!stacks[n].text) {
			ret = -ENOMEM;
			break;
		}
		stacks[n++].value = (double)sample->values[type];
	}
	if (!ret) {
		qsort(stacks, n, sizeof(*stacks), compare_folded);
		for (size_t i = 0; i < n;) {
			double value = 0;
			size_t j = i;

			for (; j < n && strcmp(stacks[j].text, stacks[i].text) == 0; j++)
				value += stacks[j].value;
			fprintf(out, "%s %.0f\n", stacks[i].text, value);
			i = j;
		}
	}
	for (size_t i = 0; i < n; i++)
		free(stacks[i].text);
	free(stacks);
	dynbuf_free(&line);
	return ret;
}

static int usage_error(const char *command, const char *fmt, const char *arg)
{
	fprintf(stderr, "allocscope %s: ", command);
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry 'allocscope %s --help' for more information.\n", command);
	return EXIT_USAGE;
}

static const char report_usage[] =
    "Usage: allocscope report [OPTIONS] FILE\n"
    "\n"
    "Reads a pprof profile (allocscope's, a Go heap profile, any pprof; gzipped or not) and\n"
    "prints its top table by allocation site, or by function, or draws it as HTML.\n"
    "\n"
    "  -t, --sample-type TYPE   the values shown and sorted by (default: the file's\n"
    "                           default, alloc_space for allocscope's profiles)\n"
    "  -b, --by site|function   rows per allocation site (default) or per function with\n"
    "                           flat (leaf) and cum (anywhere on the stack) values\n"
    "      --cum                by function: sort by cum instead of flat\n"
    "      --tag KEY=VALUE      only samples with this label (repeatable: all must match)\n"
    "  -g, --group-by KEY       one table per value of this label (e.g. pid, endpoint)\n"
    "  -n, --top N              rows per table (default 20; 0: all)\n"
    "  -f, --format FORMAT      text (default), collapsed (folded stacks for flamegraph.pl,\n"
    "                           inferno, speedscope) or json\n"
    "      --html OUT.html      write a self-contained interactive flame graph page\n"
    "  -h, --help               show this help\n";

/* Parses the options shared by report and diff into opts; FILE arguments stay in argv. */
int report_parse_tag(struct sample_filter *filter, const char *arg)
{
	const char *eq = strchr(arg, '=');

	if (!eq || eq == arg || filter->n_tags == AGGREGATE_MAX_TAGS)
		return -EINVAL;
	filter->tag_keys[filter->n_tags] = strndup(arg, (size_t)(eq - arg));
	if (!filter->tag_keys[filter->n_tags])
		return -ENOMEM;
	filter->tag_values[filter->n_tags++] = eq + 1;
	return 0;
}

void report_free_tags(struct sample_filter *filter)
{
	for (size_t i = 0; i < filter->n_tags; i++)
		free((char *)filter->tag_keys[i]);
	filter->n_tags = 0;
}

int report_main(int argc, char **argv)
{
	enum { OPT_TAG = 256, OPT_HTML, OPT_CUM };
	static const struct option options[] = {
	    {"sample-type", required_argument, NULL, 't'},
	    {"by", required_argument, NULL, 'b'},
	    {"cum", no_argument, NULL, OPT_CUM},
	    {"tag", required_argument, NULL, OPT_TAG},
	    {"group-by", required_argument, NULL, 'g'},
	    {"top", required_argument, NULL, 'n'},
	    {"format", required_argument, NULL, 'f'},
	    {"html", required_argument, NULL, OPT_HTML},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct report_opts opts = {.top = 20};
	const char *html = NULL;
	struct pprof_file *file = NULL;
	char err[1024];
	uint64_t value;
	int c, ret, status = 1;

	optind = 1;
	while ((c = getopt_long(argc, argv, "t:b:g:n:f:h", options, NULL)) != -1) {
		switch (c) {
		case 't':
			opts.sample_type = optarg;
			break;
		case 'b':
			if (strcmp(optarg, "site") == 0)
				opts.by = AGGREGATE_BY_SITE;
			else if (strcmp(optarg, "function") == 0)
				opts.by = AGGREGATE_BY_FUNCTION;
			else
				return usage_error("report", "invalid --by '%s': site or function",
						   optarg);
			break;
		case OPT_CUM:
			opts.by_cum = true;
			break;
		case OPT_TAG:
			if (report_parse_tag(&opts.filter, optarg)) {
				report_free_tags(&opts.filter);
				return usage_error("report",
						   "invalid --tag '%s': expected KEY=VALUE "
						   "(at most 8)",
						   optarg);
			}
			break;
		case 'g':
			if (!*optarg)
				return usage_error("report", "empty --group-by%s", "");
			opts.group_by = optarg;
			break;
		case 'n': {
			char *end;

			errno = 0;
			value = strtoull(optarg, &end, 10);
			if (errno || end == optarg || *end || optarg[0] == '-' || value > 1000000) {
				report_free_tags(&opts.filter);
				return usage_error(
				    "report", "invalid --top '%s': expected 0 to 1000000", optarg);
			}
			opts.top = (unsigned)value;
			break;
		}
		case 'f':
			if (strcmp(optarg, "text") == 0)
				opts.format = REPORT_TEXT;
			else if (strcmp(optarg, "collapsed") == 0)
				opts.format = REPORT_COLLAPSED;
			else if (strcmp(optarg, "json") == 0)
				opts.format = REPORT_JSON;
			else
				return usage_error("report",
						   "invalid --format '%s': text, collapsed or "
						   "json",
						   optarg);
			break;
		case OPT_HTML:
			if (!*optarg)
				return usage_error("report", "empty --html%s", "");
			html = optarg;
			break;
		case 'h':
			fputs(report_usage, stdout);
			report_free_tags(&opts.filter);
			return 0;
		default:
			report_free_tags(&opts.filter);
			return usage_error("report", "%s", "invalid option");
		}
	}
	if (optind + 1 != argc) {
		report_free_tags(&opts.filter);
		return usage_error("report", "%s",
				   optind == argc ? "give the profile FILE to read"
						  : "give one profile FILE");
	}
	ret = pprof_file__read(argv[optind], &file, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "allocscope report: %s\n", err);
		goto out;
	}
	if (html) {
		size_t type;

		ret = report_sample_type(file, opts.sample_type, &type, err, sizeof(err));
		if (!ret)
			ret = flamegraph_html_write(html, NULL, NULL, file, argv[optind], type,
						    &opts.filter, err, sizeof(err));
		if (ret) {
			fprintf(stderr, "allocscope report: %s\n", err);
			goto out;
		}
		printf("flame graph: %s\n", html);
		status = 0;
		goto out;
	}
	ret = report_write(file, argv[optind], &opts, stdout, err, sizeof(err));
	if (fflush(stdout) != 0 && !ret) {
		ret = -EIO;
		snprintf(err, sizeof(err), "cannot write the report: %s", strerror(errno));
	}
	if (ret) {
		fprintf(stderr, "allocscope report: %s\n", err);
		goto out;
	}
	status = 0;
out:
	pprof_file__free(file);
	report_free_tags(&opts.filter);
	return status;
}
