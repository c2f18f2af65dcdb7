//! Streaming writer. Holds one chunk's encoding buffer (reused) and per-stream footer
//! tallies; every chunk is flushed to the underlying writer as soon as it is encoded.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::clock::ClockOffset;
use super::error::WriteError;
use super::header::{StreamFooter, StreamInfo};
use super::{ChannelFormat, ChunkTag, NumericValue, StreamId, BOUNDARY_UUID, MAGIC};

/// The file header this writer writes.
const FILE_HEADER: &str = "<?xml version=\"1.0\"?>\n<info>\n\t<version>1.0</version>\n</info>\n";

/// Time stamps of the samples in one write.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stamps<'a> {
    /// One stamp per sample, each written.
    Each(&'a [f64]),
    /// Stamps left out; readers fill each in as the previous stamp + 1 / nominal_srate
    /// (the first of a stream counts from 0). `first`, if given, is written for the
    /// first sample of this write.
    Nominal { first: Option<f64> },
}

/// What the footer of a stream needs, and how to encode its samples.
struct Tally {
    id: StreamId,
    format: ChannelFormat,
    channels: usize,
    tdiff: f64,
    /// The last stamp as a reader reconstructs it (for omitted stamps).
    last_stamp: f64,
    first: Option<f64>,
    count: u64,
    offsets: Vec<ClockOffset>,
}

impl Tally {
    /// Encodes sample `k`'s stamp and counts the sample.
    fn put_stamp(&mut self, out: &mut Vec<u8>, stamps: &Stamps<'_>, k: usize) {
        let explicit = match stamps {
            Stamps::Each(s) => Some(s[k]),
            Stamps::Nominal { first } if k == 0 => *first,
            Stamps::Nominal { .. } => None,
        };
        let stamp = match explicit {
            Some(t) => {
                out.push(8);
                out.extend_from_slice(&t.to_le_bytes());
                t
            }
            None => {
                out.push(0);
                self.last_stamp + self.tdiff
            }
        };
        self.last_stamp = stamp;
        self.first.get_or_insert(stamp);
        self.count += 1;
    }
}

/// Appends a variable-length integer: width byte (1, 4 or 8), then the value.
fn put_varlen(out: &mut Vec<u8>, n: u64) {
    if let Ok(n) = u8::try_from(n) {
        out.push(1);
        out.push(n);
    } else if let Ok(n) = u32::try_from(n) {
        out.push(4);
        out.extend_from_slice(&n.to_le_bytes());
    } else {
        out.push(8);
        out.extend_from_slice(&n.to_le_bytes());
    }
}

/// `write_samples_f32` and its kin: samples of one numeric format, one stamp each.
macro_rules! write_samples_each {
    ($($name:ident: $t:ty, $format:literal;)*) => {$(
        #[doc = concat!("Samples of a `", $format, "` stream, one stamp each.")]
        pub fn $name(
            &mut self,
            id: StreamId,
            values: &[$t],
            stamps: &[f64],
        ) -> Result<(), WriteError> {
            self.write_samples(id, values, Stamps::Each(stamps))
        }
    )*};
}

/// Writes an XDF file as a stream of chunks.
///
/// ```no_run
/// use monkeysee::xdf::{ChannelFormat, StreamId, StreamSpec, XdfWriter};
/// let mut w = XdfWriter::create("session.xdf")?;
/// let mua = StreamId(1);
/// w.add_stream(mua, StreamSpec::new("MUA", "MUA", 2, 1000.0, ChannelFormat::Float32))?;
/// w.write_samples_f32(mua, &[0.1, 0.2, 0.3, 0.4], &[10.000, 10.001])?;
/// w.write_clock_offset(mua, 10.001, -0.25)?;
/// w.finish()?;
/// # Ok::<(), monkeysee::xdf::WriteError>(())
/// ```
pub struct XdfWriter<W: Write> {
    out: W,
    streams: Vec<Tally>,
    /// The chunk being encoded; reused.
    buf: Vec<u8>,
    /// The chunk head being encoded; reused.
    head: Vec<u8>,
}

impl XdfWriter<BufWriter<File>> {
    /// Creates (or truncates) a file and writes the magic and file header.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, WriteError> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|source| WriteError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        XdfWriter::new(BufWriter::with_capacity(1 << 20, file))
    }
}

impl<W: Write> XdfWriter<W> {
    /// Writes the magic and file header to `out`.
    pub fn new(mut out: W) -> Result<Self, WriteError> {
        out.write_all(&MAGIC)?;
        let mut writer = XdfWriter {
            out,
            streams: Vec::new(),
            buf: Vec::new(),
            head: Vec::with_capacity(11),
        };
        writer.buf.extend_from_slice(FILE_HEADER.as_bytes());
        writer.emit(ChunkTag::FileHeader)?;
        Ok(writer)
    }

    /// Writes a stream's header. `info` is a [`StreamSpec`](super::StreamSpec) or a
    /// [`StreamInfo`] (e.g. `StreamInfo::from_xml(xml)?` to keep an LSL header as is).
    pub fn add_stream(
        &mut self,
        id: StreamId,
        info: impl Into<StreamInfo>,
    ) -> Result<(), WriteError> {
        let info = info.into();
        if self.streams.iter().any(|s| s.id == id) {
            return Err(WriteError::DuplicateStream(id));
        }
        if info.channel_count() == 0 {
            return Err(WriteError::NoChannels(id));
        }
        let srate = info.nominal_srate();
        self.buf.clear();
        self.buf.extend_from_slice(&id.0.to_le_bytes());
        self.buf.extend_from_slice(info.xml().as_bytes());
        self.emit(ChunkTag::StreamHeader)?;
        self.streams.push(Tally {
            id,
            format: info.channel_format(),
            channels: info.channel_count(),
            tdiff: if srate > 0.0 { 1.0 / srate } else { 0.0 },
            last_stamp: 0.0,
            first: None,
            count: 0,
            offsets: Vec::new(),
        });
        Ok(())
    }

    /// Writes one Samples chunk of a numeric stream; `values` row-major
    /// (samples × channels). Nothing is written for no samples.
    pub fn write_samples<T: NumericValue>(
        &mut self,
        id: StreamId,
        values: &[T],
        stamps: Stamps<'_>,
    ) -> Result<(), WriteError> {
        let bytes = values.len() * T::SIZE;
        self.samples_chunk(id, T::FORMAT, values, stamps, bytes, |buf, row| {
            let start = buf.len();
            buf.resize(start + row.len() * T::SIZE, 0);
            for (out, v) in buf[start..].chunks_exact_mut(T::SIZE).zip(row) {
                v.put_le(out);
            }
        })
    }

    /// Writes one Samples chunk of a string stream; `values` row-major.
    pub fn write_strings<S: AsRef<str>>(
        &mut self,
        id: StreamId,
        values: &[S],
        stamps: Stamps<'_>,
    ) -> Result<(), WriteError> {
        self.samples_chunk(id, ChannelFormat::String, values, stamps, 0, |buf, row| {
            for v in row {
                let bytes = v.as_ref().as_bytes();
                put_varlen(buf, bytes.len() as u64);
                buf.extend_from_slice(bytes);
            }
        })
    }

    write_samples_each! {
        write_samples_f32: f32, "float32";
        write_samples_f64: f64, "double64";
        write_samples_i8: i8, "int8";
        write_samples_i16: i16, "int16";
        write_samples_i32: i32, "int32";
        write_samples_i64: i64, "int64";
    }

    /// Samples of a `string` stream (e.g. markers), one stamp each.
    pub fn write_samples_str<S: AsRef<str>>(
        &mut self,
        id: StreamId,
        values: &[S],
        stamps: &[f64],
    ) -> Result<(), WriteError> {
        self.write_strings(id, values, Stamps::Each(stamps))
    }

    /// Writes a ClockOffset chunk: at `collection_time` (stream clock) the recording
    /// clock was `value` seconds ahead of the stream's. Also listed in the footer.
    pub fn write_clock_offset(
        &mut self,
        id: StreamId,
        collection_time: f64,
        value: f64,
    ) -> Result<(), WriteError> {
        let i = self.index(id)?;
        self.streams[i].offsets.push(ClockOffset {
            collection_time,
            value,
        });
        self.buf.clear();
        self.buf.extend_from_slice(&id.0.to_le_bytes());
        self.buf.extend_from_slice(&collection_time.to_le_bytes());
        self.buf.extend_from_slice(&value.to_le_bytes());
        self.emit(ChunkTag::ClockOffset)
    }

    /// Writes a Boundary chunk, a point a damaged file can be resynchronised at.
    pub fn write_boundary(&mut self) -> Result<(), WriteError> {
        self.buf.clear();
        self.buf.extend_from_slice(&BOUNDARY_UUID);
        self.emit(ChunkTag::Boundary)
    }

    /// Writes each stream's footer (first and last stamp, sample count, clock offsets;
    /// 0 stamps for a stream without samples), flushes, and returns the inner writer.
    /// A writer dropped without `finish` leaves a readable file without footers.
    pub fn finish(mut self) -> Result<W, WriteError> {
        for i in 0..self.streams.len() {
            let tally = &self.streams[i];
            let (first, last) = match tally.first {
                Some(first) => (first, tally.last_stamp),
                None => (0.0, 0.0),
            };
            let xml = StreamFooter::render(first, last, tally.count, &tally.offsets);
            self.buf.clear();
            self.buf.extend_from_slice(&tally.id.0.to_le_bytes());
            self.buf.extend_from_slice(xml.as_bytes());
            self.emit(ChunkTag::StreamFooter)?;
        }
        self.out.flush()?;
        Ok(self.out)
    }

    fn index(&self, id: StreamId) -> Result<usize, WriteError> {
        self.streams
            .iter()
            .position(|s| s.id == id)
            .ok_or(WriteError::UnknownStream(id))
    }

    /// Checks a write against the stream's header; returns the stream's index.
    fn check(
        &self,
        id: StreamId,
        given: ChannelFormat,
        values: usize,
        stamps: &Stamps<'_>,
    ) -> Result<usize, WriteError> {
        let i = self.index(id)?;
        let tally = &self.streams[i];
        if tally.format != given {
            return Err(WriteError::FormatMismatch {
                stream: id,
                expected: tally.format,
                given,
            });
        }
        if !values.is_multiple_of(tally.channels) {
            return Err(WriteError::RaggedValues {
                stream: id,
                channels: tally.channels,
                values,
            });
        }
        let samples = values / tally.channels;
        if let Stamps::Each(s) = stamps {
            if s.len() != samples {
                return Err(WriteError::StampCount {
                    stream: id,
                    samples,
                    stamps: s.len(),
                });
            }
        }
        Ok(i)
    }

    /// Checks a write, then encodes it as one Samples chunk: stream id, sample count,
    /// and per sample its stamp and `put_row`'s encoding of its values. `value_bytes`:
    /// what the values take, reserved up front. Nothing is written for no samples.
    fn samples_chunk<V>(
        &mut self,
        id: StreamId,
        format: ChannelFormat,
        values: &[V],
        stamps: Stamps<'_>,
        value_bytes: usize,
        mut put_row: impl FnMut(&mut Vec<u8>, &[V]),
    ) -> Result<(), WriteError> {
        let i = self.check(id, format, values.len(), &stamps)?;
        if values.is_empty() {
            return Ok(());
        }
        let tally = &mut self.streams[i];
        let buf = &mut self.buf;
        let samples = values.len() / tally.channels;
        buf.clear();
        buf.reserve(16 + samples * 9 + value_bytes);
        buf.extend_from_slice(&id.0.to_le_bytes());
        put_varlen(buf, samples as u64);
        for (k, row) in values.chunks_exact(tally.channels).enumerate() {
            tally.put_stamp(buf, &stamps, k);
            put_row(buf, row);
        }
        self.emit(ChunkTag::Samples)
    }

    /// Writes `self.buf` as a chunk with this tag, then flushes.
    fn emit(&mut self, tag: ChunkTag) -> Result<(), WriteError> {
        // [NumLengthBytes][Length][Tag], at most 1 + 8 + 2 bytes.
        self.head.clear();
        put_varlen(&mut self.head, 2 + self.buf.len() as u64);
        self.head.extend_from_slice(&(tag as u16).to_le_bytes());
        self.out.write_all(&self.head)?;
        self.out.write_all(&self.buf)?;
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varlen_picks_the_narrowest_width() {
        let mut out = Vec::new();
        put_varlen(&mut out, 255);
        put_varlen(&mut out, 256);
        put_varlen(&mut out, 1 << 32);
        assert_eq!(
            out,
            [
                &[1u8, 255][..],
                &[4, 0, 1, 0, 0],
                &[8, 0, 0, 0, 0, 1, 0, 0, 0]
            ]
            .concat()
        );
    }
}
