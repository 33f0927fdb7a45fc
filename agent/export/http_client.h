/* HTTP over libcurl. http_client: one endpoint for the push sinks' worker threads: a POST at a time on a
 * kept-alive connection, with the TLS settings of the sink, HTTP/2 when gRPC needs it
 * (cleartext with prior knowledge for http://, ALPN for https://), and the parts of the
 * response the sinks act on: status, grpc-status and grpc-message (from headers or trailers),
 * Retry-After and the start of the body for error messages.
 *
 * http_getter: whole documents by GET (the Kubernetes API's pod list), bounded in size and
 * cancellable from another thread.
 *
 * Nothing here logs; the caller decides what to say. Header values, credentials included,
 * are never copied into errors or responses. One client belongs to one thread at a time. */
#ifndef ALLOCSCOPE_HTTP_CLIENT_H
#define ALLOCSCOPE_HTTP_CLIENT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/grow.h"

struct http_client_opts {
	const char *url;       /* http:// or https://, optional path prefix, no query */
	const char *path;      /* appended to the URL's path */
	bool http2;	       /* gRPC: HTTP/2 or nothing */
	const char *ca_file;   /* NULL: the system's CAs */
	const char *cert_file; /* client certificate (PEM), with key_file */
	const char *key_file;
	const char *server_name; /* the name to expect in the server's certificate (and send
				    as SNI and Host), connecting to the URL's host */
	bool insecure_skip_verify;
};

struct http_client;

/* Checks the URL (scheme http or https, a host, no credentials, query or fragment) and
 * prepares the handle. Returns 0 or -errno with a sentence in err. */
int http_client__new(const struct http_client_opts *opts, struct http_client **out, char *err,
		     size_t err_len);
/* Accepts NULL. */
void http_client__free(struct http_client *client);
/* The URL requests go to (server_name applied), for messages. */
const char *http_client__target(const struct http_client *client);

struct http_request {
	const char *const *headers; /* "Name: value" lines, NULL-terminated; may be NULL */
	const char *username;	    /* basic authentication when non-NULL */
	const char *password;
	const char *bearer_token; /* "Authorization: Bearer" when non-NULL */
	const uint8_t *body;
	size_t body_len;
	int64_t timeout_ms; /* the whole request */
	/* When non-NULL and it holds a CLOCK_MONOTONIC time in ms (non-zero) that has passed,
	 * the transfer is aborted (checked about once a second, and on every chunk). */
	_Atomic int64_t *abort_at_ms;
};

struct http_response {
	long status;	   /* 0: no HTTP response (see error) */
	long http_version; /* CURL_HTTP_VERSION_* of the response */
	int grpc_status;   /* -1: none seen */
	char grpc_message[256];
	int64_t retry_after_ms; /* -1: no Retry-After */
	char body[1024];	/* the start of the body, NUL-terminated */
	size_t body_len;
	char error[256]; /* transport error (connection, TLS, timeout), or "" */
	bool aborted;	 /* stopped by abort_at_ms */
	int64_t elapsed_ms;
};

/* Sends one POST. Returns 0 when an HTTP response came (whatever its status), -EIO with
 * response->error set when none did. */
int http_client__post(struct http_client *client, const struct http_request *request,
		      struct http_response *response);

/* ---- GET ---------------------------------------------------------------------------- */

struct http_getter_opts {
	const char *ca_file;	/* https: NULL for the system's CAs */
	int64_t timeout_ms;	/* one whole request */
	size_t max_body_bytes;	/* a longer answer fails with -EFBIG */
};

/* What kept a GET from getting an answer, for the caller's hint. */
enum http_get_failure {
	HTTP_GET_NO_FAILURE,
	HTTP_GET_UNREACHABLE, /* name not resolved, connection refused, timed out */
	HTTP_GET_TLS_VERIFY,  /* the server's certificate, or the CA file */
	HTTP_GET_OTHER,
};

struct http_get_result {
	long status;	      /* 0: no HTTP answer */
	struct dynbuf body;   /* the answer (decompressed), NUL-terminated; free with dynbuf_free,
				 whatever the return */
	char error[256];      /* with -EIO: what libcurl said */
	enum http_get_failure failure;
};

struct http_getter;

/* One connection kept alive between GETs, for one thread. 0 or -ENOMEM. */
int http_getter__new(const struct http_getter_opts *opts, struct http_getter **out);
/* Accepts NULL. */
void http_getter__free(struct http_getter *getter);
/* Thread-safe: a GET in flight returns -ECANCELED at once, and so does every later one. */
void http_getter__cancel(struct http_getter *getter);
/* GETs url (http or https; a query is fine) with the "Name: value" lines of headers
 * (NULL-terminated, or NULL) and, when non-NULL, "Authorization: Bearer <bearer_token>"
 * (this module's copy of it is wiped). Redirects are not followed (credentials would go
 * along); compressed answers are accepted. Returns 0 when an HTTP answer came, whatever its
 * status; -EFBIG past max_body_bytes, -ECANCELED, -ENOMEM, or -EIO with result->error and
 * result->failure. result->body is set up in every case. */
int http_getter__get(struct http_getter *getter, const char *url, const char *const *headers,
		     const char *bearer_token, struct http_get_result *result);

#endif
