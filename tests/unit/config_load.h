/* Loading configuration text in the unit tests: load() expects success, CHECK_ERROR expects
 * -EINVAL with exactly the given message (file "x.yaml", line and column included). */
#ifndef ALLOCSCOPE_TEST_CONFIG_LOAD_H
#define ALLOCSCOPE_TEST_CONFIG_LOAD_H

#include <errno.h>
#include <string.h>

#include "config/config.h"
#include "unit.h"

static char err[1024];

static struct agent_config *load(const char *yaml)
{
	struct agent_config *config = NULL;
	int ret;

	err[0] = '\0';
	ret = config_load_string(yaml, strlen(yaml), "x.yaml", &config, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "  unexpected error %d: %s\n", ret, err);
		CHECK(ret == 0);
	}
	return config;
}

#define CHECK_ERROR(yaml, message)                                                           \
	do {                                                                                 \
		struct agent_config *bad_ = (struct agent_config *)1;                        \
		int ret_;                                                                    \
                                                                                             \
		err[0] = '\0';                                                               \
		ret_ = config_load_string((yaml), strlen(yaml), "x.yaml", &bad_, err,         \
					  sizeof(err));                                      \
		CHECK(ret_ == -EINVAL);                                                      \
		CHECK(bad_ == NULL);                                                         \
		CHECK_STR(err, (message));                                                   \
		if (ret_ == 0)                                                               \
			config_free(bad_);                                                   \
	} while (0)

#endif
