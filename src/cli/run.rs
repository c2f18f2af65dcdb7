//! `monkeysee run`: the closed-loop daemon on live LSL streams.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::bail;
use clap::Args;

use monkeysee::config::RigConfig;
use monkeysee::daemon::{self, ModelSource, Output, RunOptions};
use monkeysee::decoder::{ComputeDevice, DecoderKind};
use monkeysee::window::Mode;

use super::{positive_seconds, print_summary, stop_on_ctrl_c, write_json, LiveArgs};

#[derive(Args)]
pub struct RunArgs {
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
    kind: DecoderKind,
    /// U-Net base width for --random-weights (64 in the paper; 16 runs on a laptop CPU).
    #[arg(long, default_value_t = 16, requires = "random_weights")]
    width: usize,
    /// Seed for --random-weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// event: one frame per `stim_on` marker; sliding: one frame per hop (rig windows.sliding_hop_ms).
    #[arg(long, value_enum, default_value = "event")]
    mode: Mode,
    /// mua: read the MUA stream ([streams.mua]). broadband: read the raw stream
    /// ([streams.broadband], e.g. 30 kHz int16) and extract MUA online as TVSD did
    /// (band-pass, rectify, low-pass, downsample; filters in the rig's [broadband]).
    #[arg(long, value_enum, default_value = "mua")]
    input: InputArg,
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
    #[arg(long, value_name = "S", value_parser = positive_seconds)]
    seconds: Option<f64>,
    /// Write a standard HdrHistogram interval log (one tag per pipeline stage, microseconds).
    #[arg(long, value_name = "FILE")]
    hdr_log: Option<PathBuf>,
    /// LSL XPath predicate selecting the MUA stream; overrides the rig's [streams.mua],
    /// e.g. "name='rig1' and type='MUA'".
    #[arg(long, value_name = "XPATH")]
    mua_query: Option<String>,
    /// Do not publish the decoded frames (`monkeysee-frames`) and the run's events
    /// (`monkeysee-events`) as LSL streams.
    #[arg(long)]
    no_outlet: bool,
    /// Side in pixels of the image each `monkeysee-frames` sample carries (default: the
    /// rig's decoder.image_size); smaller sends a preview.
    #[arg(long, value_name = "PX", conflicts_with = "no_outlet", value_parser = clap::value_parser!(u16).range(1..=1024))]
    outlet_size: Option<u16>,
    /// LSL XPath predicate selecting the raw stream for --input broadband; overrides the
    /// rig's [streams.broadband].
    #[arg(long, value_name = "XPATH")]
    broadband_query: Option<String>,
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
    /// Save every decoded frame's decoder inputs (inputs.npy), reconstruction
    /// (reconstructions.npy) and onset/image (frames.csv) in this folder, for offline
    /// analysis (the decode thread then also writes ~0.1 MB per frame to disk).
    #[arg(long, value_name = "DIR")]
    save_inputs: Option<PathBuf>,
    /// A calibration block: after this many presentations, z-score with this session's own
    /// statistics only, not the model's (overrides the rig's
    /// normalisation.calibration_presentations; 0 = keep pooling with the model's).
    #[arg(long, value_name = "N")]
    calibrate: Option<u64>,
    /// Seconds to wait for the LSL streams at start-up.
    #[arg(long, default_value_t = 10.0, value_parser = positive_seconds)]
    resolve_timeout: f64,
    #[command(flatten)]
    live: LiveArgs,
    /// Write the run summary as JSON.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
    /// No periodic status line.
    #[arg(long)]
    quiet: bool,
}

impl RunArgs {
    /// The daemon's options: the rig with the flags' overrides applied, the model, the
    /// output. Every bad flag combination is an error here, before anything connects.
    fn options(self) -> anyhow::Result<RunOptions> {
        let model = match (self.model, self.random_weights) {
            (Some(dir), false) => ModelSource::Dir(dir),
            (None, true) if self.width == 0 => bail!("--width must be at least 1"),
            (None, true) => ModelSource::Random {
                kind: self.kind,
                width: self.width,
                seed: self.seed,
            },
            _ => bail!("give either --model DIR or --random-weights"),
        };
        let output = match (self.headless, self.out) {
            (true, Some(dir)) => Output::Headless(dir),
            (false, out) => Output::Window {
                fallback: out.unwrap_or_else(|| PathBuf::from("monkeysee-frames")),
            },
            (true, None) => bail!("--headless needs --out DIR"),
        };
        if self.calibrate == Some(1) {
            bail!("--calibrate must be 0 (none) or at least 2: statistics need two presentations");
        }
        let mut rig = RigConfig::load(&self.rig)?;
        // A loaded rig has no queries: these are the flags' alone.
        rig.mua.query = self.mua_query;
        rig.markers.query = self.marker_query;
        if let Some(q) = self.broadband_query {
            rig.broadband.selector = Some(monkeysee::config::StreamSelector {
                query: Some(q),
                ..Default::default()
            });
        }
        if let Some(n) = self.calibrate {
            rig.normalisation.calibration_presentations = n;
        }
        if let Some(px) = self
            .outlet_size
            .filter(|&px| usize::from(px) > rig.image_size)
        {
            bail!(
                "--outlet-size {px} is larger than the reconstruction ({} px, the rig's decoder.image_size): give at most that",
                rig.image_size
            );
        }
        let outlet =
            (!self.no_outlet).then(|| self.outlet_size.map_or(rig.image_size, usize::from));
        if let Some(mode) = self.live.realtime {
            rig.realtime.mode = mode;
        }
        Ok(RunOptions {
            realtime: rig.realtime.clone(),
            trace: self.live.trace,
            rig,
            model,
            mode: self.mode,
            broadband: self.input == InputArg::Broadband,
            outlet,
            counters: None,
            device: self.device,
            output,
            frames: self.frames,
            seconds: self.seconds,
            hdr_log: self.hdr_log,
            stimuli_dir: self.stimuli,
            record: self.record,
            save_inputs: self.save_inputs,
            resolve_timeout: self.resolve_timeout,
            decode_threads: self.live.decode_threads,
            status: !self.quiet,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// What `run` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputArg {
    Mua,
    Broadband,
}

/// Runs the daemon until --frames, --seconds or Ctrl-C, then prints its summary.
pub fn run(mut args: RunArgs) -> anyhow::Result<()> {
    let summary_json = args.summary_json.take();
    let opts = args.options()?;
    if opts.status {
        warn_about_weak_stream_queries(&opts.rig, opts.broadband);
    }
    stop_on_ctrl_c(&opts.stop)?;
    let summary = daemon::run(opts)?;
    print_summary(&summary);
    if let Some(r) = &summary.recording {
        println!(
            "recorded {} samples and {} markers to {}",
            r.samples,
            r.markers,
            r.path.display()
        );
    }
    if let Some(p) = summary_json {
        write_json(&p, &summary)?;
    }
    Ok(())
}

/// Warns about stream selectors that another device on the network could also match.
fn warn_about_weak_stream_queries(rig: &RigConfig, broadband: bool) {
    let input = match (broadband, &rig.broadband.selector) {
        (true, Some(b)) => ("broadband", b),
        _ => ("MUA", &rig.mua),
    };
    for (what, s) in [input, ("marker", &rig.markers)] {
        if let Some(w) = s.weakness() {
            eprintln!("monkeysee: warning: {what} stream: {w}");
        }
    }
}
