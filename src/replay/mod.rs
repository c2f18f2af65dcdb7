//! Replay: republishes a recorded XDF session as live LSL streams, paced in real time.
//!
//! Every stream of the file (or those picked by name or id) gets an LSL outlet built
//! from its header XML, so name, type, channel count, format, `source_id` and the whole
//! `<desc>` (channel labels, areas, …) reach the consumer as recorded. Samples of all
//! streams are sent in time-stamp order, each stream's due samples in one chunk push,
//! paced by a monotonic wall clock ([`Instant`]): a sample with (clock-corrected) stamp
//! `t` is sent at `start + (t − first) / speed` and stamped `local_clock_at_start +
//! (t − first)`, so stamps keep the recording's time scale and the streams their
//! relative timing, in this machine's LSL clock.
//!
//! Streaming contract: the file is read chunk by chunk with [`XdfReader`], never whole.
//! Chunks of different streams are interleaved only roughly in time, so the replayer
//! keeps reading until what it has buffered reaches [`LOOKAHEAD_S`] past the next send
//! time (or the end of the file) and merges from that buffer. Memory is bounded by the
//! look-ahead, plus, while a stream waits for a clock offset (below), at most
//! [`OFFSET_WAIT_S`] of session time or [`OFFSET_WAIT_BYTES`] of file. Data the file
//! holds later than the look-ahead behind its time (clocks that disagree by more,
//! without clock offsets) is sent as soon as it is read, and shows up in the pacing
//! error.
//!
//! Clock offsets: each stream's ClockOffset chunks are applied as they are read, the most
//! recent one to every later sample of that stream. This is the streaming approximation
//! of pyxdf's robust line fit through all of a stream's offsets
//! ([`crate::xdf::synchronize`]): it keeps streams recorded on different machines
//! aligned to within the offsets' jitter and the drift between two measurements
//! (LabRecorder measures every 5 s). Samples that come before a stream's first offset
//! wait for it, and so do samples after a clock reset (stamps running back by more than
//! [`RESET_JUMP_S`]) until an offset measured after the reset arrives (one whose
//! collection time is in the new clock), as pyxdf's reset handling would split them; a
//! stream that gets no such offset within the bounds above is sent with the offset it
//! had (0 before any). Resets that jump forward are not detected. A file without any
//! clock offsets (monkeysee's own recordings, files written from a `StreamSpec`) is
//! thus read [`OFFSET_WAIT_S`] ahead once, at the start.
//!
//! Stimulus images travel with a session: a stream header may hold
//! `<desc><stimuli><directory>images</directory></stimuli></desc>`, the folder relative
//! to the XDF file's folder (or absolute). A relative directory is rewritten to the
//! absolute, resolved path in the published header, so a daemon on this machine finds
//! the images ([`stimuli_directory`]); that element is the only change to what the
//! file says. liblsl itself gives every outlet a fresh `uid`, `session_id`,
//! `created_at`, `hostname` and ports; a header without those fields or `<version>` (as
//! [`XdfWriter`](crate::xdf::XdfWriter) writes from a `StreamSpec`) gets placeholders,
//! because liblsl cannot publish a header without them.
//!
//! Formats: float32, double64, int8, int16, int32 and string streams are published as
//! they are. int64 streams are published as double64 (exact up to 2^53, noted in the
//! summary): the liblsl 1.13.1 that `lsl-sys` bundles cannot deliver int64 samples to
//! an inlet (its data feed breaks off with "Input stream error", outlet and inlet both
//! from the plain `lsl` crate included).
//!
//! Pacing: the thread sleeps until the next send time (`thread::sleep`, no CPU spent
//! waiting) and pushes everything due when it wakes. Every push's lateness (actual −
//! intended send time of its first sample) goes into an HDR histogram reported in
//! [`ReplaySummary::pacing`]. Measured at 1x on a 64-channel 1 kHz stream with one
//! consumer, on a 2-core machine with one core busy elsewhere: p50 ≈ 90 µs, p99 ≈
//! 0.55 ms, max ≈ 4–5 ms (timer slack and scheduling). [`ReplayOptions::spin`] trades a
//! core for finer pacing: spinning the last 1 ms gave p50 ≈ 1 µs, p99 ≈ 50 µs (the same
//! max); spinning only the last 50–200 µs made p99 worse, not better (the yielding
//! thread loses its turn to busy neighbours).
//!
//! [`Speed::Max`] does not wait for consumers: liblsl has no back-pressure, and an
//! inlet that falls further behind than its buffer (`max_buflen`; the daemon's MUA
//! inlet holds 10 s) loses the oldest samples.
//!
//! Threads: [`run`] works on the calling thread (liblsl outlets are not `Send`);
//! [`spawn`] runs it on a named thread with a stop handle.

use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::xdf::{ErrorKind, XdfError, XdfReader};

mod outlets;
mod pacing;

use pacing::Replayer;

/// Seconds of session time the replayer reads ahead of the next send time.
pub const LOOKAHEAD_S: f64 = 2.0;

/// Samples that wait for a clock offset (see the module docs) are sent without it
/// once they span this many seconds of their stream's time, or the other streams'
/// data read meanwhile does…
pub const OFFSET_WAIT_S: f64 = 10.0;

/// …or once this many bytes of the file were read since they began to wait.
pub const OFFSET_WAIT_BYTES: u64 = 64 << 20;

/// A stream's stamps that run back by more than this many seconds mean its clock was
/// reset (its source machine or program restarted).
pub const RESET_JUMP_S: f64 = 1.0;

/// With [`Speed::Max`], seconds of session time sent per push and stream.
pub const MAX_BATCH_S: f64 = 0.05;

/// Outlets stay open this long after the last sample, so consumers receive the tail.
pub const LINGER: Duration = Duration::from_secs(1);

/// The longest single sleep, so a stop request and the progress line are not delayed.
const MAX_NAP: Duration = Duration::from_millis(50);

/// How fast to replay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// Times real time: 1 is as recorded, 4 four times faster.
    Factor(f64),
    /// As fast as the outlets take it (benchmarks).
    Max,
}

impl Speed {
    /// Checks that a factor is a positive, finite number.
    pub fn validate(self) -> Result<Speed, ReplayError> {
        match self {
            Speed::Factor(f) if !(f.is_finite() && f > 0.0) => Err(ReplayError::BadSpeed(f)),
            s => Ok(s),
        }
    }
}

impl FromStr for Speed {
    type Err = ReplayError;

    /// `max`, or a positive number such as `1`, `0.5`, `4`.
    fn from_str(s: &str) -> Result<Speed, ReplayError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        let f = s
            .parse::<f64>()
            .map_err(|_| ReplayError::BadSpeedText(s.to_string()))?;
        Speed::Factor(f).validate()
    }
}

impl fmt::Display for Speed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Speed::Factor(x) => write!(f, "{x}x"),
            Speed::Max => f.write_str("max"),
        }
    }
}

/// How many times to play the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    Once,
    /// This many passes (at least 1).
    Times(u64),
    /// Until stopped.
    Forever,
}

impl Repeat {
    fn allows(self, passes_done: u64) -> bool {
        match self {
            Repeat::Once => passes_done < 1,
            Repeat::Times(n) => passes_done < n.max(1),
            Repeat::Forever => true,
        }
    }
}

/// What [`run`] replays and how.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub path: PathBuf,
    pub speed: Speed,
    /// Passes over the file; stamps keep increasing from one pass to the next.
    pub repeat: Repeat,
    /// Before sending anything, wait up to this many seconds until every outlet has a
    /// consumer (an error if one has none by then).
    pub wait_for_consumer: Option<f64>,
    /// Streams to publish, each a stream name or the file's stream id; empty for all.
    pub streams: Vec<String>,
    /// Seconds to wait after the outlets are up (and consumers, if waited for) before
    /// the first sample, e.g. to give a daemon time to connect.
    pub start_delay: f64,
    /// Print a progress line on stderr once a second.
    pub progress: bool,
    /// Sleep until this long before each send time, then spin (yielding) to it: finer
    /// pacing for a core's worth of CPU. Zero (the default) only sleeps.
    pub spin: Duration,
    /// Set to stop; [`run`] then returns what it sent so far.
    pub stop: Arc<AtomicBool>,
    /// Appended to every published stream's name and `source_id`, so a replay on a lab
    /// network is never mistaken for the live device it was recorded from (LSL has no
    /// authentication: a daemon selecting the device's name or `source_id` would take
    /// the replay). Empty: the recorded names.
    pub name_suffix: String,
}

impl ReplayOptions {
    /// Replays `path` once at 1×, all streams, no waiting, no progress line.
    pub fn new(path: impl Into<PathBuf>) -> ReplayOptions {
        ReplayOptions {
            path: path.into(),
            speed: Speed::Factor(1.0),
            repeat: Repeat::Once,
            wait_for_consumer: None,
            streams: Vec::new(),
            start_delay: 0.0,
            progress: false,
            spin: Duration::ZERO,
            stop: Arc::new(AtomicBool::new(false)),
            name_suffix: String::new(),
        }
    }
}

/// Samples sent on one stream.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StreamSent {
    /// The stream's id in the file.
    pub id: u32,
    pub name: String,
    pub samples: u64,
    /// How the published stream differs from the file's, if it does.
    pub note: Option<String>,
}

/// Lateness of pushes (actual − intended send time of each push's first sample).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Pacing {
    pub pushes: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// What a replay sent.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ReplaySummary {
    /// The published streams, in file order.
    pub streams: Vec<StreamSent>,
    /// Seconds of session time sent (stamp of the last sample sent − first stamp), all
    /// passes together.
    pub session_s: f64,
    /// Seconds from the first to the last stamp of one pass over the file (as far as it
    /// was read).
    pub duration_s: f64,
    /// Wall-clock seconds from the start to the last push.
    pub wall_s: f64,
    /// Passes completed.
    pub loops: u64,
    /// Pacing error; `None` with [`Speed::Max`] (nothing is paced) or when nothing was sent.
    pub pacing: Option<Pacing>,
}

impl ReplaySummary {
    /// Samples sent on the stream with this name or id (0 if none).
    pub fn samples(&self, name_or_id: &str) -> u64 {
        self.streams
            .iter()
            .filter(|s| s.name == name_or_id || s.id.to_string() == name_or_id)
            .map(|s| s.samples)
            .sum()
    }

    /// Samples sent on all streams.
    pub fn total_samples(&self) -> u64 {
        self.streams.iter().map(|s| s.samples).sum()
    }
}

impl fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let speed = if self.wall_s > 0.0 {
            self.session_s / self.wall_s
        } else {
            0.0
        };
        writeln!(
            f,
            "replayed {:.3} s of session time in {:.3} s wall ({:.2}x), {} pass(es) of {:.3} s",
            self.session_s, self.wall_s, speed, self.loops, self.duration_s
        )?;
        for s in &self.streams {
            write!(f, "  stream {} '{}': {} samples", s.id, s.name, s.samples)?;
            match &s.note {
                Some(note) => writeln!(f, " ({note})")?,
                None => writeln!(f)?,
            }
        }
        match &self.pacing {
            Some(p) => write!(
                f,
                "pacing error over {} pushes: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                p.pushes,
                p.p50_us as f64 / 1000.0,
                p.p99_us as f64 / 1000.0,
                p.max_us as f64 / 1000.0
            ),
            None => write!(f, "pacing error: not measured (unpaced)"),
        }
    }
}

/// Why a replay failed. Only [`ReplayError::NoConsumer`] can go away by trying again
/// (once the consumer runs); the others need a different file or option.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot open {}", .path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {error}", .path.display())]
    NotXdf { path: PathBuf, error: XdfError },
    /// The file is damaged at `error.offset`: everything before it was sent.
    #[error("{} is damaged: {error}; everything before it was replayed ({} samples)", .path.display(), .sent.total_samples())]
    Damaged {
        path: PathBuf,
        error: XdfError,
        sent: Box<ReplaySummary>,
    },
    #[error("{} holds no streams", .path.display())]
    NoStreams { path: PathBuf },
    #[error("no stream in {} matches --stream {wanted}; the file has {available}", .path.display())]
    NoMatch {
        path: PathBuf,
        wanted: String,
        available: String,
    },
    #[error("--speed must be a positive number of times real time, or max; {0} is not")]
    BadSpeed(f64),
    #[error("--speed must be a positive number of times real time, or max; {0:?} is not")]
    BadSpeedText(String),
    #[error("cannot publish stream {stream} '{name}': {reason}")]
    Outlet {
        stream: u32,
        name: String,
        reason: String,
    },
    #[error("no consumer connected to {streams} within {waited:.1} s; start the consumer (e.g. monkeysee run) or raise the wait")]
    NoConsumer { streams: String, waited: f64 },
    #[error("liblsl refused a chunk of stream {stream} '{name}' (error code {code})")]
    Push {
        stream: u32,
        name: String,
        code: i32,
    },
}

/// Starts [`run`] on a thread named `replay`.
pub fn spawn(opts: ReplayOptions) -> std::io::Result<ReplayHandle> {
    spawn_with(opts, || {})
}

/// [`spawn`], running `on_start` on the replay thread first (e.g. to raise its priority).
pub fn spawn_with(
    opts: ReplayOptions,
    on_start: impl FnOnce() + Send + 'static,
) -> std::io::Result<ReplayHandle> {
    let stop = opts.stop.clone();
    let thread = thread::Builder::new()
        .name("replay".into())
        .spawn(move || {
            on_start();
            run(opts)
        })?;
    Ok(ReplayHandle { stop, thread })
}

/// A replay running on its own thread.
pub struct ReplayHandle {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<ReplaySummary, ReplayError>>,
}

impl ReplayHandle {
    /// Asks the replay to stop; [`ReplayHandle::join`] then returns soon.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// True once the replay has returned.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the replay to end.
    pub fn join(self) -> Result<ReplaySummary, ReplayError> {
        match self.thread.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Replays a session on this thread until it ends (all passes), fails, or `opts.stop`.
pub fn run(opts: ReplayOptions) -> Result<ReplaySummary, ReplayError> {
    let speed = opts.speed.validate()?;
    let reader = open(&opts.path)?;
    let base_dir = opts
        .path
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let mut r = Replayer::new(&opts, speed, reader, base_dir);
    r.prime()?;
    if opts.stop.load(Ordering::Relaxed) {
        return Ok(r.summary());
    }
    r.play()?;
    let summary = r.summary();
    if let Some(error) = r.take_damage() {
        return Err(ReplayError::Damaged {
            path: opts.path.clone(),
            error,
            sent: Box::new(summary),
        });
    }
    Ok(summary)
}

fn open(path: &Path) -> Result<XdfReader<BufReader<File>>, ReplayError> {
    XdfReader::open(path).map_err(|error| match error.kind {
        ErrorKind::Io(source) => ReplayError::Open {
            path: path.to_path_buf(),
            source,
        },
        _ => ReplayError::NotXdf {
            path: path.to_path_buf(),
            error,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_parses_factors_and_max_and_refuses_the_rest() {
        assert_eq!("max".parse::<Speed>().unwrap(), Speed::Max);
        assert_eq!("4".parse::<Speed>().unwrap(), Speed::Factor(4.0));
        assert_eq!(" 0.5 ".parse::<Speed>().unwrap(), Speed::Factor(0.5));
        for bad in ["0", "-1", "NaN", "inf", "fast", ""] {
            assert!(bad.parse::<Speed>().is_err(), "{bad} parsed");
        }
    }
}
