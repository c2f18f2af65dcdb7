//! Pictures people would rather look at than read: training loss curves and image
//! grids with titles, drawn with `plotters` on bitmaps and saved as PNG.
//!
//! Text needs a TrueType font. monkeysee registers DejaVu Sans (Debian package
//! `fonts-dejavu-core`) or the file named by `MONKEYSEE_FONT`; without one, grids are
//! drawn without titles and loss curves are skipped (the numbers are in CSV/JSON).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context;
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;

const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a font for plotters once; false when none could be found.
pub fn have_font() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let candidates = std::env::var("MONKEYSEE_FONT")
            .into_iter()
            .chain(FONT_PATHS.iter().map(|s| s.to_string()));
        for p in candidates {
            if let Ok(bytes) = std::fs::read(&p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Draws on a white `w`×`h` bitmap with `draw` and saves it as the PNG `path`.
pub fn save_png(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(&root)
            .and_then(|()| Ok(root.present()?))
            .with_context(|| format!("drawing {}", path.display()))?;
    }
    image::save_buffer(path, &buf, w, h, image::ExtendedColorType::Rgb8)
        .with_context(|| format!("writing {}", path.display()))
}

/// Draws `n` panels of `(w, h)` pixels each, in rows of `per_row`, with `draw` and saves
/// the PNG. False (nothing drawn) without a font or panels.
pub fn panels(
    path: &Path,
    n: usize,
    per_row: usize,
    (w, h): (u32, u32),
    mut draw: impl FnMut(usize, &DrawingArea<BitMapBackend<'_>, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<bool> {
    if !have_font() || n == 0 {
        return Ok(false);
    }
    let cols = per_row.min(n).max(1);
    let rows = n.div_ceil(cols);
    save_png(path, (w * cols as u32, h * rows as u32), |root| {
        for (i, area) in root.split_evenly((rows, cols)).iter().enumerate().take(n) {
            draw(i, area)?;
        }
        Ok(())
    })?;
    Ok(true)
}

/// The least and greatest of `values` (`(MAX, MIN)` when there are none).
pub(crate) fn extent(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)))
}

/// One line of a loss plot.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// One panel of a loss plot: its title and lines.
pub struct Panel<'a> {
    pub title: &'a str,
    pub series: Vec<Series<'a>>,
}

/// Loss curves side by side, one panel each, x = epoch. Returns false (and draws
/// nothing) when no font is available.
pub fn loss_curves(path: &Path, all: &[Panel<'_>]) -> anyhow::Result<bool> {
    panels(path, all.len(), all.len(), (550, 450), |i, panel| {
        let Panel { title, series } = &all[i];
        let x_max = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(1.0, f64::max);
        let (y_min, y_max) = extent(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
        if y_min <= y_max {
            let pad = ((y_max - y_min) * 0.1).max(1e-3);
            let mut chart = ChartBuilder::on(panel)
                .caption(*title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(1.0..x_max.max(2.0), (y_min - pad)..(y_max + pad))?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc("loss")
                .draw()?;
            let lines_of = series.iter().map(|s| (s.name, &s.points[..]));
            lines(&mut chart, lines_of, &[RED, BLUE, GREEN, MAGENTA], |_| true)?;
            legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
        }
        Ok(())
    })
}

/// Two panels: each stage's latency CDF (log ms), and each stage's p99 against
/// replay speed. `cdf` and `p99` hold `(stage, points)`. False (nothing drawn) without
/// a font.
pub fn latency_plot(
    path: &Path,
    cdf: &[(String, Vec<(f64, f64)>)],
    p99: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<bool> {
    if !have_font() {
        return Ok(false);
    }
    let colours: [RGBColor; 6] = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    // The positive, finite x (or y) extent of all the series.
    let positive = |series: &[(String, Vec<(f64, f64)>)], x: bool| {
        extent(series.iter().flat_map(|(_, pts)| {
            pts.iter()
                .map(move |p| if x { p.0 } else { p.1 })
                .filter(|v| *v > 0.0 && v.is_finite())
        }))
    };
    save_png(path, (1100, 450), |root| {
        let areas = root.split_evenly((1, 2));
        let (lo, hi) = positive(cdf, true);
        if lo <= hi {
            let mut chart = ChartBuilder::on(&areas[0])
                .caption("latency per stage (CDF)", ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(48)
                .build_cartesian_2d((lo * 0.8..hi * 1.25).log_scale(), 0.0..1.0)?;
            chart
                .configure_mesh()
                .x_desc("ms")
                .y_desc("fraction of frames")
                .draw()?;
            lines(&mut chart, named(cdf), &colours, |p| p.0 > 0.0)?;
            legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        }
        let ((slo, shi), (ylo, yhi)) = (positive(p99, true), positive(p99, false));
        if slo <= shi && ylo <= yhi {
            let mut chart = ChartBuilder::on(&areas[1])
                .caption("p99 against replay speed", ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(48)
                .build_cartesian_2d(
                    (slo * 0.8..shi * 1.25).log_scale(),
                    (ylo * 0.8..yhi * 1.25).log_scale(),
                )?;
            chart
                .configure_mesh()
                .x_desc("speed (x real time)")
                .y_desc("p99 ms")
                .draw()?;
            lines(&mut chart, named(p99), &colours, |p| p.0 > 0.0 && p.1 > 0.0)?;
            legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        }
        Ok(())
    })?;
    Ok(true)
}

/// Latency against percentile, HdrHistogram's view of a tail: x is 1 / (1 − fraction)
/// on a log axis (2 = p50, 100 = p99, 1000 = p99.9), y the latency in ms (log), one line
/// per series of `(ms, fraction at or below)`. False (nothing drawn) without a font.
pub fn tail_plot(
    path: &Path,
    title: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<bool> {
    if !have_font() {
        return Ok(false);
    }
    let tails: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, cdf)| {
            let pts = cdf
                .iter()
                .filter(|(ms, f)| *ms > 0.0 && *f < 1.0)
                .map(|&(ms, f)| (1.0 / (1.0 - f), ms))
                .collect();
            (name.clone(), pts)
        })
        .collect();
    let all = tails.iter().flat_map(|(_, p)| p.iter());
    let (xhi, ylo, yhi) = all.fold((2.0f64, f64::MAX, f64::MIN), |(x, lo, hi), &(px, py)| {
        (x.max(px), lo.min(py), hi.max(py))
    });
    if ylo > yhi {
        return Ok(false);
    }
    let colours: [RGBColor; 6] = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    save_png(path, (800, 500), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(
                (1.0..xhi * 1.5).log_scale(),
                (ylo * 0.8..yhi * 1.25).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("1 / (1 − percentile): 2 = p50, 100 = p99, 1000 = p99.9")
            .y_desc("end-to-end ms")
            .draw()?;
        lines(&mut chart, named(&tails), &colours, |_| true)?;
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    })?;
    Ok(true)
}

/// `(name, points)` pairs as [`lines`] takes them.
fn named(series: &[(String, Vec<(f64, f64)>)]) -> impl Iterator<Item = (&str, &[(f64, f64)])> {
    series.iter().map(|(name, pts)| (name.as_str(), &pts[..]))
}

/// A line's name and points.
pub type NamedLine = (String, Vec<(f64, f64)>);

/// Panels side by side sharing a log x axis (`x_desc`), each `(title, series)` with one
/// labelled line (and a dot per point) per series: a learning curve. False (nothing
/// drawn) without a font or points.
pub fn log_x_panels(
    path: &Path,
    x_desc: &str,
    all: &[(&str, Vec<NamedLine>)],
) -> anyhow::Result<bool> {
    let points = |s: &[NamedLine]| -> Vec<(f64, f64)> {
        (s.iter().flat_map(|(_, p)| p.iter().copied()))
            .filter(|p| p.0 > 0.0 && p.1.is_finite())
            .collect()
    };
    let (xlo, xhi) = extent(all.iter().flat_map(|(_, s)| points(s)).map(|p| p.0));
    if xlo > xhi {
        return Ok(false);
    }
    let colours: [RGBColor; 6] = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    panels(path, all.len(), all.len(), (550, 450), |i, area| {
        let (title, series) = &all[i];
        let (ylo, yhi) = extent(points(series).into_iter().map(|p| p.1));
        if ylo <= yhi {
            let pad = ((yhi - ylo) * 0.1).max(1e-3);
            let mut chart = ChartBuilder::on(area)
                .caption(*title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d((xlo * 0.8..xhi * 1.25).log_scale(), ylo - pad..yhi + pad)?;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .x_labels(4)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .light_line_style(WHITE)
                .draw()?;
            let keep = |p: &(f64, f64)| p.0 > 0.0 && p.1.is_finite();
            lines(&mut chart, named(series), &colours, keep)?;
            for ((_, pts), &colour) in series.iter().zip(&colours) {
                chart.draw_series(
                    (pts.iter().filter(|p| keep(p))).map(|&p| Circle::new(p, 4, colour.filled())),
                )?;
            }
            legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        }
        Ok(())
    })
}

/// One labelled line per series, in `colours` order, through the points `keep` passes.
fn lines<'a, 'b: 'a, 's, CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'a, BitMapBackend<'b>, CT>,
    series: impl Iterator<Item = (&'s str, &'s [(f64, f64)])>,
    colours: &[RGBColor],
    keep: impl Fn(&(f64, f64)) -> bool,
) -> anyhow::Result<()> {
    for ((name, pts), &colour) in series.zip(colours) {
        chart
            .draw_series(LineSeries::new(
                pts.iter().copied().filter(|p| keep(p)),
                colour.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
    }
    Ok(())
}

/// The series' legend, boxed, at `pos`, on any chart drawn on a bitmap.
pub fn legend<'a, 'b: 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'b>, CT>,
    pos: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(pos)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .draw()?;
    Ok(())
}

/// An [`image_grid`] of the first `n` `stimuli` (column "stimulus") beside each of
/// `columns`' image of the same stimulus (titled `titles`).
pub fn stimulus_grid(
    path: &Path,
    titles: impl IntoIterator<Item = String>,
    stimuli: &[Vec<f32>],
    columns: &[impl AsRef<[Vec<f32>]>],
    n: usize,
    size: usize,
    scale: usize,
) -> anyhow::Result<()> {
    let titles: Vec<String> = std::iter::once("stimulus".into()).chain(titles).collect();
    let rows: Vec<Vec<&[f32]>> = (0..n)
        .map(|i| {
            std::iter::once(stimuli[i].as_slice())
                .chain(columns.iter().map(|c| c.as_ref()[i].as_slice()))
                .collect()
        })
        .collect();
    image_grid(path, &titles, &rows, size, scale)
}

/// A grid of RGB images (`[3][H][W]` floats in [0, 1], all `size` px): one column per
/// title, `rows[r][c]` the image in row r, column c; scaled up by `scale`.
pub fn image_grid(
    path: &Path,
    titles: &[String],
    rows: &[Vec<&[f32]>],
    size: usize,
    scale: usize,
) -> anyhow::Result<()> {
    let cell = size * scale;
    let gap = 4;
    let header = if have_font() { 28 } else { gap };
    let cols = titles.len();
    let (w, h) = (
        cols * (cell + gap) + gap,
        header + rows.len() * (cell + gap),
    );
    let mut buf = vec![255u8; w * h * 3];
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().enumerate() {
            let (x0, y0) = (gap + c * (cell + gap), header + r * (cell + gap));
            for y in 0..cell {
                for x in 0..cell {
                    let (sy, sx) = (y / scale, x / scale);
                    let o = ((y0 + y) * w + x0 + x) * 3;
                    for k in 0..3 {
                        buf[o + k] = (img[k * size * size + sy * size + sx].clamp(0.0, 1.0) * 255.0)
                            .round() as u8;
                    }
                }
            }
        }
    }
    if have_font() {
        let root = BitMapBackend::with_buffer(&mut buf, (w as u32, h as u32)).into_drawing_area();
        for (c, t) in titles.iter().enumerate() {
            let x = (gap + c * (cell + gap)) as i32;
            let font = ("sans-serif", 16).into_font().color(&BLACK);
            root.draw(&Text::new(t.as_str(), (x, 6), font))?;
        }
        root.present()?;
    }
    let (w, h) = (w as u32, h as u32);
    image::save_buffer(path, &buf, w, h, image::ExtendedColorType::Rgb8)
        .with_context(|| format!("writing {}", path.display()))
}
