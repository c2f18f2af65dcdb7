//! Train/serve skew of the decoder inputs, before and after the presentation-based
//! normalisation (`src/norm.rs`), on a simulated session and its dataset.
//!
//! - before: training z-scored each electrode with the mean and SD of the raw samples of
//!   the training epochs; the daemon started from those and updated a running
//!   mean/variance with every sample (exponential, time constant 300 s), blanks and
//!   inter-trial intervals included. Replayed here sample by sample with the removed
//!   estimator's update rule (`RunningNorm` as it was in `src/window.rs`).
//! - after: training z-scores per electrode and window with the statistics over the
//!   session's presentations; the daemon starts from them (prior weight from the rig)
//!   and adds each presentation ([`Dataset::online_features`] is its exact replay,
//!   held to the daemon by `tests/it/lab_path.rs`).
//!
//! For each, the difference between the training input and the live input of every
//! trial, in units of that input's SD over the trials (the two schemes' z values have
//! different scales: sample SDs are far larger than SDs of window means): mean absolute
//! difference, 99th percentile, max.
//!
//! usage: cargo run --release --example norm-parity -- RIG.toml SIM_DIR

use std::path::PathBuf;

use anyhow::Context;
use monkeysee::config::{RigConfig, WindowSetKind};
use monkeysee::dataset::Dataset;
use monkeysee::xdf::{Chunk, Values, XdfReader};

/// The removed running estimator: per electrode, from the training statistics.
struct OldRunningNorm {
    mean: Vec<f64>,
    var: Vec<f64>,
    alpha: f64,
}

impl OldRunningNorm {
    fn update(&mut self, channels: &[usize], values: &[f32]) {
        for (e, &c) in channels.iter().enumerate() {
            let x = values[c] as f64;
            if !x.is_finite() {
                continue;
            }
            let d = x - self.mean[e];
            self.mean[e] += self.alpha * d;
            self.var[e] = (1.0 - self.alpha) * (self.var[e] + self.alpha * d * d);
        }
    }
}

/// |training − live| of `[trial][feature]` pairs, per feature divided by the SD of the
/// training inputs over the trials.
fn scaled(pairs: &[(f64, f64)], n_f: usize) -> Vec<f64> {
    let n = (pairs.len() / n_f) as f64;
    let sd: Vec<f64> = (0..n_f)
        .map(|f| {
            let xs = pairs.iter().skip(f).step_by(n_f).map(|p| p.0);
            let mean = xs.clone().sum::<f64>() / n;
            (xs.map(|x| (x - mean).powi(2)).sum::<f64>() / n)
                .sqrt()
                .max(1e-9)
        })
        .collect();
    pairs
        .iter()
        .enumerate()
        .map(|(i, (a, b))| (a - b).abs() / sd[i % n_f])
        .collect()
}

fn summary(name: &str, mut d: Vec<f64>) {
    d.sort_by(f64::total_cmp);
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    let p99 = d[(d.len() as f64 * 0.99) as usize];
    println!(
        "{name}: |training input - live input| / SD of the training input: mean {mean:.4}, p99 {p99:.4}, max {:.4} ({} values)",
        d.last().unwrap(),
        d.len()
    );
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (rig, sim) = match &args[..] {
        [_, rig, sim] => (RigConfig::load(&PathBuf::from(rig))?, PathBuf::from(sim)),
        _ => anyhow::bail!("usage: norm-parity RIG.toml SIM_DIR"),
    };
    let ds = Dataset::open(&sim.join("dataset"))?;
    let set = WindowSetKind::Tw15;
    let n_e = rig.electrodes.len();
    let channels: Vec<usize> = rig.electrodes.iter().map(|e| e.channel).collect();
    let mut raw = Vec::new();

    // Before: sample statistics of the training epochs.
    let train = ds.split(false);
    let (mut sum, mut sq, mut n) = (vec![0.0f64; n_e], vec![0.0f64; n_e], 0u64);
    for &t in &train {
        for row in ds.trial(t).chunks_exact(ds.meta.channels) {
            for (e, &c) in channels.iter().enumerate() {
                let v = row[c] as f64;
                sum[e] += v;
                sq[e] += v * v;
            }
            n += 1;
        }
    }
    let n = n as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let sd: Vec<f64> = (0..n_e)
        .map(|e| (sq[e] / n - mean[e] * mean[e]).max(0.0).sqrt().max(1e-6))
        .collect();
    let mut old = OldRunningNorm {
        mean: mean.clone(),
        var: sd.iter().map(|s| s * s).collect(),
        alpha: 1e-3 / 300.0,
    };
    // Stream the session; at each trial's end, z-score its window means both ways.
    let mut trial_end: Vec<(f64, usize)> = (0..ds.n_trials())
        .map(|t| (ds.trial_onset[t] + 0.199, t))
        .collect();
    trial_end.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut next = 0;
    let mut before = Vec::new();
    let mut reader = XdfReader::open(sim.join("session.xdf")).context("the session")?;
    let mut mua_id = None;
    while let Some(chunk) = reader.next_chunk()? {
        match chunk {
            Chunk::StreamHeader { stream, info } if info.channel_count() == ds.meta.channels => {
                mua_id = Some(stream)
            }
            Chunk::Samples(c) if Some(c.stream) == mua_id => {
                let Values::Float32(v) = &c.values else {
                    continue;
                };
                for (k, &stamp) in c.stamps.iter().enumerate() {
                    old.update(
                        &channels,
                        &v[k * ds.meta.channels..(k + 1) * ds.meta.channels],
                    );
                    while next < trial_end.len() && trial_end[next].0 <= stamp + 1e-7 {
                        let t = trial_end[next].1;
                        ds.raw_means(t, &rig, set, &mut raw, None);
                        for e in 0..n_e {
                            let offline = (raw[e] - mean[e]) / sd[e];
                            let live = (raw[e] - old.mean[e]) / old.var[e].sqrt().max(1e-6);
                            before.push((offline, live));
                        }
                        next += 1;
                    }
                }
            }
            _ => {}
        }
    }
    summary(
        "before (sample statistics, running over every sample)",
        scaled(&before, n_e),
    );

    // After: the session's presentation statistics for training; the daemon's replay.
    let all: Vec<usize> = (0..ds.n_trials()).collect();
    let stats = ds.norm_stats(&all, &rig, set);
    let live = ds.online_features(&all, &rig, set, &stats);
    let mut after = Vec::new();
    let mut f = Vec::new();
    for t in all {
        ds.features(t, &rig, set, &stats, &mut f);
        after.extend(f.iter().zip(&live[t]).map(|(&a, &b)| (a as f64, b as f64)));
    }
    let after = scaled(&after, n_e);
    let (worst, _) =
        after.iter().enumerate().fold(
            (0, 0.0),
            |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) },
        );
    let (t, e) = (worst / n_e, worst % n_e);
    let order = ds.sessions()[0].iter().position(|&x| x == t).unwrap_or(0);
    ds.features(t, &rig, set, &stats, &mut f);
    println!(
        "after: at the largest, training input {:.3}, live {:.3}",
        f[e], live[t][e]
    );
    println!(
        "after: largest at trial {t} (presentation {order} of the session), electrode {e} ({}): training mean {:.4} SD {:.4}",
        rig.electrodes[e].area, stats.mean[e], stats.std[e]
    );
    summary("after (per window over presentations)", after);
    Ok(())
}
