"""End-to-end tests of the Pyroscope sink against the stand-in that judges every push as
Grafana Pyroscope v2.2.1 would (receivers/pyroscope_rules.py: its label and profile
validation, 16,000 samples, 4 MiB per profile, the 2 MiB ingestion burst, the 1 h ingestion
window, numeric labels dropped, frames without a name). The real server cannot run here: its
Go module is not served to this project's machines (scripts/backends). The tests check what a
Pyroscope user would: a busy service is taken whole, an executable with a name that is not
UTF-8 is taken, one profile refused for ever does not hold up the next, a profile too old for
the server is dropped by the agent instead of sent, and every frame has a name."""
import gzip
import os
import re
import shutil
import time

from agent_tests import Agent, merged_totals, profiles_of
from helpers import ALLOC_SITES, BUILD, MALLOC_LOOP, Workload, run, test
from pprof_reader import Profile
from push_tests import Receiver, metric, wait_metric

STACK_FANOUT = os.path.join(BUILD, "workloads", "stack_fanout")


def config(sink_dir, receiver, rules, interval="1s", rate="16KiB", sampling="", sink="",
           level="debug"):
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
sinks:
  - type: directory
    path: {sink_dir}
  - type: pyroscope
    url: http://127.0.0.1:{receiver.port}
    max_backoff: 1s
{sink}
metrics:
  listen: 127.0.0.1:0
log:
  level: {level}
symbolize:
  debuginfod_urls: ""
"""


def refusals(receiver):
    """What the stand-in refused, as the real server would have: (status, reason, message)."""
    return [(r["status"], r["outcome"]["reason"], r["outcome"]["message"])
            for r in receiver.requests() if r.get("outcome", {}).get("status", 200) != 200]


def wait_outcomes(receiver, accepted, timeout=30, refused_too=True):
    """Until the stand-in accepted that many requests (or refused one, with refused_too)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(receiver.accepted()) >= accepted or (refused_too and refusals(receiver)):
            return
        time.sleep(0.1)


def wait_all_pushed(agent, receiver, timeout=60):
    """Every profile the agent built is in the stand-in, or the test fails with what the
    stand-in refused."""
    built = metric(agent, "allocscope_profiles_built_total")
    try:
        wait_metric(agent, "allocscope_sink_profiles_written_total", lambda v: v == built,
                    timeout=timeout, sink="pyroscope")
    except AssertionError:
        said = re.findall(r"pyroscope sink: .*", agent.log())
        raise AssertionError(f"the stand-in took {len(receiver.accepted())} of {built:.0f} "
                             f"profiles; refused: {refusals(receiver)[:3]}; the agent said:\n"
                             + "\n".join(said[-5:])) from None
    return built


def check_named_frames(receiver):
    """No accepted profile has a frame a flame graph would show without a name."""
    for r in receiver.accepted():
        for stored in r["outcome"]["stored"]:
            notes = stored["notes"]
            assert notes["samples_with_unnamed_frames"] == 0, \
                f"request {r['seq']}: {notes['samples_with_unnamed_frames']} samples " \
                f"({notes['unnamed_values']}) have a frame without a name, at " \
                f"{notes['unnamed_examples']}"
            assert notes["samples_dropped"] == 0, f"request {r['seq']}: {notes}"


# ---------------------------------------------------------------------------------------------

@test
def pyroscope_standin_takes_a_busy_service(tmp):
    """24 processes x 4,096 stacks in one interval: more than 16,000 (pid, stack) pairs and
    more than 2 MiB of pprof in the directory sink. Pyroscope takes every pushed profile, and
    its totals are the directory sink's."""
    receiver = Receiver("pyroscope", tmp)
    sinks = os.path.join(tmp, "profiles")
    workers = 24
    agent = Agent(tmp, config(sinks, receiver, f"    - executable: {STACK_FANOUT}\n"
                                               f"      service: busy\n",
                              interval="10s", rate="4KiB",
                              sampling="  unwind: fp\n  stack_copy_size: 1KiB\n"
                                       "  ringbuf_size: 256MiB\n"))
    try:
        workload = Workload([STACK_FANOUT, "--workers", str(workers), "--round-ms", "3000"])
        agent.wait_attached(workload.pid, "busy")
        workload.start()  # forks the workers; the second signal lets them allocate
        agent.wait_metric("allocscope_processes", lambda v: v == workers + 1, timeout=60,
                          state="attached")
        workload.start()
        workload.finish()
        agent.wait_all_exited_and_flushed(timeout=60)
        built = wait_all_pushed(agent, receiver, timeout=120)
        assert agent.metric("allocscope_samples_dropped_total", reason="ringbuf_full") == 0
        assert agent.stop() == 0
    finally:
        agent.kill()
        receiver.stop()
    paths = profiles_of(sinks, "busy")
    biggest = max(paths, key=lambda p: len(Profile(p).samples))
    with open(biggest, "rb") as f:
        raw_size = len(gzip.decompress(f.read()))
    pairs = len(Profile(biggest).samples)
    pushed = receiver.accepted()
    largest = max(s["size"] for r in pushed for s in r["outcome"]["stored"])
    most = max(s["samples"] for r in pushed for s in r["outcome"]["stored"])
    print(f"     directory sink: {pairs} samples, {raw_size} bytes in the biggest interval; "
          f"pushed: at most {most} samples, {largest} bytes (labels included)")
    # The premise: the directory sink's profile is past Pyroscope's default limits.
    assert pairs > 16000 and raw_size > 2 * 1024 * 1024, (pairs, raw_size)
    assert refusals(receiver) == [] and len(pushed) == built, refusals(receiver)[:3]
    check_named_frames(receiver)
    pushed_paths = [receiver.profile_path(r) for r in pushed]
    for index, what in ((1, "alloc_space"), (0, "alloc_objects")):
        mine = sum(sum(s["values"][index] for s in Profile(p).samples) for p in paths)
        theirs = sum(sum(s["values"][index] for s in Profile(p).samples)
                     for p in pushed_paths)
        assert mine == theirs, f"{what}: pushed {theirs}, directory sink {mine}"
    # Stacks folded into (trimmed) keep their bytes there; every other function's total is
    # the directory sink's.
    sink_fn, pushed_fn = merged_totals(paths, 1), merged_totals(pushed_paths, 1)
    trimmed = pushed_fn.pop("(trimmed)", 0)
    wrong = {n: (v, pushed_fn.get(n, 0)) for n, v in sink_fn.items()
             if not sink_fn[n] - trimmed <= pushed_fn.get(n, 0) <= sink_fn[n]}
    assert not wrong, f"function totals (directory sink, pushed): {list(wrong.items())[:5]}"
    assert pushed_fn.get("fan_leaf", 0) + trimmed >= sink_fn["fan_leaf"]


@test
def pyroscope_standin_takes_an_executable_named_in_bad_utf8(tmp):
    """An executable whose name is not UTF-8 gives its service name: Pyroscope refuses a
    label that is not valid UTF-8, so the agent repairs it (one U+FFFD for a run of bad bytes)."""
    receiver = Receiver("pyroscope", tmp)
    sinks = os.path.join(tmp, "profiles")
    target = os.fsencode(tmp) + b"/loop-\xff\xfe"
    shutil.copy(MALLOC_LOOP, target)
    # Attachment is read from /metrics, and the log kept short: the test must not depend on
    # how the agent writes the name in its log.
    agent = Agent(tmp, config(sinks, receiver, f"    - executable: {tmp}/loop-*\n",
                              level="info"))
    workload = None
    try:
        workload = Workload([target, "--size", "512", "--iterations", "1000000000000"])
        agent.wait_metric("allocscope_processes", lambda v: v == 1, timeout=30,
                          state="attached")
        workload.start()
        wait_outcomes(receiver, 2)
        got, refused = receiver.accepted(), refusals(receiver)
        workload.kill()
        assert agent.stop() == 0
    finally:
        agent.kill()
        receiver.stop()
        if workload:
            workload.kill()
    assert not refused and len(got) >= 2, f"refused: {refused[:2]}"
    for r in got:
        labels = dict(r["series"][0]["labels"])
        assert labels["service_name"] == "loop-\ufffd", labels
        assert r["outcome"]["stored"][0]["notes"]["numeric_labels_dropped"] == {}
    check_named_frames(receiver)


@test
def pyroscope_standin_refusing_one_profile_for_ever_holds_up_nothing(tmp):
    """The server answers 429 to one profile on every attempt (as Pyroscope's rate limiter
    does to a profile above its burst): the sink gives it up after max_attempts (8 by
    default), counts and logs that, and delivers the next ones."""
    script = [{"status": 429, "sticky": True,
               "body": {"code": "resource_exhausted",
                        "message": "push rate limit (4.0 MiB) exceeded while adding 2.5 MiB"}}]
    receiver = Receiver("pyroscope", tmp, script=script)
    sinks = os.path.join(tmp, "profiles")
    agent = Agent(tmp, config(sinks, receiver, f"    - executable: {MALLOC_LOOP}\n"
                                               f"      service: loop\n"))
    workload = None
    try:
        workload = Workload([MALLOC_LOOP, "--size", "512", "--iterations", "1000000000000"])
        agent.wait_attached(workload.pid)
        workload.start()
        wait_outcomes(receiver, 2, timeout=60, refused_too=False)
        requests = receiver.requests()
        ids = [r["series"][0]["samples"][0]["id"] for r in requests]
        assert len(receiver.accepted()) >= 2, \
            f"{len(requests)} requests for {len(set(ids))} profiles in 60 s, answered " \
            f"{sorted(set(r['status'] for r in requests))}; none after the first delivered"
        wait_metric(agent, "allocscope_sink_profiles_given_up_total", lambda v: v == 1,
                    sink="pyroscope")
        assert metric(agent, "allocscope_sink_profiles_dropped_total", sink="pyroscope") == 1
        workload.kill()
        assert agent.stop() == 0
    finally:
        agent.kill()
        receiver.stop()
        if workload:
            workload.kill()
    requests = receiver.requests()
    stuck = requests[0]["series"][0]["samples"][0]["id"]
    tries = [r for r in requests if r["series"][0]["samples"][0]["id"] == stuck]
    assert [r["status"] for r in tries] == [429] * 8, [r["status"] for r in tries]
    after = [r for r in requests if r["seq"] > tries[-1]["seq"]]
    assert after and all(r["status"] == 200 for r in after), [r["status"] for r in after]
    assert re.search(r"pyroscope sink: dropped the profile of loop after the server refused "
                     r"it 8 times \(max_attempts\): HTTP 429", agent.log()), agent.log()


@test
def pyroscope_standin_spooled_profiles_past_the_window_are_dropped(tmp):
    """The server's ingestion window shortened to 4 s (Pyroscope's is 1 h) and the agent's
    max_profile_age to 3 s (its default is 50 min): after an outage, the spooled profiles
    older than that are dropped without a request, counted and logged; the newer ones are
    delivered; the server refuses nothing."""
    spool = os.path.join(tmp, "spool")
    receiver = Receiver("pyroscope", tmp, start=False, limits={"reject_older_than_s": 4})
    sinks = os.path.join(tmp, "profiles")
    agent = Agent(tmp, config(sinks, receiver, f"    - executable: {MALLOC_LOOP}\n"
                                               f"      service: loop\n",
                              sink=f"    spool_dir: {spool}\n    max_profile_age: 3s\n"))
    workload = None
    try:
        workload = Workload([MALLOC_LOOP, "--size", "512", "--iterations", "1000000000000"])
        agent.wait_attached(workload.pid)
        workload.start()
        # While the endpoint is down, the spool's oldest profiles pass 3 s and go.
        wait_metric(agent, "allocscope_sink_profiles_expired_total", lambda v: v >= 3,
                    timeout=30, sink="pyroscope")
        assert metric(agent, "allocscope_sink_spool_profiles", sink="pyroscope") >= 1
        receiver.start()
        receiver.wait_accepted(2, timeout=30, agent=agent)
        workload.kill()
        agent.wait_all_exited_and_flushed()
        built = metric(agent, "allocscope_profiles_built_total")
        wait_metric(agent, "allocscope_sink_spool_profiles", lambda v: v == 0,
                    sink="pyroscope")
        written = metric(agent, "allocscope_sink_profiles_written_total", sink="pyroscope")
        expired = metric(agent, "allocscope_sink_profiles_expired_total", sink="pyroscope")
        dropped = metric(agent, "allocscope_sink_profiles_dropped_total", sink="pyroscope")
        assert agent.stop() == 0
    finally:
        agent.kill()
        receiver.stop()
        if workload:
            workload.kill()
    print(f"     {built:.0f} built: {expired:.0f} expired in the spool, {written:.0f} "
          f"delivered")
    assert refusals(receiver) == [], refusals(receiver)[:3]
    assert dropped == expired and written + expired == built, (written, expired, built)
    assert re.search(r"pyroscope sink: dropped the profile of loop without sending it: it is "
                     r"\S+ old, past max_profile_age \(\S+\), and Pyroscope refuses profiles "
                     r"older than 1 h", agent.log()), agent.log()


@test
def pyroscope_standin_sees_a_name_for_every_frame(tmp):
    """A stripped executable: Pyroscope shows a frame with no function as nothing, so each of
    its frames must carry a name that says what it is (file+offset)."""
    receiver = Receiver("pyroscope", tmp)
    stripped = os.path.join(tmp, "alloc_sites_stripped")
    result = run(["strip", "--strip-all", "-o", stripped, ALLOC_SITES])
    assert result.returncode == 0, result.stderr
    sinks = os.path.join(tmp, "profiles")
    agent = Agent(tmp, config(sinks, receiver, f"    - executable: {stripped}\n"
                                               f"      service: stripped\n",
                              sampling="  stack_copy_size: 4KiB\n  ringbuf_size: 256MiB\n"))
    try:
        workload = Workload([stripped])
        agent.wait_attached(workload.pid, "stripped")
        workload.start()
        workload.finish()
        agent.wait_all_exited_and_flushed()
        wait_all_pushed(agent, receiver)
        assert agent.stop() == 0
    finally:
        agent.kill()
        receiver.stop()
    assert refusals(receiver) == [], refusals(receiver)[:3]
    check_named_frames(receiver)
    names = set()
    for r in receiver.accepted():
        profile = Profile(receiver.profile_path(r))
        for loc in profile.locations:
            mapping = profile.mappings[loc["mapping_id"] - 1] if loc["mapping_id"] else {}
            if mapping.get("filename", "").endswith("alloc_sites_stripped"):
                names.update(loc["functions"])
    bad = [n for n in names if not re.fullmatch(r"alloc_sites_stripped\+0x[0-9a-f]+", n)]
    assert names and not bad, f"names of the stripped executable's frames: {bad}"
