//! `monkeysee import-tvsd`: datasets from the published THINGS Ventral Stream Spiking
//! Dataset (Papale et al., Neuron 2025), read by [`crate::tvsd`].
//!
//! - `THINGS_MUA_trials.mat` (+ the channel mapping, the image list, the THINGS images)
//!   → `OUT/trials/`: every trial's −100…+199 ms MUA in electrode order, as recorded,
//!   read a block of trials at a time (the file is ≈ 58 GB); the split is TVSD's own
//!   (test-image trials are the test split) and each trial's recording day is its
//!   session (`trial_session.npy`), so statistics are per day.
//! - `THINGS_normMUA.mat` → `OUT/normmua/`: the per-image responses TVSD already
//!   averaged over each area's window and normalised, as a time-averaged dataset
//!   (`responses.npy` `[trials, 1, channels]`, `time_averaged` in `dataset.json`) for the
//!   TW-15 decoders; test images once per repetition when `test_MUA_reps` is there.
//! - With the normMUA file, both datasets get `electrodes.csv` (per electrode SNR,
//!   reliability, latency, oracle), which `train --min-snr` reads.
//!
//! Counted and reported, never fatal: trials whose image file is missing (ids listed),
//! trials with NaN samples, trials outside `--days`, `ALLMAT` rows naming no image, and
//! trials in damaged chunks of `ALLMUA` (the rest of the file is still read).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};

use super::writer::{self, DatasetInfo, DatasetWriter, Images, Split, TrialInfo, WrittenDataset};
use crate::config::RigConfig;
use crate::telemetry::{progress_bar, some_of};
use crate::tvsd::{self, ImageList, NormMua, TrialImage, TvsdTrials};

/// What `import-tvsd` was asked for.
#[derive(Debug, Clone)]
pub struct TvsdImportOptions {
    pub rig: RigConfig,
    /// `THINGS_MUA_trials.mat`, with the mapping file it needs.
    pub trials: Option<PathBuf>,
    pub mapping: Option<PathBuf>,
    /// `things_imgs.mat`.
    pub image_list: PathBuf,
    /// The THINGS `object_images` folder the image list's paths are under.
    pub images: PathBuf,
    /// `THINGS_normMUA.mat`.
    pub norm_mua: Option<PathBuf>,
    pub out: PathBuf,
    /// Recording days to keep (1-based, as in `ALLMAT`); all when `None`.
    pub days: Option<Vec<u32>>,
    /// Trials per HDF5 read.
    pub block: usize,
    pub progress: bool,
}

/// What was imported.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TvsdImportSummary {
    pub trials: Option<WrittenDataset>,
    pub norm_mua: Option<WrittenDataset>,
    /// Trials in the file, and those skipped (and why).
    pub file_trials: usize,
    pub skipped_other_days: usize,
    pub skipped_no_image: usize,
    pub skipped_missing_file: usize,
    pub skipped_nan: usize,
    /// Trials in damaged parts of the trials file, and the first such error.
    pub skipped_damaged: usize,
    pub damage: Option<String>,
    /// THINGS paths with no file under `--images`.
    pub missing_images: Vec<String>,
    pub wall_s: f64,
    /// Trials per wall-clock second through the read loop (read, reorder, write), images
    /// and the normMUA file not counted.
    pub trials_per_s: f64,
}

impl std::fmt::Display for TvsdImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for d in [&self.trials, &self.norm_mua].into_iter().flatten() {
            writeln!(
                f,
                "{}: {} trials ({} train, {} test) of {} images ({} test), {} session(s)",
                d.dir.display(),
                d.trials,
                d.train_trials,
                d.test_trials,
                d.images,
                d.test_images,
                d.sessions
            )?;
        }
        if self.trials.is_some() {
            writeln!(
                f,
                "of {} trials in the file, skipped: {} on other days, {} naming no image, {} whose image file is missing, {} with NaN samples, {} in damaged parts of the file",
                self.file_trials,
                self.skipped_other_days,
                self.skipped_no_image,
                self.skipped_missing_file,
                self.skipped_nan,
                self.skipped_damaged
            )?;
            if let Some(d) = &self.damage {
                writeln!(
                    f,
                    "the trials file is damaged: {d}; every readable trial was kept"
                )?;
            }
        }
        if !self.missing_images.is_empty() {
            writeln!(
                f,
                "image files not found under --images ({}): {}",
                self.missing_images.len(),
                some_of(&self.missing_images, 10)
            )?;
        }
        write!(
            f,
            "{:.1} s ({:.0} trials/s from the trials file)",
            self.wall_s, self.trials_per_s
        )
    }
}

/// The row of a THINGS path, `None` without a file under `things_dir`. The id is the
/// path's stem (`aardvark/aardvark_01b.jpg` → `aardvark_01b`).
fn image_row(images: &mut Images, things_dir: &Path, path: &str) -> Option<usize> {
    images.row(path, || {
        let file = things_dir.join(path);
        let id = Path::new(path).file_stem().and_then(|s| s.to_str());
        file.is_file()
            .then(|| (id.unwrap_or(path).to_string(), file))
    })
}

/// Writes the images and finishes the dataset (TVSD gives the split and no seed);
/// returns it with the list entries whose files were missing.
fn finish(
    images: Images,
    opts: &TvsdImportOptions,
    dir: &Path,
    out: DatasetWriter,
    source: serde_json::Value,
) -> anyhow::Result<(WrittenDataset, Vec<String>)> {
    images.write(dir, opts.rig.image_size, opts.progress)?;
    let written = out.finish(DatasetInfo {
        rig: &opts.rig,
        image_ids: &images.ids,
        split: Split::Given,
        seed: None,
        sampling_rate_hz: opts.rig.sampling_rate_hz,
        source,
    })?;
    Ok((written, images.missing))
}

/// Runs the import. See the module docs.
pub fn import_tvsd(opts: &TvsdImportOptions) -> anyhow::Result<TvsdImportSummary> {
    let start = Instant::now();
    if opts.trials.is_none() && opts.norm_mua.is_none() {
        bail!("give --trials THINGS_MUA_trials.mat (with --mapping), --norm-mua THINGS_normMUA.mat, or both");
    }
    let list = tvsd::read_image_list(&opts.image_list)?;
    let norm = opts
        .norm_mua
        .as_deref()
        .map(tvsd::read_norm_mua)
        .transpose()?;
    if let Some(n) = &norm {
        check_channels(&opts.rig, n.channels, "THINGS_normMUA.mat")?;
    }
    let mut summary = TvsdImportSummary::default();
    let mut missing = Vec::new();
    if let Some(trials) = &opts.trials {
        let mapping = opts.mapping.as_deref().context(
            "--trials needs --mapping 1024chns_mapping_20220105.mat (ALLMUA is in headstage order)",
        )?;
        let dir = opts.out.join("trials");
        writer::check_out(&dir)?;
        let (written, images_missing) =
            import_trials(opts, trials, mapping, &list, &dir, &mut summary)?;
        if let Some(n) = &norm {
            write_electrodes(&dir, n)?;
        }
        summary.trials = Some(written);
        missing.extend(images_missing);
    }
    if let Some(n) = &norm {
        let dir = opts.out.join("normmua");
        writer::check_out(&dir)?;
        let (written, images_missing) = import_norm_mua(opts, n, &list, &dir)?;
        write_electrodes(&dir, n)?;
        summary.norm_mua = Some(written);
        missing.extend(images_missing);
    }
    missing.sort();
    missing.dedup();
    summary.missing_images = missing;
    summary.wall_s = start.elapsed().as_secs_f64();
    Ok(summary)
}

fn check_channels(rig: &RigConfig, channels: usize, what: &str) -> anyhow::Result<()> {
    if channels != rig.channel_count {
        bail!(
            "{what} has {channels} electrodes, the rig {} {} (rig.channels); use firmware-config/monkey-n.toml or monkey-f.toml for TVSD",
            rig.path.display(),
            rig.channel_count
        );
    }
    Ok(())
}

fn import_trials(
    opts: &TvsdImportOptions,
    path: &Path,
    mapping: &Path,
    list: &ImageList,
    dir: &Path,
    summary: &mut TvsdImportSummary,
) -> anyhow::Result<(WrittenDataset, Vec<String>)> {
    let rig = &opts.rig;
    let file = TvsdTrials::open(path, mapping)?;
    check_channels(rig, file.n_channels(), &path.display().to_string())?;
    let samples_per_ms = rig.sampling_rate_hz / 1000.0;
    let expected = (300.0 * samples_per_ms).round() as usize;
    if file.n_time() != expected {
        bail!(
            "{}: ALLMUA has {} samples per trial; at the rig's {} Hz, -100..+199 ms is {expected}",
            path.display(),
            file.n_time(),
            rig.sampling_rate_hz
        );
    }
    let onset = (100.0 * samples_per_ms).round() as usize;
    let (n, ch, time) = (file.n_trials(), file.n_channels(), file.n_time());
    summary.file_trials = n;
    let mut out = DatasetWriter::create(dir, ch, time, onset)?;
    let mut images = Images::default();
    let rows = file.rows().to_vec();
    let progress = progress_bar(opts.progress, n as u64, "trials");
    let block = opts.block.max(1);
    let (mut buf, mut one) = (Vec::new(), Vec::new());
    let reading = Instant::now();
    for first in (0..n).step_by(block) {
        let count = block.min(n - first);
        // Blocks with no trial to keep are not read at all.
        let wanted: Vec<bool> = rows[first..first + count]
            .iter()
            .map(|r| opts.days.as_ref().is_none_or(|d| d.contains(&r.day)))
            .collect();
        // A block that cannot be read (a damaged chunk) is read again trial by trial,
        // so only the trials in the damaged chunks are lost.
        let whole = wanted.iter().any(|&w| w) && file.read_trials(first, count, &mut buf).is_ok();
        for (k, row) in rows[first..first + count].iter().enumerate() {
            if !wanted[k] {
                summary.skipped_other_days += 1;
                continue;
            }
            let trial = if whole {
                &buf[k * time * ch..(k + 1) * time * ch]
            } else {
                match file.read_trials(first + k, 1, &mut one) {
                    Ok(()) => &one[..],
                    Err(e) => {
                        summary.skipped_damaged += 1;
                        summary.damage.get_or_insert_with(|| e.to_string());
                        continue;
                    }
                }
            };
            let (path, test) = match row.image() {
                Some(TrialImage::Train(i)) => (list.train.get(i), false),
                Some(TrialImage::Test(i)) => (list.test.get(i), true),
                None => (None, false),
            };
            let Some(path) = path else {
                summary.skipped_no_image += 1;
                continue;
            };
            let Some(image) = image_row(&mut images, &opts.images, path) else {
                summary.skipped_missing_file += 1;
                continue;
            };
            if trial.iter().any(|v| !v.is_finite()) {
                summary.skipped_nan += 1;
                continue;
            }
            out.push(
                trial,
                TrialInfo {
                    image,
                    onset: f64::NAN,
                    session: row.day,
                    test: Some(test),
                },
            )?;
        }
        progress.inc(count as u64);
    }
    summary.trials_per_s = n as f64 / reading.elapsed().as_secs_f64().max(1e-9);
    progress.finish_and_clear();
    if out.trials().is_empty() {
        bail!(
            "no trial of {} could be imported ({} on other days, {} naming no image, {} with a missing image file under {}, {} with NaN samples)",
            path.display(),
            summary.skipped_other_days,
            summary.skipped_no_image,
            summary.skipped_missing_file,
            opts.images.display(),
            summary.skipped_nan
        );
    }
    let source = serde_json::json!({
        "kind": "tvsd-trials",
        "trials": path,
        "mapping": mapping,
        "image_list": opts.image_list,
        "images": opts.images,
        "days": opts.days,
        "trial_onset": "NaN: TVSD trials carry no time stamps; trial_session.npy is the recording day",
    });
    finish(images, opts, dir, out, source)
}

fn import_norm_mua(
    opts: &TvsdImportOptions,
    norm: &NormMua,
    list: &ImageList,
    dir: &Path,
) -> anyhow::Result<(WrittenDataset, Vec<String>)> {
    let ch = norm.channels;
    if norm.n_train != list.train.len() || norm.n_test != list.test.len() {
        bail!(
            "THINGS_normMUA.mat has {} train and {} test images, things_imgs.mat lists {} and {}: files from different releases?",
            norm.n_train,
            norm.n_test,
            list.train.len(),
            list.test.len()
        );
    }
    let mut out = DatasetWriter::create(dir, ch, 1, 0)?;
    let mut images = Images::default();
    let progress = progress_bar(opts.progress, (norm.n_train + norm.n_test) as u64, "images");
    // One trial per row of responses; non-finite rows are skipped.
    let mut push = |row: &[f32], image: usize, test: bool| -> anyhow::Result<()> {
        if !row.iter().all(|v| v.is_finite()) {
            return Ok(());
        }
        out.push(
            row,
            TrialInfo {
                image,
                onset: f64::NAN,
                session: 0,
                test: Some(test),
            },
        )
    };
    for (i, path) in list.train.iter().enumerate() {
        if let Some(image) = image_row(&mut images, &opts.images, path) {
            push(&norm.train[i * ch..(i + 1) * ch], image, false)?;
        }
        progress.inc(1);
    }
    for (i, path) in list.test.iter().enumerate() {
        if let Some(image) = image_row(&mut images, &opts.images, path) {
            match &norm.test_reps {
                Some(reps) => {
                    for k in 0..reps.n_reps {
                        let at = (i * reps.n_reps + k) * ch;
                        let row = &reps.values[at..at + ch];
                        // MATLAB pads missing repetitions with zeros.
                        if !row.iter().all(|&v| v == 0.0) {
                            push(row, image, true)?;
                        }
                    }
                }
                None => push(&norm.test[i * ch..(i + 1) * ch], image, true)?,
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    if out.trials().is_empty() {
        bail!(
            "none of the normMUA images has a file under {}",
            opts.images.display()
        );
    }
    let source = serde_json::json!({
        "kind": "tvsd-normmua",
        "norm_mua": opts.norm_mua,
        "image_list": opts.image_list,
        "images": opts.images,
        "time_averaged": "TVSD's per-image responses, averaged over each area's window and normalised per day (norm_MUA.m): one value per electrode, for the TW-15 decoders",
    });
    finish(images, opts, dir, out, source)
}

/// `electrodes.csv`: per electrode (1-based channel) SNR, reliability, latency, oracle.
fn write_electrodes(dir: &Path, n: &NormMua) -> anyhow::Result<()> {
    let path = dir.join("electrodes.csv");
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    writeln!(w, "channel,snr,reliab,lats,oracle")?;
    let opt =
        |v: &Option<Vec<f32>>, c: usize| v.as_ref().map_or(String::new(), |v| v[c].to_string());
    for c in 0..n.channels {
        writeln!(
            w,
            "{},{},{},{},{}",
            c + 1,
            n.snr[c],
            n.reliab[c],
            opt(&n.lats, c),
            opt(&n.oracle, c)
        )?;
    }
    w.flush()?;
    Ok(())
}
