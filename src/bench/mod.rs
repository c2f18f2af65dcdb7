//! `monkeysee bench`: what this machine can do with a rig and a model.
//!
//! It simulates a session for the rig (or takes a recorded one), replays it over
//! loopback LSL into the daemon (in this process, frames timed and discarded) at 1×,
//! then at each faster speed in turn until frames are lost, and times the decoder's
//! forward pass alone at several widths. For each speed it keeps every stage's latency
//! (HDR histograms: p50, p90, p99, p99.9, max), the deadline misses, every loss counter
//! and the CPU each thread used (Linux `/proc/self/task`, sampled every 100 ms while
//! the daemon runs). The highest speed with no frame lost is `max_lossless_speed`.
//!
//! Output in `out`: `bench.json` (the report), `latency-<speed>x.hlog` (HdrHistogram
//! interval logs, microseconds, one tag per stage), and `bench.png` (latency CDF per
//! stage at 1×, and p99 per stage against speed).
//!
//! A frame is lost when an onset gives no frame shown (event mode), or when a frame is
//! dropped, superseded or skipped, or a sample overruns the ingest ring (both modes;
//! in sliding mode, frames skipped as late are the warm-up's, whose windows start
//! before the first sample, and are not losses). Deadline misses are reported, not
//! counted as losses.
//!
//! With `--load N` ([`load`]) the bench measures the daemon beside other work instead of
//! the speed ladder: at one speed, over at least `--frames` frames (the session replayed
//! as often as needed), it runs three conditions in turn: unloaded; with N load
//! processes; with the same load and `--realtime` ([`crate::realtime`]). The replay
//! stands in for the acquisition machine, which a rig computer's load does not slow: in
//! all three it runs at SCHED_FIFO 90 when the system allows it (`replay_fifo`). Each reports
//! p50/p90/p99/p99.9/max, deadline misses and frames lost (`bench.json` under `load`,
//! `latency-<condition>.hlog`, and `load.png`: end-to-end latency against percentile).
//!
//! `--trace FILE` traces each run to FILE with the run's label before the extension
//! (`trace-1x.json`, `trace-loaded-realtime.json`).
//!
//! Caveats: `lsl->arrival` is meaningful at 1× only (the replay keeps the recording's
//! time scale in its stamps); with broadband input it includes the wait for the 30
//! raw samples of a MUA sample and the delay compensation. CPU is read every 100 ms,
//! so a thread's last ≤ 100 ms and a run's start-up blur short runs; threads are
//! summed by name (unnamed ones carry their creator's), and the in-process replay's
//! `replay` thread is listed beside the daemon's. At high speeds with broadband input
//! the replay itself may be what cannot keep up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

pub mod load;

use crate::config::decoder_config;
use crate::config::RigConfig;
use crate::daemon::{self, ComputeDevice, ModelSource, Output, RunOptions, RunSummary};
use crate::decoder::{Decoder, DecoderKind, OnBackend};
use crate::realtime::{RealtimeConfig, RealtimeMode, RealtimeReport};
use crate::replay::{self, Repeat, ReplayOptions, Speed};
use crate::sim::{self, SimOptions};
use crate::telemetry::StageSummary;
use crate::window::Mode;

/// Everything a bench needs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub rig: RigConfig,
    pub model: ModelSource,
    /// A recorded session whose streams the rig's selectors find; `None`: simulate one.
    pub session: Option<PathBuf>,
    /// Images in the simulated session (4 per trial).
    pub images: usize,
    pub mode: Mode,
    /// Feed the raw broadband stream (`run --input broadband`).
    pub broadband: bool,
    pub device: ComputeDevice,
    /// Speeds to try, in order; the bench stops at the first one that loses frames.
    pub speeds: Vec<f64>,
    /// U-Net widths whose forward pass is timed.
    pub widths: Vec<usize>,
    pub decode_threads: usize,
    /// Real-time scheduling for the daemon's runs (the rig's `[realtime]`, or `--realtime`).
    pub realtime: RealtimeConfig,
    /// `--trace FILE`: each run's Chrome trace, FILE with the run's label inserted.
    pub trace: Option<PathBuf>,
    /// `--load`: the comparison under load instead of the speed ladder.
    pub load: Option<LoadBench>,
    pub out: PathBuf,
    pub progress: bool,
}

/// `bench --load`: what to run beside the daemon, at what speed, over how many frames.
#[derive(Debug, Clone)]
pub struct LoadBench {
    pub spec: load::LoadSpec,
    /// This program's binary (the load processes are its `load-worker` subcommand).
    pub exe: PathBuf,
    /// Frames each condition runs at least (the session is replayed as often as needed).
    pub frames: u64,
    pub speed: f64,
}

/// One condition of the load comparison.
#[derive(Debug, Clone, Serialize)]
pub struct LoadCondition {
    /// `unloaded`, `loaded` or `loaded, realtime`.
    pub condition: String,
    pub loaded: bool,
    /// What `--realtime` got, in the realtime condition.
    pub realtime: Option<RealtimeReport>,
    /// Frames lost: frames expected (onsets) and not shown (dropped, superseded, skipped
    /// or never built); `losses` names the counters behind them, and any sample overruns.
    pub frames_lost: u64,
    /// The load processes' ids (gone once the condition ended).
    pub load_pids: Vec<u32>,
    /// CPU the load processes used during the run, as a share of one core (0 unloaded).
    pub load_core_share: f64,
    /// Whether the replay (the stand-in for the acquisition machine) ran at SCHED_FIFO
    /// 90, out of the load's way; without the permission it competes with the load.
    pub replay_fifo: bool,
    #[serde(flatten)]
    pub run: SpeedRun,
}

/// `bench.json`'s `load`: the daemon beside other work, with and without `--realtime`.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub spec: load::LoadSpec,
    pub speed: f64,
    pub conditions: Vec<LoadCondition>,
}

/// One stage's latency at one speed (its fields flattened into the JSON: `p50_ms`, …).
#[derive(Debug, Clone, Serialize)]
pub struct StageLatency {
    pub stage: String,
    #[serde(flatten)]
    pub latency: StageSummary,
}

/// One thread's CPU use during a run: seconds, and the share of one core.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadCpu {
    pub thread: String,
    pub cpu_s: f64,
    pub core_share: f64,
}

/// What one speed showed.
#[derive(Debug, Clone, Serialize)]
pub struct SpeedRun {
    pub speed: f64,
    pub lossless: bool,
    /// Frames the session should give (onsets in event mode; hops in sliding mode).
    pub frames_expected: u64,
    pub frames_shown: u64,
    /// The loss counters that were not 0.
    pub losses: Vec<(String, u64)>,
    pub deadline_misses: u64,
    pub stages: Vec<StageLatency>,
    pub cpu: Vec<ThreadCpu>,
    pub wall_s: f64,
    pub hdr_log: PathBuf,
    /// Each stage's latency distribution, `(ms, fraction at or below)`.
    pub cdf: Vec<(String, Vec<(f64, f64)>)>,
    /// What the first decode errors said (none when every frame decoded).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub decode_errors: Vec<String>,
}

/// The decoder's forward pass alone: one frame, after warm-up.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardTime {
    pub width: usize,
    pub device: String,
    pub runs: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// `bench.json`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub rig: String,
    pub model: String,
    pub mode: String,
    pub input: String,
    pub device: String,
    /// Threads of the decoder's compute pool (as `run` sizes it from `--decode-threads`).
    pub decode_threads: usize,
    /// The session: seconds, and where it came from.
    pub session_s: f64,
    pub session: String,
    /// Every stage at 1× (the first speed).
    pub stages: Vec<StageLatency>,
    pub max_lossless_speed: Option<f64>,
    pub speeds: Vec<SpeedRun>,
    pub forward: Vec<ForwardTime>,
    /// `--load`: the comparison under load.
    pub load: Option<LoadReport>,
    pub plot: Option<PathBuf>,
    pub wall_s: f64,
}

/// Runs the bench; see the module doc.
pub fn run(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    let started = Instant::now();
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let work = tempfile::Builder::new()
        .prefix("monkeysee-bench-")
        .tempdir()
        .context("creating a temporary folder")?;
    let mut rig = opts.rig.clone();
    let session = prepare_session(opts, &mut rig, work.path())?;
    if session.onsets == 0 && opts.mode == Mode::Event {
        anyhow::bail!(
            "{} holds no `stim_on <id>` markers: event mode has nothing to decode (try --mode sliding)",
            session.source
        );
    }
    let (speeds, load) = match &opts.load {
        None => (speed_ladder(opts, &rig, &session)?, None),
        Some(l) => (
            Vec::new(),
            Some(load_comparison(opts, &rig, &session, l, work.path())?),
        ),
    };
    let forward = forward_times(opts, &rig)?;
    let mut report = BenchReport {
        rig: rig.path.display().to_string(),
        model: match &opts.model {
            ModelSource::Dir(d) => d.display().to_string(),
            ModelSource::Random { kind, width, .. } => {
                format!("random weights, {kind}, width {width}")
            }
        },
        mode: format!("{:?}", opts.mode).to_lowercase(),
        input: if opts.broadband { "broadband" } else { "mua" }.into(),
        device: format!("{:?}", opts.device).to_lowercase(),
        decode_threads: daemon::decode_threads(opts.decode_threads, &opts.realtime),
        session_s: session.seconds,
        session: session.source.clone(),
        stages: speeds
            .first()
            .or_else(|| {
                load.as_ref()
                    .and_then(|l| l.conditions.first())
                    .map(|c| &c.run)
            })
            .map(|s| s.stages.clone())
            .unwrap_or_default(),
        max_lossless_speed: speeds
            .iter()
            .take_while(|s| s.lossless)
            .map(|s| s.speed)
            .last(),
        speeds,
        forward,
        load,
        plot: None,
        wall_s: 0.0,
    };
    report.plot = draw(&report, &opts.out)?;
    report.wall_s = started.elapsed().as_secs_f64();
    let json = opts.out.join("bench.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    Ok(report)
}

/// `bench.png` (the ladder's CDF per stage and p99 against speed), or with `--load`,
/// `load.png` (end-to-end latency against percentile per condition); `None` without a
/// font.
fn draw(report: &BenchReport, out: &Path) -> anyhow::Result<Option<PathBuf>> {
    if let Some(l) = &report.load {
        let plot = out.join("load.png");
        let series: Vec<(String, Vec<(f64, f64)>)> = l
            .conditions
            .iter()
            .map(|c| {
                let e2e = c.run.cdf.iter().find(|(n, _)| n == "end-to-end");
                (
                    c.condition.clone(),
                    e2e.map(|(_, p)| p.clone()).unwrap_or_default(),
                )
            })
            .collect();
        let title = format!(
            "end-to-end latency beside {} load process(es), {}x",
            l.spec.processes, l.speed
        );
        return Ok(crate::plot::tail_plot(&plot, &title, &series)?.then_some(plot));
    }
    let plot = out.join("bench.png");
    let cdf = report
        .speeds
        .first()
        .map(|s| s.cdf.clone())
        .unwrap_or_default();
    let p99: Vec<(String, Vec<(f64, f64)>)> = report
        .stages
        .iter()
        .enumerate()
        .map(|(i, st)| {
            let points = report
                .speeds
                .iter()
                .filter_map(|s| s.stages.get(i).map(|x| (s.speed, x.latency.p99_ms)))
                .collect();
            (st.stage.clone(), points)
        })
        .collect();
    Ok(crate::plot::latency_plot(&plot, &cdf, &p99)?.then_some(plot))
}

/// Each speed in turn until one loses frames.
fn speed_ladder(
    opts: &BenchOptions,
    rig: &RigConfig,
    session: &Session,
) -> anyhow::Result<Vec<SpeedRun>> {
    let mut speeds = Vec::new();
    for &speed in &opts.speeds {
        if opts.progress {
            eprintln!("monkeysee bench: {speed}x …");
        }
        let spec = RunSpec {
            speed,
            repeats: 1,
            realtime: opts.realtime.clone(),
            label: format!("{speed}x"),
            replay_fifo: false,
        };
        let (r, _, _) = run_once(opts, rig, session, &spec)?;
        let lossless = r.lossless;
        if opts.progress {
            eprintln!(
                "monkeysee bench: {speed}x: {} of {} frames, end-to-end p99 {:.2} ms{}",
                r.frames_shown,
                r.frames_expected,
                r.stages.last().map_or(f64::NAN, |s| s.latency.p99_ms),
                if lossless { "" } else { ": frames lost" }
            );
        }
        speeds.push(r);
        if !lossless {
            break;
        }
    }
    Ok(speeds)
}

/// The three conditions of `--load`: unloaded, loaded, loaded with `--realtime`.
fn load_comparison(
    opts: &BenchOptions,
    rig: &RigConfig,
    session: &Session,
    l: &LoadBench,
    work: &Path,
) -> anyhow::Result<LoadReport> {
    let per_pass = session.frames_per_pass(opts.mode, rig).max(1);
    let repeats = l.frames.div_ceil(per_pass).max(1);
    let off = RealtimeConfig {
        mode: RealtimeMode::Off,
        ..opts.realtime.clone()
    };
    let on = RealtimeConfig {
        mode: match opts.realtime.mode {
            RealtimeMode::Require => RealtimeMode::Require,
            _ => RealtimeMode::Try,
        },
        ..opts.realtime.clone()
    };
    let mut conditions = Vec::new();
    for (name, label, loaded, realtime) in [
        ("unloaded", "unloaded", false, off.clone()),
        ("loaded", "loaded", true, off),
        ("loaded, realtime", "loaded-realtime", true, on),
    ] {
        if opts.progress {
            let beside = if loaded {
                format!(" beside {} load process(es)", l.spec.processes)
            } else {
                String::new()
            };
            let frames = per_pass * repeats;
            eprintln!(
                "monkeysee bench: {name}: {frames} frames at {}x{beside}",
                l.speed
            );
        }
        let spec = RunSpec {
            speed: l.speed,
            repeats,
            realtime,
            label: label.into(),
            replay_fifo: true,
        };
        let c = run_condition(opts, rig, session, &spec, loaded.then_some(l), work)?;
        if opts.progress {
            let e2e = c.run.stages.last().map(|s| s.latency).unwrap_or_default();
            eprintln!(
                "monkeysee bench: {name}: end-to-end p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; {} deadline misses, {} frames lost",
                e2e.p50_ms, e2e.p99_ms, e2e.p999_ms, e2e.max_ms, c.run.deadline_misses, c.frames_lost
            );
        }
        conditions.push(LoadCondition {
            condition: name.into(),
            ..c
        });
    }
    Ok(LoadReport {
        spec: l.spec.clone(),
        speed: l.speed,
        conditions,
    })
}

/// One condition: the load started (when given) and left to settle, the run, the CPU
/// the load used meanwhile, the load stopped.
fn run_condition(
    opts: &BenchOptions,
    rig: &RigConfig,
    session: &Session,
    spec: &RunSpec,
    load: Option<&LoadBench>,
    work: &Path,
) -> anyhow::Result<LoadCondition> {
    let mut running = match load {
        Some(l) => {
            let load = load::Load::start(&l.spec, &l.exe, &work.join("load"))?;
            // Let the load reach its steady state (page cache filling, heap churning).
            thread::sleep(Duration::from_secs(2));
            Some(load)
        }
        None => None,
    };
    let cpu_before = running.as_ref().map_or(0.0, |l| l.cpu_seconds());
    let load_pids = running.as_ref().map(|l| l.pids()).unwrap_or_default();
    let (run, realtime, replay_fifo) = run_once(opts, rig, session, spec)?;
    let mut load_core_share = 0.0;
    if let Some(load) = running.as_mut() {
        anyhow::ensure!(
            load.all_running(),
            "a load process ended during the {} run: the bench did not carry the load it reports",
            spec.label
        );
        load_core_share = (load.cpu_seconds() - cpu_before) / run.wall_s.max(1e-9);
    }
    drop(running);
    // Frames only: `losses` also holds sample and marker overruns, in their own units.
    let frames_lost = run.frames_expected.saturating_sub(run.frames_shown);
    Ok(LoadCondition {
        condition: spec.label.clone(),
        loaded: load.is_some(),
        realtime,
        frames_lost,
        load_pids,
        load_core_share,
        replay_fifo,
        run,
    })
}

/// The session to replay: its file, length, onsets and where it came from.
struct Session {
    path: PathBuf,
    seconds: f64,
    onsets: u64,
    source: String,
    /// Stream names to replay (the input and the markers).
    streams: Vec<String>,
}

impl Session {
    /// The frames one pass gives: its onsets (event mode), or its sliding hops.
    fn frames_per_pass(&self, mode: Mode, rig: &RigConfig) -> u64 {
        match mode {
            Mode::Event => self.onsets,
            Mode::Sliding => (self.seconds / rig.windows.sliding_hop.seconds()).floor() as u64,
        }
    }
}

/// Simulates a session for the rig (streams named for this run only), or reads how long
/// the given one is and how many onsets it holds.
fn prepare_session(
    opts: &BenchOptions,
    rig: &mut RigConfig,
    work: &Path,
) -> anyhow::Result<Session> {
    if let Some(path) = &opts.session {
        return session_extent(path, rig, opts.broadband);
    }
    // The simulator names its streams after the rig's selectors (or its own defaults);
    // this run's source_ids keep other streams on the network out.
    let tag = format!("monkeysee-bench-{}", std::process::id());
    rig.mua
        .name
        .get_or_insert_with(|| "monkeysee-synthetic-mua".into());
    rig.mua.query = None;
    rig.mua.source_id = Some(format!("{tag}-mua"));
    rig.markers
        .name
        .get_or_insert_with(|| "monkeysee-synthetic-markers".into());
    rig.markers.query = None;
    rig.markers.source_id = Some(format!("{tag}-markers"));
    let mut broadband = rig.broadband.selector.clone().unwrap_or_default();
    broadband
        .name
        .get_or_insert_with(|| "monkeysee-synthetic-broadband".into());
    broadband.query = None;
    broadband.source_id = Some(format!("{tag}-broadband"));
    rig.broadband.selector = Some(broadband.clone());
    if opts.progress {
        eprintln!(
            "monkeysee bench: simulating {} images for rig {}",
            opts.images, rig.name
        );
    }
    let mut sim_opts = SimOptions::live_session(rig.clone(), opts.images, 3, work.join("session"))?;
    sim_opts.broadband = opts.broadband;
    let s = sim::simulate(&sim_opts)?;
    let input = if opts.broadband {
        broadband.name
    } else {
        rig.mua.name.clone()
    };
    Ok(Session {
        path: work.join("session/session.xdf"),
        seconds: s.simulated_s,
        onsets: s.trials as u64,
        source: format!("simulated: {} images, {:.1} s", opts.images, s.simulated_s),
        streams: input.into_iter().chain(rig.markers.name.clone()).collect(),
    })
}

/// A recorded session's length (first to last raw stamp of the streams the rig's
/// selectors find), its `stim_on` markers (in the marker stream) and which streams to
/// replay, read chunk by chunk. Streams the daemon does not read are not replayed: the
/// replay would wait for a consumer that never comes.
fn session_extent(path: &Path, rig: &RigConfig, broadband: bool) -> anyhow::Result<Session> {
    use crate::dataset::from_xdf::header_matches;
    use crate::xdf::{Chunk, Values, XdfReader};
    let input = match (broadband, &rig.broadband.selector) {
        (true, Some(b)) => b.predicate(),
        (true, None) => anyhow::bail!("the rig has no [streams.broadband] selector"),
        (false, _) => rig.mua.predicate(),
    };
    let markers = rig.markers.predicate();
    let reader = XdfReader::open(path).with_context(|| format!("reading {}", path.display()))?;
    let (mut first, mut last, mut onsets) = (f64::INFINITY, f64::NEG_INFINITY, 0u64);
    // Stream id → (name, is the marker stream).
    let mut picked: HashMap<u32, (String, bool)> = HashMap::new();
    for chunk in reader {
        match chunk.with_context(|| format!("reading {}", path.display()))? {
            Chunk::StreamHeader { stream, info } => {
                let is_markers = header_matches(&info, &markers)?;
                if is_markers || header_matches(&info, &input)? {
                    picked.insert(stream.0, (info.name().to_string(), is_markers));
                }
            }
            Chunk::Samples(c) => {
                let Some((_, is_markers)) = picked.get(&c.stream.0) else {
                    continue;
                };
                if let (Some(a), Some(b)) = (c.stamps.first(), c.stamps.last()) {
                    first = first.min(*a);
                    last = last.max(*b);
                }
                if let (true, Values::String(v)) = (*is_markers, &c.values) {
                    onsets += v
                        .iter()
                        .filter(|m| m.trim_start().starts_with("stim_on"))
                        .count() as u64;
                }
            }
            _ => {}
        }
    }
    anyhow::ensure!(
        picked.len() >= 2,
        "{} does not hold both an input stream matching {input} and a marker stream matching {markers}",
        path.display()
    );
    anyhow::ensure!(last > first, "{} holds no samples", path.display());
    Ok(Session {
        path: path.to_path_buf(),
        seconds: last - first,
        onsets,
        source: path.display().to_string(),
        streams: picked.into_values().map(|(name, _)| name).collect(),
    })
}

/// One run of the bench: the session replayed `repeats` times at `speed`, the daemon
/// under `realtime`; `label` names its HdrHistogram log and trace.
struct RunSpec {
    speed: f64,
    repeats: u64,
    realtime: RealtimeConfig,
    label: String,
    /// Run the replay at [`REPLAY_PRIORITY`] (`--load`: it stands in for the
    /// acquisition machine, which the rig computer's load does not slow).
    replay_fifo: bool,
}

/// SCHED_FIFO priority of the replay under `--load`, above the daemon's threads.
const REPLAY_PRIORITY: u8 = 90;

/// Replays the session into the daemon as `spec` says and measures it; what
/// `--realtime` got beside it, and whether the replay ran at real-time priority.
fn run_once(
    opts: &BenchOptions,
    rig: &RigConfig,
    session: &Session,
    spec: &RunSpec,
) -> anyhow::Result<(SpeedRun, Option<RealtimeReport>, bool)> {
    let speed = spec.speed;
    let mut replay_opts = ReplayOptions::new(&session.path);
    replay_opts.speed = Speed::Factor(speed);
    replay_opts.repeat = Repeat::Times(spec.repeats);
    replay_opts.wait_for_consumer = Some(60.0);
    replay_opts.start_delay = 0.5;
    replay_opts.streams = session.streams.clone();
    let replay_fifo = Arc::new(AtomicBool::new(false));
    let raised = replay_fifo.clone();
    let want_fifo = spec.replay_fifo;
    let replay = replay::spawn_with(replay_opts, move || {
        if want_fifo && crate::realtime::fifo_current_thread(REPLAY_PRIORITY).is_ok() {
            raised.store(true, Ordering::Relaxed);
        }
    })
    .context("starting the replay")?;
    let hdr_log = opts.out.join(format!("latency-{}.hlog", spec.label));
    let expected = spec.repeats * session.frames_per_pass(opts.mode, rig);
    let stop = Arc::new(AtomicBool::new(false));
    let wall = session.seconds * spec.repeats as f64 / speed;
    let run_opts = RunOptions {
        mode: opts.mode,
        broadband: opts.broadband,
        device: opts.device,
        frames: (opts.mode == Mode::Event).then_some(expected),
        seconds: Some(wall + 10.0),
        hdr_log: Some(hdr_log.clone()),
        resolve_timeout: 30.0,
        decode_threads: opts.decode_threads,
        realtime: spec.realtime.clone(),
        trace: opts.trace.as_deref().map(|t| labelled(t, &spec.label)),
        stop: stop.clone(),
        ..RunOptions::new(rig.clone(), opts.model.clone(), Output::Discard)
    };
    let cpu = CpuSampler::start();
    let started = Instant::now();
    // Sliding mode has no frame count to reach: stop once the replay is done.
    let watcher = {
        let stop = stop.clone();
        let sliding = opts.mode == Mode::Sliding;
        thread::spawn(move || {
            while sliding && !replay.is_finished() && !stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(50));
            }
            if sliding {
                thread::sleep(Duration::from_millis(500));
                stop.store(true, Ordering::Relaxed);
            }
            replay
        })
    };
    // A display thread of its own per run: a trace's thread-local state starts fresh.
    let summary = thread::Builder::new()
        .name("display".into())
        .spawn(move || daemon::run(run_opts))
        .context("spawning the bench's display thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("the daemon panicked"))?;
    let wall_s = started.elapsed().as_secs_f64();
    let cpu = cpu.finish(wall_s);
    stop.store(true, Ordering::Relaxed);
    let replay = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("the replay watcher panicked"))?;
    replay.stop();
    let replayed = replay.join();
    let summary = summary.with_context(|| format!("running the daemon at {speed}x"))?;
    replayed.with_context(|| format!("replaying at {speed}x"))?;
    let realtime = summary.realtime.clone();
    Ok((
        speed_run(opts.mode, speed, expected, &summary, cpu, wall_s, hdr_log),
        realtime,
        replay_fifo.load(Ordering::Relaxed),
    ))
}

/// `path` with `-<label>` before its extension (spaces and commas made dashes).
fn labelled(path: &Path, label: &str) -> PathBuf {
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let stem = path
        .file_stem()
        .map_or_else(Default::default, |s| s.to_string_lossy().to_string());
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{label}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{label}"),
    };
    path.with_file_name(name)
}

fn speed_run(
    mode: Mode,
    speed: f64,
    expected: u64,
    s: &RunSummary,
    cpu: Vec<ThreadCpu>,
    wall_s: f64,
    hdr_log: PathBuf,
) -> SpeedRun {
    // Sliding mode's late skips are its warm-up (windows before the first sample).
    let late = if mode == Mode::Sliding {
        ""
    } else {
        "frames_skipped_late"
    };
    let losses: Vec<(String, u64)> = [
        "overruns",
        "frames_skipped_gap",
        "frames_skipped_bad",
        late,
        "frames_dropped_window",
        "frames_dropped_decode",
        "frames_superseded",
        "decode_errors",
        "marker_overruns",
    ]
    .iter()
    .filter(|n| !n.is_empty())
    .map(|n| (n.to_string(), s.counter(n)))
    .filter(|(_, v)| *v > 0)
    .collect();
    // Sliding mode's expected count is approximate (warm-up, catch-up hops).
    let enough = mode == Mode::Sliding || s.frames_shown >= expected;
    SpeedRun {
        speed,
        lossless: losses.is_empty() && enough,
        frames_expected: expected,
        frames_shown: s.frames_shown,
        losses,
        deadline_misses: s.counter("deadline_misses"),
        stages: s
            .stages
            .iter()
            .map(|(n, st)| StageLatency {
                stage: n.to_string(),
                latency: *st,
            })
            .collect(),
        cpu,
        wall_s,
        hdr_log,
        cdf: s
            .cdf
            .iter()
            .map(|(n, c)| (n.to_string(), c.clone()))
            .collect(),
        decode_errors: s.decode_errors.clone(),
    }
}

/// Samples every thread's CPU time (`/proc/self/task/*/stat`) until finished; a
/// thread's use is its last reading minus its first (0 for one born during the run).
struct CpuSampler {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<HashMap<u64, (String, f64, f64)>>,
}

impl CpuSampler {
    fn start() -> CpuSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = thread::spawn(move || {
            // tid → (name, first seconds, last seconds)
            let mut seen: HashMap<u64, (String, f64, f64)> = HashMap::new();
            let mut first_look = true;
            loop {
                for (tid, name, secs) in thread_times() {
                    let first = if first_look { secs } else { 0.0 };
                    let e = seen.entry(tid).or_insert((String::new(), first, secs));
                    // The latest name: a new thread names itself just after it starts.
                    e.0 = name;
                    e.2 = secs;
                }
                first_look = false;
                if s.load(Ordering::Relaxed) {
                    return seen;
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        CpuSampler { stop, thread }
    }

    /// CPU per thread name, most first.
    fn finish(self, wall_s: f64) -> Vec<ThreadCpu> {
        self.stop.store(true, Ordering::Relaxed);
        let seen = self.thread.join().unwrap_or_default();
        let mut by_name: HashMap<String, f64> = HashMap::new();
        for (_, (name, first, last)) in seen {
            *by_name.entry(name).or_default() += (last - first).max(0.0);
        }
        let mut cpu: Vec<ThreadCpu> = by_name
            .into_iter()
            .filter(|(_, s)| *s > 0.0)
            .map(|(thread, cpu_s)| ThreadCpu {
                core_share: cpu_s / wall_s.max(1e-9),
                thread,
                cpu_s,
            })
            .collect();
        cpu.sort_by(|a, b| b.cpu_s.total_cmp(&a.cpu_s));
        cpu
    }
}

/// Every thread of this process: id, name, user + system CPU seconds.
fn thread_times() -> Vec<(u64, String, f64)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let tid: u64 = e.file_name().to_str()?.parse().ok()?;
        let (name, cpu) = stat_cpu(&std::fs::read_to_string(e.path().join("stat")).ok()?)?;
        Some((tid, name, cpu))
    })
    .collect()
}

/// The name and user + system CPU seconds in a Linux `/proc/.../stat`.
fn stat_cpu(stat: &str) -> Option<(String, f64)> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // "tid (name) state ... utime stime": the name may hold spaces; split after ')'.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((stat[open + 1..close].to_string(), (utime + stime) / ticks))
}

/// Times the forward pass at each width (random weights, the rig's electrodes, the
/// model's kind), on the bench's device.
fn forward_times(opts: &BenchOptions, rig: &RigConfig) -> anyhow::Result<Vec<ForwardTime>> {
    let kind = match &opts.model {
        ModelSource::Random { kind, .. } => *kind,
        ModelSource::Dir(d) => model_kind(d),
    };
    // On a pool of the daemon's size, as `run` decodes.
    let pool = daemon::decode_pool(
        daemon::decode_threads(opts.decode_threads, &opts.realtime),
        None,
    )?;
    let mut out = Vec::new();
    for &width in &opts.widths {
        if opts.progress {
            eprintln!("monkeysee bench: decoder forward pass, width {width} …");
        }
        let job = ForwardJob {
            rig: rig.clone(),
            kind,
            width,
            runs: 30,
        };
        let mut times = pool.install(|| crate::decoder::dispatch(opts.device, job))??;
        times.sort_by(f64::total_cmp);
        let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        out.push(ForwardTime {
            width,
            device: format!("{:?}", opts.device).to_lowercase(),
            runs: times.len(),
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            max_ms: *times.last().unwrap_or(&f64::NAN),
        });
    }
    Ok(out)
}

/// The kind a model folder's `decoder.json` names (end-to-end when unreadable: the
/// daemon's run will have said why).
fn model_kind(dir: &Path) -> DecoderKind {
    std::fs::read_to_string(dir.join(crate::decoder::model::CONFIG_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<crate::decoder::DecoderConfig>(&t).ok())
        .map_or(DecoderKind::EndToEnd, |c| c.kind)
}

struct ForwardJob {
    rig: RigConfig,
    kind: DecoderKind,
    width: usize,
    runs: usize,
}

impl OnBackend for ForwardJob {
    type Output = anyhow::Result<Vec<f64>>;
    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) -> Self::Output {
        let cfg = decoder_config(&self.rig, self.kind, self.width);
        let dec = Decoder::<B>::random(cfg.clone(), 0, &device)?;
        let input: Vec<f32> = (0..cfg.n_features())
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let mut image = vec![0.0f32; cfg.image_len()];
        for _ in 0..3 {
            dec.reconstruct(&input, &mut image)?;
        }
        (0..self.runs)
            .map(|_| {
                let t = Instant::now();
                dec.reconstruct(&input, &mut image)?;
                Ok(t.elapsed().as_secs_f64() * 1000.0)
            })
            .collect()
    }
}
