//! Publishing a replayed stream: the LSL outlet a file's stream is sent on, over
//! [`crate::lsl::Outlet`].
//!
//! Start-up ([`publish`]) allocates: it rewrites the header ([`super::header`]) and
//! creates the outlet. [`StreamOutlet::push`] reuses its buffers: it allocates only
//! while a string or int64 chunk is larger than any pushed before on that stream.

use std::ops::Range;
use std::path::Path;

use super::ReplayError;
use crate::lsl::header::{outlet_header, set_field};
use crate::lsl::{self, LslError, StringChunk};
use crate::xdf::{ChannelFormat, StreamId, StreamInfo, Values};

/// Why an int64 stream is published as double64.
pub(super) const INT64_NOTE: &str = "int64 published as double64, exact to 2^53: the bundled liblsl 1.13 cannot deliver int64 samples to an inlet";

/// Samples (or seconds, for a regular stream) an outlet buffers for a slow consumer.
const MAX_BUFFERED_S: i32 = 360;

/// A published stream.
pub(super) struct StreamOutlet {
    outlet: lsl::Outlet,
    /// Pointers of a string chunk, reused.
    strings: StringChunk,
    /// An int64 chunk converted to double64, reused.
    conv: Vec<f64>,
}

/// Publishes file stream `id` with its header as [`outlet_header`] rewrites it, int64
/// as double64, and `name_suffix` appended to its name and `source_id` (if not empty).
/// Also returns how the published stream differs from the file's, if it does.
pub(super) fn publish(
    info: &StreamInfo,
    id: StreamId,
    base_dir: &Path,
    name_suffix: &str,
) -> Result<(StreamOutlet, Option<&'static str>), ReplayError> {
    let mut note = None;
    let mut xml = outlet_header(info.xml(), id, base_dir);
    if info.channel_format() == ChannelFormat::Int64 {
        set_field(&mut xml, "channel_format", "double64");
        note = Some(INT64_NOTE);
    }
    if !name_suffix.is_empty() {
        set_field(&mut xml, "name", &format!("{}{name_suffix}", info.name()));
        set_field(
            &mut xml,
            "source_id",
            &format!("{}{name_suffix}", info.source_id()),
        );
    }
    let outlet =
        StreamOutlet::create(&xml, info.channel_count()).map_err(|reason| ReplayError::Outlet {
            stream: id.0,
            name: info.name().to_string(),
            reason,
        })?;
    Ok((outlet, note))
}

impl StreamOutlet {
    /// An outlet for a header XML; the error says why, for [`ReplayError::Outlet`].
    fn create(xml: &str, channels: usize) -> Result<StreamOutlet, String> {
        if channels == 0 {
            return Err("it has no channels".into());
        }
        let info = lsl::StreamInfo::from_xml(xml).map_err(|e| match e {
            LslError::XmlNul => "its header holds a NUL byte".to_string(),
            LslError::XmlRefused(why) => format!("liblsl refuses its header: {why}"),
            _ => "liblsl cannot parse its header".to_string(),
        })?;
        // Sender's chunking.
        let outlet = lsl::Outlet::create(&info, 0, MAX_BUFFERED_S)
            .map_err(|_| "liblsl could not create the outlet".to_string())?;
        Ok(StreamOutlet {
            outlet,
            strings: StringChunk::default(),
            conv: Vec::new(),
        })
    }

    pub(super) fn has_consumers(&self) -> bool {
        self.outlet.have_consumers()
    }

    /// Pushes `values[range]` (whole samples) with one stamp per sample in one chunk;
    /// `Err` holds liblsl's error code. int64 values go out as double64 (see
    /// [`INT64_NOTE`]).
    pub(super) fn push(
        &mut self,
        values: &Values,
        range: Range<usize>,
        stamps: &[f64],
    ) -> Result<(), i32> {
        let out = &self.outlet;
        match values {
            Values::Float32(v) => out.push_chunk(&v[range], stamps),
            Values::Double64(v) => out.push_chunk(&v[range], stamps),
            Values::Int32(v) => out.push_chunk(&v[range], stamps),
            Values::Int16(v) => out.push_chunk(&v[range], stamps),
            Values::Int8(v) => out.push_chunk(&v[range], stamps),
            Values::Int64(v) => {
                self.conv.clear();
                self.conv.extend(v[range].iter().map(|&x| x as f64));
                out.push_chunk(&self.conv, stamps)
            }
            Values::String(v) => out.push_strings(&v[range], stamps, &mut self.strings),
        }
    }
}
