#!/usr/bin/env python3
"""`make bench`, push part: what pushing one service's interval profile to a real server
costs, for 1k, 10k and 100k distinct (pid, stack) pairs per interval.

stack_fanout runs WORKERS processes x STACKS stacks, one pass over every stack per interval
(--round-ms = the interval), every allocation sampled (64 KiB at a 4 KiB rate). The agent
pushes to a real Parca started by `scripts/backends run parca` and also writes to a
directory sink, which gives the uncompressed size. Per interval profile:
  - push: allocscope_sink_push_duration_seconds_total / allocscope_sink_profiles_written_total
    (the gRPC call, connection reuse included);
  - pushed: allocscope_sink_bytes_written_total / profiles written (gzipped pprof) and the
    uncompressed size of the same profile in the directory sink;
  - agent CPU: the agent's user+system time over the run / intervals (ring draining,
    unwinding, symbolizing, aggregating, pprof encoding and gzip, pushing).
Grafana Pyroscope cannot be built on this project's machines (see scripts/backends).

Run as root; figures go to docs/performance.md with the machine they ran on.
"""
import gzip
import os
import re
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from agent_tests import Agent, profiles_of  # noqa: E402
from backend_tests import STACK_FANOUT, Server, config, rule  # noqa: E402
from helpers import Workload  # noqa: E402

SHAPES = [(1, 1000), (5, 2000), (25, 4000)]  # (workers, stacks): 1k, 10k, 100k pairs
INTERVAL_S = int(os.environ.get("BENCH_PUSH_INTERVAL", "4"))
ROUNDS = int(os.environ.get("BENCH_PUSH_ROUNDS", "4"))


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(server, workers, stacks):
    tmp = tempfile.mkdtemp(prefix="allocscope-bench-push-")
    sinks = os.path.join(tmp, "profiles")
    agent = Agent(tmp, config(sinks, server.url, rule(STACK_FANOUT, "busy"),
                              interval=f"{INTERVAL_S}s", rate="4KiB",
                              sampling="  unwind: fp\n  stack_copy_size: 1KiB\n"
                                       "  ringbuf_size: 512MiB\n"))
    try:
        workload = Workload([STACK_FANOUT, "--workers", str(workers), "--stacks", str(stacks),
                             "--rounds", str(ROUNDS), "--round-ms", str(INTERVAL_S * 1000)])
        agent.wait_attached(workload.pid, "busy")
        workload.start()
        agent.wait_metric("allocscope_processes", lambda v: v == workers + 1, timeout=120,
                          state="attached")
        cpu0 = cpu_seconds(agent.proc.pid)
        intervals0 = agent.metric("allocscope_intervals_total")
        workload.start()
        workload.finish(timeout=ROUNDS * INTERVAL_S + 120)
        agent.wait_all_exited_and_flushed(timeout=120)
        built = agent.metric("allocscope_profiles_built_total")
        deadline = time.monotonic() + 300
        while True:  # delivered, or refused (by the server, or by the agent's own limits)
            done = sum(agent.metric(m, sink="parca") or 0 for m in (
                "allocscope_sink_profiles_written_total",
                "allocscope_sink_profiles_rejected_total",
                "allocscope_sink_profiles_dropped_total"))
            if done >= built:
                break
            assert time.monotonic() < deadline, agent.log()[-2000:]
            time.sleep(0.5)
        cpu = cpu_seconds(agent.proc.pid) - cpu0
        intervals = agent.metric("allocscope_intervals_total") - intervals0
        written = agent.metric("allocscope_sink_profiles_written_total", sink="parca")
        push_s = agent.metric("allocscope_sink_push_duration_seconds_total", sink="parca")
        pushed = agent.metric("allocscope_sink_bytes_written_total", sink="parca")
        rejected = agent.metric("allocscope_sink_profiles_rejected_total", sink="parca")
        dropped = agent.metric("allocscope_samples_dropped_total", reason="ringbuf_full")
        refusals = sorted(set(re.findall(r"parca sink: (?:not pushing|the server refused)[^\n]*",
                                         agent.log())))
        assert agent.stop() == 0
    finally:
        agent.kill()
    raw = [len(gzip.decompress(open(p, "rb").read())) for p in profiles_of(sinks, "busy")]
    for line in refusals[:2]:
        print(f"     {line}")
    return {"pairs": workers * stacks, "profiles": built,
            "push_ms": 1000 * push_s / written if written else float("nan"),
            "pushed_kib": pushed / written / 1024 if written else float("nan"), "raw_kib": statistics.median(raw) / 1024,
            "cpu_ms": 1000 * cpu / max(intervals, 1), "rejected": rejected,
            "dropped": dropped}


def main():
    server = Server("parca")
    try:
        print(f"push to a real Parca on loopback, one {INTERVAL_S} s interval per pass, "
              f"{ROUNDS} passes")
        print("| (pid, stack) pairs | profiles | push per profile | pushed (gzip) | "
              "pprof (raw, median) | agent CPU per interval | refused | samples dropped |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for workers, stacks in SHAPES:
            r = one(server, workers, stacks)
            print(f"| {r['pairs']:,} | {r['profiles']:.0f} | {r['push_ms']:.1f} ms | "
                  f"{r['pushed_kib']:,.0f} KiB | {r['raw_kib']:,.0f} KiB | "
                  f"{r['cpu_ms']:,.0f} ms | {r['rejected']:.0f} | {r['dropped']:.0f} |",
                  flush=True)
    finally:
        server.stop()
    print("pyroscope: not measured: scripts/backends cannot build it here")
    return 0


if __name__ == "__main__":
    sys.exit(main())
