/* Request context per target process (see request_context.h). A small array of processes:
 * targets number in the hundreds at most, and lookups happen once per sample. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "attach/alloc_program.h"
#include "attach/context_tls.h"
#include "collect/process_context.h"
#include "collect/request_context.h"
#include "util/clock.h"
#include "util/grow.h"
#include "util/log.h"

struct context_process {
	pid_t pid;
	bool tls_done;           /* both ABIs found, or tries used up */
	bool keys_done;          /* the OTel key table read, or tries used up */
	bool installed;          /* an entry in context_procs */
	unsigned tries;
	int64_t next_try_ms;
	struct context_tls_found found;
	struct process_context_keys keys;
	struct context_tls_seen *seen; /* files that publish nothing */
};

struct request_contexts {
	struct alloc_program *prog;
	struct request_context_opts opts;
	struct context_process *procs;
	size_t count, cap;
};

int request_contexts__new(struct alloc_program *prog, const struct request_context_opts *opts,
			  struct request_contexts **out)
{
	struct request_contexts *rc = calloc(1, sizeof(*rc));

	*out = NULL;
	if (!rc)
		return -ENOMEM;
	rc->prog = prog;
	rc->opts = *opts;
	*out = rc;
	return 0;
}

void request_contexts__free(struct request_contexts *rc)
{
	if (!rc)
		return;
	for (size_t i = 0; i < rc->count; i++) {
		process_context_keys__clear(&rc->procs[i].keys);
		free(rc->procs[i].seen);
	}
	free(rc->procs);
	free(rc);
}

static struct context_process *find(struct request_contexts *rc, pid_t pid)
{
	for (size_t i = 0; i < rc->count; i++)
		if (rc->procs[i].pid == pid)
			return &rc->procs[i];
	return NULL;
}

void request_contexts__remove(struct request_contexts *rc, pid_t pid);

static void report_found(pid_t pid, const struct context_tls_found *found, int abi)
{
	const struct context_tls *tls = &found->where.tls[abi];

	log_info("pid %d publishes request context (%s) in %s", (int)pid,
		 abi == 0 ? "OpenTelemetry thread context" : "Custom Labels v1", found->files[abi]);
	log_debug("pid %d: TLS pointer %s %lld", (int)pid,
		  tls->model == CONTEXT_TLS_STATIC ? "at the thread pointer +"
						   : "in its dtv module's block +",
		  (long long)tls->offset);
}

static void try_process(struct request_contexts *rc, struct context_process *p)
{
	char err[256];
	int ret;

	p->tries++;
	p->next_try_ms = monotonic_ms() + REQUEST_CONTEXT_RETRY_MS;
	if (!p->tls_done) {
		struct context_tls_found found;

		ret = context_tls__find(p->pid, p->seen, &found, err, sizeof(err));
		if (ret == 0 && (found.where.tls[0].kind || found.where.tls[1].kind) &&
		    memcmp(&found.where, &p->found.where, sizeof(found.where)) != 0) {
			ret = alloc_program__set_context(rc->prog, p->pid, &found.where);
			if (ret)
				log_warn("pid %d: cannot install its request context location: %s",
					 (int)p->pid, strerror(-ret));
			else {
				p->found = found;
				p->installed = true;
				for (int abi = 0; abi < 2; abi++)
					if (found.where.tls[abi].kind)
						report_found(p->pid, &found, abi);
			}
		} else if (ret && ret != -EAGAIN) {
			log_debug("pid %d: no request context: %s", (int)p->pid, err);
		}
		if (ret == -ESRCH || (p->found.where.tls[0].kind && p->found.where.tls[1].kind))
			p->tls_done = true;
	}
	/* Key names matter only for the OTel record. */
	if (!p->keys_done && p->found.where.tls[0].kind) {
		process_context_keys__clear(&p->keys);
		ret = process_context__read_keys(p->pid, &p->keys);
		if (ret == 0) {
			p->keys_done = true;
			log_debug("pid %d: %zu request context keys", (int)p->pid, p->keys.count);
		} else if (ret == -EBADMSG) {
			log_warn("pid %d: its OpenTelemetry process context is malformed: "
				 "attributes get attribute_<index> keys",
				 (int)p->pid);
			p->keys_done = true;
		}
	}
	if (p->tries >= REQUEST_CONTEXT_TRIES) {
		p->tls_done = true;
		p->keys_done = true;
	}
}

void request_contexts__add(struct request_contexts *rc, pid_t pid)
{
	struct context_process *p;

	if (!rc->opts.enabled)
		return;
	/* Added again (it exec'ed): what was known belongs to the old image. */
	request_contexts__remove(rc, pid);
	if (array_grow((void **)&rc->procs, &rc->cap, rc->count, sizeof(*rc->procs), 16))
		return;
	p = &rc->procs[rc->count++];
	memset(p, 0, sizeof(*p));
	p->pid = pid;
	p->seen = calloc(1, sizeof(*p->seen)); /* NULL: every look reads every file */
	try_process(rc, p);
}

void request_contexts__remove(struct request_contexts *rc, pid_t pid)
{
	struct context_process *p = find(rc, pid);

	if (!p)
		return;
	if (p->installed)
		alloc_program__set_context(rc->prog, pid, NULL);
	process_context_keys__clear(&p->keys);
	free(p->seen);
	*p = rc->procs[--rc->count];
}

void request_contexts__refresh(struct request_contexts *rc)
{
	int64_t now;

	if (!rc->count)
		return;
	now = monotonic_ms();
	for (size_t i = 0; i < rc->count; i++) {
		struct context_process *p = &rc->procs[i];

		if ((!p->tls_done || (!p->keys_done && p->found.where.tls[0].kind)) &&
		    now >= p->next_try_ms)
			try_process(rc, p);
	}
}

void request_contexts__labels(struct request_contexts *rc, const struct alloc_sample *sample,
			      struct context_labels *out)
{
	struct context_process *p;

	out->count = 0;
	if (!rc->opts.enabled || sample->context.kind == ALLOC_CONTEXT_NONE)
		return;
	p = find(rc, (pid_t)sample->pid);
	/* A sample can arrive before the key table was read: read it now. */
	if (p && !p->keys_done && sample->context.kind == ALLOC_CONTEXT_OTEL &&
	    monotonic_ms() >= p->next_try_ms)
		try_process(rc, p);
	context_labels__decode(&sample->context, p ? (const char *const *)p->keys.names : NULL,
			       p ? p->keys.count : 0, &rc->opts.labels, out);
}
