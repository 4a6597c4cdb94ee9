#!/usr/bin/env bash
# End-to-end checks of the `choir` command line: exit codes, flag spellings, job-file
# precedence, error messages that name the file, skip-and-count with rejects.tsv.
#   cli_test.sh PATH/TO/choir
set -uo pipefail
CHOIR="$1"
T="$(mktemp -d "${TMPDIR:-/tmp}/choir-cli.XXXXXX")"
trap 'rm -rf "$T"' EXIT
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
contains "missing --out" "usage:"

# Flags with dashes or underscores, '=' or a space, give the same data.
expect 0 "gen a" -- "$CHOIR" data gen --out "$T/a" --users 300 --seed 3 --quiet
expect 0 "gen b" -- "$CHOIR" data gen --out="$T/b" --users=300 --seed=3 --max-bad-rows 0 --quiet
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

echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
