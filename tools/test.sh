#!/usr/bin/env bash
# Installs what is missing, builds, and runs the tests; exits non-zero on any failure.
#
#   tools/test.sh          the fast and mpi sets (ctest labels "fast", "mpi"): what CI runs
#   tools/test.sh --all    also the slow, mpi and gpu sets, and the AddressSanitizer and
#                          ThreadSanitizer builds of the fast set
# gpu tests skip with a message where no GPU is present.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ALL=0
[[ "${1:-}" == "--all" ]] && ALL=1
JOBS="$(nproc)"

"$ROOT/tools/setup.sh" --build-dir "$ROOT/build"  # with the MiniLM weights: the encoder parity tests need them

cd "$ROOT/build"
if [[ $ALL -eq 0 ]]; then
  ctest --output-on-failure -j "$JOBS" -L "fast|mpi"
  exit 0
fi

ctest --output-on-failure -j "$JOBS"
for san in address thread; do
  dir="$ROOT/build-$san"
  "$ROOT/tools/setup.sh" --no-model --build-type Debug --build-dir "$dir" -- -DCHOIR_SANITIZE=$san \
    -DWITH_CUDA=OFF -DCHOIR_TEST_TIMEOUT=1800
  # Sanitized Debug builds run 10-20x slower: longer timeouts, and no model-quality tests.
  # OpenBLAS's own worker threads are not instrumented, so TSan cannot see how they hand results
  # back: BLAS runs single-threaded there. glog's tzset race is suppressed (tools/tsan.supp).
  (cd "$dir" && OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS="suppressions=$ROOT/tools/tsan.supp" \
     ctest --output-on-failure -j "$JOBS" -L fast -LE learning)
done
