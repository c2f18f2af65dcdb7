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
