#!/usr/bin/env bash
# Choir's main job on its embedded default, from a fresh machine:
#   launch/quickstart.sh [--out DIR] [--users N] [--seed S]
# installs what is missing (tools/setup.sh), builds, generates the synthetic Taobao-like
# dataset, converts the public Ali-CCP / Taobao samples when ../shared/data is present,
# inspects the data, builds the semantic groups (profiles -> MiniLM embeddings -> RQ-KMeans
# codes -> group priors), trains dnn, din and choirrec, exports choirrec as a serving bundle and
# scores the test split from it, and compares the models per activity bucket
# (report.md). The embedding step is the long one (about 10 minutes for 100k users on 2 cores);
# its cache makes a rerun skip it.
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
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
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

G="$OUT/groups"
mkdir -p "$G"
step "semantic groups 1/4: a profile text per user -> $G/profiles.tsv"
"$CHOIR" groups profile --data "$OUT/data" --out "$G/profiles.tsv"
step "semantic groups 2/4: embed the profiles with the built-in all-MiniLM-L6-v2 -> $G/emb.npy"
"$CHOIR" embed --in "$G/profiles.tsv" --out "$G/emb.npy"
step "semantic groups 3/4: RQ-KMeans codes (3 levels x 256) and their quality against the hidden personas -> $G/groups.tsv"
"$CHOIR" groups build --emb "$G/emb.npy" --ids "$G/profiles.tsv" --levels 3 --k 256 --out "$G/groups.tsv" \
  --data "$OUT/data" >"$G/build.log"
tail -n 3 "$G/build.log"
step "semantic groups 4/4: group priors (attributes, statistics, behaviour sequences) -> $G/priors"
"$CHOIR" groups priors --data "$OUT/data" --groups "$G/groups.tsv" --out "$G/priors"

CONFIG="$ROOT/configs/quickstart.pbtxt"
for model in dnn din choirrec; do
  step "train $model (configs/quickstart.pbtxt) -> $OUT/$model"
  "$CHOIR" train --config "$CONFIG" --data "$OUT/data" --out "$OUT/$model" --model "$model" \
    --groups "$G/groups.tsv" --priors "$G/priors"
done

step "serving: export choirrec's last checkpoint -> $OUT/choirrec/bundle; score the test split from it"
"$CHOIR" export --checkpoint "$OUT/choirrec/checkpoint" --out "$OUT/choirrec/bundle" --force --quiet
"$CHOIR" predict --bundle "$OUT/choirrec/bundle" --in "$OUT/data" --out "$OUT/choirrec/bundle.preds.tsv" --quiet
if cmp -s "$OUT/choirrec/bundle.preds.tsv" "$OUT/choirrec/preds.tsv"; then
  echo "the bundle's predictions equal training's (preds.tsv)" >&2
else
  echo "quickstart: the bundle's predictions differ from $OUT/choirrec/preds.tsv" >&2
  exit 1
fi

step "report: choirrec and din against dnn -> $OUT/report.md, plots in $OUT/plots"
{
  echo "# Quickstart: choirrec and din against dnn ($USERS users, seed $SEED)"
  echo
  echo "## choirrec against dnn"
  echo
  "$CHOIR" report --base "$OUT/dnn/eval.json" --run "$OUT/choirrec/eval.json" \
    --plots "$OUT/plots" --preds "dnn=$OUT/dnn/preds.tsv,choirrec=$OUT/choirrec/preds.tsv" --quiet
  echo
  echo "## din against dnn"
  echo
  "$CHOIR" report --base "$OUT/dnn/eval.json" --run "$OUT/din/eval.json" --quiet
  echo
  echo "## semantic groups: recovery of the hidden personas"
  echo
  sed 's/^#/##/' "$G/groups.tsv.quality.md"  # its headings one level down
} > "$OUT/report.md"
cat "$OUT/report.md"

step "done: $OUT"
