//! The decoded frames and events as LSL streams, received by pylsl (a separate
//! process, as a stimulus program or LabRecorder would).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use monkeysee::display::rgb_planes_to_image;
use monkeysee::window::Mode;

use super::daemon::{stream, Running};
use super::tvsd::python;

/// Every frame shown reaches a pylsl inlet with its id, its onset as the stamp, its
/// latencies, and the reconstruction's pixels exactly; the header labels every
/// channel; a gap in the stream arrives as events.
#[test]
fn a_pylsl_inlet_receives_every_frame_with_its_id_stamp_and_pixels() {
    let saved = tempfile::tempdir().unwrap();
    let inputs = saved.path().join("inputs");
    let recording = saved.path().join("run.xdf");
    let running = Running::start("outlet", Mode::Event, |o| {
        o.outlet = Some(o.rig.image_size);
        o.save_inputs = Some(inputs.clone());
        o.record = Some(recording.clone());
    });
    let size = 32; // small_rig's image size
    assert!(
        running.fake.wait_for_daemon(30.0),
        "the daemon never connected"
    );
    let stem = format!("monkeysee-{}", running.fake.mua_name);
    let json = saved.path().join("received.json");
    let onsets = [0.3, 0.7, 1.1, 1.5, 1.9];
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/frames_inlet.py");
    let mut child = Command::new(python())
        .arg(&script)
        .arg(&stem)
        .arg(onsets.len().to_string())
        .arg("40")
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("running tools/frames_inlet.py (a Python with pylsl: run .ci/run, or set MONKEYSEE_PYTHON)");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(
        ready.trim(),
        "ready",
        "tools/frames_inlet.py could not open the inlets"
    );
    // 50 ms without samples between two onsets' windows: a gap, reported as an event
    // while frames still follow.
    stream(
        &running.fake,
        2.6,
        &onsets,
        |_, _| {},
        |k| (1305..1355).contains(&k),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.wait().unwrap().success(),
        "tools/frames_inlet.py failed"
    );
    let summary = running.stop();
    let got: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();

    // The header.
    let channels = 8 + size * size * 3;
    assert_eq!(got["name"], "monkeysee-frames");
    assert_eq!(got["channel_count"].as_u64().unwrap() as usize, channels);
    assert_eq!(got["width"], size.to_string());
    let labels: Vec<&str> = got["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(labels.len(), channels);
    assert_eq!(
        &labels[..8],
        &[
            "image_id",
            "onset_lsl_time",
            "lsl_to_arrival_ms",
            "arrival_to_window_ms",
            "queue_ms",
            "decode_ms",
            "present_ms",
            "end_to_end_ms"
        ]
    );
    assert_eq!(labels[8..11], ["r_0_0", "g_0_0", "b_0_0"]);
    assert_eq!(labels[channels - 1], format!("b_{}_{}", size - 1, size - 1));

    // Every frame, in order, as the daemon decoded and saved it.
    let frames = got["frames"].as_array().unwrap();
    assert_eq!(frames.len(), onsets.len(), "{:?}", summary.counters);
    assert_eq!(
        summary.frames_outlet.as_ref().unwrap().frames,
        onsets.len() as u64
    );
    let csv = std::fs::read_to_string(inputs.join("frames.csv")).unwrap();
    let saved_frames: Vec<(f64, String)> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[1].parse().unwrap(), f[2].to_string())
        })
        .collect();
    let bytes = std::fs::read(inputs.join("reconstructions.npy")).unwrap();
    let recons: Vec<f32> = npyz::NpyFile::new(&bytes[..]).unwrap().into_vec().unwrap();
    let plane = 3 * size * size;
    for (k, f) in frames.iter().enumerate() {
        let v: Vec<&str> = f["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        assert_eq!(v[0], format!("img_{k}"));
        assert_eq!(v[0], saved_frames[k].1);
        let onset: f64 = v[1].parse().unwrap();
        assert!(
            (onset - saved_frames[k].0).abs() < 1e-6,
            "{onset} vs {}",
            saved_frames[k].0
        );
        let stamp = f["stamp"].as_f64().unwrap();
        assert!(
            (stamp - onset).abs() < 1e-5,
            "stamped with the onset: {stamp} vs {onset}"
        );
        let latencies: Vec<f64> = v[2..8].iter().map(|x| x.parse().unwrap()).collect();
        assert!(latencies.iter().all(|&l| l >= 0.0), "{latencies:?}");
        assert!(latencies[3] > 0.0, "a decode takes time");
        assert!(latencies[5] >= latencies[3], "end-to-end covers decode");
        let expected = rgb_planes_to_image(&recons[k * plane..(k + 1) * plane], size);
        let pixels: Vec<u8> = v[8..].iter().map(|x| x.parse().unwrap()).collect();
        assert_eq!(pixels, expected.into_raw(), "frame {k}'s pixels");
    }

    // `--record` kept both streams beside the MUA, under the published headers.
    let file = monkeysee::xdf::read_file(&recording).unwrap();
    let by_name = |n: &str| file.streams.iter().find(|s| s.info.name() == n).unwrap();
    let recorded = by_name("monkeysee-frames");
    assert_eq!(recorded.info.channel_count(), channels);
    assert_eq!(recorded.time_stamps.len(), onsets.len());
    let monkeysee::xdf::Values::String(values) = &recorded.values else {
        panic!("the frames stream is not strings");
    };
    for (k, f) in frames.iter().enumerate() {
        let sent: Vec<&str> = f["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        assert_eq!(
            &values[k * channels..(k + 1) * channels],
            &sent[..],
            "recorded frame {k}"
        );
        assert!((recorded.time_stamps[k] - f["stamp"].as_f64().unwrap()).abs() < 1e-6);
    }
    let events = by_name("monkeysee-events");
    let monkeysee::xdf::Values::String(texts) = &events.values else {
        panic!("the events stream is not strings");
    };
    assert!(texts.iter().any(|e| e.starts_with("gaps ")), "{texts:?}");

    // The gap went out as events, stamped in this machine's LSL time.
    let events: Vec<&str> = got["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert!(events.iter().any(|e| e.starts_with("gaps ")), "{events:?}");
    assert!(summary.counter("gaps") >= 1);
}
