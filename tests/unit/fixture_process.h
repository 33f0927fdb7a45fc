/* Running a unit-test fixture that reports addresses and line numbers on stdout, then waits
 * to be inspected (and killed). Include after unit.h: a missing value counts as a failure. */
#ifndef ALLOCSCOPE_TEST_FIXTURE_PROCESS_H
#define ALLOCSCOPE_TEST_FIXTURE_PROCESS_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/types.h>
#include <sys/wait.h>

/* A fixture process started by a test, and what it printed before "ready": lines
 * "name 0xADDR" (addresses) and "line name N" (source lines). */
struct run {
	pid_t pid;
	FILE *out;
	char names[24][64];
	uint64_t values[24];
	bool is_line[24];
	int count;
};

static inline bool start_run(const char *path, struct run *r)
{
	int out_pipe[2];
	char text[256];

	memset(r, 0, sizeof(*r));
	r->pid = -1;
	if (pipe(out_pipe) != 0)
		return false;
	r->pid = fork();
	if (r->pid < 0)
		return false;
	if (r->pid == 0) {
		dup2(out_pipe[1], STDOUT_FILENO);
		close(out_pipe[0]);
		close(out_pipe[1]);
		execl(path, path, (char *)NULL);
		_exit(127);
	}
	close(out_pipe[1]);
	r->out = fdopen(out_pipe[0], "r");
	while (r->out && fgets(text, sizeof(text), r->out)) {
		unsigned long long value;
		char name[64];
		bool is_line = strncmp(text, "line ", 5) == 0;

		if (strncmp(text, "ready", 5) == 0)
			return true;
		if (r->count >= 24 ||
		    sscanf(text + (is_line ? 5 : 0), is_line ? "%63s %llu" : "%63s %llx", name,
			   &value) != 2)
			continue;
		snprintf(r->names[r->count], sizeof(r->names[0]), "%s", name);
		r->is_line[r->count] = is_line;
		r->values[r->count++] = value;
	}
	fprintf(stderr, "  %s did not start (run make unit to build fixtures)\n", path);
	return false;
}

static inline void stop_run(struct run *r)
{
	int status;

	if (r->pid > 0) {
		kill(r->pid, SIGKILL);
		waitpid(r->pid, &status, 0);
	}
	if (r->out)
		fclose(r->out);
	r->pid = -1;
	r->out = NULL;
}

static inline uint64_t run_value(const struct run *r, const char *name, bool line)
{
	int i;

	for (i = 0; i < r->count; i++) {
		if (r->is_line[i] == line && strcmp(r->names[i], name) == 0)
			return r->values[i];
	}
	fprintf(stderr, "  the fixture printed no %s%s\n", line ? "line " : "", name);
	unit_case_failures++;
	return 0;
}

#endif
