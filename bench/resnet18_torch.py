#!/usr/bin/env python3
# bench/resnet18_torch.py: the PyTorch twin of bench/resnet18.lua: one training step
# (forward, cross-entropy, backward, Adam) of ResNet18 (torchvision's structure, 2
# classes) at SIZE x SIZE, batch BATCH, float32 on the CPU with THREADS threads.
# Prints "median_seconds peak_rss_bytes". Usage: resnet18_torch.py SIZE BATCH THREADS RUNS
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn


class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


class ResNet18(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, inplanes = [], 64
        for stage, planes in enumerate([64, 128, 256, 512]):
            blocks = []
            for i in range(2):
                blocks.append(BasicBlock(inplanes, planes, 2 if (i == 0 and stage > 0) else 1))
                inplanes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def time_step(model, size, batch, threads, runs):
    """Median seconds of one training step (forward, cross-entropy, backward, Adam) after
    two warm-ups, and the process's peak RSS in bytes."""
    torch.set_num_threads(threads)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 2, (batch,))
    times = []
    for i in range(runs + 2):
        start = time.perf_counter()
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main():
    size, batch, threads, runs = (int(a) for a in sys.argv[1:5])
    torch.manual_seed(0)
    seconds, peak = time_step(ResNet18(2), size, batch, threads, runs)
    print(f"{seconds:.4f} {peak}")


if __name__ == '__main__':
    main()
