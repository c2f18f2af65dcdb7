#!/usr/bin/env python3
"""One pix2pix training step of the MonkeySee decoder in PyTorch, timed on the CPU, so
`monkeysee train`'s samples/s can be compared side by side on the same machine.

The same networks and objective as src/train (DESIGN.md §2): the U-Net generator of
tools/torch_unet_bench.py (stem conv 4x4 s2 + LeakyReLU, four nested skip blocks,
head transposed conv + sigmoid) and the conditional PatchGAN of
src/train/discriminator.rs (4x4 s2 convs of widths w, 2w, 4w, 8w, BatchNorm after all
but the first, LeakyReLU 0.2, a 3x3 conv to one logit per patch), a 50-image history
pool, D loss 0.5 (BCE(fake, 0) + BCE(real, 1)), G loss 0.01 BCE(D(x, G(x)), 1) + 0.5
L1, Adam (lr 2e-4, beta1 0.5) for both. Inputs are fixed random tensors (no data
loading is timed here, while `monkeysee train` times everything), so the comparison
favours PyTorch.

    python3 tools/torch_train_bench.py --width 16 --disc-width 16 --batch 8 --threads 2
"""
import argparse
import random
import statistics
import time

import torch
from torch import nn

from torch_unet_bench import UNet


class PatchGan(nn.Module):
    def __init__(self, cin, w):
        super().__init__()
        layers, prev = [], cin
        for i, width in enumerate([w, 2 * w, 4 * w, 8 * w]):
            layers.append(nn.Conv2d(prev, width, 4, 2, 1, bias=i == 0))
            if i > 0:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2))
            prev = width
        layers.append(nn.Conv2d(prev, 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def init_pix2pix(model):
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Pool:
    def __init__(self, size):
        self.size, self.items = size, []

    def query(self, batch):
        out = []
        for item in batch:
            item = item.unsqueeze(0)
            if len(self.items) < self.size:
                self.items.append(item)
                out.append(item)
            elif random.random() < 0.5:
                j = random.randrange(self.size)
                out.append(self.items[j].clone())
                self.items[j] = item
            else:
                out.append(item)
        return torch.cat(out, 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--disc-width", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--in-channels", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    random.seed(0)
    g = UNet(a.in_channels, a.width)
    d = PatchGan(a.in_channels + 3, a.disc_width)
    init_pix2pix(g)
    init_pix2pix(d)
    g.train()
    d.train()
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    pool = Pool(50)
    x = torch.randn(a.batch, a.in_channels, a.size, a.size)
    y = torch.rand(a.batch, 3, a.size, a.size)

    def step():
        fake = g(x)
        d_real = d(torch.cat([x, y], 1))
        d_fake = d(pool.query(torch.cat([x, fake.detach()], 1)))
        loss_d = 0.5 * (bce(d_fake, torch.zeros_like(d_fake)) + bce(d_real, torch.ones_like(d_real)))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        d_g = d(torch.cat([x, fake], 1))
        loss_g = 0.01 * bce(d_g, torch.ones_like(d_g)) + 0.5 * (fake - y).abs().mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

    for _ in range(5):
        step()
    times = []
    for _ in range(a.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    print(
        f"pytorch {torch.__version__} threads {a.threads} width {a.width} disc-width {a.disc_width} "
        f"batch {a.batch} size {a.size}: {a.batch / med:.1f} samples/s "
        f"(median step {med * 1e3:.1f} ms over {a.steps})"
    )


if __name__ == "__main__":
    main()
