#!/usr/bin/env bash
# The GPU check (needs an NVIDIA GPU): builds Choir with CUDA, runs the gpu tests (they fail
# rather than skip here), the GPU benchmark (dense-tower samples/s of dnn and ChoirRec at batch
# 1024/4096/16384, achieved matrix-product TFLOP/s against the card's measured cuBLAS peak) and
# end-to-end training samples/s with a local parameter server (a worker and one server over
# ZeroMQ on loopback, as threads) on the GPU against the CPU, then prints a table. Every stage's
# time limit is cut to what is left of --budget (default 450 s), so the table always comes.
#
#   tools/gpu_check.sh [--prebuilt DIR|BUNDLE.tar.xz] [--out DIR] [--groups groups.tsv --priors DIR]
#                      [--budget SECONDS]
#
# --prebuilt: binaries from tools/gpu_bundle.sh instead of a build (a GPU machine without
#   Choir's build dependencies); without it, builds into build-gpu/ (run tools/setup.sh once).
# --groups/--priors: the semantic groups of the 100,000-user, seed-1 dataset (what
#   launch/quickstart.sh builds into runs/quickstart/groups) for the ChoirRec end-to-end rows;
#   without them those rows are skipped.
# --out (default /tmp/choir-gpu-check) receives five files: table.txt (what is printed last),
# tests.tsv, bench_gpu.jsonl, bench_train.jsonl and logs.tar.gz (every log). Exit status 1 if a
# test or a benchmark fails or a stage ran out of time.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tools/gpu_env.sh
source "$ROOT/tools/gpu_env.sh"
PREBUILT="" OUT="/tmp/choir-gpu-check" GROUPS_TSV="" PRIORS="" BUDGET=450
while [[ $# -gt 0 ]]; do
  case "$1" in
    --prebuilt) PREBUILT="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --groups) GROUPS_TSV="$(realpath "$2")"; shift 2 ;;
    --priors) PRIORS="$(realpath "$2")"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
  esac
done
gpu_start gpu_check
out_of_time() { say "$1: skipped, the ${BUDGET}s budget is spent"; FAILED=1; }

if ! nvidia-smi >"$LOGS/nvidia-smi.txt" 2>&1; then
  echo "gpu_check: nvidia-smi failed: no usable NVIDIA GPU here" >&2
  cat "$LOGS/nvidia-smi.txt" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$LOGS/gpu.csv"

# Binaries.
if [[ -n "$PREBUILT" ]]; then
  gpu_use_prebuilt "$PREBUILT" || exit 1
else
  say "building with CUDA into $ROOT/build-gpu"
  cmake -S "$ROOT" -B "$ROOT/build-gpu" -DCMAKE_BUILD_TYPE=Release -DWITH_CUDA=ON >"$LOGS/build.log" 2>&1 &&
    cmake --build "$ROOT/build-gpu" -j "$(nproc)" --target choir choir_bench_gpu choir_bench_train \
      gpu_tests >>"$LOGS/build.log" 2>&1 ||
    { tail -30 "$LOGS/build.log"; echo "gpu_check: build failed (did tools/setup.sh run?)" >&2; exit 1; }
  BIN="$ROOT/build-gpu/bin" TESTS="$ROOT/build-gpu/tests/gpu"
fi

# Tests: every gpu test binary, with skipping turned into failure; the whole models and the
# trainer (uploads on the second stream, frees from the prefetch thread, NCCL) once more without
# the stream-ordered memory pool (the cudaMalloc cache of GPUs that lack one).
: >"$OUT/tests.tsv"
for spec in gpu_ops_test gpu_layers_test gpu_attention_test gpu_model_test gpu_nccl_test gpu_trainer_test \
    gpu_model_test@nopools gpu_trainer_test@nopools; do
  t=${spec%@*} envs=(CHOIR_GPU_REQUIRED=1)
  [[ $spec == *@nopools ]] && envs+=(CHOIR_CUDA_NO_POOLS=1)
  if [[ ! -x "$TESTS/$t" ]]; then
    say "$spec: missing"; printf '%s\tmissing\t0\t0\n' "$spec" >>"$OUT/tests.tsv"; FAILED=1; continue
  fi
  lim=$(limit 150) || { out_of_time "$spec"; printf '%s\tno-time\t0\t0\n' "$spec" >>"$OUT/tests.tsv"; continue; }
  env "${envs[@]}" timeout "$lim" "$TESTS/$t" >"$LOGS/$spec.log" 2>&1
  rc=$?
  passed=$(grep -oE '\[  PASSED  \] [0-9]+' "$LOGS/$spec.log" | grep -oE '[0-9]+' || echo 0)
  failed=$(grep -oE '[0-9]+ FAILED TEST' "$LOGS/$spec.log" | grep -oE '^[0-9]+' || echo 0)
  status=pass
  [[ $rc -ne 0 ]] && { status="FAIL(rc=$rc)"; FAILED=1; grep -E '^\[  FAILED  \]|Failure|error' "$LOGS/$spec.log" | head -20; tail -20 "$LOGS/$spec.log"; }
  printf '%s\t%s\t%s\t%s\n' "$spec" "$status" "${passed:-0}" "${failed:-0}" >>"$OUT/tests.tsv"
  say "$spec: $status"
done

# Benchmarks.
: >"$OUT/bench_gpu.jsonl"
if lim=$(limit 150); then
  say "benchmark: dense towers (fp32)"
  timeout "$lim" "$BIN/choir_bench_gpu" --models dnn,choirrec --batches 1024,4096,16384 >>"$OUT/bench_gpu.jsonl" 2>"$LOGS/bench_gpu.err" ||
    { say "choir_bench_gpu failed"; tail -20 "$LOGS/bench_gpu.err"; FAILED=1; }
else
  out_of_time "benchmark fp32"
fi
for precision in tf32 bf16; do
  lim=$(limit 60) || { out_of_time "benchmark $precision"; continue; }
  say "benchmark: dense towers ($precision, batch 16384)"
  timeout "$lim" "$BIN/choir_bench_gpu" --models dnn,choirrec --batches 16384 --precision $precision --cpu_steps 0 \
    >>"$OUT/bench_gpu.jsonl" 2>"$LOGS/bench_gpu_$precision.err" ||
    { say "choir_bench_gpu --precision $precision failed"; tail -20 "$LOGS/bench_gpu_$precision.err"; FAILED=1; }
done

# End to end: one worker and one parameter server over ZeroMQ on loopback (cluster.servers=1),
# on the CPU and the GPU, the GPU also with the next batch's pull and upload overlapping the step
# (cuda-stale1) and, for dnn, on the in-process embedding store (servers 0) to show what the
# server round trips cost.
: >"$OUT/bench_train.jsonl"
say "end-to-end: data (100,000 users, seed 1)"
if lim=$(limit 120) && timeout "$lim" "$BIN/choir" data gen --out "$WORK/data" --users 100000 --seed 1 --quiet >"$LOGS/datagen.log" 2>&1; then
  for model in dnn choirrec; do
    set_groups="" runs="cpu cuda cuda-stale1 cuda-store"
    if [[ $model == choirrec ]]; then
      [[ -n "$GROUPS_TSV" && -n "$PRIORS" ]] || { say "choirrec end-to-end skipped (no --groups/--priors)"; continue; }
      set_groups="model.groups.table=$GROUPS_TSV;model.groups.priors=$PRIORS;"
      runs="cpu cuda cuda-stale1"
    fi
    for run in $runs; do
      device=${run%%-*}
      extra=";cluster.servers=1;cluster.transport=zmq"
      [[ $run == *stale1 ]] && extra="$extra;trainer.sparse_staleness=1"
      [[ $run == *store ]] && extra=""
      lim=$(limit 120) || { out_of_time "end-to-end $model/$run"; continue; }
      say "end-to-end: $model, $run"
      timeout "$lim" "$BIN/choir_bench_train" --data "$WORK/data" --model "$model" --threads "$(nproc)" \
        --config "$ROOT/configs/quickstart.pbtxt" --steps 100 --batch 4096 \
        --set "${set_groups}trainer.device=$device$extra" >>"$OUT/bench_train.jsonl" 2>"$LOGS/train_${model}_$run.err" ||
        { say "end-to-end $model/$run failed"; tail -20 "$LOGS/train_${model}_$run.err"; FAILED=1; }
    done
  done
else
  say "data gen failed or out of time"; tail -20 "$LOGS/datagen.log" 2>/dev/null; FAILED=1
fi

python3 - "$OUT" <<'PY' | tee "$OUT/table.txt"
import json, sys, os
out = sys.argv[1]
rows = [json.loads(l) for f in ("bench_gpu.jsonl", "bench_train.jsonl")
        if os.path.exists(os.path.join(out, f)) for l in open(os.path.join(out, f)) if l.strip().startswith("{")]
print("\n== GPU check ==")
for line in open(os.path.join(out, "tests.tsv")):
    name, status, passed, failed = line.rstrip("\n").split("\t")
    print(f"test  {name:22s} {status:10s} passed {passed:>3s}  failed {failed}")
gpu = [r for r in rows if r.get("bench") == "gpu"]
if gpu:
    print(f"device: {gpu[0]['device']}")
    for r in gpu:
        if r["metric"] == "sgemm_peak":
            print(f"cuBLAS GEMM 8192^3 peak ({r['precision']}): {r['value']:.1f} TFLOP/s")
    print(f"{'model':9s} {'prec':5s} {'batch':>6s} {'tower samples/s':>16s} {'matmul TFLOP/s':>15s} {'of peak':>8s} {'step+copies/s':>14s} {'GPU MB':>8s}")
    keyed = {}
    for r in gpu:
        if "batch" in r and r["metric"].startswith(("tower", "step")):
            keyed.setdefault((r["model"], r["precision"], r["batch"]), {})[r["metric"]] = r
    for (m, p, b), v in keyed.items():
        t = v.get("tower_samples_per_s", {}); f = v.get("tower_matmul_tflops", {}); s = v.get("tower_share_of_sgemm_peak", {})
        st = v.get("step_with_transfers_samples_per_s", {})
        print(f"{m:9s} {p:5s} {b:6d} {t.get('value', 0):16,.0f} {f.get('value', 0):15.3f} {100 * s.get('value', 0):7.2f}% {st.get('value', 0):14,.0f} {t.get('gpu_mem_used_mb', 0):8.0f}")
    for r in gpu:
        if r["metric"] == "cpu_step_samples_per_s":
            print(f"cpu reference: {r['model']} batch {r['batch']}: {r['value']:,.0f} samples/s ({r['cpu']})")
train = [r for r in rows if r.get("bench") == "train" and r["metric"] == "samples_per_s"]
if train:
    print(f"{'end-to-end':12s} {'device':6s} {'servers':>7s} {'stale':>5s} {'batch':>6s} {'samples/s':>12s} {'peak RSS MB':>12s}")
    for r in train:
        print(f"{r['model']:12s} {r['device']:6s} {r.get('servers', 0):7d} {r.get('sparse_staleness', 0):5d} {r['batch']:6d} {r['value']:12,.0f} {r['peak_rss_mb']:12.0f}")
PY
say "done in $((SECONDS - START)) s of the ${BUDGET} s budget (table, JSON lines and logs.tar.gz in $OUT)"
exit $FAILED
