#!/usr/bin/env python3
"""`make bench`, cooperative path and a real server: what allocation profiling costs

  1. per allocation, in a tight malloc(64)/free loop (build/workloads/sampler_workload -B):
     nothing; liballocscope-sampler.so preloaded with no profiler (the semaphore is 0);
     preloaded and sampling (ALLOCSCOPE_SAMPLER_FORCE=1, no profiler: the in-process cost);
     preloaded with allocscope attached to its otel_memory:alloc USDT; transparent uprobes
     (allocscope on the allocator's entry points, no preload);
  2. Debian's redis-server (jemalloc) under redis-benchmark: server CPU per request and
     requests per second, unprofiled, transparent (allocscope --pid), cooperative (the
     sampler preloaded + allocscope --pid). Server and client are pinned to different CPUs.

Run as root; figures go to docs/performance.md with the machine they ran on.
"""
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("BUILD", os.path.join(ROOT, "build"))
ALLOCSCOPE = os.path.join(BUILD, "allocscope")
SAMPLER = os.path.join(BUILD, "liballocscope-sampler.so")
WORKLOAD = os.path.join(BUILD, "workloads", "sampler_workload")
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
LOOP_ITERATIONS = int(os.environ.get("BENCH_LOOP_ITERATIONS", "20000000"))
REDIS_REQUESTS = int(os.environ.get("BENCH_REDIS_REQUESTS", "100000"))
REDIS_REPEATS = int(os.environ.get("BENCH_REDIS_REPEATS", "5"))
SERVER_CPU, CLIENT_CPU = "1", "0"


def ns_per_pair(output):
    m = re.search(r"ns_per_pair ([0-9.]+)", output)
    if not m:
        raise SystemExit(f"bench: no ns_per_pair in the workload output:\n{output}")
    return float(m.group(1))


def wait_for_line(proc_stderr_path, needle, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(proc_stderr_path, errors="replace") as f:
            if needle in f.read():
                return True
        time.sleep(0.02)
    return False


class Capture:
    """allocscope --pid PID in the background until stopped; its stderr goes to a file."""

    def __init__(self, pid, out_dir):
        self.log = os.path.join(out_dir, f"allocscope-{pid}.log")
        self.profile = os.path.join(out_dir, f"alloc-{pid}.pb.gz")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([ALLOCSCOPE, "--pid", str(pid), "-o", self.profile],
                                         stdout=log, stderr=subprocess.STDOUT)
        if not wait_for_line(self.log, "allocscope: sampling "):
            self.stop()
            raise SystemExit(f"bench: allocscope did not attach:\n{open(self.log).read()}")

    def stop(self):
        self.proc.send_signal(2)
        self.proc.wait(timeout=60)
        return open(self.log).read()


def loop_under(mode, tmp, iterations):
    env = dict(os.environ)
    if mode in ("preloaded", "sampling", "cooperative", "inuse", "inuse_heap"):
        env["LD_PRELOAD"] = SAMPLER
    if mode == "sampling":
        env["ALLOCSCOPE_SAMPLER_FORCE"] = "1"
    # In-use tracking in the sampler (issue 16), no profiler: FORCE=2 raises the free probe's
    # semaphore too. inuse_heap holds 512 MiB in 4 KiB blocks first (~1000 tracked samples),
    # so every free consults the filter as in a real service.
    if mode in ("inuse", "inuse_heap"):
        env["ALLOCSCOPE_SAMPLER_FORCE"] = "2"
    # -P: the workload stops itself (SIGSTOP) once started, so a profiler can attach first.
    args = ["taskset", "-c", SERVER_CPU, WORKLOAD, "-B", str(iterations)]
    if mode == "inuse_heap":
        args += ["-H", "512"]
    if mode in ("cooperative", "transparent"):
        args.insert(4, "-P")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    capture = None
    if mode in ("cooperative", "transparent"):
        target = proc.pid
        for _ in range(200):  # taskset execs the workload in place: same pid
            with open(f"/proc/{target}/stat") as f:
                if f.read().split(")")[1].split()[0] == "T":
                    break
            time.sleep(0.01)
        capture = Capture(target, tmp)
        os.kill(target, 18)  # SIGCONT
    out, _ = proc.communicate(timeout=600)
    summary = capture.stop() if capture else ""
    if mode == "cooperative" and "otel_memory:alloc" not in summary:
        raise SystemExit(f"bench: allocscope did not use the USDT:\n{summary}")
    return ns_per_pair(out)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_under(mode, tmp):
    port = free_port()
    env = dict(os.environ)
    if mode == "cooperative":
        env["LD_PRELOAD"] = SAMPLER
    server = subprocess.Popen(["taskset", "-c", SERVER_CPU, "redis-server", "--port", str(port),
                               "--save", "", "--appendonly", "no", "--bind", "127.0.0.1",
                               "--dir", tmp],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.02)
        capture = Capture(server.pid, tmp) if mode != "unprofiled" else None
        before = cpu_seconds(server.pid)
        start = time.monotonic()
        subprocess.run(["taskset", "-c", CLIENT_CPU, "redis-benchmark", "-p", str(port), "-q",
                        "-t", "set,get", "-n", str(REDIS_REQUESTS), "-c", "20", "-d", "64"],
                       check=True, stdout=subprocess.DEVNULL)
        wall = time.monotonic() - start
        cpu = cpu_seconds(server.pid) - before
        summary = capture.stop() if capture else ""
        if mode == "cooperative" and "otel_memory:alloc" not in summary:
            raise SystemExit(f"bench: allocscope did not use the USDT in redis:\n{summary}")
        requests = 2 * REDIS_REQUESTS
        return cpu / requests * 1e6, requests / wall
    finally:
        server.terminate()
        server.wait(timeout=30)


def main():
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (sudo make bench)")
    for path in (ALLOCSCOPE, SAMPLER, WORKLOAD):
        if not os.path.exists(path):
            raise SystemExit(f"bench: {path} is missing: run make first")
    tmp = tempfile.mkdtemp(prefix="allocscope-bench-")
    try:
        print(f"\nmalloc(64)+free pairs, {LOOP_ITERATIONS} per run, median of {REPEATS} runs")
        print("| configuration | ns per pair | over nothing |")
        print("|---|---:|---:|")
        loop_modes = (("nothing", "nothing attached, no preload"),
                      ("preloaded", "sampler preloaded, no profiler"),
                      ("sampling", "sampler preloaded, sampling at 512KiB (FORCE)"),
                      ("inuse", "... and tracking frees for in-use (FORCE=2)"),
                      ("inuse_heap", "... with 512 MiB held, ~1000 samples tracked"),
                      ("cooperative", "sampler preloaded + allocscope on its USDT"),
                      ("transparent", "allocscope uprobes on malloc (no preload)"))
        loop_runs = {mode: [] for mode, _ in loop_modes}
        for _ in range(REPEATS):  # interleaved, as for redis below
            for mode, _ in loop_modes:
                # A trap per call: the transparent loop gets fewer iterations.
                iterations = (min(LOOP_ITERATIONS, 200000) if mode == "transparent"
                              else LOOP_ITERATIONS)
                loop_runs[mode].append(loop_under(mode, tmp, iterations))
        base = None
        for mode, label in loop_modes:
            ns = statistics.median(loop_runs[mode])
            base = ns if base is None else base
            print(f"| {label} | {ns:,.1f} | {ns - base:+,.1f} |")

        if not shutil.which("redis-server") or not shutil.which("redis-benchmark"):
            print("\nredis: redis-server/redis-benchmark not installed (scripts/install-deps)")
            return
        print(f"\nredis-server (jemalloc) under redis-benchmark -t set,get -n {REDIS_REQUESTS} "
              f"-c 20 -d 64, median of {REDIS_REPEATS} interleaved runs")
        print("| configuration | server CPU per request | vs unprofiled | requests/s |")
        print("|---|---:|---:|---:|")
        # Configurations interleaved run by run: this VM drifts by 10% and more over minutes,
        # which blocks of runs per configuration would read as overhead.
        modes = (("unprofiled", "unprofiled"),
                 ("transparent", "allocscope --pid (uprobes on jemalloc)"),
                 ("cooperative", "sampler preloaded + allocscope --pid"))
        runs = {mode: [] for mode, _ in modes}
        for _ in range(REDIS_REPEATS):
            for mode, _ in modes:
                runs[mode].append(redis_under(mode, tmp))
        base = None
        for mode, label in modes:
            us = statistics.median(r[0] for r in runs[mode])
            rps = statistics.median(r[1] for r in runs[mode])
            base = us if base is None else base
            print(f"| {label} | {us:.2f} us | {us / base:.3f}x | {rps:,.0f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
