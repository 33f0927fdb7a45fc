/* The configuration of the Pyroscope and Parca sinks: every key read into place, the
 * defaults, and the exact message for each mistake an operator can make with them, position
 * included. Secrets written into the file are refused without being quoted back. */
#include <errno.h>
#include <stdlib.h>
#include <limits.h>
#include <stdio.h>
#include <unistd.h>

#include "unit.h"
#include "config/config.h"
#include "config_load.h"


#define PYRO  "sinks:\n  - type: pyroscope\n    url: https://p.example.com\n"
#define PARCA "sinks:\n  - type: parca\n    url: http://parca:7070\n"

static void test_every_push_key(void)
{
	struct agent_config *c = load("sinks:\n"
				      "  - type: pyroscope\n"
				      "    name: grafana-cloud\n"
				      "    url: https://profiles-prod-001.grafana.net/prefix/\n"
				      "    timeout: 30s\n"
				      "    queue_size: 10\n"
				      "    spool_dir: /var/lib/allocscope/spool/cloud\n"
				      "    spool_max_bytes: 2GiB\n"
				      "    shutdown_timeout: 0\n"
				      "    max_profile_size: 0\n"
				      "    max_samples: 5000\n"
				      "    max_profile_age: 2h\n"
				      "    max_attempts: 0\n"
				      "    max_backoff: 2m\n"
				      "    username: \"123456\"\n"
				      "    password_env: GRAFANA_CLOUD_TOKEN\n"
				      "    tenant: team-a\n"
				      "    headers:\n"
				      "      X-Team: memory\n"
				      "      x-b3-sampled: \"0\"\n"
				      "    ca_file: /etc/ssl/ca.pem\n"
				      "    cert_file: /etc/ssl/client.pem\n"
				      "    key_file: /etc/ssl/client-key.pem\n"
				      "    server_name: pyroscope.internal\n"
				      "    insecure_skip_verify: true\n"
				      "  - type: parca\n"
				      "    url: https://grpc.polarsignals.com:443\n"
				      "    token_file: /etc/allocscope/parca-token\n"
				      "  - type: directory\n");
	const struct sink_config *s;

	if (!c)
		return;
	CHECK_EQ_U64(c->n_sinks, 3);
	s = &c->sinks[0];
	CHECK_EQ_U64(s->type, SINK_TYPE_PYROSCOPE);
	CHECK_STR(s->name, "grafana-cloud");
	CHECK_STR(s->url, "https://profiles-prod-001.grafana.net/prefix/");
	CHECK_EQ_U64(s->timeout_ms, 30000);
	CHECK_EQ_U64(s->queue_size, 10);
	CHECK_STR(s->spool_dir, "/var/lib/allocscope/spool/cloud");
	CHECK_EQ_U64(s->spool_max_bytes, 2ull << 30);
	CHECK_EQ_U64(s->shutdown_timeout_ms, 0);
	CHECK_EQ_U64(s->max_profile_bytes, 0);
	CHECK_EQ_U64(s->max_samples, 5000);
	CHECK_EQ_U64(s->max_profile_age_ms, 2 * 3600 * 1000);
	CHECK_EQ_U64(s->max_attempts, 0);
	CHECK_EQ_U64(s->max_backoff_ms, 120000);
	CHECK_STR(s->username, "123456");
	CHECK(s->password_file == NULL);
	CHECK_STR(s->password_env, "GRAFANA_CLOUD_TOKEN");
	CHECK_STR(s->tenant, "team-a");
	CHECK_EQ_U64(s->n_headers, 2);
	if (s->n_headers == 2) {
		CHECK_STR(s->headers[0].name, "X-Team");
		CHECK_STR(s->headers[0].value, "memory");
		CHECK_STR(s->headers[1].name, "x-b3-sampled");
		CHECK_STR(s->headers[1].value, "0");
	}
	CHECK_STR(s->ca_file, "/etc/ssl/ca.pem");
	CHECK_STR(s->cert_file, "/etc/ssl/client.pem");
	CHECK_STR(s->key_file, "/etc/ssl/client-key.pem");
	CHECK_STR(s->server_name, "pyroscope.internal");
	CHECK(s->insecure_skip_verify);

	/* Everything a parca sink leaves out takes its default: Parca's own where its server's
	 * limits differ from Pyroscope's (64 MiB messages, no sample limit, no ingestion
	 * window). */
	s = &c->sinks[1];
	CHECK_EQ_U64(s->type, SINK_TYPE_PARCA);
	CHECK_STR(s->name, "parca");
	CHECK_EQ_U64(s->timeout_ms, 10000);
	CHECK_EQ_U64(s->queue_size, 64);
	CHECK(s->spool_dir == NULL);
	CHECK_EQ_U64(s->spool_max_bytes, 256ull << 20);
	CHECK_EQ_U64(s->shutdown_timeout_ms, 5000);
	CHECK_EQ_U64(s->max_profile_bytes, 32ull << 20);
	CHECK_EQ_U64(s->max_samples, 0);
	CHECK_EQ_U64(s->max_profile_age_ms, 24 * 3600 * 1000);
	CHECK_EQ_U64(s->max_attempts, 8);
	CHECK_EQ_U64(s->max_backoff_ms, 60000);
	CHECK_STR(s->token_file, "/etc/allocscope/parca-token");
	CHECK(s->username == NULL && s->token_env == NULL && s->n_headers == 0);
	CHECK(!s->insecure_skip_verify);
	CHECK_STR(c->sinks[2].name, "directory");
	config_free(c);

	/* Unnamed sinks of one type may repeat (they share their metrics); so may the default
	 * sink's name. */
	c = load(
	    "sinks:\n  - type: directory\n    path: /a\n  - type: directory\n    path: /b\n"
	    "  - {type: pyroscope, url: \"http://a\"}\n  - {type: pyroscope, url: \"http://b\"}\n");
	if (c) {
		CHECK_STR(c->sinks[1].name, "directory");
		CHECK_STR(c->sinks[3].name, "pyroscope");
		/* A pyroscope sink's defaults fit a default-configured Pyroscope: under its
		 * 2 MiB ingestion burst, at most 16,000 samples, inside its 1 h window. */
		CHECK_EQ_U64(c->sinks[2].max_profile_bytes, 1ull << 20);
		CHECK_EQ_U64(c->sinks[2].max_samples, 16000);
		CHECK_EQ_U64(c->sinks[2].max_profile_age_ms, 50 * 60 * 1000);
		CHECK_EQ_U64(c->sinks[2].max_attempts, 8);
	}
	config_free(c);
}

static void test_url_errors(void)
{
	CHECK_ERROR("sinks:\n  - type: pyroscope\n",
		    "x.yaml:2:5: sinks[0].url: expected an http:// or https:// URL like "
		    "https://profiles.example.com, got nothing (the key is required)");
	CHECK_ERROR("sinks:\n  - type: parca\n    url: ftp://x\n",
		    "x.yaml:3:10: sinks[0].url: expected an http:// or https:// URL like "
		    "https://profiles.example.com, got \"ftp://x\": the scheme must be http:// or "
		    "https://");
	CHECK_ERROR("sinks:\n  - type: parca\n    url: https://\n",
		    "x.yaml:3:10: sinks[0].url: expected an http:// or https:// URL like "
		    "https://profiles.example.com, got \"https://\": it names no host");
	/* Credentials in the URL are refused without repeating them. */
	CHECK_ERROR("sinks:\n  - type: pyroscope\n    url: https://u:hunter2@x.com\n",
		    "x.yaml:3:10: sinks[0].url: credentials in the URL are refused (use username "
		    "with password_file or password_env, or token_file or token_env)");
	CHECK_ERROR("sinks:\n  - type: pyroscope\n    url: https://x.com/?a=b\n",
		    "x.yaml:3:10: sinks[0].url: expected an http:// or https:// URL like "
		    "https://profiles.example.com, got \"https://x.com/?a=b\": a query or fragment "
		    "is not allowed (the push path is appended to the URL)");
	CHECK_ERROR("sinks:\n  - type: pyroscope\n    url: \"https://x .com\"\n",
		    "x.yaml:3:10: sinks[0].url: expected an http:// or https:// URL like "
		    "https://profiles.example.com, got \"https://x .com\": it holds a space or a "
		    "control character");
}

static void test_inline_secrets_refused(void)
{
	CHECK_ERROR(PYRO "    username: u\n    password: hunter2\n",
		    "x.yaml:5:15: sinks[0].password: secrets are not accepted in the configuration "
		    "file (it is often readable by everyone and copied around): put the password "
		    "in a file and set password_file, or name an environment variable holding it "
		    "in password_env");
	CHECK_ERROR(PARCA "    token: hunter2\n",
		    "x.yaml:4:12: sinks[0].token: secrets are not accepted in the configuration "
		    "file (it is often readable by everyone and copied around): put the token in a "
		    "file and set token_file, or name an environment variable holding it in "
		    "token_env");
	CHECK_ERROR(PARCA "    bearer_token: {a: b}\n",
		    "x.yaml:4:19: sinks[0].bearer_token: secrets are not accepted in the "
		    "configuration file (it is often readable by everyone and copied around): put "
		    "the token in a file and set token_file, or name an environment variable "
		    "holding it in token_env");
	/* Nor through headers. */
	CHECK_ERROR(PYRO "    headers:\n      authorization: Bearer x\n",
		    "x.yaml:5:7: sinks[0].headers: \"authorization\": credentials are not accepted "
		    "in the configuration file (use token_file or token_env, or username with "
		    "password_file or password_env)");
	CHECK_ERROR(PYRO "    headers:\n      Cookie: a=b\n",
		    "x.yaml:5:7: sinks[0].headers: \"Cookie\": credentials are not accepted in the "
		    "configuration file (use token_file or token_env, or username with "
		    "password_file or password_env)");
	/* The refused keys are not advertised among the known ones. */
	CHECK_ERROR(PARCA "    tokn: x\n",
		    "x.yaml:4:5: sinks[0].tokn: unknown key (known keys in a parca sink: type, "
		    "name, url, timeout, queue_size, spool_dir, spool_max_bytes, shutdown_timeout, "
		    "max_profile_size, max_samples, max_profile_age, max_attempts, max_backoff, "
		    "token_file, token_env, headers, ca_file, "
		    "cert_file, key_file, server_name, insecure_skip_verify)");
}

static void test_keys_of_other_types(void)
{
	CHECK_ERROR(PYRO "    path: /x\n",
		    "x.yaml:4:5: sinks[0].path: not a key of a pyroscope sink (it belongs to "
		    "directory sinks)");
	CHECK_ERROR("sinks:\n  - type: directory\n    spool_dir: /x\n",
		    "x.yaml:3:5: sinks[0].spool_dir: not a key of a directory sink (it belongs to "
		    "pyroscope and parca sinks)");
	CHECK_ERROR(PARCA "    tenant: a\n",
		    "x.yaml:4:5: sinks[0].tenant: not a key of a parca sink (it belongs to "
		    "directory or pyroscope sinks)");
	CHECK_ERROR(PARCA "    username: a\n",
		    "x.yaml:4:5: sinks[0].username: not a key of a parca sink (it belongs to "
		    "directory or pyroscope sinks)");
	/* The type is read first, wherever it is written. */
	CHECK_ERROR("sinks:\n  - url: https://x\n    type: directory\n",
		    "x.yaml:2:5: sinks[0].url: not a key of a directory sink (it belongs to "
		    "pyroscope and parca sinks)");
	CHECK_ERROR("sinks:\n  - url: https://x\n",
		    "x.yaml:2:5: sinks[0].type: expected a sink type (directory, pyroscope or "
		    "parca), got nothing (the key is required)");
	CHECK_ERROR("sinks:\n  - type: [pyroscope]\n",
		    "x.yaml:2:11: sinks[0].type: expected a sink type (directory, pyroscope or "
		    "parca), got a list");
}

static void test_credential_combinations(void)
{
	CHECK_ERROR(PYRO "    username: u\n",
		    "x.yaml:4:5: sinks[0].username: basic authentication needs password_file or "
		    "password_env too");
	CHECK_ERROR(PYRO "    password_file: /p\n",
		    "x.yaml:4:5: sinks[0].password_file: a password needs a username");
	CHECK_ERROR(PYRO "    username: u\n    password_file: /p\n    password_env: P\n",
		    "x.yaml:6:5: sinks[0].password_env: give password_file or password_env, not "
		    "both");
	CHECK_ERROR(PARCA "    token_file: /t\n    token_env: T\n",
		    "x.yaml:5:5: sinks[0].token_env: give token_file or token_env, not both");
	CHECK_ERROR(PYRO "    username: u\n    password_env: P\n    token_env: T\n",
		    "x.yaml:6:5: sinks[0].token_env: choose basic authentication (username) or a "
		    "bearer token, not both");
	CHECK_ERROR(PYRO "    username: \"a:b\"\n    password_env: P\n",
		    "x.yaml:4:5: sinks[0].username: expected a user name without ':' (basic "
		    "authentication cannot carry one)");
	CHECK_ERROR(PYRO "    username: \"\"\n",
		    "x.yaml:4:15: sinks[0].username: expected one line of text like 123456, got "
		    "\"\"");
	CHECK_ERROR(PYRO "    token_env: 1TOKEN\n",
		    "x.yaml:4:16: sinks[0].token_env: expected an environment variable name like "
		    "PARCA_TOKEN, got \"1TOKEN\"");
	CHECK_ERROR(PYRO "    token_file: token.txt\n",
		    "x.yaml:4:17: sinks[0].token_file: expected an absolute path like "
		    "/etc/allocscope/token, got \"token.txt\"");
	CHECK_ERROR(PYRO "    tenant: \"a\\nb\"\n",
		    "x.yaml:4:13: sinks[0].tenant: expected one line of text like team-a, got "
		    "\"a?b\"");
}

static void test_tls_errors(void)
{
	CHECK_ERROR(PARCA "    ca_file: /ca.pem\n",
		    "x.yaml:4:5: sinks[0].ca_file: only applies to an https:// url");
	CHECK_ERROR(PARCA "    server_name: parca.internal\n",
		    "x.yaml:4:5: sinks[0].server_name: only applies to an https:// url");
	CHECK_ERROR(PARCA "    insecure_skip_verify: yes\n",
		    "x.yaml:4:5: sinks[0].insecure_skip_verify: only applies to an https:// url");
	CHECK_ERROR(PYRO "    cert_file: /c.pem\n",
		    "x.yaml:4:5: sinks[0].cert_file: a client certificate needs both cert_file and "
		    "key_file");
	CHECK_ERROR(PYRO "    key_file: /k.pem\n",
		    "x.yaml:4:5: sinks[0].key_file: a client certificate needs both cert_file and "
		    "key_file");
	CHECK_ERROR(PYRO "    insecure_skip_verify: maybe\n",
		    "x.yaml:4:27: sinks[0].insecure_skip_verify: expected true or false, got "
		    "\"maybe\"");
}

static void test_header_errors(void)
{
	CHECK_ERROR(PYRO "    headers:\n      \"X Team\": a\n",
		    "x.yaml:5:7: sinks[0].headers: expected a header name (letters, digits and "
		    "!#$%&'*+-.^_`|~), got \"X Team\"");
	CHECK_ERROR(PYRO "    headers:\n      grpc-encoding: gzip\n",
		    "x.yaml:5:7: sinks[0].headers: expected a header name not starting with grpc- "
		    "(reserved by gRPC), got \"grpc-encoding\"");
	CHECK_ERROR(PYRO "    headers:\n      X-Scope-OrgID: a\n",
		    "x.yaml:5:7: sinks[0].headers: \"X-Scope-OrgID\": set the tenant key instead");
	CHECK_ERROR(PYRO "    headers:\n      Content-Type: text/plain\n",
		    "x.yaml:5:7: sinks[0].headers: expected a header the sink does not set itself, "
		    "got \"Content-Type\"");
	CHECK_ERROR(PYRO "    headers:\n      X-A: \"\"\n",
		    "x.yaml:5:12: sinks[0].headers.X-A: expected a header value (one line of "
		    "text), got \"\"");
	CHECK_ERROR(PYRO "    headers:\n      X-A: [a]\n",
		    "x.yaml:5:12: sinks[0].headers.X-A: expected a header value (one line of "
		    "text), got a list");
	CHECK_ERROR(PYRO "    headers: [a]\n",
		    "x.yaml:4:14: sinks[0].headers: expected a mapping of header names to values, "
		    "got a list");
	CHECK_ERROR(PYRO "    headers: {a: 1, b: 1, c: 1, d: 1, e: 1, f: 1, g: 1, h: 1, i: 1, "
			 "j: 1, k: 1, l: 1, m: 1, n: 1, o: 1, p: 1, q: 1}\n",
		    "x.yaml:4:14: sinks[0].headers: expected at most 16 headers, got 17");
}

static void test_bounds(void)
{
	CHECK_ERROR(PYRO "    timeout: 500ms\n",
		    "x.yaml:4:14: sinks[0].timeout: expected a duration from 1s to 5m, got "
		    "\"500ms\"");
	CHECK_ERROR(PYRO "    queue_size: 0\n",
		    "x.yaml:4:17: sinks[0].queue_size: expected a whole number from 1 to 100000, "
		    "got \"0\"");
	CHECK_ERROR(PYRO "    spool_max_bytes: 1KiB\n",
		    "x.yaml:4:22: sinks[0].spool_max_bytes: expected a size from 4KiB to 1024GiB, "
		    "got \"1KiB\"");
	CHECK_ERROR(PYRO "    spool_dir: spool\n",
		    "x.yaml:4:16: sinks[0].spool_dir: expected an absolute path like "
		    "/var/lib/allocscope/spool/cloud, got \"spool\"");
	CHECK_ERROR(PYRO "    shutdown_timeout: 10m\n",
		    "x.yaml:4:23: sinks[0].shutdown_timeout: expected a duration from 0ms to 5m, "
		    "got \"10m\"");
	CHECK_ERROR(PYRO "    max_backoff: 2h\n",
		    "x.yaml:4:18: sinks[0].max_backoff: expected a duration from 1s to 1h, got "
		    "\"2h\"");
	CHECK_ERROR(PYRO "    max_profile_size: 2GiB\n",
		    "x.yaml:4:23: sinks[0].max_profile_size: expected a size from 0B to 1GiB, got "
		    "\"2GiB\"");
}

static void test_names_and_spools(void)
{
	CHECK_ERROR(PYRO "    name: \"my sink\"\n",
		    "x.yaml:4:11: sinks[0].name: expected a name of 1 to 63 letters, digits, '_', "
		    "'.' or '-' like grafana-cloud, got \"my sink\"");
	CHECK_ERROR("sinks:\n  - {type: pyroscope, url: \"http://a\", name: a}\n"
		    "  - {type: parca, url: \"http://b\", name: a}\n",
		    "x.yaml:3:36: sinks[1].name: sinks[0] is already called \"a\" (set a different "
		    "name: on one of them)");
	CHECK_ERROR("sinks:\n  - {type: pyroscope, url: \"http://a\", spool_dir: /s}\n"
		    "  - {type: parca, url: \"http://b\", spool_dir: /s}\n",
		    "x.yaml:3:36: sinks[1].spool_dir: sinks[0] (\"pyroscope\") already spools to "
		    "/s: each sink needs a directory of its own");
}

/* One directory spelled two ways is still one directory: the second sink's spool would wait
 * forever for the first one's lock. */
static void test_same_spool_spelled_differently(void)
{
	char tmp[] = "/tmp/allocscope-spools-XXXXXX", yaml[1024], expected[PATH_MAX * 2], link[128];
	char real[PATH_MAX];

	CHECK_ERROR("sinks:\n  - {type: pyroscope, url: \"http://a\", name: a, spool_dir: /s}\n"
		    "  - {type: parca, url: \"http://b\", name: b, spool_dir: //s/./}\n",
		    "x.yaml:3:45: sinks[1].spool_dir: sinks[0] (\"a\") already spools to /s, the "
		    "same directory as //s/./ (both are /s): each sink needs a directory of its "
		    "own");
	/* Through "..", of directories that do not exist yet. */
	CHECK_ERROR("sinks:\n  - {type: pyroscope, url: \"http://a\", spool_dir: /no/such/x}\n"
		    "  - {type: parca, url: \"http://b\", spool_dir: /no/such/y/../x}\n",
		    "x.yaml:3:36: sinks[1].spool_dir: sinks[0] (\"pyroscope\") already spools to "
		    "/no/such/x, the same directory as /no/such/y/../x (both are /no/such/x): each "
		    "sink needs a directory of its own");
	/* A directory sink's profiles and a spool. */
	CHECK_ERROR("sinks:\n  - {type: directory, path: /p/}\n"
		    "  - {type: parca, url: \"http://b\", spool_dir: /p}\n",
		    "x.yaml:3:36: sinks[1].spool_dir: sinks[0] (\"directory\") already writes its "
		    "profiles to /p/, the same directory as /p (both are /p): each sink needs a "
		    "directory of its own");
	/* Through a symlink. */
	if (!mkdtemp(tmp) || !realpath(tmp, real)) {
		CHECK(!"mkdtemp");
		return;
	}
	snprintf(link, sizeof(link), "%s/link", tmp);
	CHECK(symlink(real, link) == 0);
	snprintf(yaml, sizeof(yaml),
		 "sinks:\n  - {type: pyroscope, url: \"http://a\", spool_dir: %s/spool}\n"
		 "  - {type: parca, url: \"http://b\", spool_dir: %s/spool}\n",
		 tmp, link);
	snprintf(expected, sizeof(expected),
		 "x.yaml:3:36: sinks[1].spool_dir: sinks[0] (\"pyroscope\") already spools to "
		 "%s/spool, the same directory as %s/spool (both are %s/spool): each sink needs a "
		 "directory of its own",
		 tmp, link, real);
	CHECK_ERROR(yaml, expected);
	/* Different directories stay fine. */
	snprintf(yaml, sizeof(yaml),
		 "sinks:\n  - {type: pyroscope, url: \"http://a\", spool_dir: %s/spool}\n"
		 "  - {type: parca, url: \"http://b\", spool_dir: %s/spool2}\n",
		 tmp, link);
	config_free(load(yaml));
	unlink(link);
	rmdir(tmp);
}

int main(void)
{
	RUN(test_every_push_key);
	RUN(test_url_errors);
	RUN(test_inline_secrets_refused);
	RUN(test_keys_of_other_types);
	RUN(test_credential_combinations);
	RUN(test_tls_errors);
	RUN(test_header_errors);
	RUN(test_bounds);
	RUN(test_names_and_spools);
	RUN(test_same_spool_spelled_differently);
	return unit_summary("push_config");
}
