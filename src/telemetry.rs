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

/// Declares `Counters`, one `AtomicU64` per name, and `snapshot()`, which lists them
/// in this order (the order of the summary's `counts:` line and `RunSummary.counters`).
macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Event counters shared by all stages. Incrementing never allocates or locks.
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
            /// What the first decode errors said.
            pub decode_error_texts: FirstErrors,
        }

        impl Counters {
            /// All counters with their names, for the summary and tests.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), Self::get(&self.$name)),)*]
            }
        }
    };
}

counters! {
    samples,
    chunks,
    /// Samples dropped because the ingest→window ring was full.
    overruns,
    /// Samples that held a NaN or ±Inf value.
    bad_samples,
    /// Discontinuities in sample time larger than the tolerance.
    gaps,
    markers,
    unknown_markers,
    /// Markers dropped because the marker queue was full.
    marker_overruns,
    frames_built,
    frames_skipped_gap,
    frames_skipped_bad,
    /// Onsets whose windows had already left the history (marker too late).
    frames_skipped_late,
    /// Onsets waiting for their windows when the stream's time went backwards (a clock
    /// reset or a restarted sender): their windows no longer exist.
    onsets_dropped_reset,
    /// Frames the window stage could not hand on (no free frame buffer).
    frames_dropped_window,
    /// Frames the decoder skipped because a newer one was waiting (newest wins).
    frames_dropped_decode,
    frames_decoded,
    decode_errors,
    deadline_misses,
    frames_shown,
    /// Decoded frames the display never showed because a newer one replaced them.
    frames_superseded,
    /// Frames shown without their stimulus: a stimulus folder is set but holds no
    /// image for the frame's id.
    stimuli_missing,
    /// Frames shown before their stimulus image was loaded (shown without it).
    stimuli_late,
    /// Frames shown but not published on `monkeysee-frames`: the publish thread was
    /// behind and every hand-over buffer was in use.
    frames_unpublished,
    /// Frames shown but not written as PNG (headless): the writer thread was behind.
    frames_unwritten,
    /// Decoded frames whose inputs `--save-inputs` could not queue for saving.
    inputs_unsaved,
    /// The MUA stream went silent (or liblsl reported it lost).
    stream_lost,
    /// Data flowed again after a loss.
    stream_restored,
    /// The lost MUA stream was replaced by another that matches the selector and fits
    /// the rig (a new source_id: the acquisition software restarted differently).
    stream_switched,
    /// Streams matching a selector that appeared while the selected one was live:
    /// refused (LSL has no authentication; see the README's lab-network notes).
    rival_streams,
    /// Streams offered as a replacement for the lost MUA stream that do not fit the rig
    /// (channel count, format or rate): refused.
    streams_refused,
    /// liblsl reported the marker stream lost.
    marker_stream_lost,
    /// Samples written to the `--record` file.
    recorded_samples,
    /// Markers written to the `--record` file.
    recorded_markers,
    /// Samples not recorded because the ingest→recorder ring was full.
    record_overruns,
    /// Markers not recorded because the marker→recorder queue was full.
    record_marker_drops,
    /// Samples the daemon published (frames, frame info, events) that the recorder's
    /// queue had no room for (`--record`).
    record_output_drops,
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

    const NAMES: [&'static str; 6] = [
        "lsl->arrival",
        "arrival->window",
        "queue",
        "decode",
        "present",
        "end-to-end",
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// Per-stage latencies of one frame, in microseconds, indexed by `Stage as usize`.
pub type FrameTimings = [u64; Stage::ALL.len()];

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
        for (i, v) in t.iter().enumerate() {
            let v = (*v).clamp(1, MAX_US);
            // Values are clamped into the histogram's range, so recording cannot fail.
            let _ = self.total[i].record(v);
            let _ = self.interval[i].record(v);
        }
    }

    /// The stage's latency distribution as `(ms, fraction of frames at or below)` at
    /// 105 points in rising order (every percent, 99.5, 99.9, 99.95 and 99.99 % and the
    /// maximum); empty without frames.
    pub fn cdf(&self, stage: Stage) -> Vec<(f64, f64)> {
        let h = &self.total[stage as usize];
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
        let h = &self.total[stage as usize];
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
