//! `monkeysee replay`: a recorded XDF session republished as live LSL streams.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use monkeysee::replay::{self, Repeat, ReplayError, ReplayOptions, Speed};

use super::{positive_seconds, seconds, stop_on_ctrl_c, write_json};

#[derive(Args)]
pub struct ReplayArgs {
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
    /// Append this to every published stream's name and source_id (e.g. "-replay"), so
    /// the replay cannot be mistaken for the live device on a lab network.
    #[arg(long, value_name = "SUFFIX", default_value = "")]
    name_suffix: String,
    /// Before sending, wait until every outlet has a consumer.
    #[arg(long)]
    wait_for_consumer: bool,
    /// Seconds --wait-for-consumer waits before giving up.
    #[arg(
        long,
        value_name = "S",
        default_value_t = 300.0,
        value_parser = positive_seconds,
        requires = "wait_for_consumer"
    )]
    wait_timeout: f64,
    /// Seconds between publishing the outlets and sending the first sample.
    #[arg(long, value_name = "S", default_value_t = 0.0, value_parser = seconds)]
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

/// Value parser for `--speed`: the library's own reading of `max` or a positive factor.
fn parse_speed(s: &str) -> Result<Speed, String> {
    s.parse::<Speed>().map_err(|e| e.to_string())
}

impl ReplayArgs {
    /// The replay's options (the numbers of seconds are checked by their parsers).
    fn options(self) -> ReplayOptions {
        let repeat = match (self.looped, self.loops) {
            (true, _) => Repeat::Forever,
            (false, Some(n)) => Repeat::Times(n),
            (false, None) => Repeat::Once,
        };
        ReplayOptions {
            path: self.file,
            speed: self.speed,
            repeat,
            wait_for_consumer: self.wait_for_consumer.then_some(self.wait_timeout),
            streams: self.streams,
            start_delay: self.start_delay,
            progress: !self.quiet,
            spin: Duration::from_micros(self.spin_us),
            stop: Arc::new(AtomicBool::new(false)),
            name_suffix: self.name_suffix,
        }
    }
}

/// Replays the session until it ends or Ctrl-C, then prints what was sent, also when
/// the file turned out damaged part way.
pub fn run(mut args: ReplayArgs) -> anyhow::Result<()> {
    let summary_json = args.summary_json.take();
    let opts = args.options();
    stop_on_ctrl_c(&opts.stop)?;
    let result = replay::run(opts);
    let sent = match &result {
        Ok(s) => Some(s),
        Err(ReplayError::Damaged { sent, .. }) => Some(&**sent),
        Err(_) => None,
    };
    if let Some(s) = sent {
        eprintln!("{s}");
        if let Some(p) = &summary_json {
            write_json(p, s)?;
        }
    }
    result?;
    Ok(())
}
