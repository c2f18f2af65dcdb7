#!/usr/bin/env python3
"""Receives monkeysee's decoded-frame and event streams with pylsl, as a stimulus
program or LabRecorder would, and writes what arrived as JSON.

usage: frames_inlet.py SOURCE_STEM COUNT TIMEOUT_S OUT.json

SOURCE_STEM is the streams' source_id without -frames / -events. Prints "ready" once
both inlets are open, then pulls until COUNT frames arrived or TIMEOUT_S passed.
"""
import json
import sys
import time

import pylsl


def resolve(source_id, timeout):
    found = pylsl.resolve_byprop("source_id", source_id, 1, timeout)
    if not found:
        sys.exit(f"no LSL stream with source_id {source_id}")
    return found[0]


def labels(info):
    out = []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty():
        out.append(ch.child_value("label"))
        ch = ch.next_sibling()
    return out


def main():
    stem, count, timeout, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    frames_info = resolve(stem + "-frames", 30)
    events_info = resolve(stem + "-events", 30)
    frames = pylsl.StreamInlet(frames_info, max_buflen=60)
    events = pylsl.StreamInlet(events_info, max_buflen=60)
    full = frames.info(timeout=10)
    frames.open_stream(timeout=10)
    events.open_stream(timeout=10)
    print("ready", flush=True)
    got, evs = [], []
    deadline = time.time() + timeout
    while len(got) < count and time.time() < deadline:
        sample, stamp = frames.pull_sample(timeout=0.1)
        if sample is not None:
            got.append({"stamp": stamp, "values": sample})
        while True:
            e, t = events.pull_sample(timeout=0.0)
            if e is None:
                break
            evs.append({"stamp": t, "text": e[0]})
    json.dump(
        {
            "name": full.name(),
            "type": full.type(),
            "channel_count": full.channel_count(),
            "channel_format": full.channel_format(),
            "labels": labels(full),
            "width": full.desc().child("reconstruction").child_value("width"),
            "frames": got,
            "events": evs,
        },
        open(out, "w"),
    )


if __name__ == "__main__":
    main()
