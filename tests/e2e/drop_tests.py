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
    7 records of a 16 KiB stack copy): most samples are dropped, yet the profile's grand total
    is within the sampling tolerance, the dropped weight sits under [dropped samples], and the
    summary says how many samples were dropped and that their bytes are kept."""
    out_path = os.path.join(tmp, "burst.pb.gz")
    result = run([ALLOCSCOPE, "-r", RATE_ARG, "--ringbuf-size", "128KiB", "-o", out_path, "--",
                  ALLOC_SITES], timeout=300)
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
