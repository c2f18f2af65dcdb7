use std::path::{Path, PathBuf};

use monkeysee::rf::RfTable;
use monkeysee::sim::{
    self, ImageSource, SimConfig, SimOptions, SimSummary, MARKER_STREAM, MUA_STREAM,
};
use monkeysee::units::Area;
use monkeysee::xdf;

use super::common::{rig_variant, small_rig};

fn options(dir: &Path, images: &str, seed: u64) -> SimOptions {
    let rig = small_rig(dir);
    let config = SimConfig::default();
    SimOptions {
        images: ImageSource::parse(images, &config.leaves, seed).unwrap(),
        rig,
        config,
        out: dir.join("sim"),
        seed,
        animal_seed: 1,
        test_images: 2,
        repeats: 3,
        rf_jitter_deg: 0.0,
        broadband: false,
        progress: false,
    }
}

fn npy<T: npyz::Deserialize>(path: PathBuf) -> (Vec<u64>, Vec<T>) {
    let f =
        npyz::NpyFile::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap())).unwrap();
    (f.shape().to_vec(), f.into_vec().unwrap())
}

fn simulate(opts: &SimOptions) -> SimSummary {
    sim::simulate(opts).unwrap()
}

/// simulate → XDF → read back: sample counts, time stamps, markers and headers are
/// exactly what the simulation laid out, and the dataset is cut from the same samples.
#[test]
fn session_and_dataset_agree_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), "procedural:10", 3);
    let s = simulate(&opts);
    let out = &opts.out;
    let rig = &opts.rig;
    assert_eq!(
        (s.images, s.test_images, s.train_images, s.trials),
        (10, 2, 8, 8 + 2 * 3)
    );

    let file = xdf::read_file(out.join("session.xdf")).unwrap();
    let mua = file.stream(MUA_STREAM).unwrap();
    let markers = file.stream(MARKER_STREAM).unwrap();
    // 14 presentations in 4 trials of 1900 ms, plus 1 s lead-in and 1 s tail.
    let expected = 2000 + 4 * 1900;
    assert_eq!(mua.sample_count(), expected);
    assert!((s.simulated_s - expected as f64 / 1000.0).abs() < 1e-9);
    for (k, t) in mua.time_stamps.iter().enumerate() {
        assert!(
            (t - (100.0 + k as f64 / 1000.0)).abs() < 1e-9,
            "stamp {k}: {t}"
        );
    }
    // Headers: labels, area and array per channel, stimulus folder.
    let info = &mua.info;
    assert_eq!(info.channel_count(), rig.channel_count);
    assert_eq!(info.channel_labels()[0], "e0001");
    assert_eq!(info.channel_labels()[1023], "e1024");
    let areas = info.channel_field("area");
    let arrays = info.channel_field("array");
    let live = info.channel_field("live");
    for a in &rig.arrays {
        for c in a.channels.clone() {
            assert_eq!(areas[c], a.area.name());
            assert_eq!(arrays[c], a.id.to_string());
            assert_eq!(live[c], (!a.dead).to_string());
        }
    }
    assert_eq!(info.name(), "monkeysee-synthetic-mua");
    assert_eq!(
        markers.info.desc_text("stimuli/directory").as_deref(),
        Some("images")
    );

    // Markers: on/off pairs at the dataset's onsets, naming the dataset's images.
    let ids: Vec<String> = std::fs::read_to_string(out.join("dataset/image_ids.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let (_, trial_image) = npy::<i32>(out.join("dataset/trial_image.npy"));
    let (_, trial_split) = npy::<u8>(out.join("dataset/trial_split.npy"));
    let (_, trial_onset) = npy::<f64>(out.join("dataset/trial_onset.npy"));
    let texts = markers.values.as_strings().unwrap();
    assert_eq!(texts.len(), 2 * s.trials);
    for (p, onset) in trial_onset.iter().enumerate() {
        assert_eq!(
            texts[2 * p],
            format!("stim_on {}", ids[trial_image[p] as usize])
        );
        assert_eq!(texts[2 * p + 1], "stim_off");
        assert!((markers.time_stamps[2 * p] - onset).abs() < 1e-9);
        assert!((markers.time_stamps[2 * p + 1] - onset - 0.2).abs() < 1e-9);
    }
    // Test images shown `repeats` times, train images once.
    for img in 0..10 {
        let shown: Vec<usize> = (0..s.trials).filter(|&p| trial_image[p] == img).collect();
        let test = trial_split[shown[0]] == 1;
        assert!(shown.iter().all(|&p| (trial_split[p] == 1) == test));
        assert_eq!(shown.len(), if test { 3 } else { 1 }, "image {img}");
    }

    // Responses are exactly the session's samples from −100 to +199 ms.
    let (shape, responses) = npy::<f32>(out.join("dataset/responses.npy"));
    assert_eq!(shape, [s.trials as u64, 300, 1024]);
    let values = mua.values.as_slice::<f32>().unwrap();
    for (p, onset) in trial_onset.iter().enumerate() {
        let first = ((onset - 100.0) * 1000.0).round() as usize - 100;
        let from_xdf = &values[first * 1024..(first + 300) * 1024];
        assert!(
            responses[p * 300 * 1024..(p + 1) * 300 * 1024] == *from_xdf,
            "trial {p} differs from the session"
        );
    }
    // Images: the PNG beside the session is the dataset's image.
    let (ishape, pixels) = npy::<u8>(out.join("dataset/images.npy"));
    assert_eq!(ishape, [10, 32, 32, 3]);
    let png = image::open(out.join(format!("images/{}.png", ids[4])))
        .unwrap()
        .to_rgb8();
    assert_eq!(png.as_raw()[..], pixels[4 * 32 * 32 * 3..5 * 32 * 32 * 3]);

    // RF truth is the rig's table; without jitter the decoder's table equals it.
    let truth = RfTable::load(&out.join("rf-truth.csv")).unwrap();
    let table = RfTable::load(&out.join("rf-table.csv")).unwrap();
    let rig_table = rig.rf.table.as_ref().unwrap();
    assert_eq!(truth.entries.len(), rig_table.entries.len());
    for (a, b) in truth.entries.iter().zip(&rig_table.entries) {
        assert_eq!(a.channel, b.channel);
        assert!((a.x_deg - b.x_deg).abs() < 1e-4 && (a.size_deg - b.size_deg).abs() < 1e-4);
    }
    assert_eq!(truth, table);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("dataset/dataset.json")).unwrap())
            .unwrap();
    assert_eq!(meta["trials"], s.trials);
    assert_eq!(meta["channels"], 1024);
}

/// The same seed gives the same bytes; another seed gives another session.
#[test]
fn deterministic_for_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let a = options(dir.path(), "procedural:6", 11);
    let mut b = a.clone();
    b.out = dir.path().join("again");
    let mut c = a.clone();
    c.out = dir.path().join("other");
    c.seed = 12;
    c.images = ImageSource::parse("procedural:6", &c.config.leaves, 12).unwrap();
    simulate(&a);
    // The same session on one thread: blocks and images are generated independently,
    // so the thread count cannot change a byte.
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| simulate(&b));
    simulate(&c);
    let read = |o: &SimOptions, f: &str| std::fs::read(o.out.join(f)).unwrap();
    for f in [
        "session.xdf",
        "dataset/responses.npy",
        "dataset/images.npy",
        "dataset/trial_image.npy",
    ] {
        assert!(
            read(&a, f) == read(&b, f),
            "{f} differs between runs with one seed"
        );
        assert!(
            read(&a, f) != read(&c, f),
            "{f} is the same for seeds 11 and 12"
        );
    }
}

/// The simulated cortex behaves like the recordings it stands in for: responses rise
/// above baseline in each area's TW-15 window, peak in area order (V1 before V4 before
/// IT), and test repeats of one image agree far better than different images do.
#[test]
fn responses_are_area_timed_and_image_specific() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), "procedural:12", 5);
    opts.test_images = 6;
    opts.repeats = 4;
    let s = simulate(&opts);
    let (_, r) = npy::<f32>(opts.out.join("dataset/responses.npy"));
    let (_, trial_image) = npy::<i32>(opts.out.join("dataset/trial_image.npy"));
    let (_, split) = npy::<u8>(opts.out.join("dataset/trial_split.npy"));
    let rig = &opts.rig;
    let at = |p: usize, t: usize, c: usize| r[(p * 300 + t) * 1024 + c] as f64;
    let mut peaks = Vec::new();
    for area in Area::ALL {
        let chans: Vec<usize> = rig
            .electrodes
            .iter()
            .filter(|e| e.area == area)
            .map(|e| e.channel)
            .collect();
        let psth: Vec<f64> = (0..300)
            .map(|t| {
                (0..s.trials)
                    .map(|p| chans.iter().map(|&c| at(p, t, c)).sum::<f64>())
                    .sum::<f64>()
                    / (s.trials * chans.len()) as f64
            })
            .collect();
        let baseline = psth[..100].iter().sum::<f64>() / 100.0;
        let w = rig.windows.tw15[area.index()];
        let (a, b) = (100 + w.start.0 as usize, 100 + w.end().0 as usize);
        let window = psth[a..b].iter().sum::<f64>() / (b - a) as f64;
        assert!(
            window > baseline + 0.3,
            "{area}: window {window:.2} vs baseline {baseline:.2}"
        );
        let peak = (100..300)
            .max_by(|&x, &y| psth[x].total_cmp(&psth[y]))
            .unwrap()
            - 100;
        peaks.push(peak);

        // Per-electrode window means: repeats of an image vs different images.
        let mean = |p: usize, c: usize| (a..b).map(|t| at(p, t, c)).sum::<f64>() / (b - a) as f64;
        let test: Vec<usize> = (0..s.trials).filter(|&p| split[p] == 1).collect();
        let (mut same, mut diff, mut ns, mut nd) = (0.0, 0.0, 0, 0);
        for (i, &p) in test.iter().enumerate() {
            for &q in &test[i + 1..] {
                let d: f64 = chans
                    .iter()
                    .map(|&c| (mean(p, c) - mean(q, c)).powi(2))
                    .sum();
                if trial_image[p] == trial_image[q] {
                    same += d;
                    ns += 1;
                } else {
                    diff += d;
                    nd += 1;
                }
            }
        }
        let (same, diff) = (same / ns as f64, diff / nd as f64);
        assert!(
            diff > 2.0 * same,
            "{area}: repeat distance {same:.3} vs between images {diff:.3}"
        );
    }
    assert!(
        peaks[0] < peaks[1] && peaks[1] < peaks[2],
        "PSTH peaks (ms) {peaks:?}"
    );
}

/// A folder of PNG and JPEG images: ids from file names; a broken file is named.
#[test]
fn images_from_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    for (name, colour) in [
        ("red apple.png", [200u8, 30, 30]),
        ("sky.jpg", [40, 90, 220]),
        ("grass.png", [30, 160, 40]),
    ] {
        let img = image::RgbImage::from_pixel(48, 40, image::Rgb(colour));
        img.save(imgs.join(name)).unwrap();
    }
    std::fs::write(imgs.join("notes.txt"), "not an image").unwrap();
    let mut opts = options(dir.path(), imgs.to_str().unwrap(), 1);
    opts.test_images = 1;
    let s = simulate(&opts);
    assert_eq!(s.images, 3);
    let ids = std::fs::read_to_string(opts.out.join("dataset/image_ids.txt")).unwrap();
    assert_eq!(ids, "grass\nred_apple\nsky\n");
    assert!(opts.out.join("images/red_apple.png").exists());
    let (_, pixels) = npy::<u8>(opts.out.join("dataset/images.npy"));
    assert_eq!(&pixels[32 * 32 * 3..32 * 32 * 3 + 3], &[200, 30, 30]);

    std::fs::write(imgs.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let mut opts = options(dir.path(), imgs.to_str().unwrap(), 1);
    opts.out = dir.path().join("sim2");
    let e = format!("{:#}", sim::simulate(&opts).unwrap_err());
    assert!(e.contains("broken.png"), "{e}");
}

/// Bad requests and configs give errors that say what to fix.
#[test]
fn bad_simulations_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), "procedural:4", 1);
    opts.test_images = 5;
    let e = sim::simulate(&opts).unwrap_err().to_string();
    assert!(
        e.contains("--test-images 5") && e.contains("4 images"),
        "{e}"
    );

    let mut opts = options(dir.path(), "procedural:4", 1);
    opts.repeats = 0;
    assert!(sim::simulate(&opts)
        .unwrap_err()
        .to_string()
        .contains("--repeats"));

    let mut opts = options(dir.path(), "procedural:4", 1);
    opts.rf_jitter_deg = f64::NAN;
    assert!(sim::simulate(&opts)
        .unwrap_err()
        .to_string()
        .contains("--rf-jitter"));

    // More days than trials to share among them, and no day at all.
    let mut opts = options(dir.path(), "procedural:4", 1);
    opts.config.design.days = 3;
    let e = sim::simulate(&opts).unwrap_err().to_string();
    assert!(e.contains("3 days") && e.contains("has 8"), "{e}");
    opts.config.design.days = 0;
    let e = sim::simulate(&opts).unwrap_err().to_string();
    assert!(e.contains("design.days"), "{e}");

    let mut opts = options(dir.path(), "procedural:4", 1);
    let variant = dir.path().join("500hz");
    std::fs::create_dir(&variant).unwrap();
    let (p, _) = rig_variant(
        &variant,
        &[("sampling_rate_hz = 1000.0", "sampling_rate_hz = 500.0")],
    );
    opts.rig = monkeysee::config::RigConfig::load(&p).unwrap();
    let e = sim::simulate(&opts).unwrap_err().to_string();
    assert!(e.contains("1000 Hz") && e.contains("500"), "{e}");

    let cortex = dir.path().join("cortex.toml");
    std::fs::write(&cortex, "[V4]\nlatency_ms = 65.0\nnoise_sd = -0.5\n").unwrap();
    let e = SimConfig::load(&cortex).unwrap_err().to_string();
    assert!(
        e.contains("cortex.toml") && e.contains("V4.noise_sd"),
        "{e}"
    );
    std::fs::write(&cortex, "[V4]\nlatncy_ms = 65.0\n").unwrap();
    let e = SimConfig::load(&cortex).unwrap_err().to_string();
    assert!(e.contains("latncy_ms") && e.contains("line 2"), "{e}");
}

/// --rf-jitter moves the decoder's table away from the truth by about the SD asked for.
#[test]
fn rf_jitter_perturbs_only_the_decoders_table() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), "procedural:2", 1);
    opts.test_images = 0;
    opts.rf_jitter_deg = 0.5;
    simulate(&opts);
    let truth = RfTable::load(&opts.out.join("rf-truth.csv")).unwrap();
    let table = RfTable::load(&opts.out.join("rf-table.csv")).unwrap();
    let n = truth.entries.len() as f64;
    let sd = (truth
        .entries
        .iter()
        .zip(&table.entries)
        .map(|(a, b)| (a.x_deg - b.x_deg).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    assert!(
        (0.4..0.6).contains(&sd),
        "x error SD {sd:.3} for --rf-jitter 0.5"
    );
}

/// `simulate --dataset-only` writes the dataset without the session: the same trials as
/// `simulate`'s dataset and as `monkeysee dataset` cuts from `simulate`'s session file,
/// value for value; `--form windows` writes each channel's means over the TW-15, TW-3
/// and baseline windows of those trials, as the decoders compute them from the trials,
/// and is refused for a rig with other windows.
#[test]
fn a_dataset_only_run_is_the_dataset_cut_from_the_session() {
    use monkeysee::config::WindowSetKind;
    use monkeysee::dataset::from_xdf::{dataset_from_xdf, XdfDatasetOptions};
    use monkeysee::dataset::Dataset;
    use monkeysee::sim::DatasetForm;

    let dir = tempfile::tempdir().unwrap();
    let full = options(dir.path(), "procedural:10", 5);
    simulate(&full);
    let mut only = full.clone();
    only.out = dir.path().join("only");
    sim::simulate_dataset(&only, DatasetForm::Trials).unwrap();
    assert!(!only.out.join("session.xdf").exists());
    assert!(!only.out.join("images").exists());
    let mut windows = full.clone();
    windows.out = dir.path().join("windows");
    sim::simulate_dataset(&windows, DatasetForm::Windows).unwrap();

    // simulate's session, cut by `monkeysee dataset`.
    let cut = dir.path().join("cut");
    let made = dataset_from_xdf(&XdfDatasetOptions {
        rig: full.rig.clone(),
        session: full.out.join("session.xdf"),
        images: full.out.join("images"),
        out: cut.clone(),
        mua_query: None,
        marker_query: None,
        onset_regex: None,
        min_repeats: full.repeats,
        progress: false,
    })
    .unwrap();
    let (a, b, c) = (
        Dataset::open(&full.out.join("dataset")).unwrap(),
        Dataset::open(&only.out.join("dataset")).unwrap(),
        Dataset::open(&cut).unwrap(),
    );
    assert_eq!(made.onsets, a.n_trials());
    for d in [&b, &c] {
        assert_eq!(d.n_trials(), a.n_trials());
        for t in 0..a.n_trials() {
            assert_eq!(d.image_ids[d.trial_image[t]], a.image_ids[a.trial_image[t]]);
            assert_eq!(d.trial_test[t], a.trial_test[t], "trial {t}: split");
            assert_eq!(d.trial(t), a.trial(t), "trial {t}: responses");
        }
    }
    // The dataset-only run's files are simulate's, byte for byte.
    for f in [
        "responses.npy",
        "images.npy",
        "trial_image.npy",
        "trial_onset.npy",
    ] {
        let read = |o: &SimOptions| std::fs::read(o.out.join("dataset").join(f)).unwrap();
        assert!(read(&full) == read(&only), "{f} differs");
    }

    // Window means: every window set's and the baseline's means, as the trials give them.
    let d = Dataset::open(&windows.out.join("dataset")).unwrap();
    assert!(!d.meta.time_averaged && d.meta.window_means.is_some());
    let rig = &full.rig;
    d.check_rig(rig).unwrap();
    assert_eq!(d.trial_len(), 2 + rig.windows.tw3_starts.len());
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut our_base, mut their_base) = (Vec::new(), Vec::new());
    let as_stored = |v: &[f64]| -> Vec<f64> { v.iter().map(|&v| v as f32 as f64).collect() };
    for t in 0..a.n_trials() {
        for set in [WindowSetKind::Tw15, WindowSetKind::Tw3] {
            d.raw_means(t, rig, set, &mut ours, Some(&mut our_base));
            a.raw_means(t, rig, set, &mut theirs, Some(&mut their_base));
            assert_eq!(ours, as_stored(&theirs), "trial {t}, {set:?}");
            assert_eq!(our_base, as_stored(&their_base), "trial {t}: baseline");
        }
    }
    let size = |o: &SimOptions| {
        std::fs::metadata(o.out.join("dataset/responses.npy"))
            .unwrap()
            .len()
    };
    assert!(
        size(&windows) * 40 < size(&full),
        "the windows form is 7/300 of the trials"
    );
    // Taken over other windows than a rig's: refused for that rig.
    let mut other = rig.clone();
    other.windows.tw15[0].start.0 += 5.0;
    let err = d.check_rig(&other).unwrap_err().to_string();
    assert!(
        err.contains("window means") && err.contains("--form trials"),
        "{err}"
    );
}

/// A session over recording days: each trial's day is its session in the dataset (in
/// onset order, equal shares), and each day's drift shows in its statistics, which
/// `train` normalises each session with.
#[test]
fn days_are_the_datasets_sessions_and_each_drifts() {
    use monkeysee::config::WindowSetKind;
    use monkeysee::dataset::Dataset;
    use monkeysee::sim::DatasetForm;

    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), "procedural:42", 6);
    opts.config.design.days = 2;
    opts.config.design.day_gain_sd = 0.3;
    sim::simulate_dataset(&opts, DatasetForm::Windows).unwrap();
    let ds = Dataset::open(&opts.out.join("dataset")).unwrap();
    let sessions = ds.sessions();
    assert_eq!(sessions.len(), 2);
    let n = ds.n_trials();
    // Days start with a trial (4 images): half the presentations, rounded down to one.
    assert_eq!(sessions[0].len(), n / 2 / 4 * 4);
    assert_eq!(sessions[0].len() + sessions[1].len(), n);
    let last_of_first = sessions[0]
        .iter()
        .map(|&t| ds.trial_onset[t])
        .fold(f64::MIN, f64::max);
    assert!(sessions[1]
        .iter()
        .all(|&t| ds.trial_onset[t] > last_of_first));
    // Each electrode's mean over a day moves with the day's gain (a 30 % SD on the log);
    // the two halves of a one-day session differ only by their images and noise.
    let median_shift = |ds: &Dataset, halves: &[Vec<usize>]| {
        let stats: Vec<_> = (halves.iter())
            .map(|s| ds.norm_stats(s, &opts.rig, WindowSetKind::Tw15))
            .collect();
        let mut r: Vec<f64> = (stats[0].mean.iter().zip(&stats[1].mean))
            .filter(|(a, _)| a.abs() > 1e-6)
            .map(|(a, b)| ((b / a) as f64).ln().abs())
            .collect();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    let drifted = median_shift(&ds, &sessions);

    // One day: one session, no trial_session.npy.
    let mut one = options(dir.path(), "procedural:42", 6);
    one.out = dir.path().join("one");
    sim::simulate_dataset(&one, DatasetForm::Windows).unwrap();
    assert!(!one.out.join("dataset/trial_session.npy").exists());
    let steady = Dataset::open(&one.out.join("dataset")).unwrap();
    assert_eq!(steady.sessions().len(), 1);
    let halves: Vec<Vec<usize>> = sessions.clone();
    let still = median_shift(&steady, &halves);
    assert!(
        drifted > 0.1 && still < drifted / 3.0,
        "median |log ratio| of the halves' means: {drifted} over two days, {still} in one"
    );
}
