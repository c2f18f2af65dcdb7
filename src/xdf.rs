//! XDF 1.0 sessions, the format LabRecorder writes: a streaming reader, a streaming
//! writer, and pyxdf's clock synchronisation.
//!
//! - [`XdfReader`] pulls one chunk at a time from any [`Read`](std::io::Read) (give it a
//!   `BufReader`; [`XdfReader::open`] does). It decodes every value format, fills in
//!   omitted time stamps with pyxdf's rule (previous + 1 / nominal_srate), and names the
//!   byte offset and chunk of anything corrupt or truncated.
//! - [`XdfWriter`] writes the magic, a file header, stream headers, samples of every
//!   format, clock offsets and boundary chunks as they come, flushing after each chunk,
//!   and footers with first/last time stamp, sample count and clock offsets in
//!   [`XdfWriter::finish`].
//! - [`read_file`] collects a whole file into an [`XdfFile`] and corrects time stamps as
//!   pyxdf's `load_xdf` does by default (`synchronize_clocks=True`,
//!   `handle_clock_resets=True`); `dejitter_timestamps` is off unless asked for in
//!   [`ReadOptions`]. Raw stamps are kept beside the corrected ones.
//!
//! Memory contract: the reader holds one chunk plus the headers of the streams it has
//! seen; a session larger than memory streams through it, as long as no single Samples
//! chunk is (LabRecorder writes well under a second per chunk). The writer holds one
//! chunk's encoding buffer, reused, plus per-stream tallies for the footers (16 bytes per
//! clock offset). Neither ever reads or buffers the whole file. [`read_file`] does hold
//! everything: use it for small files and tests.
//!
//! Errors: a reader error is an [`XdfError`] with the byte offset where the problem was
//! found and the chunk (offset and tag) it was found in. After an error the reader yields
//! nothing more; what was read before it stays valid, and [`read_file`] returns it inside
//! [`PartialRead`]. Bad input never panics.

mod clock;
mod error;
mod file;
mod header;
mod reader;
mod writer;

pub use clock::{
    dejitter, detect_clock_resets, synchronize, ClockCorrection, ClockOffset, DejitterOptions,
    SampleRange, SyncOptions,
};
pub use error::{ChunkLocation, ErrorKind, HeaderError, PartialRead, WriteError, XdfError};
pub use file::{read_file, read_file_with, read_from, ReadOptions, XdfFile, XdfStream};
pub(crate) use header::Element;
pub use header::{StreamFooter, StreamInfo, StreamSpec};
pub use reader::{Chunk, SampleChunk, XdfReader};
pub use writer::{Stamps, XdfWriter};

use std::fmt;

/// The four bytes every XDF file starts with.
pub const MAGIC: [u8; 4] = *b"XDF:";

/// Content of every Boundary chunk: a fixed UUID a reader can scan for to resynchronise.
pub const BOUNDARY_UUID: [u8; 16] = [
    0x43, 0xA5, 0x46, 0xDC, 0xCB, 0xF5, 0x41, 0x0F, 0xB3, 0x0E, 0xD5, 0x46, 0x73, 0x83, 0xCB, 0xE4,
];

/// The id a file gives a stream in its StreamHeader and every later chunk of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Chunk tags of XDF 1.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChunkTag {
    FileHeader = 1,
    StreamHeader = 2,
    Samples = 3,
    ClockOffset = 4,
    Boundary = 5,
    StreamFooter = 6,
}

impl ChunkTag {
    /// The tag for a raw value, `None` for tags XDF 1.0 does not define.
    pub fn from_u16(tag: u16) -> Option<ChunkTag> {
        use ChunkTag::*;
        [
            FileHeader,
            StreamHeader,
            Samples,
            ClockOffset,
            Boundary,
            StreamFooter,
        ]
        .into_iter()
        .find(|&t| t as u16 == tag)
    }

    /// The spec's name of the chunk type.
    pub fn name(self) -> &'static str {
        match self {
            ChunkTag::FileHeader => "FileHeader",
            ChunkTag::StreamHeader => "StreamHeader",
            ChunkTag::Samples => "Samples",
            ChunkTag::ClockOffset => "ClockOffset",
            ChunkTag::Boundary => "Boundary",
            ChunkTag::StreamFooter => "StreamFooter",
        }
    }
}

/// A stream's value format, `<channel_format>` in its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelFormat {
    Float32,
    Double64,
    Int8,
    Int16,
    Int32,
    Int64,
    String,
}

impl ChannelFormat {
    /// Every format, in the order the spec lists them.
    pub const ALL: [ChannelFormat; 7] = [
        ChannelFormat::Int8,
        ChannelFormat::Int16,
        ChannelFormat::Int32,
        ChannelFormat::Int64,
        ChannelFormat::Float32,
        ChannelFormat::Double64,
        ChannelFormat::String,
    ];

    /// The header spelling: `float32`, `double64`, `int8` … `string`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelFormat::Float32 => "float32",
            ChannelFormat::Double64 => "double64",
            ChannelFormat::Int8 => "int8",
            ChannelFormat::Int16 => "int16",
            ChannelFormat::Int32 => "int32",
            ChannelFormat::Int64 => "int64",
            ChannelFormat::String => "string",
        }
    }

    /// Parses the header spelling (surrounding whitespace ignored).
    pub fn parse(s: &str) -> Option<ChannelFormat> {
        let s = s.trim();
        ChannelFormat::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// Bytes per value of a numeric format; `None` for strings.
    pub fn value_size(self) -> Option<usize> {
        match self {
            ChannelFormat::Int8 => Some(1),
            ChannelFormat::Int16 => Some(2),
            ChannelFormat::Float32 | ChannelFormat::Int32 => Some(4),
            ChannelFormat::Double64 | ChannelFormat::Int64 => Some(8),
            ChannelFormat::String => None,
        }
    }
}

impl fmt::Display for ChannelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A numeric sample value XDF can store: `f32`, `f64`, `i8`, `i16`, `i32`, `i64`.
pub trait NumericValue: Copy + PartialEq + fmt::Debug + sealed::Sealed + 'static {
    /// The stream format holding this type.
    const FORMAT: ChannelFormat;
    /// Bytes per value in the file.
    const SIZE: usize;
    /// Writes the little-endian bytes into `out` (`Self::SIZE` long).
    fn put_le(self, out: &mut [u8]);
    /// Decodes `Self::SIZE` little-endian bytes.
    fn from_le(bytes: &[u8]) -> Self;
    /// The values if `values` holds this type.
    fn slice(values: &Values) -> Option<&[Self]>;
    /// Wraps a vector in the matching [`Values`] variant.
    fn wrap(values: Vec<Self>) -> Values;
}

macro_rules! numeric_value {
    ($t:ty, $variant:ident) => {
        impl sealed::Sealed for $t {}
        impl NumericValue for $t {
            const FORMAT: ChannelFormat = ChannelFormat::$variant;
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline]
            fn put_le(self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn from_le(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$t>()];
                raw.copy_from_slice(bytes);
                <$t>::from_le_bytes(raw)
            }
            fn slice(values: &Values) -> Option<&[Self]> {
                match values {
                    Values::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn wrap(values: Vec<Self>) -> Values {
                Values::$variant(values)
            }
        }
    };
}

numeric_value!(f32, Float32);
numeric_value!(f64, Double64);
numeric_value!(i8, Int8);
numeric_value!(i16, Int16);
numeric_value!(i32, Int32);
numeric_value!(i64, Int64);

/// Declares [`Values`], one variant per [`ChannelFormat`], with the methods that do the
/// same to every variant's vector.
macro_rules! values {
    ($($variant:ident($t:ty)),*) => {
        /// Sample values of one stream, row-major: sample 0's channels, then sample 1's, ….
        #[derive(Clone, Debug, PartialEq)]
        pub enum Values {
            $($variant(Vec<$t>),)*
        }

        impl Values {
            /// No values, of the given format.
            pub fn empty(format: ChannelFormat) -> Values {
                match format {
                    $(ChannelFormat::$variant => Values::$variant(Vec::new()),)*
                }
            }

            /// The format these values are in.
            pub fn format(&self) -> ChannelFormat {
                match self {
                    $(Values::$variant(_) => ChannelFormat::$variant,)*
                }
            }

            /// Number of values (samples × channels).
            pub fn len(&self) -> usize {
                match self {
                    $(Values::$variant(v) => v.len(),)*
                }
            }

            /// Moves `other`'s values onto the end; false (and nothing moved) if formats
            /// differ.
            pub fn append(&mut self, other: &mut Values) -> bool {
                match (self, other) {
                    $((Values::$variant(a), Values::$variant(b)) => a.append(b),)*
                    _ => return false,
                }
                true
            }

            /// Keeps the first `len` values.
            pub fn truncate(&mut self, len: usize) {
                match self {
                    $(Values::$variant(v) => v.truncate(len),)*
                }
            }

            /// Splits at value `at`: `self` keeps the values before it, the rest is
            /// returned.
            pub fn split_off(&mut self, at: usize) -> Values {
                match self {
                    $(Values::$variant(v) => Values::$variant(v.split_off(at)),)*
                }
            }
        }
    };
}

values!(
    Float32(f32),
    Double64(f64),
    Int8(i8),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    String(String)
);

impl Values {
    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as `T` if they are of `T`'s format.
    pub fn as_slice<T: NumericValue>(&self) -> Option<&[T]> {
        T::slice(self)
    }

    /// The values of a string stream.
    pub fn as_strings(&self) -> Option<&[String]> {
        match self {
            Values::String(v) => Some(v),
            _ => None,
        }
    }
}
