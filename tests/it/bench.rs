//! `monkeysee bench`: a short run on the small rig writes a report that holds every
//! stage, the speeds it tried, CPU per thread and the decoder's forward time.

use monkeysee::bench::{self, BenchOptions};
use monkeysee::daemon::{ComputeDevice, ModelSource};
use monkeysee::decoder::DecoderKind;
use monkeysee::window::Mode;

use super::common::small_rig;

#[test]
fn a_short_bench_reports_every_stage_speed_and_thread() {
    let dir = tempfile::tempdir().unwrap();
    let rig = small_rig(dir.path());
    let out = dir.path().join("bench");
    let report = bench::run(&BenchOptions {
        rig,
        model: ModelSource::Random {
            kind: DecoderKind::EndToEnd,
            width: 4,
            seed: 1,
        },
        session: None,
        images: 4,
        mode: Mode::Event,
        broadband: false,
        device: ComputeDevice::Cpu,
        speeds: vec![1.0, 4.0],
        widths: vec![4],
        decode_threads: 1,
        out: out.clone(),
        progress: false,
    })
    .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).unwrap()).unwrap();
    // One trial of 4 images: 4 onsets, each a frame at 1x and at 4x.
    assert_eq!(report.speeds.len(), 2, "{:?}", report.speeds);
    for s in &report.speeds {
        assert_eq!((s.frames_shown, s.frames_expected), (4, 4), "{s:?}");
        assert!(s.lossless, "{s:?}");
        assert!(s.hdr_log.exists());
        assert!(
            s.cpu.iter().any(|c| c.thread == "ingest" && c.cpu_s > 0.0),
            "{:?}",
            s.cpu
        );
    }
    assert_eq!(json["max_lossless_speed"], 4.0);
    let stages: Vec<&str> = json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "lsl->arrival",
            "arrival->window",
            "queue",
            "decode",
            "present",
            "end-to-end"
        ]
    );
    for s in json["stages"].as_array().unwrap() {
        let (p50, p99, max) = (
            s["p50_ms"].as_f64().unwrap(),
            s["p99_ms"].as_f64().unwrap(),
            s["max_ms"].as_f64().unwrap(),
        );
        assert!(p50 <= p99 && p99 <= max, "{s}");
    }
    let decode = &report.stages[3];
    assert!(decode.latency.p50_ms > 0.0);
    assert_eq!(report.forward.len(), 1);
    assert!(report.forward[0].p50_ms > 0.0 && report.forward[0].runs == 30);
    if monkeysee::plot::have_font() {
        assert!(out.join("bench.png").exists());
    }
}
