"""Shared pieces of the end-to-end tests: the test registry, workload and allocscope process
helpers, and the statistics that turn a workload's manifest into per-site tolerances."""
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

from pprof_reader import Profile  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("BUILD", os.path.join(ROOT, "build"))
ALLOCSCOPE = os.path.join(BUILD, "allocscope")
ALLOC_SITES = os.path.join(BUILD, "workloads", "alloc_sites")
MALLOC_LOOP = os.path.join(BUILD, "workloads", "malloc_loop")
ALLOC_SITES_NOFP = os.path.join(BUILD, "workloads", "alloc_sites_nofp")
CXX_SITES = os.path.join(BUILD, "workloads", "cxx_sites")
RATE = 16 * 1024
RATE_ARG = "16KiB"
SIGMAS = 5.0  # per-site tolerance: a false failure is ~1 in 10^6 per check

TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


class Workload:
    """A workload started with --wait: it prints 'ready PID' and allocates on SIGUSR1. The
    runner kills whatever a test left running (kill_leftovers), so a failed test cannot leave
    processes behind for the next one to find."""

    running = []

    def __init__(self, argv, env=None):
        self.proc = subprocess.Popen(argv + ["--wait"], stdout=subprocess.PIPE, text=True,
                                     env=env)
        Workload.running.append(self)
        line = self.proc.stdout.readline()
        assert line.startswith("ready"), f"workload did not start: {line!r}"
        self.pid = self.proc.pid

    def start(self):
        os.kill(self.pid, signal.SIGUSR1)

    def finish(self, timeout=120):
        out, _ = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"workload exited {self.proc.returncode}"
        return out

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def kill_leftovers():
    for workload in Workload.running:
        workload.kill()
    Workload.running.clear()


def start_allocscope(args):
    """Starts allocscope and waits until it reports its probes are in place."""
    proc = subprocess.Popen([ALLOCSCOPE] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    seen = []
    while True:
        line = proc.stderr.readline()
        if not line:
            out, err = proc.communicate(timeout=30)
            raise AssertionError(f"allocscope ended before attaching: {''.join(seen)}{err}")
        seen.append(line)
        if line.startswith("allocscope: sampling "):
            return proc, seen


def finish_allocscope(proc, seen, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, "".join(seen) + err


def run(args, timeout=120, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)


def parse_manifest(text):
    """{site: [(size, count), ...]} from the workload's 'site NAME SIZE COUNT' lines (NAME may
    hold spaces: a demangled C++ name such as 'f(ns::T const&)')."""
    sites = {}
    for line in text.splitlines():
        parts = line.split(" ")[:1] + line[5:].rsplit(" ", 2)
        if len(parts) == 4 and parts[0] == "site" and parts[2].isdigit() and parts[3].isdigit():
            sites.setdefault(parts[1], []).append((int(parts[2]), int(parts[3])))
    assert sites, f"no manifest in workload output: {text[:300]!r}"
    return sites


def expected_with_tolerance(classes, rate):
    """Truth and allowed deviation for one site's bytes and objects.

    Each allocation of s bytes is sampled independently with p = 1 - exp(-s/R) and weighted
    by 1/p, so the estimate is unbiased with variance N s^2 (1-p)/p (bytes) and N (1-p)/p
    (objects) per size class."""
    bytes_truth = objects_truth = bytes_var = objects_var = 0.0
    for size, count in classes:
        p = -math.expm1(-size / rate)
        # The normal approximation behind the tolerance needs enough expected samples.
        assert count * p >= 50, f"workload class {size}x{count} is too rare at rate {rate}"
        bytes_truth += size * count
        objects_truth += count
        bytes_var += count * size * size * (1 - p) / p
        objects_var += count * (1 - p) / p
    # Values are rounded per stack when written: allow a few units for that.
    return (bytes_truth, SIGMAS * math.sqrt(bytes_var) + 64,
            objects_truth, SIGMAS * math.sqrt(objects_var) + 4)


def check_sites(profile, manifest, rate):
    assert [t for t, _ in profile.sample_types] == ["alloc_objects", "alloc_space"]
    space = profile.totals_by_function(1)
    objects = profile.totals_by_function(0)
    problems = []
    for site, classes in manifest.items():
        b_truth, b_tol, o_truth, o_tol = expected_with_tolerance(classes, rate)
        b_got, o_got = space.get(site, 0), objects.get(site, 0)
        if abs(b_got - b_truth) > b_tol:
            problems.append(f"{site}: alloc_space {b_got} vs truth {b_truth:.0f} "
                            f"(tolerance {b_tol:.0f})")
        if abs(o_got - o_truth) > o_tol:
            problems.append(f"{site}: alloc_objects {o_got} vs truth {o_truth:.0f} "
                            f"(tolerance {o_tol:.0f})")
    assert not problems, "\n".join(problems)


def go_pprof(args, tmp):
    # Go 1.24 and later build `go tool pprof` on first use into GOCACHE: one cache under the
    # build directory serves every test (a fresh one per test rebuilds pprof each time) and
    # leaves the user's own cache alone.
    env = dict(os.environ, HOME=tmp, GOCACHE=os.path.join(BUILD, "gocache"),
               PPROF_TMPDIR=tmp, GOFLAGS="")
    result = run(["go", "tool", "pprof"] + args, env=env, timeout=180)
    assert result.returncode == 0, f"go tool pprof failed: {result.stderr}"
    return result.stdout


def check_reach_main(profile, sites, fraction=0.99, roots=("main", "start_thread")):
    """Whole stacks: of each site's alloc_space, at least fraction comes from samples whose stack
    reaches main (or a thread's entry), not a cut-off frame."""
    for site in sites:
        total = complete = 0
        for sample in profile.samples:
            names = profile.stack_functions(sample)
            if site in names:
                total += sample["values"][1]
                if any(n in roots or n.endswith("::main") for n in names):
                    complete += sample["values"][1]
        assert total > 0, f"{site}: no samples"
        assert complete >= fraction * total, \
            f"{site}: {complete} of {total} bytes from stacks that reach main"



def short_build_id(path):
    """The service_version the agent and the capture give a process of executable path when
    nothing else names its version: the first 12 hex digits of its GNU build id."""
    out = subprocess.run(["readelf", "-n", path], capture_output=True, text=True).stdout
    match = re.search(r"Build ID: ([0-9a-f]+)", out)
    assert match, f"{path} has no GNU build id"
    return match.group(1)[:12]
