#!/usr/bin/env bash
# Choir's main job on its embedded default, from a fresh machine:
#   launch/quickstart.sh [--out DIR] [--users N] [--seed S]
# installs what is missing (tools/setup.sh), builds, generates the synthetic Taobao-like
# dataset, converts the public Ali-CCP / Taobao samples when ../shared/data is present,
# inspects the data, trains dnn and din, and compares them per activity bucket (report.md).
# Later stages (groups, ChoirRec) extend this script.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/runs/quickstart"
USERS=100000
SEED=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT="$2"; shift ;;
    --users) USERS="$2"; shift ;;
    --seed) SEED="$2"; shift ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "quickstart: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

step() { printf '\n==> %s\n' "$*" >&2; }

step "setup: packages, model weights, build"
"$ROOT/tools/setup.sh"
CHOIR="$ROOT/build/bin/choir"
mkdir -p "$OUT"

step "synthetic data: $USERS users, seed $SEED -> $OUT/data"
"$CHOIR" data gen --out "$OUT/data" --users "$USERS" --seed "$SEED"

SHARED="$ROOT/../shared/data"
if [[ -d "$SHARED/ali-ccp" ]]; then
  step "convert the public Ali-CCP sample (AITM format, CVR task) -> $OUT/aliccp"
  "$CHOIR" data convert --format aliccp-aitm --task cvr \
    --in "$SHARED/ali-ccp/paddlerec_aitm_train.csv,$SHARED/ali-ccp/paddlerec_aitm_test.csv" \
    --out "$OUT/aliccp"
  "$CHOIR" data inspect "$OUT/aliccp" --json "$OUT/aliccp.inspect.json" --quiet
fi
if [[ -d "$SHARED/taobao-display-ad" ]]; then
  step "convert the public Taobao display-ad sample (DMR format, CTR task: it has no conversion label) -> $OUT/taobao"
  "$CHOIR" data convert --format taobao-ad --task ctr \
    --in "$SHARED/taobao-display-ad/paddlerec_dmr_alimama_sampled_train.txt" --out "$OUT/taobao"
fi

step "inspect $OUT/data"
"$CHOIR" data inspect "$OUT/data" --json "$OUT/data.inspect.json" --quiet

CONFIG="$ROOT/configs/quickstart.pbtxt"
for model in dnn din; do
  step "train $model (configs/quickstart.pbtxt) -> $OUT/$model"
  "$CHOIR" train --config "$CONFIG" --data "$OUT/data" --out "$OUT/$model" --model "$model"
done

step "report: din against dnn -> $OUT/report.md, plots in $OUT/plots"
{
  echo "# Quickstart: din against dnn ($USERS users, seed $SEED)"
  echo
  "$CHOIR" report --base "$OUT/dnn/eval.json" --run "$OUT/din/eval.json" \
    --plots "$OUT/plots" --preds "dnn=$OUT/dnn/preds.tsv,din=$OUT/din/preds.tsv" --quiet
} > "$OUT/report.md"
cat "$OUT/report.md"

step "done: $OUT"
