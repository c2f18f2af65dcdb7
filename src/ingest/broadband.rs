//! Broadband → MUA, online: the TVSD extraction as causal filters.
//!
//! TVSD (Papale et al. 2025, Neuron) made its MUA from the 30 kHz broadband signal by
//! band-passing it (500–9000 Hz), rectifying it (absolute value), low-passing it
//! (200 Hz) and downsampling it to 1 kHz. [`MuaExtractor`] does the same, sample by
//! sample, as Butterworth filters in second-order sections (transposed direct form
//! II): band-pass, `|x|`, low-pass, then every `decimation`-th filtered sample is one
//! MUA sample.
//!
//! Offline pipelines usually filter forwards and backwards (zero phase, which also
//! squares the magnitude response: −6 dB at the cut-offs where one causal pass gives
//! −3 dB). Online filters can only look back, so the MUA lags a zero-phase one by the
//! low-pass's group delay, [`MuaExtractor::group_delay_s`] (2.1 ms for the default
//! 4th-order 200 Hz low-pass, taken at 10 Hz, where stimulus responses live), which the
//! ingest subtracts from the stamps when `compensate_delay` is set. The band-pass's own
//! sub-millisecond delay is not compensated. The MUA is in the raw stream's units (ADC
//! counts for an int16 stream): a model trained on MUA from another pipeline needs the
//! session's own statistics (`run --calibrate N`).
//!
//! Filter design is `sci-rs`'s port of scipy's `butter(…, output='sos')`; the
//! coefficients are then what `scipy.signal.butter` gives (checked in the tests against
//! scipy itself).
//!
//! Layout: a row is one sample of every channel (LSL's `[samples][channels]`), and each
//! section runs over a whole row, so the inner loop is over channels, with no
//! dependency between iterations: the compiler vectorises it (SSE2 on any x86-64,
//! AVX2 where the CPU has it, picked at run time). Samples arrive and leave as `f32`;
//! the filters compute in `f64` (two state values per channel and section), so even
//! high orders at low cut-offs stay stable, and the result agrees with scipy's float64
//! filtering to the output's float32 rounding. At 1024 channels × 30 kHz that costs a
//! few percent of one core (`cargo bench --bench pipeline -- broadband`).
//!
//! A non-finite input sample (NaN, ±Inf) would poison a recursive filter for good: the
//! channel's filters restart from rest at the next output sample. A filter started from
//! rest needs time to settle (the low-pass ramps up from 0), so a channel's MUA is NaN
//! from the bad sample until [`MuaExtractor::settle_rows`] output samples after the
//! restart (25 ms for the default low-pass), and the window stage skips (and counts)
//! the frames that touch them. The same holds for every channel when the extractor
//! starts (a new stream, or a switch to another).
//!
//! Real-time contract: [`MuaExtractor::new`] allocates; [`MuaExtractor::process`] never
//! allocates, locks or prints.

use crate::config::BroadbandConfig;

/// One second-order section, `a0 = 1`, with each channel's two state values.
struct Section {
    b: [f64; 3],
    a: [f64; 2],
    s1: Vec<f64>,
    s2: Vec<f64>,
}

/// A second-order section's coefficients `[b0, b1, b2, a0, a1, a2]` (scipy's `sos` rows).
pub type SosRow = [f64; 6];

/// The filters' coefficients, as scipy's `sos` arrays.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterDesign {
    pub band: Vec<SosRow>,
    pub lowpass: Vec<SosRow>,
}

/// Why a filter cannot be designed from a config.
#[derive(Debug, thiserror::Error)]
pub enum DesignError {
    #[error("the broadband rate {rate} Hz is not a whole multiple of the MUA rate {mua} Hz (decimation must be an integer)")]
    Decimation { rate: f64, mua: f64 },
    #[error("the filter design gave no second-order sections ({0})")]
    Empty(&'static str),
}

/// Designs the band-pass and low-pass Butterworth filters of `cfg` (scipy's
/// `butter(order, band, 'bandpass', fs=rate, output='sos')` and
/// `butter(order, cutoff, fs=rate, output='sos')`).
pub fn design(cfg: &BroadbandConfig) -> Result<FilterDesign, DesignError> {
    use sci_rs::signal::filter::design::{
        butter_dyn, DigitalFilter, FilterBandType, FilterOutputType,
    };
    let sos = |filter: DigitalFilter<f64>| -> Vec<SosRow> {
        match filter {
            DigitalFilter::Sos(s) => s
                .sos
                .iter()
                .map(|q| [q.b[0], q.b[1], q.b[2], q.a[0], q.a[1], q.a[2]])
                .collect(),
            _ => Vec::new(),
        }
    };
    let butterworth = |order, edges, band| {
        let (sos_out, rate) = (Some(FilterOutputType::Sos), Some(cfg.sampling_rate_hz));
        sos(butter_dyn(
            order,
            edges,
            Some(band),
            Some(false),
            sos_out,
            rate,
        ))
    };
    let band = butterworth(
        cfg.band_order,
        cfg.band_hz.to_vec(),
        FilterBandType::Bandpass,
    );
    let lowpass = butterworth(
        cfg.lowpass_order,
        vec![cfg.lowpass_hz],
        FilterBandType::Lowpass,
    );
    if band.is_empty() {
        return Err(DesignError::Empty("band-pass"));
    }
    if lowpass.is_empty() {
        return Err(DesignError::Empty("low-pass"));
    }
    Ok(FilterDesign { band, lowpass })
}

/// Group delay in samples of a cascade of sections at normalised frequency `w`
/// (radians per sample), from the phase slope (central difference).
fn group_delay_samples(sos: &[SosRow], w: f64) -> f64 {
    let phase = |w: f64| -> f64 {
        sos.iter()
            .map(|s| {
                let h = |c: [f64; 3]| {
                    let (re, im) = (
                        c[0] + c[1] * w.cos() + c[2] * (2.0 * w).cos(),
                        -(c[1] * w.sin() + c[2] * (2.0 * w).sin()),
                    );
                    im.atan2(re)
                };
                h([s[0], s[1], s[2]]) - h([s[3], s[4], s[5]])
            })
            .sum()
    };
    let dw = 1e-6;
    -(phase(w + dw) - phase(w - dw)) / (2.0 * dw)
}

/// The online broadband → MUA extractor for every channel of a stream.
pub struct MuaExtractor {
    channels: usize,
    decimation: usize,
    /// Input rows since the last output row.
    phase: usize,
    band: Vec<Section>,
    lowpass: Vec<Section>,
    /// The row being filtered.
    work: Vec<f64>,
    /// Per channel: output rows still to send as NaN while its filters settle.
    settling: Vec<u32>,
    settle_rows: u32,
    group_delay_s: f64,
    simd: Simd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Simd {
    Baseline,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl MuaExtractor {
    /// An extractor for `channels` channels at `cfg.sampling_rate_hz`, giving MUA at
    /// `mua_hz`, with every filter at rest.
    pub fn new(cfg: &BroadbandConfig, channels: usize, mua_hz: f64) -> Result<Self, DesignError> {
        let d = design(cfg)?;
        let decimation = cfg.decimation(mua_hz).ok_or(DesignError::Decimation {
            rate: cfg.sampling_rate_hz,
            mua: mua_hz,
        })?;
        let sections = |rows: &[SosRow]| -> Vec<Section> {
            rows.iter()
                .map(|r| Section {
                    b: [r[0], r[1], r[2]].map(|v| v / r[3]),
                    a: [r[4], r[5]].map(|v| v / r[3]),
                    s1: vec![0.0; channels],
                    s2: vec![0.0; channels],
                })
                .collect()
        };
        // The envelope's delay: the low-pass's at a slow frequency (10 Hz), where the
        // MUA's stimulus responses live.
        let w = 2.0 * std::f64::consts::PI * 10.0 / cfg.sampling_rate_hz;
        let group_delay_s = group_delay_samples(&d.lowpass, w) / cfg.sampling_rate_hz;
        // Five time constants of the low-pass's slowest pole pair (per pair ≈ 1 / (2 fc)):
        // its step response is then within ~1 %.
        let pairs = (cfg.lowpass_order as f64 / 2.0).ceil();
        let settle_s = 5.0 * pairs / (2.0 * cfg.lowpass_hz);
        let settle_rows = (settle_s * mua_hz).ceil().max(1.0) as u32;
        Ok(MuaExtractor {
            channels,
            decimation,
            phase: 0,
            band: sections(&d.band),
            lowpass: sections(&d.lowpass),
            work: vec![0.0; channels],
            settling: vec![settle_rows; channels],
            settle_rows,
            group_delay_s,
            simd: Simd::detect(),
        })
    }

    /// MUA samples sent as NaN after a channel's filters (re)start.
    pub fn settle_rows(&self) -> u32 {
        self.settle_rows
    }

    pub fn decimation(&self) -> usize {
        self.decimation
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// How far (seconds) the MUA's slow envelope lags the input, from the low-pass.
    pub fn group_delay_s(&self) -> f64 {
        self.group_delay_s
    }

    /// Whether the AVX2 kernel runs (else the baseline SSE2 one).
    pub fn uses_avx2(&self) -> bool {
        self.simd != Simd::Baseline
    }

    /// Filters `n` input rows (`input`: `[n][channels]`) and writes one MUA row into
    /// `out` (`[rows][channels]`) for every `decimation` input rows, with the index of
    /// the input row it stands for in `taken`. Returns the rows written. `out` and
    /// `taken` need room for `n / decimation + 1` rows. Never allocates.
    pub fn process(
        &mut self,
        input: &[f32],
        n: usize,
        out: &mut [f32],
        taken: &mut [usize],
    ) -> usize {
        let ch = self.channels;
        let mut written = 0;
        for (r, row) in input[..n * ch].chunks_exact(ch).enumerate() {
            self.filter_row(row);
            self.phase += 1;
            if self.phase == self.decimation {
                self.phase = 0;
                self.restart_poisoned();
                let row = &mut out[written * ch..(written + 1) * ch];
                for ((o, &w), settling) in row.iter_mut().zip(&self.work).zip(&mut self.settling) {
                    if *settling > 0 {
                        *settling -= 1;
                        *o = f32::NAN;
                    } else {
                        *o = w as f32;
                    }
                }
                taken[written] = r;
                written += 1;
            }
        }
        written
    }

    /// Runs one row through band-pass, rectifier and low-pass, into `work`.
    fn filter_row(&mut self, row: &[f32]) {
        match self.simd {
            // SAFETY: `Simd::detect` chose this only where the CPU has AVX2.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => unsafe {
                filter_row_avx2(row, &mut self.work, &mut self.band, &mut self.lowpass)
            },
            Simd::Baseline => {
                filter_row_generic(row, &mut self.work, &mut self.band, &mut self.lowpass)
            }
        }
    }

    /// Restarts from rest the channels whose filtered value went non-finite (a NaN or
    /// Inf arrived since the last output row); they settle again.
    fn restart_poisoned(&mut self) {
        for c in 0..self.channels {
            if !self.work[c].is_finite() {
                for s in self.band.iter_mut().chain(self.lowpass.iter_mut()) {
                    s.s1[c] = 0.0;
                    s.s2[c] = 0.0;
                }
                // This row goes out as NaN too, before the settling rows.
                self.settling[c] = self.settle_rows + 1;
            }
        }
    }
}

impl Simd {
    fn detect() -> Simd {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Simd::Avx2;
        }
        Simd::Baseline
    }
}

/// Band-pass → |x| → low-pass over one row. Inlined into each SIMD variant.
#[inline(always)]
fn filter_row_generic(
    row: &[f32],
    work: &mut [f64],
    band: &mut [Section],
    lowpass: &mut [Section],
) {
    for (w, &x) in work.iter_mut().zip(row) {
        *w = f64::from(x);
    }
    for s in band.iter_mut() {
        s.run(work);
    }
    for v in work.iter_mut() {
        *v = v.abs();
    }
    for s in lowpass.iter_mut() {
        s.run(work);
    }
}

/// [`filter_row_generic`] compiled for AVX2 (4 channels per instruction).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn filter_row_avx2(
    row: &[f32],
    work: &mut [f64],
    band: &mut [Section],
    lowpass: &mut [Section],
) {
    filter_row_generic(row, work, band, lowpass)
}

impl Section {
    /// Filters one row in place: for each channel `y = b0 x + s1; s1 = b1 x − a1 y + s2;
    /// s2 = b2 x − a2 y`.
    #[inline(always)]
    fn run(&mut self, x: &mut [f64]) {
        let [b0, b1, b2] = self.b;
        let [a1, a2] = self.a;
        let n = x.len();
        let (s1, s2) = (&mut self.s1[..n], &mut self.s2[..n]);
        for i in 0..n {
            let xi = x[i];
            // Plain products and sums (no `mul_add`: without FMA hardware it is a
            // library call), so both kernels give the same numbers.
            let y = b0 * xi + s1[i];
            s1[i] = b1 * xi - a1 * y + s2[i];
            s2[i] = b2 * xi - a2 * y;
            x[i] = y;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BroadbandConfig {
        BroadbandConfig::default()
    }

    #[test]
    fn default_filters_have_the_expected_shape() {
        let d = design(&cfg()).unwrap();
        // Order-2 band-pass: 4 poles, 2 sections; order-4 low-pass: 2 sections.
        assert_eq!(d.band.len(), 2);
        assert_eq!(d.lowpass.len(), 2);
        // Unit gain: the low-pass at DC, the band-pass near its centre.
        let gain = |sos: &[SosRow], w: f64| -> f64 {
            sos.iter()
                .map(|s| {
                    let m = |c: [f64; 3]| {
                        let re = c[0] + c[1] * w.cos() + c[2] * (2.0 * w).cos();
                        let im = c[1] * w.sin() + c[2] * (2.0 * w).sin();
                        re.hypot(im)
                    };
                    m([s[0], s[1], s[2]]) / m([s[3], s[4], s[5]])
                })
                .product()
        };
        assert!((gain(&d.lowpass, 0.0) - 1.0).abs() < 1e-9);
        // The band's centre: the geometric mean of the pre-warped edges.
        let w = |f: f64| 2.0 * std::f64::consts::PI * f / 30_000.0;
        let centre = 2.0
            * ((w(500.0) / 2.0).tan() * (w(9000.0) / 2.0).tan())
                .sqrt()
                .atan();
        assert!((gain(&d.band, centre) - 1.0).abs() < 1e-6);
        // −3 dB at the cut-offs.
        let half_power = std::f64::consts::FRAC_1_SQRT_2;
        assert!((gain(&d.lowpass, w(200.0)) - half_power).abs() < 1e-6);
        assert!((gain(&d.band, w(500.0)) - half_power).abs() < 1e-6);
        assert!((gain(&d.band, w(9000.0)) - half_power).abs() < 1e-6);
    }

    #[test]
    fn decimation_must_be_whole() {
        let at = |rate| BroadbandConfig {
            sampling_rate_hz: rate,
            ..cfg()
        };
        assert_eq!(at(30_000.0).decimation(1000.0), Some(30));
        assert!(at(30_000.0).decimation(700.0).is_none());
        assert!(at(500.0).decimation(1000.0).is_none());
        assert!(MuaExtractor::new(&at(30_000.0), 4, 700.0).is_err());
    }

    #[test]
    fn the_group_delay_is_the_butterworths() {
        // A 4th-order Butterworth low-pass delays slow signals by 2.613 / ωc
        // (the sum of 1/sin of its pole angles over ωc).
        let x = MuaExtractor::new(&cfg(), 4, 1000.0).unwrap();
        let expected = 2.6131 / (2.0 * std::f64::consts::PI * 200.0);
        assert!(
            (x.group_delay_s() - expected).abs() < 0.03 * expected,
            "{}",
            x.group_delay_s()
        );
    }

    #[test]
    fn a_tone_in_band_gives_its_rectified_mean_and_one_row_per_decimation() {
        // A 2 kHz sine of amplitude 1 is in band; |sin| averages 2/π.
        let ch = 3;
        let mut x = MuaExtractor::new(&cfg(), ch, 1000.0).unwrap();
        let n = 30_000;
        let mut input = vec![0.0f32; n * ch];
        for i in 0..n {
            let v = (2.0 * std::f64::consts::PI * 2000.0 * i as f64 / 30_000.0).sin() as f32;
            input[i * ch..(i + 1) * ch].copy_from_slice(&[v, 2.0 * v, 0.0]);
        }
        let mut out = vec![0.0f32; (n / 30 + 1) * ch];
        let mut taken = vec![0usize; n / 30 + 1];
        let rows = x.process(&input, n, &mut out, &mut taken);
        assert_eq!(rows, 1000);
        assert_eq!(taken[0], 29);
        assert_eq!(taken[999], n - 1);
        let last = &out[999 * ch..1000 * ch];
        let mean = 2.0 / std::f32::consts::PI;
        assert!((last[0] - mean).abs() < 0.01 * mean, "{last:?}");
        assert!((last[1] - 2.0 * mean).abs() < 0.02 * mean, "{last:?}");
        assert_eq!(last[2], 0.0);
    }

    #[test]
    fn a_nan_costs_the_settling_time_and_the_channel_recovers() {
        let ch = 2;
        let mut x = MuaExtractor::new(&cfg(), ch, 1000.0).unwrap();
        let n = 3000;
        let mut input = vec![0.0f32; n * ch];
        for i in 0..n {
            let v = (2.0 * std::f64::consts::PI * 2000.0 * i as f64 / 30_000.0).sin() as f32;
            input[i * ch..(i + 1) * ch].copy_from_slice(&[v, v]);
        }
        input[1000 * ch] = f32::NAN;
        let mut out = vec![0.0f32; (n / 30 + 1) * ch];
        let mut taken = vec![0usize; n / 30 + 1];
        let rows = x.process(&input, n, &mut out, &mut taken);
        let settle = x.settle_rows() as usize;
        assert_eq!(
            settle, 25,
            "5 time constants of the 200 Hz low-pass's two pole pairs"
        );
        let bad: Vec<usize> = (0..rows).filter(|&r| !out[r * ch].is_finite()).collect();
        let hit = 1000 / 30;
        let expected: Vec<usize> = (0..settle).chain(hit..=hit + settle).collect();
        assert_eq!(
            bad, expected,
            "start-up, then the NaN's row and the settling after it"
        );
        let good: Vec<usize> = (0..rows).filter(|&r| out[r * ch + 1].is_finite()).collect();
        assert_eq!(
            good,
            (settle..rows).collect::<Vec<_>>(),
            "the other channel: start-up only"
        );
        // Settled: the first row after the NaN's settling is within 1 % of the other's.
        let r = hit + settle + 1;
        assert!(
            (out[r * ch] - out[r * ch + 1]).abs() < 0.01 * out[r * ch + 1],
            "{} {}",
            out[r * ch],
            out[r * ch + 1]
        );
    }
}
