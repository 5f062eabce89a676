#!/usr/bin/env python3
"""Draws benches/scale.svg from the results of the scale bench.

    SQLX_ATOMIC_PAIRED=1 SQLX_ATOMIC_PAIRED_ROUNDS=300 cargo bench --all-features --bench scale | tee scale.txt
    python3 benches/plot_scale.py --paired scale.txt       # the paired rounds (what BENCHMARKS.md shows)
    python3 benches/plot_scale.py                          # criterion's results instead

With `--paired`, reads the paired mode's lines (`scale/<tasks> tasks x <n> transactions: ...
A <µs>, B <µs> per run (means); A/B per round: median <ratio> ...`): transactions per second =
tasks × n / mean time of a run, and the throughput ratio = 1 / the median per-round time ratio.
Without it, reads target/criterion/scale_pg_pool10/{sqlx_atomic,sqlx}/{1,10,100,1000}/new/
estimates.json (transactions per second = tasks / median time per iteration; with one task these
swing by ±20 % between runs, see `benches/scale.rs`). Writes a line chart with a logarithmic x axis
(concurrent tasks) as a self-contained SVG (no plotting library needed), and prints the table.
"""

import argparse
import json
import math
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
GROUP = ROOT / "target" / "criterion" / "scale_pg_pool10"
OUT = ROOT / "benches" / "scale.svg"
SERIES = [("sqlx_atomic", "sqlx-atomic #[atomic]", "#c0392b"), ("sqlx", "plain sqlx begin/commit", "#2471a3")]
TASKS = [1, 10, 100, 1000]


def tx_per_s(function: str, tasks: int) -> float:
    est = json.loads((GROUP / function / str(tasks) / "new" / "estimates.json").read_text())
    return tasks * 1e9 / est["median"]["point_estimate"]


PAIRED = re.compile(
    r"scale/(\d+) tasks x (\d+) transactions: .*?A ([\d.]+) µs, B ([\d.]+) µs per run.*?median ([\d.]+) "
    r"\(95 % interval ([\d.]+)–([\d.]+)"
)


def paired(path: str) -> tuple[dict, dict]:
    """tx/s per side and the throughput ratio (with its interval) per task count, from a paired run."""
    data = {f: [0.0] * len(TASKS) for f, _, _ in SERIES}
    ratios = {}
    for m in PAIRED.finditer(pathlib.Path(path).read_text()):
        tasks, each = int(m.group(1)), int(m.group(2))
        if tasks not in TASKS:
            continue
        i = TASKS.index(tasks)
        data["sqlx_atomic"][i] = tasks * each * 1e6 / float(m.group(3))
        data["sqlx"][i] = tasks * each * 1e6 / float(m.group(4))
        ratios[tasks] = (1 / float(m.group(5)), 1 / float(m.group(7)), 1 / float(m.group(6)))
    missing = [t for t in TASKS if t not in ratios]
    if missing:
        raise SystemExit(f"{path}: no paired line for {missing} tasks")
    return data, ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paired", metavar="FILE", help="the output of the scale bench's paired mode")
    args = ap.parse_args()
    if args.paired:
        data, ratios = paired(args.paired)
        print("| concurrent tasks | sqlx-atomic tx/s | plain sqlx tx/s | throughput ratio (95 % interval) |")
        print("|---:|---:|---:|---:|")
        for i, t in enumerate(TASKS):
            r, lo, hi = ratios[t]
            print(f"| {t} | {data['sqlx_atomic'][i]:,.0f} | {data['sqlx'][i]:,.0f} | {r:.3f} ({lo:.3f}–{hi:.3f}) |")
    else:
        data = {f: [tx_per_s(f, t) for t in TASKS] for f, _, _ in SERIES}
        print("| concurrent tasks | sqlx-atomic tx/s | plain sqlx tx/s | ratio |")
        print("|---:|---:|---:|---:|")
        for i, t in enumerate(TASKS):
            a, b = data["sqlx_atomic"][i], data["sqlx"][i]
            print(f"| {t} | {a:,.0f} | {b:,.0f} | {a / b:.3f} |")

    w, h, left, right, top, bottom = 640, 400, 80, 20, 40, 60
    pw, ph = w - left - right, h - top - bottom
    ymax = max(max(v) for v in data.values())
    step = 10 ** math.floor(math.log10(ymax))
    ytop = math.ceil(ymax / step) * step

    def x(t: int) -> float:
        return left + pw * math.log10(t) / math.log10(TASKS[-1])

    def y(v: float) -> float:
        return top + ph * (1 - v / ytop)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">'
        "One-INSERT transactions on PostgreSQL, pool of 10 connections</text>",
    ]
    yt = 0.0
    while yt <= ytop + 1e-9:
        parts.append(f'<line x1="{left}" x2="{w - right}" y1="{y(yt):.1f}" y2="{y(yt):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y(yt) + 4:.1f}" text-anchor="end">{yt:,.0f}</text>')
        yt += step if ytop / step <= 10 else 2 * step
    for t in TASKS:
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{top + ph}" stroke="#eee"/>')
        parts.append(f'<text x="{x(t):.1f}" y="{top + ph + 18}" text-anchor="middle">{t}</text>')
    parts.append(
        f'<text x="{left + pw / 2}" y="{h - 16}" text-anchor="middle">concurrent tasks (log scale)</text>'
    )
    parts.append(
        f'<text transform="translate(18,{top + ph / 2}) rotate(-90)" text-anchor="middle">'
        "transactions / s</text>"
    )
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    for i, (f, label, colour) in enumerate(SERIES):
        pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in zip(TASKS, data[f]))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for t, v in zip(TASKS, data[f]):
            parts.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="3.5" fill="{colour}"/>')
        ly = top + ph - 40 + 18 * i
        parts.append(f'<line x1="{left + 16}" x2="{left + 40}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{left + 46}" y="{ly + 4}">{label}</text>')
    parts.append("</svg>")
    OUT.write_text("\n".join(parts) + "\n")
    print(f"\nwrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
