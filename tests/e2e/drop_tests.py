"""No silent loss (issue 13): samples the ring buffer has no room for keep their weight under a
[dropped samples] frame, so a burst that overflows the ring leaves the totals unbiased, and the
summary says how many were dropped and how much they weigh."""
import os
import re

from helpers import ALLOC_SITES, ALLOCSCOPE, RATE, RATE_ARG, check_sites, parse_manifest, run, test
from pprof_reader import Profile


class GrandTotal:
    """A profile seen as one function, "(all)", holding every sample: what per-site totals
    cannot show once samples lost their stacks."""

    def __init__(self, profile):
        self.sample_types = profile.sample_types
        self.profile = profile

    def totals_by_function(self, index):
        return {"(all)": sum(s["values"][index] for s in self.profile.samples)}


@test
def burst_over_a_small_ring_keeps_totals(tmp):
    """The workload with known totals at the tests' rate through the smallest ring (128 KiB,
    7 records of a 16 KiB stack copy: --unwind dwarf, whose records carry one; the kernel
    walk's records of a few frames fit by the thousand): most samples are dropped, yet the
    profile's grand total is within the sampling tolerance, the dropped weight sits under
    [dropped samples], and the summary says how many samples were dropped and that their bytes
    are kept."""
    out_path = os.path.join(tmp, "burst.pb.gz")
    result = run([ALLOCSCOPE, "-r", RATE_ARG, "--unwind", "dwarf", "--ringbuf-size", "128KiB",
                  "-o", out_path, "--", ALLOC_SITES], timeout=300)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    shown = re.search(r"^\s+(\d+) samples dropped: ring buffer full; their ([\d.]+ \S+) are "
                      r"kept under \[dropped samples\]", result.stdout, re.M)
    assert shown and int(shown.group(1)) > 100, result.stdout
    assert "lost with their weight" not in result.stdout, result.stdout
    profile = Profile(out_path)
    profile.check_ids()
    assert profile.totals_by_function(1).get("[dropped samples]", 0) > 0
    manifest = parse_manifest(result.stdout)
    everything = {"(all)": [c for classes in manifest.values() for c in classes]}
    check_sites(GrandTotal(profile), everything, RATE)


def record_bytes(result):
    """The summary's mean bytes per sample record in the ring buffer."""
    shown = re.search(r"^sample records: (\d+), (\d+) bytes each on average in the ring buffer$",
                      result.stdout, re.M)
    assert shown, result.stdout
    return int(shown.group(1)), int(shown.group(2))


@test
def ring_records_carry_only_their_sections(tmp):
    """A sample record carries only what its unwind mode uses (bpf/alloc.h): with the kernel
    walk (the default) and with frame pointers, a 64-byte header and 8 bytes a frame (the
    workload's stacks are under 30 frames deep), not the 1.4 KiB fixed part every record had
    before; with a stack copy, the copy and little more. The summary says what a record cost,
    and the profile still has the workload's sites."""
    for unwind, low, high in (("kernel", 64 + 8, 64 + 8 * 30), ("fp", 64 + 8, 64 + 8 * 30),
                              ("dwarf", 4096, 4096 + 64 + 64 + 288)):
        out_path = os.path.join(tmp, f"{unwind}.pb.gz")
        result = run([ALLOCSCOPE, "-r", RATE_ARG, "--unwind", unwind, "--stack-copy-size",
                      "4KiB", "-o", out_path, "--", ALLOC_SITES], timeout=300)
        assert result.returncode == 0, f"{unwind}: exit {result.returncode}: {result.stderr}"
        records, mean = record_bytes(result)
        assert records > 1000, (unwind, result.stdout)
        assert low <= mean <= high, f"{unwind}: {mean} bytes a record, expected {low}..{high}"
        assert "malformed records" not in result.stdout, result.stdout
        profile = Profile(out_path)
        manifest = parse_manifest(result.stdout)
        check_sites(profile, {k: v for k, v in manifest.items() if k == "site_malloc"}, RATE)
