//! `monkeysee train`: fits a MonkeySee decoder (pix2pix generator + conditional PatchGAN)
//! on a dataset in [`crate::dataset`]'s layout.
//!
//! Per step (pix2pix): the discriminator learns `½·(BCE(D(x, pool(ŷ)), 0) + BCE(D(x, y), 1))`
//! with a history pool of generated pairs; then the generator learns
//! `adversarial · BCE(D(x, ŷ), 1) + pixel · L1(ŷ, y) + vgg · L1(VGG19(ŷ), VGG19(y))`;
//! the perceptual term ([`vgg`]) needs torchvision's pretrained VGG19, a file the
//! user supplies (`vgg_weights`); without it the term is left out. Adam (lr 2e-4,
//! β1 0.5) for both; the learned RF layer's centres and sizes, in pixels, get a
//! learning rate of their own (`rf_lr`).
//!
//! Inputs are cut from each trial exactly as the daemon cuts them live
//! ([`Dataset::features`]) and z-scored with [`crate::norm`]'s statistics over each
//! session's presentations; their average over sessions is saved beside the model
//! (`normalization.json`), where the daemon starts. Trials with NaN/Inf samples in a
//! window are left out, as the daemon skips them.
//!
//! Output folder: `decoder.json` + `weights.mpk` (+ `normalization.json`) — a model
//! `monkeysee run --model` loads — and `training.json` (options and per-epoch losses),
//! `losses.csv`, `loss.png`, and `checkpoint/` for `--resume`.

pub mod discriminator;
pub mod engine;
pub mod host;
pub mod rf_encoding;
pub mod vgg;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::AutodiffBackend;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

pub use discriminator::Discriminator;
pub use engine::EngineChoice;
pub use vgg::{PerceptualLoss, Vgg19};

use crate::config::RigConfig;
use crate::config::{decoder_config, window_set};
use crate::dataset::Dataset;
use crate::decoder::linear::{self, LinearDecoder, LinearPathwayConfig, LinearPathwayLayer};
use crate::decoder::{host_values, Decoder, DecoderConfig, DecoderKind, DecoderModel, FixedRfMaps};
use crate::norm::NormStats;
use engine::{Batch, Engine, HostOptimSteps, OptimiserSettings, StepSettings};

/// Loss weights (MonkeySee: pixel 0.5, adversarial 0.01, VGG 1.0).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct LossWeights {
    pub pixel: f64,
    pub adversarial: f64,
    /// Weight of the VGG19 feature L1 (used only with `vgg_weights`).
    #[serde(default = "default_vgg_weight")]
    pub vgg: f64,
}

fn default_vgg_weight() -> f64 {
    1.0
}

impl Default for LossWeights {
    fn default() -> Self {
        LossWeights {
            pixel: 0.5,
            adversarial: 0.01,
            vgg: 1.0,
        }
    }
}

/// Everything `train` needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainOptions {
    #[serde(skip)]
    pub rig: Option<RigConfig>,
    pub rig_path: PathBuf,
    pub data: PathBuf,
    pub out: PathBuf,
    pub kind: DecoderKind,
    pub width: usize,
    /// The U-Net's levels ([`crate::decoder::Architecture::levels`]).
    #[serde(default = "crate::decoder::arch::paper_levels")]
    pub levels: Vec<usize>,
    pub disc_width: usize,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    /// Learning rate of the learned RF layer's centres and sizes (pixels; Adam moves
    /// each by about this much per step).
    pub rf_lr: f64,
    pub beta1: f64,
    pub losses: LossWeights,
    /// torchvision's VGG19 state dict (`vgg19-dcbb9e9d.pth`) for the perceptual
    /// loss; `None` trains without it.
    #[serde(default)]
    pub vgg_weights: Option<PathBuf>,
    /// Side in pixels images are resized to before VGG19 (224 in the paper).
    #[serde(default = "default_vgg_size")]
    pub vgg_size: usize,
    pub pool_size: usize,
    /// Save a checkpoint every this many epochs (0: only at the end).
    pub checkpoint_every: usize,
    pub resume: bool,
    pub seed: u64,
    /// Use at most this many training trials (quick runs, tests).
    pub max_trials: Option<usize>,
    pub progress: bool,
    /// Which engine runs the steps.
    #[serde(default)]
    pub engine: EngineChoice,
    /// A linear pathway beside the input layer (fitted in closed form, then frozen).
    #[serde(default)]
    pub linear_pathway: Option<LinearPathwayConfig>,
    /// Factor on the input layer's maps; `None`: chosen so the maps have unit variance
    /// over (up to 256 of) the training trials.
    #[serde(default)]
    pub input_scale: Option<f32>,
    /// The learning rate falls linearly to zero over this many last epochs (0: constant).
    #[serde(default)]
    pub lr_decay_epochs: usize,
    /// Adam's β1 for the learned RF layer (`None`: `beta1`).
    #[serde(default)]
    pub rf_beta1: Option<f64>,
    /// Where the learned RF layer starts.
    #[serde(default)]
    pub rf_start: RfStart,
    /// Start the U-Net (and a linear pathway) from this trained model's weights.
    #[serde(default)]
    pub init_unet: Option<PathBuf>,
    /// Keep the U-Net's weights fixed (only the input layer learns).
    #[serde(default)]
    pub freeze_unet: bool,
    /// End-to-end: one U-Net input channel per electrode instead of per array.
    #[serde(default)]
    pub channel_per_electrode: bool,
    /// Weight of the learned RF layer's encoding loss ([`rf_encoding`]; 0: off).
    #[serde(default)]
    pub rf_encoding_weight: f64,
    /// Hold out the images of the last this many training trials (every trial showing one
    /// of them) as a validation set: not trained on, its pixel L1 logged every epoch.
    #[serde(default)]
    pub validation: usize,
    /// Save the model of the epoch with the lowest validation pixel L1 instead of the
    /// last one (needs `validation`).
    #[serde(default)]
    pub keep_best: bool,
    /// Leave out electrodes whose SNR (the dataset's `electrodes.csv`, TVSD imports) is
    /// below this: their inputs are 0, offline and online (`normalization.json` lists them).
    #[serde(default)]
    pub min_snr: Option<f64>,
    /// Train on these areas' electrodes only (the paper's area-restricted models, Fig. 12):
    /// the others are left out like low-SNR ones (inputs 0, listed in
    /// `normalization.json`). Empty: every area.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub areas: Vec<crate::units::Area>,
}

/// Where the learned RF layer's centres start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RfStart {
    /// Each electrode at its RF-table centre.
    #[default]
    Table,
    /// Each electrode at its array's mean RF-table centre and size: what a lab that knows
    /// where its arrays sit, but has not mapped single electrodes, can give.
    Centroids,
}

fn default_vgg_size() -> usize {
    224
}

/// One epoch's mean losses.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochLog {
    pub epoch: usize,
    /// Discriminator BCE; `None` when the adversarial term is off (no discriminator runs).
    pub d: Option<f64>,
    /// The generator's adversarial BCE; `None` when the term is off.
    pub g_adversarial: Option<f64>,
    pub g_pixel_l1: f64,
    /// Mean VGG19 feature L1 (with the perceptual loss).
    #[serde(default)]
    pub g_vgg: Option<f64>,
    /// Mean encoding loss of the learned RF layer (when on).
    #[serde(default)]
    pub rf_encoding: Option<f64>,
    /// Pixel L1 of the first 64 test-split trials (single trials, running BatchNorm
    /// statistics), if there is a test split.
    pub test_pixel_l1: Option<f64>,
    /// Pixel L1 of the validation trials (with `TrainOptions::validation`).
    #[serde(default)]
    pub validation_pixel_l1: Option<f64>,
    pub seconds: f64,
    pub samples_per_s: f64,
}

/// What a training run did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainSummary {
    pub epochs: Vec<EpochLog>,
    pub train_trials: usize,
    #[serde(default)]
    pub validation_trials: usize,
    pub test_trials: usize,
    pub parameters: usize,
    pub out: PathBuf,
    /// The epoch whose model was saved (the last, or with `keep_best` the one with the
    /// lowest validation L1).
    #[serde(default)]
    pub saved_epoch: usize,
}

/// Training state saved in `checkpoint/state.json`.
#[derive(Serialize, Deserialize)]
struct CheckpointState {
    next_epoch: usize,
    epochs: Vec<EpochLog>,
    config: DecoderConfig,
    /// Absent in checkpoints written before it was recorded.
    #[serde(default)]
    objective: Option<Objective>,
    /// "host" (the CPU engine) or "burn"; absent means "burn" (written before the CPU engine).
    #[serde(default)]
    engine: Option<String>,
    /// The CPU engine's Adam step counts.
    #[serde(default)]
    host_optim: Option<HostOptimSteps>,
}

/// What the generator minimises: a resumed run must keep it, or its loss curve
/// would join two different objectives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Objective {
    losses: LossWeights,
    /// The VGG19 input side, when the perceptual loss is on.
    vgg_size: Option<usize>,
}

/// The dataset side of a run: which trials, their inputs and images.
struct TrainingData<'a> {
    ds: Dataset,
    rig: &'a RigConfig,
    config: DecoderConfig,
    fixed: Option<FixedRfMaps>,
    set: crate::config::WindowSetKind,
    /// Statistics over all the dataset's presentations: saved with the model, where the
    /// daemon starts from them.
    stats: NormStats,
    /// Each session's own statistics (one per session), and each trial's session.
    session_stats: Vec<NormStats>,
    session_of: Vec<usize>,
    train_trials: Vec<usize>,
    validation_trials: Vec<usize>,
    test_trials: Vec<usize>,
    pathway: Option<Pathway>,
}

/// The linear pathway's fit, and its images of the training trials.
struct Pathway {
    /// On every training trial: what the saved model carries.
    fit: LinearDecoder,
    host: linear::HostLinearPathway,
    /// Cross-fitted coarse images of the training trials `[row][3·side²]` (each from a
    /// fit on the other folds), so the U-Net learns on the pathway's out-of-sample
    /// quality: on its own training trials the fit is far better than on new ones.
    cross_fitted: Vec<f32>,
    /// Row of `cross_fitted` of each training trial.
    row_of: std::collections::HashMap<usize, usize>,
}

/// Replaces each electrode's RF by its array's mean RF (centre and size), over the
/// electrodes that have one.
fn array_centroids(config: &mut DecoderConfig) {
    let means = crate::decoder::input::array_mean_rfs(config);
    for e in &mut config.electrodes {
        e.rf_px = means[e.array].or(e.rf_px);
    }
}

/// Electrodes (rig order) whose SNR in the dataset's `electrodes.csv` is below `min`
/// (or not a number); every electrode's quality is reported per area on stderr.
fn low_snr_electrodes(ds: &Dataset, rig: &RigConfig, min: f64) -> anyhow::Result<Vec<usize>> {
    let quality = ds.electrode_quality()?.with_context(|| {
        format!(
            "--min-snr needs per-electrode SNR: {} has no electrodes.csv (monkeysee import-tvsd writes one when given --norm-mua THINGS_normMUA.mat)",
            ds.dir.display()
        )
    })?;
    let dropped: Vec<usize> = rig
        .electrodes
        .iter()
        .enumerate()
        // A NaN SNR (no fit) is below every threshold.
        .filter(|(_, el)| {
            let snr = quality[el.channel].snr as f64;
            snr.is_nan() || snr < min
        })
        .map(|(e, _)| e)
        .collect();
    if dropped.len() == rig.electrodes.len() {
        bail!(
            "--min-snr {min} leaves no electrode (the highest SNR of the rig's electrodes is {:.2})",
            rig.electrodes
                .iter()
                .map(|el| quality[el.channel].snr)
                .fold(f32::NEG_INFINITY, f32::max)
        );
    }
    let per_area: Vec<String> = crate::units::Area::ALL
        .iter()
        .map(|&a| {
            let total = rig.electrodes.iter().filter(|el| el.area == a).count();
            let gone = dropped
                .iter()
                .filter(|&&e| rig.electrodes[e].area == a)
                .count();
            format!("{a} {}/{total}", total - gone)
        })
        .collect();
    eprintln!(
        "monkeysee train: --min-snr {min}: keeping {} of {} electrodes ({})",
        rig.electrodes.len() - dropped.len(),
        rig.electrodes.len(),
        per_area.join(", ")
    );
    Ok(dropped)
}

/// `dropped` and every electrode outside `areas` (rig order, sorted); an error when none
/// is left.
fn outside_areas(
    rig: &RigConfig,
    areas: &[crate::units::Area],
    mut dropped: Vec<usize>,
) -> anyhow::Result<Vec<usize>> {
    dropped.extend((0..rig.electrodes.len()).filter(|&e| !areas.contains(&rig.electrodes[e].area)));
    dropped.sort_unstable();
    dropped.dedup();
    let kept = rig.electrodes.len() - dropped.len();
    let names: Vec<&str> = areas.iter().map(|a| a.name()).collect();
    if kept == 0 {
        bail!(
            "--areas {} leaves no electrode of rig {} to train on",
            names.join(","),
            rig.path.display()
        );
    }
    eprintln!(
        "monkeysee train: --areas {}: training on {kept} of {} electrodes",
        names.join(","),
        rig.electrodes.len()
    );
    Ok(dropped)
}

/// Rows `rows` of the row-major matrix `m` with rows of length `w`.
fn pick(m: &[f32], rows: &[usize], w: usize) -> Vec<f32> {
    rows.iter()
        .flat_map(|&r| m[r * w..(r + 1) * w].iter().copied())
        .collect()
}

/// Folds of the pathway's cross-fitting.
const PATHWAY_FOLDS: usize = 5;

impl<'a> TrainingData<'a> {
    fn open(opts: &TrainOptions, rig: &'a RigConfig) -> anyhow::Result<Self> {
        let ds = Dataset::open(&opts.data)?;
        ds.check_rig(rig)?;
        let mut config = decoder_config(rig, opts.kind, opts.width);
        config.validate()?;
        let fixed = match opts.kind {
            DecoderKind::Spatial | DecoderKind::Spatiotemporal => Some(FixedRfMaps::build(&config).with_context(|| {
                format!("the {} decoder places electrodes by the rig's RF table ([receptive_fields] table)", opts.kind)
            })?),
            _ => None,
        };
        let set = window_set(opts.kind);
        if ds.meta.time_averaged && set != crate::config::WindowSetKind::Tw15 {
            bail!(
                "{} is time-averaged (one value per electrode, e.g. TVSD's normMUA): it trains the TW-15 decoders (spatial, end-to-end, baseline), not {}",
                ds.dir.display(),
                opts.kind
            );
        }
        let min_snr = opts.min_snr.map(|min| low_snr_electrodes(&ds, rig, min));
        let mut dropped = min_snr.transpose()?.unwrap_or_default();
        if !opts.areas.is_empty() {
            dropped = outside_areas(rig, &opts.areas, dropped)?;
        }
        // One estimator (crate::norm): per electrode and window over the presentations
        // of each session, every presentation (as the daemon counts them live). The
        // model keeps the average over sessions, the daemon's start in a new one. The
        // same pass finds the presentations with NaN/Inf samples in a window: the
        // daemon skips them, and so does training.
        let sessions = ds.sessions();
        let mut session_of = vec![0; ds.n_trials()];
        let mut own: Vec<Option<NormStats>> = Vec::with_capacity(sessions.len());
        let mut broken = Vec::new();
        for (k, trials) in sessions.iter().enumerate() {
            trials.iter().for_each(|&t| session_of[t] = k);
            let (s, skipped) = ds.norm_stats_and_skipped(trials, rig, set);
            broken.extend(skipped);
            own.push((s.presentations >= 2).then_some(s));
        }
        broken.sort_unstable();
        if !broken.is_empty() {
            eprintln!(
                "monkeysee train: leaving out {} trials with NaN/Inf samples in a window (e.g. trial {})",
                broken.len(),
                broken[0]
            );
        }
        let measured: Vec<NormStats> = own.iter().flatten().cloned().collect();
        if measured.is_empty() {
            bail!(
                "{} has no session with two presentations to take normalisation statistics over",
                ds.dir.display()
            );
        }
        let mut stats = NormStats::average(&measured);
        stats.dropped = dropped.clone();
        if measured.len() < sessions.len() {
            eprintln!(
                "monkeysee train: {} of {} sessions have fewer than two usable presentations; they are normalised with the average of the others",
                sessions.len() - measured.len(),
                sessions.len()
            );
        }
        let session_stats: Vec<NormStats> = own
            .into_iter()
            .map(|s| {
                let mut s = s.unwrap_or_else(|| stats.clone());
                s.dropped = dropped.clone();
                s
            })
            .collect();

        let usable = |t: &usize| broken.binary_search(t).is_err();
        let mut train_trials: Vec<usize> = ds.split(false).into_iter().filter(usable).collect();
        if let Some(m) = opts.max_trials {
            train_trials.truncate(m);
        }
        let validation_trials = hold_out(&ds, &mut train_trials, opts.validation);
        if train_trials.len() < opts.batch {
            bail!(
                "the dataset has {} training trials{}, fewer than one batch of {}",
                train_trials.len(),
                if validation_trials.is_empty() {
                    String::new()
                } else {
                    format!(" besides the {} validation trials", validation_trials.len())
                },
                opts.batch
            );
        }
        let test_trials: Vec<usize> = ds.split(true).into_iter().filter(usable).take(64).collect();
        config.levels = opts.levels.clone();
        config.linear_pathway = opts.linear_pathway.clone();
        config.channel_per_electrode = opts.channel_per_electrode;
        if opts.rf_start == RfStart::Centroids {
            array_centroids(&mut config);
        }
        config.validate()?;
        let mut data = Self {
            set,
            ds,
            rig,
            config,
            fixed,
            stats,
            session_stats,
            session_of,
            train_trials,
            validation_trials,
            test_trials,
            pathway: None,
        };
        if let Some(p) = &opts.linear_pathway {
            data.pathway = Some(data.fit_pathway(p.side, opts.progress)?);
        }
        Ok(data)
    }

    /// Fits the linear pathway on the training trials (λ on their last fifth), and
    /// cross-fits it over five folds for the training inputs.
    fn fit_pathway(&self, side: usize, progress: bool) -> anyhow::Result<Pathway> {
        let cfg = &self.config;
        let (n, e, size) = (
            self.train_trials.len(),
            cfg.electrodes.len(),
            cfg.image_size,
        );
        let q = 3 * side * side;
        if progress {
            eprintln!(
                "monkeysee train: fitting the linear pathway (ridge, {e} electrodes → 3×{side}×{side}) on {n} trials, cross-fitted over {PATHWAY_FOLDS} folds"
            );
        }
        let x = linear::electrode_means(
            &self.features(&self.train_trials),
            n,
            cfg.windows_per_electrode,
            e,
        );
        let y: Vec<f32> = (self.train_trials.iter())
            .flat_map(|&t| {
                linear::downsample(&self.ds.image_chw(self.ds.trial_image[t]), size, side)
            })
            .collect();
        let (fit, _) = linear::fit_validated(&x, &y, (n, e, q), n / 5, Some((0.0, 1.0)));
        let mut cross_fitted = vec![0.0f32; n * q];
        for fold in 0..PATHWAY_FOLDS.min(n) {
            let (rest, held): (Vec<usize>, Vec<usize>) =
                (0..n).partition(|i| i % PATHWAY_FOLDS != fold);
            let part = linear::fit_relative(
                &pick(&x, &rest, e),
                &pick(&y, &rest, q),
                (rest.len(), e, q),
                fit.relative_lambda,
            );
            let pred = part.predict(&pick(&x, &held, e), held.len());
            for (&r, p) in held.iter().zip(pred.chunks_exact(q)) {
                cross_fitted[r * q..(r + 1) * q].copy_from_slice(p);
            }
        }
        let layer = LinearPathwayLayer::<burn::backend::Flex>::from_fit(&fit, &Default::default());
        Ok(Pathway {
            host: linear::HostLinearPathway::new(&layer, cfg)?,
            fit,
            cross_fitted,
            row_of: self
                .train_trials
                .iter()
                .enumerate()
                .map(|(r, &t)| (t, r))
                .collect(),
        })
    }

    /// Features of `trials`, `[trial][window][electrode]`.
    fn features(&self, trials: &[usize]) -> Vec<f32> {
        let nf = self.config.n_features();
        let mut all = Vec::with_capacity(trials.len() * nf);
        let mut f = Vec::new();
        for &t in trials {
            let stats = &self.session_stats[self.session_of[t]];
            self.ds.features(t, self.rig, self.set, stats, &mut f);
            all.extend_from_slice(&f);
        }
        all
    }

    /// `trials` in evaluation batches of [`EVAL_BATCH`] (small enough that an evaluation
    /// pass never holds the whole test split's activations at once).
    fn batches(&self, trials: &[usize]) -> Vec<Batch> {
        trials.chunks(EVAL_BATCH).map(|t| self.batch(t)).collect()
    }

    /// The batch of `trials`: the U-Net input when the maps are fixed (scaled maps, then
    /// the linear pathway's image: cross-fitted for training trials), else the features
    /// and the pathway's image for the learned layer's side.
    fn batch(&self, trials: &[usize]) -> Batch {
        let features = self.features(trials);
        let cfg = &self.config;
        let s = cfg.image_size;
        let plane = s * s;
        let n = trials.len();
        let pathway = self.pathway.as_ref().map(|p| {
            let mut images = vec![0.0f32; n * 3 * plane];
            let q = p.cross_fitted.len() / self.train_trials.len().max(1);
            let known: Option<Vec<usize>> =
                trials.iter().map(|t| p.row_of.get(t).copied()).collect();
            match known {
                Some(rows) => p
                    .host
                    .upsample(&pick(&p.cross_fitted, &rows, q), &mut images),
                None => images = p.host.images(&features, n),
            }
            images
        });
        let fixed_input = self.fixed.as_ref().map(|maps| {
            let channels = cfg.in_channels();
            let len = maps.image_len();
            let mut img = vec![0.0f32; n * channels * plane];
            for (i, (f, x)) in features
                .chunks_exact(cfg.n_features())
                .zip(img.chunks_exact_mut(channels * plane))
                .enumerate()
            {
                maps.fill(f, &mut x[..len]);
                if cfg.input_scale != 1.0 {
                    x[..len].iter_mut().for_each(|v| *v *= cfg.input_scale);
                }
                if let Some(p) = &pathway {
                    x[len..].copy_from_slice(&p[i * 3 * plane..(i + 1) * 3 * plane]);
                }
            }
            img
        });
        let mut images = Vec::with_capacity(n * 3 * plane);
        for &t in trials {
            images.extend(self.ds.image_chw(self.ds.trial_image[t]));
        }
        Batch {
            n,
            pathway: if fixed_input.is_some() { None } else { pathway },
            fixed_input,
            features,
            images,
            in_channels: cfg.in_channels(),
            map_channels: cfg.map_channels(),
            input_scale: cfg.input_scale,
            size: s,
        }
    }
}

/// Trains a decoder and writes it to `opts.out`. Generic over the autodiff backend
/// (`Autodiff<Flex>` on the CPU, `Autodiff<Cuda>` with `--features cuda`); on the CPU
/// the step runs on the CPU engine ([`host`]) unless `opts.engine` says otherwise.
pub fn train<B: AutodiffBackend>(
    opts: &TrainOptions,
    device: &B::Device,
) -> anyhow::Result<TrainSummary> {
    let rig = opts.rig.as_ref().context("train needs a loaded rig")?;
    check_options(opts)?;
    let mut data = TrainingData::open(opts, rig)?;
    let model = build_model::<B>(opts, &mut data, device)?;
    let config = data.config.clone();
    config.validate()?;
    let perceptual = perceptual_loss::<B>(opts, &config, device)?;
    let objective = Objective {
        losses: opts.losses,
        vgg_size: perceptual.as_ref().map(|_| opts.vgg_size),
    };
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let ckpt = opts.out.join("checkpoint");
    let mut init_rng = rand::rngs::StdRng::seed_from_u64(opts.seed ^ 0xD15C);
    let parameters = model.num_params();
    let disc: Discriminator<B> =
        Discriminator::new(config.in_channels(), opts.disc_width, &mut init_rng, device);
    let optimisers = OptimiserSettings {
        beta1: opts.beta1,
        rf_beta1: opts.rf_beta1.unwrap_or(opts.beta1),
        freeze_unet: opts.freeze_unet,
    };
    let mut engine = Engine::new(opts.engine, model, disc, opts.pool_size, optimisers);
    let mut history: Vec<EpochLog> = Vec::new();
    let mut first_epoch = 0;
    if opts.resume {
        let state = resume_state(&ckpt, &objective, &config, engine.name())?;
        engine.load_checkpoint(&ckpt, state.host_optim, device)?;
        first_epoch = state.next_epoch;
        history = state.epochs;
    }
    let epochs = EpochRunner::new(opts, &data, perceptual.as_ref(), device);
    // With --keep-best the folder holds the best model so far (a resumed run goes on from
    // the best in its history).
    let mut best = history
        .iter()
        .filter_map(|e| e.validation_pixel_l1.map(|v| (v, e.epoch)))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    let bar = crate::telemetry::progress_bar(
        opts.progress,
        (opts.epochs.saturating_sub(first_epoch) * epochs.steps_per_epoch) as u64,
        "steps",
    );
    for epoch in first_epoch..opts.epochs {
        let log = epochs.run(&mut engine, epoch, &bar)?;
        bar.set_message(progress_message(&log));
        if let (true, Some(v)) = (opts.keep_best, log.validation_pixel_l1) {
            if best.is_none_or(|(b, _)| v < b) {
                best = Some((v, log.epoch));
                save_model(opts, &config, &mut engine, &data, device)?;
            }
        }
        history.push(log);
        let last = epoch + 1 == opts.epochs;
        if last || (opts.checkpoint_every > 0 && (epoch + 1) % opts.checkpoint_every == 0) {
            let host_optim = engine.save_checkpoint(&ckpt)?;
            write_json(
                &ckpt.join("state.json"),
                &CheckpointState {
                    next_epoch: epoch + 1,
                    epochs: history.clone(),
                    config: config.clone(),
                    objective: Some(objective.clone()),
                    engine: Some(engine.name().to_string()),
                    host_optim,
                },
            )?;
        }
    }
    bar.finish();

    // The model the daemon loads (with --keep-best, already saved at its epoch).
    let saved_epoch = match best {
        Some((_, epoch)) if opts.keep_best => epoch,
        _ => {
            save_model(opts, &config, &mut engine, &data, device)?;
            opts.epochs
        }
    };
    let summary = TrainSummary {
        epochs: history,
        train_trials: data.train_trials.len(),
        validation_trials: data.validation_trials.len(),
        test_trials: data.test_trials.len(),
        parameters,
        out: opts.out.clone(),
        saved_epoch,
    };
    write_reports(opts, &summary)?;
    Ok(summary)
}

/// The options `train` refuses before reading the dataset.
fn check_options(opts: &TrainOptions) -> anyhow::Result<()> {
    if opts.batch < 2 {
        bail!("--batch must be at least 2 (BatchNorm needs batch statistics)");
    }
    if opts.epochs == 0 || opts.width == 0 || opts.disc_width == 0 {
        bail!("--epochs, --width and --disc-width must be at least 1");
    }
    if opts.keep_best && opts.validation == 0 {
        bail!("--keep-best picks the epoch by its validation loss: give --validation N too");
    }
    Ok(())
}

/// The decoder to train: fresh from the seed, with the linear pathway's fit and the
/// U-Net of `--init-unet` when given; sets the config's input scale (given, or measured
/// on the model).
fn build_model<B: AutodiffBackend>(
    opts: &TrainOptions,
    data: &mut TrainingData<'_>,
    device: &B::Device,
) -> anyhow::Result<DecoderModel<B>> {
    let mut model: DecoderModel<B> = DecoderModel::new(&data.config, opts.seed, device)?;
    if let Some(p) = &data.pathway {
        model.linear = Some(LinearPathwayLayer::from_fit(&p.fit, device));
    }
    if let Some(dir) = &opts.init_unet {
        init_unet_from(&mut model, &data.config, dir, device)?;
    }
    data.config.input_scale =
        (opts.input_scale).map_or_else(|| auto_input_scale(data, &model, device), Ok)?;
    Ok(model)
}

/// The VGG19 perceptual loss, when `--vgg-weights` names the weights.
fn perceptual_loss<B: AutodiffBackend>(
    opts: &TrainOptions,
    config: &DecoderConfig,
    device: &B::Device,
) -> anyhow::Result<Option<PerceptualLoss<B>>> {
    let Some(path) = &opts.vgg_weights else {
        return Ok(None);
    };
    let loss = PerceptualLoss::new(
        Vgg19::<B>::load(path, device)?,
        config.image_size,
        opts.vgg_size,
        device,
    )
    .context("--vgg-size")?;
    Ok(Some(loss))
}

/// Trials per batch of the test and validation passes.
const EVAL_BATCH: usize = 64;

/// One training epoch's steps and its evaluation on the test and validation trials
/// (their batches cut once, at the start).
struct EpochRunner<'a, B: AutodiffBackend> {
    opts: &'a TrainOptions,
    data: &'a TrainingData<'a>,
    perceptual: Option<&'a PerceptualLoss<B>>,
    device: &'a B::Device,
    /// The test and validation trials in batches of [`EVAL_BATCH`].
    test_batches: Vec<Batch>,
    validation_batches: Vec<Batch>,
    steps_per_epoch: usize,
}

/// Sums of a step's losses over an epoch.
#[derive(Default)]
struct LossSums {
    d: f64,
    adversarial: f64,
    pixel: f64,
    vgg: f64,
    rf_encoding: Option<f64>,
}

impl<'a, B: AutodiffBackend> EpochRunner<'a, B> {
    fn new(
        opts: &'a TrainOptions,
        data: &'a TrainingData<'a>,
        perceptual: Option<&'a PerceptualLoss<B>>,
        device: &'a B::Device,
    ) -> Self {
        EpochRunner {
            opts,
            data,
            perceptual,
            device,
            test_batches: data.batches(&data.test_trials),
            validation_batches: data.batches(&data.validation_trials),
            steps_per_epoch: data.train_trials.len() / opts.batch,
        }
    }

    /// Trains epoch `epoch` (0-based) and returns its log.
    fn run(
        &self,
        engine: &mut Engine<B>,
        epoch: usize,
        bar: &indicatif::ProgressBar,
    ) -> anyhow::Result<EpochLog> {
        let opts = self.opts;
        let started = Instant::now();
        let sums = self.steps(engine, epoch, bar)?;
        let seconds = started.elapsed().as_secs_f64();
        let k = self.steps_per_epoch.max(1) as f64;
        let (test_pixel_l1, validation_pixel_l1) = self.evaluate(engine)?;
        let adversarial = opts.losses.adversarial != 0.0;
        Ok(EpochLog {
            epoch: epoch + 1,
            d: adversarial.then_some(sums.d / k),
            g_adversarial: adversarial.then_some(sums.adversarial / k),
            g_pixel_l1: sums.pixel / k,
            g_vgg: self.perceptual.is_some().then_some(sums.vgg / k),
            rf_encoding: sums.rf_encoding.map(|s| s / k),
            test_pixel_l1,
            validation_pixel_l1,
            seconds,
            samples_per_s: (self.steps_per_epoch * opts.batch) as f64 / seconds.max(1e-9),
        })
    }

    /// The epoch's steps over the shuffled training trials; the next batches are cut on
    /// a thread of their own while a step runs.
    fn steps(
        &self,
        engine: &mut Engine<B>,
        epoch: usize,
        bar: &indicatif::ProgressBar,
    ) -> anyhow::Result<LossSums> {
        let opts = self.opts;
        // The last `lr_decay_epochs` epochs step down linearly toward zero.
        let decay = opts.lr_decay_epochs.min(opts.epochs);
        let factor = if epoch + decay >= opts.epochs && decay > 0 {
            (opts.epochs - epoch) as f64 / (decay + 1) as f64
        } else {
            1.0
        };
        let settings = StepSettings {
            lr: opts.lr * factor,
            rf_lr: opts.rf_lr * factor,
            losses: opts.losses,
            rf_encoding: opts.rf_encoding_weight,
        };
        let mut rng =
            rand::rngs::StdRng::seed_from_u64(opts.seed.wrapping_add(epoch as u64 * 7919));
        let mut order = self.data.train_trials.clone();
        order.shuffle(&mut rng);
        let mut sums = LossSums::default();
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let (tx, rx) = crossbeam_channel::bounded::<Batch>(2);
            let data = self.data;
            let order = &order;
            std::thread::Builder::new()
                .name("batches".into())
                .spawn_scoped(scope, move || {
                    for trials in order.chunks_exact(opts.batch) {
                        if tx.send(data.batch(trials)).is_err() {
                            break; // the step failed; its error is reported below
                        }
                    }
                })
                .context("starting the batch thread")?;
            for batch in rx {
                let l = engine.step(&batch, settings, self.perceptual, &mut rng, self.device)?;
                sums.d += l.d.unwrap_or(0.0);
                sums.adversarial += l.g_adversarial.unwrap_or(0.0);
                sums.pixel += l.g_pixel_l1;
                sums.vgg += l.g_extra.unwrap_or(0.0);
                if let Some(e) = l.rf_encoding {
                    *sums.rf_encoding.get_or_insert(0.0) += e;
                }
                bar.inc(1);
            }
            Ok(())
        })?;
        Ok(sums)
    }

    /// Mean pixel L1 on the test trials and on the validation trials (`None` for a split
    /// without trials).
    fn evaluate(&self, engine: &mut Engine<B>) -> anyhow::Result<(Option<f64>, Option<f64>)> {
        let test = engine.mean_l1(&self.test_batches, self.device)?;
        let validation = engine.mean_l1(&self.validation_batches, self.device)?;
        Ok((test, validation))
    }
}

/// The progress bar's line for an epoch: its losses.
fn progress_message(log: &EpochLog) -> String {
    format!(
        "epoch {}{} L1 {:.4}{}{}{}",
        log.epoch,
        match (log.d, log.g_adversarial) {
            (Some(d), Some(g)) => format!(" D {d:.3} G adv {g:.3}"),
            _ => String::new(),
        },
        log.g_pixel_l1,
        log.g_vgg.map_or(String::new(), |v| format!(" VGG {v:.4}")),
        log.validation_pixel_l1
            .map_or(String::new(), |t| format!(" validation L1 {t:.4}")),
        log.test_pixel_l1
            .map_or(String::new(), |t| format!(" test L1 {t:.4}"))
    )
}

/// Writes the engine's current model and the normalisation into `opts.out`.
fn save_model<B: AutodiffBackend>(
    opts: &TrainOptions,
    config: &DecoderConfig,
    engine: &mut Engine<B>,
    data: &TrainingData<'_>,
    device: &B::Device,
) -> anyhow::Result<()> {
    let decoder = Decoder::from_model(config.clone(), engine.model().valid(), device)?;
    decoder.save(&opts.out)?;
    write_json(&opts.out.join("normalization.json"), &data.stats)
}

/// Takes the validation trials out of `train`: every trial showing the image of one of its
/// last `n` trials (so no validation image is also trained on).
fn hold_out(ds: &Dataset, train: &mut Vec<usize>, n: usize) -> Vec<usize> {
    let n = n.min(train.len());
    let images: std::collections::HashSet<usize> = train[train.len() - n..]
        .iter()
        .map(|&t| ds.trial_image[t])
        .collect();
    let (validation, kept): (Vec<usize>, Vec<usize>) = train
        .iter()
        .partition(|&&t| images.contains(&ds.trial_image[t]));
    *train = kept;
    validation
}

/// Copies the U-Net (and the linear pathway, if both have one) of the model in `dir`, which
/// must have the same U-Net shape.
fn init_unet_from<B: AutodiffBackend>(
    model: &mut DecoderModel<B>,
    config: &DecoderConfig,
    dir: &Path,
    device: &B::Device,
) -> anyhow::Result<()> {
    let path = dir.join(crate::decoder::model::CONFIG_FILE);
    let theirs: DecoderConfig = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("--init-unet: reading {}", path.display()))?,
    )
    .with_context(|| format!("--init-unet: {} is not a decoder config", path.display()))?;
    let (ours, their_arch) = (config.architecture(), theirs.architecture());
    if ours != their_arch {
        bail!(
            "--init-unet: {} has a U-Net of {} input channels at width {} with levels {:?}; this run needs {} at width {} with levels {:?}",
            dir.display(),
            their_arch.in_channels,
            their_arch.width,
            their_arch.levels,
            ours.in_channels,
            ours.width,
            ours.levels
        );
    }
    let recorder = burn::record::NamedMpkFileRecorder::<burn::record::FullPrecisionSettings>::new();
    let loaded = DecoderModel::<B>::new(&theirs, 0, device)?
        .load_file(
            dir.join(crate::decoder::model::WEIGHTS_FILE),
            &recorder,
            device,
        )
        .with_context(|| format!("--init-unet: loading the weights in {}", dir.display()))?;
    model.unet = loaded.unet;
    if model.linear.is_some() && loaded.linear.is_some() {
        model.linear = loaded.linear;
    }
    Ok(())
}

/// The factor that gives the input layer's maps unit standard deviation over (up to 256
/// of) the training trials, all pixels and channels together (a fixed map is ~1 % nonzero,
/// so its SD is far below its values' ~1; summed Gaussians are larger): the pix2pix
/// network was designed for inputs of unit scale.
fn auto_input_scale<B: AutodiffBackend>(
    data: &TrainingData<'_>,
    model: &DecoderModel<B>,
    device: &B::Device,
) -> anyhow::Result<f32> {
    let trials = &data.train_trials[..data.train_trials.len().min(256)];
    let (mut sum, mut sq, mut n) = (0.0f64, 0.0f64, 0usize);
    let mut add = |v: &[f32]| {
        for &x in v {
            sum += x as f64;
            sq += (x as f64).powi(2);
        }
        n += v.len();
    };
    for chunk in trials.chunks(32) {
        let features = data.features(chunk);
        match &data.fixed {
            Some(maps) => {
                let mut img = vec![0.0f32; maps.image_len()];
                for f in features.chunks_exact(data.config.n_features()) {
                    maps.fill(f, &mut img);
                    add(&img);
                }
            }
            None => {
                let r = burn::tensor::Tensor::<B, 2>::from_data(
                    burn::tensor::TensorData::new(
                        features,
                        [chunk.len(), data.config.n_features()],
                    ),
                    device,
                );
                let maps = model
                    .learned_input(r)
                    .context("a learned-input decoder without its layer")?;
                let v = host_values(maps.detach()).context("reading the input maps")?;
                add(&v);
            }
        }
    }
    let mean = sum / n.max(1) as f64;
    let sd = (sq / n.max(1) as f64 - mean * mean).max(0.0).sqrt();
    if sd.is_nan() || sd <= 1e-12 {
        bail!("the input maps are constant over the training trials; check the dataset and the RF table");
    }
    Ok((1.0 / sd) as f32)
}

/// Reads `checkpoint/state.json` and refuses a checkpoint of another run.
fn resume_state(
    ckpt: &Path,
    objective: &Objective,
    config: &DecoderConfig,
    engine: &str,
) -> anyhow::Result<CheckpointState> {
    let state: CheckpointState = serde_json::from_str(
        &std::fs::read_to_string(ckpt.join("state.json"))
            .with_context(|| format!("--resume: no checkpoint in {}", ckpt.display()))?,
    )
    .context("reading checkpoint/state.json")?;
    if state.objective.as_ref().is_some_and(|o| o != objective) {
        bail!(
            "--resume: the checkpoint in {} was trained with other loss weights or VGG19 settings ({:?}, now {:?}); pass the same options or start a new --out",
            ckpt.display(),
            state.objective.as_ref().expect("checked"),
            objective
        );
    }
    if &state.config != config {
        bail!("--resume: the checkpoint in {} was trained with another decoder config (kind, width or rig); start a new --out or drop --resume", ckpt.display());
    }
    let saved = state.engine.as_deref().unwrap_or("burn");
    if saved != engine {
        bail!(
            "--resume: the checkpoint in {} was written by the {saved} engine, this run uses the {engine} engine; pass --engine {saved}",
            ckpt.display()
        );
    }
    Ok(state)
}

/// `training.json`, `losses.csv` and `loss.png`.
fn write_reports(opts: &TrainOptions, summary: &TrainSummary) -> anyhow::Result<()> {
    write_json(
        &opts.out.join("training.json"),
        &serde_json::json!({ "options": opts, "summary": summary }),
    )?;
    let mut csv = String::from(
        "epoch,d,g_adversarial,g_pixel_l1,g_vgg,test_pixel_l1,seconds,samples_per_s,rf_encoding,validation_pixel_l1\n",
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    for e in &summary.epochs {
        csv.push_str(&format!(
            "{},{},{},{:.6},{},{},{:.2},{:.2},{},{}\n",
            e.epoch,
            opt(e.d),
            opt(e.g_adversarial),
            e.g_pixel_l1,
            opt(e.g_vgg),
            opt(e.test_pixel_l1),
            e.seconds,
            e.samples_per_s,
            opt(e.rf_encoding),
            opt(e.validation_pixel_l1),
        ));
    }
    std::fs::write(opts.out.join("losses.csv"), csv)?;
    use crate::plot::{Panel, Series};
    let series = |name, f: &dyn Fn(&EpochLog) -> Option<f64>| Series {
        name,
        points: (summary.epochs.iter())
            .filter_map(|e| f(e).map(|v| (e.epoch as f64, v)))
            .collect(),
    };
    let mut panels = Vec::new();
    if summary.epochs.iter().any(|e| e.d.is_some()) {
        panels.push(Panel {
            title: "discriminator / adversarial (BCE)",
            series: vec![
                series("D", &|e| e.d),
                series("G adversarial", &|e| e.g_adversarial),
            ],
        });
    }
    panels.push(Panel {
        title: "pixel L1",
        series: vec![
            series("train", &|e| Some(e.g_pixel_l1)),
            series("validation", &|e| e.validation_pixel_l1),
            series("test", &|e| e.test_pixel_l1),
        ],
    });
    if summary.epochs.iter().any(|e| e.g_vgg.is_some()) {
        panels.push(Panel {
            title: "VGG19 feature L1",
            series: vec![series("train", &|e| e.g_vgg)],
        });
    }
    let drawn = crate::plot::loss_curves(&opts.out.join("loss.png"), &panels)?;
    if !drawn && opts.progress {
        eprintln!("monkeysee train: no font found (install fonts-dejavu-core or set MONKEYSEE_FONT), so no loss.png; the losses are in losses.csv");
    }
    Ok(())
}

pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}
