/* Secrets from files and the environment (agent/util/secret.h), as the push sinks and the
 * Kubernetes client use them: trimmed, re-read when the file changes, refused with a message
 * that names the file and never the value. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "unit.h"
#include "util/secret.h"

static char dir[64];

static void write_file(const char *path, const char *text)
{
	char tmp[128];
	int fd;

	/* A new inode each time, as a rotation (rename over) makes. */
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);
	CHECK(rename(tmp, path) == 0);
}

static void test_file_is_trimmed_and_reread_when_rotated(void)
{
	struct secret_rules rules = {.what = "token_file", .max_bytes = 4096};
	struct secret s = {0};
	char path[128], err[256] = "";

	snprintf(path, sizeof(path), "%s/token", dir);
	write_file(path, "first-token\n");
	CHECK(secret_from_file(&s, &rules, path, err, sizeof(err)) == 0);
	CHECK_STR(s.value, "first-token");
	write_file(path, "second-token \r\n");
	CHECK(secret_refresh(&s, err, sizeof(err)) == 0);
	CHECK_STR(s.value, "second-token");
	/* A bad rotation keeps the value in use and says what is wrong. */
	write_file(path, "two\nlines");
	CHECK(secret_refresh(&s, err, sizeof(err)) == -EINVAL);
	CHECK_STR(s.value, "second-token");
	CHECK(strstr(err, path) && strstr(err, "more than one line") && !strstr(err, "two"));
	secret_free(&s);
	CHECK(s.value == NULL && s.path == NULL);
}

static void test_refusals_name_the_file(void)
{
	struct secret_rules token = {.what = "the service account token",
				     .max_bytes = 16,
				     .bearer_token = true,
				     .unreadable_hint = " (is it mounted?)"};
	struct secret s = {0};
	char path[128], fifo[128], err[256] = "";

	snprintf(path, sizeof(path), "%s/big", dir);
	write_file(path, "abcdefghijklmnopq");
	CHECK(secret_from_file(&s, &token, path, err, sizeof(err)) == -EFBIG);
	CHECK(strstr(err, "larger than 16 bytes") != NULL);
	write_file(path, "has space");
	CHECK(secret_from_file(&s, &token, path, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "characters a token cannot have") && !strstr(err, "has space"));
	snprintf(path, sizeof(path), "%s/missing", dir);
	CHECK(secret_from_file(&s, &token, path, err, sizeof(err)) == -ENOENT);
	CHECK(strstr(err, "cannot read the service account token ") && strstr(err, "mounted?"));
	/* A FIFO where the file should be is refused at once instead of blocking the reader. */
	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	CHECK(mkfifo(fifo, 0600) == 0);
	CHECK(secret_from_file(&s, &token, fifo, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "not a regular file") != NULL);
	secret_free(&s);
}

static void test_environment(void)
{
	struct secret_rules rules = {.what = "password_env", .max_bytes = 4096};
	struct secret s = {0};
	char err[256] = "";

	setenv("ALLOCSCOPE_TEST_SECRET", "hunter2\n", 1);
	CHECK(secret_from_env(&s, &rules, "ALLOCSCOPE_TEST_SECRET", err, sizeof(err)) == 0);
	CHECK_STR(s.value, "hunter2");
	CHECK(secret_refresh(&s, err, sizeof(err)) == 0);
	CHECK_STR(s.value, "hunter2");
	unsetenv("ALLOCSCOPE_TEST_SECRET_UNSET");
	CHECK(secret_from_env(&s, &rules, "ALLOCSCOPE_TEST_SECRET_UNSET", err, sizeof(err)) ==
	      -ENOENT);
	CHECK(strstr(err, "password_env: the environment variable ALLOCSCOPE_TEST_SECRET_UNSET"));
	CHECK(s.value == NULL);
	secret_free(&s);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/allocscope-secret-XXXXXX");
	if (!mkdtemp(dir))
		return 1;
	RUN(test_file_is_trimmed_and_reread_when_rotated);
	RUN(test_refusals_name_the_file);
	RUN(test_environment);
	for (const char *name = "token\0big\0fifo\0"; *name; name += strlen(name) + 1) {
		char path[128];

		snprintf(path, sizeof(path), "%s/%s", dir, name);
		unlink(path);
	}
	rmdir(dir);
	return unit_summary("secret");
}
