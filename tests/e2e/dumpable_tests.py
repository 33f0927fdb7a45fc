"""A process that turns its dumpable flag off (issue 13): allocscope acting for a caller who is
not root (a setcap'd copy run by nobody) keeps sampling it, but sends no stack memory of it:
the kernel lets only CAP_SYS_PTRACE read a non-dumpable process's memory, and keepers of
secrets (ssh-agent, gpg-agent) turn dumpable off for that reason."""
import os
import re

from helpers import MALLOC_LOOP, run, test
from privilege_tests import AS_NOBODY, setcap_copy
from pprof_reader import Profile

ITERATIONS, SIZE = 200000, 2000
NOT_DUMPABLE = re.compile(r"^\s+(\d+) samples without a stack copy: the process is not dumpable",
                          re.M)


@test
def undumpable_command_keeps_sampling_without_stack_copies(tmp):
    """nobody's setcap'd allocscope with the stack copy (--unwind dwarf) on its own command,
    which calls prctl(PR_SET_DUMPABLE, 0) after it started: every sample comes without a stack
    copy (counted in the summary) while the total stays near the truth; the same command left
    dumpable gets its copies (no such line)."""
    binary, out = setcap_copy(tmp)
    truth = ITERATIONS * SIZE
    counts = {}
    for undumpable in (True, False):
        out_path = os.path.join(out, f"dumpable-{undumpable}.pb.gz")
        cmd = [MALLOC_LOOP, "--iterations", str(ITERATIONS), "--size", str(SIZE)]
        if undumpable:
            cmd.append("--undumpable")
        result = run(AS_NOBODY + [binary, "--unwind", "dwarf", "-r", "16KiB", "-o", out_path,
                                  "--"] + cmd, cwd=out)
        assert result.returncode == 0, result.stderr
        assert "samples refused" not in result.stdout, result.stdout
        shown = NOT_DUMPABLE.search(result.stdout)
        counts[undumpable] = int(shown.group(1)) if shown else 0
        total = sum(s["values"][1] for s in Profile(out_path).samples)
        assert 0.8 * truth < total < 1.2 * truth, f"undumpable={undumpable}: {total} of {truth}"
        if undumpable:
            assert counts[True] > 1000, result.stdout
    assert counts[False] == 0, counts
