//! Broadband → MUA: the online extractor against an offline reference (scipy's
//! `lfilter`, float64, with the same coefficients) on a simulated headstage signal,
//! sample for sample; the coefficients against scipy's own `butter`.

use std::path::Path;
use std::process::Command;

use monkeysee::config::RigConfig;
use monkeysee::ingest::broadband::{design, MuaExtractor};
use npyz::WriterBuilder;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use super::tvsd::python;

/// `seconds` of a 30 kHz signal on `channels`: Gaussian noise, 50 Hz line pickup and
/// biphasic 1 ms spikes whose rate follows a slow envelope, different per channel.
fn headstage_signal(channels: usize, rate: f64, seconds: f64, seed: u64) -> Vec<f32> {
    let rows = (rate * seconds) as usize;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0, 8.0).unwrap();
    let mut x = vec![0.0f32; rows * channels];
    let spike_len = (rate * 1e-3) as usize;
    for c in 0..channels {
        let phase = c as f64 * 0.7;
        let mut k = 0;
        while k < rows {
            let t = k as f64 / rate;
            let envelope =
                20.0 + 180.0 * (0.5 + 0.5 * (2.0 * std::f64::consts::PI * 3.0 * t + phase).sin());
            if rng.random_bool((envelope / rate).min(1.0)) {
                let amp = rng.random_range(40.0..120.0);
                for j in 0..spike_len.min(rows - k) {
                    let u = j as f64 / spike_len as f64;
                    let w = if u < 0.3 {
                        -(u / 0.3 * std::f64::consts::PI).sin()
                    } else {
                        0.4 * ((u - 0.3) / 0.7 * std::f64::consts::PI).sin()
                    };
                    x[(k + j) * channels + c] += (amp * w) as f32;
                }
                k += spike_len;
            } else {
                k += 1;
            }
        }
        for k in 0..rows {
            let t = k as f64 / rate;
            let line = 30.0 * (2.0 * std::f64::consts::PI * 50.0 * t + phase).sin();
            x[k * channels + c] += (line + noise.sample(&mut rng)) as f32;
        }
    }
    x
}

fn rig() -> RigConfig {
    RigConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/synthetic.toml"))
        .unwrap()
}

#[test]
fn the_online_extractor_matches_scipys_lfilter_sample_for_sample() {
    let rig = rig();
    let cfg = rig.broadband.clone();
    let (ch, rate) = (6, cfg.sampling_rate_hz);
    let input = headstage_signal(ch, rate, 2.0, 11);
    let rows = input.len() / ch;

    // Online, in uneven chunks as LSL delivers them.
    let mut x = MuaExtractor::new(&cfg, ch, rig.sampling_rate_hz).unwrap();
    let d = x.decimation();
    let mut online = Vec::new();
    let mut taken_all = Vec::new();
    let mut out = vec![0.0f32; (2000 / d + 1) * ch];
    let mut taken = vec![0usize; 2000 / d + 1];
    let (mut at, mut step) = (0, 0);
    let sizes = [1, 7, 29, 30, 31, 300, 1999, 2000];
    while at < rows {
        let n = sizes[step % sizes.len()].min(rows - at);
        let got = x.process(&input[at * ch..(at + n) * ch], n, &mut out, &mut taken);
        online.extend_from_slice(&out[..got * ch]);
        taken_all.extend(taken[..got].iter().map(|r| at + r));
        at += n;
        step += 1;
    }
    assert_eq!(taken_all.len(), rows / d);
    assert!(taken_all
        .iter()
        .enumerate()
        .all(|(i, &r)| r == (i + 1) * d - 1));

    // Offline: scipy.
    let dir = tempfile::tempdir().unwrap();
    let write_npy = |path: &Path, data: &[f32], shape: &[u64]| {
        let f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        let mut w = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(shape)
            .writer(f)
            .begin_nd()
            .unwrap();
        w.extend(data.iter().copied()).unwrap();
        w.finish().unwrap();
    };
    write_npy(
        &dir.path().join("input.npy"),
        &input,
        &[rows as u64, ch as u64],
    );
    let filters = design(&cfg).unwrap();
    let job = serde_json::json!({
        "input": dir.path().join("input.npy"),
        "output": dir.path().join("mua.npy"),
        "report": dir.path().join("report.json"),
        "rate_hz": rate,
        "band_hz": cfg.band_hz,
        "band_order": cfg.band_order,
        "lowpass_hz": cfg.lowpass_hz,
        "lowpass_order": cfg.lowpass_order,
        "decimation": d,
        "band": filters.band,
        "lowpass": filters.lowpass,
    });
    std::fs::write(dir.path().join("job.json"), job.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/mua_reference.py");
    let run = Command::new(python())
        .arg(&script)
        .arg(dir.path().join("job.json"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "tools/mua_reference.py failed (does this Python have numpy and scipy? run .ci/run, or set MONKEYSEE_PYTHON):\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    let design_diff = report["design_max_abs_diff"].as_f64().unwrap();
    assert!(
        design_diff < 1e-10,
        "our Butterworth sections differ from scipy's by {design_diff}"
    );

    let bytes = std::fs::read(dir.path().join("mua.npy")).unwrap();
    let reference: Vec<f64> = npyz::NpyFile::new(&bytes[..]).unwrap().into_vec().unwrap();
    assert_eq!(reference.len(), online.len());
    // The first samples go out as NaN while the filters settle from rest.
    let settled = x.settle_rows() as usize * ch;
    assert!(online[..settled].iter().all(|v| v.is_nan()));
    assert!(online[settled..].iter().all(|v| v.is_finite()));
    let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = online[settled..]
        .iter()
        .zip(&reference[settled..])
        .map(|(&a, &b)| (a as f64 - b).abs())
        .fold(0.0f64, f64::max);
    eprintln!(
        "broadband: {} MUA samples, largest difference {worst:.3e} (MUA peak {scale:.1})",
        online.len()
    );
    // Both filter in float64; ours reads and writes float32 (7 digits).
    assert!(
        worst <= 1e-6 * scale,
        "online vs scipy differ by {worst} (peak {scale})"
    );
    // The MUA follows the spike-rate envelope: not a constant.
    let first: Vec<f64> = reference.iter().step_by(ch).copied().collect();
    let (lo, hi) = first
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    assert!(
        hi > 1.5 * lo.max(1e-9),
        "the MUA does not follow the spike rate ({lo}..{hi})"
    );
}

/// simulate --broadband → replay (all three streams) → `run --input broadband` (random
/// weights): the daemon extracts MUA from the raw 30 kHz stream, 1024 channels, and
/// decodes one frame per simulated onset, in onset order.
#[test]
fn a_broadband_replay_decodes_one_frame_per_onset() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use monkeysee::replay::{self, ReplayOptions, Speed};
    use monkeysee::sim::{self, ImageSource, SimConfig, SimOptions};
    use monkeysee::window::Mode;

    use super::common::{small_rig, unique, FakeRig};
    use super::daemon::options;

    let dir = tempfile::tempdir().unwrap();
    let mut rig = small_rig(dir.path());
    let tag = unique("broadband");
    rig.mua.source_id = Some(format!("{tag}-mua"));
    rig.markers.source_id = Some(format!("{tag}-markers"));
    if let Some(b) = rig.broadband.selector.as_mut() {
        b.source_id = Some(format!("{tag}-broadband"));
    }
    let config = SimConfig::default();
    let sim_opts = SimOptions {
        images: ImageSource::parse("procedural:8", &config.leaves, 5).unwrap(),
        rig: rig.clone(),
        config,
        out: dir.path().join("sim"),
        seed: 5,
        animal_seed: 1,
        test_images: 0,
        repeats: 1,
        rf_jitter_deg: 0.0,
        broadband: true,
        progress: false,
    };
    let s = sim::simulate(&sim_opts).unwrap();
    assert_eq!(s.broadband_hz, Some(30_000.0));
    mua_from_the_raw_stream_follows_the_simulated_mua(&sim_opts.out.join("session.xdf"), &rig);
    let ids: Vec<String> = std::fs::read_to_string(sim_opts.out.join("dataset/image_ids.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let trial_image: Vec<i32> = npyz::NpyFile::new(
        std::fs::File::open(sim_opts.out.join("dataset/trial_image.npy")).unwrap(),
    )
    .unwrap()
    .into_vec()
    .unwrap();
    let shown: Vec<String> = trial_image
        .iter()
        .map(|&i| ids[i as usize].clone())
        .collect();

    let mut o = ReplayOptions::new(sim_opts.out.join("session.xdf"));
    o.speed = Speed::Factor(1.0);
    o.wait_for_consumer = Some(60.0);
    o.start_delay = 0.3;
    // The streams the daemon reads (the MUA stream would wait for a consumer forever).
    o.streams = vec![
        "monkeysee-synthetic-broadband".into(),
        rig.markers.name.clone().unwrap(),
    ];
    let handle = replay::spawn(o).unwrap();
    let out = dir.path().join("out");
    let stop = Arc::new(AtomicBool::new(false));
    let fake = FakeRig::new("broadband-unused", 1);
    let mut run = options(rig, &fake, &out, Mode::Event, stop.clone());
    run.broadband = true;
    run.rig.mua.query = None;
    run.rig.markers.query = Some(format!("source_id='{tag}-markers'"));
    run.frames = Some(s.trials as u64);
    let daemon = std::thread::spawn(move || monkeysee::daemon::run(run));
    let sent = handle.join().unwrap();
    let summary = daemon.join().unwrap().unwrap();
    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        sent.samples("monkeysee-synthetic-broadband") as f64,
        s.simulated_s * 30_000.0,
        "every raw sample sent"
    );
    assert!(
        summary.mua_stream.contains("monkeysee-synthetic-broadband"),
        "{}",
        summary.mua_stream
    );
    assert_eq!(
        summary.frames_shown, s.trials as u64,
        "{:?}",
        summary.counters
    );
    assert_eq!(
        summary.images, shown,
        "frames in onset order, one per onset"
    );
    assert_eq!(summary.counter("overruns"), 0);
    // Only the extractor's settling at start-up (25 ms) is NaN.
    assert_eq!(summary.counter("bad_samples"), 25);
}

/// The simulator's raw stream, through the online extractor, gives MUA that follows the
/// session's MUA stream: per electrode, 100 ms means correlate (median r > 0.6; the
/// spikes are Poisson, so single milliseconds do not).
fn mua_from_the_raw_stream_follows_the_simulated_mua(path: &Path, rig: &RigConfig) {
    use monkeysee::xdf::Values;
    let file = monkeysee::xdf::read_file(path).unwrap();
    let stream = |t: &str| {
        file.streams
            .iter()
            .find(|s| s.info.content_type() == t)
            .unwrap()
    };
    let (raw, mua) = (stream("Broadband"), stream("MUA"));
    let ch = rig.channel_count;
    assert_eq!(raw.info.channel_count(), ch);
    assert_eq!(raw.time_stamps.len(), 30 * mua.time_stamps.len());
    assert!(
        (raw.time_stamps[29] - mua.time_stamps[0]).abs() < 1e-3,
        "the streams share a clock"
    );
    let (Values::Int16(counts), Values::Float32(simulated)) = (&raw.values, &mua.values) else {
        panic!("the raw stream is not int16 or the MUA not float32");
    };
    let input: Vec<f32> = counts.iter().map(|&c| f32::from(c) * 0.25).collect();
    let rows = raw.time_stamps.len();
    let mut x = MuaExtractor::new(&rig.broadband, ch, rig.sampling_rate_hz).unwrap();
    let mut out = vec![0.0f32; (rows / 30 + 1) * ch];
    let mut taken = vec![0usize; rows / 30 + 1];
    let n = x.process(&input, rows, &mut out, &mut taken);
    let bins = n / 100;
    let mean = |v: &[f32], c: usize, b: usize| {
        (0..100).map(|k| v[(b * 100 + k) * ch + c]).sum::<f32>() / 100.0
    };
    let mut rs: Vec<f64> = (0..ch)
        .step_by(16)
        .map(|c| {
            // From the second bin: the first holds the filters' settling (NaN).
            let a: Vec<f32> = (1..bins).map(|b| mean(&out, c, b)).collect();
            let b: Vec<f32> = (1..bins).map(|b| mean(simulated, c, b)).collect();
            monkeysee::decoder::linear::pearson(&a, &b)
        })
        .collect();
    rs.sort_by(f64::total_cmp);
    let median = rs[rs.len() / 2];
    eprintln!("broadband: extracted vs simulated MUA, 100 ms means: median r {median:.3} over {} electrodes", rs.len());
    assert!(median > 0.6, "median r {median}");
}
