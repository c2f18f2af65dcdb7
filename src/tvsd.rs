//! Reader for the published THINGS Ventral Stream Spiking Dataset (TVSD; Papale et al.,
//! Neuron 2025): the trial-by-trial multi-unit activity, the image list and the
//! normalised per-image responses, as MATLAB wrote them.
//!
//! Not real-time: this is the offline side of `monkeysee import-tvsd`. The trials file
//! is about 58 GB, so [`TvsdTrials`] never holds `ALLMUA`: [`TvsdTrials::read_trials`]
//! reads a block of trials as chunk-aligned HDF5 hyperslab reads of at most 16 MiB
//! each into a staging buffer, and transposes and reorders each into the caller's
//! buffer, which is reused. Decompression (MATLAB deflates every chunk) is most of the
//! cost and runs on the calling thread; the HDF5 library allows one call at a time.
//!
//! # The files
//!
//! MATLAB v7.3 `.mat` files are HDF5 files behind a 512-byte user block (HDF5 finds
//! them there). MATLAB stores arrays column-major, so every HDF5 shape below is the
//! MATLAB shape reversed. The layouts follow the dataset's own `_code/norm_MUA.m`:
//!
//! | file | variable | MATLAB | HDF5 |
//! |---|---|---|---|
//! | `THINGS_MUA_trials.mat` | `ALLMUA` (single or double) | electrode × trial × time | (time, trial, channel) |
//! | | `ALLMAT` | trial × 6 (or 7) | (6 or 7, trial) |
//! | | `tb` (ms, optional) | 1 × time | (time, 1) |
//! | `_logs/1024chns_mapping_20220105.mat` | `mapping` | 1 × 1024 | MAT v5, or (1024, 1) in v7.3 |
//! | `_logs/things_imgs.mat` | `train_imgs.things_path`, `test_imgs.things_path` | 1 × n cell of char | (n, 1) object references |
//! | `THINGS_normMUA.mat` | `train_MUA`, `test_MUA` | electrode × image | (image, electrode) |
//! | | `test_MUA_reps` | electrode × test image × repetition | (repetition, test image, electrode) |
//! | | `SNR`, `lats` | electrode × day | (day, electrode) |
//! | | `reliab` | electrode × repetition pair | (pair, electrode) |
//! | | `oracle` | 1 × electrode | (electrode, 1) |
//!
//! `ALLMUA` is in headstage (recording) channel order. The mapping file says where each
//! electrode was recorded: electrode `k` (0-based) is headstage channel `mapping[k] - 1`,
//! as `norm_MUA.m` applies it (`normMUA = normMUA(mapping,:)`). [`TvsdTrials`] applies
//! it; `THINGS_normMUA.mat` was saved after it, so [`read_norm_mua`] does not.
//!
//! The mapping file is not v7.3: the published loaders read it with
//! `scipy.io.loadmat`, which only reads MAT v5. [`read_mapping`] reads both: v7.3 with
//! HDF5, MAT v5 (compressed or not) with the `matfile` crate (0.5), which converts a
//! double array that MATLAB stored as a smaller integer type back to doubles. What it
//! does not do, and how this module copes: it skips cells, structs and sparse arrays
//! without a word (a `mapping` of that kind reads as missing), and reads a file whose
//! last element is cut short as holding no array, not as an error (a file with no
//! numeric array is refused as unreadable); its parse errors say nothing of where (the
//! message names the file and says it is damaged); on some damaged files it prints a
//! line to stdout or stderr itself; and it inflates compressed elements without a
//! limit, so the file is refused above [`MAX_MAPPING_FILE_BYTES`] (deflate expands at
//! most ~1000-fold: a few hundred MB at worst).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use hdf5::types::{FloatSize, Reference, TypeDescriptor};
use hdf5::{Dataset, File, ObjectReference1, ReferencedObject};

/// `ALLMAT`'s columns when it has 6 (`norm_MUA.m`: `[#trial #train_pic #test_pic
/// #pic_rep #ncount #day]`).
const ALLMAT_COLUMNS_6: [&str; 6] = ["trial", "train_pic", "test_pic", "pic_rep", "ncount", "day"];
/// `ALLMAT`'s columns when it has 7: the README's extra `correct` column. Its position
/// is an assumption (before `day`, which `norm_MUA.m` reads as the last column).
const ALLMAT_COLUMNS_7: [&str; 7] = [
    "trial",
    "train_pic",
    "test_pic",
    "pic_rep",
    "ncount",
    "correct",
    "day",
];

/// Least and most bytes of HDF5 chunk cache for `ALLMUA` (see [`ChunkCache`]).
const MIN_CHUNK_CACHE_BYTES: usize = 256 << 20;
const MAX_CHUNK_CACHE_BYTES: usize = 4 << 30;
/// Bytes of one staging read of `ALLMUA`: below glibc's largest mmap threshold (32 MiB),
/// so the buffer is reused from the heap; bigger blocks measured no faster.
const STAGE_BYTES: usize = 16 << 20;
/// The mapping file is read whole; anything bigger is not a channel mapping (1024
/// doubles are 8 kB uncompressed).
const MAX_MAPPING_FILE_BYTES: u64 = 256 << 10;
/// The HDF5 format signature, found at byte 0 or at a power-of-two offset from 512.
const HDF5_SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// Everything that can be wrong with a TVSD file. Each names the file, the MATLAB
/// variable, and what was expected against what was found.
#[derive(Debug, thiserror::Error)]
pub enum TvsdError {
    /// The file could not be read at all (missing, permissions).
    #[error("{}: cannot read the file: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a MAT-file of the kind expected.
    #[error("{}: not {expected}: {found}", file.display())]
    NotMatFile {
        file: PathBuf,
        expected: &'static str,
        found: String,
    },
    /// The HDF5 library refused the file or a variable in it: damaged or incomplete.
    #[error(
        "{}: HDF5 could not read {what} ({detail}); the file is damaged or was cut short \
         (THINGS_MUA_trials.mat is about 58 GB): download it again",
        file.display()
    )]
    Damaged {
        file: PathBuf,
        what: String,
        detail: String,
    },
    /// The MAT v5 mapping file does not follow the format.
    #[error(
        "{}: the MAT v5 data cannot be read ({detail}); the file is damaged or was cut short: copy it again",
        file.display()
    )]
    Mat5 { file: PathBuf, detail: String },
    /// A variable the reader needs is not in the file.
    #[error("{}: no variable `{variable}`; expected {expected}", file.display())]
    Missing {
        file: PathBuf,
        variable: String,
        expected: String,
    },
    /// A variable has the wrong number of dimensions or the wrong sizes.
    #[error(
        "{}: `{variable}` has HDF5 shape {found:?} (MATLAB's dimensions reversed); expected {expected}",
        file.display()
    )]
    Shape {
        file: PathBuf,
        variable: String,
        found: Vec<usize>,
        expected: String,
    },
    /// A variable holds the wrong kind of value (e.g. text where numbers belong).
    #[error("{}: `{variable}` holds {found}; expected {expected}", file.display())]
    Type {
        file: PathBuf,
        variable: String,
        found: String,
        expected: String,
    },
    /// A value inside a variable is out of its range (e.g. a fractional image index).
    #[error("{}: `{variable}`: {problem}", file.display())]
    Value {
        file: PathBuf,
        variable: String,
        problem: String,
    },
    /// The channel mapping is not a permutation of `1..=n`.
    #[error(
        "{}: `mapping` is not a permutation of 1..={n}: {problem}; use the \
         1024chns_mapping file from the same monkey's _logs folder",
        file.display()
    )]
    NotPermutation {
        file: PathBuf,
        n: usize,
        problem: String,
    },
    /// The mapping and `ALLMUA` disagree on the number of channels.
    #[error(
        "{}: `mapping` has {mapping_channels} channels but `ALLMUA` in {} has {trial_channels}; \
         the mapping file belongs to another recording",
        mapping.display(),
        trials.display()
    )]
    ChannelCount {
        mapping: PathBuf,
        trials: PathBuf,
        mapping_channels: usize,
        trial_channels: usize,
    },
    /// An element of a cell array (`things_path`) does not point at a char array.
    #[error("{}: `{variable}` element {index} (0-based): {problem}", file.display())]
    BadReference {
        file: PathBuf,
        variable: String,
        index: usize,
        problem: String,
    },
    /// A block of trials outside `ALLMUA` was asked for (a caller's mistake).
    #[error(
        "{}: trials {first}..{end} asked for, but `ALLMUA` has {n_trials}",
        file.display()
    )]
    TrialRange {
        file: PathBuf,
        first: usize,
        end: usize,
        n_trials: usize,
    },
}

/// Shorthand for this module's results.
pub type Result<T, E = TvsdError> = std::result::Result<T, E>;

// ------------------------------------------------------------------ trials

/// One row of `ALLMAT`: which image a trial showed, and when. Indices are MATLAB's,
/// 1-based, with 0 meaning "not this kind of trial".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrialRow {
    /// `#trial`: the trial's number in the session log.
    pub trial: u32,
    /// `#train_pic`: 1-based index into the train image list; 0 on a test trial.
    pub train_index: u32,
    /// `#test_pic`: 1-based index into the test image list; 0 on a train trial.
    pub test_index: u32,
    /// `#pic_rep`: which showing of this image the trial was (1-based).
    pub repetition: u32,
    /// `#ncount`: the `ncount` column as stored (`norm_MUA.m` takes its SNR baseline
    /// from trials where it is 1).
    pub count: u32,
    /// `correct`, when `ALLMAT` has the README's 7th column (assumed to be the 6th of 7,
    /// before `day`); `None` with the 6 columns of the published loaders.
    pub correct: Option<bool>,
    /// `#day`: the recording day (1-based).
    pub day: u32,
}

/// The image a trial showed, as a 0-based index into [`ImageList::train`] or
/// [`ImageList::test`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialImage {
    Train(usize),
    Test(usize),
}

impl TrialRow {
    /// The image this trial showed; `None` when the row names neither a train nor a test
    /// image (both indices 0).
    pub fn image(&self) -> Option<TrialImage> {
        match (self.train_index, self.test_index) {
            (0, 0) => None,
            (train, 0) => Some(TrialImage::Train(train as usize - 1)),
            (_, test) => Some(TrialImage::Test(test as usize - 1)),
        }
    }
}

/// HDF5's chunk cache for `ALLMUA`, set when the file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChunkCache {
    bytes: usize,
    slots: usize,
}

impl ChunkCache {
    /// Room for two rows of chunks along the trial axis (every chunk that holds some
    /// trial of a chunk's range): a block of trials can end inside one row and the
    /// next block start there, and each chunk is then decompressed once however the
    /// blocks fall. At least [`MIN_CHUNK_CACHE_BYTES`], at most
    /// [`MAX_CHUNK_CACHE_BYTES`]: beyond that (chunks spanning ~900 trials of 300 x
    /// 1024 doubles) blocks should be whole rows, see [`TvsdTrials::chunk_trials`].
    fn for_trial_rows(shape: &[usize], chunk: &[usize], sample_bytes: usize) -> ChunkCache {
        let chunk_bytes = chunk.iter().product::<usize>().max(1) * sample_bytes;
        let across = |dim: usize| shape[dim].div_ceil(chunk[dim].max(1));
        let row_bytes = across(0) * across(2) * chunk_bytes;
        let bytes = row_bytes
            .saturating_mul(2)
            .clamp(MIN_CHUNK_CACHE_BYTES, MAX_CHUNK_CACHE_BYTES);
        // HDF5 advises ~100 hash slots per cached chunk, a prime number of them.
        let slots = next_prime((100 * (bytes / chunk_bytes).max(1)).clamp(10_007, 1_000_003));
        ChunkCache { bytes, slots }
    }
}

/// The smallest prime `>= n` (n is at most a few million here).
fn next_prime(n: usize) -> usize {
    let is_prime = |k: usize| {
        k >= 2
            && (2..)
                .take_while(|d| d * d <= k)
                .all(|d| !k.is_multiple_of(d))
    };
    (n..).find(|&k| is_prime(k)).unwrap_or(n)
}

/// An open `THINGS_MUA_trials.mat` with its channel mapping: shapes validated, `ALLMAT`
/// and `tb` read, `ALLMUA` left on disk and read a block of trials at a time.
#[derive(Debug)]
pub struct TvsdTrials {
    path: PathBuf,
    allmua: Dataset,
    /// Bytes of one `ALLMUA` sample as stored: 4 (MATLAB single) or 8 (double).
    sample_bytes: usize,
    n_time: usize,
    n_trials: usize,
    /// Electrode `k`'s data is headstage channel `mapping[k]` (0-based).
    mapping: Vec<usize>,
    rows: Vec<TrialRow>,
    time_base: Option<Vec<f64>>,
    chunk_trials: Option<usize>,
    /// Most bytes of `ALLMUA` staged per HDF5 read (see [`TvsdTrials::with_stage_bytes`]).
    stage_bytes: usize,
}

impl TvsdTrials {
    /// Opens the trials file and the mapping file, and checks that they fit together:
    /// `ALLMUA` is 3-D of floats, `ALLMAT` has 6 or 7 columns of whole numbers and as
    /// many trials as `ALLMUA`, `tb` (when present) has one value per time sample, and
    /// the mapping is a permutation of as many channels as `ALLMUA` has.
    pub fn open(trials: &Path, mapping: &Path) -> Result<TvsdTrials> {
        let mapping_values = read_mapping(mapping)?;
        // A first look with HDF5's default chunk cache; reopened below with one sized
        // for ALLMUA's chunks.
        let file = open_mat73(trials, None)?;

        let allmua = dataset(
            &file,
            trials,
            "ALLMUA",
            "the multi-unit activity, HDF5 shape (time, trial, channel)",
        )?;
        let shape = allmua.shape();
        if shape.len() != 3 {
            return Err(shape_error(
                trials,
                "ALLMUA",
                &shape,
                "3 dimensions (time, trial, channel) = MATLAB [electrode x trial x time]",
            ));
        }
        let (n_time, n_trials, n_channels) = (shape[0], shape[1], shape[2]);
        let sample_bytes = match type_of(&allmua, trials, "ALLMUA")? {
            TypeDescriptor::Float(FloatSize::U4) => 4,
            TypeDescriptor::Float(FloatSize::U8) => 8,
            other => {
                return Err(type_error(
                    trials,
                    "ALLMUA",
                    describe(&other),
                    "MATLAB single or double (32- or 64-bit floats)",
                ))
            }
        };
        if mapping_values.len() != n_channels {
            return Err(TvsdError::ChannelCount {
                mapping: mapping.to_path_buf(),
                trials: trials.to_path_buf(),
                mapping_channels: mapping_values.len(),
                trial_channels: n_channels,
            });
        }

        let rows = read_allmat(&file, trials, n_trials)?;
        let time_base = read_time_base(&file, trials, n_time)?;
        let chunk = allmua.chunk();
        let chunk_trials = chunk.as_ref().map(|c| c[1]);
        let allmua = match chunk {
            Some(chunk) => {
                drop(allmua);
                drop(file);
                let cache = ChunkCache::for_trial_rows(&shape, &chunk, sample_bytes);
                let file = open_mat73(trials, Some(cache))?;
                file.dataset("ALLMUA")
                    .map_err(|e| damaged(trials, "`ALLMUA`".into(), &e))?
            }
            None => allmua,
        };
        Ok(TvsdTrials {
            path: trials.to_path_buf(),
            allmua,
            sample_bytes,
            n_time,
            n_trials,
            mapping: mapping_values,
            rows,
            time_base,
            chunk_trials,
            stage_bytes: STAGE_BYTES,
        })
    }

    /// Sets the most bytes of `ALLMUA` one HDF5 read stages (16 MiB by default; always
    /// at least one trial). Bigger measured no faster; smaller bounds memory.
    pub fn with_stage_bytes(mut self, bytes: usize) -> TvsdTrials {
        self.stage_bytes = bytes;
        self
    }

    /// Trials in `ALLMUA` (and rows in `ALLMAT`).
    pub fn n_trials(&self) -> usize {
        self.n_trials
    }

    /// Electrodes (= headstage channels), 1024 in TVSD.
    pub fn n_channels(&self) -> usize {
        self.mapping.len()
    }

    /// Samples per trial, 300 in TVSD (1 kHz, −100 … +199 ms around image onset).
    pub fn n_time(&self) -> usize {
        self.n_time
    }

    /// `ALLMAT`, one row per trial.
    pub fn rows(&self) -> &[TrialRow] {
        &self.rows
    }

    /// The 0-based headstage channel of each electrode.
    pub fn mapping(&self) -> &[usize] {
        &self.mapping
    }

    /// `tb`, one time per sample, as stored (milliseconds from image onset in TVSD:
    /// `norm_MUA.m` divides it by 1000 for seconds); `None` when the file has no `tb`.
    pub fn time_base_ms(&self) -> Option<&[f64]> {
        self.time_base.as_deref()
    }

    /// Trials per HDF5 chunk of `ALLMUA` (`None` if not chunked). Blocks of a multiple
    /// of this many trials, starting at a multiple of it, decompress each chunk once.
    pub fn chunk_trials(&self) -> Option<usize> {
        self.chunk_trials
    }

    /// Reads trials `first..first + n` into `out` as `[trial][time][electrode]` f32,
    /// electrodes in mapped (physical) order. `out` is resized to `n * n_time *
    /// n_channels` and its allocation reused across calls; doubles are rounded to f32.
    /// On error `out` has that length but unspecified contents.
    pub fn read_trials(&self, first: usize, n: usize, out: &mut Vec<f32>) -> Result<()> {
        let end = first.checked_add(n).filter(|&end| end <= self.n_trials);
        let Some(end) = end else {
            return Err(TvsdError::TrialRange {
                file: self.path.clone(),
                first,
                end: first.saturating_add(n),
                n_trials: self.n_trials,
            });
        };
        let (t, c) = (self.n_time, self.mapping.len());
        // Every element is overwritten below: only grow or shrink, no clearing.
        out.resize(n * t * c, 0.0);
        // Sub-blocks aligned to chunk boundaries keep the staging buffer small, so the
        // allocator reuses it instead of mapping fresh pages on every call.
        let step = self.stage_trials();
        let mut at = first;
        while at < end {
            let stop = ((at / step + 1) * step).min(end);
            let dst = &mut out[(at - first) * t * c..(stop - first) * t * c];
            self.read_sub_block(at, stop, dst)?;
            at = stop;
        }
        Ok(())
    }

    /// Trials per staging read: as many as fit the stage size, rounded down to whole
    /// chunks when chunks are smaller (bigger chunks stay in the chunk cache between
    /// reads, see [`ChunkCache::for_trial_rows`]).
    fn stage_trials(&self) -> usize {
        let trial_bytes = self.n_time * self.mapping.len() * self.sample_bytes;
        let fit = (self.stage_bytes / trial_bytes.max(1)).max(1);
        match self.chunk_trials {
            Some(chunk) if chunk <= fit => fit / chunk * chunk,
            _ => fit,
        }
    }

    /// Reads trials `first..end` with one hyperslab read and reorders them into `out`.
    fn read_sub_block(&self, first: usize, end: usize, out: &mut [f32]) -> Result<()> {
        let (t, c, n) = (self.n_time, self.mapping.len(), end - first);
        // The hyperslab arrives as [time][trial][headstage channel], doubles converted
        // to f32 by HDF5 (rounded to nearest, as `as f32` does).
        let stage: ndarray::Array3<f32> = self
            .allmua
            .as_reader()
            .read_slice((0..t, first..end, 0..c))
            .map_err(|e| damaged(&self.path, format!("ALLMUA trials {first}..{end}"), &e))?;
        reorder(&stage.into_raw_vec_and_offset().0, t, n, &self.mapping, out);
        Ok(())
    }
}

/// Transposes a block read from `ALLMUA`, `stage` = `[time][trial][headstage channel]`
/// (`n_time` × `n` × channels), into `out` = `[trial][time][electrode]`, gathering
/// electrode `k` from headstage channel `mapping[k]`.
fn reorder(stage: &[f32], n_time: usize, n: usize, mapping: &[usize], out: &mut [f32]) {
    let c = mapping.len();
    debug_assert_eq!(stage.len(), n_time * n * c);
    debug_assert_eq!(out.len(), n_time * n * c);
    for trial in 0..n {
        for t in 0..n_time {
            let src = &stage[(t * n + trial) * c..][..c];
            let dst = &mut out[(trial * n_time + t) * c..][..c];
            for (d, &h) in dst.iter_mut().zip(mapping) {
                *d = src[h];
            }
        }
    }
}

/// Reads `ALLMAT` (HDF5 (6 or 7, trials), or the transpose) into rows, checking each
/// value is a whole number that fits.
fn read_allmat(file: &File, path: &Path, n_trials: usize) -> Result<Vec<TrialRow>> {
    let ds = dataset(
        file,
        path,
        "ALLMAT",
        "the per-trial table, MATLAB [trial x 6] = [#trial #train_pic #test_pic #pic_rep #ncount #day]",
    )?;
    let bad_row = |problem: String| TvsdError::Value {
        file: path.to_path_buf(),
        variable: "ALLMAT".into(),
        problem,
    };
    let shape = ds.shape();
    let expected = format!(
        "(6 or 7, {n_trials}) = MATLAB [{n_trials} trials x 6 or 7 columns], one row per \
         trial of ALLMUA"
    );
    // columns_first: HDF5 (columns, trials), what MATLAB writes for [trials x columns].
    let (columns, columns_first) = match shape[..] {
        [k @ (6 | 7), n] if n == n_trials => (k, true),
        [n, k @ (6 | 7)] if n == n_trials => (k, false),
        [k @ (6 | 7), n] => {
            return Err(bad_row(format!(
                "it has {n} trials but ALLMUA has {n_trials}; the two must come from the \
                 same THINGS_MUA_trials.mat ({k} columns)"
            )))
        }
        _ => return Err(shape_error(path, "ALLMAT", &shape, &expected)),
    };
    let values = read_f64(&ds, path, "ALLMAT")?;
    let names: &[&str] = if columns == 6 {
        &ALLMAT_COLUMNS_6
    } else {
        &ALLMAT_COLUMNS_7
    };
    let at = |trial: usize, col: usize| {
        if columns_first {
            values[col * n_trials + trial]
        } else {
            values[trial * columns + col]
        }
    };
    let whole = |trial: usize, col: usize| -> Result<u32> {
        let v = at(trial, col);
        if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= f64::from(u32::MAX) {
            Ok(v as u32)
        } else {
            Err(bad_row(format!(
                "column {} (`{}`) of trial {} (1-based) is {v}; expected a whole number >= 0",
                col + 1,
                names[col],
                trial + 1
            )))
        }
    };
    let mut rows = Vec::with_capacity(n_trials);
    for i in 0..n_trials {
        let correct = if columns == 7 {
            match whole(i, 5)? {
                0 => Some(false),
                1 => Some(true),
                v => {
                    return Err(bad_row(format!(
                        "column 6 (`correct`) of trial {} (1-based) is {v}; expected 0 or 1",
                        i + 1
                    )))
                }
            }
        } else {
            None
        };
        let row = TrialRow {
            trial: whole(i, 0)?,
            train_index: whole(i, 1)?,
            test_index: whole(i, 2)?,
            repetition: whole(i, 3)?,
            count: whole(i, 4)?,
            correct,
            day: whole(i, columns - 1)?,
        };
        if row.train_index != 0 && row.test_index != 0 {
            return Err(bad_row(format!(
                "trial {} (1-based) names both train image {} and test image {}; a trial shows \
                 one",
                i + 1,
                row.train_index,
                row.test_index
            )));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Reads `tb` if present: one value per time sample of `ALLMUA`.
fn read_time_base(file: &File, path: &Path, n_time: usize) -> Result<Option<Vec<f64>>> {
    if !file.link_exists("tb") {
        return Ok(None);
    }
    let ds = dataset(file, path, "tb", "the time base")?;
    let shape = ds.shape();
    if vector_len(&shape) != Some(n_time) {
        return Err(shape_error(
            path,
            "tb",
            &shape,
            &format!("a vector of {n_time} times, one per ALLMUA time sample"),
        ));
    }
    read_f64(&ds, path, "tb").map(Some)
}

// ------------------------------------------------------------------ mapping

/// Reads the channel mapping (`mapping` in `1024chns_mapping_20220105.mat`, MAT v5 or
/// v7.3) and returns it 0-based: electrode `k`'s data is headstage channel `result[k]`.
/// Fails unless it is a vector holding each of `1..=n` exactly once.
pub fn read_mapping(path: &Path) -> Result<Vec<usize>> {
    let values = match sniff(path)? {
        Kind::Hdf5 => {
            let file = open_mat73(path, None)?;
            let ds = dataset(&file, path, "mapping", "the electrode-to-channel mapping")?;
            let shape = ds.shape();
            if vector_len(&shape).is_none() {
                return Err(shape_error(
                    path,
                    "mapping",
                    &shape,
                    "a vector (1 x n or n x 1)",
                ));
            }
            read_f64(&ds, path, "mapping")?
        }
        Kind::Mat5 => {
            let bytes = read_small_file(path)?;
            let mat = matfile::MatFile::parse(&bytes[..]).map_err(|e| TvsdError::Mat5 {
                file: path.to_path_buf(),
                detail: match &e {
                    matfile::Error::ParseError(nom) => format!("{e}: {nom:?}"),
                    other => other.to_string(),
                },
            })?;
            if mat.arrays().is_empty() {
                return Err(TvsdError::Mat5 {
                    file: path.to_path_buf(),
                    detail: "no numeric array in it: matfile reads none from a file cut short, nor a cell, struct or sparse array".into(),
                });
            }
            let mapping = mat.find_by_name("mapping").ok_or_else(|| missing(
                path,
                "mapping",
                "the electrode-to-channel mapping, a 1 x n real numeric vector (a cell, struct or sparse array is not read)",
            ))?;
            let values = mat5_values(mapping.data()).ok_or_else(|| {
                type_error(path, "mapping", "complex numbers", "a real numeric vector")
            })?;
            let dims = mapping.size();
            if vector_len(dims).is_none() {
                return Err(TvsdError::Shape {
                    file: path.to_path_buf(),
                    variable: "mapping".into(),
                    found: dims.clone(),
                    expected: "a vector (1 x n or n x 1); this MAT v5 shape is MATLAB's order"
                        .into(),
                });
            }
            values
        }
        Kind::Other(found) => {
            return Err(TvsdError::NotMatFile {
                file: path.to_path_buf(),
                expected: "a MAT-file (v5 or v7.3)",
                found,
            })
        }
    };
    permutation(&values).map_err(|problem| TvsdError::NotPermutation {
        file: path.to_path_buf(),
        n: values.len(),
        problem,
    })
}

/// Checks that `values` holds each whole number `1..=n` exactly once (n = its length)
/// and returns them 0-based; otherwise says which value is out of range, or which is
/// repeated and which missing (element positions 1-based, as in MATLAB).
fn permutation(values: &[f64]) -> Result<Vec<usize>, String> {
    let n = values.len();
    if n == 0 {
        return Err("it is empty".into());
    }
    let mut out = Vec::with_capacity(n);
    for (i, &v) in values.iter().enumerate() {
        if !(v.is_finite() && v.fract() == 0.0 && (1.0..=n as f64).contains(&v)) {
            return Err(format!(
                "element {} is {v}, not a whole number in 1..={n}",
                i + 1
            ));
        }
        out.push(v as usize - 1);
    }
    let mut first_at: Vec<Option<usize>> = vec![None; n];
    for (i, &k) in out.iter().enumerate() {
        if let Some(first) = first_at[k] {
            let mut present = vec![false; n];
            out.iter().for_each(|&k| present[k] = true);
            // n values in 1..=n with a repeat: at least one is missing.
            let missing = present.iter().position(|&p| !p).map_or(0, |m| m + 1);
            return Err(format!(
                "value {} appears at elements {} and {}, and value {missing} never appears",
                k + 1,
                first + 1,
                i + 1
            ));
        }
        first_at[k] = Some(i);
    }
    Ok(out)
}

// ------------------------------------------------------------------ images

/// The THINGS paths of the stimuli, in MATLAB's order: `train[i]` is the image of
/// `train_index == i + 1` (and row `i` of `train_MUA`), likewise for test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageList {
    /// Paths under the THINGS `object_images` folder, e.g. `aardvark/aardvark_01b.jpg`.
    pub train: Vec<String>,
    pub test: Vec<String>,
}

/// Reads `train_imgs.things_path` and `test_imgs.things_path` from `things_imgs.mat`:
/// MATLAB cell arrays of char, stored as HDF5 object references to UTF-16 code unit
/// arrays. Backslashes (Windows separators) become `/`, as the published loaders do.
pub fn read_image_list(path: &Path) -> Result<ImageList> {
    let file = open_mat73(path, None)?;
    Ok(ImageList {
        train: read_things_paths(&file, path, "train_imgs")?,
        test: read_things_paths(&file, path, "test_imgs")?,
    })
}

fn read_things_paths(file: &File, path: &Path, group: &str) -> Result<Vec<String>> {
    let variable = format!("{group}.things_path");
    if !file.link_exists(group) {
        return Err(missing(
            path,
            group,
            "a struct with a `things_path` field (a cell array of image paths)",
        ));
    }
    let g = file
        .group(group)
        .map_err(|e| damaged(path, group.into(), &e))?;
    if !g.link_exists("things_path") {
        return Err(missing(
            path,
            variable,
            "a cell array of image paths under the THINGS folder",
        ));
    }
    let ds = g
        .dataset("things_path")
        .map_err(|e| damaged(path, variable.clone(), &e))?;
    let ty = type_of(&ds, path, &variable)?;
    if !matches!(ty, TypeDescriptor::Reference(Reference::Object)) {
        return Err(type_error(
            path,
            &variable,
            describe(&ty),
            "a MATLAB cell array (HDF5 object references)",
        ));
    }
    let shape = ds.shape();
    if shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(shape_error(path, &variable, &shape, "a 1 x n cell array"));
    }
    let refs: Vec<ObjectReference1> = ds
        .read_raw()
        .map_err(|e| damaged(path, variable.clone(), &e))?;
    let bad = |index: usize, problem: String| TvsdError::BadReference {
        file: path.to_path_buf(),
        variable: variable.clone(),
        index,
        problem,
    };
    let mut out = Vec::with_capacity(refs.len());
    for (i, r) in refs.iter().enumerate() {
        let target = file
            .dereference(r)
            .map_err(|e| bad(i, format!("cannot follow it ({e})")))?;
        let ReferencedObject::Dataset(chars) = target else {
            return Err(bad(
                i,
                "it points at a group or type, not a char array".into(),
            ));
        };
        if chars.attr("MATLAB_empty").is_ok() {
            return Err(bad(i, "the path is empty".into()));
        }
        match chars.dtype().and_then(|t| t.to_descriptor()) {
            Ok(TypeDescriptor::Unsigned(hdf5::types::IntSize::U2)) => {}
            Ok(other) => {
                return Err(bad(
                    i,
                    format!(
                        "it points at {}, not a char array (uint16)",
                        describe(&other)
                    ),
                ))
            }
            Err(e) => return Err(bad(i, format!("its type cannot be read ({e})"))),
        }
        let codes: Vec<u16> = chars
            .read_raw()
            .map_err(|e| bad(i, format!("unreadable ({e})")))?;
        let text = String::from_utf16(&codes)
            .map_err(|_| bad(i, "its characters are not valid UTF-16".into()))?;
        if text.is_empty() {
            return Err(bad(i, "the path is empty".into()));
        }
        out.push(text.replace('\\', "/"));
    }
    Ok(out)
}

// ------------------------------------------------------------------ normMUA

/// `THINGS_normMUA.mat`: per image and electrode, the response averaged over the
/// region's time window and z-scored against the day's test trials (`norm_MUA.m`).
/// Already in electrode order: `norm_MUA.m` applies the mapping before saving.
#[derive(Debug, Clone, PartialEq)]
pub struct NormMua {
    /// `train_MUA` as `[n_train][channels]`; row `i` is train image `i + 1`.
    pub train: Vec<f32>,
    pub n_train: usize,
    /// `test_MUA` (mean over repetitions) as `[n_test][channels]`; row `i` is test image `i + 1`.
    pub test: Vec<f32>,
    pub n_test: usize,
    /// `test_MUA_reps`, when present.
    pub test_reps: Option<TestRepetitions>,
    /// Electrodes, 1024 in TVSD.
    pub channels: usize,
    /// `SNR` per electrode: the mean over recording days of the per-day SNR (the
    /// day's peak response over the baseline's standard deviation), NaN days skipped.
    pub snr: Vec<f32>,
    /// `reliab` per electrode: the mean over all pairs of test repetitions of the
    /// correlation between their responses to the test images, NaN pairs skipped (as
    /// the published loaders do, `reliab.mean(axis=0)`, but NaN-tolerant).
    pub reliab: Vec<f32>,
    /// `lats` per electrode, when present: response latency in ms, mean over days.
    pub lats: Option<Vec<f32>>,
    /// `oracle` per electrode, when present: the mean leave-one-repetition-out correlation.
    pub oracle: Option<Vec<f32>>,
}

/// `test_MUA_reps` as `[n_test][n_reps][channels]`. MATLAB grows arrays with zeros, so
/// a test image shown fewer than `n_reps` times has zeros in its missing repetitions.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRepetitions {
    pub values: Vec<f32>,
    pub n_reps: usize,
}

/// Reads `THINGS_normMUA.mat`. `train_MUA` and `test_MUA` may be stored either way round
/// (HDF5 (image, electrode), as `norm_MUA.m` saves them, or transposed): the electrode
/// dimension is the one they share. No mapping is applied (see [`NormMua`]).
pub fn read_norm_mua(path: &Path) -> Result<NormMua> {
    let file = open_mat73(path, None)?;
    let train = read_matrix(
        &file,
        path,
        "train_MUA",
        "the train-image responses, MATLAB [electrode x train image]",
    )?;
    let test = read_matrix(
        &file,
        path,
        "test_MUA",
        "the test-image responses, MATLAB [electrode x test image]",
    )?;
    let (ts, es) = (&train.shape, &test.shape);
    if ts.len() != 2 || es.len() != 2 {
        let (name, shape) = if ts.len() != 2 {
            ("train_MUA", ts)
        } else {
            ("test_MUA", es)
        };
        return Err(shape_error(
            path,
            name,
            shape,
            "2 dimensions (image, electrode) = MATLAB [electrode x image]",
        ));
    }
    // HDF5 (image, electrode) is what norm_MUA.m writes; prefer it when both fit.
    let electrode_last = ts[1] == es[1];
    if !electrode_last && ts[0] != es[0] {
        return Err(TvsdError::Shape {
            file: path.to_path_buf(),
            variable: "train_MUA".into(),
            found: ts.clone(),
            expected: format!(
                "an electrode dimension shared with test_MUA (HDF5 shape {es:?}): (image, \
                 electrode) for both, or (electrode, image) for both"
            ),
        });
    }
    let (channels, n_train, n_test) = if electrode_last {
        (ts[1], ts[0], es[0])
    } else {
        (ts[0], ts[1], es[1])
    };
    let orient = |m: Matrix| {
        if electrode_last {
            m.values
        } else {
            transpose(&m.values, m.shape[0], m.shape[1])
        }
    };
    let test_reps = file
        .link_exists("test_MUA_reps")
        .then(|| read_test_reps(&file, path, channels, n_test))
        .transpose()?;
    let per_electrode = |name: &str, what: &str| -> Result<Option<Vec<f32>>> {
        if !file.link_exists(name) {
            return Ok(None);
        }
        let m = read_matrix(&file, path, name, what)?;
        electrode_means(&m.shape, &m.values, channels)
            .map(Some)
            .ok_or_else(|| {
                shape_error(
                    path,
                    name,
                    &m.shape,
                    &format!("{channels} electrodes, or (k, {channels}), or ({channels}, k)"),
                )
            })
    };
    let required = |name: &str, what: &str| -> Result<Vec<f32>> {
        per_electrode(name, what)?
            .ok_or_else(|| missing(path, name, format!("{what}, per electrode")))
    };
    Ok(NormMua {
        train: orient(train),
        n_train,
        test: orient(test),
        n_test,
        test_reps,
        channels,
        snr: required("SNR", "the signal-to-noise ratio")?,
        reliab: required("reliab", "the reliability across test repetitions")?,
        lats: per_electrode("lats", "the response latency")?,
        oracle: per_electrode("oracle", "the oracle correlation")?,
    })
}

/// A whole variable read as f32, with its HDF5 shape.
struct Matrix {
    shape: Vec<usize>,
    values: Vec<f32>,
}

fn read_matrix(file: &File, path: &Path, name: &str, what: &str) -> Result<Matrix> {
    let ds = dataset(file, path, name, what)?;
    check_numeric(&ds, path, name)?;
    let values: Vec<f32> = ds
        .read_raw()
        .map_err(|e| damaged(path, format!("`{name}`"), &e))?;
    Ok(Matrix {
        shape: ds.shape(),
        values,
    })
}

/// Reads `test_MUA_reps` into `[n_test][n_reps][channels]`, finding which HDF5 axis is
/// which by size: `norm_MUA.m` writes (repetition, test image, electrode); the other
/// orders are accepted when the sizes say so unambiguously enough.
fn read_test_reps(
    file: &File,
    path: &Path,
    channels: usize,
    n_test: usize,
) -> Result<TestRepetitions> {
    let m = read_matrix(file, path, "test_MUA_reps", "test responses per repetition")?;
    let expected = || {
        format!(
            "3 dimensions: repetitions, {n_test} test images and {channels} electrodes, \
             e.g. (repetition, test image, electrode) = MATLAB [electrode x test x repetition]"
        )
    };
    if m.shape.len() != 3 {
        return Err(shape_error(path, "test_MUA_reps", &m.shape, &expected()));
    }
    let Some([rep_axis, test_axis, ch_axis]) = axis_roles(&m.shape, n_test, channels) else {
        return Err(shape_error(path, "test_MUA_reps", &m.shape, &expected()));
    };
    let n_reps = m.shape[rep_axis];
    let strides = [m.shape[1] * m.shape[2], m.shape[2], 1];
    let mut values = Vec::with_capacity(m.values.len());
    for k in 0..n_test {
        for r in 0..n_reps {
            for e in 0..channels {
                let at = k * strides[test_axis] + r * strides[rep_axis] + e * strides[ch_axis];
                values.push(m.values[at]);
            }
        }
    }
    Ok(TestRepetitions { values, n_reps })
}

/// Which HDF5 axis of a 3-D `test_MUA_reps` holds repetitions, test images and
/// electrodes, as `[rep, test, electrode]` axis numbers: the first order, by
/// preference, whose sizes match `n_test` and `channels`.
fn axis_roles(shape: &[usize], n_test: usize, channels: usize) -> Option<[usize; 3]> {
    // norm_MUA.m's (rep, test, electrode) first; then MATLAB [rep x test x electrode]
    // saved the other way round; then the remaining orders.
    const ORDERS: [[usize; 3]; 6] = [
        [0, 1, 2],
        [2, 1, 0],
        [1, 0, 2],
        [0, 2, 1],
        [2, 0, 1],
        [1, 2, 0],
    ];
    ORDERS
        .into_iter()
        .find(|&[_, test, ch]| shape[test] == n_test && shape[ch] == channels)
}

/// Reduces a per-electrode quality measure to one value per electrode: a vector of
/// `channels` values as is; a 2-D (k, channels) or (channels, k) array by the mean over
/// its other dimension (days for `SNR`/`lats`, repetition pairs for `reliab`), skipping
/// NaN (NaN where all are NaN). `None` when no dimension has `channels` entries.
fn electrode_means(shape: &[usize], values: &[f32], channels: usize) -> Option<Vec<f32>> {
    if vector_len(shape) == Some(channels) {
        return Some(values.to_vec());
    }
    let &[rows, cols] = shape else { return None };
    // (k, channels) is MATLAB [electrode x k], what norm_MUA.m writes; prefer it.
    // Element (electrode e, j) is at e * e_stride + j * j_stride.
    let (k, e_stride, j_stride) = if cols == channels {
        (rows, 1, cols)
    } else if rows == channels {
        (cols, cols, 1)
    } else {
        return None;
    };
    let mean = |e: usize| {
        let (sum, n) = (0..k)
            .map(|j| values[e * e_stride + j * j_stride])
            .filter(|v| !v.is_nan())
            .fold((0.0f64, 0usize), |(s, n), v| (s + f64::from(v), n + 1));
        if n == 0 {
            f32::NAN
        } else {
            (sum / n as f64) as f32
        }
    };
    Some((0..channels).map(mean).collect())
}

/// `values` (`rows` × `cols`, row-major) transposed.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(values.len());
    for c in 0..cols {
        out.extend((0..rows).map(|r| values[r * cols + c]));
    }
    out
}

// ------------------------------------------------------------------ HDF5 helpers

/// What a file's first bytes say it is.
enum Kind {
    Hdf5,
    Mat5,
    Other(String),
}

fn sniff(path: &Path) -> Result<Kind> {
    let io = |source| TvsdError::Io {
        file: path.to_path_buf(),
        source,
    };
    let mut head = Vec::with_capacity(2056);
    fs::File::open(path)
        .map_err(io)?
        .take(2056)
        .read_to_end(&mut head)
        .map_err(io)?;
    if [0, 512, 1024, 2048]
        .iter()
        .any(|&at| head.get(at..at + 8) == Some(&HDF5_SIGNATURE[..]))
    {
        return Ok(Kind::Hdf5);
    }
    if head.len() >= 128 && head.starts_with(b"MATLAB 5.0 MAT-file") {
        return Ok(Kind::Mat5);
    }
    let text: String = head
        .iter()
        .take(40)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    Ok(Kind::Other(if head.is_empty() {
        "the file is empty".into()
    } else {
        format!("no HDF5 signature at byte 0 or 512, and it starts {text:?}")
    }))
}

/// Opens a MATLAB v7.3 file, after checking it is HDF5 at all (so a MAT v5 file or a
/// stray text file gets a clear message rather than HDF5's), with `cache` as the
/// chunk cache of its datasets (HDF5's default of 1 MiB without).
fn open_mat73(path: &Path, cache: Option<ChunkCache>) -> Result<File> {
    let found = match sniff(path)? {
        Kind::Hdf5 => None,
        Kind::Mat5 => {
            Some("a MAT v5 file (MATLAB's default save); re-save it with save(..., '-v7.3')".into())
        }
        Kind::Other(found) => Some(found),
    };
    if let Some(found) = found {
        return Err(TvsdError::NotMatFile {
            file: path.to_path_buf(),
            expected: "a MATLAB v7.3 (HDF5) MAT-file",
            found,
        });
    }
    let mut builder = File::with_options();
    if let Some(cache) = cache {
        // w0 = 1: chunks already read in full are the first to go.
        builder.with_fapl(|p| p.chunk_cache(cache.slots, cache.bytes, 1.0));
    }
    builder
        .open(path)
        .map_err(|e| damaged(path, "the file".into(), &e))
}

fn dataset(file: &File, path: &Path, name: &str, expected: &str) -> Result<Dataset> {
    if !file.link_exists(name) {
        return Err(missing(path, name, expected));
    }
    file.dataset(name).map_err(|e| match file.group(name) {
        Ok(_) => type_error(path, name, "a struct or cell (HDF5 group)", expected),
        Err(_) => damaged(path, format!("`{name}`"), &e),
    })
}

fn type_of(ds: &Dataset, path: &Path, name: &str) -> Result<TypeDescriptor> {
    ds.dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| damaged(path, format!("the type of `{name}`"), &e))
}

/// Refuses a variable that does not hold numbers (floats or integers).
fn check_numeric(ds: &Dataset, path: &Path, name: &str) -> Result<()> {
    let ty = type_of(ds, path, name)?;
    if !matches!(
        ty,
        TypeDescriptor::Float(_) | TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_)
    ) {
        return Err(type_error(path, name, describe(&ty), "numbers"));
    }
    Ok(())
}

/// Reads a whole numeric variable as f64.
fn read_f64(ds: &Dataset, path: &Path, name: &str) -> Result<Vec<f64>> {
    check_numeric(ds, path, name)?;
    ds.read_raw()
        .map_err(|e| damaged(path, format!("`{name}`"), &e))
}

/// The length of a vector shape (all dimensions 1 but at most one), else `None`.
fn vector_len(shape: &[usize]) -> Option<usize> {
    match shape.iter().filter(|&&d| d != 1).count() {
        0 => Some(1),
        1 => shape.iter().copied().find(|&d| d != 1),
        _ => None,
    }
}

fn missing(path: &Path, variable: impl Into<String>, expected: impl Into<String>) -> TvsdError {
    TvsdError::Missing {
        file: path.to_path_buf(),
        variable: variable.into(),
        expected: expected.into(),
    }
}

fn type_error(path: &Path, variable: &str, found: impl Into<String>, expected: &str) -> TvsdError {
    TvsdError::Type {
        file: path.to_path_buf(),
        variable: variable.into(),
        found: found.into(),
        expected: expected.into(),
    }
}

fn shape_error(path: &Path, variable: &str, found: &[usize], expected: &str) -> TvsdError {
    TvsdError::Shape {
        file: path.to_path_buf(),
        variable: variable.into(),
        found: found.to_vec(),
        expected: expected.into(),
    }
}

fn damaged(path: &Path, what: String, e: &hdf5::Error) -> TvsdError {
    TvsdError::Damaged {
        file: path.to_path_buf(),
        what,
        detail: e.to_string(),
    }
}

/// A type in words, for error messages.
fn describe(ty: &TypeDescriptor) -> String {
    match ty {
        TypeDescriptor::Float(s) => format!("{}-bit floats", *s as usize * 8),
        TypeDescriptor::Integer(s) => format!("{}-bit integers", *s as usize * 8),
        TypeDescriptor::Unsigned(s) => format!("{}-bit unsigned integers", *s as usize * 8),
        TypeDescriptor::Reference(_) => "references (a MATLAB cell array)".into(),
        TypeDescriptor::Compound(_) => "a compound type".into(),
        TypeDescriptor::Boolean => "booleans".into(),
        _ => "text or another non-numeric type".into(),
    }
}

fn read_small_file(path: &Path) -> Result<Vec<u8>> {
    let io = |source| TvsdError::Io {
        file: path.to_path_buf(),
        source,
    };
    let len = fs::metadata(path).map_err(io)?.len();
    if len > MAX_MAPPING_FILE_BYTES {
        return Err(TvsdError::NotMatFile {
            file: path.to_path_buf(),
            expected: "a channel mapping file (a few kB)",
            found: format!("a {len}-byte file; is this the right path?"),
        });
    }
    fs::read(path).map_err(io)
}

// ------------------------------------------------------------------ MAT v5

/// A MAT v5 array's real values as f64, whatever integer or float type MATLAB stored
/// them as; `None` for complex numbers.
fn mat5_values(data: &matfile::NumericData) -> Option<Vec<f64>> {
    use matfile::NumericData as N;
    fn real<T: Copy + Into<f64>>(real: &[T], imag: &Option<Vec<T>>) -> Option<Vec<f64>> {
        imag.is_none()
            .then(|| real.iter().map(|&v| v.into()).collect())
    }
    match data {
        N::Int8 { real: r, imag: i } => real(r, i),
        N::UInt8 { real: r, imag: i } => real(r, i),
        N::Int16 { real: r, imag: i } => real(r, i),
        N::UInt16 { real: r, imag: i } => real(r, i),
        N::Int32 { real: r, imag: i } => real(r, i),
        N::UInt32 { real: r, imag: i } => real(r, i),
        // 64-bit integers past 2^53 lose digits as f64: no mapping holds such values.
        N::Int64 {
            real: r,
            imag: None,
        } => Some(r.iter().map(|&v| v as f64).collect()),
        N::UInt64 {
            real: r,
            imag: None,
        } => Some(r.iter().map(|&v| v as f64).collect()),
        N::Single { real: r, imag: i } => real(r, i),
        N::Double { real: r, imag: i } => real(r, i),
        N::Int64 { .. } | N::UInt64 { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An uncompressed MAT v5 file with one double array `name` of MATLAB shape `dims`,
    /// its whole-number values stored as uint16 (as MATLAB's save does).
    fn mat5_file(name: &str, dims: [i32; 2], values: &[u16]) -> Vec<u8> {
        fn element(kind: u32, data: &[u8]) -> Vec<u8> {
            let mut v = kind.to_le_bytes().to_vec();
            v.extend((data.len() as u32).to_le_bytes());
            v.extend(data);
            v.resize(v.len().div_ceil(8) * 8, 0);
            v
        }
        let dims: Vec<u8> = dims.iter().flat_map(|d| d.to_le_bytes()).collect();
        let values: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        // Array flags (class 6: double), dimensions, name, real part (miUINT16).
        let mut body = element(6, &[6, 0, 0, 0, 0, 0, 0, 0]);
        body.extend(element(5, &dims));
        body.extend(element(1, name.as_bytes()));
        body.extend(element(4, &values));
        let mut out = b"MATLAB 5.0 MAT-file".to_vec();
        out.resize(124, b' ');
        out.extend([0, 1, b'I', b'M']);
        out.extend(element(14, &body));
        out
    }

    /// A MAT v5 mapping reads back 0-based, whatever type MATLAB stored it as; another
    /// variable is a missing mapping, and a file cut short is named as damaged.
    #[test]
    fn a_mat5_mapping_reads_back_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mapping.mat");
        std::fs::write(&path, mat5_file("mapping", [1, 3], &[3, 1, 2])).unwrap();
        assert_eq!(read_mapping(&path).unwrap(), vec![2, 0, 1]);
        std::fs::write(&path, mat5_file("other", [3, 1], &[3, 1, 2])).unwrap();
        let e = read_mapping(&path).unwrap_err();
        assert!(matches!(e, TvsdError::Missing { .. }), "{e}");
        let bytes = mat5_file("mapping", [1, 3], &[3, 1, 2]);
        std::fs::write(&path, &bytes[..bytes.len() - 12]).unwrap();
        let e = read_mapping(&path).unwrap_err();
        assert!(matches!(e, TvsdError::Mat5 { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("mapping.mat: the MAT v5 data cannot be read"),
            "{e}"
        );
    }

    #[test]
    fn complex_mat5_values_are_refused_and_integers_widened() {
        let ints = matfile::NumericData::Int16 {
            real: vec![-2, 7],
            imag: None,
        };
        assert_eq!(mat5_values(&ints), Some(vec![-2.0, 7.0]));
        let complex = matfile::NumericData::Double {
            real: vec![1.0],
            imag: Some(vec![0.5]),
        };
        assert_eq!(mat5_values(&complex), None);
    }

    #[test]
    fn a_permutation_comes_back_zero_based() {
        assert_eq!(permutation(&[3.0, 1.0, 2.0]), Ok(vec![2, 0, 1]));
    }

    #[test]
    fn a_repeated_value_is_named_with_the_missing_one() {
        let e = permutation(&[2.0, 1.0, 2.0, 4.0]).unwrap_err();
        assert!(e.contains("value 2 appears at elements 1 and 3"), "{e}");
        assert!(e.contains("value 3 never appears"), "{e}");
    }

    #[test]
    fn out_of_range_and_fractional_values_are_refused() {
        assert!(permutation(&[1.0, 3.0])
            .unwrap_err()
            .contains("element 2 is 3"));
        assert!(permutation(&[1.5, 2.0])
            .unwrap_err()
            .contains("element 1 is 1.5"));
        assert!(permutation(&[f64::NAN]).is_err());
        assert!(permutation(&[]).is_err());
    }

    #[test]
    fn reorder_transposes_and_gathers_by_the_mapping() {
        // 2 time samples, 2 trials, 3 channels; stage value = 100*t + 10*trial + headstage.
        let (t_n, n, c) = (2, 2, 3);
        let mut stage = vec![0.0f32; t_n * n * c];
        for t in 0..t_n {
            for trial in 0..n {
                for h in 0..c {
                    stage[(t * n + trial) * c + h] = (100 * t + 10 * trial + h) as f32;
                }
            }
        }
        let mapping = [2, 0, 1];
        let mut out = vec![0.0f32; stage.len()];
        reorder(&stage, t_n, n, &mapping, &mut out);
        for trial in 0..n {
            for t in 0..t_n {
                for (e, &h) in mapping.iter().enumerate() {
                    let want = (100 * t + 10 * trial + h) as f32;
                    assert_eq!(out[(trial * t_n + t) * c + e], want);
                }
            }
        }
    }

    #[test]
    fn test_repetition_axes_are_found_by_size() {
        // norm_MUA.m's (rep, test, electrode) is preferred when sizes allow it.
        assert_eq!(axis_roles(&[30, 100, 1024], 100, 1024), Some([0, 1, 2]));
        assert_eq!(axis_roles(&[1024, 100, 30], 100, 1024), Some([2, 1, 0]));
        assert_eq!(axis_roles(&[1024, 30, 100], 100, 1024), Some([1, 2, 0]));
        assert_eq!(axis_roles(&[30, 99, 1024], 100, 1024), None);
    }

    #[test]
    fn electrode_means_skip_nan_and_accept_either_orientation() {
        // (days = 2, electrodes = 3)
        let v = [1.0, 2.0, f32::NAN, 3.0, 4.0, f32::NAN];
        let m = electrode_means(&[2, 3], &v, 3).unwrap();
        assert_eq!(&m[..2], &[2.0, 3.0]);
        assert!(m[2].is_nan());
        // (electrodes = 3, days = 2)
        let t = transpose(&v, 2, 3);
        assert_eq!(electrode_means(&[3, 2], &t, 3).unwrap()[..2], [2.0, 3.0]);
        assert_eq!(
            electrode_means(&[3, 1], &[1.0, 2.0, 3.0], 3),
            Some(vec![1.0, 2.0, 3.0])
        );
        assert_eq!(electrode_means(&[2, 2], &[0.0; 4], 3), None);
    }

    #[test]
    fn vectors_are_told_from_matrices() {
        assert_eq!(vector_len(&[1, 1024]), Some(1024));
        assert_eq!(vector_len(&[1024, 1]), Some(1024));
        assert_eq!(vector_len(&[1024]), Some(1024));
        assert_eq!(vector_len(&[1, 1]), Some(1));
        assert_eq!(vector_len(&[2, 1024]), None);
    }

    #[test]
    fn a_trial_row_names_its_image_zero_based() {
        let row = TrialRow {
            trial: 1,
            train_index: 5,
            test_index: 0,
            repetition: 1,
            count: 1,
            correct: None,
            day: 1,
        };
        assert_eq!(row.image(), Some(TrialImage::Train(4)));
        let row = TrialRow {
            train_index: 0,
            test_index: 1,
            ..row
        };
        assert_eq!(row.image(), Some(TrialImage::Test(0)));
        let row = TrialRow {
            test_index: 0,
            ..row
        };
        assert_eq!(row.image(), None);
    }

    #[test]
    fn the_chunk_cache_holds_two_rows_of_chunks_within_bounds() {
        // One trial per chunk of 300 x 1024 doubles: two rows are 4.9 MB, so the minimum.
        let c = ChunkCache::for_trial_rows(&[300, 25_000, 1024], &[300, 1, 1024], 8);
        assert_eq!(c.bytes, MIN_CHUNK_CACHE_BYTES);
        // Chunks of (19, 200, 64) doubles: a row is 16 x 16 chunks of 1.9 MB = 498 MB.
        let c = ChunkCache::for_trial_rows(&[300, 25_000, 1024], &[19, 200, 64], 8);
        assert_eq!(c.bytes, 2 * 16 * 16 * 19 * 200 * 64 * 8);
        assert!(c.slots >= 100 * 2 * 256);
        // Rows of thousands of trials: capped.
        let c = ChunkCache::for_trial_rows(&[300, 25_000, 1024], &[300, 5000, 1024], 8);
        assert_eq!(c.bytes, MAX_CHUNK_CACHE_BYTES);
        assert_eq!(next_prime(10_000), 10_007);
    }

    #[test]
    fn errors_can_cross_threads_for_anyhow() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<TvsdError>();
    }
}
