//! Errors of the XDF reader and writer.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::{ChannelFormat, ChunkTag, StreamId, XdfFile};

/// Where a chunk starts and what its tag is (`None` while its tag was not read yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLocation {
    /// Byte offset of the chunk's NumLengthBytes field from the start of the file.
    pub offset: u64,
    /// The chunk's raw tag.
    pub tag: Option<u16>,
}

impl fmt::Display for ChunkLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tag {
            Some(tag) => {
                let name = ChunkTag::from_u16(tag).map_or("unknown", ChunkTag::name);
                write!(
                    f,
                    "{name} chunk (tag {tag}) starting at byte {}",
                    self.offset
                )
            }
            None => write!(f, "chunk starting at byte {}", self.offset),
        }
    }
}

fn in_chunk(chunk: &Option<ChunkLocation>) -> String {
    chunk.map_or_else(String::new, |c| format!(", in the {c}"))
}

/// A read failure: what went wrong, the byte offset where it was found, and the chunk.
#[derive(Debug, thiserror::Error)]
#[error("{kind} at byte {offset}{}", in_chunk(.chunk))]
pub struct XdfError {
    /// Byte offset from the start of the file where the problem was found.
    pub offset: u64,
    /// The chunk being read, if the problem is inside one.
    pub chunk: Option<ChunkLocation>,
    /// What went wrong.
    pub kind: ErrorKind,
}

impl XdfError {
    pub(crate) fn new(offset: u64, chunk: Option<ChunkLocation>, kind: ErrorKind) -> XdfError {
        XdfError {
            offset,
            chunk,
            kind,
        }
    }

    /// The file ends early. For a recording still being written, reading again later
    /// can get further; for a finished file, the rest is lost.
    pub fn is_truncation(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::UnexpectedEof(_) | ErrorKind::LengthPastEnd { .. }
        )
    }
}

/// What went wrong while reading.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("I/O error: {0}")]
    Io(io::Error),
    #[error("not an XDF file: it starts with {0:?}, not \"XDF:\"")]
    BadMagic(String),
    #[error("file ends inside the {0}")]
    UnexpectedEof(&'static str),
    #[error("NumLengthBytes is {0}; XDF allows 1, 4 or 8")]
    BadLengthWidth(u8),
    #[error("chunk length {length} is too short for its tag (at least {min} bytes)")]
    LengthTooShort { length: u64, min: u64 },
    #[error("chunk length {length} runs past the end of the file ({remaining} bytes follow the length field)")]
    LengthPastEnd { length: u64, remaining: u64 },
    #[error("chunk length {declared} does not match its content, which ends after {parsed} bytes")]
    LengthMismatch { declared: u64, parsed: u64 },
    #[error("the {what} runs past the chunk's declared length {declared}")]
    Overrun { what: &'static str, declared: u64 },
    #[error("XML chunk of {0} bytes is over the {max} byte limit", max = super::header::MAX_XML_BYTES)]
    XmlTooLong(u64),
    #[error("TimeStampBytes is {0}; XDF allows 0 or 8")]
    BadTimeStampBytes(u8),
    #[error("sample count {count} cannot fit in the {room} bytes left in the chunk")]
    SampleCountTooLarge { count: u64, room: u64 },
    #[error("chunk is for stream {0}, which has no StreamHeader before it")]
    UnknownStream(u32),
    #[error("second StreamHeader for stream {0}")]
    DuplicateStream(u32),
    #[error("Boundary chunk does not hold the boundary UUID")]
    BadBoundary,
    #[error("XML is not valid UTF-8 (first bad byte {0} bytes into it)")]
    BadUtf8(usize),
    #[error("bad stream header: {0}")]
    Header(HeaderError),
}

/// A stream header that cannot describe a readable stream.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum HeaderError {
    #[error("XML does not parse: {0}")]
    Xml(String),
    #[error("<info><{0}> is missing")]
    Missing(&'static str),
    #[error("<info><{field}> is {value:?}, not {expected}")]
    BadValue {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error(
        "channel_format {0:?} is not one of int8, int16, int32, int64, float32, double64, string"
    )]
    UnknownFormat(String),
}

/// A write failure.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("creating XDF file {}: {source}", .path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("writing XDF: {0}")]
    Io(#[from] io::Error),
    #[error("stream {0} was already added")]
    DuplicateStream(StreamId),
    #[error("stream {0} was never added with add_stream")]
    UnknownStream(StreamId),
    #[error("stream {0} has no channels; XDF samples need at least one")]
    NoChannels(StreamId),
    #[error("stream {stream} holds {expected} values, not {given}")]
    FormatMismatch {
        stream: StreamId,
        expected: ChannelFormat,
        given: ChannelFormat,
    },
    #[error("stream {stream} has {channels} channels; {values} values are not whole samples")]
    RaggedValues {
        stream: StreamId,
        channels: usize,
        values: usize,
    },
    #[error("stream {stream}: {samples} samples but {stamps} time stamps")]
    StampCount {
        stream: StreamId,
        samples: usize,
        stamps: usize,
    },
}

/// [`read_file`](super::read_file) stopped at an error; `file` holds everything read
/// before it (clock offsets applied), including the complete samples of the chunk the
/// error hit.
#[derive(thiserror::Error)]
#[error("reading XDF {}: {error} (kept {} samples read before it)", .path.as_ref().map_or_else(|| "stream".to_string(), |p| p.display().to_string()), .file.sample_count())]
pub struct PartialRead {
    /// The file, when read from a path.
    pub path: Option<PathBuf>,
    /// Everything read before the error.
    pub file: XdfFile,
    /// The error.
    pub error: XdfError,
}

impl fmt::Debug for PartialRead {
    // The whole file would drown the error; show its shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartialRead")
            .field("path", &self.path)
            .field("streams", &self.file.streams.len())
            .field("samples", &self.file.sample_count())
            .field("error", &self.error)
            .finish()
    }
}
