/* allocscope: command line, signals' defaults, and the choice of what to run. Everything else
 * lives in the stages under agent/. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build_info.h"
#include "capture.h"
#include "daemon.h"
#include "count/count_cli.h"
#include "util/log.h"
#include "config/config.h"
#include "config/units.h"
#include "profile/alloc_profile.h"
#include "read/diff.h"
#include "read/report.h"

#define EXIT_USAGE 2
/* getopt_long values of the flags that set configuration keys: OPT_KEY + their index. */
#define OPT_KEY 512
#define MAX_OPTIONS 32

/* The defaults and ranges of the flags that set configuration keys are the key table's, filled
 * in by print_usage (%1$s ...): written nowhere else. */
static const char usage_text[] =
	"Usage: allocscope [OPTIONS] --pid PID[,PID...]\n"
	"       allocscope [OPTIONS] -- COMMAND [ARGS...]\n"
	"       allocscope --config FILE [--check-config]\n"
	"       allocscope count|gate ... -- COMMAND [ARGS...]   (exact counts, the CI gate:\n"
	"                                 allocscope count --help)\n"
	"       allocscope report [OPTIONS] FILE          (allocscope report --help)\n"
	"       allocscope diff [OPTIONS] BASE NEW        (allocscope diff --help)\n"
	"\n"
	"Profiles the memory allocations of native processes (C, C++, Rust, ...) with eBPF\n"
	"uprobes on their allocator, and writes a pprof allocation profile (alloc_space,\n"
	"alloc_objects) that `go tool pprof`, Pyroscope and Parca read.\n"
	"\n"
	"With --config FILE, allocscope runs as the continuous agent: it profiles the\n"
	"processes FILE selects (installed as " CONFIG_DEFAULT_PATH ") and writes a\n"
	"profile per service every interval. SIGHUP reloads the configuration; SIGTERM stops.\n"
	"Without --pid, COMMAND or --config it prints this help: the agent attaches to every\n"
	"process it selects, so it never starts by accident.\n"
	"\n"
	"Agent options:\n"
	"  -c, --config FILE        configuration file (YAML; see config/allocscope.yaml)\n"
	"      --check-config       check the configuration file and exit (0: valid; without\n"
	"                           --config: " CONFIG_DEFAULT_PATH ")\n"
	"\n"
	"Capture options:\n"
	"  -p, --pid PID[,PID...]   profile running processes (repeatable)\n"
	"  -d, --duration D         stop after D (e.g. 30s, 5m, 1h; default: until Ctrl-C\n"
	"                           or every target has exited)\n"
	"  -r, --sample-rate SIZE   mean bytes between samples (e.g. 64KiB, 1MiB;\n"
	"                           default %1$s)\n"
	"  -o, --output FILE        profile path (default: alloc-<pid>-<UTC time>.pb.gz); a\n"
	"                           name ending in .html writes a flame graph page there and\n"
	"                           the profile next to it (X.html: X.pb.gz)\n"
	"      --unwind MODE        how stacks are walked: auto (default: the kernel walks them\n"
	"                           with tables built from each file's CFI, any depth; where a\n"
	"                           file has no table, a stack copy unwound here with CFI and\n"
	"                           frame pointers), kernel (the same, but fails where the\n"
	"                           kernel cannot walk stacks), dwarf (stack copies, CFI only)\n"
	"                           or fp (frame pointers only, cheapest)\n"
	"      --stack-copy-size SIZE  user stack copied per sample for CFI unwinding where the\n"
	"                           kernel has no table, and always with dwarf (%2$s to\n"
	"                           %3$s, a power of two; default %4$s)\n"
	"      --debuginfod URLS    fetch missing debug info by build id from these servers\n"
	"                           (space-separated; default: $DEBUGINFOD_URLS; \"\" for none)\n"
	"      --top N              rows in the summary's top table (default 10)\n"
	"      --skip-frames REGEX  functions the top table looks through to find the allocation\n"
	"                           site, besides the allocator and known wrappers (zmalloc,\n"
	"                           g_malloc, xmalloc, ...): a regular expression matching whole\n"
	"                           names, e.g. 'my_alloc|my_calloc'\n"
	"      --group-by LABEL     group the top table by a sample label's value, e.g.\n"
	"                           service_version (the build id of each target's\n"
	"                           executable) or a label the program puts on its samples\n"
	"      --ringbuf-size SIZE  kernel-to-agent buffer (power of two from %5$s, the\n"
	"                           largest sample, to %6$s; default %7$s)\n"
	"      --inuse              also in-use (live heap) profiles: inuse_space and\n"
	"                           inuse_objects in the profile (Go heap-profile semantics) and\n"
	"                           a leak table (live sites by size, age of their oldest live\n"
	"                           sample, growth). Targets that preload\n"
	"                           liballocscope-sampler.so: about 1 ns per free\n"
	"                           (otel_memory:free). Others (Linux 6.13+, session uprobes):\n"
	"                           a probe on free and its relatives, a trap on EVERY free\n"
	"                           (one uprobe hit: 1.6 us per free measured on a 2-core VM;\n"
	"                           docs/performance.md); non-sampled allocations\n"
	"                           cost what they did. For busy services prefer the sampler\n"
	"      --inuse-entries N    live sampled allocations tracked at most (implies --inuse;\n"
	"                           16 to 16777216, default 65536, ~100 bytes each in the\n"
	"                           kernel); past it, counted and the estimates flagged low\n"
	"      --max-overhead PERCENT  overhead budget: the estimated time a target spends in\n"
	"                           the probes stays under PERCENT (0.01 to 100) of its own CPU\n"
	"                           time; a busier target is probed part of the time and\n"
	"                           its estimates scaled up (default: none; targets with an\n"
	"                           in-process sampler are never throttled)\n"
	"      --log-level LEVEL    error, warn, info (default) or debug\n"
	"      --context BOOL       label samples with the request context threads publish\n"
	"                           (OpenTelemetry thread context, Custom Labels; default true)\n"
	"      --context-trace-ids BOOL  trace_id and span_id labels too (default false)\n"
	"      --context-max-record-bytes N  OTel attribute bytes read per sample (0 to 256)\n"
	"      --label-max-values N  distinct values kept per sample label (context), the\n"
	"                           rest counted as \"other\" (default 100)\n"
	"      --label-max-value-bytes N  sample label values cut to N bytes at a UTF-8\n"
	"                           boundary (8 to 1024; default 64)\n"
	"  -h, --help               show this help\n"
	"  -V, --version            show the version\n"
	"\n"
	"With -- COMMAND, allocscope starts COMMAND with its probes already in place, profiles it\n"
	"until it exits, and returns its exit status. Ctrl-C or SIGTERM ends a capture and still\n"
	"writes the profile. Needs root, or CAP_BPF and CAP_PERFMON.\n"
	"\n"
	"Read the profile with: allocscope report FILE (or go tool pprof -top FILE)\n";

static void print_usage(FILE *out)
{
	char low[2][32], high[2][32];

	config_flag_range("stack-copy-size", low[0], high[0], sizeof(low[0]));
	config_flag_range("ringbuf-size", low[1], high[1], sizeof(low[1]));
	fprintf(out, usage_text, config_flag_default("sample-rate"), low[0], high[0],
		config_flag_default("stack-copy-size"), low[1], high[1],
		config_flag_default("ringbuf-size"));
}

static int usage_error(const char *fmt, const char *arg)
{
	fputs("allocscope: ", stderr);
	fprintf(stderr, fmt, arg);
	fputs("\nTry 'allocscope --help' for more information.\n", stderr);
	return EXIT_USAGE;
}

static int parse_pids(const char *text, struct capture_opts *opts)
{
	const char *p = text;

	while (*p) {
		char *end;
		long pid;

		errno = 0;
		pid = strtol(p, &end, 10);
		if (errno || end == p || pid <= 0 || pid > INT_MAX || (*end && *end != ','))
			return usage_error("invalid pid list '%s': expected PID[,PID...] with "
					   "positive numbers",
					   text);
		if (opts->n_pids == CAPTURE_MAX_PIDS)
			return usage_error("too many pids in '%s' (at most 64)", text);
		opts->pids[opts->n_pids++] = (pid_t)pid;
		p = *end ? end + 1 : end;
		if (*end == ',' && !*p)
			return usage_error("invalid pid list '%s': trailing comma", text);
	}
	return 0;
}

/* The capture's own options, then every flag the configuration key table defines
 * (config_flag): --sample-rate, --unwind, ... are sampling.rate, sampling.unwind, ... */
static void build_options(const struct option *own, size_t n_own, struct option *options,
			  char *short_options, size_t short_len)
{
	size_t n = 0, used = strlen(short_options);
	const char *flag;
	char short_flag;

	for (; n < n_own; n++)
		options[n] = own[n];
	for (size_t i = 0; (flag = config_flag(i, &short_flag)) && n + 1 < MAX_OPTIONS; i++) {
		options[n++] = (struct option){ flag, required_argument, NULL,
						short_flag ? short_flag : OPT_KEY + (int)i };
		if (short_flag && used + 3 < short_len) {
			short_options[used++] = short_flag;
			short_options[used++] = ':';
			short_options[used] = '\0';
		}
	}
	options[n] = (struct option){ NULL, 0, NULL, 0 };
}

/* --group-by: a label name as pprof and the servers take it, [a-zA-Z_][a-zA-Z0-9_]*. */
static bool label_name_ok(const char *name)
{
	if (!name[0] || (name[0] >= '0' && name[0] <= '9'))
		return false;
	for (const char *p = name; *p; p++) {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '_'))
			return false;
	}
	return true;
}

/* The configuration flag getopt_long returned c for, or NULL. */
static const char *key_flag(int c)
{
	const char *flag;
	char short_flag;

	if (c >= OPT_KEY)
		return config_flag((size_t)(c - OPT_KEY), NULL);
	for (size_t i = 0; (flag = config_flag(i, &short_flag)); i++)
		if (short_flag && short_flag == c)
			return flag;
	return NULL;
}

/* Parses the command line over settings (the configuration's defaults) and runs what it asks
 * for; returns the exit status. */
static int run(int argc, char **argv, struct agent_config *settings)
{
	enum { OPT_TOP = 256, OPT_CHECK_CONFIG, OPT_SKIP_FRAMES, OPT_GROUP_BY, OPT_INUSE,
	       OPT_INUSE_ENTRIES };
	static const struct option own_options[] = {
		{ "pid", required_argument, NULL, 'p' },
		{ "duration", required_argument, NULL, 'd' },
		{ "output", required_argument, NULL, 'o' },
		{ "top", required_argument, NULL, OPT_TOP },
		{ "skip-frames", required_argument, NULL, OPT_SKIP_FRAMES },
		{ "group-by", required_argument, NULL, OPT_GROUP_BY },
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, OPT_CHECK_CONFIG },
		{ "inuse", no_argument, NULL, OPT_INUSE },
		{ "inuse-entries", required_argument, NULL, OPT_INUSE_ENTRIES },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
	};
	struct option options[MAX_OPTIONS];
	/* '+': stop at the first non-option, so COMMAND's own options stay its own. */
	char short_options[64] = "+p:d:o:c:hV";
	struct capture_opts opts = { .top = 10 };
	const char *config_path = NULL, *flag;
	bool check_config = false, capture_option = false;
	int log_level_override = -1, after_last_option = 1;
	uint64_t value;
	uint32_t inuse_entries = ALLOC_LIVE_DEFAULT_ENTRIES;
	char err[512];
	int c, ret;

	build_options(own_options, sizeof(own_options) / sizeof(own_options[0]), options,
		      short_options, sizeof(short_options));
	while ((c = getopt_long(argc, argv, short_options, options, NULL)) != -1) {
		after_last_option = optind;
		flag = key_flag(c);
		/* A flag that sets a configuration key: the same check and message as the
		 * file's key. --log-level applies at once and, alone of them, to the agent too. */
		if (flag) {
			if (config_set_flag(settings, flag, optarg, err, sizeof(err)) != 0)
				return usage_error("%s", err);
			if (strcmp(flag, "log-level") == 0) {
				log_set_level(settings->log_level);
				log_level_override = (int)settings->log_level;
			} else {
				capture_option = true;
			}
			continue;
		}
		if (c != 'c' && c != OPT_CHECK_CONFIG && c != 'h' && c != 'V')
			capture_option = true;
		switch (c) {
		case 'c':
			if (!*optarg)
				return usage_error("empty --config%s", "");
			config_path = optarg;
			break;
		case OPT_CHECK_CONFIG:
			check_config = true;
			break;
		case 'p':
			ret = parse_pids(optarg, &opts);
			if (ret)
				return ret;
			break;
		case 'd':
			if (units_parse_duration(optarg, &opts.duration_ms) != 0 ||
			    opts.duration_ms == 0)
				return usage_error("invalid duration '%s': expected a positive "
						   "number with s, m or h (e.g. 30s, 5m)",
						   optarg);
			break;
		case 'o':
			if (!*optarg)
				return usage_error("empty --output%s", "");
			opts.output = optarg;
			break;
		case OPT_INUSE:
			opts.inuse = true;
			break;
		case OPT_INUSE_ENTRIES:
			if (units_parse_size(optarg, &value) != 0 || value < 16 ||
			    value > ALLOC_LIVE_MAX_ENTRIES)
				return usage_error("invalid --inuse-entries '%s': expected 16 to "
						   "16777216", optarg);
			opts.inuse = true;
			inuse_entries = (uint32_t)value;
			break;
		case OPT_TOP:
			if (units_parse_size(optarg, &value) != 0 || value > 64)
				return usage_error("invalid --top '%s': expected 0 to 64", optarg);
			opts.top = (unsigned)value;
			break;
		case OPT_SKIP_FRAMES: {
			char why[512];

			if (alloc_profile_check_skip_frames(optarg, why, sizeof(why)) != 0)
				return usage_error("%s", why);
			opts.skip_frames = optarg;
			break;
		}
		case OPT_GROUP_BY:
			if (!label_name_ok(optarg))
				return usage_error("invalid --group-by '%s': expected a label name "
						   "(letters, digits and _, not starting with a "
						   "digit) like service_version or endpoint",
						   optarg);
			opts.group_by = optarg;
			break;
		case 'h':
			print_usage(stdout);
			return 0;
		case 'V':
			printf("allocscope %s (%s)\n", ALLOCSCOPE_VERSION, ALLOCSCOPE_GIT_REV);
			return 0;
		default:
			return usage_error("%s", "invalid option");
		}
	}
	/* "--" ended the options when getopt stepped over it without it being an argument. */
	if (optind == after_last_option + 1 && strcmp(argv[after_last_option], "--") == 0) {
		if (optind == argc)
			return usage_error("%s", "nothing after '--': give the COMMAND to run (an "
						 "empty $CMD?)");
		if (!argv[optind][0])
			return usage_error("%s", "empty COMMAND after '--'");
	}
	if (optind < argc)
		opts.command = &argv[optind];
	if (config_path || check_config) {
		if (capture_option || opts.command)
			return usage_error("%s", "--config runs the agent: capture options (--pid, "
						 "-- COMMAND, --duration, ...) do not apply to it");
		if (check_config)
			return daemon_check_config(config_path ? config_path : CONFIG_DEFAULT_PATH);
		return daemon_run(config_path, log_level_override);
	}
	if (!opts.n_pids && !opts.command)
		return usage_error("%s", capture_option
						 ? "nothing to profile: give --pid PID or -- COMMAND"
						 : "nothing to do: give --pid PID or -- COMMAND to "
						   "profile, or --config FILE to run the agent");
	if (opts.n_pids && opts.command)
		return usage_error("%s", "give either --pid or -- COMMAND, not both");
	opts.sampling = settings->sampling;
	opts.sample_labels = &settings->sample_labels;
	if (opts.inuse)
		opts.sampling.live_entries = inuse_entries;
	opts.max_overhead_percent = settings->overhead_max_cpu_percent;
	return capture_run(&opts);
}

int main(int argc, char **argv)
{
	struct agent_config *settings = NULL;
	int status;

	if (argc <= 1) {
		print_usage(stderr);
		return EXIT_USAGE;
	}
	/* Subcommands with their own command line (issue 18: count, gate). */
	if (count_cli_handles(argv[1]))
		return count_cli_main(argc - 1, argv + 1);
	/* Subcommands that read profiles: no configuration, no privileges. */
	if (strcmp(argv[1], "report") == 0)
		return report_main(argc - 1, argv + 1);
	if (strcmp(argv[1], "diff") == 0)
		return diff_main(argc - 1, argv + 1);
	if (config_defaults(&settings) != 0) {
		fputs("allocscope: cannot start: out of memory\n", stderr);
		return 1;
	}
	status = run(argc, argv, settings);
	config_free(settings);
	return status;
}
