//! The synthetic ventral stream: a fixed random convolutional network whose feature maps
//! drive V4's texture component and IT's shape component.
//!
//! Real V4 and IT are not pixel maps: V4 responds to texture statistics inside its RF and
//! IT to shapes and object parts, tolerant to where in its (large) RF they appear
//! (Tanaka 1996; Rust & DiCarlo 2010). A random, untrained convolutional network with
//! rectification and pooling has the same two properties that matter here: its deeper
//! maps are nonlinear in the pixels, and pooling them over a large RF with a high-order
//! norm discards where a feature was. (Random deep networks predict ventral-stream
//! responses better than pixel models do, if worse than trained ones; Yamins et al. 2014.)
//!
//! The network, fixed by the animal's seed (images are `[y][x][c]`, grey 0.5 taken off):
//! - layer 1: 8 filters 5 × 5 × 3, stride 2, each colour plane of a filter summing to zero
//!   (edges and colour edges, blind to uniform colour), rectified: `size/2`;
//! - layer 2: 16 filters 3 × 3 × 8, rectified, 2 × 2 max-pooled: `size/4` (V4's texture);
//! - layer 3: 32 filters 3 × 3 × 16, rectified, 2 × 2 max-pooled: `size/8` (IT's shape).
//!
//! A V4 unit's texture drive is its RF-weighted mean of a random signed mix of 4 layer-2
//! channels; an IT unit's shape drive is a random signed mix of 4 layer-3 channels, each
//! pooled over its RF with a Gaussian-weighted 4-norm (close to a max: the feature counts
//! wherever in the RF it is).

use rand::Rng;

use super::seeds::{normal, rng, DOMAIN_VENTRAL};

const L1: usize = 8;
const L2: usize = 16;
const L3: usize = 32;
/// Channels a unit mixes.
pub const MIX: usize = 4;
/// The norm IT pools with (written out as squares in [`VentralMaps::shape`]).
const POOL_P: f64 = 4.0;

/// One convolution layer: `out` filters of `k × k × inp`, `[o][dy][dx][i]`.
struct Conv {
    k: usize,
    inp: usize,
    out: usize,
    stride: usize,
    w: Vec<f32>,
}

impl Conv {
    fn random(k: usize, inp: usize, out: usize, stride: usize, r: &mut impl Rng) -> Conv {
        let n = k * k * inp;
        let scale = (2.0 / n as f64).sqrt();
        let w = (0..out * n).map(|_| (normal(r) * scale) as f32).collect();
        Conv {
            k,
            inp,
            out,
            stride,
            w,
        }
    }

    /// Makes every input plane of every filter sum to zero.
    fn zero_mean_planes(mut self) -> Conv {
        let (k, inp) = (self.k, self.inp);
        for f in self.w.chunks_exact_mut(k * k * inp) {
            for i in 0..inp {
                let m = (0..k * k).map(|p| f[p * inp + i]).sum::<f32>() / (k * k) as f32;
                (0..k * k).for_each(|p| f[p * inp + i] -= m);
            }
        }
        self
    }

    /// Rectified convolution, zero padding ("same" at stride 1), `[y][x][c]` in and out.
    fn apply(&self, x: &[f32], side: usize) -> (Vec<f32>, usize) {
        let out_side = side.div_ceil(self.stride);
        let pad = (self.k / 2) as isize;
        let mut y = vec![0.0f32; out_side * out_side * self.out];
        let n = self.k * self.k * self.inp;
        for oy in 0..out_side {
            for ox in 0..out_side {
                let o = &mut y[(oy * out_side + ox) * self.out..][..self.out];
                for dy in 0..self.k {
                    let iy = (oy * self.stride) as isize + dy as isize - pad;
                    if iy < 0 || iy >= side as isize {
                        continue;
                    }
                    for dx in 0..self.k {
                        let ix = (ox * self.stride) as isize + dx as isize - pad;
                        if ix < 0 || ix >= side as isize {
                            continue;
                        }
                        let px = &x[(iy as usize * side + ix as usize) * self.inp..][..self.inp];
                        let tap = (dy * self.k + dx) * self.inp;
                        for (f, acc) in o.iter_mut().enumerate() {
                            let w = &self.w[f * n + tap..][..self.inp];
                            *acc += w.iter().zip(px).map(|(a, b)| a * b).sum::<f32>();
                        }
                    }
                }
                o.iter_mut().for_each(|v| *v = v.max(0.0));
            }
        }
        (y, out_side)
    }
}

/// 2 × 2 max pooling, `[y][x][c]`.
fn max_pool(x: &[f32], side: usize, c: usize) -> (Vec<f32>, usize) {
    let h = side / 2;
    let mut y = vec![0.0f32; h * h * c];
    for oy in 0..h {
        for ox in 0..h {
            for k in 0..c {
                let at = |yy: usize, xx: usize| x[(yy * side + xx) * c + k];
                y[(oy * h + ox) * c + k] = at(2 * oy, 2 * ox)
                    .max(at(2 * oy, 2 * ox + 1))
                    .max(at(2 * oy + 1, 2 * ox))
                    .max(at(2 * oy + 1, 2 * ox + 1));
            }
        }
    }
    (y, h)
}

/// The network: fixed for an animal.
pub struct VentralNet {
    l1: Conv,
    l2: Conv,
    l3: Conv,
}

/// One image's deep maps: layer 2 (`side2`² × 16) and layer 3 (`side3`² × 32).
pub struct VentralMaps {
    image_side: usize,
    l2: Vec<f32>,
    side2: usize,
    l3: Vec<f32>,
    side3: usize,
}

/// Which channels of a map a unit mixes, with their weights.
#[derive(Clone, Debug, Default)]
pub struct Mix {
    pub channels: [usize; MIX],
    pub weights: [f64; MIX],
}

impl Mix {
    /// A random signed mix of `MIX` distinct channels of a `channels`-channel map.
    pub fn random(channels: usize, r: &mut impl Rng) -> Mix {
        let mut m = Mix::default();
        let mut k = 0;
        while k < MIX {
            let c = r.random_range(0..channels);
            if !m.channels[..k].contains(&c) {
                m.channels[k] = c;
                m.weights[k] = normal(r);
                k += 1;
            }
        }
        m
    }
}

impl VentralNet {
    pub fn new(seed: u64) -> VentralNet {
        let mut r = rng(seed, DOMAIN_VENTRAL, 0);
        VentralNet {
            l1: Conv::random(5, 3, L1, 2, &mut r).zero_mean_planes(),
            l2: Conv::random(3, L1, L2, 1, &mut r),
            l3: Conv::random(3, L2, L3, 1, &mut r),
        }
    }

    pub const TEXTURE_CHANNELS: usize = L2;
    pub const SHAPE_CHANNELS: usize = L3;

    /// The deep maps of an image `[y][x][c]` in 0..1 of side `size`.
    pub fn maps(&self, image: &[f32], size: usize) -> VentralMaps {
        let x: Vec<f32> = image.iter().map(|v| v - 0.5).collect();
        let (a1, s1) = self.l1.apply(&x, size);
        let (a2, s2) = self.l2.apply(&a1, s1);
        let (p2, side2) = max_pool(&a2, s2, L2);
        let (a3, s3) = self.l3.apply(&p2, side2);
        let (p3, side3) = max_pool(&a3, s3, L3);
        VentralMaps {
            image_side: size,
            l2: p2,
            side2,
            l3: p3,
            side3,
        }
    }
}

/// Gaussian weights of an RF (centre and sigma in image pixels) on a map of side `side`,
/// normalised to sum to one over the map.
fn rf_weights(rf_px: [f64; 3], image_side: usize, side: usize) -> Vec<f64> {
    let scale = image_side as f64 / side as f64;
    let [cx, cy, sigma] = rf_px.map(|v| v / scale);
    let sigma = sigma.max(0.5);
    let mut w = Vec::with_capacity(side * side);
    for y in 0..side {
        for x in 0..side {
            let dx = x as f64 + 0.5 - cx;
            let dy = y as f64 + 0.5 - cy;
            w.push((-(dx * dx + dy * dy) / (2.0 * sigma * sigma)).exp());
        }
    }
    let total: f64 = w.iter().sum::<f64>().max(1e-12);
    w.iter_mut().for_each(|v| *v /= total);
    w
}

impl VentralMaps {
    /// A V4 unit's texture drive: the RF-weighted mean of its mix of layer-2 channels.
    pub fn texture(&self, rf_px: [f64; 3], mix: &Mix) -> f64 {
        let w = rf_weights(rf_px, self.image_side, self.side2);
        let mut acc = 0.0;
        for (p, wp) in w.iter().enumerate() {
            let px = &self.l2[p * L2..][..L2];
            for (c, m) in mix.channels.iter().zip(&mix.weights) {
                acc += wp * m * px[*c] as f64;
            }
        }
        acc
    }

    /// An IT unit's shape drive: its mix of layer-3 channels, each pooled over the RF
    /// with a Gaussian-weighted 4-norm.
    pub fn shape(&self, rf_px: [f64; 3], mix: &Mix) -> f64 {
        let w = rf_weights(rf_px, self.image_side, self.side3);
        mix.channels
            .iter()
            .zip(&mix.weights)
            .map(|(&c, m)| {
                let pooled: f64 = w
                    .iter()
                    .enumerate()
                    .map(|(p, wp)| {
                        let v = self.l3[p * L3 + c] as f64;
                        wp * (v * v) * (v * v)
                    })
                    .sum();
                m * pooled.powf(1.0 / POOL_P)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bright square on grey, its top-left corner at (x, y).
    fn square(size: usize, x: usize, y: usize, side: usize) -> Vec<f32> {
        let mut img = vec![0.5f32; size * size * 3];
        for yy in y..y + side {
            for xx in x..x + side {
                img[(yy * size + xx) * 3..][..3].copy_from_slice(&[0.9, 0.3, 0.2]);
            }
        }
        img
    }

    #[test]
    fn a_uniform_image_drives_nothing_and_shape_is_tolerant_to_position() {
        let (size, net) = (64, VentralNet::new(7));
        let grey = net.maps(&vec![0.5; size * size * 3], size);
        assert!(grey.l3.iter().all(|&v| v == 0.0));
        // Layer 1 is blind to uniform colour: a uniform red field drives only the border.
        let mut red = vec![0.0f32; size * size * 3];
        red.chunks_exact_mut(3)
            .for_each(|p| p.copy_from_slice(&[0.9, 0.2, 0.2]));
        let (a1, s1) = net
            .l1
            .apply(&red.iter().map(|v| v - 0.5).collect::<Vec<_>>(), size);
        let inner = (s1 / 2 * s1 + s1 / 2) * L1;
        assert!(a1[inner..inner + L1].iter().all(|v| v.abs() < 1e-5));

        // A large RF: the same square at two places inside it drives a unit about the
        // same.
        let rf = [32.0, 32.0, 16.0];
        let mut r = rng(3, DOMAIN_VENTRAL, 1);
        let mixes: Vec<Mix> = (0..20).map(|_| Mix::random(L3, &mut r)).collect();
        let a = net.maps(&square(size, 18, 18, 10), size);
        let b = net.maps(&square(size, 36, 30, 10), size);
        let (sa, sb): (Vec<f64>, Vec<f64>) = mixes
            .iter()
            .map(|m| (a.shape(rf, m), b.shape(rf, m)))
            .unzip();
        let diff: f64 = sa.iter().zip(&sb).map(|(x, y)| (x - y).abs()).sum();
        let scale: f64 = sa.iter().map(|x| x.abs()).sum();
        assert!(scale > 0.0);
        assert!(
            diff / scale < 0.35,
            "shape moved {:.2} of its size",
            diff / scale
        );
    }
}
