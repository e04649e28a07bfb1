/* fovea_optim.h: optimizer updates over many parameters in one call (core/optim.c).
 *
 * Read as it is by LuaJIT's ffi.cdef after fovea.h, so like fovea.h it holds no macros,
 * no includes and no include guard. C users include fovea.h first.
 *
 * Each call updates parameter i from its gradient params[i]->gradient in place, one
 * fused pass over the elements per tensor (OpenMP over the elements). Parameters whose
 * gradient is NULL are skipped: neither they nor their state are touched or checked.
 * Every tensor involved (parameter, gradient, state) must be a live, contiguous
 * float32 or float64 tensor of the parameter's shape, dtype and device, and all the
 * parameters with gradients of one call must be on one device (cpu, or cuda when its
 * backend is loaded: cuda/optim.cu); parameters of one call
 * may have different dtypes; the tensors of one parameter (it, its gradient and its
 * state) must not share memory. All parameters are checked before any is changed, so a
 * failing call changes nothing; the message names the parameter index (from 0) and the
 * shapes. The formulas are those of PyTorch's torch.optim (maximize=False).
 */

/* Adam (decoupled = 0) or AdamW (decoupled = 1). step is the step count t after this
 * update (1 on the first call), shared by every parameter of the call. Per element:
 *   Adam:  g += weight_decay * p          AdamW: p *= 1 - lr * weight_decay
 *   m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g * g
 *   amsgrad: vmax = max(vmax, v), and vmax replaces v below
 *   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * exp_avg (m) and exp_avg_sq (v) start at zero; max_exp_avg_sq may be NULL unless
 * amsgrad is 1. */
int fv_adam_step(int n, fv_tensor *const *params, fv_tensor *const *exp_avg, fv_tensor *const *exp_avg_sq,
                 fv_tensor *const *max_exp_avg_sq, int64_t step, double lr, double beta1, double beta2,
                 double eps, double weight_decay, int decoupled, int amsgrad);

/* SGD with momentum, dampening, Nesterov momentum and (coupled) weight decay:
 *   g += weight_decay * p
 *   momentum != 0: b = first_step ? g : momentum * b + (1 - dampening) * g
 *                  g = nesterov ? g + momentum * b : b
 *   p -= lr * g
 * momentum_buf may be NULL, and its entries NULL, when momentum is 0. */
int fv_sgd_step(int n, fv_tensor *const *params, fv_tensor *const *momentum_buf, double lr, double momentum,
                double dampening, double weight_decay, int nesterov, int first_step);

/* Scales the gradients of params (those not NULL) in place so that their total norm is
 * at most max_norm, as torch.nn.utils.clip_grad_norm_: total = the norm_type-norm of all
 * gradient elements together (norm_type > 0, or INFINITY for the largest magnitude);
 * when max_norm / (total + 1e-6) < 1 every gradient is multiplied by it. Writes total
 * (0 without gradients) to *total_norm_out when that is not NULL. */
int fv_clip_grad_norm(int n, fv_tensor *const *params, double max_norm, double norm_type, double *total_norm_out);
