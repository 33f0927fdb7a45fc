/* Unit tests for services.c: grouping by service name and pod container, the cap and its
 * "other" service, label values cut to the limit, removal of empty services, and what each
 * interval hands the sinks (labels, one record per service with samples, failures). No BPF,
 * no privileges: the sinks are recording fakes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "services.h"
#include "export/sink.h"
#include "profile/alloc_profile.h"
#include "profile/pprof.h"

#define RATE 4096

static const struct service_limits limits = { .max_services = 100, .max_label_value_bytes = 64 };

static void test_processes_of_one_name_share_a_service(void)
{
	struct services *t;
	struct services_stats stats;
	struct service *a, *b, *c;

	CHECK(services__new(&t) == 0);
	a = services__get(t, "api", NULL, &limits);
	b = services__get(t, "api", NULL, &limits);
	c = services__get(t, "worker", NULL, &limits);
	CHECK(a && b && c);
	CHECK(a == b);
	CHECK(a != c);
	CHECK_STR(a->name, "api");
	CHECK(!a->pod_labels[0] && !a->profile);
	services__stats(t, &stats);
	CHECK_EQ_U64(stats.services, 2);
	CHECK_EQ_U64(stats.overflowed, 0);
	services__free(t);
}

static void test_pods_keep_replicas_apart(void)
{
	const char *const pod1[] = { "shop", "api-7d-1", "api", "node-a" };
	const char *const pod1_again[] = { "shop", "api-7d-1", "api", "node-a" };
	const char *const pod2[] = { "shop", "api-7d-2", "api", "node-a" };
	const char *const sidecar[] = { "shop", "api-7d-1", "proxy", "node-a" };
	const char *const none[] = { NULL, NULL, NULL, NULL };
	struct services *t;
	struct service *s1, *s2, *s3, *plain;

	CHECK(services__new(&t) == 0);
	s1 = services__get(t, "api", pod1, &limits);
	s2 = services__get(t, "api", pod2, &limits);
	s3 = services__get(t, "api", sidecar, &limits);
	plain = services__get(t, "api", none, &limits);
	CHECK(s1 && s2 && s3 && plain);
	CHECK(s1 != s2 && s1 != s3 && s2 != s3);
	CHECK(plain != s1 && plain != s2 && plain != s3);
	CHECK(services__get(t, "api", pod1_again, &limits) == s1);
	CHECK(services__get(t, "api", NULL, &limits) == plain);
	CHECK_STR(s2->pod_labels[SERVICE_LABEL_NAMESPACE], "shop");
	CHECK_STR(s2->pod_labels[SERVICE_LABEL_POD], "api-7d-2");
	CHECK_STR(s2->pod_labels[SERVICE_LABEL_CONTAINER], "api");
	CHECK_STR(s2->pod_labels[SERVICE_LABEL_NODE], "node-a");
	CHECK(!plain->pod_labels[SERVICE_LABEL_NAMESPACE]);
	services__free(t);
}

static void test_past_the_cap_new_services_go_to_other(void)
{
	const struct service_limits two = { .max_services = 2, .max_label_value_bytes = 64 };
	const char *const pod[] = { "shop", "db-0", "db", "node-a" };
	struct services *t;
	struct services_stats stats;
	struct service *a, *b, *c, *d;

	CHECK(services__new(&t) == 0);
	a = services__get(t, "a", NULL, &two);
	b = services__get(t, "b", NULL, &two);
	c = services__get(t, "c", NULL, &two);
	d = services__get(t, "d", pod, &two);
	CHECK(a && b && c && d);
	CHECK_STR(c->name, SERVICES_OVERFLOW);
	CHECK(c == d);
	CHECK(!d->pod_labels[SERVICE_LABEL_NAMESPACE]); /* "other" carries no pod's labels */
	/* Services that exist are still found past the cap. */
	CHECK(services__get(t, "a", NULL, &two) == a);
	CHECK(services__get(t, "b", NULL, &two) == b);
	services__stats(t, &stats);
	CHECK_EQ_U64(stats.services, 3); /* max_services + 1 at most */
	CHECK_EQ_U64(stats.overflowed, 2);
	/* Room again after a service is gone: a new name gets its own. */
	a->n_processes = 0;
	b->n_processes = 1;
	c->n_processes = 1;
	services__prune(t);
	services__stats(t, &stats);
	CHECK_EQ_U64(stats.services, 2);
	CHECK_STR(services__get(t, "e", NULL, &two)->name, SERVICES_OVERFLOW);
	b->n_processes = 0;
	services__prune(t);
	CHECK_STR(services__get(t, "e", NULL, &two)->name, "e");
	services__free(t);
}

static void test_names_are_cut_as_label_values(void)
{
	const struct service_limits eight = { .max_services = 10, .max_label_value_bytes = 8 };
	struct services *t;
	struct services_stats stats;
	struct service *a, *b, *c;

	CHECK(services__new(&t) == 0);
	a = services__get(t, "abcdefghij", NULL, &eight);
	b = services__get(t, "abcdefghXYZ", NULL, &eight);
	c = services__get(t, "caf\xff", NULL, &eight);
	CHECK(a && b && c);
	CHECK_STR(a->name, "abcdefgh");
	CHECK(a == b); /* the same name once cut */
	CHECK_STR(c->name, "caf\xef\xbf\xbd"); /* the bad byte replaced by U+FFFD */
	services__stats(t, &stats);
	CHECK_EQ_U64(stats.label_values_truncated, 3);
	CHECK_EQ_U64(stats.services, 2);
	services__free(t);
}

static void test_prune_removes_services_without_processes(void)
{
	struct services *t;
	struct services_stats stats;
	struct service *a, *b;

	CHECK(services__new(&t) == 0);
	a = services__get(t, "a", NULL, &limits);
	b = services__get(t, "b", NULL, &limits);
	CHECK(a && b);
	a->n_processes = 2;
	services__prune(t);
	services__stats(t, &stats);
	CHECK_EQ_U64(stats.services, 1);
	CHECK(services__get(t, "a", NULL, &limits) == a);
	services__free(t);
}

/* ---- intervals ---------------------------------------------------------------------- */

#define MAX_RECORDS 80

struct recorded {
	char service[64];
	char labels[16][2][64];
	size_t n_labels;
	int64_t start_ns, duration_ns;
	size_t pprof_len;
};

struct fake_sink {
	struct sink base;
	struct sink_shape shape;
	int fail; /* what submit returns */
	struct recorded records[MAX_RECORDS];
	size_t n_records;
};

static int fake_submit(struct sink *sink, const struct profile_record *record)
{
	struct fake_sink *f = (struct fake_sink *)sink;
	struct recorded *r;

	if (f->n_records < MAX_RECORDS) {
		r = &f->records[f->n_records++];
		snprintf(r->service, sizeof(r->service), "%s", record->service);
		for (size_t i = 0; i < record->n_labels && i < 16; i++) {
			snprintf(r->labels[i][0], 64, "%s", record->labels[i].key);
			snprintf(r->labels[i][1], 64, "%s", record->labels[i].value);
		}
		r->n_labels = record->n_labels;
		r->start_ns = record->start_ns;
		r->duration_ns = record->duration_ns;
		r->pprof_len = record->pprof_gz_len;
	}
	return f->fail;
}

static void fake_stats(const struct sink *sink, struct sink_stats *out)
{
	*out = (struct sink_stats){ 0 };
}

static void fake_shape(const struct sink *sink, struct sink_shape *out)
{
	*out = ((const struct fake_sink *)sink)->shape;
}

static void fake_free(struct sink *sink)
{
}

static const struct sink_ops fake_ops = {
	.type = "fake",
	.submit = fake_submit,
	.stats = fake_stats,
	.free = fake_free,
	.shape = fake_shape,
};

static const char *label(const struct recorded *r, const char *key)
{
	for (size_t i = 0; i < r->n_labels; i++)
		if (strcmp(r->labels[i][0], key) == 0)
			return r->labels[i][1];
	return NULL;
}

static void add_sample(struct service *s, uint32_t pid)
{
	const uint64_t frames[] = { 0x1000, 0x2000, 0x3000 };

	if (!s->profile)
		CHECK(alloc_profile__new(RATE, NULL, &s->profile) == 0);
	CHECK(alloc_profile__add_stack(s->profile, pid, frames, 3, 100) == 0);
}

static void test_interval_labels_each_service_profile(void)
{
	const char *const pod[] = { "shop", "api-7d-1", "api", "node-a" };
	struct config_label statics[] = { { "env", "prod" }, { "region", "eu-west-1-very-long" } };
	struct fake_sink files = { .base.ops = &fake_ops };
	struct fake_sink push = { .base.ops = &fake_ops, .shape.merge_processes = true };
	struct sink *sinks[] = { &files.base, &push.base };
	struct services_interval interval = {
		.sinks = sinks,
		.n_sinks = 2,
		.hostname = "host-1",
		.labels = statics,
		.n_labels = 2,
		.sample_rate = RATE,
		.max_label_value_bytes = 12,
		.start_wall_ns = 1000,
		.duration_ns = 10000000000,
	};
	const struct service_limits cut = { .max_services = 10, .max_label_value_bytes = 12 };
	struct services_written written;
	struct services_stats stats;
	struct services *t;
	struct service *api, *idle, *plain;

	CHECK(services__new(&t) == 0);
	api = services__get(t, "api", pod, &cut);
	idle = services__get(t, "idle", NULL, &cut);
	plain = services__get(t, "batch", NULL, &cut);
	CHECK(api && idle && plain);
	add_sample(api, 10);
	add_sample(api, 11);
	add_sample(plain, 12);
	/* A profile with no sample in it writes nothing. */
	CHECK(alloc_profile__new(RATE, NULL, &idle->profile) == 0);
	services__write_interval(t, &interval, &written);
	CHECK_EQ_U64(written.written, 2);
	CHECK_EQ_U64(written.failed, 0);
	CHECK(!api->profile && !idle->profile && !plain->profile);
	CHECK_EQ_U64(files.n_records, 2);
	CHECK_EQ_U64(push.n_records, 2);
	for (size_t i = 0; i < files.n_records; i++) {
		const struct recorded *r = &files.records[i];
		bool is_api = strcmp(r->service, "api") == 0;

		CHECK(is_api || strcmp(r->service, "batch") == 0);
		CHECK_STR(label(r, "service_name"), r->service);
		CHECK_STR(label(r, "hostname"), "host-1");
		CHECK_STR(label(r, "env"), "prod");
		CHECK_STR(label(r, "region"), "eu-west-1-ve"); /* cut to 12 bytes */
		CHECK(r->start_ns == 1000 && r->duration_ns == 10000000000);
		CHECK(r->pprof_len > 0);
		if (is_api) {
			CHECK_EQ_U64(r->n_labels, 8);
			CHECK_STR(label(r, "namespace"), "shop");
			CHECK_STR(label(r, "pod"), "api-7d-1");
			CHECK_STR(label(r, "container"), "api");
			CHECK_STR(label(r, "node"), "node-a");
		} else {
			CHECK_EQ_U64(r->n_labels, 4);
			CHECK(!label(r, "namespace") && !label(r, "pod"));
		}
	}
	services__stats(t, &stats);
	CHECK_EQ_U64(stats.profiles_built, 2);
	CHECK_EQ_U64(stats.encode_errors, 0);
	CHECK_EQ_U64(stats.label_values_truncated, 2); /* region, once per profile */
	/* The next interval starts empty: nothing is written twice. */
	services__write_interval(t, &interval, &written);
	CHECK_EQ_U64(written.written, 0);
	CHECK_EQ_U64(files.n_records, 2);
	services__free(t);
}

static void test_interval_fails_only_when_every_sink_refuses(void)
{
	struct fake_sink good = { .base.ops = &fake_ops };
	struct fake_sink bad = { .base.ops = &fake_ops, .fail = -EIO };
	struct sink *both[] = { &bad.base, &good.base };
	struct sink *only_bad[] = { &bad.base };
	struct services_interval interval = {
		.sinks = both,
		.n_sinks = 2,
		.hostname = "h",
		.sample_rate = RATE,
		.max_label_value_bytes = 64,
	};
	struct services_written written;
	struct services *t;
	struct service *s;

	CHECK(services__new(&t) == 0);
	s = services__get(t, "api", NULL, &limits);
	CHECK(s != NULL);
	add_sample(s, 1);
	services__write_interval(t, &interval, &written);
	CHECK_EQ_U64(written.written, 1);
	CHECK_EQ_U64(written.failed, 0);
	CHECK_EQ_U64(good.n_records, 1);
	CHECK_EQ_U64(bad.n_records, 1);
	add_sample(s, 1);
	interval.sinks = only_bad;
	interval.n_sinks = 1;
	services__write_interval(t, &interval, &written);
	CHECK_EQ_U64(written.written, 0);
	CHECK_EQ_U64(written.failed, 1);
	services__free(t);
}

/* Issue 15: two versions of one program are two series, each labelled with its version and
 * the rule's code labels; a static label of the same name gives way to the service's own. */
static void test_versions_are_series_with_code_labels(void)
{
	const char *const v1[] = { "2.13", "https://github.com/acme/shop", "v2.13", NULL };
	const char *const v2[] = { "2.14", "https://github.com/acme/shop", "v2.14", NULL };
	const char *const none[] = { "", NULL, NULL, NULL };
	struct config_label statics[] = { { "service_repository", "https://example.com/all" },
					  { "env", "prod" } };
	struct fake_sink push = { .base.ops = &fake_ops, .shape.merge_processes = true };
	struct sink *sinks[] = { &push.base };
	struct services_interval interval = {
		.sinks = sinks,
		.n_sinks = 1,
		.hostname = "h",
		.labels = statics,
		.n_labels = 2,
		.sample_rate = RATE,
		.max_label_value_bytes = 64,
		.version_label = "release",
	};
	struct services_written written;
	struct services *t;
	struct service *a, *b, *c;

	CHECK(services__new(&t) == 0);
	a = services__get_versioned(t, "shop", NULL, v1, &limits);
	b = services__get_versioned(t, "shop", NULL, v2, &limits);
	c = services__get_versioned(t, "shop", NULL, none, &limits);
	CHECK(a && b && c);
	CHECK(a != b && a != c && b != c);
	CHECK(services__get_versioned(t, "shop", NULL, v1, &limits) == a);
	CHECK(services__get(t, "shop", NULL, &limits) == c);
	CHECK_STR(b->code_labels[SERVICE_CODE_VERSION], "2.14");
	CHECK(!c->code_labels[SERVICE_CODE_VERSION]);
	add_sample(a, 1);
	add_sample(b, 2);
	add_sample(c, 3);
	services__write_interval(t, &interval, &written);
	CHECK_EQ_U64(written.written, 3);
	CHECK_EQ_U64(push.n_records, 3);
	for (size_t i = 0; i < push.n_records; i++) {
		const struct recorded *r = &push.records[i];
		const char *version = label(r, "release");

		CHECK_STR(label(r, "env"), "prod");
		CHECK(!label(r, "service_version") && !label(r, "service_root_path"));
		if (!version) {
			/* No code labels: the host-wide static label stays. */
			CHECK_STR(label(r, "service_repository"), "https://example.com/all");
			CHECK(!label(r, "service_git_ref"));
			continue;
		}
		CHECK(strcmp(version, "2.13") == 0 || strcmp(version, "2.14") == 0);
		CHECK_STR(label(r, "service_repository"), "https://github.com/acme/shop");
		CHECK_STR(label(r, "service_git_ref"), version[3] == '3' ? "v2.13" : "v2.14");
		/* Once: the static label of the same name is left out. */
		CHECK_EQ_U64(r->n_labels, 6);
	}
	/* The default name, and "" for none. */
	add_sample(a, 1);
	interval.version_label = NULL;
	services__write_interval(t, &interval, &written);
	CHECK_STR(label(&push.records[3], "service_version"), "2.13");
	add_sample(a, 1);
	interval.version_label = "";
	services__write_interval(t, &interval, &written);
	CHECK(!label(&push.records[4], "service_version") && !label(&push.records[4], "release"));
	services__free(t);
}

/* A sink that keeps no sample labels (Parca) gets one profile per request-context label set,
 * its labels series labels (span_id left out: sets that differ only by it are one series;
 * a label the service already has stays the service's); the stacks without context go in
 * the series without them. A sink whose server splits by sample labels itself (Pyroscope)
 * gets the one profile. Past SERVICES_MAX_LABEL_SERIES sets, the lightest are folded. */
static void test_label_sets_are_series_for_parca(void)
{
	const uint64_t frames[] = { 0x1000, 0x2000, 0x3000 };
	const struct pprof_label a1[] = { { .key = "endpoint", .str = "/a" },
					  { .key = "tenant", .str = "acme" },
					  { .key = "span_id", .str = "00000000000004d2" } };
	const struct pprof_label a2[] = { { .key = "endpoint", .str = "/a" },
					  { .key = "tenant", .str = "acme" },
					  { .key = "span_id", .str = "000000000000162e" } };
	const struct pprof_label b[] = { { .key = "endpoint", .str = "/b" },
					 { .key = "hostname", .str = "spoofed" } };
	struct fake_sink parca = { .base.ops = &fake_ops,
				   .shape = { .merge_processes = true,
					      .series_per_label_set = true } };
	struct fake_sink pyroscope = { .base.ops = &fake_ops, .shape.merge_processes = true };
	struct sink *sinks[] = { &parca.base, &pyroscope.base };
	struct services_interval interval = {
		.sinks = sinks, .n_sinks = 2, .hostname = "host-1", .sample_rate = RATE,
		.max_label_value_bytes = 64, .start_wall_ns = 1000, .duration_ns = 1000000000,
	};
	struct services_written written;
	struct services_stats stats;
	struct services *t;
	struct service *shop;
	bool seen_a = false, seen_b = false, seen_none = false;

	CHECK(services__new(&t) == 0);
	shop = services__get(t, "shop", NULL, &limits);
	CHECK(shop && alloc_profile__new(RATE, NULL, &shop->profile) == 0);
	if (!shop || !shop->profile)
		goto out;
	CHECK(alloc_profile__use_labels(shop->profile, a1, 3) == 0);
	CHECK(alloc_profile__add_stack(shop->profile, 1, frames, 3, 100) == 0);
	CHECK(alloc_profile__use_labels(shop->profile, a2, 3) == 0);
	CHECK(alloc_profile__add_stack(shop->profile, 1, frames, 3, 100) == 0);
	CHECK(alloc_profile__use_labels(shop->profile, b, 2) == 0);
	CHECK(alloc_profile__add_stack(shop->profile, 1, frames, 3, 100) == 0);
	CHECK(alloc_profile__use_labels(shop->profile, NULL, 0) == 0);
	CHECK(alloc_profile__add_stack(shop->profile, 1, frames, 3, 100) == 0);
	services__write_interval(t, &interval, &written);
	CHECK_EQ_U64(written.written, 1);
	CHECK_EQ_U64(pyroscope.n_records, 1);
	CHECK(pyroscope.n_records == 1 && !label(&pyroscope.records[0], "endpoint"));
	CHECK_EQ_U64(parca.n_records, 3);
	for (size_t i = 0; i < parca.n_records; i++) {
		const struct recorded *r = &parca.records[i];
		const char *endpoint = label(r, "endpoint");

		CHECK_STR(label(r, "service_name"), "shop");
		CHECK_STR(label(r, "hostname"), "host-1");
		CHECK(!label(r, "span_id") && r->pprof_len > 0);
		if (!endpoint) {
			seen_none = true;
			CHECK(!label(r, "tenant"));
		} else if (strcmp(endpoint, "/a") == 0) {
			seen_a = true;
			CHECK_STR(label(r, "tenant"), "acme");
		} else if (strcmp(endpoint, "/b") == 0) {
			seen_b = true;
			CHECK(!label(r, "tenant"));
		}
	}
	CHECK(seen_a && seen_b && seen_none);

	/* Every stack labelled: no empty series; past the cap, the lightest sets folded. */
	CHECK(alloc_profile__new(RATE, NULL, &shop->profile) == 0);
	parca.n_records = 0;
	for (int i = 0; shop->profile && i < SERVICES_MAX_LABEL_SERIES + 6; i++) {
		char value[16];
		const struct pprof_label one[] = { { .key = "endpoint", .str = value } };

		snprintf(value, sizeof(value), "/e%d", i);
		CHECK(alloc_profile__use_labels(shop->profile, one, 1) == 0);
		CHECK(alloc_profile__add_stack(shop->profile, 1, frames, 3, 1000 - i) == 0);
	}
	services__write_interval(t, &interval, &written);
	CHECK_EQ_U64(parca.n_records, SERVICES_MAX_LABEL_SERIES + 1);
	services__stats(t, &stats);
	CHECK_EQ_U64(stats.label_series_folded, 6);
	/* The folded ones: the lightest, sent without labels. */
	for (size_t i = 0; i < parca.n_records && i < MAX_RECORDS; i++) {
		const char *endpoint = label(&parca.records[i], "endpoint");

		CHECK(!endpoint || atoi(endpoint + 2) < SERVICES_MAX_LABEL_SERIES);
	}
out:
	services__free(t);
}

int main(void)
{
	RUN(test_processes_of_one_name_share_a_service);
	RUN(test_pods_keep_replicas_apart);
	RUN(test_past_the_cap_new_services_go_to_other);
	RUN(test_names_are_cut_as_label_values);
	RUN(test_prune_removes_services_without_processes);
	RUN(test_interval_labels_each_service_profile);
	RUN(test_interval_fails_only_when_every_sink_refuses);
	RUN(test_versions_are_series_with_code_labels);
	RUN(test_label_sets_are_series_for_parca);
	return unit_summary("services");
}
