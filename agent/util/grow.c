/* Bounded growth (see grow.h). Capacity doubles (from 256 bytes for a dynbuf), clamped to
 * the bound, so a buffer near its max costs no more than the max. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/grow.h"

#define DYNBUF_FIRST_CAP 256

void dynbuf_init(struct dynbuf *b, size_t max)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->max = max < SIZE_MAX ? max : SIZE_MAX - 1;
}

int dynbuf_reserve(struct dynbuf *b, size_t n)
{
	size_t need, cap;
	char *grown;

	if (n > b->max - b->len)
		return -EFBIG;
	need = b->len + n + 1; /* the NUL */
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : DYNBUF_FIRST_CAP;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	if (cap > b->max + 1)
		cap = b->max + 1;
	grown = realloc(b->data, cap);
	if (!grown)
		return -ENOMEM;
	b->data = grown;
	b->cap = cap;
	return 0;
}

int dynbuf_add(struct dynbuf *b, const void *bytes, size_t n)
{
	int ret = dynbuf_reserve(b, n);

	if (ret)
		return ret;
	if (n)
		memcpy(b->data + b->len, bytes, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

char *dynbuf_take(struct dynbuf *b, size_t *len)
{
	char *data = b->data;

	if (len)
		*len = b->len;
	dynbuf_init(b, b->max);
	return data;
}

void dynbuf_free(struct dynbuf *b)
{
	free(b->data);
	dynbuf_init(b, b->max);
}

int array_grow(void **items, size_t *cap, size_t count, size_t item_size, size_t first_cap)
{
	size_t new_cap;
	void *grown;

	if (count < *cap)
		return 0;
	new_cap = *cap ? *cap * 2 : first_cap;
	if (new_cap <= count || new_cap > SIZE_MAX / item_size)
		return -ENOMEM;
	grown = realloc(*items, new_cap * item_size);
	if (!grown)
		return -ENOMEM;
	*items = grown;
	*cap = new_cap;
	return 0;
}
