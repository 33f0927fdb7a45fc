"""Callers behind another tool's return probes.

A return probe on a glibc entry point (a uretprobe, or a session uprobe asking for the return:
another allocscope with --inuse on the same host) makes the kernel put its trampoline where
the return address was, in every process that uprobe fires in, whatever the tool's own pid
filter. glibc's realloc(NULL, n), memalign and aligned_alloc with a small alignment tail-jump
to malloc, whose probe then finds the trampoline at *sp: read as the caller, the site became
the [uprobes] page's address (0x7ffff7fbf000 without ASLR, 0x7fffffffe000 with it) and the
stack stopped there. Here an allocscope --inuse on an idle bystander holds the return probes
while the accuracy workload is profiled, with ASLR disabled (setarch -R) and on, in the
default mode and with --unwind dwarf and fp: every site within the sampling tolerance.
"""
import os
import signal

from helpers import (ALLOC_SITES, ALLOCSCOPE, RATE, RATE_ARG, Workload, check_reach_main,
                     check_sites, parse_manifest, run, start_allocscope, test)
from pprof_reader import Profile


def hold_return_probes(tmp):
    """An allocscope --inuse on an idle process: its session uprobes on glibc's entry points
    ask for the returns of the calls they sample, in any process they fire in."""
    bystander = Workload([ALLOC_SITES])
    proc, seen = start_allocscope(["--inuse", "--sample-rate", RATE_ARG, "-o",
                                   os.path.join(tmp, "bystander.pb.gz"), "-p",
                                   str(bystander.pid)])
    attach = "".join(seen)
    return bystander, proc, attach


def release_return_probes(bystander, proc):
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    bystander.kill()


def profile_sites(tmp, name, unwind, no_aslr):
    out_path = os.path.join(tmp, name + ".pb.gz")
    # Stack copies (dwarf) are 16 KiB a sample: fewer samples and a larger ring, so that a
    # loaded machine's agent drops none (dropped samples leave every site short).
    rate, rate_arg = (4 * RATE, f"{4 * RATE // 1024}KiB") if unwind == "dwarf" else (RATE, RATE_ARG)
    args = [ALLOCSCOPE, "--sample-rate", rate_arg, "-o", out_path]
    if unwind == "dwarf":
        args += ["--ringbuf-size", "64MiB"]
    if unwind:
        args += ["--unwind", unwind]
    args += ["--", ALLOC_SITES]
    if no_aslr:
        args = ["setarch", "-R"] + args
    result = run(args)
    assert result.returncode == 0, f"{name}: exit {result.returncode}: {result.stderr}"
    profile = Profile(out_path)
    try:
        check_sites(profile, parse_manifest(result.stdout), rate)
        # And past it: the walk goes on from the real return address to main.
        check_reach_main(profile, ["site_realloc_null"])
    except AssertionError as e:
        return f"{name}: {e}"
    # No site is an address: the summary names every row.
    table = result.stdout.split("allocation site", 1)[1].split("total", 1)[0]
    return f"{name}: a site is an address: {table}" if "0x" in table else None


@test
def sites_behind_return_probes_without_aslr(tmp):
    """ASLR disabled (setarch -R) and on; default, dwarf and fp unwinding; another tool's return
    probes on glibc: site_realloc_null, site_aligned_alloc... each within the tolerance."""
    bystander, proc, attach = hold_return_probes(tmp)
    try:
        if "session uprobes" not in attach:
            print("  (return probes not held: this kernel has no session uprobes; "
                  "profiling without them)")
        problems = [profile_sites(tmp, f"noaslr-{unwind or 'default'}", unwind, True)
                    for unwind in (None, "dwarf", "fp")]
        problems.append(profile_sites(tmp, "aslr-default", None, False))
        problems = [p for p in problems if p]
        assert not problems, "\n".join(problems)
    finally:
        release_return_probes(bystander, proc)
