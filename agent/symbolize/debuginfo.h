/* Debug files fetched by build id from debuginfod servers, through elfutils' libdebuginfod:
 * what makes a stripped distribution binary name its functions, lines and inline frames when
 * no debug package is installed.
 *
 * A capture must never wait on a server for long: every query has a deadline (the timeout
 * given at creation) enforced through libdebuginfod's progress callback, and once a server
 * has timed out or refused, no further query is sent for the life of the client. Answers,
 * failures included, are remembered per build id, so each is asked at most once. Downloads
 * land in libdebuginfod's cache directory: $DEBUGINFOD_CACHE_PATH, else
 * $XDG_CACHE_HOME/debuginfod_client or ~/.cache/debuginfod_client.
 *
 * libdebuginfod reads its server list from the environment only: a query sets
 * DEBUGINFOD_URLS to the client's list when it differs, which affects the whole process (set
 * the same list in the environment before starting threads to avoid that). Not thread-safe. */
#ifndef ALLOCSCOPE_SYMBOLIZE_DEBUGINFO_H
#define ALLOCSCOPE_SYMBOLIZE_DEBUGINFO_H

#include <stdbool.h>

struct debuginfo_client;

/* urls: space-separated server URLs, as in DEBUGINFOD_URLS. timeout_seconds bounds each
 * query (0: DEBUGINFO_DEFAULT_TIMEOUT). Nothing is contacted until the first query.
 * 0, -EINVAL (no URL), -ENOMEM. */
#define DEBUGINFO_DEFAULT_TIMEOUT 10
int debuginfo_client__new(const char *urls, unsigned timeout_seconds,
			  struct debuginfo_client **out);
void debuginfo_client__free(struct debuginfo_client *c);

/* The local path of the debug file for build_id (lowercase hex), from the cache or fetched
 * now. The path is owned by c. 0; -ENOENT when no server has it; -ETIMEDOUT when the query
 * hit its deadline; -EHOSTDOWN when an earlier query found the servers unusable (nothing
 * is sent); -EINVAL for a malformed build id; other -errno from libdebuginfod (-ECONNREFUSED,
 * -EHOSTUNREACH, ...). A repeated build id gets the first answer without a query. */
int debuginfo_client__find_debuginfo(struct debuginfo_client *c, const char *build_id,
				     const char **path);

/* Queries actually sent to libdebuginfod so far (tests, statistics). */
unsigned debuginfo_client__queries(const struct debuginfo_client *c);
/* True once a query timed out or could not reach the servers. */
bool debuginfo_client__server_down(const struct debuginfo_client *c);

#endif
