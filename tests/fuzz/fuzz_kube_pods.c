/* libFuzzer harness: the Kubernetes API's PodList answer (collect/kube_pods.c's JSON reader),
 * which comes over the network. The node name is the one in the committed seeds
 * (tests/fuzz/corpus/kube_pods, from tests/unit/fixtures/kube). A refusal must say why. */
#include "fuzz.h"
#include "collect/kube_pods.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t n_pods, n_containers;
	char err[512];
	int ret;

	fuzz_quiet();
	err[0] = '\0';
	ret = kube_pods__parse_pod_list((const char *)data, size, "node-a", &n_pods,
					&n_containers, err, sizeof(err));
	if (ret != 0 && ret != -EBADMSG && ret != -ENOMEM) {
		fprintf(stderr, "kube_pods__parse_pod_list returned %d\n", ret);
		abort();
	}
	if (ret != 0 && !err[0]) {
		fprintf(stderr, "kube_pods__parse_pod_list failed without a message\n");
		abort();
	}
	return 0;
}
