/* libFuzzer harness: the YAML configuration (config/config.c), as --config and a SIGHUP
 * reload read it. The input is the file's text, not NUL-terminated. A refused file must come
 * with a message; an accepted one must be freed whole (the leak checker watches). */
#include "fuzz.h"
#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct agent_config *config = NULL;
	char err[1024];
	int ret;

	fuzz_quiet();
	/* What the DaemonSet sets: kubernetes.enabled then loads without a node_name key. */
	setenv("NODE_NAME", "node-a", 0);
	err[0] = '\0';
	ret = config_load_string((const char *)data, size, "fuzz.yaml", &config, err, sizeof(err));
	if (ret == 0 && !config) {
		fprintf(stderr, "config_load_string returned 0 without a configuration\n");
		abort();
	}
	if (ret != 0 && (config || !err[0])) {
		fprintf(stderr, "config_load_string failed (%d) %s\n", ret,
			config ? "but returned a configuration" : "without a message");
		abort();
	}
	config_free(config);
	return 0;
}
