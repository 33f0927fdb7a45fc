/* The agent's configuration: one struct, loaded from YAML (libyaml) through a declarative
 * table of keys (name, type, bounds, default, field), so the reference file, the defaults and
 * the validation cannot drift apart. Errors name the file, line, column and key and say what
 * was expected; unknown keys are errors. Nothing here touches the running agent: a reload
 * loads a new struct and the agent swaps it in only when loading succeeded. */
#ifndef ALLOCSCOPE_CONFIG_H
#define ALLOCSCOPE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/log.h"
#include "collect/target_rules.h"
#include "pipeline.h"
#include "profile/label_limits.h"

#define CONFIG_DEFAULT_PATH "/etc/allocscope/allocscope.yaml"
#define CONFIG_MAX_STATIC_LABELS 16
#define CONFIG_MAX_RULES 256 /* in targets.include, and in targets.exclude */
#define CONFIG_MAX_SINKS 16

enum sink_type {
	SINK_TYPE_DIRECTORY,
	SINK_TYPE_PYROSCOPE,
	SINK_TYPE_PARCA,
};

#define CONFIG_MAX_HEADERS 16

struct config_header {
	char *name;
	char *value;
};

struct sink_config {
	enum sink_type type;
	char *name;                /* default: the type; unique among the sinks */
	/* directory */
	char *path;                /* default /var/lib/allocscope/profiles */
	uint64_t max_total_bytes;  /* default 1 GiB; 0: unlimited */
	uint64_t max_age_ms;       /* default 7 days; 0: unlimited */
	/* pyroscope and parca */
	char *url;                 /* required */
	uint64_t timeout_ms;       /* default 10 s */
	uint32_t queue_size;       /* default 64 profiles */
	char *spool_dir;           /* default NULL: no spool */
	uint64_t spool_max_bytes;  /* default 256 MiB */
	uint64_t shutdown_timeout_ms; /* default 5 s */
	uint64_t max_profile_bytes;   /* default pyroscope 1 MiB, parca 32 MiB uncompressed;
					 0: unlimited */
	uint64_t max_samples;         /* default pyroscope 16000, parca 0 (unlimited) */
	uint64_t max_profile_age_ms;  /* default pyroscope 50 min, parca 24 h; 0: unlimited */
	uint32_t max_attempts;        /* default 8 counted refusals per profile; 0: unlimited */
	uint64_t max_backoff_ms;   /* default 60 s */
	char *username;            /* pyroscope: basic authentication */
	char *password_file, *password_env;
	char *token_file, *token_env;
	char *tenant;              /* pyroscope: X-Scope-OrgID */
	struct config_header *headers;
	size_t n_headers;
	char *ca_file, *cert_file, *key_file;
	char *server_name;
	bool insecure_skip_verify; /* default false */
};

struct config_label {
	char *key;
	char *value;
};

/* Pod metadata from the Kubernetes API (collect/kube_pods.h, docs/kubernetes.md). */
struct kubernetes_config {
	bool enabled;                 /* default false */
	char *node_name;              /* default: $NODE_NAME, read at load; required when enabled */
	char *api_server;             /* default NULL: https://$KUBERNETES_SERVICE_HOST:$..._PORT,
					 read when the pod cache starts */
	uint64_t refresh_interval_ms; /* default 30 s; 1 s .. 1 h */
	char *token_path;             /* default KUBE_PODS_DEFAULT_TOKEN_PATH; "": no token */
	char *ca_path;                /* default KUBE_PODS_DEFAULT_CA_PATH; https only */
};

struct agent_config {
	char *source;              /* the file it was loaded from; "(defaults)" when none */

	/* sampling.* and symbolize.debuginfod_urls: need a restart to change (the BPF program
	 * is loaded with them); defaults and ranges in config.c's key table */
	struct sampling_opts sampling;

	struct target_rules targets;

	/* profiles */
	uint64_t interval_ms;      /* default 15 s; 1 s .. 1 h */
	char *hostname;            /* default: kubernetes.node_name when Kubernetes is enabled,
				      else gethostname() at load */
	struct config_label *labels; /* static labels, at most CONFIG_MAX_STATIC_LABELS */
	size_t n_labels;
	bool pid_label;            /* default false: a pid label on every sample */

	/* limits */
	uint32_t max_processes;    /* default 1024: processes attached at once; 1 .. 65536 */
	uint32_t max_services;     /* default 256: services per interval, the rest go to the
				      overflow service "other"; 1 .. 100000 */
	uint32_t max_label_value_bytes; /* default 128: longer values are cut; 16 .. 1024 */

	struct sink_config *sinks; /* default: one directory sink */
	size_t n_sinks;

	char *metrics_listen;      /* default "127.0.0.1:9464"; "" disables */
	bool metrics_allow_remote; /* default false: a non-loopback listen address is an error */
	enum log_level log_level;  /* default info */

	struct kubernetes_config kubernetes;

	/* Issue 15 */
	char *version_label;       /* default "service_version"; "": no version label */
	struct label_limits_config sample_labels; /* sample_labels.*: per-sample label limits */
	/* overhead.max_cpu_percent, --max-overhead: the host-wide overhead budget, in percent of
	 * a process's own CPU time; -1 (none, the default) for no budget. A rule's
	 * max_cpu_percent overrides it (attach/duty_cycle.h). */
	double overhead_max_cpu_percent;
};

/* The built-in defaults (hostname filled in). Returns 0 or -ENOMEM. */
int config_defaults(struct agent_config **out);

/* Loads a YAML file over the defaults. Returns 0; -ENOENT when the file does not exist (err
 * says so); -EINVAL with "FILE:LINE:COLUMN: KEY: what was expected, what was found" in err
 * for anything invalid; other -errno when it cannot be read. */
int config_load_file(const char *path, struct agent_config **out, char *err, size_t err_len);

/* The same from text in memory; name stands for the file in messages. */
int config_load_string(const char *yaml, size_t len, const char *name,
		       struct agent_config **out, char *err, size_t err_len);

/* The command line speaks the same vocabulary: the flags below set configuration keys
 * (--sample-rate is sampling.rate, --log-level is log.level, ...) through the same table, so
 * each setting has one name, one default, one range and one check. config_flag(i, &c) is the
 * i-th such flag without "--" (c: its one-letter form, or 0), NULL past the last. */
const char *config_flag(size_t i, char *short_flag);
/* A flag's default as the file writes it ("512KiB"; "" when it has none), and its range
 * (sizes and durations; "" otherwise), for the help text. */
const char *config_flag_default(const char *flag);
void config_flag_range(const char *flag, char *low, char *high, size_t len);
/* Sets flag's key in config from text. Returns 0; -EINVAL with "invalid NOUN 'TEXT': expected
 * ..." in err; -ENOENT when flag sets no key; -ENOMEM. */
int config_set_flag(struct agent_config *config, const char *flag, const char *text, char *err,
		    size_t err_len);

/* Accepts NULL. */
void config_free(struct agent_config *config);

#endif
