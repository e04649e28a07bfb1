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
# Build both libraries here into a folder of their own, without oneDNN (40 MB that the
# device machine lacks):  make BUILD=build-gpu DNNL= lib cuda
# and, there, `mv build-gpu build` before this script. The carried libraries are used as
# they are (they link cuDNN, which the device machine may have only inside PyTorch's
# Python packages: the script finds libcudnn.so.9 there and puts it on LD_LIBRARY_PATH);
# each is built there only when missing, or libfovea_cuda.so when FOVEA_GPU_REBUILD=1.
# The GPU spec and the main job (recipes/messidor.lua --device cuda on the built-in set)
# run side by side, then the benchmark alone (TF32, the cuBLAS NAM kernel, bf16 autocast,
# batch norm through cuDNN), the profile (and again with batch norm through cuDNN), and the
# spec under memcheck.
# Environment: FOVEA_GPU_TIMEOUT (seconds per step, default 150), FOVEA_MEMCHECK_TIMEOUT
# (default 180), FOVEA_BENCH_RUNS (timed runs per benchmark case, default 3),
# FOVEA_GPU_PARTS (which parts run, default all: "spec bench profile ncu memcheck"; e.g.
# FOVEA_GPU_PARTS=memcheck for that alone).
#
# Files written (at most 8, flat, as the device tool brings back):
#   summary.txt    one line per step: name, status, seconds; then the spec count lines
#   machine.txt    nvidia-smi, nvcc --version, ldd of both libraries
#   build.log      the builds
#   gpu_spec.txt   busted --tags gpu spec/cuda_spec.lua (plain output, count line last)
#   messidor.txt   luajit recipes/messidor.lua --device cuda (built-in set), then results.md
#   profile.txt    bench/gpu_profile.lua with FOVEA_CUDA_PROFILE=1: GPU time per backend op;
#                  then Nsight Compute's sections for the NAM kernels (when ncu exists)
#                  (then the same with FOVEA_NAM_KERNEL=gemm and FOVEA_BATCH_NORM_KERNEL=cudnn)
#   memcheck.txt   the spec under compute-sanitizer --tool memcheck (allocator cache off;
#                  busted's TAP output names each case as it ends)
#   bench.txt      bench/gpu.lua: fovea against PyTorch on this GPU (PYTHON: the python
#                  with torch, default python3); NAM alone (bench/gpu_nam_kernels.lua);
#                  then fovea alone with the cuBLAS NAM kernel, both under bf16 autocast,
#                  fovea alone with batch norm through cuDNN (FOVEA_BATCH_NORM_KERNEL=cudnn)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)

runtime=${1:-.gpu-runtime}
out=${OUT:-$root/gpu-check-out}
limit=${FOVEA_GPU_TIMEOUT:-150}
mkdir -p "$out"
exec 3>&1 # the steps' status lines reach the terminal even when a step's output is redirected
summary="$out/summary.txt"
: >"$summary"
failed=0

# step NAME COMMAND...: runs the command with a time limit, records status and seconds
step() {
  local name=$1
  shift
  local start=$SECONDS
  timeout -k 10 "$limit" "$@" # SIGKILL 10 s after the SIGTERM if the command ignores it
  local status=$?
  printf '%-28s %s (%ss)\n' "$name" "$([ $status -eq 0 ] && echo ok || echo "FAILED: exit $status")" \
    "$((SECONDS - start))" | tee -a "$summary" >&3
  [ $status -eq 0 ] || failed=1
  return $status
}

# part NAME: whether this run includes NAME (FOVEA_GPU_PARTS, default all five: spec
# (with the main job), bench, profile, ncu, memcheck)
part() { [[ " ${FOVEA_GPU_PARTS:-spec bench profile ncu memcheck} " == *" $1 "* ]]; }

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
  echo "runtime                      ok ($runtime)" | tee -a "$summary"
else
  echo "runtime                      MISSING: $runtime/env.sh (see the header of $0)" >>"$summary"
  failed=1
fi
export PATH="$PATH:/usr/local/cuda/bin"

# ---- builds (only what was not carried) ----
{
  if [ ! -f build/libfovea.so ]; then
    echo "== make lib (no carried build/libfovea.so)"
    step "build libfovea.so" make -j16 DNNL= lib
  fi
  if [ ! -f build/libfovea_cuda.so ] || [ "${FOVEA_GPU_REBUILD:-0}" = 1 ]; then
    echo "== make cuda (this machine's nvcc)"
    rm -rf build/cuda build/libfovea_cuda.so
    step "build libfovea_cuda.so" make -j16 DNNL= cuda -o build/libfovea.so
  fi
} >"$out/build.log" 2>&1
echo "libraries                    $(ls build/*.so | tr '\n' ' ')" | tee -a "$summary"

# cuDNN: the toolkit's, else the one in PyTorch's Python packages (nvidia-cudnn-cu13)
if ldd build/libfovea_cuda.so 2>/dev/null | grep -q 'libcudnn.so.9 => not found'; then
  cudnn=$(find / -xdev -name 'libcudnn.so.9' -not -path '/proc/*' 2>/dev/null | head -n 1)
  if [ -n "$cudnn" ]; then
    export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$(dirname "$cudnn")"
    echo "cudnn                        $(dirname "$cudnn")" | tee -a "$summary"
  fi
fi
{
  for lib in build/libfovea.so build/libfovea_cuda.so; do
    echo "== ldd $lib"; ldd "$lib" 2>&1
  done
} >>"$out/machine.txt"
if ldd build/libfovea.so build/libfovea_cuda.so 2>/dev/null | grep -q 'not found'; then
  echo "libraries                    MISSING dependencies: $(ldd build/libfovea.so build/libfovea_cuda.so | grep 'not found' | sort -u | tr -s ' \n\t' ' ')" | tee -a "$summary"
  failed=1
fi

# busted's launcher script, run by luajit (the runtime's env.sh wraps it in a function)
busted_bin="$runtime/root/usr/bin/busted"
[ -f "$busted_bin" ] || busted_bin=$(type -P busted || echo busted)

# ---- the main job on the GPU, beside the GPU spec ----
if part spec; then
  (
    step "messidor --device cuda" luajit recipes/messidor.lua --device cuda --workers 8 --threads 8 \
      --out "$out/.messidor-run" --cache "$out/.messidor-cache" >"$out/messidor.txt" 2>&1
    status=$?
    { echo "== results.md"; cat "$out/.messidor-run/results.md"; } >>"$out/messidor.txt" 2>&1
    rm -rf "$out/.messidor-run" "$out/.messidor-cache"
    exit $status # the step's status, for the wait below
  ) &
  job=$!

  # ---- the GPU spec ----
  step "gpu spec" luajit "$busted_bin" --tags=gpu --output=spec/count_output.lua spec/cuda_spec.lua \
    >"$out/gpu_spec.txt" 2>&1
  tail -n 2 "$out/gpu_spec.txt" | sed 's/^/  gpu spec: /' | tee -a "$summary"
  # on a GPU machine nothing may be skipped (a skip means the backend did not load)
  if grep -q '^[0-9]* skipped$' "$out/gpu_spec.txt" || ! grep -qE '^[1-9][0-9]* passed, 0 failed$' "$out/gpu_spec.txt"; then
    echo "gpu spec                     FAILED: cases skipped or failed (see gpu_spec.txt)" | tee -a "$summary"
    failed=1
  fi
  wait "$job" || failed=1
  grep -E 'epoch|auc|AUC|error|rror' "$out/messidor.txt" | tail -n 4 | sed 's/^/  messidor: /' | tee -a "$summary"
fi

# ---- the benchmark against PyTorch on the same GPU (alone on the GPU) ----
if part bench; then
  step "gpu bench" luajit bench/gpu.lua --runs "${FOVEA_BENCH_RUNS:-3}" --python "${PYTHON:-python3}" \
    >"$out/bench.txt" 2>&1
  grep -E '^(fovea|torch) ' "$out/bench.txt" | sed 's/^/  bench: /' | tee -a "$summary"
  # NAM alone: median forward + backward and forward of 7 passes at the batch-4 size
  { echo; echo "== NAM alone"; } >>"$out/bench.txt"
  step "NAM alone" luajit bench/gpu_nam_kernels.lua --passes 8 >>"$out/bench.txt" 2>&1
  grep -E '^median' "$out/bench.txt" | tail -n 1 | sed 's/^/  NAM alone: /' | tee -a "$summary"

  # fovea alone with NAM through cuBLAS instead of the fused mma.sync kernel, for comparison
  step "gpu bench (gemm NAM)" env FOVEA_NAM_KERNEL=gemm luajit bench/gpu.lua --runs "${FOVEA_BENCH_RUNS:-3}" \
    --python none >>"$out/bench.txt" 2>&1
  grep -E '^fovea ' "$out/bench.txt" | tail -n 9 | sed 's/^/  bench (gemm): /' | tee -a "$summary"

  # both under bf16 autocast (fovea's set_autocast, PyTorch's torch.autocast)
  { echo; echo "== --autocast bf16"; } >>"$out/bench.txt"
  step "gpu bench (bf16 autocast)" luajit bench/gpu.lua --runs "${FOVEA_BENCH_RUNS:-3}" --autocast bf16 \
    --python "${PYTHON:-python3}" >>"$out/bench.txt" 2>&1
  grep -E '^(fovea|torch) ' "$out/bench.txt" | tail -n 13 | sed 's/^/  bench (bf16): /' | tee -a "$summary"

  # fovea alone with batch norm through cuDNN instead of cuda/nn_batch_norm.cu's kernels
  # (FOVEA_BATCH_NORM_KERNEL=cudnn, cuda/cudnn_batch_norm.cu), against the first run's fovea lines
  { echo; echo "== FOVEA_BATCH_NORM_KERNEL=cudnn"; } >>"$out/bench.txt"
  step "gpu bench (cudnn batch norm)" env FOVEA_BATCH_NORM_KERNEL=cudnn luajit bench/gpu.lua \
    --runs "${FOVEA_BENCH_RUNS:-3}" --python none >>"$out/bench.txt" 2>&1
  grep -E '^fovea ' "$out/bench.txt" | tail -n 9 | sed 's/^/  bench (cudnn bn): /' | tee -a "$summary"
fi

# ---- where a training step's time goes: every backend call timed (FOVEA_CUDA_PROFILE) ----
if part profile; then
  step "gpu profile" env FOVEA_CUDA_PROFILE=1 luajit bench/gpu_profile.lua >"$out/profile.txt" 2>&1
  # NAM through cuBLAS instead of the fused mma.sync kernel, for comparison
  { echo; echo "== FOVEA_NAM_KERNEL=gemm"; } >>"$out/profile.txt"
  step "gpu profile (gemm NAM)" env FOVEA_CUDA_PROFILE=1 FOVEA_NAM_KERNEL=gemm luajit bench/gpu_profile.lua \
    --steps 3 >>"$out/profile.txt" 2>&1
  # batch norm through cuDNN instead of our kernels: its rows ("nn batch_norm", "nn batch_norm
  # backward") against the first profile's
  { echo; echo "== FOVEA_BATCH_NORM_KERNEL=cudnn"; } >>"$out/profile.txt"
  step "gpu profile (cudnn bn)" env FOVEA_CUDA_PROFILE=1 FOVEA_BATCH_NORM_KERNEL=cudnn luajit bench/gpu_profile.lua \
    --steps 3 >>"$out/profile.txt" 2>&1
fi

# ---- inside the NAM kernels: Nsight Compute on one forward + backward at the batch-4 size
# (occupancy, issue-slot use, stall reasons; bench/gpu_nam_kernels.lua's second pass, the
# first one's four launches skipped), appended to profile.txt ----
# ncu: on PATH, else in the toolkit's or the system's Nsight Compute folder. Its "detailed"
# set (speed of light, compute and memory workload with shared-memory bank conflicts,
# launch, occupancy, scheduler, warp stalls, source counters); the five sections of the
# first plan if that set fails.
if part ncu; then
  ncu_bin=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /usr/local/cuda*/nsight-compute*/ncu \
    /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
  if [ -n "$ncu_bin" ]; then
    { echo; echo "== ncu ($ncu_bin): the NAM kernels (N = 9,409, batch 4)"; } >>"$out/profile.txt"
    ncu_pick=(--kernel-name regex:'mma_|delta_rows' --launch-skip 4 --launch-count 4)
    limit=75 step "ncu NAM kernels" "$ncu_bin" "${ncu_pick[@]}" --set detailed luajit bench/gpu_nam_kernels.lua \
      >>"$out/profile.txt" 2>&1 ||
      limit=75 step "ncu NAM kernels (5 sections)" "$ncu_bin" "${ncu_pick[@]}" --section SpeedOfLight \
        --section Occupancy --section LaunchStats --section WarpStateStats --section ComputeWorkloadAnalysis \
        luajit bench/gpu_nam_kernels.lua >>"$out/profile.txt" 2>&1
  else
    echo "ncu NAM kernels              skipped (no ncu)" | tee -a "$summary"
  fi
fi

# ---- the spec again under memcheck, as far as its time limit allows ----
# Host backtraces off (--show-backtrace device): with them on, the sanitizer unwound the
# host stack at kernel launches through LuaJIT's frames and libgcc's unwinder aborted the
# process (SIGABRT, no memcheck error), at the fifth to eighth case (the H200, November
# 2026: tools/abort_backtrace.c's stack scan showed abort <- libgcc_s <-
# libsanitizer-collection <- libcuda <- cudaLaunchKernel <- fv_cuda_fill). The kernel
# and its device stack still name each error. abort_backtrace stays preloaded, in case.
# API errors are not reported (--report-api-errors no): fovea checks every CUDA status
# itself, and the out-of-memory case provokes four on purpose.
if part memcheck; then
  sanitizer_bin=$(command -v compute-sanitizer || ls /usr/local/cuda*/compute-sanitizer/compute-sanitizer 2>/dev/null |
    head -n 1)
  if [ -n "$sanitizer_bin" ]; then
    trace_lib=$(mktemp -d)/abort_backtrace.so
    gcc -shared -fPIC -O1 -g -o "$trace_lib" tools/abort_backtrace.c >>"$out/build.log" 2>&1 || trace_lib=
    limit=${FOVEA_MEMCHECK_TIMEOUT:-180} step "gpu spec under memcheck" env FOVEA_NO_ALLOC_CACHE=1 \
      ${trace_lib:+LD_PRELOAD="$trace_lib"} "$sanitizer_bin" --tool memcheck --error-exitcode 3 \
      --show-backtrace device --report-api-errors no --print-limit 20 \
      luajit -joff "$busted_bin" --tags=gpu --output=TAP spec/cuda_spec.lua >"$out/memcheck.txt" 2>&1
    grep -E 'ERROR SUMMARY|^(not )?ok |abort_backtrace|^# ' "$out/memcheck.txt" | tail -n 4 | sed 's/^/  memcheck: /' |
      tee -a "$summary"
  else
    echo "gpu spec under memcheck      skipped (no compute-sanitizer)" | tee -a "$summary"
  fi
fi

exit $failed
