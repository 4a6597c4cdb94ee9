#!/usr/bin/python3
"""Draws Choir's evaluation plots (docs/evaluation.md) with matplotlib.

  plot_eval.py --out_dir DIR [--eval [LABEL=]eval.json ...] [--preds [LABEL=]preds.tsv ...]

Writes DIR/gauc_by_bucket.png (per-bucket GAUC, grouped bars, one bar per eval.json, first one
is the baseline) when --eval is given, and DIR/calibration.png (reliability curve over equal-count
score bins, one line per preds.tsv) when --preds is given. Without LABEL= the name of the file's
directory labels it. Exit codes: 0 ok, 2 bad input, 3 matplotlib missing.

Run it with /usr/bin/python3: Debian's python3-matplotlib loads only under it.
"""

import argparse
import csv
import json
import math
import os
import sys

BUCKETS = ["low", "mid", "high", "new"]  # data::kAllBuckets order
EXIT_BAD_INPUT = 2
EXIT_NO_MATPLOTLIB = 3
CALIBRATION_BINS = 15


class BadInput(Exception):
    pass


def split_label(arg):
    """'LABEL=PATH' -> (LABEL, PATH); 'PATH' -> (name of PATH's directory, PATH)."""
    if "=" in arg and not os.path.exists(arg):
        label, path = arg.split("=", 1)
        return label, path
    directory = os.path.basename(os.path.dirname(os.path.abspath(arg)))
    return directory or arg, arg


def read_gauc(path):
    try:
        with open(path) as f:
            report = json.load(f)
        values = []
        for bucket in ["overall"] + BUCKETS:
            metrics = report["overall"] if bucket == "overall" else report["buckets"][bucket]
            gauc = metrics["gauc"]
            values.append(float("nan") if gauc is None else float(gauc))
        return values
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BadInput("%s: not a readable eval.json: %s" % (path, e))


def read_preds(path):
    """Returns (scores, labels) of a preds.tsv."""
    scores, labels = [], []
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f, delimiter="\t")
            header = next(reader, None)
            if header != ["user_id", "label", "score", "bucket"]:
                raise BadInput("%s:1: expected the preds.tsv header" % path)
            for line_no, row in enumerate(reader, start=2):
                if len(row) != 4:
                    raise BadInput("%s:%d: expected 4 columns" % (path, line_no))
                try:
                    labels.append(float(row[1]))
                    scores.append(float(row[2]))
                except ValueError:
                    raise BadInput("%s:%d: bad label or score" % (path, line_no))
    except OSError as e:
        raise BadInput("%s: %s" % (path, e))
    return scores, labels


def calibration_points(scores, labels, bins):
    """Mean score and mean label of up to `bins` equal-count bins of samples sorted by score."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    n = len(order)
    points = []
    for b in range(min(bins, n)):
        chunk = order[b * n // bins:(b + 1) * n // bins]
        if not chunk:
            continue
        points.append((sum(scores[i] for i in chunk) / len(chunk),
                       sum(labels[i] for i in chunk) / len(chunk)))
    return points


def plot_gauc(plt, evals, out_path):
    groups = ["overall"] + BUCKETS
    width = 0.8 / len(evals)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    finite = []
    for k, (label, values) in enumerate(evals):
        xs = [g + (k - (len(evals) - 1) / 2) * width for g in range(len(groups))]
        heights = [0 if math.isnan(v) else v for v in values]
        bars = ax.bar(xs, heights, width, label=label)
        for bar, v in zip(bars, values):
            ax.annotate("n/a" if math.isnan(v) else "%.4f" % v,
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)
        finite += [v for v in values if not math.isnan(v)]
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylabel("GAUC")
    ax.set_title("GAUC by user-activity bucket")
    if finite:
        low = max(0.0, min(finite) - 0.05)
        ax.set_ylim(low, max(finite) + 0.02)  # room for the value labels
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    plt.close(fig)


def plot_calibration(plt, preds, out_path):
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    top = 0.0
    for label, (scores, labels) in preds:
        points = calibration_points(scores, labels, CALIBRATION_BINS)
        if not points:
            continue
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
        top = max(top, max(xs), max(ys))
    top = top * 1.05 if top > 0 else 1.0
    ax.plot([0, top], [0, top], linestyle="--", color="gray", label="perfect")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("mean predicted probability (bin)")
    ax.set_ylabel("observed conversion rate (bin)")
    ax.set_title("Calibration (%d equal-count bins)" % CALIBRATION_BINS)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    plt.close(fig)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--eval", action="append", default=[])
    parser.add_argument("--preds", action="append", default=[])
    args = parser.parse_args(argv)  # exits 2 on bad usage
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        print("matplotlib is not importable: %s" % e, file=sys.stderr)
        return EXIT_NO_MATPLOTLIB
    try:
        evals = [(label, read_gauc(path)) for label, path in map(split_label, args.eval)]
        preds = [(label, read_preds(path)) for label, path in map(split_label, args.preds)]
    except BadInput as e:
        print(e, file=sys.stderr)
        return EXIT_BAD_INPUT
    os.makedirs(args.out_dir, exist_ok=True)
    if evals:
        plot_gauc(plt, evals, os.path.join(args.out_dir, "gauc_by_bucket.png"))
    if preds:
        plot_calibration(plt, preds, os.path.join(args.out_dir, "calibration.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
