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
        realtime: Default::default(),
        trace: None,
        load: None,
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

/// `bench --load 1`, as a user runs it: three conditions (unloaded, loaded, loaded with
/// `--realtime`), each over at least `--frames` frames with the session replayed as often
/// as needed, each with its tail and losses, and a load that really ran beside the
/// loaded ones.
#[test]
fn a_bench_under_load_reports_each_condition_and_the_load_it_carried() {
    let dir = tempfile::tempdir().unwrap();
    let (rig, _) = super::common::rig_variant(
        dir.path(),
        &[
            ("image_size = 96", "image_size = 32"),
            ("pixels_per_degree = 12.0", "pixels_per_degree = 4.0"),
        ],
    );
    let out = dir.path().join("bench");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_monkeysee"))
        .arg("bench")
        .arg("--rig")
        .arg(&rig)
        .args(["--width", "4", "--decode-threads", "1", "--images", "4"])
        .args([
            "--widths",
            "4",
            "--load",
            "1",
            "--frames",
            "6",
            "--load-speed",
            "4",
        ])
        .args(["--load-churn-mib", "16"])
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).unwrap()).unwrap();
    let load = &json["load"];
    assert_eq!(load["spec"]["processes"], 1);
    assert_eq!(load["speed"], 4.0);
    let conditions = load["conditions"].as_array().unwrap();
    let names: Vec<&str> = conditions
        .iter()
        .map(|c| c["condition"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["unloaded", "loaded", "loaded, realtime"]);
    for c in conditions {
        // 4 onsets a pass: two passes for 6 frames.
        assert_eq!(c["frames_expected"], 8, "{c}");
        assert_eq!(c["frames_shown"], 8, "{c}");
        assert_eq!(c["frames_lost"], 0, "{c}");
        assert!(c["deadline_misses"].is_u64(), "{c}");
        let e2e = c["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == "end-to-end")
            .unwrap();
        let q = |k: &str| e2e[k].as_f64().unwrap();
        assert!(
            0.0 < q("p50_ms")
                && q("p50_ms") <= q("p99_ms")
                && q("p99_ms") <= q("p999_ms")
                && q("p999_ms") <= q("max_ms"),
            "{e2e}"
        );
        let loaded = c["loaded"].as_bool().unwrap();
        let share = c["load_core_share"].as_f64().unwrap();
        if loaded {
            assert!(
                share > 0.3,
                "the load process worked beside the run: {share}"
            );
        } else {
            assert_eq!(share, 0.0);
        }
        assert_eq!(
            c["realtime"].is_object(),
            c["condition"] == "loaded, realtime",
            "{c}"
        );
    }
    if monkeysee::plot::have_font() {
        assert!(out.join("load.png").exists());
    }
    // Every load process is gone with the bench (its pids no longer name a load worker).
    for c in conditions {
        let pids = c["load_pids"].as_array().unwrap();
        assert_eq!(
            pids.len(),
            usize::from(c["loaded"].as_bool().unwrap()),
            "{c}"
        );
        for pid in pids {
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.as_u64().unwrap()))
                .unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&cmdline).contains("load-worker"),
                "load process {pid} left running"
            );
        }
    }
}
