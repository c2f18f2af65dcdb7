//! The window and decode stages, and the hand-over to the display.
//!
//! ```text
//! ingest ─ringbuf─► [WindowStage] ─bounded(FRAME_POOL)─► [DecodeStage] ─triple buffer─► display
//!                         ▲                                   │
//!                         └──────── free frames ──────────────┘
//! ```
//! Real-time contract: [`WindowStage::new`], [`DecodeStage::new`] and
//! [`DecodeStage::warm_up`] allocate; [`WindowStage::step`] and, on the CPU backend,
//! [`DecodeStage::step`] never allocate, lock or print (tests/it/hot_loop.rs runs both
//! under a counting allocator). Frame buffers circulate through a fixed pool of
//! [`FRAME_POOL`], so a frame that cannot be handed on is counted
//! (`frames_dropped_window`), never queued without bound. The decoder computes on a Rayon
//! pool of its own (`--decode-threads`), its buffers in a [`Workspace`] sized by the
//! warm-up, and writes each image straight into the decode→display triple buffer. It
//! counts every frame it does not decode (`frames_dropped_decode`, `decode_errors`) and
//! every one that misses the budget (`deadline_misses`). The first few decode errors'
//! texts are kept for the run's summary ([`crate::telemetry::FirstErrors`]): made only
//! when a decode fails, so the step that decodes allocates nothing. (The CUDA backend
//! allocates device tensors per frame: Burn's, not ours to pool.)

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam_channel::{Receiver, Sender};

pub use super::save_inputs::{InputSaver, SaveEnds};
use super::ModelSource;
use crate::config::RigConfig;
use crate::config::{decoder_config, window_set};
use crate::decoder::{Decoder, DecoderConfig, Workspace};
use crate::ingest::{MarkerEvent, SampleConsumer};
use crate::norm::NormStats;
use crate::telemetry::{micros_between, Counters, FrameTimings};
use crate::window::{FeatureFrame, FrameStatus, ImageId, WindowAssembler};

/// Size of the frame pool (and the window→decode queue).
pub const FRAME_POOL: usize = 8;

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
        // A span only for a step with samples (the loop also wakes to find none).
        let _span = (!self.samples.is_empty()).then(|| tracing::trace_span!("window").entered());
        while let Some(meta) = self.samples.pop(&mut self.scratch) {
            self.assembler
                .push_sample(&self.scratch, meta, &self.counters);
            n += 1;
            self.emit_ready();
        }
        n
    }

    /// The window thread: steps until `stop`, parking briefly when the ring is empty
    /// (ingest unparks it after each chunk).
    pub fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            if self.step() == 0 {
                thread::park_timeout(Duration::from_millis(2));
            }
        }
    }

    fn emit_ready(&mut self) {
        loop {
            match self.assembler.next_frame(&mut self.current, &self.counters) {
                FrameStatus::Pending => return,
                FrameStatus::Skipped(_) => continue,
                FrameStatus::Ready => match self.frames_free.try_recv() {
                    Ok(mut spare) => {
                        tracing::trace!(name: "frame", seq = self.current.seq);
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

/// A reconstruction on its way to the display. The three of the decode→display triple
/// buffer are made at start-up; the decode thread writes each frame into one in place.
#[derive(Clone)]
pub struct DecodedFrame {
    pub seq: u64,
    /// The onset (real, or a sliding frame's virtual one), LSL seconds.
    pub onset_lsl: f64,
    pub image: Option<ImageId>,
    /// `[3][H][W]` in [0, 1].
    pub rgb: Vec<f32>,
    pub last_arrival: Instant,
    pub timings: FrameTimings,
    pub decoded_at: Instant,
}

impl DecodedFrame {
    /// An empty frame for images of `size` px.
    pub fn new(size: usize) -> Self {
        let now = Instant::now();
        DecodedFrame {
            seq: 0,
            onset_lsl: 0.0,
            image: None,
            rgb: vec![0.0; 3 * size * size],
            last_arrival: now,
            timings: FrameTimings::default(),
            decoded_at: now,
        }
    }
}

/// The decode→display hand-over, newest wins: a triple buffer (the `triple_buffer`
/// crate), so the decode thread writes a frame in place and publishes it with one atomic
/// swap (no allocation, no lock, no wait), and the display always takes the newest.
pub fn latest_frame(size: usize, display: Thread) -> (FrameSender, FrameReceiver) {
    let (input, output) = triple_buffer::triple_buffer(&DecodedFrame::new(size));
    (FrameSender { input, display }, FrameReceiver { output })
}

/// The decode thread's end of [`latest_frame`].
pub struct FrameSender {
    input: triple_buffer::Input<DecodedFrame>,
    display: Thread,
}

impl FrameSender {
    /// The frame to write next (its contents are an older frame's).
    pub fn slot(&mut self) -> &mut DecodedFrame {
        self.input.input_buffer_mut()
    }

    /// Hands the written frame to the display and wakes it; true when it replaced a frame
    /// the display had not taken (superseded).
    pub fn publish(&mut self) -> bool {
        let superseded = self.input.publish();
        self.display.unpark();
        superseded
    }
}

/// The display's end of [`latest_frame`].
pub struct FrameReceiver {
    output: triple_buffer::Output<DecodedFrame>,
}

impl FrameReceiver {
    /// The newest frame not taken yet, waiting up to `timeout` for one (parked; the
    /// decode thread unparks this thread when it publishes).
    pub fn take_timeout(&mut self, timeout: Duration) -> Option<&DecodedFrame> {
        if !self.output.update() {
            thread::park_timeout(timeout);
            if !self.output.update() {
                return None;
            }
        }
        Some(self.output.output_buffer())
    }
}

/// What the decode thread reports once its decoder is built and warm.
pub struct DecoderReady {
    pub config: DecoderConfig,
    /// The model's normalisation statistics (none for random weights).
    pub stats: Option<NormStats>,
    /// The thread that decodes (the window stage wakes it after each frame).
    pub thread: Thread,
    /// What the run goes on with but should be told.
    pub warnings: Vec<ModelWarning>,
}

/// Something about a loaded model that the run goes on with but the user should hear.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelWarning {
    /// The folder has the decoder but not the statistics it was trained with.
    #[error(
        "{} has no normalization.json, the statistics the model was trained with: the inputs are z-scored with this session's statistics alone, raw (mean 0, SD 1) until two stimuli were shown, so the decoder sees inputs unlike the ones it learnt from. `monkeysee train` writes normalization.json beside decoder.json and weights.mpk: copy it from the training output into this folder, or retrain",
        dir.display()
    )]
    NoNormalization { dir: PathBuf },
}

/// Everything the decode thread needs; [`crate::decoder::dispatch`] picks the backend
/// and calls [`DecodeJob::run`](crate::decoder::OnBackend::run) with it.
pub struct DecodeJob {
    pub model: ModelSource,
    pub rig: RigConfig,
    /// Threads of the decoder's own compute pool.
    pub threads: usize,
    /// Where the built decoder's description, or the error building it, goes.
    pub ready: Sender<anyhow::Result<DecoderReady>>,
    pub frames: Receiver<FeatureFrame>,
    pub free: Sender<FeatureFrame>,
    pub out: FrameSender,
    pub counters: Arc<Counters>,
    pub stop: Arc<AtomicBool>,
    pub save_inputs: Option<SaveEnds>,
    /// Real-time scheduling for the pool's threads, if asked for.
    pub realtime: Option<Arc<crate::realtime::Realtime>>,
    /// The run's trace dispatcher (`--trace`).
    pub trace: Option<tracing::Dispatch>,
}

impl crate::decoder::OnBackend for DecodeJob {
    type Output = ();
    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) {
        let pool = match decode_pool(self.threads, self.realtime.clone()) {
            Ok(p) => p,
            Err(e) => {
                let _ = self.ready.send(Err(e));
                return;
            }
        };
        // The whole loop runs on the pool's first thread, so every product it splits
        // stays inside the pool (no hand-over from an outside thread, which would lock).
        let trace = self.trace.clone();
        pool.install(move || {
            crate::trace::in_thread(trace.as_ref(), move || self.serve::<B>(device))
        });
    }
}

impl DecodeJob {
    /// On the pool's first thread: builds and warms the decoder, reports it, then decodes
    /// until stopped.
    fn serve<B: burn::tensor::backend::Backend>(self, device: B::Device) {
        let (decoder, stats, warnings) = match build_decoder::<B>(&self.model, &self.rig, &device) {
            Ok(built) => built,
            Err(e) => {
                let _ = self.ready.send(Err(e));
                return;
            }
        };
        let budget = Duration::from_secs_f64(self.rig.latency_budget.seconds());
        let mut stage = DecodeStage::new(
            decoder,
            self.frames,
            self.free,
            self.out,
            self.counters,
            budget,
        );
        stage.save_inputs = self.save_inputs;
        stage.warm_up();
        let _ = self.ready.send(Ok(DecoderReady {
            config: stage.decoder.config().clone(),
            stats,
            thread: thread::current(),
            warnings,
        }));
        stage.run(&self.stop);
    }
}

/// The decoder's own Rayon pool, `threads` wide (`decode-0`, `decode-1`, …), each thread
/// made real-time when asked.
pub fn decode_pool(
    threads: usize,
    realtime: Option<Arc<crate::realtime::Realtime>>,
) -> anyhow::Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("decode-{i}"))
        .start_handler(move |_| {
            if let Some(rt) = &realtime {
                rt.enter(crate::realtime::Role::Decode);
            }
        })
        .build()
        .context("starting the decoder's thread pool")
}

/// Builds (random weights) or loads the decoder and checks it fits the rig; the model's
/// normalisation statistics beside it, and a warning when a model folder has none.
fn build_decoder<B: burn::tensor::backend::Backend>(
    model: &ModelSource,
    rig: &RigConfig,
    device: &B::Device,
) -> anyhow::Result<(Decoder<B>, Option<NormStats>, Vec<ModelWarning>)> {
    Ok(match model {
        ModelSource::Random { kind, width, seed } => {
            let cfg = decoder_config(rig, *kind, *width);
            (Decoder::<B>::random(cfg, *seed, device)?, None, Vec::new())
        }
        ModelSource::Dir(dir) => {
            let dec = Decoder::<B>::load(dir, device)
                .with_context(|| format!("loading the model in {}", dir.display()))?;
            let c = dec.config();
            let rig_side = decoder_config(rig, c.kind, c.width);
            dec.check_matches(&rig_side).with_context(|| {
                format!(
                    "model {} does not fit rig {}",
                    dir.display(),
                    rig.path.display()
                )
            })?;
            let windows = rig.windows.windows_per_electrode(window_set(c.kind));
            let stats = NormStats::load(dir, windows, rig.electrodes.len())?;
            let warnings = match stats {
                Some(_) => Vec::new(),
                None => vec![ModelWarning::NoNormalization { dir: dir.clone() }],
            };
            (dec, stats, warnings)
        }
    })
}

/// The decode thread's loop body, separated so a test can run it under a counting
/// allocator. [`DecodeStage::new`] and [`DecodeStage::warm_up`] allocate;
/// [`DecodeStage::step`] then never allocates, locks or prints on the CPU backend
/// (`tests/it/hot_loop.rs`): the input image and every buffer of the forward pass live in
/// the decoder's [`Workspace`], the reconstruction is written into the decode→display
/// triple buffer in place, and the feature frame goes back to the window stage's pool.
pub struct DecodeStage<B: burn::tensor::backend::Backend> {
    decoder: Decoder<B>,
    workspace: Workspace,
    frames: Receiver<FeatureFrame>,
    free: Sender<FeatureFrame>,
    out: FrameSender,
    counters: Arc<Counters>,
    budget: Duration,
    /// `--save-inputs`: the saver thread's queues.
    pub save_inputs: Option<SaveEnds>,
}

impl<B: burn::tensor::backend::Backend> DecodeStage<B> {
    pub fn new(
        decoder: Decoder<B>,
        frames: Receiver<FeatureFrame>,
        free: Sender<FeatureFrame>,
        out: FrameSender,
        counters: Arc<Counters>,
        budget: Duration,
    ) -> Self {
        DecodeStage {
            workspace: decoder.workspace(),
            decoder,
            frames,
            free,
            out,
            counters,
            budget,
            save_inputs: None,
        }
    }

    /// Runs the decoder on a zero frame until every buffer exists and every thread of the
    /// current pool has run a product, so that the first real frame pays for none of it.
    pub fn warm_up(&mut self) {
        let c = self.decoder.config();
        let features = vec![0.0f32; c.n_features()];
        let mut rgb = vec![0.0f32; c.image_len()];
        if let Some(s) = &self.save_inputs {
            s.reserve(c.n_features(), c.image_len());
        }
        rayon::broadcast(|_| crate::decoder::kernels::warm_up_products());
        for _ in 0..3 {
            let _ =
                self.decoder
                    .reconstruct_batch_with(&mut self.workspace, &features, 1, &mut rgb);
        }
    }

    /// Decodes the newest waiting frame, handing older waiting ones back undecoded
    /// (counted); false when none was waiting.
    pub fn step(&mut self) -> bool {
        let Ok(mut frame) = self.frames.try_recv() else {
            return false;
        };
        while let Ok(newer) = self.frames.try_recv() {
            Counters::inc(&self.counters.frames_dropped_decode);
            let _ = self.free.send(std::mem::replace(&mut frame, newer));
        }
        self.decode(frame);
        true
    }

    /// Steps until `stop`, parked while nothing waits. Poll and park rather than block in
    /// the channel: a blocked receiver would make the window thread's `try_send` take the
    /// channel's internal lock to wake it. The window thread unparks this one.
    pub fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            if !self.step() {
                thread::park_timeout(Duration::from_millis(20));
            }
        }
    }

    /// Decodes one frame into the display's next slot, returns the feature buffer to the
    /// pool and publishes the image.
    fn decode(&mut self, frame: FeatureFrame) {
        let span = tracing::trace_span!("decode", seq = frame.seq).entered();
        let counters = &self.counters;
        let start = Instant::now();
        let out = self.out.slot();
        let result = self.decoder.reconstruct_batch_with(
            &mut self.workspace,
            &frame.features,
            1,
            &mut out.rgb,
        );
        let done = Instant::now();
        out.seq = frame.seq;
        out.onset_lsl = frame.onset_lsl;
        out.image = frame.image;
        out.last_arrival = frame.last_arrival;
        out.decoded_at = done;
        // In `Stage` order; present and end-to-end are filled in when the frame is shown.
        out.timings = [
            (frame.transport_delay.max(0.0) * 1e6) as u64,
            micros_between(frame.last_arrival, frame.ready_at),
            micros_between(frame.ready_at, start),
            micros_between(start, done),
            0,
            0,
        ];
        if result.is_ok() {
            if let Some(s) = &self.save_inputs {
                s.offer(&frame, &out.rgb, counters);
            }
        }
        let seq = frame.seq;
        let _ = self.free.send(frame);
        if let Err(e) = result {
            Counters::inc(&counters.decode_errors);
            counters
                .decode_error_texts
                .record(|| format!("frame {seq}: {e}"));
            return;
        }
        Counters::inc(&counters.frames_decoded);
        if done.duration_since(out.last_arrival) > self.budget {
            Counters::inc(&counters.deadline_misses);
        }
        // The span ends before the hand-off: from `publish` on the present thread may
        // already be showing the frame, and a trace must not show the two overlapping.
        drop(span);
        if self.out.publish() {
            Counters::inc(&counters.frames_superseded);
        }
    }
}
