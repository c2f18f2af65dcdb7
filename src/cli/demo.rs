//! `monkeysee demo`: simulate, replay and decode, with nothing to prepare.

use std::path::PathBuf;

use clap::Args;

use monkeysee::daemon::Output;
use monkeysee::demo::DemoOptions;

use super::{print_summary, stop_on_ctrl_c, LiveArgs};

#[derive(Args)]
#[command(
    after_help = "Simulates a short session of the synthetic monkey, replays it over LSL on \
loopback at real time and runs the daemon on it with the built-in demo model (models/demo-e2e): \
reconstructions beside the true stimuli in a window, or, without a display or with --headless, \
PNG frames and a contact sheet in --out. Prints the latency summary. Takes about 11 s."
)]
pub struct DemoArgs {
    /// Write frames and a contact sheet to --out instead of opening a window.
    #[arg(long)]
    headless: bool,
    /// Output folder for --headless (and the fallback without a display).
    #[arg(long, value_name = "DIR", default_value = "monkeysee-demo")]
    out: PathBuf,
    /// Images in the simulated session (4 per trial; 200 ms on, 200 ms off).
    #[arg(long, default_value_t = 16)]
    images: usize,
    /// Session seed: other seeds show other images.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// A model folder to use instead of the built-in demo model (trained on the synthetic rig).
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    #[command(flatten)]
    live: LiveArgs,
}

impl DemoArgs {
    /// The demo's options: where frames go, and the session and model.
    fn options(self) -> DemoOptions {
        let output = if self.headless {
            Output::Headless(self.out)
        } else {
            Output::Window { fallback: self.out }
        };
        let mut opts = DemoOptions::new(output);
        opts.model = self.model;
        opts.images = self.images;
        opts.seed = self.seed;
        opts.decode_threads = self.live.decode_threads;
        opts.realtime = self.live.realtime;
        opts.trace = self.live.trace;
        opts
    }
}

/// Runs the demo, prints the latency summary and where the frames went without a window.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let (headless, out) = (args.headless, args.out.clone());
    let opts = args.options();
    stop_on_ctrl_c(&opts.stop)?;
    let summary = monkeysee::demo::run(opts)?;
    print_summary(&summary);
    if headless || std::env::var_os("DISPLAY").is_none() {
        println!("frames and contact sheet in {}", out.display());
    }
    Ok(())
}
