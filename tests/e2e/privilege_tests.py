"""End-to-end tests of who allocscope acts for and what it keeps: a copy of the binary with
file capabilities (`setcap`) run by user nobody profiles only nobody's processes, runs its
command without capabilities and refuses the agent; run as root, the agent and the capture
keep only the capabilities they need once attached."""
import glob
import os
import re
import shutil
import signal
import subprocess
import time

from helpers import ALLOCSCOPE, MALLOC_LOOP, Workload, run, test
from pprof_reader import Profile

AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
FILE_CAPS = "cap_bpf,cap_perfmon,cap_sys_ptrace+ep"  # what the README used to advise

CAP = {"dac_override": 1, "dac_read_search": 2, "kill": 5, "sys_ptrace": 19, "sys_admin": 21,
       "perfmon": 38, "bpf": 39, "checkpoint_restore": 40}
AGENT_CAPS = sum(1 << CAP[c] for c in ("bpf", "perfmon", "sys_ptrace", "dac_read_search",
                                       "checkpoint_restore"))
CAPTURE_CAPS = AGENT_CAPS | 1 << CAP["dac_override"] | 1 << CAP["kill"]
ADDRESS_RANGE = re.compile(r"[0-9a-f]{8,}-[0-9a-f]{8,}|0x[0-9a-f]{6,}")


def setcap_copy(tmp):
    """A copy of allocscope with the file capabilities, in a directory nobody can use."""
    os.chmod(tmp, 0o755)
    out = os.path.join(tmp, "out")
    os.mkdir(out)
    os.chmod(out, 0o777)
    binary = os.path.join(tmp, "allocscope")
    shutil.copy(ALLOCSCOPE, binary)
    result = run(["setcap", FILE_CAPS, binary])
    assert result.returncode == 0, result.stderr
    return binary, out


def status_fields(pid):
    """{'CapEff': int, ..., 'Uid': '...'} of every thread of pid: a list, one dict each."""
    threads = []
    for path in glob.glob(f"/proc/{pid}/task/*/status"):
        fields = {}
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                value = value.strip()
                fields[key] = int(value, 16) if key.startswith("Cap") else value
        threads.append(fields)
    assert threads, f"no threads for pid {pid}"
    return threads


def caps_text(mask):
    return ",".join(name for name, bit in sorted(CAP.items()) if mask & 1 << bit) + \
        f" ({mask:#x})"


@test
def setcap_binary_profiles_only_the_callers_processes(tmp):
    """nobody with a setcap'd copy: a root process is refused with a clear message and no
    address of it printed; nobody's own process is profiled."""
    binary, out = setcap_copy(tmp)
    root_target = Workload([MALLOC_LOOP, "--iterations", "1"])
    nobody_target = Workload(AS_NOBODY + [MALLOC_LOOP, "--iterations", "200000", "--size",
                                          "2000"])
    try:
        refused_path = os.path.join(out, "root.pb.gz")
        result = run(AS_NOBODY + [binary, "--pid", str(root_target.pid), "-d", "2s",
                                  "--log-level", "debug", "-o", refused_path], cwd=out)
        assert result.returncode != 0, result.stdout + result.stderr
        assert f"may not profile pid {root_target.pid}" in result.stderr, result.stderr
        assert "run it with sudo" in result.stderr, result.stderr
        text = result.stdout + result.stderr
        assert not ADDRESS_RANGE.search(text), text
        assert not os.path.exists(refused_path)

        own_path = os.path.join(out, "nobody.pb.gz")
        proc = subprocess.Popen(AS_NOBODY + [binary, "--pid", str(nobody_target.pid), "-r",
                                             "16KiB", "--unwind", "fp", "-o", own_path], cwd=out,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Attached once it says so; then the workload runs and exits, which ends the capture.
        deadline = time.monotonic() + 30
        seen = ""
        while "profiling pid" not in seen:
            line = proc.stderr.readline()
            assert line and time.monotonic() < deadline, seen
            seen += line
        nobody_target.start()
        nobody_target.finish()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        root_target.kill()
        nobody_target.kill()
    assert proc.returncode == 0, seen + stderr
    totals = Profile(own_path).totals_by_function(1)
    assert totals.get("main", 0) > 200000 * 2000 * 0.8, totals


@test
def setcap_binary_refuses_a_process_that_execs_a_setuid_program(tmp):
    """nobody attaches to its own process, which then execs a set-user-ID root program: the
    probes stay, but no sample is taken from the root process (its memory is not nobody's)."""
    binary, out = setcap_copy(tmp)
    setuid_loop = os.path.join(tmp, "setuid_loop")
    shutil.copy(MALLOC_LOOP, setuid_loop)
    os.chmod(setuid_loop, 0o4755)
    # Workload puts --wait last, where the exec'd program would get it.
    target = subprocess.Popen(AS_NOBODY + [MALLOC_LOOP, "--wait", "--iterations", "1", "--exec",
                                           setuid_loop, "--iterations", "200000", "--size",
                                           "2000"], stdout=subprocess.PIPE, text=True)
    out_path = os.path.join(out, "exec.pb.gz")
    try:
        assert target.stdout.readline().startswith("ready")
        proc = subprocess.Popen(AS_NOBODY + [binary, "--pid", str(target.pid), "-r", "16KiB",
                                             "--unwind", "fp", "-o", out_path], cwd=out,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        seen = ""
        while "profiling pid" not in seen:
            line = proc.stderr.readline()
            assert line and time.monotonic() < deadline, seen
            seen += line
        os.kill(target.pid, signal.SIGUSR1)
        target.communicate(timeout=60)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if target.poll() is None:
            target.kill()
    assert target.returncode == 0
    assert proc.returncode == 0, seen + stderr
    assert re.search(r"\d+ samples refused: the process ran with credentials", stdout), stdout
    totals = Profile(out_path).totals_by_function(1)
    assert totals.get("main", 0) < 200000 * 2000 * 0.01, totals


@test
def setcap_binary_runs_the_command_without_privileges(tmp):
    """-- COMMAND as nobody: the command has no capabilities and its set-user-ID bit and file
    capabilities grant nothing (as under a debugger)."""
    binary, out = setcap_copy(tmp)
    status_reader = os.path.join(tmp, "privileged_cat")
    shutil.copy("/bin/cat", status_reader)
    os.chmod(status_reader, 0o4755)  # set-user-ID root
    result = run(["setcap", "cap_net_raw,cap_sys_ptrace+ep", status_reader])
    assert result.returncode == 0, result.stderr
    result = run(AS_NOBODY + [binary, "-o", os.path.join(out, "cmd.pb.gz"), "--",
                              status_reader, "/proc/self/status"], cwd=out)
    assert result.returncode == 0, result.stderr
    status = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    for field in ("CapEff", "CapPrm", "CapAmb", "CapInh"):
        assert int(status[field], 16) == 0, f"{field}: {status[field]}"
    nobody = str(int(run(["id", "-u", "nobody"]).stdout))
    assert status["Uid"].split() == [nobody] * 4, status["Uid"]
    assert status["NoNewPrivs"].strip() == "1", status["NoNewPrivs"]


@test
def setcap_binary_refuses_the_agent(tmp):
    binary, out = setcap_copy(tmp)
    config = os.path.join(out, "allocscope.yaml")
    with open(config, "w") as f:
        f.write(f"sinks:\n  - type: directory\n    path: {out}/profiles\n")
    result = run(AS_NOBODY + [binary, "--config", config], timeout=30, cwd=out)
    assert result.returncode == 1, result.stderr
    assert "the agent profiles every process on the host and uid" in result.stderr
    assert "Run the agent as root" in result.stderr, result.stderr
    assert "agent ready" not in result.stderr


@test
def agent_keeps_only_the_units_capabilities(tmp):
    """Started as root with every capability, the agent runs with the unit's set (effective,
    permitted, bounding, in every thread), no_new_privs, and still profiles."""
    from agent_tests import Agent, agent_config, include_executable, merged_totals, profiles_of
    sinks = os.path.join(tmp, "profiles")
    # A private copy: no other malloc_loop on the host matches the rule.
    loop = os.path.join(tmp, "caps_loop")
    shutil.copy(MALLOC_LOOP, loop)
    workload = Workload([loop, "--iterations", "100000", "--size", "2000"])
    agent = Agent(tmp, agent_config(sinks, include_executable(loop, "loop"), interval="1s"))
    try:
        agent.wait_metric("allocscope_processes", lambda v: v == 1, state="attached")
        for fields in status_fields(agent.proc.pid):
            for key in ("CapEff", "CapPrm", "CapBnd"):
                assert fields[key] == AGENT_CAPS, \
                    f"{fields['Name']} {key}: {caps_text(fields[key])}"
            assert fields["CapAmb"] == 0 and fields["CapInh"] == 0, fields
            assert fields["NoNewPrivs"] == "1", fields
        workload.start()
        workload.finish()
        agent.wait_metric("allocscope_sink_profiles_written_total", lambda v: v >= 1,
                          sink="directory")
        assert agent.stop() == 0
    finally:
        agent.kill()
        workload.kill()
    # Attached and sampling: the totals themselves are agent_tests' business.
    totals = merged_totals(profiles_of(sinks, "loop"), 1)
    assert totals.get("main", 0) > 0, totals


@test
def capture_keeps_only_what_it_needs_once_attached(tmp):
    """A capture run as root drops to the capabilities it still needs once attached; a
    command it starts still runs as root would run it."""
    workload = Workload([MALLOC_LOOP, "--iterations", "100000", "--size", "2000"])
    out_path = os.path.join(tmp, "capture.pb.gz")
    try:
        proc = subprocess.Popen([ALLOCSCOPE, "--pid", str(workload.pid), "-o", out_path],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        seen = ""
        while "profiling pid" not in seen:
            line = proc.stderr.readline()
            assert line and time.monotonic() < deadline, seen
            seen += line
        for fields in status_fields(proc.pid):
            for key in ("CapEff", "CapPrm", "CapBnd"):
                assert fields[key] == CAPTURE_CAPS, f"{key}: {caps_text(fields[key])}"
            assert fields["NoNewPrivs"] == "1", fields
        workload.start()
        workload.finish()
        proc.communicate(timeout=60)
    finally:
        workload.kill()
    assert proc.returncode == 0
    with open("/proc/self/status") as f:
        own = dict(line.split(":", 1) for line in f if ":" in line)
    result = run([ALLOCSCOPE, "-o", os.path.join(tmp, "cmd.pb.gz"), "--", "cat",
                  "/proc/self/status"], cwd=tmp)
    assert result.returncode == 0, result.stderr
    status = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    assert int(status["CapEff"], 16) == int(own["CapEff"], 16), status["CapEff"]
