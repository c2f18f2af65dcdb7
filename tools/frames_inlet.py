#!/usr/bin/env python3
"""Receives monkeysee's decoded-frame streams with pylsl, as a stimulus program or
LabRecorder would, and writes what arrived as JSON.

usage: frames_inlet.py SOURCE_STEM COUNT TIMEOUT_S OUT.json [frames-only]

SOURCE_STEM is the streams' source_id without -frames / -frame-info / -events. Prints
"ready" once the inlets are open, then pulls until COUNT frames (and their info samples)
arrived or TIMEOUT_S passed. With frames-only, only the frames stream is read (any
channel format): an independent consumer of the pixels alone.
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


def header(info):
    return {
        "name": info.name(),
        "type": info.type(),
        "channel_count": info.channel_count(),
        "channel_format": info.channel_format(),
        "labels": labels(info),
    }


def main():
    stem, count, timeout, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    kinds = ("frames",) if sys.argv[5:] == ["frames-only"] else ("frames", "frame-info", "events")
    inlets = {}
    for kind in kinds:
        inlets[kind] = pylsl.StreamInlet(resolve(f"{stem}-{kind}", 30), max_buflen=60)
    headers = {kind: inlet.info(timeout=10) for kind, inlet in inlets.items()}
    for inlet in inlets.values():
        inlet.open_stream(timeout=10)
    print("ready", flush=True)
    got = {"frames": [], "frame-info": [], "events": []}
    deadline = time.time() + timeout
    wanted = [k for k in kinds if k != "events"]
    while any(len(got[k]) < count for k in wanted) and time.time() < deadline:
        for kind, inlet in inlets.items():
            while True:
                sample, stamp = inlet.pull_sample(timeout=0.02)
                if sample is None:
                    break
                got[kind].append({"stamp": stamp, "values": sample})
    if len(kinds) == 1:
        json.dump({"stamps": [f["stamp"] for f in got["frames"]]}, open(out, "w"))
        return
    json.dump(
        {
            "frames_header": header(headers["frames"]),
            "width": headers["frames"].desc().child("reconstruction").child_value("width"),
            "info_header": header(headers["frame-info"]),
            "events_header": header(headers["events"]),
            "frames": got["frames"],
            "info": got["frame-info"],
            "events": [{"stamp": e["stamp"], "text": e["values"][0]} for e in got["events"]],
        },
        open(out, "w"),
    )


if __name__ == "__main__":
    main()
