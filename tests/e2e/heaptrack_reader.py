"""An exact reference for the end-to-end tests: heaptrack's raw data file (heaptrack 1.x, the
'.zst' or '.gz' it writes), read line by line into per-function inclusive totals.

heaptrack records every call to an allocation function with its whole backtrace (unwound with
libunwind, symbolized with libbacktrace). heaptrack_print has no per-function byte totals, so
the file is read here; its records are, all numbers in hex:

    s LEN STRING            string table, 1-based
    i IP MODULE [FUNCTION [FILE LINE] ...]   instruction pointer, 1-based; inlined frames after
                                             the first; FUNCTION, FILE, MODULE are string indices
    t IP PARENT             backtrace node, 1-based (0: the root); IP indexes the 'i' records
    a SIZE TRACE            allocation info, 0-based
    + INFO                  one allocation of that info ('-' frees, ignored here)

`check_against_flamegraph` cross-checks this reading with heaptrack_print's own flame-graph
output (allocation counts per stack), so a change of format fails loudly instead of skewing."""
import collections
import gzip
import subprocess


def _decompress(path):
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] == b"\x1f\x8b":
        with gzip.open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    if magic == b"\x28\xb5\x2f\xfd":
        result = subprocess.run(["zstd", "-dc", path], capture_output=True, check=True)
        return result.stdout.decode("utf-8", "replace")
    return open(path, encoding="utf-8", errors="replace").read()


class HeaptrackData:
    def __init__(self, path):
        strings = [""]
        self.ips = [None]        # (module, [function names, outermost first])
        traces = [(0, 0)]        # (ip index, parent trace)
        infos = []               # (size, trace)
        allocations = collections.Counter()
        for line in _decompress(path).splitlines():
            kind = line[:1]
            if kind == "s":
                parts = line.split(" ", 2)
                strings.append(parts[2] if len(parts) == 3 else "")
            elif kind == "i":
                fields = [int(x, 16) for x in line.split()[1:]]
                frames = fields[2::3]
                self.ips.append((strings[fields[1]], [strings[f] for f in frames]))
            elif kind == "t":
                ip, parent = line.split()[1:3]
                traces.append((int(ip, 16), int(parent, 16)))
            elif kind == "a":
                size, trace = line.split()[1:3]
                infos.append((int(size, 16), int(trace, 16)))
            elif kind == "+":
                allocations[int(line.split()[1], 16)] += 1
        assert infos and allocations, f"{path}: no allocations in heaptrack's data"
        self.strings = strings
        self.traces = traces
        # [(size, count, trace)], one entry per allocation info that was used.
        self.allocations = [(infos[i][0], n, infos[i][1]) for i, n in allocations.items()]

    def frames(self, trace):
        """[(module, function or hex address)] of a backtrace, innermost first (inlined frames
        expanded); frames without a name are named by their address, as heaptrack_print does."""
        out = []
        while trace:
            ip_index, trace = self.traces[trace]
            module, names = self.ips[ip_index]
            out.extend((module, name) for name in reversed(names) if name)
            if not any(names):
                out.append((module, None))
        return out

    def per_function(self, modules, weigh):
        """{function: accumulated weigh(size, count)} over the allocations whose backtrace holds
        the function (each allocation counted once per function: inclusive totals), for named
        functions of the given modules."""
        cache = {}
        totals = collections.defaultdict(lambda: None)
        for size, count, trace in self.allocations:
            if trace not in cache:
                cache[trace] = {name for module, name in self.frames(trace)
                                if name and module in modules}
            value = weigh(size, count)
            for name in cache[trace]:
                old = totals[name]
                totals[name] = value if old is None else tuple(a + b for a, b in zip(old, value))
        return dict(totals)

    def fraction_reaching(self, roots):
        """Share of all allocated bytes whose backtrace holds one of the functions in roots."""
        total = reached = 0
        for size, count, trace in self.allocations:
            total += size * count
            if any(name in roots for _, name in self.frames(trace)):
                reached += size * count
        return reached / total if total else 0.0


def check_against_flamegraph(data, path, tmp_stacks):
    """heaptrack_print's flame graph (allocations per stack, root first, 'name (file)') and this
    reader must count the same allocations under each named function."""
    result = subprocess.run(["heaptrack_print", "-f", path, "-F", tmp_stacks,
                             "--flamegraph-cost-type", "allocations"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"heaptrack_print failed: {result.stderr}"
    theirs = collections.Counter()
    with open(tmp_stacks, encoding="utf-8", errors="replace") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            names = {frame.split(" (")[0] for frame in stack.rstrip(";").split(";")}
            for name in names:
                if name and not name.startswith("0x"):
                    theirs[name] += int(count)
    ours = collections.Counter()
    for size, count, trace in data.allocations:
        for name in {name for _, name in data.frames(trace) if name}:
            ours[name] += count
    differ = {n: (ours[n], theirs[n]) for n in set(ours) | set(theirs) if ours[n] != theirs[n]}
    assert not differ, f"heaptrack data read wrongly (ours, heaptrack_print's): {differ}"
