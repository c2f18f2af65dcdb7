//! Decoded frames out over LSL, so that LabRecorder records them beside the MUA and a
//! stimulus program can pull them. Three streams, source_ids
//! `monkeysee-<input stream source_id>-frames` / `-frame-info` / `-events` (the input
//! stream's name when it has no source_id):
//!
//! - `monkeysee-frames` (type `Reconstruction`, int16, irregular): one sample per frame
//!   shown, one channel per pixel value (row-major `[y][x][R G B]`, 0–255, as the header's
//!   `<desc><reconstruction>` says: width, height, layout), stamped with the frame's
//!   onset in LSL time (the MUA's clock: a recording lines each frame up with the data it
//!   came from). In Python: `np.array(s, np.uint8).reshape(N, N, 3)`. `run
//!   --outlet-size N` sends an N×N preview (Triangle resampling) instead of the full
//!   image. Its channels carry no labels: 27,648 of them made a 1.5 MB header that every
//!   consumer fetched and that took liblsl 0.4 s to publish.
//! - `monkeysee-frame-info` (type `FrameInfo`, string, irregular): the same frame's
//!   `image_id` (the stimulus id, or `sliding:<seq>`), `seq`, `onset_lsl_time` and the six
//!   stage latencies in ms (lsl→arrival, arrival→window, queue, decode, present,
//!   end-to-end up to the moment the frame was shown), with the same stamp: a consumer
//!   pairs the two streams by stamp (or by order).
//! - `monkeysee-events` (type `Events`, string): `<counter> <n>` when one of the run's
//!   problem counters (deadline misses, drops, gaps, skipped frames, frames not
//!   published, the stream lost, …) rose by `n`, stamped when it was seen.
//!
//! The frame-info and events channels are labelled in `<desc><channels>`.
//!
//! Real-time contract: publishing never delays a frame. The outlets are created at
//! start-up, before any sample is read (liblsl builds its sample pool there: for
//! a string stream of ~28k channels that was 113 MB of `std::string`s, a 65–330 ms stall
//! of the display thread while frames queued behind it, which is why pixels are a
//! numeric stream now). The display thread copies each shown frame into a buffer from a
//! fixed pool and hands it to the `publish` thread with `try_send`: a frame that finds
//! no free buffer is counted (`frames_unpublished`) and not published, and the display
//! goes on. The `publish` thread pushes, watches the counters for events every 50 ms and,
//! with `--record`, passes every sample to the recorder (bounded queues, drops counted
//! as `record_output_drops`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};
use hdrhistogram::Histogram;
use image::{imageops, RgbImage};

use crate::ingest::RawMarker;
use crate::lsl::{self, Outlet, StringChunk};
use crate::record::NumericSample;
use crate::telemetry::{Counters, FrameTimings, Stage};
use crate::window::ImageId;
use crate::xdf::{ChannelFormat, StreamSpec};

/// The frames stream's name.
pub const FRAMES_STREAM: &str = "monkeysee-frames";
/// The per-frame metadata stream's name.
pub const FRAME_INFO_STREAM: &str = "monkeysee-frame-info";
/// The events stream's name.
pub const EVENTS_STREAM: &str = "monkeysee-events";
/// Channels of `monkeysee-frame-info`: id, seq, onset, then one per stage.
pub const INFO_CHANNELS: usize = 3 + Stage::ALL.len();
/// Shown frames that may wait for the publish thread; one more is being published.
pub const PUBLISH_QUEUE: usize = 4;

/// How often the publish thread looks for counters that rose.
const EVENTS_EVERY: Duration = Duration::from_millis(50);

/// What the outlets measured: frames published and the time each push took.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OutletSummary {
    pub frames: u64,
    pub events: u64,
    /// Side of the published image, pixels.
    pub size: usize,
    /// Pushing one frame's pixels and info (on the publish thread), ms.
    pub push_p50_ms: f64,
    pub push_p99_ms: f64,
    pub push_max_ms: f64,
}

/// The recorder's queues for the published samples.
pub struct RecordEnds {
    pub frames: Sender<NumericSample>,
    pub info: Sender<RawMarker>,
    pub events: Sender<RawMarker>,
}

/// A shown frame on its way to the publish thread: a buffer of the fixed pool.
pub struct ShownFrame {
    pub seq: u64,
    pub onset_lsl: f64,
    pub image: Option<ImageId>,
    pub timings: FrameTimings,
    /// The reconstruction as shown: `[H][W][RGB]`, full size.
    pub rgb: Vec<u8>,
}

/// The display's end of the hand-over to the publish thread. The publish thread polls
/// and parks (a receiver blocked in the channel would make every `try_send` here take
/// the channel's lock to wake it); this end unparks it.
pub struct PublishSender {
    tx: Sender<ShownFrame>,
    free: Receiver<ShownFrame>,
    publisher: std::thread::Thread,
}

impl PublishSender {
    /// Queues a copy of a shown frame for publishing, without waiting: when every buffer
    /// is in use (the publish thread is behind) the frame is counted as
    /// `frames_unpublished` instead.
    pub fn offer(
        &self,
        seq: u64,
        onset_lsl: f64,
        image: Option<ImageId>,
        timings: &FrameTimings,
        recon: &RgbImage,
        counters: &Counters,
    ) {
        let Ok(mut f) = self.free.try_recv() else {
            Counters::inc(&counters.frames_unpublished);
            return;
        };
        f.seq = seq;
        f.onset_lsl = onset_lsl;
        f.image = image;
        f.timings = *timings;
        f.rgb.clear();
        f.rgb.extend_from_slice(recon.as_raw());
        if self.tx.try_send(f).is_err() {
            Counters::inc(&counters.frames_unpublished);
        } else {
            self.publisher.unpark();
        }
    }
}

/// The frames, frame-info and events headers as recorded (XDF), from what is published.
pub fn recorded_headers(
    size: usize,
    source_id: &str,
    rig: &str,
) -> anyhow::Result<[crate::xdf::StreamInfo; 3]> {
    let parse = |xml: String| {
        crate::xdf::StreamInfo::from_xml(&xml)
            .map_err(|e| anyhow::anyhow!("the outlet's own header does not parse: {e}"))
    };
    Ok([
        parse(frames_header(size, source_id, rig))?,
        parse(info_header(source_id))?,
        parse(events_header(source_id))?,
    ])
}

/// The three outlets and the publish thread's buffers.
pub struct Publisher {
    frames: Outlet,
    info: Outlet,
    events: Outlet,
    /// Side of the published image.
    size: usize,
    /// Side of the reconstruction.
    image_size: usize,
    pixels: Vec<i16>,
    scratch: StringChunk,
    meta: [String; INFO_CHANNELS],
    push_us: Histogram<u64>,
    published: u64,
    events_sent: u64,
    /// The watched counters' values at the last look.
    seen: Vec<u64>,
    record: Option<RecordEnds>,
}

/// The counters whose rises are events.
fn watched(c: &Counters) -> [(&'static str, &std::sync::atomic::AtomicU64); 20] {
    [
        ("deadline_miss", &c.deadline_misses),
        ("frames_dropped_decode", &c.frames_dropped_decode),
        ("frames_dropped_window", &c.frames_dropped_window),
        ("frames_superseded", &c.frames_superseded),
        ("frames_skipped_gap", &c.frames_skipped_gap),
        ("frames_skipped_bad", &c.frames_skipped_bad),
        ("frames_skipped_late", &c.frames_skipped_late),
        ("frames_unpublished", &c.frames_unpublished),
        ("frames_unwritten", &c.frames_unwritten),
        ("inputs_unsaved", &c.inputs_unsaved),
        ("onsets_dropped_reset", &c.onsets_dropped_reset),
        ("decode_errors", &c.decode_errors),
        ("overruns", &c.overruns),
        ("gaps", &c.gaps),
        ("stream_lost", &c.stream_lost),
        ("stream_restored", &c.stream_restored),
        ("stream_switched", &c.stream_switched),
        ("marker_stream_lost", &c.marker_stream_lost),
        ("rival_streams", &c.rival_streams),
        ("streams_refused", &c.streams_refused),
    ]
}

/// The frames stream's header: its channel labels, the image side and what the run
/// decodes, with the fields liblsl needs to publish it.
fn frames_header(size: usize, source_id: &str, rig: &str) -> String {
    let mut spec = StreamSpec::new(
        FRAMES_STREAM,
        "Reconstruction",
        size * size * 3,
        0.0,
        ChannelFormat::Int16,
    );
    spec.source_id = format!("{source_id}-frames");
    spec.desc_fields = vec![
        ("reconstruction/width".into(), size.to_string()),
        ("reconstruction/height".into(), size.to_string()),
        ("reconstruction/colours".into(), "3".into()),
        (
            "reconstruction/layout".into(),
            "row-major [y][x][R G B], 0-255; id and latencies in monkeysee-frame-info, same stamp"
                .into(),
        ),
        ("acquisition/manufacturer".into(), "monkeysee".into()),
        ("acquisition/rig".into(), rig.into()),
    ];
    publishable(&spec)
}

/// The frame-info stream's header.
fn info_header(source_id: &str) -> String {
    let mut spec = StreamSpec::new(
        FRAME_INFO_STREAM,
        "FrameInfo",
        INFO_CHANNELS,
        0.0,
        ChannelFormat::String,
    );
    spec.source_id = format!("{source_id}-frame-info");
    let mut labels = vec![
        "image_id".to_string(),
        "seq".to_string(),
        "onset_lsl_time".to_string(),
    ];
    labels.extend(
        Stage::ALL
            .iter()
            .map(|s| format!("{}_ms", s.name().replace("->", "_to_").replace('-', "_"))),
    );
    spec.channel_labels = labels;
    publishable(&spec)
}

fn events_header(source_id: &str) -> String {
    // Not "Markers": a rig selecting its marker stream by type alone must not find this.
    let mut spec = StreamSpec::new(EVENTS_STREAM, "Events", 1, 0.0, ChannelFormat::String);
    spec.source_id = format!("{source_id}-events");
    spec.channel_labels = vec!["event".into()];
    publishable(&spec)
}

pub(crate) fn publishable(spec: &StreamSpec) -> String {
    crate::lsl::header::outlet_header(
        &spec.to_xml(),
        crate::xdf::StreamId(0),
        std::path::Path::new("."),
    )
}

impl Publisher {
    /// Publishes the three streams (at start-up: see the module doc). `size` is the side
    /// of the published image, `image_size` the reconstruction's, `source_id` names this
    /// daemon.
    pub fn open(
        size: usize,
        image_size: usize,
        source_id: &str,
        rig: &str,
        counters: &Counters,
        record: Option<RecordEnds>,
    ) -> Result<Publisher, lsl::LslError> {
        // For an irregular stream liblsl buffers 100 samples per unit of max_buffered.
        let outlet = |xml: String, max_buffered| {
            Outlet::create(&lsl::StreamInfo::from_xml(&xml)?, 1, max_buffered)
        };
        let frames = outlet(frames_header(size, source_id, rig), 1)?;
        let info = outlet(info_header(source_id), 10)?;
        let events = outlet(events_header(source_id), 360)?;
        Ok(Publisher {
            frames,
            info,
            events,
            size,
            image_size,
            pixels: vec![0; size * size * 3],
            scratch: StringChunk::default(),
            meta: Default::default(),
            push_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            published: 0,
            events_sent: 0,
            seen: watched(counters)
                .iter()
                .map(|(_, c)| Counters::get(c))
                .collect(),
            record,
        })
    }

    /// The hand-over's two ends: the display's [`PublishSender`], and the queues
    /// [`Publisher::run`] takes, with [`PUBLISH_QUEUE`] + 1 buffers of a full frame. Call
    /// it on the thread that runs [`Publisher::run`] (the sender wakes that thread).
    pub fn hand_over(&self) -> (PublishSender, Receiver<ShownFrame>, Sender<ShownFrame>) {
        let (tx, rx) = bounded(PUBLISH_QUEUE + 1);
        let (free_tx, free) = bounded(PUBLISH_QUEUE + 1);
        for _ in 0..=PUBLISH_QUEUE {
            let _ = free_tx.send(ShownFrame {
                seq: 0,
                onset_lsl: 0.0,
                image: None,
                timings: FrameTimings::default(),
                rgb: Vec::with_capacity(self.image_size * self.image_size * 3),
            });
        }
        let publisher = std::thread::current();
        (
            PublishSender {
                tx,
                free,
                publisher,
            },
            rx,
            free_tx,
        )
    }

    /// The publish thread: publishes every frame handed over and the events, until
    /// `stop` and the queue is empty; then a last look at the counters.
    pub fn run(
        mut self,
        frames: &Receiver<ShownFrame>,
        free: &Sender<ShownFrame>,
        counters: &Counters,
        stop: &AtomicBool,
    ) -> OutletSummary {
        let mut last_events = Instant::now();
        loop {
            match frames.try_recv() {
                Ok(f) => {
                    self.publish(&f, counters);
                    let _ = free.try_send(f);
                }
                Err(TryRecvError::Empty) if stop.load(Ordering::Relaxed) => break,
                Err(TryRecvError::Empty) => std::thread::park_timeout(EVENTS_EVERY),
                Err(TryRecvError::Disconnected) => break,
            }
            if last_events.elapsed() >= EVENTS_EVERY {
                self.events(counters);
                last_events = Instant::now();
            }
        }
        self.events(counters);
        self.summary()
    }

    /// Publishes one frame's pixels and info, stamped with its onset.
    fn publish(&mut self, f: &ShownFrame, counters: &Counters) {
        let _span = tracing::trace_span!("publish", seq = f.seq).entered();
        let started = Instant::now();
        self.fill_pixels(&f.rgb);
        for s in &mut self.meta {
            s.clear();
        }
        match &f.image {
            Some(id) => self.meta[0].push_str(id.as_str()),
            None => {
                let _ = write!(self.meta[0], "sliding:{}", f.seq);
            }
        }
        let _ = write!(self.meta[1], "{}", f.seq);
        let _ = write!(self.meta[2], "{:.6}", f.onset_lsl);
        for (k, us) in f.timings.iter().enumerate() {
            let _ = write!(self.meta[3 + k], "{:.3}", *us as f64 / 1000.0);
        }
        let stamp = [f.onset_lsl];
        let pushed = self.frames.push_chunk(&self.pixels, &stamp).is_ok();
        let info = self.meta.iter().map(|s| s.as_bytes());
        let _ = self
            .info
            .push_sample_bytes(info, f.onset_lsl, &mut self.scratch);
        if pushed {
            self.published += 1;
        }
        let _ = self
            .push_us
            .record(crate::telemetry::micros_between(started, Instant::now()).max(1));
        if let Some(r) = &self.record {
            let frame = NumericSample {
                values: self.pixels.clone(),
                lsl_time: f.onset_lsl,
            };
            let info = RawMarker {
                values: self.meta.to_vec(),
                lsl_time: f.onset_lsl,
            };
            if r.frames.try_send(frame).is_err() || r.info.try_send(info).is_err() {
                Counters::inc(&counters.record_output_drops);
            }
        }
    }

    /// The published pixels from a full-size `[H][W][RGB]` reconstruction.
    fn fill_pixels(&mut self, rgb: &[u8]) {
        if self.size == self.image_size {
            for (p, &v) in self.pixels.iter_mut().zip(rgb) {
                *p = i16::from(v);
            }
            return;
        }
        let side = self.image_size as u32;
        let Some(full) = RgbImage::from_raw(side, side, rgb.to_vec()) else {
            return;
        };
        let small = imageops::resize(
            &full,
            self.size as u32,
            self.size as u32,
            imageops::FilterType::Triangle,
        );
        for (p, &v) in self.pixels.iter_mut().zip(small.as_raw()) {
            *p = i16::from(v);
        }
    }

    /// Pushes an event for each watched counter that rose since the last look.
    fn events(&mut self, counters: &Counters) {
        let now = lsl::local_clock();
        for ((name, counter), seen) in watched(counters).iter().zip(self.seen.iter_mut()) {
            let value = Counters::get(counter);
            if value > *seen {
                let text = format!("{name} {}", value - *seen);
                if self
                    .events
                    .push_sample_bytes(std::iter::once(text.as_bytes()), now, &mut self.scratch)
                    .is_ok()
                {
                    self.events_sent += 1;
                }
                if let Some(r) = &self.record {
                    let sample = RawMarker {
                        values: vec![text],
                        lsl_time: now,
                    };
                    if r.events.try_send(sample).is_err() {
                        Counters::inc(&counters.record_output_drops);
                    }
                }
                *seen = value;
            }
        }
    }

    fn summary(&self) -> OutletSummary {
        let ms = |q: f64| self.push_us.value_at_quantile(q) as f64 / 1000.0;
        OutletSummary {
            frames: self.published,
            events: self.events_sent,
            size: self.size,
            push_p50_ms: ms(0.5),
            push_p99_ms: ms(0.99),
            push_max_ms: self.push_us.max() as f64 / 1000.0,
        }
    }
}
