//! The report's figures, drawn with `plotters` as PNG: grouped bars, histograms, scatter
//! plots with fitted lines, and receptive fields as circles in the visual field. Each
//! draws panels side by side (or in rows), and draws nothing without a font
//! ([`crate::plot::have_font`]), returning false.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::plot::{extent, legend, panels};
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::analysis::RfDeg;

/// A panel's size, pixels.
const PANEL: (u32, u32) = (480, 380);

/// Series colours, in order.
pub const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A panel's chart over `x` × `y` with its title, and its mesh with axis names (`x_desc`
/// empty: no x labels, for bars, whose categories are drawn by hand).
fn chart<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    title: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    x_desc: &str,
    y_desc: &str,
) -> anyhow::Result<Chart<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 17))
        .margin(10)
        .x_label_area_size(34)
        .y_label_area_size(50)
        .build_cartesian_2d(x, y)?;
    let mut mesh = chart.configure_mesh();
    mesh.max_light_lines(1).y_desc(y_desc);
    if x_desc.is_empty() {
        mesh.disable_x_mesh().x_labels(0);
    } else {
        mesh.x_desc(x_desc);
    }
    mesh.draw()?;
    Ok(chart)
}

fn range(values: impl Iterator<Item = f64>, zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = extent(values.filter(|v| v.is_finite()));
    if lo > hi {
        (lo, hi) = (0.0, 1.0);
    }
    if zero {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - if lo < 0.0 || !zero { pad } else { 0.0 }, hi + pad)
}

/// One panel of grouped bars: a bar per series in each category.
pub struct BarPanel {
    pub title: String,
    pub y_desc: String,
    pub categories: Vec<String>,
    /// `(name, value per category)`.
    pub series: Vec<(String, Vec<f64>)>,
}

/// Grouped bar charts, `per_row` panels a row.
pub fn bars(path: &Path, panel: &[BarPanel], per_row: usize) -> anyhow::Result<bool> {
    panels(path, panel.len(), per_row, PANEL, |i, area| {
        let p = &panel[i];
        let (lo, hi) = range(p.series.iter().flat_map(|s| s.1.iter().copied()), true);
        // Room above the bars for the legend.
        let hi = if p.series.len() > 1 {
            hi + 0.13 * p.series.len() as f64 * (hi - lo)
        } else {
            hi
        };
        let n = p.categories.len();
        let mut chart = chart(area, &p.title, 0.0..n as f64, lo..hi, "", &p.y_desc)?;
        // Category names under the axis, centred on their group.
        let base = area.get_base_pixel();
        for (k, name) in p.categories.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(k as f64 + 0.5, lo));
            area.draw(&Text::new(
                name.as_str(),
                (x - base.0, y - base.1 + 8),
                ("sans-serif", 13)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Top)),
            ))?;
        }
        let m = p.series.len().max(1) as f64;
        let w = 0.8 / m;
        for (j, (name, values)) in p.series.iter().enumerate() {
            let c = colour(j);
            chart
                .draw_series(
                    values
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| v.is_finite())
                        .map(|(k, &v)| {
                            let x0 = k as f64 + 0.1 + j as f64 * w;
                            Rectangle::new([(x0, 0.0), (x0 + w * 0.9, v)], c.filled())
                        }),
                )?
                .label(name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        if p.series.len() > 1 {
            legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        }
        Ok(())
    })
}

/// One panel of overlaid histograms (step outlines over shared bins).
pub struct HistPanel {
    pub title: String,
    pub x_desc: String,
    pub series: Vec<(String, Vec<f64>)>,
    pub bins: usize,
}

/// Histograms, `per_row` panels a row.
pub fn histograms(path: &Path, panel: &[HistPanel], per_row: usize) -> anyhow::Result<bool> {
    panels(path, panel.len(), per_row, PANEL, |i, area| {
        let p = &panel[i];
        let (lo, hi) = range(p.series.iter().flat_map(|s| s.1.iter().copied()), false);
        let bins = p.bins.max(1);
        let width = (hi - lo) / bins as f64;
        let counts: Vec<Vec<f64>> = p
            .series
            .iter()
            .map(|(_, v)| {
                let mut c = vec![0.0; bins];
                for x in v.iter().filter(|x| x.is_finite()) {
                    c[(((x - lo) / width) as usize).min(bins - 1)] += 1.0;
                }
                c
            })
            .collect();
        let top = counts.iter().flatten().fold(1.0f64, |a, &b| a.max(b)) * 1.1;
        let mut chart = chart(area, &p.title, lo..hi, 0.0..top, &p.x_desc, "images")?;
        for (j, ((name, _), c)) in p.series.iter().zip(&counts).enumerate() {
            let col = colour(j);
            let mut pts = vec![(lo, 0.0)];
            for (k, &n) in c.iter().enumerate() {
                let x0 = lo + k as f64 * width;
                pts.push((x0, n));
                pts.push((x0 + width, n));
            }
            pts.push((hi, 0.0));
            chart.draw_series(std::iter::once(Polygon::new(pts.clone(), col.mix(0.18))))?;
            chart
                .draw_series(LineSeries::new(pts, col.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], col.stroke_width(2))
                });
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    })
}

/// One series of a scatter panel: points, and a line `(slope, intercept)` drawn over the
/// points' x range, or the points joined in order.
pub struct Scatter {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub line: Option<(f64, f64)>,
    pub joined: bool,
}

pub struct ScatterPanel {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<Scatter>,
}

/// Scatter plots with fitted or joining lines, `per_row` panels a row.
pub fn scatter(path: &Path, panel: &[ScatterPanel], per_row: usize) -> anyhow::Result<bool> {
    panels(path, panel.len(), per_row, PANEL, |i, area| {
        let p = &panel[i];
        let all = || p.series.iter().flat_map(|s| s.points.iter());
        let (xlo, xhi) = range(all().map(|q| q.0), false);
        let (ylo, yhi) = range(all().map(|q| q.1), false);
        let mut chart = chart(area, &p.title, xlo..xhi, ylo..yhi, &p.x_desc, &p.y_desc)?;
        for (j, s) in p.series.iter().enumerate() {
            let c = colour(j);
            chart
                .draw_series(
                    s.points
                        .iter()
                        .map(|&q| Circle::new(q, 2, c.mix(0.6).filled())),
                )?
                .label(s.name.as_str())
                .legend(move |(x, y)| Circle::new((x + 6, y), 4, c.filled()));
            if s.joined {
                chart.draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))?;
            }
            if let Some((slope, intercept)) = s.line {
                let (a, b) = extent(s.points.iter().map(|q| q.0));
                if a < b {
                    chart.draw_series(LineSeries::new(
                        [a, b].map(|x| (x, intercept + slope * x)),
                        c.stroke_width(3),
                    ))?;
                }
            }
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        Ok(())
    })
}

/// One panel of RFs in the visual field: where each electrode's RF started, where it was
/// learned (with its size as a circle of radius σ) and the truth, when known.
pub struct RfPanel {
    pub title: String,
    pub start: Vec<RfDeg>,
    pub learned: Vec<RfDeg>,
    pub truth: Option<Vec<RfDeg>>,
}

/// RF maps, `per_row` panels a row; axes in degrees, equal scale on x and y. Each
/// electrode: a grey line from its start to its learned centre, the learned RF as a
/// circle of radius σ, and dots at the start (grey), the learned (blue) and the true
/// (green) centre.
pub fn rf_maps(path: &Path, panel: &[RfPanel], per_row: usize) -> anyhow::Result<bool> {
    panels(path, panel.len(), per_row, PANEL, |i, area| {
        let p = &panel[i];
        let all = || {
            p.learned
                .iter()
                .chain(&p.start)
                .chain(p.truth.iter().flatten())
        };
        let (xlo, xhi) = range(
            all().map(|r| r.x).chain(
                p.learned
                    .iter()
                    .flat_map(|r| [r.x - r.sigma, r.x + r.sigma]),
            ),
            false,
        );
        let (ylo, yhi) = range(
            all().map(|r| r.y).chain(
                p.learned
                    .iter()
                    .flat_map(|r| [r.y - r.sigma, r.y + r.sigma]),
            ),
            false,
        );
        // Equal degrees per pixel on both axes: widen the narrower range.
        let half = ((xhi - xlo) / 2.0).max((yhi - ylo) / 2.0 * 1.2);
        let (cx, cy) = ((xlo + xhi) / 2.0, (ylo + yhi) / 2.0);
        let x = cx - half..cx + half;
        let mut chart = chart(
            area,
            &p.title,
            x,
            cy - half / 1.2..cy + half / 1.2,
            "x (deg)",
            "y (deg)",
        )?;
        let (grey, learned, truth) = (RGBColor(150, 150, 150), colour(0), colour(2));
        chart.draw_series(p.learned.iter().map(|r| {
            let pts: Vec<(f64, f64)> = (0..=24)
                .map(|k| {
                    let a = k as f64 / 24.0 * std::f64::consts::TAU;
                    (r.x + r.sigma * a.cos(), r.y + r.sigma * a.sin())
                })
                .collect();
            PathElement::new(pts, learned.mix(0.18).stroke_width(1))
        }))?;
        chart.draw_series(
            p.start
                .iter()
                .zip(&p.learned)
                .map(|(a, b)| PathElement::new(vec![(a.x, a.y), (b.x, b.y)], grey.stroke_width(1))),
        )?;
        let mut dots = vec![("start", grey, &p.start), ("learned", learned, &p.learned)];
        if let Some(t) = &p.truth {
            dots.push(("truth", truth, t));
        }
        for (name, c, rfs) in dots {
            chart
                .draw_series(rfs.iter().map(|r| Circle::new((r.x, r.y), 2, c.filled())))?
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 6, y), 4, c.filled()));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    })
}
