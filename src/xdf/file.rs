//! Whole-file reading: every stream collected, clock offsets applied as pyxdf does.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use super::clock::{self, ClockOffset, DejitterOptions, SampleRange, SyncOptions};
use super::error::{PartialRead, XdfError};
use super::header::{Element, StreamFooter, StreamInfo};
use super::reader::{Chunk, SampleChunk, XdfReader};
use super::{StreamId, Values};

/// How [`read_file_with`] post-processes time stamps. `Default` is pyxdf's `load_xdf`
/// with `synchronize_clocks=True, handle_clock_resets=True, dejitter_timestamps=False`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReadOptions {
    /// Apply clock offsets (`synchronize_clocks`); when false, `time_stamps` are the
    /// raw stamps.
    pub synchronize_clocks: bool,
    /// Clock reset detection and fitting.
    pub sync: SyncOptions,
    /// Replace stamps by a line per gap-free segment (`dejitter_timestamps=True`).
    pub dejitter: Option<DejitterOptions>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            synchronize_clocks: true,
            sync: SyncOptions::default(),
            dejitter: None,
        }
    }
}

/// One stream of a file read whole.
#[derive(Clone, Debug, PartialEq)]
pub struct XdfStream {
    pub id: StreamId,
    pub info: StreamInfo,
    /// One stamp per sample: the raw stamps with clock offsets applied (and dejittered,
    /// if asked); the same as `raw_time_stamps` when the stream has no clock offsets.
    pub time_stamps: Vec<f64>,
    /// The stamps as in the file, omitted ones filled in.
    pub raw_time_stamps: Vec<f64>,
    /// Values, row-major: `time_stamps.len() × info.channel_count()`.
    pub values: Values,
    /// The stream's ClockOffset chunks, in file order.
    pub clock_offsets: Vec<ClockOffset>,
    /// Samples corrected by each run of clock offsets (pyxdf's `clock_segments`).
    pub clock_segments: Vec<SampleRange>,
    /// Gap-free runs of samples (pyxdf's `segments`; one run unless dejittered).
    pub segments: Vec<SampleRange>,
    /// Measured sampling rate as pyxdf reports it (0 for irregular streams).
    pub effective_srate: f64,
    pub footer: Option<StreamFooter>,
    /// pyxdf's pylsl#67 fix fired: the footer counted fewer samples than the file
    /// holds and the last clock offset was an outlier, so both were dropped.
    pub dropped_corrupt_tail: bool,
}

impl XdfStream {
    fn new(id: StreamId, info: StreamInfo) -> XdfStream {
        XdfStream {
            id,
            values: Values::empty(info.channel_format()),
            info,
            time_stamps: Vec::new(),
            raw_time_stamps: Vec::new(),
            clock_offsets: Vec::new(),
            clock_segments: Vec::new(),
            segments: Vec::new(),
            effective_srate: 0.0,
            footer: None,
            dropped_corrupt_tail: false,
        }
    }

    /// Number of samples.
    pub fn sample_count(&self) -> usize {
        self.raw_time_stamps.len()
    }

    fn push(&mut self, mut chunk: SampleChunk) {
        self.raw_time_stamps.append(&mut chunk.stamps);
        self.values.append(&mut chunk.values);
    }
}

/// A whole XDF file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct XdfFile {
    /// The FileHeader chunk's XML.
    pub header_xml: Option<String>,
    /// Streams in the order of their StreamHeader chunks.
    pub streams: Vec<XdfStream>,
    /// Chunks with tags XDF 1.0 does not define, skipped.
    pub unknown_chunks: u64,
    /// ClockOffset and StreamFooter chunks of streams without a header, skipped.
    pub orphan_chunks: u64,
    /// Boundary chunks seen.
    pub boundary_chunks: u64,
    /// String values that were not valid UTF-8, decoded lossily (as pyxdf does).
    pub lossy_strings: u64,
}

impl XdfFile {
    /// The stream with this id.
    pub fn stream(&self, id: StreamId) -> Option<&XdfStream> {
        self.streams.iter().find(|s| s.id == id)
    }

    /// `<info><version>` of the file header (`1.0` for XDF 1.0).
    pub fn version(&self) -> Option<String> {
        let root = Element::parse(self.header_xml.as_deref()?).ok()?;
        root.child("version").map(|v| v.text.clone())
    }

    /// Samples in all streams.
    pub fn sample_count(&self) -> usize {
        self.streams.iter().map(XdfStream::sample_count).sum()
    }
}

/// Reads a whole file with pyxdf's default clock handling. For small files and tests:
/// everything is held in memory.
///
/// On a corrupt or truncated file the error names the byte offset and chunk, and
/// [`PartialRead::file`] holds everything read before it.
pub fn read_file(path: impl AsRef<Path>) -> Result<XdfFile, Box<PartialRead>> {
    read_file_with(path, &ReadOptions::default())
}

/// [`read_file`] with other clock options.
pub fn read_file_with(
    path: impl AsRef<Path>,
    options: &ReadOptions,
) -> Result<XdfFile, Box<PartialRead>> {
    let path = path.as_ref();
    let result = match XdfReader::open(path) {
        Ok(reader) => read_from(reader, options),
        Err(error) => Err(Box::new(PartialRead {
            path: None,
            file: XdfFile::default(),
            error,
        })),
    };
    result.map_err(|mut partial| {
        partial.path = Some(path.to_path_buf());
        partial
    })
}

/// Reads everything an [`XdfReader`] yields into an [`XdfFile`], as [`read_file`] does.
pub fn read_from<R: Read>(
    mut reader: XdfReader<R>,
    options: &ReadOptions,
) -> Result<XdfFile, Box<PartialRead>> {
    let mut file = XdfFile::default();
    let mut index: HashMap<StreamId, usize> = HashMap::new();
    let error = loop {
        match reader.next_chunk() {
            Ok(None) => break None,
            Ok(Some(chunk)) => collect(&mut file, &mut index, chunk),
            Err(error) => {
                if let Some(samples) = reader.take_partial_samples() {
                    collect(&mut file, &mut index, Chunk::Samples(samples));
                }
                break Some(error);
            }
        }
    };
    file.unknown_chunks = reader.unknown_chunks();
    file.lossy_strings = reader.lossy_strings();
    for stream in &mut file.streams {
        finish_stream(stream, options);
    }
    match error {
        None => Ok(file),
        Some(error) => Err(Box::new(PartialRead {
            path: None,
            file,
            error,
        })),
    }
}

fn collect(file: &mut XdfFile, index: &mut HashMap<StreamId, usize>, chunk: Chunk) {
    match chunk {
        Chunk::FileHeader { xml } => file.header_xml = Some(xml),
        Chunk::StreamHeader { stream, info } => {
            index.insert(stream, file.streams.len());
            file.streams.push(XdfStream::new(stream, info));
        }
        Chunk::Samples(samples) => {
            // The reader only yields samples of streams whose header it has read.
            if let Some(&i) = index.get(&samples.stream) {
                file.streams[i].push(samples);
            }
        }
        Chunk::ClockOffset {
            stream,
            collection_time,
            value,
        } => match index.get(&stream) {
            Some(&i) => file.streams[i].clock_offsets.push(ClockOffset {
                collection_time,
                value,
            }),
            None => file.orphan_chunks += 1,
        },
        Chunk::Boundary => file.boundary_chunks += 1,
        Chunk::StreamFooter { stream, xml } => match index.get(&stream) {
            Some(&i) => file.streams[i].footer = Some(StreamFooter::from_xml(&xml)),
            None => file.orphan_chunks += 1,
        },
    }
}

/// Clock sync, optional dejittering and effective rate, in pyxdf's order.
fn finish_stream(stream: &mut XdfStream, options: &ReadOptions) {
    if options.synchronize_clocks {
        drop_corrupt_tail(stream);
    }
    stream.time_stamps = stream.raw_time_stamps.clone();
    if options.synchronize_clocks {
        stream.clock_segments = clock::synchronize(
            &mut stream.time_stamps,
            &stream.clock_offsets,
            &options.sync,
        );
    }
    let n = stream.time_stamps.len();
    let srate = stream.info.nominal_srate();
    match &options.dejitter {
        Some(dejitter) => {
            let (segments, rate) = clock::dejitter(
                &mut stream.time_stamps,
                srate,
                stream.info.can_drop_samples(),
                dejitter,
            );
            stream.segments = segments;
            stream.effective_srate = rate;
        }
        None => {
            if srate != 0.0 && n > 1 {
                stream.effective_srate =
                    (n - 1) as f64 / (stream.time_stamps[n - 1] - stream.time_stamps[0]);
            }
            if n > 0 {
                stream.segments = vec![(0, n - 1)];
            }
        }
    }
}

/// pyxdf's `_truncate_corrupted_offsets` (pylsl#67, liblsl#246): when the footer counts
/// fewer samples than were read and the last clock offset is an outlier, drop both.
fn drop_corrupt_tail(stream: &mut XdfStream) {
    let Some(footer_count) = stream.footer.as_ref().and_then(|f| f.sample_count) else {
        return;
    };
    let footer_count = usize::try_from(footer_count).unwrap_or(usize::MAX);
    if stream.sample_count() <= footer_count || !last_offset_is_outlier(&stream.clock_offsets) {
        return;
    }
    stream.clock_offsets.pop();
    stream.raw_time_stamps.truncate(footer_count);
    stream
        .values
        .truncate(footer_count * stream.info.channel_count());
    stream.dropped_corrupt_tail = true;
}

/// pyxdf's `_detect_corrupted_clock_offset`.
fn last_offset_is_outlier(offsets: &[ClockOffset]) -> bool {
    const TIME_RATIO: f64 = 10.0;
    const VALUE_ZSCORE: f64 = 10.0;
    let n = offsets.len();
    if n < 3 {
        return false;
    }
    let intervals: Vec<f64> = offsets
        .windows(2)
        .map(|w| w[1].collection_time - w[0].collection_time)
        .collect();
    let median_interval = clock::median(&intervals[..intervals.len() - 1]);
    let last_interval = intervals[intervals.len() - 1].abs();
    let time_ratio = if median_interval > 0.0 {
        last_interval / median_interval
    } else if last_interval > 0.0 {
        f64::INFINITY
    } else {
        1.0
    };
    let values: Vec<f64> = offsets[..n - 1].iter().map(|o| o.value).collect();
    let median_value = clock::median(&values);
    let deviations: Vec<f64> = values.iter().map(|v| (v - median_value).abs()).collect();
    let mad = clock::median(&deviations);
    let value_zscore = if mad > f64::EPSILON {
        (offsets[n - 1].value - median_value).abs() / (1.4826 * mad)
    } else {
        0.0
    };
    time_ratio > TIME_RATIO || value_zscore > VALUE_ZSCORE
}

/// Keeps the error type's size honest: `Result<XdfFile, Box<PartialRead>>` stays small.
const _: () = assert!(std::mem::size_of::<XdfError>() <= 128);
