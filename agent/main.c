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
#include "util/log.h"
#include "config/config.h"
#include "config/units.h"
#include "profile/alloc_profile.h"
#include "alloc.h"
#include "sampling.h"

#define DEFAULT_SAMPLE_RATE (512 * 1024)
#define DEFAULT_RINGBUF_BYTES (16u << 20)
#define DEFAULT_STACK_COPY_BYTES (16u << 10)
#define EXIT_USAGE 2

static const char usage_text[] =
	"Usage: allocscope [OPTIONS] --pid PID[,PID...]\n"
	"       allocscope [OPTIONS] -- COMMAND [ARGS...]\n"
	"       allocscope --config FILE [--check-config]\n"
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
	"                           default 512KiB)\n"
	"  -o, --output FILE        profile path (default: alloc-<pid>-<UTC time>.pb.gz)\n"
	"      --unwind MODE        how stacks are walked: auto (default: CFI from .eh_frame and\n"
	"                           debug info, frame pointers where there is none), dwarf (CFI\n"
	"                           only), fp (frame pointers only, cheapest) or kernel (the\n"
	"                           kernel walks the stack with tables built from CFI: no stack\n"
	"                           copy, any depth; experimental)\n"
	"      --stack-copy-size SIZE  user stack copied per sample for CFI unwinding (1KiB to\n"
	"                           64KiB, a power of two; default 16KiB)\n"
	"      --debuginfod URLS    fetch missing debug info by build id from these servers\n"
	"                           (space-separated; default: $DEBUGINFOD_URLS; \"\" for none)\n"
	"      --top N              rows in the summary's top table (default 10)\n"
	"      --skip-frames REGEX  functions the top table looks through to find the allocation\n"
	"                           site, besides the allocator and known wrappers (zmalloc,\n"
	"                           g_malloc, xmalloc, ...): a regular expression matching whole\n"
	"                           names, e.g. 'my_alloc|my_calloc'\n"
	"      --ringbuf-size SIZE  kernel-to-agent buffer (power of two from 128KiB, the\n"
	"                           largest sample, to 1GiB; default 16MiB)\n"
	"      --log-level LEVEL    error, warn, info (default) or debug\n"
	"  -h, --help               show this help\n"
	"  -V, --version            show the version\n"
	"\n"
	"With -- COMMAND, allocscope starts COMMAND with its probes already in place, profiles it\n"
	"until it exits, and returns its exit status. Ctrl-C or SIGTERM ends a capture and still\n"
	"writes the profile. Needs root, or CAP_BPF and CAP_PERFMON.\n"
	"\n"
	"Read the profile with: go tool pprof -top FILE\n";

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

static int ringbuf_size_error(const char *arg)
{
	char min[32], max[32], what[256];

	units_format_size(ALLOC_RINGBUF_MIN_BYTES, min, sizeof(min));
	units_format_size(ALLOC_RINGBUF_MAX_BYTES, max, sizeof(max));
	snprintf(what, sizeof(what), "invalid ring buffer size '%%s': expected a power of two "
		 "from %s (one sample with the largest stack copy) to %s", min, max);
	return usage_error(what, arg);
}

int main(int argc, char **argv)
{
	enum { OPT_TOP = 256, OPT_RINGBUF, OPT_LOG_LEVEL, OPT_UNWIND, OPT_STACK_COPY,
	       OPT_DEBUGINFOD, OPT_CHECK_CONFIG, OPT_SKIP_FRAMES };
	static const struct option options[] = {
		{ "pid", required_argument, NULL, 'p' },
		{ "duration", required_argument, NULL, 'd' },
		{ "sample-rate", required_argument, NULL, 'r' },
		{ "output", required_argument, NULL, 'o' },
		{ "top", required_argument, NULL, OPT_TOP },
		{ "unwind", required_argument, NULL, OPT_UNWIND },
		{ "stack-copy-size", required_argument, NULL, OPT_STACK_COPY },
		{ "debuginfod", required_argument, NULL, OPT_DEBUGINFOD },
		{ "skip-frames", required_argument, NULL, OPT_SKIP_FRAMES },
		{ "ringbuf-size", required_argument, NULL, OPT_RINGBUF },
		{ "log-level", required_argument, NULL, OPT_LOG_LEVEL },
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, OPT_CHECK_CONFIG },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct capture_opts opts = {
		.sample_rate = DEFAULT_SAMPLE_RATE,
		.ringbuf_bytes = DEFAULT_RINGBUF_BYTES,
		.unwind = UNWIND_AUTO,
		.stack_copy_bytes = DEFAULT_STACK_COPY_BYTES,
		.top = 10,
	};
	const char *config_path = NULL;
	bool check_config = false, capture_option = false;
	int log_level_override = -1, after_last_option = 1;
	uint64_t value;
	enum log_level level;
	int c, ret;

	if (argc <= 1) {
		fputs(usage_text, stderr);
		return EXIT_USAGE;
	}
	/* '+': stop at the first non-option, so COMMAND's own options stay its own. */
	while ((c = getopt_long(argc, argv, "+p:d:r:o:c:hV", options, NULL)) != -1) {
		after_last_option = optind;
		if (c != 'c' && c != OPT_CHECK_CONFIG && c != OPT_LOG_LEVEL && c != 'h' && c != 'V')
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
		case 'r':
			if (units_parse_size(optarg, &value) != 0 || value == 0 ||
			    value > SAMPLING_MAX_RATE)
				return usage_error("invalid sample rate '%s': expected a size from "
						   "1 byte to 4GiB, e.g. 64KiB or 1MiB",
						   optarg);
			opts.sample_rate = value;
			break;
		case 'o':
			if (!*optarg)
				return usage_error("empty --output%s", "");
			opts.output = optarg;
			break;
		case OPT_TOP:
			if (units_parse_size(optarg, &value) != 0 || value > 64)
				return usage_error("invalid --top '%s': expected 0 to 64", optarg);
			opts.top = (unsigned)value;
			break;
		case OPT_RINGBUF:
			if (units_parse_size(optarg, &value) != 0 ||
			    value < ALLOC_RINGBUF_MIN_BYTES || value > ALLOC_RINGBUF_MAX_BYTES ||
			    (value & (value - 1)))
				return ringbuf_size_error(optarg);
			opts.ringbuf_bytes = (uint32_t)value;
			break;
		case OPT_UNWIND:
			if (unwind_mode_parse(optarg, &opts.unwind) != 0)
				return usage_error("invalid --unwind '%s': expected auto, dwarf or fp",
						   optarg);
			break;
		case OPT_STACK_COPY:
			if (units_parse_size(optarg, &value) != 0 || value < 1024 ||
			    value > ALLOC_MAX_STACK_COPY || (value & (value - 1)))
				return usage_error("invalid stack copy size '%s': expected a power "
						   "of two from 1KiB to 64KiB",
						   optarg);
			opts.stack_copy_bytes = (uint32_t)value;
			break;
		case OPT_SKIP_FRAMES: {
			char why[512];

			if (alloc_profile_check_skip_frames(optarg, why, sizeof(why)) != 0)
				return usage_error("%s", why);
			opts.skip_frames = optarg;
			break;
		}
		case OPT_DEBUGINFOD:
			opts.debuginfod_urls = optarg;
			break;
		case OPT_LOG_LEVEL:
			if (log_parse_level(optarg, &level) != 0)
				return usage_error("invalid log level '%s': expected error, warn, "
						   "info or debug",
						   optarg);
			log_set_level(level);
			log_level_override = (int)level;
			break;
		case 'h':
			fputs(usage_text, stdout);
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
			return daemon_check_config(config_path ? config_path : CONFIG_DEFAULT_PATH,
						   !config_path);
		return daemon_run(config_path, false, log_level_override);
	}
	if (!opts.n_pids && !opts.command)
		return usage_error("%s", capture_option
						 ? "nothing to profile: give --pid PID or -- COMMAND"
						 : "nothing to do: give --pid PID or -- COMMAND to "
						   "profile, or --config FILE to run the agent");
	if (opts.n_pids && opts.command)
		return usage_error("%s", "give either --pid or -- COMMAND, not both");
	return capture_run(&opts);
}
