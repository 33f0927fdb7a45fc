/* Picking a process's version label from the rule, the pod and the build id
 * (service_version.h). Values from the pod come from the Kubernetes API and are copied as they
 * are: the services table makes every label value valid UTF-8 within the length limit. */
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "collect/kube_pods.h"
#include "collect/service_version.h"
#include "symbolize/elf_file.h"

static void copy_text(char *out, size_t len, const char *text, size_t n)
{
	if (!len)
		return;
	if (n >= len)
		n = len - 1;
	memcpy(out, text, n);
	out[n] = '\0';
}

void service_version__image_tag(const char *image, char *tag, size_t len)
{
	const char *name, *colon;
	size_t n;

	copy_text(tag, len, "", 0);
	if (!image)
		return;
	/* The digest ("@sha256:...") names the bytes, not the release. */
	n = strcspn(image, "@");
	/* The tag is after the last ':' of the last path component: a ':' before the last '/'
	 * is a registry's port ("registry:5000/app"). */
	name = image;
	for (size_t i = 0; i < n; i++) {
		if (image[i] == '/')
			name = image + i + 1;
	}
	colon = memchr(name, ':', (size_t)(image + n - name));
	if (!colon || colon + 1 == image + n)
		return;
	if ((size_t)(image + n - (colon + 1)) == strlen("latest") &&
	    strncmp(colon + 1, "latest", strlen("latest")) == 0)
		return;
	copy_text(tag, len, colon + 1, (size_t)(image + n - (colon + 1)));
}

static const char *pod_label(const struct kube_container *pod, const char *key)
{
	for (size_t i = 0; pod && i < pod->n_labels; i++) {
		if (strcmp(pod->labels[i].key, key) == 0)
			return pod->labels[i].value;
	}
	return NULL;
}

static bool is_hex(const char *s)
{
	if (!s[0])
		return false;
	for (; *s; s++) {
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return false;
	}
	return true;
}

enum service_version_source service_version__pick(const char *rule_version,
						  const struct kube_container *pod,
						  const char *build_id, char *out, size_t len)
{
	const char *label = pod_label(pod, SERVICE_VERSION_POD_LABEL_KEY);
	char tag[SERVICE_VERSION_MAX + 1];
	size_t n;

	copy_text(out, len, "", 0);
	if (rule_version && rule_version[0]) {
		copy_text(out, len, rule_version, strlen(rule_version));
		return SERVICE_VERSION_RULE;
	}
	if (label && label[0]) {
		copy_text(out, len, label, strlen(label));
		return SERVICE_VERSION_POD_LABEL;
	}
	service_version__image_tag(pod ? pod->image : NULL, tag, sizeof(tag));
	if (tag[0]) {
		copy_text(out, len, tag, strlen(tag));
		return SERVICE_VERSION_IMAGE_TAG;
	}
	if (build_id && is_hex(build_id)) {
		n = strlen(build_id);
		copy_text(out, len, build_id,
			  n < SERVICE_VERSION_BUILD_ID_CHARS ? n : SERVICE_VERSION_BUILD_ID_CHARS);
		return SERVICE_VERSION_BUILD_ID;
	}
	return SERVICE_VERSION_NONE;
}

const char *service_version__source_name(enum service_version_source source)
{
	switch (source) {
	case SERVICE_VERSION_RULE:
		return "rule";
	case SERVICE_VERSION_POD_LABEL:
		return "pod label " SERVICE_VERSION_POD_LABEL_KEY;
	case SERVICE_VERSION_IMAGE_TAG:
		return "image tag";
	case SERVICE_VERSION_BUILD_ID:
		return "build id";
	case SERVICE_VERSION_NONE:
		break;
	}
	return "none";
}

void service_version__read_build_id(pid_t pid, char *out, size_t len)
{
	static const char deleted[] = " (deleted)";
	char link[64], exe[PATH_MAX], path[PATH_MAX + 64];
	struct elf_file *elf;
	const char *id;
	ssize_t n;

	copy_text(out, len, "", 0);
	/* Opened by the path attaching and symbolizing open it by (through /proc/PID/root): the
	 * parsed file is shared, and its debug files are searched for from that path. A file
	 * replaced since the process started is read through the exe link itself. */
	snprintf(link, sizeof(link), "/proc/%d/exe", (int)pid);
	n = readlink(link, exe, sizeof(exe) - 1);
	if (n <= 0)
		return;
	exe[n] = '\0';
	if ((size_t)n > sizeof(deleted) - 1 &&
	    strcmp(exe + n - (sizeof(deleted) - 1), deleted) == 0)
		snprintf(path, sizeof(path), "%s", link);
	else
		snprintf(path, sizeof(path), "/proc/%d/root%s", (int)pid, exe);
	if (elf_file__open(path, &elf) != 0)
		return;
	id = elf_file__build_id(elf);
	if (id)
		copy_text(out, len, id, strlen(id));
	elf_file__free(elf);
}
