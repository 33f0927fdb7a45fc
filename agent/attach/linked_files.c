/* The files a command will map, asked of its own dynamic loader. Resolving DT_NEEDED by hand
 * means re-implementing the loader's search (RPATH/RUNPATH with $ORIGIN, LD_LIBRARY_PATH,
 * ld.so.cache, hwcaps directories, LD_PRELOAD); `ld.so --list` gives its exact answer and runs
 * none of the program's code. It must not be run on a static executable (it crashes), hence
 * the PT_INTERP check first. */
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "attach/linked_files.h"
#include "util/log.h"
#include "elf/mapped_elf.h"

/* PT_INTERP of exe into interp ("" when static). -ENOEXEC when exe is not ELF. */
static int read_interpreter(const char *exe, char *interp, size_t len)
{
	struct mapped_elf *mapped;
	size_t phnum = 0;
	Elf *elf;
	int ret;

	interp[0] = '\0';
	ret = mapped_elf__open(exe, &mapped);
	if (ret)
		return ret;
	elf = mapped_elf__elf(mapped);
	if (elf_getphdrnum(elf, &phnum) != 0) {
		ret = -ENOEXEC;
		goto out;
	}
	for (size_t i = 0; i < phnum; i++) {
		GElf_Phdr ph;
		size_t size;
		char *image;

		if (!gelf_getphdr(elf, (int)i, &ph) || ph.p_type != PT_INTERP)
			continue;
		image = elf_rawfile(elf, &size);
		if (!image || ph.p_offset >= size || ph.p_filesz > size - ph.p_offset ||
		    ph.p_filesz == 0 || ph.p_filesz >= len) {
			ret = -ENOEXEC;
			goto out;
		}
		memcpy(interp, image + ph.p_offset, ph.p_filesz);
		interp[ph.p_filesz] = '\0';
		interp[strnlen(interp, ph.p_filesz)] = '\0';
		break;
	}
out:
	mapped_elf__put(mapped);
	return ret;
}

static int add_path(struct linked_files *out, const char *path, size_t len)
{
	char **grown;

	for (size_t i = 0; i < out->count; i++)
		if (strlen(out->paths[i]) == len && strncmp(out->paths[i], path, len) == 0)
			return 0;
	grown = realloc(out->paths, (out->count + 1) * sizeof(*out->paths));
	if (!grown)
		return -ENOMEM;
	out->paths = grown;
	out->paths[out->count] = strndup(path, len);
	if (!out->paths[out->count])
		return -ENOMEM;
	out->count++;
	return 0;
}

/* One line of list mode: "\tname => /path (0x...)", "\t/path (0x...)" (the interpreter, a
 * preloaded library), "\tlinux-vdso.so.1 (0x...)", "\tname => not found". */
static int parse_line(struct linked_files *out, const char *line)
{
	const char *arrow = strstr(line, " => "), *path, *end;

	path = arrow ? arrow + 4 : line + strspn(line, " \t");
	if (path[0] != '/')
		return 0;
	end = strstr(path, " (");
	if (!end)
		end = path + strcspn(path, "\n");
	return add_path(out, path, (size_t)(end - path));
}

static int list_libraries(const char *interp, const char *exe, struct linked_files *out)
{
	char line[4096];
	int pipefd[2], status, ret = 0;
	FILE *stream;
	pid_t pid;

	if (pipe2(pipefd, O_CLOEXEC) != 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		close(pipefd[0]);
		close(pipefd[1]);
		return ret;
	}
	if (pid == 0) {
		int null_fd = open("/dev/null", O_WRONLY);

		dup2(pipefd[1], STDOUT_FILENO);
		if (null_fd >= 0)
			dup2(null_fd, STDERR_FILENO);
		execl(interp, interp, "--list", exe, (char *)NULL);
		_exit(127);
	}
	close(pipefd[1]);
	stream = fdopen(pipefd[0], "r");
	if (!stream) {
		ret = -errno;
		close(pipefd[0]);
	} else {
		while (fgets(line, sizeof(line), stream))
			if (ret == 0)
				ret = parse_line(out, line);
		fclose(stream);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	/* A library it cannot find makes it fail, as the command itself will: what it did find
	 * is still the best answer. */
	if (ret == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		log_debug("%s --list %s exited with status %d", interp, exe, status);
	return ret;
}

int linked_files__list(const char *exe, struct linked_files *out)
{
	char interp[4096];
	int ret;

	memset(out, 0, sizeof(*out));
	ret = read_interpreter(exe, interp, sizeof(interp));
	if (ret == 0)
		ret = add_path(out, exe, strlen(exe));
	if (ret == 0 && interp[0]) {
		out->dynamic = true;
		ret = list_libraries(interp, exe, out);
	}
	if (ret)
		linked_files__free(out);
	return ret;
}

void linked_files__free(struct linked_files *files)
{
	if (!files)
		return;
	for (size_t i = 0; i < files->count; i++)
		free(files->paths[i]);
	free(files->paths);
	memset(files, 0, sizeof(*files));
}
