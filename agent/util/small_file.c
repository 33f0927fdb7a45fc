/* Reading a small file whole (see small_file.h). */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "util/grow.h"
#include "util/small_file.h"

int small_file_read_fd(int fd, char *buf, size_t cap, size_t *len)
{
	size_t n = 0;
	int ret = 0;

	while (n < cap - 1) {
		ssize_t got = read(fd, buf + n, cap - 1 - n);

		if (got < 0) {
			if (errno == EINTR)
				continue;
			/* The kernel answers ESRCH once a task has exited mid-read. */
			ret = -errno;
			break;
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	buf[n] = '\0';
	*len = n;
	return ret;
}

int small_file_read_all(int fd, struct dynbuf *b)
{
	/* Reads in pieces of this size (the last one may be cut to b's maximum). */
	const size_t piece = 64 * 1024;

	for (;;) {
		size_t room = b->max - b->len < piece ? b->max - b->len : piece;
		ssize_t got;
		int ret;

		if (room == 0) {
			char probe;

			/* Full: only a file that has more does not fit. */
			got = read(fd, &probe, 1);
			if (got < 0 && errno == EINTR)
				continue;
			return got < 0 ? -errno : got ? -EFBIG : 0;
		}
		ret = dynbuf_reserve(b, room);
		if (ret)
			return ret;
		got = read(fd, b->data + b->len, room);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (got == 0)
			return 0;
		b->len += (size_t)got;
		b->data[b->len] = '\0';
	}
}

int small_file_read(int dir_fd, const char *name, char *buf, size_t cap, size_t *len)
{
	int fd, ret;

	*len = 0;
	buf[0] = '\0';
	fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ret = small_file_read_fd(fd, buf, cap, len);
	close(fd);
	return ret;
}
