/* Whole-or-nothing output files (see output_file.h). */
#include "read/output_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

static int check_target(const char *path, char *err, size_t err_len)
{
	struct stat st;

	if (lstat(path, &st) != 0 || S_ISREG(st.st_mode))
		return 0;
	snprintf(err, err_len,
		 "cannot write %s: it is %s, and allocscope only replaces regular "
		 "files (give another file name)",
		 path,
		 S_ISDIR(st.st_mode)   ? "a directory"
		 : S_ISLNK(st.st_mode) ? "a symbolic link"
				       : "not a regular file");
	return S_ISDIR(st.st_mode) ? -EISDIR : -EEXIST;
}

int output_file__open(struct output_file *file, const char *path, char *err, size_t err_len)
{
	const char *slash;
	int fd, ret;

	memset(file, 0, sizeof(*file));
	if (!*path || strlen(path) >= sizeof(file->path)) {
		snprintf(err, err_len, "cannot write '%s': give a file name", path);
		return -EINVAL;
	}
	ret = check_target(path, err, err_len);
	if (ret)
		return ret;
	snprintf(file->path, sizeof(file->path), "%s", path);
	slash = strrchr(path, '/');
	if (slash)
		snprintf(file->tmp, sizeof(file->tmp), "%.*s/.allocscope-out-XXXXXX",
			 (int)(slash - path), path);
	else
		snprintf(file->tmp, sizeof(file->tmp), ".allocscope-out-XXXXXX");
	if (slash == path)
		snprintf(file->tmp, sizeof(file->tmp), "/.allocscope-out-XXXXXX");
	fd = mkstemp(file->tmp);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, err_len,
			 "cannot write %s: cannot create a file in its directory (%s)", path,
			 strerror(-ret));
		file->tmp[0] = '\0';
		return ret;
	}
	/* mkstemp makes it 0600; a report is as readable as the user's umask allows. */
	mode_t mask = umask(0);

	umask(mask);
	fchmod(fd, 0666 & ~mask);
	file->stream = fdopen(fd, "w");
	if (!file->stream) {
		ret = -errno;
		close(fd);
		unlink(file->tmp);
		file->tmp[0] = '\0';
		snprintf(err, err_len, "cannot write %s: %s", path, strerror(-ret));
		return ret;
	}
	return 0;
}

int output_file__commit(struct output_file *file, char *err, size_t err_len)
{
	int ret = 0;

	if (fflush(file->stream) != 0 || ferror(file->stream) || fsync(fileno(file->stream)) != 0)
		ret = errno ? -errno : -EIO;
	if (fclose(file->stream) != 0 && !ret)
		ret = errno ? -errno : -EIO;
	file->stream = NULL;
	if (ret) {
		snprintf(err, err_len, "cannot write %s: %s%s", file->path, strerror(-ret),
			 ret == -ENOSPC ? " (free some space or write elsewhere)" : "");
		output_file__abort(file);
		return ret;
	}
	ret = check_target(file->path, err, err_len);
	if (!ret && rename(file->tmp, file->path) != 0) {
		ret = -errno;
		snprintf(err, err_len, "cannot write %s: %s", file->path, strerror(-ret));
	}
	if (ret) {
		output_file__abort(file);
		return ret;
	}
	file->tmp[0] = '\0';
	return 0;
}

void output_file__abort(struct output_file *file)
{
	if (file->stream)
		fclose(file->stream);
	file->stream = NULL;
	if (file->tmp[0])
		unlink(file->tmp);
	file->tmp[0] = '\0';
}
