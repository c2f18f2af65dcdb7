#!/usr/bin/env python3
"""Writes tests/fixtures/alexnet-tiny/: a reduced-width AlexNet state dict saved by
torchvision + torch exactly as the real alexnet-owt-7be5be79.pth is laid out, test
images and reconstructions, and torch's reference values of the AlexNet feature
correlation (MonkeySee, Table 1), for the tests of src/alexnet.rs.

The layers are read where the MonkeySee authors' analysis notebook reads them
(neuralcodinglab/IRFA, analysis/quantification.ipynb): torchvision's `features[:3]`,
`features[:6]`, `features[:7]`, `features[:9]`, `features[:13]` for conv1...conv5 and
`classifier[:3]`, `classifier[:5]`, `classifier` on the flattened adaptive average pool
for fc6...fc8; the correlation is one Pearson r over all images' flattened features
(scipy.stats.pearsonr of `fs.flatten()`), the distance the mean squared difference.

The real file (233 MB) cannot be downloaded here and would not belong in the repo; the
tiny network keeps every key, shape rule and file format of it, only narrower.

With --reference FILE.pth OUT it instead writes torch's reference values for a real
AlexNet file (e.g. alexnet-owt-7be5be79.pth) at the paper's 224 px into OUT, for
    MONKEYSEE_ALEXNET_REF=OUT cargo test --release --test tests alexnet_file_matches_torch -- --ignored

Needs torch and torchvision (pip install torch torchvision). Run from the repo root:
    python3 tools/make-alexnet-fixture.py [--reference FILE.pth OUT]
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import AlexNet

OUT = "tests/fixtures/alexnet-tiny"
CONV = [4, 8, 8, 8, 8]
FC = [16, 16, 10]
LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
# The authors' slices: how many modules of `features` / `classifier` each layer runs.
FEATURES_END = {"conv1": 3, "conv2": 6, "conv3": 7, "conv4": 9, "conv5": 13}
CLASSIFIER_END = {"fc6": 3, "fc7": 5, "fc8": 7}
# Activation sides checked one by one: conv5's pooled map is 1 px (the adaptive pool
# replicates it), 4 px (windows of one and two pixels) and 6 px (the identity, the
# real network's 224 px).
SIZES = [64, 160, 224]
SIDE = 20  # the images' own side (96 px in MonkeySee)
N_IMAGES = 10  # over one batch of 8: the correlation pools across batches
N_ACTIVATIONS = 2  # images whose activations are stored


def tiny():
    """torchvision's AlexNet with every width replaced, the same keys and layout."""
    model = AlexNet(num_classes=FC[2])
    c = [3] + CONV
    model.features = nn.Sequential(
        nn.Conv2d(c[0], c[1], kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c[1], c[2], kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c[2], c[3], kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c[3], c[4], kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c[4], c[5], kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    model.classifier = nn.Sequential(
        nn.Dropout(),
        nn.Linear(CONV[4] * 6 * 6, FC[0]),
        nn.ReLU(inplace=True),
        nn.Dropout(),
        nn.Linear(FC[0], FC[1]),
        nn.ReLU(inplace=True),
        nn.Linear(FC[1], FC[2]),
    )
    # torch's default init shrinks the signal layer by layer until the biases alone
    # make fc7 and fc8 (r = 1.0000 for any pair of images): keep its scale instead.
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.uniform_(m.bias, -0.1, 0.1)
    return model.eval()


def prepare(x, size):
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    h = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (h - mean) / std


@torch.no_grad()
def layers(model, x, size):
    """The eight layers as the authors' notebook slices them, each `[n, features]`."""
    h = prepare(x, size)
    out = {}
    for name, end in FEATURES_END.items():
        out[name] = model.features[:end](h).flatten(1).clone()
    pooled = torch.flatten(model.avgpool(model.features(h)), 1)
    for name, end in CLASSIFIER_END.items():
        out[name] = model.classifier[:end](pooled).flatten(1).clone()
    return [out[name] for name in LAYERS]


def correlations(model, recons, originals, size):
    """Per layer: pearsonr over all images' features concatenated, and the MSE."""
    a = layers(model, recons, size)
    b = layers(model, originals, size)
    result = []
    for name, fa, fb in zip(LAYERS, a, b):
        fa = fa.double().flatten().numpy()
        fb = fb.double().flatten().numpy()
        r = float(np.corrcoef(fa, fb)[0, 1])
        mse = float(np.mean((fa - fb) ** 2))
        result.append({"layer": name, "r": r, "mse": mse})
    return result


def images(n, side):
    """Smooth random originals, and reconstructions that are blurred, noisy copies."""
    g = torch.Generator().manual_seed(7)
    coarse = torch.rand(n, 3, 5, 5, generator=g)
    originals = F.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    originals = (originals + 0.15 * torch.rand(n, 3, side, side, generator=g)).clamp(0, 1)
    blurred = F.avg_pool2d(originals, 3, stride=1, padding=1, count_include_pad=False)
    recons = (0.7 * blurred + 0.3 * torch.rand(n, 3, side, side, generator=g)).clamp(0, 1)
    return recons.contiguous(), originals.contiguous()


def write_reference(model, out, side, sizes):
    recons, originals = images(N_IMAGES, side)
    np.save(f"{out}/recons.npy", recons.numpy())
    np.save(f"{out}/originals.npy", originals.numpy())
    for size in sizes:
        for name, t in zip(LAYERS, layers(model, originals[:N_ACTIVATIONS], size)):
            np.save(f"{out}/act-{size}-{name}.npy", t.numpy())
    corr = correlations(model, recons, originals, 224)
    with open(f"{out}/correlations.json", "w") as f:
        json.dump({"input_size": 224, "layers": corr}, f, indent=1)
        f.write("\n")
    return corr


def reference(path, out):
    from torchvision.models import alexnet
    model = alexnet()
    model.load_state_dict(torch.load(path, map_location="cpu"))
    os.makedirs(out, exist_ok=True)
    corr = write_reference(model.eval(), out, 96, [224])
    with open(f"{out}/weights.txt", "w") as f:
        f.write(os.path.abspath(path))
    print(f"wrote {out} for {path}: " + ", ".join(f"{c['layer']} r={c['r']:.4f}" for c in corr))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--reference":
        return reference(sys.argv[2], sys.argv[3])
    torch.manual_seed(8)
    os.makedirs(OUT, exist_ok=True)
    model = tiny()
    state = model.state_dict()
    # The first torchvision AlexNet file predates torch's zip format: write both.
    torch.save(state, f"{OUT}/alexnet-tiny-legacy.pth", _use_new_zipfile_serialization=False)
    torch.save(state, f"{OUT}/alexnet-tiny.pth")
    corr = write_reference(model, OUT, SIDE, SIZES)
    print(f"wrote {OUT}: " + ", ".join(f"{c['layer']} r={c['r']:.4f}" for c in corr))


if __name__ == "__main__":
    main()
