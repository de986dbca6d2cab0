"""Side-by-side event-loop benchmarks: stock asyncio vs uvloop vs rloop vs ferroloop.

Each (benchmark, loop, round) runs in a fresh subprocess (bench/benchmarks.py),
interleaved: round 1 runs every loop on every benchmark, then round 2, ...
Prints a markdown table of median time per operation, the best peer (the fastest loop
other than ferroloop) per row, and ferroloop's throughput ratio against it and asyncio.

    python bench/run.py                    # full run, 5 rounds
    python bench/run.py --quick            # smoke run, small sizes, 2 rounds
    python bench/run.py --bench timer_churn,queue_pipe --loops asyncio,ferroloop
    python bench/run.py --quick --loops rloop,ferroloop --bench call_soon
    python bench/run.py --json bench/results/out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

# bench/ is sys.path[0] when run as `python bench/run.py`.
from benchmarks import BENCHMARKS, EXIT_UNSUPPORTED, LOOPS

FERRO = "ferroloop"
HERE = Path(__file__).resolve().parent
WORKER = HERE / "benchmarks.py"


def check_loop(name: str) -> tuple[bool, str]:
    """(available, version-or-reason), checked in a subprocess."""
    try:
        proc = subprocess.run(
            [sys.executable, str(WORKER), "--check", name],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        return False, "timed out creating a loop"
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return False, lines[-1] if lines else f"exit code {proc.returncode}"
    return True, json.loads(proc.stdout.strip().splitlines()[-1])["version"]


class Unsupported(RuntimeError):
    """The loop does not implement what the benchmark needs (the worker exited with
    EXIT_UNSUPPORTED): str() is the short reason for the cell, .detail the footnote."""

    def __init__(self, short: str, detail: str) -> None:
        super().__init__(short)
        self.detail = detail


def run_worker(bench: str, loop: str, size: int, warmup: int, timeout: float) -> float:
    """Seconds for `size` operations; raises Unsupported if the loop lacks a feature the
    benchmark needs, RuntimeError on any other failure."""
    cmd = [sys.executable, str(WORKER), bench, loop, str(size), "--warmup", str(warmup)]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"timed out after {timeout:g} s") from None
    if proc.returncode == EXIT_UNSUPPORTED:
        try:
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            raise Unsupported(out["unsupported"], out["detail"])
        except (IndexError, ValueError, KeyError):
            pass  # not the worker's own report: an ordinary failure
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        last = lines[-1] if lines else "(no stderr)"
        raise RuntimeError(f"exit code {proc.returncode}: {last}")
    try:
        return float(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])
    except (IndexError, ValueError, KeyError) as e:
        raise RuntimeError(f"bad worker output {proc.stdout!r}: {e}") from None


def fmt_num(v: float) -> str:
    """3 significant digits, never in exponent form."""
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{fmt_num(seconds / scale)} {unit}"
    return f"{fmt_num(seconds / 1e-9)} ns"


def fmt_count(n: int) -> str:
    if n >= 1_000_000 and n % 100_000 == 0:
        return f"{n / 1_000_000:g}M"
    if n >= 1_000 and n % 100 == 0:
        return f"{n / 1_000:g}k"
    return str(n)


def pick_unit(values: list[float]) -> tuple[str, float]:
    """One unit per row (chosen from the slowest cell) so a row reads easily."""
    largest = max(values)
    if largest >= 1e-3:
        return "ms", 1e-3
    if largest >= 1e-6:
        return "µs", 1e-6
    return "ns", 1e-9


def best_peer(values: dict[str, float | None], lower_is_better: bool) -> str | None:
    """The best of the peers' values (None values skipped): the lowest time per op or the
    highest rate; None if no peer has a value. Ties go to the earlier loop in LOOPS."""
    have = [(v, lp) for lp, v in values.items() if v is not None and lp != FERRO]
    if not have:
        return None
    order = {lp: i for i, lp in enumerate(LOOPS)}
    sign = 1 if lower_is_better else -1
    return min(have, key=lambda t: (sign * t[0], order.get(t[1], len(order))))[1]


def select_benches(spec: str | None) -> list[str]:
    if not spec:
        return list(BENCHMARKS)
    chosen: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part in BENCHMARKS:
            matches = [part]
        else:
            matches = [b for b in BENCHMARKS if part in b]
        if not matches:
            sys.exit(f"no benchmark matches {part!r}; known: {', '.join(BENCHMARKS)}")
        chosen += [m for m in matches if m not in chosen]
    return chosen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 5; 2 with --quick)")
    p.add_argument("--quick", action="store_true", help="short smoke run with small sizes")
    p.add_argument(
        "--bench",
        help="comma-separated benchmark names (or substrings); known:\n  "
        + "\n  ".join(BENCHMARKS),
    )
    p.add_argument("--loops", default=",".join(LOOPS), help=f"default {','.join(LOOPS)}")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every size by this")
    p.add_argument("--timeout", type=float, default=120.0, help="per-subprocess timeout (s)")
    p.add_argument("--json", metavar="PATH", help="also write all raw timings as JSON")
    args = p.parse_args(argv)

    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 5)
    if rounds < 1:
        p.error("--rounds must be >= 1")
    benches = select_benches(args.bench)
    loops = [name.strip() for name in args.loops.split(",") if name.strip()]
    for name in loops:
        if name not in LOOPS:
            p.error(f"unknown loop {name!r}; known: {', '.join(LOOPS)}")

    sizes = {
        b: max(1, int((BENCHMARKS[b].quick if args.quick else BENCHMARKS[b].size) * args.scale))
        for b in benches
    }
    warmups = {b: max(1, sizes[b] // 20) for b in benches}

    log = sys.stderr
    available: dict[str, bool] = {}
    versions: dict[str, str] = {}
    for name in loops:
        ok, info = check_loop(name)
        available[name] = ok
        versions[name] = info
        print(f"{name}: {info if ok else 'NOT AVAILABLE (' + info + ')'}", file=log)

    times: dict[str, dict[str, list[float]]] = {b: {lp: [] for lp in loops} for b in benches}
    errors: dict[str, dict[str, str]] = {b: {} for b in benches}
    unsupported: dict[str, dict[str, Unsupported]] = {b: {} for b in benches}
    runnable = [lp for lp in loops if available[lp]]
    started = time.monotonic()
    for r in range(rounds):
        # Rotate the loop order each round so no loop always runs first.
        order = runnable[r % len(runnable) :] + runnable[: r % len(runnable)] if runnable else []
        for b in benches:
            for lp in order:
                if lp in errors[b] or lp in unsupported[b]:
                    continue  # failed once: don't spend more rounds on it
                try:
                    secs = run_worker(b, lp, sizes[b], warmups[b], args.timeout)
                except Unsupported as e:
                    unsupported[b][lp] = e
                    print(f"[{r + 1}/{rounds}] {b:<22} {lp:<9} UNSUPPORTED {e}", file=log)
                    continue
                except RuntimeError as e:
                    errors[b][lp] = str(e)
                    print(f"[{r + 1}/{rounds}] {b:<22} {lp:<9} ERROR {e}", file=log)
                    continue
                times[b][lp].append(secs)
                per_op = secs / sizes[b]
                print(
                    f"[{r + 1}/{rounds}] {b:<22} {lp:<9} {fmt_time(secs):>9}"
                    f"  ({fmt_time(per_op)}/op)",
                    file=log,
                )
    print(f"total wall time {time.monotonic() - started:.1f} s\n", file=log)

    # ---- table ----------------------------------------------------------
    medians: dict[str, dict[str, float | None]] = {}
    for b in benches:
        medians[b] = {
            lp: (
                statistics.median(v) / sizes[b]
                if (v := times[b][lp]) and lp not in errors[b] and lp not in unsupported[b]
                else None
            )
            for lp in loops
        }
    # Columns in LOOPS order (asyncio, the peers, ferroloop), only for the requested loops.
    cols = [lp for lp in LOOPS if lp in loops]
    peers = [lp for lp in cols if lp != FERRO]
    best = {
        b: best_peer({lp: medians[b][lp] for lp in peers}, lower_is_better=True) for b in benches
    }

    def cell(b: str, lp: str, unit: str, scale: float) -> str:
        if not available.get(lp, False):
            return "n/a"
        if lp in unsupported[b]:
            return f"n/a ({unsupported[b][lp]})"
        if lp in errors[b]:
            return "error"
        med = medians[b][lp]
        if med is None:
            return "n/a"
        v = [t / sizes[b] for t in times[b][lp]]
        spread = (max(v) - min(v)) / 2 / med * 100 if len(v) > 1 else 0.0
        return f"{fmt_num(med / scale)} {unit}/op ±{spread:.0f}%"

    def ratio(b: str, base: str | None) -> str:
        fl = medians[b].get(FERRO)
        other = medians[b].get(base) if base else None
        if fl is None or other is None:
            return "n/a"
        return f"{other / fl:.2f}x"

    header = ["benchmark", *(f"{lp} median" for lp in cols)]
    if peers:
        header.append("best peer")
    if FERRO in cols and peers:
        header.append("ferroloop vs best peer")
    if FERRO in cols and "asyncio" in cols:
        header.append("ferroloop vs asyncio")
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for b in benches:
        present = [m for m in medians[b].values() if m is not None]
        unit, scale = pick_unit(present) if present else ("µs", 1e-6)
        row = [f"{b} ({fmt_count(sizes[b])} {BENCHMARKS[b].unit}s)"]
        row += [cell(b, lp, unit, scale) for lp in cols]
        if peers:
            bp = best[b]
            row.append(f"{bp} {fmt_num(medians[b][bp] / scale)} {unit}" if bp else "n/a")
        if FERRO in cols and peers:
            row.append(ratio(b, best[b]))
        if FERRO in cols and "asyncio" in cols:
            row.append(ratio(b, "asyncio"))
        lines.append("| " + " | ".join(row) + " |")

    print(
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs; {rounds} round(s), fresh process per run"
        f"{', QUICK sizes' if args.quick else ''}"
        f"{f', scale {args.scale:g}' if args.scale != 1 else ''}."
    )
    for name in cols:
        status = versions[name] if available[name] else f"not available: {versions[name]}"
        print(f"- {name}: {status}")
    print()
    print("\n".join(lines))
    print()
    print(
        "Cells: median time per operation over the rounds, ± half the min-max range."
        " Best peer: the loop other than ferroloop with the lowest median in that row."
        " Ratios are throughput ratios (other loop's time / ferroloop's time):"
        " >1 means ferroloop is faster."
    )
    for b in benches:
        for lp, err in errors[b].items():
            print(f"- {b} on {lp} failed: {err}")
        for lp, unsup in unsupported[b].items():
            print(f"- {b} on {lp}: not supported ({unsup}): {unsup.detail}")

    if args.json:
        out = {
            "meta": {
                "python": sys.version,
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "rounds": rounds,
                "quick": args.quick,
                "scale": args.scale,
                "loops": {
                    lp: {"available": available[lp], "version_or_error": versions[lp]}
                    for lp in loops
                },
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            "results": {
                b: {
                    "size": sizes[b],
                    "warmup": warmups[b],
                    "op": BENCHMARKS[b].unit,
                    "loops": {
                        lp: {
                            "seconds": times[b][lp],
                            "median_seconds": statistics.median(times[b][lp])
                            if times[b][lp]
                            else None,
                            "median_ns_per_op": medians[b][lp] * 1e9
                            if medians[b][lp] is not None
                            else None,
                            "median_ops_per_s": 1 / medians[b][lp]
                            if medians[b][lp] is not None
                            else None,
                            "error": errors[b].get(lp),
                            "unsupported": (
                                {"reason": str(u), "detail": u.detail}
                                if (u := unsupported[b].get(lp))
                                else None
                            ),
                        }
                        for lp in loops
                    },
                    "best_peer": best[b],
                    "ferroloop_vs_best_peer": (
                        medians[b][best[b]] / medians[b][FERRO]
                        if best[b] and medians[b].get(FERRO)
                        else None
                    ),
                    "ferroloop_vs_asyncio": (
                        medians[b]["asyncio"] / medians[b][FERRO]
                        if medians[b].get("asyncio") and medians[b].get(FERRO)
                        else None
                    ),
                }
                for b in benches
            },
        }
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(f"\nwrote {path}", file=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
