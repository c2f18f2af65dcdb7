//! The one normalisation estimator, the same offline (`train`, `eval`) and online (the
//! daemon's window stage).
//!
//! A decoder input is, per electrode and latency window, the mean MUA in the window,
//! z-scored. The statistics are those of that very quantity — per electrode *and
//! window* — over stimulus presentations of one session (TVSD: one recording day).
//! Blanks and inter-trial intervals never enter them: the estimate is updated once per
//! presentation, with the presentation's raw window means, and at no other time.
//!
//! [`PresentationNorm`] is that estimator: a weighted Welford accumulator over the
//! session's presentations, optionally on top of a prior (the statistics a model was
//! trained with, saved as `normalization.json`), weighted as the rig's
//! `prior_presentations` presentations.
//! - `train`: no prior, every presentation of a session, then the final statistics
//!   normalise that session's trials; the model keeps their average over sessions.
//! - the daemon: starts from the model's statistics (the prior), z-scores each
//!   presentation it builds a frame for, then adds it (so an outlier never widens its
//!   own SD).
//!   With a calibration block of N presentations the prior is dropped once N were seen,
//!   so from then on the session's own statistics are used.
//! - `eval`: replays exactly that update over the dataset's presentations in onset
//!   order, so offline inputs are the inputs the daemon computes live.
//!
//! The pre-stimulus baseline window has statistics of its own, kept the same way.

use serde::{Deserialize, Serialize};

/// The tag of this estimator in `normalization.json`.
pub const ESTIMATOR: &str = "presentation-windows";

/// Smallest standard deviation used to z-score (a constant input stays 0).
const MIN_SD: f64 = 1e-6;

/// Per-feature statistics over presentations, as saved beside a model
/// (`normalization.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormStats {
    /// [`ESTIMATOR`]; files from monkeysee before it (per-electrode sample statistics)
    /// have none and are refused with a request to retrain.
    #[serde(default)]
    pub estimator: String,
    /// Latency windows per electrode (1 for TW-15, 5 for TW-3).
    pub windows: usize,
    /// `[window][electrode]` mean of the raw window means.
    pub mean: Vec<f32>,
    /// `[window][electrode]` standard deviation (population) of the raw window means.
    pub std: Vec<f32>,
    /// `[electrode]` mean of the raw baseline-window means.
    pub baseline_mean: Vec<f32>,
    pub baseline_std: Vec<f32>,
    /// Presentations the statistics were computed over (informational: the daemon weighs
    /// a model's statistics as the rig's `prior_presentations`).
    pub presentations: u64,
    /// Electrodes (rig order) left out of the decoder (`train --min-snr`): their inputs
    /// are always 0, offline and online.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<usize>,
}

impl NormStats {
    pub fn electrodes(&self) -> usize {
        self.baseline_mean.len()
    }

    /// Checks the shape against a decoder's inputs; the message says what differs.
    pub fn check_shape(&self, windows: usize, electrodes: usize) -> Result<(), String> {
        if self.estimator != ESTIMATOR {
            return Err(format!(
                "statistics of estimator {:?}, expected {ESTIMATOR:?} (per electrode and window, over presentations); the model was trained by an older monkeysee: retrain it",
                self.estimator
            ));
        }
        let n = windows * electrodes;
        if self.windows != windows
            || self.mean.len() != n
            || self.std.len() != n
            || self.baseline_mean.len() != electrodes
            || self.baseline_std.len() != electrodes
        {
            return Err(format!(
                "statistics for {} windows x {} electrodes ({} means, {} SDs), the decoder reads {windows} x {electrodes}; the model was trained for another rig or window set",
                self.windows,
                self.baseline_mean.len(),
                self.mean.len(),
                self.std.len()
            ));
        }
        if let Some(&e) = self.dropped.iter().find(|&&e| e >= electrodes) {
            return Err(format!(
                "dropped electrode {e} does not exist (the decoder reads {electrodes} electrodes)"
            ));
        }
        Ok(())
    }
}

impl NormStats {
    /// The statistics saved beside a model (`DIR/normalization.json`), if any, checked
    /// against the inputs the model reads (`windows` per electrode).
    pub fn load(
        model_dir: &std::path::Path,
        windows: usize,
        electrodes: usize,
    ) -> anyhow::Result<Option<NormStats>> {
        use anyhow::Context;
        let p = model_dir.join("normalization.json");
        if !p.exists() {
            return Ok(None);
        }
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))?;
        if value.get("estimator").is_none() && value.get("mean").is_some() {
            anyhow::bail!(
                "{} holds per-electrode sample statistics from an older monkeysee; inputs are now z-scored per electrode and window over stimulus presentations: retrain the model with monkeysee train",
                p.display()
            );
        }
        let s: NormStats = serde_json::from_value(value).with_context(|| {
            format!(
                "parsing {}: expected {{\"estimator\", \"windows\", \"mean\", \"std\", \"baseline_mean\", \"baseline_std\", \"presentations\"}}",
                p.display()
            )
        })?;
        s.check_shape(windows, electrodes)
            .map_err(|m| anyhow::anyhow!("{}: {m}", p.display()))?;
        Ok(Some(s))
    }

    /// The statistics a model keeps from several sessions: the mean of their means and
    /// of their variances (the within-session spread the daemon will meet in one
    /// session, not the day-to-day drift on top of it).
    pub fn average(sessions: &[NormStats]) -> NormStats {
        let avg = |pick: &dyn Fn(&NormStats) -> &Vec<f32>, sd: bool| -> Vec<f32> {
            let n = sessions.len() as f64;
            (0..pick(&sessions[0]).len())
                .map(|i| {
                    let v: f64 = sessions
                        .iter()
                        .map(|s| {
                            let x = pick(s)[i] as f64;
                            if sd {
                                x * x
                            } else {
                                x
                            }
                        })
                        .sum::<f64>()
                        / n;
                    (if sd { v.sqrt() } else { v }) as f32
                })
                .collect()
        };
        NormStats {
            estimator: ESTIMATOR.to_string(),
            windows: sessions[0].windows,
            mean: avg(&|s| &s.mean, false),
            std: avg(&|s| &s.std, true),
            baseline_mean: avg(&|s| &s.baseline_mean, false),
            baseline_std: avg(&|s| &s.baseline_std, true),
            presentations: sessions.iter().map(|s| s.presentations).sum(),
            dropped: sessions[0].dropped.clone(),
        }
    }
}

/// Weighted mean and sum of squared deviations of one group of features.
#[derive(Debug, Clone)]
struct Welford {
    weight: f64,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl Welford {
    fn new(n: usize) -> Welford {
        Welford {
            weight: 0.0,
            mean: vec![0.0; n],
            m2: vec![0.0; n],
        }
    }

    fn add(&mut self, x: &[f64]) {
        self.weight += 1.0;
        let w = self.weight;
        for ((m, s), &v) in self.mean.iter_mut().zip(&mut self.m2).zip(x) {
            let d = v - *m;
            *m += d / w;
            *s += d * (v - *m);
        }
    }
}

/// One group (the windows, or the baseline): prior, session, and their combination.
#[derive(Debug, Clone)]
struct Group {
    /// Mean and variance of the prior, and its weight in presentations.
    prior: Option<(Vec<f64>, Vec<f64>)>,
    prior_weight: f64,
    session: Welford,
    /// Combined mean and SD, refreshed after each update.
    mean: Vec<f64>,
    sd: Vec<f64>,
}

impl Group {
    fn new(n: usize, prior: Option<(&[f32], &[f32])>, prior_weight: f64) -> Group {
        let prior = prior.map(|(m, s)| {
            (
                m.iter().map(|&v| v as f64).collect(),
                s.iter().map(|&v| (v as f64) * (v as f64)).collect(),
            )
        });
        let mut g = Group {
            prior,
            prior_weight,
            session: Welford::new(n),
            mean: vec![0.0; n],
            sd: vec![1.0; n],
        };
        g.refresh();
        g
    }

    fn prior_weight(&self) -> f64 {
        if self.prior.is_some() {
            self.prior_weight
        } else {
            0.0
        }
    }

    /// Combines prior and session: the pooled mean and (population) variance.
    fn refresh(&mut self) {
        let (w0, n) = (self.prior_weight(), self.session.weight);
        let total = w0 + n;
        for i in 0..self.mean.len() {
            let (ms, m2) = (self.session.mean[i], self.session.m2[i]);
            let (mean, var) = match &self.prior {
                Some((pm, pv)) if w0 > 0.0 => {
                    let m = (w0 * pm[i] + n * ms) / total;
                    let var =
                        (w0 * (pv[i] + (pm[i] - m).powi(2)) + m2 + n * (ms - m).powi(2)) / total;
                    (m, var)
                }
                _ if n >= 2.0 => (ms, m2 / n),
                // Fewer than two presentations and no weight on the prior (a calibration
                // block just ended, or prior_presentations = 0): the prior still serves.
                Some((pm, pv)) => (pm[i], pv[i]),
                // No statistics at all (an untrained decoder): inputs stay raw.
                None => (0.0, 1.0),
            };
            self.mean[i] = mean;
            self.sd[i] = var.max(0.0).sqrt().max(MIN_SD);
        }
    }

    fn add(&mut self, x: &[f64], calibration: u64) {
        self.session.add(x);
        if calibration > 0 && self.session.weight >= calibration as f64 {
            self.prior_weight = 0.0;
        }
        self.refresh();
    }

    fn z(&self, i: usize, raw: f64) -> f32 {
        ((raw - self.mean[i]) / self.sd[i]) as f32
    }
}

/// The running estimator. Every buffer is sized in [`PresentationNorm::new`]; updates
/// and z-scores never allocate (the window stage calls them in its hot loop).
#[derive(Debug, Clone)]
pub struct PresentationNorm {
    windows: usize,
    electrodes: usize,
    features: Group,
    baseline: Group,
    calibration: u64,
    /// Per electrode: false for the prior's dropped electrodes (always z = 0).
    keep: Vec<bool>,
}

impl PresentationNorm {
    /// An estimator for `windows` × `electrodes` inputs. `prior`: statistics to start
    /// from, counted as `prior_weight` presentations (its shape must match; check with
    /// [`NormStats::check_shape`]). `calibration` > 0: the prior is dropped once that
    /// many presentations were seen.
    pub fn new(
        windows: usize,
        electrodes: usize,
        prior: Option<&NormStats>,
        prior_weight: f64,
        calibration: u64,
    ) -> PresentationNorm {
        debug_assert!(
            prior.is_none_or(|p| p.check_shape(windows, electrodes).is_ok()),
            "check a prior with NormStats::check_shape first"
        );
        let prior = prior.filter(|p| p.check_shape(windows, electrodes).is_ok());
        PresentationNorm {
            windows,
            electrodes,
            features: Group::new(
                windows * electrodes,
                prior.map(|p| (&p.mean[..], &p.std[..])),
                prior_weight,
            ),
            baseline: Group::new(
                electrodes,
                prior.map(|p| (&p.baseline_mean[..], &p.baseline_std[..])),
                prior_weight,
            ),
            calibration,
            keep: (0..electrodes)
                .map(|e| !prior.is_some_and(|p| p.dropped.contains(&e)))
                .collect(),
        }
    }

    /// Adds one presentation's raw window means, `[window][electrode]`.
    pub fn add(&mut self, raw: &[f64]) {
        debug_assert_eq!(raw.len(), self.windows * self.electrodes);
        self.features.add(raw, self.calibration);
    }

    /// Adds one presentation's raw baseline means, `[electrode]`.
    pub fn add_baseline(&mut self, raw: &[f64]) {
        self.baseline.add(raw, self.calibration);
    }

    /// Feature `i` (`window * electrodes + electrode`) of a raw window mean, z-scored.
    pub fn z(&self, i: usize, raw: f64) -> f32 {
        if self.keep[i % self.electrodes.max(1)] {
            self.features.z(i, raw)
        } else {
            0.0
        }
    }

    /// Electrode `e`'s raw baseline mean, z-scored.
    pub fn z_baseline(&self, e: usize, raw: f64) -> f32 {
        if self.keep[e] {
            self.baseline.z(e, raw)
        } else {
            0.0
        }
    }

    /// Z-scores a whole presentation into `out`.
    pub fn z_all(&self, raw: &[f64], out: &mut [f32]) {
        for (i, (o, &r)) in out.iter_mut().zip(raw).enumerate() {
            *o = self.z(i, r);
        }
    }

    /// The current (combined) statistics.
    pub fn stats(&self) -> NormStats {
        let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        NormStats {
            estimator: ESTIMATOR.to_string(),
            windows: self.windows,
            mean: f32s(&self.features.mean),
            std: f32s(&self.features.sd),
            baseline_mean: f32s(&self.baseline.mean),
            baseline_std: f32s(&self.baseline.sd),
            presentations: (self.features.prior_weight() + self.features.session.weight) as u64,
            dropped: (0..self.electrodes).filter(|&e| !self.keep[e]).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(xs: &[[f64; 2]]) -> (Vec<f64>, Vec<f64>) {
        let n = xs.len() as f64;
        let mean: Vec<f64> = (0..2)
            .map(|i| xs.iter().map(|x| x[i]).sum::<f64>() / n)
            .collect();
        let var = (0..2)
            .map(|i| xs.iter().map(|x| (x[i] - mean[i]).powi(2)).sum::<f64>() / n)
            .collect();
        (mean, var)
    }

    #[test]
    fn without_a_prior_the_statistics_are_the_presentations_own() {
        let xs = [[1.0, 10.0], [2.0, 14.0], [4.0, 9.0], [7.0, 11.0]];
        let mut n = PresentationNorm::new(1, 2, None, 0.0, 0);
        for x in &xs {
            n.add(x);
        }
        let (mean, var) = batch(&xs);
        let s = n.stats();
        for i in 0..2 {
            assert!((s.mean[i] as f64 - mean[i]).abs() < 1e-6);
            assert!((s.std[i] as f64 - var[i].sqrt()).abs() < 1e-6);
        }
        assert_eq!(s.presentations, 4);
        assert!((n.z(1, 14.0) as f64 - (14.0 - mean[1]) / var[1].sqrt()).abs() < 1e-6);
    }

    #[test]
    fn a_prior_pools_as_that_many_presentations() {
        // A prior made of presentations A, then session presentations B: the pooled
        // statistics are those of A and B together.
        let a = [[1.0, 2.0], [3.0, 5.0], [2.0, 2.5]];
        let b = [[6.0, 1.0], [5.0, 0.0]];
        let mut pa = PresentationNorm::new(1, 2, None, 0.0, 0);
        a.iter().for_each(|x| pa.add(x));
        let mut prior = pa.stats();
        prior.baseline_mean = vec![0.0; 2];
        prior.baseline_std = vec![1.0; 2];
        let mut n = PresentationNorm::new(1, 2, Some(&prior), 3.0, 0);
        b.iter().for_each(|x| n.add(x));
        let all: Vec<[f64; 2]> = a.iter().chain(&b).copied().collect();
        let (mean, var) = batch(&all);
        let s = n.stats();
        for i in 0..2 {
            assert!((s.mean[i] as f64 - mean[i]).abs() < 1e-5, "{s:?}");
            assert!((s.std[i] as f64 - var[i].sqrt()).abs() < 1e-5, "{s:?}");
        }
    }

    #[test]
    fn calibration_drops_the_prior() {
        let prior = NormStats {
            estimator: ESTIMATOR.into(),
            windows: 1,
            mean: vec![100.0],
            std: vec![50.0],
            baseline_mean: vec![0.0],
            baseline_std: vec![1.0],
            presentations: 1000,
            dropped: Vec::new(),
        };
        let mut n = PresentationNorm::new(1, 1, Some(&prior), 1000.0, 3);
        n.add(&[1.0]);
        n.add(&[2.0]);
        assert!(n.stats().mean[0] > 90.0, "the prior still dominates");
        n.add(&[3.0]);
        let s = n.stats();
        assert!((s.mean[0] - 2.0).abs() < 1e-6, "{s:?}");
        assert!((s.std[0] as f64 - (2.0f64 / 3.0).sqrt()).abs() < 1e-6);
    }

    #[test]
    fn dropped_electrodes_are_always_zero_and_stay_dropped() {
        let mut pa = PresentationNorm::new(2, 3, None, 0.0, 0);
        pa.add(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        pa.add(&[2.0, 4.0, 1.0, 3.0, 9.0, 2.0]);
        pa.add_baseline(&[1.0, 1.0, 1.0]);
        pa.add_baseline(&[2.0, 3.0, 4.0]);
        let mut prior = pa.stats();
        prior.dropped = vec![1];
        let mut n = PresentationNorm::new(2, 3, Some(&prior), 10.0, 0);
        n.add(&[7.0, 7.0, 7.0, 7.0, 7.0, 7.0]);
        let mut out = [9.0f32; 6];
        n.z_all(&[5.0, 5.0, 5.0, 5.0, 5.0, 5.0], &mut out);
        assert_eq!((out[1], out[4]), (0.0, 0.0), "electrode 1 in both windows");
        assert!(out[0] != 0.0 && out[5] != 0.0);
        assert_eq!(n.z_baseline(1, 100.0), 0.0);
        assert_eq!(n.stats().dropped, vec![1]);
    }

    #[test]
    fn statistics_of_an_old_format_are_refused_with_a_reason() {
        let old: NormStats = serde_json::from_str(
            r#"{"windows":1,"mean":[0],"std":[1],"baseline_mean":[0],"baseline_std":[1],"presentations":1}"#,
        )
        .unwrap();
        assert!(old.check_shape(1, 1).unwrap_err().contains("retrain"));
        let mut ok = old.clone();
        ok.estimator = ESTIMATOR.into();
        assert!(ok.check_shape(1, 1).is_ok());
        assert!(ok.check_shape(5, 1).unwrap_err().contains("5 x 1"));
    }
}
