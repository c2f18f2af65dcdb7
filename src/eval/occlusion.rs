//! Occlusion (paper Figs 2–3): what a model's reconstructions lose when an area or a
//! latency window is taken away.
//!
//! "Occluded" inputs are the pre-stimulus baseline (DESIGN §2): the electrode's mean MUA
//! over the baseline window (−100…0 ms, `[windows] baseline` in the rig) of the same
//! presentation, put in place of its window means and z-scored with the same statistics.
//! So an occluded area looks to the decoder as if the stimulus had not moved it.
//!
//! Conditions ([`Keep`]): every input; all but one area (spatial occlusion); one area
//! alone (the inputs of colourfulness and of the relative correlations); and, for the
//! spatiotemporal decoder, one window alone across areas and one area's one window alone
//! (temporal occlusion).
//!
//! All conditions use the model's saved statistics (`normalization.json`), fixed: the
//! unoccluded condition here can differ a little from `eval`'s main table, which uses the
//! daemon's running estimator. Inputs are averaged over each test image's repeats, as in
//! the main table. A time-averaged dataset (TVSD normMUA) has no baseline: there an
//! occluded input is 0, the mean over presentations, and the report says so.

use std::collections::BTreeMap;

use crate::config::{RigConfig, WindowSetKind};
use crate::dataset::Dataset;
use crate::decoder::{CpuBackend, Decoder};
use crate::norm::NormStats;
use crate::units::Area;

/// Which inputs a condition keeps; every other input is set to its baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    All,
    AllBut(Area),
    Only(Area),
    /// One latency window (index into the area's windows) of every area.
    Window(usize),
    /// One area's one window.
    AreaWindow(Area, usize),
}

impl Keep {
    /// Whether the input of an electrode in `area`, window `k`, is kept.
    pub fn keeps(self, area: Area, k: usize) -> bool {
        match self {
            Keep::All => true,
            Keep::AllBut(a) => area != a,
            Keep::Only(a) => area == a,
            Keep::Window(w) => k == w,
            Keep::AreaWindow(a, w) => area == a && k == w,
        }
    }

    /// A short label: `all`, `no V1`, `V1 only`, `w2 only`, `V4 w2`.
    pub fn label(self) -> String {
        match self {
            Keep::All => "all".into(),
            Keep::AllBut(a) => format!("no {a}"),
            Keep::Only(a) => format!("{a} only"),
            Keep::Window(w) => format!("w{w} only"),
            Keep::AreaWindow(a, w) => format!("{a} w{w}"),
        }
    }

    /// The conditions for a model with `windows` windows per electrode.
    pub fn conditions(windows: usize) -> Vec<Keep> {
        let mut out = vec![Keep::All];
        out.extend(Area::ALL.map(Keep::AllBut));
        out.extend(Area::ALL.map(Keep::Only));
        if windows > 1 {
            out.extend((0..windows).map(Keep::Window));
            for a in Area::ALL {
                out.extend((0..windows).map(|w| Keep::AreaWindow(a, w)));
            }
        }
        out
    }
}

/// Each test image's raw window means and baseline means, averaged over its repeats
/// (presentations with a non-finite value are left out, as the daemon skips them).
pub struct RawTests {
    /// `[image][window][electrode]`.
    pub raw: Vec<Vec<f64>>,
    /// `[image][electrode]`; `None` for a time-averaged dataset.
    pub baseline: Option<Vec<Vec<f64>>>,
    pub electrodes: usize,
    /// Test images without one presentation whose window and baseline means are all
    /// finite: their means are NaN, and every input of theirs is 0 (the mean).
    pub unusable: usize,
}

impl RawTests {
    pub fn new(
        ds: &Dataset,
        rig: &RigConfig,
        set: WindowSetKind,
        by_image: &BTreeMap<usize, Vec<usize>>,
    ) -> RawTests {
        let n_e = rig.electrodes.len();
        let per = rig.windows.windows_per_electrode(set);
        let (mut raw, mut base) = (Vec::new(), Vec::new());
        let mut images = Vec::with_capacity(by_image.len());
        let mut baselines = Vec::with_capacity(by_image.len());
        let mut unusable = 0;
        for trials in by_image.values() {
            let (mut acc, mut acc_base) = (vec![0.0f64; per * n_e], vec![0.0f64; n_e]);
            let mut n = 0usize;
            for &t in trials {
                ds.raw_means(t, rig, set, &mut raw, Some(&mut base));
                if !raw.iter().chain(&base).all(|v| v.is_finite()) {
                    continue;
                }
                acc.iter_mut().zip(&raw).for_each(|(a, v)| *a += v);
                acc_base.iter_mut().zip(&base).for_each(|(a, v)| *a += v);
                n += 1;
            }
            if n == 0 {
                unusable += 1;
            }
            // 0 / 0: NaN, which `inputs` turns into 0.
            let n = n as f64;
            acc.iter_mut().for_each(|a| *a /= n);
            acc_base.iter_mut().for_each(|a| *a /= n);
            images.push(acc);
            baselines.push(acc_base);
        }
        RawTests {
            raw: images,
            baseline: (!ds.meta.time_averaged).then_some(baselines),
            electrodes: n_e,
            unusable,
        }
    }

    /// The decoder inputs of every test image under `keep`, `[image][window][electrode]`
    /// concatenated, z-scored with `stats`; `areas[e]` is electrode e's area.
    pub fn inputs(&self, keep: Keep, stats: &NormStats, areas: &[Area]) -> Vec<f32> {
        let n_e = self.electrodes;
        let mut out = Vec::with_capacity(self.raw.len() * self.raw.first().map_or(0, Vec::len));
        for (i, raw) in self.raw.iter().enumerate() {
            for (f, &r) in raw.iter().enumerate() {
                let (k, e) = (f / n_e, f % n_e);
                let (mean, sd) = (stats.mean[f] as f64, (stats.std[f] as f64).max(1e-6));
                let value = if keep.keeps(areas[e], k) {
                    Some(r)
                } else {
                    self.baseline.as_ref().map(|b| b[i][e])
                };
                let z = value.map_or(0.0, |v| ((v - mean) / sd) as f32);
                out.push(if z.is_finite() { z } else { 0.0 });
            }
        }
        for &e in &stats.dropped {
            for img in out.chunks_exact_mut(stats.windows * n_e) {
                for k in 0..stats.windows {
                    img[k * n_e + e] = 0.0;
                }
            }
        }
        out
    }
}

/// A model's repeat-averaged reconstructions of the test images under each condition.
pub fn reconstruct(
    decoder: &Decoder<CpuBackend>,
    tests: &RawTests,
    stats: &NormStats,
    areas: &[Area],
    keep: Keep,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let cfg = decoder.config();
    let n = tests.raw.len();
    let inputs = tests.inputs(keep, stats, areas);
    let mut out = vec![0.0f32; n * cfg.image_len()];
    // Batches of 8: the decoder's batched path, memory bounded.
    for (f, o) in inputs
        .chunks(8 * cfg.n_features())
        .zip(out.chunks_mut(8 * cfg.image_len()))
    {
        decoder.reconstruct_batch(f, f.len() / cfg.n_features(), o)?;
    }
    Ok(out
        .chunks_exact(cfg.image_len())
        .map(<[f32]>::to_vec)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_keep_what_they_say() {
        let spatial = Keep::conditions(1);
        assert_eq!(spatial.len(), 7);
        let temporal = Keep::conditions(5);
        assert_eq!(temporal.len(), 7 + 5 + 15);
        assert!(Keep::AllBut(Area::V4).keeps(Area::V1, 0));
        assert!(!Keep::AllBut(Area::V4).keeps(Area::V4, 0));
        assert!(Keep::Only(Area::IT).keeps(Area::IT, 3));
        assert!(!Keep::Only(Area::IT).keeps(Area::V1, 3));
        assert!(Keep::Window(2).keeps(Area::V4, 2) && !Keep::Window(2).keeps(Area::V4, 1));
        assert!(Keep::AreaWindow(Area::V4, 2).keeps(Area::V4, 2));
        assert!(!Keep::AreaWindow(Area::V4, 2).keeps(Area::V1, 2));
        assert_eq!(Keep::AreaWindow(Area::V4, 2).label(), "V4 w2");
    }

    #[test]
    fn occluded_inputs_are_the_baseline_z_scored_with_the_windows_statistics() {
        // Two electrodes (V1, IT), one window, one image: raw 5 and 9, baselines 1 and 3.
        let tests = RawTests {
            raw: vec![vec![5.0, 9.0]],
            baseline: Some(vec![vec![1.0, 3.0]]),
            electrodes: 2,
            unusable: 0,
        };
        let stats = NormStats {
            estimator: crate::norm::ESTIMATOR.into(),
            windows: 1,
            mean: vec![2.0, 4.0],
            std: vec![2.0, 0.5],
            baseline_mean: vec![0.0; 2],
            baseline_std: vec![1.0; 2],
            presentations: 10,
            dropped: vec![],
        };
        let areas = [Area::V1, Area::IT];
        assert_eq!(tests.inputs(Keep::All, &stats, &areas), vec![1.5, 10.0]);
        assert_eq!(
            tests.inputs(Keep::AllBut(Area::IT), &stats, &areas),
            vec![1.5, -2.0]
        );
        assert_eq!(
            tests.inputs(Keep::Only(Area::IT), &stats, &areas),
            vec![-0.5, 10.0]
        );
        // Dropped electrodes stay 0; without a baseline an occluded input is the mean.
        let dropped = NormStats {
            dropped: vec![1],
            ..stats.clone()
        };
        assert_eq!(tests.inputs(Keep::All, &dropped, &areas), vec![1.5, 0.0]);
        let averaged = RawTests {
            baseline: None,
            ..tests
        };
        assert_eq!(
            averaged.inputs(Keep::Only(Area::IT), &stats, &areas),
            vec![0.0, 10.0]
        );
    }

    /// Two windows × two electrodes (V1, V4), `[window][electrode]`: raw means 10 + k·10 + e,
    /// baselines 1 and 2, statistics mean 0 and SD 1, so an input is its raw value or,
    /// occluded, its electrode's baseline.
    #[test]
    fn windows_and_areas_are_found_in_the_window_major_layout() {
        let tests = RawTests {
            raw: vec![vec![10.0, 11.0, 20.0, 21.0], vec![f64::NAN; 4]],
            baseline: Some(vec![vec![1.0, 2.0], vec![f64::NAN; 2]]),
            electrodes: 2,
            unusable: 1,
        };
        let stats = NormStats {
            estimator: crate::norm::ESTIMATOR.into(),
            windows: 2,
            mean: vec![0.0; 4],
            std: vec![1.0; 4],
            baseline_mean: vec![0.0; 2],
            baseline_std: vec![1.0; 2],
            presentations: 10,
            dropped: vec![],
        };
        let areas = [Area::V1, Area::V4];
        let first = |keep| tests.inputs(keep, &stats, &areas)[..4].to_vec();
        assert_eq!(first(Keep::All), vec![10.0, 11.0, 20.0, 21.0]);
        assert_eq!(first(Keep::Window(1)), vec![1.0, 2.0, 20.0, 21.0]);
        assert_eq!(first(Keep::Window(0)), vec![10.0, 11.0, 1.0, 2.0]);
        assert_eq!(
            first(Keep::AreaWindow(Area::V4, 1)),
            vec![1.0, 2.0, 1.0, 21.0]
        );
        assert_eq!(first(Keep::AllBut(Area::V1)), vec![1.0, 11.0, 1.0, 21.0]);
        // An image without a usable presentation gets the mean (0) everywhere.
        assert_eq!(tests.inputs(Keep::All, &stats, &areas)[4..], [0.0; 4]);
        // A dropped electrode is 0 in every window of every image.
        let dropped = NormStats {
            dropped: vec![1],
            ..stats
        };
        let all = tests.inputs(Keep::All, &dropped, &areas);
        assert_eq!(all[..4], [10.0, 0.0, 20.0, 0.0]);
    }
}
