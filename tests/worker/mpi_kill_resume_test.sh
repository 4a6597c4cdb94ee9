#!/usr/bin/env bash
# A parameter server killed with SIGKILL under mpirun (ctest label mpi): the job stops with
# mpirun naming the rank (no hang), and rerunning it with --resume latest finishes with
# predictions byte-identical to a job that was never interrupted.
#   tests/worker/mpi_kill_resume_test.sh path/to/choir
set -euo pipefail
CHOIR="$1"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/choir-mpi-kill.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
MPIRUN=(mpirun --oversubscribe --bind-to none)
[[ $(id -u) -eq 0 ]] && MPIRUN+=(--allow-run-as-root)
export OMPI_MCA_btl_vader_single_copy_mechanism=none
export OPENBLAS_NUM_THREADS=1

"$CHOIR" data gen --out "$WORK/data" --users 3000 --seed 2 --quiet
job() {  # job NAME: a job writing into $WORK/NAME, a checkpoint every 5 steps
  cat >"$WORK/$1.pbtxt" <<JOB
name: "mpi_kill_resume_test"
task: TASK_CVR
data { dir: "$WORK/data" }
model { type: "dnn" embedding_dim: 8 hidden: [32, 16] }
trainer { batch_size: 32 epochs: 8 seed: 3 out_dir: "$WORK/$1" checkpoint_every_steps: 5 }
cluster { servers: 1 heartbeat_ms: 100 peer_timeout_ms: 20000 advertise_host: "127.0.0.1" }
JOB
}
job full
job killed

timeout 300 "${MPIRUN[@]}" -np 4 "$CHOIR" train --config "$WORK/full.pbtxt" >"$WORK/full.log" 2>&1 ||
  { cat "$WORK/full.log"; echo "FAIL: the uninterrupted job"; exit 1; }

timeout 300 "${MPIRUN[@]}" -np 4 "$CHOIR" train --config "$WORK/killed.pbtxt" >"$WORK/killed.log" 2>&1 &
MPI_PID=$!
# Once a checkpoint is committed, SIGKILL the parameter server (rank 1).
for _ in $(seq 1 6000); do
  compgen -G "$WORK/killed/checkpoint/step-*/MANIFEST.json" >/dev/null && break
  sleep 0.01
done
killed=""
for p in $(pgrep -f "train --config $WORK/killed.pbtxt" || true); do
  if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then
    kill -9 "$p" && killed="$p"
  fi
done
[[ -n "$killed" ]] || { cat "$WORK/killed.log"; echo "FAIL: no server rank to kill"; exit 1; }
if wait "$MPI_PID"; then
  cat "$WORK/killed.log"; echo "FAIL: the job with a killed server succeeded"; exit 1
fi
# mpirun names the killed rank; a survivor that sees the server gone first names it in its error
# ("server 0 (ps0)") before its MPI_Abort, which can win the race to the log on a loaded machine.
grep -qE "rank 1|error: .*ps0" "$WORK/killed.log" ||
  { cat "$WORK/killed.log"; echo "FAIL: the killed server (rank 1, ps0) not named"; exit 1; }
if [[ -f "$WORK/killed/preds.tsv" ]]; then echo "FAIL: the killed job wrote predictions"; exit 1; fi

timeout 300 "${MPIRUN[@]}" -np 4 "$CHOIR" train --config "$WORK/killed.pbtxt" --resume latest \
  >"$WORK/resumed.log" 2>&1 || { cat "$WORK/resumed.log"; echo "FAIL: the resumed job"; exit 1; }
grep -q "resuming from" "$WORK/resumed.log" || { cat "$WORK/resumed.log"; echo "FAIL: did not resume"; exit 1; }
cmp "$WORK/killed/preds.tsv" "$WORK/full/preds.tsv" ||
  { echo "FAIL: the resumed job's predictions differ from the uninterrupted job's"; exit 1; }
echo "PASS: server rank killed, job resumed from $(grep -o 'step-[0-9]*' "$WORK/resumed.log" | head -1), predictions identical"
