//! The display loop, on the thread that called [`super::run`]: takes the newest decoded
//! frame, shows it (window or PNG files) beside the stimulus, records its latencies,
//! hands it to the publish thread, and prints the periodic status line. It ends on
//! `--frames`, `--seconds`, Ctrl-C, a closed window, or a pipeline thread that stopped.
//!
//! Nothing here waits on a disk, a network or a decoder of images: stimuli come
//! pre-loaded ([`StimulusLoader`]), PNGs are written by the presenter's own thread, and
//! publishing is a `try_send` of a pooled buffer ([`PublishSender::offer`]).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};

use super::outlet::PublishSender;
use super::stages::FrameReceiver;
use super::{Output, Pipeline, RunOptions};
use crate::display::{
    rgb_planes_to_image, side_by_side, DiscardPresenter, HeadlessPresenter, Presenter, Shown,
    StimulusLoader, WindowPresenter,
};
use crate::telemetry::{micros_between, Counters, LatencyRecorder, Stage};

/// Image ids the run summary lists, at most (the first ones shown).
pub(super) const MAX_LISTED: usize = 10_000;

/// What the display loop saw.
pub(super) struct Presented {
    pub shown: u64,
    /// The image id of each frame shown, in order (the first [`MAX_LISTED`]).
    pub images: Vec<String>,
    pub latency: LatencyRecorder,
    pub elapsed_s: f64,
}

/// What the display loop shows and where it hands frames on.
pub(super) struct Where {
    /// Side of the reconstruction, pixels.
    pub size: usize,
    /// The window or folder, opened before the streams.
    pub presenter: Box<dyn Presenter>,
    pub stimuli: Option<StimulusLoader>,
    /// The publish thread's hand-over, when publishing.
    pub publish: Option<PublishSender>,
}

/// Presents frames until a stop condition; see the module doc.
pub(super) fn present(
    opts: &RunOptions,
    pipeline: &Pipeline,
    frames: &mut FrameReceiver,
    to: Where,
) -> anyhow::Result<Presented> {
    let Where {
        size,
        mut presenter,
        mut stimuli,
        publish,
    } = to;
    let started = Instant::now();
    let counters = &pipeline.counters;
    let mut latency = LatencyRecorder::new();
    if let Some(p) = &opts.hdr_log {
        latency = latency
            .with_log(p)
            .with_context(|| format!("creating the HdrHistogram log {}", p.display()))?;
    }
    let mut shown = 0u64;
    let mut images = Vec::new();
    let mut last_status = Instant::now();
    let status_every = Duration::from_secs_f64(opts.rig.display.status_every.seconds());
    let mut result: anyhow::Result<()> = Ok(());
    while !should_stop(opts, shown, started) {
        if pipeline.any_finished() {
            result = Err(anyhow!("a pipeline thread stopped unexpectedly"));
            break;
        }
        match frames.take_timeout(Duration::from_millis(15)) {
            Some(f) => {
                let _span = tracing::trace_span!("present", seq = f.seq).entered();
                let recon = rgb_planes_to_image(&f.rgb, size);
                let id = f.image.as_ref().map(|i| i.as_str());
                let stim = match (id, stimuli.as_mut()) {
                    (Some(id), Some(s)) => match s.get(id) {
                        Some(Some(img)) => Some(img),
                        Some(None) => {
                            Counters::inc(&counters.stimuli_missing);
                            None
                        }
                        None => {
                            Counters::inc(&counters.stimuli_late);
                            None
                        }
                    },
                    _ => None,
                };
                let picture = side_by_side(&recon, stim);
                let latency_ms = micros_between(f.last_arrival, Instant::now()) as f64 / 1000.0;
                let shown_ok = presenter.present(&Shown {
                    seq: f.seq,
                    image_id: id,
                    picture: &picture,
                    latency_ms,
                });
                match shown_ok {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
                let now = Instant::now();
                let mut t = f.timings;
                t[Stage::Present as usize] = micros_between(f.decoded_at, now);
                t[Stage::EndToEnd as usize] = micros_between(f.last_arrival, now);
                latency.record(&t);
                if let Some(p) = &publish {
                    p.offer(f.seq, f.onset_lsl, f.image, &t, &recon, counters);
                }
                shown += 1;
                Counters::inc(&counters.frames_shown);
                // The first MAX_LISTED ids only: an hours-long run's summary must not
                // grow with every frame.
                if images.len() < MAX_LISTED {
                    images.extend(id.map(str::to_string));
                }
            }
            None if !presenter.idle() => break,
            None => {}
        }
        if last_status.elapsed() >= status_every {
            last_status = Instant::now();
            if let Err(e) = latency.roll_interval() {
                eprintln!("monkeysee: cannot write the HdrHistogram log: {e}");
            }
            if opts.status {
                eprintln!("{}", status_line(started.elapsed(), counters, &latency));
            }
        }
    }
    let _ = latency.roll_interval();
    presenter.finish()?;
    result?;
    Ok(Presented {
        shown,
        images,
        latency,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

fn should_stop(opts: &RunOptions, shown: u64, started: Instant) -> bool {
    opts.stop.load(Ordering::Relaxed)
        || opts.frames.is_some_and(|n| shown >= n)
        || opts
            .seconds
            .is_some_and(|s| started.elapsed().as_secs_f64() >= s)
}

/// A window, or PNG files when the run is headless or no display can be opened.
pub(super) fn open_presenter(
    opts: &RunOptions,
    size: usize,
    with_stimuli: bool,
    counters: &std::sync::Arc<Counters>,
) -> anyhow::Result<Box<dyn Presenter>> {
    let headless = |dir: &std::path::Path| HeadlessPresenter::new(dir, Some(counters.clone()));
    Ok(match &opts.output {
        Output::Headless(dir) => Box::new(headless(dir)?),
        Output::Discard => Box::new(DiscardPresenter),
        Output::Window { fallback } => {
            match WindowPresenter::open(size, with_stimuli, opts.rig.display.scale) {
                Ok(w) => Box::new(w),
                Err(e) => {
                    eprintln!(
                        "monkeysee: {e:#}; writing frames to {} instead",
                        fallback.display()
                    );
                    Box::new(headless(fallback)?)
                }
            }
        }
    })
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
