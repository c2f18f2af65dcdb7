//! `monkeysee learning-curve`: how each decoder improves with training data, beside the
//! linear decoder fitted on the same images.
//!
//! For each size N (ascending) every decoder kind is trained on the first N trials of
//! the dataset's train split (`train`'s `max_trials`; a validation hold-out comes out
//! of those N), then `eval` scores them on the test split beside the linear decoders
//! fitted on the same N trials. The results go into `curve.json` ([`Curve`]) and
//! `curve.png` after every size, so a long run shows what it has so far.
//!
//! ```text
//! OUT/plan.json                 the sizes, kinds and training settings (a resumed run must match)
//! OUT/n<N>/<kind>/              each model, as `train` writes it (checkpoint every epoch)
//! OUT/n<N>/eval/                eval's metrics.json and grid.png for the size
//! OUT/n<N>/points.json          the size's scores
//! OUT/curve.json, OUT/curve.png
//! ```
//!
//! A killed run goes on with `resume`: finished trainings (`training.json` written) and
//! evaluations (`points.json`) are kept, and the training that was running continues
//! from its last checkpoint, its loss history carried over.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::decoder::DecoderKind;
use crate::eval::curve::{Curve, CurvePoint};
use crate::eval::EvalOptions;
use crate::train::{TrainOptions, TrainSummary};

/// What to measure.
pub struct CurveOptions {
    /// The training settings of every run (rig, data, width, epochs, losses, …); each
    /// run sets its own `out`, `kind`, `max_trials`, `resume` and `checkpoint_every`.
    pub train: TrainOptions,
    pub kinds: Vec<DecoderKind>,
    /// Training images of each step (sorted and deduplicated before use).
    pub sizes: Vec<usize>,
    pub out: PathBuf,
    /// Go on with a run in `out` that stopped.
    pub resume: bool,
}

/// `plan.json`: what a run in a folder measures.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Plan {
    sizes: Vec<usize>,
    kinds: Vec<String>,
    /// The training settings, without what each run sets itself.
    train: serde_json::Value,
}

/// The part of `train`'s `training.json` the curve reads.
#[derive(Deserialize)]
struct TrainingJson {
    summary: TrainSummary,
}

/// Fewest training images a step may have (the linear decoder chooses its λ on the
/// last fifth of them).
pub const MIN_SIZE: usize = 10;

/// Trains and scores every kind at every size (see the module docs); writes and returns
/// the curve.
pub fn run<B: AutodiffBackend>(opts: &CurveOptions, device: &B::Device) -> anyhow::Result<Curve> {
    let mut sizes = opts.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let ds = Dataset::open(&opts.train.data)?;
    check(opts, &sizes, ds.split(false).len(), ds.split(true).len())?;
    start_plan(opts, &sizes)?;
    let mut curve = Curve {
        data: opts.train.data.display().to_string(),
        test_images: crate::eval::test_images(&ds).len(),
        sizes: sizes.clone(),
        kinds: opts.kinds.iter().map(|k| k.name().to_string()).collect(),
        points: Vec::new(),
    };
    drop(ds);
    let runs = sizes.len() * opts.kinds.len();
    for (i, &n) in sizes.iter().enumerate() {
        let step = opts.out.join(format!("n{n}"));
        let points_path = step.join("points.json");
        let points: Vec<CurvePoint> = if points_path.exists() {
            read_json(&points_path)?
        } else {
            let mut trained = Vec::new();
            for (j, &kind) in opts.kinds.iter().enumerate() {
                let at = i * opts.kinds.len() + j + 1;
                trained.push(train_one::<B>(opts, kind, n, &step, (at, runs), device)?);
            }
            let points = evaluate(opts, n, &step, &trained)?;
            write_json(&points_path, &points)?;
            points
        };
        curve.points.extend(points);
        curve.save(&opts.out.join("curve.json"))?;
        curve.plot(&opts.out.join("curve.png"))?;
    }
    Ok(curve)
}

/// The sizes and kinds a run can measure on this dataset.
fn check(opts: &CurveOptions, sizes: &[usize], train: usize, test: usize) -> anyhow::Result<()> {
    if opts.kinds.is_empty() {
        bail!("give at least one decoder kind (--kinds spatial,end-to-end)");
    }
    let (Some(&smallest), Some(&largest)) = (sizes.first(), sizes.last()) else {
        bail!("give at least one size (--sizes 1000,4000)");
    };
    let least = MIN_SIZE.max(opts.train.batch + opts.train.validation);
    if smallest < least {
        bail!("--sizes {smallest}: each step needs at least {least} training images (a batch besides --validation, and {MIN_SIZE} for the linear decoder)");
    }
    if largest > train {
        bail!(
            "--sizes {largest}: {} has {train} training trials",
            opts.train.data.display()
        );
    }
    if test < 2 {
        bail!(
            "{} has {test} test trials; the curve is scored on the test split (simulate with --test-images N)",
            opts.train.data.display()
        );
    }
    Ok(())
}

/// Writes `plan.json`, or (resuming) checks that the run in the folder is this one.
fn start_plan(opts: &CurveOptions, sizes: &[usize]) -> anyhow::Result<()> {
    let mut train = opts.train.clone();
    train.out = PathBuf::new();
    train.kind = DecoderKind::Spatial;
    train.max_trials = None;
    train.resume = false;
    train.progress = false;
    let plan = Plan {
        sizes: sizes.to_vec(),
        kinds: opts.kinds.iter().map(|k| k.name().to_string()).collect(),
        train: serde_json::to_value(&train)?,
    };
    let path = opts.out.join("plan.json");
    match (path.exists(), opts.resume) {
        (true, false) => bail!(
            "{} holds a learning curve already: pass --resume to go on with it, or give a new --out",
            opts.out.display()
        ),
        (true, true) => {
            let saved: Plan = read_json(&path)?;
            if saved != plan {
                bail!(
                    "--resume: the curve in {} was started with other sizes, kinds or training settings; pass the same ones or give a new --out",
                    opts.out.display()
                );
            }
            Ok(())
        }
        (false, _) => {
            std::fs::create_dir_all(&opts.out)
                .with_context(|| format!("creating {}", opts.out.display()))?;
            write_json(&path, &plan)
        }
    }
}

/// A kind trained on the first `n` training trials (or the training done before).
fn train_one<B: AutodiffBackend>(
    opts: &CurveOptions,
    kind: DecoderKind,
    n: usize,
    step: &Path,
    (at, runs): (usize, usize),
    device: &B::Device,
) -> anyhow::Result<(DecoderKind, PathBuf, TrainSummary)> {
    let out = step.join(kind.name());
    let done = out.join("training.json");
    if done.exists() {
        let written: TrainingJson = read_json(&done)?;
        return Ok((kind, out, written.summary));
    }
    let resume = out.join("checkpoint").join("state.json").exists();
    if opts.train.progress {
        eprintln!(
            "learning curve [{at}/{runs}]: {kind} on {n} images{}",
            if resume {
                ", resumed from its checkpoint"
            } else {
                ""
            }
        );
    }
    let mut train = opts.train.clone();
    train.out = out.clone();
    train.kind = kind;
    train.max_trials = Some(n);
    train.resume = resume;
    train.checkpoint_every = 1;
    let summary = crate::train::train::<B>(&train, device)
        .with_context(|| format!("training {kind} on {n} images"))?;
    Ok((kind, out, summary))
}

/// The size's models and linear decoders scored on the test split.
fn evaluate(
    opts: &CurveOptions,
    n: usize,
    step: &Path,
    trained: &[(DecoderKind, PathBuf, TrainSummary)],
) -> anyhow::Result<Vec<CurvePoint>> {
    if opts.train.progress {
        eprintln!("learning curve: scoring the models on {n} images and fitting the linear decoder on them");
    }
    let report = crate::eval::eval(&EvalOptions {
        models: trained.iter().map(|(_, dir, _)| dir.clone()).collect(),
        data: opts.train.data.clone(),
        rig: opts.train.rig.clone(),
        out: step.join("eval"),
        grid_images: 8,
        rf_truth: None,
        report: false,
        alexnet: None,
        progress: opts.train.progress,
        train_trials: Some(n),
        curve: None,
    })?;
    let mut points = Vec::new();
    for (kind, _, summary) in trained {
        let m = report
            .get(kind.name())
            .with_context(|| format!("eval has no {kind} entry"))?;
        points.push(CurvePoint {
            train_seconds: Some(summary.epochs.iter().map(|e| e.seconds).sum()),
            epochs: Some(summary.epochs.len()),
            saved_epoch: Some(summary.saved_epoch),
            ..CurvePoint::of(kind.name(), n, m)
        });
    }
    let linear = report
        .get("linear")
        .context("eval fitted no linear decoder")?;
    points.push(CurvePoint::of("linear", n, linear));
    Ok(points)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))
}

/// `value` as `path`, its folder created.
fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::train::write_json(path, value)
}
