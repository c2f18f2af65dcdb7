//! The pacing engine: reads the file through the look-ahead, applies each stream's
//! clock offsets, merges the streams in stamp order and sends what is due, on time
//! (the module docs of [`crate::replay`] give the rules).
//!
//! Real-time contract: the send path ([`Replayer::push_due`]) reuses each stream's
//! stamp buffer and its outlet's buffers, so once they have grown to the largest chunk
//! it allocates nothing; it never prints. Reading the file ([`Replayer::fill`])
//! allocates each chunk it reads, between pushes, never while a push is due. The
//! progress line (`--progress`) is printed once a second, also between pushes.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::BufReader;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::outlets::{publish, StreamOutlet};
use super::{
    open, Pacing, ReplayError, ReplayOptions, ReplaySummary, Speed, StreamSent, LINGER,
    LOOKAHEAD_S, MAX_BATCH_S, MAX_NAP, OFFSET_WAIT_BYTES, OFFSET_WAIT_S, RESET_JUMP_S,
};
use crate::lsl::local_clock;
use crate::xdf::{Chunk, SampleChunk, StreamId, StreamInfo, XdfError, XdfReader};

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

/// The samples of one push: a range of the front chunk's samples, and the session
/// times (seconds after the first stamp) of its first and last.
struct Batch {
    samples: Range<usize>,
    head_s: f64,
    last_s: f64,
}

/// One stream of the file: its outlet (if published), its clock-offset state, and the
/// samples queued to send.
struct Stream {
    id: StreamId,
    name: String,
    srate: f64,
    outlet: Option<StreamOutlet>,
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
    /// The published stamps of one push, reused.
    stamps: Vec<f64>,
}

impl Stream {
    fn new(
        id: StreamId,
        info: &StreamInfo,
        outlet: Option<StreamOutlet>,
        note: Option<&'static str>,
    ) -> Stream {
        Stream {
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
        }
    }

    fn head(&self) -> Option<f64> {
        self.queue.front().map(Queued::head)
    }

    fn waiting_span(&self) -> f64 {
        let first = self.waiting.front().and_then(|c| c.stamps.first());
        let last = self.waiting.back().and_then(|c| c.stamps.last());
        first.zip(last).map_or(0.0, |(a, b)| (b - a).abs())
    }

    /// The front chunk's samples stamped at or before `limit` (session time + shift),
    /// with their published stamps (`t0_lsl + (t − first)`) put in `self.stamps`;
    /// `None` if there are none.
    fn due_batch(&mut self, limit: f64, first: f64, t0_lsl: f64) -> Option<Batch> {
        let q = self.queue.front()?;
        let stamps = &q.chunk.stamps;
        let start = q.next;
        let mut end = start;
        while end < stamps.len() && stamps[end] + q.shift <= limit {
            end += 1;
        }
        if end == start {
            return None;
        }
        self.stamps.clear();
        self.stamps.extend(
            stamps[start..end]
                .iter()
                .map(|t| t0_lsl + (t + q.shift - first)),
        );
        Some(Batch {
            samples: start..end,
            head_s: stamps[start] + q.shift - first,
            last_s: stamps[end - 1] + q.shift - first,
        })
    }

    /// Pushes a batch of the front chunk and moves past it.
    fn send(&mut self, batch: &Batch) -> Result<(), ReplayError> {
        let q = self
            .queue
            .front_mut()
            .expect("a batch is of the front chunk");
        let outlet = self.outlet.as_mut().expect("only published streams queue");
        let ch = q.chunk.channel_count;
        let values = batch.samples.start * ch..batch.samples.end * ch;
        outlet
            .push(&q.chunk.values, values, &self.stamps)
            .map_err(|code| ReplayError::Push {
                stream: self.id.0,
                name: self.name.clone(),
                code,
            })?;
        self.sent += batch.samples.len() as u64;
        q.next = batch.samples.end;
        if q.next >= q.chunk.stamps.len() {
            self.queue.pop_front();
        }
        Ok(())
    }
}

/// The replay of one file: reading, clock offsets, pacing and the tallies for the
/// summary.
pub(super) struct Replayer<'a> {
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
}

// Start-up: the first look-ahead, the outlets, consumers and the time origin.
impl<'a> Replayer<'a> {
    pub(super) fn new(
        opts: &'a ReplayOptions,
        speed: Speed,
        reader: XdfReader<BufReader<File>>,
        base_dir: PathBuf,
    ) -> Replayer<'a> {
        Replayer {
            opts,
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
        }
    }

    /// The damage that ended the file early, if any (taken once).
    pub(super) fn take_damage(&mut self) -> Option<XdfError> {
        self.damage.take()
    }

    /// Reads the first look-ahead, creates the outlets, checks the selection, waits
    /// for consumers and the start delay, and sets the time origin.
    pub(super) fn prime(&mut self) -> Result<(), ReplayError> {
        while !self.source_done && !self.primed() {
            self.read_chunk()?;
        }
        self.check_streams()?;
        if let Some(timeout) = self.opts.wait_for_consumer {
            self.wait_for_consumers(timeout)?;
        }
        self.wait_start_delay();
        self.first = self.next_head().unwrap_or(0.0);
        self.t0_lsl = local_clock();
        self.start = Instant::now();
        Ok(())
    }

    fn stopped(&self) -> bool {
        self.opts.stop.load(Ordering::Relaxed)
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

    /// The file has streams (else it is damaged before any, or empty), and the
    /// selection picked at least one.
    fn check_streams(&mut self) -> Result<(), ReplayError> {
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
        Ok(())
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
            if missing.is_empty() || self.stopped() {
                return Ok(());
            }
            let names = || {
                missing
                    .iter()
                    .map(|s| format!("'{}'", s.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let waited = started.elapsed().as_secs_f64();
            if waited >= timeout {
                return Err(ReplayError::NoConsumer {
                    streams: names(),
                    waited,
                });
            }
            if self.opts.progress && !said {
                said = true;
                eprintln!(
                    "replay: waiting up to {timeout:.0} s for consumers of {}",
                    names()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_start_delay(&self) {
        if self.opts.start_delay > 0.0 {
            let until = Instant::now() + Duration::from_secs_f64(self.opts.start_delay);
            while Instant::now() < until && !self.stopped() {
                thread::sleep(MAX_NAP.min(until.saturating_duration_since(Instant::now())));
            }
        }
    }
}

// Sending: the paced loop over passes.
impl Replayer<'_> {
    /// Sends everything, pass after pass, paced.
    pub(super) fn play(&mut self) -> Result<(), ReplayError> {
        let mut last_progress = Instant::now();
        while !self.stopped() {
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
            if let Some(limit) = self.send_limit(head) {
                self.push_due(limit)?;
            }
        }
        self.linger();
        Ok(())
    }

    /// The latest stamp to send now, given the earliest unsent one. `None` when that
    /// one is not due yet: the thread then slept towards it (at most [`MAX_NAP`]).
    fn send_limit(&self, head: f64) -> Option<f64> {
        let speed = match self.speed {
            Speed::Max => return Some(head + MAX_BATCH_S),
            Speed::Factor(speed) => speed,
        };
        let due = self.due(head - self.first, speed);
        let now = Instant::now();
        if due > now {
            if due - now > MAX_NAP {
                thread::sleep(MAX_NAP);
            } else {
                sleep_until(due, self.opts.spin);
            }
            return None;
        }
        Some(self.first + (now - self.start).as_secs_f64() * speed)
    }

    /// Keeps the outlets open for [`LINGER`] after the last sample, so consumers
    /// receive the tail.
    fn linger(&self) {
        if self.streams.iter().any(|s| s.sent > 0) {
            let until = Instant::now() + LINGER;
            while Instant::now() < until && !self.stopped() {
                thread::sleep(MAX_NAP);
            }
        }
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
            self.period = Some(span + self.tick());
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

    /// One sample interval of the fastest published stream (1 ms if none is regular):
    /// the next pass starts this long after the last sample.
    fn tick(&self) -> f64 {
        let rate = self
            .streams
            .iter()
            .filter(|s| s.outlet.is_some())
            .map(|s| s.srate)
            .fold(0.0, f64::max);
        if rate > 0.0 {
            1.0 / rate
        } else {
            1e-3
        }
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

    /// Pushes every queued sample stamped at or before `limit`, a chunk per stream and
    /// file chunk, streams in the order of their next sample.
    fn push_due(&mut self, limit: f64) -> Result<(), ReplayError> {
        loop {
            // The stream whose next sample is earliest and due.
            let Some((i, _)) = self
                .streams
                .iter()
                .enumerate()
                .filter_map(|(i, s)| Some((i, s.head()?)))
                .filter(|&(_, head)| head <= limit)
                .min_by(|a, b| a.1.total_cmp(&b.1))
            else {
                return Ok(());
            };
            self.push_stream(i, limit)?;
        }
    }

    /// One push of stream `i`'s due samples from its front chunk.
    fn push_stream(&mut self, i: usize, limit: f64) -> Result<(), ReplayError> {
        let (first, t0_lsl) = (self.first, self.t0_lsl);
        let stream = &mut self.streams[i];
        let Some(batch) = stream.due_batch(limit, first, t0_lsl) else {
            return Ok(());
        };
        let before = Instant::now();
        stream.send(&batch)?;
        self.count_push(&batch, before);
        Ok(())
    }

    /// Tallies a push made at `pushed`: the session time sent, and (when paced) its
    /// lateness in the pacing histogram.
    fn count_push(&mut self, batch: &Batch, pushed: Instant) {
        self.last_s = self.last_s.max(batch.last_s);
        self.last_push = Some(Instant::now());
        if let Speed::Factor(speed) = self.speed {
            let due = self.due(batch.head_s, speed);
            let late = pushed.saturating_duration_since(due).as_micros() as u64;
            self.pacing.saturating_record(late.max(1));
        }
    }
}

// Reading: the look-ahead, streams, clock offsets and resets.
impl Replayer<'_> {
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
        let Some(chunk) = self.next_chunk() else {
            return Ok(());
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
            } => self.take_offset(stream, collection_time, value),
            Chunk::Samples(samples) => self.take_samples(samples),
            Chunk::FileHeader { .. } | Chunk::Boundary | Chunk::StreamFooter { .. } => {}
        }
        self.check_waiting();
        Ok(())
    }

    /// The file's next chunk; `None` at its end or at damage (kept in `damage`, with
    /// the samples of a partly read chunk filed), the source then done.
    fn next_chunk(&mut self) -> Option<Chunk> {
        match self.reader.next_chunk() {
            Ok(Some(chunk)) => return Some(chunk),
            Ok(None) => {}
            Err(e) => {
                if let Some(partial) = self.reader.take_partial_samples() {
                    self.take_samples(partial);
                }
                self.damage = Some(e);
            }
        }
        self.finish_source();
        None
    }

    /// A stream's clock offset: applies to its later samples and releases those that
    /// waited for it. After a reset, only an offset measured in the new clock applies.
    fn take_offset(&mut self, stream: StreamId, collection_time: f64, value: f64) {
        if let Some(&i) = self.by_id.get(&stream.0) {
            let s = &mut self.streams[i];
            if s.reset_at
                .is_none_or(|r| collection_time < r - RESET_JUMP_S)
            {
                s.offset = Some(value);
                s.reset_at = None;
                self.release_waiting(i);
            }
        }
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

    /// A stream header: the stream is published if the selection picks it.
    fn add_stream(&mut self, id: StreamId, info: &StreamInfo) -> Result<(), ReplayError> {
        let wanted = &self.opts.streams;
        let selected = wanted.is_empty()
            || wanted
                .iter()
                .any(|w| w == info.name() || *w == id.0.to_string());
        let (outlet, note) = selected
            .then(|| publish(info, id, &self.base_dir, &self.opts.name_suffix))
            .transpose()?
            .unzip();
        self.by_id.insert(id.0, self.streams.len());
        self.streams
            .push(Stream::new(id, info, outlet, note.flatten()));
        Ok(())
    }

    /// Files a published stream's samples, split at every clock reset: the samples
    /// after a reset wait for a new offset.
    fn take_samples(&mut self, chunk: SampleChunk) {
        let Some(&i) = self.by_id.get(&chunk.stream.0) else {
            return;
        };
        if self.streams[i].outlet.is_none() {
            return;
        }
        let mut rest = Some(chunk);
        while let Some(chunk) = rest.take().filter(|c| !c.is_empty()) {
            rest = self.file_until_reset(i, chunk);
        }
    }

    /// Files `chunk`'s samples up to stream `i`'s next clock reset and returns those
    /// from the reset on (`None` if there is none), the stream marked as reset.
    fn file_until_reset(&mut self, i: usize, mut chunk: SampleChunk) -> Option<SampleChunk> {
        let mut prev = self.streams[i].last_raw;
        let reset = chunk.stamps.iter().position(|&t| {
            let back = t < prev - RESET_JUMP_S;
            prev = t;
            back
        });
        let Some(k) = reset else {
            self.file(i, chunk);
            return None;
        };
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
}

// Reporting.
impl Replayer<'_> {
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

    pub(super) fn summary(&self) -> ReplaySummary {
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
    SampleChunk {
        stream: chunk.stream,
        channel_count: chunk.channel_count,
        stamps: chunk.stamps.split_off(at),
        values: chunk.values.split_off(at * chunk.channel_count),
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
