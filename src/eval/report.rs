//! `eval --report`: the paper's analyses for every model, on one page.
//!
//! Writes, into eval's output folder, `report.html` (self-contained: inline style, the
//! figures as PNG beside it), `report.json` (every number on the page) and the figures:
//! - the metrics table and `grid.png` (written by [`super::eval`]);
//! - **feature correlation** (paper Table 1; [`crate::alexnet`]): per AlexNet layer one
//!   Pearson r over all test images' features together, and the MSE; needs `--alexnet`,
//!   skipped with a note without it;
//! - **occlusion** (Figs 2–3; [`super::occlusion`]): the drop in pixel r, SSIM and
//!   identification when one area's inputs are set to their pre-stimulus baseline
//!   (`occlusion.png`), the occluded reconstructions (`occlusion-MODEL.png`), and for the
//!   spatiotemporal decoder one window kept at a time (`temporal.png`,
//!   `temporal-MODEL.png`);
//! - **colourfulness** (Hasler & Süsstrunk) of reconstructions from one area's inputs
//!   beside the originals' (`colourfulness.png`);
//! - **receptive fields** (Figs 6–7) of learned-RF models: start, learned and (when
//!   known) true RFs per array (`rf-map-MODEL.png`) and RF size against eccentricity per
//!   area with least-squares lines (`rf-size-MODEL.png`);
//! - **relative correlations** (Figs 8–10) per area and per area's window, each
//!   normalised by the best area (or the area's best window)
//!   (`relative-areas-MODEL.png`, `relative-windows-MODEL.png`); with AlexNet per layer,
//!   without it on pixel r;
//! - **area-restricted models** (Fig. 12): models trained with `train --areas` beside the
//!   one on every area and the linear decoder of the same areas (`areas.png`).
//!
//! Three steps: `analyses` returns the numbers ([`ReportSummary`]) and the few
//! reconstructions the figures show, `draw` draws the figures, and `page` renders
//! `report.html` from the template `report/page.html`, which escapes every value.

mod analyses;
mod draw;
mod page;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::analysis::SizeEccentricity;
use super::occlusion::Keep;
use super::{LoadedModel, ModelMetrics, TestImages};
use crate::alexnet::{AlexNet, LayerCorrelation};
use crate::decoder::CpuBackend;

/// The scores of one occlusion condition (repeat-averaged reconstructions).
#[derive(Clone, Debug, Serialize)]
pub struct ConditionScores {
    pub condition: String,
    pub pixel_r: f64,
    pub ssim: f64,
    pub ident_top1: f64,
    pub ident_2way: f64,
    /// Hasler–Süsstrunk colourfulness of each reconstruction (0–255 scale).
    pub colourfulness: Vec<f64>,
    /// Per AlexNet layer (with `--alexnet`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<LayerCorrelation>>,
}

/// One area's RF size–eccentricity lines: learned, where training started, true.
#[derive(Clone, Debug, Serialize)]
pub struct AreaRfs {
    pub learned: Option<SizeEccentricity>,
    pub start: Option<SizeEccentricity>,
    pub truth: Option<SizeEccentricity>,
}

/// The analyses of one model.
#[derive(Clone, Debug, Serialize)]
pub struct ModelReport {
    pub name: String,
    pub kind: String,
    /// The areas it reads (`all`, or e.g. `V1+V4` for `train --areas V1,V4`).
    pub areas: String,
    /// Every condition; the first keeps every input.
    pub conditions: Vec<ConditionScores>,
    /// AlexNet feature correlation (Table 1, with `--alexnet`) of the reconstructions in
    /// eval's metrics table (the daemon's running normalisation), as for the linear
    /// decoder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<LayerCorrelation>>,
    /// Relative correlation per measure (AlexNet layer, or `pixel`) and area: the
    /// measure from that area's inputs alone over the best area's.
    pub relative_areas: BTreeMap<String, BTreeMap<String, f64>>,
    /// Spatiotemporal decoder: per area, measure and window, the measure from that
    /// area's one window over the area's best window.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub relative_windows: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    /// Learned-RF models: per area.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rf_size_eccentricity: BTreeMap<String, AreaRfs>,
}

impl ModelReport {
    pub fn condition(&self, keep: Keep) -> Option<&ConditionScores> {
        let label = keep.label();
        self.conditions.iter().find(|c| c.condition == label)
    }
}

/// Everything the page shows, as written to `report.json`.
#[derive(Clone, Debug, Serialize)]
pub struct ReportSummary {
    pub models: Vec<ModelReport>,
    /// Colourfulness of the original test images.
    pub original_colourfulness: Vec<f64>,
    /// AlexNet feature correlations of the linear decoder's reconstructions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linear_features: Option<Vec<LayerCorrelation>>,
    pub notes: Vec<String>,
    /// The figures written (file names in the output folder).
    pub figures: Vec<String>,
    /// The learning curve given with `--curve`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curve: Option<super::curve::Curve>,
}

/// What the report needs from the main evaluation.
pub(super) struct Inputs<'a> {
    pub tests: &'a TestImages<'a>,
    /// The models as eval loaded them, in the order given.
    pub models: &'a [LoadedModel],
    pub entries: &'a [ModelMetrics],
    /// Each model's repeat-averaged reconstructions in eval's metrics table.
    pub recons: &'a [Vec<Vec<f32>>],
    /// The linear decoder's repeat-averaged reconstructions, when it was fitted.
    pub linear: Option<&'a [Vec<f32>]>,
    /// torchvision's AlexNet, loaded before the long steps so a bad file fails first.
    pub alexnet: Option<&'a AlexNet<CpuBackend>>,
    /// A learning curve to show (`eval --curve`).
    pub curve: Option<&'a super::curve::Curve>,
    pub out: &'a Path,
    pub grid_images: usize,
    pub progress: bool,
}

/// Runs every analysis, draws the figures and writes `report.json` and `report.html`;
/// returns the page's numbers.
pub(super) fn write(inputs: &Inputs<'_>) -> anyhow::Result<ReportSummary> {
    let (mut summary, shown) = analyses::run(inputs)?;
    summary.figures = draw::figures(inputs, &summary, &shown)?;
    if !crate::plot::have_font() {
        summary.notes.push("no font found (install fonts-dejavu-core or set MONKEYSEE_FONT): plots were not drawn; every number is in report.json".into());
    }
    let json = inputs.out.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let html = inputs.out.join("report.html");
    std::fs::write(&html, page::Page::new(inputs, &summary).render()?)
        .with_context(|| format!("writing {}", html.display()))?;
    Ok(summary)
}
