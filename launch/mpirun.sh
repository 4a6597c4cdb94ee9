#!/usr/bin/env bash
# Starts a Choir training job under Open MPI, one `choir train` process per rank. The role
# comes from the rank: rank 0 is the scheduler, ranks 1..S the parameter servers (S =
# cluster.servers in the job file), ranks S+1..N-1 the workers (W = N - 1 - S >= 1).
#
#   launch/mpirun.sh -np N [--hostfile FILE] [--advertise-ip] [--no-tag-output] [--dry-run]
#                    [other mpirun options ...] -- --config job.pbtxt [other `choir train` flags]
#
# Example, one host: launch/mpirun.sh -np 5 -- --config configs/cluster.pbtxt
#   (1 scheduler + 2 parameter servers + 2 workers; docs/cluster.md).
#
# What it does before handing over to mpirun:
# - finds the binary: $CHOIR_BIN, else <repo>/build/bin/choir (tools/setup.sh builds it), and
#   mpirun ($MPIRUN, else the one on PATH);
# - reads cluster.servers from the job file as `choir config print` sees it (the file plus
#   any --set), and stops with an error unless S >= 1 and N >= S + 2;
# - adds --allow-run-as-root only when run as root, --oversubscribe when N exceeds the cores
#   of this host and no hostfile or host list is given, and always --bind-to none (every rank
#   runs its own threads) and --tag-output (each output line starts with [job,rank]);
# - exports OMPI_MCA_btl_vader_single_copy_mechanism=none (shared-memory transfers between
#   ranks on one host fail in most containers without it) and forwards it and, when set,
#   OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, GLOG_v, GLOG_vmodule and CHOIR_MODEL_CACHE;
# - prints the role of every rank, then the mpirun command, and runs it.
#
# --advertise-ip  each rank advertises the first address of `hostname -I` on its host
#                 (cluster.advertise_host), for hosts whose names the others cannot resolve.
# --dry-run       print the layout and the command, start nothing.
# Options before `--` that this script does not know go to mpirun unchanged (e.g. -x VAR,
# --mca KEY VALUE, -H host1,host2). Every rank must see the binary, the job file and the data
# at the same paths; relative paths are resolved in the current directory on every host.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { echo "[mpirun.sh] $*" >&2; }
die() { echo "mpirun.sh: error: $*" >&2; exit 2; }
usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; }

NP=""
HOSTFILE=""
ADVERTISE_IP=0
TAG_OUTPUT=1
DRY_RUN=0
MULTI_HOST=0
MPI_EXTRA=()
CHOIR_ARGS=()
SAW_SEPARATOR=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -np|-n|--np|-c)
      [[ $# -ge 2 ]] || die "$1 needs a value"
      NP="$2"; shift ;;
    --hostfile|-hostfile|--machinefile|-machinefile|--default-hostfile|-default-hostfile)
      [[ $# -ge 2 ]] || die "$1 needs a file"
      HOSTFILE="$2"; shift ;;
    -H|-host|--host)
      [[ $# -ge 2 ]] || die "$1 needs a host list"
      MULTI_HOST=1; MPI_EXTRA+=("$1" "$2"); shift ;;
    --advertise-ip) ADVERTISE_IP=1 ;;
    --no-tag-output) TAG_OUTPUT=0 ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; CHOIR_ARGS=("$@"); SAW_SEPARATOR=1; break ;;
    *) MPI_EXTRA+=("$1") ;;
  esac
  shift
done

[[ $SAW_SEPARATOR -eq 1 ]] || die "put the \`choir train\` flags after --, e.g. launch/mpirun.sh -np 5 -- --config configs/cluster.pbtxt (--help)"
[[ -n "$NP" ]] || die "-np N is required (N = 1 scheduler + S servers + W workers)"
[[ "$NP" =~ ^[0-9]+$ ]] || die "-np wants a number of ranks, got '$NP'"
# `choir train` is implied; accept it written out too.
if [[ ${#CHOIR_ARGS[@]} -gt 0 && "${CHOIR_ARGS[0]}" == "train" ]]; then CHOIR_ARGS=("${CHOIR_ARGS[@]:1}"); fi

CHOIR="${CHOIR_BIN:-$ROOT/build/bin/choir}"
[[ -x "$CHOIR" ]] || die "no choir binary at $CHOIR: build it with tools/setup.sh, or point CHOIR_BIN at it"
MPIRUN="${MPIRUN:-mpirun}"
command -v "$MPIRUN" >/dev/null 2>&1 || die "$MPIRUN not found: install Open MPI (openmpi-bin; tools/setup.sh does)"

# The flags this script reads from the choir command line: --config, --set, --out (gflags
# style: --name value, --name=value, one or two dashes). Several --set are joined with ';' in
# order (as choir does) and passed as one, which --advertise-ip may add to.
CONFIG=""
SET=""
OUT=""
REST=()
i=0
while [[ $i -lt ${#CHOIR_ARGS[@]} ]]; do
  a="${CHOIR_ARGS[$i]}"
  name=""
  value=""
  case "$a" in
    --config=*|-config=*|--set=*|-set=*|--out=*|-out=*)
      name="${a%%=*}"; name="${name##*-}"; value="${a#*=}" ;;
    --config|-config|--set|-set|--out|-out)
      name="${a##*-}"
      [[ $((i + 1)) -lt ${#CHOIR_ARGS[@]} ]] || die "$a needs a value"
      i=$((i + 1)); value="${CHOIR_ARGS[$i]}" ;;
  esac
  case "$name" in
    config) CONFIG="$value"; REST+=("--config=$value") ;;
    set) SET="${SET:+$SET;}$value" ;;
    out) OUT="$value"; REST+=("--out=$value") ;;
    *) REST+=("$a") ;;
  esac
  i=$((i + 1))
done
[[ -n "$CONFIG" ]] || die "no --config job.pbtxt among the choir flags"
[[ -f "$CONFIG" ]] || die "job file $CONFIG not found (every rank reads it, at the same path on every host)"
SET_NOTE=""
if [[ -n "$SET" ]]; then REST+=("--set=$SET"); SET_NOTE=" --set \"$SET\""; fi

# The job as every rank will read it.
ERRORS="$(mktemp)"
trap 'rm -f "$ERRORS"' EXIT
set +e
PRINTED="$("$CHOIR" config print --config "$CONFIG" --set "$SET" 2>"$ERRORS")"
rc=$?
set -e
[[ $rc -eq 0 ]] || die "$CHOIR config print --config $CONFIG$SET_NOTE failed (every rank would):
$(cat "$ERRORS")"
rm -f "$ERRORS"
trap - EXIT
# `config print` writes canonical text format: a top-level `cluster {` block, one field a line.
field_of() {  # field_of BLOCK FIELD: the value of FIELD in the top-level BLOCK, or nothing
  awk -v block="$1" -v field="$2" '
    $0 == block " {" { inside = 1; next }
    inside && /^}/   { inside = 0 }
    inside && $1 == field ":" { sub(/^[^:]*: */, ""); gsub(/^"|"$/, ""); print; exit }
  ' <<<"$PRINTED"
}
S="$(field_of cluster servers)"; S="${S:-0}"
CONFIG_WORKERS="$(field_of cluster workers)"
ADVERTISE="$(field_of cluster advertise_host)"
[[ -n "$OUT" ]] || OUT="$(field_of trainer out_dir)"

if [[ "$S" -lt 1 ]]; then
  die "cluster.servers is $S in $CONFIG$SET_NOTE: under mpirun a job needs at least one parameter server.
Add 'cluster { servers: 2 }' to the job file (configs/cluster.pbtxt has it), or pass --set 'cluster.servers=2'.
(servers 0 is the single-process trainer: run 'choir train --config $CONFIG' without mpirun.)"
fi
if [[ "$NP" -lt $((S + 2)) ]]; then
  die "-np $NP is too few ranks for cluster.servers = $S: need N >= S + 2 = $((S + 2)) (1 scheduler + $S parameter server(s) + at least 1 worker)"
fi
W=$((NP - 1 - S))

# mpirun's options.
MPI=(-np "$NP")
if [[ -n "$HOSTFILE" ]]; then
  [[ -f "$HOSTFILE" ]] || die "hostfile $HOSTFILE not found"
  MPI+=(--hostfile "$HOSTFILE")
  MULTI_HOST=1
fi
# Under the Kubeflow MPI Operator (and similar launchers) the hostfile comes from the environment.
if [[ -n "${OMPI_MCA_orte_default_hostfile:-}" ]]; then MULTI_HOST=1; fi
if [[ $(id -u) -eq 0 ]]; then MPI+=(--allow-run-as-root); fi
if [[ $MULTI_HOST -eq 0 ]]; then
  # Open MPI gives a host one slot per physical core (fewer than nproc with hyper-threads).
  cores="$(nproc)"
  if command -v lscpu >/dev/null 2>&1; then
    physical="$(lscpu -p=core,socket 2>/dev/null | grep -v '^#' | sort -u | wc -l)"
    if [[ "$physical" -ge 1 && "$physical" -lt "$cores" ]]; then cores="$physical"; fi
  fi
  if [[ "$NP" -gt "$cores" ]]; then
    MPI+=(--oversubscribe)
    log "$NP ranks on $cores core(s) of this host: adding --oversubscribe"
  fi
fi
MPI+=(--bind-to none)
if [[ $TAG_OUTPUT -eq 1 ]]; then MPI+=(--tag-output); fi
export OMPI_MCA_btl_vader_single_copy_mechanism=none
MPI+=(-x OMPI_MCA_btl_vader_single_copy_mechanism)
for v in OPENBLAS_NUM_THREADS OMP_NUM_THREADS GLOG_v GLOG_vmodule CHOIR_MODEL_CACHE; do
  if [[ -n "${!v:-}" ]]; then MPI+=(-x "$v"); fi
done
MPI+=("${MPI_EXTRA[@]}")

# What every rank runs.
if [[ $ADVERTISE_IP -eq 1 ]]; then
  # The rank's own first address; the user's --set, if any, is kept in front of it.
  # shellcheck disable=SC2016  # expanded by the rank's shell, not here
  RANK_CMD=(sh -c 'ip=$(hostname -I 2>/dev/null | cut -d " " -f 1)
if [ -z "$ip" ]; then echo "mpirun.sh: hostname -I gives no address on $(hostname)" >&2; exit 1; fi
user_set="$1"; shift
exec "$@" --set "${user_set:+$user_set;}cluster.advertise_host=$ip"' choir-rank "$SET" "$CHOIR" train)
  for a in "${REST[@]}"; do
    case "$a" in --set=*) ;; *) RANK_CMD+=("$a") ;; esac
  done
  ADVERTISE="each rank's first address (hostname -I)"
else
  RANK_CMD=("$CHOIR" train "${REST[@]}")
fi

span() { if [[ $2 -eq $3 ]]; then echo "$1 $2"; else echo "${1}s $2-$3"; fi; }
log "job $CONFIG: $NP ranks = 1 scheduler + $S parameter server(s) + $W worker(s)"
log "  $(printf '%-12s' 'rank 0') scheduler"
log "  $(printf '%-12s' "$(span rank 1 "$S")") $(span 'parameter server' 0 $((S - 1)))"
log "  $(printf '%-12s' "$(span rank $((S + 1)) $((NP - 1)))") $(span worker 0 $((W - 1))); worker 0 (rank $((S + 1))) writes eval.json, preds.tsv and report.md to ${OUT:-trainer.out_dir (not set: choir train will ask for it)}"
log "  servers and scheduler advertise ${ADVERTISE:-their host name}"
if [[ -n "$CONFIG_WORKERS" && "$CONFIG_WORKERS" != "$W" ]]; then
  log "  note: cluster.workers = $CONFIG_WORKERS in the job file is for local mode; under mpirun W = N - 1 - S = $W"
fi
log "$(printf '%q ' "$MPIRUN" "${MPI[@]}" "${RANK_CMD[@]}")"
if [[ $DRY_RUN -eq 1 ]]; then exit 0; fi
exec "$MPIRUN" "${MPI[@]}" "${RANK_CMD[@]}"
