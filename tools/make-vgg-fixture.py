#!/usr/bin/env python3
"""Writes tests/fixtures/vgg19-tiny/: reduced-width VGG19 state dicts saved by
torchvision + torch exactly as the real vgg19-dcbb9e9d.pth is laid out, and torch's
reference values of the perceptual loss, for the tests of src/train/vgg.rs.

The real file (548 MB) cannot be downloaded here and would not belong in the repo;
the tiny network keeps every key, shape rule and file format of it, only narrower.

Needs torch and torchvision (pip install torch torchvision). Run from the repo root:
    python3 tools/make-vgg-fixture.py
"""
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vgg import VGG, make_layers

OUT = "tests/fixtures/vgg19-tiny"
WIDTHS = [4, 8, 8, 16, 16]
# VGG19 (configuration "E") with every width replaced.
CFG_E = [WIDTHS[0]] * 2 + ["M"] + [WIDTHS[1]] * 2 + ["M"] + [WIDTHS[2]] * 4 + ["M"] \
    + [WIDTHS[3]] * 4 + ["M"] + [WIDTHS[4]] * 4 + ["M"]
# VGG16 (configuration "D"): the loader must refuse it.
CFG_D = [WIDTHS[0]] * 2 + ["M"] + [WIDTHS[1]] * 2 + ["M"] + [WIDTHS[2]] * 3 + ["M"] \
    + [WIDTHS[3]] * 3 + ["M"] + [WIDTHS[4]] * 3 + ["M"]
TAPS = {"conv2_2": 7, "conv3_3": 14, "conv4_2": 21, "conv5_1": 28, "conv5_4": 34}
SIZE = 32  # the loss size of the fixture (224 in the paper)


def tiny(cfg):
    model = VGG(make_layers(cfg), num_classes=10, init_weights=True)
    # torchvision's classifier expects 512·7·7 inputs; keep its keys, not its size.
    model.classifier = nn.Sequential(
        nn.Linear(WIDTHS[4], 8), nn.ReLU(True), nn.Dropout(),
        nn.Linear(8, 8), nn.ReLU(True), nn.Dropout(), nn.Linear(8, 10))
    for m in model.features:
        if isinstance(m, nn.Conv2d):
            nn.init.uniform_(m.bias, -0.1, 0.1)  # torchvision zeroes them: test them too
    return model.eval()


def taps(features, x):
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    h = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    h = (h - mean) / std
    out = []
    for i, layer in enumerate(features):
        h = layer(h)
        if i in TAPS.values():
            out.append(h.clone())  # the next ReLU is in place
        if i == max(TAPS.values()):
            break
    return out


def main():
    torch.manual_seed(19)
    os.makedirs(OUT, exist_ok=True)
    vgg19 = tiny(CFG_E)
    state = vgg19.state_dict()
    # The real vgg19-dcbb9e9d.pth predates torch's zip format: write both.
    torch.save(state, f"{OUT}/vgg19-tiny-legacy.pth", _use_new_zipfile_serialization=False)
    torch.save(state, f"{OUT}/vgg19-tiny.pth")
    torch.save(tiny(CFG_D).state_dict(), f"{OUT}/vgg16-tiny.pth")

    g = torch.Generator().manual_seed(5)
    fake = torch.rand(2, 3, 24, 24, generator=g, requires_grad=True)
    real = torch.rand(2, 3, 24, 24, generator=g)
    a = taps(vgg19.features, fake)
    b = taps(vgg19.features, real)
    loss = sum((x - y).abs().mean() for x, y in zip(a, b)) / len(a)
    loss.backward()
    np.save(f"{OUT}/fake.npy", fake.detach().numpy())
    np.save(f"{OUT}/real.npy", real.numpy())
    for name, t in zip(TAPS, a):
        np.save(f"{OUT}/tap-{name}.npy", t.detach().numpy())
    np.save(f"{OUT}/loss.npy", np.array([loss.item()], dtype=np.float32))
    np.save(f"{OUT}/grad.npy", fake.grad.numpy())
    print(f"wrote {OUT}: loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
