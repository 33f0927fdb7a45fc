/* Budget files: parsed line by line into items that remember their line, so that an update
 * rewrites only the lines whose limits went down and keeps comments, order and spacing of the
 * rest: the diff a reviewer sees is the ratchet and nothing else. */
#include "count/budget.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/grow.h"
#include "util/small_file.h"

static const char *const kind_names[] = {
	[BUDGET_TOTAL] = "total",
	[BUDGET_UNLISTED] = "unlisted",
	[BUDGET_SITE] = "site",
	[BUDGET_FUNCTION] = "function",
};

static int fail(char *err, size_t err_len, const char *path, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static int fail(char *err, size_t err_len, const char *path, unsigned line, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(err, err_len, "%s:%u: ", path, line);

	if (n >= 0 && (size_t)n < err_len) {
		va_start(ap, fmt);
		vsnprintf(err + n, err_len - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

void budget__free(struct budget *b)
{
	if (!b)
		return;
	for (size_t i = 0; i < b->n_lines; i++)
		free(b->lines[i]);
	for (size_t i = 0; i < b->n_items; i++)
		free(b->items[i].name);
	free(b->lines);
	free(b->items);
	free(b->path);
	free(b);
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

/* The next space-separated token of *p (advanced past it): its start, *len its length. */
static const char *next_token(const char **p, size_t *len)
{
	const char *s = *p, *start;

	while (is_space(*s))
		s++;
	start = s;
	while (*s && !is_space(*s))
		s++;
	*len = (size_t)(s - start);
	*p = s;
	return start;
}

/* A decimal count of exactly len characters. */
static bool parse_count(const char *text, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0 || len > 19)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (text[i] < '0' || text[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(text[i] - '0');
	}
	*out = v;
	return true;
}

static bool token_is(const char *tok, size_t len, const char *word)
{
	return strlen(word) == len && memcmp(tok, word, len) == 0;
}

static int parse_line(const char *path, unsigned number, const char *line, struct budget_item *it,
		      char *err, size_t err_len)
{
	const char *p = line, *tok;
	size_t len, k;

	memset(it, 0, sizeof(*it));
	it->line = number;
	it->objects = it->bytes = BUDGET_NO_LIMIT;
	tok = next_token(&p, &len);
	for (k = 0; k < sizeof(kind_names) / sizeof(kind_names[0]); k++)
		if (token_is(tok, len, kind_names[k]))
			break;
	if (k == sizeof(kind_names) / sizeof(kind_names[0]))
		return fail(err, err_len, path, number,
			    "unknown line kind '%.*s': expected site, function, total or unlisted",
			    (int)(len > 40 ? 40 : len), tok);
	it->kind = (enum budget_kind)k;
	for (;;) {
		const char *before = p;
		uint64_t *limit = NULL;
		size_t skip = 0;

		tok = next_token(&p, &len);
		if (len > 8 && memcmp(tok, "objects=", 8) == 0) {
			limit = &it->objects;
			skip = 8;
		} else if (len > 6 && memcmp(tok, "bytes=", 6) == 0) {
			limit = &it->bytes;
			skip = 6;
		} else if (it->kind == BUDGET_UNLISTED && token_is(tok, len, "ignore")) {
			it->ignore = true;
			continue;
		} else {
			p = before;
			break;
		}
		if (*limit != BUDGET_NO_LIMIT)
			return fail(err, err_len, path, number, "%.*s given twice", (int)skip - 1,
				    tok);
		if (!parse_count(tok + skip, len - skip, limit))
			return fail(err, err_len, path, number,
				    "'%.*s' is not a count: expected %.*sN with N a whole number",
				    (int)(len > 40 ? 40 : len), tok, (int)skip, tok);
	}
	while (is_space(*p))
		p++;
	len = strlen(p);
	while (len && is_space(p[len - 1]))
		len--;
	if (it->kind == BUDGET_SITE || it->kind == BUDGET_FUNCTION) {
		if (!len)
			return fail(err, err_len, path, number,
				    "%s needs a name after its limits (e.g. '%s objects=3 make_node')",
				    kind_names[k], kind_names[k]);
		it->name = strndup(p, len);
		if (!it->name)
			return -ENOMEM;
	} else if (len) {
		return fail(err, err_len, path, number,
			    "unexpected '%.*s': %s takes limits only (objects=N, bytes=N%s)",
			    (int)(len > 40 ? 40 : len), p, kind_names[k],
			    it->kind == BUDGET_UNLISTED ? " or ignore" : "");
	}
	if (it->ignore && (it->objects != BUDGET_NO_LIMIT || it->bytes != BUDGET_NO_LIMIT))
		return fail(err, err_len, path, number, "unlisted is either ignore or limits, not both");
	if (!it->ignore && it->objects == BUDGET_NO_LIMIT && it->bytes == BUDGET_NO_LIMIT)
		return fail(err, err_len, path, number, "no limit: give objects=N and/or bytes=N%s",
			    it->kind == BUDGET_UNLISTED ? " (or ignore)" : "");
	return 0;
}

/* The item of the same kind and name earlier in b, or NULL. */
static const struct budget_item *find_item(const struct budget *b, enum budget_kind kind,
					   const char *name)
{
	for (size_t i = 0; i < b->n_items; i++) {
		const struct budget_item *it = &b->items[i];

		if (it->kind == kind && (!name || (it->name && strcmp(it->name, name) == 0)))
			return it;
	}
	return NULL;
}

int budget__parse(const char *path, const char *text, size_t len, struct budget **out, char *err,
		  size_t err_len)
{
	struct budget *b = calloc(1, sizeof(*b));
	size_t cap_lines = 0, cap_items = 0, pos = 0;
	unsigned number = 0;
	int ret = 0;

	*out = NULL;
	if (!b || !(b->path = strdup(path))) {
		free(b);
		return -ENOMEM;
	}
	if (memchr(text, '\0', len)) {
		budget__free(b);
		return fail(err, err_len, path, 1, "not a text file (it holds NUL bytes)");
	}
	while (pos < len) {
		const char *start = text + pos, *nl = memchr(start, '\n', len - pos);
		size_t line_len = nl ? (size_t)(nl - start) : len - pos;
		const char *p;
		char *line;

		pos += line_len + (nl ? 1 : 0);
		number++;
		line = strndup(start, line_len);
		if (!line || array_grow((void **)&b->lines, &cap_lines, b->n_lines, sizeof(char *),
					64)) {
			free(line);
			ret = -ENOMEM;
			break;
		}
		b->lines[b->n_lines++] = line;
		for (p = line; is_space(*p); p++)
			;
		if (!*p || *p == '#')
			continue;
		if (array_grow((void **)&b->items, &cap_items, b->n_items, sizeof(*b->items), 32)) {
			ret = -ENOMEM;
			break;
		}
		ret = parse_line(path, number, line, &b->items[b->n_items], err, err_len);
		if (ret) {
			free(b->items[b->n_items].name);
			break;
		}
		const struct budget_item *it = &b->items[b->n_items];
		const struct budget_item *dup = find_item(b, it->kind, it->name);

		if (dup) {
			ret = fail(err, err_len, path, number, "%s%s%s is already on line %u",
				   kind_names[it->kind], it->name ? " " : "",
				   it->name ? it->name : "", dup->line);
			free(b->items[b->n_items].name);
			break;
		}
		b->n_items++;
	}
	if (ret) {
		if (ret == -ENOMEM)
			snprintf(err, err_len, "%s: out of memory reading the budget", path);
		budget__free(b);
		return ret;
	}
	*out = b;
	return 0;
}

int budget__load(const char *path, struct budget **out, char *err, size_t err_len)
{
	struct dynbuf buf;
	int fd, ret;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		if (ret != -ENOENT)
			snprintf(err, err_len, "cannot read the budget %s: %s", path, strerror(-ret));
		else
			snprintf(err, err_len, "no budget file %s (allocscope gate --update creates "
					       "it from a run)", path);
		return ret;
	}
	dynbuf_init(&buf, BUDGET_MAX_FILE);
	ret = small_file_read_all(fd, &buf);
	close(fd);
	if (ret) {
		snprintf(err, err_len, "cannot read the budget %s: %s", path,
			 ret == -EFBIG ? "larger than 4 MiB" : strerror(-ret));
		dynbuf_free(&buf);
		return ret;
	}
	ret = budget__parse(path, buf.data ? buf.data : "", buf.len, out, err, err_len);
	dynbuf_free(&buf);
	return ret;
}

static const struct budget_measure *find_measure(const struct budget_measure *list, size_t n,
						 const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i].name, name) == 0)
			return &list[i];
	return NULL;
}

/* What the run measured for it; *seen false for a name the run never allocated in. */
static void measured_for(const struct budget *b, const struct budget_item *it,
			 const struct budget_measurements *m, uint64_t *objects, uint64_t *bytes,
			 bool *seen)
{
	const struct budget_measure *found = NULL;

	*objects = *bytes = 0;
	*seen = true;
	switch (it->kind) {
	case BUDGET_TOTAL:
		*objects = m->total_objects;
		*bytes = m->total_bytes;
		return;
	case BUDGET_UNLISTED:
		for (size_t i = 0; i < m->n_sites; i++) {
			if (find_item(b, BUDGET_SITE, m->sites[i].name))
				continue;
			*objects += m->sites[i].objects;
			*bytes += m->sites[i].bytes;
		}
		return;
	case BUDGET_SITE:
		found = find_measure(m->sites, m->n_sites, it->name);
		break;
	case BUDGET_FUNCTION:
		found = find_measure(m->functions, m->n_functions, it->name);
		break;
	}
	if (found) {
		*objects = found->objects;
		*bytes = found->bytes;
	} else {
		*seen = false;
	}
}

int budget__check(const struct budget *b, const struct budget_measurements *m,
		  struct budget_row **rows, size_t *n_rows, size_t *n_over)
{
	struct budget_row *out = calloc(2 * b->n_items + 1, sizeof(*out));
	size_t n = 0, over = 0;

	*rows = NULL;
	*n_rows = *n_over = 0;
	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < b->n_items; i++) {
		const struct budget_item *it = &b->items[i];
		uint64_t objects, bytes;
		bool seen;

		if (it->ignore)
			continue;
		measured_for(b, it, m, &objects, &bytes, &seen);
		if (it->objects != BUDGET_NO_LIMIT)
			out[n++] = (struct budget_row){ it, "objects", it->objects, objects,
							objects > it->objects, !seen };
		if (it->bytes != BUDGET_NO_LIMIT)
			out[n++] = (struct budget_row){ it, "bytes", it->bytes, bytes,
							bytes > it->bytes, !seen };
	}
	for (size_t i = 0; i < n; i++)
		over += out[i].over;
	*rows = out;
	*n_rows = n;
	*n_over = over;
	return 0;
}

static int add_text(struct dynbuf *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int add_text(struct dynbuf *buf, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	return dynbuf_add(buf, line, (size_t)n);
}

/* A name as it may stand on a line: control characters (a newline would end the line) become
 * '?'. At most 900 bytes. */
static void line_name(const char *name, char *out, size_t len)
{
	size_t i;

	for (i = 0; name[i] && i + 1 < len && i < 900; i++)
		out[i] = (unsigned char)name[i] < 0x20 || name[i] == 0x7f ? '?' : name[i];
	out[i] = '\0';
}

static int add_item_line(struct dynbuf *buf, enum budget_kind kind, uint64_t objects,
			 uint64_t bytes, const char *name)
{
	char limits[64] = "", shown[1024];
	size_t used = 0;
	int ret;

	if (objects != BUDGET_NO_LIMIT)
		used += (size_t)snprintf(limits, sizeof(limits), "objects=%" PRIu64, objects);
	if (bytes != BUDGET_NO_LIMIT && used < sizeof(limits))
		snprintf(limits + used, sizeof(limits) - used, "%sbytes=%" PRIu64, used ? " " : "",
			 bytes);
	ret = add_text(buf, "%-9s %s", kind_names[kind], limits);
	if (!ret && name) {
		line_name(name, shown, sizeof(shown));
		ret = add_text(buf, "  %s", shown);
	}
	return ret ? ret : dynbuf_add(buf, "\n", 1);
}

int budget__render_update(const struct budget *b, const struct budget_measurements *m,
			  char **text, size_t *n_lowered)
{
	struct dynbuf buf;
	size_t next_item = 0, lowered = 0;
	int ret = 0;

	*text = NULL;
	*n_lowered = 0;
	dynbuf_init(&buf, SIZE_MAX / 2);
	for (size_t i = 0; i < b->n_lines && !ret; i++) {
		const struct budget_item *it = NULL;
		uint64_t objects, bytes, new_objects, new_bytes;
		bool seen;

		if (next_item < b->n_items && b->items[next_item].line == i + 1)
			it = &b->items[next_item++];
		if (!it || it->ignore) {
			ret = add_text(&buf, "%s\n", b->lines[i]);
			continue;
		}
		measured_for(b, it, m, &objects, &bytes, &seen);
		new_objects = it->objects;
		new_bytes = it->bytes;
		if (seen && it->objects != BUDGET_NO_LIMIT && objects < it->objects)
			new_objects = objects;
		if (seen && it->bytes != BUDGET_NO_LIMIT && bytes < it->bytes)
			new_bytes = bytes;
		if (new_objects == it->objects && new_bytes == it->bytes) {
			ret = add_text(&buf, "%s\n", b->lines[i]);
			continue;
		}
		lowered += (new_objects != it->objects) + (new_bytes != it->bytes);
		ret = add_item_line(&buf, it->kind, new_objects, new_bytes, it->name);
	}
	if (ret) {
		dynbuf_free(&buf);
		return ret;
	}
	*text = dynbuf_take(&buf, NULL);
	if (!*text)
		*text = strdup("");
	*n_lowered = lowered;
	return *text ? 0 : -ENOMEM;
}

static int compare_measures(const void *a, const void *b)
{
	const struct budget_measure *const *x = a, *const *y = b;

	return strcmp((*x)->name, (*y)->name);
}

int budget__render_new(const struct budget_measurements *m, char **text)
{
	const struct budget_measure **sorted = calloc(m->n_sites + 1, sizeof(*sorted));
	struct dynbuf buf;
	int ret;

	*text = NULL;
	if (!sorted)
		return -ENOMEM;
	for (size_t i = 0; i < m->n_sites; i++)
		sorted[i] = &m->sites[i];
	qsort(sorted, m->n_sites, sizeof(*sorted), compare_measures);
	dynbuf_init(&buf, SIZE_MAX / 2);
	ret = add_text(&buf,
		       "# Allocation budget for allocscope gate (docs/ci-gate.md).\n"
		       "# Budgets only go down: `allocscope gate --update` lowers them to what a run\n"
		       "# measured and never raises one; raising a budget is an edit made in review.\n"
		       "# Lines: site|function [objects=N] [bytes=N] NAME, total ..., unlisted ...\n"
		       "unlisted  ignore\n");
	if (!ret)
		ret = add_item_line(&buf, BUDGET_TOTAL, m->total_objects, m->total_bytes, NULL);
	for (size_t i = 0; i < m->n_sites && !ret; i++)
		ret = add_item_line(&buf, BUDGET_SITE, sorted[i]->objects, BUDGET_NO_LIMIT,
				    sorted[i]->name);
	free(sorted);
	if (ret) {
		dynbuf_free(&buf);
		return ret;
	}
	*text = dynbuf_take(&buf, NULL);
	return *text ? 0 : -ENOMEM;
}

int budget__write_file(const char *path, const char *text, char *err, size_t err_len)
{
	char tmp[PATH_MAX];
	size_t len = strlen(text), done = 0;
	int fd, n, ret = 0;

	n = snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		snprintf(err, err_len, "budget path too long: %s", path);
		return -ENAMETOOLONG;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, err_len,
			 "cannot write the budget %s: cannot create %s: %s (the old file is "
			 "unchanged)",
			 path, tmp, strerror(-ret));
		return ret;
	}
	while (done < len && !ret) {
		ssize_t w = write(fd, text + done, len - done);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			ret = w < 0 ? -errno : -EIO;
		else
			done += (size_t)w;
	}
	if (!ret && fsync(fd) != 0)
		ret = -errno;
	if (close(fd) != 0 && !ret)
		ret = -errno;
	if (!ret && rename(tmp, path) != 0)
		ret = -errno;
	if (ret) {
		unlink(tmp);
		snprintf(err, err_len, "cannot write the budget %s: %s (the old file is unchanged)",
			 path, strerror(-ret));
	}
	return ret;
}
