/* Self-metrics over HTTP on a loopback address: GET /metrics answers the Prometheus text
 * exposition format (version 0.0.4), GET /healthz "ok" with 200 or the reason with 503. A
 * thread of its own serves a snapshot the agent publishes, so a slow or hostile client never
 * stalls sampling. It serves up to 32 connections at once, each for at most 2 s from accept;
 * one more closes the oldest, so idle or trickling clients cannot keep /healthz from
 * answering. metrics_text builds that snapshot. */
#ifndef ALLOCSCOPE_METRICS_SERVER_H
#define ALLOCSCOPE_METRICS_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct metrics_server;

/* listen: "HOST:PORT" with an IPv4 address, "[IPV6]:PORT", or "localhost:PORT"; port 0 picks
 * a free one. Non-loopback addresses are refused unless allow_remote (the metrics are not
 * secret, but exposing them is a decision). Returns 0 or -errno with a sentence in err. */
int metrics_server__new(const char *listen, bool allow_remote, struct metrics_server **out,
			char *err, size_t err_len);
/* Stops the thread, closes the socket. Accepts NULL. */
void metrics_server__free(struct metrics_server *server);
/* The bound port (useful with port 0). */
uint16_t metrics_server__port(const struct metrics_server *server);

/* Replaces what /metrics serves (copied). Returns 0 or -ENOMEM (the old snapshot stays). */
int metrics_server__publish(struct metrics_server *server, const char *text, size_t len);
/* Clients the server closed on before answering them. Counters since __new. */
struct metrics_server_stats {
	uint64_t closed_over_limit;  /* the oldest, to make room for a new connection */
	uint64_t closed_at_deadline; /* request or answer not done within the budget */
};

void metrics_server__stats(struct metrics_server *server, struct metrics_server_stats *stats);

/* /healthz: 200 "ok" when healthy, else 503 with reason. reason is copied; may be NULL. */
void metrics_server__set_health(struct metrics_server *server, bool healthy, const char *reason);

/* A growable buffer of exposition text. Families are written with their HELP and TYPE once;
 * samples follow. Errors stick: after an allocation failure every call is a no-op and
 * metrics_text__error returns -ENOMEM. */
struct metrics_text {
	char *data;
	size_t len, cap;
	int error;
};

/* type: "counter" or "gauge". */
void metrics_text__family(struct metrics_text *t, const char *name, const char *type,
			  const char *help);
/* labels: NULL, or pairs {key, value, key, value, ..., NULL}; values are escaped (\\, \", \n).
 * Integral values print without a decimal point; others with up to 17 significant digits. */
void metrics_text__sample(struct metrics_text *t, const char *name, const char *const *labels,
			  double value);
int metrics_text__error(const struct metrics_text *t);
void metrics_text__free(struct metrics_text *t);

#endif
