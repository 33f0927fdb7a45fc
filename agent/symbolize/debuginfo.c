/* debuginfod queries with a deadline and a per-build-id memory (see debuginfo.h).
 *
 * libdebuginfod calls its progress callback about once a second while a transfer runs (its
 * poll loop waits at most a second); returning nonzero there abandons the query, which is
 * how the deadline is kept whatever the server does: refuse, accept and never answer, or
 * trickle bytes. Its own DEBUGINFOD_TIMEOUT only bounds stalls, not the whole query. */
#include "symbolize/debuginfo.h"
#include "util/clock.h"
#include "util/grow.h"

#include <elfutils/debuginfod.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct debuginfo_answer {
	char *build_id;
	char *path; /* NULL when error */
	int error;
};

struct debuginfo_client {
	char *urls;
	uint64_t timeout_ns;
	debuginfod_client *handle; /* made on the first query */
	bool handle_failed;
	bool down;
	/* The running query's deadline, read by the progress callback. */
	uint64_t deadline_ns;
	bool deadline_hit;
	struct debuginfo_answer *answers;
	size_t n_answers, cap_answers;
	unsigned queries;
};

int debuginfo_client__new(const char *urls, unsigned timeout_seconds, struct debuginfo_client **out)
{
	struct debuginfo_client *c;

	*out = NULL;
	if (!urls || !urls[0] || strspn(urls, " \t") == strlen(urls))
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->urls = strdup(urls);
	if (!c->urls) {
		free(c);
		return -ENOMEM;
	}
	c->timeout_ns = (uint64_t)(timeout_seconds ? timeout_seconds : DEBUGINFO_DEFAULT_TIMEOUT) *
			1000000000ULL;
	*out = c;
	return 0;
}

void debuginfo_client__free(struct debuginfo_client *c)
{
	size_t i;

	if (!c)
		return;
	if (c->handle)
		debuginfod_end(c->handle);
	for (i = 0; i < c->n_answers; i++) {
		free(c->answers[i].build_id);
		free(c->answers[i].path);
	}
	free(c->answers);
	free(c->urls);
	free(c);
}

static int on_progress(debuginfod_client *handle, long done, long total)
{
	struct debuginfo_client *c = debuginfod_get_user_data(handle);

	if (c && monotonic_ns() >= c->deadline_ns) {
		c->deadline_hit = true;
		return 1; /* abandon the query */
	}
	return 0;
}

static bool valid_build_id(const char *id)
{
	size_t len = strlen(id);

	return len >= 2 && len % 2 == 0 && len <= 128 && strspn(id, "0123456789abcdef") == len;
}

static int remember(struct debuginfo_client *c, const char *build_id, char *path, int error)
{
	struct debuginfo_answer *a;

	if (array_grow((void **)&c->answers, &c->cap_answers, c->n_answers, sizeof(*c->answers),
		       16))
		return -ENOMEM;
	a = &c->answers[c->n_answers];
	a->build_id = strdup(build_id);
	if (!a->build_id)
		return -ENOMEM;
	a->path = path;
	a->error = error;
	c->n_answers++;
	return 0;
}

/* libdebuginfod's cache directory, found as it finds it. */
static int cache_dir(char *out, size_t len)
{
	const char *env = getenv(DEBUGINFOD_CACHE_PATH_ENV_VAR);
	const char *home = getenv("HOME"), *xdg = getenv("XDG_CACHE_HOME");
	struct stat st;
	int n;

	if (!home)
		home = "/";
	if (env && env[0]) {
		n = snprintf(out, len, "%s", env);
	} else {
		n = snprintf(out, len, "%s/.debuginfod_client_cache", home);
		if (n > 0 && (size_t)n < len && stat(out, &st) != 0) {
			if (xdg && xdg[0])
				n = snprintf(out, len, "%s/debuginfod_client", xdg);
			else
				n = snprintf(out, len, "%s/.cache/debuginfod_client", home);
		}
	}
	return n > 0 && (size_t)n < len ? 0 : -ENAMETOOLONG;
}

/* libdebuginfod records an abandoned query as a miss (an empty file it trusts for ten
 * minutes). A timeout says nothing about the server having the file: drop that record, so
 * the next capture may ask again. */
static void forget_abandoned_miss(const char *build_id)
{
	char dir[PATH_MAX], path[PATH_MAX + 160];
	struct stat st;
	int n;

	if (cache_dir(dir, sizeof(dir)) != 0)
		return;
	n = snprintf(path, sizeof(path), "%s/%s/debuginfo", dir, build_id);
	if (n > 0 && (size_t)n < sizeof(path) && lstat(path, &st) == 0 && S_ISREG(st.st_mode) &&
	    st.st_size == 0)
		unlink(path);
}

/* One query to libdebuginfod; 0 with *path malloc'd, or -errno. */
static int query(struct debuginfo_client *c, const char *build_id, char **path)
{
	const char *env_urls = getenv(DEBUGINFOD_URLS_ENV_VAR);
	int fd;

	*path = NULL;
	if (!c->handle) {
		if (c->handle_failed)
			return -ENOSYS;
		errno = 0;
		c->handle = debuginfod_begin();
		if (!c->handle) {
			c->handle_failed = true;
			return errno ? -errno : -ENOSYS;
		}
		debuginfod_set_user_data(c->handle, c);
		/* Also replaces the default progress printer DEBUGINFOD_PROGRESS may set. */
		debuginfod_set_progressfn(c->handle, on_progress);
	}
	if ((!env_urls || strcmp(env_urls, c->urls) != 0) &&
	    setenv(DEBUGINFOD_URLS_ENV_VAR, c->urls, 1) != 0)
		return -errno;
	c->queries++;
	c->deadline_hit = false;
	c->deadline_ns = monotonic_ns() + c->timeout_ns;
	fd = debuginfod_find_debuginfo(c->handle, (const unsigned char *)build_id, 0, path);
	if (fd >= 0) {
		close(fd);
		return *path ? 0 : -ENOMEM;
	}
	free(*path);
	*path = NULL;
	/* An abandoned query reports "not found"; say what really happened. */
	if (c->deadline_hit) {
		forget_abandoned_miss(build_id);
		return -ETIMEDOUT;
	}
	return fd;
}

/* Whether error says the servers, not this build id, are the problem. */
static bool server_failure(int error)
{
	switch (error) {
	case -ENOENT: /* 404: that server is fine */
	case -EFBIG:
	case -ENOMEM:
	case -EINVAL:
		return false;
	default:
		return true;
	}
}

int debuginfo_client__find_debuginfo(struct debuginfo_client *c, const char *build_id,
				     const char **path)
{
	char *found = NULL;
	size_t i;
	int ret;

	if (!c || !build_id || !path)
		return -EINVAL;
	*path = NULL;
	if (!valid_build_id(build_id))
		return -EINVAL;
	for (i = 0; i < c->n_answers; i++) {
		if (strcmp(c->answers[i].build_id, build_id) == 0) {
			*path = c->answers[i].path;
			return c->answers[i].error;
		}
	}
	if (c->down)
		return -EHOSTDOWN;
	ret = query(c, build_id, &found);
	if (ret == -ENOMEM)
		return ret; /* not remembered: worth asking again */
	if (ret && server_failure(ret))
		c->down = true;
	if (remember(c, build_id, found, ret) != 0) {
		free(found);
		return -ENOMEM;
	}
	*path = found;
	return ret;
}

unsigned debuginfo_client__queries(const struct debuginfo_client *c)
{
	return c ? c->queries : 0;
}

bool debuginfo_client__server_down(const struct debuginfo_client *c)
{
	return c && c->down;
}
