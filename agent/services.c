/* Services: grouping a host's processes into the series the sinks receive, and writing each
 * one's interval profile (services.h). A service is found by a walk of a list: there are at most
 * limits.max_services + 1, and lookups happen when a process is decided, not per sample. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build_info.h"
#include "util/log.h"
#include "services.h"
#include "util/utf8_text.h"
#include "export/sink.h"
#include "profile/alloc_profile.h"
#include "profile/pprof.h"

static const char *const pod_label_keys[SERVICE_POD_LABELS] = { "namespace", "pod", "container",
								 "node" };
/* SERVICE_CODE_VERSION's name is the interval's version_label. */
static const char *const code_label_keys[SERVICE_CODE_LABELS] = {
	SERVICES_DEFAULT_VERSION_LABEL, "service_repository", "service_git_ref",
	"service_root_path"
};

struct services {
	struct service *list;
	size_t n;
	bool trim_logged; /* the first trimmed profile was logged */
	struct services_stats stats;
};

int services__new(struct services **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

static void free_service(struct service *s)
{
	alloc_profile__free(s->profile);
	free(s->name);
	for (int i = 0; i < SERVICE_POD_LABELS; i++)
		free(s->pod_labels[i]);
	for (int i = 0; i < SERVICE_CODE_LABELS; i++)
		free(s->code_labels[i]);
	free(s);
}

void services__free(struct services *t)
{
	if (!t)
		return;
	while (t->list) {
		struct service *s = t->list;

		t->list = s->next;
		free_service(s);
	}
	free(t);
}

static bool same_value(const char *mine, const char *wanted)
{
	if (wanted && wanted[0])
		return mine && strcmp(mine, wanted) == 0;
	return !mine;
}

static struct service *find_service(struct services *t, const char *name,
				    const char *const *values, const char *const *code)
{
	for (struct service *s = t->list; s; s = s->next) {
		bool same = strcmp(s->name, name) == 0;

		for (int i = 0; i < SERVICE_POD_LABELS && same; i++) {
			if (values && values[i])
				same = s->pod_labels[i] && strcmp(s->pod_labels[i], values[i]) == 0;
			else
				same = !s->pod_labels[i];
		}
		for (int i = 0; i < SERVICE_CODE_LABELS && same; i++)
			same = same_value(s->code_labels[i], code ? code[i] : NULL);
		if (same)
			return s;
	}
	return NULL;
}

struct service *services__get(struct services *t, const char *wanted,
			      const char *const *pod_labels, const struct service_limits *limits)
{
	return services__get_versioned(t, wanted, pod_labels, NULL, limits);
}

struct service *services__get_versioned(struct services *t, const char *wanted,
					const char *const *pod_labels,
					const char *const *code_labels,
					const struct service_limits *limits)
{
	char name[SERVICES_MAX_LABEL_VALUE + 1];
	struct service *s;
	bool complete;

	if (utf8__label_value(name, sizeof(name), wanted, limits->max_label_value_bytes))
		t->stats.label_values_truncated++;
	s = find_service(t, name, pod_labels, code_labels);
	if (s)
		return s;
	if (t->n >= limits->max_services) {
		t->stats.overflowed++;
		pod_labels = NULL;
		code_labels = NULL;
		s = find_service(t, SERVICES_OVERFLOW, NULL, NULL);
		if (s)
			return s;
		snprintf(name, sizeof(name), "%s", SERVICES_OVERFLOW);
		log_warn("more than %u services: new ones are profiled as service \"%s\" "
			 "(raise limits.max_services)",
			 limits->max_services, SERVICES_OVERFLOW);
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->name = strdup(name);
	complete = s->name != NULL;
	for (int i = 0; pod_labels && i < SERVICE_POD_LABELS && pod_labels[i]; i++) {
		s->pod_labels[i] = strdup(pod_labels[i]);
		complete = complete && s->pod_labels[i];
	}
	for (int i = 0; code_labels && i < SERVICE_CODE_LABELS; i++) {
		if (!code_labels[i] || !code_labels[i][0])
			continue;
		s->code_labels[i] = strdup(code_labels[i]);
		complete = complete && s->code_labels[i];
	}
	if (!complete) {
		free_service(s);
		return NULL;
	}
	s->next = t->list;
	t->list = s;
	t->n++;
	return s;
}

static bool same_shape(const struct sink *sink, const struct sink_shape *shape)
{
	struct sink_shape other;

	sink__shape(sink, &other);
	return other.merge_processes == shape->merge_processes &&
	       other.max_samples == shape->max_samples && other.max_bytes == shape->max_bytes &&
	       other.inuse_apart == shape->inuse_apart &&
	       other.series_per_label_set == shape->series_per_label_set;
}

/* A label value as sent: valid UTF-8, at most max_label_value_bytes (value is a buffer of
 * SERVICES_MAX_LABEL_VALUE + 1 bytes). */
static void label_value(struct services *t, const struct services_interval *in, char *value,
			const char *raw)
{
	if (utf8__label_value(value, SERVICES_MAX_LABEL_VALUE + 1, raw ? raw : "",
			      in->max_label_value_bytes))
		t->stats.label_values_truncated++;
}

/* The sinks of shape from sink i on, as a bit mask. */
static uint32_t shape_mask(const struct services_interval *in, const struct sink_shape *shape,
			   size_t i)
{
	uint32_t mask = 0;

	for (size_t j = i; j < in->n_sinks; j++)
		if (same_shape(in->sinks[j], shape))
			mask |= 1u << j;
	return mask;
}

static void note_trimmed(struct services *t, const struct services_interval *in,
			 const struct service *s, size_t i, const struct alloc_profile_result *result)
{
	if (!result->stacks_trimmed)
		return;
	t->stats.stacks_trimmed += result->stacks_trimmed;
	if (!t->trim_logged)
		log_warn("the profile of service %s for %s sink %s has %zu stacks more than its "
			 "max_samples or max_profile_size allow: the coldest were folded into one "
			 "\"%s\" frame (totals kept); see allocscope_profile_stacks_trimmed_total. "
			 "Logged once",
			 s->name, sink__type(in->sinks[i]), sink__name(in->sinks[i]),
			 result->stacks_trimmed, ALLOC_PROFILE_TRIMMED_FRAME);
	t->trim_logged = true;
}

/* ---- one series per request-context label set (a sink with series_per_label_set) ---- */

/* Labels of one series: a label set's, trace_id and span_id left out (one series per request
 * is what a limiter exists to prevent; Pyroscope keeps span_id a sample label too). */
#define SERIES_MAX_LABELS 16

struct label_series {
	size_t n;
	struct pprof_label labels[SERIES_MAX_LABELS]; /* the profile's strings */
	double weight;
};

struct label_series_list {
	struct label_series *list;
	size_t n, cap;
	size_t kept; /* list[0 .. kept): a series each; the rest go without labels */
	int error;
};

static void series_key(const struct pprof_label *labels, size_t n, struct label_series *out)
{
	out->n = 0;
	for (size_t i = 0; i < n && out->n < SERIES_MAX_LABELS; i++) {
		if (strcmp(labels[i].key, "trace_id") == 0 || strcmp(labels[i].key, "span_id") == 0)
			continue;
		out->labels[out->n++] = labels[i];
	}
}

static bool same_series(const struct label_series *a, const struct label_series *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++)
		if (strcmp(a->labels[i].key, b->labels[i].key) != 0 ||
		    strcmp(a->labels[i].str, b->labels[i].str) != 0)
			return false;
	return true;
}

static int collect_series(const struct pprof_label *labels, size_t n, double weight, void *ctx)
{
	struct label_series_list *l = ctx;
	struct label_series key;

	series_key(labels, n, &key);
	if (!key.n)
		return 0;
	for (size_t i = 0; i < l->n; i++) {
		if (same_series(&l->list[i], &key)) {
			l->list[i].weight += weight;
			return 0;
		}
	}
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		struct label_series *grown = realloc(l->list, cap * sizeof(*grown));

		if (!grown) {
			l->error = -ENOMEM;
			return -ENOMEM;
		}
		l->list = grown;
		l->cap = cap;
	}
	key.weight = weight;
	l->list[l->n++] = key;
	return 0;
}

static int heavier_series(const void *a, const void *b)
{
	const struct label_series *x = a, *y = b;

	return x->weight < y->weight ? 1 : x->weight > y->weight ? -1 : 0;
}

/* What one encoding takes: the stacks of one series (only), or of none of the kept ones. */
struct series_select {
	const struct label_series_list *all;
	const struct label_series *only; /* NULL: the series without labels */
};

static bool select_series(const struct pprof_label *labels, size_t n, void *ctx)
{
	const struct series_select *sel = ctx;
	struct label_series key;

	series_key(labels, n, &key);
	if (sel->only)
		return same_series(&key, sel->only);
	for (size_t i = 0; i < sel->all->kept; i++)
		if (same_series(&key, &sel->all->list[i]))
			return false;
	return true;
}

/* Encodes s's profile for the sinks of shape from sink i on (the stacks sel selects: NULL,
 * all) and hands it to each of them with record's labels. In-use apart (Parca): the
 * interval's delta, then the snapshot on its own. A selection without a sample is not sent. */
static void submit_series(struct services *t, const struct services_interval *in,
			  struct service *s, size_t i, const struct sink_shape *shape,
			  struct series_select *sel, const char *const *comments,
			  const struct pprof_label *sample_labels, size_t n_labels,
			  struct profile_record *record, uint32_t *failed_sinks, bool *built)
{
	static const enum alloc_profile_values parts_apart[] = { ALLOC_PROFILE_VALUES_ALLOC,
								 ALLOC_PROFILE_VALUES_INUSE };
	static const enum alloc_profile_values parts_whole[] = { ALLOC_PROFILE_VALUES_ALL };
	bool apart = shape->inuse_apart && alloc_profile__has_inuse(s->profile);
	const enum alloc_profile_values *parts = apart ? parts_apart : parts_whole;
	uint8_t *data = NULL;
	size_t len = 0;
	int ret;

	for (size_t part = 0; part < (apart ? 2u : 1u); part++) {
		struct alloc_profile_result result = { 0 };
		struct alloc_profile_output output = {
			.start_ns = in->start_wall_ns,
			.duration_ns = in->duration_ns,
			.comments = comments,
			/* Per-sample labels only repeat the series labels of a push. */
			.labels = shape->merge_processes ? NULL : sample_labels,
			.n_labels = shape->merge_processes ? 0 : n_labels,
			.pid_label = in->pid_label && !shape->merge_processes,
			.merge_processes = shape->merge_processes,
			.max_samples = (size_t)shape->max_samples,
			.max_bytes = shape->max_bytes,
			.result = &result,
			.values = parts[part],
			.select = sel ? select_series : NULL,
			.select_ctx = sel,
		};

		ret = alloc_profile__encode_pprof(s->profile, &output, &data, &len);
		if (ret) {
			t->stats.encode_errors++;
			log_error("cannot encode the profile of service %s: %s", s->name,
				  strerror(-ret));
			*failed_sinks |= shape_mask(in, shape, i);
			continue;
		}
		*built = true;
		note_trimmed(t, in, s, i, &result);
		if (sel && result.samples == 0) {
			free(data);
			data = NULL;
			continue;
		}
		record->pprof_gz = data;
		record->pprof_gz_len = len;
		for (size_t j = i; j < in->n_sinks; j++)
			if (same_shape(in->sinks[j], shape) &&
			    sink__submit(in->sinks[j], record) != 0)
				*failed_sinks |= 1u << j;
		free(data);
		data = NULL;
	}
}

static int submit_profile(struct services *t, const struct services_interval *in,
			  struct service *s)
{
	enum {
		MAX_LABELS = 2 + SERVICE_POD_LABELS + SERVICE_CODE_LABELS + CONFIG_MAX_STATIC_LABELS
	};
	struct pprof_label sample_labels[MAX_LABELS];
	struct profile_label labels[MAX_LABELS];
	/* Copies of hostname, the pod labels, the code labels and the static labels, cut to the
	 * limit below. */
	char values[MAX_LABELS - 1][SERVICES_MAX_LABEL_VALUE + 1];
	const char *code_keys[SERVICE_CODE_LABELS];
	char line1[128], line2[1200], line3[256];
	const char *comments[] = { line1, line2, line3, NULL };
	size_t n = 0, n_values = 0;
	uint32_t failed_sinks = 0; /* bit j: sink j took nothing (at most CONFIG_MAX_SINKS) */
	bool built = false;

	/* Every value goes through the one helper that makes it valid UTF-8 and cuts it at a
	 * character boundary (the service name already did, in service_for). */
	labels[n++] = (struct profile_label){ "service_name", s->name };
	labels[n++] = (struct profile_label){ "hostname", values[n_values] };
	label_value(t, in, values[n_values++], in->hostname);
	for (int i = 0; i < SERVICE_POD_LABELS && s->pod_labels[i]; i++) {
		labels[n++] = (struct profile_label){ pod_label_keys[i], values[n_values] };
		label_value(t, in, values[n_values++], s->pod_labels[i]);
	}
	memcpy(code_keys, code_label_keys, sizeof(code_keys));
	if (in->version_label)
		code_keys[SERVICE_CODE_VERSION] = in->version_label;
	for (int i = 0; i < SERVICE_CODE_LABELS; i++) {
		if (!s->code_labels[i] || !code_keys[i][0])
			continue;
		labels[n++] = (struct profile_label){ code_keys[i], values[n_values] };
		label_value(t, in, values[n_values++], s->code_labels[i]);
	}
	for (size_t i = 0; i < in->n_labels && i < CONFIG_MAX_STATIC_LABELS; i++) {
		bool overridden = false;

		/* The service's own code labels are more specific than a host-wide one. */
		for (int j = 0; j < SERVICE_CODE_LABELS; j++)
			overridden = overridden || (s->code_labels[j] && code_keys[j][0] &&
						    strcmp(code_keys[j], in->labels[i].key) == 0);
		if (overridden)
			continue;
		labels[n++] = (struct profile_label){ in->labels[i].key, values[n_values] };
		label_value(t, in, values[n_values++], in->labels[i].value);
	}
	for (size_t i = 0; i < n; i++)
		sample_labels[i] = (struct pprof_label){ .key = labels[i].key,
							 .str = labels[i].value };
	snprintf(line1, sizeof(line1), "allocscope %s, sample rate %llu bytes", ALLOCSCOPE_VERSION,
		 (unsigned long long)in->sample_rate);
	if (s->pod_labels[0])
		snprintf(line2, sizeof(line2), "service %s, container %s of pod %s/%s, on %s",
			 s->name, s->pod_labels[SERVICE_LABEL_CONTAINER],
			 s->pod_labels[SERVICE_LABEL_NAMESPACE], s->pod_labels[SERVICE_LABEL_POD],
			 values[0]);
	else
		snprintf(line2, sizeof(line2), "service %s on %s", s->name, values[0]);
	if (s->duty_fraction > 0)
		snprintf(line3, sizeof(line3), "overhead budget: processes probed part of the "
			 "time (down to a fraction %.3f), their estimates scaled by the inverse%s",
			 s->duty_fraction,
			 s->inuse ? "; in-use leaves out a process while it is throttled (its frees "
				    "go unseen) and counts only what it allocated since its release "
				    "after"
				  : "");
	else
		comments[2] = NULL;

	struct profile_record record = {
		.service = s->name,
		.labels = labels,
		.n_labels = n,
		.start_ns = in->start_wall_ns,
		.duration_ns = in->duration_ns,
	};
	/* One encoding per shape the sinks ask for (sink.h): the directory sink keeps each
	 * process apart, push sinks take the processes merged and bounded to their server's
	 * limits; sinks of the same shape share one encoding. A sink that keeps no sample labels
	 * (Parca) gets one profile per request-context label set, its labels series labels. */
	for (size_t i = 0; i < in->n_sinks; i++) {
		struct label_series_list series = { 0 };
		struct sink_shape shape;
		bool encoded_before = false;

		sink__shape(in->sinks[i], &shape);
		for (size_t j = 0; j < i && !encoded_before; j++)
			encoded_before = same_shape(in->sinks[j], &shape);
		if (encoded_before)
			continue;
		if (shape.series_per_label_set &&
		    alloc_profile__for_each_label_set(s->profile, collect_series, &series) == 0 &&
		    series.n) {
			qsort(series.list, series.n, sizeof(*series.list), heavier_series);
			series.kept = series.n < SERVICES_MAX_LABEL_SERIES ? series.n
									  : SERVICES_MAX_LABEL_SERIES;
			t->stats.label_series_folded += series.n - series.kept;
		} else if (series.error) {
			log_warn("the profile of service %s goes as one series, its request-context "
				 "labels left to the samples: out of memory", s->name);
		}
		/* series.kept: the rest, labelled none. */
		for (size_t k = 0; k <= series.kept; k++) {
			struct series_select sel = { &series, k < series.kept ? &series.list[k]
									 : NULL };
			struct profile_label series_labels[MAX_LABELS + SERIES_MAX_LABELS];
			char series_values[SERIES_MAX_LABELS][SERVICES_MAX_LABEL_VALUE + 1];
			size_t n_series = n;

			memcpy(series_labels, labels, n * sizeof(labels[0]));
			for (size_t l = 0; sel.only && l < sel.only->n; l++) {
				bool taken = false;

				for (size_t m = 0; m < n && !taken; m++)
					taken = strcmp(labels[m].key, sel.only->labels[l].key) == 0;
				if (taken)
					continue;
				label_value(t, in, series_values[l], sel.only->labels[l].str);
				series_labels[n_series++] = (struct profile_label){
					sel.only->labels[l].key, series_values[l]
				};
			}
			record.labels = series_labels;
			record.n_labels = n_series;
			submit_series(t, in, s, i, &shape, series.kept ? &sel : NULL, comments,
				      sample_labels, n, &record, &failed_sinks, &built);
		}
		free(series.list);
	}
	if (built)
		t->stats.profiles_built++;
	return (size_t)__builtin_popcount(failed_sinks) >= in->n_sinks ? -EIO : 0;
}


void services__write_interval(struct services *t, const struct services_interval *interval,
			      struct services_written *out)
{
	out->written = out->failed = 0;
	for (struct service *s = t->list; s; s = s->next) {
		struct alloc_profile_totals totals;

		if (!s->profile)
			continue;
		struct alloc_profile_inuse inuse = { 0 };
		struct alloc_profile *next = NULL;

		alloc_profile__totals(s->profile, &totals);
		if (alloc_profile__has_inuse(s->profile))
			alloc_profile__inuse_totals(s->profile, &inuse);
		if (totals.samples || inuse.live_samples) {
			if (submit_profile(t, interval, s) == 0)
				out->written++;
			else
				out->failed++;
		}
		/* Out of memory here loses the old samples' stacks: their live entries then
		 * count under the dropped-samples frame. */
		if (alloc_profile__carry_live(s->profile, &next) != 0)
			next = NULL;
		s->inuse_bytes = inuse.bytes;
		alloc_profile__free(s->profile);
		s->profile = next;
		s->duty_fraction = 0;
	}
}

void services__inuse_begin(struct services *t, uint64_t now_ns)
{
	for (struct service *s = t->list; s; s = s->next)
		if (s->profile && alloc_profile__has_inuse(s->profile))
			alloc_profile__inuse_begin(s->profile, now_ns);
}

void services__inuse_end(struct services *t, uint64_t overflow)
{
	for (struct service *s = t->list; s; s = s->next)
		if (s->profile && alloc_profile__has_inuse(s->profile))
			alloc_profile__inuse_end(s->profile, overflow);
}

void services__each_inuse(const struct services *t,
			  void (*fn)(const struct service *s, double bytes, void *ctx), void *ctx)
{
	for (const struct service *s = t->list; s; s = s->next)
		if (s->inuse)
			fn(s, s->inuse_bytes, ctx);
}

void services__prune(struct services *t)
{
	struct service **link = &t->list;

	while (*link) {
		struct service *s = *link;

		if (s->n_processes == 0) {
			*link = s->next;
			free_service(s);
			t->n--;
		} else {
			link = &s->next;
		}
	}
}

void services__stats(const struct services *t, struct services_stats *out)
{
	*out = t->stats;
	out->services = t->n;
}
