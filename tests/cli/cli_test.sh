#!/usr/bin/env bash
# End-to-end checks of the `choir` command line: exit codes, flag spellings, job-file
# precedence, error messages that name the file, skip-and-count with rejects.tsv, `choir embed`
# against a local fake embeddings server (fake_embeddings_server.py beside this script).
#   cli_test.sh PATH/TO/choir
set -uo pipefail
CHOIR="$1"
HERE="$(cd "$(dirname "$0")" && pwd)"
T="$(mktemp -d "${TMPDIR:-/tmp}/choir-cli.XXXXXX")"
SERVER_PIDS=()
stop_servers() {
  local pid
  for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  SERVER_PIDS=()
}
trap 'stop_servers; rm -rf "$T"' EXIT
failures=0
passed=0
pass() { passed=$((passed + 1)); }
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
# expect CODE DESCRIPTION -- command...: runs it, checks the exit code, keeps its output in $T/out
expect() {
  local want="$1" what="$2"; shift 3
  "$@" >"$T/out" 2>&1
  local got=$?
  if [[ $got -eq $want ]]; then pass; else fail "$what: exit $got, want $want"; cat "$T/out" >&2; fi
}
contains() { if grep -qF -- "$2" "$T/out"; then pass; else fail "$1: output lacks '$2'"; cat "$T/out" >&2; fi; }

expect 0 "version" -- "$CHOIR" version
contains "version" "choir "
expect 2 "unknown command" -- "$CHOIR" data frobnicate
contains "unknown command" "unknown command 'data frobnicate'"
expect 2 "missing --out" -- "$CHOIR" data gen --users 10
contains "missing --out" "--out is required"
# A usage error prints the command's whole usage, every flag it reads.
contains "missing --out" "--taxonomy"
contains "missing --out" "--no_compress"
expect 2 "stray argument" -- "$CHOIR" groups priors --data d --groups g --out o extra
contains "stray argument" "unexpected argument 'extra'"
contains "stray argument" "usage: choir groups priors"
expect 2 "inspect without a folder" -- "$CHOIR" data inspect
contains "inspect without a folder" "dataset folder DIR is required"
expect 2 "--emb without --ids" -- "$CHOIR" predict --bundle b --in i --out o --emb e.npy
contains "--emb without --ids" "--emb and --ids go together"

# Flags with dashes or underscores, '=' or a space, give the same data.
expect 0 "gen a" -- "$CHOIR" data gen --out "$T/a" --users 300 --seed 3 --quiet
expect 0 "gen b" -- "$CHOIR" data gen --out="$T/b" --users=300 --seed=3 --quiet
if cmp -s "$T/a/train/part-00000.shard" "$T/b/train/part-00000.shard"; then pass; else fail "same seed, different bytes"; fi

# A folder that is not a dataset is never overwritten.
mkdir -p "$T/mine" && echo precious >"$T/mine/notes.txt"
expect 1 "gen into a foreign folder" -- "$CHOIR" data gen --out "$T/mine" --users 50 --quiet
contains "gen into a foreign folder" "notes.txt"
[[ -f "$T/mine/notes.txt" ]] && pass || fail "notes.txt was deleted"

# Job file and overrides: the file's value applies unless the flag is given.
cat >"$T/job.pbtxt" <<'PB'
generator { users: 120 seed: 5 }
PB
expect 0 "gen from job file" -- "$CHOIR" data gen --out "$T/c" --config "$T/job.pbtxt"
contains "gen from job file" "120 users"
expect 0 "flag beats job file" -- "$CHOIR" data gen --out "$T/c" --config "$T/job.pbtxt" --users 130
contains "flag beats job file" "130 users"
expect 0 "--set beats job file" -- "$CHOIR" data gen --out "$T/c" --config "$T/job.pbtxt" --set 'generator.users=140'
contains "--set beats job file" "140 users"
expect 0 "config print" -- "$CHOIR" config print --config "$T/job.pbtxt" --set 'task=TASK_CTR;data.max_bad_rows=5'
contains "config print task" "task: TASK_CTR"
contains "config print budget" "max_bad_rows: 5"
expect 1 "bad override" -- "$CHOIR" config print --set 'data.nope=1'
contains "bad override" "no field 'nope'"
# --defaults shows every setting, unset ones at their defaults.
expect 0 "config print --defaults" -- "$CHOIR" config print --defaults --set 'trainer.epochs=3'
contains "config print --defaults" 'kd_direction: "individual_to_group"'
contains "config print --defaults" "epochs: 3"
contains "config print --defaults" "peer_timeout_ms: 10000"
# --set given twice: both apply, in order (gflags alone keeps the last).
expect 0 "several --set" -- "$CHOIR" config print --set 'trainer.epochs=3' --set='trainer.batch_size=7' --set 'trainer.batch_size=9'
contains "several --set" "epochs: 3"
contains "several --set" "batch_size: 9"
# A flag of another command is refused, not ignored; the usage says which flags apply.
expect 2 "flag of another command" -- "$CHOIR" train --data "$T/nowhere" --seed 7
contains "flag of another command" "--seed is not a flag of this command"
contains "flag of another command" "usage: choir train"
expect 2 "eval has no error budget" -- "$CHOIR" eval --checkpoint "$T/nowhere" --out "$T/e.json" --max-bad-rows 3
expect 2 "negated flag of another command" -- "$CHOIR" data inspect "$T/nowhere" --nofp16
# --max-bad-rows is data.max_bad_rows, checked with the job file's fields.
expect 0 "--max-bad-rows as an override" -- "$CHOIR" config print --max-bad-rows 4
contains "--max-bad-rows as an override" "max_bad_rows: 4"
expect 1 "negative --max-bad-rows" -- "$CHOIR" config print --max-bad-rows -3
contains "negative --max-bad-rows" "data.max_bad_rows must be >= 0 (it is -3)"

# An output file that is a folder is refused before the work; a missing parent folder is made.
expect 1 "--out is a folder" -- "$CHOIR" groups profile --data "$T/a" --out "$T"
contains "--out is a folder" "is a folder; name the file to write"
expect 0 "--json into a new folder" -- "$CHOIR" data inspect "$T/a" --json "$T/new/deeper/a.json" --quiet
[[ -s "$T/new/deeper/a.json" ]] && pass || fail "inspect --json did not make its folder"

# Inspect prints the tables and writes JSON.
expect 0 "inspect" -- "$CHOIR" data inspect "$T/a" --json "$T/a.json" --quiet
contains "inspect" "activity buckets"
if /usr/bin/env python3 -c "import json,sys; j=json.load(open(sys.argv[1])); assert j['splits']['users']['rows']==300" "$T/a.json"; then pass; else fail "inspect JSON"; fi
expect 1 "inspect a non-dataset" -- "$CHOIR" data inspect "$T/mine"
contains "inspect a non-dataset" "$T/mine"

# Converting: a malformed row fails naming file:line by default, is skipped and kept in
# rejects.tsv within a budget.
printf 'user_id,item_id,click,conversion,price:float\n1,10,1,0,9.5\n2,11,1,x,3.0\n3,12,0,0,1.0\n' >"$T/in.csv"
expect 1 "malformed row" -- "$CHOIR" data convert --format csv --in "$T/in.csv" --out "$T/conv"
contains "malformed row" "in.csv:3"
expect 0 "malformed row within budget" -- "$CHOIR" data convert --format csv --in "$T/in.csv" --out "$T/conv" --max-bad-rows 1
contains "malformed row within budget" "1 rejected"
if grep -qF "2,11,1,x,3.0" "$T/conv/rejects.tsv"; then pass; else fail "rejected row not in rejects.tsv"; fi

# --split sends every input to one split whatever the file name.
expect 0 "convert --split test" -- "$CHOIR" data convert --format csv --in "$T/in.csv" --out "$T/conv2" --split test --task ctr --max-bad-rows 1
[[ -d "$T/conv2/test" && ! -d "$T/conv2/train" ]] && pass || fail "--split test did not put the rows in test/"

# choir embed --endpoint against a real local HTTP server. start_server ARGS... starts
# fake_embeddings_server.py serve ARGS and sets PORT (read from the server's first line: no
# polling) and SERVER_PID; the EXIT trap kills every server started.
start_server() {
  rm -f "$T/port.fifo" && mkfifo "$T/port.fifo"
  python3 "$HERE/fake_embeddings_server.py" serve "$@" >"$T/port.fifo" 2>>"$T/server.log" &
  SERVER_PID=$!
  SERVER_PIDS+=("$SERVER_PID")
  PORT=""
  read -r -t 20 PORT <"$T/port.fifo"
  [[ -n "$PORT" ]] || { fail "fake embeddings server ($*) did not start"; cat "$T/server.log" >&2; }
}
stop_server() { kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; }
awk 'BEGIN { for (u = 1; u <= 200; ++u) printf "%d\t%s\n", u, (u % 10 == 0 ? "a new user without history" : "user " u " buys tea, bikes and books") }' >"$T/profiles.tsv"

start_server --mode normal --dim 12
URL="http://127.0.0.1:$PORT"
# --model DIR (DESIGN.md's name) is the encoder folder, like --model-dir; not with --endpoint.
expect 1 "embed --model" -- "$CHOIR" embed --in "$T/profiles.tsv" --out "$T/m.npy" --model "$T/no-encoder"
contains "embed --model" "$T/no-encoder"
expect 2 "embed --model and --endpoint" -- "$CHOIR" embed --in "$T/profiles.tsv" --out "$T/m.npy" --model "$T/x" --endpoint "$URL"
contains "embed --model and --endpoint" "not both"
expect 0 "embed --endpoint" -- "$CHOIR" embed --in "$T/profiles.tsv" --out "$T/emb.npy" --endpoint "$URL" --endpoint-model fake --batch 16
contains "embed --endpoint" "[200, 12]"
contains "embed --endpoint distinct" "181 distinct"
if python3 "$HERE/fake_embeddings_server.py" check "$T/profiles.tsv" "$T/emb.npy" 12 2>"$T/out"; then pass; else fail "embed --endpoint rows: $(cat "$T/out")"; fi
printf 'junk' >"$T/junk.cache"
expect 1 "embed with a foreign cache" -- "$CHOIR" embed --in "$T/profiles.tsv" --out "$T/j.npy" --endpoint "$URL" --cache "$T/junk.cache"
contains "embed with a foreign cache" "$T/junk.cache: not an embedding cache"
stop_server

start_server --mode normal --require-key s3cret
expect 0 "embed with the API key" -- env CHOIR_EMBED_API_KEY=s3cret "$CHOIR" embed --in "$T/profiles.tsv" --out "$T/k.npy" --endpoint "http://127.0.0.1:$PORT"
expect 1 "embed with a wrong API key" -- env CHOIR_EMBED_API_KEY=nope "$CHOIR" embed --in "$T/profiles.tsv" --out "$T/k2.npy" --endpoint "http://127.0.0.1:$PORT"
contains "embed with a wrong API key" "UNAUTHENTICATED"
contains "embed with a wrong API key" "HTTP 401"
contains "embed with a wrong API key" "(1 attempt)"
stop_server

start_server --mode garbage
expect 1 "embed from a garbage endpoint" -- "$CHOIR" embed --in "$T/profiles.tsv" --out "$T/g.npy" --endpoint "http://127.0.0.1:$PORT"
contains "embed from a garbage endpoint" "embeddings endpoint http://127.0.0.1:$PORT/v1/embeddings: malformed embeddings response (not JSON)"
[[ ! -e "$T/g.npy" ]] && pass || fail "a failed embed wrote g.npy"
stop_server

start_server --mode hang
expect 1 "embed from a hanging endpoint" -- "$CHOIR" embed --in "$T/profiles.tsv" --out "$T/h.npy" --endpoint "http://127.0.0.1:$PORT" --request-timeout-ms 300 --max-retries 1 --retry-backoff-ms 10
contains "embed from a hanging endpoint" "DEADLINE_EXCEEDED"
contains "embed from a hanging endpoint" "http://127.0.0.1:$PORT/v1/embeddings: no answer within 300ms"
stop_server

# A server that dies part way: the finished batches stay in the cache and a rerun against a
# healthy server on the same URL embeds only the rest, giving the same bytes as one clean run.
start_server --mode die-after --n 4
DIE_PORT="$PORT"
expect 1 "embed from an endpoint that dies" -- "$CHOIR" embed --in "$T/profiles.tsv" --out "$T/d.npy" --endpoint "http://127.0.0.1:$DIE_PORT" --endpoint-model fake --batch 16 --concurrency 2 --max-retries 1 --retry-backoff-ms 10
contains "embed from an endpoint that dies" "rerun the same command to resume"
contains "embed from an endpoint that dies" "saved in $T/d.npy.cache"
[[ ! -e "$T/d.npy" && -s "$T/d.npy.cache" ]] && pass || fail "a dead endpoint left d.npy, or no cache"
stop_server
start_server --mode normal --port "$DIE_PORT" --dim 12
expect 0 "embed resumed" -- "$CHOIR" embed --in "$T/profiles.tsv" --out "$T/d.npy" --endpoint "http://127.0.0.1:$DIE_PORT" --endpoint-model fake --batch 16
# At most 2 requests are in flight, so the 5th (fatal) one left after 3 answers at least.
cached="$(grep -oE '[0-9]+ from the cache' "$T/out" | grep -oE '^[0-9]+')"
if [[ -n "$cached" && "$cached" -ge 48 && "$cached" -lt 181 ]]; then pass; else fail "resume took '$cached' texts from the cache"; cat "$T/out" >&2; fi
cmp -s "$T/d.npy" "$T/emb.npy" && pass || fail "resumed output differs from an uninterrupted run"
stop_server

# Train, export, predict: `choir predict` from the bundle alone writes what training wrote.
expect 0 "train dnn" -- "$CHOIR" train --data "$T/a" --out "$T/run" --model dnn --set 'model.embedding_dim=8;trainer.batch_size=128;trainer.max_steps=5' --quiet
expect 0 "export" -- "$CHOIR" export --checkpoint "$T/run/checkpoint" --out "$T/bundle"
contains "export" "sparse rows (fp32"
expect 0 "predict" -- "$CHOIR" predict --bundle "$T/bundle" --in "$T/a" --out "$T/p.tsv"
cmp -s "$T/p.tsv" "$T/run/preds.tsv" && pass || fail "predict differs from the training run's preds.tsv"
# FTRL rows from 0 with L1 (nested --set fields): the export leaves out the rows L1 kept at 0,
# and the bundle still predicts what training wrote.
expect 0 "train dnn ftrl" -- "$CHOIR" train --data "$T/a" --out "$T/ftrl" --model dnn --set 'model.embedding_dim=8;trainer.batch_size=128;trainer.max_steps=5;trainer.sparse_optimizer=ftrl;trainer.sparse_init_scale=0;trainer.sparse_ftrl.l1=1e-3' --quiet
expect 0 "export ftrl" -- "$CHOIR" export --checkpoint "$T/ftrl/checkpoint" --out "$T/ftrlbundle"
left_out="$(grep -oE '[0-9]+ more at their initial values left out' "$T/out" | grep -oE '^[0-9]+')"
[[ -n "$left_out" && "$left_out" -gt 0 ]] && pass || fail "the ftrl export left out '$left_out' rows"
expect 0 "predict ftrl" -- "$CHOIR" predict --bundle "$T/ftrlbundle" --in "$T/a" --out "$T/pf.tsv"
cmp -s "$T/pf.tsv" "$T/ftrl/preds.tsv" && pass || fail "predict from the ftrl bundle differs from its run's preds.tsv"
expect 1 "resume under another sparse optimizer" -- "$CHOIR" train --data "$T/a" --out "$T/ftrl" --model dnn --set 'model.embedding_dim=8;trainer.batch_size=128;trainer.max_steps=5' --resume latest --quiet
contains "resume under another sparse optimizer" 'its sparse_optimizer is "ftrl", this job'"'"'s is "adagrad"'
expect 1 "unknown sparse optimizer" -- "$CHOIR" train --data "$T/a" --out "$T/bad" --model dnn --set 'trainer.sparse_optimizer=lamb' --quiet
contains "unknown sparse optimizer" "trainer.sparse_optimizer: unknown sparse optimizer 'lamb' (adagrad, adam, sgd, ftrl)"
expect 1 "export over a bundle" -- "$CHOIR" export --checkpoint "$T/run/checkpoint" --out "$T/bundle"
contains "export over a bundle" "already holds a bundle (--force replaces it)"
expect 0 "export --force --fp16" -- "$CHOIR" export --checkpoint "$T/run/checkpoint" --out "$T/bundle" --force --fp16
expect 1 "export into a foreign folder" -- "$CHOIR" export --checkpoint "$T/run/checkpoint" --out "$T/a"
contains "export into a foreign folder" "which is not part of a bundle"
printf 'x' | dd of="$T/bundle/dense.bin" bs=1 seek=100 conv=notrunc status=none
expect 1 "predict from a damaged bundle" -- "$CHOIR" predict --bundle "$T/bundle" --in "$T/a" --out "$T/q.tsv"
contains "predict from a damaged bundle" "bundle file $T/bundle/dense.bin is corrupt"
[[ ! -e "$T/q.tsv" ]] && pass || fail "a failed predict wrote q.tsv"

# A model trained on a generic CSV dataset scores a CSV file given to predict as it is.
python3 - "$T" <<'PY'
import random, sys
random.seed(3)
for name, n in (("events_train.csv", 2000), ("events_test.csv", 600)):
    with open(f"{sys.argv[1]}/{name}", "w") as f:
        f.write("user_id,item_id,click,conversion,timestamp,city,price:float,hist:list\n")
        for i in range(n):
            u, it, c = random.randint(1, 300), random.randint(1, 200), int(random.random() < 0.5)
            cv = int(c and random.random() < 0.2 + 0.5 * (it % 2))
            hist = "|".join(str(random.randint(1, 200)) for _ in range(random.randint(0, 4)))
            f.write(f"{u},{it},{c},{cv},{1700000000 + 60 * i},{u % 7},{random.random() * 100:.3f},{hist}\n")
PY
expect 0 "convert csv dataset" -- "$CHOIR" data convert --format csv --in "$T/events_train.csv,$T/events_test.csv" --out "$T/csvds"
expect 0 "train on csv" -- "$CHOIR" train --data "$T/csvds" --out "$T/csvrun" --model dnn --set 'model.embedding_dim=8;trainer.batch_size=128' --quiet
expect 0 "export csv model" -- "$CHOIR" export --checkpoint "$T/csvrun/checkpoint" --out "$T/csvbundle"
expect 0 "predict a csv file" -- "$CHOIR" predict --bundle "$T/csvbundle" --in "$T/events_test.csv" --out "$T/csvp.tsv"
cmp -s "$T/csvp.tsv" "$T/csvrun/preds.tsv" && pass || fail "predict of the CSV file differs from the training run's preds.tsv"
[[ ! -e "$T/csvp.tsv.input.tmp" ]] && pass || fail "predict left its conversion behind"
cut -d, -f1-6 "$T/events_test.csv" >"$T/fewer.csv"
expect 1 "predict a csv with other columns" -- "$CHOIR" predict --bundle "$T/csvbundle" --in "$T/fewer.csv" --out "$T/csvq.tsv"
contains "predict a csv with other columns" "the bundle's model reads user_id:INT64:USER_ID"

echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
