"""A bar chart of a benchmark run: every loop's throughput relative to the best peer, per row.

    python bench/run.py --json bench/results/run.json     # the loop-core table, and its JSON
    python bench/net.py --json bench/results/net.json     # the network table, and its JSON
    python bench/plot.py bench/results/run.json [bench/results/net.json] --out docs/bench.png

Takes the JSON that bench/run.py or bench/net.py write with --json (one panel per file, in
the order given). For each row, each loop's bar is its throughput over the best peer's (the
fastest loop other than ferroloop, as in the tables): the best peer's bar is 1, and
ferroloop's is the table's "ferroloop vs best peer" column. Throughput is 1 / median time per
operation for bench/run.py, median requests/s for bench/net.py. The error bar of a loop spans
the ratios of its slowest and its fastest round against the same best-peer median, i.e. the
spread of that loop's rounds. Needs matplotlib (`pip install matplotlib`), which nothing else
in the project does.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

FERRO = "ferroloop"
ORDER = ["asyncio", "uvloop", "rloop", FERRO]  # as the tables' columns
COLOURS = {"asyncio": "#9e9e9e", "uvloop": "#4c72b0", "rloop": "#55a868", FERRO: "#c44e52"}


def throughputs(row: dict, loop: str) -> tuple[float, list[float]] | None:
    """(the table's median, one value per round) of `loop`'s throughput in `row`, in operations
    or requests per second; None where the loop has no result. The median is the table's own
    (for bench/run.py the median time's inverse, not the median of the inverses: they differ
    with an even number of rounds)."""
    data = row["loops"].get(loop) or {}
    if "runs" in data:  # bench/net.py
        rounds = [run["rps"] for run in data["runs"] if run.get("rps")]
        return (data["median_rps"], rounds) if rounds and data.get("median_rps") else None
    if not data.get("median_seconds"):
        return None
    size = row["size"]
    return size / data["median_seconds"], [size / s for s in data["seconds"]]


def panel(doc: dict) -> tuple[str, list[str], dict[str, dict[str, tuple[float, float, float]]]]:
    """(title, row names, {row: {loop: (ratio, low, high)}}) for one JSON document."""
    meta = doc["meta"]
    net = any("runs" in lp for row in doc["results"].values() for lp in row["loops"].values())
    loops = [lp for lp in ORDER if meta["loops"].get(lp, {}).get("available")]
    table: dict[str, dict[str, tuple[float, float, float]]] = {}
    for name, row in doc["results"].items():
        best = row.get("best_peer")
        reference = throughputs(row, best) if best else None
        if reference is None:
            continue  # no peer ran this row: nothing to compare with
        ref = reference[0]
        cells = {}
        for lp in loops:
            if (values := throughputs(row, lp)) is not None:
                median, rounds = values
                cells[lp] = (median / ref, min(rounds) / ref, max(rounds) / ref)
        table[name] = cells
    date = datetime.strptime(meta["date"], "%Y-%m-%dT%H:%M:%S%z").strftime("%Y-%m-%d")
    what = "requests/s (bench/net.py)" if net else "operations/s (bench/run.py)"
    versions = ", ".join(
        f"{lp} {meta['loops'][lp]['version_or_error']}" for lp in loops if lp != "asyncio"
    )
    python = meta["python"].split()[0]
    title = (
        f"{what}, relative to the best peer of each row\n"
        f"{date}, {meta['rounds']} rounds{' (--quick)' if meta.get('quick') else ''},"
        f" CPython {python}, {versions}, {meta['cpus']} CPUs"
    )
    return title, list(table), table


def plot(paths: list[Path], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    panels = [panel(json.loads(p.read_text())) for p in paths]
    heights = [max(2.0, 0.55 * len(rows) + 1.2) for _, rows, _ in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(9, sum(heights)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, (title, rows, table) in zip(axes[:, 0], panels, strict=True):
        loops = [lp for lp in ORDER if any(lp in cells for cells in table.values())]
        bar = 0.8 / len(loops)
        for i, lp in enumerate(loops):
            ys, xs, errs = [], [], [[], []]
            for r, name in enumerate(rows):
                y = r + (i - (len(loops) - 1) / 2) * bar
                if lp not in table[name]:
                    # As the table's n/a: the loop cannot run this row (e.g. rloop has no TLS).
                    ax.text(0.01, y, f"{lp}: n/a", va="center", fontsize=7, color="#555555")
                    continue
                ratio, low, high = table[name][lp]
                ys.append(y)
                xs.append(ratio)
                errs[0].append(ratio - low)
                errs[1].append(high - ratio)
            ax.barh(
                ys,
                xs,
                height=bar,
                xerr=errs,
                color=COLOURS[lp],
                label=lp,
                error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#333333"},
            )
            if lp == FERRO:
                for y, x, e in zip(ys, xs, errs[1], strict=True):
                    ax.text(x + e + 0.02, y, f"{x:.2f}x", va="center", fontsize=8)
        ax.axvline(1.0, color="#333333", linewidth=0.8, linestyle="--")
        ax.set_yticks(range(len(rows)), rows, fontsize=9)
        ax.invert_yaxis()  # the table's order, top to bottom
        ax.set_xlim(0, max(1.2, *(c[2] for cells in table.values() for c in cells.values())) + 0.2)
        ax.set_xlabel("throughput / the best peer's (higher is faster; dashed: the best peer)")
        ax.set_title(title, fontsize=9)
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(axis="x", linewidth=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("json", nargs="+", type=Path, help="bench/run.py or bench/net.py --json files")
    p.add_argument("--out", type=Path, default=Path("docs/bench.png"), help="docs/bench.png")
    args = p.parse_args()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit("bench/plot.py needs matplotlib: pip install matplotlib")
    plot(args.json, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
