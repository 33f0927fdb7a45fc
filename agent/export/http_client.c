/* libcurl behind the push sinks (see http_client.h). One easy handle per client keeps its
 * connection alive between pushes. server_name is done with the URL's host swapped for the
 * name and CURLOPT_CONNECT_TO pointing the connection back at the original host and port:
 * libcurl then sends the name as SNI and Host and checks the certificate against it, while
 * the TCP connection goes where the URL said. Redirects are not followed (a push endpoint that
 * redirects is misconfigured, and following would resend credentials elsewhere). */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>

#include "build_info.h"
#include "export/http_client.h"
#include "export/push_wire.h"
#include "util/error_text.h"
#include "util/clock.h"

/* Longest Retry-After honoured. */
#define RETRY_AFTER_MAX_MS (10 * 60 * 1000)

struct http_client {
	CURL *curl;
	char *target; /* the full URL requests go to */
	struct curl_slist *connect_to;
	bool http2, https;
	char *ca_file, *cert_file, *key_file;
	bool insecure;
};

struct transfer {
	struct http_response *response;
	_Atomic int64_t *abort_at_ms;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_result = CURLE_OK;

static void global_init(void)
{
	global_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static bool old_h2c_reuse_bug(void)
{
	const curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);

	return info && info->version_num < 0x080000;
}

static char *dup_or_null(const char *s)
{
	return s && s[0] ? strdup(s) : NULL;
}

/* Builds the request URL (and the connect-to entry for server_name) from the configured
 * one. */
static int build_target(struct http_client *c, const struct http_client_opts *opts, char *err,
			size_t err_len)
{
	char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *user = NULL;
	char *query = NULL, *fragment = NULL, *full = NULL;
	CURLU *u = curl_url();
	size_t path_len, len;
	int ret = -EINVAL;

	if (!u) {
		set_err(err, err_len, "out of memory");
		return -ENOMEM;
	}
	if (curl_url_set(u, CURLUPART_URL, opts->url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		set_err(err, err_len,
			"url \"%s\" is not a valid URL (expected something like "
			"https://profiles.example.com)",
			opts->url);
		goto out;
	}
	if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
		set_err(err, err_len, "url \"%s\": the scheme must be http or https", opts->url);
		goto out;
	}
	c->https = strcmp(scheme, "https") == 0;
	if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK) {
		set_err(err, err_len,
			"url: credentials in the URL are refused (use username and "
			"password_file or password_env)");
		goto out;
	}
	if (curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK ||
	    curl_url_get(u, CURLUPART_FRAGMENT, &fragment, 0) == CURLUE_OK) {
		set_err(err, err_len, "url \"%s\": expected no query or fragment", opts->url);
		goto out;
	}
	if (curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK) {
		set_err(err, err_len, "url \"%s\" is not a valid URL", opts->url);
		goto out;
	}
	/* The configured path is a prefix: "/", "" and "/pyroscope/" all take the push path
	 * after them without a doubled slash. */
	path_len = strlen(path);
	while (path_len && path[path_len - 1] == '/')
		path[--path_len] = '\0';
	len = path_len + strlen(opts->path) + 1;
	full = malloc(len);
	if (!full) {
		ret = -ENOMEM;
		goto out;
	}
	snprintf(full, len, "%s%s", path, opts->path);
	if (curl_url_set(u, CURLUPART_PATH, full, 0) != CURLUE_OK)
		goto out;
	if (opts->server_name && opts->server_name[0]) {
		char entry[512];

		if (!c->https) {
			set_err(err, err_len, "server_name needs an https:// url");
			goto out;
		}
		snprintf(entry, sizeof(entry), "%s:%s:%s:%s", opts->server_name, port, host, port);
		c->connect_to = curl_slist_append(NULL, entry);
		if (!c->connect_to ||
		    curl_url_set(u, CURLUPART_HOST, opts->server_name, 0) != CURLUE_OK) {
			set_err(err, err_len, "server_name \"%s\" is not a valid host name",
				opts->server_name);
			goto out;
		}
	}
	if (curl_url_get(u, CURLUPART_URL, &c->target, 0) != CURLUE_OK) {
		set_err(err, err_len, "url \"%s\" is not a valid URL", opts->url);
		goto out;
	}
	ret = 0;
out:
	free(full);
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_free(user);
	curl_free(query);
	curl_free(fragment);
	curl_url_cleanup(u);
	return ret;
}

int http_client__new(const struct http_client_opts *opts, struct http_client **out, char *err,
		     size_t err_len)
{
	struct http_client *c;
	int ret;

	*out = NULL;
	pthread_once(&global_once, global_init);
	if (global_result != CURLE_OK) {
		set_err(err, err_len, "cannot initialise libcurl: %s",
			curl_easy_strerror(global_result));
		return -EIO;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		set_err(err, err_len, "out of memory");
		return -ENOMEM;
	}
	ret = build_target(c, opts, err, err_len);
	if (ret)
		goto fail;
	if (!c->https && (opts->ca_file || opts->cert_file || opts->key_file)) {
		set_err(err, err_len, "ca_file, cert_file and key_file need an https:// url");
		ret = -EINVAL;
		goto fail;
	}
	c->http2 = opts->http2;
	c->insecure = opts->insecure_skip_verify;
	c->ca_file = dup_or_null(opts->ca_file);
	c->cert_file = dup_or_null(opts->cert_file);
	c->key_file = dup_or_null(opts->key_file);
	c->curl = curl_easy_init();
	if (!c->curl || (opts->ca_file && !c->ca_file) || (opts->cert_file && !c->cert_file) ||
	    (opts->key_file && !c->key_file)) {
		set_err(err, err_len, "out of memory");
		ret = -ENOMEM;
		goto fail;
	}
	*out = c;
	return 0;
fail:
	http_client__free(c);
	return ret;
}

void http_client__free(struct http_client *c)
{
	if (!c)
		return;
	if (c->curl)
		curl_easy_cleanup(c->curl);
	curl_slist_free_all(c->connect_to);
	curl_free(c->target);
	free(c->ca_file);
	free(c->cert_file);
	free(c->key_file);
	free(c);
}

const char *http_client__target(const struct http_client *c)
{
	return c->target;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
	struct transfer *t = arg;
	struct http_response *r = t->response;
	size_t len = size * n;
	int64_t wait;

	/* A new status line starts a new response (after a 100 Continue, say); trailers come
	 * without one and add to the response they end. */
	if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
		r->grpc_status = -1;
		r->grpc_message[0] = '\0';
		r->retry_after_ms = -1;
		return len;
	}
	if (push_wire__grpc_header(data, len, &r->grpc_status, r->grpc_message,
				   sizeof(r->grpc_message)))
		return len;
	if (push_wire__retry_after(data, len, (int64_t)time(NULL), RETRY_AFTER_MAX_MS, &wait))
		r->retry_after_ms = wait;
	return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	struct transfer *t = arg;
	struct http_response *r = t->response;
	size_t len = size * n, room = sizeof(r->body) - 1 - r->body_len;
	size_t take = len < room ? len : room;

	memcpy(r->body + r->body_len, data, take);
	r->body_len += take;
	r->body[r->body_len] = '\0';
	return len;
}

static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	struct transfer *t = arg;
	int64_t at;

	if (!t->abort_at_ms)
		return 0;
	at = atomic_load(t->abort_at_ms);
	if (at && monotonic_ms() >= at) {
		t->response->aborted = true;
		return 1;
	}
	return 0;
}

int http_client__post(struct http_client *c, const struct http_request *req,
		      struct http_response *resp)
{
	char curl_err[CURL_ERROR_SIZE] = "";
	struct transfer t = {.response = resp, .abort_at_ms = req->abort_at_ms};
	struct curl_slist *headers = NULL, *grown;
	int64_t started = monotonic_ms();
	CURL *h = c->curl;
	CURLcode rc;
	long timeout = req->timeout_ms > 0 ? (long)req->timeout_ms : 10000;

	memset(resp, 0, sizeof(*resp));
	resp->grpc_status = -1;
	resp->retry_after_ms = -1;
	for (const char *const *line = req->headers; line && *line; line++) {
		grown = curl_slist_append(headers, *line);
		if (!grown) {
			curl_slist_free_all(headers);
			snprintf(resp->error, sizeof(resp->error), "out of memory");
			return -EIO;
		}
		headers = grown;
	}
	/* No "Expect: 100-continue" round trip before large bodies. */
	grown = curl_slist_append(headers, "Expect:");
	if (grown)
		headers = grown;

	curl_easy_setopt(h, CURLOPT_URL, c->target);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "allocscope/" ALLOCSCOPE_VERSION);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout < 10000 ? timeout : 10000L);
	if (c->http2)
		curl_easy_setopt(h, CURLOPT_HTTP_VERSION,
				 c->https ? (long)CURL_HTTP_VERSION_2TLS
					  : (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
	/* libcurl before 8.0 breaks the second request on a reused prior-knowledge HTTP/2
	 * connection ("Error in the HTTP2 framing layer", curl issue 10634): cleartext gRPC
	 * takes a new connection per push there. */
	curl_easy_setopt(h, CURLOPT_FORBID_REUSE,
			 (long)(c->http2 && !c->https && old_h2c_reuse_bug()));
	if (c->connect_to)
		curl_easy_setopt(h, CURLOPT_CONNECT_TO, c->connect_to);
	if (c->ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
	if (c->cert_file)
		curl_easy_setopt(h, CURLOPT_SSLCERT, c->cert_file);
	if (c->key_file)
		curl_easy_setopt(h, CURLOPT_SSLKEY, c->key_file);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, c->insecure ? 0L : 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, c->insecure ? 0L : 2L);
	if (req->username) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(h, CURLOPT_USERNAME, req->username);
		curl_easy_setopt(h, CURLOPT_PASSWORD, req->password ? req->password : "");
	} else if (req->bearer_token) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
		curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, req->bearer_token);
	}
	curl_easy_setopt(h, CURLOPT_POST, 1L);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, (const char *)req->body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &t);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, &t);

	rc = curl_easy_perform(h);
	resp->elapsed_ms = monotonic_ms() - started;

	/* Nothing of this request may outlive it in the handle: not its headers list, not
	 * the credentials. */
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
	curl_easy_setopt(h, CURLOPT_USERNAME, NULL);
	curl_easy_setopt(h, CURLOPT_PASSWORD, NULL);
	curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, NULL);
	curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_NONE);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
	curl_slist_free_all(headers);

	if (rc != CURLE_OK) {
		resp->status = 0;
		if (resp->aborted)
			snprintf(resp->error, sizeof(resp->error),
				 "abandoned at the shutdown deadline");
		else
			snprintf(resp->error, sizeof(resp->error), "%s",
				 curl_err[0] ? curl_err : curl_easy_strerror(rc));
		return -EIO;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
	curl_easy_getinfo(h, CURLINFO_HTTP_VERSION, &resp->http_version);
	return 0;
}

/* ---- GET ---------------------------------------------------------------------------- */

/* The transfer runs on a multi handle of its own, polled a second at a time, so that
 * http_getter__cancel can end it from another thread with curl_multi_wakeup. The easy handle
 * stays, and with it the connection, between GETs. */
struct http_getter {
	CURLM *multi;
	CURL *curl;
	size_t max_body_bytes;
	atomic_bool cancelled;
};

struct get_transfer {
	struct http_get_result *result;
	bool too_large;
};

static size_t on_get_body(char *bytes, size_t size, size_t count, void *arg)
{
	struct get_transfer *t = arg;
	size_t n = size * count;
	int ret = dynbuf_add(&t->result->body, bytes, n);

	if (ret == -EFBIG)
		t->too_large = true;
	return ret ? 0 : n;
}

void http_getter__free(struct http_getter *g)
{
	if (!g)
		return;
	if (g->curl)
		curl_easy_cleanup(g->curl);
	if (g->multi)
		curl_multi_cleanup(g->multi);
	free(g);
}

int http_getter__new(const struct http_getter_opts *opts, struct http_getter **out)
{
	struct http_getter *g;

	*out = NULL;
	pthread_once(&global_once, global_init);
	if (global_result != CURLE_OK)
		return -ENOMEM;
	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	atomic_init(&g->cancelled, false);
	g->max_body_bytes = opts->max_body_bytes;
	g->multi = curl_multi_init();
	g->curl = curl_easy_init();
	if (!g->multi || !g->curl) {
		http_getter__free(g);
		return -ENOMEM;
	}
	curl_easy_setopt(g->curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(g->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(g->curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(g->curl, CURLOPT_TIMEOUT_MS, (long)opts->timeout_ms);
	curl_easy_setopt(g->curl, CURLOPT_USERAGENT, "allocscope");
	/* The API server compresses large lists when asked. */
	curl_easy_setopt(g->curl, CURLOPT_ACCEPT_ENCODING, "");
	if (opts->ca_file)
		curl_easy_setopt(g->curl, CURLOPT_CAINFO, opts->ca_file);
	*out = g;
	return 0;
}

void http_getter__cancel(struct http_getter *g)
{
	atomic_store(&g->cancelled, true);
	curl_multi_wakeup(g->multi);
}

/* Runs the transfer until it ends or the getter is cancelled. */
static CURLcode get_perform(struct http_getter *g)
{
	CURLcode result = CURLE_OK;
	int running = 1, queued;
	CURLMsg *message;

	if (curl_multi_add_handle(g->multi, g->curl) != CURLM_OK)
		return CURLE_OUT_OF_MEMORY;
	while (running && !atomic_load(&g->cancelled)) {
		if (curl_multi_perform(g->multi, &running) != CURLM_OK) {
			result = CURLE_RECV_ERROR;
			break;
		}
		if (running && curl_multi_poll(g->multi, NULL, 0, 1000, NULL) != CURLM_OK) {
			result = CURLE_RECV_ERROR;
			break;
		}
	}
	if (atomic_load(&g->cancelled)) {
		result = CURLE_ABORTED_BY_CALLBACK;
	} else {
		message = curl_multi_info_read(g->multi, &queued);
		while (message) {
			if (message->msg == CURLMSG_DONE && message->easy_handle == g->curl)
				result = message->data.result;
			message = curl_multi_info_read(g->multi, &queued);
		}
	}
	curl_multi_remove_handle(g->multi, g->curl);
	return result;
}

static enum http_get_failure failure_of(CURLcode code)
{
	switch (code) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
		return HTTP_GET_UNREACHABLE;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
		return HTTP_GET_TLS_VERIFY;
	default:
		return HTTP_GET_OTHER;
	}
}

int http_getter__get(struct http_getter *g, const char *url, const char *const *headers,
		     const char *bearer_token, struct http_get_result *result)
{
	char curl_error[CURL_ERROR_SIZE] = "";
	struct get_transfer t = {.result = result};
	struct curl_slist *list = NULL, *grown;
	char *auth = NULL;
	CURLcode code;
	int ret = 0;

	memset(result, 0, sizeof(*result));
	dynbuf_init(&result->body, g->max_body_bytes);
	if (atomic_load(&g->cancelled))
		return -ECANCELED;
	for (size_t i = 0; headers && headers[i]; i++) {
		grown = curl_slist_append(list, headers[i]);
		if (!grown) {
			ret = -ENOMEM;
			goto out;
		}
		list = grown;
	}
	if (bearer_token) {
		if (asprintf(&auth, "Authorization: Bearer %s", bearer_token) < 0) {
			auth = NULL;
			ret = -ENOMEM;
			goto out;
		}
		grown = curl_slist_append(list, auth);
		if (!grown) {
			ret = -ENOMEM;
			goto out;
		}
		list = grown;
	}
	curl_easy_setopt(g->curl, CURLOPT_URL, url);
	curl_easy_setopt(g->curl, CURLOPT_HTTPHEADER, list);
	curl_easy_setopt(g->curl, CURLOPT_WRITEFUNCTION, on_get_body);
	curl_easy_setopt(g->curl, CURLOPT_WRITEDATA, &t);
	curl_easy_setopt(g->curl, CURLOPT_ERRORBUFFER, curl_error);
	code = get_perform(g);
	curl_easy_setopt(g->curl, CURLOPT_ERRORBUFFER, NULL);
	curl_easy_setopt(g->curl, CURLOPT_HTTPHEADER, NULL);
	curl_easy_getinfo(g->curl, CURLINFO_RESPONSE_CODE, &result->status);

	if (t.too_large) {
		ret = -EFBIG;
	} else if (code == CURLE_ABORTED_BY_CALLBACK || atomic_load(&g->cancelled)) {
		ret = -ECANCELED;
	} else if (code == CURLE_WRITE_ERROR || code == CURLE_OUT_OF_MEMORY) {
		ret = -ENOMEM;
	} else if (code != CURLE_OK) {
		snprintf(result->error, sizeof(result->error), "%s",
			 curl_error[0] ? curl_error : curl_easy_strerror(code));
		result->failure = failure_of(code);
		ret = -EIO;
	}
out:
	/* The request libcurl built is its own; this module's copies of the token go now. */
	if (auth) {
		explicit_bzero(auth, strlen(auth));
		free(auth);
	}
	for (struct curl_slist *h = list; h; h = h->next)
		explicit_bzero(h->data, strlen(h->data));
	curl_slist_free_all(list);
	return ret;
}
