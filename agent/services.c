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

static struct service *find_service(struct services *t, const char *name,
				    const char *const *values)
{
	for (struct service *s = t->list; s; s = s->next) {
		bool same = strcmp(s->name, name) == 0;

		for (int i = 0; i < SERVICE_POD_LABELS && same; i++) {
			if (values && values[i])
				same = s->pod_labels[i] && strcmp(s->pod_labels[i], values[i]) == 0;
			else
				same = !s->pod_labels[i];
		}
		if (same)
			return s;
	}
	return NULL;
}

struct service *services__get(struct services *t, const char *wanted,
			      const char *const *pod_labels, const struct service_limits *limits)
{
	char name[SERVICES_MAX_LABEL_VALUE + 1];
	struct service *s;
	bool complete;

	if (utf8__label_value(name, sizeof(name), wanted, limits->max_label_value_bytes))
		t->stats.label_values_truncated++;
	s = find_service(t, name, pod_labels);
	if (s)
		return s;
	if (t->n >= limits->max_services) {
		t->stats.overflowed++;
		pod_labels = NULL;
		s = find_service(t, SERVICES_OVERFLOW, NULL);
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
	       other.max_samples == shape->max_samples && other.max_bytes == shape->max_bytes;
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

static int submit_profile(struct services *t, const struct services_interval *in,
			  struct service *s)
{
	struct pprof_label sample_labels[2 + SERVICE_POD_LABELS + CONFIG_MAX_STATIC_LABELS];
	struct profile_label labels[2 + SERVICE_POD_LABELS + CONFIG_MAX_STATIC_LABELS];
	/* Copies of hostname, the pod labels and the static labels, cut to the limit below. */
	char values[1 + SERVICE_POD_LABELS + CONFIG_MAX_STATIC_LABELS]
		   [SERVICES_MAX_LABEL_VALUE + 1];
	char line1[128], line2[1200], line3[256];
	const char *comments[] = { line1, line2, line3, NULL };
	size_t n = 0, n_values = 0;
	uint8_t *data = NULL;
	size_t len = 0;
	int ret, failures = 0;
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
	for (size_t i = 0; i < in->n_labels && i < CONFIG_MAX_STATIC_LABELS; i++) {
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
			 "time (down to a fraction %.3f), their estimates scaled by the inverse",
			 s->duty_fraction);
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
		};

		ret = alloc_profile__encode_pprof(s->profile, &output, &data, &len);
		if (ret) {
			t->stats.encode_errors++;
			log_error("cannot encode the profile of service %s: %s", s->name,
				  strerror(-ret));
			failures++;
			continue;
		}
		built = true;
		if (result.stacks_trimmed) {
			t->stats.stacks_trimmed += result.stacks_trimmed;
			if (!t->trim_logged)
				log_warn("the profile of service %s for %s sink %s has %zu stacks "
					 "more than its max_samples or max_profile_size allow: the "
					 "coldest were folded into one \"%s\" frame (totals kept); "
					 "see allocscope_profile_stacks_trimmed_total. Logged once",
					 s->name, sink__type(in->sinks[i]), sink__name(in->sinks[i]),
					 result.stacks_trimmed, ALLOC_PROFILE_TRIMMED_FRAME);
			t->trim_logged = true;
		}
		record.pprof_gz = data;
		record.pprof_gz_len = len;
		for (size_t j = i; j < in->n_sinks; j++)
			if (same_shape(in->sinks[j], &shape))
				failures += sink__submit(in->sinks[j], &record) != 0;
		free(data);
		data = NULL;
	}
	if (built)
		t->stats.profiles_built++;
	return failures >= (int)in->n_sinks ? -EIO : 0;
}


void services__write_interval(struct services *t, const struct services_interval *interval,
			      struct services_written *out)
{
	out->written = out->failed = 0;
	for (struct service *s = t->list; s; s = s->next) {
		struct alloc_profile_totals totals;

		if (!s->profile)
			continue;
		alloc_profile__totals(s->profile, &totals);
		if (totals.samples) {
			if (submit_profile(t, interval, s) == 0)
				out->written++;
			else
				out->failed++;
		}
		alloc_profile__free(s->profile);
		s->profile = NULL;
		s->duty_fraction = 0;
	}
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
