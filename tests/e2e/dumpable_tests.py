"""A process that turns its dumpable flag off (issue 13): allocscope acting for a caller who is
not root (a setcap'd copy run by nobody) keeps sampling it, but sends no stack memory of it:
the kernel lets only CAP_SYS_PTRACE read a non-dumpable process's memory, and keepers of
secrets (ssh-agent, gpg-agent) turn dumpable off for that reason. Its request context (issue
15), kept in the same memory, is not read either."""
import os
import re
from collections import defaultdict

from context_tests import (BIG_RING, CONTEXT_REQUESTS, CTX_RATE, CTX_RATE_ARG, DELAY,
                           check_context_totals, parse_context_manifest)
from helpers import MALLOC_LOOP, expected_with_tolerance, run, test
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


# The labels a capture puts on every sample itself; any other comes from the request context.
CAPTURE_LABELS = {"pid", "service_version"}


def handler_totals(profile, functions):
    """alloc_space per function of `functions` whatever the labels, and the bytes and label
    names of the samples that carry a request-context label."""
    totals, labelled, names_seen = defaultdict(float), 0, set()
    for sample in profile.samples:
        names = [n for n in profile.stack_functions(sample) if n in functions]
        if names:
            totals[names[0]] += sample["values"][1]
        context = set(sample["labels"]) - CAPTURE_LABELS
        if context:
            labelled += sample["values"][1]
            names_seen |= context
    return totals, labelled, names_seen


@test
def undumpable_command_keeps_its_request_context(tmp):
    """nobody's setcap'd allocscope on a request server that publishes its endpoint and tenant
    (liballocscope-context) and then turns dumpable off: its thread records are its memory, so
    no sample carries a request-context label, while sampling goes on (each handler's bytes
    within the sampling tolerance); the same server left dumpable gets its labels, per
    (endpoint, tenant) within tolerance."""
    binary, out = setcap_copy(tmp)
    for undumpable in (True, False):
        out_path = os.path.join(out, f"context-dumpable-{not undumpable}.pb.gz")
        cmd = [CONTEXT_REQUESTS, "--requests", "1000", *DELAY]
        if undumpable:
            cmd.append("--undumpable")
        result = run(AS_NOBODY + [binary, "-r", CTX_RATE_ARG, "--ringbuf-size", BIG_RING,
                                  "-o", out_path, "--"] + cmd, cwd=out, timeout=300)
        assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
        assert re.search(r"publishes request context \(OpenTelemetry thread context\)",
                         result.stderr), result.stderr
        assert "samples dropped" not in result.stdout, result.stdout
        manifest = parse_context_manifest(result.stdout)
        profile = Profile(out_path)
        if not undumpable:
            check_context_totals([profile], manifest, CTX_RATE)
            continue
        functions = {f for f, _, _ in manifest}
        totals, labelled, names = handler_totals(profile, functions)
        assert labelled == 0, \
            f"{labelled:.0f} bytes of a non-dumpable process carry its context ({names})"
        for function in functions:
            classes = [c for (f, _, _), cls in manifest.items() if f == function for c in cls]
            truth, tol = expected_with_tolerance(classes, CTX_RATE)[:2]
            got = totals.get(function, 0)
            assert abs(got - truth) <= tol, (function, got, truth, tol)
