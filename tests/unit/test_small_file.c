/* Reading files whole (agent/util/small_file.h): a buffer's size and a dynbuf's maximum are
 * kept, and a file that just fits is not mistaken for one that does not. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "unit.h"
#include "util/grow.h"
#include "util/small_file.h"

static char path[] = "/tmp/allocscope-small-file-XXXXXX";

static void test_read_into_buffer(void)
{
	char buf[8];
	size_t len;

	CHECK(small_file_read(AT_FDCWD, path, buf, sizeof(buf), &len) == 0);
	CHECK_EQ_U64(len, 7); /* cap - 1: the file may be longer */
	CHECK_STR(buf, "0123456");
	CHECK(small_file_read(AT_FDCWD, "/nonexistent", buf, sizeof(buf), &len) == -ENOENT);
	CHECK_EQ_U64(len, 0);
}

static void test_read_all_bounded(void)
{
	struct dynbuf b;
	int fd;

	for (size_t max = 9; max <= 11; max++) {
		fd = open(path, O_RDONLY);
		dynbuf_init(&b, max);
		/* The file has 10 bytes: 9 is too few, 10 just fits. */
		CHECK(small_file_read_all(fd, &b) == (max < 10 ? -EFBIG : 0));
		if (max >= 10)
			CHECK_STR(b.data, "0123456789");
		dynbuf_free(&b);
		close(fd);
	}
	fd = open("/proc/self/maps", O_RDONLY);
	dynbuf_init(&b, 1 << 20);
	CHECK(small_file_read_all(fd, &b) == 0);
	CHECK(b.len > 0 && strstr(b.data, "[stack]") != NULL);
	dynbuf_free(&b);
	close(fd);
}

int main(void)
{
	int fd = mkstemp(path);

	if (fd < 0 || write(fd, "0123456789", 10) != 10)
		return 1;
	close(fd);
	RUN(test_read_into_buffer);
	RUN(test_read_all_bounded);
	unlink(path);
	return unit_summary("small_file");
}
