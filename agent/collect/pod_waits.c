/* The pod wait table (pod_waits.h): a hash of pids, each entry holding a pidfd in the caller's
 * epoll set, and the rule for when entries are looked at again. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/syscall.h>

#include "collect/pod_waits.h"

#define POD_WAIT_BUCKETS 4096

struct pod_waits {
	struct pod_waits_opts opts;
	struct pod_wait *buckets[POD_WAIT_BUCKETS];
	size_t n, n_waiting; /* all entries; those whose decision waits */
	uint64_t seen_refreshes, seen_answers; /* the pod cache's counters last seen */
	int64_t next_check_ms;
};

int pod_waits__new(const struct pod_waits_opts *opts, struct pod_waits **out)
{
	struct pod_waits *w = calloc(1, sizeof(*w));

	*out = NULL;
	if (!w)
		return -ENOMEM;
	w->opts = *opts;
	*out = w;
	return 0;
}

void pod_waits__free(struct pod_waits *w)
{
	if (!w)
		return;
	pod_waits__clear(w);
	free(w);
}

static struct pod_wait **bucket_of(struct pod_waits *w, pid_t pid)
{
	return &w->buckets[(uint32_t)pid % POD_WAIT_BUCKETS];
}

struct pod_wait *pod_waits__find(struct pod_waits *w, pid_t pid)
{
	for (struct pod_wait *e = *bucket_of(w, pid); e; e = e->next)
		if (e->pid == pid)
			return e;
	return NULL;
}

void pod_waits__remove(struct pod_waits *w, struct pod_wait *entry)
{
	struct pod_wait **link = bucket_of(w, entry->pid);

	while (*link != entry)
		link = &(*link)->next;
	*link = entry->next;
	epoll_ctl(w->opts.epoll_fd, EPOLL_CTL_DEL, entry->pidfd, NULL);
	close(entry->pidfd);
	if (!entry->decided)
		w->n_waiting--;
	w->n--;
	free(entry);
}

void pod_waits__clear(struct pod_waits *w)
{
	for (size_t b = 0; b < POD_WAIT_BUCKETS; b++) {
		while (w->buckets[b])
			pod_waits__remove(w, w->buckets[b]);
	}
}

int pod_waits__add(struct pod_waits *w, pid_t pid, const char *container_id, bool decided,
		   int64_t now_ms)
{
	struct epoll_event ev = { .events = EPOLLIN,
				  .data.u64 = w->opts.epoll_tag | (uint32_t)pid };
	struct pod_wait *e;
	int ret;

	if (w->n >= w->opts.max_entries)
		return -ENOSPC;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (e->pidfd < 0) {
		ret = errno == ESRCH ? -ESRCH : -errno;
		free(e);
		return ret;
	}
	if (epoll_ctl(w->opts.epoll_fd, EPOLL_CTL_ADD, e->pidfd, &ev) != 0) {
		ret = -errno;
		close(e->pidfd);
		free(e);
		return ret;
	}
	e->pid = pid;
	snprintf(e->container_id, sizeof(e->container_id), "%s", container_id);
	e->since_ms = now_ms;
	e->decided = decided;
	e->next = *bucket_of(w, pid);
	*bucket_of(w, pid) = e;
	w->n++;
	if (!decided)
		w->n_waiting++;
	return 0;
}

void pod_waits__set_decided(struct pod_waits *w, struct pod_wait *entry)
{
	if (entry->decided)
		return;
	entry->decided = true;
	w->n_waiting--;
}

bool pod_waits__expired(const struct pod_waits *w, const struct pod_wait *entry, int64_t now_ms)
{
	return now_ms >= entry->since_ms + w->opts.max_wait_ms;
}

bool pod_waits__alive(const struct pod_wait *entry)
{
	return syscall(SYS_pidfd_send_signal, entry->pidfd, 0, NULL, 0) == 0;
}

void pod_waits__poll(struct pod_waits *w, uint64_t refreshes, uint64_t refresh_errors,
		     int64_t now_ms, const struct pod_waits_visit *visit)
{
	bool answered = refreshes + refresh_errors != w->seen_answers;
	bool refreshed = refreshes != w->seen_refreshes;
	bool deadline = w->n_waiting && now_ms >= w->next_check_ms;

	w->seen_answers = refreshes + refresh_errors;
	w->seen_refreshes = refreshes;
	if (!w->n || (!answered && !refreshed && !deadline))
		return;
	if (deadline)
		w->next_check_ms = now_ms + w->opts.check_ms;
	for (size_t b = 0; b < POD_WAIT_BUCKETS; b++) {
		struct pod_wait *e = w->buckets[b], *next;

		for (; e; e = next) {
			next = e->next;
			if (!e->decided && (answered || pod_waits__expired(w, e, now_ms)))
				visit->retry(e, now_ms, visit->ctx);
			else if (e->decided && refreshed)
				visit->recheck(e, visit->ctx);
		}
	}
}

void pod_waits__new_cache(struct pod_waits *w)
{
	w->seen_refreshes = w->seen_answers = 0;
}

size_t pod_waits__count(const struct pod_waits *w)
{
	return w->n;
}

size_t pod_waits__waiting(const struct pod_waits *w)
{
	return w->n_waiting;
}
