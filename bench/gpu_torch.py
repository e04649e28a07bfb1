#!/usr/bin/env python3
# bench/gpu_torch.py: the PyTorch twin of bench/gpu.lua on the GPU: the dual-branch
# ResNet18 training step (bench/dual_torch.py's model) at SIZE, batch BATCH, with
# cudnn.benchmark on and TF32 allowed (as fovea's default), and NAM attention forward +
# backward with torch.nn.functional.scaled_dot_product_attention (scale 1, the paper's).
# Prints machine-readable lines:
#   step size=386 batch=4 images_per_s=... peak_mb=...
#   nam n=9409 fwd_bwd_s=... peak_extra_mb=...
# Usage: gpu_torch.py step SIZE BATCH RUNS [bf16] | gpu_torch.py nam SIDE BATCH RUNS [bf16]
# (bf16: under torch.autocast('cuda', torch.bfloat16), as fovea's --autocast bf16)
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dual_torch import Dual  # noqa: E402


def timed(fn, runs):
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step(size, batch, runs, bf16):
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model = Dual(2).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    x = torch.randn(batch, 3, size, size, device='cuda')
    y = torch.randint(0, 2, (batch,), device='cuda')

    def one():
        opt.zero_grad()
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    torch.cuda.reset_peak_memory_stats()
    seconds = timed(one, runs)
    peak = torch.cuda.max_memory_allocated() / 2**20
    print(f"step size={size} batch={batch} images_per_s={batch / seconds:.2f} peak_mb={peak:.1f}")


def nam(side, batch, runs, bf16):
    n = side * side
    q = torch.randn(batch, 1, n, 32, device='cuda', requires_grad=True)
    k = torch.randn(batch, 1, n, 32, device='cuda', requires_grad=True)
    v = torch.randn(batch, 1, n, 64, device='cuda', requires_grad=True)
    # sdpa needs equal head dims for some kernels: pad q and k to 64 is not the same op,
    # so the math kernel is allowed as PyTorch chooses
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()

    def one():
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=bf16):
            out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        out.backward(torch.ones_like(out))
    seconds = timed(one, runs)
    extra = (torch.cuda.max_memory_allocated() - base) / 2**20
    print(f"nam n={n} fwd_bwd_s={seconds:.4f} peak_extra_mb={extra:.1f}")


if __name__ == '__main__':
    kind, a, b, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    bf16 = len(sys.argv) > 5 and sys.argv[5] == 'bf16'
    (step if kind == 'step' else nam)(a, b, runs, bf16)
