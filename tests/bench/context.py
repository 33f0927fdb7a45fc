#!/usr/bin/env python3
"""`make bench`: what request context costs (issue 15).

  - the writer, in the application: ns per allocscope_context_set (a same-length value
    replaced) and per push + pop pair (tests/bench/context_writer.c, no profiler attached);
  - the sampled path's extra cost for reading the record: a malloc/free loop in a process that
    has published two attributes, under allocscope sampling every call (--sample-rate 1), with
    --context false and true. The non-sampled path has no context code at all (the countdown
    is unchanged), so its figures are overhead.py's.

Each figure is the median of several runs. Run as root.
"""
import os
import re
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import overhead  # noqa: E402

WRITER = os.path.join(overhead.BUILD, "bench", "context_writer")
REPEATS = overhead.REPEATS


def writer_costs():
    out = subprocess.run([WRITER, "set"], capture_output=True, text=True, check=True).stdout
    return (float(re.search(r"ns_per_set ([\d.]+)", out).group(1)),
            float(re.search(r"ns_per_push_pop ([\d.]+)", out).group(1)))


def sampled_loop(context):
    overhead.LOOP = WRITER  # run_loop starts LOOP --wait --iterations N: the writer's loop
    return overhead.run_loop([], overhead.allocscope_with(
        ["--sample-rate", "1", "--context", context]), iterations=20000)


def main():
    sets = [writer_costs() for _ in range(REPEATS)]
    print("request context (medians of %d runs)" % REPEATS)
    set_ns = statistics.median(s[0] for s in sets)
    push_pop_ns = statistics.median(s[1] for s in sets)
    print(f"  writer: allocscope_context_set           {set_ns:8.2f} ns")
    print(f"  writer: allocscope_context_push + pop    {push_pop_ns:8.2f} ns")
    off = statistics.median(sampled_loop("false") for _ in range(REPEATS))
    on = statistics.median(sampled_loop("true") for _ in range(REPEATS))
    print(f"  every call sampled, --context false      {off:8.0f} ns/call")
    print(f"  every call sampled, --context true       {on:8.0f} ns/call  "
          f"(+{on - off:.0f} ns to read a 2-attribute record)")



def bpf_ns_per_sample(context, seconds=3):
    """The uprobe program's own run time per call (bpf_stats: run_time_ns / run_cnt of this
    allocscope's alloc_multi), every call sampled: what the kernel spends, without the agent's
    share of a loaded machine. Needs kernel.bpf_stats_enabled = 1."""
    import json
    import signal
    import time
    def programs():
        progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"],
                                          capture_output=True, text=True).stdout)
        return {p["id"]: p for p in progs if p.get("name") == "alloc_multi"}

    # This allocscope's program: the alloc_multi that appears when it starts (bpftool does
    # not always name a program's owner; other profilers may run on the machine).
    before = set(programs())
    loop = subprocess.Popen([WRITER, "--wait", "--iterations", "1000000000"],
                            stdout=subprocess.PIPE, text=True)
    assert loop.stdout.readline().startswith("ready")
    tool = subprocess.Popen([overhead.ALLOCSCOPE, "--pid", str(loop.pid), "--sample-rate", "1",
                             "--context", context, "-o", "/tmp/allocscope-bench-ctx.pb.gz"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while "sampling every" not in (tool.stderr.readline() or "sampling every"):
            pass
        ours = [i for i in programs() if i not in before]

        def stats():
            progs = programs()
            t = sum(progs[i].get("run_time_ns", 0) for i in ours if i in progs)
            n = sum(progs[i].get("run_cnt", 0) for i in ours if i in progs)
            return t, n
        os.kill(loop.pid, signal.SIGUSR1)
        time.sleep(0.5)
        t0, n0 = stats()
        time.sleep(seconds)
        t1, n1 = stats()
        return (t1 - t0) / (n1 - n0) if n1 > n0 else float("nan")
    finally:
        loop.kill()
        loop.wait()
        tool.send_signal(signal.SIGINT)
        tool.communicate(timeout=120)


def bpf_main():
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        if f.read().strip() != "1":
            print("  (BPF run time per sample: set kernel.bpf_stats_enabled=1 to measure)")
            return
    off = statistics.median(bpf_ns_per_sample("false") for _ in range(REPEATS))
    on = statistics.median(bpf_ns_per_sample("true") for _ in range(REPEATS))
    print(f"  BPF program per sampled call, --context false {off:8.0f} ns")
    print(f"  BPF program per sampled call, --context true  {on:8.0f} ns  (+{on - off:.0f} ns)")


if __name__ == "__main__":
    main()
    bpf_main()
