use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use lsl::Pullable;
use monkeysee::replay::{self, Repeat, ReplayError, ReplayOptions, Speed};
use monkeysee::window::Mode;
use monkeysee::xdf::{self, ChannelFormat, StreamId, StreamInfo, XdfWriter};

use super::common::{small_rig, unique};
use super::daemon::{options, stream, Running};

/// A stream header as LabRecorder writes one (without the network fields).
fn header(
    name: &str,
    kind: &str,
    channels: usize,
    rate: f64,
    format: &str,
    desc: &str,
) -> StreamInfo {
    StreamInfo::from_xml(&format!(
        "<?xml version=\"1.0\"?>\n<info>\n\t<name>{name}</name>\n\t<type>{kind}</type>\n\t\
         <channel_count>{channels}</channel_count>\n\t<nominal_srate>{rate}</nominal_srate>\n\t\
         <channel_format>{format}</channel_format>\n\t<source_id>{name}-src</source_id>\n\t\
         <desc>{desc}</desc>\n</info>\n"
    ))
    .unwrap()
}

/// A string marker stream whose header names the stimulus image folder.
fn marker_header(name: &str, stimuli: &str) -> StreamInfo {
    header(
        name,
        "Markers",
        1,
        0.0,
        "string",
        &format!("<stimuli><directory>{stimuli}</directory></stimuli>"),
    )
}

/// A small session: 4-channel 1 kHz float32 MUA with labelled channels, string markers
/// whose header names an image folder, and a 2-channel 250 Hz int16 stream recorded on
/// a clock 3000 s behind (corrected by its clock offsets, the first written after its
/// first samples). Chunks of 100 ms; markers written a chunk late, as files interleave
/// streams only roughly.
struct Session {
    _dir: tempfile::TempDir,
    path: PathBuf,
    images: PathBuf,
    mua: String,
    markers: String,
    aux: String,
    mua_values: Vec<f32>,
    /// Session-relative times (corrected stamp − first stamp of the session).
    mua_times: Vec<f64>,
    aux_values: Vec<i16>,
    aux_times: Vec<f64>,
    marker_texts: Vec<String>,
    marker_times: Vec<f64>,
}

const T_BASE: f64 = 5000.25;
const AUX_CLOCK_BEHIND: f64 = 3000.0;

fn write_session(tag: &str, seconds: f64) -> Session {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let path = dir.path().join("session.xdf");
    let (mua, markers, aux) = (
        unique(&format!("{tag}-mua")),
        unique(&format!("{tag}-mk")),
        unique(&format!("{tag}-aux")),
    );
    let channels: String = (0..4)
        .map(|c| {
            format!(
                "<channel><label>e{c}</label><area>{}</area></channel>",
                ["V1", "V4", "IT", "IT"][c]
            )
        })
        .collect();
    let mut w = XdfWriter::create(&path).unwrap();
    w.add_stream(
        StreamId(1),
        header(
            &mua,
            "MUA",
            4,
            1000.0,
            "float32",
            &format!("<channels>{channels}</channels><acquisition><rig>test</rig></acquisition>"),
        ),
    )
    .unwrap();
    w.add_stream(StreamId(2), marker_header(&markers, "images"))
        .unwrap();
    w.add_stream(StreamId(3), header(&aux, "Aux", 2, 250.0, "int16", ""))
        .unwrap();

    let n = (seconds * 1000.0) as usize;
    let mua_values: Vec<f32> = (0..n * 4)
        .map(|i| ((i * 7919) % 1000) as f32 * 0.37 - 100.0)
        .collect();
    // A little jitter, so only exact stamps (not nominal ones) pass.
    let mua_times: Vec<f64> = (0..n)
        .map(|k| k as f64 / 1000.0 + (k % 3) as f64 * 1e-6)
        .collect();
    let n_aux = n / 4;
    let aux_values: Vec<i16> = (0..n_aux * 2)
        .map(|i| (i as i32 * 97 % 65536 - 32768) as i16)
        .collect();
    let aux_times: Vec<f64> = (0..n_aux).map(|k| 0.002 + k as f64 / 250.0).collect();
    let mut marker_texts = Vec::new();
    let mut marker_times = Vec::new();
    let mut t = 0.1;
    let mut k = 0;
    while t + 0.2 < seconds {
        marker_texts.push(format!("stim_on img_{k}"));
        marker_times.push(t);
        marker_texts.push("stim_off".to_string());
        marker_times.push(t + 0.2);
        t += 0.4;
        k += 1;
    }
    let mut next_marker = 0;
    let blocks = n / 100;
    for b in 0..blocks {
        let (a, z) = (b * 100, (b + 1) * 100);
        let stamps: Vec<f64> = mua_times[a..z].iter().map(|t| T_BASE + t).collect();
        w.write_samples_f32(StreamId(1), &mua_values[a * 4..z * 4], &stamps)
            .unwrap();
        let (a, z) = (b * 25, ((b + 1) * 25).min(n_aux));
        let stamps: Vec<f64> = aux_times[a..z]
            .iter()
            .map(|t| T_BASE + t - AUX_CLOCK_BEHIND)
            .collect();
        w.write_samples_i16(StreamId(3), &aux_values[a * 2..z * 2], &stamps)
            .unwrap();
        if b % 5 == 0 {
            w.write_clock_offset(
                StreamId(3),
                T_BASE - AUX_CLOCK_BEHIND + b as f64 / 10.0,
                AUX_CLOCK_BEHIND,
            )
            .unwrap();
        }
        // Markers of the block before this one.
        let mut texts = Vec::new();
        let mut stamps = Vec::new();
        while next_marker < marker_times.len() && marker_times[next_marker] < b as f64 / 10.0 {
            texts.push(marker_texts[next_marker].clone());
            stamps.push(T_BASE + marker_times[next_marker]);
            next_marker += 1;
        }
        w.write_samples_str(StreamId(2), &texts, &stamps).unwrap();
    }
    let texts = &marker_texts[next_marker..];
    let stamps: Vec<f64> = marker_times[next_marker..]
        .iter()
        .map(|t| T_BASE + t)
        .collect();
    w.write_samples_str(StreamId(2), texts, &stamps).unwrap();
    w.finish().unwrap();
    Session {
        _dir: dir,
        path,
        images,
        mua,
        markers,
        aux,
        mua_values,
        mua_times,
        aux_values,
        aux_times,
        marker_texts,
        marker_times,
    }
}

/// What an in-test inlet received.
struct Received<T> {
    values: Vec<T>,
    stamps: Vec<f64>,
    /// `local_clock()` when each sample was pulled.
    arrivals: Vec<f64>,
    /// The stream's full header on the inlet side.
    xml: String,
}

/// Opens an inlet on stream `name` on its own thread and pulls until `count` samples
/// arrived or `seconds` passed.
fn receive<T: Send + 'static>(
    name: &str,
    count: usize,
    seconds: f64,
) -> thread::JoinHandle<Received<T>>
where
    lsl::StreamInlet: Pullable<T>,
{
    let name = name.to_string();
    thread::spawn(move || {
        let found = lsl::resolve_bypred(&format!("name='{name}'"), 1, 20.0).unwrap();
        assert!(!found.is_empty(), "stream {name} was not published");
        let inlet = lsl::StreamInlet::new(&found[0], 360, 0, true).unwrap();
        let xml = inlet.info(5.0).unwrap().to_xml().unwrap();
        inlet.open_stream(10.0).unwrap();
        let mut got = Received {
            values: Vec::new(),
            stamps: Vec::new(),
            arrivals: Vec::new(),
            xml,
        };
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        while got.stamps.len() < count && Instant::now() < deadline {
            let (sample, ts) = inlet.pull_sample(0.05).unwrap();
            if ts != 0.0 {
                got.arrivals.push(lsl::local_clock());
                got.values.extend(sample);
                got.stamps.push(ts);
            }
        }
        got
    })
}

fn opts(path: &Path, speed: Speed) -> ReplayOptions {
    ReplayOptions {
        speed,
        wait_for_consumer: Some(30.0),
        ..ReplayOptions::new(path)
    }
}

fn assert_times(got: &[f64], origin: f64, want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: sample count");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - origin - w).abs() < 1e-6,
            "{what} sample {k}: relative stamp {} but the file says {w}",
            g - origin
        );
    }
}

/// Replays the whole session at `speed` to three inlets and checks every sample.
fn replay_and_check(s: &Session, speed: f64) -> replay::ReplaySummary {
    let handle = replay::spawn(opts(&s.path, Speed::Factor(speed))).unwrap();
    let mua = receive::<f32>(&s.mua, s.mua_times.len(), 30.0);
    let aux = receive::<i16>(&s.aux, s.aux_times.len(), 30.0);
    let markers = receive::<String>(&s.markers, s.marker_texts.len(), 30.0);
    let summary = handle.join().unwrap();
    let (mua, aux, markers) = (
        mua.join().unwrap(),
        aux.join().unwrap(),
        markers.join().unwrap(),
    );
    println!("{speed}x: {summary}");

    // Every sample, in order, values exact.
    assert_eq!(mua.values, s.mua_values, "MUA values");
    assert_eq!(aux.values, s.aux_values, "int16 values");
    assert_eq!(markers.values, s.marker_texts, "markers");
    // Stamps keep the file's relative timing across streams (the int16 stream through
    // its clock offsets); the MUA's first sample is the session's first.
    let origin = mua.stamps[0];
    assert_times(&mua.stamps, origin, &s.mua_times, "MUA");
    assert_times(&aux.stamps, origin, &s.aux_times, "int16");
    assert_times(&markers.stamps, origin, &s.marker_times, "markers");
    // Each marker arrives when it is due (at 1x: at its stamp), never early.
    for (k, (&arrival, &t)) in markers.arrivals.iter().zip(&s.marker_times).enumerate() {
        let due = origin + t / speed;
        assert!(
            arrival - due > -0.002 && arrival - due < 0.5,
            "marker {k} arrived {:.1} ms from its send time",
            (arrival - due) * 1e3
        );
    }
    assert_eq!(summary.samples(&s.mua), s.mua_times.len() as u64);
    assert_eq!(summary.samples(&s.aux), s.aux_times.len() as u64);
    assert_eq!(summary.samples(&s.markers), s.marker_texts.len() as u64);
    assert_eq!(summary.loops, 1);
    let duration = *s.mua_times.last().unwrap();
    assert!((summary.duration_s - duration).abs() < 1e-6);
    assert!(
        summary.wall_s >= 0.9 * duration / speed,
        "{} s of session replayed at {speed}x in {} s wall",
        duration,
        summary.wall_s
    );
    let pacing = summary.pacing.expect("paced replay measures pacing");
    assert!(pacing.pushes > 0 && pacing.p50_us <= pacing.p99_us && pacing.p99_us <= pacing.max_us);
    summary
}

#[test]
fn replay_at_1x_sends_every_sample_in_order_with_the_files_timing() {
    let s = write_session("r1x", 2.0);
    let summary = replay_and_check(&s, 1.0);
    let p = summary.pacing.unwrap();
    println!(
        "pacing at 1x: p50 {} us, p99 {} us, max {} us over {} pushes",
        p.p50_us, p.p99_us, p.max_us, p.pushes
    );
}

#[test]
fn replay_at_4x_takes_a_quarter_of_the_time() {
    let s = write_session("r4x", 2.0);
    let summary = replay_and_check(&s, 4.0);
    // 0.5 s expected; 1x would take 2 s.
    assert!(
        summary.wall_s < 0.75 * summary.duration_s,
        "4x took {} s for {} s of session",
        summary.wall_s,
        summary.duration_s
    );
}

#[test]
fn max_speed_twice_looped_doubles_the_samples_with_increasing_stamps() {
    let s = write_session("loop", 1.0);
    let mut o = opts(&s.path, Speed::Max);
    o.repeat = Repeat::Times(2);
    let n = s.mua_times.len();
    let handle = replay::spawn(o).unwrap();
    let mua = receive::<f32>(&s.mua, 2 * n, 30.0);
    let markers = receive::<String>(&s.markers, 2 * s.marker_texts.len(), 30.0);
    let aux = receive::<i16>(&s.aux, 2 * s.aux_times.len(), 30.0);
    let summary = handle.join().unwrap();
    let (mua, markers, aux) = (
        mua.join().unwrap(),
        markers.join().unwrap(),
        aux.join().unwrap(),
    );
    println!("max, 2 loops: {summary}");
    assert_eq!(summary.loops, 2);
    assert!(summary.pacing.is_none());
    assert_eq!(summary.samples(&s.mua), 2 * n as u64);
    assert_eq!(mua.stamps.len(), 2 * n);
    assert_eq!(markers.values.len(), 2 * s.marker_texts.len());
    assert_eq!(aux.stamps.len(), 2 * s.aux_times.len());
    assert!(
        mua.stamps.windows(2).all(|w| w[1] > w[0]),
        "stamps increase across loops"
    );
    assert_eq!(&mua.values[..n * 4], &s.mua_values[..]);
    assert_eq!(&mua.values[n * 4..], &s.mua_values[..]);
    // The second pass starts one sample interval after the first pass's last sample.
    let period = s.mua_times[n - 1] + 0.001;
    for k in 0..n {
        let d = mua.stamps[n + k] - mua.stamps[k];
        assert!((d - period).abs() < 1e-6, "sample {k}: loop shift {d}");
    }
    assert!(
        summary.wall_s < 2.0 * summary.duration_s,
        "max speed took {} s",
        summary.wall_s
    );
}

#[test]
fn only_the_selected_streams_are_published_by_name_or_id() {
    let s = write_session("select", 0.5);
    let mut o = opts(&s.path, Speed::Max);
    o.streams = vec![s.markers.clone(), "3".into()];
    let handle = replay::spawn(o).unwrap();
    let markers = receive::<String>(&s.markers, s.marker_texts.len(), 30.0);
    let aux = receive::<i16>(&s.aux, s.aux_times.len(), 30.0);
    let summary = handle.join().unwrap();
    assert_eq!(markers.join().unwrap().values, s.marker_texts);
    assert_eq!(aux.join().unwrap().values, s.aux_values);
    let names: Vec<&str> = summary.streams.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, [s.markers.as_str(), s.aux.as_str()]);
    let unselected = lsl::resolve_bypred(&format!("name='{}'", s.mua), 1, 0.5).unwrap();
    assert!(unselected.is_empty(), "the MUA stream was published");

    let mut o = opts(&s.path, Speed::Max);
    o.streams = vec!["no-such-stream".into()];
    let err = replay::run(o).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ReplayError::NoMatch { .. })
            && msg.contains("no-such-stream")
            && msg.contains(&format!("1 '{}'", s.mua))
            && msg.contains(&format!("3 '{}'", s.aux)),
        "{msg}"
    );
}

#[test]
fn published_headers_keep_labels_desc_and_source_id_and_resolve_the_image_folder() {
    let s = write_session("header", 0.5);
    let file = xdf::read_file(&s.path).unwrap();
    let handle = replay::spawn(opts(&s.path, Speed::Max)).unwrap();
    let mua = receive::<f32>(&s.mua, s.mua_times.len(), 30.0);
    let markers = receive::<String>(&s.markers, s.marker_texts.len(), 30.0);
    let aux = receive::<i16>(&s.aux, s.aux_times.len(), 30.0);
    handle.join().unwrap();
    let (mua, markers) = (mua.join().unwrap(), markers.join().unwrap());
    aux.join().unwrap();

    let sent = StreamInfo::from_xml(&mua.xml).unwrap();
    let recorded = &file.stream(StreamId(1)).unwrap().info;
    assert_eq!(sent.name(), recorded.name());
    assert_eq!(sent.content_type(), "MUA");
    assert_eq!(sent.channel_count(), 4);
    assert_eq!(sent.nominal_srate(), 1000.0);
    assert_eq!(sent.channel_format(), ChannelFormat::Float32);
    assert_eq!(sent.source_id(), format!("{}-src", s.mua));
    assert_eq!(sent.channel_labels(), ["e0", "e1", "e2", "e3"]);
    let compact = |x: &str| x.split_whitespace().collect::<String>();
    for part in [
        "<channel><label>e1</label><area>V4</area></channel>",
        "<acquisition><rig>test</rig></acquisition>",
    ] {
        assert!(compact(&mua.xml).contains(part), "{part} lost: {}", mua.xml);
    }
    // The marker header's relative image folder is published as an absolute path.
    assert_eq!(
        monkeysee::lsl::header::stimuli_directory(&markers.xml).unwrap(),
        s.images.canonicalize().unwrap()
    );
}

#[test]
fn every_value_format_replays_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("formats.xdf");
    let name = |f: &str| unique(&format!("fmt-{f}"));
    let names: Vec<String> = ["f32", "f64", "i8", "i32", "i64"]
        .iter()
        .map(|f| name(f))
        .collect();
    let mut w = XdfWriter::create(&path).unwrap();
    for (i, (n, f)) in names
        .iter()
        .zip(["float32", "double64", "int8", "int32", "int64"])
        .enumerate()
    {
        w.add_stream(StreamId(i as u32 + 1), header(n, "Test", 2, 100.0, f, ""))
            .unwrap();
    }
    let stamps: Vec<f64> = (0..50).map(|k| 10.0 + k as f64 / 100.0).collect();
    let f32s: Vec<f32> = (0..100).map(|i| i as f32 * -1.25e-3 + 7.0).collect();
    let f64s: Vec<f64> = (0..100).map(|i| (i as f64).sqrt() * 1e10).collect();
    let i8s: Vec<i8> = (0..100i32).map(|i| (i * 5 - 128) as i8).collect();
    let i32s: Vec<i32> = (0..100i64)
        .map(|i| (i * 40_000_001 - 2_000_000_000) as i32)
        .collect();
    let i64s: Vec<i64> = (0..100)
        .map(|i| (i as i64 - 50) * 123_456_789_012_345)
        .collect();
    w.write_samples_f32(StreamId(1), &f32s, &stamps).unwrap();
    w.write_samples_f64(StreamId(2), &f64s, &stamps).unwrap();
    w.write_samples_i8(StreamId(3), &i8s, &stamps).unwrap();
    w.write_samples_i32(StreamId(4), &i32s, &stamps).unwrap();
    w.write_samples_i64(StreamId(5), &i64s, &stamps).unwrap();
    w.finish().unwrap();
    let handle = replay::spawn(opts(&path, Speed::Max)).unwrap();
    let a = receive::<f32>(&names[0], 50, 30.0);
    let b = receive::<f64>(&names[1], 50, 30.0);
    let c = receive::<i8>(&names[2], 50, 30.0);
    let d = receive::<i32>(&names[3], 50, 30.0);
    // liblsl 1.13 cannot carry int64 samples: the replay publishes them as double64.
    let e = receive::<f64>(&names[4], 50, 30.0);
    let summary = handle.join().unwrap();
    assert_eq!(a.join().unwrap().values, f32s);
    assert_eq!(b.join().unwrap().values, f64s);
    assert_eq!(c.join().unwrap().values, i8s);
    assert_eq!(d.join().unwrap().values, i32s);
    let e = e.join().unwrap();
    assert_eq!(e.values, i64s.iter().map(|&v| v as f64).collect::<Vec<_>>());
    assert_eq!(
        StreamInfo::from_xml(&e.xml).unwrap().channel_format(),
        ChannelFormat::Double64
    );
    let noted: Vec<_> = summary
        .streams
        .iter()
        .filter(|s| s.note.is_some())
        .collect();
    assert_eq!(noted.len(), 1);
    assert_eq!(noted[0].name, names[4]);
}

#[test]
fn a_truncated_file_replays_up_to_the_damage_and_names_the_byte() {
    let s = write_session("trunc", 1.0);
    let bytes = std::fs::read(&s.path).unwrap();
    let cut = bytes.len() * 6 / 10;
    std::fs::write(&s.path, &bytes[..cut]).unwrap();
    let partial = xdf::read_file(&s.path).unwrap_err();
    let count = |id: u32| partial.file.stream(StreamId(id)).unwrap().sample_count();
    let (n_mua, n_markers, n_aux) = (count(1), count(2), count(3));
    assert!(n_mua > 0 && n_mua < s.mua_times.len());
    assert!(n_markers > 0 && n_aux > 0);

    let handle = replay::spawn(opts(&s.path, Speed::Max)).unwrap();
    let mua = receive::<f32>(&s.mua, n_mua, 30.0);
    let markers = receive::<String>(&s.markers, n_markers, 30.0);
    let aux = receive::<i16>(&s.aux, n_aux, 30.0);
    let err = handle.join().unwrap_err();
    let (mua, markers, aux) = (
        mua.join().unwrap(),
        markers.join().unwrap(),
        aux.join().unwrap(),
    );
    let msg = err.to_string();
    let ReplayError::Damaged { error, sent, .. } = err else {
        panic!("expected a damaged-file error, got {msg}");
    };
    assert_eq!(error.offset, partial.error.offset);
    assert!(error.is_truncation());
    assert!(msg.contains(&format!("at byte {}", error.offset)), "{msg}");
    assert_eq!(sent.samples(&s.mua), n_mua as u64);
    assert_eq!(sent.samples(&s.markers), n_markers as u64);
    assert_eq!(sent.samples(&s.aux), n_aux as u64);
    assert_eq!(mua.values, s.mua_values[..n_mua * 4]);
    assert_eq!(markers.values, s.marker_texts[..n_markers]);
    assert_eq!(aux.values, s.aux_values[..n_aux * 2]);
}

#[test]
fn bad_files_and_speeds_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.xdf");
    let err = replay::run(ReplayOptions::new(&missing)).unwrap_err();
    assert!(matches!(err, ReplayError::Open { .. }), "{err}");
    assert!(err.to_string().contains("missing.xdf"), "{err}");

    let text = dir.path().join("notes.xdf");
    std::fs::write(&text, "hello, not a session").unwrap();
    let err = replay::run(ReplayOptions::new(&text)).unwrap_err();
    assert!(matches!(err, ReplayError::NotXdf { .. }), "{err}");
    assert!(err.to_string().contains("not an XDF file"), "{err}");
    assert!(err.to_string().contains("notes.xdf"), "{err}");

    let empty = dir.path().join("empty.xdf");
    XdfWriter::create(&empty).unwrap().finish().unwrap();
    let err = replay::run(ReplayOptions::new(&empty)).unwrap_err();
    assert!(matches!(err, ReplayError::NoStreams { .. }), "{err}");

    for bad in [0.0, -2.0, f64::NAN, f64::INFINITY] {
        let mut o = ReplayOptions::new(&empty);
        o.speed = Speed::Factor(bad);
        let err = replay::run(o).unwrap_err();
        assert!(matches!(err, ReplayError::BadSpeed(_)), "{bad}: {err}");
    }
}

#[test]
fn a_replay_stops_when_asked() {
    let s = write_session("stop", 3.0);
    let o = ReplayOptions::new(&s.path);
    let stop = o.stop.clone();
    let handle = replay::spawn(o).unwrap();
    thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let summary = handle.join().unwrap();
    assert!(asked.elapsed() < Duration::from_millis(500));
    let sent = summary.samples(&s.mua);
    assert!(
        sent > 0 && sent < 3000,
        "{sent} samples sent before the stop"
    );
}

/// Small PNGs named like the session's stimuli.
fn write_images(dir: &Path, count: usize) {
    for k in 0..count {
        let img = image::RgbImage::from_pixel(16, 16, image::Rgb([40 * k as u8, 100, 200]));
        img.save(dir.join(format!("img_{k}.png"))).unwrap();
    }
}

#[test]
fn a_replayed_session_drives_the_daemon_which_finds_the_images_from_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let rig = small_rig(dir.path());
    let ch = rig.channel_count;
    let session = dir.path().join("session");
    std::fs::create_dir_all(session.join("stimuli")).unwrap();
    write_images(&session.join("stimuli"), 3);
    let path = session.join("session.xdf");
    let (mua, markers) = (unique("drive-mua"), unique("drive-mk"));
    let mut w = XdfWriter::create(&path).unwrap();
    w.add_stream(StreamId(1), header(&mua, "MUA", ch, 1000.0, "float32", ""))
        .unwrap();
    w.add_stream(StreamId(2), marker_header(&markers, "stimuli"))
        .unwrap();
    let onsets = [0.4, 1.0, 1.6];
    for b in 0..25 {
        let stamps: Vec<f64> = (0..100)
            .map(|k| 100.0 + (b * 100 + k) as f64 / 1000.0)
            .collect();
        let values: Vec<f32> = (0..100 * ch).map(|i| (i % 17) as f32 / 10.0).collect();
        w.write_samples_f32(StreamId(1), &values, &stamps).unwrap();
        for (k, t) in onsets.iter().enumerate() {
            if (t * 10.0) as usize == b {
                w.write_samples_str(StreamId(2), &[format!("stim_on img_{k}")], &[100.0 + t])
                    .unwrap();
            }
        }
    }
    w.finish().unwrap();

    let mut o = opts(&path, Speed::Factor(1.0));
    o.wait_for_consumer = Some(60.0);
    let handle = replay::spawn(o).unwrap();
    let out = dir.path().join("out");
    let stop = Arc::new(AtomicBool::new(false));
    let fake = super::common::FakeRig::new("drive-unused", 1);
    let mut run = options(rig, &fake, &out, Mode::Event, stop.clone());
    run.rig.mua.query = Some(format!("name='{mua}'"));
    run.rig.markers.query = Some(format!("name='{markers}'"));
    let daemon = thread::spawn(move || monkeysee::daemon::run(run));
    handle.join().unwrap();
    thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let s = daemon.join().unwrap().unwrap();
    assert_eq!(s.images, ["img_0", "img_1", "img_2"], "{:?}", s.counters);
    for entry in std::fs::read_dir(out.join("frames")).unwrap() {
        let frame = image::open(entry.unwrap().path()).unwrap();
        assert_eq!(
            frame.width(),
            2 * 32 + 4,
            "each frame shows the stimulus beside the reconstruction"
        );
    }
}

#[test]
fn run_record_writes_what_the_daemon_consumed() {
    let rec_dir = tempfile::tempdir().unwrap();
    let path = rec_dir.path().join("recorded.xdf");
    let record = path.clone();
    let run = Running::start("record", Mode::Event, move |o| o.record = Some(record));
    assert!(run.fake.wait_for_daemon(30.0), "the daemon never connected");
    let channels = run.fake.channels;
    let (mua_name, marker_name) = (run.fake.mua_name.clone(), run.fake.marker_name.clone());
    use lsl::ExPushable;
    run.fake
        .markers
        .push_sample_ex(&vec!["hello".to_string()], lsl::local_clock(), true)
        .unwrap();
    let onsets = [0.3, 0.9, 1.5, 2.1];
    stream(&run.fake, 2.6, &onsets, |_, _| {}, |_| false);
    thread::sleep(Duration::from_millis(1500));
    // Chunks are flushed as they are written: the file reads back while recording
    // (as it would after a kill), only without footers.
    let live = match xdf::read_file(&path) {
        Ok(f) => f,
        Err(partial) if partial.error.is_truncation() => partial.file,
        Err(e) => panic!("{e}"),
    };
    let live_mua = live.stream(StreamId(1)).unwrap();
    assert!(
        live_mua.sample_count() >= 2000,
        "{}",
        live_mua.sample_count()
    );
    assert!(live_mua.footer.is_none());
    let s = run.stop();
    let recording = s.recording.clone().expect("a recording summary");
    assert_eq!(recording.error, None);
    assert_eq!(s.counter("record_overruns"), 0);
    assert_eq!(s.counter("record_marker_drops"), 0);
    assert_eq!(s.counter("samples"), 2600, "{:?}", s.counters);
    assert_eq!(s.counter("recorded_samples"), s.counter("samples"));
    assert_eq!(recording.samples, s.counter("samples"));
    assert_eq!(s.counter("recorded_markers"), 5);

    let file = xdf::read_file(&path).unwrap();
    let mua = file.stream(StreamId(1)).unwrap();
    assert_eq!(mua.info.channel_count(), channels);
    assert_eq!(mua.info.name(), mua_name);
    assert_eq!(mua.sample_count() as u64, s.counter("samples"));
    assert!(mua.time_stamps.windows(2).all(|w| w[1] > w[0]));
    assert!(mua.footer.is_some(), "footers written on stop");
    let values = mua.values.as_slice::<f32>().unwrap();
    // Sample 100's channel 3, as `stream` generates it.
    assert_eq!(
        values[100 * channels + 3],
        ((100 * 31 + 3 * 7) % 100) as f32 / 50.0
    );
    let markers = file.stream(StreamId(2)).unwrap();
    assert_eq!(markers.info.name(), marker_name);
    let texts = markers.values.as_strings().unwrap();
    let mut want = vec!["hello".to_string()];
    want.extend((0..4).map(|k| format!("stim_on img_{k}")));
    assert_eq!(texts, want);
    // The recorded stamps are the clock-corrected ones the daemon used: markers and
    // MUA on one time base (each inlet's clock offset estimate differs by microseconds).
    let first = mua.time_stamps[0];
    for (k, t) in markers.time_stamps[1..].iter().enumerate() {
        let rel = t - first;
        assert!((rel - onsets[k]).abs() < 2e-3, "onset {k} at {rel}");
    }
}

#[test]
fn clock_offsets_and_a_clock_reset_are_applied_like_pyxdf() {
    // LabRecorder file whose streams' clock was reset mid-session (see its README):
    // raw stamps run from ~653150 back to ~0, with offsets -652340 s, then +1121 s.
    let path = super::common::repo().join("tests/fixtures/xdf-examples/clock_resets.xdf");
    let file = xdf::read_file(&path).unwrap();
    let eeg_file = file.stream(StreamId(2)).unwrap();
    let mk_file = file.stream(StreamId(1)).unwrap();
    // Published under unique names: "BioSemi" could be a real amplifier on the network.
    let suffix = format!("-{}", unique("resets"));
    let mut o = opts(&path, Speed::Max);
    o.name_suffix = suffix.clone();
    let handle = replay::spawn(o).unwrap();
    let eeg = receive::<f32>(&format!("BioSemi{suffix}"), eeg_file.sample_count(), 60.0);
    let markers = receive::<String>(
        &format!("MyMarkerStream{suffix}"),
        mk_file.sample_count(),
        60.0,
    );
    let summary = handle.join().unwrap();
    let (eeg, markers) = (eeg.join().unwrap(), markers.join().unwrap());
    println!("{summary}");
    assert_eq!(eeg.values, eeg_file.values.as_slice::<f32>().unwrap());
    assert_eq!(markers.values, mk_file.values.as_strings().unwrap());
    // pyxdf fits a line through the offsets; the replay applies the latest one. Both
    // put the samples after the reset ~573 s after the first, and agree to the
    // offsets' jitter.
    let (origin, file_origin) = (eeg.stamps[0], eeg_file.time_stamps[0]);
    let worst = |got: &[f64], want: &[f64]| {
        got.iter()
            .zip(want)
            .map(|(g, w)| ((g - origin) - (w - file_origin)).abs())
            .fold(0.0, f64::max)
    };
    let (e, m) = (
        worst(&eeg.stamps, &eeg_file.time_stamps),
        worst(&markers.stamps, &mk_file.time_stamps),
    );
    println!("largest difference from pyxdf's stamps: EEG {e:.6} s, markers {m:.6} s");
    assert!(e < 2e-3 && m < 2e-3, "EEG {e} s, markers {m} s off");
    assert!(
        (summary.duration_s - (eeg_file.time_stamps.last().unwrap() - file_origin)).abs() < 2e-3
    );
}

/// simulate → replay → daemon (random weights): one frame per simulated onset, in order,
/// each beside the true stimulus the marker header points at.
#[test]
fn a_simulated_session_replays_into_one_frame_per_onset() {
    use monkeysee::sim::{self, ImageSource, SimConfig, SimOptions};
    let dir = tempfile::tempdir().unwrap();
    let mut rig = small_rig(dir.path());
    let tag = unique("sim-replay");
    rig.mua.source_id = Some(format!("{tag}-mua"));
    rig.markers.source_id = Some(format!("{tag}-markers"));
    let config = SimConfig::default();
    let sim_opts = SimOptions {
        images: ImageSource::parse("procedural:8", &config.leaves, 5).unwrap(),
        rig: rig.clone(),
        config,
        out: dir.path().join("sim"),
        seed: 5,
        animal_seed: 1,
        test_images: 0,
        repeats: 1,
        rf_jitter_deg: 0.0,
        broadband: false,
        progress: false,
    };
    let s = sim::simulate(&sim_opts).unwrap();
    let ids: Vec<String> = std::fs::read_to_string(sim_opts.out.join("dataset/image_ids.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let (_, trial_image) = {
        let f = npyz::NpyFile::new(
            std::fs::File::open(sim_opts.out.join("dataset/trial_image.npy")).unwrap(),
        )
        .unwrap();
        (f.shape().to_vec(), f.into_vec::<i32>().unwrap())
    };
    let shown: Vec<String> = trial_image
        .iter()
        .map(|&i| ids[i as usize].clone())
        .collect();

    let mut o = opts(&sim_opts.out.join("session.xdf"), Speed::Factor(2.0));
    o.wait_for_consumer = Some(60.0);
    o.start_delay = 0.3;
    let handle = replay::spawn(o).unwrap();
    let out = dir.path().join("out");
    let stop = Arc::new(AtomicBool::new(false));
    let fake = super::common::FakeRig::new("sim-unused", 1);
    let mut run = options(rig, &fake, &out, Mode::Event, stop.clone());
    run.rig.mua.query = Some(format!("source_id='{tag}-mua'"));
    run.rig.markers.query = Some(format!("source_id='{tag}-markers'"));
    run.frames = Some(s.trials as u64);
    let daemon = thread::spawn(move || monkeysee::daemon::run(run));
    let sent = handle.join().unwrap();
    assert_eq!(
        sent.total_samples() as f64,
        s.simulated_s * 1000.0 + 2.0 * s.trials as f64
    );
    let summary = daemon.join().unwrap().unwrap();
    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        summary.frames_shown, s.trials as u64,
        "{:?}",
        summary.counters
    );
    assert_eq!(
        summary.images, shown,
        "frames in onset order, one per onset"
    );
    assert_eq!(
        summary.counter("frames_skipped_gap") + summary.counter("frames_skipped_late"),
        0
    );
    let frame = std::fs::read_dir(out.join("frames"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(
        image::open(frame.path()).unwrap().width(),
        2 * 32 + 4,
        "stimulus beside the reconstruction"
    );
}
