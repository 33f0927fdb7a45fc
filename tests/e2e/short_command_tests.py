"""Short commands (issue 13): a command that exits before the capture's first drain still gets
whole, named stacks. Its memory map read at exec misses libc (the loader maps it after exec
returns) and by the first drain the process is gone; the capture holds it at its exit to read
the map once more. Without that, libc frames came out as bare addresses in most runs and the
stack copy's CFI walk lost frames (--unwind dwarf)."""
import os

from helpers import ALLOCSCOPE, MALLOC_LOOP, run, test
from pprof_reader import Profile

LIBC_FRAMES = ("__libc_start_call_main", "__libc_start_main")


@test
def short_commands_name_libc_and_main_every_run(tmp):
    """30 captures of a command that makes 2,000 allocations and exits (a few ms), half with
    the stack copy (--unwind dwarf) and half with the default kernel walk: in every run every
    sample's stack runs malloc -> main -> libc's start frames, with no unnamed frame."""
    failures = []
    for i in range(30):
        mode = "dwarf" if i % 2 == 0 else "auto"
        out_path = os.path.join(tmp, f"short{i}.pb.gz")
        result = run([ALLOCSCOPE, "--unwind", mode, "-r", "4KiB", "-o", out_path, "--",
                      MALLOC_LOOP, "--iterations", "2000", "--size", "100"])
        assert result.returncode == 0, f"run {i} ({mode}): exit {result.returncode}: " \
            f"{result.stderr}"
        profile = Profile(out_path)
        assert profile.samples, f"run {i} ({mode}): no samples"
        for sample in profile.samples:
            names = profile.stack_functions(sample)
            unnamed = [n for n in names if n.startswith("0x") or "+0x" in n]
            if unnamed or "malloc" not in names or "main" not in names or \
                    not all(f in names for f in LIBC_FRAMES):
                failures.append(f"run {i} ({mode}): {names}")
                break
    assert not failures, f"{len(failures)} of 30 runs with cut or unnamed stacks:\n" + \
        "\n".join(failures)
