//! The RF loss scan: does the decoding loss of a trained end-to-end model point each
//! electrode's learned RF centre toward its true centre, and how strongly against
//! minibatch noise?
//!
//! For each of `--electrodes` electrodes of an area (random, seeded), with everything else
//! frozen, the electrode's centre is moved along the line from its learned position toward
//! its true one (the simulator's `rf-truth.csv`), `s` pixels at a time (s = 0 is the
//! learned centre, s = d the truth; along x for a centre already at the truth), and the
//! model's pixel L1 is measured on `--batches`
//! fixed batches of 8 training trials (inference mode). Reported per electrode: where the
//! loss is lowest along the line (s*), the distance to the truth (d), and the loss slope at
//! s = 0 against the spread of that slope over batches (what one training step sees).
//!
//! `cargo run --release --example rf-loss-scan -- --model DIR --data DATASET --rig RIG.toml
//!  --rf-truth rf-truth.csv --out scan.csv [--area V1] [--electrodes 16] [--batches 24]
//!  [--range 10]`

use std::path::PathBuf;

use anyhow::{bail, Context};
use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use monkeysee::config::{RigConfig, WindowSetKind};
use monkeysee::dataset::Dataset;
use monkeysee::decoder::{CpuBackend, Decoder, DecoderModel};
use monkeysee::norm::NormStats;
use monkeysee::rf::RfTable;

struct Args {
    model: PathBuf,
    data: PathBuf,
    rig: PathBuf,
    truth: PathBuf,
    out: PathBuf,
    area: String,
    electrodes: usize,
    batches: usize,
    range: i32,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        model: PathBuf::new(),
        data: PathBuf::new(),
        rig: PathBuf::new(),
        truth: PathBuf::new(),
        out: PathBuf::from("rf-loss-scan.csv"),
        area: "V1".into(),
        electrodes: 16,
        batches: 24,
        range: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => a.model = value()?.into(),
            "--data" => a.data = value()?.into(),
            "--rig" => a.rig = value()?.into(),
            "--rf-truth" => a.truth = value()?.into(),
            "--out" => a.out = value()?.into(),
            "--area" => a.area = value()?,
            "--electrodes" => a.electrodes = value()?.parse()?,
            "--batches" => a.batches = value()?.parse()?,
            "--range" => a.range = value()?.parse()?,
            other => bail!("unknown argument {other} (see the header of tools/rf_loss_scan.rs)"),
        }
    }
    if a.model.as_os_str().is_empty() || a.data.as_os_str().is_empty() {
        bail!("give --model, --data, --rig and --rf-truth");
    }
    Ok(a)
}

fn set(param: &mut Param<Tensor<CpuBackend, 1>>, values: Vec<f32>) {
    let n = values.len();
    *param = Param::from_tensor(Tensor::from_data(
        TensorData::new(values, [n]),
        &Default::default(),
    ));
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let device = Default::default();
    let rig = RigConfig::load(&a.rig)?;
    let truth = RfTable::load(&a.truth)?;
    let ds = Dataset::open(&a.data)?;
    ds.check_rig(&rig)?;
    let decoder = Decoder::<CpuBackend>::load(&a.model, &device)?;
    let config = decoder.config().clone();
    let model: DecoderModel<CpuBackend> = decoder.model().clone();
    let layer = model
        .gaussian
        .as_ref()
        .context("the model has no learned RF layer (train --kind end-to-end)")?;
    let host = |t: Tensor<CpuBackend, 1>| t.into_data().to_vec::<f32>().unwrap();
    let (mx, my) = (host(layer.mu_x.val()), host(layer.mu_y.val()));
    let stats = NormStats::load(&a.model, 1, rig.electrodes.len())?
        .context("the model has no normalization.json")?;

    // Fixed batches of training trials, their features and images.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut train = ds.split(false);
    train.shuffle(&mut rng);
    let trials: Vec<usize> = train.into_iter().take(8 * a.batches).collect();
    let mut features = Vec::new();
    let mut images = Vec::new();
    let mut f = Vec::new();
    for &t in &trials {
        ds.features(t, &rig, WindowSetKind::Tw15, &stats, &mut f);
        features.extend_from_slice(&f);
        images.push(ds.image_chw(ds.trial_image[t]));
    }
    let image_len = config.image_len();
    // Mean pixel L1 per batch of a model.
    let losses = |m: DecoderModel<CpuBackend>| -> anyhow::Result<Vec<f64>> {
        let d = Decoder::from_model(config.clone(), m, &device)?;
        let mut out = vec![0.0f32; 8 * image_len];
        let nf = config.n_features();
        (0..a.batches)
            .map(|b| {
                d.reconstruct_batch(&features[b * 8 * nf..(b + 1) * 8 * nf], 8, &mut out)?;
                let sum: f64 = out
                    .chunks_exact(image_len)
                    .zip(&images[b * 8..(b + 1) * 8])
                    .map(|(r, y)| {
                        r.iter()
                            .zip(y)
                            .map(|(p, q)| (p - q).abs() as f64)
                            .sum::<f64>()
                    })
                    .sum();
                Ok(sum / (8 * image_len) as f64)
            })
            .collect()
    };

    let (c, ppd) = (rig.image_size as f64 / 2.0, rig.rf.pixels_per_degree);
    let mut candidates: Vec<usize> = (0..rig.electrodes.len())
        .filter(|&e| {
            rig.electrodes[e].area.name() == a.area
                && truth.get(rig.electrodes[e].channel).is_some()
        })
        .collect();
    candidates.shuffle(&mut rng);
    candidates.truncate(a.electrodes);
    let mut csv =
        String::from("electrode,channel,distance_px,s_px,mean_l1,mean_l1_change,sd_l1_change\n");
    let mut summary = Vec::new();
    for (k, &e) in candidates.iter().enumerate() {
        let t = truth
            .get(rig.electrodes[e].channel)
            .expect("filtered above");
        // The truth in pixels (y down).
        let (tx, ty) = (c + t.x_deg * ppd, c - t.y_deg * ppd);
        let (dx, dy) = (tx - mx[e] as f64, ty - my[e] as f64);
        let d = (dx * dx + dy * dy).sqrt();
        // At the truth already (a model trained on the true RFs): scan along x.
        let (ux, uy) = if d < 0.5 {
            (1.0, 0.0)
        } else {
            (dx / d, dy / d)
        };
        let base = losses(model.clone())?;
        let mut curve = Vec::new();
        for s in -a.range..=a.range {
            let per_batch = if s == 0 {
                base.clone()
            } else {
                let mut m = model.clone();
                let g = m.gaussian.as_mut().expect("checked");
                let (mut x, mut y) = (mx.clone(), my.clone());
                x[e] += (s as f64 * ux) as f32;
                y[e] += (s as f64 * uy) as f32;
                set(&mut g.mu_x, x);
                set(&mut g.mu_y, y);
                losses(m)?
            };
            let diffs: Vec<f64> = per_batch.iter().zip(&base).map(|(l, b)| l - b).collect();
            let mean = per_batch.iter().sum::<f64>() / per_batch.len() as f64;
            let dmean = diffs.iter().sum::<f64>() / diffs.len() as f64;
            let dsd = (diffs.iter().map(|v| (v - dmean).powi(2)).sum::<f64>()
                / (diffs.len().max(2) - 1) as f64)
                .sqrt();
            csv.push_str(&format!(
                "{e},{},{d:.3},{s},{mean:.7},{dmean:.3e},{dsd:.3e}\n",
                rig.electrodes[e].channel
            ));
            curve.push((s, mean, dmean, dsd));
        }
        let best = curve
            .iter()
            .min_by(|p, q| p.1.total_cmp(&q.1))
            .map_or(0, |p| p.0);
        // The slope at s = 0 from ±1 px, per batch: its mean against its spread.
        let at = |s: i32| curve.iter().find(|p| p.0 == s).copied();
        let (slope, noise) = match (at(-1), at(1)) {
            (Some(lo), Some(hi)) => ((hi.2 - lo.2) / 2.0, (hi.3 + lo.3) / 2.0),
            _ => (0.0, 0.0),
        };
        eprintln!(
            "[{}/{}] electrode {e}: truth {d:.1} px away, loss lowest at s = {best} px; slope {slope:+.2e} per px, batch SD of a 1 px change {noise:.2e}",
            k + 1,
            candidates.len()
        );
        summary.push((d, best as f64, slope, noise));
    }
    std::fs::write(&a.out, csv).with_context(|| format!("writing {}", a.out.display()))?;
    let n = summary.len().max(1) as f64;
    let toward = summary.iter().filter(|p| p.1 > 0.0).count();
    let at_zero = summary.iter().filter(|p| p.1 == 0.0).count();
    println!(
        "{} {} electrodes: truth {:.1} px away on average; the loss is lowest toward the truth (s* > 0) for {toward}, at the learned centre for {at_zero}, away for {}; mean s* {:+.2} px; mean slope {:+.2e}/px (negative: downhill toward the truth) against a per-batch SD of {:.2e} for a 1 px move",
        summary.len(),
        a.area,
        summary.iter().map(|p| p.0).sum::<f64>() / n,
        summary.len() - toward - at_zero,
        summary.iter().map(|p| p.1).sum::<f64>() / n,
        summary.iter().map(|p| p.2).sum::<f64>() / n,
        summary.iter().map(|p| p.3).sum::<f64>() / n
    );
    println!("wrote {}", a.out.display());
    Ok(())
}
