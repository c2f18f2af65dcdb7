//! The report's analyses: per model every occlusion condition scored, its relative
//! correlations and its learned RFs' size–eccentricity lines. They return numbers
//! ([`ReportSummary`]) and, for the figures, the first test images' reconstructions per
//! condition ([`Shown`]); they draw nothing.

use std::collections::BTreeMap;

use super::{AreaRfs, ConditionScores, Inputs, ModelReport, ReportSummary};
use crate::alexnet::{AlexNet, Features, LayerCorrelation};
use crate::config::window_set;
use crate::config::WindowSetKind;
use crate::decoder::{CpuBackend, Decoder};
use crate::eval::analysis;
use crate::eval::occlusion::{self, Keep, RawTests};
use crate::eval::{LoadedModel, ModelMetrics, RfSets, TestImages};
use crate::norm::NormStats;
use crate::units::Area;

/// Test images in an occlusion grid, at most.
const GRID_ROWS: usize = 8;

/// Reconstructions per condition label.
pub(super) type Grids = BTreeMap<String, Vec<Vec<f32>>>;

/// What one model's figures show beside its numbers.
pub(super) struct Shown {
    /// Windows per electrode.
    pub windows: usize,
    /// The first test images' reconstructions (the occlusion grids' rows) per condition
    /// label, for every condition but one area's one window.
    pub recons: Grids,
}

/// Runs every analysis: the page's numbers, and per model what its figures show.
pub(super) fn run(inputs: &Inputs<'_>) -> anyhow::Result<(ReportSummary, Vec<Shown>)> {
    let mut a = Analyses::new(inputs)?;
    let (mut models, mut shown) = (Vec::new(), Vec::new());
    for ((model, entry), recons) in inputs.models.iter().zip(inputs.entries).zip(inputs.recons) {
        let (report, s) = a.model(model, entry, recons)?;
        models.push(report);
        shown.push(s);
    }
    a.bar.finish_and_clear();
    let linear_features = match inputs.linear {
        Some(l) => a.features(l)?,
        None => None,
    };
    if models.iter().all(|m| m.areas == "all") {
        a.notes.push("no area-restricted models given (train them with `monkeysee train --areas V1` etc. and pass them with --model): the area comparison has the decoders on every area and the linear decoders per area".into());
    }
    let summary = ReportSummary {
        models,
        original_colourfulness: colourfulness(&inputs.tests.originals),
        linear_features,
        notes: a.notes,
        figures: Vec::new(),
        curve: inputs.curve.cloned(),
    };
    Ok((summary, shown))
}

/// What the analyses of every model share.
struct Analyses<'a> {
    tests: &'a TestImages<'a>,
    /// Test images the occlusion grids show.
    grid_rows: usize,
    /// AlexNet, and its features of the original test images.
    alexnet: Option<(&'a AlexNet<CpuBackend>, Features)>,
    /// Each electrode's area, rig order.
    areas: Vec<Area>,
    /// The test images' raw inputs per window set, read once.
    raw: Vec<(WindowSetKind, RawTests)>,
    bar: indicatif::ProgressBar,
    notes: Vec<String>,
}

impl<'a> Analyses<'a> {
    fn new(inputs: &Inputs<'a>) -> anyhow::Result<Self> {
        let t = inputs.tests;
        let mut notes = Vec::new();
        if inputs.alexnet.is_none() {
            notes.push("feature correlation (paper Table 1) skipped: no --alexnet FILE.pth (torchvision's AlexNet, alexnet-owt-7be5be79.pth, supplied by you: nothing is downloaded); relative correlations use pixel r instead".into());
        }
        let size = t.ds.meta.image_size;
        let alexnet = match inputs.alexnet {
            Some(net) => Some((
                net,
                Features::of(net, &t.originals, size, &Default::default())?,
            )),
            None => None,
        };
        if t.ds.meta.time_averaged {
            notes.push(format!("{} is time-averaged: it has no pre-stimulus baseline, so occluded inputs are set to their mean over presentations (0) instead", t.ds.dir.display()));
        }
        let bar = crate::telemetry::progress_bar(inputs.progress, 0, "conditions");
        bar.set_message("report");
        Ok(Self {
            tests: t,
            grid_rows: t.originals.len().min(inputs.grid_images).min(GRID_ROWS),
            alexnet,
            areas: t.rig.electrodes.iter().map(|e| e.area).collect(),
            raw: Vec::new(),
            bar,
            notes,
        })
    }

    /// AlexNet feature correlation of reconstructions with the originals (Table 1); `None`
    /// without `--alexnet`.
    fn features(&self, recons: &[Vec<f32>]) -> anyhow::Result<Option<Vec<LayerCorrelation>>> {
        let Some((net, originals)) = &self.alexnet else {
            return Ok(None);
        };
        let size = self.tests.ds.meta.image_size;
        let f = Features::of(*net, recons, size, &Default::default())?;
        Ok(Some(f.correlations(originals)))
    }

    /// The index in `raw` of the test images' inputs for window set `set`, read the first
    /// time it is asked for.
    fn raw_tests(&mut self, set: WindowSetKind) -> usize {
        if let Some(i) = self.raw.iter().position(|(k, _)| *k == set) {
            return i;
        }
        let t = self.tests;
        let raw = RawTests::new(t.ds, t.rig, set, &t.by_image);
        if raw.unusable > 0 {
            self.notes.push(format!("occlusion: {} test images have no presentation whose window and baseline means are all finite; every input of theirs is 0 (the mean)", raw.unusable));
        }
        self.raw.push((set, raw));
        self.raw.len() - 1
    }

    /// One model's analyses; `recons` are its reconstructions in eval's metrics table.
    fn model(
        &mut self,
        model: &LoadedModel,
        entry: &ModelMetrics,
        recons: &[Vec<f32>],
    ) -> anyhow::Result<(ModelReport, Shown)> {
        let (decoder, stats) = (&model.decoder, &model.stats);
        let cfg = decoder.config();
        let set = window_set(cfg.kind);
        let windows = self.tests.rig.windows.windows_per_electrode(set);
        let raw = self.raw_tests(set);
        let (conditions, grids) = self.conditions(decoder, stats, &entry.name, raw, windows)?;
        let read = analysis::areas_read(&self.areas, &stats.dropped);
        let mut report = ModelReport {
            name: entry.name.clone(),
            kind: cfg.kind.to_string(),
            areas: if read == analysis::areas_read(&self.areas, &[]) {
                "all".to_string()
            } else {
                analysis::areas_label(&read)
            },
            conditions,
            features: self.features(recons)?,
            relative_areas: BTreeMap::new(),
            relative_windows: BTreeMap::new(),
            rf_size_eccentricity: BTreeMap::new(),
        };
        // A model restricted to some areas has its rows in the tables; the per-area
        // comparisons (one area kept, its other inputs dropped) would say little.
        if report.areas == "all" {
            relative_correlations(&mut report, windows);
        }
        if let Some(rfs) = &model.rfs {
            report.rf_size_eccentricity = size_eccentricity(rfs);
        }
        let shown = Shown {
            windows,
            recons: grids,
        };
        Ok((report, shown))
    }

    /// Every condition of a model scored (the inputs `self.raw[raw]`), and the
    /// reconstructions the occlusion grids show.
    fn conditions(
        &self,
        decoder: &Decoder<CpuBackend>,
        stats: &NormStats,
        name: &str,
        raw: usize,
        windows: usize,
    ) -> anyhow::Result<(Vec<ConditionScores>, Grids)> {
        let t = self.tests;
        let keeps = Keep::conditions(windows);
        self.bar.inc_length(keeps.len() as u64);
        let mut conditions = Vec::new();
        let mut grids = Grids::new();
        for keep in keeps {
            self.bar.set_message(format!("{name} {}", keep.label()));
            let recons =
                occlusion::reconstruct(decoder, &self.raw[raw].1, stats, &self.areas, keep)?;
            let scores = crate::eval::averaged_scores(&recons, &t.originals, t.ds.meta.image_size);
            let wants_features = matches!(keep, Keep::All | Keep::Only(_) | Keep::AreaWindow(..));
            conditions.push(ConditionScores {
                condition: keep.label(),
                pixel_r: scores.pixel_r,
                ssim: scores.ssim,
                ident_top1: scores.ident_top1,
                ident_2way: scores.ident_2way,
                colourfulness: colourfulness(&recons),
                features: if wants_features {
                    self.features(&recons)?
                } else {
                    None
                },
            });
            if !matches!(keep, Keep::AreaWindow(..)) {
                grids.insert(keep.label(), recons[..self.grid_rows].to_vec());
            }
            self.bar.inc(1);
        }
        Ok((conditions, grids))
    }
}

/// The colourfulness of each image.
fn colourfulness(images: &[Vec<f32>]) -> Vec<f64> {
    images.iter().map(|i| analysis::colourfulness(i)).collect()
}

/// The measures of relative correlations: AlexNet's layers, or pixel r.
fn measures(c: &ConditionScores) -> Vec<(String, f64)> {
    match &c.features {
        Some(layers) => layers.iter().map(|l| (l.layer.clone(), l.r)).collect(),
        None => vec![("pixel".into(), c.pixel_r)],
    }
}

/// Per measure, each of `keeps`' value over the largest (NaN when that is not positive);
/// `None` unless the model has every one of `keeps`.
fn relative(m: &ModelReport, keeps: &[Keep]) -> Option<BTreeMap<String, Vec<f64>>> {
    let per_keep: Vec<_> = keeps
        .iter()
        .map(|&k| m.condition(k).map(measures))
        .collect::<Option<_>>()?;
    let by_measure = per_keep.first()?.iter().enumerate().map(|(i, (name, _))| {
        let values: Vec<f64> = per_keep.iter().map(|v| v[i].1).collect();
        let best = values.iter().copied().fold(f64::MIN, f64::max);
        let rel = values
            .iter()
            .map(|v| if best > 0.0 { v / best } else { f64::NAN });
        (name.clone(), rel.collect())
    });
    Some(by_measure.collect())
}

/// Fills the model's relative correlations: each area alone over the best area, and with
/// more than one window, each area's one window alone over its best window.
fn relative_correlations(report: &mut ModelReport, windows: usize) {
    if let Some(by_measure) = relative(report, &Area::ALL.map(Keep::Only)) {
        for (measure, v) in by_measure {
            let by_area = Area::ALL.iter().map(|a| a.name().to_string()).zip(v);
            report.relative_areas.insert(measure, by_area.collect());
        }
    }
    for a in Area::ALL.into_iter().filter(|_| windows > 1) {
        let keeps: Vec<Keep> = (0..windows).map(|w| Keep::AreaWindow(a, w)).collect();
        if let Some(by_measure) = relative(report, &keeps) {
            report
                .relative_windows
                .insert(a.name().to_string(), by_measure);
        }
    }
}

/// Per area, the size–eccentricity lines of the learned, start and true RFs.
fn size_eccentricity(rfs: &RfSets) -> BTreeMap<String, AreaRfs> {
    Area::ALL
        .iter()
        .map(|&area| {
            let [learned, start, truth] = rfs
                .select(|e| rfs.area[e] == area)
                .map(|v| analysis::size_vs_eccentricity(&v));
            let fits = AreaRfs {
                learned,
                start,
                truth,
            };
            (area.name().to_string(), fits)
        })
        .collect()
}
