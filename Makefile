# Makefile: builds libfovea.so (core/) and, when nvcc exists, libfovea_cuda.so (cuda/);
# runs the specs; installs. `make help` lists the targets.
PREFIX    ?= /usr/local
CC        ?= gcc
BUILD     ?= build
CFLAGS    ?= -O2 -g
SANITIZE  ?=
BASE_CFLAGS = -std=c11 -D_GNU_SOURCE -fPIC -fopenmp -Wall -Wextra $(DNNL_CFLAGS) $(SANITIZE)
LDLIBS    = -lblas -lpng -ltiff -lm -ldl -lpthread
# oneDNN (Debian's libdnnl-dev) runs float32 conv2d when its header is there
# (core/cpu/conv_dnnl.c); without it the build keeps im2col + GEMM for every conv.
DNNL      ?= $(shell test -f /usr/include/oneapi/dnnl/dnnl.h && echo 1)
DNNL_CFLAGS = $(if $(DNNL),-DFV_HAVE_DNNL)
LDLIBS   += $(if $(DNNL),-ldnnl)
SOURCES   = $(wildcard core/*.c core/cpu/*.c core/nn/*.c core/image/*.c)
OBJECTS   = $(SOURCES:%.c=$(BUILD)/%.o)
HEADERS   = $(wildcard core/*.h core/cpu/*.h core/cpu/*.inc core/nn/*.h core/image/*.h)
LIB       = $(BUILD)/libfovea.so
LUAJIT    ?= luajit
BUSTED    ?= busted
ASAN_BUILD = build-asan
DEB_PACKAGES = luajit libluajit-5.1-dev libopenblas-dev libdnnl-dev libpng-dev libtiff-dev lua-busted catdoc gnuplot-nox g++

# The CUDA backend (cuda/): built by `make` when nvcc is found (on PATH or in
# /usr/local/cuda/bin), skipped without a word otherwise. Loaded at run time by
# lua/fovea/cuda.lua; the CPU build and its specs never need it. CUDA_ARCH: machine code
# for Hopper (sm_90: H100, H200), and compute_80 and compute_75 PTX, which the driver
# compiles at load time for any other GPU from Turing on (from Ampere on with the
# mma.sync NAM kernels; set CUDA_ARCH to add machine code for yours).
NVCC      ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_ARCH ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=compute_80 -gencode arch=compute_75,code=compute_75
NVCCFLAGS ?= -O2
BASE_NVCCFLAGS = -std=c++17 -fmad=false -Xcompiler -fPIC,-Wall,-Wextra $(CUDA_ARCH)
CUDA_SOURCES = $(wildcard cuda/*.cu)
CUDA_OBJECTS = $(CUDA_SOURCES:%.cu=$(BUILD)/%.o)
# The backend's host-only C files (cuda/*.c, each with its .h: the allocator's bookkeeping),
# compiled by the C compiler: linked into libfovea_cuda.so, and into the C tests that
# drive them without nvcc or a GPU.
CUDA_C_SOURCES = $(wildcard cuda/*.c)
CUDA_C_OBJECTS = $(CUDA_C_SOURCES:%.c=$(BUILD)/%.o)
CUDA_LIB  = $(BUILD)/libfovea_cuda.so
# cuDNN (conv2d on the GPU, and batch norm with FOVEA_BATCH_NORM_KERNEL=cudnn; cuda/cudnn.cu,
# cuda/cudnn_plan.cu and cuda/cudnn_batch_norm.cu only): used when its header and library
# are in CUDA_HOME (CUDNN=0 to leave it out); without it conv2d on cuda says "not
# implemented" and FOVEA_BATCH_NORM_KERNEL=cudnn is an error.
CUDNN     ?= $(if $(and $(wildcard $(CUDA_HOME)/include/cudnn.h),$(wildcard $(CUDA_HOME)/lib64/libcudnn.so)),1,0)

.PHONY: all lib cuda fake-cuda cuda-host-test test ctest sanitize repl demo deps install uninstall clean help

all: lib $(if $(NVCC),cuda)

lib: $(LIB)

cuda: $(CUDA_LIB)

# Links against libfovea.so (found beside it at run time: rpath $ORIGIN) and the CUDA
# runtime, cuBLAS and (when CUDNN=1) cuDNN (rpath to the toolkit's lib64).
$(CUDA_LIB): $(CUDA_OBJECTS) $(CUDA_C_OBJECTS) $(LIB)
	@test -n "$(NVCC)" || { echo "make cuda: nvcc not found (PATH or /usr/local/cuda/bin)"; exit 1; }
	$(NVCC) -shared -cudart shared $(CUDA_ARCH) -o $@ $(CUDA_OBJECTS) $(CUDA_C_OBJECTS) -L$(BUILD) -lfovea \
	  -L$(CUDA_HOME)/lib64 -lcudart -lcublas $(if $(filter 1,$(CUDNN)),-lcudnn) -Xlinker -rpath,'$$ORIGIN' -Xlinker -rpath,$(CUDA_HOME)/lib64

$(BUILD)/cuda/%.o: cuda/%.cu cuda/common.cuh cuda/fovea_cuda.h core/fovea.h core/internal.h core/philox.h
	@test -n "$(NVCC)" || { echo "make cuda: nvcc not found (PATH or /usr/local/cuda/bin)"; exit 1; }
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) $(BASE_NVCCFLAGS) -c $< -o $@

$(CUDA_OBJECTS): cuda/nn_common.cuh
$(BUILD)/cuda/allocator.o $(BUILD)/cuda/transfer.o: cuda/block_pool.h
$(BUILD)/cuda/nn_nam_flash.o $(BUILD)/cuda/nn_nam_gemm.o $(BUILD)/cuda/nn_nam_mma.o: cuda/nam_tiles.cuh
$(BUILD)/cuda/cudnn.o $(BUILD)/cuda/cudnn_plan.o $(BUILD)/cuda/cudnn_batch_norm.o: cuda/cudnn_plan.cuh
$(BUILD)/cuda/cudnn.o $(BUILD)/cuda/cudnn_plan.o $(BUILD)/cuda/cudnn_batch_norm.o: BASE_NVCCFLAGS += -DFV_HAVE_CUDNN=$(if $(filter 1,$(CUDNN)),1,0)

$(CUDA_C_OBJECTS): $(BUILD)/cuda/%.o: cuda/%.c cuda/%.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(BASE_CFLAGS) -c $< -o $@

$(LIB): $(OBJECTS)
	$(CC) -shared -fopenmp $(SANITIZE) -o $@ $(OBJECTS) $(LDLIBS)

$(BUILD)/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(BASE_CFLAGS) -c $< -o $@

# C test programs (spec/c/test_*.c) linked against the library; spec/c_programs_spec.lua
# builds and runs them as part of the specs.
CTESTS = $(patsubst spec/c/%.c,$(BUILD)/spec/%,$(wildcard spec/c/test_*.c))

$(BUILD)/spec/%: spec/c/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(BASE_CFLAGS) -Icore -Icore/cpu $< -o $@ -L$(BUILD) -lfovea $(LDLIBS) -Wl,-rpath,$(abspath $(BUILD))

ctest: $(CTESTS)

# The caching allocator's bookkeeping alone, over malloc'd segments (no libfovea, no CUDA).
$(BUILD)/spec/test_block_pool: spec/c/test_block_pool.c $(BUILD)/cuda/block_pool.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(BASE_CFLAGS) -Icuda $^ -o $@

# A stand-in libfovea_cuda.so over host memory and the CPU's kernels (spec/c/fake_cuda.c):
# spec/cuda_plumbing_spec.lua runs spec/cuda_spec.lua against it on machines without a GPU.
FAKE_CUDA = $(BUILD)/spec/fake-cuda/libfovea_cuda.so

$(FAKE_CUDA): spec/c/fake_cuda.c spec/c/fake_device.h cuda/fovea_cuda.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(BASE_CFLAGS) -shared -Icore $< -o $@ -L$(BUILD) -lfovea -Wl,-rpath,$(abspath $(BUILD))

fake-cuda: $(FAKE_CUDA)

# The host logic of the CUDA backend's allocator, pinned memory and uploads, and side
# stream (cuda/allocator.cu, transfer.cu, side_stream.cu, errors.cu by nvcc with the cuda
# objects' flags; cuda/block_pool.c by the C compiler) driven by spec/cuda_host/
# test_cuda_host.cpp against a fake CUDA runtime (spec/cuda_host/fake_cudart.cpp) linked
# in place of libcudart (-cudart none): needs nvcc, not a GPU. spec/cuda_host_spec.lua
# builds and runs it. CFLAGS and SANITIZE go to nvcc's host compiler (one -Xcompiler
# each, commas escaped: nvcc splits its arguments at commas).
CUDA_HOST_DIR    = $(BUILD)/spec/cuda_host
CUDA_HOST_TEST   = $(CUDA_HOST_DIR)/test_cuda_host
CUDA_HOST_UNITS  = $(patsubst %,$(CUDA_HOST_DIR)/%.o,allocator transfer side_stream errors)
CUDA_HOST_FAKES  = $(patsubst %,$(CUDA_HOST_DIR)/%.o,fake_cudart test_cuda_host)
comma := ,
host_compiler_flags = $(foreach f,$(1),-Xcompiler '$(subst $(comma),\$(comma),$(f))')
CUDA_HOST_NVCCFLAGS = $(NVCCFLAGS) $(BASE_NVCCFLAGS) $(call host_compiler_flags,$(CFLAGS) $(SANITIZE))

$(CUDA_HOST_UNITS): $(CUDA_HOST_DIR)/%.o: cuda/%.cu cuda/common.cuh cuda/fovea_cuda.h cuda/block_pool.h core/fovea.h core/internal.h core/philox.h
	@mkdir -p $(dir $@)
	$(NVCC) $(CUDA_HOST_NVCCFLAGS) -c $< -o $@

$(CUDA_HOST_FAKES): $(CUDA_HOST_DIR)/%.o: spec/cuda_host/%.cpp spec/cuda_host/fake_cudart.h core/fovea.h core/internal.h
	@mkdir -p $(dir $@)
	$(NVCC) $(CUDA_HOST_NVCCFLAGS) -Icore -c $< -o $@

$(CUDA_HOST_TEST): $(CUDA_HOST_UNITS) $(CUDA_HOST_FAKES) $(BUILD)/cuda/block_pool.o $(LIB)
	$(NVCC) -cudart none $(CUDA_ARCH) $(call host_compiler_flags,$(SANITIZE)) -o $@ $(CUDA_HOST_UNITS) $(CUDA_HOST_FAKES) \
	  $(BUILD)/cuda/block_pool.o -L$(BUILD) -lfovea -lpthread -Xlinker -rpath,$(abspath $(BUILD))

ifeq ($(NVCC),)
cuda-host-test:
	@echo "make cuda-host-test: nvcc not found (PATH or /usr/local/cuda/bin)"; exit 1
else
cuda-host-test: $(CUDA_HOST_TEST)
endif

# The busted specs under LuaJIT (spec/*_spec.lua); GPU specs skip themselves without a GPU.
test: lib
	$(BUSTED) --lua=$(LUAJIT) --output=spec/count_output.lua spec

# The same specs against a library built with AddressSanitizer and UBSan. LuaJIT itself
# is not instrumented, so the runtime is preloaded; leaks are not checked (LuaJIT's GC
# frees at exit in its own order); the CPU allocator's cache is off so that every use
# after free is seen.
sanitize:
	$(MAKE) lib BUILD=$(ASAN_BUILD) CFLAGS="-O1 -g -fno-omit-frame-pointer" SANITIZE="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
	FOVEA_LIB=$(CURDIR)/$(ASAN_BUILD)/libfovea.so FOVEA_BUILD=$(ASAN_BUILD) FOVEA_NO_ALLOC_CACHE=1 \
	FOVEA_SANITIZE="-fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	$(BUSTED) --lua=$(LUAJIT) --output=spec/count_output.lua spec

repl: lib
	$(LUAJIT) -i -e "fv = require 'fovea'; print('fovea ' .. fv.version() .. ': the library is in fv')"

demo: lib
	$(LUAJIT) recipes/messidor.lua

# Installs the Debian packages fovea needs that are missing.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "all dependencies present"; fi

install: lib
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include/fovea $(DESTDIR)$(PREFIX)/share/lua/5.1/fovea
	install -m 755 $(LIB) $(DESTDIR)$(PREFIX)/lib/
	install -m 644 core/fovea*.h $(DESTDIR)$(PREFIX)/include/fovea/
	install -m 644 cuda/fovea_cuda.h $(DESTDIR)$(PREFIX)/include/fovea/
	if [ -f $(CUDA_LIB) ]; then install -m 755 $(CUDA_LIB) $(DESTDIR)$(PREFIX)/lib/; fi
	cp -r lua/fovea/. $(DESTDIR)$(PREFIX)/share/lua/5.1/fovea/
	@echo "installed; add $(PREFIX)/share/lua/5.1/?.lua;$(PREFIX)/share/lua/5.1/?/init.lua to LUA_PATH if it is not a default"

uninstall:
	rm -rf $(DESTDIR)$(PREFIX)/lib/libfovea.so $(DESTDIR)$(PREFIX)/lib/libfovea_cuda.so $(DESTDIR)$(PREFIX)/include/fovea $(DESTDIR)$(PREFIX)/share/lua/5.1/fovea

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

help:
	@echo "make          build $(LIB) (and $(CUDA_LIB) when nvcc exists)"
	@echo "make cuda     build $(CUDA_LIB) (the CUDA backend; needs nvcc)"
	@echo "make deps     install missing Debian packages: $(DEB_PACKAGES)"
	@echo "make test     run the busted specs under LuaJIT"
	@echo "make sanitize run the specs against an ASan+UBSan build"
	@echo "make cuda-host-test  build $(BUILD)/spec/cuda_host/test_cuda_host (cuda/'s host logic on a fake CUDA runtime; nvcc, no GPU)"
	@echo "make repl     LuaJIT with fv = require 'fovea'"
	@echo "make demo     run the main job (luajit recipes/messidor.lua)"
	@echo "make install PREFIX=/usr/local   install library, headers and Lua modules"
