//! `monkeysee dataset`: a training dataset from a recorded XDF session — LabRecorder's
//! or our own (`run --record`, `simulate`).
//!
//! Two passes over the file, neither holding more than a chunk of samples:
//! 1. headers, clock offsets and the marker stream: picks the MUA and marker streams
//!    (the rig's selectors or XPath queries, evaluated as liblsl does, on each stream's
//!    header), fits each stream's clock correction as pyxdf does
//!    (`synchronize_clocks`, clock resets handled), and finds the onsets.
//! 2. the MUA samples, clock-corrected one at a time: every onset's −100…+199 ms epoch
//!    (at the stream's rate) is cut out of a ring of recent samples as soon as its last
//!    sample has been read, and appended to the dataset.
//!
//! The onset row is the first sample stamped at or after the onset (less a tenth of a
//! sample period), the rule the daemon's window stage uses, so a dataset's sample 100
//! is the sample the daemon treats as the onset.
//!
//! Counted, reported, never fatal: onsets whose epoch runs past a gap or either end of
//! the stream, epochs with NaN/Inf samples, ids without an image file (listed),
//! duplicate onsets (a second onset within half a sample of the one before), markers
//! the onset pattern does not match. A damaged file: everything before the damage is
//! kept and the damage reported. Fatal: no (or more than one) MUA stream, no onsets,
//! a channel count or rate that is not the rig's.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use regex::Regex;

use super::writer::{self, DatasetInfo, DatasetWriter, Split, TrialInfo, WrittenDataset};
use crate::config::RigConfig;
use crate::telemetry::{progress_bar, some_of};
use crate::xdf::{
    Chunk, ClockCorrection, ClockOffset, StreamId, StreamInfo, SyncOptions, Values, XdfReader,
};

/// The default onset pattern: the markers `simulate` writes and the daemon reads.
pub const DEFAULT_ONSET_REGEX: &str = r"^\s*stim_on\s+(?P<id>\S+)\s*$";

/// Epoch before the onset, and from it, in milliseconds (TVSD's −100…+199 ms).
const PRE_MS: f64 = 100.0;
const POST_MS: f64 = 200.0;

/// What `monkeysee dataset` was asked for.
#[derive(Debug, Clone)]
pub struct XdfDatasetOptions {
    pub rig: RigConfig,
    pub session: PathBuf,
    /// Folder of the stimuli; ids resolve to files by stem (searched recursively).
    pub images: PathBuf,
    pub out: PathBuf,
    /// XPath predicates on the stream headers (as for `run --mua-query`); default: the
    /// rig's `[streams]` selectors.
    pub mua_query: Option<String>,
    pub marker_query: Option<String>,
    /// Onset markers: a regex with a named group `id`.
    pub onset_regex: Option<String>,
    /// Images shown at least this many times form the test split.
    pub min_repeats: usize,
    pub progress: bool,
}

/// What was cut, what was skipped and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct XdfDatasetSummary {
    pub dataset: WrittenDataset,
    pub mua_stream: String,
    pub marker_stream: String,
    /// Onset markers found (before any skip).
    pub onsets: usize,
    /// Markers the onset pattern did not match (`stim_off`, other events).
    pub other_markers: usize,
    pub duplicate_onsets: usize,
    /// Onsets whose image id names no file in the image folder, and those ids.
    pub missing_image_onsets: usize,
    pub missing_images: Vec<String>,
    /// Image files sharing a stem with an earlier one (ignored).
    pub duplicate_image_files: Vec<PathBuf>,
    /// Epochs across a gap in the stream's time stamps.
    pub skipped_gap: usize,
    /// Epochs that start before the first sample or end after the last.
    pub skipped_edge: usize,
    /// Epochs with NaN/Inf samples.
    pub skipped_nan: usize,
    /// Where the file was damaged, if it was; everything before it was used.
    pub damage: Option<String>,
    /// Clock-offset runs (clock resets + 1) of the MUA and marker streams.
    pub clock_segments: (usize, usize),
    /// Seconds of MUA read, and how long it took.
    pub recorded_s: f64,
    pub wall_s: f64,
}

impl XdfDatasetSummary {
    /// Recorded seconds per wall-clock second.
    pub fn throughput(&self) -> f64 {
        self.recorded_s / self.wall_s.max(1e-9)
    }
}

impl std::fmt::Display for XdfDatasetSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.dataset;
        writeln!(
            f,
            "{}: {} trials ({} train, {} test) of {} images ({} repeated >= min-repeats), from {} onsets",
            d.dir.display(),
            d.trials,
            d.train_trials,
            d.test_trials,
            d.images,
            d.test_images,
            self.onsets
        )?;
        writeln!(
            f,
            "streams: MUA {:?}, markers {:?}; clock-offset runs {} / {}",
            self.mua_stream, self.marker_stream, self.clock_segments.0, self.clock_segments.1
        )?;
        writeln!(
            f,
            "skipped: {} across a gap, {} past the stream's start or end, {} with NaN samples, {} duplicate onsets, {} with no image file; {} other markers",
            self.skipped_gap,
            self.skipped_edge,
            self.skipped_nan,
            self.duplicate_onsets,
            self.missing_image_onsets,
            self.other_markers
        )?;
        if !self.missing_images.is_empty() {
            writeln!(
                f,
                "ids with no image file ({}): {}",
                self.missing_images.len(),
                some_of(&self.missing_images, 20)
            )?;
        }
        if !self.duplicate_image_files.is_empty() {
            writeln!(
                f,
                "{} image files share a stem with another and were ignored, e.g. {}",
                self.duplicate_image_files.len(),
                self.duplicate_image_files[0].display()
            )?;
        }
        if let Some(d) = &self.damage {
            writeln!(f, "the file is damaged: {d}; everything before it was used")?;
        }
        write!(
            f,
            "{:.1} s of MUA in {:.2} s ({:.0} recorded s per wall s)",
            self.recorded_s,
            self.wall_s,
            self.throughput()
        )
    }
}

/// True when the stream header matches an LSL XPath predicate, evaluated as liblsl
/// does (`/info[PREDICATE]` on the header XML).
pub fn header_matches(info: &StreamInfo, predicate: &str) -> anyhow::Result<bool> {
    let package = sxd_document::parser::parse(info.xml())
        .map_err(|e| anyhow::anyhow!("stream {:?}: its header is not XML: {e:?}", info.name()))?;
    let doc = package.as_document();
    let value = sxd_xpath::evaluate_xpath(&doc, &format!("/info[{predicate}]"))
        .map_err(|e| anyhow::anyhow!("the stream query {predicate:?} is not valid XPath: {e}"))?;
    Ok(match value {
        sxd_xpath::Value::Nodeset(nodes) => nodes.size() > 0,
        sxd_xpath::Value::Boolean(b) => b,
        _ => false,
    })
}

/// Pass 1's findings.
#[derive(Default)]
struct Scan {
    streams: Vec<(StreamId, StreamInfo)>,
    offsets: HashMap<StreamId, Vec<ClockOffset>>,
    /// Marker texts and raw stamps per stream (strings streams only).
    markers: HashMap<StreamId, Vec<(f64, String)>>,
    damage: Option<String>,
}

fn scan(path: &Path, bar: &indicatif::ProgressBar) -> anyhow::Result<Scan> {
    let mut reader = XdfReader::open(path)
        .with_context(|| format!("{} is not a readable XDF file", path.display()))?;
    let mut s = Scan::default();
    loop {
        match reader.next_chunk() {
            Ok(None) => break,
            Ok(Some(Chunk::StreamHeader { stream, info })) => s.streams.push((stream, info)),
            Ok(Some(Chunk::ClockOffset {
                stream,
                collection_time,
                value,
            })) => s.offsets.entry(stream).or_default().push(ClockOffset {
                collection_time,
                value,
            }),
            Ok(Some(Chunk::Samples(chunk))) => {
                if let Values::String(texts) = &chunk.values {
                    let m = s.markers.entry(chunk.stream).or_default();
                    let ch = chunk.channel_count.max(1);
                    for (k, &t) in chunk.stamps.iter().enumerate() {
                        // The first channel is the marker (a 0-channel stream has none).
                        if let Some(text) = texts.get(k * ch) {
                            m.push((t, text.clone()));
                        }
                    }
                }
            }
            Ok(Some(_)) => {}
            Err(e) => {
                s.damage = Some(e.to_string());
                break;
            }
        }
        bar.set_position(reader.position());
    }
    Ok(s)
}

/// The one stream of the scan matching `predicate`.
fn pick<'a>(
    scan: &'a Scan,
    predicate: &str,
    what: &str,
    flag: &str,
) -> anyhow::Result<&'a (StreamId, StreamInfo)> {
    let mut found = Vec::new();
    for s in &scan.streams {
        if header_matches(&s.1, predicate)? {
            found.push(s);
        }
    }
    let list = || {
        scan.streams
            .iter()
            .map(|(id, i)| {
                format!(
                    "{id}: name={:?} type={:?} source_id={:?} ({} ch, {} Hz)",
                    i.name(),
                    i.content_type(),
                    i.source_id(),
                    i.channel_count(),
                    i.nominal_srate()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    match found.len() {
        1 => Ok(found[0]),
        0 => bail!(
            "no {what} stream in the file matches {predicate}; the file has: {}. Give {flag} or fix the rig's [streams] selector",
            list()
        ),
        n => bail!(
            "{n} streams match {predicate} for the {what}: {}; make it unique with {flag} (e.g. \"name='...' and source_id='...'\")",
            found
                .iter()
                .map(|(id, i)| format!("{id}: {:?}", i.name()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// An onset waiting for its epoch.
#[derive(Debug, Clone, Copy)]
struct Pending {
    time: f64,
    image: usize,
}

/// The last `cap` samples, their stamps and running index.
struct Ring {
    channels: usize,
    cap: usize,
    values: Vec<f32>,
    stamps: Vec<f64>,
    /// Samples pushed so far.
    count: u64,
}

impl Ring {
    fn push(&mut self, row: &[f32], stamp: f64) {
        let i = (self.count % self.cap as u64) as usize;
        self.values[i * self.channels..(i + 1) * self.channels].copy_from_slice(row);
        self.stamps[i] = stamp;
        self.count += 1;
    }

    fn stamp(&self, n: u64) -> f64 {
        self.stamps[(n % self.cap as u64) as usize]
    }

    fn row(&self, n: u64) -> &[f32] {
        let i = (n % self.cap as u64) as usize;
        &self.values[i * self.channels..(i + 1) * self.channels]
    }
}

/// Converts one chunk's values to f32 into `out`.
fn to_f32(values: &Values, out: &mut Vec<f32>) {
    out.clear();
    match values {
        Values::Float32(v) => out.extend_from_slice(v),
        Values::Double64(v) => out.extend(v.iter().map(|&x| x as f32)),
        Values::Int8(v) => out.extend(v.iter().map(|&x| x as f32)),
        Values::Int16(v) => out.extend(v.iter().map(|&x| x as f32)),
        Values::Int32(v) => out.extend(v.iter().map(|&x| x as f32)),
        Values::Int64(v) => out.extend(v.iter().map(|&x| x as f32)),
        Values::String(_) => {}
    }
}

/// Builds the dataset. See the module docs.
pub fn dataset_from_xdf(opts: &XdfDatasetOptions) -> anyhow::Result<XdfDatasetSummary> {
    let clock_start = Instant::now();
    let rig = &opts.rig;
    let (pattern, regex) = onset_pattern(opts)?;
    writer::check_out(&opts.out)?;
    let file_len = std::fs::metadata(&opts.session)
        .with_context(|| format!("reading {}", opts.session.display()))?
        .len();
    let bar = progress_bar(opts.progress, file_len, "bytes");
    bar.set_message("pass 1/2: markers and clock offsets");

    // Pass 1.
    let scan = scan(&opts.session, &bar)?;
    let streams = Streams::pick(&scan, opts)?;
    let sync = SyncOptions::default();
    let correction = |id: StreamId| {
        scan.offsets
            .get(&id)
            .and_then(|o| ClockCorrection::new(o, &sync))
    };
    let mut marker_clock = correction(streams.marker_id);
    let mua_clock = correction(streams.mua_id);
    let clock_segments = (
        mua_clock.as_ref().map_or(0, ClockCorrection::segment_count),
        marker_clock
            .as_ref()
            .map_or(0, ClockCorrection::segment_count),
    );
    let onsets = Onsets::find(opts, &scan, &streams, &regex, marker_clock.as_mut())?;

    // Pass 2.
    let mut epochs = Epochs::new(streams.srate, rig.channel_count, mua_clock, &onsets.pending);
    let mut out = DatasetWriter::create(
        &opts.out,
        rig.channel_count,
        epochs.trial_len,
        epochs.pre as usize,
    )?;
    bar.set_length(file_len);
    bar.set_position(0);
    bar.set_message("pass 2/2: epochs");
    let damage = epochs.cut(&opts.session, streams.mua_id, &mut out, &bar)?;
    // Pass 1 met the same damage, if any; keep its message.
    let damage = scan.damage.clone().or(damage);
    if out.trials().is_empty() {
        bail!(
            "none of the {} onsets gave an epoch: {} across a gap, {} past the stream's start or end, {} with NaN samples, {} with no image file{}",
            onsets.found,
            epochs.skipped_gap,
            epochs.skipped_edge,
            epochs.skipped_nan,
            onsets.missing_image_onsets,
            damage.as_ref().map_or(String::new(), |d| format!("; the file is damaged: {d}"))
        );
    }
    bar.finish_and_clear();

    onsets
        .images
        .write(&opts.out, rig.image_size, opts.progress)?;
    let source = serde_json::json!({
        "kind": "xdf",
        "session": opts.session,
        "mua_stream": streams.mua.name(),
        "marker_stream": streams.marker.name(),
        "onset_regex": pattern,
        "min_repeats": opts.min_repeats,
        "clock_corrected": true,
    });
    let dataset = out.finish(DatasetInfo {
        rig,
        image_ids: &onsets.images.ids,
        split: Split::MinRepeats(opts.min_repeats),
        seed: None,
        sampling_rate_hz: streams.srate,
        source,
    })?;
    Ok(XdfDatasetSummary {
        dataset,
        mua_stream: streams.mua.name().to_string(),
        marker_stream: streams.marker.name().to_string(),
        onsets: onsets.found,
        other_markers: onsets.other_markers,
        duplicate_onsets: onsets.duplicate_onsets,
        missing_image_onsets: onsets.missing_image_onsets,
        missing_images: onsets.images.missing,
        duplicate_image_files: onsets.duplicate_image_files,
        skipped_gap: epochs.skipped_gap,
        skipped_edge: epochs.skipped_edge,
        skipped_nan: epochs.skipped_nan,
        damage,
        clock_segments,
        recorded_s: epochs.recorded_s(),
        wall_s: clock_start.elapsed().as_secs_f64(),
    })
}

/// The onset pattern (`--onset-regex` or the default) and its regex, which must name a
/// group `id`; also checks `--min-repeats`.
fn onset_pattern(opts: &XdfDatasetOptions) -> anyhow::Result<(&str, Regex)> {
    let pattern = opts.onset_regex.as_deref().unwrap_or(DEFAULT_ONSET_REGEX);
    let regex = Regex::new(pattern).with_context(|| format!("--onset-regex {pattern:?}"))?;
    if !regex.capture_names().any(|n| n == Some("id")) {
        bail!("--onset-regex {pattern:?} has no group named id; write the image id's part as (?P<id>...)");
    }
    if opts.min_repeats == 0 {
        bail!("--min-repeats must be at least 1");
    }
    Ok((pattern, regex))
}

/// The MUA and marker streams picked, the MUA stream checked against the rig.
struct Streams<'a> {
    mua_id: StreamId,
    mua: &'a StreamInfo,
    marker_id: StreamId,
    marker: &'a StreamInfo,
    /// The MUA stream's nominal rate, the rig's.
    srate: f64,
}

impl<'a> Streams<'a> {
    /// Picks the streams by the queries (default: the rig's selectors); the MUA stream
    /// must have the rig's channel count and rate and hold numbers.
    fn pick(scan: &'a Scan, opts: &XdfDatasetOptions) -> anyhow::Result<Streams<'a>> {
        let rig = &opts.rig;
        let mua_pred = opts
            .mua_query
            .clone()
            .unwrap_or_else(|| rig.mua.predicate());
        let marker_pred = opts
            .marker_query
            .clone()
            .unwrap_or_else(|| rig.markers.predicate());
        let (mua_id, mua) = pick(scan, &mua_pred, "MUA", "--mua-query")?;
        let (marker_id, marker) = pick(scan, &marker_pred, "marker", "--marker-query")?;
        if mua.channel_count() != rig.channel_count {
            bail!(
                "the MUA stream {:?} has {} channels, the rig {} {} (rig.channels); record with the rig the session was recorded with",
                mua.name(),
                mua.channel_count(),
                rig.path.display(),
                rig.channel_count
            );
        }
        if mua.channel_format().value_size().is_none() {
            bail!(
                "the stream picked as MUA, {:?}, holds {} values, not numbers; pick the MUA stream with --mua-query",
                mua.name(),
                mua.channel_format().as_str()
            );
        }
        let srate = mua.nominal_srate();
        if (srate - rig.sampling_rate_hz).abs() > 1e-6 {
            bail!(
                "the MUA stream {:?} is sampled at {srate} Hz, the rig {} at {} Hz (rig.sampling_rate_hz)",
                mua.name(),
                rig.path.display(),
                rig.sampling_rate_hz
            );
        }
        Ok(Streams {
            mua_id: *mua_id,
            mua,
            marker_id: *marker_id,
            marker,
            srate,
        })
    }
}

/// The onsets the marker stream names, with their images, and what was left out.
#[derive(Default)]
struct Onsets {
    /// Onsets with an image file, in time order, duplicates removed.
    pending: Vec<Pending>,
    /// The images shown, in order of first onset, their files, and the ids without one.
    images: writer::Images,
    /// Image files sharing a stem with an earlier one (ignored).
    duplicate_image_files: Vec<PathBuf>,
    /// Markers the onset pattern matched.
    found: usize,
    other_markers: usize,
    missing_image_onsets: usize,
    duplicate_onsets: usize,
}

impl Onsets {
    /// The marker stream's onsets, clock-corrected, resolved to image files by stem;
    /// an error when no marker matches or no onset has an image.
    fn find(
        opts: &XdfDatasetOptions,
        scan: &Scan,
        streams: &Streams<'_>,
        regex: &Regex,
        mut marker_clock: Option<&mut ClockCorrection>,
    ) -> anyhow::Result<Onsets> {
        let (by_stem, duplicate_image_files) = writer::index_images(&opts.images)?;
        let mut o = Onsets {
            duplicate_image_files,
            ..Onsets::default()
        };
        let markers = scan.markers.get(&streams.marker_id);
        for (raw, text) in markers.map(Vec::as_slice).unwrap_or(&[]) {
            let t = marker_clock.as_mut().map_or(*raw, |c| c.correct(*raw));
            let Some(id) = regex.captures(text).and_then(|c| c.name("id")) else {
                o.other_markers += 1;
                continue;
            };
            o.found += 1;
            let id = id.as_str();
            let file = || Some((id.to_string(), by_stem.get(id)?.clone()));
            let Some(image) = o.images.row(id, file) else {
                o.missing_image_onsets += 1;
                continue;
            };
            o.pending.push(Pending { time: t, image });
        }
        o.check_found(opts, streams, regex)?;
        o.pending.sort_by(|a, b| a.time.total_cmp(&b.time));
        let period = 1.0 / streams.srate;
        let mut duplicates = 0;
        o.pending.dedup_by(|b, a| {
            let dup = b.time - a.time < period / 2.0;
            duplicates += dup as usize;
            dup
        });
        o.duplicate_onsets = duplicates;
        Ok(o)
    }

    /// Errors when no marker matched the pattern, or no onset's id names an image file.
    fn check_found(
        &self,
        opts: &XdfDatasetOptions,
        streams: &Streams<'_>,
        regex: &Regex,
    ) -> anyhow::Result<()> {
        if self.found == 0 {
            bail!(
                "no onset markers in stream {:?}: none of its {} markers matches {:?}{}",
                streams.marker.name(),
                self.other_markers,
                regex.as_str(),
                if opts.onset_regex.is_none() {
                    "; give --onset-regex for your stimulus program's markers, e.g. '^img (?P<id>\\S+) on$'"
                } else {
                    ""
                }
            );
        }
        if self.pending.is_empty() {
            bail!(
                "none of the {} onsets' image ids names a file in {} (by file stem), e.g. {:?}",
                self.found,
                opts.images.display(),
                self.images
                    .missing
                    .first()
                    .map(String::as_str)
                    .unwrap_or("")
            );
        }
        Ok(())
    }
}

/// Pass 2: cuts every onset's epoch out of the MUA samples as they are read, and counts
/// the epochs it skips.
struct Epochs {
    /// Samples before the onset sample, and from it to the epoch's end.
    pre: u64,
    post: u64,
    trial_len: usize,
    channels: usize,
    period: f64,
    clock: Option<ClockCorrection>,
    ring: Ring,
    /// Onsets whose onset sample has not been read yet, in time order.
    waiting: VecDeque<Pending>,
    /// Onsets whose onset sample (the index beside each) was read, waiting for their
    /// epoch's last sample.
    started: VecDeque<(Pending, u64)>,
    /// One epoch, `[time][channel]`.
    epoch: Vec<f32>,
    skipped_gap: usize,
    skipped_edge: usize,
    skipped_nan: usize,
    first_stamp: Option<f64>,
    last_stamp: f64,
}

impl Epochs {
    fn new(
        srate: f64,
        channels: usize,
        clock: Option<ClockCorrection>,
        onsets: &[Pending],
    ) -> Epochs {
        let pre = (PRE_MS / 1000.0 * srate).round() as u64;
        let post = (POST_MS / 1000.0 * srate).round() as u64;
        let trial_len = (pre + post) as usize;
        Epochs {
            pre,
            post,
            trial_len,
            channels,
            period: 1.0 / srate,
            clock,
            ring: Ring {
                channels,
                cap: trial_len + 1,
                values: vec![0.0; (trial_len + 1) * channels],
                stamps: vec![0.0; trial_len + 1],
                count: 0,
            },
            waiting: onsets.iter().copied().collect(),
            started: VecDeque::new(),
            epoch: vec![0.0f32; trial_len * channels],
            skipped_gap: 0,
            skipped_edge: 0,
            skipped_nan: 0,
            first_stamp: None,
            last_stamp: 0.0,
        }
    }

    /// Reads the MUA stream's samples from `session` and appends every complete epoch to
    /// `out`. Returns the damage met, if any: the samples before it were used.
    fn cut(
        &mut self,
        session: &Path,
        mua: StreamId,
        out: &mut DatasetWriter,
        bar: &indicatif::ProgressBar,
    ) -> anyhow::Result<Option<String>> {
        let mut reader = XdfReader::open(session)?;
        let mut damage = None;
        let mut row_f32 = Vec::new();
        loop {
            let chunk = match reader.next_chunk() {
                Ok(None) => break,
                Ok(Some(Chunk::Samples(c))) if c.stream == mua => c,
                Ok(Some(_)) => continue,
                Err(e) => {
                    // Pass 1 met it too (the same bytes); keep what came before.
                    damage.get_or_insert_with(|| e.to_string());
                    match reader.take_partial_samples() {
                        Some(c) if c.stream == mua => c,
                        _ => break,
                    }
                }
            };
            to_f32(&chunk.values, &mut row_f32);
            for (k, &raw) in chunk.stamps.iter().enumerate() {
                let t = self.clock.as_mut().map_or(raw, |c| c.correct(raw));
                let row = &row_f32[k * self.channels..(k + 1) * self.channels];
                self.push(row, t, out)?;
            }
            bar.set_position(reader.position());
        }
        // Onsets whose epoch the stream never completed.
        self.skipped_edge += self.waiting.len() + self.started.len();
        self.waiting.clear();
        self.started.clear();
        Ok(damage)
    }

    /// One sample at (corrected) time `t`: starts the onsets it is the onset sample of,
    /// and finishes the epochs it completes.
    fn push(&mut self, row: &[f32], t: f64, out: &mut DatasetWriter) -> anyhow::Result<()> {
        self.first_stamp.get_or_insert(t);
        self.last_stamp = t;
        self.ring.push(row, t);
        let n = self.ring.count - 1;
        let tol = self.period * 0.1;
        while self.waiting.front().is_some_and(|p| p.time - tol <= t) {
            if let Some(p) = self.waiting.pop_front() {
                self.started.push_back((p, n));
            }
        }
        while self
            .started
            .front()
            .is_some_and(|&(_, row)| row + self.post <= n + 1)
        {
            if let Some((p, row)) = self.started.pop_front() {
                self.finish_epoch(p, row, out)?;
            }
        }
        Ok(())
    }

    /// The epoch of onset `p`, whose onset sample is `row` and whose last sample was just
    /// read: appended to `out`, or counted as skipped (past the start, across a gap,
    /// NaN/Inf).
    fn finish_epoch(
        &mut self,
        p: Pending,
        row: u64,
        out: &mut DatasetWriter,
    ) -> anyhow::Result<()> {
        if row < self.pre {
            self.skipped_edge += 1;
            return Ok(());
        }
        let first = row - self.pre;
        let ring = &self.ring;
        let period = self.period;
        // The epoch's samples must be evenly spaced (no gap, no reset), and the onset
        // sample must be the one right after the onset, not after a gap.
        let gap = (first + 1..first + self.trial_len as u64).any(|i| {
            let dt = ring.stamp(i) - ring.stamp(i - 1);
            !(dt > 0.0 && dt <= 1.5 * period)
        }) || ring.stamp(row) - p.time > period * 1.5;
        if gap {
            self.skipped_gap += 1;
            return Ok(());
        }
        for (i, dst) in self.epoch.chunks_exact_mut(self.channels).enumerate() {
            dst.copy_from_slice(ring.row(first + i as u64));
        }
        if self.epoch.iter().any(|v| !v.is_finite()) {
            self.skipped_nan += 1;
            return Ok(());
        }
        out.push(
            &self.epoch,
            TrialInfo {
                image: p.image,
                onset: p.time,
                session: 0,
                test: None,
            },
        )?;
        Ok(())
    }

    /// Seconds of MUA read (first to last stamp, plus one sample).
    fn recorded_s(&self) -> f64 {
        self.first_stamp
            .map_or(0.0, |f| self.last_stamp - f + self.period)
    }
}
