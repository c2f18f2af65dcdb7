use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use lsl::ExPushable;
use monkeysee::config::RigConfig;
use monkeysee::daemon::{self, ModelSource, Output, RunOptions, RunSummary};
use monkeysee::decoder::DecoderKind;
use monkeysee::window::Mode;

use super::common::{small_rig, FakeRig};

pub(crate) fn options(
    rig: RigConfig,
    fake: &FakeRig,
    out: &Path,
    mode: Mode,
    stop: Arc<AtomicBool>,
) -> RunOptions {
    let mut rig = rig;
    rig.mua.query = Some(fake.mua_query());
    rig.markers.query = Some(fake.marker_query());
    let model = ModelSource::Random {
        kind: DecoderKind::EndToEnd,
        width: 4,
        seed: 7,
    };
    RunOptions {
        mode,
        seconds: Some(60.0),
        hdr_log: Some(out.join("latency.hlog")),
        decode_threads: 1,
        realtime: Default::default(),
        stop,
        ..RunOptions::new(rig, model, Output::Headless(out.to_path_buf()))
    }
}

/// Streams `seconds` of 1 kHz data in real time with onsets at `onsets` (seconds
/// after the first sample). `edit(k, row)` may spoil sample k; `skip(k)` drops it.
/// Returns the first sample's LSL time (onset k is stamped that + `onsets[k]`).
pub(crate) fn stream(
    fake: &FakeRig,
    seconds: f64,
    onsets: &[f64],
    edit: impl Fn(usize, &mut Vec<f32>),
    skip: impl Fn(usize) -> bool,
) -> f64 {
    let n = (seconds * 1000.0) as usize;
    let t0 = lsl::local_clock() + 0.05;
    let wall0 = Instant::now() + Duration::from_millis(50);
    let mut row = vec![0.0f32; fake.channels];
    let mut next_onset = 0;
    for k in 0..n {
        let t = t0 + k as f64 / 1000.0;
        while next_onset < onsets.len() && t0 + onsets[next_onset] <= t {
            let id = format!("img_{next_onset}");
            fake.markers
                .push_sample_ex(
                    &vec![format!("stim_on {id}")],
                    t0 + onsets[next_onset],
                    true,
                )
                .unwrap();
            next_onset += 1;
        }
        if !skip(k) {
            for (c, v) in row.iter_mut().enumerate() {
                *v = ((k * 31 + c * 7) % 100) as f32 / 50.0;
            }
            edit(k, &mut row);
            fake.mua.push_sample_ex(&row, t, k % 10 == 9).unwrap();
        }
        if k % 10 == 9 {
            let due = wall0 + Duration::from_millis(k as u64 + 1);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                thread::sleep(d);
            }
        }
    }
    t0
}

fn run_session(
    tag: &str,
    seconds: f64,
    onsets: &[f64],
    edit: impl Fn(usize, &mut Vec<f32>),
    skip: impl Fn(usize) -> bool,
) -> (RunSummary, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let rig = small_rig(dir.path());
    let fake = FakeRig::new(tag, rig.channel_count);
    let out = dir.path().join("out");
    let stop = Arc::new(AtomicBool::new(false));
    let opts = options(rig, &fake, &out, Mode::Event, stop.clone());
    let daemon = thread::spawn(move || daemon::run(opts));
    assert!(fake.wait_for_daemon(30.0), "the daemon never connected");
    stream(&fake, seconds, onsets, edit, skip);
    // Let the last frame through the decoder, then stop as Ctrl-C would.
    thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let summary = daemon.join().unwrap().unwrap();
    (summary, dir)
}

/// A running daemon on a fresh fake rig, with `edit` applied to its options.
pub(crate) struct Running {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) fake: FakeRig,
    stop: Arc<AtomicBool>,
    daemon: thread::JoinHandle<anyhow::Result<RunSummary>>,
}

impl Running {
    pub(crate) fn start(tag: &str, mode: Mode, edit: impl FnOnce(&mut RunOptions)) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let rig = small_rig(dir.path());
        let fake = FakeRig::new(tag, rig.channel_count);
        let stop = Arc::new(AtomicBool::new(false));
        let mut opts = options(rig, &fake, &dir.path().join("out"), mode, stop.clone());
        edit(&mut opts);
        let daemon = thread::spawn(move || daemon::run(opts));
        Running {
            _dir: dir,
            fake,
            stop,
            daemon,
        }
    }

    /// Stops as Ctrl-C would and returns the summary.
    pub(crate) fn stop(self) -> RunSummary {
        self.stop.store(true, Ordering::Relaxed);
        self.daemon.join().unwrap().unwrap()
    }
}

#[test]
fn daemon_shows_one_frame_per_onset_over_real_lsl() {
    let onsets = [0.2, 0.6, 1.0, 1.4, 1.8, 2.2];
    let (s, dir) = run_session("e2e", 2.6, &onsets, |_, _| {}, |_| false);
    assert_eq!(s.counter("frames_built"), 6, "{:?}", s.counters);
    assert_eq!(s.frames_shown, 6, "{:?}", s.counters);
    assert_eq!(
        s.images,
        (0..6).map(|i| format!("img_{i}")).collect::<Vec<_>>()
    );
    assert_eq!(s.counter("overruns"), 0);
    assert_eq!(s.counter("marker_overruns"), 0);
    assert_eq!(s.counter("samples"), 2600);
    let e2e = s.stage("end-to-end").unwrap();
    assert_eq!(e2e.count, 6);
    assert!(e2e.p50_ms > 0.0 && e2e.max_ms >= e2e.p50_ms);
    assert_eq!(s.stage("decode").unwrap().count, 6);
    let frames = std::fs::read_dir(dir.path().join("out/frames"))
        .unwrap()
        .count();
    assert_eq!(frames, 6);
    assert!(dir.path().join("out/contact_sheet.png").exists());
    let log = std::fs::read_to_string(dir.path().join("out/latency.hlog")).unwrap();
    assert!(
        log.contains("#[StartTime:") && log.contains("Tag=end-to-end,"),
        "{log}"
    );
}

#[test]
fn nan_samples_and_gaps_are_counted_and_their_frames_skipped() {
    // Onset 1 clean; onset 2 has a NaN in its windows; onset 3 a 40 ms gap; onset 4 clean.
    let onsets = [0.2, 0.6, 1.0, 1.4];
    let (s, _dir) = run_session(
        "bad",
        1.8,
        &onsets,
        |k, row| {
            if k == 700 {
                row[5] = f32::NAN;
                row[900] = f32::INFINITY;
            }
        },
        |k| (1080..1120).contains(&k),
    );
    assert_eq!(s.counter("bad_samples"), 1, "{:?}", s.counters);
    assert_eq!(s.counter("frames_skipped_bad"), 1, "{:?}", s.counters);
    assert_eq!(s.counter("frames_skipped_gap"), 1, "{:?}", s.counters);
    assert!(s.counter("gaps") >= 1);
    assert_eq!(s.frames_shown, 2);
    assert_eq!(s.images, vec!["img_0".to_string(), "img_3".to_string()]);
}

#[test]
fn unknown_markers_are_counted() {
    let run = Running::start("unknown", Mode::Event, |_| {});
    assert!(run.fake.wait_for_daemon(30.0));
    for m in ["hello", "stim_onset 3", "stim_off"] {
        run.fake
            .markers
            .push_sample_ex(&vec![m.to_string()], lsl::local_clock(), true)
            .unwrap();
    }
    thread::sleep(Duration::from_millis(800));
    let s = run.stop();
    assert_eq!(s.counter("markers"), 3);
    assert_eq!(s.counter("unknown_markers"), 2);
    assert_eq!(s.frames_shown, 0);
}

#[test]
fn a_stream_with_the_wrong_channel_count_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rig = small_rig(dir.path());
    let fake = FakeRig::new("wrongch", 100);
    let opts = options(
        rig,
        &fake,
        &dir.path().join("out"),
        Mode::Event,
        Arc::new(AtomicBool::new(false)),
    );
    let err = format!("{:#}", daemon::run(opts).unwrap_err());
    assert!(
        err.contains("has 100 channels but the rig config declares 1024"),
        "{err}"
    );
}

#[test]
fn a_missing_stream_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut rig = small_rig(dir.path());
    rig.mua.query = Some("name='no-such-stream-anywhere'".into());
    let fake = FakeRig::new("absent", 8);
    let mut opts = options(
        rig.clone(),
        &fake,
        &dir.path().join("out"),
        Mode::Event,
        Arc::new(AtomicBool::new(false)),
    );
    opts.rig.mua.query = rig.mua.query.clone();
    opts.resolve_timeout = 1.0;
    let err = format!("{:#}", daemon::run(opts).unwrap_err());
    assert!(
        err.contains("no LSL stream matches name='no-such-stream-anywhere'"),
        "{err}"
    );
}

/// An error after the pipeline started (here: an HdrHistogram log in a folder that does
/// not exist, found after the threads are up) stops and joins every pipeline thread:
/// the daemon's inlets are gone, so the outlets see no consumer.
#[test]
fn an_error_after_start_up_leaves_no_pipeline_thread_running() {
    let dir = tempfile::tempdir().unwrap();
    let rig = small_rig(dir.path());
    let fake = FakeRig::new("late-error", rig.channel_count);
    let mut opts = options(
        rig,
        &fake,
        &dir.path().join("out"),
        Mode::Event,
        Arc::new(AtomicBool::new(false)),
    );
    opts.hdr_log = Some(dir.path().join("no-such-folder/latency.hlog"));
    opts.record = Some(dir.path().join("recorded.xdf"));
    let err = format!("{:#}", daemon::run(opts).unwrap_err());
    assert!(err.contains("HdrHistogram log"), "{err}");
    // The inlets were connected (the error came after start-up) and are now dropped. An
    // outlet notices a closed connection when it next sends, so keep sending.
    use lsl::ExPushable;
    let row = vec![0.0f32; fake.channels];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while (fake.mua.have_consumers() || fake.markers.have_consumers())
        && std::time::Instant::now() < deadline
    {
        let _ = fake.mua.push_sample_ex(&row, lsl::local_clock(), true);
        let _ =
            fake.markers
                .push_sample_ex(&vec!["stim_off".to_string()], lsl::local_clock(), true);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !fake.mua.have_consumers() && !fake.markers.have_consumers(),
        "an inlet outlived run(): a pipeline thread is still running"
    );
    // The recorder was joined too: its file has its headers.
    let file = monkeysee::xdf::read_file(dir.path().join("recorded.xdf"));
    let streams = match file {
        Ok(f) => f.streams.len(),
        Err(p) => p.file.streams.len(),
    };
    assert_eq!(streams, 2);
}

#[test]
fn sliding_mode_runs_without_a_marker_stream() {
    let run = Running::start("sliding", Mode::Sliding, |o| {
        o.rig.markers.query = Some("name='no-marker-stream-here'".into());
        o.resolve_timeout = 3.0;
    });
    assert!(run.fake.mua.wait_for_consumers(30.0));
    stream(&run.fake, 1.2, &[], |_, _| {}, |_| false);
    thread::sleep(Duration::from_millis(800));
    let s = run.stop();
    assert!(s.marker_stream.is_none());
    // One frame per 10 ms hop once the windows (199 ms) are covered.
    let built = s.counter("frames_built");
    assert!(
        (80..=102).contains(&built),
        "{built} sliding frames from 1.2 s"
    );
    let accounted = s.frames_shown
        + s.counter("frames_dropped_decode")
        + s.counter("frames_superseded")
        + s.counter("frames_dropped_window");
    assert_eq!(
        accounted, built,
        "every frame is shown or counted as dropped: {:?}",
        s.counters
    );
}

#[test]
fn event_mode_without_a_marker_stream_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let rig = small_rig(dir.path());
    let fake = FakeRig::new("nomarkers", rig.channel_count);
    let mut opts = options(
        rig,
        &fake,
        &dir.path().join("out"),
        Mode::Event,
        Arc::new(AtomicBool::new(false)),
    );
    opts.rig.markers.query = Some("name='no-marker-stream-here'".into());
    opts.resolve_timeout = 1.5;
    let err = format!("{:#}", daemon::run(opts).unwrap_err());
    assert!(
        err.contains("marker stream") && err.contains("no-marker-stream-here"),
        "{err}"
    );
}

#[test]
fn a_stream_that_vanishes_and_comes_back_is_counted_and_decoding_resumes() {
    let mut run = Running::start("vanish", Mode::Event, |_| {});
    assert!(run.fake.wait_for_daemon(30.0));
    stream(&run.fake, 0.6, &[0.2], |_, _| {}, |_| false);
    // The acquisition software dies; the daemon notices the silence; it comes back
    // under the same name and source_id: liblsl recovers the inlet.
    let (source_id, channels) = (run.fake.mua_name.clone(), run.fake.channels);
    run.fake
        .replace_mua(Duration::from_millis(1600), &source_id, channels);
    assert!(
        run.fake.mua.wait_for_consumers(30.0),
        "the inlet never recovered"
    );
    stream(&run.fake, 0.6, &[0.2], |_, _| {}, |_| false);
    thread::sleep(Duration::from_millis(1500));
    let s = run.stop();
    // The silence after the last sample (before the stop) may count as a second loss.
    assert!(
        (1..=2).contains(&s.counter("stream_lost")),
        "{:?}",
        s.counters
    );
    assert_eq!(s.counter("stream_restored"), 1, "{:?}", s.counters);
    assert_eq!(s.frames_shown, 2, "{:?}", s.counters);
}

/// A model folder for `rig` in `dir`: random end-to-end weights (width 4) and, with
/// `sd`, the statistics beside them: mean 0 and SD `sd` for every input.
fn model_folder(dir: &Path, rig: &RigConfig, sd: Option<f32>) -> std::path::PathBuf {
    use monkeysee::config::{decoder_config, window_set};
    use monkeysee::decoder::{CpuBackend, Decoder};
    use monkeysee::norm::{NormStats, ESTIMATOR};
    let cfg = decoder_config(rig, DecoderKind::EndToEnd, 4);
    Decoder::<CpuBackend>::random(cfg, 7, &Default::default())
        .unwrap()
        .save(dir)
        .unwrap();
    if let Some(sd) = sd {
        let n = rig.electrodes.len();
        let windows = rig
            .windows
            .windows_per_electrode(window_set(DecoderKind::EndToEnd));
        let stats = NormStats {
            estimator: ESTIMATOR.into(),
            windows,
            mean: vec![0.0; windows * n],
            std: vec![sd; windows * n],
            baseline_mean: vec![0.0; n],
            baseline_std: vec![1.0; n],
            presentations: 100,
            dropped: Vec::new(),
        };
        std::fs::write(
            dir.join("normalization.json"),
            serde_json::to_string(&stats).unwrap(),
        )
        .unwrap();
    }
    dir.to_path_buf()
}

/// A model folder without the statistics it was trained with still runs, with a
/// warning that says what that means and how to fix it; with them, no warning.
#[test]
fn a_model_folder_without_normalization_json_is_warned_about() {
    let models = tempfile::tempdir().unwrap();
    for (name, sd) in [("bare", None), ("with-stats", Some(1.0))] {
        let dir = models.path().join(name);
        let run = Running::start(&format!("nonorm-{name}"), Mode::Event, |o| {
            o.model = ModelSource::Dir(model_folder(&dir, &o.rig, sd));
        });
        assert!(run.fake.wait_for_daemon(30.0), "the daemon never connected");
        let s = run.stop();
        if sd.is_some() {
            assert_eq!(s.warnings, Vec::<String>::new());
            continue;
        }
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        let w = &s.warnings[0];
        for says in [
            &format!("{} has no normalization.json", dir.display()),
            "z-scored with this session's statistics alone",
            "`monkeysee train` writes normalization.json",
        ] {
            assert!(w.contains(says), "{says:?} not in: {w}");
        }
    }
}

/// A frame the decoder refuses is counted, and the run's summary says why: here the
/// first onset's windows hold samples of 1e37, which the model's SD of 1e-3 z-scores to
/// infinity; the second onset decodes.
#[test]
fn decode_errors_are_reported_with_their_text() {
    let models = tempfile::tempdir().unwrap();
    let run = Running::start("decode-error", Mode::Event, |o| {
        o.model = ModelSource::Dir(model_folder(models.path(), &o.rig, Some(1e-3)));
    });
    assert!(run.fake.wait_for_daemon(30.0), "the daemon never connected");
    stream(
        &run.fake,
        1.0,
        &[0.2, 0.6],
        |k, row| {
            if (200..400).contains(&k) {
                row.fill(1e37);
            }
        },
        |_| false,
    );
    thread::sleep(Duration::from_millis(1500));
    let s = run.stop();
    assert_eq!(s.counter("decode_errors"), 1, "{:?}", s.counters);
    assert_eq!(s.frames_shown, 1, "{:?}", s.counters);
    assert_eq!(s.decode_errors.len(), 1, "{:?}", s.decode_errors);
    assert!(
        s.decode_errors[0].contains("non-finite value in the features"),
        "{:?}",
        s.decode_errors
    );
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["decode_errors"], serde_json::json!(s.decode_errors));
}
