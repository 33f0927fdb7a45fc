/* Unit tests for collect/service_version.c: the order a version is taken in (rule, pod label,
 * image tag, build id) and reading a tag out of an image reference. */
#include <string.h>

#include "unit.h"
#include "collect/kube_pods.h"
#include "collect/service_version.h"

static const char build_id[] = "3f2a9c0d81e4b7aa55c0ffee00112233deadbeef";

static struct kube_container pod_with(const struct kube_label *labels, size_t n,
				      const char *image)
{
	return (struct kube_container){ .namespace_name = "shop", .pod = "api-1",
					.container = "api", .labels = labels, .n_labels = n,
					.image = image };
}

static void test_precedence_rule_pod_label_image_tag_build_id(void)
{
	const struct kube_label labels[] = { { "app.kubernetes.io/name", "api" },
					     { "app.kubernetes.io/version", "2.14.0" } };
	struct kube_container labelled = pod_with(labels, 2, "ghcr.io/acme/api:2.13");
	struct kube_container tagged = pod_with(labels, 1, "ghcr.io/acme/api:2.13");
	struct kube_container untagged = pod_with(labels, 1, "ghcr.io/acme/api@sha256:0123");
	char v[SERVICE_VERSION_MAX + 1];

	CHECK(service_version__pick("2.15-rc1", &labelled, build_id, v, sizeof(v)) ==
	      SERVICE_VERSION_RULE);
	CHECK_STR(v, "2.15-rc1");
	CHECK(service_version__pick(NULL, &labelled, build_id, v, sizeof(v)) ==
	      SERVICE_VERSION_POD_LABEL);
	CHECK_STR(v, "2.14.0");
	CHECK(service_version__pick("", &tagged, build_id, v, sizeof(v)) ==
	      SERVICE_VERSION_IMAGE_TAG);
	CHECK_STR(v, "2.13");
	CHECK(service_version__pick(NULL, &untagged, build_id, v, sizeof(v)) ==
	      SERVICE_VERSION_BUILD_ID);
	CHECK_STR(v, "3f2a9c0d81e4");
	CHECK(service_version__pick(NULL, NULL, build_id, v, sizeof(v)) ==
	      SERVICE_VERSION_BUILD_ID);
	CHECK_STR(v, "3f2a9c0d81e4");
	/* Nothing known: no version, and a build id that is not hex is not one. */
	CHECK(service_version__pick(NULL, NULL, NULL, v, sizeof(v)) == SERVICE_VERSION_NONE);
	CHECK_STR(v, "");
	CHECK(service_version__pick(NULL, NULL, "../etc", v, sizeof(v)) == SERVICE_VERSION_NONE);
	CHECK(service_version__pick(NULL, NULL, "", v, sizeof(v)) == SERVICE_VERSION_NONE);
	/* A short build id is kept whole; a small buffer is never overrun. */
	CHECK(service_version__pick(NULL, NULL, "abcd", v, sizeof(v)) == SERVICE_VERSION_BUILD_ID);
	CHECK_STR(v, "abcd");
	CHECK(service_version__pick("2.15-rc1", NULL, NULL, v, 4) == SERVICE_VERSION_RULE);
	CHECK_STR(v, "2.1");
}

static void test_empty_pod_label_falls_through(void)
{
	const struct kube_label labels[] = { { "app.kubernetes.io/version", "" } };
	struct kube_container pod = pod_with(labels, 1, "api:1.0");
	char v[SERVICE_VERSION_MAX + 1];

	CHECK(service_version__pick(NULL, &pod, build_id, v, sizeof(v)) ==
	      SERVICE_VERSION_IMAGE_TAG);
	CHECK_STR(v, "1.0");
}

static void test_image_tags(void)
{
	static const struct {
		const char *image, *tag;
	} cases[] = {
		{ "ghcr.io/acme/app:2.14", "2.14" },
		{ "ghcr.io/acme/app:2.14@sha256:abcdef", "2.14" },
		{ "app:v1", "v1" },
		{ "app", "" },
		{ "app@sha256:abcdef", "" },
		{ "registry:5000/app", "" },
		{ "registry:5000/team/app:3", "3" },
		{ "app:latest", "" },
		{ "app:", "" },
		{ "", "" },
		{ "docker.io/library/nginx:1.25.3-alpine", "1.25.3-alpine" },
	};
	char tag[64];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		service_version__image_tag(cases[i].image, tag, sizeof(tag));
		CHECK_STR(tag, cases[i].tag);
	}
	service_version__image_tag(NULL, tag, sizeof(tag));
	CHECK_STR(tag, "");
}

int main(void)
{
	RUN(test_precedence_rule_pod_label_image_tag_build_id);
	RUN(test_empty_pod_label_falls_through);
	RUN(test_image_tags);
	return unit_summary("service_version");
}
