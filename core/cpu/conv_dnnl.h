/* cpu/conv_dnnl.h: float32 conv2d forward and backward through oneDNN (cpu/conv_dnnl.c),
 * for the CPU backend's CONV2D dispatch (cpu/nn_backend.c). Each entry takes an
 * fv_nn_call with the CONV2D slots of core/internal.h and sets *handled: 0 when it left
 * the call alone (float64, oneDNN absent at build time, FOVEA_DNNL=0, or a shape oneDNN
 * rejects), so that the caller runs the im2col path; 1 when it ran it (returns the
 * status). Backward accumulates (+=) into dinp, dweight and dbias, as the kernel
 * contract asks. */
#ifndef FOVEA_CPU_CONV_DNNL_H
#define FOVEA_CPU_CONV_DNNL_H

#include "../internal.h"

int fv_dnnl_conv2d_forward(const fv_nn_call *c, int *handled);
int fv_dnnl_conv2d_backward(const fv_nn_call *c, int *handled);

/* 1 when float32 convolutions go through oneDNN in this process (built with it and not
 * turned off with FOVEA_DNNL=0); for the specs and benchmarks (through the FFI). */
int fv_dnnl_conv2d_active(void);

#endif
