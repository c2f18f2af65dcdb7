//! The window and decode stages, and the hand-over to the display.
//!
//! ```text
//! ingest ─ringbuf─► [WindowStage] ─bounded(FRAME_POOL)─► [DecodeStage] ─LatestSlot─► display
//!                         ▲                                   │
//!                         └──────── free frames ──────────────┘
//! ```
//! Real-time contract: [`WindowStage::new`] and [`DecodeStage::build`] allocate;
//! [`WindowStage::step`] never allocates, locks or prints (tests/it/hot_loop.rs runs it
//! under a counting allocator). Frame buffers circulate through a fixed pool of
//! [`FRAME_POOL`], so a frame that cannot be handed on is counted
//! (`frames_dropped_window`), never queued without bound. The decode stage allocates
//! only the reconstruction it hands to the display and what Burn's matrix product
//! needs, and counts every frame it does not decode (`frames_dropped_decode`,
//! `decode_errors`) and every one that misses the budget (`deadline_misses`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use super::save_inputs::InputSaver;
use super::ModelSource;
use crate::config::RigConfig;
use crate::decoder::{decoder_config, window_set, Decoder, DecoderConfig};
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

/// A reconstruction on its way to the display.
pub struct DecodedFrame {
    pub seq: u64,
    /// The onset (real, or a sliding frame's virtual one), LSL seconds.
    pub onset_lsl: f64,
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

/// What the decode thread reports once its decoder is built.
pub struct DecoderReady {
    pub config: DecoderConfig,
    /// The model's normalisation statistics (none for random weights).
    pub stats: Option<NormStats>,
}

/// Everything the decode thread needs; [`crate::decoder::dispatch`] picks the backend
/// and calls [`DecodeJob::run`](crate::decoder::OnBackend::run) with it.
pub struct DecodeJob {
    pub model: ModelSource,
    pub rig: RigConfig,
    /// Where the built decoder's description, or the error building it, goes.
    pub ready: Sender<anyhow::Result<DecoderReady>>,
    pub frames: Receiver<FeatureFrame>,
    pub free: Sender<FeatureFrame>,
    pub slot: Arc<LatestSlot>,
    pub counters: Arc<Counters>,
    pub stop: Arc<AtomicBool>,
    pub save_inputs: Option<PathBuf>,
}

impl crate::decoder::OnBackend for DecodeJob {
    type Output = ();
    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) {
        match DecodeStage::<B>::build(&self, &device) {
            Ok((stage, ready)) => {
                let _ = self.ready.send(Ok(ready));
                stage.run(&self);
            }
            Err(e) => {
                let _ = self.ready.send(Err(e));
            }
        }
    }
}

/// The decoder with its per-run state.
struct DecodeStage<B: burn::tensor::backend::Backend> {
    decoder: Decoder<B>,
    saver: Option<InputSaver>,
    budget: Duration,
}

impl<B: burn::tensor::backend::Backend> DecodeStage<B> {
    /// Builds (random weights) or loads the decoder, checks it fits the rig, and opens
    /// the `--save-inputs` files.
    fn build(job: &DecodeJob, device: &B::Device) -> anyhow::Result<(Self, DecoderReady)> {
        let rig = &job.rig;
        let (decoder, stats) = match &job.model {
            ModelSource::Random { kind, width, seed } => {
                let cfg = decoder_config(rig, *kind, *width);
                (Decoder::<B>::random(cfg, *seed, device)?, None)
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
                (dec, stats)
            }
        };
        let c = decoder.config();
        let saver = job
            .save_inputs
            .as_deref()
            .map(|dir| InputSaver::create(dir, c.n_features(), c.image_size))
            .transpose()?;
        let ready = DecoderReady {
            config: c.clone(),
            stats,
        };
        let budget = Duration::from_secs_f64(rig.latency_budget.seconds());
        Ok((
            DecodeStage {
                decoder,
                saver,
                budget,
            },
            ready,
        ))
    }

    /// Decodes the newest waiting frame until `stop`; older waiting frames are handed
    /// back undecoded and counted.
    fn run(mut self, job: &DecodeJob) {
        while !job.stop.load(Ordering::Relaxed) {
            // Poll and park rather than block in the channel: a blocked receiver would
            // make the window thread's try_send take the channel's internal lock to wake
            // it. The window thread unparks this one after each frame.
            let mut frame = match job.frames.try_recv() {
                Ok(f) => f,
                Err(_) => {
                    thread::park_timeout(Duration::from_millis(20));
                    continue;
                }
            };
            while let Ok(newer) = job.frames.try_recv() {
                Counters::inc(&job.counters.frames_dropped_decode);
                let _ = job.free.send(std::mem::replace(&mut frame, newer));
            }
            self.decode(frame, job);
        }
        if let Some(s) = self.saver {
            if let Err(e) = s.finish() {
                eprintln!("saving the decoder inputs failed: {e:#}");
            }
        }
    }

    /// Decodes one frame, returns its buffer to the pool and hands the image on.
    fn decode(&mut self, frame: FeatureFrame, job: &DecodeJob) {
        let counters = &job.counters;
        let size = self.decoder.config().image_size;
        let start = Instant::now();
        let mut rgb = vec![0.0f32; 3 * size * size];
        let result = self.decoder.reconstruct(&frame.features, &mut rgb);
        let done = Instant::now();
        if let (Some(s), Ok(())) = (self.saver.as_mut(), &result) {
            if let Err(e) = s.push(&frame, &rgb) {
                eprintln!("saving the decoder inputs stopped: {e:#}");
                self.saver = None;
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
            onset_lsl: frame.onset_lsl,
            image: frame.image,
            rgb,
            last_arrival: frame.last_arrival,
            timings,
            decoded_at: done,
        };
        let _ = job.free.send(frame);
        if result.is_err() {
            Counters::inc(&counters.decode_errors);
            return;
        }
        Counters::inc(&counters.frames_decoded);
        if done.duration_since(out.last_arrival) > self.budget {
            Counters::inc(&counters.deadline_misses);
        }
        if job.slot.put(out) {
            Counters::inc(&counters.frames_superseded);
        }
    }
}
