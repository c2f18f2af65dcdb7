//! Fuzzing of the readers of files a user hands to monkeysee: XDF sessions, rig configs
//! (with their RF table), `decoder.json` (with `weights.mpk`), datasets and
//! `normalization.json`.
//!
//! Each target starts from the valid inputs in `tests/fixtures/fuzz/<target>/` (a file
//! per seed, or a folder per seed for inputs made of several files) and applies edits
//! proptest draws: bit flips, byte overwrites, insertions, deletions, truncation,
//! splices from another seed, the format's length fields (XDF chunk lengths and sample
//! counts, `.npy` header lengths) set to extreme values, numbers in the text replaced by
//! extreme ones (`1e12`, `-1`, `NaN`, `2^64`), and files removed. Every case must
//! - return, Ok or Err: a panic fails the case;
//! - return within [`DEADLINE`]: the case runs on its own thread, watched;
//! - never ask for one allocation above [`SINGLE_ALLOCATION_LIMIT`] (the allocator
//!   refuses it, which aborts the test binary with the case's files left under
//!   `target/tmp/fuzz-<target>-<pid>/`), and hold at its peak no more than
//!   [`PEAK_PER_INPUT_BYTE`] times the input's size plus the target's constant.
//!
//! An input that once broke a reader is added to the seeds as `finding-*`, so it is
//! read as it is on every run (and mutated further). proptest keeps the seeds of
//! failing cases in `tests/it/fuzz.proptest-regressions`, replayed first on every run.
//!
//! Cases per target: [`DEFAULT_CASES`] (the whole module runs in seconds in a debug
//! build); `MONKEYSEE_FUZZ_CASES=N` runs N per target. The seeds are rewritten by
//! `cargo test --test tests fuzz::write_seeds -- --ignored`.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{FileFailurePersistence, TestCaseError, TestError, TestRunner};

use monkeysee::config::decoder_config;
use monkeysee::config::{RigConfig, WindowSetKind};
use monkeysee::dataset::Dataset;
use monkeysee::decoder::{CpuBackend, Decoder, DecoderKind};
use monkeysee::norm::NormStats;
use monkeysee::xdf::{self, XdfReader};

use super::common::{allocation_peak_in, repo, untracked};

/// Cases per target in a plain `cargo test`.
const DEFAULT_CASES: u32 = 64;
/// A case running longer than this is a hang.
const DEADLINE: Duration = Duration::from_secs(10);
/// The largest single allocation a reader may ask for.
const SINGLE_ALLOCATION_LIMIT: usize = 256 << 20;
/// Heap a reader may hold at its peak, per byte of its input (on top of its constant).
const PEAK_PER_INPUT_BYTE: u64 = 64;

/// One input: its files, by name (a single file for XDF).
type Input = Vec<(String, Vec<u8>)>;

/// Where a format keeps binary length fields: (byte offset, width in bytes) of each.
type Fields = Vec<(usize, usize)>;

/// A reader under test.
struct Target {
    name: &'static str,
    /// Reads the input written into the folder; what it returns is ignored, only a
    /// panic, a hang or an allocation counts.
    read: fn(&Path, &Input),
    /// Heap the reader may hold at its peak regardless of the input's size.
    peak_constant: u64,
    /// Positions and widths of the binary length fields of a file.
    fields: fn(&str, &[u8]) -> Fields,
}

const XDF: Target = Target {
    name: "xdf",
    read: read_xdf,
    // One Samples chunk's buffers are sized up front for up to 2^20 values and stamps
    // (8 bytes each), and a sample's raw bytes for up to 2^20 channels.
    peak_constant: 64 << 20,
    fields: xdf_fields,
};

const RIG: Target = Target {
    name: "rig",
    read: read_rig,
    peak_constant: 16 << 20,
    fields: no_fields,
};

const DECODER: Target = Target {
    name: "decoder",
    read: read_decoder,
    peak_constant: 64 << 20,
    fields: no_fields,
};

const DATASET: Target = Target {
    name: "dataset",
    read: read_dataset,
    peak_constant: 16 << 20,
    fields: npy_fields,
};

const NORM: Target = Target {
    name: "norm",
    read: read_norm,
    peak_constant: 16 << 20,
    fields: no_fields,
};

fn read_xdf(dir: &Path, input: &Input) {
    let Some((name, bytes)) = input.first() else {
        return;
    };
    let path = dir.join(name);
    for options in [
        xdf::ReadOptions::default(),
        xdf::ReadOptions {
            dejitter: Some(xdf::DejitterOptions::default()),
            ..xdf::ReadOptions::default()
        },
    ] {
        if let Ok(file) = xdf::read_file_with(&path, &options) {
            for s in &file.streams {
                assert_eq!(s.time_stamps.len(), s.sample_count());
                assert_eq!(s.values.len(), s.sample_count() * s.info.channel_count());
            }
        }
    }
    // From memory: without the file's size, so lengths are only checked as read.
    if let Ok(mut reader) = XdfReader::new(&bytes[..]) {
        while let Ok(Some(_)) = reader.next_chunk() {}
    }
}

fn read_rig(dir: &Path, _: &Input) {
    let _ = RigConfig::load_without_rf_table(&dir.join("rig.toml"));
    if let Ok(rig) = RigConfig::load(&dir.join("rig.toml")) {
        let _ = rig.channel_areas();
        let _ = rig.electrodes_per_area();
        for set in [WindowSetKind::Tw15, WindowSetKind::Tw3] {
            let _ = rig.windows.window_names(set);
            let _ = rig.windows.span_end(set);
        }
        for kind in [DecoderKind::Spatial, DecoderKind::Spatiotemporal] {
            decoder_config(&rig, kind, 1).validate().unwrap();
        }
    }
}

fn read_decoder(dir: &Path, _: &Input) {
    let device = Default::default();
    if let Ok(decoder) = Decoder::<CpuBackend>::load(dir, &device) {
        let config = decoder.config().clone();
        let features = vec![0.5; config.n_features()];
        let mut image = vec![0.0; config.image_len()];
        let _ = decoder.reconstruct(&features, &mut image);
    }
}

fn read_dataset(dir: &Path, _: &Input) {
    if let Ok(d) = Dataset::open(dir) {
        for t in 0..d.n_trials() {
            let _ = d.trial(t);
        }
        for i in 0..d.meta.images {
            let _ = d.image_chw(i);
        }
        let _ = (d.split(true), d.split(false), d.sessions());
        let _ = d.electrode_quality();
    }
}

fn read_norm(dir: &Path, _: &Input) {
    // The shapes of the seeds: TW-15 and TW-3 over 6 electrodes, TW-15 over 960.
    for (windows, electrodes) in [(1, 6), (5, 6), (1, 960)] {
        let _ = NormStats::load(dir, windows, electrodes);
    }
}

fn no_fields(_: &str, _: &[u8]) -> Fields {
    Vec::new()
}

fn le(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

/// Each chunk's Length field and each Samples chunk's sample count.
fn xdf_fields(_: &str, b: &[u8]) -> Fields {
    let mut out = Vec::new();
    let mut pos = 4;
    while let Some(&width) = b.get(pos) {
        let width = usize::from(width);
        if !matches!(width, 1 | 4 | 8) || pos + 1 + width > b.len() {
            break;
        }
        out.push((pos + 1, width));
        let body = pos + 1 + width;
        let length = le(&b[pos + 1..body]) as usize;
        let tag = b.get(body..body + 2).map(le);
        if let (Some(3), Some(&count_width)) = (tag, b.get(body + 6)) {
            let count_width = usize::from(count_width);
            if matches!(count_width, 1 | 4 | 8) && body + 7 + count_width <= b.len() {
                out.push((body + 7, count_width));
            }
        }
        pos = body.saturating_add(length);
    }
    out
}

/// The header length of a `.npy` file (2 bytes in version 1, 4 after).
fn npy_fields(name: &str, b: &[u8]) -> Fields {
    match (name.ends_with(".npy"), b.get(6)) {
        (true, Some(1)) => vec![(8, 2)],
        (true, Some(_)) if b.len() >= 12 => vec![(8, 4)],
        _ => Vec::new(),
    }
}

/// Numbers that break arithmetic: written in place of a number in text.
const TEXT_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "-0",
    "0.0",
    "1e12",
    "-1e12",
    "1e308",
    "-1e308",
    "1e-320",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "32",
    "4096",
    "1048576",
    "2147483648",
    "4294967296",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999",
];

/// Values that break arithmetic: written into a binary length field.
fn extreme_integer() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => prop::sample::select(vec![
            0,
            1,
            2,
            5,
            0x7f,
            0xff,
            0x7fff,
            0xffff,
            0x7fff_ffff,
            0xffff_ffff,
            1 << 32,
            1 << 40,
            1 << 62,
            i64::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ]),
        1 => any::<u64>(),
    ]
}

/// One edit of one file of an input.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit {
        at: Index,
        bit: u8,
    },
    Overwrite {
        at: Index,
        bytes: Vec<u8>,
    },
    Insert {
        at: Index,
        bytes: Vec<u8>,
    },
    Delete {
        at: Index,
        len: usize,
    },
    Truncate {
        at: Index,
    },
    /// Copies `len` bytes from a file of any seed of the target.
    Splice {
        seed: Index,
        file: Index,
        from: Index,
        len: usize,
        at: Index,
    },
    /// Repeats a stretch of the file in place (a repeated chunk, line or table).
    Repeat {
        from: Index,
        len: usize,
        times: u8,
    },
    /// Sets one of the format's length fields.
    Field {
        nth: Index,
        value: u64,
    },
    /// Writes a little-endian integer of 1, 2, 4 or 8 bytes anywhere.
    Integer {
        at: Index,
        width: u8,
        value: u64,
    },
    /// Replaces a number written in text.
    Number {
        nth: Index,
        text: &'static str,
    },
    /// Removes the file.
    Remove,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let index = any::<Index>;
    prop_oneof![
        2 => (index(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        2 => (index(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
        1 => (index(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (index(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        1 => index().prop_map(|at| Mutation::Truncate { at }),
        1 => (index(), index(), index(), 1usize..256, index()).prop_map(
            |(seed, file, from, len, at)| Mutation::Splice { seed, file, from, len, at }
        ),
        1 => (index(), 1usize..64, 1u8..8)
            .prop_map(|(from, len, times)| Mutation::Repeat { from, len, times }),
        3 => (index(), extreme_integer()).prop_map(|(nth, value)| Mutation::Field { nth, value }),
        2 => (index(), prop::sample::select(vec![1u8, 2, 4, 8]), extreme_integer())
            .prop_map(|(at, width, value)| Mutation::Integer { at, width, value }),
        4 => (index(), prop::sample::select(TEXT_NUMBERS))
            .prop_map(|(nth, text)| Mutation::Number { nth, text }),
        1 => Just(Mutation::Remove),
    ]
}

/// A case: a seed and the edits made to its files, in order.
#[derive(Clone, Debug)]
struct Case {
    seed: Index,
    edits: Vec<(Index, Mutation)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<Index>(),
        prop::collection::vec((any::<Index>(), mutation()), 1..6),
    )
        .prop_map(|(seed, edits)| Case { seed, edits })
}

/// Byte ranges of the numbers written in text: digits, with a sign, a fraction and an
/// exponent.
fn numbers(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = if i > 0 && b[i - 1] == b'-' { i - 1 } else { i };
            let mut end = i;
            while end < b.len()
                && (b[end].is_ascii_digit()
                    || matches!(b[end], b'.' | b'e' | b'E')
                    || (matches!(b[end], b'-' | b'+') && matches!(b[end - 1], b'e' | b'E')))
            {
                end += 1;
            }
            out.push((start, end));
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

fn apply(target: &Target, seeds: &[Input], case: &Case) -> Input {
    let mut input = case.seed.get(seeds).clone();
    for (file, m) in &case.edits {
        if input.is_empty() {
            break;
        }
        let k = file.index(input.len());
        let name = input[k].0.clone();
        let b = &mut input[k].1;
        let at = |i: &Index, b: &Vec<u8>| i.index(b.len() + 1);
        match m {
            Mutation::FlipBit { at: i, bit } => {
                if !b.is_empty() {
                    let p = i.index(b.len());
                    b[p] ^= 1 << bit;
                }
            }
            Mutation::Overwrite { at: i, bytes } => {
                let p = at(i, b);
                let end = (p + bytes.len()).min(b.len());
                b[p..end].copy_from_slice(&bytes[..end - p]);
            }
            Mutation::Insert { at: i, bytes } => {
                let p = at(i, b);
                b.splice(p..p, bytes.iter().copied());
            }
            Mutation::Delete { at: i, len } => {
                let p = at(i, b);
                let end = (p + len).min(b.len());
                b.drain(p..end);
            }
            Mutation::Truncate { at: i } => {
                let p = at(i, b);
                b.truncate(p);
            }
            Mutation::Splice {
                seed,
                file,
                from,
                len,
                at: i,
            } => {
                let other = seed.get(seeds);
                if !other.is_empty() {
                    let src = &file.get(other).1;
                    let f = from.index(src.len() + 1);
                    let piece = src[f..(f + len).min(src.len())].to_vec();
                    let p = at(i, b);
                    b.splice(p..p, piece);
                }
            }
            Mutation::Repeat { from, len, times } => {
                let f = from.index(b.len() + 1);
                let piece = b[f..(f + len).min(b.len())].to_vec();
                for _ in 0..*times {
                    b.splice(f..f, piece.iter().copied());
                }
            }
            Mutation::Field { nth, value } => {
                let mut fields = (target.fields)(&name, b);
                fields.retain(|&(p, width)| p + width <= b.len());
                if !fields.is_empty() {
                    let (p, width) = *nth.get(&fields);
                    b[p..p + width].copy_from_slice(&value.to_le_bytes()[..width]);
                }
            }
            Mutation::Integer {
                at: i,
                width,
                value,
            } => {
                let width = usize::from(*width);
                if b.len() >= width {
                    let p = i.index(b.len() - width + 1);
                    b[p..p + width].copy_from_slice(&value.to_le_bytes()[..width]);
                }
            }
            Mutation::Number { nth, text } => {
                let spans = numbers(b);
                if !spans.is_empty() {
                    let (s, e) = *nth.get(&spans);
                    b.splice(s..e, text.bytes());
                }
            }
            Mutation::Remove => {
                input.remove(k);
            }
        }
    }
    input
}

/// The seeds of a target: each file, or each folder's files, in
/// `tests/fixtures/fuzz/<target>/`, in name order.
fn load_seeds(target: &str) -> Vec<Input> {
    let dir = seed_dir(target);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    entries
        .into_iter()
        .map(|p| {
            let files: Vec<PathBuf> = if p.is_dir() {
                let mut f: Vec<PathBuf> = std::fs::read_dir(&p)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                f.sort();
                f
            } else {
                vec![p]
            };
            files
                .into_iter()
                .map(|f| {
                    let name = f.file_name().unwrap().to_string_lossy().into_owned();
                    (name, std::fs::read(&f).unwrap())
                })
                .collect()
        })
        .collect()
}

/// Adds a failing input to the target's seeds as `finding-<hash>` (a folder for a
/// target whose inputs are folders), so every later run reads it.
fn save_finding(target: &str, input: &Input) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    input.hash(&mut h);
    let name = format!("finding-{:016x}", h.finish());
    let dir = seed_dir(target);
    match input.as_slice() {
        [(file, bytes)] if target == XDF.name => {
            let path = dir.join(format!(
                "{name}.{}",
                file.rsplit('.').next().unwrap_or("bin")
            ));
            std::fs::write(&path, bytes).unwrap();
            path
        }
        files => {
            let path = dir.join(name);
            std::fs::create_dir_all(&path).unwrap();
            for (file, bytes) in files {
                std::fs::write(path.join(file), bytes).unwrap();
            }
            path
        }
    }
}

fn seed_dir(target: &str) -> PathBuf {
    repo().join("tests/fixtures/fuzz").join(target)
}

/// Where a target's cases are written: the last case stays there if the run aborts.
fn case_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-{target}-{}", std::process::id()))
}

/// What the cases of a run measured, printed at its end (`--nocapture` shows it).
#[derive(Default)]
struct Tally {
    cases: u64,
    slowest: Duration,
    highest_peak: u64,
}

/// Writes `input` into `dir` and reads it on a watched thread.
fn check(
    target: &'static Target,
    dir: &Path,
    input: &Input,
    tally: &std::cell::RefCell<Tally>,
) -> Result<(), TestCaseError> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in input {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let size: u64 = input.iter().map(|(_, b)| b.len() as u64).sum();
    let (done, result) = mpsc::sync_channel(1);
    let (worker_dir, worker_input) = (dir.to_path_buf(), input.clone());
    let started = std::time::Instant::now();
    let worker = std::thread::Builder::new()
        .name(format!("fuzz-{}", target.name))
        .spawn(move || {
            let ((), peak) = allocation_peak_in(single_allocation_limit(), || {
                (target.read)(&worker_dir, &worker_input)
            });
            let _ = done.send(peak);
        })
        .unwrap();
    match result.recv_timeout(DEADLINE) {
        Ok(peak) => {
            worker.join().unwrap();
            let mut t = tally.borrow_mut();
            t.cases += 1;
            t.slowest = t.slowest.max(started.elapsed());
            t.highest_peak = t.highest_peak.max(peak);
            let allowed = PEAK_PER_INPUT_BYTE * size + target.peak_constant;
            if peak > allowed {
                return Err(TestCaseError::fail(format!(
                    "{}: held {peak} bytes at its peak for {size} bytes of input (allowed {allowed})",
                    target.name
                )));
            }
            Ok(())
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Err(TestCaseError::fail(format!(
            "{}: no answer within {DEADLINE:?} (the thread is left running)",
            target.name
        ))),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let panic = worker.join().unwrap_err();
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(TestCaseError::fail(format!(
                "{} panicked: {message}",
                target.name
            )))
        }
    }
}

/// [`SINGLE_ALLOCATION_LIMIT`], or `MONKEYSEE_FUZZ_ALLOCATION_LIMIT` bytes: a lower limit
/// aborts at the allocation that breaks a peak limit, with its backtrace.
fn single_allocation_limit() -> usize {
    std::env::var("MONKEYSEE_FUZZ_ALLOCATION_LIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SINGLE_ALLOCATION_LIMIT)
}

fn cases() -> u32 {
    std::env::var("MONKEYSEE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// Reads every seed as it is, then `cases()` mutated ones.
fn fuzz(target: &'static Target) {
    // The panic hook's backtrace (with RUST_BACKTRACE set) takes hundreds of MiB to
    // symbolicate: not the reader's memory, even for a panic the reader catches itself.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| untracked(|| previous(info))));
    });
    let seeds = load_seeds(target.name);
    assert!(!seeds.is_empty(), "no seeds for {}", target.name);
    let dir = case_dir(target.name);
    let tally = std::cell::RefCell::new(Tally::default());
    let started = std::time::Instant::now();
    for seed in &seeds {
        if let Err(e) = check(target, &dir, seed, &tally) {
            panic!(
                "seed {:?}: {e}",
                seed.iter().map(|f| &f.0).collect::<Vec<_>>()
            );
        }
    }
    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        max_shrink_iters: 256,
        source_file: Some(file!()),
        test_name: Some(target.name),
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(), |c| {
        check(target, &dir, &apply(target, &seeds, &c), &tally)
    });
    if let Err(e) = result {
        if let TestError::Fail(_, case) = &e {
            let saved = save_finding(target.name, &apply(target, &seeds, case));
            panic!(
                "{}: {e}\nthe input is saved as {}",
                target.name,
                saved.display()
            );
        }
        panic!("{}: {e}", target.name);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let t = tally.borrow();
    eprintln!(
        "fuzz {}: {} cases in {:.1} s, slowest {:.1} ms, highest peak {} KiB",
        target.name,
        t.cases,
        started.elapsed().as_secs_f64(),
        t.slowest.as_secs_f64() * 1e3,
        t.highest_peak >> 10
    );
}

#[test]
fn xdf_reader_survives_damaged_sessions() {
    fuzz(&XDF);
}

#[test]
fn rig_config_loader_survives_damaged_configs() {
    fuzz(&RIG);
}

#[test]
fn decoder_loader_survives_damaged_models() {
    fuzz(&DECODER);
}

#[test]
fn dataset_reader_survives_damaged_datasets() {
    fuzz(&DATASET);
}

#[test]
fn norm_loader_survives_damaged_statistics() {
    fuzz(&NORM);
}

/// A `.npy` file: `descr`, `shape`, the data bytes, header `version` 1 or 2.
fn npy(descr: &str, shape: &[usize], data: &[u8], version: u8) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let dims = if dims.len() == 1 {
        format!("{},", dims[0])
    } else {
        dims.join(", ")
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
    let prefix = if version == 1 { 10 } else { 12 };
    while (prefix + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY".to_vec();
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.extend_from_slice(data);
    out
}

fn write_dataset_seed(dir: &Path, time_averaged: bool, version: u8, extras: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let (trials, time, channels, images, size) = (4, if time_averaged { 1 } else { 10 }, 4, 2, 8);
    let meta = serde_json::json!({
        "format": "monkeysee-dataset",
        "version": 1,
        "rig": "synthetic",
        "channels": channels,
        "sampling_rate_hz": 1000.0,
        "image_size": size,
        "onset_sample": if time_averaged { 0 } else { 4 },
        "images": images,
        "trials": trials,
        "seed": 7,
        "time_averaged": time_averaged,
    });
    let write = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).unwrap();
    write("dataset.json", serde_json::to_vec_pretty(&meta).unwrap());
    let responses: Vec<u8> = (0..trials * time * channels)
        .flat_map(|i| ((i % 7) as f32 * 0.5).to_le_bytes())
        .collect();
    write(
        "responses.npy",
        npy("<f4", &[trials, time, channels], &responses, version),
    );
    let pixels: Vec<u8> = (0..images * size * size * 3)
        .map(|i| (i * 37 % 256) as u8)
        .collect();
    write(
        "images.npy",
        npy("|u1", &[images, size, size, 3], &pixels, version),
    );
    let trial_image: Vec<u8> = [0i32, 1, 0, 1]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    write(
        "trial_image.npy",
        npy("<i4", &[trials], &trial_image, version),
    );
    write(
        "trial_split.npy",
        npy("|u1", &[trials], &[0, 0, 1, 1], version),
    );
    write("image_ids.txt", b"img-a\nimg-b\n".to_vec());
    write(
        "channels.csv",
        b"channel,label,area,array,live\n1,e1,V1,1,1\n2,e2,V4,2,1\n3,e3,IT,3,1\n4,e4,IT,3,0\n"
            .to_vec(),
    );
    if extras {
        let session: Vec<u8> = [0i32, 0, 1, 1]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        write(
            "trial_session.npy",
            npy("<i4", &[trials], &session, version),
        );
        let onset: Vec<u8> = [1.5f64, 2.5, 3.5, 4.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        write("trial_onset.npy", npy("<f8", &[trials], &onset, version));
        write(
            "electrodes.csv",
            b"channel,snr,reliab\n1,2.5,0.8\n2,1.5,0.6\n3,0.5,0.1\n4,0.0,0.0\n".to_vec(),
        );
    }
}

fn tiny_decoder_config(kind: DecoderKind) -> monkeysee::decoder::DecoderConfig {
    use monkeysee::decoder::{linear::LinearPathwayConfig, DecoderConfig, ElectrodeSpec};
    let windows = if kind == DecoderKind::Spatiotemporal {
        5
    } else {
        1
    };
    DecoderConfig {
        kind,
        width: 1,
        levels: monkeysee::decoder::arch::DEFAULT_LEVELS.to_vec(),
        image_size: 32,
        n_arrays: 3,
        windows_per_electrode: windows,
        window_names: ["V1", "V4", "IT"]
            .iter()
            .flat_map(|a| {
                (0..windows).map(move |w| format!("{a} [{}, {}) ms", 40 + 3 * w, 43 + 3 * w))
            })
            .collect(),
        electrodes: (0..6)
            .map(|e| ElectrodeSpec {
                array: e / 2,
                area: e / 2,
                rf_px: (e % 3 != 2).then_some([8.0 + e as f32, 20.0 - e as f32, 2.5]),
            })
            .collect(),
        linear_pathway: None::<LinearPathwayConfig>,
        channel_per_electrode: false,
        input_scale: 1.0,
    }
}

/// Rewrites the seeds in `tests/fixtures/fuzz/`: copies of shipped files, and small
/// files made with the library.
#[test]
#[ignore = "writes tests/fixtures/fuzz; run by hand when a format changes"]
fn write_seeds() {
    use monkeysee::decoder::linear::LinearPathwayConfig;
    use monkeysee::xdf::{ChannelFormat, StreamId, StreamSpec, XdfWriter};
    let copy = |from: &str, to: &Path| {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(repo().join(from), to).unwrap();
    };

    // XDF: the reference examples, and a session with every value format.
    let d = seed_dir("xdf");
    for f in ["minimal.xdf", "empty_streams.xdf"] {
        copy(&format!("tests/fixtures/xdf-examples/{f}"), &d.join(f));
    }
    let mut w = XdfWriter::create(d.join("all-formats.xdf")).unwrap();
    let formats = ChannelFormat::ALL;
    for (i, &format) in formats.iter().enumerate() {
        let srate = if format == ChannelFormat::String {
            0.0
        } else {
            100.0
        };
        let spec = StreamSpec::new(&format!("s{i}"), "Test", 2, srate, format);
        w.add_stream(StreamId(i as u32 + 1), spec).unwrap();
    }
    for (i, &format) in formats.iter().enumerate() {
        let id = StreamId(i as u32 + 1);
        let stamps = [1.0, 1.01, 1.02];
        let each = monkeysee::xdf::Stamps::Each(&stamps);
        let nominal = monkeysee::xdf::Stamps::Nominal { first: Some(1.03) };
        match format {
            ChannelFormat::Int8 => w.write_samples(id, &[1i8, -2, 3, -4, 5, -6], each),
            ChannelFormat::Int16 => w.write_samples(id, &[1i16, -2, 3, -4, 5, -6], each),
            ChannelFormat::Int32 => w.write_samples(id, &[1i32, -2, 3, -4, 5, -6], each),
            ChannelFormat::Int64 => w.write_samples(id, &[1i64, -2, 3, -4, 5, -6], each),
            ChannelFormat::Float32 => w.write_samples(id, &[0.5f32, 1.5, 2.5, 3.5, 4.5, 5.5], each),
            ChannelFormat::Double64 => {
                w.write_samples(id, &[0.5f64, 1.5, 2.5, 3.5, 4.5, 5.5], each)
            }
            ChannelFormat::String => w.write_strings(id, &["a", "bb", "", "ccc", "é", "x"], each),
        }
        .unwrap();
        if format != ChannelFormat::String {
            match format {
                ChannelFormat::Float32 => w.write_samples(id, &[6.5f32, 7.5, 8.5, 9.5], nominal),
                _ => w.write_samples(id, &[6.5f64, 7.5, 8.5, 9.5], nominal),
            }
            .ok();
        }
        w.write_clock_offset(id, 1.0, -0.25).unwrap();
        w.write_clock_offset(id, 6.0, -0.24).unwrap();
    }
    w.write_boundary().unwrap();
    w.finish().unwrap();

    // Rig configs: the shipped ones (only the synthetic rig names its RF table).
    for name in ["synthetic", "monkey-f", "monkey-n"] {
        let to = seed_dir("rig").join(name);
        copy(
            &format!("firmware-config/{name}.toml"),
            &to.join("rig.toml"),
        );
        if name == "synthetic" {
            copy(
                "firmware-config/synthetic-rf.csv",
                &to.join("synthetic-rf.csv"),
            );
        }
    }

    // Decoders: every kind at width 1 and 32 px over 6 electrodes.
    let mut kinds: Vec<(&str, monkeysee::decoder::DecoderConfig)> = vec![
        ("spatial", tiny_decoder_config(DecoderKind::Spatial)),
        (
            "spatiotemporal",
            tiny_decoder_config(DecoderKind::Spatiotemporal),
        ),
        ("end-to-end", tiny_decoder_config(DecoderKind::EndToEnd)),
        ("baseline", tiny_decoder_config(DecoderKind::Baseline)),
    ];
    let mut per_electrode = tiny_decoder_config(DecoderKind::EndToEnd);
    per_electrode.channel_per_electrode = true;
    kinds.push(("end-to-end-per-electrode", per_electrode));
    let mut linear = tiny_decoder_config(DecoderKind::Spatial);
    linear.linear_pathway = Some(LinearPathwayConfig {
        side: 8,
        residual: true,
    });
    kinds.push(("spatial-linear", linear));
    for (name, config) in kinds {
        let decoder = Decoder::<CpuBackend>::random(config, 1, &Default::default()).unwrap();
        decoder.save(&seed_dir("decoder").join(name)).unwrap();
    }

    // Datasets: version-1 headers, and one with every optional file and version-2 headers.
    write_dataset_seed(&seed_dir("dataset").join("tiny"), false, 1, false);
    write_dataset_seed(&seed_dir("dataset").join("full-v2"), false, 2, true);
    write_dataset_seed(&seed_dir("dataset").join("time-averaged"), true, 1, true);

    // Normalisation statistics: TW-15 and TW-3 over 6 electrodes, and a shipped model's.
    for (name, windows) in [("tw15", 1), ("tw3", 5)] {
        let n = windows * 6;
        let stats = NormStats {
            estimator: monkeysee::norm::ESTIMATOR.into(),
            windows,
            mean: (0..n).map(|i| i as f32 * 0.25).collect(),
            std: (0..n).map(|i| 1.0 + i as f32 * 0.125).collect(),
            baseline_mean: vec![0.5; 6],
            baseline_std: vec![2.0; 6],
            presentations: 40,
            dropped: if windows == 5 { vec![4] } else { Vec::new() },
        };
        let to = seed_dir("norm").join(name);
        std::fs::create_dir_all(&to).unwrap();
        std::fs::write(
            to.join("normalization.json"),
            serde_json::to_string_pretty(&stats).unwrap(),
        )
        .unwrap();
    }
    copy(
        "models/demo-spatial/normalization.json",
        &seed_dir("norm").join("demo-spatial/normalization.json"),
    );
}
