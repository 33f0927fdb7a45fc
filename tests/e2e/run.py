#!/usr/bin/env python3
"""End-to-end tests: the real allocscope binary, real BPF, real processes, as root.

Each test starts workloads from build/workloads, runs build/allocscope the way a user would,
and checks what a user would check: exit status, messages, and the profile's contents read
by an independent decoder (tests/e2e/pprof_reader.py) and by `go tool pprof`.

    python3 tests/e2e/run.py [-k SUBSTRING]

Prints "e2e: N passed, M failed" last; exits non-zero if anything failed.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(__file__))
from helpers import *  # noqa: E402,F401,F403
from helpers import TESTS  # noqa: E402
from pprof_reader import Profile  # noqa: E402


# ---------------------------------------------------------------------------------------------

@test
def command_mode_estimates_each_site(tmp):
    out_path = os.path.join(tmp, "cmd.pb.gz")
    result = run([ALLOCSCOPE, "--sample-rate", RATE_ARG, "-o", out_path, "--", ALLOC_SITES])
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    manifest = parse_manifest(result.stdout)
    profile = Profile(out_path)
    profile.check_ids()
    assert profile.period_type == ("space", "bytes")
    assert profile.period == RATE
    assert profile.default_sample_type == "alloc_space"
    assert profile.duration_nanos > 0
    assert abs(profile.time_nanos / 1e9 - time.time()) < 600, "time_nanos is not now"
    check_sites(profile, manifest, RATE)
    # The summary names the biggest site and the profile path.
    assert "allocation site" in result.stdout and "site_realloc" in result.stdout
    assert f"profile: {out_path}" in result.stdout
    # Every mapping with named frames says so; the allocator's mapping is libc.
    assert any("libc.so" in m["filename"] and m["has_functions"] for m in profile.mappings)
    assert any(m["build_id"] for m in profile.mappings), "no build ids in mappings"


@test
def static_executable_is_profiled(tmp):
    """glibc linked into the executable: the probes go on the executable itself."""
    out_path = os.path.join(tmp, "static.pb.gz")
    result = run([ALLOCSCOPE, "--sample-rate", RATE_ARG, "-o", out_path, "--",
                  ALLOC_SITES + "_static"])
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    assert "probes on " + ALLOC_SITES + "_static" in result.stderr, result.stderr
    profile = Profile(out_path)
    profile.check_ids()
    manifest = parse_manifest(result.stdout)
    check_sites(profile, manifest, RATE)
    # The summary's sites are the program's functions (make_buffer is inlined into
    # site_inlined), not glibc's nor main's callers, though glibc is in the same file.
    rows = re.findall(r"^\s*[\d.]+ \S+\s+([\d.]+)%\s+\d+\s+(\S.*)$", result.stdout, re.M)
    assert rows and rows[0][1] == "site_realloc", result.stdout
    assert all(name in manifest or name == "make_buffer"
               for share, name in rows if float(share) >= 1), result.stdout


# --- stacks on binaries built the way distributions build them ----------------------------

@test
def no_frame_pointer_build_is_attributed_right(tmp):
    """-O2 -fomit-frame-pointer: CFI unwinding (the default) finds every site's totals."""
    out_path = os.path.join(tmp, "nofp.pb.gz")
    result = run([ALLOCSCOPE, "--sample-rate", RATE_ARG, "-o", out_path, "--", ALLOC_SITES_NOFP])
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    profile = Profile(out_path)
    profile.check_ids()
    check_sites(profile, parse_manifest(result.stdout), RATE)
    # Whole stacks: each site's samples reach main (or the thread entry), not a cut-off frame.
    for site in parse_manifest(result.stdout):
        total = complete = 0
        for sample in profile.samples:
            names = profile.stack_functions(sample)
            if site in names:
                total += sample["values"][0]
                complete += sample["values"][0] if ("main" in names or
                                                    "start_thread" in names) else 0
        assert complete >= 0.99 * total, f"{site}: {complete} of {total} reach main"


def deep_recursion_profile(tmp, unwind):
    """The --deep workload profiled by pid, attached before it allocates (a process's tables
    are built when it is attached to, before its probes go in)."""
    out_path = os.path.join(tmp, f"deep-{unwind}.pb.gz")
    workload = Workload([ALLOC_SITES_NOFP, "--deep"])
    try:
        proc, seen = start_allocscope(["--pid", str(workload.pid), "--unwind", unwind,
                                       "--sample-rate", RATE_ARG, "-o", out_path])
        workload.start()
        manifest = parse_manifest(workload.finish())
        code, out, err = finish_allocscope(proc, seen)
    finally:
        workload.kill()
    assert code == 0, f"exit {code}: {err}"
    return manifest, out, Profile(out_path)


@test
def kernel_unwinding_reaches_main_under_deep_recursion(tmp):
    """--unwind kernel on a -O2 build without frame pointers: an allocation 200 frames of 1 KiB
    below main (200 KiB of stack, past any stack copy) has its totals and >= 99% of its bytes
    come from stacks that reach main; records carry frames only, so none is dropped."""
    manifest, out, profile = deep_recursion_profile(tmp, "kernel")
    profile.check_ids()
    check_sites(profile, manifest, RATE)
    check_reach_main(profile, manifest)
    assert "samples dropped" not in out, out
    assert "stack copy" not in out, out


@test
def kernel_unwinding_walks_a_commands_first_samples(tmp):
    """--unwind kernel with -- COMMAND: the tables of the command's executable and libraries
    are built before it execs and found by file in the kernel, so even the samples taken
    before its memory map could be read are walked in the kernel: none is sent with a stack
    copy (before, the first few dozen were, each a 16 KiB record), and the deep site's stacks
    reach main."""
    out_path = os.path.join(tmp, "command.pb.gz")
    result = run([ALLOCSCOPE, "--unwind", "kernel", "--sample-rate", RATE_ARG, "-o", out_path,
                  "--", ALLOC_SITES_NOFP, "--deep"])
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    assert "stack copy" not in result.stdout, result.stdout
    assert "samples dropped" not in result.stdout, result.stdout
    profile = Profile(out_path)
    profile.check_ids()
    manifest = parse_manifest(result.stdout)
    check_sites(profile, manifest, RATE)
    check_reach_main(profile, manifest)


@test
def kernel_unwinding_attributes_every_site(tmp):
    """--unwind kernel on the whole no-frame-pointer workload, threads included: every site's
    totals, and whole stacks (main or the thread entry)."""
    out_path = os.path.join(tmp, "kernel.pb.gz")
    result = run([ALLOCSCOPE, "--unwind", "kernel", "--sample-rate", RATE_ARG, "-o", out_path,
                  "--", ALLOC_SITES_NOFP])
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    profile = Profile(out_path)
    profile.check_ids()
    manifest = parse_manifest(result.stdout)
    check_sites(profile, manifest, RATE)
    check_reach_main(profile, manifest)


@test
def cxx_new_is_attributed_to_its_caller(tmp):
    """libstdc++'s operator new keeps no frame pointer; CFI finds the function that called it,
    with its demangled name and the mangled one as system_name."""
    out_path = os.path.join(tmp, "cxx.pb.gz")
    result = run([ALLOCSCOPE, "--sample-rate", RATE_ARG, "-o", out_path, "--", CXX_SITES])
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    profile = Profile(out_path)
    profile.check_ids()
    check_sites(profile, parse_manifest(result.stdout), RATE)
    systems = {f["name"]: f["system_name"] for f in profile.functions}
    assert systems.get("workload::new_orders(long)") \
        == "_ZN8workload10new_ordersEl", systems
    # The summary names the C++ sites, not operator new or malloc.
    assert "workload::new_orders" in result.stdout, result.stdout


@test
def inline_frames_and_source_lines(tmp):
    out_path = os.path.join(tmp, "inline.pb.gz")
    result = run([ALLOCSCOPE, "--sample-rate", RATE_ARG, "-o", out_path, "--", ALLOC_SITES_NOFP])
    assert result.returncode == 0, result.stderr
    profile = Profile(out_path)
    source = os.path.join(ROOT, "tests", "workloads", "alloc_sites.c")
    with open(source) as f:
        malloc_line = next(i + 1 for i, line in enumerate(f) if "void *p = malloc(size);" in line)
    found = [loc for loc in profile.locations
             if loc["functions"][:2] == ["make_buffer", "site_inlined"]]
    assert found, "no location with make_buffer inlined into site_inlined"
    lines = profile.location_lines(found[0])
    assert lines[0] == ("make_buffer", "alloc_sites.c", malloc_line), lines
    assert any(m["has_inline_frames"] and m["has_line_numbers"] and m["has_filenames"]
               for m in profile.mappings if m["filename"].endswith("alloc_sites_nofp"))


@test
def unwind_modes_are_selectable(tmp):
    for mode in ("fp", "dwarf", "auto"):
        out_path = os.path.join(tmp, f"{mode}.pb.gz")
        result = run([ALLOCSCOPE, "--unwind", mode, "-r", RATE_ARG, "-o", out_path, "--",
                      ALLOC_SITES])
        assert result.returncode == 0, f"{mode}: {result.stderr}"
        # The frame-pointer build is right whichever way it is walked.
        check_sites(Profile(out_path), parse_manifest(result.stdout), RATE)


@test
def pid_mode_on_running_process(tmp):
    out_path = os.path.join(tmp, "pid.pb.gz")
    workload = Workload([ALLOC_SITES])
    try:
        proc, seen = start_allocscope(["--pid", str(workload.pid), "--sample-rate", RATE_ARG,
                                       "-o", out_path])
        workload.start()
        manifest = parse_manifest(workload.finish())
        code, out, err = finish_allocscope(proc, seen)
    finally:
        workload.kill()
    assert code == 0, f"exit {code}: {err}"
    assert f"pid {workload.pid}" in err and "exited" in err
    profile = Profile(out_path)
    profile.check_ids()
    check_sites(profile, manifest, RATE)
    assert {s["labels"].get("pid") for s in profile.samples} == {workload.pid}


@test
def go_pprof_reads_the_profile(tmp):
    out_path = os.path.join(tmp, "go.pb.gz")
    result = run([ALLOCSCOPE, "-r", RATE_ARG, "-o", out_path, "--", ALLOC_SITES])
    assert result.returncode == 0, result.stderr
    top = go_pprof(["-top", "-cum", "-nodecount=200", "-sample_index=alloc_space", out_path],
                   tmp)
    for site in parse_manifest(result.stdout):
        assert site in top, f"{site} missing from go tool pprof -top:\n{top}"
    assert "malloc" in top
    # The executable is the profile's first mapping: pprof's "File:" names it.
    assert "File: alloc_sites" in top, top[:200]
    raw = go_pprof(["-raw", out_path], tmp)
    assert "alloc_objects/count alloc_space/bytes" in raw
    assert "PeriodType: space bytes" in raw and f"Period: {RATE}" in raw


@test
def stripped_executable_is_named_by_file_and_offset(tmp):
    """A stripped executable (issue 13): the summary names its unnamed sites by file and file
    offset, the same names in every run (not absolute addresses, which ASLR changes) and the
    same as the profile's function names; the profile's first mapping (go tool pprof's
    "File:") is the executable, not libc, though no frame is named main."""
    stripped = os.path.join(tmp, "alloc_sites_stripped")
    result = run(["strip", "--strip-all", "-o", stripped, ALLOC_SITES])
    assert result.returncode == 0, result.stderr
    runs = []
    for i in range(2):
        out_path = os.path.join(tmp, f"stripped{i}.pb.gz")
        result = run([ALLOCSCOPE, "-r", "64KiB", "--top", "5", "-o", out_path, "--", stripped])
        assert result.returncode == 0, result.stderr
        sites = re.findall(r"^\s*[\d.]+ \S+\s+[\d.]+%\s+\d+\s+(\S.*)$", result.stdout,
                           re.M)
        assert sites, result.stdout
        for site in sites:
            assert re.fullmatch(r"alloc_sites_stripped\+0x[0-9a-f]+", site), result.stdout
        profile = Profile(out_path)
        names = {f["name"] for f in profile.functions}
        assert set(sites) <= names, (sites, sorted(names)[:40])
        assert profile.mappings[0]["filename"] == stripped, profile.mappings[:2]
        runs.append(sites)
    # The largest site (about 40% of the bytes, three times the next) is named the same.
    assert runs[0][0] == runs[1][0], runs


@test
def untargeted_processes_are_not_profiled(tmp):
    out_path = os.path.join(tmp, "only.pb.gz")
    target = Workload([ALLOC_SITES])
    bystander = Workload([ALLOC_SITES])
    try:
        proc, seen = start_allocscope(["--pid", str(target.pid), "-r", RATE_ARG, "-o", out_path])
        bystander.start()
        bystander.finish()
        target.start()
        target.finish()
        code, out, err = finish_allocscope(proc, seen)
    finally:
        target.kill()
        bystander.kill()
    assert code == 0, err
    pids = {s["labels"].get("pid") for s in Profile(out_path).samples}
    assert pids == {target.pid}, f"samples from {pids}, expected only {target.pid}"


@test
def probes_sit_on_emulated_instructions(tmp):
    out_path = os.path.join(tmp, "probes.pb.gz")
    result = run([ALLOCSCOPE, "--log-level", "debug", "-o", out_path, "--", "/bin/true"])
    assert result.returncode == 0, result.stderr
    assert "all on emulated instructions" in result.stderr, result.stderr
    # Debian 12's glibc: memalign starts with a cmpb (single-stepped); the probe moves to +7.
    lines = [l for l in result.stderr.splitlines() if "memalign" in l and "aligned_alloc" in l]
    assert lines and re.search(r"\+7\b", lines[0]), f"memalign placement: {lines}"


@test
def kernel_without_multi_links_gets_perf_event_uprobes(tmp):
    """Linux before 6.6 makes no uprobe_multi links: the load-time question says so and every
    entry point gets a perf-event uprobe of its own, with the same estimates. A preloaded shim
    fails those bpf() calls (NO_MULTI_LINKS=load: the multi program is refused too)."""
    shim = os.path.join(BUILD, "workloads", "no_multi_links.so")
    for mode in ("link", "load"):
        out_path = os.path.join(tmp, f"nomulti-{mode}.pb.gz")
        env = dict(os.environ, LD_PRELOAD=shim, NO_MULTI_LINKS=mode)
        result = run([ALLOCSCOPE, "--log-level", "debug", "--sample-rate", RATE_ARG,
                      "-o", out_path, "--", ALLOC_SITES], env=env)
        assert result.returncode == 0, f"{mode}: exit {result.returncode}: {result.stderr}"
        assert "probes, one link each" in result.stderr, f"{mode}: {result.stderr}"
        assert "uprobe_multi link\n" not in result.stderr, f"{mode}: {result.stderr}"
        check_sites(Profile(out_path), parse_manifest(result.stdout), RATE)
    # The same capture without the shim takes one multi link: the shim is what changed it.
    result = run([ALLOCSCOPE, "--log-level", "debug", "-o", os.path.join(tmp, "multi.pb.gz"),
                  "--", "/bin/true"])
    assert "probes, one uprobe_multi link" in result.stderr, result.stderr


@test
def duration_ends_capture_and_sigint_still_writes(tmp):
    for how in ("duration", "sigint", "sigterm"):
        out_path = os.path.join(tmp, f"{how}.pb.gz")
        workload = subprocess.Popen([MALLOC_LOOP, "--wait", "--iterations", "4000000000"],
                                    stdout=subprocess.PIPE, text=True)
        try:
            assert workload.stdout.readline().startswith("ready")
            args = ["--pid", str(workload.pid), "-r", "4KiB", "-o", out_path]
            if how == "duration":
                args += ["--duration", "1s"]
            proc, seen = start_allocscope(args)
            os.kill(workload.pid, signal.SIGUSR1)
            if how != "duration":
                time.sleep(1)
                proc.send_signal(signal.SIGINT if how == "sigint" else signal.SIGTERM)
            code, out, err = finish_allocscope(proc, seen, timeout=30)
            assert code == 0, f"{how}: exit {code}: {err}"
            assert workload.poll() is None, f"{how}: the target died"
            profile = Profile(out_path)
            assert len(profile.samples) > 0 and "main" in profile.totals_by_function(1)
        finally:
            workload.kill()


@test
def dropped_samples_are_counted_and_reported(tmp):
    out_path = os.path.join(tmp, "drops.pb.gz")
    result = run([ALLOCSCOPE, "--sample-rate", "1", "--ringbuf-size", "128KiB", "-o", out_path,
                  "--", MALLOC_LOOP, "--iterations", "20000"])
    assert result.returncode == 0, result.stderr
    m = re.search(r"(\d+) samples dropped: ring buffer full", result.stdout)
    assert m and int(m.group(1)) > 0, result.stdout
    samples = int(re.search(r"(\d+) samples from", result.stdout).group(1))
    # Every call was sampled: what arrived and what was dropped add up to the calls made.
    assert samples + int(m.group(1)) >= 20000, result.stdout


@test
def command_exit_status_is_returned(tmp):
    result = run([ALLOCSCOPE, "-o", os.path.join(tmp, "x.pb.gz"), "--", "sh", "-c", "exit 7"])
    assert result.returncode == 7, f"exit {result.returncode}: {result.stderr}"
    assert os.path.exists(os.path.join(tmp, "x.pb.gz"))


@test
def default_output_name(tmp):
    result = run([ALLOCSCOPE, "--", "/bin/true"], cwd=tmp)
    assert result.returncode == 0, result.stderr
    names = os.listdir(tmp)
    assert len(names) == 1 and re.fullmatch(r"alloc-\d+-\d{8}T\d{6}\.pb\.gz", names[0]), names


# --- bad input ---------------------------------------------------------------------------

def assert_refused(result, code, *phrases):
    assert result.returncode == code, f"exit {result.returncode}, expected {code}: " \
                                      f"{result.stderr}"
    for phrase in phrases:
        assert phrase in result.stderr, f"{phrase!r} not in: {result.stderr}"
    assert "Segmentation" not in result.stderr


@test
def bad_arguments_are_refused(tmp):
    cases = [
        (["--pid", "abc"], "invalid pid list 'abc'"),
        (["--pid", "12,"], "trailing comma"),
        (["--pid", "-4"], "invalid pid list"),
        (["--sample-rate", "12XB", "--pid", "1"], "invalid sample rate '12XB'"),
        (["--sample-rate", "0", "--pid", "1"], "invalid sample rate '0'"),
        (["--duration", "-5s", "--pid", "1"], "invalid duration '-5s'"),
        (["--duration", "soon", "--pid", "1"], "invalid duration 'soon'"),
        (["--ringbuf-size", "1000", "--pid", "1"], "power of two"),
        (["--unwind", "lbr", "--pid", "1"], "invalid --unwind 'lbr'"),
        (["--stack-copy-size", "3000", "--pid", "1"], "invalid stack copy size '3000'"),
        (["--stack-copy-size", "1MiB", "--pid", "1"], "invalid stack copy size '1MiB'"),
        (["--duration", "5s"], "nothing to profile"),
        (["--config", "x.yaml", "--pid", "1"], "capture options"),
        (["--pid", "1", "--", "true"], "not both"),
        (["--bogus"], "invalid option"),
    ]
    for args, phrase in cases:
        assert_refused(run([ALLOCSCOPE] + args, cwd=tmp), 2, phrase)
    assert os.listdir(tmp) == [], "a refused run left files behind"
    assert run([ALLOCSCOPE, "--help"]).returncode == 0
    assert re.match(r"allocscope \d+\.\d+\.\d+", run([ALLOCSCOPE, "--version"]).stdout)


@test
def missing_pid_is_refused(tmp):
    result = run([ALLOCSCOPE, "--pid", "999999999"], cwd=tmp)
    assert_refused(result, 1, "no process with pid 999999999")
    assert os.listdir(tmp) == []


@test
def unwritable_output_is_refused_before_attaching(tmp):
    workload = Workload([MALLOC_LOOP])
    try:
        result = run([ALLOCSCOPE, "--pid", str(workload.pid), "-o", "/nonexistent/dir/p.pb.gz"])
        assert_refused(result, 1, "directory /nonexistent/dir does not exist")
        result = run([ALLOCSCOPE, "--pid", str(workload.pid), "-o", tmp])
        assert_refused(result, 1, "is a directory")
        result = run([ALLOCSCOPE, "--pid", str(workload.pid), "-o", "/proc/p.pb.gz"])
        assert_refused(result, 1, "cannot write the profile to /proc/p.pb.gz")
        assert "profiling pid" not in result.stderr, "attached before checking the output"
        assert workload.proc.poll() is None
    finally:
        workload.kill()


@test
def unprivileged_user_is_told_what_is_needed(tmp):
    workload = Workload([MALLOC_LOOP])
    try:
        os.chmod(tmp, 0o777)
        result = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                      "--inh-caps=-all", ALLOCSCOPE, "--pid", str(workload.pid)], cwd=tmp)
        assert_refused(result, 1, "CAP_BPF", "CAP_PERFMON")
    finally:
        workload.kill()


@test
def kernel_without_btf_or_uprobes_is_explained(tmp):
    empty = os.path.join(tmp, "empty")
    os.mkdir(empty)
    for hide, phrase in (("/sys/kernel/btf", "no BTF"),
                         ("/sys/bus/event_source/devices", "no uprobe support")):
        script = f"mount --bind {empty} {hide} && exec {ALLOCSCOPE} -o {tmp}/k.pb.gz -- /bin/true"
        result = run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script])
        assert_refused(result, 1, phrase)


@test
def unrecognized_allocator_is_refused_with_its_file(tmp):
    """A library that defines malloc but is none of the allocators allocscope knows (glibc's
    malloc-debugging library here) would take every allocation past the probes: refused, with
    the file named."""
    debug_malloc = "/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"
    assert os.path.exists(debug_malloc), "glibc's libc_malloc_debug.so.0 is missing"
    workload = Workload([MALLOC_LOOP], env=dict(os.environ, LD_PRELOAD=debug_malloc))
    try:
        result = run([ALLOCSCOPE, "--pid", str(workload.pid)], cwd=tmp)
        assert_refused(result, 1, "does not recognize", "libc_malloc_debug.so.0")
        assert os.listdir(tmp) == []
    finally:
        workload.kill()


# --- other allocators ----------------------------------------------------------------------

SITES = {name: os.path.join(BUILD, "workloads", "sites_" + name)
         for name in ("jemalloc", "jemalloc_static", "tcmalloc", "mimalloc", "rjem")}
LIBDIR = "/usr/lib/x86_64-linux-gnu"
JEMALLOC_SO = os.path.join(LIBDIR, "libjemalloc.so.2")


def real_name(library):
    """The file name a profile's mapping shows for a library (symlinks resolved)."""
    return os.path.basename(os.path.realpath(os.path.join(LIBDIR, library)))


def allocator_line(stdout):
    """The summary's 'allocator of pid N (comm): NAME in FILE; ...' line."""
    lines = [l for l in stdout.splitlines() if l.startswith("allocator of pid")]
    assert len(lines) == 1, f"no allocator line in the summary:\n{stdout}"
    return lines[0]


def leaves_by_site(profile, site):
    """{(file basename, function): bytes} of the probed functions under one site."""
    leaves = {}
    for sample in profile.samples:
        if site not in profile.stack_functions(sample):
            continue
        loc = profile.locations[sample["locations"][0] - 1]
        mapping = profile.mappings[loc["mapping_id"] - 1]["filename"] if loc["mapping_id"] \
            else "?"
        function = loc["functions"][-1] if loc["functions"] else hex(loc["address"])
        key = (os.path.basename(mapping), function)
        leaves[key] = leaves.get(key, 0) + sample["values"][1]
    return leaves


def check_leaves(profile, site, expected, share=0.99):
    """At least `share` of site's bytes sit on the (file, function) pairs in expected."""
    leaves = leaves_by_site(profile, site)
    total = sum(leaves.values())
    on_expected = sum(v for k, v in leaves.items() if k in expected)
    assert total > 0 and on_expected >= share * total, \
        f"{site}: {on_expected} of {total} bytes on {sorted(expected)}; leaves: {leaves}"


def profile_allocator_workload(tmp, name, mode, env=None):
    """Runs sites_NAME under allocscope (command or pid mode). Returns (stdout, stderr,
    manifest, profile)."""
    out_path = os.path.join(tmp, name + ".pb.gz")
    args = ["--sample-rate", RATE_ARG, "--log-level", "debug", "-o", out_path]
    if mode == "command":
        result = run([ALLOCSCOPE] + args + ["--", SITES[name]], env=env)
        assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
        stdout, stderr, manifest = result.stdout, result.stderr, parse_manifest(result.stdout)
    else:
        workload = Workload([SITES[name]], env=env)
        try:
            proc, seen = start_allocscope(["--pid", str(workload.pid)] + args)
            workload.start()
            manifest = parse_manifest(workload.finish())
            code, stdout, stderr = finish_allocscope(proc, seen)
        finally:
            workload.kill()
        assert code == 0, f"exit {code}: {stderr}"
    profile = Profile(out_path)
    profile.check_ids()
    check_sites(profile, manifest, RATE)
    return stdout, stderr, manifest, profile


def probe_line(stderr, names):
    """The describe line of the probe whose names column is exactly names."""
    for line in stderr.splitlines():
        fields = line.split()
        if fields and fields[0] == names and "not probed" not in line:
            return line
    raise AssertionError(f"no probe on {names}:\n{stderr}")


@test
def jemalloc_linked_program_is_profiled(tmp):
    """-ljemalloc, as a command: its library is found before it runs; every entry point of
    jemalloc's own API and operator new counts, on jemalloc's functions, malloc's probe on the
    `ja` at +7."""
    stdout, stderr, manifest, profile = profile_allocator_workload(tmp, "jemalloc", "command")
    assert "jemalloc in " in allocator_line(stdout) and "libjemalloc.so.2" in allocator_line(stdout)
    assert "(jemalloc)" in stderr and "libc.so.6" not in stderr.split("sampling every")[0]
    line = probe_line(stderr, "malloc")
    assert re.search(r"\+7\s+jcc rel32\s+emulated", line), line
    # rallocx clears %ecx (its flags) before jumping: the probe reads %rdi and %rsi only.
    line = probe_line(stderr, "rallocx")
    assert re.search(r"\+2\s+jmp rel32\s+emulated", line), line
    # Wrappers are left to what they call: no allocation counted twice.
    assert re.search(r"_Znam\s+not probed: reaches _Znwm", stderr), stderr
    assert re.search(r"_ZnwmSt11align_val_t\s+not probed: reaches aligned_alloc", stderr)
    lib = real_name("libjemalloc.so.2")
    check_leaves(profile, "site_mallocx", {(lib, "mallocx")})
    check_leaves(profile, "site_rallocx", {(lib, "mallocx"), (lib, "rallocx")})
    check_leaves(profile, "site_xallocx", {(lib, "mallocx"), (lib, "xallocx")})
    check_leaves(profile, "site_realloc_null", {(lib, "realloc")})
    check_leaves(profile, "site_new", {(lib, "operator new(unsigned long)")})
    check_leaves(profile, "site_new_aligned", {(lib, "aligned_alloc")})
    assert "site_realloc" in stdout


@test
def jemalloc_static_executable_is_profiled(tmp):
    """jemalloc linked into the executable: the executable's malloc wins over glibc's."""
    stdout, stderr, manifest, profile = profile_allocator_workload(tmp, "jemalloc_static",
                                                                    "pid")
    line = allocator_line(stdout)
    assert f"jemalloc in {SITES['jemalloc_static']}" in line and "glibc" not in line, line
    exe = os.path.basename(SITES["jemalloc_static"])
    check_leaves(profile, "site_malloc", {(exe, "malloc")})
    check_leaves(profile, "site_new_nothrow",
                 {(exe, "operator new(unsigned long, std::nothrow_t const&)")})
    check_leaves(profile, "site_rallocx", {(exe, "mallocx"), (exe, "rallocx")})
    # The summary's sites are the program's functions, not jemalloc's nor main's callers.
    rows = re.findall(r"^\s*[\d.]+ \S+\s+([\d.]+)%\s+\d+\s+(\S.*)$", stdout, re.M)
    assert rows and rows[0][1] == "site_realloc", stdout
    assert all(name in manifest for share, name in rows if float(share) >= 1), stdout


@test
def tcmalloc_linked_program_is_profiled(tmp):
    stdout, stderr, manifest, profile = profile_allocator_workload(tmp, "tcmalloc", "pid")
    line = allocator_line(stdout)
    assert "tcmalloc in " in line and "libtcmalloc_minimal.so.4" in line, line
    # Aliases share one probe; posix_memalign and valloc call tc_memalign, which counts them.
    assert "malloc/tc_malloc" in stderr and "_Znwm/_Znam/tc_new/tc_newarray" in stderr
    assert re.search(r"posix_memalign/tc_posix_memalign\s+not probed: reaches memalign", stderr)
    # memalign copies the alignment into %r8 first; the probe reads the size in %rsi.
    line = probe_line(stderr, "memalign/aligned_alloc/tc_memalign")
    assert re.search(r"\+10\s+jcc rel32\s+emulated", line), line
    lib = real_name("libtcmalloc_minimal.so.4")
    check_leaves(profile, "site_valloc", {(lib, "memalign")})
    check_leaves(profile, "site_realloc_null", {(lib, "realloc")})
    # Aliases: the profile names the function by whichever alias the symbolizer prefers.
    check_leaves(profile, "site_new_array", {(lib, "tc_new"), (lib, "operator new(unsigned long)")})


@test
def mimalloc_linked_program_is_profiled(tmp):
    stdout, stderr, manifest, profile = profile_allocator_workload(tmp, "mimalloc", "command")
    line = allocator_line(stdout)
    assert "mimalloc in " in line and "libmimalloc.so.2" in line, line
    assert re.search(r"posix_memalign\s+not probed: reaches mi_malloc_aligned", stderr), stderr
    lib = real_name("libmimalloc.so.2")
    check_leaves(profile, "site_mi_zalloc", {(lib, "mi_zalloc")})
    check_leaves(profile, "site_mi_malloc_aligned", {(lib, "mi_malloc_aligned")})
    check_leaves(profile, "site_aligned_alloc", {(lib, "mi_malloc_aligned")})
    check_leaves(profile, "site_mi_realloc_null", {(lib, "mi_realloc"), (lib, "realloc")})


@test
def prefixed_jemalloc_is_probed_beside_glibc(tmp):
    """A Rust-style executable: jemalloc renamed to _rjem_* inside it, glibc's malloc for the
    rest. Both files are probed; each site is counted on its own allocator."""
    stdout, stderr, manifest, profile = profile_allocator_workload(tmp, "rjem", "pid")
    line = allocator_line(stdout)
    assert "glibc in /" in line and "libc.so.6" in line, line
    assert f"jemalloc (_rjem_ prefix) in {SITES['rjem']}" in line, line
    exe = os.path.basename(SITES["rjem"])
    check_leaves(profile, "site_rjem_malloc", {(exe, "_rjem_malloc")})
    check_leaves(profile, "site_rjem_mallocx", {(exe, "_rjem_mallocx"), (exe, "_rjem_rallocx")})
    check_leaves(profile, "site_rjem_realloc", {(exe, "_rjem_realloc")})
    check_leaves(profile, "site_malloc", {("libc.so.6", "malloc")})
    # The summary names the sites of both allocators, the _rjem_ ones too (their allocator
    # is in the executable), not main's callers.
    rows = re.findall(r"^\s*[\d.]+ \S+\s+([\d.]+)%\s+\d+\s+(\S.*)$", stdout, re.M)
    assert rows and rows[0][1] == "site_realloc", stdout
    assert "site_rjem_mallocx" in [name for share, name in rows], stdout
    assert all(name in manifest for share, name in rows if float(share) >= 1), stdout


@test
def preloaded_jemalloc_is_probed(tmp):
    """LD_PRELOAD=libjemalloc.so.2 takes malloc from glibc: jemalloc is probed, glibc not."""
    assert os.path.exists(JEMALLOC_SO), "libjemalloc2 missing: run sudo scripts/install-deps"
    out_path = os.path.join(tmp, "preload.pb.gz")
    workload = Workload([ALLOC_SITES], env=dict(os.environ, LD_PRELOAD=JEMALLOC_SO))
    try:
        proc, seen = start_allocscope(["--pid", str(workload.pid), "-r", RATE_ARG,
                                       "-o", out_path])
        workload.start()
        manifest = parse_manifest(workload.finish())
        code, stdout, stderr = finish_allocscope(proc, seen)
    finally:
        workload.kill()
    assert code == 0, stderr
    line = allocator_line(stdout)
    assert "jemalloc in " in line and "libc.so.6" not in line, line
    check_sites(Profile(out_path), manifest, RATE)


@test
def redis_server_is_profiled_on_jemalloc(tmp):
    """Debian's redis-server (linked with jemalloc) under redis-benchmark: samples land in
    redis's own allocation paths and the probes sit on jemalloc's functions."""
    for tool in ("redis-server", "redis-benchmark", "redis-cli"):
        assert shutil.which(tool), f"{tool} missing: run sudo scripts/install-deps"
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    out_path = os.path.join(tmp, "redis.pb.gz")
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--daemonize", "no",
                               "--dir", tmp, "--logfile", os.path.join(tmp, "redis.log")])
    try:
        deadline = time.monotonic() + 10
        while run(["redis-cli", "-p", str(port), "ping"]).stdout.strip() != "PONG":
            assert time.monotonic() < deadline and server.poll() is None, "redis did not start"
            time.sleep(0.1)
        proc, seen = start_allocscope(["--pid", str(server.pid), "-r", "16KiB",
                                       "--log-level", "debug", "-o", out_path])
        bench = run(["redis-benchmark", "-p", str(port), "-t", "set,get", "-n", "20000", "-q"],
                    timeout=60)
        assert bench.returncode == 0, bench.stderr
        run(["redis-cli", "-p", str(port), "shutdown", "nosave"])
        server.wait(timeout=10)
        code, stdout, stderr = finish_allocscope(proc, seen)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert code == 0, stderr
    assert "jemalloc in " in allocator_line(stdout), stdout
    line = probe_line(stderr, "malloc")
    assert re.search(r"\+7\s+jcc rel32\s+emulated", line), line
    assert "libjemalloc.so.2 (jemalloc)" in stderr, stderr
    top = go_pprof(["-top", "-cum", "-nodecount=300", "-sample_index=alloc_space", out_path], tmp)
    for function in ("zmalloc", "readQueryFromClient", "processInputBuffer", "processCommand"):
        assert function in top, f"{function} missing from the redis profile:\n{top}"
    assert "libjemalloc.so.2" in top or "malloc" in top


@test
def missing_command_is_refused(tmp):
    result = run([ALLOCSCOPE, "--", "/no/such/program"], cwd=tmp)
    assert_refused(result, 1, "cannot run /no/such/program")
    result = run([ALLOCSCOPE, "--", "no-such-program-anywhere"], cwd=tmp)
    assert_refused(result, 1, "command not found")


@test
def target_killed_mid_capture_still_gets_a_profile(tmp):
    out_path = os.path.join(tmp, "killed.pb.gz")
    workload = subprocess.Popen([MALLOC_LOOP, "--wait", "--iterations", "4000000000"],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert workload.stdout.readline().startswith("ready")
        proc, seen = start_allocscope(["--pid", str(workload.pid), "-r", "4KiB", "-o", out_path])
        os.kill(workload.pid, signal.SIGUSR1)
        time.sleep(1)
        workload.kill()
        workload.wait()
        code, out, err = finish_allocscope(proc, seen, timeout=30)
    finally:
        if workload.poll() is None:
            workload.kill()
    assert code == 0, err
    profile = Profile(out_path)
    totals = profile.totals_by_function(1)
    assert "main" in totals and "malloc" in totals, sorted(totals)[:20]


import agent_tests  # noqa: E402,F401  (the continuous agent's tests run after these)
import cooperative_tests  # noqa: E402,F401
import inuse_tests  # noqa: E402,F401  (in-use profiles, issue 16)
import push_tests  # noqa: E402,F401  (the Pyroscope and Parca push sinks)
import pyroscope_tests  # noqa: E402,F401  (against a stand-in with Pyroscope's rules)
import kube_tests  # noqa: E402,F401  (Kubernetes pod metadata, with a fake API server)
import privilege_tests  # noqa: E402,F401  (setcap binaries run by other users; capabilities kept)
import escaping_tests  # noqa: E402,F401  (hostile names in the log and the summary)
import hardening_tests  # noqa: E402,F401  (hostile and clumsy command lines, issue 11)
import rust_tests  # noqa: E402,F401  (a Rust program built at test time; demangled names)
import backend_tests  # noqa: E402,F401  (a real Parca, built by scripts/backends)
import count_once_tests  # noqa: E402,F401  (every entry point and alignment counted once)
import site_tests  # noqa: E402,F401  (summary sites: wrappers skipped, public names)
import heaptrack_tests  # noqa: E402,F401  (sqlite3 against heaptrack's exact totals)
import cxx_deep_tests  # noqa: E402,F401  (C++ template recursion and exceptions, no frame pointers)
import drop_tests  # noqa: E402,F401  (a burst over a small ring: dropped samples keep their weight)
import gate_tests  # noqa: E402,F401  (exact counting and the allocation gate, issue 18)
import version_tests  # noqa: E402,F401  (service_version: capture --group-by, Parca filter and diff)
import short_command_tests  # noqa: E402,F401  (commands that exit before the first drain)
import dumpable_tests  # noqa: E402,F401  (no stack copy of a process that is not dumpable)
import report_tests  # noqa: E402,F401  (allocscope report|diff and the flame graph in Chromium)
import depth_tests  # noqa: E402,F401  (stacks past the walk's depth limit end in [truncated])
import budget_tests  # noqa: E402,F401  (the overhead budget: duty-cycled probes, issue 19)
import context_tests  # noqa: E402,F401  (request context labels: OTel thread context, Custom Labels)
import noaslr_tests  # noqa: E402,F401  (callers behind other tools' return probes, with and without ASLR)


def main():
    if os.geteuid() != 0:
        print("e2e: these tests load BPF programs: run them as root (sudo make test)")
        print("e2e: 0 passed, 1 failed")
        return 1
    only = sys.argv[sys.argv.index("-k") + 1] if "-k" in sys.argv else None
    passed = failed = 0
    for fn in TESTS:
        if only and only not in fn.__name__:
            continue
        tmp = tempfile.mkdtemp(prefix=f"allocscope-{fn.__name__}-")
        started = time.monotonic()
        try:
            fn(tmp)
            passed += 1
            print(f"ok   {fn.__name__} ({time.monotonic() - started:.1f}s)", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {fn.__name__}", flush=True)
            traceback.print_exc()
        finally:
            kill_leftovers()
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"e2e: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
