//! Recording: the daemon writes the streams it consumes to an XDF file as it runs
//! (`monkeysee run --record FILE.xdf`).
//!
//! The ingest thread copies every MUA chunk into a second SPSC ring (its drops are
//! counted as `record_overruns`; the hot loop never waits, allocates or locks for
//! it), and the marker thread forwards every marker, unknown ones too, over a bounded
//! queue (`record_marker_drops`). The `record` thread drains both every
//! [`DRAIN_EVERY`] and writes them with [`XdfWriter`], which flushes each chunk as it is
//! written: a file is readable up to its last chunk even if the process is killed (it
//! then lacks only the footers). On stop the recorder drains what is left and writes
//! the footers.
//!
//! With the frames outlet on, the publish thread also forwards every `monkeysee-frames`,
//! `monkeysee-frame-info` and `monkeysee-events` sample it publishes (bounded queues; a
//! full one counts `record_output_drops`), recorded under the outlets' own headers as
//! streams 3, 4 and 5.
//!
//! Headers are each stream's full LSL header (`lsl_get_fullinfo`), so channel labels
//! and `<desc>` survive. Time stamps are the clock-corrected LSL stamps the daemon
//! used (liblsl's `proc_clocksync`: this machine's `local_clock()`), not the
//! sender's raw stamps, so the file holds no ClockOffset chunks; an XML comment in
//! each header says so. Values are the `f32` the daemon decoded from (a `double64`
//! stream is written as the header says, from those `f32` values).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::ingest::{RawMarker, SampleConsumer};
use crate::lsl::StreamDescription;
use crate::telemetry::Counters;
use crate::xdf::{ChannelFormat, StreamId, StreamInfo, StreamSpec, WriteError, XdfWriter};

/// How often the recorder drains its queues.
pub const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// Most samples written in one Samples chunk.
const MAX_CHUNK: usize = 1000;

/// Stream ids in a recording.
pub const MUA_STREAM: StreamId = StreamId(1);
pub const MARKER_STREAM: StreamId = StreamId(2);
/// The daemon's own outlets, when recorded.
pub const FRAMES_STREAM: StreamId = StreamId(3);
pub const FRAME_INFO_STREAM: StreamId = StreamId(4);
pub const EVENTS_STREAM: StreamId = StreamId(5);

/// One sample of an int16 stream the daemon publishes (the frames), for the recorder.
pub struct NumericSample {
    pub values: Vec<i16>,
    pub lsl_time: f64,
}

/// Where a stream the daemon publishes reaches the recorder.
enum OutputQueue {
    Strings(Receiver<RawMarker>),
    Int16(Receiver<NumericSample>),
}

/// The comment put before `<info>` in each recorded header.
pub const STAMP_NOTE: &str = "<!-- monkeysee recording: time stamps are clock-corrected to the recording machine's LSL clock (liblsl proc_clocksync); no ClockOffset chunks follow -->\n";

/// What was recorded, for the run summary.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RecordingSummary {
    pub path: PathBuf,
    pub samples: u64,
    pub markers: u64,
    /// The write error that ended the recording early, if any.
    pub error: Option<String>,
}

struct Track {
    id: StreamId,
    channels: usize,
    format: ChannelFormat,
}

/// An XDF file being recorded.
pub struct Recorder {
    path: PathBuf,
    writer: XdfWriter<BufWriter<File>>,
    mua: Option<Track>,
    markers: Option<Track>,
    /// Streams the daemon publishes itself (frames, frame info, events), with their queues.
    outputs: Vec<(Track, OutputQueue)>,
    /// An int16 output's waiting values.
    short: Vec<i16>,
    values: Vec<f32>,
    wide: Vec<f64>,
    stamps: Vec<f64>,
    strings: StringBatch,
    samples: u64,
    marker_count: u64,
}

impl Recorder {
    /// Creates (or truncates) the file and writes its file header.
    pub fn create(path: &Path) -> Result<Recorder, WriteError> {
        Ok(Recorder {
            path: path.to_path_buf(),
            writer: XdfWriter::create(path)?,
            mua: None,
            markers: None,
            outputs: Vec::new(),
            short: Vec::new(),
            values: Vec::new(),
            wide: Vec::new(),
            stamps: Vec::new(),
            strings: StringBatch::default(),
            samples: 0,
            marker_count: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds the MUA stream's header (float32 or double64).
    pub fn add_mua(&mut self, desc: &StreamDescription) -> Result<(), WriteError> {
        let info = header(desc, ChannelFormat::Float32, |f| {
            matches!(f, ChannelFormat::Float32 | ChannelFormat::Double64)
        });
        self.mua = Some(self.add(MUA_STREAM, info)?);
        Ok(())
    }

    /// Adds the marker stream's header (string).
    pub fn add_markers(&mut self, desc: &StreamDescription) -> Result<(), WriteError> {
        let info = header(desc, ChannelFormat::String, |f| f == ChannelFormat::String);
        self.markers = Some(self.add(MARKER_STREAM, info)?);
        Ok(())
    }

    /// Adds a string stream the daemon publishes (its header as published), whose
    /// samples arrive on `rx`.
    pub fn add_output(
        &mut self,
        id: StreamId,
        info: StreamInfo,
        rx: Receiver<RawMarker>,
    ) -> Result<(), WriteError> {
        let track = self.add(id, info)?;
        self.outputs.push((track, OutputQueue::Strings(rx)));
        Ok(())
    }

    /// Adds an int16 stream the daemon publishes, whose samples arrive on `rx`.
    pub fn add_numeric_output(
        &mut self,
        id: StreamId,
        info: StreamInfo,
        rx: Receiver<NumericSample>,
    ) -> Result<(), WriteError> {
        let track = self.add(id, info)?;
        self.outputs.push((track, OutputQueue::Int16(rx)));
        Ok(())
    }

    fn add(&mut self, id: StreamId, info: StreamInfo) -> Result<Track, WriteError> {
        let track = Track {
            id,
            channels: info.channel_count(),
            format: info.channel_format(),
        };
        self.writer.add_stream(id, info)?;
        Ok(track)
    }

    /// Drains every `DRAIN_EVERY` until `stop`, then once more, and writes the footers.
    /// Set `stop` only once the producers (ingest and marker threads) have ended, so
    /// the last drain gets everything they sent.
    pub fn run(
        mut self,
        samples: &mut SampleConsumer,
        markers: Option<&Receiver<RawMarker>>,
        stop: &AtomicBool,
        counters: &Counters,
    ) -> RecordingSummary {
        let mut error = None;
        loop {
            let last = stop.load(Ordering::Acquire);
            if let Err(e) = self.drain(samples, markers, counters) {
                error = Some(e);
                break;
            }
            if last {
                break;
            }
            std::thread::sleep(DRAIN_EVERY);
        }
        if error.is_none() {
            error = self.writer.finish().err();
        }
        RecordingSummary {
            path: self.path,
            samples: self.samples,
            markers: self.marker_count,
            error: error.map(|e| e.to_string()),
        }
    }

    /// Writes everything waiting in the ring and the marker queue.
    pub fn drain(
        &mut self,
        samples: &mut SampleConsumer,
        markers: Option<&Receiver<RawMarker>>,
        counters: &Counters,
    ) -> Result<(), WriteError> {
        if let Some(track) = &self.mua {
            let ch = samples.channels();
            self.values.resize(MAX_CHUNK * ch, 0.0);
            loop {
                self.stamps.clear();
                while self.stamps.len() < MAX_CHUNK {
                    let k = self.stamps.len();
                    match samples.pop(&mut self.values[k * ch..(k + 1) * ch]) {
                        Some(meta) => self.stamps.push(meta.lsl_time),
                        None => break,
                    }
                }
                let n = self.stamps.len();
                if n == 0 {
                    break;
                }
                let values = &self.values[..n * ch];
                if track.format == ChannelFormat::Double64 {
                    self.wide.clear();
                    self.wide.extend(values.iter().map(|&v| f64::from(v)));
                    self.writer
                        .write_samples_f64(track.id, &self.wide, &self.stamps)?;
                } else {
                    self.writer
                        .write_samples_f32(track.id, values, &self.stamps)?;
                }
                self.samples += n as u64;
                Counters::add(&counters.recorded_samples, n as u64);
            }
        }
        if let (Some(track), Some(rx)) = (&self.markers, markers) {
            let n = self.strings.write(&mut self.writer, track, rx)?;
            self.marker_count += n as u64;
            Counters::add(&counters.recorded_markers, n as u64);
        }
        for (track, queue) in &self.outputs {
            match queue {
                OutputQueue::Strings(rx) => {
                    self.strings.write(&mut self.writer, track, rx)?;
                }
                OutputQueue::Int16(rx) => {
                    self.short.clear();
                    self.stamps.clear();
                    while let Ok(mut s) = rx.try_recv() {
                        s.values.resize(track.channels, 0);
                        self.short.append(&mut s.values);
                        self.stamps.push(s.lsl_time);
                    }
                    if !self.stamps.is_empty() {
                        self.writer
                            .write_samples_i16(track.id, &self.short, &self.stamps)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A string stream's waiting samples, gathered into one Samples chunk.
#[derive(Default)]
struct StringBatch {
    values: Vec<String>,
    stamps: Vec<f64>,
}

impl StringBatch {
    /// Writes everything waiting on `rx` to `track` as one chunk; returns how many
    /// samples.
    fn write(
        &mut self,
        writer: &mut XdfWriter<BufWriter<File>>,
        track: &Track,
        rx: &Receiver<RawMarker>,
    ) -> Result<usize, WriteError> {
        self.values.clear();
        self.stamps.clear();
        while let Ok(mut m) = rx.try_recv() {
            m.values.resize(track.channels, String::new());
            self.values.append(&mut m.values);
            self.stamps.push(m.lsl_time);
        }
        if !self.stamps.is_empty() {
            writer.write_samples_str(track.id, &self.values, &self.stamps)?;
        }
        Ok(self.stamps.len())
    }
}

/// The header to record for a stream: its full LSL header (with [`STAMP_NOTE`]) when
/// liblsl delivered one in a format the recorder writes, else one built from the
/// stream's name, type, channels and rate.
fn header(
    desc: &StreamDescription,
    fallback: ChannelFormat,
    writable: impl Fn(ChannelFormat) -> bool,
) -> StreamInfo {
    let full = desc.full_xml.as_deref().and_then(|xml| {
        let noted = match xml.find("<info") {
            Some(at) => format!("{}{STAMP_NOTE}{}", &xml[..at], &xml[at..]),
            None => xml.to_string(),
        };
        StreamInfo::from_xml(&noted).ok()
    });
    match full {
        Some(info) if writable(info.channel_format()) && info.channel_count() > 0 => info,
        _ => {
            let mut spec = StreamSpec::new(
                &desc.name,
                &desc.stream_type,
                desc.channels.max(1),
                desc.nominal_rate,
                fallback,
            );
            spec.source_id = desc.source_id.clone();
            spec.into()
        }
    }
}
