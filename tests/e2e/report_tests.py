"""allocscope report, diff and the flame graph page (issue 17), on real captures: the text a
user reads, bad input refused without leaving files behind, and the HTML page driven in
headless Chromium (Debian's chromium through playwright-core, installed by scripts/install-deps
into tests/browser/node_modules; no network)."""
import json
import os
import shutil

from helpers import ALLOC_SITES, ALLOCSCOPE, BUILD, ROOT, RATE_ARG, run, test
from pprof_reader import Profile

BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
ARTIFACTS = os.path.join(BUILD, "artifacts")


def site_shares(profile, type_name):
    """Each site_* function's inclusive share of a sample type, by the independent decoder."""
    index = [t for t, _ in profile.sample_types].index(type_name)
    total = sum(s["values"][index] for s in profile.samples)
    return {name: value / total for name, value in profile.totals_by_function(index).items()
            if name.startswith("site_")}


@test
def report_and_diff_of_a_capture(tmp):
    """report prints the capture's top sites; diff of a profile against itself is quiet, and
    against a capture that misses half the sites names them as stopped."""
    out = os.path.join(tmp, "cap.pb.gz")
    cap = run([ALLOCSCOPE, "-r", RATE_ARG, "-o", out, "--", ALLOC_SITES])
    assert cap.returncode == 0, cap.stderr
    report = run([ALLOCSCOPE, "report", out, "--top", "5"])
    assert report.returncode == 0, report.stderr
    assert "allocation site" in report.stdout and "site_realloc" in report.stdout, report.stdout
    shares = site_shares(Profile(out), "alloc_space")
    top = max(shares, key=shares.get)
    first_row = [l for l in report.stdout.splitlines() if l.strip().endswith(top)]
    assert first_row, f"{top} missing from\n{report.stdout}"
    same = run([ALLOCSCOPE, "diff", out, out, "--fail-above", "0.1"])
    assert same.returncode == 0 and "no change" in same.stdout, same.stdout + same.stderr
    by_function = run([ALLOCSCOPE, "report", out, "--by", "function", "--cum", "-n", "3"])
    assert by_function.returncode == 0 and "main" in by_function.stdout, by_function.stdout


@test
def report_refuses_bad_input(tmp):
    """Missing, empty, truncated and non-pprof files: a clear error, exit 1, and no page."""
    good = os.path.join(tmp, "good.pb.gz")
    cap = run([ALLOCSCOPE, "-r", RATE_ARG, "-o", good, "--", ALLOC_SITES])
    assert cap.returncode == 0, cap.stderr
    data = open(good, "rb").read()
    cases = {"missing.pb.gz": None, "empty.pb.gz": b"", "truncated.pb.gz": data[:len(data) // 2],
             "notes.txt": b"this is not a profile\n"}
    words = {"missing.pb.gz": "No such file", "empty.pb.gz": "empty",
             "truncated.pb.gz": "truncated", "notes.txt": "not a pprof profile"}
    for name, content in cases.items():
        path = os.path.join(tmp, name)
        if content is not None:
            with open(path, "wb") as f:
                f.write(content)
        page = os.path.join(tmp, name + ".html")
        for argv in (["report", path], ["report", path, "--html", page],
                     ["diff", good, path, "--html", page]):
            result = run([ALLOCSCOPE] + argv)
            assert result.returncode == 1, f"{argv}: exit {result.returncode}"
            assert words[name] in result.stderr, f"{argv}: {result.stderr}"
            assert not os.path.exists(page), f"{argv} left {page}"
    leftovers = [f for f in os.listdir(tmp) if f.startswith(".allocscope")]
    assert not leftovers, leftovers


@test
def flame_graph_in_chromium(tmp):
    """A capture's --output X.html page, opened offline in headless Chromium: the sites are
    drawn as wide as their share, a click zooms, search sums, objects switch the widths. The
    screenshots stay in build/artifacts/."""
    chromium = shutil.which("chromium")
    node = shutil.which("node")
    modules = os.path.join(BROWSER_DIR, "node_modules", "playwright-core")
    assert chromium and node and os.path.isdir(modules), \
        "chromium, node or playwright-core missing: run sudo scripts/install-deps"
    page = os.path.join(tmp, "cap.html")
    cap = run([ALLOCSCOPE, "-r", RATE_ARG, "-o", page, "--", ALLOC_SITES])
    assert cap.returncode == 0, cap.stderr
    assert f"flame graph: {page}" in cap.stdout, cap.stdout
    profile_path = os.path.join(tmp, "cap.pb.gz")
    assert os.path.exists(profile_path), "the profile is not next to the page"
    profile = Profile(profile_path)
    size = site_shares(profile, "alloc_space")
    count = site_shares(profile, "alloc_objects")
    # Sites of at least 2% (narrower ones are a few pixels: the tolerance would swallow them).
    expect = {
        "bytes": {k: v for k, v in size.items() if v >= 0.02},
        "objects": {k: v for k, v in count.items() if v >= 0.02},
        "zoom": max(size, key=size.get),
        "search": "site_calloc",
        "objects_type": "alloc_objects",
    }
    assert len(expect["bytes"]) >= 4 and "site_calloc" in expect["bytes"], size
    expect_path = os.path.join(tmp, "expect.json")
    with open(expect_path, "w") as f:
        json.dump(expect, f)
    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, "flamegraph.png")
    result = run([node, os.path.join(BROWSER_DIR, "flamegraph_check.js"), page, shot,
                  expect_path], timeout=180, env=dict(os.environ, CHROMIUM=chromium))
    assert result.returncode == 0, result.stderr + result.stdout
    assert os.path.getsize(shot) > 10000, "screenshot is empty"
    shutil.copy(page, os.path.join(ARTIFACTS, "flamegraph.html"))

    # The differential page of two captures opens too (red grew, blue shrank).
    diff_page = os.path.join(ARTIFACTS, "flamegraph-diff.html")
    other = os.path.join(tmp, "other.pb.gz")
    cap = run([ALLOCSCOPE, "-r", RATE_ARG, "-o", other, "--", ALLOC_SITES])
    assert cap.returncode == 0, cap.stderr
    diff = run([ALLOCSCOPE, "diff", other, profile_path, "--html", diff_page])
    assert diff.returncode == 0, diff.stderr
    assert '"diff":true' in open(diff_page).read()
