#!/usr/bin/env python3
"""`make bench`, exact counting: what liballocscope-count.so (allocscope count|gate) costs per
allocation, in a tight malloc(64)/free loop (build/workloads/sampler_workload -B N, pinned to
one CPU): nothing preloaded; liballocscope-sampler.so preloaded with no profiler (for scale);
liballocscope-count.so preloaded (every allocation counted: one site, one caller chain, the
common case of a hot loop); and the whole `allocscope count -- ...` run of the test library
(tests/workloads/gate_workload, 10 allocations per call at 3 sites) against the bare program,
wall time per allocation including start-up, symbolization and the profile; and the slow
paths through libc: strdup called by two callbacks through one pointer (gate_workload -c: a
strdup-heavy program; the site is inside libc and its caller found through the learned frame
rules) and fopen/getline/strdup/asprintf from two callers (gate_workload -l: frames nested
inside libc), each per allocation over the bare run.

ALLOCSCOPE_COUNT_LIB=PATH measures another build of the library in the `allocscope count`
and in-process rows (e.g. the previous commit's, for a before/after).

Needs no root. Figures go to docs/performance.md with the machine they ran on.
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("BUILD", os.path.join(ROOT, "build"))
ALLOCSCOPE = os.path.join(BUILD, "allocscope")
SAMPLER = os.path.join(BUILD, "liballocscope-sampler.so")
COUNT = os.environ.get("ALLOCSCOPE_COUNT_LIB") or os.path.join(BUILD, "liballocscope-count.so")
WORKLOAD = os.path.join(BUILD, "workloads", "sampler_workload")
GATE = os.path.join(BUILD, "workloads", "gate_workload")
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
LOOP_ITERATIONS = int(os.environ.get("BENCH_LOOP_ITERATIONS", "20000000"))
GATE_CALLS = int(os.environ.get("BENCH_GATE_CALLS", "1000000"))
CPU = os.environ.get("BENCH_CPU", "1")


def loop_ns(preload):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    best = []
    for _ in range(REPEATS):
        out = subprocess.run(["taskset", "-c", CPU, WORKLOAD, "-B", str(LOOP_ITERATIONS)],
                             env=env, capture_output=True, text=True, check=True).stdout
        m = re.search(r"ns_per_pair ([0-9.]+)", out)
        if not m:
            raise SystemExit(f"bench: no ns_per_pair in:\n{out}")
        best.append(float(m.group(1)))
    return statistics.median(best)


def wall(argv, env=None):
    times = []
    for _ in range(REPEATS):
        start = time.monotonic()
        subprocess.run(["taskset", "-c", CPU] + argv, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=env)
        times.append(time.monotonic() - start)
    return statistics.median(times)


def main():
    for path in (ALLOCSCOPE, SAMPLER, COUNT, WORKLOAD, GATE):
        if not os.path.exists(path):
            raise SystemExit(f"bench: {path} missing: run make first")
    bare = loop_ns(None)
    sampler = loop_ns(SAMPLER)
    counted = loop_ns(COUNT)
    print(f"malloc(64)+free pair, {LOOP_ITERATIONS} pairs, median of {REPEATS} runs, CPU {CPU}")
    print(f"  nothing preloaded           {bare:7.2f} ns")
    print(f"  sampler, no profiler        {sampler:7.2f} ns  (+{sampler - bare:.2f})")
    print(f"  liballocscope-count.so      {counted:7.2f} ns  (+{counted - bare:.2f} per "
          f"allocation)")
    with tempfile.TemporaryDirectory() as tmp:
        allocations = GATE_CALLS * 10
        plain = wall([GATE, "-n", str(GATE_CALLS)])
        whole = wall([ALLOCSCOPE, "count", "--top", "0", "-o", os.path.join(tmp, "p.pb.gz"),
                      "--", GATE, "-n", str(GATE_CALLS)])
        slow_calls = GATE_CALLS // 10
        slow_plain = wall([GATE, "-c", "-n", str(slow_calls)])
        slow_whole = wall([ALLOCSCOPE, "count", "--top", "0", "-o",
                           os.path.join(tmp, "s.pb.gz"), "--", GATE, "-c", "-n",
                           str(slow_calls)])
        counts = os.path.join(tmp, "counts")
        os.mkdir(counts)
        preload = dict(os.environ, LD_PRELOAD=COUNT, ALLOCSCOPE_COUNT_DIR=counts)
        slow_inproc = wall([GATE, "-c", "-n", str(slow_calls)], preload)
        nested_calls = GATE_CALLS // 100
        with open(os.path.join(tmp, "lines.txt"), "w") as f:
            f.write("one\ntwo two\nthree three three\n")
        lines = os.path.join(tmp, "lines.txt")
        nested_plain = wall([GATE, "-l", lines, "-n", str(nested_calls)])
        nested_whole = wall([ALLOCSCOPE, "count", "--top", "0", "-o",
                             os.path.join(tmp, "l.pb.gz"), "--", GATE, "-l", lines, "-n",
                             str(nested_calls)])
        nested_inproc = wall([GATE, "-l", lines, "-n", str(nested_calls)], preload)
    print(f"gate_workload -n {GATE_CALLS} ({allocations} allocations at 3 sites)")
    print(f"  bare                        {plain * 1e3:7.1f} ms")
    print(f"  allocscope count            {whole * 1e3:7.1f} ms  "
          f"(+{(whole - plain) * 1e9 / allocations:.1f} ns per allocation, start-up and "
          f"symbolization included)")
    print(f"gate_workload -c -n {slow_calls} ({3 * slow_calls} strdup through a callback)")
    print(f"  bare                        {slow_plain * 1e3:7.1f} ms")
    print(f"  allocscope count            {slow_whole * 1e3:7.1f} ms  "
          f"(+{(slow_whole - slow_plain) * 1e9 / (3 * slow_calls):.0f} ns per allocation)")
    print(f"  liballocscope-count.so      {slow_inproc * 1e3:7.1f} ms  "
          f"(+{(slow_inproc - slow_plain) * 1e9 / (3 * slow_calls):.0f} ns per allocation "
          f"in the process)")
    nested = 42 * nested_calls  # 7 calls of 6 allocations per round (glibc 2.36)
    print(f"gate_workload -l FILE -n {nested_calls} ({nested} allocations in nested libc frames)")
    print(f"  bare                        {nested_plain * 1e3:7.1f} ms")
    print(f"  allocscope count            {nested_whole * 1e3:7.1f} ms  "
          f"(+{(nested_whole - nested_plain) * 1e9 / nested:.0f} ns per allocation)")
    print(f"  liballocscope-count.so      {nested_inproc * 1e3:7.1f} ms  "
          f"(+{(nested_inproc - nested_plain) * 1e9 / nested:.0f} ns per allocation "
          f"in the process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
