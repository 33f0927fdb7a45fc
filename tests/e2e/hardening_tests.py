"""The command line against clumsy and hostile input (issue 11): output paths that are not
regular files, pids given twice, an empty command, rings too small for a sample, kernel
threads, missing ptrace rights and a full disk. Whatever touches /dev or fills a disk runs in
a private mount namespace on its own tmpfs, never on the machine's."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from helpers import *  # noqa: E402,F401,F403
from pprof_reader import Profile  # noqa: E402


def assert_refused(result, code, *phrases):
    assert result.returncode == code, f"exit {result.returncode}, expected {code}: " \
                                      f"{result.stdout}{result.stderr}"
    for phrase in phrases:
        assert phrase in result.stderr, f"{phrase!r} not in: {result.stderr}"
    assert "Segmentation" not in result.stderr


def in_private_mounts(script, timeout=120):
    """Runs a shell script in a private mount namespace: its mounts vanish with it."""
    return run(["unshare", "--mount", "--propagation", "private", "sh", "-ec", script],
               timeout=timeout)


@test
def output_that_is_not_a_regular_file_is_refused(tmp):
    """-o /dev/null used to turn the device node into a gzip file; a symlink or FIFO was
    replaced the same way. Each is refused before anything is attached and left as it was."""
    cases = [("/dev/null", "a character device", "character special file"),
             ("/dev/fifo", "a FIFO", "fifo"),
             ("/dev/stdout", "a symbolic link", "symbolic link"),
             ("/dev/dangling", "a symbolic link", "symbolic link")]
    for path, phrase, kind in cases:
        # A tmpfs over /dev in this namespace only: the nodes are made here, for this test.
        script = (f"mount -t tmpfs none /dev\n"
                  f"mknod -m 666 /dev/null c 1 3\n"
                  f"mkfifo /dev/fifo\n"
                  f"ln -s /proc/self/fd/1 /dev/stdout\n"
                  f"ln -s /dev/made-through-link /dev/dangling\n"
                  f"set +e\n"
                  f"{ALLOCSCOPE} -o {path} -- /bin/true\n"
                  f"echo \"exit $?\" >&2\n"
                  f"stat -c 'type %F' {path} >&2\n"
                  f"ls /dev >&2\n")
        result = in_private_mounts(script)
        assert re.search(r"^exit 1$", result.stderr, re.M), result.stderr
        assert f"cannot write the profile to {path}: it is {phrase}" in result.stderr, \
            result.stderr
        assert "profiling pid" not in result.stderr, "attached before checking the output"
        assert f"type {kind}" in result.stderr, f"{path} was replaced: {result.stderr}"
        assert "made-through-link" not in result.stderr, "wrote through a dangling link"
        assert ".allocscope-" not in result.stderr and ".tmp." not in result.stderr, \
            f"left a temporary file: {result.stderr}"
    # A regular file is still replaced.
    out_path = os.path.join(tmp, "existing.pb.gz")
    with open(out_path, "w") as f:
        f.write("old")
    result = run([ALLOCSCOPE, "-o", out_path, "--", "/bin/true"])
    assert result.returncode == 0, result.stderr
    Profile(out_path)


@test
def pid_given_twice_is_profiled_once(tmp):
    """-p P,P -p P used to attach three times and triple every total."""
    out_path = os.path.join(tmp, "twice.pb.gz")
    workload = Workload([ALLOC_SITES])
    try:
        pid = str(workload.pid)
        proc, seen = start_allocscope(["--pid", f"{pid},{pid}", "-p", pid,
                                       "--sample-rate", RATE_ARG, "-o", out_path])
        workload.start()
        manifest = parse_manifest(workload.finish())
        code, out, err = finish_allocscope(proc, seen)
    finally:
        workload.kill()
    assert code == 0, f"exit {code}: {err}"
    assert err.count("profiling pid") == 1, err
    assert f"pid {pid} given more than once" in err, err
    assert "from 1 process in" in out, out
    check_sites(Profile(out_path), manifest, RATE)


@test
def thread_id_names_its_process(tmp):
    """A thread id (as `top -H` shows) profiles its process, once even beside the pid."""
    code = ("import threading, time\n"
            "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("ready")
        tids = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid]
        assert tids, "the workload has no second thread"
        result = run([ALLOCSCOPE, "-p", f"{tids[0]},{proc.pid}", "-d", "1s",
                      "-o", os.path.join(tmp, "t.pb.gz")])
    finally:
        proc.kill()
        proc.wait()
    assert result.returncode == 0, result.stderr
    assert f"pid {tids[0]} is a thread of process {proc.pid}" in result.stderr, result.stderr
    assert result.stderr.count("profiling pid") == 1, result.stderr
    assert f"profiling pid {proc.pid} " in result.stderr, result.stderr


@test
def agent_never_starts_by_accident(tmp):
    """`allocscope -- $CMD` with an empty $CMD used to start the host-wide agent with
    /etc/allocscope/allocscope.yaml. Here that path holds, in a private mount namespace, a
    configuration that profiles nothing and writes only under tmp, so an agent started by
    mistake (an old binary) harms nothing: it runs until the timeout and fails the test."""
    etc = os.path.join(tmp, "etc")
    os.mkdir(etc)
    with open(os.path.join(etc, "allocscope.yaml"), "w") as f:
        f.write("targets:\n  include:\n    - executable: /nonexistent/none\n"
                f"sinks:\n  - type: directory\n    path: {tmp}/profiles\n"
                "metrics:\n  listen: \"\"\n")
    work = os.path.join(tmp, "work")
    os.mkdir(work)
    cases = ((["--"], "nothing after '--'"),
             (["--log-level", "debug", "--"], "nothing after '--'"),
             (["--", "''"], "empty COMMAND"),
             (["--log-level", "debug"], "--config FILE to run the agent"),
             ([], "Usage: allocscope"))
    for args, phrase in cases:
        # An overlay keeps even the mount point out of the machine's /etc.
        script = (f"mkdir -p {tmp}/upper {tmp}/ovl\n"
                  f"mount -t overlay overlay -o lowerdir=/etc,upperdir={tmp}/upper,"
                  f"workdir={tmp}/ovl /etc\n"
                  f"mkdir -p /etc/allocscope && mount --bind {etc} /etc/allocscope\n"
                  f"cd {work}\n"
                  f"exec timeout -s INT 15 {ALLOCSCOPE} {' '.join(args)}\n")
        result = in_private_mounts(script, timeout=60)
        assert_refused(result, 2, phrase)
        assert "profiling" not in result.stderr and "self-metrics" not in result.stderr
    assert not os.path.exists(os.path.join(tmp, "profiles")), "an agent ran"
    # --check-config without --config checks the installed file; one that is missing is not
    # "valid": the agent would refuse to start without it.
    script = (f"mount -t tmpfs none /etc\ncd {work}\n"
              f"exec timeout -s INT 15 {ALLOCSCOPE} --check-config\n")
    result = in_private_mounts(script, timeout=60)
    assert result.returncode == 1, f"exit {result.returncode}: {result.stdout}{result.stderr}"
    assert "/etc/allocscope/allocscope.yaml" in result.stderr and "valid" not in result.stdout
    # "--" as an option's argument is not the separator.
    result = run([ALLOCSCOPE, "--pid", "999999999", "-o", "--"], cwd=work, timeout=20)
    assert_refused(result, 1, "no process with pid 999999999")
    assert os.listdir(work) == []


@test
def ring_buffer_too_small_for_a_sample_is_refused(tmp):
    """8KiB used to be accepted and drop every sample: a sample with a 64KiB stack copy needs
    a 128KiB ring, the one minimum for the command line and the configuration file."""
    for size in ("8KiB", "64KiB"):
        result = run([ALLOCSCOPE, "--ringbuf-size", size, "-o", os.path.join(tmp, "r.pb.gz"),
                      "--", "/bin/true"], cwd=tmp)
        assert_refused(result, 2, f"invalid ring buffer size '{size}'", "128.00 KiB")
    config = os.path.join(tmp, "small-ring.yaml")
    with open(config, "w") as f:
        f.write("sampling:\n  ringbuf_size: 64KiB\n")
    result = run([ALLOCSCOPE, "--config", config, "--check-config"])
    assert_refused(result, 1, "sampling.ringbuf_size", "128KiB")
    # The smallest ring takes samples with the largest stack copy (--unwind dwarf: every
    # sample carries one; the default sends a copy only where the kernel has no table).
    out_path = os.path.join(tmp, "smallest.pb.gz")
    result = run([ALLOCSCOPE, "--unwind", "dwarf", "--ringbuf-size", "128KiB",
                  "--stack-copy-size", "64KiB",
                  "-r", "4KiB", "-o", out_path, "--", MALLOC_LOOP, "--iterations", "20000"])
    assert result.returncode == 0, result.stderr
    samples = int(re.search(r"(\d+) samples from", result.stdout).group(1))
    assert samples > 0, result.stdout


def kernel_thread_pid():
    for name in sorted(os.listdir("/proc"), key=lambda n: int(n) if n.isdigit() else 0):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[6]) & 0x00200000:  # PF_KTHREAD
            return int(name)
    return None


@test
def kernel_thread_is_named_as_such(tmp):
    pid = kernel_thread_pid()
    assert pid, "no kernel thread visible in /proc"
    result = run([ALLOCSCOPE, "--pid", str(pid)], cwd=tmp)
    assert_refused(result, 1, f"pid {pid}", "is a kernel thread")
    assert os.listdir(tmp) == []


@test
def missing_ptrace_capability_is_named(tmp):
    """Without CAP_SYS_PTRACE the target's files cannot be opened: the error used to blame a
    stripped static binary."""
    workload = Workload([MALLOC_LOOP])
    try:
        result = run(["capsh", "--drop=cap_sys_ptrace", "--", "-c",
                      f"exec {ALLOCSCOPE} --pid {workload.pid} -o {tmp}/p.pb.gz"])
        assert_refused(result, 1, "CAP_SYS_PTRACE")
        assert "stripped" not in result.stderr, result.stderr
        assert workload.proc.poll() is None
    finally:
        workload.kill()


@test
def full_disk_still_prints_the_summary(tmp):
    """A profile that cannot be written (ENOSPC) used to take the summary table with it."""
    disk = os.path.join(tmp, "small")
    os.mkdir(disk)
    script = (f"mount -t tmpfs -o size=64k none {disk}\n"
              f"dd if=/dev/zero of={disk}/fill bs=4k 2>/dev/null || true\n"
              f"set +e\n"
              f"{ALLOCSCOPE} -r {RATE_ARG} -o {disk}/p.pb.gz -- {ALLOC_SITES}\n"
              f"echo \"exit $?\" >&2\n"
              f"echo listing: >&2\n"
              f"ls -a {disk} >&2\n")
    result = in_private_mounts(script)
    assert re.search(r"^exit 1$", result.stderr, re.M), result.stderr
    assert "cannot write the profile to" in result.stderr, result.stderr
    assert "No space left on device" in result.stderr, result.stderr
    assert "allocation site" in result.stdout and "site_realloc" in result.stdout, \
        result.stdout
    assert "samples from 1 process" in result.stdout, result.stdout
    assert "profile: not written" in result.stdout, result.stdout
    listing = result.stderr.split("listing:")[-1].split()
    assert sorted(listing) == [".", "..", "fill"], f"left a file behind: {listing}"
