#!/bin/sh
# run_all.sh: the CUDA host test (test_cuda_host.cpp, against the fake runtime) under
# every checker, by hand: too slow for the specs, which run each scenario once, built
# plain by `make test` and with ASan+UBSan (leak checking off) by `make sanitize`.
#   spec/cuda_host/run_all.sh    from anywhere in the repository; needs nvcc and valgrind
# Builds with `make cuda-host-test` into build-asan (ASan+UBSan, as make sanitize),
# build (plain) and build/cuda-host-tsan (ThreadSanitizer; its libfovea.so too, so the
# first run takes a few minutes), then runs every scenario under ASan+UBSan with leak
# checking, under valgrind (memcheck, definite and indirect leaks) and the threads
# scenario under ThreadSanitizer. Prints ALL PASSED and exits 0 when everything passed.
set -e
cd "$(dirname "$0")/../.."
make -s cuda-host-test BUILD=build-asan CFLAGS="-O1 -g -fno-omit-frame-pointer" \
  SANITIZE="-fsanitize=address,undefined -fno-sanitize-recover=undefined" >/dev/null
make -s cuda-host-test >/dev/null
make -s cuda-host-test BUILD=build/cuda-host-tsan CFLAGS="-O1 -g" SANITIZE="-fsanitize=thread" >/dev/null

ASAN=build-asan/spec/cuda_host/test_cuda_host
PLAIN=build/spec/cuda_host/test_cuda_host
TSAN=build/cuda-host-tsan/spec/cuda_host/test_cuda_host
VALGRIND="valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect --error-exitcode=9"
NOCACHE=FOVEA_NO_ALLOC_CACHE=1
export FOVEA_NO_ALLOC_CACHE=0 FAKE_NOTREADY_CLEAN=0 ASAN_OPTIONS=detect_leaks=1 TSAN_OPTIONS=halt_on_error=1

failed=0
check() {
  echo "== $*"
  env "$@" || { echo "FAILED: $*"; failed=1; }
}

check $ASAN main
check FAKE_NOTREADY_CLEAN=1 $ASAN main
check $NOCACHE $ASAN nocache
check $ASAN exitdrain
check $NOCACHE $ASAN exitdrain
check $ASAN threads
check $NOCACHE $ASAN threads
check $ASAN fragmentation
check $VALGRIND $PLAIN main
check $NOCACHE $VALGRIND $PLAIN nocache
check $VALGRIND $PLAIN exitdrain
check $VALGRIND $PLAIN threads
check $VALGRIND $PLAIN fragmentation
check $TSAN threads
check $NOCACHE $TSAN threads

if [ $failed = 0 ]; then echo "ALL PASSED"; else echo "SOME FAILED"; exit 1; fi
