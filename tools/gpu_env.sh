# Sourced by tools/gpu_check.sh and tools/gpu_inspect.sh.
#
#   gpu_start NAME    with OUT and BUDGET set: makes OUT absolute, a scratch folder WORK with
#                     LOGS in it (archived to OUT/logs.tar.gz at exit: a device run brings back
#                     only a few files), starts the clock of say and limit, sets FAILED=0
#   say MESSAGE       prints MESSAGE after the script's name and its seconds so far
#   limit N           a stage's timeout (below)
#   gpu_use_prebuilt DIR|BUNDLE.tar.xz
#                     unpacks a tools/gpu_bundle.sh bundle and points the loader at its
#                     libraries and at the machine's cuBLAS and NCCL; sets BIN and TESTS

gpu_start() {
  GPU_SCRIPT="$1"
  mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)" || { echo "$1: cannot use --out $OUT" >&2; exit 1; }
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/choir-$1.XXXXXX")" || { echo "$1: cannot make a scratch folder" >&2; exit 1; }
  LOGS="$WORK/logs"
  mkdir -p "$LOGS" || exit 1
  trap 'tar -C "$WORK" -czf "$OUT/logs.tar.gz" logs; rm -rf "$WORK"' EXIT
  START=$SECONDS
  FAILED=0
}

say() { printf '[%s %3ds] %s\n' "${GPU_SCRIPT:-gpu}" $((SECONDS - START)) "$*"; }

# limit N: a stage's timeout, N seconds cut to what is left of BUDGET (20 s kept for the table);
# prints nothing and fails when under 10 s are left, so the caller skips the stage.
limit() {
  local left=$((BUDGET - (SECONDS - START) - 20))
  ((left < 10)) && return 1
  echo $((left < $1 ? left : $1))
}
gpu_use_prebuilt() {
  local prebuilt="$1"
  if [[ -f "$prebuilt" ]]; then
    mkdir -p "$WORK/bundle"
    # Without the xz program, Python's tarfile reads .tar.xz too.
    tar -C "$WORK/bundle" -xJf "$prebuilt" 2>"$LOGS/untar.err" ||
      python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$prebuilt" "$WORK/bundle" ||
      { cat "$LOGS/untar.err" >&2; echo "gpu: cannot unpack $prebuilt" >&2; return 1; }
    prebuilt="$WORK/bundle"
  fi
  [[ -d "$prebuilt/bin" ]] || { echo "gpu: $prebuilt has no bin/ (not a tools/gpu_bundle.sh bundle)" >&2; return 1; }
  BIN="$prebuilt/bin" TESTS="$prebuilt/bin"
  # cuBLAS and NCCL come from the machine: the loader's cache, the CUDA toolkit, or the Python
  # wheels beside PyTorch.
  local extra="" lib path
  for lib in libcublas.so.13 libnccl.so.2; do
    # The first place that has it; the disk is searched only when none does.
    path="$(ldconfig -p 2>/dev/null | awk -v l="$lib" '$1 == l {print $NF; exit}')"
    [[ -z "$path" && -e /usr/local/cuda/lib64/$lib ]] && path="/usr/local/cuda/lib64/$lib"
    [[ -z "$path" ]] && path="$(python3 -c 'import glob, site, sys
for d in site.getsitepackages(): print("\n".join(glob.glob(d + "/nvidia/*/lib/" + sys.argv[1])))' "$lib" 2>/dev/null | head -1)"
    [[ -z "$path" ]] && path="$(find / -xdev -name "$lib" -path '*nvidia*' -print -quit 2>/dev/null)"
    if [[ -n "$path" ]]; then extra="$extra:$(dirname "$path")"; else say "warning: $lib not found on this machine"; fi
  done
  export LD_LIBRARY_PATH="$prebuilt/lib$extra${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  say "prebuilt binaries (commit $(cat "$prebuilt/COMMIT" 2>/dev/null || echo 'unknown')); LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
}
