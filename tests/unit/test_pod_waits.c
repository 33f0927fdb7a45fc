/* Unit tests for collect/pod_waits.c: entries held by a pidfd in the caller's epoll set (an
 * exit shows there with the entry's tag), the bound, and when entries are looked at again:
 * waiting ones when the pod cache answers or their wait expires, decided ones after a
 * successful refresh, none when nothing changed. Child processes stand in for the processes
 * in containers; no BPF, no privileges. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/wait.h>

#include "unit.h"
#include "collect/pod_waits.h"

#define TAG (1ull << 33)
#define MAX_WAIT_MS 20000
#define CHECK_MS 1000
#define CONTAINER "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/* A child that lives until killed. */
static pid_t start_child(void)
{
	pid_t pid = fork();

	if (pid == 0) {
		for (;;)
			pause();
	}
	CHECK(pid > 0);
	return pid;
}

static void stop_child(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

static struct pod_waits *new_table(int epoll_fd, size_t max_entries)
{
	struct pod_waits_opts opts = {
		.epoll_fd = epoll_fd,
		.epoll_tag = TAG,
		.max_entries = max_entries,
		.max_wait_ms = MAX_WAIT_MS,
		.check_ms = CHECK_MS,
	};
	struct pod_waits *w = NULL;

	CHECK(pod_waits__new(&opts, &w) == 0);
	return w;
}

static void test_entries_are_found_counted_and_removed(void)
{
	int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	struct pod_waits *w = new_table(epoll_fd, 16);
	pid_t a = start_child(), b = start_child();
	struct pod_wait *e;

	CHECK(pod_waits__add(w, a, CONTAINER, false, 100) == 0);
	CHECK(pod_waits__add(w, b, "feed", true, 200) == 0);
	CHECK_EQ_U64(pod_waits__count(w), 2);
	CHECK_EQ_U64(pod_waits__waiting(w), 1);
	e = pod_waits__find(w, a);
	CHECK(e && e->pid == a && !e->decided && e->since_ms == 100);
	CHECK_STR(e ? e->container_id : NULL, CONTAINER);
	CHECK(pod_waits__find(w, b) && pod_waits__find(w, b)->decided);
	CHECK(!pod_waits__find(w, getpid()));
	CHECK(pod_waits__alive(e));
	pod_waits__set_decided(w, e);
	pod_waits__set_decided(w, e); /* once only */
	CHECK_EQ_U64(pod_waits__waiting(w), 0);
	pod_waits__remove(w, e);
	CHECK(!pod_waits__find(w, a));
	CHECK_EQ_U64(pod_waits__count(w), 1);
	pod_waits__clear(w);
	CHECK_EQ_U64(pod_waits__count(w), 0);
	CHECK(!pod_waits__find(w, b));
	pod_waits__free(w);
	stop_child(a);
	stop_child(b);
	close(epoll_fd);
}

static void test_an_exit_is_seen_in_the_epoll_set(void)
{
	int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	struct pod_waits *w = new_table(epoll_fd, 16);
	pid_t a = start_child();
	struct epoll_event ev = { 0 };
	struct pod_wait *e;

	CHECK(pod_waits__add(w, a, CONTAINER, false, 0) == 0);
	CHECK(epoll_wait(epoll_fd, &ev, 1, 0) == 0); /* running: nothing to say */
	kill(a, SIGKILL);
	CHECK(epoll_wait(epoll_fd, &ev, 1, 5000) == 1);
	CHECK(ev.data.u64 == (TAG | (uint32_t)a));
	waitpid(a, NULL, 0);
	e = pod_waits__find(w, a);
	CHECK(e && !pod_waits__alive(e));
	pod_waits__remove(w, e);
	CHECK(epoll_wait(epoll_fd, &ev, 1, 0) == 0); /* the pidfd left the set */
	pod_waits__free(w);
	close(epoll_fd);
}

static void test_gone_processes_and_a_full_table_are_refused(void)
{
	int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	struct pod_waits *w = new_table(epoll_fd, 2);
	pid_t a = start_child(), b = start_child(), c = start_child(), gone = start_child();

	stop_child(gone);
	CHECK(pod_waits__add(w, gone, CONTAINER, false, 0) == -ESRCH);
	CHECK_EQ_U64(pod_waits__count(w), 0);
	CHECK(pod_waits__add(w, a, CONTAINER, false, 0) == 0);
	CHECK(pod_waits__add(w, b, CONTAINER, true, 0) == 0);
	CHECK(pod_waits__add(w, c, CONTAINER, false, 0) == -ENOSPC);
	CHECK(!pod_waits__find(w, c));
	CHECK_EQ_U64(pod_waits__count(w), 2);
	CHECK_EQ_U64(pod_waits__waiting(w), 1);
	pod_waits__free(w); /* closes what it holds */
	stop_child(a);
	stop_child(b);
	stop_child(c);
	close(epoll_fd);
}

/* ---- when entries are looked at again ------------------------------------------------ */

struct visits {
	pid_t retried[8], rechecked[8];
	size_t n_retried, n_rechecked;
	struct pod_waits *w;
	bool remove; /* as the agent does once it decides */
};

static void on_retry(struct pod_wait *entry, int64_t now_ms, void *ctx)
{
	struct visits *v = ctx;

	if (v->n_retried < 8)
		v->retried[v->n_retried++] = entry->pid;
	if (v->remove)
		pod_waits__remove(v->w, entry);
}

static void on_recheck(struct pod_wait *entry, void *ctx)
{
	struct visits *v = ctx;

	if (v->n_rechecked < 8)
		v->rechecked[v->n_rechecked++] = entry->pid;
	if (v->remove)
		pod_waits__remove(v->w, entry);
}

static void poll_table(struct pod_waits *w, struct visits *v, uint64_t refreshes, uint64_t errors,
		 int64_t now)
{
	const struct pod_waits_visit visit = { on_retry, on_recheck, v };

	v->n_retried = v->n_rechecked = 0;
	pod_waits__poll(w, refreshes, errors, now, &visit);
}

static void test_entries_are_visited_only_when_there_is_news(void)
{
	int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	struct pod_waits *w = new_table(epoll_fd, 16);
	pid_t waiting = start_child(), decided = start_child();
	struct visits v = { .w = w };

	CHECK(pod_waits__add(w, waiting, CONTAINER, false, 0) == 0);
	CHECK(pod_waits__add(w, decided, CONTAINER, true, 0) == 0);
	/* The first look at a fresh cache's counters (0, 0) is no news, and the deadline check
	 * finds nothing expired at 0 ms. */
	poll_table(w, &v, 0, 0, 0);
	CHECK_EQ_U64(v.n_retried + v.n_rechecked, 0);
	poll_table(w, &v, 0, 0, 10);
	CHECK_EQ_U64(v.n_retried + v.n_rechecked, 0); /* nothing new, next check at 1000 */
	/* A failed refresh answers the waiting (the cache may now say "not a pod's") but lists
	 * nothing new for the decided. */
	poll_table(w, &v, 0, 1, 20);
	CHECK_EQ_U64(v.n_retried, 1);
	CHECK(v.retried[0] == waiting);
	CHECK_EQ_U64(v.n_rechecked, 0);
	/* A successful refresh: both. */
	poll_table(w, &v, 1, 1, 30);
	CHECK_EQ_U64(v.n_retried, 1);
	CHECK_EQ_U64(v.n_rechecked, 1);
	CHECK(v.rechecked[0] == decided);
	poll_table(w, &v, 1, 1, 40);
	CHECK_EQ_U64(v.n_retried + v.n_rechecked, 0);
	/* No answer at all: the waiting entry is looked at when its wait has expired, at the
	 * first check (one every CHECK_MS) after MAX_WAIT_MS, not before. */
	poll_table(w, &v, 1, 1, 1000);
	CHECK_EQ_U64(v.n_retried, 0); /* checked, not expired */
	poll_table(w, &v, 1, 1, MAX_WAIT_MS - 1);
	CHECK_EQ_U64(v.n_retried, 0);
	CHECK(!pod_waits__expired(w, pod_waits__find(w, waiting), MAX_WAIT_MS - 1));
	CHECK(pod_waits__expired(w, pod_waits__find(w, waiting), MAX_WAIT_MS));
	poll_table(w, &v, 1, 1, MAX_WAIT_MS + 5);
	CHECK_EQ_U64(v.n_retried, 0); /* expired, but the next check is at 20999 */
	poll_table(w, &v, 1, 1, MAX_WAIT_MS + CHECK_MS);
	CHECK_EQ_U64(v.n_retried, 1);
	CHECK_EQ_U64(v.n_rechecked, 0);
	/* A new pod cache counts from zero again: its first refresh is news. */
	pod_waits__new_cache(w);
	v.remove = true;
	poll_table(w, &v, 1, 0, MAX_WAIT_MS + CHECK_MS + 10);
	CHECK_EQ_U64(v.n_retried, 1);
	CHECK_EQ_U64(v.n_rechecked, 1);
	CHECK_EQ_U64(pod_waits__count(w), 0); /* the visitors removed them, safely */
	pod_waits__free(w);
	stop_child(waiting);
	stop_child(decided);
	close(epoll_fd);
}

static void test_decided_entries_wait_for_no_deadline(void)
{
	int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	struct pod_waits *w = new_table(epoll_fd, 16);
	pid_t decided = start_child();
	struct visits v = { .w = w };

	CHECK(pod_waits__add(w, decided, CONTAINER, true, 0) == 0);
	poll_table(w, &v, 0, 0, 0);
	poll_table(w, &v, 0, 0, 10 * MAX_WAIT_MS);
	CHECK_EQ_U64(v.n_retried + v.n_rechecked, 0);
	poll_table(w, &v, 0, 3, 10 * MAX_WAIT_MS); /* failed refreshes list nothing */
	CHECK_EQ_U64(v.n_retried + v.n_rechecked, 0);
	pod_waits__free(w);
	stop_child(decided);
	close(epoll_fd);
}

int main(void)
{
	RUN(test_entries_are_found_counted_and_removed);
	RUN(test_an_exit_is_seen_in_the_epoll_set);
	RUN(test_gone_processes_and_a_full_table_are_refused);
	RUN(test_entries_are_visited_only_when_there_is_news);
	RUN(test_decided_entries_wait_for_no_deadline);
	return unit_summary("pod_waits");
}
