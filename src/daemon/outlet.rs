//! Decoded frames out over LSL: `monkeysee-frames` and `monkeysee-events`, so that
//! LabRecorder records them beside the MUA and a stimulus program can pull them. Their
//! source_ids are `monkeysee-<input stream source_id>-frames` / `-events` (the input
//! stream's name when it has no source_id).
//!
//! `monkeysee-frames`: one sample per frame shown, stamped with the frame's onset in
//! LSL time (the MUA's clock: a recording lines each frame up with the data it came
//! from). LSL gives a stream a single channel format, and only strings can hold an
//! image id, so it is a string stream:
//!
//! | channel | label | |
//! |---|---|---|
//! | 0 | `image_id` | the stimulus id (event mode) or `sliding:<seq>` |
//! | 1 | `onset_lsl_time` | the onset, LSL seconds, 6 decimals (also the sample's stamp) |
//! | 2–7 | `<stage>_ms` | lsl→arrival, arrival→window, queue, decode, present, end-to-end (ms; present and end-to-end up to the moment the frame was shown, just before it is published) |
//! | 8… | `r_<y>_<x>`, `g_…`, `b_…` | the reconstruction, row by row, R G B, decimal 0–255 |
//!
//! `run --outlet-size N` sends an N×N preview instead of the full image (Triangle
//! resampling). In Python: `id = s[0]`, `np.array(s[8:], np.uint8).reshape(N, N, 3)`.
//! Every label is in the header's `<desc><channels>`, as LabRecorder expects.
//!
//! `monkeysee-events` (type `Events`): one string channel, `<counter> <n>`, pushed when one of
//! the run's problem counters (deadline misses, drops, gaps, skipped frames, the stream
//! lost, restored or switched, …) rose by `n`, stamped when the display loop saw it.
//!
//! With `--record`, every sample published also goes to the recorder (streams 3 and 4
//! of the file, under these headers; a full queue counts `record_marker_drops`). That
//! copy allocates (a `String` per channel) on the display thread, after the push is
//! timed.
//!
//! Both are published on the display thread, after a frame is shown: the push's own time
//! is measured (`RunSummary::frames_outlet`). Pixel text comes from a table of the 256
//! values, and the pointers liblsl reads from a buffer reused from frame to frame.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Instant;

use hdrhistogram::Histogram;
use image::{imageops, RgbImage};

use crossbeam_channel::Sender;

use crate::ingest::RawMarker;
use crate::lsl::{self, Outlet, StringChunk};
use crate::telemetry::{Counters, FrameTimings, Stage};
use crate::xdf::{ChannelFormat, StreamSpec};

/// The frames stream's name.
pub const FRAMES_STREAM: &str = "monkeysee-frames";
/// The events stream's name.
pub const EVENTS_STREAM: &str = "monkeysee-events";
/// Channels before the pixels.
pub const META_CHANNELS: usize = 2 + TIMED_STAGES.len();

/// The stages whose latency each frame carries, in channel order: all of them.
const TIMED_STAGES: [Stage; 6] = Stage::ALL;

/// What the frames outlet measured: frames published and the time each push took.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OutletSummary {
    pub frames: u64,
    pub events: u64,
    /// Side of the published image, pixels.
    pub size: usize,
    pub push_p50_ms: f64,
    pub push_p99_ms: f64,
    pub push_max_ms: f64,
}

/// The recorder's queues for the published samples.
pub struct RecordEnds {
    pub frames: Sender<RawMarker>,
    pub events: Sender<RawMarker>,
}

/// The frames and events headers as recorded (XDF), from what is published.
pub fn recorded_headers(
    size: usize,
    source_id: &str,
    rig: &str,
) -> anyhow::Result<(crate::xdf::StreamInfo, crate::xdf::StreamInfo)> {
    let parse = |xml: String| {
        crate::xdf::StreamInfo::from_xml(&xml)
            .map_err(|e| anyhow::anyhow!("the outlet's own header does not parse: {e}"))
    };
    Ok((
        parse(frames_header(size, source_id, rig))?,
        parse(events_header(source_id))?,
    ))
}

/// The two outlets and the buffers reused across frames.
pub struct FrameOutlets {
    frames: Outlet,
    events: Outlet,
    size: usize,
    scratch: StringChunk,
    /// The metadata channels' text.
    meta: [String; META_CHANNELS],
    push_us: Histogram<u64>,
    published: u64,
    events_sent: u64,
    /// The watched counters' values at the last look.
    seen: Vec<u64>,
    record: Option<RecordEnds>,
}

/// The counters whose rises are events.
fn watched(c: &Counters) -> [(&'static str, &std::sync::atomic::AtomicU64); 17] {
    [
        ("deadline_miss", &c.deadline_misses),
        ("frames_dropped_decode", &c.frames_dropped_decode),
        ("frames_dropped_window", &c.frames_dropped_window),
        ("frames_superseded", &c.frames_superseded),
        ("frames_skipped_gap", &c.frames_skipped_gap),
        ("frames_skipped_bad", &c.frames_skipped_bad),
        ("frames_skipped_late", &c.frames_skipped_late),
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

/// "0" … "255".
fn pixel_text() -> &'static [String; 256] {
    static TEXT: OnceLock<[String; 256]> = OnceLock::new();
    TEXT.get_or_init(|| std::array::from_fn(|v| v.to_string()))
}

/// The frames stream's header: its channel labels, the image side and what the run
/// decodes, with the fields liblsl needs to publish it.
fn frames_header(size: usize, source_id: &str, rig: &str) -> String {
    let channels = META_CHANNELS + size * size * 3;
    let mut spec = StreamSpec::new(
        FRAMES_STREAM,
        "Reconstruction",
        channels,
        0.0,
        ChannelFormat::String,
    );
    spec.source_id = format!("{source_id}-frames");
    let mut labels = vec!["image_id".to_string(), "onset_lsl_time".to_string()];
    labels.extend(
        TIMED_STAGES
            .iter()
            .map(|s| format!("{}_ms", s.name().replace("->", "_to_").replace('-', "_"))),
    );
    for y in 0..size {
        for x in 0..size {
            for c in ["r", "g", "b"] {
                labels.push(format!("{c}_{y}_{x}"));
            }
        }
    }
    spec.channel_labels = labels;
    spec.desc_fields = vec![
        ("reconstruction/width".into(), size.to_string()),
        ("reconstruction/height".into(), size.to_string()),
        (
            "reconstruction/layout".into(),
            "rows, then R G B, decimal 0-255, from channel 8".into(),
        ),
        ("acquisition/manufacturer".into(), "monkeysee".into()),
        ("acquisition/rig".into(), rig.into()),
    ];
    crate::replay::outlet_header(
        &spec.to_xml(),
        crate::xdf::StreamId(0),
        std::path::Path::new("."),
    )
}

fn events_header(source_id: &str) -> String {
    // Not "Markers": a rig selecting its marker stream by type alone must not find this.
    let mut spec = StreamSpec::new(EVENTS_STREAM, "Events", 1, 0.0, ChannelFormat::String);
    spec.source_id = format!("{source_id}-events");
    spec.channel_labels = vec!["event".into()];
    crate::replay::outlet_header(
        &spec.to_xml(),
        crate::xdf::StreamId(0),
        std::path::Path::new("."),
    )
}

impl FrameOutlets {
    /// Publishes both streams; `size` is the side of the published image, `source_id`
    /// names this daemon (the streams' source_ids add `-frames` / `-events`).
    pub fn open(
        size: usize,
        source_id: &str,
        rig: &str,
        counters: &Counters,
        record: Option<RecordEnds>,
    ) -> Result<FrameOutlets, lsl::LslError> {
        let frames = Outlet::create(
            &lsl::StreamInfo::from_xml(&frames_header(size, source_id, rig))?,
            1,
            // For an irregular stream liblsl buffers 100 samples per unit: a frame is
            // ~28k strings, so a consumer that stops pulling pins at most ~100 of them.
            1,
        )?;
        let events = Outlet::create(
            &lsl::StreamInfo::from_xml(&events_header(source_id))?,
            1,
            360,
        )?;
        Ok(FrameOutlets {
            frames,
            events,
            size,
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

    /// Publishes one frame: `recon` (the full reconstruction), stamped `onset_lsl`.
    pub fn publish(
        &mut self,
        id: Option<&str>,
        seq: u64,
        onset_lsl: f64,
        timings: &FrameTimings,
        recon: &RgbImage,
        counters: &Counters,
    ) {
        let started = Instant::now();
        let resized;
        let img = if recon.width() as usize == self.size {
            recon
        } else {
            resized = imageops::resize(
                recon,
                self.size as u32,
                self.size as u32,
                imageops::FilterType::Triangle,
            );
            &resized
        };
        for s in &mut self.meta {
            s.clear();
        }
        match id {
            Some(id) => self.meta[0].push_str(id),
            None => {
                let _ = write!(self.meta[0], "sliding:{seq}");
            }
        }
        let _ = write!(self.meta[1], "{onset_lsl:.6}");
        for (k, stage) in TIMED_STAGES.iter().enumerate() {
            let _ = write!(
                self.meta[2 + k],
                "{:.3}",
                timings.get(*stage) as f64 / 1000.0
            );
        }
        let pixels = pixel_text();
        let values = self.meta.iter().map(|s| s.as_bytes()).chain(
            img.as_raw()
                .iter()
                .map(|&v| pixels[usize::from(v)].as_bytes()),
        );
        if self
            .frames
            .push_sample_bytes(values, onset_lsl, &mut self.scratch)
            .is_ok()
        {
            self.published += 1;
        }
        let _ = self
            .push_us
            .record(crate::telemetry::micros_between(started, Instant::now()).max(1));
        if let Some(r) = &self.record {
            let values = self
                .meta
                .iter()
                .cloned()
                .chain(img.as_raw().iter().map(|&v| pixels[usize::from(v)].clone()))
                .collect();
            let sample = RawMarker {
                values,
                lsl_time: onset_lsl,
            };
            if r.frames.try_send(sample).is_err() {
                Counters::inc(&counters.record_marker_drops);
            }
        }
    }

    /// Pushes an event for each watched counter that rose since the last look.
    pub fn events(&mut self, counters: &Counters) {
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
                        Counters::inc(&counters.record_marker_drops);
                    }
                }
                *seen = value;
            }
        }
    }

    pub fn summary(&self) -> OutletSummary {
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
