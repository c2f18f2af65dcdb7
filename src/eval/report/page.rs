//! `report.html`, rendered from the template `page.html` by minijinja, which escapes every
//! value it inserts (names, paths, notes) for HTML; figure files are URL-encoded.

use minijinja::value::Serde;
use minijinja::{Environment, Value};
use serde::Serialize;

use super::{Inputs, ReportSummary};
use crate::eval::occlusion::Keep;
use crate::eval::ModelMetrics;
use crate::units::Area;

/// Everything the page shows.
#[derive(Serialize)]
pub(super) struct Page<'a> {
    dataset: String,
    rig: String,
    images: usize,
    image_size: usize,
    entries: Vec<Entry<'a>>,
    #[serde(flatten)]
    summary: &'a ReportSummary,
}

/// A row of the scores tables: eval's entry, with its name and the areas it reads.
#[derive(Serialize)]
struct Entry<'a> {
    name: &'a str,
    areas: String,
    #[serde(flatten)]
    metrics: &'a ModelMetrics,
}

impl<'a> Page<'a> {
    pub fn new(inputs: &Inputs<'a>, summary: &'a ReportSummary) -> Self {
        let t = inputs.tests;
        // Eval's entries are the models, then the linear decoders.
        let areas = |i: usize, e: &ModelMetrics| match (summary.models.get(i), &e.linear) {
            (Some(m), _) => m.areas.clone(),
            (None, Some(l)) => l.areas.join("+"),
            (None, None) => String::new(),
        };
        Page {
            dataset: t.ds.dir.display().to_string(),
            rig: t.rig.path.display().to_string(),
            images: t.originals.len(),
            image_size: t.ds.meta.image_size,
            entries: (inputs.entries.iter().enumerate())
                .map(|(i, e)| Entry {
                    name: &e.name,
                    areas: areas(i, e),
                    metrics: e,
                })
                .collect(),
            summary,
        }
    }

    pub fn render(&self) -> anyhow::Result<String> {
        let mut env = Environment::new();
        env.add_filter("num", num);
        env.add_filter("sci", |v: f64| format!("{v:.3e}"));
        env.add_filter("mean_sd", mean_sd);
        env.add_global("layers", Value::from(crate::alexnet::LAYERS.to_vec()));
        env.add_global("areas", Value::from(Area::ALL.map(|a| a.name()).to_vec()));
        let alone = std::iter::once(Keep::All).chain(Area::ALL.map(Keep::Only));
        env.add_global("alone", Value::from_iter(alone.map(Keep::label)));
        env.add_template("page.html", include_str!("page.html"))?;
        Ok(env.get_template("page.html")?.render(Serde(self))?)
    }
}

/// A number with 3 decimals, or a dash for one that is missing or not finite.
fn num(v: Value) -> String {
    match f64::try_from(v) {
        Ok(x) if x.is_finite() => format!("{x:.3}"),
        _ => "–".into(),
    }
}

/// Mean ± SD, 1 decimal.
fn mean_sd(v: Vec<f64>) -> String {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt();
    format!("{m:.1} ± {sd:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::analysis::SizeEccentricity;
    use crate::eval::report::{AreaRfs, ConditionScores, ModelReport};

    #[test]
    fn names_paths_and_notes_are_escaped_on_the_page() {
        let odd = "<b>&\"'";
        let condition = ConditionScores {
            condition: "all".into(),
            pixel_r: 0.5,
            ssim: 0.25,
            ident_top1: 1.0,
            ident_2way: 1.0,
            colourfulness: vec![10.0, 20.0],
            features: None,
        };
        let model = ModelReport {
            name: odd.into(),
            kind: "spatial".into(),
            areas: "all".into(),
            conditions: vec![condition],
            features: None,
            relative_areas: Default::default(),
            relative_windows: Default::default(),
            rf_size_eccentricity: [(
                "V1".to_string(),
                AreaRfs {
                    learned: Some(SizeEccentricity {
                        electrodes: 3,
                        slope: 0.1,
                        intercept_deg: 0.2,
                        r: 0.3,
                    }),
                    start: None,
                    truth: None,
                },
            )]
            .into(),
        };
        let summary = ReportSummary {
            models: vec![model],
            original_colourfulness: vec![30.0],
            linear_features: None,
            notes: vec![format!("a note on {odd}")],
            figures: vec![format!("occlusion-{odd}.png")],
            curve: Some(crate::eval::curve::Curve {
                data: "d".into(),
                test_images: 2,
                sizes: vec![10, 20],
                kinds: vec![odd.into()],
                points: vec![crate::eval::curve::CurvePoint {
                    kind: odd.into(),
                    images: 20,
                    pixel_r: 0.25,
                    ssim: 0.0,
                    single_trial_pixel_r: 0.0,
                    ident_top1: 0.5,
                    ident_2way: 0.0,
                    train_seconds: None,
                    epochs: None,
                    saved_epoch: None,
                }],
            }),
        };
        let page = Page {
            dataset: format!("/data/{odd}"),
            rig: format!("rigs/{odd}.toml"),
            images: 2,
            image_size: 32,
            entries: Vec::new(),
            summary: &summary,
        }
        .render()
        .unwrap();
        let escaped = "&lt;b&gt;&amp;&quot;&#x27;";
        assert!(!page.contains(odd), "{page}");
        // The model's name in the tables and in the figure caption, the dataset, the rig and
        // the note.
        assert!(page.contains(&format!("<td>{escaped}</td>")), "{page}");
        assert!(
            page.contains(&format!("alt=\"{escaped}: reconstructions")),
            "{page}"
        );
        assert!(
            page.contains(&format!("rig <code>rigs&#x2f;{escaped}.toml</code>")),
            "{page}"
        );
        assert!(
            page.contains(&format!("<code>&#x2f;data&#x2f;{escaped}</code>")),
            "{page}"
        );
        assert!(
            page.contains(&format!("Note: a note on {escaped}</p>")),
            "{page}"
        );
        // The learning curve: a row per kind (and linear), a cell per size, a dash where
        // a point is missing.
        assert!(
            page.contains(&format!(
                "<tr><td>{escaped}</td><td>–</td><td>0.250 / 0.500</td></tr>"
            )),
            "{page}"
        );
        assert!(
            page.contains("<tr><td>linear</td><td>–</td><td>–</td></tr>"),
            "{page}"
        );
        // The figure's file, URL-encoded.
        assert!(
            page.contains("src=\"occlusion-%3Cb%3E%26%22%27.png\""),
            "{page}"
        );
        // What the filters write: 3 decimals (a dash for a line not fitted), mean ± SD.
        let rf_row = format!(
            "<td>{escaped} V1</td><td>0.100</td><td>0.200</td><td>0.300</td><td>–</td><td>–</td>"
        );
        assert!(page.contains(&rf_row), "{page}");
        assert!(page.contains("<td>0.500</td><td>0.250</td>"), "{page}");
        assert!(page.contains("<td>15.0 ± 5.0</td>"), "{page}");
    }
}
