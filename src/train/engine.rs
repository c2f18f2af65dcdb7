//! How one training step runs: the CPU engine ([`super::host`]) or Burn's autodiff end to
//! end (any backend; what `--device cuda` uses). Both take the same batches, draw the same
//! random numbers, minimise the same losses and write the same files, so `train` drives
//! either through [`Engine`].
//!
//! Checkpoints: both write the generator and discriminator as Burn records
//! (`generator`, `discriminator`); the optimiser state is Burn's record for the Burn engine
//! (`optim-*`) and `optim-host.npy` (Adam moments of both networks) for the CPU engine.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use burn::module::{AutodiffModule, Module};
use burn::nn::loss::{BinaryCrossEntropyLoss, BinaryCrossEntropyLossConfig};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::host::{HostDiscriminator, HostGan, HostGenerator, StepLosses};
use super::rf_encoding::{feature_tensor, RfEncoder};
use super::{Discriminator, LossWeights, PerceptualLoss};
use crate::dataset::writer::NpyRows;
use crate::decoder::infer::{FoldedUNet, HostUNet};
use crate::decoder::kernels::BufferPool;
use crate::decoder::model::runs_on_host;
use crate::decoder::{host_values, DecoderModel, DenseMapLayer, GaussianRfLayer};

/// Which engine trains (`--engine`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum EngineChoice {
    /// The CPU engine on the CPU, Burn's autodiff on an accelerator.
    #[default]
    Auto,
    /// The CPU engine (gemm + plain-Rust kernels).
    Host,
    /// Burn's autodiff on the chosen backend.
    Burn,
}

/// How the optimisers are set up.
#[derive(Clone, Copy, Debug)]
pub struct OptimiserSettings {
    /// Adam's β1 for the U-Net, the dense map layer and the discriminator.
    pub beta1: f64,
    /// Adam's β1 for the learned RF layer.
    pub rf_beta1: f64,
    /// The U-Net is not updated (it still passes gradients to the input layer).
    pub freeze_unet: bool,
}

/// Hyper-parameters a step needs.
#[derive(Clone, Copy, Debug)]
pub struct StepSettings {
    pub lr: f64,
    pub rf_lr: f64,
    pub losses: LossWeights,
    /// Weight of the learned RF layer's encoding loss ([`RfEncoder`]; 0: off).
    pub rf_encoding: f64,
}

/// A batch: the decoder input (built on the host for the fixed-RF kinds) or the
/// responses for a learned input layer, and the stimuli.
pub struct Batch {
    pub n: usize,
    /// The whole U-Net input `[n][channels][H][W]` for a fixed input layer; `None` for a
    /// learned one.
    pub fixed_input: Option<Vec<f32>>,
    /// `[n][features]`.
    pub features: Vec<f32>,
    /// The linear pathway's images `[n][3][H][W]` that follow a learned layer's maps.
    pub pathway: Option<Vec<f32>>,
    /// `[n][3][H][W]`.
    pub images: Vec<f32>,
    pub in_channels: usize,
    /// Channels of the input layer's maps (the rest are the pathway's).
    pub map_channels: usize,
    /// Factor on a learned layer's maps.
    pub input_scale: f32,
    pub size: usize,
}

/// The training state of one run.
pub enum Engine<B: AutodiffBackend> {
    Burn(Box<BurnEngine<B>>),
    Host(Box<HostEngine<B>>),
}

type Opt<M, B> = OptimizerAdaptor<Adam, M, B>;

/// Burn's autodiff for everything.
pub struct BurnEngine<B: AutodiffBackend> {
    model: DecoderModel<B>,
    disc: Discriminator<B>,
    freeze_unet: bool,
    opt_g: Opt<DecoderModel<B>, B>,
    opt_rf: Opt<GaussianRfLayer<B>, B>,
    opt_d: Opt<Discriminator<B>, B>,
    rf_encoder: RfHead<B>,
    pool: HistoryPool<B>,
    bce: BinaryCrossEntropyLoss<B>,
}

/// The CPU engine for the U-Net and PatchGAN; a learned input layer stays in Burn.
pub struct HostEngine<B: AutodiffBackend> {
    gan: HostGan,
    /// The input layer and a U-Net/discriminator to write the weights back into.
    model: DecoderModel<B>,
    disc: Discriminator<B>,
    opt_rf: Opt<GaussianRfLayer<B>, B>,
    opt_dense: Opt<DenseMapLayer<B>, B>,
    rf_encoder: RfHead<B>,
}

/// The RF layer's encoding head and its optimiser (made at the first step that uses it;
/// not part of checkpoints: a resumed run starts it afresh).
pub struct RfHead<B: AutodiffBackend> {
    head: Option<HeadState<B>>,
}

/// The head and its optimiser.
type HeadState<B> = (RfEncoder<B>, Opt<RfEncoder<B>, B>);

impl<B: AutodiffBackend> RfHead<B> {
    /// The encoding loss of `layer` on `batch`, weighted, and its unweighted value, creating
    /// the head if needed; `None` without a learned RF layer or with the loss off.
    fn loss(
        &mut self,
        layer: Option<&GaussianRfLayer<B>>,
        batch: &Batch,
        weight: f64,
        device: &B::Device,
    ) -> Option<(Tensor<B, 1>, f64)> {
        let layer = layer.filter(|_| weight > 0.0)?;
        let (head, _) = self
            .head
            .get_or_insert_with(|| (RfEncoder::new(layer, device), AdamConfig::new().init()));
        let phi = feature_tensor::<B>(&batch.images, batch.size, device);
        let loss = head
            .loss(layer, phi, responses(batch, device))
            .mul_scalar(weight);
        Some((loss.clone(), mean_of(loss) / weight))
    }

    /// One Adam step of the head on `grads` (at 20× the network's learning rate: the head is
    /// a small linear read-out that has to keep up with the moving RFs).
    fn step(&mut self, grads: &mut B::Gradients, lr: f64) {
        if let Some((head, mut opt)) = self.head.take() {
            let g = GradientsParams::from_module(grads, &head);
            self.head = Some((opt.step(lr, head, g), opt));
        }
    }
}

/// The pix2pix history pool of the Burn engine: half the time the discriminator sees an
/// older fake.
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

/// Adam's ε for the learned RF layer (PyTorch's default).
pub const RF_EPSILON: f32 = 1e-8;

fn adam(beta1: f64) -> AdamConfig {
    AdamConfig::new().with_beta_1(beta1 as f32)
}

fn mean_of<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_scalar().elem::<f64>()
}

/// The decoder input of a batch on the backend: the host-built fixed input, or the
/// learned layer's output (inside the autodiff graph).
fn input_tensor<B: Backend>(
    model: &DecoderModel<B>,
    batch: &Batch,
    device: &B::Device,
) -> Tensor<B, 4> {
    let s = batch.size;
    match &batch.fixed_input {
        Some(x) => Tensor::from_data(
            TensorData::new(x.clone(), [batch.n, batch.in_channels, s, s]),
            device,
        ),
        None => {
            let maps = model
                .learned_input(responses(batch, device))
                .expect("a batch without a fixed input belongs to a learned-input kind")
                .mul_scalar(batch.input_scale); // [n, maps, H, W]
            match &batch.pathway {
                Some(p) => {
                    let p =
                        Tensor::from_data(TensorData::new(p.clone(), [batch.n, 3, s, s]), device);
                    Tensor::cat(vec![maps, p], 1)
                }
                None => maps,
            }
        }
    }
}

/// The batch's features `[n, features]` on the backend.
fn responses<B: Backend>(batch: &Batch, device: &B::Device) -> Tensor<B, 2> {
    let nf = batch.features.len() / batch.n.max(1);
    Tensor::from_data(
        TensorData::new(batch.features.clone(), [batch.n, nf]),
        device,
    )
}

fn images<B: Backend>(batch: &Batch, device: &B::Device) -> Tensor<B, 4> {
    let s = batch.size;
    Tensor::from_data(
        TensorData::new(batch.images.clone(), [batch.n, 3, s, s]),
        device,
    )
}

/// Adam moments of both networks, as `optim-host.npy` `[4, n]` rows: generator m, v,
/// discriminator m, v (padded to the longer one), with the step counts in state.json.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct HostOptimSteps {
    pub generator: u32,
    pub discriminator: u32,
}

impl<B: AutodiffBackend> Engine<B> {
    /// A fresh engine on `model` and `disc`.
    pub fn new(
        choice: EngineChoice,
        model: DecoderModel<B>,
        disc: Discriminator<B>,
        pool_size: usize,
        optimisers: OptimiserSettings,
    ) -> Self {
        let host = match choice {
            EngineChoice::Host => true,
            EngineChoice::Burn => false,
            EngineChoice::Auto => runs_on_host::<B::InnerBackend>(),
        };
        let a = adam(optimisers.beta1);
        // The RF centres' gradients are ~1e-6 per pixel: Burn's default ε (1e-5) would
        // swamp Adam's normalisation and shrink their steps ~100×; PyTorch's ε (1e-8) does not.
        let rf = adam(optimisers.rf_beta1).with_epsilon(RF_EPSILON);
        if host {
            let mut gan = HostGan::new(&model.unet, &disc, pool_size, optimisers.beta1);
            gan.freeze_generator = optimisers.freeze_unet;
            Engine::Host(Box::new(HostEngine {
                gan,
                model,
                disc,
                opt_rf: rf.init(),
                opt_dense: a.init(),
                rf_encoder: RfHead { head: None },
            }))
        } else {
            Engine::Burn(Box::new(BurnEngine {
                model,
                disc,
                freeze_unet: optimisers.freeze_unet,
                opt_g: a.init(),
                opt_rf: rf.init(),
                opt_d: a.init(),
                rf_encoder: RfHead { head: None },
                pool: HistoryPool {
                    size: pool_size,
                    items: Vec::new(),
                },
                bce: BinaryCrossEntropyLossConfig::new()
                    .with_logits(true)
                    .init(&Default::default()),
            }))
        }
    }

    /// "host" or "burn", as recorded in checkpoints.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Burn(_) => "burn",
            Engine::Host(_) => "host",
        }
    }

    /// One discriminator + generator step.
    pub fn step(
        &mut self,
        batch: &Batch,
        settings: StepSettings,
        perceptual: Option<&PerceptualLoss<B>>,
        rng: &mut StdRng,
        device: &B::Device,
    ) -> anyhow::Result<StepLosses> {
        match self {
            Engine::Burn(e) => e.step(batch, settings, perceptual, rng, device),
            Engine::Host(e) => e.step(batch, settings, perceptual, rng, device),
        }
    }

    /// Mean pixel L1 of the generator in inference mode over `batches` (every trial
    /// weighing alike); `None` without trials. The CPU engine runs the inference network
    /// the saved model will run, on the current weights, built once for all the batches.
    pub fn mean_l1(
        &mut self,
        batches: &[Batch],
        device: &B::Device,
    ) -> anyhow::Result<Option<f64>> {
        let trials: usize = batches.iter().map(|b| b.n).sum();
        if trials == 0 {
            return Ok(None);
        }
        let mut sum = 0.0; // per-trial mean L1s, summed
        match self {
            Engine::Burn(e) => {
                let valid = e.model.valid();
                for b in batches {
                    let x = input_tensor(&valid, b, device);
                    let y = images::<B::InnerBackend>(b, device);
                    sum += mean_of((valid.unet.forward(x) - y).abs().mean()) * b.n as f64;
                }
            }
            Engine::Host(e) => {
                e.gan.gen.write_into(&mut e.model.unet);
                let valid = e.model.valid();
                let net = HostUNet::from_folded(FoldedUNet::from_unet(&valid.unet))?;
                let mut buffers = BufferPool::default();
                for b in batches {
                    let x = match &b.fixed_input {
                        Some(x) => x.clone(),
                        None => host_values(input_tensor(&valid, b, device))?,
                    };
                    let mut out = vec![0.0; b.images.len()];
                    net.forward(&x, b.n, b.size, &mut out, &mut buffers);
                    let l1 = out.iter().zip(&b.images).map(|(a, y)| (a - y).abs() as f64);
                    sum += l1.sum::<f64>() / (b.images.len() / b.n.max(1)).max(1) as f64;
                }
            }
        }
        Ok(Some(sum / trials as f64))
    }

    /// The trained decoder model (weights written back from the CPU engine).
    pub fn model(&mut self) -> DecoderModel<B> {
        match self {
            Engine::Burn(e) => e.model.clone(),
            Engine::Host(e) => {
                e.gan.gen.write_into(&mut e.model.unet);
                e.model.clone()
            }
        }
    }

    /// Writes the checkpoint files into `dir`; returns the CPU engine's Adam step counts.
    pub fn save_checkpoint(&mut self, dir: &Path) -> anyhow::Result<Option<HostOptimSteps>> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let named = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let bin = BinFileRecorder::<FullPrecisionSettings>::new();
        let model = self.model();
        let learned_rfs = model.gaussian.is_some();
        model.save_file(dir.join("generator"), &named)?;
        let (disc, opt_rf) = match self {
            Engine::Burn(e) => (&e.disc, &e.opt_rf),
            Engine::Host(e) => {
                e.gan.disc.write_into(&mut e.disc);
                (&e.disc, &e.opt_rf)
            }
        };
        disc.clone().save_file(dir.join("discriminator"), &named)?;
        if learned_rfs {
            bin.record(opt_rf.to_record(), dir.join("optim-rf"))?;
        }
        match self {
            Engine::Burn(e) => {
                bin.record(e.opt_g.to_record(), dir.join("optim-generator"))?;
                bin.record(e.opt_d.to_record(), dir.join("optim-discriminator"))?;
                Ok(None)
            }
            Engine::Host(e) => {
                if e.model.dense.is_some() {
                    bin.record(e.opt_dense.to_record(), dir.join("optim-dense"))?;
                }
                let (g, d) = (&e.gan.gen.params, &e.gan.disc.params);
                let n = g.len().max(d.len());
                let mut rows = Vec::with_capacity(4 * n);
                for v in [&g.m, &g.v, &d.m, &d.v] {
                    rows.extend_from_slice(v);
                    rows.resize(rows.len() + n - v.len(), 0.0);
                }
                write_npy(&dir.join("optim-host.npy"), &rows, [4, n])?;
                Ok(Some(HostOptimSteps {
                    generator: g.steps,
                    discriminator: d.steps,
                }))
            }
        }
    }

    /// Restores a checkpoint that [`Engine::save_checkpoint`] wrote with the same engine,
    /// into an engine fresh from [`Engine::new`] (the CPU engine keeps its empty history
    /// pool and settings and takes the networks' weights).
    pub fn load_checkpoint(
        &mut self,
        dir: &Path,
        steps: Option<HostOptimSteps>,
        device: &B::Device,
    ) -> anyhow::Result<()> {
        match self {
            Engine::Burn(e) => {
                load_module(&mut e.model, dir.join("generator"), device)?;
                load_module(&mut e.disc, dir.join("discriminator"), device)?;
                load_optim(&mut e.opt_g, dir.join("optim-generator"), device)?;
                if e.model.gaussian.is_some() {
                    load_optim(&mut e.opt_rf, dir.join("optim-rf"), device)?;
                }
                load_optim(&mut e.opt_d, dir.join("optim-discriminator"), device)?;
            }
            Engine::Host(e) => {
                let steps = steps.context(
                    "the checkpoint has no CPU-engine optimiser state (state.json: host_optim)",
                )?;
                load_module(&mut e.model, dir.join("generator"), device)?;
                load_module(&mut e.disc, dir.join("discriminator"), device)?;
                e.gan.gen = HostGenerator::from_unet(&e.model.unet);
                e.gan.disc = HostDiscriminator::from_module(&e.disc);
                if e.model.gaussian.is_some() {
                    load_optim(&mut e.opt_rf, dir.join("optim-rf"), device)?;
                }
                if e.model.dense.is_some() {
                    load_optim(&mut e.opt_dense, dir.join("optim-dense"), device)?;
                }
                let path = dir.join("optim-host.npy");
                let (rows, shape) = read_npy(&path)?;
                let (g, d) = (&mut e.gan.gen.params, &mut e.gan.disc.params);
                let n = g.len().max(d.len());
                if shape != [4, n] {
                    bail!(
                        "{}: shape {shape:?}, this model needs [4, {n}]",
                        path.display()
                    );
                }
                let row = |k: usize, len: usize| rows[k * n..k * n + len].to_vec();
                g.m = row(0, g.len());
                g.v = row(1, g.len());
                d.m = row(2, d.len());
                d.v = row(3, d.len());
                g.steps = steps.generator;
                d.steps = steps.discriminator;
            }
        }
        Ok(())
    }
}

/// Replaces `module`'s weights with those a [`NamedMpkFileRecorder`] wrote to `path`.
fn load_module<B: Backend, M: Module<B>>(
    module: &mut M,
    path: PathBuf,
    device: &B::Device,
) -> anyhow::Result<()> {
    let named = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
    *module = module.clone().load_file(path, &named, device)?;
    Ok(())
}

/// Restores an Adam state a [`BinFileRecorder`] wrote to `path` (the settings stay `opt`'s).
fn load_optim<B: AutodiffBackend, M: AutodiffModule<B>>(
    opt: &mut Opt<M, B>,
    path: PathBuf,
    device: &B::Device,
) -> anyhow::Result<()> {
    let record = BinFileRecorder::<FullPrecisionSettings>::new().load(path, device)?;
    let old = std::mem::replace(opt, AdamConfig::new().init());
    *opt = old.load_record(record);
    Ok(())
}

fn write_npy(path: &Path, values: &[f32], shape: [usize; 2]) -> anyhow::Result<()> {
    let mut out = NpyRows::create(path, &shape[1..])?;
    for row in values.chunks_exact(shape[1].max(1)).take(shape[0]) {
        out.push(row)?;
    }
    out.finish()
}

fn read_npy(path: &Path) -> anyhow::Result<(Vec<f32>, Vec<usize>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..]).with_context(|| format!("{}", path.display()))?;
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    let values = npy
        .into_vec::<f32>()
        .with_context(|| format!("{}", path.display()))?;
    Ok((values, shape))
}

impl<B: AutodiffBackend> BurnEngine<B> {
    fn step(
        &mut self,
        batch: &Batch,
        settings: StepSettings,
        perceptual: Option<&PerceptualLoss<B>>,
        rng: &mut StdRng,
        device: &B::Device,
    ) -> anyhow::Result<StepLosses> {
        let x = input_tensor(&self.model, batch, device);
        let y = images::<B>(batch, device);
        let fake = self.model.unet.forward(x.clone());

        let w = settings.losses;
        let pix = (fake.clone() - y.clone()).abs().mean();
        let g_pixel_l1 = mean_of(pix.clone());
        let mut loss_g = pix.mul_scalar(w.pixel);
        // With the adversarial term off the discriminator has no part in the objective
        // and does not run.
        let (mut d, mut g_adversarial) = (None, None);
        if w.adversarial != 0.0 {
            // Discriminator.
            let x_d = x.clone().detach();
            let real_pair = Tensor::cat(vec![x_d.clone(), y.clone()], 1);
            let fake_pair = self
                .pool
                .query(Tensor::cat(vec![x_d, fake.clone().detach()], 1), rng);
            let d_real = self.disc.forward(real_pair);
            let d_fake = self.disc.forward(fake_pair);
            let ones = Tensor::<B, 4, Int>::ones(d_real.shape(), device);
            let zeros = Tensor::<B, 4, Int>::zeros(d_fake.shape(), device);
            let loss_d = (self.bce.forward(d_fake, zeros) + self.bce.forward(d_real, ones.clone()))
                .mul_scalar(0.5);
            d = Some(mean_of(loss_d.clone()));
            let grads = GradientsParams::from_grads(loss_d.backward(), &self.disc);
            self.disc = self.opt_d.step(settings.lr, self.disc.clone(), grads);

            // The condition is detached: the adversarial term trains the generator's
            // output, not a learned input layer reshaping D's condition.
            let d_g = self
                .disc
                .forward(Tensor::cat(vec![x.detach(), fake.clone()], 1));
            let adv = self.bce.forward(d_g, ones);
            g_adversarial = Some(mean_of(adv.clone()));
            loss_g = loss_g + adv.mul_scalar(w.adversarial);
        }
        let mut g_extra = None;
        if let Some(p) = perceptual {
            let feat = p.forward(fake, y);
            g_extra = Some(mean_of(feat.clone()));
            loss_g = loss_g + feat.mul_scalar(w.vgg);
        }
        let mut rf_encoding = None;
        let layer = self.model.gaussian.as_ref();
        if let Some((enc, value)) = self
            .rf_encoder
            .loss(layer, batch, settings.rf_encoding, device)
        {
            rf_encoding = Some(value);
            loss_g = loss_g + enc;
        }
        let mut grads = loss_g.backward();
        self.rf_encoder.step(&mut grads, 20.0 * settings.lr);
        let model = self.model.clone();
        self.model = match model.gaussian.clone() {
            // The RF layer has a learning rate of its own.
            Some(layer) => {
                let mut model = model;
                model.gaussian = None;
                let g_rf = GradientsParams::from_module(&mut grads, &layer);
                let g_rest = GradientsParams::from_module(&mut grads, &model);
                let mut model = if self.freeze_unet {
                    model
                } else {
                    self.opt_g.step(settings.lr, model, g_rest)
                };
                model.gaussian = Some(self.opt_rf.step(settings.rf_lr, layer, g_rf));
                model
            }
            None if self.freeze_unet => model,
            None => {
                let g = GradientsParams::from_grads(grads, &model);
                self.opt_g.step(settings.lr, model, g)
            }
        };
        Ok(StepLosses {
            d,
            g_adversarial,
            g_pixel_l1,
            g_extra,
            rf_encoding,
        })
    }
}

impl<B: AutodiffBackend> HostEngine<B> {
    fn step(
        &mut self,
        batch: &Batch,
        settings: StepSettings,
        perceptual: Option<&PerceptualLoss<B>>,
        rng: &mut StdRng,
        device: &B::Device,
    ) -> anyhow::Result<StepLosses> {
        let learned = batch.fixed_input.is_none();
        let x_tensor = learned.then(|| input_tensor(&self.model, batch, device));
        let learned_x = x_tensor.clone().map(host_values).transpose()?;
        let x: &[f32] = match (&batch.fixed_input, &learned_x) {
            (Some(x), _) | (None, Some(x)) => x,
            (None, None) => unreachable!("a learned input was built above"),
        };
        let s = batch.size;
        let mut vgg = perceptual.map(|p| {
            let y = images::<B>(batch, device);
            move |fake: &[f32]| -> anyhow::Result<(f64, Vec<f32>)> {
                let fake = Tensor::<B, 4>::from_data(
                    TensorData::new(fake.to_vec(), [batch.n, 3, s, s]),
                    device,
                )
                .require_grad();
                let loss = p.forward(fake.clone(), y.clone());
                let value = mean_of(loss.clone());
                let grads = loss.backward();
                let g = fake
                    .grad(&grads)
                    .context("the perceptual loss did not reach the reconstruction")?;
                Ok((value, host_values(g)?))
            }
        });
        let extra = vgg
            .as_mut()
            .map(|f| f as &mut (dyn FnMut(&[f32]) -> anyhow::Result<(f64, Vec<f32>)> + Send));
        let (mut losses, dx) = self.gan.step(
            x,
            &batch.images,
            batch.n,
            s,
            settings.lr,
            settings.losses,
            rng,
            learned,
            extra,
        )?;
        if let (Some(x_tensor), Some(dx)) = (x_tensor, dx) {
            // The learned input layer's backward pass, in Burn: d(Σ x·∂L/∂x) = ∂L/∂x.
            let dx = Tensor::<B, 4>::from_data(TensorData::new(dx, x_tensor.dims()), device);
            let mut total = (x_tensor * dx).sum();
            let layer = self.model.gaussian.as_ref();
            let weight = settings.rf_encoding;
            if let Some((enc, value)) = self.rf_encoder.loss(layer, batch, weight, device) {
                losses.rf_encoding = Some(value);
                total = total + enc;
            }
            let mut grads = total.backward();
            self.rf_encoder.step(&mut grads, 20.0 * settings.lr);
            if let Some(layer) = self.model.gaussian.take() {
                let g = GradientsParams::from_module(&mut grads, &layer);
                self.model.gaussian = Some(self.opt_rf.step(settings.rf_lr, layer, g));
            }
            if let Some(layer) = self.model.dense.take() {
                let g = GradientsParams::from_module(&mut grads, &layer);
                self.model.dense = Some(self.opt_dense.step(settings.lr, layer, g));
            }
        }
        Ok(losses)
    }
}
