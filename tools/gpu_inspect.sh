#!/usr/bin/env bash
# What tools/gpu_check.sh does not look at, on a lent GPU (needs an NVIDIA GPU and the CUDA
# tools compute-sanitizer and ncu there):
#  1. where a dense-tower training step's GPU time goes: ncu times every kernel of
#     choir_bench_gpu (gpu__time_duration only, clocks and caches left alone) and the table
#     groups them by kind (matrix products, attention, activations, column sums, optimizer...);
#  2. compute-sanitizer over the gpu tests: memcheck (out-of-bounds and misaligned accesses,
#     errors from CUDA calls), racecheck (shared-memory races) and initcheck (reads of device
#     memory nothing wrote), for the tests each tool's list names (60 s each at most);
#  3. repeat: the gpu tests that compare against the CPU, each run --repeat times (fresh random
#     inputs every time), counting the runs that fail: a tolerance that holds once can still
#     fail one run in twenty (the attention test's old rule did, 2026-11-29).
#
#   tools/gpu_inspect.sh --prebuilt DIR|BUNDLE.tar.xz [--out DIR] [--budget SECONDS]
#                        [--stages kernels,sanitizers,repeat] [--repeat N]
#
# --out (default /tmp/choir-gpu-inspect) receives sanitizer.tsv, kernels.tsv (every kernel
# name with launches and total microseconds per profiled case), repeat.tsv (test, runs, failed
# runs), table.txt (printed last) and logs.tar.gz. Exit status 1 if a sanitizer reports an error or a stage fails or runs out of time.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tools/gpu_env.sh
source "$ROOT/tools/gpu_env.sh"
PREBUILT="" OUT="/tmp/choir-gpu-inspect" BUDGET=420 STAGES="kernels,sanitizers,repeat" REPEAT=25
while [[ $# -gt 0 ]]; do
  case "$1" in
    --prebuilt) PREBUILT="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --stages) STAGES="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    *) echo "gpu_inspect: unknown argument $1" >&2; exit 2 ;;
  esac
done
for stage in ${STAGES//,/ }; do
  [[ $stage == kernels || $stage == sanitizers || $stage == repeat ]] ||
    { echo "gpu_inspect: unknown stage '$stage' (kernels, sanitizers, repeat)" >&2; exit 2; }
done
want() { [[ ",$STAGES," == *",$1,"* ]]; }
[[ -n "$PREBUILT" ]] || { echo "gpu_inspect: --prebuilt is required (tools/gpu_prepare.sh makes one)" >&2; exit 2; }
gpu_start gpu_inspect
# The CUDA tool NAME: on the PATH, in the toolkit, or under Nsight's folder.
find_tool() {
  command -v "$1" 2>/dev/null && return 0
  local p
  for p in /usr/local/cuda/bin/"$1" /usr/local/cuda-*/bin/"$1"; do [[ -x $p ]] && { echo "$p"; return 0; }; done
  # (find fails when a folder is missing, even where the other holds the tool: no pipefail here.)
  p="$(find /opt/nvidia /usr/local -name "$1" -type f -perm -u+x -print -quit 2>/dev/null)"
  [[ -n $p ]] && { echo "$p"; return 0; }
  return 1
}

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$LOGS/gpu.csv" || { echo "gpu_inspect: no usable NVIDIA GPU" >&2; exit 1; }
gpu_use_prebuilt "$PREBUILT" || exit 1

# 1. Kernel times of one tower step. choir_bench_gpu with --steps 2 runs 18 steps per case
# (3 warm-ups and 3 x 2 timed, twice: inputs on the device, then copied in); the kernels of its
# peak measurement (the leading launches of one GEMM kernel) are left out.
: >"$OUT/kernels.tsv"
if ! want kernels; then
  :
elif NCU=$(find_tool ncu); then
  say "ncu: $NCU"
  for case in choirrec:16384 dnn:16384 choirrec:1024; do
    model=${case%%:*} batch=${case#*:}
    lim=$(limit 120) || { say "ncu $case: skipped, budget spent"; FAILED=1; continue; }
    timeout "$lim" "$NCU" --clock-control none --cache-control none --metrics gpu__time_duration.sum \
      --csv --page raw --print-units base "$BIN/choir_bench_gpu" --models "$model" --batches "$batch" --steps 2 \
      --cpu_steps 0 >"$LOGS/ncu_${model}_$batch.csv" 2>"$LOGS/ncu_${model}_$batch.err" ||
      { say "ncu $case failed"; tail -5 "$LOGS/ncu_${model}_$batch.err"; FAILED=1; continue; }
    python3 - "$LOGS/ncu_${model}_$batch.csv" "$model" "$batch" 18 >>"$OUT/kernels.tsv" 2>>"$LOGS/ncu_summary.err" <<'PY' ||
import csv, sys
path, model, batch, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = [r for r in csv.reader(l for l in open(path) if l.startswith('"'))]
head = rows[0]
name_col, time_col = head.index("Kernel Name"), head.index("gpu__time_duration.sum")
kernels = []
for r in rows[1:]:
    try:
        kernels.append((r[name_col], float(r[time_col].replace(",", "")) / 1e3))  # ns -> us
    except ValueError:
        continue  # the units row
# The peak measurement: the leading launches of one cuBLAS kernel.
start = 0
while kernels and start < len(kernels) and kernels[start][0] == kernels[0][0] and "gemm" in kernels[0][0].lower():
    start += 1
print(f"{path}: {len(kernels)} kernels, the first {start} (peak measurement) left out", file=sys.stderr)
totals = {}
for name, us in kernels[start:]:
    n, t = totals.get(name, (0, 0.0))
    totals[name] = (n + 1, t + us)
for name, (n, t) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
    print(f"{model}\t{batch}\t{n / steps:.2f}\t{t / steps:.2f}\t{name}")
PY
      { say "ncu $case: cannot read its CSV"; FAILED=1; continue; }
    say "ncu $case: $(grep -c "^$model	$batch	" "$OUT/kernels.tsv") kernel names"
  done
else
  say "ncu not found: kernel-time stage skipped"; FAILED=1
fi

# 2. Sanitizers. Errors only count when the tool says so (--error-exitcode); a test failure
# under the tool is reported as such.
: >"$OUT/sanitizer.tsv"
if ! want sanitizers; then
  :
elif SAN=$(find_tool compute-sanitizer); then
  say "compute-sanitizer: $SAN"
  for spec in memcheck:gpu_ops_test memcheck:gpu_layers_test memcheck:gpu_attention_test \
      memcheck:gpu_model_test racecheck:gpu_ops_test racecheck:gpu_attention_test \
      racecheck:gpu_layers_test initcheck:gpu_ops_test initcheck:gpu_layers_test initcheck:gpu_attention_test \
      initcheck:gpu_model_test memcheck:gpu_trainer_test; do
    tool=${spec%%:*} t=${spec#*:}
    lim=$(limit 60) || { say "$spec: skipped, budget spent"; printf '%s\t%s\tno-time\n' "$tool" "$t" >>"$OUT/sanitizer.tsv"; FAILED=1; continue; }
    extra=()
    [[ $tool == memcheck ]] && extra=(--leak-check no)
    # NCCL's communicator set-up probes its kernels with cudaFuncGetAttributes and handles the
    # cudaErrorNoKernelImageForDevice some of them give (8 reports on an H200, 2026-11-29), which
    # memcheck would count as errors; Choir checks every CUDA call's status itself.
    [[ $tool == memcheck && $t == gpu_trainer_test ]] && extra+=(--report-api-errors no)
    CHOIR_GPU_REQUIRED=1 timeout "$lim" "$SAN" --tool "$tool" "${extra[@]}" --error-exitcode 86 \
      "$TESTS/$t" >"$LOGS/san_${tool}_$t.log" 2>&1
    rc=$?
    case $rc in
      0) status=clean ;;
      86) status=ERRORS; FAILED=1 ;;
      124) status=timeout; FAILED=1 ;;
      *) status="test-failed(rc=$rc)"; FAILED=1 ;;
    esac
    summary=$(grep -E '^========= (ERROR SUMMARY|RACECHECK SUMMARY)' "$LOGS/san_${tool}_$t.log" | tail -1 | sed 's/^========= //')
    printf '%s\t%s\t%s\t%s\n' "$tool" "$t" "$status" "$summary" >>"$OUT/sanitizer.tsv"
    say "$tool $t: $status ($summary)"
    [[ $status != clean ]] && grep -E '^=========' "$LOGS/san_${tool}_$t.log" | head -15
  done
else
  say "compute-sanitizer not found: sanitizer stage skipped"; FAILED=1
fi

# 3. Repeats. gtest runs the whole binary N times; each run draws a fresh seed, and a failing
# run prints its seed (CHOIR_TEST_SEED=N replays it).
: >"$OUT/repeat.tsv"
if want repeat; then
  for t in gpu_ops_test gpu_layers_test gpu_attention_test gpu_model_test; do
    lim=$(limit 90) || { say "repeat $t: skipped, budget spent"; printf '%s\t0\tno-time\n' "$t" >>"$OUT/repeat.tsv"; FAILED=1; continue; }
    CHOIR_GPU_REQUIRED=1 timeout "$lim" "$TESTS/$t" --gtest_repeat="$REPEAT" >"$LOGS/repeat_$t.log" 2>&1
    rc=$?
    # gtest closes every repetition with "[==========] k tests ... ran." and a failed one with
    # "[  FAILED  ] k test(s), listed below:".
    runs=$(grep -c '^\[==========\] .* ran\.' "$LOGS/repeat_$t.log")
    failed=$(grep -c '^\[  FAILED  \] [0-9]* tests\?, listed below' "$LOGS/repeat_$t.log")
    [[ $rc -ne 0 ]] && FAILED=1
    [[ $rc -eq 124 ]] && failed="$failed+timeout"
    printf '%s\t%s\t%s\n' "$t" "$runs" "$failed" >>"$OUT/repeat.tsv"
    say "repeat $t: $runs runs, $failed failed"
    [[ $rc -ne 0 ]] && grep -A3 'Failure$' "$LOGS/repeat_$t.log" | head -12
  done
fi

python3 - "$OUT" <<'PY' | tee "$OUT/table.txt"
import os, re, sys
out = sys.argv[1]
print("\n== GPU inspect ==")
for line in open(os.path.join(out, "sanitizer.tsv")):
    f = line.rstrip("\n").split("\t")
    print(f"{f[0]:10s} {f[1]:20s} {f[2]:18s} {f[3] if len(f) > 3 else ''}")
for line in open(os.path.join(out, "repeat.tsv")):
    t, runs, failed = line.rstrip("\n").split("\t")
    print(f"repeat     {t:20s} {runs:>4s} runs, failed {failed}")
KINDS = {
    "attention": "ValidPositionsKernel WeightsKernel WeightedSumKernel ScoreGradKernel QueryGradKernel KeyGradKernel",
    "activations and norms": "PointwiseForwardKernel PointwiseBackwardKernel PreluForwardKernel PreluInputGradKernel "
                             "DiceForwardKernel DiceBackwardColumnsKernel DiceInputGradKernel DiceBatchStatsKernel "
                             "DiceMeanKernel DiceRunningStatsKernel LayerNormForwardKernel LayerNormInputGradKernel",
    "bias/column sums": "ColumnPartialsKernel AddChunksKernel",
    "pooling, packing, copies": "PoolForwardKernel PoolBackwardKernel BlockKernel PackKernel BroadcastRowKernel FillKernel ScaleKernel",
    "loss and fusion": "BceKernel FuseKernel FusionLossKernel FusionBackwardKernel",
    "optimizer": "AdagradKernel SgdKernel AccumulateKernel",
}
def kind(name):
    n = name.lower()
    if any(w in n for w in ("gemm", "cutlass", "xmma", "sm90", "splitk", "cublas")): return "matrix products (cuBLAS)"
    ids = set(re.findall(r"\w+Kernel\b", name))
    for k, names in KINDS.items():
        if ids & set(names.split()): return k
    return "other"
cases = {}
for line in open(os.path.join(out, "kernels.tsv")):
    model, batch, launches, us, name = line.rstrip("\n").split("\t", 4)
    c = cases.setdefault((model, int(batch)), {})
    k = c.setdefault(kind(name), [0.0, 0.0])
    k[0] += float(launches); k[1] += float(us)
for (model, batch), c in cases.items():
    total = sum(v[1] for v in c.values()); launches = sum(v[0] for v in c.values())
    print(f"\n{model} batch {batch}: {launches:.0f} kernels, {total:.0f} us of kernel time per step "
          f"(kernel-time bound {batch / total * 1e6:,.0f} samples/s)")
    for k, (n, us) in sorted(c.items(), key=lambda kv: -kv[1][1]):
        print(f"  {k:26s} {n:6.0f} launches {us:9.1f} us {100 * us / total:5.1f}%")
PY
say "done in $((SECONDS - START)) s of the ${BUDGET} s budget (table, TSVs and logs.tar.gz in $OUT)"
exit $FAILED
