//! The `run` daemon: the pipeline's threads, their queues, and shutdown.
//!
//! ```text
//! LSL MUA ─► [ingest] ─ringbuf─► [window] ─bounded─► [decode] ─latest-wins─► [display: main thread]
//! LSL markers ─► [markers] ─bounded─┘
//!     (--record: ingest ─ringbuf─► [record] ◄─bounded─ markers; see crate::record)
//!     ([watch]: looks at the network once a second; hands ingest a replacement
//!      inlet when the MUA stream is lost; see crate::ingest::watch)
//! ```
//! [`run`] is a handful of steps, in the order the data needs them: open the recording,
//! start the decoder (it decides the window set), connect the streams, start the
//! recorder and the window stage, then present frames on the calling thread until a
//! stop condition. Every thread belongs to one [`Pipeline`], which stops and joins them
//! when dropped: no return path, early or not, leaves a thread behind.
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
pub use stages::{DecodedFrame, LatestSlot, WindowStage, FRAME_POOL};

use crate::config::RigConfig;
use crate::decoder::{window_set, DecoderConfig, DecoderKind};
use crate::ingest::{
    self, MarkerEvent, MuaInlet, RawMarker, SampleConsumer, SampleRing, StreamDescription,
};
use crate::record::{Recorder, RecordingSummary};
use crate::telemetry::{Counters, Stage, StageSummary};
use crate::window::{AssemblerConfig, FeatureFrame, Mode, WindowAssembler};
use stages::{DecodeJob, DecoderReady};

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
    /// Print the periodic status line.
    pub status: bool,
    /// Set from outside (Ctrl-C) to stop.
    pub stop: Arc<AtomicBool>,
    /// The run's counters, shared with a caller that watches them while it runs (the
    /// soak); `None`: the run makes its own.
    pub counters: Option<Arc<Counters>>,
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
    // Opened before any thread starts: a bad path costs nothing.
    let recording = match &opts.record {
        Some(p) => Some(
            Recorder::create(p)
                .with_context(|| format!("starting the recording {}", p.display()))?,
        ),
        None => None,
    };
    let mut pipeline = Pipeline::new(opts.counters.clone());
    let decoding = pipeline.start_decoder(&opts)?;
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
    let stimuli_dir = stimuli_dir(&opts, &inputs);
    let size = decoding.config.image_size;
    let slot = decoding.slot.clone();
    pipeline.start_window(decoding, inputs.samples, inputs.markers, inputs.wake_ingest)?;
    let where_to = present::Where {
        size,
        stimuli_dir,
        outlet_source,
        record_outputs,
    };
    let presented = present::present(&opts, &pipeline, &slot, where_to);
    let recording = pipeline.stop();
    if let Some(e) = recording.as_ref().and_then(|r| r.error.as_ref()) {
        eprintln!(
            "monkeysee: the recording {} stopped early: {e}",
            recording
                .as_ref()
                .map_or_else(Default::default, |r| r.path.display().to_string())
        );
    }
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
        recording,
        frames_outlet: p.outlet,
    })
}

/// The decode thread's ends of the window→decode queues, and what it reported.
struct Decoding {
    config: DecoderConfig,
    /// The window assembler for the decoder's window set, seeded with the model's
    /// normalisation statistics.
    assembler: WindowAssembler,
    frames: Sender<FeatureFrame>,
    free: Receiver<FeatureFrame>,
    slot: Arc<LatestSlot>,
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
    /// Tells the ingest thread which thread to wake after each chunk.
    wake_ingest: Sender<Thread>,
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

/// The pipeline's threads. Dropping it (every return from [`run`], early or not) tells
/// them to stop and joins them, the recorder last so that its final drain gets
/// everything the producers sent.
struct Pipeline {
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    record_stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    recorder: Option<JoinHandle<RecordingSummary>>,
}

impl Pipeline {
    fn new(counters: Option<Arc<Counters>>) -> Self {
        Pipeline {
            counters: counters.unwrap_or_default(),
            stop: Arc::new(AtomicBool::new(false)),
            record_stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            recorder: None,
        }
    }

    /// Starts a named pipeline thread that ends when [`Pipeline::stop`] is called.
    fn spawn(&mut self, name: &str, f: impl FnOnce() + Send + 'static) -> anyhow::Result<Thread> {
        let h = spawn_named(name, f)?;
        let t = h.thread().clone();
        self.threads.push(h);
        Ok(t)
    }

    /// True when a thread has ended without being told to: the run cannot go on.
    fn any_finished(&self) -> bool {
        self.threads.iter().any(|h| h.is_finished())
    }

    /// Step 1: the decode thread builds the decoder (on the chosen backend) and reports
    /// its window set; the frame pool is filled for it.
    fn start_decoder(&mut self, opts: &RunOptions) -> anyhow::Result<Decoding> {
        crate::decoder::init_compute_threads(crate::decoder::compute_threads(
            opts.decode_threads,
            crate::decoder::PoolRole::Live,
        ));
        let (ready_tx, ready_rx) = bounded::<anyhow::Result<DecoderReady>>(1);
        let (work_tx, work_rx) = bounded::<FeatureFrame>(FRAME_POOL);
        let (free_tx, free_rx) = bounded::<FeatureFrame>(FRAME_POOL);
        let slot = Arc::new(LatestSlot::new());
        let job = DecodeJob {
            model: opts.model.clone(),
            rig: opts.rig.clone(),
            ready: ready_tx.clone(),
            frames: work_rx,
            free: free_tx.clone(),
            slot: slot.clone(),
            counters: self.counters.clone(),
            stop: self.stop.clone(),
            save_inputs: opts.save_inputs.clone(),
        };
        let device = opts.device;
        let thread = self.spawn("decode", move || {
            if let Err(e) = crate::decoder::dispatch(device, job) {
                let _ = ready_tx.send(Err(e));
            }
        })?;
        let DecoderReady { config, stats } = match ready_rx.recv_timeout(Duration::from_secs(600)) {
            Ok(r) => r?,
            Err(_) => bail!("the decoder did not start"),
        };
        let set = window_set(config.kind);
        let assembler = WindowAssembler::new(
            AssemblerConfig::from_rig(&opts.rig, set, opts.mode),
            stats.as_ref(),
        );
        let template = assembler.new_frame();
        for _ in 0..FRAME_POOL {
            let _ = free_tx.send(template.clone());
        }
        Ok(Decoding {
            config,
            assembler,
            frames: work_tx,
            free: free_rx,
            slot,
            thread,
        })
    }

    /// Step 2: the ingest and marker threads connect to their streams; returns once both
    /// are live. In sliding mode the marker stream is optional.
    fn connect_streams(&mut self, opts: &RunOptions, record: bool) -> anyhow::Result<Inputs> {
        let rig = &opts.rig;
        let (ready_tx, ready_rx) = bounded::<anyhow::Result<Live>>(2);
        let ring_samples = (rig.sampling_rate_hz * 2.0).ceil() as usize; // 2 s of slack
        let (producer, samples) = SampleRing::new(rig.channel_count, ring_samples);
        // The recorder's ring: 5 s of slack for a slow disk.
        let (record_producer, record_samples) = if record {
            let n = (rig.sampling_rate_hz * 5.0).ceil() as usize;
            let (p, c) = SampleRing::new(rig.channel_count, n);
            (Some(p), Some(c))
        } else {
            (None, None)
        };
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
        let (record_marker_tx, record_markers) = if record {
            let (tx, rx) = bounded::<RawMarker>(4096);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
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
        self.spawn("markers", move || {
            ingest::run_markers(
                &selector,
                timeout,
                &stop,
                &counters,
                &marker_tx,
                record_marker_tx.as_ref(),
                |r| {
                    let _ =
                        ready_tx
                            .send(r.map(Live::Markers).map_err(|e| {
                                anyhow!(e).context("connecting to the marker stream")
                            }));
                },
            );
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
                    "monkeysee: no marker stream ({e:#}); sliding mode runs without stimulus ids"
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
            record_samples,
        })
    }

    /// The ingest thread: connects to the MUA stream, reports it, waits for the window
    /// thread to exist, then runs [`ingest::run_mua`] until stopped.
    fn start_ingest(
        &mut self,
        opts: &RunOptions,
        ready: Sender<anyhow::Result<Live>>,
        mut producer: ingest::SampleProducer,
        mut record: Option<ingest::SampleProducer>,
        wake_rx: Receiver<Thread>,
        handover: ingest::Handover,
    ) -> anyhow::Result<()> {
        let (rig, counters, stop) = (opts.rig.clone(), self.counters.clone(), self.stop.clone());
        let timeout = opts.resolve_timeout;
        let (selector, spec) = input_stream(opts)?;
        self.spawn("ingest", move || {
            let connected = MuaInlet::connect(&selector, &spec, timeout);
            let mut inlet = match connected {
                Ok(i) => i,
                Err(e) => {
                    let _ = ready.send(Err(anyhow!(e).context("connecting to the MUA stream")));
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
        self.spawn("watch", move || {
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
    /// it records `monkeysee-frames` and `monkeysee-events` too: the returned senders
    /// are the display loop's ends.
    fn start_recorder(
        &mut self,
        opts: &RunOptions,
        mut rec: Recorder,
        inputs: &mut Inputs,
        outlet_source: &str,
    ) -> anyhow::Result<Option<outlet::RecordEnds>> {
        let headers =
            rec.add_mua(&inputs.mua_recorded)
                .and_then(|()| match &inputs.marker_stream {
                    Some(d) => rec.add_markers(d),
                    None => Ok(()),
                });
        if let Err(e) = headers {
            return Err(anyhow!(e).context(format!("recording to {}", rec.path().display())));
        }
        let mut ends = None;
        if let Some(side) = opts.outlet {
            let (frames_tx, frames_rx) = bounded::<RawMarker>(64);
            let (events_tx, events_rx) = bounded::<RawMarker>(1024);
            let headers = outlet::recorded_headers(side, outlet_source, &opts.rig.name)?;
            rec.add_output(crate::record::FRAMES_STREAM, headers.0, frames_rx)
                .and_then(|()| rec.add_output(crate::record::EVENTS_STREAM, headers.1, events_rx))
                .map_err(|e| {
                    anyhow!(e).context(format!("recording to {}", rec.path().display()))
                })?;
            ends = Some(outlet::RecordEnds {
                frames: frames_tx,
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
        self.recorder = Some(spawn_named("record", move || {
            rec.run(&mut samples, markers.as_ref(), &stop, &counters)
        })?);
        Ok(ends)
    }

    /// Step 4: the window thread, last, so that it finds every stream live; ingest is
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
        let t = self.spawn("window", move || stage.run(&stop))?;
        let _ = wake_ingest.send(t);
        Ok(())
    }

    /// Stops and joins every thread; the recording's summary, if recording.
    fn stop(&mut self) -> Option<RecordingSummary> {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
        self.record_stop.store(true, Ordering::Release);
        self.recorder.take().and_then(|h| h.join().ok())
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

fn spawn_named<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
    name: &str,
    f: F,
) -> anyhow::Result<JoinHandle<T>> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .with_context(|| format!("spawning the {name} thread"))
}

/// Waits until the MUA stream and (unless optional and absent) the marker stream are
/// live. Returns the MUA stream, the marker stream, and why there is none when it was
/// optional.
fn wait_for_streams(
    ready: &Receiver<anyhow::Result<Live>>,
    timeout_s: f64,
    markers_needed: bool,
) -> anyhow::Result<(MuaLive, Option<StreamDescription>, Option<anyhow::Error>)> {
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
            Ok(Err(e)) => {
                let is_marker = format!("{e:#}").contains("marker stream");
                if is_marker && !markers_needed {
                    marker_error = Some(e);
                } else {
                    return Err(e);
                }
            }
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
        .and_then(crate::replay::stimuli_directory)
        .filter(|d| d.is_dir())?;
    if opts.status {
        eprintln!(
            "monkeysee: stimulus images from the marker stream's header: {}",
            dir.display()
        );
    }
    Some(dir)
}
