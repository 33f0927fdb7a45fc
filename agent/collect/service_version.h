/* The version of the code a process runs, for the service_version label every profile carries
 * (issue 15): "what changed between 2.13 and 2.14" is then one query. Taken, first found
 * first, from
 *   1. the matching target rule's `version` (the operator knows best),
 *   2. the pod's app.kubernetes.io/version label (Kubernetes' recommended label),
 *   3. the tag of the container's image ("registry/app:2.14" -> "2.14"; a digest-only
 *      reference and "latest" say nothing about the code and are skipped),
 *   4. the first SERVICE_VERSION_BUILD_ID_CHARS hex digits of the executable's GNU build id.
 * Pure functions over facts the caller read, so the order is unit-tested without privileges. */
#ifndef ALLOCSCOPE_SERVICE_VERSION_H
#define ALLOCSCOPE_SERVICE_VERSION_H

#include <stddef.h>
#include <sys/types.h>

struct kube_container;

/* The label's default name (profiles.version_label), and the one-off capture's. */
#define SERVICE_VERSION_LABEL "service_version"

/* The pod label read in step 2. */
#define SERVICE_VERSION_POD_LABEL_KEY "app.kubernetes.io/version"
/* Hex digits kept of a build id: 48 bits, like a long git short hash; two builds collide with
 * odds of one in 2^48. */
#define SERVICE_VERSION_BUILD_ID_CHARS 12
/* The longest version kept (longer ones are cut; the label limit may cut further). */
#define SERVICE_VERSION_MAX 128

enum service_version_source {
	SERVICE_VERSION_NONE,      /* nothing known: no label */
	SERVICE_VERSION_RULE,
	SERVICE_VERSION_POD_LABEL,
	SERVICE_VERSION_IMAGE_TAG,
	SERVICE_VERSION_BUILD_ID,
};

/* Picks the version in the order above into out (always NUL-terminated; "" with
 * SERVICE_VERSION_NONE). rule_version, pod and build_id may each be NULL or empty. build_id is
 * lowercase hex as elf_file__build_id gives it; anything else there is ignored. */
enum service_version_source service_version__pick(const char *rule_version,
						  const struct kube_container *pod,
						  const char *build_id, char *out, size_t len);

/* The tag of an image reference into tag: "ghcr.io/acme/app:2.14" and
 * "ghcr.io/acme/app:2.14@sha256:..." give "2.14"; "app", "app@sha256:...",
 * "registry:5000/app" and "app:latest" give "". */
void service_version__image_tag(const char *image, char *tag, size_t len);

/* The lowercase hex GNU build id of pid's executable into out; "" when it has none or cannot
 * be read. The file is opened as attaching opens it (/proc/PID/root/EXE) through
 * symbolize/elf_file's cache, so it is parsed once for both. */
void service_version__read_build_id(pid_t pid, char *out, size_t len);

/* A name for what picked the version, for logs: "rule", "pod label", ... */
const char *service_version__source_name(enum service_version_source source);

#endif
