//! `monkeysee train`: a decoder trained on a dataset, on the CPU or a CUDA GPU.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use monkeysee::config::RigConfig;
use monkeysee::decoder::arch::DEFAULT_LEVELS;
use monkeysee::decoder::linear::LinearPathwayConfig;
use monkeysee::decoder::{
    compute_threads, dispatch_training, init_compute_threads, ComputeDevice, DecoderKind,
    OnTrainBackend, PoolRole,
};
use monkeysee::rf::RfTable;
use monkeysee::train::{EngineChoice, LossWeights, RfStart, TrainOptions, TrainSummary};
use monkeysee::units::Area;

/// `--linear-pathway`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PathwayArg {
    /// The paper's decoders: the input layer's maps only.
    None,
    /// A ridge read-out of every electrode as three more input channels; the U-Net learns a
    /// correction added to its image.
    Residual,
    /// The same read-out as input channels only; the U-Net draws the image itself.
    Concat,
}

/// `--input-scale`: `auto` (`None`) or a number.
#[derive(Clone, Copy)]
struct InputScaleArg(Option<f32>);

impl std::str::FromStr for InputScaleArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(Self(None));
        }
        match s.parse::<f32>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(Self(Some(v))),
            _ => Err(format!("`{s}`: give `auto` or a positive number")),
        }
    }
}

#[derive(Args)]
#[command(
    after_help = "Writes OUT/decoder.json + weights.mpk + normalization.json (load with \
`monkeysee run --model OUT`), OUT/training.json, OUT/losses.csv and OUT/checkpoint/.\n\n\
Example:\n  monkeysee train --rig firmware-config/synthetic.toml --data sim/dataset \
--kind end-to-end --width 16 --epochs 20 --out models/e2e"
)]
pub struct TrainArgs {
    /// Rig config the dataset was recorded with (channels, areas, windows, RF table).
    #[arg(long, value_name = "RIG.toml")]
    rig: PathBuf,
    /// Dataset folder (dataset.json, responses.npy, images.npy, ...).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Output folder for the model.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Which of the paper's four decoders.
    #[arg(long, value_enum, default_value = "end-to-end")]
    kind: DecoderKind,
    /// Continue from OUT/checkpoint.
    #[arg(long)]
    resume: bool,
    /// Train on at most N trials of the training split.
    #[arg(long, value_name = "N")]
    max_trials: Option<usize>,
    #[command(flatten)]
    settings: TrainSettings,
}

/// The training settings `train` and `learning-curve` share.
#[derive(Args)]
pub struct TrainSettings {
    /// RF table to use instead of the rig's (e.g. the simulator's rf-table.csv): initialises
    /// the end-to-end RF layer and places electrodes for the fixed-RF decoders.
    #[arg(long, value_name = "CSV")]
    rf_table: Option<PathBuf>,
    /// U-Net base width (64 in the paper; 16 trains and runs on a laptop CPU).
    #[arg(long, default_value_t = 16)]
    width: usize,
    /// The U-Net's skip blocks: each one's inner width as a multiple of --width, outermost
    /// first (the paper's pix2pix: 2,4,8,8). One more number is one more level; the image
    /// side must be a multiple of 2^(levels + 1).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_LEVELS)]
    levels: Vec<usize>,
    /// PatchGAN base width (64 in the paper).
    #[arg(long, default_value_t = 16)]
    disc_width: usize,
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Adam learning rate (both networks).
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    /// Learning rate of the end-to-end decoder's RF centres and sizes (in pixels: Adam
    /// moves each by about this much per step).
    #[arg(long, default_value_t = 0.01)]
    rf_lr: f64,
    /// Adam beta1.
    #[arg(long, default_value_t = 0.5)]
    beta1: f64,
    /// Weight of the pixel L1 loss.
    #[arg(long, default_value_t = 0.5)]
    pixel_weight: f64,
    /// Weight of the adversarial loss.
    #[arg(long, default_value_t = 0.01)]
    adversarial_weight: f64,
    /// torchvision's pretrained VGG19 weights (vgg19-dcbb9e9d.pth, as
    /// torchvision.models.vgg19(weights="IMAGENET1K_V1") downloads it) for the paper's
    /// perceptual loss. Without it training uses pixel L1 + adversarial only.
    #[arg(long, value_name = "FILE.pth")]
    vgg_weights: Option<PathBuf>,
    /// Weight of the VGG19 feature loss.
    #[arg(long, default_value_t = 1.0, requires = "vgg_weights")]
    vgg_weight: f64,
    /// Side images are resized to for VGG19 (224 in the paper; smaller is much faster on a CPU).
    #[arg(
        long,
        default_value_t = 224,
        value_name = "PX",
        requires = "vgg_weights"
    )]
    vgg_size: usize,
    /// Size of the discriminator's history pool of generated images.
    #[arg(long, default_value_t = 50)]
    pool: usize,
    /// Save a checkpoint every N epochs (always after the last).
    #[arg(long, default_value_t = 5)]
    checkpoint_every: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Compute threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub(super) threads: usize,
    /// Where training runs. `cuda` needs a build with `--features cuda` and an NVIDIA GPU.
    #[arg(long, value_enum, default_value = "cpu")]
    pub(super) device: ComputeDevice,
    /// A linear read-out of every electrode beside the input layer (ridge regression from
    /// each electrode's window mean to a coarse image, fitted on the training trials in
    /// closed form and cross-fitted for the training inputs, then frozen). It carries what
    /// per-array RF maps discard (IT and V4 codes that are not retinotopic).
    #[arg(long, value_enum, default_value = "none")]
    linear_pathway: PathwayArg,
    /// Side of the linear pathway's coarse image (it must divide the image size).
    #[arg(long, default_value_t = 24, value_name = "PX")]
    linear_side: usize,
    /// Factor on the input layer's maps: `auto` gives them unit standard deviation over
    /// the training trials (the RF maps' values are small window means otherwise).
    #[arg(long, default_value = "auto", value_name = "auto|X")]
    input_scale: InputScaleArg,
    /// Let the learning rate fall linearly to zero over the last N epochs.
    #[arg(long, default_value_t = 0, value_name = "N")]
    lr_decay_epochs: usize,
    /// Hold out the images of the last N training trials as a validation set (not trained
    /// on; its pixel L1 is logged every epoch, in losses.csv and loss.png).
    #[arg(long, default_value_t = 0, value_name = "N")]
    validation: usize,
    /// Save the model of the epoch with the lowest validation L1 rather than the last one
    /// (early stopping; needs --validation).
    #[arg(long)]
    keep_best: bool,
    /// Leave out electrodes with an SNR below this (the dataset's electrodes.csv, from
    /// `import-tvsd --norm-mua`): their inputs are 0 in training and in the daemon.
    /// (MonkeySee kept 561 of monkey N's 1024 electrodes by RF fit and split-half
    /// reliability > 0.4, a different criterion.)
    #[arg(long, value_name = "SNR")]
    min_snr: Option<f64>,
    /// Train on these areas only, e.g. `--areas V1,V4` (the paper's area-restricted
    /// models, its Fig. 12): the other areas' inputs are 0, in training and in the daemon.
    /// `eval --report` compares such models with the one trained on every area.
    #[arg(long, value_delimiter = ',', value_parser = parse_area, value_name = "AREA,...")]
    areas: Vec<Area>,
    /// Adam's beta1 for the learned RF layer (default: --beta1).
    #[arg(long)]
    rf_beta1: Option<f64>,
    /// Where the learned RF centres start: at the RF table's, or at each array's mean
    /// (what a lab without single-electrode RF maps has).
    #[arg(long, value_enum, default_value = "table")]
    rf_start: RfStart,
    /// Start the U-Net from a trained model's weights (same kind of U-Net).
    #[arg(long, value_name = "MODEL_DIR")]
    init_unet: Option<PathBuf>,
    /// Keep the U-Net fixed: only the input layer learns (RF-learning experiments).
    #[arg(long)]
    freeze_unet: bool,
    /// End-to-end: weight of the RF layer's encoding loss (each electrode's response
    /// predicted from the image inside its Gaussian RF), which pulls the RF centres toward
    /// where the electrode responds; 0 turns it off.
    #[arg(long, default_value_t = 0.0, value_name = "W")]
    rf_encoding_weight: f64,
    /// End-to-end: one U-Net input channel per electrode instead of per array (an
    /// RF-learning experiment: the input grows from 15 to ~960 channels).
    #[arg(long)]
    channel_per_electrode: bool,
    /// Which engine runs a step: `auto` is monkeysee's CPU engine (gemm kernels) on the
    /// CPU and Burn's autodiff on CUDA; `burn` forces Burn's autodiff (slower on a CPU).
    #[arg(long, value_enum, default_value = "auto")]
    engine: EngineChoice,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl TrainSettings {
    /// The training options for `kind` on `data` into `out`: the rig loaded (with
    /// --rf-table's table in place of its own), the loss weights, the linear pathway and
    /// the input scale. `resume` and `max_trials` are `train`'s own.
    pub(super) fn options(
        self,
        rig_path: PathBuf,
        data: PathBuf,
        out: PathBuf,
        kind: DecoderKind,
    ) -> anyhow::Result<TrainOptions> {
        let mut rig = RigConfig::load(&rig_path)?;
        if let Some(p) = &self.rf_table {
            rig.rf.table = Some(RfTable::load(p)?);
            rig.rf.table_path = Some(p.clone());
        }
        let linear_pathway = match self.linear_pathway {
            PathwayArg::None => None,
            mode => Some(LinearPathwayConfig {
                side: self.linear_side,
                residual: mode == PathwayArg::Residual,
            }),
        };
        Ok(TrainOptions {
            rig_path,
            rig: Some(rig),
            data,
            out,
            kind,
            width: self.width,
            levels: self.levels,
            disc_width: self.disc_width,
            epochs: self.epochs,
            batch: self.batch,
            lr: self.lr,
            rf_lr: self.rf_lr,
            beta1: self.beta1,
            losses: LossWeights {
                pixel: self.pixel_weight,
                adversarial: self.adversarial_weight,
                vgg: self.vgg_weight,
            },
            vgg_weights: self.vgg_weights,
            vgg_size: self.vgg_size,
            pool_size: self.pool,
            checkpoint_every: self.checkpoint_every,
            resume: false,
            seed: self.seed,
            max_trials: None,
            progress: !self.quiet,
            engine: self.engine,
            linear_pathway,
            input_scale: self.input_scale.0,
            lr_decay_epochs: self.lr_decay_epochs,
            rf_beta1: self.rf_beta1,
            rf_start: self.rf_start,
            init_unet: self.init_unet,
            freeze_unet: self.freeze_unet,
            channel_per_electrode: self.channel_per_electrode,
            rf_encoding_weight: self.rf_encoding_weight,
            validation: self.validation,
            keep_best: self.keep_best,
            min_snr: self.min_snr,
            areas: self.areas,
        })
    }
}

impl TrainArgs {
    fn options(self) -> anyhow::Result<TrainOptions> {
        let mut opts = (self.settings).options(self.rig, self.data, self.out, self.kind)?;
        opts.resume = self.resume;
        opts.max_trials = self.max_trials;
        Ok(opts)
    }
}

/// Training on the backend --device names.
struct Train<'a>(&'a TrainOptions);

impl OnTrainBackend for Train<'_> {
    type Output = anyhow::Result<TrainSummary>;
    fn run<B: burn::tensor::backend::AutodiffBackend>(self, device: B::Device) -> Self::Output {
        monkeysee::train::train::<B>(self.0, &device)
    }
}

/// Trains the decoder, then prints the last epoch's losses and where the model went.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let (device, threads) = (args.settings.device, args.settings.threads);
    let opts = args.options()?;
    init_compute_threads(compute_threads(threads, PoolRole::Offline));
    print_perceptual_loss(&opts);
    let summary = dispatch_training(device, Train(&opts))??;
    print_result(&opts, &summary)
}

/// Says whether the paper's perceptual VGG19 loss is on (without --vgg-weights training
/// runs without it, so that is stated before the first epoch).
pub(super) fn print_perceptual_loss(opts: &TrainOptions) {
    match &opts.vgg_weights {
        Some(p) => eprintln!(
            "monkeysee train: perceptual loss: VGG19 from {} at {} px, weight {}",
            p.display(),
            opts.vgg_size,
            opts.losses.vgg
        ),
        None => eprintln!(
            "monkeysee train: no --vgg-weights: training WITHOUT the paper's perceptual VGG19 loss \
({}). Pass torchvision's vgg19-dcbb9e9d.pth to add it.",
            match opts.losses.adversarial > 0.0 {
                true => "pixel L1 + adversarial only",
                false => "pixel L1 only",
            }
        ),
    }
}

/// The last epoch's losses and speed, and which epoch's model was written.
fn print_result(opts: &TrainOptions, summary: &TrainSummary) -> anyhow::Result<()> {
    let last = summary.epochs.last().context("no epoch ran")?;
    println!(
        "trained {} ({} parameters) on {} trials: epoch {}{}, pixel L1 {:.4}{}{}, {:.1} samples/s",
        opts.kind,
        summary.parameters,
        summary.train_trials,
        last.epoch,
        match (last.d, last.g_adversarial) {
            (Some(d), Some(g)) => format!(" D {d:.3}, G adversarial {g:.3}"),
            _ => " (no adversarial term)".into(),
        },
        last.g_pixel_l1,
        last.g_vgg
            .map_or(String::new(), |v| format!(", VGG L1 {v:.4}")),
        last.test_pixel_l1
            .map_or(String::new(), |t| format!(", test L1 {t:.4}")),
        last.samples_per_s
    );
    match summary
        .epochs
        .iter()
        .find(|e| e.epoch == summary.saved_epoch)
    {
        Some(e) if summary.saved_epoch != last.epoch => println!(
            "model written to {} (epoch {}: the lowest validation L1, {:.4})",
            opts.out.display(),
            e.epoch,
            e.validation_pixel_l1.unwrap_or(f64::NAN)
        ),
        _ => println!("model written to {}", opts.out.display()),
    }
    Ok(())
}

/// An area name (V1, V4, IT; any case).
fn parse_area(s: &str) -> Result<Area, String> {
    Area::parse(s).ok_or_else(|| format!("unknown area {s:?}: give V1, V4 or IT"))
}
