"""End-to-end tests of the push sinks: the real agent with real BPF profiles a running
malloc_loop and pushes to stand-in servers (tests/e2e/receivers/): a Pyroscope Connect
endpoint over HTTP/1.1 (which also refuses what Pyroscope v2.2.1 would: receivers/
pyroscope_rules.py) and a Parca gRPC endpoint served by grpcio, both decoding what arrives
by hand. The tests take the endpoint down and up, script 429/503/400 and gRPC errors, fill the
spool, restart the agent, and use TLS with a CA made for the test; they check what a user
would: every profile arrives, in order, with the right labels and credentials, and /metrics
and the log say what happened."""
import base64
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

from agent_tests import Agent, metric_key
from helpers import MALLOC_LOOP, Workload, go_pprof, run, short_build_id, test
from pprof_reader import Profile

RECEIVERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "receivers")
UUID_V4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def grpc_python():
    """An interpreter that has grpcio: this one, or Debian's (python3-grpcio)."""
    probe = subprocess.run([sys.executable, "-c", "import grpc"], capture_output=True)
    if probe.returncode == 0:
        return sys.executable
    for candidate in ("/usr/bin/python3", "/bin/python3"):
        if os.path.exists(candidate) and subprocess.run(
                [candidate, "-c", "import grpc"], capture_output=True).returncode == 0:
            return candidate
    raise AssertionError("no Python with grpcio: apt-get install python3-grpcio "
                         "(scripts/install-deps)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A stand-in server in a process of its own, recording into a directory."""

    def __init__(self, kind, tmp, script=None, port=None, tls=None, client_ca=None,
                 start=True, limits=None):
        self.kind = kind
        self.port = port or free_port()
        self.out = os.path.join(tmp, f"{kind}-{self.port}")
        self.script = script or []
        self.tls = tls
        self.client_ca = client_ca
        self.limits = limits  # the Pyroscope stand-in's limits overridden (pyroscope_rules)
        self.proc = None
        if start:
            self.start()

    def start(self):
        python = grpc_python() if self.kind == "parca" else sys.executable
        argv = [python, os.path.join(RECEIVERS, f"{self.kind}_receiver.py"),
                "--port", str(self.port), "--out", self.out,
                "--script", json.dumps(self.script)]
        if self.tls:
            argv += ["--cert", self.tls[0], "--key", self.tls[1]]
        if self.client_ca:
            argv += ["--client-ca", self.client_ca]
        if self.limits:
            argv += ["--limits", json.dumps(self.limits)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening"):
            self.proc.kill()
            raise AssertionError(f"{self.kind} receiver did not start: {line!r} "
                                 f"{self.proc.stderr.read()}")
        self.started = time.monotonic()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def requests(self):
        out = []
        for path in sorted(glob.glob(os.path.join(self.out, "req-*.json"))):
            with open(path) as f:
                entry = json.load(f)
            assert entry["error"] is None, f"{self.kind} receiver: {entry['error']}"
            out.append(entry)
        return out

    def accepted(self):
        ok = 200 if self.kind == "pyroscope" else "OK"
        return [r for r in self.requests() if r["status"] == ok]

    def wait_accepted(self, count, timeout=30, agent=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.accepted()
            if len(got) >= count:
                return got
            time.sleep(0.1)
        log = agent.log()[-3000:] if agent else ""
        raise AssertionError(f"{self.kind} receiver accepted {len(self.accepted())} of "
                             f"{count} within {timeout}s:\n{log}")

    def profile_path(self, request, index=0):
        return os.path.join(self.out, request["series"][0]["samples"][index]["file"])


def push_config(sinks, interval="1s", rate="1MiB"):
    return f"""
sampling:
  rate: {rate}
targets:
  include:
    - executable: {MALLOC_LOOP}
      service: loop
profiles:
  interval: {interval}
  labels:
    env: e2e
sinks:
{sinks}
metrics:
  listen: 127.0.0.1:0
log:
  level: debug
"""


def start_workload(agent):
    """A malloc_loop that allocates until the test kills it, attached before it starts."""
    workload = Workload([MALLOC_LOOP, "--size", "512", "--iterations", "1000000000000"])
    agent.wait_attached(workload.pid)
    workload.start()
    return workload


def labels_of(request):
    series = request["series"]
    assert len(series) == 1, series
    return series[0]["labels"]


def time_nanos(receiver, request):
    return Profile(receiver.profile_path(request)).time_nanos


def assert_in_order(receiver, requests):
    stamps = [time_nanos(receiver, r) for r in requests]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), \
        f"profiles arrived out of order: {stamps}"
    return stamps


def metric(agent, metric_name, **labels):
    """A metric's value (Agent.metric cannot take a label called name)."""
    value = agent.metrics().get(metric_key(metric_name, labels))
    assert value is not None, f"no {metric_key(metric_name, labels)} in /metrics"
    return value


def wait_metric(agent, metric_name, predicate, timeout=20, **labels):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = agent.metrics().get(metric_key(metric_name, labels))
        if value is not None and predicate(value):
            return value
        time.sleep(0.2)
    raise AssertionError(f"{metric_key(metric_name, labels)} stayed {value}:\n"
                         f"{agent.log()[-3000:]}")


def write_secret(tmp, name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


def spool_files(spool):
    return sorted(glob.glob(os.path.join(spool, "profile-*.spool")))


# ---------------------------------------------------------------------------------------------

@test
def push_pyroscope_delivers_labelled_profiles(tmp):
    receiver = Receiver("pyroscope", tmp)
    password = "correct horse battery staple"
    secret = write_secret(tmp, "password", password + "\n")
    agent = Agent(tmp, push_config(f"""  - type: pyroscope
    url: http://127.0.0.1:{receiver.port}/
    username: "12345"
    password_file: {secret}
    tenant: team-a
    headers:
      X-Team: memory
"""))
    workload = None
    try:
        workload = start_workload(agent)
        got = receiver.wait_accepted(3, agent=agent)
        arrival_lag = [r["time"] - (time_nanos(receiver, r) +
                                    Profile(receiver.profile_path(r)).duration_nanos) / 1e9
                       for r in got]
        written = metric(agent, "allocscope_sink_profiles_written_total", sink="pyroscope")
        push_s = metric(agent, "allocscope_sink_push_duration_seconds_total", sink="pyroscope")
        assert metric(agent, "allocscope_sink_errors_total", sink="pyroscope") == 0
        # The directory sink's metrics are not there: only the configured sinks report.
        assert agent.metric("allocscope_sink_profiles_written_total", sink="directory") is None
        print(f"     {written:.0f} pushes, mean {1000 * push_s / written:.1f} ms each; "
              f"profile end to arrival {1000 * min(arrival_lag):.0f}.."
              f"{1000 * max(arrival_lag):.0f} ms")
        workload.kill()
        assert agent.stop() == 0
    finally:
        agent.kill()
        receiver.stop()
        if workload:
            workload.kill()

    requests = receiver.requests()
    assert all(r["status"] == 200 for r in requests)
    basic = "Basic " + base64.b64encode(f"12345:{password}".encode()).decode()
    ids = set()
    for r in requests:
        h = r["headers"]
        assert r["path"] == "/push.v1.PusherService/Push"
        assert h["content-type"] == "application/proto", h
        assert h["connect-protocol-version"] == "1", h
        assert h["x-scope-orgid"] == "team-a", h
        assert h["x-team"] == "memory", h
        assert h["authorization"] == basic, h["authorization"]
        labels = labels_of(r)
        assert labels[0] == ["__name__", "memory"], labels
        assert dict(labels) == {"__name__": "memory", "__delta__": "false",
                                "service_name": "loop", "hostname": socket.gethostname(),
                                "env": "e2e",
                                "service_version": short_build_id(MALLOC_LOOP)}, labels
        samples = r["series"][0]["samples"]
        assert len(samples) == 1 and UUID_V4.match(samples[0]["id"]), samples
        ids.add(samples[0]["id"])
        profile = Profile(receiver.profile_path(r))
        profile.check_ids()
        assert [t for t, _ in profile.sample_types] == ["alloc_objects", "alloc_space"]
        assert profile.period_type == ("space", "bytes")
        assert abs(profile.time_nanos / 1e9 - time.time()) < 600
    assert len(ids) == len(requests), "a delivery ID was reused"
    assert_in_order(receiver, requests)
    raw = go_pprof(["-raw", receiver.profile_path(requests[0])], tmp)
    assert "alloc_objects/count alloc_space/bytes" in raw, raw[:500]
    assert password not in agent.log(), "the password reached the log"


@test
def push_endpoint_down_then_up_loses_nothing(tmp):
    spool = os.path.join(tmp, "spool")
    receiver = Receiver("pyroscope", tmp, start=False)
    agent = Agent(tmp, push_config(f"""  - type: pyroscope
    url: http://127.0.0.1:{receiver.port}
    spool_dir: {spool}
    max_backoff: 2s
"""))
    workload = None
    try:
        workload = start_workload(agent)
        wait_metric(agent, "allocscope_sink_spool_profiles", lambda v: v >= 3, timeout=20,
                    sink="pyroscope")
        assert metric(agent, "allocscope_sink_retries_total", sink="pyroscope") >= 1
        assert agent.find(r"pyroscope sink: push to http://127\.0\.0\.1:\d+/push\.v1\."
                          r"PusherService/Push failed: .*[Cc]ould.*connect"), agent.log()
        receiver.start()
        wait_metric(agent, "allocscope_sink_spool_profiles", lambda v: v == 0, timeout=20,
                    sink="pyroscope")
        drained = time.monotonic() - receiver.started
        workload.kill()
        agent.wait_all_exited_and_flushed()
        built = metric(agent, "allocscope_profiles_built_total")
        wait_metric(agent, "allocscope_sink_profiles_written_total", lambda v: v == built,
                    timeout=10, sink="pyroscope")
        assert metric(agent, "allocscope_sink_profiles_dropped_total", sink="pyroscope") == 0
        spooled = metric(agent, "allocscope_sink_profiles_spooled_total", sink="pyroscope")
        print(f"     {spooled:.0f} profiles spooled during the outage, delivered "
              f"{drained:.1f}s after the endpoint came up; {built:.0f} built, all delivered")
        assert agent.stop() == 0
    finally:
        agent.kill()
        receiver.stop()
        if workload:
            workload.kill()
    requests = receiver.requests()
    assert len(requests) == built, f"{len(requests)} requests for {built} profiles"
    assert_in_order(receiver, requests)
    assert spool_files(spool) == []


@test
def push_spool_survives_agent_restart(tmp):
    spool = os.path.join(tmp, "spool")
    receiver = Receiver("pyroscope", tmp, start=False)
    config = push_config(f"""  - type: pyroscope
    url: http://127.0.0.1:{receiver.port}
    spool_dir: {spool}
    max_backoff: 1s
""")
    agent = Agent(tmp, config)
    workload = None
    try:
        workload = start_workload(agent)
        wait_metric(agent, "allocscope_sink_spool_profiles", lambda v: v >= 3, timeout=20,
                    sink="pyroscope")
        workload.kill()
        stopping = time.monotonic()
        assert agent.stop() == 0
        stop_took = time.monotonic() - stopping
    finally:
        agent.kill()
        if workload:
            workload.kill()
    assert re.search(r"profiles left in spool .*, to be delivered first after a reload or "
                     r"restart", agent.log()), agent.log()
    left = spool_files(spool)
    assert len(left) >= 3, left

    receiver.start()
    started = time.monotonic()
    agent = Agent(tmp, config)
    try:
        got = receiver.wait_accepted(len(left), agent=agent)
        took = time.monotonic() - started
        assert agent.find(rf"{len(left)} profiles \(\d+ bytes\) wait in spool"), agent.log()
        wait_metric(agent, "allocscope_sink_profiles_written_total",
                    lambda v: v == len(left), sink="pyroscope")
        assert agent.stop() == 0
    finally:
        agent.kill()
        receiver.stop()
    print(f"     stop with a down endpoint took {stop_took:.1f}s; {len(left)} spooled "
          f"profiles delivered {took:.1f}s after the restart (agent start included)")
    assert_in_order(receiver, got)
    assert spool_files(spool) == []


@test
def push_reload_hands_the_spool_over(tmp):
    """A reload replaces the sink: the old one spools what it holds and lets go of the spool,
    the new one takes it; nothing is sent twice or lost, the counters keep counting."""
    spool = os.path.join(tmp, "spool")
    receiver = Receiver("pyroscope", tmp, start=False)
    agent = Agent(tmp, push_config(f"""  - type: pyroscope
    name: main
    url: http://127.0.0.1:{receiver.port}
    spool_dir: {spool}
    max_backoff: 1s
"""))
    labels = {"sink": "pyroscope", "name": "main"}
    workload = None
    try:
        workload = start_workload(agent)
        wait_metric(agent, "allocscope_sink_spool_profiles", lambda v: v >= 2, **labels)
        before = metric(agent, "allocscope_sink_profiles_spooled_total", **labels)
        agent.proc.send_signal(signal.SIGHUP)
        wait_metric(agent, "allocscope_config_reloads_total", lambda v: v == 1,
                    result="success")
        after = metric(agent, "allocscope_sink_profiles_spooled_total", **labels)
        assert after >= before, f"the spooled counter went from {before} back to {after}"
        receiver.start()
        wait_metric(agent, "allocscope_sink_spool_profiles", lambda v: v == 0, **labels)
        workload.kill()
        agent.wait_all_exited_and_flushed()
        built = metric(agent, "allocscope_profiles_built_total")
        wait_metric(agent, "allocscope_sink_profiles_written_total", lambda v: v == built,
                    **labels)
        assert metric(agent, "allocscope_sink_profiles_dropped_total", **labels) == 0
        assert agent.stop() == 0
    finally:
        agent.kill()
        receiver.stop()
        if workload:
            workload.kill()
    requests = receiver.requests()
    ids = [r["series"][0]["samples"][0]["id"] for r in requests]
    assert len(ids) == len(set(ids)) == built, (len(ids), len(set(ids)), built)
    assert_in_order(receiver, requests)


@test
def push_honours_retry_after_and_backs_off(tmp):
    script = [{"status": 429, "headers": {"Retry-After": "2"}, "body": ""},
              {"status": 503, "body": {"code": "unavailable", "message": "ingester busy"}}]
    receiver = Receiver("pyroscope", tmp, script=script)
    agent = Agent(tmp, push_config(f"""  - type: pyroscope
    url: http://127.0.0.1:{receiver.port}
    max_backoff: 1s
"""))
    workload = None
    try:
        workload = start_workload(agent)
        receiver.wait_accepted(3, agent=agent)
        wait_metric(agent, "allocscope_sink_retries_total", lambda v: v == 2, sink="pyroscope")
        assert metric(agent, "allocscope_sink_profiles_dropped_total", sink="pyroscope") == 0
        assert metric(agent, "allocscope_sink_profiles_rejected_total", sink="pyroscope") == 0
        workload.kill()
        assert agent.stop() == 0
    finally:
        agent.kill()
        receiver.stop()
        if workload:
            workload.kill()
    r = receiver.requests()
    assert [x["status"] for x in r[:3]] == [429, 503, 200], [x["status"] for x in r]
    first_id = r[0]["series"][0]["samples"][0]["id"]
    # The same profile each time, its ID kept; the wait after the 429 is the server's 2 s,
    # although max_backoff is 1 s.
    assert all(x["series"][0]["samples"][0]["id"] == first_id for x in r[:3])
    gap = r[1]["time"] - r[0]["time"]
    assert gap >= 1.9, f"retried {gap:.2f}s after a Retry-After: 2"
    assert r[2]["time"] - r[1]["time"] <= 1.5
    assert_in_order(receiver, [x for x in r if x["status"] == 200])
    assert re.search(r"failed: HTTP 429", agent.log()), agent.log()
    print(f"     retried {gap:.2f}s after 429 Retry-After: 2, "
          f"{r[2]['time'] - r[1]['time']:.2f}s after 503")


@test
def push_rejected_profile_is_logged_and_not_retried(tmp):
    script = [{"status": 400, "body": {"code": "invalid_argument",
                                       "message": "profile is outside the ingestion window"}}]
    receiver = Receiver("pyroscope", tmp, script=script)
    agent = Agent(tmp, push_config(f"""  - type: pyroscope
    url: http://127.0.0.1:{receiver.port}
"""))
    workload = None
    try:
        workload = start_workload(agent)
        receiver.wait_accepted(2, agent=agent)
        wait_metric(agent, "allocscope_sink_profiles_rejected_total", lambda v: v == 1,
                    sink="pyroscope")
        assert metric(agent, "allocscope_sink_retries_total", sink="pyroscope") == 0
        workload.kill()
        assert agent.stop() == 0
    finally:
        agent.kill()
        receiver.stop()
        if workload:
            workload.kill()
    r = receiver.requests()
    assert r[0]["status"] == 400
    rejected = r[0]["series"][0]["samples"][0]["id"]
    assert [x["series"][0]["samples"][0]["id"] for x in r].count(rejected) == 1
    assert re.search(r"refused the profile of loop \(not retried\): HTTP 400: "
                     r"invalid_argument: profile is outside the ingestion window",
                     agent.log()), agent.log()


@test
def push_spool_full_drops_oldest_and_counts(tmp):
    spool = os.path.join(tmp, "spool")
    receiver = Receiver("pyroscope", tmp, start=False)
    agent = Agent(tmp, push_config(f"""  - type: pyroscope
    url: http://127.0.0.1:{receiver.port}
    spool_dir: {spool}
    spool_max_bytes: 4KiB
    max_backoff: 1s
"""))
    workload = None
    try:
        workload = start_workload(agent)
        dropped = wait_metric(agent, "allocscope_sink_profiles_dropped_total",
                              lambda v: v >= 2, timeout=25, sink="pyroscope")
        spool_bytes = metric(agent, "allocscope_sink_spool_bytes", sink="pyroscope")
        spooled = metric(agent, "allocscope_sink_spool_profiles", sink="pyroscope")
        assert 0 < spool_bytes <= 4096, spool_bytes
        assert sum(os.path.getsize(p) for p in spool_files(spool)) <= 4096
        assert agent.find(r"dropped \d+ profiles?: the spool is full"), agent.log()
        workload.kill()
        agent.wait_all_exited_and_flushed()
        last_built_ns = time.time_ns()
        receiver.start()
        wait_metric(agent, "allocscope_sink_spool_profiles", lambda v: v == 0, timeout=20,
                    sink="pyroscope")
        built = metric(agent, "allocscope_profiles_built_total")
        written = metric(agent, "allocscope_sink_profiles_written_total", sink="pyroscope")
        dropped = metric(agent, "allocscope_sink_profiles_dropped_total", sink="pyroscope")
        assert written + dropped == built, (written, dropped, built)
        assert agent.stop() == 0
    finally:
        agent.kill()
        receiver.stop()
        if workload:
            workload.kill()
    print(f"     {built:.0f} profiles: {dropped:.0f} dropped (oldest first), {written:.0f} "
          f"delivered; {spooled:.0f} fit in the 4KiB spool")
    stamps = assert_in_order(receiver, receiver.requests())
    assert len(stamps) == written
    # The survivors are the newest: one profile per second without a gap, up to the last
    # one built (the dropped ones came before them).
    gaps = [(b - a) / 1e9 for a, b in zip(stamps, stamps[1:])]
    assert all(0.5 < g < 1.5 for g in gaps), f"delivered profiles are not consecutive: {gaps}"
    assert last_built_ns - 3e9 < stamps[-1] <= last_built_ns, (stamps[-1], last_built_ns)


def make_pki(tmp):
    """A CA, a server certificate for profiles.test only (not 127.0.0.1), a client
    certificate; all made here with openssl."""
    d = os.path.join(tmp, "pki")
    os.makedirs(d)

    def ssl(*args):
        result = run(["openssl"] + list(args), cwd=d)
        assert result.returncode == 0, result.stderr

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
        "/CN=allocscope test CA", "-keyout", "ca.key", "-out", "ca.pem")
    for name, ext in (("server", "subjectAltName=DNS:profiles.test\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext + "\n")
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
            f"{name}.key", "-out", f"{name}.csr")
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    return {"ca": os.path.join(d, "ca.pem"),
            "server": os.path.join(d, "server.pem"), "server_key": os.path.join(d, "server.key"),
            "client": os.path.join(d, "client.pem"), "client_key": os.path.join(d, "client.key")}


@test
def push_over_tls_with_client_certificates(tmp):
    pki = make_pki(tmp)
    pyroscope = Receiver("pyroscope", tmp, tls=(pki["server"], pki["server_key"]),
                         client_ca=pki["ca"])
    parca = Receiver("parca", tmp, tls=(pki["server"], pki["server_key"]))
    tls = f"""    ca_file: {pki['ca']}
    cert_file: {pki['client']}
    key_file: {pki['client_key']}
"""
    agent = Agent(tmp, push_config(f"""  - type: pyroscope
    name: tls
    url: https://127.0.0.1:{pyroscope.port}
    server_name: profiles.test
{tls}  - type: pyroscope
    name: wrong-name
    url: https://127.0.0.1:{pyroscope.port}
    max_backoff: 1s
{tls}  - type: parca
    url: https://127.0.0.1:{parca.port}
    server_name: profiles.test
{tls}"""))
    workload = None
    try:
        workload = start_workload(agent)
        pyroscope.wait_accepted(2, agent=agent)
        parca.wait_accepted(2, agent=agent)
        # /metrics is published once a second: it may trail the receivers a little.
        wait_metric(agent, "allocscope_sink_profiles_written_total", lambda v: v >= 2,
                    sink="pyroscope", name="tls")
        wait_metric(agent, "allocscope_sink_profiles_written_total", lambda v: v >= 2,
                    sink="parca")
        # The same server without server_name: its certificate does not name 127.0.0.1.
        wait_metric(agent, "allocscope_sink_retries_total", lambda v: v >= 1,
                    sink="pyroscope", name="wrong-name")
        assert metric(agent, "allocscope_sink_profiles_written_total", sink="pyroscope",
                      name="wrong-name") == 0
        assert agent.find(r'pyroscope sink "wrong-name": push to https://127\.0\.0\.1:\d+/'
                          r'push\.v1\.PusherService/Push failed: .*(certificate|SSL)'), \
            agent.log()
        workload.kill()
        assert agent.stop() == 0
    finally:
        agent.kill()
        pyroscope.stop()
        parca.stop()
        if workload:
            workload.kill()
    # Every request the receiver saw came over the verified, client-authenticated path.
    for r in pyroscope.requests():
        assert r["status"] == 200
    for r in parca.requests():
        assert dict(labels_of(r))["service_name"] == "loop"


@test
def push_to_pyroscope_and_parca_at_once(tmp):
    pyroscope = Receiver("pyroscope", tmp)
    parca = Receiver("parca", tmp, script=[
        {"code": "UNAVAILABLE", "message": "warming up"},
        {"code": "INVALID_ARGUMENT", "message": "label name is not valid"}])
    token = write_secret(tmp, "token", "parca-token-123\n")
    agent = Agent(tmp, push_config(f"""  - type: pyroscope
    url: http://127.0.0.1:{pyroscope.port}
  - type: parca
    url: http://127.0.0.1:{parca.port}
    token_file: {token}
    max_backoff: 1s
"""))
    workload = None
    try:
        workload = start_workload(agent)
        parca.wait_accepted(2, agent=agent)
        pyroscope.wait_accepted(2, agent=agent)
        wait_metric(agent, "allocscope_sink_profiles_rejected_total", lambda v: v == 1,
                    sink="parca")
        assert metric(agent, "allocscope_sink_retries_total", sink="parca") == 1
        assert metric(agent, "allocscope_sink_retries_total", sink="pyroscope") == 0
        written_parca = metric(agent, "allocscope_sink_profiles_written_total", sink="parca")
        pushed = metric(agent, "allocscope_sink_push_duration_seconds_total", sink="parca")
        print(f"     parca: mean WriteRaw {1000 * pushed / written_parca:.1f} ms over "
              f"{written_parca:.0f} calls")
        workload.kill()
        assert agent.stop() == 0
    finally:
        agent.kill()
        pyroscope.stop()
        parca.stop()
        if workload:
            workload.kill()
    calls = parca.requests()
    assert [c["status"] for c in calls[:3]] == ["UNAVAILABLE", "INVALID_ARGUMENT", "OK"], \
        [c["status"] for c in calls]
    # UNAVAILABLE is retried with the same profile; INVALID_ARGUMENT is not.
    first = [open(parca.profile_path(c), "rb").read() for c in calls[:3]]
    assert first[0] == first[1] and first[2] != first[1]
    for c in calls:
        assert c["headers"].get("authorization") == "Bearer parca-token-123", c["headers"]
        labels = labels_of(c)
        assert labels[0] == ["__name__", "memory"], labels
        assert dict(labels) == {"__name__": "memory", "service_name": "loop",
                                "hostname": socket.gethostname(), "env": "e2e",
                                "service_version": short_build_id(MALLOC_LOOP)}, labels
        assert c["tenant"] is None and not c["normalized"]
        assert len(c["series"][0]["samples"]) == 1
        profile = Profile(parca.profile_path(c))
        profile.check_ids()
        assert profile.period_type == ("space", "bytes")
    assert_in_order(parca, [c for c in calls if c["status"] == "OK"])
    assert_in_order(pyroscope, pyroscope.requests())
    assert re.search(r'parca sink: the server refused the profile of loop \(not retried\): '
                     r'gRPC INVALID_ARGUMENT: label name is not valid', agent.log()), agent.log()
    assert re.search(r"parca sink: push to .* failed: gRPC UNAVAILABLE: warming up",
                     agent.log()), agent.log()
    assert "parca-token-123" not in agent.log()
