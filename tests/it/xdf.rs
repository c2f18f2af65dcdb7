use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use monkeysee::xdf::{
    read_file, read_file_with, read_from, ChannelFormat, Chunk, ChunkLocation, ClockOffset,
    DejitterOptions, ErrorKind, ReadOptions, Stamps, StreamId, StreamInfo, StreamSpec, Values,
    WriteError, XdfFile, XdfReader, XdfStream, XdfWriter, BOUNDARY_UUID,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/xdf-examples")
        .join(name)
}

#[track_caller]
fn assert_near(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "[{i}]: got {g}, want {w} (±{tol})");
    }
}

fn offsets(pairs: &[(f64, f64)]) -> Vec<ClockOffset> {
    pairs
        .iter()
        .map(|&(collection_time, value)| ClockOffset {
            collection_time,
            value,
        })
        .collect()
}

fn strings(values: &Values) -> Vec<&str> {
    values
        .as_strings()
        .unwrap()
        .iter()
        .map(String::as_str)
        .collect()
}

fn ids(file: &XdfFile) -> Vec<u32> {
    file.streams.iter().map(|s| s.id.0).collect()
}

// ---------------------------------------------------------------------------------
// The reference files, against their README and pyxdf 1.17.5 (`load_xdf` defaults with
// dejitter_timestamps=False; pyxdf's numbers are quoted where the README rounds).

#[test]
fn minimal_xdf_reads_as_its_readme_lists() {
    let file = read_file(example("minimal.xdf")).unwrap();
    assert_eq!(file.version().as_deref(), Some("1.0"));
    assert_eq!(ids(&file), [0, 0x02C0_FFEE]);
    assert_eq!(file.unknown_chunks, 0);

    let s = &file.streams[0];
    assert_eq!(s.info.name(), "SendDataC");
    assert_eq!(s.info.content_type(), "EEG");
    assert_eq!(s.info.channel_count(), 3);
    assert_eq!(s.info.nominal_srate(), 10.0);
    assert_eq!(s.info.channel_format(), ChannelFormat::Int16);
    assert_eq!(
        s.info.field("created_at").as_deref(),
        Some("50942.723319709003")
    );
    assert_eq!(s.info.field("uid").as_deref(), Some("xdfwriter_11_int"));
    assert!(s.info.channel_labels().is_empty());
    #[rustfmt::skip]
    let values: [i16; 27] = [
        192, 255, 238,  12, 22, 32,  13, 23, 33,  14, 24, 34,  15, 25, 35,
        12, 22, 32,  13, 23, 33,  14, 24, 34,  15, 25, 35,
    ];
    assert_eq!(s.values.as_slice::<i16>().unwrap(), values);
    // Some stamps are omitted in the file and filled in as previous + 0.1, so the
    // sums carry pyxdf's rounding exactly.
    let raw = [
        5.1,
        5.2,
        5.3,
        5.3999999999999995,
        5.5,
        5.6,
        5.699999999999999,
        5.799999999999999,
        5.899999999999999,
    ];
    assert_eq!(s.raw_time_stamps, raw);
    assert_eq!(s.clock_offsets, offsets(&[(6.1, -0.1), (7.1, -0.1)]));
    // Stamps before the first offset belong to the first (only) clock segment.
    let synced: Vec<f64> = raw.iter().map(|t| t - 0.1).collect();
    assert_near(&s.time_stamps, &synced, 1e-12);
    assert_eq!(s.clock_segments, [(0, 8)]);
    assert_eq!(s.segments, [(0, 8)]);
    assert!((s.effective_srate - 10.0).abs() < 1e-9);
    let footer = s.footer.as_ref().unwrap();
    assert_eq!(footer.first_timestamp, Some(5.1));
    assert_eq!(footer.last_timestamp, Some(5.9));
    assert_eq!(footer.sample_count, Some(9));
    assert_eq!(
        footer.clock_offsets,
        offsets(&[(50979.76, -0.01), (50979.86, -0.02)])
    );

    let m = &file.streams[1];
    assert_eq!(m.id, StreamId(46_202_862));
    assert_eq!(m.info.name(), "SendDataString");
    assert_eq!(m.info.content_type(), "StringMarker");
    assert_eq!(m.info.channel_format(), ChannelFormat::String);
    assert_eq!(m.info.field("uid").as_deref(), Some("xdfwriter_11_str"));
    let footer_text = "<?xml version=\"1.0\"?><info><writer>LabRecorder xdfwriter</writer>\
        <first_timestamp>5.1</first_timestamp><last_timestamp>5.9</last_timestamp>\
        <sample_count>9</sample_count><clock_offsets><offset><time>50979.76</time>\
        <value>-.01</value></offset><offset><time>50979.86</time><value>-.02</value>\
        </offset></clock_offsets></info>";
    assert_eq!(
        strings(&m.values),
        [
            footer_text,
            "Hello",
            "World",
            "from",
            "LSL",
            "Hello",
            "World",
            "from",
            "LSL"
        ]
    );
    assert_eq!(m.raw_time_stamps, raw);
    // No clock offsets: synchronisation leaves the stamps alone.
    assert!(m.clock_offsets.is_empty());
    assert_eq!(m.time_stamps, raw);
    assert!(m.clock_segments.is_empty());
    assert_eq!(
        m.footer.as_ref().unwrap().xml,
        s.footer.as_ref().unwrap().xml
    );
}

#[test]
fn clock_resets_xdf_splits_each_stream_at_the_reset_like_pyxdf() {
    let file = read_file(example("clock_resets.xdf")).unwrap();
    assert_eq!(file.version().as_deref(), Some("1.0"));
    assert_eq!(ids(&file), [1, 2]);

    let m = &file.streams[0];
    assert_eq!(m.info.name(), "MyMarkerStream");
    assert_eq!(m.info.content_type(), "Markers");
    assert_eq!(m.info.channel_count(), 1);
    assert_eq!(m.info.nominal_srate(), 0.0);
    assert_eq!(m.info.channel_format(), ChannelFormat::String);
    assert_eq!(m.info.source_id(), "myuidw43536");
    assert_eq!(
        m.info.field("version").as_deref(),
        Some("1.1000000000000001")
    );
    assert_eq!(
        m.info.field("created_at").as_deref(),
        Some("564076.02850699995")
    );
    assert_eq!(m.info.field("hostname").as_deref(), Some("BP-LP-022"));
    assert_eq!(m.sample_count(), 175);
    let text = strings(&m.values);
    assert_eq!(text[..5], ["XXX", "Test", "Blah", "Test", "Test-1-2-3"]);
    assert_eq!(
        text[170..],
        ["Test-1-2-3", "Testtest", "Test", "Test-1-2-3", "XXX"]
    );
    let raw = &m.raw_time_stamps;
    let readme_first = [
        653153.212188,
        653156.001700,
        653158.235593,
        653158.674409,
        653161.255786,
    ];
    let readme_last = [255.326187, 255.794242, 257.288286, 258.881481, 259.653828];
    assert_near(&raw[..5], &readme_first, 1e-6);
    assert_near(&raw[170..], &readme_last, 1e-6);
    assert_eq!(m.clock_offsets.len(), 115);
    assert_eq!(
        m.clock_offsets[..2],
        offsets(&[
            (653156.02616855, -652340.28386395),
            (653161.0272351999, -652340.2840392999)
        ])
    );
    let footer = m.footer.as_ref().unwrap();
    assert_eq!(footer.first_timestamp, Some(653153.2121885));
    assert_eq!(footer.last_timestamp, Some(259.6538279));
    assert_eq!(footer.sample_count, Some(175));
    let first = footer.clock_offsets.first().unwrap();
    assert!((first.collection_time - m.clock_offsets[0].collection_time).abs() < 1e-6);
    let last = footer.clock_offsets.last().unwrap();
    assert!((last.collection_time - m.clock_offsets[114].collection_time).abs() < 1e-6);
    assert!((last.value - m.clock_offsets[114].value).abs() < 1e-4);
    // The reset splits the markers after sample 90; each side gets its own fit. pyxdf's
    // stamps agree to 2e-8 s: its 1000-step ADMM fit sums in BLAS order, this one in
    // index order, and the pre-reset offsets are 6.5e5 s (8e-11 s per ulp).
    assert_eq!(m.clock_segments, [(0, 90), (91, 174)]);
    let pick = |s: &XdfStream, idx: &[usize]| -> Vec<f64> {
        idx.iter().map(|&i| s.time_stamps[i]).collect()
    };
    assert_near(
        &pick(m, &[0, 1, 89, 90, 91, 92, 173, 174]),
        &[
            812.9279042059788,
            815.717412793194,
            945.6955553828739,
            946.3535991429817,
            1255.0969479024318,
            1257.3678272092334,
            1380.047107153141,
            1380.8194507223984,
        ],
        5e-8,
    );

    let e = &file.streams[1];
    assert_eq!(e.info.name(), "BioSemi");
    assert_eq!(e.info.content_type(), "EEG");
    assert_eq!(e.info.channel_count(), 8);
    assert_eq!(e.info.nominal_srate(), 100.0);
    assert_eq!(e.info.channel_format(), ChannelFormat::Float32);
    assert_eq!(e.info.source_id(), "myuid34234");
    assert_eq!(e.sample_count(), 27815);
    let v = e.values.as_slice::<f32>().unwrap();
    #[rustfmt::skip]
    #[allow(clippy::approx_constant)] // 0.318 is a README value, not 1/π
    let readme_rows: [(usize, [f32; 8]); 10] = [
        (0, [0.142, 0.463, 0.354, 0.220, 0.761, 0.323, 0.312, 0.861]),
        (1, [0.311, 0.740, 0.949, 0.505, 0.034, 0.518, 0.326, 0.788]),
        (2, [0.611, 0.838, 0.780, 0.767, 0.065, 0.214, 0.044, 0.238]),
        (3, [0.732, 0.318, 0.249, 0.272, 0.923, 0.575, 0.177, 0.086]),
        (4, [0.863, 0.334, 0.301, 0.645, 1.000, 0.248, 0.664, 0.246]),
        (27810, [0.418, 0.359, 0.277, 0.898, 0.627, 0.562, 0.021, 0.015]),
        (27811, [0.061, 0.215, 0.190, 0.046, 0.938, 0.523, 0.931, 0.481]),
        (27812, [0.792, 0.337, 0.299, 0.959, 0.023, 0.603, 0.620, 0.861]),
        (27813, [0.890, 0.883, 0.638, 0.113, 0.022, 0.533, 0.604, 0.743]),
        (27814, [0.873, 0.064, 0.684, 0.153, 0.306, 0.123, 0.711, 0.892]),
    ];
    for (row, want) in readme_rows {
        for (c, w) in want.iter().enumerate() {
            let got = v[row * 8 + c];
            assert!(
                (got - w).abs() <= 5e-4,
                "sample {row} channel {c}: {got} vs {w}"
            );
        }
    }
    assert_eq!(e.raw_time_stamps[0], 653150.379117);
    assert_eq!(e.raw_time_stamps[27814], 261.9267033);
    assert_eq!(e.clock_offsets.len(), 115);
    assert_eq!(e.clock_segments, [(0, 12875), (12876, 27814)]);
    assert_near(
        &pick(e, &[0, 1, 12875, 12876, 27813, 27814]),
        &[
            810.0948474500328,
            810.1056565373437,
            948.2259835769655,
            1221.7819558121594,
            1383.0823195261119,
            1383.0923258825392,
        ],
        5e-8,
    );
}

#[test]
fn clock_resets_xdf_dejittered_matches_the_readme_table() {
    // The README's BioSemi time stamps are pyxdf's dejittered ones without clock sync.
    let options = ReadOptions {
        synchronize_clocks: false,
        dejitter: Some(DejitterOptions::default()),
        ..ReadOptions::default()
    };
    let file = read_file_with(example("clock_resets.xdf"), &options).unwrap();
    let e = &file.streams[1];
    assert_near(
        &e.time_stamps[..5],
        &[
            653150.314061,
            653150.324786,
            653150.335512,
            653150.346237,
            653150.356962,
        ],
        1e-6,
    );
    assert_near(
        &e.time_stamps[27810..],
        &[261.975481, 261.986272, 261.997063, 262.007853, 262.018644],
        1e-6,
    );
    assert_eq!(e.segments, [(0, 12875), (12876, 27814)]);
    assert!(
        (e.effective_srate - 92.934).abs() < 1e-3,
        "{}",
        e.effective_srate
    );
    assert!(e.clock_segments.is_empty());
    // Irregular markers are left as they are.
    assert_eq!(file.streams[0].time_stamps, file.streams[0].raw_time_stamps);
}

#[test]
fn empty_streams_xdf_keeps_empty_streams_and_their_offsets() {
    let file = read_file(example("empty_streams.xdf")).unwrap();
    assert_eq!(file.version().as_deref(), Some("1.0"));
    // Streams in the order of their headers, as pyxdf lists them.
    assert_eq!(ids(&file), [3, 4, 1, 2]);
    for s in &file.streams {
        assert_eq!(s.clock_offsets.len(), 7, "stream {}", s.id);
        assert!(s.info.xml().contains("pylsltools"));
        assert!(s.clock_offsets.iter().all(|o| o.value.abs() < 1e-4));
    }

    let ctrl = file.stream(StreamId(1)).unwrap();
    assert_eq!(ctrl.info.name(), "ctrl");
    assert_eq!(ctrl.info.content_type(), "control");
    assert_eq!(ctrl.info.source_id(), "kassia");
    assert_eq!(ctrl.info.channel_format(), ChannelFormat::String);
    assert_eq!(strings(&ctrl.values), [r#"{"state": 2}"#]);
    assert_eq!(ctrl.raw_time_stamps, [91725.014004246]);
    assert_near(&ctrl.time_stamps, &[91725.01399347662], 1e-9);
    assert_eq!(ctrl.clock_segments, [(0, 0)]);
    assert_eq!(ctrl.effective_srate, 0.0);
    let footer = ctrl.footer.as_ref().unwrap();
    assert_eq!(footer.sample_count, Some(1));
    assert!((ctrl.clock_offsets[0].collection_time - 91716.691545932).abs() < 1e-6);
    assert!((ctrl.clock_offsets[6].collection_time - 91746.69261952251).abs() < 1e-6);

    for (id, name, format) in [
        (
            2,
            "Empty marker stream: test stream 0 counter",
            ChannelFormat::String,
        ),
        (
            3,
            "Empty data stream: test stream 0 counter",
            ChannelFormat::Float32,
        ),
    ] {
        let s = file.stream(StreamId(id)).unwrap();
        assert_eq!(s.info.name(), name);
        assert_eq!(s.info.channel_format(), format);
        assert_eq!(s.sample_count(), 0);
        assert!(s.values.is_empty() && s.time_stamps.is_empty());
        assert!(s.clock_segments.is_empty() && s.segments.is_empty());
        let footer = s.footer.as_ref().unwrap();
        assert_eq!(footer.sample_count, Some(0));
        assert_eq!(footer.first_timestamp, Some(0.0));
    }
    assert_eq!(
        file.stream(StreamId(3)).unwrap().info.channel_labels(),
        ["ch:00"]
    );

    let data = file.stream(StreamId(4)).unwrap();
    assert_eq!(data.info.name(), "Data stream: test stream 0 counter");
    assert_eq!(data.info.channel_format(), ChannelFormat::Int32);
    assert_eq!(data.info.nominal_srate(), 1.0);
    assert_eq!(data.info.channel_labels(), ["ch:00"]);
    assert_eq!(
        data.values.as_slice::<i32>().unwrap(),
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    );
    let raw: Vec<f64> = (0..10).map(|k| 91725.21394789348 + k as f64).collect();
    assert_near(&data.raw_time_stamps, &raw, 1e-8);
    let pyxdf = [
        91725.21392546587,
        91726.21392464642,
        91727.21392382697,
        91728.21392300753,
        91729.21392218808,
        91730.21392136862,
        91731.21392054917,
        91732.21391972972,
        91733.21391891027,
        91734.21391809083,
    ];
    assert_near(&data.time_stamps, &pyxdf, 1e-9);
    assert_eq!(data.clock_segments, [(0, 9)]);
    assert!((data.effective_srate - 1.0).abs() < 1e-5);
}

// ---------------------------------------------------------------------------------
// Write → read round trip.

const F32: StreamId = StreamId(1);
const F64: StreamId = StreamId(2);
const I8: StreamId = StreamId(3);
const I16: StreamId = StreamId(4);
const I32: StreamId = StreamId(5);
const I64: StreamId = StreamId(6);
const MARKERS: StreamId = StreamId(7);

struct Written {
    f32: Vec<f32>,
    f32_stamps: Vec<f64>,
    f64: Vec<f64>,
    i8: Vec<i8>,
    i16: Vec<i16>,
    i32: Vec<i32>,
    i64: Vec<i64>,
    ints_stamps: Vec<f64>,
    markers: Vec<String>,
    marker_stamps: Vec<f64>,
    f32_offsets: Vec<ClockOffset>,
    marker_offsets: Vec<ClockOffset>,
}

/// Writes one stream of every format, clock offsets, a boundary, and a chunk with
/// omitted stamps.
fn write_every_format(path: &Path) -> Written {
    let mut w = XdfWriter::create(path).unwrap();
    let mut spec = StreamSpec::new("MUA <V1&V4>", "MUA", 3, 100.0, ChannelFormat::Float32);
    spec.source_id = "rig-n".into();
    spec.channel_labels = vec!["e0".into(), "e1".into(), "e2".into()];
    w.add_stream(F32, spec).unwrap();
    w.add_stream(
        F64,
        StreamSpec::new("lfp", "LFP", 2, 1000.0, ChannelFormat::Double64),
    )
    .unwrap();
    for (id, format) in [
        (I8, ChannelFormat::Int8),
        (I16, ChannelFormat::Int16),
        (I32, ChannelFormat::Int32),
        (I64, ChannelFormat::Int64),
    ] {
        w.add_stream(id, StreamSpec::new(format.as_str(), "ints", 2, 0.0, format))
            .unwrap();
    }
    // An LSL header kept verbatim.
    let marker_xml = "<?xml version=\"1.0\"?><info><name>Markers</name><type>Markers</type>\
        <channel_count>2</channel_count><nominal_srate>0</nominal_srate>\
        <channel_format>string</channel_format><source_id>stim</source_id>\
        <uid>abc</uid><desc/></info>";
    w.add_stream(MARKERS, StreamInfo::from_xml(marker_xml).unwrap())
        .unwrap();

    let f32: Vec<f32> = vec![
        0.0,
        -0.0,
        1.5,
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::NEG_INFINITY,
        f32::NAN,
        -1e-30,
        3.25,
        7.0,
        8.0,
        9.0,
        10.0,
        11.0,
        12.0,
    ];
    let f32_stamps = [100.0, 100.01, 100.02];
    w.write_samples_f32(F32, &f32[..6], &f32_stamps[..2])
        .unwrap();
    w.write_clock_offset(F32, 100.015, -0.25).unwrap();
    w.write_boundary().unwrap();
    w.write_samples_f32(F32, &f32[6..9], &f32_stamps[2..3])
        .unwrap();
    // Stamps left out: the reader fills in 100.02 + 0.01 and + 0.02.
    w.write_samples(F32, &f32[9..], Stamps::Nominal { first: None })
        .unwrap();
    w.write_clock_offset(F32, 105.0, -0.25).unwrap();

    let f64 = vec![
        f64::MIN,
        f64::EPSILON,
        -0.0,
        1e300,
        std::f64::consts::PI,
        -2.5,
    ];
    w.write_samples_f64(F64, &f64, &[7.0, 7.001, 7.002])
        .unwrap();
    let ints_stamps = vec![1.0, 2.0];
    let i8 = vec![i8::MIN, i8::MAX, 0, -1];
    let i16 = vec![i16::MIN, i16::MAX, 0, -1];
    let i32 = vec![i32::MIN, i32::MAX, 0, -1];
    let i64 = vec![i64::MIN, i64::MAX, 0, -1];
    w.write_samples_i8(I8, &i8, &ints_stamps).unwrap();
    w.write_samples_i16(I16, &i16, &ints_stamps).unwrap();
    w.write_samples_i32(I32, &i32, &ints_stamps).unwrap();
    w.write_samples_i64(I64, &i64, &ints_stamps).unwrap();

    let markers: Vec<String> = vec![
        "stim_on 17".into(),
        "".into(),
        "stim_off".into(),
        "ünïcödé ✓ <&>".into(),
        "x".repeat(300), // a 4-byte string length
        "end".into(),
    ];
    let marker_stamps = vec![50.0, 51.0, 52.5];
    w.write_samples_str(MARKERS, &markers, &marker_stamps)
        .unwrap();
    w.write_clock_offset(MARKERS, 40.0, 1.0).unwrap();
    w.write_clock_offset(MARKERS, 45.0, 1.0005).unwrap();
    w.write_clock_offset(MARKERS, 50.0, 1.001).unwrap();
    w.finish().unwrap();

    Written {
        f32,
        f32_stamps: vec![100.0, 100.01, 100.02, 100.02 + 0.01, 100.02 + 0.01 + 0.01],
        f64,
        i8,
        i16,
        i32,
        i64,
        ints_stamps,
        markers,
        marker_stamps,
        f32_offsets: offsets(&[(100.015, -0.25), (105.0, -0.25)]),
        marker_offsets: offsets(&[(40.0, 1.0), (45.0, 1.0005), (50.0, 1.001)]),
    }
}

fn bits32(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn bits64(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn every_format_round_trips_exactly_with_offsets_and_a_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("every_format.xdf");
    let w = write_every_format(&path);

    let raw_options = ReadOptions {
        synchronize_clocks: false,
        ..ReadOptions::default()
    };
    let file = read_file_with(&path, &raw_options).unwrap();
    assert_eq!(file.version().as_deref(), Some("1.0"));
    assert_eq!(ids(&file), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(file.boundary_chunks, 1);
    assert_eq!(
        (file.unknown_chunks, file.orphan_chunks, file.lossy_strings),
        (0, 0, 0)
    );

    let s = file.stream(F32).unwrap();
    assert_eq!(s.info.name(), "MUA <V1&V4>");
    assert_eq!(s.info.source_id(), "rig-n");
    assert_eq!(s.info.channel_labels(), ["e0", "e1", "e2"]);
    assert_eq!(bits32(s.values.as_slice::<f32>().unwrap()), bits32(&w.f32));
    assert_eq!(bits64(&s.raw_time_stamps), bits64(&w.f32_stamps));
    assert_eq!(s.time_stamps, s.raw_time_stamps);
    assert_eq!(s.clock_offsets, w.f32_offsets);

    let s = file.stream(F64).unwrap();
    assert_eq!(bits64(s.values.as_slice::<f64>().unwrap()), bits64(&w.f64));
    assert_eq!(s.raw_time_stamps, [7.0, 7.001, 7.002]);
    let get = |id| file.stream(id).unwrap();
    assert_eq!(get(I8).values.as_slice::<i8>().unwrap(), w.i8);
    assert_eq!(get(I16).values.as_slice::<i16>().unwrap(), w.i16);
    assert_eq!(get(I32).values.as_slice::<i32>().unwrap(), w.i32);
    assert_eq!(get(I64).values.as_slice::<i64>().unwrap(), w.i64);
    for id in [I8, I16, I32, I64] {
        assert_eq!(get(id).raw_time_stamps, w.ints_stamps);
        assert_eq!(get(id).info.nominal_srate(), 0.0);
    }

    let m = file.stream(MARKERS).unwrap();
    assert_eq!(m.info.field("uid").as_deref(), Some("abc"));
    assert_eq!(m.values.as_strings().unwrap(), w.markers);
    assert_eq!(m.raw_time_stamps, w.marker_stamps);
    assert_eq!(m.clock_offsets, w.marker_offsets);

    // Footers: first/last stamp, sample count and the clock offsets, exactly.
    for (id, stamps, offsets) in [
        (F32, &w.f32_stamps, &w.f32_offsets),
        (MARKERS, &w.marker_stamps, &w.marker_offsets),
    ] {
        let footer = get(id).footer.clone().unwrap();
        assert_eq!(footer.first_timestamp, stamps.first().copied());
        assert_eq!(footer.last_timestamp, stamps.last().copied());
        assert_eq!(footer.sample_count, Some(stamps.len() as u64));
        assert_eq!(&footer.clock_offsets, offsets);
    }

    // With pyxdf's clock sync: constant offsets shift by the offset, a drifting clock
    // follows the fitted line.
    let synced = read_file(&path).unwrap();
    let s = synced.stream(F32).unwrap();
    let want: Vec<f64> = w.f32_stamps.iter().map(|t| t - 0.25).collect();
    assert_near(&s.time_stamps, &want, 1e-9);
    assert_eq!(s.raw_time_stamps, w.f32_stamps);
    let m = synced.stream(MARKERS).unwrap();
    let want: Vec<f64> = w
        .marker_stamps
        .iter()
        .map(|t| t + 1.0 + 1e-4 * (t - 40.0))
        .collect();
    assert_near(&m.time_stamps, &want, 1e-9);
    assert_eq!(synced.stream(I8).unwrap().time_stamps, w.ints_stamps);
}

#[test]
fn reader_yields_the_written_chunks_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chunks.xdf");
    write_every_format(&path);

    let mut reader = XdfReader::open(&path).unwrap();
    let mut kinds = Vec::new();
    while let Some(chunk) = reader.next_chunk().unwrap() {
        kinds.push(match chunk {
            Chunk::FileHeader { .. } => "header".to_string(),
            Chunk::StreamHeader { stream, .. } => format!("stream {stream}"),
            Chunk::Samples(s) => format!("samples {} x{}", s.stream, s.len()),
            Chunk::ClockOffset { stream, .. } => format!("offset {stream}"),
            Chunk::Boundary => "boundary".to_string(),
            Chunk::StreamFooter { stream, .. } => format!("footer {stream}"),
        });
    }
    let want = [
        "header",
        "stream 1",
        "stream 2",
        "stream 3",
        "stream 4",
        "stream 5",
        "stream 6",
        "stream 7",
        "samples 1 x2",
        "offset 1",
        "boundary",
        "samples 1 x1",
        "samples 1 x2",
        "offset 1",
        "samples 2 x3",
        "samples 3 x2",
        "samples 4 x2",
        "samples 5 x2",
        "samples 6 x2",
        "samples 7 x3",
        "offset 7",
        "offset 7",
        "offset 7",
        "footer 1",
        "footer 2",
        "footer 3",
        "footer 4",
        "footer 5",
        "footer 6",
        "footer 7",
    ];
    assert_eq!(kinds, want);
    assert_eq!(reader.position(), fs::metadata(&path).unwrap().len());
    // Fused after the end.
    assert!(reader.next_chunk().unwrap().is_none());
}

#[test]
fn writer_refuses_writes_that_do_not_fit_the_stream() {
    let mut w = XdfWriter::new(Vec::new()).unwrap();
    let spec = StreamSpec::new("mua", "MUA", 2, 1000.0, ChannelFormat::Float32);
    w.add_stream(F32, spec.clone()).unwrap();
    let err = |r: Result<(), WriteError>| r.unwrap_err().to_string();
    assert!(err(w.add_stream(F32, spec)).contains("already added"));
    assert!(err(w.write_samples_f32(F64, &[1.0, 2.0], &[0.0])).contains("never added"));
    assert!(err(w.write_samples_f64(F32, &[1.0, 2.0], &[0.0])).contains("float32"));
    assert!(err(w.write_samples_f32(F32, &[1.0, 2.0, 3.0], &[0.0])).contains("whole samples"));
    assert!(err(w.write_samples_f32(F32, &[1.0, 2.0], &[0.0, 1.0])).contains("2 time stamps"));
    let bytes = w.finish().unwrap();
    // Nothing bad was written: the file still reads cleanly.
    let file = read_from(XdfReader::new(&bytes[..]).unwrap(), &ReadOptions::default()).unwrap();
    assert_eq!(file.sample_count(), 0);
}

// ---------------------------------------------------------------------------------
// Damaged files: the error names the byte offset and chunk, and what came before is kept.

/// A 4-channel float32 stream in ten chunks of 20 samples, and a marker stream.
fn ten_chunks() -> (Vec<u8>, Vec<f32>) {
    let mut w = XdfWriter::new(Vec::new()).unwrap();
    w.add_stream(
        F32,
        StreamSpec::new("mua", "MUA", 4, 1000.0, ChannelFormat::Float32),
    )
    .unwrap();
    w.add_stream(
        MARKERS,
        StreamSpec::new("m", "Markers", 1, 0.0, ChannelFormat::String),
    )
    .unwrap();
    let values: Vec<f32> = (0..800).map(|k| k as f32 * 0.5).collect();
    for c in 0..10 {
        let stamps: Vec<f64> = (0..20).map(|k| (c * 20 + k) as f64 / 1000.0).collect();
        w.write_samples_f32(F32, &values[c * 80..(c + 1) * 80], &stamps)
            .unwrap();
        w.write_samples_str(MARKERS, &[format!("chunk {c}")], &[c as f64 / 50.0])
            .unwrap();
    }
    (w.finish().unwrap(), values)
}

/// Start offset of each chunk, with a label.
fn chunk_offsets(bytes: &[u8]) -> Vec<(u64, String)> {
    let mut reader = XdfReader::new(bytes).unwrap();
    let mut out = Vec::new();
    loop {
        let at = reader.position();
        match reader.next_chunk().unwrap() {
            None => return out,
            Some(Chunk::Samples(s)) => out.push((at, format!("samples {}", s.stream))),
            Some(_) => out.push((at, "other".into())),
        }
    }
}

fn nth_samples_chunk(bytes: &[u8], stream: StreamId, n: usize) -> u64 {
    chunk_offsets(bytes)
        .into_iter()
        .filter(|(_, l)| *l == format!("samples {stream}"))
        .nth(n)
        .unwrap()
        .0
}

fn read_damaged(dir: &Path, bytes: &[u8]) -> Box<monkeysee::xdf::PartialRead> {
    let path = dir.join("damaged.xdf");
    fs::write(&path, bytes).unwrap();
    read_file(&path).unwrap_err()
}

#[test]
fn file_truncated_mid_chunk_names_the_offset_and_keeps_the_samples_before_it() {
    let (bytes, values) = ten_chunks();
    let chunk = nth_samples_chunk(&bytes, F32, 9);
    // Chunk header (1 + 4 + 2), stream id (4), sample count (2), then 25-byte samples
    // (1 + 8 stamp, 4 × 4 values): cut 3 bytes into the 4th sample's values.
    let cut = chunk as usize + 7 + 4 + 2 + 3 * 25 + 9 + 3;
    let dir = tempfile::tempdir().unwrap();
    let partial = read_damaged(dir.path(), &bytes[..cut]);

    let err = &partial.error;
    assert!(err.is_truncation(), "{err}");
    assert!(matches!(err.kind, ErrorKind::UnexpectedEof(_)), "{err}");
    assert_eq!(
        err.chunk,
        Some(ChunkLocation {
            offset: chunk,
            tag: Some(3)
        })
    );
    assert_eq!(err.offset, cut as u64 - 3);
    let message = partial.to_string();
    assert!(message.contains("damaged.xdf"), "{message}");
    assert!(
        message.contains(&format!("at byte {}", err.offset)),
        "{message}"
    );
    assert!(
        message.contains(&format!("Samples chunk (tag 3) starting at byte {chunk}")),
        "{message}"
    );

    // 9 whole chunks and the 3 complete samples of the cut one.
    let s = partial.file.stream(F32).unwrap();
    assert_eq!(s.sample_count(), 9 * 20 + 3);
    assert_eq!(
        s.values.as_slice::<f32>().unwrap(),
        &values[..(9 * 20 + 3) * 4]
    );
    assert_eq!(partial.file.stream(MARKERS).unwrap().sample_count(), 9);
}

#[test]
fn corrupted_chunk_length_names_the_chunk_and_keeps_what_came_before() {
    let (bytes, values) = ten_chunks();
    let chunk = nth_samples_chunk(&bytes, F32, 4) as usize;
    assert_eq!(bytes[chunk], 4, "a 4-byte length field");
    let length = u32::from_le_bytes(bytes[chunk + 1..chunk + 5].try_into().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let located = Some(ChunkLocation {
        offset: chunk as u64,
        tag: Some(3),
    });

    // Longer than the content: the samples decode, then the length does not add up.
    let mut longer = bytes.clone();
    longer[chunk + 1..chunk + 5].copy_from_slice(&(length + 3).to_le_bytes());
    let partial = read_damaged(dir.path(), &longer);
    let end = (chunk + 5 + length as usize) as u64;
    assert!(
        matches!(partial.error.kind, ErrorKind::LengthMismatch { declared, parsed }
            if declared == u64::from(length) + 3 && parsed == u64::from(length)),
        "{}",
        partial.error
    );
    assert_eq!((partial.error.offset, partial.error.chunk), (end, located));
    assert!(!partial.error.is_truncation());
    let s = partial.file.stream(F32).unwrap();
    assert_eq!(s.sample_count(), 5 * 20);
    assert_eq!(s.values.as_slice::<f32>().unwrap(), &values[..5 * 20 * 4]);

    // Shorter: the last sample's values run past the declared end.
    let mut shorter = bytes.clone();
    shorter[chunk + 1..chunk + 5].copy_from_slice(&(length - 3).to_le_bytes());
    let partial = read_damaged(dir.path(), &shorter);
    assert!(
        matches!(partial.error.kind, ErrorKind::Overrun { .. }),
        "{}",
        partial.error
    );
    assert_eq!(partial.error.chunk, located);
    assert_eq!(partial.error.offset, end - 16);
    assert_eq!(
        partial.file.stream(F32).unwrap().sample_count(),
        4 * 20 + 19
    );

    // Far past the end of the file, on a footer: refused before reading it.
    let footer = chunk_offsets(&bytes).last().unwrap().0 as usize;
    let mut huge = bytes.clone();
    let claimed = match huge[footer] {
        1 => {
            huge[footer + 1] = u8::MAX;
            u64::from(u8::MAX)
        }
        4 => {
            huge[footer + 1..footer + 5].copy_from_slice(&u32::MAX.to_le_bytes());
            u64::from(u32::MAX)
        }
        width => panic!("footer length width {width}"),
    };
    let partial = read_damaged(dir.path(), &huge);
    assert!(partial.error.is_truncation());
    assert!(
        matches!(partial.error.kind, ErrorKind::LengthPastEnd { length, .. } if length == claimed),
        "{}",
        partial.error
    );
    assert_eq!(partial.error.chunk.unwrap().offset, footer as u64);
    assert_eq!(partial.file.stream(F32).unwrap().sample_count(), 200);
}

#[test]
fn bad_magic_and_bad_length_widths_are_errors_at_their_byte() {
    for bytes in [&b""[..], &b"XD"[..], &b"XDG:\x01\x02\x01\x00"[..]] {
        let err = XdfReader::new(bytes).err().unwrap();
        assert!(matches!(err.kind, ErrorKind::BadMagic(_)), "{err}");
        assert_eq!(err.offset, 0);
    }
    let (mut bytes, _) = ten_chunks();
    bytes[4] = 3; // the file header's NumLengthBytes
    let partial =
        read_from(XdfReader::new(&bytes[..]).unwrap(), &ReadOptions::default()).unwrap_err();
    assert!(matches!(partial.error.kind, ErrorKind::BadLengthWidth(3)));
    assert_eq!(partial.error.offset, 4);
    assert!(
        partial.to_string().contains("NumLengthBytes is 3"),
        "{partial}"
    );
}

#[test]
fn unknown_chunk_tags_are_skipped_and_counted() {
    let (bytes, values) = ten_chunks();
    let at = nth_samples_chunk(&bytes, F32, 1) as usize;
    let mut patched = bytes[..at].to_vec();
    patched.extend_from_slice(&[1, 7, 77, 0, b'h', b'e', b'l', b'l', b'o']);
    patched.extend_from_slice(&bytes[at..]);
    let file = read_from(
        XdfReader::new(&patched[..]).unwrap(),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(file.unknown_chunks, 1);
    assert_eq!(
        file.stream(F32).unwrap().values.as_slice::<f32>().unwrap(),
        values
    );
}

#[test]
fn bad_utf8_in_a_header_is_an_error_and_in_a_marker_is_replaced() {
    let (bytes, _) = ten_chunks();
    let text = b"chunk 3";
    let at = bytes.windows(text.len()).position(|w| w == text).unwrap();
    let mut marker = bytes.clone();
    marker[at] = 0xFF;
    let file = read_from(
        XdfReader::new(&marker[..]).unwrap(),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(file.lossy_strings, 1);
    let m = file.stream(MARKERS).unwrap();
    assert_eq!(m.values.as_strings().unwrap()[3], "\u{FFFD}hunk 3");

    let name = b"<name>mua</name>";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + 6;
    let mut header = bytes.clone();
    header[at] = 0xC3; // a lone lead byte
    let partial = read_from(
        XdfReader::new(&header[..]).unwrap(),
        &ReadOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(partial.error.kind, ErrorKind::BadUtf8(_)),
        "{}",
        partial.error
    );
    assert_eq!(partial.error.offset, at as u64);
    assert_eq!(partial.error.chunk.unwrap().tag, Some(2));
}

#[test]
fn no_truncation_or_corruption_panics() {
    let (bytes, _) = ten_chunks();
    // Every prefix: either a clean read of fewer chunks or an error inside the prefix.
    for cut in 0..bytes.len() {
        match XdfReader::new(&bytes[..cut]) {
            Err(e) => assert_eq!(e.offset, 0),
            Ok(reader) => {
                if let Err(p) = read_from(reader, &ReadOptions::default()) {
                    assert!(p.error.offset <= cut as u64, "cut {cut}: {}", p.error);
                }
            }
        }
    }
    // Random byte damage, deterministic.
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..3000 {
        let mut damaged = bytes.clone();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(4..damaged.len());
            damaged[i] = rng.random();
        }
        if let Ok(reader) = XdfReader::new(&damaged[..]) {
            let _ = read_from(reader, &ReadOptions::default());
        }
    }
}

#[test]
fn boundary_uuid_is_the_spec_value() {
    assert_eq!(
        BOUNDARY_UUID,
        [
            0x43, 0xA5, 0x46, 0xDC, 0xCB, 0xF5, 0x41, 0x0F, 0xB3, 0x0E, 0xD5, 0x46, 0x73, 0x83,
            0xCB, 0xE4
        ]
    );
}

// ---------------------------------------------------------------------------------
// Throughput, for measuring (not a behaviour test):
// cargo test --release --test tests xdf::throughput -- --ignored --nocapture

#[test]
#[ignore = "measures MB/s of a 1024-channel, 60 s float32 session; run with --nocapture"]
fn throughput_1024_channels_60_s_float32() {
    const CHANNELS: usize = 1024;
    const RATE: usize = 1000;
    const SECONDS: usize = 60;
    const CHUNK: usize = 100; // samples per chunk: 0.1 s, as an online recorder writes
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("throughput.xdf");

    let mut values = vec![0f32; CHUNK * CHANNELS];
    let mut stamps = vec![0f64; CHUNK];
    let started = Instant::now();
    let mut w = XdfWriter::create(&path).unwrap();
    w.add_stream(
        F32,
        StreamSpec::new("MUA", "MUA", CHANNELS, RATE as f64, ChannelFormat::Float32),
    )
    .unwrap();
    for c in 0..RATE * SECONDS / CHUNK {
        for (k, t) in stamps.iter_mut().enumerate() {
            *t = (c * CHUNK + k) as f64 / RATE as f64;
        }
        for (i, v) in values.iter_mut().enumerate() {
            *v = (c + i) as f32;
        }
        w.write_samples_f32(F32, &values, &stamps).unwrap();
        if c % 50 == 0 {
            w.write_clock_offset(F32, stamps[0], 0.001).unwrap();
        }
    }
    w.finish().unwrap();
    let write_s = started.elapsed().as_secs_f64();
    let bytes = fs::metadata(&path).unwrap().len() as f64;

    let started = Instant::now();
    let mut reader = XdfReader::open(&path).unwrap();
    let mut samples = 0usize;
    let mut checksum = 0f64;
    while let Some(chunk) = reader.next_chunk().unwrap() {
        if let Chunk::Samples(s) = chunk {
            samples += s.len();
            checksum += f64::from(s.values.as_slice::<f32>().unwrap()[0]);
        }
    }
    let read_s = started.elapsed().as_secs_f64();
    assert_eq!(samples, RATE * SECONDS);

    let mb = bytes / 1e6;
    println!(
        "xdf throughput, {CHANNELS} ch × {SECONDS} s × {RATE} Hz float32 ({mb:.0} MB): \
         write {:.0} MB/s ({write_s:.2} s), read {:.0} MB/s ({read_s:.2} s) [checksum {checksum}]",
        mb / write_s,
        mb / read_s
    );
}
