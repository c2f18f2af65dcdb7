#!/usr/bin/env python3
"""Writes a small THINGS Ventral Stream Spiking Dataset (TVSD; Papale et al., Neuron
2025) in the exact layout of the published files, for the tests of src/tvsd.rs and
`monkeysee import-tvsd`.

    OUT/THINGS_MUA_trials.mat                    ALLMUA, ALLMAT, tb
    OUT/THINGS_normMUA.mat                       train_MUA, test_MUA, test_MUA_reps, SNR, ...
    OUT/_logs/things_imgs.mat                    train_imgs.things_path, test_imgs.things_path
    OUT/_logs/1024chns_mapping_20220105.mat      mapping (named so whatever the channel count)
    OUT/images/<things_path>                     one tiny PNG per image
    OUT/fixture.json                             the parameters, the 0-based mapping, every path

The layout follows the dataset's own code (_code/norm_MUA.m) and the loaders people
published for it (h5py): MATLAB v7.3 files are HDF5 with a 512-byte user block holding MATLAB's text
header; MATLAB writes arrays column-major, so each HDF5 shape is the MATLAB shape reversed:

    ALLMUA        MATLAB [electrode x trial x time]   HDF5 (time, trial, channel)
    ALLMAT        MATLAB [trial x 6]                  HDF5 (6, trial); columns
                  #trial #train_pic #test_pic #pic_rep #ncount #day (1-based; 0 = not that kind)
                  (--allmat-columns 7 inserts `correct` before #day)
    tb            MATLAB [1 x time] in ms             HDF5 (time, 1)
    train_MUA     MATLAB [electrode x train image]    HDF5 (train image, electrode)
    test_MUA      MATLAB [electrode x test image]     HDF5 (test image, electrode)
    test_MUA_reps MATLAB [electrode x test x rep]     HDF5 (rep, test image, electrode)
    SNR, lats     MATLAB [electrode x day]            HDF5 (day, electrode)
    reliab        MATLAB [electrode x rep pairs]      HDF5 (rep pairs, electrode)
    oracle        MATLAB [1 x electrode]              HDF5 (electrode, 1)
    things_path   MATLAB 1 x n cell of char           HDF5 (n, 1) object references into #refs#

The mapping file is written as MAT v5 (what MATLAB's default `save` writes; those loaders
read it with scipy.io.loadmat, which reads no v7.3), compressed unless asked otherwise;
--mapping-format v73 writes it as HDF5 instead.

Values are formulas of their indices, exactly representable in float32, so a test can
check every element after the reader's transposition and channel reordering:

    ALLMUA of electrode e, trial i (0-based), time sample t:
        ((i*T + t)*C + e) mod 2^22 / 2 - 1024      stored at headstage channel mapping[e]
    ALLMAT row of trial i (0-based): trial i+1; every 4th trial (i % 4 == 3) is a test
        trial: test trial k (0-based) shows test image k % n_test + 1, repetition
        k // n_test + 1; train trial j (0-based) shows train image n_train - j; ncount
        i % 3 + 1; correct (7 columns) 0 when i % 5 == 4, else 1; day 1 + i*days // n.
    train_MUA of train image j, electrode e (0-based):  j*C + e + 0.25
    test_MUA of test image k, electrode e:             -(k*C + e) - 0.5
    test_MUA_reps of test image k, repetition r, electrode e:  (k*R + r)*C + e + 0.125
    SNR of electrode e, day d:  e + d/4 (the mean over days: e + (days-1)/8)
    lats: 40 + e + d;  reliab of electrode e, pair p: e/1024 + p/8;  oracle: e/2048
    image paths: train image j is "concept{j//3}/concept{j//3}_{j%3:02}b.<ext>",
        test image k is "testconcept{k}/testconcept{k}_01s.<ext>"; train image 1 (if
        there are 2 or more) is written with Windows separators and a non-ASCII
        character ("crème{..}\\crème{..}_01b.<ext>"), as MATLAB on Windows might.
    The channel mapping (a permutation) and the image pixel colours come from --seed.

--broken KIND writes one damaged variant for the error tests (the rest stays valid):
    missing-allmat, missing-allmua, allmua-rank, allmat-columns, allmat-trials,
    allmat-fraction, mapping-duplicate, mapping-length, missing-things-path,
    bad-reference, missing-train-mua, truncated (THINGS_MUA_trials.mat cut short),
    corrupt-chunk (the deflate stream of ALLMUA's second chunk overwritten: the file
    opens, reading the trials in that chunk fails);
--broken all writes every one of them, each into OUT/<kind>/.

Needs numpy and h5py (pip install numpy h5py). Example:
    python3 tools/make-tvsd-fixture.py OUT --channels 16 --trials 37 --dtype float64
"""
import argparse
import json
import os
import struct
import sys
import zlib

import h5py
import numpy as np

BROKEN = [
    "missing-allmat", "missing-allmua", "allmua-rank", "allmat-columns", "allmat-trials",
    "allmat-fraction", "mapping-duplicate", "mapping-length", "missing-things-path",
    "bad-reference", "missing-train-mua", "truncated", "corrupt-chunk",
]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder to write the fixture into (created)")
    p.add_argument("--channels", type=int, default=16, help="electrodes (1024 in TVSD)")
    p.add_argument("--time", type=int, default=12, help="samples per trial (300 in TVSD)")
    p.add_argument("--trials", type=int, default=37, help="trials in ALLMUA")
    p.add_argument("--test-images", type=int, default=3, help="test images (100 in TVSD)")
    p.add_argument("--reps", type=int, default=3, help="test repetitions in test_MUA_reps")
    p.add_argument("--days", type=int, default=2, help="recording days")
    p.add_argument("--seed", type=int, default=1, help="seeds the mapping and the pixels")
    p.add_argument("--allmat-columns", type=int, choices=[6, 7], default=6)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="ALLMUA's type (MATLAB single or double)")
    p.add_argument("--chunk-trials", type=int, default=3,
                   help="trials per ALLMUA chunk; chunks are (time, this, channels)")
    p.add_argument("--compression", type=int, default=3, help="deflate level, 0 = none")
    p.add_argument("--no-tb", action="store_true", help="leave out the time base tb")
    p.add_argument("--mapping-format", choices=["v5", "v5-uncompressed", "v73"],
                   default="v5")
    p.add_argument("--mapping-shape", choices=["row", "column"], default="row",
                   help="MATLAB [1 x n] (row) or [n x 1] (column)")
    p.add_argument("--norm-orientation", choices=["matlab", "transposed"], default="matlab",
                   help="train_MUA/test_MUA as norm_MUA.m saves them (HDF5 (image, "
                        "electrode)) or transposed (HDF5 (electrode, image))")
    p.add_argument("--image-ext", default="jpg",
                   help="extension in things_path (TVSD's are jpg; the bytes are PNG "
                        "whatever it says, so read them with format sniffing)")
    p.add_argument("--image-size", type=int, default=8, help="image side in pixels")
    p.add_argument("--no-images", action="store_true", help="write no image files")
    p.add_argument("--noise", action="store_true",
                   help="ALLMUA is seeded Gaussian noise instead of the formula (for "
                        "throughput measurements: it compresses like real MUA)")
    p.add_argument("--broken", choices=BROKEN + ["all"],
                   help="write this damaged variant (all: each into OUT/<kind>/)")
    a = p.parse_args()
    if min(a.channels, a.time, a.trials, a.test_images, a.reps, a.days, a.chunk_trials) < 1:
        p.error("every size must be at least 1")
    return a


# ---------------------------------------------------------------- MATLAB v7.3 (HDF5)

def mat73_header():
    text = ("MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Wed Jan  5 12:00:00 2022 "
            "HDF5 schema 1.00 .").encode("ascii")
    header = text.ljust(116, b" ") + b" " * 8 + struct.pack("<H", 0x0200) + b"IM"
    return header.ljust(512, b"\0")


def create_mat73(path):
    """An HDF5 file as MATLAB's save -v7.3 makes it: a 512-byte user block, old format."""
    f = h5py.File(path, "w", userblock_size=512, libver=("earliest", "v108"))
    return f


def finish_mat73(path):
    with open(path, "r+b") as fh:
        fh.write(mat73_header())


def set_class(obj, cls):
    obj.attrs.create("MATLAB_class", np.bytes_(cls))


def matlab_dataset(group, name, data, cls, chunks=None, compression=3):
    """A numeric variable, chunked and deflated when big enough (as MATLAB does)."""
    kw = {}
    if chunks is not None or data.size >= 64:
        kw["chunks"] = chunks if chunks is not None else True
        if compression:
            kw["compression"] = "gzip"
            kw["compression_opts"] = compression
    ds = group.create_dataset(name, data=data, **kw)
    set_class(ds, cls)
    return ds


class Refs:
    """MATLAB's #refs# group: every cell element is a dataset there, named a, b, ..."""

    def __init__(self, f):
        self.group = f.create_group("#refs#")
        self.n = 0
        # MATLAB's first entry: an empty placeholder.
        empty = self.group.create_dataset(self.next_name(), data=np.zeros(2, np.uint64))
        set_class(empty, "canonical empty")
        empty.attrs.create("MATLAB_empty", np.uint8(1))

    def next_name(self):
        n, name = self.n, ""
        while True:
            name = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[n % 52] + name
            n = n // 52 - 1
            if n < 0:
                break
        self.n += 1
        return name

    def char(self, text):
        codes = np.frombuffer(text.encode("utf-16-le"), dtype="<u2")
        ds = self.group.create_dataset(self.next_name(), data=codes.reshape(-1, 1))
        set_class(ds, "char")
        ds.attrs.create("MATLAB_int_decode", np.int32(2))
        return ds.ref


def cellstr(group, name, refs, texts):
    """A MATLAB 1 x n cell array of char: HDF5 (n, 1) object references."""
    data = np.array([[refs.char(t)] for t in texts], dtype=h5py.ref_dtype)
    ds = group.create_dataset(name, data=data.reshape(len(texts), 1))
    set_class(ds, "cell")
    return ds


# ---------------------------------------------------------------- MAT v5

MI_INT8, MI_UINT8, MI_INT32, MI_UINT32, MI_DOUBLE, MI_MATRIX, MI_COMPRESSED = 1, 2, 5, 6, 9, 14, 15
MX_DOUBLE = 6


def v5_element(mtype, payload):
    if len(payload) <= 4 and mtype != MI_MATRIX:  # small data element
        return struct.pack("<HH", mtype, len(payload)) + payload.ljust(4, b"\0")
    pad = (-len(payload)) % 8
    return struct.pack("<II", mtype, len(payload)) + payload + b"\0" * pad


def write_mat_v5(path, name, array, compress):
    """One real double variable in a MAT v5 file, as MATLAB's default save writes it.

    MATLAB stores a double array whose values fit a smaller integer type as that type
    (here uint16 when they fit), which a reader must convert back."""
    dims = array.shape
    values = np.asarray(array, dtype=np.float64).flatten(order="F")
    if values.size and np.all(values == np.round(values)) and values.min() >= 0 \
            and values.max() < 65536:
        real = v5_element(4, values.astype("<u2").tobytes())  # miUINT16
    else:
        real = v5_element(MI_DOUBLE, values.astype("<f8").tobytes())
    body = (v5_element(MI_UINT32, struct.pack("<II", MX_DOUBLE, 0))
            + v5_element(MI_INT32, struct.pack("<" + "i" * len(dims), *dims))
            + v5_element(MI_INT8, name.encode("ascii"))
            + real)
    matrix = struct.pack("<II", MI_MATRIX, len(body)) + body
    text = b"MATLAB 5.0 MAT-file, Platform: PCWIN64, Created on: Wed Jan  5 12:00:00 2022"
    header = text.ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    with open(path, "wb") as fh:
        fh.write(header)
        if compress:
            packed = zlib.compress(matrix)
            fh.write(struct.pack("<II", MI_COMPRESSED, len(packed)) + packed)
        else:
            fh.write(matrix)


# ---------------------------------------------------------------- PNG

def write_png(path, rgb):
    """A minimal 8-bit RGB PNG (zlib + struct only)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\0" + rgb[y].astype(np.uint8).tobytes() for y in range(h))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    png = (b"\x89PNG\r\n\x1a\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw))
           + chunk(b"IEND", b""))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(png)


# ---------------------------------------------------------------- the dataset

def allmat_rows(n, n_test, days, columns):
    """ALLMAT as MATLAB holds it: [trial x columns], float64."""
    rows = []
    k = j = 0
    n_train = sum(1 for i in range(n) if i % 4 != 3)
    for i in range(n):
        if i % 4 == 3:
            train, test, rep = 0, k % n_test + 1, k // n_test + 1
            k += 1
        else:
            train, test, rep = n_train - j, 0, 1
            j += 1
        row = [i + 1, train, test, rep, i % 3 + 1]
        if columns == 7:
            row.append(0 if i % 5 == 4 else 1)
        row.append(1 + i * days // n)
        rows.append(row)
    return np.array(rows, dtype=np.float64), n_train


def allmua_block(first, count, a, mapping):
    """ALLMUA[:, first:first+count, :] in HDF5 order (time, trial, headstage channel)."""
    t = np.arange(a.time, dtype=np.int64).reshape(a.time, 1, 1)
    i = np.arange(first, first + count, dtype=np.int64).reshape(1, count, 1)
    e = np.arange(a.channels, dtype=np.int64).reshape(1, 1, a.channels)
    idx = ((i * a.time + t) * a.channels + e) % (1 << 22)
    electrode_order = idx.astype(np.float64) / 2 - 1024
    stored = np.empty_like(electrode_order)
    stored[:, :, mapping] = electrode_order  # electrode e lives on headstage mapping[e]
    return stored.astype(a.dtype)


def image_paths(n_train, n_test, ext):
    train = [f"concept{j // 3}/concept{j // 3}_{j % 3:02}b.{ext}" for j in range(n_train)]
    if n_train >= 2:
        train[1] = f"crème{1 // 3}\\crème{1 // 3}_01b.{ext}"
    test = [f"testconcept{k}/testconcept{k}_01s.{ext}" for k in range(n_test)]
    return train, test


def write_trials(path, a, mapping, broken):
    rows, n_train = allmat_rows(a.trials, a.test_images, a.days, a.allmat_columns)
    f = create_mat73(path)
    n_mua = a.trials - 1 if broken == "allmat-trials" else a.trials
    if broken == "allmua-rank":
        data = allmua_block(0, a.trials, a, mapping)
        matlab_dataset(f, "ALLMUA", data.reshape(a.time, -1), "single")
    elif broken != "missing-allmua":
        chunk = (a.time, min(a.chunk_trials, n_mua), a.channels)
        kw = {"chunks": chunk}
        if a.compression:
            kw.update(compression="gzip", compression_opts=a.compression)
        ds = f.create_dataset("ALLMUA", shape=(a.time, n_mua, a.channels), dtype=a.dtype, **kw)
        set_class(ds, "single" if a.dtype == "float32" else "double")
        rng = np.random.default_rng(a.seed + 1)
        block = max(1, (64 << 20) // (a.time * a.channels * 8))
        for first in range(0, n_mua, block):
            count = min(block, n_mua - first)
            if a.noise:
                data = rng.standard_normal((a.time, count, a.channels)).astype(a.dtype)
            else:
                data = allmua_block(first, count, a, mapping)
            ds[:, first:first + count, :] = data
    if broken == "allmat-columns":
        rows = rows[:, :5]
    if broken == "allmat-fraction":
        rows[min(2, a.trials - 1), 1] = 2.5
    if broken != "missing-allmat":
        matlab_dataset(f, "ALLMAT", rows.T.copy(), "double")  # HDF5 (columns, trials)
    if not a.no_tb:
        tb = (np.arange(a.time, dtype=np.float64) - 100).reshape(a.time, 1)
        matlab_dataset(f, "tb", tb, "double")
    f.close()
    finish_mat73(path)
    if broken == "corrupt-chunk":
        with h5py.File(path, "r") as f:
            info = f["ALLMUA"].id.get_chunk_info(min(1, f["ALLMUA"].id.get_num_chunks() - 1))
        with open(path, "r+b") as fh:
            fh.seek(info.byte_offset)
            fh.write(b"\xff" * min(16, info.size))
    if broken == "truncated":
        size = os.path.getsize(path)
        with open(path, "r+b") as fh:
            fh.truncate(max(1024, size // 2))
    return n_train


def write_mapping(path, a, mapping, broken):
    one_based = mapping.astype(np.float64) + 1
    if broken == "mapping-duplicate" and a.channels >= 3:
        one_based[2] = one_based[0]  # value mapping[0]+1 twice, mapping[2]+1 missing
    if broken == "mapping-length":
        one_based = one_based[one_based != a.channels]  # a permutation of one channel fewer
    shape = (1, one_based.size) if a.mapping_shape == "row" else (one_based.size, 1)
    matlab = one_based.reshape(shape)
    if a.mapping_format == "v73":
        f = create_mat73(path)
        matlab_dataset(f, "mapping", matlab.T.copy(), "double")
        f.close()
        finish_mat73(path)
    else:
        write_mat_v5(path, "mapping", matlab, compress=a.mapping_format == "v5")


def write_images(path, train, test, broken):
    f = create_mat73(path)
    refs = Refs(f)
    for name, paths in (("train_imgs", train), ("test_imgs", test)):
        g = f.create_group(name)
        set_class(g, "struct")
        cellstr(g, "class", refs, [p.replace("\\", "/").split("/")[0] for p in paths])
        if not (broken == "missing-things-path" and name == "test_imgs"):
            ds = cellstr(g, "things_path", refs, paths)
            if broken == "bad-reference" and name == "train_imgs":
                data = ds[()]
                data[0, 0] = g.ref  # a reference to a group, not a char array
                ds[...] = data
        cellstr(g, "local_path", refs, ["C:\\THINGS\\object_images\\" + p for p in paths])
    f.close()
    finish_mat73(path)


def write_norm(path, a, n_train, broken):
    C, R, D, T = a.channels, a.reps, a.days, a.test_images
    e = np.arange(C, dtype=np.float64)
    train = np.arange(n_train, dtype=np.float64)[:, None] * C + e + 0.25  # (image, electrode)
    test = -(np.arange(T, dtype=np.float64)[:, None] * C + e) - 0.5
    kr = np.arange(T)[None, :, None] * R + np.arange(R)[:, None, None]
    reps = kr.astype(np.float64) * C + e + 0.125  # (rep, test image, electrode)
    days = np.arange(D, dtype=np.float64)[:, None]
    pairs = R * (R - 1) // 2 if R > 1 else 1
    f = create_mat73(path)
    if a.norm_orientation == "transposed":
        train, test = train.T.copy(), test.T.copy()
    if broken != "missing-train-mua":
        matlab_dataset(f, "train_MUA", train, "double")
    matlab_dataset(f, "test_MUA", test, "double")
    matlab_dataset(f, "test_MUA_reps", reps, "double")
    matlab_dataset(f, "SNR", e + days / 4, "double")
    matlab_dataset(f, "SNR_max", (e + 1).reshape(C, 1), "double")
    matlab_dataset(f, "lats", 40 + e + days, "double")
    matlab_dataset(f, "reliab", e / 1024 + np.arange(pairs, dtype=np.float64)[:, None] / 8,
                   "double")
    matlab_dataset(f, "oracle", (e / 2048).reshape(C, 1), "double")
    matlab_dataset(f, "tb", (np.arange(a.time, dtype=np.float64) - 100).reshape(-1, 1),
                   "double")
    f.close()
    finish_mat73(path)


def write_fixture(out, a, broken):
    rng = np.random.default_rng(a.seed)
    mapping = rng.permutation(a.channels)  # 0-based: electrode e is headstage mapping[e]
    os.makedirs(os.path.join(out, "_logs"), exist_ok=True)
    n_train = write_trials(os.path.join(out, "THINGS_MUA_trials.mat"), a, mapping, broken)
    write_mapping(os.path.join(out, "_logs", "1024chns_mapping_20220105.mat"), a, mapping,
                  broken)
    train, test = image_paths(n_train, a.test_images, a.image_ext)
    write_images(os.path.join(out, "_logs", "things_imgs.mat"), train, test, broken)
    write_norm(os.path.join(out, "THINGS_normMUA.mat"), a, n_train, broken)
    if not a.no_images:
        for k, p in enumerate(train + test):
            colour = rng.integers(0, 256, size=3)
            rgb = np.broadcast_to(colour, (a.image_size, a.image_size, 3)).copy()
            rgb[0, 0] = [k % 256, k // 256 % 256, 255]  # tells images apart
            write_png(os.path.join(out, "images", *p.replace("\\", "/").split("/")), rgb)
    info = {
        "channels": a.channels, "time": a.time, "trials": a.trials, "train_images": n_train,
        "test_images": a.test_images, "reps": a.reps, "days": a.days, "seed": a.seed,
        "allmat_columns": a.allmat_columns, "dtype": a.dtype, "broken": broken,
        "mapping_zero_based": [int(m) for m in mapping],
        "train_paths": train, "test_paths": test,
    }
    with open(os.path.join(out, "fixture.json"), "w") as fh:
        json.dump(info, fh, indent=1, ensure_ascii=False)


def main():
    a = parse_args()
    if a.broken == "all":
        for kind in BROKEN:
            write_fixture(os.path.join(a.out, kind), a, kind)
    else:
        write_fixture(a.out, a, a.broken)


if __name__ == "__main__":
    sys.exit(main())
