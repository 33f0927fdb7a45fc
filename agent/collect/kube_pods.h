/* The pods on this node, as the Kubernetes API lists them, so that profiles can be labelled
 * with namespace, pod, container and pod labels. A container id from /proc/PID/cgroup
 * (collect/container_id.h) is looked up in a cache of
 *
 *   GET {api}/api/v1/pods?fieldSelector=spec.nodeName%3D{node}&resourceVersion=0
 *
 * made through export/http_client's GET by a thread of its own, with the pod's service
 * account token (checked before every request and re-read when it changed: projected tokens
 * rotate) and its CA. Lookups never wait for the
 * network: an id the cache does not know yet asks for a refresh and answers -EAGAIN; the
 * refresh fills it in. The cache is also refreshed on an interval. A failed refresh (HTTP
 * 401/403, no connection, a malformed or oversized answer) keeps the previous cache, is
 * counted, and leaves a message in the stats; the token never appears in a message.
 *
 * RBAC: get/list on pods (deploy/kubernetes/rbac.yaml). The answer is read with a small strict
 * JSON reader of this module; only the fields used are kept. */
#ifndef ALLOCSCOPE_KUBE_PODS_H
#define ALLOCSCOPE_KUBE_PODS_H

#include <stddef.h>
#include <stdint.h>

#define KUBE_PODS_DEFAULT_TOKEN_PATH "/var/run/secrets/kubernetes.io/serviceaccount/token"
#define KUBE_PODS_DEFAULT_CA_PATH    "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
/* The annotation that names a pod's service, as Grafana's eBPF profiler reads it. */
#define KUBE_PODS_SERVICE_ANNOTATION "pyroscope.io/service_name"

/* Every field may be 0 or NULL for its default. Strings are copied by kube_pods__new. */
struct kube_pods_options {
	const char *node_name;	      /* required: the node whose pods are listed (the DaemonSet
					 passes spec.nodeName as $NODE_NAME) */
	const char *api_server;	      /* "https://HOST[:PORT]"; "http://" is accepted for tests
					 and local proxies (kubectl proxy). Default:
					 https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT */
	const char *token_path;	      /* default KUBE_PODS_DEFAULT_TOKEN_PATH; "" sends no token */
	const char *ca_path;	      /* https only; default KUBE_PODS_DEFAULT_CA_PATH */
	uint64_t refresh_interval_ms; /* default 30 s */
	uint64_t miss_refresh_gap_ms; /* default 2 s: at most one refresh asked for by lookups of
					 unknown ids per gap */
	uint64_t miss_settle_ms;      /* default 10 s: see kube_pods__lookup's -ENOENT */
	uint64_t request_timeout_ms;  /* default 10 s: one whole request */
	size_t max_response_bytes;    /* default 64 MiB: a longer answer fails the refresh */
};

struct kube_label {
	const char *key;
	const char *value;
};

/* What a container is in Kubernetes. One allocation: free it with kube_container__free. */
struct kube_container {
	const char *namespace_name;
	const char *pod;
	const char *pod_uid;
	const char *container; /* the name in the pod spec */
	const char *node;      /* spec.nodeName */
	/* The KUBE_PODS_SERVICE_ANNOTATION of the pod when set and not empty, else
	 * "<namespace>/<container>". */
	const char *service_name;
	const struct kube_label *labels; /* the pod's labels, sorted by key */
	size_t n_labels;
	/* The container's image as its status reports it ("ghcr.io/acme/app:2.14"); "" when
	 * not reported. For the service_version label (collect/service_version.h). */
	const char *image;
};

struct kube_pods_stats {
	uint64_t refreshes;	 /* successful refreshes: the cache changes only then */
	uint64_t refresh_errors; /* failed ones */
	uint64_t pods;		 /* in the cache now */
	uint64_t containers;	 /* container ids in the cache now */
	long last_http_status;	 /* of the last request; 0 when none was answered */
	char last_error[512];	 /* the last failure's message; "" when the last refresh
				    succeeded */
};

struct kube_pods;

/* Checks the options and starts the refresh thread, whose first request goes out at once.
 * Returns 0, or -EINVAL with a sentence in err (no node name, a bad URL, no api_server and no
 * KUBERNETES_SERVICE_HOST), -ENOMEM, or the -errno of a failed thread start. Nothing here
 * touches the network or the token: problems there show in the stats. */
int kube_pods__new(const struct kube_pods_options *options, struct kube_pods **out, char *err,
		   size_t err_len);

/* Stops the thread (a request in flight is abandoned) and frees everything. Accepts NULL. */
void kube_pods__free(struct kube_pods *pods);

/* Looks up a container id (64 lowercase hex digits, as container_identity.id) without
 * waiting. Thread-safe. Returns
 *   0        *out is a copy the caller frees with kube_container__free;
 *   -EAGAIN  not in the cache yet: a refresh has been asked for; ask again later (after
 *            kube_pods_stats.refreshes changes, or at the next profile interval);
 *   -ENOENT  still not listed by a successful refresh that started miss_settle_ms or more
 *            after the first lookup of this id: not a container of a pod on this node (a
 *            pod's sandbox, a container started outside Kubernetes). Later periodic
 *            refreshes may still list it, and then it is found;
 *   -EINVAL  not a container id; -ENOMEM. */
int kube_pods__lookup(struct kube_pods *pods, const char *container_id,
		      struct kube_container **out);

/* Accepts NULL. */
void kube_container__free(struct kube_container *container);

/* A snapshot of the counters and the last error. Thread-safe. */
void kube_pods__stats(struct kube_pods *pods, struct kube_pods_stats *stats);

/* The answer's reader alone, for tests and the fuzz harness (tests/fuzz/): reads a PodList
 * of len bytes (not NUL-terminated) as a refresh does and counts the pods of node_name and
 * their containers that it would keep. 0, -EBADMSG with the reason and the byte offset in err,
 * or -ENOMEM. */
int kube_pods__parse_pod_list(const char *text, size_t len, const char *node_name,
			      size_t *n_pods, size_t *n_containers, char *err, size_t err_len);

#endif
