//! Telemetry: counters shared by every stage (atomics: no locks, no allocation), the
//! first few decode errors' texts (written once each, only when a decode fails), and
//! per-stage latency histograms owned by the presenting thread.
//!
//! Per-frame timestamps travel with the frame itself (see [`crate::window::FeatureFrame`]
//! and [`crate::daemon::DecodedFrame`]), so histograms need no sharing: the thread that
//! presents a frame records every stage of it at once.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

/// A progress bar for long offline work (`simulate`, `dataset`, `import-tvsd`, `train`):
/// elapsed time, an optional message (`set_message`), position of `len` in `unit`, rate
/// and ETA. Hidden when `show` is false.
pub fn progress_bar(show: bool, len: u64, unit: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{msg}} {{wide_bar}} {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, eta {{eta}})"
        ))
        .expect("valid template"),
    );
    bar
}

/// At most `n` of `items`, comma-separated, with ", ..." when some are left out: for
/// summaries that list skipped ids.
pub fn some_of(items: &[String], n: usize) -> String {
    let mut text = items
        .iter()
        .take(n)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > n {
        text.push_str(", ...");
    }
    text
}

/// How many decode errors a run keeps the text of (the first ones; `decode_errors`
/// counts them all).
pub const DECODE_ERRORS_KEPT: usize = 5;

/// The texts of the first [`DECODE_ERRORS_KEPT`] errors of a kind. A slot is claimed with
/// one atomic add and written once; nothing is made or claimed while no error happens,
/// and once every slot is taken an error costs one atomic load.
#[derive(Debug, Default)]
pub struct FirstErrors {
    claimed: AtomicUsize,
    texts: [OnceLock<String>; DECODE_ERRORS_KEPT],
}

impl FirstErrors {
    /// Keeps the text `text()` makes, if a slot is left (it is made only then).
    pub fn record(&self, text: impl FnOnce() -> String) {
        if self.claimed.load(Ordering::Relaxed) >= DECODE_ERRORS_KEPT {
            return;
        }
        let i = self.claimed.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = self.texts.get(i) {
            let _ = slot.set(text());
        }
    }

    /// The texts kept so far, first error first.
    pub fn texts(&self) -> Vec<String> {
        self.texts.iter().filter_map(|t| t.get().cloned()).collect()
    }
}

/// Event counters shared by all stages. Incrementing never allocates or locks.
#[derive(Debug, Default)]
pub struct Counters {
    pub samples: AtomicU64,
    pub chunks: AtomicU64,
    /// Samples dropped because the ingest→window ring was full.
    pub overruns: AtomicU64,
    /// Samples that held a NaN or ±Inf value.
    pub bad_samples: AtomicU64,
    /// Discontinuities in sample time larger than the tolerance.
    pub gaps: AtomicU64,
    pub markers: AtomicU64,
    pub unknown_markers: AtomicU64,
    /// Markers dropped because the marker queue was full.
    pub marker_overruns: AtomicU64,
    pub frames_built: AtomicU64,
    pub frames_skipped_gap: AtomicU64,
    pub frames_skipped_bad: AtomicU64,
    /// Onsets waiting for their windows when the stream's time went backwards (a clock
    /// reset or a restarted sender): their windows no longer exist.
    pub onsets_dropped_reset: AtomicU64,
    /// Onsets whose windows had already left the history (marker too late).
    pub frames_skipped_late: AtomicU64,
    /// Frames the window stage could not hand on (no free frame buffer).
    pub frames_dropped_window: AtomicU64,
    /// Frames the decoder skipped because a newer one was waiting (newest wins).
    pub frames_dropped_decode: AtomicU64,
    pub frames_decoded: AtomicU64,
    pub decode_errors: AtomicU64,
    /// What the first decode errors said.
    pub decode_error_texts: FirstErrors,
    pub deadline_misses: AtomicU64,
    pub frames_shown: AtomicU64,
    /// Decoded frames the display never showed because a newer one replaced them.
    pub frames_superseded: AtomicU64,
    /// Frames shown without their stimulus: a stimulus folder is set but holds no
    /// image for the frame's id.
    pub stimuli_missing: AtomicU64,
    /// Frames shown before their stimulus image was loaded (shown without it).
    pub stimuli_late: AtomicU64,
    /// Frames shown but not published on `monkeysee-frames`: the publish thread was
    /// behind and every hand-over buffer was in use.
    pub frames_unpublished: AtomicU64,
    /// Frames shown but not written as PNG (headless): the writer thread was behind.
    pub frames_unwritten: AtomicU64,
    /// Decoded frames whose inputs `--save-inputs` could not queue for saving.
    pub inputs_unsaved: AtomicU64,
    /// The MUA stream went silent (or liblsl reported it lost).
    pub stream_lost: AtomicU64,
    /// Data flowed again after a loss.
    pub stream_restored: AtomicU64,
    /// The lost MUA stream was replaced by another that matches the selector and fits
    /// the rig (a new source_id: the acquisition software restarted differently).
    pub stream_switched: AtomicU64,
    /// Streams matching a selector that appeared while the selected one was live:
    /// refused (LSL has no authentication; see the README's lab-network notes).
    pub rival_streams: AtomicU64,
    /// Streams offered as a replacement for the lost MUA stream that do not fit the rig
    /// (channel count, format or rate): refused.
    pub streams_refused: AtomicU64,
    /// liblsl reported the marker stream lost.
    pub marker_stream_lost: AtomicU64,
    /// Samples written to the `--record` file.
    pub recorded_samples: AtomicU64,
    /// Markers written to the `--record` file.
    pub recorded_markers: AtomicU64,
    /// Samples not recorded because the ingest→recorder ring was full.
    pub record_overruns: AtomicU64,
    /// Markers not recorded because the marker→recorder queue was full.
    pub record_marker_drops: AtomicU64,
    /// Samples the daemon published (frames, frame info, events) that the recorder's
    /// queue had no room for (`--record`).
    pub record_output_drops: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// All counters with their names, for the summary and tests.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = Self::get;
        vec![
            ("samples", g(&self.samples)),
            ("chunks", g(&self.chunks)),
            ("overruns", g(&self.overruns)),
            ("bad_samples", g(&self.bad_samples)),
            ("gaps", g(&self.gaps)),
            ("markers", g(&self.markers)),
            ("unknown_markers", g(&self.unknown_markers)),
            ("marker_overruns", g(&self.marker_overruns)),
            ("frames_built", g(&self.frames_built)),
            ("frames_skipped_gap", g(&self.frames_skipped_gap)),
            ("frames_skipped_bad", g(&self.frames_skipped_bad)),
            ("frames_skipped_late", g(&self.frames_skipped_late)),
            ("onsets_dropped_reset", g(&self.onsets_dropped_reset)),
            ("frames_dropped_window", g(&self.frames_dropped_window)),
            ("frames_dropped_decode", g(&self.frames_dropped_decode)),
            ("frames_decoded", g(&self.frames_decoded)),
            ("decode_errors", g(&self.decode_errors)),
            ("deadline_misses", g(&self.deadline_misses)),
            ("frames_shown", g(&self.frames_shown)),
            ("frames_superseded", g(&self.frames_superseded)),
            ("stimuli_missing", g(&self.stimuli_missing)),
            ("stimuli_late", g(&self.stimuli_late)),
            ("frames_unpublished", g(&self.frames_unpublished)),
            ("frames_unwritten", g(&self.frames_unwritten)),
            ("inputs_unsaved", g(&self.inputs_unsaved)),
            ("stream_lost", g(&self.stream_lost)),
            ("stream_restored", g(&self.stream_restored)),
            ("stream_switched", g(&self.stream_switched)),
            ("rival_streams", g(&self.rival_streams)),
            ("streams_refused", g(&self.streams_refused)),
            ("marker_stream_lost", g(&self.marker_stream_lost)),
            ("recorded_samples", g(&self.recorded_samples)),
            ("recorded_markers", g(&self.recorded_markers)),
            ("record_overruns", g(&self.record_overruns)),
            ("record_marker_drops", g(&self.record_marker_drops)),
            ("record_output_drops", g(&self.record_output_drops)),
        ]
    }
}

/// The measured stages, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// LSL timestamp of the frame's last sample → its arrival in the ingest thread.
    LslToArrival,
    /// Arrival of the last needed sample → feature frame ready.
    ArrivalToWindow,
    /// Frame ready → decode started (queueing).
    Queue,
    /// One decoder forward pass.
    Decode,
    /// Decode finished → shown (window) or written (headless).
    Present,
    /// Arrival of the last needed sample → shown. The number that matters.
    EndToEnd,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::LslToArrival,
        Stage::ArrivalToWindow,
        Stage::Queue,
        Stage::Decode,
        Stage::Present,
        Stage::EndToEnd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::LslToArrival => "lsl->arrival",
            Stage::ArrivalToWindow => "arrival->window",
            Stage::Queue => "queue",
            Stage::Decode => "decode",
            Stage::Present => "present",
            Stage::EndToEnd => "end-to-end",
        }
    }
}

/// Per-stage latencies of one frame, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameTimings {
    pub lsl_to_arrival_us: u64,
    pub arrival_to_window_us: u64,
    pub queue_us: u64,
    pub decode_us: u64,
    pub present_us: u64,
    pub end_to_end_us: u64,
}

impl FrameTimings {
    /// The latency of stage `s`, µs.
    pub fn get(&self, s: Stage) -> u64 {
        match s {
            Stage::LslToArrival => self.lsl_to_arrival_us,
            Stage::ArrivalToWindow => self.arrival_to_window_us,
            Stage::Queue => self.queue_us,
            Stage::Decode => self.decode_us,
            Stage::Present => self.present_us,
            Stage::EndToEnd => self.end_to_end_us,
        }
    }
}

/// Microseconds between two instants (0 if `later` is earlier).
pub fn micros_between(earlier: Instant, later: Instant) -> u64 {
    later.saturating_duration_since(earlier).as_micros() as u64
}

/// Latency percentiles of one stage, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct StageSummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

const MAX_US: u64 = 60_000_000;

/// Histograms per stage: the whole run, and the current interval for the log.
pub struct LatencyRecorder {
    total: Vec<Histogram<u64>>,
    interval: Vec<Histogram<u64>>,
    interval_start: Instant,
    run_start: Instant,
    log: Option<IntervalLog>,
}

struct IntervalLog {
    out: BufWriter<File>,
    serializer: V2DeflateSerializer,
}

impl LatencyRecorder {
    pub fn new() -> Self {
        let mk = || {
            (0..Stage::ALL.len())
                .map(|_| {
                    Histogram::<u64>::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
                })
                .collect::<Vec<_>>()
        };
        let now = Instant::now();
        LatencyRecorder {
            total: mk(),
            interval: mk(),
            interval_start: now,
            run_start: now,
            log: None,
        }
    }

    /// Also write every interval to a standard HdrHistogram interval log.
    pub fn with_log(mut self, path: &Path) -> std::io::Result<Self> {
        let file = File::create(path)?;
        let mut log = IntervalLog {
            out: BufWriter::new(file),
            serializer: V2DeflateSerializer::new(),
        };
        let start = SystemTime::now();
        IntervalLogWriterBuilder::new()
            .add_comment(
                "monkeysee latency log: values in microseconds, one tag per pipeline stage",
            )
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut log.out, &mut log.serializer)?;
        log.out.flush()?;
        self.log = Some(log);
        Ok(self)
    }

    pub fn record(&mut self, t: &FrameTimings) {
        for (i, s) in Stage::ALL.iter().enumerate() {
            let v = t.get(*s).clamp(1, MAX_US);
            // Values are clamped into the histogram's range, so recording cannot fail.
            let _ = self.total[i].record(v);
            let _ = self.interval[i].record(v);
        }
    }

    /// The stage's latency distribution as `(ms, fraction of frames at or below)` at
    /// 105 points in rising order (every percent, 99.5, 99.9, 99.95 and 99.99 % and the
    /// maximum); empty without frames.
    pub fn cdf(&self, stage: Stage) -> Vec<(f64, f64)> {
        let h = &self.total[Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0)];
        if h.is_empty() {
            return Vec::new();
        }
        (0..100)
            .map(|p| f64::from(p) / 100.0)
            .chain([0.995, 0.999, 0.9995, 0.9999])
            .map(|q| (h.value_at_quantile(q) as f64 / 1000.0, q))
            .chain([(h.max() as f64 / 1000.0, 1.0)])
            .collect()
    }

    pub fn summary(&self, stage: Stage) -> StageSummary {
        let h = &self.total[Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0)];
        let ms = |v: u64| v as f64 / 1000.0;
        StageSummary {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }

    /// Closes the current interval: writes it to the log (if any) and starts a new one.
    pub fn roll_interval(&mut self) -> std::io::Result<()> {
        let now = Instant::now();
        if let Some(log) = &mut self.log {
            let start = self.interval_start.duration_since(self.run_start);
            let len = now.duration_since(self.interval_start);
            let mut writer = IntervalLogWriterBuilder::new()
                .begin_log_with(&mut log.out, &mut log.serializer)?;
            for (i, s) in Stage::ALL.iter().enumerate() {
                if self.interval[i].is_empty() {
                    continue;
                }
                let tag = Tag::new(s.name()).ok_or_else(|| std::io::Error::other("bad tag"))?;
                writer
                    .write_histogram(&self.interval[i], start, len, Some(tag))
                    .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
            }
            drop(writer);
            log.out.flush()?;
        }
        for h in &mut self.interval {
            h.reset();
        }
        self.interval_start = now;
        Ok(())
    }

    /// The exit table: one row per stage.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<16} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "stage (ms)", "frames", "p50", "p90", "p99", "p99.9", "max"
        );
        for st in Stage::ALL {
            let m = self.summary(st);
            let _ = writeln!(
                s,
                "{:<16} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                st.name(),
                m.count,
                m.p50_ms,
                m.p90_ms,
                m.p99_ms,
                m.p999_ms,
                m.max_ms
            );
        }
        s
    }
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first errors' texts are kept, in order; later ones are only counted (their
    /// text is never even made).
    #[test]
    fn only_the_first_errors_are_kept() {
        let first = FirstErrors::default();
        let mut made = 0;
        for i in 0..DECODE_ERRORS_KEPT + 3 {
            first.record(|| {
                made += 1;
                format!("error {i}")
            });
        }
        assert_eq!(made, DECODE_ERRORS_KEPT);
        let kept: Vec<String> = (0..DECODE_ERRORS_KEPT)
            .map(|i| format!("error {i}"))
            .collect();
        assert_eq!(first.texts(), kept);
    }
}
