//! The command line: the subcommands, the helpers they share, and dispatch.
//!
//! Each subcommand has a file of its own holding its clap arguments, the validation
//! that turns them into the library's options (`options()`, where a bad flag
//! combination becomes an error before any work starts; the library checks its
//! options' own invariants again) and its handler, which runs the library and prints
//! the result. A check of a single value (a number of seconds) is a clap value parser,
//! so clap reports it with the flag's name.

mod bench;
mod dataset;
mod demo;
mod eval;
mod import_tvsd;
mod replay;
mod rf_table;
mod run;
mod simulate;
mod train;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use monkeysee::daemon::RunSummary;
use monkeysee::decoder::DecoderKind;

/// Real-time image reconstruction from macaque multi-unit activity (MonkeySee, online).
#[derive(Parser)]
#[command(name = "monkeysee", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole loop with nothing to prepare: simulate a session, replay it over LSL, decode it live.
    Demo(demo::DemoArgs),
    /// Run the closed-loop daemon: LSL in, latency windows, decoder, display, latency measured.
    Run(Box<run::RunArgs>),
    /// Republish a recorded XDF session as live LSL streams, paced in real time.
    Replay(replay::ReplayArgs),
    /// Simulate a recording session from a rig and images: XDF session, numpy dataset, RF truth.
    Simulate(simulate::SimulateArgs),
    /// Turn a recorded XDF session (LabRecorder's or ours) into a training dataset.
    Dataset(dataset::DatasetArgs),
    /// Import the published THINGS Ventral Stream Spiking Dataset (TVSD) as training datasets.
    ImportTvsd(import_tvsd::ImportTvsdArgs),
    /// Train a decoder (pix2pix U-Net + PatchGAN) on a dataset from `simulate` (or the same layout).
    Train(Box<train::TrainArgs>),
    /// Evaluate models on a dataset's test split: pixel r, SSIM, chance levels, RF recovery, image grid.
    Eval(eval::EvalArgs),
    /// Write a synthetic receptive-field table for a rig (electrode,x_deg,y_deg,size_deg).
    RfTable(rf_table::RfTableArgs),
    /// Measure what this machine does with a rig and model: per-stage latency, highest
    /// loss-free replay speed, CPU per thread, decoder forward time; or --soak the daemon.
    Bench(bench::BenchArgs),
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Demo(a) => demo::run(a),
            Command::Run(a) => run::run(*a),
            Command::Replay(a) => replay::run(a),
            Command::Simulate(a) => simulate::run(a),
            Command::Dataset(a) => dataset::run(a),
            Command::ImportTvsd(a) => import_tvsd::run(a),
            Command::Train(a) => train::run(*a),
            Command::Eval(a) => eval::run(a),
            Command::RfTable(a) => rf_table::run(a),
            Command::Bench(a) => bench::run(a),
        }
    }
}

/// `--kind`: which of the paper's four decoders.
#[derive(Clone, Copy, clap::ValueEnum)]
enum KindArg {
    Spatial,
    Spatiotemporal,
    EndToEnd,
    Baseline,
}

impl From<KindArg> for DecoderKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Spatial => DecoderKind::Spatial,
            KindArg::Spatiotemporal => DecoderKind::Spatiotemporal,
            KindArg::EndToEnd => DecoderKind::EndToEnd,
            KindArg::Baseline => DecoderKind::Baseline,
        }
    }
}

/// The longest wait a seconds flag accepts (about 31 years): every value up to it
/// converts to a `std::time::Duration`, with room for the margins callers add to it.
const MAX_SECONDS: f64 = 1e9;

/// Value parser for a positive number of seconds (a timeout, a run's length).
fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= MAX_SECONDS => Ok(v),
        _ => Err(format!(
            "give a positive number of seconds (at most {MAX_SECONDS:e})"
        )),
    }
}

/// Value parser for a number of seconds that may be 0 (a delay).
fn seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=MAX_SECONDS).contains(&v) => Ok(v),
        _ => Err(format!(
            "give a number of seconds, 0 or more (at most {MAX_SECONDS:e})"
        )),
    }
}

/// Sets `stop` on Ctrl-C, so a run ends cleanly with its summary.
fn stop_on_ctrl_c(stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    let stop = stop.clone();
    ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")
}

/// Writes `value` as pretty-printed JSON to `path`.
fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// The daemon's end-of-run report: frames, the latency table, the non-zero counters.
fn print_summary(summary: &RunSummary) {
    println!(
        "\n{} frames shown in {:.1} s",
        summary.frames_shown, summary.elapsed_s
    );
    println!("{}", summary.table);
    let counts: Vec<String> = summary
        .counters
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!("counts: {}", counts.join(", "));
    if let Some(o) = &summary.frames_outlet {
        println!(
            "LSL outlets: {} frames ({} px) and {} events published; a frame's push took p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            o.frames, o.size, o.events, o.push_p50_ms, o.push_p99_ms, o.push_max_ms
        );
    }
}
