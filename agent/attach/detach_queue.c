/* A mutex-protected singly linked FIFO of probe sets and a fixed pool of workers that pop and
 * free them. The workers block every signal so the agent's signalfd sees them all. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>

#include "detach_queue.h"
#include "process_probes.h"

#define MAX_WORKERS 64

struct pending_detach {
	struct pending_detach *next;
	struct process_probes *probes;
};

struct detach_queue {
	pthread_mutex_t lock;
	pthread_cond_t work;
	struct pending_detach *head, *tail;
	size_t pending; /* queued plus in progress */
	bool stopping;
	pthread_t workers[MAX_WORKERS];
	unsigned n_workers;
};

static void *detach_worker(void *arg)
{
	struct detach_queue *queue = arg;

	pthread_mutex_lock(&queue->lock);
	for (;;) {
		struct pending_detach *item = queue->head;

		if (!item) {
			if (queue->stopping)
				break;
			pthread_cond_wait(&queue->work, &queue->lock);
			continue;
		}
		queue->head = item->next;
		if (!queue->head)
			queue->tail = NULL;
		pthread_mutex_unlock(&queue->lock);
		process_probes__free(item->probes);
		free(item);
		pthread_mutex_lock(&queue->lock);
		queue->pending--;
	}
	pthread_mutex_unlock(&queue->lock);
	return NULL;
}

int detach_queue__new(unsigned workers, struct detach_queue **out)
{
	struct detach_queue *queue;
	sigset_t all, old;
	int ret = 0;

	*out = NULL;
	if (workers < 1 || workers > MAX_WORKERS)
		return -EINVAL;
	queue = calloc(1, sizeof(*queue));
	if (!queue)
		return -ENOMEM;
	pthread_mutex_init(&queue->lock, NULL);
	pthread_cond_init(&queue->work, NULL);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (unsigned i = 0; i < workers; i++) {
		ret = -pthread_create(&queue->workers[i], NULL, detach_worker, queue);
		if (ret)
			break;
		queue->n_workers++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret) {
		detach_queue__free(queue);
		return ret;
	}
	*out = queue;
	return 0;
}

void detach_queue__push(struct detach_queue *queue, struct process_probes *probes)
{
	struct pending_detach *item;

	if (!probes)
		return;
	item = queue ? malloc(sizeof(*item)) : NULL;
	if (!item) {
		process_probes__free(probes);
		return;
	}
	item->next = NULL;
	item->probes = probes;
	pthread_mutex_lock(&queue->lock);
	if (queue->tail)
		queue->tail->next = item;
	else
		queue->head = item;
	queue->tail = item;
	queue->pending++;
	pthread_cond_signal(&queue->work);
	pthread_mutex_unlock(&queue->lock);
}

size_t detach_queue__pending(struct detach_queue *queue)
{
	size_t pending;

	pthread_mutex_lock(&queue->lock);
	pending = queue->pending;
	pthread_mutex_unlock(&queue->lock);
	return pending;
}

void detach_queue__free(struct detach_queue *queue)
{
	if (!queue)
		return;
	pthread_mutex_lock(&queue->lock);
	queue->stopping = true;
	pthread_cond_broadcast(&queue->work);
	pthread_mutex_unlock(&queue->lock);
	/* Workers leave only once the queue is empty: everything gets detached. */
	for (unsigned i = 0; i < queue->n_workers; i++)
		pthread_join(queue->workers[i], NULL);
	while (queue->head) {
		struct pending_detach *item = queue->head;

		queue->head = item->next;
		process_probes__free(item->probes);
		free(item);
	}
	pthread_cond_destroy(&queue->work);
	pthread_mutex_destroy(&queue->lock);
	free(queue);
}
