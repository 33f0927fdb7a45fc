/* `make bench`: the cold cost of building one file's unwind table for the in-kernel unwinder
 * (unwind_table_build: .eh_frame/.debug_frame through libdw's CFI interpreter into sorted
 * rows), as the agent pays it the first time a process maps the file.
 *
 *   unwind_table_build FILE [REPEATS]
 *
 * Prints "FILE SIZE_BYTES ROWS FDES UNSUPPORTED BEST_MS MEDIAN_MS BYTES_OF_ROWS" for REPEATS
 * builds (default 3), each from a fresh open of the file (the page cache stays warm). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "symbolize/unwind_tables.h"

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	struct unwind_table_info info = { 0 };
	double times[64];
	size_t n_rows = 0;
	struct stat st;
	int repeats;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: %s FILE [REPEATS]\n", argv[0]);
		return 2;
	}
	repeats = argc == 3 ? atoi(argv[2]) : 3;
	if (repeats < 1 || repeats > 64) {
		fprintf(stderr, "unwind_table_build: REPEATS must be 1 to 64\n");
		return 2;
	}
	elf_version(EV_CURRENT);
	for (int i = 0; i < repeats; i++) {
		struct unwind_row *rows = NULL;
		double start;
		Elf *elf;
		int fd, err;

		fd = open(argv[1], O_RDONLY | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &st) < 0) {
			fprintf(stderr, "unwind_table_build: cannot open %s: %s\n", argv[1],
				strerror(errno));
			return 1;
		}
		start = now_ms();
		elf = elf_begin(fd, ELF_C_READ_MMAP, NULL);
		err = elf ? unwind_table_build(elf, &rows, &n_rows, &info) : -EINVAL;
		times[i] = now_ms() - start;
		free(rows);
		if (elf)
			elf_end(elf);
		close(fd);
		if (err) {
			fprintf(stderr, "unwind_table_build: %s: %s\n", argv[1], strerror(-err));
			return 1;
		}
	}
	qsort(times, repeats, sizeof(times[0]), compare_doubles);
	printf("%s %lld %zu %zu %zu %.1f %.1f %zu\n", argv[1], (long long)st.st_size, n_rows,
	       info.fdes, info.unsupported, times[0], times[repeats / 2],
	       n_rows * sizeof(struct unwind_row));
	return 0;
}
