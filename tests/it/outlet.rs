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

    // The headers: pixels as int16 channels, the frame's id and latencies beside them.
    let channels = size * size * 3;
    let fh = &got["frames_header"];
    assert_eq!(fh["name"], "monkeysee-frames");
    assert_eq!(fh["type"], "Reconstruction");
    assert_eq!(fh["channel_format"].as_u64(), Some(5), "cf_int16");
    assert_eq!(fh["channel_count"].as_u64().unwrap() as usize, channels);
    assert_eq!(got["width"], size.to_string());
    let labels = |h: &serde_json::Value| -> Vec<String> {
        h["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        labels(fh).is_empty(),
        "the layout is in desc/reconstruction"
    );
    let ih = &got["info_header"];
    assert_eq!(ih["name"], "monkeysee-frame-info");
    assert_eq!(
        labels(ih),
        [
            "image_id",
            "seq",
            "onset_lsl_time",
            "lsl_to_arrival_ms",
            "arrival_to_window_ms",
            "queue_ms",
            "decode_ms",
            "present_ms",
            "end_to_end_ms"
        ]
    );

    // Every frame, in order, as the daemon decoded and saved it, with its info sample
    // under the same stamp.
    let frames = got["frames"].as_array().unwrap();
    let infos = got["info"].as_array().unwrap();
    assert_eq!(frames.len(), onsets.len(), "{:?}", summary.counters);
    assert_eq!(infos.len(), onsets.len(), "{:?}", summary.counters);
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
    let mut sent_pixels = Vec::new();
    for (k, (f, info)) in frames.iter().zip(infos).enumerate() {
        let v: Vec<&str> = info["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        assert_eq!(v[0], format!("img_{k}"));
        assert_eq!(v[0], saved_frames[k].1);
        let onset: f64 = v[2].parse().unwrap();
        assert!(
            (onset - saved_frames[k].0).abs() < 1e-6,
            "{onset} vs {}",
            saved_frames[k].0
        );
        for stamp in [
            f["stamp"].as_f64().unwrap(),
            info["stamp"].as_f64().unwrap(),
        ] {
            assert!(
                (stamp - onset).abs() < 1e-5,
                "stamped with the onset: {stamp} vs {onset}"
            );
        }
        let latencies: Vec<f64> = v[3..9].iter().map(|x| x.parse().unwrap()).collect();
        assert!(latencies.iter().all(|&l| l >= 0.0), "{latencies:?}");
        assert!(latencies[3] > 0.0, "a decode takes time");
        assert!(latencies[5] >= latencies[3], "end-to-end covers decode");
        let expected = rgb_planes_to_image(&recons[k * plane..(k + 1) * plane], size);
        let pixels: Vec<i16> = f["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap() as i16)
            .collect();
        let want: Vec<i16> = expected.into_raw().into_iter().map(i16::from).collect();
        assert_eq!(pixels, want, "frame {k}'s pixels");
        sent_pixels.push(pixels);
    }

    // `--record` kept the three streams beside the MUA, under the published headers.
    let file = monkeysee::xdf::read_file(&recording).unwrap();
    let by_name = |n: &str| file.streams.iter().find(|s| s.info.name() == n).unwrap();
    let recorded = by_name("monkeysee-frames");
    assert_eq!(recorded.info.channel_count(), channels);
    assert_eq!(recorded.time_stamps.len(), onsets.len());
    let monkeysee::xdf::Values::Int16(values) = &recorded.values else {
        panic!("the frames stream is not int16");
    };
    for (k, (pixels, f)) in sent_pixels.iter().zip(frames).enumerate() {
        assert_eq!(
            &values[k * channels..(k + 1) * channels],
            &pixels[..],
            "recorded frame {k}"
        );
        assert!((recorded.time_stamps[k] - f["stamp"].as_f64().unwrap()).abs() < 1e-6);
    }
    let recorded_info = by_name("monkeysee-frame-info");
    let monkeysee::xdf::Values::String(texts) = &recorded_info.values else {
        panic!("the frame-info stream is not strings");
    };
    assert_eq!(texts.len(), onsets.len() * 9);
    assert_eq!(texts[0], "img_0");
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

/// The frames outlet at the paper's image size (96 px: 27,648 values a frame), on by
/// default, on a rig that is already presenting stimuli when the daemon starts (an onset
/// every 100 ms from the first sample), with an independent consumer that connects while
/// frames flow: the display loses no frame, and the consumer receives every frame from
/// the first it gets. Runs the `monkeysee` binary as a user would. `MONKEYSEE_BIN` (with
/// `MONKEYSEE_RIG`, its rig file) runs another build: the string outlet that preceded
/// this one was created on the display thread after the pipeline had started, and
/// liblsl's pool of 128 samples of 27,656 strings held the display for about a second
/// while the first frames queued behind it (superseded: lost).
#[test]
fn with_a_consumer_of_the_frames_stream_no_frame_is_lost() {
    use super::common::{synthetic_rig_path, FakeRig};
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeRig::new("no-loss", 1024);
    let summary_json = dir.path().join("summary.json");
    let onsets: Vec<f64> = (0..80).map(|k| 0.1 + 0.1 * k as f64).collect();
    let bin = std::env::var_os("MONKEYSEE_BIN").map_or_else(
        || env!("CARGO_BIN_EXE_monkeysee").into(),
        std::path::PathBuf::from,
    );
    let mut daemon = Command::new(bin)
        .arg("run")
        .arg("--rig")
        .arg(std::env::var_os("MONKEYSEE_RIG").map_or_else(synthetic_rig_path, Into::into))
        .args(["--random-weights", "--width", "4", "--decode-threads", "1"])
        .arg("--headless")
        .arg("--out")
        .arg(dir.path().join("out"))
        .args([
            "--frames",
            &onsets.len().to_string(),
            "--seconds",
            "40",
            "--quiet",
        ])
        .arg("--mua-query")
        .arg(fake.mua_query())
        .arg("--marker-query")
        .arg(fake.marker_query())
        .arg("--summary-json")
        .arg(&summary_json)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    assert!(fake.wait_for_daemon(30.0), "the daemon never connected");
    // The consumer connects in its own time, as the rig streams.
    let stem = format!("monkeysee-{}", fake.mua_name);
    let received = dir.path().join("received.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/frames_inlet.py");
    let mut consumer = Command::new(python())
        .arg(&script)
        .arg(&stem)
        .arg(onsets.len().to_string())
        .arg("30")
        .arg(&received)
        .arg("frames-only")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let t0 = stream(&fake, 8.6, &onsets, |_, _| {}, |_| false);
    assert!(daemon.wait().unwrap().success(), "monkeysee run failed");
    assert!(consumer.wait().unwrap().success(), "the consumer failed");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_json).unwrap()).unwrap();
    let counters: std::collections::HashMap<String, u64> = s["counters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c[0].as_str().unwrap().to_string(), c[1].as_u64().unwrap()))
        .collect();
    let lost: Vec<(&String, &u64)> = counters
        .iter()
        .filter(|(k, v)| {
            **v > 0
                && (k.starts_with("frames_dropped")
                    || k.starts_with("frames_skipped")
                    || [
                        "frames_superseded",
                        "frames_unpublished",
                        "decode_errors",
                        "overruns",
                    ]
                    .contains(&k.as_str()))
        })
        .collect();
    assert!(lost.is_empty(), "frames lost: {lost:?}");
    assert_eq!(s["frames_shown"].as_u64(), Some(onsets.len() as u64));
    // The consumer's frames are the onsets from its first one on, none missing.
    let got: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&received).unwrap()).unwrap();
    let stamps: Vec<f64> = got["stamps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        stamps.len() >= 10,
        "the consumer connected too late to judge: {} frames",
        stamps.len()
    );
    let expected: Vec<f64> = onsets.iter().map(|o| t0 + o).collect();
    let first = expected
        .iter()
        .position(|e| (e - stamps[0]).abs() < 1e-3)
        .expect("the consumer's first frame is one of the onsets");
    assert_eq!(
        stamps.len(),
        expected.len() - first,
        "the consumer missed frames after its first"
    );
    for (got, want) in stamps.iter().zip(&expected[first..]) {
        assert!(
            (got - want).abs() < 1e-3,
            "frame stamped {got}, onset {want}"
        );
    }
}
