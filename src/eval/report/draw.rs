//! The report's figures, drawn from the analyses' numbers and what they kept to show
//! ([`Shown`]) with [`crate::eval::figures`] and [`crate::plot`]. A chart needs a font; one
//! not drawn is left out of the list the page shows.

use std::path::Path;

use super::analyses::Shown;
use super::{ConditionScores, Inputs, ModelReport, ReportSummary};
use crate::eval::figures::{self, BarPanel, HistPanel, RfPanel, Scatter, ScatterPanel};
use crate::eval::occlusion::Keep;
use crate::eval::{ModelMetrics, RfSets, Scores};
use crate::units::Area;

/// A score's name, and how to read it off a `T`.
type Score<T> = (&'static str, fn(&T) -> f64);

/// The scores the charts compare, of a condition and of an entry.
const CONDITION_SCORES: [Score<ConditionScores>; 3] = [
    ("pixel r", |c| c.pixel_r),
    ("SSIM", |c| c.ssim),
    ("identification", |c| c.ident_top1),
];
const ENTRY_SCORES: [Score<Scores>; 3] = [
    ("pixel r", |s| s.pixel_r),
    ("SSIM", |s| s.ssim),
    ("identification", |s| s.ident_top1),
];

/// The figures drawn so far (file names in the output folder).
struct Drawn<'a> {
    out: &'a Path,
    files: Vec<String>,
}

/// One of [`figures`]' charts: panels, `per_row` a row, into a file; false if not drawn.
type Chart<P> = fn(&Path, &[P], usize) -> anyhow::Result<bool>;

impl Drawn<'_> {
    /// Draws `panels` into `file` with `chart`.
    fn draw<P>(
        &mut self,
        file: impl Into<String>,
        chart: Chart<P>,
        panels: &[P],
        per_row: usize,
    ) -> anyhow::Result<()> {
        let file = file.into();
        if chart(&self.out.join(&file), panels, per_row)? {
            self.files.push(file);
        }
        Ok(())
    }
}

/// Draws every figure; returns their file names, sorted, with eval's `grid.png`.
pub(super) fn figures(
    inputs: &Inputs<'_>,
    s: &ReportSummary,
    shown: &[Shown],
) -> anyhow::Result<Vec<String>> {
    let mut d = Drawn {
        out: inputs.out,
        files: vec!["grid.png".into()],
    };
    for ((m, shown), model) in s.models.iter().zip(shown).zip(inputs.models) {
        // A model restricted to some areas has its rows in the tables; the per-area
        // pictures (one area kept, its other inputs dropped) would show little.
        if m.areas == "all" {
            occlusion_grids(&mut d, inputs, m, shown)?;
        }
        if let Some(rfs) = &model.rfs {
            receptive_fields(&mut d, m, rfs)?;
        }
        relative(&mut d, m)?;
    }
    drops(&mut d, s)?;
    colourfulness(&mut d, s)?;
    areas(&mut d, inputs.entries, s)?;
    features(&mut d, s)?;
    if let Some(curve) = &s.curve {
        if curve.plot(&d.out.join("curve.png"))? {
            d.files.push("curve.png".into());
        }
    }
    d.files.sort();
    d.files.dedup();
    Ok(d.files)
}

/// `occlusion-MODEL.png` (and `temporal-MODEL.png`): the first test images'
/// reconstructions under each condition.
fn occlusion_grids(
    d: &mut Drawn<'_>,
    inputs: &Inputs<'_>,
    m: &ModelReport,
    shown: &Shown,
) -> anyhow::Result<()> {
    let t = inputs.tests;
    let mut grid = |file: String, keeps: Vec<Keep>| {
        let recons: Vec<&Vec<Vec<f32>>> = keeps.iter().map(|k| &shown.recons[&k.label()]).collect();
        let (path, titles) = (d.out.join(&file), keeps.iter().map(|k| k.label()));
        let (n, size) = (recons[0].len(), t.ds.meta.image_size);
        crate::plot::stimulus_grid(&path, titles, &t.originals, &recons, n, size, 1)?;
        d.files.push(file);
        anyhow::Ok(())
    };
    let mut spatial = vec![Keep::All];
    spatial.extend(Area::ALL.map(Keep::AllBut));
    spatial.extend(Area::ALL.map(Keep::Only));
    grid(format!("occlusion-{}.png", m.name), spatial)?;
    if shown.windows > 1 {
        let mut temporal = vec![Keep::All];
        temporal.extend((0..shown.windows).map(Keep::Window));
        grid(format!("temporal-{}.png", m.name), temporal)?;
    }
    Ok(())
}

/// `rf-map-MODEL.png` (the RFs per array) and `rf-size-MODEL.png` (RF size against
/// eccentricity per area, with the lines the analyses fitted).
fn receptive_fields(d: &mut Drawn<'_>, m: &ModelReport, rfs: &RfSets) -> anyhow::Result<()> {
    let file = |prefix: &str| format!("{prefix}-{}.png", m.name);
    let maps: Vec<RfPanel> = (0..rfs.arrays)
        .map(|a| {
            let in_array = |e: usize| rfs.array[e] == a;
            let area = (0..rfs.area.len())
                .find(|&e| in_array(e))
                .map(|e| rfs.area[e]);
            let [learned, start, truth] = rfs.select(in_array);
            RfPanel {
                title: format!("array {a} ({})", area.map_or("?", |a| a.name())),
                start,
                learned,
                truth: (!truth.is_empty()).then_some(truth),
            }
        })
        .collect();
    d.draw(file("rf-map"), figures::rf_maps, &maps, 5)?;
    let sizes: Vec<ScatterPanel> = Area::ALL
        .iter()
        .map(|&area| {
            let f = &m.rf_size_eccentricity[area.name()];
            let sets = ["learned", "start", "truth"]
                .into_iter()
                .zip(rfs.select(|e| rfs.area[e] == area))
                .zip([&f.learned, &f.start, &f.truth]);
            ScatterPanel {
                title: format!("{area}: RF size vs eccentricity"),
                x_desc: "eccentricity (deg)".into(),
                y_desc: "RF sigma (deg)".into(),
                series: sets
                    .filter(|((_, v), _)| !v.is_empty())
                    .map(|((label, v), fit)| Scatter {
                        name: match fit {
                            Some(f) => format!("{label}: slope {:.3}", f.slope),
                            None => label.to_string(),
                        },
                        points: v.iter().map(|r| (r.eccentricity(), r.sigma)).collect(),
                        line: fit.as_ref().map(|f| (f.slope, f.intercept_deg)),
                        joined: false,
                    })
                    .collect(),
            }
        })
        .collect();
    d.draw(file("rf-size"), figures::scatter, &sizes, 3)
}

/// `relative-areas-MODEL.png` (per measure, each area alone over the best area) and
/// `relative-windows-MODEL.png` (per area, each window alone over its best window).
fn relative(d: &mut Drawn<'_>, m: &ModelReport) -> anyhow::Result<()> {
    let file = |prefix: &str| format!("{prefix}-{}.png", m.name);
    let measures: Vec<String> = m.relative_areas.keys().cloned().collect();
    let by_area = |a: Area| {
        measures
            .iter()
            .map(|k| m.relative_areas[k][a.name()])
            .collect()
    };
    let per_area = BarPanel {
        title: format!("{}: relative correlation per area", m.name),
        y_desc: "r / best area's r".into(),
        series: Area::ALL
            .map(|a| (format!("{a} only"), by_area(a)))
            .to_vec(),
        categories: measures.clone(),
    };
    let per_window: Vec<ScatterPanel> = m
        .relative_windows
        .iter()
        .map(|(area, by_measure)| ScatterPanel {
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
        })
        .collect();
    if !measures.is_empty() {
        d.draw(file("relative-areas"), figures::bars, &[per_area], 1)?;
    }
    d.draw(file("relative-windows"), figures::scatter, &per_window, 3)
}

/// The drop in a score from every input to the inputs `keep` keeps.
fn drop(m: &ModelReport, keep: Keep, score: fn(&ConditionScores) -> f64) -> f64 {
    match (m.condition(Keep::All), m.condition(keep)) {
        (Some(a), Some(b)) => score(a) - score(b),
        _ => f64::NAN,
    }
}

/// Per score, a panel of its drop under each condition of `keeps`, a bar per model.
fn drop_panels(models: &[&ModelReport], keeps: &[Keep], what: &str, y: &str) -> Vec<BarPanel> {
    CONDITION_SCORES
        .iter()
        .map(|&(label, score)| BarPanel {
            title: format!("drop in {label} {what}"),
            y_desc: format!("{label}: all − {y}"),
            categories: keeps.iter().map(|k| k.label()).collect(),
            series: models
                .iter()
                .map(|m| {
                    let v = keeps.iter().map(|&k| drop(m, k, score)).collect();
                    (m.name.clone(), v)
                })
                .collect(),
        })
        .collect()
}

/// `occlusion.png`: the drop in each score without one area; `temporal.png`: keeping one
/// window (spatiotemporal models).
fn drops(d: &mut Drawn<'_>, s: &ReportSummary) -> anyhow::Result<()> {
    let (every, no_area): (Vec<_>, _) = (s.models.iter().collect(), Area::ALL.map(Keep::AllBut));
    let panels = drop_panels(&every, &no_area, "without an area", "occluded");
    d.draw("occlusion.png", figures::bars, &panels, 3)?;
    let temporal: Vec<&ModelReport> = s
        .models
        .iter()
        .filter(|m| m.condition(Keep::Window(0)).is_some())
        .collect();
    let Some(first) = temporal.first() else {
        return Ok(());
    };
    let windows: Vec<Keep> = (0..)
        .map(Keep::Window)
        .take_while(|&k| first.condition(k).is_some())
        .collect();
    let panels = drop_panels(&temporal, &windows, "keeping one window", "one window");
    d.draw("temporal.png", figures::bars, &panels, 3)
}

/// `colourfulness.png`: per model reading every area, the originals' colourfulness beside
/// that of its reconstructions from every input and from each area alone.
fn colourfulness(d: &mut Drawn<'_>, s: &ReportSummary) -> anyhow::Result<()> {
    let panels: Vec<HistPanel> = s
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
    d.draw("colourfulness.png", figures::histograms, &panels, 3)
}

/// `areas.png`: per set of areas read, the decoder reading them beside the linear decoder
/// of the same areas.
fn areas(d: &mut Drawn<'_>, entries: &[ModelMetrics], s: &ReportSummary) -> anyhow::Result<()> {
    // Every set of areas a decoder reads: V1, V4, IT, then pairs, then all.
    let linear = entries.iter().filter_map(|e| {
        let areas = &e.linear.as_ref()?.areas;
        let all = areas.len() == Area::ALL.len();
        Some(if all { "all".into() } else { areas.join("+") })
    });
    let read = s.models.iter().map(|m| m.areas.clone());
    let mut labels: Vec<String> = read.chain(linear).collect();
    let first = |x: &str| Area::ALL.iter().position(|a| x.starts_with(a.name()));
    labels.sort_by_key(|x| (x == "all", x.split('+').count(), first(x)));
    labels.dedup();
    labels.retain(|x| !x.is_empty());
    // Per set, the spatial decoder reading it (or else any), and the linear decoder.
    let decoders: Vec<Option<&ModelMetrics>> = (labels.iter())
        .map(|l| {
            let reading = entries.iter().zip(&s.models).filter(|(_, m)| m.areas == *l);
            let spatial = reading.clone().find(|(_, m)| m.kind == "spatial");
            spatial.or(reading.clone().next()).map(|(e, _)| e)
        })
        .collect();
    let linears: Vec<Option<&ModelMetrics>> = (labels.iter())
        .map(|l| {
            let name = if l == "all" {
                "linear".into()
            } else {
                format!("linear_{l}")
            };
            entries.iter().find(|e| e.name == name)
        })
        .collect();
    let panels: Vec<BarPanel> = ENTRY_SCORES
        .iter()
        .map(|&(label, score)| {
            let series = |of: &[Option<&ModelMetrics>]| -> Vec<f64> {
                of.iter()
                    .map(|e| e.map_or(f64::NAN, |e| score(&e.scores)))
                    .collect()
            };
            BarPanel {
                title: format!("{label} by the areas read"),
                y_desc: label.to_string(),
                categories: labels.clone(),
                series: vec![
                    ("decoder".into(), series(&decoders)),
                    ("linear".into(), series(&linears)),
                ],
            }
        })
        .collect();
    d.draw("areas.png", figures::bars, &panels, 3)
}

/// `features.png`: AlexNet feature correlation per layer (Table 1), of every model and
/// the linear decoder.
fn features(d: &mut Drawn<'_>, s: &ReportSummary) -> anyhow::Result<()> {
    let by_layer = |f: &[crate::alexnet::LayerCorrelation]| f.iter().map(|l| l.r).collect();
    let mut series: Vec<(String, Vec<f64>)> = s
        .models
        .iter()
        .filter_map(|m| Some((m.name.clone(), by_layer(m.features.as_ref()?))))
        .collect();
    if series.is_empty() {
        return Ok(());
    }
    if let Some(l) = &s.linear_features {
        series.push(("linear".into(), by_layer(l)));
    }
    let panel = BarPanel {
        title: "AlexNet feature correlation (Table 1)".into(),
        y_desc: "r".into(),
        categories: crate::alexnet::LAYERS.map(String::from).to_vec(),
        series,
    };
    d.draw("features.png", figures::bars, &[panel], 1)
}
