#!/usr/bin/python3
"""Oracle for tests/eval/metrics_oracle_test.cc: the metrics of a preds.tsv with scikit-learn.

  sklearn_oracle.py preds.tsv

Prints one JSON object {"overall": {...}, "low": {...}, ...} with auc, gauc, logloss,
calibration, samples, users, gauc_users (null where undefined). AUC is
sklearn.metrics.roc_auc_score; GAUC is the mean of per-user roc_auc_score over users with both
classes, weighted by the user's number of samples; logloss is sklearn.metrics.log_loss of the
scores clipped to [1e-15, 1 - 1e-15] (DESIGN.md section 6's clip, whatever sklearn's own eps);
calibration is the sum of the scores over the number of positives. Exit code 3 when
scikit-learn is not importable.
"""

import csv
import json
import sys

try:
    from sklearn.metrics import log_loss, roc_auc_score
except ImportError as e:
    print("scikit-learn is not importable: %s" % e, file=sys.stderr)
    sys.exit(3)


def metrics(rows):
    labels = [r[1] for r in rows]
    scores = [r[2] for r in rows]
    out = {"auc": None, "gauc": None, "logloss": None, "calibration": None, "samples": len(rows)}
    if 0 < sum(labels) < len(labels):
        out["auc"] = float(roc_auc_score(labels, scores))
    if rows:
        clipped = [min(max(s, 1e-15), 1 - 1e-15) for s in scores]
        out["logloss"] = float(log_loss(labels, clipped, labels=[0, 1]))
    if sum(labels) > 0:
        out["calibration"] = sum(scores) / sum(labels)
    by_user = {}
    for r in rows:
        by_user.setdefault(r[0], []).append(r)
    num, den, included = 0.0, 0, 0
    for user_rows in by_user.values():
        ys = [r[1] for r in user_rows]
        if 0 < sum(ys) < len(ys):
            w = len(user_rows)
            num += w * roc_auc_score(ys, [r[2] for r in user_rows])
            den += w
            included += 1
    if den:
        out["gauc"] = num / den
    out["users"] = len(by_user)
    out["gauc_users"] = included
    return out


def main(path):
    rows = []
    with open(path, newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        assert next(reader) == ["user_id", "label", "score", "bucket"]
        for row in reader:
            rows.append((int(row[0]), int(row[1]), float(row[2]), row[3]))
    result = {"overall": metrics(rows)}
    for bucket in ["low", "mid", "high", "new"]:
        result[bucket] = metrics([r for r in rows if r[3] == bucket])
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main(sys.argv[1])
