#!/usr/bin/env python3
"""The MonkeySee pix2pix U-Net generator in PyTorch, timed on the CPU, so Burn's
forward pass can be compared side by side on the same machine.

Same architecture as src/decoder (DESIGN.md §2): stem conv 4x4 s2 + LeakyReLU 0.2,
four nested skip blocks (down conv + BN + LeakyReLU, inner, transposed conv + BN,
concat, ReLU) with widths w, 2w, 4w, 8w and an 8w bottleneck, head transposed conv
+ sigmoid. Eval mode (BatchNorm uses running statistics), batch 1.

    python3 tools/torch_unet_bench.py --width 64 --size 96 --threads 2
"""
import argparse
import statistics
import time

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, outer, inner, sub=None):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(outer, inner, 4, 2, 1), nn.BatchNorm2d(inner), nn.LeakyReLU(0.2))
        self.sub = sub
        up_in = inner if sub is None else inner * 2
        self.up = nn.Sequential(nn.ConvTranspose2d(up_in, outer, 4, 2, 1), nn.BatchNorm2d(outer))

    def forward(self, x):
        y = self.down(x)
        if self.sub is not None:
            y = self.sub(y)
        return torch.relu(torch.cat([x, self.up(y)], 1))


class UNet(nn.Module):
    def __init__(self, cin=15, w=64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(cin, w, 4, 2, 1), nn.LeakyReLU(0.2))
        inner = Block(8 * w, 8 * w)
        b3 = Block(4 * w, 8 * w, inner)
        b2 = Block(2 * w, 4 * w, b3)
        self.blocks = Block(w, 2 * w, b2)
        self.head = nn.ConvTranspose2d(2 * w, 3, 4, 2, 1)

    def forward(self, x):
        return torch.sigmoid(self.head(self.blocks(self.stem(x))))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (timed to the image back on the host, as the daemon needs it)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = UNet(15, a.width).eval().to(a.device)
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(1, 15, a.size, a.size)
    times = []
    with torch.inference_mode():
        for _ in range(10):
            model(x.to(a.device)).cpu()
        for _ in range(a.iters):
            t = time.perf_counter()
            y = model(x.to(a.device)).cpu()
            times.append((time.perf_counter() - t) * 1e3)
    assert y.shape == (1, 3, a.size, a.size)
    times.sort()
    print(
        f"pytorch {torch.__version__} {a.device} width {a.width} size {a.size} threads {a.threads} "
        f"params {params / 1e6:.2f}M: median {statistics.median(times):.2f} ms, "
        f"p10 {times[len(times) // 10]:.2f} ms, p90 {times[9 * len(times) // 10]:.2f} ms"
    )


if __name__ == "__main__":
    main()
