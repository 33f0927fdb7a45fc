#!/usr/bin/env python3
"""`make bench`, unwinder memory with many processes (issue 13): the continuous agent with the
kernel walk (the default) tracking BENCH_PROCESSES processes (default "200 500") of a C++
program (libc, libstdc++, libm, libgcc_s and the executable: 5 files with unwind tables),
measured, not derived, once every process is attached and its tables are in:

  - the agent's resident memory (VmRSS of /proc/PID/status), before any process and then;
  - the BPF maps the agent holds, by map (memlock from /proc/PID/fdinfo of each map
    descriptor: the kernel's own accounting of each map's memory), the unwind maps apart.

Run as root; figures go to docs/performance.md with the machine they ran on.
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from agent_tests import Agent, agent_config  # noqa: E402
from helpers import CXX_SITES, Workload  # noqa: E402

COUNTS = [int(n) for n in os.environ.get("BENCH_PROCESSES", "200 500").split()]


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def bpf_maps(pid):
    """{name: memlock bytes} of the BPF maps pid holds descriptors to (each map once)."""
    maps, seen = {}, set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if "map_id" not in info:
            continue
        map_id = int(info["map_id"])
        if map_id in seen:
            continue
        seen.add(map_id)
        name = os.popen(f"bpftool map show id {map_id} 2>/dev/null").read().split()
        label = name[3] if len(name) > 3 and name[2] == "name" else f"id{map_id}"
        maps[label] = maps.get(label, 0) + int(info.get("memlock", "0"))
    return maps


def measure(tmp, count):
    sinks = os.path.join(tmp, f"profiles{count}")
    include = f"  include:\n    - executable: {CXX_SITES}\n"
    agent = Agent(tmp, agent_config(sinks, include, interval="60s",
                                    extra="limits:\n  max_processes: 4096\n"))
    workloads = []
    try:
        idle_rss = rss_mib(agent.proc.pid)
        idle_maps = bpf_maps(agent.proc.pid)
        workloads = [Workload([CXX_SITES]) for _ in range(count)]
        agent.wait_metric("allocscope_processes", lambda v: v == count, timeout=600,
                          state="attached")
        time.sleep(2)
        rss = rss_mib(agent.proc.pid)
        maps = bpf_maps(agent.proc.pid)
    finally:
        for w in workloads:
            w.kill()
        agent.kill()
    return idle_rss, idle_maps, rss, maps


def main():
    if os.geteuid() != 0:
        print("bench: run as root")
        return 1
    tmp = tempfile.mkdtemp(prefix="allocscope-bench-unwind-memory-")
    print("| processes | agent RSS | BPF maps, all | unwind_rows | unwind_procs | unwind_files "
          "| other maps |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for count in [0] + COUNTS:
        if count == 0:
            continue
        idle_rss, idle_maps, rss, maps = measure(tmp, count)
        if count == COUNTS[0]:
            mib = lambda m: sum(m.values()) / 2**20  # noqa: E731
            print(f"| 0 | {idle_rss:.1f} MiB | {mib(idle_maps):.1f} MiB | "
                  f"{idle_maps.get('unwind_rows', 0) / 2**20:.1f} MiB | "
                  f"{idle_maps.get('unwind_procs', 0) / 2**20:.2f} MiB | "
                  f"{idle_maps.get('unwind_files', 0) / 2**20:.2f} MiB | "
                  f"{(sum(idle_maps.values()) - sum(idle_maps.get(k, 0) for k in ('unwind_rows', 'unwind_procs', 'unwind_files'))) / 2**20:.1f} MiB |")
        unwind = sum(maps.get(k, 0) for k in ("unwind_rows", "unwind_procs", "unwind_files"))
        print(f"| {count} | {rss:.1f} MiB | {sum(maps.values()) / 2**20:.1f} MiB | "
              f"{maps.get('unwind_rows', 0) / 2**20:.1f} MiB | "
              f"{maps.get('unwind_procs', 0) / 2**20:.2f} MiB | "
              f"{maps.get('unwind_files', 0) / 2**20:.2f} MiB | "
              f"{(sum(maps.values()) - unwind) / 2**20:.1f} MiB |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
