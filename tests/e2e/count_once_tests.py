"""Every allocation counted once (issue 13): each C entry point at alignments 8, 16, 32, 64
and 4096 (tests/workloads/aligned_sites.c), on glibc, where memalign, aligned_alloc and
posix_memalign hand alignments up to 16 to malloc, and on jemalloc, tcmalloc and mimalloc,
whose aligned entries allocate on their own or through another probed entry point."""
import os

from helpers import (ALLOCSCOPE, BUILD, RATE, RATE_ARG, check_sites, parse_manifest, run,
                     test)
from pprof_reader import Profile

ALIGNED_SITES = os.path.join(BUILD, "workloads", "aligned_sites_")


def profile_aligned_sites(tmp, build):
    """Runs aligned_sites_BUILD under allocscope with a ring that holds the whole run (no
    sample is dropped) and checks every site's totals. Returns (result, profile)."""
    out_path = os.path.join(tmp, build + ".pb.gz")
    result = run([ALLOCSCOPE, "--sample-rate", RATE_ARG, "--ringbuf-size", "256MiB",
                  "--log-level", "debug", "-o", out_path, "--", ALIGNED_SITES + build])
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    assert "samples dropped" not in result.stdout, result.stdout
    manifest = parse_manifest(result.stdout)
    expected = ["site_memalign_", "site_aligned_alloc_", "site_posix_memalign_"]
    for prefix in expected:
        for align in (8, 16, 32, 64, 4096):
            assert f"{prefix}{align}" in manifest, f"{prefix}{align} missing from the run"
    profile = Profile(out_path)
    profile.check_ids()
    check_sites(profile, manifest, RATE)
    # posix_memalign with an invalid alignment fails with EINVAL: nothing to count.
    assert "einval site_posix_memalign_einval" in result.stdout
    failed = profile.totals_by_function(1).get("site_posix_memalign_einval", 0)
    assert failed == 0, f"site_posix_memalign_einval: {failed} bytes for failed calls"
    return result, profile


@test
def glibc_aligned_entries_count_once(tmp):
    """glibc's _mid_memalign returns __libc_malloc(size) for alignments <= 16: malloc's probe
    counts those, the aligned entry's probe skips them, and counts the rest."""
    result, _ = profile_aligned_sites(tmp, "nofp")
    assert "site_pvalloc" in parse_manifest(result.stdout)
    # The probe listing says which calls malloc counts.
    assert "alignment <= 16: reaches malloc, which counts it" in result.stderr, result.stderr


@test
def jemalloc_aligned_entries_count_once(tmp):
    result, _ = profile_aligned_sites(tmp, "jemalloc")
    assert "alignment <=" not in result.stderr, result.stderr


@test
def tcmalloc_aligned_entries_count_once(tmp):
    result, _ = profile_aligned_sites(tmp, "tcmalloc")
    assert "alignment <=" not in result.stderr, result.stderr


@test
def mimalloc_aligned_entries_count_once(tmp):
    result, _ = profile_aligned_sites(tmp, "mimalloc")
    assert "alignment <=" not in result.stderr, result.stderr


@test
def every_bpf_program_passes_the_verifier(tmp):
    """A program the verifier refuses falls back quietly (alloc_multi -> one perf-event uprobe
    per entry point), which every other test still passes: check the load itself. A merge
    once made clang fold two branches' register reads into ctx + a variable offset."""
    out_path = os.path.join(tmp, "true.pb.gz")
    result = run([ALLOCSCOPE, "--log-level", "debug", "-o", out_path, "--", "/bin/true"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "failed to load" not in result.stderr and "did not load" not in result.stderr, \
        "\n".join(line for line in result.stderr.splitlines()
                  if "load" in line or "disallowed" in line or "invalid" in line)
    assert "one uprobe_multi link" in result.stderr, result.stderr[-2000:]
