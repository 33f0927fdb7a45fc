/* Reading a file whole: into a caller's buffer (/proc entries such as comm, cgroup and stat;
 * secrets) or into a bounded growable buffer (/proc/PID/maps), where read(2) may return less
 * than asked and may be interrupted by a signal. */
#ifndef ALLOCSCOPE_UTIL_SMALL_FILE_H
#define ALLOCSCOPE_UTIL_SMALL_FILE_H

#include <stddef.h>

/* Reads at most cap - 1 bytes of dir_fd/name (AT_FDCWD or an absolute name for a plain path)
 * into buf and NUL-terminates it; *len is the number of bytes read. A file of cap - 1 bytes
 * or more fills the buffer: *len == cap - 1 is how a caller tells the file may be longer.
 * Returns 0 or the -errno of open or read (buf then holds what was read before the error).
 * cap must be at least 1. */
int small_file_read(int dir_fd, const char *name, char *buf, size_t cap, size_t *len);
/* The same from an open descriptor, from its current offset (fd stays open). */
int small_file_read_fd(int fd, char *buf, size_t cap, size_t *len);

struct dynbuf;
/* Appends everything fd has left to b (util/grow.h), up to b's maximum: 0 at end of file,
 * -EFBIG when the rest does not fit, -ENOMEM, or the -errno of read. */
int small_file_read_all(int fd, struct dynbuf *b);

#endif
