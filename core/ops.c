/* ops.c: the names of the op codes, used in error messages and by fv_op_name. */
#include <assert.h>

#include "internal.h"

static const char *const op_names[] = {
    "add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge",
    "neg", "exp", "log", "sqrt", "abs", "relu", "sigmoid", "tanh", "clamp",
    "sum", "mean", "max", "min", "argmax", "argmin", "var",
    "copy", "fill", "matmul", "rand", "randn",
    "conv2d", "batch_norm", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
    "adaptive_max_pool2d", "upsample_bilinear", "softmax", "log_softmax",
    "cross_entropy", "channel_shuffle",
    "nam_attention", "criss_cross_attention",
};
static_assert(sizeof op_names / sizeof op_names[0] == FV_OP_COUNT, "every fv_op needs a name");

const char *fv_op_name(int op) { return op >= 0 && op < FV_OP_COUNT ? op_names[op] : "invalid-op"; }
