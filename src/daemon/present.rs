//! The display loop, on the thread that called [`super::run`]: takes the newest decoded
//! frame, shows it (window or PNG files) beside the stimulus, records its latencies,
//! and prints the periodic status line. It ends on `--frames`, `--seconds`, Ctrl-C, a
//! closed window, or a pipeline thread that stopped.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};

use super::outlet::{FrameOutlets, OutletSummary};
use super::{LatestSlot, Output, Pipeline, RunOptions};
use crate::display::{
    rgb_planes_to_image, side_by_side, DiscardPresenter, HeadlessPresenter, Presenter, Shown,
    StimulusStore, WindowPresenter,
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
    pub outlet: Option<OutletSummary>,
}

/// What the display loop shows and publishes.
pub(super) struct Where {
    /// Side of the reconstruction, pixels.
    pub size: usize,
    pub stimuli_dir: Option<PathBuf>,
    /// The LSL outlets' source_id stem (`-frames` / `-events` added).
    pub outlet_source: String,
    /// With `--record`: where the published samples go to be recorded.
    pub record_outputs: Option<super::outlet::RecordEnds>,
}

/// Presents frames until a stop condition; see the module doc.
pub(super) fn present(
    opts: &RunOptions,
    pipeline: &Pipeline,
    slot: &LatestSlot,
    to: Where,
) -> anyhow::Result<Presented> {
    let Where {
        size,
        stimuli_dir,
        outlet_source,
        record_outputs,
    } = to;
    let started = Instant::now();
    let mut stimuli = StimulusStore::new(stimuli_dir.clone(), size);
    let mut presenter = open_presenter(opts, size, stimuli_dir.is_some())?;
    let mut latency = LatencyRecorder::new();
    if let Some(p) = &opts.hdr_log {
        latency = latency
            .with_log(p)
            .with_context(|| format!("creating the HdrHistogram log {}", p.display()))?;
    }
    let counters = &pipeline.counters;
    let mut outlets = match opts.outlet {
        None => None,
        Some(side) => Some(
            FrameOutlets::open(side, &outlet_source, &opts.rig.name, counters, record_outputs)
                .context("publishing the monkeysee-frames and monkeysee-events LSL streams (--no-outlet runs without)")?,
        ),
    };
    let mut last_events = Instant::now();
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
        match slot.take_timeout(Duration::from_millis(15)) {
            Some(f) => {
                let recon = rgb_planes_to_image(&f.rgb, size);
                let id = f.image.as_ref().map(|i| i.as_str().to_string());
                let stim = id.as_deref().and_then(|i| stimuli.get(i)).cloned();
                if id.is_some() && stim.is_none() && stimuli.has_folder() {
                    Counters::inc(&counters.stimuli_missing);
                }
                let picture = side_by_side(&recon, stim.as_ref());
                let latency_ms = micros_between(f.last_arrival, Instant::now()) as f64 / 1000.0;
                let shown_ok = presenter.present(&Shown {
                    seq: f.seq,
                    image_id: id.as_deref(),
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
                t.present_us = micros_between(f.decoded_at, now);
                t.end_to_end_us = micros_between(f.last_arrival, now);
                latency.record(&t);
                if let Some(o) = outlets.as_mut() {
                    o.publish(id.as_deref(), f.seq, f.onset_lsl, &t, &recon, counters);
                }
                shown += 1;
                Counters::inc(&counters.frames_shown);
                // The first MAX_LISTED ids only: an hours-long run's summary must not
                // grow with every frame.
                if images.len() < MAX_LISTED {
                    images.extend(id);
                }
            }
            None if !presenter.idle() => break,
            None => {}
        }
        if let Some(o) = outlets
            .as_mut()
            .filter(|_| last_events.elapsed() >= Duration::from_millis(50))
        {
            o.events(counters);
            last_events = Instant::now();
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
        outlet: outlets.map(|mut o| {
            o.events(counters);
            o.summary()
        }),
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
fn open_presenter(
    opts: &RunOptions,
    size: usize,
    with_stimuli: bool,
) -> anyhow::Result<Box<dyn Presenter>> {
    Ok(match &opts.output {
        Output::Headless(dir) => Box::new(HeadlessPresenter::new(dir)?),
        Output::Discard => Box::new(DiscardPresenter),
        Output::Window { fallback } => {
            match WindowPresenter::open(size, with_stimuli, opts.rig.display.scale) {
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
