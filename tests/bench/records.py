#!/usr/bin/env python3
"""`make bench`, sample records (issue 13): what a sample costs in the kernel-to-agent ring and
what that does to a burst, per unwinding mode, for one or more builds side by side:

  - bytes per record: the summary's "sample records" line over build/workloads/depth_loop with
    a 20-frame stack (--sample-rate 4KiB); builds before the line existed print "-";
  - two bursts through the smallest ring (--ringbuf-size 128KiB), the samples dropped (their
    weight is kept under [dropped samples]): alloc_sites at 16 KiB (drop_tests.py's burst:
    about 25,000 samples in a second), and malloc_loop making 20,000 allocations with every one
    sampled (--sample-rate 1: the agent's drain is the limit there);
  - the sampled path's cost in the target: unwind.py's measure at depth 20 (ns per malloc/free
    under allocscope, every call sampled, minus with nothing attached), in us.

    python3 tests/bench/records.py [BUILD_DIR ...]     (default: build)

Each BUILD_DIR holds an allocscope binary (the workloads come from $BUILD, default build/).
Every build, mode and measure runs once per repeat (BENCH_REPEATS, default 3), interleaved;
medians are printed. Run as root.
"""
import os
import re
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
import helpers  # noqa: E402
import unwind  # noqa: E402

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
MODES = ("kernel", "fp", "dwarf")
MALLOC_LOOP = os.path.join(helpers.BUILD, "workloads", "malloc_loop")
ALLOC_SITES = os.path.join(helpers.BUILD, "workloads", "alloc_sites")
OUT = "/tmp/allocscope-bench-records.pb.gz"


def record_bytes(allocscope, mode):
    out = subprocess.run([allocscope, "--unwind", mode, "--sample-rate", "4KiB", "-o", OUT, "--",
                          unwind.DEPTH_LOOP, "--depth", "20", "--iterations", "100000"],
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise SystemExit(f"bench: {allocscope} --unwind {mode} failed: {out.stderr}")
    shown = re.search(r"^sample records: \d+, (\d+) bytes each", out.stdout, re.M)
    return int(shown.group(1)) if shown else None


def burst_drops(allocscope, mode, rate, command):
    out = subprocess.run([allocscope, "--unwind", mode, "--sample-rate", rate, "--ringbuf-size",
                          "128KiB", "-o", OUT, "--"] + command,
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise SystemExit(f"bench: {allocscope} --unwind {mode} failed: {out.stderr}")
    shown = re.search(r"(\d+) samples dropped", out.stdout)
    return int(shown.group(1)) if shown else 0


def sampled_cost(allocscope, mode):
    helpers.ALLOCSCOPE = allocscope  # start_allocscope runs helpers.ALLOCSCOPE
    return unwind.one_run(20, mode)[0]


def main():
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (it loads BPF programs)")
    builds = sys.argv[1:] or [helpers.BUILD]
    runs = {}
    for _ in range(REPEATS):
        floor = unwind.one_run(20, "none")[0]
        for build in builds:
            allocscope = os.path.join(build, "allocscope")
            for mode in MODES:
                r = runs.setdefault((build, mode), {"bytes": [], "sites": [], "drops": [],
                                                    "cost": []})
                r["bytes"].append(record_bytes(allocscope, mode))
                r["sites"].append(burst_drops(allocscope, mode, "16KiB", [ALLOC_SITES]))
                r["drops"].append(burst_drops(allocscope, mode, "1",
                                              [MALLOC_LOOP, "--iterations", "20000"]))
                r["cost"].append((sampled_cost(allocscope, mode) - floor) / 1000)
    print(f"sample records (medians of {REPEATS} interleaved runs; bursts through a 128 KiB "
          f"ring: alloc_sites at 16 KiB, malloc_loop sampling 20,000 of 20,000)")
    print(f"  {'build':<28} {'mode':<7} {'bytes/record':>12} {'sites drops':>11} "
          f"{'loop drops':>10} {'target us/sample':>16}")
    for build in builds:
        for mode in MODES:
            r = runs[(build, mode)]
            sizes = [b for b in r["bytes"] if b is not None]
            size = f"{statistics.median(sizes):.0f}" if sizes else "-"
            print(f"  {build:<28} {mode:<7} {size:>12} {statistics.median(r['sites']):>11.0f} "
                  f"{statistics.median(r['drops']):>10.0f} {statistics.median(r['cost']):>16.2f}"
                  f"   ({r['sites']} {r['drops']} {[round(c, 2) for c in r['cost']]})")


if __name__ == "__main__":
    main()
