#!/usr/bin/env python3
"""Prints criterion's results (target/criterion/**/new/estimates.json) as markdown tables.

    python3 benches/report.py                 # every group
    python3 benches/report.py one_insert ...  # only these groups

For each benchmark: the median time per iteration with criterion's 95 % confidence interval of
the median, the mean, and elements/s when the group declares a throughput. A ratio column
compares each sqlx-atomic benchmark with its baseline (see BASELINES).
"""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
CRIT = ROOT / "target" / "criterion"

# (group prefix, ours function, baseline function): ratio = ours / baseline (time).
BASELINES = [
    ("one_insert", "sqlx_atomic", "sqlx_begin_commit"),
    ("nesting_", "sqlx_atomic_query", "sqlx_begin_query"),
    ("nesting_", "sqlx_atomic_empty", "sqlx_begin_empty"),
    ("hooks_10000", "sqlx_atomic_on_commit", "vec_of_boxed_closures"),
    ("hooks_10000", "sqlx_atomic_on_commit_with_insert", "sqlx_tx_with_insert_then_vec"),
    ("scale_", "sqlx_atomic", "sqlx"),
]


def fmt_time(ns: float) -> str:
    for unit, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= div:
            return f"{ns / div:.4g} {unit}"
    return f"{ns:.4g} ns"


def load():
    out = {}
    for bj in CRIT.glob("**/new/benchmark.json"):
        b = json.loads(bj.read_text())
        e = json.loads((bj.parent / "estimates.json").read_text())
        out[b["full_id"]] = (b, e)
    return out


def main() -> None:
    only = sys.argv[1:]
    res = load()
    groups: dict[str, list] = {}
    for full, (b, e) in sorted(res.items()):
        if only and not any(full.startswith(o) for o in only):
            continue
        groups.setdefault(b["group_id"], []).append((b, e))
    for g, items in groups.items():
        print(f"### {g}\n")
        print("| benchmark | median | 95 % CI of median | mean | per second | ratio |")
        print("|---|---:|---:|---:|---:|---:|")
        by_id = {(b["function_id"], b["value_str"]): e for b, e in items}
        for b, e in items:
            med = e["median"]["point_estimate"]
            ci = e["median"]["confidence_interval"]
            mean = e["mean"]["point_estimate"]
            tp = b.get("throughput") or {}
            n = tp.get("Elements") or tp.get("elements")
            per_s = f"{n * 1e9 / med:,.0f}" if n else f"{1e9 / med:,.0f}"
            ratio = ""
            for prefix, ours, base in BASELINES:
                if g.startswith(prefix) and b["function_id"] == ours and b["function_id"]:
                    be = by_id.get((base, b["value_str"]))
                    if be:
                        ratio = f"{med / be['median']['point_estimate']:.4f}"
            name = "/".join(p for p in (b["function_id"], b["value_str"]) if p)
            print(
                f"| {name} | {fmt_time(med)} | {fmt_time(ci['lower_bound'])} – "
                f"{fmt_time(ci['upper_bound'])} | {fmt_time(mean)} | {per_s} | {ratio} |"
            )
        print()


if __name__ == "__main__":
    main()
