#!/usr/bin/env python3
"""nam_torch.py: the PyTorch twin of bench/nam.lua: NAM attention forward + backward,
y = softmax(s * q k^T) v over N = side*side positions, timed on CPU with the same thread
count as fovea.

PyTorch 1.13 (Debian's python3-torch) has no torch.nn.functional.scaled_dot_product_attention
(it arrived in 2.0); the 'sdpa' method is then reported as unavailable. Methods:
  bmm      torch.bmm + softmax + torch.bmm: stores the B x N x N attention (the usual way)
  chunked  the same over query chunks, each under torch.utils.checkpoint (recomputed in
           backward): the peer's memory-frugal variant
  sdpa     F.scaled_dot_product_attention, when present

Prints one line per method, as "method key=value ..." (machine-readable for nam.lua):
  torch bmm fwd_bwd_s=... fwd_s=... min_fwd_bwd_s=... peak_extra_mb=... runs=...
(medians, and the fastest run: on a shared machine the minimum is the steadier figure)
Peak memory is the growth of the process's peak RSS (ru_maxrss) over its RSS after the
inputs and outputs exist: run each method in its own process (--method) for a clean peak.
"""
import argparse
import resource
import statistics
import sys
import time


def rss_mb():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--side', type=int, default=97)
    ap.add_argument('--d', type=int, default=32)
    ap.add_argument('--cv', type=int, default=64)
    ap.add_argument('--batch', type=int, default=4)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--scale', type=float, default=1.0)
    ap.add_argument('--chunk', type=int, default=1024)
    ap.add_argument('--method', default='bmm', choices=['bmm', 'chunked', 'sdpa'])
    a = ap.parse_args()

    import torch
    import torch.nn.functional as F
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    n = a.side * a.side
    tag = 'torch %s' % a.method
    if a.method == 'sdpa' and not hasattr(F, 'scaled_dot_product_attention'):
        print('%s unavailable=1 version=%s' % (tag, torch.__version__))
        return

    q = (torch.randn(a.batch, n, a.d) * 0.2).requires_grad_()
    k = (torch.randn(a.batch, n, a.d) * 0.2).requires_grad_()
    v = torch.randn(a.batch, n, a.cv).requires_grad_()
    dy = torch.randn(a.batch, n, a.cv)

    def attend(qc):
        return torch.bmm(torch.softmax(torch.bmm(qc, k.transpose(1, 2)) * a.scale, dim=-1), v)

    def forward():
        if a.method == 'bmm':
            return attend(q)
        if a.method == 'chunked':
            from torch.utils.checkpoint import checkpoint
            return torch.cat([checkpoint(attend, q[:, i:i + a.chunk]) for i in range(0, n, a.chunk)], 1)
        return F.scaled_dot_product_attention(q, k, v, scale=a.scale)

    # outputs and gradients exist before the baseline, as in nam.lua
    y0 = forward()
    y0.backward(dy)
    del y0
    base = rss_mb()
    base_peak = peak_rss_mb()
    times, ftimes = [], []
    for r in range(a.warmup + a.runs):
        q.grad = k.grad = v.grad = None
        t0 = time.perf_counter()
        y = forward()
        t1 = time.perf_counter()
        y.backward(dy)
        t2 = time.perf_counter()
        del y
        if r >= a.warmup:
            times.append(t2 - t0)
            ftimes.append(t1 - t0)
    peak = max(peak_rss_mb(), base_peak) - base
    print('%s fwd_bwd_s=%.4f fwd_s=%.4f min_fwd_bwd_s=%.4f peak_extra_mb=%.1f runs=%d threads=%d version=%s' % (
        tag, statistics.median(times), statistics.median(ftimes), min(times), peak, a.runs, a.threads,
        torch.__version__))
    sys.stdout.flush()


if __name__ == '__main__':
    main()
