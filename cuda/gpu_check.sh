#!/usr/bin/env bash
# cuda/gpu_check.sh: the one script for a GPU session. On a machine with an NVIDIA GPU,
# from the repository root, it builds what is missing, runs spec/cuda_spec.lua (busted
# --tags gpu: every CUDA op against the CPU), runs it again under compute-sanitizer's
# memcheck when that tool exists, and writes the results under $OUT (./gpu-check-out
# when OUT is unset). It does not stop at the first failure: every step runs and
# summary.txt lists each one's status. Exit status: 0 when every step passed.
#
#   bash cuda/gpu_check.sh [RUNTIME_DIR]
#
# The device machine has nvcc and the CUDA libraries but no LuaJIT, busted or BLAS, and
# no package registry. Prepare on a machine with one, in the repository root:
#   /work/shared/tools/offline-runtime .gpu-runtime        # LuaJIT, busted, BLAS, libpng, libtiff
#   #   make                                                   # build/libfovea.so (and libfovea_cuda.so)
# then run this script there with `.gpu-runtime` and `build` carried (both are in
# .gitignore; together about 10 MB). RUNTIME_DIR defaults to .gpu-runtime.
# libfovea.so is built there only when build/libfovea.so is missing (that needs libpng,
# libtiff and CBLAS headers, which the device machine may lack); libfovea_cuda.so is
# always rebuilt there with that machine's nvcc (make cuda, keeping the carried
# libfovea.so), and the carried one is used if that build fails.
# Environment: FOVEA_GPU_TIMEOUT (seconds per step, default 300).
#
# Files written (at most 8, flat, as the device tool brings back):
#   summary.txt    one line per step: name, status, seconds; then the spec count lines
#   machine.txt    nvidia-smi, nvcc --version, ldd of both libraries
#   build.log      the builds
#   gpu_spec.txt   busted --tags gpu spec/cuda_spec.lua (plain output, count line last)
#   memcheck.txt   the same under compute-sanitizer --tool memcheck (allocator cache off)
#   bench.txt      bench/gpu.lua: fovea against PyTorch on this GPU (PYTHON: the python
#                  with torch, default python3)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)

runtime=${1:-.gpu-runtime}
out=${OUT:-$root/gpu-check-out}
limit=${FOVEA_GPU_TIMEOUT:-300}
mkdir -p "$out"
summary="$out/summary.txt"
: >"$summary"
failed=0

# step NAME COMMAND...: runs the command with a time limit, records status and seconds
step() {
  local name=$1
  shift
  local start=$SECONDS
  timeout "$limit" "$@"
  local status=$?
  printf '%-28s %s (%ss)\n' "$name" "$([ $status -eq 0 ] && echo ok || echo "FAILED: exit $status")" \
    "$((SECONDS - start))" >>"$summary"
  [ $status -eq 0 ] || failed=1
  return $status
}

# ---- the machine ----
{
  echo "== nvidia-smi"; nvidia-smi 2>&1
  echo "== nvcc"; (command -v nvcc && nvcc --version) 2>&1 || echo "nvcc not on PATH"
  echo "== gcc"; gcc --version 2>&1 | head -1
} >"$out/machine.txt" 2>&1

# ---- the LuaJIT runtime ----
if [ -f "$runtime/env.sh" ]; then
  # shellcheck disable=SC1090,SC1091
  source "$runtime/env.sh"
  echo "runtime                      ok ($runtime)" >>"$summary"
else
  echo "runtime                      MISSING: $runtime/env.sh (see the header of $0)" >>"$summary"
  failed=1
fi
export PATH="$PATH:/usr/local/cuda/bin"

# ---- builds ----
{
  if [ ! -f build/libfovea.so ]; then
    echo "== make lib (no carried build/libfovea.so)"
    step "build libfovea.so" make -j8 lib
  else
    echo "== using the carried build/libfovea.so"
    echo "build libfovea.so            carried" >>"$summary"
  fi
  if [ -f build/libfovea_cuda.so ]; then cp build/libfovea_cuda.so "$out/.carried_cuda.so" 2>/dev/null; fi
  echo "== make cuda (this machine's nvcc)"
  rm -rf build/cuda
  if ! step "build libfovea_cuda.so" make -j8 cuda -o build/libfovea.so; then
    if [ -f "$out/.carried_cuda.so" ]; then
      echo "the build failed: using the carried libfovea_cuda.so"
      cp "$out/.carried_cuda.so" build/libfovea_cuda.so
    fi
  fi
  rm -f "$out/.carried_cuda.so"
} >"$out/build.log" 2>&1

{
  for lib in build/libfovea.so build/libfovea_cuda.so; do
    echo "== ldd $lib"; ldd "$lib" 2>&1
  done
} >>"$out/machine.txt"
if ldd build/libfovea.so build/libfovea_cuda.so 2>/dev/null | grep -q 'not found'; then
  echo "libraries                    MISSING dependencies (see machine.txt)" >>"$summary"
  failed=1
fi

# ---- the GPU spec ----
# busted's launcher script, run by luajit (the runtime's env.sh wraps it in a function)
busted_bin="$runtime/root/usr/bin/busted"
[ -f "$busted_bin" ] || busted_bin=$(type -P busted || echo busted)
step "gpu spec" luajit "$busted_bin" --tags=gpu --output=spec/count_output.lua spec/cuda_spec.lua \
  >"$out/gpu_spec.txt" 2>&1
tail -n 2 "$out/gpu_spec.txt" | sed 's/^/  gpu spec: /' >>"$summary"
# on a GPU machine nothing may be skipped (a skip means the backend did not load)
if grep -q '^[0-9]* skipped$' "$out/gpu_spec.txt" || ! grep -qE '^[1-9][0-9]* passed, 0 failed$' "$out/gpu_spec.txt"; then
  echo "gpu spec                     FAILED: cases skipped or none passed (see gpu_spec.txt)" >>"$summary"
  failed=1
fi

if command -v compute-sanitizer >/dev/null 2>&1; then
  step "gpu spec under memcheck" env FOVEA_NO_ALLOC_CACHE=1 compute-sanitizer --tool memcheck --error-exitcode 3 \
    luajit "$busted_bin" --tags=gpu --output=spec/count_output.lua spec/cuda_spec.lua >"$out/memcheck.txt" 2>&1
  grep -E 'ERROR SUMMARY|passed, ' "$out/memcheck.txt" | tail -n 2 | sed 's/^/  memcheck: /' >>"$summary"
else
  echo "gpu spec under memcheck      skipped (no compute-sanitizer)" >>"$summary"
fi

# ---- the benchmark against PyTorch on the same GPU ----
step "gpu bench" luajit bench/gpu.lua --python "${PYTHON:-python3}" >"$out/bench.txt" 2>&1
grep -E '^(fovea|torch) ' "$out/bench.txt" | sed 's/^/  bench: /' >>"$summary"

cat "$summary"
exit $failed
