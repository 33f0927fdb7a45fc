#!/usr/bin/env python3
"""`make bench`, continuous agent part: what the agent costs and how fast it reacts.

  - exec -> attached: a target started (fork + exec) until the agent's per-pid "probes on"
    line, for BENCH_STARTS processes one after another (median, 95th percentile, max);
  - the same for forked workers (fork_workers: the parent is a target, workers never exec);
  - N processes: wall time until all are attached, descriptors and resident memory then,
    the agent's CPU while they idle for 10 s, and the time until every probe is detached
    after they all exit.

Run as root; figures go to docs/performance.md with the machine they ran on.
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from agent_tests import Agent, FORK_WORKERS, agent_config, include_executable  # noqa: E402
from helpers import MALLOC_LOOP, Workload  # noqa: E402

STARTS = int(os.environ.get("BENCH_STARTS", "30"))
MANY = int(os.environ.get("BENCH_PROCESSES", "200"))


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def attach_latency(agent):
    latencies = []
    for _ in range(STARTS):
        mark = agent.mark()
        started = time.monotonic()
        workload = Workload([MALLOC_LOOP, "--iterations", "1000"])
        agent.wait_for(rf"pid {workload.pid} \([^)]*\): \d+ probes on", start=mark)
        latencies.append(time.monotonic() - started)
        workload.start()
        workload.finish()
    return latencies


def fork_latency(agent):
    latencies = []
    for _ in range(max(3, STARTS // 5)):
        workload = Workload([FORK_WORKERS, "--workers", "4", "--count", "100"])
        agent.wait_for(rf"pid {workload.pid} \([^)]*\): \d+ probes on")
        mark = agent.mark()
        started = time.monotonic()
        workload.start()
        seen = set()
        deadline = time.monotonic() + 10
        while len(seen) < 4 and time.monotonic() < deadline:
            for line in agent.lines[mark:]:
                match = line and re.search(r"pid (\d+) \(fork_workers\): \d+ probes on", line)
                if match and int(match.group(1)) != workload.pid and match.group(1) not in seen:
                    seen.add(match.group(1))
                    latencies.append(time.monotonic() - started)
            time.sleep(0.001)
        workload.finish()
    return latencies


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def many_processes(agent):
    base = agent.metrics()
    started = time.monotonic()
    workloads = [Workload([MALLOC_LOOP, "--iterations", "1000"]) for _ in range(MANY)]
    spawned = time.monotonic() - started
    agent.wait_metric("allocscope_processes", lambda v: v == MANY, timeout=120,
                      state="attached")
    attached = time.monotonic() - started
    m = agent.metrics()
    cpu0 = cpu_seconds(agent.proc.pid)
    time.sleep(10)
    idle_cpu = cpu_seconds(agent.proc.pid) - cpu0
    for w in workloads:
        w.kill()
    exited = time.monotonic()
    agent.wait_metric("allocscope_processes", lambda v: v == 0, timeout=120, state="attached")
    agent.wait_metric("allocscope_processes_detaching", lambda v: v == 0, timeout=600)
    detached = time.monotonic() - exited
    return {
        "spawn": spawned, "attached": attached,
        "fds": m["process_open_fds"] - base["process_open_fds"],
        "rss": m["process_resident_memory_bytes"] / 2**20,
        "probes": m["allocscope_probes"], "idle_cpu": idle_cpu, "detached": detached,
    }


def main():
    if os.geteuid() != 0:
        print("bench: run as root")
        return 1
    tmp = tempfile.mkdtemp(prefix="allocscope-bench-agent-")
    sinks = os.path.join(tmp, "profiles")
    include = ("  include:\n"
               f"    - executable: {MALLOC_LOOP}\n"
               f"    - executable: {FORK_WORKERS}\n")
    agent = Agent(tmp, agent_config(sinks, include, interval="5s",
                                    extra="limits:\n  max_processes: 4096\n"))
    try:
        execs = attach_latency(agent)
        forks = fork_latency(agent)
        many = many_processes(agent)
        agent.stop()
    finally:
        agent.kill()
    ms = lambda v: f"{v * 1000:.1f} ms"  # noqa: E731
    print(f"\ncontinuous agent ({STARTS} starts, {MANY} processes)")
    print("| measurement | value |")
    print("|---|---:|")
    print(f"| exec -> attached, median | {ms(statistics.median(execs))} |")
    print(f"| exec -> attached, p95 / max | {ms(percentile(execs, .95))} / {ms(max(execs))} |")
    print(f"| fork -> worker attached, median | {ms(statistics.median(forks))} |")
    print(f"| fork -> worker attached, max | {ms(max(forks))} |")
    print(f"| {MANY} processes: all attached after | {many['attached']:.2f} s "
          f"(spawning took {many['spawn']:.2f} s) |")
    print(f"| {MANY} processes: probes / extra descriptors | {many['probes']:.0f} / "
          f"{many['fds']:.0f} |")
    print(f"| {MANY} processes: agent resident memory | {many['rss']:.0f} MiB |")
    print(f"| {MANY} idle processes: agent CPU over 10 s | {many['idle_cpu'] * 1000:.0f} ms |")
    print(f"| {MANY} processes exit: all probes detached after | {many['detached']:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
