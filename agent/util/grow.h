/* Growing memory with a bound, in one place: a byte buffer (curl's dynbuf is the model: a
 * maximum size fixed at init, an error instead of unbounded growth) and arrays of records that
 * double as they fill. Sizes are checked for overflow; nothing here logs.
 *
 * Ownership: a dynbuf owns its data until dynbuf_take hands it over or dynbuf_free frees it. */
#ifndef ALLOCSCOPE_UTIL_GROW_H
#define ALLOCSCOPE_UTIL_GROW_H

#include <stddef.h>

struct dynbuf {
	char *data; /* NUL-terminated after every successful add; NULL before the first */
	size_t len;
	size_t cap;
	size_t max; /* len never exceeds it */
};

/* An empty buffer that may hold up to max bytes (plus a terminating NUL). */
void dynbuf_init(struct dynbuf *b, size_t max);
/* Appends n bytes. 0, -EFBIG when len would pass max (nothing is added), or -ENOMEM. */
int dynbuf_add(struct dynbuf *b, const void *bytes, size_t n);
/* Makes room for n more bytes at data + len (the caller then adds them to len itself): for
 * read(2) straight into the buffer. 0, -EFBIG or -ENOMEM. */
int dynbuf_reserve(struct dynbuf *b, size_t n);
/* Hands the data (NUL-terminated; NULL when nothing was added) and its length to the caller,
 * who frees it; the buffer is empty again with the same max. */
char *dynbuf_take(struct dynbuf *b, size_t *len);
/* Frees the data; the buffer is empty again with the same max. */
void dynbuf_free(struct dynbuf *b);

/* Makes room in *items (an array of item_size records, *cap of them) for one more after count:
 * doubles, starting at first_cap. 0 or -ENOMEM (the array is left as it was). */
int array_grow(void **items, size_t *cap, size_t count, size_t item_size, size_t first_cap);

#endif
