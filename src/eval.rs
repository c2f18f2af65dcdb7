//! `monkeysee eval`: how well models reconstruct a dataset's test images.
//!
//! For each test image the model decodes the mean of its repeats' features (the
//! paper's test protocol; the features are linear in the responses, so this is the
//! decoding of the averaged response), and, separately, every single trial (the online
//! case). Metrics per model: pixel correlation (Pearson r over the RGB pixels of
//! reconstruction and original, averaged over images), SSIM (mean over the R, G, B
//! planes of `image-compare`'s MSSIM), and the same two for shuffled pairings (each reconstruction against
//! the other test images) as chance level. For a model with learned Gaussian RFs, the
//! learned centres are compared with the simulator's ground truth (`rf-truth.csv`
//! beside the dataset): Pearson r of x and of y per area.
//!
//! Not yet here (DESIGN §2): AlexNet feature correlations (they need the user's
//! torchvision AlexNet file), spatial/temporal occlusion and colourfulness.
//!
//! Output: `metrics.json` (per model: `pixel_r`, `pixel_r_chance`, `ssim`,
//! `ssim_chance`, `n_images`, …) and `grid.png` (Figure-1 style: the stimulus, then
//! each model's reconstruction).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::config::RigConfig;
use crate::daemon::{decoder_config, load_norm_stats, window_set};
use crate::dataset::Dataset;
use crate::decoder::{CpuBackend, Decoder};
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
}

#[derive(Clone, Debug, Serialize)]
pub struct RfRecovery {
    pub electrodes: usize,
    pub r_x: f64,
    pub r_y: f64,
    /// Mean distance between learned and true centres, degrees.
    pub mean_error_deg: f64,
    /// The same for the centres training started from (the decoder's RF table).
    pub initial_r_x: f64,
    pub initial_r_y: f64,
    pub initial_mean_error_deg: f64,
    /// Mean distance each centre moved in training, degrees.
    pub mean_shift_deg: f64,
    /// Share of electrodes whose learned centre is closer to the truth than the start.
    pub fraction_closer: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelMetrics {
    pub model: PathBuf,
    pub kind: String,
    pub width: usize,
    pub pixel_r: f64,
    pub pixel_r_chance: f64,
    pub ssim: f64,
    pub ssim_chance: f64,
    pub n_images: usize,
    pub single_trial_pixel_r: f64,
    pub single_trial_pixel_r_chance: f64,
    pub single_trials: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rf_recovery: Option<BTreeMap<String, RfRecovery>>,
}

/// Pearson correlation; 0 when either side is constant.
pub fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (
        a.iter().map(|&v| v as f64).sum::<f64>() / n,
        b.iter().map(|&v| v as f64).sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa <= 0.0 || sbb <= 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

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

pub fn eval(opts: &EvalOptions) -> anyhow::Result<Vec<ModelMetrics>> {
    if opts.models.is_empty() {
        bail!("give at least one --model DIR");
    }
    let ds = Dataset::open(&opts.data)?;
    let rig = &match &opts.rig {
        Some(rig) => rig.clone(),
        None => {
            let path = ds.meta.rig_config.as_ref().with_context(|| {
                format!(
                    "{}/dataset.json names no rig_config; give the rig",
                    ds.dir.display()
                )
            })?;
            RigConfig::load(path)?
        }
    };
    ds.check_rig(rig)?;
    let size = ds.meta.image_size;
    // Test images and their trials, in image order.
    let mut by_image: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for t in ds.split(true) {
        by_image.entry(ds.trial_image[t]).or_default().push(t);
    }
    if by_image.len() < 2 {
        bail!(
            "{} has {} test images; eval needs at least 2 (simulate with --test-images N)",
            ds.dir.display(),
            by_image.len()
        );
    }
    let images: Vec<usize> = by_image.keys().copied().collect();
    let originals: Vec<Vec<f32>> = images.iter().map(|&i| ds.image_chw(i)).collect();
    let truth_path = opts
        .rf_truth
        .clone()
        .unwrap_or_else(|| ds.dir.join("..").join("rf-truth.csv"));
    let truth = truth_path
        .exists()
        .then(|| RfTable::load(&truth_path))
        .transpose()?;
    let device = Default::default();
    let n = images.len();
    let mut metrics = Vec::new();
    let mut recons: Vec<Vec<Vec<f32>>> = Vec::new();
    for dir in &opts.models {
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
        let stats = load_norm_stats(dir, rig.electrodes.len())?.with_context(|| {
            format!("{} has no normalization.json (the training statistics); retrain with monkeysee train", dir.display())
        })?;
        let set = window_set(cfg.kind);
        let mut f = Vec::new();
        let mut out = vec![0.0f32; cfg.image_len()];
        // Repeat-averaged.
        let mut model_recons = Vec::with_capacity(n);
        for &img in &images {
            let trials = &by_image[&img];
            let mut mean = vec![0.0f32; cfg.n_features()];
            for &t in trials {
                ds.features(t, rig, set, &stats, &mut f);
                for (m, v) in mean.iter_mut().zip(&f) {
                    *m += v / trials.len() as f32;
                }
            }
            decoder.reconstruct(&mean, &mut out)?;
            model_recons.push(out.clone());
        }
        // Single trials.
        let mut single = Vec::new();
        for (k, &img) in images.iter().enumerate() {
            for &t in &by_image[&img] {
                ds.features(t, rig, set, &stats, &mut f);
                decoder.reconstruct(&f, &mut out)?;
                single.push((k, out.clone()));
            }
        }
        let pixel_r = (0..n)
            .map(|i| pearson(&model_recons[i], &originals[i]))
            .sum::<f64>()
            / n as f64;
        let pixel_r_chance = shuffled(n, |i, j| pearson(&model_recons[i], &originals[j]));
        let ssim_v = (0..n)
            .map(|i| ssim(&model_recons[i], &originals[i], size))
            .sum::<f64>()
            / n as f64;
        let ssim_chance = shuffled(n, |i, j| ssim(&model_recons[i], &originals[j], size));
        let st_r = single
            .iter()
            .map(|(k, r)| pearson(r, &originals[*k]))
            .sum::<f64>()
            / single.len() as f64;
        let st_chance = single
            .iter()
            .map(|(k, r)| pearson(r, &originals[(k + 1) % n]))
            .sum::<f64>()
            / single.len() as f64;
        let rf_recovery = match (decoder.model().gaussian.as_ref(), &truth) {
            (Some(layer), Some(truth)) => Some(rf_recovery(layer, &cfg, truth, rig)?),
            _ => None,
        };
        metrics.push(ModelMetrics {
            model: dir.clone(),
            kind: cfg.kind.to_string(),
            width: cfg.width,
            pixel_r,
            pixel_r_chance,
            ssim: ssim_v,
            ssim_chance,
            n_images: n,
            single_trial_pixel_r: st_r,
            single_trial_pixel_r_chance: st_chance,
            single_trials: single.len(),
            rf_recovery,
        });
        recons.push(model_recons);
    }

    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let mut json = serde_json::Map::new();
    for (dir, m) in opts.models.iter().zip(&metrics) {
        json.insert(model_name(dir), serde_json::to_value(m)?);
    }
    let p = opts.out.join("metrics.json");
    std::fs::write(&p, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", p.display()))?;
    let mut titles = vec!["stimulus".to_string()];
    titles.extend(opts.models.iter().map(|d| model_name(d)));
    let rows: Vec<Vec<&[f32]>> = (0..n.min(opts.grid_images))
        .map(|i| {
            std::iter::once(originals[i].as_slice())
                .chain(recons.iter().map(|r| r[i].as_slice()))
                .collect()
        })
        .collect();
    crate::plot::image_grid(&opts.out.join("grid.png"), &titles, &rows, size, 2)?;
    Ok(metrics)
}

fn model_name(dir: &Path) -> String {
    dir.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// Learned vs true RF centres per area (degrees), for a learned Gaussian RF layer.
fn rf_recovery(
    layer: &crate::decoder::GaussianRfLayer<CpuBackend>,
    cfg: &crate::decoder::DecoderConfig,
    truth: &RfTable,
    rig: &RigConfig,
) -> anyhow::Result<BTreeMap<String, RfRecovery>> {
    let mx: Vec<f32> = layer
        .mu_x
        .val()
        .into_data()
        .to_vec()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let my: Vec<f32> = layer
        .mu_y
        .val()
        .into_data()
        .to_vec()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (c, ppd) = (rig.image_size as f64 / 2.0, rig.rf.pixels_per_degree);
    let initial = crate::decoder::input::initial_rfs(cfg);
    let to_deg = |px: f64, py: f64| ((px - c) / ppd, (c - py) / ppd);
    let mut out = BTreeMap::new();
    for area in Area::ALL {
        // (learned x, learned y, initial x, initial y, true x, true y), degrees.
        let mut pts: Vec<[f64; 6]> = Vec::new();
        for (e, el) in rig.electrodes.iter().enumerate() {
            if el.area != area {
                continue;
            }
            if let Some(t) = truth.get(el.channel) {
                let (x, y) = to_deg(mx[e] as f64, my[e] as f64);
                let (ix, iy) = to_deg(initial[e][0] as f64, initial[e][1] as f64);
                pts.push([x, y, ix, iy, t.x_deg, t.y_deg]);
            }
        }
        if pts.len() < 3 {
            continue;
        }
        let col = |k: usize| -> Vec<f32> { pts.iter().map(|p| p[k] as f32).collect() };
        let dist = |p: &[f64; 6], a: usize, b: usize| {
            ((p[a] - p[b]).powi(2) + (p[a + 1] - p[b + 1]).powi(2)).sqrt()
        };
        let mean = |f: &dyn Fn(&[f64; 6]) -> f64| pts.iter().map(f).sum::<f64>() / pts.len() as f64;
        let err = |k: usize| mean(&|p| dist(p, k, 4));
        out.insert(
            area.name().to_string(),
            RfRecovery {
                electrodes: pts.len(),
                r_x: pearson(&col(0), &col(4)),
                r_y: pearson(&col(1), &col(5)),
                mean_error_deg: err(0),
                initial_r_x: pearson(&col(2), &col(4)),
                initial_r_y: pearson(&col(3), &col(5)),
                initial_mean_error_deg: err(2),
                mean_shift_deg: mean(&|p| dist(p, 0, 2)),
                fraction_closer: mean(&|p| f64::from(dist(p, 0, 4) < dist(p, 2, 4))),
            },
        );
    }
    Ok(out)
}
