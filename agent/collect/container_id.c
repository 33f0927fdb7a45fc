/* Finds the container a process runs in from its cgroup paths. The runtimes name the cgroup
 * they make for a container after its id ("cri-containerd-<id>.scope", "crio-<id>.scope",
 * "docker-<id>.scope", or the bare id under the cgroupfs driver) and the kubelet names the
 * pod's cgroup after the pod uid, so the path alone says which container and which pod; the
 * Kubernetes API then says which namespace, pod and container name that is. Only exact forms
 * are accepted (64 lowercase hex digits, a well-formed uid): a cgroup someone named "pod-x" or
 * "docker-cleanup.scope" must not pass for a container. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "container_id.h"
#include "util/small_file.h"

/* A component and its length: paths are parsed in place. */
struct component {
	const char *text;
	size_t len;
};

enum component_kind {
	COMPONENT_OTHER,
	COMPONENT_CONTAINER,
	COMPONENT_MONITOR, /* conmon: runtime plumbing next to a container, not in it */
};

static bool is_lower_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static bool is_container_id(const char *s, size_t n)
{
	if (n != CONTAINER_ID_LEN)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!is_lower_hex(s[i]))
			return false;
	}
	return true;
}

static bool has_prefix(const char *s, size_t n, const char *prefix)
{
	size_t prefix_len = strlen(prefix);

	return n >= prefix_len && memcmp(s, prefix, prefix_len) == 0;
}

static bool has_suffix(const char *s, size_t n, const char *suffix)
{
	size_t suffix_len = strlen(suffix);

	return n >= suffix_len && memcmp(s + n - suffix_len, suffix, suffix_len) == 0;
}

static bool component_is(const struct component *c, const char *name)
{
	return c->len == strlen(name) && memcmp(c->text, name, c->len) == 0;
}

/* Runtime prefixes of a container's cgroup name. Under the systemd driver they end in
 * ".scope"; CRI-O under the cgroupfs driver uses the same name without it. */
static const struct {
	const char *prefix;
	enum container_runtime runtime;
	enum component_kind kind;
} runtime_prefixes[] = {
    /* Longest first: "crio-conmon-<id>" also starts with "crio-". */
    {"crio-conmon-", CONTAINER_RUNTIME_CRIO, COMPONENT_MONITOR},
    {"libpod-conmon-", CONTAINER_RUNTIME_PODMAN, COMPONENT_MONITOR},
    {"cri-containerd-", CONTAINER_RUNTIME_CONTAINERD, COMPONENT_CONTAINER},
    {"crio-", CONTAINER_RUNTIME_CRIO, COMPONENT_CONTAINER},
    {"docker-", CONTAINER_RUNTIME_DOCKER, COMPONENT_CONTAINER},
    {"libpod-", CONTAINER_RUNTIME_PODMAN, COMPONENT_CONTAINER},
};

/* Is this component a container's cgroup? parent is the component above it (NULL at the
 * top): a bare id under "docker" is Docker's cgroupfs layout. */
static enum component_kind classify(const struct component *c, const struct component *parent,
				    const char **id, enum container_runtime *runtime)
{
	const char *name = c->text;
	size_t n = c->len;

	if (is_container_id(name, n)) {
		*id = name;
		*runtime = parent && component_is(parent, "docker") ? CONTAINER_RUNTIME_DOCKER
								    : CONTAINER_RUNTIME_UNKNOWN;
		return COMPONENT_CONTAINER;
	}
	if (has_suffix(name, n, ".scope"))
		n -= strlen(".scope");
	for (size_t i = 0; i < sizeof(runtime_prefixes) / sizeof(runtime_prefixes[0]); i++) {
		size_t prefix_len = strlen(runtime_prefixes[i].prefix);

		if (!has_prefix(name, n, runtime_prefixes[i].prefix))
			continue;
		if (!is_container_id(name + prefix_len, n - prefix_len))
			return COMPONENT_OTHER;
		*id = name + prefix_len;
		*runtime = runtime_prefixes[i].runtime;
		return runtime_prefixes[i].kind;
	}
	return COMPONENT_OTHER;
}

/* A pod uid as the kubelet writes it into cgroup names: a UUID (8-4-4-4-12 lowercase hex,
 * '-' written '_' in systemd slice names, where '-' separates the levels), or for static
 * pods 32 hex digits. Writes it with '-' into uid. */
static bool parse_pod_uid(const char *s, size_t n, char *uid)
{
	if (n == 32) {
		for (size_t i = 0; i < n; i++) {
			if (!is_lower_hex(s[i]))
				return false;
		}
	} else if (n == 36) {
		for (size_t i = 0; i < n; i++) {
			bool dash_position = i == 8 || i == 13 || i == 18 || i == 23;

			if (dash_position ? s[i] != '-' && s[i] != '_' : !is_lower_hex(s[i]))
				return false;
		}
	} else {
		return false;
	}
	for (size_t i = 0; i < n; i++)
		uid[i] = s[i] == '_' ? '-' : s[i];
	uid[n] = '\0';
	return true;
}

/* The pod cgroup above a container's: "kubepods[-burstable|-besteffort]-pod<uid>.slice"
 * (systemd driver) or "pod<uid>" whose parent names the QoS class (cgroupfs driver). */
static bool parse_pod_component(const struct component *pod, const struct component *parent,
				struct container_identity *out)
{
	static const struct {
		const char *prefix;
		enum pod_qos_class qos;
	} slices[] = {
	    {"kubepods-burstable-pod", POD_QOS_BURSTABLE},
	    {"kubepods-besteffort-pod", POD_QOS_BESTEFFORT},
	    {"kubepods-pod", POD_QOS_GUARANTEED},
	};
	const char *name = pod->text;
	size_t n = pod->len;

	if (has_suffix(name, n, ".slice")) {
		n -= strlen(".slice");
		for (size_t i = 0; i < sizeof(slices) / sizeof(slices[0]); i++) {
			size_t prefix_len = strlen(slices[i].prefix);

			if (has_prefix(name, n, slices[i].prefix) &&
			    parse_pod_uid(name + prefix_len, n - prefix_len, out->pod_uid)) {
				out->qos = slices[i].qos;
				return true;
			}
		}
		return false;
	}
	if (!has_prefix(name, n, "pod") || !parse_pod_uid(name + 3, n - 3, out->pod_uid))
		return false;
	/* Inside a cgroup namespace the parent may be ".." or missing: the class is unknown. */
	if (!parent)
		out->qos = POD_QOS_UNKNOWN;
	else if (component_is(parent, "burstable"))
		out->qos = POD_QOS_BURSTABLE;
	else if (component_is(parent, "besteffort"))
		out->qos = POD_QOS_BESTEFFORT;
	else if (component_is(parent, "kubepods"))
		out->qos = POD_QOS_GUARANTEED;
	else
		out->qos = POD_QOS_UNKNOWN;
	return true;
}

/* Looks for the outermost container component of one cgroup path. Returns COMPONENT_OTHER
 * when there is none. */
static enum component_kind parse_path(const char *path, const char *path_end,
				      struct container_identity *out)
{
	/* The two components above the current one: the pod and its QoS parent. */
	struct component above[2] = {{NULL, 0}, {NULL, 0}};
	const char *cursor = path;

	while (cursor < path_end) {
		const char *slash = memchr(cursor, '/', (size_t)(path_end - cursor));
		const char *end = slash ? slash : path_end;
		struct component c = {cursor, (size_t)(end - cursor)};
		enum container_runtime runtime = CONTAINER_RUNTIME_UNKNOWN;
		const char *id = NULL;
		enum component_kind kind;

		cursor = slash ? slash + 1 : path_end;
		if (c.len == 0)
			continue;
		kind = classify(&c, above[0].text ? &above[0] : NULL, &id, &runtime);
		if (kind == COMPONENT_MONITOR)
			return kind;
		if (kind == COMPONENT_CONTAINER) {
			memcpy(out->id, id, CONTAINER_ID_LEN);
			out->id[CONTAINER_ID_LEN] = '\0';
			out->runtime = runtime;
			if (above[0].text &&
			    !parse_pod_component(&above[0], above[1].text ? &above[1] : NULL,
						 out)) {
				out->pod_uid[0] = '\0';
				out->qos = POD_QOS_UNKNOWN;
			}
			return kind;
		}
		above[1] = above[0];
		above[0] = c;
	}
	return COMPONENT_OTHER;
}

/* The path of one "ID:CONTROLLERS:PATH" line, or NULL when the line has another shape. */
static const char *line_path(const char *line, const char *line_end, bool *unified)
{
	const char *id_end = memchr(line, ':', (size_t)(line_end - line));
	const char *controllers_end;

	if (!id_end)
		return NULL;
	controllers_end = memchr(id_end + 1, ':', (size_t)(line_end - id_end - 1));
	if (!controllers_end)
		return NULL;
	*unified = id_end - line == 1 && line[0] == '0' && controllers_end == id_end + 1;
	return controllers_end + 1;
}

/* Parses the unified ("0::") line if unified_only, else every v1 line, first match wins. */
static enum component_kind parse_lines(const char *content, bool unified_only,
				       struct container_identity *out)
{
	const char *line = content;

	while (*line) {
		const char *line_end = strchrnul(line, '\n');
		bool unified = false;
		const char *path = line_path(line, line_end, &unified);

		if (path && unified == unified_only) {
			enum component_kind kind = parse_path(path, line_end, out);

			if (kind != COMPONENT_OTHER)
				return kind;
		}
		line = *line_end ? line_end + 1 : line_end;
	}
	return COMPONENT_OTHER;
}

int container_id__parse(const char *content, struct container_identity *out)
{
	enum component_kind kind;

	memset(out, 0, sizeof(*out));
	if (!content)
		return -ENOENT;
	/* The unified hierarchy first: on hybrid hosts it is the one runtimes manage too, and on
	 * v1 hosts it holds only systemd's view ("0::/init.scope" or the like). */
	kind = parse_lines(content, true, out);
	if (kind == COMPONENT_OTHER)
		kind = parse_lines(content, false, out);
	if (kind != COMPONENT_CONTAINER) {
		memset(out, 0, sizeof(*out));
		return -ENOENT;
	}
	return 0;
}

int container_id__read(const char *proc_root, pid_t pid, struct container_identity *out)
{
	/* One line per v1 hierarchy (about a dozen) plus the v2 line; each path can be long. */
	char buf[16384];
	char path[4096];
	size_t n = 0;
	int written, ret;

	memset(out, 0, sizeof(*out));
	if (pid <= 0)
		return -EINVAL;
	written = snprintf(path, sizeof(path), "%s/%d/cgroup", proc_root, (int)pid);
	if (written < 0 || (size_t)written >= sizeof(path))
		return -ENAMETOOLONG;
	ret = small_file_read(AT_FDCWD, path, buf, sizeof(buf), &n);
	if (ret)
		return ret == -ENOENT ? -ESRCH : ret;
	if (n == sizeof(buf) - 1) {
		/* Full buffer: the last line may be cut, and a cut id must not be used. */
		char *last_newline = strrchr(buf, '\n');

		if (last_newline)
			last_newline[1] = '\0';
		else
			buf[0] = '\0';
	}
	return container_id__parse(buf, out);
}

const char *container_runtime__name(enum container_runtime runtime)
{
	switch (runtime) {
	case CONTAINER_RUNTIME_CONTAINERD:
		return "containerd";
	case CONTAINER_RUNTIME_CRIO:
		return "cri-o";
	case CONTAINER_RUNTIME_DOCKER:
		return "docker";
	case CONTAINER_RUNTIME_PODMAN:
		return "podman";
	case CONTAINER_RUNTIME_UNKNOWN:
		break;
	}
	return "unknown";
}

const char *pod_qos_class__name(enum pod_qos_class qos)
{
	switch (qos) {
	case POD_QOS_GUARANTEED:
		return "Guaranteed";
	case POD_QOS_BURSTABLE:
		return "Burstable";
	case POD_QOS_BESTEFFORT:
		return "BestEffort";
	case POD_QOS_UNKNOWN:
		break;
	}
	return "";
}
