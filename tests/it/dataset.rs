use std::time::Instant;

use monkeysee::config::WindowSetKind;
use monkeysee::dataset::{Dataset, DatasetError};
use monkeysee::sim::{self, ImageSource, SimConfig, SimOptions};
use monkeysee::telemetry::Counters;
use monkeysee::units::Millis;
use monkeysee::window::{
    AssemblerConfig, FrameStatus, ImageId, Mode, Onset, SampleMeta, WindowAssembler,
};
use monkeysee::xdf;

use super::common::{rig_variant, small_rig};

fn simulated(dir: &std::path::Path) -> SimOptions {
    let rig = small_rig(dir);
    let config = SimConfig::default();
    let opts = SimOptions {
        images: ImageSource::parse("procedural:5", &config.leaves, 2).unwrap(),
        rig,
        config,
        out: dir.join("sim"),
        seed: 2,
        animal_seed: 1,
        test_images: 1,
        repeats: 2,
        rf_jitter_deg: 0.0,
        broadband: false,
        progress: false,
    };
    sim::simulate(&opts).unwrap();
    opts
}

/// Offline/online parity: the inputs `eval` computes offline (the daemon's estimator
/// replayed over the dataset's presentations, from a model's statistics) are the ones
/// the daemon's window stage computes live from the same session, for both window sets.
#[test]
fn dataset_features_match_the_live_window_stage() {
    let dir = tempfile::tempdir().unwrap();
    let opts = simulated(dir.path());
    let rig = &opts.rig;
    let ds = Dataset::open(&opts.out).unwrap();
    ds.check_rig(rig).unwrap();
    assert_eq!((ds.n_trials(), ds.trial_len()), (6, 300));
    assert_eq!(ds.split(true).len(), 2);
    let all: Vec<usize> = (0..ds.n_trials()).collect();

    let session = xdf::read_file(opts.out.join("session.xdf")).unwrap();
    let mua = session.stream(sim::MUA_STREAM).unwrap();
    let markers = session.stream(sim::MARKER_STREAM).unwrap();
    let values = mua.values.as_slice::<f32>().unwrap();
    let ch = rig.channel_count;
    for set in [WindowSetKind::Tw15, WindowSetKind::Tw3] {
        // A prior that differs from the session's statistics, so the updates matter.
        let mut stats = ds.norm_stats(&all[..3], rig, set);
        stats.mean.iter_mut().for_each(|m| *m += 0.5);
        let offline = ds.online_features(&all, rig, set, &stats);
        let mut cfg = AssemblerConfig::from_rig(rig, set, Mode::Event);
        cfg.history = Millis(2000.0);
        let mut asm = WindowAssembler::new(cfg, Some(&stats));
        let mut frame = asm.new_frame();
        let counters = Counters::default();
        let onsets: Vec<f64> = markers.time_stamps.iter().step_by(2).copied().collect();
        let mut next_onset = 0;
        let mut trial = 0;
        for (k, &t) in mua.time_stamps.iter().enumerate() {
            while next_onset < onsets.len() && onsets[next_onset] <= t {
                asm.push_onset(
                    Onset {
                        lsl_time: onsets[next_onset],
                        image: ImageId::new("x"),
                    },
                    &counters,
                );
                next_onset += 1;
            }
            asm.push_sample(
                &values[k * ch..(k + 1) * ch],
                SampleMeta {
                    lsl_time: t,
                    arrival: Instant::now(),
                    transport_delay: 0.0,
                },
                &counters,
            );
            while asm.next_frame(&mut frame, &counters) == FrameStatus::Ready {
                let expected = &offline[trial];
                let worst = frame
                    .features
                    .iter()
                    .zip(expected)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(
                    worst < 1e-4,
                    "{set:?} trial {trial}: max difference {worst}"
                );
                trial += 1;
            }
        }
        assert_eq!(trial, ds.n_trials(), "{set:?}: one live frame per trial");
    }
}

/// A dataset whose channels do not fit the rig, and damaged files, are refused clearly.
#[test]
fn mismatched_or_damaged_datasets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = simulated(dir.path());
    let ds = Dataset::open(&opts.out.join("dataset")).unwrap();

    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (p, _) = rig_variant(
        &other,
        &[
            ("area = \"V4\"", "area = \"IT\""),
            ("image_size = 96", "image_size = 32"),
        ],
    );
    let rig = monkeysee::config::RigConfig::load(&p).unwrap();
    let e = ds.check_rig(&rig).unwrap_err().to_string();
    assert!(
        e.contains("channel 513") && e.contains("V4") && e.contains("IT"),
        "{e}"
    );
    let (p, _) = rig_variant(&other, &[("image_size = 96", "image_size = 64")]);
    let rig = monkeysee::config::RigConfig::load(&p).unwrap();
    assert!(matches!(
        ds.check_rig(&rig),
        Err(DatasetError::RigMismatch { .. })
    ));

    // Truncated responses.
    let r = opts.out.join("dataset/responses.npy");
    let bytes = std::fs::read(&r).unwrap();
    std::fs::write(&r, &bytes[..bytes.len() / 2]).unwrap();
    let e = Dataset::open(&opts.out).err().unwrap().to_string();
    assert!(
        e.contains("responses.npy") && e.contains("truncated"),
        "{e}"
    );
    std::fs::write(&r, b"not numpy").unwrap();
    let e = Dataset::open(&opts.out).err().unwrap().to_string();
    assert!(
        e.contains("responses.npy") && e.contains("not a .npy"),
        "{e}"
    );
    std::fs::remove_file(opts.out.join("dataset/dataset.json")).unwrap();
    let e = Dataset::open(&opts.out).err().unwrap().to_string();
    assert!(e.contains("dataset.json"), "{e}");
}

/// The per-electrode, per-window statistics (TW-3, and TW-15) and the z-scored inputs
/// that `train` saves and the decoders read, against numpy computing them from the
/// dataset files and the rig's window definitions alone (a window's mean over the
/// samples `[onset + round(start), onset + round(end))`, then each window's mean and
/// population SD over the trials): nothing on that side shares code with `src/norm.rs`
/// or `src/dataset/`.
#[test]
fn window_statistics_and_inputs_equal_an_independent_numpy_computation() {
    let dir = tempfile::tempdir().unwrap();
    let opts = simulated(dir.path());
    let ds = Dataset::open(&opts.out).unwrap();
    let rig = &opts.rig;
    let trials: Vec<usize> = (0..ds.n_trials()).collect();
    let w = &rig.windows;
    for set in [WindowSetKind::Tw3, WindowSetKind::Tw15] {
        let stats = ds.norm_stats(&trials, rig, set);
        let mut features = Vec::new();
        let mut inputs = Vec::new();
        for &t in &trials {
            ds.features(t, rig, set, &stats, &mut features);
            inputs.push(features.clone());
        }
        // The definitions, as the rig states them (not composed by the code under test).
        let spec = serde_json::json!({
            "responses": opts.out.join("dataset/responses.npy"),
            "onset": ds.meta.onset_sample,
            "samples_per_ms": rig.sampling_rate_hz / 1000.0,
            "channels": rig.electrodes.iter().map(|e| e.channel).collect::<Vec<_>>(),
            "areas": rig.electrodes.iter().map(|e| e.area.index()).collect::<Vec<_>>(),
            "tw3": set == WindowSetKind::Tw3,
            "tw15": w.tw15.iter().map(|x| [x.start.0, x.len.0]).collect::<Vec<_>>(),
            "tw3_offsets": w.tw3_offsets.iter().map(|m| m.0).collect::<Vec<_>>(),
            "tw3_starts": w.tw3_starts.iter().map(|m| m.0).collect::<Vec<_>>(),
            "tw3_len": w.tw3_len.0,
        });
        let script = r#"
import json, sys
import numpy as np
s = json.loads(sys.argv[1])
r = np.load(s["responses"]).astype(np.float64)   # [trials, time, channels]
per_area = []
for a in range(3):
    if s["tw3"]:
        ws = [(s["tw3_offsets"][a] + st, s["tw3_offsets"][a] + st + s["tw3_len"]) for st in s["tw3_starts"]]
    else:
        st, ln = s["tw15"][a]
        ws = [(st, st + ln)]
    per_area.append(ws)
k = len(per_area[0])
n_e = len(s["channels"])
means = np.zeros((r.shape[0], k, n_e))
for e, (c, a) in enumerate(zip(s["channels"], s["areas"])):
    for j, (lo, hi) in enumerate(per_area[a]):
        lo = s["onset"] + int(round(lo * s["samples_per_ms"]))
        hi = s["onset"] + int(round(hi * s["samples_per_ms"]))
        means[:, j, e] = r[:, lo:hi, c].mean(axis=1)
mean = means.mean(axis=0)
std = means.std(axis=0)
z = (means - mean) / np.maximum(std, 1e-6)
print(json.dumps({"mean": mean.ravel().tolist(), "std": std.ravel().tolist(),
                  "inputs": z.reshape(r.shape[0], -1).tolist()}))
"#;
        let out = std::process::Command::new(super::tvsd::python())
            .args(["-c", script, &spec.to_string()])
            .output()
            .expect("the test tooling's Python runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let numpy: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let list = |v: &serde_json::Value| -> Vec<f64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        let (mean, std) = (list(&numpy["mean"]), list(&numpy["std"]));
        let per = w.windows_per_electrode(set);
        assert_eq!(stats.windows, per);
        assert_eq!(mean.len(), per * rig.electrodes.len());
        let close = |ours: f32, theirs: f64, what: &str, i: usize| {
            let tol = 1e-5 * theirs.abs().max(1.0);
            assert!(
                (ours as f64 - theirs).abs() <= tol,
                "{set:?} {what}[{i}]: ours {ours}, numpy {theirs}"
            );
        };
        for i in 0..mean.len() {
            close(stats.mean[i], mean[i], "mean", i);
            close(stats.std[i], std[i], "std", i);
        }
        // Not a degenerate comparison: the windows differ from each other.
        let spread = std.iter().cloned().fold(f64::NAN, f64::max);
        assert!(spread > 0.0, "{set:?}: every SD is 0");
        let theirs = numpy["inputs"].as_array().unwrap();
        for (t, row) in inputs.iter().enumerate() {
            for (i, (&a, b)) in row.iter().zip(list(&theirs[t])).enumerate() {
                assert!(
                    (a as f64 - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "{set:?} trial {t} input {i}: ours {a}, numpy {b}"
                );
            }
        }
    }
}
