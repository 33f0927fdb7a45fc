/* What the libFuzzer harnesses (tests/fuzz/fuzz_*.c) share: the agent's log kept quiet, and
 * the input written to a file for the parsers that take a path. Each harness defines
 * LLVMFuzzerTestOneInput; `make fuzz` and tests/fuzz/run drive them (docs/fuzzing.md). */
#ifndef ALLOCSCOPE_FUZZ_H
#define ALLOCSCOPE_FUZZ_H

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_dir[PATH_MAX];
static char fuzz_file[PATH_MAX];

static inline void fuzz_remove_files(void)
{
	unlink(fuzz_file);
	rmdir(fuzz_dir);
}

static inline void fuzz_die(const char *what)
{
	fprintf(stderr, "fuzz harness: %s: %s\n", what, strerror(errno));
	abort();
}

/* Writes the input to NAME in a private directory of its own: the file stands alone, so paths
 * the parser derives from it (a debug link) find nothing but what the input names. The
 * directory is made once and removed at exit; a finding ends the process without exit
 * handlers, so tests/fuzz/run points TMPDIR at a directory it removes itself.
 * Returns the file's path. */
static inline const char *fuzz_input_file(const char *name, const uint8_t *data, size_t size)
{
	size_t done = 0;
	int fd;

	if (!fuzz_dir[0]) {
		/* Memory, not disk: a file rewritten on ext4 for every input costs milliseconds. */
		const char *tmp = getenv("TMPDIR");

		if (!tmp || !tmp[0])
			tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
		snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/allocscope-fuzz-XXXXXX", tmp);
		if (!mkdtemp(fuzz_dir))
			fuzz_die("cannot create a temporary directory");
		snprintf(fuzz_file, sizeof(fuzz_file), "%s/%s", fuzz_dir, name);
		atexit(fuzz_remove_files);
	}
	fd = open(fuzz_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		fuzz_die("cannot write the input file");
	while (done < size) {
		ssize_t n = write(fd, data + done, size - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			fuzz_die("cannot write the input file");
		done += (size_t)n;
	}
	close(fd);
	return fuzz_file;
}

/* A NUL-terminated copy of the input, for parsers of text. Free it with free(). */
static inline char *fuzz_text(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);

	if (!text)
		fuzz_die("out of memory");
	memcpy(text, data, size);
	text[size] = '\0';
	return text;
}

static inline void fuzz_quiet(void)
{
	log_set_level(LOG_ERROR);
}

#endif
