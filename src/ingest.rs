//! Ingest: Lab Streaming Layer inlets for MUA and stimulus markers.
//!
//! Real-time contract: [`MuaInlet::connect`] and [`SampleRing::new`] allocate; after
//! that, [`MuaInlet::pull`], [`SampleProducer::push_chunk`] and [`hand_on`] (which
//! also feeds the recorder's ring when recording) never allocate, lock or print. The
//! MUA inlet is driven through the `lsl-sys` chunk functions into a
//! flat reused buffer, because the `lsl` crate's safe `pull_chunk` allocates a
//! `Vec` per sample. The marker inlet uses the safe crate: markers arrive a few
//! times a second on their own thread, off the hot path.
//!
//! Both inlets apply liblsl's clock synchronisation (`proc_clocksync`), so sample
//! and marker timestamps are in this machine's `local_clock()` time base.
//! liblsl handles are not `Send`: create each inlet inside the thread that uses it.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use crate::config::StreamSelector;
use crate::telemetry::Counters;
use crate::window::{ImageId, Onset, SampleMeta};

/// Why a stream could not be used. `retry` says whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no LSL stream matches {predicate} (waited {waited:.1} s); is the source running? Check the rig config's [streams] selectors or --mua-query/--marker-query")]
    NotFound { predicate: String, waited: f64 },
    #[error("{count} LSL streams match {predicate}: {list}; make the selector unique (name and source_id) instead of taking the first one seen")]
    Ambiguous {
        predicate: String,
        count: usize,
        list: String,
    },
    #[error("stream '{name}' has {found} channels but the rig config declares {expected} (rig.channels); use the config of the rig that is streaming, or fix the stream")]
    ChannelCount {
        name: String,
        found: usize,
        expected: usize,
    },
    #[error(
        "stream '{name}' has channel format {format}; MUA must be float32 or double64 numbers"
    )]
    Format { name: String, format: String },
    #[error("stream '{name}' has a nominal rate of {found} Hz but the rig config says {expected} Hz (rig.sampling_rate_hz)")]
    Rate {
        name: String,
        found: f64,
        expected: f64,
    },
    #[error("invalid LSL predicate {0:?}")]
    Predicate(String),
    #[error("liblsl could not {0}")]
    Lsl(&'static str),
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

/// # Safety
/// `p` must be null or a NUL-terminated string owned by liblsl.
unsafe fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: non-null and NUL-terminated per the caller's contract.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// An owned `lsl_streaminfo` handle.
struct RawInfo(lsl_sys::lsl_streaminfo);

impl RawInfo {
    fn describe(&self) -> StreamDescription {
        // SAFETY: self.0 is a valid streaminfo handle for the lifetime of self; the
        // getters return library-owned strings that we copy immediately.
        unsafe {
            StreamDescription {
                name: cstr(lsl_sys::lsl_get_name(self.0)),
                stream_type: cstr(lsl_sys::lsl_get_type(self.0)),
                source_id: cstr(lsl_sys::lsl_get_source_id(self.0)),
                hostname: cstr(lsl_sys::lsl_get_hostname(self.0)),
                channels: lsl_sys::lsl_get_channel_count(self.0).max(0) as usize,
                nominal_rate: lsl_sys::lsl_get_nominal_srate(self.0),
                full_xml: None,
            }
        }
    }

    fn format(&self) -> lsl_sys::lsl_channel_format_t {
        // SAFETY: valid handle.
        unsafe { lsl_sys::lsl_get_channel_format(self.0) }
    }
}

impl Drop for RawInfo {
    fn drop(&mut self) {
        // SAFETY: we own the handle and drop it once.
        unsafe { lsl_sys::lsl_destroy_streaminfo(self.0) }
    }
}

/// Finds exactly one stream for a selector. Waits up to `timeout` seconds for the
/// first; a second match within the first second makes the choice ambiguous.
fn resolve_unique(selector: &StreamSelector, timeout: f64) -> Result<RawInfo, IngestError> {
    let predicate = selector.predicate();
    let pred =
        CString::new(predicate.clone()).map_err(|_| IngestError::Predicate(predicate.clone()))?;
    let started = Instant::now();
    let mut found: Vec<RawInfo> = Vec::new();
    let mut buf: [lsl_sys::lsl_streaminfo; 16] = [std::ptr::null_mut(); 16];
    while found.is_empty() && started.elapsed().as_secs_f64() < timeout {
        let wait = (timeout - started.elapsed().as_secs_f64()).clamp(0.05, 1.0);
        // SAFETY: buf has 16 slots; liblsl fills at most buffer_elements handles that
        // we then own (and free through RawInfo's Drop).
        let n = unsafe {
            lsl_sys::lsl_resolve_bypred(buf.as_mut_ptr(), buf.len() as u32, pred.as_ptr(), 2, wait)
        };
        if n < 0 {
            return Err(IngestError::Predicate(predicate));
        }
        found.extend(buf[..n as usize].iter().map(|&h| RawInfo(h)));
    }
    match found.len() {
        0 => Err(IngestError::NotFound {
            predicate,
            waited: started.elapsed().as_secs_f64(),
        }),
        1 => Ok(found.pop().expect("one element")),
        n => {
            let descs: Vec<StreamDescription> = found.iter().map(RawInfo::describe).collect();
            // The same outlet can answer twice (IPv4 and IPv6): that is one stream.
            let same = descs.iter().all(|d| {
                d.name == descs[0].name
                    && d.source_id == descs[0].source_id
                    && d.hostname == descs[0].hostname
            });
            if same {
                return Ok(found.swap_remove(0));
            }
            Err(IngestError::Ambiguous {
                predicate,
                count: n,
                list: descs
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            })
        }
    }
}

/// An open LSL inlet on the MUA stream, pulling into reused buffers.
pub struct MuaInlet {
    handle: lsl_sys::lsl_inlet,
    pub description: StreamDescription,
    channels: usize,
    /// `[max_chunk][channels]` values.
    values: Vec<f32>,
    stamps: Vec<f64>,
    max_chunk: usize,
}

/// The result of one [`MuaInlet::pull`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pull {
    /// This many samples are in [`MuaInlet::values`] / [`MuaInlet::stamps`].
    Samples(usize),
    /// Nothing arrived within the wait.
    Timeout,
    /// liblsl reports the source lost (it was not recoverable).
    Lost,
}

impl MuaInlet {
    /// Resolves the selector's unique stream, checks it against the rig, opens it
    /// (so nothing sent after this returns is missed) and enables clock sync.
    pub fn connect(
        selector: &StreamSelector,
        expected_channels: usize,
        expected_rate: f64,
        timeout: f64,
        max_chunk: usize,
    ) -> Result<MuaInlet, IngestError> {
        let info = resolve_unique(selector, timeout)?;
        let description = info.describe();
        if description.channels != expected_channels {
            return Err(IngestError::ChannelCount {
                name: description.name,
                found: description.channels,
                expected: expected_channels,
            });
        }
        let fmt = info.format();
        if fmt != lsl_sys::lsl_channel_format_t_cft_float32
            && fmt != lsl_sys::lsl_channel_format_t_cft_double64
        {
            return Err(IngestError::Format {
                name: description.name,
                format: format!("{:?}", lsl::ChannelFormat::from_native(fmt)),
            });
        }
        if description.nominal_rate > 0.0
            && (description.nominal_rate - expected_rate).abs() > 1e-6 * expected_rate
        {
            return Err(IngestError::Rate {
                name: description.name,
                found: description.nominal_rate,
                expected: expected_rate,
            });
        }
        // SAFETY: info is a valid resolved streaminfo; the inlet copies what it needs.
        // Buffer 10 s, sender's chunking, recover when the source has a source_id.
        let handle = unsafe { lsl_sys::lsl_create_inlet(info.0, 10, 0, 1) };
        if handle.is_null() {
            return Err(IngestError::Lsl("create the MUA inlet"));
        }
        let mut inlet = MuaInlet {
            handle,
            description,
            channels: expected_channels,
            values: vec![0.0; max_chunk * expected_channels],
            stamps: vec![0.0; max_chunk],
            max_chunk,
        };
        let mut ec = 0i32;
        // SAFETY: valid inlet handle; ec is a valid out-pointer.
        unsafe {
            lsl_sys::lsl_set_postprocessing(
                inlet.handle,
                lsl_sys::lsl_processing_options_t_proc_clocksync,
            );
            lsl_sys::lsl_open_stream(inlet.handle, timeout.max(1.0), &mut ec);
        }
        if ec != 0 {
            return Err(IngestError::Lsl("open the MUA stream"));
        }
        warm_up_clock_sync(inlet.handle, timeout);
        inlet.description.full_xml = full_info_xml(inlet.handle, timeout.clamp(1.0, 5.0));
        Ok(inlet)
    }

    /// Waits up to `wait` seconds for the first sample, then takes whatever else is
    /// ready, up to the chunk capacity. Never allocates.
    pub fn pull(&mut self, wait: f64) -> Pull {
        let ch = self.channels;
        let mut ec = 0i32;
        // SAFETY: values has max_chunk*ch >= ch elements; the handle is valid.
        let ts = unsafe {
            lsl_sys::lsl_pull_sample_f(
                self.handle,
                self.values.as_mut_ptr(),
                ch as i32,
                wait,
                &mut ec,
            )
        };
        if ec == lsl_sys::lsl_error_code_t_lsl_lost_error {
            return Pull::Lost;
        }
        if ts == 0.0 {
            return Pull::Timeout;
        }
        self.stamps[0] = ts;
        let rest = self.max_chunk - 1;
        if rest == 0 {
            return Pull::Samples(1);
        }
        // SAFETY: the slices past the first sample hold rest*ch values and rest stamps.
        let written = unsafe {
            lsl_sys::lsl_pull_chunk_f(
                self.handle,
                self.values.as_mut_ptr().add(ch),
                self.stamps.as_mut_ptr().add(1),
                (rest * ch) as _,
                rest as _,
                0.0,
                &mut ec,
            )
        } as usize;
        Pull::Samples(1 + written / ch)
    }

    /// Values of the last pull, `[samples][channels]`.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Timestamps of the last pull.
    pub fn stamps(&self) -> &[f64] {
        &self.stamps
    }

    pub fn channels(&self) -> usize {
        self.channels
    }
}

impl Drop for MuaInlet {
    fn drop(&mut self) {
        // SAFETY: we own the inlet and destroy it once.
        unsafe { lsl_sys::lsl_destroy_inlet(self.handle) }
    }
}

/// Obtains the first clock-offset estimate now. Otherwise liblsl's clock-sync
/// post-processing makes the first pull wait for it (measured here: the first
/// chunk arrived ≈550 ms late, every later one within ≈2 ms).
fn warm_up_clock_sync(inlet: lsl_sys::lsl_inlet, timeout: f64) {
    let mut ec = 0i32;
    // SAFETY: valid inlet handle and out-pointer. A failure here only means the
    // estimate arrives with the first pull instead, so the result is not needed.
    unsafe { lsl_sys::lsl_time_correction(inlet, timeout.max(2.0), &mut ec) };
}

/// The full header XML of an open inlet's stream (with `<desc>`), or `None` if liblsl
/// cannot deliver it within `timeout` seconds.
fn full_info_xml(inlet: lsl_sys::lsl_inlet, timeout: f64) -> Option<String> {
    let mut ec = 0i32;
    // SAFETY: valid inlet handle and out-pointer; the returned handle is owned by us
    // and destroyed by RawInfo's Drop.
    let info = unsafe { lsl_sys::lsl_get_fullinfo(inlet, timeout, &mut ec) };
    if ec != 0 || info.is_null() {
        return None;
    }
    let info = RawInfo(info);
    // SAFETY: valid info handle; lsl_get_xml returns a string we own and free with
    // lsl_destroy_string after copying it.
    unsafe {
        let xml = lsl_sys::lsl_get_xml(info.0);
        if xml.is_null() {
            return None;
        }
        let text = CStr::from_ptr(xml).to_string_lossy().into_owned();
        lsl_sys::lsl_destroy_string(xml);
        Some(text)
    }
}

/// liblsl's clock: seconds, the time base of corrected timestamps.
pub fn local_clock() -> f64 {
    // SAFETY: no arguments, no state.
    unsafe { lsl_sys::lsl_local_clock() }
}

/// The ingest→window queue: values and per-sample metadata in two SPSC rings.
pub struct SampleRing;

impl SampleRing {
    /// A ring of `capacity_samples` samples of `channels` values.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(channels: usize, capacity_samples: usize) -> (SampleProducer, SampleConsumer) {
        let (vp, vc) = HeapRb::<f32>::new(channels * capacity_samples).split();
        let (mp, mc) = HeapRb::<SampleMeta>::new(capacity_samples).split();
        (
            SampleProducer {
                values: vp,
                meta: mp,
                channels,
            },
            SampleConsumer {
                values: vc,
                meta: mc,
                channels,
            },
        )
    }
}

/// Writing end, owned by the ingest thread.
pub struct SampleProducer {
    values: HeapProd<f32>,
    meta: HeapProd<SampleMeta>,
    channels: usize,
}

impl SampleProducer {
    /// Pushes `n` samples from a `[n][channels]` buffer with their timestamps.
    /// A sample that does not fit is dropped and counted as an overrun (the
    /// producer never waits for the consumer). Never allocates.
    pub fn push_chunk(
        &mut self,
        values: &[f32],
        stamps: &[f64],
        n: usize,
        arrival: Instant,
        now_lsl: f64,
        counters: &Counters,
    ) {
        let bad = values[..n * self.channels]
            .chunks_exact(self.channels)
            .filter(|row| row.iter().any(|v| !v.is_finite()))
            .count();
        let dropped = self.push_uncounted(values, stamps, n, arrival, now_lsl);
        Counters::add(&counters.bad_samples, bad as u64);
        Counters::add(&counters.overruns, dropped as u64);
        Counters::add(&counters.samples, n as u64);
        Counters::inc(&counters.chunks);
    }

    /// Pushes `n` samples like [`SampleProducer::push_chunk`] but counts nothing;
    /// returns how many did not fit (dropped). Never allocates.
    pub fn push_uncounted(
        &mut self,
        values: &[f32],
        stamps: &[f64],
        n: usize,
        arrival: Instant,
        now_lsl: f64,
    ) -> usize {
        let ch = self.channels;
        (0..n)
            .filter(|&i| !self.push_row(&values[i * ch..(i + 1) * ch], stamps[i], arrival, now_lsl))
            .count()
    }

    /// One sample; false (and nothing pushed) when the ring has no room for it.
    fn push_row(&mut self, row: &[f32], lsl_time: f64, arrival: Instant, now_lsl: f64) -> bool {
        if self.values.vacant_len() < self.channels || self.meta.is_full() {
            return false;
        }
        // Values first, then the metadata that announces them to the consumer.
        self.values.push_slice(row);
        let _ = self.meta.try_push(SampleMeta {
            lsl_time,
            arrival,
            transport_delay: now_lsl - lsl_time,
        });
        true
    }
}

/// Hands one pulled chunk on: to the window stage's ring (counted in `samples`,
/// `overruns`, `bad_samples`) and, when recording, to the recorder's ring (its drops
/// counted in `record_overruns`). Never allocates, locks or prints.
#[allow(clippy::too_many_arguments)]
pub fn hand_on(
    values: &[f32],
    stamps: &[f64],
    n: usize,
    arrival: Instant,
    now_lsl: f64,
    window: &mut SampleProducer,
    record: Option<&mut SampleProducer>,
    counters: &Counters,
) {
    window.push_chunk(values, stamps, n, arrival, now_lsl, counters);
    if let Some(record) = record {
        let dropped = record.push_uncounted(values, stamps, n, arrival, now_lsl);
        if dropped > 0 {
            Counters::add(&counters.record_overruns, dropped as u64);
        }
    }
}

/// Reading end, owned by the window thread.
pub struct SampleConsumer {
    values: HeapCons<f32>,
    meta: HeapCons<SampleMeta>,
    channels: usize,
}

impl SampleConsumer {
    /// Pops one sample into `out` (`channels` long). Never allocates.
    pub fn pop(&mut self, out: &mut [f32]) -> Option<SampleMeta> {
        let meta = self.meta.try_pop()?;
        let got = self.values.pop_slice(&mut out[..self.channels]);
        debug_assert_eq!(got, self.channels);
        Some(meta)
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// Values per sample.
    pub fn channels(&self) -> usize {
        self.channels
    }
}

/// What the marker thread sends to the window thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MarkerEvent {
    Onset(Onset),
    Offset { lsl_time: f64 },
}

/// A marker as it arrived, for the recorder: every channel's text and the
/// clock-corrected stamp.
#[derive(Debug, Clone, PartialEq)]
pub struct RawMarker {
    pub values: Vec<String>,
    pub lsl_time: f64,
}

/// Parses one marker string: `stim_on <image_id>` or `stim_off`.
pub fn parse_marker(text: &str, lsl_time: f64) -> Option<MarkerEvent> {
    let t = text.trim();
    if let Some(id) = t.strip_prefix("stim_on") {
        let id = id.trim();
        if !t["stim_on".len()..].is_empty()
            && !t["stim_on".len()..].starts_with(char::is_whitespace)
        {
            return None;
        }
        return Some(MarkerEvent::Onset(Onset {
            lsl_time,
            image: ImageId::new(id),
        }));
    }
    if t == "stim_off" {
        return Some(MarkerEvent::Offset { lsl_time });
    }
    None
}

/// Runs the marker inlet until `stop`: resolves the selector's stream, pulls
/// string markers, parses them and hands them on. `on_live` is called once the
/// stream is open, with its description (full header included). When `record` is
/// given, every marker, unknown ones too, is also forwarded there as it arrived
/// (`try_send`: a full queue counts `record_marker_drops`).
pub fn run_markers(
    selector: &StreamSelector,
    timeout: f64,
    stop: &AtomicBool,
    counters: &Counters,
    tx: &crossbeam_channel::Sender<MarkerEvent>,
    record: Option<&crossbeam_channel::Sender<RawMarker>>,
    on_live: impl FnOnce(Result<StreamDescription, IngestError>),
) {
    let info = match resolve_unique(selector, timeout) {
        Ok(i) => i,
        Err(e) => return on_live(Err(e)),
    };
    let mut desc = info.describe();
    // SAFETY: valid resolved info; 360 s buffer, sender's chunking, recover on.
    let handle = unsafe { lsl_sys::lsl_create_inlet(info.0, 360, 0, 1) };
    if handle.is_null() {
        return on_live(Err(IngestError::Lsl("create the marker inlet")));
    }
    struct Inlet(lsl_sys::lsl_inlet);
    impl Drop for Inlet {
        fn drop(&mut self) {
            // SAFETY: owned handle, destroyed once.
            unsafe { lsl_sys::lsl_destroy_inlet(self.0) }
        }
    }
    let inlet = Inlet(handle);
    let mut ec = 0i32;
    // SAFETY: valid handle and out-pointer.
    unsafe {
        lsl_sys::lsl_set_postprocessing(inlet.0, lsl_sys::lsl_processing_options_t_proc_clocksync);
        lsl_sys::lsl_open_stream(inlet.0, timeout.max(1.0), &mut ec);
    }
    if ec != 0 {
        return on_live(Err(IngestError::Lsl("open the marker stream")));
    }
    warm_up_clock_sync(inlet.0, timeout);
    desc.full_xml = full_info_xml(inlet.0, timeout.clamp(1.0, 5.0));
    on_live(Ok(desc.clone()));
    let channels = desc.channels.max(1);
    let mut strings: Vec<*mut c_char> = vec![std::ptr::null_mut(); channels];
    while !stop.load(Ordering::Relaxed) {
        let mut ec = 0i32;
        // SAFETY: strings has `channels` slots; liblsl allocates each string, which we
        // free with lsl_destroy_string below.
        let ts = unsafe {
            lsl_sys::lsl_pull_sample_str(
                inlet.0,
                strings.as_mut_ptr(),
                channels as i32,
                0.05,
                &mut ec,
            )
        };
        if ec == lsl_sys::lsl_error_code_t_lsl_lost_error {
            Counters::inc(&counters.marker_stream_lost);
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        if ts == 0.0 {
            continue;
        }
        // SAFETY: after a successful pull, every slot holds a liblsl string.
        let raw: Vec<String> = match record {
            Some(_) => strings.iter().map(|&s| unsafe { cstr(s) }).collect(),
            None => Vec::new(),
        };
        let text = match raw.first() {
            Some(t) => t.clone(),
            // SAFETY: as above.
            None => unsafe { cstr(strings[0]) },
        };
        for s in strings.iter_mut() {
            if !s.is_null() {
                // SAFETY: allocated by liblsl for this pull; freed once, then nulled.
                unsafe { lsl_sys::lsl_destroy_string(*s) };
                *s = std::ptr::null_mut();
            }
        }
        Counters::inc(&counters.markers);
        if let Some(rec) = record {
            let marker = RawMarker {
                values: raw,
                lsl_time: ts,
            };
            if let Err(crossbeam_channel::TrySendError::Full(_)) = rec.try_send(marker) {
                Counters::inc(&counters.record_marker_drops);
            }
        }
        match parse_marker(&text, ts) {
            Some(ev) => match tx.try_send(ev) {
                Ok(()) => {}
                Err(crossbeam_channel::TrySendError::Full(_)) => {
                    Counters::inc(&counters.marker_overruns)
                }
                // The window stage has shut down: so do we.
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => return,
            },
            None => Counters::inc(&counters.unknown_markers),
        }
    }
}

/// Runs the MUA ingest loop until `stop`: pull, stamp, push (to the window stage,
/// and to the recorder when `record` is given). Detects a stream that goes silent for
/// `silence` seconds (counted as lost) and comes back (restored).
pub fn run_mua(
    inlet: &mut MuaInlet,
    producer: &mut SampleProducer,
    mut record: Option<&mut SampleProducer>,
    stop: &AtomicBool,
    counters: &Counters,
    silence: f64,
    wake: &dyn Fn(),
) {
    let mut last_data = Instant::now();
    let mut lost = false;
    while !stop.load(Ordering::Relaxed) {
        match inlet.pull(0.02) {
            Pull::Samples(n) => {
                let arrival = Instant::now();
                let now_lsl = local_clock();
                if lost {
                    lost = false;
                    Counters::inc(&counters.stream_restored);
                }
                last_data = arrival;
                hand_on(
                    &inlet.values,
                    &inlet.stamps,
                    n,
                    arrival,
                    now_lsl,
                    producer,
                    record.as_deref_mut(),
                    counters,
                );
                wake();
            }
            Pull::Timeout | Pull::Lost => {
                if !lost && last_data.elapsed().as_secs_f64() > silence {
                    lost = true;
                    Counters::inc(&counters.stream_lost);
                }
            }
        }
    }
}

/// A stop flag shared by every thread.
pub type StopFlag = Arc<AtomicBool>;
