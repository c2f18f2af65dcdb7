//! `monkeysee eval`: how well models reconstruct a dataset's test images, beside the
//! simplest decoder that does the same job.
//!
//! For each test image a model decodes the mean of its repeats' features (the paper's test
//! protocol; the features are linear in the responses, so this is the decoding of the
//! averaged response), and, separately, every single trial (the online case). Scores per
//! entry ([`Scores`]): pixel correlation (Pearson r over the RGB pixels of reconstruction
//! and original, averaged over images), SSIM (mean over the R, G, B planes of
//! `image-compare`'s MSSIM), identification (whether a reconstruction correlates best with
//! its own stimulus among all test stimuli: `ident_top1`, chance 1/n; and over all pairs of
//! stimuli, `ident_2way`, chance ½), and chance levels for r and SSIM from shuffled
//! pairings (each reconstruction against the other test images).
//!
//! Beside the models, the **linear decoder** ([`crate::decoder::linear`]): ridge regression
//! from the TW-15 window means (one value per electrode, z-scored over the presentations
//! of its session, a recording day, as `train` does; the test trials' inputs as the
//! daemon computes them) to the pixels, fitted on the dataset's train split with λ
//! chosen on its last fifth; `linear` uses every electrode, `linear_V1`, `linear_V4` and
//! `linear_IT` one area's.
//! A dataset without a train split gets no linear entries (a note says so).
//!
//! For a model with learned Gaussian RFs, the learned centres are compared with the
//! simulator's ground truth (`rf-truth.csv` beside the dataset) per area ([`RfRecovery`]):
//! correlation with the truth (overall and within each array), error, how far they moved,
//! and whether the moves point at the truth beside random moves of the same sizes.
//!
//! With `--report` ([`report`]) the paper's analyses follow: AlexNet feature correlation,
//! occlusion per area and window, colourfulness, learned RFs, relative correlations and
//! area-restricted models, on one page (`report.html`).
//!
//! Output: `metrics.json` (one entry per model and linear decoder, plus `notes`) and
//! `grid.png` (Figure-1 style: the stimulus, then each model's and the linear decoder's
//! reconstruction).

pub mod analysis;
pub mod curve;
pub mod figures;
pub mod occlusion;
pub mod report;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::config::RigConfig;
use crate::config::{decoder_config, window_set};
use crate::dataset::Dataset;
use crate::decoder::{CpuBackend, Decoder};
use crate::eval::analysis::RfDeg;
use crate::norm::NormStats;
use crate::rf::RfTable;
use crate::units::Area;

pub struct EvalOptions {
    pub models: Vec<PathBuf>,
    pub data: PathBuf,
    /// The rig; default: the one the dataset's `dataset.json` names (`rig_config`).
    pub rig: Option<RigConfig>,
    pub out: PathBuf,
    /// Test images shown in the grid.
    pub grid_images: usize,
    /// Ground-truth RFs; default: `rf-truth.csv` beside the dataset folder.
    pub rf_truth: Option<PathBuf>,
    /// Also run the paper's analyses and write `report.html` ([`report`]).
    pub report: bool,
    /// torchvision's AlexNet file, for the report's feature correlations.
    pub alexnet: Option<PathBuf>,
    /// Show a progress bar on long steps.
    pub progress: bool,
    /// Fit the linear decoders on the first this many trials of the train split only
    /// (a learning curve's step); `None`: all of them.
    pub train_trials: Option<usize>,
    /// A learning curve (`curve.json`) to show on the report page.
    pub curve: Option<PathBuf>,
}

/// How well learned RF centres recover the truth, per area (degrees of visual angle).
#[derive(Clone, Debug, Serialize)]
pub struct RfRecovery {
    pub electrodes: usize,
    pub r_x: f64,
    pub r_y: f64,
    /// Pearson r of learned and true centres within each array (x and y pooled after
    /// removing the array's mean), averaged over the area's arrays: the fine layout that
    /// the array's position alone does not give.
    pub within_array_r: f64,
    /// Mean distance between learned and true centres, degrees.
    pub mean_error_deg: f64,
    /// The same for the centres training started from (the decoder's RF table).
    pub initial_r_x: f64,
    pub initial_r_y: f64,
    pub initial_within_array_r: f64,
    pub initial_mean_error_deg: f64,
    /// Mean distance each centre moved in training, degrees.
    pub mean_shift_deg: f64,
    /// Share of electrodes whose learned centre is closer to the truth than the start.
    pub fraction_closer: f64,
    /// Mean projection of each move on the unit vector from its start to the truth, degrees
    /// (positive: toward the truth).
    pub mean_projection_deg: f64,
    /// The null: every electrode moved by its own distance in a random direction
    /// (1000 draws). Mean and 95th percentile of the share that ends closer, and of the mean
    /// projection; a learned layer that finds the truth lies above both percentiles.
    pub null_fraction_closer: f64,
    pub null_fraction_closer_p95: f64,
    pub null_mean_projection_deg: f64,
    pub null_mean_projection_p95_deg: f64,
}

/// The scores of one entry (a model or a linear decoder) on the test images.
#[derive(Clone, Debug, Serialize)]
pub struct Scores {
    pub pixel_r: f64,
    pub pixel_r_chance: f64,
    pub ssim: f64,
    pub ssim_chance: f64,
    /// Share of test images whose reconstruction correlates best with its own stimulus
    /// among all `n_images` (n-way identification).
    pub ident_top1: f64,
    /// 1 / n_images.
    pub ident_top1_chance: f64,
    /// Share of (image, other image) pairs where the reconstruction correlates more with
    /// its own stimulus (2-way identification).
    pub ident_2way: f64,
    /// 0.5.
    pub ident_2way_chance: f64,
    pub n_images: usize,
    pub single_trial_pixel_r: f64,
    pub single_trial_pixel_r_chance: f64,
    pub single_trial_ident_top1: f64,
    pub single_trial_ident_2way: f64,
    pub single_trials: usize,
}

/// What was fitted for a linear entry.
#[derive(Clone, Debug, Serialize)]
pub struct LinearInfo {
    /// The areas whose electrodes it reads.
    pub areas: Vec<String>,
    pub electrodes: usize,
    /// What each electrode contributes.
    pub features: String,
    pub train_trials: usize,
    /// The last trials of the train split, on which λ was chosen.
    pub validation_trials: usize,
    pub lambda: f64,
    /// λ over the mean eigenvalue of XᵀX.
    pub relative_lambda: f64,
    pub path: Vec<crate::decoder::linear::PathPoint>,
}

/// One entry of `metrics.json`.
#[derive(Clone, Debug, Serialize)]
pub struct ModelMetrics {
    /// The key in `metrics.json`: the model folder's name, or `linear`, `linear_V1`, ….
    #[serde(skip)]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// The decoder kind, or `linear`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<usize>,
    #[serde(flatten)]
    pub scores: Scores,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linear: Option<LinearInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rf_recovery: Option<BTreeMap<String, RfRecovery>>,
}

/// What `eval` measured.
#[derive(Clone, Debug)]
pub struct EvalReport {
    /// Models in the order given, then the linear decoders.
    pub entries: Vec<ModelMetrics>,
    /// What was left out and why.
    pub notes: Vec<String>,
    /// The analyses of `--report`.
    pub report: Option<report::ReportSummary>,
}

impl EvalReport {
    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&ModelMetrics> {
        self.entries.iter().find(|m| m.name == name)
    }
}

pub use crate::decoder::linear::pearson;

/// Mean SSIM of the R, G and B planes (`image-compare`'s MSSIM on 8-bit planes; its
/// own RGB variant reports the worst channel, not the mean).
fn ssim(a: &[f32], b: &[f32], size: usize) -> f64 {
    let plane = |img: &[f32], c: usize| {
        let px = img[c * size * size..(c + 1) * size * size]
            .iter()
            .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        image::GrayImage::from_raw(size as u32, size as u32, px).expect("size × size plane")
    };
    (0..3)
        .map(|c| {
            image_compare::gray_similarity_structure(
                &image_compare::Algorithm::MSSIMSimple,
                &plane(a, c),
                &plane(b, c),
            )
            .map_or(f64::NAN, |s| s.score)
        })
        .sum::<f64>()
        / 3.0
}

/// Mean of `f(i, j)` over pairings of each i with up to 20 other images (cyclic shifts).
fn shuffled(n: usize, f: impl Fn(usize, usize) -> f64) -> f64 {
    let shifts = (n - 1).min(20);
    let mut sum = 0.0;
    for k in 1..=shifts {
        for i in 0..n {
            sum += f(i, (i + k) % n);
        }
    }
    sum / (shifts * n).max(1) as f64
}

/// n-way and 2-way identification from correlations `corr[i][j]` between reconstruction i
/// and stimulus j, reconstruction i's own stimulus being `truth[i]`.
pub fn identification(corr: &[Vec<f64>], truth: &[usize]) -> (f64, f64) {
    let (mut top1, mut pairs, mut won) = (0usize, 0usize, 0usize);
    for (row, &t) in corr.iter().zip(truth) {
        let own = row[t];
        if row.iter().enumerate().all(|(j, &c)| j == t || c < own) {
            top1 += 1;
        }
        for (j, &c) in row.iter().enumerate() {
            if j != t {
                pairs += 1;
                won += usize::from(own > c);
            }
        }
    }
    (
        top1 as f64 / corr.len().max(1) as f64,
        won as f64 / pairs.max(1) as f64,
    )
}

/// The scores of repeat-averaged reconstructions `recons[i]` of `originals[i]`.
struct Averaged {
    /// `corr[i][j]`: Pearson r of reconstruction i and original j.
    corr: Vec<Vec<f64>>,
    pixel_r: f64,
    ssim: f64,
    ident_top1: f64,
    ident_2way: f64,
}

fn averaged_scores(recons: &[Vec<f32>], originals: &[Vec<f32>], size: usize) -> Averaged {
    let n = recons.len();
    let corr: Vec<Vec<f64>> = recons
        .iter()
        .map(|r| originals.iter().map(|o| pearson(r, o)).collect())
        .collect();
    let (ident_top1, ident_2way) = identification(&corr, &(0..n).collect::<Vec<_>>());
    let pixel_r = (0..n).map(|i| corr[i][i]).sum::<f64>() / n.max(1) as f64;
    let ssim = (0..n)
        .map(|i| ssim(&recons[i], &originals[i], size))
        .sum::<f64>()
        / n.max(1) as f64;
    Averaged {
        corr,
        pixel_r,
        ssim,
        ident_top1,
        ident_2way,
    }
}

/// Scores of repeat-averaged reconstructions `recons[i]` (of test image i) and single-trial
/// ones `(image index, reconstruction)` against `originals`.
fn score(
    recons: &[Vec<f32>],
    single: &[(usize, Vec<f32>)],
    originals: &[Vec<f32>],
    size: usize,
) -> Scores {
    let n = recons.len();
    let mean = |v: &mut dyn Iterator<Item = f64>, k: usize| v.sum::<f64>() / k.max(1) as f64;
    let averaged = averaged_scores(recons, originals, size);
    let corr = &averaged.corr;
    let single_corr: Vec<Vec<f64>> = single
        .iter()
        .map(|(_, r)| originals.iter().map(|o| pearson(r, o)).collect())
        .collect();
    let single_truth: Vec<usize> = single.iter().map(|(k, _)| *k).collect();
    let (st_top1, st_2way) = identification(&single_corr, &single_truth);
    Scores {
        pixel_r: averaged.pixel_r,
        pixel_r_chance: shuffled(n, |i, j| corr[i][j]),
        ssim: averaged.ssim,
        ssim_chance: shuffled(n, |i, j| ssim(&recons[i], &originals[j], size)),
        ident_top1: averaged.ident_top1,
        ident_top1_chance: 1.0 / n.max(1) as f64,
        ident_2way: averaged.ident_2way,
        ident_2way_chance: 0.5,
        n_images: n,
        single_trial_pixel_r: mean(
            &mut single_corr.iter().zip(&single_truth).map(|(c, &k)| c[k]),
            single.len(),
        ),
        single_trial_pixel_r_chance: mean(
            &mut single_corr
                .iter()
                .zip(&single_truth)
                .map(|(c, &k)| c[(k + 1) % n]),
            single.len(),
        ),
        single_trial_ident_top1: st_top1,
        single_trial_ident_2way: st_2way,
        single_trials: single.len(),
    }
}

/// The test split grouped by image: image index → its trials, in image order.
pub(crate) fn test_images(ds: &Dataset) -> BTreeMap<usize, Vec<usize>> {
    let mut by_image: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for t in ds.split(true) {
        by_image.entry(ds.trial_image[t]).or_default().push(t);
    }
    by_image
}

/// The test trials' inputs as the daemon computes them live
/// ([`Dataset::online_features`]).
struct OnlineInputs {
    slot: HashMap<usize, usize>,
    features: Vec<Vec<f32>>,
}

impl OnlineInputs {
    fn new(
        ds: &Dataset,
        by_image: &BTreeMap<usize, Vec<usize>>,
        rig: &RigConfig,
        set: crate::config::WindowSetKind,
        prior: &crate::norm::NormStats,
    ) -> OnlineInputs {
        let wanted: Vec<usize> = by_image.values().flatten().copied().collect();
        OnlineInputs {
            features: ds.online_features(&wanted, rig, set, prior),
            slot: wanted.iter().enumerate().map(|(k, &t)| (t, k)).collect(),
        }
    }

    fn of(&self, t: usize) -> Vec<f32> {
        self.features[self.slot[&t]].clone()
    }
}

/// Repeat-averaged and single-trial reconstructions of the test images by `decode`
/// (features `[windows][electrodes]` → image), features from `features(trial)`.
#[allow(clippy::type_complexity)]
fn reconstruct_tests(
    by_image: &BTreeMap<usize, Vec<usize>>,
    n_features: usize,
    mut features: impl FnMut(usize) -> Vec<f32>,
    mut decode: impl FnMut(&[f32], usize) -> anyhow::Result<Vec<f32>>,
) -> anyhow::Result<(Vec<Vec<f32>>, Vec<(usize, Vec<f32>)>)> {
    let mut averaged = Vec::with_capacity(by_image.len());
    let mut single_features = Vec::new();
    let mut single_image = Vec::new();
    for (k, trials) in by_image.values().enumerate() {
        let mut mean = vec![0.0f32; n_features];
        for &t in trials {
            let f = features(t);
            for (m, v) in mean.iter_mut().zip(&f) {
                *m += v / trials.len() as f32;
            }
            single_features.extend_from_slice(&f);
            single_image.push(k);
        }
        averaged.extend_from_slice(&mean);
    }
    let avg = decode(&averaged, by_image.len())?;
    let image_len = avg.len() / by_image.len().max(1);
    let single = decode(&single_features, single_image.len())?;
    Ok((
        avg.chunks_exact(image_len).map(<[f32]>::to_vec).collect(),
        single_image
            .into_iter()
            .zip(single.chunks_exact(image_len).map(<[f32]>::to_vec))
            .collect(),
    ))
}

/// Scores every model and the linear decoders on the dataset's test images and writes
/// `metrics.json` and `grid.png` (see the module docs).
pub fn eval(opts: &EvalOptions) -> anyhow::Result<EvalReport> {
    if opts.models.is_empty() {
        bail!("give at least one --model DIR");
    }
    let mut names: Vec<String> = opts.models.iter().map(|d| model_name(d)).collect();
    names.sort();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        bail!(
            "two --model folders are named {}: their entries in metrics.json and their figures would overwrite each other; give them different folder names",
            w[0]
        );
    }
    let ds = Dataset::open(&opts.data)?;
    let rig = &eval_rig(opts, &ds)?;
    let alexnet = match (&opts.alexnet, opts.report) {
        (Some(p), true) => Some(
            crate::alexnet::AlexNet::<CpuBackend>::load(p, &Default::default())
                .with_context(|| format!("--alexnet {}", p.display()))?,
        ),
        _ => None,
    };
    let curve = (opts.curve.as_deref().filter(|_| opts.report))
        .map(curve::Curve::load)
        .transpose()?;
    ds.check_rig(rig)?;
    let by_image = test_images(&ds);
    if by_image.len() < 2 {
        bail!(
            "{} has {} test images; eval needs at least 2 (simulate with --test-images N)",
            ds.dir.display(),
            by_image.len()
        );
    }
    let tests = TestImages {
        originals: by_image.keys().map(|&i| ds.image_chw(i)).collect(),
        by_image,
        truth: rf_truth(opts, &ds)?,
        ds: &ds,
        rig,
    };
    let mut entries = Vec::new();
    let mut recons: Vec<Vec<Vec<f32>>> = Vec::new();
    let mut models = Vec::new();
    for dir in &opts.models {
        let (entry, averaged, model) = tests.evaluate_model(dir)?;
        entries.push(entry);
        recons.push(averaged);
        // Only the report reads them again: without it one decoder is held at a time.
        if opts.report {
            models.push(model);
        }
    }
    let mut notes = Vec::new();
    let mut titles: Vec<String> = entries.iter().map(|m| m.name.clone()).collect();
    let mut linear_recons = None;
    match linear_entries(&ds, rig, &tests, opts.train_trials)? {
        Some(linear) => {
            for (entry, averaged) in linear {
                if entry.name == "linear" {
                    titles.push(entry.name.clone());
                    recons.push(averaged.clone());
                    linear_recons = Some(averaged);
                }
                entries.push(entry);
            }
        }
        None => notes.push(format!(
            "no linear decoder: {} has no train split to fit it on (trial_split.npy has no 0)",
            ds.dir.display()
        )),
    }
    write_metrics(&opts.out, &entries, &notes)?;
    let rows = tests.originals.len().min(opts.grid_images);
    let (grid, size) = (opts.out.join("grid.png"), ds.meta.image_size);
    crate::plot::stimulus_grid(&grid, titles, &tests.originals, &recons, rows, size, 2)?;
    let report = if opts.report {
        Some(report::write(&report::Inputs {
            tests: &tests,
            models: &models,
            entries: &entries,
            recons: &recons[..opts.models.len()],
            linear: linear_recons.as_deref(),
            alexnet: alexnet.as_ref(),
            curve: curve.as_ref(),
            out: &opts.out,
            grid_images: opts.grid_images,
            progress: opts.progress,
        })?)
    } else {
        None
    };
    Ok(EvalReport {
        entries,
        notes,
        report,
    })
}

/// The rig to evaluate with: the one given, or the one the dataset names.
fn eval_rig(opts: &EvalOptions, ds: &Dataset) -> anyhow::Result<RigConfig> {
    if let Some(rig) = &opts.rig {
        return Ok(rig.clone());
    }
    let path = ds.meta.rig_config.as_ref().with_context(|| {
        format!(
            "{}/dataset.json names no rig_config; give the rig",
            ds.dir.display()
        )
    })?;
    Ok(RigConfig::load(path)?)
}

/// The ground-truth RFs, when the file (given, or `rf-truth.csv` beside the dataset
/// folder) exists.
fn rf_truth(opts: &EvalOptions, ds: &Dataset) -> anyhow::Result<Option<RfTable>> {
    let truth_path = opts
        .rf_truth
        .clone()
        .unwrap_or_else(|| ds.dir.join("..").join("rf-truth.csv"));
    Ok(truth_path
        .exists()
        .then(|| RfTable::load(&truth_path))
        .transpose()?)
}

/// A model as [`TestImages::evaluate_model`] loaded it, kept for the report.
struct LoadedModel {
    decoder: Decoder<CpuBackend>,
    stats: NormStats,
    /// A learned-RF model's RFs.
    rfs: Option<RfSets>,
}

/// The dataset's test images, what every model is scored on.
struct TestImages<'a> {
    ds: &'a Dataset,
    rig: &'a RigConfig,
    /// Each test image's trials, by image row.
    by_image: BTreeMap<usize, Vec<usize>>,
    /// The images, `[3][H][W]`, in `by_image`'s order.
    originals: Vec<Vec<f32>>,
    truth: Option<RfTable>,
}

impl TestImages<'_> {
    /// Loads the model in `dir`, checks it against the rig and the dataset, and scores
    /// its reconstructions; returns its entry, its repeat-averaged reconstructions and
    /// the model.
    fn evaluate_model(
        &self,
        dir: &Path,
    ) -> anyhow::Result<(ModelMetrics, Vec<Vec<f32>>, LoadedModel)> {
        let (ds, rig) = (self.ds, self.rig);
        let device = Default::default();
        let decoder = Decoder::<CpuBackend>::load(dir, &device)
            .with_context(|| format!("loading model {}", dir.display()))?;
        let cfg = decoder.config().clone();
        decoder
            .check_matches(&decoder_config(rig, cfg.kind, cfg.width))
            .with_context(|| {
                format!(
                    "model {} does not fit rig {}",
                    dir.display(),
                    rig.path.display()
                )
            })?;
        let set = window_set(cfg.kind);
        if ds.meta.time_averaged && set != crate::config::WindowSetKind::Tw15 {
            bail!(
                "{} is time-averaged (one value per electrode): it has no time windows for the {} model {}",
                ds.dir.display(),
                cfg.kind,
                dir.display()
            );
        }
        let stats = NormStats::load(dir, rig.windows.windows_per_electrode(set), rig.electrodes.len())?.with_context(|| {
            format!("{} has no normalization.json (the training statistics); retrain with monkeysee train", dir.display())
        })?;
        // The inputs the daemon would compute live: its estimator, started from the
        // model's statistics, over the session's presentations in onset order.
        let online = OnlineInputs::new(ds, &self.by_image, rig, set, &stats);
        let (averaged, single) = reconstruct_tests(
            &self.by_image,
            cfg.n_features(),
            |t| online.of(t),
            |features, n| {
                let mut out = vec![0.0f32; n * cfg.image_len()];
                for (f, o) in features
                    .chunks_exact(cfg.n_features())
                    .zip(out.chunks_exact_mut(cfg.image_len()))
                {
                    decoder.reconstruct(f, o)?;
                }
                Ok(out)
            },
        )?;
        let rfs = decoder.model().gaussian.as_ref();
        let rfs = rfs.map(|layer| rf_sets(self, layer, &cfg)).transpose()?;
        let with_truth = rfs.as_ref().filter(|_| self.truth.is_some());
        let entry = ModelMetrics {
            name: model_name(dir),
            model: Some(dir.to_path_buf()),
            kind: cfg.kind.to_string(),
            width: Some(cfg.width),
            scores: score(&averaged, &single, &self.originals, ds.meta.image_size),
            linear: None,
            rf_recovery: with_truth.map(rf_recovery),
        };
        Ok((
            entry,
            averaged,
            LoadedModel {
                decoder,
                stats,
                rfs,
            },
        ))
    }
}

/// Writes `out/metrics.json`: one entry per model and linear decoder, and the notes.
fn write_metrics(out: &Path, entries: &[ModelMetrics], notes: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut json = serde_json::Map::new();
    for m in entries {
        json.insert(m.name.clone(), serde_json::to_value(m)?);
    }
    if !notes.is_empty() {
        json.insert("notes".into(), serde_json::to_value(notes)?);
    }
    let p = out.join("metrics.json");
    std::fs::write(&p, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", p.display()))
}

/// The linear decoders (all electrodes, then each area's) fitted on the train split and
/// scored on the test images, each with its repeat-averaged reconstructions; `None`
/// without a train split.
#[allow(clippy::type_complexity)]
fn linear_entries(
    ds: &Dataset,
    rig: &RigConfig,
    tests: &TestImages<'_>,
    train_trials: Option<usize>,
) -> anyhow::Result<Option<Vec<(ModelMetrics, Vec<Vec<f32>>)>>> {
    let (by_image, originals) = (&tests.by_image, &tests.originals);
    let mut train = ds.split(false);
    train.truncate(train_trials.unwrap_or(usize::MAX));
    if train.len() < 10 {
        return Ok(None);
    }
    let size = ds.meta.image_size;
    let q = 3 * size * size;
    let set = crate::config::WindowSetKind::Tw15;
    // As `train` does: each session's (recording day's) statistics over all its
    // presentations for the fit, and for the test trials the daemon's estimator started
    // from their average.
    let sessions = ds.sessions();
    let mut session_of = vec![0; ds.n_trials()];
    let own: Vec<NormStats> = (sessions.iter().enumerate())
        .map(|(k, trials)| {
            trials.iter().for_each(|&t| session_of[t] = k);
            ds.norm_stats(trials, rig, set)
        })
        .collect();
    let measured: Vec<NormStats> = (own.iter().filter(|s| s.presentations >= 2).cloned()).collect();
    let stats = NormStats::average(if measured.is_empty() { &own } else { &measured });
    let features_of = |t: usize| {
        let session = &own[session_of[t]];
        let mut f = Vec::new();
        let usable = session.presentations >= 2;
        ds.features(t, rig, set, if usable { session } else { &stats }, &mut f);
        f
    };
    let online = OnlineInputs::new(ds, by_image, rig, set, &stats);
    let p_all = rig.electrodes.len();
    let mut x_all = Vec::with_capacity(train.len() * p_all);
    let mut y = Vec::with_capacity(train.len() * q);
    for &t in &train {
        x_all.extend(features_of(t));
        y.extend(ds.image_chw(ds.trial_image[t]));
    }
    let validation = train.len() / 5;
    let mut subsets: Vec<(String, Vec<Area>)> = vec![("linear".into(), Area::ALL.to_vec())];
    for area in Area::ALL {
        subsets.push((format!("linear_{}", area.name()), vec![area]));
    }
    // The early areas together: what a pixel map in IT is measured against.
    subsets.push(("linear_V1+V4".into(), vec![Area::V1, Area::V4]));
    let mut out = Vec::new();
    for (name, areas) in subsets {
        let cols: Vec<usize> = (0..p_all)
            .filter(|&e| areas.contains(&rig.electrodes[e].area))
            .collect();
        if cols.is_empty() {
            continue;
        }
        let p = cols.len();
        let pick = |f: &[f32]| -> Vec<f32> { cols.iter().map(|&e| f[e]).collect() };
        let x: Vec<f32> = x_all.chunks_exact(p_all).flat_map(pick).collect();
        let (decoder, path) = crate::decoder::linear::fit_validated(
            &x,
            &y,
            (train.len(), p, q),
            validation,
            Some((0.0, 1.0)),
        );
        let (averaged, single) = reconstruct_tests(
            by_image,
            p,
            |t| pick(&online.of(t)),
            |f, m| {
                let mut pred = decoder.predict(f, m);
                pred.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
                Ok(pred)
            },
        )?;
        let entry = ModelMetrics {
            name,
            model: None,
            kind: "linear".into(),
            width: None,
            scores: score(&averaged, &single, originals, size),
            linear: Some(LinearInfo {
                areas: areas.iter().map(|a| a.name().to_string()).collect(),
                electrodes: p,
                features:
                    "TW-15 window mean per electrode, z-scored per electrode over the presentations of its session (recording day), as train does (the daemon's estimator for the test trials)"
                        .into(),
                train_trials: train.len(),
                validation_trials: validation,
                lambda: decoder.lambda,
                relative_lambda: decoder.relative_lambda,
                path,
            }),
            rf_recovery: None,
        };
        out.push((entry, averaged));
    }
    Ok(Some(out))
}

fn model_name(dir: &Path) -> String {
    dir.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// A learned RF layer's RFs in degrees: learned, where training started, and the truth
/// (when known), with each electrode's array and area.
struct RfSets {
    pub learned: Vec<RfDeg>,
    pub start: Vec<RfDeg>,
    pub truth: Vec<Option<RfDeg>>,
    pub array: Vec<usize>,
    pub area: Vec<Area>,
    pub arrays: usize,
}

impl RfSets {
    /// The learned, start and true RFs of the electrodes `keep` picks.
    pub fn select(&self, keep: impl Fn(usize) -> bool) -> [Vec<RfDeg>; 3] {
        let pick = |set: &[RfDeg]| {
            (0..set.len())
                .filter(|&e| keep(e))
                .map(|e| set[e])
                .collect()
        };
        let truth = (0..self.truth.len())
            .filter(|&e| keep(e))
            .filter_map(|e| self.truth[e])
            .collect();
        [pick(&self.learned), pick(&self.start), truth]
    }
}

/// A learned RF layer's RFs in degrees, beside where they started and the truth.
fn rf_sets(
    t: &TestImages<'_>,
    layer: &crate::decoder::GaussianRfLayer<CpuBackend>,
    cfg: &crate::decoder::DecoderConfig,
) -> anyhow::Result<RfSets> {
    let host = |t: burn::tensor::Tensor<CpuBackend, 1>| -> anyhow::Result<Vec<f32>> {
        t.into_data().to_vec().map_err(|e| anyhow::anyhow!("{e:?}"))
    };
    let (mx, my, sg) = (
        host(layer.mu_x.val())?,
        host(layer.mu_y.val())?,
        host(layer.sigma())?,
    );
    let (c, ppd) = (t.rig.image_size as f64 / 2.0, t.rig.rf.pixels_per_degree);
    let deg = |x: f32, y: f32, s: f32| RfDeg {
        x: (x as f64 - c) / ppd,
        y: (c - y as f64) / ppd,
        sigma: s as f64 / ppd,
    };
    let start = crate::decoder::input::initial_rfs(cfg);
    let truth = |channel: usize| {
        let rf = t.truth.as_ref()?.get(channel)?;
        Some(RfDeg {
            x: rf.x_deg,
            y: rf.y_deg,
            sigma: rf.size_deg,
        })
    };
    Ok(RfSets {
        learned: (0..mx.len()).map(|e| deg(mx[e], my[e], sg[e])).collect(),
        start: start.iter().map(|s| deg(s[0], s[1], s[2])).collect(),
        truth: t.rig.electrodes.iter().map(|e| truth(e.channel)).collect(),
        array: cfg.electrodes.iter().map(|e| e.array).collect(),
        area: t.rig.electrodes.iter().map(|e| e.area).collect(),
        arrays: cfg.n_arrays,
    })
}

/// Learned vs true RF centres per area (degrees), for the electrodes whose truth is
/// known.
fn rf_recovery(rfs: &RfSets) -> BTreeMap<String, RfRecovery> {
    let mut out = BTreeMap::new();
    for area in Area::ALL {
        let mut centres = RfCentres::default();
        for e in (0..rfs.area.len()).filter(|&e| rfs.area[e] == area) {
            if let Some(t) = rfs.truth[e] {
                let (l, s) = (rfs.learned[e], rfs.start[e]);
                centres.learned.push([l.x, l.y]);
                centres.start.push([s.x, s.y]);
                centres.truth.push([t.x, t.y]);
                centres.array.push(rfs.array[e]);
            }
        }
        if centres.learned.len() >= 3 {
            out.insert(area.name().to_string(), centres.recovery());
        }
    }
    out
}

/// One area's centres (degrees): learned, where training started, true; and each
/// electrode's array.
#[derive(Default)]
struct RfCentres {
    learned: Vec<[f64; 2]>,
    start: Vec<[f64; 2]>,
    truth: Vec<[f64; 2]>,
    array: Vec<usize>,
}

fn distance(a: [f64; 2], b: [f64; 2]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

impl RfCentres {
    fn axis(points: &[[f64; 2]], k: usize) -> Vec<f32> {
        points.iter().map(|p| p[k] as f32).collect()
    }

    /// Mean over arrays of the correlation of `points` and the truth within the array
    /// (x and y pooled, each array's means removed).
    fn within_array_r(&self, points: &[[f64; 2]]) -> f64 {
        let mut arrays: Vec<usize> = self.array.clone();
        arrays.sort_unstable();
        arrays.dedup();
        mean(arrays.iter().filter_map(|&a| {
            let idx: Vec<usize> = (0..points.len()).filter(|&i| self.array[i] == a).collect();
            if idx.len() < 3 {
                return None;
            }
            let centred = |src: &[[f64; 2]]| -> Vec<f32> {
                let m = [0, 1].map(|k| mean(idx.iter().map(|&i| src[i][k])));
                [0, 1]
                    .iter()
                    .flat_map(|&k| idx.iter().map(move |&i| (src[i][k] - m[k]) as f32))
                    .collect()
            };
            Some(pearson(&centred(points), &centred(&self.truth)))
        }))
    }

    fn recovery(&self) -> RfRecovery {
        let n = self.learned.len();
        let shift: Vec<f64> = (0..n)
            .map(|i| distance(self.learned[i], self.start[i]))
            .collect();
        let to_truth = |i: usize| -> [f64; 2] {
            let d = [
                self.truth[i][0] - self.start[i][0],
                self.truth[i][1] - self.start[i][1],
            ];
            let len = (d[0] * d[0] + d[1] * d[1]).sqrt().max(1e-12);
            [d[0] / len, d[1] / len]
        };
        let projection = |i: usize, step: [f64; 2]| -> f64 {
            let u = to_truth(i);
            step[0] * u[0] + step[1] * u[1]
        };
        let closer = |i: usize, end: [f64; 2]| {
            distance(end, self.truth[i]) < distance(self.start[i], self.truth[i])
        };
        // The null: the same step lengths in random directions.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0x5EED);
        let (mut null_closer, mut null_proj) = (Vec::new(), Vec::new());
        for _ in 0..1000 {
            let (mut c, mut p) = (0.0, 0.0);
            for (i, &len) in shift.iter().enumerate() {
                let angle = rand::Rng::random_range(&mut rng, 0.0..std::f64::consts::TAU);
                let step = [len * angle.cos(), len * angle.sin()];
                let end = [self.start[i][0] + step[0], self.start[i][1] + step[1]];
                c += f64::from(u8::from(closer(i, end)));
                p += projection(i, step);
            }
            null_closer.push(c / n as f64);
            null_proj.push(p / n as f64);
        }
        let p95 = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[(v.len() * 95 / 100).min(v.len() - 1)]
        };
        RfRecovery {
            electrodes: n,
            r_x: pearson(&Self::axis(&self.learned, 0), &Self::axis(&self.truth, 0)),
            r_y: pearson(&Self::axis(&self.learned, 1), &Self::axis(&self.truth, 1)),
            within_array_r: self.within_array_r(&self.learned),
            mean_error_deg: mean((0..n).map(|i| distance(self.learned[i], self.truth[i]))),
            initial_r_x: pearson(&Self::axis(&self.start, 0), &Self::axis(&self.truth, 0)),
            initial_r_y: pearson(&Self::axis(&self.start, 1), &Self::axis(&self.truth, 1)),
            initial_within_array_r: self.within_array_r(&self.start),
            initial_mean_error_deg: mean((0..n).map(|i| distance(self.start[i], self.truth[i]))),
            mean_shift_deg: mean(shift.iter().copied()),
            fraction_closer: mean((0..n).map(|i| f64::from(u8::from(closer(i, self.learned[i]))))),
            mean_projection_deg: mean((0..n).map(|i| {
                projection(
                    i,
                    [
                        self.learned[i][0] - self.start[i][0],
                        self.learned[i][1] - self.start[i][1],
                    ],
                )
            })),
            null_fraction_closer: mean(null_closer.iter().copied()),
            null_fraction_closer_p95: p95(&mut null_closer),
            null_mean_projection_deg: mean(null_proj.iter().copied()),
            null_mean_projection_p95_deg: p95(&mut null_proj),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Correlations of reconstructions that equal their stimuli (plus a little of the next).
    fn near_identity(n: usize) -> Vec<Vec<f64>> {
        (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| match (j + n - i) % n {
                        0 => 0.9,
                        1 => 0.3,
                        _ => 0.1 * ((i * 7 + j * 3) % 5) as f64 / 5.0,
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn perfect_reconstructions_are_always_identified() {
        let corr = near_identity(6);
        let truth: Vec<usize> = (0..6).collect();
        assert_eq!(identification(&corr, &truth), (1.0, 1.0));
    }

    #[test]
    fn shuffled_pairings_are_never_identified_top1() {
        // Each reconstruction is given the wrong stimulus as its own: the one after it,
        // which is its second best (2-way: it beats all but the best of the 5 others).
        let corr = near_identity(6);
        let shifted: Vec<usize> = (0..6).map(|i| (i + 1) % 6).collect();
        let (top1, two_way) = identification(&corr, &shifted);
        assert_eq!(top1, 0.0);
        assert!((two_way - 4.0 / 5.0).abs() < 1e-12, "{two_way}");
    }

    #[test]
    fn two_way_counts_each_pair_once_per_reconstruction() {
        // Reconstruction 0 beats 1 of the 2 others, reconstruction 1 both; 2 is a tie (no win).
        let corr = vec![
            vec![0.5, 0.6, 0.4],
            vec![0.1, 0.7, 0.2],
            vec![0.3, 0.3, 0.3],
        ];
        let (top1, two_way) = identification(&corr, &[0, 1, 2]);
        assert!((top1 - 1.0 / 3.0).abs() < 1e-12);
        assert!((two_way - 3.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn random_moves_land_on_the_null_and_moves_to_the_truth_beat_it() {
        let n = 200;
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(2);
        let mut c = RfCentres::default();
        for i in 0..n {
            let t = [
                rand::Rng::random_range(&mut rng, -3.0..3.0),
                rand::Rng::random_range(&mut rng, -3.0..3.0),
            ];
            // Mapping error: 0.36 deg in a random direction.
            let a = rand::Rng::random_range(&mut rng, 0.0..std::f64::consts::TAU);
            let s = [t[0] + 0.36 * a.cos(), t[1] + 0.36 * a.sin()];
            c.truth.push(t);
            c.start.push(s);
            c.array.push(i % 4);
            // Half a step to the truth.
            c.learned.push([(s[0] + t[0]) / 2.0, (s[1] + t[1]) / 2.0]);
        }
        let r = c.recovery();
        assert_eq!(r.fraction_closer, 1.0);
        assert!(r.mean_projection_deg > r.null_mean_projection_p95_deg);
        assert!(r.fraction_closer > r.null_fraction_closer_p95);
        assert!(r.within_array_r > r.initial_within_array_r);
        // A step of 0.18 deg from 0.36 deg away ends closer for 1/π·acos(0.25) ≈ 42 % of
        // random directions.
        let want = (0.25f64).acos() / std::f64::consts::PI;
        assert!(
            (r.null_fraction_closer - want).abs() < 0.01,
            "{}",
            r.null_fraction_closer
        );
        assert!(r.null_mean_projection_deg.abs() < 0.01);
    }
}
