//! Clock synchronisation and jitter removal, as pyxdf's `load_xdf` does them.
//!
//! A stream's ClockOffset chunks measure, every few seconds, how far the recording
//! machine's clock is ahead of the stream's. pyxdf splits those measurements where the
//! stream's clock was reset (`_detect_clock_resets`), fits a robust line (Huber loss,
//! ADMM) through each piece (`_robust_fit`), and adds the fitted offset to every time
//! stamp of the piece (`_clock_sync`). This module does the same, sample by sample, so
//! it also works on a stream that does not fit in memory once its offsets are known.

/// One clock offset measurement: at `collection_time` (stream clock, seconds) the
/// recording machine's clock was `value` seconds ahead of the stream's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockOffset {
    pub collection_time: f64,
    pub value: f64,
}

/// Inclusive first and last index of a run of samples (or of clock offsets), as pyxdf's
/// `segments` and `clock_segments` list them.
pub type SampleRange = (usize, usize);

/// pyxdf's clock synchronisation parameters; `Default` is pyxdf's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SyncOptions {
    /// Split the offsets where the stream's clock was reset (`handle_clock_resets`).
    pub handle_clock_resets: bool,
    /// A reset needs an interval between offsets this many MADs from the median
    /// (`clock_reset_threshold_stds`, 5)…
    pub reset_threshold_stds: f64,
    /// …and this many seconds from it (`clock_reset_threshold_seconds`, 5)…
    pub reset_threshold_seconds: f64,
    /// …and a jump in offset value this many MADs from the median
    /// (`clock_reset_threshold_offset_stds`, 10)…
    pub reset_threshold_offset_stds: f64,
    /// …and this many seconds from it (`clock_reset_threshold_offset_seconds`, 1).
    /// An interval that runs backwards is always a reset.
    pub reset_threshold_offset_seconds: f64,
    /// Residuals above this many seconds count linearly, not squared
    /// (`winsor_threshold`, 0.0001).
    pub winsor_threshold: f64,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            handle_clock_resets: true,
            reset_threshold_stds: 5.0,
            reset_threshold_seconds: 5.0,
            reset_threshold_offset_stds: 10.0,
            reset_threshold_offset_seconds: 1.0,
            winsor_threshold: 0.0001,
        }
    }
}

/// pyxdf's jitter removal parameters; `Default` is pyxdf's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DejitterOptions {
    /// A gap of at least this many seconds… (`jitter_break_threshold_seconds`, 1)
    pub break_threshold_seconds: f64,
    /// …and this many nominal sample intervals starts a new segment
    /// (`jitter_break_threshold_samples`, 500).
    pub break_threshold_samples: f64,
}

impl Default for DejitterOptions {
    fn default() -> Self {
        DejitterOptions {
            break_threshold_seconds: 1.0,
            break_threshold_samples: 500.0,
        }
    }
}

/// Median as numpy computes it (mean of the middle two for an even count).
pub(crate) fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// pyxdf's `_segment_clock_diff`: differences far from the median both in MADs and in
/// seconds.
fn clock_diff_glitches(diff: &[f64], thresh_stds: f64, thresh_secs: f64) -> Vec<bool> {
    let med = median(diff);
    let shifted_abs: Vec<f64> = diff.iter().map(|d| (d - med).abs()).collect();
    let mad = median(&shifted_abs) + f64::EPSILON;
    diff.iter()
        .map(|d| {
            let shift = d - med;
            (shift / mad).abs() > thresh_stds && shift.abs() > thresh_secs
        })
        .collect()
}

/// pyxdf's `_find_segment_indices`: runs between breaks (a break at `i` ends a run at
/// `i` and starts the next at `i + 1`).
fn segments_between(breaks: &[bool]) -> Vec<SampleRange> {
    let mut segments = Vec::new();
    let mut start = 0;
    for (i, _) in breaks.iter().enumerate().filter(|(_, b)| **b) {
        segments.push((start, i));
        start = i + 1;
    }
    segments.push((start, breaks.len()));
    segments
}

/// pyxdf's `_detect_clock_resets`: the runs of clock offsets between clock resets.
/// Empty for no offsets; one run for a single offset.
pub fn detect_clock_resets(offsets: &[ClockOffset], options: &SyncOptions) -> Vec<SampleRange> {
    match offsets.len() {
        0 => return Vec::new(),
        1 => return vec![(0, 0)],
        _ => {}
    }
    let (time_diff, value_diff): (Vec<f64>, Vec<f64>) = offsets
        .windows(2)
        .map(|w| {
            (
                w[1].collection_time - w[0].collection_time,
                w[1].value - w[0].value,
            )
        })
        .unzip();
    let time_glitch = clock_diff_glitches(
        &time_diff,
        options.reset_threshold_stds,
        options.reset_threshold_seconds,
    );
    let value_glitch = clock_diff_glitches(
        &value_diff,
        options.reset_threshold_offset_stds,
        options.reset_threshold_offset_seconds,
    );
    let resets: Vec<bool> = (0..time_diff.len())
        .map(|i| time_diff[i] < 0.0 || (time_glitch[i] && value_glitch[i]))
        .collect();
    segments_between(&resets)
}

/// pyxdf's `_robust_fit` on `[1, t / w] → v / w`: intercept (seconds) and slope of the
/// offset as a line in stream time. `None` where numpy's Cholesky would fail (all
/// collection times equal), which pyxdf turns into a zero correction.
fn robust_fit(offsets: &[ClockOffset], winsor: f64) -> Option<(f64, f64)> {
    const ITERATIONS: usize = 1000;
    let n = offsets.len();
    let mut a: Vec<f64> = offsets.iter().map(|o| o.collection_time / winsor).collect();
    let y: Vec<f64> = offsets.iter().map(|o| o.value / winsor).collect();
    let shift = a.iter().copied().fold(f64::INFINITY, f64::min);
    a.iter_mut().for_each(|t| *t -= shift);

    // A'A = [[n, Σa], [Σa, Σa²]], its Cholesky factor L = [[l00, 0], [l10, l11]].
    let sum_a: f64 = a.iter().sum();
    let sum_aa: f64 = a.iter().map(|t| t * t).sum();
    let aty = (
        y.iter().sum::<f64>(),
        a.iter().zip(&y).map(|(t, v)| t * v).sum::<f64>(),
    );
    let l00 = (n as f64).sqrt();
    let l10 = sum_a / l00;
    let pivot = sum_aa - l10 * l10;
    if !(l00 > 0.0 && pivot > 0.0) {
        return None;
    }
    let l11 = pivot.sqrt();

    // ADMM with rho = 1 for the Huber loss.
    let mut z = vec![0.0; n];
    let mut u = vec![0.0; n];
    let (mut x0, mut x1) = (0.0, 0.0);
    for _ in 0..ITERATIONS {
        let mut r0 = 0.0;
        let mut r1 = 0.0;
        for i in 0..n {
            let zu = z[i] - u[i];
            r0 += zu;
            r1 += a[i] * zu;
        }
        let (r0, r1) = (aty.0 + r0, aty.1 + r1);
        // Solve L w = r, then L' x = w.
        let w0 = r0 / l00;
        let w1 = (r1 - l10 * w0) / l11;
        x1 = w1 / l11;
        x0 = (w0 - l10 * x1) / l00;
        for i in 0..n {
            let d = x0 + a[i] * x1 - y[i] + u[i];
            let d_inv = if d != 0.0 { 1.0 / d } else { 0.0 };
            let keep = (1.0 - 2.0 * d_inv.abs()).max(0.0);
            z[i] = 0.5 * d + 0.5 * keep * d;
            u[i] = d - z[i];
        }
    }
    x0 -= x1 * shift;
    Some((x0 * winsor, x1))
}

#[derive(Clone, Debug, PartialEq)]
struct Segment {
    intercept: f64,
    slope: f64,
    /// Collection time of this run's last offset.
    end_time: f64,
    /// Collection time of the next run's first offset; `None` for the last run.
    next_start: Option<f64>,
}

/// A stream's clock correction, built from all its clock offsets, applied to its time
/// stamps one at a time in file order.
///
/// A stamp belongs to the current run of offsets until a stamp is nearer the next run's
/// first offset than the current run's last one; from then on the next run applies
/// (pyxdf's assignment, which assumes stamps increase within each clock).
#[derive(Clone, Debug, PartialEq)]
pub struct ClockCorrection {
    segments: Vec<Segment>,
    current: usize,
}

impl ClockCorrection {
    /// The correction for these offsets (in file order); `None` when there are none,
    /// in which case stamps stay as they are.
    pub fn new(offsets: &[ClockOffset], options: &SyncOptions) -> Option<ClockCorrection> {
        if offsets.is_empty() {
            return None;
        }
        let runs = if options.handle_clock_resets && offsets.len() > 1 {
            detect_clock_resets(offsets, options)
        } else {
            vec![(0, offsets.len() - 1)]
        };
        let segments = runs
            .iter()
            .map(|&(first, last)| {
                let (intercept, slope) = if first != last {
                    robust_fit(&offsets[first..=last], options.winsor_threshold)
                        .unwrap_or((0.0, 0.0))
                } else {
                    (offsets[first].value, 0.0)
                };
                Segment {
                    intercept,
                    slope,
                    end_time: offsets[last].collection_time,
                    next_start: offsets.get(last + 1).map(|o| o.collection_time),
                }
            })
            .collect();
        Some(ClockCorrection {
            segments,
            current: 0,
        })
    }

    /// Corrects the next stamp of the stream.
    pub fn correct(&mut self, stamp: f64) -> f64 {
        while let Some(next_start) = self.segments[self.current].next_start {
            let end_time = self.segments[self.current].end_time;
            if (stamp - end_time).abs() < (stamp - next_start).abs() {
                break;
            }
            self.current += 1;
        }
        let segment = &self.segments[self.current];
        stamp + (segment.intercept + segment.slope * stamp)
    }

    /// Index of the run of offsets the last corrected stamp fell in.
    pub fn current_segment(&self) -> usize {
        self.current
    }

    /// Number of runs of offsets (clock resets + 1).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

/// pyxdf's `_clock_sync` on one stream: corrects `stamps` in place and returns its
/// `clock_segments` (the samples each run of offsets corrected; runs without samples
/// are left out). Without stamps or offsets nothing changes and the list is empty.
pub fn synchronize(
    stamps: &mut [f64],
    offsets: &[ClockOffset],
    options: &SyncOptions,
) -> Vec<SampleRange> {
    if stamps.is_empty() {
        return Vec::new();
    }
    let Some(mut correction) = ClockCorrection::new(offsets, options) else {
        return Vec::new();
    };
    let mut segments = Vec::new();
    let mut start = 0;
    let mut segment = correction.current_segment();
    for (i, stamp) in stamps.iter_mut().enumerate() {
        *stamp = correction.correct(*stamp);
        if correction.current_segment() != segment {
            if i > start {
                segments.push((start, i - 1));
            }
            start = i;
            segment = correction.current_segment();
        }
    }
    segments.push((start, stamps.len() - 1));
    segments
}

/// pyxdf's `_jitter_removal` on one stream: splits the stamps at gaps, replaces each
/// run by a least-squares line through it, and returns the runs and the effective
/// sampling rate. Irregular streams (rate 0) and streams whose header says
/// `can_drop_samples` keep their stamps.
pub fn dejitter(
    stamps: &mut [f64],
    nominal_srate: f64,
    can_drop_samples: bool,
    options: &DejitterOptions,
) -> (Vec<SampleRange>, f64) {
    let n = stamps.len();
    if n == 0 {
        return (Vec::new(), 0.0);
    }
    if nominal_srate == 0.0 {
        return (vec![(0, n - 1)], 0.0);
    }
    if can_drop_samples {
        let duration = stamps[n - 1] - stamps[0];
        let rate = if n > 1 && duration > 0.0 {
            (n - 1) as f64 / duration
        } else {
            0.0
        };
        return (vec![(0, n - 1)], rate);
    }
    let tdiff = 1.0 / nominal_srate;
    let threshold = options
        .break_threshold_seconds
        .max(options.break_threshold_samples * tdiff);
    let breaks: Vec<bool> = stamps
        .windows(2)
        .map(|w| (w[1] - w[0]).abs() > threshold)
        .collect();
    let segments = segments_between(&breaks);
    let (mut samples, mut duration) = (0.0, 0.0);
    for &(first, last) in &segments {
        fit_line(&mut stamps[first..=last], first);
        samples += (last - first) as f64;
        duration += stamps[last] - stamps[first];
    }
    let rate = if segments.iter().any(|(f, l)| l > f) {
        samples / duration
    } else {
        0.0
    };
    (segments, rate)
}

/// Replaces `stamps` (sample indices `first..`) by their least-squares line in index.
fn fit_line(stamps: &mut [f64], first: usize) {
    let n = stamps.len();
    if n < 2 {
        return;
    }
    let mean_i = first as f64 + (n - 1) as f64 / 2.0;
    let mean_t = stamps.iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (k, t) in stamps.iter().enumerate() {
        let di = (first + k) as f64 - mean_i;
        sxy += di * (t - mean_t);
        sxx += di * di;
    }
    let slope = sxy / sxx;
    for (k, t) in stamps.iter_mut().enumerate() {
        *t = mean_t + slope * ((first + k) as f64 - mean_i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(times: &[f64], values: &[f64]) -> Vec<ClockOffset> {
        times
            .iter()
            .zip(values)
            .map(|(&collection_time, &value)| ClockOffset {
                collection_time,
                value,
            })
            .collect()
    }

    #[test]
    fn median_matches_numpy_for_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    // Cases from pyxdf's test_detect_clock_resets.py.
    #[test]
    fn forward_jump_in_time_and_value_is_a_reset() {
        let o = offsets(&[-6.0, 5.0, 10.0, 15.0, 20.0], &[6.0, 0.0, 0.0, 0.0, 0.0]);
        let mut opt = SyncOptions {
            reset_threshold_offset_seconds: 5.0,
            ..SyncOptions::default()
        };
        assert_eq!(detect_clock_resets(&o, &opt), vec![(0, 0), (1, 4)]);
        opt.reset_threshold_offset_seconds = 6.0;
        assert_eq!(detect_clock_resets(&o, &opt), vec![(0, 4)]);
    }

    #[test]
    fn backward_time_is_always_a_reset() {
        let o = offsets(&[6.0, 5.0, 10.0, 15.0, 20.0], &[-6.0, 0.0, 0.0, 0.0, 0.0]);
        let opt = SyncOptions {
            reset_threshold_stds: f64::INFINITY,
            reset_threshold_seconds: f64::INFINITY,
            reset_threshold_offset_stds: f64::INFINITY,
            reset_threshold_offset_seconds: f64::INFINITY,
            ..SyncOptions::default()
        };
        assert_eq!(detect_clock_resets(&o, &opt), vec![(0, 0), (1, 4)]);
    }

    // pyxdf's test_clock_sync.py: test_sync_clock_jumps_forward_break_at_reset and
    // test_sync_clock_jumps_backward_break_between_reset.
    #[test]
    fn stamps_follow_the_nearest_run_of_offsets() {
        let o = offsets(&[1.0, 6.0, 17.0, 22.0], &[-1.0, -1.0, -12.0, -12.0]);
        let mut t = [1.0, 2.0, 3.0, 4.0, 5.0, 17.0, 18.0, 19.0, 20.0, 21.0];
        let segments = synchronize(&mut t, &o, &SyncOptions::default());
        for (k, v) in t.iter().enumerate() {
            assert!((v - k as f64).abs() < 1e-9, "{t:?}");
        }
        assert_eq!(segments, vec![(0, 4), (5, 9)]);

        let o = offsets(&[17.0, 22.0, 1.0, 6.0], &[-12.0, -12.0, 9.0, 9.0]);
        let mut t: Vec<f64> = (17..25).chain(1..9).map(f64::from).collect();
        let want: Vec<f64> = (5..13).chain(10..18).map(f64::from).collect();
        let segments = synchronize(&mut t, &o, &SyncOptions::default());
        for (got, want) in t.iter().zip(&want) {
            assert!((got - want).abs() < 1e-9, "{t:?}");
        }
        assert_eq!(segments, vec![(0, 7), (8, 15)]);
    }

    // pyxdf's test_clock_sync_error_skip_segment: a run whose offsets cannot be fitted
    // corrects by zero, and a run without samples is left out.
    #[test]
    fn unfittable_run_without_samples_is_skipped() {
        let o = offsets(&[0.0, 0.0, 10.0, 15.0], &[0.0, 0.0, 10.0, 10.0]);
        let opt = SyncOptions {
            reset_threshold_stds: 0.0,
            reset_threshold_seconds: 4.0,
            reset_threshold_offset_stds: 0.0,
            reset_threshold_offset_seconds: 9.0,
            ..SyncOptions::default()
        };
        let mut t: Vec<f64> = (5..15).map(f64::from).collect();
        let segments = synchronize(&mut t, &o, &opt);
        for (k, v) in t.iter().enumerate() {
            assert!((v - (15 + k) as f64).abs() < 1e-9, "{t:?}");
        }
        assert_eq!(segments, vec![(0, 9)]);
    }

    #[test]
    fn robust_fit_matches_pyxdf_with_an_outlier() {
        let times: Vec<f64> = (0..20).map(|k| 1000.0 + 5.0 * k as f64).collect();
        let mut values: Vec<f64> = times.iter().map(|t| 0.25 + 1e-6 * (t - 1000.0)).collect();
        values[7] += 0.5;
        let (c0, c1) = robust_fit(&offsets(&times, &values), 1e-4).unwrap();
        // pyxdf 1.17.5 `_robust_fit` on the same data.
        assert!(
            (c0 - 0.249_089_048_760_993_33).abs() < 1e-12,
            "intercept {c0}"
        );
        assert!(
            (c1 / 9.200_639_488_389_16e-7 - 1.0).abs() < 1e-9,
            "slope {c1}"
        );
    }

    #[test]
    fn dejitter_fits_a_line_per_segment() {
        let mut t = vec![0.0, 0.11, 0.19, 0.3, 10.0, 10.1];
        let (segments, rate) = dejitter(&mut t, 1000.0, false, &DejitterOptions::default());
        assert_eq!(segments, vec![(0, 3), (4, 5)]);
        assert!((t[1] - t[0] - (t[3] - t[2])).abs() < 1e-12);
        assert!((rate - 4.0 / (t[3] - t[0] + t[5] - t[4])).abs() < 1e-12);
    }
}
