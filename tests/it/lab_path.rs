//! A lab's path from a recording to a decoder: `monkeysee dataset` on our own recording
//! (simulate → replay → `run --record`) and on an independent writer's XDF file with
//! clock offsets; the daemon's inputs against `eval`'s offline inputs.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use monkeysee::config::RigConfig;
use monkeysee::config::{decoder_config, window_set};
use monkeysee::daemon::ModelSource;
use monkeysee::dataset::from_xdf::{dataset_from_xdf, XdfDatasetOptions};
use monkeysee::dataset::tvsd_import::{import_tvsd, TvsdImportOptions};
use monkeysee::dataset::Dataset;
use monkeysee::decoder::{CpuBackend, Decoder, DecoderKind};
use monkeysee::replay::{self, ReplayOptions, Speed};
use monkeysee::sim::{self, ImageSource, SimConfig, SimOptions};
use monkeysee::window::Mode;

use super::common::{repo, small_rig, unique, FakeRig};
use super::daemon::options;

fn read_npy_f32(path: &Path) -> (Vec<u64>, Vec<f32>) {
    let f = npyz::NpyFile::new(std::fs::File::open(path).unwrap()).unwrap();
    (f.shape().to_vec(), f.into_vec::<f32>().unwrap())
}

fn options_for(rig: &RigConfig, session: &Path, images: &Path, out: &Path) -> XdfDatasetOptions {
    XdfDatasetOptions {
        rig: rig.clone(),
        session: session.to_path_buf(),
        images: images.to_path_buf(),
        out: out.to_path_buf(),
        mua_query: None,
        marker_query: None,
        onset_regex: None,
        min_repeats: 2,
        progress: false,
    }
}

fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (
        a.iter().map(|&v| v as f64).sum::<f64>() / n,
        b.iter().map(|&v| v as f64).sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64 - ma, y as f64 - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    sab / (saa * sbb).sqrt()
}

/// simulate → replay over LSL → `run --record --save-inputs` (with a model and its
/// statistics) → `dataset` on the recording. The dataset is simulate's own: the same
/// trials and ids, the same responses, the same split, onsets shifted by one constant.
/// And the inputs the daemon decoded live are the ones `eval` computes offline from
/// that dataset with the model's statistics, as are the reconstructions.
#[test]
fn a_recorded_replay_becomes_simulates_dataset_and_online_inputs_match_offline() {
    let dir = tempfile::tempdir().unwrap();
    let mut rig = small_rig(dir.path());
    let tag = unique("lab-path");
    rig.mua.source_id = Some(format!("{tag}-mua"));
    rig.markers.source_id = Some(format!("{tag}-markers"));
    let config = SimConfig::default();
    let sim_opts = SimOptions {
        images: ImageSource::parse("procedural:8", &config.leaves, 9).unwrap(),
        rig: rig.clone(),
        config,
        out: dir.path().join("sim"),
        seed: 9,
        animal_seed: 1,
        test_images: 2,
        repeats: 3,
        rf_jitter_deg: 0.0,
        broadband: false,
        progress: false,
    };
    let s = sim::simulate(&sim_opts).unwrap();
    let simulated = Dataset::open(&sim_opts.out).unwrap();

    // A model with statistics that are not the session's, so the daemon's updates show.
    let kind = DecoderKind::EndToEnd;
    let set = window_set(kind);
    let model = dir.path().join("model");
    Decoder::<CpuBackend>::random(decoder_config(&rig, kind, 4), 3, &Default::default())
        .unwrap()
        .save(&model)
        .unwrap();
    let first: Vec<usize> = (0..4).collect();
    let stats = simulated.norm_stats(&first, &rig, set);
    std::fs::write(
        model.join("normalization.json"),
        serde_json::to_string(&stats).unwrap(),
    )
    .unwrap();

    let mut replay_opts = ReplayOptions {
        speed: Speed::Factor(2.0),
        wait_for_consumer: Some(60.0),
        ..ReplayOptions::new(sim_opts.out.join("session.xdf"))
    };
    replay_opts.start_delay = 0.3;
    let handle = replay::spawn(replay_opts).unwrap();
    let out = dir.path().join("run");
    let recording = dir.path().join("recorded.xdf");
    let saved = dir.path().join("inputs");
    let stop = Arc::new(AtomicBool::new(false));
    let fake = FakeRig::new("lab-unused", 1);
    let mut run = options(rig.clone(), &fake, &out, Mode::Event, stop.clone());
    run.rig.mua.query = Some(format!("source_id='{tag}-mua'"));
    run.rig.markers.query = Some(format!("source_id='{tag}-markers'"));
    run.model = ModelSource::Dir(model.clone());
    run.record = Some(recording.clone());
    run.save_inputs = Some(saved.clone());
    run.frames = Some(s.trials as u64);
    let daemon = thread::spawn(move || monkeysee::daemon::run(run));
    handle.join().unwrap();
    let summary = daemon.join().unwrap().unwrap();
    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        summary.frames_shown, s.trials as u64,
        "{:?}",
        summary.counters
    );
    assert_eq!(summary.counter("frames_dropped_decode"), 0);

    // The recording, back into a dataset: simulate's, trial for trial.
    let data = dir.path().join("data");
    let mut o = options_for(&rig, &recording, &sim_opts.out.join("images"), &data);
    o.mua_query = Some(format!("source_id='{tag}-mua'"));
    o.marker_query = Some(format!("source_id='{tag}-markers'"));
    o.min_repeats = 3;
    let made = dataset_from_xdf(&o).unwrap();
    println!("{made}");
    assert_eq!(made.onsets, s.trials);
    assert_eq!(
        (
            made.skipped_gap,
            made.skipped_edge,
            made.skipped_nan,
            made.duplicate_onsets
        ),
        (0, 0, 0, 0)
    );
    let rebuilt = Dataset::open(&data).unwrap();
    rebuilt.check_rig(&rig).unwrap();
    assert_eq!(rebuilt.n_trials(), simulated.n_trials());
    assert_eq!(rebuilt.trial_len(), 300);
    let shift = rebuilt.trial_onset[0] - simulated.trial_onset[0];
    for t in 0..simulated.n_trials() {
        assert_eq!(
            rebuilt.image_ids[rebuilt.trial_image[t]],
            simulated.image_ids[simulated.trial_image[t]],
            "trial {t}: same image"
        );
        assert_eq!(
            rebuilt.trial_test[t], simulated.trial_test[t],
            "trial {t}: same split"
        );
        let d = rebuilt.trial_onset[t] - simulated.trial_onset[t] - shift;
        assert!(
            d.abs() < 1e-4,
            "trial {t}: onset off by {d} s beyond the constant shift"
        );
        let worst = rebuilt
            .trial(t)
            .iter()
            .zip(simulated.trial(t))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-6,
            "trial {t}: responses differ by up to {worst}"
        );
    }
    for i in 0..rebuilt.meta.images {
        let id = &rebuilt.image_ids[i];
        let j = simulated.image_ids.iter().position(|x| x == id).unwrap();
        let worst = rebuilt
            .image_chw(i)
            .iter()
            .zip(simulated.image_chw(j))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1.01 / 255.0,
            "image {id}: pixels differ by {worst}"
        );
    }

    // Online inputs = offline inputs (eval's: the daemon's estimator over the dataset's
    // presentations, from the model's statistics), and so the reconstructions.
    let trials: Vec<usize> = (0..rebuilt.n_trials()).collect();
    let offline = rebuilt.online_features(&trials, &rig, set, &stats);
    let (shape, online) = read_npy_f32(&saved.join("inputs.npy"));
    let nf = offline[0].len();
    assert_eq!(shape, [s.trials as u64, nf as u64]);
    let csv = std::fs::read_to_string(saved.join("frames.csv")).unwrap();
    let frame_ids: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap())
        .collect();
    let decoder = Decoder::<CpuBackend>::load(&model, &Default::default()).unwrap();
    let (_, recons) = read_npy_f32(&saved.join("reconstructions.npy"));
    let image_len = decoder.config().image_len();
    let mut worst = 0.0f32;
    let mut lowest_r = 1.0f64;
    let mut img = vec![0.0f32; image_len];
    for t in 0..rebuilt.n_trials() {
        assert_eq!(frame_ids[t], rebuilt.image_ids[rebuilt.trial_image[t]]);
        let live = &online[t * nf..(t + 1) * nf];
        worst = live
            .iter()
            .zip(&offline[t])
            .map(|(a, b)| (a - b).abs())
            .fold(worst, f32::max);
        decoder.reconstruct(&offline[t], &mut img).unwrap();
        lowest_r = lowest_r.min(pearson(&img, &recons[t * image_len..(t + 1) * image_len]));
    }
    println!("online vs offline inputs: largest difference {worst:.2e}; reconstructions r >= {lowest_r:.6}");
    // The same samples, summed in the same order: the same numbers, to the bit.
    assert_eq!(
        worst, 0.0,
        "online and offline inputs differ by up to {worst}"
    );
    assert!(lowest_r > 0.99, "reconstruction r {lowest_r}");
}

/// Writes `tools/xdf_session.py`'s session (an independent XDF writer).
fn independent_session(path: &Path, seconds: f64, onsets: &[(usize, &str)], extra: &[&str]) {
    let list: Vec<String> = onsets.iter().map(|(s, id)| format!("{s}:{id}")).collect();
    let status = Command::new(super::tvsd::python())
        .arg(repo().join("tools/xdf_session.py"))
        .arg(path)
        .arg("1024")
        .arg(seconds.to_string())
        .arg(list.join(","))
        .args(extra)
        .status()
        .expect("the test tooling's Python runs");
    assert!(status.success());
}

fn write_images(dir: &Path, ids: &[&str]) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    for (k, id) in ids.iter().enumerate() {
        let img = image::RgbImage::from_pixel(40, 30, image::Rgb([30 * k as u8, 90, 200]));
        // Subfolders are searched, as THINGS keeps one folder per concept.
        img.save(dir.join("sub").join(format!("{id}.png"))).unwrap();
    }
}

/// A LabRecorder-like file from another writer: streams with other names, clocks 1000 s
/// behind (drifting) and 50 s ahead of the recorder's, another stimulus program's
/// markers. With the queries and the pattern, every epoch is exactly the samples
/// −100…+199 around its onset; the problems are counted and the rest kept.
#[test]
fn an_independent_writers_session_with_clock_offsets_gives_the_expected_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let rig = small_rig(dir.path());
    let session = dir.path().join("labrecorder.xdf");
    let onsets = [
        (300, "apple"),
        (700, "pear"),
        (1100, "apple"),
        (1100, "apple"), // a duplicate onset
        (1500, "fig"),   // no image file
        (1900, "pear"),  // NaN at 1950
        (2300, "plum"),  // across the gap 2400..2450
        (2700, "pear"),
        (3100, "apple"),
        (3900, "plum"), // runs past the end (4000 samples)
        (50, "pear"),   // starts before the first sample
    ];
    independent_session(
        &session,
        4.0,
        &onsets,
        &["--nan", "1950", "--gap", "2400:2450"],
    );
    let images = dir.path().join("stimuli");
    write_images(&images, &["apple", "pear", "plum"]);
    let out = dir.path().join("data");
    let mut o = options_for(&rig, &session, &images, &out);
    o.mua_query = Some("name='BrainAmpMUA' and type='MUA'".into());
    o.marker_query = Some("starts-with(name, 'StimProg')".into());
    o.onset_regex = Some(r"^img (?P<id>\S+) on$".into());
    let made = dataset_from_xdf(&o).unwrap();
    println!("{made}");
    assert_eq!(made.onsets, onsets.len());
    assert_eq!(made.other_markers, onsets.len(), "one `off` per onset");
    assert_eq!(made.duplicate_onsets, 1);
    assert_eq!(
        (made.missing_image_onsets, made.missing_images.clone()),
        (1, vec!["fig".to_string()])
    );
    assert_eq!(made.skipped_nan, 1);
    assert_eq!(made.skipped_gap, 1);
    assert_eq!(made.skipped_edge, 2);
    assert_eq!(made.clock_segments, (1, 1));

    let ds = Dataset::open(&out).unwrap();
    let kept = [300usize, 700, 1100, 2700, 3100];
    assert_eq!(ds.n_trials(), kept.len());
    let ch = rig.channel_count;
    for (t, &onset) in kept.iter().enumerate() {
        let trial = ds.trial(t);
        for (i, row) in trial.chunks_exact(ch).enumerate() {
            let n = onset - 100 + i;
            for c in [0, 1, 517, 1023] {
                let want = (n as f64 + c as f64 / 1000.0) as f32;
                assert_eq!(
                    row[c], want,
                    "trial {t} (onset {onset}) sample {i} channel {c}"
                );
            }
        }
        // Onsets in the recorder's clock: both streams' offsets applied.
        let want = 5000.0 + onset as f64 / 1000.0;
        assert!(
            (ds.trial_onset[t] - want).abs() < 1e-6,
            "onset {} vs {want}",
            ds.trial_onset[t]
        );
    }
    let ids: Vec<&str> = (0..ds.n_trials())
        .map(|t| ds.image_ids[ds.trial_image[t]].as_str())
        .collect();
    assert_eq!(ids, ["apple", "pear", "apple", "pear", "apple"]);
    // apple 3 times, pear twice: both >= 2 repeats, the test split.
    assert_eq!(ds.trial_test, [true; 5]);
    let (shape, _) = read_npy_f32(&out.join("responses.npy"));
    assert_eq!(shape, [5, 300, 1024]);
    assert!(std::fs::read_to_string(out.join("dataset.json"))
        .unwrap()
        .contains("BrainAmpMUA"));
}

/// Fatal problems say what to fix; an existing dataset is never overwritten.
#[test]
fn dataset_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let rig = small_rig(dir.path());
    let session = dir.path().join("s.xdf");
    independent_session(&session, 1.0, &[(300, "apple")], &[]);
    let images = dir.path().join("stimuli");
    write_images(&images, &["apple"]);
    let err = |edit: &dyn Fn(&mut XdfDatasetOptions)| {
        let mut o = options_for(&rig, &session, &images, &dir.path().join(unique("out")));
        o.marker_query = Some("name='StimProgram'".into());
        o.onset_regex = Some(r"^img (?P<id>\S+) on$".into());
        edit(&mut o);
        format!("{:#}", dataset_from_xdf(&o).unwrap_err())
    };
    let e = err(&|_| {});
    assert!(
        e.contains("no MUA stream") && e.contains("BrainAmpMUA"),
        "{e}"
    );
    let e = err(&|o| o.mua_query = Some("type='Markers' or type='MUA'".into()));
    assert!(e.contains("2 streams match"), "{e}");
    let e = err(&|o| {
        o.mua_query = Some("name='BrainAmpMUA'".into());
        o.onset_regex = None;
    });
    assert!(
        e.contains("no onset markers") && e.contains("--onset-regex"),
        "{e}"
    );
    let e = err(&|o| {
        o.mua_query = Some("name='BrainAmpMUA'".into());
        o.onset_regex = Some("^img (\\S+) on$".into());
    });
    assert!(e.contains("no group named id"), "{e}");
    let e = err(&|o| o.mua_query = Some("name='BrainAmpMUA' and".into()));
    assert!(e.contains("not valid XPath"), "{e}");
    let e = err(&|o| {
        o.mua_query = Some("name='BrainAmpMUA'".into());
        o.rig.channel_count = 512;
    });
    assert!(e.contains("1024 channels") && e.contains("512"), "{e}");
    let e = err(&|o| {
        o.mua_query = Some("name='BrainAmpMUA'".into());
        o.session = dir.path().join("missing.xdf");
    });
    assert!(e.contains("missing.xdf"), "{e}");
    // A truncated file: what was read before the damage is kept, the damage reported.
    let bytes = std::fs::read(&session).unwrap();
    let cut = dir.path().join("cut.xdf");
    std::fs::write(&cut, &bytes[..bytes.len() * 3 / 4]).unwrap();
    let out = dir.path().join("cut-data");
    let mut o = options_for(&rig, &cut, &images, &out);
    o.mua_query = Some("name='BrainAmpMUA'".into());
    o.marker_query = Some("name='StimProgram'".into());
    o.onset_regex = Some(r"^img (?P<id>\S+) on$".into());
    let made = dataset_from_xdf(&o).unwrap();
    assert!(
        made.damage.as_deref().unwrap_or("").contains("byte"),
        "{made}"
    );
    assert_eq!(made.dataset.trials, 1);
    // An existing dataset is not overwritten.
    let e = format!("{:#}", dataset_from_xdf(&o).unwrap_err());
    assert!(e.contains("already holds a dataset"), "{e}");
}

/// Import options for a `tools/make-tvsd-fixture.py` folder: every file, all days.
fn tvsd_options(rig: &RigConfig, fx: &Path, out: &Path) -> TvsdImportOptions {
    TvsdImportOptions {
        rig: rig.clone(),
        trials: Some(fx.join("THINGS_MUA_trials.mat")),
        mapping: Some(fx.join("_logs/1024chns_mapping_20220105.mat")),
        image_list: fx.join("_logs/things_imgs.mat"),
        images: fx.join("images"),
        norm_mua: Some(fx.join("THINGS_normMUA.mat")),
        out: out.to_path_buf(),
        days: None,
        block: 5,
        progress: false,
    }
}

/// `import-tvsd` on fixtures in the published files' layout (h5py: user block, deflate,
/// object references; the mapping as MAT v5), at TVSD's 1024 channels × 300 samples:
/// the trials land in electrode order, split and day as TVSD says; normMUA becomes a
/// time-averaged dataset; `train --min-snr` drops the electrodes below it, offline and
/// in the daemon's statistics.
#[test]
fn import_tvsd_builds_both_datasets_and_min_snr_drops_electrodes() {
    let dir = tempfile::tempdir().unwrap();
    let rig = small_rig(dir.path());
    let (trials, test_images, reps, days) = (24usize, 2usize, 3usize, 2usize);
    let fixture_dir = super::tvsd::Fixture::new(&[
        "--channels",
        "1024",
        "--time",
        "300",
        "--image-ext",
        "png",
        "--trials",
        &trials.to_string(),
        "--test-images",
        &test_images.to_string(),
        "--reps",
        &reps.to_string(),
        "--days",
        &days.to_string(),
    ]);
    let fx = fixture_dir.path();
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("fixture.json")).unwrap()).unwrap();
    let mapping: Vec<usize> =
        serde_json::from_value(fixture["mapping_zero_based"].clone()).unwrap();

    let data = dir.path().join("tvsd-data");
    let opts = tvsd_options(&rig, fx, &data);
    let s = import_tvsd(&opts).unwrap();
    println!("{s}");
    assert_eq!(s.file_trials, trials);
    assert!(s.missing_images.is_empty(), "{:?}", s.missing_images);

    // Trials: ALLMUA[t, i, mapping[e]] = ((i*T + t)*C + e) mod 2^22 / 2 - 1024 for
    // electrode e, after the reorder.
    let ds = Dataset::open(&data.join("trials")).unwrap();
    ds.check_rig(&rig).unwrap();
    assert_eq!((ds.n_trials(), ds.trial_len()), (trials, 300));
    let (t_len, c) = (300usize, 1024usize);
    for i in [0, 3, 7, trials - 1] {
        let trial = ds.trial(i);
        for t in [0, 99, 100, 299] {
            for e in [0, 1, 511, 1023] {
                let want = (((i * t_len + t) * c + e) % (1 << 22)) as f32 / 2.0 - 1024.0;
                assert_eq!(trial[t * c + e], want, "trial {i} time {t} electrode {e}");
            }
        }
        assert_eq!(ds.trial_test[i], i % 4 == 3, "trial {i}: TVSD's split");
        assert_eq!(
            ds.trial_session[i] as usize,
            1 + i * days / trials,
            "trial {i}: day"
        );
    }
    assert_ne!(
        mapping,
        (0..1024).collect::<Vec<_>>(),
        "the fixture's mapping reorders"
    );
    assert_eq!(ds.sessions().len(), days);

    // normMUA: train image j, electrode e = j*C + e + 0.25; test repetitions separate.
    let nm = Dataset::open(&data.join("normmua")).unwrap();
    nm.check_rig(&rig).unwrap();
    assert!(nm.meta.time_averaged);
    let n_train = fixture["train_images"].as_u64().unwrap() as usize;
    assert_eq!(nm.n_trials(), n_train + test_images * reps);
    for j in 0..n_train {
        let row = nm.trial(j);
        assert_eq!(row[5], (j * c + 5) as f32 + 0.25, "train image {j}");
        assert!(!nm.trial_test[j]);
    }
    let quality = nm.electrode_quality().unwrap().unwrap();
    assert_eq!(quality[10].snr, 10.0 + (days - 1) as f32 / 8.0);

    // --min-snr: electrodes below it get input 0 in training and in the saved statistics.
    let model = dir.path().join("model");
    let mut o = super::train::options_for(
        &rig,
        &data.join("normmua"),
        &model,
        DecoderKind::EndToEnd,
        1,
    );
    o.min_snr = Some(500.0);
    o.batch = 2;
    monkeysee::train::train::<monkeysee::decoder::CpuTrainBackend>(&o, &Default::default())
        .unwrap();
    let stats = monkeysee::norm::NormStats::load(&model, 1, rig.electrodes.len())
        .unwrap()
        .unwrap();
    let want: Vec<usize> = rig
        .electrodes
        .iter()
        .enumerate()
        .filter(|(_, el)| el.channel < 500)
        .map(|(e, _)| e)
        .collect();
    assert_eq!(stats.dropped, want);
    let mut f = Vec::new();
    nm.features(
        0,
        &rig,
        monkeysee::config::WindowSetKind::Tw15,
        &stats,
        &mut f,
    );
    assert!(want.iter().all(|&e| f[e] == 0.0));
    assert!(f.iter().any(|&v| v != 0.0));
    let mut spatiotemporal = o.clone();
    spatiotemporal.kind = DecoderKind::Spatiotemporal;
    spatiotemporal.out = dir.path().join("st");
    let e = format!(
        "{:#}",
        monkeysee::train::train::<monkeysee::decoder::CpuTrainBackend>(
            &spatiotemporal,
            &Default::default()
        )
        .unwrap_err()
    );
    assert!(e.contains("time-averaged"), "{e}");
}

/// A damaged chunk of ALLMUA loses only its own trials; `--days` keeps those days only.
#[test]
fn import_tvsd_keeps_every_readable_trial_of_a_damaged_file() {
    let dir = tempfile::tempdir().unwrap();
    let rig = small_rig(dir.path());
    let fixture = super::tvsd::Fixture::new(&[
        "--channels",
        "1024",
        "--time",
        "300",
        "--trials",
        "12",
        "--days",
        "3",
        "--chunk-trials",
        "3",
        "--broken",
        "corrupt-chunk",
    ]);
    let opts = |days: Option<Vec<u32>>, out: &str| TvsdImportOptions {
        norm_mua: None,
        days,
        block: 4,
        ..tvsd_options(&rig, fixture.path(), &dir.path().join(out))
    };
    let s = import_tvsd(&opts(None, "all")).unwrap();
    println!("{s}");
    assert_eq!(s.skipped_damaged, 3, "the second chunk's three trials");
    assert!(s.damage.as_deref().unwrap().contains("ALLMUA"), "{s}");
    let ds = Dataset::open(&dir.path().join("all/trials")).unwrap();
    assert_eq!(ds.n_trials(), 9);
    // Day 2 only (trials 4..8): the damaged trials 3..5 include 4 and 5.
    let s = import_tvsd(&opts(Some(vec![2]), "day2")).unwrap();
    assert_eq!((s.skipped_other_days, s.skipped_damaged), (8, 2), "{s}");
    let ds = Dataset::open(&dir.path().join("day2/trials")).unwrap();
    assert!(ds.trial_session.iter().all(|&d| d == 2));
    assert_eq!(ds.n_trials(), 2);
}
