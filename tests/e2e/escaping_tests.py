"""End-to-end tests of what the agent writes about its targets: a process whose executable
name carries a newline and a terminal escape cannot add a line to the capture's output or the
agent's log, nor colour the terminal (docs/operations.md, "What is logged")."""
import json
import os
import shutil
import subprocess

from helpers import ALLOCSCOPE, ALLOC_SITES, RATE_ARG, Workload, test
from agent_tests import Agent, agent_config

FORGED = "x\n\033[31mallocscope: error: forged"


def forged_copy(tmp, workload):
    """workload copied under a name that tries to forge a log line."""
    path = os.path.join(tmp, FORGED)
    shutil.copy(workload, path)
    return path


def check_no_injection(text, where):
    assert "\033" not in text, f"raw ESC in the {where}: {text!r}"
    for line in text.split("\n"):
        line = line.lstrip("\r")
        assert not line.startswith(("allocscope: error: forged", "\033", "[31m")), \
            f"forged line in the {where}: {line!r}\n{text!r}"


@test
def capture_escapes_target_names(tmp):
    """comm and the executable path in the log, the summary and the probe listing (glibc
    linked statically: the probes go on the executable itself, so its path is shown)."""
    target = forged_copy(tmp, ALLOC_SITES + "_static")
    out_path = os.path.join(tmp, "forged.pb.gz")
    result = subprocess.run([ALLOCSCOPE, "--sample-rate", RATE_ARG, "--log-level", "debug",
                             "-o", out_path, "--", target],
                            capture_output=True, timeout=120)
    stdout = result.stdout.decode("utf-8", "strict")
    stderr = result.stderr.decode("utf-8", "strict")
    assert result.returncode == 0, f"exit {result.returncode}: {stderr}"
    check_no_injection(stderr, "capture's stderr")
    check_no_injection(stdout, "capture's summary")
    # The names are there, escaped: the path where the probes went in the log and in the
    # probe listing, comm in the summary.
    shown = tmp + "/x\\n\\x1b[31mallocscope: error: forged"
    assert f"probes on {shown} (glibc)" in stderr, stderr
    assert f"\n  {shown} (glibc): " in stderr, stderr
    assert "(x\\n\\x1b[31mallocsco)" in stdout, stdout


@test
def agent_escapes_target_names(tmp):
    target = forged_copy(tmp, ALLOC_SITES)
    sinks = os.path.join(tmp, "profiles")
    # JSON's string escapes are YAML's double-quoted ones.
    rule = f"  include:\n    - executable: {json.dumps(target)}\n      service: forged\n"
    agent = Agent(tmp, agent_config(sinks, rule))
    try:
        workload = Workload([target])
        agent.wait_attached(workload.pid, "forged")
        workload.start()
        workload.finish()
        assert agent.stop() == 0
    finally:
        agent.kill()
    log = agent.log()
    check_no_injection(log, "agent's log")
    assert f"service forged: profiling pid {workload.pid} (x\\n\\x1b[31mallocsco)" in log, log
