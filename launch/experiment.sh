#!/usr/bin/env bash
# The ChoirRec experiment of docs/results.md: dnn, din, dnn+groupid, choirrec and each
# ablation of choirrec, over several seeds, on a dataset with its semantic groups (what
# launch/quickstart.sh produces), then a table of mean and spread per activity bucket.
#   launch/experiment.sh [--run DIR (runs/quickstart)] [--seeds "1 2 3"] [--variants "dnn choirrec ..."]
#                        [--config FILE (configs/quickstart.pbtxt)] [--set 'a.b=c;...']
# Reads DIR/data, DIR/groups/groups.tsv and DIR/groups/priors; writes
# DIR/experiment/<variant>/seed<S>/ and DIR/experiment/summary.md. A run whose eval.json exists
# is not trained again (delete it to retrain). Variants beyond the default list (--variants):
# choirrec-kd-reverse, choirrec-kd-hinge, choirrec-act-2 (DESIGN.md 1.3's open choices).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/runs/quickstart"
SEEDS="1 2 3"
VARIANTS="dnn din dnn+groupid choirrec choirrec-no-aux choirrec-no-groupids choirrec-no-attributes choirrec-no-groupseq choirrec-no-injection choirrec-no-gates choirrec-no-kd choirrec-no-groups"
CONFIG="$ROOT/configs/quickstart.pbtxt"
EXTRA=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --run) RUN="$2"; shift ;;
    --seeds) SEEDS="$2"; shift ;;
    --variants) VARIANTS="$2"; shift ;;
    --config) CONFIG="$2"; shift ;;
    --set) EXTRA="$2"; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "experiment: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

CHOIR="$ROOT/build/bin/choir"
[[ -x "$CHOIR" ]] || { echo "experiment: $CHOIR missing; run tools/setup.sh first" >&2; exit 1; }
for need in "$RUN/data/dataset.pbtxt" "$RUN/groups/groups.tsv" "$RUN/groups/priors/priors.json"; do
  [[ -e "$need" ]] || { echo "experiment: $need missing; run launch/quickstart.sh first" >&2; exit 1; }
done

# variant -> model type and overrides
variant_args() {
  case "$1" in
    dnn|din|dnn+groupid|choirrec) echo "--model $1" ;;
    choirrec-no-aux) echo "--model choirrec --set model.choirrec.aux_loss_weight=0" ;;
    choirrec-no-groupids) echo "--model choirrec --set model.choirrec.use_group_ids=false" ;;
    choirrec-no-attributes) echo "--model choirrec --set model.choirrec.use_attribute_completion=false" ;;
    choirrec-no-groupseq) echo "--model choirrec --set model.choirrec.use_group_sequence=false" ;;
    choirrec-no-injection) echo "--model choirrec --set model.choirrec.use_injection=false" ;;
    choirrec-no-gates) echo "--model choirrec --set model.choirrec.use_gates=false" ;;
    choirrec-no-kd) echo "--model choirrec --set model.choirrec.use_kd=false" ;;
    # The choices DESIGN.md 1.3 leaves open, each against the defaults.
    choirrec-kd-reverse) echo "--model choirrec --set model.choirrec.kd_direction=group_to_individual" ;;
    choirrec-kd-hinge) echo "--model choirrec --set model.choirrec.kd_margin_form=hinge" ;;
    choirrec-act-2) echo "--model choirrec --set model.choirrec.activity_features=purchases,low" ;;
    # Control: the dual-tower architecture with every group input removed (the group channel
    # sees only the candidate item and context), to tell the groups' share of the gain.
    choirrec-no-groups) echo "--model choirrec --set model.choirrec.use_group_ids=false;model.choirrec.use_attribute_completion=false;model.choirrec.use_group_sequence=false" ;;
    *) echo "experiment: unknown variant $1" >&2; exit 2 ;;
  esac
}

EXP="$RUN/experiment"
mkdir -p "$EXP"
for variant in $VARIANTS; do
  for seed in $SEEDS; do
    out="$EXP/$variant/seed$seed"
    if [[ -f "$out/eval.json" ]]; then
      echo "==> $variant seed $seed: done before ($out/eval.json)" >&2
      continue
    fi
    read -r -a args <<<"$(variant_args "$variant")"
    # Overrides: the variant's switch, the seed, then the caller's --set.
    sets="trainer.seed=$seed"
    for ((i = 0; i < ${#args[@]}; i++)); do
      if [[ "${args[$i]}" == "--set" ]]; then sets="${args[$((i + 1))]};$sets"; fi
    done
    [[ -n "$EXTRA" ]] && sets="$sets;$EXTRA"
    mkdir -p "$(dirname "$out")"
    echo "==> $variant seed $seed -> $out" >&2
    start=$(date +%s)
    "$CHOIR" train --config "$CONFIG" --data "$RUN/data" --out "$out" --model "${args[1]}" \
      --groups "$RUN/groups/groups.tsv" --priors "$RUN/groups/priors" --set "$sets" \
      >"$out.log" 2>&1 || { echo "experiment: $variant seed $seed failed, see $out.log" >&2; tail -5 "$out.log" >&2; exit 1; }
    echo "    $(( $(date +%s) - start )) s" >&2
  done
done

ORDER="$(echo "$VARIANTS" | tr ' ' ',')"
{
  echo "# ChoirRec experiment: $(echo "$SEEDS" | wc -w) seeds ($SEEDS), $RUN"
  echo
  echo "GAUC and AUC on the test split, mean ± sample standard deviation over seeds."
  echo
  /usr/bin/env python3 "$ROOT/tools/eval/summarize_runs.py" --base dnn --order "$ORDER" "$EXP"
} >"$EXP/summary.md"
cat "$EXP/summary.md"
