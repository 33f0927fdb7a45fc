/* The per-sample label limiter (label_limits.h). Each kept key holds a set of its distinct
 * values in an open-addressing table (linear probing, at most half full); values are interned,
 * so a profile can key its samples by the pointers it is given. Sizes are bounded by the
 * configuration: at most LABEL_LIMITS_MAX_KEYS keys of max_values + 1 values each. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "profile/label_limits.h"
#include "util/hash.h"
#include "util/utf8_text.h"

struct label_key {
	char *name;
	char **slots;      /* NULL or an interned value */
	size_t n_slots;    /* a power of two */
	size_t n_values;   /* distinct values, LABEL_LIMITS_OTHER included */
	bool has_other;
};

struct label_limits {
	struct label_limits_config config; /* keys not copied: fixed is true then */
	bool fixed;                        /* the configured keys only */
	struct label_key keys[LABEL_LIMITS_MAX_KEYS];
	size_t n_keys;
	struct label_limits_stats *stats;
	struct label_limits_stats unused; /* where counts go when the caller has no stats */
};

static uint64_t hash_text(const char *s)
{
	uint64_t h = 0x84222325cbf29ce4ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return hash_mix64(h);
}

static void free_key(struct label_key *k)
{
	for (size_t i = 0; i < k->n_slots; i++)
		free(k->slots[i]);
	free(k->slots);
	free(k->name);
	memset(k, 0, sizeof(*k));
}

void label_limits__free(struct label_limits *limits)
{
	if (!limits)
		return;
	for (size_t i = 0; i < limits->n_keys; i++)
		free_key(&limits->keys[i]);
	free(limits);
}

/* A key as a label name: [a-zA-Z_][a-zA-Z0-9_]*, other bytes '_'; "" when key is empty or
 * longer than LABEL_LIMITS_MAX_KEY_BYTES. */
static void label_name(const char *key, char name[LABEL_LIMITS_MAX_KEY_BYTES + 1])
{
	size_t n = strlen(key);

	name[0] = '\0';
	if (n == 0 || n > LABEL_LIMITS_MAX_KEY_BYTES)
		return;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)key[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
			  (i > 0 && c >= '0' && c <= '9');

		name[i] = ok ? (char)c : '_';
	}
	name[n] = '\0';
}

static int add_key(struct label_limits *limits, const char *name, struct label_key **out)
{
	struct label_key *k = &limits->keys[limits->n_keys];

	k->name = strdup(name);
	k->n_slots = 16;
	k->slots = calloc(k->n_slots, sizeof(*k->slots));
	if (!k->name || !k->slots) {
		free_key(k);
		return -ENOMEM;
	}
	limits->n_keys++;
	*out = k;
	return 0;
}

int label_limits__new(const struct label_limits_config *config, struct label_limits_stats *stats,
		      struct label_limits **out)
{
	struct label_limits *limits;
	struct label_key *k;

	*out = NULL;
	if (config->n_keys > LABEL_LIMITS_MAX_KEYS || config->max_keys < 1 ||
	    config->max_keys > LABEL_LIMITS_MAX_KEYS || config->max_values < 1 ||
	    config->max_value_bytes < 1 || config->max_value_bytes > LABEL_LIMITS_MAX_VALUE_BYTES)
		return -EINVAL;
	limits = calloc(1, sizeof(*limits));
	if (!limits)
		return -ENOMEM;
	limits->config = *config;
	limits->config.keys = NULL;
	limits->fixed = config->n_keys > 0;
	limits->stats = stats ? stats : &limits->unused;
	for (size_t i = 0; i < config->n_keys; i++) {
		char name[LABEL_LIMITS_MAX_KEY_BYTES + 1];

		label_name(config->keys[i], name);
		if (!name[0] || add_key(limits, name, &k)) {
			label_limits__free(limits);
			return name[0] ? -ENOMEM : -EINVAL;
		}
	}
	*out = limits;
	return 0;
}

int label_limits__new_like(const struct label_limits *limits, struct label_limits **out)
{
	struct label_limits *fresh;
	struct label_key *k;

	*out = NULL;
	fresh = calloc(1, sizeof(*fresh));
	if (!fresh)
		return -ENOMEM;
	fresh->config = limits->config;
	fresh->fixed = limits->fixed;
	fresh->stats = limits->stats == &limits->unused ? &fresh->unused : limits->stats;
	for (size_t i = 0; fresh->fixed && i < limits->n_keys; i++) {
		if (add_key(fresh, limits->keys[i].name, &k)) {
			label_limits__free(fresh);
			return -ENOMEM;
		}
	}
	*out = fresh;
	return 0;
}

static struct label_key *find_key(const struct label_limits *limits, const char *name)
{
	for (size_t i = 0; i < limits->n_keys; i++) {
		if (strcmp(limits->keys[i].name, name) == 0)
			return (struct label_key *)&limits->keys[i];
	}
	return NULL;
}

/* The slot of value in k's table: where it is, or the empty one where it would go. */
static char **value_slot(const struct label_key *k, const char *value)
{
	size_t mask = k->n_slots - 1;

	for (size_t i = hash_text(value) & mask;; i = (i + 1) & mask) {
		if (!k->slots[i] || strcmp(k->slots[i], value) == 0)
			return &k->slots[i];
	}
}

static int grow_values(struct label_key *k)
{
	struct label_key bigger = *k;

	bigger.n_slots = k->n_slots * 2;
	bigger.slots = calloc(bigger.n_slots, sizeof(*bigger.slots));
	if (!bigger.slots)
		return -ENOMEM;
	for (size_t i = 0; i < k->n_slots; i++) {
		if (k->slots[i])
			*value_slot(&bigger, k->slots[i]) = k->slots[i];
	}
	free(k->slots);
	*k = bigger;
	return 0;
}

/* The interned copy of value in k, added when new. NULL when out of memory. */
static const char *intern(struct label_key *k, const char *value)
{
	char **slot = value_slot(k, value);

	if (*slot)
		return *slot;
	if ((k->n_values + 1) * 2 > k->n_slots) {
		if (grow_values(k))
			return NULL;
		slot = value_slot(k, value);
	}
	*slot = strdup(value);
	if (!*slot)
		return NULL;
	k->n_values++;
	return *slot;
}

int label_limits__admit(struct label_limits *limits, const char *key, const char *value,
			const char **key_out, const char **value_out)
{
	char name[LABEL_LIMITS_MAX_KEY_BYTES + 1], cut[LABEL_LIMITS_MAX_VALUE_BYTES + 1];
	struct label_key *k;
	const char *kept;
	char **slot;

	*key_out = *value_out = NULL;
	label_name(key, name);
	k = name[0] ? find_key(limits, name) : NULL;
	if (!k && (!name[0] || limits->fixed || limits->n_keys >= limits->config.max_keys)) {
		limits->stats->labels_dropped++;
		return 0;
	}
	if (!k && add_key(limits, name, &k))
		return -ENOMEM;
	if (utf8__label_value(cut, sizeof(cut), value, limits->config.max_value_bytes))
		limits->stats->values_truncated++;
	slot = value_slot(k, cut);
	if (*slot) {
		kept = *slot;
	} else if (strcmp(cut, LABEL_LIMITS_OTHER) == 0) {
		/* The program's own "other" is the overflow value: one series, not two. */
		kept = intern(k, cut);
		k->has_other = true;
	} else if (k->n_values - k->has_other < limits->config.max_values) {
		kept = intern(k, cut);
	} else {
		limits->stats->values_other++;
		kept = intern(k, LABEL_LIMITS_OTHER);
		k->has_other = true;
	}
	if (!kept)
		return -ENOMEM;
	limits->stats->labels_kept++;
	*key_out = k->name;
	*value_out = kept;
	return 1;
}

size_t label_limits__distinct(const struct label_limits *limits, const char *key)
{
	char name[LABEL_LIMITS_MAX_KEY_BYTES + 1];
	const struct label_key *k;

	label_name(key, name);
	k = name[0] ? find_key(limits, name) : NULL;
	return k ? k->n_values : 0;
}
