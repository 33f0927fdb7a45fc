/* The flame graph page (see flamegraph_html.h). The page itself (flamegraph_page.html: its
 * CSS and JavaScript, written for allocscope) is compiled in as bytes (the Makefile turns it
 * into build/flamegraph_page.h); this file merges the samples into one call tree, root first,
 * and writes it into the page as JSON: frame names once each, then per node in depth-first
 * order its name, depth, subtree end and values, children sorted by name. The page draws from
 * those arrays without building a DOM node per frame (docs/report.md). */
#include "read/flamegraph_html.h"
#include "read/json_out.h"
#include "read/output_file.h"
#include "util/grow.h"
#include "util/hash.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char page[] = {
#include "flamegraph_page.h"
    0};

#define PAGE_MARKER "/*ALLOCSCOPE-DATA*/"
#define SITES_MAX   500

struct tree_node {
	uint32_t name;
	uint32_t parent;
	uint32_t first_child, next_sibling; /* node index + 1, 0: none */
};

struct flame_tree {
	const char **names; /* interned, pointers into the files */
	size_t n_names, cap_names;
	uint32_t *name_slots; /* name index + 1 */
	size_t cap_name_slots;
	/* The last name looked up per string pointer (frames of one function share theirs):
	 * most frames skip hashing their name. */
	const char *recent[4096];
	uint32_t recent_id[4096];
	struct tree_node *nodes;
	size_t n_nodes, cap_nodes;
	uint32_t *node_slots; /* node index + 1, by (parent, name) */
	size_t cap_node_slots;
	double *values, *base_values; /* n_types per node */
	size_t n_types, cap_values;
};

static uint64_t hash_string(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ULL;
	return hash_mix64(h);
}

static int intern_string(struct flame_tree *t, const char *name, uint32_t *out);

static int intern(struct flame_tree *t, const char *name, uint32_t *out)
{
	size_t slot = (hash_mix64((uint64_t)(uintptr_t)name)) & 4095;
	int ret;

	if (t->recent[slot] == name) {
		*out = t->recent_id[slot];
		return 0;
	}
	ret = intern_string(t, name, out);
	if (!ret) {
		t->recent[slot] = name;
		t->recent_id[slot] = *out;
	}
	return ret;
}

static int intern_string(struct flame_tree *t, const char *name, uint32_t *out)
{
	size_t mask, i;

	if ((t->n_names + 1) * 2 > t->cap_name_slots) {
		size_t cap = t->cap_name_slots ? t->cap_name_slots * 2 : 4096;
		uint32_t *slots = calloc(cap, sizeof(*slots));

		if (!slots)
			return -ENOMEM;
		for (size_t n = 0; n < t->n_names; n++) {
			for (i = hash_string(t->names[n]) & (cap - 1); slots[i];
			     i = (i + 1) & (cap - 1))
				;
			slots[i] = (uint32_t)(n + 1);
		}
		free(t->name_slots);
		t->name_slots = slots;
		t->cap_name_slots = cap;
	}
	mask = t->cap_name_slots - 1;
	for (i = hash_string(name) & mask; t->name_slots[i]; i = (i + 1) & mask) {
		if (strcmp(t->names[t->name_slots[i] - 1], name) == 0) {
			*out = t->name_slots[i] - 1;
			return 0;
		}
	}
	if (array_grow((void **)&t->names, &t->cap_names, t->n_names, sizeof(*t->names), 1024))
		return -ENOMEM;
	t->names[t->n_names] = name;
	t->name_slots[i] = (uint32_t)(t->n_names + 1);
	*out = (uint32_t)t->n_names++;
	return 0;
}

static uint64_t node_key(uint32_t parent, uint32_t name)
{
	return hash_mix64(((uint64_t)parent << 32) | name);
}

static int add_node(struct flame_tree *t, uint32_t parent, uint32_t name)
{
	struct tree_node *p;

	if (array_grow((void **)&t->nodes, &t->cap_nodes, t->n_nodes, sizeof(*t->nodes), 4096))
		return -ENOMEM;
	if (t->n_nodes + 1 > t->cap_values) {
		size_t cap = t->cap_values ? t->cap_values * 2 : 4096;
		double *v = realloc(t->values, cap * t->n_types * sizeof(*v));

		if (!v)
			return -ENOMEM;
		t->values = v;
		v = realloc(t->base_values, cap * t->n_types * sizeof(*v));
		if (!v)
			return -ENOMEM;
		t->base_values = v;
		t->cap_values = cap;
	}
	memset(t->values + t->n_nodes * t->n_types, 0, t->n_types * sizeof(double));
	memset(t->base_values + t->n_nodes * t->n_types, 0, t->n_types * sizeof(double));
	t->nodes[t->n_nodes] = (struct tree_node){.name = name, .parent = parent};
	if (t->n_nodes) {
		p = &t->nodes[parent];
		t->nodes[t->n_nodes].next_sibling = p->first_child;
		p->first_child = (uint32_t)(t->n_nodes + 1);
	}
	t->n_nodes++;
	return 0;
}

/* The child of parent called name, added when new. */
static int child(struct flame_tree *t, uint32_t parent, uint32_t name, uint32_t *out)
{
	size_t mask, i;

	if ((t->n_nodes + 1) * 2 > t->cap_node_slots) {
		size_t cap = t->cap_node_slots ? t->cap_node_slots * 2 : 8192;
		uint32_t *slots = calloc(cap, sizeof(*slots));

		if (!slots)
			return -ENOMEM;
		for (size_t n = 1; n < t->n_nodes; n++) {
			i = node_key(t->nodes[n].parent, t->nodes[n].name) & (cap - 1);
			while (slots[i])
				i = (i + 1) & (cap - 1);
			slots[i] = (uint32_t)(n + 1);
		}
		free(t->node_slots);
		t->node_slots = slots;
		t->cap_node_slots = cap;
	}
	mask = t->cap_node_slots - 1;
	for (i = node_key(parent, name) & mask; t->node_slots[i]; i = (i + 1) & mask) {
		const struct tree_node *n = &t->nodes[t->node_slots[i] - 1];

		if (n->parent == parent && n->name == name) {
			*out = t->node_slots[i] - 1;
			return 0;
		}
	}
	if (add_node(t, parent, name))
		return -ENOMEM;
	t->node_slots[i] = (uint32_t)t->n_nodes;
	*out = (uint32_t)(t->n_nodes - 1);
	return 0;
}

/* Adds file's kept samples to the tree: into values, or base_values for the base profile;
 * types[t] is the file's index of the tree's type t, or -1. */
static int add_file(struct flame_tree *t, const struct pprof_file *file, const int *types,
		    const struct sample_filter *filter, bool is_base)
{
	double *into;
	uint32_t node, name;

	for (size_t s = 0; s < file->n_samples; s++) {
		const struct pprof_read_sample *sample = &file->samples[s];

		if (!sample_filter__keeps(filter, sample))
			continue;
		node = 0;
		for (uint32_t depth = 0;; depth++) {
			into = (is_base ? t->base_values : t->values) + (size_t)node * t->n_types;
			for (size_t k = 0; k < t->n_types; k++)
				if (types[k] >= 0)
					into[k] += (double)sample->values[types[k]];
			if (depth == sample->n_frames)
				break;
			if (intern(t, sample->frames[sample->n_frames - 1 - depth]->name, &name) ||
			    child(t, node, name, &node))
				return -ENOMEM;
		}
	}
	return 0;
}

static const struct flame_tree *sort_tree;

static int compare_children(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return strcmp(sort_tree->names[sort_tree->nodes[x].name],
		      sort_tree->names[sort_tree->nodes[y].name]);
}

/* Depth-first order with children by name: order[k] is the k-th node, depth[k] its depth. */
static int tree_order(const struct flame_tree *t, uint32_t *order, uint32_t *depth)
{
	uint32_t *stack = malloc((t->n_nodes + 1) * sizeof(*stack));
	uint32_t *stack_depth = malloc((t->n_nodes + 1) * sizeof(*stack_depth));
	uint32_t *children = malloc((t->n_nodes + 1) * sizeof(*children));
	size_t top = 0, k = 0;

	if (!stack || !stack_depth || !children) {
		free(stack);
		free(stack_depth);
		free(children);
		return -ENOMEM;
	}
	sort_tree = t;
	stack[top] = 0;
	stack_depth[top++] = 0;
	while (top) {
		uint32_t node = stack[--top], d = stack_depth[top], n = 0;

		order[k] = node;
		depth[k++] = d;
		for (uint32_t c = t->nodes[node].first_child; c; c = t->nodes[c - 1].next_sibling)
			children[n++] = c - 1;
		qsort(children, n, sizeof(*children), compare_children);
		/* Pushed last to first, so the first by name comes out next. */
		while (n--) {
			stack[top] = children[n];
			stack_depth[top++] = d + 1;
		}
	}
	free(stack);
	free(stack_depth);
	free(children);
	return 0;
}

static void json_values(FILE *out, const double *values, size_t n)
{
	fputc('[', out);
	for (size_t i = 0; i < n; i++) {
		if (i)
			fputc(',', out);
		json_out_number(out, values[i]);
	}
	fputc(']', out);
}

static int write_sites(FILE *out, const struct pprof_file *base, const int *base_types,
		       const struct pprof_file *file, size_t type,
		       const struct sample_filter *filter)
{
	struct aggregate *agg = NULL, *agg_base = NULL;
	double *zero = calloc(file->n_types + 1, sizeof(*zero)), *b = NULL;
	size_t n, written = 0;
	int ret = zero ? aggregate__build(file, AGGREGATE_BY_SITE, filter, &agg) : -ENOMEM;

	if (!ret && base)
		ret = aggregate__build(base, AGGREGATE_BY_SITE, filter, &agg_base);
	b = calloc(file->n_types + 1, sizeof(*b));
	if (ret || !b)
		goto out;
	aggregate__sort(agg, type, false);
	fputs("\"sites\":[", out);
	n = agg->n_rows < SITES_MAX ? agg->n_rows : SITES_MAX;
	for (size_t i = 0; i < n; i++) {
		fputs(written++ ? ",{\"name\":" : "{\"name\":", out);
		json_out_string(out, agg->rows[i].name);
		fputs(",\"v\":", out);
		json_values(out, agg->rows[i].flat, file->n_types);
		if (base) {
			const struct aggregate_row *row =
			    aggregate__find(agg_base, agg->rows[i].name);

			for (size_t t = 0; t < file->n_types; t++)
				b[t] = row && base_types[t] >= 0 ? row->flat[base_types[t]] : 0;
			fputs(",\"b\":", out);
			json_values(out, b, file->n_types);
		}
		fputc('}', out);
	}
	/* Sites the new profile no longer has: they show in the diff's table. */
	for (size_t i = 0; base && i < agg_base->n_rows && i < SITES_MAX; i++) {
		if (aggregate__find(agg, agg_base->rows[i].name))
			continue;
		for (size_t t = 0; t < file->n_types; t++)
			b[t] = base_types[t] >= 0 ? agg_base->rows[i].flat[base_types[t]] : 0;
		fputs(written++ ? ",{\"name\":" : "{\"name\":", out);
		json_out_string(out, agg_base->rows[i].name);
		fputs(",\"v\":", out);
		json_values(out, zero, file->n_types);
		fputs(",\"b\":", out);
		json_values(out, b, file->n_types);
		fputc('}', out);
	}
	fputs("],", out);
out:
	aggregate__free(agg);
	aggregate__free(agg_base);
	free(zero);
	free(b);
	return ret ? ret : (b ? 0 : -ENOMEM);
}

static void write_meta(FILE *out, const struct pprof_file *base, const char *base_name,
		       const struct pprof_file *file, const char *file_name)
{
	char line[256];

	fputs("\"title\":", out);
	if (base) {
		snprintf(line, sizeof(line), "allocscope diff: %.100s -> %.100s", base_name,
			 file_name);
		json_out_string(out, line);
	} else {
		snprintf(line, sizeof(line), "allocscope report: %.200s", file_name);
		json_out_string(out, line);
	}
	/* One line per profile: distinct stacks (pprof samples, not sampled allocations), duration,
	 * its comments (the capture's targets). */
	char *meta = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&meta, &len);

	if (!m) {
		fputs(",\"meta\":\"\",", out);
		return;
	}
	for (int k = base ? 0 : 1; k < 2; k++) {
		const struct pprof_file *f = k ? file : base;

		fprintf(m, "%s%s: %zu distinct stacks", k && base ? "\n" : "",
			k ? (base ? "new" : "profile") : "base", f->n_samples);
		if (f->duration_nanos > 0)
			fprintf(m, " over %.1fs", f->duration_nanos / 1e9);
		for (size_t c = 0; c < f->n_comments && c < 3; c++)
			fprintf(m, "; %.200s", f->comments[c]);
	}
	fclose(m);
	fputs(",\"meta\":", out);
	json_out_string(out, meta ? meta : "");
	fputc(',', out);
	free(meta);
}

static void free_tree(struct flame_tree *t)
{
	free(t->names);
	free(t->name_slots);
	free(t->nodes);
	free(t->node_slots);
	free(t->values);
	free(t->base_values);
}

int flamegraph_html_print(FILE *out, const struct pprof_file *base, const char *base_name,
			  const struct pprof_file *file, const char *file_name, size_t type,
			  const struct sample_filter *filter)
{
	struct flame_tree t = {.n_types = file->n_types};
	uint32_t *order = NULL, *depth = NULL, root_name;
	int *types = calloc(file->n_types + 1, sizeof(int));
	int *base_types = calloc(file->n_types + 1, sizeof(int));
	const char *marker = strstr(page, PAGE_MARKER);
	int ret = -ENOMEM;

	if (!types || !base_types || !marker)
		goto out;
	for (size_t k = 0; k < file->n_types; k++) {
		types[k] = (int)k;
		base_types[k] = base ? pprof_file__type_index(base, file->types[k].type) : -1;
	}
	if (intern(&t, "all", &root_name) || add_node(&t, 0, root_name) ||
	    add_file(&t, file, types, filter, false) ||
	    (base && add_file(&t, base, base_types, filter, true)))
		goto out;
	order = malloc(t.n_nodes * sizeof(*order));
	depth = malloc(t.n_nodes * sizeof(*depth));
	if (!order || !depth || tree_order(&t, order, depth))
		goto out;

	fwrite(page, 1, (size_t)(marker - page), out);
	fputc('{', out);
	write_meta(out, base, base_name, file, file_name);
	fprintf(out, "\"diff\":%s,\"default\":%zu,\"types\":[", base ? "true" : "false", type);
	for (size_t k = 0; k < file->n_types; k++) {
		fputs(k ? ",{\"name\":" : "{\"name\":", out);
		json_out_string(out, file->types[k].type);
		fputs(",\"unit\":", out);
		json_out_string(out, file->types[k].unit);
		fputc('}', out);
	}
	fputs("],\"total\":", out);
	json_values(out, t.values, t.n_types);
	if (base) {
		fputs(",\"total_base\":", out);
		json_values(out, t.base_values, t.n_types);
	}
	fputs(",\"names\":[", out);
	for (size_t i = 0; i < t.n_names; i++) {
		if (i)
			fputc(',', out);
		json_out_string(out, t.names[i]);
	}
	fputs("],", out);
	ret = write_sites(out, base, base_types, file, type, filter);
	if (ret)
		goto out;
	/* Names and depths; the page finds each subtree's end from the depths. */
	fputs("\"nodes\":{\"n\":[", out);
	for (size_t k = 0; k < t.n_nodes; k++) {
		if (k)
			fputc(',', out);
		json_out_uint(out, t.nodes[order[k]].name);
	}
	fputs("],\"d\":[", out);
	for (size_t k = 0; k < t.n_nodes; k++) {
		if (k)
			fputc(',', out);
		json_out_uint(out, depth[k]);
	}
	for (int k = 0; k < (base ? 2 : 1); k++) {
		const double *values = k ? t.base_values : t.values;

		fputs(k ? "],\"b\":[" : "],\"v\":[", out);
		for (size_t i = 0; i < t.n_nodes; i++) {
			for (size_t v = 0; v < t.n_types; v++) {
				if (i || v)
					fputc(',', out);
				json_out_number(out, values[(size_t)order[i] * t.n_types + v]);
			}
		}
	}
	fputs("]}}", out);
	fputs(marker + strlen(PAGE_MARKER), out);
	ret = ferror(out) ? -EIO : 0;
out:
	free(types);
	free(base_types);
	free(order);
	free(depth);
	free_tree(&t);
	return ret;
}

int flamegraph_html_write(const char *path, const struct pprof_file *base, const char *base_name,
			  const struct pprof_file *file, const char *file_name, size_t type,
			  const struct sample_filter *filter, char *err, size_t err_len)
{
	struct output_file out;
	int ret = output_file__open(&out, path, err, err_len);

	if (ret)
		return ret;
	ret = flamegraph_html_print(out.stream, base, base_name, file, file_name, type, filter);
	if (ret) {
		snprintf(err, err_len, "cannot write %s: %s", path,
			 ret == -ENOMEM ? "out of memory" : strerror(-ret));
		output_file__abort(&out);
		return ret;
	}
	return output_file__commit(&out, err, err_len);
}
