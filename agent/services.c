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
	       other.inuse_apart == shape->inuse_apart;
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
	uint8_t *data = NULL;
	size_t len = 0;
	uint32_t failed_sinks = 0; /* bit j: sink j took nothing (at most CONFIG_MAX_SINKS) */
	int ret;
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
	 * limits; sinks of the same shape share one encoding. */
	for (size_t i = 0; i < in->n_sinks; i++) {
		struct alloc_profile_result result = { 0 };
		struct sink_shape shape;
		bool encoded_before = false;

		sink__shape(in->sinks[i], &shape);
		for (size_t j = 0; j < i && !encoded_before; j++)
			encoded_before = same_shape(in->sinks[j], &shape);
		if (encoded_before)
			continue;

		/* In-use apart (Parca): the interval's delta, then the snapshot on its own. */
		bool apart = shape.inuse_apart && alloc_profile__has_inuse(s->profile);
		static const enum alloc_profile_values parts_apart[] = {
			ALLOC_PROFILE_VALUES_ALLOC, ALLOC_PROFILE_VALUES_INUSE
		};
		static const enum alloc_profile_values parts_whole[] = { ALLOC_PROFILE_VALUES_ALL };
		const enum alloc_profile_values *parts = apart ? parts_apart : parts_whole;

		for (size_t part = 0; part < (apart ? 2u : 1u); part++) {
			struct alloc_profile_output output = {
				.start_ns = in->start_wall_ns,
				.duration_ns = in->duration_ns,
				.comments = comments,
				/* Per-sample labels only repeat the series labels of a push. */
				.labels = shape.merge_processes ? NULL : sample_labels,
				.n_labels = shape.merge_processes ? 0 : n,
				.pid_label = in->pid_label && !shape.merge_processes,
				.merge_processes = shape.merge_processes,
				.max_samples = (size_t)shape.max_samples,
				.max_bytes = shape.max_bytes,
				.result = &result,
				.values = parts[part],
			};

			ret = alloc_profile__encode_pprof(s->profile, &output, &data, &len);
			if (ret) {
				t->stats.encode_errors++;
				log_error("cannot encode the profile of service %s: %s", s->name,
					  strerror(-ret));
				failed_sinks |= shape_mask(in, &shape, i);
				continue;
			}
			built = true;
			note_trimmed(t, in, s, i, &result);
			record.pprof_gz = data;
			record.pprof_gz_len = len;
			for (size_t j = i; j < in->n_sinks; j++)
				if (same_shape(in->sinks[j], &shape) &&
				    sink__submit(in->sinks[j], &record) != 0)
					failed_sinks |= 1u << j;
			free(data);
			data = NULL;
		}
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
