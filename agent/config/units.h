/* Parsing of the human quantities users type: sizes ("512KiB") and durations ("30s"), for the
 * command line now and the configuration file later. */
#ifndef ALLOCSCOPE_UNITS_H
#define ALLOCSCOPE_UNITS_H

#include <stddef.h>
#include <stdint.h>

/* Bytes: a whole number with an optional suffix B, K/KB/KiB, M/MB/MiB, G/GB/GiB (all powers of
 * 1024, as allocator sizes are). Returns 0, -EINVAL for malformed text, -ERANGE on overflow. */
int units_parse_size(const char *text, uint64_t *bytes);

/* Milliseconds: a whole or decimal number with suffix ms, s, m or h; a bare number is seconds.
 * Returns 0, -EINVAL for malformed or negative text, -ERANGE when too large. */
int units_parse_duration(const char *text, uint64_t *millis);

/* "1.50 MiB"-style rendering into buf; returns buf. */
const char *units_format_size(double bytes, char *buf, size_t len);

#endif
