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
#[cfg(feature = "offline")]
mod eval;
#[cfg(feature = "offline")]
mod import_tvsd;
#[cfg(feature = "offline")]
mod learning_curve;
mod replay;
mod rf_table;
mod run;
mod simulate;
#[cfg(feature = "offline")]
mod train;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use monkeysee::daemon::RunSummary;
use monkeysee::realtime::RealtimeMode;

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
    #[cfg(feature = "offline")]
    ImportTvsd(import_tvsd::ImportTvsdArgs),
    /// Train a decoder (pix2pix U-Net + PatchGAN) on a dataset from `simulate` (or the same layout).
    #[cfg(feature = "offline")]
    Train(Box<train::TrainArgs>),
    /// Train each decoder kind and the linear decoder on growing numbers of images; score them.
    #[cfg(feature = "offline")]
    LearningCurve(Box<learning_curve::LearningCurveArgs>),
    /// Evaluate models on a dataset's test split: pixel r, SSIM, chance levels, RF recovery, image grid.
    #[cfg(feature = "offline")]
    Eval(eval::EvalArgs),
    /// Write a synthetic receptive-field table for a rig (electrode,x_deg,y_deg,size_deg).
    RfTable(rf_table::RfTableArgs),
    /// Measure what this machine does with a rig and model: per-stage latency, highest
    /// loss-free replay speed, CPU per thread, decoder forward time; or --soak the daemon.
    Bench(bench::BenchArgs),
    /// A load process of `bench --load` (churns memory, writes a file; runs until killed).
    #[command(hide = true)]
    LoadWorker(LoadWorkerArgs),
}

#[derive(clap::Args)]
struct LoadWorkerArgs {
    #[arg(long)]
    churn_mib: usize,
    #[arg(long)]
    file_mib: usize,
    #[arg(long)]
    file: PathBuf,
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
            #[cfg(feature = "offline")]
            Command::ImportTvsd(a) => import_tvsd::run(a),
            #[cfg(feature = "offline")]
            Command::Train(a) => train::run(*a),
            #[cfg(feature = "offline")]
            Command::Eval(a) => eval::run(a),
            #[cfg(feature = "offline")]
            Command::LearningCurve(a) => learning_curve::run(*a),
            Command::RfTable(a) => rf_table::run(a),
            Command::Bench(a) => bench::run(a),
            Command::LoadWorker(a) => {
                monkeysee::bench::load::run_worker(a.churn_mib, a.file_mib, a.file)
            }
        }
    }
}

/// `--realtime`, `--trace` and `--decode-threads`: how the live loop is scheduled, traced
/// and given cores (run, demo, bench).
#[derive(clap::Args, Debug, Clone, Default)]
struct LiveArgs {
    /// Real-time operation: memory locked and pre-faulted, the ingest, window and decode
    /// threads at SCHED_FIFO priorities (the rig's [realtime] section), pinned to cores
    /// where there are enough. `--realtime` alone is `try`: ask, and run on without what
    /// the system refuses, saying which permission is missing and how to grant it;
    /// `--realtime=require` refuses to run without it; `--realtime=off` overrides the
    /// rig's mode.
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "try"
    )]
    realtime: Option<RealtimeMode>,
    /// Write every frame's stages on every thread to FILE as Chrome trace-event JSON:
    /// open it in Perfetto (ui.perfetto.dev) or chrome://tracing to see where a slow frame
    /// went. Tracing has a cost of its own; leave it off to measure.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Threads of the decoder's own compute pool (0: all cores but one, so ingest and
    /// windows keep a core; with --realtime pinning threads, all cores but two).
    #[arg(long, default_value_t = 0)]
    decode_threads: usize,
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
    if !summary.decode_errors.is_empty() {
        let n = summary.counter("decode_errors");
        println!(
            "decode errors ({} of {n} kept): {}",
            summary.decode_errors.len(),
            summary.decode_errors.join("; ")
        );
    }
    if let Some(o) = &summary.frames_outlet {
        println!(
            "LSL outlets: {} frames ({} px) and {} events published; on the publish thread a frame's push took p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            o.frames, o.size, o.events, o.push_p50_ms, o.push_p99_ms, o.push_max_ms
        );
    }
    if let Some(r) = &summary.realtime {
        let granted = r
            .threads
            .iter()
            .filter(|t| t.fifo_priority.is_some())
            .count();
        println!(
            "realtime ({}): memory {}, {} of {} threads at SCHED_FIFO{}",
            r.mode,
            if r.memory_locked {
                "locked"
            } else {
                "not locked"
            },
            granted,
            r.threads.len(),
            if r.refused.is_empty() {
                String::new()
            } else {
                format!("; refused: {}", r.refused.len())
            }
        );
    }
    if let Some(t) = &summary.trace {
        println!(
            "trace in {} (open it in ui.perfetto.dev or chrome://tracing)",
            t.display()
        );
    }
    if let Some(p) = &summary.trace_picture {
        println!("the slowest frame, thread by thread: {}", p.display());
    }
}
