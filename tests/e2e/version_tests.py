"""End-to-end tests of versions on profiles (issue 15): two builds of one program, the second
allocating four times as much at one site (tests/workloads/version_sites.c, -DGROWS=4), each
with its own GNU build id.

- The one-off capture labels each target's samples with service_version, the short build id
  of its executable, and --group-by service_version splits the top table by it.
- The agent labels each service profile with service_version: the rule's `version:` when
  given, else the short build id; the rule's repository and git_ref go as service_repository
  and service_git_ref. Through the real Parca's own query API (scripts/backends), filtering
  by service_version gives each build's slice, and a diff of the two names the site that
  grew. The Pyroscope stand-in (the real server cannot be built here: scripts/backends) is
  sent the same labels on its series."""
import base64
import gzip
import os
import re

from agent_tests import Agent, profiles_of
from backend_tests import ALLOC_SPACE, Server, Window, merged, wait_pushed
from helpers import (ALLOCSCOPE, BUILD, ROOT, Workload, finish_allocscope, parse_manifest, run,
                     start_allocscope, test)
from pprof_reader import Profile
from push_tests import Receiver
from pyroscope_tests import wait_all_pushed

VERSION_SITES = os.path.join(BUILD, "workloads", "version_sites")
SIZE, CALLS, GROWS = 65536, 2000, 4


def build_id(path):
    out = run(["readelf", "-n", path]).stdout
    match = re.search(r"Build ID: ([0-9a-f]+)", out)
    assert match, f"{path} has no GNU build id:\n{out}"
    return match.group(1)


def two_builds(tmp):
    """The Makefile's build (GROWS 1) and one with GROWS 4, with their short build ids."""
    v2 = os.path.join(tmp, "version_sites_v2")
    cc = run(["cc", "-O1", "-g", "-fno-omit-frame-pointer", "-fno-inline", "-Wall", "-Werror",
              f"-DGROWS={GROWS}", os.path.join(ROOT, "tests", "workloads", "version_sites.c"),
              "-o", v2])
    assert cc.returncode == 0, cc.stderr
    ids = build_id(VERSION_SITES)[:12], build_id(v2)[:12]
    assert ids[0] != ids[1], ids
    return (VERSION_SITES, v2), ids


def inclusive(profile, function):
    return profile.totals_by_function(0).get(function, 0) if profile else 0


@test
def capture_groups_by_service_version(tmp):
    """Two builds profiled by one capture: every sample carries its process's short build id
    as service_version, and the summary's top table grouped by it shows the build that
    allocates more first, each group with its own share."""
    (v1, v2), (id1, id2) = two_builds(tmp)
    out_path = os.path.join(tmp, "capture.pb.gz")
    old, new = Workload([v1]), Workload([v2])
    proc, seen = start_allocscope(["--pid", f"{old.pid},{new.pid}", "-r", "16KiB",
                                   "--group-by", "service_version", "-o", out_path])
    old.start()
    new.start()
    old.finish()
    new.finish()
    code, stdout, stderr = finish_allocscope(proc, seen)
    assert code == 0, stderr
    print("     " + "\n     ".join(stdout.strip().splitlines()[-8:]))
    # The pprof: the label on every sample, by pid.
    profile = Profile(out_path)
    want = {old.pid: id1, new.pid: id2}
    for s in profile.samples:
        assert s["labels"].get("service_version") == want[s["labels"]["pid"]], s["labels"]
    # The summary: one group line per build, the larger (GROWS 4: 2.5 times the bytes) first.
    groups = re.findall(r"^\s*([\d.]+ \S+)\s+([\d.]+)%\s+\d+\s+service_version=(\S+)$",
                        stdout, re.M)
    assert [g[2] for g in groups] == [id2, id1], stdout
    shares = [float(g[1]) for g in groups]
    expected = (CALLS + CALLS * GROWS) / (2 * CALLS + CALLS + CALLS * GROWS) * 100
    assert abs(shares[0] - expected) < 5 and abs(sum(shares) - 100) < 0.5, (shares, expected)
    # A label name that is not one is refused before anything runs.
    bad = run([ALLOCSCOPE, "--group-by", "service-version", "--", "true"])
    assert bad.returncode == 2 and "invalid --group-by 'service-version'" in bad.stderr, \
        bad.stderr


def agent_config(sinks, parca_url, pyroscope_port, v1, v2):
    return f"""
sampling:
  rate: 16KiB
targets:
  include:
    - executable: {v1}
      service: shop
    - executable: {v2}
      service: shop
      version: "2.14"
      repository: https://github.com/acme/shop
      git_ref: v2.14.0
profiles:
  interval: 1s
sinks:
  - type: directory
    path: {sinks}
  - type: parca
    url: {parca_url}
    max_backoff: 1s
  - type: pyroscope
    url: http://127.0.0.1:{pyroscope_port}
    max_backoff: 1s
metrics:
  listen: 127.0.0.1:0
log:
  level: debug
symbolize:
  debuginfod_urls: ""
"""


def diff(server, window, tmp, base, compare):
    """Parca's absolute diff of two selections as a Profile: compare's samples positive,
    base's negative (pkg/query ComputeDiff)."""
    params = {"mode": "MODE_DIFF", "reportType": "REPORT_TYPE_PPROF", "diff.absolute": "true"}
    for side, selector in (("a", base), ("b", compare)):
        params[f"diff.{side}.mode"] = "MODE_MERGE"
        params[f"diff.{side}.merge.query"] = f"{ALLOC_SPACE}{selector}"
        params.update(window.params(f"diff.{side}.merge."))
    body = server.get("/profiles/query", **params)
    raw = base64.b64decode(body.get("pprof", ""))
    assert raw, f"Parca returned no diff: {str(body)[:500]}"
    path = os.path.join(tmp, "diff.pb.gz")
    with open(path, "wb") as f:
        f.write(raw if raw[:2] == b"\x1f\x8b" else gzip.compress(raw))
    return Profile(path)


@test
def service_version_filters_and_diffs_in_parca(tmp):
    """The agent profiles two builds of one service: the first labelled with its build id,
    the second with its rule's version "2.14" (and repository and git_ref). In the real
    Parca, service_version lists both, each filters to its build's slice, a diff of the two
    names site_grows as what grew (site_steady did not); the Pyroscope stand-in is sent the
    same labels."""
    (v1, v2), (id1, _) = two_builds(tmp)
    server = Server("parca")
    receiver = Receiver("pyroscope", tmp)
    sinks = os.path.join(tmp, "profiles")
    window = Window()
    try:
        agent = Agent(tmp, agent_config(sinks, server.url, receiver.port, v1, v2))
        try:
            old, new = Workload([v1]), Workload([v2])
            agent.wait_attached(old.pid, "shop")
            agent.wait_attached(new.pid, "shop")
            old.start()
            new.start()
            parse_manifest(old.finish())
            parse_manifest(new.finish())
            agent.wait_all_exited_and_flushed()
            wait_pushed(agent)
            wait_all_pushed(agent, receiver)
            assert agent.stop() == 0
        finally:
            agent.kill()
            receiver.stop()

        # The directory sink: one service name, two versions, each file one of them.
        versions = {s["labels"].get("service_version") for p in profiles_of(sinks, "shop")
                    for s in Profile(p).samples}
        assert versions == {id1, "2.14"}, versions

        # Parca lists the labels and both values.
        labels = server.get("/profiles/labels", **window.params())["labelNames"]
        for name in ("service_version", "service_repository", "service_git_ref"):
            assert name in labels, f"{name} not listed: {labels}"
        values = server.get("/profiles/labels/service_version/values",
                            **window.params())["labelValues"]
        assert sorted(values) == sorted([id1, "2.14"]), values
        assert server.get("/profiles/labels/service_git_ref/values", **window.params())[
            "labelValues"] == ["v2.14.0"]

        # Each value filters to its build: site_grows is 4x site_steady only in 2.14.
        old_slice = merged(server, window, f'{{service_version="{id1}"}}', tmp)
        new_slice = merged(server, window, '{service_version="2.14"}', tmp)
        steady, grows = SIZE * CALLS, SIZE * CALLS * GROWS
        for profile, want_grows, what in ((old_slice, steady, id1), (new_slice, grows, "2.14")):
            got_steady, got_grows = (inclusive(profile, "site_steady"),
                                     inclusive(profile, "site_grows"))
            print(f"     {what}: site_steady {got_steady}, site_grows {got_grows}")
            assert abs(got_steady - steady) < 0.1 * steady, (what, got_steady, steady)
            assert abs(got_grows - want_grows) < 0.1 * want_grows, (what, got_grows, want_grows)

        # The diff from the first build to 2.14: site_grows grew by (GROWS - 1) x, nothing
        # else moved.
        d = diff(server, window, tmp, f'{{service_version="{id1}"}}',
                 '{service_version="2.14"}')
        grew = inclusive(d, "site_grows")
        still = inclusive(d, "site_steady")
        print(f"     diff: site_grows {grew:+}, site_steady {still:+}")
        assert abs(grew - (grows - steady)) < 0.1 * (grows - steady), grew
        assert abs(still) < 0.1 * steady, still
        top = max(((n, v) for n, v in d.totals_by_function(0).items()
                   if n.startswith("site_")), key=lambda nv: nv[1])
        assert top[0] == "site_grows", top
    finally:
        assert server.stop() == 0

    # The Pyroscope stand-in: the same labels on the pushed series.
    series = [dict(map(tuple, one["labels"])) for r in receiver.accepted()
              for one in r["series"]]
    assert {s.get("service_version") for s in series} == {id1, "2.14"}, series[:3]
    for s in series:
        assert s["service_name"] == "shop"
        if s["service_version"] == "2.14":
            assert s.get("service_repository") == "https://github.com/acme/shop", s
            assert s.get("service_git_ref") == "v2.14.0", s
        else:
            assert "service_repository" not in s and "service_git_ref" not in s, s
