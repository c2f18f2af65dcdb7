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
//!   known) true RFs per array (`rf-MODEL.png`) and RF size against eccentricity per
//!   area with least-squares lines (`rf-size-MODEL.png`);
//! - **relative correlations** (Figs 8–10) per area and per area's window, each
//!   normalised by the best area (or the area's best window) (`relative-MODEL.png`); with
//!   AlexNet per layer, without it on pixel r;
//! - **area-restricted models** (Fig. 12): models trained with `train --areas` beside the
//!   one on every area and the linear decoder of the same areas (`areas.png`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::analysis::{self, RfDeg, SizeEccentricity};
use super::figures::{self, BarPanel, HistPanel, RfPanel, Scatter, ScatterPanel};
use super::occlusion::{self, Keep, RawTests};
use super::{ModelMetrics, TestImages};
use crate::alexnet::{AlexNet, LayerCorrelation};
use crate::config::window_set;
use crate::decoder::{CpuBackend, Decoder};
use crate::norm::NormStats;
use crate::units::Area;

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
}

/// What the report needs from the main evaluation.
pub(super) struct Inputs<'a> {
    pub tests: &'a TestImages<'a>,
    pub models: &'a [PathBuf],
    pub entries: &'a [ModelMetrics],
    /// Each model's repeat-averaged reconstructions in eval's metrics table.
    pub recons: &'a [Vec<Vec<f32>>],
    /// The linear decoder's repeat-averaged reconstructions, when it was fitted.
    pub linear: Option<&'a [Vec<f32>]>,
    /// torchvision's AlexNet, loaded before the long steps so a bad file fails first.
    pub alexnet: Option<&'a AlexNet<CpuBackend>>,
    pub out: &'a Path,
    pub grid_images: usize,
    pub progress: bool,
}

/// The measures of relative correlations: AlexNet's layers, or pixel r.
fn measures(c: &ConditionScores) -> Vec<(String, f64)> {
    match &c.features {
        Some(layers) => layers.iter().map(|l| (l.layer.clone(), l.r)).collect(),
        None => vec![("pixel".into(), c.pixel_r)],
    }
}

/// `value / best` per key, with `best` the largest value (NaN when it is not positive).
fn relative(values: &[f64]) -> Vec<f64> {
    let best = values.iter().copied().fold(f64::MIN, f64::max);
    values
        .iter()
        .map(|v| if best > 0.0 { v / best } else { f64::NAN })
        .collect()
}

/// Runs every analysis and writes the page; returns its numbers.
pub(super) fn write(inputs: &Inputs<'_>) -> anyhow::Result<ReportSummary> {
    let t = inputs.tests;
    let size = t.ds.meta.image_size;
    let mut notes = Vec::new();
    let device = Default::default();
    let alexnet = inputs.alexnet;
    if alexnet.is_none() {
        notes.push("feature correlation (paper Table 1) skipped: no --alexnet FILE.pth (torchvision's AlexNet, alexnet-owt-7be5be79.pth, supplied by you: nothing is downloaded); relative correlations use pixel r instead".into());
    }
    let original_features = alexnet
        .map(|net| crate::alexnet::Features::of(net, &t.originals, size, &device))
        .transpose()?;
    let correlate = |recons: &[Vec<f32>]| -> anyhow::Result<Option<Vec<LayerCorrelation>>> {
        match (alexnet, &original_features) {
            (Some(net), Some(orig)) => {
                let f = crate::alexnet::Features::of(net, recons, size, &device)?;
                Ok(Some(f.correlations(orig)))
            }
            _ => Ok(None),
        }
    };
    if t.ds.meta.time_averaged {
        notes.push(format!("{} is time-averaged: it has no pre-stimulus baseline, so occluded inputs are set to their mean over presentations (0) instead", t.ds.dir.display()));
    }
    let areas: Vec<Area> = t.rig.electrodes.iter().map(|e| e.area).collect();
    // Rig areas present: a model reading all of them is labelled `all`.
    let rig_areas = analysis::areas_read(&areas, &[]);
    let bar = crate::telemetry::progress_bar(inputs.progress, 0, "conditions");
    bar.set_message("report");
    let mut models = Vec::new();
    let mut figures_drawn = Vec::new();
    let mut raw_cache: Vec<(crate::config::WindowSetKind, RawTests)> = Vec::new();
    for ((dir, entry), recons) in inputs.models.iter().zip(inputs.entries).zip(inputs.recons) {
        let decoder = Decoder::<CpuBackend>::load(dir, &device)
            .with_context(|| format!("loading model {}", dir.display()))?;
        let cfg = decoder.config().clone();
        let set = window_set(cfg.kind);
        let per = t.rig.windows.windows_per_electrode(set);
        let stats = NormStats::load(dir, per, t.rig.electrodes.len())?
            .with_context(|| format!("{} has no normalization.json", dir.display()))?;
        if !raw_cache.iter().any(|(k, _)| *k == set) {
            let raw = RawTests::new(t.ds, t.rig, set, &t.by_image);
            if raw.unusable > 0 {
                notes.push(format!("occlusion: {} test images have no presentation whose window and baseline means are all finite; every input of theirs is 0 (the mean)", raw.unusable));
            }
            raw_cache.push((set, raw));
        }
        let raw = &raw_cache
            .iter()
            .find(|(k, _)| *k == set)
            .expect("just added")
            .1;
        let keeps = Keep::conditions(per);
        bar.inc_length(keeps.len() as u64);
        let mut conditions = Vec::new();
        let mut grids: BTreeMap<String, Vec<Vec<f32>>> = BTreeMap::new();
        for keep in keeps {
            bar.set_message(format!("{} {}", entry.name, keep.label()));
            let recons = occlusion::reconstruct(&decoder, raw, &stats, &areas, keep)?;
            let scores = super::averaged_scores(&recons, &t.originals, size);
            let wants_features = matches!(keep, Keep::All | Keep::Only(_) | Keep::AreaWindow(..));
            conditions.push(ConditionScores {
                condition: keep.label(),
                pixel_r: scores.pixel_r,
                ssim: scores.ssim,
                ident_top1: scores.ident_top1,
                ident_2way: scores.ident_2way,
                colourfulness: recons.iter().map(|r| analysis::colourfulness(r)).collect(),
                features: if wants_features {
                    correlate(&recons)?
                } else {
                    None
                },
            });
            if !matches!(keep, Keep::AreaWindow(..)) {
                grids.insert(keep.label(), recons);
            }
            bar.inc(1);
        }
        let mut report = ModelReport {
            name: entry.name.clone(),
            kind: cfg.kind.to_string(),
            areas: {
                let read = analysis::areas_read(&areas, &stats.dropped);
                if read == rig_areas {
                    "all".to_string()
                } else {
                    analysis::areas_label(&read)
                }
            },
            conditions,
            features: correlate(recons)?,
            relative_areas: BTreeMap::new(),
            relative_windows: BTreeMap::new(),
            rf_size_eccentricity: BTreeMap::new(),
        };
        // A model restricted to some areas has its rows in the tables; the per-area
        // pictures (one area kept, its other inputs dropped) would show little.
        if report.areas == "all" {
            relative_correlations(&mut report, per);
            figures_drawn.extend(occlusion_grids(inputs, &report, &grids, per)?);
        }
        if let Some(layer) = decoder.model().gaussian.as_ref() {
            let (fits, drawn) = rf_figures(inputs, &report.name, layer, &cfg)?;
            report.rf_size_eccentricity = fits;
            figures_drawn.extend(drawn);
        }
        models.push(report);
    }
    bar.finish_and_clear();
    let linear_features = match inputs.linear {
        Some(l) => correlate(l)?,
        None => None,
    };
    let summary = ReportSummary {
        original_colourfulness: t
            .originals
            .iter()
            .map(|o| analysis::colourfulness(o))
            .collect(),
        models,
        linear_features,
        notes,
        figures: figures_drawn,
    };
    finish(inputs, summary)
}

/// Fills the model's relative correlations from its conditions.
fn relative_correlations(report: &mut ModelReport, windows: usize) {
    let only: Vec<&ConditionScores> = Area::ALL
        .iter()
        .filter_map(|&a| report.condition(Keep::Only(a)))
        .collect();
    if only.len() == Area::ALL.len() {
        let per_area: Vec<Vec<(String, f64)>> = only.iter().map(|c| measures(c)).collect();
        for (m, (name, _)) in per_area[0].iter().enumerate() {
            let rel = relative(&per_area.iter().map(|v| v[m].1).collect::<Vec<_>>());
            report.relative_areas.insert(
                name.clone(),
                Area::ALL
                    .iter()
                    .zip(rel)
                    .map(|(a, r)| (a.name().to_string(), r))
                    .collect(),
            );
        }
    }
    if windows < 2 {
        return;
    }
    for a in Area::ALL {
        let per_window: Vec<Vec<(String, f64)>> = (0..windows)
            .filter_map(|w| report.condition(Keep::AreaWindow(a, w)).map(measures))
            .collect();
        if per_window.len() != windows {
            continue;
        }
        let mut by_measure = BTreeMap::new();
        for (m, (name, _)) in per_window[0].iter().enumerate() {
            by_measure.insert(
                name.clone(),
                relative(&per_window.iter().map(|v| v[m].1).collect::<Vec<_>>()),
            );
        }
        report
            .relative_windows
            .insert(a.name().to_string(), by_measure);
    }
}

/// `occlusion-MODEL.png` (and `temporal-MODEL.png`): the test images' reconstructions under
/// each condition. Returns the files written.
fn occlusion_grids(
    inputs: &Inputs<'_>,
    report: &ModelReport,
    grids: &BTreeMap<String, Vec<Vec<f32>>>,
    windows: usize,
) -> anyhow::Result<Vec<String>> {
    let t = inputs.tests;
    let n = t.originals.len().min(inputs.grid_images).min(8);
    let mut written = Vec::new();
    let mut draw = |file: String, keeps: Vec<Keep>| -> anyhow::Result<()> {
        let mut titles = vec!["stimulus".to_string()];
        titles.extend(keeps.iter().map(|k| k.label()));
        let rows: Vec<Vec<&[f32]>> = (0..n)
            .map(|i| {
                std::iter::once(t.originals[i].as_slice())
                    .chain(keeps.iter().map(|k| grids[&k.label()][i].as_slice()))
                    .collect()
            })
            .collect();
        written.push(file.clone());
        crate::plot::image_grid(
            &inputs.out.join(file),
            &titles,
            &rows,
            t.ds.meta.image_size,
            1,
        )
    };
    let mut spatial = vec![Keep::All];
    spatial.extend(Area::ALL.map(Keep::AllBut));
    spatial.extend(Area::ALL.map(Keep::Only));
    draw(format!("occlusion-{}.png", report.name), spatial)?;
    if windows > 1 {
        let mut temporal = vec![Keep::All];
        temporal.extend((0..windows).map(Keep::Window));
        draw(format!("temporal-{}.png", report.name), temporal)?;
    }
    Ok(written)
}

/// A learned RF layer's RFs in degrees: learned, where training started, and the truth
/// (when known), with each electrode's array and area.
struct RfSets {
    learned: Vec<RfDeg>,
    start: Vec<RfDeg>,
    truth: Vec<Option<RfDeg>>,
    array: Vec<usize>,
    area: Vec<Area>,
}

fn rf_sets(
    inputs: &Inputs<'_>,
    layer: &crate::decoder::GaussianRfLayer<CpuBackend>,
    cfg: &crate::decoder::DecoderConfig,
) -> anyhow::Result<RfSets> {
    let rig = inputs.tests.rig;
    let host = |t: burn::tensor::Tensor<CpuBackend, 1>| -> anyhow::Result<Vec<f32>> {
        t.into_data().to_vec().map_err(|e| anyhow::anyhow!("{e:?}"))
    };
    let (mx, my, sg) = (
        host(layer.mu_x.val())?,
        host(layer.mu_y.val())?,
        host(layer.sigma())?,
    );
    let (c, ppd) = (rig.image_size as f64 / 2.0, rig.rf.pixels_per_degree);
    let deg = |x: f32, y: f32, s: f32| RfDeg {
        x: (x as f64 - c) / ppd,
        y: (c - y as f64) / ppd,
        sigma: s as f64 / ppd,
    };
    let start = crate::decoder::input::initial_rfs(cfg);
    Ok(RfSets {
        learned: (0..mx.len()).map(|e| deg(mx[e], my[e], sg[e])).collect(),
        start: start.iter().map(|s| deg(s[0], s[1], s[2])).collect(),
        truth: rig
            .electrodes
            .iter()
            .map(|el| {
                inputs
                    .tests
                    .truth
                    .as_ref()
                    .and_then(|t| t.get(el.channel))
                    .map(|t| RfDeg {
                        x: t.x_deg,
                        y: t.y_deg,
                        sigma: t.size_deg,
                    })
            })
            .collect(),
        array: cfg.electrodes.iter().map(|e| e.array).collect(),
        area: rig.electrodes.iter().map(|e| e.area).collect(),
    })
}

/// `rf-map-MODEL.png` and `rf-size-MODEL.png`; the size–eccentricity lines per area, and
/// the files drawn.
fn rf_figures(
    inputs: &Inputs<'_>,
    name: &str,
    layer: &crate::decoder::GaussianRfLayer<CpuBackend>,
    cfg: &crate::decoder::DecoderConfig,
) -> anyhow::Result<(BTreeMap<String, AreaRfs>, Vec<String>)> {
    let s = rf_sets(inputs, layer, cfg)?;
    let pick = |set: &[RfDeg], keep: &dyn Fn(usize) -> bool| -> Vec<RfDeg> {
        (0..set.len())
            .filter(|&e| keep(e))
            .map(|e| set[e])
            .collect()
    };
    let truth_of = |keep: &dyn Fn(usize) -> bool| -> Vec<RfDeg> {
        (0..s.truth.len())
            .filter(|&e| keep(e))
            .filter_map(|e| s.truth[e])
            .collect()
    };
    let mut panels = Vec::new();
    for a in 0..cfg.n_arrays {
        let in_array = |e: usize| s.array[e] == a;
        let area = (0..s.area.len()).find(|&e| in_array(e)).map(|e| s.area[e]);
        let truth = truth_of(&in_array);
        panels.push(RfPanel {
            title: format!("array {a} ({})", area.map_or("?", |a| a.name())),
            start: pick(&s.start, &in_array),
            learned: pick(&s.learned, &in_array),
            truth: (!truth.is_empty()).then_some(truth),
        });
    }
    let mut drawn = Vec::new();
    let map = format!("rf-map-{name}.png");
    if figures::rf_maps(&inputs.out.join(&map), &panels, 5)? {
        drawn.push(map);
    }
    let mut fits = BTreeMap::new();
    let mut scatter = Vec::new();
    for area in Area::ALL {
        let in_area = |e: usize| s.area[e] == area;
        let sets = [
            ("learned", pick(&s.learned, &in_area)),
            ("start", pick(&s.start, &in_area)),
            ("truth", truth_of(&in_area)),
        ];
        let fit: Vec<Option<SizeEccentricity>> = sets
            .iter()
            .map(|(_, v)| analysis::size_vs_eccentricity(v))
            .collect();
        scatter.push(ScatterPanel {
            title: format!("{area}: RF size vs eccentricity"),
            x_desc: "eccentricity (deg)".into(),
            y_desc: "RF sigma (deg)".into(),
            series: sets
                .iter()
                .zip(&fit)
                .filter(|((_, v), _)| !v.is_empty())
                .map(|((label, v), f)| Scatter {
                    name: match f {
                        Some(f) => format!("{label}: slope {:.3}", f.slope),
                        None => label.to_string(),
                    },
                    points: v.iter().map(|r| (r.eccentricity(), r.sigma)).collect(),
                    line: f.as_ref().map(|f| (f.slope, f.intercept_deg)),
                    joined: false,
                })
                .collect(),
        });
        let mut fit = fit.into_iter();
        fits.insert(
            area.name().to_string(),
            AreaRfs {
                learned: fit.next().flatten(),
                start: fit.next().flatten(),
                truth: fit.next().flatten(),
            },
        );
    }
    let size = format!("rf-size-{name}.png");
    if figures::scatter(&inputs.out.join(&size), &scatter, 3)? {
        drawn.push(size);
    }
    Ok((fits, drawn))
}

/// One score of a condition.
type Measure = fn(&ConditionScores) -> f64;

/// The summary figures across models, `report.json` and `report.html`.
fn finish(inputs: &Inputs<'_>, mut s: ReportSummary) -> anyhow::Result<ReportSummary> {
    let out = inputs.out;
    let mut figs = vec!["grid.png".to_string()];
    figs.append(&mut s.figures);
    let mut add = |name: &str, drawn: bool| {
        if drawn {
            figs.push(name.to_string());
        }
    };
    // Occlusion: the drop per area (full − without the area).
    let drop = |m: &ModelReport, keep: Keep, f: fn(&ConditionScores) -> f64| -> f64 {
        match (m.condition(Keep::All), m.condition(keep)) {
            (Some(a), Some(b)) => f(a) - f(b),
            _ => f64::NAN,
        }
    };
    let metrics: [(&str, Measure); 3] = [
        ("pixel r", |c| c.pixel_r),
        ("SSIM", |c| c.ssim),
        ("identification", |c| c.ident_top1),
    ];
    let occl: Vec<BarPanel> = metrics
        .iter()
        .map(|(label, f)| BarPanel {
            title: format!("drop in {label} without an area"),
            y_desc: format!("{label}: all − occluded"),
            categories: Area::ALL.iter().map(|a| format!("no {a}")).collect(),
            series: s
                .models
                .iter()
                .map(|m| {
                    (
                        m.name.clone(),
                        Area::ALL
                            .iter()
                            .map(|&a| drop(m, Keep::AllBut(a), *f))
                            .collect(),
                    )
                })
                .collect(),
        })
        .collect();
    add(
        "occlusion.png",
        figures::bars(&out.join("occlusion.png"), &occl, 3)?,
    );
    let temporal: Vec<&ModelReport> = s
        .models
        .iter()
        .filter(|m| m.condition(Keep::Window(0)).is_some())
        .collect();
    if let Some(windows) = temporal.first().map(|m| {
        m.conditions
            .iter()
            .filter(|c| c.condition.ends_with(" only") && c.condition.starts_with('w'))
            .count()
    }) {
        let panels: Vec<BarPanel> = metrics
            .iter()
            .map(|(label, f)| BarPanel {
                title: format!("drop in {label} keeping one window"),
                y_desc: format!("{label}: all − one window"),
                categories: (0..windows).map(|w| format!("w{w} only")).collect(),
                series: temporal
                    .iter()
                    .map(|m| {
                        let v = (0..windows).map(|w| drop(m, Keep::Window(w), *f)).collect();
                        (m.name.clone(), v)
                    })
                    .collect(),
            })
            .collect();
        add(
            "temporal.png",
            figures::bars(&out.join("temporal.png"), &panels, 3)?,
        );
    }
    // Colourfulness: originals, all, each area alone.
    let colour: Vec<HistPanel> = s
        .models
        .iter()
        .filter(|m| m.areas == "all")
        .map(|m| {
            let mut series = vec![("originals".to_string(), s.original_colourfulness.clone())];
            for keep in std::iter::once(Keep::All).chain(Area::ALL.map(Keep::Only)) {
                if let Some(c) = m.condition(keep) {
                    series.push((keep.label(), c.colourfulness.clone()));
                }
            }
            HistPanel {
                title: format!("{}: colourfulness", m.name),
                x_desc: "colourfulness (Hasler-Süsstrunk, 0-255 scale)".into(),
                series,
                bins: 20,
            }
        })
        .collect();
    add(
        "colourfulness.png",
        figures::histograms(&out.join("colourfulness.png"), &colour, 3)?,
    );
    // Relative correlations.
    for m in &s.models {
        let mut panels = Vec::new();
        if !m.relative_areas.is_empty() {
            let measures: Vec<String> = m.relative_areas.keys().cloned().collect();
            panels.push(BarPanel {
                title: format!("{}: relative correlation per area", m.name),
                y_desc: "r / best area's r".into(),
                categories: measures.clone(),
                series: Area::ALL
                    .iter()
                    .map(|a| {
                        (
                            format!("{a} only"),
                            measures
                                .iter()
                                .map(|k| m.relative_areas[k][a.name()])
                                .collect(),
                        )
                    })
                    .collect(),
            });
        }
        let mut line_panels = Vec::new();
        for (area, by_measure) in &m.relative_windows {
            line_panels.push(ScatterPanel {
                title: format!("{}: {area}, one window", m.name),
                x_desc: "window".into(),
                y_desc: "r / area's best window".into(),
                series: by_measure
                    .iter()
                    .map(|(k, v)| Scatter {
                        name: k.clone(),
                        points: v.iter().enumerate().map(|(w, &r)| (w as f64, r)).collect(),
                        line: None,
                        joined: true,
                    })
                    .collect(),
            });
        }
        let file = format!("relative-areas-{}.png", m.name);
        add(&file, figures::bars(&out.join(&file), &panels, 1)?);
        if !line_panels.is_empty() {
            let file = format!("relative-windows-{}.png", m.name);
            add(&file, figures::scatter(&out.join(&file), &line_panels, 3)?);
        }
    }
    // Area-restricted models beside the linear decoder on the same areas: every area set
    // a linear decoder or a model reads.
    let linear_of = |label: &str| -> Option<&ModelMetrics> {
        let key = if label == "all" {
            "linear".to_string()
        } else {
            format!("linear_{label}")
        };
        inputs.entries.iter().find(|e| e.name == key)
    };
    {
        let labels: Vec<String> = {
            let mut l: Vec<String> = s.models.iter().map(|m| m.areas.clone()).collect();
            l.extend(inputs.entries.iter().filter_map(|e| {
                let areas = &e.linear.as_ref()?.areas;
                Some(if areas.len() == Area::ALL.len() {
                    "all".into()
                } else {
                    areas.join("+")
                })
            }));
            // V1, V4, IT, then pairs, then all.
            let first = |x: &str| Area::ALL.iter().position(|a| x.starts_with(a.name()));
            l.sort_by_key(|x| (x == "all", x.split('+').count(), first(x)));
            l.dedup();
            l.retain(|x| !x.is_empty());
            l
        };
        let by_label = |label: &str| {
            inputs
                .entries
                .iter()
                .zip(&s.models)
                .find(|(_, m)| m.areas == label && m.kind == "spatial")
                .or_else(|| {
                    inputs
                        .entries
                        .iter()
                        .zip(&s.models)
                        .find(|(_, m)| m.areas == label)
                })
        };
        let panels: Vec<BarPanel> = [("pixel r", 0), ("SSIM", 1), ("identification", 2)]
            .iter()
            .map(|(label, k)| {
                let pick = |e: &ModelMetrics| match k {
                    0 => e.scores.pixel_r,
                    1 => e.scores.ssim,
                    _ => e.scores.ident_top1,
                };
                BarPanel {
                    title: format!("{label} by the areas read"),
                    y_desc: (*label).to_string(),
                    categories: labels.clone(),
                    series: vec![
                        (
                            "decoder".into(),
                            labels
                                .iter()
                                .map(|l| by_label(l).map_or(f64::NAN, |(e, _)| pick(e)))
                                .collect(),
                        ),
                        (
                            "linear".into(),
                            labels
                                .iter()
                                .map(|l| linear_of(l).map_or(f64::NAN, pick))
                                .collect(),
                        ),
                    ],
                }
            })
            .collect();
        add(
            "areas.png",
            figures::bars(&out.join("areas.png"), &panels, 3)?,
        );
    }
    if s.models.iter().all(|m| m.areas == "all") {
        s.notes.push("no area-restricted models given (train them with `monkeysee train --areas V1` etc. and pass them with --model): the area comparison has the decoders on every area and the linear decoders per area".into());
    }
    // Feature correlations (Table 1).
    if s.models.iter().any(|m| m.features.is_some()) {
        let layers: Vec<String> = crate::alexnet::LAYERS.map(String::from).to_vec();
        let mut series: Vec<(String, Vec<f64>)> = s
            .models
            .iter()
            .filter_map(|m| {
                m.features
                    .as_ref()
                    .map(|f| (m.name.clone(), f.iter().map(|l| l.r).collect()))
            })
            .collect();
        if let Some(l) = &s.linear_features {
            series.push(("linear".into(), l.iter().map(|l| l.r).collect()));
        }
        let panel = BarPanel {
            title: "AlexNet feature correlation (Table 1)".into(),
            y_desc: "r".into(),
            categories: layers,
            series,
        };
        add(
            "features.png",
            figures::bars(&out.join("features.png"), &[panel], 1)?,
        );
    }
    if !crate::plot::have_font() {
        s.notes.push("no font found (install fonts-dejavu-core or set MONKEYSEE_FONT): plots were not drawn; every number is in report.json".into());
    }
    figs.sort();
    figs.dedup();
    s.figures = figs;
    let json = out.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(&s)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let html = out.join("report.html");
    std::fs::write(&html, page(inputs, &s))
        .with_context(|| format!("writing {}", html.display()))?;
    Ok(s)
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A file name as a relative URL (the characters a URL gives a meaning to, encoded).
fn url(file: &str) -> String {
    file.chars()
        .map(|c| match c {
            '%' | '#' | '?' | ' ' | '"' | '\'' | '<' | '>' | '&' => format!("%{:02X}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "–".into()
    }
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    (
        m,
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt(),
    )
}

/// The page: every table, the figures, the notes.
fn page(inputs: &Inputs<'_>, s: &ReportSummary) -> String {
    let t = inputs.tests;
    let mut h = String::new();
    let img = |h: &mut String, file: &str, caption: &str| {
        if s.figures.iter().any(|f| f == file) {
            let _ = writeln!(
                h,
                "<figure><img src=\"{0}\" alt=\"{1}\"><figcaption>{1}</figcaption></figure>",
                url(file),
                esc(caption)
            );
        }
    };
    // Each model's figure `PREFIX-MODEL.png`.
    let per_model = |h: &mut String, prefix: &str, caption: &str| {
        for m in &s.models {
            img(
                h,
                &format!("{prefix}-{}.png", m.name),
                &format!("{}: {caption}", m.name),
            );
        }
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>monkeysee eval report</title>\n<style>\nbody{{font-family:sans-serif;max-width:1500px;margin:2em auto;padding:0 1em;color:#222}}\ntable{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #bbb;padding:3px 8px;text-align:right}}\nth:first-child,td:first-child{{text-align:left}}img{{max-width:100%;border:1px solid #ddd}}\nfigure{{margin:1em 0}}figcaption{{color:#555;font-size:90%}}.note{{color:#8a4b00}}\n</style></head><body>\n<h1>monkeysee eval report</h1>\n<p>Dataset <code>{}</code>: {} test images ({} px), rig <code>{}</code>. Repeat-averaged inputs; chance levels from shuffled pairings. Numbers: <code>metrics.json</code>, <code>report.json</code>.</p>\n",
        esc(&t.ds.dir.display().to_string()),
        t.originals.len(),
        t.ds.meta.image_size,
        esc(&t.rig.path.display().to_string()),
    );
    for n in &s.notes {
        let _ = writeln!(h, "<p class=\"note\">Note: {}</p>", esc(n));
    }
    // Metrics.
    h.push_str("<h2>Scores</h2>\n<table><tr><th>entry</th><th>kind</th><th>pixel r</th><th>chance</th><th>SSIM</th><th>chance</th><th>identification</th><th>chance</th><th>2-way</th><th>single-trial r</th></tr>\n");
    for e in inputs.entries {
        let sc = &e.scores;
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.name), esc(&e.kind), num(sc.pixel_r), num(sc.pixel_r_chance), num(sc.ssim),
            num(sc.ssim_chance), num(sc.ident_top1), num(sc.ident_top1_chance), num(sc.ident_2way),
            num(sc.single_trial_pixel_r)
        );
    }
    h.push_str("</table>\n<p>Linear entries: ridge regression from the TW-15 window means of the named areas' electrodes, fitted on the train split.</p>\n");
    img(
        &mut h,
        "grid.png",
        "Stimuli and reconstructions (paper Fig. 1 style).",
    );
    // Table 1.
    h.push_str("<h2>Feature correlation (paper Table 1)</h2>\n");
    if s.models.iter().any(|m| m.features.is_some()) {
        let layers: Vec<String> = crate::alexnet::LAYERS.map(String::from).to_vec();
        h.push_str("<p>Pearson r between AlexNet features of reconstructions and originals, one r per layer over all test images' features together; MSE of the same features below it.</p>\n<table><tr><th>entry</th>");
        for l in &layers {
            let _ = write!(h, "<th>{}</th>", esc(l));
        }
        h.push_str("</tr>\n");
        let rows = s
            .models
            .iter()
            .filter_map(|m| m.features.as_ref().map(|f| (m.name.as_str(), f)))
            .chain(s.linear_features.as_ref().map(|f| ("linear", f)));
        for (name, f) in rows {
            let _ = write!(h, "<tr><td>{}</td>", esc(name));
            for l in f {
                let _ = write!(h, "<td>{}<br><small>{:.3e}</small></td>", num(l.r), l.mse);
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
        img(
            &mut h,
            "features.png",
            "AlexNet feature correlation per layer.",
        );
    } else {
        h.push_str("<p class=\"note\">Skipped: give <code>--alexnet alexnet-owt-7be5be79.pth</code> (torchvision's file).</p>\n");
    }
    // Occlusion.
    h.push_str("<h2>Occlusion (paper Figs 2–3)</h2>\n<p>Inputs of the occluded area (or window) set to the same presentation's pre-stimulus baseline, z-scored with the model's statistics. Scores of repeat-averaged reconstructions.</p>\n<table><tr><th>model</th><th>condition</th><th>pixel r</th><th>SSIM</th><th>identification</th><th>2-way</th><th>drop in pixel r</th><th>drop in SSIM</th><th>drop in identification</th></tr>\n");
    for m in &s.models {
        let all = &m.conditions[0];
        for c in &m.conditions {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&m.name), esc(&c.condition), num(c.pixel_r), num(c.ssim), num(c.ident_top1),
                num(c.ident_2way), num(all.pixel_r - c.pixel_r), num(all.ssim - c.ssim),
                num(all.ident_top1 - c.ident_top1)
            );
        }
    }
    h.push_str("</table>\n");
    img(
        &mut h,
        "occlusion.png",
        "Drop in each score when one area is occluded.",
    );
    per_model(&mut h, "occlusion", "reconstructions with areas occluded.");
    if s.figures.iter().any(|f| f == "temporal.png") {
        h.push_str("<h3>Temporal occlusion (spatiotemporal decoder)</h3>\n");
        img(
            &mut h,
            "temporal.png",
            "Scores from one latency window of every area, the others at baseline.",
        );
        per_model(&mut h, "temporal", "reconstructions from one window.");
    } else {
        h.push_str("<p>Temporal occlusion needs a spatiotemporal model (<code>train --kind spatiotemporal</code>); none was given.</p>\n");
    }
    // Colourfulness.
    h.push_str("<h2>Colourfulness</h2>\n<p>Hasler &amp; Süsstrunk (2003): C = √(σ<sub>rg</sub>² + σ<sub>yb</sub>²) + 0.3·√(μ<sub>rg</sub>² + μ<sub>yb</sub>²), rg = R − G, yb = ½(R + G) − B, on the 0–255 scale. Mean ± SD over the test images.</p>\n<table><tr><th>model</th><th>originals</th><th>all</th>");
    for a in Area::ALL {
        let _ = write!(h, "<th>{a} only</th>");
    }
    h.push_str("</tr>\n");
    let (om, osd) = mean_sd(&s.original_colourfulness);
    for m in &s.models {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:.1} ± {:.1}</td>",
            esc(&m.name),
            om,
            osd
        );
        for keep in std::iter::once(Keep::All).chain(Area::ALL.map(Keep::Only)) {
            match m.condition(keep) {
                Some(c) => {
                    let (cm, csd) = mean_sd(&c.colourfulness);
                    let _ = write!(h, "<td>{cm:.1} ± {csd:.1}</td>");
                }
                None => h.push_str("<td>–</td>"),
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    img(
        &mut h,
        "colourfulness.png",
        "Colourfulness of reconstructions from each area alone, beside the originals.",
    );
    // RFs.
    h.push_str("<h2>Receptive fields (paper Figs 6–7)</h2>\n");
    let learned: Vec<&ModelReport> = s
        .models
        .iter()
        .filter(|m| !m.rf_size_eccentricity.is_empty())
        .collect();
    if learned.is_empty() {
        h.push_str(
            "<p>No model with learned RFs (<code>train --kind end-to-end</code>) was given.</p>\n",
        );
    }
    for m in learned {
        h.push_str("<table><tr><th>model, area</th><th>learned slope</th><th>intercept (deg)</th><th>r</th><th>start slope</th><th>true slope</th></tr>\n");
        for (area, f) in &m.rf_size_eccentricity {
            let sl = |x: &Option<SizeEccentricity>| x.as_ref().map_or(f64::NAN, |f| f.slope);
            let _ = writeln!(
                h,
                "<tr><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&m.name),
                esc(area),
                num(sl(&f.learned)),
                num(f.learned.as_ref().map_or(f64::NAN, |f| f.intercept_deg)),
                num(f.learned.as_ref().map_or(f64::NAN, |f| f.r)),
                num(sl(&f.start)),
                num(sl(&f.truth))
            );
        }
        h.push_str("</table>\n");
        for (prefix, caption) in [
            (
                "rf-map",
                "RFs per array: start (grey), learned (blue, circle of radius σ), truth (green).",
            ),
            (
                "rf-size",
                "RF size against eccentricity, least-squares lines.",
            ),
        ] {
            img(
                &mut h,
                &format!("{prefix}-{}.png", m.name),
                &format!("{}: {caption}", m.name),
            );
        }
    }
    // Relative correlations.
    h.push_str("<h2>Relative correlations (paper Figs 8–10)</h2>\n<p>Each area alone (the others at baseline): its correlation over the best area's, per measure. For the spatiotemporal decoder, each area's one window alone, over that area's best window.</p>\n");
    for m in &s.models {
        if m.relative_areas.is_empty() {
            continue;
        }
        let _ = write!(h, "<table><tr><th>{}</th>", esc(&m.name));
        for a in Area::ALL {
            let _ = write!(h, "<th>{a}</th>");
        }
        h.push_str("</tr>\n");
        for (measure, by_area) in &m.relative_areas {
            let _ = write!(h, "<tr><td>{}</td>", esc(measure));
            for a in Area::ALL {
                let _ = write!(
                    h,
                    "<td>{}</td>",
                    num(by_area.get(a.name()).copied().unwrap_or(f64::NAN))
                );
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
        for (prefix, caption) in [
            ("relative-areas", "relative correlation per area."),
            ("relative-windows", "relative correlation per window."),
        ] {
            img(
                &mut h,
                &format!("{prefix}-{}.png", m.name),
                &format!("{}: {caption}", m.name),
            );
        }
    }
    // Areas.
    h.push_str("<h2>Area-restricted models (paper Fig. 12)</h2>\n<table><tr><th>entry</th><th>areas</th><th>pixel r</th><th>SSIM</th><th>identification</th></tr>\n");
    for (e, m) in inputs.entries.iter().zip(&s.models) {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.name),
            esc(&m.areas),
            num(e.scores.pixel_r),
            num(e.scores.ssim),
            num(e.scores.ident_top1)
        );
    }
    for e in inputs.entries.iter().filter(|e| e.linear.is_some()) {
        let areas = e
            .linear
            .as_ref()
            .map(|l| l.areas.join("+"))
            .unwrap_or_default();
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.name),
            esc(&areas),
            num(e.scores.pixel_r),
            num(e.scores.ssim),
            num(e.scores.ident_top1)
        );
    }
    h.push_str("</table>\n");
    img(
        &mut h,
        "areas.png",
        "Decoders trained on some areas beside the linear decoder of the same areas.",
    );
    h.push_str("</body></html>\n");
    h
}
