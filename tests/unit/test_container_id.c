/* The container, runtime, pod uid and QoS class a process gets from its /proc/PID/cgroup:
 * files recorded in the shapes containerd, CRI-O, Docker and Podman write on cgroup v2 and v1
 * hosts, under the kubelet's systemd and cgroupfs drivers and inside a cgroup namespace (what
 * the agent sees from its pod), then near misses that must not pass for containers, then the
 * read from a fake /proc. Fixtures: tests/unit/fixtures/kube/cgroup-*.txt (the tests run from
 * the repository root). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "unit.h"
#include "collect/container_id.h"

#define FIXTURE_DIR "tests/unit/fixtures/kube/"

#define ID_A  "25c99c29f65de016a745b6a003ef22cf15bc305440fdc37df0b691e63276d8bf"
#define ID_B  "7e8eae3fafd763cb8527493e051a7cf5c630ed3282ef920919b9ad446038d73f"
#define ID_C  "171d188f09962afe679383260e3d0ba226f89058468a4604e862cec3ae7584f7"
#define ID_D  "262ba9b8c5c37fe31e1ec9169d7fc1651fb6b6381d0e3ad2542ebc05dff6a64b"
#define UID_A "99b620f2-cbeb-410e-8c0e-9866b21d63f5"
#define UID_C "207cd0e0-80ef-4ad1-8503-506c80b6af3f"
#define UID_D "796f0a96-34b6-4714-b9a3-0e6495164dc7"

static char *read_fixture(const char *name)
{
	static char text[16384];
	char path[PATH_MAX];
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), FIXTURE_DIR "%s", name);
	f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "  cannot open %s (run the tests from the repository root)\n",
			path);
		unit_case_failures++;
		text[0] = '\0';
		return text;
	}
	n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = '\0';
	fclose(f);
	return text;
}

/* Parses a fixture and checks everything it should yield. */
static void check_fixture(const char *name, const char *id, enum container_runtime runtime,
			  const char *pod_uid, enum pod_qos_class qos)
{
	struct container_identity c;
	int ret = container_id__parse(read_fixture(name), &c);

	if (ret != 0) {
		fprintf(stderr, "  %s: container_id__parse returned %d\n", name, ret);
		unit_case_failures++;
		return;
	}
	CHECK_STR(c.id, id);
	CHECK_STR(container_runtime__name(c.runtime), container_runtime__name(runtime));
	CHECK_STR(c.pod_uid, pod_uid);
	CHECK_STR(pod_qos_class__name(c.qos), pod_qos_class__name(qos));
}

static void check_not_container(const char *what, const char *content)
{
	struct container_identity c;
	int ret;

	memset(&c, 0x5a, sizeof(c));
	ret = container_id__parse(content, &c);
	if (ret != -ENOENT) {
		fprintf(stderr, "  %s: returned %d with id \"%.64s\", expected -ENOENT\n", what,
			ret, c.id);
		unit_case_failures++;
	}
	/* Nothing half-filled is left for a caller that ignores the result. */
	CHECK_STR(c.id, "");
	CHECK_STR(c.pod_uid, "");
}

static void test_cgroup_v2_systemd_driver(void)
{
	check_fixture("cgroup-v2-containerd.txt", ID_A, CONTAINER_RUNTIME_CONTAINERD, UID_A,
		      POD_QOS_BURSTABLE);
	check_fixture("cgroup-v2-containerd-guaranteed.txt", ID_B, CONTAINER_RUNTIME_CONTAINERD,
		      "c1e82b82-47ac-4de1-9b9e-cdd9658b10e2", POD_QOS_GUARANTEED);
	check_fixture("cgroup-v2-crio.txt", ID_C, CONTAINER_RUNTIME_CRIO, UID_C, POD_QOS_BURSTABLE);
	check_fixture("cgroup-v2-docker-kubelet.txt", ID_D, CONTAINER_RUNTIME_DOCKER, UID_D,
		      POD_QOS_BESTEFFORT);
	/* A static pod's uid is the hash of its manifest: 32 hex digits, no dashes. */
	check_fixture("cgroup-v2-static-pod.txt",
		      "32082216d2be75f518055c297549fc45eeeb66aa95810261ef185034a716e429",
		      CONTAINER_RUNTIME_CONTAINERD, "5da49d913690aa4fd204ed5fbb2b68c2",
		      POD_QOS_BURSTABLE);
}

static void test_cgroup_v2_cgroupfs_driver(void)
{
	check_fixture("cgroup-v2-cgroupfs.txt",
		      "dde47f989fd940158dbd6b4049ee83d9175763b305cb4b65b1564b1642d4879d",
		      CONTAINER_RUNTIME_UNKNOWN, "e126bf37-d16b-4b0d-a93e-5eaedaa9998b",
		      POD_QOS_BURSTABLE);
}

/* From inside the agent's pod the paths start above the agent's own cgroup. */
static void test_cgroup_namespace(void)
{
	struct container_identity c;

	check_fixture("cgroup-v2-containerd-cgroupns.txt", ID_A, CONTAINER_RUNTIME_CONTAINERD,
		      UID_A, POD_QOS_BURSTABLE);
	/* cgroupfs driver, same QoS class as the agent: the class is above the namespace. */
	CHECK(container_id__parse("0::/../pod" UID_D "/" ID_D "\n", &c) == 0);
	CHECK_STR(c.id, ID_D);
	CHECK_STR(c.pod_uid, UID_D);
	CHECK_STR(pod_qos_class__name(c.qos), "");
	CHECK(container_id__parse("0::/../../besteffort/pod" UID_D "/" ID_D "\n", &c) == 0);
	CHECK_STR(pod_qos_class__name(c.qos), "BestEffort");
}

static void test_cgroup_v1(void)
{
	check_fixture("cgroup-v1-cgroupfs-besteffort.txt", ID_D, CONTAINER_RUNTIME_UNKNOWN, UID_D,
		      POD_QOS_BESTEFFORT);
	check_fixture("cgroup-v1-crio-systemd.txt", ID_C, CONTAINER_RUNTIME_CRIO, UID_C,
		      POD_QOS_BURSTABLE);
	check_fixture("cgroup-v1-docker.txt",
		      "ca8723c610c3609741646f8a15ce72412e04eda12720817f1321c7e71e1b8e45",
		      CONTAINER_RUNTIME_DOCKER, "", POD_QOS_UNKNOWN);
	check_fixture("cgroup-v1-systemd-docker.txt",
		      "e4cfe2816ed28bba5f96d8451272e982da33747b28537eb920678d22494e0e02",
		      CONTAINER_RUNTIME_DOCKER, "", POD_QOS_UNKNOWN);
}

static void test_other_forms(void)
{
	struct container_identity c;

	/* Podman 4 puts the container's processes in a "container" cgroup under its scope. */
	check_fixture("cgroup-v2-podman.txt",
		      "b5f0f8e6db95ffb642b957d8133080dc72ab99c686f92c52ee2e5510e4f6dba3",
		      CONTAINER_RUNTIME_PODMAN, "", POD_QOS_UNKNOWN);
	/* CRI-O under the cgroupfs driver: no ".scope". */
	CHECK(container_id__parse("0::/kubepods/burstable/pod" UID_C "/crio-" ID_C "\n", &c) == 0);
	CHECK_STR(c.id, ID_C);
	CHECK_STR(container_runtime__name(c.runtime), "cri-o");
	CHECK_STR(c.pod_uid, UID_C);
	/* Guaranteed under the cgroupfs driver: the pod sits right under kubepods. */
	CHECK(container_id__parse("0::/kubepods/pod" UID_C "/" ID_C "\n", &c) == 0);
	CHECK_STR(pod_qos_class__name(c.qos), "Guaranteed");
	/* Docker in a pod's container: the pod's container is the one Kubernetes knows. */
	CHECK(
	    container_id__parse("0::/kubepods.slice/kubepods-besteffort.slice/"
				"kubepods-besteffort-pod796f0a96_34b6_4714_b9a3_0e6495164dc7.slice/"
				"cri-containerd-" ID_A ".scope/docker/" ID_B "\n",
				&c) == 0);
	CHECK_STR(c.id, ID_A);
	CHECK_STR(c.pod_uid, UID_D);
	/* A hybrid host whose unified line shows systemd's view only: the v1 lines decide. */
	CHECK(container_id__parse("0::/system.slice/containerd.service\n"
				  "1:name=systemd:/kubepods/besteffort/pod" UID_D "/" ID_D "\n",
				  &c) == 0);
	CHECK_STR(c.id, ID_D);
	/* No newline at the end. */
	CHECK(container_id__parse("0::/docker/" ID_B, &c) == 0);
	CHECK_STR(c.id, ID_B);
	CHECK_STR(container_runtime__name(c.runtime), "docker");
}

static void test_not_containers(void)
{
	check_not_container("host service", read_fixture("cgroup-v2-host-service.txt"));
	check_not_container("v1 user session", read_fixture("cgroup-v1-host-session.txt"));
	/* conmon watches a CRI-O container from outside it. */
	check_not_container("conmon", read_fixture("cgroup-v2-crio-conmon.txt"));
	check_not_container("podman conmon", "0::/machine.slice/libpod-conmon-" ID_B ".scope\n");
	check_not_container("NULL", NULL);
	check_not_container("empty", "");
	check_not_container("root", "0::/\n");
	check_not_container("init", "0::/init.scope\n");
	check_not_container("kubelet", "0::/system.slice/kubelet.service\n");
	/* A pod cgroup with no container under it (the kubelet's own view of the pod). */
	check_not_container("pod only", "0::/kubepods.slice/kubepods-burstable.slice/"
					"kubepods-burstable-pod" UID_A ".slice\n");
	/* Near misses: one digit short, upper case, a non-hex letter, names that only look like a
	 * runtime's. */
	check_not_container(
	    "63 digits", "0::/system.slice/docker-"
			 "25c99c29f65de016a745b6a003ef22cf15bc305440fdc37df0b691e63276d8b.scope\n");
	check_not_container(
	    "upper case",
	    "0::/docker/25C99C29F65DE016A745B6A003EF22CF15BC305440FDC37DF0B691E63276D8BF\n");
	check_not_container(
	    "not hex",
	    "0::/docker/25c99c29f65de016a745b6a003ef22cf15bc305440fdc37df0b691e63276d8bg\n");
	check_not_container("docker-cleanup", "0::/system.slice/docker-cleanup.scope\n");
	check_not_container("65 digits", "0::/docker/" ID_A "0\n");
	check_not_container("not a cgroup line", ID_A "\n");
}

/* A cgroup above the container that looks like a pod but is not one gives no pod uid. */
static void test_pod_near_misses(void)
{
	static const char *const not_pods[] = {
	    "0::/kubepods/burstable/pod-x/" ID_A "\n",
	    "0::/kubepods/burstable/pod99b620f2-cbeb-410e-8c0e-9866b21d63f/" ID_A "\n",
	    "0::/kubepods/burstable/pod99B620F2-CBEB-410E-8C0E-9866B21D63F5/" ID_A "\n",
	    "0::/kubepods/burstable/pod99b620f2+cbeb-410e-8c0e-9866b21d63f5/" ID_A "\n",
	    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable.slice/"
	    "cri-containerd-" ID_A ".scope\n",
	    "0::/kubepods.slice/kubepods-weird-pod" UID_A ".slice/cri-containerd-" ID_A ".scope\n",
	};

	for (size_t i = 0; i < sizeof(not_pods) / sizeof(not_pods[0]); i++) {
		struct container_identity c;

		CHECK(container_id__parse(not_pods[i], &c) == 0);
		CHECK_STR(c.id, ID_A);
		if (c.pod_uid[0] || c.qos != POD_QOS_UNKNOWN) {
			fprintf(stderr, "  case %zu: pod uid \"%s\", qos %d from %s", i, c.pod_uid,
				(int)c.qos, not_pods[i]);
			unit_case_failures++;
		}
	}
}

static void test_read_from_proc(void)
{
	char root[] = "/tmp/allocscope-cgroup-XXXXXX";
	char path[PATH_MAX];
	struct container_identity c;
	FILE *f;

	if (!mkdtemp(root)) {
		perror("mkdtemp");
		unit_case_failures++;
		return;
	}
	snprintf(path, sizeof(path), "%s/4242", root);
	CHECK(mkdir(path, 0755) == 0);
	snprintf(path, sizeof(path), "%s/4242/cgroup", root);
	f = fopen(path, "w");
	CHECK(f != NULL);
	if (f) {
		fputs(read_fixture("cgroup-v2-crio.txt"), f);
		fclose(f);
	}
	CHECK(container_id__read(root, 4242, &c) == 0);
	CHECK_STR(c.id, ID_C);
	CHECK_STR(c.pod_uid, UID_C);
	/* The process is gone: the same answer process_info gives. */
	CHECK_EQ_U64(container_id__read(root, 4243, &c), (uint64_t)-ESRCH);
	CHECK_EQ_U64(container_id__read(root, 0, &c), (uint64_t)-EINVAL);
	/* A real process: whatever this test runs in, the answer is a container or -ENOENT. */
	{
		int ret = container_id__read("/proc", getpid(), &c);

		CHECK(ret == 0 || ret == -ENOENT);
		CHECK(ret != 0 || strlen(c.id) == CONTAINER_ID_LEN);
	}
	unlink(path);
	snprintf(path, sizeof(path), "%s/4242", root);
	rmdir(path);
	rmdir(root);
}

static void test_names(void)
{
	CHECK_STR(container_runtime__name(CONTAINER_RUNTIME_CONTAINERD), "containerd");
	CHECK_STR(container_runtime__name(CONTAINER_RUNTIME_CRIO), "cri-o");
	CHECK_STR(container_runtime__name(CONTAINER_RUNTIME_DOCKER), "docker");
	CHECK_STR(container_runtime__name(CONTAINER_RUNTIME_PODMAN), "podman");
	CHECK_STR(container_runtime__name(CONTAINER_RUNTIME_UNKNOWN), "unknown");
	CHECK_STR(pod_qos_class__name(POD_QOS_BESTEFFORT), "BestEffort");
}

int main(void)
{
	RUN(test_cgroup_v2_systemd_driver);
	RUN(test_cgroup_v2_cgroupfs_driver);
	RUN(test_cgroup_namespace);
	RUN(test_cgroup_v1);
	RUN(test_other_forms);
	RUN(test_not_containers);
	RUN(test_pod_near_misses);
	RUN(test_read_from_proc);
	RUN(test_names);
	return unit_summary("container_id");
}
