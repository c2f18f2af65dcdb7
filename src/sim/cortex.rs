//! The electrode model: what drives each electrode, and its MUA in time.
//!
//! Each live electrode has a Gaussian RF (the truth table) and area-specific tuning:
//! - V1: signed local luminance (ON or OFF) and oriented contrast energy;
//! - V4: signed luminance, opponent colour along a preferred hue, texture (a mix of the
//!   synthetic ventral stream's layer-2 maps inside its RF, [`super::ventral`]);
//! - IT: weak signed luminance and shape (a mix of layer-3 maps pooled over its large RF
//!   with a 4-norm: nonlinear in the pixels and tolerant to position).
//!
//! A `coarse` component (a random linear projection of the 6 × 6 colour layout inside the
//! RF: a pixel map in disguise, what IT was before) is still there for cortex files that
//! ask for it; the defaults give it no weight.
//!
//! Each component is standardised per electrode by its statistics over a fixed
//! reference set of the animal's own dead-leaves images, and the weighted sum goes
//! through a softplus to an amplitude. The MUA of a channel is
//! `spontaneous + Σ gain_trial · amplitude · h(t − onset − latency) + noise`, with `h` a
//! transient (alpha function) plus a sustained part that decays after the image goes
//! off, sampled at 1 kHz.

use rand::Rng;
use rayon::prelude::*;

use super::config::{AreaModel, SimConfig, N_FEATURES};
use super::seeds::{self, DOMAIN_ELECTRODES, DOMAIN_REFERENCE, DOMAIN_VENTRAL};
use super::ventral::{Mix, VentralNet};
use crate::config::RigConfig;
use crate::rf::RfTable;
use crate::units::Area;

/// Side of the coarse colour layout IT electrodes see.
const GRID: usize = 6;
/// Raw drive components of every unit for one image: `[unit][feature]`.
pub type UnitFeatures = Vec<[f32; N_FEATURES]>;
/// Coarsest pyramid level used for RF sums (1/8 of the image side).
const MAX_LEVEL: usize = 3;

/// Images in the reference set that fixes each unit's operating range.
const REFERENCE_IMAGES: usize = 64;

/// One live electrode.
#[derive(Clone, Debug)]
pub struct Unit {
    pub channel: usize,
    pub area: Area,
    /// RF centre and sigma in image pixels (x right, y down).
    pub rf_px: [f64; 3],
    polarity: f64,
    orientation: f64,
    hue: f64,
    /// Weights over the coarse layout (when `coarse` has a weight).
    coarse: Vec<f64>,
    /// Layer-2 channels of the ventral stream behind `texture`, layer-3 behind `shape`.
    texture_mix: Mix,
    shape_mix: Mix,
    /// Response onset in samples after stimulus onset.
    pub latency: usize,
    pub gain: f64,
    weights: [f64; N_FEATURES],
}

/// Every channel's spontaneous level and noise (dead channels have no unit).
#[derive(Clone, Copy, Debug)]
pub struct Channel {
    pub spontaneous: f32,
    pub noise_sd: f32,
    pub area: Option<Area>,
}

pub struct Cortex {
    pub units: Vec<Unit>,
    /// Mean and SD of each unit's drive components over a fixed reference set of
    /// images, `[unit][feature]`: the animal's operating range, whatever it is shown.
    reference: Vec<[(f64, f64); N_FEATURES]>,
    pub channels: Vec<Channel>,
    /// Response time course per area, one value per sample from response onset.
    pub kernels: [Vec<f32>; 3],
    pub config: SimConfig,
    image_size: usize,
    /// The synthetic ventral stream behind `texture` and `shape`.
    ventral: VentralNet,
}

#[derive(Debug, thiserror::Error)]
#[error("the RF table has no row for electrode {0} (channel of a live array); give every live electrode an RF or leave [receptive_fields] table out to have one generated")]
pub struct MissingRf(pub usize);

impl Cortex {
    /// Builds the electrodes of `rig` with RFs from `truth`. Deterministic for a seed.
    pub fn new(
        rig: &RigConfig,
        truth: &RfTable,
        config: &SimConfig,
        seed: u64,
    ) -> Result<Cortex, MissingRf> {
        let size = rig.image_size;
        let ppd = rig.rf.pixels_per_degree;
        let mut rng = seeds::rng(seed, DOMAIN_ELECTRODES, 0);
        let areas = rig.channel_areas();
        let channels = areas
            .iter()
            .map(|a| {
                let m = config.area(a.map_or(Area::V1, |(area, _)| area));
                Channel {
                    spontaneous: (m.spontaneous * rng.random_range(0.7..1.3)) as f32,
                    noise_sd: m.noise_sd as f32,
                    area: a.map(|(area, _)| area),
                }
            })
            .collect();
        let mut units = Vec::with_capacity(rig.electrodes.len());
        for e in &rig.electrodes {
            let rf = truth.get(e.channel).ok_or(MissingRf(e.channel + 1))?;
            let m = config.area(e.area);
            let f = &m.features;
            let coarse = if f.coarse != 0.0 {
                (0..GRID * GRID * 3)
                    .map(|_| seeds::normal(&mut rng))
                    .collect()
            } else {
                Vec::new()
            };
            let latency = m.latency_ms + rng.random_range(-1.0..=1.0) * m.latency_spread_ms;
            // From a stream of their own, so the other draws stay what they were.
            let mut mix_rng = seeds::rng(seed, DOMAIN_VENTRAL, 1 + e.channel as u64);
            let texture_mix = Mix::random(VentralNet::TEXTURE_CHANNELS, &mut mix_rng);
            let shape_mix = Mix::random(VentralNet::SHAPE_CHANNELS, &mut mix_rng);
            units.push(Unit {
                channel: e.channel,
                area: e.area,
                rf_px: RfTable::to_pixels(rf, size, ppd).map(f64::from),
                polarity: if rng.random_bool(0.5) { 1.0 } else { -1.0 },
                orientation: rng.random_range(0.0..std::f64::consts::PI),
                hue: rng.random_range(0.0..std::f64::consts::TAU),
                coarse,
                texture_mix,
                shape_mix,
                latency: (latency * rig.sampling_rate_hz / 1000.0).round().max(0.0) as usize,
                gain: m.gain * rng.random_range(0.6..1.4),
                weights: f.weights(),
            });
        }
        let kernels = Area::ALL.map(|a| {
            kernel(
                config.area(a),
                config.design.on_ms as f64,
                rig.sampling_rate_hz,
            )
        });
        let mut cortex = Cortex {
            reference: Vec::new(),
            units,
            channels,
            kernels,
            config: config.clone(),
            image_size: size,
            ventral: VentralNet::new(seed),
        };
        cortex.reference = cortex.reference_stats(seed);
        Ok(cortex)
    }

    /// Drive statistics over REFERENCE_IMAGES dead-leaves images of the animal's own.
    fn reference_stats(&self, seed: u64) -> Vec<[(f64, f64); N_FEATURES]> {
        let leaves = super::config::Leaves::default();
        let feats: Vec<UnitFeatures> = (0..REFERENCE_IMAGES)
            .into_par_iter()
            .map(|i| {
                let mut r = seeds::rng(seed, DOMAIN_REFERENCE, i as u64);
                self.features(&super::images::dead_leaves(
                    self.image_size,
                    &leaves,
                    &mut r,
                ))
            })
            .collect();
        let n = feats.len() as f64;
        (0..self.units.len())
            .map(|u| {
                std::array::from_fn(|f| {
                    let mean = feats.iter().map(|img| img[u][f] as f64).sum::<f64>() / n;
                    let var = feats
                        .iter()
                        .map(|img| (img[u][f] as f64 - mean).powi(2))
                        .sum::<f64>()
                        / n;
                    (mean, var.sqrt())
                })
            })
            .collect()
    }

    /// Raw drive components of every unit for one image: `[unit][feature]`.
    pub fn features(&self, image: &[f32]) -> UnitFeatures {
        let maps = Pyramid::new(image, self.image_size);
        let grid = coarse_layout(image, self.image_size);
        let deep = self
            .units
            .iter()
            .any(|u| u.weights[3] != 0.0 || u.weights[5] != 0.0)
            .then(|| self.ventral.maps(image, self.image_size));
        self.units
            .iter()
            .map(|u| {
                let [cx, cy, sigma] = u.rf_px;
                let level = (0..=MAX_LEVEL)
                    .rev()
                    .find(|&l| sigma / (1 << l) as f64 >= 1.5)
                    .unwrap_or(0);
                let m = maps.rf_means(level, cx, cy, sigma);
                let [lc, _lc2, rg, yb, gxx, gyy, gxy] = m;
                let mut out = [0.0f32; N_FEATURES];
                out[0] = (u.polarity * lc) as f32;
                if u.weights[1] != 0.0 {
                    let (c, s) = (u.orientation.cos(), u.orientation.sin());
                    out[1] = (c * c * gxx + s * s * gyy + 2.0 * s * c * gxy)
                        .max(0.0)
                        .sqrt() as f32;
                }
                out[2] = (u.hue.cos() * rg + u.hue.sin() * yb) as f32;
                if let Some(deep) = &deep {
                    if u.weights[3] != 0.0 {
                        out[3] = deep.texture(u.rf_px, &u.texture_mix) as f32;
                    }
                    if u.weights[5] != 0.0 {
                        out[5] = deep.shape(u.rf_px, &u.shape_mix) as f32;
                    }
                }
                if !u.coarse.is_empty() {
                    let cell = self.image_size as f64 / GRID as f64;
                    let mut acc = 0.0;
                    for gy in 0..GRID {
                        for gx in 0..GRID {
                            let dx = (gx as f64 + 0.5) * cell - cx;
                            let dy = (gy as f64 + 0.5) * cell - cy;
                            let w = (-(dx * dx + dy * dy) / (2.0 * sigma * sigma)).exp();
                            for c in 0..3 {
                                let k = (gy * GRID + gx) * 3 + c;
                                acc += u.coarse[k] * w * grid[k];
                            }
                        }
                    }
                    out[4] = acc as f32;
                }
                out
            })
            .collect()
    }

    /// Amplitudes `[image][unit]` from the raw features of every image: each component
    /// standardised by the unit's reference statistics, weighted, summed, softplus.
    pub fn amplitudes(&self, features: &[UnitFeatures]) -> Vec<Vec<f32>> {
        let stats = &self.reference;
        let softplus = |x: f64| if x > 30.0 { x } else { x.exp().ln_1p() };
        let ln2 = std::f64::consts::LN_2;
        features
            .iter()
            .map(|img| {
                self.units
                    .iter()
                    .enumerate()
                    .map(|(u, unit)| {
                        let m = self.config.area(unit.area);
                        let norm = unit.weights.iter().map(|w| w * w).sum::<f64>().sqrt();
                        let drive: f64 = (0..N_FEATURES)
                            .filter(|&f| unit.weights[f] != 0.0 && stats[u][f].1 > 1e-12)
                            .map(|f| {
                                unit.weights[f] * (img[u][f] as f64 - stats[u][f].0) / stats[u][f].1
                            })
                            .sum::<f64>()
                            / norm;
                        (unit.gain * softplus(m.selectivity * drive) / ln2) as f32
                    })
                    .collect()
            })
            .collect()
    }
}

/// Response time course from response onset, one value per sample: transient alpha
/// function (peak 1 at `peak_ms`) scaled by `transient`, plus `sustained` rising while
/// the image is on and decaying after it goes off. Ends when it has decayed below 0.1 %.
pub fn kernel(m: &AreaModel, on_ms: f64, rate_hz: f64) -> Vec<f32> {
    let dt = 1000.0 / rate_hz;
    let peak = m.transient.max(m.sustained).max(1e-9);
    let at_off = 1.0 - (-on_ms / m.rise_ms).exp();
    let mut k = Vec::new();
    for i in 0.. {
        let u = i as f64 * dt;
        let alpha = (u / m.peak_ms) * (1.0 - u / m.peak_ms).exp();
        let sustained = if u < on_ms {
            1.0 - (-u / m.rise_ms).exp()
        } else {
            at_off * (-(u - on_ms) / m.decay_ms).exp()
        };
        let v = m.transient * alpha + m.sustained * sustained;
        if u > on_ms.max(m.peak_ms) && v < 1e-3 * peak {
            break;
        }
        k.push(v as f32);
    }
    k
}

/// Block-mean RGB − 0.5 on a GRID × GRID layout, `[gy][gx][c]`.
fn coarse_layout(image: &[f32], size: usize) -> Vec<f64> {
    let mut grid = vec![0.0f64; GRID * GRID * 3];
    let mut count = vec![0usize; GRID * GRID];
    for y in 0..size {
        let gy = y * GRID / size;
        for x in 0..size {
            let gx = x * GRID / size;
            let cell = gy * GRID + gx;
            count[cell] += 1;
            for c in 0..3 {
                grid[cell * 3 + c] += image[(y * size + x) * 3 + c] as f64 - 0.5;
            }
        }
    }
    for (cell, n) in count.iter().enumerate() {
        for c in 0..3 {
            grid[cell * 3 + c] /= (*n).max(1) as f64;
        }
    }
    grid
}

/// Seven maps (centred luminance, its square, red–green, yellow–blue, gradient energy
/// xx, yy, xy), each zero on the mid-grey screen around the image, at full resolution
/// and 2×2-averaged levels below it.
struct Pyramid {
    levels: Vec<(usize, Vec<[f64; 7]>)>,
}

impl Pyramid {
    fn new(image: &[f32], size: usize) -> Pyramid {
        let lum: Vec<f64> = image
            .chunks_exact(3)
            .map(|p| 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64)
            .collect();
        let at = |x: isize, y: isize| -> f64 {
            if x < 0 || y < 0 || x >= size as isize || y >= size as isize {
                0.5
            } else {
                lum[y as usize * size + x as usize]
            }
        };
        let mut base = Vec::with_capacity(size * size);
        for y in 0..size as isize {
            for x in 0..size as isize {
                let i = (y as usize * size + x as usize) * 3;
                let (r, g, b) = (image[i] as f64, image[i + 1] as f64, image[i + 2] as f64);
                let lc = at(x, y) - 0.5;
                let gx = (at(x + 1, y) - at(x - 1, y)) / 2.0;
                let gy = (at(x, y + 1) - at(x, y - 1)) / 2.0;
                base.push([
                    lc,
                    lc * lc,
                    r - g,
                    (r + g) / 2.0 - b,
                    gx * gx,
                    gy * gy,
                    gx * gy,
                ]);
            }
        }
        let mut levels = vec![(size, base)];
        while levels.len() <= MAX_LEVEL && levels.last().expect("non-empty").0 % 2 == 0 {
            let (s, prev) = levels.last().expect("non-empty");
            let h = s / 2;
            let mut next = vec![[0.0; 7]; h * h];
            for y in 0..h {
                for x in 0..h {
                    let mut acc = [0.0; 7];
                    for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let p = &prev[(2 * y + dy) * s + 2 * x + dx];
                        for k in 0..7 {
                            acc[k] += p[k] / 4.0;
                        }
                    }
                    next[y * h + x] = acc;
                }
            }
            levels.push((h, next));
        }
        Pyramid { levels }
    }

    /// Gaussian-weighted sums of the seven maps around (cx, cy) with `sigma` (full-
    /// resolution pixels), normalised to the whole Gaussian: the part of an RF outside
    /// the image sees the grey screen, which contributes zero.
    fn rf_means(&self, level: usize, cx: f64, cy: f64, sigma: f64) -> [f64; 7] {
        let level = level.min(self.levels.len() - 1);
        let (s, map) = &self.levels[level];
        let scale = (1usize << level) as f64;
        let (cx, cy, sg) = (cx / scale, cy / scale, sigma / scale);
        let weights = |c: f64| -> (usize, Vec<f64>) {
            let lo = (c - 4.0 * sg).floor().max(0.0) as usize;
            let hi = ((c + 4.0 * sg).ceil().max(0.0) as usize).min(*s);
            let norm = 1.0 / (sg * (std::f64::consts::TAU).sqrt());
            (
                lo,
                (lo..hi.max(lo))
                    .map(|i| {
                        let d = i as f64 + 0.5 - c;
                        norm * (-d * d / (2.0 * sg * sg)).exp()
                    })
                    .collect(),
            )
        };
        let (x0, wx) = weights(cx);
        let (y0, wy) = weights(cy);
        let mut out = [0.0; 7];
        for (j, wyj) in wy.iter().enumerate() {
            let row = &map[(y0 + j) * s..(y0 + j + 1) * s];
            let mut acc = [0.0; 7];
            for (i, wxi) in wx.iter().enumerate() {
                let p = &row[x0 + i];
                for k in 0..7 {
                    acc[k] += wxi * p[k];
                }
            }
            for k in 0..7 {
                out[k] += wyj * acc[k];
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_peaks_then_decays_after_offset() {
        let m = AreaModel::default_for(Area::V1);
        let k = kernel(&m, 200.0, 1000.0);
        let peak = k
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert!((10..=25).contains(&peak), "peak at {peak} ms");
        assert!(k.len() > 200 && k.len() < 600, "{} samples", k.len());
        assert!(k[0] == 0.0 && k[250] < k[199]);
    }

    /// A bright spot inside an electrode's RF moves its luminance feature; outside it
    /// does not.
    #[test]
    fn rf_means_see_only_inside_the_rf() {
        let size = 32;
        let mut img = vec![0.5f32; size * size * 3];
        for y in 4..8 {
            for x in 4..8 {
                img[(y * size + x) * 3..(y * size + x) * 3 + 3].copy_from_slice(&[1.0; 3]);
            }
        }
        let p = Pyramid::new(&img, size);
        let inside = p.rf_means(0, 6.0, 6.0, 2.0)[0];
        let outside = p.rf_means(0, 24.0, 24.0, 2.0)[0];
        assert!(inside > 0.2, "{inside}");
        assert!(outside.abs() < 1e-6, "{outside}");
        // The same at a coarser level.
        let coarse = p.rf_means(1, 6.0, 6.0, 3.0)[0];
        assert!(coarse > 0.1, "{coarse}");
    }
}
