"""End-to-end tests of the cooperative path: liballocscope-sampler.so preloaded into a real
process samples in-process and fires otel_memory:alloc only for sampled allocations;
allocscope attaches to that USDT instead of the allocator's entry points and uses the
weights it carries. Imported by run.py (needs root and BPF like the other tests)."""
import os
import re
import signal
import subprocess
import time

from helpers import (ALLOC_SITES, ALLOCSCOPE, BUILD, MALLOC_LOOP, RATE, RATE_ARG, Workload,
                     check_sites, finish_allocscope, parse_manifest, run, start_allocscope,
                     test)
from pprof_reader import Profile

SAMPLER = os.path.join(BUILD, "liballocscope-sampler.so")
SAMPLER_WORKLOAD = os.path.join(BUILD, "workloads", "sampler_workload")
COOP_RATE, COOP_RATE_ARG = 64 * 1024, "64KiB"


def preloaded(rate_arg, **extra):
    return dict(os.environ, LD_PRELOAD=SAMPLER, ALLOCSCOPE_SAMPLE_RATE=rate_arg, **extra)


def sampler_stats(text, prefix=""):
    m = re.search(rf"^{prefix}sampled (\d+) weighted_bytes (\d+) allocated_bytes (\d+)$", text,
                  re.M)
    assert m, f"no sampler statistics in the workload's output: {text[:400]!r}"
    return tuple(int(v) for v in m.groups())


@test
def cooperative_sampler_estimates_each_site(tmp):
    """The workload with known totals per site, preloaded with the sampler at the tests'
    rate: allocscope probes only the USDT, and every site's estimate is within the same
    statistical tolerance as the kernel path's (the two paths are interchangeable)."""
    # The sampler lets the workload run at full speed: ~6,000 samples in well under a second
    # at 64 KiB, more than the default ring holds while the agent's cold start (symbols,
    # first unwinds) keeps it from draining. A ring that holds them all keeps the check exact.
    out_path = os.path.join(tmp, "coop.pb.gz")
    result = run([ALLOCSCOPE, "--ringbuf-size", "256MiB", "-o", out_path, "--", ALLOC_SITES],
                 env=preloaded(COOP_RATE_ARG))
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    assert "otel_memory:alloc USDT, cooperative sampling" in result.stdout, result.stdout[:600]
    assert "sampling in-process" in result.stderr, result.stderr
    # Instead of the entry points, not beside them: no probe in libc. The attach line says
    # what the probe is: a USDT site on a 5-byte nop, not an emulated entry instruction.
    attach_line = [line for line in result.stderr.splitlines() if "profiling pid" in line][0]
    assert "libc.so.6" not in attach_line, attach_line
    assert re.search(r": 1 USDT site \(otel_memory:alloc\) in \S+/liballocscope-sampler\.so, "
                     r"on a nop5$", attach_line), attach_line
    # The summary gives the rate the sampler used (its weights show it), not the agent's
    # --sample-rate (512 KiB by default), which played no part.
    assert re.search(r"samples from 1 process in [\d.]+s \(sampled in-process by "
                     r"liballocscope-sampler\.so at 64\.00 KiB, as its weights show;",
                     result.stdout), result.stdout[:600]
    assert "sample rate" not in result.stdout.split("\n\n")[1], result.stdout[:600]
    assert "samples dropped" not in result.stdout, result.stdout
    profile = Profile(out_path)
    profile.check_ids()
    assert [t for t, _ in profile.sample_types] == ["alloc_objects", "alloc_space"]
    assert "sampled in-process by liballocscope-sampler.so at 64.00 KiB" in profile.comments[0], \
        profile.comments
    check_sites(profile, parse_manifest(result.stdout), COOP_RATE)
    # The top table names real sites, not the sampler's own functions.
    assert "site_realloc" in result.stdout and "record_sample" not in result.stdout


@test
def cooperative_weights_arrive_exactly_and_only_while_attached(tmp):
    """The sampler is off until a profiler attaches (its semaphore is 0): a run on its own
    samples nothing. Attached, every sample it fires reaches the profile with its weight:
    the profile's alloc_space equals the sum of weights the sampler reports."""
    args = [SAMPLER_WORKLOAD, "-t", "2", "-n", "20000", "-s", "64,1000,4096"]
    alone = run(args, env=preloaded("64KiB"))
    assert alone.returncode == 0, alone.stderr
    assert sampler_stats(alone.stdout)[0] == 0, alone.stdout

    out_path = os.path.join(tmp, "exact.pb.gz")
    workload = subprocess.Popen(args + ["-P"], env=preloaded("64KiB"), stdout=subprocess.PIPE,
                                text=True)
    try:
        for _ in range(500):  # -P: stopped before allocating, so the attach sees everything
            with open(f"/proc/{workload.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    break
            time.sleep(0.01)
        proc, seen = start_allocscope(["--pid", str(workload.pid), "--ringbuf-size", "128MiB",
                                       "-o", out_path])
        os.kill(workload.pid, signal.SIGCONT)
        out, _ = workload.communicate(timeout=120)
        assert workload.returncode == 0
        code, stdout, stderr = finish_allocscope(proc, seen)
    finally:
        if workload.poll() is None:
            workload.kill()
            workload.wait()
    assert code == 0, stderr
    sampled, weighted, allocated = sampler_stats(out)
    assert sampled > 100, out
    assert "samples dropped" not in stdout, stdout
    profile = Profile(out_path)
    space = sum(s["values"][1] for s in profile.samples)
    objects = sum(s["values"][0] for s in profile.samples)
    assert space == weighted, (space, weighted, sampled)
    # An unbiased estimate of what was allocated (5 sigma at this many samples is far wider
    # than 25%; the exact check above is the strong one).
    assert abs(space - allocated) < 0.25 * allocated, (space, allocated)
    assert objects > 0


@test
def cooperative_and_transparent_targets_in_one_capture(tmp):
    """Two targets in one capture: one preloaded with the sampler (its USDT is probed), one
    without (its entry points are probed); each is attributed to its own sites."""
    preload = Workload([MALLOC_LOOP, "--iterations", "2000", "--size", "4096"],
                       env=preloaded(RATE_ARG))
    plain = Workload([ALLOC_SITES], env=dict(os.environ))
    out_path = os.path.join(tmp, "mixed.pb.gz")
    proc, seen = start_allocscope(["--sample-rate", RATE_ARG, "--ringbuf-size", "128MiB",
                                   "--pid", f"{preload.pid},{plain.pid}", "-o", out_path])
    preload.start()
    plain.start()
    preload.finish()
    manifest = parse_manifest(plain.finish())
    code, stdout, stderr = finish_allocscope(proc, seen)
    assert code == 0, stderr
    assert f"profiling pid {preload.pid}" in stderr and "otel_memory:alloc" in stderr, stderr
    assert re.search(rf"profiling pid {plain.pid} .*libc\.so\.6", stderr), stderr
    # Each rate where it applies: the agent's for the probed process, the sampler's for the
    # preloaded one.
    assert re.search(r"\(sample rate 16\.00 KiB; 1 of 2 processes sampled in-process by "
                     r"liballocscope-sampler\.so at 16\.00 KiB, as its weights show;", stdout), \
        stdout[:600]
    profile = Profile(out_path)
    pids = {s["labels"].get("pid") for s in profile.samples}
    assert {preload.pid, plain.pid} <= pids, pids
    plain_only = Profile(out_path)
    plain_only.samples = [s for s in profile.samples if s["labels"].get("pid") == plain.pid]
    check_sites(plain_only, manifest, RATE)
    loop_bytes = sum(s["values"][1] for s in profile.samples
                     if s["labels"].get("pid") == preload.pid)
    # 2,000 x 4 KiB at 16 KiB: p = 0.22, relative sd 4.2%: 20% is about 5 sigma.
    truth = 2000 * 4096
    assert abs(loop_bytes - truth) < 0.2 * truth, (loop_bytes, truth)


@test
def agent_uses_the_cooperative_path_of_a_preloaded_service(tmp):
    """The continuous agent attaches to the USDT of a preloaded target it discovers after
    exec, like the one-off capture; its interval profiles carry the sampler's weights."""
    from agent_tests import (Agent, MergedProfile, agent_config, include_executable,
                             profiles_of)

    sinks = os.path.join(tmp, "profiles")
    # A ring that holds the burst (see cooperative_sampler_estimates_each_site).
    config = agent_config(sinks, include_executable(ALLOC_SITES, "coop-sites"))
    config = config.replace("sampling:\n", "sampling:\n  ringbuf_size: 256MiB\n", 1)
    agent = Agent(tmp, config)
    try:
        workload = Workload([ALLOC_SITES], env=preloaded(COOP_RATE_ARG))
        agent.wait_attached(workload.pid, "coop-sites")
        workload.start()
        manifest = parse_manifest(workload.finish())
        agent.wait_all_exited_and_flushed()
        assert agent.stop() == 0
    finally:
        agent.kill()
    log = agent.log()
    assert "otel_memory:alloc" in log, log[-2000:]
    check_sites(MergedProfile(profiles_of(sinks, "coop-sites")), manifest, COOP_RATE)


@test
def sampler_behind_an_executable_malloc_falls_back_to_entry_points(tmp):
    """An executable with its own malloc (static jemalloc) wins over the preloaded sampler,
    which then never sees those calls: allocscope probes the executable's allocator instead of
    the USDT, and every site is still estimated right."""
    exe = os.path.join(BUILD, "workloads", "sites_jemalloc_static")
    out_path = os.path.join(tmp, "behind.pb.gz")
    workload = Workload([exe], env=preloaded(RATE_ARG))
    proc, seen = start_allocscope(["--pid", str(workload.pid), "--sample-rate", RATE_ARG,
                                   "--log-level", "debug", "-o", out_path])
    workload.start()
    manifest = parse_manifest(workload.finish())
    code, stdout, stderr = finish_allocscope(proc, seen)
    assert code == 0, stderr[-3000:]
    assert "its executable defines malloc" in stderr, stderr[-3000:]
    assert "USDT site" not in stderr and "cooperative sampling" not in stdout, stderr[-3000:]
    assert f"jemalloc in {exe}" in stdout, stdout
    profile = Profile(out_path)
    profile.check_ids()
    check_sites(profile, manifest, RATE)
