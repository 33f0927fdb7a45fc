#!/usr/bin/env python3
"""`allocscope report` and the flame graph page on large profiles (issue 17): for synthetic
pprof profiles of 1k, 10k and 100k distinct stacks, the time report (text, collapsed) and
report --html take, the page's size, and, when Chromium and playwright-core are installed
(scripts/install-deps), how long the page takes to load and to redraw after a zoom and a
search in headless Chromium. Figures go in docs/performance.md.

    python3 tests/bench/report.py [--stacks 1000,10000,100000] [--runs 3]

The profiles are written here with a hand-rolled protobuf encoder: stacks 8 to 40 frames
deep drawn from 3000 C++-like function names, shaped like a program's call tree (stacks share
their roots and fan out towards the leaves), every stack distinct, two sample types.
"""
import argparse
import gzip
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("BUILD", os.path.join(ROOT, "build"))
ALLOCSCOPE = os.path.join(BUILD, "allocscope")
BROWSER_DIR = os.path.join(ROOT, "tests", "browser")


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def packed(num, values):
    return field(num, 2, b"".join(varint(v) for v in values))


def synthetic_profile(n_stacks, seed=17):
    rng = random.Random(seed)
    names = [f"ns{i % 40}::Component{i % 300}::method_{i}(std::vector<int> const&, unsigned long)"
             for i in range(3000)]
    strings = ["", "alloc_objects", "count", "alloc_space", "bytes", "space"] + names + ["malloc"]
    malloc_fn = len(names) + 1
    # A call tree: each stack walks down from a few roots, choosing among a node's few
    # children most of the time, so stacks share prefixes as real ones do.
    stacks, seen = [], set()
    while len(stacks) < n_stacks:
        depth = rng.randint(8, 40)
        frame, stack = rng.randrange(4), []
        for _ in range(depth):
            stack.append(frame)
            frame = (frame * 7 + rng.randrange(6) * 131 + 1) % len(names)
        key = tuple(stack)
        if key not in seen:
            seen.add(key)
            stacks.append(stack)
    body = bytearray()
    body += field(1, 2, field(1, 0, 1) + field(2, 0, 2))
    body += field(1, 2, field(1, 0, 3) + field(2, 0, 4))
    for fn in range(1, len(names) + 2):
        body += field(5, 2, field(1, 0, fn) + field(2, 0, 5 + fn) + field(3, 0, 5 + fn))
    for loc in range(1, len(names) + 2):
        body += field(4, 2, field(1, 0, loc) + field(3, 0, 0x400000 + loc * 16) +
                      field(4, 2, field(1, 0, loc)))
    for stack in stacks:
        objects = rng.randint(1, 50)
        size = objects * rng.choice((16, 64, 256, 4096, 65536))
        locs = [malloc_fn] + [f + 1 for f in reversed(stack)]
        body += field(2, 2, packed(1, locs) + packed(2, [objects, size]))
    for s in strings:
        body += field(6, 2, s.encode())
    body += field(10, 0, 10 * 10**9)
    body += field(11, 2, field(1, 0, 5) + field(2, 0, 4))
    body += field(12, 0, 524288)
    return gzip.compress(bytes(body), 1)


def timed(argv, runs):
    """Median CPU time (user + system) of the command: on a shared machine the wall clock
    measures the neighbours too."""
    times = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if result.returncode != 0:
            sys.exit(f"{argv} failed: {result.stderr.decode()}")
    return statistics.median(times)


def browser_times(page):
    node, chromium = shutil.which("node"), shutil.which("chromium")
    if not node or not chromium or not os.path.isdir(
            os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        return None
    result = subprocess.run([node, os.path.join(BROWSER_DIR, "flamegraph_bench.js"), page],
                            capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, CHROMIUM=chromium))
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        return None
    return json.loads(result.stdout)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--stacks", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not os.access(ALLOCSCOPE, os.X_OK):
        sys.exit(f"{ALLOCSCOPE} missing: run make")
    print("report bench: CPU time, median of", args.runs, "runs each; page times in "
          "headless Chromium (wall clock)")
    print(f"{'stacks':>8} {'pb.gz':>9} {'report':>8} {'collapsed':>10} {'html':>8} "
          f"{'page':>9} {'nodes':>8} {'load':>8} {'zoom':>7} {'search':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.stacks.split(",")):
            path = os.path.join(tmp, f"p{n}.pb.gz")
            with open(path, "wb") as f:
                f.write(synthetic_profile(n))
            page = os.path.join(tmp, f"p{n}.html")
            t_report = timed([ALLOCSCOPE, "report", path], args.runs)
            t_collapsed = timed([ALLOCSCOPE, "report", path, "--format", "collapsed"], args.runs)
            t_html = timed([ALLOCSCOPE, "report", path, "--html", page], args.runs)
            b = browser_times(page) or {}
            fmt = lambda k: f"{b[k]:.0f} ms" if k in b else "-"
            print(f"{n:>8} {os.path.getsize(path) / 1024:>6.0f} KiB {t_report * 1000:>5.0f} ms "
                  f"{t_collapsed * 1000:>7.0f} ms {t_html * 1000:>5.0f} ms "
                  f"{os.path.getsize(page) / 1048576:>5.1f} MiB {b.get('nodes', '-'):>8} "
                  f"{fmt('load_ms'):>8} {fmt('zoom_ms'):>7} {fmt('search_ms'):>7}", flush=True)


if __name__ == "__main__":
    main()
