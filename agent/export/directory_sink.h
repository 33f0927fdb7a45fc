/* The directory sink: every profile becomes PATH/SERVICE/alloc-YYYYMMDDTHHMMSSZ.pb.gz, written
 * atomically, and a retention limit by total size and by age removes the oldest files this
 * sink wrote. It is the default sink when no remote one is configured. */
#ifndef ALLOCSCOPE_DIRECTORY_SINK_H
#define ALLOCSCOPE_DIRECTORY_SINK_H

#include <stddef.h>
#include <stdint.h>

struct sink;

struct directory_sink_opts {
	const char *path;          /* created (mode 0750, parents too) when missing */
	uint64_t max_total_bytes;  /* 0: no size limit */
	uint64_t max_age_ms;       /* 0: no age limit */
};

/* Creates the directory if needed and checks that files can be created in it. Returns 0, or
 * -errno with a sentence for the user in err (what failed, on which path, what to do). */
int directory_sink__new(const struct directory_sink_opts *opts, struct sink **out, char *err,
			size_t err_len);

#endif
