//! The `run` daemon: the pipeline's threads, their queues, and shutdown.
//!
//! ```text
//! LSL MUA ─► [ingest] ─ringbuf─► [window] ─bounded─► [decode-0..n] ─triple buffer─► [display: main thread] ─pool─► [publish] ─► LSL
//! LSL markers ─► [markers] ─bounded─┘   └─► [stimuli] (images decoded ahead of their frame) ─┘
//!     (--record: ingest ─ringbuf─► [record] ◄─bounded─ markers, publish; see crate::record)
//!     ([watch]: looks at the network once a second; hands ingest a replacement
//!      inlet when the MUA stream is lost; see crate::ingest::watch)
//! ```
//! [`run`] is a handful of steps, in the order the data needs them: lock memory and
//! probe real-time scheduling (`--realtime`), open the recording, start the decoder (it
//! decides the window set), connect the streams, open the outlets and start the
//! recorder and the publisher, then the window stage, and present frames on the calling
//! thread until a stop condition. Every thread belongs to one [`Pipeline`], which stops
//! and joins them when dropped: no return path, early or not, leaves a thread behind.
//! Everything that allocates or can wait (creating outlets, loading the model, warming
//! the decoder) happens before the first sample is read.
//!
//! The stages themselves live in [`stages`] (window, decode, the hand-over to the
//! display) and [`present`] (the display loop). Every drop, overrun, gap and deadline
//! miss is counted in [`Counters`]; per-frame timestamps travel with the frame and land
//! in the presenting thread's histograms.

pub mod outlet;
mod present;
mod save_inputs;
pub mod stages;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use crossbeam_channel::{bounded, Receiver, Sender};

pub use crate::decoder::ComputeDevice;
pub use stages::{
    decode_pool, latest_frame, DecodeStage, DecodedFrame, FrameReceiver, FrameSender, InputSaver,
    SaveEnds, WindowStage, FRAME_POOL,
};

use crate::config::window_set;
use crate::config::RigConfig;
use crate::decoder::{DecoderConfig, DecoderKind};
use crate::display::StimulusLoader;
use crate::ingest::{
    self, IngestError, MarkerEvent, MuaInlet, RawMarker, SampleConsumer, SampleRing,
    StreamDescription,
};
use crate::realtime::{Realtime, RealtimeConfig, RealtimeReport, Role};
use crate::record::{Recorder, RecordingSummary};
use crate::telemetry::{Counters, Stage, StageSummary};
use crate::trace::Trace;
use crate::window::{AssemblerConfig, FeatureFrame, ImageId, Mode, WindowAssembler};
use stages::{DecodeJob, DecoderReady, ModelWarning};

/// Where the decoder comes from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A trained model folder (decoder.json + weights.mpk [+ normalization.json]).
    Dir(PathBuf),
    /// Untrained weights, to exercise the pipeline.
    Random {
        kind: DecoderKind,
        width: usize,
        seed: u64,
    },
}

/// Where frames go.
#[derive(Debug, Clone)]
pub enum Output {
    /// A window; falls back to headless in `fallback` when no display is available.
    Window {
        fallback: PathBuf,
    },
    Headless(PathBuf),
    /// Nowhere: frames are counted and timed but not kept (the soak's hours of frames).
    Discard,
}

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub rig: RigConfig,
    pub model: ModelSource,
    pub mode: Mode,
    /// Read the rig's raw broadband stream (`[streams.broadband]`) and extract MUA
    /// from it online ([`crate::ingest::broadband`]) instead of reading MUA.
    pub broadband: bool,
    pub device: ComputeDevice,
    pub output: Output,
    pub frames: Option<u64>,
    pub seconds: Option<f64>,
    pub hdr_log: Option<PathBuf>,
    /// Folder of `<image_id>.png` shown beside reconstructions. When `None`, the marker
    /// stream's header `<desc><stimuli><directory>` is used if it names a folder.
    pub stimuli_dir: Option<PathBuf>,
    /// Record the consumed streams (MUA and markers) to this XDF file.
    pub record: Option<PathBuf>,
    /// Save every decoded frame's inputs and reconstruction in this folder.
    pub save_inputs: Option<PathBuf>,
    /// Seconds to wait for the streams at start-up.
    pub resolve_timeout: f64,
    /// Threads for the decoder's compute pool (0 = all cores but one).
    pub decode_threads: usize,
    /// Publish `monkeysee-frames` (images of this side, pixels) and `monkeysee-events`
    /// over LSL ([`outlet`]); `None`: no outlets.
    pub outlet: Option<usize>,
    /// Real-time scheduling and locked memory ([`crate::realtime`]); the rig's
    /// `[realtime]` section unless overridden.
    pub realtime: RealtimeConfig,
    /// Write every frame's stages on every thread here (Chrome trace JSON).
    pub trace: Option<PathBuf>,
    /// Print the periodic status line.
    pub status: bool,
    /// Set from outside (Ctrl-C) to stop.
    pub stop: Arc<AtomicBool>,
    /// The run's counters, shared with a caller that watches them while it runs (the
    /// soak); `None`: the run makes its own.
    pub counters: Option<Arc<Counters>>,
}

impl RunOptions {
    /// A quiet event-mode run of `model` on the CPU with the rig's `[realtime]` section:
    /// no limits, logs, recording, outlets or trace; 15 s to find the streams.
    pub fn new(rig: RigConfig, model: ModelSource, output: Output) -> RunOptions {
        RunOptions {
            realtime: rig.realtime.clone(),
            rig,
            model,
            mode: Mode::Event,
            broadband: false,
            device: ComputeDevice::Cpu,
            output,
            frames: None,
            seconds: None,
            hdr_log: None,
            stimuli_dir: None,
            record: None,
            save_inputs: None,
            resolve_timeout: 15.0,
            decode_threads: 0,
            outlet: None,
            trace: None,
            status: false,
            stop: Arc::new(AtomicBool::new(false)),
            counters: None,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub frames_shown: u64,
    pub counters: Vec<(&'static str, u64)>,
    pub stages: Vec<(&'static str, StageSummary)>,
    /// Each stage's latency distribution, `(ms, fraction at or below)` (see
    /// [`crate::telemetry::LatencyRecorder::cdf`]).
    pub cdf: Vec<(&'static str, Vec<(f64, f64)>)>,
    /// The image id of each frame shown, in order: the first 10,000 (a long run's
    /// summary does not grow with every frame; `frames_shown` counts them all).
    pub images: Vec<String>,
    pub mua_stream: String,
    pub marker_stream: Option<String>,
    pub elapsed_s: f64,
    pub table: String,
    /// The `--record` file, if recording.
    pub recording: Option<RecordingSummary>,
    /// The frames outlet, when publishing.
    pub frames_outlet: Option<outlet::OutletSummary>,
    /// What `--realtime` got, when asked.
    pub realtime: Option<RealtimeReport>,
    /// The `--trace` file, when tracing.
    pub trace: Option<PathBuf>,
    /// Its picture of the slowest frame (`<trace>.png`), when one could be drawn.
    pub trace_picture: Option<PathBuf>,
    /// What the first decode errors said (at most
    /// [`DECODE_ERRORS_KEPT`](crate::telemetry::DECODE_ERRORS_KEPT); the
    /// `decode_errors` counter counts them all).
    pub decode_errors: Vec<String>,
    /// What the run warned about at start-up (a model folder without its statistics).
    pub warnings: Vec<String>,
}

impl RunSummary {
    pub fn counter(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    }

    pub fn stage(&self, name: &str) -> Option<StageSummary> {
        self.stages
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
    }
}

/// Runs the daemon until `--frames`, `--seconds`, Ctrl-C or the window closes.
pub fn run(opts: RunOptions) -> anyhow::Result<RunSummary> {
    // Before any thread starts: real-time (memory locked for everything that follows),
    // the trace, the recording file. A bad path costs nothing.
    let realtime = start_realtime(&opts)?;
    let trace = opts.trace.as_deref().map(Trace::start).transpose()?;
    let recording = (opts.record.as_deref())
        .map(|p| {
            Recorder::create(p).with_context(|| format!("starting the recording {}", p.display()))
        })
        .transpose()?;
    let mut pipeline = Pipeline::new(opts.counters.clone(), realtime.clone(), trace.as_ref());
    let (mut decoding, mut frames) = pipeline.start_decoder(&opts)?;
    let warnings: Vec<String> = std::mem::take(&mut decoding.warnings)
        .iter()
        .map(ToString::to_string)
        .collect();
    for w in &warnings {
        eprintln!("monkeysee: warning: {w}");
    }
    let mut inputs = pipeline.connect_streams(&opts, recording.is_some())?;
    announce(&opts, &inputs, &decoding.config);
    // The outlets are named after the stream they decode.
    let input = match inputs.mua.source_id.as_str() {
        "" => inputs.mua.name.clone(),
        id => id.to_string(),
    };
    let outlet_source = format!("monkeysee-{input}");
    let mut record_outputs = None;
    if let Some(rec) = recording {
        record_outputs = pipeline.start_recorder(&opts, rec, &mut inputs, &outlet_source)?;
    }
    let size = decoding.config.image_size;
    let publish = (opts.outlet)
        .map(|side| pipeline.start_publisher(&opts, side, size, &outlet_source, record_outputs))
        .transpose()?;
    // Last, the display (window or folder, stimuli) and the window stage; then the
    // streams open, into a pipeline that is running end to end.
    let (presenter, stimuli) = open_display(&opts, &mut inputs, size, &pipeline.counters)?;
    pipeline.start_window(decoding, inputs.samples, inputs.markers, inputs.wake_ingest)?;
    let _ = inputs.start_markers.send(());
    let where_to = present::Where {
        size,
        presenter,
        stimuli,
        publish,
    };
    let display_rt = realtime.as_ref().map(|rt| rt.enter_for_run(Role::Display));
    let presented = crate::trace::in_thread(pipeline.trace.as_ref(), || {
        present::present(&opts, &pipeline, &mut frames, where_to)
    });
    drop(display_rt);
    let stopped = pipeline.stop();
    if let Some(rt) = &realtime {
        rt.release();
    }
    if let Some(e) = stopped.recording.as_ref().and_then(|r| r.error.as_ref()) {
        eprintln!(
            "monkeysee: the recording {} stopped early: {e}",
            stopped
                .recording
                .as_ref()
                .map_or_else(Default::default, |r| r.path.display().to_string())
        );
    }
    let (trace, trace_picture) = trace.map(crate::trace::finish_with_picture).unzip();
    let p = presented?;
    Ok(RunSummary {
        frames_shown: p.shown,
        counters: pipeline.counters.snapshot(),
        stages: Stage::ALL
            .iter()
            .map(|s| (s.name(), p.latency.summary(*s)))
            .collect(),
        cdf: Stage::ALL
            .iter()
            .map(|s| (s.name(), p.latency.cdf(*s)))
            .collect(),
        images: p.images,
        mua_stream: inputs.mua.to_string(),
        marker_stream: inputs.marker_stream.map(|d| d.to_string()),
        elapsed_s: p.elapsed_s,
        table: p.latency.table(),
        recording: stopped.recording,
        frames_outlet: stopped.outlet,
        realtime: realtime.map(|r| r.report()),
        trace,
        trace_picture: trace_picture.flatten(),
        decode_errors: pipeline.counters.decode_error_texts.texts(),
        warnings,
    })
}

/// The display's window (or folder and PNG writer), and the stimuli thread when there is
/// a stimulus folder (`--stimuli`, or the marker stream's header).
fn open_display(
    opts: &RunOptions,
    inputs: &mut Inputs,
    size: usize,
    counters: &Arc<Counters>,
) -> anyhow::Result<(Box<dyn crate::display::Presenter>, Option<StimulusLoader>)> {
    let dir = stimuli_dir(opts, inputs);
    let presenter = present::open_presenter(opts, size, dir.is_some(), counters)?;
    let stimuli = match (dir, inputs.stimulus_requests.take()) {
        (Some(dir), Some(requests)) => Some(
            StimulusLoader::start(dir, size, requests).context("starting the stimuli thread")?,
        ),
        _ => None,
    };
    Ok((presenter, stimuli))
}

/// Locks memory and probes real-time scheduling as asked (before any pipeline thread);
/// says what was refused. `Require` mode refuses to run without all of it.
fn start_realtime(opts: &RunOptions) -> anyhow::Result<Option<Arc<Realtime>>> {
    let threads = decode_threads(opts.decode_threads, &opts.realtime);
    let rt = Realtime::start(&opts.realtime, threads).map_err(|r| {
        anyhow!(r).context(
            "real-time operation is required (--realtime=require, or mode = \"require\" in the rig's [realtime]) and the system refused it",
        )
    })?;
    if let (Some(rt), true) = (&rt, opts.status) {
        for r in rt.refusals() {
            eprintln!("monkeysee: warning: {r}; running on without it");
        }
        eprintln!("monkeysee: {}", rt.describe());
    }
    Ok(rt)
}

/// Threads of the decoder's own pool: `requested`, or with 0 all cores but one, or but
/// two when `--realtime` pins threads ([`crate::realtime::pinned_pool_size`]).
pub fn decode_threads(requested: usize, realtime: &RealtimeConfig) -> usize {
    match crate::realtime::pinned_pool_size(realtime) {
        Some(n) if requested == 0 => n,
        _ => crate::decoder::compute_threads(requested, crate::decoder::PoolRole::Live),
    }
}

/// The decode thread's ends of the window→decode queues, and what it reported.
struct Decoding {
    config: DecoderConfig,
    /// What the decode thread found worth a warning about the model.
    warnings: Vec<ModelWarning>,
    /// The window assembler for the decoder's window set, seeded with the model's
    /// normalisation statistics.
    assembler: WindowAssembler,
    frames: Sender<FeatureFrame>,
    free: Receiver<FeatureFrame>,
    thread: Thread,
}

/// The live streams and the window stage's (and recorder's) ends of their queues.
struct Inputs {
    /// The input stream: MUA, or broadband with `--input broadband`.
    mua: StreamDescription,
    /// How a recording describes the MUA the ingest delivers.
    mua_recorded: StreamDescription,
    marker_stream: Option<StreamDescription>,
    samples: SampleConsumer,
    markers: Receiver<MarkerEvent>,
    /// Tells the ingest thread which thread to wake after each chunk (and so that the
    /// pipeline runs: it opens the MUA stream then).
    wake_ingest: Sender<Thread>,
    /// Tells the marker thread to open its stream (with the MUA stream).
    start_markers: Sender<()>,
    /// Image ids the marker thread sends ahead for the stimuli thread (event mode).
    stimulus_requests: Option<Receiver<ImageId>>,
    record_samples: Option<SampleConsumer>,
    record_markers: Option<Receiver<RawMarker>>,
}

/// The input stream as it came up, and how a recording describes the MUA it gives.
struct MuaLive {
    stream: StreamDescription,
    recorded: StreamDescription,
}

/// The watch's ends of the ingest thread's inlet hand-over.
struct WatchEnds {
    handover: Sender<MuaInlet>,
    /// A clone of ingest's receiving end, to take back a replacement it did not need.
    unused: Receiver<MuaInlet>,
    retired: Receiver<MuaInlet>,
}

/// A stream thread's report once its stream is live (or why it is not).
enum Live {
    Mua(MuaLive),
    Markers(StreamDescription),
}

/// Why a stream thread could not bring its stream up, by stream: in sliding mode a
/// missing marker stream is no reason to stop, a missing MUA stream always is.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("connecting to the MUA stream")]
    Mua(#[source] IngestError),
    #[error("connecting to the marker stream")]
    Markers(#[source] IngestError),
}

/// The pipeline's threads. Dropping it (every return from [`run`], early or not) tells
/// them to stop and joins them, the recorder last so that its final drain gets
/// everything the producers sent.
struct Pipeline {
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    /// Set once the producers have stopped: the publisher and the recorder drain, then end.
    drain_stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Threads that drain a queue after the producers stop (`save-inputs`).
    drainers: Vec<JoinHandle<()>>,
    publisher: Option<JoinHandle<outlet::OutletSummary>>,
    /// Set once the publisher has ended: the recorder drains, then ends.
    record_stop: Arc<AtomicBool>,
    recorder: Option<JoinHandle<RecordingSummary>>,
    realtime: Option<Arc<Realtime>>,
    /// This run's trace dispatcher, which every pipeline thread runs under.
    trace: Option<tracing::Dispatch>,
}

/// What the draining threads reported when the pipeline stopped.
#[derive(Default)]
struct Stopped {
    recording: Option<RecordingSummary>,
    outlet: Option<outlet::OutletSummary>,
}

impl Pipeline {
    fn new(
        counters: Option<Arc<Counters>>,
        realtime: Option<Arc<Realtime>>,
        trace: Option<&Trace>,
    ) -> Self {
        Pipeline {
            counters: counters.unwrap_or_default(),
            stop: Arc::new(AtomicBool::new(false)),
            drain_stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            drainers: Vec::new(),
            publisher: None,
            record_stop: Arc::new(AtomicBool::new(false)),
            recorder: None,
            realtime,
            trace: trace.map(|t| t.dispatch().clone()),
        }
    }

    /// Starts a named pipeline thread that ends when [`Pipeline::stop`] is called; made
    /// real-time first when it has a `role` and `--realtime` is on, and traced with
    /// `--trace`.
    fn spawn(
        &mut self,
        name: &str,
        role: Option<Role>,
        f: impl FnOnce() + Send + 'static,
    ) -> anyhow::Result<Thread> {
        let h = self.spawn_handle(name, role, f)?;
        let t = h.thread().clone();
        self.threads.push(h);
        Ok(t)
    }

    fn spawn_handle<T: Send + 'static>(
        &self,
        name: &str,
        role: Option<Role>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<JoinHandle<T>> {
        let realtime = role.and(self.realtime.clone());
        let trace = self.trace.clone();
        thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                if let (Some(rt), Some(role)) = (&realtime, role) {
                    rt.enter(role);
                }
                crate::trace::in_thread(trace.as_ref(), f)
            })
            .with_context(|| format!("spawning the {name} thread"))
    }

    /// True when a thread has ended without being told to: the run cannot go on.
    fn any_finished(&self) -> bool {
        self.threads.iter().any(|h| h.is_finished())
    }

    /// Step 1: the decode thread builds the decoder (on the chosen backend) on its own
    /// pool, warms it and reports its window set; the frame pool is filled for it.
    /// Returns the display's end of the decode→display triple buffer beside it.
    fn start_decoder(&mut self, opts: &RunOptions) -> anyhow::Result<(Decoding, FrameReceiver)> {
        let (ready_tx, ready_rx) = bounded::<anyhow::Result<DecoderReady>>(1);
        let (work_tx, work_rx) = bounded::<FeatureFrame>(FRAME_POOL);
        let (free_tx, free_rx) = bounded::<FeatureFrame>(FRAME_POOL);
        let (out, frames) = latest_frame(opts.rig.image_size, thread::current());
        let (mut saver, save_ends) = (opts.save_inputs.as_deref())
            .map(InputSaver::create)
            .transpose()?
            .unzip();
        let job = DecodeJob {
            model: opts.model.clone(),
            rig: opts.rig.clone(),
            threads: decode_threads(opts.decode_threads, &opts.realtime),
            ready: ready_tx.clone(),
            frames: work_rx,
            free: free_tx.clone(),
            out,
            counters: self.counters.clone(),
            stop: self.stop.clone(),
            save_inputs: save_ends,
            realtime: self.realtime.clone(),
            trace: self.trace.clone(),
        };
        let device = opts.device;
        self.spawn("decode", None, move || {
            if let Err(e) = crate::decoder::dispatch(device, job) {
                let _ = ready_tx.send(Err(e));
            }
        })?;
        let DecoderReady {
            config,
            stats,
            thread,
            warnings,
        } = match ready_rx.recv_timeout(Duration::from_secs(600)) {
            Ok(r) => r?,
            Err(_) => bail!("the decoder did not start"),
        };
        if let Some(mut s) = saver.take() {
            s.open(config.n_features(), config.image_size)?;
            let stop = self.drain_stop.clone();
            let h = self.spawn_handle("save-inputs", None, move || s.run(&stop))?;
            self.drainers.push(h);
        }
        let set = window_set(config.kind);
        let assembler = WindowAssembler::new(
            AssemblerConfig::from_rig(&opts.rig, set, opts.mode),
            stats.as_ref(),
        );
        let template = assembler.new_frame();
        for _ in 0..FRAME_POOL {
            let _ = free_tx.send(template.clone());
        }
        let decoding = Decoding {
            config,
            warnings,
            assembler,
            frames: work_tx,
            free: free_rx,
            thread,
        };
        Ok((decoding, frames))
    }

    /// Step 2: the ingest and marker threads connect to their streams; returns once both
    /// are live. In sliding mode the marker stream is optional.
    fn connect_streams(&mut self, opts: &RunOptions, record: bool) -> anyhow::Result<Inputs> {
        let rig = &opts.rig;
        let (ready_tx, ready_rx) = bounded::<Result<Live, ConnectError>>(2);
        let ring_samples = (rig.sampling_rate_hz * 2.0).ceil() as usize; // 2 s of slack
        let (producer, samples) = SampleRing::new(rig.channel_count, ring_samples);
        // The recorder's ring: 5 s of slack for a slow disk.
        let (record_producer, record_samples) = record
            .then(|| {
                SampleRing::new(
                    rig.channel_count,
                    (rig.sampling_rate_hz * 5.0).ceil() as usize,
                )
            })
            .unzip();
        let (wake_ingest, wake_rx) = bounded::<Thread>(1);
        let (handover_tx, replacement) = bounded::<MuaInlet>(1);
        let unused = replacement.clone();
        let (retired, retired_rx) = bounded::<MuaInlet>(2);
        let handover = ingest::Handover {
            replacement,
            retired,
        };
        self.start_ingest(
            opts,
            ready_tx.clone(),
            producer,
            record_producer,
            wake_rx,
            handover,
        )?;

        let markers_needed = opts.mode == Mode::Event;
        let (marker_tx, markers) = bounded::<MarkerEvent>(256);
        let (stimuli_tx, stimulus_requests) = StimulusLoader::requests();
        let (start_markers, start_rx) = bounded::<()>(1);
        let (record_marker_tx, record_markers) = record.then(|| bounded::<RawMarker>(4096)).unzip();
        let timeout = if markers_needed {
            opts.resolve_timeout
        } else {
            opts.resolve_timeout.min(2.0)
        };
        let (selector, counters, stop) = (
            rig.markers.clone(),
            self.counters.clone(),
            self.stop.clone(),
        );
        self.spawn("markers", Some(Role::Ingest), move || {
            let sinks = ingest::MarkerSinks {
                events: &marker_tx,
                record: record_marker_tx.as_ref(),
                stimuli: Some(&stimuli_tx),
                start: Some(&start_rx),
            };
            ingest::run_markers(&selector, timeout, &stop, &counters, &sinks, |r| {
                let _ = ready_tx.send(r.map(Live::Markers).map_err(ConnectError::Markers));
            });
        })?;

        let (mua, marker_stream, marker_error) =
            wait_for_streams(&ready_rx, opts.resolve_timeout + 5.0, markers_needed)?;
        if let Some(e) = marker_error {
            // Sliding mode without markers: the marker thread has ended by design.
            if let Some(i) = self
                .threads
                .iter()
                .position(|h| h.thread().name() == Some("markers"))
            {
                let _ = self.threads.swap_remove(i).join();
            }
            if opts.status {
                eprintln!(
                    "monkeysee: no marker stream ({:#}); sliding mode runs without stimulus ids",
                    anyhow!(e)
                );
            }
        }
        let ends = WatchEnds {
            handover: handover_tx,
            unused,
            retired: retired_rx,
        };
        self.start_watch(opts, &mua.stream, marker_stream.as_ref(), ends)?;
        Ok(Inputs {
            mua: mua.stream,
            mua_recorded: mua.recorded,
            record_markers: record_markers.filter(|_| marker_stream.is_some()),
            marker_stream,
            samples,
            markers,
            wake_ingest,
            start_markers,
            stimulus_requests: Some(stimulus_requests),
            record_samples,
        })
    }

    /// The ingest thread: connects to the MUA stream, reports it, waits for the window
    /// thread to exist, then runs [`ingest::run_mua`] until stopped.
    fn start_ingest(
        &mut self,
        opts: &RunOptions,
        ready: Sender<Result<Live, ConnectError>>,
        mut producer: ingest::SampleProducer,
        mut record: Option<ingest::SampleProducer>,
        wake_rx: Receiver<Thread>,
        handover: ingest::Handover,
    ) -> anyhow::Result<()> {
        let (rig, counters, stop) = (opts.rig.clone(), self.counters.clone(), self.stop.clone());
        let timeout = opts.resolve_timeout;
        let (selector, spec) = input_stream(opts)?;
        self.spawn("ingest", Some(Role::Ingest), move || {
            let connected = MuaInlet::connect_deferred(&selector, &spec, timeout);
            let mut inlet = match connected {
                Ok(i) => i,
                Err(e) => {
                    let _ = ready.send(Err(ConnectError::Mua(e)));
                    return;
                }
            };
            let recorded = inlet.recorded_description(rig.sampling_rate_hz);
            let stream = inlet.description.clone();
            let _ = ready.send(Ok(Live::Mua(MuaLive { stream, recorded })));
            // The window thread starts once every stream is live; until then the
            // inlet buffers (10 s). Give up if the run is called off meanwhile.
            let mut window_thread = None;
            while window_thread.is_none() && !stop.load(Ordering::Relaxed) {
                window_thread = wake_rx.recv_timeout(Duration::from_millis(50)).ok();
            }
            // The pipeline runs: samples flow from now on (none piled up while it
            // started). A failure shows as a lost stream in the pull loop.
            let _ = inlet.start(timeout);
            let wake = || {
                if let Some(t) = &window_thread {
                    t.unpark();
                }
            };
            ingest::run_mua(
                &mut inlet,
                &mut producer,
                record.as_mut(),
                &stop,
                &counters,
                1.0,
                &wake,
                Some(&handover),
            );
        })?;
        Ok(())
    }

    /// The stream watch ([`ingest::watch`]): rivals refused, a lost MUA stream replaced
    /// by one that fits.
    fn start_watch(
        &mut self,
        opts: &RunOptions,
        mua: &StreamDescription,
        markers: Option<&StreamDescription>,
        ends: WatchEnds,
    ) -> anyhow::Result<()> {
        let rig = &opts.rig;
        let (selector, spec) = input_stream(opts)?;
        let cfg = ingest::watch::WatchConfig {
            mua: selector,
            markers: markers.map(|_| rig.markers.clone()),
            spec,
            every: Duration::from_secs(1),
            report: opts.status,
        };
        let (mua, markers) = (mua.clone(), markers.cloned());
        let (counters, stop) = (self.counters.clone(), self.stop.clone());
        self.spawn("watch", None, move || {
            ingest::watch::run(
                &cfg,
                &mua,
                markers.as_ref(),
                &counters,
                &stop,
                ends.handover,
                ends.unused,
                ends.retired,
            )
        })?;
        Ok(())
    }

    /// Step 3 (`--record`): the recorder writes the streams' headers now and their
    /// samples from its own rings until the pipeline stops. With the frames outlet on,
    /// it records `monkeysee-frames`, `monkeysee-frame-info` and `monkeysee-events` too:
    /// the returned senders are the publish thread's ends.
    fn start_recorder(
        &mut self,
        opts: &RunOptions,
        mut rec: Recorder,
        inputs: &mut Inputs,
        outlet_source: &str,
    ) -> anyhow::Result<Option<outlet::RecordEnds>> {
        let recording = |e: crate::xdf::WriteError, rec: &Recorder| {
            anyhow!(e).context(format!("recording to {}", rec.path().display()))
        };
        let headers =
            rec.add_mua(&inputs.mua_recorded)
                .and_then(|()| match &inputs.marker_stream {
                    Some(d) => rec.add_markers(d),
                    None => Ok(()),
                });
        if let Err(e) = headers {
            return Err(recording(e, &rec));
        }
        let mut ends = None;
        if let Some(side) = opts.outlet {
            let (frames_tx, frames_rx) = bounded(64);
            let (info_tx, info_rx) = bounded(64);
            let (events_tx, events_rx) = bounded(1024);
            let [frames, info, events] =
                outlet::recorded_headers(side, outlet_source, &opts.rig.name)?;
            let added = rec
                .add_numeric_output(crate::record::FRAMES_STREAM, frames, frames_rx)
                .and_then(|()| rec.add_output(crate::record::FRAME_INFO_STREAM, info, info_rx))
                .and_then(|()| rec.add_output(crate::record::EVENTS_STREAM, events, events_rx));
            if let Err(e) = added {
                return Err(recording(e, &rec));
            }
            ends = Some(outlet::RecordEnds {
                frames: frames_tx,
                info: info_tx,
                events: events_tx,
            });
        }
        if opts.status {
            eprintln!("monkeysee: recording to {}", rec.path().display());
        }
        let mut samples = inputs
            .record_samples
            .take()
            .context("the recorder's ring was not made")?;
        let markers = inputs.record_markers.take();
        let (stop, counters) = (self.record_stop.clone(), self.counters.clone());
        self.recorder = Some(self.spawn_handle("record", None, move || {
            rec.run(&mut samples, markers.as_ref(), &stop, &counters)
        })?);
        Ok(ends)
    }

    /// Step 4 (the frames outlet on): the publish thread creates the three outlets and
    /// reports back before any frame exists (liblsl's outlets stay on the thread that
    /// made them); the display's end of its hand-over.
    fn start_publisher(
        &mut self,
        opts: &RunOptions,
        side: usize,
        image_size: usize,
        outlet_source: &str,
        record: Option<outlet::RecordEnds>,
    ) -> anyhow::Result<outlet::PublishSender> {
        let (ready_tx, ready_rx) =
            bounded::<Result<outlet::PublishSender, crate::lsl::LslError>>(1);
        let (counters, stop) = (self.counters.clone(), self.drain_stop.clone());
        let (source, rig) = (outlet_source.to_string(), opts.rig.name.clone());
        let handle = self.spawn_handle("publish", None, move || {
            let publisher =
                match outlet::Publisher::open(side, image_size, &source, &rig, &counters, record) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return outlet::OutletSummary::default();
                    }
                };
            let (sender, frames, free) = publisher.hand_over();
            let _ = ready_tx.send(Ok(sender));
            publisher.run(&frames, &free, &counters, &stop)
        })?;
        self.publisher = Some(handle);
        let opened = ready_rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| anyhow!("the publish thread did not start"))?;
        opened.context("publishing the monkeysee-frames, -frame-info and -events LSL streams (--no-outlet runs without)")
    }

    /// Step 5: the window thread, last, so that it finds every stream live; ingest is
    /// told whom to wake.
    fn start_window(
        &mut self,
        decoding: Decoding,
        samples: SampleConsumer,
        markers: Receiver<MarkerEvent>,
        wake_ingest: Sender<Thread>,
    ) -> anyhow::Result<()> {
        let mut stage = WindowStage::new(
            decoding.assembler,
            samples,
            Some(markers),
            decoding.frames,
            decoding.free,
            self.counters.clone(),
        );
        stage.wake_on_frame(decoding.thread);
        let stop = self.stop.clone();
        let t = self.spawn("window", Some(Role::Window), move || stage.run(&stop))?;
        let _ = wake_ingest.send(t);
        Ok(())
    }

    /// Stops and joins every thread: the producers first, then what drains their
    /// queues (inputs saver, publisher), the recorder last.
    fn stop(&mut self) -> Stopped {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
        self.drain_stop.store(true, Ordering::Release);
        for h in self.drainers.drain(..) {
            let _ = h.join();
        }
        let outlet = self.publisher.take().and_then(|h| h.join().ok());
        self.record_stop.store(true, Ordering::Release);
        let recording = self.recorder.take().and_then(|h| h.join().ok());
        Stopped { recording, outlet }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop();
    }
}

/// MUA samples the ingest thread pulls at most at once: 100 ms' worth, at least 16.
fn max_chunk(rig: &RigConfig) -> usize {
    ((rig.sampling_rate_hz * 0.1).ceil() as usize).max(16)
}

/// The input stream's selector and what it must fit: the MUA stream, or with
/// `broadband` the raw stream (which needs a `[streams.broadband]` selector).
fn input_stream(
    opts: &RunOptions,
) -> anyhow::Result<(crate::config::StreamSelector, ingest::MuaSpec)> {
    let rig = &opts.rig;
    let spec = ingest::MuaSpec::for_rig(rig, opts.broadband, max_chunk(rig));
    if !opts.broadband {
        return Ok((rig.mua.clone(), spec));
    }
    let selector = rig.broadband.selector.clone().with_context(|| {
        format!(
            "{} has no [streams.broadband] selector: add one (name, type, source_id of the raw stream) or give --broadband-query",
            rig.path.display()
        )
    })?;
    Ok((selector, spec))
}

/// Waits until the MUA stream and (unless optional and absent) the marker stream are
/// live. Returns the MUA stream, the marker stream, and why there is none when it was
/// optional.
fn wait_for_streams(
    ready: &Receiver<Result<Live, ConnectError>>,
    timeout_s: f64,
    markers_needed: bool,
) -> anyhow::Result<(MuaLive, Option<StreamDescription>, Option<ConnectError>)> {
    let mut mua = None;
    let mut markers = None;
    let mut marker_error = None;
    let deadline = Instant::now() + Duration::from_secs_f64(timeout_s);
    loop {
        if markers.is_some() || marker_error.is_some() {
            if let Some(m) = mua.take() {
                return Ok((m, markers, marker_error));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match ready.recv_timeout(left) {
            Ok(Ok(Live::Mua(live))) => mua = Some(live),
            Ok(Ok(Live::Markers(d))) => markers = Some(d),
            Ok(Err(e @ ConnectError::Markers(_))) if !markers_needed => marker_error = Some(e),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => bail!("the streams did not come up within {timeout_s:.0} s"),
        }
    }
}

/// The start-up report (unless `--quiet`).
fn announce(opts: &RunOptions, inputs: &Inputs, c: &DecoderConfig) {
    if !opts.status {
        return;
    }
    if !opts.broadband {
        eprintln!("monkeysee: MUA stream live: {}", inputs.mua);
    } else {
        let b = &opts.rig.broadband;
        eprintln!(
            "monkeysee: broadband stream live: {}; MUA extracted online: band-pass {}–{} Hz (Butterworth order {}), rectified, low-pass {} Hz (order {}), downsampled {}:1 to {} Hz{}",
            inputs.mua,
            b.band_hz[0],
            b.band_hz[1],
            b.band_order,
            b.lowpass_hz,
            b.lowpass_order,
            (b.sampling_rate_hz / opts.rig.sampling_rate_hz).round(),
            opts.rig.sampling_rate_hz,
            if b.compensate_delay {
                "; stamps corrected for the low-pass's delay"
            } else {
                ""
            }
        );
    }
    if let Some(d) = &inputs.marker_stream {
        eprintln!("monkeysee: marker stream live: {d}");
    }
    eprintln!(
        "monkeysee: decoding {} ({} windows/electrode, {} electrodes, width {}, {} px) in {:?} mode; budget {} ms",
        c.kind,
        c.windows_per_electrode,
        c.electrodes.len(),
        c.width,
        c.image_size,
        opts.mode,
        opts.rig.latency_budget.0
    );
}

/// Stimulus images: `--stimuli`, else the folder the marker stream's header names (a
/// replayed session publishes its image folder there).
fn stimuli_dir(opts: &RunOptions, inputs: &Inputs) -> Option<PathBuf> {
    if opts.stimuli_dir.is_some() {
        return opts.stimuli_dir.clone();
    }
    let dir = inputs
        .marker_stream
        .as_ref()
        .and_then(|d| d.full_xml.as_deref())
        .and_then(crate::lsl::header::stimuli_directory)
        .filter(|d| d.is_dir())?;
    if opts.status {
        eprintln!(
            "monkeysee: stimulus images from the marker stream's header: {}",
            dir.display()
        );
    }
    Some(dir)
}
