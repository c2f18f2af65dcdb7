//! The `monkeysee` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use monkeysee::config::RigConfig;
use monkeysee::daemon::{self, ComputeDevice, ModelSource, Output, RunOptions};
use monkeysee::decoder::DecoderKind;
use monkeysee::rf::RfTable;
use monkeysee::sim::{self, ImageSource, SimConfig, SimOptions};
use monkeysee::window::Mode;

/// Real-time image reconstruction from macaque multi-unit activity (MonkeySee, online).
#[derive(Parser)]
#[command(name = "monkeysee", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the closed-loop daemon: LSL in, latency windows, decoder, display, latency measured.
    Run(Box<RunArgs>),
    /// Simulate a recording session from a rig and images: XDF session, numpy dataset, RF truth.
    Simulate(SimulateArgs),
    /// Write a synthetic receptive-field table for a rig (electrode,x_deg,y_deg,size_deg).
    RfTable(RfTableArgs),
}

#[derive(Args)]
#[command(
    after_help = "Writes OUT/session.xdf (MUA + markers), OUT/dataset/ (numpy .npy arrays: images, responses [trials, 300, channels] over -100..+199 ms, trial_image, trial_split, trial_onset; dataset.json describes them), OUT/images/<id>.png, OUT/rf-truth.csv and OUT/rf-table.csv.\n\nExample:\n  monkeysee simulate --rig firmware-config/synthetic.toml --images procedural:200 --test-images 10 --repeats 5 --out sim"
)]
struct SimulateArgs {
    /// Rig config: arrays, areas, channel count, image size, RF table (generated when it has none).
    #[arg(long, value_name = "RIG.toml")]
    rig: PathBuf,
    /// `procedural:N` for N coloured dead-leaves images, or a folder of PNG/JPEG images.
    #[arg(long, value_name = "procedural:N|DIR")]
    images: String,
    /// Output folder (created).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Random seed: the same seed gives the same session, byte for byte.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Images in the test split, each shown --repeats times (the rest are shown once).
    /// Default: a tenth of the images.
    #[arg(long, value_name = "N")]
    test_images: Option<usize>,
    /// Presentations of each test image.
    #[arg(long, value_name = "R", default_value_t = 10)]
    repeats: usize,
    /// SD (degrees) of the error added to each RF centre in the table handed to the decoder
    /// (OUT/rf-table.csv), as a real RF mapping has; OUT/rf-truth.csv keeps the truth.
    #[arg(long, value_name = "DEG", default_value_t = 0.0)]
    rf_jitter: f64,
    /// Simulator parameters (TOML); default: firmware-config/synthetic-cortex.toml, built in.
    #[arg(long, value_name = "FILE")]
    cortex: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct RunArgs {
    /// Rig config (TOML) that describes the arrays, streams, windows and RF table,
    /// e.g. firmware-config/synthetic.toml.
    #[arg(long, value_name = "RIG.toml")]
    rig: PathBuf,
    /// Trained model folder (decoder.json + weights.mpk [+ normalization.json]).
    /// It must match the rig's electrodes and windows.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "random_weights",
        required_unless_present = "random_weights"
    )]
    model: Option<PathBuf>,
    /// Use an untrained decoder with random weights, to exercise the pipeline.
    #[arg(long)]
    random_weights: bool,
    /// Decoder kind for --random-weights.
    #[arg(
        long,
        value_enum,
        default_value = "end-to-end",
        requires = "random_weights"
    )]
    kind: KindArg,
    /// U-Net base width for --random-weights (64 in the paper; 16 runs on a laptop CPU).
    #[arg(long, default_value_t = 16, requires = "random_weights")]
    width: usize,
    /// Seed for --random-weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// event: one frame per `stim_on` marker; sliding: one frame per hop (rig windows.sliding_hop_ms).
    #[arg(long, value_enum, default_value = "event")]
    mode: Mode,
    /// Where the decoder runs. `cuda` needs a build with `--features cuda` and an NVIDIA GPU.
    #[arg(long, value_enum, default_value = "cpu")]
    device: ComputeDevice,
    /// Write frames as PNG files (DIR/frames/) and a contact sheet instead of opening a window.
    #[arg(long, requires = "out")]
    headless: bool,
    /// Output folder for --headless (also the fallback when no display is available).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Stop after this many frames were shown.
    #[arg(long, value_name = "N")]
    frames: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "S")]
    seconds: Option<f64>,
    /// Write a standard HdrHistogram interval log (one tag per pipeline stage, microseconds).
    #[arg(long, value_name = "FILE")]
    hdr_log: Option<PathBuf>,
    /// LSL XPath predicate selecting the MUA stream; overrides the rig's [streams.mua],
    /// e.g. "name='rig1' and type='MUA'".
    #[arg(long, value_name = "XPATH")]
    mua_query: Option<String>,
    /// LSL XPath predicate selecting the marker stream; overrides the rig's [streams.markers].
    #[arg(long, value_name = "XPATH")]
    marker_query: Option<String>,
    /// Folder of stimulus images named <image_id>.png/.jpg, shown beside each reconstruction.
    #[arg(long, value_name = "DIR")]
    stimuli: Option<PathBuf>,
    /// Seconds to wait for the LSL streams at start-up.
    #[arg(long, default_value_t = 10.0)]
    resolve_timeout: f64,
    /// Threads for the decoder (0: all cores but one, so ingest and windows keep a core).
    #[arg(long, default_value_t = 0)]
    decode_threads: usize,
    /// Write the run summary as JSON.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
    /// No periodic status line.
    #[arg(long)]
    quiet: bool,
}

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

#[derive(Args)]
struct RfTableArgs {
    /// Rig config whose arrays get RFs (its own RF table, if any, is not read).
    #[arg(long, value_name = "RIG.toml")]
    rig: PathBuf,
    /// Output CSV.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut rig = RigConfig::load(&args.rig)?;
    if let Some(q) = args.mua_query {
        rig.mua.query = Some(q);
    }
    if let Some(q) = args.marker_query {
        rig.markers.query = Some(q);
    }
    let model = match (args.model, args.random_weights) {
        (Some(dir), false) => ModelSource::Dir(dir),
        (None, true) => ModelSource::Random {
            kind: args.kind.into(),
            width: args.width,
            seed: args.seed,
        },
        _ => bail!("give either --model DIR or --random-weights"),
    };
    if args.width == 0 {
        bail!("--width must be at least 1");
    }
    let output = match (args.headless, args.out) {
        (true, Some(dir)) => Output::Headless(dir),
        (false, out) => Output::Window {
            fallback: out.unwrap_or_else(|| PathBuf::from("monkeysee-frames")),
        },
        (true, None) => bail!("--headless needs --out DIR"),
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("installing the Ctrl-C handler")?;
    }
    let summary = daemon::run(RunOptions {
        rig,
        model,
        mode: args.mode,
        device: args.device,
        output,
        frames: args.frames,
        seconds: args.seconds,
        hdr_log: args.hdr_log,
        stimuli_dir: args.stimuli,
        resolve_timeout: args.resolve_timeout,
        decode_threads: args.decode_threads,
        status: !args.quiet,
        stop,
    })?;
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
    if let Some(p) = args.summary_json {
        std::fs::write(&p, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let rig = RigConfig::load(&args.rig)?;
    let config = match &args.cortex {
        Some(p) => SimConfig::load(p)?,
        None => SimConfig::default(),
    };
    let images = ImageSource::parse(&args.images, &config.leaves, args.seed)?;
    let test_images = args.test_images.unwrap_or(images.len() / 10);
    let summary = sim::simulate(&SimOptions {
        rig,
        config,
        images,
        out: args.out.clone(),
        seed: args.seed,
        test_images,
        repeats: args.repeats,
        rf_jitter_deg: args.rf_jitter,
        progress: !args.quiet,
    })?;
    println!(
        "simulated {:.1} s ({} trials: {} train images once, {} test images x {}) of {} channels in {:.1} s: {:.1}x real time",
        summary.simulated_s,
        summary.trials,
        summary.train_images,
        summary.test_images,
        summary.repeats,
        summary.channels,
        summary.wall_s,
        summary.realtime_factor
    );
    println!(
        "wrote {}/session.xdf ({:.1} MB), dataset/, images/, rf-truth.csv, rf-table.csv",
        args.out.display(),
        summary.xdf_bytes as f64 / 1e6
    );
    Ok(())
}

fn rf_table(args: RfTableArgs) -> anyhow::Result<()> {
    let rig = RigConfig::load_without_rf_table(&args.rig)?;
    let table = RfTable::synthetic(&rig, args.seed);
    table.save(&args.out)?;
    println!(
        "wrote {} RFs to {}",
        table.entries.len(),
        args.out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run(*a),
        Command::Simulate(a) => simulate(a),
        Command::RfTable(a) => rf_table(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
