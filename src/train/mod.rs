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
pub mod vgg;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use burn::module::{AutodiffModule, Module};
use burn::nn::loss::BinaryCrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

pub use discriminator::Discriminator;
pub use vgg::{PerceptualLoss, Vgg19};

use crate::config::RigConfig;
use crate::daemon::{decoder_config, window_set};
use crate::dataset::Dataset;
use crate::decoder::{Decoder, DecoderConfig, DecoderKind, DecoderModel, FixedRfMaps};

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
}

/// What the generator minimises: a resumed run must keep it, or its loss curve
/// would join two different objectives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Objective {
    losses: LossWeights,
    /// The VGG19 input side, when the perceptual loss is on.
    vgg_size: Option<usize>,
}

/// The decoder input of a batch: built on the host for the fixed-RF kinds, by the
/// learned layer (inside the autodiff graph) for the others.
fn batch_input<B: Backend>(
    model: &DecoderModel<B>,
    fixed: Option<&FixedRfMaps>,
    features: &[f32],
    n: usize,
    config: &DecoderConfig,
    device: &B::Device,
) -> Tensor<B, 4> {
    let s = config.image_size;
    match fixed {
        Some(maps) => {
            let len = maps.image_len();
            let mut img = vec![0.0f32; n * len];
            let nf = config.n_features();
            for i in 0..n {
                maps.fill(
                    &features[i * nf..(i + 1) * nf],
                    &mut img[i * len..(i + 1) * len],
                );
            }
            Tensor::from_data(TensorData::new(img, [n, maps.n_channels(), s, s]), device)
        }
        None => {
            let r = Tensor::from_data(
                TensorData::new(features.to_vec(), [n, config.n_features()]),
                device,
            );
            model
                .learned_input(r)
                .expect("learned-input kinds have their layer")
        }
    }
}

/// The pix2pix history pool: half the time the discriminator sees an older fake.
struct HistoryPool<B: Backend> {
    size: usize,
    items: Vec<Tensor<B, 3>>,
}

impl<B: Backend> HistoryPool<B> {
    fn query(&mut self, batch: Tensor<B, 4>, rng: &mut impl Rng) -> Tensor<B, 4> {
        if self.size == 0 {
            return batch;
        }
        let n = batch.dims()[0];
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let item: Tensor<B, 3> = batch.clone().narrow(0, i, 1).squeeze_dim(0);
            if self.items.len() < self.size {
                self.items.push(item.clone());
                out.push(item);
            } else if rng.random_bool(0.5) {
                let j = rng.random_range(0..self.size);
                out.push(std::mem::replace(&mut self.items[j], item));
            } else {
                out.push(item);
            }
        }
        Tensor::stack(out, 0)
    }
}

fn images<B: Backend>(ds: &Dataset, trials: &[usize], device: &B::Device) -> Tensor<B, 4> {
    let s = ds.meta.image_size;
    let mut v = Vec::with_capacity(trials.len() * 3 * s * s);
    for &t in trials {
        v.extend(ds.image_chw(ds.trial_image[t]));
    }
    Tensor::from_data(TensorData::new(v, [trials.len(), 3, s, s]), device)
}

fn mean_of<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_scalar().elem::<f64>()
}

/// Trains a decoder and writes it to `opts.out`. Generic over the autodiff backend
/// (`Autodiff<Flex>` on the CPU, `Autodiff<Cuda>` with `--features cuda`).
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
    let set = window_set(opts.kind);
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
    let nf = config.n_features();
    let features_of = |trials: &[usize]| -> Vec<f32> {
        let mut all = Vec::with_capacity(trials.len() * nf);
        let mut f = Vec::new();
        for &t in trials {
            ds.features(t, rig, set, &stats, &mut f);
            all.extend_from_slice(&f);
        }
        all
    };

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
    let mut model: DecoderModel<B> = DecoderModel::new(&config, opts.seed, device)?;
    let mut disc: Discriminator<B> =
        Discriminator::new(config.in_channels(), opts.disc_width, &mut init_rng, device);
    let adam = AdamConfig::new().with_beta_1(opts.beta1 as f32);
    let mut opt_g = adam.init::<B, DecoderModel<B>>();
    let mut opt_rf = adam.init::<B, crate::decoder::GaussianRfLayer<B>>();
    let mut opt_d = adam.init::<B, Discriminator<B>>();
    let mut history: Vec<EpochLog> = Vec::new();
    let mut first_epoch = 0;
    if opts.resume {
        let state: CheckpointState = serde_json::from_str(
            &std::fs::read_to_string(ckpt.join("state.json"))
                .with_context(|| format!("--resume: no checkpoint in {}", ckpt.display()))?,
        )
        .context("reading checkpoint/state.json")?;
        if state.objective.as_ref().is_some_and(|o| *o != objective) {
            bail!(
                "--resume: the checkpoint in {} was trained with other loss weights or VGG19 settings ({:?}, now {:?}); pass the same options or start a new --out",
                ckpt.display(),
                state.objective.expect("checked"),
                objective
            );
        }
        if state.config != config {
            bail!("--resume: the checkpoint in {} was trained with another decoder config (kind, width or rig); start a new --out or drop --resume", ckpt.display());
        }
        let named = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let bin = BinFileRecorder::<FullPrecisionSettings>::new();
        model = model.load_file(ckpt.join("generator"), &named, device)?;
        disc = disc.load_file(ckpt.join("discriminator"), &named, device)?;
        opt_g = opt_g.load_record(bin.load(ckpt.join("optim-generator"), device)?);
        if model.gaussian.is_some() {
            opt_rf = opt_rf.load_record(bin.load(ckpt.join("optim-rf"), device)?);
        }
        opt_d = opt_d.load_record(bin.load(ckpt.join("optim-discriminator"), device)?);
        first_epoch = state.next_epoch;
        history = state.epochs;
    }
    let parameters = model.num_params();
    let bce = BinaryCrossEntropyLossConfig::new()
        .with_logits(true)
        .init(device);
    let mut pool = HistoryPool::<B> {
        size: opts.pool_size,
        items: Vec::new(),
    };
    let test_features = features_of(&test_trials);
    let steps_per_epoch = train_trials.len() / opts.batch;
    let bar = if opts.progress {
        let b = indicatif::ProgressBar::new(
            ((opts.epochs.saturating_sub(first_epoch)) * steps_per_epoch) as u64,
        );
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} steps ({per_sec}, eta {eta}) {msg}",
            )
            .expect("valid template"),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    for epoch in first_epoch..opts.epochs {
        let started = Instant::now();
        let mut rng =
            rand::rngs::StdRng::seed_from_u64(opts.seed.wrapping_add(epoch as u64 * 7919));
        let mut order = train_trials.clone();
        order.shuffle(&mut rng);
        let (mut sum_d, mut sum_adv, mut sum_pix, mut sum_vgg) = (0.0, 0.0, 0.0, 0.0);
        for batch in order.chunks_exact(opts.batch) {
            let n = batch.len();
            let feats = features_of(batch);
            let x = batch_input(&model, fixed.as_ref(), &feats, n, &config, device);
            let y = images::<B>(&ds, batch, device);
            let fake = model.unet.forward(x.clone());

            // Discriminator.
            let x_d = x.clone().detach();
            let real_pair = Tensor::cat(vec![x_d.clone(), y.clone()], 1);
            let fake_pair = pool.query(Tensor::cat(vec![x_d, fake.clone().detach()], 1), &mut rng);
            let d_real = disc.forward(real_pair);
            let d_fake = disc.forward(fake_pair);
            let ones = Tensor::<B, 4, Int>::ones(d_real.shape(), device);
            let zeros = Tensor::<B, 4, Int>::zeros(d_fake.shape(), device);
            let loss_d =
                (bce.forward(d_fake, zeros) + bce.forward(d_real, ones.clone())).mul_scalar(0.5);
            sum_d += mean_of(loss_d.clone());
            let grads = GradientsParams::from_grads(loss_d.backward(), &disc);
            disc = opt_d.step(opts.lr, disc, grads);

            // Generator.
            // The condition is detached: the adversarial term trains the generator's
            // output, not a learned input layer reshaping D's condition.
            let d_g = disc.forward(Tensor::cat(vec![x.detach(), fake.clone()], 1));
            let adv = bce.forward(d_g, ones);
            let pix = (fake.clone() - y.clone()).abs().mean();
            sum_adv += mean_of(adv.clone());
            sum_pix += mean_of(pix.clone());
            let mut loss_g =
                adv.mul_scalar(opts.losses.adversarial) + pix.mul_scalar(opts.losses.pixel);
            if let Some(p) = &perceptual {
                let feat = p.forward(fake, y);
                sum_vgg += mean_of(feat.clone());
                loss_g = loss_g + feat.mul_scalar(opts.losses.vgg);
            }
            let mut grads = loss_g.backward();
            match model.gaussian.take() {
                // The RF layer has a learning rate of its own.
                Some(layer) => {
                    let g_rf = GradientsParams::from_module(&mut grads, &layer);
                    let g_rest = GradientsParams::from_module(&mut grads, &model);
                    model = opt_g.step(opts.lr, model, g_rest);
                    model.gaussian = Some(opt_rf.step(opts.rf_lr, layer, g_rf));
                }
                None => {
                    let g = GradientsParams::from_grads(grads, &model);
                    model = opt_g.step(opts.lr, model, g);
                }
            }
            bar.inc(1);
        }
        let seconds = started.elapsed().as_secs_f64();
        let k = steps_per_epoch.max(1) as f64;
        let test_pixel_l1 = (!test_trials.is_empty()).then(|| {
            let valid = model.valid();
            let inner_dev = device.clone();
            let x = batch_input(
                &valid,
                fixed.as_ref(),
                &test_features,
                test_trials.len(),
                &config,
                &inner_dev,
            );
            let y = images::<B::InnerBackend>(&ds, &test_trials, &inner_dev);
            mean_of((valid.unet.forward(x) - y).abs().mean())
        });
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
            std::fs::create_dir_all(&ckpt)?;
            let named = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
            let bin = BinFileRecorder::<FullPrecisionSettings>::new();
            model.clone().save_file(ckpt.join("generator"), &named)?;
            disc.clone().save_file(ckpt.join("discriminator"), &named)?;
            bin.record(opt_g.to_record(), ckpt.join("optim-generator"))?;
            if model.gaussian.is_some() {
                bin.record(opt_rf.to_record(), ckpt.join("optim-rf"))?;
            }
            bin.record(opt_d.to_record(), ckpt.join("optim-discriminator"))?;
            std::fs::write(
                ckpt.join("state.json"),
                serde_json::to_string_pretty(&CheckpointState {
                    next_epoch: epoch + 1,
                    epochs: history.clone(),
                    config: config.clone(),
                    objective: Some(objective.clone()),
                })?,
            )?;
        }
    }
    bar.finish();

    // The model the daemon loads.
    let decoder = Decoder::from_model(config.clone(), model.valid(), device)?;
    decoder.save(&opts.out)?;
    write_json(&opts.out.join("normalization.json"), &stats)?;
    let summary = TrainSummary {
        epochs: history,
        train_trials: train_trials.len(),
        test_trials: test_trials.len(),
        parameters,
        out: opts.out.clone(),
    };
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
    Ok(summary)
}

fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}
