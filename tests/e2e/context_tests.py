"""End-to-end tests of request context (issue 15): programs publish the endpoint and tenant of
the request each thread serves, through the OpenTelemetry thread context (our
liballocscope-context, or Datadog's libdd-otel-thread-ctx crate) or the Custom Labels ABI
(Polar Signals' custom-labels crate; both crates built from crates.io here), and every sampled allocation carries them as pprof labels: per-endpoint and
per-tenant totals hold within the sampling tolerance, a thread's next request never inherits a
label, and a torn record (valid = 0) is skipped and counted. Imported by run.py."""
import os
import re
import shutil
import subprocess
import time
from collections import defaultdict

from agent_tests import (Agent, agent_config, include_executable, profiles_of,
                         wait_for_profiles)
from backend_tests import Server, Window, merged
from push_tests import Receiver
from pyroscope_tests import wait_all_pushed
from helpers import (ALLOCSCOPE, BUILD, ROOT, expected_with_tolerance, go_pprof, run, test)
from pprof_reader import Profile

CONTEXT_REQUESTS = os.path.join(BUILD, "workloads", "context_requests")
CONTEXT_REQUESTS_STATIC = os.path.join(BUILD, "workloads", "context_requests_static")
CONTEXT_REQUESTS_DLOPEN = os.path.join(BUILD, "workloads", "context_requests_dlopen")
CUSTOM_LABELS_SRC = os.path.join(ROOT, "tests", "workloads", "custom_labels_requests")
CUSTOM_LABELS_TARGET = os.path.join(BUILD, "cargo-context")
OTEL_THREAD_CTX_SRC = os.path.join(ROOT, "tests", "workloads", "otel_thread_ctx_requests")
# 64-byte health checks must be sampled often enough for the tolerance's normal approximation.
CTX_RATE, CTX_RATE_ARG = 4096, "4KiB"
BIG_RING = "512MiB"
# A profiler that starts a program finds its context once the loader has mapped the writer:
# the workloads wait this long before their first request.
DELAY = ["--delay-ms", "500"]


def parse_context_manifest(text):
    """{(function, endpoint, tenant): [(size, count)]} from 'ctx F|E|T SIZE COUNT' lines."""
    manifest = {}
    for line in text.splitlines():
        m = re.match(r"^ctx (\S+)\|([^|]*)\|(\S+) (\d+) (\d+)$", line)
        if m:
            manifest.setdefault(m.group(1, 2, 3), []).append(
                (int(m.group(4)), int(m.group(5))))
    assert manifest, f"no manifest in the workload's output: {text[:300]!r}"
    return manifest


def totals_by_context(profiles, functions):
    """alloc_space per (function, endpoint, tenant), '-' for a missing label; samples in none
    of the functions are summed under '?'."""
    totals = defaultdict(float)
    for profile in profiles:
        for sample in profile.samples:
            names = [n for n in profile.stack_functions(sample) if n in functions]
            labels = sample["labels"]
            key = (names[0] if names else "?", labels.get("endpoint", "-"),
                   labels.get("tenant", "-"))
            totals[key] += sample["values"][1]
    return totals


def check_context_totals(profiles, manifest, rate):
    """Every (function, endpoint, tenant) of the manifest within tolerance, and no sample of a
    listed function under labels the manifest does not list for it (a leaked label)."""
    functions = {f for f, _, _ in manifest}
    totals = totals_by_context(profiles, functions)
    problems = []
    for key, classes in manifest.items():
        truth, tol, _, _ = expected_with_tolerance(classes, rate)
        got = totals.get(key, 0)
        if abs(got - truth) > tol:
            problems.append(f"{key}: alloc_space {got:.0f} vs truth {truth:.0f} "
                            f"(tolerance {tol:.0f})")
    leaked = {k: v for k, v in totals.items() if k[0] != "?" and k not in manifest}
    assert not leaked, f"samples under labels their request never had: {leaked}"
    assert not problems, "\n".join(problems)
    return totals


def capture(tmp, argv, name, extra=(), env=None):
    out_path = os.path.join(tmp, name + ".pb.gz")
    result = run([ALLOCSCOPE, "-r", CTX_RATE_ARG, "--ringbuf-size", BIG_RING, "-o", out_path,
                  *extra, "--"] + argv, timeout=300, env=env)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result, out_path


@test
def context_labels_slice_by_endpoint_and_tenant(tmp):
    """Four threads serve requests labelled with liballocscope-context (scoped push/pop,
    TLSDESC in the shared library): the capture's pprof gives each (endpoint, tenant) its
    allocation mix within the sampling tolerance, allocations between requests carry no
    label, and go tool pprof -tagfocus slices by a label."""
    result, path = capture(tmp, [CONTEXT_REQUESTS, "--requests", "1000", *DELAY], "ctx")
    assert re.search(r"pid \d+ publishes request context \(OpenTelemetry thread context\) in "
                     r"\S+/liballocscope-context\.so", result.stderr), result.stderr
    assert "samples dropped" not in result.stdout, result.stdout
    manifest = parse_context_manifest(result.stdout)
    check_context_totals([Profile(path)], manifest, CTX_RATE)
    # -tagfocus keeps only globex's samples: its requests' sites, no idle work.
    top = go_pprof(["-top", "-sample_index=alloc_space", "-tagfocus=tenant=globex", path], tmp)
    assert "export_report" in top and "create_order" in top, top
    assert "idle_work" not in top, top


@test
def context_switches_mid_stream_never_leak_labels(tmp):
    """Each thread interleaves two requests, switching its context before every allocation
    (as an async runtime does): every allocation carries its own request's endpoint and
    tenant, never the other's, and the totals hold."""
    result, path = capture(tmp, [CONTEXT_REQUESTS, "--requests", "1000", "--switch", *DELAY],
                           "switch")
    check_context_totals([Profile(path)], parse_context_manifest(result.stdout), CTX_RATE)


@test
def context_torn_record_is_skipped_and_counted(tmp):
    """Allocations made while the record says valid = 0 (a writer caught mid-update) get no
    labels, and the summary counts them; the rest is unaffected."""
    result, path = capture(tmp, [CONTEXT_REQUESTS, "--requests", "1000", "--torn", *DELAY], "torn")
    manifest = parse_context_manifest(result.stdout)
    check_context_totals([Profile(path)], manifest, CTX_RATE)
    m = re.search(r"^  (\d+) samples without request context: the thread's record was "
                  r"mid-update \(valid != 1\)$", result.stdout, re.M)
    assert m and int(m.group(1)) > 0, result.stdout


@test
def context_static_tls_of_the_executable(tmp):
    """The writer linked statically: the TLS pointer is the executable's own (static TLS,
    variant II offset from the thread pointer), found and read the same way."""
    result, path = capture(tmp, [CONTEXT_REQUESTS_STATIC, "--requests", "1000", *DELAY],
                           "static")
    assert re.search(r"publishes request context \(OpenTelemetry thread context\) in "
                     r"\S+/context_requests_static", result.stderr), result.stderr
    check_context_totals([Profile(path)], parse_context_manifest(result.stdout), CTX_RATE)


@test
def context_trace_ids_only_when_enabled(tmp):
    """trace_id and span_id are labels only with context.trace_ids (--context-trace-ids)."""
    _, path = capture(tmp, [CONTEXT_REQUESTS, "--requests", "200", "--trace", *DELAY],
                      "notrace")
    keys = {k for s in Profile(path).samples for k in s["labels"]}
    assert "endpoint" in keys and "span_id" not in keys and "trace_id" not in keys, keys
    _, path = capture(tmp, [CONTEXT_REQUESTS, "--requests", "200", "--trace", *DELAY],
                      "trace",
                      extra=("--context-trace-ids", "true"))
    spans = {s["labels"].get("span_id") for s in Profile(path).samples
             if "endpoint" in s["labels"]}
    assert spans and all(s and re.fullmatch(r"[0-9a-f]{16}", s) for s in spans), spans


@test
def context_labels_through_the_agent(tmp):
    """The continuous agent keeps the labels in the profiles it writes, and counts torn
    records in /metrics."""
    sinks = os.path.join(tmp, "profiles")
    agent = Agent(tmp, agent_config(sinks, include_executable(CONTEXT_REQUESTS, "shop"),
                                    rate=CTX_RATE_ARG))
    try:
        result = run([CONTEXT_REQUESTS, "--requests", "1000", "--torn", "--delay-ms", "1000"],
                     timeout=300)
        assert result.returncode == 0, result.stderr
        agent.wait_all_exited_and_flushed(timeout=60)
        wait_for_profiles(sinks, "shop")
        manifest = parse_context_manifest(result.stdout)
        profiles = [Profile(p) for p in profiles_of(sinks, "shop")]
        totals = totals_by_context(profiles, {f for f, _, _ in manifest})
        leaked = {k: v for k, v in totals.items() if k[0] != "?" and k not in manifest}
        assert not leaked, f"samples under labels their request never had: {leaked}"
        for key in manifest:
            if key[0] != "torn_work":
                assert totals.get(key, 0) > 0, (key, dict(totals))
        torn = agent.metric("allocscope_context_records_skipped_total", reason="torn")
        assert torn and torn > 0, agent.metrics()
    finally:
        agent.stop()


def build_cargo_program(source, binary, what):
    """Builds the program in `source` with cargo, fetching its crates from crates.io (the target
    directory under build/ caches them between runs). A failure fails the test: the
    interoperability it checks cannot be skipped."""
    cargo = shutil.which("cargo") or os.path.expanduser("~/.cargo/bin/cargo")
    assert os.path.exists(cargo), f"cargo not found: the {what} interop test needs it " \
        "(scripts/install-deps installs one)"
    env = dict(os.environ, CARGO_TARGET_DIR=CUSTOM_LABELS_TARGET)
    result = subprocess.run([cargo, "build", "--release", "--quiet", "--locked"], cwd=source,
                            env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, \
        f"cannot build the {what} program (crates.io reachable?):\n{result.stderr}"
    return os.path.join(CUSTOM_LABELS_TARGET, "release", binary)


def build_custom_labels_program():
    return build_cargo_program(CUSTOM_LABELS_SRC, "custom_labels_requests", "custom-labels")


@test
def context_custom_labels_from_the_crate(tmp):
    """A Rust program labelled with Polar Signals' custom-labels crate (Custom Labels ABI v1,
    its TLS variable exported from the executable): the labels it sets, keys included, reach
    the profile, per (endpoint, tenant) within tolerance, none between requests."""
    program = build_custom_labels_program()
    result, path = capture(tmp, [program, "1000"], "custom_labels")
    assert re.search(r"publishes request context \(Custom Labels v1\) in "
                     r"\S+/custom_labels_requests", result.stderr), result.stderr
    check_context_totals([Profile(path)], parse_context_manifest(result.stdout), CTX_RATE)


@test
def context_otel_thread_ctx_from_datadogs_crate(tmp):
    """A Rust program labelled with Datadog's writer of the OpenTelemetry thread context
    (libdd-otel-thread-ctx, TLSDESC variable otel_thread_ctx_v1 in the executable), its key
    names published in the OpenTelemetry process context by libdd-library-config: the
    endpoint and tenant it sets reach the profile under those names, per (endpoint, tenant)
    within tolerance, none outside requests, whether a thread attaches a new record per
    request or updates one in place; the attribute libdatadog always puts first
    (datadog.local_root_span_id, key index 0) comes through under its published name."""
    program = build_cargo_program(OTEL_THREAD_CTX_SRC, "otel_thread_ctx_requests",
                                  "libdd-otel-thread-ctx")
    result, path = capture(tmp, [program, "1000"], "otel_thread_ctx")
    assert re.search(r"publishes request context \(OpenTelemetry thread context\) in "
                     r"\S+/otel_thread_ctx_requests", result.stderr), result.stderr
    profile = Profile(path)
    check_context_totals([profile], parse_context_manifest(result.stdout), CTX_RATE)
    roots = {s["labels"].get("datadog_local_root_span_id") for s in profile.samples} - {None}
    # One root span id per thread (1 .. 4); the in-place threads' idle record has 0.
    assert {f"{n:016x}" for n in range(1, 5)} <= roots <= \
        {f"{n:016x}" for n in range(0, 5)}, roots


@test
def context_labels_on_the_cooperative_path(tmp):
    """The same requests with liballocscope-sampler.so preloaded: samples arrive through the
    otel_memory:alloc USDT, and each carries its request's labels as on the probes' path."""
    sampler = os.path.join(BUILD, "liballocscope-sampler.so")
    env = dict(os.environ, LD_PRELOAD=sampler, ALLOCSCOPE_SAMPLE_RATE=CTX_RATE_ARG)
    out_path = os.path.join(tmp, "coop.pb.gz")
    result = run([ALLOCSCOPE, "--ringbuf-size", BIG_RING, "-o", out_path, "--",
                  CONTEXT_REQUESTS, "--requests", "1000", *DELAY], env=env, timeout=300)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    assert "otel_memory:alloc USDT, cooperative sampling" in result.stdout, result.stdout[:600]
    check_context_totals([Profile(out_path)], parse_context_manifest(result.stdout), CTX_RATE)


@test
def context_labels_in_every_unwind_mode(tmp):
    """The record is read on every sampled path: with stack copies (dwarf) and with the
    kernel's frame-pointer walk (fp, where a sample carries no stack copy at all and the
    record is exactly the header: the program must still pass the verifier)."""
    for mode in ("fp", "dwarf"):
        result, path = capture(tmp, [CONTEXT_REQUESTS, "--requests", "1000", *DELAY], mode,
                               extra=("--unwind", mode))
        check_context_totals([Profile(path)], parse_context_manifest(result.stdout), CTX_RATE)



@test
def context_dynamic_tls_of_a_dlopened_library(tmp):
    """The writer dlopen()ed after start (glibc told to give it no static TLS): its TLS block
    is reached through each thread's dtv, and the labels are the same."""
    env = dict(os.environ, GLIBC_TUNABLES="glibc.rtld.optional_static_tls=0")
    result, path = capture(tmp, [CONTEXT_REQUESTS_DLOPEN, "--requests", "1000", *DELAY],
                           "dlopen", extra=("--log-level", "debug"), env=env)
    assert re.search(r"pid \d+: TLS pointer in its dtv module's block \+ \d+", result.stderr), \
        "\n".join(line for line in result.stderr.splitlines() if "libbpf" not in line)
    check_context_totals([Profile(path)], parse_context_manifest(result.stdout), CTX_RATE)


@test
def context_values_are_cut_to_the_configured_length(tmp):
    """--label-max-value-bytes 8 (sample_labels.max_value_bytes, the label limiter's cut):
    every endpoint label is its value's first 8 bytes."""
    _, path = capture(tmp, [CONTEXT_REQUESTS, "--requests", "300", *DELAY], "cut",
                      extra=("--label-max-value-bytes", "8"))
    endpoints = {s["labels"]["endpoint"] for s in Profile(path).samples
                 if "endpoint" in s["labels"]}
    assert endpoints == {"GET /rep", "POST /or", "GET /hea"}, endpoints


def endpoint_truths(manifest, rate):
    """{endpoint or '(none)': (bytes truth, tolerance)} and the whole's (truth, tolerance)."""
    classes = defaultdict(list)
    for (_, endpoint, _), cls in manifest.items():
        classes["(none)" if endpoint == "-" else endpoint] += cls
    truths = {e: expected_with_tolerance(c, rate)[:2] for e, c in classes.items()}
    whole = expected_with_tolerance([c for cls in classes.values() for c in cls], rate)[:2]
    return truths, whole


@test
def context_capture_groups_by_endpoint(tmp):
    """capture --group-by endpoint: the summary's top table has one group per endpoint the
    requests published (and "(none)" for the work between requests), each group's share of
    the bytes within the sampling tolerance of the workload's truth, under it its own
    handler."""
    result, _ = capture(tmp, [CONTEXT_REQUESTS, "--requests", "1000", *DELAY], "groups",
                        extra=("--group-by", "endpoint", "--top", "3"))
    groups = re.findall(r"^\s*[\d.]+ \S+\s+([\d.]+)%\s+\d+\s+endpoint=(.+?)\s*$",
                        result.stdout, re.M)
    assert groups, result.stdout
    shares = {name: float(share) for share, name in groups}
    truths, (whole, whole_tol) = endpoint_truths(parse_context_manifest(result.stdout),
                                                 CTX_RATE)
    assert set(shares) == set(truths), (shares, result.stdout)
    for name, (truth, tol) in truths.items():
        want = 100 * truth / whole
        # The share's error: the group's and the whole's, plus the printed rounding.
        allowed = 100 * tol / whole + want * whole_tol / whole + 0.1
        assert abs(shares[name] - want) <= allowed, (name, shares[name], want, allowed)
    # Each group's first row is its handler.
    handler = {"GET /reports/export": "export_report", "POST /orders": "create_order",
               "GET /health": "health_check", "(none)": "idle_work"}
    for name, function in handler.items():
        block = result.stdout.split(f"endpoint={name}", 1)[1].splitlines()[1]
        assert function in block, (name, block)


def other_endpoints(profile, kept):
    """With max_values `kept` of 3 endpoints, in one profile (one limiter): the first values
    seen keep theirs, every later one is "other", so a handler's samples carry one value.
    Returns whether "other" is there."""
    by_function = defaultdict(set)
    for sample in profile.samples:
        names = [n for n in profile.stack_functions(sample)
                 if n in ("export_report", "create_order", "health_check")]
        if names and "endpoint" in sample["labels"]:
            by_function[names[0]].add(sample["labels"]["endpoint"])
    values = set().union(*by_function.values()) if by_function else set()
    assert len(values - {"other"}) <= kept, dict(by_function)
    assert all(len(v) == 1 for v in by_function.values()), dict(by_function)
    return "other" in values


@test
def context_values_past_max_values_become_other(tmp):
    """--label-max-values 2 with three endpoints published: two endpoints keep their value,
    the third's samples carry endpoint="other", the summary counts them; trace and span ids
    (context.trace_ids) are not bounded by it."""
    result, path = capture(tmp, [CONTEXT_REQUESTS, "--requests", "600", "--trace", *DELAY],
                           "other", extra=("--label-max-values", "2",
                                           "--context-trace-ids", "true"))
    profile = Profile(path)
    assert other_endpoints(profile, kept=2), "no endpoint became other"
    tenants = {s["labels"].get("tenant") for s in profile.samples} - {None}
    assert tenants == {"acme", "globex"}, tenants
    other = re.search(r"^\s*(\d+) sample label values counted as \"other\"", result.stdout,
                      re.M)
    assert other and int(other.group(1)) > 0, result.stdout
    spans = {s["labels"].get("span_id") for s in profile.samples} - {None}
    assert len(spans) > 50 and "other" not in spans, len(spans)


@test
def context_values_past_max_values_counted_in_metrics(tmp):
    """The agent with sample_labels.max_values: 2: in a service's profile of an interval its
    third endpoint is "other", and allocscope_sample_label_values_other_total counts it."""
    sinks = os.path.join(tmp, "profiles")
    agent = Agent(tmp, agent_config(sinks, include_executable(CONTEXT_REQUESTS, "shop"),
                                    rate=CTX_RATE_ARG,
                                    extra="sample_labels:\n  max_values: 2\n"))
    try:
        result = run([CONTEXT_REQUESTS, "--requests", "1000", "--delay-ms", "1000"],
                     timeout=300)
        assert result.returncode == 0, result.stderr
        agent.wait_all_exited_and_flushed(timeout=60)
        wait_for_profiles(sinks, "shop")
        found = [other_endpoints(Profile(p), kept=2) for p in profiles_of(sinks, "shop")]
        assert any(found), found
        other = agent.metric("allocscope_sample_label_values_other_total")
        assert other and other > 0, agent.metrics()
    finally:
        agent.stop()


def wait_parca_drained(agent, timeout=60):
    """Waits until the parca sink has nothing queued and delivered something (with one
    series per label set it sends more profiles than the agent builds)."""
    deadline = time.monotonic() + timeout
    while True:
        queued = agent.metric("allocscope_sink_queue_length", sink="parca")
        written = agent.metric("allocscope_sink_profiles_written_total", sink="parca")
        if queued == 0 and written:
            return written
        assert time.monotonic() < deadline, \
            f"parca sink: {queued} queued, {written} written:\n" + \
            "\n".join(re.findall(r"parca sink: .*", agent.log())[-5:])
        time.sleep(0.2)


@test
def context_labels_filter_in_parca(tmp):
    """Through the real Parca (which keeps the values of series labels only): the agent
    pushes one series per request-context label set of a service, so a query by endpoint or
    by tenant gives that slice: its handler's bytes within the sampling tolerance, no other
    handler's; the service's series together still hold every handler. The Pyroscope
    stand-in (the real server cannot be built here) is pushed one profile with the labels on
    its samples, which Pyroscope's distributor splits into one series per endpoint."""
    server = Server("parca")
    receiver = Receiver("pyroscope", tmp)
    window = Window()
    sinks = os.path.join(tmp, "profiles")
    config = f"""
sampling:
  rate: {CTX_RATE_ARG}
  ringbuf_size: {BIG_RING}
targets:
{include_executable(CONTEXT_REQUESTS, "shop")}
profiles:
  interval: 1s
sinks:
  - type: directory
    path: {sinks}
  - type: parca
    url: {server.url}
    max_backoff: 1s
  - type: pyroscope
    url: http://127.0.0.1:{receiver.port}
    max_backoff: 1s
metrics:
  listen: 127.0.0.1:0
log:
  level: debug
symbolize:
  debuginfod_urls: ""
"""
    try:
        agent = Agent(tmp, config)
        try:
            result = run([CONTEXT_REQUESTS, "--requests", "1000", "--delay-ms", "1000"],
                         timeout=300)
            assert result.returncode == 0, result.stderr
            agent.wait_all_exited_and_flushed(timeout=60)
            written = wait_parca_drained(agent)
            built = wait_all_pushed(agent, receiver)
            assert written > built, (written, built)  # more series than services
        finally:
            agent.stop()
            receiver.stop()
        stored = {dict(map(tuple, split)).get("endpoint")
                  for r in receiver.accepted() for one in r["outcome"]["stored"]
                  for split in one["split"]}
        assert stored >= {"GET /health", "GET /reports/export", "POST /orders"}, stored
        manifest = parse_context_manifest(result.stdout)
        labels = server.get("/profiles/labels", **window.params())["labelNames"]
        assert "endpoint" in labels and "tenant" in labels, labels
        values = server.get("/profiles/labels/endpoint/values", **window.params())["labelValues"]
        assert sorted(values) == ["GET /health", "GET /reports/export", "POST /orders"], values
        # Each slice: every handler's bytes as the manifest has them under its labels
        # (none where it has none: no label leaks into another request's series).
        slices = [("endpoint", e) for e in values] + [("tenant", "globex")]
        for key, value in slices:
            selector = f'{{service_name="shop", {key}="{value}"}}'
            profile = merged(server, window, selector, tmp)
            assert profile, f"nothing in Parca for {selector}"
            totals = profile.totals_by_function(0)
            for function in ("export_report", "create_order", "health_check", "idle_work"):
                classes = [c for (f, e, t), cls in manifest.items() for c in cls
                           if f == function and {"endpoint": e, "tenant": t}[key] == value]
                got = totals.get(function, 0)
                if not classes:
                    assert got == 0, (selector, function, got)
                    continue
                truth, tol = expected_with_tolerance(classes, CTX_RATE)[:2]
                print(f"     {selector}: {function} {got:.0f} (truth {truth:.0f} +- {tol:.0f})")
                assert abs(got - truth) <= tol, (selector, function, got, truth, tol)
        whole = merged(server, window, '{service_name="shop"}', tmp).totals_by_function(0)
        for function in ("export_report", "create_order", "health_check", "idle_work"):
            assert whole.get(function, 0) > 0, (function, whole)
    finally:
        receiver.stop()
        server.stop()
