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
use monkeysee::replay::{self, Repeat, ReplayError, ReplayOptions, Speed};
use monkeysee::rf::RfTable;
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
    /// Write a synthetic receptive-field table for a rig (electrode,x_deg,y_deg,size_deg).
    RfTable(RfTableArgs),
    /// Republish a recorded XDF session as live LSL streams, paced in real time.
    Replay(ReplayArgs),
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
    /// Without it, the folder named in the marker stream's header (desc/stimuli/directory,
    /// as a replayed session publishes it) is used when it exists.
    #[arg(long, value_name = "DIR")]
    stimuli: Option<PathBuf>,
    /// Record the consumed MUA and marker streams to this XDF file (clock-corrected stamps).
    #[arg(long, value_name = "FILE.xdf")]
    record: Option<PathBuf>,
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
struct ReplayArgs {
    /// The session to replay.
    #[arg(value_name = "FILE.xdf")]
    file: PathBuf,
    /// Times real time (e.g. 1, 0.5, 4), or `max` for as fast as possible.
    #[arg(long, default_value = "1", value_parser = parse_speed)]
    speed: Speed,
    /// Play the file again and again (time stamps keep increasing) until Ctrl-C.
    #[arg(long = "loop", conflicts_with = "loops")]
    looped: bool,
    /// Play the file this many times.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    loops: Option<u64>,
    /// Publish only these streams (stream name or the file's stream id); repeatable.
    #[arg(long = "stream", value_name = "NAME_OR_ID")]
    streams: Vec<String>,
    /// Before sending, wait until every outlet has a consumer.
    #[arg(long)]
    wait_for_consumer: bool,
    /// Seconds --wait-for-consumer waits before giving up.
    #[arg(
        long,
        value_name = "S",
        default_value_t = 300.0,
        requires = "wait_for_consumer"
    )]
    wait_timeout: f64,
    /// Seconds between publishing the outlets and sending the first sample.
    #[arg(long, value_name = "S", default_value_t = 0.0)]
    start_delay: f64,
    /// Spin (instead of sleeping) this many microseconds before each send: finer pacing
    /// for a core's worth of CPU (1000 gave p99 ≈ 50 µs instead of ≈ 0.5 ms at 1 kHz).
    #[arg(long, value_name = "US", default_value_t = 0)]
    spin_us: u64,
    /// Write the summary as JSON.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

fn parse_speed(s: &str) -> Result<Speed, String> {
    s.parse::<Speed>().map_err(|e| e.to_string())
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
        record: args.record,
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
    if let Some(r) = &summary.recording {
        println!(
            "recorded {} samples and {} markers to {}",
            r.samples,
            r.markers,
            r.path.display()
        );
    }
    if let Some(p) = args.summary_json {
        std::fs::write(&p, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    if !(args.start_delay.is_finite() && args.start_delay >= 0.0) {
        bail!("--start-delay must be 0 or more seconds");
    }
    if !(args.wait_timeout.is_finite() && args.wait_timeout > 0.0) {
        bail!("--wait-timeout must be a positive number of seconds");
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .context("installing the Ctrl-C handler")?;
    }
    let repeat = match (args.looped, args.loops) {
        (true, _) => Repeat::Forever,
        (false, Some(n)) => Repeat::Times(n),
        (false, None) => Repeat::Once,
    };
    let result = replay::run(ReplayOptions {
        path: args.file,
        speed: args.speed,
        repeat,
        wait_for_consumer: args.wait_for_consumer.then_some(args.wait_timeout),
        streams: args.streams,
        start_delay: args.start_delay,
        progress: !args.quiet,
        spin: std::time::Duration::from_micros(args.spin_us),
        stop,
    });
    let summary = match &result {
        Ok(s) => Some(s),
        Err(ReplayError::Damaged { sent, .. }) => Some(&**sent),
        Err(_) => None,
    };
    if let Some(s) = summary {
        eprintln!("{s}");
        if let Some(p) = &args.summary_json {
            std::fs::write(p, serde_json::to_string_pretty(s)?)
                .with_context(|| format!("writing {}", p.display()))?;
        }
    }
    result?;
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
        Command::RfTable(a) => rf_table(a),
        Command::Replay(a) => replay(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
