//! Faults a real rig produces, injected over real liblsl into the running daemon: a
//! stream that pauses or goes silent, NaN/Inf bursts, a marker storm, a clock that
//! jumps, a sender whose rate changes, onsets for images that do not exist. For each,
//! the daemon keeps running, counts the fault in its summary, decodes the onsets
//! before and after it, and accounts for every frame it built (decoded, dropped or
//! refused, never silently lost).

use std::thread;
use std::time::{Duration, Instant};

use lsl::ExPushable;
use monkeysee::daemon::RunSummary;
use monkeysee::window::Mode;

use super::common::{allocations_in, small_rig, FakeRig};
use super::daemon::Running;

/// Who receives the script: the whole daemon, or bare outlets whose inlets a test
/// wires up itself.
enum Target {
    Daemon(Running),
    Bare(FakeRig),
}

/// Plays a scripted session into a [`Running`] daemon's fake rig in real time: 1 kHz
/// rows stamped on a stream clock that a test can make jump, pause or slow down.
struct Script {
    target: Target,
    /// LSL time of stream time 0.
    t0: f64,
    /// Wall time of stream time 0.
    wall0: Instant,
    /// Stream time: seconds since start, as the sender's clock sees it (before `jump`).
    now: f64,
    /// Added to every stamp from here on (a clock jump).
    jump: f64,
    rows_sent: usize,
    /// Image ids of every onset sent, in order.
    onsets: Vec<String>,
}

/// How a phase of the script sends its rows.
#[derive(Clone, Copy)]
struct Phase {
    /// Rows per second actually sent (the stream declares 1 kHz).
    rate: f64,
    /// Send onsets (0.2 s in, then every 0.4 s while their windows fit in the phase).
    onsets: bool,
    /// Every value NaN (odd rows) or +Inf (even rows).
    non_finite: bool,
}

const CLEAN: Phase = Phase {
    rate: 1000.0,
    onsets: true,
    non_finite: false,
};

impl Script {
    fn start(tag: &str, edit: impl FnOnce(&mut monkeysee::daemon::RunOptions)) -> Script {
        let run = Running::start(tag, Mode::Event, edit);
        assert!(run.fake.wait_for_daemon(30.0), "the daemon never connected");
        Script::new(Target::Daemon(run))
    }

    fn new(target: Target) -> Script {
        let t0 = lsl::local_clock() + 0.05;
        Script {
            target,
            t0,
            wall0: Instant::now() + Duration::from_millis(50),
            now: 0.0,
            jump: 0.0,
            rows_sent: 0,
            onsets: Vec::new(),
        }
    }

    fn fake(&self) -> &FakeRig {
        match &self.target {
            Target::Daemon(r) => &r.fake,
            Target::Bare(f) => f,
        }
    }

    fn fake_mut(&mut self) -> &mut FakeRig {
        match &mut self.target {
            Target::Daemon(r) => &mut r.fake,
            Target::Bare(f) => f,
        }
    }

    /// Moves stream time up to the wall clock (after waiting on something else): the
    /// rows sent next leave a gap, as a real sender's would.
    fn catch_up(&mut self) {
        self.now = self.now.max(self.wall0.elapsed().as_secs_f64());
    }

    fn stamp(&self, t: f64) -> f64 {
        self.t0 + self.jump + t
    }

    fn marker(&self, text: &str, t: f64) {
        self.fake()
            .markers
            .push_sample_ex(&vec![text.to_string()], self.stamp(t), true)
            .unwrap();
    }

    fn onset(&mut self, id: &str, t: f64) {
        self.marker(&format!("stim_on {id}"), t);
        self.onsets.push(id.to_string());
    }

    /// Sends `seconds` of stream time in real time as `phase` says; returns the ids of
    /// the onsets it sent.
    fn play(&mut self, seconds: f64, phase: Phase) -> Vec<String> {
        let start = self.now;
        let end = start + seconds;
        let step = 1.0 / phase.rate;
        let mut next_onset = start + 0.2;
        let mut ids = Vec::new();
        let mut row = vec![0.0f32; self.fake().channels];
        let mut k = 0usize;
        loop {
            let t = start + k as f64 * step;
            if t >= end - 1e-9 {
                break;
            }
            if phase.onsets && t >= next_onset && next_onset + 0.25 <= end {
                let id = format!("img_{}", self.onsets.len());
                self.onset(&id, next_onset);
                ids.push(id);
                next_onset += 0.4;
            }
            let n = self.rows_sent;
            for (c, v) in row.iter_mut().enumerate() {
                *v = if phase.non_finite {
                    if n.is_multiple_of(2) {
                        f32::INFINITY
                    } else {
                        f32::NAN
                    }
                } else {
                    ((n * 31 + c * 7) % 100) as f32 / 50.0
                };
            }
            let flush = k % 10 == 9;
            self.fake()
                .mua
                .push_sample_ex(&row, self.stamp(t), flush)
                .unwrap();
            self.rows_sent += 1;
            k += 1;
            if flush {
                self.pace(t + step);
            }
        }
        self.now = end;
        self.pace(end);
        ids
    }

    /// Sends nothing for `seconds` of stream time.
    fn pause(&mut self, seconds: f64) {
        self.now += seconds;
        self.pace(self.now);
    }

    fn pace(&self, t: f64) {
        let due = self.wall0 + Duration::from_secs_f64(t);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            thread::sleep(d);
        }
    }

    /// Lets the last frame through, stops the daemon as Ctrl-C would, and checks that
    /// every frame it built is accounted for.
    fn finish(self) -> RunSummary {
        thread::sleep(Duration::from_millis(1500));
        let Target::Daemon(run) = self.target else {
            panic!("finish() is for scripts played into the daemon");
        };
        let s = run.stop();
        assert_frames_accounted_for(&s);
        s
    }
}

/// Every frame the window stage built was decoded, refused by the decoder, or dropped
/// and counted; every decoded frame was shown or superseded and counted. With the
/// streams quiet before the stop, nothing may be left in flight.
fn assert_frames_accounted_for(s: &RunSummary) {
    let c = |n| s.counter(n);
    assert_eq!(
        c("frames_built"),
        c("frames_decoded")
            + c("decode_errors")
            + c("frames_dropped_decode")
            + c("frames_dropped_window"),
        "a built frame went missing between the window stage and the decoder: {:?}",
        s.counters
    );
    assert_eq!(
        c("frames_decoded"),
        c("frames_shown") + c("frames_superseded"),
        "a decoded frame went missing before the display: {:?}",
        s.counters
    );
    assert_eq!(c("frames_shown"), s.frames_shown);
}

/// The frames shown are the expected onsets' images, in order, less those a newer
/// frame replaced (newest wins: a burst of data after a recovery can ready two frames
/// at once), and each of those is counted.
fn assert_shown(s: &RunSummary, expected: &[String]) {
    let mut left = expected.iter();
    for id in &s.images {
        assert!(
            left.any(|e| e == id),
            "shown {id} out of order or unexpected: shown {:?}, expected {expected:?}",
            s.images
        );
    }
    let replaced = s.counter("frames_dropped_decode")
        + s.counter("frames_superseded")
        + s.counter("frames_dropped_window");
    assert_eq!(
        (expected.len() - s.images.len()) as u64,
        replaced,
        "an expected frame is missing without a count: shown {:?}, expected {expected:?}, {:?}",
        s.images,
        s.counters
    );
}

fn ids(v: &[Vec<String>]) -> Vec<String> {
    v.concat()
}

#[test]
fn a_pause_in_the_stream_is_counted_as_lost_and_restored_and_decoding_resumes() {
    let mut sc = Script::start("fault-pause", |_| {});
    let before = sc.play(1.0, CLEAN);
    // Two seconds of silence: more than the 1 s the daemon allows before calling the
    // stream lost. The sender's clock runs on, so the samples after it leave a gap.
    sc.pause(2.0);
    let after = sc.play(1.0, CLEAN);
    let s = sc.finish();
    assert_shown(&s, &ids(&[before, after]));
    // The silence after the last sample (before the stop) may count as a second loss.
    assert!(
        (1..=2).contains(&s.counter("stream_lost")),
        "{:?}",
        s.counters
    );
    assert_eq!(s.counter("stream_restored"), 1, "{:?}", s.counters);
    assert_eq!(s.counter("gaps"), 1, "{:?}", s.counters);
}

#[test]
fn a_burst_of_nan_and_inf_is_counted_and_its_frames_skipped() {
    let mut sc = Script::start("fault-nan", |_| {});
    let before = sc.play(1.0, CLEAN);
    sc.play(
        0.2,
        Phase {
            onsets: false,
            non_finite: true,
            ..CLEAN
        },
    );
    // An onset whose windows hold the burst's last 50 rows: refused, not decoded.
    let t = sc.now - 0.05;
    sc.onset("img_in_burst", t);
    sc.play(
        0.4,
        Phase {
            onsets: false,
            ..CLEAN
        },
    );
    let after = sc.play(1.0, CLEAN);
    let s = sc.finish();
    assert_eq!(s.counter("bad_samples"), 200, "{:?}", s.counters);
    assert_eq!(s.counter("frames_skipped_bad"), 1, "{:?}", s.counters);
    assert_shown(&s, &ids(&[before, after]));
    assert_eq!(s.counter("decode_errors"), 0);
}

#[test]
fn a_marker_storm_is_counted_and_onsets_around_it_decode() {
    let mut sc = Script::start("fault-storm", |_| {});
    let before = sc.play(1.0, CLEAN);
    // 1000 markers per second for a second, none of them an onset, while data flows.
    let storm_start = sc.now;
    for i in 0..1000 {
        sc.marker(&format!("trigger {i}"), storm_start + i as f64 / 1000.0);
        if i % 10 == 9 {
            sc.fake()
                .markers
                .push_sample_ex(&vec!["stim_off".to_string()], sc.stamp(storm_start), true)
                .unwrap();
        }
    }
    let storm_markers = 1100;
    sc.play(
        1.0,
        Phase {
            onsets: false,
            ..CLEAN
        },
    );
    let after = sc.play(1.0, CLEAN);
    let s = sc.finish();
    let onsets = before.len() + after.len();
    assert_shown(&s, &ids(&[before, after]));
    // Every marker was read and classified (one dropped at the full onset queue is
    // counted in marker_overruns as well; none may vanish).
    assert_eq!(
        s.counter("markers"),
        (storm_markers + onsets) as u64,
        "{:?}",
        s.counters
    );
    assert_eq!(s.counter("unknown_markers"), 1000, "{:?}", s.counters);
}

#[test]
fn an_onset_storm_drops_frames_only_where_it_counts_them() {
    let mut sc = Script::start("fault-onsets", |_| {});
    let before = sc.play(1.0, CLEAN);
    // 300 onsets in 0.3 s: far more frames than the decoder can make.
    let t = sc.now;
    for i in 0..300 {
        sc.onset(&format!("storm_{i}"), t + 0.1 + i as f64 / 1000.0);
    }
    sc.play(
        0.8,
        Phase {
            onsets: false,
            ..CLEAN
        },
    );
    let after = sc.play(1.0, CLEAN);
    let s = sc.finish();
    // Every storm onset became a frame, was refused at the full onset queue, or counted.
    assert_eq!(
        s.counter("frames_built") + s.counter("marker_overruns"),
        (before.len() + 300 + after.len()) as u64,
        "{:?}",
        s.counters
    );
    // The onsets before and after the storm are all shown, in order.
    let shown: Vec<&String> = s.images.iter().filter(|i| i.starts_with("img_")).collect();
    assert_eq!(
        shown,
        before.iter().chain(after.iter()).collect::<Vec<_>>(),
        "{:?}",
        s.counters
    );
}

#[test]
fn clock_jumps_forward_and_back_are_counted_and_decoding_resumes() {
    let mut sc = Script::start("fault-clock", |_| {});
    let before = sc.play(1.0, CLEAN);
    // The sender's clock (both streams, one host) jumps 50 s ahead...
    sc.jump += 50.0;
    let middle = sc.play(1.0, CLEAN);
    // ...and then 120 s back.
    sc.jump -= 120.0;
    let after = sc.play(1.0, CLEAN);
    let s = sc.finish();
    assert_shown(&s, &ids(&[before, middle, after]));
    assert_eq!(s.counter("gaps"), 2, "{:?}", s.counters);
}

#[test]
fn a_sender_at_the_wrong_rate_is_counted_and_decoding_resumes_when_it_recovers() {
    let mut sc = Script::start("fault-rate", |_| {});
    let before = sc.play(1.0, CLEAN);
    // Half the declared rate for a second, onsets included: the windows would hold
    // half the samples they need, so these frames must not be decoded.
    let slow = sc.play(
        1.0,
        Phase {
            rate: 500.0,
            ..CLEAN
        },
    );
    let after = sc.play(1.0, CLEAN);
    let s = sc.finish();
    assert!(!slow.is_empty());
    assert_shown(&s, &ids(&[before, after]));
    assert!(s.counter("gaps") >= 500, "{:?}", s.counters);
    assert_eq!(
        s.counter("frames_skipped_gap"),
        slow.len() as u64,
        "{:?}",
        s.counters
    );
}

#[test]
fn onsets_for_unknown_images_decode_and_are_counted() {
    let stimuli = tempfile::tempdir().unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 10]))
        .save(stimuli.path().join("img_0.png"))
        .unwrap();
    let dir = stimuli.path().to_path_buf();
    let mut sc = Script::start("fault-unknown", move |o| o.stimuli_dir = Some(dir));
    let shown = sc.play(1.0, CLEAN);
    let s = sc.finish();
    assert_shown(&s, &shown);
    assert_eq!(
        s.counter("stimuli_missing"),
        s.images.iter().filter(|i| *i != "img_0").count() as u64,
        "{:?}",
        s.counters
    );
}

/// The production loops, `ingest::run_mua` and the window thread's `WindowStage::run`,
/// each on its own thread under the counting allocator, through a NaN burst, a pause
/// long enough to count the stream lost, clock jumps both ways, half-rate data and a
/// marker storm: not one allocation after start-up. (`run_markers` feeds the onsets.)
#[test]
fn the_real_ingest_and_window_loops_allocate_nothing_through_faults() {
    use crossbeam_channel::bounded;
    use monkeysee::config::WindowSetKind;
    use monkeysee::daemon::{WindowStage, FRAME_POOL};
    use monkeysee::ingest::{self, MarkerEvent, MuaInlet, MuaSpec, SampleRing};
    use monkeysee::telemetry::Counters;
    use monkeysee::window::{AssemblerConfig, FeatureFrame, WindowAssembler};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let mut rig = small_rig(dir.path());
    let fake = FakeRig::new("fault-alloc", rig.channel_count);
    rig.mua.query = Some(fake.mua_query());
    rig.markers.query = Some(fake.marker_query());
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));

    // Start-up, as the daemon does it: allocations allowed.
    let (mut producer, consumer) = SampleRing::new(rig.channel_count, 2000);
    let (marker_tx, marker_rx) = bounded::<MarkerEvent>(256);
    let assembler = WindowAssembler::new(
        AssemblerConfig::from_rig(&rig, WindowSetKind::Tw15, Mode::Event),
        None,
    );
    let template = assembler.new_frame();
    let (work_tx, work_rx) = bounded::<FeatureFrame>(FRAME_POOL);
    let (free_tx, free_rx) = bounded::<FeatureFrame>(FRAME_POOL);
    for _ in 0..FRAME_POOL {
        free_tx.send(template.clone()).unwrap();
    }
    let stage = WindowStage::new(
        assembler,
        consumer,
        Some(marker_rx),
        work_tx,
        free_rx,
        counters.clone(),
    );
    let window = {
        let stop = stop.clone();
        thread::spawn(move || allocations_in(|| stage.run(&stop)).1)
    };
    let wake = window.thread().clone();
    let ingest = {
        let (stop, counters, selector) = (stop.clone(), counters.clone(), rig.mua.clone());
        let channels = rig.channel_count;
        thread::spawn(move || {
            // Connecting is start-up (the inlet is not Send: made on its thread).
            let mut inlet =
                MuaInlet::connect(&selector, &MuaSpec::mua(channels, 1000.0, 100), 10.0).unwrap();
            allocations_in(|| {
                ingest::run_mua(
                    &mut inlet,
                    &mut producer,
                    None,
                    &stop,
                    &counters,
                    1.0,
                    &|| wake.unpark(),
                    None,
                )
            })
            .1
        })
    };
    let markers = {
        let (stop, counters, selector) = (stop.clone(), counters.clone(), rig.markers.clone());
        thread::spawn(move || {
            let sinks = ingest::MarkerSinks {
                events: &marker_tx,
                record: None,
                stimuli: None,
                start: None,
            };
            ingest::run_markers(&selector, 10.0, &stop, &counters, &sinks, |r| {
                r.unwrap();
            })
        })
    };
    // The decoder's place: takes frames and hands their buffers back.
    let sink = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut frames = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(f) = work_rx.recv_timeout(Duration::from_millis(20)) {
                    frames += 1;
                    free_tx.send(f).unwrap();
                }
            }
            frames
        })
    };
    assert!(fake.wait_for_daemon(30.0));

    let mut sc = Script::new(Target::Bare(fake));
    let mut onsets = sc.play(1.0, CLEAN).len();
    sc.play(
        0.2,
        Phase {
            non_finite: true,
            onsets: false,
            ..CLEAN
        },
    );
    onsets += sc.play(1.0, CLEAN).len();
    sc.pause(1.6);
    onsets += sc.play(1.0, CLEAN).len();
    sc.jump += 30.0;
    onsets += sc.play(1.0, CLEAN).len();
    sc.jump -= 60.0;
    onsets += sc.play(1.0, CLEAN).len();
    sc.play(
        0.6,
        Phase {
            rate: 500.0,
            ..CLEAN
        },
    );
    let storm = sc.now;
    for i in 0..1000 {
        sc.marker(&format!("trigger {i}"), storm);
    }
    onsets += sc.play(1.0, CLEAN).len();
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);

    let ingest_allocs = ingest.join().unwrap();
    let window_allocs = window.join().unwrap();
    markers.join().unwrap();
    let frames = sink.join().unwrap();
    let c = |n: &str| {
        counters
            .snapshot()
            .into_iter()
            .find(|(k, _)| *k == n)
            .unwrap()
            .1
    };
    // The faults happened and were seen.
    assert_eq!(c("bad_samples"), 200);
    assert!(c("stream_lost") >= 1 && c("stream_restored") >= 1);
    assert!(c("gaps") >= 300);
    assert_eq!(c("unknown_markers"), 1000);
    // Every clean onset's frame reached the decoder's place.
    assert_eq!(frames, onsets as u64, "{:?}", counters.snapshot());
    assert_eq!(ingest_allocs, 0, "ingest::run_mua allocated after start-up");
    assert_eq!(
        window_allocs, 0,
        "WindowStage::run allocated after start-up"
    );
}

#[test]
fn a_source_back_under_a_new_source_id_replaces_the_lost_stream() {
    let mut sc = Script::start("fault-newid", |_| {});
    let before = sc.play(1.0, CLEAN);
    // The acquisition software dies and comes back configured differently (a new
    // source_id): liblsl cannot recover the inlet; the watch switches to it.
    let channels = sc.fake().channels;
    sc.fake_mut()
        .replace_mua(Duration::from_millis(1600), "another-source-id", channels);
    assert!(
        sc.fake().mua.wait_for_consumers(20.0),
        "the daemon never switched to the new stream"
    );
    sc.catch_up();
    let after = sc.play(1.0, CLEAN);
    let s = sc.finish();
    assert_shown(&s, &ids(&[before, after]));
    assert_eq!(s.counter("stream_switched"), 1, "{:?}", s.counters);
    assert_eq!(s.counter("stream_restored"), 1, "{:?}", s.counters);
    assert_eq!(s.counter("rival_streams"), 0, "{:?}", s.counters);
}

#[test]
fn a_source_back_with_the_wrong_channel_count_is_refused_until_it_is_right() {
    let mut sc = Script::start("fault-wrongch", |_| {});
    let before = sc.play(1.0, CLEAN);
    let (channels, source_id) = (sc.fake().channels, sc.fake().mua_name.clone());
    // Back under its own source_id but with 100 channels: refused, counted, not read.
    sc.fake_mut()
        .replace_mua(Duration::from_millis(1600), &source_id, 100);
    let wrong = Instant::now();
    while wrong.elapsed() < Duration::from_secs(3) {
        let row = vec![1.0f32; 100];
        let _ = sc.fake().mua.push_sample_ex(&row, lsl::local_clock(), true);
        thread::sleep(Duration::from_millis(10));
    }
    // ...then back as the rig expects: liblsl recovers the inlet.
    sc.fake_mut()
        .replace_mua(Duration::from_millis(100), &source_id, channels);
    assert!(
        sc.fake().mua.wait_for_consumers(20.0),
        "the inlet never recovered"
    );
    sc.catch_up();
    let after = sc.play(1.0, CLEAN);
    let s = sc.finish();
    assert_shown(&s, &ids(&[before, after]));
    assert_eq!(s.counter("streams_refused"), 1, "{:?}", s.counters);
    assert_eq!(s.counter("stream_switched"), 0, "{:?}", s.counters);
    assert_eq!(s.counter("bad_samples"), 0, "{:?}", s.counters);
}

#[test]
fn a_second_matching_stream_mid_session_is_refused_and_reported() {
    let mut sc = Script::start("fault-rival", |_| {});
    let before = sc.play(1.0, CLEAN);
    // Another host (here: another outlet) starts publishing under the same name.
    let rival = sc
        .fake()
        .outlet_like_mua("someone-elses-amplifier", sc.fake().channels);
    let during = sc.play(2.5, CLEAN);
    let nan = vec![f32::NAN; sc.fake().channels];
    rival
        .push_sample_ex(&nan, lsl::local_clock(), true)
        .unwrap();
    let after = sc.play(1.0, CLEAN);
    let s = sc.finish();
    drop(rival);
    assert_shown(&s, &ids(&[before, during, after]));
    assert_eq!(s.counter("rival_streams"), 1, "{:?}", s.counters);
    assert_eq!(s.counter("stream_switched"), 0, "{:?}", s.counters);
    assert_eq!(s.counter("bad_samples"), 0, "{:?}", s.counters);
}
