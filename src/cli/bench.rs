//! `monkeysee bench`: the latency benchmark (default) and `--soak`.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;

use monkeysee::bench::load::LoadSpec;
use monkeysee::bench::{self, BenchOptions, BenchReport, LoadBench};
use monkeysee::config::RigConfig;
use monkeysee::daemon::ModelSource;
use monkeysee::decoder::{ComputeDevice, DecoderKind};
use monkeysee::soak::{self, SoakOptions};
use monkeysee::window::Mode;

use super::run::InputArg;
use super::{positive_seconds, print_summary, seconds, stop_on_ctrl_c, LiveArgs};

#[derive(Args)]
#[command(
    after_help = "Without --soak: simulates a session for the rig (or replays --session), \
replays it over loopback LSL into the daemon at each --speeds in turn until frames are lost, and \
times the decoder's forward pass at each --widths. It prints per-stage latency (p50/p90/p99/p99.9/max), \
deadline misses, CPU per thread and the highest speed with no frame lost, and writes bench.json, \
latency-<speed>x.hlog (HdrHistogram) and bench.png into --out. Without --rig and --model it uses \
the built-in synthetic rig and demo model; with --rig alone, random weights of --width.

--load N measures the daemon beside the work a rig computer does instead: N processes that each \
churn memory while computing and write a file through the page cache run beside it, at \
--load-speed, over at least --frames frames, three times: unloaded, loaded, and loaded with \
--realtime (try, or require when asked). It reports p50/p99/p99.9/max, deadline misses and frames \
lost for each, in bench.json (under load), latency-<condition>.hlog and load.png.

--soak streams a synthetic session for the rig over loopback LSL into the daemon (in this process) at \
--speed times real time for --minutes, injecting a fault at random on average every --fault-every \
seconds: NaN bursts, short and long pauses, marker storms, clock jumps. It reports samples sent vs \
received, onsets sent vs frames, resident memory and heap in use over time and every counter, and \
writes soak.json and rss.csv into --out. Eight hours of recording at 10x: --speed 10 --minutes 48."
)]
pub struct BenchArgs {
    /// Run the soak instead of the latency benchmark.
    #[arg(long)]
    soak: bool,
    /// Rig config: the stream's channel count and rate, windows and budget (default: the
    /// built-in synthetic rig).
    #[arg(long, value_name = "RIG.toml")]
    rig: Option<PathBuf>,
    /// A trained model folder (default: the built-in demo model, or random weights of
    /// --width when --rig is given).
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// U-Net width of the random-weights decoder.
    #[arg(long, default_value_t = 16)]
    width: usize,
    /// Output folder (default: monkeysee-bench, or monkeysee-soak with --soak).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// A recorded session to replay (its streams must match the rig's selectors);
    /// default: a simulated one.
    #[arg(long, value_name = "FILE.xdf", conflicts_with = "soak")]
    session: Option<PathBuf>,
    /// Images in the simulated session (4 per trial, 1.9 s a trial).
    #[arg(long, default_value_t = 24, conflicts_with = "soak")]
    images: usize,
    /// event: one frame per onset; sliding: one frame per hop.
    #[arg(long, value_enum, default_value = "event", conflicts_with = "soak")]
    mode: Mode,
    /// mua: replay the MUA stream; broadband: the raw 30 kHz stream, MUA extracted online.
    #[arg(long, value_enum, default_value = "mua", conflicts_with = "soak")]
    input: InputArg,
    /// Where the decoder runs (`cuda` needs a build with --features cuda).
    #[arg(long, value_enum, default_value = "cpu", conflicts_with = "soak")]
    device: ComputeDevice,
    /// Replay speeds to try, in order; the bench stops at the first that loses frames.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,4,8,16,32,64",
        conflicts_with = "soak"
    )]
    speeds: Vec<f64>,
    /// U-Net widths whose forward pass is timed.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "16,32,64",
        conflicts_with = "soak"
    )]
    widths: Vec<usize>,
    /// Measure beside N load processes (memory churn, CPU, page-cache writes), with and
    /// without --realtime, instead of the speed ladder.
    #[arg(long, value_name = "N", conflicts_with = "soak",
          value_parser = clap::value_parser!(u16).range(1..=64))]
    load: Option<u16>,
    /// --load: frames each condition runs at least (the session is replayed as often as
    /// needed).
    #[arg(long, default_value_t = 5000, requires = "load",
          value_parser = clap::value_parser!(u64).range(1..))]
    frames: u64,
    /// --load: replay speed (x real time) of every condition.
    #[arg(long, default_value_t = 8.0, requires = "load")]
    load_speed: f64,
    /// --load: MiB each load process allocates, touches and frees per round.
    #[arg(long, default_value_t = 64, requires = "load",
          value_parser = clap::value_parser!(u16).range(1..=4096))]
    load_churn_mib: u16,
    #[command(flatten)]
    live: LiveArgs,

    /// Soak: stream seconds per wall second.
    #[arg(long, default_value_t = 10.0, requires = "soak")]
    speed: f64,
    /// Soak: wall minutes to run.
    #[arg(long, default_value_t = 1.0, requires = "soak")]
    minutes: f64,
    /// Soak: mean wall seconds between injected faults (0: none).
    #[arg(long, default_value = "20", value_parser = seconds, requires = "soak")]
    fault_every: f64,
    /// Soak: wall seconds between memory samples and progress lines.
    #[arg(long, default_value = "30", value_parser = positive_seconds, requires = "soak")]
    sample_every: f64,
    /// Soak: seed of the fault schedule.
    #[arg(long, default_value_t = 1, requires = "soak")]
    seed: u64,
}

/// The rig and model a bench runs: as given, or the built-in ones (unpacked into
/// `work`, which must outlive the run).
fn rig_and_model(
    args: &BenchArgs,
    work: &std::path::Path,
) -> anyhow::Result<(RigConfig, ModelSource)> {
    if args.width == 0 {
        bail!("--width must be at least 1");
    }
    let random = ModelSource::Random {
        kind: DecoderKind::EndToEnd,
        width: args.width,
        seed: 7,
    };
    match (&args.rig, &args.model) {
        (Some(rig), Some(model)) => Ok((RigConfig::load(rig)?, ModelSource::Dir(model.clone()))),
        (Some(rig), None) => Ok((RigConfig::load(rig)?, random)),
        (None, model) => {
            let (rig, builtin) = monkeysee::demo::unpack(work)?;
            let model = match (model, args.soak) {
                (Some(m), _) => ModelSource::Dir(m.clone()),
                (None, true) => random,
                (None, false) => ModelSource::Dir(builtin),
            };
            Ok((RigConfig::load(&rig)?, model))
        }
    }
}

impl BenchArgs {
    fn soak_options(&self, rig: RigConfig, model: ModelSource) -> anyhow::Result<SoakOptions> {
        if !(self.minutes > 0.0 && self.minutes <= 7.0 * 24.0 * 60.0) {
            bail!("--minutes must be above 0 and at most a week");
        }
        if !(self.speed > 0.0 && self.speed <= 1000.0) {
            bail!("--speed must be above 0 and at most 1000");
        }
        Ok(SoakOptions {
            rig,
            model,
            speed: self.speed,
            seconds: self.minutes * 60.0,
            fault_every_s: self.fault_every,
            seed: self.seed,
            sample_every_s: self.sample_every,
            decode_threads: self.live.decode_threads,
            progress: true,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    fn bench_options(
        &self,
        rig: RigConfig,
        model: ModelSource,
        out: PathBuf,
    ) -> anyhow::Result<BenchOptions> {
        if self.speeds.is_empty()
            || self.speeds.iter().any(|s| !(*s > 0.0 && *s <= 1000.0))
            || self.speeds.windows(2).any(|w| w[1] <= w[0])
        {
            bail!("--speeds must be rising speeds above 0 and at most 1000, e.g. 1,2,4,8");
        }
        if self.widths.iter().any(|w| *w == 0 || *w > 256) {
            bail!("--widths must be U-Net widths from 1 to 256, e.g. 16,32,64");
        }
        if self.session.is_none() && self.images == 0 {
            bail!("--images must be at least 1");
        }
        if let Some(s) = &self.session {
            if !s.is_file() {
                bail!("--session {}: no such file", s.display());
            }
        }
        let load = match self.load {
            None => None,
            Some(n) => {
                if !(self.load_speed > 0.0 && self.load_speed <= 1000.0) {
                    bail!("--load-speed must be above 0 and at most 1000");
                }
                Some(LoadBench {
                    spec: LoadSpec {
                        processes: n.into(),
                        churn_mib: self.load_churn_mib.into(),
                        file_mib: 256,
                    },
                    exe: std::env::current_exe()
                        .context("finding this program's binary for the load processes")?,
                    frames: self.frames,
                    speed: self.load_speed,
                })
            }
        };
        let mut realtime = rig.realtime.clone();
        if let Some(mode) = self.live.realtime {
            realtime.mode = mode;
        }
        Ok(BenchOptions {
            rig,
            model,
            session: self.session.clone(),
            images: self.images,
            mode: self.mode,
            broadband: self.input == InputArg::Broadband,
            device: self.device,
            speeds: self.speeds.clone(),
            widths: self.widths.clone(),
            decode_threads: self.live.decode_threads,
            realtime,
            trace: self.live.trace.clone(),
            load,
            out,
            progress: true,
        })
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let work = tempfile::Builder::new()
        .prefix("monkeysee-bench-")
        .tempdir()
        .context("creating a temporary folder")?;
    let (rig, model) = rig_and_model(&args, work.path())?;
    if !args.soak {
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("monkeysee-bench"));
        let report = bench::run(&args.bench_options(rig, model, out.clone())?)?;
        print_bench(&report);
        let files = if report.load.is_some() {
            "latency-<condition>.hlog and load.png"
        } else {
            "latency-<speed>x.hlog and bench.png"
        };
        println!("wrote {}/bench.json, {files}", out.display());
        return Ok(());
    }
    if args.live.realtime.is_some() || args.live.trace.is_some() {
        bail!("--soak runs without --realtime and --trace (it measures hours of ordinary running); leave them out");
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("monkeysee-soak"));
    let opts = args.soak_options(rig, model)?;
    stop_on_ctrl_c(&opts.stop)?;
    let r = soak::run(opts)?;
    soak::write_report(&r, &out)?;
    print_summary(&r.run);
    println!(
        "soak: {:.2} h of recording in {:.1} min at {}x; samples sent {} received {} (lost {}, overruns {}); \
onsets {} → frames built {} decoded {} shown {} (unexplained losses {}); faults: {} NaN bursts, {} short and \
{} long pauses, {} marker storms, {} clock jumps; resident {:.1} MiB after warm-up, {:.1} at the end, {:.1} at most; \
heap in use {:.2} MiB after warm-up, {:.2} at the end",
        r.equivalent_hours,
        r.wall_s / 60.0,
        r.speed,
        r.samples_sent,
        r.samples_received,
        r.samples_lost,
        r.overruns,
        r.onsets_sent,
        r.frames_built,
        r.frames_decoded,
        r.frames_shown,
        r.unexplained_frame_losses,
        r.faults.nan_bursts,
        r.faults.short_pauses,
        r.faults.long_pauses,
        r.faults.marker_storms,
        r.faults.clock_jumps,
        r.rss_start_mib,
        r.rss_end_mib,
        r.rss_max_mib,
        r.heap_start_mib,
        r.heap_end_mib
    );
    println!("wrote {}/soak.json and rss.csv", out.display());
    Ok(())
}

/// The load comparison as a table.
fn print_load(l: &monkeysee::bench::LoadReport) {
    println!(
        "beside {} load process(es) ({} MiB churned per round, page-cache writes) at {}x:",
        l.spec.processes, l.spec.churn_mib, l.speed
    );
    println!(
        "{:<18} {:>7} {:>9} {:>9} {:>9} {:>9} {:>7} {:>6}",
        "condition", "frames", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "misses", "lost"
    );
    for c in &l.conditions {
        let e2e = c.run.stages.last().map(|s| s.latency);
        let v =
            |f: fn(&monkeysee::telemetry::StageSummary) -> f64| e2e.as_ref().map_or(f64::NAN, f);
        println!(
            "{:<18} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>6}",
            c.condition,
            c.run.frames_shown,
            v(|e| e.p50_ms),
            v(|e| e.p99_ms),
            v(|e| e.p999_ms),
            v(|e| e.max_ms),
            c.run.deadline_misses,
            c.frames_lost
        );
        if let Some(rt) = &c.realtime {
            for r in &rt.refused {
                println!("  refused: {r}");
            }
        }
    }
}

/// The bench's findings as a few tables.
fn print_bench(r: &BenchReport) {
    println!(
        "bench: {} ({} mode, {} input, {}, {} decode thread(s)) on {}",
        r.model, r.mode, r.input, r.device, r.decode_threads, r.session
    );
    if let Some(l) = &r.load {
        print_load(l);
        print_forward(r);
        return;
    }
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9}   (ms, at {}x)",
        "stage",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        r.speeds.first().map_or(0.0, |s| s.speed)
    );
    for s in &r.stages {
        println!(
            "{:<16} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            s.stage,
            s.latency.p50_ms,
            s.latency.p90_ms,
            s.latency.p99_ms,
            s.latency.p999_ms,
            s.latency.max_ms
        );
    }
    println!("speed   frames    e2e p99 ms   misses   lost to");
    for s in &r.speeds {
        let losses: Vec<String> = s.losses.iter().map(|(n, v)| format!("{n} {v}")).collect();
        println!(
            "{:>5}x  {:>4}/{:<4} {:>10.2}   {:>6}   {}",
            s.speed,
            s.frames_shown,
            s.frames_expected,
            s.stages.last().map_or(f64::NAN, |x| x.latency.p99_ms),
            s.deadline_misses,
            if losses.is_empty() {
                "-".to_string()
            } else {
                losses.join(", ")
            }
        );
    }
    if let Some(first) = r.speeds.first() {
        let cpu: Vec<String> = first
            .cpu
            .iter()
            .take(8)
            .map(|c| format!("{} {:.0} %", c.thread, 100.0 * c.core_share))
            .collect();
        println!(
            "CPU per thread at {}x (share of one core): {}",
            first.speed,
            cpu.join(", ")
        );
    }
    match r.max_lossless_speed {
        Some(s) => println!("highest speed with no frame lost: {s}x"),
        None => println!(
            "frames were lost even at {}x",
            r.speeds.first().map_or(0.0, |s| s.speed)
        ),
    }
    print_forward(r);
}

/// The decoder's forward pass alone, per width.
fn print_forward(r: &BenchReport) {
    for f in &r.forward {
        println!(
            "decoder forward pass, width {} on {} ({} thread(s)): p50 {:.2} ms, p99 {:.2} ms ({} runs)",
            f.width, f.device, r.decode_threads, f.p50_ms, f.p99_ms, f.runs
        );
    }
}
