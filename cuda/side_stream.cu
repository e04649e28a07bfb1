/* side_stream.cu: a second stream for independent work of one op, run beside the compute
 * stream (fv_cuda_stream): fv_cuda_fork hands out the side stream after making it wait for
 * everything queued on the compute stream so far, and fv_cuda_join makes the compute
 * stream wait for everything queued on the side stream. Between the two, both streams may
 * take launches; memory they use must be allocated before the fork and freed after the
 * join (the caching allocator orders reuse by the compute stream only). NAM's backward
 * runs its dK/dV and dQ kernels this way (nam_tiles.cuh), so that the tail of one fills
 * the SMs the other leaves idle. The stream is made with cudaStreamNonBlocking (the
 * compute stream is the legacy default stream, which would otherwise serialize with it),
 * on first use, with the two events (no timing); all live until exit. The backend's ops
 * run on one host thread at a time, so one side stream and one pair of events serve
 * every fork.
 * Build: nvcc -std=c++17 -O2 -fmad=false -Xcompiler -fPIC -Icore -c cuda/side_stream.cu -o build/cuda/side_stream.o */
#include "common.cuh"

namespace {
cudaStream_t side;
cudaEvent_t forked, joined; /* recorded on the compute stream at a fork, on the side stream at a join */
int made_side, made_forked, made_joined;

/* Each part is made once: after a failure part way, the next fork makes only what is
 * missing (no second stream or event). */
int make_side(const char *op) {
  if (!made_side) {
    FV_CUDA_TRY(op, cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
    made_side = 1;
  }
  if (!made_forked) {
    FV_CUDA_TRY(op, cudaEventCreateWithFlags(&forked, cudaEventDisableTiming));
    made_forked = 1;
  }
  if (!made_joined) {
    FV_CUDA_TRY(op, cudaEventCreateWithFlags(&joined, cudaEventDisableTiming));
    made_joined = 1;
  }
  return FV_OK;
}
}  // namespace

int fv_cuda_fork(const char *op, cudaStream_t *stream) {
  FV_TRY(make_side(op));
  FV_CUDA_TRY(op, cudaEventRecord(forked, fv_cuda_stream));
  FV_CUDA_TRY(op, cudaStreamWaitEvent(side, forked, 0));
  *stream = side;
  return FV_OK;
}

int fv_cuda_join(const char *op) {
  FV_CUDA_TRY(op, cudaEventRecord(joined, side));
  FV_CUDA_TRY(op, cudaStreamWaitEvent(fv_cuda_stream, joined, 0));
  return FV_OK;
}
