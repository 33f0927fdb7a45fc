/* Secrets from files and the environment (see secret.h). The file is opened first and then
 * fstat'ed, so the identity compared on refresh is that of the file read, not of whatever the
 * path names a moment later. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/error_text.h"
#include "util/secret.h"
#include "util/small_file.h"

static void wipe_free(char *value)
{
	if (!value)
		return;
	explicit_bzero(value, strlen(value));
	free(value);
}

/* Trailing blanks and line ends are never part of a password or token: editors and `echo`
 * add them. */
static size_t trimmed_length(const char *text, size_t len)
{
	while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' ' ||
		       text[len - 1] == '\t'))
		len--;
	return len;
}

/* A value is sent in a header: a line break inside would end it early and start another. */
static bool value_allowed(const struct secret_rules *rules, const char *value, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)value[i];

		if (rules->bearer_token ? c <= 0x20 || c >= 0x7f : c == '\r' || c == '\n' || c == 0)
			return false;
	}
	return true;
}

static char *copy_value(const char *text, size_t len)
{
	char *copy = malloc(len + 1);

	if (!copy)
		return NULL;
	memcpy(copy, text, len);
	copy[len] = '\0';
	return copy;
}

void secret_free(struct secret *s)
{
	wipe_free(s->value);
	s->value = NULL;
	free(s->path);
	s->path = NULL;
}

int secret_refresh(struct secret *s, char *err, size_t err_len)
{
	const struct secret_rules *rules = &s->rules;
	/* One byte more than allowed tells a file that is too large; one more for the NUL. */
	size_t cap = rules->max_bytes + 2, n = 0, len = 0;
	struct stat st;
	char *buf, *value;
	int fd, ret = 0;

	if (!s->path)
		return 0;
	fd = open(s->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0 || fstat(fd, &st) != 0) {
		ret = -errno;
		if (fd >= 0)
			close(fd);
		set_err(err, err_len, "cannot read %s %s: %s%s", rules->what, s->path,
			strerror(-ret), rules->unreadable_hint ? rules->unreadable_hint : "");
		return ret;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		set_err(err, err_len, "cannot read %s %s: not a regular file", rules->what,
			s->path);
		return -EINVAL;
	}
	if (s->value && st.st_ino == s->ino && st.st_size == s->size &&
	    st.st_mtim.tv_sec == s->mtime.tv_sec && st.st_mtim.tv_nsec == s->mtime.tv_nsec) {
		close(fd);
		return 0;
	}
	buf = malloc(cap);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	ret = small_file_read_fd(fd, buf, cap, &n);
	close(fd);
	if (ret) {
		set_err(err, err_len, "cannot read %s %s: %s", rules->what, s->path,
			strerror(-ret));
	} else if (n > rules->max_bytes) {
		set_err(err, err_len, "%s %s is larger than %zu bytes: is it the right file?",
			rules->what, s->path, rules->max_bytes);
		ret = -EFBIG;
	} else {
		len = trimmed_length(buf, n);
		if (!value_allowed(rules, buf, len)) {
			set_err(err, err_len,
				rules->bearer_token
				    ? "%s %s is empty or holds characters a token cannot have"
				    : "%s %s is empty, or holds more than one line or a NUL byte",
				rules->what, s->path);
			ret = -EINVAL;
		}
	}
	value = ret ? NULL : copy_value(buf, len);
	explicit_bzero(buf, cap);
	free(buf);
	if (ret)
		return ret;
	if (!value)
		return -ENOMEM;
	wipe_free(s->value);
	s->value = value;
	s->ino = st.st_ino;
	s->size = st.st_size;
	s->mtime = st.st_mtim;
	return 0;
}

int secret_from_file(struct secret *s, const struct secret_rules *rules, const char *path,
		     char *err, size_t err_len)
{
	secret_free(s);
	s->rules = *rules;
	s->path = strdup(path);
	if (!s->path)
		return -ENOMEM;
	return secret_refresh(s, err, err_len);
}

int secret_from_env(struct secret *s, const struct secret_rules *rules, const char *name,
		    char *err, size_t err_len)
{
	const char *value = getenv(name);
	size_t len;

	secret_free(s);
	s->rules = *rules;
	if (!value || !value[0]) {
		set_err(err, err_len, "%s: the environment variable %s is not set (or empty)",
			rules->what, name);
		return -ENOENT;
	}
	len = trimmed_length(value, strlen(value));
	if (!value_allowed(rules, value, len)) {
		set_err(err, err_len, "%s: the environment variable %s holds more than one line",
			rules->what, name);
		return -EINVAL;
	}
	s->value = copy_value(value, len);
	return s->value ? 0 : -ENOMEM;
}
