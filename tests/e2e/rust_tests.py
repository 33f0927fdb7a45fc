"""End-to-end tests on a Rust program built at test time with the machine's rustc (-O -g, no
frame pointers, the system allocator), once per symbol mangling: function names come out as
rustfilt prints them (full paths, no hash), inlined frames included, and whole stacks: at
least 99% of each site's bytes come from stacks that reach main (CFI unwinding of an
lld-linked executable, whose code segment shares a file page with its read-only one).
Imported by run.py (needs root and BPF like the other tests)."""
import os
import pwd
import re
import shutil
import subprocess

from helpers import ALLOCSCOPE, BUILD, RATE, RATE_ARG, ROOT, check_reach_main, check_sites, parse_manifest, run, test
from pprof_reader import Profile

RUST_SITES_SRC = os.path.join(ROOT, "tests", "workloads", "rust_sites.rs")

# The function each manifest label must show as, per mangling.
EXPECTED_NAMES = {
    "legacy": {"fidelity_site": "rust_sites::fidelity::site",
               "ledger_record": "rust_sites::Ledger<T>::record",
               "main_closure": "rust_sites::main::{{closure}}"},
    "v0": {"fidelity_site": "rust_sites::fidelity::site",
           "ledger_record": "<rust_sites::Ledger<u64>>::record",
           "main_closure": "rust_sites::main::{closure#0}"},
}
STILL_MANGLED = re.compile(r"::h[0-9a-f]{16}$|^_R|^_ZN|\$[A-Za-z0-9]+\$")


def find_rustc():
    """(rustc, environment): $RUSTC, then PATH, then rustup's ~/.cargo/bin of this user, of
    root and of the user sudo ran as (a rustup proxy also needs its RUSTUP_HOME)."""
    env = dict(os.environ)
    if os.environ.get("RUSTC"):
        return os.environ["RUSTC"], env
    found = shutil.which("rustc")
    if found:
        return found, env
    homes = [os.path.expanduser("~"), "/root"]
    if os.environ.get("SUDO_USER"):
        try:
            homes.append(pwd.getpwnam(os.environ["SUDO_USER"]).pw_dir)
        except KeyError:
            pass
    cargo_homes = [os.environ["CARGO_HOME"]] if os.environ.get("CARGO_HOME") else []
    cargo_homes += [os.path.join(h, ".cargo") for h in homes]
    for cargo_home in cargo_homes:
        candidate = os.path.join(cargo_home, "bin", "rustc")
        if os.access(candidate, os.X_OK):
            rustup_home = os.path.join(os.path.dirname(cargo_home), ".rustup")
            if "RUSTUP_HOME" not in env and os.path.isdir(rustup_home):
                env["RUSTUP_HOME"] = rustup_home
            return candidate, env
    raise AssertionError(
        "rustc not found (looked at $RUSTC, PATH, " + ", ".join(
            os.path.join(c, "bin") for c in cargo_homes) + "): the Rust tests build a program "
        "at test time; install Debian's rustc with `sudo scripts/install-deps` (or rustup from "
        "https://rustup.rs), or set RUSTC=/path/to/rustc")


def build_rust_sites(tmp, mangling, allocator="system"):
    """allocator "rjem": the global allocator is jemalloc under tikv-jemallocator's _rjem_
    prefix, linked statically from build/workloads/librjem.a (no crate to fetch)."""
    rustc, env = find_rustc()
    out = os.path.join(tmp, f"rust_sites_{mangling}_{allocator}")
    args = [rustc, "-O", "-g", "-C", "force-frame-pointers=no", "-o", out, RUST_SITES_SRC]
    if mangling == "v0":
        args[1:1] = ["-C", "symbol-mangling-version=v0"]
    if allocator == "rjem":
        args[1:1] = ["--cfg", "rjem", "-L", os.path.join(BUILD, "workloads"),
                     "-l", "static=rjem", "-C", "link-arg=-lpthread", "-C", "link-arg=-ldl",
                     "-C", "link-arg=-lm"]
    result = run(args, env=env, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)} failed: {result.stderr}"
    return out


def plain_symbols(path):
    """The binary's defined symbols that are not mangled (extern "C", #[no_mangle])."""
    result = run(["nm", "--defined-only", path])
    assert result.returncode == 0, result.stderr
    names = set()
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and not parts[2].startswith(("_ZN", "_R")):
            names.add(parts[2])
    return names


def check_rust_names(tmp, mangling, unwind="auto", allocator="system"):
    program = build_rust_sites(tmp, mangling, allocator)
    out_path = os.path.join(tmp, f"{mangling}.pb.gz")
    # A ring that holds every sample of the run (about 3,000 of 16 KiB): none is dropped
    # however slowly the agent drains it.
    result = run([ALLOCSCOPE, "--unwind", unwind, "--sample-rate", RATE_ARG,
                  "--ringbuf-size", "128MiB", "-o", out_path, "--", program])
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    assert "samples dropped" not in result.stdout, f"totals would be low: {result.stdout}"
    if allocator == "rjem":
        assert f"jemalloc (_rjem_ prefix) in {program}" in result.stdout, result.stdout
    profile = Profile(out_path)
    profile.check_ids()
    names = [f["name"] for f in profile.functions]
    # No name keeps a hash, an $-escape or a mangled form.
    mangled = [n for n in names if STILL_MANGLED.search(n)]
    assert not mangled, f"{mangling}: names left mangled: {mangled[:10]}"
    # Inlined frames carry their full paths: a function with Rust source has a path, unless
    # its symbol is a plain (unmangled) one.
    plain = plain_symbols(program)
    short = sorted({f["name"] for f in profile.functions
                    if f["filename"].endswith(".rs") and "::" not in f["name"]
                    and f["name"] not in plain})
    assert not short, f"{mangling}: Rust frames without their paths: {short[:10]}"
    # The standard library's own frames too: Vec growth through realloc.
    assert any(re.match(r"<?alloc::raw_vec::.*finish_grow", n) for n in names), \
        f"{mangling}: no alloc::raw_vec ... finish_grow frame in {sorted(names)[:40]}"
    # Each site's totals, found under its demangled name.
    expected = EXPECTED_NAMES[mangling]
    manifest = {expected[label]: classes
                for label, classes in parse_manifest(result.stdout).items()}
    assert set(manifest) == set(expected.values()), manifest
    check_sites(profile, manifest, RATE)
    # The summary's sites are the program's functions, not liballoc's or __rust_alloc.
    sites = re.findall(r"^\s*[\d.]+ \S+\s+[\d.]+%\s+\d+\s+(\S.*)$", result.stdout, re.M)
    for name in expected.values():
        assert name in sites, f"{mangling}: {name} is not an allocation site:\n{result.stdout}"
    check_reach_main(profile, manifest)


@test
def rust_legacy_names_are_demangled(tmp):
    """rustc's default mangling: `_ZN...17h<hash>E` names without their hashes."""
    check_rust_names(tmp, "legacy")


@test
def rust_v0_names_are_demangled(tmp):
    """-C symbol-mangling-version=v0: `_R...` names, generics and closures included."""
    check_rust_names(tmp, "v0")


@test
def rust_stacks_unwound_in_the_kernel(tmp):
    """--unwind kernel: the tables of an lld-linked Rust executable walk to main."""
    check_rust_names(tmp, "legacy", unwind="kernel")


@test
def rust_with_a_prefixed_jemalloc_allocator(tmp):
    """#[global_allocator] on jemalloc's _rjem_ entry points inside the executable (as
    tikv-jemallocator links it): found, counted once, the program's functions named as the
    sites (not the allocator's GlobalAlloc impl, nor libc's frames above main), stacks whole."""
    check_rust_names(tmp, "legacy", allocator="rjem")
