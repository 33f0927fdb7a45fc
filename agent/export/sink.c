/* What all sinks share: names, and the counters of freed sinks. A reload replaces every sink
 * with a new one built from the new file; the counters of the old one are kept here under
 * (type, name) so that the metrics of "the pyroscope sink called cloud" keep counting up
 * across the reload. A sink that disappears from the configuration leaves its entry behind:
 * a few dozen bytes, and the numbers are back if it returns. Only the main thread creates,
 * frees and reads sinks' totals, so this needs no lock. */
#include <stdlib.h>
#include <string.h>

#include "export/sink.h"

struct retired_counters {
	struct retired_counters *next;
	char type[16];
	char name[SINK_NAME_MAX + 1];
	struct sink_stats stats;
};

static struct retired_counters *retired;

const char *sink__name(const struct sink *sink)
{
	return sink->name[0] ? sink->name : sink->ops->type;
}

void sink__set_name(struct sink *sink, const char *name)
{
	size_t len = name ? strlen(name) : 0;

	if (len > SINK_NAME_MAX)
		len = SINK_NAME_MAX;
	if (len)
		memcpy(sink->name, name, len);
	sink->name[len] = '\0';
}

void sink_stats__add_counters(struct sink_stats *a, const struct sink_stats *b)
{
	a->profiles_written += b->profiles_written;
	a->bytes_written += b->bytes_written;
	a->errors += b->errors;
	a->profiles_dropped += b->profiles_dropped;
	a->files_removed += b->files_removed;
	a->retries += b->retries;
	a->profiles_rejected += b->profiles_rejected;
	a->profiles_spooled += b->profiles_spooled;
	a->spool_corrupt += b->spool_corrupt;
	a->spool_recovered += b->spool_recovered;
	a->push_ns += b->push_ns;
	a->profiles_expired += b->profiles_expired;
	a->profiles_given_up += b->profiles_given_up;
}

static struct retired_counters *find_retired(const char *type, const char *name)
{
	for (struct retired_counters *r = retired; r; r = r->next) {
		if (strcmp(r->type, type) == 0 && strcmp(r->name, name) == 0)
			return r;
	}
	return NULL;
}

void sink__totals(const struct sink *sink, struct sink_stats *out)
{
	const struct retired_counters *r = find_retired(sink__type(sink), sink__name(sink));

	sink__stats(sink, out);
	if (r)
		sink_stats__add_counters(out, &r->stats);
}

void sink__free(struct sink *sink)
{
	struct retired_counters *r;
	struct sink_stats final;

	if (!sink)
		return;
	if (sink->ops->close)
		sink->ops->close(sink);
	sink__stats(sink, &final);
	r = find_retired(sink__type(sink), sink__name(sink));
	if (!r) {
		r = calloc(1, sizeof(*r));
		if (r) {
			/* Types are short literals; names are bounded by SINK_NAME_MAX. */
			strncpy(r->type, sink__type(sink), sizeof(r->type) - 1);
			strcpy(r->name, sink__name(sink));
			r->next = retired;
			retired = r;
		}
	}
	/* Out of memory only costs the continuity of these counters. */
	if (r)
		sink_stats__add_counters(&r->stats, &final);
	sink->ops->free(sink);
}
