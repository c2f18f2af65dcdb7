//! `monkeysee learning-curve`: each decoder kind and the linear decoder trained on
//! growing numbers of images and scored on the test split.

use std::path::PathBuf;

use clap::Args;

use monkeysee::decoder::{
    compute_threads, dispatch_training, init_compute_threads, DecoderKind, OnTrainBackend, PoolRole,
};
use monkeysee::eval::curve::Curve;
use monkeysee::learning_curve::{self, CurveOptions};

use super::train::{print_perceptual_loss, TrainSettings};

#[derive(Args)]
#[command(
    after_help = "Writes OUT/curve.json (every kind's and the linear decoder's pixel r, \
SSIM, single-trial r and identification at every size) and OUT/curve.png, updated after each \
size, with each model under OUT/n<N>/<kind>/ and its evaluation under OUT/n<N>/eval/. Show the \
curve on a report with `monkeysee eval --report --curve OUT/curve.json`.\n\n\
Example:\n  monkeysee learning-curve --rig firmware-config/monkey-n.toml --data tvsd-size/dataset \
--rf-table tvsd-size/rf-table.csv --sizes 1000,4000,22248 --kinds spatial --epochs 8 --out curve"
)]
pub struct LearningCurveArgs {
    /// Rig config the dataset was recorded with.
    #[arg(long, value_name = "RIG.toml")]
    rig: PathBuf,
    /// Dataset folder with train and test splits.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Training images of each step: each kind is trained on the first N trials of the
    /// train split, for each N.
    #[arg(long, value_delimiter = ',', required = true, value_name = "N,N,...")]
    sizes: Vec<usize>,
    /// Decoder kinds to train at each size (the linear decoder comes with every size).
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_value = "spatial",
        value_name = "KIND,..."
    )]
    kinds: Vec<DecoderKind>,
    /// Go on with the curve in OUT that stopped: finished steps are kept, the training
    /// that was running continues from its last checkpoint (saved every epoch).
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    settings: TrainSettings,
}

/// The curve on the backend --device names.
struct Measure<'a>(&'a CurveOptions);

impl OnTrainBackend for Measure<'_> {
    type Output = anyhow::Result<Curve>;
    fn run<B: burn::tensor::backend::AutodiffBackend>(self, device: B::Device) -> Self::Output {
        learning_curve::run::<B>(self.0, &device)
    }
}

/// Measures the curve, then prints it as a table with the best decoder's margin over
/// the linear one.
pub fn run(args: LearningCurveArgs) -> anyhow::Result<()> {
    let (device, threads) = (args.settings.device, args.settings.threads);
    // Each run's kind and folder are set by the curve.
    let train = (args.settings).options(args.rig, args.data, PathBuf::new(), args.kinds[0])?;
    let opts = CurveOptions {
        train,
        kinds: args.kinds,
        sizes: args.sizes,
        out: args.out,
        resume: args.resume,
    };
    init_compute_threads(compute_threads(threads, PoolRole::Offline));
    print_perceptual_loss(&opts.train);
    let curve = dispatch_training(device, Measure(&opts))??;
    print_curve(&curve);
    println!("wrote {}/curve.json and curve.png", opts.out.display());
    Ok(())
}

/// Pixel r / identification per entry and size, and the margins.
fn print_curve(curve: &Curve) {
    print!("{:<16}", "images");
    for n in &curve.sizes {
        print!("{n:>16}");
    }
    println!();
    for (name, points) in curve.series() {
        print!("{name:<16}");
        for n in &curve.sizes {
            match points.iter().find(|p| p.images == *n) {
                Some(p) => print!("{:>16}", format!("{:.3} / {:.2}", p.pixel_r, p.ident_top1)),
                None => print!("{:>16}", "-"),
            }
        }
        println!();
    }
    println!(
        "(pixel r / {}-way identification on the test images)",
        curve.test_images
    );
    let margins: Vec<String> = curve
        .margins()
        .iter()
        .map(|(n, m)| format!("{n}: {m:+.3}"))
        .collect();
    println!("best decoder minus linear, pixel r: {}", margins.join(", "));
}
