"""End-to-end tests of the continuous agent (`allocscope --config FILE`): real BPF, real
processes started after the agent, profiles read back from the directory sink, self-metrics
scraped over HTTP, signals sent as systemd would."""
import glob
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

from helpers import (ALLOC_SITES, ALLOCSCOPE, BUILD, MALLOC_LOOP, RATE, RATE_ARG, Workload,
                     check_sites, go_pprof, parse_manifest, run, test, short_build_id)
from pprof_reader import Profile

FORK_WORKERS = os.path.join(BUILD, "workloads", "fork_workers")


class Agent:
    """A running agent: its stderr collected by a thread, its metrics port parsed from the
    log, and helpers to wait for log lines and to scrape /metrics."""

    def __init__(self, tmp, config_text, extra_args=(), preexec=None, wait_ready=True):
        self.config_path = os.path.join(tmp, "allocscope.yaml")
        with open(self.config_path, "w") as f:
            f.write(config_text)
        self.lines = []
        self.cond = threading.Condition()
        argv = list(extra_args) + [ALLOCSCOPE, "--config", self.config_path]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.port = None
        if wait_ready:
            self.wait_for(r"agent ready", timeout=60)
            match = self.find(r"self-metrics on .* \(port (\d+)\)")
            self.port = int(match.group(1)) if match else None

    def _read(self):
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)  # EOF marker
            self.cond.notify_all()

    def log(self):
        with self.cond:
            return "".join(line for line in self.lines if line)

    def find(self, pattern):
        return re.search(pattern, self.log())

    def wait_for(self, pattern, timeout=30, start=0):
        """Waits for a log line matching pattern among lines[start:]; returns the match."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        with self.cond:
            while True:
                for line in self.lines[start:]:
                    if line is None:
                        raise AssertionError(f"agent exited before {pattern!r}:\n"
                                             f"{self.log()}")
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {pattern!r} in the agent's log within "
                                         f"{timeout}s:\n{self.log()}")
                self.cond.wait(remaining)

    def wait_attached(self, pid, service=None, timeout=30):
        """Waits for the debug line the agent logs when pid's probes are in place."""
        self.wait_for(rf"pid {pid} \([^)]*\): \d+ probes on", timeout=timeout)
        if service:
            assert re.search(rf"service {service}: profiling pid", self.log()), self.log()

    def mark(self):
        with self.cond:
            return len(self.lines)

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            assert r.status == 200
            return parse_metrics(r.read().decode())

    def metric(self, name, **labels):
        return self.metrics().get(metric_key(name, labels), None)

    def wait_metric(self, name, predicate, timeout=20, **labels):
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.metric(name, **labels)
            if value is not None and predicate(value):
                return value
            time.sleep(0.2)
        raise AssertionError(f"{name}{labels} stayed {value}:\n{self.log()[-3000:]}")

    def wait_all_exited_and_flushed(self, timeout=30):
        """Waits until no process is attached, then for an interval boundary after that: every
        sample of the exited processes is then in a written profile."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics()
            if m.get('allocscope_processes{state="attached"}') == 0:
                break
            assert time.monotonic() < deadline, f"processes stayed attached:\n{self.log()}"
            time.sleep(0.2)
        intervals = m["allocscope_intervals_total"]
        self.wait_metric("allocscope_intervals_total", lambda v: v > intervals,
                         timeout=max(1, deadline - time.monotonic()))

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"agent did not stop on {sig}:\n{self.log()}")
        self.reader.join(timeout=10)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def metric_key(name, labels):
    if not labels:
        return name
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def parse_metrics(text):
    """{'name{k="v",...}': value} with labels sorted, from the Prometheus text format."""
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        assert match, f"malformed metrics line: {line!r}"
        name, _, inner, value = match.groups()
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', inner or ""))
        values[metric_key(name, labels)] = float(value)
    return values


def agent_config(sink_dir, include="", interval="2s", extra="", rate=RATE_ARG):
    return f"""
sampling:
  rate: {rate}
targets:
{include or "  include: []"}
profiles:
  interval: {interval}
  labels:
    env: e2e
sinks:
  - type: directory
    path: {sink_dir}
metrics:
  listen: 127.0.0.1:0
log:
  level: debug
{extra}
"""


def include_executable(path, service=None):
    rule = f"  include:\n    - executable: {path}\n"
    if service:
        rule += f"      service: {service}\n"
    return rule


def profiles_of(sink_dir, service):
    return sorted(glob.glob(os.path.join(sink_dir, service, "alloc-*.pb.gz")))


def merged_totals(paths, index):
    totals = {}
    for path in paths:
        for name, value in Profile(path).totals_by_function(index).items():
            totals[name] = totals.get(name, 0) + value
    return totals


class MergedProfile:
    """Several interval profiles summed, shaped like Profile for check_sites."""

    def __init__(self, paths):
        self.profiles = [Profile(p) for p in paths]
        self.sample_types = self.profiles[0].sample_types
        self.paths = paths

    def totals_by_function(self, index):
        return merged_totals(self.paths, index)


def sample_labels(profile):
    """The set of (key, value) string labels over every sample of a profile."""
    seen = set()
    for sample in profile.samples:
        for key, value in sample["labels"].items():
            seen.add((key, value))
    return seen


def wait_for_profiles(sink_dir, service, count=1, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        paths = profiles_of(sink_dir, service)
        if len(paths) >= count:
            return paths
        time.sleep(0.2)
    raise AssertionError(f"no profile for {service} in {sink_dir}: "
                         f"{list(os.walk(sink_dir))}")


# ---------------------------------------------------------------------------------------------

@test
def agent_profiles_a_workload_started_after_it(tmp):
    sinks = os.path.join(tmp, "profiles")
    agent = Agent(tmp, agent_config(sinks, include_executable(ALLOC_SITES, "sites")))
    other = Workload([MALLOC_LOOP, "--iterations", "200000"])  # not a target
    try:
        mark = agent.mark()
        started = time.monotonic()
        workload = Workload([ALLOC_SITES])
        agent.wait_attached(workload.pid, "sites")
        print(f"     attached {time.monotonic() - started:.3f}s after start (log seen)")
        agent.wait_metric("allocscope_processes", lambda v: v == 1, state="attached")
        workload.start()
        other.start()
        manifest = parse_manifest(workload.finish())
        other.finish()
        # Its last samples are written at the next interval boundary after its exit.
        agent.wait_all_exited_and_flushed()
        paths = profiles_of(sinks, "sites")
        assert os.listdir(sinks) == ["sites"], os.listdir(sinks)  # nothing from malloc_loop
        merged = MergedProfile(paths)
        check_sites(merged, manifest, RATE)
        for profile in merged.profiles:
            assert profile.period == RATE
            labels = sample_labels(profile)
            assert ("service_name", "sites") in labels, labels
            assert ("hostname", socket.gethostname()) in labels, labels
            assert ("env", "e2e") in labels, labels
            # No rule version, no pod: the version is the executable's short build id.
            assert ("service_version", short_build_id(ALLOC_SITES)) in labels, labels
            keys = {k for k, _ in labels}
            assert keys == {"service_name", "hostname", "env", "service_version"}, keys  # no pid
        assert agent.stop() == 0
    finally:
        agent.kill()
        other.kill()
    # go tool pprof reads what the directory sink wrote.
    out = go_pprof(["-top", "-sample_index=alloc_space", paths[-1]], tmp)
    assert "flat" in out


@test
def agent_follows_forked_workers(tmp):
    sinks = os.path.join(tmp, "profiles")
    # 3 workers allocating 3000 bytes at full speed: a sparser rate keeps the ring from
    # overflowing (drops would be counted, but the totals would not hold).
    agent = Agent(tmp, agent_config(sinks, include_executable(FORK_WORKERS, "prefork"),
                                    interval="1s", rate="256KiB"))
    try:
        workload = Workload([FORK_WORKERS, "--workers", "3"])
        agent.wait_attached(workload.pid, "prefork")
        workload.start()
        manifest = parse_manifest(workload.finish())
        agent.wait_all_exited_and_flushed()
        attaches = agent.metric("allocscope_process_attaches_total")
        assert attaches == 4, f"parent and 3 workers, got {attaches}"
        assert agent.metric("allocscope_samples_dropped_total", reason="ringbuf_full") == 0
        check_sites(MergedProfile(profiles_of(sinks, "prefork")), manifest, 256 * 1024)
        assert agent.stop() == 0
    finally:
        agent.kill()


@test
def agent_follows_exec(tmp):
    """A shell (not a target) that execs the workload becomes a target; a target that execs
    something else stops being one."""
    sinks = os.path.join(tmp, "profiles")
    agent = Agent(tmp, agent_config(sinks, include_executable(MALLOC_LOOP, "loop")))
    try:
        shell = subprocess.Popen(["/bin/sh", "-c", f"sleep 0.5; exec {MALLOC_LOOP} --wait"],
                                 stdout=subprocess.PIPE, text=True)
        assert shell.stdout.readline().startswith("ready")
        agent.wait_attached(shell.pid, "loop")
        agent.wait_metric("allocscope_processes", lambda v: v == 1, state="attached")
        shell.kill()
        shell.wait()
        agent.wait_metric("allocscope_processes", lambda v: v == 0, state="attached")

        # malloc_loop execs /bin/sleep when given --exec-after (a target leaving).
        loop = subprocess.Popen([MALLOC_LOOP, "--wait", "--iterations", "1000",
                                 "--exec", "/bin/sleep", "30"],
                                stdout=subprocess.PIPE, text=True)
        assert loop.stdout.readline().startswith("ready")
        agent.wait_attached(loop.pid, "loop")
        agent.wait_metric("allocscope_processes", lambda v: v == 1, state="attached")
        os.kill(loop.pid, signal.SIGUSR1)
        agent.wait_metric("allocscope_processes", lambda v: v == 0, state="attached")
        assert loop.poll() is None, "the exec'ed process must still run"
        loop.kill()
        loop.wait()
        assert agent.stop() == 0
    finally:
        agent.kill()


@test
def agent_flushes_on_sigterm(tmp):
    sinks = os.path.join(tmp, "profiles")
    agent = Agent(tmp, agent_config(sinks, include_executable(ALLOC_SITES, "sites"),
                                    interval="1h"))
    try:
        workload = Workload([ALLOC_SITES])
        agent.wait_attached(workload.pid, "sites")
        workload.start()
        manifest = parse_manifest(workload.finish())
        assert profiles_of(sinks, "sites") == []
        assert agent.stop(signal.SIGTERM) == 0
        assert "stopping on SIGTERM" in agent.log()
        paths = profiles_of(sinks, "sites")
        assert len(paths) == 1, paths
        check_sites(MergedProfile(paths), manifest, RATE)
    finally:
        agent.kill()


@test
def agent_reloads_on_sighup_and_keeps_config_when_invalid(tmp):
    sinks = os.path.join(tmp, "profiles")
    agent = Agent(tmp, agent_config(sinks, "  include:\n    - process_name: no-such-proc\n"))
    workload = Workload([MALLOC_LOOP])
    try:
        agent.wait_metric("allocscope_processes", lambda v: v == 0, state="attached")
        with open(agent.config_path, "w") as f:
            f.write(agent_config(sinks, include_executable(MALLOC_LOOP, "loop")))
        mark = agent.mark()
        agent.proc.send_signal(signal.SIGHUP)
        agent.wait_for(r"reloaded: profiling 1 processes", start=mark)
        agent.wait_metric("allocscope_processes", lambda v: v == 1, state="attached")
        agent.wait_metric("allocscope_config_reloads_total", lambda v: v == 1, result="success")

        with open(agent.config_path, "w") as f:
            f.write("profiles:\n  interval: soon\n")
        mark = agent.mark()
        agent.proc.send_signal(signal.SIGHUP)
        line = agent.wait_for(r"reload failed, keeping the running configuration: (.*)",
                              start=mark)
        assert "allocscope.yaml:2:13: profiles.interval" in line.group(1), line.group(1)
        agent.wait_metric("allocscope_config_reloads_total", lambda v: v == 1, result="failure")
        agent.wait_metric("allocscope_processes", lambda v: v == 1, state="attached")
        workload.start()
        workload.finish()
        assert agent.stop() == 0
        assert profiles_of(sinks, "loop"), "the running configuration kept profiling"
    finally:
        agent.kill()
        workload.kill()


@test
def agent_keeps_sampling_while_a_reload_reads(tmp):
    """A reload reads and parses the file off the main loop. Here the file is a FIFO that no
    one writes yet (a read that hangs, as on a stuck filesystem): samples are still drained
    and the metrics still published, and the reload finishes once the text arrives. The old
    agent parsed on the main loop, where a 60,000-level file stalled sampling for 12 s."""
    sinks = os.path.join(tmp, "profiles")
    text = agent_config(sinks, include_executable(MALLOC_LOOP, "loop"))
    agent = Agent(tmp, text)
    workload = Workload([MALLOC_LOOP])
    try:
        agent.wait_attached(workload.pid, "loop")
        os.unlink(agent.config_path)
        os.mkfifo(agent.config_path)
        mark = agent.mark()
        agent.proc.send_signal(signal.SIGHUP)
        agent.wait_for(r"reloading ", start=mark)
        before = agent.metric("allocscope_samples_total")
        workload.start()
        agent.wait_metric("allocscope_samples_total", lambda v: v > before)
        with open(agent.config_path, "w") as f:
            f.write(text)
        agent.wait_for(r"reloaded: profiling 1 processes", start=mark)
        workload.finish()
        assert agent.stop() == 0
    finally:
        agent.kill()
        workload.kill()


@test
def agent_stops_while_a_reload_reads(tmp):
    """SIGTERM while a reload is stuck reading its file (a FIFO no one ever writes): the agent
    drops that reload and stops as usual instead of waiting for the read for ever."""
    sinks = os.path.join(tmp, "profiles")
    agent = Agent(tmp, agent_config(sinks, include_executable(MALLOC_LOOP, "loop")))
    try:
        os.unlink(agent.config_path)
        os.mkfifo(agent.config_path)
        mark = agent.mark()
        agent.proc.send_signal(signal.SIGHUP)
        agent.wait_for(r"reloading ", start=mark)
        assert agent.stop(timeout=20) == 0
    finally:
        agent.kill()


@test
def agent_refuses_invalid_configuration(tmp):
    cases = [
        ("sampling:\n  rate: fast\n", "2:9: sampling.rate"),
        ("profiles:\n  intervl: 15s\n", "2:3: profiles.intervl: unknown key"),
        ("targets:\n  include:\n    - service: x\n", "3:7: targets.include"),
        ("sinks: []\n", "sinks"),
        ("sinks:\n  - type: s3\n", "2:11: sinks"),
        ("profiles:\n  labels:\n    service_name: x\n", "3:5: profiles.labels"),
        ("limits:\n  max_processes: 0\n", "2:18: limits.max_processes"),
        ("metrics: [\n", "YAML syntax error"),
    ]
    for text, phrase in cases:
        path = os.path.join(tmp, "bad.yaml")
        with open(path, "w") as f:
            f.write(text)
        result = run([ALLOCSCOPE, "--config", path], timeout=30)
        assert result.returncode == 1, f"{text!r}: exit {result.returncode} {result.stderr}"
        assert f"{path}:" in result.stderr, result.stderr
        assert phrase in result.stderr, f"{phrase!r} not in {result.stderr}"
        checked = run([ALLOCSCOPE, "--config", path, "--check-config"])
        assert checked.returncode == 1 and phrase in checked.stderr, checked.stderr
    missing = run([ALLOCSCOPE, "--config", os.path.join(tmp, "none.yaml")])
    assert missing.returncode == 1 and "none.yaml" in missing.stderr, missing.stderr
    reference = os.path.join(os.path.dirname(ALLOCSCOPE), "..", "config", "allocscope.yaml")
    checked = run([ALLOCSCOPE, "--config", reference, "--check-config"])
    assert checked.returncode == 0, checked.stderr
    assert "configuration is valid" in checked.stdout


@test
def agent_retention_removes_oldest_profiles(tmp):
    sinks = os.path.join(tmp, "profiles")
    os.makedirs(os.path.join(sinks, "sites"))
    old = os.path.join(sinks, "sites", "alloc-20200101T000000Z.pb.gz")
    older = os.path.join(sinks, "sites", "alloc-20190101T000000Z.pb.gz")
    recent_big = [os.path.join(sinks, "sites", f"alloc-{time.strftime('%Y%m%d', time.gmtime())}"
                               f"T00000{i}Z.pb.gz") for i in range(3)]
    unrelated = os.path.join(sinks, "sites", "notes.txt")
    for path in [old, older, unrelated]:
        with open(path, "wb") as f:
            f.write(b"x" * 100)
    for path in recent_big:
        with open(path, "wb") as f:
            f.write(b"x" * 400 * 1024)
    config = agent_config(sinks, include_executable(ALLOC_SITES, "sites"), interval="1s")
    config = config.replace(f"    path: {sinks}\n",
                            f"    path: {sinks}\n    max_total_size: 1MiB\n    max_age: 30d\n")
    agent = Agent(tmp, config)
    try:
        workload = Workload([ALLOC_SITES])
        agent.wait_attached(workload.pid, "sites")
        workload.start()
        workload.finish()
        agent.wait_metric("allocscope_sink_profiles_written_total", lambda v: v >= 1,
                          sink="directory")
        assert agent.stop() == 0
    finally:
        agent.kill()
    assert not os.path.exists(old) and not os.path.exists(older), "older than max_age"
    assert os.path.exists(unrelated), "retention must only remove profiles"
    left = profiles_of(sinks, "sites")
    total = sum(os.path.getsize(p) for p in left)
    assert total <= 1024 * 1024, f"{total} bytes left: {left}"
    assert not os.path.exists(recent_big[0]), "the oldest goes first"
    assert any(p not in recent_big for p in left), "the new profile stays"


@test
def agent_limits_services_and_processes(tmp):
    sinks = os.path.join(tmp, "profiles")
    include = ("  include:\n"
               f"    - executable: {MALLOC_LOOP}\n      service: first\n"
               f"    - executable: {ALLOC_SITES}\n      service: second\n")
    extra = "limits:\n  max_services: 1\n  max_processes: 2\n"
    agent = Agent(tmp, agent_config(sinks, include, interval="1s", extra=extra))
    workloads = []
    try:
        workloads.append(Workload([MALLOC_LOOP, "--iterations", "100000"]))
        agent.wait_attached(workloads[0].pid, "first")
        workloads.append(Workload([ALLOC_SITES]))
        agent.wait_attached(workloads[1].pid, "other")
        agent.wait_metric("allocscope_services_overflowed_total", lambda v: v == 1)
        workloads.append(Workload([MALLOC_LOOP, "--iterations", "100000"]))
        agent.wait_metric("allocscope_processes_not_profiled_total", lambda v: v == 1,
                          reason="over_limit")
        agent.wait_metric("allocscope_processes", lambda v: v == 2, state="attached")
        for w in workloads:
            w.start()
        for w in workloads:
            w.finish()
        agent.wait_metric("allocscope_sink_profiles_written_total", lambda v: v >= 2,
                          sink="directory")
        assert agent.stop() == 0
        assert sorted(os.listdir(sinks)) == ["first", "other"], os.listdir(sinks)
    finally:
        agent.kill()
        for w in workloads:
            w.kill()


@test
def agent_metrics_move_and_healthz_answers(tmp):
    sinks = os.path.join(tmp, "profiles")
    agent = Agent(tmp, agent_config(sinks, include_executable(MALLOC_LOOP, "loop"),
                                    interval="1s", rate="64KiB"))
    try:
        before = agent.metrics()
        assert before['allocscope_build_info{revision="%s",version="%s"}' % (
            re.search(r"\((\w+)\)", run([ALLOCSCOPE, "--version"]).stdout).group(1),
            re.search(r"allocscope (\S+)", run([ALLOCSCOPE, "--version"]).stdout).group(1))] == 1
        assert before["allocscope_samples_total"] == 0
        assert before["allocscope_probe_hits_total"] == 0
        assert before["allocscope_probe_hit_cost_seconds"] > 0
        workload = Workload([MALLOC_LOOP, "--iterations", "100000", "--size", "1000"])
        agent.wait_metric("allocscope_processes", lambda v: v == 1, state="attached")
        assert agent.metric("allocscope_probes") >= 1
        workload.start()
        workload.finish()
        agent.wait_metric("allocscope_processes", lambda v: v == 0, state="attached")
        after = agent.wait_metric("allocscope_sink_profiles_written_total", lambda v: v >= 1,
                                  sink="directory")
        m = agent.metrics()
        # 100000 malloc(1000) calls; the probe counts every call the loop makes.
        assert 100000 <= m["allocscope_probe_hits_total"] <= 100000 + 1000, m
        assert m['allocscope_samples_dropped_total{reason="ringbuf_full"}'] == 0, m
        p = 1 - math.exp(-1000 / (64 * 1024))
        expected, sigma = 100000 * p, (100000 * p * (1 - p)) ** .5
        assert abs(m["allocscope_samples_total"] - expected) < 5 * sigma, \
            (m["allocscope_samples_total"], expected)
        assert m["allocscope_estimated_overhead_seconds_total"] == \
            m["allocscope_probe_hits_total"] * m["allocscope_probe_hit_cost_seconds"] or \
            abs(m["allocscope_estimated_overhead_seconds_total"] -
                m["allocscope_probe_hits_total"] * m["allocscope_probe_hit_cost_seconds"]) < 1e-6
        assert m['allocscope_samples_dropped_total{reason="ringbuf_full"}'] == 0
        assert m["allocscope_process_attaches_total"] == 1
        assert after >= 1 and m['allocscope_sink_bytes_written_total{sink="directory"}'] > 0
        assert m["process_cpu_seconds_total"] > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/healthz", timeout=5) as r:
            assert r.status == 200 and r.read() == b"ok\n"
        assert agent.stop() == 0
    finally:
        agent.kill()


@test
def agent_healthz_answers_past_idle_connections(tmp):
    """64 idle connections and one trickling its request: the probe is still answered (the
    kubelet's 5 s timeout as the bound), and the closed ones are counted."""
    sinks = os.path.join(tmp, "profiles")
    agent = Agent(tmp, agent_config(sinks))
    idle = []
    try:
        idle = [socket.create_connection(("127.0.0.1", agent.port), timeout=5)
                for _ in range(64)]
        idle[-1].send(b"GET /met")
        with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/healthz", timeout=5) as r:
            assert r.status == 200 and r.read() == b"ok\n"
        agent.wait_metric("allocscope_metrics_connections_dropped_total",
                          lambda v: v >= 64 + 1 - 32, reason="limit")
        assert agent.stop() == 0
    finally:
        for conn in idle:
            conn.close()
        agent.kill()


@test
def agent_with_all_processes_never_profiles_itself(tmp):
    """No include rules: every process on the machine with glibc's allocator, except the
    agent; the processes keep running unharmed."""
    sinks = os.path.join(tmp, "profiles")
    canary = Workload([MALLOC_LOOP, "--iterations", "50000"])
    agent = Agent(tmp, agent_config(sinks, interval="1s"))
    try:
        attached = agent.metric("allocscope_processes", state="attached")
        assert attached >= 2, f"expected every glibc process, got {attached}"
        assert not re.search(rf"pid {agent.proc.pid} \(", agent.log()), "profiled itself"
        assert re.search(rf"pid {canary.pid} \(malloc_loop\): \d+ probes", agent.log())
        canary.start()
        canary.finish()
        assert agent.stop() == 0
    finally:
        agent.kill()
        canary.kill()
    assert "malloc_loop" in os.listdir(sinks), os.listdir(sinks)


@test
def agent_runs_with_only_the_units_capabilities(tmp):
    """The systemd unit's capability set suffices, also for a target owned by another user;
    `make install` lays out binary, unit and configuration, and the unit passes
    systemd-analyze verify."""
    prefix = os.path.join(tmp, "prefix")
    destdir = os.path.join(tmp, "dest")
    result = run(["make", "-s", "install", f"PREFIX={prefix}", f"DESTDIR={destdir}"],
                 cwd=os.path.join(os.path.dirname(ALLOCSCOPE), ".."))
    assert result.returncode == 0, result.stderr
    root = destdir + prefix
    binary = os.path.join(root, "bin", "allocscope")
    unit = os.path.join(destdir, "etc", "systemd", "system", "allocscope.service")
    config = os.path.join(destdir, "etc", "allocscope", "allocscope.yaml")
    assert os.access(binary, os.X_OK) and os.path.exists(config)
    assert os.path.exists(os.path.join(root, "lib", "liballocscope-sampler.so"))
    text = open(unit).read()
    assert f"ExecStart={prefix}/bin/allocscope --config /etc/allocscope/allocscope.yaml" in text
    if shutil.which("systemd-analyze"):
        # The unit names the binary under PREFIX; point it at the staged copy to verify.
        staged = os.path.join(tmp, "allocscope.service")
        with open(staged, "w") as f:
            f.write(text.replace(f"{prefix}/bin/allocscope", binary))
        verify = run(["systemd-analyze", "verify", staged])
        assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    caps = re.search(r"^CapabilityBoundingSet=(.*)$", text, re.M).group(1).split()
    # Least privilege: uprobe_multi links attach without CAP_SYS_ADMIN.
    assert "CAP_SYS_ADMIN" not in caps, caps
    bounding = "-all," + ",".join("+" + c[len("CAP_"):].lower() for c in caps)

    sinks = os.path.join(tmp, "profiles")
    os.chmod(tmp, 0o755)
    workload = Workload(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                         MALLOC_LOOP, "--iterations", "100000", "--size", "2000"])
    agent = Agent(tmp, agent_config(sinks, include_executable(MALLOC_LOOP, "nobody-loop"),
                                    interval="1s"),
                  extra_args=["setpriv", f"--bounding-set={bounding}"])
    try:
        agent.wait_metric("allocscope_processes", lambda v: v == 1, state="attached")
        workload.start()
        workload.finish()
        agent.wait_metric("allocscope_sink_profiles_written_total", lambda v: v >= 1,
                          sink="directory")
        assert agent.stop() == 0
    finally:
        agent.kill()
        workload.kill()
    totals = merged_totals(profiles_of(sinks, "nobody-loop"), 1)
    assert totals.get("main", 0) > 100000 * 2000 * 0.8, totals


@test
def agent_handles_hundreds_of_processes_with_bounded_resources(tmp):
    """200 target processes: all attached, descriptors and symbol state reported, and every
    per-process resource given back once they exit."""
    count = 200
    sinks = os.path.join(tmp, "profiles")
    agent = Agent(tmp, agent_config(sinks, include_executable(MALLOC_LOOP, "many"),
                                    interval="1s", extra="limits:\n  max_processes: 1000\n"))
    workloads = []
    try:
        base_fds = agent.metric("process_open_fds")
        started = time.monotonic()
        for _ in range(count):
            workloads.append(Workload([MALLOC_LOOP, "--iterations", "2000"]))
        m = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = agent.metrics()
            if m['allocscope_processes{state="attached"}'] == count:
                break
            time.sleep(0.2)
        print(f"     {count} processes attached {time.monotonic() - started:.1f}s after the "
              f"first started; {m['process_open_fds'] - base_fds:.0f} descriptors, "
              f"{m['process_resident_memory_bytes'] / 2**20:.0f} MiB resident")
        assert m['allocscope_processes{state="attached"}'] == count, m
        probes = m["allocscope_probes"]
        assert probes >= count * 5, probes  # one per glibc entry point (7 on Debian 12)
        # A pidfd per process plus one uprobe_multi link per process, or (kernels without
        # them) a perf event and its BPF link per probe; nothing else grows with them.
        links = m["allocscope_probe_links"]
        assert links in (count, probes), (links, count, probes)
        fds_per_link = 1 if links == count else 2
        assert m["process_open_fds"] - base_fds <= fds_per_link * links + count + 16, m
        assert m["allocscope_symbolizer_processes"] == count, m
        for w in workloads:
            w.start()
        for w in workloads:
            w.finish()
        agent.wait_all_exited_and_flushed(timeout=60)
        agent.wait_metric("allocscope_symbolizer_processes", lambda v: v == 0)
        agent.wait_metric("allocscope_processes_detaching", lambda v: v == 0, timeout=120)
        m = agent.metrics()
        assert m["allocscope_probes"] == 0 and m["allocscope_probe_links"] == 0, m
        assert m["allocscope_services"] == 0, m
        assert m["process_open_fds"] <= base_fds + 2, (m["process_open_fds"], base_fds)
        assert m['allocscope_samples_dropped_total{reason="unattributed"}'] == 0, m
        assert agent.stop() == 0
    finally:
        agent.kill()
        for w in workloads:
            w.kill()
    assert profiles_of(sinks, "many")
