#!/usr/bin/env python3
"""How much a nonlinear read-out adds to a linear one, on the same features and images.

Before asking a CNN to beat the linear decoder, ask whether the responses hold anything
for it to find. This fits, on the first N training trials of a monkeysee dataset:
  - ridge: ridge regression from each channel's TW-15 window mean to the image at
    SIDE x SIDE px (the box average of the stimulus), lambda chosen on held-out trials;
  - ridge+mlp: the same ridge plus a multilayer perceptron (one hidden ReLU layer, input
    dropout, weight decay) trained on the ridge's residual with mean squared error,
    its output layer starting at zero so it starts as the ridge, the epoch with the lowest
    held-out error kept.
An MLP of the window means can represent any image prior and any nonlinear code the
responses carry (the posterior mean E[image | responses] that a squared-error loss
estimates), so if it cannot lower the held-out error of the ridge, no decoder of the same
features will beat the ridge by much at that number of images.

Inputs are z-scored per recording day (session) with the statistics of that day's training
trials, as `monkeysee train` and `eval` do; a test image's input is the mean of its repeats'
inputs. Scores on the test split: pixel r (Pearson r over the RGB pixels, averaged over
images, at SIDE px) and top-1 identification among the test images.

Reads window-means datasets (`simulate --dataset-only --form windows`: row 0 is TW-15),
time-averaged ones (`import-tvsd`: one value per trial and channel) and trial datasets
(TW-15 cut from the trial: V1 [0,133), V4 [33,166), IT [66,199) ms after onset, the
paper's windows, by each channel's area in channels.csv).

Needs numpy and torch (pip install numpy torch); uses every core torch finds.

usage: tools/readout-headroom.py DATASET_DIR [--sizes 1000,4000,22248] [--side 24]
           [--out headroom.json]
"""
import argparse
import csv
import json
import os
import sys
import time

import numpy as np
import torch

TW15_MS = {"V1": (0.0, 133.0), "V4": (33.0, 166.0), "IT": (66.0, 199.0)}
LAMBDAS = [10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0]


def tw15_means(data, meta, responses):
    """Each trial's TW-15 mean per channel, [trials, channels]."""
    if meta.get("window_means") is not None:
        return np.asarray(responses[:, 0, :], dtype=np.float64)
    if meta.get("time_averaged"):
        return np.asarray(responses[:, 0, :], dtype=np.float64)
    with open(os.path.join(data, meta["files"]["channels"])) as f:
        areas = [row["area"] for row in csv.DictReader(f)]
    rate = meta["sampling_rate_hz"] / 1000.0
    onset = meta["onset_sample"]
    out = np.zeros((responses.shape[0], responses.shape[2]))
    for area, (start, end) in TW15_MS.items():
        cols = [c for c, a in enumerate(areas) if a == area]
        a, b = onset + int(round(start * rate)), onset + int(round(end * rate))
        if b > responses.shape[1]:
            sys.exit(f"{data}: trials end {responses.shape[1] - onset} samples after onset; "
                     f"{area}'s TW-15 needs {b - onset}")
        out[:, cols] = responses[:, a:b, :][:, :, cols].mean(axis=1)
    return out


def load(data):
    with open(os.path.join(data, "dataset.json")) as f:
        meta = json.load(f)
    files = meta["files"]
    get = lambda key, default: np.load(os.path.join(data, files.get(key, default)), mmap_mode="r")
    responses = get("responses", "responses.npy")
    x = tw15_means(data, meta, responses)
    split = np.asarray(get("trial_split", "trial_split.npy"))
    image = np.asarray(get("trial_image", "trial_image.npy"))
    session_file = os.path.join(data, files.get("trial_session", "trial_session.npy"))
    session = np.load(session_file) if os.path.exists(session_file) else np.zeros(len(x), int)
    images = get("images", "images.npy")
    return x, split, image, session, images


def zscore_per_session(x, train, session):
    x = x.copy()
    for s in np.unique(session):
        fit = train[session[train] == s]
        if len(fit) < 2:
            sys.exit(f"recording day {s} has {len(fit)} training trials")
        mu, sd = x[fit].mean(0), x[fit].std(0)
        rows = session == s
        x[rows] = (x[rows] - mu) / np.where(sd > 0, sd, 1.0)
    return x


def targets(images, ids, side):
    im = np.asarray(images[ids], dtype=np.float32) / 255.0
    n, size = len(ids), im.shape[1]
    if size % side:
        sys.exit(f"--side {side} must divide the image size {size}")
    f = size // side
    return im.reshape(n, side, f, side, f, 3).mean((2, 4)).reshape(n, -1)


def pixel_r(pred, truth):
    p = pred - pred.mean(1, keepdims=True)
    t = truth - truth.mean(1, keepdims=True)
    return float(np.mean((p * t).sum(1) / np.sqrt((p * p).sum(1) * (t * t).sum(1))))


def identification(pred, truth):
    p = pred - pred.mean(1, keepdims=True)
    t = truth - truth.mean(1, keepdims=True)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    return float(np.mean((p @ t.T).argmax(1) == np.arange(len(p))))


def fit_ridge(x, y, xv, yv):
    mx, my = x.mean(0), y.mean(0)
    g, b = (x - mx).T @ (x - mx), (x - mx).T @ (y - my)
    best = None
    for lam in LAMBDAS:
        w = np.linalg.solve(g + lam * len(x) / 1000.0 * np.eye(len(g)), b)
        mse = float((((xv - mx) @ w + my - yv) ** 2).mean())
        if best is None or mse < best[0]:
            best = (mse, lam, w)
    mse, lam, w = best
    return (lambda z: (z - mx) @ w + my), lam, mse


def fit_residual_mlp(x, base, y, xv, basev, yv, args):
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)
    x, base, y, xv, basev, yv = map(t, (x, base, y, xv, basev, yv))
    torch.manual_seed(args.seed)
    net = torch.nn.Sequential(
        torch.nn.Dropout(args.dropout),
        torch.nn.Linear(x.shape[1], args.hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(args.hidden, y.shape[1]),
    )
    torch.nn.init.zeros_(net[-1].weight)
    torch.nn.init.zeros_(net[-1].bias)
    opt = torch.optim.Adam(net.parameters(), args.lr, weight_decay=args.weight_decay)
    best = (float(((basev - yv) ** 2).mean()), 0, {k: v.clone() for k, v in net.state_dict().items()})
    for epoch in range(1, args.epochs + 1):
        net.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), args.batch):
            j = perm[i : i + args.batch]
            loss = ((base[j] + net(x[j]) - y[j]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            mse = float(((basev + net(xv) - yv) ** 2).mean())
        if mse < best[0]:
            best = (mse, epoch, {k: v.clone() for k, v in net.state_dict().items()})
    net.load_state_dict(best[2])
    net.eval()

    def predict(z, zbase):
        with torch.no_grad():
            return zbase + net(t(z)).numpy()

    return predict, best[1], best[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="a monkeysee dataset folder (dataset.json)")
    ap.add_argument("--sizes", default="", help="training images, e.g. 1000,4000,22248 (default: all)")
    ap.add_argument("--side", type=int, default=24, help="image side the read-outs predict (px)")
    ap.add_argument("--validation", type=int, default=1000, help="training trials held out to choose lambda and the epoch (the last of each size, at most a fifth)")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--dropout", type=float, default=0.3, help="dropout on the MLP's inputs")
    ap.add_argument("--weight-decay", type=float, default=1e-3)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the results here as JSON")
    args = ap.parse_args()

    x, split, image, session, images = load(args.data)
    train, test = np.where(split == 0)[0], np.where(split == 1)[0]
    if len(test) == 0:
        sys.exit(f"{args.data}: no test trials (trial_split.npy has no 1)")
    x = zscore_per_session(x, train, session)
    x = x[:, x[train].std(0) > 0]  # dead channels carry nothing
    test_ids = np.unique(image[test])
    x_test = np.stack([x[test[image[test] == i]].mean(0) for i in test_ids])
    y_test = targets(images, test_ids, args.side)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [len(train)]

    print(f"{args.data}: {len(train)} training trials, {len(test_ids)} test images, "
          f"{x.shape[1]} live channels; read-outs at {args.side} px")
    print(f"{'images':>7} {'ridge r':>8} {'+mlp r':>8} {'ridge id':>9} {'+mlp id':>8} "
          f"{'val mse ridge':>14} {'+mlp':>9} {'s':>5}")
    rows = []
    for n in sizes:
        if not 10 <= n <= len(train):
            sys.exit(f"size {n}: must be 10 to {len(train)} (the dataset's training trials)")
        start = time.time()
        held = min(args.validation, n // 5)
        fit, val = train[: n - held], train[n - held : n]
        y_fit, y_val = targets(images, image[fit], args.side), targets(images, image[val], args.side)
        ridge, lam, ridge_mse = fit_ridge(x[fit], y_fit, x[val], y_val)
        mlp, epoch, mlp_mse = fit_residual_mlp(
            x[fit], ridge(x[fit]), y_fit, x[val], ridge(x[val]), y_val, args
        )
        p_ridge, p_mlp = ridge(x_test), mlp(x_test, ridge(x_test))
        row = {
            "images": n,
            "ridge": {"pixel_r": pixel_r(p_ridge, y_test), "ident_top1": identification(p_ridge, y_test),
                      "validation_mse": ridge_mse, "lambda": lam},
            "ridge_mlp": {"pixel_r": pixel_r(p_mlp, y_test), "ident_top1": identification(p_mlp, y_test),
                          "validation_mse": mlp_mse, "best_epoch": epoch},
            "seconds": time.time() - start,
        }
        rows.append(row)
        r, m = row["ridge"], row["ridge_mlp"]
        print(f"{n:>7} {r['pixel_r']:>8.3f} {m['pixel_r']:>8.3f} {r['ident_top1']:>9.2f} "
              f"{m['ident_top1']:>8.2f} {r['validation_mse']:>14.5f} {m['validation_mse']:>9.5f} "
              f"{row['seconds']:>5.0f}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"data": args.data, "side": args.side, "settings": vars(args), "sizes": rows}, f, indent=2)


if __name__ == "__main__":
    main()
