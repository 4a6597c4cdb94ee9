#!/usr/bin/env python3
"""Summarises repeated training runs (several seeds per model variant) as a markdown table.

  summarize_runs.py --base dnn ROOT

ROOT holds one folder per variant, each with one folder per seed containing the eval.json that
`choir train` writes (ROOT/<variant>/<seed>/eval.json). For every variant the table shows the
mean and the sample standard deviation over seeds of AUC and GAUC overall and GAUC per activity
bucket, and the relative lift of each mean over the --base variant's mean. Variants are listed
in the order of --order when given, else alphabetically. Standard library only.
"""
import argparse
import json
import math
import os
import sys

BUCKETS = ["low", "mid", "high", "new"]


def load(root):
    runs = {}
    for variant in sorted(os.listdir(root)):
        vdir = os.path.join(root, variant)
        if not os.path.isdir(vdir):
            continue
        for seed in sorted(os.listdir(vdir)):
            path = os.path.join(vdir, seed, "eval.json")
            if not os.path.exists(path):
                continue
            with open(path) as f:
                try:
                    runs.setdefault(variant, []).append(json.load(f))
                except json.JSONDecodeError as e:
                    sys.exit(f"{path}: not valid JSON ({e})")
    return runs


def metric(report, where, name):
    block = report["overall"] if where == "overall" else report["buckets"][where]
    value = block.get(name)
    return float("nan") if value is None else float(value)


def mean_std(values):
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, float("nan")
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root")
    ap.add_argument("--base", default="dnn", help="the variant lifts are relative to")
    ap.add_argument("--order", default="", help="comma-separated variant order")
    args = ap.parse_args()
    runs = load(args.root)
    if not runs:
        sys.exit(f"{args.root}: no <variant>/<seed>/eval.json found")
    order = [v for v in args.order.split(",") if v in runs] if args.order else []
    order += [v for v in sorted(runs) if v not in order]
    columns = [("AUC", "overall", "auc"), ("GAUC", "overall", "gauc")] + [
        (f"GAUC {b}", b, "gauc") for b in BUCKETS]
    stats = {v: [mean_std([metric(r, where, name) for r in runs[v]]) for _, where, name in columns]
             for v in order}
    base = stats.get(args.base)

    def cell(m, s):
        if math.isnan(m):
            return "-"
        return f"{m:.4f} ± {s:.4f}" if not math.isnan(s) else f"{m:.4f}"

    print("| variant | seeds | " + " | ".join(c[0] for c in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for v in order:
        print(f"| {v} | {len(runs[v])} | " + " | ".join(cell(m, s) for m, s in stats[v]) + " |")
    if base is not None:
        print()
        print(f"Relative lift of the mean over `{args.base}` (percent):")
        print()
        print("| variant | " + " | ".join(c[0] for c in columns) + " |")
        print("|---|" + "---|" * len(columns))
        for v in order:
            if v == args.base:
                continue
            lifts = []
            for (m, _), (bm, _) in zip(stats[v], base):
                lifts.append("-" if math.isnan(m) or math.isnan(bm) or bm == 0 else f"{100 * (m / bm - 1):+.2f}")
            print(f"| {v} | " + " | ".join(lifts) + " |")


if __name__ == "__main__":
    main()
