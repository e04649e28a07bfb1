#!/usr/bin/env python3
# bench/dual_torch.py: the PyTorch twin of bench/train.lua: one training step (forward,
# cross-entropy, backward, Adam) of the dual-branch model: ResNet18 (bench/resnet18_torch.py),
# NAM on e1 (theta, phi: 1x1 64 -> 32, g: 64 -> 64, softmax(theta phi^T) g with torch.bmm,
# residual), NVCF (adaptive avg, adaptive max, bilinear to e4's size), [e4, NVCF] -> GAP
# -> linear. Float32 on the CPU with THREADS threads.
# Prints "median_seconds peak_rss_bytes". Usage: dual_torch.py SIZE BATCH THREADS RUNS
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resnet18_torch import ResNet18, time_step  # noqa: E402


class NAM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.theta = nn.Conv2d(c, c // 2, 1)
        self.phi = nn.Conv2d(c, c // 2, 1)
        self.g = nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q = self.theta(x).flatten(2).transpose(1, 2)
        k = self.phi(x).flatten(2)
        v = self.g(x).flatten(2).transpose(1, 2)
        att = torch.softmax(torch.bmm(q, k), dim=-1)
        y = torch.bmm(att, v).transpose(1, 2).reshape(b, c, h, w)
        return y + x


class Dual(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.backbone = ResNet18(classes)
        self.nam = NAM(64)
        self.classifier = nn.Linear(512 + 3 * 64, classes)

    def forward(self, x):
        bb = self.backbone
        e1 = bb.layer1(bb.maxpool(bb.relu(bb.bn1(bb.conv1(x)))))
        z = self.nam(e1)
        e4 = bb.layer4(bb.layer3(bb.layer2(e1)))
        size = e4.shape[-2:]
        nvcf = torch.cat([F.adaptive_avg_pool2d(z, size), F.adaptive_max_pool2d(z, size),
                          F.interpolate(z, size=size, mode='bilinear', align_corners=False)], 1)
        fused = torch.cat([e4, nvcf], 1)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(fused, 1), 1))


def main():
    size, batch, threads, runs = (int(a) for a in sys.argv[1:5])
    torch.manual_seed(0)
    seconds, peak = time_step(Dual(2), size, batch, threads, runs)
    print(f"{seconds:.4f} {peak}")


if __name__ == '__main__':
    main()
