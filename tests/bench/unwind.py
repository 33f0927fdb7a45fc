#!/usr/bin/env python3
"""`make bench`, unwinding part (issue 13): what a sampled allocation costs at stack depths 10,
50 and 200 frames (build/workloads/depth_loop: frames of about 100 bytes, frame pointers kept),
for the default unwinding (a 16 KiB stack copy, CFI in the agent with libdw), --unwind kernel
(tables in BPF maps, the kernel walks the frames) and --unwind fp (the kernel's frame-pointer
walk); and the cold cost of building one file's unwind table (build/bench/unwind_table_build)
for libc, libstdc++ and the biggest C++ library present (libLLVM).

Every allocation is sampled (--sample-rate 1), so per sample:
  - in the target: ns per malloc/free under allocscope minus ns with nothing attached;
  - in the agent: its CPU (user + system, from the summary) over the samples it received.
The workload is attached to with --pid while it waits (--unwind kernel builds its tables at
attach). The machine is shared: runs are interleaved (each repeat runs every depth and mode
once, side by side) and medians are reported, so ratios between modes are the figures to
trust more than absolute times.

Run as root; figures go to docs/performance.md with the machine they ran on.
"""
import glob
import os
import re
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from helpers import ALLOCSCOPE, BUILD, Workload, finish_allocscope, start_allocscope  # noqa: E402

DEPTH_LOOP = os.path.join(BUILD, "workloads", "depth_loop")
TABLE_BUILD = os.path.join(BUILD, "bench", "unwind_table_build")
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
ITERATIONS = int(os.environ.get("BENCH_ITERATIONS", "5000"))
DEPTHS = (10, 50, 200)
MODES = ("none", "auto", "kernel", "fp")


def one_run(depth, mode):
    """(ns per call in the target, agent CPU ms, samples)."""
    workload = Workload([DEPTH_LOOP, "--depth", str(depth), "--iterations", str(ITERATIONS)])
    try:
        if mode == "none":
            workload.start()
            out = workload.finish()
            return float(re.search(r"ns_per_call ([\d.]+)", out).group(1)), 0.0, 0
        proc, seen = start_allocscope(["--pid", str(workload.pid), "--unwind", mode,
                                       "--sample-rate", "1", "--ringbuf-size", "256MiB",
                                       "-o", "/tmp/allocscope-bench-unwind.pb.gz"])
        workload.start()
        out = workload.finish()
        code, summary, err = finish_allocscope(proc, seen)
    finally:
        workload.kill()
    if code != 0:
        raise SystemExit(f"bench: allocscope --unwind {mode} failed: {err}")
    if "samples dropped" in summary:
        raise SystemExit(f"bench: samples dropped, the agent's CPU per sample would be low:\n"
                         f"{summary}")
    match = re.search(r"(\d+) samples? from .*agent CPU (\d+) ms", summary)
    if not match:
        raise SystemExit(f"bench: no sample count or agent CPU in the summary:\n{summary}")
    ns = float(re.search(r"ns_per_call ([\d.]+)", out).group(1))
    return ns, float(match.group(2)), int(match.group(1))


def sampled_path():
    runs = {(d, m): [] for d in DEPTHS for m in MODES}
    for _ in range(REPEATS):
        for depth in DEPTHS:
            for mode in MODES:
                runs[(depth, mode)].append(one_run(depth, mode))
    print(f"sampled path, every allocation sampled ({ITERATIONS} per run, median of {REPEATS} "
          f"interleaved runs):")
    print(f"  {'depth':>5}  {'mode':<7} {'target us/sample':>17} {'agent us/sample':>16}")
    for depth in DEPTHS:
        floor = statistics.median(r[0] for r in runs[(depth, "none")])
        for mode in MODES[1:]:
            target = statistics.median(r[0] - floor for r in runs[(depth, mode)]) / 1000
            agent = statistics.median(r[1] * 1000 / max(r[2], 1) for r in runs[(depth, mode)])
            print(f"  {depth:>5}  {mode:<7} {target:>17.2f} {agent:>16.2f}")
        print(f"  {depth:>5}  {'(none)':<7} {floor / 1000:>17.3f} {'':>16}")


def table_builds():
    files = ["/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6"]
    llvm = sorted(glob.glob("/usr/lib/llvm-*/lib/libLLVM-*.so*"), key=os.path.getsize)
    files += llvm[-1:]
    print("cold unwind table build (best and median of 3, page cache warm):")
    print(f"  {'file':<48} {'MB':>6} {'rows':>8} {'FDEs':>7} {'ms best':>8} {'ms med':>7} "
          f"{'table MB':>8}")
    for path in files:
        out = subprocess.run([TABLE_BUILD, os.path.realpath(path), "3"], capture_output=True,
                             text=True)
        if out.returncode != 0:
            raise SystemExit(f"bench: {out.stderr}")
        name, size, rows, fdes, _, best, median, table = out.stdout.split()
        print(f"  {os.path.basename(name):<48} {int(size) / 1e6:>6.1f} {rows:>8} {fdes:>7} "
              f"{best:>8} {median:>7} {int(table) / 1e6:>8.1f}")


def main():
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (it loads BPF programs)")
    table_builds()
    sampled_path()


if __name__ == "__main__":
    main()
