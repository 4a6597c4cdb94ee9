#!/usr/bin/env bash
# Prepares, on the build machine, what one device call of tools/gpu_check.sh needs, so that a
# session with a lent GPU spends its device time on the check alone:
#
#   tools/gpu_prepare.sh [--build-dir DIR] [--quickstart DIR]
#
# 1. a Release build with CUDA (default /tmp/gpubuild; incremental when it exists);
# 2. .gpu/bundle.tar.xz (tools/gpu_bundle.sh: the binaries and their non-system libraries);
# 3. .gpu/groups.tsv and .gpu/priors/ from a quickstart run (default runs/quickstart), for the
#    ChoirRec end-to-end benchmark; skipped with a note when that run is absent.
# .gpu/ is added to .git/info/exclude. It then prints the device calls to make (tools/gpu_check.sh,
# then tools/gpu_inspect.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD=/tmp/gpubuild
QUICKSTART="$ROOT/runs/quickstart"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) BUILD="$2"; shift ;;
    --quickstart) QUICKSTART="$2"; shift ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) echo "gpu_prepare: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
cd "$ROOT"
echo "gpu_prepare: building into $BUILD (Release, CUDA)"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DWITH_CUDA=ON >"$BUILD.cmake.log" 2>&1 ||
  { tail -30 "$BUILD.cmake.log"; echo "gpu_prepare: cmake failed (did tools/setup.sh run?)" >&2; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" --target choir choir_bench_gpu choir_bench_train \
  gpu_tests
mkdir -p .gpu
grep -qxF '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
tools/gpu_bundle.sh "$BUILD" .gpu/bundle.tar.xz
groups_args=""
if [[ -f "$QUICKSTART/groups/groups.tsv" && -d "$QUICKSTART/groups/priors" ]]; then
  rm -rf .gpu/priors
  cp "$QUICKSTART/groups/groups.tsv" .gpu/groups.tsv
  cp -r "$QUICKSTART/groups/priors" .gpu/priors
  groups_args=" --groups .gpu/groups.tsv --priors .gpu/priors"
else
  echo "gpu_prepare: no $QUICKSTART/groups (run launch/quickstart.sh first for the ChoirRec end-to-end benchmark)"
fi
echo "gpu_prepare: .gpu holds $(du -sh .gpu | cut -f1) (the device call carries at most 64 MiB)"
echo "device call: run(command=\"tools/gpu_check.sh --prebuilt .gpu/bundle.tar.xz${groups_args} --out \$OUT\", carry=[\".gpu\"], timeout_s=500)"
echo "and, with device time left: run(command=\"tools/gpu_inspect.sh --prebuilt .gpu/bundle.tar.xz --out \$OUT --budget B\", carry=[\".gpu\"], timeout_s=B+40), B at most 420 and what is left"
