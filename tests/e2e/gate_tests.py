"""Exact counting and the allocation gate (issue 18): `allocscope count` and `allocscope gate`
on real processes with liballocscope-count.so preloaded (no BPF, no privileges needed).

The library under test is tests/workloads/gate_workload.c: one kv_parse call makes exactly
1 allocation at kv_list_new, 3 at kv_node_new and 6 at kv_copy; gate_workload_extra makes one
more per call at kv_list_new."""
import glob
import os
import shutil
import xml.etree.ElementTree as ET

from helpers import ALLOCSCOPE, ALLOC_SITES, BUILD, CXX_SITES, parse_manifest, run, test
from pprof_reader import Profile

GATE = os.path.join(BUILD, "workloads", "gate_workload")
GATE_EXTRA = os.path.join(BUILD, "workloads", "gate_workload_extra")
PER_CALL = {"kv_list_new": 1, "kv_node_new": 3, "kv_copy": 6}


def count(tmp, argv, name="count.pb.gz", extra=()):
    out = os.path.join(tmp, name)
    result = run([ALLOCSCOPE, "count", "--top", "100", "-o", out, *extra, "--", *argv])
    return result, out


def site_rows(stdout):
    """{site: objects} from the summary's site table."""
    rows, in_sites = {}, False
    for line in stdout.splitlines():
        if "allocation site" in line:
            in_sites = True
            continue
        if in_sites:
            parts = line.split(None, 3)
            if len(parts) < 4 or parts[3] == "total":
                break
            rows[parts[3]] = int(parts[0])
    return rows


def function_rows(stdout):
    """{function: objects} from the summary's inclusive function table."""
    rows, in_functions = {}, False
    for line in stdout.splitlines():
        if "function (inclusive)" in line:
            in_functions = True
            continue
        if in_functions:
            parts = line.split(None, 3)
            if len(parts) < 4 or not parts[0].isdigit():
                break
            rows[parts[3]] = int(parts[0])
    return rows


def leaf_sites(profile, skip_files=("libc.so", "liballocscope-count")):
    """{(site function, ...rest of the stack's functions): [objects, bytes]} from the profile:
    the first location outside libc, all of its functions (inline ones first)."""
    mappings = {m["id"]: m["filename"] for m in profile.mappings}
    sites = {}
    for sample in profile.samples:
        funcs = []
        for loc_id in sample["locations"]:
            loc = profile.locations[loc_id - 1]
            if any(s in mappings.get(loc["mapping_id"], "") for s in skip_files):
                continue
            funcs.append(tuple(loc["functions"]) or (hex(loc["address"]),))
        key = tuple(funcs)
        entry = sites.setdefault(key, [0, 0])
        entry[0] += sample["values"][0]
        entry[1] += sample["values"][1]
    return sites


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def read(path):
    with open(path) as f:
        return f.read()


@test
def count_is_exact_on_the_accuracy_workload(tmp):
    """Every site of alloc_sites (the sampled path's accuracy workload) counted to the
    allocation and the byte: its manifest is the truth."""
    result, out = count(tmp, [ALLOC_SITES])
    assert result.returncode == 0, result.stderr
    manifest = parse_manifest(result.stdout)
    profile = Profile(out)
    profile.check_ids()
    assert [t for t in profile.sample_types] == [("alloc_objects", "count"),
                                                 ("alloc_space", "bytes")]
    got = {}
    for sample in profile.samples:
        funcs = profile.stack_functions(sample)
        if "manifest" in funcs:  # stdout's buffer, allocated by the manifest's printf
            continue
        for site in manifest:
            if site in funcs:
                entry = got.setdefault(site, [0, 0])
                entry[0] += sample["values"][0]
                entry[1] += sample["values"][1]
    for site, classes in manifest.items():
        want = [sum(c for _, c in classes), sum(s * c for s, c in classes)]
        assert got.get(site) == want, f"{site}: counted {got.get(site)}, manifest {want}"
    # The summary names the sites as the top table does (make_buffer is inlined).
    rows = site_rows(result.stdout)
    assert rows["site_malloc_small"] == 200000 and rows["make_buffer"] == 10000, rows


@test
def count_is_exact_on_the_test_library(tmp):
    result, out = count(tmp, [GATE, "-n", "1000"])
    assert result.returncode == 0, result.stderr
    rows = site_rows(result.stdout)
    for site, per_call in PER_CALL.items():
        assert rows.get(site) == 1000 * per_call, (site, rows)
    # Nothing else: the program prints nothing and glibc allocates nothing before main.
    assert "10000 allocations" in result.stdout, result.stdout
    # Inclusive function totals: kv_parse covers its three sites.
    assert "10000" in [line.split()[0] for line in result.stdout.splitlines()
                       if line.endswith(" kv_parse")], result.stdout
    profile = Profile(out)
    assert profile.totals_by_function(0)["kv_parse"] == 10000
    assert profile.totals_by_function(1)["kv_copy"] == 1000 * (2 + 3 + 4) * 2


@test
def count_is_identical_over_ten_runs(tmp):
    """A deterministic program counts the same on every run, stack by stack."""
    first = None
    for i in range(10):
        result, out = count(tmp, [ALLOC_SITES, "--scale", "1"], name=f"run{i}.pb.gz")
        assert result.returncode == 0, result.stderr
        sites = leaf_sites(Profile(out))
        if first is None:
            first = sites
            assert len(first) >= 10, first
        assert sites == first, f"run {i} differs: " + str(
            {k: (first.get(k), v) for k, v in sites.items() if first.get(k) != v})


@test
def count_is_exact_with_threads(tmp):
    """Eight threads allocating at once: every allocation is counted at its site."""
    for _ in range(2):
        result, _ = count(tmp, [GATE, "-t", "8", "-n", "2000"])
        assert result.returncode == 0, result.stderr
        rows = site_rows(result.stdout)
        for site, per_call in PER_CALL.items():
            assert rows.get(site) == 8 * 2000 * per_call, (site, rows)


@test
def count_names_the_caller_of_operator_new(tmp):
    """C++: operator new's caller is the site, as in the sampled profiles."""
    result, out = count(tmp, [CXX_SITES])
    assert result.returncode == 0, result.stderr
    manifest = parse_manifest(result.stdout)
    rows = site_rows(result.stdout)
    for site, classes in manifest.items():
        want = sum(c for _, c in classes)
        assert rows.get(site) == want, f"{site}: {rows.get(site)} != {want}; {rows}"


@test
def count_follows_children_and_reports_failure(tmp):
    script = f"{GATE} -n 10; {GATE} -n 20; exit 7"
    result, _ = count(tmp, ["sh", "-c", script])
    assert result.returncode == 7, (result.returncode, result.stderr)
    assert "the command exited with status 7" in result.stderr
    assert "in 3 processes" in result.stdout, result.stdout
    assert site_rows(result.stdout)["kv_copy"] == 30 * 6


@test
def gate_ratchet_creates_passes_fails_and_never_raises(tmp):
    budget = os.path.join(tmp, "allocs.budget")
    # --update without a file creates it from the run.
    r = run([ALLOCSCOPE, "gate", "--budget", budget, "--update", "--", GATE, "-n", "1000"])
    assert r.returncode == 0, r.stdout + r.stderr
    text = read(budget)
    assert "site      objects=1000  kv_list_new\n" in text, text
    assert "site      objects=6000  kv_copy\n" in text, text
    # At budget: passes.
    r = run([ALLOCSCOPE, "gate", "--budget", budget, "--", GATE, "-n", "1000"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "allocscope gate: ok" in r.stdout
    # One more allocation per call: fails, naming the site, budget, measured and delta.
    r = run([ALLOCSCOPE, "gate", "--budget", budget, "--", GATE_EXTRA, "-n", "1000"])
    assert r.returncode == 1, r.stdout + r.stderr
    over = [line.split() for line in r.stdout.splitlines() if line.startswith("OVER")]
    assert ["OVER", "site", "objects", "1000", "2000", "+1000", "kv_list_new"] in over, r.stdout
    assert "FAIL: " in r.stdout
    # --update never raises: the grown site keeps its budget, the gate still fails.
    r = run([ALLOCSCOPE, "gate", "--budget", budget, "--update", "--", GATE_EXTRA, "-n", "1000"])
    assert r.returncode == 1, r.stdout + r.stderr
    assert read(budget) == text, read(budget)
    # A run that allocates less lowers the budgets; comments stay.
    write(budget, "# guarded by review\n" + text)
    r = run([ALLOCSCOPE, "gate", "--budget", budget, "--update", "--", GATE, "-n", "500"])
    assert r.returncode == 0, r.stdout + r.stderr
    lowered = read(budget)
    assert lowered.startswith("# guarded by review\n"), lowered
    assert "site      objects=500  kv_list_new\n" in lowered, lowered
    assert "site      objects=3000  kv_copy\n" in lowered, lowered
    # ... and the old budget now fails the old code path.
    r = run([ALLOCSCOPE, "gate", "--budget", budget, "--", GATE, "-n", "1000"])
    assert r.returncode == 1, r.stdout


@test
def gate_function_and_unlisted_limits(tmp):
    budget = os.path.join(tmp, "b")
    write(budget, "unlisted objects=9000\nfunction objects=10000 kv_parse\n"
                  "site objects=1000 kv_list_new\n")
    r = run([ALLOCSCOPE, "gate", "--budget", budget, "--", GATE, "-n", "1000"])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run([ALLOCSCOPE, "gate", "--budget", budget, "--", GATE, "-n", "1001"])
    assert r.returncode == 1, r.stdout
    rows = [line.split() for line in r.stdout.splitlines() if line.startswith("OVER")]
    assert ["OVER", "function", "objects", "10000", "10010", "+10", "kv_parse"] in rows, rows
    assert ["OVER", "unlisted", "objects", "9000", "9009", "+9"] in rows, rows
    assert ["OVER", "site", "objects", "1000", "1001", "+1", "kv_list_new"] in rows, rows


@test
def gate_refuses_bad_budget_with_file_and_line(tmp):
    budget = os.path.join(tmp, "allocs.budget")
    marker = os.path.join(tmp, "ran")
    write(budget, "# ok\nsite objects=3 kv_copy\nsite objects=many kv_node_new\n")
    r = run([ALLOCSCOPE, "gate", "--budget", budget, "--", "touch", marker])
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{budget}:3: 'objects=many' is not a count" in r.stderr, r.stderr
    assert not os.path.exists(marker), "the command ran despite the bad budget"
    # A missing budget without --update says how to make one.
    r = run([ALLOCSCOPE, "gate", "--budget", budget + ".none", "--", GATE])
    assert r.returncode == 2 and "--update creates" in r.stderr, r.stderr


@test
def gate_reports_unknown_sites(tmp):
    budget = os.path.join(tmp, "b")
    write(budget, "site objects=6000 kv_copy\nsite objects=5 no_such_site\n")
    r = run([ALLOCSCOPE, "gate", "--budget", budget, "--", GATE, "-n", "1000"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{budget}:2: site 'no_such_site' made no allocation in this run" in r.stdout, r.stdout
    assert any(line.startswith("unseen") and line.endswith("no_such_site")
               for line in r.stdout.splitlines()), r.stdout


@test
def gate_fails_when_the_command_fails(tmp):
    budget = os.path.join(tmp, "b")
    write(budget, "site objects=6000 kv_copy\n")
    r = run([ALLOCSCOPE, "gate", "--budget", budget, "--update", "--", GATE, "-n", "10",
             "-x", "3"])
    assert r.returncode == 1, r.stdout + r.stderr
    assert "the command exited with status 3" in r.stdout, r.stdout
    assert read(budget) == "site objects=6000 kv_copy\n", "a failed run ratcheted the budget"
    r = run([ALLOCSCOPE, "gate", "--budget", budget, "--", os.path.join(tmp, "missing")])
    assert r.returncode == 1 and "status 127" in r.stdout, r.stdout + r.stderr


@test
def gate_writes_junit_and_markdown(tmp):
    budget = os.path.join(tmp, "b")
    write(budget, "site objects=1000 kv_list_new\nsite objects=6000 kv_copy\n")
    junit, md = os.path.join(tmp, "gate.xml"), os.path.join(tmp, "gate.md")
    r = run([ALLOCSCOPE, "gate", "--budget", budget, "--report", "junit", junit, "--",
             GATE_EXTRA, "-n", "1000"])
    assert r.returncode == 1, r.stdout + r.stderr
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == "1" and suite.get("tests") == "3", ET.tostring(suite)
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["kv_list_new objects"], failed
    r = run([ALLOCSCOPE, "gate", "--budget", budget, "--report", "markdown", md, "--",
             GATE_EXTRA, "-n", "1000"])
    text = read(md)
    assert "| OVER | site | kv\\_list\\_new | objects | 1000 | 2000 | +1000 |" in text, text


@test
def gate_report_follows_no_planted_link(tmp):
    """--report in a shared directory: a link planted where the report's temporary file would
    go (REPORT.tmp) is neither followed nor truncated; the report is still written."""
    budget = os.path.join(tmp, "b")
    write(budget, "site objects=6000 kv_copy\n")
    victim, junit = os.path.join(tmp, "victim"), os.path.join(tmp, "gate.xml")
    write(victim, "precious\n")
    os.symlink(victim, junit + ".tmp")
    r = run([ALLOCSCOPE, "gate", "--budget", budget, "--report", "junit", junit, "--",
             GATE, "-n", "10"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert read(victim) == "precious\n", "the report went through a planted link"
    assert ET.parse(junit).getroot().get("failures") == "0"


@test
def allocs_per_run_counts_one_call(tmp):
    """The C header: a test asserting 'at most 10 allocations per call' passes on the library
    and fails on the variant; without the counting library it fails instead of passing."""
    r = run([ALLOCSCOPE, "count", "--top", "0", "-o", os.path.join(tmp, "p"), "--",
             GATE, "-a", "-n", "1"])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run([ALLOCSCOPE, "count", "--top", "0", "-o", os.path.join(tmp, "p"), "--",
             GATE_EXTRA, "-a", "-n", "1"])
    assert r.returncode == 3, r.stdout + r.stderr
    r = run([GATE, "-a", "-n", "1"])
    assert r.returncode == 4 and "liballocscope-count.so is not loaded" in r.stderr, r.stderr


@test
def count_tells_apart_callers_of_libc_allocating_functions(tmp):
    """strdup called by two callbacks through one function-pointer call site: the return
    address into the caller is in neither the key's site (inside libc's strdup) nor its
    frame-pointer chain (the same call site), so these allocations are unwound one by one."""
    result, _ = count(tmp, [GATE, "-c", "-n", "1000"])
    assert result.returncode == 0, result.stderr
    rows = site_rows(result.stdout)
    assert rows.get("cb_one") == 1000 and rows.get("cb_two") == 2000, rows


@test
def count_tells_apart_nested_libc_callers(tmp):
    """fopen, getline, strdup and asprintf allocate in frames nested inside libc (fopen ->
    __fopen_internal, getline -> __getdelim -> underflow -> doallocate) for lib_a and lib_b,
    both reached through one pointer call site, from outer_x (each once) and outer_y (lib_a
    twice, lib_b three times): every allocation goes to its caller, and to the outer function
    above it, whose frame chain is found again past libc's frames."""
    lines = os.path.join(tmp, "lines.txt")
    write(lines, "one\ntwo two\nthree three three\n")
    n = 300
    result, _ = count(tmp, [GATE, "-l", lines, "-n", str(n)])
    assert result.returncode == 0, result.stderr
    rows, functions = site_rows(result.stdout), function_rows(result.stdout)
    per_call = rows.get("lib_a", 0) // (3 * n)
    assert per_call >= 5, result.stdout  # fopen, its buffer, getline's line, strdup, asprintf
    assert rows == {"lib_a": 3 * per_call * n, "lib_b": 4 * per_call * n}, result.stdout
    assert functions.get("outer_x") == 2 * per_call * n, result.stdout
    assert functions.get("outer_y") == 5 * per_call * n, result.stdout
    assert functions.get("strdup") == 7 * n, result.stdout


@test
def count_no_aslr_pins_addresses(tmp):
    """--no-aslr: the command's mappings sit at the same addresses run after run."""
    starts = []
    for i in range(2):
        result, out = count(tmp, [GATE, "-n", "10"], name=f"n{i}.pb.gz", extra=["--no-aslr"])
        assert result.returncode == 0, result.stderr
        assert "cannot turn address randomisation off" not in result.stderr, result.stderr
        starts.append(sorted(m["start"] for m in Profile(out).mappings))
    assert starts[0] == starts[1], starts


@test
def count_refuses_malformed_count_files(tmp):
    """The command can write into the counts directory (its environment names it): a file
    that is not the library's is refused with a message, not a crash or a wrong count."""
    for content in ["garbage", "allocscope-count 1\\nstack 1 2 zz\\nmaps\\n",
                    "allocscope-count 1\\nstack 5 50 1 2\\nmaps\\nnot a maps line\\n"]:
        script = f"printf '{content}' > \"$ALLOCSCOPE_COUNT_DIR/9-0.count\""
        result, out = count(tmp, ["sh", "-c", script])
        assert result.returncode == 1, (content, result.stdout, result.stderr)
        assert "count file 9-0.count" in result.stderr and "malformed" in result.stderr, \
            result.stderr
        assert "Traceback" not in result.stderr and not os.path.exists(out)


AS_NOBODY = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]


def counts_tmpdir(tmp):
    """A TMPDIR for the counts directory that nobody may pass through (the test's own tmp is
    0700), so that what allocscope leaves behind can be listed; and the environment that
    names it, with copies of the workload and the counting library nobody can read (the
    checkout may sit in a directory only root may enter)."""
    os.chmod(tmp, 0o711)
    path = os.path.join(tmp, "counts-tmp")
    os.mkdir(path, 0o755)
    bin_dir = os.path.join(tmp, "bin")
    os.mkdir(bin_dir, 0o755)
    for src in (GATE, os.path.join(BUILD, "liballocscope-count.so")):
        shutil.copy(src, bin_dir)
    env = dict(os.environ, TMPDIR=path,
               ALLOCSCOPE_COUNT_LIB=os.path.join(bin_dir, "liballocscope-count.so"))
    return path, env, os.path.join(bin_dir, "gate_workload")


@test
def count_keeps_counts_of_a_command_that_drops_privileges(tmp):
    """allocscope count run as root, the command switching to user nobody (as setpriv, a
    daemon's setuid or `sudo -u` inside a script do): its counts still arrive, and the counts
    directory is gone afterwards."""
    tmpdir, env, gate = counts_tmpdir(tmp)
    out = os.path.join(tmp, "count.pb.gz")
    result = run([ALLOCSCOPE, "count", "--top", "100", "-o", out, "--", *AS_NOBODY, gate,
                  "-n", "10"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = site_rows(result.stdout)
    assert rows == {site: 10 * n for site, n in PER_CALL.items()}, result.stdout
    assert os.listdir(tmpdir) == [], os.listdir(tmpdir)


@test
def count_refuses_links_and_fifos_planted_by_a_command_that_dropped_privileges(tmp):
    """The command (here as nobody) can create entries in the counts directory: a symbolic
    link to a root-only file, a FIFO (would block a plain open), a second link to a file are
    refused with their name, never followed, never hang; everything is removed after."""
    tmpdir, env, _ = counts_tmpdir(tmp)
    plants = ['ln -s /etc/shadow "$ALLOCSCOPE_COUNT_DIR/7-0.count"',
              'mkfifo "$ALLOCSCOPE_COUNT_DIR/7-0.count"',
              'echo x > "$ALLOCSCOPE_COUNT_DIR/a" && ln "$ALLOCSCOPE_COUNT_DIR/a" '
              '"$ALLOCSCOPE_COUNT_DIR/7-0.count"']
    for plant in plants:
        out = os.path.join(tmp, "count.pb.gz")
        result = run([ALLOCSCOPE, "count", "--top", "0", "-o", out, "--", *AS_NOBODY, "sh",
                      "-c", plant], env=env, timeout=60)
        assert result.returncode == 1, (plant, result.stdout, result.stderr)
        assert "count file 7-0.count" in result.stderr, (plant, result.stderr)
        assert "Traceback" not in result.stderr and not os.path.exists(out), plant
        assert os.listdir(tmpdir) == [], (plant, glob.glob(tmpdir + "/**", recursive=True))


GTEST_EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "workloads", "gtest_allocs.cc")


def build_gtest_example(tmp, name, defines=()):
    cxx = shutil.which("g++")
    assert cxx and os.path.exists("/usr/include/gtest/gtest.h"), \
        "g++ and GoogleTest are needed (Debian: libgtest-dev; run scripts/install-deps)"
    exe = os.path.join(tmp, name)
    sampler = os.path.join(os.path.dirname(__file__), "..", "..", "sampler")
    result = run([cxx, "-O1", "-g", "-std=c++17", "-Wall", "-Werror", "-I", sampler,
                  *defines, GTEST_EXAMPLE, "-o", exe, "-lgtest", "-lgtest_main", "-pthread"])
    assert result.returncode == 0, result.stderr
    return exe


@test
def allocs_per_run_in_a_gtest_test(tmp):
    """The documented GoogleTest example (tests/workloads/gtest_allocs.cc): EXPECT_LE(
    allocs_per_run(...), 3) passes under allocscope count, fails naming the line and the
    measured 5 when the code under test stops reserving, and fails (inf) without the
    counting library instead of passing unchecked."""
    good = build_gtest_example(tmp, "gtest_allocs")
    grown = build_gtest_example(tmp, "gtest_allocs_grown", ["-DSPLIT_WITHOUT_RESERVE"])
    out = os.path.join(tmp, "p.pb.gz")
    result = run([ALLOCSCOPE, "count", "--top", "0", "-o", out, "--", good])
    assert result.returncode == 0 and "[  PASSED  ] 2 tests." in result.stdout, \
        result.stdout + result.stderr
    result = run([ALLOCSCOPE, "count", "--top", "0", "-o", out, "--", grown])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "gtest_allocs.cc:52: Failure" in result.stdout, result.stdout
    assert "actual: 5 vs 3" in result.stdout, result.stdout
    result = run([good])
    assert result.returncode == 1 and "actual: inf vs 3" in result.stdout, result.stdout
    assert "liballocscope-count.so is not loaded" in result.stderr, result.stderr
