/* The exec and fork notices of the continuous agent, drained from their own ring buffer in
 * batches: a batch lets the agent skip a fork whose child exec'ed right after (fork + exec is
 * how most processes start), so attaching follows what the process became. */
#ifndef ALLOCSCOPE_PROCESS_EVENTS_H
#define ALLOCSCOPE_PROCESS_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "alloc.h"

struct process_events;

/* ringbuf_fd: the program's process_events map. 0, -ENOMEM or libbpf's -errno. */
int process_events__new(int ringbuf_fd, struct process_events **out);
/* Accepts NULL. */
void process_events__free(struct process_events *events);

/* Polls readable when notices are waiting; add it to the owner's poll set. */
int process_events__fd(const struct process_events *events);

/* Takes every notice now queued, in order, into an internal batch: *batch points at n of
 * them, valid until the next call. Returns 0 or -errno. */
int process_events__drain(struct process_events *events, const struct process_event **batch,
			  size_t *n);

/* Records of the wrong size (a mismatched build). */
uint64_t process_events__malformed(const struct process_events *events);
/* Notices dropped because the batch could not grow (out of memory). */
uint64_t process_events__lost(const struct process_events *events);

#endif
