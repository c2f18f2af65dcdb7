#!/usr/bin/env python3
"""Writes a LabRecorder-like XDF session with an independent XDF writer (struct only, no
monkeysee code), for `monkeysee dataset`'s tests.

The session: an MUA stream (float32, CHANNELS channels, 1 kHz) whose clock runs
MUA_OFFSET(t) seconds behind the recorder's (a drifting line), a marker stream whose
clock runs 50.5 s ahead, clock-offset chunks every 5 s for both (as LabRecorder writes
them: collection time on the stream's clock, value = recorder - stream), and markers of
another stimulus program: `img <id> on` / `img <id> off`.

Sample n (recorder time T0 + n / 1000) holds value(n, c) = float32(n + c / 1000), so a
test can tell exactly which samples an epoch holds.

Usage: xdf_session.py OUT.xdf CHANNELS SECONDS "onset_sample:id,onset_sample:id,..."
       [--nan SAMPLE] [--gap FROM:TO]
Samples FROM..TO are left out (a gap); sample SAMPLE is NaN on channel 0.
"""

import struct
import sys

T0 = 5000.0
MARKER_AHEAD = 50.5


def mua_offset(t):
    """Recorder clock minus MUA stream clock at recorder time t (a slow drift)."""
    return -1000.25 + 2e-5 * (t - T0)


def chunk(tag, content):
    n = len(content) + 2
    return struct.pack("<BIH", 4, n, tag) + content


def varlen(n):
    if n < 256:
        return struct.pack("<BB", 1, n)
    return struct.pack("<BI", 4, n)


def header_xml(name, stype, channels, srate, fmt, source_id):
    return (
        '<?xml version="1.0"?><info><name>%s</name><type>%s</type>'
        "<channel_count>%d</channel_count><nominal_srate>%s</nominal_srate>"
        "<channel_format>%s</channel_format><source_id>%s</source_id>"
        "<version>1.1</version><created_at>0</created_at><uid>x</uid>"
        "<session_id>default</session_id><hostname>rig</hostname>"
        "<desc><acquisition><manufacturer>independent-writer</manufacturer></acquisition></desc></info>"
        % (name, stype, channels, srate, fmt, source_id)
    ).encode()


def main():
    out, channels, seconds, onsets = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    nan_at, gap = None, None
    args = sys.argv[5:]
    while args:
        if args[0] == "--nan":
            nan_at = int(args[1])
        elif args[0] == "--gap":
            a, b = args[1].split(":")
            gap = (int(a), int(b))
        args = args[2:]
    onsets = [(int(s), i) for s, i in (o.split(":") for o in onsets.split(","))]
    n_samples = int(seconds * 1000)
    body = b"XDF:"
    body += chunk(1, b'<?xml version="1.0"?><info><version>1.0</version></info>')
    body += chunk(2, struct.pack("<I", 7) + header_xml("BrainAmpMUA", "MUA", channels, "1000", "float32", "amp-1"))
    body += chunk(2, struct.pack("<I", 3) + header_xml("StimProgram", "Markers", 1, "0", "string", "stim-1"))

    markers = []
    for s, i in onsets:
        markers.append((s, "img %s on" % i))
        markers.append((s + 200, "img %s off" % i))
    markers.sort()
    next_marker, next_offset = 0, 0.0
    block = 250
    for start in range(0, n_samples, block):
        rows = [n for n in range(start, min(start + block, n_samples)) if not (gap and gap[0] <= n < gap[1])]
        if rows:
            content = struct.pack("<I", 7) + varlen(len(rows))
            for n in rows:
                t = T0 + n / 1000.0
                stream_t = t - mua_offset(t)
                vals = [n + c / 1000.0 for c in range(channels)]
                if n == nan_at:
                    vals[0] = float("nan")
                content += struct.pack("<Bd", 8, stream_t) + struct.pack("<%df" % channels, *vals)
            body += chunk(3, content)
        end = start + block
        while next_marker < len(markers) and markers[next_marker][0] < end:
            s, text = markers[next_marker]
            raw = T0 + s / 1000.0 + MARKER_AHEAD
            data = text.encode()
            content = struct.pack("<I", 3) + varlen(1) + struct.pack("<Bd", 8, raw) + varlen(len(data)) + data
            body += chunk(3, content)
            next_marker += 1
        t_end = T0 + end / 1000.0
        if t_end >= next_offset:
            body += chunk(4, struct.pack("<Idd", 7, t_end - mua_offset(t_end), mua_offset(t_end)))
            body += chunk(4, struct.pack("<Idd", 3, t_end + MARKER_AHEAD, -MARKER_AHEAD))
            next_offset = t_end + 5.0
    for s, text in markers[next_marker:]:
        # Markers after the last sample (an `off` after the recording stopped).
        data = text.encode()
        raw = T0 + s / 1000.0 + MARKER_AHEAD
        body += chunk(3, struct.pack("<I", 3) + varlen(1) + struct.pack("<Bd", 8, raw) + varlen(len(data)) + data)
    with open(out, "wb") as f:
        f.write(body)


if __name__ == "__main__":
    main()
