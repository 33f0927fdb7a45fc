"""The summary's allocation sites are where the program allocated (issue 13): not a program's
own allocation wrapper (redis's zmalloc), nor one the user names with --skip-frames; entry
points carry their public names (calloc, not __libc_calloc)."""
import os
import re
import shutil
import socket
import subprocess
import time

from helpers import (ALLOC_SITES, ALLOC_SITES_NOFP, ALLOCSCOPE, RATE_ARG, finish_allocscope,
                     run, start_allocscope, test)
from pprof_reader import Profile

WRAPPERS = re.compile(r"^z(try)?(malloc|calloc|realloc)|^zstrdup$|^zcalloc_num$")


def summary_sites(stdout):
    """The top table's 'allocation site' column, largest first."""
    return re.findall(r"^\s*[\d.]+ \S+\s+[\d.]+%\s+\d+\s+(\S.*)$", stdout, re.M)


@test
def redis_sites_are_not_zmalloc(tmp):
    """redis allocates through zmalloc and its relatives: the sites are their callers."""
    for tool in ("redis-server", "redis-benchmark", "redis-cli"):
        assert shutil.which(tool), f"{tool} missing: run sudo scripts/install-deps"
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    out_path = os.path.join(tmp, "redis.pb.gz")
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--daemonize", "no",
                               "--dir", tmp, "--logfile", os.path.join(tmp, "redis.log")])
    try:
        deadline = time.monotonic() + 10
        while run(["redis-cli", "-p", str(port), "ping"]).stdout.strip() != "PONG":
            assert time.monotonic() < deadline and server.poll() is None, "redis did not start"
            time.sleep(0.1)
        proc, seen = start_allocscope(["--pid", str(server.pid), "-r", "16KiB", "--top", "20",
                                       "-o", out_path])
        bench = run(["redis-benchmark", "-p", str(port), "-t", "set,get,lpush", "-n", "20000",
                     "-q"], timeout=120)
        assert bench.returncode == 0, bench.stderr
        run(["redis-cli", "-p", str(port), "shutdown", "nosave"])
        server.wait(timeout=10)
        code, stdout, stderr = finish_allocscope(proc, seen)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert code == 0, stderr
    sites = summary_sites(stdout)
    assert len(sites) >= 3, stdout
    wrapped = [s for s in sites if WRAPPERS.search(s)]
    assert not wrapped, f"wrappers shown as allocation sites: {wrapped}\n{stdout}"
    # The profile itself keeps every frame: zmalloc is still on the stacks.
    assert any(f["name"].startswith("zmalloc") for f in Profile(out_path).functions)


@test
def skip_frames_looks_through_named_functions(tmp):
    """--skip-frames REGEX: the named functions are wrappers; their caller (main) is the site.
    A regex that does not compile is refused before anything runs."""
    out_path = os.path.join(tmp, "skip.pb.gz")
    result = run([ALLOCSCOPE, "-r", RATE_ARG, "--top", "30", "--skip-frames",
                  "site_realloc|site_calloc", "-o", out_path, "--", ALLOC_SITES_NOFP])
    assert result.returncode == 0, result.stderr
    sites = summary_sites(result.stdout)
    assert "main" in sites, result.stdout
    assert "site_realloc" not in sites and "site_calloc" not in sites, result.stdout
    # Whole names only: site_realloc_null is not skipped.
    assert "site_realloc_null" in sites, result.stdout
    result = run([ALLOCSCOPE, "--skip-frames", "site_(", "--", ALLOC_SITES])
    assert result.returncode == 2, result
    assert "invalid --skip-frames 'site_('" in result.stderr, result.stderr


@test
def entry_points_have_their_public_names(tmp):
    """glibc's calloc is a weak alias of __libc_calloc: the profile says calloc, as it says
    malloc (not __libc_malloc)."""
    out_path = os.path.join(tmp, "names.pb.gz")
    result = run([ALLOCSCOPE, "-r", RATE_ARG, "-o", out_path, "--", ALLOC_SITES])
    assert result.returncode == 0, result.stderr
    names = {f["name"] for f in Profile(out_path).functions}
    for public in ("malloc", "calloc", "realloc", "valloc"):
        assert public in names, f"{public} missing: {sorted(names)}"
    internal = sorted(n for n in names
                      if re.match(r"__libc_(malloc|calloc|realloc|valloc|memalign)$", n))
    assert not internal, f"internal names: {internal}"
