#!/usr/bin/env python3
"""Instructions and simulated cache misses per transaction / request, under cachegrind.

    cargo bench --all-features --no-run        # builds the bench binaries
    python3 benches/cache_profile.py           # every case below (a few minutes)
    python3 benches/cache_profile.py requests  # only the cases of one bench
    python3 benches/cache_profile.py --iters 2000
    python3 benches/cache_profile.py --footprint   # adds the hot code footprint (slower)

Each case runs the bench's profiling mode (`SQLX_ATOMIC_PROFILE=<case>`) twice under
`valgrind --tool=cachegrind --cache-sim=yes`: with 0 iterations and with N. The difference
divided by N is the cost of one iteration, without the start-up. Cachegrind simulates the
machine's caches (it prints their sizes). Two runs of one binary on a quiet machine agree within
1-3 % (how often a future waits for the server still varies a little); other load on the machine
changes that more, so run it alone. BENCHMARKS.md (section 1) explains why the L1i column
matters more than the instruction count here.

`--footprint` adds a column: the code executed on every iteration, in KiB. Two more runs, under
callgrind with `--dump-instr=yes`, count how often each instruction ran with 0 and with N
iterations; every 64-byte line holding an instruction that ran at least N times more in the
second is code the iteration needs each time it runs. While a transaction waits for the server,
the server's process runs on the same cores and evicts part of the caches, so each round trip brings this code back from a slower
cache: its size, more than the instruction count, is what a transaction pays for (BENCHMARKS.md,
section 1).

`--functions A B` (two case names from CASES, e.g. `one_insert_postgres_ours
one_insert_postgres_sqlx`) splits that footprint by function instead, for case A beside case B,
largest differences first. A function's code includes what the compiler inlined into it, so the
same sqlx code can appear under different names on the two sides.
"""

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEPS = ROOT / "target" / "release" / "deps"

# (bench, case, label)
CASES = [
    ("overhead", "one_insert_postgres_sqlx", "one INSERT, PostgreSQL: sqlx begin/commit"),
    ("overhead", "one_insert_postgres_ours", "one INSERT, PostgreSQL: sqlx-atomic"),
    ("overhead", "one_insert_sqlite_sqlx", "one INSERT, SQLite: sqlx begin/commit"),
    ("overhead", "one_insert_sqlite_ours", "one INSERT, SQLite: sqlx-atomic"),
    ("requests", "hand_written_tx", "request, one INSERT: hand-written transaction"),
    ("requests", "axum_sqlx_tx", "request, one INSERT: axum-sqlx-tx"),
    ("requests", "sqlx_atomic_layer", "request, one INSERT: AtomicRequestsLayer"),
    ("requests", "sqlx_atomic_service", "request, one INSERT: AtomicRequestsLayer around the router"),
    ("requests", "idle_no_layer", "request, no query: no layer"),
    ("requests", "idle_identity_layer", "request, no query: a layer that does nothing"),
    ("requests", "idle_sqlx_atomic_layer", "request, no query: AtomicRequestsLayer"),
    ("requests", "idle_sqlx_atomic_service", "request, no query: AtomicRequestsLayer around the router"),
    ("requests", "idle_floor_service", "request, no query: the floor (a task-local scope and catch_unwind)"),
    ("requests", "http:idle_no_layer", "HTTP request, no query: no layer"),
    ("requests", "http:idle_sqlx_atomic_layer", "HTTP request, no query: AtomicRequestsLayer"),
    ("requests", "http:idle_sqlx_atomic_service", "HTTP request, no query: AtomicRequestsLayer around the router"),
    ("requests", "http:idle_floor_service", "HTTP request, no query: the floor (a task-local scope and catch_unwind)"),
]

def footprint(exe: pathlib.Path, case: str, iters: int) -> float:
    """KiB of code lines holding an instruction executed at least once per iteration."""
    return sum(hot_lines(exe, case, iters).values()) * 64 / 1024


def hot_lines(exe: pathlib.Path, case: str, iters: int) -> dict:
    """Per function: how many 64-byte code lines hold an instruction of it executed at least once
    per iteration (a line shared by two functions counts for the one that owns its first hot
    instruction)."""
    (base, _), (full, owner) = executions(exe, case, 0), executions(exe, case, iters)
    first: dict[int, str] = {}
    for a in sorted(a for a, n in full.items() if n - base.get(a, 0) >= iters):
        first.setdefault(a >> 6, owner[a])
    per_fn: dict[str, int] = {}
    for fn in first.values():
        per_fn[fn] = per_fn.get(fn, 0) + 1
    return per_fn


def executions(exe: pathlib.Path, case: str, iters: int) -> tuple:
    """How often each instruction address ran, under callgrind, and the function it belongs to."""
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "callgrind.out"
        valgrind(exe, case, iters, ["--tool=callgrind", "--dump-instr=yes", "--compress-pos=no",
                                    "--compress-strings=no", f"--callgrind-out-file={out}"])
        executed: dict[int, int] = {}
        owner: dict[int, str] = {}
        function = "?"
        after_call = False
        with open(out) as f:
            for line in f:
                if line.startswith("fn="):
                    function = line[3:].strip()
                    continue
                if line.startswith("calls="):
                    after_call = True  # the next line is the call's inclusive cost
                    continue
                if not line.startswith("0x"):
                    continue
                if after_call:
                    after_call = False
                    continue
                # "positions: instr line" then the Ir count
                addr, _, ir = (line.split() + ["0", "0"])[:3]
                a = int(addr, 16)
                executed[a] = executed.get(a, 0) + int(ir)
                owner[a] = function
    return executed, owner


def compare_functions(a: str, b: str, iters: int, top: int) -> None:
    """The hot code of case `a` beside case `b`, per function, largest differences first."""
    cases = {case: bench for bench, case, _ in CASES}
    for case in (a, b):
        if case not in cases:
            sys.exit(f"unknown case {case!r}; the cases: {', '.join(cases)}")
    la = hot_lines(binary(cases[a]), a, iters)
    lb = hot_lines(binary(cases[b]), b, iters)

    def kib(n: int) -> str:
        return f"{n * 64 / 1024:.1f}"

    only_a = sum(n for fn, n in la.items() if fn not in lb)
    only_b = sum(n for fn, n in lb.items() if fn not in la)
    print(f"Hot code, KiB: {a} {kib(sum(la.values()))}, {b} {kib(sum(lb.values()))}; "
          f"in functions only {a} runs {kib(only_a)}, only {b} runs {kib(only_b)}")
    print(f"| Function | {a} | {b} |")
    print("|---|---:|---:|")
    diff = sorted(set(la) | set(lb), key=lambda fn: -abs(la.get(fn, 0) - lb.get(fn, 0)))
    for fn in [fn for fn in diff if la.get(fn, 0) != lb.get(fn, 0)][:top]:
        name = fn if len(fn) <= 110 else fn[:107] + "..."
        print(f"| `{name}` | {kib(la.get(fn, 0))} | {kib(lb.get(fn, 0))} |")


EVENTS = [(r"I\s+refs", "Instructions"), (r"I1\s+misses", "L1i misses"), (r"D1\s+misses", "L1d misses")]


def binary(bench: str) -> pathlib.Path:
    """The newest bench executable (cargo names it `<bench>-<hash>`)."""
    found = [p for p in DEPS.glob(f"{bench}-*") if p.is_file() and p.suffix == "" and p.stat().st_mode & 0o111]
    if not found:
        sys.exit(f"no bench binary for {bench!r} in {DEPS}: run `cargo bench --all-features --no-run` first")
    return max(found, key=lambda p: p.stat().st_mtime)


def counts(exe: pathlib.Path, case: str, iters: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "cachegrind.out"
        stderr = valgrind(exe, case, iters, ["--tool=cachegrind", "--cache-sim=yes",
                                             f"--cachegrind-out-file={out}"])
    got = {}
    for key, _ in EVENTS:
        m = re.search(key + r":\s+([\d,]+)", stderr)
        if not m:
            sys.exit(f"{case}: no {key!r} in cachegrind's summary")
        got[key] = int(m.group(1).replace(",", ""))
    return got


def valgrind(exe: pathlib.Path, case: str, iters: int, tool: list) -> str:
    """Runs the bench's profiling mode for `case` under valgrind with `tool`'s options; its stderr."""
    run = subprocess.run(
        ["valgrind", *tool, str(exe)],
        env={"SQLX_ATOMIC_PROFILE": case, "SQLX_ATOMIC_PROFILE_ITERS": str(iters), **_passthrough()},
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        sys.exit(f"{case}: exit {run.returncode}\n{run.stderr[-2000:]}")
    return run.stderr


def _passthrough() -> dict:
    keep = ("PATH", "HOME", "SQLX_ATOMIC_BENCH_POSTGRES_URL", "SQLX_ATOMIC_TEST_POSTGRES_URL", "TMPDIR", "SQLX_ATOMIC_BENCH_TEST_WITH_BEGIN")
    return {k: v for k, v in os.environ.items() if k in keep}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("benches", nargs="*", help="only the cases of these benches (overhead, requests)")
    ap.add_argument("--iters", type=int, default=1000, help="iterations measured (default 1000)")
    ap.add_argument("--footprint", action="store_true", help="add the hot code footprint (callgrind)")
    ap.add_argument("--functions", nargs=2, metavar=("A", "B"),
                    help="instead of the table: the hot code of case A beside case B, per function")
    ap.add_argument("--top", type=int, default=25, help="rows of --functions (default 25)")
    args = ap.parse_args()
    if args.iters <= 0:
        sys.exit("--iters must be positive")
    if args.functions:
        compare_functions(*args.functions, args.iters, args.top)
        return
    names = [name for _, name in EVENTS] + (["Hot code (KiB)"] if args.footprint else [])
    print(f"| Per iteration ({args.iters} minus 0) | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for bench, case, label in CASES:
        if args.benches and bench not in args.benches:
            continue
        exe = binary(bench)
        base, full = counts(exe, case, 0), counts(exe, case, args.iters)
        cells = [f"{(full[k] - base[k]) / args.iters:,.0f}" for k, _ in EVENTS]
        if args.footprint:
            cells.append(f"{footprint(exe, case, args.iters):.1f}")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
