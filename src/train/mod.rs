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
//! ([`Dataset::features`]), z-scored with statistics of the training split that are
//! saved beside the model (`normalization.json`), so the daemon normalises the same way.
//!
//! Output folder: `decoder.json` + `weights.mpk` (+ `normalization.json`) — a model
//! `monkeysee run --model` loads — and `training.json` (options and per-epoch losses),
//! `losses.csv`, `loss.png`, and `checkpoint/` for `--resume`.

pub mod discriminator;
pub mod engine;
pub mod host;
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
use crate::daemon::{decoder_config, window_set};
use crate::dataset::Dataset;
use crate::decoder::{Decoder, DecoderConfig, DecoderKind, DecoderModel, FixedRfMaps};
use crate::window::NormStats;
use engine::{Batch, Engine, HostOptimSteps, StepSettings};

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
    #[serde(skip, default = "placeholder_rig")]
    pub rig: Option<RigConfig>,
    pub rig_path: PathBuf,
    pub data: PathBuf,
    pub out: PathBuf,
    pub kind: DecoderKind,
    pub width: usize,
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
}

fn placeholder_rig() -> Option<RigConfig> {
    None
}

fn default_vgg_size() -> usize {
    224
}

/// One epoch's mean losses.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochLog {
    pub epoch: usize,
    pub d: f64,
    pub g_adversarial: f64,
    pub g_pixel_l1: f64,
    /// Mean VGG19 feature L1 (with the perceptual loss).
    #[serde(default)]
    pub g_vgg: Option<f64>,
    /// Pixel L1 of the first 64 test-split trials (single trials, running BatchNorm
    /// statistics), if there is a test split.
    pub test_pixel_l1: Option<f64>,
    pub seconds: f64,
    pub samples_per_s: f64,
}

/// What a training run did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainSummary {
    pub epochs: Vec<EpochLog>,
    pub train_trials: usize,
    pub test_trials: usize,
    pub parameters: usize,
    pub out: PathBuf,
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
    stats: NormStats,
    train_trials: Vec<usize>,
    test_trials: Vec<usize>,
}

impl<'a> TrainingData<'a> {
    fn open(opts: &TrainOptions, rig: &'a RigConfig) -> anyhow::Result<Self> {
        let ds = Dataset::open(&opts.data)?;
        ds.check_rig(rig)?;
        let config = decoder_config(rig, opts.kind, opts.width);
        config.validate()?;
        let fixed = match opts.kind {
            DecoderKind::Spatial | DecoderKind::Spatiotemporal => Some(FixedRfMaps::build(&config).with_context(|| {
                format!("the {} decoder places electrodes by the rig's RF table ([receptive_fields] table)", opts.kind)
            })?),
            _ => None,
        };
        let channels: Vec<usize> = rig.electrodes.iter().map(|e| e.channel).collect();
        let mut train_trials = ds.split(false);
        if let Some(m) = opts.max_trials {
            train_trials.truncate(m);
        }
        if train_trials.len() < opts.batch {
            bail!(
                "the dataset has {} training trials, fewer than one batch of {}",
                train_trials.len(),
                opts.batch
            );
        }
        let test_trials: Vec<usize> = ds.split(true).into_iter().take(64).collect();
        let stats = ds.norm_stats(&train_trials, &channels);
        Ok(Self {
            set: window_set(opts.kind),
            ds,
            rig,
            config,
            fixed,
            stats,
            train_trials,
            test_trials,
        })
    }

    /// Features of `trials`, `[trial][window][electrode]`.
    fn features(&self, trials: &[usize]) -> Vec<f32> {
        let nf = self.config.n_features();
        let mut all = Vec::with_capacity(trials.len() * nf);
        let mut f = Vec::new();
        for &t in trials {
            self.ds.features(t, self.rig, self.set, &self.stats, &mut f);
            all.extend_from_slice(&f);
        }
        all
    }

    /// The batch of `trials`.
    fn batch(&self, trials: &[usize]) -> Batch {
        let features = self.features(trials);
        let s = self.config.image_size;
        let fixed_input = self.fixed.as_ref().map(|maps| {
            let len = maps.image_len();
            let mut img = vec![0.0f32; trials.len() * len];
            for (f, x) in features
                .chunks_exact(self.config.n_features())
                .zip(img.chunks_exact_mut(len))
            {
                maps.fill(f, x);
            }
            img
        });
        let mut images = Vec::with_capacity(trials.len() * 3 * s * s);
        for &t in trials {
            images.extend(self.ds.image_chw(self.ds.trial_image[t]));
        }
        Batch {
            n: trials.len(),
            fixed_input,
            features,
            images,
            in_channels: self.config.in_channels(),
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
    if opts.batch < 2 {
        bail!("--batch must be at least 2 (BatchNorm needs batch statistics)");
    }
    if opts.epochs == 0 || opts.width == 0 || opts.disc_width == 0 {
        bail!("--epochs, --width and --disc-width must be at least 1");
    }
    let data = TrainingData::open(opts, rig)?;
    let config = data.config.clone();
    let perceptual = match &opts.vgg_weights {
        Some(path) => Some(
            PerceptualLoss::new(
                Vgg19::<B>::load(path, device)?,
                config.image_size,
                opts.vgg_size,
                device,
            )
            .context("--vgg-size")?,
        ),
        None => None,
    };
    let objective = Objective {
        losses: opts.losses,
        vgg_size: perceptual.as_ref().map(|_| opts.vgg_size),
    };
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let ckpt = opts.out.join("checkpoint");
    let mut init_rng = rand::rngs::StdRng::seed_from_u64(opts.seed ^ 0xD15C);
    let model: DecoderModel<B> = DecoderModel::new(&config, opts.seed, device)?;
    let parameters = model.num_params();
    let disc: Discriminator<B> =
        Discriminator::new(config.in_channels(), opts.disc_width, &mut init_rng, device);
    let mut engine = Engine::new(opts.engine, model, disc, opts.pool_size, opts.beta1);
    let mut history: Vec<EpochLog> = Vec::new();
    let mut first_epoch = 0;
    if opts.resume {
        let state = resume_state(&ckpt, &objective, &config, engine.name())?;
        engine.load_checkpoint(&ckpt, state.host_optim, device)?;
        first_epoch = state.next_epoch;
        history = state.epochs;
    }
    let test_batch = data.batch(&data.test_trials);
    let steps_per_epoch = data.train_trials.len() / opts.batch;
    let bar = progress_bar(
        opts.progress,
        (opts.epochs.saturating_sub(first_epoch) * steps_per_epoch) as u64,
    );
    let settings = StepSettings {
        lr: opts.lr,
        rf_lr: opts.rf_lr,
        losses: opts.losses,
    };
    for epoch in first_epoch..opts.epochs {
        let started = Instant::now();
        let mut rng =
            rand::rngs::StdRng::seed_from_u64(opts.seed.wrapping_add(epoch as u64 * 7919));
        let mut order = data.train_trials.clone();
        order.shuffle(&mut rng);
        let (mut sum_d, mut sum_adv, mut sum_pix, mut sum_vgg) = (0.0, 0.0, 0.0, 0.0);
        // The next batches are cut on a thread of their own while a step runs.
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let (tx, rx) = crossbeam_channel::bounded::<Batch>(2);
            let data = &data;
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
                let l = engine.step(&batch, settings, perceptual.as_ref(), &mut rng, device)?;
                sum_d += l.d;
                sum_adv += l.g_adversarial;
                sum_pix += l.g_pixel_l1;
                sum_vgg += l.g_extra.unwrap_or(0.0);
                bar.inc(1);
            }
            Ok(())
        })?;
        let seconds = started.elapsed().as_secs_f64();
        let k = steps_per_epoch.max(1) as f64;
        let test_pixel_l1 = if data.test_trials.is_empty() {
            None
        } else {
            Some(engine.test_l1(&test_batch, device)?)
        };
        let log = EpochLog {
            epoch: epoch + 1,
            d: sum_d / k,
            g_adversarial: sum_adv / k,
            g_pixel_l1: sum_pix / k,
            g_vgg: perceptual.is_some().then_some(sum_vgg / k),
            test_pixel_l1,
            seconds,
            samples_per_s: (steps_per_epoch * opts.batch) as f64 / seconds.max(1e-9),
        };
        bar.set_message(format!(
            "epoch {} D {:.3} G adv {:.3} L1 {:.4}{}{}",
            log.epoch,
            log.d,
            log.g_adversarial,
            log.g_pixel_l1,
            log.g_vgg.map_or(String::new(), |v| format!(" VGG {v:.4}")),
            log.test_pixel_l1
                .map_or(String::new(), |t| format!(" test L1 {t:.4}"))
        ));
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

    // The model the daemon loads.
    let decoder = Decoder::from_model(config.clone(), engine.model().valid(), device)?;
    decoder.save(&opts.out)?;
    write_json(&opts.out.join("normalization.json"), &data.stats)?;
    let summary = TrainSummary {
        epochs: history,
        train_trials: data.train_trials.len(),
        test_trials: data.test_trials.len(),
        parameters,
        out: opts.out.clone(),
    };
    write_reports(opts, &summary)?;
    Ok(summary)
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

fn progress_bar(show: bool, steps: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(steps);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} steps ({per_sec}, eta {eta}) {msg}",
        )
        .expect("valid template"),
    );
    b
}

/// `training.json`, `losses.csv` and `loss.png`.
fn write_reports(opts: &TrainOptions, summary: &TrainSummary) -> anyhow::Result<()> {
    write_json(
        &opts.out.join("training.json"),
        &serde_json::json!({ "options": opts, "summary": summary }),
    )?;
    let mut csv = String::from(
        "epoch,d,g_adversarial,g_pixel_l1,g_vgg,test_pixel_l1,seconds,samples_per_s\n",
    );
    for e in &summary.epochs {
        csv.push_str(&format!(
            "{},{:.6},{:.6},{:.6},{},{},{:.2},{:.2}\n",
            e.epoch,
            e.d,
            e.g_adversarial,
            e.g_pixel_l1,
            e.g_vgg.map_or(String::new(), |v| format!("{v:.6}")),
            e.test_pixel_l1.map_or(String::new(), |v| format!("{v:.6}")),
            e.seconds,
            e.samples_per_s
        ));
    }
    std::fs::write(opts.out.join("losses.csv"), csv)?;
    let xy = |f: &dyn Fn(&EpochLog) -> Option<f64>| -> Vec<(f64, f64)> {
        summary
            .epochs
            .iter()
            .filter_map(|e| f(e).map(|v| (e.epoch as f64, v)))
            .collect()
    };
    use crate::plot::{Panel, Series};
    let mut panels = vec![
        Panel {
            title: "discriminator / adversarial (BCE)",
            series: vec![
                Series {
                    name: "D",
                    points: xy(&|e| Some(e.d)),
                },
                Series {
                    name: "G adversarial",
                    points: xy(&|e| Some(e.g_adversarial)),
                },
            ],
        },
        Panel {
            title: "pixel L1",
            series: vec![
                Series {
                    name: "train",
                    points: xy(&|e| Some(e.g_pixel_l1)),
                },
                Series {
                    name: "test",
                    points: xy(&|e| e.test_pixel_l1),
                },
            ],
        },
    ];
    if summary.epochs.iter().any(|e| e.g_vgg.is_some()) {
        panels.push(Panel {
            title: "VGG19 feature L1",
            series: vec![Series {
                name: "train",
                points: xy(&|e| e.g_vgg),
            }],
        });
    }
    let drawn = crate::plot::loss_curves(&opts.out.join("loss.png"), &panels)?;
    if !drawn && opts.progress {
        eprintln!("monkeysee train: no font found (install fonts-dejavu-core or set MONKEYSEE_FONT), so no loss.png; the losses are in losses.csv");
    }
    Ok(())
}

fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}
