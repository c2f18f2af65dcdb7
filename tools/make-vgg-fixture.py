#!/usr/bin/env python3
"""Writes tests/fixtures/vgg19-tiny/: reduced-width VGG19 state dicts saved by
torchvision + torch exactly as the real vgg19-dcbb9e9d.pth is laid out, and torch's
reference values of the perceptual loss, for the tests of src/train/vgg.rs.

The real file (548 MB) cannot be downloaded here and would not belong in the repo;
the tiny network keeps every key, shape rule and file format of it, only narrower.

With --reference FILE.pth OUT it instead writes torch's reference values for a real
VGG19 file (e.g. vgg19-dcbb9e9d.pth) at the paper's 224 px into OUT, for
    MONKEYSEE_VGG19_REF=OUT cargo test --release --test tests vgg19_file_matches_torch -- --ignored

Needs torch and torchvision (pip install torch torchvision). Run from the repo root:
    python3 tools/make-vgg-fixture.py [--reference FILE.pth OUT]
"""
import os
import sys

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
SIZE = 32  # the loss size of the fixture (224 in the paper, and with --reference)


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


def write_reference(vgg, out, side):
    """Two batches of images, torch's five taps of the first, the loss and its gradient."""
    g = torch.Generator().manual_seed(5)
    fake = torch.rand(2, 3, side, side, generator=g, requires_grad=True)
    real = torch.rand(2, 3, side, side, generator=g)
    a = taps(vgg.features, fake)
    b = taps(vgg.features, real)
    loss = sum((x - y).abs().mean() for x, y in zip(a, b)) / len(a)
    loss.backward()
    np.save(f"{out}/fake.npy", fake.detach().numpy())
    np.save(f"{out}/real.npy", real.numpy())
    for name, t in zip(TAPS, a):
        np.save(f"{out}/tap-{name}.npy", t.detach().numpy())
    np.save(f"{out}/loss.npy", np.array([loss.item()], dtype=np.float32))
    np.save(f"{out}/grad.npy", fake.grad.numpy())
    return loss.item()


def reference(path, out):
    global SIZE
    SIZE = 224
    from torchvision.models import vgg19
    vgg = vgg19()
    vgg.load_state_dict(torch.load(path, map_location="cpu"))
    os.makedirs(out, exist_ok=True)
    loss = write_reference(vgg.eval(), out, 96)
    with open(f"{out}/weights.txt", "w") as f:
        f.write(os.path.abspath(path))
    print(f"wrote {out}: loss {loss:.6f} at {SIZE} px for {path}")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--reference":
        return reference(sys.argv[2], sys.argv[3])
    torch.manual_seed(19)
    os.makedirs(OUT, exist_ok=True)
    vgg19 = tiny(CFG_E)
    state = vgg19.state_dict()
    # The real vgg19-dcbb9e9d.pth predates torch's zip format: write both.
    torch.save(state, f"{OUT}/vgg19-tiny-legacy.pth", _use_new_zipfile_serialization=False)
    torch.save(state, f"{OUT}/vgg19-tiny.pth")
    torch.save(tiny(CFG_D).state_dict(), f"{OUT}/vgg16-tiny.pth")
    # A training checkpoint rather than a state dict: refused, naming its keys.
    torch.save({"epoch": 3, "model": state}, f"{OUT}/checkpoint-tiny.pth")

    loss = write_reference(vgg19, OUT, 24)
    print(f"wrote {OUT}: loss {loss:.6f}")


if __name__ == "__main__":
    main()
