#!/usr/bin/env python3
"""Offline reference for monkeysee's online broadband -> MUA extraction.

Reads a JSON job (written by tests/it/broadband.rs): the raw signal (.npy, [samples][channels]),
the filter settings and monkeysee's second-order sections. It designs the same filters with
scipy.signal.butter (output='sos'), filters with scipy.signal.lfilter section by section in
float64 (band-pass, |x|, low-pass), keeps every `decimation`-th sample (the last of each
block, as monkeysee does) and writes the MUA (.npy) and a JSON report with the largest
difference between scipy's coefficients and monkeysee's.

usage: mua_reference.py JOB.json
"""
import json
import sys

import numpy as np
from scipy import signal


def main():
    job = json.load(open(sys.argv[1]))
    x = np.load(job["input"]).astype(np.float64)
    ours_band = np.array(job["band"], dtype=np.float64)
    ours_low = np.array(job["lowpass"], dtype=np.float64)
    rate = job["rate_hz"]
    band = signal.butter(job["band_order"], job["band_hz"], btype="bandpass", fs=rate, output="sos")
    low = signal.butter(job["lowpass_order"], job["lowpass_hz"], btype="lowpass", fs=rate, output="sos")
    if band.shape != ours_band.shape or low.shape != ours_low.shape:
        sys.exit(f"section counts differ: scipy {band.shape} {low.shape}, monkeysee {ours_band.shape} {ours_low.shape}")
    design_err = float(max(np.abs(band - ours_band).max(), np.abs(low - ours_low).max()))
    # The filtering uses monkeysee's coefficients, so the comparison is of the filtering.
    y = x
    for s in ours_band:
        y = signal.lfilter(s[:3], s[3:], y, axis=0)
    y = np.abs(y)
    for s in ours_low:
        y = signal.lfilter(s[:3], s[3:], y, axis=0)
    d = job["decimation"]
    mua = y[d - 1 :: d]
    np.save(job["output"], mua)
    json.dump({"design_max_abs_diff": design_err, "rows": int(mua.shape[0])}, open(job["report"], "w"))


if __name__ == "__main__":
    main()
