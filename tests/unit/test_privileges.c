/* privileges: the capability sets left after privileges__keep_needed (read back from
 * /proc/self/status in a forked child, so the test process keeps its own), and that a process
 * started normally (no file capabilities, no set-id bit) borrows nothing and is never
 * restricted. The setcap'd cases need root and a second user: tests/e2e/privilege_tests.py. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include "privileges.h"
#include "unit.h"

#define BIT(n) (1ull << (n))
/* bpf, perfmon, sys_ptrace, dac_read_search, checkpoint_restore */
#define AGENT_SET (BIT(39) | BIT(38) | BIT(19) | BIT(2) | BIT(40))
/* + dac_override, kill */
#define CAPTURE_SET (AGENT_SET | BIT(1) | BIT(5))
#define SYS_ADMIN BIT(21)

struct status {
	uint64_t eff, prm, inh, bnd, amb;
	int no_new_privs;
};

static void read_status(struct status *st)
{
	char line[256];
	FILE *f = fopen("/proc/self/status", "r");

	memset(st, 0, sizeof(*st));
	st->no_new_privs = -1;
	while (f && fgets(line, sizeof(line), f)) {
		sscanf(line, "CapEff: %" SCNx64, &st->eff);
		sscanf(line, "CapPrm: %" SCNx64, &st->prm);
		sscanf(line, "CapInh: %" SCNx64, &st->inh);
		sscanf(line, "CapBnd: %" SCNx64, &st->bnd);
		sscanf(line, "CapAmb: %" SCNx64, &st->amb);
		sscanf(line, "NoNewPrivs: %d", &st->no_new_privs);
	}
	if (f)
		fclose(f);
}

/* Runs keep_needed in a child; the child's exit status is its number of failed checks. */
static int kept_in_child(enum privileges_role role, bool keep_sys_admin, uint64_t allowed)
{
	pid_t pid = fork();
	int status;

	if (pid == 0) {
		struct status before, after;
		char err[256] = "";
		int failures = 0;

		read_status(&before);
		if (privileges__keep_needed(role, keep_sys_admin, err, sizeof(err)) != 0) {
			fprintf(stderr, "  keep_needed: %s\n", err);
			_exit(100);
		}
		read_status(&after);
		failures += (after.eff & ~allowed) != 0;
		failures += (after.prm & ~allowed) != 0;
		/* Nothing needed and held is lost. */
		failures += after.prm != (before.prm & allowed);
		failures += after.eff != after.prm;
		failures += after.inh != 0 || after.amb != 0;
		failures += after.no_new_privs != 1;
		/* With CAP_SETPCAP the bounding set goes too. */
		if (before.eff & BIT(8))
			failures += (after.bnd & ~allowed) != 0;
		_exit(failures);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

static void agent_keeps_only_its_set(void)
{
	CHECK_EQ_U64(kept_in_child(PRIVILEGES_AGENT, false, AGENT_SET), 0);
}

static void agent_keeps_sys_admin_only_when_asked(void)
{
	CHECK_EQ_U64(kept_in_child(PRIVILEGES_AGENT, true, AGENT_SET | SYS_ADMIN), 0);
}

static void capture_also_keeps_dac_override_and_kill(void)
{
	CHECK_EQ_U64(kept_in_child(PRIVILEGES_CAPTURE, false, CAPTURE_SET), 0);
}

static void plain_process_borrows_nothing(void)
{
	char err[256] = "";
	struct status before, after;

	CHECK(!privileges__borrowed());
	CHECK_EQ_U64(privileges__check_start(PRIVILEGES_AGENT, err, sizeof(err)), 0);
	CHECK_EQ_U64(privileges__check_start(PRIVILEGES_CAPTURE, err, sizeof(err)), 0);
	/* Not restricted: no check at all, even for pid 1. */
	CHECK_EQ_U64(privileges__may_profile(1, -1, err, sizeof(err)), 0);
	read_status(&before);
	CHECK_EQ_U64(privileges__drop_for_command(), 0);
	read_status(&after);
	CHECK(before.eff == after.eff && before.prm == after.prm);
	CHECK(after.no_new_privs == before.no_new_privs);
}

int main(void)
{
	RUN(plain_process_borrows_nothing);
	RUN(agent_keeps_only_its_set);
	RUN(agent_keeps_sys_admin_only_when_asked);
	RUN(capture_also_keeps_dac_override_and_kill);
	return unit_summary("privileges");
}
