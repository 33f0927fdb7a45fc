"""End-to-end tests of the agent's Kubernetes pod metadata, without a cluster: the real agent
and real BPF, with the two inputs a cluster would give faked as closely as the agent sees them.

- The API server: a small HTTP server in this process answers
  GET /api/v1/pods?fieldSelector=spec.nodeName=node-e2e with a PodList, checking the bearer
  token from the agent's token file (kubernetes.api_server is http:// here).
- The container identity: workloads run in cgroups named the way the kubelet and containerd
  name a container's (cgroup v2, systemd driver:
  /kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/
  cri-containerd-<id>.scope; cgroupfs driver: /kubepods/besteffort/pod<uid>/<id>). A workload
  joins its cgroup before it execs, as a container's first process does (runc puts it there
  before exec), so the agent's exec notice already sees the container.

The cgroups are made under the cgroup2 mount (on a hybrid host, /sys/fs/cgroup/unified) and
removed afterwards."""
import glob
import json
import os
import re
import signal
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from agent_tests import Agent, agent_config, profiles_of, sample_labels, wait_for_profiles
from helpers import (ALLOC_SITES, ALLOCSCOPE, MALLOC_LOOP, ROOT, Workload, run, short_build_id,
                     test)
from pprof_reader import Profile

NODE = "node-e2e"
TOKEN = "e2e-token-0123456789"
POD_LABEL_KEYS = {"namespace", "pod", "container", "node"}


# --- the fake API server ---------------------------------------------------------------------

class FakeApiServer:
    """Serves the pods of node NODE as the API server's pods endpoint does: 401 without the
    token, 400 without the node's field selector, else a PodList of the pods set now."""

    def __init__(self):
        self.pods = []
        self.failing = False  # answer 503, as an API server that is down behind its LB
        self.requests = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                with outer.lock:
                    outer.requests.append((self.path, self.headers.get("Authorization")))
                    pods = list(outer.pods)
                    failing = outer.failing
                if failing:
                    return self.answer(503, {"kind": "Status", "code": 503,
                                             "message": "service unavailable"})
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self.answer(401, {"kind": "Status", "code": 401,
                                             "message": "Unauthorized"})
                if url.path != "/api/v1/pods" or \
                        query.get("fieldSelector") != [f"spec.nodeName={NODE}"]:
                    return self.answer(400, {"kind": "Status", "code": 400,
                                             "message": f"unexpected request {self.path}"})
                self.answer(200, {"kind": "PodList", "apiVersion": "v1",
                                  "metadata": {"resourceVersion": "1"}, "items": pods})

            def answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def set_pods(self, pods):
        with self.lock:
            self.pods = list(pods)

    def set_failing(self, failing):
        with self.lock:
            self.failing = failing

    def seen(self):
        with self.lock:
            return list(self.requests)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def pod(namespace, name, containers, labels=None, annotations=None, node=NODE, image=None):
    """A pod as the API lists it; containers: {name: container id}; image: what each
    container's status reports running (absent when None)."""
    metadata = {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()),
                "labels": labels or {}}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "metadata": metadata,
        "spec": {"nodeName": node, "containers": [{"name": n, "image": "example/app:1"}
                                                  for n in containers]},
        "status": {"phase": "Running", "qosClass": "BestEffort",
                   "containerStatuses": [dict({"name": n, "ready": True, "restartCount": 0,
                                               "containerID": f"containerd://{cid}"},
                                              **({"image": image} if image else {}))
                                         for n, cid in containers.items()]},
    }


# --- fake containers -----------------------------------------------------------------------

def cgroup2_root():
    """The cgroup2 mount point, or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            dash = fields.index("-")
            if fields[dash + 1] == "cgroup2" and fields[3] == "/":
                return fields[4]
    return None


class FakeContainer:
    """A cgroup named like a Kubernetes container's, and workloads started inside it."""

    def __init__(self, form="systemd"):
        self.id = uuid.uuid4().hex + uuid.uuid4().hex  # 64 hex digits, as runtimes make
        self.pod_uid = str(uuid.uuid4())
        root = cgroup2_root()
        assert root, "no cgroup2 hierarchy is mounted: cannot fake a container's cgroup"
        if form == "systemd":
            uid = self.pod_uid.replace("-", "_")
            parts = ["kubepods.slice", "kubepods-besteffort.slice",
                     f"kubepods-besteffort-pod{uid}.slice", f"cri-containerd-{self.id}.scope"]
        else:
            parts = ["kubepods", "besteffort", f"pod{self.pod_uid}", self.id]
        self.dirs = []
        path = root
        for part in parts:
            path = os.path.join(path, part)
            self.dirs.append(path)
        try:
            os.makedirs(path)
        except OSError as e:
            raise AssertionError(f"cannot create the cgroup {path} ({e}): this machine does "
                                 f"not let root make cgroups, so the container cannot be "
                                 f"faked")
        self.procs = os.path.join(path, "cgroup.procs")
        self.cgroup_path = "/" + "/".join(parts)
        self.workloads = []

    def start(self, argv):
        """A Workload that joins this cgroup and then execs argv (+ --wait)."""
        script = f'echo $$ > "{self.procs}" && exec "$0" "$@"'
        workload = Workload(["/bin/sh", "-c", script] + argv)
        with open(f"/proc/{workload.pid}/cgroup") as f:
            text = f.read()
        assert f"0::{self.cgroup_path}\n" in text, text
        self.workloads.append(workload)
        return workload

    def remove(self):
        for workload in self.workloads:
            workload.kill()
        # The kernel empties a cgroup a moment after its last process is reaped.
        deadline = time.monotonic() + 5
        for path in reversed(self.dirs):
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    # Busy: processes still leaving, or (for the shared parents) other
                    # containers of this test still there.
                    if path != self.dirs[-1] or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)


def kube_extra(api, tmp, node_name=True, refresh="30s", enabled=True):
    token_path = os.path.join(tmp, "token")
    with open(token_path, "w") as f:
        f.write(TOKEN + "\n")
    return ("kubernetes:\n"
            f"  enabled: {'true' if enabled else 'false'}\n"
            + (f"  node_name: {NODE}\n" if node_name else "")
            + f"  api_server: {api.url}\n"
            f"  token_path: {token_path}\n"
            f"  refresh_interval: {refresh}\n")


def labels_of(paths):
    """{(key, value)} over every sample of every profile, and each profile's own set."""
    each = [sample_labels(Profile(p)) for p in paths]
    return set().union(*each), each


# ---------------------------------------------------------------------------------------------

@test
def kube_pods_are_labelled_selected_and_named(tmp):
    """Pods' processes get namespace/pod/container/node labels and the annotation's service
    name (or NAMESPACE/CONTAINER); `namespace: shop` selects them and not a host process; a
    process in a container no pod has is decided without pod metadata after the wait."""
    sinks = os.path.join(tmp, "profiles")
    api = FakeApiServer()
    checkout = FakeContainer("systemd")
    cart = FakeContainer("cgroupfs")
    stray = FakeContainer("systemd")  # a container the API does not know
    # Versions: checkout's from its app.kubernetes.io/version label (before its image's tag),
    # cart's from its image's tag.
    checkout_pod = pod("shop", "checkout-7d9f8b6c5-x2x4v", {"app": checkout.id},
                       labels={"app.kubernetes.io/name": "checkout",
                               "app.kubernetes.io/version": "3.1.4"},
                       annotations={"pyroscope.io/service_name": "checkout"},
                       image="registry.example/shop/checkout:3.1.3")
    cart_pod = pod("shop", "cart-5c7b9d8f6-q8k2m", {"worker": cart.id},
                   labels={"app.kubernetes.io/name": "cart"},
                   image="registry.example/shop/cart:2.0.7@sha256:" + "0" * 64)
    other_pod = pod("kube-system", "coredns-5d78c9869d-abcde",
                    {"coredns": "f" * 64})
    api.set_pods([checkout_pod, cart_pod, other_pod])
    include = ("  include:\n"
               "    - namespace: shop\n"
               f"    - executable: {ALLOC_SITES}\n")
    # NODE_NAME as the DaemonSet sets it; kubernetes.node_name left out.
    agent = Agent(tmp, agent_config(sinks, include, interval="1s",
                                    extra=kube_extra(api, tmp, node_name=False)),
                  extra_args=["env", f"NODE_NAME={NODE}"])
    host = None
    try:
        agent.wait_metric("allocscope_kubernetes_refreshes_total", lambda v: v >= 1)
        assert agent.metric("allocscope_kubernetes_pods") == 3
        in_checkout = checkout.start([MALLOC_LOOP, "--iterations", "200000"])
        in_cart = cart.start([MALLOC_LOOP, "--iterations", "200000"])
        host = Workload([MALLOC_LOOP, "--iterations", "200000"])
        agent.wait_attached(in_checkout.pid, "checkout")
        agent.wait_attached(in_cart.pid, "shop/worker")

        # The unknown container's process waits for its pod, then is decided without it
        # (the pod cache gives up on an id ~10 s after its first lookup).
        started = time.monotonic()
        in_stray = stray.start([ALLOC_SITES])
        agent.wait_metric("allocscope_kubernetes_processes_waiting", lambda v: v >= 1,
                          timeout=8)
        agent.wait_attached(in_stray.pid, timeout=40)
        print(f"     container without a pod decided {time.monotonic() - started:.1f}s "
              f"after its start")
        agent.wait_metric("allocscope_kubernetes_pod_unknown_total", lambda v: v == 1,
                          reason="not_listed")
        agent.wait_metric("allocscope_kubernetes_processes_waiting", lambda v: v == 0)

        for w in (in_checkout, in_cart, host, in_stray):
            w.start()
        for w in (in_checkout, in_cart, host, in_stray):
            w.finish()
        agent.wait_all_exited_and_flushed()
        m = agent.metrics()
        assert m["allocscope_kubernetes_refresh_errors_total"] == 0, m
        assert m['allocscope_processes_not_profiled_total{reason="error"}'] == 0, m
        assert agent.stop() == 0
    finally:
        agent.kill()
        if host:
            host.kill()
        for container in (checkout, cart, stray):
            container.remove()
        api.close()

    # The host's malloc_loop matched no rule: only the three services have profiles.
    assert sorted(os.listdir(sinks)) == ["alloc_sites", "checkout", "shop_worker"], \
        os.listdir(sinks)
    union, each = labels_of(profiles_of(sinks, "checkout"))
    assert all({k for k, _ in labels} == {"service_name", "hostname", "env",
                                          "service_version"} | POD_LABEL_KEYS
               for labels in each), each
    assert union == {("service_name", "checkout"), ("hostname", NODE), ("env", "e2e"),
                     ("namespace", "shop"), ("pod", "checkout-7d9f8b6c5-x2x4v"),
                     ("container", "app"), ("node", NODE), ("service_version", "3.1.4")}, union
    union, _ = labels_of(profiles_of(sinks, "shop_worker"))
    assert union == {("service_name", "shop/worker"), ("hostname", NODE), ("env", "e2e"),
                     ("namespace", "shop"), ("pod", "cart-5c7b9d8f6-q8k2m"),
                     ("container", "worker"), ("node", NODE), ("service_version", "2.0.7")}, \
        union
    # Decided without pod metadata: named and labelled as on a host, versioned by build id.
    union, _ = labels_of(profiles_of(sinks, "alloc_sites"))
    assert union == {("service_name", "alloc_sites"), ("hostname", NODE), ("env", "e2e"),
                     ("service_version", short_build_id(ALLOC_SITES))}, union
    # Every request carried the token and this node's field selector.
    requests = api.seen()
    assert requests and all(auth == f"Bearer {TOKEN}" for _, auth in requests), requests
    assert all("fieldSelector=spec.nodeName%3Dnode-e2e" in path for path, _ in requests), \
        requests


@test
def kube_late_pod_and_replicas_get_a_profile_each(tmp):
    """A container the API lists only after its process started: the decision waits, then
    uses the pod. Two replicas of one Deployment share the service name and keep a profile,
    and a `pod` label, each; an exclude rule by pod label keeps a third pod out."""
    sinks = os.path.join(tmp, "profiles")
    api = FakeApiServer()
    replicas = [FakeContainer("systemd"), FakeContainer("systemd")]
    canary = FakeContainer("cgroupfs")
    deployment = {"app.kubernetes.io/name": "checkout", "pod-template-hash": "7d9f8b6c5"}
    pods = [pod("shop", f"checkout-7d9f8b6c5-{i}", {"app": c.id}, labels=deployment,
                annotations={"pyroscope.io/service_name": "checkout"})
            for i, c in enumerate(replicas)]
    canary_pod = pod("shop", "checkout-canary-0", {"app": canary.id},
                     labels={"app.kubernetes.io/name": "checkout", "track": "canary"},
                     annotations={"pyroscope.io/service_name": "checkout"})
    api.set_pods([pods[0], canary_pod])
    include = ("  include:\n"
               "    - container: app\n"
               "  exclude:\n"
               "    - pod_label: \"track=can*\"\n")
    agent = Agent(tmp, agent_config(sinks, include, interval="1s", extra=kube_extra(api, tmp)))
    workloads = []
    try:
        agent.wait_metric("allocscope_kubernetes_refreshes_total", lambda v: v >= 1)
        workloads.append(replicas[0].start([MALLOC_LOOP, "--iterations", "200000"]))
        agent.wait_attached(workloads[0].pid, "checkout")
        excluded = canary.start([MALLOC_LOOP, "--iterations", "1000"])
        workloads.append(excluded)

        # Not listed yet: the decision waits ...
        late = replicas[1].start([MALLOC_LOOP, "--iterations", "200000"])
        workloads.append(late)
        agent.wait_metric("allocscope_kubernetes_processes_waiting", lambda v: v == 1)
        time.sleep(2)
        assert not re.search(rf"pid {late.pid} \([^)]*\): \d+ probes", agent.log())
        # ... until a refresh lists the pod (the kubelet reporting the container's id).
        api.set_pods(pods + [canary_pod])
        agent.wait_attached(late.pid, timeout=15)
        agent.wait_metric("allocscope_kubernetes_processes_waiting", lambda v: v == 0)
        assert not re.search(rf"pid {excluded.pid} \([^)]*\): \d+ probes", agent.log())

        for w in workloads:
            w.start()
        for w in workloads:
            w.finish()
        agent.wait_all_exited_and_flushed()
        m = agent.metrics()
        assert m['allocscope_kubernetes_pod_unknown_total{reason="not_listed"}'] == 0, m
        assert m['allocscope_kubernetes_pod_unknown_total{reason="timeout"}'] == 0, m
        assert agent.stop() == 0
    finally:
        agent.kill()
        for container in replicas + [canary]:
            container.remove()
        api.close()

    assert os.listdir(sinks) == ["checkout"], os.listdir(sinks)
    union, each = labels_of(profiles_of(sinks, "checkout"))
    # Each profile is one pod's: exactly one pod label value in it.
    for labels in each:
        assert len([v for k, v in labels if k == "pod"]) == 1, labels
    assert {v for k, v in union if k == "pod"} == \
        {"checkout-7d9f8b6c5-0", "checkout-7d9f8b6c5-1"}, union
    assert {v for k, v in union if k == "service_name"} == {"checkout"}, union


@test
def kube_api_outage_decides_late_and_again(tmp):
    """With the API server down, a container's process is decided without its pod after the
    bounded wait (profiled under its executable's name); once a refresh lists the pod, it is
    decided again and its profiles carry the pod's name and labels."""
    sinks = os.path.join(tmp, "profiles")
    api = FakeApiServer()
    container = FakeContainer("systemd")
    api.set_pods([pod("shop", "checkout-0", {"app": container.id})])
    api.set_failing(True)
    include = f"  include:\n    - executable: {MALLOC_LOOP}\n"
    agent = Agent(tmp, agent_config(sinks, include, interval="1s",
                                    extra=kube_extra(api, tmp, refresh="2s")))
    try:
        agent.wait_metric("allocscope_kubernetes_refresh_errors_total", lambda v: v >= 1)
        assert agent.find(r"kubernetes: .*HTTP 503"), agent.log()
        workload = container.start([MALLOC_LOOP, "--iterations", "40000000", "--size", "100"])
        started = time.monotonic()
        agent.wait_attached(workload.pid, "malloc_loop", timeout=40)
        waited = time.monotonic() - started
        print(f"     decided without its pod {waited:.1f}s after its start (API down)")
        assert 15 < waited < 30, waited
        agent.wait_metric("allocscope_kubernetes_pod_unknown_total", lambda v: v == 1,
                          reason="timeout")
        workload.start()
        wait_for_profiles(sinks, "malloc_loop")

        mark = agent.mark()
        api.set_failing(False)
        agent.wait_for(rf"pid {workload.pid}: pod shop/checkout-0 is listed now", timeout=15,
                       start=mark)
        agent.wait_metric("allocscope_kubernetes_pods_found_late_total", lambda v: v == 1)
        paths = wait_for_profiles(sinks, "shop_app")
        workload.kill()
        assert agent.stop() == 0
    finally:
        agent.kill()
        container.remove()
        api.close()
    union, _ = labels_of(paths)
    assert ("pod", "checkout-0") in union and ("service_name", "shop/app") in union, union
    # Before: no pod labels.
    union, _ = labels_of(profiles_of(sinks, "malloc_loop"))
    assert not {k for k, _ in union} & POD_LABEL_KEYS, union


@test
def kube_reload_turns_pod_metadata_on_and_off(tmp):
    """SIGHUP with kubernetes.enabled switched on moves a running container's process to
    its pod's service; switched off, back to its executable's name."""
    sinks = os.path.join(tmp, "profiles")
    api = FakeApiServer()
    container = FakeContainer("cgroupfs")
    api.set_pods([pod("shop", "cart-0", {"worker": container.id},
                      annotations={"pyroscope.io/service_name": "cart"})])
    include = f"  include:\n    - executable: {MALLOC_LOOP}\n"
    off = agent_config(sinks, include, interval="1s", extra=kube_extra(api, tmp, enabled=False))
    on = agent_config(sinks, include, interval="1s", extra=kube_extra(api, tmp))
    agent = Agent(tmp, off)
    try:
        workload = container.start([MALLOC_LOOP, "--iterations", "40000000", "--size", "100"])
        agent.wait_attached(workload.pid, "malloc_loop")
        workload.start()
        wait_for_profiles(sinks, "malloc_loop")
        assert api.seen() == [], "asked the API with kubernetes off"

        for config, service in ((on, "cart"), (off, "malloc_loop")):
            with open(agent.config_path, "w") as f:
                f.write(config)
            mark = agent.mark()
            agent.proc.send_signal(signal.SIGHUP)
            agent.wait_for(r"reloaded: profiling 1 processes", start=mark)
            before = len(profiles_of(sinks, service))
            wait_for_profiles(sinks, service, count=before + 2, timeout=20)
        agent.wait_metric("allocscope_config_reloads_total", lambda v: v == 2, result="success")
        # The process stayed attached throughout: moved, never detached.
        assert agent.metric("allocscope_process_attaches_total") == 1
        workload.kill()
        assert agent.stop() == 0
    finally:
        agent.kill()
        container.remove()
        api.close()
    union, _ = labels_of(profiles_of(sinks, "cart"))
    assert ("pod", "cart-0") in union and ("container", "worker") in union, union
    assert api.seen(), "no request with kubernetes on"


def configmap_config(path):
    """The allocscope.yaml block of deploy/kubernetes/configmap.yaml."""
    lines = open(path).read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "allocscope.yaml: |")
    indent = len(lines[start + 1]) - len(lines[start + 1].lstrip())
    block = []
    for line in lines[start + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        block.append(line[indent:])
    return "\n".join(block) + "\n"


@test
def kube_configuration_is_checked(tmp):
    """The deployed ConfigMap is a valid configuration with the node name the DaemonSet
    passes, and a clear error without it; the agent refuses to start without an API server
    to ask."""
    path = os.path.join(tmp, "configmap-allocscope.yaml")
    with open(path, "w") as f:
        f.write(configmap_config(os.path.join(ROOT, "deploy", "kubernetes", "configmap.yaml")))
    env = {k: v for k, v in os.environ.items() if k not in ("NODE_NAME",
                                                           "KUBERNETES_SERVICE_HOST")}
    checked = run([ALLOCSCOPE, "--config", path, "--check-config"],
                  env=dict(env, NODE_NAME="worker-3"))
    assert checked.returncode == 0, checked.stderr
    assert "configuration is valid" in checked.stdout
    checked = run([ALLOCSCOPE, "--config", path, "--check-config"], env=env)
    assert checked.returncode == 1, checked.stdout
    assert "kubernetes.node_name: required with kubernetes.enabled" in checked.stderr, \
        checked.stderr
    assert "NODE_NAME" in checked.stderr

    # Outside a pod, with no api_server: refused at start, before any process is touched.
    sinks = os.path.join(tmp, "profiles")
    config = os.path.join(tmp, "outside.yaml")
    with open(config, "w") as f:
        f.write(agent_config(sinks, extra=f"kubernetes:\n  enabled: true\n"
                                          f"  node_name: {NODE}\n"))
    started = run([ALLOCSCOPE, "--config", config], env=env, timeout=30)
    assert started.returncode == 1, started.stderr
    assert "KUBERNETES_SERVICE_HOST" in started.stderr and "kubernetes.api_server" in \
        started.stderr, started.stderr
    assert not glob.glob(os.path.join(sinks, "*"))

    # A rule about pods without the API, and a remote metrics address without permission.
    for text, phrases in [
        ("targets:\n  include:\n    - namespace: shop\n",
         ["3:7: targets.include[0].namespace: matches pod metadata from the Kubernetes API",
          "set kubernetes.enabled: true"]),
        ("metrics:\n  listen: 0.0.0.0:9464\n",
         ["2:11: metrics.listen: \"0.0.0.0:9464\" is not a loopback address",
          "set metrics.allow_remote: true"]),
    ]:
        with open(config, "w") as f:
            f.write(text)
        checked = run([ALLOCSCOPE, "--config", config, "--check-config"], env=env)
        assert checked.returncode == 1, checked.stdout
        assert all(p in checked.stderr for p in phrases), checked.stderr
