"""End-to-end tests of in-use (live heap) profiles (issue 16), on both paths: cooperative (the
sampler fires otel_memory:free only for the pointers it sampled) and transparent (session
uprobes return the pointers of sampled calls only; probes on free and its relatives). The BPF
side keeps the live set, and `allocscope --inuse` writes inuse_objects/inuse_space next to
alloc_* and prints a leak table. Imported by run.py (needs root and BPF)."""
import os
import re
import time

from helpers import ALLOCSCOPE, BUILD, expected_with_tolerance, run, test
from pprof_reader import Profile

SAMPLER = os.path.join(BUILD, "liballocscope-sampler.so")
LIVE_SITES = os.path.join(BUILD, "workloads", "live_sites")
RATE, RATE_ARG = 64 * 1024, "64KiB"
JEMALLOC = [p for p in ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",) if os.path.exists(p)]


def manifest(text, kind):
    """{site: [(size, count), ...]} from the workload's 'alloc|live SITE SIZE COUNT' lines."""
    sites = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == kind:
            sites.setdefault(parts[1], []).append((int(parts[2]), int(parts[3])))
    assert sites, f"no '{kind}' manifest in the workload's output: {text[:300]!r}"
    return sites


def capture(tmp, name, extra_args=(), preload_after=(), cooperative=True):
    out_path = os.path.join(tmp, name + ".pb.gz")
    if cooperative:
        env = dict(os.environ, LD_PRELOAD=" ".join([SAMPLER, *preload_after]),
                   ALLOCSCOPE_SAMPLE_RATE=RATE_ARG)
    else:
        env = dict(os.environ, LD_PRELOAD=" ".join(preload_after))
        extra_args = [*extra_args, "--sample-rate", RATE_ARG]
    # -s 100: the process lives ~1 s, so the capture reads its maps and symbols while it runs.
    result = run([ALLOCSCOPE, "--inuse", *extra_args, "--ringbuf-size", "256MiB", "-o",
                  out_path, "--", LIVE_SITES, "-s", "100"], env=env)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result, Profile(out_path)


def check_values(profile, sites, bytes_index, objects_index, what):
    space = profile.totals_by_function(bytes_index)
    objects = profile.totals_by_function(objects_index)
    problems = []
    for site, classes in sites.items():
        b_truth, b_tol, o_truth, o_tol = expected_with_tolerance(classes, RATE)
        if abs(space.get(site, 0) - b_truth) > b_tol:
            problems.append(f"{site}: {what}_space {space.get(site, 0)} vs {b_truth:.0f} "
                            f"(+-{b_tol:.0f})")
        if abs(objects.get(site, 0) - o_truth) > o_tol:
            problems.append(f"{site}: {what}_objects {objects.get(site, 0)} vs {o_truth:.0f} "
                            f"(+-{o_tol:.0f})")
    assert not problems, "\n".join(problems)
    return space


def check_inuse_capture(tmp, name, preload_after=(), cooperative=True):
    result, profile = capture(tmp, name, preload_after=preload_after, cooperative=cooperative)
    attach = [line for line in result.stderr.splitlines() if "profiling pid" in line][0]
    if cooperative:
        assert "otel_memory:alloc, otel_memory:free" in attach, attach
    else:
        assert "on frees, for in-use; session uprobes" in attach, attach
    assert [t for t, _ in profile.sample_types] == \
        ["alloc_objects", "alloc_space", "inuse_objects", "inuse_space"], profile.sample_types
    # Allocation totals are what they were without --inuse; in-use is what stays live.
    try:
        check_values(profile, manifest(result.stdout, "alloc"), 1, 0, "alloc")
    except AssertionError as e:
        # The capture's own summary says where the weight went (seen once, not reproduced).
        summary = result.stdout.split("allocscope:", 1)[-1]
        raise AssertionError(f"{e}\ncapture summary:\nallocscope:{summary}\n"
                             f"stderr:\n{result.stderr[-2000:]}") from None
    live = manifest(result.stdout, "live")
    inuse = check_values(profile, live, 3, 2, "inuse")
    for freed in ("free_site", "aligned_free_site"):
        assert inuse.get(freed, 0) == 0, f"{freed} freed everything: {inuse}"
    # The leak table names the live sites, largest first, and leaves out the one that freed
    # all it allocated.
    table = result.stdout.split("inuse_space", 1)[1]
    rows = [line.split()[-1] for line in table.splitlines()[1:] if line.strip()]
    assert rows[:3] == ["realloc_site", "keep_site", "grow_site"], table
    assert "free_site" not in table.split("profile:")[0], table
    return result
    assert re.search(r"in use at the end: [\d.]+ MiB", result.stdout), result.stdout


@test
def inuse_cooperative_estimates_each_site(tmp):
    """Known live and freed totals per site (kept, freed, growing, realloc chains) through the
    preloaded sampler (glibc): every site's inuse_space and inuse_objects within the sampling
    tolerance, alloc_* unchanged, a site that freed everything at 0."""
    check_inuse_capture(tmp, "glibc")


@test
def inuse_cooperative_estimates_each_site_jemalloc(tmp):
    """The same in front of jemalloc (LD_PRELOAD="sampler libjemalloc.so.2"; scripts/install-deps installs it)."""
    assert JEMALLOC, "libjemalloc.so.2 is not installed: run scripts/install-deps"
    check_inuse_capture(tmp, "jemalloc", preload_after=JEMALLOC)


@test
def inuse_map_overflow_is_counted_and_flagged(tmp):
    """A live map smaller than the live samples: the overflow is counted in the summary and
    the profile says its in-use estimates are low; it never fails silently."""
    result, profile = capture(tmp, "overflow", extra_args=["--inuse-entries", "64"])
    m = re.search(r"in-use estimates are LOW: (\d+) sampled allocations were not tracked",
                  result.stdout)
    assert m and int(m.group(1)) > 0, result.stdout
    assert any("in-use estimates are LOW" in c for c in profile.comments), profile.comments
    live_samples = int(re.search(r"\((\d+) live samples\)", result.stdout).group(1))
    assert live_samples <= 64, result.stdout


@test
def inuse_transparent_estimates_each_site(tmp):
    """The same workload without the sampler (glibc): session uprobes give the pointers of
    sampled calls (malloc, calloc, realloc, aligned_alloc, and posix_memalign's through
    memptr; the aligned ones are probed past their first instruction, so their returns are
    seen from a probe at an offset), probes on free and realloc see the frees: every site
    within the sampling tolerance, alloc_* unchanged, the sites that freed everything at 0."""
    check_inuse_capture(tmp, "transparent", cooperative=False)


@test
def inuse_without_session_uprobes_says_so_and_profiles_allocations(tmp):
    """A kernel without session uprobes (before 6.13; played by a shim refusing them):
    `--inuse` on a target without the sampler warns that in-use needs the sampler there, and
    the capture still gives the same allocation profile (one uprobe_multi link, no free
    probes); the cooperative path keeps its in-use."""
    shim = os.path.join(BUILD, "workloads", "no_multi_links.so")
    out_path = os.path.join(tmp, "nosession.pb.gz")
    env = dict(os.environ, LD_PRELOAD=shim, NO_MULTI_LINKS="session")
    result = run([ALLOCSCOPE, "--inuse", "--sample-rate", RATE_ARG, "--ringbuf-size", "256MiB",
                  "-o", out_path, "--", LIVE_SITES], env=env)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    assert "this kernel has no session uprobes (Linux 6.13 or newer): --inuse works only " \
        "for targets that preload liballocscope-sampler.so" in result.stderr, result.stderr
    assert "on frees" not in result.stderr, result.stderr
    check_values(Profile(out_path), manifest(result.stdout, "alloc"), 1, 0, "alloc")
    assert "in use at the end: 0 B" in result.stdout, result.stdout


@test
def inuse_transparent_estimates_each_site_jemalloc(tmp):
    """The transparent path in front of jemalloc (LD_PRELOAD=libjemalloc.so.2; scripts/install-deps installs it):
    its own entry points and frees (free, sdallocx, ...) probed in libjemalloc."""
    assert JEMALLOC, "libjemalloc.so.2 is not installed: run scripts/install-deps"
    result = check_inuse_capture(tmp, "transparent-jemalloc", preload_after=JEMALLOC,
                                 cooperative=False)
    assert "libjemalloc" in result.stderr, result.stderr


INUSE_SPACE = "memory:inuse_space:bytes:space:bytes"
INUSE_OBJECTS = "memory:inuse_objects:count:space:bytes"


@test
def inuse_agent_snapshots_per_interval_through_parca(tmp):
    """The continuous agent with a rule's `inuse: true`, pushing to the real Parca: while the
    workload holds its live sites, each interval's profile is a snapshot (not a delta) whose
    inuse_* match the live manifest within the sampling tolerance (the sites allocated in an
    earlier interval included); /metrics has the service's live total; after the process
    exits its live set is gone. Parca lists the in-use types (not delta) and its per-function
    inuse_space is the directory sink's to the unit. (Real Pyroscope is not obtainable here.)"""
    from agent_tests import Agent, profiles_of
    from backend_tests import Server, Window, config, merged
    from helpers import Workload

    server = Server("parca")
    sinks = os.path.join(tmp, "profiles")
    rules = (f"    - executable: {LIVE_SITES}\n      service: live\n      inuse: true\n")
    agent = Agent(tmp, config(sinks, server.url, rules, rate=RATE_ARG,
                              sampling="  ringbuf_size: 256MiB\n"))
    window = Window()
    try:
        work = Workload([LIVE_SITES, "-H", "4000"])
        agent.wait_attached(work.pid, "live")
        work.start()
        # Two snapshots at least while everything is held (interval 1 s).
        live_bytes = agent.wait_metric("allocscope_inuse_bytes", lambda v: v and v > 50e6,
                                       timeout=30, service="live")
        out = work.finish()
        agent.wait_all_exited_and_flushed()
        # Exited: its live set is dropped (the service goes once its last profile is out).
        deadline = time.monotonic() + 30
        while agent.metric("allocscope_inuse_bytes", service="live"):
            assert time.monotonic() < deadline, "the exited process's live set stayed"
            time.sleep(0.2)
        # Each interval's profile goes to Parca as two: the delta and the snapshot.
        deadline = time.monotonic() + 60
        while agent.metric("allocscope_sink_profiles_written_total", sink="parca") != \
                2 * agent.metric("allocscope_profiles_built_total"):
            assert time.monotonic() < deadline, agent.log()[-3000:]
            time.sleep(0.2)
        assert agent.stop() == 0
    finally:
        agent.kill()
    try:
        assert live_bytes, "no allocscope_inuse_bytes for the service"
        paths = profiles_of(sinks, "live")
        profiles = [Profile(p) for p in paths]
        assert profiles and all(
            [t for t, _ in p.sample_types][2:] == ["inuse_objects", "inuse_space"]
            for p in profiles), [p.sample_types for p in profiles]
        # Snapshots taken while the workload held everything: the largest live total is the
        # live manifest, site by site (a delta would have nothing for sites allocated in an
        # earlier interval).
        held = [p for p in profiles
                if sum(s["values"][3] for s in p.samples) > 50e6]
        assert len(held) >= 2, [sum(s["values"][3] for s in p.samples) for p in profiles]
        check_values(held[-1], manifest(out, "live"), 3, 2, "inuse")
        alloc_rows = [sum(s["values"][1] for s in p.samples) for p in held[1:]]
        assert min(alloc_rows) < 1e6, f"later snapshots re-counted allocations: {alloc_rows}"

        types = server.get("/profiles/types", **window.params())["types"]
        names = {(t["name"], t["sampleType"], t["sampleUnit"], t.get("delta", False))
                 for t in types}
        assert ("memory", "inuse_space", "bytes", False) in names, types
        assert ("memory", "inuse_objects", "count", False) in names, types
        theirs = merged(server, window, '{service_name="live"}', tmp, INUSE_SPACE)
        mine = {}
        for p in profiles:
            for name, value in p.totals_by_function(3).items():
                mine[name] = mine.get(name, 0) + value
        got = theirs.totals_by_function(0) if theirs else {}
        problems = [f"{n}: parca {got.get(n, 0)}, sink {v}" for n, v in mine.items()
                    if abs(got.get(n, 0) - v) > len(paths)]
        assert not problems, "\n".join(problems)
    finally:
        assert server.stop() == 0


@test
def inuse_on_two_transparent_processes_warns_of_return_traps(tmp):
    """A session link filtered to one pid still makes the kernel trap the return in the other
    processes the same offsets are probed in (kernel/trace/bpf_trace.c, uprobe_prog_run), so
    two transparent in-use processes sharing glibc each pay a return trap per allocation call
    for the other's link: the user is told once, with the way out. One process: no warning."""
    from helpers import MALLOC_LOOP, Workload, finish_allocscope, start_allocscope

    warning = "pays a return trap on each allocation call"
    for n in (1, 2):
        loops = [Workload([MALLOC_LOOP, "--iterations", "20000", "--no-free"])
                 for _ in range(n)]
        args = ["--inuse", "-o", f"{tmp}/two-{n}.pb.gz"]
        for w in loops:
            args += ["--pid", str(w.pid)]
        proc, seen = start_allocscope(args)
        for w in loops:
            w.start()
        for w in loops:
            w.finish()
        code, out, err = finish_allocscope(proc, seen)
        assert code == 0, f"exit {code}: {err}"
        if n == 1:
            assert warning not in err, err
        else:
            assert err.count(warning) == 1, err
            assert "liballocscope-sampler.so" in err, err
