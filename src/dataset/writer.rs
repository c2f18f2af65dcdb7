//! The one writer of the dataset layout ([`crate::dataset`]): one trial at a time, so
//! that neither the simulator nor the importers (`monkeysee dataset` from an XDF
//! session, `monkeysee import-tvsd`) need to know the trial count before they are done,
//! or hold the trials in memory.
//!
//! `responses.npy` is written as trials arrive; its header, which must state the shape,
//! is reserved at the start and filled in by [`DatasetWriter::finish`] (npyz wants the
//! shape before the data). Until then the file holds the trials written so far under a
//! header that says 0 trials: an interrupted import leaves a readable, empty-looking
//! array rather than a lie.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rayon::prelude::*;

use crate::config::RigConfig;

/// Bytes reserved for the `.npy` header of `responses.npy` (magic to newline).
const NPY_HEADER: usize = 128;

/// One trial's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrialInfo {
    /// Row of `images.npy`.
    pub image: usize,
    /// Onset time stamp (the session's clock-corrected LSL time; NaN when unknown).
    pub onset: f64,
    /// Session (recording day) the trial belongs to.
    pub session: u32,
    /// The split, when the source says it (TVSD); `None`: decided by
    /// [`Split::MinRepeats`].
    pub test: Option<bool>,
}

/// How trials are split into train (0) and test (1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Split {
    /// Images shown at least this many times form the test split (as in TVSD: test
    /// images are the repeated ones).
    MinRepeats(usize),
    /// Every trial's [`TrialInfo::test`] says it.
    Given,
}

/// What [`DatasetWriter::finish`] describes besides the trials.
pub struct DatasetInfo<'a> {
    pub rig: &'a RigConfig,
    pub image_ids: &'a [String],
    pub split: Split,
    /// Sampling rate of the responses.
    pub sampling_rate_hz: f64,
    /// Written into `dataset.json` as `source`.
    pub source: serde_json::Value,
    /// The seed the trials were simulated with, if they were (`dataset.json` `seed`).
    pub seed: Option<u64>,
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WrittenDataset {
    pub dir: PathBuf,
    pub trials: usize,
    pub train_trials: usize,
    pub test_trials: usize,
    pub images: usize,
    pub test_images: usize,
    pub sessions: usize,
}

/// A float32 `.npy` file written one row at a time, its row count filled in at the end.
pub struct NpyRows {
    path: PathBuf,
    inner: Vec<usize>,
    row_len: usize,
    rows: usize,
    out: BufWriter<File>,
    bytes: Vec<u8>,
}

impl NpyRows {
    /// Creates `path` for rows of shape `inner`.
    pub fn create(path: &Path, inner: &[usize]) -> anyhow::Result<NpyRows> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&npy_header(0, inner)?)?;
        Ok(NpyRows {
            path: path.to_path_buf(),
            inner: inner.to_vec(),
            row_len: inner.iter().product(),
            rows: 0,
            out,
            bytes: Vec::new(),
        })
    }

    /// Appends one row.
    pub fn push(&mut self, row: &[f32]) -> anyhow::Result<()> {
        if row.len() != self.row_len {
            bail!(
                "{}: a row of {} values, expected {:?}",
                self.path.display(),
                row.len(),
                self.inner
            );
        }
        self.bytes.clear();
        self.bytes.extend(row.iter().flat_map(|v| v.to_le_bytes()));
        self.out
            .write_all(&self.bytes)
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.rows += 1;
        Ok(())
    }

    /// Writes the final row count into the header.
    pub fn finish(self) -> anyhow::Result<()> {
        let path = self.path;
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", path.display()))?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&npy_header(self.rows, &self.inner)?)?;
        file.sync_all()
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Streams trials into `DIR/responses.npy`; the index files at the end.
pub struct DatasetWriter {
    dir: PathBuf,
    channels: usize,
    trial_len: usize,
    onset_sample: usize,
    responses: NpyRows,
    trials: Vec<TrialInfo>,
    /// The windows the trials' means were taken over, for a dataset of window means.
    window_means: Option<serde_json::Value>,
}

impl DatasetWriter {
    /// Creates `dir` (and `responses.npy` in it) for trials of `trial_len` samples ×
    /// `channels`, the onset at sample `onset_sample`.
    pub fn create(
        dir: &Path,
        channels: usize,
        trial_len: usize,
        onset_sample: usize,
    ) -> anyhow::Result<DatasetWriter> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let responses = NpyRows::create(&dir.join("responses.npy"), &[trial_len, channels])?;
        Ok(DatasetWriter {
            dir: dir.to_path_buf(),
            channels,
            trial_len,
            onset_sample,
            responses,
            trials: Vec::new(),
            window_means: None,
        })
    }

    /// The trials will be window means taken over `layout` ([`super::window_layout`]),
    /// not samples: `dataset.json` says so.
    pub fn holding_window_means(mut self, layout: serde_json::Value) -> DatasetWriter {
        self.window_means = Some(layout);
        self
    }

    /// Appends one trial, `[time][channel]` as recorded.
    pub fn push(&mut self, samples: &[f32], info: TrialInfo) -> anyhow::Result<()> {
        self.responses.push(samples)?;
        self.trials.push(info);
        Ok(())
    }

    pub fn trials(&self) -> &[TrialInfo] {
        &self.trials
    }

    /// Fills in the header of `responses.npy` and writes the index files,
    /// `image_ids.txt`, `channels.csv` and `dataset.json` (`images.npy` is
    /// [`write_images`]'s).
    pub fn finish(self, info: DatasetInfo<'_>) -> anyhow::Result<WrittenDataset> {
        let n = self.trials.len();
        self.responses.finish()?;

        let mut shown = vec![0usize; info.image_ids.len()];
        for t in &self.trials {
            shown[t.image] += 1;
        }
        let test: Vec<bool> = self
            .trials
            .iter()
            .map(|t| match info.split {
                Split::MinRepeats(r) => shown[t.image] >= r,
                Split::Given => t.test.unwrap_or(false),
            })
            .collect();
        let d = &self.dir;
        npyz::to_file_1d(
            d.join("trial_image.npy"),
            self.trials.iter().map(|t| t.image as i32),
        )?;
        npyz::to_file_1d(d.join("trial_split.npy"), test.iter().map(|&b| b as u8))?;
        npyz::to_file_1d(
            d.join("trial_onset.npy"),
            self.trials.iter().map(|t| t.onset),
        )?;
        let mut sessions: Vec<u32> = self.trials.iter().map(|t| t.session).collect();
        if sessions.iter().any(|&s| s != 0) {
            npyz::to_file_1d(
                d.join("trial_session.npy"),
                sessions.iter().map(|&s| s as i32),
            )?;
        }
        let mut ids = info.image_ids.join("\n");
        ids.push('\n');
        std::fs::write(d.join("image_ids.txt"), ids)?;
        write_channels_csv(&d.join("channels.csv"), info.rig)?;

        let test_trials = test.iter().filter(|&&b| b).count();
        let mut test_images: Vec<usize> = self
            .trials
            .iter()
            .zip(&test)
            .filter(|(_, &b)| b)
            .map(|(t, _)| t.image)
            .collect();
        test_images.sort_unstable();
        test_images.dedup();
        sessions.sort_unstable();
        sessions.dedup();
        let written = WrittenDataset {
            dir: self.dir.clone(),
            trials: n,
            train_trials: n - test_trials,
            test_trials,
            images: info.image_ids.len(),
            test_images: test_images.len(),
            sessions: sessions.len(),
        };
        let pre_ms = self.onset_sample as f64 * 1000.0 / info.sampling_rate_hz;
        let post_ms = (self.trial_len - self.onset_sample) as f64 * 1000.0 / info.sampling_rate_hz;
        let json = serde_json::json!({
            "format": "monkeysee-dataset",
            "version": 1,
            "rig": info.rig.name,
            "rig_config": info.rig.path,
            "channels": self.channels,
            "sampling_rate_hz": info.sampling_rate_hz,
            "image_size": info.rig.image_size,
            // Window means hold no time axis.
            "trial_time_ms": match self.window_means {
                Some(_) => serde_json::Value::Null,
                None => serde_json::json!([-pre_ms, post_ms - 1000.0 / info.sampling_rate_hz]),
            },
            "onset_sample": self.onset_sample,
            // One value per trial: already averaged over each area's window.
            "time_averaged": self.trial_len == 1 && self.window_means.is_none(),
            "window_means": self.window_means,
            "images": written.images,
            "train_images": written.images - written.test_images,
            "test_images": written.test_images,
            "trials": n,
            "train_trials": written.train_trials,
            "test_trials": written.test_trials,
            "sessions": written.sessions,
            "split": match info.split {
                Split::MinRepeats(r) => format!("images shown at least {r} times are the test split"),
                Split::Given => "as the source says".to_string(),
            },
            "files": {
                "images": "images.npy",
                "image_ids": "image_ids.txt",
                "responses": "responses.npy",
                "trial_image": "trial_image.npy",
                "trial_split": "trial_split.npy",
                "trial_onset": "trial_onset.npy",
                "channels": "channels.csv",
            },
            "source": info.source,
            "seed": info.seed,
            "generator": format!("monkeysee {}", env!("CARGO_PKG_VERSION")),
        });
        std::fs::write(d.join("dataset.json"), serde_json::to_string_pretty(&json)?)?;
        Ok(written)
    }
}

/// A version-1 `.npy` header for float32 `[rows, inner...]`, padded to [`NPY_HEADER`]
/// bytes so it can be rewritten in place with the final row count.
fn npy_header(rows: usize, inner: &[usize]) -> anyhow::Result<Vec<u8>> {
    let shape: Vec<String> = std::iter::once(rows)
        .chain(inner.iter().copied())
        .map(|d| d.to_string())
        .collect();
    let shape = if shape.len() == 1 {
        format!("{},", shape[0])
    } else {
        shape.join(", ")
    };
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape}), }}");
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    let len = NPY_HEADER - 10;
    if dict.len() + 1 > len {
        bail!("a .npy header for shape ({shape}) does not fit {NPY_HEADER} bytes");
    }
    h.extend_from_slice(&(len as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.resize(NPY_HEADER - 1, b' ');
    h.push(b'\n');
    Ok(h)
}

/// Refuses an output folder that already holds a dataset (it is not overwritten).
pub fn check_out(dir: &Path) -> anyhow::Result<()> {
    if dir.join("dataset.json").exists() || dir.join("responses.npy").exists() {
        bail!(
            "{} already holds a dataset; give another --out or remove it first",
            dir.display()
        );
    }
    Ok(())
}

/// Image files under `dir` (recursively) by file stem, for resolving marker ids.
/// Two files with one stem: the first in path order is kept, the other reported.
pub fn index_images(dir: &Path) -> anyhow::Result<(HashMap<String, PathBuf>, Vec<PathBuf>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d)
            .with_context(|| format!("reading the image folder {}", d.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                matches!(
                    e.to_ascii_lowercase().as_str(),
                    "png" | "jpg" | "jpeg" | "bmp" | "gif" | "tif" | "tiff" | "webp"
                )
            }) {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut by_stem = HashMap::new();
    let mut duplicates = Vec::new();
    for f in files {
        let stem = f
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        match by_stem.entry(stem) {
            std::collections::hash_map::Entry::Occupied(_) => duplicates.push(f),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(f);
            }
        }
    }
    Ok((by_stem, duplicates))
}

/// `images.npy` (uint8 `[images, size, size, 3]`), written one image at a time.
pub struct ImageRows {
    path: PathBuf,
    out: npyz::NpyWriter<u8, BufWriter<File>>,
    len: usize,
    expected: usize,
    written: usize,
}

impl ImageRows {
    /// Creates `dir/images.npy` for `n` RGB images of `size`².
    pub fn create(dir: &Path, n: usize, size: usize) -> anyhow::Result<ImageRows> {
        use npyz::WriterBuilder;
        let path = dir.join("images.npy");
        let out = npyz::WriteOptions::<u8>::new()
            .default_dtype()
            .shape(&[n as u64, size as u64, size as u64, 3])
            .writer(BufWriter::new(
                File::create(&path).with_context(|| format!("creating {}", path.display()))?,
            ))
            .begin_nd()?;
        Ok(ImageRows {
            path,
            out,
            len: size * size * 3,
            expected: n,
            written: 0,
        })
    }

    /// Appends one image, row-major RGB.
    pub fn push(&mut self, rgb8: &[u8]) -> anyhow::Result<()> {
        if rgb8.len() != self.len || self.written == self.expected {
            bail!(
                "{}: image {} of {} values, expected {} images of {} values",
                self.path.display(),
                self.written,
                rgb8.len(),
                self.expected,
                self.len
            );
        }
        self.out
            .extend(rgb8.iter().copied())
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.written += 1;
        Ok(())
    }

    pub fn finish(self) -> anyhow::Result<()> {
        if self.written != self.expected {
            bail!(
                "{}: {} images written, {} announced",
                self.path.display(),
                self.written,
                self.expected
            );
        }
        self.out
            .finish()
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Writes `dir/images.npy` from image files: each centre-cropped and resized as
/// `simulate` does, in parallel, with a progress bar when `bar` shows.
pub fn write_images(
    dir: &Path,
    files: &[PathBuf],
    size: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let mut out = ImageRows::create(dir, files.len(), size)?;
    let batch = rayon::current_num_threads().max(1) * 8;
    for chunk in files.chunks(batch) {
        let loaded: Vec<anyhow::Result<Vec<u8>>> = chunk
            .par_iter()
            .map(|f| {
                let img = super::stimulus::load_square(f, size)
                    .with_context(|| format!("cannot decode image {}", f.display()))?;
                Ok(super::stimulus::to_rgb8(&img))
            })
            .collect();
        for img in loaded {
            out.push(&img?)?;
        }
        bar.inc(chunk.len() as u64);
    }
    out.finish()
}

/// The images of an imported dataset, in first-use order: ids, files, and the row each
/// key (a THINGS path, a marker's image id) went to; keys without a file, once each.
#[derive(Default)]
pub(crate) struct Images {
    pub(crate) ids: Vec<String>,
    files: Vec<PathBuf>,
    row: HashMap<String, Option<usize>>,
    pub(crate) missing: Vec<String>,
}

impl Images {
    /// The row of `key`, or `None` when it has no file. `find` gives the id and file of
    /// a key met for the first time.
    pub(crate) fn row(
        &mut self,
        key: &str,
        find: impl FnOnce() -> Option<(String, PathBuf)>,
    ) -> Option<usize> {
        if let Some(&r) = self.row.get(key) {
            return r;
        }
        let r = find().map(|(id, file)| {
            self.ids.push(id);
            self.files.push(file);
            self.ids.len() - 1
        });
        if r.is_none() {
            self.missing.push(key.to_string());
        }
        self.row.insert(key.to_string(), r);
        r
    }

    /// Writes `dir/images.npy` from the files, with a progress bar when `progress`.
    pub(crate) fn write(&self, dir: &Path, size: usize, progress: bool) -> anyhow::Result<()> {
        let bar = crate::telemetry::progress_bar(progress, self.files.len() as u64, "images");
        write_images(dir, &self.files, size, &bar)?;
        bar.finish_and_clear();
        Ok(())
    }
}

/// `channels.csv` of a dataset recorded with `rig`: channel, label, area, array, live.
pub fn write_channels_csv(path: &Path, rig: &RigConfig) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::new(file);
    writeln!(w, "channel,label,area,array,live")?;
    for c in 0..rig.channel_count {
        let array = rig.arrays.iter().find(|a| a.channels.contains(&c));
        writeln!(
            w,
            "{},{},{},{},{}",
            c + 1,
            rig.channel_label(c),
            array.map_or("", |a| a.area.name()),
            array.map_or(String::new(), |a| a.id.to_string()),
            array.is_some_and(|a| !a.dead) as u8
        )?;
    }
    Ok(w.flush()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserved_header_is_a_valid_npy_header() {
        for n in [0, 7, 123_456_789] {
            let h = npy_header(n, &[300, 1024]).unwrap();
            assert_eq!(h.len(), NPY_HEADER);
            assert_eq!(h.len() % 64, 0, "numpy aligns data to 64 bytes");
            let mut bytes = h.clone();
            bytes.extend(std::iter::repeat_n(0u8, n.min(7) * 300 * 1024 * 4));
            if n <= 7 {
                let f = npyz::NpyFile::new(&bytes[..]).unwrap();
                assert_eq!(f.shape(), [n as u64, 300, 1024]);
            }
        }
        let h = npy_header(3, &[]).unwrap();
        let mut bytes = h.clone();
        bytes.extend([0u8; 12]);
        assert_eq!(npyz::NpyFile::new(&bytes[..]).unwrap().shape(), [3]);
    }
}
