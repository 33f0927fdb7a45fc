/* A file written whole or not at all: written to a temporary file beside it, flushed, synced
 * and renamed over the path; on any failure the temporary file is removed and whatever was at
 * the path stays. Only a regular file (or nothing) at the path is replaced: not a directory,
 * link, device, FIFO or socket (checked before writing and again before the rename). */
#ifndef ALLOCSCOPE_READ_OUTPUT_FILE_H
#define ALLOCSCOPE_READ_OUTPUT_FILE_H

#include <limits.h>
#include <stdio.h>

struct output_file {
	char path[PATH_MAX];
	char tmp[PATH_MAX + 32];
	FILE *stream; /* write here between open and commit */
};

/* 0, or -errno with a sentence in err. */
int output_file__open(struct output_file *file, const char *path, char *err, size_t err_len);
/* Flushes, syncs and renames; 0, or -errno with a sentence in err (nothing left behind). */
int output_file__commit(struct output_file *file, char *err, size_t err_len);
/* Drops what was written. Safe after a failed open or commit. */
void output_file__abort(struct output_file *file);

#endif
