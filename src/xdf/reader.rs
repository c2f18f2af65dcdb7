//! Streaming chunk reader. Holds one chunk and the stream headers seen so far.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use super::error::{ChunkLocation, ErrorKind, XdfError};
use super::header::{StreamInfo, MAX_XML_BYTES};
use super::{ChannelFormat, ChunkTag, NumericValue, StreamId, Values, BOUNDARY_UUID, MAGIC};

/// One chunk of an XDF file, decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum Chunk {
    /// Tag 1: the file header XML.
    FileHeader { xml: String },
    /// Tag 2: a stream's header.
    StreamHeader { stream: StreamId, info: StreamInfo },
    /// Tag 3: samples of one stream.
    Samples(SampleChunk),
    /// Tag 4: one clock offset measurement (`value` is added to the stream's clock).
    ClockOffset {
        stream: StreamId,
        collection_time: f64,
        value: f64,
    },
    /// Tag 5: a boundary marker.
    Boundary,
    /// Tag 6: a stream's footer XML.
    StreamFooter { stream: StreamId, xml: String },
}

/// The samples of one Samples chunk.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleChunk {
    pub stream: StreamId,
    /// Channels per sample.
    pub channel_count: usize,
    /// One raw stamp per sample (stream clock, no offsets applied); stamps the file
    /// omits are the previous stamp + 1 / nominal_srate, as pyxdf fills them.
    pub stamps: Vec<f64>,
    /// Values, row-major: `stamps.len() × channel_count`.
    pub values: Values,
}

impl SampleChunk {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.stamps.len()
    }

    /// True when the chunk holds no samples.
    pub fn is_empty(&self) -> bool {
        self.stamps.is_empty()
    }
}

/// Values (and stamps) a chunk's buffers are sized for up front; beyond that they grow
/// as samples arrive, so a corrupt sample count cannot make the reader over-allocate.
const PREALLOC_VALUES: usize = 1 << 20;

/// Per-stream state the reader needs to decode samples.
struct StreamState {
    info: StreamInfo,
    /// 1 / nominal_srate, or 0 for irregular streams (pyxdf's `tdiff`).
    tdiff: f64,
    last_stamp: f64,
}

/// A byte source that knows its offset from the start of the file.
struct Input<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Input<R> {
    fn fill(
        &mut self,
        buf: &mut [u8],
        what: &'static str,
        chunk: Option<ChunkLocation>,
    ) -> Result<(), XdfError> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(XdfError::new(
                self.pos,
                chunk,
                ErrorKind::UnexpectedEof(what),
            )),
            Err(e) => Err(XdfError::new(self.pos, chunk, ErrorKind::Io(e))),
        }
    }

    /// One byte, or `None` at a clean end of file.
    fn byte_or_eof(&mut self) -> Result<Option<u8>, XdfError> {
        let mut b = [0u8; 1];
        loop {
            match self.inner.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    self.pos += 1;
                    return Ok(Some(b[0]));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(XdfError::new(self.pos, None, ErrorKind::Io(e))),
            }
        }
    }

    /// Reads and discards `n` bytes.
    fn skip(
        &mut self,
        n: u64,
        what: &'static str,
        chunk: Option<ChunkLocation>,
    ) -> Result<(), XdfError> {
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())
            .map_err(|e| XdfError::new(self.pos, chunk, ErrorKind::Io(e)))?;
        self.pos += copied;
        if copied < n {
            return Err(XdfError::new(
                self.pos,
                chunk,
                ErrorKind::UnexpectedEof(what),
            ));
        }
        Ok(())
    }
}

/// Reads inside one chunk's declared content, refusing to run past it.
struct Content<'a, R> {
    input: &'a mut Input<R>,
    loc: ChunkLocation,
    /// File offset where the content ends.
    end: u64,
    /// The chunk's Length field.
    declared: u64,
}

impl<R: Read> Content<'_, R> {
    fn room(&self) -> u64 {
        self.end.saturating_sub(self.input.pos)
    }

    fn check_room(&self, n: u64, what: &'static str) -> Result<(), XdfError> {
        if n > self.room() {
            return Err(XdfError::new(
                self.input.pos,
                Some(self.loc),
                ErrorKind::Overrun {
                    what,
                    declared: self.declared,
                },
            ));
        }
        Ok(())
    }

    fn fill(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), XdfError> {
        self.check_room(buf.len() as u64, what)?;
        self.input.fill(buf, what, Some(self.loc))
    }

    fn bytes<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], XdfError> {
        let mut b = [0u8; N];
        self.fill(&mut b, what)?;
        Ok(b)
    }

    /// A variable-length integer: width byte (1, 4 or 8), then the value.
    fn varlen(&mut self, what: &'static str) -> Result<u64, XdfError> {
        let at = self.input.pos;
        let [width] = self.bytes(what)?;
        let loc = self.loc;
        varlen_value(width, at, loc, |b| self.fill(b, what))
    }

    /// The next `len` bytes of the content (`what` names them in errors). Grows with
    /// the bytes that arrive, so a lying length cannot over-allocate.
    fn take_bytes(&mut self, len: u64, what: &'static str) -> Result<Vec<u8>, XdfError> {
        self.check_room(len, what)?;
        let start = self.input.pos;
        let mut bytes = Vec::new();
        let got = (&mut self.input.inner)
            .take(len)
            .read_to_end(&mut bytes)
            .map_err(|e| XdfError::new(start, Some(self.loc), ErrorKind::Io(e)))?;
        self.input.pos += got as u64;
        if (got as u64) < len {
            return Err(XdfError::new(
                self.input.pos,
                Some(self.loc),
                ErrorKind::UnexpectedEof(what),
            ));
        }
        Ok(bytes)
    }

    /// The rest of the content as UTF-8 XML.
    fn xml(&mut self) -> Result<String, XdfError> {
        let len = self.room();
        let start = self.input.pos;
        if len > MAX_XML_BYTES {
            return Err(XdfError::new(
                start,
                Some(self.loc),
                ErrorKind::XmlTooLong(len),
            ));
        }
        let bytes = self.take_bytes(len, "XML")?;
        String::from_utf8(bytes).map_err(|e| {
            let bad = e.utf8_error().valid_up_to();
            XdfError::new(start + bad as u64, Some(self.loc), ErrorKind::BadUtf8(bad))
        })
    }

    /// A sample's time stamp, filling in omitted ones.
    fn stamp(&mut self, state: &mut StreamState) -> Result<f64, XdfError> {
        let at = self.input.pos;
        let stamp = match self.bytes("TimeStampBytes")? {
            [0] => state.last_stamp + state.tdiff,
            [8] => f64::from_le_bytes(self.bytes("time stamp")?),
            [other] => {
                return Err(XdfError::new(
                    at,
                    Some(self.loc),
                    ErrorKind::BadTimeStampBytes(other),
                ))
            }
        };
        state.last_stamp = stamp;
        Ok(stamp)
    }

    /// Errors unless the content was read exactly to its declared end.
    fn finish(&self) -> Result<(), XdfError> {
        if self.input.pos != self.end {
            return Err(XdfError::new(
                self.input.pos,
                Some(self.loc),
                ErrorKind::LengthMismatch {
                    declared: self.declared,
                    parsed: self.declared - self.room(),
                },
            ));
        }
        Ok(())
    }
}

/// A variable-length integer's value after its width byte `width` (1, 4 or 8), read at
/// `at`; `fill` reads the value's bytes.
fn varlen_value(
    width: u8,
    at: u64,
    loc: ChunkLocation,
    fill: impl FnOnce(&mut [u8]) -> Result<(), XdfError>,
) -> Result<u64, XdfError> {
    if !matches!(width, 1 | 4 | 8) {
        return Err(XdfError::new(
            at,
            Some(loc),
            ErrorKind::BadLengthWidth(width),
        ));
    }
    let mut b = [0u8; 8];
    fill(&mut b[..usize::from(width)])?;
    Ok(u64::from_le_bytes(b))
}

/// Reads an XDF file chunk by chunk. See the [module docs](super) for the memory contract.
///
/// ```no_run
/// use monkeysee::xdf::{Chunk, XdfReader};
/// let mut reader = XdfReader::open("session.xdf")?;
/// while let Some(chunk) = reader.next_chunk()? {
///     if let Chunk::Samples(samples) = chunk {
///         println!("stream {}: {} samples", samples.stream, samples.len());
///     }
/// }
/// # Ok::<(), monkeysee::xdf::XdfError>(())
/// ```
pub struct XdfReader<R> {
    input: Input<R>,
    file_len: Option<u64>,
    streams: HashMap<u32, StreamState>,
    unknown_chunks: u64,
    lossy_strings: u64,
    partial: Option<SampleChunk>,
    done: bool,
}

impl XdfReader<BufReader<File>> {
    /// Opens a file (buffered) and checks its magic. Knowing the file's size, the reader
    /// refuses a chunk whose length runs past the end before reading it; a Samples chunk
    /// is still decoded up to the break, so its complete samples can be kept.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, XdfError> {
        let file =
            File::open(path.as_ref()).map_err(|e| XdfError::new(0, None, ErrorKind::Io(e)))?;
        let len = file.metadata().map(|m| m.len()).ok();
        let mut reader = XdfReader::new(BufReader::with_capacity(1 << 20, file))?;
        reader.file_len = len;
        Ok(reader)
    }
}

impl<R: Read> XdfReader<R> {
    /// Reads and checks the magic bytes `XDF:`.
    pub fn new(inner: R) -> Result<Self, XdfError> {
        let mut input = Input { inner, pos: 0 };
        let mut magic = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match input.inner.read(&mut magic[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(XdfError::new(got as u64, None, ErrorKind::Io(e))),
            }
        }
        if magic[..got] != MAGIC {
            let found = String::from_utf8_lossy(&magic[..got]).into_owned();
            return Err(XdfError::new(0, None, ErrorKind::BadMagic(found)));
        }
        input.pos = 4;
        Ok(XdfReader {
            input,
            file_len: None,
            streams: HashMap::new(),
            unknown_chunks: 0,
            lossy_strings: 0,
            partial: None,
            done: false,
        })
    }

    /// Byte offset of the next chunk (after an error: where reading stopped).
    pub fn position(&self) -> u64 {
        self.input.pos
    }

    /// Chunks with tags XDF 1.0 does not define, skipped so far.
    pub fn unknown_chunks(&self) -> u64 {
        self.unknown_chunks
    }

    /// String values that were not valid UTF-8 and were decoded lossily (as pyxdf does).
    pub fn lossy_strings(&self) -> u64 {
        self.lossy_strings
    }

    /// After an error inside a Samples chunk: the chunk's samples decoded completely
    /// before the damage. Taken once.
    pub fn take_partial_samples(&mut self) -> Option<SampleChunk> {
        self.partial.take()
    }

    /// The next chunk; `Ok(None)` at the end of the file. Unknown tags are skipped and
    /// counted. After an error, every later call returns `Ok(None)`.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, XdfError> {
        if self.done {
            return Ok(None);
        }
        let result = self.read_chunk();
        if !matches!(result, Ok(Some(_))) {
            self.done = true;
        }
        result
    }

    fn read_chunk(&mut self) -> Result<Option<Chunk>, XdfError> {
        loop {
            let Some(head) = self.read_chunk_head()? else {
                return Ok(None);
            };
            let Some(kind) = ChunkTag::from_u16(head.tag) else {
                self.input
                    .skip(head.length - 2, "unknown chunk", Some(head.loc))?;
                self.unknown_chunks += 1;
                continue;
            };
            head.check_min_length(kind)?;
            let content = Content {
                end: head.body.saturating_add(head.length),
                declared: head.length,
                loc: head.loc,
                input: &mut self.input,
            };
            let chunk = match kind {
                ChunkTag::FileHeader => read_file_header(content)?,
                ChunkTag::StreamHeader => read_stream_header(content, &mut self.streams)?,
                ChunkTag::Samples => Chunk::Samples(read_samples(
                    content,
                    &mut self.streams,
                    &mut self.lossy_strings,
                    &mut self.partial,
                )?),
                ChunkTag::ClockOffset => read_clock_offset(content)?,
                ChunkTag::Boundary => read_boundary(content)?,
                ChunkTag::StreamFooter => read_stream_footer(content)?,
            };
            return Ok(Some(chunk));
        }
    }

    /// The next chunk's Length and Tag fields; `None` at a clean end of file. Refuses a
    /// length under 2 and, when the file's size is known, a chunk other than Samples
    /// whose length runs past the end (a Samples chunk is decoded anyway, to keep its
    /// complete samples and name the byte where it breaks off).
    fn read_chunk_head(&mut self) -> Result<Option<ChunkHead>, XdfError> {
        let start = self.input.pos;
        let mut loc = ChunkLocation {
            offset: start,
            tag: None,
        };
        let Some(width) = self.input.byte_or_eof()? else {
            return Ok(None);
        };
        let length = varlen_value(width, start, loc, |b| {
            self.input.fill(b, "chunk length", Some(loc))
        })?;
        let body = self.input.pos;
        if length < 2 {
            return Err(XdfError::new(
                body,
                Some(loc),
                ErrorKind::LengthTooShort { length, min: 2 },
            ));
        }
        let mut tag = [0u8; 2];
        self.input.fill(&mut tag, "chunk tag", Some(loc))?;
        let tag = u16::from_le_bytes(tag);
        loc.tag = Some(tag);
        if let (Some(file_len), false) = (self.file_len, tag == ChunkTag::Samples as u16) {
            let remaining = file_len.saturating_sub(body);
            if length > remaining {
                return Err(XdfError::new(
                    body,
                    Some(loc),
                    ErrorKind::LengthPastEnd { length, remaining },
                ));
            }
        }
        Ok(Some(ChunkHead {
            loc,
            tag,
            body,
            length,
        }))
    }
}

/// A chunk's Length and Tag fields, read; its content comes next.
struct ChunkHead {
    loc: ChunkLocation,
    tag: u16,
    /// File offset of the content's first byte (the Tag field's).
    body: u64,
    /// The Length field: tag and content bytes.
    length: u64,
}

impl ChunkHead {
    /// Errors when the length cannot hold the fixed fields of a `kind` chunk.
    fn check_min_length(&self, kind: ChunkTag) -> Result<(), XdfError> {
        let min = match kind {
            ChunkTag::FileHeader => 2,
            ChunkTag::StreamHeader | ChunkTag::StreamFooter | ChunkTag::Samples => 6,
            ChunkTag::ClockOffset => 22,
            ChunkTag::Boundary => 18,
        };
        if self.length < min {
            return Err(XdfError::new(
                self.body,
                Some(self.loc),
                ErrorKind::LengthTooShort {
                    length: self.length,
                    min,
                },
            ));
        }
        Ok(())
    }
}

/// Decodes a FileHeader chunk: its XML.
fn read_file_header<R: Read>(mut content: Content<'_, R>) -> Result<Chunk, XdfError> {
    Ok(Chunk::FileHeader {
        xml: content.xml()?,
    })
}

/// Decodes a StreamHeader chunk and registers the stream (a second header for the same
/// id is an error).
fn read_stream_header<R: Read>(
    mut content: Content<'_, R>,
    streams: &mut HashMap<u32, StreamState>,
) -> Result<Chunk, XdfError> {
    let loc = content.loc;
    let id_at = content.input.pos;
    let id = u32::from_le_bytes(content.bytes("stream id")?);
    let xml_at = content.input.pos;
    let xml = content.xml()?;
    let info = StreamInfo::from_xml(&xml)
        .map_err(|e| XdfError::new(xml_at, Some(loc), ErrorKind::Header(e)))?;
    if streams.contains_key(&id) {
        return Err(XdfError::new(
            id_at,
            Some(loc),
            ErrorKind::DuplicateStream(id),
        ));
    }
    let srate = info.nominal_srate();
    streams.insert(
        id,
        StreamState {
            info: info.clone(),
            tdiff: if srate > 0.0 { 1.0 / srate } else { 0.0 },
            last_stamp: 0.0,
        },
    );
    Ok(Chunk::StreamHeader {
        stream: StreamId(id),
        info,
    })
}

/// Decodes a ClockOffset chunk: stream id, collection time and offset value, exactly.
fn read_clock_offset<R: Read>(mut content: Content<'_, R>) -> Result<Chunk, XdfError> {
    let stream = StreamId(u32::from_le_bytes(content.bytes("stream id")?));
    let collection_time = f64::from_le_bytes(content.bytes("clock offset time")?);
    let value = f64::from_le_bytes(content.bytes("clock offset value")?);
    content.finish()?;
    Ok(Chunk::ClockOffset {
        stream,
        collection_time,
        value,
    })
}

/// Decodes a Boundary chunk: exactly the XDF boundary UUID.
fn read_boundary<R: Read>(mut content: Content<'_, R>) -> Result<Chunk, XdfError> {
    let at = content.input.pos;
    let uuid: [u8; 16] = content.bytes("boundary UUID")?;
    content.finish()?;
    if uuid != BOUNDARY_UUID {
        return Err(XdfError::new(at, Some(content.loc), ErrorKind::BadBoundary));
    }
    Ok(Chunk::Boundary)
}

/// Decodes a StreamFooter chunk: stream id and XML.
fn read_stream_footer<R: Read>(mut content: Content<'_, R>) -> Result<Chunk, XdfError> {
    let stream = StreamId(u32::from_le_bytes(content.bytes("stream id")?));
    Ok(Chunk::StreamFooter {
        stream,
        xml: content.xml()?,
    })
}

impl<R: Read> Iterator for XdfReader<R> {
    type Item = Result<Chunk, XdfError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().transpose()
    }
}

/// Decodes a Samples chunk. On an error after some complete samples, leaves them in
/// `partial`.
fn read_samples<R: Read>(
    mut content: Content<'_, R>,
    streams: &mut HashMap<u32, StreamState>,
    lossy_strings: &mut u64,
    partial: &mut Option<SampleChunk>,
) -> Result<SampleChunk, XdfError> {
    let id_at = content.input.pos;
    let id = u32::from_le_bytes(content.bytes("stream id")?);
    let state = streams
        .get_mut(&id)
        .ok_or_else(|| XdfError::new(id_at, Some(content.loc), ErrorKind::UnknownStream(id)))?;
    let count_at = content.input.pos;
    let count = content.varlen("sample count")?;
    let channels = state.info.channel_count();
    let format = state.info.channel_format();

    // Smallest possible encoding of one sample: the TimeStampBytes byte plus the values
    // (a string's length field takes at least 2 bytes).
    let value_min = format.value_size().unwrap_or(2) as u64;
    let sample_min = (channels as u64)
        .saturating_mul(value_min)
        .saturating_add(1);
    let room = content.room();
    if count > room / sample_min {
        return Err(XdfError::new(
            count_at,
            Some(content.loc),
            ErrorKind::SampleCountTooLarge { count, room },
        ));
    }
    let count = count as usize; // bounded by the chunk's bytes, which were addressable
    let mut chunk = SampleChunk {
        stream: StreamId(id),
        channel_count: channels,
        stamps: Vec::with_capacity(count.min(PREALLOC_VALUES)),
        values: Values::empty(format),
    };
    let result = match format {
        ChannelFormat::Float32 => read_numeric::<f32, R>(&mut content, state, count, &mut chunk),
        ChannelFormat::Double64 => read_numeric::<f64, R>(&mut content, state, count, &mut chunk),
        ChannelFormat::Int8 => read_numeric::<i8, R>(&mut content, state, count, &mut chunk),
        ChannelFormat::Int16 => read_numeric::<i16, R>(&mut content, state, count, &mut chunk),
        ChannelFormat::Int32 => read_numeric::<i32, R>(&mut content, state, count, &mut chunk),
        ChannelFormat::Int64 => read_numeric::<i64, R>(&mut content, state, count, &mut chunk),
        ChannelFormat::String => {
            read_strings(&mut content, state, count, &mut chunk, lossy_strings)
        }
    }
    .and_then(|()| content.finish());
    match result {
        Ok(()) => Ok(chunk),
        Err(e) => {
            if !chunk.is_empty() {
                *partial = Some(chunk);
            }
            Err(e)
        }
    }
}

fn read_numeric<T: NumericValue, R: Read>(
    content: &mut Content<'_, R>,
    state: &mut StreamState,
    count: usize,
    chunk: &mut SampleChunk,
) -> Result<(), XdfError> {
    let channels = chunk.channel_count;
    let mut raw = vec![0u8; channels * T::SIZE];
    let mut values: Vec<T> =
        Vec::with_capacity(count.saturating_mul(channels).min(PREALLOC_VALUES));
    let mut result = Ok(());
    for _ in 0..count {
        let stamp = match content.stamp(state) {
            Ok(s) => s,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        if let Err(e) = content.fill(&mut raw, "sample values") {
            result = Err(e);
            break;
        }
        chunk.stamps.push(stamp);
        values.extend(raw.chunks_exact(T::SIZE).map(T::from_le));
    }
    chunk.values = T::wrap(values);
    result
}

fn read_strings<R: Read>(
    content: &mut Content<'_, R>,
    state: &mut StreamState,
    count: usize,
    chunk: &mut SampleChunk,
    lossy_strings: &mut u64,
) -> Result<(), XdfError> {
    let channels = chunk.channel_count;
    let mut values: Vec<String> =
        Vec::with_capacity(count.saturating_mul(channels).min(PREALLOC_VALUES));
    let mut row: Vec<String> = Vec::with_capacity(channels);
    let mut result = Ok(());
    'samples: for _ in 0..count {
        let stamp = match content.stamp(state) {
            Ok(s) => s,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        row.clear();
        for _ in 0..channels {
            match read_string(content, lossy_strings) {
                Ok(s) => row.push(s),
                Err(e) => {
                    result = Err(e);
                    break 'samples;
                }
            }
        }
        chunk.stamps.push(stamp);
        values.append(&mut row);
    }
    chunk.values = Values::String(values);
    result
}

fn read_string<R: Read>(
    content: &mut Content<'_, R>,
    lossy_strings: &mut u64,
) -> Result<String, XdfError> {
    let len = content.varlen("string length")?;
    let bytes = content.take_bytes(len, "string value")?;
    Ok(String::from_utf8(bytes).unwrap_or_else(|e| {
        *lossy_strings += 1;
        String::from_utf8_lossy(e.as_bytes()).into_owned()
    }))
}
