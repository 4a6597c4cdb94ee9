#!/usr/bin/env bash
# Runs Choir's benchmarks; prints one JSON object per line (bench, metric, value, unit, ...).
#   tools/bench/run.sh [NAME...]     names: data, train (default: all)
#   BENCH_USERS="100000 1000000" tools/bench/run.sh data
# Each case runs in its own process so its peak memory is its own. Builds first when needed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="$ROOT/build/bin"
[[ -x "$BIN/choir_bench_data" && -x "$BIN/choir_bench_train" ]] || "$ROOT/tools/setup.sh" --no-model >&2
NAMES=("$@")
[[ ${#NAMES[@]} -eq 0 ]] && NAMES=(data train)
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
      rm -rf "$WORK/train-data"
      "$ROOT/build/bin/choir" data gen --out "$WORK/train-data" --users "${BENCH_TRAIN_USERS:-100000}" --quiet >&2
      for model in dnn din; do
        for threads in 1 2; do
          "$BIN/choir_bench_train" --data "$WORK/train-data" --model "$model" --threads "$threads" \
            --steps "${BENCH_TRAIN_STEPS:-300}"
        done
      done
      ;;
    *) echo "bench: unknown benchmark '$name' (known: data, train)" >&2; exit 2 ;;
  esac
done
