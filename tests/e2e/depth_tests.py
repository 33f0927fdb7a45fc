"""Stacks deeper than the walk's depth limit (issue 13): tests/workloads/deep_recursion.c
allocates at site_deep 700 frames below main and at site_shallow right under main. Whichever
walk takes the stack (the kernel's CFI walk, 512 frames; the agent's unwinder of a stack copy,
512; the kernel's frame-pointer walk with --unwind fp, 127), a cut stack keeps its innermost
frames and ends in a root frame "[truncated]", and the summary counts those stacks apart from
the walks that stopped early for other reasons. Imported by run.py (root and BPF)."""
import os
import re

from helpers import (ALLOCSCOPE, BUILD, RATE, RATE_ARG, Workload, check_reach_main,
                     check_sites, finish_allocscope, parse_manifest, run, start_allocscope, test)
from pprof_reader import Profile

DEEP_RECURSION = os.path.join(BUILD, "workloads", "deep_recursion")
TRUNCATED = "[truncated]"


def summary_count(out, pattern):
    """The N of a summary line "  N <pattern>...", 0 when the line is absent."""
    match = re.search(r"^\s+(\d+) " + pattern, out, re.M)
    return int(match.group(1)) if match else 0


def check_depth_cut(out, profile, manifest, limit):
    """site_deep's stacks end in [truncated] (every one: 700 frames is past the limit) and keep
    the limit's frames; site_shallow's reach main without it; the summary counts the cut stacks
    at the limit, and not as stacks cut short."""
    profile.check_ids()
    check_sites(profile, manifest, RATE)
    deep = shallow = 0
    for sample in profile.samples:
        names = profile.stack_functions(sample)
        if "site_deep" in names:
            deep += 1
            assert names[-1] == TRUNCATED, f"site_deep stack ends in {names[-3:]}"
            assert names.count(TRUNCATED) == 1 and "main" not in names, names[-3:]
            # The limit's frames (with --unwind fp, and the allocator's caller read apart).
            assert len(sample["locations"]) >= limit + 1, len(sample["locations"])
        elif "site_shallow" in names:
            shallow += 1
            assert TRUNCATED not in names, names
    assert deep and shallow, f"{deep} site_deep and {shallow} site_shallow stacks"
    check_reach_main(profile, ["site_shallow"])
    cut = summary_count(out, rf"stacks cut at the depth limit \({limit} frames\): the "
                             r"innermost frames kept, under a root frame \[truncated\]")
    # site_deep: 2000 allocations of 4 KiB at a 16 KiB rate, about 440 samples.
    assert cut >= 200, out
    assert summary_count(out, "stacks cut short") < cut // 10, out


def capture_attached(tmp, name, args):
    """The workload attached to by pid before it allocates, captured with args."""
    out_path = os.path.join(tmp, name + ".pb.gz")
    workload = Workload([DEEP_RECURSION])
    try:
        proc, seen = start_allocscope(["--pid", str(workload.pid), "--sample-rate", RATE_ARG,
                                       "-o", out_path] + args)
        workload.start()
        manifest = parse_manifest(workload.finish())
        code, out, err = finish_allocscope(proc, seen)
    finally:
        workload.kill()
    assert code == 0, f"exit {code}: {err}"
    return manifest, out, Profile(out_path)


@test
def depth_cut_by_the_kernel_walk_is_marked(tmp):
    """The default unwinding, the command started by allocscope: the kernel's CFI walk stops
    at 512 frames."""
    out_path = os.path.join(tmp, "depth-default.pb.gz")
    result = run([ALLOCSCOPE, "--sample-rate", RATE_ARG, "-o", out_path, "--", DEEP_RECURSION])
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    assert "stack copy" not in result.stdout, result.stdout
    check_depth_cut(result.stdout, Profile(out_path), parse_manifest(result.stdout), 512)


@test
def depth_cut_by_the_stack_copy_unwinder_is_marked(tmp):
    """--unwind dwarf with a 64 KiB stack copy (about 680 frames of this workload): the agent's
    unwinder stops at 512 frames."""
    manifest, out, profile = capture_attached(tmp, "depth-dwarf",
                                              ["--unwind", "dwarf", "--stack-copy-size", "64KiB",
                                               "--ringbuf-size", "128MiB"])
    assert "samples dropped" not in out, out
    check_depth_cut(out, profile, manifest, 512)


@test
def depth_cut_by_the_frame_pointer_walk_is_marked(tmp):
    """--unwind fp: the kernel's frame-pointer walk stops at 127 frames."""
    manifest, out, profile = capture_attached(tmp, "depth-fp", ["--unwind", "fp"])
    check_depth_cut(out, profile, manifest, 127)
