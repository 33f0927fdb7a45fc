/* Loads the agent's YAML configuration into struct agent_config. One table per mapping shape
 * (the agent as a whole, a target rule, a sink) lists every key with its type, bounds, default
 * and field; that table alone drives the defaults, the parsing, the validation and the "known
 * keys" hints, so a key cannot be parsed one way and defaulted another. The file is read with
 * libyaml's document API because it keeps every node's position: each message names the file,
 * line, column and key, so an operator can fix the file from the message alone. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <yaml.h>
#include <arpa/inet.h>

#include "alloc.h"
#include "sampling.h"
#include "collect/kube_pods.h"
#include "config/config.h"
#include "config/units.h"
#include "profile/label_limits.h"
#include "util/grow.h"
#include "util/small_file.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define KIB	   (1024ull)
#define MIB	   (1024ull * KIB)
#define GIB	   (1024ull * MIB)
#define MS_PER_DAY (24ull * 3600 * 1000)

/* A service name becomes a label value and part of file names; beyond this it is a mistake. */
#define SERVICE_NAME_MAX 128
/* Text quoted back in a message is cut here, so one huge scalar does not flood the log. */
#define QUOTE_MAX 60
/* Far above any real configuration: a guard against --config pointing at a disk image. */
#define CONFIG_FILE_MAX (4 * MIB)
/* Longest key path shown in a message ("targets.include[12].systemd_unit"). */
#define PATH_MAX_LEN 256
/* Bounds on the file's shape, far above any real configuration (which nests about 5 levels
 * deep and holds a few hundred values), checked before libyaml builds the document: its
 * scanner does work proportional to the nesting depth for every token, and its loader looks
 * every anchor and alias up in a list, so without them a small hostile file keeps the parse
 * busy for seconds (60,000 levels in 360 KB took 12 s). */
#define CONFIG_MAX_DEPTH   32
#define CONFIG_MAX_NODES   20000
#define CONFIG_MAX_ANCHORS 100 /* anchors (&name), and separately aliases (*name) */

enum key_type {
	KEY_SIZE,      /* bytes as units_parse_size() reads them, into a uint32_t or uint64_t */
	KEY_DURATION,  /* milliseconds: units_parse_duration() text, or days ("7d"); uint64_t */
	KEY_UINT,      /* a decimal whole number, into a uint32_t or uint64_t */
	KEY_BOOL,      /* YAML 1.1 spellings: true/false, yes/no, on/off */
	KEY_STRING,    /* any text, "" included */
	KEY_GLOB,      /* an fnmatch(3) pattern; must not be empty */
	KEY_ABS_PATH,  /* must start with '/' ("" too with KEY_MAY_BE_EMPTY) */
	KEY_SERVICE,   /* 1 .. SERVICE_NAME_MAX bytes */
	KEY_UNWIND,    /* enum unwind_mode through unwind_mode_parse() */
	KEY_LOG_LEVEL, /* enum log_level through log_parse_level() */
	KEY_SINK_TYPE, /* enum sink_type */
	KEY_SINK_NAME, /* 1 .. SINK_NAME_MAX of [A-Za-z0-9_.-] */
	KEY_URL,       /* http:// or https://, host, optional path; no credentials or query */
	KEY_ENV_NAME,  /* an environment variable's name */
	KEY_TEXT,      /* one line of printable text, not empty */
	KEY_SECRET,    /* a secret written inline: always refused, with where to put it */
	KEY_RULES,     /* a list of target rules: pointer at offset, size_t count at count_offset */
	KEY_LABELS,    /* a mapping of static labels: pointer and count as for KEY_RULES */
	KEY_SINKS,     /* a list of sinks: pointer and count as for KEY_RULES */
	KEY_HEADERS,   /* a mapping of HTTP headers: pointer and count as for KEY_RULES */
	KEY_NODE_NAME, /* a Kubernetes node name (a DNS subdomain), or "" */
	KEY_POD_LABEL, /* "KEY=VALUE": a Kubernetes label key, '=', a glob on the value */
	KEY_LISTEN,    /* "" or HOST:PORT as the metrics server takes it (listen_problem) */
	KEY_LABEL_NAME,  /* "" or a label name as profiles.labels takes it (label_name_refused) */
	KEY_LABEL_NAMES, /* a list of label names: pointer and count as for KEY_RULES */
	KEY_PERCENT,   /* "none" (-1) or a percentage 0.01 .. 100, "%" optional; a double */
};

enum key_flags {
	KEY_POWER_OF_TWO = 1 << 0,  /* sizes the kernel wants as powers of two */
	KEY_REQUIRED = 1 << 1,	    /* an item of a list is incomplete without it */
	KEY_EXCLUDE_RULES = 1 << 2, /* KEY_RULES: these rules exclude, so they name no service */
	KEY_INCLUDE_ONLY = 1 << 3,  /* a rule key that only an include rule may have */
	KEY_DIRECTORY_ONLY = 1 << 4, /* sink keys by the sink types that have them */
	KEY_PUSH_ONLY = 1 << 5,      /* pyroscope and parca */
	KEY_PYROSCOPE_ONLY = 1 << 6,
	KEY_HIDDEN = 1 << 7,         /* never listed among the known keys */
	KEY_MAY_BE_EMPTY = 1 << 8,   /* KEY_ABS_PATH: "" is a value too ("none") */
};

struct config_key {
	const char *name; /* dotted path from the table's root: "sampling.rate" */
	enum key_type type;
	unsigned flags;		  /* enum key_flags */
	uint64_t min, max;	  /* KEY_SIZE, KEY_DURATION, KEY_UINT, inclusive */
	const char *default_text; /* parsed exactly like text from the file; NULL: zero/NULL */
	const char *parca_default_text; /* sink keys: a parca sink's default, when it differs */
	const char *example;	  /* shown in messages; default_text when NULL */
	size_t offset;		  /* of the field in the table's struct */
	size_t width;		  /* sizeof the field, for integers */
	size_t count_offset;	  /* KEY_RULES, KEY_LABELS, KEY_SINKS: of the size_t count */
	/* Keys the command line sets too (config_set_flag): the long option without "--", its
	 * one-letter form (or 0), what a message calls the value ("sample rate"; NULL: the
	 * option itself), and why the range is what it is, said on the command line. */
	const char *flag;
	char short_flag;
	const char *noun;
	const char *range_why;
	/* KEY_INCLUDE_ONLY: what an excluded process, never profiled, has none of ("no
	 * service"), for the exclude rule's refusal. */
	const char *excluded_lacks;
};

/* A set of keys that one kind of YAML mapping may hold. */
struct key_table {
	const struct config_key *keys;
	size_t n_keys;
	const char *where;	   /* "at the top level", "in a rule": for unknown-key hints */
	unsigned forbidden_flags;  /* keys with any of these flags are refused here ... */
	const char *forbidden_why; /* ... with this explanation */
};

#define CONFIG_FIELD(f)                                                                            \
	.offset = offsetof(struct agent_config, f), .width = sizeof(((struct agent_config *)0)->f)
#define CONFIG_ARRAY(f, n)                                                                         \
	.offset = offsetof(struct agent_config, f), .count_offset = offsetof(struct agent_config, n)
#define RULE_FIELD(f) .offset = offsetof(struct target_rule, f)
#define SINK_FIELD(f)                                                                              \
	.offset = offsetof(struct sink_config, f), .width = sizeof(((struct sink_config *)0)->f)
#define SINK_ARRAY(f, n)                                                                           \
	.offset = offsetof(struct sink_config, f), .count_offset = offsetof(struct sink_config, n)

/* The longest sink name (export/sink.h's SINK_NAME_MAX). */
#define SINK_NAME_LEN 63
/* Pyroscope's default limit of labels per series; the agent adds __name__ and __delta__ to
 * service_name, hostname, the static labels and, for pods, namespace, pod, container and
 * node. */
#define PYROSCOPE_MAX_LABELS 30
_Static_assert(CONFIG_MAX_STATIC_LABELS + 4 + 4 <= PYROSCOPE_MAX_LABELS,
	       "static labels could exceed Pyroscope's label limit");
/* The longest Kubernetes node name (a DNS subdomain). */
#define NODE_NAME_MAX 253

/* The one definition of every setting's name, default and range, for the file and (with .flag)
 * the command line alike. */
static bool label_name_refused(const char *name, const char *quoted, char *why, size_t len);

static const struct config_key agent_keys[] = {
	{ "sampling.rate", KEY_SIZE, .min = 1, .max = SAMPLING_MAX_RATE,
	  .default_text = SAMPLING_DEFAULT_RATE_TEXT,
	  CONFIG_FIELD(sampling.sample_rate), .flag = "sample-rate", .short_flag = 'r',
	  .noun = "sample rate" },
	{ "sampling.unwind", KEY_UNWIND, .default_text = "auto", CONFIG_FIELD(sampling.unwind),
	  .flag = "unwind" },
	{ "sampling.stack_copy_size", KEY_SIZE, KEY_POWER_OF_TWO, .min = 1 * KIB,
	  .max = ALLOC_MAX_STACK_COPY, .default_text = "16KiB",
	  CONFIG_FIELD(sampling.stack_copy_bytes), .flag = "stack-copy-size",
	  .noun = "stack copy size" },
	{ "sampling.ringbuf_size", KEY_SIZE, KEY_POWER_OF_TWO, .min = ALLOC_RINGBUF_MIN_BYTES,
	  .max = ALLOC_RINGBUF_MAX_BYTES, .default_text = "16MiB",
	  CONFIG_FIELD(sampling.ringbuf_bytes), .flag = "ringbuf-size",
	  .noun = "ring buffer size",
	  .range_why = "the smallest holds one sample with the largest stack copy" },
	{ "sampling.unwind_table_size", KEY_SIZE, .min = 1 * MIB, .max = 1 * GIB,
	  .default_text = "16MiB", CONFIG_FIELD(sampling.unwind_table_bytes) },
	{ "targets.include", KEY_RULES, CONFIG_ARRAY(targets.include, targets.n_include) },
	{ "targets.exclude", KEY_RULES, KEY_EXCLUDE_RULES,
	  CONFIG_ARRAY(targets.exclude, targets.n_exclude) },
	{ "profiles.interval", KEY_DURATION, .min = 1000, .max = 3600 * 1000,
	  .default_text = "15s", CONFIG_FIELD(interval_ms) },
	/* No default text: "" or absence means gethostname(), filled in after loading. */
	{ "profiles.hostname", KEY_STRING, CONFIG_FIELD(hostname) },
	{ "profiles.labels", KEY_LABELS, CONFIG_ARRAY(labels, n_labels) },
	{ "profiles.pid_label", KEY_BOOL, .default_text = "false", CONFIG_FIELD(pid_label) },
	{ "limits.max_processes", KEY_UINT, .min = 1, .max = 65536, .default_text = "1024",
	  CONFIG_FIELD(max_processes) },
	{ "limits.max_services", KEY_UINT, .min = 1, .max = 100000, .default_text = "256",
	  CONFIG_FIELD(max_services) },
	{ "limits.max_label_value_bytes", KEY_UINT, .min = 16, .max = 1024,
	  .default_text = "128", CONFIG_FIELD(max_label_value_bytes) },
	/* The default, one directory sink with the sink defaults, comes from make_default_sinks. */
	{ "sinks", KEY_SINKS, CONFIG_ARRAY(sinks, n_sinks) },
	{ "metrics.listen", KEY_LISTEN, .default_text = "127.0.0.1:9464",
	  CONFIG_FIELD(metrics_listen) },
	{ "metrics.allow_remote", KEY_BOOL, .default_text = "false",
	  CONFIG_FIELD(metrics_allow_remote) },
	{ "log.level", KEY_LOG_LEVEL, .default_text = "info", CONFIG_FIELD(log_level),
	  .flag = "log-level", .noun = "log level" },
	/* No default text: NULL tells the symbolizer to read DEBUGINFOD_URLS itself. */
	{ "symbolize.debuginfod_urls", KEY_STRING, CONFIG_FIELD(sampling.debuginfod_urls),
	  .flag = "debuginfod" },
	{ "kubernetes.enabled", KEY_BOOL, .default_text = "false",
	  CONFIG_FIELD(kubernetes.enabled) },
	/* No default text: "" or absence means $NODE_NAME, filled in after loading. */
	{ "kubernetes.node_name", KEY_NODE_NAME, .example = "node-1",
	  CONFIG_FIELD(kubernetes.node_name) },
	/* No default text: NULL tells the pod cache to use KUBERNETES_SERVICE_HOST/PORT. */
	{ "kubernetes.api_server", KEY_URL, .example = "https://kubernetes.default.svc",
	  CONFIG_FIELD(kubernetes.api_server) },
	{ "kubernetes.refresh_interval", KEY_DURATION, .min = 1000, .max = 3600 * 1000,
	  .default_text = "30s", CONFIG_FIELD(kubernetes.refresh_interval_ms) },
	{ "kubernetes.token_path", KEY_ABS_PATH, KEY_MAY_BE_EMPTY,
	  .default_text = KUBE_PODS_DEFAULT_TOKEN_PATH, CONFIG_FIELD(kubernetes.token_path) },
	{ "kubernetes.ca_path", KEY_ABS_PATH, .default_text = KUBE_PODS_DEFAULT_CA_PATH,
	  CONFIG_FIELD(kubernetes.ca_path) },
	/* Issue 15: versions and per-sample labels (profile/label_limits.h). */
	{ "profiles.version_label", KEY_LABEL_NAME, .default_text = "service_version",
	  CONFIG_FIELD(version_label) },
	{ "sample_labels.keys", KEY_LABEL_NAMES,
	  CONFIG_ARRAY(sample_labels.keys, sample_labels.n_keys) },
	{ "sample_labels.max_keys", KEY_UINT, .min = 1, .max = LABEL_LIMITS_MAX_KEYS,
	  .default_text = "8", CONFIG_FIELD(sample_labels.max_keys) },
	{ "sample_labels.max_values", KEY_UINT, .min = 1, .max = 100000, .default_text = "100",
	  CONFIG_FIELD(sample_labels.max_values), .flag = "label-max-values",
	  .noun = "label value count" },
	{ "sample_labels.max_value_bytes", KEY_UINT, .min = 8, .max = LABEL_LIMITS_MAX_VALUE_BYTES,
	  .default_text = "64", CONFIG_FIELD(sample_labels.max_value_bytes),
	  .flag = "label-max-value-bytes", .noun = "label value length" },
	/* Overhead budget (attach/duty_cycle.h); a rule's max_cpu_percent overrides it. */
	{ "overhead.max_cpu_percent", KEY_PERCENT, .default_text = "none", .example = "1",
	  CONFIG_FIELD(overhead_max_cpu_percent), .flag = "max-overhead",
	  .noun = "overhead budget" },
	/* Request context (issue 15): what threads publish through the OTel thread context or
	 * Custom Labels, read on the sampled path and kept as sample labels. */
	{ "context.enabled", KEY_BOOL, .default_text = "true",
	  CONFIG_FIELD(sampling.context_enabled), .flag = "context" },
	{ "context.trace_ids", KEY_BOOL, .default_text = "false",
	  CONFIG_FIELD(sampling.context_trace_ids), .flag = "context-trace-ids" },
	{ "context.max_record_bytes", KEY_UINT, .min = 0, .max = ALLOC_CONTEXT_MAX_BYTES,
	  .default_text = "256", CONFIG_FIELD(sampling.context_max_record_bytes),
	  .flag = "context-max-record-bytes", .noun = "context record size" },
};

static const struct config_key rule_keys[] = {
	{ "service", KEY_SERVICE, KEY_INCLUDE_ONLY, RULE_FIELD(service),
	  .excluded_lacks = "no service" },
	{ "executable", KEY_GLOB, .example = "/usr/bin/redis-*", RULE_FIELD(executable) },
	{ "process_name", KEY_GLOB, .example = "nginx", RULE_FIELD(process_name) },
	{ "cgroup", KEY_ABS_PATH, .example = "/system.slice/app.service", RULE_FIELD(cgroup) },
	{ "systemd_unit", KEY_GLOB, .example = "redis*.service", RULE_FIELD(systemd_unit) },
	{ "namespace", KEY_GLOB, .example = "shop", RULE_FIELD(namespace_name) },
	{ "pod_label", KEY_POD_LABEL, .example = "app.kubernetes.io/name=checkout",
	  RULE_FIELD(pod_label) },
	{ "container", KEY_GLOB, .example = "app", RULE_FIELD(container) },
	/* Issue 15: what the rule's processes run, as labels (collect/service_version.h). */
	{ "version", KEY_TEXT, KEY_INCLUDE_ONLY, .example = "2.14.1", RULE_FIELD(version),
	  .excluded_lacks = "no profiles to label" },
	{ "repository", KEY_TEXT, KEY_INCLUDE_ONLY, .example = "https://github.com/acme/shop",
	  RULE_FIELD(repository), .excluded_lacks = "no profiles to label" },
	{ "git_ref", KEY_TEXT, KEY_INCLUDE_ONLY, .example = "v2.14.1", RULE_FIELD(git_ref),
	  .excluded_lacks = "no profiles to label" },
	{ "root_path", KEY_TEXT, KEY_INCLUDE_ONLY, .example = "services/shop",
	  RULE_FIELD(root_path), .excluded_lacks = "no profiles to label" },
	/* In-use profiles for what the rule matches (issue 16): a probe on every free on the
	 * transparent path (docs/operations.md); the live map is made at start. */
	{ "inuse", KEY_BOOL, KEY_INCLUDE_ONLY, .default_text = "false", RULE_FIELD(inuse),
	  .excluded_lacks = "no in-use profile" },
	/* Not a matcher: the overhead budget of what the rule matches (0: the host-wide one). */
	{ "max_cpu_percent", KEY_PERCENT, KEY_INCLUDE_ONLY, .example = "5",
	  RULE_FIELD(max_cpu_percent), .excluded_lacks = "no probes and no overhead to budget" },
};

static const struct config_key sink_keys[] = {
	{ "type", KEY_SINK_TYPE, KEY_REQUIRED, SINK_FIELD(type) },
	/* No default text: absence means the type's name, filled in after loading. */
	{ "name", KEY_SINK_NAME, .example = "grafana-cloud", SINK_FIELD(name) },
	{ "path", KEY_ABS_PATH, KEY_DIRECTORY_ONLY, .default_text = "/var/lib/allocscope/profiles",
	  SINK_FIELD(path) },
	{ "max_total_size", KEY_SIZE, KEY_DIRECTORY_ONLY, .min = 0, .max = UINT64_MAX,
	  .default_text = "1GiB", SINK_FIELD(max_total_bytes) },
	{ "max_age", KEY_DURATION, KEY_DIRECTORY_ONLY, .min = 0, .max = UINT64_MAX,
	  .default_text = "7d", SINK_FIELD(max_age_ms) },
	{ "url", KEY_URL, KEY_PUSH_ONLY | KEY_REQUIRED, .example = "https://profiles.example.com",
	  SINK_FIELD(url) },
	{ "timeout", KEY_DURATION, KEY_PUSH_ONLY, .min = 1000, .max = 300 * 1000,
	  .default_text = "10s", SINK_FIELD(timeout_ms) },
	{ "queue_size", KEY_UINT, KEY_PUSH_ONLY, .min = 1, .max = 100000, .default_text = "64",
	  SINK_FIELD(queue_size) },
	{ "spool_dir", KEY_ABS_PATH, KEY_PUSH_ONLY, .example = "/var/lib/allocscope/spool/cloud",
	  SINK_FIELD(spool_dir) },
	{ "spool_max_bytes", KEY_SIZE, KEY_PUSH_ONLY, .min = 4 * KIB, .max = 1024 * GIB,
	  .default_text = "256MiB", SINK_FIELD(spool_max_bytes) },
	{ "shutdown_timeout", KEY_DURATION, KEY_PUSH_ONLY, .min = 0, .max = 300 * 1000,
	  .default_text = "5s", SINK_FIELD(shutdown_timeout_ms) },
	/* The defaults fit a server with its default limits: Pyroscope's ingestion burst is
	 * 2 MiB per tenant (a request above it is refused for ever) and it refuses more than
	 * 16,000 samples and profiles older than 1 h; Parca takes messages up to 64 MiB. */
	{ "max_profile_size", KEY_SIZE, KEY_PUSH_ONLY, .min = 0, .max = 1 * GIB,
	  .default_text = "1MiB", .parca_default_text = "32MiB", SINK_FIELD(max_profile_bytes) },
	{ "max_samples", KEY_UINT, KEY_PUSH_ONLY, .min = 0, .max = 100000000,
	  .default_text = "16000", .parca_default_text = "0", SINK_FIELD(max_samples) },
	{ "max_profile_age", KEY_DURATION, KEY_PUSH_ONLY, .min = 0, .max = 30ull * 86400 * 1000,
	  .default_text = "50m", .parca_default_text = "24h", SINK_FIELD(max_profile_age_ms) },
	{ "max_attempts", KEY_UINT, KEY_PUSH_ONLY, .min = 0, .max = 1000000, .default_text = "8",
	  SINK_FIELD(max_attempts) },
	{ "max_backoff", KEY_DURATION, KEY_PUSH_ONLY, .min = 1000, .max = 3600 * 1000,
	  .default_text = "60s", SINK_FIELD(max_backoff_ms) },
	{ "username", KEY_TEXT, KEY_PYROSCOPE_ONLY, .example = "123456",
	  SINK_FIELD(username) },
	{ "password_file", KEY_ABS_PATH, KEY_PYROSCOPE_ONLY,
	  .example = "/etc/allocscope/pyroscope-password", SINK_FIELD(password_file) },
	{ "password_env", KEY_ENV_NAME, KEY_PYROSCOPE_ONLY, .example = "PYROSCOPE_PASSWORD",
	  SINK_FIELD(password_env) },
	{ "token_file", KEY_ABS_PATH, KEY_PUSH_ONLY, .example = "/etc/allocscope/token",
	  SINK_FIELD(token_file) },
	{ "token_env", KEY_ENV_NAME, KEY_PUSH_ONLY, .example = "PARCA_TOKEN",
	  SINK_FIELD(token_env) },
	{ "tenant", KEY_TEXT, KEY_PYROSCOPE_ONLY, .example = "team-a", SINK_FIELD(tenant) },
	{ "headers", KEY_HEADERS, KEY_PUSH_ONLY, SINK_ARRAY(headers, n_headers) },
	{ "ca_file", KEY_ABS_PATH, KEY_PUSH_ONLY, .example = "/etc/allocscope/ca.pem",
	  SINK_FIELD(ca_file) },
	{ "cert_file", KEY_ABS_PATH, KEY_PUSH_ONLY, .example = "/etc/allocscope/client.pem",
	  SINK_FIELD(cert_file) },
	{ "key_file", KEY_ABS_PATH, KEY_PUSH_ONLY, .example = "/etc/allocscope/client-key.pem",
	  SINK_FIELD(key_file) },
	{ "server_name", KEY_TEXT, KEY_PUSH_ONLY, .example = "profiles.internal",
	  SINK_FIELD(server_name) },
	{ "insecure_skip_verify", KEY_BOOL, KEY_PUSH_ONLY, .default_text = "false",
	  SINK_FIELD(insecure_skip_verify) },
	/* Secrets written into the file itself are refused, with a pointer to the keys that
	 * take them from elsewhere (.example names the family). */
	{ "password", KEY_SECRET, KEY_PYROSCOPE_ONLY | KEY_HIDDEN, .example = "password" },
	{ "token", KEY_SECRET, KEY_PUSH_ONLY | KEY_HIDDEN, .example = "token" },
	{ "bearer_token", KEY_SECRET, KEY_PUSH_ONLY | KEY_HIDDEN, .example = "token" },
};

/* walk_mapping() records the keys it saw in a 64-bit mask. */
_Static_assert(ARRAY_SIZE(agent_keys) <= 64, "too many keys for the seen mask");
_Static_assert(ARRAY_SIZE(rule_keys) <= 64, "too many keys for the seen mask");
_Static_assert(ARRAY_SIZE(sink_keys) <= 64, "too many keys for the seen mask");

static const struct key_table agent_table = {
	.keys = agent_keys,
	.n_keys = ARRAY_SIZE(agent_keys),
	.where = "at the top level",
};
static const struct key_table include_rule_table = {
	.keys = rule_keys,
	.n_keys = ARRAY_SIZE(rule_keys),
	.where = "in a rule",
};
static const struct key_table exclude_rule_table = {
	.keys = rule_keys,
	.n_keys = ARRAY_SIZE(rule_keys),
	.where = "in an exclude rule",
	.forbidden_flags = KEY_INCLUDE_ONLY,
	/* Followed by " (excluded processes are never profiled, so they have " and the key's
	 * excluded_lacks. */
	.forbidden_why = "not allowed in an exclude rule",
};
/* Before its type is known, a sink is walked against every sink key (defaults). */
static const struct key_table sink_table = {
	.keys = sink_keys,
	.n_keys = ARRAY_SIZE(sink_keys),
	.where = "in a sink",
};
static const struct key_table sink_tables[] = {
	[SINK_TYPE_DIRECTORY] = {
		.keys = sink_keys,
		.n_keys = ARRAY_SIZE(sink_keys),
		.where = "in a directory sink",
		.forbidden_flags = KEY_PUSH_ONLY | KEY_PYROSCOPE_ONLY,
		.forbidden_why = "not a key of a directory sink (it belongs to pyroscope and "
				 "parca sinks)",
	},
	[SINK_TYPE_PYROSCOPE] = {
		.keys = sink_keys,
		.n_keys = ARRAY_SIZE(sink_keys),
		.where = "in a pyroscope sink",
		.forbidden_flags = KEY_DIRECTORY_ONLY,
		.forbidden_why = "not a key of a pyroscope sink (it belongs to directory sinks)",
	},
	[SINK_TYPE_PARCA] = {
		.keys = sink_keys,
		.n_keys = ARRAY_SIZE(sink_keys),
		.where = "in a parca sink",
		.forbidden_flags = KEY_DIRECTORY_ONLY | KEY_PYROSCOPE_ONLY,
		.forbidden_why = "not a key of a parca sink (it belongs to directory or "
				 "pyroscope sinks)",
	},
};

static const char *const sink_type_names[] = {
	[SINK_TYPE_DIRECTORY] = "directory",
	[SINK_TYPE_PYROSCOPE] = "pyroscope",
	[SINK_TYPE_PARCA] = "parca",
};

/* Label names the agent sets itself on every profile. */
static const char *const reserved_label_names[] = { "service_name", "hostname", "pid" };

struct load_ctx {
	const char *name; /* the file, as messages call it */
	yaml_document_t *doc;
	char *err;
	size_t err_len;
	/* Set when the value comes from a command-line flag (config_set_flag): messages then
	 * read "invalid NOUN 'TEXT': expected ..." and sizes are shown as the summary shows
	 * them. */
	const char *flag_noun;
	const char *flag_text;
};

/* Writes "NAME:LINE:COLUMN: PATH: message" into the error buffer (libyaml counts from 0,
 * editors from 1) and returns -EINVAL, so callers can `return fail(...)`. */
__attribute__((format(printf, 4, 5))) static int fail(struct load_ctx *ctx, yaml_mark_t mark,
						      const char *path, const char *fmt, ...)
{
	char message[768];
	va_list ap;

	if (!ctx->err || !ctx->err_len)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	if (ctx->flag_noun)
		snprintf(ctx->err, ctx->err_len, "invalid %s '%s': %s", ctx->flag_noun,
			 ctx->flag_text, message);
	else if (path && path[0])
		snprintf(ctx->err, ctx->err_len, "%s:%zu:%zu: %s: %s", ctx->name, mark.line + 1,
			 mark.column + 1, path, message);
	else
		snprintf(ctx->err, ctx->err_len, "%s:%zu:%zu: %s", ctx->name, mark.line + 1,
			 mark.column + 1, message);
	return -EINVAL;
}

static yaml_node_t *node_at(struct load_ctx *ctx, int index)
{
	return yaml_document_get_node(ctx->doc, index);
}

/* "~", "null" and nothing at all are YAML's null; a quoted "" is an empty string. */
static bool is_null(const yaml_node_t *node)
{
	const char *text;

	if (!node)
		return true;
	if (node->type != YAML_SCALAR_NODE)
		return false;
	if (node->tag && strcmp((const char *)node->tag, YAML_NULL_TAG) == 0)
		return true;
	if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	text = (const char *)node->data.scalar.value;
	return !text[0] || strcmp(text, "~") == 0 || strcmp(text, "null") == 0 ||
	       strcmp(text, "Null") == 0 || strcmp(text, "NULL") == 0;
}

/* Quotes text for a message, cut at QUOTE_MAX, control characters shown as '?'. */
static const char *quote(const char *text, char *buf, size_t len)
{
	size_t n = 0, i;

	if (len < QUOTE_MAX + 8)
		return "";
	buf[n++] = '"';
	for (i = 0; text[i] && i < QUOTE_MAX; i++)
		buf[n++] = iscntrl((unsigned char)text[i]) ? '?' : text[i];
	if (text[i]) {
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n++] = '"';
	buf[n] = '\0';
	return buf;
}

/* What a node is, for the "got ..." half of a message. */
static const char *describe_node(const yaml_node_t *node, char *buf, size_t len)
{
	if (!node)
		return "nothing";
	if (node->type == YAML_SEQUENCE_NODE)
		return "a list";
	if (node->type == YAML_MAPPING_NODE)
		return "a mapping";
	if (is_null(node))
		return node->data.scalar.length ? "null" : "nothing";
	return quote((const char *)node->data.scalar.value, buf, len);
}

/* Exact binary sizes read back the way users write them: 4GiB, 64KiB, 1B. */
static const char *format_size(uint64_t bytes, char *buf, size_t len)
{
	if (bytes && bytes % GIB == 0)
		snprintf(buf, len, "%lluGiB", (unsigned long long)(bytes / GIB));
	else if (bytes && bytes % MIB == 0)
		snprintf(buf, len, "%lluMiB", (unsigned long long)(bytes / MIB));
	else if (bytes && bytes % KIB == 0)
		snprintf(buf, len, "%lluKiB", (unsigned long long)(bytes / KIB));
	else
		snprintf(buf, len, "%lluB", (unsigned long long)bytes);
	return buf;
}

static const char *format_duration(uint64_t ms, char *buf, size_t len)
{
	static const struct {
		const char *suffix;
		uint64_t ms;
	} units[] = { { "d", MS_PER_DAY }, { "h", 3600000 }, { "m", 60000 }, { "s", 1000 } };

	for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
		if (ms && ms % units[i].ms == 0) {
			snprintf(buf, len, "%llu%s", (unsigned long long)(ms / units[i].ms),
				 units[i].suffix);
			return buf;
		}
	}
	snprintf(buf, len, "%llums", (unsigned long long)ms);
	return buf;
}

/* The "expected ..." half of a message for a value of the wrong form. */
static const char *expected_phrase(const struct config_key *key, char *buf, size_t len)
{
	const char *example = key->example ? key->example : key->default_text;

	switch (key->type) {
	case KEY_SIZE:
		snprintf(buf, len, "a size like %s", example);
		break;
	case KEY_DURATION:
		snprintf(buf, len, "a duration like %s", example);
		break;
	case KEY_UINT:
		snprintf(buf, len, "a whole number from %llu to %llu", (unsigned long long)key->min,
			 (unsigned long long)key->max);
		break;
	case KEY_PERCENT:
		snprintf(buf, len, "a percentage from 0.01 to 100 like %s (or none)", example);
		break;
	case KEY_BOOL:
		snprintf(buf, len, "true or false");
		break;
	case KEY_STRING:
		snprintf(buf, len, "a string");
		break;
	case KEY_GLOB:
		snprintf(buf, len, "a non-empty glob like %s", example);
		break;
	case KEY_ABS_PATH:
		snprintf(buf, len, "an absolute path like %s%s", example,
			 (key->flags & KEY_MAY_BE_EMPTY) ? " (or \"\" for none)" : "");
		break;
	case KEY_SERVICE:
		snprintf(buf, len, "a service name of 1 to %d bytes", SERVICE_NAME_MAX);
		break;
	case KEY_UNWIND:
		snprintf(buf, len, "an unwind mode (auto, kernel, dwarf or fp)");
		break;
	case KEY_LOG_LEVEL:
		snprintf(buf, len, "a log level (error, warn, info or debug)");
		break;
	case KEY_SINK_TYPE:
		snprintf(buf, len, "a sink type (directory, pyroscope or parca)");
		break;
	case KEY_SINK_NAME:
		snprintf(buf, len, "a name of 1 to %d letters, digits, '_', '.' or '-' like %s",
			 SINK_NAME_LEN, example);
		break;
	case KEY_URL:
		snprintf(buf, len, "an http:// or https:// URL like %s", example);
		break;
	case KEY_ENV_NAME:
		snprintf(buf, len, "an environment variable name like %s", example);
		break;
	case KEY_TEXT:
		snprintf(buf, len, "one line of text like %s", example);
		break;
	case KEY_SECRET:
		snprintf(buf, len, "nothing (secrets are not accepted here)");
		break;
	case KEY_HEADERS:
		snprintf(buf, len, "a mapping of header names to values");
		break;
	case KEY_RULES:
		snprintf(buf, len, "a list of target rules");
		break;
	case KEY_LABELS:
		snprintf(buf, len, "a mapping of label names to values");
		break;
	case KEY_SINKS:
		snprintf(buf, len, "a list of sinks");
		break;
	case KEY_NODE_NAME:
		snprintf(buf, len,
			 "a Kubernetes node name (lowercase letters, digits, '-' and '.') like %s",
			 example);
		break;
	case KEY_POD_LABEL:
		snprintf(buf, len, "a pod label KEY=VALUE (VALUE may be a glob) like %s", example);
		break;
	case KEY_LISTEN:
		snprintf(buf, len, "HOST:PORT like %s or [::1]:9464 (\"\" turns it off)", example);
		break;
	case KEY_LABEL_NAME:
		snprintf(buf, len,
			 "a label name matching [a-zA-Z_][a-zA-Z0-9_]* like %s (\"\" for none)",
			 example);
		break;
	case KEY_LABEL_NAMES:
		snprintf(buf, len, "a list of label names like [endpoint, tenant]");
		break;
	}
	return buf;
}

static int fail_expected(struct load_ctx *ctx, const struct config_key *key, const char *path,
			 yaml_mark_t mark, const char *found)
{
	char expected[128];

	/* The command line's message quotes the text already. */
	if (ctx->flag_noun)
		return fail(ctx, mark, path, "expected %s",
			    expected_phrase(key, expected, sizeof(expected)));
	return fail(ctx, mark, path, "expected %s, got %s",
		    expected_phrase(key, expected, sizeof(expected)), found);
}

static int fail_expected_text(struct load_ctx *ctx, const struct config_key *key, const char *path,
			      yaml_mark_t mark, const char *text)
{
	char quoted[QUOTE_MAX + 8];

	return fail_expected(ctx, key, path, mark, quote(text, quoted, sizeof(quoted)));
}

/* Paths only ever appear in messages, so a path cut at the buffer's end is acceptable. */
static void join_path(char *buf, size_t len, const char *prefix, const char *name)
{
	int written;

	if (prefix && prefix[0])
		written = snprintf(buf, len, "%s.%s", prefix, name);
	else
		written = snprintf(buf, len, "%s", name);
	if (written < 0 && len)
		buf[0] = '\0';
}

/* units_parse_duration() stops at hours; retention is naturally said in days ("7d"), so the
 * day suffix is taken here, where only the configuration file wants it. */
static int parse_duration_ms(const char *text, uint64_t *ms)
{
	char number[32];
	size_t len = strlen(text);
	uint64_t seconds_as_ms;
	int ret;

	if (len < 2 || (text[len - 1] != 'd' && text[len - 1] != 'D'))
		return units_parse_duration(text, ms);
	len--;
	while (len && text[len - 1] == ' ')
		len--;
	if (!len || len >= sizeof(number) || !isdigit((unsigned char)text[len - 1]))
		return -EINVAL;
	memcpy(number, text, len);
	number[len] = '\0';
	/* A bare number is seconds to units_parse_duration(): scale seconds to days. */
	ret = units_parse_duration(number, &seconds_as_ms);
	if (ret)
		return ret;
	if (seconds_as_ms > UINT64_MAX / (24 * 3600))
		return -ERANGE;
	*ms = seconds_as_ms * 24 * 3600;
	return 0;
}

/* Decimal only: "0x10" and "1e3" are refused, and so is "010", which a YAML 1.1 reader would
 * take for octal 8. */
static int parse_decimal(const char *text, uint64_t *value)
{
	unsigned long long parsed;
	char *end;

	if (!isdigit((unsigned char)text[0]) || (text[0] == '0' && text[1]))
		return -EINVAL;
	errno = 0;
	parsed = strtoull(text, &end, 10);
	if (errno)
		return -ERANGE;
	if (*end)
		return -EINVAL;
	*value = parsed;
	return 0;
}

/* "none" is -1; else a decimal number of percent, a '%' after it allowed, 0.01 .. 100. */
static int parse_percent(const char *text, double *value)
{
	char number[32], *end;
	size_t len = strlen(text);
	double parsed;

	if (strcmp(text, "none") == 0) {
		*value = -1;
		return 0;
	}
	if (len && text[len - 1] == '%')
		len--;
	if (len == 0 || len >= sizeof(number))
		return -EINVAL;
	memcpy(number, text, len);
	number[len] = '\0';
	for (size_t i = 0; i < len; i++)
		if (!isdigit((unsigned char)number[i]) && number[i] != '.')
			return -EINVAL;
	errno = 0;
	parsed = strtod(number, &end);
	if (errno || *end || parsed < 0.01 || parsed > 100)
		return -EINVAL;
	*value = parsed;
	return 0;
}

static int parse_bool(const char *text, bool *value)
{
	static const char *const yes[] = { "true", "yes", "on" };
	static const char *const no[] = { "false", "no", "off" };

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcasecmp(text, yes[i]) == 0) {
			*value = true;
			return 0;
		}
		if (strcasecmp(text, no[i]) == 0) {
			*value = false;
			return 0;
		}
	}
	return -EINVAL;
}

static void set_uint(void *field, size_t width, uint64_t value)
{
	if (width == sizeof(uint32_t)) {
		uint32_t narrow = (uint32_t)value;

		memcpy(field, &narrow, sizeof(narrow));
	} else {
		memcpy(field, &value, sizeof(value));
	}
}

static int set_string(char **field, const char *text)
{
	char *copy = strdup(text);

	if (!copy)
		return -ENOMEM;
	free(*field);
	*field = copy;
	return 0;
}

static bool sink_name_valid(const char *text)
{
	size_t len = strlen(text);

	if (!len || len > SINK_NAME_LEN)
		return false;
	for (const char *p = text; *p; p++) {
		if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' && *p != '-')
			return false;
	}
	return true;
}

static bool env_name_valid(const char *text)
{
	if (!isalpha((unsigned char)text[0]) && text[0] != '_')
		return false;
	for (const char *p = text; *p; p++) {
		if (!isalnum((unsigned char)*p) && *p != '_')
			return false;
	}
	return strlen(text) <= 255;
}

/* Printable, one line: the text ends up in HTTP headers and log lines. */
static bool text_valid(const char *text)
{
	if (!text[0] || strlen(text) > 1024)
		return false;
	for (const char *p = text; *p; p++) {
		unsigned char c = (unsigned char)*p;

		if (c < 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

/* The form of a push URL; libcurl's parser checks the rest when the sink is made. Credentials
 * are refused here so they never sit in a file that is usually world-readable. Returns NULL
 * when fine, else what is wrong. */
static const char *url_problem(const char *text)
{
	const char *authority, *end;

	if (strncmp(text, "http://", 7) == 0)
		authority = text + 7;
	else if (strncmp(text, "https://", 8) == 0)
		authority = text + 8;
	else
		return "the scheme must be http:// or https://";
	for (const char *p = text; *p; p++) {
		unsigned char c = (unsigned char)*p;

		if (c <= 0x20 || c == 0x7f)
			return "it holds a space or a control character";
	}
	end = authority + strcspn(authority, "/?#");
	if (end == authority)
		return "it names no host";
	if (memchr(authority, '@', (size_t)(end - authority)))
		return "credentials in the URL are refused (use username with password_file or "
		       "password_env, or token_file or token_env)";
	if (strpbrk(text, "?#"))
		return "a query or fragment is not allowed (the push path is appended to the URL)";
	if (strlen(text) > 2048)
		return "it is longer than 2048 bytes";
	return NULL;
}

/* A listen address in the form the metrics server takes (export/metrics_server.h), checked
 * here so that --check-config and a reload refuse what the server would refuse at start:
 * IPV4:PORT, [IPV6]:PORT or localhost:PORT, the address a literal (nothing is resolved; the
 * short forms inet_aton allows, such as 127.1, are not addresses to the server), the port a
 * decimal from 0 to 65535 (0: any free port, for tests). "" turns the endpoint off. Returns
 * NULL when fine, else what is wrong. */
static const char *listen_problem(const char *text)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *host_start, *port_text;
	struct in6_addr v6;
	struct in_addr v4;
	size_t host_len;
	uint64_t port;
	bool bracketed = text[0] == '[';

	if (!text[0])
		return NULL;
	if (bracketed) {
		const char *close = strchr(text, ']');

		if (!close || close[1] != ':')
			return "an IPv6 address in brackets must be followed by :PORT";
		host_start = text + 1;
		port_text = close + 2;
	} else {
		const char *colon = strrchr(text, ':');

		if (!colon)
			return "it has no :PORT";
		host_start = text;
		port_text = colon + 1;
		if (memchr(text, ':', (size_t)(colon - text)))
			return "an IPv6 address goes in brackets, as in [::1]:9464";
	}
	host_len = (size_t)(port_text - 1 - host_start) - (bracketed ? 1 : 0);
	if (!host_len)
		return "it names no address";
	if (host_len >= sizeof(host))
		return "the address is too long";
	memcpy(host, host_start, host_len);
	host[host_len] = '\0';
	if (bracketed && inet_pton(AF_INET6, host, &v6) != 1)
		return "the address in brackets is not an IPv6 address";
	if (!bracketed && strcmp(host, "localhost") != 0 && inet_pton(AF_INET, host, &v4) != 1)
		return "the address must be an IPv4 address in full (four numbers, as in "
		       "127.0.0.1), an IPv6 address in brackets, or localhost";
	if (parse_decimal(port_text, &port) || port > 65535)
		return "the port must be a number from 0 to 65535";
	return NULL;
}

/* A DNS subdomain (RFC 1123), what Kubernetes allows as a node name and a label key's prefix:
 * dot-separated labels of lowercase letters, digits and '-', each starting and ending with a
 * letter or digit; at most 253 bytes. */
static bool dns_subdomain_valid(const char *text, size_t len)
{
	if (len == 0 || len > NODE_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = text[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
		bool at_edge = i == 0 || i == len - 1 || text[i - 1] == '.' || text[i + 1] == '.';

		if (!alnum && !((c == '-' || c == '.') && !at_edge))
			return false;
	}
	return true;
}

/* A label key as Kubernetes allows it: an optional DNS subdomain prefix and '/', then a name
 * of 1 to 63 letters, digits, '-', '_' and '.' that starts and ends with a letter or digit.
 * A key outside this form is on no pod, so a rule naming it could never match. */
static bool label_key_valid(const char *key, size_t len)
{
	const char *slash = memchr(key, '/', len);
	const char *name = slash ? slash + 1 : key;
	size_t name_len = len - (size_t)(name - key);

	if (slash && !dns_subdomain_valid(key, (size_t)(slash - key)))
		return false;
	if (name_len == 0 || name_len > 63 || !isalnum((unsigned char)name[0]) ||
	    !isalnum((unsigned char)name[name_len - 1]))
		return false;
	for (size_t i = 0; i < name_len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (!isalnum(c) && c != '-' && c != '_' && c != '.')
			return false;
	}
	return true;
}

static bool pod_label_selector_valid(const char *text)
{
	const char *equals = strchr(text, '=');

	return equals && label_key_valid(text, (size_t)(equals - text));
}

/* Sizes and durations share their checks: form, then range, then (sizes) power of two. */
static int set_quantity(struct load_ctx *ctx, const struct config_key *key, const char *path,
			const char *text, yaml_mark_t mark, void *field)
{
	char quoted[QUOTE_MAX + 8], low[32], high[32];
	bool is_size = key->type == KEY_SIZE;
	uint64_t value;
	int ret;

	ret = is_size ? units_parse_size(text, &value) : parse_duration_ms(text, &value);
	if (ctx->flag_noun) {
		/* One message for the form and the range: what a user of the flag needs. */
		bool fits = !ret && value >= key->min && value <= key->max &&
			    (!(key->flags & KEY_POWER_OF_TWO) || !(value & (value - 1)));

		if (fits) {
			set_uint(field, key->width, value);
			return 0;
		}
		if (is_size) {
			units_format_size((double)key->min, low, sizeof(low));
			units_format_size((double)key->max, high, sizeof(high));
		} else {
			format_duration(key->min, low, sizeof(low));
			format_duration(key->max, high, sizeof(high));
		}
		return fail(ctx, mark, path, "expected %s from %s to %s%s%s%s, e.g. %s",
			    (key->flags & KEY_POWER_OF_TWO) ? "a power of two"
			    : is_size			     ? "a size"
							     : "a duration",
			    low, high, key->range_why ? " (" : "",
			    key->range_why ? key->range_why : "", key->range_why ? ")" : "",
			    key->example ? key->example : key->default_text);
	}
	if (ret)
		return fail_expected_text(ctx, key, path, mark, text);
	quote(text, quoted, sizeof(quoted));
	if (is_size) {
		format_size(key->min, low, sizeof(low));
		format_size(key->max, high, sizeof(high));
	} else {
		format_duration(key->min, low, sizeof(low));
		format_duration(key->max, high, sizeof(high));
	}
	if (key->flags & KEY_POWER_OF_TWO) {
		if (value < key->min || value > key->max || (value & (value - 1)))
			return fail(ctx, mark, path,
				    "expected a power of two from %s to %s, got %s", low, high,
				    quoted);
	} else if (value < key->min || value > key->max) {
		return fail(ctx, mark, path, "expected a %s from %s to %s, got %s",
			    is_size ? "size" : "duration", low, high, quoted);
	}
	set_uint(field, key->width, value);
	return 0;
}

/* Parses one scalar's text into its field. The defaults go through here too, so a default that
 * its own key would refuse cannot exist. */
static int set_scalar(struct load_ctx *ctx, const struct config_key *key, const char *path,
		      const char *text, yaml_mark_t mark, void *base)
{
	void *field = (char *)base + key->offset;
	enum unwind_mode unwind;
	enum log_level level;
	uint64_t number;
	bool flag;

	switch (key->type) {
	case KEY_SIZE:
	case KEY_DURATION:
		return set_quantity(ctx, key, path, text, mark, field);
	case KEY_UINT:
		if (parse_decimal(text, &number) || number < key->min || number > key->max)
			return fail_expected_text(ctx, key, path, mark, text);
		set_uint(field, key->width, number);
		return 0;
	case KEY_BOOL:
		if (parse_bool(text, &flag))
			return fail_expected_text(ctx, key, path, mark, text);
		*(bool *)field = flag;
		return 0;
	case KEY_PERCENT:
		if (parse_percent(text, (double *)field))
			return fail_expected_text(ctx, key, path, mark, text);
		return 0;
	case KEY_STRING:
		return set_string(field, text);
	case KEY_GLOB:
		if (!text[0])
			return fail_expected_text(ctx, key, path, mark, text);
		return set_string(field, text);
	case KEY_ABS_PATH:
		if (text[0] != '/' && !(text[0] == '\0' && (key->flags & KEY_MAY_BE_EMPTY)))
			return fail_expected_text(ctx, key, path, mark, text);
		return set_string(field, text);
	case KEY_NODE_NAME:
		if (text[0] && !dns_subdomain_valid(text, strlen(text)))
			return fail_expected_text(ctx, key, path, mark, text);
		return set_string(field, text);
	case KEY_POD_LABEL:
		if (!pod_label_selector_valid(text))
			return fail_expected_text(ctx, key, path, mark, text);
		return set_string(field, text);
	case KEY_LABEL_NAME: {
		char quoted[QUOTE_MAX + 8], why[512] = "";

		if (text[0] && label_name_refused(text, quote(text, quoted, sizeof(quoted)), why,
						  sizeof(why)))
			return fail(ctx, mark, path, "%s", why);
		return set_string(field, text);
	}
	case KEY_SERVICE:
		if (!text[0] || strlen(text) > SERVICE_NAME_MAX)
			return fail_expected_text(ctx, key, path, mark, text);
		return set_string(field, text);
	case KEY_UNWIND:
		if (unwind_mode_parse(text, &unwind))
			return fail_expected_text(ctx, key, path, mark, text);
		*(enum unwind_mode *)field = unwind;
		return 0;
	case KEY_LOG_LEVEL:
		if (log_parse_level(text, &level))
			return fail_expected_text(ctx, key, path, mark, text);
		*(enum log_level *)field = level;
		return 0;
	case KEY_SINK_TYPE:
		for (size_t i = 0; i < ARRAY_SIZE(sink_type_names); i++) {
			if (strcmp(text, sink_type_names[i]) == 0) {
				*(enum sink_type *)field = (enum sink_type)i;
				return 0;
			}
		}
		return fail_expected_text(ctx, key, path, mark, text);
	case KEY_SINK_NAME:
		if (!sink_name_valid(text))
			return fail_expected_text(ctx, key, path, mark, text);
		return set_string(field, text);
	case KEY_URL: {
		const char *problem = url_problem(text);
		char quoted[QUOTE_MAX + 8];

		/* The URL is not quoted back: it may be the one place a user put a secret. */
		if (problem && strncmp(problem, "credentials", 11) == 0)
			return fail(ctx, mark, path, "%s", problem);
		if (problem)
			return fail(ctx, mark, path, "expected an http:// or https:// URL like %s, "
				    "got %s: %s", key->example, quote(text, quoted, sizeof(quoted)),
				    problem);
		return set_string(field, text);
	}
	case KEY_LISTEN: {
		const char *problem = listen_problem(text);
		char quoted[QUOTE_MAX + 8], expected[128];

		if (problem)
			return fail(ctx, mark, path, "expected %s, got %s: %s",
				    expected_phrase(key, expected, sizeof(expected)),
				    quote(text, quoted, sizeof(quoted)), problem);
		return set_string(field, text);
	}
	case KEY_ENV_NAME:
		if (!env_name_valid(text))
			return fail_expected_text(ctx, key, path, mark, text);
		return set_string(field, text);
	case KEY_TEXT:
		if (!text_valid(text))
			return fail_expected_text(ctx, key, path, mark, text);
		return set_string(field, text);
	case KEY_SECRET:
	case KEY_RULES:
	case KEY_LABELS:
	case KEY_SINKS:
	case KEY_HEADERS:
	case KEY_LABEL_NAMES:
		break;
	}
	return fail(ctx, mark, path, "internal error: key type %d is not a scalar", key->type);
}

/* The text of a scalar node that must hold a value: lists, mappings and nulls are refused. */
static int scalar_text(struct load_ctx *ctx, const struct config_key *key, const char *path,
		       const yaml_node_t *node, const char **text)
{
	char found[QUOTE_MAX + 8], expected[128];

	if (node->type != YAML_SCALAR_NODE)
		return fail_expected(ctx, key, path, node->start_mark,
				     describe_node(node, found, sizeof(found)));
	if (is_null(node))
		return fail(ctx, node->start_mark, path, "expected a value (%s), got %s",
			    expected_phrase(key, expected, sizeof(expected)),
			    describe_node(node, found, sizeof(found)));
	/* A double-quoted "\0" would silently cut the value short in every C string use. */
	if (strlen((const char *)node->data.scalar.value) != node->data.scalar.length)
		return fail(ctx, node->start_mark, path, "expected %s, got text with a NUL byte",
			    expected_phrase(key, expected, sizeof(expected)));
	*text = (const char *)node->data.scalar.value;
	return 0;
}

static void free_headers(struct config_header *headers, size_t n);
static void free_labels(struct config_label *labels, size_t n);

static void free_sinks(struct sink_config *sinks, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct sink_config *s = &sinks[i];

		free(s->name);
		free(s->path);
		free(s->url);
		free(s->spool_dir);
		free(s->username);
		free(s->password_file);
		free(s->password_env);
		free(s->token_file);
		free(s->token_env);
		free(s->tenant);
		free_headers(s->headers, s->n_headers);
		free(s->ca_file);
		free(s->cert_file);
		free(s->key_file);
		free(s->server_name);
	}
	free(sinks);
}

/* Sets every key of a table that has a default; list defaults are built separately. */
static int apply_defaults(struct load_ctx *ctx, const struct key_table *table, void *base)
{
	yaml_mark_t no_mark = { 0 };
	int ret;

	for (size_t i = 0; i < table->n_keys; i++) {
		const struct config_key *key = &table->keys[i];

		if (!key->default_text)
			continue;
		ret = set_scalar(ctx, key, key->name, key->default_text, no_mark, base);
		if (ret)
			return ret;
	}
	return 0;
}

/* Without a `sinks:` list the agent writes to one directory sink with the sink defaults. */
static int make_default_sinks(struct load_ctx *ctx, struct agent_config *config)
{
	free_sinks(config->sinks, config->n_sinks);
	config->sinks = calloc(1, sizeof(*config->sinks));
	config->n_sinks = config->sinks ? 1 : 0;
	if (!config->sinks)
		return -ENOMEM;
	config->sinks[0].type = SINK_TYPE_DIRECTORY;
	if (set_string(&config->sinks[0].name, sink_type_names[SINK_TYPE_DIRECTORY]))
		return -ENOMEM;
	return apply_defaults(ctx, &sink_table, &config->sinks[0]);
}

/* The name under a table prefix that key stands for ("rate" for "sampling.rate" under
 * "sampling"), with its length up to the next dot; NULL when the key is elsewhere. */
static const char *component_under(const struct config_key *key, const char *prefix, size_t *len)
{
	size_t prefix_len = strlen(prefix);
	const char *rest = key->name;

	if (prefix_len) {
		if (strncmp(rest, prefix, prefix_len) != 0 || rest[prefix_len] != '.')
			return NULL;
		rest += prefix_len + 1;
	}
	*len = strcspn(rest, ".");
	return rest;
}

/* "interval, hostname, labels, pid_label": the names a mapping at prefix may hold. */
static void known_keys(const struct key_table *table, const char *prefix, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < table->n_keys; i++) {
		const struct config_key *key = &table->keys[i];
		const char *name, *earlier;
		size_t name_len, earlier_len;
		bool listed = false;

		if (key->flags & (table->forbidden_flags | KEY_HIDDEN))
			continue;
		name = component_under(key, prefix, &name_len);
		if (!name)
			continue;
		for (size_t j = 0; j < i && !listed; j++) {
			earlier = component_under(&table->keys[j], prefix, &earlier_len);
			listed = earlier && earlier_len == name_len &&
				 memcmp(earlier, name, name_len) == 0;
		}
		if (listed)
			continue;
		if (used + 1 >= len)
			break;
		used += snprintf(buf + used, len - used, "%s%.*s", used ? ", " : "", (int)name_len,
				 name);
	}
}

/* True when some key lives below full_name, which makes it a section ("sampling"). */
static bool is_section(const struct key_table *table, const char *full_name)
{
	size_t len = strlen(full_name);

	for (size_t i = 0; i < table->n_keys; i++) {
		if (strncmp(table->keys[i].name, full_name, len) == 0 &&
		    table->keys[i].name[len] == '.')
			return true;
	}
	return false;
}

/* A mapping's key as text. Keys that are lists or mappings name nothing here, and a key given
 * twice is invalid YAML that libyaml nevertheless loads, so the second value would be taken
 * or ignored depending on the reader; both are refused. */
static int pair_key(struct load_ctx *ctx, const yaml_node_t *mapping, const yaml_node_pair_t *pair,
		    const char *path, const char **name)
{
	yaml_node_t *key = node_at(ctx, pair->key);
	char found[QUOTE_MAX + 8], full[PATH_MAX_LEN];

	if (!key || key->type != YAML_SCALAR_NODE)
		return fail(ctx, key ? key->start_mark : mapping->start_mark, path,
			    "expected a key name, got %s",
			    describe_node(key, found, sizeof(found)));
	for (const yaml_node_pair_t *earlier = mapping->data.mapping.pairs.start; earlier < pair;
	     earlier++) {
		yaml_node_t *other = node_at(ctx, earlier->key);

		if (other && other->type == YAML_SCALAR_NODE &&
		    other->data.scalar.length == key->data.scalar.length &&
		    memcmp(other->data.scalar.value, key->data.scalar.value,
			   key->data.scalar.length) == 0) {
			join_path(full, sizeof(full), path, (const char *)key->data.scalar.value);
			return fail(ctx, key->start_mark, full,
				    "duplicate key (first given at line %zu)",
				    other->start_mark.line + 1);
		}
	}
	*name = (const char *)key->data.scalar.value;
	return 0;
}

static int parse_value(struct load_ctx *ctx, const struct config_key *key, const char *path,
		       const yaml_node_t *node, void *base);

/* Walks one mapping against a table. table_prefix is where the mapping sits in the table's
 * names ("sampling"), path where it sits in the file as messages show it ("sinks[1]"). Keys
 * seen are set in *seen by table index. */
static int walk_mapping(struct load_ctx *ctx, const yaml_node_t *mapping,
			const struct key_table *table, const char *table_prefix, const char *path,
			void *base, uint64_t *seen)
{
	char full_name[PATH_MAX_LEN], full_path[PATH_MAX_LEN], known[512];

	for (const yaml_node_pair_t *pair = mapping->data.mapping.pairs.start;
	     pair < mapping->data.mapping.pairs.top; pair++) {
		yaml_node_t *key_node = node_at(ctx, pair->key), *value = node_at(ctx, pair->value);
		const struct config_key *key = NULL;
		const char *name;
		int ret;

		ret = pair_key(ctx, mapping, pair, path, &name);
		if (ret)
			return ret;
		join_path(full_name, sizeof(full_name), table_prefix, name);
		join_path(full_path, sizeof(full_path), path, name);
		for (size_t i = 0; i < table->n_keys && !key; i++) {
			if (strcmp(table->keys[i].name, full_name) == 0) {
				key = &table->keys[i];
				if (seen)
					*seen |= 1ull << i;
			}
		}
		if (key && (key->flags & table->forbidden_flags) && key->excluded_lacks)
			return fail(ctx, key_node->start_mark, full_path,
				    "%s (excluded processes are never profiled, so they have %s)",
				    table->forbidden_why, key->excluded_lacks);
		if (key && (key->flags & table->forbidden_flags))
			return fail(ctx, key_node->start_mark, full_path, "%s",
				    table->forbidden_why);
		if (key) {
			ret = parse_value(ctx, key, full_path, value, base);
		} else if (is_section(table, full_name)) {
			/* A section whose keys are all commented out is empty, not an error. */
			if (is_null(value))
				continue;
			if (value->type != YAML_MAPPING_NODE) {
				char found[QUOTE_MAX + 8];

				known_keys(table, full_name, known, sizeof(known));
				return fail(ctx, value->start_mark, full_path,
					    "expected a mapping (with keys %s), got %s", known,
					    describe_node(value, found, sizeof(found)));
			}
			ret = walk_mapping(ctx, value, table, full_name, full_path, base, seen);
		} else {
			known_keys(table, table_prefix, known, sizeof(known));
			if (table_prefix[0])
				return fail(ctx, key_node->start_mark, full_path,
					    "unknown key (known keys under %s: %s)", table_prefix,
					    known);
			return fail(ctx, key_node->start_mark, full_path,
				    "unknown key (known keys %s: %s)", table->where, known);
		}
		if (ret)
			return ret;
	}
	return 0;
}

/* The item at index of a list, refused unless it is a mapping. */
static int list_item(struct load_ctx *ctx, const yaml_node_t *list, size_t index, const char *what,
		     const char *path, char *item_path, size_t item_path_len,
		     const yaml_node_t **item)
{
	char found[QUOTE_MAX + 8];

	snprintf(item_path, item_path_len, "%s[%zu]", path, index);
	*item = node_at(ctx, list->data.sequence.items.start[index]);
	if (!*item || (*item)->type != YAML_MAPPING_NODE)
		return fail(ctx, *item ? (*item)->start_mark : list->start_mark, item_path,
			    "expected %s, got %s", what,
			    describe_node(*item, found, sizeof(found)));
	return 0;
}

static int parse_rules(struct load_ctx *ctx, const struct config_key *key, const char *path,
		       const yaml_node_t *node, void *base)
{
	struct target_rule **rules = (struct target_rule **)((char *)base + key->offset);
	size_t *count = (size_t *)((char *)base + key->count_offset);
	bool exclude = key->flags & KEY_EXCLUDE_RULES;
	const struct key_table *table = exclude ? &exclude_rule_table : &include_rule_table;
	char item_path[PATH_MAX_LEN], found[QUOTE_MAX + 8];
	size_t n;

	target_rules__free_list(*rules, *count);
	*rules = NULL;
	*count = 0;
	if (is_null(node))
		return 0;
	if (node->type != YAML_SEQUENCE_NODE)
		return fail_expected(ctx, key, path, node->start_mark,
				     describe_node(node, found, sizeof(found)));
	n = node->data.sequence.items.top - node->data.sequence.items.start;
	if (n > CONFIG_MAX_RULES)
		return fail(ctx, node->start_mark, path, "expected at most %d rules, got %zu",
			    CONFIG_MAX_RULES, n);
	if (!n)
		return 0;
	/* Counted up front and zeroed, so config_free() can free a list cut short by an error. */
	*rules = calloc(n, sizeof(**rules));
	if (!*rules)
		return -ENOMEM;
	*count = n;
	for (size_t i = 0; i < n; i++) {
		struct target_rule *rule = &(*rules)[i];
		const yaml_node_t *item;
		int ret;

		ret = list_item(ctx, node, i,
				exclude ? "a rule (a mapping like process_name: bash)"
					: "a rule (a mapping like process_name: nginx)",
				path, item_path, sizeof(item_path), &item);
		if (!ret)
			ret = walk_mapping(ctx, item, table, "", item_path, rule, NULL);
		if (ret)
			return ret;
		/* A rule of only a service name would match every process: surely a mistake. */
		if (!rule->executable && !rule->process_name && !rule->cgroup &&
		    !rule->systemd_unit && !rule->namespace_name && !rule->pod_label &&
		    !rule->container)
			return fail(
			    ctx, item->start_mark, item_path,
			    "a rule needs at least one of executable, process_name, cgroup, "
			    "systemd_unit, namespace, pod_label, container");
	}
	return 0;
}

static bool label_name_valid(const char *name)
{
	if (!isalpha((unsigned char)name[0]) && name[0] != '_')
		return false;
	for (const char *p = name; *p; p++) {
		if (!isalnum((unsigned char)*p) && *p != '_')
			return false;
	}
	return true;
}

/* Static labels: names follow the Prometheus/pprof label rules, "__" names are reserved by
 * Prometheus, and the agent's own labels cannot be overridden. */
static bool label_name_refused(const char *name, const char *quoted, char *why, size_t len)
{
	if (!label_name_valid(name))
		snprintf(why, len, "expected a label name matching [a-zA-Z_][a-zA-Z0-9_]*, got %s",
			 quoted);
	else if (strncmp(name, "__", 2) == 0)
		snprintf(why, len, "expected a label name not starting with __ (reserved), got %s",
			 quoted);
	else
		for (size_t r = 0; r < ARRAY_SIZE(reserved_label_names); r++)
			if (strcmp(name, reserved_label_names[r]) == 0)
				snprintf(why, len, "expected a label name other than service_name, "
					 "hostname and pid (the agent sets those), got %s", quoted);
	return why[0] != '\0';
}

static bool label_value_valid(const char *value)
{
	return value[0] != '\0';
}

/* HTTP header names are tokens (RFC 9110); these ones the sink sets itself, or they carry
 * secrets, which belong in token_file and the like. */
static const char *const reserved_headers[] = {
	"authorization", "proxy-authorization", "cookie", "host", "content-type",
	"content-length", "content-encoding", "transfer-encoding", "connection", "te", "expect",
	"upgrade", "keep-alive", "connect-protocol-version", "x-scope-orgid",
};

static bool header_name_valid(const char *name)
{
	if (!name[0] || strlen(name) > 128)
		return false;
	for (const char *p = name; *p; p++) {
		if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p))
			return false;
	}
	return true;
}

static bool header_name_refused(const char *name, const char *quoted, char *why, size_t len)
{
	if (!header_name_valid(name)) {
		snprintf(why, len, "expected a header name (letters, digits and !#$%%&'*+-.^_`|~), "
			 "got %s", quoted);
	} else if (strncasecmp(name, "grpc-", 5) == 0) {
		snprintf(why, len, "expected a header name not starting with grpc- (reserved by "
			 "gRPC), got %s", quoted);
	} else {
		for (size_t r = 0; r < ARRAY_SIZE(reserved_headers) && !why[0]; r++) {
			if (strcasecmp(name, reserved_headers[r]) != 0)
				continue;
			if (r < 3)
				snprintf(why, len, "%s: credentials are not accepted in the "
					 "configuration file (use token_file or token_env, or "
					 "username with password_file or password_env)", quoted);
			else if (strcasecmp(name, "x-scope-orgid") == 0)
				snprintf(why, len, "%s: set the tenant key instead", quoted);
			else
				snprintf(why, len, "expected a header the sink does not set itself, "
					 "got %s", quoted);
		}
	}
	return why[0] != '\0';
}

/* A mapping of names to text values (static labels, HTTP headers), stored as an array of
 * structs that hold two strings: what differs between the kinds is only this. */
struct string_map_kind {
	size_t item_size, name_offset, value_offset;
	size_t max;
	const char *items;	/* "labels", in "expected at most 16 labels" */
	/* Writes why name (quoted: its quoted form) is refused into why; false when fine. */
	bool (*name_refused)(const char *name, const char *quoted, char *why, size_t len);
	bool (*value_valid)(const char *value);
	const char *value_expected; /* "a label value (a non-empty string)" */
};

static const struct string_map_kind label_map = {
	.item_size = sizeof(struct config_label),
	.name_offset = offsetof(struct config_label, key),
	.value_offset = offsetof(struct config_label, value),
	.max = CONFIG_MAX_STATIC_LABELS,
	.items = "labels",
	.name_refused = label_name_refused,
	.value_valid = label_value_valid,
	.value_expected = "a label value (a non-empty string)",
};

static const struct string_map_kind header_map = {
	.item_size = sizeof(struct config_header),
	.name_offset = offsetof(struct config_header, name),
	.value_offset = offsetof(struct config_header, value),
	.max = CONFIG_MAX_HEADERS,
	.items = "headers",
	.name_refused = header_name_refused,
	.value_valid = text_valid,
	.value_expected = "a header value (one line of text)",
};

static char **map_string(void *items, const struct string_map_kind *kind, size_t i, size_t offset)
{
	return (char **)((char *)items + i * kind->item_size + offset);
}

/* Frees every name and value and the array. Accepts NULL. */
static void free_string_map(void *items, size_t n, const struct string_map_kind *kind)
{
	for (size_t i = 0; items && i < n; i++) {
		free(*map_string(items, kind, i, kind->name_offset));
		free(*map_string(items, kind, i, kind->value_offset));
	}
	free(items);
}

static void free_labels(struct config_label *labels, size_t n)
{
	free_string_map(labels, n, &label_map);
}

static void free_headers(struct config_header *headers, size_t n)
{
	free_string_map(headers, n, &header_map);
}

/* KEY_LABELS and KEY_HEADERS: one parser for every mapping of names to text. */
static int parse_string_map(struct load_ctx *ctx, const struct config_key *key, const char *path,
			    const yaml_node_t *node, void *base, const struct string_map_kind *kind)
{
	void **items = (void **)((char *)base + key->offset);
	size_t *count = (size_t *)((char *)base + key->count_offset);
	char found[QUOTE_MAX + 8], value_path[PATH_MAX_LEN], why[512];
	size_t n;

	free_string_map(*items, *count, kind);
	*items = NULL;
	*count = 0;
	if (is_null(node))
		return 0;
	if (node->type != YAML_MAPPING_NODE)
		return fail_expected(ctx, key, path, node->start_mark,
				     describe_node(node, found, sizeof(found)));
	n = node->data.mapping.pairs.top - node->data.mapping.pairs.start;
	if (n > kind->max)
		return fail(ctx, node->start_mark, path, "expected at most %zu %s, got %zu",
			    kind->max, kind->items, n);
	if (!n)
		return 0;
	/* Counted up front and zeroed, so config_free() can free a map cut short by an error. */
	*items = calloc(n, kind->item_size);
	if (!*items)
		return -ENOMEM;
	*count = n;
	for (size_t i = 0; i < n; i++) {
		const yaml_node_pair_t *pair = &node->data.mapping.pairs.start[i];
		yaml_node_t *name_node = node_at(ctx, pair->key), *value = node_at(ctx, pair->value);
		char **name_field = map_string(*items, kind, i, kind->name_offset);
		char **value_field = map_string(*items, kind, i, kind->value_offset);
		const char *name;
		int ret;

		ret = pair_key(ctx, node, pair, path, &name);
		if (ret)
			return ret;
		why[0] = '\0';
		if (kind->name_refused(name, quote(name, found, sizeof(found)), why, sizeof(why)))
			return fail(ctx, name_node->start_mark, path, "%s", why);
		join_path(value_path, sizeof(value_path), path, name);
		if (!value || value->type != YAML_SCALAR_NODE || is_null(value) ||
		    strlen((const char *)value->data.scalar.value) != value->data.scalar.length ||
		    !kind->value_valid((const char *)value->data.scalar.value))
			return fail(ctx, value ? value->start_mark : name_node->start_mark,
				    value_path, "expected %s, got %s", kind->value_expected,
				    describe_node(value, found, sizeof(found)));
		*name_field = strdup(name);
		*value_field = strdup((const char *)value->data.scalar.value);
		if (!*name_field || !*value_field)
			return -ENOMEM;
	}
	return 0;
}

/* The node of key name in a mapping, for the position of a message; NULL when absent. */
static const yaml_node_t *find_key(struct load_ctx *ctx, const yaml_node_t *mapping,
				   const char *name, const yaml_node_t **value)
{
	for (const yaml_node_pair_t *pair = mapping->data.mapping.pairs.start;
	     pair < mapping->data.mapping.pairs.top; pair++) {
		yaml_node_t *key = node_at(ctx, pair->key);

		if (key && key->type == YAML_SCALAR_NODE &&
		    strcmp((const char *)key->data.scalar.value, name) == 0) {
			if (value)
				*value = node_at(ctx, pair->value);
			return key;
		}
	}
	return NULL;
}

/* Fails at key name of item (or at the item when absent) with "PATH.name: message". */
__attribute__((format(printf, 5, 6))) static int fail_at_key(struct load_ctx *ctx,
							   const yaml_node_t *item,
							   const char *item_path, const char *name,
							   const char *fmt, ...)
{
	const yaml_node_t *key = find_key(ctx, item, name, NULL);
	char key_path[PATH_MAX_LEN], message[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	join_path(key_path, sizeof(key_path), item_path, name);
	return fail(ctx, key ? key->start_mark : item->start_mark, key_path, "%s", message);
}

static bool is_set(const char *s)
{
	return s && s[0];
}

/* Rules between a push sink's keys that no single key can check. */
static int check_push_sink(struct load_ctx *ctx, const yaml_node_t *item, const char *item_path,
			   const struct sink_config *sink)
{
	bool https = strncmp(sink->url, "https://", 8) == 0;
	static const char *const tls_keys[] = { "ca_file", "cert_file", "key_file",
						"server_name" };
	const char *const tls_values[] = { sink->ca_file, sink->cert_file, sink->key_file,
					   sink->server_name };

	if (is_set(sink->password_file) && is_set(sink->password_env))
		return fail_at_key(ctx, item, item_path, "password_env",
				   "give password_file or password_env, not both");
	if (is_set(sink->token_file) && is_set(sink->token_env))
		return fail_at_key(ctx, item, item_path, "token_env",
				   "give token_file or token_env, not both");
	if (is_set(sink->username) && strchr(sink->username, ':'))
		return fail_at_key(ctx, item, item_path, "username",
				   "expected a user name without ':' (basic authentication "
				   "cannot carry one)");
	if (is_set(sink->username) && !is_set(sink->password_file) && !is_set(sink->password_env))
		return fail_at_key(ctx, item, item_path, "username",
				   "basic authentication needs password_file or password_env too");
	if (!is_set(sink->username) && (is_set(sink->password_file) || is_set(sink->password_env)))
		return fail_at_key(ctx, item, item_path,
				   is_set(sink->password_file) ? "password_file" : "password_env",
				   "a password needs a username");
	if (is_set(sink->username) && (is_set(sink->token_file) || is_set(sink->token_env)))
		return fail_at_key(ctx, item, item_path,
				   is_set(sink->token_file) ? "token_file" : "token_env",
				   "choose basic authentication (username) or a bearer token, "
				   "not both");
	if (is_set(sink->cert_file) != is_set(sink->key_file))
		return fail_at_key(ctx, item, item_path,
				   is_set(sink->cert_file) ? "cert_file" : "key_file",
				   "a client certificate needs both cert_file and key_file");
	for (size_t i = 0; i < ARRAY_SIZE(tls_keys) && !https; i++) {
		if (is_set(tls_values[i]))
			return fail_at_key(ctx, item, item_path, tls_keys[i],
					   "only applies to an https:// url");
	}
	if (!https && sink->insecure_skip_verify)
		return fail_at_key(ctx, item, item_path, "insecure_skip_verify",
				   "only applies to an https:// url");
	return 0;
}

/* The directory a path names once symlinks, ".", ".." and repeated or trailing slashes are
 * resolved, for telling whether two sinks' directories are one: each existing prefix through
 * realpath(3), the rest (not created yet) by its spelling, as the sink's mkdir -p will make
 * it. Every prefix resolved is free of symlinks, so ".." after it is its parent. */
static void canonical_dir(const char *path, char *out, size_t len)
{
	char resolved[PATH_MAX] = "/", next[PATH_MAX], real[PATH_MAX];
	const char *p = path;

	while (*p) {
		size_t n;

		while (*p == '/')
			p++;
		n = strcspn(p, "/");
		if (!n)
			break;
		if (n == 2 && p[0] == '.' && p[1] == '.') {
			char *slash = strrchr(resolved, '/');

			slash[slash == resolved ? 1 : 0] = '\0';
		} else if (!(n == 1 && p[0] == '.')) {
			snprintf(next, sizeof(next), "%s%s%.*s", resolved,
				 strcmp(resolved, "/") == 0 ? "" : "/", (int)n, p);
			snprintf(resolved, sizeof(resolved), "%s",
				 realpath(next, real) ? real : next);
		}
		p += n;
	}
	snprintf(out, len, "%s", resolved);
}

/* The directory a sink owns: its profiles' or its spool's; NULL when none. */
static const char *own_dir(const struct sink_config *sink, const char **key)
{
	*key = sink->type == SINK_TYPE_DIRECTORY ? "path" : "spool_dir";
	return sink->type == SINK_TYPE_DIRECTORY ? sink->path : sink->spool_dir;
}

/* Two sinks in one directory trip over each other: a second spool waits forever for the
 * first one's lock, retention counts the other sink's files. Spellings differ easily
 * (/x/spool and /x/spool/, a "..", a symlink), so the directories are compared resolved. */
static int check_own_dirs(struct load_ctx *ctx, const yaml_node_t *item, const char *item_path,
			  const struct sink_config *sinks, size_t i)
{
	char mine[PATH_MAX], theirs[PATH_MAX], how[PATH_MAX + 64];
	const char *key, *other_key, *dir = own_dir(&sinks[i], &key), *other_dir;

	if (!is_set(dir))
		return 0;
	canonical_dir(dir, mine, sizeof(mine));
	for (size_t j = 0; j < i; j++) {
		other_dir = own_dir(&sinks[j], &other_key);
		if (!is_set(other_dir))
			continue;
		canonical_dir(other_dir, theirs, sizeof(theirs));
		if (strcmp(mine, theirs) != 0)
			continue;
		how[0] = '\0';
		if (strcmp(dir, other_dir) != 0)
			snprintf(how, sizeof(how), ", the same directory as %s (both are %s)", dir,
				 mine);
		return fail_at_key(ctx, item, item_path, key,
				   "sinks[%zu] (\"%s\") already %s %s%s: each sink needs a "
				   "directory of its own",
				   j, sinks[j].name,
				   sinks[j].type == SINK_TYPE_DIRECTORY ? "writes its profiles to"
									: "spools to",
				   other_dir, how);
	}
	return 0;
}

/* The sink's type, read before its other keys so they are checked against that type. */
static int sink_type_of(struct load_ctx *ctx, const yaml_node_t *item, const char *item_path,
			struct sink_config *sink)
{
	const yaml_node_t *value = NULL, *key = find_key(ctx, item, "type", &value);
	char key_path[PATH_MAX_LEN], expected[128];
	const char *text;
	int ret;

	join_path(key_path, sizeof(key_path), item_path, "type");
	if (!key)
		return fail(ctx, item->start_mark, key_path,
			    "expected %s, got nothing (the key is required)",
			    expected_phrase(&sink_keys[0], expected, sizeof(expected)));
	ret = scalar_text(ctx, &sink_keys[0], key_path, value, &text);
	if (ret)
		return ret;
	return set_scalar(ctx, &sink_keys[0], key_path, text, value->start_mark, sink);
}

static int parse_sinks(struct load_ctx *ctx, const struct config_key *key, const char *path,
		       const yaml_node_t *node, void *base)
{
	struct agent_config *config = base;
	char item_path[PATH_MAX_LEN], found[QUOTE_MAX + 8];
	size_t n;

	/* An absent or null `sinks:` keeps the default sink; an explicit [] would write nothing. */
	if (is_null(node))
		return make_default_sinks(ctx, config);
	if (node->type != YAML_SEQUENCE_NODE)
		return fail_expected(ctx, key, path, node->start_mark,
				     describe_node(node, found, sizeof(found)));
	n = node->data.sequence.items.top - node->data.sequence.items.start;
	if (!n)
		return fail(ctx, node->start_mark, path,
			    "expected at least one sink, got an empty list");
	if (n > CONFIG_MAX_SINKS)
		return fail(ctx, node->start_mark, path, "expected at most %d sinks, got %zu",
			    CONFIG_MAX_SINKS, n);
	free_sinks(config->sinks, config->n_sinks);
	config->sinks = calloc(n, sizeof(*config->sinks));
	config->n_sinks = config->sinks ? n : 0;
	if (!config->sinks)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct sink_config *sink = &config->sinks[i];
		const struct key_table *table;
		const yaml_node_t *item;
		uint64_t seen = 0;
		int ret;

		ret = apply_defaults(ctx, &sink_table, sink);
		if (!ret)
			ret = list_item(ctx, node, i, "a sink (a mapping like type: directory)",
					path, item_path, sizeof(item_path), &item);
		if (!ret)
			ret = sink_type_of(ctx, item, item_path, sink);
		if (ret)
			return ret;
		table = &sink_tables[sink->type];
		ret = walk_mapping(ctx, item, table, "", item_path, sink, &seen);
		if (ret)
			return ret;
		for (size_t k = 0; k < ARRAY_SIZE(sink_keys) && sink->type == SINK_TYPE_PARCA; k++) {
			yaml_mark_t no_mark = { 0 };

			if (!sink_keys[k].parca_default_text || (seen & (1ull << k)))
				continue;
			ret = set_scalar(ctx, &sink_keys[k], sink_keys[k].name,
					 sink_keys[k].parca_default_text, no_mark, sink);
			if (ret)
				return ret;
		}
		for (size_t k = 0; k < ARRAY_SIZE(sink_keys); k++) {
			char key_path[PATH_MAX_LEN], expected[128];

			if (!(sink_keys[k].flags & KEY_REQUIRED) || (seen & (1ull << k)) ||
			    (sink_keys[k].flags & table->forbidden_flags))
				continue;
			join_path(key_path, sizeof(key_path), item_path, sink_keys[k].name);
			return fail(ctx, item->start_mark, key_path,
				    "expected %s, got nothing (the key is required)",
				    expected_phrase(&sink_keys[k], expected, sizeof(expected)));
		}
		if (sink->type != SINK_TYPE_DIRECTORY) {
			ret = check_push_sink(ctx, item, item_path, sink);
			if (ret)
				return ret;
		}
		if (!sink->name) {
			ret = set_string(&sink->name, sink_type_names[sink->type]);
			if (ret)
				return ret;
		}
		/* Names tell sinks apart in metrics and messages: two sinks given the same name
		 * are a mistake (unnamed sinks of one type share their metrics, as they always
		 * did). */
		for (size_t j = 0; j < i; j++) {
			const struct sink_config *other = &config->sinks[j];
			const yaml_node_t *other_item =
			    node_at(ctx, node->data.sequence.items.start[j]);

			if (strcmp(other->name, sink->name) == 0 &&
			    find_key(ctx, item, "name", NULL) &&
			    find_key(ctx, other_item, "name", NULL))
				return fail_at_key(ctx, item, item_path, "name",
						   "sinks[%zu] is already called \"%s\" (set a "
						   "different name: on one of them)", j, sink->name);
		}
		ret = check_own_dirs(ctx, item, item_path, config->sinks, i);
		if (ret)
			return ret;
	}
	return 0;
}

static void free_label_names(char **names, size_t n)
{
	for (size_t i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
}

/* KEY_LABEL_NAMES: a list of distinct label names, at most LABEL_LIMITS_MAX_KEYS. */
static int parse_label_names(struct load_ctx *ctx, const struct config_key *key,
			     const char *path, const yaml_node_t *node, void *base)
{
	char ***names = (char ***)((char *)base + key->offset);
	size_t *count = (size_t *)((char *)base + key->count_offset);
	char found[QUOTE_MAX + 8], item_path[PATH_MAX_LEN], why[512];
	size_t n;

	free_label_names(*names, *count);
	*names = NULL;
	*count = 0;
	if (is_null(node))
		return 0;
	if (node->type != YAML_SEQUENCE_NODE)
		return fail_expected(ctx, key, path, node->start_mark,
				     describe_node(node, found, sizeof(found)));
	n = node->data.sequence.items.top - node->data.sequence.items.start;
	if (n > LABEL_LIMITS_MAX_KEYS)
		return fail(ctx, node->start_mark, path, "expected at most %d label names, got %zu",
			    LABEL_LIMITS_MAX_KEYS, n);
	if (!n)
		return 0;
	/* Counted up front and zeroed, so config_free() can free a list cut short by an error. */
	*names = calloc(n, sizeof(**names));
	if (!*names)
		return -ENOMEM;
	*count = n;
	for (size_t i = 0; i < n; i++) {
		const yaml_node_t *item = node_at(ctx, node->data.sequence.items.start[i]);
		const char *name;

		if (snprintf(item_path, sizeof(item_path), "%s[%zu]", path, i) < 0)
			item_path[0] = '\0';
		if (!item || item->type != YAML_SCALAR_NODE || is_null(item) ||
		    strlen((const char *)item->data.scalar.value) != item->data.scalar.length)
			return fail(ctx, item ? item->start_mark : node->start_mark, item_path,
				    "expected a label name like endpoint, got %s",
				    describe_node(item, found, sizeof(found)));
		name = (const char *)item->data.scalar.value;
		why[0] = '\0';
		if (label_name_refused(name, quote(name, found, sizeof(found)), why, sizeof(why)))
			return fail(ctx, item->start_mark, item_path, "%s", why);
		for (size_t j = 0; j < i; j++) {
			if (strcmp((*names)[j], name) == 0)
				return fail(ctx, item->start_mark, item_path,
					    "expected each label name once, got %s twice",
					    quote(name, found, sizeof(found)));
		}
		(*names)[i] = strdup(name);
		if (!(*names)[i])
			return -ENOMEM;
	}
	return 0;
}

static int parse_value(struct load_ctx *ctx, const struct config_key *key, const char *path,
		       const yaml_node_t *node, void *base)
{
	const char *text = NULL;
	int ret;

	switch (key->type) {
	case KEY_RULES:
		return parse_rules(ctx, key, path, node, base);
	case KEY_LABELS:
		return parse_string_map(ctx, key, path, node, base, &label_map);
	case KEY_SINKS:
		return parse_sinks(ctx, key, path, node, base);
	case KEY_HEADERS:
		return parse_string_map(ctx, key, path, node, base, &header_map);
	case KEY_LABEL_NAMES:
		return parse_label_names(ctx, key, path, node, base);
	case KEY_SECRET:
		/* Nothing of the value is quoted back: it is a secret. */
		return fail(ctx, node->start_mark, path,
			    "secrets are not accepted in the configuration file (it is often "
			    "readable by everyone and copied around): put the %s in a file and "
			    "set %s_file, or name an environment variable holding it in %s_env",
			    key->example, key->example, key->example);
	default:
		break;
	}
	ret = scalar_text(ctx, key, path, node, &text);
	if (ret)
		return ret;
	return set_scalar(ctx, key, path, text, node->start_mark, base);
}

/* "" and absence both mean the machine's name, read at load so a reload picks up a rename. In
 * a pod that name is the pod's (gethostname answers the pod name), so with Kubernetes on it
 * is the node's name. */
static int fill_hostname(struct agent_config *config)
{
	char name[HOST_NAME_MAX + 1];

	if (config->hostname && config->hostname[0])
		return 0;
	if (config->kubernetes.enabled && config->kubernetes.node_name &&
	    config->kubernetes.node_name[0])
		return set_string(&config->hostname, config->kubernetes.node_name);
	if (gethostname(name, sizeof(name)) != 0 || !name[0])
		snprintf(name, sizeof(name), "localhost");
	name[sizeof(name) - 1] = '\0';
	return set_string(&config->hostname, name);
}

void config_free(struct agent_config *config)
{
	if (!config)
		return;
	free(config->source);
	target_rules__clear(&config->targets);
	free(config->hostname);
	free_labels(config->labels, config->n_labels);
	free_label_names(config->sample_labels.keys, config->sample_labels.n_keys);
	free(config->version_label);
	free_sinks(config->sinks, config->n_sinks);
	free(config->metrics_listen);
	free(config->sampling.debuginfod_urls);
	free(config->kubernetes.node_name);
	free(config->kubernetes.api_server);
	free(config->kubernetes.token_path);
	free(config->kubernetes.ca_path);
	free(config);
}

static int build_defaults(struct load_ctx *ctx, const char *source, struct agent_config **out)
{
	struct agent_config *config = calloc(1, sizeof(*config));
	int ret;

	*out = NULL;
	if (!config)
		return -ENOMEM;
	/* The hostname is filled in once the file is read: its default depends on the
	 * kubernetes section. */
	ret = apply_defaults(ctx, &agent_table, config);
	if (!ret)
		ret = make_default_sinks(ctx, config);
	if (!ret)
		ret = set_string(&config->source, source);
	if (ret) {
		config_free(config);
		return ret;
	}
	*out = config;
	return 0;
}

int config_set_flag(struct agent_config *config, const char *flag, const char *text, char *err,
		    size_t err_len)
{
	for (size_t i = 0; i < ARRAY_SIZE(agent_keys); i++) {
		const struct config_key *key = &agent_keys[i];
		char option[64];
		struct load_ctx ctx = {
			.name = "the command line",
			.err = err,
			.err_len = err_len,
			.flag_noun = key->noun,
			.flag_text = text,
		};
		yaml_mark_t no_mark = { 0 };

		if (!key->flag || strcmp(key->flag, flag) != 0)
			continue;
		if (!ctx.flag_noun) {
			snprintf(option, sizeof(option), "--%s", key->flag);
			ctx.flag_noun = option;
		}
		return set_scalar(&ctx, key, key->name, text, no_mark, config);
	}
	snprintf(err, err_len, "unknown option --%s", flag);
	return -ENOENT;
}

static const struct config_key *flag_key(const char *flag)
{
	for (size_t i = 0; i < ARRAY_SIZE(agent_keys); i++)
		if (agent_keys[i].flag && strcmp(agent_keys[i].flag, flag) == 0)
			return &agent_keys[i];
	return NULL;
}

const char *config_flag_default(const char *flag)
{
	const struct config_key *key = flag_key(flag);

	return key && key->default_text ? key->default_text : "";
}

void config_flag_range(const char *flag, char *low, char *high, size_t len)
{
	const struct config_key *key = flag_key(flag);

	low[0] = high[0] = '\0';
	if (key && key->type == KEY_SIZE) {
		format_size(key->min, low, len);
		format_size(key->max, high, len);
	} else if (key && key->type == KEY_DURATION) {
		format_duration(key->min, low, len);
		format_duration(key->max, high, len);
	}
}

const char *config_flag(size_t i, char *short_flag)
{
	for (size_t k = 0; k < ARRAY_SIZE(agent_keys); k++) {
		if (!agent_keys[k].flag)
			continue;
		if (i-- == 0) {
			if (short_flag)
				*short_flag = agent_keys[k].short_flag;
			return agent_keys[k].flag;
		}
	}
	return NULL;
}

int config_defaults(struct agent_config **out)
{
	char err[256];
	struct load_ctx ctx = { .name = "(defaults)", .err = err, .err_len = sizeof(err) };
	int ret = build_defaults(&ctx, "(defaults)", out);

	if (!ret)
		ret = fill_hostname(*out);
	if (ret) {
		config_free(*out);
		*out = NULL;
	}
	return ret;
}

/* ---- rules between sections, checked once the whole file is read ---- */

/* The value node of SECTION.NAME in the file, written nested or as a dotted key; NULL when
 * absent. *key_node, when asked for, is the key's node. */
static const yaml_node_t *find_setting(struct load_ctx *ctx, const yaml_node_t *root,
				       const char *section, const char *name,
				       const yaml_node_t **key_node)
{
	const yaml_node_t *section_node = NULL, *value = NULL, *key;
	char dotted[PATH_MAX_LEN];

	if (key_node)
		*key_node = NULL;
	if (find_key(ctx, root, section, &section_node) && section_node &&
	    section_node->type == YAML_MAPPING_NODE) {
		key = find_key(ctx, section_node, name, &value);
		if (key) {
			if (key_node)
				*key_node = key;
			return value;
		}
	}
	join_path(dotted, sizeof(dotted), section, name);
	key = find_key(ctx, root, dotted, &value);
	if (key_node)
		*key_node = key;
	return key ? value : NULL;
}

/* Where a message about SECTION.NAME points: its value, else the start of the file. */
static yaml_mark_t setting_mark(struct load_ctx *ctx, const yaml_node_t *root,
				const char *section, const char *name)
{
	const yaml_node_t *value = find_setting(ctx, root, section, name, NULL);

	return value ? value->start_mark : root->start_mark;
}

/* True for a listen address whose host is an address other machines can reach. Text that is
 * no address at all is not judged here: the metrics server refuses it with its own message
 * when it starts. */
static bool listen_is_remote(const char *listen)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *end;
	struct in6_addr v6;
	struct in_addr v4;
	size_t len;

	if (listen[0] == '[') {
		end = strchr(listen, ']');
		len = end ? (size_t)(end - listen - 1) : 0;
		if (!len || len >= sizeof(host))
			return false;
		memcpy(host, listen + 1, len);
		host[len] = '\0';
		if (inet_pton(AF_INET6, host, &v6) != 1)
			return false;
		/* ::ffff:127.x.y.z is the IPv4 loopback through an IPv6 socket. */
		return !IN6_IS_ADDR_LOOPBACK(&v6) &&
		       !(IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
	}
	end = strrchr(listen, ':');
	len = end ? (size_t)(end - listen) : 0;
	if (!len || len >= sizeof(host))
		return false;
	memcpy(host, listen, len);
	host[len] = '\0';
	if (strcmp(host, "localhost") == 0 || inet_pton(AF_INET, host, &v4) != 1)
		return false;
	return (ntohl(v4.s_addr) >> 24) != 127;
}

/* Rule keys that read a pod's metadata, which only the Kubernetes API gives. */
static const char *pod_matcher_of(const struct target_rule *rule)
{
	if (rule->namespace_name)
		return "namespace";
	if (rule->pod_label)
		return "pod_label";
	if (rule->container)
		return "container";
	return NULL;
}

static int check_pod_rules(struct load_ctx *ctx, const yaml_node_t *root, const char *list_name,
			   const struct target_rule *rules, size_t n)
{
	const yaml_node_t *list = find_setting(ctx, root, "targets", list_name, NULL);
	char item_path[PATH_MAX_LEN], path[PATH_MAX_LEN];

	for (size_t i = 0; i < n; i++) {
		const char *matcher = pod_matcher_of(&rules[i]);
		const yaml_node_t *item = NULL;

		if (!matcher)
			continue;
		snprintf(item_path, sizeof(item_path), "targets.%s[%zu]", list_name, i);
		if (list && list->type == YAML_SEQUENCE_NODE &&
		    i < (size_t)(list->data.sequence.items.top - list->data.sequence.items.start))
			item = node_at(ctx, list->data.sequence.items.start[i]);
		if (item && item->type == YAML_MAPPING_NODE)
			return fail_at_key(ctx, item, item_path, matcher,
					   "matches pod metadata from the Kubernetes API: set "
					   "kubernetes.enabled: true (docs/kubernetes.md)");
		join_path(path, sizeof(path), item_path, matcher);
		return fail(ctx, root->start_mark, path,
			    "matches pod metadata from the Kubernetes API: set kubernetes.enabled: "
			    "true (docs/kubernetes.md)");
	}
	return 0;
}

/* Labels the agent puts on the profiles of pods' processes. */
static const char *const pod_label_names[] = { "namespace", "pod", "container", "node" };

static int check_kubernetes(struct load_ctx *ctx, const yaml_node_t *root,
			    struct agent_config *config)
{
	struct kubernetes_config *k = &config->kubernetes;
	const char *from_env = getenv("NODE_NAME");
	const yaml_node_t *labels;
	char found[QUOTE_MAX + 8];
	int ret;

	/* "" and absence mean the node the DaemonSet names in NODE_NAME (spec.nodeName). */
	if ((!k->node_name || !k->node_name[0]) && from_env && from_env[0]) {
		ret = set_string(&k->node_name, from_env);
		if (ret)
			return ret;
		if (k->enabled && !dns_subdomain_valid(from_env, strlen(from_env)))
			return fail(ctx, setting_mark(ctx, root, "kubernetes", "enabled"),
				    "kubernetes.node_name",
				    "NODE_NAME in the agent's environment, %s, is not a Kubernetes "
				    "node name (lowercase letters, digits, '-' and '.'): set "
				    "kubernetes.node_name",
				    quote(from_env, found, sizeof(found)));
	}
	if (!k->enabled) {
		ret = check_pod_rules(ctx, root, "include", config->targets.include,
				      config->targets.n_include);
		if (!ret)
			ret = check_pod_rules(ctx, root, "exclude", config->targets.exclude,
					      config->targets.n_exclude);
		return ret;
	}
	if (!k->node_name || !k->node_name[0]) {
		const yaml_node_t *value = find_setting(ctx, root, "kubernetes", "node_name", NULL);

		return fail(ctx,
			    value ? value->start_mark
				  : setting_mark(ctx, root, "kubernetes", "enabled"),
			    "kubernetes.node_name",
			    "required with kubernetes.enabled: set it, or NODE_NAME in the agent's "
			    "environment (the DaemonSet sets it from spec.nodeName)");
	}
	/* A static label of one of these names would give a pod's profiles two values. */
	labels = find_setting(ctx, root, "profiles", "labels", NULL);
	for (size_t i = 0; i < config->n_labels; i++) {
		for (size_t j = 0; j < ARRAY_SIZE(pod_label_names); j++) {
			const yaml_node_t *key = NULL;

			if (strcmp(config->labels[i].key, pod_label_names[j]) != 0)
				continue;
			if (labels && labels->type == YAML_MAPPING_NODE)
				key = find_key(ctx, labels, pod_label_names[j], NULL);
			return fail(ctx, key ? key->start_mark : root->start_mark,
				    "profiles.labels",
				    "expected a label name other than namespace, pod, container and "
				    "node with kubernetes.enabled (the agent sets those on the "
				    "profiles of pods), got %s",
				    quote(pod_label_names[j], found, sizeof(found)));
		}
	}
	return 0;
}

static int check_relations(struct load_ctx *ctx, const yaml_node_t *root,
			   struct agent_config *config)
{
	char quoted[QUOTE_MAX + 8];
	int ret;

	ret = check_kubernetes(ctx, root, config);
	if (ret)
		return ret;
	/* The metrics hold no secrets, but exposing them beyond the machine is a decision. */
	if (config->metrics_listen && !config->metrics_allow_remote &&
	    listen_is_remote(config->metrics_listen))
		return fail(ctx, setting_mark(ctx, root, "metrics", "listen"), "metrics.listen",
			    "%s is not a loopback address, so other machines could read the "
			    "metrics: listen on 127.0.0.1:PORT or [::1]:PORT, or set "
			    "metrics.allow_remote: true",
			    quote(config->metrics_listen, quoted, sizeof(quoted)));
	return 0;
}

/* libyaml's reader errors carry a byte offset, not a line and column. */
static yaml_mark_t mark_at_offset(const char *text, size_t len, size_t offset)
{
	yaml_mark_t mark = { .index = offset };

	for (size_t i = 0; i < offset && i < len; i++) {
		if (text[i] == '\n') {
			mark.line++;
			mark.column = 0;
		} else {
			mark.column++;
		}
	}
	return mark;
}

static int syntax_error(struct load_ctx *ctx, const yaml_parser_t *parser, const char *yaml,
			size_t len)
{
	const char *problem = parser->problem ? parser->problem : "unknown problem";
	yaml_mark_t mark = parser->problem_mark;
	char detail[32] = "";

	if (parser->error == YAML_MEMORY_ERROR)
		return -ENOMEM;
	if (parser->error == YAML_READER_ERROR) {
		mark = mark_at_offset(yaml, len, parser->problem_offset);
		if (parser->problem_value != -1)
			snprintf(detail, sizeof(detail), " (byte 0x%02x)",
				 (unsigned)parser->problem_value & 0xff);
	}
	if (parser->context)
		return fail(ctx, mark, NULL, "YAML syntax error: %s%s (%s at %zu:%zu)", problem,
			    detail, parser->context, parser->context_mark.line + 1,
			    parser->context_mark.column + 1);
	return fail(ctx, mark, NULL, "YAML syntax error: %s%s", problem, detail);
}

/* An explicit tag as the user wrote it: "!!python/object" for tag:yaml.org,2002:python/object. */
static const char *tag_as_written(const char *tag, char *buf, size_t len)
{
	static const char yaml_prefix[] = "tag:yaml.org,2002:";
	char shown[QUOTE_MAX + 8];

	if (strncmp(tag, yaml_prefix, sizeof(yaml_prefix) - 1) == 0) {
		snprintf(buf, len, "!!%s", tag + sizeof(yaml_prefix) - 1);
		quote(buf, shown, sizeof(shown));
	} else {
		quote(tag, shown, sizeof(shown));
	}
	snprintf(buf, len, "%s", shown);
	return buf;
}

/* The explicit tag of a node's start event; NULL when it has none (libyaml resolves the
 * default tags only when it builds the document). */
static const char *event_tag(const yaml_event_t *event)
{
	switch (event->type) {
	case YAML_SCALAR_EVENT:
		return (const char *)event->data.scalar.tag;
	case YAML_SEQUENCE_START_EVENT:
		return (const char *)event->data.sequence_start.tag;
	case YAML_MAPPING_START_EVENT:
		return (const char *)event->data.mapping_start.tag;
	default:
		return NULL;
	}
}

/* One pass over libyaml's event stream, stopping at the first event past a bound, so the cost
 * of a hostile file is bounded by the limits, not by its size. Also refused here: explicit
 * tags (!!python/object, !!binary, !custom). The agent reads plain values only, and a tag
 * it ignored would make the file mean something else to every other YAML tool. A syntax
 * error is left for the document load to report. */
static int check_shape(struct load_ctx *ctx, const char *yaml, size_t len)
{
	size_t depth = 0, nodes = 0, anchors = 0, aliases = 0;
	char shown[QUOTE_MAX + 8];
	yaml_parser_t parser;
	yaml_event_t event;
	int ret = 0;

	if (!yaml_parser_initialize(&parser))
		return -ENOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
	while (!ret) {
		const char *tag, *anchor = NULL;
		bool end;

		if (!yaml_parser_parse(&parser, &event))
			break;
		end = event.type == YAML_STREAM_END_EVENT;
		tag = event_tag(&event);
		if (event.type == YAML_SCALAR_EVENT)
			anchor = (const char *)event.data.scalar.anchor;
		else if (event.type == YAML_SEQUENCE_START_EVENT)
			anchor = (const char *)event.data.sequence_start.anchor;
		else if (event.type == YAML_MAPPING_START_EVENT)
			anchor = (const char *)event.data.mapping_start.anchor;
		if (event.type == YAML_SEQUENCE_START_EVENT ||
		    event.type == YAML_MAPPING_START_EVENT)
			depth++;
		else if (event.type == YAML_SEQUENCE_END_EVENT ||
			 event.type == YAML_MAPPING_END_EVENT)
			depth--;
		if (event.type == YAML_SCALAR_EVENT || event.type == YAML_SEQUENCE_START_EVENT ||
		    event.type == YAML_MAPPING_START_EVENT || event.type == YAML_ALIAS_EVENT)
			nodes++;
		if (anchor)
			anchors++;
		if (event.type == YAML_ALIAS_EVENT)
			aliases++;

		if (tag)
			ret = fail(ctx, event.start_mark, NULL,
				   "YAML tags are not accepted, got %s: remove it (quote the value "
				   "if it is meant as text)",
				   tag_as_written(tag, shown, sizeof(shown)));
		else if (depth > CONFIG_MAX_DEPTH)
			ret = fail(ctx, event.start_mark, NULL,
				   "nested deeper than %d lists and mappings (a configuration needs "
				   "fewer than 10): is this the right file?",
				   CONFIG_MAX_DEPTH);
		else if (nodes > CONFIG_MAX_NODES)
			ret = fail(ctx, event.start_mark, NULL,
				   "more than %d values (a configuration needs a few hundred): is "
				   "this the right file?",
				   CONFIG_MAX_NODES);
		else if (anchors > CONFIG_MAX_ANCHORS)
			ret = fail(ctx, event.start_mark, NULL,
				   "more than %d anchors (&name): write the values out instead",
				   CONFIG_MAX_ANCHORS);
		else if (aliases > CONFIG_MAX_ANCHORS)
			ret = fail(ctx, event.start_mark, NULL,
				   "more than %d aliases (*name): write the values out instead",
				   CONFIG_MAX_ANCHORS);
		yaml_event_delete(&event);
		if (end)
			break;
	}
	if (!ret && parser.error == YAML_MEMORY_ERROR)
		ret = -ENOMEM;
	yaml_parser_delete(&parser);
	return ret;
}

/* Parses the text and walks its one document over a defaults struct. */
static int load_document(struct load_ctx *ctx, yaml_parser_t *parser, const char *yaml, size_t len,
			 struct agent_config *config)
{
	yaml_document_t doc, extra;
	yaml_node_t *root, *extra_root;
	char found[QUOTE_MAX + 8], known[256];
	int ret = 0;

	if (!yaml_parser_load(parser, &doc))
		return syntax_error(ctx, parser, yaml, len);
	ctx->doc = &doc;
	root = yaml_document_get_root_node(&doc);
	if (root && !is_null(root)) {
		if (root->type != YAML_MAPPING_NODE) {
			known_keys(&agent_table, "", known, sizeof(known));
			ret = fail(ctx, root->start_mark, NULL,
				   "expected a mapping with keys %s, got %s", known,
				   describe_node(root, found, sizeof(found)));
		} else {
			ret = walk_mapping(ctx, root, &agent_table, "", "", config, NULL);
			if (!ret)
				ret = check_relations(ctx, root, config);
		}
	}
	/* A second document ("---") would otherwise be ignored without a word. */
	if (!ret && root) {
		if (!yaml_parser_load(parser, &extra)) {
			ret = syntax_error(ctx, parser, yaml, len);
		} else {
			extra_root = yaml_document_get_root_node(&extra);
			if (extra_root)
				ret = fail(ctx, extra.start_mark, NULL,
					   "expected one YAML document, got a second one");
			yaml_document_delete(&extra);
		}
	}
	ctx->doc = NULL;
	yaml_document_delete(&doc);
	return ret;
}

int config_load_string(const char *yaml, size_t len, const char *name, struct agent_config **out,
		       char *err, size_t err_len)
{
	struct load_ctx ctx = {
		.name = name ? name : "(string)",
		.err = err,
		.err_len = err_len,
	};
	struct agent_config *config;
	yaml_parser_t parser;
	int ret;

	*out = NULL;
	if (err && err_len)
		err[0] = '\0';
	ret = build_defaults(&ctx, ctx.name, &config);
	if (ret)
		return ret;
	if (!yaml_parser_initialize(&parser)) {
		config_free(config);
		return -ENOMEM;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
	ret = check_shape(&ctx, yaml, len);
	if (!ret)
		ret = load_document(&ctx, &parser, yaml, len, config);
	yaml_parser_delete(&parser);
	/* hostname: "" in the file means the default, as absence does. */
	if (!ret)
		ret = fill_hostname(config);
	if (ret) {
		config_free(config);
		return ret;
	}
	*out = config;
	return 0;
}

/* Reads a whole file into a NUL-terminated buffer. Returns 0 or -errno (-EFBIG past
 * CONFIG_FILE_MAX). */
static int read_whole_file(const char *path, char **text, size_t *len)
{
	struct dynbuf buf;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	dynbuf_init(&buf, CONFIG_FILE_MAX);
	ret = small_file_read_all(fd, &buf);
	if (ret == 0 && !buf.data)
		ret = dynbuf_add(&buf, "", 0); /* an empty file is an empty text */
	close(fd);
	if (ret) {
		dynbuf_free(&buf);
		return ret;
	}
	*text = dynbuf_take(&buf, len);
	return 0;
}

int config_load_file(const char *path, struct agent_config **out, char *err, size_t err_len)
{
	char *text = NULL;
	size_t len = 0;
	int ret;

	*out = NULL;
	ret = read_whole_file(path, &text, &len);
	if (ret) {
		if (err && err_len) {
			if (ret == -ENOENT)
				snprintf(err, err_len, "%s: no such file", path);
			else if (ret == -EFBIG)
				snprintf(err, err_len,
					 "%s: larger than %llu MiB, not a configuration "
					 "file",
					 path, CONFIG_FILE_MAX / MIB);
			else
				snprintf(err, err_len, "%s: cannot read: %s", path, strerror(-ret));
		}
		return ret;
	}
	ret = config_load_string(text, len, path, out, err, err_len);
	free(text);
	return ret;
}
