//! The `run` daemon: threads, queues and shutdown.
//!
//! ```text
//! LSL MUA ─► [ingest] ─ringbuf─► [window] ─bounded─► [decode] ─latest-wins─► [display: main thread]
//! LSL markers ─► [markers] ─bounded─┘
//!     (--record: ingest ─ringbuf─► [record] ◄─bounded─ markers; see crate::record)
//! ```
//! Frame buffers circulate between the window and decode threads through a fixed
//! pool, so the window stage never allocates. Every drop, overrun, gap and deadline
//! miss is counted in [`Counters`]; per-frame timestamps travel with the frame and
//! land in the presenting thread's histograms.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use crate::config::RigConfig;
use crate::decoder::{decoder_config, window_set, Decoder, DecoderConfig, DecoderKind};
use crate::display::{
    rgb_planes_to_image, side_by_side, HeadlessPresenter, Presenter, Shown, StimulusStore,
    WindowPresenter,
};
use crate::ingest::{
    self, MarkerEvent, MuaInlet, RawMarker, SampleConsumer, SampleRing, StreamDescription,
};
use crate::record::{Recorder, RecordingSummary};
use crate::telemetry::{
    micros_between, Counters, FrameTimings, LatencyRecorder, Stage, StageSummary,
};
use crate::window::{
    AssemblerConfig, FeatureFrame, FrameStatus, ImageId, Mode, NormStats, WindowAssembler,
};

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

pub use crate::decoder::ComputeDevice;

/// Where frames go.
#[derive(Debug, Clone)]
pub enum Output {
    /// A window; falls back to headless in `fallback` when no display is available.
    Window {
        fallback: PathBuf,
    },
    Headless(PathBuf),
}

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub rig: RigConfig,
    pub model: ModelSource,
    pub mode: Mode,
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
    /// Print the periodic status line.
    pub status: bool,
    /// Set from outside (Ctrl-C) to stop.
    pub stop: Arc<AtomicBool>,
}

/// What a run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub frames_shown: u64,
    pub counters: Vec<(&'static str, u64)>,
    pub stages: Vec<(&'static str, StageSummary)>,
    pub images: Vec<String>,
    pub mua_stream: String,
    pub marker_stream: Option<String>,
    pub elapsed_s: f64,
    pub table: String,
    /// The `--record` file, if recording.
    pub recording: Option<RecordingSummary>,
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

/// A reconstruction on its way to the display.
pub struct DecodedFrame {
    pub seq: u64,
    pub image: Option<ImageId>,
    pub rgb: Vec<f32>,
    pub last_arrival: Instant,
    pub timings: FrameTimings,
    pub decoded_at: Instant,
}

/// The decode→display hand-over: holds only the newest frame.
pub struct LatestSlot {
    frame: Mutex<Option<DecodedFrame>>,
    ready: Condvar,
}

impl LatestSlot {
    pub fn new() -> Self {
        LatestSlot {
            frame: Mutex::new(None),
            ready: Condvar::new(),
        }
    }

    /// Replaces whatever is waiting; returns true if a frame was superseded.
    pub fn put(&self, f: DecodedFrame) -> bool {
        let old = self.frame.lock().replace(f);
        self.ready.notify_one();
        old.is_some()
    }

    pub fn take_timeout(&self, timeout: Duration) -> Option<DecodedFrame> {
        let mut g = self.frame.lock();
        if g.is_none() {
            self.ready.wait_for(&mut g, timeout);
        }
        g.take()
    }
}

impl Default for LatestSlot {
    fn default() -> Self {
        Self::new()
    }
}

/// The window thread's loop body, separated so a test can run it under a counting
/// allocator. Allocates in [`WindowStage::new`]; [`WindowStage::step`] never
/// allocates, locks or prints.
pub struct WindowStage {
    pub assembler: WindowAssembler,
    samples: SampleConsumer,
    markers: Option<Receiver<MarkerEvent>>,
    frames_out: Sender<FeatureFrame>,
    frames_free: Receiver<FeatureFrame>,
    current: FeatureFrame,
    scratch: Vec<f32>,
    counters: Arc<Counters>,
    decode_thread: Option<Thread>,
}

impl WindowStage {
    pub fn new(
        assembler: WindowAssembler,
        samples: SampleConsumer,
        markers: Option<Receiver<MarkerEvent>>,
        frames_out: Sender<FeatureFrame>,
        frames_free: Receiver<FeatureFrame>,
        counters: Arc<Counters>,
    ) -> Self {
        let current = assembler.new_frame();
        let scratch = vec![0.0; assembler.config().channel_count];
        WindowStage {
            assembler,
            samples,
            markers,
            frames_out,
            frames_free,
            current,
            scratch,
            counters,
            decode_thread: None,
        }
    }

    /// Wake this thread when a frame is sent (the decode thread parks otherwise).
    pub fn wake_on_frame(&mut self, t: Thread) {
        self.decode_thread = Some(t);
    }

    /// Drains markers and samples, emitting every frame that completes. Returns the
    /// number of samples consumed.
    pub fn step(&mut self) -> usize {
        if let Some(rx) = &self.markers {
            while let Ok(ev) = rx.try_recv() {
                if let MarkerEvent::Onset(o) = ev {
                    self.assembler.push_onset(o, &self.counters);
                }
            }
        }
        let mut n = 0;
        while let Some(meta) = self.samples.pop(&mut self.scratch) {
            self.assembler
                .push_sample(&self.scratch, meta, &self.counters);
            n += 1;
            self.emit_ready();
        }
        n
    }

    fn emit_ready(&mut self) {
        loop {
            match self.assembler.next_frame(&mut self.current, &self.counters) {
                FrameStatus::Pending => return,
                FrameStatus::Skipped(_) => continue,
                FrameStatus::Ready => match self.frames_free.try_recv() {
                    Ok(mut spare) => {
                        std::mem::swap(&mut spare, &mut self.current);
                        if let Err(e) = self.frames_out.try_send(spare) {
                            // Cannot happen while the pool is no larger than the queue;
                            // counted all the same.
                            Counters::inc(&self.counters.frames_dropped_window);
                            drop(e);
                        } else if let Some(t) = &self.decode_thread {
                            t.unpark();
                        }
                    }
                    Err(_) => Counters::inc(&self.counters.frames_dropped_window),
                },
            }
        }
    }
}

/// Size of the frame pool (and the window→decode queue).
pub const FRAME_POOL: usize = 8;

enum Ready {
    Decoder {
        config: DecoderConfig,
        stats: Option<NormStats>,
    },
    Mua(StreamDescription),
    Markers(StreamDescription),
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

/// The decode thread: builds the decoder on backend `B`, reports it (or the error) on
/// `ready`, then decodes until `stop`.
struct DecodeJob {
    model: ModelSource,
    rig: RigConfig,
    ready: Sender<anyhow::Result<Ready>>,
    frames: Receiver<FeatureFrame>,
    free: Sender<FeatureFrame>,
    slot: Arc<LatestSlot>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    save_inputs: Option<PathBuf>,
}

impl crate::decoder::OnBackend for DecodeJob {
    type Output = ();
    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) {
        decode_thread::<B>(self, device)
    }
}

fn decode_thread<B: burn::tensor::backend::Backend>(job: DecodeJob, device: B::Device) {
    let DecodeJob {
        model,
        rig,
        ready,
        frames,
        free,
        slot,
        counters,
        stop,
        save_inputs,
    } = job;
    let built: anyhow::Result<(Decoder<B>, Option<NormStats>)> = (|| match &model {
        ModelSource::Random { kind, width, seed } => {
            let cfg = decoder_config(&rig, *kind, *width);
            Ok((Decoder::<B>::random(cfg, *seed, &device)?, None))
        }
        ModelSource::Dir(dir) => {
            let dec = Decoder::<B>::load(dir, &device)
                .with_context(|| format!("loading the model in {}", dir.display()))?;
            let c = dec.config();
            let rig_side = decoder_config(&rig, c.kind, c.width);
            dec.check_matches(&rig_side).with_context(|| {
                format!(
                    "model {} does not fit rig {}",
                    dir.display(),
                    rig.path.display()
                )
            })?;
            let windows = rig.windows.windows_per_electrode(window_set(c.kind));
            let stats = NormStats::load(dir, windows, rig.electrodes.len())?;
            Ok((dec, stats))
        }
    })();
    let built = built.and_then(|(d, stats)| {
        let saver = save_inputs
            .as_deref()
            .map(|dir| InputSaver::create(dir, d.config().n_features(), d.config().image_size))
            .transpose()?;
        Ok((d, stats, saver))
    });
    let (decoder, mut saver) = match built {
        Ok((d, stats, saver)) => {
            let _ = ready.send(Ok(Ready::Decoder {
                config: d.config().clone(),
                stats,
            }));
            (d, saver)
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let size = decoder.config().image_size;
    let budget = Duration::from_secs_f64(rig.latency_budget.seconds());
    while !stop.load(Ordering::Relaxed) {
        // Poll and park rather than block in the channel: a blocked receiver would make
        // the window thread's try_send take the channel's internal lock to wake it. The
        // window thread unparks this one after each frame.
        let mut frame = match frames.try_recv() {
            Ok(f) => f,
            Err(_) => {
                thread::park_timeout(Duration::from_millis(20));
                continue;
            }
        };
        // Newest wins: hand older frames straight back.
        while let Ok(newer) = frames.try_recv() {
            Counters::inc(&counters.frames_dropped_decode);
            let _ = free.send(std::mem::replace(&mut frame, newer));
        }
        let start = Instant::now();
        let mut rgb = vec![0.0f32; 3 * size * size];
        let result = decoder.reconstruct(&frame.features, &mut rgb);
        let done = Instant::now();
        if let (Some(s), Ok(())) = (saver.as_mut(), &result) {
            if let Err(e) = s.push(&frame, &rgb) {
                eprintln!("saving the decoder inputs stopped: {e:#}");
                saver = None;
            }
        }
        let timings = FrameTimings {
            lsl_to_arrival_us: (frame.transport_delay.max(0.0) * 1e6) as u64,
            arrival_to_window_us: micros_between(frame.last_arrival, frame.ready_at),
            queue_us: micros_between(frame.ready_at, start),
            decode_us: micros_between(start, done),
            ..Default::default()
        };
        let out = DecodedFrame {
            seq: frame.seq,
            image: frame.image,
            rgb,
            last_arrival: frame.last_arrival,
            timings,
            decoded_at: done,
        };
        let _ = free.send(frame);
        match result {
            Ok(()) => {
                Counters::inc(&counters.frames_decoded);
                if done.duration_since(out.last_arrival) > budget {
                    Counters::inc(&counters.deadline_misses);
                }
                if slot.put(out) {
                    Counters::inc(&counters.frames_superseded);
                }
            }
            Err(_) => Counters::inc(&counters.decode_errors),
        }
    }
    if let Some(s) = saver {
        if let Err(e) = s.finish() {
            eprintln!("saving the decoder inputs failed: {e:#}");
        }
    }
}

/// `run --save-inputs DIR`: every decoded frame's inputs and reconstruction, for
/// offline analysis (`inputs.npy` float32 `[frames, features]`, `reconstructions.npy`
/// float32 `[frames, 3, H, W]`, `frames.csv`: seq, onset LSL time, image id).
struct InputSaver {
    inputs: crate::dataset::writer::NpyRows,
    recons: crate::dataset::writer::NpyRows,
    csv: std::io::BufWriter<std::fs::File>,
}

impl InputSaver {
    fn create(dir: &Path, features: usize, size: usize) -> anyhow::Result<InputSaver> {
        use crate::dataset::writer::NpyRows;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let csv = dir.join("frames.csv");
        let mut csv = std::io::BufWriter::new(
            std::fs::File::create(&csv).with_context(|| format!("creating {}", csv.display()))?,
        );
        writeln!(csv, "seq,onset_lsl,image")?;
        Ok(InputSaver {
            inputs: NpyRows::create(&dir.join("inputs.npy"), &[features])?,
            recons: NpyRows::create(&dir.join("reconstructions.npy"), &[3, size, size])?,
            csv,
        })
    }

    fn push(&mut self, frame: &FeatureFrame, rgb: &[f32]) -> anyhow::Result<()> {
        self.inputs.push(&frame.features)?;
        self.recons.push(rgb)?;
        writeln!(
            self.csv,
            "{},{:.6},{}",
            frame.seq,
            frame.onset_lsl,
            frame.image.as_ref().map_or("", |i| i.as_str())
        )?;
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<()> {
        self.csv.flush()?;
        self.inputs.finish()?;
        self.recons.finish()
    }
}

/// Runs the daemon until `--frames`, `--seconds`, Ctrl-C or the window closes.
pub fn run(opts: RunOptions) -> anyhow::Result<RunSummary> {
    let rig = opts.rig.clone();
    let mut record_file = match &opts.record {
        Some(p) => Some(
            Recorder::create(p)
                .with_context(|| format!("starting the recording {}", p.display()))?,
        ),
        None => None,
    };
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let record_stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = bounded::<anyhow::Result<Ready>>(8);
    // Every thread started from here on is stopped and joined when `pipeline` drops:
    // an error return at any step leaves none behind.
    let mut pipeline = PipelineThreads {
        stop: stop.clone(),
        handles: Vec::new(),
        record_stop: record_stop.clone(),
        recorder: None,
    };

    // Decoder first: it decides the window set.
    crate::decoder::init_compute_threads(crate::decoder::compute_threads(
        opts.decode_threads,
        crate::decoder::PoolRole::Live,
    ));
    let slot = Arc::new(LatestSlot::new());
    // The frame pool is filled once the decoder reported its window set.
    let (work_tx, work_rx) = bounded::<FeatureFrame>(FRAME_POOL);
    let (free_tx, free_rx) = bounded::<FeatureFrame>(FRAME_POOL);
    {
        let (model, rig, ready, frames, free, slot, counters, stop) = (
            opts.model.clone(),
            rig.clone(),
            ready_tx.clone(),
            work_rx,
            free_tx.clone(),
            slot.clone(),
            counters.clone(),
            stop.clone(),
        );
        let save = opts.save_inputs.clone();
        let device = opts.device;
        let h = spawn_named("decode", move || {
            let job = DecodeJob {
                model,
                rig,
                ready: ready.clone(),
                frames,
                free,
                slot,
                counters,
                stop,
                save_inputs: save,
            };
            if let Err(e) = crate::decoder::dispatch(device, job) {
                let _ = ready.send(Err(e));
            }
        })?;
        pipeline.handles.push(h);
    }
    let decode_thread_handle = pipeline.handles[0].thread().clone();
    let (dec_config, stats) = match ready_rx.recv_timeout(Duration::from_secs(600)) {
        Ok(Ok(Ready::Decoder { config, stats })) => (config, stats),
        Ok(Err(e)) => return Err(e),
        _ => bail!("the decoder did not start"),
    };
    let set = window_set(dec_config.kind);
    let assembler = WindowAssembler::new(
        AssemblerConfig::from_rig(&rig, set, opts.mode),
        stats.as_ref(),
    );
    let template = assembler.new_frame();
    for _ in 0..FRAME_POOL {
        let _ = free_tx.send(template.clone());
    }

    // Ingest.
    let ring_samples = (rig.sampling_rate_hz * 2.0).ceil() as usize; // 2 s of slack
    let (mut producer, consumer) = SampleRing::new(rig.channel_count, ring_samples);
    // The recorder's ring: 5 s of slack for a slow disk.
    let (mut record_producer, mut record_consumer) = match record_file {
        Some(_) => {
            let samples = (rig.sampling_rate_hz * 5.0).ceil() as usize;
            let (p, c) = SampleRing::new(rig.channel_count, samples);
            (Some(p), Some(c))
        }
        None => (None, None),
    };
    let (wake_tx, wake_rx) = bounded::<Thread>(1);
    {
        let (rig, ready, counters, stop) = (
            rig.clone(),
            ready_tx.clone(),
            counters.clone(),
            stop.clone(),
        );
        let timeout = opts.resolve_timeout;
        pipeline.handles.push(spawn_named("ingest", move || {
            let max_chunk = ((rig.sampling_rate_hz * 0.1).ceil() as usize).max(16);
            let mut inlet = match MuaInlet::connect(
                &rig.mua,
                rig.channel_count,
                rig.sampling_rate_hz,
                timeout,
                max_chunk,
            ) {
                Ok(i) => i,
                Err(e) => {
                    let _ = ready.send(Err(anyhow!(e).context("connecting to the MUA stream")));
                    return;
                }
            };
            let _ = ready.send(Ok(Ready::Mua(inlet.description.clone())));
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
                record_producer.as_mut(),
                &stop,
                &counters,
                1.0,
                &wake,
            );
        })?);
    }

    // Markers.
    let markers_needed = opts.mode == Mode::Event;
    let (marker_tx, marker_rx) = bounded::<MarkerEvent>(256);
    let (record_marker_tx, mut record_marker_rx) = match record_file {
        Some(_) => {
            let (tx, rx) = bounded::<RawMarker>(4096);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    {
        let (rig, ready, counters, stop) = (
            rig.clone(),
            ready_tx.clone(),
            counters.clone(),
            stop.clone(),
        );
        let timeout = if markers_needed {
            opts.resolve_timeout
        } else {
            opts.resolve_timeout.min(2.0)
        };
        pipeline.handles.push(spawn_named("markers", move || {
            ingest::run_markers(
                &rig.markers,
                timeout,
                &stop,
                &counters,
                &marker_tx,
                record_marker_tx.as_ref(),
                |r| {
                    let _ =
                        ready
                            .send(r.map(Ready::Markers).map_err(|e| {
                                anyhow!(e).context("connecting to the marker stream")
                            }));
                },
            );
        })?);
    }

    // Wait for both streams.
    let mut mua_desc = None;
    let mut marker_desc = None;
    let mut marker_error = None;
    let deadline = Instant::now() + Duration::from_secs_f64(opts.resolve_timeout + 5.0);
    while mua_desc.is_none() || (marker_desc.is_none() && marker_error.is_none()) {
        let left = deadline.saturating_duration_since(Instant::now());
        match ready_rx.recv_timeout(left) {
            Ok(Ok(Ready::Mua(d))) => mua_desc = Some(d),
            Ok(Ok(Ready::Markers(d))) => marker_desc = Some(d),
            Ok(Ok(Ready::Decoder { .. })) => {}
            Ok(Err(e)) => {
                let is_marker = format!("{e:#}").contains("marker stream");
                if is_marker && !markers_needed {
                    marker_error = Some(e);
                } else {
                    return Err(e);
                }
            }
            Err(_) => {
                bail!(
                    "the streams did not come up within {:.0} s",
                    opts.resolve_timeout + 5.0
                );
            }
        }
    }
    let mua_desc = mua_desc.expect("loop ends with the MUA stream");
    if marker_error.is_some() {
        // Sliding mode without markers: the marker thread has ended by design.
        if let Some(i) = pipeline
            .handles
            .iter()
            .position(|h| h.thread().name() == Some("markers"))
        {
            let _ = pipeline.handles.swap_remove(i).join();
        }
    }
    if opts.status {
        eprintln!("monkeysee: MUA stream live: {mua_desc}");
        match (&marker_desc, &marker_error) {
            (Some(d), _) => eprintln!("monkeysee: marker stream live: {d}"),
            (None, Some(e)) => eprintln!(
                "monkeysee: no marker stream ({e:#}); sliding mode runs without stimulus ids"
            ),
            _ => {}
        }
        eprintln!(
            "monkeysee: decoding {} ({} windows/electrode, {} electrodes, width {}, {} px) in {:?} mode; budget {} ms",
            serde_json::to_string(&dec_config.kind).unwrap_or_default().trim_matches('"'),
            dec_config.windows_per_electrode,
            dec_config.electrodes.len(),
            dec_config.width,
            dec_config.image_size,
            opts.mode,
            rig.latency_budget.0
        );
    }

    // Stimulus images: --stimuli, else the folder the marker stream's header names
    // (a replayed session publishes its image folder there).
    let mut stimuli_dir = opts.stimuli_dir.clone();
    if stimuli_dir.is_none() {
        let from_header = marker_desc
            .as_ref()
            .and_then(|d| d.full_xml.as_deref())
            .and_then(crate::replay::stimuli_directory)
            .filter(|d| d.is_dir());
        if let Some(dir) = from_header {
            if opts.status {
                eprintln!(
                    "monkeysee: stimulus images from the marker stream's header: {}",
                    dir.display()
                );
            }
            stimuli_dir = Some(dir);
        }
    }

    // Recorder.
    if let (Some(mut rec), Some(mut samples)) = (record_file.take(), record_consumer.take()) {
        let headers = rec.add_mua(&mua_desc).and_then(|()| match &marker_desc {
            Some(d) => rec.add_markers(d),
            None => Ok(()),
        });
        if let Err(e) = headers {
            return Err(anyhow!(e).context(format!("recording to {}", rec.path().display())));
        }
        if opts.status {
            eprintln!("monkeysee: recording to {}", rec.path().display());
        }
        let markers = record_marker_rx.take().filter(|_| marker_desc.is_some());
        let (stop, counters) = (record_stop.clone(), counters.clone());
        pipeline.recorder = Some(spawn_named("record", move || {
            rec.run(&mut samples, markers.as_ref(), &stop, &counters)
        })?);
    }
    drop(record_marker_rx);

    // Window stage.
    {
        let counters = counters.clone();
        let stop = stop.clone();
        let mut stage = WindowStage::new(
            assembler,
            consumer,
            Some(marker_rx),
            work_tx,
            free_rx,
            counters,
        );
        stage.wake_on_frame(decode_thread_handle);
        let h = spawn_named("window", move || {
            while !stop.load(Ordering::Relaxed) {
                if stage.step() == 0 {
                    thread::park_timeout(Duration::from_millis(2));
                }
            }
        })?;
        let _ = wake_tx.send(h.thread().clone());
        pipeline.handles.push(h);
    }

    // Display on this thread.
    let started = Instant::now();
    let size = dec_config.image_size;
    let mut stimuli = StimulusStore::new(stimuli_dir.clone(), size);
    let mut presenter: Box<dyn Presenter> = match &opts.output {
        Output::Headless(dir) => Box::new(HeadlessPresenter::new(dir)?),
        Output::Window { fallback } => {
            match WindowPresenter::open(size, stimuli_dir.is_some(), rig.display.scale) {
                Ok(w) => Box::new(w),
                Err(e) => {
                    eprintln!(
                        "monkeysee: {e:#}; writing frames to {} instead",
                        fallback.display()
                    );
                    Box::new(HeadlessPresenter::new(fallback)?)
                }
            }
        }
    };
    let mut recorder = LatencyRecorder::new();
    if let Some(p) = &opts.hdr_log {
        recorder = recorder
            .with_log(p)
            .with_context(|| format!("creating the HdrHistogram log {}", p.display()))?;
    }
    let mut shown = 0u64;
    let mut images = Vec::new();
    let mut last_status = Instant::now();
    let status_every = Duration::from_secs_f64(rig.display.status_every.seconds());
    let mut result: anyhow::Result<()> = Ok(());
    loop {
        if opts.stop.load(Ordering::Relaxed) {
            break;
        }
        if opts.frames.is_some_and(|n| shown >= n)
            || opts
                .seconds
                .is_some_and(|s| started.elapsed().as_secs_f64() >= s)
        {
            break;
        }
        if pipeline.handles.iter().any(|h| h.is_finished()) {
            result = Err(anyhow!("a pipeline thread stopped unexpectedly"));
            break;
        }
        match slot.take_timeout(Duration::from_millis(15)) {
            Some(f) => {
                let recon = rgb_planes_to_image(&f.rgb, size);
                let id = f.image.as_ref().map(|i| i.as_str().to_string());
                let stim = id.as_deref().and_then(|i| stimuli.get(i)).cloned();
                let picture = side_by_side(&recon, stim.as_ref());
                let latency_ms = micros_between(f.last_arrival, Instant::now()) as f64 / 1000.0;
                match presenter.present(&Shown {
                    seq: f.seq,
                    image_id: id.as_deref(),
                    picture: &picture,
                    latency_ms,
                }) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
                let now = Instant::now();
                let mut t = f.timings;
                t.present_us = micros_between(f.decoded_at, now);
                t.end_to_end_us = micros_between(f.last_arrival, now);
                recorder.record(&t);
                shown += 1;
                Counters::inc(&counters.frames_shown);
                if let Some(id) = id {
                    images.push(id);
                }
            }
            None => {
                if !presenter.idle() {
                    break;
                }
            }
        }
        if last_status.elapsed() >= status_every {
            last_status = Instant::now();
            if let Err(e) = recorder.roll_interval() {
                eprintln!("monkeysee: cannot write the HdrHistogram log: {e}");
            }
            if opts.status {
                eprintln!("{}", status_line(started.elapsed(), &counters, &recorder));
            }
        }
    }
    let recording = pipeline.stop();
    if let Some(r) = &recording {
        if let Some(e) = &r.error {
            eprintln!(
                "monkeysee: the recording {} stopped early: {e}",
                r.path.display()
            );
        }
    }
    let _ = recorder.roll_interval();
    presenter.finish()?;
    result?;
    let table = recorder.table();
    Ok(RunSummary {
        frames_shown: shown,
        counters: counters.snapshot(),
        stages: Stage::ALL
            .iter()
            .map(|s| (s.name(), recorder.summary(*s)))
            .collect(),
        images,
        mua_stream: mua_desc.to_string(),
        marker_stream: marker_desc.map(|d| d.to_string()),
        elapsed_s: started.elapsed().as_secs_f64(),
        table,
        recording,
    })
}

/// The pipeline's threads. Dropping it (every return from [`run`], early or not) tells
/// them to stop and joins them, the recorder last so that its final drain gets
/// everything the producers sent.
struct PipelineThreads {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
    record_stop: Arc<AtomicBool>,
    recorder: Option<JoinHandle<RecordingSummary>>,
}

impl PipelineThreads {
    /// Stops and joins every thread; the recording's summary, if recording.
    fn stop(&mut self) -> Option<RecordingSummary> {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
        self.record_stop.store(true, Ordering::Release);
        self.recorder.take().and_then(|h| h.join().ok())
    }
}

impl Drop for PipelineThreads {
    fn drop(&mut self) {
        self.stop();
    }
}

fn status_line(elapsed: Duration, c: &Counters, rec: &LatencyRecorder) -> String {
    let g = Counters::get;
    let e2e = rec.summary(Stage::EndToEnd);
    format!(
        "[{:>6.1} s] shown {} | e2e p50 {:.1} ms p99 {:.1} ms | decode p50 {:.1} ms | misses {} drops {} overruns {} bad {} gaps {} skipped {}",
        elapsed.as_secs_f64(),
        g(&c.frames_shown),
        e2e.p50_ms,
        e2e.p99_ms,
        rec.summary(Stage::Decode).p50_ms,
        g(&c.deadline_misses),
        g(&c.frames_dropped_decode) + g(&c.frames_dropped_window),
        g(&c.overruns),
        g(&c.bad_samples),
        g(&c.gaps),
        g(&c.frames_skipped_gap) + g(&c.frames_skipped_bad) + g(&c.frames_skipped_late),
    )
}
