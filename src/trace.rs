//! `--trace FILE` (`run`, `demo`, `bench`): every frame's stages on every thread, as
//! Chrome trace-event JSON, the format Perfetto (ui.perfetto.dev) and chrome://tracing
//! open, written by the `tracing-chrome` crate.
//!
//! The pipeline marks its work with `tracing` spans, each named after its stage and
//! carrying the frame's `seq` where there is one: `ingest` (a pull that brought
//! samples), `window` (a step that consumed them; `frame` events inside when one
//! completed), `decode`, `present`, `publish`, `write_png`. Thread names are the
//! pipeline's (`ingest`, `window`, `decode-0`, …), so a slow frame's `seq` can be followed
//! from thread to thread.
//!
//! Cost: without `--trace` there is no subscriber, and a span is one relaxed atomic load
//! of its callsite's interest: no allocation, no lock (the hot-loop tests run so). With
//! `--trace`, each pipeline thread runs under this run's dispatcher (a scoped default, so
//! runs in one process trace to their own files), and every span sends two records to
//! tracing-chrome's writer thread, which allocates: a traced run measures the pipeline
//! with that cost in it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt;

/// A trace being written.
pub struct Trace {
    dispatch: Dispatch,
    guard: tracing_chrome::FlushGuard,
    path: PathBuf,
}

impl Trace {
    /// Starts a trace into `path` (created or truncated).
    pub fn start(path: &Path) -> anyhow::Result<Trace> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating {} for the trace", dir.display()))?;
        }
        // Fail here, with the path, rather than in tracing-chrome's writer thread.
        std::fs::File::create(path)
            .with_context(|| format!("creating the trace file {}", path.display()))?;
        let (layer, guard) = tracing_chrome::ChromeLayerBuilder::new()
            .file(path)
            .include_args(true)
            .build();
        let subscriber = tracing_subscriber::registry().with(layer);
        Ok(Trace {
            dispatch: Dispatch::new(subscriber),
            guard,
            path: path.to_path_buf(),
        })
    }

    /// The dispatcher each traced thread runs under.
    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }

    /// Writes out what is buffered and closes the file; its path.
    pub fn finish(self) -> PathBuf {
        self.guard.flush();
        drop(self.guard);
        self.path
    }
}

/// Finishes the trace and draws its slowest frame beside it (`<trace>.png`); the trace's
/// path and the picture's, when one could be drawn (a failure to draw is reported, not an
/// error: the trace itself is written).
pub fn finish_with_picture(trace: Trace) -> (PathBuf, Option<PathBuf>) {
    let path = trace.finish();
    let png = path.with_extension("png");
    match picture(&path, &png) {
        Ok(Some(_)) => (path, Some(png)),
        Ok(None) => (path, None),
        Err(e) => {
            eprintln!("monkeysee: no picture of the trace: {e:#}");
            (path, None)
        }
    }
}

/// Runs `f` with `dispatch` as this thread's default (when tracing), else just runs it.
pub fn in_thread<R>(dispatch: Option<&Dispatch>, f: impl FnOnce() -> R) -> R {
    match dispatch {
        Some(d) => tracing::dispatcher::with_default(d, f),
        None => f(),
    }
}

/// One span of a trace: its thread, name, frame and extent (µs from the trace's start).
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub thread: String,
    pub name: String,
    pub seq: Option<u64>,
    pub start_us: f64,
    pub end_us: f64,
}

/// The spans (and `frame` events, as zero-length spans) of a Chrome trace as
/// tracing-chrome writes it: `B`/`E` pairs per thread, `i` events, `M` thread names.
pub fn read_spans(path: &Path) -> anyhow::Result<Vec<Span>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the trace {}", path.display()))?;
    let events: Vec<serde_json::Value> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a Chrome trace (a JSON array)", path.display()))?;
    let mut names = std::collections::HashMap::new();
    for e in &events {
        if e["ph"] == "M" && e["name"] == "thread_name" {
            names.insert(
                e["tid"].to_string(),
                e["args"]["name"].as_str().unwrap_or("").to_string(),
            );
        }
    }
    let thread = |e: &serde_json::Value| {
        let tid = e["tid"].to_string();
        names.get(&tid).cloned().unwrap_or(tid)
    };
    let mut open: std::collections::HashMap<String, Vec<&serde_json::Value>> = Default::default();
    let mut spans = Vec::new();
    for e in &events {
        let ts = e["ts"].as_f64().unwrap_or(0.0);
        match e["ph"].as_str() {
            Some("B") => open.entry(e["tid"].to_string()).or_default().push(e),
            Some("E") => {
                if let Some(b) = open.get_mut(&e["tid"].to_string()).and_then(Vec::pop) {
                    spans.push(Span {
                        thread: thread(b),
                        name: b["name"].as_str().unwrap_or("").to_string(),
                        seq: seq_of(b),
                        start_us: b["ts"].as_f64().unwrap_or(ts),
                        end_us: ts,
                    });
                }
            }
            Some("i") | Some("I") => spans.push(Span {
                thread: thread(e),
                name: e["name"].as_str().unwrap_or("").to_string(),
                seq: seq_of(e),
                start_us: ts,
                end_us: ts,
            }),
            _ => {}
        }
    }
    Ok(spans)
}

/// An event's `seq` argument (tracing-chrome writes fields as text).
fn seq_of(e: &serde_json::Value) -> Option<u64> {
    let v = &e["args"]["seq"];
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

/// Draws the slowest frame of a trace (from its `frame` event in the window stage to the
/// end of its `present`) with everything every thread did around it: one lane per thread,
/// a box per span. Returns the frame's `seq`, or `None` when the trace holds no complete
/// frame or no font is available.
pub fn picture(trace: &Path, png: &Path) -> anyhow::Result<Option<u64>> {
    let spans = read_spans(trace)?;
    let Some(frame) = slowest_frame(&spans) else {
        return Ok(None);
    };
    if !crate::plot::have_font() {
        return Ok(None);
    }
    // 25 ms before the frame completed (its last samples' pulls) to 5 ms after it showed.
    let (lo, hi) = (frame.ready_us - 25_000.0, frame.shown_us + 5_000.0);
    let shown: Vec<&Span> = spans
        .iter()
        .filter(|s| s.end_us >= lo && s.start_us <= hi && s.name != "frame")
        .collect();
    draw_lanes(png, &frame, &shown, lo, hi)?;
    Ok(Some(frame.seq))
}

/// A frame from its completion in the window stage to the end of its `present`.
struct FrameExtent {
    seq: u64,
    ready_us: f64,
    shown_us: f64,
}

fn slowest_frame(spans: &[Span]) -> Option<FrameExtent> {
    let ready: std::collections::HashMap<u64, f64> = spans
        .iter()
        .filter(|s| s.name == "frame")
        .filter_map(|s| Some((s.seq?, s.start_us)))
        .collect();
    spans
        .iter()
        .filter(|s| s.name == "present")
        .filter_map(|s| {
            let seq = s.seq?;
            Some(FrameExtent {
                seq,
                ready_us: *ready.get(&seq)?,
                shown_us: s.end_us,
            })
        })
        .max_by(|a, b| (a.shown_us - a.ready_us).total_cmp(&(b.shown_us - b.ready_us)))
}

/// The threads of `shown`, in pipeline order, then any others.
fn lanes(shown: &[&Span]) -> Vec<String> {
    let order = [
        "ingest",
        "markers",
        "window",
        "decode",
        "display",
        "main",
        "publish",
        "frames-writer",
    ];
    let rank = |t: &str| {
        order
            .iter()
            .position(|o| t.starts_with(o))
            .unwrap_or(order.len())
    };
    let mut lanes: Vec<String> = Vec::new();
    for s in shown {
        if !lanes.contains(&s.thread) {
            lanes.push(s.thread.clone());
        }
    }
    lanes.sort_by_key(|t| (rank(t), t.clone()));
    lanes
}

fn span_colour(name: &str) -> plotters::style::RGBColor {
    use plotters::style::RGBColor;
    match name {
        "ingest" => RGBColor(90, 140, 200),
        "window" => RGBColor(120, 180, 90),
        "decode" => RGBColor(220, 120, 60),
        "present" => RGBColor(170, 90, 180),
        "publish" => RGBColor(60, 170, 170),
        _ => RGBColor(150, 150, 150),
    }
}

/// One lane per thread, top to bottom in pipeline order; the frame's own spans solid and
/// named, the others faint; x in ms from the frame's completion.
fn draw_lanes(
    png: &Path,
    frame: &FrameExtent,
    shown: &[&Span],
    lo: f64,
    hi: f64,
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let lanes = lanes(shown);
    let ms = |us: f64| (us - frame.ready_us) / 1000.0;
    let row = |thread: &str| {
        let i = lanes.iter().position(|l| l == thread).unwrap_or(0);
        (lanes.len() - 1 - i) as f64
    };
    let size = (1100u32, 120 + 44 * lanes.len().max(1) as u32);
    crate::plot::save_png(png, size, |root| {
        let title = format!(
            "frame {}: {:.1} ms from its windows' completion to the screen",
            frame.seq,
            (frame.shown_us - frame.ready_us) / 1000.0
        );
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(10)
            .build_cartesian_2d(ms(lo)..ms(hi), 0.0..lanes.len() as f64)?;
        chart
            .configure_mesh()
            .x_desc("ms from the frame's windows completing")
            .y_labels(0)
            .disable_y_mesh()
            .draw()?;
        let labels = lanes
            .iter()
            .map(|l| Text::new(l.clone(), (ms(lo) + 0.3, row(l) + 0.98), ("sans-serif", 14)));
        chart.draw_series(labels)?;
        for s in shown {
            let y = row(&s.thread);
            let x0 = ms(s.start_us.max(lo));
            let x1 = ms(s.end_us.min(hi)).max(ms(s.start_us) + 0.05);
            let mine = s.seq == Some(frame.seq);
            let c = span_colour(&s.name);
            let style = if mine {
                c.filled()
            } else {
                c.mix(0.35).filled()
            };
            let bar = Rectangle::new([(x0, y + 0.08), (x1, y + 0.6)], style);
            chart.draw_series(std::iter::once(bar))?;
            if mine {
                let name = Text::new(s.name.clone(), (x0, y + 0.98), ("sans-serif", 13));
                chart.draw_series(std::iter::once(name))?;
            }
        }
        Ok(())
    })
}
