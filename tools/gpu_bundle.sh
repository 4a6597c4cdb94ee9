#!/usr/bin/env bash
# Packs what tools/gpu_check.sh runs (the gpu test binaries, choir, choir_bench_gpu and
# choir_bench_train) with the shared libraries they load, except glibc, libstdc++/libgcc and the
# CUDA driver, cuBLAS and NCCL (the GPU machine brings those), into one .tar.xz. For a GPU
# machine that lacks Choir's build dependencies:
#
#   tools/gpu_bundle.sh BUILD_DIR OUT.tar.xz      # here, after a build with CUDA
#   tools/gpu_check.sh --prebuilt OUT.tar.xz      # there
set -euo pipefail
if [[ $# -ne 2 ]]; then
  echo "usage: tools/gpu_bundle.sh BUILD_DIR OUT.tar.xz" >&2
  exit 2
fi
BUILD="$(cd "$1" && pwd)"
OUT="$2"
STAGE="$(mktemp -d "${TMPDIR:-/tmp}/choir-gpu-bundle.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/lib"

BINS=("$BUILD/bin/choir" "$BUILD/bin/choir_bench_gpu" "$BUILD/bin/choir_bench_train")
for t in "$BUILD"/tests/gpu/*_test; do BINS+=("$t"); done
for b in "${BINS[@]}"; do
  [[ -x "$b" ]] || { echo "gpu_bundle: $b is missing: build with CUDA first" >&2; exit 1; }
  cp "$b" "$STAGE/bin/"
done
# Every library the binaries load, but the ones the target machine must provide itself (glibc's
# own, which must match its libc, the C++ runtime, the driver, cuBLAS and NCCL).
SKIP='linux-vdso|ld-linux|/libc\.so|/libm\.so|libpthread|libdl\.so|librt\.so|libresolv|libnsl|libutil\.so|libanl|libmvec|libstdc\+\+|libgcc_s|libcuda\.so|libcublas|libnccl|libcudart'
for b in "${BINS[@]}"; do
  ldd "$b" | awk '/=>/ {print $3}' | grep -Ev "$SKIP" || true
done | sort -u | while read -r lib; do
  [[ -n "$lib" ]] && cp -L "$lib" "$STAGE/lib/"
done
# The commit the sources were at (a build directory outside the checkout, /tmp/gpubuild, is
# common): the checkout this script belongs to, with "+changes" when it has uncommitted edits.
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
  git -C "$ROOT" diff --quiet HEAD 2>/dev/null || commit="$commit+changes"
  echo "$commit" >"$STAGE/COMMIT"
fi
tar -C "$STAGE" -cJf "$OUT" .
echo "gpu_bundle: $(du -h "$OUT" | cut -f1) -> $OUT ($(ls "$STAGE/bin" | wc -l) binaries, $(ls "$STAGE/lib" | wc -l) libraries)"
