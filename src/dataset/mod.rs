//! Training datasets in the layout `monkeysee simulate` writes (see [`crate::sim`]):
//! memory-mapped `.npy` arrays, so a dataset far larger than memory can be trained on.
//!
//! [`Dataset::features`] cuts a trial into the decoder's input as the daemon's window
//! stage does live (the mean of each latency window, z-scored per electrode and window
//! with [`crate::norm`]'s statistics, features ordered `[window][electrode]`), and
//! [`Dataset::online_features`] replays the daemon's running estimator itself, so a
//! model sees the same numbers offline and online.
//!
//! [`from_xdf`] builds a dataset from a recorded XDF session, [`writer`] writes one
//! trial at a time; `trial_session.npy` (int32, optional) names each trial's session
//! (TVSD: recording day), over which statistics are taken.

pub mod from_xdf;
pub mod stimulus;
#[cfg(feature = "offline")]
pub mod tvsd_import;
pub mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::Deserialize;

use crate::config::{RigConfig, WindowSetKind};
use crate::norm::{NormStats, PresentationNorm};
use crate::rf::csv_row_line;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("dataset {dataset} does not fit rig {rig}: {message}")]
    RigMismatch {
        dataset: PathBuf,
        rig: PathBuf,
        message: String,
    },
}

impl DatasetError {
    /// An I/O error on `path`, for `map_err`.
    fn io(path: &Path) -> impl Fn(std::io::Error) -> Self + Copy + '_ {
        move |source| DatasetError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// What is wrong with the contents of `path`, for `map_err`.
    fn bad(path: &Path) -> impl Fn(String) -> Self + Copy + '_ {
        move |message| DatasetError::Format {
            path: path.to_path_buf(),
            message,
        }
    }
}

/// `dataset.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct DatasetMeta {
    pub format: String,
    pub version: u32,
    pub rig: String,
    /// The rig config file the dataset was recorded with, if known.
    #[serde(default)]
    pub rig_config: Option<PathBuf>,
    pub channels: usize,
    pub sampling_rate_hz: f64,
    pub image_size: usize,
    pub onset_sample: usize,
    pub images: usize,
    pub trials: usize,
    #[serde(default)]
    pub seed: Option<u64>,
    /// One value per trial and channel (`responses.npy` `[trials, 1, channels]`), already
    /// averaged over each area's window (TVSD's normMUA): every window reads that value.
    #[serde(default)]
    pub time_averaged: bool,
    /// The trials hold window means, not samples (`simulate --dataset-only --form
    /// windows`): `responses.npy` `[trials, 2 + TW-3 windows, channels]`, row 0 each
    /// channel's mean over its area's TW-15 window, then one row per TW-3 window, then
    /// the baseline window; the value is the rig's windows ([`window_layout`]) they were
    /// taken over.
    #[serde(default)]
    pub window_means: Option<serde_json::Value>,
}

/// Every area's TW-15 and TW-3 windows and the baseline, `[start_ms, length_ms]` each:
/// what a dataset of window means records, and is checked against, for a rig.
pub fn window_layout(rig: &RigConfig) -> serde_json::Value {
    let ms = |w: &crate::units::Window| serde_json::json!([w.start.0, w.len.0]);
    let mut areas = serde_json::Map::new();
    for area in crate::units::Area::ALL {
        let set = |s| {
            rig.windows
                .windows_for(s, area)
                .iter()
                .map(ms)
                .collect::<Vec<_>>()
        };
        areas.insert(
            area.name().into(),
            serde_json::json!({"tw15": set(WindowSetKind::Tw15), "tw3": set(WindowSetKind::Tw3)}),
        );
    }
    serde_json::json!({"areas": areas, "baseline": ms(&rig.windows.baseline)})
}

/// One row of a dataset's `electrodes.csv` (TVSD imports): per-electrode quality. The
/// file's other columns (channel, lats, oracle) are not read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ElectrodeQuality {
    pub snr: f32,
    pub reliab: f32,
}

/// One row of `channels.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRow {
    pub area: String,
    pub array: Option<u32>,
    pub live: bool,
}

/// A `.npy` file mapped into memory: its shape and where its data starts.
struct NpyMap {
    map: Mmap,
    offset: usize,
    shape: Vec<usize>,
}

impl NpyMap {
    fn open(path: &Path, descr: &str) -> Result<NpyMap, DatasetError> {
        let (io, bad) = (DatasetError::io(path), DatasetError::bad(path));
        let file = File::open(path).map_err(io)?;
        // SAFETY: the file is opened read-only; a dataset is not modified while training
        // reads it (if it were, values would change, never memory safety of our code,
        // which only copies plain numbers out of the map).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let offset = npy_data_offset(&map, map.len() as u64).map_err(bad)? as usize;
        let header = npyz::NpyHeader::from_reader(&map[..])
            .map_err(|e| bad(format!("not a .npy file: {e}")))?;
        let dtype = header.dtype();
        if dtype.descr().trim_matches('\'') != descr {
            return Err(bad(format!("dtype {} (expected {descr})", dtype.descr())));
        }
        if header.order() != npyz::Order::C {
            return Err(bad("Fortran order; save it in C order".into()));
        }
        let shape: Vec<usize> = header.shape().iter().map(|&d| d as usize).collect();
        let elem = descr[2..].parse::<usize>().unwrap_or(1);
        // A damaged header can state a shape whose size does not fit in a usize.
        let need = shape
            .iter()
            .try_fold(elem, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_add(offset));
        let Some(need) = need else {
            return Err(bad(format!(
                "the header's shape {shape:?} is larger than memory can address"
            )));
        };
        if map.len() < need {
            return Err(bad(format!(
                "truncated: {} bytes, the header's shape {:?} needs {need}",
                map.len(),
                shape
            )));
        }
        Ok(NpyMap { map, offset, shape })
    }

    fn bytes(&self) -> &[u8] {
        &self.map[self.offset..]
    }
}

/// A dataset on disk.
pub struct Dataset {
    pub dir: PathBuf,
    pub meta: DatasetMeta,
    pub image_ids: Vec<String>,
    pub trial_image: Vec<usize>,
    /// True for test-split trials.
    pub trial_test: Vec<bool>,
    /// Session (recording day) of each trial, from `trial_session.npy` (all 0 without).
    pub trial_session: Vec<u32>,
    /// Onset time stamp of each trial (`trial_onset.npy`; the trial index without).
    pub trial_onset: Vec<f64>,
    pub channels: Vec<ChannelRow>,
    responses: NpyMap,
    images: NpyMap,
}

impl Dataset {
    /// Opens `dir` (the `dataset/` folder, or the folder holding it).
    pub fn open(dir: &Path) -> Result<Dataset, DatasetError> {
        let dir = if dir.join("dataset.json").exists() {
            dir.to_path_buf()
        } else {
            dir.join("dataset")
        };
        let files = DatasetFiles { dir: &dir };
        let meta = files.meta()?;
        let image_ids: Vec<String> = files
            .text("image_ids.txt")?
            .lines()
            .map(String::from)
            .collect();
        let responses = NpyMap::open(&dir.join("responses.npy"), "<f4")?;
        let images = NpyMap::open(&dir.join("images.npy"), "|u1")?;
        files.check_shapes(&meta, &image_ids, &images, &responses)?;
        let trials = files.trial_columns(&meta)?;
        let channels = parse_channels(&files.text("channels.csv")?)
            .map_err(|m| files.bad("channels.csv", m))?;
        if channels.len() != meta.channels {
            return Err(files.bad(
                "channels.csv",
                format!(
                    "{} rows, dataset.json says {} channels",
                    channels.len(),
                    meta.channels
                ),
            ));
        }
        Ok(Dataset {
            dir,
            trial_image: trials.image,
            trial_test: trials.test,
            trial_session: trials.session,
            trial_onset: trials.onset,
            image_ids,
            channels,
            meta,
            responses,
            images,
        })
    }

    /// Checks that the dataset was recorded with `rig`'s channels: count, rate, image
    /// size, and the area and array of every channel.
    pub fn check_rig(&self, rig: &RigConfig) -> Result<(), DatasetError> {
        let mismatch = |message: String| DatasetError::RigMismatch {
            dataset: self.dir.clone(),
            rig: rig.path.clone(),
            message,
        };
        if self.meta.channels != rig.channel_count {
            return Err(mismatch(format!(
                "the dataset has {} channels, the rig {} (rig.channels)",
                self.meta.channels, rig.channel_count
            )));
        }
        if (self.meta.sampling_rate_hz - rig.sampling_rate_hz).abs() > 1e-9 {
            return Err(mismatch(format!(
                "the dataset is sampled at {} Hz, the rig at {} Hz",
                self.meta.sampling_rate_hz, rig.sampling_rate_hz
            )));
        }
        if self.meta.image_size != rig.image_size {
            return Err(mismatch(format!(
                "the dataset's images are {} px, the rig's decoder.image_size is {}",
                self.meta.image_size, rig.image_size
            )));
        }
        // Every window the rig's decoders read must lie inside the dataset's trials.
        if self.meta.time_averaged {
            return self.check_channels(rig).map_err(mismatch);
        }
        if let Some(layout) = &self.meta.window_means {
            let rows = 2 + rig.windows.tw3_starts.len();
            if *layout != window_layout(rig) || self.trial_len() != rows {
                return Err(mismatch(
                    "the dataset holds window means taken over other latency windows than the rig's [windows]; simulate it again with this rig, or with --form trials".into(),
                ));
            }
            return self.check_channels(rig).map_err(mismatch);
        }
        let ms = rig.sampling_rate_hz / 1000.0;
        let (onset, len) = (self.meta.onset_sample as f64, self.trial_len() as f64);
        for set in [WindowSetKind::Tw15, WindowSetKind::Tw3] {
            for area in crate::units::Area::ALL {
                let mut windows = rig.windows.windows_for(set, area);
                windows.push(rig.windows.baseline);
                for w in windows {
                    let (lo, hi) = (
                        onset + (w.start.0 * ms).round(),
                        onset + (w.end().0 * ms).round(),
                    );
                    if lo < 0.0 || hi > len {
                        return Err(mismatch(format!(
                            "the rig's window {w} ms ({area}) reaches outside the dataset's trials, which hold {} samples with the onset at sample {}",
                            self.trial_len(),
                            self.meta.onset_sample
                        )));
                    }
                }
            }
        }
        self.check_channels(rig).map_err(mismatch)
    }

    /// The rig's arrays agree with the dataset's channels; `Err`: what differs.
    fn check_channels(&self, rig: &RigConfig) -> Result<(), String> {
        for a in &rig.arrays {
            for c in a.channels.clone() {
                let row = &self.channels[c];
                if row.live == a.dead {
                    return Err(format!(
                        "channel {} (array {}) is {} in the dataset but {} in the rig",
                        c + 1,
                        a.id,
                        if row.live { "live" } else { "dead" },
                        if a.dead { "dead" } else { "live" }
                    ));
                }
                if row.area != a.area.name() || row.array != Some(a.id) {
                    return Err(format!(
                        "channel {} is {} array {:?} in the dataset but {} array {} in the rig",
                        c + 1,
                        row.area,
                        row.array,
                        a.area,
                        a.id
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn n_trials(&self) -> usize {
        self.meta.trials
    }

    /// Per-channel quality from `electrodes.csv`, when the dataset has one (TVSD imports
    /// with the normMUA file): SNR and split-half reliability.
    pub fn electrode_quality(&self) -> Result<Option<Vec<ElectrodeQuality>>, DatasetError> {
        let p = self.dir.join("electrodes.csv");
        if !p.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&p).map_err(DatasetError::io(&p))?;
        let bad = DatasetError::bad(&p);
        let rows: Vec<ElectrodeQuality> = read_csv(&text).map_err(bad)?;
        if rows.len() != self.meta.channels {
            return Err(bad(format!(
                "{} rows, the dataset has {} channels",
                rows.len(),
                self.meta.channels
            )));
        }
        Ok(Some(rows))
    }

    /// Samples per trial (300 for −100…+199 ms at 1 kHz).
    pub fn trial_len(&self) -> usize {
        self.responses.shape[1]
    }

    /// Trial `t`'s samples, `[time][channel]`.
    pub fn trial(&self, t: usize) -> &[f32] {
        let n = self.trial_len() * self.meta.channels;
        // The map is page-aligned and npy headers pad the data to 16 bytes; `<f4` is
        // this (x86/ARM, little-endian) machine's f32.
        bytemuck::cast_slice(&self.responses.bytes()[t * n * 4..(t + 1) * n * 4])
    }

    /// Image `i` as `[3][H][W]` floats in [0, 1] (the decoder's output layout).
    pub fn image_chw(&self, i: usize) -> Vec<f32> {
        let s = self.meta.image_size;
        let px = &self.images.bytes()[i * s * s * 3..(i + 1) * s * s * 3];
        let mut out = vec![0.0f32; 3 * s * s];
        for (k, rgb) in px.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * s * s + k] = rgb[c] as f32 / 255.0;
            }
        }
        out
    }

    /// Trials of one split.
    pub fn split(&self, test: bool) -> Vec<usize> {
        (0..self.n_trials())
            .filter(|&t| self.trial_test[t] == test)
            .collect()
    }

    /// Raw means of trial `t` in the windows of `set` (`[window][electrode]`, rig
    /// electrode order) and, when asked for, in the baseline window (`[electrode]`): the
    /// numbers the statistics of [`crate::norm`] are taken over.
    pub fn raw_means(
        &self,
        t: usize,
        rig: &RigConfig,
        set: WindowSetKind,
        raw: &mut Vec<f64>,
        baseline: Option<&mut Vec<f64>>,
    ) {
        if self.meta.time_averaged || self.meta.window_means.is_some() {
            return self.stored_means(t, rig, set, raw, baseline);
        }
        raw_window_means(
            self.trial(t),
            self.meta.channels,
            self.meta.onset_sample,
            rig,
            set,
            raw,
            baseline,
        )
    }

    /// [`Dataset::raw_means`] of a dataset that holds means, not samples: a time-averaged
    /// one (one value per electrode, read by every window; no baseline, so 0) or one of
    /// window means (checked against the rig by [`Dataset::check_rig`]: TW-15, TW-3…,
    /// baseline rows).
    fn stored_means(
        &self,
        t: usize,
        rig: &RigConfig,
        set: WindowSetKind,
        raw: &mut Vec<f64>,
        baseline: Option<&mut Vec<f64>>,
    ) {
        let (rows, channels) = (self.trial(t), self.meta.channels);
        let row = |r: usize, c: usize| rows[r * channels + c] as f64;
        let per = rig.windows.windows_per_electrode(set);
        let row_of = |k: usize| match (self.meta.time_averaged, set) {
            (true, _) | (false, WindowSetKind::Tw15) => 0,
            (false, WindowSetKind::Tw3) => 1 + k,
        };
        let n_e = rig.electrodes.len();
        raw.clear();
        raw.resize(per * n_e, 0.0);
        for (e, el) in rig.electrodes.iter().enumerate() {
            for k in 0..per {
                raw[k * n_e + e] = row(row_of(k), el.channel);
            }
        }
        if let Some(b) = baseline {
            let last = self.trial_len() - 1;
            b.clear();
            b.extend(
                rig.electrodes
                    .iter()
                    .map(|el| match self.meta.time_averaged {
                        true => 0.0,
                        false => row(last, el.channel),
                    }),
            );
        }
    }

    /// The statistics of [`crate::norm`] over `trials` (presentations of one session),
    /// without a prior: what `train` normalises a session with and saves.
    pub fn norm_stats(&self, trials: &[usize], rig: &RigConfig, set: WindowSetKind) -> NormStats {
        self.norm_stats_and_skipped(trials, rig, set).0
    }

    /// [`Dataset::norm_stats`], and the trials it left out: those with NaN/Inf samples in
    /// a window of `set` (the daemon skips such presentations; training leaves them out).
    pub fn norm_stats_and_skipped(
        &self,
        trials: &[usize],
        rig: &RigConfig,
        set: WindowSetKind,
    ) -> (NormStats, Vec<usize>) {
        let per = rig.windows.windows_per_electrode(set);
        let mut norm = PresentationNorm::new(per, rig.electrodes.len(), None, 0.0, 0);
        let (mut raw, mut base) = (Vec::new(), Vec::new());
        let mut skipped = Vec::new();
        for &t in trials {
            self.raw_means(t, rig, set, &mut raw, Some(&mut base));
            if !raw.iter().all(|v| v.is_finite()) {
                skipped.push(t);
                continue;
            }
            norm.add(&raw);
            if base.iter().all(|v| v.is_finite()) {
                norm.add_baseline(&base);
            }
        }
        (norm.stats(), skipped)
    }

    /// The decoder input of trial `t` with fixed statistics: per electrode (rig order)
    /// and window of `set`, the window mean z-scored, `[window][electrode]`.
    pub fn features(
        &self,
        t: usize,
        rig: &RigConfig,
        set: WindowSetKind,
        stats: &NormStats,
        out: &mut Vec<f32>,
    ) {
        let mut raw = Vec::new();
        self.raw_means(t, rig, set, &mut raw, None);
        out.clear();
        out.extend(
            raw.iter().enumerate().map(|(i, &r)| {
                ((r - stats.mean[i] as f64) / (stats.std[i] as f64).max(1e-6)) as f32
            }),
        );
        // Electrodes left out of the decoder (train --min-snr) carry no input.
        let n_e = stats.electrodes();
        for &e in &stats.dropped {
            for k in 0..stats.windows {
                out[k * n_e + e] = 0.0;
            }
        }
    }

    /// Session (TVSD: recording day) of each trial; one session when the dataset has
    /// no `trial_session.npy`.
    pub fn sessions(&self) -> Vec<Vec<usize>> {
        let mut order: Vec<u32> = Vec::new();
        let mut out: Vec<Vec<usize>> = Vec::new();
        for (t, &s) in self.trial_session.iter().enumerate() {
            let k = match order.iter().position(|&o| o == s) {
                Some(k) => k,
                None => {
                    order.push(s);
                    out.push(Vec::new());
                    order.len() - 1
                }
            };
            out[k].push(t);
        }
        // Presentation order inside a session: by onset time where the dataset has it.
        for trials in &mut out {
            trials.sort_by(|&a, &b| {
                self.trial_onset[a]
                    .total_cmp(&self.trial_onset[b])
                    .then(a.cmp(&b))
            });
        }
        out
    }

    /// The inputs the daemon computes live for the trials in `wanted`: every
    /// presentation of each session in onset order through [`PresentationNorm`],
    /// starting from `prior` (a model's statistics) as the daemon does, restarted at
    /// each session. Returns the inputs of `wanted`, in its order.
    pub fn online_features(
        &self,
        wanted: &[usize],
        rig: &RigConfig,
        set: WindowSetKind,
        prior: &NormStats,
    ) -> Vec<Vec<f32>> {
        let per = rig.windows.windows_per_electrode(set);
        let n_e = rig.electrodes.len();
        let mut slot = vec![usize::MAX; self.n_trials()];
        for (k, &t) in wanted.iter().enumerate() {
            slot[t] = k;
        }
        let mut out = vec![Vec::new(); wanted.len()];
        let (mut raw, mut base) = (Vec::new(), Vec::new());
        for session in self.sessions() {
            if !session.iter().any(|&t| slot[t] != usize::MAX) {
                continue;
            }
            let mut norm = PresentationNorm::new(
                per,
                n_e,
                Some(prior),
                rig.normalisation.prior_presentations,
                rig.normalisation.calibration_presentations,
            );
            for t in session {
                self.raw_means(t, rig, set, &mut raw, Some(&mut base));
                if slot[t] != usize::MAX {
                    let f = &mut out[slot[t]];
                    f.resize(raw.len(), 0.0);
                    norm.z_all(&raw, f);
                }
                // The daemon's conditions: NaN/Inf presentations are skipped (no frame,
                // no update); a broken baseline does not update the baseline statistics.
                if raw.iter().all(|v| v.is_finite()) {
                    norm.add(&raw);
                    if base.iter().all(|v| v.is_finite()) {
                        norm.add_baseline(&base);
                    }
                }
            }
        }
        out
    }
}

/// [`Dataset::raw_means`] on any `[time][channel]` trial whose onset is row `onset`.
pub fn raw_window_means(
    trial: &[f32],
    channels: usize,
    onset: usize,
    rig: &RigConfig,
    set: WindowSetKind,
    raw: &mut Vec<f64>,
    mut baseline: Option<&mut Vec<f64>>,
) {
    let n_e = rig.electrodes.len();
    let per = rig.windows.windows_per_electrode(set);
    let ms = rig.sampling_rate_hz / 1000.0;
    let rows = trial.len() / channels;
    let range = |w: crate::units::Window| {
        let lo = onset as isize + (w.start.0 * ms).round() as isize;
        let hi = onset as isize + (w.end().0 * ms).round() as isize;
        (lo.max(0) as usize, (hi.max(0) as usize).min(rows))
    };
    let mean = |(lo, hi): (usize, usize), c: usize| {
        let sum: f64 = (lo..hi).map(|i| trial[i * channels + c] as f64).sum();
        sum / (hi - lo).max(1) as f64
    };
    raw.clear();
    raw.resize(per * n_e, 0.0);
    if let Some(b) = baseline.as_deref_mut() {
        b.clear();
    }
    for (e, el) in rig.electrodes.iter().enumerate() {
        for (k, w) in rig.windows.windows_for(set, el.area).iter().enumerate() {
            raw[k * n_e + e] = mean(range(*w), el.channel);
        }
        if let Some(b) = baseline.as_deref_mut() {
            b.push(mean(range(rig.windows.baseline), el.channel));
        }
    }
}

/// The per-trial columns of a dataset: `trial_*.npy`.
struct TrialColumns {
    image: Vec<usize>,
    test: Vec<bool>,
    session: Vec<u32>,
    onset: Vec<f64>,
}

/// The files of one dataset folder, read and checked for [`Dataset::open`]; every error
/// names the file.
struct DatasetFiles<'a> {
    dir: &'a Path,
}

impl DatasetFiles<'_> {
    fn bad(&self, name: &str, message: String) -> DatasetError {
        DatasetError::bad(&self.dir.join(name))(message)
    }

    fn text(&self, name: &str) -> Result<String, DatasetError> {
        let p = self.dir.join(name);
        std::fs::read_to_string(&p).map_err(DatasetError::io(&p))
    }

    /// `dataset.json`, of the one format and version this reader knows.
    fn meta(&self) -> Result<DatasetMeta, DatasetError> {
        let meta: DatasetMeta = serde_json::from_str(&self.text("dataset.json")?)
            .map_err(|e| self.bad("dataset.json", e.to_string()))?;
        if meta.format != "monkeysee-dataset" || meta.version != 1 {
            return Err(self.bad(
                "dataset.json",
                format!(
                    "format {:?} version {} (expected monkeysee-dataset 1)",
                    meta.format, meta.version
                ),
            ));
        }
        if meta.channels == 0 {
            return Err(self.bad(
                "dataset.json",
                "0 channels: a dataset needs the rig's channel count".into(),
            ));
        }
        Ok(meta)
    }

    /// The images and responses have the shapes `dataset.json` states (a time-averaged
    /// dataset: one sample per trial).
    fn check_shapes(
        &self,
        meta: &DatasetMeta,
        image_ids: &[String],
        images: &NpyMap,
        responses: &NpyMap,
    ) -> Result<(), DatasetError> {
        let s = meta.image_size;
        if images.shape != [meta.images, s, s, 3] || image_ids.len() != meta.images {
            return Err(self.bad(
                "images.npy",
                format!(
                    "shape {:?} with {} ids; dataset.json says {} images of {s}×{s}×3",
                    images.shape,
                    image_ids.len(),
                    meta.images
                ),
            ));
        }
        if responses.shape.len() != 3
            || responses.shape[0] != meta.trials
            || responses.shape[2] != meta.channels
        {
            return Err(self.bad(
                "responses.npy",
                format!(
                    "shape {:?}; dataset.json says [{}, time, {}]",
                    responses.shape, meta.trials, meta.channels
                ),
            ));
        }
        if meta.time_averaged && responses.shape[1] != 1 {
            return Err(self.bad(
                "responses.npy",
                format!(
                    "shape {:?}; dataset.json says time_averaged, one value per trial and channel: [{}, 1, {}]",
                    responses.shape, meta.trials, meta.channels
                ),
            ));
        }
        Ok(())
    }

    /// The per-trial columns, one value per trial each; `trial_session.npy` (all 0)
    /// and `trial_onset.npy` (the trial index) are optional.
    fn trial_columns(&self, meta: &DatasetMeta) -> Result<TrialColumns, DatasetError> {
        let trial_image = self.column::<i32>("trial_image.npy", meta.trials)?;
        if let Some(bad_row) = trial_image
            .iter()
            .position(|&i| i < 0 || i as usize >= meta.images)
        {
            return Err(self.bad(
                "trial_image.npy",
                format!(
                    "trial {bad_row} names image {} of {}",
                    trial_image[bad_row], meta.images
                ),
            ));
        }
        let test = self
            .column::<u8>("trial_split.npy", meta.trials)?
            .into_iter()
            .map(|v| v != 0)
            .collect();
        let session: Vec<u32> = if self.dir.join("trial_session.npy").exists() {
            self.column::<i32>("trial_session.npy", meta.trials)?
                .into_iter()
                .map(|v| v as u32)
                .collect()
        } else {
            vec![0; meta.trials]
        };
        let onset: Vec<f64> = if self.dir.join("trial_onset.npy").exists() {
            self.column("trial_onset.npy", meta.trials)?
        } else {
            (0..meta.trials).map(|t| t as f64).collect()
        };
        Ok(TrialColumns {
            image: trial_image.into_iter().map(|i| i as usize).collect(),
            test,
            session,
            onset,
        })
    }

    /// A one-dimensional `.npy` of `trials` values of `T`.
    fn column<T: npyz::Deserialize>(
        &self,
        name: &str,
        trials: usize,
    ) -> Result<Vec<T>, DatasetError> {
        let f = open_npy(&self.dir.join(name))?;
        if f.shape() != [trials as u64] {
            return Err(self.bad(name, format!("shape {:?}, expected [{trials}]", f.shape())));
        }
        f.into_vec().map_err(|e| self.bad(name, e.to_string()))
    }
}

/// Where the data of a `.npy` file (its first bytes in `head`, `len` bytes in all)
/// starts: after magic (6), version (2), header length (2 in v1, 4 after) and header.
/// Checks that the header fits in the file: npyz allocates the declared length before
/// reading it.
fn npy_data_offset(head: &[u8], len: u64) -> Result<u64, String> {
    let declared = match (head.get(6), head.get(8..12)) {
        (Some(1), Some(b)) => 10 + u64::from(u16::from_le_bytes([b[0], b[1]])),
        (Some(_), Some(b)) => 12 + u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        _ => return Err("not a .npy file: truncated header".into()),
    };
    if declared > len {
        return Err(format!(
            "not a .npy file: its header claims {declared} bytes, the file has {len}"
        ));
    }
    Ok(declared)
}

/// Opens a small `.npy` file for npyz, its header length checked first.
fn open_npy(path: &Path) -> Result<npyz::NpyFile<std::io::BufReader<File>>, DatasetError> {
    let (io, bad) = (DatasetError::io(path), DatasetError::bad(path));
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut head = Vec::with_capacity(12);
    std::io::Read::read_to_end(&mut std::io::Read::take(&file, 12), &mut head).map_err(io)?;
    npy_data_offset(&head, len).map_err(bad)?;
    let mut reader = std::io::BufReader::new(file);
    std::io::Seek::rewind(&mut reader).map_err(io)?;
    npyz::NpyFile::new(reader).map_err(|e| bad(e.to_string()))
}

/// `channels.csv` as written: channel, label, area, array (empty when the channel is
/// on none), live (1 or 0).
#[derive(Deserialize)]
struct ChannelRecord {
    area: String,
    array: Option<u32>,
    live: u8,
}

fn parse_channels(text: &str) -> Result<Vec<ChannelRow>, String> {
    let records: Vec<ChannelRecord> = read_csv(text)?;
    Ok(records
        .into_iter()
        .map(|r| ChannelRow {
            area: r.area,
            array: r.array,
            live: r.live == 1,
        })
        .collect())
}

/// The rows of a CSV table with a header, read by column name; an error names the line
/// and the column.
fn read_csv<T: serde::de::DeserializeOwned>(text: &str) -> Result<Vec<T>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| e.to_string())?.clone();
    reader
        .records()
        .map(|record| {
            let record =
                record.map_err(|e| format!("line {}: {e}", csv_row_line(text, e.position())))?;
            record.deserialize(Some(&headers)).map_err(|e| {
                let line = csv_row_line(text, record.position());
                let csv::ErrorKind::Deserialize { err, .. } = e.kind() else {
                    return format!("line {line}: {e}");
                };
                match err.field().map(|f| f as usize) {
                    Some(f) => format!(
                        "line {line}: column {} {:?}: {}",
                        headers.get(f).unwrap_or_default(),
                        record.get(f).unwrap_or_default(),
                        err.kind()
                    ),
                    None => format!("line {line}: {}", err.kind()),
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.npy` file with a hand-written v1 header (`dict` is the header's Python dict).
    fn write_npy(path: &Path, dict: &str, data: &[u8]) {
        let mut header = dict.to_string();
        // Magic, version and length take 10 bytes; the header ends in '\n' and the data
        // starts on a 64-byte boundary.
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes.extend(data);
        std::fs::write(path, bytes).unwrap();
    }

    /// A header whose shape multiplies past `usize::MAX` is an error naming the file,
    /// not an arithmetic overflow.
    #[test]
    fn npy_shapes_too_large_to_address_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("responses.npy");
        write_npy(
            &p,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }",
            &[],
        );
        let e = NpyMap::open(&p, "<f4").err().unwrap();
        assert!(e.to_string().contains("larger than memory"), "{e}");
        assert!(e.to_string().contains("responses.npy"), "{e}");
        // The ordinary case still maps.
        write_npy(
            &p,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1), }",
            &[0; 8],
        );
        assert_eq!(NpyMap::open(&p, "<f4").unwrap().shape, [2, 1]);
    }

    /// A dataset of `trials` trials of `time` samples on 2 channels, 1 image of 4×4 px.
    fn write_dataset(dir: &Path, trials: usize, time: usize, time_averaged: bool) {
        let json = serde_json::json!({
            "format": "monkeysee-dataset", "version": 1, "rig": "test",
            "channels": 2, "sampling_rate_hz": 1000.0, "image_size": 4,
            "onset_sample": 0, "images": 1, "trials": trials,
            "time_averaged": time_averaged,
        });
        std::fs::write(dir.join("dataset.json"), json.to_string()).unwrap();
        std::fs::write(dir.join("image_ids.txt"), "a\n").unwrap();
        write_npy(
            &dir.join("responses.npy"),
            &format!(
                "{{'descr': '<f4', 'fortran_order': False, 'shape': ({trials}, {time}, 2), }}"
            ),
            &vec![0; trials * time * 2 * 4],
        );
        write_npy(
            &dir.join("images.npy"),
            "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 4, 4, 3), }",
            &[0; 48],
        );
        npyz::to_file_1d(dir.join("trial_image.npy"), vec![0i32; trials]).unwrap();
        npyz::to_file_1d(dir.join("trial_split.npy"), vec![0u8; trials]).unwrap();
        std::fs::write(
            dir.join("channels.csv"),
            "channel,label,area,array,live\n1,e1,V1,1,1\n2,e2,V1,1,1\n",
        )
        .unwrap();
    }

    /// A time-averaged dataset holds one value per trial and channel; more samples
    /// (or none) is an error naming `responses.npy`, not a wrong read or an index
    /// past the end later.
    #[test]
    fn time_averaged_datasets_hold_one_sample_per_trial() {
        let dir = tempfile::tempdir().unwrap();
        write_dataset(dir.path(), 3, 1, true);
        let ds = Dataset::open(dir.path()).unwrap();
        assert_eq!((ds.n_trials(), ds.trial_len()), (3, 1));
        for time in [0, 5] {
            write_dataset(dir.path(), 3, time, true);
            let e = Dataset::open(dir.path()).err().unwrap().to_string();
            assert!(
                e.contains("responses.npy") && e.contains("time_averaged"),
                "{e}"
            );
        }
        write_dataset(dir.path(), 3, 5, false);
        assert_eq!(Dataset::open(dir.path()).unwrap().trial_len(), 5);
    }

    /// `channels.csv` and `electrodes.csv` read as CSV by column name: a quoted label
    /// with a comma, an empty array, extra columns; a bad value is named by file, line
    /// and column.
    #[test]
    fn channel_and_electrode_tables_read_as_csv() {
        let dir = tempfile::tempdir().unwrap();
        write_dataset(dir.path(), 3, 1, true);
        std::fs::write(
            dir.path().join("channels.csv"),
            "channel,label,area,array,live\n1,\"e1, left\",V1,1,1\n2,e2,,,0\n",
        )
        .unwrap();
        let ds = Dataset::open(dir.path()).unwrap();
        assert_eq!(
            ds.channels,
            vec![
                ChannelRow {
                    area: "V1".into(),
                    array: Some(1),
                    live: true
                },
                ChannelRow {
                    area: String::new(),
                    array: None,
                    live: false
                },
            ]
        );
        let electrodes = dir.path().join("electrodes.csv");
        std::fs::write(
            &electrodes,
            "channel,snr,reliab,lats,oracle\n1,2.5,0.75,,\n2,1.5,0.5,41,0.25\n",
        )
        .unwrap();
        let quality = ds.electrode_quality().unwrap().unwrap();
        assert_eq!(
            quality,
            vec![
                ElectrodeQuality {
                    snr: 2.5,
                    reliab: 0.75
                },
                ElectrodeQuality {
                    snr: 1.5,
                    reliab: 0.5
                },
            ]
        );
        std::fs::write(
            &electrodes,
            "channel,snr,reliab\n1,2.5,0.75\n\n2,high,0.5\n",
        )
        .unwrap();
        let e = ds.electrode_quality().unwrap_err().to_string();
        assert!(
            e.contains("electrodes.csv: line 4: column snr \"high\""),
            "{e}"
        );
        std::fs::write(
            dir.path().join("channels.csv"),
            "channel,label,area,array,live\n1,e1,V1,1,1\n2,e2,V1,one,1\n",
        )
        .unwrap();
        let e = Dataset::open(dir.path()).err().unwrap().to_string();
        assert!(
            e.contains("channels.csv: line 3: column array \"one\""),
            "{e}"
        );
    }
}
