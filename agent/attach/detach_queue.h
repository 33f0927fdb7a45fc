/* Detaching probes off the agent's loop. Removing a uprobe makes the kernel wait for an RCU
 * grace period (~80 ms measured here, per link), so a few hundred processes exiting at once
 * would stall sampling for seconds if detached inline. Worker threads free them instead;
 * concurrent waits share grace periods, so several workers drain a burst several times
 * faster. */
#ifndef ALLOCSCOPE_DETACH_QUEUE_H
#define ALLOCSCOPE_DETACH_QUEUE_H

#include <stddef.h>

struct detach_queue;
struct process_probes;

/* workers: threads freeing probes (1 .. 64). Returns 0 or -errno. */
int detach_queue__new(unsigned workers, struct detach_queue **out);
/* Takes ownership of probes (NULL is ignored); frees them inline if queueing fails or queue
 * is NULL. */
void detach_queue__push(struct detach_queue *queue, struct process_probes *probes);
/* Processes whose probes are queued or being detached right now. */
size_t detach_queue__pending(struct detach_queue *queue);
/* Detaches everything still queued, then stops the workers. Accepts NULL. */
void detach_queue__free(struct detach_queue *queue);

#endif
