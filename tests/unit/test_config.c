/* The configuration loader as an operator meets it: the defaults, the reference file (which
 * must equal the defaults), every key, and the exact message for each kind of mistake,
 * position included. Runs from the repository root (tests/run-all cds there). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "unit.h"
#include "collect/kube_pods.h"
#include "config/config.h"
#include "config_load.h"
#include "sampling.h"

#define REFERENCE_FILE "config/allocscope.yaml"

static char *machine_hostname(void)
{
	static char name[256];

	if (gethostname(name, sizeof(name)) != 0 || !name[0])
		snprintf(name, sizeof(name), "localhost");
	name[sizeof(name) - 1] = '\0';
	return name;
}

/* Every field against the documented defaults (source aside). */
static void check_defaults(const struct agent_config *c)
{
	CHECK_EQ_U64(c->sampling.sample_rate, 512 * 1024);
	/* The text the key table parses and the number the in-process sampler uses. */
	CHECK_EQ_U64(c->sampling.sample_rate, SAMPLING_DEFAULT_RATE);
	CHECK_EQ_U64(c->sampling.unwind, UNWIND_AUTO);
	CHECK_EQ_U64(c->sampling.stack_copy_bytes, 16 * 1024);
	CHECK_EQ_U64(c->sampling.ringbuf_bytes, 16 * 1024 * 1024);
	CHECK_EQ_U64(c->sampling.unwind_table_bytes, 16 * 1024 * 1024);
	CHECK_EQ_U64(c->targets.n_include, 0);
	CHECK(c->targets.include == NULL);
	CHECK_EQ_U64(c->targets.n_exclude, 0);
	CHECK(c->targets.exclude == NULL);
	CHECK_EQ_U64(c->interval_ms, 15000);
	CHECK_STR(c->hostname, machine_hostname());
	CHECK_EQ_U64(c->n_labels, 0);
	CHECK(c->labels == NULL);
	CHECK(c->pid_label == false);
	CHECK_EQ_U64(c->max_processes, 1024);
	CHECK_EQ_U64(c->max_services, 256);
	CHECK_EQ_U64(c->max_label_value_bytes, 128);
	CHECK_EQ_U64(c->n_sinks, 1);
	if (c->n_sinks == 1) {
		CHECK_EQ_U64(c->sinks[0].type, SINK_TYPE_DIRECTORY);
		CHECK_STR(c->sinks[0].path, "/var/lib/allocscope/profiles");
		CHECK_EQ_U64(c->sinks[0].max_total_bytes, 1ull << 30);
		CHECK_EQ_U64(c->sinks[0].max_age_ms, 7ull * 24 * 3600 * 1000);
	}
	CHECK_STR(c->metrics_listen, "127.0.0.1:9464");
	CHECK(c->metrics_allow_remote == false);
	CHECK_EQ_U64(c->log_level, LOG_INFO);
	CHECK(c->sampling.debuginfod_urls == NULL);
	CHECK(c->kubernetes.enabled == false);
	/* main() clears NODE_NAME: nothing fills it in. */
	CHECK(c->kubernetes.node_name == NULL || c->kubernetes.node_name[0] == '\0');
	CHECK(c->kubernetes.api_server == NULL);
	CHECK_EQ_U64(c->kubernetes.refresh_interval_ms, 30000);
	CHECK_STR(c->kubernetes.token_path, KUBE_PODS_DEFAULT_TOKEN_PATH);
	CHECK_STR(c->kubernetes.ca_path, KUBE_PODS_DEFAULT_CA_PATH);
	CHECK_STR(c->version_label, "service_version");
	CHECK_EQ_U64(c->sample_labels.n_keys, 0);
	CHECK_EQ_U64(c->sample_labels.max_keys, 8);
	CHECK_EQ_U64(c->sample_labels.max_values, 100);
	CHECK_EQ_U64(c->sample_labels.max_value_bytes, 64);
}

static void test_defaults(void)
{
	struct agent_config *config = NULL;

	CHECK(config_defaults(&config) == 0);
	if (!config)
		return;
	check_defaults(config);
	CHECK_STR(config->source, "(defaults)");
	config_free(config);
	config_free(NULL);
}

static void test_reference_file_is_the_defaults(void)
{
	struct agent_config *config = NULL;
	int ret;

	ret = config_load_file(REFERENCE_FILE, &config, err, sizeof(err));
	if (ret)
		fprintf(stderr, "  %s: %s\n", REFERENCE_FILE, err);
	CHECK(ret == 0);
	if (!config)
		return;
	check_defaults(config);
	CHECK_STR(config->source, REFERENCE_FILE);
	config_free(config);
}

static void test_empty_means_defaults(void)
{
	static const char *const texts[] = {
		"",
		"\n",
		"# only a comment\n\n# and another\n",
		"---\n",
		"sampling:\n",
		"sampling: {}\ntargets:\n  include: []\nprofiles:\n  labels: {}\n",
	};
	char path[] = "/tmp/allocscope-test-config-XXXXXX";
	struct agent_config *config;
	int fd;

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		config = load(texts[i]);
		if (!config)
			continue;
		check_defaults(config);
		CHECK_STR(config->source, "x.yaml");
		config_free(config);
	}

	fd = mkstemp(path);
	CHECK(fd >= 0);
	if (fd < 0)
		return;
	close(fd);
	config = NULL;
	CHECK(config_load_file(path, &config, err, sizeof(err)) == 0);
	if (config) {
		check_defaults(config);
		CHECK_STR(config->source, path);
		config_free(config);
	}
	unlink(path);
}

static void test_missing_file(void)
{
	struct agent_config *config = (struct agent_config *)1;

	CHECK(config_load_file("/nonexistent/allocscope.yaml", &config, err, sizeof(err)) ==
	      -ENOENT);
	CHECK(config == NULL);
	CHECK_STR(err, "/nonexistent/allocscope.yaml: no such file");
	/* A directory is not a file: read() fails with EISDIR. */
	CHECK(config_load_file("/tmp", &config, err, sizeof(err)) == -EISDIR);
	CHECK_STR(err, "/tmp: cannot read: Is a directory");
}

static void test_file_errors_name_the_file(void)
{
	static const char text[] = "# comment\nsampling:\n  rate: fast\n";
	char path[] = "/tmp/allocscope-test-config-XXXXXX";
	struct agent_config *config = (struct agent_config *)1;
	char expected[256];
	int fd;

	fd = mkstemp(path);
	CHECK(fd >= 0);
	if (fd < 0)
		return;
	CHECK(write(fd, text, sizeof(text) - 1) == (ssize_t)(sizeof(text) - 1));
	close(fd);
	CHECK(config_load_file(path, &config, err, sizeof(err)) == -EINVAL);
	CHECK(config == NULL);
	snprintf(expected, sizeof(expected),
		 "%s:3:9: sampling.rate: expected a size like 512KiB, got \"fast\"", path);
	CHECK_STR(err, expected);
	unlink(path);
}

static const char every_key[] = "sampling:\n"
				"  rate: 1MiB\n"
				"  unwind: dwarf\n"
				"  stack_copy_size: 32KiB\n"
				"  ringbuf_size: \"64MiB\"\n"
				"  unwind_table_size: 64MiB\n"
				"targets:\n"
				"  include:\n"
				"    - service: checkout\n"
				"      executable: /usr/bin/redis-*\n"
				"      process_name: nginx\n"
				"      cgroup: /system.slice/app.service\n"
				"      systemd_unit: \"redis*.service\"\n"
				"      namespace: \"shop-*\"\n"
				"      pod_label: app.kubernetes.io/name=check*\n"
				"      container: app\n"
				"    - process_name: java\n"
				"  exclude:\n"
				"    - process_name: \"bash\"\n"
				"    - cgroup: /user.slice\n"
				"    - {namespace: kube-system, pod_label: \"tier=\", container: '*'}\n"
				"profiles:\n"
				"  interval: 1m\n"
				"  hostname: web-1\n"
				"  labels:\n"
				"    env: prod\n"
				"    region: 'eu-west-1'\n"
				"    _team: \"payments\"\n"
				"  pid_label: yes\n"
				"limits:\n"
				"  max_processes: 65536\n"
				"  max_services: 1\n"
				"  max_label_value_bytes: 16\n"
				"sinks:\n"
				"  - type: directory\n"
				"    path: /srv/profiles\n"
				"    max_total_size: 0\n"
				"    max_age: 0\n"
				"  - type: directory\n"
				"    path: /srv/other\n"
				"    max_total_size: 512MiB\n"
				"    max_age: 36h\n"
				"  - {type: directory}\n"
				"metrics:\n"
				"  listen: \"\"\n"
				"  allow_remote: true\n"
				"log:\n"
				"  level: debug\n"
				"symbolize:\n"
				"  debuginfod_urls: https://debuginfod.debian.net\n"
				"kubernetes:\n"
				"  enabled: true\n"
				"  node_name: node-7.eu\n"
				"  api_server: https://10.96.0.1:443\n"
				"  refresh_interval: 1m\n"
				"  token_path: \"\"\n"
				"  ca_path: /etc/kubernetes/ca.crt\n";

static void test_every_key(void)
{
	struct agent_config *c = load(every_key);
	const struct target_rule *rule;

	if (!c)
		return;
	CHECK_EQ_U64(c->sampling.sample_rate, 1024 * 1024);
	CHECK_EQ_U64(c->sampling.unwind, UNWIND_DWARF);
	CHECK_EQ_U64(c->sampling.stack_copy_bytes, 32 * 1024);
	CHECK_EQ_U64(c->sampling.ringbuf_bytes, 64 * 1024 * 1024);
	CHECK_EQ_U64(c->sampling.unwind_table_bytes, 64 * 1024 * 1024);

	CHECK_EQ_U64(c->targets.n_include, 2);
	if (c->targets.n_include == 2) {
		rule = &c->targets.include[0];
		CHECK_STR(rule->service, "checkout");
		CHECK_STR(rule->executable, "/usr/bin/redis-*");
		CHECK_STR(rule->process_name, "nginx");
		CHECK_STR(rule->cgroup, "/system.slice/app.service");
		CHECK_STR(rule->systemd_unit, "redis*.service");
		CHECK_STR(rule->namespace_name, "shop-*");
		CHECK_STR(rule->pod_label, "app.kubernetes.io/name=check*");
		CHECK_STR(rule->container, "app");
		rule = &c->targets.include[1];
		CHECK(rule->service == NULL);
		CHECK(rule->executable == NULL);
		CHECK_STR(rule->process_name, "java");
		CHECK(rule->cgroup == NULL);
		CHECK(rule->systemd_unit == NULL);
		CHECK(rule->namespace_name == NULL);
		CHECK(rule->pod_label == NULL);
		CHECK(rule->container == NULL);
	}
	CHECK_EQ_U64(c->targets.n_exclude, 3);
	if (c->targets.n_exclude == 3) {
		CHECK_STR(c->targets.exclude[0].process_name, "bash");
		CHECK(c->targets.exclude[0].service == NULL);
		CHECK_STR(c->targets.exclude[1].cgroup, "/user.slice");
		CHECK_STR(c->targets.exclude[2].namespace_name, "kube-system");
		CHECK_STR(c->targets.exclude[2].pod_label, "tier=");
		CHECK_STR(c->targets.exclude[2].container, "*");
	}

	CHECK_EQ_U64(c->interval_ms, 60000);
	CHECK_STR(c->hostname, "web-1");
	CHECK_EQ_U64(c->n_labels, 3);
	if (c->n_labels == 3) {
		CHECK_STR(c->labels[0].key, "env");
		CHECK_STR(c->labels[0].value, "prod");
		CHECK_STR(c->labels[1].key, "region");
		CHECK_STR(c->labels[1].value, "eu-west-1");
		CHECK_STR(c->labels[2].key, "_team");
		CHECK_STR(c->labels[2].value, "payments");
	}
	CHECK(c->pid_label == true);

	CHECK_EQ_U64(c->max_processes, 65536);
	CHECK_EQ_U64(c->max_services, 1);
	CHECK_EQ_U64(c->max_label_value_bytes, 16);

	CHECK_EQ_U64(c->n_sinks, 3);
	if (c->n_sinks == 3) {
		CHECK_EQ_U64(c->sinks[0].type, SINK_TYPE_DIRECTORY);
		CHECK_STR(c->sinks[0].path, "/srv/profiles");
		CHECK_EQ_U64(c->sinks[0].max_total_bytes, 0);
		CHECK_EQ_U64(c->sinks[0].max_age_ms, 0);
		CHECK_STR(c->sinks[1].path, "/srv/other");
		CHECK_EQ_U64(c->sinks[1].max_total_bytes, 512ull << 20);
		CHECK_EQ_U64(c->sinks[1].max_age_ms, 36ull * 3600 * 1000);
		/* A sink gives only what it changes; the rest are the sink defaults. */
		CHECK_STR(c->sinks[2].path, "/var/lib/allocscope/profiles");
		CHECK_EQ_U64(c->sinks[2].max_total_bytes, 1ull << 30);
		CHECK_EQ_U64(c->sinks[2].max_age_ms, 7ull * 24 * 3600 * 1000);
	}
	CHECK_STR(c->metrics_listen, "");
	CHECK(c->metrics_allow_remote == true);
	CHECK_EQ_U64(c->log_level, LOG_DEBUG);
	CHECK_STR(c->sampling.debuginfod_urls, "https://debuginfod.debian.net");
	CHECK(c->kubernetes.enabled == true);
	CHECK_STR(c->kubernetes.node_name, "node-7.eu");
	CHECK_STR(c->kubernetes.api_server, "https://10.96.0.1:443");
	CHECK_EQ_U64(c->kubernetes.refresh_interval_ms, 60000);
	CHECK_STR(c->kubernetes.token_path, "");
	CHECK_STR(c->kubernetes.ca_path, "/etc/kubernetes/ca.crt");
	CHECK_STR(c->source, "x.yaml");
	config_free(c);
}

static void test_value_forms(void)
{
	static const struct {
		const char *yaml;
		bool value;
	} bools[] = {
		{ "profiles: {pid_label: true}", true },
		{ "profiles: {pid_label: False}", false },
		{ "profiles: {pid_label: YES}", true },
		{ "profiles: {pid_label: no}", false },
		{ "profiles: {pid_label: On}", true },
		{ "profiles: {pid_label: off}", false },
		{ "profiles: {pid_label: 'true'}", true },
	};
	struct agent_config *c;

	for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
		c = load(bools[i].yaml);
		if (!c)
			continue;
		if (c->pid_label != bools[i].value)
			fprintf(stderr, "  %s: pid_label %d\n", bools[i].yaml, c->pid_label);
		CHECK(c->pid_label == bools[i].value);
		config_free(c);
	}

	/* Bounds are inclusive; days are accepted; a bare number of seconds too. */
	c = load("sampling: {rate: 4GiB, stack_copy_size: 1KiB, ringbuf_size: 1GiB}\n"
		 "profiles: {interval: 3600}\n"
		 "sinks: [{type: directory, max_age: 1.5d, max_total_size: 100}]\n");
	if (c) {
		CHECK_EQ_U64(c->sampling.sample_rate, 4ull << 30);
		CHECK_EQ_U64(c->sampling.stack_copy_bytes, 1024);
		CHECK_EQ_U64(c->sampling.ringbuf_bytes, 1u << 30);
		CHECK_EQ_U64(c->interval_ms, 3600 * 1000);
		CHECK_EQ_U64(c->sinks[0].max_age_ms, 36ull * 3600 * 1000);
		CHECK_EQ_U64(c->sinks[0].max_total_bytes, 100);
		config_free(c);
	}
	c = load("sampling: {rate: 1, stack_copy_size: 64KiB, ringbuf_size: 128KiB}\n"
		 "profiles: {interval: 1000ms}\n"
		 "limits: {max_label_value_bytes: 1024, max_services: 100000}\n");
	if (c) {
		CHECK_EQ_U64(c->sampling.sample_rate, 1);
		CHECK_EQ_U64(c->sampling.stack_copy_bytes, 64 * 1024);
		CHECK_EQ_U64(c->sampling.ringbuf_bytes, 128 * 1024);
		CHECK_EQ_U64(c->interval_ms, 1000);
		CHECK_EQ_U64(c->max_label_value_bytes, 1024);
		CHECK_EQ_U64(c->max_services, 100000);
		config_free(c);
	}
	c = load("sampling:\n  unwind: fp\nlog: {level: error}\n");
	if (c) {
		CHECK_EQ_U64(c->sampling.unwind, UNWIND_FP);
		CHECK_EQ_U64(c->log_level, LOG_ERROR);
		config_free(c);
	}
}

static void test_empty_strings(void)
{
	struct agent_config *c;

	/* hostname "" is the machine's name; debuginfod_urls "" is "no server", unlike absence. */
	c = load("profiles:\n  hostname: \"\"\nsymbolize:\n  debuginfod_urls: ''\n");
	if (!c)
		return;
	CHECK_STR(c->hostname, machine_hostname());
	CHECK_STR(c->sampling.debuginfod_urls, "");
	config_free(c);
}

/* Anchors and aliases are plain YAML: a rule written once and reused. Their number is bounded
 * (libyaml looks each one up in a list, so many of them cost quadratic time), and since the
 * document keeps one node per alias, "billion laughs" never expands. */
static void test_aliases(void)
{
	char *yaml = malloc(64 * 1024);
	size_t used = 0;

	struct agent_config *c;

	c = load("targets:\n"
		 "  include:\n"
		 "    - &web {process_name: nginx, service: web}\n"
		 "    - *web\n");
	if (!c)
		return;
	CHECK_EQ_U64(c->targets.n_include, 2);
	if (c->targets.n_include == 2)
		CHECK_STR(c->targets.include[1].service, "web");
	config_free(c);

	/* A billion laughs: 12 levels of 10 aliases of the level below. */
	if (!yaml)
		return;
	used += (size_t)sprintf(yaml + used, "x0: &x0 [lol, lol, lol, lol, lol, lol, lol]\n");
	for (int level = 1; level <= 12; level++) {
		used += (size_t)sprintf(yaml + used, "x%d: &x%d [", level, level);
		for (int i = 0; i < 10; i++)
			used += (size_t)sprintf(yaml + used, "%s*x%d", i ? ", " : "", level - 1);
		used += (size_t)sprintf(yaml + used, "]\n");
	}
	CHECK_ERROR(yaml, "x.yaml:12:12: more than 100 aliases (*name): write the values out "
			  "instead");
	used = 0;
	for (int i = 0; i <= 100; i++)
		used += (size_t)sprintf(yaml + used, "- &a%d x\n", i);
	CHECK_ERROR(yaml, "x.yaml:101:3: more than 100 anchors (&name): write the values out "
			  "instead");
	free(yaml);
}

/* A tag asks a YAML reader to build something ("!!python/object" runs code in some); the
 * agent reads plain values only, so a tag it ignored would make the file mean one thing here
 * and another to every other tool. */
static void test_tags_refused(void)
{
	CHECK_ERROR("sampling: !!python/object:os.system {rate: 1}\n",
		    "x.yaml:1:11: YAML tags are not accepted, got \"!!python/object:os.system\": "
		    "remove it (quote the value if it is meant as text)");
	CHECK_ERROR("log:\n  level: !!str info\n",
		    "x.yaml:2:10: YAML tags are not accepted, got \"!!str\": remove it (quote the "
		    "value if it is meant as text)");
	CHECK_ERROR("targets:\n  include: !rules\n    - {process_name: a}\n",
		    "x.yaml:2:12: YAML tags are not accepted, got \"!rules\": remove it (quote the "
		    "value if it is meant as text)");
	CHECK_ERROR("!!map\nlog: {level: info}\n",
		    "x.yaml:1:1: YAML tags are not accepted, got \"!!map\": remove it (quote the "
		    "value if it is meant as text)");
}

/* Nesting, values, rules and sinks are bounded, so a hostile file is refused after a bounded
 * amount of work: 60,000 levels of nesting used to take libyaml 12 s (quadratic in depth)
 * before the agent even looked at the file. No timing here: the old code took the same path
 * and ended in another message (or never, for a deep enough file). */
static void test_shape_limits(void)
{
	size_t levels = 100000, len;
	char *yaml = malloc(2 * levels + 64);

	if (!yaml)
		return;
	/* Flow style: one line of brackets. */
	len = (size_t)sprintf(yaml, "sampling: ");
	memset(yaml + len, '[', levels);
	memset(yaml + len + levels, ']', levels);
	yaml[len + 2 * levels] = '\0';
	CHECK_ERROR(yaml, "x.yaml:1:42: nested deeper than 32 lists and mappings (a configuration "
			  "needs fewer than 10): is this the right file?");
	/* Block style: "- - - - x". */
	for (size_t i = 0; i < levels; i++)
		memcpy(yaml + 2 * i, "- ", 2);
	strcpy(yaml + 2 * levels, "x\n");
	CHECK_ERROR(yaml, "x.yaml:1:65: nested deeper than 32 lists and mappings (a configuration "
			  "needs fewer than 10): is this the right file?");
	/* Many values, where a scalar is wanted. */
	len = (size_t)sprintf(yaml, "sampling: [");
	for (size_t i = 0; i < 30000; i++) {
		memcpy(yaml + len, "1,", 2);
		len += 2;
	}
	strcpy(yaml + len - 1, "]\n");
	CHECK_ERROR(yaml, "x.yaml:1:40006: more than 20000 values (a configuration needs a few "
			  "hundred): is this the right file?");
	free(yaml);
}

static void test_rule_and_sink_counts(void)
{
	char *yaml = malloc(64 * 1024);
	size_t len;
	struct agent_config *c;

	if (!yaml)
		return;
	len = (size_t)sprintf(yaml, "targets:\n  include:\n");
	for (int i = 0; i < 256; i++)
		len += (size_t)sprintf(yaml + len, "    - {process_name: p%d}\n", i);
	c = load(yaml);
	if (c)
		CHECK_EQ_U64(c->targets.n_include, 256);
	config_free(c);
	strcpy(yaml + len, "    - {process_name: one-too-many}\n");
	CHECK_ERROR(yaml, "x.yaml:3:5: targets.include: expected at most 256 rules, got 257");

	len = (size_t)sprintf(yaml, "sinks:\n");
	for (int i = 0; i < 17; i++)
		len += (size_t)sprintf(yaml + len, "  - {type: directory, name: d%d, path: /d%d}\n",
				       i, i);
	CHECK_ERROR(yaml, "x.yaml:2:3: sinks: expected at most 16 sinks, got 17");
	free(yaml);
}

/* metrics.listen is checked as the metrics server reads it, so --check-config and a reload
 * refuse what would fail at start. */
static void test_metrics_listen_form(void)
{
	static const char *const good[] = { "127.0.0.1:9464", "127.0.0.1:0", "localhost:65535",
					     "[::1]:9464", "" };
	static const struct {
		const char *listen, *problem;
	} bad[] = {
		{ "127.0.0.1:99999", "the port must be a number from 0 to 65535" },
		{ "127.0.0.1:", "the port must be a number from 0 to 65535" },
		{ "127.0.0.1:http", "the port must be a number from 0 to 65535" },
		{ "127.0.0.1:+80", "the port must be a number from 0 to 65535" },
		{ "127.1:9464", "the address must be an IPv4 address in full (four numbers, as in "
				"127.0.0.1), an IPv6 address in brackets, or localhost" },
		{ "example.com:9464", "the address must be an IPv4 address in full (four numbers, "
				      "as in 127.0.0.1), an IPv6 address in brackets, or "
				      "localhost" },
		{ "127.0.0.1", "it has no :PORT" },
		{ ":9464", "it names no address" },
		{ "::1:9464", "an IPv6 address goes in brackets, as in [::1]:9464" },
		{ "[::1]9464", "an IPv6 address in brackets must be followed by :PORT" },
		{ "[127.0.0.1]:9464", "the address in brackets is not an IPv6 address" },
	};
	char yaml[256], expected[768];
	struct agent_config *c;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(yaml, sizeof(yaml), "metrics:\n  listen: \"%s\"\n", good[i]);
		c = load(yaml);
		if (c)
			CHECK_STR(c->metrics_listen, good[i]);
		config_free(c);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(yaml, sizeof(yaml), "metrics:\n  listen: \"%s\"\n", bad[i].listen);
		snprintf(expected, sizeof(expected),
			 "x.yaml:2:11: metrics.listen: expected HOST:PORT like 127.0.0.1:9464 or "
			 "[::1]:9464 (\"\" turns it off), got \"%s\": %s",
			 bad[i].listen, bad[i].problem);
		CHECK_ERROR(yaml, expected);
	}
}

static void test_syntax_errors(void)
{
	CHECK_ERROR("sampling:\n  rate: [1, 2\n",
		    "x.yaml:3:1: YAML syntax error: did not find expected ',' or ']' "
		    "(while parsing a flow sequence at 2:9)");
	CHECK_ERROR("sampling:\n  rate: 1\n rate: 2\n",
		    "x.yaml:3:2: YAML syntax error: did not find expected key "
		    "(while parsing a block mapping at 1:1)");
	CHECK_ERROR("a: @b\n",
		    "x.yaml:1:4: YAML syntax error: found character that cannot start any token "
		    "(while scanning for the next token at 1:4)");
	CHECK_ERROR("log:\n  level: \xff\n",
		    "x.yaml:2:10: YAML syntax error: invalid leading UTF-8 octet (byte 0xff)");
	CHECK_ERROR("log: {level: info}\n---\nlog: {level: warn}\n",
		    "x.yaml:2:1: expected one YAML document, got a second one");
	CHECK_ERROR("- sampling\n",
		    "x.yaml:1:1: expected a mapping with keys sampling, targets, profiles, limits, "
		    "sinks, metrics, log, symbolize, kubernetes, sample_labels, overhead, context, "
		    "got a list");
}

static void test_unknown_keys(void)
{
	CHECK_ERROR("profiles:\n  intervl: 10s\n",
		    "x.yaml:2:3: profiles.intervl: unknown key (known keys under profiles: "
		    "interval, hostname, labels, pid_label, version_label)");
	CHECK_ERROR("# top\nsamplng:\n  rate: 1\n",
		    "x.yaml:2:1: samplng: unknown key (known keys at the top level: sampling, "
		    "targets, profiles, limits, sinks, metrics, log, symbolize, kubernetes, "
		    "sample_labels, overhead, context)");
	CHECK_ERROR("targets:\n  include:\n    - exe: /bin/sh\n",
		    "x.yaml:3:7: targets.include[0].exe: unknown key (known keys in a rule: "
		    "service, executable, process_name, cgroup, systemd_unit, namespace, pod_label, "
		    "container, version, repository, git_ref, root_path, inuse, max_cpu_percent)");
	CHECK_ERROR("targets:\n  exclude:\n    - {process_name: a}\n    - {exe: /bin/sh}\n",
		    "x.yaml:4:8: targets.exclude[1].exe: unknown key (known keys in an exclude "
		    "rule: executable, process_name, cgroup, systemd_unit, namespace, pod_label, "
		    "container)");
	CHECK_ERROR("sinks:\n  - type: directory\n    pth: /x\n",
		    "x.yaml:3:5: sinks[0].pth: unknown key (known keys in a directory sink: type, "
		    "name, path, max_total_size, max_age)");
	CHECK_ERROR("targets: {incude: []}\n",
		    "x.yaml:1:11: targets.incude: unknown key (known keys under targets: include, "
		    "exclude)");
}

static void test_duplicate_keys(void)
{
	CHECK_ERROR("sampling:\n  rate: 1KiB\n  unwind: fp\n  rate: 2KiB\n",
		    "x.yaml:4:3: sampling.rate: duplicate key (first given at line 2)");
	CHECK_ERROR("log: {level: info}\nmetrics: {listen: ''}\nlog: {level: warn}\n",
		    "x.yaml:3:1: log: duplicate key (first given at line 1)");
	CHECK_ERROR("profiles:\n  labels:\n    env: a\n    env: b\n",
		    "x.yaml:4:5: profiles.labels.env: duplicate key (first given at line 3)");
	CHECK_ERROR("targets:\n  include:\n    - process_name: a\n      process_name: b\n",
		    "x.yaml:4:7: targets.include[0].process_name: duplicate key (first given at "
		    "line 3)");
}

static void test_wrong_kinds(void)
{
	CHECK_ERROR("sampling: [1]\n",
		    "x.yaml:1:11: sampling: expected a mapping (with keys rate, unwind, "
		    "stack_copy_size, ringbuf_size, unwind_table_size), got a list");
	CHECK_ERROR(
	    "limits: 5\n",
	    "x.yaml:1:9: limits: expected a mapping (with keys max_processes, max_services, "
	    "max_label_value_bytes), got \"5\"");
	CHECK_ERROR("sampling:\n  rate: {a: 1}\n",
		    "x.yaml:2:9: sampling.rate: expected a size like 512KiB, got a mapping");
	CHECK_ERROR("targets:\n  include:\n    process_name: x\n",
		    "x.yaml:3:5: targets.include: expected a list of target rules, got a mapping");
	CHECK_ERROR("targets:\n  include:\n    - nginx\n",
		    "x.yaml:3:7: targets.include[0]: expected a rule (a mapping like process_name: "
		    "nginx), got \"nginx\"");
	CHECK_ERROR("profiles:\n  labels: [env]\n",
		    "x.yaml:2:11: profiles.labels: expected a mapping of label names to values, "
		    "got a list");
	CHECK_ERROR("sinks: {type: directory}\n",
		    "x.yaml:1:8: sinks: expected a list of sinks, got a mapping");
	CHECK_ERROR("sinks:\n  - directory\n",
		    "x.yaml:2:5: sinks[0]: expected a sink (a mapping like type: directory), got "
		    "\"directory\"");
	CHECK_ERROR("metrics:\n  listen: [a, b]\n",
		    "x.yaml:2:11: metrics.listen: expected HOST:PORT like 127.0.0.1:9464 or "
		    "[::1]:9464 (\"\" turns it off), got a list");
	CHECK_ERROR("{[a]: 1}\n", "x.yaml:1:2: expected a key name, got a list");
}

static void test_missing_values(void)
{
	CHECK_ERROR(
	    "sampling:\n  rate:\n  unwind: fp\n",
	    "x.yaml:2:8: sampling.rate: expected a value (a size like 512KiB), got nothing");
	CHECK_ERROR("profiles:\n  hostname: ~\n",
		    "x.yaml:2:13: profiles.hostname: expected a value (a string), got null");
	CHECK_ERROR("log: {level: null}\n",
		    "x.yaml:1:14: log.level: expected a value (a log level (error, warn, info or "
		    "debug)), got null");
}

static void test_out_of_range(void)
{
	CHECK_ERROR("limits:\n  max_processes: 0\n",
		    "x.yaml:2:18: limits.max_processes: expected a whole number from 1 to 65536, "
		    "got \"0\"");
	CHECK_ERROR("limits:\n  max_services: 100001\n",
		    "x.yaml:2:17: limits.max_services: expected a whole number from 1 to 100000, "
		    "got \"100001\"");
	CHECK_ERROR("limits:\n  max_label_value_bytes: 0x40\n",
		    "x.yaml:2:26: limits.max_label_value_bytes: expected a whole number from 16 to "
		    "1024, got \"0x40\"");
	CHECK_ERROR("limits:\n  max_label_value_bytes: 064\n",
		    "x.yaml:2:26: limits.max_label_value_bytes: expected a whole number from 16 to "
		    "1024, got \"064\"");
	CHECK_ERROR("limits:\n  max_processes: 99999999999999999999999\n",
		    "x.yaml:2:18: limits.max_processes: expected a whole number from 1 to 65536, "
		    "got \"99999999999999999999999\"");
	CHECK_ERROR("sampling:\n  rate: 8GiB\n",
		    "x.yaml:2:9: sampling.rate: expected a size from 1B to 4GiB, got \"8GiB\"");
	CHECK_ERROR("sampling:\n  rate: 0\n",
		    "x.yaml:2:9: sampling.rate: expected a size from 1B to 4GiB, got \"0\"");
	CHECK_ERROR(
	    "profiles:\n  interval: 2h\n",
	    "x.yaml:2:13: profiles.interval: expected a duration from 1s to 1h, got \"2h\"");
	CHECK_ERROR("profiles:\n  interval: 500ms\n",
		    "x.yaml:2:13: profiles.interval: expected a duration from 1s to 1h, got "
		    "\"500ms\"");
	CHECK_ERROR("sampling:\n  ringbuf_size: 2GiB\n",
		    "x.yaml:2:17: sampling.ringbuf_size: expected a power of two from 128KiB to "
		    "1GiB, got \"2GiB\"");
	CHECK_ERROR("sampling:\n  unwind_table_size: 2GiB\n",
		    "x.yaml:2:22: sampling.unwind_table_size: expected a size from 1MiB to 1GiB, "
		    "got \"2GiB\"");
	/* A ring smaller than the largest sample record would drop every sample. */
	CHECK_ERROR("sampling:\n  ringbuf_size: 64KiB\n",
		    "x.yaml:2:17: sampling.ringbuf_size: expected a power of two from 128KiB to "
		    "1GiB, got \"64KiB\"");
}

static void test_not_power_of_two(void)
{
	CHECK_ERROR("sampling:\n  stack_copy_size: 12KiB\n",
		    "x.yaml:2:20: sampling.stack_copy_size: expected a power of two from 1KiB to "
		    "64KiB, got \"12KiB\"");
	CHECK_ERROR("sampling:\n  ringbuf_size: 100000\n",
		    "x.yaml:2:17: sampling.ringbuf_size: expected a power of two from 128KiB to "
		    "1GiB, got \"100000\"");
}

static void test_bad_values(void)
{
	CHECK_ERROR("# the example from the documentation\n\n\n\n\nsampling:\n  rate: fast\n",
		    "x.yaml:7:9: sampling.rate: expected a size like 512KiB, got \"fast\"");
	CHECK_ERROR("sampling:\n  rate: 1.5MiB\n",
		    "x.yaml:2:9: sampling.rate: expected a size like 512KiB, got \"1.5MiB\"");
	CHECK_ERROR("profiles:\n  interval: soon\n",
		    "x.yaml:2:13: profiles.interval: expected a duration like 15s, got \"soon\"");
	CHECK_ERROR("sinks:\n  - type: directory\n    max_age: 7days\n",
		    "x.yaml:3:14: sinks[0].max_age: expected a duration like 7d, got \"7days\"");
	CHECK_ERROR(
	    "sinks:\n  - type: directory\n    max_total_size: lots\n",
	    "x.yaml:3:21: sinks[0].max_total_size: expected a size like 1GiB, got \"lots\"");
	CHECK_ERROR("profiles:\n  pid_label: maybe\n",
		    "x.yaml:2:14: profiles.pid_label: expected true or false, got \"maybe\"");
	CHECK_ERROR("profiles:\n  pid_label: 1\n",
		    "x.yaml:2:14: profiles.pid_label: expected true or false, got \"1\"");
	CHECK_ERROR(
	    "sampling:\n  unwind: lbr\n",
	    "x.yaml:2:11: sampling.unwind: expected an unwind mode (auto, kernel, dwarf or fp), got "
	    "\"lbr\"");
	CHECK_ERROR(
	    "log:\n  level: verbose\n",
	    "x.yaml:2:10: log.level: expected a log level (error, warn, info or debug), got "
	    "\"verbose\"");
	/* Long values are cut in the message. */
	CHECK_ERROR(
	    "log:\n  level: "
	    "aaaaaaaaaabbbbbbbbbbccccccccccddddddddddeeeeeeeeeeffffffffffgggggggggg\n",
	    "x.yaml:2:10: log.level: expected a log level (error, warn, info or debug), got "
	    "\"aaaaaaaaaabbbbbbbbbbccccccccccddddddddddeeeeeeeeeeffffffffff...\"");
}

static void test_rule_errors(void)
{
	CHECK_ERROR("targets:\n  include:\n    - process_name: nginx\n    - service: checkout\n",
		    "x.yaml:4:7: targets.include[1]: a rule needs at least one of executable, "
		    "process_name, cgroup, systemd_unit, namespace, pod_label, container");
	CHECK_ERROR("targets:\n  include:\n    - {}\n",
		    "x.yaml:3:7: targets.include[0]: a rule needs at least one of executable, "
		    "process_name, cgroup, systemd_unit, namespace, pod_label, container");
	CHECK_ERROR("targets:\n  exclude:\n    - process_name: bash\n      service: shell\n",
		    "x.yaml:4:7: targets.exclude[0].service: not allowed in an exclude rule "
		    "(excluded processes are never profiled, so they have no service)");
	CHECK_ERROR("targets:\n  exclude:\n    - process_name: bash\n      inuse: true\n",
		    "x.yaml:4:7: targets.exclude[0].inuse: not allowed in an exclude rule "
		    "(excluded processes are never profiled, so they have no in-use profile)");
	CHECK_ERROR("targets:\n  exclude:\n    - process_name: bash\n      max_cpu_percent: 5\n",
		    "x.yaml:4:7: targets.exclude[0].max_cpu_percent: not allowed in an exclude "
		    "rule (excluded processes are never profiled, so they have no probes and no "
		    "overhead to budget)");
	CHECK_ERROR("targets:\n  include:\n    - {process_name: x, inuse: maybe}\n",
		    "x.yaml:3:32: targets.include[0].inuse: expected true or false, got \"maybe\"");
	CHECK_ERROR("targets:\n  include:\n    - cgroup: system.slice\n",
		    "x.yaml:3:15: targets.include[0].cgroup: expected an absolute path like "
		    "/system.slice/app.service, got \"system.slice\"");
	CHECK_ERROR("targets:\n  include:\n    - executable: \"\"\n",
		    "x.yaml:3:19: targets.include[0].executable: expected a non-empty glob like "
		    "/usr/bin/redis-*, got \"\"");
	CHECK_ERROR("targets:\n  include:\n    - {process_name: x, service: ''}\n",
		    "x.yaml:3:34: targets.include[0].service: expected a service name of 1 to 128 "
		    "bytes, got \"\"");
	CHECK_ERROR("targets:\n  include:\n    -\n",
		    "x.yaml:3:6: targets.include[0]: expected a rule (a mapping like process_name: "
		    "nginx), got nothing");
}

static void test_long_service_name(void)
{
	char yaml[512], name[130], expected[512];

	memset(name, 's', 129);
	name[129] = '\0';
	snprintf(yaml, sizeof(yaml), "targets:\n  include:\n    - {process_name: x, service: %s}\n",
		 name);
	snprintf(expected, sizeof(expected),
		 "x.yaml:3:34: targets.include[0].service: expected a service name of 1 to 128 "
		 "bytes, got \"%.60s...\"",
		 name);
	CHECK_ERROR(yaml, expected);
	/* 128 bytes is fine. */
	name[128] = '\0';
	snprintf(yaml, sizeof(yaml), "targets:\n  include:\n    - {process_name: x, service: %s}\n",
		 name);
	struct agent_config *c = load(yaml);
	if (c) {
		CHECK_EQ_U64(strlen(c->targets.include[0].service), 128);
		config_free(c);
	}
}

static void test_label_errors(void)
{
	char yaml[1024];
	size_t used;

	CHECK_ERROR(
	    "profiles:\n  labels:\n    service_name: x\n",
	    "x.yaml:3:5: profiles.labels: expected a label name other than service_name, "
	    "hostname and pid (the agent sets those), got \"service_name\"");
	CHECK_ERROR(
	    "profiles:\n  labels:\n    env: prod\n    hostname: x\n",
	    "x.yaml:4:5: profiles.labels: expected a label name other than service_name, "
	    "hostname and pid (the agent sets those), got \"hostname\"");
	CHECK_ERROR("profiles:\n  labels:\n    pid: x\n",
		    "x.yaml:3:5: profiles.labels: expected a label name other than service_name, "
		    "hostname and pid (the agent sets those), got \"pid\"");
	CHECK_ERROR("profiles:\n  labels:\n    __meta: x\n",
		    "x.yaml:3:5: profiles.labels: expected a label name not starting with __ "
		    "(reserved), got \"__meta\"");
	CHECK_ERROR("profiles:\n  labels:\n    9env: x\n",
		    "x.yaml:3:5: profiles.labels: expected a label name matching "
		    "[a-zA-Z_][a-zA-Z0-9_]*, got \"9env\"");
	CHECK_ERROR("profiles:\n  labels:\n    my-env: x\n",
		    "x.yaml:3:5: profiles.labels: expected a label name matching "
		    "[a-zA-Z_][a-zA-Z0-9_]*, got \"my-env\"");
	CHECK_ERROR(
	    "profiles:\n  labels:\n    env: \"\"\n",
	    "x.yaml:3:10: profiles.labels.env: expected a label value (a non-empty string), "
	    "got \"\"");
	CHECK_ERROR("profiles:\n  labels:\n    env:\n",
		    "x.yaml:3:9: profiles.labels.env: expected a label value (a non-empty string), "
		    "got nothing");
	CHECK_ERROR(
	    "profiles:\n  labels:\n    env: [a]\n",
	    "x.yaml:3:10: profiles.labels.env: expected a label value (a non-empty string), "
	    "got a list");

	used = snprintf(yaml, sizeof(yaml), "profiles:\n  labels:\n");
	for (int i = 0; i < CONFIG_MAX_STATIC_LABELS + 1; i++)
		used += snprintf(yaml + used, sizeof(yaml) - used, "    l%d: v\n", i);
	CHECK_ERROR(yaml, "x.yaml:3:5: profiles.labels: expected at most 16 labels, got 17");

	/* Exactly the maximum is fine. */
	used = snprintf(yaml, sizeof(yaml), "profiles:\n  labels:\n");
	for (int i = 0; i < CONFIG_MAX_STATIC_LABELS; i++)
		used += snprintf(yaml + used, sizeof(yaml) - used, "    l%d: v%d\n", i, i);
	struct agent_config *c = load(yaml);
	if (c) {
		CHECK_EQ_U64(c->n_labels, CONFIG_MAX_STATIC_LABELS);
		CHECK_STR(c->labels[15].key, "l15");
		CHECK_STR(c->labels[15].value, "v15");
		config_free(c);
	}
}

static void test_sink_errors(void)
{
	CHECK_ERROR("sinks: []\n",
		    "x.yaml:1:8: sinks: expected at least one sink, got an empty list");
	CHECK_ERROR("sinks:\n  - type: s3\n",
		    "x.yaml:2:11: sinks[0].type: expected a sink type (directory, pyroscope or parca), got \"s3\"");
	CHECK_ERROR("sinks:\n  - type: directory\n    path: profiles\n",
		    "x.yaml:3:11: sinks[0].path: expected an absolute path like "
		    "/var/lib/allocscope/profiles, got \"profiles\"");
	CHECK_ERROR("sinks:\n  - type: directory\n  - path: /srv/p\n",
		    "x.yaml:3:5: sinks[1].type: expected a sink type (directory, pyroscope or parca), got nothing (the "
		    "key is required)");
}

/* kubernetes: the node name from the file or from NODE_NAME (as the DaemonSet passes it), the
 * hostname that follows it, and what is refused. */
static void test_kubernetes(void)
{
	struct agent_config *c;

	/* Off: NODE_NAME is harmless, the hostname stays the machine's. */
	setenv("NODE_NAME", "node-env", 1);
	c = load("kubernetes:\n  refresh_interval: 5s\n");
	if (c) {
		CHECK(!c->kubernetes.enabled);
		CHECK_EQ_U64(c->kubernetes.refresh_interval_ms, 5000);
		CHECK_STR(c->hostname, machine_hostname());
		config_free(c);
	}
	/* On: the node name comes from NODE_NAME, and so does the hostname label (a pod's own
	 * host name is the pod's name). */
	c = load("kubernetes:\n  enabled: true\n");
	if (c) {
		CHECK(c->kubernetes.enabled);
		CHECK_STR(c->kubernetes.node_name, "node-env");
		CHECK_STR(c->hostname, "node-env");
		CHECK(c->kubernetes.api_server == NULL);
		CHECK_STR(c->kubernetes.token_path, KUBE_PODS_DEFAULT_TOKEN_PATH);
		config_free(c);
	}
	/* The file's node name wins over NODE_NAME; "" means NODE_NAME; an explicit hostname
	 * stays. A trailing slash of api_server is the pod cache's to drop. */
	c = load("kubernetes:\n  enabled: yes\n  node_name: node-file\n"
		 "  api_server: http://127.0.0.1:8001\nprofiles:\n  hostname: web\n");
	if (c) {
		CHECK_STR(c->kubernetes.node_name, "node-file");
		CHECK_STR(c->kubernetes.api_server, "http://127.0.0.1:8001");
		CHECK_STR(c->hostname, "web");
		config_free(c);
	}
	c = load("kubernetes: {enabled: true, node_name: ''}\n");
	if (c) {
		CHECK_STR(c->kubernetes.node_name, "node-env");
		config_free(c);
	}
	setenv("NODE_NAME", "Node_1", 1);
	CHECK_ERROR("kubernetes:\n  enabled: true\n",
		    "x.yaml:2:12: kubernetes.node_name: NODE_NAME in the agent's environment, "
		    "\"Node_1\", is not a Kubernetes node name (lowercase letters, digits, '-' and "
		    "'.'): set kubernetes.node_name");
	unsetenv("NODE_NAME");
	CHECK_ERROR("kubernetes:\n  enabled: true\n",
		    "x.yaml:2:12: kubernetes.node_name: required with kubernetes.enabled: set it, "
		    "or NODE_NAME in the agent's environment (the DaemonSet sets it from "
		    "spec.nodeName)");
	CHECK_ERROR("kubernetes:\n  enabled: true\n  node_name: \"\"\n",
		    "x.yaml:3:14: kubernetes.node_name: required with kubernetes.enabled: set it, "
		    "or NODE_NAME in the agent's environment (the DaemonSet sets it from "
		    "spec.nodeName)");
	CHECK_ERROR("kubernetes:\n  node_name: -node\n",
		    "x.yaml:2:14: kubernetes.node_name: expected a Kubernetes node name (lowercase "
		    "letters, digits, '-' and '.') like node-1, got \"-node\"");
	CHECK_ERROR("kubernetes:\n  api_server: kubernetes.default.svc\n",
		    "x.yaml:2:15: kubernetes.api_server: expected an http:// or https:// URL like "
		    "https://kubernetes.default.svc, got \"kubernetes.default.svc\": the scheme must "
		    "be http:// or https://");
	CHECK_ERROR("kubernetes:\n  refresh_interval: 500ms\n",
		    "x.yaml:2:21: kubernetes.refresh_interval: expected a duration from 1s to 1h, "
		    "got \"500ms\"");
	CHECK_ERROR("kubernetes:\n  token_path: token\n",
		    "x.yaml:2:15: kubernetes.token_path: expected an absolute path like "
		    "/var/run/secrets/kubernetes.io/serviceaccount/token (or \"\" for none), got "
		    "\"token\"");
	CHECK_ERROR("kubernetes:\n  ca_path: \"\"\n",
		    "x.yaml:2:12: kubernetes.ca_path: expected an absolute path like "
		    "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt, got \"\"");
	CHECK_ERROR("kubernetes:\n  enabled: true\n  node: n\n",
		    "x.yaml:3:3: kubernetes.node: unknown key (known keys under kubernetes: "
		    "enabled, node_name, api_server, refresh_interval, token_path, ca_path)");

	/* The agent labels pods' profiles with these: a static label of the same name would
	 * give them two values. Without Kubernetes they are ordinary names. */
	CHECK_ERROR("kubernetes: {enabled: true, node_name: n1}\nprofiles:\n  labels:\n"
		    "    env: prod\n    node: rack-4\n",
		    "x.yaml:5:5: profiles.labels: expected a label name other than namespace, pod, "
		    "container and node with kubernetes.enabled (the agent sets those on the "
		    "profiles of pods), got \"node\"");
	c = load("profiles:\n  labels:\n    node: rack-4\n    namespace: x\n");
	if (c) {
		CHECK_EQ_U64(c->n_labels, 2);
		config_free(c);
	}
}

/* Pod matchers: their form, and that they need the Kubernetes API. */
static void test_pod_rules(void)
{
	static const char *const good_labels[] = {
		"app=web",
		"app=",
		"app.kubernetes.io/name=check*",
		"team_name=a=b",
		"example.com/Tier-2=[ab]*",
		"a=*",
	};
	static const char *const bad_labels[] = {
		"app",
		"=web",
		"-app=web",
		"app-=web",
		"Example.com/app=x",
		"/app=x",
		"example.com/=x",
		"app name=x",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=x",
	};
	char yaml[512], expected[512];
	struct agent_config *c;

	for (size_t i = 0; i < sizeof(good_labels) / sizeof(good_labels[0]); i++) {
		snprintf(yaml, sizeof(yaml),
			 "kubernetes: {enabled: true, node_name: n1}\n"
			 "targets:\n  include:\n    - pod_label: \"%s\"\n",
			 good_labels[i]);
		c = load(yaml);
		if (!c)
			continue;
		CHECK_STR(c->targets.include[0].pod_label, good_labels[i]);
		config_free(c);
	}
	for (size_t i = 0; i < sizeof(bad_labels) / sizeof(bad_labels[0]); i++) {
		snprintf(yaml, sizeof(yaml),
			 "kubernetes: {enabled: true, node_name: n1}\n"
			 "targets:\n  include:\n    - pod_label: \"%s\"\n",
			 bad_labels[i]);
		snprintf(expected, sizeof(expected),
			 "x.yaml:4:18: targets.include[0].pod_label: expected a pod label KEY=VALUE "
			 "(VALUE may be a glob) like app.kubernetes.io/name=checkout, got \"%.60s%s\"",
			 bad_labels[i], strlen(bad_labels[i]) > 60 ? "..." : "");
		CHECK_ERROR(yaml, expected);
	}
	CHECK_ERROR("kubernetes: {enabled: true, node_name: n1}\n"
		    "targets:\n  include:\n    - namespace: \"\"\n",
		    "x.yaml:4:18: targets.include[0].namespace: expected a non-empty glob like "
		    "shop, got \"\"");
	/* A rule of pod matchers alone is a whole rule; `service:` may name it. */
	c = load("kubernetes: {enabled: true, node_name: n1}\n"
		 "targets:\n  include:\n    - {service: shop, namespace: shop}\n"
		 "  exclude:\n    - container: istio-proxy\n");
	if (c) {
		CHECK_STR(c->targets.include[0].service, "shop");
		CHECK_STR(c->targets.exclude[0].container, "istio-proxy");
		config_free(c);
	}

	/* Without the API there is nothing to match them against: refused, pointing at the
	 * matcher, wherever the kubernetes section is (or is not). */
	CHECK_ERROR("targets:\n  include:\n    - process_name: nginx\n    - namespace: shop\n",
		    "x.yaml:4:7: targets.include[1].namespace: matches pod metadata from the "
		    "Kubernetes API: set kubernetes.enabled: true (docs/kubernetes.md)");
	CHECK_ERROR("targets:\n  exclude:\n    - {process_name: sh, container: app}\n"
		    "kubernetes:\n  enabled: false\n",
		    "x.yaml:3:26: targets.exclude[0].container: matches pod metadata from the "
		    "Kubernetes API: set kubernetes.enabled: true (docs/kubernetes.md)");
	CHECK_ERROR("targets:\n  include:\n    - pod_label: app=web\n",
		    "x.yaml:3:7: targets.include[0].pod_label: matches pod metadata from the "
		    "Kubernetes API: set kubernetes.enabled: true (docs/kubernetes.md)");
}

/* A metrics endpoint beyond loopback is an explicit decision. */
static void test_metrics_allow_remote(void)
{
	static const char *const loopback[] = {
		"127.0.0.1:9464", "127.8.9.1:0", "localhost:9464", "[::1]:9464",
		"[::ffff:127.0.0.1]:9464",
	};
	static const char *const remote[] = { "0.0.0.0:9464", "10.1.2.3:80", "[::]:9464",
					      "[::ffff:10.0.0.1]:9464" };
	char yaml[256], expected[512];
	struct agent_config *c;

	for (size_t i = 0; i < sizeof(loopback) / sizeof(loopback[0]); i++) {
		snprintf(yaml, sizeof(yaml), "metrics:\n  listen: \"%s\"\n", loopback[i]);
		c = load(yaml);
		if (c) {
			CHECK_STR(c->metrics_listen, loopback[i]);
			config_free(c);
		}
	}
	for (size_t i = 0; i < sizeof(remote) / sizeof(remote[0]); i++) {
		snprintf(yaml, sizeof(yaml), "metrics:\n  listen: \"%s\"\n", remote[i]);
		snprintf(expected, sizeof(expected),
			 "x.yaml:2:11: metrics.listen: \"%s\" is not a loopback address, so other "
			 "machines could read the metrics: listen on 127.0.0.1:PORT or [::1]:PORT, "
			 "or set metrics.allow_remote: true",
			 remote[i]);
		CHECK_ERROR(yaml, expected);
		snprintf(yaml, sizeof(yaml), "metrics:\n  allow_remote: true\n  listen: \"%s\"\n",
			 remote[i]);
		c = load(yaml);
		if (c) {
			CHECK(c->metrics_allow_remote);
			CHECK_STR(c->metrics_listen, remote[i]);
			config_free(c);
		}
	}
	CHECK_ERROR("metrics:\n  allow_remote: sometimes\n",
		    "x.yaml:2:17: metrics.allow_remote: expected true or false, got \"sometimes\"");
}

/* Every error path frees what it built; valgrind or ASan turns a leak here into a failure. */
static void test_no_output_without_error_buffer(void)
{
	struct agent_config *c = (struct agent_config *)1;

	CHECK(config_load_string("sinks: []", 9, "x.yaml", &c, NULL, 0) == -EINVAL);
	CHECK(c == NULL);
	CHECK(config_load_file("/nonexistent", &c, NULL, 0) == -ENOENT);
	/* Partially built rules, labels and sinks are freed on the error. */
	CHECK(config_load_string(every_key, sizeof(every_key) - 1, "x.yaml", &c, err,
				 sizeof(err)) == 0);
	config_free(c);
	CHECK_ERROR("targets:\n  include:\n    - {process_name: a, service: b}\n    - {exe: c}\n"
		    "profiles:\n  labels: {a: b}\n",
		    "x.yaml:4:8: targets.include[1].exe: unknown key (known keys in a rule: "
		    "service, executable, process_name, cgroup, systemd_unit, namespace, pod_label, "
		    "container, version, repository, git_ref, root_path, inuse, max_cpu_percent)");
	CHECK_ERROR("profiles:\n  labels: {a: b, c: d, service_name: e}\n",
		    "x.yaml:2:24: profiles.labels: expected a label name other than service_name, "
		    "hostname and pid (the agent sets those), got \"service_name\"");
	CHECK_ERROR("sinks:\n  - {type: directory, path: /a}\n  - {type: directory, path: b}\n",
		    "x.yaml:3:29: sinks[1].path: expected an absolute path like "
		    "/var/lib/allocscope/profiles, got \"b\"");
}

/* The command line and the file are one vocabulary: every flag that sets a key takes and
 * refuses exactly what the file's key takes and refuses, into the same field. */
static void test_flags_are_the_file_keys(void)
{
	static const struct {
		const char *flag, *yaml_section, *yaml_key, *values[8];
	} cases[] = {
		{ "sample-rate", "sampling", "rate",
		  { "1", "1B", "4GiB", "4097MiB", "0", "fast", "1.5MiB", NULL } },
		{ "ringbuf-size", "sampling", "ringbuf_size",
		  { "64KiB", "128KiB", "1GiB", "2GiB", "100000", "256MiB", NULL } },
		{ "stack-copy-size", "sampling", "stack_copy_size",
		  { "512", "1KiB", "64KiB", "128KiB", "3000", "16KiB", NULL } },
		{ "unwind", "sampling", "unwind", { "auto", "dwarf", "fp", "lbr", "", NULL } },
		{ "log-level", "log", "level", { "debug", "error", "loud", "", NULL } },
		{ "debuginfod", "symbolize", "debuginfod_urls",
		  { "https://debuginfod.debian.net", "", "a b", NULL } },
		{ "label-max-values", "sample_labels", "max_values",
		  { "1", "100000", "0", "100001", "x", NULL } },
		{ "label-max-value-bytes", "sample_labels", "max_value_bytes",
		  { "8", "1024", "7", "1025", "64KiB", NULL } },
		{ "max-overhead", "overhead", "max_cpu_percent",
		  { "5", "0.5%", "none", "0", "200", "x", NULL } },
		{ "context", "context", "enabled", { "true", "false", "off", "maybe", "", NULL } },
		{ "context-trace-ids", "context", "trace_ids", { "true", "no", "2", NULL } },
		{ "context-max-record-bytes", "context", "max_record_bytes",
		  { "0", "256", "257", "64KiB", "-1", NULL } },
	};
	size_t n_flags = 0;
	char short_flag;

	while (config_flag(n_flags, &short_flag))
		n_flags++;
	CHECK_EQ_U64(n_flags, sizeof(cases) / sizeof(cases[0]));
	CHECK_STR(config_flag(0, &short_flag), "sample-rate");
	CHECK(short_flag == 'r');
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (size_t v = 0; cases[i].values[v]; v++) {
			const char *value = cases[i].values[v];
			struct agent_config *flagged = NULL, *filed = NULL;
			char yaml[256], flag_err[512];
			int flag_ret, file_ret;

			CHECK(config_defaults(&flagged) == 0);
			if (!flagged)
				return;
			flag_ret = config_set_flag(flagged, cases[i].flag, value, flag_err,
						   sizeof(flag_err));
			snprintf(yaml, sizeof(yaml), "%s:\n  %s: \"%s\"\n", cases[i].yaml_section,
				 cases[i].yaml_key, value);
			file_ret = config_load_string(yaml, strlen(yaml), "x.yaml", &filed, err,
						      sizeof(err));
			if ((flag_ret == 0) != (file_ret == 0))
				fprintf(stderr, "  --%s %s: flag %d (%s), file %d (%s)\n",
					cases[i].flag, value, flag_ret, flag_ret ? flag_err : "",
					file_ret, file_ret ? err : "");
			CHECK((flag_ret == 0) == (file_ret == 0));
			if (flag_ret == 0 && file_ret == 0) {
				CHECK_EQ_U64(flagged->sampling.sample_rate, filed->sampling.sample_rate);
				CHECK_EQ_U64(flagged->sampling.ringbuf_bytes,
					     filed->sampling.ringbuf_bytes);
				CHECK_EQ_U64(flagged->sampling.stack_copy_bytes,
					     filed->sampling.stack_copy_bytes);
				CHECK_EQ_U64(flagged->sampling.unwind, filed->sampling.unwind);
				CHECK_EQ_U64(flagged->log_level, filed->log_level);
				CHECK_STR(flagged->sampling.debuginfod_urls ?: "(null)",
					  filed->sampling.debuginfod_urls ?: "(null)");
			} else if (flag_ret) {
				/* A message a user of the flag can act on: what, the text, the
				 * expected form. */
				CHECK(flag_ret == -EINVAL);
				CHECK(strncmp(flag_err, "invalid ", 8) == 0);
				CHECK(strstr(flag_err, "expected ") != NULL);
			}
			config_free(flagged);
			config_free(filed);
		}
	}
}

static void test_flag_messages(void)
{
	struct agent_config *c = NULL;
	char msg[512];

	CHECK(config_defaults(&c) == 0);
	if (!c)
		return;
	CHECK(config_set_flag(c, "ringbuf-size", "64KiB", msg, sizeof(msg)) == -EINVAL);
	CHECK_STR(msg, "invalid ring buffer size '64KiB': expected a power of two from 128.00 KiB "
		       "to 1.00 GiB (the smallest holds one sample with the largest stack copy), "
		       "e.g. 16MiB");
	CHECK(config_set_flag(c, "sample-rate", "12XB", msg, sizeof(msg)) == -EINVAL);
	CHECK_STR(msg, "invalid sample rate '12XB': expected a size from 1 B to 4.00 GiB, e.g. "
		       "512KiB");
	CHECK(config_set_flag(c, "unwind", "lbr", msg, sizeof(msg)) == -EINVAL);
	CHECK_STR(msg, "invalid --unwind 'lbr': expected an unwind mode (auto, kernel, dwarf or fp)");
	CHECK(config_set_flag(c, "pid", "1", msg, sizeof(msg)) == -ENOENT);
	CHECK(config_set_flag(c, "sample-rate", "1MiB", msg, sizeof(msg)) == 0);
	CHECK_EQ_U64(c->sampling.sample_rate, 1024 * 1024);
	config_free(c);
}

/* Issue 15: versions and code labels per rule, the version label's name, sample label
 * limits; each mistake named with its position. */
static void test_version_and_sample_label_keys(void)
{
	struct agent_config *c;
	const char *yaml =
	    "targets:\n"
	    "  include:\n"
	    "    - executable: /usr/bin/shop\n"
	    "      version: \"2.14\"\n"
	    "      repository: https://github.com/acme/shop\n"
	    "      git_ref: v2.14\n"
	    "      root_path: services/shop\n"
	    "profiles:\n"
	    "  version_label: release\n"
	    "sample_labels:\n"
	    "  keys: [endpoint, tenant]\n"
	    "  max_values: 5\n"
	    "  max_value_bytes: 16\n";

	c = load(yaml);
	if (c) {
		CHECK_STR(c->targets.include[0].version, "2.14");
		CHECK_STR(c->targets.include[0].repository, "https://github.com/acme/shop");
		CHECK_STR(c->targets.include[0].git_ref, "v2.14");
		CHECK_STR(c->targets.include[0].root_path, "services/shop");
		CHECK_STR(c->version_label, "release");
		CHECK_EQ_U64(c->sample_labels.n_keys, 2);
		CHECK_STR(c->sample_labels.keys[1], "tenant");
		CHECK_EQ_U64(c->sample_labels.max_values, 5);
		CHECK_EQ_U64(c->sample_labels.max_value_bytes, 16);
		config_free(c);
	}
	c = load("profiles:\n  version_label: \"\"\n");
	if (c)
		CHECK_STR(c->version_label, "");
	config_free(c);
	CHECK_ERROR("profiles:\n  version_label: service-version\n",
		    "x.yaml:2:18: profiles.version_label: expected a label name matching "
		    "[a-zA-Z_][a-zA-Z0-9_]*, got \"service-version\"");
	CHECK_ERROR("profiles:\n  version_label: service_name\n",
		    "x.yaml:2:18: profiles.version_label: expected a label name other than "
		    "service_name, hostname and pid (the agent sets those), got \"service_name\"");
	CHECK_ERROR("targets:\n  exclude:\n    - process_name: a\n      version: \"1\"\n",
		    "x.yaml:4:7: targets.exclude[0].version: not allowed in an exclude rule "
		    "(excluded processes are never profiled, so they have no profiles to label)");
	CHECK_ERROR("targets:\n  include:\n    - version: \"1\"\n",
		    "x.yaml:3:7: targets.include[0]: a rule needs at least one of executable, "
		    "process_name, cgroup, systemd_unit, namespace, pod_label, container");
	CHECK_ERROR("sample_labels:\n  keys: [endpoint, http.route]\n",
		    "x.yaml:2:20: sample_labels.keys[1]: expected a label name matching "
		    "[a-zA-Z_][a-zA-Z0-9_]*, got \"http.route\"");
	CHECK_ERROR("sample_labels:\n  keys: [a, a]\n",
		    "x.yaml:2:13: sample_labels.keys[1]: expected each label name once, got \"a\" "
		    "twice");
	CHECK_ERROR("sample_labels:\n  keys: endpoint\n",
		    "x.yaml:2:9: sample_labels.keys: expected a list of label names like "
		    "[endpoint, tenant], got \"endpoint\"");
	CHECK_ERROR("sample_labels:\n  max_values: 0\n",
		    "x.yaml:2:15: sample_labels.max_values: expected a whole number from 1 to "
		    "100000, got \"0\"");
	CHECK_ERROR("sample_labels:\n  max_keys: 33\n",
		    "x.yaml:2:13: sample_labels.max_keys: expected a whole number from 1 to 32, "
		    "got \"33\"");
}

/* The overhead budget: host-wide, per rule, and the values refused. */
static void test_overhead_budget(void)
{
	struct agent_config *c = load("overhead:\n  max_cpu_percent: 2.5%\n"
				      "targets:\n  include:\n    - process_name: redis*\n"
				      "      max_cpu_percent: 20\n    - process_name: nginx\n"
				      "      max_cpu_percent: none\n    - process_name: app\n");

	CHECK(c != NULL);
	if (c) {
		CHECK(c->overhead_max_cpu_percent == 2.5);
		CHECK(c->targets.n_include == 3);
		CHECK(c->targets.include[0].max_cpu_percent == 20);
		CHECK(c->targets.include[1].max_cpu_percent == -1);
		CHECK(c->targets.include[2].max_cpu_percent == 0); /* the host-wide one */
		config_free(c);
	}
	c = load("");
	CHECK(c && c->overhead_max_cpu_percent < 0); /* none by default */
	config_free(c);
	CHECK_ERROR("overhead:\n  max_cpu_percent: 0\n",
		    "x.yaml:2:20: overhead.max_cpu_percent: expected a percentage from 0.01 to 100 "
		    "like 1 (or none), got \"0\"");
	CHECK_ERROR("overhead:\n  max_cpu_percent: 150%\n",
		    "x.yaml:2:20: overhead.max_cpu_percent: expected a percentage from 0.01 to 100 "
		    "like 1 (or none), got \"150%\"");
	CHECK_ERROR("overhead:\n  max_cpu_percent: -5\n",
		    "x.yaml:2:20: overhead.max_cpu_percent: expected a percentage from 0.01 to 100 "
		    "like 1 (or none), got \"-5\"");
	CHECK_ERROR("overhead:\n  max_cpu_percent: 5 percent\n",
		    "x.yaml:2:20: overhead.max_cpu_percent: expected a percentage from 0.01 to 100 "
		    "like 1 (or none), got \"5 percent\"");
	CHECK_ERROR("targets:\n  include:\n    - process_name: redis\n"
		    "      max_cpu_percent: 1e3\n",
		    "x.yaml:4:24: targets.include[0].max_cpu_percent: expected a percentage from "
		    "0.01 to 100 like 5 (or none), got \"1e3\"");
}

int main(void)
{
	/* The agent reads it as kubernetes.node_name's default; the cases set it themselves. */
	unsetenv("NODE_NAME");
	RUN(test_defaults);
	RUN(test_reference_file_is_the_defaults);
	RUN(test_empty_means_defaults);
	RUN(test_missing_file);
	RUN(test_file_errors_name_the_file);
	RUN(test_every_key);
	RUN(test_value_forms);
	RUN(test_empty_strings);
	RUN(test_aliases);
	RUN(test_tags_refused);
	RUN(test_shape_limits);
	RUN(test_rule_and_sink_counts);
	RUN(test_metrics_listen_form);
	RUN(test_syntax_errors);
	RUN(test_unknown_keys);
	RUN(test_duplicate_keys);
	RUN(test_wrong_kinds);
	RUN(test_missing_values);
	RUN(test_out_of_range);
	RUN(test_not_power_of_two);
	RUN(test_bad_values);
	RUN(test_rule_errors);
	RUN(test_long_service_name);
	RUN(test_label_errors);
	RUN(test_sink_errors);
	RUN(test_kubernetes);
	RUN(test_pod_rules);
	RUN(test_metrics_allow_remote);
	RUN(test_no_output_without_error_buffer);
	RUN(test_flags_are_the_file_keys);
	RUN(test_flag_messages);
	RUN(test_version_and_sample_label_keys);
	RUN(test_overhead_budget);
	return unit_summary("config");
}
