//! The synthetic cortex: an offline stand-in for a monkey with Utah arrays.
//!
//! [`simulate`] takes a rig, a set of images and a seed and writes what the arrays
//! would have recorded in the real experiment's design (200 ms on / 200 ms off,
//! 4 images per trial, training images shown once, test images repeated):
//!
//! ```text
//! OUT/session.xdf         MUA (1 kHz, float32, labels + area + array per channel) and
//!                         markers (`stim_on <image_id>` / `stim_off`), as LabRecorder writes;
//!                         with `--broadband` also the raw headstage signal (see below)
//! OUT/images/<id>.png     the stimuli (the marker stream's header points here)
//! OUT/rf-truth.csv        the RFs the simulation used (rig RF-table format)
//! OUT/rf-table.csv        the RFs handed to a decoder (truth + --rf-jitter)
//! OUT/cortex.toml         the simulator parameters used
//! OUT/dataset/            numpy-readable training set, see below
//! ```
//!
//! The dataset (every array a plain `.npy`, C order, so `np.load(f, mmap_mode="r")`
//! maps it without custom code):
//!
//! | file | dtype, shape | |
//! |---|---|---|
//! | `images.npy` | uint8 `[images, size, size, 3]` | RGB stimuli |
//! | `image_ids.txt` | one line per image | ids as in the markers |
//! | `responses.npy` | float32 `[trials, 300, channels]` | MUA −100…+199 ms around each onset; sample 100 = onset |
//! | `trial_image.npy` | int32 `[trials]` | row of `images.npy` shown |
//! | `trial_split.npy` | uint8 `[trials]` | 0 train (single presentation), 1 test (repeated) |
//! | `trial_onset.npy` | float64 `[trials]` | onset time stamp in `session.xdf` |
//! | `trial_session.npy` | int32 `[trials]` | recording day, with more than one ([`config::Design::days`]) |
//! | `channels.csv` | | channel, label, area, array, live |
//! | `dataset.json` | | shapes, rig, seed, split sizes, file names |
//!
//! With `--broadband` the session also holds a third stream, named as the rig's
//! `[streams.broadband]` selector says: the signal a headstage would have recorded, at
//! the rig's `[broadband]` rate (30 kHz), int16 (`uv_per_count` µV per count). Each
//! electrode fires multi-unit spikes (biphasic, 1 ms): in each MUA millisecond a
//! Poisson count with mean `spikes_per_s_per_unit` × MUA / 1000 (the simulated MUA,
//! noise included, floored at 0), each at a random sample within it, plus Gaussian
//! noise and mains pickup ([`config::BroadbandModel`]). Blocks of 1 s
//! are generated independently, so a spike that starts in a block's last millisecond is
//! cut at the block's end. `monkeysee run --input broadband` on its replay extracts MUA
//! that follows the same envelope.
//!
//! A "trial" here is one image presentation, as in TVSD's per-image arrays.
//! Everything is deterministic for a seed, whatever the thread count. The animal
//! (tuning, latencies, generated RFs, and the drive statistics its responses are scaled
//! by, measured on a fixed set of dead-leaves images) has a seed of its own, so
//! sessions with different images and seeds record the same simulated monkey.

pub mod config;
pub mod cortex;
pub mod images;
pub mod seeds;
pub mod ventral;

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::Serialize;

pub use config::SimConfig;
pub use cortex::Cortex;
pub use images::ImageSource;

use crate::config::{RigConfig, WindowSetKind};
use crate::dataset::raw_window_means;
use crate::dataset::stimulus::to_rgb8;
use crate::dataset::writer::{DatasetInfo, DatasetWriter, ImageRows, Split, TrialInfo};
use crate::rf::{RfEntry, RfTable};
use crate::telemetry::progress_bar;
use crate::units::Area;
use crate::xdf::{ChannelFormat, StreamId, StreamSpec, XdfWriter};

/// The synthetic animal the shipped demo model was trained on (`tools/train-demo-model`):
/// `monkeysee demo` and the live sessions of `bench` simulate it.
pub const DEMO_ANIMAL_SEED: u64 = 1;

/// Milliseconds of pre-stimulus baseline in a dataset trial.
pub const PRE_MS: usize = 100;
/// Milliseconds from onset to the end of a dataset trial (exclusive).
pub const POST_MS: usize = 200;
/// Samples per dataset trial at 1 kHz.
pub const TRIAL_SAMPLES: usize = PRE_MS + POST_MS;

/// Stream ids in `session.xdf`.
pub const MUA_STREAM: StreamId = StreamId(1);
pub const MARKER_STREAM: StreamId = StreamId(2);
/// The raw broadband stream, with `--broadband`.
pub const BROADBAND_STREAM: StreamId = StreamId(3);

/// First time stamp of a simulated session (an LSL clock reading, seconds).
const SESSION_T0: f64 = 100.0;
/// Samples generated per block (one XDF chunk per block).
const BLOCK: usize = 1000;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub rig: RigConfig,
    pub config: SimConfig,
    pub images: ImageSource,
    pub out: PathBuf,
    /// The session: images (procedural), design, noise and trial-to-trial variability.
    pub seed: u64,
    /// The animal: its electrodes' tuning, latencies and (for a rig without an RF
    /// table) RFs. Keep it fixed to train on one session and decode another.
    pub animal_seed: u64,
    /// Images shown `repeats` times (test split); the rest are shown once (train split).
    pub test_images: usize,
    pub repeats: usize,
    /// SD in degrees of the error added to each RF centre in `rf-table.csv` (and a
    /// 20 % log-normal error on its size when > 0), as a real RF mapping would have.
    pub rf_jitter_deg: f64,
    /// Also write the raw broadband signal (see the module doc).
    pub broadband: bool,
    pub progress: bool,
}

impl SimOptions {
    /// A live-style session of `images` procedural images shown once each (no test
    /// split, no RF error) to the demo animal, session `seed`, written into `out`: what
    /// `demo` and `bench` replay into the daemon.
    pub fn live_session(
        rig: RigConfig,
        images: usize,
        seed: u64,
        out: PathBuf,
    ) -> anyhow::Result<SimOptions> {
        let config = SimConfig::default();
        Ok(SimOptions {
            images: ImageSource::parse(
                &format!("procedural:{}", images.max(1)),
                &config.leaves,
                seed,
            )?,
            rig,
            config,
            out,
            seed,
            animal_seed: DEMO_ANIMAL_SEED,
            test_images: 0,
            repeats: 1,
            rf_jitter_deg: 0.0,
            broadband: false,
            progress: false,
        })
    }
}

/// What was written, and how fast.
#[derive(Clone, Debug, Serialize)]
pub struct SimSummary {
    pub images: usize,
    pub train_images: usize,
    pub test_images: usize,
    pub repeats: usize,
    pub trials: usize,
    pub channels: usize,
    pub simulated_s: f64,
    pub wall_s: f64,
    /// Simulated seconds per wall-clock second, session part only.
    pub realtime_factor: f64,
    /// The broadband stream's rate, when written.
    pub broadband_hz: Option<f64>,
    pub xdf_bytes: u64,
    pub out: PathBuf,
}

/// One image presentation in the session.
#[derive(Clone, Copy, Debug)]
struct Presentation {
    image: usize,
    test: bool,
    /// Sample index of the onset.
    onset: usize,
    /// Recording day ([`config::Design::days`]): the trial's session in the dataset.
    day: u32,
}

/// How the dataset holds each presentation. (The variants' docs are `--form`'s help.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetForm {
    /// `responses.npy` `[trials, 300, channels]`: the MUA from −100 to +199 ms.
    Trials,
    /// `responses.npy` `[trials, 2 + TW-3 windows, channels]`: each channel's means over
    /// its area's TW-15 window, each TW-3 window and the baseline window, what every
    /// decoder and the normalisation read (7 rows with the default windows, 1/43 of the
    /// trials' size).
    Windows,
}

/// Runs the simulation and writes everything under `opts.out`: the session, its stimuli
/// and the dataset of its trials.
pub fn simulate(opts: &SimOptions) -> anyhow::Result<SimSummary> {
    run(opts, true, DatasetForm::Trials)
}

/// The dataset [`simulate`] would write, in `form`, without the session file or the
/// stimulus PNGs (at TVSD's size the session alone is ~40 GB). The same blocks are
/// generated, so with [`DatasetForm::Trials`] it is [`simulate`]'s dataset, value for value.
pub fn simulate_dataset(opts: &SimOptions, form: DatasetForm) -> anyhow::Result<SimSummary> {
    if opts.broadband {
        bail!("--broadband is part of the session file, which a dataset-only run does not write");
    }
    run(opts, false, form)
}

fn run(opts: &SimOptions, with_session: bool, form: DatasetForm) -> anyhow::Result<SimSummary> {
    check_options(opts)?;
    let rig = &opts.rig;
    let n_images = opts.images.len();
    let out = &opts.out;
    let dataset = out.join("dataset");
    let image_dir = with_session.then(|| out.join("images"));
    for d in [Some(out), Some(&dataset), image_dir.as_ref()]
        .into_iter()
        .flatten()
    {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }

    // Ground truth and the decoder's table.
    let truth = write_rf_tables(opts)?;
    std::fs::write(
        out.join("cortex.toml"),
        toml::to_string_pretty(&opts.config).context("serialising the simulator config")?,
    )?;
    let cortex = Cortex::new(rig, &truth, &opts.config, opts.animal_seed)?;

    // Images: render, save, and compute every unit's response amplitude.
    let amplitudes = render_images(opts, &cortex, &dataset, image_dir.as_deref())?;

    // Design: which image when.
    let design = &opts.config.design;
    let mut presentations = schedule(n_images, opts.test_images, opts.repeats, design, opts.seed);
    let trial_len =
        (design.inter_trial_ms + design.images_per_trial * (design.on_ms + design.off_ms)) as usize;
    let n_trials = presentations
        .len()
        .div_ceil(design.images_per_trial as usize);
    let total = 2 * design.lead_in_ms as usize + n_trials * trial_len;

    // The session, block by block: MUA and markers into the XDF, trial windows into
    // responses.npy.
    let started = Instant::now();
    let xdf_path = out.join("session.xdf");
    let days = DayDrift::new(design, &presentations, &cortex, opts.seed);
    for p in &mut presentations {
        p.day = days.day(p.onset) as u32;
    }
    let generator = BlockGenerator {
        cortex: &cortex,
        amplitudes: &amplitudes,
        presentations: &presentations,
        days: &days,
        seed: opts.seed,
        total,
    };
    let trials = match form {
        DatasetForm::Trials => {
            DatasetWriter::create(&dataset, rig.channel_count, TRIAL_SAMPLES, PRE_MS)?
        }
        DatasetForm::Windows => {
            let rows = 2 + rig.windows.tw3_starts.len();
            DatasetWriter::create(&dataset, rig.channel_count, rows, 0)?
                .holding_window_means(crate::dataset::window_layout(rig))
        }
    };
    let xdf = with_session.then_some(xdf_path.as_path());
    let session = SessionWriter::create(opts, xdf, trials, form, &presentations)?;
    let trials = write_blocks(opts, &generator, session)?;
    let wall_s = started.elapsed().as_secs_f64();
    let simulated_s = total as f64 / 1000.0;
    let summary = SimSummary {
        images: n_images,
        train_images: n_images - opts.test_images,
        test_images: opts.test_images,
        repeats: opts.repeats,
        trials: presentations.len(),
        channels: rig.channel_count,
        simulated_s,
        wall_s,
        realtime_factor: simulated_s / wall_s.max(1e-9),
        broadband_hz: opts.broadband.then_some(rig.broadband.sampling_rate_hz),
        xdf_bytes: match with_session {
            true => std::fs::metadata(&xdf_path).map(|m| m.len()).unwrap_or(0),
            false => 0,
        },
        out: out.clone(),
    };
    let image_ids: Vec<String> = (0..n_images).map(|i| opts.images.id(i)).collect();
    trials.finish(DatasetInfo {
        rig,
        image_ids: &image_ids,
        split: Split::Given,
        seed: Some(opts.seed),
        sampling_rate_hz: rig.sampling_rate_hz,
        source: serde_json::json!({
            "simulate": {
                "animal_seed": opts.animal_seed,
                "repeats": opts.repeats,
                "days": opts.config.design.days,
                "rf_jitter_deg": opts.rf_jitter_deg,
                "rf_truth": "../rf-truth.csv",
                "rf_table": "../rf-table.csv",
                "session": with_session.then_some("../session.xdf"),
                "form": form,
            }
        }),
    })?;
    Ok(summary)
}

/// Generates the session's blocks in parallel batches and writes them in order; hands
/// back the dataset, every trial written.
fn write_blocks(
    opts: &SimOptions,
    generator: &BlockGenerator,
    mut session: SessionWriter,
) -> anyhow::Result<DatasetWriter> {
    let total = generator.total;
    let n_blocks = total.div_ceil(BLOCK);
    let bar = progress_bar(opts.progress, total as u64 / 1000, "simulated s");
    // Blocks generated at once: two per thread, or with the raw signal (61 MB a block
    // at 1024 channels, 184 MB while built) at most four.
    let mut batch = rayon::current_num_threads().max(1) * 2;
    if opts.broadband {
        batch = batch.min(4);
    }
    let raw = opts
        .broadband
        .then(|| RawSignal::new(opts, generator.cortex));
    for first in (0..n_blocks).step_by(batch) {
        let blocks: Vec<(Vec<f32>, Option<Vec<i16>>)> = (first..(first + batch).min(n_blocks))
            .into_par_iter()
            .map(|b| {
                let mua = generator.block(b);
                let broadband = raw.as_ref().map(|r| r.block(b, &mua));
                (mua, broadband)
            })
            .collect();
        for (k, (block, broadband)) in blocks.into_iter().enumerate() {
            if let Some(raw) = broadband {
                session.write_broadband(first + k, &raw)?;
            }
            let end = session.write_block(first + k, block)?;
            bar.set_position(end as u64 / 1000);
        }
    }
    let trials = session.finish()?;
    bar.finish_and_clear();
    Ok(trials)
}

/// The options a simulation can run with: the simulator's rate, no more test images than
/// images, repeats for them, a finite RF jitter.
fn check_options(opts: &SimOptions) -> anyhow::Result<()> {
    let rig = &opts.rig;
    if (rig.sampling_rate_hz - 1000.0).abs() > 1e-9 {
        bail!(
            "the simulator samples at 1000 Hz (TVSD's MUA rate) but rig {} says {} Hz (rig.sampling_rate_hz)",
            rig.path.display(),
            rig.sampling_rate_hz
        );
    }
    let n_images = opts.images.len();
    if opts.test_images > n_images {
        bail!(
            "--test-images {} is more than the {} images available",
            opts.test_images,
            n_images
        );
    }
    if opts.test_images > 0 && opts.repeats == 0 {
        bail!("--repeats must be at least 1 when there are test images");
    }
    if !(opts.rf_jitter_deg.is_finite() && opts.rf_jitter_deg >= 0.0) {
        bail!("--rf-jitter must be a number of degrees ≥ 0");
    }
    if let Some((key, message)) = config::design_problem(&opts.config.design) {
        bail!("the simulator's {key} {message}");
    }
    let trials = n_images - opts.test_images + opts.test_images * opts.repeats;
    let design = &opts.config.design;
    if design.days > 1 && design.days as usize * design.images_per_trial as usize > trials {
        bail!(
            "{} days of {} images per trial need at least {} presentations; this session has {trials}",
            design.days,
            design.images_per_trial,
            design.days * design.images_per_trial
        );
    }
    if opts.broadband && rig.broadband.decimation(rig.sampling_rate_hz).is_none() {
        bail!(
            "--broadband: rig {} [broadband]: sampling_rate_hz {} Hz is not a whole multiple of the MUA rate ({} Hz)",
            rig.path.display(),
            rig.broadband.sampling_rate_hz,
            rig.sampling_rate_hz
        );
    }
    Ok(())
}

/// Writes `rf-truth.csv` (the rig's table, or a synthetic one for the animal) and
/// `rf-table.csv` (the truth with mapping error); returns the truth.
fn write_rf_tables(opts: &SimOptions) -> anyhow::Result<RfTable> {
    let truth = match &opts.rig.rf.table {
        Some(t) => t.clone(),
        None => RfTable::synthetic(&opts.rig, opts.animal_seed),
    };
    truth.save(&opts.out.join("rf-truth.csv"))?;
    jittered(&truth, opts.rf_jitter_deg, opts.seed).save(&opts.out.join("rf-table.csv"))?;
    Ok(truth)
}

/// Renders every image in parallel batches, saves it as `image_dir/<id>.png` (when
/// given) and into the dataset's `images.npy`; returns each image's unit amplitudes
/// (its features are dropped batch by batch: 6× the amplitudes' memory).
fn render_images(
    opts: &SimOptions,
    cortex: &Cortex,
    dataset: &Path,
    image_dir: Option<&Path>,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let n_images = opts.images.len();
    let size = opts.rig.image_size;
    let bar = progress_bar(opts.progress, n_images as u64, "images");
    let mut images_npy = ImageRows::create(dataset, n_images, size)?;
    let mut amplitudes = Vec::with_capacity(n_images);
    let batch = rayon::current_num_threads().max(1) * 4;
    for start in (0..n_images).step_by(batch) {
        let end = (start + batch).min(n_images);
        let rendered: Vec<anyhow::Result<(Vec<u8>, cortex::UnitFeatures)>> = (start..end)
            .into_par_iter()
            .map(|i| {
                let img = opts.images.render(i, size)?;
                let rgb8 = to_rgb8(&img);
                if let Some(dir) = image_dir {
                    let png = dir.join(format!("{}.png", opts.images.id(i)));
                    image::save_buffer(
                        &png,
                        &rgb8,
                        size as u32,
                        size as u32,
                        image::ExtendedColorType::Rgb8,
                    )
                    .with_context(|| format!("writing {}", png.display()))?;
                }
                Ok((rgb8, cortex.features(&img)))
            })
            .collect();
        for r in rendered {
            let (rgb8, f) = r?;
            images_npy.push(&rgb8)?;
            amplitudes.extend(cortex.amplitudes(std::slice::from_ref(&f)));
        }
        bar.set_position(end as u64);
    }
    images_npy.finish()?;
    bar.finish_and_clear();
    Ok(amplitudes)
}

/// Writes the session's blocks, in order: MUA samples and markers into `session.xdf`
/// (with a clock offset every 5 s, as LabRecorder measures them), and every trial
/// window, once its last sample is written, into the dataset.
struct SessionWriter<'a> {
    opts: &'a SimOptions,
    presentations: &'a [Presentation],
    /// `None` for a dataset-only run.
    xdf: Option<XdfWriter<BufWriter<File>>>,
    trials: DatasetWriter,
    form: DatasetForm,
    /// One trial's samples, gathered from up to two blocks.
    trial: Vec<f32>,
    /// The block before the current one (a trial window starts at most one block back).
    previous: Vec<f32>,
    /// Next presentation to cut out of the blocks.
    next_cut: usize,
    /// Next marker (2 per presentation: on, off).
    next_marker: usize,
    next_offset_at: f64,
    stamps: Vec<f64>,
}

impl<'a> SessionWriter<'a> {
    fn create(
        opts: &'a SimOptions,
        xdf_path: Option<&Path>,
        trials: DatasetWriter,
        form: DatasetForm,
        presentations: &'a [Presentation],
    ) -> anyhow::Result<SessionWriter<'a>> {
        let rig = &opts.rig;
        let xdf = xdf_path
            .map(|path| -> anyhow::Result<_> {
                let mut xdf = XdfWriter::create(path)?;
                xdf.add_stream(MUA_STREAM, mua_spec(rig, opts))?;
                xdf.add_stream(MARKER_STREAM, marker_spec(rig, opts.images.len()))?;
                if opts.broadband {
                    xdf.add_stream(BROADBAND_STREAM, broadband_spec(rig, opts))?;
                }
                Ok(xdf)
            })
            .transpose()?;
        Ok(SessionWriter {
            opts,
            presentations,
            xdf,
            trials,
            form,
            trial: Vec::with_capacity(TRIAL_SAMPLES * rig.channel_count),
            previous: Vec::new(),
            next_cut: 0,
            next_marker: 0,
            next_offset_at: 0.0,
            stamps: Vec::with_capacity(BLOCK),
        })
    }

    /// Writes block `b` (the samples from `b·BLOCK` on, row-major); returns the sample
    /// index it ends at.
    fn write_block(&mut self, b: usize, block: Vec<f32>) -> anyhow::Result<usize> {
        let channels = self.opts.rig.channel_count;
        let start = b * BLOCK;
        let end = start + block.len() / channels;
        if self.xdf.is_some() {
            self.write_session(start, end, &block)?;
        }
        self.cut_trials(start, end, &block)?;
        self.previous = block;
        Ok(end)
    }

    /// The block's samples `[start, end)` and markers into `session.xdf`.
    fn write_session(&mut self, start: usize, end: usize, block: &[f32]) -> anyhow::Result<()> {
        self.stamps.clear();
        self.stamps
            .extend((start..end).map(|n| SESSION_T0 + n as f64 / 1000.0));
        let xdf = self.xdf.as_mut().expect("a session is written");
        xdf.write_samples_f32(MUA_STREAM, block, &self.stamps)?;
        self.write_markers(end)?;
        // LabRecorder measures clock offsets every 5 s; a simulation has none.
        let end_t = SESSION_T0 + end as f64 / 1000.0;
        if end_t >= self.next_offset_at {
            let xdf = self.xdf.as_mut().expect("a session is written");
            xdf.write_clock_offset(MUA_STREAM, end_t, 0.0)?;
            xdf.write_clock_offset(MARKER_STREAM, end_t, 0.0)?;
            if self.opts.broadband {
                xdf.write_clock_offset(BROADBAND_STREAM, end_t, 0.0)?;
            }
            self.next_offset_at = end_t + 5.0;
        }
        Ok(())
    }

    /// Writes the raw signal under MUA block `b`, in chunks of 1000 raw samples.
    fn write_broadband(&mut self, b: usize, raw: &[i16]) -> anyhow::Result<()> {
        let channels = self.opts.rig.channel_count;
        let rate = self.opts.rig.broadband.sampling_rate_hz;
        let per_ms = (rate / 1000.0).round() as usize;
        let first = b * BLOCK * per_ms;
        for (k, chunk) in raw.chunks(1000 * channels).enumerate() {
            let start = first + k * 1000;
            let rows = chunk.len() / channels;
            self.stamps.clear();
            self.stamps
                .extend((start..start + rows).map(|n| SESSION_T0 + n as f64 / rate));
            let xdf = self
                .xdf
                .as_mut()
                .context("the raw signal goes into a session")?;
            xdf.write_samples_i16(BROADBAND_STREAM, chunk, &self.stamps)?;
        }
        Ok(())
    }

    /// The markers whose time falls before sample `end` and that are not written yet.
    fn write_markers(&mut self, end: usize) -> anyhow::Result<()> {
        let on_ms = self.opts.config.design.on_ms as usize;
        let mut texts = Vec::new();
        let mut marker_stamps = Vec::new();
        while self.next_marker < 2 * self.presentations.len() {
            let p = &self.presentations[self.next_marker / 2];
            let onset = self.next_marker.is_multiple_of(2);
            let at = if onset { p.onset } else { p.onset + on_ms };
            if at >= end {
                break;
            }
            texts.push(if onset {
                format!("stim_on {}", self.opts.images.id(p.image))
            } else {
                "stim_off".to_string()
            });
            marker_stamps.push(SESSION_T0 + at as f64 / 1000.0);
            self.next_marker += 1;
        }
        if let (false, Some(xdf)) = (texts.is_empty(), self.xdf.as_mut()) {
            xdf.write_samples_str(MARKER_STREAM, &texts, &marker_stamps)?;
        }
        Ok(())
    }

    /// Appends to the dataset the trial windows that end inside the block `[start, end)`
    /// (they start at most one block back).
    fn cut_trials(&mut self, start: usize, end: usize, block: &[f32]) -> anyhow::Result<()> {
        let channels = self.opts.rig.channel_count;
        while self.next_cut < self.presentations.len() {
            let p = &self.presentations[self.next_cut];
            let (lo, hi) = (p.onset - PRE_MS, p.onset + POST_MS);
            if hi > end {
                break;
            }
            self.trial.clear();
            if lo < start {
                // The previous block is a whole one: it ends where this one starts.
                let prev_start = start - BLOCK;
                self.trial
                    .extend_from_slice(&self.previous[(lo - prev_start) * channels..]);
            }
            self.trial.extend_from_slice(
                &block[(lo.max(start) - start) * channels..(hi - start) * channels],
            );
            let info = TrialInfo {
                image: p.image,
                onset: SESSION_T0 + p.onset as f64 / 1000.0,
                session: p.day,
                test: Some(p.test),
            };
            match self.form {
                DatasetForm::Trials => self.trials.push(&self.trial, info)?,
                DatasetForm::Windows => {
                    let row = self.window_means();
                    self.trials.push(&row, info)?;
                }
            }
            self.next_cut += 1;
        }
        Ok(())
    }

    /// The trial in `self.trial` as window means, `[TW-15, TW-3…, baseline][channel]`
    /// (dead channels 0), by the dataset's own definition of a window's mean.
    fn window_means(&self) -> Vec<f32> {
        let rig = &self.opts.rig;
        let channels = rig.channel_count;
        let rows = 2 + rig.windows.tw3_starts.len();
        let mut out = vec![0.0f32; rows * channels];
        let (mut means, mut baseline) = (Vec::new(), Vec::new());
        let n_e = rig.electrodes.len();
        for (first, set) in [(0, WindowSetKind::Tw15), (1, WindowSetKind::Tw3)] {
            raw_window_means(
                &self.trial,
                channels,
                PRE_MS,
                rig,
                set,
                &mut means,
                Some(&mut baseline),
            );
            for (e, el) in rig.electrodes.iter().enumerate() {
                for k in 0..means.len() / n_e {
                    out[(first + k) * channels + el.channel] = means[k * n_e + e] as f32;
                }
                out[(rows - 1) * channels + el.channel] = baseline[e] as f32;
            }
        }
        out
    }

    /// Closes `session.xdf`; hands back the dataset, every trial written.
    fn finish(self) -> anyhow::Result<DatasetWriter> {
        if let Some(xdf) = self.xdf {
            xdf.finish()?;
        }
        Ok(self.trials)
    }
}

/// Train images once, test images `repeats` times, shuffled, in trials of
/// `images_per_trial` after a blank lead-in; onsets in samples.
fn schedule(
    n_images: usize,
    test_images: usize,
    repeats: usize,
    design: &config::Design,
    seed: u64,
) -> Vec<Presentation> {
    let mut rng = seeds::rng(seed, seeds::DOMAIN_DESIGN, 0);
    let mut order: Vec<usize> = (0..n_images).collect();
    order.shuffle(&mut rng);
    let mut shown: Vec<(usize, bool)> = order[..test_images]
        .iter()
        .flat_map(|&i| std::iter::repeat_n((i, true), repeats))
        .chain(order[test_images..].iter().map(|&i| (i, false)))
        .collect();
    shown.shuffle(&mut rng);
    let per_trial = design.images_per_trial as usize;
    let soa = (design.on_ms + design.off_ms) as usize;
    let trial_len = design.inter_trial_ms as usize + per_trial * soa;
    shown
        .into_iter()
        .enumerate()
        .map(|(k, (image, test))| Presentation {
            image,
            test,
            day: 0,
            onset: design.lead_in_ms as usize
                + (k / per_trial) * trial_len
                + design.inter_trial_ms as usize
                + (k % per_trial) * soa,
        })
        .collect()
}

/// Generates blocks of samples independently (so in parallel) and deterministically.
#[derive(Clone, Copy)]
struct BlockGenerator<'a> {
    cortex: &'a Cortex,
    amplitudes: &'a [Vec<f32>],
    presentations: &'a [Presentation],
    days: &'a DayDrift,
    seed: u64,
    total: usize,
}

/// The recording days of a session and each electrode's drift on each
/// ([`config::Design::days`]).
struct DayDrift {
    /// First sample of each day.
    starts: Vec<usize>,
    /// `[day][channel]` gain on the spontaneous level and the responses.
    gain: Vec<f32>,
    /// `[day][channel]` shift of the baseline.
    baseline: Vec<f32>,
    channels: usize,
}

impl DayDrift {
    /// Days of equal numbers of trials, each starting with a trial; no drift for one day.
    fn new(
        design: &config::Design,
        presentations: &[Presentation],
        cortex: &Cortex,
        seed: u64,
    ) -> DayDrift {
        let channels = cortex.channels.len();
        let days = design.days as usize;
        let per_trial = design.images_per_trial as usize;
        let mut starts = vec![0];
        for d in 1..days {
            let k = (d * presentations.len() / days) / per_trial * per_trial;
            if let Some(p) = presentations.get(k) {
                starts.push(p.onset.saturating_sub(design.inter_trial_ms as usize));
            }
        }
        let mut drift = DayDrift {
            gain: vec![1.0; starts.len() * channels],
            baseline: vec![0.0; starts.len() * channels],
            starts,
            channels,
        };
        if days > 1 {
            let mut rng = seeds::rng(seed, seeds::DOMAIN_DAYS, 0);
            let mut z = || seeds::normal(&mut rng);
            for (i, (g, b)) in drift.gain.iter_mut().zip(&mut drift.baseline).enumerate() {
                let ch = &cortex.channels[i % channels];
                *g = (design.day_gain_sd * z()).exp() as f32;
                *b = (design.day_baseline_sd * z()) as f32 * ch.spontaneous;
            }
        }
        drift
    }

    /// The day of sample `n`.
    fn day(&self, n: usize) -> usize {
        self.starts.partition_point(|&s| s <= n) - 1
    }

    /// Gain and baseline shift of every channel on `day`.
    fn of(&self, day: usize) -> (&[f32], &[f32]) {
        let at = day * self.channels..(day + 1) * self.channels;
        (&self.gain[at.clone()], &self.baseline[at])
    }
}

impl BlockGenerator<'_> {
    /// Samples `[b·BLOCK, (b+1)·BLOCK)` (clipped to the session), row-major by sample.
    fn block(&self, b: usize) -> Vec<f32> {
        let cortex = self.cortex;
        let channels = cortex.channels.len();
        let start = b * BLOCK;
        let len = BLOCK.min(self.total - start);
        let mut out = vec![0.0f32; len * channels];
        let mut rng = seeds::rng(self.seed, seeds::DOMAIN_NOISE, b as u64);
        for (i, row) in out.chunks_exact_mut(channels).enumerate() {
            let (gain, baseline) = self.days.of(self.days.day(start + i));
            for (((v, ch), g), shift) in
                row.iter_mut().zip(&cortex.channels).zip(gain).zip(baseline)
            {
                let z = seeds::normal(&mut rng) as f32;
                *v = ch.spontaneous * g + shift + ch.noise_sd * z;
            }
        }
        // Presentations whose response can reach into this block.
        let reach = cortex.kernels.iter().map(Vec::len).max().unwrap_or(0)
            + cortex.units.iter().map(|u| u.latency).max().unwrap_or(0)
            + 64; // latency jitter
        let first = self
            .presentations
            .partition_point(|p| p.onset + reach < start);
        self.add_responses(first, start, &mut out);
        out
    }

    /// Adds the responses of presentations from index `first` on to the block starting
    /// at sample `start`.
    fn add_responses(&self, first: usize, start: usize, out: &mut [f32]) {
        let cortex = self.cortex;
        let channels = cortex.channels.len();
        let len = out.len() / channels;
        let row_day: Vec<usize> = (start..start + len).map(|n| self.days.day(n)).collect();
        for (pi, p) in self.presentations.iter().enumerate().skip(first) {
            if p.onset >= start + len {
                break;
            }
            let trial = PresentationDraw::new(self.seed, pi, cortex);
            let amps = &self.amplitudes[p.image];
            for (u, unit) in cortex.units.iter().enumerate() {
                let a = unit.area.index();
                let kernel = &cortex.kernels[a];
                // Jitter never moves a response before its image.
                let onset = (p.onset + unit.latency) as isize
                    + trial.jitter[a].max(-(unit.latency as isize));
                let scale = trial.gain[u] * amps[u];
                let from = (onset.max(start as isize) as usize).min(start + len);
                let to = ((onset + kernel.len() as isize).max(0) as usize).min(start + len);
                for n in from..to {
                    let gain = self.days.gain[row_day[n - start] * channels + unit.channel];
                    out[(n - start) * channels + unit.channel] +=
                        scale * gain * kernel[(n as isize - onset) as usize];
                }
            }
        }
    }
}

/// The raw headstage signal under the MUA (see the module doc).
struct RawSignal {
    model: config::BroadbandModel,
    rate: f64,
    /// Raw samples per MUA sample.
    per_ms: usize,
    /// One spike, in µV per µV of depth.
    spike: Vec<f32>,
    /// Each electrode's mains amplitude, µV.
    line_uv: Vec<f32>,
    seed: u64,
}

impl RawSignal {
    fn new(opts: &SimOptions, cortex: &Cortex) -> RawSignal {
        let model = opts.config.broadband.clone();
        let rate = opts.rig.broadband.sampling_rate_hz;
        let len = ((model.spike_ms * rate / 1000.0).round() as usize).max(2);
        let spike = (0..len)
            .map(|j| {
                let u = j as f64 / len as f64;
                let w = if u < 0.3 {
                    -(u / 0.3 * std::f64::consts::PI).sin()
                } else {
                    0.4 * ((u - 0.3) / 0.7 * std::f64::consts::PI).sin()
                };
                w as f32
            })
            .collect();
        let mut rng = seeds::rng(opts.seed, seeds::DOMAIN_BROADBAND, u64::MAX);
        let line_uv = (0..cortex.channels.len())
            .map(|_| (model.line_uv * rand::Rng::random_range(&mut rng, 0.5..1.5)) as f32)
            .collect();
        RawSignal {
            per_ms: (rate / 1000.0).round() as usize,
            model,
            rate,
            spike,
            line_uv,
            seed: opts.seed,
        }
    }

    /// The raw rows under MUA block `b` (`mua`: its rows), int16 counts, row-major.
    fn block(&self, b: usize, mua: &[f32]) -> Vec<i16> {
        use rand::Rng;
        let channels = self.line_uv.len();
        let rows = mua.len() / channels * self.per_ms;
        let first = b * BLOCK * self.per_ms;
        let mut uv = vec![0.0f32; rows * channels];
        let mut rng = seeds::rng(self.seed, seeds::DOMAIN_BROADBAND, b as u64);
        let w = 2.0 * std::f64::consts::PI * self.model.line_hz / self.rate;
        let noise = self.model.noise_uv as f32;
        for (r, row) in uv.chunks_exact_mut(channels).enumerate() {
            let line = ((first + r) as f64 * w).sin() as f32;
            for (v, amp) in row.iter_mut().zip(&self.line_uv) {
                let z = seeds::normal(&mut rng) as f32;
                *v = line * amp + noise * z;
            }
        }
        let per_ms = self.model.spikes_per_s_per_unit / 1000.0;
        let [lo, hi] = self.model.spike_uv;
        for (m, mua_row) in mua.chunks_exact(channels).enumerate() {
            for (c, &level) in mua_row.iter().enumerate() {
                let mean = per_ms * f64::from(level.max(0.0));
                let spikes = match rand_distr::Poisson::new(mean) {
                    Ok(p) => rand_distr::Distribution::<f64>::sample(&p, &mut rng) as usize,
                    Err(_) => 0, // a mean of 0
                };
                for _ in 0..spikes {
                    let at = m * self.per_ms + rng.random_range(0..self.per_ms);
                    let depth = rng.random_range(lo..=hi) as f32;
                    for (j, s) in self.spike.iter().enumerate().take(rows.saturating_sub(at)) {
                        uv[(at + j) * channels + c] += depth * s;
                    }
                }
            }
        }
        let scale = 1.0 / self.model.uv_per_count as f32;
        uv.iter()
            .map(|v| {
                (v * scale)
                    .round()
                    .clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
            })
            .collect()
    }
}

/// Trial-to-trial variability of one presentation: latency jitter per area (samples)
/// and a multiplicative gain per unit (mean 1), shared in part by an area's units.
struct PresentationDraw {
    jitter: [isize; 3],
    gain: Vec<f32>,
}

impl PresentationDraw {
    fn new(seed: u64, index: usize, cortex: &Cortex) -> PresentationDraw {
        let mut rng = seeds::rng(seed, seeds::DOMAIN_PRESENTATIONS, index as u64);
        let mut normal = || seeds::normal(&mut rng);
        let mut jitter = [0isize; 3];
        let mut shared = [0.0f64; 3];
        for area in Area::ALL {
            let m = cortex.config.area(area);
            jitter[area.index()] =
                (m.latency_jitter_ms * normal()).round().clamp(-60.0, 60.0) as isize;
            shared[area.index()] = m.shared_gain_sd * normal();
        }
        let gain = cortex
            .units
            .iter()
            .map(|u| {
                let m = cortex.config.area(u.area);
                let var = m.shared_gain_sd.powi(2) + m.trial_gain_sd.powi(2);
                (shared[u.area.index()] + m.trial_gain_sd * normal() - var / 2.0).exp() as f32
            })
            .collect();
        PresentationDraw { jitter, gain }
    }
}

/// The truth with mapping error: centre + N(0, jitter) degrees, size × lognormal(0.2).
fn jittered(truth: &RfTable, jitter_deg: f64, seed: u64) -> RfTable {
    if jitter_deg == 0.0 {
        return truth.clone();
    }
    let mut rng = seeds::rng(seed, seeds::DOMAIN_JITTER, 0);
    let mut n = || seeds::normal(&mut rng);
    RfTable {
        entries: truth
            .entries
            .iter()
            .map(|e| RfEntry {
                x_deg: e.x_deg + jitter_deg * n(),
                y_deg: e.y_deg + jitter_deg * n(),
                size_deg: e.size_deg * (0.2 * n()).exp(),
                ..*e
            })
            .collect(),
    }
}

fn mua_spec(rig: &RigConfig, opts: &SimOptions) -> StreamSpec {
    let seed = opts.seed;
    let mut spec = StreamSpec::new(
        rig.mua.name.as_deref().unwrap_or("monkeysee-synthetic-mua"),
        rig.mua.stream_type.as_deref().unwrap_or("MUA"),
        rig.channel_count,
        rig.sampling_rate_hz,
        ChannelFormat::Float32,
    );
    spec.source_id = rig
        .mua
        .source_id
        .clone()
        .unwrap_or_else(|| format!("monkeysee-simulate-{seed}-mua"));
    spec.channel_labels = (0..rig.channel_count)
        .map(|c| rig.channel_label(c))
        .collect();
    spec.channel_fields = (0..rig.channel_count)
        .map(|c| {
            let array = rig.arrays.iter().find(|arr| arr.channels.contains(&c));
            let mut f = vec![
                ("type".to_string(), "MUA".to_string()),
                ("unit".to_string(), "a.u.".to_string()),
            ];
            if let Some(arr) = array {
                f.push(("area".into(), arr.area.name().into()));
                f.push(("array".into(), arr.id.to_string()));
                f.push(("live".into(), (!arr.dead).to_string()));
            }
            f
        })
        .collect();
    spec.desc_fields = vec![
        (
            "acquisition/manufacturer".into(),
            "monkeysee synthetic cortex".into(),
        ),
        ("acquisition/rig".into(), rig.name.clone()),
        ("acquisition/seed".into(), seed.to_string()),
        (
            "acquisition/animal_seed".into(),
            opts.animal_seed.to_string(),
        ),
    ];
    spec
}

/// The raw stream's header: named as the rig's `[streams.broadband]` selector says,
/// int16 at the rig's broadband rate, with each channel's label, area, array and scale.
fn broadband_spec(rig: &RigConfig, opts: &SimOptions) -> StreamSpec {
    let selector = rig.broadband.selector.clone().unwrap_or_default();
    let mua = mua_spec(rig, opts);
    let scale = opts.config.broadband.uv_per_count.to_string();
    let channel_fields = mua
        .channel_fields
        .into_iter()
        .map(|fields| {
            fields
                .into_iter()
                .map(|(k, v)| match k.as_str() {
                    "type" => (k, "Broadband".to_string()),
                    "unit" => (k, "counts".to_string()),
                    _ => (k, v),
                })
                .chain([("scaling_factor".to_string(), scale.clone())])
                .collect()
        })
        .collect();
    StreamSpec {
        name: selector
            .name
            .unwrap_or_else(|| "monkeysee-synthetic-broadband".into()),
        content_type: selector.stream_type.unwrap_or_else(|| "Broadband".into()),
        nominal_srate: rig.broadband.sampling_rate_hz,
        channel_format: ChannelFormat::Int16,
        source_id: selector
            .source_id
            .unwrap_or_else(|| format!("monkeysee-simulate-{}-broadband", opts.seed)),
        channel_fields,
        ..mua
    }
}

fn marker_spec(rig: &RigConfig, n_images: usize) -> StreamSpec {
    let mut spec = StreamSpec::new(
        rig.markers
            .name
            .as_deref()
            .unwrap_or("monkeysee-synthetic-markers"),
        rig.markers.stream_type.as_deref().unwrap_or("Markers"),
        1,
        0.0,
        ChannelFormat::String,
    );
    spec.source_id = rig
        .markers
        .source_id
        .clone()
        .unwrap_or_else(|| "monkeysee-simulate-markers".to_string());
    spec.desc_fields = vec![
        ("stimuli/directory".into(), "images".into()),
        ("stimuli/count".into(), n_images.to_string()),
        ("stimuli/format".into(), "<image_id>.png".into()),
    ];
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The look-back that picks the presentations reaching into a block misses none:
    /// every block equals the same block built from all earlier presentations, with
    /// onsets placed so responses cross block boundaries.
    #[test]
    fn blocks_include_every_response_that_reaches_them() {
        let rig = RigConfig::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/synthetic.toml"),
        )
        .unwrap();
        let config = SimConfig::default();
        let truth = rig.rf.table.clone().unwrap();
        let cortex = Cortex::new(&rig, &truth, &config, 1).unwrap();
        let images = ImageSource::parse("procedural:3", &config.leaves, 1).unwrap();
        let feats: Vec<_> = (0..3)
            .map(|i| cortex.features(&images.render(i, rig.image_size).unwrap()))
            .collect();
        let amplitudes = cortex.amplitudes(&feats);
        let presentations: Vec<Presentation> = [700, 990, 1390, 1999, 2400, 2800]
            .iter()
            .enumerate()
            .map(|(k, &onset)| Presentation {
                image: k % 3,
                test: false,
                onset,
                day: 0,
            })
            .collect();
        let generator = BlockGenerator {
            cortex: &cortex,
            amplitudes: &amplitudes,
            presentations: &presentations,
            days: &DayDrift::new(&config.design, &presentations, &cortex, 3),
            seed: 3,
            total: 4 * BLOCK,
        };
        let channels = rig.channel_count;
        for b in 0..4 {
            let fast = generator.block(b);
            let mut all = vec![0.0f32; fast.len()];
            // Noise of the block alone, then every presentation from the first.
            let noise_only = BlockGenerator {
                presentations: &[],
                ..generator
            }
            .block(b);
            all.copy_from_slice(&noise_only);
            generator.add_responses(0, b * BLOCK, &mut all);
            assert!(fast == all, "block {b} differs from the brute-force sum");
            // And responses do cross into it (the test means something).
            if b > 0 {
                let c = rig.electrodes[0].channel;
                assert!((0..50)
                    .any(|n| (fast[n * channels + c] - noise_only[n * channels + c]).abs() > 1e-6));
            }
        }
    }

    /// Each day has its own drift, and a sample takes the drift of the day it is in: the
    /// mean of a channel's spontaneous activity over a day is its drifted level.
    #[test]
    fn every_day_drifts_and_one_day_does_not() {
        let rig = RigConfig::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config/synthetic.toml"),
        )
        .unwrap();
        let mut config = SimConfig::default();
        let truth = rig.rf.table.clone().unwrap();
        let cortex = Cortex::new(&rig, &truth, &config, 1).unwrap();
        let trial = (config.design.inter_trial_ms
            + config.design.images_per_trial * (config.design.on_ms + config.design.off_ms))
            as usize;
        // Eight trials of presentations, two days of four.
        let per_trial = config.design.images_per_trial as usize;
        let presentations: Vec<Presentation> = (0..8 * per_trial)
            .map(|k| Presentation {
                image: 0,
                test: false,
                day: 0,
                onset: (k / per_trial) * trial + config.design.inter_trial_ms as usize,
            })
            .collect();
        let one_day = DayDrift::new(&config.design, &presentations, &cortex, 5);
        assert_eq!(one_day.starts, vec![0]);
        assert!(one_day.gain.iter().all(|&g| g == 1.0));
        assert!(one_day.baseline.iter().all(|&b| b == 0.0));
        config.design.days = 2;
        let days = DayDrift::new(&config.design, &presentations, &cortex, 5);
        assert_eq!(days.starts, vec![0, 4 * trial]);
        let generator = BlockGenerator {
            cortex: &cortex,
            amplitudes: &[],
            presentations: &[],
            days: &days,
            seed: 3,
            total: 8 * trial,
        };
        let blocks: Vec<f32> = (0..(8 * trial).div_ceil(BLOCK))
            .flat_map(|b| generator.block(b))
            .collect();
        let channels = rig.channel_count;
        let mut moved = 0;
        for (c, ch) in cortex.channels.iter().enumerate() {
            for day in 0..2 {
                let rows = days.starts[day]..days.starts.get(day + 1).copied().unwrap_or(8 * trial);
                let n = rows.len() as f32;
                let mean = rows.map(|r| blocks[r * channels + c]).sum::<f32>() / n;
                let (gain, shift) = days.of(day);
                let expected = ch.spontaneous * gain[c] + shift[c];
                assert!(
                    (mean - expected).abs() < 5.0 * ch.noise_sd / n.sqrt() + 1e-4,
                    "channel {c} day {day}: mean {mean}, drifted level {expected}"
                );
                if (expected - ch.spontaneous).abs() > 0.05 * ch.spontaneous {
                    moved += 1;
                }
            }
        }
        assert!(
            moved > channels / 2,
            "only {moved} channel-days drifted by 5 %"
        );
    }
}
