//! Window assembly: turns the sample stream and stimulus onsets into feature frames.
//!
//! Real-time contract: every buffer is sized in [`WindowAssembler::new`]; after that,
//! [`WindowAssembler::push_sample`], [`WindowAssembler::push_onset`] and
//! [`WindowAssembler::next_frame`] never allocate, lock or print. Problems are
//! counted in [`Counters`] and reported by telemetry.
//!
//! A frame holds, per electrode, the z-scored mean of its MUA in each latency window
//! of the chosen set (TW-15: one window, TW-3: five), window-major
//! (`features[k * n_electrodes + e]`), plus the mean over the pre-stimulus baseline.
//! Normalisation is [`crate::norm`]'s: per electrode and window, over stimulus
//! presentations, starting from the model's training statistics when it has them and
//! updated with every presentation the stage builds a frame for (event mode; sliding
//! frames and the samples between presentations never change it).

use std::time::Instant;

use crate::config::{RigConfig, WindowSetKind};
pub use crate::norm::NormStats;
use crate::norm::PresentationNorm;
use crate::telemetry::Counters;
use crate::units::{Millis, Window};

/// Which onsets produce frames.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum Mode {
    /// One frame per `stim_on` marker, once its last window is complete.
    Event,
    /// One frame per hop, with a virtual onset at (newest sample − window span).
    Sliding,
}

/// A stimulus image identifier carried inline (no heap), as sent in `stim_on <id>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ImageId {
    len: u8,
    bytes: [u8; ImageId::CAP],
}

impl ImageId {
    pub const CAP: usize = 63;

    /// Truncates at [`ImageId::CAP`] bytes (on a character boundary).
    pub fn new(s: &str) -> ImageId {
        let mut end = s.len().min(Self::CAP);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0u8; Self::CAP];
        bytes[..end].copy_from_slice(&s.as_bytes()[..end]);
        ImageId {
            len: end as u8,
            bytes,
        }
    }

    pub fn as_str(&self) -> &str {
        // Built from a &str cut on a char boundary, so always valid UTF-8.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl std::fmt::Debug for ImageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ImageId({:?})", self.as_str())
    }
}

/// A stimulus onset in LSL time (seconds, already clock-corrected).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Onset {
    pub lsl_time: f64,
    pub image: ImageId,
}

/// Per-sample bookkeeping that travels beside the channel values.
#[derive(Debug, Clone, Copy)]
pub struct SampleMeta {
    /// Clock-corrected LSL timestamp, seconds.
    pub lsl_time: f64,
    /// When the ingest thread received the sample's chunk.
    pub arrival: Instant,
    /// `local_clock()` at arrival minus `lsl_time`, seconds.
    pub transport_delay: f64,
}

/// Why a frame was not emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Too few samples in a window: a gap in the stream.
    Gap,
    /// A NaN/Inf sample inside a window.
    BadSamples,
    /// The onset's windows already left the history.
    Late,
}

/// Outcome of [`WindowAssembler::next_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameStatus {
    /// Nothing is complete yet.
    Pending,
    /// The frame buffer was filled.
    Ready,
    /// An onset's frame could not be built; it is counted and gone.
    Skipped(SkipReason),
}

/// One feature frame, ready for the decoder. Allocated once and recycled.
#[derive(Debug, Clone)]
pub struct FeatureFrame {
    pub seq: u64,
    /// Onset (real or virtual) in LSL time.
    pub onset_lsl: f64,
    /// The stimulus, for event-locked frames.
    pub image: Option<ImageId>,
    /// `[windows][electrodes]`, z-scored window means.
    pub features: Vec<f32>,
    /// `[electrodes]`, z-scored mean over the pre-stimulus baseline.
    pub baseline: Vec<f32>,
    /// Arrival of the last sample the frame needed.
    pub last_arrival: Instant,
    /// Transport delay (LSL timestamp → arrival) of that sample, seconds.
    pub transport_delay: f64,
    /// When the frame was complete.
    pub ready_at: Instant,
}

impl FeatureFrame {
    pub fn new(n_windows: usize, n_electrodes: usize) -> Self {
        let now = Instant::now();
        FeatureFrame {
            seq: 0,
            onset_lsl: 0.0,
            image: None,
            features: vec![0.0; n_windows * n_electrodes],
            baseline: vec![0.0; n_electrodes],
            last_arrival: now,
            transport_delay: 0.0,
            ready_at: now,
        }
    }
}

/// Windows of one group of electrodes that share them (one area).
#[derive(Debug, Clone)]
struct Group {
    windows: Vec<Window>,
    electrodes: Vec<usize>,
}

/// Settings of an assembler, all derived from the rig config.
#[derive(Debug, Clone)]
pub struct AssemblerConfig {
    pub channel_count: usize,
    pub sampling_rate_hz: f64,
    /// Stream channel of each electrode, in feature order.
    pub electrode_channels: Vec<usize>,
    /// Windows of each electrode (all electrodes have the same number).
    pub electrode_windows: Vec<Vec<Window>>,
    pub baseline: Window,
    pub mode: Mode,
    pub hop: Millis,
    pub history: Millis,
    /// Weight of the model's statistics, in presentations.
    pub prior_presentations: f64,
    /// When > 0: the model's statistics are dropped once this many presentations were seen.
    pub calibration_presentations: u64,
    /// Largest number of onsets waiting for their windows.
    pub max_pending: usize,
    /// Fraction of a window's expected samples that must be present.
    pub min_coverage: f64,
}

impl AssemblerConfig {
    pub fn from_rig(rig: &RigConfig, set: WindowSetKind, mode: Mode) -> Self {
        AssemblerConfig {
            channel_count: rig.channel_count,
            sampling_rate_hz: rig.sampling_rate_hz,
            electrode_channels: rig.electrodes.iter().map(|e| e.channel).collect(),
            electrode_windows: rig
                .electrodes
                .iter()
                .map(|e| rig.windows.windows_for(set, e.area))
                .collect(),
            baseline: rig.windows.baseline,
            mode,
            hop: rig.windows.sliding_hop,
            history: rig.history,
            prior_presentations: rig.normalisation.prior_presentations,
            calibration_presentations: rig.normalisation.calibration_presentations,
            max_pending: 64,
            min_coverage: 0.9,
        }
    }

    pub fn n_electrodes(&self) -> usize {
        self.electrode_channels.len()
    }

    pub fn windows_per_electrode(&self) -> usize {
        self.electrode_windows.first().map_or(0, Vec::len)
    }

    /// Latest window end over all electrodes.
    pub fn span_end(&self) -> Millis {
        Millis(
            self.electrode_windows
                .iter()
                .flatten()
                .map(|w| w.end().0)
                .fold(0.0, f64::max),
        )
    }
}

/// The window stage's state. See the module docs for the contract.
pub struct WindowAssembler {
    cfg: AssemblerConfig,
    groups: Vec<Group>,
    /// `[capacity][channel_count]` raw values, a ring.
    values: Vec<f32>,
    meta: Vec<SampleMeta>,
    capacity: usize,
    /// Index of the next write.
    head: usize,
    len: usize,
    period: f64,
    norm: PresentationNorm,
    pending: Vec<Onset>,
    pending_head: usize,
    pending_len: usize,
    next_slide: Option<f64>,
    span_end: f64,
    seq: u64,
    /// Per-group, per-window scratch of sample ranges.
    ranges: Vec<(usize, usize)>,
    /// Per-electrode sums, scratch.
    acc: Vec<f64>,
    /// Raw window means `[window][electrode]` and baseline means, scratch.
    raw: Vec<f64>,
    raw_baseline: Vec<f64>,
    /// 0..n_electrodes, for the baseline.
    all_electrodes: Vec<usize>,
}

impl WindowAssembler {
    /// Sizes every buffer for the configured history. `stats`, when given, are the
    /// model's training statistics to start the running normalisation from.
    pub fn new(cfg: AssemblerConfig, stats: Option<&NormStats>) -> Self {
        let n_e = cfg.n_electrodes();
        let period = 1.0 / cfg.sampling_rate_hz;
        let capacity = ((cfg.history.seconds() * cfg.sampling_rate_hz).ceil() as usize).max(4);
        // Group electrodes by identical window lists (in practice: by area).
        let mut groups: Vec<Group> = Vec::new();
        for (e, ws) in cfg.electrode_windows.iter().enumerate() {
            match groups.iter_mut().find(|g| &g.windows == ws) {
                Some(g) => g.electrodes.push(e),
                None => groups.push(Group {
                    windows: ws.clone(),
                    electrodes: vec![e],
                }),
            }
        }
        let max_windows = cfg.windows_per_electrode().max(1);
        let norm = PresentationNorm::new(
            cfg.windows_per_electrode(),
            n_e,
            stats,
            cfg.prior_presentations,
            cfg.calibration_presentations,
        );
        let now = Instant::now();
        WindowAssembler {
            span_end: cfg.span_end().seconds(),
            values: vec![0.0; capacity * cfg.channel_count],
            meta: vec![
                SampleMeta {
                    lsl_time: f64::NEG_INFINITY,
                    arrival: now,
                    transport_delay: 0.0,
                };
                capacity
            ],
            capacity,
            head: 0,
            len: 0,
            period,
            norm,
            pending: vec![
                Onset {
                    lsl_time: 0.0,
                    image: ImageId::new(""),
                };
                cfg.max_pending
            ],
            pending_head: 0,
            pending_len: 0,
            next_slide: None,
            seq: 0,
            ranges: Vec::with_capacity(max_windows + 1),
            acc: vec![0.0; n_e],
            raw: vec![0.0; cfg.windows_per_electrode() * n_e],
            raw_baseline: vec![0.0; n_e],
            all_electrodes: (0..n_e).collect(),
            groups,
            cfg,
        }
    }

    pub fn config(&self) -> &AssemblerConfig {
        &self.cfg
    }

    /// A frame buffer of the right shape for [`Self::next_frame`].
    pub fn new_frame(&self) -> FeatureFrame {
        FeatureFrame::new(self.cfg.windows_per_electrode(), self.cfg.n_electrodes())
    }

    /// The current normalisation statistics.
    pub fn norm_stats(&self) -> NormStats {
        self.norm.stats()
    }

    /// Appends one sample (all channels). Counts gaps and non-monotonic time.
    pub fn push_sample(&mut self, values: &[f32], meta: SampleMeta, counters: &Counters) {
        debug_assert_eq!(values.len(), self.cfg.channel_count);
        if self.len > 0 {
            let newest = self.meta[(self.head + self.capacity - 1) % self.capacity].lsl_time;
            let dt = meta.lsl_time - newest;
            if dt > 1.5 * self.period || dt <= 0.0 {
                Counters::inc(&counters.gaps);
            }
            if dt <= 0.0 {
                // Time went backwards (clock reset or a restarted stream): start over,
                // pending onsets included, since they no longer fit the timeline.
                self.len = 0;
                Counters::add(&counters.onsets_dropped_reset, self.pending_len as u64);
                self.pending_len = 0;
                self.next_slide = None;
            }
        }
        let row = self.head * self.cfg.channel_count;
        self.values[row..row + self.cfg.channel_count].copy_from_slice(values);
        self.meta[self.head] = meta;
        self.head = (self.head + 1) % self.capacity;
        self.len = (self.len + 1).min(self.capacity);
    }

    /// Queues a stimulus onset (event mode). Returns false (and counts it) if the
    /// queue of waiting onsets is full.
    pub fn push_onset(&mut self, onset: Onset, counters: &Counters) -> bool {
        if self.pending_len == self.pending.len() {
            Counters::inc(&counters.marker_overruns);
            return false;
        }
        let i = (self.pending_head + self.pending_len) % self.pending.len();
        self.pending[i] = onset;
        self.pending_len += 1;
        true
    }

    fn time_at(&self, i: usize) -> f64 {
        self.meta[self.row_at(i)].lsl_time
    }

    /// The ring row of logical index `i` (0 = the oldest sample in the history).
    fn row_at(&self, i: usize) -> usize {
        (self.head + self.capacity - self.len + i) % self.capacity
    }

    /// First logical index whose time is >= t.
    fn lower_bound(&self, t: f64) -> usize {
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.time_at(mid) < t {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn newest_time(&self) -> Option<f64> {
        (self.len > 0).then(|| self.time_at(self.len - 1))
    }

    /// If a frame is complete, fills `out` and says so; call again until `Pending`.
    pub fn next_frame(&mut self, out: &mut FeatureFrame, counters: &Counters) -> FrameStatus {
        let Some(newest) = self.newest_time() else {
            return FrameStatus::Pending;
        };
        let (onset, image) = match self.cfg.mode {
            Mode::Event => {
                if self.pending_len == 0 {
                    return FrameStatus::Pending;
                }
                let o = self.pending[self.pending_head];
                // Complete once the last sample inside the latest window has arrived.
                if newest < o.lsl_time + self.span_end - self.period * 1.001 {
                    return FrameStatus::Pending;
                }
                self.pending_head = (self.pending_head + 1) % self.pending.len();
                self.pending_len -= 1;
                (o.lsl_time, Some(o.image))
            }
            Mode::Sliding => {
                let next = *self.next_slide.get_or_insert(newest);
                if newest < next {
                    return FrameStatus::Pending;
                }
                let hop = self.cfg.hop.seconds();
                // Catch up without a burst: one frame per call, never behind by more than a hop.
                self.next_slide = Some(if newest - next > hop {
                    newest + hop
                } else {
                    next + hop
                });
                (newest + self.period * 0.5 - self.span_end, None)
            }
        };
        let status = self.fill(onset, image.is_some(), out);
        match status {
            FrameStatus::Ready => {
                self.seq += 1;
                out.seq = self.seq;
                out.onset_lsl = onset;
                out.image = image;
                out.ready_at = Instant::now();
                Counters::inc(&counters.frames_built);
            }
            FrameStatus::Skipped(SkipReason::Gap) => Counters::inc(&counters.frames_skipped_gap),
            FrameStatus::Skipped(SkipReason::BadSamples) => {
                Counters::inc(&counters.frames_skipped_bad)
            }
            FrameStatus::Skipped(SkipReason::Late) => Counters::inc(&counters.frames_skipped_late),
            FrameStatus::Pending => {}
        }
        status
    }

    /// Sample range `[lo, hi)` of a window, or why it cannot be used.
    fn range(&self, onset: f64, w: Window) -> Result<(usize, usize), SkipReason> {
        let t0 = onset + w.start.seconds();
        let t1 = onset + w.end().seconds();
        // A tolerance of a tenth of a period absorbs timestamp jitter at the edges.
        let tol = self.period * 0.1;
        if self.time_at(0) > t0 + self.period - tol {
            return Err(SkipReason::Late);
        }
        let lo = self.lower_bound(t0 - tol);
        let hi = self.lower_bound(t1 - tol);
        let expected = w.len.seconds() / self.period;
        if ((hi - lo) as f64) < (expected * self.cfg.min_coverage).floor().max(1.0) {
            return Err(SkipReason::Gap);
        }
        Ok((lo, hi))
    }

    /// Sums every electrode of `electrodes` over rows `[lo, hi)` into `acc`, walking
    /// the history row by row (channels are contiguous within a row).
    fn accumulate(&self, lo: usize, hi: usize, electrodes: &[usize], acc: &mut [f64]) {
        let ch = self.cfg.channel_count;
        for &e in electrodes {
            acc[e] = 0.0;
        }
        for i in lo..hi {
            let row = &self.values[self.row_at(i) * ch..][..ch];
            for &e in electrodes {
                acc[e] += row[self.cfg.electrode_channels[e]] as f64;
            }
        }
    }

    /// Builds the frame of `onset`. A presentation (`presentation`: an event-mode
    /// onset) adds its raw window means to the normalisation statistics after they
    /// z-scored it.
    fn fill(&mut self, onset: f64, presentation: bool, out: &mut FeatureFrame) -> FrameStatus {
        let n_e = self.cfg.n_electrodes();
        let mut acc = std::mem::take(&mut self.acc);
        let mut last_needed = 0usize;
        for gi in 0..self.groups.len() {
            self.ranges.clear();
            for wi in 0..self.groups[gi].windows.len() {
                match self.range(onset, self.groups[gi].windows[wi]) {
                    Ok(r) => {
                        last_needed = last_needed.max(r.1);
                        self.ranges.push(r);
                    }
                    Err(reason) => {
                        self.acc = acc;
                        return FrameStatus::Skipped(reason);
                    }
                }
            }
            let group = &self.groups[gi];
            for (k, &(lo, hi)) in self.ranges.iter().enumerate() {
                self.accumulate(lo, hi, &group.electrodes, &mut acc);
                for &e in &group.electrodes {
                    if !acc[e].is_finite() {
                        self.acc = acc;
                        return FrameStatus::Skipped(SkipReason::BadSamples);
                    }
                    self.raw[k * n_e + e] = acc[e] / (hi - lo) as f64;
                }
            }
        }
        // Z-scored with the statistics before this presentation joins them (an outlier
        // would otherwise widen its own SD).
        self.norm.z_all(&self.raw, &mut out.features);
        if presentation {
            self.norm.add(&self.raw);
        }
        // The baseline: a frame whose baseline is gone or broken is still usable, so
        // a missing baseline is written as 0 (the normalised mean), not skipped.
        let mut baseline = false;
        if let Ok((lo, hi)) = self.range(onset, self.cfg.baseline) {
            self.accumulate(lo, hi, &self.all_electrodes, &mut acc);
            for (r, sum) in self.raw_baseline.iter_mut().zip(&acc) {
                *r = sum / (hi - lo) as f64;
            }
            baseline = self.raw_baseline.iter().all(|m| m.is_finite());
        }
        if baseline {
            for (e, (b, &m)) in out.baseline.iter_mut().zip(&self.raw_baseline).enumerate() {
                *b = self.norm.z_baseline(e, m);
            }
            if presentation {
                self.norm.add_baseline(&self.raw_baseline);
            }
        } else {
            out.baseline.iter_mut().for_each(|b| *b = 0.0);
        }
        self.acc = acc;
        let last = self.meta[self.row_at(last_needed.max(1) - 1)];
        out.last_arrival = last.arrival;
        out.transport_delay = last.transport_delay;
        FrameStatus::Ready
    }
}
