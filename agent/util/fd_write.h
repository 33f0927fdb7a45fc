/* Writing a whole buffer to a descriptor: what every file the agent writes (profiles, the
 * directory sink, the push spool) needs, since write(2) may write less than asked and may be
 * interrupted by a signal. */
#ifndef ALLOCSCOPE_FD_WRITE_H
#define ALLOCSCOPE_FD_WRITE_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

/* Writes len bytes of buf to fd, resuming after short writes and EINTR. Returns 0 or -errno;
 * -EIO when the kernel accepts nothing without saying why. */
static inline int fd_write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *next = buf;

	while (len) {
		ssize_t n = write(fd, next, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		next += n;
		len -= (size_t)n;
	}
	return 0;
}

#endif
