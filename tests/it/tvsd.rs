//! The TVSD reader against small fixtures in the published files' exact layout, written
//! by tools/make-tvsd-fixture.py (h5py: 512-byte user block, deflated chunks, object
//! references, a MAT v5 mapping). Every value is a formula of its indices, so the
//! checks are exact after the reader's transposition and channel reordering.

use std::path::{Path, PathBuf};
use std::process::Command;

use monkeysee::tvsd::{
    read_image_list, read_mapping, read_norm_mua, TrialImage, TrialRow, TvsdError, TvsdTrials,
};

/// The fixture script's default sizes (see its --help), which these tests rely on.
const CHANNELS: usize = 16;
const TIME: usize = 12;
const TRIALS: usize = 37;
const TEST_IMAGES: usize = 3;
const REPS: usize = 3;
const DAYS: usize = 2;
/// Trials 0, 1, 2 of every 4 are train trials.
const TRAIN_IMAGES: usize = TRIALS - TRIALS / 4;

/// The Python that runs the fixture script: `MONKEYSEE_PYTHON`, else the interop venv.
pub(crate) fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MONKEYSEE_PYTHON") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python");
    assert!(
        venv.exists(),
        "the TVSD tests need a Python with numpy and h5py: run .ci/run (it makes \
         target/interop-venv), or `pip install numpy h5py` and set MONKEYSEE_PYTHON to \
         that python"
    );
    venv
}

/// A fixture written into its own temporary folder.
pub(crate) struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    pub(crate) fn new(args: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/make-tvsd-fixture.py");
        let out = Command::new(python())
            .arg(&script)
            .arg(dir.path())
            .args(args)
            .output()
            .expect("running the fixture script");
        assert!(
            out.status.success(),
            "tools/make-tvsd-fixture.py {args:?} failed (does this Python have numpy and \
             h5py? set MONKEYSEE_PYTHON, or run .ci/run):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Fixture { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn trials_file(dir: &Path) -> PathBuf {
    dir.join("THINGS_MUA_trials.mat")
}

fn mapping_file(dir: &Path) -> PathBuf {
    dir.join("_logs/1024chns_mapping_20220105.mat")
}

/// The fixture's ALLMUA value of electrode `e`, trial `i`, sample `t`.
fn mua(i: usize, t: usize, e: usize) -> f32 {
    (((i * TIME + t) * CHANNELS + e) % (1 << 22)) as f32 / 2.0 - 1024.0
}

/// The fixture's ALLMAT row of trial `i` (0-based).
fn row(i: usize, seven_columns: bool) -> TrialRow {
    let test = i % 4 == 3;
    let k = i / 4; // test trials before this one
    let j = i - k; // train trials before this one
    TrialRow {
        trial: i as u32 + 1,
        train_index: if test { 0 } else { (TRAIN_IMAGES - j) as u32 },
        test_index: if test {
            (k % TEST_IMAGES + 1) as u32
        } else {
            0
        },
        repetition: if test {
            (k / TEST_IMAGES + 1) as u32
        } else {
            1
        },
        count: (i % 3 + 1) as u32,
        correct: seven_columns.then_some(i % 5 != 4),
        day: (1 + i * DAYS / TRIALS) as u32,
    }
}

/// Reads every trial in blocks of `block` and checks each value against the formula.
fn check_all_trials(trials: &TvsdTrials, block: usize, out: &mut Vec<f32>) {
    let mut first = 0;
    while first < TRIALS {
        let n = block.min(TRIALS - first);
        trials.read_trials(first, n, out).unwrap();
        assert_eq!(out.len(), n * TIME * CHANNELS);
        for i in 0..n {
            for t in 0..TIME {
                for e in 0..CHANNELS {
                    let got = out[(i * TIME + t) * CHANNELS + e];
                    let want = mua(first + i, t, e);
                    assert_eq!(
                        got,
                        want,
                        "block {block}: trial {}, t {t}, electrode {e}",
                        first + i
                    );
                }
            }
        }
        first += n;
    }
}

#[test]
fn trials_come_back_in_electrode_order_whatever_the_block_size() {
    let f = Fixture::new(&["--no-images", "--chunk-trials", "3"]);
    let open = || TvsdTrials::open(&trials_file(f.path()), &mapping_file(f.path())).unwrap();
    let trials = open();
    assert_eq!(
        (trials.n_trials(), trials.n_time(), trials.n_channels()),
        (TRIALS, TIME, CHANNELS)
    );
    assert_eq!(trials.chunk_trials(), Some(3));
    let mut out = Vec::new();
    // Blocks that straddle the 3-trial chunks, and one read of everything; staged in
    // one read, a trial at a time, and two chunks at a time (7 trials' bytes).
    let trial_bytes = TIME * CHANNELS * 4;
    for stage in [None, Some(1), Some(7 * trial_bytes)] {
        let trials = stage.map_or_else(open, |bytes| open().with_stage_bytes(bytes));
        for block in [1, 4, 5, 7, TRIALS] {
            check_all_trials(&trials, block, &mut out);
        }
    }
    let rows: Vec<TrialRow> = (0..TRIALS).map(|i| row(i, false)).collect();
    assert_eq!(trials.rows(), &rows[..]);
    let tb: Vec<f64> = (0..TIME).map(|t| t as f64 - 100.0).collect();
    assert_eq!(trials.time_base_ms(), Some(&tb[..]));
    // The mapping file is MAT v5 and compressed by default; it is a permutation.
    let mut mapping = read_mapping(&mapping_file(f.path())).unwrap();
    assert_eq!(trials.mapping(), &mapping[..]);
    mapping.sort_unstable();
    assert_eq!(mapping, (0..CHANNELS).collect::<Vec<_>>());
}

#[test]
fn double_allmua_and_seven_allmat_columns_read_the_same() {
    let f = Fixture::new(&[
        "--no-images",
        "--dtype",
        "float64",
        "--allmat-columns",
        "7",
        "--mapping-format",
        "v5-uncompressed",
        "--mapping-shape",
        "column",
        "--chunk-trials",
        "5",
    ]);
    let trials = TvsdTrials::open(&trials_file(f.path()), &mapping_file(f.path())).unwrap();
    let mut out = Vec::new();
    for block in [3, 8] {
        check_all_trials(&trials, block, &mut out);
    }
    // Doubles staged a trial at a time from 5-trial chunks.
    let trials = trials.with_stage_bytes(1);
    check_all_trials(&trials, 12, &mut out);
    let rows: Vec<TrialRow> = (0..TRIALS).map(|i| row(i, true)).collect();
    assert_eq!(trials.rows(), &rows[..]);
    assert_eq!(trials.rows()[3].image(), Some(TrialImage::Test(0)));
    assert_eq!(
        trials.rows()[0].image(),
        Some(TrialImage::Train(TRAIN_IMAGES - 1))
    );
}

#[test]
fn a_v73_mapping_and_a_file_without_tb_are_accepted() {
    let f = Fixture::new(&["--no-images", "--mapping-format", "v73", "--no-tb"]);
    let trials = TvsdTrials::open(&trials_file(f.path()), &mapping_file(f.path())).unwrap();
    assert_eq!(trials.time_base_ms(), None);
    check_all_trials(&trials, 10, &mut Vec::new());
}

#[test]
fn reading_past_the_last_trial_is_refused() {
    let f = Fixture::new(&["--no-images"]);
    let trials = TvsdTrials::open(&trials_file(f.path()), &mapping_file(f.path())).unwrap();
    let mut out = vec![1.0];
    let e = trials.read_trials(TRIALS - 2, 3, &mut out).unwrap_err();
    assert!(matches!(e, TvsdError::TrialRange { .. }), "{e}");
    assert!(e.to_string().contains("`ALLMUA` has 37"), "{e}");
    trials.read_trials(TRIALS, 0, &mut out).unwrap();
    assert!(out.is_empty());
}

#[test]
fn image_paths_decode_utf16_and_windows_separators() {
    let f = Fixture::new(&[]);
    let list = read_image_list(&f.path().join("_logs/things_imgs.mat")).unwrap();
    assert_eq!(list.train.len(), TRAIN_IMAGES);
    assert_eq!(list.train[0], "concept0/concept0_00b.jpg");
    assert_eq!(list.train[1], "crème0/crème0_01b.jpg"); // stored as crème0\crème0_01b.jpg
    assert_eq!(
        list.train[TRAIN_IMAGES - 1],
        format!(
            "concept{0}/concept{0}_{1:02}b.jpg",
            (TRAIN_IMAGES - 1) / 3,
            (TRAIN_IMAGES - 1) % 3
        )
    );
    let test: Vec<String> = (0..TEST_IMAGES)
        .map(|k| format!("testconcept{k}/testconcept{k}_01s.jpg"))
        .collect();
    assert_eq!(list.test, test);
    // The script wrote an image at every path.
    for p in list.train.iter().chain(&list.test) {
        assert!(f.path().join("images").join(p).is_file(), "no image at {p}");
    }
}

#[test]
fn norm_mua_is_read_whichever_way_round_it_was_saved() {
    for orientation in ["matlab", "transposed"] {
        let f = Fixture::new(&["--no-images", "--norm-orientation", orientation]);
        let norm = read_norm_mua(&f.path().join("THINGS_normMUA.mat")).unwrap();
        let c = CHANNELS;
        assert_eq!(
            (norm.channels, norm.n_train, norm.n_test),
            (c, TRAIN_IMAGES, TEST_IMAGES)
        );
        for j in 0..TRAIN_IMAGES {
            for e in 0..c {
                assert_eq!(
                    norm.train[j * c + e],
                    (j * c + e) as f32 + 0.25,
                    "{orientation}"
                );
            }
        }
        for k in 0..TEST_IMAGES {
            for e in 0..c {
                assert_eq!(
                    norm.test[k * c + e],
                    -((k * c + e) as f32) - 0.5,
                    "{orientation}"
                );
            }
        }
        let reps = norm.test_reps.as_ref().unwrap();
        assert_eq!(reps.n_reps, REPS);
        for k in 0..TEST_IMAGES {
            for r in 0..REPS {
                for e in 0..c {
                    let want = ((k * REPS + r) * c + e) as f32 + 0.125;
                    assert_eq!(reps.values[(k * REPS + r) * c + e], want);
                }
            }
        }
        let pairs = REPS * (REPS - 1) / 2;
        for e in 0..c {
            // Means over days (SNR, lats) and over repetition pairs (reliab).
            assert_eq!(norm.snr[e], e as f32 + (DAYS - 1) as f32 / 8.0);
            assert_eq!(
                norm.lats.as_ref().unwrap()[e],
                40.0 + e as f32 + (DAYS - 1) as f32 / 2.0
            );
            let reliab = e as f32 / 1024.0 + (pairs - 1) as f32 / 16.0;
            assert_eq!(norm.reliab[e], reliab);
            assert_eq!(norm.oracle.as_ref().unwrap()[e], e as f32 / 2048.0);
        }
    }
}

/// What one damaged variant must produce.
struct Refusal {
    kind: &'static str,
    /// The file the reader is pointed at (relative to the fixture).
    reads: fn(&Path) -> Result<(), TvsdError>,
    /// Substrings the message must hold: the variable, and what was wrong.
    says: &'static [&'static str],
}

fn open_trials(dir: &Path) -> Result<(), TvsdError> {
    TvsdTrials::open(&trials_file(dir), &mapping_file(dir)).map(drop)
}

fn open_images(dir: &Path) -> Result<(), TvsdError> {
    read_image_list(&dir.join("_logs/things_imgs.mat")).map(drop)
}

fn open_norm(dir: &Path) -> Result<(), TvsdError> {
    read_norm_mua(&dir.join("THINGS_normMUA.mat")).map(drop)
}

#[test]
fn each_damaged_variant_is_refused_naming_the_variable() {
    let f = Fixture::new(&["--no-images", "--broken", "all"]);
    let cases = [
        Refusal {
            kind: "missing-allmat",
            reads: open_trials,
            says: &["no variable `ALLMAT`"],
        },
        Refusal {
            kind: "missing-allmua",
            reads: open_trials,
            says: &["no variable `ALLMUA`"],
        },
        Refusal {
            kind: "allmua-rank",
            reads: open_trials,
            says: &["`ALLMUA` has HDF5 shape [12, 592]", "3 dimensions"],
        },
        Refusal {
            kind: "allmat-columns",
            reads: open_trials,
            says: &["`ALLMAT` has HDF5 shape [5, 37]", "6 or 7"],
        },
        Refusal {
            kind: "allmat-trials",
            reads: open_trials,
            says: &["`ALLMAT`", "37 trials but ALLMUA has 36"],
        },
        Refusal {
            kind: "allmat-fraction",
            reads: open_trials,
            says: &["`ALLMAT`", "column 2 (`train_pic`) of trial 3", "2.5"],
        },
        Refusal {
            kind: "mapping-duplicate",
            reads: open_trials,
            says: &[
                "`mapping` is not a permutation of 1..=16",
                "appears at elements 1 and 3",
                "never appears",
            ],
        },
        Refusal {
            kind: "mapping-length",
            reads: open_trials,
            says: &["`mapping` has 15 channels but `ALLMUA`", "has 16"],
        },
        Refusal {
            kind: "missing-things-path",
            reads: open_images,
            says: &["no variable `test_imgs.things_path`"],
        },
        Refusal {
            kind: "bad-reference",
            reads: open_images,
            says: &["`train_imgs.things_path` element 0", "not a char array"],
        },
        Refusal {
            kind: "missing-train-mua",
            reads: open_norm,
            says: &["no variable `train_MUA`"],
        },
        Refusal {
            kind: "truncated",
            reads: open_trials,
            says: &["THINGS_MUA_trials.mat", "damaged or was cut short"],
        },
    ];
    for case in cases {
        let dir = f.path().join(case.kind);
        let e = (case.reads)(&dir).expect_err(case.kind).to_string();
        for s in case.says {
            assert!(e.contains(s), "{}: {e:?} lacks {s:?}", case.kind);
        }
    }
}

#[test]
fn a_corrupt_chunk_fails_only_the_blocks_that_need_it() {
    let f = Fixture::new(&[
        "--no-images",
        "--broken",
        "corrupt-chunk",
        "--chunk-trials",
        "3",
    ]);
    let trials = TvsdTrials::open(&trials_file(f.path()), &mapping_file(f.path())).unwrap();
    let mut out = Vec::new();
    trials.read_trials(0, 3, &mut out).unwrap();
    assert_eq!(out[5], mua(0, 0, 5));
    let e = trials.read_trials(2, 2, &mut out).unwrap_err();
    assert!(matches!(e, TvsdError::Damaged { .. }), "{e}");
    assert!(e.to_string().contains("ALLMUA trials 2..4"), "{e}");
    trials.read_trials(6, 3, &mut out).unwrap();
    assert_eq!(out[5], mua(6, 0, 5));
}

#[test]
fn files_that_are_not_v73_mat_files_are_named_as_such() {
    let f = Fixture::new(&["--no-images"]);
    let text = f.path().join("notes.mat");
    std::fs::write(&text, "not a MAT-file at all").unwrap();
    let e = TvsdTrials::open(&text, &mapping_file(f.path())).unwrap_err();
    assert!(matches!(e, TvsdError::NotMatFile { .. }), "{e}");
    assert!(e.to_string().contains("notes.mat"), "{e}");
    // The MAT v5 mapping file where a v7.3 file belongs.
    let e = read_image_list(&mapping_file(f.path())).unwrap_err();
    assert!(e.to_string().contains("MAT v5"), "{e}");
    let e = read_mapping(&f.path().join("absent.mat")).unwrap_err();
    assert!(matches!(e, TvsdError::Io { .. }), "{e}");
}
