//! `monkeysee bench --soak`: hours of a rig's stream into the daemon, faults at random.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Args;

use monkeysee::config::RigConfig;
use monkeysee::daemon::ModelSource;
use monkeysee::decoder::DecoderKind;
use monkeysee::soak::{self, SoakOptions};

use super::{positive_seconds, print_summary, stop_on_ctrl_c};

#[derive(Args)]
#[command(
    after_help = "--soak streams a synthetic session for the rig over loopback LSL into \
the daemon (in this process) at --speed times real time for --minutes, injecting a fault at \
random on average every --fault-every seconds: NaN bursts, short and long pauses, marker storms, \
clock jumps. It reports samples sent vs received, onsets sent vs frames, resident memory over \
time and every counter, and writes soak.json and rss.csv into --out. Eight hours of recording at \
10x: --speed 10 --minutes 48."
)]
pub struct BenchArgs {
    /// Run the soak (the only mode so far).
    #[arg(long)]
    soak: bool,
    /// Rig config: the stream's channel count and rate, windows and budget.
    #[arg(
        long,
        value_name = "RIG.toml",
        default_value = "firmware-config/synthetic.toml"
    )]
    rig: PathBuf,
    /// A trained model folder; without it, random weights (--width) exercise the pipeline.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// U-Net width of the random-weights decoder.
    #[arg(long, default_value_t = 16)]
    width: usize,
    /// Stream seconds per wall second.
    #[arg(long, default_value_t = 10.0)]
    speed: f64,
    /// Wall minutes to run.
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Mean wall seconds between injected faults (0: none).
    #[arg(long, default_value_t = 20.0)]
    fault_every: f64,
    /// Wall seconds between memory samples and progress lines.
    #[arg(long, default_value = "30", value_parser = positive_seconds)]
    sample_every: f64,
    /// Seed of the fault schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Threads for the decoder (0: all cores but one).
    #[arg(long, default_value_t = 1)]
    decode_threads: usize,
    /// Folder for soak.json and rss.csv.
    #[arg(long, value_name = "DIR", default_value = "monkeysee-soak")]
    out: PathBuf,
}

impl BenchArgs {
    fn options(self) -> anyhow::Result<SoakOptions> {
        if !self.soak {
            anyhow::bail!(
                "monkeysee bench has one mode so far: give --soak (the latency benchmark is not built yet)"
            );
        }
        if !(self.minutes > 0.0 && self.minutes <= 7.0 * 24.0 * 60.0) {
            anyhow::bail!("--minutes must be above 0 and at most a week");
        }
        if !(self.speed > 0.0 && self.speed <= 1000.0) {
            anyhow::bail!("--speed must be above 0 and at most 1000");
        }
        if !(self.fault_every >= 0.0 && self.fault_every.is_finite()) {
            anyhow::bail!("--fault-every must be 0 (no faults) or a positive number of seconds");
        }
        if self.width == 0 {
            anyhow::bail!("--width must be at least 1");
        }
        let model = match self.model {
            Some(dir) => ModelSource::Dir(dir),
            None => ModelSource::Random {
                kind: DecoderKind::EndToEnd,
                width: self.width,
                seed: 7,
            },
        };
        Ok(SoakOptions {
            rig: RigConfig::load(&self.rig)?,
            model,
            speed: self.speed,
            seconds: self.minutes * 60.0,
            fault_every_s: self.fault_every,
            seed: self.seed,
            sample_every_s: self.sample_every,
            decode_threads: self.decode_threads,
            progress: true,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let out = args.out.clone();
    let opts = args.options()?;
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
