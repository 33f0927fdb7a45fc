/* libFuzzer harness: /proc/PID/cgroup parsing (collect/container_id.c). A process inside a
 * container chooses its cgroup names, so every byte is hostile. What comes back must be
 * what the header promises: 64 lowercase hex digits, a pod uid that fits, known enums. */
#include <stdbool.h>

#include "fuzz.h"
#include "collect/container_id.h"

static bool is_lower_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct container_identity identity;
	char *text = fuzz_text(data, size);
	int ret;

	ret = container_id__parse(text, &identity);
	if (ret == 0) {
		if (strlen(identity.id) != CONTAINER_ID_LEN ||
		    !is_lower_hex(identity.id, CONTAINER_ID_LEN) ||
		    strnlen(identity.pod_uid, sizeof(identity.pod_uid)) > POD_UID_MAX_LEN ||
		    identity.runtime > CONTAINER_RUNTIME_PODMAN || identity.qos > POD_QOS_BESTEFFORT) {
			fprintf(stderr, "container_id__parse returned a malformed identity\n");
			abort();
		}
		/* The names the labels use. */
		if (!container_runtime__name(identity.runtime) || !pod_qos_class__name(identity.qos))
			abort();
	} else if (ret != -ENOENT) {
		fprintf(stderr, "container_id__parse returned %d\n", ret);
		abort();
	}
	free(text);
	return 0;
}
