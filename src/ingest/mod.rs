//! Ingest: Lab Streaming Layer inlets for MUA and stimulus markers.
//!
//! Real-time contract: [`MuaInlet::connect`] and [`SampleRing::new`] allocate; after
//! that, [`MuaInlet::pull`], [`SampleProducer::push_chunk`] and [`hand_on`] (which
//! also feeds the recorder's ring when recording) never allocate, lock or print. The
//! MUA inlet pulls through [`crate::lsl::Inlet`]'s chunk calls into flat buffers
//! sized in `connect` and reused. The marker inlet allocates a `String` per marker
//! (liblsl hands strings over as copies): markers arrive a few times a second on
//! their own thread, off the hot path.
//!
//! [`watch`] looks at the network once a second from its own thread: it reports
//! (and refuses) a second stream matching a selector mid-session, and when the MUA
//! stream is lost it opens a replacement that fits the rig and hands it over.
//!
//! Both inlets apply liblsl's clock synchronisation (`proc_clocksync`), so sample
//! and marker timestamps are in this machine's `local_clock()` time base.
//! The marker inlet is made inside its thread; a MUA inlet may be made on another
//! thread and moved (the watch does so).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use crate::config::StreamSelector;
use crate::lsl::{self, ChannelFormat, Inlet, LslError, Pulled};
use crate::telemetry::Counters;
use crate::window::{ImageId, Onset, SampleMeta};

pub use crate::lsl::{local_clock, StreamDescription};

pub mod broadband;
pub mod watch;

use crate::config::{BroadbandConfig, RigConfig};
use broadband::MuaExtractor;

/// Why a stream could not be used. Only a [`LslError::NotFound`] in
/// [`IngestError::Resolve`] can go away by trying again (once the source runs); the others
/// need a different selector, config or stream.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No stream, or more than one, matches the selector.
    #[error("{0}{hint}", hint = resolve_hint(.0))]
    Resolve(LslError),
    #[error("stream '{name}' has {found} channels but the rig config declares {expected} (rig.channels); use the config of the rig that is streaming, or fix the stream")]
    ChannelCount {
        name: String,
        found: usize,
        expected: usize,
    },
    #[error("stream '{name}' has channel format {format}; {allowed}")]
    Format {
        name: String,
        format: String,
        allowed: &'static str,
    },
    #[error("stream '{name}' has a nominal rate of {found} Hz but the rig config says {expected} Hz ({key})")]
    Rate {
        name: String,
        found: f64,
        expected: f64,
        key: &'static str,
    },
    #[error("cannot extract MUA from the broadband stream: {0}")]
    Broadband(#[from] broadband::DesignError),
    #[error("liblsl could not {0}")]
    Lsl(&'static str),
}

/// What to do about a stream that could not be resolved.
fn resolve_hint(e: &LslError) -> &'static str {
    match e {
        LslError::NotFound { .. } => "; is the source running? Check the rig config's [streams] selectors or --mua-query/--marker-query",
        LslError::Ambiguous { .. } => "; make the selector unique (name and source_id) instead of taking the first one seen",
        _ => "",
    }
}

/// Finds exactly one stream for a selector (see [`lsl::resolve_unique`]).
fn resolve_unique(selector: &StreamSelector, timeout: f64) -> Result<lsl::StreamInfo, IngestError> {
    lsl::resolve_unique(&selector.predicate(), timeout).map_err(IngestError::Resolve)
}

/// When an inlet starts receiving samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// Now: nothing sent after the call returns is missed.
    Now,
    /// Later, by [`MuaInlet::start`] or [`Inlet::open_stream`] (the daemon opens its
    /// streams once its whole pipeline is running, so no backlog piles up at start-up);
    /// the header and the first clock offset are taken now all the same.
    Deferred,
}

/// Creates an inlet on a resolved stream with clock sync, opens it when `opening` says
/// so, takes the first clock offset and the full header into `description.full_xml`.
/// `steps` names the creation and the opening in an [`IngestError::Lsl`].
fn open_inlet(
    info: &lsl::StreamInfo,
    max_buflen: i32,
    timeout: f64,
    steps: [&'static str; 2],
    description: &mut StreamDescription,
    opening: Opening,
) -> Result<Inlet, IngestError> {
    let [create, open] = steps;
    let mut inlet = Inlet::create(info, max_buflen).map_err(|_| IngestError::Lsl(create))?;
    inlet.enable_clock_sync();
    if opening == Opening::Now {
        (inlet.open_stream(timeout.max(1.0))).map_err(|_| IngestError::Lsl(open))?;
    }
    // Obtains the first clock-offset estimate now. Otherwise liblsl's clock-sync
    // post-processing makes the first pull wait for it (measured here: the first
    // chunk arrived ≈550 ms late, every later one within ≈2 ms). A failure only means
    // the estimate arrives with the first pull instead.
    let _ = inlet.time_correction(timeout.max(2.0));
    description.full_xml = inlet.full_info_xml(timeout.clamp(1.0, 5.0));
    Ok(inlet)
}

/// What the MUA inlet reads and checks a stream against: the rig's channel count and
/// MUA rate, and whether the stream is MUA itself or raw broadband that the inlet turns
/// into MUA ([`broadband`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MuaSpec {
    pub channels: usize,
    /// The MUA rate (what the window stage gets).
    pub mua_hz: f64,
    /// `Some` for a raw broadband stream.
    pub broadband: Option<BroadbandConfig>,
    /// Most MUA samples one pull returns.
    pub max_chunk: usize,
}

impl MuaSpec {
    /// A MUA stream of `channels` at `mua_hz`.
    pub fn mua(channels: usize, mua_hz: f64, max_chunk: usize) -> MuaSpec {
        MuaSpec {
            channels,
            mua_hz,
            broadband: None,
            max_chunk,
        }
    }

    /// The rig's MUA stream, or (`broadband`) its raw broadband stream.
    pub fn for_rig(rig: &RigConfig, broadband: bool, max_chunk: usize) -> MuaSpec {
        MuaSpec {
            channels: rig.channel_count,
            mua_hz: rig.sampling_rate_hz,
            broadband: broadband.then(|| rig.broadband.clone()),
            max_chunk,
        }
    }

    /// The rate the stream itself must declare.
    pub fn stream_hz(&self) -> f64 {
        self.broadband
            .as_ref()
            .map_or(self.mua_hz, |b| b.sampling_rate_hz)
    }
}

/// An open LSL inlet on the MUA stream (or on a broadband stream it extracts MUA
/// from), pulling into reused buffers.
pub struct MuaInlet {
    inlet: Inlet,
    pub description: StreamDescription,
    channels: usize,
    /// `[rows][channels]` values: `max_chunk` rows, one more for a broadband inlet.
    values: Vec<f32>,
    stamps: Vec<f64>,
    broadband: Option<Box<Broadband>>,
}

/// A broadband inlet's raw side: its pull buffers and the extractor.
struct Broadband {
    extractor: MuaExtractor,
    /// `[raw rows][channels]`.
    raw: Vec<f32>,
    raw_stamps: Vec<f64>,
    /// For each MUA row of a pull, the raw row it stands for.
    taken: Vec<usize>,
    /// Seconds taken off each MUA stamp (the low-pass's group delay, or 0).
    shift: f64,
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
        spec: &MuaSpec,
        timeout: f64,
    ) -> Result<MuaInlet, IngestError> {
        let info = resolve_unique(selector, timeout)?;
        MuaInlet::open(&info, spec, timeout)
    }

    /// [`MuaInlet::connect`] without opening the stream: the header and clock offset are
    /// taken, and samples flow from [`MuaInlet::start`] on.
    pub fn connect_deferred(
        selector: &StreamSelector,
        spec: &MuaSpec,
        timeout: f64,
    ) -> Result<MuaInlet, IngestError> {
        let info = resolve_unique(selector, timeout)?;
        MuaInlet::open_as(&info, spec, timeout, Opening::Deferred)
    }

    /// Opens a stream connected with [`MuaInlet::connect_deferred`]: samples sent from
    /// now on arrive.
    pub fn start(&mut self, timeout: f64) -> Result<(), IngestError> {
        self.inlet
            .open_stream(timeout.max(1.0))
            .map_err(|_| IngestError::Lsl("open the MUA stream"))
    }

    /// Checks a resolved stream against the rig and opens it, as [`MuaInlet::connect`]
    /// does after resolving. The stream watch uses it for a replacement stream.
    pub fn open(
        info: &lsl::StreamInfo,
        spec: &MuaSpec,
        timeout: f64,
    ) -> Result<MuaInlet, IngestError> {
        MuaInlet::open_as(info, spec, timeout, Opening::Now)
    }

    fn open_as(
        info: &lsl::StreamInfo,
        spec: &MuaSpec,
        timeout: f64,
        opening: Opening,
    ) -> Result<MuaInlet, IngestError> {
        let max_chunk = spec.max_chunk.max(1);
        let ch = spec.channels;
        let mut description = info.describe();
        check_mua(info, &description, spec)?;
        let broadband = match &spec.broadband {
            None => None,
            Some(cfg) => {
                let extractor = MuaExtractor::new(cfg, ch, spec.mua_hz)?;
                let raw_rows = max_chunk * extractor.decimation();
                Some(Box::new(Broadband {
                    shift: if cfg.compensate_delay {
                        extractor.group_delay_s()
                    } else {
                        0.0
                    },
                    extractor,
                    raw: vec![0.0; raw_rows * ch],
                    raw_stamps: vec![0.0; raw_rows],
                    taken: vec![0; max_chunk + 1],
                }))
            }
        };
        let steps = ["create the MUA inlet", "open the MUA stream"];
        // Buffer 10 s.
        let inlet = open_inlet(info, 10, timeout, steps, &mut description, opening)?;
        Ok(MuaInlet {
            inlet,
            description,
            channels: ch,
            // One more row: a pull of whole raw rows can complete one extra MUA row.
            values: vec![0.0; (max_chunk + usize::from(broadband.is_some())) * ch],
            stamps: vec![0.0; max_chunk + usize::from(broadband.is_some())],
            broadband,
        })
    }

    /// How the MUA this inlet delivers is described in a recording: the stream itself,
    /// or for a broadband input, MUA derived from it (its name with `-mua`, type MUA,
    /// the MUA rate, float32).
    pub fn recorded_description(&self, mua_hz: f64) -> StreamDescription {
        match &self.broadband {
            None => self.description.clone(),
            Some(_) => StreamDescription {
                name: format!("{}-mua", self.description.name),
                stream_type: "MUA".into(),
                source_id: if self.description.source_id.is_empty() {
                    String::new()
                } else {
                    format!("{}-mua", self.description.source_id)
                },
                nominal_rate: mua_hz,
                full_xml: None,
                ..self.description.clone()
            },
        }
    }

    /// The broadband extractor's stamp shift (seconds), when the input is broadband.
    pub fn broadband_delay_s(&self) -> Option<f64> {
        self.broadband.as_ref().map(|b| b.shift)
    }

    /// Waits up to `wait` seconds for the first sample, then takes whatever else is
    /// ready, up to the chunk capacity. A broadband inlet pulls raw rows and returns
    /// the MUA rows they complete (possibly none). Never allocates.
    pub fn pull(&mut self, wait: f64) -> Pull {
        if let Some(b) = self.broadband.as_deref_mut() {
            return b.pull(&mut self.inlet, wait, &mut self.values, &mut self.stamps);
        }
        match pull_rows(&mut self.inlet, &mut self.values, &mut self.stamps, wait) {
            Ok(n) => Pull::Samples(n),
            Err(why) => why,
        }
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

impl Broadband {
    /// Pulls raw rows (up to the buffer) and runs them through the extractor into
    /// `values`/`stamps`. Never allocates.
    fn pull(
        &mut self,
        inlet: &mut Inlet,
        wait: f64,
        values: &mut [f32],
        stamps: &mut [f64],
    ) -> Pull {
        let n = match pull_rows(inlet, &mut self.raw, &mut self.raw_stamps, wait) {
            Ok(n) => n,
            Err(why) => return why,
        };
        let rows = self
            .extractor
            .process(&self.raw, n, values, &mut self.taken);
        for (stamp, &r) in stamps.iter_mut().zip(&self.taken[..rows]) {
            *stamp = self.raw_stamps[r] - self.shift;
        }
        Pull::Samples(rows)
    }
}

/// Waits up to `wait` for one sample into the first row of `values` (`[stamps.len()]
/// [channels]`), then takes whatever else is queued without waiting. The rows pulled, or
/// why there are none. Never allocates.
fn pull_rows(
    inlet: &mut Inlet,
    values: &mut [f32],
    stamps: &mut [f64],
    wait: f64,
) -> Result<usize, Pull> {
    let ch = values.len() / stamps.len();
    let (first, rest) = values.split_at_mut(ch);
    match inlet.pull_sample_f32(first, wait) {
        Pulled::Lost => return Err(Pull::Lost),
        Pulled::Timeout => return Err(Pull::Timeout),
        Pulled::Sample(stamp) => stamps[0] = stamp,
    }
    if stamps.len() == 1 {
        return Ok(1);
    }
    Ok(1 + inlet.pull_chunk_f32(rest, &mut stamps[1..], 0.0) / ch)
}

/// Checks a resolved stream against the rig: channel count, a numeric format (float
/// for MUA; integers too for broadband, which liblsl converts), and the nominal rate
/// (when the stream declares one).
pub(crate) fn check_mua(
    info: &lsl::StreamInfo,
    description: &StreamDescription,
    spec: &MuaSpec,
) -> Result<(), IngestError> {
    let name = || description.name.clone();
    if description.channels != spec.channels {
        return Err(IngestError::ChannelCount {
            name: name(),
            found: description.channels,
            expected: spec.channels,
        });
    }
    let format = info.channel_format();
    let (fits, allowed, key) = match spec.broadband {
        None => (
            matches!(format, ChannelFormat::Float32 | ChannelFormat::Double64),
            "MUA must be float32 or double64 numbers",
            "rig.sampling_rate_hz",
        ),
        Some(_) => (
            matches!(
                format,
                ChannelFormat::Float32
                    | ChannelFormat::Double64
                    | ChannelFormat::Int16
                    | ChannelFormat::Int32
            ),
            "broadband must be int16, int32, float32 or double64 numbers",
            "broadband.sampling_rate_hz",
        ),
    };
    if !fits {
        return Err(IngestError::Format {
            name: name(),
            format: format!("{format:?}"),
            allowed,
        });
    }
    let expected = spec.stream_hz();
    if description.nominal_rate > 0.0
        && (description.nominal_rate - expected).abs() > 1e-6 * expected
    {
        return Err(IngestError::Rate {
            name: name(),
            found: description.nominal_rate,
            expected,
            key,
        });
    }
    Ok(())
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
    if t == "stim_off" {
        return Some(MarkerEvent::Offset { lsl_time });
    }
    // `stim_on` alone, or followed by white space and the id (not `stim_onset`).
    let id = (t.strip_prefix("stim_on"))
        .filter(|r| r.is_empty() || r.starts_with(char::is_whitespace))?;
    Some(MarkerEvent::Onset(Onset {
        lsl_time,
        image: ImageId::new(id.trim()),
    }))
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
    sinks: &MarkerSinks<'_>,
    on_live: impl FnOnce(Result<StreamDescription, IngestError>),
) {
    let MarkerSinks {
        events: tx,
        record,
        stimuli,
        ..
    } = *sinks;
    let opening = if sinks.start.is_some() {
        Opening::Deferred
    } else {
        Opening::Now
    };
    let mut inlet = match open_markers(selector, timeout, opening) {
        Ok((inlet, desc)) => {
            on_live(Ok(desc));
            inlet
        }
        Err(e) => return on_live(Err(e)),
    };
    if let Some(start) = sinks.start {
        // Open with the MUA stream, once the pipeline runs.
        while start.recv_timeout(Duration::from_millis(50)).is_err() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
        }
        // A failure here shows as a lost stream at the first pull.
        let _ = inlet.open_stream(timeout.max(1.0));
    }
    let mut values: Vec<String> = Vec::new();
    let mut lost = false;
    while !stop.load(Ordering::Relaxed) {
        let lsl_time = match inlet.pull_strings(&mut values, 0.05) {
            Pulled::Sample(stamp) => stamp,
            Pulled::Timeout => continue,
            Pulled::Lost => {
                if !lost {
                    lost = true;
                    Counters::inc(&counters.marker_stream_lost);
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        lost = false;
        Counters::inc(&counters.markers);
        let event = parse_marker(values.first().map_or("", String::as_str), lsl_time);
        if let Some(rec) = record {
            let marker = RawMarker {
                values: std::mem::take(&mut values),
                lsl_time,
            };
            if let Err(crossbeam_channel::TrySendError::Full(_)) = rec.try_send(marker) {
                Counters::inc(&counters.record_marker_drops);
            }
        }
        if let (Some(MarkerEvent::Onset(o)), Some(s)) = (&event, stimuli) {
            // The stimulus image is loaded while the frame's windows fill; a full queue
            // only means it is shown later, or not beside its frame (counted there).
            let _ = s.try_send(o.image);
        }
        match event {
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

/// Where the marker thread sends what it reads.
#[derive(Clone, Copy)]
pub struct MarkerSinks<'a> {
    /// Onsets, to the window stage.
    pub events: &'a crossbeam_channel::Sender<MarkerEvent>,
    /// Every marker as received, to the recorder (`--record`).
    pub record: Option<&'a crossbeam_channel::Sender<RawMarker>>,
    /// Each onset's image id, to the stimuli thread (loaded before its frame).
    pub stimuli: Option<&'a crossbeam_channel::Sender<crate::window::ImageId>>,
    /// When given, the stream opens only when a message arrives here (the daemon's
    /// pipeline is running); else at once.
    pub start: Option<&'a crossbeam_channel::Receiver<()>>,
}

/// Resolves the selector's unique marker stream and opens it (360 s of buffer) as
/// `opening` says.
fn open_markers(
    selector: &StreamSelector,
    timeout: f64,
    opening: Opening,
) -> Result<(Inlet, StreamDescription), IngestError> {
    let info = resolve_unique(selector, timeout)?;
    let mut desc = info.describe();
    let steps = ["create the marker inlet", "open the marker stream"];
    let inlet = open_inlet(&info, 360, timeout, steps, &mut desc, opening)?;
    Ok((inlet, desc))
}

/// The ingest thread's end of the [`watch`]: a replacement inlet when the stream was
/// lost and another that fits the rig took its place, and where the old one goes to be
/// closed (closing an inlet blocks while liblsl joins its threads).
pub struct Handover {
    pub replacement: crossbeam_channel::Receiver<MuaInlet>,
    pub retired: crossbeam_channel::Sender<MuaInlet>,
}

/// Runs the MUA ingest loop until `stop`: pull, stamp, push (to the window stage,
/// and to the recorder when `record` is given). Detects a stream that goes silent for
/// `silence` seconds (counted as lost) and comes back (restored). While nothing
/// arrives, takes a replacement inlet from `handover` if the watch sent one
/// (`stream_switched`); the swap moves two pointers and never allocates.
#[allow(clippy::too_many_arguments)]
pub fn run_mua(
    inlet: &mut MuaInlet,
    producer: &mut SampleProducer,
    mut record: Option<&mut SampleProducer>,
    stop: &AtomicBool,
    counters: &Counters,
    silence: f64,
    wake: &dyn Fn(),
    handover: Option<&Handover>,
) {
    let mut last_data = Instant::now();
    let mut lost = false;
    while !stop.load(Ordering::Relaxed) {
        match inlet.pull(0.02) {
            // Raw broadband that completed no MUA sample yet: data flows, nothing to hand on.
            Pull::Samples(0) => last_data = Instant::now(),
            Pull::Samples(n) => {
                let _span = tracing::trace_span!("ingest", samples = n).entered();
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
            pulled @ (Pull::Timeout | Pull::Lost) => {
                if !lost && last_data.elapsed().as_secs_f64() > silence {
                    lost = true;
                    Counters::inc(&counters.stream_lost);
                }
                // A replacement only while lost, and only when the old inlet can go
                // to the watch to be closed (never closed here: that blocks).
                if let Some(h) = handover.filter(|h| lost && !h.retired.is_full()) {
                    if let Ok(new) = h.replacement.try_recv() {
                        let old = std::mem::replace(inlet, new);
                        Counters::inc(&counters.stream_switched);
                        let _ = h.retired.try_send(old);
                    }
                }
                if pulled == Pull::Lost {
                    // liblsl returns at once for a stream it cannot recover: wait here
                    // instead of spinning a core.
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}
