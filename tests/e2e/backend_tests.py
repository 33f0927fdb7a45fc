"""End-to-end tests against a real profile server: Parca v0.28.0, built from its published Go
module by scripts/backends (pinned in tests/backends/parca/go.mod) and started on loopback
with `scripts/backends run parca`. The agent profiles workloads with known totals and pushes
to it; the tests then read back what the server stored through its own query API (the
QueryService's HTTP gateway under /api/profiles/), the way a user's UI would, and compare it
with what the same agent wrote to its directory sink and with the workloads' manifests.

Grafana Pyroscope has no test here: its module is not served to this project's machines (see
scripts/backends); pyroscope_tests.py runs the agent against a stand-in with its rules
instead. A server that is not built is a failure that says how to build it, never
a skip."""
import base64
import datetime
import gzip
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from agent_tests import Agent, merged_totals, profiles_of
from helpers import (ALLOC_SITES, BUILD, MALLOC_LOOP, RATE, RATE_ARG, ROOT, Workload,
                     check_sites, expected_with_tolerance, parse_manifest, run, test)
from pprof_reader import Profile

BACKENDS = os.path.join(ROOT, "scripts", "backends")
STACK_FANOUT = os.path.join(BUILD, "workloads", "stack_fanout")
ALLOC_SPACE = "memory:alloc_space:bytes:space:bytes:delta"
ALLOC_OBJECTS = "memory:alloc_objects:count:space:bytes:delta"


class Server:
    """A real server started by scripts/backends run NAME, stopped with SIGTERM."""

    def __init__(self, name, env=None):
        self.name = name
        self.proc = subprocess.Popen([BACKENDS, "run", name], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        match = re.match(rf"{name} ready at (http://127\.0\.0\.1:(\d+)) ", line)
        if not match:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"no real {name} server: {line}{err.strip()}")
        self.url, self.port = match.group(1), int(match.group(2))

    def stop(self):
        """SIGTERM; returns the script's exit status (0: stopped cleanly)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} did not stop on SIGTERM")
        return self.proc.returncode

    def get(self, path, **params):
        """GET {url}/api{path}?params as JSON; an HTTP error fails with the server's body."""
        query = urllib.parse.urlencode(params, doseq=True)
        url = f"{self.url}/api{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"GET {url}: HTTP {e.code}: {e.read()[:500]!r}") from None


def rfc3339(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


class Window:
    """The time range a test's profiles lie in, with a margin either side."""

    def __init__(self):
        self.start = time.time() - 60

    def params(self, prefix=""):
        return {f"{prefix}start": rfc3339(self.start), f"{prefix}end": rfc3339(time.time() + 60)}


def merged(server, window, selector, tmp, profile_type=ALLOC_SPACE):
    """The server's merge of every profile matching selector, as a Profile (or None when
    nothing matches)."""
    params = {"mode": "MODE_MERGE", "reportType": "REPORT_TYPE_PPROF",
              "merge.query": f"{profile_type}{selector}"}
    params.update(window.params("merge."))
    try:
        body = server.get("/profiles/query", **params)
    except AssertionError as e:
        if "no profiles" in str(e).lower() or "not found" in str(e).lower():
            return None
        raise
    raw = base64.b64decode(body.get("pprof", ""))
    if not raw:
        return None
    path = os.path.join(tmp, f"merged-{time.monotonic_ns()}.pb.gz")
    with open(path, "wb") as f:
        f.write(raw if raw[:2] == b"\x1f\x8b" else gzip.compress(raw))
    return Profile(path)


def total(profile, index=0):
    return sum(s["values"][index] for s in profile.samples) if profile else 0


def wait_merged_total(server, window, selector, tmp, want, profile_type=ALLOC_SPACE,
                      timeout=30):
    """Polls the merge until its total reaches want (ingestion is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        profile = merged(server, window, selector, tmp, profile_type)
        if total(profile) >= want or time.monotonic() > deadline:
            return profile
        time.sleep(0.5)


def config(sink_dir, server_url, rules, interval="1s", rate=RATE_ARG, extra_sink="",
           sampling=""):
    return f"""
sampling:
  rate: {rate}
{sampling}targets:
  include:
{rules}
profiles:
  interval: {interval}
  labels:
    env: e2e
    team: memory
sinks:
  - type: directory
    path: {sink_dir}
  - type: parca
    url: {server_url}
    max_backoff: 1s
{extra_sink}
metrics:
  listen: 127.0.0.1:0
log:
  level: debug
symbolize:
  debuginfod_urls: ""
"""


def rule(executable, service):
    return f"    - executable: {executable}\n      service: {service}\n"


def wait_pushed(agent, timeout=60):
    """Waits until the parca sink has delivered every profile the agent built."""
    built = agent.metric("allocscope_profiles_built_total")
    deadline = time.monotonic() + timeout
    while True:
        written = agent.metric("allocscope_sink_profiles_written_total", sink="parca")
        if written == built:
            return built
        if time.monotonic() > deadline:
            rejected = agent.metric("allocscope_sink_profiles_rejected_total", sink="parca")
            refusals = re.findall(r"parca sink: .*", agent.log())
            raise AssertionError(f"parca took {written} of {built} profiles ({rejected} "
                                 f"rejected):\n" + "\n".join(refusals[-5:]))
        time.sleep(0.2)


def sink_total(paths, index=1):
    """Bytes (index 1) or objects (0) the directory sink's profiles hold together."""
    return sum(sum(s["values"][index] for s in Profile(p).samples) for p in paths)


def check_equal_totals(server_profile, sink_paths, index_sink, what):
    """The server's per-function totals are the directory sink's, to the unit."""
    mine = merged_totals(sink_paths, index_sink)
    theirs = server_profile.totals_by_function(0) if server_profile else {}
    problems = [f"{name}: server {theirs.get(name, 0)}, directory sink {value}"
                for name, value in sorted(mine.items())
                if abs(theirs.get(name, 0) - value) > len(sink_paths)]
    problems += [f"{name}: server {value}, not in the directory sink"
                 for name, value in theirs.items() if name not in mine]
    assert not problems, f"{what}:\n" + "\n".join(problems[:20])


# ---------------------------------------------------------------------------------------------

@test
def parca_stores_types_totals_and_labels(tmp):
    """Two services pushed for a few intervals: Parca lists the allocation types and every
    label, its merged profile has the directory sink's totals (and the truth's, within
    sampling tolerance), and each label value filters to its slice."""
    server = Server("parca")
    sinks = os.path.join(tmp, "profiles")
    agent = Agent(tmp, config(sinks, server.url, rule(ALLOC_SITES, "sites") +
                              rule(MALLOC_LOOP, "loop"),
                              sampling="  stack_copy_size: 4KiB\n  ringbuf_size: 256MiB\n"))
    window = Window()
    try:
        sites = Workload([ALLOC_SITES])
        loop = Workload([MALLOC_LOOP, "--size", "3000", "--iterations", "20000"])
        agent.wait_attached(sites.pid, "sites")
        agent.wait_attached(loop.pid, "loop")
        sites.start()
        loop.start()
        manifest = parse_manifest(sites.finish())
        loop.finish()
        agent.wait_all_exited_and_flushed()
        wait_pushed(agent)
        assert agent.metric("allocscope_samples_dropped_total", reason="ringbuf_full") == 0
        assert agent.stop() == 0
    finally:
        agent.kill()
    try:
        site_paths, loop_paths = profiles_of(sinks, "sites"), profiles_of(sinks, "loop")
        assert site_paths and loop_paths, os.listdir(sinks)
        print(f"     {len(site_paths)} + {len(loop_paths)} interval profiles")
        want = sink_total(site_paths)

        # Both allocation types, as delta profiles of the `memory` profile.
        types = server.get("/profiles/types", **window.params())["types"]
        names = {(t["name"], t["sampleType"], t["sampleUnit"], t["periodType"],
                  t["periodUnit"], t.get("delta", False)) for t in types}
        assert ("memory", "alloc_space", "bytes", "space", "bytes", True) in names, types
        assert ("memory", "alloc_objects", "count", "space", "bytes", True) in names, types

        # Every label the agent sends is listed, with its values.
        labels = server.get("/profiles/labels", **window.params())["labelNames"]
        for name in ("service_name", "hostname", "env", "team"):
            assert name in labels, f"label {name} not listed: {labels}"
        values = server.get("/profiles/labels/service_name/values",
                            **window.params())["labelValues"]
        assert sorted(values) == ["loop", "sites"], values
        assert server.get("/profiles/labels/hostname/values", **window.params())[
            "labelValues"] == [socket.gethostname()]

        # The merged profile of one service: the directory sink's totals, the truth's.
        sites_space = wait_merged_total(server, window, '{service_name="sites"}', tmp, want)
        check_equal_totals(sites_space, site_paths, 1, "sites, alloc_space")
        sites_objects = merged(server, window, '{service_name="sites"}', tmp, ALLOC_OBJECTS)
        check_equal_totals(sites_objects, site_paths, 0, "sites, alloc_objects")
        for site in manifest:
            assert site in sites_space.totals_by_function(0), f"{site} not in Parca's merge"

        class Both:  # check_sites reads objects as index 0 and bytes as index 1
            sample_types = [("alloc_objects", "count"), ("alloc_space", "bytes")]

            def totals_by_function(self, index):
                return (sites_objects if index == 0 else sites_space).totals_by_function(0)
        check_sites(Both(), manifest, RATE)

        # Each label filters: one service's slice only; a value nobody sent, nothing.
        loop_space = merged(server, window, '{service_name="loop"}', tmp)
        check_equal_totals(loop_space, loop_paths, 1, "loop, alloc_space")
        assert not any(n.startswith("site_") for n in loop_space.totals_by_function(0))
        everything = total(merged(server, window, "{}", tmp))
        assert everything == total(sites_space) + total(loop_space)
        for label, value in (("hostname", socket.gethostname()), ("env", "e2e"),
                             ("team", "memory")):
            assert total(merged(server, window, f'{{{label}="{value}"}}', tmp)) == everything
            assert total(merged(server, window, f'{{{label}="x{value}"}}', tmp)) == 0
        both = merged(server, window, '{service_name="loop",env="e2e"}', tmp)
        assert total(both) == total(loop_space)
    finally:
        assert server.stop() == 0, "scripts/backends run parca did not stop cleanly"


class TcpProxy:
    """A loopback port forwarding to the server, turned on and off to play an outage
    without losing what the server stored."""

    def __init__(self, target_port):
        self.target = target_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.listener = None
        self.conns = []

    def up(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(16)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def down(self):
        if self.listener:
            self.listener.close()
            self.listener = None
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.conns = []


@test
def parca_outage_and_restart_keep_every_interval_once(tmp):
    """The endpoint down, the agent stopped with profiles in its spool and started again:
    once the endpoint is back, Parca holds every interval the directory sink wrote, each
    once (same timestamps, same totals: no gap, no double count)."""
    server = Server("parca")
    proxy = TcpProxy(server.port)
    spool = os.path.join(tmp, "spool")
    sinks = os.path.join(tmp, "profiles")
    text = config(sinks, f"http://127.0.0.1:{proxy.port}", rule(MALLOC_LOOP, "loop"),
                  rate="256KiB", extra_sink=f"    spool_dir: {spool}\n")
    window = Window()
    try:
        agent = Agent(tmp, text)
        try:
            loop = Workload([MALLOC_LOOP, "--size", "3000", "--iterations", "1000000000000"])
            agent.wait_attached(loop.pid, "loop")
            loop.start()
            agent.wait_metric("allocscope_sink_spool_profiles", lambda v: v >= 3, timeout=30,
                              sink="parca")
            loop.kill()
            agent.wait_all_exited_and_flushed()
            assert agent.stop() == 0
        finally:
            agent.kill()
        left = [p for p in os.listdir(spool) if p.endswith(".spool")]
        assert len(left) >= 3, left
        proxy.up()
        agent = Agent(tmp, text)
        try:
            agent.wait_metric("allocscope_sink_profiles_written_total",
                              lambda v: v >= len(left), timeout=60, sink="parca")
            assert agent.stop() == 0
        finally:
            agent.kill()
        paths = profiles_of(sinks, "loop")
        assert len(paths) == len(left), f"{len(paths)} intervals written, {len(left)} spooled"
        want = sink_total(paths)
        got = wait_merged_total(server, window, '{service_name="loop"}', tmp, want)
        check_equal_totals(got, paths, 1, "after the outage")
        # One point per interval: Parca's range query, at 1 s steps, has each profile's
        # timestamp once and nothing else.
        params = {"query": f'{ALLOC_SPACE}{{service_name="loop"}}', "step": "1s"}
        params.update(window.params())
        body = server.get("/profiles/query_range", **params)
        points = [p for one in body.get("series", []) for p in one.get("samples", [])]
        theirs = sorted(p["timestamp"][:19] for p in points)
        mine = sorted(rfc3339(Profile(p).time_nanos / 1e9)[:19] for p in paths)
        assert theirs == mine, f"server {theirs}\nsink {mine}\n{json.dumps(body)[:2000]}"
    finally:
        proxy.down()
        assert server.stop() == 0


@test
def parca_takes_a_busy_service_with_many_stacks(tmp):
    """98,304 (pid, stack) pairs in one service's interval (24 processes x 4,096 stacks),
    more than 16,000 and more than 2 MiB of pprof before any trimming: the server takes every
    profile and its totals are the directory sink's and the truth's."""
    server = Server("parca")
    sinks = os.path.join(tmp, "profiles")
    workers = 24
    # 64 KiB allocations at a 4 KiB rate: every stack of every worker is sampled. Frame
    # pointers and a small stack copy let the ring buffer hold the burst.
    agent = Agent(tmp, config(sinks, server.url, rule(STACK_FANOUT, "busy"), interval="10s",
                              rate="4KiB", sampling="  unwind: fp\n  stack_copy_size: 1KiB\n"
                                                    "  ringbuf_size: 256MiB\n"))
    window = Window()
    try:
        try:
            workload = Workload([STACK_FANOUT, "--workers", str(workers), "--round-ms", "3000"])
            agent.wait_attached(workload.pid, "busy")
            workload.start()  # forks the workers; the second signal lets them allocate
            agent.wait_metric("allocscope_processes", lambda v: v == workers + 1, timeout=60,
                              state="attached")
            workload.start()
            manifest = parse_manifest(workload.finish())
            agent.wait_all_exited_and_flushed(timeout=60)
            wait_pushed(agent, timeout=120)
            assert agent.metric("allocscope_samples_dropped_total",
                                reason="ringbuf_full") == 0
            assert agent.stop() == 0
        finally:
            agent.kill()
        paths = profiles_of(sinks, "busy")
        biggest = max(paths, key=lambda p: len(Profile(p).samples))
        with open(biggest, "rb") as f:
            raw_size = len(gzip.decompress(f.read()))
        # The directory sink keeps one sample per (pid, stack).
        pairs = len(Profile(biggest).samples)
        print(f"     biggest interval: {pairs} samples, {raw_size} bytes of pprof")
        b_truth, b_tol, _, _ = expected_with_tolerance(manifest["fan_leaf"], 4096)
        got = wait_merged_total(server, window, '{service_name="busy"}', tmp, b_truth - b_tol,
                                timeout=60)
        check_equal_totals(got, paths, 1, "busy service, alloc_space")
        leaf = got.totals_by_function(0).get("fan_leaf", 0)
        assert abs(leaf - b_truth) <= b_tol, f"fan_leaf {leaf}, truth {b_truth}"
        stacks = {tuple(got.stack_functions(s)) for s in got.samples}
        assert len(stacks) >= 4096, f"{len(stacks)} distinct stacks in the server's merge"
        # The premise: the workload does make a profile past Pyroscope's default limits.
        assert pairs > 16000 and raw_size > 2 * 1024 * 1024, (pairs, raw_size)
    finally:
        assert server.stop() == 0


@test
def parca_names_frames_without_symbols(tmp):
    """A stripped executable: its frames keep their bytes under a name that says what they
    are (file+offset), never an empty name."""
    server = Server("parca")
    stripped = os.path.join(tmp, "alloc_sites_stripped")
    result = run(["strip", "--strip-all", "-o", stripped, ALLOC_SITES])
    assert result.returncode == 0, result.stderr
    sinks = os.path.join(tmp, "profiles")
    agent = Agent(tmp, config(sinks, server.url, rule(stripped, "stripped"),
                              sampling="  stack_copy_size: 4KiB\n  ringbuf_size: 256MiB\n"))
    window = Window()
    try:
        try:
            workload = Workload([stripped])
            agent.wait_attached(workload.pid, "stripped")
            workload.start()
            workload.finish()
            agent.wait_all_exited_and_flushed()
            wait_pushed(agent)
            assert agent.stop() == 0
        finally:
            agent.kill()
        paths = profiles_of(sinks, "stripped")
        sent = sink_total(paths)
        got = wait_merged_total(server, window, '{service_name="stripped"}', tmp, sent)
        assert total(got) == sent, f"server {total(got)}, directory sink {sent}"
        unnamed = 0
        unnamed_where = set()
        exe_names = {}
        through_exe = 0
        for sample in got.samples:
            blank = in_exe = False
            for loc_id in sample["locations"]:
                loc = got.locations[loc_id - 1]
                names = [n for n in loc["functions"] if n]
                mapping = got.mappings[loc["mapping_id"] - 1] if loc.get("mapping_id") else {}
                if not names:
                    blank = True
                    unnamed_where.add(f"{loc['address']:#x} in {mapping.get('filename')}")
                if mapping.get("filename", "").endswith("alloc_sites_stripped"):
                    in_exe = True
                    for name in names:
                        exe_names[name] = exe_names.get(name, 0) + sample["values"][0]
            unnamed += sample["values"][0] if blank else 0
            through_exe += sample["values"][0] if in_exe else 0
        assert unnamed == 0, f"{unnamed} of {sent} bytes have a frame with no name, " \
                             f"e.g. {sorted(unnamed_where)[:3]}"
        bad = [n for n in exe_names if not re.fullmatch(r"alloc_sites_stripped\+0x[0-9a-f]+", n)]
        assert exe_names and not bad, f"names of the stripped executable's frames: {bad}"
        # Every allocation came from the executable's code: all the bytes pass through it.
        assert through_exe == sent, f"{through_exe} of {sent} bytes under the executable"
    finally:
        assert server.stop() == 0


@test
def backends_script_says_how_to_build_a_missing_server(tmp):
    """No binary in the cache: `run` fails at once, naming the command that builds it; a
    server that cannot be built here says why."""
    env = dict(os.environ, ALLOCSCOPE_BACKENDS_CACHE=os.path.join(tmp, "empty-cache"))
    result = run([BACKENDS, "run", "parca"], env=env, timeout=30)
    assert result.returncode != 0
    assert "run scripts/backends build parca" in result.stderr, result.stderr
    result = run([BACKENDS, "run", "pyroscope"], env=env, timeout=30)
    assert result.returncode != 0 and "pyroscope" in result.stderr, result.stderr
    assert not os.path.exists(os.path.join(tmp, "empty-cache", "bin"))
