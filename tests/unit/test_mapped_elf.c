/* The agent's one ELF opener (agent/elf/mapped_elf.h): a file opened under two names is one
 * mapping, a rewritten file is a new one, what is not a regular ELF file is refused without
 * blocking, and files no one holds are kept only up to MAPPED_ELF_IDLE_MAX. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "unit.h"
#include "elf/mapped_elf.h"

static char dir[] = "/tmp/allocscope-mapped-XXXXXX";

static int copy_self(const char *to)
{
	char cmd[PATH_MAX + 64];

	snprintf(cmd, sizeof(cmd), "cp /proc/%d/exe '%s'", (int)getpid(), to);
	return system(cmd);
}

static void test_same_file_is_one_mapping(void)
{
	char path[PATH_MAX], link_path[PATH_MAX];
	struct mapped_elf *a = NULL, *b = NULL, *c = NULL;
	struct mapped_elf_stats before, after;
	int ret;

	snprintf(path, sizeof(path), "%s/one", dir);
	snprintf(link_path, sizeof(link_path), "%s/one-link", dir);
	CHECK(copy_self(path) == 0);
	CHECK(symlink(path, link_path) == 0);
	mapped_elf__stats(&before);
	CHECK(mapped_elf__open(path, &a) == 0);
	CHECK(mapped_elf__open(link_path, &b) == 0);
	CHECK(a != NULL && a == b);
	CHECK(a && mapped_elf__elf(a) != NULL);
	mapped_elf__stats(&after);
	CHECK_EQ_U64(after.hits - before.hits, 1);
	mapped_elf__put(a);
	mapped_elf__put(b);
	/* Rewritten in place (another size): the old mapping is not served for it. */
	CHECK(truncate(path, 8192) == 0);
	ret = mapped_elf__open(path, &c);
	CHECK(ret == 0 ? c != a : ret == -ENOEXEC);
	mapped_elf__put(c);
	unlink(link_path);
	unlink(path);
}

/* A file rewritten in place just now (as the fuzz harnesses do for every input) keeps its
 * inode and may keep its size and mtime within one timestamp tick: its idle mapping must not
 * be served again. */
static void test_fresh_rewrite_is_not_served_from_idle(void)
{
	struct mapped_elf_stats before, after;
	struct mapped_elf *m = NULL;
	char path[PATH_MAX], cmd[2 * PATH_MAX + 32];

	struct stat st;

	snprintf(path, sizeof(path), "%s/rewritten", dir);
	CHECK(copy_self(path) == 0);
	CHECK(mapped_elf__open(path, &m) == 0);
	mapped_elf__put(m);
	CHECK(stat(path, &st) == 0);
	/* The same bytes again through O_TRUNC (same inode and size), within what a coarse
	 * timestamp would show as the same tick: the old mtime put back. */
	snprintf(cmd, sizeof(cmd), "cp /proc/%d/exe /dev/stdout > '%s'", (int)getpid(), path);
	CHECK(system(cmd) == 0);
	CHECK(utimensat(AT_FDCWD, path, (struct timespec[2]){st.st_atim, st.st_mtim}, 0) == 0);
	mapped_elf__stats(&before);
	m = NULL;
	CHECK(mapped_elf__open(path, &m) == 0);
	mapped_elf__stats(&after);
	CHECK_EQ_U64(after.hits - before.hits, 0);
	mapped_elf__put(m);
	unlink(path);
}

static void test_refusals(void)
{
	char fifo[PATH_MAX], text[PATH_MAX];
	struct mapped_elf *m = NULL;
	int fd;

	CHECK(mapped_elf__open(dir, &m) == -EISDIR && m == NULL);
	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	CHECK(mkfifo(fifo, 0600) == 0);
	/* No writer: an open without O_NONBLOCK would never return. */
	CHECK(mapped_elf__open(fifo, &m) == -ENOEXEC && m == NULL);
	snprintf(text, sizeof(text), "%s/text", dir);
	fd = open(text, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0 && write(fd, "not elf\n", 8) == 8);
	close(fd);
	CHECK(mapped_elf__open(text, &m) == -ENOEXEC && m == NULL);
	CHECK(mapped_elf__open("/nonexistent/lib.so", &m) == -ENOENT && m == NULL);
	unlink(fifo);
	unlink(text);
}

static void test_idle_files_are_bounded(void)
{
	struct mapped_elf_stats before, after;
	char path[PATH_MAX];
	int n = MAPPED_ELF_IDLE_MAX + 6;

	mapped_elf__stats(&before);
	for (int i = 0; i < n; i++) {
		struct mapped_elf *m = NULL;

		snprintf(path, sizeof(path), "%s/copy-%d", dir, i);
		CHECK(copy_self(path) == 0);
		CHECK(mapped_elf__open(path, &m) == 0);
		mapped_elf__put(m);
		unlink(path);
	}
	mapped_elf__stats(&after);
	CHECK(after.idle <= MAPPED_ELF_IDLE_MAX);
	CHECK(after.evicted - before.evicted >= 6);
	CHECK_EQ_U64(after.live, before.live);
}

/* A file inside another process's root (a container's, "/proc/PID/root/...") that is an
 * absolute symlink resolves inside that root, never to the host's file of that name: a
 * container must not lead the root agent to the host's files or devices. The process here
 * is a child chroot'ed into a directory (in a user namespace of its own when not root). */
static void test_container_symlink_stays_in_its_root(void)
{
	char root[PATH_MAX], host_file[PATH_MAX], link[PATH_MAX + 16], inside[PATH_MAX + 64];
	struct mapped_elf *m = NULL;
	int ready[2], ret;
	pid_t child;
	char byte;

	snprintf(root, sizeof(root), "%s/container", dir);
	snprintf(host_file, sizeof(host_file), "%s/host.so", dir);
	CHECK(mkdir(root, 0755) == 0);
	CHECK(copy_self(host_file) == 0);
	/* In the container, lib.so points at the host file's absolute path. */
	snprintf(link, sizeof(link), "%s/lib.so", root);
	CHECK(symlink(host_file, link) == 0);
	CHECK(pipe(ready) == 0);
	child = fork();
	if (child == 0) {
		close(ready[0]);
		if (geteuid() != 0 && unshare(CLONE_NEWUSER) != 0)
			_exit(1);
		if (chroot(root) != 0)
			_exit(2);
		if (write(ready[1], "r", 1) != 1)
			_exit(3);
		pause();
		_exit(0);
	}
	close(ready[1]);
	CHECK(child > 0 && read(ready[0], &byte, 1) == 1);
	close(ready[0]);
	snprintf(inside, sizeof(inside), "/proc/%d/root/lib.so", (int)child);
	ret = mapped_elf__open(inside, &m);
	/* Resolved in the container's root, the link names a file the container lacks. */
	CHECK_EQ_U64((uint64_t)-ret, ENOENT);
	CHECK(m == NULL);
	if (m)
		mapped_elf__put(m);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	unlink(link);
	unlink(host_file);
	rmdir(root);
}

int main(void)
{
	if (!mkdtemp(dir))
		return 1;
	RUN(test_same_file_is_one_mapping);
	RUN(test_fresh_rewrite_is_not_served_from_idle);
	RUN(test_refusals);
	RUN(test_idle_files_are_bounded);
	RUN(test_container_symlink_stays_in_its_root);
	rmdir(dir);
	return unit_summary("mapped_elf");
}
