/* Processes in containers whose pod the pod cache (kube_pods.h) does not know yet. The pod
 * cache never blocks: the decision on such a process waits until a refresh lists its pod, the
 * cache says it is not a pod's, or max_wait_ms pass with the API unreachable; the process is
 * then decided without pod metadata and stays in the table, decided, so that a later refresh
 * that lists its pod decides it again.
 *
 * Each entry holds a pidfd in the caller's epoll set (tagged tag | pid), so an exit removes the
 * entry and a reused pid is never mistaken for the process that waited. The table is bounded:
 * past max_entries, pod_waits__add refuses and the caller decides at once. */
#ifndef ALLOCSCOPE_POD_WAITS_H
#define ALLOCSCOPE_POD_WAITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "collect/container_id.h"

struct pod_wait {
	pid_t pid;
	int pidfd;
	char container_id[CONTAINER_ID_LEN + 1];
	int64_t since_ms; /* when its decision first waited (or was decided without its pod) */
	bool decided;     /* decided without its pod; watched for a refresh that lists it */
	struct pod_wait *next; /* the table's */
};

struct pod_waits_opts {
	int epoll_fd;         /* every entry's pidfd is watched here */
	uint64_t epoll_tag;   /* ... with data.u64 = epoll_tag | (uint32_t)pid */
	size_t max_entries;
	int64_t max_wait_ms;  /* how long a decision may wait for its pod */
	int64_t check_ms;     /* how often waiting entries are checked against max_wait_ms */
};

struct pod_waits;

int pod_waits__new(const struct pod_waits_opts *opts, struct pod_waits **out);
/* Removes every entry (closing its pidfd), frees the table. Accepts NULL. */
void pod_waits__free(struct pod_waits *w);

/* Adds pid: its decision waits (decided false), or it was decided without its pod (true).
 * Returns 0, -ENOSPC when the table is full, -ESRCH when the process is gone, or another
 * -errno (the pidfd or epoll). */
int pod_waits__add(struct pod_waits *w, pid_t pid, const char *container_id, bool decided,
		   int64_t now_ms);
struct pod_wait *pod_waits__find(struct pod_waits *w, pid_t pid);
/* Removes and frees entry (its pidfd leaves the epoll set and is closed). */
void pod_waits__remove(struct pod_waits *w, struct pod_wait *entry);
void pod_waits__clear(struct pod_waits *w);
/* A waiting entry was decided without its pod: kept, watched for a later refresh. */
void pod_waits__set_decided(struct pod_waits *w, struct pod_wait *entry);
/* True once entry has waited max_wait_ms. */
bool pod_waits__expired(const struct pod_waits *w, const struct pod_wait *entry, int64_t now_ms);
/* True while the process behind the entry runs: then its pid is still its own. */
bool pod_waits__alive(const struct pod_wait *entry);

/* What pod_waits__poll calls. Either may remove the entry it is given (and add entries). */
struct pod_waits_visit {
	/* A waiting entry: the pod cache answered a request, or the entry's wait expired. */
	void (*retry)(struct pod_wait *entry, int64_t now_ms, void *ctx);
	/* A decided entry, after a successful refresh: its pod may be listed now. */
	void (*recheck)(struct pod_wait *entry, void *ctx);
	void *ctx;
};

/* Called every turn of the caller's loop with the pod cache's counters (successful refreshes
 * and failed ones since the cache was made): visits the entries that have something new to
 * learn, and none when nothing changed and no wait expired. */
void pod_waits__poll(struct pod_waits *w, uint64_t refreshes, uint64_t refresh_errors,
		     int64_t now_ms, const struct pod_waits_visit *visit);
/* The pod cache was replaced: its counters start again from zero. */
void pod_waits__new_cache(struct pod_waits *w);

size_t pod_waits__count(const struct pod_waits *w);   /* every entry */
size_t pod_waits__waiting(const struct pod_waits *w); /* entries whose decision waits */

#endif
