#!/usr/bin/env python3
"""`make bench`: what allocscope costs a process, per allocation call.

A tight malloc/free loop (build/workloads/malloc_loop) reports ns per iteration. It runs:
  - with nothing attached;
  - under an empty uprobe on the instruction allocscope probes (the floor: the trap alone);
  - under allocscope at the default sample rate (the countdown path);
  - under allocscope sampling every allocation (--sample-rate 1: the sampled path);
and, to show what placement is worth, an empty uprobe on aligned_alloc's first instruction
(a cmpb the kernel must single-step) against one on the instruction allocscope moves to.
In-use on the transparent path (--inuse, session uprobes): the allocation side with and
without --inuse in a loop that never frees (non-sampled calls must not pay a return trap:
the two agree), and the free probe's cost per free (malloc+free with and without --inuse,
against an empty uprobe on free, the trap alone).

Each figure is the median of several runs. Run as root; paste the table into
docs/performance.md with the machine it ran on.
"""
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("BUILD", os.path.join(ROOT, "build"))
ALLOCSCOPE = os.path.join(BUILD, "allocscope")
LOOP = os.path.join(BUILD, "workloads", "malloc_loop")
SYSCALL_LOOP = os.path.join(BUILD, "workloads", "syscall_loop")
EMPTY_PROBE = os.path.join(BUILD, "bench", "empty_probe")
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
PROBED_ITERATIONS = int(os.environ.get("BENCH_ITERATIONS", "200000"))


def load_segments(path):
    out = subprocess.run(["readelf", "-lW", path], capture_output=True, text=True).stdout
    segs = []
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == "LOAD":
            segs.append((int(parts[1], 16), int(parts[2], 16), int(parts[4], 16)))
    return segs  # (file offset, vaddr, file size)


def function_offset(path, name):
    """File offset of a function's entry, as uprobes want it."""
    out = subprocess.run(["readelf", "-Ws", "--dyn-syms", path], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[3] == "FUNC" and parts[7].split("@")[0] == name:
            vaddr = int(parts[1], 16)
            for off, va, size in load_segments(path):
                if va <= vaddr < va + size:
                    return vaddr - va + off
    raise SystemExit(f"bench: {name} not found in {path}")


def placements(env=None, args=()):
    """{function: probe offset} from allocscope's debug table for `true` (run with env: with
    LD_PRELOAD naming another allocator, that allocator's table; args: with --inuse, the
    frees too)."""
    tmp = "/tmp/allocscope-bench-placement.pb.gz"
    out = subprocess.run([ALLOCSCOPE, "--log-level", "debug", *args, "-o", tmp, "--", "true"],
                         capture_output=True, text=True, env=env).stderr
    if os.path.exists(tmp):
        os.unlink(tmp)
    offsets = {}
    for line in out.splitlines():
        # "    NAMES   KIND   +OFFSET  INSTRUCTION  emulated|single-stepped..."
        fields = line.split()
        offset = next((f for f in fields[1:4] if re.fullmatch(r"\+\d+", f)), None)
        if line.startswith("    ") and fields and offset:
            for name in fields[0].split("/"):
                offsets[name] = int(offset[1:])
    if "malloc" not in offsets:
        raise SystemExit(f"bench: cannot read allocscope's probe placement:\n{out}")
    return offsets


def run_loop(extra_args, attach=None, iterations=PROBED_ITERATIONS, env=None):
    """Starts the loop waiting, attaches with attach(pid) -> (process, ready marker), runs."""
    loop = subprocess.Popen([LOOP, "--wait", "--iterations", str(iterations)] + extra_args,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert loop.stdout.readline().startswith("ready")
    tool = None
    try:
        if attach:
            tool, marker, stream = attach(loop.pid)
            while True:
                line = getattr(tool, stream).readline()
                if not line:
                    raise SystemExit(f"bench: attaching failed: {tool.communicate()}")
                if marker in line:
                    break
        os.kill(loop.pid, signal.SIGUSR1)
        out, _ = loop.communicate(timeout=600)
    finally:
        if tool:
            if tool.stdin:
                tool.stdin.close()  # empty_probe detaches when its stdin closes
                tool.wait(timeout=60)
            else:
                if tool.poll() is None:
                    tool.send_signal(signal.SIGINT)
                tool.communicate(timeout=60)
        if loop.poll() is None:
            loop.kill()
    return float(re.search(r"ns_per_call ([\d.]+)", out).group(1))


def empty_probe_at(file_offset, path=LIBC):
    def attach(pid):
        proc = subprocess.Popen([EMPTY_PROBE, str(pid), path, str(file_offset)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return proc, "attached", "stdout"
    return attach


def allocscope_with(args):
    def attach(pid):
        proc = subprocess.Popen([ALLOCSCOPE, "--pid", str(pid), "-o",
                                 "/tmp/allocscope-bench.pb.gz"] + args,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return proc, "sampling every", "stderr"
    return attach


def bpftrace_stacks(pid):
    """What users reach for without a sampling profiler: a stack and a sum on every call."""
    # BEGIN runs once every probe is attached.
    prog = (f"uprobe:{LIBC}:malloc {{ @bytes[ustack] = sum(arg0); }} "
            'BEGIN { printf("ready\\n"); }')
    proc = subprocess.Popen(["bpftrace", "-p", str(pid), "-e", prog], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    return proc, "ready", "stdout"


def agent_cpu(iterations, extra):
    """(agent CPU seconds, samples) for a capture of malloc_loop under allocscope, as the
    summary reports it (the agent's own rusage; the command's CPU is not in it)."""
    cmd = [ALLOCSCOPE, "--sample-rate", "64", "--ringbuf-size", "64MiB", "-o",
           "/tmp/allocscope-bench-agent.pb.gz"] + extra + \
          ["--", LOOP, "--iterations", str(iterations), "--size", "64"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    m = re.search(r"(\d+) samples from .*agent CPU (\d+) ms", out)
    return int(m.group(2)) / 1e3, int(m.group(1))


def agent_cost():
    """The agent's own CPU per sample: the marginal cost between a short and a long capture
    (warm: files parsed, stacks seen), and the fixed cost of the short one (cold)."""
    print("\nagent CPU per sample (user + system, allocscope process):")
    for extra, name in (([], "auto (the kernel walks CFI tables; symbolize)"),
                        (["--unwind", "fp"], "fp")):
        small = min((agent_cpu(20000, extra) for _ in range(REPEATS)), key=lambda r: r[0])
        large = min((agent_cpu(200000, extra) for _ in range(REPEATS)), key=lambda r: r[0])
        warm = (large[0] - small[0]) / max(1, large[1] - small[1])
        print(f"  {name}: warm {warm * 1e6:,.1f} us per sample; a capture of "
              f"{small[1]} samples took {small[0] * 1e3:,.0f} ms in all (cold start included)")
        share = 2048 * warm * 100
        print(f"    -> 1 GiB/s at the default 512KiB rate = 2048 samples/s = {share:.1f}% "
              f"of one core")


def median_of(fn):
    return statistics.median(fn() for _ in range(REPEATS))


def main():
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (sudo make bench): it attaches uprobes")
    offsets = placements()
    malloc_entry = function_offset(LIBC, "malloc")
    memalign_entry = function_offset(LIBC, "aligned_alloc")
    rows = []

    def syscall_cost():
        out = subprocess.run([SYSCALL_LOOP], capture_output=True, text=True).stdout
        return float(re.search(r"ns_per_call ([\d.]+)", out).group(1))

    rows.append(("getppid() syscall (this machine's kernel entry cost)",
                 median_of(syscall_cost), None))
    base = median_of(lambda: run_loop([], iterations=20000000))
    rows.append(("malloc+free, nothing attached", base, None))
    floor = median_of(lambda: run_loop([], empty_probe_at(malloc_entry + offsets["malloc"])))
    rows.append((f"empty uprobe at malloc+{offsets['malloc']} (floor)", floor, None))
    scope = median_of(lambda: run_loop([], allocscope_with([])))
    rows.append(("allocscope, default rate 512KiB", scope, scope / floor))
    every = ["--sample-rate", "1", "--ringbuf-size", "256MiB"]
    sampled = median_of(lambda: run_loop([], allocscope_with(every)))
    rows.append(("allocscope, every call sampled, default unwinding (in-kernel CFI walk)", sampled,
                 sampled / floor))
    sampled_fp = median_of(lambda: run_loop([], allocscope_with(every + ["--unwind", "fp"])))
    rows.append(("allocscope, every call sampled, --unwind fp", sampled_fp, sampled_fp / floor))

    # In-use on the transparent path. A non-sampled call under the session program must
    # cost what it costs under alloc_multi: no return trap (a uretprobe on every call would
    # add about one more trap, see the floor). The free probe is a trap on every free.
    nofree = ["--no-free"]
    base_nf = median_of(lambda: run_loop(nofree, iterations=2000000))
    rows.append(("malloc only (--no-free), nothing attached", base_nf, None))
    floor_nf = median_of(lambda: run_loop(nofree, empty_probe_at(malloc_entry +
                                                                 offsets["malloc"])))
    rows.append(("malloc only: empty uprobe at malloc (floor)", floor_nf, None))
    alloc_only = median_of(lambda: run_loop(nofree, allocscope_with([])))
    rows.append(("malloc only: allocscope, default rate", alloc_only, alloc_only / floor_nf))
    alloc_only_inuse = median_of(lambda: run_loop(nofree, allocscope_with(["--inuse"])))
    rows.append(("malloc only: allocscope --inuse (session uprobe, returns of sampled calls "
                 "only)", alloc_only_inuse, alloc_only_inuse / floor_nf))
    free_offsets = placements(args=["--inuse"])
    free_entry = function_offset(LIBC, "free")
    free_trap = median_of(lambda: run_loop([], empty_probe_at(free_entry +
                                                              free_offsets["free"])))
    rows.append((f"malloc+free: empty uprobe at free+{free_offsets['free']} (free probe floor)",
                 free_trap, None))
    inuse = median_of(lambda: run_loop([], allocscope_with(["--inuse"])))
    rows.append(("malloc+free: allocscope --inuse, default rate (a free probe on every free)",
                 inuse, inuse / floor))

    if shutil.which("bpftrace"):
        bt = median_of(lambda: run_loop([], bpftrace_stacks))
        rows.append(("bpftrace: malloc { @[ustack] = sum(arg0) } (every call)", bt, bt / floor))

    stepped = median_of(lambda: run_loop(["--aligned"], empty_probe_at(memalign_entry)))
    rows.append(("aligned_alloc: empty uprobe at +0 (cmpb, single-stepped)", stepped, None))
    moved = median_of(lambda: run_loop(["--aligned"],
                                       empty_probe_at(memalign_entry + offsets["aligned_alloc"])))
    rows.append((f"aligned_alloc: empty uprobe at +{offsets['aligned_alloc']} "
                 "(allocscope's placement)", moved, None))
    scope_aligned = median_of(lambda: run_loop(["--aligned"], allocscope_with([])))
    rows.append(("aligned_alloc: allocscope, default rate", scope_aligned, scope_aligned / moved))

    if os.path.exists(JEMALLOC):
        # Transparent mode on another allocator: jemalloc's malloc starts with a cmp
        # (single-stepped); allocscope probes the ja at +7. The floor is an empty probe there.
        env = dict(os.environ, LD_PRELOAD=JEMALLOC)
        je_offsets = placements(env)
        je_malloc = function_offset(JEMALLOC, "malloc")
        je_base = median_of(lambda: run_loop([], iterations=20000000, env=env))
        rows.append(("jemalloc (preloaded): malloc+free, nothing attached", je_base, None))
        je_stepped = median_of(lambda: run_loop([], empty_probe_at(je_malloc, JEMALLOC),
                                                env=env))
        rows.append(("jemalloc: empty uprobe at malloc+0 (cmp, single-stepped)", je_stepped,
                     None))
        je_floor = median_of(lambda: run_loop(
            [], empty_probe_at(je_malloc + je_offsets["malloc"], JEMALLOC), env=env))
        rows.append((f"jemalloc: empty uprobe at malloc+{je_offsets['malloc']} (floor)",
                     je_floor, None))
        je_scope = median_of(lambda: run_loop([], allocscope_with([]), env=env))
        rows.append(("jemalloc: allocscope, default rate 512KiB", je_scope,
                     je_scope / je_floor))

    print(f"\nmalloc_loop, 64-byte allocations, median of {REPEATS} runs "
          f"({PROBED_ITERATIONS} iterations when probed)\n")
    print("| configuration | ns per call | vs floor |")
    print("|---|---:|---:|")
    for name, ns, ratio in rows:
        print(f"| {name} | {ns:,.1f} | {'' if ratio is None else f'{ratio:.2f}x'} |")
    print(f"\nsampled-path cost in the target: {sampled - scope:,.0f} ns per sampled allocation "
          f"with the default unwinding (in-kernel CFI walk), {sampled_fp - scope:,.0f} ns with --unwind fp "
          f"(every-call-sampled minus default rate)")
    print(f"in-use, transparent path: a non-sampled allocation costs "
          f"{alloc_only_inuse - alloc_only:+,.1f} ns more with --inuse (a return trap on every "
          f"call would add about one trap, {floor_nf - base_nf:,.0f} ns here); the free "
          f"probe costs {inuse - scope:,.0f} ns per free (an empty uprobe on free: "
          f"{free_trap - base:,.0f} ns)")
    agent_cost()
    print(f"single-stepped / emulated placement: {stepped / moved:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
