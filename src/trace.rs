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
                        seq: b["args"]["seq"].as_u64(),
                        start_us: b["ts"].as_f64().unwrap_or(ts),
                        end_us: ts,
                    });
                }
            }
            Some("i") | Some("I") => spans.push(Span {
                thread: thread(e),
                name: e["name"].as_str().unwrap_or("").to_string(),
                seq: e["args"]["seq"].as_u64(),
                start_us: ts,
                end_us: ts,
            }),
            _ => {}
        }
    }
    Ok(spans)
}

/// Draws the slowest frame of a trace (from its `frame` event in the window stage to the
/// end of its `present`) with everything every thread did around it: one lane per thread,
/// a box per span. Returns the frame's `seq`, or `None` when the trace holds no complete
/// frame or no font is available.
pub fn picture(trace: &Path, png: &Path) -> anyhow::Result<Option<u64>> {
    use plotters::prelude::*;
    let spans = read_spans(trace)?;
    let ready: std::collections::HashMap<u64, f64> = spans
        .iter()
        .filter(|s| s.name == "frame")
        .filter_map(|s| Some((s.seq?, s.start_us)))
        .collect();
    let slowest = spans
        .iter()
        .filter(|s| s.name == "present")
        .filter_map(|s| {
            let seq = s.seq?;
            Some((seq, *ready.get(&seq)?, s.end_us))
        })
        .max_by(|a, b| (a.2 - a.1).total_cmp(&(b.2 - b.1)));
    let Some((seq, from, to)) = slowest else {
        return Ok(None);
    };
    if !crate::plot::have_font() {
        return Ok(None);
    }
    let (lo, hi) = (from - 25_000.0, to + 5_000.0);
    let shown: Vec<&Span> = spans
        .iter()
        .filter(|s| s.end_us >= lo && s.start_us <= hi && s.name != "frame")
        .collect();
    let mut lanes: Vec<String> = Vec::new();
    for want in [
        "ingest",
        "window",
        "decode",
        "display",
        "main",
        "publish",
        "frames-writer",
    ] {
        for s in &shown {
            if s.thread.starts_with(want) && !lanes.contains(&s.thread) {
                lanes.push(s.thread.clone());
            }
        }
    }
    for s in &shown {
        if !lanes.contains(&s.thread) {
            lanes.push(s.thread.clone());
        }
    }
    let ms = |us: f64| (us - from) / 1000.0;
    let (w, h) = (1100u32, 120 + 44 * lanes.len().max(1) as u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "frame {seq}: {:.1} ms from its windows' completion to the screen",
                    (to - from) / 1000.0
                ),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(10)
            .build_cartesian_2d(ms(lo)..ms(hi), 0.0..lanes.len() as f64)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("ms from the frame's windows completing")
            .y_labels(0)
            .disable_y_mesh()
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let colour = |name: &str| match name {
            "ingest" => RGBColor(90, 140, 200),
            "window" => RGBColor(120, 180, 90),
            "decode" => RGBColor(220, 120, 60),
            "present" => RGBColor(170, 90, 180),
            "publish" => RGBColor(60, 170, 170),
            _ => RGBColor(150, 150, 150),
        };
        for (i, lane) in lanes.iter().enumerate() {
            chart
                .draw_series(std::iter::once(Text::new(
                    lane.clone(),
                    (ms(lo) + 0.3, (lanes.len() - 1 - i) as f64 + 0.98),
                    ("sans-serif", 14),
                )))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        for s in &shown {
            let Some(lane) = lanes.iter().position(|l| *l == s.thread) else {
                continue;
            };
            let y = (lanes.len() - 1 - lane) as f64;
            let (x0, x1) = (
                ms(s.start_us.max(lo)),
                ms(s.end_us.min(hi)).max(ms(s.start_us) + 0.05),
            );
            let mine = s.seq == Some(seq);
            let c = colour(&s.name);
            let style = if mine {
                c.filled()
            } else {
                c.mix(0.35).filled()
            };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, y + 0.08), (x1, y + 0.6)],
                    style,
                )))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if mine {
                chart
                    .draw_series(std::iter::once(Text::new(
                        s.name.clone(),
                        (x0, y + 0.98),
                        ("sans-serif", 13),
                    )))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    image::save_buffer(png, &buf, w, h, image::ExtendedColorType::Rgb8)
        .with_context(|| format!("writing {}", png.display()))?;
    Ok(Some(seq))
}
