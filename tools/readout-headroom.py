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
features is likely to beat the ridge by much at that number of images. `--self-test` is
the positive control: made-up responses with and without a nonlinear code.

Inputs are z-scored per recording day (session) with the statistics of that day's training
trials, as `monkeysee train` and `eval` do; a test image's input is the mean of its repeats'
inputs. Scores on the test split: pixel r (Pearson r over the RGB pixels, averaged over
images, at SIDE px) and top-1 identification among the test images.

Reads window-means datasets (`simulate --dataset-only --form windows`: row 0 is TW-15),
time-averaged ones (`import-tvsd`: one value per trial and channel) and trial datasets
(TW-15 cut from the trial: V1 [0,133), V4 [33,166), IT [66,199) ms after onset, the
paper's windows, by each channel's area in channels.csv).

Needs numpy only (numpy's BLAS uses every core).

usage: tools/readout-headroom.py DATASET_DIR [--sizes 1000,4000,22248] [--side 24]
           [--out headroom.json]
       tools/readout-headroom.py --self-test   (the MLP finds a made-up nonlinear code)
"""
import argparse
import csv
import json
import os
import sys
import time

import numpy as np

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
    if not os.path.isfile(os.path.join(data, "dataset.json")):
        sys.exit(f"{data}: no dataset.json (give the dataset folder: simulate's or dataset's OUT/dataset)")
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
    """One hidden ReLU layer on the ridge's residual: Adam on squared error, input
    dropout, L2 weight decay (added to the gradient, as torch's Adam does), the output
    layer starting at zero, the epoch with the lowest held-out error kept (0: none
    beat the ridge)."""
    rng = np.random.default_rng(args.seed)
    f32 = lambda a: np.asarray(a, dtype=np.float32)
    x, res, xv, basev, yv = f32(x), f32(y - base), f32(xv), f32(basev), f32(yv)
    d_in, d_out, h = x.shape[1], y.shape[1], args.hidden
    bound = 1.0 / np.sqrt(d_in)
    params = [
        rng.uniform(-bound, bound, (d_in, h)).astype(np.float32),
        rng.uniform(-bound, bound, h).astype(np.float32),
        np.zeros((h, d_out), np.float32),
        np.zeros(d_out, np.float32),
    ]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    beta1, beta2, eps, step = 0.9, 0.999, 1e-8, 0

    def forward(z, w):
        hidden = np.maximum(z @ w[0] + w[1], 0.0)
        return hidden, hidden @ w[2] + w[3]

    best = (float(((basev - yv) ** 2).mean()), 0, [p.copy() for p in params])
    keep = 1.0 - args.dropout
    for epoch in range(1, args.epochs + 1):
        for idx in np.array_split(rng.permutation(len(x)), max(1, len(x) // args.batch)):
            xb = x[idx] * (rng.random((len(idx), d_in)) < keep) / keep
            hidden, out = forward(xb, params)
            g_out = 2.0 * (out - res[idx]) / out.size
            g_hidden = (g_out @ params[2].T) * (hidden > 0)
            grads = [xb.T @ g_hidden, g_hidden.sum(0), hidden.T @ g_out, g_out.sum(0)]
            step += 1
            for p, g, mm, vv in zip(params, grads, m, v):
                g = g + args.weight_decay * p
                mm *= beta1
                mm += (1 - beta1) * g
                vv *= beta2
                vv += (1 - beta2) * g * g
                p -= args.lr * (mm / (1 - beta1**step)) / (np.sqrt(vv / (1 - beta2**step)) + eps)
        mse = float(((basev + forward(xv, params)[1] - yv) ** 2).mean())
        if mse < best[0]:
            best = (mse, epoch, [p.copy() for p in params])
    weights = best[2]
    return (lambda z, zbase: zbase + forward(f32(z), weights)[1]), best[1], best[0]


def self_test(args):
    """The MLP must find a nonlinear code when there is one, and nothing when there is
    none: responses x, images y = x·A + k·relu(x·C)·B + noise, k = 1 and k = 0."""
    rng = np.random.default_rng(1)
    n, d, q, h = 5000, 100, 64, 64
    x = rng.standard_normal((n, d))
    a, c = rng.standard_normal((d, q)) / np.sqrt(d), rng.standard_normal((d, h)) / np.sqrt(d)
    b = rng.standard_normal((h, q)) / np.sqrt(h)
    ok = True
    for k, must_gain in [(1.0, True), (0.0, False)]:
        y = x @ a + k * np.maximum(x @ c, 0) @ b + 0.5 * rng.standard_normal((n, q))
        fit, val = slice(0, 4000), slice(4000, n)
        ridge, _, ridge_mse = fit_ridge(x[fit], y[fit], x[val], y[val])
        _, _, mlp_mse = fit_residual_mlp(x[fit], ridge(x[fit]), y[fit], x[val], ridge(x[val]), y[val], args)
        gain = 1.0 - mlp_mse / ridge_mse
        passed = gain > 0.1 if must_gain else gain < 0.01
        ok &= passed
        print(f"{'nonlinear' if k else 'linear'} code: held-out MSE ridge {ridge_mse:.4f}, "
              f"ridge + MLP {mlp_mse:.4f} ({gain:+.1%}; the noise alone: 0.25): "
              f"{'ok' if passed else 'FAILED'}")
    sys.exit(0 if ok else 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", nargs="?", help="a monkeysee dataset folder (dataset.json)")
    ap.add_argument("--sizes", default="", help="training images, e.g. 1000,4000,22248 (default: all)")
    ap.add_argument("--side", type=int, default=24, help="image side the read-outs predict (px)")
    ap.add_argument("--validation", type=int, default=1000, help="training trials held out to choose lambda and the epoch (the last of each size, at most a fifth)")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--dropout", type=float, default=0.1, help="dropout on the MLP's inputs")
    ap.add_argument("--weight-decay", type=float, default=1e-3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the results here as JSON")
    ap.add_argument("--self-test", action="store_true",
                    help="check on made-up data that the MLP finds a nonlinear code and adds nothing to a linear one")
    args = ap.parse_args()
    if args.self_test:
        self_test(args)
    if args.data is None:
        ap.error("give a dataset folder (or --self-test)")

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
          f"{x.shape[1]} live channels; read-outs at {args.side} px "
          f"(epoch: the MLP's best, 0 when none beat the ridge)")
    print(f"{'images':>7} {'ridge r':>8} {'+mlp r':>8} {'ridge id':>9} {'+mlp id':>8} "
          f"{'val mse ridge':>14} {'+mlp':>9} {'epoch':>6} {'s':>5}")
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
              f"{m['best_epoch']:>6} {row['seconds']:>5.0f}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"data": args.data, "side": args.side, "settings": vars(args), "sizes": rows}, f, indent=2)


if __name__ == "__main__":
    main()
