//! A learning curve: each decoder's test scores against the number of training images
//! it was trained on, beside the linear decoder fitted on the same images.
//!
//! `monkeysee learning-curve` ([`crate::learning_curve`]) measures one and writes it as
//! `curve.json` and `curve.png`; `eval --report --curve curve.json` shows it on the
//! report page.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::ModelMetrics;

/// One entry (a decoder kind or `linear`) trained on one number of images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// The decoder kind (`spatial`, …) or `linear`.
    pub kind: String,
    /// Training images it was given (the first this many of the train split).
    pub images: usize,
    pub pixel_r: f64,
    pub ssim: f64,
    pub single_trial_pixel_r: f64,
    /// n-way identification of the test images (chance 1/`test_images`).
    pub ident_top1: f64,
    pub ident_2way: f64,
    /// Training wall time, seconds (summed over the runs of a resumed training); `None`
    /// for the linear decoder, fitted inside the evaluation.
    #[serde(default)]
    pub train_seconds: Option<f64>,
    /// Epochs trained and the one whose model was scored.
    #[serde(default)]
    pub epochs: Option<usize>,
    #[serde(default)]
    pub saved_epoch: Option<usize>,
}

impl CurvePoint {
    /// The point of an evaluated entry.
    pub fn of(kind: &str, images: usize, m: &ModelMetrics) -> CurvePoint {
        CurvePoint {
            kind: kind.to_string(),
            images,
            pixel_r: m.scores.pixel_r,
            ssim: m.scores.ssim,
            single_trial_pixel_r: m.scores.single_trial_pixel_r,
            ident_top1: m.scores.ident_top1,
            ident_2way: m.scores.ident_2way,
            train_seconds: None,
            epochs: None,
            saved_epoch: None,
        }
    }
}

/// `curve.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// The dataset the curve was measured on.
    pub data: String,
    pub test_images: usize,
    /// Training images of each step, ascending.
    pub sizes: Vec<usize>,
    /// The decoder kinds trained (the linear decoder comes with every size).
    pub kinds: Vec<String>,
    pub points: Vec<CurvePoint>,
}

impl Curve {
    pub fn load(path: &Path) -> anyhow::Result<Curve> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a curve.json of `monkeysee learning-curve`",
                path.display()
            )
        })
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        crate::train::write_json(path, self)
    }

    /// Every entry's name (`linear` last) with its points in ascending size.
    pub fn series(&self) -> Vec<(String, Vec<&CurvePoint>)> {
        let mut names = self.kinds.clone();
        names.push("linear".into());
        names
            .into_iter()
            .map(|k| {
                let mut pts: Vec<&CurvePoint> =
                    self.points.iter().filter(|p| p.kind == k).collect();
                pts.sort_by_key(|p| p.images);
                (k, pts)
            })
            .filter(|(_, pts)| !pts.is_empty())
            .collect()
    }

    /// The best decoder's pixel r minus the linear decoder's, at each size both have.
    pub fn margins(&self) -> Vec<(usize, f64)> {
        self.sizes
            .iter()
            .filter_map(|&n| {
                let at = |k: &str| {
                    self.points
                        .iter()
                        .find(|p| p.images == n && p.kind == k)
                        .map(|p| p.pixel_r)
                };
                let best = self
                    .kinds
                    .iter()
                    .filter_map(|k| at(k))
                    .fold(f64::NEG_INFINITY, f64::max);
                Some((n, best - at("linear")?)).filter(|(_, m)| m.is_finite())
            })
            .collect()
    }

    /// `curve.png`: pixel r and n-way identification against training images (log
    /// axis), one line per entry. False (nothing drawn) without a font.
    pub fn plot(&self, path: &Path) -> anyhow::Result<bool> {
        let series = self.series();
        let line = |f: fn(&CurvePoint) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
            series
                .iter()
                .map(|(k, pts)| {
                    (
                        k.clone(),
                        pts.iter().map(|p| (p.images as f64, f(p))).collect(),
                    )
                })
                .collect()
        };
        crate::plot::log_x_panels(
            path,
            "training images",
            &[
                (
                    "pixel r (test images, repeat-averaged)",
                    line(|p| p.pixel_r),
                ),
                (
                    &format!("{}-way identification", self.test_images),
                    line(|p| p.ident_top1),
                ),
            ],
        )
    }
}
