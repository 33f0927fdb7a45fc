/* mkdir -p: the directory sink's and the spool's directories, made before anything is written
 * into them. */
#ifndef ALLOCSCOPE_UTIL_MAKE_DIRS_H
#define ALLOCSCOPE_UTIL_MAKE_DIRS_H

#include <stddef.h>
#include <sys/types.h>

/* Creates path and every missing parent with mode (directories that exist are fine). Returns
 * 0, -ENAMETOOLONG when path does not fit PATH_MAX, or the -errno of the mkdir that failed,
 * with "cannot create <what> <that directory>: <reason> (<hint>)" in err. */
int make_dirs(const char *path, mode_t mode, const char *what, const char *hint, char *err,
	      size_t err_len);

#endif
