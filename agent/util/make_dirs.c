/* mkdir -p (see make_dirs.h): each prefix of the path that ends at a slash is made in turn,
 * so "a//b/" and a trailing slash need no special case beyond skipping the empty names. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "util/error_text.h"
#include "util/make_dirs.h"

int make_dirs(const char *path, mode_t mode, const char *what, const char *hint, char *err,
	      size_t err_len)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		if (buf[i - 1] == '/')
			continue; /* "//" */
		buf[i] = '\0';
		if (mkdir(buf, mode) != 0 && errno != EEXIST) {
			int saved = errno;

			set_err(err, err_len, "cannot create %s %s: %s (%s)", what, buf,
				strerror(saved), hint);
			return -saved;
		}
		if (i < len)
			buf[i] = '/';
	}
	return 0;
}
