#!/usr/bin/env python3
"""Interop with the community's reference tools (run by .ci/run in a virtualenv).

1. pyxdf loads a session written by `monkeysee simulate` with the right shapes,
   time stamps, headers and markers;
2. numpy memory-maps the dataset without custom code, and its trials are the
   session's samples;
3. pylsl receives every sample of the streams `monkeysee replay` republishes, in
   order, with the session's relative time stamps and headers.

usage: tools/interop.py MONKEYSEE_BINARY WORK_DIR
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pylsl
import pyxdf


def check(cond, what):
    if not cond:
        sys.exit(f"interop FAILED: {what}")
    print(f"  ok: {what}")


def main():
    exe, work = sys.argv[1], Path(sys.argv[2])
    out = work / "interop-sim"
    subprocess.run(
        [exe, "simulate", "--rig", "firmware-config/synthetic.toml",
         "--images", "procedural:12", "--test-images", "2", "--repeats", "2",
         "--seed", "4", "--out", str(out), "--quiet"],
        check=True,
    )
    meta = json.loads((out / "dataset" / "dataset.json").read_text())

    print("pyxdf", pyxdf.__version__)
    streams, header = pyxdf.load_xdf(str(out / "session.xdf"))
    check(header["info"]["version"][0] == "1.0", "file header version 1.0")
    by_type = {s["info"]["type"][0]: s for s in streams}
    mua, markers = by_type["MUA"], by_type["Markers"]
    ts = mua["time_stamps"]
    check(mua["time_series"].shape == (len(ts), meta["channels"]),
          f"MUA shape {mua['time_series'].shape}")
    check(mua["time_series"].dtype == np.float32, "MUA is float32")
    check(abs(ts[0] - 100.0) < 1e-6 and np.allclose(np.diff(ts), 1e-3, atol=1e-6),
          "MUA stamps start at 100 s, 1 ms apart")
    chans = mua["info"]["desc"][0]["channels"][0]["channel"]
    check(len(chans) == meta["channels"], "one channel description per channel")
    check(chans[0]["label"][0] == "e0001" and chans[0]["area"][0] == "V1"
          and chans[-1]["area"][0] == "IT" and chans[-1]["array"][0] == "16",
          "labels, area and array per channel")
    check(float(mua["info"]["nominal_srate"][0]) == 1000.0, "nominal rate 1000 Hz")
    texts = [m[0] for m in markers["time_series"]]
    check(len(texts) == 2 * meta["trials"], f"{len(texts)} markers for {meta['trials']} trials")
    onsets = np.load(out / "dataset" / "trial_onset.npy")
    on_stamps = markers["time_stamps"][0::2]
    check(np.allclose(on_stamps, onsets, atol=1e-9), "stim_on stamps are the dataset's onsets")
    check(all(t.startswith("stim_on leaves-") for t in texts[0::2])
          and all(t == "stim_off" for t in texts[1::2]), "marker texts")
    stim_dir = markers["info"]["desc"][0]["stimuli"][0]["directory"][0]
    check((out / stim_dir).is_dir(), "marker header points at the stimulus folder")

    print("numpy", np.__version__)
    resp = np.load(out / "dataset" / "responses.npy", mmap_mode="r")
    check(isinstance(resp, np.memmap), "responses.npy memory-maps")
    check(resp.shape == (meta["trials"], 300, meta["channels"]), f"responses shape {resp.shape}")
    images = np.load(out / "dataset" / "images.npy", mmap_mode="r")
    check(images.shape == (meta["images"], meta["image_size"], meta["image_size"], 3)
          and images.dtype == np.uint8, f"images shape {images.shape}")
    first = int(round((onsets[3] - ts[0]) * 1000)) - 100
    check(np.array_equal(resp[3], mua["time_series"][first:first + 300]),
          "trial 3 is the session's samples −100…+199 ms around its onset")

    print("pylsl", pylsl.__version__, "liblsl", pylsl.library_version())
    replay_log = open(work / "interop-replay.log", "w")
    replay = subprocess.Popen(
        [exe, "replay", str(out / "session.xdf"), "--speed", "4", "--wait-for-consumer",
         "--wait-timeout", "30", "--quiet"],
        stdout=replay_log, stderr=subprocess.STDOUT, text=True,
    )
    try:
        found = pylsl.resolve_byprop("name", mua["info"]["name"][0], timeout=20)
        found_m = pylsl.resolve_byprop("name", markers["info"]["name"][0], timeout=20)
        check(len(found) == 1 and len(found_m) == 1, "replayed streams resolve by name")
        inlet = pylsl.StreamInlet(found[0], max_buflen=60)
        minlet = pylsl.StreamInlet(found_m[0], max_buflen=60)
        info = inlet.info(timeout=10)
        ch = info.desc().child("channels").child("channel")
        check(ch.child_value("label") == "e0001" and ch.child_value("area") == "V1",
              "replayed header keeps channel labels and areas")
        got, stamps, mtexts, mstamps = [], [], [], []
        deadline = time.time() + 60
        while len(stamps) < len(ts) and time.time() < deadline:
            chunk, t = inlet.pull_chunk(timeout=0.5, max_samples=4096)
            if t:
                got.append(np.asarray(chunk, dtype=np.float32))
                stamps.extend(t)
            m, mt = minlet.pull_chunk(timeout=0.0)
            mtexts.extend(x[0] for x in m)
            mstamps.extend(mt)
        time.sleep(0.5)
        m, mt = minlet.pull_chunk(timeout=1.0)
        mtexts.extend(x[0] for x in m)
        mstamps.extend(mt)
    finally:
        replay.wait(timeout=60)
        replay_log.close()
    lines = (work / "interop-replay.log").read_text().strip().splitlines()
    print("  replay:", lines[-1] if lines else "(no output)")
    check(replay.returncode == 0, "replay exited cleanly")
    check(len(stamps) == len(ts), f"pylsl received {len(stamps)} of {len(ts)} samples")
    data = np.concatenate(got)
    check(np.array_equal(data, mua["time_series"]), "every sample arrived, in order, values exact")
    rel = np.asarray(stamps) - stamps[0]
    check(np.allclose(rel, ts - ts[0], atol=1e-6), "relative time stamps preserved")
    check(mtexts == texts, "every marker arrived, in order")
    check(np.allclose(np.asarray(mstamps) - stamps[0], markers["time_stamps"] - ts[0], atol=1e-6),
          "markers keep their time relative to the MUA")
    print("interop: all checks passed")


if __name__ == "__main__":
    main()
