//! liblsl, wrapped: every call monkeysee makes into the Lab Streaming Layer C library
//! (`lsl-sys`) and every handle it owns lives here, behind a safe API. Outside this
//! module nothing is `unsafe`.
//!
//! - [`StreamInfo`]: an owned `lsl_streaminfo` (from a resolve, or parsed from header
//!   XML), with the fields [`StreamDescription`] shows;
//! - [`resolve_unique`]: the one stream an XPath predicate selects, or why there is none;
//!   [`resolve_all`]: every stream it matches (for the stream watch);
//! - [`Inlet`]: an owned `lsl_inlet` (open, clock sync, pulls, the full header XML);
//! - [`Outlet`]: an owned `lsl_outlet` (create, consumers, chunk pushes);
//! - [`local_clock`] and [`protocol_version`].
//!
//! Each handle is destroyed exactly once, by its `Drop`. [`Inlet`] is `Send` (see its
//! SAFETY note: the stream watch opens replacement inlets for the ingest thread); the
//! other handles are not: create each in the thread that uses it.
//!
//! Real-time contract: resolving, creating and opening allocate (and block up to their
//! timeouts), and so do [`StreamInfo::describe`], [`Inlet::full_info_xml`] and
//! [`Inlet::pull_strings`] (liblsl hands strings over as copies). Pulling numbers into
//! preallocated buffers ([`Inlet::pull_sample_f32`], [`Inlet::pull_chunk_f32`]) never
//! allocates on the Rust side, nor does pushing numbers ([`Outlet::push_chunk`]);
//! [`Outlet::push_strings`] reuses its [`StringChunk`]'s buffers, which grow only to
//! the largest chunk pushed. [`local_clock`] is a plain clock read.

pub mod header;

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_ulong};
use std::time::Instant;

/// A stream's value type as liblsl names it.
pub use ::lsl::ChannelFormat;

/// What liblsl could not do. Only [`LslError::NotFound`] can go away by trying again
/// (once the source runs); the others need a different predicate, header or stream.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LslError {
    #[error("no LSL stream matches {predicate} (waited {waited:.1} s)")]
    NotFound { predicate: String, waited: f64 },
    /// `list` describes each match, `; `-separated.
    #[error("{count} LSL streams match {predicate}: {list}")]
    Ambiguous {
        predicate: String,
        count: usize,
        list: String,
    },
    #[error("invalid LSL predicate {0:?}")]
    Predicate(String),
    #[error("the header XML holds a NUL byte")]
    XmlNul,
    #[error("liblsl cannot parse the header XML")]
    XmlUnparsed,
    /// liblsl parsed the header but refuses its content (its reason).
    #[error("liblsl refuses the header: {0}")]
    XmlRefused(String),
    /// A call failed; `what` names it, `code` is liblsl's error code (0 if it gave none).
    #[error("liblsl could not {what} (error code {code})")]
    Call { what: &'static str, code: i32 },
}

/// What was found on the network for a selector.
#[derive(Debug, Clone)]
pub struct StreamDescription {
    pub name: String,
    pub stream_type: String,
    pub source_id: String,
    pub hostname: String,
    pub channels: usize,
    pub nominal_rate: f64,
    /// liblsl's unique id of this outlet instance (a restarted source gets a new one).
    pub uid: String,
    /// The stream's full header XML (`lsl_get_fullinfo`, with `<desc>`: channel labels,
    /// stimulus folder, …) once an inlet is open; `None` before, or if liblsl did not
    /// deliver it in time.
    pub full_xml: Option<String>,
}

impl std::fmt::Display for StreamDescription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "'{}' (type {}, source_id '{}', host {}, {} ch @ {} Hz)",
            self.name,
            self.stream_type,
            self.source_id,
            self.hostname,
            self.channels,
            self.nominal_rate
        )
    }
}

/// Copies a string liblsl owns.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string that stays valid during the call.
unsafe fn copy_str(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: non-null and NUL-terminated per the caller's contract.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Copies a string liblsl allocated for us, then frees it.
///
/// # Safety
/// `p` must be null or a NUL-terminated string allocated by liblsl and owned by the
/// caller, not used again after this call.
unsafe fn take_str(p: *mut c_char) -> String {
    // SAFETY: per the caller's contract.
    let text = unsafe { copy_str(p) };
    if !p.is_null() {
        // SAFETY: allocated by liblsl, owned by us, freed once (the caller drops it).
        unsafe { lsl_sys::lsl_destroy_string(p) };
    }
    text
}

/// An owned `lsl_streaminfo` handle.
pub struct StreamInfo(lsl_sys::lsl_streaminfo);

impl StreamInfo {
    /// Parses a stream header as liblsl does. A header liblsl parses but finds invalid
    /// (e.g. an empty name, a bad version) is [`LslError::XmlRefused`].
    pub fn from_xml(xml: &str) -> Result<StreamInfo, LslError> {
        let text = CString::new(xml).map_err(|_| LslError::XmlNul)?;
        // SAFETY: a valid NUL-terminated string; liblsl copies it and returns an owned
        // handle (or null), which the StreamInfo destroys.
        let handle = unsafe { lsl_sys::lsl_streaminfo_from_xml(text.as_ptr()) };
        if handle.is_null() {
            return Err(LslError::XmlUnparsed);
        }
        let info = StreamInfo(handle);
        // liblsl reports a header it refuses in the name it gives the stream.
        if let Some(why) = info.name().strip_prefix("(invalid: ") {
            return Err(LslError::XmlRefused(why.trim_end_matches(')').to_string()));
        }
        Ok(info)
    }

    /// `<name>`.
    pub fn name(&self) -> String {
        // SAFETY: self.0 is valid while self lives; the string is liblsl's, copied now.
        unsafe { copy_str(lsl_sys::lsl_get_name(self.0)) }
    }

    /// `<channel_count>`.
    pub fn channel_count(&self) -> usize {
        // SAFETY: valid handle.
        unsafe { lsl_sys::lsl_get_channel_count(self.0) }.max(0) as usize
    }

    /// `<channel_format>`.
    pub fn channel_format(&self) -> ChannelFormat {
        // SAFETY: valid handle.
        ChannelFormat::from_native(unsafe { lsl_sys::lsl_get_channel_format(self.0) })
    }

    /// The fields a selector is checked against (no full XML: see [`Inlet::full_info_xml`]).
    pub fn describe(&self) -> StreamDescription {
        // SAFETY: self.0 is a valid streaminfo handle for the lifetime of self; the
        // getters return library-owned strings that are copied at once.
        unsafe {
            StreamDescription {
                name: copy_str(lsl_sys::lsl_get_name(self.0)),
                stream_type: copy_str(lsl_sys::lsl_get_type(self.0)),
                source_id: copy_str(lsl_sys::lsl_get_source_id(self.0)),
                hostname: copy_str(lsl_sys::lsl_get_hostname(self.0)),
                channels: self.channel_count(),
                nominal_rate: lsl_sys::lsl_get_nominal_srate(self.0),
                uid: copy_str(lsl_sys::lsl_get_uid(self.0)),
                full_xml: None,
            }
        }
    }

    /// The header as XML; `None` if liblsl returns nothing.
    pub fn to_xml(&self) -> Option<String> {
        // SAFETY: valid handle; lsl_get_xml returns a string we own, freed by take_str.
        let xml = unsafe { lsl_sys::lsl_get_xml(self.0) };
        // SAFETY: null or ours, used only here.
        (!xml.is_null()).then(|| unsafe { take_str(xml) })
    }
}

impl Drop for StreamInfo {
    fn drop(&mut self) {
        // SAFETY: we own the handle and drop it once.
        unsafe { lsl_sys::lsl_destroy_streaminfo(self.0) }
    }
}

/// Finds exactly one stream for an XPath 1.0 predicate (e.g. `name='MUA'`). Waits up
/// to `timeout` seconds for the first; a second match within the first second makes
/// the choice ambiguous, unless every match is the same outlet (same name, source_id
/// and host: liblsl can hear one outlet twice, over IPv4 and IPv6).
pub fn resolve_unique(predicate: &str, timeout: f64) -> Result<StreamInfo, LslError> {
    let started = Instant::now();
    let mut found = resolve(predicate, timeout, started)?;
    match found.len() {
        0 => Err(LslError::NotFound {
            predicate: predicate.to_string(),
            waited: started.elapsed().as_secs_f64(),
        }),
        1 => Ok(found.swap_remove(0)),
        count => {
            let descs: Vec<StreamDescription> = found.iter().map(StreamInfo::describe).collect();
            let same = descs.iter().all(|d| {
                d.name == descs[0].name
                    && d.source_id == descs[0].source_id
                    && d.hostname == descs[0].hostname
            });
            if same {
                return Ok(found.swap_remove(0));
            }
            Err(LslError::Ambiguous {
                predicate: predicate.to_string(),
                count,
                list: descs
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            })
        }
    }
}

/// Every stream matching `predicate` that answers within `wait` seconds (at most 16;
/// one outlet heard over IPv4 and IPv6 appears twice). Allocates; for watching the
/// network, not for a hot loop.
pub fn resolve_all(predicate: &str, wait: f64) -> Result<Vec<StreamInfo>, LslError> {
    resolve(predicate, wait, Instant::now())
}

/// Every stream matching `predicate` that answers in the first round that finds any
/// (at most 16), or none once `timeout` seconds have passed since `started`.
fn resolve(predicate: &str, timeout: f64, started: Instant) -> Result<Vec<StreamInfo>, LslError> {
    let pred = CString::new(predicate).map_err(|_| LslError::Predicate(predicate.to_string()))?;
    let mut found: Vec<StreamInfo> = Vec::new();
    let mut buf: [lsl_sys::lsl_streaminfo; 16] = [std::ptr::null_mut(); 16];
    while found.is_empty() && started.elapsed().as_secs_f64() < timeout {
        let wait = (timeout - started.elapsed().as_secs_f64()).clamp(0.05, 1.0);
        // SAFETY: buf has 16 slots; liblsl fills at most buffer_elements handles, which
        // we then own (each destroyed by StreamInfo's Drop).
        let n = unsafe {
            lsl_sys::lsl_resolve_bypred(buf.as_mut_ptr(), buf.len() as u32, pred.as_ptr(), 2, wait)
        };
        if n < 0 {
            return Err(LslError::Predicate(predicate.to_string()));
        }
        found.extend(buf[..n as usize].iter().map(|&h| StreamInfo(h)));
    }
    Ok(found)
}

/// The outcome of pulling one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pulled {
    /// A sample arrived with this (clock-corrected, if enabled) time stamp.
    Sample(f64),
    /// Nothing arrived within the wait.
    Timeout,
    /// liblsl reports the source lost (it was not recoverable).
    Lost,
}

impl Pulled {
    fn from_call(stamp: f64, ec: i32) -> Pulled {
        if ec == lsl_sys::lsl_error_code_t_lsl_lost_error {
            Pulled::Lost
        } else if stamp == 0.0 {
            Pulled::Timeout
        } else {
            Pulled::Sample(stamp)
        }
    }
}

/// An owned `lsl_inlet` handle.
pub struct Inlet {
    handle: lsl_sys::lsl_inlet,
    /// The stream's channel count, for string pulls.
    channels: usize,
    /// Slots liblsl fills with the strings of one sample; null between pulls.
    strings: Vec<*mut c_char>,
}

impl Inlet {
    /// An inlet on a resolved stream, buffering up to `max_buflen` seconds, with the
    /// sender's chunking, recovering when the stream has a `source_id`. Nothing is
    /// received before [`Inlet::open_stream`].
    pub fn create(info: &StreamInfo, max_buflen: i32) -> Result<Inlet, LslError> {
        // SAFETY: info is a valid streaminfo; the inlet copies what it needs.
        let handle = unsafe { lsl_sys::lsl_create_inlet(info.0, max_buflen, 0, 1) };
        if handle.is_null() {
            return Err(LslError::Call {
                what: "create an inlet",
                code: 0,
            });
        }
        Ok(Inlet {
            handle,
            channels: info.channel_count(),
            strings: Vec::new(),
        })
    }

    /// Turns on liblsl's clock synchronisation: stamps then arrive in this machine's
    /// [`local_clock`] time base. (liblsl refuses only unknown flags, so this cannot fail.)
    pub fn enable_clock_sync(&mut self) {
        // SAFETY: valid inlet handle and a flag liblsl knows.
        unsafe {
            lsl_sys::lsl_set_postprocessing(
                self.handle,
                lsl_sys::lsl_processing_options_t_proc_clocksync,
            )
        };
    }

    /// Subscribes to the data: everything sent after this returns is received. Waits up
    /// to `timeout` seconds.
    pub fn open_stream(&mut self, timeout: f64) -> Result<(), LslError> {
        let mut ec = 0i32;
        // SAFETY: valid inlet handle; ec is a valid out-pointer.
        unsafe { lsl_sys::lsl_open_stream(self.handle, timeout, &mut ec) };
        match ec {
            0 => Ok(()),
            code => Err(LslError::Call {
                what: "open the stream",
                code,
            }),
        }
    }

    /// The sender's clock offset to [`local_clock`], seconds, measured now if liblsl has
    /// none yet (waiting up to `timeout` seconds).
    pub fn time_correction(&mut self, timeout: f64) -> Result<f64, LslError> {
        let mut ec = 0i32;
        // SAFETY: valid inlet handle and out-pointer.
        let offset = unsafe { lsl_sys::lsl_time_correction(self.handle, timeout, &mut ec) };
        match ec {
            0 => Ok(offset),
            code => Err(LslError::Call {
                what: "measure the clock offset",
                code,
            }),
        }
    }

    /// The stream's full header XML (with `<desc>`), or `None` if liblsl cannot deliver
    /// it within `timeout` seconds.
    pub fn full_info_xml(&mut self, timeout: f64) -> Option<String> {
        let mut ec = 0i32;
        // SAFETY: valid inlet handle and out-pointer; the returned handle is ours,
        // destroyed by StreamInfo's Drop.
        let info = unsafe { lsl_sys::lsl_get_fullinfo(self.handle, timeout, &mut ec) };
        if ec != 0 || info.is_null() {
            return None;
        }
        StreamInfo(info).to_xml()
    }

    /// Waits up to `wait` seconds for one sample and writes its values into `out`,
    /// which must hold exactly the stream's channel count (liblsl refuses other sizes:
    /// that pull is a [`Pulled::Timeout`]). Never allocates.
    pub fn pull_sample_f32(&mut self, out: &mut [f32], wait: f64) -> Pulled {
        let mut ec = 0i32;
        // SAFETY: valid handle; liblsl writes at most out.len() values into out.
        let stamp = unsafe {
            lsl_sys::lsl_pull_sample_f(
                self.handle,
                out.as_mut_ptr(),
                out.len() as i32,
                wait,
                &mut ec,
            )
        };
        Pulled::from_call(stamp, ec)
    }

    /// Takes up to `stamps.len()` samples that arrive within `wait` seconds (0: those
    /// ready now) into `values` (`[samples][channels]`, exactly `stamps.len()` samples
    /// long) and `stamps`. Returns how many values were written, whole samples; 0 also
    /// when liblsl refuses the buffer sizes. Never allocates.
    pub fn pull_chunk_f32(&mut self, values: &mut [f32], stamps: &mut [f64], wait: f64) -> usize {
        let mut ec = 0i32;
        // SAFETY: valid handle; liblsl writes at most values.len() values and
        // stamps.len() stamps into the two buffers.
        let written = unsafe {
            lsl_sys::lsl_pull_chunk_f(
                self.handle,
                values.as_mut_ptr(),
                stamps.as_mut_ptr(),
                values.len() as c_ulong,
                stamps.len() as c_ulong,
                wait,
                &mut ec,
            )
        };
        written as usize
    }

    /// Waits up to `wait` seconds for one sample of a string stream and puts its
    /// values in `out` (one per channel, at least one); `out` is left empty unless a
    /// sample arrived. Allocates the strings.
    pub fn pull_strings(&mut self, out: &mut Vec<String>, wait: f64) -> Pulled {
        out.clear();
        let channels = self.channels.max(1);
        self.strings.resize(channels, std::ptr::null_mut());
        let mut ec = 0i32;
        // SAFETY: valid handle; strings has `channels` null slots, into which liblsl
        // writes at most `channels` strings it allocates for us (freed below).
        let stamp = unsafe {
            lsl_sys::lsl_pull_sample_str(
                self.handle,
                self.strings.as_mut_ptr(),
                channels as i32,
                wait,
                &mut ec,
            )
        };
        let pulled = Pulled::from_call(stamp, ec);
        for slot in self.strings.iter_mut() {
            // SAFETY: each slot is null or a string liblsl allocated for this pull, ours;
            // it is taken once and the slot nulled.
            let text = unsafe { take_str(*slot) };
            *slot = std::ptr::null_mut();
            if matches!(pulled, Pulled::Sample(_)) {
                out.push(text);
            }
        }
        pulled
    }
}

// SAFETY: liblsl does not tie an inlet to the thread that created it (its own worker
// threads are internal); this wrapper owns the handle alone and needs `&mut self` for
// every call, so moving it to another thread (the stream watch opens a replacement
// inlet and hands it to the ingest thread, which hands the old one back to be dropped
// there: `lsl_destroy_inlet` blocks while liblsl joins its threads) never lets two
// threads use it at once. The string slots are null between pulls.
unsafe impl Send for Inlet {}

impl Drop for Inlet {
    fn drop(&mut self) {
        // SAFETY: we own the inlet and destroy it once; no string slot is held (each
        // pull frees them).
        unsafe { lsl_sys::lsl_destroy_inlet(self.handle) }
    }
}

/// A numeric value type an [`Outlet`] can push in chunks. Sealed: implemented for
/// `f32`, `f64`, `i32`, `i16` and `i8`.
pub trait ChunkValue: Copy + sealed::Sealed {
    /// Calls liblsl's `lsl_push_chunk_*tnp` for this type.
    ///
    /// # Safety
    /// `outlet` is a valid outlet; `data` holds `n` values, a whole number of samples
    /// of the outlet's channel count, and `stamps` one stamp per sample.
    #[doc(hidden)]
    unsafe fn push_chunk(
        outlet: lsl_sys::lsl_outlet,
        data: *const Self,
        n: c_ulong,
        stamps: *const f64,
    ) -> i32;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! chunk_value {
    ($t:ty, $push:ident) => {
        impl sealed::Sealed for $t {}
        impl ChunkValue for $t {
            unsafe fn push_chunk(
                outlet: lsl_sys::lsl_outlet,
                data: *const $t,
                n: c_ulong,
                stamps: *const f64,
            ) -> i32 {
                // SAFETY: per the trait's contract; liblsl copies the values and stamps
                // before it returns. Pushthrough on: the chunk is sent at once.
                unsafe { lsl_sys::$push(outlet, data.cast(), n, stamps, 1) }
            }
        }
    };
}

chunk_value!(f32, lsl_push_chunk_ftnp);
chunk_value!(f64, lsl_push_chunk_dtnp);
chunk_value!(i32, lsl_push_chunk_itnp);
chunk_value!(i16, lsl_push_chunk_stnp);
chunk_value!(i8, lsl_push_chunk_ctnp);

/// Reused pointer and length buffers for pushing string chunks.
#[derive(Default)]
pub struct StringChunk {
    ptrs: Vec<*const c_char>,
    lens: Vec<u32>,
}

impl StringChunk {
    /// Points at `values` (each sent with its length): no allocation once the buffers
    /// have grown to their count.
    fn fill<'a>(&mut self, values: impl Iterator<Item = &'a [u8]>) {
        self.ptrs.clear();
        self.lens.clear();
        for v in values {
            self.ptrs.push(v.as_ptr().cast::<c_char>());
            self.lens.push(u32::try_from(v.len()).unwrap_or(u32::MAX));
        }
    }
}

/// A liblsl push's return code as a result: `Err` holds a negative code.
fn pushed(code: i32) -> Result<(), i32> {
    if code < 0 {
        Err(code)
    } else {
        Ok(())
    }
}

/// An owned `lsl_outlet` handle: a stream others can resolve and pull.
pub struct Outlet {
    handle: lsl_sys::lsl_outlet,
    /// The published stream's channel count: every push is whole samples of it.
    channels: usize,
}

impl Outlet {
    /// Publishes a stream with `info`'s header (liblsl copies it and gives the outlet a
    /// fresh uid, session fields and ports), sending chunks as pushed (`chunk_size` 0:
    /// the sender's chunking) and buffering up to `max_buffered` seconds (or hundreds of
    /// samples, for an irregular stream).
    pub fn create(
        info: &StreamInfo,
        chunk_size: i32,
        max_buffered: i32,
    ) -> Result<Outlet, LslError> {
        // SAFETY: info is a valid streaminfo; the outlet copies it.
        let handle = unsafe { lsl_sys::lsl_create_outlet(info.0, chunk_size, max_buffered) };
        if handle.is_null() {
            return Err(LslError::Call {
                what: "create the outlet",
                code: 0,
            });
        }
        Ok(Outlet {
            handle,
            channels: info.channel_count(),
        })
    }

    /// Whether an inlet is connected.
    pub fn have_consumers(&self) -> bool {
        // SAFETY: valid outlet handle.
        unsafe { lsl_sys::lsl_have_consumers(self.handle) != 0 }
    }

    /// Whether `values` (`[samples][channels]`) holds exactly one sample per stamp.
    fn whole_samples(&self, values: usize, stamps: usize) -> Result<c_ulong, i32> {
        if self.channels == 0 || values != stamps * self.channels {
            return Err(lsl_sys::lsl_error_code_t_lsl_argument_error);
        }
        Ok(values as c_ulong)
    }

    /// Sends `values` (`[samples][channels]`, one sample per stamp) with their stamps in
    /// one chunk. `Err` holds liblsl's error code; a chunk that is not one sample per
    /// stamp is refused with `lsl_argument_error`. Never allocates.
    pub fn push_chunk<T: ChunkValue>(&self, values: &[T], stamps: &[f64]) -> Result<(), i32> {
        let n = self.whole_samples(values.len(), stamps.len())?;
        // SAFETY: valid outlet; values holds n values, stamps.len() whole samples of the
        // outlet's channel count (checked above), and stamps one per sample.
        pushed(unsafe { T::push_chunk(self.handle, values.as_ptr(), n, stamps.as_ptr()) })
    }

    /// One sample of a string stream from byte strings (each sent with its length, so
    /// it may hold any bytes), stamped `stamp` and pushed through at once. `scratch`
    /// holds the pointers, reused from push to push: no allocation once it has grown to
    /// the channel count. `lsl_argument_error` when `values` is not one per channel.
    pub fn push_sample_bytes<'a>(
        &self,
        values: impl Iterator<Item = &'a [u8]>,
        stamp: f64,
        scratch: &mut StringChunk,
    ) -> Result<(), i32> {
        scratch.fill(values);
        if scratch.ptrs.len() != self.channels {
            return Err(lsl_sys::lsl_error_code_t_lsl_argument_error);
        }
        // SAFETY: valid outlet; ptrs and lens hold one entry per channel (checked), each
        // pointer to at least its length in bytes, alive for the call (the iterator's
        // items borrow from the caller). liblsl copies the strings.
        pushed(unsafe {
            lsl_sys::lsl_push_sample_buftp(
                self.handle,
                scratch.ptrs.as_mut_ptr(),
                scratch.lens.as_ptr(),
                stamp,
                1,
            )
        })
    }

    /// [`Outlet::push_chunk`] for a string stream. Each string is sent with its length
    /// (it may hold NUL bytes); `scratch` holds the pointers, reused from push to push.
    pub fn push_strings(
        &self,
        values: &[String],
        stamps: &[f64],
        scratch: &mut StringChunk,
    ) -> Result<(), i32> {
        let n = self.whole_samples(values.len(), stamps.len())?;
        scratch.fill(values.iter().map(String::as_bytes));
        // SAFETY: valid outlet; ptrs and lens hold n entries, each pointer to a string of
        // at least its length in bytes, alive for the call (values is borrowed); whole
        // samples with one stamp each (checked above). liblsl copies everything.
        pushed(unsafe {
            lsl_sys::lsl_push_chunk_buftnp(
                self.handle,
                scratch.ptrs.as_mut_ptr(),
                scratch.lens.as_ptr(),
                n,
                stamps.as_ptr(),
                1,
            )
        })
    }
}

impl Drop for Outlet {
    fn drop(&mut self) {
        // SAFETY: we own the outlet and destroy it once.
        unsafe { lsl_sys::lsl_destroy_outlet(self.handle) }
    }
}

/// liblsl's clock: seconds, the time base of clock-corrected stamps.
pub fn local_clock() -> f64 {
    // SAFETY: no arguments, no state.
    unsafe { lsl_sys::lsl_local_clock() }
}

/// The LSL protocol version liblsl speaks, times 100 (e.g. 110 for 1.10).
pub fn protocol_version() -> i32 {
    // SAFETY: no arguments, no state.
    unsafe { lsl_sys::lsl_protocol_version() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header liblsl publishes: two float32 channels, irregular rate, every
    /// instance field present.
    fn header(channels: usize) -> String {
        format!(
            "<?xml version=\"1.0\"?><info><name>lsl-unit</name><type>Test</type>\
             <channel_count>{channels}</channel_count><nominal_srate>0</nominal_srate>\
             <channel_format>float32</channel_format><source_id>lsl-unit-test</source_id>\
             <version>1.10</version><created_at>0</created_at><uid>u</uid>\
             <session_id>default</session_id><hostname>h</hostname>\
             <v4data_port>0</v4data_port><v4service_port>0</v4service_port>\
             <v6data_port>0</v6data_port><v6service_port>0</v6service_port><desc/></info>"
        )
    }

    #[test]
    fn a_header_is_read_back_with_its_fields() {
        let info = StreamInfo::from_xml(&header(2)).unwrap();
        assert_eq!(info.name(), "lsl-unit");
        assert_eq!(info.channel_count(), 2);
        assert_eq!(info.channel_format(), ChannelFormat::Float32);
        let d = info.describe();
        assert_eq!(
            (d.stream_type.as_str(), d.source_id.as_str()),
            ("Test", "lsl-unit-test")
        );
        assert!(info.to_xml().unwrap().contains("<name>lsl-unit</name>"));
    }

    #[test]
    fn a_header_with_a_nul_byte_is_refused_before_liblsl_sees_it() {
        assert_eq!(
            StreamInfo::from_xml("<info>\0</info>").err(),
            Some(LslError::XmlNul)
        );
    }

    #[test]
    fn an_outlet_takes_whole_samples_with_one_stamp_each_and_refuses_the_rest() {
        let info = StreamInfo::from_xml(&header(2)).unwrap();
        let outlet = Outlet::create(&info, 0, 1).unwrap();
        let argument = lsl_sys::lsl_error_code_t_lsl_argument_error;
        assert_eq!(
            outlet.push_chunk(&[1.0f32, 2.0, 3.0, 4.0], &[1.0, 2.0]),
            Ok(())
        );
        assert_eq!(
            outlet.push_chunk(&[1.0f32, 2.0, 3.0], &[1.0]),
            Err(argument)
        );
        assert_eq!(
            outlet.push_chunk(&[1.0f32, 2.0], &[1.0, 2.0]),
            Err(argument)
        );
        let mut scratch = StringChunk::default();
        let strings = ["a".to_string(), "b".to_string()];
        assert_eq!(
            outlet.push_strings(&strings, &[1.0, 2.0], &mut scratch),
            Err(argument)
        );
    }
}
