#!/usr/bin/env bash
# Multi-process training under mpirun (ctest label mpi): `mpirun -np 4 choir train` runs a
# scheduler, one parameter server and two workers as four processes over ZeroMQ, with the dense
# gradients allreduced through MPI; its predictions must match the same job in local mode
# (threads, ZeroMQ loopback) to float tolerance, and a job with too few ranks must fail clearly.
#   tests/worker/mpi_cluster_test.sh path/to/choir
set -euo pipefail
CHOIR="$1"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/choir-mpi-test.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
MPIRUN=(mpirun --oversubscribe --bind-to none)
[[ $(id -u) -eq 0 ]] && MPIRUN+=(--allow-run-as-root)
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# Four ranks share the cores: one BLAS thread each.
export OPENBLAS_NUM_THREADS=1

"$CHOIR" data gen --out "$WORK/data" --users 3000 --seed 2 --quiet
cat >"$WORK/job.pbtxt" <<JOB
name: "mpi_cluster_test"
task: TASK_CVR
data { dir: "$WORK/data" }
model { type: "dnn" embedding_dim: 8 hidden: [32, 16] }
trainer { batch_size: 128 max_steps: 10 seed: 3 out_dir: "$WORK/mpi" }
cluster { servers: 1 heartbeat_ms: 100 peer_timeout_ms: 20000 advertise_host: "127.0.0.1" }
JOB

timeout 300 "${MPIRUN[@]}" -np 4 "$CHOIR" train --config "$WORK/job.pbtxt" >"$WORK/mpi.log" 2>&1 ||
  { cat "$WORK/mpi.log"; echo "FAIL: mpirun -np 4 choir train"; exit 1; }
grep -q "10 steps" "$WORK/mpi.log" || { cat "$WORK/mpi.log"; echo "FAIL: worker 0 did not report 10 steps"; exit 1; }
timeout 300 "$CHOIR" train --config "$WORK/job.pbtxt" \
  --set "cluster.workers=2;cluster.transport=zmq;trainer.out_dir=$WORK/local" >"$WORK/local.log" 2>&1 ||
  { cat "$WORK/local.log"; echo "FAIL: local cluster"; exit 1; }
python3 - "$WORK/mpi/preds.tsv" "$WORK/local/preds.tsv" <<'PY'
import sys
def scores(path):
    rows = [l.rstrip("\n").split("\t") for l in open(path)][1:]
    return [float(r[2]) for r in rows if len(r) >= 3]
a, b = scores(sys.argv[1]), scores(sys.argv[2])
assert a and len(a) == len(b), (len(a), len(b))
worst = max(abs(x - y) for x, y in zip(a, b))
# MPI and the in-process group add the two workers' gradients in the same order; only the
# transport differs, so the runs agree to float rounding.
assert worst < 1e-5, f"mpirun and local-mode predictions differ by {worst}"
print(f"mpirun vs local: {len(a)} predictions, largest difference {worst:.2e}")
PY

# Too few ranks for the job: a clear error, no hang.
if timeout 120 "${MPIRUN[@]}" -np 2 "$CHOIR" train --config "$WORK/job.pbtxt" >"$WORK/few.log" 2>&1; then
  cat "$WORK/few.log"; echo "FAIL: -np 2 with one server should fail"; exit 1
fi
grep -q "needs at least 3 ranks" "$WORK/few.log" || { cat "$WORK/few.log"; echo "FAIL: unclear error"; exit 1; }

# A rank that fails before the rendezvous (the server's setup: no dataset) ends the whole job
# with its error at once; MPI_Finalize would have waited for the scheduler and the worker, which
# wait for it.
start=$SECONDS
if timeout 120 "${MPIRUN[@]}" -np 4 "$CHOIR" train --config "$WORK/job.pbtxt" --data "$WORK/nowhere" \
    >"$WORK/nodata.log" 2>&1; then
  cat "$WORK/nodata.log"; echo "FAIL: a job without its dataset should fail"; exit 1
fi
grep -q "choir train: error: NOT_FOUND: $WORK/nowhere: no dataset.pbtxt" "$WORK/nodata.log" ||
  { cat "$WORK/nodata.log"; echo "FAIL: the missing dataset is not named"; exit 1; }
(( SECONDS - start < 60 )) || { cat "$WORK/nodata.log"; echo "FAIL: took $((SECONDS - start)) s to stop"; exit 1; }

# A frozen server (SIGSTOP: a hung disk or host) is named after the peer timeout and the job
# ends on every rank, the frozen one too.
timeout 120 "${MPIRUN[@]}" -np 4 "$CHOIR" train --config "$WORK/job.pbtxt" \
  --set "trainer.max_steps=0;trainer.epochs=1000;cluster.peer_timeout_ms=2000;trainer.out_dir=$WORK/frozen" \
  >"$WORK/frozen.log" 2>&1 &
runner=$!
server=""
for _ in $(seq 100); do
  for pid in $(pgrep -f "$CHOIR train" || true); do
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1'; then server=$pid; fi
  done
  [[ -n "$server" ]] && grep -q "training dnn" "$WORK/frozen.log" && break
  sleep 0.2
done
[[ -n "$server" ]] || { cat "$WORK/frozen.log"; echo "FAIL: no server rank found"; exit 1; }
start=$SECONDS
kill -STOP "$server"
wait "$runner" && { cat "$WORK/frozen.log"; echo "FAIL: the job with a frozen server should fail"; exit 1; }
kill -CONT "$server" 2>/dev/null || true
grep -q "server 0 (ps0) sent no heartbeat" "$WORK/frozen.log" ||
  { cat "$WORK/frozen.log"; echo "FAIL: the frozen server is not named"; exit 1; }
(( SECONDS - start < 60 )) || { cat "$WORK/frozen.log"; echo "FAIL: took $((SECONDS - start)) s to stop"; exit 1; }
echo "PASS"
