"""Loop overhead in instructions: Ir/op of each loop minus Ir/op of the no-loop baseline.

For every loop-core benchmark (the ones with a no-loop baseline in bench/benchmarks.py) and
every loop, plus the pseudo-loop "none" (the same callbacks and coroutines with no event loop:
callbacks from a plain while loop, coroutines stepped with coro.send(None)), runs

    valgrind --tool=callgrind --dump-before=getppid --dump-before=getpgrp \\
        python bench/benchmarks.py BENCH LOOP SIZE --warmup W --markers

The worker calls os.getppid() right after the timed part's t0 and os.getpgrp() right before
its t1; callgrind dumps (and resets) its counters before each, so the second dump counts
exactly the instructions of the timed part (interpreter startup, imports, loop creation,
the warm-up and the teardown are not in it; a second thread's instructions are). A third
dump would mean the loop called one of those functions itself: the run is then rejected.
Ir/op = that count / SIZE, and

    overhead Ir/op = Ir/op(loop) - Ir/op(none)

is what the loop adds on top of the user-level work: the part a loop can change, whose floor
is (about) zero. Prints a markdown table with the best peer and ferroloop's ratios.

    python bench/overhead.py                          # 8 rows x (4 loops + baseline): ~4 min
    python bench/overhead.py --bench call_soon_chain  # one row, ~35 s
    python bench/overhead.py --bench timer,future --loops uvloop,ferroloop --jobs 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# bench/ is sys.path[0] when run as `python bench/overhead.py`.
import profiling
from benchmarks import BENCHMARKS, EXIT_UNSUPPORTED, LOOPS, NO_LOOP
from run import FERRO, best_peer, check_loop, fmt_count

HERE = Path(__file__).resolve().parent
WORKER = HERE / "benchmarks.py"
CORE = [b for b, spec in BENCHMARKS.items() if spec.baseline is not None]
START_FN, END_FN = "getppid", "getpgrp"  # libc functions the --markers clock calls


def select(spec: str | None) -> list[str]:
    if not spec:
        return list(CORE)
    chosen: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        matches = [part] if part in CORE else [b for b in CORE if part in b]
        if not matches:
            sys.exit(f"no loop-core benchmark matches {part!r}; known: {', '.join(CORE)}")
        chosen += [m for m in matches if m not in chosen]
    return chosen


def summary_ir(path: Path) -> int:
    """The event count of a callgrind.out file ("summary:" or "totals:" line)."""
    with path.open() as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no summary line in {path}")


def dump_trigger(path: Path) -> str:
    """The "desc: Trigger: ..." of a callgrind.out file (what made callgrind write it)."""
    with path.open() as f:
        for line in f:
            if line.startswith("desc: Trigger:"):
                return line.split(":", 2)[2].strip()
    return "?"


def run_cg(bench: str, loop: str, size: int, warmup: int, out_dir: Path) -> dict:
    """One callgrind run; {"ir": timed-part Ir} or {"unsupported"/"error": reason}."""
    out = out_dir / f"callgrind.out.{bench}.{loop}.{size}"
    for old in out_dir.glob(out.name + "*"):
        old.unlink()
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        f"--dump-before={START_FN}",
        f"--dump-before={END_FN}",
        sys.executable,
        str(WORKER),
        bench,
        loop,
        str(size),
        "--warmup",
        str(warmup),
        "--markers",
    ]
    # Same hash seed for every run: dict/set layouts (so instruction counts) don't change.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    t0 = time.monotonic()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    secs = time.monotonic() - t0
    last = proc.stdout.strip().splitlines()[-1:] or [""]
    if proc.returncode == EXIT_UNSUPPORTED:
        try:
            rep = json.loads(last[0])
            return {"unsupported": rep["unsupported"], "detail": rep["detail"], "wall_s": secs}
        except (ValueError, KeyError):
            pass
    if proc.returncode != 0:
        err = [ln for ln in proc.stderr.splitlines() if not ln.startswith("==")]
        return {"error": f"exit code {proc.returncode}: {(err or ['?'])[-1]}", "wall_s": secs}
    # Dump 1: start-up to t0 (getppid), dump 2: t0 to t1 (getpgrp), then the final one.
    dumps = [Path(f"{out}.{i}") for i in (1, 2, 3)]
    triggers = [dump_trigger(d) if d.exists() else None for d in dumps]
    if triggers[:2] != [f"--dump-before={START_FN}", f"--dump-before={END_FN}"] or triggers[2]:
        return {
            "error": f"unexpected callgrind dumps {triggers}: markers not reached, or the"
            f" loop itself called {START_FN}()/{END_FN}()",
            "wall_s": secs,
        }
    first = dumps[1]
    return {"ir": summary_ir(first), "file": str(first), "wall_s": secs}


def fmt_ir(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "--bench", help="comma-separated names (or substrings); known:\n  " + "\n  ".join(CORE)
    )
    p.add_argument("--loops", default=",".join(LOOPS), help=f"default {','.join(LOOPS)}")
    p.add_argument("--size", type=int, help="operations per run (default: each --quick size)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every size by this")
    p.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel valgrind runs"
    )
    p.add_argument(
        "--out-dir",
        default=str(HERE / "results" / "overhead"),
        help="where the callgrind.out files go (callgrind_annotate FILE.1 breaks one down)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the raw counts as JSON")
    p.add_argument(
        "--any-build",
        action="store_true",
        help="measure ferroloop even if it is not the profiling build (bench/profiling.py)",
    )
    args = p.parse_args(argv)

    benches = select(args.bench)
    loops = [lp.strip() for lp in args.loops.split(",") if lp.strip()]
    for lp in loops:
        if lp not in LOOPS:
            p.error(f"unknown loop {lp!r}; known: {', '.join(LOOPS)}")
    cols = [lp for lp in LOOPS if lp in loops]
    # The callgrind.out files are for callgrind_annotate, which needs line tables to say where
    # in ferroloop the instructions went (same code generation as release: same counts).
    if FERRO in cols and not args.any_build and (problem := profiling.check()):
        sys.exit(f"overhead.py: {problem}\n(or pass --any-build to count this build as it is)")
    sizes = {b: max(1, int((args.size or BENCHMARKS[b].quick) * args.scale)) for b in benches}
    warmups = {b: max(1, sizes[b] // 20) for b in benches}
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    log = sys.stderr
    versions: dict[str, str] = {}
    runnable = [NO_LOOP]
    for lp in cols:
        ok, info = check_loop(lp)
        versions[lp] = info if ok else f"not available: {info}"
        print(f"{lp}: {versions[lp]}", file=log)
        if ok:
            runnable.append(lp)

    jobs = [(b, lp) for b in benches for lp in runnable]
    results: dict[tuple[str, str], dict] = {}
    started = time.monotonic()

    def one(job: tuple[str, str]) -> tuple[tuple[str, str], dict]:
        b, lp = job
        return job, run_cg(b, lp, sizes[b], warmups[b], out_dir)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for n, ((b, lp), res) in enumerate(pool.map(one, jobs), 1):
            results[b, lp] = res
            what = (
                f"{res['ir'] / sizes[b]:,.0f} Ir/op"
                if "ir" in res
                else res.get("error") or f"unsupported: {res['unsupported']}"
            )
            print(f"[{n}/{len(jobs)}] {b:<22} {lp:<9} {what}  ({res['wall_s']:.0f} s)", file=log)
    print(f"total wall time {time.monotonic() - started:.0f} s\n", file=log)

    def per_op(b: str, lp: str) -> float | None:
        res = results.get((b, lp), {})
        return res["ir"] / sizes[b] if "ir" in res else None

    def overhead(b: str, lp: str) -> float | None:
        v, base = per_op(b, lp), per_op(b, NO_LOOP)
        return None if v is None or base is None else v - base

    def cell(b: str, lp: str, value: float | None) -> str:
        res = results.get((b, lp))
        if res is None:
            return "n/a"
        if "unsupported" in res:
            return f"n/a ({res['unsupported']})"
        if "error" in res:
            return "error"
        return fmt_ir(value)

    def ratio(a: float | None, b: float | None) -> str:
        # a / b: the other loop's count over ferroloop's; >1 means ferroloop needs fewer.
        if a is None or b is None or b <= 0 or a < 0:
            return "n/a"
        return f"{a / b:.2f}x"

    peers = [lp for lp in cols if lp != FERRO]
    header = ["benchmark", "no loop Ir/op"]
    header += [f"{lp} Ir/op" for lp in cols]
    header += [f"{lp} overhead" for lp in cols]
    if peers:
        header.append("best peer (overhead)")
    if FERRO in cols and peers:
        header += ["ferroloop vs best peer (overhead)", "ferroloop vs best peer (Ir/op)"]
    if FERRO in cols and "asyncio" in cols:
        header.append("ferroloop vs asyncio (overhead)")
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    table: dict[str, dict] = {}
    for b in benches:
        best = best_peer({lp: overhead(b, lp) for lp in peers}, lower_is_better=True)
        fl = overhead(b, FERRO)
        row = [f"{b} ({fmt_count(sizes[b])} {BENCHMARKS[b].unit}s)"]
        row.append(cell(b, NO_LOOP, per_op(b, NO_LOOP)))
        row += [cell(b, lp, per_op(b, lp)) for lp in cols]
        row += [cell(b, lp, overhead(b, lp)) for lp in cols]
        if peers:
            row.append(f"{best} {fmt_ir(overhead(b, best))}" if best else "n/a")
        if FERRO in cols and peers:
            row.append(ratio(overhead(b, best), fl) if best else "n/a")
            row.append(ratio(per_op(b, best), per_op(b, FERRO)) if best else "n/a")
        if FERRO in cols and "asyncio" in cols:
            row.append(ratio(overhead(b, "asyncio"), fl))
        lines.append("| " + " | ".join(row) + " |")
        table[b] = {
            "size": sizes[b],
            "warmup": warmups[b],
            "op": BENCHMARKS[b].unit,
            "best_peer": best,
            "loops": {
                lp: {**results.get((b, lp), {}), "ir_per_op": per_op(b, lp)}
                | ({"overhead_ir_per_op": overhead(b, lp)} if lp != NO_LOOP else {})
                for lp in [NO_LOOP, *cols]
            },
        }

    print(
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()};"
        f" callgrind instruction counts (Ir) of the timed part only, one run per cell,"
        f" PYTHONHASHSEED=0, warm-up size/20 first."
    )
    for lp in cols:
        print(f"- {lp}: {versions[lp]}")
    print()
    print("\n".join(lines))
    print()
    print(
        "Ir/op: instructions per operation of the timed part. Overhead: Ir/op minus the no-loop"
        " baseline's (the same callbacks/coroutines with no event loop; see bench/README.md),"
        " the part a loop can change. Best peer: the loop other than ferroloop with the"
        " lowest overhead. Ratios: the other loop's count / ferroloop's, >1 means ferroloop"
        " executes fewer instructions."
    )
    for b in benches:
        for lp in [NO_LOOP, *cols]:
            res = results.get((b, lp), {})
            if "error" in res:
                print(f"- {b} on {lp} failed: {res['error']}")
            elif "unsupported" in res:
                print(f"- {b} on {lp}: not supported ({res['unsupported']}): {res['detail']}")

    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "python": sys.version,
            "platform": platform.platform(),
            "loops": versions,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        path.write_text(json.dumps({"meta": meta, "results": table}, indent=2) + "\n")
        print(f"\nwrote {path}", file=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
