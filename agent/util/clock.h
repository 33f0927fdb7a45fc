/* The agent's clocks, read one way everywhere: CLOCK_MONOTONIC for intervals, deadlines and
 * timeouts (it never jumps), CLOCK_REALTIME only for timestamps written into profiles. */
#ifndef ALLOCSCOPE_UTIL_CLOCK_H
#define ALLOCSCOPE_UTIL_CLOCK_H

#include <stdint.h>

/* CLOCK_MONOTONIC in milliseconds. */
int64_t monotonic_ms(void);
/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t monotonic_ns(void);
/* CLOCK_REALTIME in nanoseconds since the epoch. */
uint64_t wall_ns(void);

#endif
