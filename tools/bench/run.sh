#!/usr/bin/env bash
# Runs Choir's benchmarks; prints one JSON object per line (bench, metric, value, unit, ...).
#   tools/bench/run.sh [NAME...]     names: data, train, encoder, groups, ps, checkpoint, predictor (default: all)
#   BENCH_USERS="100000 1000000" tools/bench/run.sh data
#   BENCH_TRAIN_DATA=runs/quickstart/data BENCH_GROUPS=runs/quickstart/groups tools/bench/run.sh train
#     (train: dnn and din on generated data, or on BENCH_TRAIN_DATA; choirrec too with BENCH_GROUPS,
#     the groups built from that data)
# encoder: the built-in MiniLM against the PyTorch reference (tools/text/bench_encoder_torch.py,
#   needs python3-torch and transformers) on the same 1000 profile texts, batch 64, 1 and 2
#   threads (BENCH_TEXTS to change); groups: RQ-KMeans 3 x 256 on 10^6 x 384 (BENCH_RQ_N);
# ps: parameter-server pull/push keys/s over ZeroMQ loopback, 1 server, 1-2 workers, dims 8/16/64,
#   4k/16k/64k keys per request from a 10^6-row table (and dim 16 from a 65,536-row one), the
#   median of 3 runs each, all Adagrad, then the push of FTRL, Adam and SGD (dim 16, 16k keys); checkpoint: write (synced) and restore MB/s of 10^6 rows, dims 16/64;
# predictor: Predict latency p50/p99 and samples/s at batch 1, 256 and 4096 from a bundle of din
#   trained on 20,000 users (BENCH_BUNDLE=DIR BENCH_BUNDLE_DATA=DATASET: that bundle instead, e.g.
#   the quickstart's choirrec).
# Each case runs in its own process so its peak memory is its own. Builds first when needed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="$ROOT/build/bin"
[[ -x "$BIN/choir_bench_data" && -x "$BIN/choir_bench_train" && -x "$BIN/choir_bench_groups" && -x "$BIN/bench_encoder" &&
   -x "$BIN/choir_bench_ps" && -x "$BIN/choir_bench_checkpoint" && -x "$BIN/choir_bench_predictor" ]] ||
  "$ROOT/tools/setup.sh" >&2
NAMES=("$@")
[[ ${#NAMES[@]} -eq 0 ]] && NAMES=(data train encoder groups ps checkpoint predictor)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/choir-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

for name in "${NAMES[@]}"; do
  case "$name" in
    data)
      for users in ${BENCH_USERS:-100000 1000000}; do
        for threads in 1 2; do
          rm -rf "$WORK/gen"
          "$BIN/choir_bench_data" --mode gen --users "$users" --threads "$threads" --out "$WORK/gen"
        done
        for threads in 1 2; do
          "$BIN/choir_bench_data" --mode read --dir "$WORK/gen" --threads "$threads"
        done
      done
      ;;
    train)
      DATA="${BENCH_TRAIN_DATA:-}"
      MODELS=(dnn din)
      if [[ -n "${BENCH_GROUPS:-}" ]]; then
        [[ -n "$DATA" ]] || { echo "bench: BENCH_GROUPS needs BENCH_TRAIN_DATA, the dataset the groups were built from" >&2; exit 2; }
        [[ -f "$BENCH_GROUPS/groups.tsv" && -d "$BENCH_GROUPS/priors" ]] ||
          { echo "bench: BENCH_GROUPS=$BENCH_GROUPS has no groups.tsv and priors/ (choir groups build's output)" >&2; exit 2; }
        MODELS+=(choirrec)
      fi
      if [[ -z "$DATA" ]]; then
        DATA="$WORK/train-data"
        "$ROOT/build/bin/choir" data gen --out "$DATA" --users "${BENCH_TRAIN_USERS:-100000}" --quiet >&2
      fi
      for model in "${MODELS[@]}"; do
        EXTRA=()
        [[ "$model" == choirrec ]] &&
          EXTRA=(--set "model.groups.table=$BENCH_GROUPS/groups.tsv;model.groups.priors=$BENCH_GROUPS/priors")
        for threads in 1 2; do
          "$BIN/choir_bench_train" --data "$DATA" --model "$model" --threads "$threads" \
            --steps "${BENCH_TRAIN_STEPS:-300}" "${EXTRA[@]}"
        done
      done
      ;;
    encoder)
      MODEL_DIR="${CHOIR_MODEL_CACHE:-$ROOT/.cache/models}/all-MiniLM-L6-v2"
      rm -rf "$WORK/enc-data"
      "$ROOT/build/bin/choir" data gen --out "$WORK/enc-data" --users 5000 --quiet >&2
      "$ROOT/build/bin/choir" groups profile --data "$WORK/enc-data" --out "$WORK/profiles.tsv" >&2
      for threads in 1 2; do
        "$BIN/bench_encoder" --model_dir "$MODEL_DIR" --in "$WORK/profiles.tsv" --texts "${BENCH_TEXTS:-1000}" \
          --batch 64 --threads "$threads"
        if /usr/bin/python3 -c "import torch, transformers" 2>/dev/null; then
          /usr/bin/python3 "$ROOT/tools/text/bench_encoder_torch.py" --model-dir "$MODEL_DIR" --in "$WORK/profiles.tsv" \
            --texts "${BENCH_TEXTS:-1000}" --batch 64 --threads "$threads" 2>/dev/null
        else
          echo "bench: PyTorch reference skipped (no torch/transformers for /usr/bin/python3; see docs/encoder.md)" >&2
        fi
      done
      ;;
    groups)
      "$BIN/choir_bench_groups" --n "${BENCH_RQ_N:-1000000}" --dim 384 --levels 3 --k 256 --threads 2 2>/dev/null
      ;;
    ps)
      for workers in 1 2; do
        for dim in 8 16 64; do
          for keys in 4096 16384 65536; do
            "$BIN/choir_bench_ps" --workers "$workers" --dim "$dim" --keys "$keys" \
              --requests $(( 1638400 / keys )) --rows 1000000 --repeat 3 2>/dev/null
          done
        done
      done
      # A table small enough for the caches (65,536 rows): lookups without DRAM misses.
      for keys in 4096 65536; do
        "$BIN/choir_bench_ps" --workers 1 --dim 16 --keys "$keys" --requests $(( 1638400 / keys )) \
          --rows 65536 --repeat 3 2>/dev/null
      done
      # The push of each sparse optimizer (the lines above are Adagrad's), dim 16, 16k keys.
      for optimizer in ftrl adam sgd; do
        "$BIN/choir_bench_ps" --workers 1 --dim 16 --keys 16384 --requests 100 --rows 1000000 --repeat 3 \
          --ops push --optimizer "$optimizer" 2>/dev/null
      done
      ;;
    checkpoint)
      for dim in 16 64; do
        "$BIN/choir_bench_checkpoint" --dir "$WORK" --rows 1000000 --dim "$dim" --repeat 3 2>/dev/null
      done
      ;;
    predictor)
      bundle="${BENCH_BUNDLE:-}" data="${BENCH_BUNDLE_DATA:-}"
      if [[ -z "$bundle" ]]; then
        data="$WORK/pred-data" bundle="$WORK/pred-bundle"
        "$BIN/choir" data gen --out "$data" --users 20000 --quiet >&2
        "$BIN/choir" train --config "$ROOT/configs/quickstart.pbtxt" --data "$data" --out "$WORK/pred-run" \
          --model din --set 'trainer.max_steps=100' --quiet >&2
        "$BIN/choir" export --checkpoint "$WORK/pred-run/checkpoint" --out "$bundle" >&2
      fi
      "$BIN/choir_bench_predictor" --bundle "$bundle" --data "$data" 2>/dev/null
      ;;
    *) echo "bench: unknown benchmark '$name' (known: data, train, encoder, groups, ps, checkpoint, predictor)" >&2; exit 2 ;;
  esac
done
