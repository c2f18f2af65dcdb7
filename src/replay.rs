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

use std::collections::{HashMap, VecDeque};
use std::ffi::{CStr, CString};
use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::ops::Range;
use std::os::raw::{c_char, c_ulong};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use quick_xml::events::Event;

use crate::ingest::local_clock;
use crate::xdf::{
    ChannelFormat, Chunk, ErrorKind, SampleChunk, StreamId, StreamInfo, Values, XdfError, XdfReader,
};

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
    let stop = opts.stop.clone();
    let thread = thread::Builder::new()
        .name("replay".into())
        .spawn(move || run(opts))?;
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
    let mut r = Replayer {
        opts: &opts,
        speed,
        base_dir,
        reader,
        pass: 0,
        span: None,
        period: None,
        source_done: false,
        damage: None,
        streams: Vec::new(),
        by_id: HashMap::new(),
        max_seen: f64::NEG_INFINITY,
        first: 0.0,
        t0_lsl: 0.0,
        start: Instant::now(),
        last_push: None,
        last_s: 0.0,
        pacing: Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
            .expect("valid histogram bounds"),
        conv: Vec::new(),
    };
    r.prime()?;
    if opts.stop.load(Ordering::Relaxed) {
        return Ok(r.summary());
    }
    r.play()?;
    let summary = r.summary();
    if let Some(error) = r.damage.take() {
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

/// Samples of one file chunk waiting to be sent. `stamps` are clock-corrected.
struct Queued {
    chunk: SampleChunk,
    /// Next sample to send.
    next: usize,
    /// Added to every stamp: the pass's place in a looped replay.
    shift: f64,
}

impl Queued {
    fn head(&self) -> f64 {
        self.chunk.stamps[self.next] + self.shift
    }
}

struct Stream {
    id: StreamId,
    name: String,
    srate: f64,
    outlet: Option<Outlet>,
    /// How the published stream differs from the file's.
    note: Option<&'static str>,
    /// The most recent clock offset of this pass; `None` before the first.
    offset: Option<f64>,
    /// The last raw stamp before a clock reset, while no offset measured after the
    /// reset has arrived.
    reset_at: Option<f64>,
    /// The last raw stamp read.
    last_raw: f64,
    /// Samples waiting for a clock offset (raw stamps); the reader position when they
    /// began to wait, and the replayer's `max_seen` then (or when it first had one).
    waiting: VecDeque<SampleChunk>,
    waiting_since: u64,
    waiting_seen: f64,
    queue: VecDeque<Queued>,
    sent: u64,
    /// Reused push buffers.
    stamps: Vec<f64>,
    str_ptrs: Vec<*const c_char>,
    str_lens: Vec<u32>,
}

impl Stream {
    fn head(&self) -> Option<f64> {
        self.queue.front().map(Queued::head)
    }

    fn waiting_span(&self) -> f64 {
        let first = self.waiting.front().and_then(|c| c.stamps.first());
        let last = self.waiting.back().and_then(|c| c.stamps.last());
        match (first, last) {
            (Some(a), Some(b)) => (b - a).abs(),
            _ => 0.0,
        }
    }
}

struct Replayer<'a> {
    opts: &'a ReplayOptions,
    speed: Speed,
    /// The XDF file's folder, for relative stimulus directories.
    base_dir: PathBuf,
    reader: XdfReader<BufReader<File>>,
    pass: u64,
    /// Last − first stamp of the first pass, known once it was read.
    span: Option<f64>,
    /// Session time from one pass to the next (span + one sample interval).
    period: Option<f64>,
    source_done: bool,
    damage: Option<XdfError>,
    streams: Vec<Stream>,
    by_id: HashMap<u32, usize>,
    /// Latest (shifted) stamp read so far.
    max_seen: f64,
    /// The session's first stamp (published streams, clock-corrected).
    first: f64,
    t0_lsl: f64,
    start: Instant,
    /// When the last push was made.
    last_push: Option<Instant>,
    /// Session time of the last sample sent.
    last_s: f64,
    pacing: Histogram<u64>,
    /// Conversion buffer for int64 samples (published as double64).
    conv: Vec<f64>,
}

impl Replayer<'_> {
    /// Reads the first look-ahead, creates the outlets, checks the selection, waits
    /// for consumers and the start delay, and sets the time origin.
    fn prime(&mut self) -> Result<(), ReplayError> {
        while !self.source_done && !self.primed() {
            self.read_chunk()?;
        }
        if self.streams.is_empty() {
            if let Some(error) = self.damage.take() {
                return Err(ReplayError::Damaged {
                    path: self.opts.path.clone(),
                    error,
                    sent: Box::new(self.summary()),
                });
            }
            return Err(ReplayError::NoStreams {
                path: self.opts.path.clone(),
            });
        }
        if !self.streams.iter().any(|s| s.outlet.is_some()) {
            return Err(ReplayError::NoMatch {
                path: self.opts.path.clone(),
                wanted: self.opts.streams.join(", "),
                available: self
                    .streams
                    .iter()
                    .map(|s| format!("{} '{}'", s.id, s.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if let Some(timeout) = self.opts.wait_for_consumer {
            self.wait_for_consumers(timeout)?;
        }
        if self.opts.start_delay > 0.0 {
            let until = Instant::now() + Duration::from_secs_f64(self.opts.start_delay);
            while Instant::now() < until && !self.opts.stop.load(Ordering::Relaxed) {
                thread::sleep(MAX_NAP.min(until.saturating_duration_since(Instant::now())));
            }
        }
        self.first = self.next_head().unwrap_or(0.0);
        self.t0_lsl = local_clock();
        self.start = Instant::now();
        Ok(())
    }

    /// The first look-ahead is in: `LOOKAHEAD_S` of data past the earliest sample, and
    /// no published stream waits for a clock offset.
    fn primed(&self) -> bool {
        self.next_head()
            .is_some_and(|head| self.max_seen >= head + LOOKAHEAD_S && !self.any_waiting())
    }

    fn any_waiting(&self) -> bool {
        self.streams.iter().any(|s| !s.waiting.is_empty())
    }

    fn wait_for_consumers(&self, timeout: f64) -> Result<(), ReplayError> {
        let started = Instant::now();
        let mut said = false;
        loop {
            let missing: Vec<&Stream> = self
                .streams
                .iter()
                .filter(|s| s.outlet.as_ref().is_some_and(|o| !o.has_consumers()))
                .collect();
            if missing.is_empty() || self.opts.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let waited = started.elapsed().as_secs_f64();
            if waited >= timeout {
                return Err(ReplayError::NoConsumer {
                    streams: missing
                        .iter()
                        .map(|s| format!("'{}'", s.name))
                        .collect::<Vec<_>>()
                        .join(", "),
                    waited,
                });
            }
            if self.opts.progress && !said {
                said = true;
                eprintln!(
                    "replay: waiting up to {timeout:.0} s for consumers of {}",
                    missing
                        .iter()
                        .map(|s| format!("'{}'", s.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends everything, pass after pass, paced.
    fn play(&mut self) -> Result<(), ReplayError> {
        let mut last_progress = Instant::now();
        loop {
            if self.opts.stop.load(Ordering::Relaxed) {
                break;
            }
            self.fill()?;
            if self.opts.progress && last_progress.elapsed() >= Duration::from_secs(1) {
                last_progress = Instant::now();
                eprintln!("{}", self.progress_line());
            }
            let Some(head) = self.next_head() else {
                // Everything read was sent and the source is done (fill guarantees it).
                if self.end_pass()? {
                    continue;
                }
                break;
            };
            let limit = match self.speed {
                Speed::Max => head + MAX_BATCH_S,
                Speed::Factor(speed) => {
                    let due = self.due(head - self.first, speed);
                    let now = Instant::now();
                    if due > now {
                        let left = due - now;
                        if left > MAX_NAP {
                            thread::sleep(MAX_NAP);
                        } else {
                            sleep_until(due, self.opts.spin);
                        }
                        continue;
                    }
                    self.first + (now - self.start).as_secs_f64() * speed
                }
            };
            self.push_due(limit)?;
        }
        if self.streams.iter().any(|s| s.sent > 0) {
            let until = Instant::now() + LINGER;
            while Instant::now() < until && !self.opts.stop.load(Ordering::Relaxed) {
                thread::sleep(MAX_NAP);
            }
        }
        Ok(())
    }

    /// The instant a sample of session time `s` is due.
    fn due(&self, s: f64, speed: f64) -> Instant {
        self.start + Duration::from_secs_f64((s / speed).max(0.0))
    }

    /// At the end of a pass: starts the next one if asked; false when the replay is over.
    fn end_pass(&mut self) -> Result<bool, ReplayError> {
        self.pass += 1;
        if self.span.is_none() && self.max_seen.is_finite() {
            self.span = Some((self.max_seen - self.first).max(0.0));
        }
        if self.damage.is_some() || !self.opts.repeat.allows(self.pass) {
            return Ok(false);
        }
        let Some(span) = self.span else {
            return Ok(false); // nothing was sent: nothing to loop over
        };
        if self.period.is_none() {
            // The next pass starts one sample interval after the last sample.
            let rate = self
                .streams
                .iter()
                .filter(|s| s.outlet.is_some())
                .map(|s| s.srate)
                .fold(0.0, f64::max);
            let tick = if rate > 0.0 { 1.0 / rate } else { 1e-3 };
            self.period = Some(span + tick);
        }
        self.reader = open(&self.opts.path)?;
        self.source_done = false;
        for s in &mut self.streams {
            s.offset = None;
            s.reset_at = None;
            s.last_raw = f64::NEG_INFINITY;
        }
        Ok(true)
    }

    fn shift(&self) -> f64 {
        self.period.map_or(0.0, |p| p * self.pass as f64)
    }

    /// The earliest unsent stamp of any stream.
    fn next_head(&self) -> Option<f64> {
        self.streams
            .iter()
            .filter_map(Stream::head)
            .min_by(|a, b| a.total_cmp(b))
    }

    /// Reads until the buffer reaches `LOOKAHEAD_S` past the next send and no stream
    /// waits for a clock offset, or the end.
    fn fill(&mut self) -> Result<(), ReplayError> {
        while !self.source_done {
            match self.next_head() {
                Some(head) if self.max_seen >= head + LOOKAHEAD_S && !self.any_waiting() => {
                    return Ok(())
                }
                _ => self.read_chunk()?,
            }
        }
        Ok(())
    }

    /// Reads and files one chunk. At the end of the file (or damage) every waiting
    /// sample is released.
    fn read_chunk(&mut self) -> Result<(), ReplayError> {
        let chunk = match self.reader.next_chunk() {
            Ok(Some(c)) => c,
            Ok(None) => {
                self.finish_source();
                return Ok(());
            }
            Err(e) => {
                if let Some(partial) = self.reader.take_partial_samples() {
                    self.take_samples(partial);
                }
                self.damage = Some(e);
                self.finish_source();
                return Ok(());
            }
        };
        match chunk {
            Chunk::StreamHeader { stream, info } => {
                if self.pass == 0 && !self.by_id.contains_key(&stream.0) {
                    self.add_stream(stream, &info)?;
                }
            }
            Chunk::ClockOffset {
                stream,
                collection_time,
                value,
            } => {
                if let Some(&i) = self.by_id.get(&stream.0) {
                    let s = &mut self.streams[i];
                    // After a reset, only an offset measured in the new clock applies.
                    if s.reset_at
                        .is_none_or(|r| collection_time < r - RESET_JUMP_S)
                    {
                        s.offset = Some(value);
                        s.reset_at = None;
                        self.release_waiting(i);
                    }
                }
            }
            Chunk::Samples(samples) => self.take_samples(samples),
            Chunk::FileHeader { .. } | Chunk::Boundary | Chunk::StreamFooter { .. } => {}
        }
        self.check_waiting();
        Ok(())
    }

    /// Gives up waiting for a clock offset where the bounds are reached.
    fn check_waiting(&mut self) {
        let position = self.reader.position();
        for i in 0..self.streams.len() {
            let s = &mut self.streams[i];
            if s.waiting.is_empty() {
                continue;
            }
            if s.waiting_seen == f64::NEG_INFINITY {
                s.waiting_seen = self.max_seen;
            }
            if s.waiting_span() >= OFFSET_WAIT_S
                || self.max_seen - s.waiting_seen >= OFFSET_WAIT_S
                || position.saturating_sub(s.waiting_since) >= OFFSET_WAIT_BYTES
            {
                self.give_up_waiting(i);
            }
        }
    }

    fn finish_source(&mut self) {
        self.source_done = true;
        for i in 0..self.streams.len() {
            self.give_up_waiting(i);
        }
    }

    fn add_stream(&mut self, id: StreamId, info: &StreamInfo) -> Result<(), ReplayError> {
        let wanted = &self.opts.streams;
        let selected = wanted.is_empty()
            || wanted
                .iter()
                .any(|w| w == info.name() || *w == id.0.to_string());
        let mut note = None;
        let outlet = if selected {
            let mut xml = outlet_header(info.xml(), id, &self.base_dir);
            if info.channel_format() == ChannelFormat::Int64 {
                set_field(&mut xml, "channel_format", "double64");
                note = Some(INT64_NOTE);
            }
            let suffix = &self.opts.name_suffix;
            if !suffix.is_empty() {
                set_field(&mut xml, "name", &format!("{}{suffix}", info.name()));
                set_field(
                    &mut xml,
                    "source_id",
                    &format!("{}{suffix}", info.source_id()),
                );
            }
            Some(
                Outlet::create(&xml, info.channel_count()).map_err(|reason| {
                    ReplayError::Outlet {
                        stream: id.0,
                        name: info.name().to_string(),
                        reason,
                    }
                })?,
            )
        } else {
            None
        };
        self.by_id.insert(id.0, self.streams.len());
        self.streams.push(Stream {
            id,
            name: info.name().to_string(),
            srate: info.nominal_srate(),
            outlet,
            note,
            offset: None,
            reset_at: None,
            last_raw: f64::NEG_INFINITY,
            waiting: VecDeque::new(),
            waiting_since: 0,
            waiting_seen: f64::NEG_INFINITY,
            queue: VecDeque::new(),
            sent: 0,
            stamps: Vec::new(),
            str_ptrs: Vec::new(),
            str_lens: Vec::new(),
        });
        Ok(())
    }

    fn take_samples(&mut self, mut chunk: SampleChunk) {
        let Some(&i) = self.by_id.get(&chunk.stream.0) else {
            return;
        };
        if self.streams[i].outlet.is_none() {
            return;
        }
        // Split at every clock reset: the samples after it wait for a new offset.
        while !chunk.is_empty() {
            let mut prev = self.streams[i].last_raw;
            let reset = chunk.stamps.iter().position(|&t| {
                let back = t < prev - RESET_JUMP_S;
                prev = t;
                back
            });
            let rest = match reset {
                Some(k) => {
                    let rest = split_off(&mut chunk, k);
                    let before = if k > 0 {
                        chunk.stamps[k - 1]
                    } else {
                        self.streams[i].last_raw
                    };
                    self.file(i, chunk);
                    self.streams[i].reset_at = Some(before);
                    // The new clock's first stamp is not a reset again.
                    self.streams[i].last_raw = rest.stamps[0];
                    Some(rest)
                }
                None => {
                    self.file(i, chunk);
                    None
                }
            };
            match rest {
                Some(r) => chunk = r,
                None => break,
            }
        }
    }

    /// Queues samples whose clock offset is known; the others wait for one.
    fn file(&mut self, i: usize, chunk: SampleChunk) {
        if chunk.is_empty() {
            return;
        }
        let position = self.reader.position();
        let s = &mut self.streams[i];
        s.last_raw = *chunk.stamps.last().expect("not empty");
        match s.offset {
            Some(offset) if s.reset_at.is_none() => self.enqueue(i, chunk, offset),
            _ => {
                if s.waiting.is_empty() {
                    s.waiting_since = position;
                    s.waiting_seen = self.max_seen;
                }
                s.waiting.push_back(chunk);
            }
        }
    }

    /// Queues a stream's waiting samples with its current offset, now known.
    fn release_waiting(&mut self, i: usize) {
        let offset = self.streams[i].offset.unwrap_or(0.0);
        while let Some(chunk) = self.streams[i].waiting.pop_front() {
            self.enqueue(i, chunk, offset);
        }
    }

    /// No fitting offset came in time: sends the waiting samples with the offset the
    /// stream has (0 before any) and stops waiting for one.
    fn give_up_waiting(&mut self, i: usize) {
        if self.streams[i].waiting.is_empty() {
            return;
        }
        let s = &mut self.streams[i];
        s.offset = Some(s.offset.unwrap_or(0.0));
        s.reset_at = None;
        self.release_waiting(i);
    }

    fn enqueue(&mut self, i: usize, mut chunk: SampleChunk, offset: f64) {
        let shift = self.shift();
        for t in &mut chunk.stamps {
            *t += offset;
            self.max_seen = self.max_seen.max(*t + shift);
        }
        self.streams[i].queue.push_back(Queued {
            chunk,
            next: 0,
            shift,
        });
    }

    /// Pushes every queued sample stamped at or before `limit`, a chunk per stream and
    /// file chunk, streams in the order of their next sample.
    fn push_due(&mut self, limit: f64) -> Result<(), ReplayError> {
        loop {
            // The stream whose next sample is earliest and due.
            let Some(i) = (0..self.streams.len())
                .filter(|&i| self.streams[i].head().is_some_and(|h| h <= limit))
                .min_by(|&a, &b| {
                    let (ha, hb) = (self.streams[a].head(), self.streams[b].head());
                    ha.unwrap_or(f64::INFINITY)
                        .total_cmp(&hb.unwrap_or(f64::INFINITY))
                })
            else {
                return Ok(());
            };
            self.push_stream(i, limit)?;
        }
    }

    /// One push of stream `i`'s due samples from its front chunk.
    fn push_stream(&mut self, i: usize, limit: f64) -> Result<(), ReplayError> {
        let (first, t0) = (self.first, self.t0_lsl);
        let stream = &mut self.streams[i];
        let Some(q) = stream.queue.front_mut() else {
            return Ok(());
        };
        let start = q.next;
        let mut end = start;
        while end < q.chunk.stamps.len() && q.chunk.stamps[end] + q.shift <= limit {
            end += 1;
        }
        let n = end - start;
        if n == 0 {
            return Ok(());
        }
        stream.stamps.clear();
        stream.stamps.extend(
            q.chunk.stamps[start..end]
                .iter()
                .map(|t| t0 + (t + q.shift - first)),
        );
        let head_s = q.chunk.stamps[start] + q.shift - first;
        let last_s = q.chunk.stamps[end - 1] + q.shift - first;
        let ch = q.chunk.channel_count;
        let values = Range {
            start: start * ch,
            end: end * ch,
        };
        let outlet = stream
            .outlet
            .as_ref()
            .expect("only published streams queue");
        let before = Instant::now();
        let code = outlet.push(
            &q.chunk.values,
            values,
            &stream.stamps,
            &mut stream.str_ptrs,
            &mut stream.str_lens,
            &mut self.conv,
        );
        if code < 0 {
            return Err(ReplayError::Push {
                stream: stream.id.0,
                name: stream.name.clone(),
                code,
            });
        }
        stream.sent += n as u64;
        q.next = end;
        if q.next >= q.chunk.stamps.len() {
            stream.queue.pop_front();
        }
        self.last_s = self.last_s.max(last_s);
        self.last_push = Some(Instant::now());
        if let Speed::Factor(speed) = self.speed {
            let due = self.start + Duration::from_secs_f64((head_s / speed).max(0.0));
            let late = before.saturating_duration_since(due).as_micros() as u64;
            self.pacing.saturating_record(late.max(1));
        }
        Ok(())
    }

    fn progress_line(&self) -> String {
        let wall = self.start.elapsed().as_secs_f64();
        // The session clock: how far into the session the replay is (at max speed,
        // the last sample sent).
        let pos = match self.speed {
            Speed::Factor(f) => wall * f,
            Speed::Max => self.last_s,
        } - self.shift();
        let total = match self.period {
            Some(p) => format!(" (pass {}, {:.1} s each)", self.pass + 1, p),
            None if self.source_done => format!(" of {:.1} s", self.max_seen - self.first),
            None => String::new(),
        };
        // Achieved: session time sent per wall second.
        let speed = if wall > 0.0 { self.last_s / wall } else { 0.0 };
        let p99 = if self.pacing.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:.2} ms",
                self.pacing.value_at_quantile(0.99) as f64 / 1000.0
            )
        };
        let samples: u64 = self.streams.iter().map(|s| s.sent).sum();
        format!("replay: {pos:.1} s{total} | {samples} samples | {speed:.2}x | pacing p99 {p99}")
    }

    fn summary(&self) -> ReplaySummary {
        let pacing = (!self.pacing.is_empty()).then(|| Pacing {
            pushes: self.pacing.len(),
            p50_us: self.pacing.value_at_quantile(0.5),
            p99_us: self.pacing.value_at_quantile(0.99),
            max_us: self.pacing.max(),
        });
        let sent = self.streams.iter().any(|s| s.sent > 0);
        let duration = match self.span {
            Some(span) => span,
            None if sent => (self.max_seen - self.first).max(0.0),
            None => 0.0,
        };
        ReplaySummary {
            streams: self
                .streams
                .iter()
                .filter(|s| s.outlet.is_some())
                .map(|s| StreamSent {
                    id: s.id.0,
                    name: s.name.clone(),
                    samples: s.sent,
                    note: s.note.map(str::to_string),
                })
                .collect(),
            session_s: if sent { self.last_s } else { 0.0 },
            duration_s: duration,
            wall_s: self
                .last_push
                .map_or(0.0, |t| t.duration_since(self.start).as_secs_f64()),
            loops: self.pass,
            pacing,
        }
    }
}

/// Splits `chunk` at sample `at`: `chunk` keeps the samples before it, the rest is
/// returned.
fn split_off(chunk: &mut SampleChunk, at: usize) -> SampleChunk {
    let v = at * chunk.channel_count;
    let values = match &mut chunk.values {
        Values::Float32(x) => Values::Float32(x.split_off(v)),
        Values::Double64(x) => Values::Double64(x.split_off(v)),
        Values::Int8(x) => Values::Int8(x.split_off(v)),
        Values::Int16(x) => Values::Int16(x.split_off(v)),
        Values::Int32(x) => Values::Int32(x.split_off(v)),
        Values::Int64(x) => Values::Int64(x.split_off(v)),
        Values::String(x) => Values::String(x.split_off(v)),
    };
    SampleChunk {
        stream: chunk.stream,
        channel_count: chunk.channel_count,
        stamps: chunk.stamps.split_off(at),
        values,
    }
}

/// Sleeps until `spin` before `due`, then yields until it.
fn sleep_until(due: Instant, spin: Duration) {
    let now = Instant::now();
    if due <= now {
        return;
    }
    let left = due - now;
    if left > spin {
        thread::sleep(left - spin);
    }
    while Instant::now() < due {
        thread::yield_now();
    }
}

/// Why an int64 stream is published as double64.
const INT64_NOTE: &str = "int64 published as double64, exact to 2^53: the bundled liblsl 1.13 cannot deliver int64 samples to an inlet";

/// An LSL outlet created from a header XML.
struct Outlet {
    handle: lsl_sys::lsl_outlet,
}

impl Outlet {
    fn create(xml: &str, channels: usize) -> Result<Outlet, String> {
        if channels == 0 {
            return Err("it has no channels".into());
        }
        let text = CString::new(xml).map_err(|_| "its header holds a NUL byte".to_string())?;
        // SAFETY: a valid NUL-terminated string; liblsl copies it and returns an owned
        // handle (or null), which we destroy below.
        let info = unsafe { lsl_sys::lsl_streaminfo_from_xml(text.as_ptr()) };
        if info.is_null() {
            return Err("liblsl cannot parse its header".into());
        }
        // SAFETY: valid handle; the name is copied at once.
        let name = unsafe { CStr::from_ptr(lsl_sys::lsl_get_name(info)) }
            .to_string_lossy()
            .into_owned();
        if let Some(why) = name.strip_prefix("(invalid: ") {
            // SAFETY: owned handle, destroyed once.
            unsafe { lsl_sys::lsl_destroy_streaminfo(info) };
            return Err(format!(
                "liblsl refuses its header: {}",
                why.trim_end_matches(')')
            ));
        }
        // SAFETY: valid info; the outlet copies it, so we destroy ours afterwards.
        // Sender's chunking, 360 s (or 36000 irregular samples) of buffer.
        let handle = unsafe {
            let h = lsl_sys::lsl_create_outlet(info, 0, 360);
            lsl_sys::lsl_destroy_streaminfo(info);
            h
        };
        if handle.is_null() {
            return Err("liblsl could not create the outlet".into());
        }
        Ok(Outlet { handle })
    }

    fn has_consumers(&self) -> bool {
        // SAFETY: valid outlet handle.
        unsafe { lsl_sys::lsl_have_consumers(self.handle) != 0 }
    }

    /// Pushes `values[range]` (whole samples) with one stamp per sample; returns
    /// liblsl's error code (0 on success). Strings go through `ptrs`/`lens`, int64
    /// through `conv` (as double64, see [`INT64_NOTE`]); both reused.
    fn push(
        &self,
        values: &Values,
        range: Range<usize>,
        stamps: &[f64],
        ptrs: &mut Vec<*const c_char>,
        lens: &mut Vec<u32>,
        conv: &mut Vec<f64>,
    ) -> i32 {
        let h = self.handle;
        let n = (range.end - range.start) as c_ulong;
        let ts = stamps.as_ptr();
        // SAFETY (every arm): `values[range]` holds `n` values of the outlet's format
        // (whole samples of its channel count, as the reader checked against the same
        // header), `stamps` one stamp per sample; liblsl copies both before returning.
        unsafe {
            match values {
                Values::Float32(v) => lsl_sys::lsl_push_chunk_ftnp(h, v[range].as_ptr(), n, ts, 1),
                Values::Double64(v) => lsl_sys::lsl_push_chunk_dtnp(h, v[range].as_ptr(), n, ts, 1),
                Values::Int32(v) => lsl_sys::lsl_push_chunk_itnp(h, v[range].as_ptr(), n, ts, 1),
                Values::Int16(v) => lsl_sys::lsl_push_chunk_stnp(h, v[range].as_ptr(), n, ts, 1),
                Values::Int8(v) => {
                    lsl_sys::lsl_push_chunk_ctnp(h, v[range].as_ptr().cast::<c_char>(), n, ts, 1)
                }
                Values::Int64(v) => {
                    conv.clear();
                    conv.extend(v[range].iter().map(|&x| x as f64));
                    lsl_sys::lsl_push_chunk_dtnp(h, conv.as_ptr(), n, ts, 1)
                }
                Values::String(v) => {
                    ptrs.clear();
                    lens.clear();
                    for s in &v[range] {
                        ptrs.push(s.as_ptr().cast::<c_char>());
                        lens.push(u32::try_from(s.len()).unwrap_or(u32::MAX));
                    }
                    lsl_sys::lsl_push_chunk_buftnp(h, ptrs.as_mut_ptr(), lens.as_ptr(), n, ts, 1)
                }
            }
        }
    }
}

impl Drop for Outlet {
    fn drop(&mut self) {
        // SAFETY: we own the outlet and destroy it once.
        unsafe { lsl_sys::lsl_destroy_outlet(self.handle) }
    }
}

/// Where an element sits in an XML text.
struct ElementSpan {
    /// The whole element, from `<` of its start tag to `>` of its end tag.
    whole: Range<usize>,
    /// Its content between the tags; `None` for an empty element `<x/>`.
    inner: Option<Range<usize>>,
    /// Its own text, entities resolved.
    text: String,
}

/// The first element at `path` (from the root, e.g. `["info", "desc"]`).
fn find_element(xml: &str, path: &[&str]) -> Option<ElementSpan> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<String> = Vec::new();
    let mut open: Option<(usize, usize)> = None;
    let mut text = String::new();
    let at_path =
        |stack: &[String]| stack.len() == path.len() && stack.iter().zip(path).all(|(a, b)| a == b);
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader.read_event().ok()?;
        let after = reader.buffer_position() as usize;
        match event {
            Event::Start(e) => {
                stack.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                if open.is_none() && at_path(&stack) {
                    open = Some((before, after));
                }
            }
            Event::Empty(e) => {
                stack.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                if open.is_none() && at_path(&stack) {
                    return Some(ElementSpan {
                        whole: before..after,
                        inner: None,
                        text: String::new(),
                    });
                }
                stack.pop();
            }
            Event::End(_) => {
                if let Some((start, inner)) = open {
                    if at_path(&stack) {
                        return Some(ElementSpan {
                            whole: start..after,
                            inner: Some(inner..before),
                            text,
                        });
                    }
                }
                stack.pop();
            }
            Event::Text(t) if open.is_some() && at_path(&stack) => {
                text.push_str(&t.xml10_content().ok()?);
            }
            Event::CData(d) if open.is_some() && at_path(&stack) => {
                text.push_str(&d.decode().ok()?);
            }
            Event::GeneralRef(r) if open.is_some() && at_path(&stack) => {
                match r.resolve_char_ref().ok()? {
                    Some(c) => text.push(c),
                    None => {
                        let name = r.decode().ok()?;
                        text.push_str(quick_xml::escape::resolve_predefined_entity(&name)?);
                    }
                }
            }
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// `<desc><stimuli><directory>` of a stream header, if present and not empty, as
/// written (relative to the XDF file's folder, or absolute).
pub fn stimuli_directory(header_xml: &str) -> Option<PathBuf> {
    let span = find_element(header_xml, &["info", "desc", "stimuli", "directory"])?;
    let dir = span.text.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The header to publish for stream `id`: the file's XML with a relative
/// `desc/stimuli/directory` made absolute against `base_dir`, and the fields liblsl
/// insists on (`name`, `version`, `uid`, `created_at`, ports) added where missing.
pub fn outlet_header(xml: &str, id: StreamId, base_dir: &Path) -> String {
    let mut xml = xml.to_string();
    if let Some(span) = find_element(&xml, &["info", "desc", "stimuli", "directory"]) {
        let dir = span.text.trim();
        if let (Some(inner), false) = (span.inner, dir.is_empty()) {
            if Path::new(dir).is_relative() {
                let joined = base_dir.join(dir);
                let abs = joined.canonicalize().unwrap_or(joined);
                let text = abs.to_string_lossy();
                xml.replace_range(inner, &quick_xml::escape::escape(text.as_ref()));
            }
        }
    }
    ensure_field(&mut xml, "name", &format!("xdf-stream-{id}"));
    for (field, value) in instance_fields() {
        ensure_field(&mut xml, field, &value);
    }
    xml
}

/// The fields liblsl needs in a header it publishes, with the values given where they
/// are missing or empty: it cannot parse an empty number, and it can only overwrite a
/// field that has text (it does so for all but `version` when it creates the outlet;
/// a stream missing `session_id` would never be found).
fn instance_fields() -> [(&'static str, String); 9] {
    let version = format!("{:.2}", f64::from(protocol_version()) / 100.0);
    [
        ("version", version),
        ("created_at", "0".into()),
        ("uid", "replay-placeholder-uid".into()),
        ("session_id", "default".into()),
        ("hostname", "replay".into()),
        ("v4data_port", "0".into()),
        ("v4service_port", "0".into()),
        ("v6data_port", "0".into()),
        ("v6service_port", "0".into()),
    ]
}

fn protocol_version() -> i32 {
    // SAFETY: no arguments, no state.
    unsafe { lsl_sys::lsl_protocol_version() }
}

/// Sets the text of `<info><field>` (adding the field if missing).
fn set_field(xml: &mut String, field: &str, value: &str) {
    let element = format!("<{field}>{}</{field}>", quick_xml::escape::escape(value));
    match find_element(xml, &["info", field]) {
        Some(span) => xml.replace_range(span.whole, &element),
        None => ensure_field(xml, field, value),
    }
}

/// Gives `<info><field>` the text `value` if it is missing or empty.
fn ensure_field(xml: &mut String, field: &str, value: &str) {
    let element = format!("<{field}>{}</{field}>", quick_xml::escape::escape(value));
    match find_element(xml, &["info", field]) {
        Some(span) if !span.text.trim().is_empty() => {}
        Some(span) => xml.replace_range(span.whole, &element),
        None => {
            if let Some(Some(inner)) = find_element(xml, &["info"]).map(|s| s.inner) {
                xml.insert_str(inner.end, &element);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<?xml version=\"1.0\"?>\n<info>\n\t<name>markers</name>\n\t<type>Markers</type>\n\t<channel_count>1</channel_count>\n\t<nominal_srate>0</nominal_srate>\n\t<channel_format>string</channel_format>\n\t<source_id>sim-1</source_id>\n\t<desc>\n\t\t<stimuli>\n\t\t\t<directory>images &amp; more</directory>\n\t\t</stimuli>\n\t</desc>\n</info>\n";

    #[test]
    fn finds_an_elements_text_and_its_span() {
        let span = find_element(HEADER, &["info", "desc", "stimuli", "directory"]).unwrap();
        assert_eq!(span.text, "images & more");
        assert_eq!(&HEADER[span.inner.unwrap()], "images &amp; more");
        assert_eq!(
            &HEADER[span.whole],
            "<directory>images &amp; more</directory>"
        );
        assert!(find_element(HEADER, &["info", "uid"]).is_none());
        assert!(find_element(HEADER, &["info", "directory"]).is_none());
    }

    #[test]
    fn relative_stimuli_directory_becomes_absolute_and_nothing_else_changes() {
        let xml = outlet_header(HEADER, StreamId(3), Path::new("/data/session"));
        assert_eq!(
            stimuli_directory(&xml).unwrap(),
            PathBuf::from("/data/session/images & more")
        );
        let mut restored = xml.replace("/data/session/images &amp; more", "images &amp; more");
        for (field, value) in instance_fields() {
            restored = restored.replace(&format!("<{field}>{value}</{field}>"), "");
        }
        assert_eq!(restored, HEADER);
    }

    #[test]
    fn absolute_stimuli_directory_and_complete_headers_are_kept() {
        let abs = HEADER.replace("images &amp; more", "/srv/images");
        let fields: String = instance_fields()
            .iter()
            .map(|(f, _)| format!("<{f}>1</{f}>"))
            .collect();
        let full = abs.replace("<desc>", &format!("{fields}\n\t<desc>"));
        assert_eq!(outlet_header(&full, StreamId(1), Path::new("/x")), full);
        let empty_name = full.replace("<name>markers</name>", "<name/>");
        let fixed = outlet_header(&empty_name, StreamId(7), Path::new("/x"));
        assert!(fixed.contains("<name>xdf-stream-7</name>"), "{fixed}");
    }

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
